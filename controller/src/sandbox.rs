//! The controller's side of a sandbox: spawns `bulkhead-launch`, sends the spec, checks the
//! worker's attestation, and speaks the protocol. Everything from the worker is hostile:
//! frames are capped and rate-limited, output is bounded by the request's cap, and anything
//! unexpected kills the sandbox.
//!
//! Every request has a deadline ([`Sandbox::request`]): an exec's own timeout plus
//! [`REPLY_GRACE`], [`FILE_REQUEST_TIMEOUT`] for the file requests, both capped by
//! [`Sandbox::set_deadline_cap`] (a run's deadline). A worker that has not answered by then
//! is treated as hostile: the sandbox is killed and the request fails with
//! [`Error::SandboxTimedOut`]. Stopping a sandbox is bounded too: the launcher gets
//! [`STOP_GRACE`] to report, then SIGTERM, then SIGKILL.
//!
//! With [`LaunchOptions::egress`] the sandbox also gets an egress channel: a second
//! socketpair (`AF_UNIX`, `SOCK_SEQPACKET`), passed to the launcher as fd
//! [`EGRESS_FD`](bulkhead_shared::EGRESS_FD), over which the worker hands over every
//! connection made to `127.0.0.1:3128` inside the sandbox
//! ([`Sandbox::take_egress_channel`], [`crate::net::fdpass::recv_passed_fd`]).

use std::io::Read;
use std::os::fd::OwnedFd;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdout, Command as ProcCommand, Stdio};
use std::time::{Duration, Instant};

use bulkhead_shared::frame::{decode_payload, read_payload, FrameError};
use bulkhead_shared::{
    Attestation, CgroupVersion, ControllerEnd, ExecRequest, ExecResult, LaunchOptions, LaunchSpec,
    LauncherReport, MethodKind, RateLimiter, Reply, Request, Stream, ToolError, WorkerMsg,
    EGRESS_FD, PROTOCOL_VERSION,
};
use command_fds::{CommandFdExt, FdMapping};

use crate::error::{Error, Result};

pub mod freeze;

/// How long the launcher may take to bring a sandbox up.
pub const START_TIMEOUT: Duration = Duration::from_secs(20);

/// How long after an exec's own timeout the worker may take to report it (the worker kills
/// the command at its timeout, reaps it and flushes its output well within this).
pub const REPLY_GRACE: Duration = Duration::from_secs(5);

/// Deadline of a `read`, `write`, `edit`, `ls`, `stat` or `ping` request (the worker caps
/// what each may touch, so an honest worker answers in far less).
pub const FILE_REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// How long a stopping sandbox's launcher may take to report its exit before it is sent
/// SIGTERM (and, after as long again, SIGKILL).
pub const STOP_GRACE: Duration = Duration::from_secs(5);

/// Where the .deb and .rpm install the (setuid-root) launcher.
pub const PACKAGED_LAUNCHER: &str = "/usr/libexec/bulkhead/bulkhead-launch";

/// Where the launcher binary is: `$BULKHEAD_LAUNCH`, else next to the running executable
/// (also one directory up, for test binaries in `target/*/deps`), else where the packages
/// install it ([`PACKAGED_LAUNCHER`]).
pub fn find_launcher() -> Result<PathBuf> {
    if let Some(p) = std::env::var_os("BULKHEAD_LAUNCH").filter(|p| !p.is_empty()) {
        return Ok(PathBuf::from(p));
    }
    let exe = std::env::current_exe()
        .map_err(|e| Error::Launcher(format!("cannot locate the running executable: {e}")))?;
    let dir = exe.parent().map(Path::to_path_buf).unwrap_or_default();
    for cand in [
        dir.join("bulkhead-launch"),
        dir.join("../bulkhead-launch"),
        PathBuf::from(PACKAGED_LAUNCHER),
    ] {
        if cand.exists() {
            return Ok(cand);
        }
    }
    Err(Error::Launcher(format!(
        "bulkhead-launch not found next to {} (install it beside bulkhead, or set BULKHEAD_LAUNCH)",
        exe.display()
    )))
}

