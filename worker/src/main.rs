//! `bulkhead-worker`: pid 1 of a sandbox. Executes tool requests from the controller.
//!
//! The launcher execs it with fd 3 = the controller socket, fds 0-2 = /dev/null, inside every
//! namespace and filter of the sandbox. It also runs outside one (tests): then it is not pid 1,
//! never calls `kill(-1)`, and becomes a child subreaper so it still reaps what it started.
//!
//! 1. startup: every signal disposition default and the mask empty (SIGPIPE then ignored),
//!    take fd 3 (close-on-exec) and, when the launcher left one, the egress channel
//!    on fd 5 (then listen on `127.0.0.1:3128`, see [`egress`]), read the attestation (before
//!    step 2: the landlock probe needs a dumpable process), become non-dumpable, block
//!    SIGCHLD into a signalfd, send `Hello`;
//! 2. loop on `poll(2)`: the socket, the signalfd, every command's pipes, the egress channel
//!    and listener; the timeout is the nearest exec deadline or output flush;
//! 3. on `Shutdown`, end of file or a socket error: kill everything, reap, exit 0; on a
//!    malformed frame: the same, exit 1.
//!
//! Single-threaded and synchronous; no buffer is allocated before it is needed.

mod attest;
mod conn;
mod egress;
mod exec;
mod files;
mod sys;

use std::fs::File;
use std::io::{self, Read};
use std::os::fd::{AsFd, AsRawFd, IntoRawFd};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use bulkhead_shared::{
    ControllerMsg, FrameError, MethodKind, RateLimiter, Reply, Request, ToolErrorKind, WorkerMsg,
    DEFAULT_RATE_PER_SEC, PROTOCOL_VERSION, PROXY_PORT,
};

use conn::{Conn, Outbox};
use egress::{Egress, EgressFd};
use exec::{Exec, ExecFd, MAX_CONCURRENT_EXECS};
use files::tool_error;

/// The fd the launcher leaves the controller socket on.
const SOCKET_FD: i32 = 3;
/// Above this many queued outbound bytes, command output is not read (back-pressure)…
const OUT_HIGH_WATER: usize = 512 * 1024;
/// …and above this, neither are new requests.
const IN_HIGH_WATER: usize = 2 * 1024 * 1024;
/// How long the exit path waits to reap and to flush.
const EXIT_GRACE: Duration = Duration::from_secs(1);

/// Why the loop ended.
#[derive(Debug)]
enum Exit {
    /// `Shutdown`, end of file, or the socket failed: exit 0.
    Clean,
    /// The controller broke the protocol: exit 1.
    Protocol(String),
}

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(msg) => {
            eprintln!("bulkhead-worker: {msg}");
            ExitCode::from(1)
        }
    }
}

