//! The sandbox's seccomp policy, as reviewed data, and the BPF programs built from it.
//!
//! # What a reviewer reads
//!
//! - [`ALLOWED`]: every syscall the sandbox may make, each with its number, an optional argument
//!   rule ([`ArgRule`]) and the reason it is there. Anything not in this table fails with `EPERM`.
//! - [`DENIED`]: the syscalls we refuse on purpose, each with the errno it gets and the reason.
//!   The table is not what enforces the refusal (the allowlist does, by leaving them out; the one
//!   exception is `clone3`, see below) but it is the list the escape tests walk ([`MUST_DENY`]),
//!   and a syscall may not be in both tables: the build fails if it is.
//!
//! The build also fails if an entry has an empty reason, if a number appears twice, or if a
//! denied entry asks for an errno other than `EPERM` or `ENOSYS`.
//!
//! Everything else, including syscalls newer than this table (for example `lsm_*`,
//! `file_getattr`, `listns`) and oddities such as `vhangup`, is refused with `EPERM` by the
//! allowlist's default action, as Docker's default profile does.
//!
//! # The program
//!
//! [`build_filters`] returns one program (in a `Vec`: the launcher installs each program it
//! gets, in order). It is generated here from the tables, not by seccompiler (the `bpf`
//! submodule assembles it and checks it the way the kernel's verifier will), and it decides
//! in this order:
//!
//! 1. **architecture**: a `seccomp_data.arch` other than `AUDIT_ARCH_X86_64` (an i386
//!    `int 0x80` call, for instance) kills the process (`SECCOMP_RET_KILL_PROCESS`);
//! 2. **x32**: a syscall number carrying the x32 bit (`0x4000_0000`) kills the process; x32
//!    calls report the x86_64 arch, so only this check catches them;
//! 3. **the number**: the numbers `0..=u32::MAX` are cut into contiguous ranges with one
//!    verdict each (allow; check the arguments; `ENOSYS`; or the default, `EPERM`), and a
//!    balanced binary search over the ranges' first numbers (one `JGE` per level) finds the
//!    verdict in `ceil(log2(ranges))` comparisons, instead of walking a chain of one comparison
//!    per syscall;
//! 4. **the arguments**: one small block per [`ArgRule`], shared by the syscalls that use it,
//!    ending in allow or `EPERM`. Each rule compares the low 32 bits of its arguments only,
//!    which is all the kernel reads of them.
//!
//! `clone3` gets `ENOSYS` (its [`DENIED`] entry is the one whose errno is not `EPERM`): that
//! makes glibc (2.34 and later, for `pthread_create`, `posix_spawn`, `fork`) fall back to
//! `clone`, which the program checks flag by flag; `clone3` passes its flags in memory, where
//! a filter cannot look.
//!
//! Why one short program: at install (every sandbox start) the kernel checks and JIT-compiles
//! each filter and also runs it once per syscall number to fill its cache of always-allowed
//! syscalls; then every syscall outside that cache runs every installed filter. The linear
//! chain seccompiler built (1622 instructions, plus two small filters) took about 0.6 ms to
//! install and up to ~300 comparisons per call; this program is about 100 instructions and
//! installs in a few hundredths of a millisecond. And with a single filter, no precedence
//! between filters decides which errno a call gets.
//! Filters the sandboxed program installs later can only restrict further, which is why
//! `seccomp` and `prctl` themselves stay allowed.
//!
//! The generated program was checked, decision for decision, against the three programs
//! seccompiler used to build from the same tables (allowlist, `ENOSYS` filter, arch/x32 kill
//! filter); the unit tests keep that builder as the reference and repeat the comparison.
//!
//! # Architectures
//!
//! The tables are written for x86_64 only. On other architectures the tables are empty and
//! [`build_filters`] returns [`SeccompPolicyError::UnsupportedArch`]: the launcher must refuse
//! to start a sandbox rather than run one without seccomp. (`vm86` and `vm86old` exist only in
//! the i386 table; i386 calls are killed by the arch checks.)

use std::fmt;

#[cfg(target_arch = "x86_64")]
mod bpf;

/// What the allowlist checks beyond the syscall number.
///
/// Only arguments passed by value can be checked: seccomp sees registers, never memory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ArgRule {
    /// Any arguments.
    Any,
    /// `clone`: allowed only when `flags & CLONE_NAMESPACE_FLAGS == 0` (low 32 bits of arg 0,
    /// which is all the kernel reads): threads and plain forks, never a new namespace.
    CloneWithoutNamespaces,
    /// `ioctl`: any request except those of `DENIED_IOCTLS` (`TIOCSTI`, `TIOCLINUX`,
    /// `TIOCSETD`; arg 1 compared as 32 bits, since the kernel truncates the request number to
    /// `unsigned int`).
    IoctlExceptTerminalInjection,
    /// `personality`: only `PER_LINUX` (0) and the query value `0xffffffff` (arg 0, 32 bits).
    PersonalityLinuxOrQuery,
    /// `socket` / `socketpair`: family (arg 0), type (arg 1, masked with `0xf` to ignore
    /// `SOCK_CLOEXEC` / `SOCK_NONBLOCK`) and protocol (arg 2), all compared as 32 bits:
    /// `AF_UNIX` with a type of [`SOCKET_UNIX_TYPES`](crate::seccomp::SOCKET_UNIX_TYPES) (the
    /// kernel itself refuses a unix protocol other than 0), or `AF_INET` / `AF_INET6` with a type
    /// of `SOCKET_INET_TYPES` and a protocol of `SOCKET_INET_PROTOCOLS` (0, TCP, UDP). Anything
    /// else gets `EPERM` before the kernel looks the protocol up, so `inet_create` never loads
    /// or reaches SCTP, L2TP/IP, UDP-Lite, MPTCP or raw sockets, and no netlink, packet or vsock
    /// socket is made.
    SocketFamilyTypeProtocol,
    /// `chmod`, `fchmod`, `creat`, `mknod`: the mode (arg 1) has neither `S_ISUID` nor
    /// `S_ISGID`. A workspace is an id-mapped mount of the controller's own files: a setuid
    /// or setgid file made there would be one of the controller's user on the host.
    ModeArg1WithoutSetid,
    /// `open`, `fchmodat`, `fchmodat2`, `mknodat`: the same for the mode in arg 2.
    ModeArg2WithoutSetid,
    /// `openat`: the same for the mode in arg 3.
    ModeArg3WithoutSetid,
}

/// `S_ISUID | S_ISGID`: the mode bits [`ArgRule::ModeArg1WithoutSetid`] and its siblings
/// refuse.
pub const SETID_BITS: u64 = 0o6000;

/// One entry of the allowlist.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AllowedSyscall {
    /// The syscall's name, as in the kernel's syscall table.
    pub name: &'static str,
    /// The syscall's number on this architecture.
    pub nr: i64,
    /// The argument check, if any.
    pub args: ArgRule,
    /// Why the sandbox needs it, and why it is safe enough.
    pub reason: &'static str,
}

/// One entry of the deny list.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DeniedSyscall {
    /// The syscall's name, as in the kernel's syscall table.
    pub name: &'static str,
    /// The syscall's number on this architecture.
    pub nr: i64,
    /// The errno the sandboxed process gets (`EPERM`, or `ENOSYS` where callers need it to fall
    /// back).
    pub errno: i32,
    /// Why it is refused.
    pub reason: &'static str,
}