/// Makes this process's signal state independent of what its parent gave it, before it
/// starts threads or children (the CLI calls it first thing; a host embedding the library
/// that ignores SIGCHLD should call it too, accepting the effect on its own children):
///
/// - the signal mask of the calling thread is emptied (a parent that blocked SIGTERM would
///   otherwise leave `serve` deaf to it); threads started afterwards inherit that;
/// - when SIGCHLD is ignored (`SIG_IGN`, as many daemons set it and exec keeps it), the
///   kernel reaps our children itself and every wait for a launcher, hook or skill fails
///   with ECHILD. A handler that does nothing but set a flag replaces it (exec resets a
///   handler to `SIG_DFL`, so our children start clean), and SIGCHLD is then kept blocked
///   in every thread, so the handler never interrupts a system call. The children's wait
///   works as with `SIG_DFL`.
///
/// Other dispositions stay the parent's (a `nohup` parent ignores SIGHUP on purpose).
pub fn normalize_inherited_signals() -> std::io::Result<()> {
    use nix::sys::signal::{SigSet, Signal};
    SigSet::empty()
        .thread_set_mask()
        .map_err(std::io::Error::from)?;
    if sigchld_ignored(&std::fs::read_to_string("/proc/self/status")?) {
        let flag = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        signal_hook::flag::register(Signal::SIGCHLD as i32, flag)?;
        let mut chld = SigSet::empty();
        chld.add(Signal::SIGCHLD);
        chld.thread_block().map_err(std::io::Error::from)?;
    }
    Ok(())
}

/// Whether `/proc/self/status` text says SIGCHLD is ignored (`SigIgn`, a hex mask whose bit
/// `n - 1` is signal `n`).
fn sigchld_ignored(status: &str) -> bool {
    status
        .lines()
        .find_map(|l| l.strip_prefix("SigIgn:"))
        .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
        .is_some_and(|mask| mask & (1 << (nix::libc::SIGCHLD - 1)) != 0)
}

/// What the launcher reported once the sandbox was up.
#[derive(Debug, Clone)]
pub struct SandboxInfo {
    /// Host pid of the launcher (the supervisor).
    pub launcher_pid: u32,
    /// Host pid of the worker.
    pub worker_pid: u32,
    /// Cgroup flavour.
    pub cgroup_version: CgroupVersion,
    /// Cgroup directories.
    pub cgroup_dirs: Vec<String>,
    /// File with the `oom_kill` counter.
    pub oom_file: String,
    /// Launcher ran privileged.
    pub privileged: bool,
    /// What the worker attested.
    pub attestation: Attestation,
}

/// How a sandbox ended.
#[derive(Debug, Clone, Default)]
pub struct SandboxExit {
    /// Worker exit code (-1 if killed).
    pub code: i32,
    /// Signal that killed the worker (0 if none).
    pub signal: i32,
    /// OOM kills counted in the sandbox's cgroup.
    pub oom_kills: u64,
    /// The cgroup was removed.
    pub cgroup_removed: bool,
}

/// Outcome of an exec, with the OOM verdict read from the host's cgroup files.
#[derive(Debug, Clone)]
pub struct ExecOutcome {
    /// What the worker reported.
    pub result: ExecResult,
    /// The sandbox's memory limit killed a process during this exec.
    pub oom_killed: bool,
}

/// One running sandbox.
#[derive(Debug)]
pub struct Sandbox {
    child: Child,
    end: ControllerEnd,
    report: ChildStdout,
    info: SandboxInfo,
    next_id: u64,
    limiter: RateLimiter,
    dead: bool,
    /// The controller's end of the egress channel, until taken.
    egress: Option<OwnedFd>,
    /// No request waits past this (a run's deadline).
    deadline_cap: Option<Instant>,
}

fn read_report(r: &mut ChildStdout) -> Result<LauncherReport> {
    let mut buf = Vec::new();
    read_payload(r, &mut buf).map_err(|e| Error::Launcher(format!("report pipe: {e}")))?;
    decode_payload(&buf).map_err(|e| Error::Launcher(format!("report pipe: {e}")))
}

fn own_ns(name: &str) -> u64 {
    std::fs::read_link(format!("/proc/self/ns/{name}"))
        .ok()
        .and_then(|l| {
            let s = l.to_string_lossy().into_owned();
            s.split_once('[')
                .and_then(|(_, r)| r.trim_end_matches(']').parse().ok())
        })
        .unwrap_or(0)
}

