//! JSON-RPC over stdio against the CLI, in the same run: a host app that keeps one
//! `bulkhead serve --stdio` process pays a pipe round trip per call, one that runs the CLI
//! per call pays a process start (and the state directory's config) every time.
//!
//! Measures, medians over the runs after warm-up:
//! - `workspace.show` over one server vs `bulkhead --json workspace show` per call;
//! - `exec` of `/bin/true` (a fresh sandbox each) over the server vs `bulkhead exec`.
//!
//! Run: `cargo run --release -p bulkhead-bench --bin bulkhead-bench-rpc` (`--json` for one
//! JSON object). A benchmark, not a test: it prints numbers and asserts nothing.

use bulkhead_bench::bench_util;

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

use serde_json::{json, Value};

const SHOW_RUNS: usize = 300;
const CLI_SHOW_RUNS: usize = 60;
const EXEC_RUNS: usize = 60;

fn bin(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("current_exe");
    exe.with_file_name(name)
}

fn ms(t: Instant) -> f64 {
    t.elapsed().as_secs_f64() * 1e3
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    bench_util::percentile(v, 50.0).unwrap_or(f64::NAN)
}

struct Server {
    child: std::process::Child,
    out: BufReader<std::process::ChildStdout>,
    next: u64,
}

impl Server {
    fn start(state: &Path) -> Server {
        let mut child = Command::new(bin("bulkhead"))
            .arg("--state-dir")
            .arg(state)
            .args(["serve", "--stdio"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("start bulkhead serve --stdio");
        let out = BufReader::new(child.stdout.take().expect("stdout"));
        Server {
            child,
            out,
            next: 1,
        }
    }

    fn call(&mut self, method: &str, params: Value) -> Value {
        let id = self.next;
        self.next += 1;
        let line = json!({"jsonrpc": "2.0", "id": id, "method": method, "params": params});
        let stdin = self.child.stdin.as_mut().expect("stdin");
        writeln!(stdin, "{line}").expect("write request");
        stdin.flush().expect("flush");
        loop {
            let mut l = String::new();
            if self.out.read_line(&mut l).expect("read") == 0 {
                panic!("the server closed its output");
            }
            let v: Value = serde_json::from_str(&l).expect("a JSON line");
            if v.get("id") == Some(&json!(id)) {
                if let Some(e) = v.get("error") {
                    panic!("{method}: {e}");
                }
                return v["result"].clone();
            }
        }
    }
}

fn cli(state: &Path, args: &[&str]) {
    let st = Command::new(bin("bulkhead"))
        .arg("--state-dir")
        .arg(state)
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .expect("run bulkhead");
    assert!(st.success(), "bulkhead {args:?} failed");
}

fn main() {
    let json_out = std::env::args().any(|a| a == "--json");
    let dir = tempfile::tempdir().expect("tempdir");
    let state = dir.path().join("state");
    cli(&state, &["workspace", "create", "bench"]);
    let mut server = Server::start(&state);
    let show = json!({"workspace": "bench"});
    for _ in 0..20 {
        server.call("workspace.show", show.clone());
    }
    let mut rpc_show: Vec<f64> = (0..SHOW_RUNS)
        .map(|_| {
            let t = Instant::now();
            server.call("workspace.show", show.clone());
            ms(t)
        })
        .collect();
    for _ in 0..3 {
        cli(&state, &["--json", "workspace", "show", "bench"]);
    }
    let mut cli_show: Vec<f64> = (0..CLI_SHOW_RUNS)
        .map(|_| {
            let t = Instant::now();
            cli(&state, &["--json", "workspace", "show", "bench"]);
            ms(t)
        })
        .collect();
    let exec = json!({"workspace": "bench", "argv": ["/bin/true"]});
    for _ in 0..3 {
        server.call("exec", exec.clone());
        cli(&state, &["exec", "bench", "--", "/bin/true"]);
    }
    // Interleaved, so machine noise hits both alike, and in alternating order: a sandbox's
    // teardown leaves kernel work behind (cgroup removal, RCU) that lands on whatever runs
    // next.
    let (mut rpc_exec, mut cli_exec) = (Vec::new(), Vec::new());
    for round in 0..EXEC_RUNS {
        let mut rpc = |server: &mut Server| {
            let t = Instant::now();
            server.call("exec", exec.clone());
            rpc_exec.push(ms(t));
        };
        let mut via_cli = || {
            let t = Instant::now();
            cli(&state, &["exec", "bench", "--", "/bin/true"]);
            cli_exec.push(ms(t));
        };
        if round % 2 == 0 {
            rpc(&mut server);
            via_cli();
        } else {
            via_cli();
            rpc(&mut server);
        }
    }
    drop(server.child.stdin.take());
    let _ = server.child.wait();
    let (rs, cs) = (median(&mut rpc_show), median(&mut cli_show));
    let (re, ce) = (median(&mut rpc_exec), median(&mut cli_exec));
    if json_out {
        println!(
            "{}",
            json!({
                "rpc_workspace_show_ms": rs, "cli_workspace_show_ms": cs,
                "rpc_exec_ms": re, "cli_exec_ms": ce,
            })
        );
        return;
    }
    println!(
        "JSON-RPC over stdio vs the CLI per call ({})",
        bench_util::today()
    );
    println!();
    println!("| measure | JSON-RPC (one server) | CLI (a process per call) | ratio |");
    println!("| --- | ---: | ---: | ---: |");
    println!(
        "| workspace.show (median ms, n={SHOW_RUNS} / {CLI_SHOW_RUNS}) | {rs:.3} | {cs:.2} | {:.3} |",
        rs / cs
    );
    println!(
        "| exec /bin/true, a fresh sandbox each (median ms, n={EXEC_RUNS}) | {re:.2} | {ce:.2} | {:.2} |",
        re / ce
    );
}
