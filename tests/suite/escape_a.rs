//! Escape suite, part A: what an attacker inside a sandbox can see of the host and of other
//! workspaces, and which privileged operations fail.
//!
//! Every attack runs only inside a sandbox that [`Isolated::new`] has just checked to be in its
//! own mount, pid, net and uts namespaces. Each test states the attack and the outcome a user
//! would check: the attack failed, and where it could have had an effect, the host is unchanged.
//! Probes are chosen to be harmless even if a layer were missing (empty files with unique names,
//! zero or invalid arguments, connections only to sockets the test itself owns on loopback).

use std::collections::BTreeSet;
use std::io::ErrorKind;
use std::net::{TcpListener, UdpSocket};
use std::os::linux::net::SocketAddrExt;
use std::os::unix::net::{SocketAddr, UnixDatagram, UnixListener};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{SystemTime, UNIX_EPOCH};

use bulkhead_tests::{assert_absent, text, Isolated};
use serde_json::Value;

/// A tag unique to this test run, for file and socket names the test looks for afterwards.
fn unique(what: &str) -> String {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    format!("bh-escape-a-{what}-{}-{nanos:x}", std::process::id())
}

/// Exit code, stdout and stderr of a run, for assertion messages.
fn show(out: &Output) -> String {
    format!(
        "exit status {:?}\n--- stdout\n{}\n--- stderr\n{}",
        out.status.code(),
        text(&out.stdout),
        text(&out.stderr)
    )
}

/// Runs a shell script in the sandbox and requires it to have run to its end (exit 0).
fn sh_ok(sb: &Isolated, script: &str) -> String {
    let out = sb.sh(script);
    eprintln!("probe output: {}", show(&out));
    assert!(
        out.status.success(),
        "the probe script itself failed:\n{}",
        show(&out)
    );
    text(&out.stdout)
}

/// Python helpers put in front of every python probe: raw syscalls with their errno, errno
/// names, and a result dictionary `R` printed as JSON at the end.
const PY_PRELUDE: &str = r#"
import ctypes, errno, json, os, socket, subprocess, sys
libc = ctypes.CDLL(None, use_errno=True)
libc.syscall.restype = ctypes.c_long
def _arg(x):
    return ctypes.c_long(x) if isinstance(x, int) else x
def sc(nr, *args):
    a = [_arg(x) for x in args]
    a += [ctypes.c_long(0)] * (6 - len(a))
    ctypes.set_errno(0)
    r = libc.syscall(ctypes.c_long(nr), *a)
    return r, (ctypes.get_errno() if r == -1 else 0)
def ename(e):
    return errno.errorcode.get(e, str(e)) if e else "OK"
def res(r, e):
    return ename(e) if r == -1 else "OK(%d)" % r
def oserr(f):
    try:
        v = f()
        return "OK" + ("" if v is None else ": " + repr(v)[:300])
    except OSError as ex:
        return ename(ex.errno) if ex.errno else type(ex).__name__ + ": " + str(ex)
def run(argv):
    p = subprocess.run(argv, capture_output=True, text=True, timeout=20)
    return {"rc": p.returncode, "out": p.stdout[-400:], "err": p.stderr[-400:]}
R = {}
"#;

/// Runs `PY_PRELUDE + body` in the sandbox and returns the JSON object `R` it printed.
fn py_json(sb: &Isolated, body: &str) -> (Value, String) {
    let code = format!("{PY_PRELUDE}\n{body}\nprint(json.dumps(R))\n");
    let out = sb.python(&code);
    let shown = show(&out);
    eprintln!("probe output: {shown}");
    assert!(
        out.status.success(),
        "the python probe itself failed:\n{shown}"
    );
    let stdout = text(&out.stdout);
    let last = stdout.lines().last().unwrap_or_default();
    let v: Value = serde_json::from_str(last)
        .unwrap_or_else(|e| panic!("probe output is not JSON ({e}):\n{shown}"));
    (v, shown)
}

