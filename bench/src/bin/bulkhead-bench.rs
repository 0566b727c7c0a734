//! `bulkhead-bench`: how fast bulkhead sandboxes start, how cheap a running one is, and how
//! many fit on the machine, measured against bubblewrap and plain processes in the same run
//! on the same machine. `make bench` (tests/bench.sh) builds everything and runs it.
//!
//! (a) cold start: every variant runs once per round, round-robin (the starting variant
//!     rotates), so machine noise hits all of them alike. Medians and p90s, ratios against
//!     bwrap's median.
//! (b) density: N idle sandboxes started concurrently and held; start rate, memory per
//!     sandbox (user PSS of launcher + worker, plus what the sandbox cgroups account to the
//!     kernel and to tmpfs), MemAvailable before/while/after as a cross-check, a Ping to every
//!     one, then teardown and a check that nothing is left. The same for M idle bwrap
//!     sandboxes as the baseline.
//!
//! (c) neighbours: tenant B's `bulkhead exec /bin/true` (the CLI, end to end) while tenant A
//!     runs each attack of `bulkhead_tests::NEIGHBOUR_ATTACKS` (cpu hog, fork bomb, memory
//!     bomb, io/fsync flood) in its own sandbox; the median as a ratio to B alone, measured
//!     in the same run before and after the attacks. Goal ≤ 2× for cpu, fork and memory; the
//!     io ratio is reported.
//!
//! A miss of a goal is printed, not an error exit; the exit status is non-zero only when
//! the bench itself could not run or left something behind.
//!
//! Ctrl-C, SIGTERM and panics tear everything down: every launcher and bwrap this process
//! starts is registered, and a signal thread (or the panic hook) terminates them, waits for
//! them, and removes the temporary state directory.

use bulkhead_bench::bench_util::{alive, percentile, process_tree, ratio, today};
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::fmt::Write as _;
use std::io::{BufRead, BufReader, Read, Write};
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdout, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use bulkhead::{
    LimitsConfig, Platform, PlatformConfig, RunningSandbox, Sandbox, Workspace, WorkspaceConfig,
};
use bulkhead_shared::frame::{decode_payload, read_payload};
use bulkhead_shared::{
    Command as WireCommand, ControllerEnd, ExecRequest, ExitKind, LaunchSpec, LauncherReport,
    Reply, Request, WorkerMsg,
};

const USAGE: &str = "\
usage: bulkhead-bench [--quick] [--iterations N] [--density N] [--bwrap-density M]
                      [--threads T] [--density-mode threads|pipeline]
                      [--neighbour-rounds N] [--only cold|density|neighbours]

Cold start, persistent exec and density of bulkhead sandboxes against bubblewrap, measured in
one run on this machine. Needs root (or delegated cgroups and user namespaces) and the release
binaries next to this one (`make bench` builds them).

  --iterations N     cold-start rounds (default 200; --quick: 30)
  --density N        idle sandboxes held at once (default 1000; --quick: 100)
  --bwrap-density M  idle bwrap sandboxes for the baseline (default min(N, 200))
  --threads T        concurrent starters (default 8)
  --density-mode     threads: T threads each starting N/T through the library (default);
                     pipeline: one thread keeping T launches in flight on the raw protocol
                     (measured on a 2-CPU host: the same rate within noise, so the default
                     is the library path that users take)
  --neighbour-rounds B's execs per attack, and alone (default 30; --quick: 10)
  --only             run one part only
  --quick            iterations 30, density 100, neighbour rounds 10 (a smoke run)";

/// The bwrap baseline: every namespace, a read-only /usr, fresh /proc, /dev and /tmp.
const BWRAP_ARGS: &[&str] = &[
    "--unshare-all",
    "--die-with-parent",
    "--ro-bind",
    "/usr",
    "/usr",
    "--symlink",
    "usr/bin",
    "/bin",
    "--symlink",
    "usr/lib",
    "/lib",
    "--symlink",
    "usr/lib64",
    "/lib64",
    "--proc",
    "/proc",
    "--dev",
    "/dev",
    "--tmpfs",
    "/tmp",
];

const MIB: f64 = 1024.0 * 1024.0;

// ───────────────────────────── options ─────────────────────────────

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum DensityMode {
    Threads,
    Pipeline,
}

#[derive(Debug, Clone)]
struct Opts {
    iterations: usize,
    warmup: usize,
    density: usize,
    bwrap_density: Option<usize>,
    threads: usize,
    mode: DensityMode,
    cold: bool,
    dense: bool,
    neighbours: bool,
    neighbour_rounds: usize,
}

fn parse_args() -> Result<Opts, String> {
    let mut o = Opts {
        iterations: 200,
        warmup: 5,
        density: 1000,
        bwrap_density: None,
        threads: 8,
        mode: DensityMode::Threads,
        cold: true,
        dense: true,
        neighbours: true,
        neighbour_rounds: 30,
    };
    let mut rounds = None;
    let mut iterations = None;
    let mut density = None;
    let mut args = std::env::args().skip(1);
    let num = |flag: &str, v: Option<String>| -> Result<usize, String> {
        v.ok_or_else(|| format!("{flag} needs a value"))?
            .parse::<usize>()
            .map_err(|e| format!("{flag}: {e}"))
    };
    while let Some(a) = args.next() {
        match a.as_str() {
            "--quick" => {
                o.iterations = 30;
                o.warmup = 3;
                o.density = 100;
                o.neighbour_rounds = 10;
            }
            "--neighbour-rounds" => rounds = Some(num(&a, args.next())?.max(1)),
            "--iterations" => iterations = Some(num(&a, args.next())?.max(1)),
            "--density" => density = Some(num(&a, args.next())?),
            "--bwrap-density" => o.bwrap_density = Some(num(&a, args.next())?),
            "--threads" => o.threads = num(&a, args.next())?.max(1),
            "--density-mode" => {
                o.mode = match args.next().as_deref() {
                    Some("threads") => DensityMode::Threads,
                    Some("pipeline") => DensityMode::Pipeline,
                    other => {
                        return Err(format!(
                            "--density-mode: expected threads or pipeline, got {other:?}"
                        ))
                    }
                }
            }
            "--only" => {
                let only = args.next();
                o.cold = only.as_deref() == Some("cold");
                o.dense = only.as_deref() == Some("density");
                o.neighbours = only.as_deref() == Some("neighbours");
                if !(o.cold || o.dense || o.neighbours) {
                    return Err(format!(
                        "--only: expected cold, density or neighbours, got {only:?}"
                    ));
                }
            }
            "-h" | "--help" => {
                println!("{USAGE}");
                std::process::exit(0);
            }
            other => return Err(format!("unexpected argument {other:?}\n{USAGE}")),
        }
    }
    // Explicit values win over --quick, wherever they stand.
    if let Some(i) = iterations {
        o.iterations = i;
    }
    if let Some(d) = density {
        o.density = d;
    }
    if let Some(r) = rounds {
        o.neighbour_rounds = r;
    }
    Ok(o)
}

// ───────────────────── teardown on Ctrl-C, SIGTERM and panic ─────────────────────

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Owned {
    /// A `bulkhead-launch`: SIGTERM makes it kill its worker and remove the cgroup.
    Launcher,
    /// An outer bwrap: SIGKILL; `--die-with-parent` takes the sandbox with it.
    Bwrap,
}

/// Every process this bench started and has not reaped yet.
static LIVE: Mutex<BTreeMap<u32, Owned>> = Mutex::new(BTreeMap::new());
/// The temporary state directory, removed on an emergency exit.
static STATE_DIR: OnceLock<PathBuf> = OnceLock::new();
/// Set when a signal asked us to stop; loops check it.
static STOP: AtomicBool = AtomicBool::new(false);

fn live() -> std::sync::MutexGuard<'static, BTreeMap<u32, Owned>> {
    LIVE.lock().unwrap_or_else(|e| e.into_inner())
}

fn register(pid: u32, what: Owned) {
    live().insert(pid, what);
}

fn unregister(pid: u32) {
    live().remove(&pid);
}

fn stopping() -> bool {
    STOP.load(Ordering::Relaxed)
}

fn send_signal(pid: u32, sig: libc::c_int) {
    if pid > 1 {
        // SAFETY: kill(2) with a pid this process spawned and has not reaped (so not reused).
        unsafe { libc::kill(pid as libc::pid_t, sig) };
    }
}

/// Kills everything registered, waits (bounded) for it to exit, removes the state dir.
fn emergency_teardown() {
    let pids: Vec<(u32, Owned)> = match LIVE.try_lock() {
        Ok(g) => g.iter().map(|(p, w)| (*p, *w)).collect(),
        Err(std::sync::TryLockError::Poisoned(g)) => {
            g.into_inner().iter().map(|(p, w)| (*p, *w)).collect()
        }
        Err(std::sync::TryLockError::WouldBlock) => {
            std::thread::sleep(Duration::from_millis(50));
            live().iter().map(|(p, w)| (*p, *w)).collect()
        }
    };
    eprintln!("bulkhead-bench: tearing down {} processes", pids.len());
    for (pid, what) in &pids {
        send_signal(
            *pid,
            if *what == Owned::Launcher {
                libc::SIGTERM
            } else {
                libc::SIGKILL
            },
        );
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline && pids.iter().any(|(p, _)| alive(*p)) {
        std::thread::sleep(Duration::from_millis(20));
    }
    if let Some(dir) = STATE_DIR.get() {
        let _ = std::fs::remove_dir_all(dir);
    }
}

/// Blocks SIGINT/SIGTERM/SIGHUP in every thread (children get a clean mask from std's
/// spawn) and handles them in one thread: tear down, exit 130.
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
            STOP.store(true, Ordering::Relaxed);
            eprintln!("\nbulkhead-bench: signal {sig}: stopping");
            emergency_teardown();
            std::process::exit(130);
        }
    });
    let prev = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        prev(info);
        STOP.store(true, Ordering::Relaxed);
        emergency_teardown();
    }));
}