/// Why the seccomp programs could not be built.
#[derive(Debug)]
pub enum SeccompPolicyError {
    /// No table has been written for the architecture this was compiled for.
    UnsupportedArch(&'static str),
    /// The generated BPF program failed its own checks (a jump out of range, a bad load): a
    /// bug in the generator, never a property of the host.
    InvalidProgram(String),
}

impl fmt::Display for SeccompPolicyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::UnsupportedArch(arch) => write!(
                f,
                "the seccomp syscall table for architecture {arch} is not written yet; \
                 bulkhead sandboxes run on x86_64 only"
            ),
            Self::InvalidProgram(reason) => write!(
                f,
                "the generated seccomp program is invalid ({reason}); this is a bug in bulkhead, \
                 please report it"
            ),
        }
    }
}

impl std::error::Error for SeccompPolicyError {}

#[cfg(target_arch = "x86_64")]
pub use x86_64::{
    build_filters, ALLOWED, AUDIT_ARCH_X86_64, CLONE_NAMESPACE_FLAGS, DENIED, DENIED_IOCTLS,
    MUST_DENY, SOCKET_FAMILIES, SOCKET_INET_FAMILIES, SOCKET_INET_PROTOCOLS, SOCKET_INET_TYPES,
    SOCKET_TYPE_MASK, SOCKET_UNIX_TYPES, X32_SYSCALL_BIT,
};

/// The allowlist (empty: no table for this architecture yet).
#[cfg(not(target_arch = "x86_64"))]
pub const ALLOWED: &[AllowedSyscall] = &[];
/// The deny list (empty: no table for this architecture yet).
#[cfg(not(target_arch = "x86_64"))]
pub const DENIED: &[DeniedSyscall] = &[];
/// `(name, nr)` of every denied syscall (empty: no table for this architecture yet).
#[cfg(not(target_arch = "x86_64"))]
pub const MUST_DENY: &[(&str, i64)] = &[];

/// Builds the seccomp programs; always an error here, as no table exists for this architecture.
#[cfg(not(target_arch = "x86_64"))]
pub fn build_filters() -> Result<Vec<seccompiler::BpfProgram>, SeccompPolicyError> {
    Err(SeccompPolicyError::UnsupportedArch(std::env::consts::ARCH))
}

