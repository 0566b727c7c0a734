//! Running commands: fork + exec with an error pipe, stdin feeding, batched and capped output,
//! timeouts and cancellation by process group.
//!
//! Each command leads its own session and process group (`setsid`), so one `kill(-pgid)`
//! reaches everything it started that did not leave the group. The child inherits exactly
//! fds 0, 1, 2 (three pipes to the worker), default signal dispositions, an empty signal mask,
//! and an environment built from an allowlist (plus, in a sandbox with egress, the proxy
//! variables of [`crate::egress::proxy_env`]) and what the request names.

use std::ffi::CString;
use std::fs::File;
use std::io::{self, Read, Write};
use std::os::fd::{AsFd, AsRawFd, OwnedFd, RawFd};
use std::time::{Duration, Instant};

use bulkhead_shared::{
    Command, ExecRequest, ExecResult, ExitKind, Reply, Stream, ToolError, ToolErrorKind, WorkerMsg,
};

use crate::conn::Outbox;
use crate::files::{describe, tool_error, WORKSPACE};
use crate::sys;

/// Most commands running at once.
pub const MAX_CONCURRENT_EXECS: usize = 16;
/// An output buffer is sent when it holds this much…
pub const FLUSH_BYTES: usize = 64 * 1024;
/// …or this long after its first unsent byte, whichever comes first.
pub const FLUSH_AFTER: Duration = Duration::from_millis(10);
/// After the command exits, how long to keep reading pipes a background process still holds.
pub const DRAIN_GRACE: Duration = Duration::from_millis(200);
/// Environment every command starts from; the request may override or extend it.
pub const BASE_ENV: [(&str, &str); 5] = [
    ("PATH", "/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin"),
    ("HOME", WORKSPACE),
    ("LANG", "C.UTF-8"),
    ("TERM", "dumb"),
    ("USER", "sandbox"),
];

/// Reads per readiness event and pipe (bounds the time one chatty command holds the loop).
const READS_PER_EVENT: usize = 4;
/// Size of one read from a pipe (on the stack).
const READ_SCRATCH: usize = 16 * 1024;
/// Largest single write to a command's stdin.
const STDIN_CHUNK: usize = 64 * 1024;
/// Highest signal number whose disposition a child resets.
const MAX_SIGNAL: libc::c_int = 64;

/// Where a child failed, reported through the error pipe with the errno.
const STAGE_SETUP: u8 = 1;
const STAGE_CHDIR: u8 = 2;
const STAGE_EXEC: u8 = 3;

/// Everything a child needs, built (and allocated) before fork.
#[derive(Debug)]
pub struct ChildPlan {
    /// Program name for messages.
    pub display: String,
    /// Paths to try with execve, in order (the PATH search, done in the parent).
    pub candidates: Vec<CString>,
    /// Owns the strings `argv_ptrs` points to.
    #[allow(dead_code)] // read through `argv_ptrs` (and by tests)
    argv: Vec<CString>,
    argv_ptrs: Vec<*const libc::c_char>,
    /// Owns the strings `envp_ptrs` points to (`KEY=value`).
    #[allow(dead_code)] // read through `envp_ptrs`
    envp: Vec<CString>,
    envp_ptrs: Vec<*const libc::c_char>,
    /// Working directory (absolute).
    pub cwd: CString,
}

fn invalid(msg: impl Into<String>) -> ToolError {
    tool_error(ToolErrorKind::InvalidInput, msg)
}

fn cstring(s: &str, what: &str) -> Result<CString, ToolError> {
    CString::new(s).map_err(|_| invalid(format!("{what} contains a nul byte")))
}

