//! Escape suite, second half: devices, /proc/sys, cgroupfs, terminals, clocks, sockets,
//! SysV IPC, foreign syscall ABIs, setuid binaries, planted symlinks, resource bombs,
//! stragglers, timeouts and deleting a workspace under a running sandbox.
//!
//! Every attack runs inside a sandbox that [`Isolated::new`] has just checked; the host side
//! of each test only prepares bait (IPC objects, a canary directory) and checks the damage.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use bulkhead_tests::{text, Isolated};
use serde_json::Value;

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
fn show(o: &Output) -> String {
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
        .unwrap_or_else(|| panic!("no JSON result from the probe:\n{}", show(o)))
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
            show(&out)
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

// ---------------------------------------------------------------------------------------
// 1. raw devices

#[test]
fn raw_devices_absent_and_mknod_refused() {
    let Some(sb) = Isolated::new("raw_devices_absent_and_mknod_refused") else {
        return;
    };
    let out = sb.sh("ls -A /dev");
    assert!(out.status.success(), "{}", show(&out));
    let got: BTreeSet<String> = text(&out.stdout)
        .split_whitespace()
        .map(str::to_string)
        .collect();
    let allowed: BTreeSet<String> = [
        "null", "zero", "full", "random", "urandom", "tty", "ptmx", "pts", "shm", "fd", "stdin",
        "stdout", "stderr",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let extra: Vec<_> = got.difference(&allowed).collect();
    assert!(
        extra.is_empty(),
        "unexpected entries in the sandbox's /dev: {extra:?} (all: {got:?})"
    );

    let out = sb.sh(
        "for d in /dev/sda /dev/vda /dev/mem /dev/kmem /dev/port /dev/kmsg /dev/nvme0n1 /dev/loop0 /dev/net/tun /dev/fuse; do \
           [ -e $d ] && echo PRESENT $d; done; \
         mknod /tmp/x c 1 3; echo mknod_c=$?; mknod /tmp/b b 254 0; echo mknod_b=$?; \
         mknod /workspace/x c 1 3; echo mknod_ws=$?; \
         ls -l /tmp/x /tmp/b /workspace/x 2>/dev/null; echo done",
    );
    let so = text(&out.stdout);
    assert!(
        !so.contains("PRESENT"),
        "host devices reachable inside:\n{}",
        show(&out)
    );
    for k in ["mknod_c", "mknod_b", "mknod_ws"] {
        assert!(
            !so.contains(&format!("{k}=0")),
            "{k} succeeded:\n{}",
            show(&out)
        );
        assert!(
            so.contains(&format!("{k}=")),
            "{k} did not run:\n{}",
            show(&out)
        );
    }
    assert!(
        so.trim_end().ends_with("done") && !so.contains("crw") && !so.contains("brw"),
        "a device node exists:\n{}",
        show(&out)
    );
    assert!(
        !sb.env.files(&sb.id).join("x").exists(),
        "a device node landed in the workspace on the host"
    );

    let out = sb.python(
        r#"
import os, stat, json, errno
res = {}
for name, mode, dev, path in [("chr_mem", stat.S_IFCHR, os.makedev(1, 1), "/tmp/mem"),
                              ("chr_null", stat.S_IFCHR, os.makedev(1, 3), "/tmp/null2"),
                              ("blk_vda", stat.S_IFBLK, os.makedev(254, 0), "/tmp/vda"),
                              ("chr_ws", stat.S_IFCHR, os.makedev(1, 1), "/workspace/mem")]:
    try:
        os.mknod(path, mode | 0o666, dev)
        res[name] = "created"
    except OSError as e:
        res[name] = errno.errorcode.get(e.errno, str(e.errno))
print(json.dumps(res))
"#,
    );
    let r = json_out(&out);
    for (k, v) in r.as_object().expect("object") {
        let v = v.as_str().unwrap_or_default();
        assert!(
            v == "EPERM" || v == "EACCES",
            "os.mknod {k}: {v} (expected EPERM/EACCES)\n{}",
            show(&out)
        );
    }
    assert!(
        !sb.env.files(&sb.id).join("mem").exists(),
        "a device node landed in the workspace on the host"
    );
}

// ---------------------------------------------------------------------------------------
// 2. /proc/sys and sysrq

#[test]
fn proc_sys_and_sysrq_not_writable() {
    let Some(sb) = Isolated::new("proc_sys_and_sysrq_not_writable") else {
        return;
    };
    let host_name = host_hostname();
    let host_domain = std::fs::read_to_string("/proc/sys/kernel/domainname").unwrap_or_default();
    let host_core = std::fs::read_to_string("/proc/sys/kernel/core_pattern").unwrap_or_default();
    // Only harmless writes: a hostname, drop_caches, the help key of sysrq, and
    // core_pattern rewritten with the value it already has.
    let out = sb.sh("echo escaped > /proc/sys/kernel/hostname; echo hostname=$?; \
         echo escaped > /proc/sys/kernel/domainname; echo domainname=$?; \
         echo 3 > /proc/sys/vm/drop_caches; echo drop_caches=$?; \
         echo h > /proc/sysrq-trigger; echo sysrq=$?; \
         cat /proc/sys/kernel/core_pattern > /tmp/cp && cat /tmp/cp > /proc/sys/kernel/core_pattern; echo core_pattern=$?; \
         cat /proc/sys/kernel/hostname");
    let so = text(&out.stdout);
    for k in [
        "hostname",
        "domainname",
        "drop_caches",
        "sysrq",
        "core_pattern",
    ] {
        assert!(
            so.contains(&format!("{k}=")),
            "{k} write did not run:\n{}",
            show(&out)
        );
        assert!(
            !so.contains(&format!("{k}=0")),
            "write to /proc ({k}) succeeded inside the sandbox:\n{}",
            show(&out)
        );
    }
    assert!(
        !so.contains("escaped"),
        "the sandbox's hostname changed:\n{}",
        show(&out)
    );

    let out = sb.python(
        r#"
import json, errno
res = {}
for p, v in [("/proc/sys/kernel/hostname", "escaped"), ("/proc/sys/vm/drop_caches", "3"),
             ("/proc/sysrq-trigger", "h"), ("/proc/sys/kernel/panic", "0")]:
    try:
        with open(p, "w") as f:
            f.write(v)
        res[p] = "written"
    except OSError as e:
        res[p] = errno.errorcode.get(e.errno, str(e.errno))
print(json.dumps(res))
"#,
    );
    let r = json_out(&out);
    for (k, v) in r.as_object().expect("object") {
        assert_ne!(
            v.as_str(),
            Some("written"),
            "python wrote {k}:\n{}",
            show(&out)
        );
    }
    assert_eq!(host_hostname(), host_name, "the host's hostname changed");
    assert_eq!(
        std::fs::read_to_string("/proc/sys/kernel/domainname").unwrap_or_default(),
        host_domain,
        "the host's domainname changed"
    );
    assert_eq!(
        std::fs::read_to_string("/proc/sys/kernel/core_pattern").unwrap_or_default(),
        host_core,
        "the host's core_pattern changed"
    );
}

// ---------------------------------------------------------------------------------------
// 3. cgroupfs

#[test]
fn cgroupfs_unreachable_and_cgroup_path_hidden() {
    let Some(sb) = Isolated::new("cgroupfs_unreachable_and_cgroup_path_hidden") else {
        return;
    };
    let out = sb.sh("[ -e /sys ] && echo SYS_PRESENT; \
         mkdir -p /tmp/cg /tmp/cg1; \
         mount -t cgroup2 none /tmp/cg; echo cg2=$?; \
         mount -t cgroup -o memory none /tmp/cg1; echo cg1=$?; \
         mount -t sysfs none /tmp/cg; echo sysfs=$?; \
         grep -c cgroup /proc/self/mountinfo; \
         echo ---; cat /proc/self/cgroup; echo ---; cat /proc/1/cgroup");
    let so = text(&out.stdout);
    assert!(
        !so.contains("SYS_PRESENT"),
        "/sys exists inside:\n{}",
        show(&out)
    );
    for k in ["cg2", "cg1", "sysfs"] {
        assert!(
            so.contains(&format!("{k}=")) && !so.contains(&format!("{k}=0\n")),
            "mount {k} succeeded:\n{}",
            show(&out)
        );
    }
    let mut parts = so.split("---\n");
    let head = parts.next().unwrap_or_default();
    assert_eq!(
        head.lines().last(),
        Some("0"),
        "cgroup mounts visible in mountinfo:\n{}",
        show(&out)
    );
    let own = parts.next().unwrap_or_default();
    let init = parts.next().unwrap_or_default();
    assert!(
        own.lines().any(|l| l == "0::/"),
        "/proc/self/cgroup lacks 0::/ (cgroup namespace root):\n{own}"
    );
    for l in own.lines().chain(init.lines()) {
        let path = l.splitn(3, ':').nth(2).unwrap_or("?");
        assert_eq!(
            path,
            "/",
            "a cgroup path leaks inside: {l:?}\n{}",
            show(&out)
        );
    }
    for p in host_cgroup_paths() {
        assert!(
            !so.contains(&p),
            "the host cgroup path {p} is visible inside:\n{}",
            show(&out)
        );
    }
    assert!(
        !so.contains("bulkhead-"),
        "the sandbox cgroup name is visible inside:\n{}",
        show(&out)
    );

    let out = sb.python(
        r#"
import ctypes, json, os, errno
libc = ctypes.CDLL(None, use_errno=True)
res = {}
for fs, opts in [(b"cgroup2", None), (b"cgroup", b"memory"), (b"sysfs", None), (b"proc", None)]:
    os.makedirs("/tmp/m", exist_ok=True)
    r = libc.mount(b"none", b"/tmp/m", fs, 0, opts)
    res[fs.decode()] = "mounted" if r == 0 else errno.errorcode.get(ctypes.get_errno(), "?")
print(json.dumps(res))
"#,
    );
    let r = json_out(&out);
    for (k, v) in r.as_object().expect("object") {
        assert_eq!(
            v.as_str(),
            Some("EPERM"),
            "mount({k}) from python: {v}\n{}",
            show(&out)
        );
    }
}

// ---------------------------------------------------------------------------------------
// 4. TIOCSTI / TIOCLINUX

#[test]
fn tiocsti_and_tioclinux_denied_by_seccomp() {
    let Some(sb) = Isolated::new("tiocsti_and_tioclinux_denied_by_seccomp") else {
        return;
    };
    let out = sb.python(
        r#"
import os, fcntl, termios, json, errno
TIOCLINUX = 0x541C
def name(e): return errno.errorcode.get(e.errno, str(e.errno))
def probe(fd):
    out = {}
    for req, n in [(termios.TIOCSTI, "TIOCSTI"), (TIOCLINUX, "TIOCLINUX")]:
        try:
            fcntl.ioctl(fd, req, b"x")
            out[n] = "ok"
        except OSError as e:
            out[n] = name(e)
    return out
res = {}
fd = os.open("/dev/null", os.O_RDWR)
res["null"] = probe(fd)
os.close(fd)
m, s = os.openpty()
res["pty_slave"] = probe(s)
res["pty_master"] = probe(m)
# With the pty as controlling terminal, /dev/tty works: try it there too.
r, w = os.pipe()
pid = os.fork()
if pid == 0:
    out = {}
    try:
        os.setsid()
        fcntl.ioctl(s, termios.TIOCSCTTY, 0)
        t = os.open("/dev/tty", os.O_RDWR)
        out = probe(t)
    except OSError as e:
        out = {"setup": name(e)}
    os.write(w, json.dumps(out).encode())
    os._exit(0)
os.close(w)
os.waitpid(pid, 0)
res["ctty"] = json.loads(os.read(r, 4096) or b"{}")
try:
    t = os.open("/dev/tty", os.O_RDWR)
    res["dev_tty"] = probe(t)
except OSError as e:
    res["dev_tty"] = {"open": name(e)}
# Nothing was injected into the pty's input queue.
os.set_blocking(s, False)
try:
    res["injected"] = os.read(s, 64).decode()
except OSError:
    res["injected"] = ""
print(json.dumps(res))
"#,
    );
    assert!(out.status.success(), "{}", show(&out));
    let r = json_out(&out);
    // EPERM, not ENOTTY: the filter refuses the request before any driver sees it.
    for fd in ["null", "pty_slave", "pty_master"] {
        for req in ["TIOCSTI", "TIOCLINUX"] {
            assert_eq!(
                r[fd][req].as_str(),
                Some("EPERM"),
                "{req} on {fd}: {}\n{}",
                r[fd][req],
                show(&out)
            );
        }
    }
    // The controlling-terminal path: EPERM if the pty could become the ctty.
    if r["ctty"].get("setup").is_none() {
        for req in ["TIOCSTI", "TIOCLINUX"] {
            assert_eq!(
                r["ctty"][req].as_str(),
                Some("EPERM"),
                "{req} on /dev/tty (pty ctty): {}\n{}",
                r["ctty"][req],
                show(&out)
            );
        }
    } else {
        eprintln!(
            "note: could not make the pty a controlling terminal: {}",
            r["ctty"]
        );
    }
    // The sandbox has no /dev/tty (and no controlling terminal): ENOENT.
    match r["dev_tty"].get("open") {
        Some(e) => assert_eq!(e.as_str(), Some("ENOENT"), "opening /dev/tty: {e}"),
        None => {
            for req in ["TIOCSTI", "TIOCLINUX"] {
                assert_eq!(
                    r["dev_tty"][req].as_str(),
                    Some("EPERM"),
                    "{req} on /dev/tty: {}",
                    r["dev_tty"][req]
                );
            }
        }
    }
    assert_eq!(
        r["injected"].as_str(),
        Some(""),
        "bytes were injected into the pty"
    );
}

// ---------------------------------------------------------------------------------------
// 5. hostname and clock

#[test]
fn hostname_and_clock_cannot_change() {
    let Some(sb) = Isolated::new("hostname_and_clock_cannot_change") else {
        return;
    };
    let host_name = host_hostname();
    // Every clock write sets the time it already is: harmless even if it went through.
    let out = sb.sh("hostname evil; echo sethost=$?; hostname; date -s \"@$(date +%s)\" >/dev/null; echo date=$?");
    let so = text(&out.stdout);
    assert!(
        so.contains("sethost=") && !so.contains("sethost=0"),
        "hostname evil succeeded:\n{}",
        show(&out)
    );
    assert!(
        so.contains("date=") && !so.contains("date=0"),
        "date -s succeeded:\n{}",
        show(&out)
    );
    assert!(
        so.lines().any(|l| l == sb.id),
        "hostname does not print the workspace id:\n{}",
        show(&out)
    );
    assert!(
        !so.contains("evil"),
        "hostname changed inside:\n{}",
        show(&out)
    );

    let out = sb.python(
        r#"
import ctypes, json, time, errno, socket
libc = ctypes.CDLL(None, use_errno=True)
class TV(ctypes.Structure): _fields_ = [("s", ctypes.c_long), ("u", ctypes.c_long)]
class TS(ctypes.Structure): _fields_ = [("s", ctypes.c_long), ("n", ctypes.c_long)]
def err(r): return "ok" if r == 0 else errno.errorcode.get(ctypes.get_errno(), "?")
res = {}
now = time.time()
res["settimeofday"] = err(libc.settimeofday(ctypes.byref(TV(int(now), 0)), None))
now = time.time()
res["clock_settime"] = err(libc.clock_settime(0, ctypes.byref(TS(int(now), 0))))
res["sethostname"] = err(libc.sethostname(b"evil", 4))
res["setdomainname"] = err(libc.setdomainname(b"evil", 4))
res["hostname_after"] = socket.gethostname()
print(json.dumps(res))
"#,
    );
    let r = json_out(&out);
    for k in [
        "settimeofday",
        "clock_settime",
        "sethostname",
        "setdomainname",
    ] {
        assert_eq!(
            r[k].as_str(),
            Some("EPERM"),
            "{k}: {}\n{}",
            r[k],
            show(&out)
        );
    }
    assert_eq!(r["hostname_after"].as_str(), Some(sb.id.as_str()));
    assert_eq!(host_hostname(), host_name, "the host's hostname changed");
    let host_now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs();
    assert!(
        host_now > 1_600_000_000,
        "the host clock looks reset: {host_now}"
    );
}

// ---------------------------------------------------------------------------------------
// 6. AF_VSOCK and raw sockets

#[test]
fn vsock_and_raw_sockets_denied_inet_and_unix_work() {
    let Some(sb) = Isolated::new("vsock_and_raw_sockets_denied_inet_and_unix_work") else {
        return;
    };
    // Sockets are only created (never connected) for the denied families; the working
    // families talk to themselves on 127.0.0.1 and a path under /tmp.
    let out = sb.python(
        r#"
import socket, json, errno, os, threading
def name(e): return errno.errorcode.get(e.errno, str(e.errno))
res = {}
for key, fam, typ, proto in [("vsock_stream", 40, socket.SOCK_STREAM, 0),
                             ("vsock_dgram", 40, socket.SOCK_DGRAM, 0),
                             ("inet_raw_icmp", socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP),
                             ("inet_raw_tcp", socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_TCP),
                             ("inet6_raw", socket.AF_INET6, socket.SOCK_RAW, 58),
                             ("packet_raw", 17, socket.SOCK_RAW, 0),
                             ("packet_dgram", 17, socket.SOCK_DGRAM, 0),
                             ("netlink_raw", 16, socket.SOCK_RAW, 0),
                             ("netlink_dgram", 16, socket.SOCK_DGRAM, 0)]:
    try:
        s = socket.socket(fam, typ, proto)
        s.close()
        res[key] = "created"
    except OSError as e:
        res[key] = name(e)
# What must keep working: TCP and UDP on 127.0.0.1, unix sockets.
srv = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
srv.bind(("127.0.0.1", 0)); srv.listen(1)
c = socket.create_connection(srv.getsockname(), timeout=5)
a, _ = srv.accept(); c.sendall(b"ping"); res["tcp"] = a.recv(4).decode()
u1 = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); u1.bind(("127.0.0.1", 0))
u2 = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); u2.settimeout(5)
u2.sendto(b"pong", u1.getsockname()); u1.settimeout(5); res["udp"] = u1.recv(4).decode()
path = "/tmp/escb.sock"
us = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM); us.bind(path); us.listen(1)
uc = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM); uc.connect(path)
ua, _ = us.accept(); uc.sendall(b"unix"); res["unix"] = ua.recv(4).decode()
p1, p2 = socket.socketpair(); p1.sendall(b"pair"); res["pair"] = p2.recv(4).decode()
print(json.dumps(res))
"#,
    );
    assert!(out.status.success(), "{}", show(&out));
    let r = json_out(&out);
    for k in [
        "vsock_stream",
        "vsock_dgram",
        "inet_raw_icmp",
        "inet_raw_tcp",
        "inet6_raw",
        "packet_raw",
        "packet_dgram",
        "netlink_raw",
        "netlink_dgram",
    ] {
        assert_eq!(
            r[k].as_str(),
            Some("EPERM"),
            "socket {k}: {}\n{}",
            r[k],
            show(&out)
        );
    }
    assert_eq!(r["tcp"].as_str(), Some("ping"), "{}", show(&out));
    assert_eq!(r["udp"].as_str(), Some("pong"), "{}", show(&out));
    assert_eq!(r["unix"].as_str(), Some("unix"), "{}", show(&out));
    assert_eq!(r["pair"].as_str(), Some("pair"), "{}", show(&out));

    let out = sb.sh("if command -v ping >/dev/null; then ping -c1 -W1 127.0.0.1; echo ping=$?; else echo ping=absent; fi");
    let so = text(&out.stdout);
    assert!(
        so.contains("ping=") && !so.contains("ping=0"),
        "ping works inside:\n{}",
        show(&out)
    );
}

