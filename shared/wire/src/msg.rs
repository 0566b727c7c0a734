//! Messages, one closed enum per direction.

use bincode::{Decode, Encode};

/// Resource limits of one sandbox. Defaults and ceilings live in `bulkhead-policy`.
#[derive(Debug, Clone, PartialEq, Eq, Encode, Decode)]
pub struct Limits {
    /// Memory limit (cgroup `memory.max` / `memory.limit_in_bytes`), bytes.
    pub memory_bytes: u64,
    /// Swap allowed on top of memory (`memory.swap.max`), bytes. 0 = no swap.
    pub swap_bytes: u64,
    /// Maximum number of tasks (`pids.max`).
    pub pids: u32,
    /// CPU weight 1..=10000 (`cpu.weight`; v1 `cpu.shares` scaled).
    pub cpu_weight: u32,
    /// Optional CPU quota in microseconds per `cpu_period_us` (0 = unlimited).
    pub cpu_quota_us: u64,
    /// CPU period in microseconds for `cpu_quota_us`.
    pub cpu_period_us: u64,
    /// Size of the `/tmp` tmpfs, bytes.
    pub tmp_bytes: u64,
    /// Size of the `/dev/shm` tmpfs, bytes.
    pub shm_bytes: u64,
    /// `RLIMIT_NOFILE` for the sandbox.
    pub nofile: u32,
    /// Size of the workspace's own filesystem at `/workspace`, bytes (0 = none: the
    /// workspace shares the state filesystem). Provisioned by the controller, checked
    /// against the launch rules' `disk_max` and attested from inside.
    pub disk_bytes: u64,
    /// Inodes of that filesystem (0 = the filesystem's default for its size).
    pub inodes: u64,
    /// IO weight 1..=10000, 100 = the kernel's default (v2 `io.weight`; v1 `blkio.weight` or
    /// `blkio.bfq.weight`, scaled). Best effort: applied where the kernel has the file.
    pub io_weight: u32,
    /// IO bandwidth and IOPS ceilings on the workspace's block device (v2 `io.max`, v1
    /// `blkio.throttle.*`). All zero: none. Set, they are required: the sandbox is refused
    /// where they cannot be applied.
    pub io_max: IoMax,
}

/// IO ceilings of one sandbox on the block device that holds its workspace. 0 = no limit.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Encode, Decode)]
pub struct IoMax {
    /// Read bytes per second.
    pub rbps: u64,
    /// Write bytes per second.
    pub wbps: u64,
    /// Read operations per second.
    pub riops: u64,
    /// Write operations per second.
    pub wiops: u64,
}

impl IoMax {
    /// Whether any ceiling is set.
    pub fn is_set(&self) -> bool {
        self.rbps != 0 || self.wbps != 0 || self.riops != 0 || self.wiops != 0
    }
}

/// What the controller asks the launcher to build. Every field is re-validated by the
/// launcher (`bulkhead_policy::validate_spec`).
#[derive(Debug, Clone, PartialEq, Eq, Encode, Decode)]
pub struct LaunchSpec {
    /// Workspace id (`[a-z0-9][a-z0-9_-]{0,62}`).
    pub workspace_id: String,
    /// Absolute host path of the workspace's `files/` directory, mounted at `/workspace`.
    /// Opened without following symlinks in any component.
    pub workspace_dir: String,
    /// Whether `/workspace` is writable.
    pub workspace_writable: bool,
    /// Host uid the sandbox runs as when the launcher is privileged (ignored, and must equal
    /// the caller's uid, when rootless). Never 0.
    pub host_uid: u32,
    /// Host gid, as `host_uid`.
    pub host_gid: u32,
    /// Hostname inside the sandbox.
    pub hostname: String,
    /// Resource limits.
    pub limits: Limits,
    /// Extra host directories mounted into the sandbox (at most [`MAX_BINDS`]), such as a
    /// skill's own files beside the agent's `/workspace`.
    pub binds: Vec<Bind>,
}

