//! `bulkhead-bench-sessions`: the cost of appending one turn to a session transcript, and
//! that it does not grow with the transcript's length.
//!
//! A turn is 5 events (run_start, user_message, tool_call, tool_result, run_end; ~1.4 KB of
//! JSONL) committed with one write and one fdatasync through `SessionHandle::commit`. It is
//! measured on transcripts that start at 0, 1,000 and 10,000 events, and against a baseline
//! in the same run: a raw `write` + `fdatasync` of the same bytes to a plain `O_APPEND`
//! file. Every round measures each variant once, round-robin with a rotating start, so
//! machine noise hits all of them alike. Medians and p90s; the goal is a 10k/0 ratio of
//! about 1 (≤ 1.5 is printed as met). A miss is printed, not an error exit.
//!
//! ```text
//! cargo run --release -p bulkhead-bench --bin bulkhead-bench-sessions -- [--appends N]
//!     [--sizes 0,1000,10000] [--dir DIR]
//! ```
//!
//! `--dir` should be on the disk sessions live on (fsync on tmpfs costs nothing); the default
//! is `bench-state/` in the target directory.

use std::fs::OpenOptions;
use std::io::Write;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use bulkhead::{Event, LockMode, Platform, PlatformConfig, SessionHandle, Usage, WorkspaceConfig};
use serde_json::json;

const USAGE: &str = "\
usage: bulkhead-bench-sessions [--appends N] [--sizes 0,1000,10000] [--dir DIR]

  --appends N   turns appended per variant (default 200)
  --sizes LIST  transcript lengths in events to start from (default 0,1000,10000)
  --dir DIR     where to create the state directory (default: target/<profile>/bench-state)";

fn turn(run: &str) -> Vec<Event> {
    vec![
        Event::run_start(run, Some("model-x")),
        Event::user_message(format!(
            "{run}: {}",
            "please look at the build log ".repeat(7)
        ))
        .with_run_id(run),
        Event::tool_call(
            format!("{run}-c1"),
            "bash",
            json!({"command": "tail -n 50 build.log", "timeout": 30}),
        )
        .with_run_id(run),
        Event::tool_result(
            format!("{run}-c1"),
            "error: linking failed\n".repeat(24),
            false,
        )
        .with_run_id(run),
        Event::run_end(
            run,
            Usage {
                input_tokens: 1234,
                output_tokens: 56,
                cost_usd: Some(0.0021),
            },
            "completed",
        ),
    ]
}

fn append_turn(h: &mut SessionHandle, run: &str) {
    for e in turn(run) {
        h.push(e).expect("push");
    }
    assert_eq!(h.commit().expect("commit"), 5);
}

fn stats(v: &mut [Duration]) -> (f64, f64) {
    v.sort();
    let us = |d: Duration| d.as_secs_f64() * 1e6;
    (
        us(v[v.len() / 2]),
        us(v[(v.len() * 9 / 10).min(v.len() - 1)]),
    )
}