/// Startup, loop, exit. `Err` carries the reason for exit code 1.
fn run() -> Result<(), String> {
    // Whoever started us (the launcher resets them, a test or a hand may not): no inherited
    // ignored or blocked signal. Then SIGPIPE ignored again, as Rust's runtime had it: a
    // write to a command's closed stdin is an error, not the worker's death.
    sys::reset_all_signals().map_err(|e| format!("cannot reset signal dispositions: {e}"))?;
    sys::ignore_signal(libc::SIGPIPE).map_err(|e| format!("cannot ignore SIGPIPE: {e}"))?;
    let sock = sys::take_unix_stream(SOCKET_FD)
        .map_err(|e| format!("no controller socket on fd {SOCKET_FD}: {e}"))?;
    sys::set_cloexec(sock.as_fd()).map_err(|e| format!("cannot set close-on-exec on fd 3: {e}"))?;
    // Before any other fd is created, so nothing of ours can sit on fd 5 by then.
    let egress_channel = Egress::take_channel();
    ensure_std_fds();
    let egress = egress_channel.and_then(|chan| {
        Egress::proxy(chan, Instant::now())
            .map_err(|e| {
                // Reported through the attestation (no listener): the controller refuses
                // the sandbox.
                eprintln!("bulkhead-worker: egress proxy on 127.0.0.1:{PROXY_PORT}: {e}");
            })
            .ok()
    });

    let mut attestation = attest::gather();
    attestation.egress_proxy = egress.is_some();
    sys::set_not_dumpable().map_err(|e| format!("cannot clear the dumpable flag: {e}"))?;
    let is_init = std::process::id() == 1;
    if !is_init {
        // Outside a pid namespace orphans would go to the host's init; take them ourselves.
        let _ = sys::set_child_subreaper();
    }

    let mut sigchld = sys::SigSet::empty().map_err(|e| format!("sigemptyset: {e}"))?;
    sigchld
        .add(libc::SIGCHLD)
        .map_err(|e| format!("sigaddset: {e}"))?;
    sys::sigprocmask(libc::SIG_BLOCK, &sigchld)
        .map_err(|e| format!("cannot block SIGCHLD: {e}"))?;
    let sigfd = File::from(sys::signalfd(&sigchld).map_err(|e| format!("signalfd: {e}"))?);
    let unblock = sys::SigSet::empty().map_err(|e| format!("sigemptyset: {e}"))?;

    let mut conn = Conn::new(sock).map_err(|e| format!("cannot configure the socket: {e}"))?;
    conn.send(WorkerMsg::Hello {
        version: PROTOCOL_VERSION,
        attestation,
    });

    let proxy_env = if egress.is_some() {
        egress::proxy_env()
    } else {
        Vec::new()
    };
    let mut worker = Worker {
        conn,
        sigfd,
        unblock,
        execs: Vec::new(),
        limiter: RateLimiter::new(DEFAULT_RATE_PER_SEC),
        is_init,
        egress,
        proxy_env,
    };
    let exit = worker.run();
    worker.kill_everything();
    match exit {
        Exit::Clean => {
            worker.conn.flush_until(Instant::now() + EXIT_GRACE);
            Ok(())
        }
        Exit::Protocol(msg) => Err(msg),
    }
}

/// Makes sure fds 0-2 are open (on /dev/null), so no pipe or socket we open lands on them.
fn ensure_std_fds() {
    for fd in 0..3 {
        if sys::fd_is_open(fd).is_err() {
            if let Ok(f) = File::options().read(true).write(true).open("/dev/null") {
                // The lowest free fd is `fd`; keep it open for the life of the process.
                let _ = f.into_raw_fd();
            }
        }
    }
}

/// Who a poll entry is for.
#[derive(Debug, Clone, Copy)]
enum Source {
    Socket,
    Signal,
    Exec(usize, ExecFd),
    Egress(EgressFd),
}

#[derive(Debug)]
struct Worker {
    conn: Conn,
    sigfd: File,
    /// The empty signal mask children install before exec.
    unblock: sys::SigSet,
    execs: Vec<Exec>,
    limiter: RateLimiter,
    is_init: bool,
    /// The egress proxy, while its channel to the controller lasts.
    egress: Option<Egress>,
    /// What every command's environment gets for the proxy (empty without egress).
    proxy_env: Vec<(String, String)>,
}

