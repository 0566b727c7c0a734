//! `bulkhead-launch`: builds one sandbox, then becomes its supervisor.
//!
//! Started by the controller with the controller's socket on fd 3, a report pipe on fd 1
//! and, for a sandbox with controlled egress, the egress channel on fd 5. It reads one
//! [`LaunchSpec`] (with its [`LaunchOptions`]), re-validates it, and follows this sequence
//! (docs/launcher-audit.md carries the same list with every function in the order it runs; a
//! test keeps them in step):
//!
//! 1. sanitize: every signal disposition default and the mask empty (first thing in
//!    `main`), not dumpable, no core dumps, privileged: `RLIMIT_FSIZE` lifted for our own
//!    writes, close every fd but 0-3 and 5, fd 3 must be a socket
//! 2. spec: privileged, the caller authorised before a byte of the spec is decoded (listed
//!    in `/etc/bulkhead/launch.toml`, its cgroup within `cgroup_parent`; `/proc/self/cgroup`
//!    read once for this and step 3); read the launch spec (5 s deadline) and re-validate
//!    every field; with egress,
//!    fd 5 must be a unix `SOCK_SEQPACKET` socket, without it fd 5 is closed. Privileged,
//!    within the rules of `/etc/bulkhead/launch.toml` (root-owned, the caller listed in it;
//!    see `privileged.rs`), and the workspace and extra binds opened with the caller's
//!    permissions, without symlinks, owned by the caller, as id-mapped detached mounts
//!    (setuid, with a disk limit: the opened workspace `fstatfs`ed, its own ext4 mount of at
//!    most that size); only then, setuid, the host id claimed in the registry (within
//!    `max_ids_per_caller`; a new claim waits at most 2 s for the registry's lock, an id the
//!    caller holds needs none)
//! 3. cgroup: sweep empty sandbox cgroups of dead launchers (liveness by `pidfd_open`, not
//!    `/proc`, which `hidepid` hides), create the sandbox cgroup
//!    under the launcher's own cgroup and write its limits (setuid: as the caller)
//! 4. namespaces: `clone3(CLONE_PIDFD)` into new user, mount, pid, net, ipc and uts
//!    namespaces (v2: `CLONE_INTO_CGROUP`, the target opened and checked with the caller's
//!    rights); the child waits, is moved into the cgroup, then unshares a cgroup namespace
//! 5. id maps: the parent writes `setgroups=deny` and maps uid/gid 1000 inside to one
//!    unprivileged host id (never host root) through `/proc/<pid>` proven by the pidfd;
//!    the child becomes uid/gid 1000, sets `PR_SET_PDEATHSIG` and checks the supervisor
//!    is still alive through its pidfd
//! 6. mounts: tmpfs root, read-only `/usr`, minimal `/etc` and `/dev`, capped `/tmp` and
//!    `/dev/shm`, fresh `/proc`, `/workspace`, `pivot_root`, old root detached, `/` read-only
//! 7. network: loopback up, hostname set
//! 8. rlimits: every limit pinned (`bulkhead_policy::rlimits`: no core dumps, no real-time
//!    priority, no raised nice, small memlock, message-queue and pending-signal limits, the
//!    open-file limit), and `setsid`: a session of its own, no controlling terminal
//! 9. capabilities: securebits locked, bounding set, ambient, inheritable, permitted and
//!    effective sets all emptied
//! 10. no_new_privs: set, so no exec can gain privileges
//! 11. landlock: writes only under `/workspace`, `/tmp`, `/dev/shm` and a few devices;
//!     signal and abstract-socket scoping where the kernel has it
//! 12. seccomp: the policy's filters, installed last (single-threaded, checked)
//! 13. exec: fds 0-2 to `/dev/null`, every other fd but the socket (and the egress channel)
//!     closed, exec the worker
//!
//! Any failed step sends a [`SetupError`] on the socket, exits with `80 + step`, and leaves
//! no sandbox behind. The parent then supervises: it polls the worker's pidfd, a signalfd
//! and the report pipe; it kills the worker (through its pidfd, never a pid number) on
//! SIGTERM/SIGINT/SIGHUP or when the controller is gone, reaps it with `waitid(P_PIDFD)`,
//! reports OOM kills, and removes the cgroup. A setuid supervisor does that as its caller,
//! with `CAP_KILL` alone.

//!
//! The binary's `main` is one line that calls [`main`]; the library exists so the launcher's
//! own tests (launcher/tests) link the modules they drive ([`cgroup`], [`sys`]).

pub mod cgroup;
mod fs;
mod landlock;
mod privileged;
mod seccomp;
pub mod sys;

use std::os::fd::{FromRawFd, RawFd};
use std::os::unix::net::UnixStream;
use std::time::Duration;

use bulkhead_policy::defaults::{SANDBOX_GID, SANDBOX_UID};
use bulkhead_policy::mounts::Planned;
use bulkhead_policy::{validate_spec, Caller};
use bulkhead_wire::exit::{LAUNCH_PROTOCOL, LAUNCH_USAGE, LAUNCH_WORKER_ERROR};
use bulkhead_wire::frame::encode_frame;
use bulkhead_wire::{
    CgroupVersion, ControllerMsg, LaunchOptions, LaunchSpec, LauncherReport, SetupError, SetupStep,
    WorkerEnd, EGRESS_FD,
};
use fs::Source;
use privileged::Mode;