/// Checks the worker's own view of its confinement against the policy for `spec` (and the
/// egress proxy listener against whether `egress` was asked for): identity, capabilities,
/// seccomp mode and filter count, landlock, namespaces, id maps, interfaces, the resource
/// limits and the mount table (re-planned here from `spec` and the host, as the launcher
/// planned them). Returns what is wrong, if anything.
pub fn verify_attestation(
    a: &Attestation,
    spec: &LaunchSpec,
    host_uid: u32,
    host_gid: u32,
    egress: bool,
) -> std::result::Result<(), String> {
    let mut bad = Vec::new();
    if a.pid != 1 {
        bad.push(format!(
            "worker is pid {} inside, not 1 (no pid namespace)",
            a.pid
        ));
    }
    if a.uid != bulkhead_policy::defaults::SANDBOX_UID
        || a.gid != bulkhead_policy::defaults::SANDBOX_GID
    {
        bad.push(format!("worker runs as {}:{} inside", a.uid, a.gid));
    }
    if !a.no_new_privs {
        bad.push("NoNewPrivs is not set".into());
    }
    if a.seccomp_mode != 2 {
        bad.push(format!(
            "seccomp mode is {}, not 2 (filter)",
            a.seccomp_mode
        ));
    }
    // Exactly the policy's programs: fewer means a layer is missing, more means something
    // other than the launcher installed filters before the worker started.
    let expected = bulkhead_seccomp::build_filters().map_or(0, |p| p.len() as u32);
    if a.seccomp_filters != expected {
        bad.push(format!(
            "{} seccomp filters installed, expected {expected}",
            a.seccomp_filters
        ));
    }
    for (name, v) in [
        ("CapInh", a.cap_inh),
        ("CapPrm", a.cap_prm),
        ("CapEff", a.cap_eff),
        ("CapBnd", a.cap_bnd),
        ("CapAmb", a.cap_amb),
    ] {
        if v != 0 {
            bad.push(format!("{name} is {v:#x}, not 0"));
        }
    }
    if !a.landlock_enforced {
        bad.push(format!(
            "landlock is not enforced (kernel ABI {})",
            a.landlock_abi
        ));
    }
    let ns = &a.ns;
    for (name, inside) in [
        ("user", ns.user),
        ("mnt", ns.mnt),
        ("pid", ns.pid),
        ("net", ns.net),
        ("ipc", ns.ipc),
        ("uts", ns.uts),
        ("cgroup", ns.cgroup),
    ] {
        if inside == 0 || inside == own_ns(name) {
            bad.push(format!("{name} namespace is not new"));
        }
    }
    let expect_uid = format!("{} {} 1", bulkhead_policy::defaults::SANDBOX_UID, host_uid);
    let expect_gid = format!("{} {} 1", bulkhead_policy::defaults::SANDBOX_GID, host_gid);
    let norm = |m: &str| m.split_whitespace().collect::<Vec<_>>().join(" ");
    if norm(&a.uid_map) != expect_uid {
        bad.push(format!(
            "uid map is {:?}, expected {expect_uid:?}",
            norm(&a.uid_map)
        ));
    }
    if norm(&a.gid_map) != expect_gid {
        bad.push(format!(
            "gid map is {:?}, expected {expect_gid:?}",
            norm(&a.gid_map)
        ));
    }
    if host_uid == 0 || host_gid == 0 {
        bad.push("sandbox mapped to host root".into());
    }
    if a.interfaces.iter().any(|i| i != "lo") {
        bad.push(format!("network interfaces besides lo: {:?}", a.interfaces));
    }
    if !a.root_readonly {
        bad.push("/ is not read-only".into());
    }
    bad.extend(bulkhead_attest::rlimits::check(
        &a.rlimits,
        &bulkhead_policy::rlimits::plan(&spec.limits),
    ));
    let mounts = bulkhead_policy::mounts::plan(spec, &bulkhead_policy::mounts::probe_host);
    bad.extend(bulkhead_attest::mounts::check_mounts(&a.mounts, &mounts));
    match (egress, a.egress_proxy) {
        (true, false) => bad.push(format!(
            "egress was asked for but the proxy listener on 127.0.0.1:{} is not up",
            bulkhead_shared::PROXY_PORT
        )),
        (false, true) => {
            bad.push("an egress proxy listener is up, but egress was not asked for".into())
        }
        _ => {}
    }
    if bad.is_empty() {
        Ok(())
    } else {
        Err(bad.join("; "))
    }
}

