//! The x86_64 seccomp tables: reviewed data only.
//!
//! Every syscall the sandbox may make ([`ALLOWED`]) and every one refused on purpose
//! ([`DENIED`]), each with its reason; the ioctl requests, socket families, types and
//! protocols the argument rules compare; and the build-time checks that refuse a table
//! without a reason, with a number listed twice or in both tables, or with a value the
//! program cannot compare. The program built from these tables is in `generate.rs`.

use super::{int32, low32, sys_name, AllowedSyscall, ArgRule, DeniedSyscall};

/// Syscall numbers: libc's, plus the ones libc 0.2 does not name yet (numbers from the
/// kernel's `arch/x86/entry/syscalls/syscall_64.tbl`).
#[allow(non_upper_case_globals)]
pub(super) mod nr {
    pub use libc::*;

    pub const SYS_create_module: i64 = 174;
    pub const SYS_get_kernel_syms: i64 = 177;
    pub const SYS_io_pgetevents: i64 = 333;
    pub const SYS_query_module: i64 = 178;
    pub const SYS_cachestat: i64 = 451;
    pub const SYS_map_shadow_stack: i64 = 453;
    pub const SYS_futex_wake: i64 = 454;
    pub const SYS_futex_wait: i64 = 455;
    pub const SYS_futex_requeue: i64 = 456;
    pub const SYS_statmount: i64 = 457;
    pub const SYS_listmount: i64 = 458;
    pub const SYS_setxattrat: i64 = 463;
    pub const SYS_getxattrat: i64 = 464;
    pub const SYS_listxattrat: i64 = 465;
    pub const SYS_removexattrat: i64 = 466;
    pub const SYS_open_tree_attr: i64 = 467;
}

/// `EM_X86_64 | __AUDIT_ARCH_64BIT | __AUDIT_ARCH_LE`, from `<linux/audit.h>`.
pub const AUDIT_ARCH_X86_64: u32 = 62 | 0x8000_0000 | 0x4000_0000;

/// The bit that marks an x32-ABI syscall number (`__X32_SYSCALL_BIT`).
pub const X32_SYSCALL_BIT: u32 = 0x4000_0000;

/// Every `CLONE_NEW*` flag. `CLONE_NEWTIME` (0x80) lies in the exit-signal byte of the legacy
/// `clone`, so the kernel never reads it as a flag there; masking it costs nothing (no signal
/// number reaches 0x80) and keeps the rule honest if that ever changes.
pub const CLONE_NAMESPACE_FLAGS: u64 = (libc::CLONE_NEWNS
    | libc::CLONE_NEWUTS
    | libc::CLONE_NEWIPC
    | libc::CLONE_NEWUSER
    | libc::CLONE_NEWPID
    | libc::CLONE_NEWNET
    | libc::CLONE_NEWCGROUP
    | libc::CLONE_NEWTIME) as u64;

/// ioctl requests refused, each with its reason (the build fails on an empty one).
// `Ioctl` is `c_ulong` on glibc but `c_int` on musl: the casts are needed there.
#[allow(clippy::unnecessary_cast)]
pub const DENIED_IOCTLS: &[(&str, u64, &str)] = &[
    (
        "TIOCSTI",
        libc::TIOCSTI as u64,
        "pushes bytes into a terminal's input queue: keystroke injection into a shell outside",
    ),
    (
        "TIOCLINUX",
        libc::TIOCLINUX as u64,
        "the console's selection can inject input the same way, and read the screen",
    ),
    (
        "TIOCSETD",
        libc::TIOCSETD as u64,
        "sets a pty's line discipline: reaches n_gsm, n_hdlc, slcan and other rarely used, \
         module-loaded tty code with a history of kernel bugs; nothing in a sandbox needs it",
    ),
];

/// Socket families the sandbox may create: `AF_UNIX` (with [`SOCKET_UNIX_TYPES`]) and the IP
/// families of [`SOCKET_INET_FAMILIES`].
pub const SOCKET_FAMILIES: &[(&str, i32)] = &[
    ("AF_UNIX", libc::AF_UNIX),
    ("AF_INET", libc::AF_INET),
    ("AF_INET6", libc::AF_INET6),
];

/// Types of an `AF_UNIX` socket (after masking with [`SOCKET_TYPE_MASK`]).
pub const SOCKET_UNIX_TYPES: &[(&str, i32, &str)] = &[
    (
        "SOCK_STREAM",
        libc::SOCK_STREAM,
        "pipes between programs, local servers",
    ),
    (
        "SOCK_DGRAM",
        libc::SOCK_DGRAM,
        "local datagrams (syslog-style clients)",
    ),
    (
        "SOCK_SEQPACKET",
        libc::SOCK_SEQPACKET,
        "message pipes (the worker's own plumbing, some IPC libraries)",
    ),
];

/// Kept for the tables' users that want every type some family allows.
pub const SOCKET_TYPES: &[(&str, i32)] = &[
    ("SOCK_STREAM", libc::SOCK_STREAM),
    ("SOCK_DGRAM", libc::SOCK_DGRAM),
    ("SOCK_SEQPACKET", libc::SOCK_SEQPACKET),
];

/// The IP families, allowed only with [`SOCKET_INET_TYPES`] and [`SOCKET_INET_PROTOCOLS`].
pub const SOCKET_INET_FAMILIES: &[(&str, i32, &str)] = &[
    (
        "AF_INET",
        libc::AF_INET,
        "TCP/UDP on the sandbox's own loopback (and the egress proxy)",
    ),
    ("AF_INET6", libc::AF_INET6, "the same over ::1"),
];

