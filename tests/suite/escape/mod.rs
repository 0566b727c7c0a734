//! The escape suite: attacks from inside a sandbox, one file per thing attacked (`fs`,
//! `proc_ipc`, `net`, `privilege`, `kernel`, `resources`); the helpers they share are here.
//!
//! Every attack runs only inside a sandbox that [`Isolated::new`] has just checked to be in its
//! own mount, pid, net and uts namespaces. Each test states the attack and the outcome a user
//! would check: the attack failed, and where it could have had an effect, the host is unchanged.
//! Probes are chosen to be harmless even if a layer were missing (empty files with unique names,
//! zero or invalid arguments, connections only to sockets the test itself owns on loopback).

mod fs;
mod kernel;
mod net;
mod privilege;
mod proc_ipc;
mod resources;

use std::collections::BTreeSet;
use std::io::ErrorKind;
use std::net::{TcpListener, UdpSocket};
use std::os::linux::net::SocketAddrExt;
use std::os::unix::net::{SocketAddr, UnixDatagram, UnixListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

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

/// Resource bombs run one at a time (each is capped, but two cores are shared).
static BOMBS: Mutex<()> = Mutex::new(());

fn bomb_lock() -> std::sync::MutexGuard<'static, ()> {
    BOMBS.lock().unwrap_or_else(|p| p.into_inner())
}

/// Exit code as `bulkhead` reported it (-1 when it was killed by a signal itself).
fn code(o: &Output) -> i32 {
    o.status.code().unwrap_or(-1)
}

/// Everything a failure message needs.
fn show_status(o: &Output) -> String {
    format!(
        "status: {}\n--- stdout ---\n{}\n--- stderr ---\n{}",
        o.status,
        text(&o.stdout),
        text(&o.stderr)
    )
}

/// Parses the last stdout line that is a JSON object (what the python probes print).
fn json_out(o: &Output) -> Value {
    text(&o.stdout)
        .lines()
        .rev()
        .find_map(|l| {
            serde_json::from_str::<Value>(l)
                .ok()
                .filter(Value::is_object)
        })
        .unwrap_or_else(|| panic!("no JSON result from the probe:\n{}", show_status(o)))
}

/// A unique marker for process scans.
fn marker(what: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    format!("bh-escb-{what}-{}-{nanos}", std::process::id())
}

/// Host processes (pid, argv) for which `pred` holds; our own process excluded.
fn host_procs(pred: impl Fn(&[String]) -> bool) -> Vec<(u32, Vec<String>)> {
    let me = std::process::id();
    let mut found = Vec::new();
    let Ok(rd) = std::fs::read_dir("/proc") else {
        return found;
    };
    for e in rd.flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
            continue;
        };
        if pid == me {
            continue;
        }
        let Ok(raw) = std::fs::read(format!("/proc/{pid}/cmdline")) else {
            continue;
        };
        let argv: Vec<String> = raw
            .split(|b| *b == 0)
            .filter(|a| !a.is_empty())
            .map(text)
            .collect();
        if !argv.is_empty() && pred(&argv) {
            found.push((pid, argv));
        }
    }
    found
}

/// Host processes that sit in a cgroup whose path has the component `name`.
fn procs_in_cgroup(name: &str) -> Vec<(u32, String)> {
    let mut found = Vec::new();
    let Ok(rd) = std::fs::read_dir("/proc") else {
        return found;
    };
    for e in rd.flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
            continue;
        };
        let Ok(cg) = std::fs::read_to_string(format!("/proc/{pid}/cgroup")) else {
            continue;
        };
        let hit = cg.lines().any(|l| {
            l.splitn(3, ':')
                .nth(2)
                .is_some_and(|p| p.split('/').any(|c| c == name))
        });
        if hit {
            let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
            found.push((pid, comm.trim().to_string()));
        }
    }
    found
}

/// Cgroup directories (any hierarchy, depth ≤ 6 under /sys/fs/cgroup) named `name`.
fn cgroup_dirs(name: &str) -> Vec<PathBuf> {
    fn walk(d: &Path, depth: u32, name: &str, out: &mut Vec<PathBuf>) {
        let Ok(rd) = std::fs::read_dir(d) else { return };
        for e in rd.flatten() {
            let Ok(ft) = e.file_type() else { continue };
            if !ft.is_dir() {
                continue;
            }
            let p = e.path();
            if e.file_name().to_str() == Some(name) {
                out.push(p.clone());
            }
            if depth < 6 {
                walk(&p, depth + 1, name, out);
            }
        }
    }
    let mut out = Vec::new();
    walk(Path::new("/sys/fs/cgroup"), 1, name, &mut out);
    out
}

