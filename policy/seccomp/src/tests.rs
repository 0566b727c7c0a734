//! Unit tests of the seccomp tables and of the generated program: the tables' invariants,
//! the program's decisions (run by an interpreter of the kernel's semantics) and the
//! comparison, decision for decision, with the programs seccompiler used to build.

use std::collections::{BTreeMap, HashSet};

use super::bpf::{self, BpfProgram};
use super::generate::*;
use super::x86_64::*;
use super::*;

/// The programs as seccompiler built them before the generator existed: the reference
/// the generated program must agree with, decision for decision. Kept verbatim apart
/// from error handling.
mod reference {
    use super::*;
    use seccompiler::{
        SeccompAction, SeccompCmpArgLen, SeccompCmpOp, SeccompCondition, SeccompFilter,
        SeccompRule, TargetArch,
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
                                dword(1, SeccompCmpOp::MaskedEq(SOCKET_TYPE_MASK), ty as u64)?,
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
        ours(seccompiler::BpfProgram::try_from(filter).unwrap())
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
        ours(seccompiler::BpfProgram::try_from(filter).unwrap())
    }

    /// seccompiler's program as this crate's instructions (the same four fields).
    fn ours(program: seccompiler::BpfProgram) -> BpfProgram {
        program
            .iter()
            .map(|i| insn(i.code, i.jt, i.jf, i.k))
            .collect()
    }

    fn insn(code: u16, jt: u8, jf: u8, k: u32) -> SockFilter {
        SockFilter { code, jt, jf, k }
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
                    for (family_high, type_high) in [(0, 0), (1 << 32, 0), (0, 0xffff_ffff << 32)] {
                        let args = [family | family_high, ty | flags | type_high, 0, 0, 0, 0];
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

#[test]
fn encode_writes_a_count_then_each_instruction_little_endian() {
    let one = SockFilter {
        code: bpf::LD_W_ABS,
        jt: 1,
        jf: 2,
        k: 0x0403_0201,
    };
    let bytes = encode(&[vec![one], Vec::new()]).unwrap();
    assert_eq!(bytes, [1, 0, 0x20, 0, 1, 2, 1, 2, 3, 4, 0, 0]);

    let programs = build_filters().unwrap();
    let bytes = encode(&programs).unwrap();
    let insns: usize = programs.iter().map(Vec::len).sum();
    assert_eq!(bytes.len(), 2 * programs.len() + ENCODED_INSN_BYTES * insns);

    let too_long = vec![one; usize::from(u16::MAX) + 1];
    assert!(encode(&[too_long]).is_err());
}