impl Sandbox {
    /// Starts a sandbox for `spec` with the launcher at `launcher` (default
    /// [`LaunchOptions`]: no egress). On any failure no sandbox is left behind.
    pub fn start(launcher: &Path, spec: &LaunchSpec) -> Result<Sandbox> {
        Sandbox::start_with(launcher, spec, &LaunchOptions::default())
    }

    /// Starts a sandbox for `spec` with the launcher at `launcher` and `options`. With
    /// [`LaunchOptions::egress`], the sandbox serves `127.0.0.1:3128` inside and the
    /// connections made to it arrive on [`Sandbox::take_egress_channel`]; the attestation
    /// must confirm the listener (and, without egress, its absence). On any failure no
    /// sandbox is left behind.
    pub fn start_with(
        launcher: &Path,
        spec: &LaunchSpec,
        options: &LaunchOptions,
    ) -> Result<Sandbox> {
        let (ours, theirs) =
            UnixStream::pair().map_err(|e| Error::Launcher(format!("socketpair: {e}")))?;
        let mut mappings = vec![FdMapping {
            parent_fd: OwnedFd::from(theirs),
            child_fd: 3,
        }];
        let egress = if options.egress {
            use nix::sys::socket::{socketpair, AddressFamily, SockFlag, SockType};
            let (ours_e, theirs_e) = socketpair(
                AddressFamily::Unix,
                SockType::SeqPacket,
                None,
                SockFlag::SOCK_CLOEXEC,
            )
            .map_err(|e| Error::Launcher(format!("egress socketpair: {e}")))?;
            mappings.push(FdMapping {
                parent_fd: theirs_e,
                child_fd: EGRESS_FD,
            });
            Some(ours_e)
        } else {
            None
        };
        let mut cmd = ProcCommand::new(launcher);
        cmd.stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        cmd.env_clear();
        cmd.fd_mappings(mappings)
            .map_err(|e| Error::Launcher(format!("fd mapping: {e}")))?;
        let mut child = cmd
            .spawn()
            .map_err(|e| Error::Launcher(format!("cannot run {}: {e}", launcher.display())))?;
        drop(cmd);
        let report = child
            .stdout
            .take()
            .ok_or_else(|| Error::Launcher("no report pipe".into()))?;
        let end = ControllerEnd::new(ours).map_err(|e| Error::Launcher(e.to_string()))?;
        let mut limiter = RateLimiter::default();
        limiter.set_rate(MethodKind::Output, 20_000);
        let mut sb = Sandbox {
            child,
            end,
            report,
            info: SandboxInfo {
                launcher_pid: 0,
                worker_pid: 0,
                cgroup_version: CgroupVersion::V2,
                cgroup_dirs: vec![],
                oom_file: String::new(),
                privileged: false,
                attestation: Attestation::default(),
            },
            next_id: 1,
            limiter,
            dead: false,
            egress,
            deadline_cap: None,
        };
        sb.info.launcher_pid = sb.child.id();
        match sb.handshake(spec, options) {
            Ok(()) => Ok(sb),
            Err(e) => {
                sb.kill();
                Err(e)
            }
        }
    }

