//! `bulkhead-worker` run for real, outside a sandbox: not pid 1, so it must never `kill(-1)`;
//! it becomes a child subreaper and kills process groups only.
//!
//! Relative paths resolve under `/workspace`, which the host does not have: every test works
//! with absolute paths in its own temp dir and sets `cwd` to it.

use std::io::Write;
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::fs::{symlink, MetadataExt, PermissionsExt};
use std::os::unix::net::UnixStream;
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Child, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};
use std::{fs, thread};

use bulkhead_shared::{
    Attestation, Command, ControllerEnd, ExecRequest, ExecResult, ExitKind, FileKind, FrameError,
    LaunchSpec, Limits, Reply, Request, Stream, ToolError, ToolErrorKind, WorkerMsg,
    PROTOCOL_VERSION,
};

const RECV_TIMEOUT: Duration = Duration::from_secs(20);

// ---------------------------------------------------------------------------------------------
// harness

/// A fresh directory, removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new(tag: &str) -> TempDir {
        static N: AtomicU64 = AtomicU64::new(0);
        let p = std::env::temp_dir().join(format!(
            "bulkhead-worker-{tag}-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = fs::remove_dir_all(&p);
        fs::create_dir_all(&p).unwrap();
        TempDir(p)
    }

    fn join(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }

    /// `name` inside the dir, as the string a request carries.
    fn path(&self, name: &str) -> String {
        self.join(name).to_str().unwrap().to_string()
    }

    fn dir(&self) -> String {
        self.0.to_str().unwrap().to_string()
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

/// Makes `fd` the child's fd 3, inheritable. Runs between fork and exec: raw calls only.
fn install_as_fd3(fd: RawFd) -> std::io::Result<()> {
    if fd == 3 {
        // SAFETY: F_SETFD with 0 only clears close-on-exec on fd 3, which is open.
        if unsafe { libc::fcntl(3, libc::F_SETFD, 0) } == -1 {
            return Err(std::io::Error::last_os_error());
        }
        return Ok(());
    }
    // SAFETY: dup2 only edits the (forked child's) descriptor table; the new fd 3 lacks
    // close-on-exec, so the worker inherits it.
    if unsafe { libc::dup2(fd, 3) } == -1 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// Closes fd 3 in a forked child, whatever the harness left there.
fn close_fd3() -> std::io::Result<()> {
    // SAFETY: the forked child owns its fd 3 (if any) and never uses it again.
    unsafe { libc::close(3) };
    Ok(())
}

struct Worker {
    child: Child,
    ctl: ControllerEnd,
    hello: Attestation,
    dir: TempDir,
}

impl Worker {
    fn start(tag: &str) -> Worker {
        Worker::start_under(tag, &[])
    }

    /// Starts the worker as the last argument of `wrapper` (e.g. `unshare … --`).
    fn start_under(tag: &str, wrapper: &[&str]) -> Worker {
        let (ours, theirs) = UnixStream::pair().unwrap();
        let fd = theirs.as_raw_fd();
        let worker = env!("CARGO_BIN_EXE_bulkhead-worker");
        let mut cmd = match wrapper.split_first() {
            None => std::process::Command::new(worker),
            Some((prog, args)) => {
                let mut c = std::process::Command::new(prog);
                c.args(args).arg(worker);
                c
            }
        };
        cmd.stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .env_clear();
        // SAFETY: the closure only calls dup2/fcntl, which are async-signal-safe.
        unsafe {
            cmd.pre_exec(move || install_as_fd3(fd));
        }
        let child = cmd.spawn().expect("spawn bulkhead-worker");
        drop(theirs);
        ours.set_read_timeout(Some(RECV_TIMEOUT)).unwrap();
        let mut ctl = ControllerEnd::new(ours).unwrap();
        let hello = match ctl.recv().expect("hello") {
            WorkerMsg::Hello {
                version,
                attestation,
            } => {
                assert_eq!(version, PROTOCOL_VERSION);
                attestation
            }
            other => panic!("expected Hello, got {other:?}"),
        };
        Worker {
            child,
            ctl,
            hello,
            dir: TempDir::new(tag),
        }
    }

    fn recv(&mut self) -> WorkerMsg {
        self.ctl.recv().expect("message from the worker")
    }

    /// One request, its answer (skipping nothing: only non-exec requests use this).
    fn call(&mut self, body: Request) -> Result<Reply, ToolError> {
        self.ctl.request(1, &body).unwrap();
        match self.recv() {
            WorkerMsg::Response { id: 1, result } => result,
            other => panic!("expected a response, got {other:?}"),
        }
    }

    /// An exec request with the temp dir as cwd and a 1 MiB output cap.
    fn req(&self, command: Command) -> ExecRequest {
        ExecRequest {
            command,
            cwd: self.dir.dir(),
            env: vec![],
            stdin: vec![],
            timeout_ms: 0,
            output_cap: 1 << 20,
            kill_stragglers: false,
        }
    }

    /// Sends an exec and collects everything up to its response.
    fn exec(&mut self, id: u64, req: ExecRequest) -> Run {
        self.ctl.request_exec(id, req).unwrap();
        self.collect(id)
    }

    fn collect(&mut self, id: u64) -> Run {
        let mut run = Run::default();
        loop {
            match self.recv() {
                WorkerMsg::Output {
                    id: oid,
                    stream,
                    data,
                } => {
                    assert_eq!(oid, id);
                    run.first_output_at.get_or_insert_with(Instant::now);
                    run.frames.push((stream, data.clone()));
                    match stream {
                        Stream::Stdout => run.stdout.extend_from_slice(&data),
                        Stream::Stderr => run.stderr.extend_from_slice(&data),
                    }
                }
                WorkerMsg::Response { id: rid, result } => {
                    assert_eq!(rid, id);
                    run.response_at = Some(Instant::now());
                    run.result = Some(result.map(|r| match r {
                        Reply::Exec(x) => x,
                        other => panic!("expected an exec result, got {other:?}"),
                    }));
                    return run;
                }
                other => panic!("unexpected {other:?}"),
            }
        }
    }

    /// Waits for the worker to exit; its exit code.
    fn wait_exit(&mut self) -> i32 {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status.code().expect("worker killed by a signal");
            }
            assert!(Instant::now() < deadline, "worker did not exit");
            thread::sleep(Duration::from_millis(10));
        }
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[derive(Debug, Default)]
struct Run {
    stdout: Vec<u8>,
    stderr: Vec<u8>,
    frames: Vec<(Stream, Vec<u8>)>,
    result: Option<Result<ExecResult, ToolError>>,
    first_output_at: Option<Instant>,
    response_at: Option<Instant>,
}

impl Run {
    fn ok(&self) -> &ExecResult {
        match self.result.as_ref().unwrap() {
            Ok(r) => r,
            Err(e) => panic!("exec failed: {e:?}"),
        }
    }

    fn err(&self) -> &ToolError {
        match self.result.as_ref().unwrap() {
            Ok(r) => panic!("exec succeeded: {r:?}"),
            Err(e) => e,
        }
    }

    fn stdout(&self) -> String {
        String::from_utf8_lossy(&self.stdout).into_owned()
    }
}

fn sh(script: &str) -> Command {
    Command::Shell(script.to_string())
}

fn argv(args: &[&str]) -> Command {
    Command::Argv(args.iter().map(|s| s.to_string()).collect())
}

/// Whether `pid` exists and is not a zombie.
fn alive(pid: i32) -> bool {
    let Ok(stat) = fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return false;
    };
    let state = stat
        .rsplit_once(')')
        .and_then(|(_, rest)| rest.trim_start().chars().next());
    !matches!(state, Some('Z' | 'X') | None)
}

/// Waits up to 3 s for `pid` to be gone.
fn dies(pid: i32) -> bool {
    let deadline = Instant::now() + Duration::from_secs(3);
    while Instant::now() < deadline {
        if !alive(pid) {
            return true;
        }
        thread::sleep(Duration::from_millis(10));
    }
    false
}

/// First line of `out` as a pid.
fn pid_line(out: &str) -> i32 {
    out.lines().next().unwrap().trim().parse().unwrap()
}

fn status_field(name: &str) -> String {
    let status = fs::read_to_string("/proc/self/status").unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix(&format!("{name}:")))
        .unwrap()
        .split_whitespace()
        .next()
        .unwrap()
        .to_string()
}

fn ns_inode(name: &str) -> u64 {
    let t = fs::read_link(format!("/proc/self/ns/{name}")).unwrap();
    let t = t.to_str().unwrap();
    t[t.find('[').unwrap() + 1..t.len() - 1].parse().unwrap()
}

// ---------------------------------------------------------------------------------------------
// startup

#[test]
fn hello_attests_what_the_worker_sees() {
    let w = Worker::start("hello");
    let a = &w.hello;
    assert_eq!(
        a.pid,
        w.child.id(),
        "outside a pid namespace the pid is the host pid"
    );
    assert_eq!(a.uid.to_string(), status_field("Uid"));
    assert_eq!(a.gid.to_string(), status_field("Gid"));
    assert_eq!(a.no_new_privs, status_field("NoNewPrivs") == "1");
    assert_eq!(a.seccomp_mode.to_string(), status_field("Seccomp"));
    assert_eq!(
        a.cap_bnd,
        u64::from_str_radix(&status_field("CapBnd"), 16).unwrap()
    );
    assert_eq!(a.ns.user, ns_inode("user"));
    assert_eq!(a.ns.pid, ns_inode("pid"));
    assert_eq!(a.ns.net, ns_inode("net"));
    assert_ne!(a.ns.mnt, 0);
    assert!(!a.uid_map.trim().is_empty());
    assert!(a.interfaces.iter().any(|i| i == "lo"), "{:?}", a.interfaces);
    assert!(!a.landlock_enforced, "no landlock outside a sandbox");
    assert_ne!(a.landlock_abi, 0);
}

#[test]
fn the_socket_is_not_inherited_by_commands() {
    let mut w = Worker::start("fds");
    let run = w.exec(1, w.req(argv(&["ls", "-l", "/proc/self/fd"])));
    assert_eq!(run.ok().exit, ExitKind::Code(0));
    let out = run.stdout();
    let fds: Vec<&str> = out.lines().filter(|l| l.contains(" -> ")).collect();
    assert!(fds.len() <= 4, "only 0, 1, 2 and ls's own dir fd: {out}");
    assert!(!out.contains("socket:"), "{out}");
    for l in &fds {
        let fd: u32 = l
            .split(" -> ")
            .next()
            .unwrap()
            .rsplit(' ')
            .next()
            .unwrap()
            .parse()
            .unwrap();
        assert!(fd <= 2 || l.contains("/proc/"), "unexpected fd: {l}");
    }
}

// ---------------------------------------------------------------------------------------------
// exec

#[test]
fn exec_output_exit_codes_and_signals() {
    let mut w = Worker::start("exec");
    let run = w.exec(1, w.req(argv(&["echo", "hello", "world"])));
    assert_eq!(run.stdout(), "hello world\n");
    let r = run.ok();
    assert_eq!(r.exit, ExitKind::Code(0));
    assert_eq!((r.stdout_bytes, r.stderr_bytes), (12, 0));
    assert!(!r.timed_out && !r.cancelled && !r.truncated);

    let run = w.exec(2, w.req(sh("echo out; echo err >&2; exit 3")));
    assert_eq!(run.stdout(), "out\n");
    assert_eq!(run.stderr, b"err\n");
    assert_eq!(run.ok().exit, ExitKind::Code(3));
    assert_eq!(run.ok().stderr_bytes, 4);

    let run = w.exec(3, w.req(sh("kill -9 $$")));
    assert_eq!(run.ok().exit, ExitKind::Signal(9));

    // The command runs in the requested cwd, in its own session.
    let run = w.exec(
        4,
        w.req(sh(
            "pwd; echo $$; ps -o sid= -p $$ 2>/dev/null || cut -d' ' -f6 /proc/$$/stat",
        )),
    );
    let out = run.stdout();
    let mut lines = out.lines();
    assert_eq!(lines.next().unwrap(), w.dir.dir());
    let pid = lines.next().unwrap().trim();
    assert_eq!(
        lines.next().unwrap().trim(),
        pid,
        "the command leads its own session"
    );

    // SIGPIPE is back to its default in commands (Rust ignores it in the worker).
    let run = w.exec(5, w.req(sh("grep SigIgn /proc/self/status")));
    let ign = run.stdout();
    let mask = u64::from_str_radix(ign.split_whitespace().nth(1).unwrap(), 16).unwrap();
    assert_eq!(mask & (1 << (libc::SIGPIPE - 1)), 0, "{ign}");
}

#[test]
fn exec_stdin_is_fed_without_blocking_the_loop() {
    let mut w = Worker::start("stdin");
    let data: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
    let mut req = w.req(argv(&["cat"]));
    req.stdin = data.clone();
    let run = w.exec(1, req);
    assert_eq!(run.ok().exit, ExitKind::Code(0));
    assert_eq!(run.stdout.len(), data.len());
    assert!(run.stdout == data);
    // A command that ignores its stdin does not break anything.
    let mut req = w.req(sh("exit 0"));
    req.stdin = vec![b'x'; 900_000];
    assert_eq!(w.exec(2, req).ok().exit, ExitKind::Code(0));
    // No stdin: immediate end of file.
    assert_eq!(w.exec(3, w.req(argv(&["cat"]))).stdout, b"");
}

#[test]
fn exec_environment_is_an_allowlist_plus_the_request() {
    let mut w = Worker::start("env");
    let mut req = w.req(argv(&["env"]));
    req.env = vec![
        ("FOO".into(), "bar".into()),
        ("TERM".into(), "xterm".into()),
    ];
    let run = w.exec(1, req);
    let mut vars: Vec<String> = run.stdout().lines().map(String::from).collect();
    vars.sort();
    assert_eq!(
        vars,
        [
            "FOO=bar",
            "HOME=/workspace",
            "LANG=C.UTF-8",
            "PATH=/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin",
            "TERM=xterm",
            "USER=sandbox",
        ]
    );
    for bad in ["", "A=B", "A\0B"] {
        let mut req = w.req(argv(&["env"]));
        req.env = vec![(bad.into(), "x".into())];
        assert_eq!(
            w.exec(2, req).err().kind,
            ToolErrorKind::InvalidInput,
            "{bad:?}"
        );
    }
}

#[test]
fn exec_output_streams_before_the_response_and_is_batched() {
    let mut w = Worker::start("stream");
    let run = w.exec(1, w.req(sh("echo first; sleep 0.3; echo second")));
    assert_eq!(run.frames[0], (Stream::Stdout, b"first\n".to_vec()));
    assert_eq!(run.stdout(), "first\nsecond\n");
    let ahead = run.response_at.unwrap() - run.first_output_at.unwrap();
    assert!(
        ahead >= Duration::from_millis(200),
        "first output only {ahead:?} ahead"
    );

    // A chatty command: thousands of small writes, few frames.
    let run = w.exec(
        2,
        w.req(sh(
            "i=0; while [ $i -lt 5000 ]; do echo line $i; i=$((i+1)); done",
        )),
    );
    assert_eq!(run.stdout().lines().count(), 5000);
    assert!(
        run.frames.len() < 500,
        "{} frames for 5000 lines",
        run.frames.len()
    );
    assert!(run.frames.iter().all(|(_, d)| d.len() <= 64 * 1024));

    // Bulk output goes in 64 KiB frames.
    let run = w.exec(3, w.req(argv(&["head", "-c", "1000000", "/dev/zero"])));
    assert_eq!(run.stdout.len(), 1_000_000);
    assert!(run.frames.len() <= 40, "{} frames", run.frames.len());
}

#[test]
fn exec_output_cap_drops_the_rest_and_marks_it() {
    let mut w = Worker::start("cap");
    let mut req = w.req(argv(&["head", "-c", "100000", "/dev/zero"]));
    req.output_cap = 1000;
    let run = w.exec(1, req);
    let r = run.ok();
    assert!(r.truncated);
    assert_eq!(r.stdout_bytes, 100_000);
    let marker = b"\n[bulkhead: output truncated: 99000 bytes omitted]\n";
    assert_eq!(run.stdout.len(), 1000 + marker.len());
    assert!(run.stdout[..1000].iter().all(|&b| b == 0));
    assert_eq!(&run.stdout[1000..], marker);
    assert_eq!(
        run.frames.last().unwrap(),
        &(Stream::Stdout, marker.to_vec())
    );

    // The cap is shared by both streams.
    let mut req = w.req(sh("printf 0123456789; printf abcdefghij >&2"));
    req.output_cap = 15;
    let run = w.exec(2, req);
    assert_eq!(run.stdout(), "0123456789");
    assert!(run
        .stderr
        .starts_with(b"abcde\n[bulkhead: output truncated: 5 bytes omitted]"));
}

#[test]
fn exec_timeout_kills_the_whole_process_group() {
    let mut w = Worker::start("timeout");
    let mut req = w.req(sh("sleep 30 & echo $!; sleep 30"));
    req.timeout_ms = 400;
    let t0 = Instant::now();
    let run = w.exec(1, req);
    assert!(t0.elapsed() < Duration::from_secs(5));
    let r = run.ok();
    assert!(r.timed_out);
    assert_eq!(r.exit, ExitKind::Signal(libc::SIGKILL));
    assert!(r.duration_us >= 400_000);
    let background = pid_line(&run.stdout());
    assert!(
        dies(background),
        "background sleep {background} survived the timeout"
    );
}

#[test]
fn exec_cancel_kills_the_command() {
    let mut w = Worker::start("cancel");
    w.ctl
        .request_exec(7, w.req(sh("echo ready; sleep 30")))
        .unwrap();
    match w.recv() {
        WorkerMsg::Output { id: 7, data, .. } => assert_eq!(data, b"ready\n"),
        other => panic!("expected output, got {other:?}"),
    }
    let t0 = Instant::now();
    w.ctl.cancel(7).unwrap();
    let run = w.collect(7);
    assert!(t0.elapsed() < Duration::from_secs(5));
    assert!(run.ok().cancelled);
    assert_eq!(run.ok().exit, ExitKind::Signal(libc::SIGKILL));
    // Cancelling something unknown is harmless.
    w.ctl.cancel(12345).unwrap();
    assert_eq!(w.call(Request::Ping), Ok(Reply::Pong));
}

#[test]
fn exec_start_failures_are_tool_errors() {
    let mut w = Worker::start("notfound");
    let e = w
        .exec(1, w.req(argv(&["bulkhead-no-such-command"])))
        .err()
        .clone();
    assert_eq!(e.kind, ToolErrorKind::NotFound);
    assert_eq!(e.message, "command not found: bulkhead-no-such-command");

    let script = w.dir.join("script");
    fs::write(&script, "#!/bin/sh\necho hi\n").unwrap();
    fs::set_permissions(&script, fs::Permissions::from_mode(0o644)).unwrap();
    let e = w
        .exec(2, w.req(argv(&[script.to_str().unwrap()])))
        .err()
        .clone();
    assert_eq!(e.kind, ToolErrorKind::PermissionDenied, "{e:?}");
    fs::set_permissions(&script, fs::Permissions::from_mode(0o755)).unwrap();
    assert_eq!(w.exec(3, w.req(argv(&["./script"]))).stdout(), "hi\n");

    let mut req = w.req(argv(&["true"]));
    req.cwd = "/nonexistent/bulkhead".into();
    let e = w.exec(4, req).err().clone();
    assert_eq!(e.kind, ToolErrorKind::NotFound);
    assert!(e.message.contains("working directory"), "{e:?}");

    assert_eq!(
        w.exec(5, w.req(argv(&[]))).err().kind,
        ToolErrorKind::InvalidInput
    );
    // The worker is still fine.
    assert_eq!(
        w.exec(6, w.req(argv(&["true"]))).ok().exit,
        ExitKind::Code(0)
    );
}

#[test]
fn exec_returns_soon_after_exit_when_a_daemon_holds_the_pipes() {
    let mut w = Worker::start("daemon");
    let t0 = Instant::now();
    let run = w.exec(1, w.req(sh("sleep 30 & echo $!")));
    assert!(
        t0.elapsed() < Duration::from_secs(3),
        "waited for the daemon"
    );
    let daemon = pid_line(&run.stdout());
    assert!(alive(daemon), "without kill_stragglers the daemon lives on");

    // kill_stragglers: outside a pid namespace, the command's process group.
    let mut req = w.req(sh("sleep 30 & echo $!"));
    req.kill_stragglers = true;
    let run = w.exec(2, req);
    let straggler = pid_line(&run.stdout());
    assert!(dies(straggler));
    // The first daemon is still in its own group; shutting the worker down kills it.
    w.ctl.shutdown().unwrap();
    assert_eq!(w.wait_exit(), 0);
    assert!(dies(daemon));
}

#[test]
fn at_most_16_commands_run_at_once_and_shutdown_kills_them() {
    let mut w = Worker::start("limit");
    let mut pids = Vec::new();
    for id in 0..16 {
        w.ctl
            .request_exec(id, w.req(sh("echo $$; exec sleep 30")))
            .unwrap();
        match w.recv() {
            WorkerMsg::Output { data, .. } => pids.push(pid_line(&String::from_utf8_lossy(&data))),
            other => panic!("expected output, got {other:?}"),
        }
    }
    let e = w.exec(99, w.req(argv(&["true"]))).err().clone();
    assert_eq!(e.kind, ToolErrorKind::RateLimited);
    assert!(e.message.contains("too many commands"), "{e:?}");
    assert!(pids.iter().all(|&p| alive(p)));
    w.ctl.shutdown().unwrap();
    assert_eq!(w.wait_exit(), 0);
    for p in pids {
        assert!(dies(p), "{p} survived shutdown");
    }
}

// ---------------------------------------------------------------------------------------------
// files

#[test]
fn read_with_offset_limit_and_cap() {
    let mut w = Worker::start("read");
    let data: Vec<u8> = (0..1_048_576u32).map(|i| (i % 256) as u8).collect();
    fs::write(w.dir.join("big"), &data).unwrap();
    let p = w.dir.path("big");

    let Ok(Reply::Read(r)) = w.call(Request::Read {
        path: p.clone(),
        offset: 10,
        limit: 5,
    }) else {
        panic!()
    };
    assert_eq!(r.data, &data[10..15]);
    assert_eq!((r.size, r.eof), (1_048_576, false));

    let Ok(Reply::Read(r)) = w.call(Request::Read {
        path: p.clone(),
        offset: 0,
        limit: 10 << 20,
    }) else {
        panic!()
    };
    assert_eq!(r.data.len(), 512 * 1024, "capped at MAX_READ_BYTES");
    assert!(!r.eof);

    let Ok(Reply::Read(r)) = w.call(Request::Read {
        path: p.clone(),
        offset: 1_048_576 - 3,
        limit: 100,
    }) else {
        panic!()
    };
    assert_eq!((r.data.len(), r.eof), (3, true));

    let e = w
        .call(Request::Read {
            path: w.dir.dir(),
            offset: 0,
            limit: 1,
        })
        .unwrap_err();
    assert_eq!(e.kind, ToolErrorKind::WrongType);
    let missing = w.dir.path("missing");
    let e = w
        .call(Request::Read {
            path: missing.clone(),
            offset: 0,
            limit: 1,
        })
        .unwrap_err();
    assert_eq!(e.kind, ToolErrorKind::NotFound);
    assert!(e.message.contains(&missing), "{e:?}");

    // A FIFO planted in the workspace must not hang the worker.
    let fifo = w.dir.path("fifo");
    if std::process::Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .is_ok_and(|s| s.success())
    {
        let e = w
            .call(Request::Read {
                path: fifo,
                offset: 0,
                limit: 1,
            })
            .unwrap_err();
        assert_eq!(e.kind, ToolErrorKind::WrongType);
    }
}

#[test]
fn write_is_atomic_creates_parents_and_applies_mode() {
    let mut w = Worker::start("write");
    let p = w.dir.path("a/b/new.txt");
    let e = w
        .call(Request::Write {
            path: p.clone(),
            data: b"x".to_vec(),
            mode: 0o600,
            create_parents: false,
        })
        .unwrap_err();
    assert_eq!(e.kind, ToolErrorKind::NotFound);
    let r = w.call(Request::Write {
        path: p.clone(),
        data: b"hello".to_vec(),
        mode: 0o600,
        create_parents: true,
    });
    assert_eq!(r, Ok(Reply::Write { bytes: 5 }));
    assert_eq!(fs::read(&p).unwrap(), b"hello");
    assert_eq!(fs::metadata(&p).unwrap().mode() & 0o777, 0o600);

    // Overwriting keeps the file's mode and replaces the inode (rename, not truncate).
    fs::set_permissions(&p, fs::Permissions::from_mode(0o640)).unwrap();
    let ino = fs::metadata(&p).unwrap().ino();
    w.call(Request::Write {
        path: p.clone(),
        data: b"bye".to_vec(),
        mode: 0o777,
        create_parents: false,
    })
    .unwrap();
    assert_eq!(fs::read(&p).unwrap(), b"bye");
    let md = fs::metadata(&p).unwrap();
    assert_eq!(md.mode() & 0o777, 0o640);
    assert_ne!(md.ino(), ino);
    let names: Vec<_> = fs::read_dir(w.dir.join("a/b"))
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(names, ["new.txt"], "no temporary file left behind");

    let e = w
        .call(Request::Write {
            path: w.dir.dir(),
            data: vec![],
            mode: 0,
            create_parents: false,
        })
        .unwrap_err();
    assert_eq!(e.kind, ToolErrorKind::WrongType);
}

#[test]
fn edit_unique_missing_ambiguous_and_replace_all() {
    let mut w = Worker::start("edit");
    let p = w.dir.path("f.rs");
    fs::write(&p, "let a = 1;\nlet b = 1;\n").unwrap();
    fs::set_permissions(&p, fs::Permissions::from_mode(0o750)).unwrap();
    let edit = |old: &str, new: &str, all: bool| Request::Edit {
        path: p.clone(),
        old: old.into(),
        new: new.into(),
        replace_all: all,
    };
    assert_eq!(
        w.call(edit("a = 1", "a = 2", false)),
        Ok(Reply::Edit { replacements: 1 })
    );
    assert_eq!(fs::read_to_string(&p).unwrap(), "let a = 2;\nlet b = 1;\n");
    assert_eq!(
        fs::metadata(&p).unwrap().mode() & 0o777,
        0o750,
        "mode preserved"
    );

    let e = w.call(edit("zzz", "y", false)).unwrap_err();
    assert_eq!(e.kind, ToolErrorKind::NotFound);
    assert!(e.message.contains("not found"), "{e:?}");

    let e = w.call(edit("let", "const", false)).unwrap_err();
    assert_eq!(e.kind, ToolErrorKind::NotUnique);
    assert!(e.message.contains("2 times"), "{e:?}");

    assert_eq!(
        w.call(edit("let", "const", true)),
        Ok(Reply::Edit { replacements: 2 })
    );
    assert_eq!(
        fs::read_to_string(&p).unwrap(),
        "const a = 2;\nconst b = 1;\n"
    );

    assert_eq!(
        w.call(edit("", "x", true)).unwrap_err().kind,
        ToolErrorKind::InvalidInput
    );
    fs::write(w.dir.join("bin"), [0xff, 0xfe, 0x00]).unwrap();
    let e = w
        .call(Request::Edit {
            path: w.dir.path("bin"),
            old: "a".into(),
            new: "b".into(),
            replace_all: false,
        })
        .unwrap_err();
    assert_eq!(e.kind, ToolErrorKind::WrongType);
}

#[test]
fn ls_is_sorted_and_does_not_follow_symlinks_and_stat_too() {
    let mut w = Worker::start("ls");
    fs::write(w.dir.join("b"), "bb").unwrap();
    fs::write(w.dir.join("a"), "a").unwrap();
    fs::create_dir(w.dir.join("c")).unwrap();
    symlink(w.dir.join("c"), w.dir.join("l")).unwrap();
    let Ok(Reply::Ls { entries, truncated }) = w.call(Request::Ls { path: w.dir.dir() }) else {
        panic!()
    };
    assert!(!truncated);
    let names: Vec<&str> = entries.iter().map(|e| e.name.as_str()).collect();
    assert_eq!(names, ["a", "b", "c", "l"]);
    let kinds: Vec<FileKind> = entries.iter().map(|e| e.stat.kind).collect();
    assert_eq!(
        kinds,
        [
            FileKind::File,
            FileKind::File,
            FileKind::Dir,
            FileKind::Symlink
        ]
    );
    assert_eq!(entries[1].stat.size, 2);

    let e = w
        .call(Request::Ls {
            path: w.dir.path("a"),
        })
        .unwrap_err();
    assert_eq!(e.kind, ToolErrorKind::WrongType);

    let Ok(Reply::Stat(s)) = w.call(Request::Stat {
        path: w.dir.path("l"),
    }) else {
        panic!()
    };
    assert_eq!(s.kind, FileKind::Symlink);
    let Ok(Reply::Stat(s)) = w.call(Request::Stat {
        path: w.dir.path("b"),
    }) else {
        panic!()
    };
    assert_eq!((s.kind, s.size), (FileKind::File, 2));
    assert_eq!(s.mtime, fs::metadata(w.dir.join("b")).unwrap().mtime());
    let e = w
        .call(Request::Stat {
            path: w.dir.path("zz"),
        })
        .unwrap_err();
    assert_eq!(e.kind, ToolErrorKind::NotFound);
}

// ---------------------------------------------------------------------------------------------
// protocol

#[test]
fn requests_are_rate_limited_per_method() {
    let mut w = Worker::start("rate");
    for id in 0..300 {
        w.ctl.request(id, &Request::Ping).unwrap();
    }
    let (mut pong, mut limited) = (0, 0);
    for _ in 0..300 {
        match w.recv() {
            WorkerMsg::Response {
                result: Ok(Reply::Pong),
                ..
            } => pong += 1,
            WorkerMsg::Response { result: Err(e), .. } => {
                assert_eq!(e.kind, ToolErrorKind::RateLimited);
                limited += 1;
            }
            other => panic!("{other:?}"),
        }
    }
    assert!(pong >= 200 && limited > 0, "pong {pong}, limited {limited}");
    // Other methods have their own budget.
    assert!(w.call(Request::Stat { path: w.dir.dir() }).is_ok());
}

#[test]
fn a_malformed_frame_makes_the_worker_exit_1() {
    let mut w = Worker::start("garbage");
    let mut frame = 3u32.to_le_bytes().to_vec();
    frame.extend_from_slice(&[0xff, 0xff, 0xff]);
    w.ctl.socket().write_all(&frame).unwrap();
    assert_eq!(w.wait_exit(), 1);

    let mut w = Worker::start("oversized");
    w.ctl.socket().write_all(&u32::MAX.to_le_bytes()).unwrap();
    assert_eq!(w.wait_exit(), 1);

    // A launch spec is not something a running worker accepts.
    let mut w = Worker::start("launch");
    let spec = LaunchSpec {
        workspace_id: "x".into(),
        workspace_dir: "/x".into(),
        workspace_writable: true,
        host_uid: 1000,
        host_gid: 1000,
        hostname: "x".into(),
        limits: Limits {
            memory_bytes: 1,
            swap_bytes: 0,
            pids: 1,
            cpu_weight: 1,
            cpu_quota_us: 0,
            cpu_period_us: 0,
            tmp_bytes: 0,
            shm_bytes: 0,
            nofile: 1,
            io_weight: 0,
            io_max: Default::default(),
            disk_bytes: 0,
            inodes: 0,
        },
        binds: vec![],
    };
    w.ctl.send_launch(&spec).unwrap();
    assert_eq!(w.wait_exit(), 1);
}

#[test]
fn end_of_file_makes_the_worker_kill_its_commands_and_exit_0() {
    let mut w = Worker::start("eof");
    w.ctl
        .request_exec(1, w.req(sh("echo $$; exec sleep 30")))
        .unwrap();
    let pid = match w.recv() {
        WorkerMsg::Output { data, .. } => pid_line(&String::from_utf8_lossy(&data)),
        other => panic!("expected output, got {other:?}"),
    };
    assert!(alive(pid));
    // Drop our end of the socket.
    let (dummy, _) = UnixStream::pair().unwrap();
    drop(std::mem::replace(
        &mut w.ctl,
        ControllerEnd::new(dummy).unwrap(),
    ));
    assert_eq!(w.wait_exit(), 0);
    assert!(dies(pid), "command {pid} outlived the worker");
    assert!(matches!(
        w.ctl.recv(),
        Err(FrameError::Disconnected | FrameError::Io(_))
    ));
}

#[test]
fn worker_without_a_socket_exits_1() {
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_bulkhead-worker"));
    cmd.stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    // SAFETY: the hook only calls close(2), which is async-signal-safe.
    unsafe {
        cmd.pre_exec(close_fd3);
    }
    let status = cmd.status().unwrap();
    assert_eq!(status.code(), Some(1));
}

/// `VmRSS` of `pid` in KiB.
fn rss_kib(pid: u32) -> u64 {
    let status = fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status.lines().find(|l| l.starts_with("VmRSS:")).unwrap();
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

#[test]
fn a_controller_that_does_not_read_cannot_make_the_worker_grow() {
    let mut w = Worker::start("backpressure");
    let data = vec![b'r'; 512 * 1024];
    fs::write(w.dir.join("f"), &data).unwrap();
    let idle = rss_kib(w.child.id());
    // 150 reads of 512 KiB = 75 MiB of replies, sent before reading any.
    let p = w.dir.path("f");
    for id in 0..150 {
        let body = Request::Read {
            path: p.clone(),
            offset: 0,
            limit: 1 << 20,
        };
        w.ctl.request(id, &body).unwrap();
    }
    thread::sleep(Duration::from_millis(300));
    let loaded = rss_kib(w.child.id());
    eprintln!("worker rss: idle {idle} KiB, with 75 MiB of replies waiting {loaded} KiB");
    assert!(
        loaded < idle + 16 * 1024,
        "idle {idle} KiB, loaded {loaded} KiB"
    );
    for id in 0..150 {
        match w.recv() {
            WorkerMsg::Response {
                id: rid,
                result: Ok(Reply::Read(r)),
            } => {
                assert_eq!(rid, id);
                assert!(r.data == data);
            }
            other => panic!("{other:?}"),
        }
    }
    assert_eq!(w.call(Request::Ping), Ok(Reply::Pong));

    // 50 MB of command output while nobody reads: the command waits on its pipe instead.
    let mut req = w.req(argv(&["head", "-c", "50000000", "/dev/zero"]));
    req.output_cap = 100_000_000;
    w.ctl.request_exec(500, req).unwrap();
    thread::sleep(Duration::from_millis(500));
    let loaded = rss_kib(w.child.id());
    assert!(
        loaded < idle + 16 * 1024,
        "idle {idle} KiB, loaded {loaded} KiB"
    );
    let run = w.collect(500);
    assert_eq!(run.stdout.len(), 50_000_000);
    assert!(!run.ok().truncated);
}

// ---------------------------------------------------------------------------------------------
// pid 1 of a pid namespace (needs `unshare --pid`: root, or unprivileged user namespaces)

const UNSHARE: [&str; 5] = ["unshare", "--pid", "--fork", "--mount-proc", "--kill-child"];

/// Whether the pid-namespace tests can run here; prints why not (fails under
/// `BULKHEAD_PRIV_TESTS_MUST_RUN=1`).
fn pid_namespaces_available() -> bool {
    let mut cmd = std::process::Command::new(UNSHARE[0]);
    if !is_root() {
        cmd.arg("--user").arg("--map-root-user");
    }
    let ok = cmd
        .args(&UNSHARE[1..])
        .arg("true")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !ok {
        bulkhead_testkit::skip("`unshare --pid --fork --mount-proc` is not available here");
    }
    ok
}

fn is_root() -> bool {
    status_field("Uid") == "0"
}

/// `(pid, state)` of every process visible in the worker's namespace, per `/proc/*/stat`.
fn processes_inside(w: &mut Worker, id: u64) -> Vec<(i32, char)> {
    let run = w.exec(id, w.req(sh("cat /proc/[0-9]*/stat 2>/dev/null")));
    run.stdout()
        .lines()
        .filter_map(|l| {
            let pid = l.split(' ').next()?.parse().ok()?;
            let state = l.rsplit_once(')')?.1.trim_start().chars().next()?;
            Some((pid, state))
        })
        .collect()
}

#[test]
fn as_pid_1_it_reaps_orphans_and_kill_stragglers_reaches_the_whole_namespace() {
    if !pid_namespaces_available() {
        return;
    }
    let mut wrapper: Vec<&str> = vec![UNSHARE[0]];
    if !is_root() {
        wrapper.extend(["--user", "--map-root-user"]);
    }
    wrapper.extend(&UNSHARE[1..]);
    let mut w = Worker::start_under("pid1", &wrapper);
    assert_eq!(w.hello.pid, 1);

    // Orphans (a subshell's background job) are reparented to pid 1 and reaped.
    let run = w.exec(1, w.req(sh("(sleep 0.1 &); echo started")));
    assert_eq!(run.stdout(), "started\n");
    thread::sleep(Duration::from_millis(400));
    let procs = processes_inside(&mut w, 2);
    assert!(procs.iter().any(|&(p, _)| p == 1), "{procs:?}");
    assert!(
        !procs.iter().any(|&(_, s)| s == 'Z'),
        "zombies left: {procs:?}"
    );

    // A daemon that left the command's session survives its end...
    let run = w.exec(3, w.req(sh("setsid sleep 30 & echo $!")));
    let daemon = pid_line(&run.stdout());
    assert!(processes_inside(&mut w, 4)
        .iter()
        .any(|&(p, _)| p == daemon));
    // ...until a command runs with kill_stragglers: kill(-1) as pid 1 takes it too.
    let mut req = w.req(sh("true"));
    req.kill_stragglers = true;
    assert_eq!(w.exec(5, req).ok().exit, ExitKind::Code(0));
    let deadline = Instant::now() + Duration::from_secs(3);
    loop {
        let procs = processes_inside(&mut w, 6);
        if !procs.iter().any(|&(p, _)| p == daemon) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "daemon {daemon} survived: {procs:?}"
        );
        thread::sleep(Duration::from_millis(20));
    }

    // End of file: the worker kills everything and exits 0 (unshare passes the status on).
    let run = w.exec(7, w.req(sh("setsid sleep 30 & echo $!")));
    pid_line(&run.stdout());
    let (dummy, _) = UnixStream::pair().unwrap();
    drop(std::mem::replace(
        &mut w.ctl,
        ControllerEnd::new(dummy).unwrap(),
    ));
    assert_eq!(w.wait_exit(), 0);
}