/// Types of an IP socket. Not `SOCK_SEQPACKET` (only SCTP implements it), not `SOCK_RAW`.
pub const SOCKET_INET_TYPES: &[(&str, i32, &str)] = &[
    ("SOCK_STREAM", libc::SOCK_STREAM, "TCP"),
    ("SOCK_DGRAM", libc::SOCK_DGRAM, "UDP"),
];

/// Protocols of an IP socket. Everything else (SCTP 132, L2TP/IP 115, UDP-Lite 136, MPTCP
/// 262, ICMP 1: ping sockets are off in a new network namespace anyway) is refused with
/// `EPERM` here, so the kernel never reaches `inet_create`'s protocol lookup or its module
/// autoload (`net-pf-2-proto-132`) for them.
pub const SOCKET_INET_PROTOCOLS: &[(&str, i32, &str)] = &[
    (
        "0",
        0,
        "the family's default for the type: TCP for a stream, UDP for a datagram",
    ),
    (
        "IPPROTO_TCP",
        libc::IPPROTO_TCP,
        "TCP, named explicitly (Java, Go, some C libraries)",
    ),
    ("IPPROTO_UDP", libc::IPPROTO_UDP, "UDP, named explicitly"),
];

/// The kernel's `SOCK_TYPE_MASK`: the type without `SOCK_CLOEXEC` / `SOCK_NONBLOCK`.
pub const SOCKET_TYPE_MASK: u64 = 0xf;

/// `personality(0xffffffff)` only reads the current persona.
pub(super) const PERSONALITY_QUERY: u64 = 0xffff_ffff;
pub(super) const PER_LINUX: u64 = 0;

pub(super) const EPERM: i32 = libc::EPERM;
pub(super) const ENOSYS: i32 = libc::ENOSYS;

macro_rules! allow {
    ($sys:ident, $reason:expr) => {
        allow!($sys if Any, $reason)
    };
    ($sys:ident if $rule:ident, $reason:expr) => {
        AllowedSyscall {
            name: sys_name(stringify!($sys)),
            nr: nr::$sys,
            args: ArgRule::$rule,
            reason: $reason,
        }
    };
}

macro_rules! deny {
    ($sys:ident, $errno:ident, $reason:expr) => {
        DeniedSyscall {
            name: sys_name(stringify!($sys)),
            nr: nr::$sys,
            errno: $errno,
            reason: $reason,
        }
    };
}

