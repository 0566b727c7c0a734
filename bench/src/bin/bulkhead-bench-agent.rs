//! `bulkhead-bench-agent`: what the agent loop ([`Workspace::run`]) costs per step on top of
//! the work of a step, against an offline zero-latency mock model, measured in one run on
//! this machine. `make bench` (tests/bench.sh) runs it after the other benches.
//!
//! A step is one model call (the mock answers at once with a `bash` tool call running
//! `true`) and that tool call in the run's sandbox. Measured:
//!
//! 1. **Baselines**, the pieces of a step without the loop, interleaved with the runs below:
//!    (a) one model call with a small body through the controller's own client
//!    (`bulkhead::llm::provider_for` + `chat`, the same wire format and streaming mode as the
//!    runs), (a') the same with a body the size of a mid-run agent request, (b) `exec
//!    /bin/true` in a running sandbox, (b') `bash -c true` (exactly what the `bash` tool
//!    sends), (c) one step's transcript commit (tool_call + tool_result, one fdatasync).
//! 2. **One workspace**: runs of N tool steps and a final answer (N + 1 model calls);
//!    steps/s = steps / wall time of `Workspace::run`; controller overhead per step =
//!    (wall − (N+1)·a − N·b) / (N+1); the steady-state step (from one model call to the next,
//!    the first step excluded: it starts the sandbox) split into model call, tool call and the
//!    loop's own work from the run's events; CPU time of this process per step (the mock runs
//!    in a child process, the sandboxes are separate processes).
//! 3. **C concurrent workspaces** (default 100): C threads, each running such a run in its
//!    own workspace at once (the mock's steps are matched on each workspace's API key, so no
//!    run takes another's replies); aggregate steps/s, per-step latency p50/p90, CPU per step
//!    split into controller, sandboxes and mock.
//! 4. **Memory per idle run**: K runs (default 100) waiting on the model at once (the mock
//!    holds each reply), in a fresh controller process per scenario: growth of that process's
//!    RSS/PSS (`/proc/self/smaps_rollup` before and during) per run, plus the launcher +
//!    worker PSS of the sandboxes. The run starts its sandbox lazily, at the first tool call,
//!    so there are two scenarios: idle before any tool call (no sandbox) and idle after one
//!    tool call (sandbox up). The runs are then cancelled.
//!
//! The mock model is this binary re-executed (`--internal-mock`), driven over a pipe, so the
//! controller's CPU and memory are measured without it. Ctrl-C, SIGTERM and panics cancel
//! every run, stop every sandbox and child, and remove the temporary state directory.

use bulkhead_bench::bench_util::{alive, percentile, process_tree, ratio, today};
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Mutex, MutexGuard, OnceLock, RwLock};
use std::time::{Duration, Instant};

use bulkhead::agent::tools::{ToolRegistry, BASH_OUTPUT_CAP};
use bulkhead::agent::{RunEvent, RunOutcome, RunRequest, DEFAULT_SYSTEM_PROMPT};
use bulkhead::llm::{self, ApiKey, ChatRequest, HttpConfig, Message, ModelRef, Provider};
use bulkhead::{
    CancelToken, Event, LimitsConfig, LockMode, Platform, PlatformConfig, Workspace,
    WorkspaceConfig,
};
use bulkhead_shared::{Command as WireCommand, ExecRequest, ExitKind};
use bulkhead_tests::mock_llm::{MockLlm, MockOptions, Reply, Script, Step};
use serde::{Deserialize, Serialize};
use serde_json::json;

const USAGE: &str = "\
usage: bulkhead-bench-agent [--quick] [--steps N] [--runs R] [--concurrency C] [--rounds M]
                            [--idle K] [--provider openai|anthropic|google] [--no-stream]
                            [--dir DIR]

Controller overhead of the agent loop per step against a zero-latency mock model, one
workspace and C concurrent workspaces, and the memory of an idle run. Needs what sandboxes
need (root, or delegated cgroups and user namespaces) and the release binaries next to this
one (`make bench` builds them).

  --steps N        tool steps per run; each run makes N + 1 model calls (default 50; --quick 20)
  --runs R         measured one-workspace runs (default 5; --quick 3)
  --concurrency C  concurrent workspaces (default 100; --quick 20)
  --rounds M       rounds of the concurrent runs (default 3; --quick 1)
  --idle K         concurrent idle runs for the memory figures (default 100; --quick 20)
  --provider P     wire format the mock speaks (default openai)
  --no-stream      non-streaming model calls (default: streaming, as `bulkhead run`)
  --dir DIR        where the temporary state directory goes (default: $TMPDIR); put it on
                   the disk the state lives on: each step's transcript commit is an fdatasync";

const MIB: f64 = 1024.0 * 1024.0;
/// Backstop on one run (the runs take well under a second per step).
const RUN_TIMEOUT: Duration = Duration::from_secs(300);
/// How long an idle run's reply is held by the mock (the runs are cancelled long before).
const IDLE_HOLD_MS: u64 = 900_000;
/// Backstop on one idle-memory child process.
const IDLE_CHILD_TIMEOUT: Duration = Duration::from_secs(600);
const BASELINE_KEY: &str = "sk-bench-baseline-0000000000";
const USER_MESSAGE: &str = "Run `true` with bash until told otherwise, then say done.";

// ───────────────────────────── options ─────────────────────────────

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Prov {
    OpenAi,
    Anthropic,
    Google,
}

impl Prov {
    fn parse(s: &str) -> Option<Prov> {
        match s {
            "openai" => Some(Prov::OpenAi),
            "anthropic" => Some(Prov::Anthropic),
            "google" | "gemini" => Some(Prov::Google),
            _ => None,
        }
    }
    fn name(self) -> &'static str {
        match self {
            Prov::OpenAi => "openai",
            Prov::Anthropic => "anthropic",
            Prov::Google => "google",
        }
    }
    fn model(self) -> &'static str {
        match self {
            Prov::OpenAi => "openai/gpt-4o",
            Prov::Anthropic => "anthropic/claude-sonnet-4-5",
            Prov::Google => "google/gemini-2.5-flash",
        }
    }
    fn key_var(self) -> &'static str {
        match self {
            Prov::OpenAi => "OPENAI_API_KEY",
            Prov::Anthropic => "ANTHROPIC_API_KEY",
            Prov::Google => "GEMINI_API_KEY",
        }
    }
    /// The base URL of the mock for this provider (OpenAI's conventionally ends in `/v1`).
    fn base_url(self, mock_base: &str) -> String {
        match self {
            Prov::OpenAi => format!("{mock_base}/v1"),
            _ => mock_base.to_string(),
        }
    }
}

#[derive(Debug, Clone)]
struct Opts {
    steps: usize,
    runs: usize,
    batch: usize,
    concurrency: usize,
    rounds: usize,
    idle: usize,
    provider: Prov,
    stream: bool,
    dir: Option<PathBuf>,
    quick: bool,
}

fn parse_args(args: &[String]) -> Result<Opts, String> {
    let mut o = Opts {
        steps: 50,
        runs: 5,
        batch: 40,
        concurrency: 100,
        rounds: 3,
        idle: 100,
        provider: Prov::OpenAi,
        stream: true,
        dir: None,
        quick: false,
    };
    let mut explicit: BTreeMap<&'static str, usize> = BTreeMap::new();
    let mut it = args.iter();
    let num = |flag: &str, v: Option<&String>| -> Result<usize, String> {
        v.ok_or_else(|| format!("{flag} needs a value"))?
            .parse::<usize>()
            .map_err(|e| format!("{flag}: {e}"))
    };
    while let Some(a) = it.next() {
        match a.as_str() {
            "--quick" => o.quick = true,
            "--steps" => {
                explicit.insert("steps", num(a, it.next())?.max(2));
            }
            "--runs" => {
                explicit.insert("runs", num(a, it.next())?.max(1));
            }
            "--concurrency" => {
                explicit.insert("concurrency", num(a, it.next())?);
            }
            "--rounds" => {
                explicit.insert("rounds", num(a, it.next())?.max(1));
            }
            "--idle" => {
                explicit.insert("idle", num(a, it.next())?);
            }
            "--provider" => {
                let v = it.next().ok_or("--provider needs a value")?;
                o.provider = Prov::parse(v).ok_or_else(|| {
                    format!("--provider: expected openai, anthropic or google, got {v:?}")
                })?;
            }
            "--no-stream" => o.stream = false,
            "--dir" => o.dir = Some(it.next().ok_or("--dir needs a value")?.into()),
            "-h" | "--help" => {
                println!("{USAGE}");
                std::process::exit(0);
            }
            other => return Err(format!("unexpected argument {other:?}\n{USAGE}")),
        }
    }
    if o.quick {
        o.steps = 20;
        o.runs = 3;
        o.batch = 20;
        o.concurrency = 20;
        o.rounds = 1;
        o.idle = 20;
    }
    // Explicit values win over --quick, wherever they stand.
    for (k, v) in explicit {
        match k {
            "steps" => o.steps = v,
            "runs" => o.runs = v,
            "concurrency" => o.concurrency = v,
            "rounds" => o.rounds = v,
            _ => o.idle = v,
        }
    }
    Ok(o)
}

// ───────────────────── teardown on Ctrl-C, SIGTERM and panic ─────────────────────

/// Cancel tokens of the runs in flight.
static TOKENS: Mutex<Vec<(u64, CancelToken)>> = Mutex::new(Vec::new());
static NEXT_TOKEN: AtomicUsize = AtomicUsize::new(0);
/// Child processes to stop on an emergency (the idle-memory controllers).
static CHILDREN: Mutex<Vec<u32>> = Mutex::new(Vec::new());
/// Runs in flight.
static ACTIVE: AtomicUsize = AtomicUsize::new(0);
/// The temporary state directory (parent process only), removed on an emergency exit.
static STATE_DIR: OnceLock<PathBuf> = OnceLock::new();
static STOP: AtomicBool = AtomicBool::new(false);