fn raise_nofile(want: u64) -> u64 {
    let mut rl = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes into `rl`.
    unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut rl) };
    if rl.rlim_max < want {
        let nr_open = std::fs::read_to_string("/proc/sys/fs/nr_open")
            .ok()
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(rl.rlim_max);
        let raised = libc::rlimit {
            rlim_cur: want.min(nr_open),
            rlim_max: want.min(nr_open),
        };
        // SAFETY: setrlimit reads `raised`; raising the hard limit needs CAP_SYS_RESOURCE and
        // simply fails without it.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raised) } == 0 {
            return raised.rlim_cur;
        }
    }
    let soft = libc::rlimit {
        rlim_cur: rl.rlim_max,
        rlim_max: rl.rlim_max,
    };
    // SAFETY: as above; the soft limit may always go up to the hard one.
    unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &soft) };
    rl.rlim_max
}

// ───────────────────────────── statistics ─────────────────────────────

#[derive(Debug, Default)]
struct Samples {
    ms: Vec<f64>,
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
        percentile(&self.ms, 0.5)
    }
    fn p90(&self) -> Option<f64> {
        percentile(&self.ms, 0.9)
    }
}

fn fmt_ms(v: Option<f64>) -> String {
    match v {
        Some(x) if x < 1.0 => format!("{x:.3}"),
        Some(x) => format!("{x:.2}"),
        None => "-".into(),
    }
}

fn fmt_x(r: Option<f64>) -> String {
    r.map(|r| format!("{r:.2}×")).unwrap_or_else(|| "-".into())
}

fn verdict(ok: Option<bool>) -> &'static str {
    match ok {
        Some(true) => "PASS",
        Some(false) => "MISS",
        None => "n/a ",
    }
}

// ───────────────────────────── host facts ─────────────────────────────

fn meminfo(field: &str) -> Option<u64> {
    let s = std::fs::read_to_string("/proc/meminfo").ok()?;
    s.lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|v| v.split_whitespace().next()?.parse::<u64>().ok())
        .map(|kb| kb * 1024)
}

fn mem_available() -> u64 {
    meminfo("MemAvailable").unwrap_or(0)
}

/// Kernel memory system-wide: slab, per-cpu, kernel stacks, page tables. Its growth
/// includes what no cgroup is charged for (e.g. each new memory cgroup's shrinker info).
fn kernel_mem() -> u64 {
    [
        "Slab",
        "Percpu",
        "KernelStack",
        "PageTables",
        "SecPageTables",
    ]
    .iter()
    .filter_map(|f| meminfo(f))
    .sum()
}

fn mountinfo_lines() -> usize {
    std::fs::read_to_string("/proc/self/mountinfo")
        .map(|s| s.lines().count())
        .unwrap_or(0)
}

/// `Pss`, `Pss_Anon`, `Pss_File`, `Pss_Shmem` of one process, bytes.
#[derive(Debug, Default, Clone, Copy)]
struct Pss {
    total: u64,
    anon: u64,
    file: u64,
    shmem: u64,
}

impl std::ops::AddAssign for Pss {
    fn add_assign(&mut self, o: Pss) {
        self.total += o.total;
        self.anon += o.anon;
        self.file += o.file;
        self.shmem += o.shmem;
    }
}

fn pss(pid: u32) -> Option<Pss> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup")).ok()?;
    let mut p = Pss::default();
    for l in s.lines() {
        let mut it = l.split_whitespace();
        let (Some(k), Some(v)) = (it.next(), it.next().and_then(|v| v.parse::<u64>().ok())) else {
            continue;
        };
        match k {
            "Pss:" => p.total = v * 1024,
            "Pss_Anon:" => p.anon = v * 1024,
            "Pss_File:" => p.file = v * 1024,
            "Pss_Shmem:" => p.shmem = v * 1024,
            _ => {}
        }
    }
    Some(p)
}

/// What a memory cgroup accounts, bytes.
#[derive(Debug, Default, Clone, Copy)]
struct CgMem {
    usage: u64,
    kernel: u64,
    shmem: u64,
}

impl std::ops::AddAssign for CgMem {
    fn add_assign(&mut self, o: CgMem) {
        self.usage += o.usage;
        self.kernel += o.kernel;
        self.shmem += o.shmem;
    }
}

fn read_u64(p: &Path) -> Option<u64> {
    std::fs::read_to_string(p).ok()?.trim().parse().ok()
}

fn stat_fields(p: &Path) -> HashMap<String, u64> {
    std::fs::read_to_string(p)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| {
            let (k, v) = l.split_once(' ')?;
            Some((k.to_string(), v.trim().parse().ok()?))
        })
        .collect()
}

/// Memory of one cgroup directory (v1: `memory.kmem.usage_in_bytes` when present, else
/// usage minus rss and cache; v2: `kernel` in `memory.stat`). `None` if it has no memory
/// controller files.
fn cgroup_mem(dir: &Path) -> Option<CgMem> {
    if let Some(usage) = read_u64(&dir.join("memory.usage_in_bytes")) {
        let st = stat_fields(&dir.join("memory.stat"));
        let user = st.get("rss").copied().unwrap_or(0) + st.get("cache").copied().unwrap_or(0);
        let kernel =
            read_u64(&dir.join("memory.kmem.usage_in_bytes")).unwrap_or(usage.saturating_sub(user));
        return Some(CgMem {
            usage,
            kernel,
            shmem: st.get("shmem").copied().unwrap_or(0),
        });
    }
    if let Some(usage) = read_u64(&dir.join("memory.current")) {
        let st = stat_fields(&dir.join("memory.stat"));
        let user = st.get("anon").copied().unwrap_or(0) + st.get("file").copied().unwrap_or(0);
        let kernel = st
            .get("kernel")
            .copied()
            .unwrap_or(usage.saturating_sub(user));
        return Some(CgMem {
            usage,
            kernel,
            shmem: st.get("shmem").copied().unwrap_or(0),
        });
    }
    None
}

/// This process's own memory cgroup (hierarchical: it holds the launchers and, beneath, the
/// sandbox cgroups), for a cross-check of everything charged while the sandboxes run.
fn own_memory_cgroup() -> Option<PathBuf> {
    let s = std::fs::read_to_string("/proc/self/cgroup").ok()?;
    for l in s.lines() {
        let mut it = l.splitn(3, ':');
        let (_, ctrls, path) = (it.next()?, it.next()?, it.next()?);
        if ctrls.split(',').any(|c| c == "memory") {
            return Some(PathBuf::from(format!("/sys/fs/cgroup/memory{path}")));
        }
    }
    s.lines()
        .find_map(|l| l.strip_prefix("0::"))
        .map(|p| PathBuf::from(format!("/sys/fs/cgroup{p}")))
        .filter(|p| p.join("memory.current").exists())
}

/// `bulkhead-*` cgroup directories (other than the reusable `bulkhead-leaf`) under
/// /sys/fs/cgroup, depth ≤ 5.
fn bulkhead_cgroups() -> Vec<PathBuf> {
    fn walk(d: &Path, depth: usize, out: &mut Vec<PathBuf>) {
        let Ok(rd) = std::fs::read_dir(d) else { return };
        for e in rd.flatten() {
            if !e.file_type().is_ok_and(|t| t.is_dir()) {
                continue;
            }
            let name = e.file_name();
            let name = name.to_string_lossy();
            let p = e.path();
            if name.starts_with("bulkhead-") && name != "bulkhead-leaf" {
                out.push(p.clone());
            }
            if depth < 5 {
                walk(&p, depth + 1, out);
            }
        }
    }
    let mut out = Vec::new();
    walk(Path::new("/sys/fs/cgroup"), 1, &mut out);
    out
}

/// Pids whose `comm` is `bulkhead-launch` or `bulkhead-worker`.
fn bulkhead_processes() -> Vec<u32> {
    let Ok(rd) = std::fs::read_dir("/proc") else {
        return vec![];
    };
    rd.flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|p| {
            std::fs::read_to_string(format!("/proc/{p}/comm"))
                .is_ok_and(|c| matches!(c.trim(), "bulkhead-launch" | "bulkhead-worker"))
                && alive(*p)
        })
        .collect()
}

fn descendants(tree: &HashMap<u32, Vec<u32>>, root: u32) -> Vec<u32> {
    let mut out = vec![root];
    let mut i = 0;
    while i < out.len() {
        if let Some(c) = tree.get(&out[i]) {
            out.extend(c);
        }
        i += 1;
    }
    out
}

fn bwrap_path() -> Option<PathBuf> {
    std::env::var_os("PATH")?
        .to_str()?
        .split(':')
        .map(|d| Path::new(d).join("bwrap"))
        .find(|p| p.is_file())
}

fn bwrap_version(bwrap: &Path) -> String {
    Command::new(bwrap)
        .arg("--version")
        .output()
        .ok()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default()
}

// ───────────────────── the launcher on the raw protocol ─────────────────────

/// A sandbox driven directly over the wire protocol, without the library's `Sandbox`:
/// spawn `bulkhead-launch` with the socket on fd 3 and a report pipe on fd 1, send the spec,
/// wait for Hello and the Ready report.
#[derive(Debug)]
struct RawSandbox {
    child: Child,
    end: ControllerEnd,
    report: ChildStdout,
    worker_pid: u32,
    cgroup_dirs: Vec<String>,
    next_id: u64,
    done: bool,
}

