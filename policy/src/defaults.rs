//! Default limits and ceilings for a workspace's sandbox. Documented in docs/cgroups.md.

use bulkhead_wire::{IoMax, Limits};

/// Default memory limit: 512 MiB.
pub const DEFAULT_MEMORY_BYTES: u64 = 512 << 20;
/// Default pids limit.
pub const DEFAULT_PIDS: u32 = 256;
/// Default cpu weight (cgroup v2 scale; 100 is the kernel default).
pub const DEFAULT_CPU_WEIGHT: u32 = 100;
/// Default CPU period for quotas: 100 ms.
pub const DEFAULT_CPU_PERIOD_US: u64 = 100_000;
/// Default `/tmp` size: 256 MiB.
pub const DEFAULT_TMP_BYTES: u64 = 256 << 20;
/// Default `/dev/shm` size: 64 MiB.
pub const DEFAULT_SHM_BYTES: u64 = 64 << 20;
/// Default open-file limit.
pub const DEFAULT_NOFILE: u32 = 4096;
/// Default IO weight (the kernel's default on the v2 scale, 1..=10000).
pub const DEFAULT_IO_WEIGHT: u32 = 100;
/// `RLIMIT_MEMLOCK` of a sandbox: 64 KiB.
pub const DEFAULT_MEMLOCK_BYTES: u64 = 64 << 10;
/// `RLIMIT_MSGQUEUE` of a sandbox: 256 KiB of POSIX message queues.
pub const DEFAULT_MSGQUEUE_BYTES: u64 = 256 << 10;
/// `RLIMIT_SIGPENDING` of a sandbox.
pub const DEFAULT_SIGPENDING: u64 = 4096;
/// Lowest `io_max` bandwidth accepted (below this a sandbox cannot even start its programs):
/// 64 KiB/s.
pub const MIN_IO_BPS: u64 = 64 << 10;
/// Lowest `io_max` IOPS accepted.
pub const MIN_IO_IOPS: u64 = 10;

/// Ceilings the launcher enforces whatever the controller asks.
pub const MAX_MEMORY_BYTES: u64 = 1 << 40;
/// Smallest memory limit that still lets the worker start.
pub const MIN_MEMORY_BYTES: u64 = 8 << 20;
/// Most pids one sandbox may have.
pub const MAX_PIDS: u32 = 1 << 16;
/// Fewest pids (worker + one command + a shell).
pub const MIN_PIDS: u32 = 4;
/// Largest tmpfs for `/tmp` or `/dev/shm`.
pub const MAX_TMPFS_BYTES: u64 = 64 << 30;
/// Most open files per process.
pub const MAX_NOFILE: u32 = 1 << 20;

/// Uid and gid the sandbox user has inside (mapped to one unprivileged host id).
pub const SANDBOX_UID: u32 = 1000;
/// Gid inside.
pub const SANDBOX_GID: u32 = 1000;
/// Name of the sandbox user in the generated `/etc/passwd`.
pub const SANDBOX_USER: &str = "sandbox";

/// First host uid/gid given to workspaces when bulkhead runs privileged.
pub const HOST_ID_RANGE_START: u32 = 1_200_000_000;
/// Number of host ids in the range (one per workspace).
pub const HOST_ID_RANGE_LEN: u32 = 1 << 20;

/// Smallest disk limit of a workspace (its filesystem, journal included, must fit).
pub const MIN_DISK_BYTES: u64 = 16 << 20;
/// Largest disk limit of a workspace.
pub const MAX_DISK_BYTES: u64 = 16 << 40;
/// Fewest inodes of a workspace filesystem.
pub const MIN_INODES: u64 = 64;
/// Most inodes of a workspace filesystem (ext4's limit is 2^32 - 1).
pub const MAX_INODES: u64 = (1 << 32) - 1;

/// The default limits of a workspace.
pub fn default_limits() -> Limits {
    Limits {
        memory_bytes: DEFAULT_MEMORY_BYTES,
        swap_bytes: 0,
        pids: DEFAULT_PIDS,
        cpu_weight: DEFAULT_CPU_WEIGHT,
        cpu_quota_us: 0,
        cpu_period_us: DEFAULT_CPU_PERIOD_US,
        tmp_bytes: DEFAULT_TMP_BYTES,
        shm_bytes: DEFAULT_SHM_BYTES,
        nofile: DEFAULT_NOFILE,
        io_weight: DEFAULT_IO_WEIGHT,
        io_max: IoMax::default(),
        disk_bytes: 0,
        inodes: 0,
    }
}

/// Whether a host id is inside the privileged range.
pub fn in_host_id_range(id: u32) -> bool {
    id >= HOST_ID_RANGE_START && id - HOST_ID_RANGE_START < HOST_ID_RANGE_LEN
}