fn lock<T>(m: &'static Mutex<T>) -> MutexGuard<'static, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

fn stopping() -> bool {
    STOP.load(Ordering::Relaxed)
}

fn send_signal(pid: u32, sig: libc::c_int) {
    if pid > 1 {
        // SAFETY: kill(2) on a pid this process spawned and has not reaped yet.
        unsafe { libc::kill(pid as libc::pid_t, sig) };
    }
}

fn comm(pid: u32) -> String {
    std::fs::read_to_string(format!("/proc/{pid}/comm"))
        .map(|c| c.trim().to_string())
        .unwrap_or_default()
}

/// Live `bulkhead-launch` children of this process and the `bulkhead-worker`s below them.
fn own_sandboxes() -> (Vec<u32>, Vec<u32>) {
    let tree = process_tree();
    let me = std::process::id();
    let mut launchers = Vec::new();
    let mut workers = Vec::new();
    let mut stack: Vec<u32> = tree.get(&me).cloned().unwrap_or_default();
    while let Some(p) = stack.pop() {
        match comm(p).as_str() {
            "bulkhead-launch" if alive(p) => launchers.push(p),
            "bulkhead-worker" if alive(p) => workers.push(p),
            _ => {}
        }
        if let Some(c) = tree.get(&p) {
            stack.extend(c);
        }
    }
    (launchers, workers)
}

/// Cancels every run, stops the child processes, waits (bounded), SIGTERMs any launcher
/// left, removes the state directory.
fn emergency_teardown() {
    STOP.store(true, Ordering::Relaxed);
    if let Ok(t) = TOKENS.try_lock() {
        for (_, c) in t.iter() {
            c.cancel();
        }
    }
    let children: Vec<u32> = CHILDREN.try_lock().map(|c| c.clone()).unwrap_or_default();
    for &p in &children {
        send_signal(p, libc::SIGTERM);
    }
    let deadline = Instant::now() + Duration::from_secs(8);
    while Instant::now() < deadline
        && (ACTIVE.load(Ordering::Relaxed) > 0 || children.iter().any(|&p| alive(p)))
    {
        std::thread::sleep(Duration::from_millis(20));
    }
    // Launchers are our unreaped children: their pids cannot have been reused.
    let (launchers, _) = own_sandboxes();
    for &p in &launchers {
        send_signal(p, libc::SIGTERM);
    }
    let deadline = Instant::now() + Duration::from_secs(5);
    while Instant::now() < deadline && launchers.iter().any(|&p| alive(p)) {
        std::thread::sleep(Duration::from_millis(20));
    }
    if let Some(dir) = STATE_DIR.get() {
        let _ = std::fs::remove_dir_all(dir);
    }
}

/// Blocks SIGINT/SIGTERM/SIGHUP in every thread and handles them in one thread: tear down,
/// exit 130. A panic tears down too (the release profile aborts on panic).
fn install_teardown() {
    // SAFETY: sigset_t is plain data; sigemptyset/sigaddset initialise it.
    let mut set: libc::sigset_t = unsafe { std::mem::zeroed() };
    // SAFETY: `set` is a valid sigset_t owned by this frame.
    unsafe { libc::sigemptyset(&mut set) };
    for s in [libc::SIGINT, libc::SIGTERM, libc::SIGHUP] {
        // SAFETY: as above, with a valid signal number.
        unsafe { libc::sigaddset(&mut set, s) };
    }
    // SAFETY: blocks signals for this (the only) thread; later threads inherit the mask.
    unsafe { libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut()) };
    std::thread::spawn(move || loop {
        let mut sig: libc::c_int = 0;
        // SAFETY: `set` is initialised; sigwait writes the signal number to `sig`.
        if unsafe { libc::sigwait(&set, &mut sig) } == 0 {
            eprintln!("\nbulkhead-bench-agent: signal {sig}: stopping");
            emergency_teardown();
            std::process::exit(130);
        }
    });
    let prev = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        prev(info);
        emergency_teardown();
    }));
}

fn raise_nofile(want: u64) {
    let mut rl = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes into `rl`.
    unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut rl) };
    let target = if rl.rlim_max < want {
        let raised = libc::rlimit {
            rlim_cur: want,
            rlim_max: want,
        };
        // SAFETY: setrlimit reads `raised`; raising the hard limit needs CAP_SYS_RESOURCE and
        // simply fails without it.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raised) } == 0 {
            return;
        }
        rl.rlim_max
    } else {
        want.max(rl.rlim_cur)
    };
    let soft = libc::rlimit {
        rlim_cur: target,
        rlim_max: rl.rlim_max,
    };
    // SAFETY: as above; the soft limit may always go up to the hard one.
    unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &soft) };
}

// ───────────────────────────── measuring ─────────────────────────────

fn median(v: &[f64]) -> Option<f64> {
    percentile(v, 0.5)
}

fn p90(v: &[f64]) -> Option<f64> {
    percentile(v, 0.9)
}

fn add(a: Option<f64>, b: Option<f64>) -> Option<f64> {
    Some(a? + b?)
}

fn f(v: Option<f64>, digits: usize) -> String {
    match v {
        Some(x) => format!("{x:.digits$}"),
        None => "-".into(),
    }
}

/// Milliseconds with 3 decimals under 1 ms, 2 above.
fn ms(v: Option<f64>) -> String {
    match v {
        Some(x) if x.abs() < 1.0 => format!("{x:.3}"),
        Some(x) => format!("{x:.2}"),
        None => "-".into(),
    }
}

fn fx(r: Option<f64>) -> String {
    r.map(|r| format!("{r:.2}×")).unwrap_or_else(|| "-".into())
}

fn secs_ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// CPU time of this process (every thread), seconds.
fn process_cpu() -> f64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes into `ts`, a valid timespec on this frame.
    unsafe { libc::clock_gettime(libc::CLOCK_PROCESS_CPUTIME_ID, &mut ts) };
    ts.tv_sec as f64 + ts.tv_nsec as f64 * 1e-9
}

/// CPU time of the reaped children (the launchers, with the workers they reaped), seconds.
fn children_cpu() -> f64 {
    // SAFETY: rusage is plain data; getrusage fills it.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: `ru` is a valid rusage on this frame.
    unsafe { libc::getrusage(libc::RUSAGE_CHILDREN, &mut ru) };
    let tv = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 * 1e-6;
    tv(ru.ru_utime) + tv(ru.ru_stime)
}

/// utime + stime of a live process, seconds (clock-tick resolution).
fn pid_cpu(pid: u32) -> Option<f64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &s[s.rfind(')')? + 1..];
    let v: Vec<&str> = rest.split_whitespace().collect();
    let ut: f64 = v.get(11)?.parse().ok()?;
    let st: f64 = v.get(12)?.parse().ok()?;
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
    Some((ut + st) / hz)
}

/// RSS, PSS and anonymous PSS of one process, bytes; with its thread count.
#[derive(Debug, Default, Clone, Copy, Serialize, Deserialize)]
struct Mem {
    rss: u64,
    pss: u64,
    pss_anon: u64,
    threads: u64,
}

fn mem_of(pid: &str) -> Mem {
    let mut m = Mem::default();
    if let Ok(s) = std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup")) {
        for l in s.lines() {
            let mut it = l.split_whitespace();
            let (Some(k), Some(v)) = (it.next(), it.next().and_then(|v| v.parse::<u64>().ok()))
            else {
                continue;
            };
            match k {
                "Rss:" => m.rss = v * 1024,
                "Pss:" => m.pss = v * 1024,
                "Pss_Anon:" => m.pss_anon = v * 1024,
                _ => {}
            }
        }
    }
    if let Ok(s) = std::fs::read_to_string(format!("/proc/{pid}/status")) {
        m.threads = s
            .lines()
            .find_map(|l| l.strip_prefix("Threads:"))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(0);
    }
    m
}

// ───────────────────────────── the mock, in a child process ─────────────────────────────

/// `--internal-mock [--zero-latency]`: serves an empty script and reads commands on stdin,
/// one per line, answering each with one line: `push STEP_JSON` → `ok`, `count` →
/// `count N`, `sizes` → `sizes B1 B2 …` (request body bytes), `bad` → `bad N FIRST` (requests
/// not answered with a reply), `clear` → `ok` (forgets the recorded requests). Exits at
/// EOF, without joining connection threads (a held reply may still be sleeping).
fn mock_server_main(args: &[String]) -> i32 {
    let mut script = Script::new();
    if args.iter().any(|a| a == "--zero-latency") {
        script = script.zero_latency();
    }
    let mock = match MockLlm::start_with(script, MockOptions::default()) {
        Ok(m) => m,
        Err(e) => {
            eprintln!("bulkhead-bench-agent mock: cannot listen on 127.0.0.1: {e}");
            return 1;
        }
    };
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "listening {}", mock.base_url());
    let _ = out.flush();
    for line in std::io::stdin().lock().lines() {
        let Ok(line) = line else { break };
        let reply = if let Some(j) = line.strip_prefix("push ") {
            match serde_json::from_str::<Step>(j) {
                Ok(s) => {
                    mock.push(s);
                    "ok".to_string()
                }
                Err(e) => format!("error {e}"),
            }
        } else {
            match line.as_str() {
                "count" => format!("count {}", mock.request_count()),
                "sizes" => {
                    let sizes: Vec<String> = mock
                        .requests()
                        .iter()
                        .map(|r| r.body_text.len().to_string())
                        .collect();
                    format!("sizes {}", sizes.join(" "))
                }
                "bad" => {
                    let reqs = mock.requests();
                    let bad: Vec<_> = reqs.iter().filter(|r| r.outcome != "reply").collect();
                    format!(
                        "bad {} {}",
                        bad.len(),
                        bad.first()
                            .map(|r| format!("#{} {} -> {}", r.seq, r.path, r.outcome))
                            .unwrap_or_default()
                    )
                }
                "clear" => {
                    mock.clear_requests();
                    "ok".to_string()
                }
                other => format!("error unknown command {other:?}"),
            }
        };
        let _ = writeln!(out, "{reply}");
        let _ = out.flush();
    }
    let _ = out.flush();
    // SAFETY: _exit ends the process at once: the mock's threads (a reply held for minutes
    // included) are not joined, and no destructor of this process needs to run.
    unsafe { libc::_exit(0) }
}