/// The controller's socket.
const SOCK_FD: RawFd = 3;
/// Where the worker binary's descriptor sits just before exec.
const WORKER_FD: RawFd = 4;
// The egress channel sits on the fd after the worker's: `child` relies on it.
const _: () = assert!(EGRESS_FD == WORKER_FD + 1);
/// The trusted report pipe to the controller (the sandbox never holds it).
const REPORT_FD: RawFd = 1;
/// Name of the worker binary, found next to this executable.
const WORKER_NAME: &str = "bulkhead-worker";

const USAGE: &str = "usage: bulkhead-launch\n\
    Builds one sandbox and runs bulkhead-worker in it. Started by `bulkhead`, which passes \
    its socket as fd 3, a report pipe as fd 1 and, with egress, its egress channel as fd 5; \
    not meant to be run by hand.\n\
    Exit codes: 0 ok, 1 worker error, 64 usage, 65 protocol, 80+step setup failure, \
    128+n worker killed by signal n.";

/// The whole launcher: `bulkhead-launch`'s `main` calls this and nothing else. Returns only
/// after `--version` or `--help`; otherwise ends the process with the launcher's exit code.
pub fn main() {
    // A panic aborts here whatever the build profile (the workspace's release profile
    // unwinds, for the controller's sake): the launcher clones a child that returns into
    // this same code, and must never unwind back through its parent's frames.
    let report = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        report(info);
        std::process::abort();
    }));
    // Then, first of all: nothing the caller ignored or blocked applies here (SIGCHLD ignored would let
    // the kernel reap our children behind our back, SIGTERM blocked would make us deaf to
    // it). Reported by `sanitize` once the socket is known.
    let signals = sys::reset_signals();
    // Our own choice, undone in the child before exec: a write to the report pipe of a
    // controller that is gone is an error to handle (the supervisor then ends the sandbox),
    // not death before the cleanup.
    let _ = sys::ignore_signal(libc::SIGPIPE, true);
    // A setuid-root launcher takes nothing from its caller's environment; a root caller may
    // name another configuration file.
    let (uid, _, euid) = sys::ids();
    let mode = Mode::of(uid, euid);
    let config_env = match mode {
        Mode::Root => std::env::var(privileged::CONFIG_ENV).ok(),
        _ => None,
    };
    if mode == Mode::Setuid {
        sys::clear_env();
    }
    let mut args = std::env::args().skip(1);
    match args.next().as_deref() {
        None => {}
        Some("--version") => {
            println!("bulkhead-launch {}", env!("CARGO_PKG_VERSION"));
            return;
        }
        Some("--help" | "-h") => {
            println!("{USAGE}");
            return;
        }
        Some(other) => {
            eprintln!("bulkhead-launch: unexpected argument {other:?}\n{USAGE}");
            std::process::exit(LAUNCH_USAGE);
        }
    }
    std::process::exit(run(mode, config_env, signals));
}

fn err(step: SetupStep, e: &std::io::Error, path: &str, detail: impl Into<String>) -> SetupError {
    SetupError {
        step,
        errno: e.raw_os_error().unwrap_or(0),
        path: path.to_string(),
        detail: format!("{}: {e}", detail.into()),
        reason: bulkhead_wire::SetupReason::Other,
    }
}

fn plain(step: SetupStep, path: &str, detail: impl Into<String>) -> SetupError {
    SetupError {
        step,
        errno: 0,
        path: path.to_string(),
        detail: detail.into(),
        reason: bulkhead_wire::SetupReason::Other,
    }
}

/// Sends the failure to the controller and returns the exit code for it.
fn report_failure(end: &mut WorkerEnd, e: SetupError) -> i32 {
    let code = e.step.exit_code();
    let _ = end.setup_failed(e);
    code
}

fn report(msg: &LauncherReport) {
    if let Ok(buf) = encode_frame(msg) {
        let _ = sys::write_all(REPORT_FD, &buf);
    }
}

/// Everything the child needs, prepared by the parent before cloning.
struct Prepared {
    spec: LaunchSpec,
    mounts: Vec<Planned>,
    filters: Vec<seccomp::Program>,
    host_uid: u32,
    worker_fd: RawFd,
    cap_last: u32,
    landlock_abi: u32,
    /// The egress channel is open on [`EGRESS_FD`] and goes to the worker.
    egress: bool,
    /// The parent moves the child into its cgroup (setuid: the caller's rights), also on v1.
    parent_attaches: bool,
    /// Privileged: the workspace and extra binds, prepared as id-mapped detached mounts.
    /// Rootless: `None`, the child opens and checks them itself.
    sources: Option<(Source, Vec<Source>)>,
}

impl Prepared {
    fn source_fds(&self) -> Vec<RawFd> {
        self.sources
            .iter()
            .flat_map(|(w, b)| std::iter::once(w.fd()).chain(b.iter().map(|s| s.fd())))
            .collect()
    }
}