/// The environment of a command: [`BASE_ENV`], then `proxy` (the egress proxy variables,
/// empty without egress), overridden/extended by `extra`, in order.
pub fn build_env(
    proxy: &[(String, String)],
    extra: &[(String, String)],
) -> Result<Vec<(String, String)>, ToolError> {
    let mut env: Vec<(String, String)> = BASE_ENV
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .chain(proxy.iter().cloned())
        .collect();
    for (k, v) in extra {
        if k.is_empty() || k.contains('=') || k.contains('\0') {
            return Err(invalid(format!(
                "invalid environment variable name {k:?}: must be non-empty, without '=' or nul"
            )));
        }
        if v.contains('\0') {
            return Err(invalid(format!(
                "environment variable {k} contains a nul byte"
            )));
        }
        match env.iter_mut().find(|(ek, _)| ek == k) {
            Some(slot) => slot.1 = v.clone(),
            None => env.push((k.clone(), v.clone())),
        }
    }
    Ok(env)
}

/// The working directory: empty → the workspace, relative → under it.
pub fn resolve_cwd(cwd: &str) -> String {
    if cwd.is_empty() {
        WORKSPACE.to_string()
    } else if cwd.starts_with('/') {
        cwd.to_string()
    } else {
        format!("{WORKSPACE}/{cwd}")
    }
}

/// execve candidates for `prog` under `path` (the PATH value): `prog` itself when it names a
/// path, else each PATH entry joined with it (an empty entry is the working directory).
pub fn path_candidates(prog: &str, path: &str) -> Vec<String> {
    if prog.contains('/') {
        return vec![prog.to_string()];
    }
    path.split(':')
        .map(|dir| if dir.is_empty() { "." } else { dir })
        .map(|dir| format!("{}/{prog}", dir.trim_end_matches('/')))
        .collect()
}

fn null_terminated(strings: &[CString]) -> Vec<*const libc::c_char> {
    strings
        .iter()
        .map(|s| s.as_ptr())
        .chain(std::iter::once(std::ptr::null()))
        .collect()
}

/// Validates a request and builds its [`ChildPlan`]; `proxy` as in [`build_env`].
pub fn plan(req: &ExecRequest, proxy: &[(String, String)]) -> Result<ChildPlan, ToolError> {
    let env = build_env(proxy, &req.env)?;
    let search_path = env
        .iter()
        .find(|(k, _)| k == "PATH")
        .map_or("", |(_, v)| v.as_str());
    let (display, argv, candidates) = match &req.command {
        Command::Argv(args) => {
            let prog = args.first().ok_or_else(|| invalid("empty command"))?;
            if prog.is_empty() {
                return Err(invalid("empty program name"));
            }
            let argv = args
                .iter()
                .map(|a| cstring(a, "an argument"))
                .collect::<Result<Vec<_>, _>>()?;
            (prog.clone(), argv, path_candidates(prog, search_path))
        }
        Command::Shell(script) => (
            "/bin/sh".to_string(),
            vec![
                c"sh".to_owned(),
                c"-c".to_owned(),
                cstring(script, "the command")?,
            ],
            vec!["/bin/sh".to_string()],
        ),
    };
    let candidates = candidates
        .iter()
        .map(|c| cstring(c, "the program path"))
        .collect::<Result<Vec<_>, _>>()?;
    let envp = env
        .iter()
        .map(|(k, v)| cstring(&format!("{k}={v}"), "the environment"))
        .collect::<Result<Vec<_>, _>>()?;
    let cwd = cstring(&resolve_cwd(&req.cwd), "the working directory")?;
    let argv_ptrs = null_terminated(&argv);
    let envp_ptrs = null_terminated(&envp);
    Ok(ChildPlan {
        display,
        candidates,
        argv,
        argv_ptrs,
        envp,
        envp_ptrs,
        cwd,
    })
}

/// Runs in the forked child: never returns. Only raw system calls from here on.
/// Signals this process ignores, found once (in the parent, before any fork).
fn ignored_signals() -> &'static [libc::c_int] {
    static IGNORED: std::sync::OnceLock<Vec<libc::c_int>> = std::sync::OnceLock::new();
    IGNORED.get_or_init(|| {
        (1..=MAX_SIGNAL)
            .filter(|&s| s != libc::SIGKILL && s != libc::SIGSTOP && sys::is_ignored(s))
            .collect()
    })
}