/// A field of a probe result as a string (JSON strings without quotes).
fn field(v: &Value, key: &str) -> String {
    match &v[key] {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// Names of the host's network interfaces, from the host's /proc/net/dev.
fn host_interfaces() -> Vec<String> {
    std::fs::read_to_string("/proc/net/dev")
        .unwrap_or_default()
        .lines()
        .skip(2)
        .filter_map(|l| l.split(':').next())
        .map(|n| n.trim().to_string())
        .filter(|n| !n.is_empty())
        .collect()
}

/// Every path under `dir` (at most `depth` levels deep) whose name contains `needle`.
fn find_names(dir: &Path, needle: &str, depth: usize, found: &mut Vec<PathBuf>) {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return;
    };
    for e in rd.flatten() {
        let p = e.path();
        if e.file_name().to_string_lossy().contains(needle) {
            found.push(p.clone());
        }
        if depth > 0 && e.file_type().is_ok_and(|t| t.is_dir()) {
            find_names(&p, needle, depth - 1, found);
        }
    }
}

// ---- 1. host files -------------------------------------------------------------------------

/// Attack: read the host's secrets and look around its filesystem.
/// Expected: none of the host paths exist inside; `/` holds only the sandbox's own entries.
#[test]
fn host_files_are_not_visible() {
    let Some(sb) = Isolated::new("escape_a::host_files_are_not_visible") else {
        return;
    };
    let state = sb.env.state();
    let bins = bulkhead_tests::bin_dir();
    let script = format!(
        r#"
for p in /etc/shadow /etc/gshadow /etc/sudoers /etc/ssh /root /home /var /var/lib/bulkhead \
         /boot /srv /opt /mnt /media /run /sys /work '{state}' '{bins}'; do
  if [ -e "$p" ] || [ -L "$p" ]; then echo "PRESENT $p"; fi
done
cat /etc/shadow >/dev/null 2>&1 && echo "READABLE /etc/shadow"
ls /proc/1/root/ >/dev/null 2>&1 && echo "READABLE /proc/1/root"
cat /proc/1/root/etc/shadow >/dev/null 2>&1 && echo "READABLE /proc/1/root/etc/shadow"
ls /proc/1/cwd/ >/dev/null 2>&1 && echo "READABLE /proc/1/cwd"
echo "--- ls /"
ls -A /
"#,
        state = state.display(),
        bins = bins.display()
    );
    let out = sh_ok(&sb, &script);
    let (probes, listing) = out.split_once("--- ls /\n").expect("listing marker");
    let leaks: Vec<&str> = probes
        .lines()
        .filter(|l| l.starts_with("PRESENT") || l.starts_with("READABLE"))
        .collect();
    assert!(
        leaks.is_empty(),
        "host paths reachable from inside the sandbox: {leaks:#?}\nfull output:\n{out}"
    );

    let mut expected: BTreeSet<String> = ["dev", "etc", "proc", "tmp", "usr", "workspace"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    for d in ["bin", "lib", "lib32", "lib64", "libx32", "sbin"] {
        if Path::new("/").join(d).symlink_metadata().is_ok() {
            expected.insert(d.to_string());
        }
    }
    let seen: BTreeSet<String> = listing.lines().map(str::to_string).collect();
    let extra: Vec<&String> = seen.difference(&expected).collect();
    let missing: Vec<&String> = expected.difference(&seen).collect();
    assert!(
        extra.is_empty() && missing.is_empty(),
        "`ls -A /` inside differs from the sandbox root: extra entries (host leak?) {extra:?}, \
         missing {missing:?}; seen {seen:?}"
    );
}

// ---- 2. another workspace's files ----------------------------------------------------------

/// Attack: workspace `attack` looks for a secret that workspace `victim` wrote into its own
/// /workspace, by the victim's host path, through /workspace/.., and by searching everything.
/// Expected: not found anywhere; the attacker's /workspace is empty.
#[test]
fn other_workspace_files_are_not_visible() {
    let Some(sb) = Isolated::new("escape_a::other_workspace_files_are_not_visible") else {
        return;
    };
    let victim = "victim";
    sb.env.create(victim);
    let secret = unique("secret");
    let fname = format!("{}.txt", unique("victim-file"));
    let out = sb
        .env
        .sh(victim, &format!("echo {secret} > /workspace/{fname}"));
    assert!(
        out.status.success(),
        "the victim could not write its own file:\n{}",
        show(&out)
    );
    let vfiles = sb.env.files(victim);
    let on_host = std::fs::read_to_string(vfiles.join(&fname)).unwrap_or_default();
    assert!(
        on_host.contains(&secret),
        "setup: the victim's secret is not in its files dir on the host"
    );

    // The secret is assembled at run time so the script's own argv does not contain it.
    let (s1, s2) = secret.split_at(secret.len() / 2);
    let script = format!(
        r#"
s1='{s1}'; s2='{s2}'; secret="$s1$s2"
for e in $(ls -A /workspace); do echo "WS-ENTRY $e"; done
for p in '{vfiles}/{fname}' '{vfiles}' '{state}/workspaces/{victim}' /workspace/../{fname} \
         /workspace/../{victim} /workspace/../workspaces/{victim}/files/{fname} \
         /workspace/../../{victim}/files/{fname} /tmp/{fname} /dev/shm/{fname}; do
  if [ -e "$p" ] || [ -L "$p" ]; then echo "PRESENT $p"; fi
done
find / -path /proc -prune -o -name '{fname}' -print 2>/dev/null | sed 's/^/FOUND /'
grep -rls "$secret" /workspace /tmp /dev/shm /etc 2>/dev/null | sed 's/^/CONTAINS /'
exit 0
"#,
        vfiles = vfiles.display(),
        state = sb.env.state().display(),
    );
    let out = sh_ok(&sb, &script);
    let leaks: Vec<&str> = out.lines().filter(|l| !l.trim().is_empty()).collect();
    assert!(
        leaks.is_empty() && !out.contains(&secret),
        "workspace `attack` can see workspace `victim`'s data (or its /workspace is not empty): {leaks:#?}"
    );
    let mine: Vec<_> = std::fs::read_dir(sb.env.files(&sb.id))
        .expect("attacker files dir")
        .flatten()
        .map(|e| e.path())
        .collect();
    assert!(
        mine.is_empty(),
        "the attacker's files dir on the host is not empty: {mine:?}"
    );
}

// ---- 3. environment leakage ----------------------------------------------------------------

/// Attack: read the environment, hoping the controller's env (secrets, agent sockets, the
/// operator's HOME/USER) was passed through.
/// Expected: the environment is exactly the allowlist plus what `-e` names; /proc/1/environ is
/// not readable; the canary appears nowhere.
#[test]
fn controller_environment_does_not_leak() {
    let Some(sb) = Isolated::new("escape_a::controller_environment_does_not_leak") else {
        return;
    };
    let canary = unique("canary");
    let with_canaries = |args: &[&str]| -> Output {
        let mut c = sb.env.cmd();
        c.env("BULKHEAD_CANARY", &canary)
            .env("HOME", format!("/root/{canary}"))
            .env("USER", format!("root-{canary}"))
            .env("LOGNAME", format!("root-{canary}"))
            .env("SSH_AUTH_SOCK", format!("/tmp/ssh-{canary}/agent.1"))
            .env("AWS_SECRET_ACCESS_KEY", &canary)
            .env("ANTHROPIC_API_KEY", &canary)
            .env("OPENAI_API_KEY", &canary)
            .env("BULKHEAD_PASSPHRASE", &canary)
            .env("LD_LIBRARY_PATH", format!("/nonexistent-{canary}"));
        c.args(args).output().expect("run bulkhead")
    };

    let out = with_canaries(&[
        "exec",
        &sb.id,
        "-e",
        "EXTRA_VAR=extra-value",
        "--",
        "/usr/bin/env",
    ]);
    assert!(out.status.success(), "env inside failed:\n{}", show(&out));
    let stdout = text(&out.stdout);
    assert!(
        !stdout.contains(&canary),
        "a canary from the controller's environment leaked into the sandbox:\n{stdout}"
    );
    let vars: Vec<(String, String)> = stdout
        .lines()
        .map(|l| {
            let (k, v) = l.split_once('=').unwrap_or((l, ""));
            (k.to_string(), v.to_string())
        })
        .collect();
    let keys: BTreeSet<&str> = vars.iter().map(|(k, _)| k.as_str()).collect();
    let allowed: BTreeSet<&str> = ["PATH", "HOME", "LANG", "TERM", "USER", "EXTRA_VAR"]
        .into_iter()
        .collect();
    assert_eq!(
        keys, allowed,
        "the sandbox's environment is not exactly the allowlist plus -e:\n{stdout}"
    );
    let get = |k: &str| {
        vars.iter()
            .find(|(key, _)| key == k)
            .map(|(_, v)| v.as_str())
            .unwrap_or("")
    };
    assert_eq!(get("HOME"), "/workspace", "HOME inside:\n{stdout}");
    assert_eq!(get("USER"), "sandbox", "USER inside:\n{stdout}");
    assert_eq!(
        get("EXTRA_VAR"),
        "extra-value",
        "the -e variable inside:\n{stdout}"
    );

    // The canary is split so this script's own argv does not contain it.
    let (c1, c2) = canary.split_at(canary.len() / 2);
    let script = format!(
        r#"
c1='{c1}'; c2='{c2}'; canary="$c1$c2"
if cat /proc/1/environ >/dev/null 2>&1; then echo "READABLE /proc/1/environ"; fi
grep -ls "$canary" /proc/[0-9]*/environ 2>/dev/null | sed 's/^/CANARY-IN /'
grep -rls "$canary" /etc /tmp /workspace /dev/shm 2>/dev/null | sed 's/^/CANARY-IN /'
exit 0
"#
    );
    let out = with_canaries(&["exec", &sb.id, "--", "/bin/sh", "-c", &script]);
    assert!(out.status.success(), "probe failed:\n{}", show(&out));
    let stdout = text(&out.stdout);
    assert!(
        stdout.trim().is_empty(),
        "the worker's environment is readable or the controller's canary is visible inside:\n{stdout}"
    );
}

// ---- 4. host processes and signals ---------------------------------------------------------

/// Attack: list processes and SIGKILL the test process, a host child of it, and the worker.
/// Expected: /proc shows only the worker (pid 1) and the script; the kills of host pids fail;
/// the host processes live on; the worker survives and returns the script's exit code.
#[test]
fn host_processes_are_invisible_and_unkillable() {
    let Some(sb) = Isolated::new("escape_a::host_processes_are_invisible_and_unkillable") else {
        return;
    };
    let mut host_child = Command::new("sleep")
        .arg("60")
        .spawn()
        .expect("spawn host sleep");
    let me = std::process::id();
    let child = host_child.id();
    let script = format!(
        r#"
echo "SELF $$"
for d in /proc/[0-9]*; do echo "PROC ${{d#/proc/}} $(cat $d/comm 2>/dev/null)"; done
kill -9 {me} 2>/dev/null; echo "KILL-TEST $?"
kill -9 {child} 2>/dev/null; echo "KILL-CHILD $?"
kill -9 1 2>/dev/null; echo "KILL-1 $?"
sleep 0.2
echo "PID1-AFTER $(cat /proc/1/comm)"
exit 42
"#
    );
    let out = sb.sh(&script);
    let shown = show(&out);
    eprintln!("probe output: {shown}");
    let stdout = text(&out.stdout);
    let still_running = host_child.try_wait().expect("try_wait").is_none();
    let _ = host_child.kill();
    let _ = host_child.wait();

    assert_eq!(
        out.status.code(),
        Some(42),
        "the exec did not return the script's exit code (worker killed?):\n{shown}"
    );
    assert!(
        still_running,
        "the host process {child} died while the sandbox tried to kill it:\n{shown}"
    );
    let line = |p: &str| {
        stdout
            .lines()
            .find_map(|l| l.strip_prefix(p))
            .map(str::trim)
            .unwrap_or("?")
            .to_string()
    };
    let self_pid = line("SELF ");
    let procs: Vec<(String, String)> = stdout
        .lines()
        .filter_map(|l| l.strip_prefix("PROC "))
        .map(|l| {
            let (p, c) = l.split_once(' ').unwrap_or((l, ""));
            (p.to_string(), c.to_string())
        })
        .collect();
    assert!(
        procs.contains(&("1".into(), "bulkhead-worker".into())),
        "pid 1 inside is not the worker:\n{shown}"
    );
    let ours =
        |p: &str, c: &str| (p == "1" && c == "bulkhead-worker") || (p == self_pid && c == "sh");
    let foreign: Vec<&(String, String)> = procs.iter().filter(|(p, c)| !ours(p, c)).collect();
    assert!(
        foreign.is_empty(),
        "processes other than the worker and the script are visible inside: {foreign:?}\n{shown}"
    );
    assert_ne!(
        line("KILL-TEST "),
        "0",
        "kill -9 of the test process's host pid {me} succeeded inside:\n{shown}"
    );
    assert_ne!(
        line("KILL-CHILD "),
        "0",
        "kill -9 of a host process's pid {child} succeeded inside:\n{shown}"
    );
    assert_eq!(
        line("PID1-AFTER "),
        "bulkhead-worker",
        "the worker is gone after kill -9 1:\n{shown}"
    );
}

// ---- 5. loopback services of the host ------------------------------------------------------

/// Attack: connect to TCP and UDP services the host listens on at 127.0.0.1 (and ::1).
/// Expected: refused (the sandbox has its own loopback); the host sockets received nothing.
#[test]
fn host_loopback_services_are_unreachable() {
    let Some(sb) = Isolated::new("escape_a::host_loopback_services_are_unreachable") else {
        return;
    };
    let tcp = TcpListener::bind("127.0.0.1:0").expect("bind tcp");
    tcp.set_nonblocking(true).expect("nonblocking");
    let udp = UdpSocket::bind("127.0.0.1:0").expect("bind udp");
    udp.set_nonblocking(true).expect("nonblocking");
    let tcp6 = TcpListener::bind("[::1]:0").ok();
    if let Some(l) = &tcp6 {
        l.set_nonblocking(true).expect("nonblocking");
    }
    let tport = tcp.local_addr().expect("addr").port();
    let uport = udp.local_addr().expect("addr").port();
    let t6port = tcp6
        .as_ref()
        .map(|l| l.local_addr().expect("addr").port())
        .unwrap_or(0);
    let body = format!(
        r#"
def tcp(fam, host, port):
    s = socket.socket(fam, socket.SOCK_STREAM)
    s.settimeout(2)
    try:
        s.connect((host, port))
        return "CONNECTED"
    except socket.timeout:
        return "timeout"
    except OSError as ex:
        return ename(ex.errno)
    finally:
        s.close()
R["tcp4"] = tcp(socket.AF_INET, "127.0.0.1", {tport})
if {t6port}:
    R["tcp6"] = tcp(socket.AF_INET6, "::1", {t6port})
def udp():
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.settimeout(0.5)
    try:
        s.connect(("127.0.0.1", {uport}))
        s.send(b"bulkhead-escape-probe")
        s.send(b"bulkhead-escape-probe")
        return "ANSWERED: " + repr(s.recv(100))
    except socket.timeout:
        return "no answer"
    except OSError as ex:
        return ename(ex.errno)
    finally:
        s.close()
R["udp"] = udp()
"#
    );
    let (v, shown) = py_json(&sb, &body);
    assert_ne!(
        field(&v, "tcp4"),
        "CONNECTED",
        "connected to the host's 127.0.0.1:{tport} from inside:\n{shown}"
    );
    if tcp6.is_some() {
        assert_ne!(
            field(&v, "tcp6"),
            "CONNECTED",
            "connected to the host's [::1]:{t6port} from inside:\n{shown}"
        );
    }
    assert!(
        !field(&v, "udp").starts_with("ANSWERED"),
        "UDP answer on 127.0.0.1:{uport}:\n{shown}"
    );
    match tcp.accept() {
        Err(e) if e.kind() == ErrorKind::WouldBlock => {}
        other => panic!(
            "the host's TCP listener on 127.0.0.1:{tport} got a connection: {other:?}\n{shown}"
        ),
    }
    if let Some(l) = &tcp6 {
        match l.accept() {
            Err(e) if e.kind() == ErrorKind::WouldBlock => {}
            other => panic!(
                "the host's TCP listener on [::1]:{t6port} got a connection: {other:?}\n{shown}"
            ),
        }
    }
    let mut buf = [0u8; 64];
    match udp.recv_from(&mut buf) {
        Err(e) if e.kind() == ErrorKind::WouldBlock => {}
        other => panic!(
            "the host's UDP socket on 127.0.0.1:{uport} received a datagram: {other:?}\n{shown}"
        ),
    }
}

// ---- 6. abstract unix sockets of the host --------------------------------------------------

/// Attack: connect to an abstract unix socket the host listens on (abstract names are scoped
/// by network namespace), and to well-known host socket paths.
/// Expected: every connection fails; the host sockets received nothing.
#[test]
fn host_abstract_unix_sockets_are_unreachable() {
    let Some(sb) = Isolated::new("escape_a::host_abstract_unix_sockets_are_unreachable") else {
        return;
    };
    let sname = unique("abstract-stream");
    let dname = unique("abstract-dgram");
    let saddr = SocketAddr::from_abstract_name(sname.as_bytes()).expect("abstract addr");
    let daddr = SocketAddr::from_abstract_name(dname.as_bytes()).expect("abstract addr");
    let listener = UnixListener::bind_addr(&saddr).expect("bind abstract stream socket");
    listener.set_nonblocking(true).expect("nonblocking");
    let dgram = UnixDatagram::bind_addr(&daddr).expect("bind abstract datagram socket");
    dgram.set_nonblocking(true).expect("nonblocking");
    let body = format!(
        r#"
def conn(kind, addr):
    s = socket.socket(socket.AF_UNIX, kind)
    s.settimeout(2)
    try:
        if kind == socket.SOCK_DGRAM:
            s.sendto(b"bulkhead-escape-probe", addr)
            return "SENT"
        s.connect(addr)
        return "CONNECTED"
    except OSError as ex:
        return ename(ex.errno)
    finally:
        s.close()
R["stream"] = conn(socket.SOCK_STREAM, "\0{sname}")
R["dgram"] = conn(socket.SOCK_DGRAM, "\0{dname}")
for p in ["/run/dbus/system_bus_socket", "/var/run/docker.sock", "/run/docker.sock",
          "/run/systemd/private", "/run/systemd/notify", "/tmp/.X11-unix/X0"]:
    R[p] = conn(socket.SOCK_STREAM, p)
"#
    );
    let (v, shown) = py_json(&sb, &body);
    let obj = v.as_object().expect("object");
    let reached: Vec<(&String, &Value)> = obj
        .iter()
        .filter(|(_, r)| r.as_str().is_some_and(|r| r == "CONNECTED" || r == "SENT"))
        .collect();
    assert!(
        reached.is_empty(),
        "host unix sockets reachable from inside: {reached:?}\n{shown}"
    );
    match listener.accept() {
        Err(e) if e.kind() == ErrorKind::WouldBlock => {}
        other => {
            panic!("the host's abstract socket @{sname} accepted a connection: {other:?}\n{shown}")
        }
    }
    let mut buf = [0u8; 64];
    match dgram.recv_from(&mut buf) {
        Err(e) if e.kind() == ErrorKind::WouldBlock => {}
        other => {
            panic!("the host's abstract datagram socket @{dname} received data: {other:?}\n{shown}")
        }
    }
}

// ---- 7. interfaces other than lo -----------------------------------------------------------

/// Attack: enumerate network interfaces in every way available.
/// Expected: only `lo`; /sys does not exist; the host's interfaces are unknown by name.
#[test]
fn only_loopback_interface_is_visible() {
    let Some(sb) = Isolated::new("escape_a::only_loopback_interface_is_visible") else {
        return;
    };
    let host_ifaces: Vec<String> = host_interfaces()
        .into_iter()
        .filter(|n| n != "lo")
        .collect();
    let host_json = serde_json::to_string(&host_ifaces).expect("json");
    let body = format!(
        r#"
import fcntl, struct
R["proc_net_dev"] = sorted(l.split(":")[0].strip() for l in open("/proc/net/dev").read().splitlines()[2:])
R["sys"] = os.path.exists("/sys")
R["sys_class_net"] = oserr(lambda: os.listdir("/sys/class/net"))
try:
    R["if_nameindex"] = sorted(n for _, n in socket.if_nameindex())
except OSError as ex:
    R["if_nameindex"] = "error " + ename(ex.errno)
def ifconf():
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    buf = ctypes.create_string_buffer(40 * 64)
    out = fcntl.ioctl(s.fileno(), 0x8912, struct.pack("iL", len(buf), ctypes.addressof(buf)))
    n = struct.unpack("iL", out)[0]
    return sorted({{buf.raw[i:i + 16].split(b"\0")[0].decode() for i in range(0, n, 40)}})
try:
    R["siocgifconf"] = ifconf()
except OSError as ex:
    R["siocgifconf"] = "error " + ename(ex.errno)
R["host_names"] = {{n: oserr(lambda: socket.if_nametoindex(n)) for n in {host_json}}}
"#
    );
    let (v, shown) = py_json(&sb, &body);
    let lo_only = serde_json::json!(["lo"]);
    assert_eq!(
        v["proc_net_dev"], lo_only,
        "/proc/net/dev inside lists more than lo:\n{shown}"
    );
    assert_eq!(
        v["sys"],
        Value::Bool(false),
        "/sys exists inside the sandbox:\n{shown}"
    );
    assert!(
        !field(&v, "sys_class_net").starts_with("OK"),
        "/sys/class/net is listable inside:\n{shown}"
    );
    // if_nameindex() uses netlink, which seccomp refuses: an error is fine, a list must be lo.
    let ni = &v["if_nameindex"];
    assert!(
        ni == &lo_only || ni.as_str().is_some_and(|s| s.starts_with("error")),
        "if_nameindex inside: {ni}\n{shown}"
    );
    assert_eq!(
        v["siocgifconf"], lo_only,
        "SIOCGIFCONF inside lists more than lo:\n{shown}"
    );
    let known: Vec<(&String, &Value)> = v["host_names"]
        .as_object()
        .expect("object")
        .iter()
        .filter(|(_, r)| r.as_str().is_some_and(|r| r.starts_with("OK")))
        .collect();
    assert!(
        known.is_empty(),
        "host interfaces resolvable by name inside: {known:?}\n{shown}"
    );
}

// ---- 8. mount ------------------------------------------------------------------------------

/// Attack: mount a tmpfs, remount /usr read-write, unmount, with mount(8), mount(2) and the new
/// mount API.
/// Expected: all fail (EPERM); the sandbox's mount table and the host's are unchanged.
#[test]
fn mount_is_refused() {
    let Some(sb) = Isolated::new("escape_a::mount_is_refused") else {
        return;
    };
    let host_before = std::fs::read_to_string("/proc/self/mountinfo").expect("host mountinfo");
    let body = r#"
before = open("/proc/self/mounts").read()
R["mount_cmd"] = run(["mount", "-t", "tmpfs", "none", "/tmp"])
R["remount_cmd"] = run(["mount", "-o", "remount,rw", "/usr"])
R["umount_cmd"] = run(["umount", "-l", "/workspace"])
libc.mount.argtypes = [ctypes.c_char_p, ctypes.c_char_p, ctypes.c_char_p, ctypes.c_ulong, ctypes.c_void_p]
ctypes.set_errno(0)
r = libc.mount(b"none", b"/tmp", b"tmpfs", 0, None)
R["mount2"] = res(r, ctypes.get_errno())
MS_REMOUNT, MS_BIND = 32, 4096
ctypes.set_errno(0)
r = libc.mount(None, b"/usr", None, MS_REMOUNT | MS_BIND, None)
R["remount2"] = res(r, ctypes.get_errno())
r, e = sc(166, ctypes.c_char_p(b"/usr"), 2)  # umount2(MNT_DETACH): would uncover the staging root
R["umount2"] = res(r, e)
r, e = sc(430, ctypes.c_char_p(b"tmpfs"), 0)
R["fsopen"] = res(r, e)
if r >= 0: os.close(r)
r, e = sc(428, -100, ctypes.c_char_p(b"/usr"), 1)
R["open_tree_clone"] = res(r, e)
if r >= 0: os.close(r)
after = open("/proc/self/mounts").read()
R["unchanged"] = before == after
if before != after:
    R["before"], R["after"] = before, after
"#;
    let (v, shown) = py_json(&sb, body);
    let host_after = std::fs::read_to_string("/proc/self/mountinfo").expect("host mountinfo");
    for cmd in ["mount_cmd", "remount_cmd", "umount_cmd"] {
        assert_ne!(
            v[cmd]["rc"],
            serde_json::json!(0),
            "`{cmd}` succeeded inside:\n{shown}"
        );
    }
    for call in ["mount2", "remount2", "umount2", "fsopen", "open_tree_clone"] {
        assert_eq!(
            field(&v, call),
            "EPERM",
            "{call} inside did not fail with EPERM:\n{shown}"
        );
    }
    assert_eq!(
        v["unchanged"],
        Value::Bool(true),
        "the sandbox's mount table changed:\n{shown}"
    );
    assert!(
        host_before == host_after,
        "the host's mount table changed during the attack"
    );
}

// ---- 9. nested user namespaces -------------------------------------------------------------

/// Attack: create a user namespace (where the attacker would be root) by unshare(1),
/// unshare(2) and clone(2).
/// Expected: EPERM everywhere; the process stays in the sandbox's user namespace.
#[test]
fn nested_user_namespace_is_refused() {
    let Some(sb) = Isolated::new("escape_a::nested_user_namespace_is_refused") else {
        return;
    };
    let body = r#"
CLONE_NEWUSER, CLONE_NEWNS, CLONE_NEWNET, SIGCHLD = 0x10000000, 0x00020000, 0x40000000, 17
ns_before = os.readlink("/proc/self/ns/user")
R["unshare_U"] = run(["unshare", "-U", "true"])
R["unshare_r"] = run(["unshare", "-r", "true"])
if hasattr(os, "unshare"):
    R["os_unshare"] = oserr(lambda: os.unshare(os.CLONE_NEWUSER))
else:
    R["os_unshare"] = "EPERM"  # python < 3.12: covered by the ctypes call below
libc.unshare.argtypes = [ctypes.c_int]
ctypes.set_errno(0)
r = libc.unshare(CLONE_NEWUSER)
R["libc_unshare"] = res(r, ctypes.get_errno())
for key, flags in [("clone_newuser", CLONE_NEWUSER), ("clone_newuser_ns_net", CLONE_NEWUSER | CLONE_NEWNS | CLONE_NEWNET)]:
    r, e = sc(56, flags | SIGCHLD, 0, 0, 0, 0)
    if r == 0:
        os._exit(0)  # a child in a new user namespace: leave at once
    if r > 0:
        os.waitpid(r, 0)
    R[key] = res(r, e)
R["same_userns"] = os.readlink("/proc/self/ns/user") == ns_before
"#;
    let (v, shown) = py_json(&sb, body);
    for cmd in ["unshare_U", "unshare_r"] {
        assert_ne!(
            v[cmd]["rc"],
            serde_json::json!(0),
            "`{cmd}` created a user namespace inside:\n{shown}"
        );
        assert!(
            field(&v[cmd], "err").contains("Operation not permitted"),
            "`{cmd}` did not fail with EPERM:\n{shown}"
        );
    }
    for call in [
        "os_unshare",
        "libc_unshare",
        "clone_newuser",
        "clone_newuser_ns_net",
    ] {
        assert_eq!(
            field(&v, call),
            "EPERM",
            "{call} inside did not fail with EPERM:\n{shown}"
        );
    }
    assert_eq!(
        v["same_userns"],
        Value::Bool(true),
        "the process left the sandbox's user namespace:\n{shown}"
    );
}

// ---- 10. chroot ----------------------------------------------------------------------------

/// Attack: chroot (the first step of classic chroot breakouts).
/// Expected: chroot(8) and chroot(2) fail with EPERM.
#[test]
fn chroot_is_refused() {
    let Some(sb) = Isolated::new("escape_a::chroot_is_refused") else {
        return;
    };
    let body = r#"
R["chroot_cmd"] = run(["chroot", "/tmp", "/bin/true"])
R["os_chroot_tmp"] = oserr(lambda: os.chroot("/tmp"))
R["os_chroot_root"] = oserr(lambda: os.chroot("/"))
"#;
    let (v, shown) = py_json(&sb, body);
    assert_ne!(
        v["chroot_cmd"]["rc"],
        serde_json::json!(0),
        "`chroot /tmp /bin/true` succeeded inside:\n{shown}"
    );
    assert!(
        field(&v["chroot_cmd"], "err").contains("Operation not permitted"),
        "`chroot /tmp /bin/true` did not fail with EPERM:\n{shown}"
    );
    for call in ["os_chroot_tmp", "os_chroot_root"] {
        assert_eq!(
            field(&v, call),
            "EPERM",
            "{call} inside did not fail with EPERM:\n{shown}"
        );
    }
}

// ---- 11. ptrace and memory of pid 1 --------------------------------------------------------

/// Attack: trace the worker (pid 1) or read its memory, environment and maps; trace a sibling
/// process started by the attacker itself.
/// Expected: ptrace fails with EPERM (seccomp), /proc/1/{mem,environ,maps,auxv} are not
/// readable, process_vm_readv fails with EPERM.
#[test]
fn ptrace_and_worker_memory_are_refused() {
    let Some(sb) = Isolated::new("escape_a::ptrace_and_worker_memory_are_refused") else {
        return;
    };
    let body = r#"
PTRACE_ATTACH, PTRACE_DETACH, PTRACE_SEIZE = 16, 17, 0x4206
def attach(pid, req):
    r, e = sc(101, req, pid, 0, 0)
    if r == 0:
        sc(101, PTRACE_DETACH, pid, 0, 0)
    return res(r, e)
R["attach_1"] = attach(1, PTRACE_ATTACH)
R["seize_1"] = attach(1, PTRACE_SEIZE)
for f in ["mem", "environ", "maps", "auxv"]:
    R["read_" + f] = oserr(lambda: open("/proc/1/" + f, "rb").read(64))
R["cmdline"] = oserr(lambda: open("/proc/1/cmdline", "rb").read(64))
R["vm_readv_1"] = res(*sc(310, 1, 0, 0, 0, 0, 0))
p = subprocess.Popen(["sleep", "10"])
R["attach_sibling"] = attach(p.pid, PTRACE_ATTACH)
R["vm_readv_sibling"] = res(*sc(310, p.pid, 0, 0, 0, 0, 0))
p.kill()
p.wait()
"#;
    let (v, shown) = py_json(&sb, body);
    for call in [
        "attach_1",
        "seize_1",
        "attach_sibling",
        "vm_readv_1",
        "vm_readv_sibling",
    ] {
        assert_eq!(
            field(&v, call),
            "EPERM",
            "{call} inside did not fail with EPERM:\n{shown}"
        );
    }
    for f in ["read_mem", "read_environ", "read_maps", "read_auxv"] {
        assert!(
            !field(&v, f).starts_with("OK"),
            "the worker's /proc/1/{} is readable inside:\n{shown}",
            &f[5..]
        );
    }
}

// ---- 12. fd theft --------------------------------------------------------------------------

/// Attack: steal the worker's file descriptors (its control socket) through /proc/1/fd or
/// pidfd_getfd.
/// Expected: /proc/1/fd is not listable, its entries not openable; pidfd_getfd fails with
/// EPERM; the command itself inherited only 0, 1 and 2.
#[test]
fn worker_fds_cannot_be_stolen() {
    let Some(sb) = Isolated::new("escape_a::worker_fds_cannot_be_stolen") else {
        return;
    };
    let out = sb.exec(&[], &["ls", "-1", "/proc/self/fd"]);
    assert!(
        out.status.success(),
        "ls /proc/self/fd failed:\n{}",
        show(&out)
    );
    let fds: Vec<String> = text(&out.stdout).lines().map(str::to_string).collect();
    // 0, 1, 2, plus the directory ls itself opened to list /proc/self/fd.
    assert_eq!(
        fds,
        ["0", "1", "2", "3"],
        "the command inherited extra file descriptors:\n{}",
        show(&out)
    );

    let body = r#"
R["ls_fd_1"] = oserr(lambda: os.listdir("/proc/1/fd"))
R["readlink_fd_1_3"] = oserr(lambda: os.readlink("/proc/1/fd/3"))
R["open_fd_1_3"] = oserr(lambda: os.close(os.open("/proc/1/fd/3", os.O_RDONLY)))
pidfd, e = sc(434, 1, 0)
R["pidfd_open_1"] = res(pidfd, e)
stolen = {}
for target in range(0, 8):
    r, e = sc(438, pidfd, target, 0)
    stolen[str(target)] = res(r, e)
    if r >= 0:
        stolen[str(target)] += " -> " + os.readlink("/proc/self/fd/%d" % r)
        os.close(r)
R["pidfd_getfd"] = stolen
"#;
    let (v, shown) = py_json(&sb, body);
    for probe in ["ls_fd_1", "readlink_fd_1_3", "open_fd_1_3"] {
        assert!(
            !field(&v, probe).starts_with("OK"),
            "{probe}: the worker's fds are reachable inside:\n{shown}"
        );
    }
    let got: Vec<(&String, &Value)> = v["pidfd_getfd"]
        .as_object()
        .expect("object")
        .iter()
        .filter(|(_, r)| r.as_str() != Some("EPERM"))
        .collect();
    assert!(
        got.is_empty(),
        "pidfd_getfd on the worker did not fail with EPERM: {got:?}\n{shown}"
    );
}

// ---- 13. capabilities, NoNewPrivs, seccomp, identity ---------------------------------------

/// Attack surface check: what the sandboxed process holds.
/// Expected: no capabilities in any set, NoNewPrivs 1, seccomp filter mode with at least 3
/// filters, uid 1000 (sandbox) mapped to an unprivileged host id.
#[test]
fn no_capabilities_and_unprivileged_identity() {
    let Some(sb) = Isolated::new("escape_a::no_capabilities_and_unprivileged_identity") else {
        return;
    };
    let out = sh_ok(
        &sb,
        "grep -E '^(Cap|NoNewPrivs|Seccomp)' /proc/self/status; echo \"ID $(id)\"; \
         sed 's/^/UIDMAP /' /proc/self/uid_map; sed 's/^/GIDMAP /' /proc/self/gid_map",
    );
    let status = |k: &str| {
        out.lines()
            .find_map(|l| l.strip_prefix(&format!("{k}:")))
            .map(str::trim)
            .unwrap_or("<missing>")
            .to_string()
    };
    for cap in ["CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb"] {
        assert_eq!(
            status(cap),
            "0000000000000000",
            "{cap} is not empty inside:\n{out}"
        );
    }
    assert_eq!(
        status("NoNewPrivs"),
        "1",
        "NoNewPrivs is not set inside:\n{out}"
    );
    assert_eq!(
        status("Seccomp"),
        "2",
        "seccomp is not in filter mode inside:\n{out}"
    );
    let filters: u32 = status("Seccomp_filters").parse().unwrap_or(0);
    let expected = bulkhead_seccomp::build_filters().unwrap().len() as u32;
    assert_eq!(
        filters, expected,
        "seccomp filters inside differ from the policy's:\n{out}"
    );
    let id = out
        .lines()
        .find_map(|l| l.strip_prefix("ID "))
        .unwrap_or("");
    assert!(
        id.starts_with("uid=1000(sandbox) gid=1000(sandbox)"),
        "identity inside: {id}\n{out}"
    );
    for map in ["UIDMAP ", "GIDMAP "] {
        let lines: Vec<Vec<&str>> = out
            .lines()
            .filter_map(|l| l.strip_prefix(map))
            .map(|l| l.split_whitespace().collect())
            .collect();
        assert_eq!(lines.len(), 1, "{map}has more than one line:\n{out}");
        let f = &lines[0];
        assert!(
            f.len() == 3 && f[0] == "1000" && f[2] == "1",
            "{map}is not `1000 <host id> 1`:\n{out}"
        );
        assert_ne!(f[1], "0", "{map}maps the sandbox user to host root:\n{out}");
    }
}

// ---- 14. writes outside /workspace and /tmp ------------------------------------------------

/// Attack: create files everywhere in the tree and write to host-affecting /proc files.
/// Expected: only /workspace, /tmp and /dev/shm are writable; the host's corresponding paths
/// (and the host's /tmp, where the launcher stages the root) gain no file of this test.
#[test]
fn writes_outside_workspace_and_tmp_fail() {
    let Some(sb) = Isolated::new("escape_a::writes_outside_workspace_and_tmp_fail") else {
        return;
    };
    let tag = unique("write");
    let denied = [
        "/",
        "/etc/",
        "/usr/",
        "/usr/bin/",
        "/usr/local/",
        "/dev/",
        "/dev/pts/",
        "/proc/",
        "/var/",
        "/lib/",
    ];
    let allowed = ["/workspace/", "/tmp/", "/dev/shm/"];
    let script = format!(
        r#"
for d in {all}; do
  if touch "${{d}}{tag}" 2>/dev/null; then echo "CREATED ${{d}}{tag}"; else echo "REFUSED ${{d}}{tag}"; fi
done
if mkdir /usr/local/d-{tag} 2>/dev/null; then echo "CREATED /usr/local/d-{tag}"; fi
if echo x >> /etc/passwd 2>/dev/null; then echo "WROTE /etc/passwd"; fi
if echo x > /proc/sys/kernel/hostname 2>/dev/null; then echo "WROTE /proc/sys/kernel/hostname"; fi
if echo h > /proc/sysrq-trigger 2>/dev/null; then echo "WROTE /proc/sysrq-trigger"; fi
exit 0
"#,
        all = denied
            .iter()
            .chain(allowed.iter())
            .copied()
            .collect::<Vec<_>>()
            .join(" ")
    );
    let out = sh_ok(&sb, &script);
    let created: BTreeSet<String> = out
        .lines()
        .filter_map(|l| l.strip_prefix("CREATED "))
        .map(str::to_string)
        .collect();
    let expected: BTreeSet<String> = allowed.iter().map(|d| format!("{d}{tag}")).collect();

    // Host side, checked before asserting so any leak is cleaned up too.
    let mut host_leaks = Vec::new();
    for d in denied.iter().chain(["/tmp/", "/dev/shm/"].iter()) {
        let p = PathBuf::from(format!("{d}{tag}"));
        if p.symlink_metadata().is_ok() {
            let _ = std::fs::remove_file(&p);
            host_leaks.push(p);
        }
    }
    let d = PathBuf::from(format!("/usr/local/d-{tag}"));
    if d.exists() {
        let _ = std::fs::remove_dir(&d);
        host_leaks.push(d);
    }
    find_names(Path::new("/tmp"), &tag, 3, &mut host_leaks);

    let unexpected: Vec<&String> = created.difference(&expected).collect();
    let bad_writes: Vec<&str> = out.lines().filter(|l| l.starts_with("WROTE")).collect();
    assert!(
        unexpected.is_empty(),
        "files created outside /workspace, /tmp and /dev/shm: {unexpected:?}\n{out}"
    );
    assert!(
        bad_writes.is_empty(),
        "writes outside the writable areas succeeded: {bad_writes:?}\n{out}"
    );
    assert_eq!(
        created, expected,
        "the writable areas are not writable:\n{out}"
    );
    assert!(
        host_leaks.is_empty(),
        "the attack's files appeared on the host: {host_leaks:?}"
    );
    assert!(
        sb.env.files(&sb.id).join(&tag).exists(),
        "/workspace/{tag} did not land in the workspace's files dir"
    );
    assert_absent(&PathBuf::from(format!("/tmp/{tag}")));
}

// ---- 15. the denied syscalls ---------------------------------------------------------------

/// Harmless arguments per syscall: by default all zeros; these get an invalid fd (-1) or an
/// invalid request where zero would mean something (ptrace 0 is PTRACE_TRACEME, fd 0 is
/// stdin). Values are python expressions.
const SYSCALL_ARGS: &[(&str, &str)] = &[
    ("ptrace", "[-1, 0, 0, 0]"),
    ("setns", "[-1, 0]"),
    ("pidfd_getfd", "[-1, -1, 0]"),
    ("process_madvise", "[-1, 0, 0, 0, 0]"),
    ("process_mrelease", "[-1, 0]"),
    ("io_uring_enter", "[-1, 0, 0, 0, 0, 0]"),
    ("io_uring_register", "[-1, 0, 0, 0]"),
    ("finit_module", "[-1, 0, 0]"),
    ("kexec_file_load", "[-1, -1, 0, 0, 0]"),
    ("quotactl_fd", "[-1, 0, 0, 0]"),
    ("fsconfig", "[-1, 0, 0, 0, 0]"),
    ("fsmount", "[-1, 0, 0]"),
    ("fspick", "[-1, 0, 0]"),
    ("move_mount", "[-1, 0, -1, 0, 0]"),
    ("open_tree", "[-1, 0, 0]"),
    ("open_tree_attr", "[-1, 0, 0, 0, 0]"),
    ("mount_setattr", "[-1, 0, 0, 0, 0]"),
    ("keyctl", "[-1, 0, 0, 0, 0]"),
    ("bpf", "[-1, 0, 0]"),
    ("perf_event_open", "[0, 0, -1, -1, 0]"),
    ("name_to_handle_at", "[-1, 0, 0, 0, 0]"),
    ("open_by_handle_at", "[-1, 0, 0]"),
    ("kcmp", "[-1, -1, 0, 0, 0]"),
];

/// Attack: call every syscall the policy denies on purpose, with harmless arguments.
/// Expected: each fails with EPERM, except clone3 with ENOSYS (so libc falls back to clone).
#[test]
fn denied_syscalls_fail() {
    let Some(sb) = Isolated::new("escape_a::denied_syscalls_fail") else {
        return;
    };
    let table = bulkhead_seccomp::MUST_DENY;
    assert!(!table.is_empty(), "MUST_DENY is empty on this architecture");
    let list = table
        .iter()
        .map(|(n, nr)| format!("(\"{n}\", {nr})"))
        .collect::<Vec<_>>()
        .join(", ");
    let args = SYSCALL_ARGS
        .iter()
        .map(|(n, a)| format!("\"{n}\": {a}"))
        .collect::<Vec<_>>()
        .join(", ");
    let body = format!(
        r#"
ARGS = {{{args}}}
for name, nr in [{list}]:
    r, e = sc(nr, *ARGS.get(name, [0, 0, 0, 0, 0, 0]))
    print("SYSCALL", name, nr, r, ename(e) if r == -1 else "OK", flush=True)
"#
    );
    let code = format!("{PY_PRELUDE}\n{body}");
    let out = sb.python(&code);
    let shown = show(&out);
    eprintln!("probe output: {shown}");
    assert!(out.status.success(), "the syscall probe died (killed by seccomp?); the last line is the culprit's predecessor:\n{shown}");
    let stdout = text(&out.stdout);
    let results: Vec<(String, String)> = stdout
        .lines()
        .filter_map(|l| l.strip_prefix("SYSCALL "))
        .map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            (
                f.first().unwrap_or(&"?").to_string(),
                f.last().unwrap_or(&"?").to_string(),
            )
        })
        .collect();
    let table_text = results
        .iter()
        .map(|(n, e)| format!("  {n:<26} {e}"))
        .collect::<Vec<_>>()
        .join("\n");
    let mut wrong = Vec::new();
    for (name, _) in table {
        let want = match bulkhead_seccomp::DENIED
            .iter()
            .find(|e| e.name == *name)
            .map(|e| e.errno)
        {
            Some(libc::ENOSYS) => "ENOSYS",
            _ => "EPERM",
        };
        let got = results
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, e)| e.as_str())
            .unwrap_or("<not run>");
        if got != want {
            wrong.push(format!("{name}: got {got}, want {want}"));
        }
    }
    assert!(
        wrong.is_empty(),
        "denied syscalls that did not fail as expected: {wrong:#?}\nname -> errno:\n{table_text}"
    );
}