    fn handshake(&mut self, spec: &LaunchSpec, options: &LaunchOptions) -> Result<()> {
        let _ = self.end.socket().set_read_timeout(Some(START_TIMEOUT));
        if let Err(e) = self.end.send_launch_with(spec, options) {
            // A setuid launcher refuses an unauthorised caller before reading the spec and
            // may be gone before it is sent: its refusal still waits on the socket.
            if let Ok(WorkerMsg::SetupFailed(refusal)) = self.end.recv() {
                let _ = self.child.wait();
                self.dead = true;
                return Err(Error::Setup(refusal));
            }
            return Err(self.launcher_failure(format!("sending the spec: {e}")));
        }
        let attestation = match self.end.recv() {
            Ok(WorkerMsg::Hello {
                version,
                attestation,
            }) => {
                if version != PROTOCOL_VERSION {
                    return Err(Error::Protocol(format!(
                        "worker speaks protocol {version}, controller {PROTOCOL_VERSION}"
                    )));
                }
                attestation
            }
            Ok(WorkerMsg::SetupFailed(e)) => {
                let _ = self.child.wait();
                // Reaped: its pid may be anyone's now, so `kill` must not signal it.
                self.dead = true;
                return Err(Error::Setup(e));
            }
            Ok(_) => {
                return Err(Error::Protocol(
                    "expected Hello as the first message".into(),
                ))
            }
            Err(FrameError::Disconnected) => {
                return Err(self.launcher_failure("launcher exited without a report".into()))
            }
            Err(e) => return Err(self.launcher_failure(format!("waiting for the worker: {e}"))),
        };
        let _ = self.end.socket().set_read_timeout(None);
        match read_report(&mut self.report)? {
            LauncherReport::Ready {
                worker_pid,
                cgroup_version,
                cgroup_dirs,
                oom_file,
                privileged,
            } => {
                self.info.worker_pid = worker_pid;
                self.info.cgroup_version = cgroup_version;
                self.info.cgroup_dirs = cgroup_dirs;
                self.info.oom_file = oom_file;
                self.info.privileged = privileged;
            }
            LauncherReport::Exited { .. } => {
                return Err(Error::Launcher(
                    "launcher reported exit before ready".into(),
                ))
            }
        }
        let (hu, hg) = if self.info.privileged {
            (spec.host_uid, spec.host_gid)
        } else {
            (
                nix::unistd::getuid().as_raw(),
                nix::unistd::getgid().as_raw(),
            )
        };
        verify_attestation(&attestation, spec, hu, hg, options.egress)
            .map_err(Error::Attestation)?;
        // The disk limit: /workspace must be the workspace's own filesystem of that size.
        crate::disk::verify(
            &attestation.workspace_fs,
            spec.limits.disk_bytes,
            spec.limits.inodes,
        )
        .map_err(Error::Attestation)?;
        self.info.attestation = attestation;
        Ok(())
    }