/// Most [`Bind`]s one spec may carry.
pub const MAX_BINDS: usize = 8;

/// One extra host directory in the sandbox, always read-only. Checked by the launcher like
/// `workspace_dir`: opened without following symlinks, owned by the caller (or, privileged,
/// one of the operator's `bind_paths`).
#[derive(Debug, Clone, PartialEq, Eq, Encode, Decode)]
pub struct Bind {
    /// Absolute, normalized host path of a directory.
    pub host: String,
    /// Where it appears: `/mnt/<name>`, name `[a-z0-9][a-z0-9_-]{0,31}`.
    pub path: String,
}

/// How to launch, beyond the sandbox's policy ([`LaunchSpec`]). Sent with the spec in
/// [`ControllerMsg::Launch`].
#[derive(Debug, Clone, Default, PartialEq, Eq, Encode, Decode)]
pub struct LaunchOptions {
    /// Controlled egress: the controller passes an `AF_UNIX` `SOCK_SEQPACKET` socket as the
    /// launcher's fd [`crate::EGRESS_FD`], which the worker keeps; it listens on
    /// `127.0.0.1:`[`crate::PROXY_PORT`] inside the sandbox and passes every accepted
    /// connection to the controller, which polices and relays it. Without it the launcher
    /// closes fd [`crate::EGRESS_FD`] and nothing listens. The sandbox's network namespace
    /// has only loopback either way.
    pub egress: bool,
}

/// Which stream output came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Encode, Decode)]
pub enum Stream {
    /// Standard output.
    Stdout,
    /// Standard error.
    Stderr,
}

/// How to run a command.
#[derive(Debug, Clone, PartialEq, Eq, Encode, Decode)]
pub enum Command {
    /// `argv[0]` looked up in `PATH`, with arguments.
    Argv(Vec<String>),
    /// A string run by `/bin/sh -c`.
    Shell(String),
}

/// Run a command inside the sandbox.
#[derive(Debug, Clone, PartialEq, Eq, Encode, Decode)]
pub struct ExecRequest {
    /// What to run.
    pub command: Command,
    /// Working directory inside the sandbox (absolute).
    pub cwd: String,
    /// Environment added to the sandbox's allowlist (PATH, HOME, LANG, TERM).
    pub env: Vec<(String, String)>,
    /// Bytes fed to the command's stdin, then EOF.
    pub stdin: Vec<u8>,
    /// Wall-clock limit in milliseconds (0 = none). On expiry the whole process group is
    /// killed.
    pub timeout_ms: u64,
    /// Total stdout+stderr bytes forwarded; the rest is counted and dropped, and a
    /// truncation marker is sent.
    pub output_cap: u64,
    /// When the command ends, kill every other process in the sandbox too (daemons that
    /// left the process group).
    pub kill_stragglers: bool,
}

/// Kind of a filesystem entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Encode, Decode)]
pub enum FileKind {
    /// Regular file.
    File,
    /// Directory.
    Dir,
    /// Symbolic link (never followed).
    Symlink,
    /// Anything else (fifo, socket, device).
    Other,
}

/// Metadata of one entry.
#[derive(Debug, Clone, PartialEq, Eq, Encode, Decode)]
pub struct FileStat {
    /// Kind.
    pub kind: FileKind,
    /// Size in bytes.
    pub size: u64,
    /// Permission bits.
    pub mode: u32,
    /// Modification time, seconds since the epoch.
    pub mtime: i64,
}

/// One directory entry.
#[derive(Debug, Clone, PartialEq, Eq, Encode, Decode)]
pub struct DirEntry {
    /// File name (lossy UTF-8).
    pub name: String,
    /// Metadata (of the entry itself, symlinks not followed).
    pub stat: FileStat,
}