/// The mock server child, driven over its stdin/stdout.
struct MockChild {
    child: Child,
    stdin: Option<ChildStdin>,
    out: BufReader<ChildStdout>,
    base: String,
}

impl MockChild {
    fn spawn(zero_latency: bool) -> Result<MockChild, String> {
        let exe = std::env::current_exe().map_err(|e| format!("current_exe: {e}"))?;
        let mut cmd = Command::new(exe);
        cmd.arg("--internal-mock")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        if zero_latency {
            cmd.arg("--zero-latency");
        }
        let mut child = cmd.spawn().map_err(|e| format!("starting the mock: {e}"))?;
        let stdin = child.stdin.take();
        let out = BufReader::new(child.stdout.take().ok_or("mock: no stdout")?);
        let mut m = MockChild {
            child,
            stdin,
            out,
            base: String::new(),
        };
        let first = m.read_line()?;
        m.base = first
            .strip_prefix("listening ")
            .ok_or_else(|| format!("mock: unexpected first line {first:?}"))?
            .to_string();
        Ok(m)
    }

    fn read_line(&mut self) -> Result<String, String> {
        let mut l = String::new();
        match self.out.read_line(&mut l) {
            Ok(0) => Err("the mock exited".into()),
            Ok(_) => Ok(l.trim_end().to_string()),
            Err(e) => Err(format!("mock: {e}")),
        }
    }

    fn cmd(&mut self, line: &str) -> Result<String, String> {
        let stdin = self.stdin.as_mut().ok_or("mock: stdin closed")?;
        writeln!(stdin, "{line}")
            .and_then(|()| stdin.flush())
            .map_err(|e| format!("mock: {e}"))?;
        self.read_line()
    }

    fn push(&mut self, step: Step) -> Result<(), String> {
        let j = serde_json::to_string(&step).map_err(|e| e.to_string())?;
        match self.cmd(&format!("push {j}"))?.as_str() {
            "ok" => Ok(()),
            other => Err(format!("mock push: {other}")),
        }
    }

    fn count(&mut self) -> Result<usize, String> {
        let r = self.cmd("count")?;
        r.strip_prefix("count ")
            .and_then(|n| n.parse().ok())
            .ok_or_else(|| format!("mock count: {r:?}"))
    }

    fn sizes(&mut self) -> Result<Vec<usize>, String> {
        let r = self.cmd("sizes")?;
        Ok(r.strip_prefix("sizes")
            .unwrap_or("")
            .split_whitespace()
            .filter_map(|n| n.parse().ok())
            .collect())
    }

    /// Requests not answered with a scripted reply, and the first of them.
    fn bad(&mut self) -> Result<(usize, String), String> {
        let r = self.cmd("bad")?;
        let rest = r.strip_prefix("bad ").unwrap_or("0");
        let (n, first) = rest.split_once(' ').unwrap_or((rest, ""));
        Ok((n.parse().unwrap_or(0), first.to_string()))
    }

    fn clear(&mut self) -> Result<(), String> {
        match self.cmd("clear")?.as_str() {
            "ok" => Ok(()),
            other => Err(format!("mock clear: {other}")),
        }
    }

    fn cpu(&self) -> Option<f64> {
        pid_cpu(self.child.id())
    }

    /// The steps of one run: `steps` tool calls (after an optional hold), then an answer.
    fn push_run(&mut self, key: &str, steps: usize) -> Result<(), String> {
        self.push(
            Step::reply(Reply::tool_call("bash", json!({"command": "true"})))
                .key(key)
                .times(steps as u64),
        )?;
        self.push(Step::reply(Reply::text("done")).key(key))
    }
}

impl Drop for MockChild {
    fn drop(&mut self) {
        // EOF on its stdin ends it.
        drop(self.stdin.take());
        let deadline = Instant::now() + Duration::from_secs(3);
        loop {
            match self.child.try_wait() {
                Ok(Some(_)) | Err(_) => return,
                Ok(None) if Instant::now() >= deadline => {
                    let _ = self.child.kill();
                    let _ = self.child.wait();
                    return;
                }
                Ok(None) => std::thread::sleep(Duration::from_millis(10)),
            }
        }
    }
}

// ───────────────────────────── one agent run ─────────────────────────────

/// What one run cost, from its events.
#[derive(Debug, Default, Clone)]
struct RunSample {
    steps: usize,
    tools: usize,
    wall_ms: f64,
    /// `run_with_events` called → first model request.
    setup_ms: f64,
    /// First model request → second: includes starting the sandbox.
    first_step_ms: f64,
    /// Final answer received → `run_with_events` returned (sandbox shutdown, `run_end`).
    end_ms: f64,
    /// Steady-state steps (2..=N): one model request to the next.
    step_ms: Vec<f64>,
    /// Of which the model call (request made → reply handed to the loop).
    model_ms: Vec<f64>,
    /// Of which the tool call (as the loop timed it, events included).
    tool_ms: Vec<f64>,
    /// Of which the rest: transcript, context, request building, events.
    loop_ms: Vec<f64>,
    /// CPU of this process during the run (meaningful when it runs alone).
    cpu_s: f64,
}

#[derive(Default)]
struct Trace {
    attempt: Vec<Option<Instant>>,
    answer: Vec<Option<Instant>>,
    call: Vec<Option<Instant>>,
    result: Vec<Option<Instant>>,
}

fn mark(v: &mut Vec<Option<Instant>>, step: usize, t: Instant) {
    if v.len() <= step {
        v.resize(step + 1, None);
    }
    if v[step].is_none() {
        v[step] = Some(t);
    }
}

struct RunSpec<'a> {
    ws: &'a Workspace,
    prov: Prov,
    base_url: &'a str,
    key: &'a str,
    steps: usize,
    stream: bool,
    cancel: CancelToken,
}

fn request_for(spec: &RunSpec<'_>) -> RunRequest {
    let mut req = RunRequest::new(USER_MESSAGE);
    req.model = Some(spec.prov.model().to_string());
    req.fallbacks = Some(vec![]);
    req.base_url = Some(spec.base_url.to_string());
    req.env = Some(BTreeMap::from([(
        spec.prov.key_var().to_string(),
        spec.key.to_string(),
    )]));
    req.max_steps = spec.steps + 5;
    req.stream = spec.stream;
    req.lock = LockMode::FailFast;
    req.timeouts.run = Some(RUN_TIMEOUT);
    req.cancel = Some(spec.cancel.clone());
    req
}

/// Keeps a token registered (for the teardown) and the run counted while it lives.
struct Active(u64);

impl Active {
    fn new(t: &CancelToken) -> Active {
        let id = NEXT_TOKEN.fetch_add(1, Ordering::SeqCst) as u64;
        lock(&TOKENS).push((id, t.clone()));
        ACTIVE.fetch_add(1, Ordering::SeqCst);
        if stopping() {
            t.cancel();
        }
        Active(id)
    }
}

impl Drop for Active {
    fn drop(&mut self) {
        ACTIVE.fetch_sub(1, Ordering::SeqCst);
        lock(&TOKENS).retain(|(id, _)| *id != self.0);
    }
}

/// Runs `spec` (its mock steps must be pushed) and checks it went as scripted.
fn agent_run(spec: &RunSpec<'_>) -> Result<RunSample, String> {
    if stopping() {
        return Err("interrupted".into());
    }
    let _active = Active::new(&spec.cancel);
    let req = request_for(spec);
    let mut tr = Trace::default();
    let cpu0 = process_cpu();
    let t0 = Instant::now();
    let r = spec.ws.run_with_events(req, &mut |e: &RunEvent| {
        let t = Instant::now();
        match e {
            RunEvent::ModelAttempt { step, .. } => mark(&mut tr.attempt, *step, t),
            RunEvent::AssistantMessage { step, .. } => mark(&mut tr.answer, *step, t),
            RunEvent::ToolCall { step, .. } => mark(&mut tr.call, *step, t),
            RunEvent::ToolResult { step, .. } => mark(&mut tr.result, *step, t),
            _ => {}
        }
    });
    let t_end = Instant::now();
    let cpu_s = process_cpu() - cpu0;
    let res = r.map_err(|e| format!("{}: run failed: {e}", spec.ws.id()))?;
    let n = spec.steps + 1;
    if res.outcome != RunOutcome::Completed
        || res.steps != n
        || res.tool_calls.len() != spec.steps
        || res.response != "done"
    {
        return Err(format!(
            "{}: the run did not go as scripted: {:?} after {} steps, {} tool calls, response {:?}",
            spec.ws.id(),
            res.outcome,
            res.steps,
            res.tool_calls.len(),
            res.response
        ));
    }
    if let Some(bad) = res.tool_calls.iter().find(|c| c.is_error) {
        return Err(format!(
            "{}: tool call at step {} failed ({} chars of output)",
            spec.ws.id(),
            bad.step,
            bad.output_chars
        ));
    }
    let at = |v: &[Option<Instant>], k: usize, what: &str| -> Result<Instant, String> {
        v.get(k)
            .copied()
            .flatten()
            .ok_or_else(|| format!("{}: no {what} event for step {k}", spec.ws.id()))
    };
    let mut s = RunSample {
        steps: res.steps,
        tools: res.tool_calls.len(),
        wall_ms: secs_ms(t_end - t0),
        setup_ms: secs_ms(at(&tr.attempt, 1, "model_attempt")? - t0),
        first_step_ms: secs_ms(
            at(&tr.attempt, 2, "model_attempt")? - at(&tr.attempt, 1, "model_attempt")?,
        ),
        end_ms: secs_ms(t_end - at(&tr.answer, n, "assistant_message")?),
        cpu_s,
        ..RunSample::default()
    };
    for k in 2..n {
        let a = at(&tr.attempt, k, "model_attempt")?;
        let interval = secs_ms(at(&tr.attempt, k + 1, "model_attempt")? - a);
        let model = secs_ms(at(&tr.answer, k, "assistant_message")? - a);
        let tool = secs_ms(at(&tr.result, k, "tool_result")? - at(&tr.call, k, "tool_call")?);
        s.step_ms.push(interval);
        s.model_ms.push(model);
        s.tool_ms.push(tool);
        s.loop_ms.push(interval - model - tool);
    }
    Ok(s)
}