// ---------------------------------------------------------------------------------------
// 7. SysV IPC of the host

/// Host IPC objects created for the test; removed on drop, pass or fail.
struct HostIpc {
    shm: Option<String>,
    msq: Option<String>,
}

impl Drop for HostIpc {
    fn drop(&mut self) {
        if let Some(id) = &self.shm {
            let _ = Command::new("ipcrm").args(["-m", id]).output();
        }
        if let Some(id) = &self.msq {
            let _ = Command::new("ipcrm").args(["-q", id]).output();
        }
    }
}

/// Runs `ipcmk ARGS` on the host and returns the id it printed.
fn ipcmk(args: &[&str]) -> String {
    let out = Command::new("ipcmk")
        .args(args)
        .output()
        .expect("run ipcmk");
    assert!(out.status.success(), "ipcmk {args:?}: {}", show(&out));
    let s = text(&out.stdout);
    s.rsplit(':')
        .next()
        .map(|x| x.trim().to_string())
        .filter(|x| x.parse::<u64>().is_ok())
        .unwrap_or_else(|| panic!("ipcmk output: {s:?}"))
}

/// The key (decimal) of host IPC object `id` in `ipcs -m` / `ipcs -q` output.
fn ipc_key(kind: &str, id: &str) -> i64 {
    let out = Command::new("ipcs").arg(kind).output().expect("run ipcs");
    let s = text(&out.stdout);
    s.lines()
        .map(|l| l.split_whitespace().collect::<Vec<_>>())
        .find(|f| f.len() > 1 && f[1] == id)
        .and_then(|f| i64::from_str_radix(f[0].trim_start_matches("0x"), 16).ok())
        .map(|k| k as i32 as i64)
        .unwrap_or_else(|| panic!("host ipcs {kind} has no id {id}:\n{s}"))
}