/// A tool request to the worker.
#[derive(Debug, Clone, PartialEq, Eq, Encode, Decode)]
pub enum Request {
    /// Run a command.
    Exec(ExecRequest),
    /// Read part of a file.
    Read {
        /// Path (absolute, or relative to `/workspace`).
        path: String,
        /// Byte offset.
        offset: u64,
        /// Maximum bytes (capped by the worker).
        limit: u64,
    },
    /// Write a whole file.
    Write {
        /// Path.
        path: String,
        /// Content.
        data: Vec<u8>,
        /// Permission bits for a new file.
        mode: u32,
        /// Create missing parent directories.
        create_parents: bool,
    },
    /// Exact string replacement.
    Edit {
        /// Path.
        path: String,
        /// Text to find (must occur exactly once unless `replace_all`).
        old: String,
        /// Replacement.
        new: String,
        /// Replace every occurrence.
        replace_all: bool,
    },
    /// List a directory.
    Ls {
        /// Path.
        path: String,
    },
    /// Stat one path (symlinks not followed).
    Stat {
        /// Path.
        path: String,
    },
    /// Round trip, does nothing.
    Ping,
}

impl Request {
    /// Rate-limit class of this request.
    pub fn kind(&self) -> crate::MethodKind {
        use crate::MethodKind as K;
        match self {
            Request::Exec(_) => K::Exec,
            Request::Read { .. } => K::Read,
            Request::Write { .. } => K::Write,
            Request::Edit { .. } => K::Edit,
            Request::Ls { .. } => K::Ls,
            Request::Stat { .. } => K::Stat,
            Request::Ping => K::Ping,
        }
    }
}

/// Controller → launcher (first frame) and worker.
#[derive(Debug, Clone, PartialEq, Eq, Encode, Decode)]
pub enum ControllerMsg {
    /// First and only frame the launcher reads: the spec and the launch options.
    Launch(LaunchSpec, LaunchOptions),
    /// A tool request, answered by [`WorkerMsg::Response`] with the same id.
    Request {
        /// Correlation id chosen by the controller.
        id: u64,
        /// The request.
        body: Request,
    },
    /// Cancel a running request (kills its process group).
    Cancel {
        /// Id of the request.
        id: u64,
    },
    /// Kill everything and exit.
    Shutdown,
}

/// How a command ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Encode, Decode)]
pub enum ExitKind {
    /// Exited with this code.
    Code(i32),
    /// Killed by this signal.
    Signal(i32),
}

impl ExitKind {
    /// The status a shell reports for this end: the exit code, or 128 + n for signal n.
    /// A signal outside 1..=127 cannot be real (the value comes from the worker, which is
    /// not trusted) and gives 255, so the sum never overflows.
    pub fn shell_status(self) -> i32 {
        match self {
            ExitKind::Code(c) => c,
            ExitKind::Signal(s) if (1..=127).contains(&s) => 128 + s,
            ExitKind::Signal(_) => 255,
        }
    }
}

/// Result of an exec.
#[derive(Debug, Clone, PartialEq, Eq, Encode, Decode)]
pub struct ExecResult {
    /// How the command ended.
    pub exit: ExitKind,
    /// The timeout fired.
    pub timed_out: bool,
    /// It was cancelled.
    pub cancelled: bool,
    /// Output went over the cap.
    pub truncated: bool,
    /// Total stdout bytes produced (including dropped ones).
    pub stdout_bytes: u64,
    /// Total stderr bytes produced (including dropped ones).
    pub stderr_bytes: u64,
    /// Wall time in microseconds.
    pub duration_us: u64,
}

/// Result of a read.
#[derive(Debug, Clone, PartialEq, Eq, Encode, Decode)]
pub struct ReadResult {
    /// Bytes read.
    pub data: Vec<u8>,
    /// File size.
    pub size: u64,
    /// `offset + data.len() == size`.
    pub eof: bool,
}

/// A successful reply.
#[derive(Debug, Clone, PartialEq, Eq, Encode, Decode)]
pub enum Reply {
    /// Exec finished (output came before as [`WorkerMsg::Output`]).
    Exec(ExecResult),
    /// File content.
    Read(ReadResult),
    /// Bytes written.
    Write {
        /// Bytes written.
        bytes: u64,
    },
    /// Replacements made.
    Edit {
        /// Count.
        replacements: u64,
    },
    /// Directory listing (sorted by name, capped).
    Ls {
        /// Entries.
        entries: Vec<DirEntry>,
        /// More entries existed than were returned.
        truncated: bool,
    },
    /// Metadata.
    Stat(FileStat),
    /// Answer to Ping.
    Pong,
}