/// Whether a process with this pid exists and is a `bulkhead-launch`.
fn launcher_alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/comm"))
        .is_ok_and(|c| c.trim() == "bulkhead-launch")
}

/// Name of the sandbox cgroup of launcher `pid` for the workspace.
fn sandbox_cgroup(sb: &Isolated, pid: u32) -> String {
    format!("bulkhead-{}-{pid}", sb.id)
}

/// Asserts that nothing of the sandbox started by launcher `pid` remains on the host.
fn assert_sandbox_gone(sb: &Isolated, pid: u32) {
    let name = sandbox_cgroup(sb, pid);
    // The launcher removes the cgroup before it exits; give it a moment.
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let dirs = cgroup_dirs(&name);
        let procs = procs_in_cgroup(&name);
        let alive = launcher_alive(pid);
        if dirs.is_empty() && procs.is_empty() && !alive {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "sandbox of launcher {pid} left behind: cgroup dirs {dirs:?}, processes in it {procs:?}, launcher alive {alive}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Launcher pids that have a run file for the workspace.
fn run_files(sb: &Isolated) -> BTreeSet<u32> {
    let run = sb.env.state().join("workspaces").join(&sb.id).join("run");
    std::fs::read_dir(run)
        .map(|rd| {
            rd.flatten()
                .filter_map(|e| e.file_name().to_str().and_then(|s| s.parse().ok()))
                .collect()
        })
        .unwrap_or_default()
}

/// The `bulkhead exec` command line (not started).
fn exec_cmd(sb: &Isolated, flags: &[&str], argv: &[&str]) -> Command {
    let mut c = sb.env.cmd();
    c.arg("exec").arg(&sb.id).args(flags).arg("--").args(argv);
    c.stdout(Stdio::piped()).stderr(Stdio::piped());
    c
}

/// Waits for a new run file (a sandbox up) while `child` runs; `None` if it ended first.
fn wait_launcher(
    sb: &Isolated,
    before: &BTreeSet<u32>,
    mut finished: impl FnMut() -> bool,
) -> Option<u32> {
    let deadline = Instant::now() + Duration::from_secs(20);
    while Instant::now() < deadline {
        if let Some(p) = run_files(sb).difference(before).next() {
            return Some(*p);
        }
        if finished() {
            return None;
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    None
}

/// An exec whose launcher pid is learnt while it runs; `during` runs once the sandbox is up.
struct Tracked {
    out: Output,
    launcher: u32,
    elapsed: Duration,
}

fn run_tracked(sb: &Isolated, flags: &[&str], argv: &[&str], during: impl FnOnce(u32)) -> Tracked {
    let before = run_files(sb);
    let start = Instant::now();
    let child = exec_cmd(sb, flags, argv)
        .spawn()
        .expect("spawn bulkhead exec");
    let waiter = std::thread::spawn(move || {
        let out = child.wait_with_output().expect("wait bulkhead exec");
        (out, Instant::now())
    });
    let launcher = wait_launcher(sb, &before, || waiter.is_finished());
    if let Some(l) = launcher {
        during(l);
    }
    let (out, end) = waiter.join().expect("waiter thread");
    let launcher = launcher.unwrap_or_else(|| {
        panic!(
            "never saw the sandbox's run file (the probe sleeps first):\n{}",
            show_status(&out)
        )
    });
    Tracked {
        out,
        launcher,
        elapsed: end - start,
    }
}

/// Kills a spawned child on drop (used only on failure paths).
struct KillOnDrop(Option<Child>);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        if let Some(c) = self.0.as_mut() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// Host `/proc/self/cgroup` paths that are not the root: what a sandbox must never see.
fn host_cgroup_paths() -> Vec<String> {
    std::fs::read_to_string("/proc/self/cgroup")
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.splitn(3, ':').nth(2))
        .filter(|p| *p != "/" && !p.is_empty())
        .map(str::to_string)
        .collect()
}

fn host_hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .expect("host hostname")
        .trim()
        .to_string()
}
