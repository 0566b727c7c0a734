//! Controlled egress, the sandbox's side: a sandbox launched with `LaunchOptions::egress`
//! serves `127.0.0.1:3128` inside its own network namespace and hands every connection to the
//! controller over the egress channel; without egress nothing listens there; commands get the
//! proxy environment; the host's loopback stays out of reach either way.
//!
//! Everything goes through the library API (`Sandbox::start_with`, `take_egress_channel`,
//! `bulkhead::net::fdpass::recv_passed_fd`). The controller side of each test is a tiny stand-in
//! for the real proxy (an echo, a canned HTTP answer): no connection ever leaves loopback. The
//! probe that connects to a host listener runs only in a sandbox this file has just checked to
//! be in its own mount, pid, net and uts namespaces with only `lo`.

use std::io::{BufRead, BufReader, ErrorKind, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::os::unix::process::CommandExt;
use std::process::Stdio;
use std::sync::mpsc;
use std::thread;
use std::time::Duration;

use bulkhead::net::fdpass::recv_passed_fd;
use bulkhead::protocol::{
    Command, ControllerEnd, ExecRequest, ExitKind, LaunchOptions, LaunchSpec, SetupStep, Stream,
    WorkerMsg, EGRESS_FD, PROXY_PORT,
};
use bulkhead::{LimitsConfig, Platform, PlatformConfig, Sandbox, WorkspaceConfig};
use bulkhead_tests::{bin, ns_id, sandbox_or_skip, text, TestEnv};

/// The launch spec of a fresh workspace (kept alive by the returned environment).
fn fresh_spec() -> (TestEnv, LaunchSpec) {
    let env = TestEnv::new();
    let platform = Platform::open(PlatformConfig {
        state_dir: env.state(),
        launcher: Some(bin("bulkhead-launch")),
    })
    .expect("open platform");
    let ws = platform
        .create_workspace("egress", WorkspaceConfig::default())
        .expect("create workspace");
    let spec = ws
        .launch_spec(&LimitsConfig::default())
        .expect("launch spec");
    (env, spec)
}

/// A sandbox of a fresh workspace, started through the library.
struct Egress {
    _env: TestEnv,
    sb: Sandbox,
}

/// Exit code, stdout, stderr of one command.
struct Ran {
    code: i32,
    out: String,
    err: String,
}

impl Ran {
    fn show(&self) -> String {
        format!(
            "exit {}\n--- stdout\n{}\n--- stderr\n{}",
            self.code, self.out, self.err
        )
    }
}

/// Starts a sandbox with or without egress; `None` (after printing why) when the host
/// cannot run sandboxes. Checks its isolation before returning it.
fn start(test: &str, egress: bool) -> Option<Egress> {
    if !sandbox_or_skip(test) {
        return None;
    }
    let (env, spec) = fresh_spec();
    let sb = Sandbox::start_with(&bin("bulkhead-launch"), &spec, &LaunchOptions { egress })
        .unwrap_or_else(|e| panic!("start a sandbox (egress {egress}): {e}"));
    let mut e = Egress { _env: env, sb };
    e.check_isolated();
    Some(e)
}

impl Egress {
    /// Runs argv with `env` added, 30 s at most.
    fn run(&mut self, argv: &[&str], env: &[(&str, &str)]) -> Ran {
        let req = ExecRequest {
            command: Command::Argv(argv.iter().map(|s| s.to_string()).collect()),
            cwd: String::new(),
            env: env
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            stdin: vec![],
            timeout_ms: 30_000,
            output_cap: 1 << 20,
            kill_stragglers: true,
        };
        let (mut out, mut err) = (Vec::new(), Vec::new());
        let outcome = self
            .sb
            .exec(req, &mut |stream, data| match stream {
                Stream::Stdout => out.extend_from_slice(data),
                Stream::Stderr => err.extend_from_slice(data),
            })
            .unwrap_or_else(|e| panic!("exec {argv:?}: {e}"));
        let code = match outcome.result.exit {
            ExitKind::Code(c) => c,
            ExitKind::Signal(s) => 128 + s,
        };
        Ran {
            code,
            out: text(&out),
            err: text(&err),
        }
    }

    /// Runs a python3 program; it must exit 0.
    fn python(&mut self, code: &str) -> String {
        let r = self.run(&["python3", "-c", code], &[]);
        eprintln!("probe output: {}", r.show());
        assert_eq!(r.code, 0, "the python probe itself failed:\n{}", r.show());
        r.out
    }

    /// The sandbox is in its own mount, pid, net and uts namespaces, pid 1 is the worker,
    /// and `lo` is its only interface: probes may run in it.
    fn check_isolated(&mut self) {
        let r = self.run(
            &[
                "/bin/sh",
                "-c",
                "for n in mnt pid net uts; do readlink /proc/self/ns/$n; done; cat /proc/1/comm; \
                 cut -d: -f1 /proc/net/dev | tail -n +3 | tr -d ' '",
            ],
            &[],
        );
        assert_eq!(r.code, 0, "isolation probe failed:\n{}", r.show());
        let lines: Vec<&str> = r.out.lines().collect();
        assert!(lines.len() >= 6, "isolation probe output:\n{}", r.show());
        for (i, ns) in ["mnt", "pid", "net", "uts"].iter().enumerate() {
            assert_ne!(
                lines[i],
                ns_id("self", ns),
                "the sandbox shares the host's {ns} namespace: refusing to run probes"
            );
        }
        assert_eq!(
            lines[4], "bulkhead-worker",
            "pid 1 inside is not the worker"
        );
        assert_eq!(
            &lines[5..],
            ["lo"],
            "interfaces besides lo inside the sandbox"
        );
    }
}

/// Serves the passed connections of `chan` on a thread, one at a time, with `serve`; the
/// thread returns how many arrived once the channel ends.
fn serve_passed(
    chan: OwnedFd,
    serve: impl Fn(TcpStream) + Send + 'static,
) -> thread::JoinHandle<usize> {
    thread::spawn(move || {
        let mut n = 0;
        while let Some(fd) = recv_passed_fd(&chan).expect("receive a passed connection") {
            n += 1;
            let s = TcpStream::from(fd);
            s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
            serve(s);
        }
        n
    })
}

/// Python: connect to 127.0.0.1:`port`, return "CONNECTED" or the errno name.
fn py_connect(port: u16) -> String {
    format!(
        r#"
import errno, socket
s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
s.settimeout(3)
try:
    s.connect(("127.0.0.1", {port}))
    print("CONNECTED")
except socket.timeout:
    print("timeout")
except OSError as ex:
    print(errno.errorcode.get(ex.errno, str(ex)))
"#
    )
}

/// Attack-free round trip: a client inside connects to the proxy endpoint; the connection
/// arrives on the controller's channel as a passed fd (the accepted end, local port 3128),
/// and bytes flow both ways between the controller and the sandboxed client.
#[test]
fn a_proxy_connection_arrives_at_the_controller_and_carries_bytes_both_ways() {
    let Some(mut e) = start(
        "egress_sandbox::a_proxy_connection_arrives_at_the_controller_and_carries_bytes_both_ways",
        true,
    ) else {
        return;
    };
    assert!(e.sb.info().attestation.egress_proxy);
    let chan = e.sb.take_egress_channel().expect("an egress channel");
    assert!(e.sb.take_egress_channel().is_none(), "taken twice");

    let (tx, rx) = mpsc::channel();
    let server = serve_passed(chan, move |mut s| {
        let local = s.local_addr().unwrap();
        s.write_all(b"hello from the controller\n").unwrap();
        let mut line = String::new();
        BufReader::new(&s).read_line(&mut line).unwrap();
        s.write_all(format!("echo: {line}").as_bytes()).unwrap();
        tx.send((local, line)).unwrap();
    });
    let out = e.python(&format!(
        r#"
import socket
s = socket.create_connection(("127.0.0.1", {PROXY_PORT}), timeout=10)
f = s.makefile("rwb")
print("GOT", f.readline().decode().strip())
f.write(b"ping from the sandbox\n"); f.flush()
print("GOT", f.readline().decode().strip())
print("EOF", f.read() == b"")
"#
    ));
    let (local, line) = rx.recv_timeout(Duration::from_secs(10)).expect("served");
    assert_eq!(line, "ping from the sandbox\n");
    assert_eq!(local.ip().to_string(), "127.0.0.1");
    assert_eq!(local.port(), PROXY_PORT);
    assert_eq!(
        out.lines().collect::<Vec<_>>(),
        [
            "GOT hello from the controller",
            "GOT echo: ping from the sandbox",
            "EOF True"
        ],
        "what the sandboxed client saw"
    );
    // The channel ends with the sandbox.
    e.sb.shutdown().expect("shutdown");
    assert_eq!(server.join().expect("server thread"), 1);
}

/// Without egress there is no channel and nothing listens on 3128 inside (refused), and
/// commands get no proxy environment.
#[test]
fn without_egress_nothing_listens_on_the_proxy_port() {
    let Some(mut e) = start(
        "egress_sandbox::without_egress_nothing_listens_on_the_proxy_port",
        false,
    ) else {
        return;
    };
    assert!(!e.sb.info().attestation.egress_proxy);
    assert!(e.sb.take_egress_channel().is_none());
    let out = e.python(&py_connect(PROXY_PORT));
    assert_eq!(out.trim(), "ECONNREFUSED");
    let r = e.run(&["env"], &[]);
    assert_eq!(r.code, 0, "{}", r.show());
    assert!(
        !r.out.to_lowercase().contains("proxy"),
        "proxy variables without egress:\n{}",
        r.show()
    );
}

/// Every command of an egress sandbox gets the proxy variables (the request may override
/// them), and a real client (curl, when the host has it) uses them: its request arrives on
/// the controller's channel.
#[test]
fn egress_commands_get_the_proxy_environment() {
    let Some(mut e) = start(
        "egress_sandbox::egress_commands_get_the_proxy_environment",
        true,
    ) else {
        return;
    };
    let r = e.run(&["env"], &[("https_proxy", "http://override.invalid:1")]);
    assert_eq!(r.code, 0, "{}", r.show());
    let url = format!("http://127.0.0.1:{PROXY_PORT}");
    for k in [
        "HTTP_PROXY",
        "HTTPS_PROXY",
        "ALL_PROXY",
        "http_proxy",
        "all_proxy",
    ] {
        assert!(
            r.out.lines().any(|l| l == format!("{k}={url}")),
            "{k} is not {url}:\n{}",
            r.show()
        );
    }
    for k in ["NO_PROXY", "no_proxy"] {
        assert!(
            r.out
                .lines()
                .any(|l| l == format!("{k}=localhost,127.0.0.1,::1")),
            "{k}:\n{}",
            r.show()
        );
    }
    assert!(
        r.out
            .lines()
            .any(|l| l == "https_proxy=http://override.invalid:1"),
        "the request's own value did not win:\n{}",
        r.show()
    );

    if !std::path::Path::new("/usr/bin/curl").exists() {
        eprintln!("no /usr/bin/curl on this host: skipping the curl part");
        return;
    }
    // The stand-in proxy reads the request head and answers 418; nothing is fetched.
    let chan = e.sb.take_egress_channel().expect("an egress channel");
    let (tx, rx) = mpsc::channel();
    let server = serve_passed(chan, move |mut s| {
        let mut head = Vec::new();
        let mut buf = [0u8; 1024];
        while !head.windows(4).any(|w| w == b"\r\n\r\n") {
            match s.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => head.extend_from_slice(&buf[..n]),
            }
        }
        let _ = s.write_all(
            b"HTTP/1.1 418 I'm a teapot\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
        );
        let _ = tx.send(text(&head));
    });
    let r = e.run(
        &[
            "curl",
            "-sS",
            "--max-time",
            "20",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
            "http://bulkhead-egress-test.invalid/probe",
        ],
        &[],
    );
    let head = rx
        .recv_timeout(Duration::from_secs(10))
        .unwrap_or_else(|_| panic!("curl's request never arrived:\n{}", r.show()));
    assert!(
        head.starts_with("GET http://bulkhead-egress-test.invalid/probe HTTP/1.1\r\n"),
        "request head: {head:?}"
    );
    assert_eq!(r.out.trim(), "418", "{}", r.show());
    e.sb.shutdown().expect("shutdown");
    assert_eq!(server.join().expect("server thread"), 1);
}