#[test]
fn host_sysv_ipc_invisible() {
    let Some(sb) = Isolated::new("host_sysv_ipc_invisible") else {
        return;
    };
    if Command::new("ipcmk").arg("--version").output().is_err() {
        eprintln!("SKIP host_sysv_ipc_invisible: ipcmk is not installed");
        return;
    }
    let mut guard = HostIpc {
        shm: None,
        msq: None,
    };
    guard.shm = Some(ipcmk(&["-M", "4096"]));
    guard.msq = Some(ipcmk(&["-Q"]));
    let shm = guard.shm.clone().expect("shm");
    let msq = guard.msq.clone().expect("msq");
    let shm_key = ipc_key("-m", &shm);
    let msq_key = ipc_key("-q", &msq);

    let out = sb.sh("ipcs -m; ipcs -q; ipcs -s");
    assert!(out.status.success(), "{}", show(&out));
    let so = text(&out.stdout);
    let rows: Vec<&str> = so
        .lines()
        .map(str::trim)
        .filter(|l| l.starts_with("0x"))
        .collect();
    assert!(
        rows.is_empty(),
        "IPC objects visible inside (host shm {shm}, msq {msq}):\n{so}"
    );

    let code_py = format!(
        r#"
import ctypes, json, errno
libc = ctypes.CDLL(None, use_errno=True)
libc.shmat.restype = ctypes.c_void_p
def e(): return errno.errorcode.get(ctypes.get_errno(), "?")
res = {{}}
p = libc.shmat({shm}, None, 0)
res["shmat"] = "attached" if p not in (None, ctypes.c_void_p(-1).value) else e()
r = libc.shmget(ctypes.c_int({shm_key}), 0, 0)
res["shmget"] = "found %d" % r if r >= 0 else e()
buf = ctypes.create_string_buffer(512)
r = libc.shmctl({shm}, 2, buf)
res["shmctl_stat"] = "ok" if r >= 0 else e()
r = libc.msgget(ctypes.c_int({msq_key}), 0)
res["msgget"] = "found %d" % r if r >= 0 else e()
r = libc.msgctl({msq}, 2, buf)
res["msgctl_stat"] = "ok" if r >= 0 else e()
r = libc.msgsnd({msq}, ctypes.create_string_buffer(b"\x01\x00\x00\x00\x00\x00\x00\x00hi"), 2, 0o4000)
res["msgsnd"] = "sent" if r == 0 else e()
print(json.dumps(res))
"#
    );
    let out = sb.python(&code_py);
    let r = json_out(&out);
    for (k, want) in [
        ("shmat", "EINVAL"),
        ("shmget", "ENOENT"),
        ("shmctl_stat", "EINVAL"),
        ("msgget", "ENOENT"),
        ("msgctl_stat", "EINVAL"),
        ("msgsnd", "EINVAL"),
    ] {
        assert_eq!(
            r[k].as_str(),
            Some(want),
            "{k} on the host's object: {}\n{}",
            r[k],
            show(&out)
        );
    }
    // The host objects are intact and untouched (no attach, no message).
    let st = Command::new("ipcs")
        .args(["-m", "-i", &shm])
        .output()
        .expect("ipcs");
    assert!(st.status.success(), "host shm {shm} gone: {}", show(&st));
    let q = Command::new("ipcs")
        .args(["-q", "-i", &msq])
        .output()
        .expect("ipcs");
    assert!(q.status.success(), "host queue {msq} gone: {}", show(&q));
    let qs = text(&q.stdout);
    assert!(
        qs.contains("qnum=0"),
        "the host queue received a message:\n{qs}"
    );
}