/// The allowlist. Keep it grouped; every entry says why it is here.
pub const ALLOWED: &[AllowedSyscall] = &[
    // ---- files and file descriptors -------------------------------------------------
    allow!(SYS_read, "read from an open fd"),
    allow!(SYS_write, "write to an open fd"),
    allow!(SYS_open if ModeArg2WithoutSetid, "open a path; landlock and the mount layout decide what is reachable; no setuid/setgid creation mode"),
    allow!(SYS_openat if ModeArg3WithoutSetid, "open a path relative to a directory fd (what glibc uses for open); no setuid/setgid creation mode"),
    allow!(SYS_creat if ModeArg1WithoutSetid, "legacy create-and-open, used by old build tools; no setuid/setgid mode"),
    allow!(SYS_close, "close an fd"),
    allow!(SYS_close_range, "close many fds at once (posix_spawn, python subprocess)"),
    allow!(SYS_stat, "file metadata"),
    allow!(SYS_fstat, "file metadata of an open fd"),
    allow!(SYS_lstat, "file metadata without following the final symlink"),
    allow!(SYS_newfstatat, "fstatat: how glibc implements stat/lstat/fstat on x86_64"),
    allow!(SYS_statx, "extended file metadata (coreutils ls, Rust std::fs::metadata)"),
    allow!(SYS_statfs, "filesystem metadata (df, free-space checks)"),
    allow!(SYS_fstatfs, "filesystem metadata of an open fd (glibc, coreutils)"),
    allow!(SYS_lseek, "move a file offset"),
    allow!(SYS_pread64, "positioned read (git, linkers)"),
    allow!(SYS_pwrite64, "positioned write (git, linkers)"),
    allow!(SYS_readv, "scatter read"),
    allow!(SYS_writev, "gather write (stdio, Rust std)"),
    allow!(SYS_preadv, "positioned scatter read"),
    allow!(SYS_pwritev, "positioned gather write"),
    allow!(SYS_preadv2, "preadv with per-call flags"),
    allow!(SYS_pwritev2, "pwritev with per-call flags"),
    allow!(SYS_access, "permission check on a path"),
    allow!(SYS_faccessat, "permission check relative to a directory fd"),
    allow!(SYS_faccessat2, "faccessat with flags (glibc 2.33+)"),
    allow!(SYS_pipe, "anonymous pipe"),
    allow!(SYS_pipe2, "anonymous pipe with O_CLOEXEC / O_NONBLOCK"),
    allow!(SYS_dup, "duplicate an fd"),
    allow!(SYS_dup2, "duplicate an fd onto a number (shell redirections)"),
    allow!(SYS_dup3, "dup2 with O_CLOEXEC"),
    allow!(SYS_fcntl, "fd flags and record locks"),
    allow!(SYS_flock, "advisory whole-file locks (git, package managers)"),
    allow!(SYS_fsync, "flush a file to storage"),
    allow!(SYS_fdatasync, "flush a file's data to storage"),
    allow!(SYS_sync, "flush all filesystems; Docker allows it, costs only I/O time"),
    allow!(SYS_syncfs, "flush the filesystem holding an fd"),
    allow!(SYS_sync_file_range, "flush part of a file"),
    allow!(SYS_truncate, "set a file's length by path"),
    allow!(SYS_ftruncate, "set a file's length by fd"),
    allow!(SYS_fallocate, "reserve file space (linkers, databases)"),
    allow!(SYS_fadvise64, "access-pattern hint for a file"),
    allow!(SYS_readahead, "prefetch part of a file into the page cache"),
    allow!(SYS_getdents, "list a directory (legacy layout)"),
    allow!(SYS_getdents64, "list a directory"),
    allow!(SYS_getcwd, "current directory"),
    allow!(SYS_chdir, "change directory"),
    allow!(SYS_fchdir, "change directory to an fd"),
    allow!(SYS_rename, "rename a path"),
    allow!(SYS_renameat, "rename relative to directory fds"),
    allow!(SYS_renameat2, "rename with RENAME_NOREPLACE / RENAME_EXCHANGE (mv, git)"),
    allow!(SYS_mkdir, "create a directory"),
    allow!(SYS_mkdirat, "create a directory relative to a directory fd"),
    allow!(SYS_rmdir, "remove a directory"),
    allow!(SYS_link, "create a hard link"),
    allow!(SYS_linkat, "create a hard link relative to directory fds"),
    allow!(SYS_unlink, "remove a file"),
    allow!(SYS_unlinkat, "remove a file or directory relative to a directory fd"),
    allow!(SYS_symlink, "create a symlink"),
    allow!(SYS_symlinkat, "create a symlink relative to a directory fd"),
    allow!(SYS_readlink, "read a symlink"),
    allow!(SYS_readlinkat, "read a symlink relative to a directory fd"),
    allow!(
        SYS_mknod if ModeArg1WithoutSetid,
        "create FIFOs and sockets; device nodes need CAP_MKNOD, which the sandbox lacks"
    ),
    allow!(SYS_mknodat if ModeArg2WithoutSetid, "mknod relative to a directory fd; same limits as mknod"),
    allow!(SYS_chmod if ModeArg1WithoutSetid, "change mode bits, but never to setuid/setgid"),
    allow!(SYS_fchmod if ModeArg1WithoutSetid, "change mode bits of an fd, never setuid/setgid"),
    allow!(SYS_fchmodat if ModeArg2WithoutSetid, "change mode bits relative to a directory fd, never setuid/setgid"),
    allow!(SYS_fchmodat2 if ModeArg2WithoutSetid, "fchmodat with AT_SYMLINK_NOFOLLOW (glibc 2.39+), never setuid/setgid"),
    allow!(SYS_chown, "change owner; only within the sandbox's mapped ids"),
    allow!(SYS_fchown, "change owner of an fd; only within the mapped ids"),
    allow!(SYS_lchown, "change owner of a symlink; only within the mapped ids"),
    allow!(SYS_fchownat, "change owner relative to a directory fd (tar, cp -a)"),
    allow!(SYS_umask, "file creation mask"),
    allow!(SYS_utime, "set file times (legacy)"),
    allow!(SYS_utimes, "set file times (legacy)"),
    allow!(SYS_futimesat, "set file times relative to a directory fd (legacy)"),
    allow!(SYS_utimensat, "set file times (touch, tar, make)"),
    allow!(SYS_copy_file_range, "in-kernel copy between files (cp, Rust std::fs::copy)"),
    allow!(SYS_sendfile, "in-kernel copy from a file to an fd"),
    allow!(SYS_splice, "move data between a pipe and an fd"),
    allow!(SYS_tee, "duplicate pipe contents"),
    allow!(SYS_vmsplice, "map user pages into a pipe"),
    allow!(SYS_cachestat, "page-cache residency of an open file; reveals nothing beyond mincore"),
    allow!(SYS_setxattr, "set an extended attribute"),
    allow!(SYS_lsetxattr, "set an extended attribute on a symlink"),
    allow!(SYS_fsetxattr, "set an extended attribute of an fd"),
    allow!(SYS_setxattrat, "set an extended attribute relative to a directory fd"),
    allow!(SYS_getxattr, "read an extended attribute (ls, cp --preserve)"),
    allow!(SYS_lgetxattr, "read an extended attribute of a symlink (ls)"),
    allow!(SYS_fgetxattr, "read an extended attribute of an fd"),
    allow!(SYS_getxattrat, "read an extended attribute relative to a directory fd"),
    allow!(SYS_listxattr, "list extended attributes"),
    allow!(SYS_llistxattr, "list extended attributes of a symlink"),
    allow!(SYS_flistxattr, "list extended attributes of an fd"),
    allow!(SYS_listxattrat, "list extended attributes relative to a directory fd"),
    allow!(SYS_removexattr, "remove an extended attribute"),
    allow!(SYS_lremovexattr, "remove an extended attribute of a symlink"),
    allow!(SYS_fremovexattr, "remove an extended attribute of an fd"),
    allow!(SYS_removexattrat, "remove an extended attribute relative to a directory fd"),
    allow!(
        SYS_ioctl if IoctlExceptTerminalInjection,
        "terminal and file ioctls (isatty, FIONREAD, FICLONE for cp); TIOCSTI/TIOCLINUX/TIOCSETD refused"
    ),
    allow!(SYS_inotify_init, "file-change notification (legacy)"),
    allow!(SYS_inotify_init1, "file-change notification (watchers, node)"),
    allow!(SYS_inotify_add_watch, "watch a path the process can already read"),
    allow!(SYS_inotify_rm_watch, "stop watching a path"),
    allow!(SYS_io_setup, "legacy Linux AIO context (databases, libaio)"),
    allow!(SYS_io_destroy, "legacy Linux AIO context teardown"),
    allow!(SYS_io_submit, "legacy Linux AIO submission"),
    allow!(SYS_io_cancel, "legacy Linux AIO cancellation"),
    allow!(SYS_io_getevents, "legacy Linux AIO completion"),
    allow!(SYS_io_pgetevents, "legacy Linux AIO completion with a signal mask"),
    // ---- polling and event fds ------------------------------------------------------
    allow!(SYS_poll, "wait on fds"),
    allow!(SYS_ppoll, "wait on fds with a signal mask"),
    allow!(SYS_select, "wait on fds (legacy)"),
    allow!(SYS_pselect6, "wait on fds with a signal mask (make, bash)"),
    allow!(SYS_epoll_create, "event loop (legacy)"),
    allow!(SYS_epoll_create1, "event loop (node/libuv, python asyncio, tokio)"),
    allow!(SYS_epoll_ctl, "event loop registration"),
    allow!(SYS_epoll_wait, "event loop wait"),
    allow!(SYS_epoll_pwait, "event loop wait with a signal mask"),
    allow!(SYS_epoll_pwait2, "event loop wait with a nanosecond timeout"),
    allow!(SYS_eventfd, "event counter fd (legacy)"),
    allow!(SYS_eventfd2, "event counter fd (libuv, tokio)"),
    allow!(SYS_signalfd, "signals as an fd (legacy)"),
    allow!(SYS_signalfd4, "signals as an fd"),
    allow!(SYS_timerfd_create, "timer as an fd"),
    allow!(SYS_timerfd_settime, "arm a timer fd"),
    allow!(SYS_timerfd_gettime, "read a timer fd"),
    // ---- memory ---------------------------------------------------------------------
    allow!(SYS_brk, "heap growth (malloc)"),
    allow!(SYS_mmap, "map memory and files"),
    allow!(SYS_munmap, "unmap memory"),
    allow!(SYS_mremap, "grow or move a mapping (realloc of large blocks)"),
    allow!(SYS_mprotect, "change page protection (loaders, JITs in node and python)"),
    allow!(SYS_pkey_mprotect, "mprotect with a protection key"),
    allow!(SYS_pkey_alloc, "allocate a protection key (V8)"),
    allow!(SYS_pkey_free, "free a protection key"),
    allow!(SYS_msync, "flush a file mapping"),
    allow!(SYS_mincore, "page residency of the process's own mappings"),
    allow!(SYS_madvise, "memory-usage hints (allocators, V8, Rust)"),
    allow!(SYS_remap_file_pages, "deprecated, emulated with mmap; Docker allows it"),
    allow!(SYS_mlock, "pin pages; bounded by RLIMIT_MEMLOCK and the memory cgroup"),
    allow!(SYS_mlock2, "mlock with flags; same bounds"),
    allow!(SYS_munlock, "unpin pages"),
    allow!(SYS_mlockall, "pin all pages (gpg); same bounds as mlock"),
    allow!(SYS_munlockall, "unpin all pages"),
    allow!(SYS_memfd_create, "anonymous file in memory (JITs, python multiprocessing)"),
    allow!(SYS_membarrier, "process-wide memory barrier (JITs, liburcu, Rust crates)"),
    allow!(SYS_map_shadow_stack, "allocate a CET shadow stack for a new thread (glibc)"),
    allow!(SYS_mseal, "seal the process's own mappings; only restricts the caller"),
    // ---- processes and threads ------------------------------------------------------
    allow!(
        SYS_clone if CloneWithoutNamespaces,
        "fork and pthread_create; any CLONE_NEW* flag is refused"
    ),
    allow!(SYS_fork, "fork (legacy programs)"),
    allow!(SYS_vfork, "vfork (posix_spawn, make, gcc driver)"),
    allow!(SYS_execve, "run a program"),
    allow!(SYS_execveat, "run a program by fd (fexecve)"),
    allow!(SYS_exit, "end a thread"),
    allow!(SYS_exit_group, "end the process"),
    allow!(SYS_wait4, "reap a child"),
    allow!(SYS_waitid, "reap a child (python, Rust std)"),
    allow!(SYS_kill, "signal a process; the pid namespace limits who can be reached"),
    allow!(SYS_tkill, "signal a thread (legacy)"),
    allow!(SYS_tgkill, "signal a thread (raise, abort, runtimes)"),
    allow!(SYS_pidfd_open, "fd for a child process (python 3.9+, Rust std)"),
    allow!(SYS_pidfd_send_signal, "signal through a pidfd; same reach as kill"),
    allow!(SYS_getpid, "own pid"),
    allow!(SYS_gettid, "own thread id"),
    allow!(SYS_getppid, "parent pid"),
    allow!(SYS_set_tid_address, "thread exit notification (glibc startup)"),
    allow!(SYS_set_robust_list, "robust futex list (glibc threads)"),
    allow!(SYS_get_robust_list, "read a robust futex list; ptrace access checks apply"),
    allow!(SYS_futex, "thread synchronisation"),
    allow!(SYS_futex_waitv, "wait on several futexes"),
    allow!(SYS_futex_wake, "futex2 wake"),
    allow!(SYS_futex_wait, "futex2 wait"),
    allow!(SYS_futex_requeue, "futex2 requeue"),
    allow!(SYS_rseq, "restartable sequences (glibc 2.35+ registers one per thread)"),
    allow!(SYS_arch_prctl, "set the thread pointer (TLS) at thread start"),
    allow!(SYS_set_thread_area, "TLS descriptor (legacy)"),
    allow!(SYS_get_thread_area, "TLS descriptor (legacy)"),
    allow!(
        SYS_prctl,
        "process attributes (names, no_new_privs, dumpable, PDEATHSIG); caps still gate the rest"
    ),
    allow!(
        SYS_personality if PersonalityLinuxOrQuery,
        "read the persona, or reset it to PER_LINUX; ADDR_NO_RANDOMIZE and friends refused"
    ),
    allow!(SYS_seccomp, "add more filters; a new filter can only restrict further"),
    allow!(
        SYS_landlock_create_ruleset,
        "landlock: nesting a ruleset only restricts further"
    ),
    allow!(SYS_landlock_add_rule, "landlock: nesting a ruleset only restricts further"),
    allow!(SYS_landlock_restrict_self, "landlock: nesting a ruleset only restricts further"),
    allow!(SYS_restart_syscall, "resume a syscall interrupted by a signal"),
    allow!(SYS_capget, "read capabilities"),
    allow!(SYS_capset, "drop capabilities (can never raise past the bounding set)"),
    allow!(SYS_uname, "kernel name and version"),
    allow!(SYS_sysinfo, "memory and uptime totals"),
    allow!(SYS_getrlimit, "read resource limits"),
    allow!(SYS_setrlimit, "lower resource limits (raising the hard limit needs a cap)"),
    allow!(SYS_prlimit64, "read or lower resource limits"),
    allow!(SYS_getrusage, "resource usage"),
    allow!(SYS_times, "process times"),
    allow!(SYS_getcpu, "current CPU and NUMA node"),
    allow!(SYS_getrandom, "random bytes (every runtime at startup)"),
    // ---- scheduling -----------------------------------------------------------------
    allow!(SYS_sched_yield, "yield the CPU"),
    allow!(SYS_sched_getaffinity, "CPU affinity (nproc, runtimes sizing thread pools)"),
    allow!(SYS_sched_setaffinity, "restrict own CPU affinity; cpusets still bound it"),
    allow!(SYS_sched_getparam, "scheduling parameters"),
    allow!(SYS_sched_setparam, "scheduling parameters; a real-time priority above RLIMIT_RTPRIO, which the launcher pins to 0, needs CAP_SYS_NICE in the init namespace"),
    allow!(SYS_sched_getscheduler, "scheduling policy"),
    allow!(SYS_sched_setscheduler, "scheduling policy; SCHED_FIFO/RR are refused because the launcher pins RLIMIT_RTPRIO to 0 and the sandbox has no CAP_SYS_NICE in the init namespace (without the rlimit, an unprivileged process may go real-time)"),
    allow!(SYS_sched_getattr, "scheduling attributes"),
    allow!(SYS_sched_setattr, "scheduling attributes; same limits as sched_setscheduler (RLIMIT_RTPRIO 0; SCHED_DEADLINE needs CAP_SYS_NICE)"),
    allow!(SYS_sched_get_priority_max, "priority range"),
    allow!(SYS_sched_get_priority_min, "priority range"),
    allow!(SYS_sched_rr_get_interval, "round-robin time slice"),
    allow!(SYS_getpriority, "nice value"),
    allow!(SYS_setpriority, "lower own priority (nice, make -l); raising it is refused: RLIMIT_NICE is pinned to 0 and there is no CAP_SYS_NICE"),
    allow!(SYS_ioprio_get, "I/O priority"),
    allow!(SYS_ioprio_set, "lower own I/O priority (ionice)"),
    // ---- identity -------------------------------------------------------------------
    allow!(SYS_getuid, "own uid"),
    allow!(SYS_geteuid, "own effective uid"),
    allow!(SYS_getgid, "own gid"),
    allow!(SYS_getegid, "own effective gid"),
    allow!(SYS_getresuid, "own uids"),
    allow!(SYS_getresgid, "own gids"),
    allow!(SYS_getgroups, "supplementary groups"),
    allow!(SYS_setuid, "change uid; needs CAP_SETUID beyond own ids"),
    allow!(SYS_setgid, "change gid; needs CAP_SETGID beyond own ids"),
    allow!(SYS_setreuid, "change uids; same limits as setuid"),
    allow!(SYS_setregid, "change gids; same limits as setgid"),
    allow!(SYS_setresuid, "change uids; same limits as setuid"),
    allow!(SYS_setresgid, "change gids; same limits as setgid"),
    allow!(SYS_setfsuid, "filesystem uid; same limits as setuid"),
    allow!(SYS_setfsgid, "filesystem gid; same limits as setgid"),
    allow!(SYS_setgroups, "set supplementary groups; needs CAP_SETGID"),
    allow!(SYS_getpgid, "process group"),
    allow!(SYS_getpgrp, "own process group"),
    allow!(SYS_setpgid, "job control in shells and make"),
    allow!(SYS_getsid, "session id"),
    allow!(SYS_setsid, "start a session (daemons, job control)"),
    // ---- signals and time -----------------------------------------------------------
    allow!(SYS_rt_sigaction, "install signal handlers"),
    allow!(SYS_rt_sigprocmask, "block and unblock signals"),
    allow!(SYS_rt_sigreturn, "return from a signal handler"),
    allow!(SYS_rt_sigpending, "pending signals"),
    allow!(SYS_rt_sigtimedwait, "wait for a signal"),
    allow!(SYS_rt_sigsuspend, "wait for a signal with a mask"),
    allow!(SYS_rt_sigqueueinfo, "queue a signal with data; same reach as kill"),
    allow!(SYS_rt_tgsigqueueinfo, "queue a signal to a thread; same reach as kill"),
    allow!(SYS_sigaltstack, "alternate signal stack (Rust, Go, stack-overflow handlers)"),
    allow!(SYS_pause, "wait for a signal"),
    allow!(SYS_nanosleep, "sleep"),
    allow!(SYS_clock_nanosleep, "sleep on a clock"),
    allow!(SYS_alarm, "SIGALRM timer"),
    allow!(SYS_getitimer, "interval timer"),
    allow!(SYS_setitimer, "interval timer"),
    allow!(SYS_timer_create, "POSIX timer"),
    allow!(SYS_timer_settime, "arm a POSIX timer"),
    allow!(SYS_timer_gettime, "read a POSIX timer"),
    allow!(SYS_timer_getoverrun, "POSIX timer overruns"),
    allow!(SYS_timer_delete, "delete a POSIX timer"),
    allow!(SYS_time, "wall-clock seconds (when the vDSO is not used)"),
    allow!(SYS_gettimeofday, "wall clock (when the vDSO is not used)"),
    allow!(SYS_clock_gettime, "read a clock (when the vDSO is not used)"),
    allow!(SYS_clock_getres, "clock resolution"),
    // ---- System V and POSIX IPC (private to the sandbox's IPC namespace) -----------
    allow!(SYS_shmget, "System V shared memory, confined to the IPC namespace"),
    allow!(SYS_shmat, "System V shared memory attach"),
    allow!(SYS_shmdt, "System V shared memory detach"),
    allow!(SYS_shmctl, "System V shared memory control"),
    allow!(SYS_semget, "System V semaphores, confined to the IPC namespace"),
    allow!(SYS_semop, "System V semaphore operations"),
    allow!(SYS_semtimedop, "System V semaphore operations with a timeout"),
    allow!(SYS_semctl, "System V semaphore control"),
    allow!(SYS_msgget, "System V message queues, confined to the IPC namespace"),
    allow!(SYS_msgsnd, "System V message send"),
    allow!(SYS_msgrcv, "System V message receive"),
    allow!(SYS_msgctl, "System V message queue control"),
    allow!(SYS_mq_open, "POSIX message queues, confined to the IPC namespace"),
    allow!(SYS_mq_unlink, "POSIX message queue removal"),
    allow!(SYS_mq_timedsend, "POSIX message send"),
    allow!(SYS_mq_timedreceive, "POSIX message receive"),
    allow!(SYS_mq_notify, "POSIX message notification"),
    allow!(SYS_mq_getsetattr, "POSIX message queue attributes"),
    // ---- sockets (the network namespace has loopback only) -------------------------
    allow!(
        SYS_socket if SocketFamilyTypeProtocol,
        "unix sockets, and TCP/UDP sockets only (protocol 0, TCP or UDP); no SCTP, L2TP, UDP-Lite, MPTCP, raw, packet, netlink, vsock"
    ),
    allow!(
        SYS_socketpair if SocketFamilyTypeProtocol,
        "connected unix socket pairs (subprocess plumbing); same family, type and protocol limits"
    ),
    allow!(SYS_bind, "bind a socket (servers on loopback, unix sockets)"),
    allow!(SYS_listen, "listen on a socket"),
    allow!(SYS_accept, "accept a connection"),
    allow!(SYS_accept4, "accept a connection with flags"),
    allow!(SYS_connect, "connect a socket"),
    allow!(SYS_shutdown, "shut down a socket direction"),
    allow!(SYS_getsockname, "local socket address"),
    allow!(SYS_getpeername, "peer socket address"),
    allow!(SYS_getsockopt, "read socket options"),
    allow!(SYS_setsockopt, "set socket options; privileged options still need caps"),
    allow!(SYS_sendto, "send on a socket"),
    allow!(SYS_recvfrom, "receive on a socket"),
    allow!(SYS_sendmsg, "send with ancillary data (fd passing)"),
    allow!(SYS_recvmsg, "receive with ancillary data"),
    allow!(SYS_sendmmsg, "send several messages (glibc resolver)"),
    allow!(SYS_recvmmsg, "receive several messages"),
];