fn run(mode: Mode, config_env: Option<String>, signals: std::io::Result<()>) -> i32 {
    // 1. sanitize
    if !sys::is_socket(SOCK_FD) {
        eprintln!("bulkhead-launch: fd 3 is not a socket\n{USAGE}");
        return LAUNCH_USAGE;
    }
    // SAFETY: fd 3 is an open socket (checked above) that nothing else in this process owns.
    let sock = unsafe { UnixStream::from_raw_fd(SOCK_FD) };
    let mut end = WorkerEnd::new(sock);
    if let Err(e) = signals
        .map_err(|e| {
            err(
                SetupStep::Sanitize,
                &e,
                "",
                "reset signal dispositions and mask",
            )
        })
        .and_then(|_| sanitize(mode))
    {
        return report_failure(&mut end, e);
    }
    let (uid, gid, _) = sys::ids();
    let caller = Caller {
        privileged: mode.privileged(),
        uid,
        gid,
    };
    // A setuid launcher does cgroup work with the caller's own rights only (`as_caller`):
    // in the caller's delegated cgroup, nothing it could not do itself.
    let who = (mode == Mode::Setuid).then_some((uid, gid));
    if caller.privileged {
        // Not the caller's umask for anything root creates.
        sys::umask(0o022);
    }
    // Read once: the authorisation and the cgroup plan see the same placement.
    let own_cgroup = match std::fs::read_to_string("/proc/self/cgroup") {
        Ok(t) => t,
        Err(e) => {
            return report_failure(
                &mut end,
                err(SetupStep::Spec, &e, "/proc/self/cgroup", "read"),
            )
        }
    };

    // 2. spec: the caller is authorised before a byte of its spec is decoded.
    let rules = match privileged::rules(mode, config_env) {
        Ok(r) => r,
        Err(e) => return report_failure(&mut end, e),
    };
    if mode == Mode::Setuid {
        if let Err(e) = privileged::authorize(&rules, uid, gid, &own_cgroup) {
            return report_failure(&mut end, e);
        }
    }
    let _ = end.socket().set_read_timeout(Some(Duration::from_secs(5)));
    let (spec, options) = match end.recv() {
        Ok(ControllerMsg::Launch(spec, options)) => (spec, options),
        Ok(other) => {
            let _ = end.setup_failed(plain(
                SetupStep::Spec,
                "",
                format!("protocol error: expected Launch, got {}", msg_name(&other)),
            ));
            return LAUNCH_PROTOCOL;
        }
        Err(e) => {
            let _ = end.setup_failed(plain(SetupStep::Spec, "", format!("reading the spec: {e}")));
            return LAUNCH_PROTOCOL;
        }
    };
    // Before anything keeps a descriptor open that could land on EGRESS_FD (the reads
    // above closed theirs).
    if let Err(e) = egress_channel(&options) {
        return report_failure(&mut end, e);
    }
    let _ = end.socket().set_read_timeout(None);
    if let Err(e) = validate_spec(&spec, caller, &rules) {
        return report_failure(&mut end, plain(SetupStep::Spec, "", e.to_string()));
    }
    let (host_uid, host_gid) = if caller.privileged {
        (spec.host_uid, spec.host_gid)
    } else {
        (uid, gid)
    };
    let sources = if caller.privileged {
        match privileged::sources(
            &spec,
            &rules,
            (uid, gid),
            (host_uid, host_gid),
            mode == Mode::Setuid,
        ) {
            Ok(s) => Some(s),
            Err(e) => return report_failure(&mut end, e),
        }
    } else {
        None
    };
    // The host id is claimed only for a request that passed every check above.
    if let (Mode::Setuid, Some(registry)) = (mode, rules.id_registry.as_deref()) {
        if let Err(e) =
            privileged::claim_host_id(registry, spec.host_uid, uid, rules.max_ids_per_caller)
        {
            return report_failure(&mut end, e);
        }
    }

    let prepared = match prepare(
        spec,
        host_uid,
        options.egress,
        sources,
        mode == Mode::Setuid,
    ) {
        Ok(p) => p,
        Err(e) => return report_failure(&mut end, e),
    };

    // SIGTERM/SIGINT/SIGHUP wait from here on, read from a signalfd by the supervisor, so a
    // caller's signal cannot end the launcher between creating the cgroup and handing it
    // over.
    let sigset = match sys::block_signals(&[libc::SIGTERM, libc::SIGINT, libc::SIGHUP])
        .and_then(|set| sys::signalfd(&set))
    {
        Ok(fd) => fd,
        Err(e) => {
            return report_failure(
                &mut end,
                err(
                    SetupStep::Namespaces,
                    &e,
                    "",
                    "block signals into a signalfd",
                ),
            );
        }
    };

    // 3. cgroup
    let name = format!("{}-{}", prepared.spec.workspace_id, std::process::id());
    let cg = match privileged::as_caller(who, || {
        cgroup::plan_for_self(
            &own_cgroup,
            &name,
            &prepared.spec.limits,
            &prepared.spec.workspace_dir,
        )
        .and_then(|p| {
            cgroup::sweep_stale(&p, &sys::pid_alive);
            cgroup::create(&p)
        })
    }) {
        Ok(cg) => cg,
        Err(e) => return report_failure(&mut end, e),
    };
    let destroy = |cg: &cgroup::Cgroup| privileged::as_caller(who, || cgroup::destroy(cg));

    // 4. namespaces
    let (go_rd, go_wr) = match sys::pipe() {
        Ok(p) => p,
        Err(e) => {
            destroy(&cg);
            return report_failure(&mut end, err(SetupStep::Namespaces, &e, "", "pipe"));
        }
    };
    // The child's proof that we are alive after its PR_SET_PDEATHSIG (readable once we exit).
    let lifeline = match sys::pidfd_of_self() {
        Ok(fd) => fd,
        Err(e) => {
            destroy(&cg);
            return report_failure(&mut end, err(SetupStep::Namespaces, &e, "", "pidfd_open"));
        }
    };
    if caller.privileged {
        // Root's supplementary groups (gid 0 among them) must not follow the sandbox.
        if let Err(e) = sys::clear_groups() {
            destroy(&cg);
            return report_failure(&mut end, err(SetupStep::IdMaps, &e, "", "setgroups"));
        }
    }
    let flags = libc::CLONE_NEWUSER
        | libc::CLONE_NEWNS
        | libc::CLONE_NEWPID
        | libc::CLONE_NEWNET
        | libc::CLONE_NEWIPC
        | libc::CLONE_NEWUTS;
    // The child must be dumpable until the parent has written its id maps:
    // /proc/<pid>/{uid,gid}_map and setgroups of a non-dumpable process belong to root,
    // which a rootless parent is not. It inherits this flag; both sides clear it right after.
    // A privileged parent writes any process's maps and never turns dumpable.
    if !caller.privileged {
        let _ = sys::prctl(libc::PR_SET_DUMPABLE, 1, 0);
    }
    let cap_last = prepared.cap_last;
    let (child, born_in_cgroup) = clone_sandbox(flags, &cg, who);
    if !matches!(child, Ok(None)) {
        let _ = sys::prctl(libc::PR_SET_DUMPABLE, 0, 0);
    }
    let child = match child {
        Ok(None) => {
            sys::close(go_wr);
            child_main(prepared, &cg, go_rd, lifeline, &mut end)
        }
        Ok(Some(child)) => {
            // The plan, mounts and filters belong to the child now; give the memory back
            // (the supervisor lives as long as the sandbox, ×1000 on a busy host).
            for fd in prepared.source_fds() {
                sys::close(fd);
            }
            drop(prepared);
            sys::trim_heap();
            child
        }
        Err(e) => {
            destroy(&cg);
            let hint = if e.raw_os_error() == Some(libc::EPERM)
                || e.raw_os_error() == Some(libc::ENOSPC)
            {
                "clone with new namespaces was refused; unprivileged user namespaces may be disabled \
                 (kernel.unprivileged_userns_clone, user.max_user_namespaces, AppArmor): run the \
                 launcher privileged or enable them"
            } else {
                "clone with new namespaces"
            };
            return report_failure(&mut end, err(SetupStep::Namespaces, &e, "", hint));
        }
    };
    sys::close(go_rd);
    sys::close(lifeline);

    // 5. id maps, then the cgroup, then let the child go.
    // cgroup v1: the child moves itself (cheap, see cgroup::attach_self) unless the cgroup
    // is the setuid caller's, which only the caller's rights may write; v2: we move it.
    let setup = write_id_maps(child, host_uid, host_gid).and_then(|_| match cg.version {
        CgroupVersion::V2 if !born_in_cgroup => {
            privileged::as_caller(who, || cgroup::attach(&cg, child.pid))
        }
        CgroupVersion::V1 if who.is_some() => {
            privileged::as_caller(who, || cgroup::attach(&cg, child.pid))
        }
        _ => Ok(()),
    });
    if let Err(e) = setup {
        sys::kill_and_reap(child);
        destroy(&cg);
        return report_failure(&mut end, e);
    }
    if let Err(e) = sys::write_all(go_wr, b"g") {
        sys::kill_and_reap(child);
        destroy(&cg);
        return report_failure(
            &mut end,
            err(SetupStep::Namespaces, &e, "", "release the child"),
        );
    }
    sys::close(go_wr);
    // Setup is done: a setuid supervisor becomes its caller, keeping only CAP_KILL (to end
    // the sandbox, whose processes are the workspace's host uid), used on the worker's
    // pidfd alone. Its cgroup work was the caller's already.
    if let Some((uid, gid)) = who {
        if let Err(e) = drop_to_caller(uid, gid, cap_last) {
            sys::kill_and_reap(child);
            destroy(&cg);
            return report_failure(
                &mut end,
                err(SetupStep::Exec, &e, "", "drop the supervisor's privileges"),
            );
        }
    }
    // The socket (and the egress channel) now belong to the child alone: the controller
    // sees EOF on them when it dies.
    drop(end);
    if options.egress {
        sys::close(EGRESS_FD);
    }
    report(&LauncherReport::Ready {
        worker_pid: child.pid as u32,
        cgroup_version: cg.version,
        cgroup_dirs: cg.dirs.iter().map(|d| d.display().to_string()).collect(),
        oom_file: cg.oom_file.display().to_string(),
        privileged: caller.privileged,
    });
    // After the drop the supervisor's ids are the caller's already.
    supervise(child, sigset, &cg, None)
}