// ───────────────────────────── (1)+(2) baselines and one workspace ─────────────────────────────

#[derive(Debug, Default)]
struct Samples {
    ms: Vec<f64>,
    cpu_ms: Vec<f64>,
    errors: usize,
    first_error: Option<String>,
}

impl Samples {
    fn fail(&mut self, e: String) {
        self.errors += 1;
        if self.first_error.is_none() {
            self.first_error = Some(e);
        }
    }
    fn median(&self) -> Option<f64> {
        median(&self.ms)
    }
}

const B_SMALL: usize = 0;
const B_AGENT: usize = 1;
const B_TRUE: usize = 2;
const B_BASH: usize = 3;
const B_COMMIT: usize = 4;

#[derive(Debug, Default)]
struct SingleReport {
    base: Vec<(String, Samples)>,
    body_small: usize,
    body_agent: usize,
    agent_bodies: Vec<usize>,
    runs: Vec<RunSample>,
    errors: Vec<String>,
}

impl SingleReport {
    fn b(&self, i: usize) -> Option<f64> {
        self.base.get(i).and_then(|(_, s)| s.median())
    }
    fn b_cpu(&self, i: usize) -> Option<f64> {
        self.base.get(i).and_then(|(_, s)| median(&s.cpu_ms))
    }
    fn per_run(&self, f: impl Fn(&RunSample) -> f64) -> Vec<f64> {
        self.runs.iter().map(f).collect()
    }
    fn steps_per_s(&self) -> Vec<f64> {
        self.per_run(|r| r.steps as f64 / (r.wall_ms / 1e3))
    }
    fn wall_per_step(&self) -> Vec<f64> {
        self.per_run(|r| r.wall_ms / r.steps as f64)
    }
    /// (wall − (N+1)·a − N·b) / (N+1).
    fn overhead(&self) -> Vec<f64> {
        let (Some(a), Some(b)) = (self.b(B_SMALL), self.b(B_TRUE)) else {
            return vec![];
        };
        self.per_run(|r| (r.wall_ms - r.steps as f64 * a - r.tools as f64 * b) / r.steps as f64)
    }
    fn pooled(&self, f: impl Fn(&RunSample) -> &Vec<f64>) -> Vec<f64> {
        self.runs
            .iter()
            .flat_map(|r| f(r).iter().copied())
            .collect()
    }
    fn cpu_per_step_us(&self) -> Vec<f64> {
        self.per_run(|r| r.cpu_s * 1e6 / r.steps as f64)
    }
}

/// A system prompt the size of the agent's (the default prompt, the environment note).
fn agent_like_system() -> String {
    format!(
        "{DEFAULT_SYSTEM_PROMPT}\n\n# Environment\nYou work in a sandboxed Linux workspace: your files are in \
         /workspace (the working directory), /tmp is scratch space, the rest of the system is read-only, \
         and there is no network except loopback. Your tools: bash, read, write, edit, ls. Use them to \
         act; when the task is done, answer the user without calling a tool."
    )
}

/// The request of step `k` of a run (k − 1 tool round trips of history).
fn agent_like_request(model: &str, k: usize, stream: bool) -> ChatRequest {
    let mut messages = vec![Message::User {
        text: USER_MESSAGE.into(),
    }];
    for i in 1..k {
        let id = format!("call_mock_{i:06}");
        messages.push(Message::Assistant {
            text: String::new(),
            tool_calls: vec![llm::ToolCall {
                id: id.clone(),
                name: "bash".into(),
                arguments: json!({"command": "true"}),
            }],
        });
        messages.push(Message::ToolResult {
            call_id: id,
            name: "bash".into(),
            content: "(no output)".into(),
            is_error: false,
        });
    }
    ChatRequest {
        model: model.to_string(),
        system: agent_like_system(),
        messages,
        tools: ToolRegistry::builtin().specs(),
        stream,
        ..ChatRequest::default()
    }
}

fn chat_once(p: &dyn Provider, req: &ChatRequest, key: &ApiKey) -> Result<(), String> {
    let r = p.chat(req, key, &mut |_| {}).map_err(|e| e.to_string())?;
    if r.tool_calls.len() == 1 {
        Ok(())
    } else {
        Err(format!("unexpected reply: {r:?}"))
    }
}

fn exec_ok(sb: &mut bulkhead::RunningSandbox, req: &ExecRequest) -> Result<(), String> {
    let o = sb
        .get()
        .exec(req.clone(), &mut |_, _| {})
        .map_err(|e| e.to_string())?;
    match o.result.exit {
        ExitKind::Code(0) => Ok(()),
        other => Err(format!("ended {other:?}")),
    }
}

fn single(opts: &Opts, platform: &Platform, mock: &mut MockChild) -> Result<SingleReport, String> {
    let mut rep = SingleReport::default();
    let prov = opts.provider;
    let base_url = prov.base_url(&mock.base);
    let ws = platform
        .create_workspace("agent-1", WorkspaceConfig::default())
        .map_err(|e| e.to_string())?;
    let ws_base = platform
        .create_workspace("baseline", WorkspaceConfig::default())
        .map_err(|e| e.to_string())?;

    // (a), (a'): the controller's client, straight to the mock.
    mock.push(
        Step::reply(Reply::tool_call("bash", json!({"command": "true"})))
            .key(BASELINE_KEY)
            .forever(),
    )?;
    let model: ModelRef = prov.model().parse().map_err(|e| format!("{e}"))?;
    // The mock is on 127.0.0.1, which model calls reach only when the operator allows it.
    let http = HttpConfig {
        ssrf: bulkhead::net::SsrfPolicy {
            allow_loopback: true,
            ..Default::default()
        },
        ..HttpConfig::default()
    };
    let provider =
        llm::provider_for(&model, Some(&base_url), &|_| None, http).map_err(|e| e.to_string())?;
    let key = ApiKey::new(BASELINE_KEY);
    let small = ChatRequest {
        model: model.model.clone(),
        messages: vec![Message::User { text: "hi".into() }],
        stream: opts.stream,
        ..ChatRequest::default()
    };
    let mid = agent_like_request(&model.model, opts.steps.div_ceil(2), opts.stream);

    // (b), (b'): a running sandbox.
    let mut sb = ws_base
        .sandbox(&LimitsConfig::default())
        .map_err(|e| format!("starting a sandbox: {e}"))?;
    let exec = |cmd: WireCommand, timeout_ms: u64, cap: u64| ExecRequest {
        command: cmd,
        cwd: "/workspace".into(),
        env: vec![],
        stdin: vec![],
        timeout_ms,
        output_cap: cap,
        kill_stragglers: false,
    };
    let true_req = exec(WireCommand::Argv(vec!["/bin/true".into()]), 0, 1 << 20);
    let mut bash_req = exec(
        WireCommand::Argv(vec!["bash".into(), "-c".into(), "true".into()]),
        120_000,
        BASH_OUTPUT_CAP,
    );
    let mut bash_label = "(b') exec bash -c true (what the bash tool sends)";
    if exec_ok(&mut sb, &bash_req).is_err() {
        // The tool falls back to /bin/sh when the image has no bash.
        bash_req.command = WireCommand::Shell("true".into());
        bash_label = "(b') exec sh -c true (the bash tool's fallback: no bash)";
    }

    // (c): one step's transcript commit, in the same state directory.
    let mut handle = ws_base
        .sessions()
        .create(Some("commit-baseline"), LockMode::FailFast)
        .map_err(|e| e.to_string())?;
    let mut commit_n = 0u64;

    rep.base = vec![
        (
            "(a) model call, small body (provider.chat)".to_string(),
            Samples::default(),
        ),
        (
            format!(
                "(a') model call, body of step {} of a run",
                opts.steps.div_ceil(2)
            ),
            Samples::default(),
        ),
        (
            "(b) exec /bin/true in a running sandbox".to_string(),
            Samples::default(),
        ),
        (bash_label.to_string(), Samples::default()),
        (
            "(c) transcript commit of a step (2 events, fdatasync)".to_string(),
            Samples::default(),
        ),
    ];
    let mut one = |v: usize| -> Result<(), String> {
        match v {
            B_SMALL => chat_once(provider.as_ref(), &small, &key),
            B_AGENT => chat_once(provider.as_ref(), &mid, &key),
            B_TRUE => exec_ok(&mut sb, &true_req),
            B_BASH => exec_ok(&mut sb, &bash_req),
            _ => {
                commit_n += 1;
                let id = format!("call_mock_{commit_n:06}");
                let run = "run-baseline";
                handle
                    .push(
                        Event::tool_call(&id, "bash", json!({"command": "true"})).with_run_id(run),
                    )
                    .and_then(|()| {
                        handle.push(Event::tool_result(&id, "(no output)", false).with_run_id(run))
                    })
                    .and_then(|()| handle.commit())
                    .map(drop)
                    .map_err(|e| e.to_string())
            }
        }
    };
    let variants = rep.base.len();
    mock.clear()?;
    // Warm-up, not recorded: every baseline, then one run.
    for _ in 0..10 {
        for v in 0..variants {
            one(v)?;
        }
    }
    let sizes = mock.sizes()?;
    rep.body_small = sizes.first().copied().unwrap_or(0);
    rep.body_agent = sizes.get(1).copied().unwrap_or(0);
    let key_of = |r: usize| format!("sk-bench-single-{r:04}-0000000000");
    let spec = |key: &str| -> Result<RunSample, String> {
        agent_run(&RunSpec {
            ws: &ws,
            prov,
            base_url: &base_url,
            key,
            steps: opts.steps,
            stream: opts.stream,
            cancel: CancelToken::new(),
        })
    };
    let warm_key = key_of(0);
    mock.push_run(&warm_key, opts.steps)?;
    mock.clear()?;
    spec(&warm_key)?;
    rep.agent_bodies = mock.sizes()?;
    mock.clear()?;

    let t0 = Instant::now();
    for r in 1..=opts.runs {
        if stopping() {
            return Err("interrupted".into());
        }
        for i in 0..opts.batch {
            for j in 0..variants {
                let v = (i + j + r) % variants;
                let c0 = process_cpu();
                let t = Instant::now();
                let res = one(v);
                let dt = secs_ms(t.elapsed());
                let dc = (process_cpu() - c0) * 1e3;
                let s = &mut rep.base[v].1;
                match res {
                    Ok(()) => {
                        s.ms.push(dt);
                        s.cpu_ms.push(dc);
                    }
                    Err(e) => s.fail(e),
                }
            }
        }
        let k = key_of(r);
        mock.push_run(&k, opts.steps)?;
        match spec(&k) {
            Ok(s) => rep.runs.push(s),
            Err(e) => rep.errors.push(e),
        }
        eprint!(
            "\r  one workspace: {r}/{} runs ({:.0} s)   ",
            opts.runs,
            t0.elapsed().as_secs_f64()
        );
    }
    eprintln!();
    let (bad, first) = mock.bad()?;
    if bad > 0 {
        rep.errors.push(format!(
            "{bad} model requests matched no step; first: {first}"
        ));
    }
    mock.clear()?;
    drop(handle);
    sb.shutdown()
        .map_err(|e| format!("stopping the baseline sandbox: {e}"))?;
    Ok(rep)
}