/// Refused on purpose, each with its reason. Everything absent from [`ALLOWED`] is refused
/// too; these are the ones a reviewer should see named.
pub const DENIED: &[DeniedSyscall] = &[
    // ---- files ------------------------------------------------------------------------
    deny!(
        SYS_openat2,
        ENOSYS,
        "its mode sits in a struct seccomp cannot read (a setuid file could be created); ENOSYS makes callers fall back to openat"
    ),
    // ---- mounts and the filesystem root ----------------------------------------------
    deny!(
        SYS_mount,
        EPERM,
        "changing mounts could undo the sandbox's filesystem view"
    ),
    deny!(
        SYS_umount2,
        EPERM,
        "unmounting could expose what a mount hides"
    ),
    deny!(
        SYS_pivot_root,
        EPERM,
        "only the launcher changes the root, before seccomp"
    ),
    deny!(
        SYS_chroot,
        EPERM,
        "chroot tricks are a classic escape route"
    ),
    deny!(
        SYS_fsopen,
        EPERM,
        "new mount API: creates a filesystem context"
    ),
    deny!(
        SYS_fsconfig,
        EPERM,
        "new mount API: configures a filesystem context"
    ),
    deny!(SYS_fsmount, EPERM, "new mount API: creates a mount"),
    deny!(
        SYS_fspick,
        EPERM,
        "new mount API: reconfigures an existing mount"
    ),
    deny!(SYS_move_mount, EPERM, "new mount API: attaches a mount"),
    deny!(SYS_open_tree, EPERM, "new mount API: clones a mount tree"),
    deny!(
        SYS_open_tree_attr,
        EPERM,
        "new mount API: clones a mount tree with attributes"
    ),
    deny!(
        SYS_mount_setattr,
        EPERM,
        "new mount API: changes mount flags (e.g. drops ro)"
    ),
    deny!(
        SYS_statmount,
        EPERM,
        "mount introspection; /proc/self/mountinfo covers real use"
    ),
    deny!(
        SYS_listmount,
        EPERM,
        "mount introspection; /proc/self/mountinfo covers real use"
    ),
    // ---- namespaces ----------------------------------------------------------------------
    deny!(
        SYS_unshare,
        EPERM,
        "new namespaces (user ns above all) widen kernel attack surface"
    ),
    deny!(SYS_setns, EPERM, "joining another namespace"),
    deny!(
        SYS_clone3,
        ENOSYS,
        "flags live in memory where seccomp cannot check them; ENOSYS makes glibc use clone"
    ),
    // ---- other processes' memory and fds -------------------------------------------
    deny!(
        SYS_ptrace,
        EPERM,
        "tracing other processes; large, bug-prone kernel surface"
    ),
    deny!(
        SYS_process_vm_readv,
        EPERM,
        "reads another process's memory"
    ),
    deny!(
        SYS_process_vm_writev,
        EPERM,
        "writes another process's memory"
    ),
    deny!(SYS_pidfd_getfd, EPERM, "steals an fd from another process"),
    deny!(
        SYS_kcmp,
        EPERM,
        "compares kernel objects of other processes; info leak"
    ),
    deny!(
        SYS_process_madvise,
        EPERM,
        "memory advice on another process"
    ),
    deny!(
        SYS_process_mrelease,
        EPERM,
        "reaps another process's memory"
    ),
    // ---- kernel attack surface ---------------------------------------------------------
    deny!(
        SYS_bpf,
        EPERM,
        "eBPF: a large, frequently exploited kernel surface"
    ),
    deny!(
        SYS_perf_event_open,
        EPERM,
        "performance counters: side channels and kernel bugs"
    ),
    deny!(
        SYS_userfaultfd,
        EPERM,
        "stalls kernel page faults at will; an exploit primitive"
    ),
    deny!(
        SYS_io_uring_setup,
        EPERM,
        "io_uring: many privilege escalations; bypasses seccomp"
    ),
    deny!(SYS_io_uring_enter, EPERM, "io_uring: see io_uring_setup"),
    deny!(SYS_io_uring_register, EPERM, "io_uring: see io_uring_setup"),
    deny!(SYS_keyctl, EPERM, "kernel keyrings are not namespaced"),
    deny!(SYS_add_key, EPERM, "kernel keyrings are not namespaced"),
    deny!(SYS_request_key, EPERM, "kernel keyrings are not namespaced"),
    deny!(
        SYS_lookup_dcookie,
        EPERM,
        "kernel profiling interface; leaks paths"
    ),
    deny!(SYS_fanotify_init, EPERM, "filesystem-wide event monitoring"),
    deny!(
        SYS_memfd_secret,
        EPERM,
        "secret memory areas; rarely used, has had kernel bugs"
    ),
    deny!(
        SYS_modify_ldt,
        EPERM,
        "16-bit segments; history of kernel bugs, no modern use"
    ),
    deny!(SYS_uselib, EPERM, "obsolete a.out loader"),
    deny!(SYS_nfsservctl, EPERM, "removed NFS server control"),
    deny!(SYS__sysctl, EPERM, "removed sysctl interface"),
    deny!(SYS_syslog, EPERM, "reads or clears the host's kernel log"),
    // ---- the host machine itself -------------------------------------------------------
    deny!(SYS_init_module, EPERM, "loads kernel code"),
    deny!(SYS_finit_module, EPERM, "loads kernel code"),
    deny!(SYS_delete_module, EPERM, "unloads kernel code"),
    deny!(SYS_create_module, EPERM, "removed module interface"),
    deny!(SYS_get_kernel_syms, EPERM, "removed module interface"),
    deny!(SYS_query_module, EPERM, "removed module interface"),
    deny!(SYS_kexec_load, EPERM, "replaces the running kernel"),
    deny!(SYS_kexec_file_load, EPERM, "replaces the running kernel"),
    deny!(SYS_reboot, EPERM, "reboots the host"),
    deny!(SYS_swapon, EPERM, "changes host swap"),
    deny!(SYS_swapoff, EPERM, "changes host swap"),
    deny!(SYS_settimeofday, EPERM, "the clock is not namespaced"),
    deny!(SYS_clock_settime, EPERM, "the clock is not namespaced"),
    deny!(SYS_clock_adjtime, EPERM, "the clock is not namespaced"),
    deny!(SYS_adjtimex, EPERM, "the clock is not namespaced"),
    deny!(
        SYS_sethostname,
        EPERM,
        "the sandbox's identity is set by the launcher"
    ),
    deny!(
        SYS_setdomainname,
        EPERM,
        "the sandbox's identity is set by the launcher"
    ),
    deny!(SYS_acct, EPERM, "host process accounting"),
    deny!(SYS_quotactl, EPERM, "filesystem quotas of the host"),
    deny!(SYS_quotactl_fd, EPERM, "filesystem quotas of the host"),
    deny!(
        SYS_open_by_handle_at,
        EPERM,
        "opens files by handle, bypassing the mount view"
    ),
    deny!(
        SYS_name_to_handle_at,
        EPERM,
        "makes handles for open_by_handle_at; inode leak"
    ),
    deny!(SYS_iopl, EPERM, "raw I/O port access"),
    deny!(SYS_ioperm, EPERM, "raw I/O port access"),
    // ---- NUMA policy (host-wide placement; no sandboxed program we run needs it) -----
    deny!(SYS_mbind, EPERM, "NUMA placement of memory"),
    deny!(SYS_set_mempolicy, EPERM, "NUMA placement of memory"),
    deny!(
        SYS_set_mempolicy_home_node,
        EPERM,
        "NUMA placement of memory"
    ),
    deny!(
        SYS_get_mempolicy,
        EPERM,
        "NUMA topology; callers fall back to no NUMA"
    ),
    deny!(
        SYS_move_pages,
        EPERM,
        "moves pages, also of other processes"
    ),
    deny!(SYS_migrate_pages, EPERM, "moves pages of other processes"),
];