fn child_main(plan: &ChildPlan, stdio: [RawFd; 3], report: RawFd, unblock: &sys::SigSet) -> ! {
    let (stage, err) = child_setup_and_exec(plan, stdio, report, unblock);
    let errno = err.raw_os_error().unwrap_or(libc::EIO);
    let mut msg = [0u8; 5];
    msg[0] = stage;
    msg[1..].copy_from_slice(&errno.to_le_bytes());
    let _ = sys::write_raw(report, &msg);
    sys::exit_immediately(127)
}

fn child_setup_and_exec(
    plan: &ChildPlan,
    stdio: [RawFd; 3],
    report: RawFd,
    unblock: &sys::SigSet,
) -> (u8, io::Error) {
    let setup = |r: io::Result<()>| r.map_err(|e| (STAGE_SETUP, e));
    let steps = || -> Result<(), (u8, io::Error)> {
        // Own session and process group: kill(-pid) reaches the command and what it starts.
        setup(sys::setsid())?;
        for (target, fd) in stdio.into_iter().enumerate() {
            setup(sys::dup2(fd, target as RawFd))?;
        }
        close_fds_except(report);
        // execve resets caught signals itself; only ignored ones (SIGPIPE, which the Rust
        // runtime ignores) would leak into the command.
        for &sig in ignored_signals() {
            let _ = sys::reset_signal(sig);
        }
        setup(sys::sigprocmask(libc::SIG_SETMASK, unblock))?;
        sys::chdir(&plan.cwd).map_err(|e| (STAGE_CHDIR, e))?;
        Ok(())
    };
    if let Err(failure) = steps() {
        return failure;
    }
    // The PATH search, as execvp does it: skip entries that do not have the program, remember
    // that one was not executable, stop on any other error.
    let mut saw_eacces = false;
    let mut last = io::Error::from_raw_os_error(libc::ENOENT);
    for path in &plan.candidates {
        let e = sys::execve(path, &plan.argv_ptrs, &plan.envp_ptrs);
        match e.raw_os_error() {
            Some(libc::ENOENT | libc::ENOTDIR | libc::ESTALE | libc::ENODEV | libc::ETIMEDOUT) => {}
            Some(libc::EACCES) => saw_eacces = true,
            _ => {
                last = e;
                break;
            }
        }
    }
    if saw_eacces && last.raw_os_error() == Some(libc::ENOENT) {
        last = io::Error::from_raw_os_error(libc::EACCES);
    }
    (STAGE_EXEC, last)
}

/// Closes every fd from 3 up except `keep` (the error pipe, close-on-exec).
fn close_fds_except(keep: RawFd) {
    let keep = keep.max(2) as libc::c_uint;
    let low = if keep > 3 {
        sys::close_range(3, keep - 1)
    } else {
        Ok(())
    };
    if low
        .and_then(|()| sys::close_range(keep + 1, libc::c_uint::MAX))
        .is_err()
    {
        // close_range missing (kernel < 5.9) or filtered: close one by one.
        let max = sys::nofile_limit().unwrap_or(1024).min(65_536) as RawFd;
        for fd in 3..max {
            if fd as libc::c_uint != keep {
                let _ = sys::close(fd);
            }
        }
    }
}