// ---------------------------------------------------------------------------------------
// 8. x32 and i386 syscalls

#[test]
fn x32_and_int80_syscalls_kill_the_process() {
    let Some(sb) = Isolated::new("x32_and_int80_syscalls_kill_the_process") else {
        return;
    };
    // getpid with the x32 bit set.
    let out = sb.python(
        r#"
import ctypes
libc = ctypes.CDLL(None, use_errno=True)
print("before", flush=True)
r = libc.syscall(0x40000000 | 39)
print("RETURNED", r, ctypes.get_errno(), flush=True)
"#,
    );
    let so = text(&out.stdout);
    assert!(
        so.contains("before"),
        "the probe did not run:\n{}",
        show(&out)
    );
    assert!(
        !so.contains("RETURNED"),
        "an x32 syscall returned instead of killing the process:\n{}",
        show(&out)
    );
    assert_eq!(
        code(&out),
        128 + 31,
        "x32 syscall: expected a SIGSYS kill (159):\n{}",
        show(&out)
    );

    // `mov eax, 20 (getpid, i386 numbering); int 0x80; ret`, written to an RW page that is
    // then made RX (works whether or not RWX mappings are allowed).
    let out = sb.python(
        r#"
import ctypes
code = b"\xb8\x14\x00\x00\x00\xcd\x80\xc3"
libc = ctypes.CDLL(None, use_errno=True)
libc.mmap.restype = ctypes.c_void_p
libc.mmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_int, ctypes.c_int, ctypes.c_long]
libc.mprotect.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
p = libc.mmap(None, 4096, 3, 0x22, -1, 0)
if p in (None, ctypes.c_void_p(-1).value):
    print("MMAP_FAILED", ctypes.get_errno(), flush=True); raise SystemExit(3)
ctypes.memmove(p, code, len(code))
if libc.mprotect(p, 4096, 5) != 0:
    print("MPROTECT_FAILED", ctypes.get_errno(), flush=True); raise SystemExit(3)
print("calling", flush=True)
r = ctypes.CFUNCTYPE(ctypes.c_long)(p)()
print("RETURNED", r, flush=True)
"#,
    );
    let so = text(&out.stdout);
    assert!(
        so.contains("calling"),
        "the int 0x80 probe could not prepare its code page:\n{}",
        show(&out)
    );
    assert!(
        !so.contains("RETURNED"),
        "an int 0x80 syscall returned instead of killing the process:\n{}",
        show(&out)
    );
    assert_eq!(
        code(&out),
        128 + 31,
        "int 0x80: expected a SIGSYS kill (159):\n{}",
        show(&out)
    );
}