impl RawSandbox {
    /// Spawns the launcher and sends the spec; [`RawSandbox::wait_ready`] completes it.
    fn spawn(launcher: &Path, spec: &LaunchSpec) -> Result<RawSandbox, String> {
        let (ours, theirs) = UnixStream::pair().map_err(|e| format!("socketpair: {e}"))?;
        let theirs = OwnedFd::from(theirs);
        let fd = theirs.as_raw_fd();
        let mut cmd = Command::new(launcher);
        cmd.stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .env_clear();
        // SAFETY: the closure runs in the forked child before exec and only calls
        // async-signal-safe fcntl/dup2 on a descriptor that is open in the child.
        unsafe {
            cmd.pre_exec(move || {
                let r = if fd == 3 {
                    libc::fcntl(3, libc::F_SETFD, 0)
                } else {
                    libc::dup2(fd, 3)
                };
                if r < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let mut child = cmd
            .spawn()
            .map_err(|e| format!("cannot run {}: {e}", launcher.display()))?;
        drop(theirs);
        register(child.id(), Owned::Launcher);
        let report = child.stdout.take().ok_or("no report pipe")?;
        let end = ControllerEnd::new(ours).map_err(|e| e.to_string())?;
        let mut sb = RawSandbox {
            child,
            end,
            report,
            worker_pid: 0,
            cgroup_dirs: vec![],
            next_id: 1,
            done: false,
        };
        let _ = sb
            .end
            .socket()
            .set_read_timeout(Some(Duration::from_secs(20)));
        sb.end
            .send_launch(spec)
            .map_err(|e| format!("sending the spec: {e}"))?;
        Ok(sb)
    }

    fn wait_ready(&mut self) -> Result<(), String> {
        match self.end.recv() {
            Ok(WorkerMsg::Hello { .. }) => {}
            Ok(WorkerMsg::SetupFailed(e)) => return Err(format!("sandbox setup failed: {e}")),
            Ok(_) => return Err("expected Hello".into()),
            Err(e) => return Err(format!("waiting for Hello: {e}")),
        }
        let mut buf = Vec::new();
        read_payload(&mut self.report, &mut buf).map_err(|e| format!("report pipe: {e}"))?;
        match decode_payload::<LauncherReport>(&buf).map_err(|e| format!("report pipe: {e}"))? {
            LauncherReport::Ready {
                worker_pid,
                cgroup_dirs,
                ..
            } => {
                self.worker_pid = worker_pid;
                self.cgroup_dirs = cgroup_dirs;
                Ok(())
            }
            LauncherReport::Exited { .. } => Err("launcher exited before ready".into()),
        }
    }

    fn ping(&mut self) -> Result<(), String> {
        let id = self.next_id;
        self.next_id += 1;
        self.end
            .request(id, &Request::Ping)
            .map_err(|e| e.to_string())?;
        match self.end.recv().map_err(|e| e.to_string())? {
            WorkerMsg::Response {
                id: rid,
                result: Ok(Reply::Pong),
            } if rid == id => Ok(()),
            other => Err(format!("unexpected answer to Ping: {other:?}")),
        }
    }

    /// Shutdown, then the report pipe to EOF, then the exit status.
    fn shutdown(mut self) -> Result<(), String> {
        let _ = self.end.shutdown();
        let _ = self.end.socket().shutdown(std::net::Shutdown::Write);
        self.finish()
    }

    fn finish(&mut self) -> Result<(), String> {
        self.done = true;
        let mut rest = Vec::new();
        let _ = self.report.read_to_end(&mut rest);
        let st = self.child.wait().map_err(|e| e.to_string());
        unregister(self.child.id());
        let st = st?;
        if st.success() {
            Ok(())
        } else {
            Err(format!("launcher {st}"))
        }
    }
}

impl Drop for RawSandbox {
    fn drop(&mut self) {
        if !self.done {
            send_signal(self.child.id(), libc::SIGTERM);
            let _ = self.finish();
        }
    }
}

// ───────────────────────────── (a) cold start ─────────────────────────────

type Run<'a> = Box<dyn FnMut() -> Result<(), String> + 'a>;

struct Variant<'a> {
    name: &'static str,
    /// Untimed pause before the timed run: shows what a launch costs on a quiet machine
    /// (cgroup v1 attach, for one, waits for an RCU grace period unless another attach ran
    /// just before).
    idle: Option<Duration>,
    run: Run<'a>,
    s: Samples,
}

impl<'a> Variant<'a> {
    fn new(name: &'static str, run: Run<'a>) -> Self {
        Variant {
            name,
            idle: None,
            run,
            s: Samples::default(),
        }
    }
    fn after_idle(mut self, d: Duration) -> Self {
        self.idle = Some(d);
        self
    }
}

/// Pause before the "after idle" variants.
const IDLE: Duration = Duration::from_millis(50);

/// xorshift64*: enough to shuffle the order of each round.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn shuffle<T>(&mut self, v: &mut [T]) {
        for i in (1..v.len()).rev() {
            v.swap(i, (self.next() % (i as u64 + 1)) as usize);
        }
    }
}

fn launch_library(launcher: &Path, spec: &LaunchSpec) -> Result<(), String> {
    let sb = Sandbox::start(launcher, spec).map_err(|e| e.to_string())?;
    let pid = sb.info().launcher_pid;
    register(pid, Owned::Launcher);
    let r = sb.shutdown();
    unregister(pid);
    match r {
        Ok(x) if x.code == 0 && x.cgroup_removed => Ok(()),
        Ok(x) => Err(format!("sandbox ended with {x:?}")),
        Err(e) => Err(e.to_string()),
    }
}

fn run_bwrap(bwrap: &Path) -> Result<(), String> {
    status_ok(
        Command::new(bwrap)
            .args(BWRAP_ARGS)
            .arg("/bin/true")
            .stdin(Stdio::null())
            .status(),
        "bwrap",
    )
}

#[derive(Debug, Default)]
struct ColdReport {
    rows: Vec<(&'static str, Samples)>,
    iterations: usize,
}

impl ColdReport {
    fn get(&self, name: &str) -> Option<&Samples> {
        self.rows.iter().find(|(n, _)| *n == name).map(|(_, s)| s)
    }
    fn median(&self, name: &str) -> Option<f64> {
        self.get(name).and_then(Samples::median)
    }
    /// The bwrap row a row is compared with: the idle one for the idle rows.
    fn baseline(&self, name: &str) -> Option<f64> {
        if name == R_LAUNCHER_IDLE || name == R_BWRAP_IDLE {
            self.median(R_BWRAP_IDLE)
        } else {
            self.median(R_BWRAP)
        }
    }
}

const R_LAUNCHER: &str = "launcher (library Sandbox::start + shutdown)";
const R_LAUNCHER_IDLE: &str = "launcher, after 50 ms idle";
const R_BWRAP_IDLE: &str = "bwrap ... /bin/true, after 50 ms idle";
const R_RAW: &str = "launcher (raw protocol)";
const R_EXEC: &str = "bulkhead exec ws -- /bin/true";
const R_BWRAP: &str = "bwrap ... /bin/true";
const R_TRUE: &str = "/bin/true";
const R_PEXEC: &str = "persistent: exec /bin/true";
const R_PEXEC_IN: &str = "  of which the worker's own spawn-to-exit time";
const R_PING: &str = "persistent: Ping round trip";

fn status_ok(st: std::io::Result<ExitStatus>, what: &str) -> Result<(), String> {
    match st {
        Ok(s) if s.success() => Ok(()),
        Ok(s) => Err(format!("{what}: {s}")),
        Err(e) => Err(format!("{what}: {e}")),
    }
}

fn true_request() -> ExecRequest {
    ExecRequest {
        command: WireCommand::Argv(vec!["/bin/true".into()]),
        cwd: "/workspace".into(),
        env: vec![],
        stdin: vec![],
        timeout_ms: 0,
        output_cap: 1 << 20,
        kill_stragglers: false,
    }
}

struct Env {
    platform: Platform,
    state_dir: PathBuf,
    launcher: PathBuf,
    cli: PathBuf,
    bwrap: Option<PathBuf>,
}

fn cold(opts: &Opts, env: &Env) -> Result<ColdReport, String> {
    let ws = env
        .platform
        .create_workspace("bench-cold", WorkspaceConfig::default())
        .map_err(|e| e.to_string())?;
    let spec = ws
        .launch_spec(&LimitsConfig::default())
        .map_err(|e| e.to_string())?;
    let mut persistent = ws
        .sandbox(&LimitsConfig::default())
        .map_err(|e| format!("persistent sandbox: {e}"))?;
    let ppid = persistent.get().info().launcher_pid;
    register(ppid, Owned::Launcher);
    let persistent = std::cell::RefCell::new(persistent);
    // What the worker itself measured for each exec (spawn to exit), warm-up rounds included.
    let inside = std::cell::RefCell::new(Vec::<f64>::new());

    let launcher = env.launcher.as_path();
    let spec = &spec;
    let mut variants: Vec<Variant<'_>> = vec![
        Variant::new(R_LAUNCHER, Box::new(|| launch_library(launcher, spec))),
        Variant::new(R_LAUNCHER_IDLE, Box::new(|| launch_library(launcher, spec))).after_idle(IDLE),
        Variant::new(
            R_RAW,
            Box::new(|| {
                let mut sb = RawSandbox::spawn(launcher, spec)?;
                sb.wait_ready()?;
                sb.shutdown()
            }),
        ),
        Variant::new(
            R_EXEC,
            Box::new(|| {
                let out = Command::new(&env.cli)
                    .arg("--state-dir")
                    .arg(&env.state_dir)
                    .args(["exec", "bench-cold", "--", "/bin/true"])
                    .stdin(Stdio::null())
                    .stdout(Stdio::null())
                    .stderr(Stdio::piped())
                    .output()
                    .map_err(|e| format!("bulkhead: {e}"))?;
                if out.status.success() {
                    Ok(())
                } else {
                    Err(format!(
                        "bulkhead exec: {}: {}",
                        out.status,
                        String::from_utf8_lossy(&out.stderr).trim()
                    ))
                }
            }),
        ),
    ];
    if let Some(bwrap) = env.bwrap.as_deref() {
        variants.push(Variant::new(R_BWRAP, Box::new(move || run_bwrap(bwrap))));
        variants
            .push(Variant::new(R_BWRAP_IDLE, Box::new(move || run_bwrap(bwrap))).after_idle(IDLE));
    }
    variants.push(Variant::new(
        R_TRUE,
        Box::new(|| {
            status_ok(
                Command::new("/bin/true").stdin(Stdio::null()).status(),
                "/bin/true",
            )
        }),
    ));
    variants.push(Variant::new(
        R_PEXEC,
        Box::new(|| {
            let mut p = persistent.borrow_mut();
            let o = p
                .get()
                .exec(true_request(), &mut |_, _| {})
                .map_err(|e| e.to_string())?;
            inside
                .borrow_mut()
                .push(o.result.duration_us as f64 / 1000.0);
            match o.result.exit {
                ExitKind::Code(0) => Ok(()),
                other => Err(format!("/bin/true in the sandbox ended {other:?}")),
            }
        }),
    ));
    variants.push(Variant::new(
        R_PING,
        Box::new(|| {
            let mut p = persistent.borrow_mut();
            match p.get().request(Request::Ping, &mut |_, _| {}) {
                Ok(Ok(Reply::Pong)) => Ok(()),
                other => Err(format!("Ping: {other:?}")),
            }
        }),
    ));