/// Attack: from inside an egress sandbox, connect straight to a listener on the host's
/// loopback. Expected: refused (the sandbox has its own network namespace; the proxy is the
/// only way out) and the host listener received nothing.
#[test]
fn a_host_loopback_listener_is_unreachable_from_an_egress_sandbox() {
    let Some(mut e) = start(
        "egress_sandbox::a_host_loopback_listener_is_unreachable_from_an_egress_sandbox",
        true,
    ) else {
        return;
    };
    let host = TcpListener::bind("127.0.0.1:0").expect("bind on the host's loopback");
    host.set_nonblocking(true).unwrap();
    let port = host.local_addr().unwrap().port();
    let out = e.python(&py_connect(port));
    assert_ne!(
        out.trim(),
        "CONNECTED",
        "connected to the host's 127.0.0.1:{port} from inside"
    );
    match host.accept() {
        Err(err) if err.kind() == ErrorKind::WouldBlock => {}
        other => panic!("the host listener on 127.0.0.1:{port} got a connection: {other:?}"),
    }
}

/// Attack: steal the worker's egress channel (fd 5) or its listener: through an inherited
/// descriptor, /proc/1/fd, or pidfd_getfd. Expected: commands inherit only 0, 1, 2; /proc/1/fd
/// is not readable; pidfd_getfd on the worker fails with EPERM for every fd.
#[test]
fn the_egress_channel_cannot_be_stolen() {
    let Some(mut e) = start("egress_sandbox::the_egress_channel_cannot_be_stolen", true) else {
        return;
    };
    let r = e.run(&["ls", "-1", "/proc/self/fd"], &[]);
    assert_eq!(r.code, 0, "{}", r.show());
    // 0, 1, 2, plus the directory ls itself opened.
    assert_eq!(
        r.out.lines().collect::<Vec<_>>(),
        ["0", "1", "2", "3"],
        "the command inherited extra descriptors:\n{}",
        r.show()
    );
    let out = e.python(
        r#"
import ctypes, errno, os
libc = ctypes.CDLL(None, use_errno=True)
libc.syscall.restype = ctypes.c_long
def sc(nr, *args):
    a = [ctypes.c_long(x) for x in args] + [ctypes.c_long(0)] * (6 - len(args))
    ctypes.set_errno(0)
    r = libc.syscall(ctypes.c_long(nr), *a)
    return "OK" if r >= 0 else errno.errorcode.get(ctypes.get_errno(), "?")
def oserr(f):
    try:
        f()
        return "OK"
    except OSError as ex:
        return errno.errorcode.get(ex.errno, "?")
print("ls", oserr(lambda: os.listdir("/proc/1/fd")))
print("readlink", oserr(lambda: os.readlink("/proc/1/fd/5")))
pidfd = libc.syscall(ctypes.c_long(434), ctypes.c_long(1), ctypes.c_long(0))
print("pidfd", "OK" if pidfd >= 0 else "FAILED")
print("getfd", sorted(set(sc(438, pidfd, fd, 0) for fd in range(0, 12))))
"#,
    );
    let lines: Vec<&str> = out.lines().collect();
    assert!(!lines[0].ends_with("OK"), "/proc/1/fd is listable: {out}");
    assert!(!lines[1].ends_with("OK"), "/proc/1/fd/5 is readable: {out}");
    if lines[2] == "pidfd OK" {
        assert_eq!(
            lines[3], "getfd ['EPERM']",
            "pidfd_getfd on the worker: {out}"
        );
    }
    // The proxy is still up: the probes took nothing from the worker.
    assert!(e.sb.info().attestation.egress_proxy);
}

