//! A host app with unusual signal state starts `bulkhead`: its parent ignores SIGCHLD and
//! SIGUSR2 and blocks SIGTERM and SIGUSR1 (many daemons do; both survive exec). `exec`, `run`
//! against the mock model and `serve --stdio` must behave as for any other parent: the
//! right exit status, the answer, exit on end of input. Afterwards no launcher or worker of
//! the test is left (they would be re-parented to the wrapper, a child subreaper, which
//! reports them) and no cgroup of the test's workspace remains.
//!
//! The launcher and the worker must not carry the parent's state either: the worker's
//! `/proc/1/status` (read inside the sandbox) and the launcher's (read on the host while a
//! command runs) show none of the parent's ignored or blocked signals.

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use bulkhead_tests::mock_llm::{MockLlm, Reply, Script, Step};
use bulkhead_tests::{bin, sandbox_or_skip, text, TestEnv};
use serde_json::{json, Value};

const KEY: &str = "sk-ant-hostsig-test-0123456789abcdef";
const MODEL: &str = "anthropic/claude-sonnet-4-5";

/// Signal bits (`n - 1`) of `/proc/<pid>/status` masks.
const fn bit(sig: i32) -> u64 {
    1 << (sig - 1)
}
const PARENT_IGNORED: u64 = bit(libc::SIGCHLD) | bit(libc::SIGUSR2);
const PARENT_BLOCKED: u64 = bit(libc::SIGTERM) | bit(libc::SIGUSR1);

/// The host app: becomes a child subreaper, forks, and in the child ignores SIGCHLD and
/// SIGUSR2, blocks SIGTERM and SIGUSR1, then execs argv. It waits for that child (at most
/// 120 s, then kills it and reports exit 999), then up to 5 s for any orphan re-parented to it (a launcher or worker left behind), kills and
/// names those, and writes `exit=<code> left=<comm pid,...>` to $HOSTSIG_REPORT.
const WRAPPER: &str = r#"
import ctypes, os, signal, sys, time
libc = ctypes.CDLL(None, use_errno=True)
if libc.prctl(36, 1, 0, 0, 0) != 0:  # PR_SET_CHILD_SUBREAPER
    sys.exit("prctl failed")
pid = os.fork()
if pid == 0:
    signal.signal(signal.SIGCHLD, signal.SIG_IGN)
    signal.signal(signal.SIGUSR2, signal.SIG_IGN)
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM, signal.SIGUSR1})
    os.execv(sys.argv[1], sys.argv[1:])
# bulkhead must end by itself; one that hangs (as it did when SIGCHLD=SIG_IGN reached the
# launcher) is killed after 120 s and reported as exit 999.
code = 999
deadline = time.time() + 120
while time.time() < deadline:
    p, st = os.waitpid(pid, os.WNOHANG)
    if p == pid:
        code = os.waitstatus_to_exitcode(st)
        break
    time.sleep(0.02)
else:
    os.kill(pid, signal.SIGKILL)
    os.waitpid(pid, 0)

def children():
    me = str(os.getpid())
    out = []
    for p in os.listdir("/proc"):
        if not p.isdigit():
            continue
        try:
            with open(f"/proc/{p}/stat") as f:
                s = f.read()
        except OSError:
            continue
        comm = s[s.index("(") + 1 : s.rindex(")")]
        fields = s[s.rindex(")") + 2 :].split()
        if fields[1] == me:
            out.append((comm, int(p)))
    return out

left = []
deadline = time.time() + 5
while True:
    try:
        while os.waitpid(-1, os.WNOHANG)[0] > 0:
            pass
    except ChildProcessError:
        pass
    kids = children()
    if not kids:
        break
    if time.time() > deadline:
        left = kids
        for _, p in kids:
            os.kill(p, signal.SIGKILL)
        break
    time.sleep(0.05)
with open(os.environ["HOSTSIG_REPORT"], "w") as f:
    f.write(f"exit={code} left={','.join(f'{c} {p}' for c, p in left)}\n")
sys.exit(0)
"#;

struct Host {
    env: TestEnv,
    wrapper: PathBuf,
    report: PathBuf,
}

impl Host {
    fn new() -> Host {
        let env = TestEnv::new();
        env.ensure_config();
        let wrapper = env.dir.path().join("host-app.py");
        std::fs::write(&wrapper, WRAPPER).unwrap();
        let report = env.dir.path().join("host-app.report");
        Host {
            env,
            wrapper,
            report,
        }
    }

    /// `bulkhead --state-dir … ARGS` started by the host app.
    fn cmd(&self, args: &[&str]) -> Command {
        let _ = std::fs::remove_file(&self.report);
        let mut c = Command::new("python3");
        c.arg(&self.wrapper)
            .arg(bin("bulkhead"))
            .arg("--state-dir")
            .arg(self.env.state())
            .args(args)
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("HOSTSIG_REPORT", &self.report)
            .env("ANTHROPIC_API_KEY", KEY)
            .stdin(Stdio::null());
        c
    }