    let rounds = opts.warmup + opts.iterations;
    let t0 = Instant::now();
    // Every variant once per round, in a new random order each round: no variant always
    // follows the same one (a launch right after another one is cheaper, see IDLE).
    let mut rng = Rng(std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(1, |d| d.as_nanos() as u64)
        | 1);
    let mut order: Vec<usize> = (0..variants.len()).collect();
    for round in 0..rounds {
        rng.shuffle(&mut order);
        for &k in &order {
            if stopping() {
                return Err("interrupted".into());
            }
            let v = &mut variants[k];
            if let Some(d) = v.idle {
                std::thread::sleep(d);
            }
            let t = Instant::now();
            let r = (v.run)();
            let ms = t.elapsed().as_secs_f64() * 1e3;
            if round >= opts.warmup {
                match r {
                    Ok(()) => v.s.ms.push(ms),
                    Err(e) => v.s.fail(e),
                }
            }
        }
        if round + 1 == opts.warmup
            || round + 1 == rounds
            || (round >= opts.warmup && (round - opts.warmup + 1) % 50 == 0)
        {
            eprint!(
                "\r  cold start: {}/{} rounds ({:.0} s)   ",
                round + 1 - opts.warmup.min(round + 1),
                opts.iterations,
                t0.elapsed().as_secs_f64()
            );
        }
    }
    eprintln!();
    let mut rows: Vec<(&'static str, Samples)> =
        variants.into_iter().map(|v| (v.name, v.s)).collect();
    let inside = inside.into_inner();
    rows.push((
        R_PEXEC_IN,
        Samples {
            ms: inside
                .get(opts.warmup.min(inside.len())..)
                .unwrap_or_default()
                .to_vec(),
            ..Default::default()
        },
    ));
    let persistent = persistent.into_inner();
    let _ = persistent.shutdown();
    unregister(ppid);
    // Present in a fixed order, whatever the round-robin order was.
    let order = [
        R_LAUNCHER,
        R_LAUNCHER_IDLE,
        R_RAW,
        R_EXEC,
        R_BWRAP,
        R_BWRAP_IDLE,
        R_TRUE,
        R_PEXEC,
        R_PEXEC_IN,
        R_PING,
    ];
    rows.sort_by_key(|(n, _)| order.iter().position(|o| o == n));
    Ok(ColdReport {
        rows,
        iterations: opts.iterations,
    })
}

fn print_cold(r: &ColdReport) -> Vec<String> {
    let bw = r.median(R_BWRAP);
    println!(
        "\n(a) cold start: {} rounds; each round runs every variant once, in a shuffled order",
        r.iterations
    );
    println!(
        "  {:<46} {:>10} {:>10} {:>9}",
        "name", "median ms", "p90 ms", "× bwrap"
    );
    for (name, s) in &r.rows {
        let x = fmt_x(ratio(s.median(), r.baseline(name)));
        println!(
            "  {:<46} {:>10} {:>10} {:>9}",
            name,
            fmt_ms(s.median()),
            fmt_ms(s.p90()),
            x
        );
        if s.errors > 0 {
            println!(
                "    {} failed; first: {}",
                s.errors,
                s.first_error.as_deref().unwrap_or("")
            );
        }
    }
    let lr = ratio(r.median(R_LAUNCHER), bw);
    let er = ratio(r.median(R_EXEC), bw);
    let pe = r.median(R_PEXEC);
    let goals = vec![
        format!(
            "{} launcher ≤ 0.75× bwrap: {}",
            verdict(lr.map(|x| x <= 0.75)),
            fmt_x(lr)
        ),
        format!(
            "{} exec end to end ≤ 1.25× bwrap: {}",
            verdict(er.map(|x| x <= 1.25)),
            fmt_x(er)
        ),
        format!(
            "{} persistent exec ≤ 1 ms: {} ms",
            verdict(pe.map(|x| x <= 1.0)),
            fmt_ms(pe)
        ),
    ];
    println!("  goals");
    for g in &goals {
        println!("    {g}");
    }
    goals
}

// ───────────────────────────── (b) density ─────────────────────────────

enum Handle {
    Lib(Box<RunningSandbox>),
    Raw(RawSandbox),
}

struct Held {
    handle: Handle,
    launcher_pid: u32,
    worker_pid: u32,
    cgroup_dirs: Vec<String>,
}

impl Held {
    fn ping(&mut self) -> Result<(), String> {
        match &mut self.handle {
            Handle::Lib(rs) => match rs.get().request(Request::Ping, &mut |_, _| {}) {
                Ok(Ok(Reply::Pong)) => Ok(()),
                other => Err(format!("Ping: {other:?}")),
            },
            Handle::Raw(r) => r.ping(),
        }
    }

