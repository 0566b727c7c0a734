//! The seccomp program, generated from the x86_64 tables: arch check, x32 check, a binary
//! search over the syscall numbers, the argument rules, the verdicts. See the documentation
//! of [`crate`] for the order and the reasons.

use std::collections::BTreeMap;

use super::bpf::{Assembler, BpfProgram, Cond, Label};
use super::x86_64::{
    ALLOWED, AUDIT_ARCH_X86_64, CLONE_NAMESPACE_FLAGS, DENIED, DENIED_IOCTLS, EPERM,
    PERSONALITY_QUERY, PER_LINUX, SOCKET_INET_FAMILIES, SOCKET_INET_PROTOCOLS, SOCKET_INET_TYPES,
    SOCKET_TYPE_MASK, SOCKET_UNIX_TYPES, X32_SYSCALL_BIT,
};
use super::{int32, low32, ArgRule, SeccompPolicyError, SETID_BITS};

// Offsets into `struct seccomp_data { int nr; __u32 arch; __u64 ip; __u64 args[6]; }`.
pub(super) const SECCOMP_DATA_NR: u32 = 0;
pub(super) const SECCOMP_DATA_ARCH: u32 = 4;

/// Offset of the low 32 bits of argument `n` (x86_64 is little-endian). Every argument rule
/// reads only these: the kernel takes clone's flags, the ioctl request, the persona and the
/// socket family and type as 32-bit values.
const fn arg_low(n: u32) -> u32 {
    16 + 8 * n
}

pub(super) const CLONE_NAMESPACE_MASK: u32 = low32(CLONE_NAMESPACE_FLAGS);
pub(super) const SOCKET_TYPE_MASK_32: u32 = low32(SOCKET_TYPE_MASK);

/// The errno of every syscall that is in neither table, and of every denied one but
/// `ENOSYS` entries.
pub(super) const DEFAULT_ERRNO: i32 = EPERM;

pub(super) const fn ret_errno(errno: i32) -> u32 {
    libc::SECCOMP_RET_ERRNO | (errno as u32 & libc::SECCOMP_RET_DATA)
}

/// What the program does with one syscall number of the native architecture.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Verdict {
    Allow,
    Errno(i32),
    /// Allow if the arguments pass the rule, `EPERM` if not.
    Check(ArgRule),
}

/// Every syscall number, `0..=u32::MAX`, as contiguous ranges: `(first number, verdict)`,
/// sorted, neighbours with different verdicts.
pub(super) fn ranges() -> Vec<(u32, Verdict)> {
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
pub(super) fn policy_program() -> Result<BpfProgram, String> {
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