/// Class of a tool error.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Encode, Decode)]
pub enum ToolErrorKind {
    /// No such file or command.
    NotFound,
    /// Permission denied.
    PermissionDenied,
    /// Bad argument.
    InvalidInput,
    /// Above a size cap.
    TooLarge,
    /// Edit: old text occurs more than once.
    NotUnique,
    /// Too many requests.
    RateLimited,
    /// Path is a directory / not a directory / not UTF-8 etc.
    WrongType,
    /// Any other I/O error.
    Io,
}

/// A tool request failed.
#[derive(Debug, Clone, PartialEq, Eq, Encode, Decode)]
pub struct ToolError {
    /// Class.
    pub kind: ToolErrorKind,
    /// Message (from inside the sandbox: untrusted, shown as data).
    pub message: String,
}

impl std::fmt::Display for ToolError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for ToolError {}

/// Namespace inode numbers, read from `/proc/self/ns/*`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Encode, Decode)]
pub struct NsIds {
    /// user
    pub user: u64,
    /// mnt
    pub mnt: u64,
    /// pid
    pub pid: u64,
    /// net
    pub net: u64,
    /// ipc
    pub ipc: u64,
    /// uts
    pub uts: u64,
    /// cgroup
    pub cgroup: u64,
}

/// What the worker reads about itself from inside, first thing after exec. The controller
/// compares it with the policy and refuses a sandbox where a layer silently did nothing.
#[derive(Debug, Clone, Default, PartialEq, Eq, Encode, Decode)]
pub struct Attestation {
    /// Pid inside (must be 1).
    pub pid: u32,
    /// Real uid inside.
    pub uid: u32,
    /// Real gid inside.
    pub gid: u32,
    /// `NoNewPrivs:` from `/proc/self/status`.
    pub no_new_privs: bool,
    /// `Seccomp:` mode (2 = filter).
    pub seccomp_mode: u32,
    /// `Seccomp_filters:` count.
    pub seccomp_filters: u32,
    /// CapInh.
    pub cap_inh: u64,
    /// CapPrm.
    pub cap_prm: u64,
    /// CapEff.
    pub cap_eff: u64,
    /// CapBnd.
    pub cap_bnd: u64,
    /// CapAmb.
    pub cap_amb: u64,
    /// Landlock ABI the kernel reports (negative errno when unsupported).
    pub landlock_abi: i32,
    /// A write the landlock policy forbids was refused with EACCES.
    pub landlock_enforced: bool,
    /// Namespace ids.
    pub ns: NsIds,
    /// `/proc/self/uid_map`.
    pub uid_map: String,
    /// `/proc/self/gid_map`.
    pub gid_map: String,
    /// Network interfaces visible (`/proc/net/dev`).
    pub interfaces: Vec<String>,
    /// Whether `/` is mounted read-only.
    pub root_readonly: bool,
    /// Whether the egress proxy listener (`127.0.0.1:`[`crate::PROXY_PORT`]) is up: must be
    /// true exactly when the sandbox was launched with [`LaunchOptions::egress`].
    pub egress_proxy: bool,
    /// Resource limits from `/proc/self/limits` (at most [`MAX_ATTESTED_RLIMITS`]).
    pub rlimits: Vec<RlimitSeen>,
    /// The mount table from `/proc/self/mountinfo` (at most [`MAX_ATTESTED_MOUNTS`]).
    pub mounts: Vec<MountSeen>,
    /// `statfs("/workspace")` as the worker sees it: the controller checks that a
    /// workspace with a disk limit really has its own filesystem of that size.
    pub workspace_fs: WorkspaceFs,
}