    fn shutdown(self) -> Result<(), String> {
        let pid = self.launcher_pid;
        let r = match self.handle {
            Handle::Lib(rs) => match (*rs).shutdown() {
                Ok(x) if x.cgroup_removed => Ok(()),
                Ok(x) => Err(format!("sandbox ended with {x:?}")),
                Err(e) => Err(e.to_string()),
            },
            Handle::Raw(r) => r.shutdown(),
        };
        unregister(pid);
        r
    }
}

struct Started {
    held: Vec<Held>,
    errors: Vec<String>,
    elapsed: Duration,
}

fn start_threads(wss: &[Workspace], threads: usize) -> Started {
    let t0 = Instant::now();
    let mut held = Vec::with_capacity(wss.len());
    let mut errors = Vec::new();
    std::thread::scope(|s| {
        let hs: Vec<_> = (0..threads)
            .map(|t| {
                s.spawn(move || {
                    let mut out = Vec::new();
                    let mut errs = Vec::new();
                    for ws in wss.iter().skip(t).step_by(threads) {
                        if stopping() {
                            break;
                        }
                        match ws.sandbox(&LimitsConfig::default()) {
                            Ok(mut rs) => {
                                let info = rs.get().info().clone();
                                register(info.launcher_pid, Owned::Launcher);
                                out.push(Held {
                                    handle: Handle::Lib(Box::new(rs)),
                                    launcher_pid: info.launcher_pid,
                                    worker_pid: info.worker_pid,
                                    cgroup_dirs: info.cgroup_dirs,
                                });
                            }
                            Err(e) => errs.push(format!("{}: {e}", ws.id())),
                        }
                    }
                    (out, errs)
                })
            })
            .collect();
        for h in hs {
            match h.join() {
                Ok((o, e)) => {
                    held.extend(o);
                    errors.extend(e);
                }
                Err(_) => errors.push("a starter thread panicked".into()),
            }
        }
    });
    Started {
        held,
        errors,
        elapsed: t0.elapsed(),
    }
}

fn start_pipeline(wss: &[Workspace], launcher: &Path, window: usize) -> Started {
    let t0 = Instant::now();
    let mut held = Vec::with_capacity(wss.len());
    let mut errors = Vec::new();
    let mut pending: VecDeque<RawSandbox> = VecDeque::new();
    fn complete(mut r: RawSandbox, held: &mut Vec<Held>, errors: &mut Vec<String>) {
        match r.wait_ready() {
            Ok(()) => held.push(Held {
                launcher_pid: r.child.id(),
                worker_pid: r.worker_pid,
                cgroup_dirs: r.cgroup_dirs.clone(),
                handle: Handle::Raw(r),
            }),
            Err(e) => errors.push(e),
        }
    }
    for ws in wss {
        if stopping() {
            break;
        }
        while pending.len() >= window {
            if let Some(r) = pending.pop_front() {
                complete(r, &mut held, &mut errors);
            }
        }
        match ws
            .launch_spec(&LimitsConfig::default())
            .map_err(|e| e.to_string())
            .and_then(|s| RawSandbox::spawn(launcher, &s))
        {
            Ok(r) => pending.push_back(r),
            Err(e) => errors.push(format!("{}: {e}", ws.id())),
        }
    }
    while let Some(r) = pending.pop_front() {
        complete(r, &mut held, &mut errors);
    }
    Started {
        held,
        errors,
        elapsed: t0.elapsed(),
    }
}

/// Runs `f` on every element, spread over `threads` threads; returns the errors.
fn parallel<T: Send>(
    items: Vec<T>,
    threads: usize,
    f: impl Fn(T) -> Result<(), String> + Sync,
) -> Vec<String> {
    let mut buckets: Vec<Vec<T>> = (0..threads).map(|_| Vec::new()).collect();
    for (i, x) in items.into_iter().enumerate() {
        buckets[i % threads].push(x);
    }
    let f = &f;
    std::thread::scope(|s| {
        let hs: Vec<_> = buckets
            .into_iter()
            .map(|b| s.spawn(move || b.into_iter().filter_map(|x| f(x).err()).collect::<Vec<_>>()))
            .collect();
        hs.into_iter()
            .flat_map(|h| {
                h.join()
                    .unwrap_or_else(|_| vec!["a thread panicked".into()])
            })
            .collect()
    })
}

/// Waits up to `max` for MemAvailable to come within `tolerance` bytes of `baseline`.
fn settle_mem(baseline: u64, tolerance: u64, max: Duration) -> u64 {
    let t0 = Instant::now();
    loop {
        let now = mem_available();
        if now + tolerance >= baseline || t0.elapsed() >= max {
            return now;
        }
        std::thread::sleep(Duration::from_millis(250));
    }
}

#[derive(Debug, Default)]
struct DensityReport {
    n: usize,
    mode: &'static str,
    threads: usize,
    create_s: f64,
    started: usize,
    start_errors: Vec<String>,
    start_s: f64,
    pss_launcher: Pss,
    pss_worker: Pss,
    cg: CgMem,
    cg_found: usize,
    own_before: Option<CgMem>,
    own_running: Option<CgMem>,
    own_after: Option<CgMem>,
    mem_before: u64,
    mem_running: u64,
    mem_after: u64,
    kmem_before: u64,
    kmem_running: u64,
    kmem_after: u64,
    pinged: usize,
    ping_errors: Vec<String>,
    ping_ms: Vec<f64>,
    teardown_s: f64,
    settle_s: f64,
    teardown_errors: Vec<String>,
    left_cgroups: Vec<PathBuf>,
    left_procs: Vec<u32>,
    other_cgroups_before: usize,
    other_cgroups_after: usize,
    other_procs_before: usize,
    other_procs_after: usize,
    mounts_before: usize,
    mounts_after: usize,
}

impl DensityReport {
    fn per(&self, bytes: u64) -> f64 {
        bytes as f64 / self.started.max(1) as f64 / MIB
    }
    /// Per sandbox: user PSS (launcher + worker), tmpfs files no process maps, kernel memory
    /// the sandbox cgroup accounts.
    fn total_per(&self) -> f64 {
        let tmpfs = self.cg.shmem.saturating_sub(self.pss_worker.shmem);
        self.per(self.pss_launcher.total + self.pss_worker.total + tmpfs + self.cg.kernel)
    }
    fn rate(&self) -> f64 {
        self.started as f64 / self.start_s.max(1e-9)
    }
    fn memavail_per(&self) -> f64 {
        self.per(self.mem_before.saturating_sub(self.mem_running))
    }
    /// User PSS + unmapped tmpfs + the growth of kernel memory system-wide: counts kernel
    /// memory no cgroup is charged for, and anything else the host did meanwhile.
    fn system_per(&self) -> f64 {
        let tmpfs = self.cg.shmem.saturating_sub(self.pss_worker.shmem);
        self.per(self.pss_launcher.total + self.pss_worker.total + tmpfs)
            + self.per(self.kmem_running.saturating_sub(self.kmem_before))
    }
    fn residual(&self) -> i64 {
        self.mem_before as i64 - self.mem_after as i64
    }
    fn own_per(&self) -> Option<f64> {
        Some(
            self.own_running?
                .usage
                .saturating_sub(self.own_before?.usage) as f64
                / self.started.max(1) as f64
                / MIB,
        )
    }
    fn own_residual(&self) -> Option<i64> {
        Some(self.own_after?.usage as i64 - self.own_before?.usage as i64)
    }
    /// Kernel memory the run added to the bench's own cgroup outside the sandbox cgroups:
    /// the namespaces (made by clone before the child joins its cgroup), the launchers'
    /// kernel stacks and page tables, the controller's sockets and pipes.
    fn outside_kernel(&self) -> u64 {
        match (self.own_before, self.own_running) {
            (Some(b), Some(r)) => r
                .kernel
                .saturating_sub(b.kernel)
                .saturating_sub(self.cg.kernel),
            _ => 0,
        }
    }
    /// Everything: [`Self::total_per`] plus [`Self::outside_kernel`].
    fn full_per(&self) -> f64 {
        self.total_per() + self.per(self.outside_kernel())
    }
    /// MemAvailable (system-wide, moved by anything else on the host) within 3% of the
    /// baseline, and this process's memory cgroup (which every launcher, namespace and
    /// sandbox cgroup of the run is charged to) within 5% of its peak growth (at least 8 MiB).
    fn back_to_baseline(&self) -> bool {
        let sys_ok = self.residual() as f64 <= 0.03 * self.mem_before as f64;
        let own_ok = match (self.own_residual(), self.own_before, self.own_running) {
            (Some(r), Some(b), Some(p)) => {
                r <= ((p.usage.saturating_sub(b.usage) / 20) as i64).max(8 << 20)
            }
            _ => true,
        };
        sys_ok && own_ok && self.kernel_ok()
    }
    fn kmem_residual(&self) -> i64 {
        self.kmem_after as i64 - self.kmem_before as i64
    }
    /// Kernel memory system-wide back within 5% of its growth (at least 8 MiB).
    fn kernel_ok(&self) -> bool {
        let grew = self.kmem_running.saturating_sub(self.kmem_before);
        self.kmem_residual() <= ((grew / 20) as i64).max(8 << 20)
    }
    fn clean(&self) -> bool {
        self.left_cgroups.is_empty()
            && self.left_procs.is_empty()
            && self.mounts_after <= self.mounts_before
            && self.teardown_errors.is_empty()
    }
}

fn density(opts: &Opts, env: &Env) -> Result<DensityReport, String> {
    let n = opts.density;
    let mut rep = DensityReport {
        n,
        threads: opts.threads,
        ..Default::default()
    };
    let t = Instant::now();
    let mut wss = Vec::with_capacity(n);
    for i in 0..n {
        if stopping() {
            return Err("interrupted".into());
        }
        wss.push(
            env.platform
                .create_workspace(&format!("bench-d{i:05}"), WorkspaceConfig::default())
                .map_err(|e| e.to_string())?,
        );
    }
    rep.create_s = t.elapsed().as_secs_f64();

    rep.other_cgroups_before = bulkhead_cgroups().len();
    rep.other_procs_before = bulkhead_processes().len();
    rep.mounts_before = mountinfo_lines();
    let own_cg = own_memory_cgroup();
    std::thread::sleep(Duration::from_millis(500));
    rep.mem_before = mem_available();
    rep.kmem_before = kernel_mem();
    rep.own_before = own_cg.as_deref().and_then(cgroup_mem);

    eprintln!("  density: starting {n} sandboxes");
    let started = match opts.mode {
        DensityMode::Threads => {
            rep.mode = "threads";
            start_threads(&wss, opts.threads)
        }
        DensityMode::Pipeline => {
            rep.mode = "pipeline";
            start_pipeline(&wss, &env.launcher, opts.threads)
        }
    };
    let mut held = started.held;
    rep.started = held.len();
    rep.start_errors = started.errors;
    rep.start_s = started.elapsed.as_secs_f64();
    let started_at: HashMap<u32, u64> = held
        .iter()
        .flat_map(|h| [h.launcher_pid, h.worker_pid])
        .filter_map(|p| Some((p, start_time(p)?)))
        .collect();
    let dirs: Vec<String> = held.iter().flat_map(|h| h.cgroup_dirs.clone()).collect();

    // Let the kernel finish deferred frees of the setup, then measure.
    std::thread::sleep(Duration::from_secs(1));
    rep.mem_running = mem_available();
    rep.kmem_running = kernel_mem();
    rep.own_running = own_cg.as_deref().and_then(cgroup_mem);
    for h in &held {
        rep.pss_launcher += pss(h.launcher_pid).unwrap_or_default();
        rep.pss_worker += pss(h.worker_pid).unwrap_or_default();
        if let Some(m) = h.cgroup_dirs.iter().find_map(|d| cgroup_mem(Path::new(d))) {
            rep.cg += m;
            rep.cg_found += 1;
        }
    }

    eprintln!("  density: pinging {} sandboxes", held.len());
    for h in &mut held {
        let t = Instant::now();
        match h.ping() {
            Ok(()) => {
                rep.pinged += 1;
                rep.ping_ms.push(t.elapsed().as_secs_f64() * 1e3);
            }
            Err(e) => rep.ping_errors.push(e),
        }
    }

    eprintln!("  density: tearing down");
    let t = Instant::now();
    rep.teardown_errors = parallel(held, opts.threads, Held::shutdown);
    rep.teardown_s = t.elapsed().as_secs_f64();
    let peak = rep.mem_before.saturating_sub(rep.mem_running);
    let own_tolerance = rep
        .own_running
        .zip(rep.own_before)
        .map(|(p, b)| (p.usage.saturating_sub(b.usage) / 50).max(4 << 20));
    let t = Instant::now();
    loop {
        rep.own_after = own_cg.as_deref().and_then(cgroup_mem);
        let own_ok = match (rep.own_after, rep.own_before, own_tolerance) {
            (Some(a), Some(b), Some(tol)) => a.usage <= b.usage + tol,
            _ => true,
        };
        if own_ok || t.elapsed() > Duration::from_secs(15) {
            break;
        }
        std::thread::sleep(Duration::from_millis(250));
    }
    let kgrew = rep.kmem_running.saturating_sub(rep.kmem_before);
    while kernel_mem() > rep.kmem_before + (kgrew / 50).max(8 << 20)
        && t.elapsed() < Duration::from_secs(15)
    {
        std::thread::sleep(Duration::from_millis(250));
    }
    rep.kmem_after = kernel_mem();
    rep.mem_after = settle_mem(
        rep.mem_before,
        (peak / 50).max(8 << 20),
        Duration::from_secs(15).saturating_sub(t.elapsed()),
    );
    rep.settle_s = t.elapsed().as_secs_f64();
    rep.left_cgroups = dirs
        .iter()
        .map(PathBuf::from)
        .filter(|d| d.exists())
        .collect();
    rep.left_procs = started_at
        .iter()
        .filter(|(p, st)| start_time(**p) == Some(**st) && alive(**p))
        .map(|(p, _)| *p)
        .collect();
    rep.other_cgroups_after = bulkhead_cgroups().len();
    rep.other_procs_after = bulkhead_processes().len();
    rep.mounts_after = mountinfo_lines();
    drop(wss);
    Ok(rep)
}

fn start_time(pid: u32) -> Option<u64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    s[s.rfind(')')? + 2..]
        .split_whitespace()
        .nth(19)?
        .parse()
        .ok()
}

#[derive(Debug, Default)]
struct BwrapReport {
    m: usize,
    started: usize,
    errors: Vec<String>,
    start_s: f64,
    pss: Pss,
    procs: usize,
    mem_before: u64,
    mem_running: u64,
    mem_after: u64,
    kmem_growth: u64,
    own_growth: Option<u64>,
    left: usize,
}