/// The error a failed child reported.
fn child_failure(plan: &ChildPlan, stage: u8, errno: i32) -> ToolError {
    let e = io::Error::from_raw_os_error(errno);
    let cwd = plan.cwd.to_string_lossy();
    match (stage, errno) {
        (STAGE_CHDIR, libc::ENOENT) => tool_error(
            ToolErrorKind::NotFound,
            format!("working directory not found: {cwd}"),
        ),
        (STAGE_CHDIR, _) => tool_error(
            crate::files::errno_kind(errno),
            format!("cannot enter working directory {cwd}: {}", describe(&e)),
        ),
        (STAGE_EXEC, libc::ENOENT) => tool_error(
            ToolErrorKind::NotFound,
            format!("command not found: {}", plan.display),
        ),
        (STAGE_EXEC, libc::EACCES | libc::ENOEXEC | libc::EPERM) => tool_error(
            ToolErrorKind::PermissionDenied,
            format!("command not executable: {}: {}", plan.display, describe(&e)),
        ),
        (STAGE_EXEC, _) => tool_error(
            ToolErrorKind::Io,
            format!("cannot run {}: {}", plan.display, describe(&e)),
        ),
        _ => tool_error(
            ToolErrorKind::Io,
            format!("cannot start {}: {}", plan.display, describe(&e)),
        ),
    }
}

fn start_error(plan: &ChildPlan, e: &io::Error) -> ToolError {
    tool_error(
        ToolErrorKind::Io,
        format!("cannot start {}: {}", plan.display, describe(e)),
    )
}

/// One output stream of a running command.
#[derive(Debug, Default)]
struct OutPipe {
    fd: Option<File>,
    /// Bytes not yet sent (≤ [`FLUSH_BYTES`]).
    buf: Vec<u8>,
    /// When the oldest byte of `buf` arrived.
    first: Option<Instant>,
    /// Bytes produced, forwarded or not.
    total: u64,
    /// Bytes dropped over the cap.
    dropped: u64,
}

/// A running command.
#[derive(Debug)]
pub struct Exec {
    /// Request id.
    pub id: u64,
    /// Pid of the command, also its process group id.
    pub pid: libc::pid_t,
    started: Instant,
    deadline: Option<Instant>,
    stdin: Option<File>,
    stdin_data: Vec<u8>,
    stdin_off: usize,
    out: [OutPipe; 2],
    cap: u64,
    forwarded: u64,
    exited: Option<(ExitKind, Instant)>,
    timed_out: bool,
    cancelled: bool,
    kill_stragglers: bool,
}

const STREAMS: [Stream; 2] = [Stream::Stdout, Stream::Stderr];

/// Which fd of an exec a poll entry is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExecFd {
    /// Its stdin (we write).
    Stdin,
    /// stdout (0) or stderr (1) (we read).
    Out(usize),
}

fn nonblocking_file(fd: OwnedFd) -> io::Result<File> {
    sys::set_nonblocking(fd.as_fd())?;
    Ok(File::from(fd))
}