/// What `statfs(2)` says of `/workspace` inside the sandbox (all 0 when unreadable).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Encode, Decode)]
pub struct WorkspaceFs {
    /// `f_type` (e.g. `0xef53` for ext4).
    pub fs_type: u64,
    /// `f_blocks * f_frsize`: the size `df` shows, bytes.
    pub size_bytes: u64,
    /// `f_files`: the inodes `df -i` shows.
    pub inodes: u64,
}

/// Most [`RlimitSeen`]s an attestation carries (Linux has 16 resources).
pub const MAX_ATTESTED_RLIMITS: usize = 32;
/// Most [`MountSeen`]s an attestation carries; a longer table is truncated, and refused.
pub const MAX_ATTESTED_MOUNTS: usize = 256;

/// One line of `/proc/self/limits`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Encode, Decode)]
pub struct RlimitSeen {
    /// The kernel's name of the limit (`Max realtime priority`).
    pub name: String,
    /// Soft limit; `u64::MAX` = unlimited.
    pub soft: u64,
    /// Hard limit; `u64::MAX` = unlimited.
    pub hard: u64,
}

/// One mount as the sandbox sees it (`/proc/self/mountinfo`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Encode, Decode)]
pub struct MountSeen {
    /// Mount point inside the sandbox (octal escapes decoded).
    pub path: String,
    /// Filesystem type (`tmpfs`, `proc`, `ext4`, ...).
    pub fstype: String,
    /// Mounted read-only (the per-mount `ro` option).
    pub readonly: bool,
}

/// The step of sandbox setup that failed. Numbered like the launcher's sequence.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Encode, Decode)]
pub enum SetupStep {
    /// 1. sanitize the process (fds, env, dumpable, core).
    Sanitize,
    /// 2. read and validate the spec.
    Spec,
    /// 3. cgroup.
    Cgroup,
    /// 4. namespaces.
    Namespaces,
    /// 5. uid/gid maps.
    IdMaps,
    /// 6. mounts and pivot_root.
    Mounts,
    /// 7. loopback and hostname.
    Network,
    /// 8. rlimits.
    Rlimits,
    /// 9. capabilities.
    Capabilities,
    /// 10. no_new_privs.
    NoNewPrivs,
    /// 11. landlock.
    Landlock,
    /// 12. seccomp.
    Seccomp,
    /// 13. exec the worker.
    Exec,
}

impl SetupStep {
    /// Every step, in the order the launcher runs them (step `n` is `ALL[n - 1]`).
    pub const ALL: [SetupStep; 13] = [
        SetupStep::Sanitize,
        SetupStep::Spec,
        SetupStep::Cgroup,
        SetupStep::Namespaces,
        SetupStep::IdMaps,
        SetupStep::Mounts,
        SetupStep::Network,
        SetupStep::Rlimits,
        SetupStep::Capabilities,
        SetupStep::NoNewPrivs,
        SetupStep::Landlock,
        SetupStep::Seccomp,
        SetupStep::Exec,
    ];

    /// Lowercase name used in messages ("sandbox setup failed: <step>: …").
    pub fn name(self) -> &'static str {
        match self {
            SetupStep::Sanitize => "sanitize",
            SetupStep::Spec => "spec",
            SetupStep::Cgroup => "cgroup",
            SetupStep::Namespaces => "namespaces",
            SetupStep::IdMaps => "id maps",
            SetupStep::Mounts => "mounts",
            SetupStep::Network => "network",
            SetupStep::Rlimits => "rlimits",
            SetupStep::Capabilities => "capabilities",
            SetupStep::NoNewPrivs => "no_new_privs",
            SetupStep::Landlock => "landlock",
            SetupStep::Seccomp => "seccomp",
            SetupStep::Exec => "exec",
        }
    }

    /// Launcher exit code for a failure at this step (see `exit`).
    pub fn exit_code(self) -> i32 {
        crate::exit::LAUNCH_SETUP_BASE + self as i32
    }
}

