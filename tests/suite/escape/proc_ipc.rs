//! Processes and IPC: the controller's environment, host processes (listing, signals),
//! ptrace and the memory of pid 1, the worker's fds, and the host's SysV IPC objects.

use super::*;

// ---- environment leakage -------------------------------------------------------------------

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

// ---- host processes and signals ------------------------------------------------------------

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

// ---- ptrace and memory of pid 1 ------------------------------------------------------------

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

// ---- fd theft ------------------------------------------------------------------------------

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

// ---- SysV IPC of the host ------------------------------------------------------------------

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
    assert!(
        out.status.success(),
        "ipcmk {args:?}: {}",
        show_status(&out)
    );
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
    assert!(out.status.success(), "{}", show_status(&out));
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
            show_status(&out)
        );
    }
    // The host objects are intact and untouched (no attach, no message).
    let st = Command::new("ipcs")
        .args(["-m", "-i", &shm])
        .output()
        .expect("ipcs");
    assert!(
        st.status.success(),
        "host shm {shm} gone: {}",
        show_status(&st)
    );
    let q = Command::new("ipcs")
        .args(["-q", "-i", &msq])
        .output()
        .expect("ipcs");
    assert!(
        q.status.success(),
        "host queue {msq} gone: {}",
        show_status(&q)
    );
    let qs = text(&q.stdout);
    assert!(
        qs.contains("qnum=0"),
        "the host queue received a message:\n{qs}"
    );
}