// ---- build-time checks: a table that breaks these does not compile ------------------
const _: () = {
    let mut i = 0;
    while i < ALLOWED.len() {
        assert!(
            !ALLOWED[i].reason.is_empty(),
            "an allowed syscall has no reason"
        );
        assert!(
            !ALLOWED[i].name.is_empty(),
            "an allowed syscall has no name"
        );
        assert!(ALLOWED[i].nr >= 0 && ALLOWED[i].nr < X32_SYSCALL_BIT as i64);
        let mut j = i + 1;
        while j < ALLOWED.len() {
            assert!(ALLOWED[i].nr != ALLOWED[j].nr, "a syscall is allowed twice");
            j += 1;
        }
        let mut k = 0;
        while k < DENIED.len() {
            assert!(
                ALLOWED[i].nr != DENIED[k].nr,
                "a syscall is both allowed and denied"
            );
            k += 1;
        }
        i += 1;
    }
    let mut i = 0;
    while i < DENIED.len() {
        assert!(
            !DENIED[i].reason.is_empty(),
            "a denied syscall has no reason"
        );
        assert!(!DENIED[i].name.is_empty(), "a denied syscall has no name");
        assert!(DENIED[i].nr >= 0 && DENIED[i].nr < X32_SYSCALL_BIT as i64);
        assert!(
            DENIED[i].errno == EPERM || DENIED[i].errno == ENOSYS,
            "a denied syscall must get EPERM or ENOSYS (build_filters has no other filter)"
        );
        let mut j = i + 1;
        while j < DENIED.len() {
            assert!(DENIED[i].nr != DENIED[j].nr, "a syscall is denied twice");
            j += 1;
        }
        i += 1;
    }
};