// ───────────────────────────── (3) concurrent workspaces ─────────────────────────────

#[derive(Debug, Default)]
struct Round {
    wall_s: f64,
    steps: usize,
    ok: usize,
    ctl_cpu_s: f64,
    sandbox_cpu_s: f64,
    mock_cpu_s: Option<f64>,
}

#[derive(Debug, Default)]
struct ConcReport {
    c: usize,
    rounds: Vec<Round>,
    runs: Vec<RunSample>,
    errors: Vec<String>,
}

impl ConcReport {
    fn steps_per_s(&self) -> Vec<f64> {
        self.rounds
            .iter()
            .map(|r| r.steps as f64 / r.wall_s.max(1e-9))
            .collect()
    }
    fn pooled(&self, f: impl Fn(&RunSample) -> &Vec<f64>) -> Vec<f64> {
        self.runs
            .iter()
            .flat_map(|r| f(r).iter().copied())
            .collect()
    }
    fn cpu_us(&self, f: impl Fn(&Round) -> Option<f64>) -> Option<f64> {
        let v: Vec<f64> = self
            .rounds
            .iter()
            .filter_map(|r| Some(f(r)? * 1e6 / r.steps.max(1) as f64))
            .collect();
        median(&v)
    }
}

fn concurrent(
    opts: &Opts,
    platform: &Platform,
    mock: &mut MockChild,
) -> Result<ConcReport, String> {
    let c = opts.concurrency;
    let mut rep = ConcReport {
        c,
        ..ConcReport::default()
    };
    let base_url = opts.provider.base_url(&mock.base);
    let mut wss = Vec::with_capacity(c);
    for i in 0..c {
        wss.push(
            platform
                .create_workspace(&format!("agent-c{i:03}"), WorkspaceConfig::default())
                .map_err(|e| e.to_string())?,
        );
    }
    // One key per workspace, as tenants have; the mock's steps are matched on it.
    let keys: Vec<String> = (0..c)
        .map(|i| format!("sk-bench-tenant-{i:03}-0000000000"))
        .collect();
    let t_all = Instant::now();
    for round in 1..=opts.rounds {
        if stopping() {
            return Err("interrupted".into());
        }
        for k in &keys {
            mock.push_run(k, opts.steps)?;
        }
        mock.clear()?;
        // The runs wait for this gate to open, so they all start at once.
        let gate = RwLock::new(());
        let mock_cpu0 = mock.cpu();
        let (cpu0, ch0) = (process_cpu(), children_cpu());
        let (t0, results) = std::thread::scope(|s| {
            let closed = gate.write().unwrap_or_else(|e| e.into_inner());
            let hs: Vec<_> = wss
                .iter()
                .zip(&keys)
                .map(|(ws, key)| {
                    let gate = &gate;
                    let base_url = &base_url;
                    std::thread::Builder::new()
                        .name("bench-run".into())
                        .spawn_scoped(s, move || {
                            let spec = RunSpec {
                                ws,
                                prov: opts.provider,
                                base_url,
                                key,
                                steps: opts.steps,
                                stream: opts.stream,
                                cancel: CancelToken::new(),
                            };
                            drop(gate.read().unwrap_or_else(|e| e.into_inner()));
                            let r = agent_run(&spec);
                            (r, Instant::now())
                        })
                })
                .collect();
            let spawn_errors: Vec<String> = hs
                .iter()
                .filter_map(|h| {
                    h.as_ref()
                        .err()
                        .map(|e| format!("spawning a run thread: {e}"))
                })
                .collect();
            let t0 = Instant::now();
            drop(closed);
            let mut out: Vec<(Result<RunSample, String>, Instant)> = spawn_errors
                .into_iter()
                .map(|e| (Err(e), Instant::now()))
                .collect();
            for h in hs.into_iter().flatten() {
                out.push(
                    h.join()
                        .unwrap_or_else(|_| (Err("a run thread panicked".into()), Instant::now())),
                );
            }
            (t0, out)
        });
        let end = results.iter().map(|(_, t)| *t).max().unwrap_or(t0);
        let mut r = Round {
            wall_s: (end - t0).as_secs_f64(),
            ctl_cpu_s: process_cpu() - cpu0,
            sandbox_cpu_s: children_cpu() - ch0,
            mock_cpu_s: add(mock.cpu(), mock_cpu0.map(|x| -x)),
            ..Round::default()
        };
        for (res, _) in results {
            match res {
                Ok(s) => {
                    r.steps += s.steps;
                    r.ok += 1;
                    rep.runs.push(s);
                }
                Err(e) => rep.errors.push(e),
            }
        }
        let (bad, first) = mock.bad()?;
        if bad > 0 {
            rep.errors.push(format!(
                "round {round}: {bad} model requests matched no step; first: {first}"
            ));
        }
        mock.clear()?;
        eprintln!(
            "  {c} concurrent workspaces: round {round}/{}: {}/{c} runs, {} steps in {:.2} s ({:.0} s in all)",
            opts.rounds,
            r.ok,
            r.steps,
            r.wall_s,
            t_all.elapsed().as_secs_f64()
        );
        rep.rounds.push(r);
        let (l, _) = own_sandboxes();
        if !l.is_empty() {
            rep.errors.push(format!(
                "round {round}: {} sandboxes still running after the runs",
                l.len()
            ));
        }
    }
    Ok(rep)
}

// ───────────────────────────── (4) memory per idle run ─────────────────────────────

#[derive(Debug, Default, Clone, Serialize, Deserialize)]
struct IdleResult {
    scenario: String,
    k: usize,
    /// Requests the mock had to hold at the measurement (K or 2K).
    expected_requests: usize,
    requests: usize,
    before: Mem,
    during: Mem,
    after: Mem,
    launchers: usize,
    workers: usize,
    launcher: Mem,
    worker: Mem,
    /// Runs that ended as expected (cancelled) / otherwise.
    cancelled: usize,
    errors: Vec<String>,
    left_sandboxes: usize,
    cancel_ms: f64,
}

impl IdleResult {
    fn per(&self, a: u64, b: u64) -> f64 {
        (a as f64 - b as f64) / self.k.max(1) as f64 / MIB
    }
    fn ctl_rss(&self) -> f64 {
        self.per(self.during.rss, self.before.rss)
    }
    fn ctl_pss(&self) -> f64 {
        self.per(self.during.pss, self.before.pss)
    }
    fn sandbox_pss(&self) -> f64 {
        self.per(self.launcher.pss + self.worker.pss, 0)
    }
    fn ok(&self) -> bool {
        self.requests >= self.expected_requests
            && self.errors.is_empty()
            && self.left_sandboxes == 0
    }
}

/// `--internal-idle before-tool|after-tool --k K --state DIR --provider P [--no-stream]`:
/// a fresh controller process holding K runs that wait on the model; prints
/// `RESULT {json}`.
fn idle_child_main(args: &[String]) -> i32 {
    match idle_child(args) {
        Ok(r) => {
            println!(
                "RESULT {}",
                serde_json::to_string(&r).unwrap_or_else(|_| "{}".into())
            );
            let _ = std::io::stdout().flush();
            0
        }
        Err(e) => {
            eprintln!("bulkhead-bench-agent (idle memory): {e}");
            emergency_teardown();
            1
        }
    }
}