/// Step 4's clone: `clone3` with `CLONE_PIDFD` into the new namespaces; on cgroup v2
/// straight into the sandbox cgroup (`CLONE_INTO_CGROUP`, no migration), whose directory fd
/// is opened, and whose write permission the kernel checks, with the caller's rights when
/// setuid. Returns the child (`None` in the child) and whether it was born in the cgroup.
fn clone_sandbox(
    flags: libc::c_int,
    cg: &cgroup::Cgroup,
    who: Option<(u32, u32)>,
) -> (std::io::Result<Option<sys::Child>>, bool) {
    if cg.version == CgroupVersion::V2 {
        let dir = cg.dirs[0].to_string_lossy().into_owned();
        let into = privileged::as_caller(who, || sys::open_dir_path(&dir)).and_then(|fd| {
            let r = privileged::as_caller_fs(who, || sys::clone3(flags, Some(fd)));
            if !matches!(r, Ok(None)) {
                sys::close(fd);
            }
            r
        });
        match into {
            // Kernels or filesystems that refuse CLONE_INTO_CGROUP: a plain clone, then a
            // cgroup.procs write (as the caller).
            Err(e) if matches!(e.raw_os_error(), Some(libc::E2BIG | libc::EINVAL)) => {}
            r => return (r, true),
        }
    }
    (sys::clone3(flags, None), false)
}
/// `CAP_KILL` (`<linux/capability.h>`).
const CAP_KILL: u32 = 5;