impl Exec {
    /// Starts `req`. Fails (with nothing left running) when the request is invalid or the
    /// program cannot be executed.
    pub fn spawn(
        id: u64,
        req: ExecRequest,
        unblock: &sys::SigSet,
        proxy: &[(String, String)],
    ) -> Result<Exec, ToolError> {
        let plan = plan(&req, proxy)?;
        let err = |e: io::Error| start_error(&plan, &e);
        let (stdin_r, stdin_w) = sys::pipe().map_err(err)?;
        let (out_r, out_w) = sys::pipe().map_err(err)?;
        let (err_r, err_w) = sys::pipe().map_err(err)?;
        let (report_r, report_w) = sys::pipe().map_err(err)?;
        let started = Instant::now();
        let _ = ignored_signals();
        let pid = match sys::fork().map_err(err)? {
            sys::Fork::Child => child_main(
                &plan,
                [stdin_r.as_raw_fd(), out_w.as_raw_fd(), err_w.as_raw_fd()],
                report_w.as_raw_fd(),
                unblock,
            ),
            sys::Fork::Parent(pid) => pid,
        };
        drop((stdin_r, out_w, err_w, report_w));
        // The report pipe closes on a successful exec (close-on-exec) or carries 5 bytes.
        let mut report = File::from(report_r);
        let mut msg = [0u8; 5];
        let mut got = 0;
        while got < msg.len() {
            match report.read(&mut msg[got..]) {
                Ok(0) => break,
                Ok(n) => got += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => break,
            }
        }
        if got == msg.len() {
            // The child exits 127; the SIGCHLD loop reaps it as an unknown pid.
            let errno = i32::from_le_bytes([msg[1], msg[2], msg[3], msg[4]]);
            return Err(child_failure(&plan, msg[0], errno));
        }
        let mut exec = Exec {
            id,
            pid,
            started,
            deadline: (req.timeout_ms > 0).then(|| started + Duration::from_millis(req.timeout_ms)),
            stdin: None,
            stdin_data: Vec::new(),
            stdin_off: 0,
            out: Default::default(),
            cap: req.output_cap,
            forwarded: 0,
            exited: None,
            timed_out: false,
            cancelled: false,
            kill_stragglers: req.kill_stragglers,
        };
        // From here on failures only degrade I/O; the command runs and is reaped normally.
        if !req.stdin.is_empty() {
            if let Ok(f) = nonblocking_file(stdin_w) {
                exec.stdin = Some(f);
                exec.stdin_data = req.stdin;
                exec.write_stdin();
            }
        } else {
            drop(stdin_w);
        }
        exec.out[0].fd = nonblocking_file(out_r).ok();
        exec.out[1].fd = nonblocking_file(err_r).ok();
        Ok(exec)
    }