/// A setup failure, reported before any untrusted code runs.
#[derive(Debug, Clone, PartialEq, Eq, Encode, Decode)]
pub struct SetupError {
    /// Failed step.
    pub step: SetupStep,
    /// errno, 0 if none.
    pub errno: i32,
    /// Path involved, if any.
    pub path: String,
    /// What went wrong and what to do (for humans; a program acts on [`SetupError::reason`]).
    pub detail: String,
    /// What the controller can act on, where it can.
    pub reason: SetupReason,
}

/// The typed reason of a [`SetupError`]: the failures the controller acts on get a variant
/// of their own, so it never decides on [`SetupError::detail`]'s text.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Encode, Decode)]
pub enum SetupReason {
    /// Nothing the controller acts on; the detail says what failed.
    Other,
    /// The spec's host id is held in a setuid launcher's id registry by another caller:
    /// the controller notes it as foreign and tries another id.
    ForeignHostId {
        /// The refused host id.
        id: u32,
        /// The uid of the caller that holds it.
        owner: u32,
    },
}

impl std::fmt::Display for SetupError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.step.name(), self.detail)?;
        if !self.path.is_empty() {
            write!(f, " ({})", self.path)?;
        }
        if self.errno != 0 {
            write!(f, " [errno {}]", self.errno)?;
        }
        Ok(())
    }
}

/// Worker (or launcher, before exec) → controller.
// `Hello` is large (the attestation) but sent once per sandbox; boxing it would only add an
// allocation and change every match on it.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq, Eq, Encode, Decode)]
pub enum WorkerMsg {
    /// Setup failed; no sandbox. Only valid before `Hello`.
    SetupFailed(SetupError),
    /// First message of a running worker.
    Hello {
        /// [`crate::PROTOCOL_VERSION`] of the worker.
        version: u32,
        /// What the worker sees of its own confinement.
        attestation: Attestation,
    },
    /// A chunk of output of a running exec.
    Output {
        /// Request id.
        id: u64,
        /// Which stream.
        stream: Stream,
        /// Bytes.
        data: Vec<u8>,
    },
    /// Final answer to a request.
    Response {
        /// Request id.
        id: u64,
        /// Outcome.
        result: Result<Reply, ToolError>,
    },
}

/// Cgroup version used for a sandbox.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Encode, Decode)]
pub enum CgroupVersion {
    /// Unified hierarchy.
    V2,
    /// Legacy per-controller hierarchies.
    V1,
}

/// What the launcher's supervising parent reports on its stdout (a trusted channel the
/// sandbox cannot write to).
#[derive(Debug, Clone, PartialEq, Eq, Encode, Decode)]
pub enum LauncherReport {
    /// Sandbox is running.
    Ready {
        /// Host pid of the worker.
        worker_pid: u32,
        /// Cgroup flavour.
        cgroup_version: CgroupVersion,
        /// Cgroup directories created (one for v2, one per controller for v1).
        cgroup_dirs: Vec<String>,
        /// File whose `oom_kill` counter tells whether the sandbox hit its memory limit.
        oom_file: String,
        /// Whether the launcher ran privileged (root or setuid).
        privileged: bool,
    },
    /// Worker ended and the cgroup is gone.
    Exited {
        /// Worker exit code, or -1.
        code: i32,
        /// Signal that killed the worker, or 0.
        signal: i32,
        /// Number of OOM kills in the sandbox's cgroup.
        oom_kills: u64,
        /// Cgroup removed cleanly.
        cgroup_removed: bool,
    },
}

#[cfg(test)]
mod tests {
    use super::ExitKind;

    #[test]
    fn shell_status_never_overflows_on_a_hostile_signal() {
        assert_eq!(ExitKind::Code(3).shell_status(), 3);
        assert_eq!(ExitKind::Signal(9).shell_status(), 137);
        assert_eq!(ExitKind::Signal(127).shell_status(), 255);
        for s in [i32::MAX, i32::MIN, 0, -1, 128] {
            assert_eq!(ExitKind::Signal(s).shell_status(), 255, "signal {s}");
        }
    }
}