// ---------------------------------------------------------------------------------------
// 9. setuid binaries

#[test]
fn setuid_binaries_grant_nothing() {
    let Some(sb) = Isolated::new("setuid_binaries_grant_nothing") else {
        return;
    };
    let out = sb.sh("su -c id root </dev/null 2>&1; echo su=$?; \
         if command -v sudo >/dev/null; then sudo -n id 2>&1; echo sudo=$?; fi; \
         grep -E '^(NoNewPrivs|CapEff|CapPrm|CapBnd|CapAmb|Uid|Gid):' /proc/self/status; \
         echo ---; cat /proc/self/mountinfo");
    let so = text(&out.stdout);
    assert!(!so.contains("uid=0"), "su/sudo gave root:\n{}", show(&out));
    assert!(
        so.contains("su=") && !so.contains("su=0"),
        "su succeeded:\n{}",
        show(&out)
    );
    let status: Vec<(&str, String)> = so
        .lines()
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k, v.split_whitespace().collect::<Vec<_>>().join(" ")))
        .collect();
    let get = |k: &str| {
        status
            .iter()
            .find(|(n, _)| *n == k)
            .map(|(_, v)| v.clone())
            .unwrap_or_default()
    };
    assert_eq!(get("NoNewPrivs"), "1", "{so}");
    for k in ["CapEff", "CapPrm", "CapBnd", "CapAmb"] {
        assert_eq!(get(k), "0000000000000000", "{k} inside");
    }
    assert_eq!(get("Uid"), "1000 1000 1000 1000");
    assert_eq!(get("Gid"), "1000 1000 1000 1000");
    let mountinfo = so.split("---\n").nth(1).unwrap_or_default();
    let usr = mountinfo
        .lines()
        .find(|l| l.split_whitespace().nth(4) == Some("/usr"))
        .unwrap_or_else(|| panic!("no /usr mount inside:\n{mountinfo}"));
    let opts = usr.split_whitespace().nth(5).unwrap_or_default();
    assert!(
        opts.split(',').any(|o| o == "nosuid"),
        "/usr is not nosuid: {usr}"
    );
    assert!(
        opts.split(',').any(|o| o == "ro"),
        "/usr is not read-only: {usr}"
    );

    // Every setuid/setgid binary the host has: exec it with --help and read the
    // credentials it got from /proc (newgrp and sg are left out: they start shells).
    let out = sb.python(
        r#"
import os, stat, time, json, errno
res = {"bins": {}, "setuid": {}}
for d in ["/usr/bin", "/usr/sbin", "/usr/lib", "/usr/libexec"]:
    for root, dirs, files in os.walk(d):
        for f in files:
            p = os.path.join(root, f)
            try:
                st = os.lstat(p)
            except OSError:
                continue
            if not stat.S_ISREG(st.st_mode) or not st.st_mode & (stat.S_ISUID | stat.S_ISGID):
                continue
            if f in ("newgrp", "sg"):
                continue
            r, w = os.pipe()
            pid = os.fork()
            if pid == 0:
                os.close(r)
                fd = os.open("/dev/null", os.O_RDWR)
                for i in (0, 1, 2):
                    os.dup2(fd, i)
                os.set_inheritable(w, False)
                try:
                    os.execv(p, [p, "--help"])
                except OSError as e:
                    os.write(w, str(e.errno).encode())
                os._exit(127)
            os.close(w)
            failed = os.read(r, 64)
            os.close(r)
            info = "exec failed: " + errno.errorcode.get(int(failed), "?") if failed else None
            deadline = time.time() + 2
            while info is None and time.time() < deadline:
                try:
                    lines = open("/proc/%d/status" % pid).read().splitlines()
                except OSError:
                    break
                kv = dict(l.split(":", 1) for l in lines if ":" in l)
                if kv.get("Name", "").strip() == f[:15]:
                    info = {k: " ".join(kv.get(k, "").split()) for k in ("Uid", "Gid", "CapEff", "CapPrm")}
                    break
                time.sleep(0.005)
            try:
                os.kill(pid, 9)
            except OSError:
                pass
            os.waitpid(pid, 0)
            res["bins"][p] = info
for name, fn in [("setuid0", lambda: os.setuid(0)), ("setresuid0", lambda: os.setresuid(0, 0, 0)),
                 ("setgid0", lambda: os.setgid(0)), ("setgroups0", lambda: os.setgroups([0])),
                 ("seteuid0", lambda: os.seteuid(0))]:
    try:
        fn()
        res["setuid"][name] = "ok"
    except OSError as e:
        res["setuid"][name] = errno.errorcode.get(e.errno, str(e.errno))
res["uid_after"] = [os.getuid(), os.geteuid(), os.getgid(), os.getegid()]
print(json.dumps(res))
"#,
    );
    assert!(out.status.success(), "{}", show(&out));
    let r = json_out(&out);
    let bins = r["bins"].as_object().expect("bins");
    let mut measured = 0;
    for (b, info) in bins {
        if let Some(m) = info.as_object() {
            measured += 1;
            assert_eq!(
                m["Uid"].as_str(),
                Some("1000 1000 1000 1000"),
                "{b} ran with other uids: {info}"
            );
            assert_eq!(
                m["Gid"].as_str(),
                Some("1000 1000 1000 1000"),
                "{b} ran with other gids: {info}"
            );
            assert_eq!(
                m["CapEff"].as_str(),
                Some("0000000000000000"),
                "{b} ran with capabilities: {info}"
            );
            assert_eq!(
                m["CapPrm"].as_str(),
                Some("0000000000000000"),
                "{b} ran with capabilities: {info}"
            );
        }
    }
    eprintln!(
        "setuid binaries checked: {measured} of {} found",
        bins.len()
    );
    // os.setuid(0) fails: EINVAL (uid 0 has no mapping in the sandbox's user namespace)
    // or EPERM (no CAP_SETUID); never success.
    for (k, v) in r["setuid"].as_object().expect("setuid") {
        let v = v.as_str().unwrap_or_default();
        assert!(v == "EPERM" || v == "EINVAL", "{k}: {v}\n{}", show(&out));
    }
    assert_eq!(r["uid_after"], serde_json::json!([1000, 1000, 1000, 1000]));
}

