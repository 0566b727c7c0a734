//! Documented exit codes.
//!
//! `bulkhead-launch`:
//! | code | meaning |
//! | --- | --- |
//! | 0 | worker ran and exited cleanly |
//! | 1 | worker exited with an error |
//! | 64 | bad invocation (arguments, no socket on fd 3) |
//! | 65 | protocol error reading the spec |
//! | 80 + step | setup step failed (80 sanitize, 81 spec, 82 cgroup, 83 namespaces, 84 id maps, 85 mounts, 86 network, 87 rlimits, 88 capabilities, 89 no_new_privs, 90 landlock, 91 seccomp, 92 exec) |
//! | 128 + n | worker killed by signal n |
//!
//! `bulkhead exec`: the program's own status; 124 timeout; 125 sandbox setup failed;
//! 126 program not executable; 127 program not found; 137 killed by the memory limit.

/// Worker exited with an error.
pub const LAUNCH_WORKER_ERROR: i32 = 1;
/// Bad invocation of the launcher.
pub const LAUNCH_USAGE: i32 = 64;
/// Could not read a valid spec.
pub const LAUNCH_PROTOCOL: i32 = 65;
/// First setup-step code; `SetupStep::exit_code` adds the step number.
pub const LAUNCH_SETUP_BASE: i32 = 80;

/// `bulkhead exec`: timeout.
pub const EXEC_TIMEOUT: i32 = 124;
/// `bulkhead exec`: sandbox setup failed.
pub const EXEC_SETUP_FAILED: i32 = 125;
/// `bulkhead exec`: program found but not executable.
pub const EXEC_NOT_EXECUTABLE: i32 = 126;
/// `bulkhead exec`: program not found.
pub const EXEC_NOT_FOUND: i32 = 127;
/// `bulkhead exec`: killed by the memory limit.
pub const EXEC_OOM: i32 = 137;