fn idle_child(args: &[String]) -> Result<IdleResult, String> {
    let mut scenario = String::new();
    let mut k = 0usize;
    let mut state: Option<PathBuf> = None;
    let mut prov = Prov::OpenAi;
    let mut stream = true;
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "before-tool" | "after-tool" => scenario = a.clone(),
            "--k" => k = it.next().and_then(|v| v.parse().ok()).ok_or("--k N")?,
            "--state" => state = Some(it.next().ok_or("--state DIR")?.into()),
            "--provider" => prov = it.next().and_then(|v| Prov::parse(v)).ok_or("--provider")?,
            "--no-stream" => stream = false,
            other => return Err(format!("unexpected argument {other:?}")),
        }
    }
    let after_tool = match scenario.as_str() {
        "after-tool" => true,
        "before-tool" => false,
        _ => return Err("scenario: before-tool or after-tool".into()),
    };
    let state = state.ok_or("--state DIR is required")?;
    raise_nofile(16 * k as u64 + 4096);
    // `[llm] allow_loopback = true`: the mock model is on 127.0.0.1.
    bulkhead_tests::write_test_config(&state).map_err(|e| format!("config.toml: {e}"))?;
    let platform = Platform::open(PlatformConfig {
        state_dir: state,
        launcher: Some(bulkhead_tests::bin_dir().join("bulkhead-launch")),
    })
    .map_err(|e| e.to_string())?;
    // Delays are honoured: the held replies.
    let mut mock = MockChild::spawn(false)?;
    let base_url = prov.base_url(&mock.base);
    let mut wss = Vec::with_capacity(k + 1);
    for i in 0..=k {
        wss.push(
            platform
                .create_workspace(&format!("idle-{i:03}"), WorkspaceConfig::default())
                .map_err(|e| e.to_string())?,
        );
    }
    let keys: Vec<String> = (0..=k)
        .map(|i| format!("sk-bench-idle-{i:03}-0000000000"))
        .collect();
    // Warm-up run: one tool call and an answer, so what a process sets up once is in place.
    mock.push_run(&keys[k], 1)?;
    agent_run(&RunSpec {
        ws: &wss[k],
        prov,
        base_url: &base_url,
        key: &keys[k],
        steps: 1,
        stream,
        cancel: CancelToken::new(),
    })
    .map_err(|e| format!("warm-up run: {e}"))?;
    for key in &keys[..k] {
        if after_tool {
            mock.push(
                Step::reply(Reply::tool_call("bash", json!({"command": "true"}))).key(key.as_str()),
            )?;
        }
        mock.push(
            Step::reply(Reply::text("done"))
                .key(key.as_str())
                .delay_ms(IDLE_HOLD_MS),
        )?;
    }
    mock.clear()?;
    std::thread::sleep(Duration::from_millis(300));
    let mut r = IdleResult {
        scenario,
        k,
        expected_requests: if after_tool { 2 * k } else { k },
        before: mem_of("self"),
        ..IdleResult::default()
    };
    let tokens: Vec<CancelToken> = (0..k).map(|_| CancelToken::new()).collect();
    let done = AtomicUsize::new(0);
    let results: Vec<Result<(), String>> = std::thread::scope(|s| {
        let hs: Vec<_> = (0..k)
            .map(|i| {
                let (ws, key, token, done, base_url) =
                    (&wss[i], &keys[i], &tokens[i], &done, &base_url);
                std::thread::Builder::new()
                    .name("bench-idle-run".into())
                    .spawn_scoped(s, move || {
                        let spec = RunSpec {
                            ws,
                            prov,
                            base_url,
                            key,
                            steps: 1,
                            stream,
                            cancel: token.clone(),
                        };
                        let _active = Active::new(token);
                        let res = ws.run(request_for(&spec));
                        done.fetch_add(1, Ordering::SeqCst);
                        match res {
                            Err(bulkhead::Error::Cancelled(_)) => Ok(()),
                            Err(e) => Err(format!("{}: {e}", ws.id())),
                            Ok(x) => Err(format!(
                                "{}: completed unexpectedly: {:?}",
                                ws.id(),
                                x.outcome
                            )),
                        }
                    })
            })
            .collect();
        // Every run waiting on its held reply (or ended), then a moment to settle.
        let deadline = Instant::now() + Duration::from_secs(180);
        loop {
            r.requests = mock.count().unwrap_or(0);
            if r.requests >= r.expected_requests
                || done.load(Ordering::SeqCst) >= k
                || Instant::now() >= deadline
                || stopping()
            {
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        std::thread::sleep(Duration::from_millis(500));
        r.during = mem_of("self");
        let (launchers, workers) = own_sandboxes();
        r.launchers = launchers.len();
        r.workers = workers.len();
        for p in &launchers {
            let m = mem_of(&p.to_string());
            r.launcher.rss += m.rss;
            r.launcher.pss += m.pss;
            r.launcher.pss_anon += m.pss_anon;
        }
        for p in &workers {
            let m = mem_of(&p.to_string());
            r.worker.rss += m.rss;
            r.worker.pss += m.pss;
            r.worker.pss_anon += m.pss_anon;
        }
        let t = Instant::now();
        for t in &tokens {
            t.cancel();
        }
        let out: Vec<Result<(), String>> = hs
            .into_iter()
            .map(|h| match h {
                Ok(h) => h
                    .join()
                    .unwrap_or_else(|_| Err("a run thread panicked".into())),
                Err(e) => Err(format!("spawning a run thread: {e}")),
            })
            .collect();
        r.cancel_ms = secs_ms(t.elapsed());
        out
    });
    for res in results {
        match res {
            Ok(()) => r.cancelled += 1,
            Err(e) => r.errors.push(e),
        }
    }
    r.after = mem_of("self");
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let (l, w) = own_sandboxes();
        r.left_sandboxes = l.len() + w.len();
        if r.left_sandboxes == 0 || Instant::now() >= deadline {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Ok(r)
}

/// Runs one idle-memory scenario in a fresh process (bounded by a timeout).
fn idle_scenario(opts: &Opts, scenario: &str, state: &Path) -> Result<IdleResult, String> {
    let exe = std::env::current_exe().map_err(|e| format!("current_exe: {e}"))?;
    let mut cmd = Command::new(exe);
    cmd.args(["--internal-idle", scenario, "--k"])
        .arg(opts.idle.to_string())
        .arg("--state")
        .arg(state)
        .args(["--provider", opts.provider.name()])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit());
    if !opts.stream {
        cmd.arg("--no-stream");
    }
    let mut child = cmd
        .spawn()
        .map_err(|e| format!("starting {scenario}: {e}"))?;
    let pid = child.id();
    lock(&CHILDREN).push(pid);
    let mut so = child.stdout.take();
    let reader = std::thread::spawn(move || {
        let mut s = String::new();
        if let Some(o) = so.as_mut() {
            let _ = o.read_to_string(&mut s);
        }
        s
    });
    let deadline = Instant::now() + IDLE_CHILD_TIMEOUT;
    let mut killed = None;
    let status = loop {
        match child.try_wait() {
            Ok(Some(st)) => break Ok(st),
            Ok(None) => {}
            Err(e) => break Err(e.to_string()),
        }
        let now = Instant::now();
        if now >= deadline && killed.is_none() {
            // Not reaped yet (try_wait said so): the pid is still our child's.
            send_signal(pid, libc::SIGTERM);
            killed = Some(now);
        } else if killed.is_some_and(|k| now >= k + Duration::from_secs(15)) {
            send_signal(pid, libc::SIGKILL);
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    lock(&CHILDREN).retain(|&p| p != pid);
    let out = reader.join().unwrap_or_default();
    if killed.is_some() {
        return Err(format!(
            "{scenario}: no result within {} s",
            IDLE_CHILD_TIMEOUT.as_secs()
        ));
    }
    let status = status?;
    let line = out
        .lines()
        .find_map(|l| l.strip_prefix("RESULT "))
        .ok_or_else(|| format!("{scenario}: the child ended {status} without a result"))?;
    serde_json::from_str(line).map_err(|e| format!("{scenario}: {e}"))
}

// ───────────────────────────── report ─────────────────────────────

fn row(
    name: &str,
    med: Option<f64>,
    p: Option<f64>,
    base: Option<f64>,
    fmt: fn(Option<f64>) -> String,
) {
    println!(
        "  {:<60} {:>10} {:>10} {:>10} {:>8}",
        name,
        fmt(med),
        fmt(p),
        fmt(base),
        fx(ratio(med, base))
    );
}

fn header(unit: &str) {
    println!(
        "  {:<60} {:>10} {:>10} {:>10} {:>8}",
        "",
        format!("median {unit}"),
        format!("p90 {unit}"),
        "baseline",
        "ratio"
    );
}

fn num0(v: Option<f64>) -> String {
    f(v, 0)
}

fn print_single(opts: &Opts, s: &SingleReport) {
    println!(
        "\n(1) baselines: the pieces of a step without the loop ({} each, interleaved with the runs)",
        s.base.first().map_or(0, |(_, x)| x.ms.len())
    );
    println!(
        "  {:<60} {:>10} {:>10} {:>10}",
        "", "median ms", "p90 ms", "CPU ms"
    );
    for (name, x) in &s.base {
        println!(
            "  {:<60} {:>10} {:>10} {:>10}",
            name,
            ms(x.median()),
            ms(p90(&x.ms)),
            ms(median(&x.cpu_ms))
        );
        if x.errors > 0 {
            println!(
                "    {} failed; first: {}",
                x.errors,
                x.first_error.as_deref().unwrap_or("")
            );
        }
    }
    println!(
        "  request bodies: (a) {} B, (a') {} B; the agent's, step 1 → {}: {} B → {} B",
        s.body_small,
        s.body_agent,
        s.agent_bodies.len(),
        s.agent_bodies.first().copied().unwrap_or(0),
        s.agent_bodies.last().copied().unwrap_or(0)
    );
    let ab = add(s.b(B_SMALL), s.b(B_TRUE));
    let ab2 = add(s.b(B_AGENT), s.b(B_BASH));
    println!(
        "\n(2) one workspace: {} runs of {} steps ({} bash tool calls + the answer); per-run figures are medians over runs",
        s.runs.len(),
        opts.steps + 1,
        opts.steps
    );
    header("");
    row(
        "steps/s (p90 column: p10; baseline: 1 / (a + b))",
        median(&s.steps_per_s()),
        percentile(&s.steps_per_s(), 0.1),
        ab.map(|x| 1e3 / x),
        num0,
    );
    row(
        "wall time per step, ms (baseline: a + b)",
        median(&s.wall_per_step()),
        p90(&s.wall_per_step()),
        ab,
        ms,
    );
    row(
        "controller overhead per step, ms: (wall − (N+1)·a − N·b) / (N+1)",
        median(&s.overhead()),
        p90(&s.overhead()),
        None,
        ms,
    );
    let st = s.pooled(|r| &r.step_ms);
    row(
        "steady-state step, ms (baseline: a' + b')",
        median(&st),
        p90(&st),
        ab2,
        ms,
    );
    let m = s.pooled(|r| &r.model_ms);
    row(
        "  of which the model call, ms (baseline: a')",
        median(&m),
        p90(&m),
        s.b(B_AGENT),
        ms,
    );
    let t = s.pooled(|r| &r.tool_ms);
    row(
        "  of which the bash tool call, ms (baseline: b')",
        median(&t),
        p90(&t),
        s.b(B_BASH),
        ms,
    );
    let l = s.pooled(|r| &r.loop_ms);
    row(
        "  of which the loop's own work, ms (baseline: c, the commit)",
        median(&l),
        p90(&l),
        s.b(B_COMMIT),
        ms,
    );
    let cpu_base = add(s.b_cpu(B_SMALL), s.b_cpu(B_TRUE)).map(|x| x * 1e3);
    row(
        "controller CPU per step, µs (baseline: client CPU of a + b)",
        median(&s.cpu_per_step_us()),
        p90(&s.cpu_per_step_us()),
        cpu_base,
        num0,
    );
    row(
        "per run: setup (run called → first model request), ms",
        median(&s.per_run(|r| r.setup_ms)),
        p90(&s.per_run(|r| r.setup_ms)),
        None,
        ms,
    );
    row(
        "per run: first step (starts the sandbox), ms",
        median(&s.per_run(|r| r.first_step_ms)),
        p90(&s.per_run(|r| r.first_step_ms)),
        None,
        ms,
    );
    row(
        "per run: end (answer → returned; sandbox shutdown), ms",
        median(&s.per_run(|r| r.end_ms)),
        p90(&s.per_run(|r| r.end_ms)),
        None,
        ms,
    );
    for e in s.errors.iter().take(5) {
        println!("  error: {e}");
    }
}

fn print_conc(c: &ConcReport, single: Option<&SingleReport>) {
    println!(
        "\n(3) {} concurrent workspaces: {} round{}; each round starts {} runs at once (own workspace, own key, own sandbox)",
        c.c,
        c.rounds.len(),
        if c.rounds.len() == 1 { "" } else { "s" },
        c.c
    );
    header("");
    let one = single.and_then(|s| median(&s.steps_per_s()));
    let sps = c.steps_per_s();
    row(
        "aggregate steps/s (p90 column: p10; baseline: one workspace)",
        median(&sps),
        percentile(&sps, 0.1),
        one,
        num0,
    );
    let ab2 = single.and_then(|s| add(s.b(B_AGENT), s.b(B_BASH)));
    let st = c.pooled(|r| &r.step_ms);
    row(
        "per-step latency, ms (steady state; baseline: a' + b')",
        median(&st),
        p90(&st),
        ab2,
        ms,
    );
    row(
        "  the same against C / aggregate steps/s (queueing for the CPUs)",
        median(&st),
        p90(&st),
        median(&sps).map(|x| c.c as f64 * 1e3 / x),
        ms,
    );
    let m = c.pooled(|r| &r.model_ms);
    row(
        "  of which the model call, ms (baseline: a')",
        median(&m),
        p90(&m),
        single.and_then(|s| s.b(B_AGENT)),
        ms,
    );
    let t = c.pooled(|r| &r.tool_ms);
    row(
        "  of which the bash tool call, ms (baseline: b')",
        median(&t),
        p90(&t),
        single.and_then(|s| s.b(B_BASH)),
        ms,
    );
    let l = c.pooled(|r| &r.loop_ms);
    row(
        "  of which the loop's own work, ms",
        median(&l),
        p90(&l),
        None,
        ms,
    );
    let fs: Vec<f64> = c.runs.iter().map(|r| r.first_step_ms).collect();
    row(
        "first step of a run (starts its sandbox), ms",
        median(&fs),
        p90(&fs),
        None,
        ms,
    );
    let w: Vec<f64> = c.runs.iter().map(|r| r.wall_ms).collect();
    row("run wall time, ms", median(&w), p90(&w), None, ms);
    println!(
        "  CPU per step (median over rounds): controller {} µs, sandboxes {} µs, mock {} µs; {} of {} runs completed",
        num0(c.cpu_us(|r| Some(r.ctl_cpu_s))),
        num0(c.cpu_us(|r| Some(r.sandbox_cpu_s))),
        num0(c.cpu_us(|r| r.mock_cpu_s)),
        c.runs.len(),
        c.c * c.rounds.len()
    );
    for e in c.errors.iter().take(5) {
        println!("  error: {e}");
    }
    if c.errors.len() > 5 {
        println!("  … {} errors in all", c.errors.len());
    }
}

fn print_idle(rs: &[IdleResult]) {
    let k = rs.first().map_or(0, |r| r.k);
    println!(
        "\n(4) memory per idle run: {k} runs waiting on the model at once, in a fresh controller process each; MiB per run"
    );
    println!(
        "  {:<34} {:>8} {:>8} {:>9} {:>11} {:>11} {:>9} {:>8}",
        "scenario", "ctl RSS", "ctl PSS", "threads", "sandboxes", "sbx PSS", "total", "waiting"
    );
    for r in rs {
        let name = if r.scenario == "before-tool" {
            "idle before any tool call"
        } else {
            "idle after one tool call"
        };
        println!(
            "  {:<34} {:>8.3} {:>8.3} {:>9} {:>11} {:>11.3} {:>9.3} {:>8}",
            name,
            r.ctl_rss(),
            r.ctl_pss(),
            format!(
                "+{:.1}",
                (r.during.threads as f64 - r.before.threads as f64) / r.k.max(1) as f64
            ),
            format!("{}+{}", r.launchers, r.workers),
            r.sandbox_pss(),
            r.ctl_pss() + r.sandbox_pss(),
            format!("{}/{}", r.requests, r.expected_requests)
        );
    }
    for r in rs {
        println!(
            "  {}: controller RSS {:.1} → {:.1} MiB while waiting → {:.1} MiB after cancelling (in {:.0} ms); launcher PSS {:.3}, worker PSS {:.3} MiB each; {} cancelled, {} sandboxes left",
            r.scenario,
            r.before.rss as f64 / MIB,
            r.during.rss as f64 / MIB,
            r.after.rss as f64 / MIB,
            r.cancel_ms,
            r.launcher.pss as f64 / r.launchers.max(1) as f64 / MIB,
            r.worker.pss as f64 / r.workers.max(1) as f64 / MIB,
            r.cancelled,
            r.left_sandboxes
        );
        for e in r.errors.iter().take(3) {
            println!("    error: {e}");
        }
    }
    println!(
        "  (the run starts its sandbox at its first tool call: before it, a waiting run holds no sandbox)"
    );
}

fn host_line(opts: &Opts) -> String {
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let cpus = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(0);
    let mem = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("MemTotal:"))
                .and_then(|v| v.split_whitespace().next()?.parse::<f64>().ok())
        })
        .unwrap_or(0.0)
        / 1024.0
        / 1024.0;
    format!(
        "{} · Linux {} · {cpus} CPUs · {mem:.0} GiB · mock model: {} wire format, {}, zero latency, in its own process",
        today(),
        kernel.trim(),
        opts.provider.name(),
        if opts.stream { "streaming" } else { "not streaming" }
    )
}