/// The setuid supervisor's privilege drop: every capability but `CAP_KILL` out of the
/// bounding set, then real, effective and saved ids the caller's, then effective and
/// permitted exactly `{CAP_KILL}`. Not dumpable afterwards (the caller cannot ptrace it:
/// it lacks CAP_KILL).
/// `cap_last` is the one [`prepare`] read.
fn drop_to_caller(uid: u32, gid: u32, cap_last: u32) -> std::io::Result<()> {
    sys::prctl(libc::PR_SET_KEEPCAPS, 1, 0)?;
    for cap in (0..=cap_last).filter(|&c| c != CAP_KILL) {
        match sys::prctl(libc::PR_CAPBSET_DROP, cap.into(), 0) {
            Err(e) if e.raw_os_error() == Some(libc::EINVAL) => break,
            r => {
                r?;
            }
        }
    }
    sys::clear_groups()?;
    sys::setresgid(gid)?;
    sys::setresuid(uid)?;
    sys::capset_only(&[CAP_KILL])?;
    sys::prctl(libc::PR_SET_KEEPCAPS, 0, 0)?;
    sys::prctl(libc::PR_SET_DUMPABLE, 0, 0)?;
    let (ruid, _, euid) = sys::ids();
    if ruid != uid || euid != uid {
        return Err(std::io::Error::other("the supervisor is still privileged"));
    }
    Ok(())
}

fn msg_name(m: &ControllerMsg) -> &'static str {
    match m {
        ControllerMsg::Launch(..) => "Launch",
        ControllerMsg::Request { .. } => "Request",
        ControllerMsg::Cancel { .. } => "Cancel",
        ControllerMsg::Shutdown => "Shutdown",
    }
}

fn sanitize(mode: Mode) -> Result<(), SetupError> {
    let e = |x: std::io::Error, what: &str| err(SetupStep::Sanitize, &x, "", what);
    sys::prctl(libc::PR_SET_DUMPABLE, 0, 0).map_err(|x| e(x, "PR_SET_DUMPABLE"))?;
    sys::setrlimit(libc::RLIMIT_CORE, 0, 0).map_err(|x| e(x, "RLIMIT_CORE"))?;
    if mode.privileged() {
        // The launcher's own writes (the id registry) are not cut short by a file-size
        // limit its caller set. Without CAP_SYS_RESOURCE (some containers) the hard limit
        // stays: then the soft one goes up to it, and the registry write, with SIGXFSZ
        // ignored, fails whole (EFBIG) instead of leaving a torn record.
        if sys::setrlimit(libc::RLIMIT_FSIZE, libc::RLIM_INFINITY, libc::RLIM_INFINITY).is_err() {
            let (_, hard) = sys::getrlimit(libc::RLIMIT_FSIZE).map_err(|x| e(x, "RLIMIT_FSIZE"))?;
            sys::setrlimit(libc::RLIMIT_FSIZE, hard, hard).map_err(|x| e(x, "RLIMIT_FSIZE"))?;
        }
    }
    // Everything above the socket but the egress channel, which the spec decides about.
    sys::close_range(SOCK_FD as u32 + 1, EGRESS_FD as u32 - 1).map_err(|x| e(x, "close_range"))?;
    sys::close_from(EGRESS_FD as u32 + 1).map_err(|x| e(x, "close_range"))?;
    sys::set_cloexec(SOCK_FD, true).map_err(|x| e(x, "cloexec on the socket"))?;
    match sys::set_cloexec(EGRESS_FD, true) {
        Err(x) if x.raw_os_error() != Some(libc::EBADF) => {
            return Err(e(x, "cloexec on the egress channel"))
        }
        _ => {}
    }
    Ok(())
}

/// Keeps fd [`EGRESS_FD`] only when the options ask for egress, and then only if it is a
/// unix `SOCK_SEQPACKET` socket (the controller's end of the egress channel). Without
/// egress it is closed, whatever it was: nothing but the controller socket reaches the
/// worker.
fn egress_channel(options: &LaunchOptions) -> Result<(), SetupError> {
    if !options.egress {
        sys::close(EGRESS_FD);
        return Ok(());
    }
    if sys::is_unix_seqpacket(EGRESS_FD) {
        Ok(())
    } else {
        Err(plain(
            SetupStep::Spec,
            "",
            format!(
                "egress was asked for, but fd {EGRESS_FD} is not a unix SOCK_SEQPACKET socket \
                 (the controller passes the egress channel there)"
            ),
        ))
    }
}

