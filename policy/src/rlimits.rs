//! The sandbox's resource limits (`setrlimit`), pinned by the launcher before it execs the
//! worker: none is inherited from whoever started the launcher.
//!
//! Every entry is a *ceiling*: the launcher sets soft and hard to the planned value, or to the
//! caller's hard limit where that is lower (a process without `CAP_SYS_RESOURCE` in the initial
//! user namespace cannot raise a hard limit, and a lower one is only stricter). Entries marked
//! `exact` must be met as planned; the launcher fails the step otherwise. The worker reports
//! what it got (`/proc/self/limits`) and the controller checks it
//! (`bulkhead_attest::rlimits::check`).

use bulkhead_wire::Limits;

use crate::defaults::{DEFAULT_MEMLOCK_BYTES, DEFAULT_MSGQUEUE_BYTES, DEFAULT_SIGPENDING};

/// "No limit" (`RLIM_INFINITY`).
pub const INFINITY: u64 = u64::MAX;

/// Default soft stack size: 8 MiB, what distributions ship.
pub const STACK_SOFT_BYTES: u64 = 8 << 20;

/// A resource the policy pins.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Resource {
    /// `RLIMIT_CORE`.
    Core,
    /// `RLIMIT_NOFILE`.
    Nofile,
    /// `RLIMIT_RTPRIO`.
    Rtprio,
    /// `RLIMIT_NICE`.
    Nice,
    /// `RLIMIT_MEMLOCK`.
    Memlock,
    /// `RLIMIT_MSGQUEUE`.
    Msgqueue,
    /// `RLIMIT_SIGPENDING`.
    Sigpending,
    /// `RLIMIT_FSIZE`.
    Fsize,
    /// `RLIMIT_STACK`.
    Stack,
    /// `RLIMIT_AS`.
    As,
}

impl Resource {
    /// The `RLIMIT_*` number for `setrlimit`.
    pub fn id(self) -> libc::__rlimit_resource_t {
        match self {
            Resource::Core => libc::RLIMIT_CORE,
            Resource::Nofile => libc::RLIMIT_NOFILE,
            Resource::Rtprio => libc::RLIMIT_RTPRIO,
            Resource::Nice => libc::RLIMIT_NICE,
            Resource::Memlock => libc::RLIMIT_MEMLOCK,
            Resource::Msgqueue => libc::RLIMIT_MSGQUEUE,
            Resource::Sigpending => libc::RLIMIT_SIGPENDING,
            Resource::Fsize => libc::RLIMIT_FSIZE,
            Resource::Stack => libc::RLIMIT_STACK,
            Resource::As => libc::RLIMIT_AS,
        }
    }

    /// `RLIMIT_*` name, for errors.
    pub fn name(self) -> &'static str {
        match self {
            Resource::Core => "RLIMIT_CORE",
            Resource::Nofile => "RLIMIT_NOFILE",
            Resource::Rtprio => "RLIMIT_RTPRIO",
            Resource::Nice => "RLIMIT_NICE",
            Resource::Memlock => "RLIMIT_MEMLOCK",
            Resource::Msgqueue => "RLIMIT_MSGQUEUE",
            Resource::Sigpending => "RLIMIT_SIGPENDING",
            Resource::Fsize => "RLIMIT_FSIZE",
            Resource::Stack => "RLIMIT_STACK",
            Resource::As => "RLIMIT_AS",
        }
    }
}

/// One pinned limit, with its reason.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PlannedRlimit {
    /// Which limit.
    pub resource: Resource,
    /// Soft limit ([`INFINITY`] = none).
    pub soft: u64,
    /// Hard limit ([`INFINITY`] = none).
    pub hard: u64,
    /// Must be met as planned (else: a ceiling, the caller's lower hard limit is kept).
    pub exact: bool,
    /// Why.
    pub reason: &'static str,
}