impl BwrapReport {
    fn rate(&self) -> f64 {
        self.started as f64 / self.start_s.max(1e-9)
    }
    fn pss_per(&self) -> f64 {
        self.pss.total as f64 / self.started.max(1) as f64 / MIB
    }
    fn memavail_per(&self) -> f64 {
        self.mem_before.saturating_sub(self.mem_running) as f64 / self.started.max(1) as f64 / MIB
    }
    fn own_per(&self) -> Option<f64> {
        Some(self.own_growth? as f64 / self.started.max(1) as f64 / MIB)
    }
    fn system_per(&self) -> f64 {
        self.pss_per() + self.kmem_growth as f64 / self.started.max(1) as f64 / MIB
    }
}

/// M idle bwrap sandboxes, started by `threads` threads. Ready = the sandboxed shell
/// printed a line, then exec'd `sleep 3600`. Each starter thread stays alive until the
/// sandboxes are measured: `--die-with-parent` is a parent-death signal, which fires when
/// the spawning *thread* exits.
fn bwrap_density(bwrap: &Path, m: usize, threads: usize) -> BwrapReport {
    let mut rep = BwrapReport {
        m,
        ..Default::default()
    };
    let own_cg = own_memory_cgroup();
    std::thread::sleep(Duration::from_millis(500));
    rep.mem_before = mem_available();
    let kmem_before = kernel_mem();
    let own_before = own_cg.as_deref().and_then(cgroup_mem);
    let release = std::sync::Barrier::new(threads + 1);
    let (tx, rx) = std::sync::mpsc::channel::<(Vec<u32>, Vec<String>)>();
    let t0 = Instant::now();
    std::thread::scope(|s| {
        let release = &release;
        for t in 0..threads {
            let tx = tx.clone();
            s.spawn(move || {
                let mut kids: Vec<(Child, BufReader<ChildStdout>)> = Vec::new();
                let mut errs = Vec::new();
                for _ in (t..m).step_by(threads) {
                    if stopping() {
                        break;
                    }
                    let r = Command::new(bwrap)
                        .args(BWRAP_ARGS)
                        .args(["/bin/sh", "-c", "echo ready; exec sleep 3600"])
                        .stdin(Stdio::null())
                        .stdout(Stdio::piped())
                        .stderr(Stdio::inherit())
                        .spawn();
                    let mut c = match r {
                        Ok(c) => c,
                        Err(e) => {
                            errs.push(format!("bwrap: {e}"));
                            continue;
                        }
                    };
                    register(c.id(), Owned::Bwrap);
                    let Some(so) = c.stdout.take() else { continue };
                    let mut so = BufReader::new(so);
                    let mut line = String::new();
                    match so.read_line(&mut line) {
                        Ok(_) if line.trim() == "ready" => kids.push((c, so)),
                        other => {
                            errs.push(format!("bwrap sandbox did not come up: {other:?} {line:?}"));
                            send_signal(c.id(), libc::SIGKILL);
                            let _ = c.wait();
                            unregister(c.id());
                        }
                    }
                }
                let _ = tx.send((kids.iter().map(|(c, _)| c.id()).collect(), errs));
                release.wait();
                for (c, _) in &kids {
                    send_signal(c.id(), libc::SIGKILL);
                }
                for (mut c, _) in kids {
                    let _ = c.wait();
                    unregister(c.id());
                }
            });
        }
        drop(tx);
        let mut roots = Vec::new();
        for (pids, errs) in rx.iter().take(threads) {
            roots.extend(pids);
            rep.errors.extend(errs);
        }
        rep.start_s = t0.elapsed().as_secs_f64();
        rep.started = roots.len();
        std::thread::sleep(Duration::from_secs(1));
        rep.mem_running = mem_available();
        rep.kmem_growth = kernel_mem().saturating_sub(kmem_before);
        if let (Some(b), Some(r)) = (own_before, own_cg.as_deref().and_then(cgroup_mem)) {
            rep.own_growth = Some(r.usage.saturating_sub(b.usage));
        }
        let tree = process_tree();
        let mut all = Vec::new();
        for r in &roots {
            for p in descendants(&tree, *r) {
                rep.pss += pss(p).unwrap_or_default();
                all.push((p, start_time(p)));
            }
        }
        rep.procs = all.len();
        release.wait();
        // The threads kill and reap their outer bwraps; the rest die with them.
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline
            && all.iter().any(|(p, st)| start_time(*p) == *st && alive(*p))
        {
            std::thread::sleep(Duration::from_millis(20));
        }
        rep.left = all
            .iter()
            .filter(|(p, st)| start_time(*p) == *st && alive(*p))
            .count();
    });
    let peak = rep.mem_before.saturating_sub(rep.mem_running);
    rep.mem_after = settle_mem(
        rep.mem_before,
        (peak / 50).max(8 << 20),
        Duration::from_secs(10),
    );
    rep
}

fn print_density(d: &DensityReport, b: Option<&BwrapReport>) -> Vec<String> {
    println!(
        "\n(b) density: {} idle sandboxes ({} mode, {} at a time)",
        d.n, d.mode, d.threads
    );
    println!(
        "  {} workspaces created in {:.1} s (not counted)",
        d.n, d.create_s
    );
    println!(
        "  started {}/{} in {:.2} s: {:.0} starts/s",
        d.started,
        d.n,
        d.start_s,
        d.rate()
    );
    for e in d.start_errors.iter().take(3) {
        println!("    start failed: {e}");
    }
    if d.start_errors.len() > 3 {
        println!("    … {} start failures in all", d.start_errors.len());
    }
    let per = |x: u64| d.per(x);
    let tmpfs = d.cg.shmem.saturating_sub(d.pss_worker.shmem);
    println!("  memory per sandbox (MiB):");
    println!(
        "    launcher PSS {:.3} (anon {:.3}, file {:.3})   worker PSS {:.3} (anon {:.3}, file {:.3})",
        per(d.pss_launcher.total),
        per(d.pss_launcher.anon),
        per(d.pss_launcher.file),
        per(d.pss_worker.total),
        per(d.pss_worker.anon),
        per(d.pss_worker.file)
    );
    println!(
        "    sandbox cgroup: kernel {:.3}, tmpfs not mapped {:.3}, usage {:.3} ({} of {} cgroups read)",
        per(d.cg.kernel),
        per(tmpfs),
        per(d.cg.usage),
        d.cg_found,
        d.started
    );
    println!(
        "    PSS + tmpfs + sandbox cgroup kernel {:.3}",
        d.total_per()
    );
    println!(
        "    + kernel memory charged outside the sandbox cgroup (namespaces made at clone, launcher task, controller sockets) {:.3}",
        per(d.outside_kernel())
    );
    println!("    total {:.3}", d.full_per());
    println!(
        "    system-wide view: PSS + tmpfs + growth of Slab+Percpu+KernelStack+PageTables {:.3} \
         (adds kernel memory no cgroup is charged for; anything else on the host moves it)",
        d.system_per()
    );
    println!(
        "    cross-checks: MemAvailable drop {:.3} (system-wide: anything else running moves it){}",
        d.memavail_per(),
        match d.own_per() {
            Some(x) => format!("; growth of the bench's own memory cgroup (launchers, namespaces, sandbox cgroups) {x:.3}"),
            None => String::new(),
        }
    );
    println!(
        "  MemAvailable: before {:.0} MiB, running {:.0} MiB, after teardown {:.0} MiB (residual {:+.1} MiB)",
        d.mem_before as f64 / MIB,
        d.mem_running as f64 / MIB,
        d.mem_after as f64 / MIB,
        d.residual() as f64 / MIB
    );
    println!(
        "  kernel memory (Slab+Percpu+KernelStack+PageTables): before {:.0} MiB, running {:.0} MiB, after teardown {:.0} MiB (residual {:+.1} MiB)",
        d.kmem_before as f64 / MIB,
        d.kmem_running as f64 / MIB,
        d.kmem_after as f64 / MIB,
        d.kmem_residual() as f64 / MIB
    );
    if let (Some(b), Some(r), Some(a), Some(res)) =
        (d.own_before, d.own_running, d.own_after, d.own_residual())
    {
        println!(
            "  bench's memory cgroup: before {:.1} MiB, running {:.1} MiB, after teardown {:.1} MiB (residual {:+.1} MiB, settled in {:.1} s)",
            b.usage as f64 / MIB,
            r.usage as f64 / MIB,
            a.usage as f64 / MIB,
            res as f64 / MIB,
            d.settle_s
        );
    }
    println!(
        "  Ping: {}/{} answered (median {} ms, p90 {} ms)",
        d.pinged,
        d.started,
        fmt_ms(percentile(&d.ping_ms, 0.5)),
        fmt_ms(percentile(&d.ping_ms, 0.9))
    );
    for e in d.ping_errors.iter().take(3) {
        println!("    ping failed: {e}");
    }
    println!(
        "  teardown {:.2} s; {} errors",
        d.teardown_s,
        d.teardown_errors.len()
    );
    for e in d.teardown_errors.iter().take(3) {
        println!("    teardown: {e}");
    }
    println!(
        "  left behind: {} cgroups, {} processes of this run; mounts {} → {}; other bulkhead- cgroups {} → {}, processes {} → {} (not ours)",
        d.left_cgroups.len(),
        d.left_procs.len(),
        d.mounts_before,
        d.mounts_after,
        d.other_cgroups_before,
        d.other_cgroups_after,
        d.other_procs_before,
        d.other_procs_after
    );
    for c in d.left_cgroups.iter().take(3) {
        println!("    left: {}", c.display());
    }
    if let Some(b) = b {
        println!(
            "  baseline: {} idle bwrap sandboxes ({} processes)",
            b.m, b.procs
        );
        println!(
            "    started {}/{} in {:.2} s: {:.0} starts/s",
            b.started,
            b.m,
            b.start_s,
            b.rate()
        );
        for e in b.errors.iter().take(3) {
            println!("    failed: {e}");
        }
        println!(
            "    PSS per sandbox {:.3} MiB; system-wide view (PSS + kernel growth) {:.3} MiB; MemAvailable drop per sandbox {:.3} MiB{}",
            b.pss_per(),
            b.system_per(),
            b.memavail_per(),
            b.own_per()
                .map(|o| format!("; growth of the bench's memory cgroup per sandbox {o:.3} MiB"))
                .unwrap_or_default()
        );
        println!(
            "    MemAvailable after {:.0} MiB (residual {:+.1} MiB); {} processes left",
            b.mem_after as f64 / MIB,
            (b.mem_before as i64 - b.mem_after as i64) as f64 / MIB,
            b.left
        );
        println!(
            "    ratios bulkhead/bwrap: starts/s {}, system-wide view {}, PSS {}, cgroup growth {}, MemAvailable drop {}",
            fmt_x(ratio(Some(d.rate()), Some(b.rate()))),
            fmt_x(ratio(Some(d.system_per()), Some(b.system_per()))),
            fmt_x(ratio(Some(d.per(d.pss_launcher.total + d.pss_worker.total)), Some(b.pss_per()))),
            fmt_x(ratio(d.own_per(), b.own_per())),
            fmt_x(ratio(Some(d.memavail_per()), Some(b.memavail_per())))
        );
    }
    let all_up = d.started == d.n && d.pinged == d.started;
    let goals = vec![
        format!(
            "{} ≤ 1 MiB per sandbox including the worker: {:.3} MiB (cgroup-accounted); system-wide view {:.3} MiB {}",
            verdict(Some(d.full_per() <= 1.0)),
            d.full_per(),
            d.system_per(),
            if d.system_per() <= 1.0 { "(also ≤ 1)" } else { "(over 1: see the kernel memory no cgroup is charged for)" }
        ),
        format!("{} ≥ 500 starts/s: {:.0}/s", verdict(Some(d.rate() >= 500.0)), d.rate()),
        format!(
            "{} memory back to baseline after teardown: MemAvailable residual {:+.1} MiB (≤ 3%), kernel memory residual {:+.1} MiB, own cgroup residual {}, nothing left: {}",
            verdict(Some(d.back_to_baseline() && d.clean())),
            d.residual() as f64 / MIB,
            d.kmem_residual() as f64 / MIB,
            d.own_residual().map(|r| format!("{:+.1} MiB", r as f64 / MIB)).unwrap_or_else(|| "-".into()),
            if d.clean() { "yes" } else { "NO" }
        ),
        format!("{} every sandbox started and answered Ping: {}/{}", verdict(Some(all_up)), d.pinged, d.n),
    ];
    println!("  goals");
    for g in &goals {
        println!("    {g}");
    }
    goals
}