    /// The fds to poll: `(fd, events, which)`. Output is not polled under back-pressure.
    pub fn poll_fds(&self, read_output: bool) -> impl Iterator<Item = (RawFd, i16, ExecFd)> + '_ {
        let stdin = self
            .stdin
            .as_ref()
            .map(|f| (f.as_raw_fd(), libc::POLLOUT, ExecFd::Stdin));
        let outs = self.out.iter().enumerate().filter_map(move |(i, p)| {
            p.fd.as_ref()
                .filter(|_| read_output)
                .map(|f| (f.as_raw_fd(), libc::POLLIN, ExecFd::Out(i)))
        });
        stdin.into_iter().chain(outs)
    }

    /// Handles readiness of one of its fds.
    pub fn on_ready(&mut self, which: ExecFd, out: &mut impl Outbox, now: Instant) {
        match which {
            ExecFd::Stdin => self.write_stdin(),
            ExecFd::Out(s) => self.read_stream(s, out, now),
        }
    }

    /// Writes stdin until the pipe is full; closes it when all is written or the reader left.
    fn write_stdin(&mut self) {
        let Some(f) = self.stdin.as_mut() else {
            return;
        };
        loop {
            if self.stdin_off >= self.stdin_data.len() {
                self.close_stdin();
                return;
            }
            let end = (self.stdin_off + STDIN_CHUNK).min(self.stdin_data.len());
            match f.write(&self.stdin_data[self.stdin_off..end]) {
                Ok(n) => self.stdin_off += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                // EPIPE: the command does not read its stdin. Not an error of the exec.
                Err(_) => {
                    self.close_stdin();
                    return;
                }
            }
        }
    }

    fn close_stdin(&mut self) {
        self.stdin = None;
        self.stdin_data = Vec::new();
        self.stdin_off = 0;
    }

    /// Reads what stream `s` has (a bounded number of reads).
    fn read_stream(&mut self, s: usize, out: &mut impl Outbox, now: Instant) {
        let mut scratch = [0u8; READ_SCRATCH];
        for _ in 0..READS_PER_EVENT {
            let Some(f) = self.out[s].fd.as_mut() else {
                return;
            };
            match f.read(&mut scratch) {
                Ok(0) => {
                    self.out[s].fd = None;
                    return;
                }
                Ok(n) => self.accept(s, &scratch[..n], out, now),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(_) => {
                    self.out[s].fd = None;
                    return;
                }
            }
        }
    }

    /// Counts `data` on stream `s`, buffers what fits under the cap, sends full buffers.
    fn accept(&mut self, s: usize, data: &[u8], out: &mut impl Outbox, now: Instant) {
        let n = data.len() as u64;
        let take = n.min(self.cap.saturating_sub(self.forwarded)) as usize;
        self.forwarded += take as u64;
        self.out[s].total += n;
        self.out[s].dropped += n - take as u64;
        let mut rest = &data[..take];
        while !rest.is_empty() {
            let p = &mut self.out[s];
            let room = FLUSH_BYTES - p.buf.len();
            let (now_part, later) = rest.split_at(room.min(rest.len()));
            if p.buf.is_empty() {
                p.first = Some(now);
            }
            p.buf.extend_from_slice(now_part);
            if p.buf.len() >= FLUSH_BYTES {
                self.flush(s, out);
            }
            rest = later;
        }
    }

    /// Sends stream `s`'s buffer, if any.
    fn flush(&mut self, s: usize, out: &mut impl Outbox) {
        let p = &mut self.out[s];
        p.first = None;
        if !p.buf.is_empty() {
            let data = std::mem::take(&mut p.buf);
            out.send(WorkerMsg::Output {
                id: self.id,
                stream: STREAMS[s],
                data,
            });
        }
    }

    /// SIGKILLs the command's process group.
    fn kill_group(&self) {
        // ESRCH: the group is already gone.
        let _ = sys::kill_process_group(self.pid);
    }

    /// `Cancel`: kills the process group; the result says `cancelled`.
    pub fn cancel(&mut self) {
        self.cancelled = true;
        self.kill_group();
    }

    /// Kills the process group (worker shutdown).
    pub fn kill(&self) {
        self.kill_group();
    }

    /// The command (the process we forked) was reaped with `status`.
    pub fn on_exit(&mut self, status: libc::c_int, now: Instant, is_init: bool) {
        let exit = if libc::WIFSIGNALED(status) {
            ExitKind::Signal(libc::WTERMSIG(status))
        } else {
            ExitKind::Code(libc::WEXITSTATUS(status))
        };
        self.exited = Some((exit, now));
        self.deadline = None;
        self.close_stdin();
        if self.kill_stragglers {
            if is_init {
                // Pid 1 of the sandbox's pid namespace: every other process in it.
                let _ = sys::kill_all_as_init();
            } else {
                // On a host, never kill(-1): only the command's own group.
                self.kill_group();
            }
        }
    }

    /// Timers: timeout, flush delays, the drain grace after exit.
    pub fn tick(&mut self, out: &mut impl Outbox, now: Instant) {
        if self.deadline.is_some_and(|d| now >= d) {
            self.deadline = None;
            self.timed_out = true;
            self.kill_group();
        }
        if let Some((_, exited_at)) = self.exited {
            if now >= exited_at + DRAIN_GRACE && self.out.iter().any(|p| p.fd.is_some()) {
                // A background process holds the pipes: take what is there and stop.
                for s in 0..2 {
                    self.read_stream(s, out, now);
                    self.out[s].fd = None;
                }
            }
        }
        for s in 0..2 {
            if self.out[s].first.is_some_and(|t| now >= t + FLUSH_AFTER) {
                self.flush(s, out);
            }
        }
    }

    /// The next instant [`Self::tick`] has something to do.
    pub fn next_deadline(&self) -> Option<Instant> {
        let flushes = self
            .out
            .iter()
            .filter_map(|p| p.first.map(|t| t + FLUSH_AFTER));
        let grace = self
            .exited
            .filter(|_| self.out.iter().any(|p| p.fd.is_some()))
            .map(|(_, t)| t + DRAIN_GRACE);
        flushes.chain(self.deadline).chain(grace).min()
    }

    /// The command exited and its output is all read (or abandoned).
    pub fn is_complete(&self) -> bool {
        self.exited.is_some() && self.out.iter().all(|p| p.fd.is_none())
    }

    /// Sends the remaining output, the truncation markers and the response.
    pub fn finish(mut self, out: &mut impl Outbox) {
        let (exit, exited_at) = self.exited.unwrap_or((ExitKind::Code(-1), Instant::now()));
        for s in 0..2 {
            self.flush(s, out);
        }
        for (p, stream) in self.out.iter().zip(STREAMS) {
            if p.dropped > 0 {
                out.send(WorkerMsg::Output {
                    id: self.id,
                    stream,
                    data: truncation_marker(p.dropped).into_bytes(),
                });
            }
        }
        let result = ExecResult {
            exit,
            timed_out: self.timed_out,
            cancelled: self.cancelled,
            truncated: self.out.iter().any(|p| p.dropped > 0),
            stdout_bytes: self.out[0].total,
            stderr_bytes: self.out[1].total,
            duration_us: exited_at
                .saturating_duration_since(self.started)
                .as_micros() as u64,
        };
        out.send(WorkerMsg::Response {
            id: self.id,
            result: Ok(Reply::Exec(result)),
        });
    }
}