fn main() {
    let mut appends = 200usize;
    let mut sizes = vec![0usize, 1000, 10_000];
    let mut dir: Option<PathBuf> = None;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let mut val = || {
            args.next().unwrap_or_else(|| {
                eprintln!("{a} needs a value\n{USAGE}");
                std::process::exit(2)
            })
        };
        match a.as_str() {
            "--appends" => appends = val().parse().expect("--appends N"),
            "--sizes" => {
                sizes = val()
                    .split(',')
                    .map(|s| s.trim().parse().expect("--sizes 0,1000,10000"))
                    .collect()
            }
            "--dir" => dir = Some(val().into()),
            "-h" | "--help" => {
                println!("{USAGE}");
                return;
            }
            _ => {
                eprintln!("unknown argument {a}\n{USAGE}");
                std::process::exit(2)
            }
        }
    }
    assert!(appends > 0 && !sizes.is_empty());
    let base = dir.unwrap_or_else(|| bulkhead_tests::bin_dir().join("bench-state"));
    std::fs::create_dir_all(&base).expect("create bench dir");
    let tmp = tempfile::Builder::new()
        .prefix("sessions-")
        .tempdir_in(&base)
        .expect("temp dir");
    let p = Platform::open(PlatformConfig {
        state_dir: tmp.path().join("state"),
        ..PlatformConfig::default()
    })
    .expect("platform");
    let ws = p
        .create_workspace("bench", WorkspaceConfig::default())
        .expect("workspace");
    let sessions = ws.sessions();

    // Prefill: one session per size, in commits of 1,000 events.
    let mut handles = Vec::new();
    let mut open_us = Vec::new();
    for &n in &sizes {
        let sid = format!("len-{n}");
        let mut h = sessions
            .create(Some(&sid), LockMode::FailFast)
            .expect("create");
        let mut written = 0;
        while written < n {
            let k = (n - written).min(1000);
            for i in 0..k {
                let ev = &turn(&format!("pre-{}", (written + i) / 5))[(written + i) % 5];
                h.push(ev.clone()).expect("push");
            }
            h.commit().expect("commit");
            written += k;
        }
        drop(h);
        // Reopening checks the tail (one byte read) under the lock: also constant.
        let mut t = Vec::new();
        for _ in 0..20 {
            let t0 = Instant::now();
            drop(sessions.open(&sid, LockMode::FailFast).expect("open"));
            t.push(t0.elapsed());
        }
        open_us.push(stats(&mut t).0);
        let h = sessions.open(&sid, LockMode::FailFast).expect("open");
        handles.push((n, h));
    }

    // Baseline: the same bytes, raw write + fdatasync on an O_APPEND file.
    let mut turn_bytes = Vec::new();
    for e in turn("run-000000") {
        turn_bytes.extend_from_slice(&e.with_ts("2026-11-26T21:45:01.000Z").to_line().unwrap());
        turn_bytes.push(b'\n');
    }
    let raw_path = tmp.path().join("raw.jsonl");
    let mut raw = OpenOptions::new()
        .create(true)
        .append(true)
        .open(&raw_path)
        .expect("raw file");

    let variants = handles.len() + 1;
    let mut times: Vec<Vec<Duration>> = vec![Vec::with_capacity(appends); variants];
    for round in 0..appends {
        for j in 0..variants {
            let v = (round + j) % variants;
            let run = format!("run-{round:06}");
            let t0 = Instant::now();
            if v == 0 {
                raw.write_all(&turn_bytes).expect("raw write");
                raw.sync_data().expect("raw fdatasync");
            } else {
                append_turn(&mut handles[v - 1].1, &run);
            }
            times[v].push(t0.elapsed());
        }
    }

    let (raw_med, raw_p90) = stats(&mut times[0]);
    println!(
        "append one turn (5 events, {} bytes, one write + fdatasync); {appends} appends per variant, round-robin",
        turn_bytes.len()
    );
    println!("state on {}", base.display());
    println!(
        "{:<34} {:>11} {:>11} {:>9} {:>11}",
        "variant", "median µs", "p90 µs", "vs raw", "open µs"
    );
    println!(
        "{:<34} {:>11.1} {:>11.1} {:>9} {:>11}",
        "raw write+fdatasync (baseline)", raw_med, raw_p90, "1.00", "-"
    );
    let mut medians = Vec::new();
    for (i, (n, h)) in handles.iter().enumerate() {
        let (med, p90) = stats(&mut times[i + 1]);
        medians.push(med);
        println!(
            "{:<34} {:>11.1} {:>11.1} {:>9.2} {:>11.1}",
            format!("session, {n} events (→ {})", n + appends * 5),
            med,
            p90,
            med / raw_med,
            open_us[i]
        );
        let _ = h.len_bytes();
    }
    let ratio = medians[medians.len() - 1] / medians[0];
    let met = ratio <= 1.5;
    println!(
        "ratio {}/{} events: {ratio:.2} (goal ≈ 1, ≤ 1.5: {})",
        sizes[sizes.len() - 1],
        sizes[0],
        if met { "met" } else { "MISSED" }
    );
    drop(handles);
    drop(raw);
}