/// Everything that reads the host: done by the parent before cloning, so the child needs
/// no host path after it enters its namespaces.
fn prepare(
    spec: LaunchSpec,
    host_uid: u32,
    egress: bool,
    sources: Option<(Source, Vec<Source>)>,
    setuid: bool,
) -> Result<Prepared, SetupError> {
    let exe = std::fs::read_link("/proc/self/exe")
        .map_err(|e| err(SetupStep::Exec, &e, "/proc/self/exe", "locate the launcher"))?;
    let worker = exe.with_file_name(WORKER_NAME);
    let worker = worker.to_string_lossy().into_owned();
    if setuid {
        // A setuid launcher runs only a worker root installed beside it: no directory on the
        // way that anyone else could change (a hardlinked copy of the launcher elsewhere
        // finds nothing to run), and no symlink.
        privileged::root_owned_dirs(&worker, SetupStep::Exec)?;
    }
    let open = if setuid {
        sys::open_path_nofollow
    } else {
        sys::open_path
    };
    let worker_fd = open(&worker).map_err(|e| {
        err(
            SetupStep::Exec,
            &e,
            &worker,
            "open the worker (it must sit next to bulkhead-launch)",
        )
    })?;
    if setuid {
        // ... owned by root and writable by nobody else.
        let (owner, mode, _) =
            sys::fd_stat(worker_fd).map_err(|e| err(SetupStep::Exec, &e, &worker, "stat"))?;
        if owner != 0 || mode & 0o022 != 0 {
            return Err(plain(
                SetupStep::Exec,
                &worker,
                "a setuid launcher only runs a worker owned by root and writable by nobody else (reinstall the package)",
            ));
        }
    }
    let cap_last = std::fs::read_to_string("/proc/sys/kernel/cap_last_cap")
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(63);
    let landlock_abi = sys::landlock_abi().map_err(|e| {
        err(SetupStep::Landlock, &e, "", "landlock is not available in this kernel (needs Linux ≥ 5.13 with landlock in the lsm= list)")
    })?;
    if landlock_abi < bulkhead_policy::landlock::MIN_ABI {
        return Err(plain(
            SetupStep::Landlock,
            "",
            format!(
                "landlock ABI {landlock_abi} is below the required {}",
                bulkhead_policy::landlock::MIN_ABI
            ),
        ));
    }
    let filters = seccomp::programs().map_err(|e| plain(SetupStep::Seccomp, "", e))?;
    let mounts = bulkhead_policy::mounts::plan(&spec, &bulkhead_policy::mounts::probe_host);
    Ok(Prepared {
        spec,
        mounts,
        filters,
        host_uid,
        worker_fd,
        cap_last,
        landlock_abi,
        egress,
        parent_attaches: setuid,
        sources,
    })
}

/// Rootless: opens a directory the sandbox mounts (the workspace, an extra bind) without
/// following a symlink in any component, inside the sandbox's (still host-identical) mount
/// namespace, and checks who owns it. Done before the child changes uid, so a root-owned
/// state directory stays traversable.
fn open_owned_dir(dir: &str, host_uid: u32) -> Result<RawFd, SetupError> {
    let fd = sys::open_dir_nofollow(dir).map_err(|e| {
        let why = match e.raw_os_error() {
            Some(libc::ELOOP) => "a component of the path is a symlink; refusing to follow it",
            Some(libc::ENOENT) => "the directory does not exist",
            Some(libc::ENOTDIR) => "the path is not a directory",
            _ => "cannot open the directory",
        };
        err(SetupStep::Mounts, &e, dir, why)
    })?;
    // Seen from inside the user namespace (the maps are written): the sandbox uid here is
    // `host_uid` on the host, and any other host owner shows as another id.
    let (owner, _, _) = sys::fd_owner(fd).map_err(|e| err(SetupStep::Mounts, &e, dir, "stat"))?;
    if owner != SANDBOX_UID {
        return Err(plain(
            SetupStep::Mounts,
            dir,
            format!(
                "the directory is not owned by the sandbox's host uid {host_uid}; \
                 bulkhead only mounts directories it prepared (recreate the workspace)"
            ),
        ));
    }
    Ok(fd)
}

/// Writes the child's `setgroups`, `uid_map` and `gid_map` through its `/proc/<pid>`
/// directory, proven to be this child by its pidfd ([`sys::proc_dir_of`]): a pid number
/// alone could name another process by now.
fn write_id_maps(child: sys::Child, host_uid: u32, host_gid: u32) -> Result<(), SetupError> {
    let proc_dir = format!("/proc/{}", child.pid);
    let dir = sys::proc_dir_of(child).map_err(|e| {
        err(
            SetupStep::IdMaps,
            &e,
            &proc_dir,
            "open the child's /proc directory",
        )
    })?;
    let w = |file: &str, val: String| {
        let path = format!("{proc_dir}/{file}");
        sys::openat_file(dir, file, libc::O_WRONLY | libc::O_CLOEXEC, 0)
            .and_then(|fd| {
                let r = sys::write_all(fd, val.as_bytes());
                sys::close(fd);
                r
            })
            .map_err(|e| err(SetupStep::IdMaps, &e, &path, "write"))
    };
    let r = w("setgroups", "deny".into())
        .and_then(|_| w("uid_map", format!("{SANDBOX_UID} {host_uid} 1\n")))
        .and_then(|_| w("gid_map", format!("{SANDBOX_GID} {host_gid} 1\n")));
    sys::close(dir);
    r
}

/// The child: steps 4 (cgroup ns) to 13, then exec. Never returns.
fn child_main(
    p: Prepared,
    cg: &cgroup::Cgroup,
    go_rd: RawFd,
    lifeline: RawFd,
    end: &mut WorkerEnd,
) -> ! {
    let mut b = [0u8; 1];
    if !matches!(sys::read(go_rd, &mut b), Ok(1)) {
        // The parent failed and reports it.
        sys::exit_now(SetupStep::IdMaps.exit_code());
    }
    sys::close(go_rd);
    if let Err(e) = sys::prctl(libc::PR_SET_DUMPABLE, 0, 0) {
        let code = report_failure(end, err(SetupStep::Sanitize, &e, "", "PR_SET_DUMPABLE"));
        sys::exit_now(code);
    }
    match setup_child(&p, cg, lifeline) {
        Ok(()) => {
            let argv = [c"bulkhead-worker"];
            let envp = [c"PATH=/usr/local/bin:/usr/bin:/bin"];
            let e = sys::execveat_fd(WORKER_FD, &argv, &envp);
            let code = report_failure(
                end,
                err(SetupStep::Exec, &e, WORKER_NAME, "exec the worker"),
            );
            sys::exit_now(code)
        }
        Err(e) => {
            let code = report_failure(end, e);
            sys::exit_now(code)
        }
    }
}