// ---------------------------------------------------------------------------------------
// 10. symlinks planted in the workspace

#[test]
fn planted_symlinks_are_not_followed() {
    let Some(sb) = Isolated::new("planted_symlinks_are_not_followed") else {
        return;
    };
    let files = sb.env.files(&sb.id);
    let meta = std::fs::metadata(&files).expect("files/");
    // The bait: a host directory with a canary, owned like files/ so only the symlink
    // check can stop the mount.
    let bait = sb.env.dir.path().join("bait");
    std::fs::create_dir(&bait).expect("bait dir");
    let canary = bait.join("canary.txt");
    let secret = marker("canary");
    std::fs::write(&canary, &secret).expect("canary");
    let chown = |p: &Path| {
        use std::os::unix::fs::MetadataExt;
        std::os::unix::fs::chown(p, Some(meta.uid()), Some(meta.gid())).expect("chown bait");
    };
    chown(&bait);
    let listing = |d: &Path| -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(d)
            .expect("read bait")
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    };

    // (a) files/ replaced by a symlink to the bait.
    let real = files.with_file_name("files.real");
    std::fs::rename(&files, &real).expect("move files/ aside");
    std::os::unix::fs::symlink(&bait, &files).expect("plant symlink");
    let out = sb.sh("echo pwned > /workspace/pwned; ls -la /workspace; cat /workspace/canary.txt");
    std::fs::remove_file(&files).expect("remove planted symlink");
    std::fs::rename(&real, &files).expect("restore files/");
    assert_eq!(
        code(&out),
        125,
        "exec through a symlinked files/ did not fail setup:\n{}",
        show(&out)
    );
    assert!(
        text(&out.stderr).contains("symlink"),
        "the error does not name the symlink:\n{}",
        show(&out)
    );
    assert!(
        !text(&out.stdout).contains(&secret),
        "the sandbox read the bait:\n{}",
        show(&out)
    );
    assert_eq!(listing(&bait), ["canary.txt"], "the bait directory changed");
    assert_eq!(std::fs::read_to_string(&canary).expect("canary"), secret);

    // (c) the workspace directory itself (a parent of files/) swapped for a symlink to a
    // moved copy: the mount must still refuse, and nothing may be written through it.
    let ws_dir = sb.env.state().join("workspaces").join(&sb.id);
    let moved = sb.env.dir.path().join("moved-ws");
    std::fs::rename(&ws_dir, &moved).expect("move the workspace aside");
    std::os::unix::fs::symlink(&moved, &ws_dir).expect("plant workspace symlink");
    let out = sb.sh("echo pwned > /workspace/pwned-c");
    std::fs::remove_file(&ws_dir).expect("remove workspace symlink");
    std::fs::rename(&moved, &ws_dir).expect("restore the workspace");
    assert_eq!(
        code(&out),
        125,
        "exec through a symlinked workspace dir did not fail setup:\n{}",
        show(&out)
    );
    assert!(
        text(&out.stderr).contains("symlink"),
        "the error does not name the symlink:\n{}",
        show(&out)
    );
    assert!(
        !files.join("pwned-c").exists(),
        "the sandbox wrote through the symlinked workspace dir"
    );

    // (b) symlinks inside files/ pointing at host paths.
    std::os::unix::fs::symlink(&canary, files.join("link")).expect("link");
    std::os::unix::fs::symlink(&bait, files.join("dirlink")).expect("dirlink");
    std::os::unix::fs::symlink("/etc/shadow", files.join("shadow")).expect("shadow link");
    std::os::unix::fs::symlink("/etc", files.join("etc")).expect("etc link");
    let out = sb.sh("cat /workspace/link; echo cat_link=$?; ls /workspace/dirlink/; echo ls_dirlink=$?; \
         cat /workspace/shadow; echo cat_shadow=$?; cat /workspace/etc/shadow; echo cat_etc_shadow=$?; \
         echo pwned > /workspace/link; echo write_link=$?; echo pwned > /workspace/dirlink/new; echo write_dirlink=$?; \
         ls /workspace/etc/");
    let so = text(&out.stdout);
    assert!(
        !so.contains(&secret),
        "the canary was read through a symlink:\n{}",
        show(&out)
    );
    assert!(
        !so.contains("canary.txt"),
        "the bait directory was listed through a symlink:\n{}",
        show(&out)
    );
    for k in [
        "cat_link",
        "ls_dirlink",
        "cat_shadow",
        "cat_etc_shadow",
        "write_link",
        "write_dirlink",
    ] {
        assert!(
            so.contains(&format!("{k}=")) && !so.contains(&format!("{k}=0\n")),
            "{k} succeeded:\n{}",
            show(&out)
        );
    }
    assert!(
        !so.contains("root:"),
        "host /etc/shadow content visible:\n{}",
        show(&out)
    );
    assert!(
        !so.lines().any(|l| l == "shadow"),
        "host /etc listed through the symlink:\n{}",
        show(&out)
    );
    assert_eq!(listing(&bait), ["canary.txt"], "the bait directory changed");
    assert_eq!(
        std::fs::read_to_string(&canary).expect("canary"),
        secret,
        "the canary was overwritten"
    );
}

// ---------------------------------------------------------------------------------------
// 11. memory bomb