fn args_string(opts: &Opts) -> String {
    let mut a = String::new();
    if opts.quick {
        a.push_str(" --quick");
    }
    let (d_steps, d_runs, d_c, d_rounds, d_idle) = if opts.quick {
        (20, 3, 20, 1, 20)
    } else {
        (50, 5, 100, 3, 100)
    };
    if opts.steps != d_steps {
        let _ = write!(a, " --steps {}", opts.steps);
    }
    if opts.runs != d_runs {
        let _ = write!(a, " --runs {}", opts.runs);
    }
    if opts.concurrency != d_c {
        let _ = write!(a, " --concurrency {}", opts.concurrency);
    }
    if opts.rounds != d_rounds {
        let _ = write!(a, " --rounds {}", opts.rounds);
    }
    if opts.idle != d_idle {
        let _ = write!(a, " --idle {}", opts.idle);
    }
    if opts.provider != Prov::OpenAi {
        let _ = write!(a, " --provider {}", opts.provider.name());
    }
    if !opts.stream {
        a.push_str(" --no-stream");
    }
    a
}

fn summary(
    opts: &Opts,
    s: Option<&SingleReport>,
    c: Option<&ConcReport>,
    idle: &[IdleResult],
) -> String {
    let mut o = String::new();
    let _ = writeln!(o, "### Agent loop overhead");
    let _ = writeln!(o);
    let _ = writeln!(o, "{}", host_line(opts));
    let _ = writeln!(o);
    let _ = writeln!(
        o,
        "A step = one model call (the mock answers at once with a `bash` call of `true`) + that tool call in the run's sandbox; runs of {} steps + the answer. Baselines in the same run: (a) one model call with a small body through the controller's HTTP client, (b) `exec /bin/true` in a running sandbox; (a') and (b') the same with a mid-run request body and `bash -c true` (what the tool sends).",
        opts.steps
    );
    let _ = writeln!(o);
    let _ = writeln!(
        o,
        "| measure | bulkhead (median / p90) | baseline | ratio |"
    );
    let _ = writeln!(o, "| --- | ---: | ---: | ---: |");
    if let Some(s) = s {
        let ab = add(s.b(B_SMALL), s.b(B_TRUE));
        let ab2 = add(s.b(B_AGENT), s.b(B_BASH));
        let sps = s.steps_per_s();
        let _ = writeln!(
            o,
            "| steps/s, one workspace (median of {} runs; baseline 1/(a+b)) | {} | {} | {} |",
            s.runs.len(),
            num0(median(&sps)),
            num0(ab.map(|x| 1e3 / x)),
            fx(ratio(median(&sps), ab.map(|x| 1e3 / x)))
        );
        let wps = s.wall_per_step();
        let _ = writeln!(
            o,
            "| wall time per step, one workspace (ms; baseline a + b = {} + {}) | {} / {} | {} | {} |",
            ms(s.b(B_SMALL)),
            ms(s.b(B_TRUE)),
            ms(median(&wps)),
            ms(p90(&wps)),
            ms(ab),
            fx(ratio(median(&wps), ab))
        );
        let ov = s.overhead();
        let _ = writeln!(
            o,
            "| **controller overhead per step** (ms): wall/step − a − b, run setup and sandbox start included | **{}** / {} | | |",
            ms(median(&ov)),
            ms(p90(&ov))
        );
        let st = s.pooled(|r| &r.step_ms);
        let l = s.pooled(|r| &r.loop_ms);
        let _ = writeln!(
            o,
            "| steady-state step (ms; baseline a' + b' = {} + {}) | {} / {} | {} | {} |",
            ms(s.b(B_AGENT)),
            ms(s.b(B_BASH)),
            ms(median(&st)),
            ms(p90(&st)),
            ms(ab2),
            fx(ratio(median(&st), ab2))
        );
        let _ = writeln!(
            o,
            "| of which the loop's own work (ms; baseline: one transcript commit with fdatasync) | {} / {} | {} | {} |",
            ms(median(&l)),
            ms(p90(&l)),
            ms(s.b(B_COMMIT)),
            fx(ratio(median(&l), s.b(B_COMMIT)))
        );
        let cpu = s.cpu_per_step_us();
        let _ = writeln!(
            o,
            "| controller CPU per step (µs; baseline: client CPU of a + b) | {} / {} | {} | {} |",
            num0(median(&cpu)),
            num0(p90(&cpu)),
            num0(add(s.b_cpu(B_SMALL), s.b_cpu(B_TRUE)).map(|x| x * 1e3)),
            fx(ratio(
                median(&cpu),
                add(s.b_cpu(B_SMALL), s.b_cpu(B_TRUE)).map(|x| x * 1e3)
            ))
        );
        let fs = s.per_run(|r| r.first_step_ms);
        let _ = writeln!(
            o,
            "| per run: setup / first step (starts the sandbox) / end (stops it), ms | {} / {} / {} | | |",
            ms(median(&s.per_run(|r| r.setup_ms))),
            ms(median(&fs)),
            ms(median(&s.per_run(|r| r.end_ms)))
        );
    }
    if let Some(c) = c {
        let one = s.and_then(|s| median(&s.steps_per_s()));
        let sps = c.steps_per_s();
        let _ = writeln!(
            o,
            "| steps/s, {} concurrent workspaces (aggregate, median of {} round{}; baseline: one workspace) | {} | {} | {} |",
            c.c,
            c.rounds.len(),
            if c.rounds.len() == 1 { "" } else { "s" },
            num0(median(&sps)),
            num0(one),
            fx(ratio(median(&sps), one))
        );
        let st = c.pooled(|r| &r.step_ms);
        let ab2 = s.and_then(|s| add(s.b(B_AGENT), s.b(B_BASH)));
        let _ = writeln!(
            o,
            "| per-step latency, {} concurrent (ms, p50 / p90; baseline a' + b') | {} / {} | {} | {} |",
            c.c,
            ms(median(&st)),
            ms(p90(&st)),
            ms(ab2),
            fx(ratio(median(&st), ab2))
        );
        let little = median(&sps).map(|x| c.c as f64 * 1e3 / x);
        let _ = writeln!(
            o,
            "| the same against C / aggregate steps/s ({} runs queueing for the CPUs) | {} / {} | {} | {} |",
            c.c,
            ms(median(&st)),
            ms(p90(&st)),
            ms(little),
            fx(ratio(median(&st), little))
        );
        let _ = writeln!(
            o,
            "| CPU per step, {} concurrent: controller / sandboxes / mock (µs) | {} / {} / {} | | |",
            c.c,
            num0(c.cpu_us(|r| Some(r.ctl_cpu_s))),
            num0(c.cpu_us(|r| Some(r.sandbox_cpu_s))),
            num0(c.cpu_us(|r| r.mock_cpu_s))
        );
        let _ = writeln!(
            o,
            "| runs completed, {} concurrent | {}/{} | | |",
            c.c,
            c.runs.len(),
            c.c * c.rounds.len()
        );
    }
    for r in idle {
        let (label, sbx) = if r.scenario == "before-tool" {
            (
                "idle before any tool call (no sandbox yet: it starts at the first tool call)",
                "",
            )
        } else {
            (
                "idle after one tool call (sandbox up)",
                " + launcher and worker PSS",
            )
        };
        let _ = writeln!(
            o,
            "| MiB per idle run, {} runs waiting on the model, {label}: controller RSS / PSS growth{sbx} | {:.3} / {:.3}{} | | |",
            r.k,
            r.ctl_rss(),
            r.ctl_pss(),
            if sbx.is_empty() {
                String::new()
            } else {
                format!(" + {:.3} = {:.3}", r.sandbox_pss(), r.ctl_pss() + r.sandbox_pss())
            }
        );
    }
    let _ = writeln!(o);
    let _ = writeln!(
        o,
        "Reproduce: `make bench` (this part alone: `cargo build --release --workspace && target/release/bulkhead-bench-agent{}`)",
        args_string(opts)
    );
    o
}