impl Worker {
    fn run(&mut self) -> Exit {
        let mut fds: Vec<libc::pollfd> = Vec::new();
        let mut sources: Vec<Source> = Vec::new();
        loop {
            // Frames already received: new ones, or ones left while the send queue was long.
            if let Some(exit) = self.handle_frames() {
                return exit;
            }
            if let Err(e) = self.conn.flush() {
                return disconnected(&e);
            }
            let pending = self.conn.pending();
            fds.clear();
            sources.clear();
            let mut sock_events = 0;
            if pending < IN_HIGH_WATER {
                sock_events |= libc::POLLIN;
            }
            if pending > 0 {
                sock_events |= libc::POLLOUT;
            }
            fds.push(pollfd(self.conn.raw_fd(), sock_events));
            sources.push(Source::Socket);
            fds.push(pollfd(self.sigfd.as_raw_fd(), libc::POLLIN));
            sources.push(Source::Signal);
            let read_output = pending < OUT_HIGH_WATER;
            for (i, e) in self.execs.iter().enumerate() {
                for (fd, events, which) in e.poll_fds(read_output) {
                    fds.push(pollfd(fd, events));
                    sources.push(Source::Exec(i, which));
                }
            }
            let now = Instant::now();
            if let Some(eg) = &self.egress {
                for (fd, events, which) in eg.poll_fds(now) {
                    fds.push(pollfd(fd, events));
                    sources.push(Source::Egress(which));
                }
            }

            let timeout = self
                .execs
                .iter()
                .filter_map(Exec::next_deadline)
                .chain(self.egress.as_ref().and_then(|eg| eg.next_deadline(now)))
                .min()
                .map_or(-1, |d| {
                    let wait = d.saturating_duration_since(Instant::now());
                    // Round up, so we do not wake just before the deadline and spin.
                    wait.as_micros().div_ceil(1000).min(i32::MAX as u128) as libc::c_int
                });
            if let Err(e) = sys::poll(&mut fds, timeout) {
                return Exit::Protocol(format!("poll failed: {e}"));
            }

            let now = Instant::now();
            let mut socket_ready = false;
            for (pfd, src) in fds.iter().zip(&sources) {
                if pfd.revents == 0 {
                    continue;
                }
                match *src {
                    // POLLOUT alone is handled by the flush at the top of the loop.
                    Source::Socket => {
                        socket_ready =
                            pfd.revents & (libc::POLLIN | libc::POLLHUP | libc::POLLERR) != 0
                    }
                    Source::Signal => self.reap(now),
                    Source::Exec(i, which) => self.execs[i].on_ready(which, &mut self.conn, now),
                    Source::Egress(which) => {
                        if let Some(eg) = self.egress.as_mut() {
                            if !eg.on_ready(which, pfd.revents, now) {
                                // The channel is gone: the listener closes with it.
                                self.egress = None;
                            }
                        }
                    }
                }
            }
            // Requests are handled at the top of the loop: they may add or cancel execs,
            // which would move the indices above.
            if socket_ready {
                match self.conn.fill() {
                    Ok(true) => {}
                    Ok(false) => return Exit::Clean,
                    Err(e) => return disconnected(&e),
                }
            }
            let now = Instant::now();
            for e in &mut self.execs {
                e.tick(&mut self.conn, now);
            }
            let mut i = 0;
            while i < self.execs.len() {
                if self.execs[i].is_complete() {
                    self.execs.swap_remove(i).finish(&mut self.conn);
                } else {
                    i += 1;
                }
            }
        }
    }

    /// Drains the signalfd and reaps every child that has exited (ours or reparented).
    fn reap(&mut self, now: Instant) {
        let mut buf = [0u8; std::mem::size_of::<libc::signalfd_siginfo>() * 4];
        while matches!((&self.sigfd).read(&mut buf), Ok(n) if n > 0) {}
        loop {
            match sys::wait_any_nohang() {
                Ok(Some((pid, status))) => {
                    if let Some(e) = self.execs.iter_mut().find(|e| e.pid == pid) {
                        e.on_exit(status, now, self.is_init);
                    }
                }
                Ok(None) => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => return, // ECHILD: no children left.
            }
        }
    }

    /// Handles the complete frames received, until the send queue reaches
    /// [`IN_HIGH_WATER`] (the rest wait in the buffer: each request may queue up to a frame).
    fn handle_frames(&mut self) -> Option<Exit> {
        while self.conn.pending() < IN_HIGH_WATER {
            match self.conn.next_frame() {
                Ok(Some(msg)) => {
                    if let Some(exit) = self.handle(msg) {
                        return Some(exit);
                    }
                }
                Ok(None) => return None,
                Err(e @ (FrameError::Disconnected | FrameError::Io(_))) => {
                    eprintln!("bulkhead-worker: {e}");
                    return Some(Exit::Clean);
                }
                Err(e) => return Some(Exit::Protocol(e.to_string())),
            }
        }
        None
    }

    fn handle(&mut self, msg: ControllerMsg) -> Option<Exit> {
        match msg {
            ControllerMsg::Request { id, body } => {
                let kind = body.kind();
                if !self.limiter.allow(kind) {
                    let err = tool_error(
                        ToolErrorKind::RateLimited,
                        format!(
                            "rate limit exceeded: at most {DEFAULT_RATE_PER_SEC} {} requests \
                             per second",
                            method_name(kind)
                        ),
                    );
                    self.conn.send(WorkerMsg::Response {
                        id,
                        result: Err(err),
                    });
                    return None;
                }
                self.request(id, body);
                None
            }
            ControllerMsg::Cancel { id } => {
                if self.limiter.allow(MethodKind::Cancel) {
                    if let Some(e) = self.execs.iter_mut().find(|e| e.id == id) {
                        e.cancel();
                    }
                }
                None
            }
            ControllerMsg::Shutdown => Some(Exit::Clean),
            ControllerMsg::Launch(..) => Some(Exit::Protocol(
                "unexpected launch spec: expected a request, cancel or shutdown".to_string(),
            )),
        }
    }