/// `"SYS_read"` -> `"read"`, at compile time, so a table entry's name cannot disagree with its
/// number.
#[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
const fn sys_name(constant: &'static str) -> &'static str {
    let bytes = constant.as_bytes();
    assert!(
        bytes.len() > 4
            && bytes[0] == b'S'
            && bytes[1] == b'Y'
            && bytes[2] == b'S'
            && bytes[3] == b'_',
        "syscall constants are named SYS_<name>"
    );
    let (_, name) = bytes.split_at(4);
    match std::str::from_utf8(name) {
        Ok(name) => name,
        Err(_) => panic!("syscall constant names are ASCII"),
    }
}

#[cfg(target_arch = "x86_64")]
mod x86_64 {
    use super::bpf::{Assembler, Cond, Label};
    use super::{sys_name, AllowedSyscall, ArgRule, DeniedSyscall, SeccompPolicyError, SETID_BITS};
    use seccompiler::BpfProgram;
    use std::collections::BTreeMap;

    /// Syscall numbers: libc's, plus the ones libc 0.2 does not name yet (numbers from the
    /// kernel's `arch/x86/entry/syscalls/syscall_64.tbl`).
    #[allow(non_upper_case_globals)]
    mod nr {
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
    const PERSONALITY_QUERY: u64 = 0xffff_ffff;
    const PER_LINUX: u64 = 0;

    const EPERM: i32 = libc::EPERM;
    const ENOSYS: i32 = libc::ENOSYS;

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

    const fn names_and_numbers<const N: usize>(
        table: &[DeniedSyscall],
    ) -> [(&'static str, i64); N] {
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

    // ---- the BPF program -----------------------------------------------------------------
    //
    // One program, generated from the tables above: arch check, x32 check, a binary search
    // over the syscall numbers, the argument rules, the verdicts. See the module documentation.

    // Offsets into `struct seccomp_data { int nr; __u32 arch; __u64 ip; __u64 args[6]; }`.
    const SECCOMP_DATA_NR: u32 = 0;
    const SECCOMP_DATA_ARCH: u32 = 4;

    /// Offset of the low 32 bits of argument `n` (x86_64 is little-endian). Every argument rule
    /// reads only these: the kernel takes clone's flags, the ioctl request, the persona and the
    /// socket family and type as 32-bit values.
    const fn arg_low(n: u32) -> u32 {
        16 + 8 * n
    }

    /// A 64-bit table value as the 32-bit word the program compares; the build fails if the
    /// value does not fit.
    const fn low32(value: u64) -> u32 {
        assert!(value >> 32 == 0, "a compared value does not fit in 32 bits");
        value as u32
    }

    /// A table value that is an `int` in the kernel's API (socket families and types).
    const fn int32(value: i32) -> u32 {
        assert!(value >= 0, "a compared value is negative");
        value as u32
    }

    const CLONE_NAMESPACE_MASK: u32 = low32(CLONE_NAMESPACE_FLAGS);
    const SOCKET_TYPE_MASK_32: u32 = low32(SOCKET_TYPE_MASK);

    // More build-time checks: every value an argument rule compares fits in 32 bits.
    const _: () = {
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

    /// The errno of every syscall that is in neither table, and of every denied one but
    /// `ENOSYS` entries.
    const DEFAULT_ERRNO: i32 = EPERM;

    const fn ret_errno(errno: i32) -> u32 {
        libc::SECCOMP_RET_ERRNO | (errno as u32 & libc::SECCOMP_RET_DATA)
    }

    /// What the program does with one syscall number of the native architecture.
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    enum Verdict {
        Allow,
        Errno(i32),
        /// Allow if the arguments pass the rule, `EPERM` if not.
        Check(ArgRule),
    }

    /// Every syscall number, `0..=u32::MAX`, as contiguous ranges: `(first number, verdict)`,
    /// sorted, neighbours with different verdicts.
    fn ranges() -> Vec<(u32, Verdict)> {
        let mut by_nr = BTreeMap::new();
        // The build-time checks keep every number in 0..X32_SYSCALL_BIT, so `as u32` is exact.
        for entry in ALLOWED {
            let verdict = match entry.args {
                ArgRule::Any => Verdict::Allow,
                rule => Verdict::Check(rule),
            };
            by_nr.insert(entry.nr as u32, verdict);
        }
        for entry in DENIED.iter().filter(|e| e.errno != DEFAULT_ERRNO) {
            by_nr.insert(entry.nr as u32, Verdict::Errno(entry.errno));
        }
        let default = Verdict::Errno(DEFAULT_ERRNO);
        let mut ranges = Vec::new();
        let mut next: u64 = 0; // the first number not yet covered
        for (&nr, &verdict) in &by_nr {
            if u64::from(nr) > next {
                ranges.push((next as u32, default));
            }
            ranges.push((nr, verdict));
            next = u64::from(nr) + 1;
        }
        if next <= u64::from(u32::MAX) {
            ranges.push((next as u32, default));
        }
        // Merge neighbours with the same verdict (`dedup_by` keeps the first, i.e. the start).
        ranges.dedup_by(|later, earlier| later.1 == earlier.1);
        ranges
    }

    /// Where the lookup over `ranges` starts: the verdict's label for a single range, a fresh
    /// label (bound by [`emit_search`]) otherwise.
    fn search_entry(
        asm: &mut Assembler,
        ranges: &[(u32, Verdict)],
        verdict: &dyn Fn(Verdict) -> Label,
    ) -> Label {
        match ranges {
            [(_, single)] => verdict(*single),
            _ => asm.label(),
        }
    }

    /// A balanced binary search over `ranges` (A holds the syscall number), bound at `here`:
    /// each node is one `JGE` on the first number of the upper half; a leaf is a jump to its
    /// verdict, so a lookup takes `ceil(log2(ranges.len()))` comparisons. Nodes are laid out in
    /// pre-order, so a node's lower half follows it directly.
    fn emit_search(
        asm: &mut Assembler,
        ranges: &[(u32, Verdict)],
        here: Label,
        verdict: &dyn Fn(Verdict) -> Label,
    ) {
        if ranges.len() < 2 {
            return;
        }
        let (lower, upper) = ranges.split_at(ranges.len() / 2);
        let lower_entry = search_entry(asm, lower, verdict);
        let upper_entry = search_entry(asm, upper, verdict);
        asm.bind(here);
        asm.jump(Cond::Ge, upper[0].0, upper_entry, lower_entry);
        emit_search(asm, lower, lower_entry, verdict);
        emit_search(asm, upper, upper_entry, verdict);
    }

    /// `if A is one of values goto matched else goto otherwise`.
    fn emit_one_of(asm: &mut Assembler, values: &[u32], matched: Label, otherwise: Label) {
        let Some((&last, rest)) = values.split_last() else {
            asm.goto(otherwise);
            return;
        };
        for &value in rest {
            let next = asm.label();
            asm.jump(Cond::Eq, value, matched, next);
            asm.bind(next);
        }
        asm.jump(Cond::Eq, last, matched, otherwise);
    }

    /// The block for one [`ArgRule`]: ends at `allow` or `deny`.
    fn emit_rule(asm: &mut Assembler, rule: ArgRule, allow: Label, deny: Label) {
        match rule {
            ArgRule::Any => asm.goto(allow),
            ArgRule::CloneWithoutNamespaces => {
                asm.load(arg_low(0));
                asm.jump(Cond::Set, CLONE_NAMESPACE_MASK, deny, allow);
            }
            ArgRule::IoctlExceptTerminalInjection => {
                let requests: Vec<u32> = DENIED_IOCTLS.iter().map(|&(_, r, _)| low32(r)).collect();
                asm.load(arg_low(1));
                emit_one_of(asm, &requests, deny, allow);
            }
            ArgRule::PersonalityLinuxOrQuery => {
                asm.load(arg_low(0));
                emit_one_of(
                    asm,
                    &[low32(PER_LINUX), low32(PERSONALITY_QUERY)],
                    allow,
                    deny,
                );
            }
            ArgRule::ModeArg1WithoutSetid
            | ArgRule::ModeArg2WithoutSetid
            | ArgRule::ModeArg3WithoutSetid => {
                let arg = match rule {
                    ArgRule::ModeArg1WithoutSetid => 1,
                    ArgRule::ModeArg2WithoutSetid => 2,
                    _ => 3,
                };
                asm.load(arg_low(arg));
                asm.jump(Cond::Set, SETID_BITS as u32, deny, allow);
            }
            ArgRule::SocketFamilyTypeProtocol => {
                let values = |t: &[(&str, i32, &str)]| -> Vec<u32> {
                    t.iter().map(|&(_, v, _)| int32(v)).collect()
                };
                let unix_type = asm.label();
                let not_unix = asm.label();
                let inet_type = asm.label();
                let inet_protocol = asm.label();
                asm.load(arg_low(0));
                asm.jump(Cond::Eq, int32(libc::AF_UNIX), unix_type, not_unix);
                asm.bind(not_unix);
                emit_one_of(asm, &values(SOCKET_INET_FAMILIES), inet_type, deny);
                asm.bind(unix_type);
                asm.load(arg_low(1));
                asm.and(SOCKET_TYPE_MASK_32);
                emit_one_of(asm, &values(SOCKET_UNIX_TYPES), allow, deny);
                asm.bind(inet_type);
                asm.load(arg_low(1));
                asm.and(SOCKET_TYPE_MASK_32);
                emit_one_of(asm, &values(SOCKET_INET_TYPES), inet_protocol, deny);
                asm.bind(inet_protocol);
                asm.load(arg_low(2));
                emit_one_of(asm, &values(SOCKET_INET_PROTOCOLS), allow, deny);
            }
        }
    }

    /// The whole policy as one program.
    fn policy_program() -> Result<BpfProgram, String> {
        let ranges = ranges();
        let mut asm = Assembler::new();

        // One label per distinct verdict, shared by every range and rule that ends there.
        let kill = asm.label();
        let allow = asm.label();
        let mut errnos: Vec<(i32, Label)> = vec![(DEFAULT_ERRNO, asm.label())];
        let mut rules: Vec<(ArgRule, Label)> = Vec::new();
        for &(_, verdict) in &ranges {
            match verdict {
                Verdict::Allow => {}
                Verdict::Errno(errno) if errnos.iter().all(|&(e, _)| e != errno) => {
                    errnos.push((errno, asm.label()));
                }
                Verdict::Errno(_) => {}
                Verdict::Check(rule) if rules.iter().all(|&(r, _)| r != rule) => {
                    rules.push((rule, asm.label()));
                }
                Verdict::Check(_) => {}
            }
        }
        let errno_label = |errno: i32| errnos.iter().find(|&&(e, _)| e == errno).map(|&(_, l)| l);
        let deny = errno_label(DEFAULT_ERRNO).expect("the default errno has a label");
        let verdict = |v: Verdict| match v {
            Verdict::Allow => allow,
            Verdict::Errno(errno) => errno_label(errno).expect("every errno has a label"),
            Verdict::Check(rule) => rules
                .iter()
                .find(|&&(r, _)| r == rule)
                .map(|&(_, l)| l)
                .expect("every rule has a label"),
        };

        // 1. The architecture: anything but x86_64 (an i386 `int 0x80`, ...) is killed.
        let native = asm.label();
        asm.load(SECCOMP_DATA_ARCH);
        asm.jump(Cond::Eq, AUDIT_ARCH_X86_64, native, kill);
        asm.bind(native);
        // 2. The number; an x32 one (it reports the x86_64 arch) is killed.
        let root = search_entry(&mut asm, &ranges, &verdict);
        asm.load(SECCOMP_DATA_NR);
        asm.jump(Cond::Set, X32_SYSCALL_BIT, kill, root);
        // 3. The binary search over the number ranges.
        emit_search(&mut asm, &ranges, root, &verdict);
        // 4. The argument rules.
        for &(rule, label) in &rules {
            asm.bind(label);
            emit_rule(&mut asm, rule, allow, deny);
        }
        // 5. The verdicts.
        asm.bind(allow);
        asm.ret(libc::SECCOMP_RET_ALLOW);
        for &(errno, label) in &errnos {
            asm.bind(label);
            asm.ret(ret_errno(errno));
        }
        asm.bind(kill);
        asm.ret(libc::SECCOMP_RET_KILL_PROCESS);
        asm.finish()
    }

    /// Builds the seccomp programs in the order they must be installed: today one program,
    /// which checks the architecture, the x32 bit, the syscall number and the argument rules
    /// (see the module documentation). The launcher installs each program in turn.
    pub fn build_filters() -> Result<Vec<BpfProgram>, SeccompPolicyError> {
        Ok(vec![
            policy_program().map_err(SeccompPolicyError::InvalidProgram)?
        ])
    }

    #[cfg(test)]
    mod tests {
        use super::super::bpf;
        use super::*;
        use std::collections::HashSet;

        /// The programs as seccompiler built them before the generator existed: the reference
        /// the generated program must agree with, decision for decision. Kept verbatim apart
        /// from error handling.
        mod reference {
            use super::super::*;
            use crate::seccomp::bpf;
            use seccompiler::{
                sock_filter, SeccompAction, SeccompCmpArgLen, SeccompCmpOp, SeccompCondition,
                SeccompFilter, SeccompRule, TargetArch,
            };

            fn dword(
                arg: u8,
                op: SeccompCmpOp,
                value: u64,
            ) -> Result<SeccompCondition, seccompiler::BackendError> {
                SeccompCondition::new(arg, SeccompCmpArgLen::Dword, op, value)
            }

            /// The rules that express an [`ArgRule`]; an empty list means "any arguments".
            fn rules_for(rule: ArgRule) -> Result<Vec<SeccompRule>, seccompiler::BackendError> {
                Ok(match rule {
                    ArgRule::Any => Vec::new(),
                    ArgRule::CloneWithoutNamespaces => vec![SeccompRule::new(vec![dword(
                        0,
                        SeccompCmpOp::MaskedEq(CLONE_NAMESPACE_FLAGS),
                        0,
                    )?])?],
                    ArgRule::IoctlExceptTerminalInjection => {
                        let conditions = DENIED_IOCTLS
                            .iter()
                            .map(|&(_, request, _)| dword(1, SeccompCmpOp::Ne, request))
                            .collect::<Result<Vec<_>, _>>()?;
                        vec![SeccompRule::new(conditions)?]
                    }
                    ArgRule::PersonalityLinuxOrQuery => vec![
                        SeccompRule::new(vec![dword(0, SeccompCmpOp::Eq, PER_LINUX)?])?,
                        SeccompRule::new(vec![dword(0, SeccompCmpOp::Eq, PERSONALITY_QUERY)?])?,
                    ],
                    ArgRule::ModeArg1WithoutSetid => vec![SeccompRule::new(vec![dword(
                        1,
                        SeccompCmpOp::MaskedEq(SETID_BITS),
                        0,
                    )?])?],
                    ArgRule::ModeArg2WithoutSetid => vec![SeccompRule::new(vec![dword(
                        2,
                        SeccompCmpOp::MaskedEq(SETID_BITS),
                        0,
                    )?])?],
                    ArgRule::ModeArg3WithoutSetid => vec![SeccompRule::new(vec![dword(
                        3,
                        SeccompCmpOp::MaskedEq(SETID_BITS),
                        0,
                    )?])?],
                    ArgRule::SocketFamilyTypeProtocol => {
                        let mut rules = Vec::new();
                        for &(_, ty, _) in SOCKET_UNIX_TYPES {
                            rules.push(SeccompRule::new(vec![
                                dword(0, SeccompCmpOp::Eq, libc::AF_UNIX as u64)?,
                                dword(1, SeccompCmpOp::MaskedEq(SOCKET_TYPE_MASK), ty as u64)?,
                            ])?);
                        }
                        for &(_, family, _) in SOCKET_INET_FAMILIES {
                            for &(_, ty, _) in SOCKET_INET_TYPES {
                                for &(_, protocol, _) in SOCKET_INET_PROTOCOLS {
                                    rules.push(SeccompRule::new(vec![
                                        dword(0, SeccompCmpOp::Eq, family as u64)?,
                                        dword(
                                            1,
                                            SeccompCmpOp::MaskedEq(SOCKET_TYPE_MASK),
                                            ty as u64,
                                        )?,
                                        dword(2, SeccompCmpOp::Eq, protocol as u64)?,
                                    ])?);
                                }
                            }
                        }
                        rules
                    }
                })
            }

            fn allowlist_filter() -> BpfProgram {
                let mut rules = BTreeMap::new();
                for entry in ALLOWED {
                    rules.insert(entry.nr, rules_for(entry.args).unwrap());
                }
                let filter = SeccompFilter::new(
                    rules,
                    SeccompAction::Errno(EPERM as u32),
                    SeccompAction::Allow,
                    TargetArch::x86_64,
                )
                .unwrap();
                BpfProgram::try_from(filter).unwrap()
            }

            fn enosys_filter() -> BpfProgram {
                let rules = DENIED
                    .iter()
                    .filter(|entry| entry.errno == ENOSYS)
                    .map(|entry| (entry.nr, Vec::new()))
                    .collect();
                let filter = SeccompFilter::new(
                    rules,
                    SeccompAction::Allow,
                    SeccompAction::Errno(ENOSYS as u32),
                    TargetArch::x86_64,
                )
                .unwrap();
                BpfProgram::try_from(filter).unwrap()
            }

            fn insn(code: u16, jt: u8, jf: u8, k: u32) -> sock_filter {
                sock_filter { code, jt, jf, k }
            }

            /// Kill on a foreign architecture or an x32 syscall number; allow everything else
            /// (the other filters decide).
            fn arch_filter() -> BpfProgram {
                vec![
                    // 0: A = arch
                    insn(bpf::LD_W_ABS, 0, 0, SECCOMP_DATA_ARCH),
                    // 1: if A == x86_64 skip the kill
                    insn(bpf::JMP_JEQ_K, 1, 0, AUDIT_ARCH_X86_64),
                    // 2: foreign architecture (i386 int 0x80, ...)
                    insn(bpf::RET_K, 0, 0, libc::SECCOMP_RET_KILL_PROCESS),
                    // 3: A = nr
                    insn(bpf::LD_W_ABS, 0, 0, SECCOMP_DATA_NR),
                    // 4: if A & X32 bit fall through to the kill, else skip it
                    insn(bpf::JMP_JSET_K, 0, 1, X32_SYSCALL_BIT),
                    // 5: x32 syscall
                    insn(bpf::RET_K, 0, 0, libc::SECCOMP_RET_KILL_PROCESS),
                    // 6: native x86_64 syscall: let the other filters decide
                    insn(bpf::RET_K, 0, 0, libc::SECCOMP_RET_ALLOW),
                ]
            }

            /// The three programs, in the order they were installed: allowlist, `ENOSYS`
            /// filter, arch/x32 kill filter.
            pub(super) fn build_filters() -> Vec<BpfProgram> {
                vec![allowlist_filter(), enosys_filter(), arch_filter()]
            }
        }

        #[test]
        fn every_entry_has_a_reason_and_a_name() {
            for entry in ALLOWED {
                assert!(
                    !entry.reason.trim().is_empty(),
                    "{} has no reason",
                    entry.name
                );
                assert!(!entry.name.is_empty());
            }
            for entry in DENIED {
                assert!(
                    !entry.reason.trim().is_empty(),
                    "{} has no reason",
                    entry.name
                );
                assert!(!entry.name.is_empty());
            }
        }

        #[test]
        fn no_syscall_is_both_allowed_and_denied() {
            let allowed: HashSet<i64> = ALLOWED.iter().map(|e| e.nr).collect();
            for entry in DENIED {
                assert!(
                    !allowed.contains(&entry.nr),
                    "{} is allowed and denied",
                    entry.name
                );
            }
            let allowed_names: HashSet<&str> = ALLOWED.iter().map(|e| e.name).collect();
            for entry in DENIED {
                assert!(!allowed_names.contains(entry.name), "{}", entry.name);
            }
        }

        #[test]
        fn no_duplicates() {
            let mut numbers = HashSet::new();
            let mut names = HashSet::new();
            for (name, nr) in ALLOWED
                .iter()
                .map(|e| (e.name, e.nr))
                .chain(DENIED.iter().map(|e| (e.name, e.nr)))
            {
                assert!(
                    numbers.insert(nr),
                    "syscall number {nr} ({name}) listed twice"
                );
                assert!(names.insert(name), "syscall {name} listed twice");
            }
        }

        #[test]
        fn names_match_libc_numbers() {
            // Spot checks that the macro pairs names and numbers.
            let find = |name: &str| ALLOWED.iter().find(|e| e.name == name).map(|e| e.nr);
            assert_eq!(find("read"), Some(libc::SYS_read));
            assert_eq!(find("clone"), Some(libc::SYS_clone));
            assert_eq!(find("socket"), Some(libc::SYS_socket));
            assert_eq!(find("futex_wake"), Some(454));
            let deny = |name: &str| DENIED.iter().find(|e| e.name == name).map(|e| e.nr);
            assert_eq!(deny("mount"), Some(libc::SYS_mount));
            assert_eq!(deny("_sysctl"), Some(libc::SYS__sysctl));
            assert_eq!(deny("open_tree_attr"), Some(467));
        }

        #[test]
        fn the_brief_list_is_denied() {
            let must: &[i64] = &[
                libc::SYS_mount,
                libc::SYS_fsopen,
                libc::SYS_fsconfig,
                libc::SYS_fsmount,
                libc::SYS_fspick,
                libc::SYS_move_mount,
                libc::SYS_open_tree,
                libc::SYS_mount_setattr,
                libc::SYS_umount2,
                libc::SYS_pivot_root,
                libc::SYS_chroot,
                libc::SYS_unshare,
                libc::SYS_setns,
                libc::SYS_ptrace,
                libc::SYS_process_vm_readv,
                libc::SYS_process_vm_writev,
                libc::SYS_pidfd_getfd,
                libc::SYS_kcmp,
                libc::SYS_bpf,
                libc::SYS_perf_event_open,
                libc::SYS_userfaultfd,
                libc::SYS_io_uring_setup,
                libc::SYS_io_uring_enter,
                libc::SYS_io_uring_register,
                libc::SYS_keyctl,
                libc::SYS_add_key,
                libc::SYS_request_key,
                libc::SYS_init_module,
                libc::SYS_finit_module,
                libc::SYS_delete_module,
                libc::SYS_kexec_load,
                libc::SYS_kexec_file_load,
                libc::SYS_reboot,
                libc::SYS_swapon,
                libc::SYS_swapoff,
                libc::SYS_settimeofday,
                libc::SYS_clock_settime,
                libc::SYS_clock_adjtime,
                libc::SYS_adjtimex,
                libc::SYS_sethostname,
                libc::SYS_setdomainname,
                libc::SYS_acct,
                libc::SYS_quotactl,
                libc::SYS_quotactl_fd,
                libc::SYS_open_by_handle_at,
                libc::SYS_name_to_handle_at,
                libc::SYS_lookup_dcookie,
                libc::SYS_iopl,
                libc::SYS_ioperm,
                libc::SYS_uselib,
                libc::SYS_nfsservctl,
                libc::SYS_syslog,
                libc::SYS_fanotify_init,
                libc::SYS_clone3,
                nr::SYS_open_tree_attr,
            ];
            let denied: HashSet<i64> = MUST_DENY.iter().map(|&(_, nr)| nr).collect();
            for nr in must {
                assert!(denied.contains(nr), "syscall {nr} must be in DENIED");
            }
            let clone3 = DENIED.iter().find(|e| e.nr == libc::SYS_clone3).unwrap();
            assert_eq!(clone3.errno, libc::ENOSYS);
            let openat2 = DENIED.iter().find(|e| e.nr == libc::SYS_openat2).unwrap();
            assert_eq!(openat2.errno, libc::ENOSYS);
            assert!(DENIED
                .iter()
                .filter(|e| e.nr != libc::SYS_clone3 && e.nr != libc::SYS_openat2)
                .all(|e| e.errno == libc::EPERM));
        }

        #[test]
        fn must_deny_mirrors_denied() {
            assert_eq!(MUST_DENY.len(), DENIED.len());
            for (pair, entry) in MUST_DENY.iter().zip(DENIED) {
                assert_eq!(*pair, (entry.name, entry.nr));
            }
        }

        #[test]
        fn toolchain_essentials_are_allowed() {
            let allowed: HashSet<&str> = ALLOWED.iter().map(|e| e.name).collect();
            for name in [
                "futex",
                "rseq",
                "clone",
                "set_robust_list",
                "membarrier",
                "getrandom",
                "statx",
                "close_range",
                "copy_file_range",
                "pidfd_open",
                "pidfd_send_signal",
                "epoll_create1",
                "epoll_ctl",
                "epoll_pwait",
                "poll",
                "ppoll",
                "pselect6",
                "memfd_create",
                "landlock_create_ruleset",
                "landlock_add_rule",
                "landlock_restrict_self",
                "seccomp",
                "prctl",
                "execve",
                "vfork",
                "wait4",
            ] {
                assert!(allowed.contains(name), "{name} must be allowed");
            }
        }

        #[test]
        fn namespace_mask_covers_every_new_flag() {
            for flag in [
                libc::CLONE_NEWNS,
                libc::CLONE_NEWUTS,
                libc::CLONE_NEWIPC,
                libc::CLONE_NEWUSER,
                libc::CLONE_NEWPID,
                libc::CLONE_NEWNET,
                libc::CLONE_NEWCGROUP,
                0x80, // CLONE_NEWTIME
            ] {
                assert_ne!(CLONE_NAMESPACE_FLAGS & flag as u64, 0, "{flag:#x}");
            }
            let thread_flags = (libc::CLONE_VM
                | libc::CLONE_FS
                | libc::CLONE_FILES
                | libc::CLONE_SIGHAND
                | libc::CLONE_THREAD
                | libc::CLONE_SYSVSEM
                | libc::CLONE_SETTLS
                | libc::CLONE_PARENT_SETTID
                | libc::CLONE_CHILD_CLEARTID) as u64;
            assert_eq!(CLONE_NAMESPACE_FLAGS & thread_flags, 0);
            assert_eq!(CLONE_NAMESPACE_FLAGS & libc::SIGCHLD as u64, 0);
        }

        #[test]
        fn build_filters_returns_one_small_checked_program() {
            let filters = build_filters().expect("the policy compiles");
            assert_eq!(
                filters.len(),
                1,
                "one program: arch, x32, numbers and arguments"
            );
            let program = &filters[0];
            bpf::check(program).expect("the program passes the checker");
            let old: Vec<usize> = reference::build_filters().iter().map(Vec::len).collect();
            println!(
                "seccomp program: {} instructions ({} ranges); seccompiler's programs: \
                 {old:?} = {}",
                program.len(),
                ranges().len(),
                old.iter().sum::<usize>()
            );
            assert!(program.len() <= 300, "{} instructions", program.len());
        }

        #[test]
        fn every_instruction_is_reachable() {
            let program = &build_filters().unwrap()[0];
            let mut reached = vec![false; program.len()];
            reached[0] = true;
            for pc in 0..program.len() {
                if !reached[pc] {
                    continue;
                }
                let i = &program[pc];
                let next: Vec<usize> = match i.code {
                    bpf::RET_K => vec![],
                    bpf::JMP_JA => vec![pc + 1 + i.k as usize],
                    bpf::JMP_JEQ_K | bpf::JMP_JGT_K | bpf::JMP_JGE_K | bpf::JMP_JSET_K => {
                        vec![pc + 1 + usize::from(i.jt), pc + 1 + usize::from(i.jf)]
                    }
                    _ => vec![pc + 1],
                };
                for n in next {
                    reached[n] = true;
                }
            }
            let dead: Vec<usize> = (0..program.len()).filter(|&pc| !reached[pc]).collect();
            assert!(dead.is_empty(), "unreachable instructions: {dead:?}");
        }

        #[test]
        fn ranges_cover_every_number_once() {
            let ranges = ranges();
            assert_eq!(ranges[0].0, 0);
            for pair in ranges.windows(2) {
                assert!(pair[0].0 < pair[1].0, "sorted");
                assert_ne!(pair[0].1, pair[1].1, "merged");
            }
            let verdict_of = |nr: u32| ranges[ranges.partition_point(|&(s, _)| s <= nr) - 1].1;
            for entry in ALLOWED {
                let want = match entry.args {
                    ArgRule::Any => Verdict::Allow,
                    rule => Verdict::Check(rule),
                };
                assert_eq!(verdict_of(entry.nr as u32), want, "{}", entry.name);
            }
            for entry in DENIED {
                assert_eq!(verdict_of(entry.nr as u32), Verdict::Errno(entry.errno));
            }
            assert_eq!(verdict_of(u32::MAX), Verdict::Errno(EPERM));
        }

        /// `struct seccomp_data` for one call (`ip` is 0: no rule reads it).
        fn seccomp_data(nr: u32, arch: u32, args: [u64; 6]) -> [u8; 64] {
            let mut data = [0; 64];
            data[0..4].copy_from_slice(&nr.to_ne_bytes());
            data[4..8].copy_from_slice(&arch.to_ne_bytes());
            for (n, arg) in args.iter().enumerate() {
                data[16 + 8 * n..24 + 8 * n].copy_from_slice(&arg.to_ne_bytes());
            }
            data
        }

        const ALLOW: u32 = libc::SECCOMP_RET_ALLOW;
        const KILL: u32 = libc::SECCOMP_RET_KILL_PROCESS;
        const RET_EPERM: u32 = libc::SECCOMP_RET_ERRNO | libc::EPERM as u32;
        const RET_ENOSYS: u32 = libc::SECCOMP_RET_ERRNO | libc::ENOSYS as u32;

        /// What the kernel returns with `filters` installed in order, and the comparisons it
        /// made: the last installed runs first, every filter runs, the highest-precedence
        /// action wins and ties go to the first seen.
        fn decide_with(filters: &[BpfProgram], nr: u32, arch: u32, args: [u64; 6]) -> (u32, u32) {
            let precedence = |ret: u32| match ret & libc::SECCOMP_RET_ACTION_FULL {
                KILL => 7,
                libc::SECCOMP_RET_KILL_THREAD => 6,
                libc::SECCOMP_RET_TRAP => 5,
                libc::SECCOMP_RET_ERRNO => 4,
                libc::SECCOMP_RET_TRACE => 2,
                libc::SECCOMP_RET_LOG => 1,
                _ => 0,
            };
            let data = seccomp_data(nr, arch, args);
            let mut best: Option<u32> = None;
            let mut comparisons = 0;
            for program in filters.iter().rev() {
                let (ret, n) = bpf::run(program, &data);
                comparisons += n;
                best = match best {
                    Some(b) if precedence(ret) <= precedence(b) => Some(b),
                    _ => Some(ret),
                };
            }
            (best.unwrap(), comparisons)
        }

        fn decide(nr: i64, arch: u32, args: [u64; 6]) -> u32 {
            // seccomp_data.nr is an int: the low 32 bits of `nr`.
            decide_with(&build_filters().unwrap(), nr as u32, arch, args).0
        }

        fn native(nr: i64, args: [u64; 6]) -> u32 {
            decide(nr, AUDIT_ARCH_X86_64, args)
        }

        #[test]
        fn decisions_follow_the_tables() {
            for entry in ALLOWED.iter().filter(|e| e.args == ArgRule::Any) {
                assert_eq!(native(entry.nr, [0; 6]), ALLOW, "{}", entry.name);
            }
            for entry in DENIED {
                let want = libc::SECCOMP_RET_ERRNO | entry.errno as u32;
                assert_eq!(native(entry.nr, [0; 6]), want, "{}", entry.name);
            }
            // Unlisted syscalls (vhangup, a future number) get EPERM.
            assert_eq!(native(libc::SYS_vhangup, [0; 6]), RET_EPERM);
            assert_eq!(native(470, [0; 6]), RET_EPERM);
        }

        #[test]
        fn clone_is_checked_flag_by_flag() {
            let threads = (libc::CLONE_VM
                | libc::CLONE_FS
                | libc::CLONE_FILES
                | libc::CLONE_SIGHAND
                | libc::CLONE_THREAD
                | libc::CLONE_SYSVSEM
                | libc::CLONE_SETTLS
                | libc::CLONE_PARENT_SETTID
                | libc::CLONE_CHILD_CLEARTID) as u64;
            let clone = libc::SYS_clone;
            assert_eq!(native(clone, [threads, 0, 0, 0, 0, 0]), ALLOW);
            assert_eq!(native(clone, [libc::SIGCHLD as u64, 0, 0, 0, 0, 0]), ALLOW);
            for bit in 0..32 {
                let flag = 1u64 << bit;
                let want = if CLONE_NAMESPACE_FLAGS & flag != 0 {
                    RET_EPERM
                } else {
                    ALLOW
                };
                assert_eq!(
                    native(clone, [flag | libc::SIGCHLD as u64, 0, 0, 0, 0, 0]),
                    want
                );
            }
            // The kernel reads only the low 32 bits; so does the rule.
            assert_eq!(native(clone, [1 << 40, 0, 0, 0, 0, 0]), ALLOW);
            assert_eq!(native(libc::SYS_clone3, [0; 6]), RET_ENOSYS);
        }

        #[test]
        #[allow(clippy::unnecessary_cast)] // `Ioctl` is `c_ulong` on glibc, `c_int` on musl
        fn ioctl_personality_and_socket_rules() {
            let ioctl = libc::SYS_ioctl;
            assert_eq!(
                native(ioctl, [0, libc::TIOCSTI as u64, 0, 0, 0, 0]),
                RET_EPERM
            );
            assert_eq!(
                native(ioctl, [0, libc::TIOCLINUX as u64, 0, 0, 0, 0]),
                RET_EPERM
            );
            // The kernel truncates the request to 32 bits, and so does the comparison.
            let high = (1u64 << 32) | libc::TIOCSTI as u64;
            assert_eq!(native(ioctl, [0, high, 0, 0, 0, 0]), RET_EPERM);
            assert_eq!(native(ioctl, [0, libc::TCGETS as u64, 0, 0, 0, 0]), ALLOW);
            assert_eq!(
                native(ioctl, [0, libc::TIOCSETD as u64, 0, 0, 0, 0]),
                RET_EPERM
            );
            assert_eq!(native(ioctl, [0, libc::TIOCGETD as u64, 0, 0, 0, 0]), ALLOW);
            assert_eq!(native(ioctl, [0, libc::FIONREAD as u64, 0, 0, 0, 0]), ALLOW);

            let personality = libc::SYS_personality;
            assert_eq!(native(personality, [0; 6]), ALLOW);
            assert_eq!(native(personality, [0xffff_ffff, 0, 0, 0, 0, 0]), ALLOW);
            assert_eq!(native(personality, [0x0040000, 0, 0, 0, 0, 0]), RET_EPERM);
            assert_eq!(native(personality, [8, 0, 0, 0, 0, 0]), RET_EPERM);

            let flags = (libc::SOCK_CLOEXEC | libc::SOCK_NONBLOCK) as u64;
            for nr in [libc::SYS_socket, libc::SYS_socketpair] {
                for &(_, family) in SOCKET_FAMILIES {
                    for &(_, ty) in SOCKET_TYPES {
                        let args = [family as u64, ty as u64 | flags, 0, 0, 0, 0];
                        // SOCK_SEQPACKET exists for IP only as SCTP.
                        let expect = if family != libc::AF_UNIX && ty == libc::SOCK_SEQPACKET {
                            RET_EPERM
                        } else {
                            ALLOW
                        };
                        assert_eq!(native(nr, args), expect, "{family} {ty}");
                    }
                    for ty in [libc::SOCK_RAW, 10 /* SOCK_PACKET */, libc::SOCK_RDM] {
                        let args = [family as u64, ty as u64 | flags, 0, 0, 0, 0];
                        assert_eq!(native(nr, args), RET_EPERM, "{family} {ty}");
                    }
                }
                // IP protocols: 0, TCP and UDP only; the rest never reach inet_create.
                for family in [libc::AF_INET, libc::AF_INET6] {
                    let f = family as u64;
                    let (stream, dgram) = (libc::SOCK_STREAM as u64, libc::SOCK_DGRAM as u64);
                    let tcp = libc::IPPROTO_TCP as u64;
                    let udp = libc::IPPROTO_UDP as u64;
                    assert_eq!(native(nr, [f, stream, tcp, 0, 0, 0]), ALLOW);
                    assert_eq!(native(nr, [f, dgram | flags, udp, 0, 0, 0]), ALLOW);
                    // The protocol is an int: high bits are ignored by the kernel and here.
                    assert_eq!(native(nr, [f, stream, tcp | 1 << 32, 0, 0, 0]), ALLOW);
                    for (ty, protocol) in [
                        (stream, 132), // SCTP
                        (libc::SOCK_SEQPACKET as u64, 132),
                        (dgram, 115),  // L2TP/IP
                        (dgram, 136),  // UDP-Lite
                        (stream, 262), // MPTCP
                        (dgram, libc::IPPROTO_ICMP as u64),
                        (dgram, libc::IPPROTO_ICMPV6 as u64),
                        (stream, 262 | 1 << 32),
                    ] {
                        assert_eq!(
                            native(nr, [f, ty, protocol, 0, 0, 0]),
                            RET_EPERM,
                            "{family} {ty} {protocol}"
                        );
                    }
                }
                // Unix sockets: the protocol is the kernel's to refuse.
                let unix = libc::AF_UNIX as u64;
                assert_eq!(
                    native(nr, [unix, libc::SOCK_STREAM as u64, 0, 0, 0, 0]),
                    ALLOW
                );
                for family in [
                    libc::AF_NETLINK,
                    libc::AF_PACKET,
                    libc::AF_VSOCK,
                    libc::AF_BLUETOOTH,
                    libc::AF_ALG,
                    libc::AF_KEY,
                ] {
                    let args = [family as u64, libc::SOCK_DGRAM as u64, 0, 0, 0, 0];
                    assert_eq!(native(nr, args), RET_EPERM, "family {family}");
                }
            }
        }

        #[test]
        fn foreign_arch_and_x32_are_killed() {
            let x32_getpid = libc::SYS_getpid | X32_SYSCALL_BIT as i64;
            assert_eq!(native(x32_getpid, [0; 6]), KILL);
            assert_eq!(native(libc::SYS_getpid, [0; 6]), ALLOW);
            const AUDIT_ARCH_I386: u32 = 3 | 0x4000_0000;
            assert_eq!(decide(20, AUDIT_ARCH_I386, [0; 6]), KILL);
        }

        // ---- equivalence with the seccompiler-built programs --------------------------------

        /// Runs the generated program and seccompiler's three programs on the same calls and
        /// insists on the same decision.
        struct Equivalence {
            new: Vec<BpfProgram>,
            old: Vec<BpfProgram>,
            calls: usize,
        }

        impl Equivalence {
            fn new() -> Self {
                Self {
                    new: build_filters().unwrap(),
                    old: reference::build_filters(),
                    calls: 0,
                }
            }

            fn check(&mut self, nr: u32, arch: u32, args: [u64; 6]) {
                let new = decide_with(&self.new, nr, arch, args).0;
                let old = decide_with(&self.old, nr, arch, args).0;
                assert_eq!(
                    new, old,
                    "nr {nr:#x}, arch {arch:#x}, args {args:#x?}: generated {new:#x}, \
                     seccompiler {old:#x}"
                );
                self.calls += 1;
            }

            fn native(&mut self, nr: i64, args: [u64; 6]) {
                self.check(nr as u32, AUDIT_ARCH_X86_64, args);
            }
        }

        /// A fixed xorshift sequence: arbitrary argument values, the same on every run.
        fn arbitrary(count: usize) -> Vec<u64> {
            let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
            (0..count)
                .map(|_| {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    x
                })
                .collect()
        }

        /// Upper halves an argument may carry; every rule compares only the lower half.
        const HIGH_WORDS: [u64; 4] = [0, 1 << 32, 0x8000_0000 << 32, 0xffff_ffff << 32];

        #[test]
        fn same_decisions_as_seccompiler_for_every_number() {
            let mut eq = Equivalence::new();
            let arg_sets = [
                [0; 6],
                [u64::MAX; 6],
                [0x0123_4567_89ab_cdef, 1, 2, 3, 4, 5],
            ];
            for nr in 0..=1023 {
                for args in arg_sets {
                    eq.native(nr, args);
                }
            }
            // Past the table, around the x32 bit, and negative numbers (bit 31).
            let mut numbers: Vec<u32> = vec![
                1024,
                4095,
                4096,
                0xffff,
                0x1_0000,
                0x3fff_ffff,
                0x7fff_ffff,
                0x8000_0000,
                0xbfff_ffff,
                0xffff_fffe,
                0xffff_ffff,
            ];
            for bit in 0..32 {
                for low in [0, libc::SYS_getpid as u32, libc::SYS_clone3 as u32] {
                    numbers.push(1 << bit | low);
                }
            }
            for nr in numbers {
                eq.check(nr, AUDIT_ARCH_X86_64, [0; 6]);
            }
            println!("{} calls compared", eq.calls);
        }

        #[test]
        fn same_decisions_as_seccompiler_for_x32_and_foreign_arches() {
            let mut eq = Equivalence::new();
            for nr in 0..=1023u32 {
                eq.check(nr | X32_SYSCALL_BIT, AUDIT_ARCH_X86_64, [0; 6]);
                eq.check(
                    nr | X32_SYSCALL_BIT | 0x8000_0000,
                    AUDIT_ARCH_X86_64,
                    [0; 6],
                );
            }
            const AUDIT_ARCH_I386: u32 = 3 | 0x4000_0000;
            const AUDIT_ARCH_AARCH64: u32 = 183 | 0x8000_0000 | 0x4000_0000;
            for arch in [
                0,
                AUDIT_ARCH_I386,
                AUDIT_ARCH_AARCH64,
                AUDIT_ARCH_X86_64 & !0x8000_0000, // x86_64 without __AUDIT_ARCH_64BIT
                AUDIT_ARCH_X86_64 ^ 1,
                AUDIT_ARCH_X86_64 + 1,
                u32::MAX,
            ] {
                for nr in 0..=1023u32 {
                    eq.check(nr, arch, [0; 6]);
                    eq.check(nr | X32_SYSCALL_BIT, arch, [0; 6]);
                }
            }
            println!("{} calls compared", eq.calls);
        }

        #[test]
        fn same_decisions_as_seccompiler_for_clone_flags() {
            let mut eq = Equivalence::new();
            let clone = libc::SYS_clone;
            let threads = (libc::CLONE_VM
                | libc::CLONE_FS
                | libc::CLONE_FILES
                | libc::CLONE_SIGHAND
                | libc::CLONE_THREAD
                | libc::CLONE_SYSVSEM
                | libc::CLONE_SETTLS
                | libc::CLONE_PARENT_SETTID
                | libc::CLONE_CHILD_CLEARTID) as u64;
            let mut flags = vec![0, threads, libc::SIGCHLD as u64, CLONE_NAMESPACE_FLAGS];
            // Every bit, every pair of bits, each with the thread flags and SIGCHLD.
            for a in 0..64 {
                for b in a..64 {
                    flags.push(1 << a | 1 << b);
                }
                flags.push(1 << a | threads);
                flags.push(1 << a | libc::SIGCHLD as u64);
            }
            flags.extend(arbitrary(4096));
            for flag in flags {
                for high in HIGH_WORDS {
                    eq.native(clone, [flag | high, 0, 0, 0, 0, 0]);
                }
                eq.native(
                    clone,
                    [flag, u64::MAX, u64::MAX, u64::MAX, u64::MAX, u64::MAX],
                );
            }
            println!("{} calls compared", eq.calls);
        }

        #[test]
        #[allow(clippy::unnecessary_cast)] // `Ioctl` is `c_ulong` on glibc, `c_int` on musl
        fn same_decisions_as_seccompiler_for_ioctl_personality_and_sockets() {
            let mut eq = Equivalence::new();

            let mut requests: Vec<u64> = vec![
                0,
                1,
                libc::TIOCSTI as u64,
                libc::TIOCSTI as u64 - 1,
                libc::TIOCSTI as u64 + 1,
                libc::TIOCLINUX as u64,
                libc::TIOCLINUX as u64 - 1,
                libc::TIOCLINUX as u64 + 1,
                libc::TCGETS as u64,
                libc::TCSETS as u64,
                libc::TIOCGWINSZ as u64,
                libc::FIONREAD as u64,
                libc::FIONBIO as u64,
                0x4004_9409, // FICLONE
                0xffff_ffff,
            ];
            requests.extend(0x5400..=0x54ff); // every terminal ioctl
            requests.extend((0..64).map(|bit| 1 << bit));
            requests.extend(arbitrary(1024));
            for request in requests {
                for high in HIGH_WORDS {
                    for fd in [0, 1, u64::MAX] {
                        eq.native(libc::SYS_ioctl, [fd, request | high, 0, 0, 0, 0]);
                    }
                }
            }

            let mut personas: Vec<u64> = vec![
                0,
                1,
                8,
                0x0040000, // ADDR_NO_RANDOMIZE
                0x0008,
                0x7fff_ffff,
                0x8000_0000,
                0xffff_fffe,
                0xffff_ffff,
            ];
            personas.extend((0..64).map(|bit| 1 << bit));
            personas.extend(arbitrary(1024));
            for persona in personas {
                for high in HIGH_WORDS {
                    eq.native(libc::SYS_personality, [persona | high, 0, 0, 0, 0, 0]);
                }
            }

            let flag_sets = [
                0,
                libc::SOCK_CLOEXEC as u64,
                libc::SOCK_NONBLOCK as u64,
                (libc::SOCK_CLOEXEC | libc::SOCK_NONBLOCK) as u64,
            ];
            for nr in [libc::SYS_socket, libc::SYS_socketpair] {
                for family in 0..=45u64 {
                    for ty in 0..=15u64 {
                        for flags in flag_sets {
                            for (family_high, type_high) in
                                [(0, 0), (1 << 32, 0), (0, 0xffff_ffff << 32)]
                            {
                                let args =
                                    [family | family_high, ty | flags | type_high, 0, 0, 0, 0];
                                eq.native(nr, args);
                            }
                        }
                        // Other bits of the type word, and every protocol of interest.
                        eq.native(nr, [family, ty | 0x10, 6, 0, 0, 0]);
                        eq.native(nr, [family, ty | 0x100, 17, 0, 0, 0]);
                        for protocol in [1, 6, 17, 58, 115, 132, 136, 255, 262, 1 << 32 | 6] {
                            eq.native(nr, [family, ty, protocol, 0, 0, 0]);
                        }
                    }
                }
                for family in [0x100 | libc::AF_UNIX as u64, 0xffff_ffff, u64::MAX] {
                    eq.native(nr, [family, libc::SOCK_STREAM as u64, 0, 0, 0, 0]);
                }
            }
            println!("{} calls compared", eq.calls);
        }

        #[test]
        fn lookup_cost() {
            let new = build_filters().unwrap();
            let old = reference::build_filters();
            // Zero arguments, and the arguments that take the longest way through each rule
            // (the last family and type listed, the last ioctl refused, the query persona).
            let last = |table: &[(&str, i32, &str)]| table[table.len() - 1].1 as u64;
            let arg_sets = [
                [0; 6],
                [u64::MAX; 6],
                [
                    last(SOCKET_INET_FAMILIES),
                    last(SOCKET_INET_TYPES),
                    last(SOCKET_INET_PROTOCOLS),
                    0,
                    0,
                    0,
                ],
                [
                    PERSONALITY_QUERY,
                    DENIED_IOCTLS[DENIED_IOCTLS.len() - 1].1,
                    0,
                    0,
                    0,
                    0,
                ],
            ];
            let cost = |filters: &[BpfProgram], args: &[[u64; 6]]| {
                let counts: Vec<u32> = (0..=1023)
                    .map(|nr| {
                        args.iter()
                            .map(|&a| decide_with(filters, nr, AUDIT_ARCH_X86_64, a).1)
                            .max()
                            .unwrap()
                    })
                    .collect();
                let allowed: Vec<u32> = ALLOWED.iter().map(|e| counts[e.nr as usize]).collect();
                let max = *counts.iter().max().unwrap();
                let mean = f64::from(allowed.iter().sum::<u32>()) / allowed.len() as f64;
                (max, mean)
            };
            // The number alone: every syscall without an argument rule.
            let new_number = (0..=1023u32)
                .filter(|&nr| {
                    !ALLOWED
                        .iter()
                        .any(|e| e.nr == i64::from(nr) && e.args != ArgRule::Any)
                })
                .map(|nr| decide_with(&new, nr, AUDIT_ARCH_X86_64, [0; 6]).1)
                .max()
                .unwrap();
            let (new_max, new_mean) = cost(&new, &arg_sets);
            let (old_max, old_mean) = cost(&old, &arg_sets);
            println!(
                "comparisons per syscall (numbers 0..=1023): generated: max {new_number} to \
                 decide on the number, max {new_max} with the argument rules, mean over allowed \
                 syscalls {new_mean:.1}; seccompiler (all three programs): max {old_max}, mean \
                 {old_mean:.1}"
            );
            // 2 (arch, x32) + the search's depth + the longest argument rule (socket: family
            // 1 + 2, type 2, protocol 3).
            let depth = usize::BITS - (ranges().len() - 1).leading_zeros();
            assert_eq!(new_number, 2 + depth, "a balanced search");
            assert!(
                new_max <= 2 + depth + 8,
                "{new_max} comparisons, depth {depth}"
            );
        }
    }
}