// ───────────────────────────── main ─────────────────────────────

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some("--internal-mock") => std::process::exit(mock_server_main(&args[1..])),
        Some("--internal-idle") => {
            install_teardown();
            std::process::exit(idle_child_main(&args[1..]))
        }
        _ => {}
    }
    let opts = match parse_args(&args) {
        Ok(o) => o,
        Err(e) => {
            eprintln!("bulkhead-bench-agent: {e}");
            std::process::exit(2);
        }
    };
    install_teardown();
    let r = run(&opts);
    if stopping() {
        // The signal thread tears down and exits; do not race it.
        loop {
            std::thread::sleep(Duration::from_secs(1));
        }
    }
    std::process::exit(match r {
        Ok(true) => 0,
        Ok(false) => 1,
        Err(e) => {
            eprintln!("bulkhead-bench-agent: {e}");
            emergency_teardown();
            1
        }
    });
}

/// `Ok(false)` when the bench ran but something failed or was left behind.
fn run(opts: &Opts) -> Result<bool, String> {
    raise_nofile(16 * opts.concurrency.max(opts.idle) as u64 + 4096);
    let bin_dir = bulkhead_tests::bin_dir();
    let launcher = bin_dir.join("bulkhead-launch");
    for b in ["bulkhead-launch", "bulkhead-worker"] {
        if !bin_dir.join(b).exists() {
            return Err(format!(
                "{} is missing: build the release binaries first (`cargo build --release --workspace`; `make bench` does)",
                bin_dir.join(b).display()
            ));
        }
    }
    let mut tb = tempfile::Builder::new();
    tb.prefix("bulkhead-bench-agent-");
    let tmp = match &opts.dir {
        Some(d) => {
            std::fs::create_dir_all(d).map_err(|e| format!("{}: {e}", d.display()))?;
            tb.tempdir_in(d)
        }
        None => tb.tempdir(),
    }
    .map_err(|e| format!("temp dir: {e}"))?;
    let _ = STATE_DIR.set(tmp.path().to_path_buf());
    // `[llm] allow_loopback = true`: the mock model is on 127.0.0.1.
    bulkhead_tests::write_test_config(&tmp.path().join("state"))
        .map_err(|e| format!("config.toml: {e}"))?;
    let platform = Platform::open(PlatformConfig {
        state_dir: tmp.path().join("state"),
        launcher: Some(launcher),
    })
    .map_err(|e| e.to_string())?;
    println!(
        "bulkhead-bench-agent: binaries in {}, state in {}",
        bin_dir.display(),
        tmp.path().display()
    );
    println!("{}", host_line(opts));

    let mut ok = true;
    let mut mock = MockChild::spawn(true)?;
    let single_rep = single(opts, &platform, &mut mock)?;
    ok &= single_rep.errors.is_empty() && single_rep.base.iter().all(|(_, s)| s.errors == 0);
    print_single(opts, &single_rep);

    let conc = if opts.concurrency > 0 {
        let c = concurrent(opts, &platform, &mut mock)?;
        ok &= c.errors.is_empty();
        print_conc(&c, Some(&single_rep));
        Some(c)
    } else {
        None
    };
    drop(mock);

    let mut idle = Vec::new();
    if opts.idle > 0 {
        for scenario in ["before-tool", "after-tool"] {
            if stopping() {
                return Err("interrupted".into());
            }
            eprintln!("  memory: {} idle runs, {scenario}", opts.idle);
            match idle_scenario(opts, scenario, &tmp.path().join(format!("idle-{scenario}"))) {
                Ok(r) => {
                    ok &= r.ok();
                    idle.push(r);
                }
                Err(_) if stopping() => return Err("interrupted".into()),
                Err(e) => {
                    ok = false;
                    println!("  memory, {scenario}: {e}");
                }
            }
        }
        if !idle.is_empty() {
            print_idle(&idle);
        }
    }
    if stopping() {
        return Err("interrupted".into());
    }
    let (left, _) = own_sandboxes();
    if !left.is_empty() {
        ok = false;
        println!("\n{} sandboxes left running", left.len());
    }

    println!("\n--- summary (paste into docs/benchmarks.md) ---\n");
    print!("{}", summary(opts, Some(&single_rep), conc.as_ref(), &idle));
    println!("\n--- end of summary ---");
    drop(platform);
    tmp.close()
        .map_err(|e| format!("removing the state dir: {e}"))?;
    std::io::stdout().flush().ok();
    Ok(ok)
}