/// The limits of a sandbox with `limits`, in the order the launcher sets them.
pub fn plan(limits: &Limits) -> Vec<PlannedRlimit> {
    let pin = |resource, value, reason| PlannedRlimit {
        resource,
        soft: value,
        hard: value,
        exact: false,
        reason,
    };
    let nofile = u64::from(limits.nofile);
    vec![
        pin(
            Resource::Core,
            0,
            "no core dumps: they would carry the sandbox's memory out",
        ),
        PlannedRlimit {
            exact: true,
            ..pin(
                Resource::Nofile,
                nofile,
                "open files per process, from the workspace's limits",
            )
        },
        pin(
            Resource::Rtprio,
            0,
            "no real-time scheduling: a SCHED_FIFO/RR task ignores cpu.weight and cpu.max and \
             starves every other tenant; with 0 and no CAP_SYS_NICE the kernel refuses it",
        ),
        pin(
            Resource::Nice,
            0,
            "a nice value can never be lowered (priority raised), only raised",
        ),
        pin(
            Resource::Memlock,
            DEFAULT_MEMLOCK_BYTES,
            "locked memory escapes reclaim and swap; a little for gpg-style key buffers",
        ),
        pin(
            Resource::Msgqueue,
            DEFAULT_MSGQUEUE_BYTES,
            "POSIX message queue bytes are kernel memory outside the memory cgroup's reclaim",
        ),
        pin(
            Resource::Sigpending,
            DEFAULT_SIGPENDING,
            "queued signals are kernel memory; bounded, not inherited from the caller",
        ),
        pin(
            Resource::Fsize,
            INFINITY,
            "no per-file limit by default (the disk limit bounds the workspace); never an \
             inherited one that would kill writes with SIGXFSZ",
        ),
        PlannedRlimit {
            soft: STACK_SOFT_BYTES,
            ..pin(
                Resource::Stack,
                INFINITY,
                "the usual 8 MiB soft stack, whatever the caller had; an unlimited soft stack \
                 would switch to the legacy mmap layout",
            )
        },
        pin(
            Resource::As,
            INFINITY,
            "address space is bounded by the memory cgroup; a limit here breaks JITs and \
             sanitizers",
        ),
    ]
}

/// What the launcher sets for `p` when the caller's hard limit is `current_hard`:
/// `Ok((soft, hard))`, or `Err` naming the problem for an exact entry it cannot meet.
pub fn effective(p: &PlannedRlimit, current_hard: u64) -> Result<(u64, u64), String> {
    if p.hard <= current_hard {
        return Ok((p.soft, p.hard));
    }
    if p.exact {
        return Err(format!(
            "{} must be {}, above the caller's hard limit {}: raise the hard limit of the \
             process that starts bulkhead (ulimit -H), or lower the workspace's limit",
            p.resource.name(),
            show(p.hard),
            show(current_hard)
        ));
    }
    Ok((p.soft.min(current_hard), current_hard))
}

/// A limit as `/proc/<pid>/limits` and the errors write it.
pub fn show(v: u64) -> String {
    if v == INFINITY {
        "unlimited".into()
    } else {
        v.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::defaults::default_limits;

    #[test]
    fn every_entry_has_a_reason_and_the_dangerous_ones_are_zero() {
        let plan = plan(&default_limits());
        assert!(plan.iter().all(|p| !p.reason.is_empty()));
        let get = |r| plan.iter().find(|p| p.resource == r).unwrap();
        for r in [Resource::Rtprio, Resource::Nice, Resource::Core] {
            assert_eq!((get(r).soft, get(r).hard), (0, 0), "{}", r.name());
        }
        assert_eq!(get(Resource::Memlock).hard, 64 << 10);
        assert_eq!(get(Resource::Nofile).hard, 4096);
        assert!(get(Resource::Nofile).exact);
        assert_eq!(get(Resource::Fsize).hard, INFINITY);
    }

    #[test]
    fn effective_values_never_exceed_the_callers_hard_limit_silently() {
        let plan = plan(&default_limits());
        let get = |r| *plan.iter().find(|p| p.resource == r).unwrap();
        assert_eq!(
            effective(&get(Resource::Memlock), INFINITY),
            Ok((65536, 65536))
        );
        assert_eq!(effective(&get(Resource::Memlock), 4096), Ok((4096, 4096)));
        assert_eq!(
            effective(&get(Resource::Stack), 1 << 20),
            Ok((1 << 20, 1 << 20))
        );
        assert_eq!(
            effective(&get(Resource::Stack), INFINITY),
            Ok((8 << 20, INFINITY))
        );
        let e = effective(&get(Resource::Nofile), 1024).unwrap_err();
        assert!(e.contains("RLIMIT_NOFILE must be 4096"), "{e}");
    }
}