    /// bulkhead's exit code as the host app saw it; asserts nothing was left behind.
    fn finished(&self, ws: &str) -> i32 {
        let report = std::fs::read_to_string(&self.report).expect("the host app's report");
        let (exit, left) = report.trim_end().split_once(' ').expect("exit=… left=…");
        assert_eq!(
            left, "left=",
            "processes outlived bulkhead (killed now): {report}"
        );
        assert_no_cgroup_of(ws);
        exit.strip_prefix("exit=").unwrap().parse().unwrap()
    }
}

/// Every cgroup directory named `bulkhead-<ws>-<pid>` (a sandbox cgroup of `ws`) on the
/// host, down to a few levels.
fn cgroups_of(ws: &str) -> Vec<PathBuf> {
    fn walk(dir: &Path, depth: usize, prefix: &str, found: &mut Vec<PathBuf>) {
        let Ok(rd) = std::fs::read_dir(dir) else {
            return;
        };
        for e in rd.flatten() {
            if !e.file_type().is_ok_and(|t| t.is_dir()) {
                continue;
            }
            let p = e.path();
            if e.file_name().to_string_lossy().starts_with(prefix) {
                found.push(p.clone());
            }
            if depth > 0 {
                walk(&p, depth - 1, prefix, found);
            }
        }
    }
    let mut found = Vec::new();
    walk(
        Path::new("/sys/fs/cgroup"),
        7,
        &format!("bulkhead-{ws}-"),
        &mut found,
    );
    found
}

fn assert_no_cgroup_of(ws: &str) {
    let left = cgroups_of(ws);
    assert!(left.is_empty(), "sandbox cgroups left behind: {left:?}");
}

/// A `SigIgn:`/`SigBlk:` mask from status text.
fn mask(status: &str, key: &str) -> u64 {
    let v = status
        .lines()
        .find_map(|l| l.strip_prefix(key))
        .unwrap_or_else(|| panic!("no {key} in {status}"));
    u64::from_str_radix(v.trim(), 16).unwrap()
}

/// The parent's ignored and blocked signals are none of `status`'s.
fn assert_clean(who: &str, status: &str) {
    let ign = mask(status, "SigIgn:");
    let blk = mask(status, "SigBlk:");
    assert_eq!(
        ign & PARENT_IGNORED,
        0,
        "{who} ignores what the host app ignored (SigIgn {ign:016x})"
    );
    assert_eq!(
        blk & PARENT_BLOCKED,
        0,
        "{who} blocks what the host app blocked (SigBlk {blk:016x})"
    );
}

fn ws_name(tag: &str) -> String {
    format!("hs{tag}{}", std::process::id())
}

#[test]
fn exec_returns_the_status_whatever_the_parent_signal_state() {
    if !sandbox_or_skip("exec_returns_the_status_whatever_the_parent_signal_state") {
        return;
    }
    let host = Host::new();
    let ws = ws_name("e");
    host.env.create(&ws);
    let out = host
        .cmd(&["exec", &ws, "--", "sh", "-c", "exit 7"])
        .output()
        .unwrap();
    assert_eq!(host.finished(&ws), 7, "{}", text(&out.stderr));
    // The worker (pid 1 inside) took nothing of the host app's signal state.
    let out = host
        .cmd(&[
            "exec",
            &ws,
            "--",
            "sh",
            "-c",
            "grep -E '^Sig(Ign|Blk):' /proc/1/status",
        ])
        .output()
        .unwrap();
    assert_eq!(host.finished(&ws), 0, "{}", text(&out.stderr));
    assert_clean("the worker", &text(&out.stdout));
}

/// bash writes a file, then the answer quotes the tool result.
fn tool_then_answer() -> Script {
    Script::new()
        .reply(
            Reply::tool_call(
                "bash",
                json!({"command": "echo from-host-app > /workspace/h.txt && cat /workspace/h.txt"}),
            )
            .with_text("Writing the file."),
        )
        .step(Step::reply(Reply::echo_tool_result("The file says: ")).after_tool_result(true))
}

#[test]
fn run_answers_whatever_the_parent_signal_state() {
    if !sandbox_or_skip("run_answers_whatever_the_parent_signal_state") {
        return;
    }
    let host = Host::new();
    let ws = ws_name("r");
    host.env.create(&ws);
    let mock = MockLlm::start(tool_then_answer());
    let base = mock.base_url();
    let out = host
        .cmd(&[
            "run",
            &ws,
            "--model",
            MODEL,
            "--base-url",
            &base,
            "--session",
            "s1",
            "write a file and read it",
        ])
        .output()
        .unwrap();
    let code = host.finished(&ws);
    assert_eq!(
        code,
        0,
        "stdout {}\nstderr {}",
        text(&out.stdout),
        text(&out.stderr)
    );
    assert!(
        text(&out.stdout).contains("The file says: from-host-app"),
        "{}",
        text(&out.stdout)
    );
    assert_eq!(
        std::fs::read_to_string(host.env.files(&ws).join("h.txt")).unwrap(),
        "from-host-app\n"
    );
}