const fn names_and_numbers<const N: usize>(table: &[DeniedSyscall]) -> [(&'static str, i64); N] {
    let mut out = [("", 0); N];
    let mut i = 0;
    while i < N {
        out[i] = (table[i].name, table[i].nr);
        i += 1;
    }
    out
}

const MUST_DENY_ARRAY: [(&str, i64); DENIED.len()] = names_and_numbers(DENIED);

/// `(name, nr)` of every entry of [`DENIED`], for the escape tests. Each one fails with
/// `EPERM`, except `clone3`, which fails with `ENOSYS` (see [`DENIED`] for the errno).
pub const MUST_DENY: &[(&str, i64)] = &MUST_DENY_ARRAY;

// More build-time checks: every value an argument rule compares fits in 32 bits.
const _: () = {
    const SOCKET_TYPE_MASK_32: u32 = low32(SOCKET_TYPE_MASK);
    let mut i = 0;
    while i < DENIED_IOCTLS.len() {
        low32(DENIED_IOCTLS[i].1);
        assert!(
            !DENIED_IOCTLS[i].2.is_empty(),
            "a denied ioctl has no reason"
        );
        i += 1;
    }
    let mut i = 0;
    while i < SOCKET_UNIX_TYPES.len() {
        assert!(
            int32(SOCKET_UNIX_TYPES[i].1) & !SOCKET_TYPE_MASK_32 == 0,
            "a socket type has bits outside SOCKET_TYPE_MASK"
        );
        assert!(
            !SOCKET_UNIX_TYPES[i].2.is_empty(),
            "a socket rule has no reason"
        );
        i += 1;
    }
    let mut i = 0;
    while i < SOCKET_INET_TYPES.len() {
        assert!(
            int32(SOCKET_INET_TYPES[i].1) & !SOCKET_TYPE_MASK_32 == 0,
            "a socket type has bits outside SOCKET_TYPE_MASK"
        );
        assert!(
            !SOCKET_INET_TYPES[i].2.is_empty(),
            "a socket rule has no reason"
        );
        i += 1;
    }
    let mut i = 0;
    while i < SOCKET_INET_FAMILIES.len() {
        int32(SOCKET_INET_FAMILIES[i].1);
        assert!(
            !SOCKET_INET_FAMILIES[i].2.is_empty(),
            "a socket rule has no reason"
        );
        i += 1;
    }
    let mut i = 0;
    while i < SOCKET_INET_PROTOCOLS.len() {
        int32(SOCKET_INET_PROTOCOLS[i].1);
        assert!(
            !SOCKET_INET_PROTOCOLS[i].2.is_empty(),
            "a socket rule has no reason"
        );
        i += 1;
    }
    let mut i = 0;
    while i < SOCKET_FAMILIES.len() {
        int32(SOCKET_FAMILIES[i].1);
        i += 1;
    }
    let mut i = 0;
    while i < SOCKET_TYPES.len() {
        assert!(
            int32(SOCKET_TYPES[i].1) & !SOCKET_TYPE_MASK_32 == 0,
            "a socket type has bits outside SOCKET_TYPE_MASK"
        );
        i += 1;
    }
    low32(PER_LINUX);
    low32(PERSONALITY_QUERY);
};