// ───────────────────────────── summary ─────────────────────────────

fn summary(
    opts: &Opts,
    env: &Env,
    c: Option<&ColdReport>,
    d: Option<&DensityReport>,
    b: Option<&BwrapReport>,
) -> String {
    let mut s = String::new();
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let cpus = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(0);
    let mem = meminfo("MemTotal").unwrap_or(0) as f64 / MIB / 1024.0;
    let cg = if Path::new("/sys/fs/cgroup/cgroup.controllers").exists() {
        "v2"
    } else {
        "v1"
    };
    let bw = env
        .bwrap
        .as_deref()
        .map(bwrap_version)
        .unwrap_or_else(|| "no bwrap".into());
    let _ = writeln!(s, "### Benchmark");
    let _ = writeln!(s);
    // SAFETY: geteuid has no preconditions and cannot fail.
    let root = unsafe { libc::geteuid() } == 0;
    let _ = writeln!(
        s,
        "{} · Linux {} · {cpus} CPUs · {mem:.0} GiB · cgroup {cg} · {bw} · root: {}",
        today(),
        kernel.trim(),
        if root { "yes" } else { "no" }
    );
    let _ = writeln!(s);
    if c.is_some() || d.is_some() {
        let _ = writeln!(s, "| measure | bulkhead | bwrap | ratio | goal |");
        let _ = writeln!(s, "| --- | ---: | ---: | ---: | --- |");
    }
    if let Some(c) = c {
        let row = |s: &mut String, label: &str, name: &str, goal: &str, limit: Option<f64>| {
            let m = c.median(name);
            let p = c.get(name).and_then(Samples::p90);
            let bwm = c.baseline(name);
            let r = ratio(m, bwm);
            let (bwc, rc) = if name != R_PEXEC {
                (fmt_ms(bwm), fmt_x(r))
            } else {
                (String::new(), String::new())
            };
            let ok = match limit {
                Some(l) => verdict(r.map(|r| r <= l)),
                None if name == R_PEXEC => verdict(m.map(|m| m <= 1.0)),
                None => "",
            };
            let _ = writeln!(
                s,
                "| {label} (median / p90 ms, n={}) | {} / {} | {} | {} | {goal} {ok} |",
                c.iterations,
                fmt_ms(m),
                fmt_ms(p),
                bwc,
                rc
            );
        };
        row(
            &mut s,
            "cold start, launcher alone",
            R_LAUNCHER,
            "≤ 0.75×",
            Some(0.75),
        );
        row(
            &mut s,
            "cold start, launcher alone, after 50 ms idle",
            R_LAUNCHER_IDLE,
            "",
            None,
        );
        row(
            &mut s,
            "cold start, `bulkhead exec ws -- /bin/true`",
            R_EXEC,
            "≤ 1.25×",
            Some(1.25),
        );
        row(
            &mut s,
            "exec /bin/true in a running sandbox",
            R_PEXEC,
            "≤ 1 ms",
            None,
        );
        let _ = writeln!(
            s,
            "| Ping round trip (median ms) | {} | | | |",
            fmt_ms(c.median(R_PING))
        );
        let _ = writeln!(
            s,
            "| plain `/bin/true` (median ms) | {} | | | |",
            fmt_ms(c.median(R_TRUE))
        );
    }
    if let Some(d) = d {
        let (brate, bpss, bmem, bown) = match b {
            Some(b) => (
                Some(b.rate()),
                Some(b.pss_per()),
                Some(b.memavail_per()),
                b.own_per(),
            ),
            None => (None, None, None, None),
        };
        let num = |x: Option<f64>| x.map(|r| format!("{r:.3}")).unwrap_or_else(|| "-".into());
        let _ = writeln!(
            s,
            "| starts/s, {} idle sandboxes{} | {:.0} | {} | {} | ≥ 500 {} |",
            d.n,
            b.map(|b| format!(" (bwrap: {})", b.m)).unwrap_or_default(),
            d.rate(),
            brate
                .map(|r| format!("{r:.0}"))
                .unwrap_or_else(|| "-".into()),
            fmt_x(ratio(Some(d.rate()), brate)),
            verdict(Some(d.rate() >= 500.0))
        );
        let _ = writeln!(
            s,
            "| MiB per idle sandbox: PSS + tmpfs + kernel (sandbox cgroup and outside it) | {:.3} | | | ≤ 1 MiB {} |",
            d.full_per(),
            verdict(Some(d.full_per() <= 1.0))
        );
        let bsys = b.map(BwrapReport::system_per);
        let _ = writeln!(
            s,
            "| MiB per idle sandbox: system-wide view, PSS + tmpfs + growth of all kernel memory (noisy) | {:.3} | {} | {} | |",
            d.system_per(),
            num(bsys),
            fmt_x(ratio(Some(d.system_per()), bsys))
        );
        let upss = d.per(d.pss_launcher.total + d.pss_worker.total);
        let _ = writeln!(
            s,
            "| MiB per idle sandbox: user PSS only (launcher + worker; bwrap's processes) | {upss:.3} | {} | {} | |",
            num(bpss),
            fmt_x(ratio(Some(upss), bpss))
        );
        if let Some(o) = d.own_per() {
            let _ = writeln!(
                s,
                "| MiB per idle sandbox: growth of the bench's memory cgroup (cross-check) | {o:.3} | {} | {} | |",
                num(bown),
                fmt_x(ratio(Some(o), bown))
            );
        }
        let _ = writeln!(
            s,
            "| MiB per idle sandbox: MemAvailable drop (system-wide, noisy cross-check) | {:.3} | {} | {} | |",
            d.memavail_per(),
            num(bmem),
            fmt_x(ratio(Some(d.memavail_per()), bmem))
        );
        let _ = writeln!(
            s,
            "| after teardown: residual MemAvailable / kernel memory / own cgroup; leftovers | {:+.1} / {:+.1} / {} MiB; {} cgroups, {} processes | | | back to baseline {} |",
            d.residual() as f64 / MIB,
            d.kmem_residual() as f64 / MIB,
            d.own_residual().map(|r| format!("{:+.1}", r as f64 / MIB)).unwrap_or_else(|| "-".into()),
            d.left_cgroups.len(),
            d.left_procs.len(),
            verdict(Some(d.back_to_baseline() && d.clean()))
        );
        let _ = writeln!(s, "| Ping after start | {}/{} | | | all |", d.pinged, d.n);
    }
    let _ = writeln!(s);
    let mut args = String::new();
    if opts.iterations != 200 && opts.cold {
        let _ = write!(args, " --iterations {}", opts.iterations);
    }
    if opts.density != 1000 && opts.dense {
        let _ = write!(args, " --density {}", opts.density);
    }
    if opts.neighbour_rounds != 30 && opts.neighbours {
        let _ = write!(args, " --neighbour-rounds {}", opts.neighbour_rounds);
    }
    match (opts.cold, opts.dense, opts.neighbours) {
        (true, true, true) => {}
        (true, false, false) => args.push_str(" --only cold"),
        (false, true, false) => args.push_str(" --only density"),
        _ => args.push_str(" --only neighbours"),
    }
    if args.is_empty() {
        let _ = writeln!(s, "Reproduce: `make bench`");
    } else {
        let _ = writeln!(
            s,
            "Reproduce: `make bench` (this run: `bulkhead-bench{args}`)"
        );
    }
    s
}

// ───────────────────────────── main ─────────────────────────────

fn main() {
    let opts = match parse_args() {
        Ok(o) => o,
        Err(e) => {
            eprintln!("bulkhead-bench: {e}");
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
            eprintln!("bulkhead-bench: {e}");
            emergency_teardown();
            1
        }
    });
}