fn setup_child(p: &Prepared, cg: &cgroup::Cgroup, lifeline: RawFd) -> Result<(), SetupError> {
    use SetupStep as S;
    // 3 (cont.). cgroup v1: join the sandbox cgroup before anything else is allocated.
    if cg.version == CgroupVersion::V1 && !p.parent_attaches {
        cgroup::attach_self(cg)?;
    }
    // 4. the cgroup namespace, now that we sit in the sandbox's cgroup.
    sys::unshare(libc::CLONE_NEWCGROUP)
        .map_err(|e| err(S::Namespaces, &e, "", "unshare cgroup namespace"))?;
    let (workspace, binds) = match &p.sources {
        Some((w, b)) => (*w, b.clone()),
        None => {
            let w = Source::Dir(open_owned_dir(&p.spec.workspace_dir, p.host_uid)?);
            let mut b = Vec::with_capacity(p.spec.binds.len());
            for bind in &p.spec.binds {
                b.push(Source::Dir(open_owned_dir(&bind.host, p.host_uid)?));
            }
            (w, b)
        }
    };
    // 5. become the sandbox user (the parent wrote the maps).
    sys::setresgid(SANDBOX_GID).map_err(|e| err(S::IdMaps, &e, "", "setresgid"))?;
    sys::setresuid(SANDBOX_UID).map_err(|e| err(S::IdMaps, &e, "", "setresuid"))?;
    // If the supervisor dies (killed by its caller), so does the sandbox. Set after the uid
    // change, which clears it.
    sys::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL as libc::c_ulong, 0)
        .map_err(|e| err(S::IdMaps, &e, "", "PR_SET_PDEATHSIG"))?;
    // A supervisor that died before that line sent no signal. getppid() cannot tell (our
    // parent lies outside our pid namespace: it reads 0 either way), so ask its pidfd.
    let mut fds = [libc::pollfd {
        fd: lifeline,
        events: libc::POLLIN,
        revents: 0,
    }];
    let gone = sys::poll(&mut fds, 0).map_err(|e| err(S::IdMaps, &e, "", "poll the supervisor"))?;
    sys::close(lifeline);
    if gone != 0 {
        return Err(plain(S::IdMaps, "", "the supervisor exited during setup"));
    }
    sys::umask(0o022);
    // 6. mounts
    fs::build_root(&p.mounts, workspace, &binds)?;
    for src in std::iter::once(workspace).chain(binds) {
        sys::close(src.fd());
    }
    // 7. network
    sys::loopback_up().map_err(|e| err(S::Network, &e, "lo", "bring loopback up"))?;
    sys::sethostname(&p.spec.hostname).map_err(|e| err(S::Network, &e, "", "sethostname"))?;
    // 8. rlimits, and a session of its own
    pin_rlimits(&p.spec.limits)?;
    sys::setsid().map_err(|e| err(S::Rlimits, &e, "", "setsid"))?;
    // Standard fds and the worker's descriptor, while /dev/null can still be opened freely.
    let null = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/null")
        .map_err(|e| err(S::Exec, &e, "/dev/null", "open"))?;
    use std::os::fd::AsRawFd;
    for fd in 0..3 {
        sys::dup3(null.as_raw_fd(), fd, 0).map_err(|e| err(S::Exec, &e, "", "redirect stdio"))?;
    }
    drop(null);
    if p.worker_fd != WORKER_FD {
        sys::dup3(p.worker_fd, WORKER_FD, libc::O_CLOEXEC)
            .map_err(|e| err(S::Exec, &e, "", "dup worker fd"))?;
    }
    // With egress the channel on EGRESS_FD (= WORKER_FD + 1) stays, without it nothing does.
    let last_kept = if p.egress { EGRESS_FD } else { WORKER_FD };
    sys::close_from(last_kept as u32 + 1).map_err(|e| err(S::Exec, &e, "", "close_range"))?;
    sys::set_cloexec(SOCK_FD, false).map_err(|e| err(S::Exec, &e, "", "keep the socket"))?;
    if p.egress {
        sys::set_cloexec(EGRESS_FD, false)
            .map_err(|e| err(S::Exec, &e, "", "keep the egress channel"))?;
    }
    // 9. capabilities
    drop_capabilities(p.cap_last)?;
    // 10. no_new_privs
    sys::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0)
        .map_err(|e| err(S::NoNewPrivs, &e, "", "PR_SET_NO_NEW_PRIVS"))?;
    // 11. landlock
    landlock::apply(p.landlock_abi)?;
    // 12. seccomp, last, single-threaded.
    let threads = std::fs::read_dir("/proc/self/task")
        .map(|d| d.count())
        .unwrap_or(0);
    if threads != 1 {
        return Err(plain(
            S::Seccomp,
            "/proc/self/task",
            format!("expected 1 thread before seccomp, found {threads}"),
        ));
    }
    for prog in &p.filters {
        seccomp::install(prog).map_err(|e| {
            plain(
                S::Seccomp,
                "",
                format!("install filter: Error calling `seccomp`: {e}"),
            )
        })?;
    }
    // The worker starts with every disposition default and nothing blocked (the supervisor's
    // blocked SIGTERM/SIGINT/SIGHUP and ignored SIGPIPE stay here).
    sys::reset_signals().map_err(|e| err(S::Exec, &e, "", "reset signals"))?;
    Ok(())
}