/// Dropping the controller's end of the channel ends egress: the listener inside closes.
#[test]
fn dropping_the_channel_closes_the_listener() {
    let Some(mut e) = start(
        "egress_sandbox::dropping_the_channel_closes_the_listener",
        true,
    ) else {
        return;
    };
    drop(e.sb.take_egress_channel().expect("an egress channel"));
    let out = e.python(&format!(
        r#"
import errno, socket, time
r = "CONNECTED"
for _ in range(20):
    s = socket.socket()
    try:
        s.connect(("127.0.0.1", {PROXY_PORT}))
    except OSError as ex:
        r = errno.errorcode.get(ex.errno, str(ex))
        break
    finally:
        s.close()
    time.sleep(0.1)
print(r)
"#
    ));
    assert_eq!(out.trim(), "ECONNREFUSED");
}

/// A burst of connections: at most 64 a second reach the controller, the rest are closed
/// at once by the worker.
#[test]
fn a_burst_of_proxy_connections_is_rate_limited() {
    let Some(mut e) = start(
        "egress_sandbox::a_burst_of_proxy_connections_is_rate_limited",
        true,
    ) else {
        return;
    };
    let chan = e.sb.take_egress_channel().expect("an egress channel");
    // Keep every passed connection open until the channel ends.
    let keeper = thread::spawn(move || {
        let mut kept = Vec::new();
        while let Some(fd) = recv_passed_fd(&chan).expect("receive") {
            kept.push(fd);
        }
        kept.len()
    });
    let out = e.python(&format!(
        r#"
import socket, time
t0 = time.monotonic()
socks = [socket.create_connection(("127.0.0.1", {PROXY_PORT}), timeout=10) for _ in range(100)]
took = time.monotonic() - t0
time.sleep(0.5)
closed = 0
for s in socks:
    s.setblocking(False)
    try:
        if s.recv(1) == b"":
            closed += 1
    except BlockingIOError:
        pass
    except ConnectionResetError:
        closed += 1
print(closed, took)
"#
    ));
    let mut it = out.split_whitespace();
    let closed: usize = it.next().unwrap().parse().unwrap();
    let took: f64 = it.next().unwrap().parse().unwrap();
    e.sb.shutdown().expect("shutdown");
    let passed = keeper.join().expect("keeper thread");
    assert_eq!(passed + closed, 100, "passed {passed}, closed {closed}");
    // 64 at once, then 64 a second (plus one for rounding).
    let allowed = 64 + (took * 64.0).ceil() as usize + 1;
    assert!(
        passed <= allowed,
        "{passed} connections passed in {took:.3} s (at most {allowed})"
    );
    assert!(passed >= 64, "only {passed} connections passed");
}