    fn request(&mut self, id: u64, body: Request) {
        let result = match body {
            Request::Exec(req) => {
                if self.execs.iter().any(|e| e.id == id) {
                    Err(tool_error(
                        ToolErrorKind::InvalidInput,
                        format!("request id {id} is already running"),
                    ))
                } else if self.execs.len() >= MAX_CONCURRENT_EXECS {
                    Err(tool_error(
                        ToolErrorKind::RateLimited,
                        format!(
                            "too many commands running ({MAX_CONCURRENT_EXECS} at most); \
                             wait for one to finish or cancel one"
                        ),
                    ))
                } else {
                    match Exec::spawn(id, req, &self.unblock, &self.proxy_env) {
                        Ok(exec) => {
                            self.execs.push(exec);
                            return; // answered when it completes
                        }
                        Err(e) => Err(e),
                    }
                }
            }
            Request::Read {
                path,
                offset,
                limit,
            } => files::read(&path, offset, limit).map(Reply::Read),
            Request::Write {
                path,
                data,
                mode,
                create_parents,
            } => {
                files::write(&path, &data, mode, create_parents).map(|bytes| Reply::Write { bytes })
            }
            Request::Edit {
                path,
                old,
                new,
                replace_all,
            } => files::edit(&path, &old, &new, replace_all)
                .map(|replacements| Reply::Edit { replacements }),
            Request::Ls { path } => {
                files::ls(&path).map(|(entries, truncated)| Reply::Ls { entries, truncated })
            }
            Request::Stat { path } => files::stat(&path).map(Reply::Stat),
            Request::Ping => Ok(Reply::Pong),
        };
        self.conn.send(WorkerMsg::Response { id, result });
    }

    /// Kills every command (`kill(-1)` as pid 1, else each process group and then every
    /// child we have, orphans included) and reaps for up to [`EXIT_GRACE`].
    fn kill_everything(&mut self) {
        if self.is_init {
            let _ = sys::kill_all_as_init();
        }
        for e in &self.execs {
            e.kill();
        }
        let deadline = Instant::now() + EXIT_GRACE;
        loop {
            if !self.is_init {
                // Daemons left by finished commands were reparented to us (subreaper). Each
                // round kills our current children; their orphans become ours for the next.
                for pid in own_children() {
                    let _ = sys::kill_unreaped_child(pid);
                }
            }
            loop {
                match sys::wait_any_nohang() {
                    Ok(Some(_)) => {}
                    Ok(None) => break,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(_) => return, // ECHILD: nothing left.
                }
            }
            if Instant::now() >= deadline {
                return;
            }
            std::thread::sleep(Duration::from_millis(2));
        }
    }
}

/// Pids of our children that have not been reaped (`/proc/self/task/<tid>/children`; the
/// worker has one thread). Empty when the kernel does not offer the file.
fn own_children() -> Vec<libc::pid_t> {
    let path = format!("/proc/self/task/{}/children", std::process::id());
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .split_whitespace()
        .filter_map(|p| p.parse().ok())
        .collect()
}

/// End of file or a transport error on the socket: the controller is gone.
fn disconnected(e: &io::Error) -> Exit {
    if e.kind() != io::ErrorKind::BrokenPipe && e.kind() != io::ErrorKind::ConnectionReset {
        eprintln!("bulkhead-worker: controller socket: {e}");
    }
    Exit::Clean
}

fn pollfd(fd: i32, events: i16) -> libc::pollfd {
    libc::pollfd {
        fd,
        events,
        revents: 0,
    }
}

fn method_name(kind: MethodKind) -> &'static str {
    match kind {
        MethodKind::Exec => "exec",
        MethodKind::Read => "read",
        MethodKind::Write => "write",
        MethodKind::Edit => "edit",
        MethodKind::Ls => "ls",
        MethodKind::Stat => "stat",
        MethodKind::Ping => "ping",
        MethodKind::Cancel => "cancel",
        MethodKind::Output => "output",
        MethodKind::Response => "response",
    }
}