    fn launcher_failure(&mut self, what: String) -> Error {
        // SIGTERM, not SIGKILL: the launcher then kills its child and removes the cgroup.
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(self.child.id() as i32),
            nix::sys::signal::Signal::SIGTERM,
        );
        self.dead = true;
        match self.child.wait() {
            Ok(st) => Error::Launcher(format!("{what} (launcher {st})")),
            Err(_) => Error::Launcher(what),
        }
    }

    /// What the launcher reported.
    pub fn info(&self) -> &SandboxInfo {
        &self.info
    }

    /// The controller's end of the egress channel (once; `None` without egress or when
    /// already taken): an `AF_UNIX` `SOCK_SEQPACKET` socket on which every connection made
    /// to `127.0.0.1:3128` inside the sandbox arrives as one passed fd (read them with
    /// [`crate::net::fdpass::recv_passed_fd`]). Never write to it: the worker takes anything
    /// readable on its end as the end of egress. Dropping it ends egress (the listener inside
    /// closes); it reads end of file once the sandbox is gone.
    pub fn take_egress_channel(&mut self) -> Option<OwnedFd> {
        self.egress.take()
    }

    /// OOM kills counted so far in the sandbox's cgroup (read from the host side).
    pub fn oom_kills(&self) -> u64 {
        std::fs::read_to_string(&self.info.oom_file)
            .map(|s| bulkhead_policy::cgroup::parse_oom_kills(&s))
            .unwrap_or(0)
    }

    fn fail(&mut self, e: Error) -> Error {
        self.kill();
        e
    }

    /// No request from now on waits past `cap` (`None`: only the requests' own deadlines).
    /// A run sets its deadline here, so a stalled worker cannot outlast `run --timeout`.
    pub fn set_deadline_cap(&mut self, cap: Option<Instant>) {
        self.deadline_cap = cap;
    }

    /// When the reply to `body`, sent now, is due: an exec's timeout plus [`REPLY_GRACE`]
    /// (none for an exec without a timeout), [`FILE_REQUEST_TIMEOUT`] for the rest; never
    /// after the cap.
    fn deadline_for(&self, body: &Request, now: Instant) -> Option<Instant> {
        let own = match body {
            Request::Exec(e) if e.timeout_ms == 0 => None,
            Request::Exec(e) => {
                Some(Duration::from_millis(e.timeout_ms).saturating_add(REPLY_GRACE))
            }
            Request::Read { .. }
            | Request::Write { .. }
            | Request::Edit { .. }
            | Request::Ls { .. }
            | Request::Stat { .. }
            | Request::Ping => Some(FILE_REQUEST_TIMEOUT),
        }
        .and_then(|d| now.checked_add(d));
        match (own, self.deadline_cap) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// The worker did not answer by `deadline`: stop the sandbox, say how long it had.
    fn timed_out(&mut self, sent: Instant, deadline: Instant) -> Error {
        let e = Error::SandboxTimedOut(deadline.saturating_duration_since(sent));
        log::warn!(target: "sandbox", "worker pid {} (launcher {}): {e}", self.info.worker_pid, self.info.launcher_pid);
        self.kill();
        e
    }

    fn recv_checked(&mut self, sent: Instant, deadline: Option<Instant>) -> Result<WorkerMsg> {
        let got = match deadline {
            Some(d) => self.end.recv_until(d),
            None => self.end.recv(),
        };
        let msg = match got {
            Ok(m) => m,
            Err(FrameError::Disconnected) => {
                self.kill();
                return Err(Error::SandboxGone(
                    "the worker closed its connection".into(),
                ));
            }
            Err(e) if e.is_timeout() => {
                return Err(self.timed_out(sent, deadline.unwrap_or(sent)));
            }
            Err(e) => return Err(self.fail(Error::Protocol(e.to_string()))),
        };
        let kind = match &msg {
            WorkerMsg::Output { .. } => MethodKind::Output,
            _ => MethodKind::Response,
        };
        if !self.limiter.allow(kind) {
            return Err(self.fail(Error::Protocol(format!(
                "worker exceeded its {kind:?} frame rate"
            ))));
        }
        Ok(msg)
    }

    /// Sends `body` and waits for its reply; `on_output` receives exec output as it comes.
    ///
    /// The reply is due by the request's deadline (see the module documentation); past it
    /// the sandbox is killed and the result is [`Error::SandboxTimedOut`]. Only an exec
    /// without a timeout (`timeout_ms == 0`, the operator's `bulkhead exec` without
    /// `--timeout`) and without a cap waits as long as its command runs.
    pub fn request(
        &mut self,
        body: Request,
        on_output: &mut dyn FnMut(Stream, &[u8]),
    ) -> Result<std::result::Result<Reply, ToolError>> {
        if self.dead {
            return Err(Error::SandboxGone("the sandbox was stopped".into()));
        }
        let id = self.next_id;
        self.next_id = self.next_id.wrapping_add(1);
        let cap = match &body {
            Request::Exec(e) => e.output_cap,
            _ => 0,
        };
        // Output beyond the cap plus the marker is a protocol violation.
        let allowance = cap.saturating_add(256);
        let mut seen: u64 = 0;
        let sent = Instant::now();
        let deadline = self.deadline_for(&body, sent);
        if deadline.is_none() {
            // No timeout left over from an earlier request may cut this one short.
            let _ = self.end.socket().set_read_timeout(None);
            let _ = self.end.socket().set_write_timeout(None);
        }
        let wrote = match deadline {
            Some(d) => self.end.request_until(id, &body, d),
            None => self.end.request(id, &body),
        };
        match wrote {
            Ok(()) => {}
            Err(e) if e.is_timeout() => {
                return Err(self.timed_out(sent, deadline.unwrap_or(sent)));
            }
            Err(e) => {
                return Err(self.fail(Error::SandboxGone(format!("sending request: {e}"))));
            }
        }
        loop {
            match self.recv_checked(sent, deadline)? {
                WorkerMsg::Output {
                    id: oid,
                    stream,
                    data,
                } if oid == id => {
                    seen = seen.saturating_add(data.len() as u64);
                    if seen > allowance {
                        return Err(self.fail(Error::Protocol(
                            "worker sent more output than the cap".into(),
                        )));
                    }
                    on_output(stream, &data);
                }
                WorkerMsg::Response { id: rid, result } if rid == id => return Ok(result),
                WorkerMsg::Output { .. } | WorkerMsg::Response { .. } => {
                    return Err(self.fail(Error::Protocol(
                        "worker answered a request that was not asked".into(),
                    )))
                }
                WorkerMsg::Hello { .. } | WorkerMsg::SetupFailed(_) => {
                    return Err(self.fail(Error::Protocol("unexpected handshake message".into())))
                }
            }
        }
    }

    /// Runs a command; output goes to `on_output` as it arrives.
    pub fn exec(
        &mut self,
        req: ExecRequest,
        on_output: &mut dyn FnMut(Stream, &[u8]),
    ) -> Result<ExecOutcome> {
        let before = self.oom_kills();
        match self.request(Request::Exec(req), on_output)? {
            Ok(Reply::Exec(result)) => {
                let oom_killed = self.oom_kills() > before;
                Ok(ExecOutcome { result, oom_killed })
            }
            Ok(_) => Err(self.fail(Error::Protocol("wrong reply type for exec".into()))),
            Err(t) => Err(Error::Tool(t)),
        }
    }

    /// Stops the sandbox: asks the worker to exit, waits for the launcher's report (a
    /// worker that ignores the request is killed after [`STOP_GRACE`]).
    pub fn shutdown(mut self) -> Result<SandboxExit> {
        // A worker that stopped reading cannot block the request to exit.
        let _ = self
            .end
            .socket()
            .set_write_timeout(Some(Duration::from_secs(1)));
        let _ = self.end.shutdown();
        let _ = self.end.socket().shutdown(std::net::Shutdown::Write);
        self.finish()
    }

    /// Reads the launcher's report pipe to end of file, which comes when the launcher exits.
    /// It gets [`STOP_GRACE`]; then SIGTERM (it kills the worker and removes the cgroup),
    /// [`STOP_GRACE`] again, then SIGKILL (the worker dies with it: `PR_SET_PDEATHSIG`).
    fn drain_report(&mut self) -> Vec<u8> {
        use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
        use nix::sys::signal::Signal;
        use std::os::fd::AsFd;
        let mut buf = Vec::new();
        let mut chunk = [0u8; 4096];
        let mut signals = [Signal::SIGTERM, Signal::SIGKILL].into_iter();
        let mut deadline = Instant::now() + STOP_GRACE;
        let mut eof = false;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                let Some(sig) = signals.next() else { break };
                log::warn!(target: "sandbox", "the sandbox's launcher (pid {}) did not exit within {}s; sending {sig}", self.child.id(), STOP_GRACE.as_secs());
                // The launcher is our unreaped child until `finish` waits for it: the pid
                // cannot have been reused.
                let _ =
                    nix::sys::signal::kill(nix::unistd::Pid::from_raw(self.child.id() as i32), sig);
                deadline = Instant::now() + STOP_GRACE;
                continue;
            }
            let ms = u16::try_from(left.as_millis().max(1)).unwrap_or(u16::MAX);
            let ready = {
                let mut fds = [PollFd::new(self.report.as_fd(), PollFlags::POLLIN)];
                poll(&mut fds, PollTimeout::from(ms))
            };
            match ready {
                Ok(0) | Err(nix::errno::Errno::EINTR) => continue,
                Ok(_) => {}
                Err(_) => break,
            }
            match self.report.read(&mut chunk) {
                Ok(0) => {
                    eof = true;
                    break;
                }
                Ok(n) => {
                    // The launcher writes two small frames; anything past a frame's cap is
                    // not a report.
                    if buf.len() + n > 2 * bulkhead_shared::MAX_FRAME_BYTES {
                        break;
                    }
                    buf.extend_from_slice(&chunk[..n]);
                }
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(_) => break,
            }
        }
        if !eof {
            // Given up on the report: make sure the launcher is gone before it is reaped.
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(self.child.id() as i32),
                Signal::SIGKILL,
            );
        }
        buf
    }

    fn finish(&mut self) -> Result<SandboxExit> {
        self.dead = true;
        let mut exit = SandboxExit::default();
        // Drain the report pipe until EOF: Exited comes last.
        let buf = self.drain_report();
        let mut rest: &[u8] = &buf;
        while let Ok(m) = {
            let mut p = Vec::new();
            read_payload(&mut rest, &mut p).and_then(|_| decode_payload::<LauncherReport>(&p))
        } {
            if let LauncherReport::Exited {
                code,
                signal,
                oom_kills,
                cgroup_removed,
            } = m
            {
                exit = SandboxExit {
                    code,
                    signal,
                    oom_kills,
                    cgroup_removed,
                };
            }
        }
        let _ = self.child.wait();
        Ok(exit)
    }

    /// Kills the sandbox now (the launcher kills the worker and removes the cgroup).
    pub fn kill(&mut self) {
        if self.dead {
            return;
        }
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(self.child.id() as i32),
            nix::sys::signal::Signal::SIGTERM,
        );
        let _ = self.finish();
    }
}