/// `Ok(false)` when the bench ran but left something behind.
fn run(opts: &Opts) -> Result<bool, String> {
    let nofile = raise_nofile(4 * opts.density as u64 + 4096);
    if (nofile as usize) < 3 * opts.density + 256 {
        eprintln!(
            "bulkhead-bench: warning: RLIMIT_NOFILE is {nofile}; {} sandboxes need about {}",
            opts.density,
            3 * opts.density + 256
        );
    }
    let bin_dir = bulkhead_tests::bin_dir();
    let launcher = bulkhead_tests::bin("bulkhead-launch");
    let cli = bulkhead_tests::bin("bulkhead");
    let bwrap = bwrap_path();
    if bwrap.is_none() {
        eprintln!(
            "bulkhead-bench: bwrap not found in PATH: no baseline (apt-get install bubblewrap)"
        );
    }
    let tmp = tempfile::Builder::new()
        .prefix("bulkhead-bench-")
        .tempdir()
        .map_err(|e| format!("temp dir: {e}"))?;
    let _ = STATE_DIR.set(tmp.path().to_path_buf());
    let state_dir = tmp.path().join("state");
    let platform = Platform::open(PlatformConfig {
        state_dir: state_dir.clone(),
        launcher: Some(launcher.clone()),
    })
    .map_err(|e| e.to_string())?;
    let env = Env {
        platform,
        state_dir,
        launcher,
        cli,
        bwrap,
    };
    println!(
        "bulkhead-bench: binaries in {}, state in {}",
        bin_dir.display(),
        env.state_dir.display()
    );

    let mut goals = Vec::new();
    let cold_rep = if opts.cold {
        let r = cold(opts, &env)?;
        goals.extend(print_cold(&r));
        Some(r)
    } else {
        None
    };
    let (dens, bw) = if opts.dense && opts.density > 0 {
        let m = opts.bwrap_density.unwrap_or(opts.density.min(200));
        let b = match &env.bwrap {
            Some(bw) if m > 0 => {
                eprintln!("  baseline: starting {m} bwrap sandboxes");
                Some(bwrap_density(bw, m, opts.threads))
            }
            _ => None,
        };
        if stopping() {
            return Err("interrupted".into());
        }
        let d = density(opts, &env)?;
        goals.extend(print_density(&d, b.as_ref()));
        (Some(d), b)
    } else {
        (None, None)
    };
    let neighbours_rep = if opts.neighbours {
        if stopping() {
            return Err("interrupted".into());
        }
        let r = neighbours(opts, &env)?;
        goals.extend(print_neighbours(&r));
        Some(r)
    } else {
        None
    };
    let clean = dens.as_ref().map_or(true, DensityReport::clean)
        && bw.as_ref().map_or(true, |b| b.left == 0);

    println!("\ngoals");
    for g in &goals {
        println!("  {g}");
    }
    println!("\n--- summary (paste into docs/benchmarks.md) ---\n");
    print!(
        "{}",
        summary(opts, &env, cold_rep.as_ref(), dens.as_ref(), bw.as_ref())
    );
    if let Some(r) = &neighbours_rep {
        print!("{}", summary_neighbours(r));
    }
    println!("\n--- end of summary ---");
    drop(env);
    tmp.close()
        .map_err(|e| format!("removing the state dir: {e}"))?;
    std::io::stdout().flush().ok();
    Ok(clean)
}

// ───────────────────────────── (c) neighbours ─────────────────────────────

/// B's latency beside one attack of A.
struct NeighbourRow {
    attack: &'static str,
    b: Samples,
    /// A's attack was still running when B's last exec ended.
    sustained: bool,
}

struct NeighboursReport {
    alone: Samples,
    rows: Vec<NeighbourRow>,
}

/// Attacks that must keep B within 2× (the io one is reported only).
const NEIGHBOUR_GOAL_X: f64 = 2.0;

fn neighbour_goal(attack: &str) -> Option<f64> {
    (!attack.starts_with("io")).then_some(NEIGHBOUR_GOAL_X)
}

/// One `bulkhead exec <id> -- /bin/true` through the CLI, in ms.
fn cli_true(env: &Env, id: &str) -> Result<f64, String> {
    let start = Instant::now();
    let out = Command::new(&env.cli)
        .arg("--state-dir")
        .arg(&env.state_dir)
        .args(["exec", id, "--", "/bin/true"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .output()
        .map_err(|e| format!("bulkhead: {e}"))?;
    let ms = start.elapsed().as_secs_f64() * 1e3;
    if out.status.success() {
        Ok(ms)
    } else {
        Err(format!(
            "bulkhead exec {id}: {}: {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

fn neighbours(opts: &Opts, env: &Env) -> Result<NeighboursReport, String> {
    let a = env
        .platform
        .create_workspace("bench-a", WorkspaceConfig::default())
        .map_err(|e| e.to_string())?;
    env.platform
        .create_workspace("bench-b", WorkspaceConfig::default())
        .map_err(|e| e.to_string())?;
    let marker = a.files_dir().join("started");
    let n = opts.neighbour_rounds;
    let mut alone = Samples::default();
    let run_alone = |alone: &mut Samples| {
        for _ in 0..n {
            match cli_true(env, "bench-b") {
                Ok(ms) => alone.ms.push(ms),
                Err(e) => alone.fail(e),
            }
        }
    };
    eprintln!("  neighbours: B alone, {n} execs");
    let _ = cli_true(env, "bench-b");
    run_alone(&mut alone);
    let mut rows = Vec::new();
    for &(attack, script) in bulkhead_tests::NEIGHBOUR_ATTACKS {
        if stopping() {
            return Err("interrupted".into());
        }
        eprintln!("  neighbours: B beside A's {attack}");
        let _ = std::fs::remove_file(&marker);
        // A's attack is time-boxed by the CLI's own --timeout: it ends (and its sandbox with
        // it) whatever happens here.
        let window = Duration::from_secs(20 + 3 * n as u64);
        let full = format!("touch /workspace/started; {script}");
        let mut child = Command::new(&env.cli)
            .arg("--state-dir")
            .arg(&env.state_dir)
            .args(["exec", "bench-a", "--timeout"])
            .arg(window.as_secs().to_string())
            .args(["--", "/bin/sh", "-c", &full])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| format!("start A's {attack}: {e}"))?;
        let started = Instant::now();
        while !marker.exists() {
            if started.elapsed() > Duration::from_secs(30)
                || child.try_wait().ok().flatten().is_some()
            {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!("A's {attack} did not start"));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        std::thread::sleep(Duration::from_millis(1500));
        let mut b = Samples::default();
        for _ in 0..n {
            if started.elapsed() + Duration::from_secs(5) > window {
                b.fail("the attack's window ended before B's rounds".into());
                break;
            }
            match cli_true(env, "bench-b") {
                Ok(ms) => b.ms.push(ms),
                Err(e) => b.fail(e),
            }
        }
        let sustained = child.try_wait().ok().flatten().is_none();
        // Ends at its --timeout; a CLI that outlives it by far is killed.
        let deadline = started + window + Duration::from_secs(30);
        while child.try_wait().ok().flatten().is_none() {
            if Instant::now() > deadline {
                let _ = child.kill();
                break;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = child.wait();
        rows.push(NeighbourRow {
            attack,
            b,
            sustained,
        });
    }
    eprintln!("  neighbours: B alone again, {n} execs");
    run_alone(&mut alone);
    Ok(NeighboursReport { alone, rows })
}

fn print_neighbours(r: &NeighboursReport) -> Vec<String> {
    let base = r.alone.median();
    println!(
        "\n(c) neighbours: tenant B's `bulkhead exec /bin/true` while tenant A attacks in its own \
         sandbox ({} execs alone, before and after; default limits for both)",
        r.alone.ms.len()
    );
    println!(
        "  {:<28} {:>10} {:>10} {:>9} {:>7}",
        "B beside", "median ms", "p90 ms", "× alone", "errors"
    );
    println!(
        "  {:<28} {:>10} {:>10} {:>9} {:>7}",
        "nothing (alone)",
        fmt_ms(base),
        fmt_ms(r.alone.p90()),
        "1.00×",
        r.alone.errors
    );
    let mut goals = Vec::new();
    for row in &r.rows {
        let x = ratio(row.b.median(), base);
        println!(
            "  {:<28} {:>10} {:>10} {:>9} {:>7}{}",
            format!("A's {}", row.attack),
            fmt_ms(row.b.median()),
            fmt_ms(row.b.p90()),
            fmt_x(x),
            row.b.errors,
            if row.sustained {
                ""
            } else {
                "  (the attack ended early)"
            }
        );
        if let Some(e) = &row.b.first_error {
            println!("      first error: {e}");
        }
        match neighbour_goal(row.attack) {
            Some(limit) => {
                let ok = x.map(|x| x <= limit && row.b.errors == 0 && row.sustained);
                goals.push(format!(
                    "{} B's exec beside A's {} ≤ {limit:.0}× alone: {}",
                    verdict(ok),
                    row.attack,
                    fmt_x(x)
                ));
            }
            None => goals.push(format!(
                "info B's exec beside A's {} (reported, no goal): {}",
                row.attack,
                fmt_x(x)
            )),
        }
    }
    goals
}

fn summary_neighbours(r: &NeighboursReport) -> String {
    let mut s = String::new();
    let base = r.alone.median();
    let _ = writeln!(s);
    let _ = writeln!(
        s,
        "| tenant B's `exec /bin/true` beside tenant A's | median ms | × B alone | goal |"
    );
    let _ = writeln!(s, "| --- | ---: | ---: | --- |");
    let _ = writeln!(s, "| nothing | {} | 1.00× | |", fmt_ms(base));
    for row in &r.rows {
        let x = ratio(row.b.median(), base);
        let goal = match neighbour_goal(row.attack) {
            Some(l) => format!("≤ {l:.0}×"),
            None => "reported".into(),
        };
        let _ = writeln!(
            s,
            "| {} | {} | {} | {goal} |",
            row.attack,
            fmt_ms(row.b.median()),
            fmt_x(x)
        );
    }
    s
}