#[test]
fn memory_bomb_is_oom_killed_and_cleaned_up() {
    let Some(sb) = Isolated::new("memory_bomb_is_oom_killed_and_cleaned_up") else {
        return;
    };
    let _g = bomb_lock();
    // Sleeps first so the run file is seen; then touches 1 GiB in 16 MiB chunks.
    let t = run_tracked(
        &sb,
        &["--memory", "64M", "--timeout", "30"],
        &[
            "python3",
            "-c",
            "import time\ntime.sleep(0.3)\nl=[]\nfor i in range(64): l.append(b'x'*(16<<20))\nprint('SURVIVED', flush=True)",
        ],
        |_| {},
    );
    let out = &t.out;
    eprintln!("memory bomb: {:?}", t.elapsed);
    assert!(
        !text(&out.stdout).contains("SURVIVED"),
        "1 GiB fit in a 64M sandbox:\n{}",
        show(out)
    );
    assert_eq!(code(out), 137, "memory bomb:\n{}", show(out));
    assert!(
        text(&out.stderr).contains("memory limit"),
        "no memory-limit message:\n{}",
        show(out)
    );
    assert_sandbox_gone(&sb, t.launcher);
    // The host is fine: it still allocates and forks.
    let v = vec![1u8; 64 << 20];
    assert_eq!(v.iter().map(|b| *b as usize).sum::<usize>(), 64 << 20);
    assert!(Command::new("true").status().expect("spawn true").success());
}

// ---------------------------------------------------------------------------------------
// 12. fork bomb

#[test]
fn fork_bomb_is_contained() {
    let Some(sb) = Isolated::new("fork_bomb_is_contained") else {
        return;
    };
    let _g = bomb_lock();
    let mut seen = (String::new(), String::new(), false);
    // The bomb keeps the main shell alive (sleep) so it really runs until the timeout.
    let t = run_tracked(
        &sb,
        &["--pids", "32", "--timeout", "5"],
        &["bash", "-c", ":(){ :|:& };:; sleep 30"],
        |lpid| {
            std::thread::sleep(Duration::from_millis(1500));
            let name = sandbox_cgroup(&sb, lpid);
            if let Some(d) = cgroup_dirs(&name)
                .into_iter()
                .find(|d| d.join("pids.max").exists() || d.join("pids.current").exists())
            {
                seen.0 = std::fs::read_to_string(d.join("pids.max"))
                    .unwrap_or_default()
                    .trim()
                    .to_string();
                seen.1 = std::fs::read_to_string(d.join("pids.current"))
                    .unwrap_or_default()
                    .trim()
                    .to_string();
            }
            // The host can still fork while the bomb runs.
            seen.2 = Command::new("true").status().is_ok_and(|s| s.success());
        },
    );
    let out = &t.out;
    eprintln!(
        "fork bomb: {:?}, pids.max {} pids.current {} mid-bomb",
        t.elapsed, seen.0, seen.1
    );
    assert!(seen.2, "the host could not fork during the bomb");
    assert_eq!(seen.0, "32", "pids.max of the sandbox cgroup mid-bomb");
    let cur: u32 = seen.1.parse().unwrap_or(u32::MAX);
    assert!(cur <= 32, "pids.current {cur} above the limit");
    assert_eq!(
        code(out),
        124,
        "fork bomb was not stopped by the timeout:\n{}",
        show(out)
    );
    assert!(
        t.elapsed < Duration::from_secs(15),
        "fork bomb took {:?}",
        t.elapsed
    );
    assert_sandbox_gone(&sb, t.launcher);
    assert!(Command::new("true").status().expect("spawn true").success());
}

// ---------------------------------------------------------------------------------------
// 13. /tmp and /dev/shm fill

#[test]
fn tmp_and_shm_fill_hit_their_caps() {
    let Some(sb) = Isolated::new("tmp_and_shm_fill_hit_their_caps") else {
        return;
    };
    let _g = bomb_lock();
    let out = sb.exec(
        &["--tmp-size", "16M", "--timeout", "60"],
        &[
            "/bin/sh",
            "-c",
            "dd if=/dev/zero of=/tmp/fill bs=1M count=100 2>&1; echo tmp_rc=$?; echo tmp_size=$(stat -c %s /tmp/fill); rm -f /tmp/fill; \
             dd if=/dev/zero of=/dev/shm/fill bs=1M count=100 2>&1; echo shm_rc=$?; echo shm_size=$(stat -c %s /dev/shm/fill)",
        ],
    );
    let so = text(&out.stdout);
    let val = |k: &str| -> u64 {
        so.lines()
            .find_map(|l| l.strip_prefix(&format!("{k}=")))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or_else(|| panic!("no {k} in:\n{}", show(&out)))
    };
    assert!(
        so.matches("No space left on device").count() >= 2,
        "both fills should end with ENOSPC:\n{}",
        show(&out)
    );
    assert_ne!(val("tmp_rc"), 0, "dd into /tmp succeeded");
    assert_ne!(val("shm_rc"), 0, "dd into /dev/shm succeeded");
    assert!(
        val("tmp_size") <= 16 << 20,
        "/tmp took {} bytes with --tmp-size 16M",
        val("tmp_size")
    );
    assert!(
        val("shm_size") <= 64 << 20,
        "/dev/shm took {} bytes (cap 64 MiB)",
        val("shm_size")
    );
}

// ---------------------------------------------------------------------------------------
// 14. a double-forked daemon

fn file_len(p: &Path) -> u64 {
    std::fs::metadata(p).map(|m| m.len()).unwrap_or(0)
}

#[test]
fn double_forked_daemon_does_not_outlive_the_run() {
    let Some(sb) = Isolated::new("double_forked_daemon_does_not_outlive_the_run") else {
        return;
    };
    let mark = marker("daemon");
    let script = format!("(setsid sh -c 'while :; do date >> /workspace/daemon.log; sleep 0.1; done' {mark} &) ; sleep 0.5; echo started");
    let start = Instant::now();
    let out = sb.exec(&["--timeout", "20"], &["/bin/sh", "-c", &script]);
    let took = start.elapsed();
    eprintln!("daemon exec: {took:?}");
    assert!(
        out.status.success() && text(&out.stdout).contains("started"),
        "{}",
        show(&out)
    );
    assert!(
        took < Duration::from_secs(8),
        "exec waited for the daemon: {took:?}"
    );
    let log = sb.env.files(&sb.id).join("daemon.log");
    let a = file_len(&log);
    assert!(a > 0, "the daemon never ran (no log)");
    std::thread::sleep(Duration::from_millis(500));
    let b = file_len(&log);
    assert_eq!(a, b, "the daemon's log still grows after the exec returned");
    let left = host_procs(|argv| argv.iter().any(|a| a.contains(&mark)));
    assert!(left.is_empty(), "the daemon survived on the host: {left:?}");
}