/// Pids of the processes whose parent is `ppid` and whose name is `comm`.
fn children_named(ppid: u32, comm: &str) -> Vec<u32> {
    let mut found = Vec::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        let (Some(open), Some(close)) = (stat.find('('), stat.rfind(')')) else {
            continue;
        };
        let name = &stat[open + 1..close];
        let parent = stat[close + 2..].split_whitespace().nth(1);
        if name == comm && parent == Some(&ppid.to_string()) {
            found.push(pid);
        }
    }
    found
}

fn wait_for<T>(what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let t0 = Instant::now();
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(t0.elapsed() < Duration::from_secs(20), "timed out: {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn serve_answers_and_ends_on_eof_whatever_the_parent_signal_state() {
    if !sandbox_or_skip("serve_answers_and_ends_on_eof_whatever_the_parent_signal_state") {
        return;
    }
    let host = Host::new();
    let ws = ws_name("s");
    host.env.create(&ws);
    let mut child: Child = host
        .cmd(&["serve", "--stdio"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel::<Value>();
    let reader = std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if let Ok(v) = serde_json::from_str::<Value>(&line) {
                let _ = tx.send(v);
            }
        }
    });
    let req = json!({"jsonrpc": "2.0", "id": 1, "method": "exec",
        "params": {"workspace": ws, "argv": ["sh", "-c", "sleep 2; exit 7"]}});
    writeln!(stdin, "{req}").unwrap();
    stdin.flush().unwrap();
    // While the command runs: the launcher (a child of bulkhead, itself the host app's
    // child) shows nothing of the host app's signal state either.
    let bulkhead = wait_for("bulkhead under the host app", || {
        children_named(child.id(), "bulkhead").first().copied()
    });
    let launcher = wait_for("the launcher", || {
        children_named(bulkhead, "bulkhead-launch").first().copied()
    });
    // Its own blocked set (taken from a signalfd by the supervisor) shows it is past its
    // start, where it reset what it inherited; nothing of the host app's is blocked.
    let own = bit(libc::SIGHUP) | bit(libc::SIGINT) | bit(libc::SIGTERM);
    let status = wait_for("the launcher to block its own signals", || {
        let st = std::fs::read_to_string(format!("/proc/{launcher}/status")).ok()?;
        (mask(&st, "SigBlk:") == own).then_some(st)
    });
    let ign = mask(&status, "SigIgn:");
    assert_eq!(
        ign & PARENT_IGNORED,
        0,
        "the launcher ignores what the host app ignored (SigIgn {ign:016x})"
    );
    let r = loop {
        let v = rx
            .recv_timeout(Duration::from_secs(60))
            .expect("an answer to exec");
        if v["id"] == 1 {
            break v;
        }
    };
    assert_eq!(r["result"]["exit_code"], 7, "{r}");
    // End of input ends the server.
    drop(stdin);
    let t0 = Instant::now();
    let st = loop {
        if let Some(st) = child.try_wait().unwrap() {
            break st;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(20),
            "serve did not exit on end of input"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(st.success(), "the host app failed: {st:?}");
    reader.join().unwrap();
    assert_eq!(host.finished(&ws), 0);
}

#[test]
fn a_killed_controller_takes_its_sandbox_with_it() {
    if !sandbox_or_skip("a_killed_controller_takes_its_sandbox_with_it") {
        return;
    }
    let host = Host::new();
    let ws = ws_name("k");
    host.env.create(&ws);
    let mut child = host
        .cmd(&["exec", &ws, "--", "sleep", "60"])
        .spawn()
        .unwrap();
    let bulkhead = wait_for("bulkhead under the host app", || {
        children_named(child.id(), "bulkhead").first().copied()
    });
    let launcher = wait_for("the launcher", || {
        children_named(bulkhead, "bulkhead-launch").first().copied()
    });
    // Up: its worker runs (a child of the launcher, in its own pid namespace).
    wait_for("the worker", || {
        children_named(launcher, "bulkhead-worker").first().copied()
    });
    let t0 = Instant::now();
    let st = Command::new("kill")
        .args(["-KILL", &bulkhead.to_string()])
        .status()
        .unwrap();
    assert!(st.success());
    // The host app waits up to 5 s for orphans (the launcher, re-parented to it) and
    // reports any that stayed.
    assert!(child.wait().unwrap().success());
    assert_eq!(host.finished(&ws), -libc::SIGKILL);
    assert!(
        t0.elapsed() < Duration::from_secs(5),
        "the sandbox outlived its controller by {:?}",
        t0.elapsed()
    );
}