/// A connected `AF_UNIX` `SOCK_SEQPACKET` pair, close-on-exec.
fn seqpacket_pair() -> (OwnedFd, OwnedFd) {
    let mut fds = [-1; 2];
    // SAFETY: `fds` has room for the two descriptors socketpair writes.
    let r = unsafe {
        libc::socketpair(
            libc::AF_UNIX,
            libc::SOCK_SEQPACKET | libc::SOCK_CLOEXEC,
            0,
            fds.as_mut_ptr(),
        )
    };
    assert_eq!(r, 0, "socketpair: {}", std::io::Error::last_os_error());
    // SAFETY: socketpair succeeded: two new descriptors nothing else owns.
    unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) }
}

/// Runs the launcher by hand with `fd5` (if any) on fd 5 beside the socket on fd 3, sends
/// `spec` with `options`, and returns the first message, then stops the sandbox and returns
/// the launcher's exit code.
fn raw_launch(
    spec: &LaunchSpec,
    options: &LaunchOptions,
    fd5: Option<OwnedFd>,
) -> (WorkerMsg, i32) {
    let (ours, theirs) = UnixStream::pair().expect("socketpair");
    let a = theirs.as_raw_fd();
    let b = fd5.as_ref().map_or(-1, |f| f.as_raw_fd());
    let mut cmd = std::process::Command::new(bin("bulkhead-launch"));
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .env_clear();
    // SAFETY: the closure runs in the forked child before exec and only calls the
    // async-signal-safe fcntl and dup2 on descriptors open in the child (both sources are
    // first moved above 100, so neither dup2 can overwrite the other's source).
    unsafe {
        cmd.pre_exec(move || {
            let high = |fd: i32| {
                let r = libc::fcntl(fd, libc::F_DUPFD_CLOEXEC, 100);
                if r < 0 {
                    Err(std::io::Error::last_os_error())
                } else {
                    Ok(r)
                }
            };
            let ha = high(a)?;
            let hb = if b >= 0 { high(b)? } else { -1 };
            if libc::dup2(ha, 3) < 0 || (hb >= 0 && libc::dup2(hb, EGRESS_FD) < 0) {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let mut child = cmd.spawn().expect("run bulkhead-launch");
    drop((theirs, fd5));
    ours.set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    let mut end = ControllerEnd::new(ours).expect("controller end");
    end.send_launch_with(spec, options).expect("send the spec");
    let first = end.recv().expect("first message");
    let _ = end.shutdown();
    let status = child.wait().expect("wait for the launcher");
    (first, status.code().unwrap_or(-1))
}

/// Fail closed: egress asked for without a channel on fd 5 (or with something else there)
/// is a setup failure at the spec step, before any sandbox exists.
#[test]
fn egress_without_a_seqpacket_channel_is_refused_by_the_launcher() {
    if !sandbox_or_skip(
        "egress_sandbox::egress_without_a_seqpacket_channel_is_refused_by_the_launcher",
    ) {
        return;
    }
    let (_env, spec) = fresh_spec();
    let egress = LaunchOptions { egress: true };
    let (stream_a, _stream_b) = UnixStream::pair().expect("socketpair");
    for (what, fd5) in [
        ("no fd 5", None),
        ("a stream socket on fd 5", Some(OwnedFd::from(stream_a))),
    ] {
        let (msg, code) = raw_launch(&spec, &egress, fd5);
        match msg {
            WorkerMsg::SetupFailed(e) => {
                assert_eq!(e.step, SetupStep::Spec, "{what}: {e}");
                assert!(e.detail.contains("SOCK_SEQPACKET"), "{what}: {e}");
            }
            other => panic!("{what}: expected a setup failure, got {other:?}"),
        }
        assert_eq!(code, SetupStep::Spec.exit_code(), "{what}");
    }
}

/// Fail closed: a channel on fd 5 without egress in the spec is closed by the launcher and
/// never reaches the worker (no listener; the other end reads end of file at once).
#[test]
fn a_stray_fd_5_without_egress_never_reaches_the_worker() {
    if !sandbox_or_skip("egress_sandbox::a_stray_fd_5_without_egress_never_reaches_the_worker") {
        return;
    }
    let (_env, spec) = fresh_spec();
    let (kept, passed) = seqpacket_pair();
    let mut kept = UnixStream::from(kept);
    kept.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let (msg, code) = raw_launch(&spec, &LaunchOptions::default(), Some(passed));
    match msg {
        WorkerMsg::Hello { attestation, .. } => {
            assert!(
                !attestation.egress_proxy,
                "the worker listens without egress"
            );
            assert_eq!(attestation.pid, 1, "not a sandbox");
        }
        other => panic!("expected Hello, got {other:?}"),
    }
    assert_eq!(code, 0);
    let mut buf = [0u8; 1];
    assert_eq!(
        kept.read(&mut buf).expect("read the stray channel"),
        0,
        "something still holds the stray fd 5"
    );
}