#[cfg(test)]
impl Sandbox {
    /// A sandbox whose worker is the returned socket (for tests that play a hostile
    /// worker): no launcher, no namespaces; the "launcher" is `true`, already gone.
    pub(crate) fn with_fake_worker() -> (Sandbox, UnixStream) {
        let (ours, theirs) = UnixStream::pair().expect("socketpair");
        let mut child = ProcCommand::new("true")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .spawn()
            .expect("spawn true");
        let report = child.stdout.take().expect("stdout piped");
        let mut limiter = RateLimiter::default();
        limiter.set_rate(MethodKind::Output, 20_000);
        let sb = Sandbox {
            child,
            end: ControllerEnd::new(ours).expect("controller end"),
            report,
            info: SandboxInfo {
                launcher_pid: 0,
                worker_pid: 0,
                cgroup_version: CgroupVersion::V2,
                cgroup_dirs: vec![],
                oom_file: String::new(),
                privileged: false,
                attestation: Attestation::default(),
            },
            next_id: 1,
            limiter,
            dead: false,
            egress: None,
            deadline_cap: None,
        };
        (sb, theirs)
    }
}

impl Drop for Sandbox {
    fn drop(&mut self) {
        self.kill();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sigchld_ignored_is_read_from_the_status_mask() {
        let st = |ign: &str| format!("Name:\tx\nSigBlk:\t0000000000010000\nSigIgn:\t{ign}\n");
        assert!(sigchld_ignored(&st("0000000000010000")));
        assert!(sigchld_ignored(&st("0000000000011001")));
        assert!(!sigchld_ignored(&st("0000000000001000")));
        assert!(!sigchld_ignored(&st("zz")));
        assert!(!sigchld_ignored("Name:\tx\n"));
    }

    #[test]
    fn the_attestation_must_match_the_egress_asked_for() {
        // A default attestation fails many checks; only the egress one is looked at here.
        let spec = LaunchSpec {
            workspace_id: "w".into(),
            workspace_dir: "/s/w/files".into(),
            workspace_writable: true,
            host_uid: 1000,
            host_gid: 1000,
            hostname: "w".into(),
            limits: bulkhead_policy::default_limits(),
            binds: vec![],
        };
        let problems = |a: &Attestation, egress| verify_attestation(a, &spec, 1000, 1000, egress);
        let mut a = Attestation::default();
        assert!(problems(&a, true).unwrap_err().contains("proxy listener"));
        assert!(!problems(&a, false).unwrap_err().contains("egress"));
        a.egress_proxy = true;
        assert!(problems(&a, false)
            .unwrap_err()
            .contains("egress was not asked for"));
        assert!(!problems(&a, true).unwrap_err().contains("egress"));
    }

    #[test]
    fn the_attestation_must_carry_the_planned_rlimits_and_mounts() {
        let spec = LaunchSpec {
            workspace_id: "w".into(),
            workspace_dir: "/s/w/files".into(),
            workspace_writable: false,
            host_uid: 1000,
            host_gid: 1000,
            hostname: "w".into(),
            limits: bulkhead_policy::default_limits(),
            binds: vec![],
        };
        let mut a = Attestation::default();
        let e = verify_attestation(&a, &spec, 1000, 1000, false).unwrap_err();
        assert!(e.contains("RLIMIT_RTPRIO is not reported"), "{e}");
        assert!(e.contains("/workspace is not mounted"), "{e}");
        // An inherited real-time priority and a writable read-only workspace are named.
        a.rlimits = vec![bulkhead_shared::RlimitSeen {
            name: "Max realtime priority".into(),
            soft: 99,
            hard: 99,
        }];
        a.mounts = vec![bulkhead_shared::MountSeen {
            path: "/workspace".into(),
            fstype: "ext4".into(),
            readonly: false,
        }];
        let e = verify_attestation(&a, &spec, 1000, 1000, false).unwrap_err();
        assert!(e.contains("RLIMIT_RTPRIO is 99/99"), "{e}");
        assert!(e.contains("/workspace is not read-only"), "{e}");
    }
}