/// Step 8: every limit of `bulkhead_policy::rlimits::plan` set explicitly, none inherited
/// from the caller (`RLIMIT_RTPRIO` 0 is what keeps a tenant off `SCHED_FIFO`). A limit the
/// caller's hard limit keeps lower stays lower (only stricter); an exact one that cannot be
/// met fails the step.
fn pin_rlimits(limits: &bulkhead_wire::Limits) -> Result<(), SetupError> {
    for planned in bulkhead_policy::rlimits::plan(limits) {
        let name = planned.resource.name();
        let (_, current_hard) = sys::getrlimit(planned.resource.id())
            .map_err(|e| err(SetupStep::Rlimits, &e, "", name))?;
        let (soft, hard) = bulkhead_policy::rlimits::effective(&planned, current_hard)
            .map_err(|detail| plain(SetupStep::Rlimits, "", detail))?;
        sys::setrlimit(planned.resource.id(), soft, hard)
            .map_err(|e| err(SetupStep::Rlimits, &e, "", name))?;
    }
    Ok(())
}

fn drop_capabilities(cap_last: u32) -> Result<(), SetupError> {
    use SetupStep as S;
    // SECBIT_NOROOT, NO_SETUID_FIXUP, KEEP_CAPS (locked), NO_CAP_AMBIENT_RAISE, all locked.
    const SECBITS: libc::c_ulong = 0x01 | 0x02 | 0x04 | 0x08 | 0x20 | 0x40 | 0x80;
    sys::prctl(libc::PR_SET_SECUREBITS, SECBITS, 0)
        .map_err(|e| err(S::Capabilities, &e, "", "PR_SET_SECUREBITS"))?;
    for cap in 0..=cap_last {
        match sys::prctl(libc::PR_CAPBSET_DROP, cap.into(), 0) {
            Ok(_) => {}
            Err(e) if e.raw_os_error() == Some(libc::EINVAL) => break,
            Err(e) => {
                return Err(err(
                    S::Capabilities,
                    &e,
                    "",
                    format!("drop capability {cap} from the bounding set"),
                ))
            }
        }
    }
    sys::prctl(
        libc::PR_CAP_AMBIENT,
        libc::PR_CAP_AMBIENT_CLEAR_ALL as libc::c_ulong,
        0,
    )
    .map_err(|e| err(S::Capabilities, &e, "", "clear ambient capabilities"))?;
    sys::capset_zero().map_err(|e| err(S::Capabilities, &e, "", "capset"))
}

/// The parent after a successful launch: wait, kill on request, clean up, report.
fn supervise(child: sys::Child, sigfd: RawFd, cg: &cgroup::Cgroup, who: Option<(u32, u32)>) -> i32 {
    let status = watch(child, sigfd);
    sys::close(child.pidfd);
    let oom_kills = cgroup::oom_kills(cg);
    // The worker is the sandbox's pid-namespace init: with it gone the kernel has killed
    // every process of the sandbox. Cleanup runs with the caller's rights when setuid.
    let cgroup_removed = privileged::as_caller(who, || cgroup::destroy(cg));
    let (code, signal, exit) = match status {
        sys::Wait::Exited(c) => (c, 0, c),
        sys::Wait::Signaled(s) => (-1, s, 128 + s),
        sys::Wait::Running => (-1, 0, LAUNCH_WORKER_ERROR),
    };
    report(&LauncherReport::Exited {
        code,
        signal,
        oom_kills,
        cgroup_removed,
    });
    exit
}

/// Waits for the worker to end and returns how it did. Ends it (SIGKILL through its pidfd,
/// never by pid number) on SIGTERM, SIGINT or SIGHUP (`sigfd`) and when the controller is
/// gone (the reader of the report pipe closed: POLLERR on our end), then waits for it. The
/// worker is the sandbox's pid-namespace init, so its end is the sandbox's.
fn watch(child: sys::Child, sigfd: RawFd) -> sys::Wait {
    let mut controller = REPORT_FD;
    loop {
        let mut fds = [
            libc::pollfd {
                fd: child.pidfd,
                events: libc::POLLIN,
                revents: 0,
            },
            libc::pollfd {
                fd: sigfd,
                events: libc::POLLIN,
                revents: 0,
            },
            // Write end of a pipe: POLLERR once the reader is gone (events 0: nothing else).
            libc::pollfd {
                fd: controller,
                events: 0,
                revents: 0,
            },
        ];
        if sys::poll(&mut fds, -1).is_err() {
            let _ = sys::pidfd_send_signal(child.pidfd, libc::SIGKILL);
            return sys::wait_pidfd(child.pidfd, false).unwrap_or(sys::Wait::Running);
        }
        if fds[0].revents != 0 {
            match sys::wait_pidfd(child.pidfd, true) {
                Ok(sys::Wait::Running) => {}
                Ok(w) => return w,
                Err(_) => return sys::Wait::Running,
            }
        }
        if fds[1].revents != 0 {
            let mut buf = [0u8; std::mem::size_of::<libc::signalfd_siginfo>() * 4];
            let _ = sys::read(sigfd, &mut buf);
            let _ = sys::pidfd_send_signal(child.pidfd, libc::SIGKILL);
        }
        if fds[2].revents & (libc::POLLERR | libc::POLLHUP) != 0 {
            controller = -1; // poll ignores negative fds: do not wake for it again
            let _ = sys::pidfd_send_signal(child.pidfd, libc::SIGKILL);
        } else if fds[2].revents & libc::POLLNVAL != 0 {
            controller = -1; // no report pipe was given: nothing to watch there
        }
    }
}