/// The last frame of a stream that went over the cap.
pub fn truncation_marker(omitted: u64) -> String {
    format!("\n[bulkhead: output truncated: {omitted} bytes omitted]\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(command: Command) -> ExecRequest {
        ExecRequest {
            command,
            cwd: String::new(),
            env: vec![],
            stdin: vec![],
            timeout_ms: 0,
            output_cap: 100,
            kill_stragglers: false,
        }
    }

    /// An exec that was never started, to exercise the bookkeeping alone.
    fn idle_exec(cap: u64) -> Exec {
        Exec {
            id: 7,
            pid: 0,
            started: Instant::now(),
            deadline: None,
            stdin: None,
            stdin_data: vec![],
            stdin_off: 0,
            out: Default::default(),
            cap,
            forwarded: 0,
            exited: None,
            timed_out: false,
            cancelled: false,
            kill_stragglers: false,
        }
    }

    #[test]
    fn env_is_the_allowlist_plus_the_request() {
        let env = build_env(
            &[],
            &[("HOME".into(), "/tmp".into()), ("FOO".into(), "1".into())],
        )
        .unwrap();
        assert_eq!(env[0].0, "PATH");
        assert!(env.contains(&("HOME".into(), "/tmp".into())));
        assert!(env.contains(&("TERM".into(), "dumb".into())));
        assert_eq!(env.last().unwrap(), &("FOO".to_string(), "1".to_string()));
        assert!(!env.iter().any(|(k, _)| k.to_lowercase().contains("proxy")));
        for bad in ["", "A=B", "A\0B"] {
            let e = build_env(&[], &[(bad.into(), "x".into())]).unwrap_err();
            assert_eq!(e.kind, ToolErrorKind::InvalidInput, "{bad:?}");
        }
        assert!(build_env(&[], &[("A".into(), "x\0".into())]).is_err());
    }

    #[test]
    fn egress_adds_the_proxy_variables_which_the_request_may_override() {
        let proxy = crate::egress::proxy_env();
        let env = build_env(&proxy, &[("https_proxy".into(), "http://other:1".into())]).unwrap();
        let get = |k: &str| env.iter().find(|(ek, _)| ek == k).map(|(_, v)| v.as_str());
        assert_eq!(get("HTTP_PROXY"), Some("http://127.0.0.1:3128"));
        assert_eq!(get("ALL_PROXY"), Some("http://127.0.0.1:3128"));
        assert_eq!(get("all_proxy"), Some("http://127.0.0.1:3128"));
        assert_eq!(get("NO_PROXY"), Some("localhost,127.0.0.1,::1"));
        assert_eq!(get("https_proxy"), Some("http://other:1"));
        assert_eq!(get("PATH"), Some(BASE_ENV[0].1));
        let p = plan(&req(Command::Argv(vec!["true".into()])), &proxy).unwrap();
        assert_eq!(p.envp_ptrs.len(), BASE_ENV.len() + proxy.len() + 1);
    }

    #[test]
    fn cwd_and_path_search() {
        assert_eq!(resolve_cwd(""), "/workspace");
        assert_eq!(resolve_cwd("src"), "/workspace/src");
        assert_eq!(resolve_cwd("/tmp"), "/tmp");
        assert_eq!(path_candidates("./x", "/bin"), vec!["./x"]);
        assert_eq!(
            path_candidates("ls", "/usr/bin/::/bin"),
            vec!["/usr/bin/ls", "./ls", "/bin/ls"]
        );
    }

    #[test]
    fn plans_argv_and_shell() {
        let p = plan(&req(Command::Argv(vec!["echo".into(), "hi".into()])), &[]).unwrap();
        assert_eq!(p.argv.len(), 2);
        assert_eq!(p.argv_ptrs.len(), 3);
        assert!(p.argv_ptrs[2].is_null());
        assert_eq!(p.envp_ptrs.len(), BASE_ENV.len() + 1);
        assert_eq!(p.candidates[0].to_str().unwrap(), "/usr/local/bin/echo");
        let p = plan(&req(Command::Shell("echo hi".into())), &[]).unwrap();
        assert_eq!(p.candidates, vec![c"/bin/sh".to_owned()]);
        assert_eq!(p.argv[1].to_str().unwrap(), "-c");
        assert!(plan(&req(Command::Argv(vec![])), &[]).is_err());
        assert!(plan(&req(Command::Argv(vec!["a\0".into()])), &[]).is_err());
        assert!(plan(&req(Command::Shell("a\0".into())), &[]).is_err());
    }

    #[test]
    fn output_is_batched_capped_and_marked() {
        let mut e = idle_exec(100_000);
        let mut sent: Vec<WorkerMsg> = Vec::new();
        let t0 = Instant::now();
        e.accept(0, &[b'a'; 10], &mut sent, t0);
        assert!(sent.is_empty());
        assert_eq!(e.next_deadline(), Some(t0 + FLUSH_AFTER));
        e.tick(&mut sent, t0 + Duration::from_millis(5));
        assert!(sent.is_empty());
        e.tick(&mut sent, t0 + FLUSH_AFTER);
        assert_eq!(sent.len(), 1);
        // A large burst goes out in FLUSH_BYTES frames, the rest is capped.
        e.accept(1, &vec![b'b'; 150_000], &mut sent, t0);
        let sizes: Vec<usize> = sent
            .iter()
            .map(|m| match m {
                WorkerMsg::Output { data, .. } => data.len(),
                _ => 0,
            })
            .collect();
        assert_eq!(sizes, vec![10, FLUSH_BYTES]);
        assert_eq!(e.forwarded, 100_000);
        assert_eq!(e.out[1].dropped, 50_010);
        e.exited = Some((ExitKind::Code(0), t0));
        assert!(e.is_complete());
        e.finish(&mut sent);
        let WorkerMsg::Output { data, stream, .. } = &sent[sent.len() - 2] else {
            panic!("no marker: {sent:?}");
        };
        assert_eq!(*stream, Stream::Stderr);
        assert_eq!(data, truncation_marker(50_010).as_bytes());
        let WorkerMsg::Response {
            result: Ok(Reply::Exec(r)),
            ..
        } = sent.last().unwrap()
        else {
            panic!("no response");
        };
        assert!(r.truncated);
        assert_eq!((r.stdout_bytes, r.stderr_bytes), (10, 150_000));
    }

    #[test]
    fn zero_cap_forwards_nothing() {
        let mut e = idle_exec(0);
        let mut sent: Vec<WorkerMsg> = Vec::new();
        e.accept(0, b"hello", &mut sent, Instant::now());
        assert_eq!(e.next_deadline(), None);
        assert_eq!(e.out[0].dropped, 5);
    }
}