// ---------------------------------------------------------------------------------------
// 15. the timeout kills every process

#[test]
fn timeout_kills_every_process() {
    let Some(sb) = Isolated::new("timeout_kills_every_process") else {
        return;
    };
    // Fractional durations nobody else uses, so the scan cannot mistake other sleeps.
    let secs = ["1001.4217", "1002.4217", "1003.4217"];
    let script = format!(
        "sleep {} & (setsid sleep {} &) ; sleep {}",
        secs[0], secs[1], secs[2]
    );
    let start = Instant::now();
    let out = sb.exec(&["--timeout", "1"], &["/bin/sh", "-c", &script]);
    let took = start.elapsed();
    eprintln!("timeout exec: {took:?}");
    assert_eq!(code(&out), 124, "{}", show(&out));
    assert!(text(&out.stderr).contains("timed out"), "{}", show(&out));
    assert!(took < Duration::from_secs(5), "timeout 1 s took {took:?}");
    let left = host_procs(|argv| {
        argv.len() == 2 && argv[0].ends_with("sleep") && secs.contains(&argv[1].as_str())
    });
    assert!(left.is_empty(), "sleeps survived the timeout: {left:?}");
}

// ---------------------------------------------------------------------------------------
// 16. deleting a workspace under a running sandbox

#[test]
fn delete_stops_running_sandbox() {
    let Some(sb) = Isolated::new("delete_stops_running_sandbox") else {
        return;
    };
    let secs = "100.4217";
    let before = run_files(&sb);
    let child = exec_cmd(&sb, &[], &["sleep", secs])
        .spawn()
        .expect("spawn exec");
    let mut guard = KillOnDrop(Some(child));
    let lpid = {
        let c = guard.0.as_mut().expect("child");
        let finished = std::cell::Cell::new(false);
        let l = wait_launcher(&sb, &before, || {
            let f = c.try_wait().ok().flatten().is_some();
            finished.set(f);
            f
        });
        l.unwrap_or_else(|| {
            panic!(
                "the sandbox never came up (exec finished: {})",
                finished.get()
            )
        })
    };
    // Wait for the sleep to really run inside.
    let deadline = Instant::now() + Duration::from_secs(10);
    while host_procs(|a| a.len() == 2 && a[1] == secs).is_empty() {
        assert!(
            Instant::now() < deadline,
            "sleep never started in the sandbox"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let start = Instant::now();
    let del = sb.env.bulkhead(&["workspace", "delete", &sb.id]);
    eprintln!("delete: {:?}", start.elapsed());
    // Clean up the sandbox ourselves if delete left it running (then fail below).
    let mut exec_status = None;
    let deadline = Instant::now() + Duration::from_secs(10);
    let c = guard.0.as_mut().expect("child");
    while Instant::now() < deadline {
        if let Some(s) = c.try_wait().expect("try_wait") {
            exec_status = Some(s);
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let launcher_left = launcher_alive(lpid);
    if exec_status.is_none() && launcher_left {
        // Only the launcher this test started (checked by name above), by its pid.
        let _ = Command::new("kill")
            .args(["-TERM", &lpid.to_string()])
            .status();
    }
    let c = guard.0.take().expect("child");
    let exec_out = c.wait_with_output().expect("wait exec");
    assert!(
        del.status.success(),
        "workspace delete failed:\n{}",
        show(&del)
    );
    assert!(
        exec_status.is_some(),
        "the background exec did not return after the delete (launcher alive: {launcher_left})"
    );
    eprintln!("background exec after delete: {}", show(&exec_out));
    assert!(
        !sb.env.state().join("workspaces").join(&sb.id).exists(),
        "the workspace directory is still there"
    );
    assert_sandbox_gone(&sb, lpid);
    let left = host_procs(|a| a.len() == 2 && a[1] == secs);
    assert!(
        left.is_empty(),
        "the sandbox's sleep survived the delete: {left:?}"
    );
}

#[test]
fn no_setuid_or_setgid_file_can_be_made_in_the_workspace() {
    // /workspace is an id-mapped mount of the controller's own files when privileged: a
    // setuid file made there would be a setuid program of the controller's user on the host.
    let Some(sb) = Isolated::new("no_setuid_or_setgid_file_can_be_made_in_the_workspace") else {
        return;
    };
    let out = sb.python(
        r#"
import os, ctypes
r = []
def attempt(name, f):
    try:
        f(); r.append(name + "=ok")
    except OSError as e:
        r.append(name + "=" + str(e.errno))
p = "/workspace/s"
open(p, "w").close()
attempt("chmod4755", lambda: os.chmod(p, 0o4755))
attempt("chmod2755", lambda: os.chmod(p, 0o2755))
attempt("fchmod4755", lambda: os.fchmod(os.open(p, os.O_RDONLY), 0o4755))
attempt("create4755", lambda: os.close(os.open("/workspace/c", os.O_CREAT | os.O_WRONLY, 0o4755)))
attempt("mknod4755", lambda: os.mknod("/workspace/n", 0o100000 | 0o4755))
libc = ctypes.CDLL(None, use_errno=True)
how = (ctypes.c_uint64 * 3)(os.O_CREAT | os.O_WRONLY, 0o4755, 0)
fd = libc.syscall(437, -100, b"/workspace/o2", ctypes.byref(how), 24)
r.append("openat2=" + (str(ctypes.get_errno()) if fd < 0 else "ok"))
attempt("chmod755", lambda: os.chmod(p, 0o755))
attempt("create644", lambda: os.close(os.open("/workspace/d", os.O_CREAT | os.O_WRONLY, 0o644)))
print(" ".join(r))
for f in ["s", "c", "n", "d"]:
    try:
        print(f, oct(os.stat("/workspace/" + f).st_mode))
    except OSError:
        pass
"#,
    );
    let o = text(&out.stdout);
    assert!(out.status.success(), "{}", show(&out));
    for refused in [
        "chmod4755=1",
        "chmod2755=1",
        "fchmod4755=1",
        "create4755=1",
        "mknod4755=1",
        "openat2=38",
    ] {
        assert!(o.contains(refused), "{refused} missing:\n{o}");
    }
    assert!(
        o.contains("chmod755=ok") && o.contains("create644=ok"),
        "{o}"
    );
    for entry in std::fs::read_dir(sb.env.files(&sb.id)).unwrap().flatten() {
        use std::os::unix::fs::PermissionsExt;
        let mode = entry.metadata().unwrap().permissions().mode();
        assert_eq!(
            mode & 0o6000,
            0,
            "{:?} is setuid/setgid on the host",
            entry.path()
        );
    }
}
