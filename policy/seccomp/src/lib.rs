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
//!
//! # Where things are
//!
//! - `x86_64.rs`: the tables, data only, with the build-time checks on them;
//! - `generate.rs`: [`build_filters`], the program generated from the tables;
//! - `bpf.rs`: the classic-BPF assembler and the checker every generated program passes;
//! - `tests.rs`: the unit tests, with seccompiler's builder kept as the reference.
//!
//! This crate (tables and generator) is not linked into the launcher: the launcher takes it
//! as a build-dependency only; its build script runs [`build_filters`] and embeds the
//! [`encode`]d programs in the binary, so the privileged binary compiles neither the
//! generator nor the tables (a cargo feature could not keep them out: features unify across
//! the workspace), nor seccompiler (`launcher/src/seccomp.rs` decodes and installs
//! them; its unit test checks the embedded bytes against a fresh [`build_filters`]).

#![forbid(unsafe_code)]

use std::fmt;

#[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
mod bpf;
#[cfg(target_arch = "x86_64")]
mod generate;
#[cfg(all(test, target_arch = "x86_64"))]
mod tests;
#[cfg(target_arch = "x86_64")]
mod x86_64;

pub use bpf::{BpfProgram, SockFilter};
#[cfg(target_arch = "x86_64")]
pub use generate::build_filters;

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
    /// `AF_UNIX` with a type of [`SOCKET_UNIX_TYPES`](crate::SOCKET_UNIX_TYPES) (the
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
    ALLOWED, AUDIT_ARCH_X86_64, CLONE_NAMESPACE_FLAGS, DENIED, DENIED_IOCTLS, MUST_DENY,
    SOCKET_FAMILIES, SOCKET_INET_FAMILIES, SOCKET_INET_PROTOCOLS, SOCKET_INET_TYPES,
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
pub fn build_filters() -> Result<Vec<BpfProgram>, SeccompPolicyError> {
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

/// Layout of [`encode`]: per program, its instruction count as a little-endian `u16`,
/// then each instruction as 8 bytes: `code` (`u16` LE), `jt`, `jf`, `k` (`u32` LE).
pub const ENCODED_INSN_BYTES: usize = 8;

/// The programs as bytes, in install order, for the launcher to embed (see the module
/// documentation for why): the format of [`ENCODED_INSN_BYTES`]. Fails on a program longer
/// than `u16::MAX` instructions (the kernel takes at most 4,096; the generator checks that).
pub fn encode(programs: &[BpfProgram]) -> Result<Vec<u8>, SeccompPolicyError> {
    let mut out = Vec::new();
    for program in programs {
        let len = u16::try_from(program.len()).map_err(|_| {
            SeccompPolicyError::InvalidProgram(format!("{} instructions", program.len()))
        })?;
        out.extend_from_slice(&len.to_le_bytes());
        for i in program {
            out.extend_from_slice(&i.code.to_le_bytes());
            out.push(i.jt);
            out.push(i.jf);
            out.extend_from_slice(&i.k.to_le_bytes());
        }
    }
    Ok(out)
}

/// A 64-bit table value as the 32-bit word the program compares; the build fails if the
/// value does not fit.
#[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
const fn low32(value: u64) -> u32 {
    assert!(value >> 32 == 0, "a compared value does not fit in 32 bits");
    value as u32
}

/// A table value that is an `int` in the kernel's API (socket families and types).
#[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
const fn int32(value: i32) -> u32 {
    assert!(value >= 0, "a compared value is negative");
    value as u32
}
