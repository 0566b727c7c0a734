//! Sessions: JSONL transcripts through the library and `bulkhead session …`: every event
//! type round trips, concurrent runs (threads and processes) never interleave, a busy
//! session fails fast (exit 8), torn and oversized lines are skipped and repaired, unknown
//! event types survive, and subscribers see committed events in order.

use std::fs::{self, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::mpsc::{self, TryRecvError};
use std::time::{Duration, Instant};

use bulkhead::error::exit;
use bulkhead::sessions::{self, SessionError, MAX_LINE_BYTES};
use bulkhead::{
    Error, Event, LockMode, Platform, PlatformConfig, Sessions, Usage, Workspace, WorkspaceConfig,
};
use bulkhead_tests::{text, TestEnv};
use serde_json::{json, Value};

fn platform(env: &TestEnv) -> Platform {
    Platform::open(PlatformConfig {
        state_dir: env.state(),
        ..PlatformConfig::default()
    })
    .expect("open platform")
}

/// A fresh state directory with one workspace.
fn setup(ws: &str) -> (TestEnv, Workspace) {
    let env = TestEnv::new();
    let w = platform(&env)
        .create_workspace(ws, WorkspaceConfig::default())
        .expect("create workspace");
    (env, w)
}

/// Every line of a transcript, each of which must be complete JSON.
fn json_lines(path: &Path) -> Vec<Value> {
    let data = fs::read(path).expect("read transcript");
    assert!(
        data.is_empty() || data.ends_with(b"\n"),
        "{} does not end with a newline",
        path.display()
    );
    data.split(|&c| c == b'\n')
        .filter(|l| !l.is_empty())
        .enumerate()
        .map(|(i, l)| {
            serde_json::from_slice(l).unwrap_or_else(|e| {
                panic!(
                    "line {} of {} is not JSON ({e}): {}",
                    i + 1,
                    path.display(),
                    String::from_utf8_lossy(&l[..l.len().min(200)])
                )
            })
        })
        .collect()
}

fn append_raw(path: &Path, bytes: &[u8]) {
    let mut f = OpenOptions::new().append(true).open(path).unwrap();
    f.write_all(bytes).unwrap();
}

fn is_rfc3339_ms_utc(ts: &str) -> bool {
    let b = ts.as_bytes();
    b.len() == 24
        && b.iter().enumerate().all(|(i, c)| match i {
            4 | 7 => *c == b'-',
            10 => *c == b'T',
            13 | 16 => *c == b':',
            19 => *c == b'.',
            23 => *c == b'Z',
            _ => c.is_ascii_digit(),
        })
}

fn all_event_types() -> Vec<Event> {
    vec![
        Event::RunStart {
            ts: "2026-11-26T21:45:01.000Z".into(),
            run_id: "r1".into(),
            model: Some("model-a".into()),
            provider: Some("mock".into()),
        },
        Event::UserMessage {
            ts: "2026-11-26T21:45:01.001Z".into(),
            run_id: Some("r1".into()),
            text: "hello\nwith a newline, \"quotes\" and ünïcödé".into(),
        },
        Event::ToolCall {
            ts: "2026-11-26T21:45:01.002Z".into(),
            run_id: Some("r1".into()),
            call_id: "c1".into(),
            name: "bash".into(),
            arguments: json!({"command": "ls -la", "timeout": 10, "env": [1, null, true]}),
        },
        Event::ToolResult {
            ts: "2026-11-26T21:45:01.003Z".into(),
            run_id: Some("r1".into()),
            call_id: "c1".into(),
            output: "total 0\n".into(),
            is_error: false,
        },
        Event::Compaction {
            ts: "2026-11-26T21:45:01.004Z".into(),
            run_id: Some("r1".into()),
            summary: "the user said hello".into(),
            replaced_events: 12,
        },
        Event::Error {
            ts: "2026-11-26T21:45:01.005Z".into(),
            run_id: Some("r1".into()),
            message: "provider returned 503".into(),
            kind: "llm".into(),
        },
        Event::AssistantMessage {
            ts: "2026-11-26T21:45:01.006Z".into(),
            run_id: Some("r1".into()),
            text: "hi".into(),
        },
        Event::RunEnd {
            ts: "2026-11-26T21:45:01.007Z".into(),
            run_id: "r1".into(),
            usage: Usage {
                input_tokens: 120,
                output_tokens: 7,
                cost_usd: Some(0.0015),
            },
            outcome: "completed".into(),
        },
    ]
}

#[test]
fn every_event_type_round_trips() {
    let (env, w) = setup("acme");
    let s = w.sessions();
    let mut h = s.create(Some("round-trip"), LockMode::FailFast).unwrap();
    let events = all_event_types();
    for e in &events {
        h.push(e.clone()).unwrap();
    }
    assert_eq!(h.commit().unwrap(), events.len());
    // Constructors: an empty ts is stamped with the current time.
    h.append_now(Event::user_message("stamped").with_run_id("r2"))
        .unwrap();
    drop(h);

    let t = s.read("round-trip").unwrap();
    assert_eq!(t.skipped, 0);
    assert!(!t.torn_tail);
    assert_eq!(&t.events[..events.len()], &events[..]);
    let last = &t.events[events.len()];
    assert!(
        matches!(last, Event::UserMessage { text, run_id: Some(r), .. } if text == "stamped" && r == "r2")
    );
    assert!(is_rfc3339_ms_utc(last.ts().unwrap()), "{:?}", last.ts());

    // The contract's names on disk.
    let lines = json_lines(&s.path("round-trip"));
    assert_eq!(lines.len(), events.len() + 1);
    let types: Vec<&str> = lines.iter().map(|l| l["type"].as_str().unwrap()).collect();
    assert_eq!(
        types,
        [
            "run_start",
            "user_message",
            "tool_call",
            "tool_result",
            "compaction",
            "error",
            "assistant_message",
            "run_end",
            "user_message"
        ]
    );
    for l in &lines {
        assert!(is_rfc3339_ms_utc(l["ts"].as_str().unwrap()), "{l}");
        assert_eq!(l["run_id"].as_str().map(|r| r.starts_with('r')), Some(true));
    }
    assert_eq!(lines[0]["model"], "model-a");
    assert_eq!(lines[2]["call_id"], "c1");
    assert_eq!(lines[2]["name"], "bash");
    assert_eq!(lines[2]["arguments"]["command"], "ls -la");
    assert_eq!(lines[3]["output"], "total 0\n");
    assert_eq!(lines[3]["is_error"], false);
    assert_eq!(lines[4]["summary"], "the user said hello");
    assert_eq!(lines[4]["replaced_events"], 12);
    assert_eq!(lines[5]["message"], "provider returned 503");
    assert_eq!(lines[5]["kind"], "llm");
    assert_eq!(lines[7]["usage"]["input_tokens"], 120);
    assert_eq!(lines[7]["usage"]["output_tokens"], 7);
    assert_eq!(lines[7]["usage"]["cost_usd"], 0.0015);
    assert_eq!(lines[7]["outcome"], "completed");

    // And back through the CLI's JSONL.
    let env_out = env.bulkhead(&["--json", "session", "show", "acme", "round-trip"]);
    assert!(env_out.status.success(), "{}", text(&env_out.stderr));
    let shown: Vec<Event> = text(&env_out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(shown, t.events);
}

#[test]
fn create_open_and_ids() {
    let (_env, w) = setup("acme");
    let s = w.sessions();
    let h = s.create(None, LockMode::FailFast).unwrap();
    let sid = h.sid().to_string();
    // 20261126T214501Z-1f3a9c07
    assert_eq!(sid.len(), 25, "{sid}");
    assert!(sid[..8].bytes().all(|c| c.is_ascii_digit()), "{sid}");
    assert_eq!(&sid[8..9], "T");
    assert_eq!(&sid[15..17], "Z-");
    assert!(sid[17..].bytes().all(|c| c.is_ascii_hexdigit()), "{sid}");
    drop(h);
    let other = s.create(None, LockMode::FailFast).unwrap();
    assert_ne!(other.sid(), sid);
    assert!(s.exists(&sid).unwrap());
    assert!(s.path(&sid).is_file());

    let e = s.create(Some(&sid), LockMode::FailFast).unwrap_err();
    assert!(
        matches!(e, Error::Session(SessionError::Exists { .. })),
        "{e}"
    );
    assert_eq!(e.exit_code(), exit::EXISTS);

    let e = s.open("missing", LockMode::FailFast).unwrap_err();
    assert!(
        matches!(e, Error::Session(SessionError::NoSuch { .. })),
        "{e}"
    );
    assert_eq!(e.exit_code(), exit::NOT_FOUND);
    assert!(e.to_string().contains("does not exist"), "{e}");
    assert!(!s.path("missing").exists(), "open must not create");
    assert!(matches!(
        s.read("missing").unwrap_err(),
        Error::Session(SessionError::NoSuch { .. })
    ));
    assert!(matches!(
        s.remove("missing").unwrap_err(),
        Error::Session(SessionError::NoSuch { .. })
    ));

    let mut h = s.open_or_create("either", LockMode::FailFast).unwrap();
    h.append_now(Event::user_message("x")).unwrap();
    drop(h);
    let h = s.open_or_create("either", LockMode::FailFast).unwrap();
    assert!(h.len_bytes() > 0);
    drop(h);

    for bad in ["", "-x", "a/b", "..", "a.b", "a b", &"a".repeat(65)] {
        let e = s.open(bad, LockMode::FailFast).unwrap_err();
        assert!(matches!(e, Error::Invalid(_)), "{bad:?}: {e}");
        assert_eq!(e.exit_code(), exit::USAGE);
        assert!(s.create(Some(bad), LockMode::FailFast).is_err());
        assert!(s.read(bad).is_err());
    }
    s.create(Some(&"A".repeat(64)), LockMode::FailFast).unwrap();
}

#[test]
fn busy_session_fails_fast_or_waits() {
    let (env, w) = setup("acme");
    let s = w.sessions();
    let mut held = s.create(Some("busy"), LockMode::FailFast).unwrap();
    held.append_now(Event::user_message("mine")).unwrap();

    let e = s.open("busy", LockMode::FailFast).unwrap_err();
    assert!(matches!(e, Error::Session(SessionError::Busy(_))), "{e}");
    assert_eq!(e.exit_code(), exit::SESSION_BUSY);
    assert_eq!(exit::SESSION_BUSY, 8);
    assert!(
        e.to_string()
            .contains("session busy is in use by another run"),
        "{e}"
    );

    let t0 = Instant::now();
    let e = s
        .open("busy", LockMode::WaitTimeout(Duration::from_millis(200)))
        .unwrap_err();
    assert!(matches!(e, Error::Session(SessionError::Busy(_))), "{e}");
    assert!(t0.elapsed() >= Duration::from_millis(200));

    // Removal is refused while held, by the library and the CLI (another process).
    assert!(matches!(
        s.remove("busy").unwrap_err(),
        Error::Session(SessionError::Busy(_))
    ));
    let out = env.bulkhead(&["session", "rm", "acme", "busy"]);
    assert_eq!(out.status.code(), Some(8), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains("is in use by another run"),
        "{}",
        text(&out.stderr)
    );
    assert!(s.path("busy").is_file());

    // Wait: blocks until the holder is done, then goes on.
    let (tx, rx) = mpsc::channel();
    let s2 = s.clone();
    let waiter = std::thread::spawn(move || {
        let mut h = s2.open("busy", LockMode::Wait).unwrap();
        tx.send(()).unwrap();
        h.append_now(Event::user_message("theirs")).unwrap();
    });
    assert_eq!(
        rx.recv_timeout(Duration::from_millis(300)),
        Err(mpsc::RecvTimeoutError::Timeout),
        "a waiting open got the lock while it was held"
    );
    held.append_now(Event::assistant_message("still mine"))
        .unwrap();
    drop(held);
    rx.recv_timeout(Duration::from_secs(10))
        .expect("the waiter got the lock");
    waiter.join().unwrap();
    let texts: Vec<String> = s
        .read("busy")
        .unwrap()
        .events
        .iter()
        .map(|e| match e {
            Event::UserMessage { text, .. } | Event::AssistantMessage { text, .. } => text.clone(),
            other => panic!("{other:?}"),
        })
        .collect();
    assert_eq!(texts, ["mine", "still mine", "theirs"]);

    // A timed wait that succeeds once the holder lets go.
    let held = s.open("busy", LockMode::FailFast).unwrap();
    let s3 = s.clone();
    let t = std::thread::spawn(move || {
        s3.open("busy", LockMode::WaitTimeout(Duration::from_secs(10)))
            .map(|h| h.sid().to_string())
    });
    std::thread::sleep(Duration::from_millis(100));
    drop(held);
    assert_eq!(t.join().unwrap().unwrap(), "busy");
}

/// Writes `turns` runs of 5 events each. Even turns: push ×5 + one commit; odd turns:
/// append_now ×5 (five writes, contiguous only because the lock is held throughout).
fn write_turns(s: &Sessions, sid: &str, writer: &str, turns: usize) {
    let pad = "·".repeat(1500);
    for t in 0..turns {
        let mut h = s.open(sid, LockMode::Wait).unwrap();
        let run = format!("{writer}-{t}");
        let events = vec![
            Event::run_start(&run, Some("model")),
            Event::user_message(format!("{run} part 0 {pad}")).with_run_id(&run),
            Event::tool_call(format!("{run}-c"), "bash", json!({"run": run, "pad": pad}))
                .with_run_id(&run),
            Event::assistant_message(format!("{run} part 2 {pad}")).with_run_id(&run),
            Event::run_end(&run, Usage::default(), "completed"),
        ];
        if t % 2 == 0 {
            for e in events {
                h.push(e).unwrap();
            }
            assert_eq!(h.commit().unwrap(), 5);
        } else {
            for e in events {
                h.append_now(e).unwrap();
                std::thread::yield_now();
            }
        }
    }
}

/// Every line parses, every run's 5 events are contiguous and in order, each run once.
fn check_turns(path: &Path, writers: &[String], turns: usize) {
    let lines = json_lines(path);
    assert_eq!(lines.len(), writers.len() * turns * 5);
    let mut seen = std::collections::BTreeSet::new();
    for (i, chunk) in lines.chunks(5).enumerate() {
        let run = chunk[0]["run_id"]
            .as_str()
            .unwrap_or_else(|| panic!("turn {i} does not start with a run_start: {}", chunk[0]));
        let kinds: Vec<&str> = chunk.iter().map(|l| l["type"].as_str().unwrap()).collect();
        assert_eq!(
            kinds,
            [
                "run_start",
                "user_message",
                "tool_call",
                "assistant_message",
                "run_end"
            ],
            "turn {i} ({run}) is interleaved"
        );
        for l in chunk {
            assert_eq!(l["run_id"], run, "turn {i} mixes runs: {l}");
        }
        assert!(chunk[1]["text"]
            .as_str()
            .unwrap()
            .starts_with(&format!("{run} part 0 ")));
        assert_eq!(chunk[2]["arguments"]["run"], run);
        assert!(seen.insert(run.to_string()), "{run} twice");
    }
    for w in writers {
        for t in 0..turns {
            assert!(seen.contains(&format!("{w}-{t}")), "{w}-{t} missing");
        }
    }
}

#[test]
fn concurrent_threads_never_interleave() {
    let (_env, w) = setup("acme");
    let s = w.sessions();
    drop(s.create(Some("shared"), LockMode::FailFast).unwrap());
    let writers: Vec<String> = (0..4).map(|i| format!("thread{i}")).collect();
    let turns = 25;
    std::thread::scope(|sc| {
        for name in &writers {
            let s = &s;
            sc.spawn(move || write_turns(s, "shared", name, turns));
        }
    });
    check_turns(&s.path("shared"), &writers, turns);
    let t = s.read("shared").unwrap();
    assert_eq!(t.events.len(), writers.len() * turns * 5);
    assert_eq!(t.skipped, 0);
}

const CHILD_ENV: &str = "BULKHEAD_TEST_SESSION_WRITER";

/// Not a test of its own: the body of a writer process for
/// `concurrent_processes_never_interleave`, which re-executes this test binary with
/// `BULKHEAD_TEST_SESSION_WRITER=state|workspace|sid|writer|turns`. Without it, a no-op.
#[test]
fn session_writer_child() {
    let Ok(spec) = std::env::var(CHILD_ENV) else {
        return;
    };
    let parts: Vec<&str> = spec.split('|').collect();
    let [state, ws, sid, writer, turns] = parts[..] else {
        panic!("bad {CHILD_ENV}: {spec}")
    };
    let p = Platform::open(PlatformConfig {
        state_dir: PathBuf::from(state),
        ..PlatformConfig::default()
    })
    .unwrap();
    let s = p.workspace(ws).unwrap().sessions();
    write_turns(&s, sid, writer, turns.parse().unwrap());
}

#[test]
fn concurrent_processes_never_interleave() {
    let (env, w) = setup("acme");
    let s = w.sessions();
    drop(s.create(Some("shared"), LockMode::FailFast).unwrap());
    let exe = std::env::current_exe().unwrap();
    let turns = 30;
    let writers: Vec<String> = (0..2).map(|i| format!("proc{i}")).collect();
    let children: Vec<_> = writers
        .iter()
        .map(|name| {
            Command::new(&exe)
                .args([
                    "--exact",
                    "suite::sessions::session_writer_child",
                    "--test-threads=1",
                    "--nocapture",
                ])
                .env(
                    CHILD_ENV,
                    format!("{}|acme|shared|{name}|{turns}", env.state().display()),
                )
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    // And this process writes too, meanwhile.
    write_turns(&s, "shared", "parent", turns);
    for c in children {
        let out = c.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "writer process failed: {}{}",
            text(&out.stdout),
            text(&out.stderr)
        );
        assert!(
            text(&out.stdout).contains("1 passed"),
            "the child did not run the writer: {}",
            text(&out.stdout)
        );
    }
    let mut all = writers.clone();
    all.push("parent".into());
    check_turns(&s.path("shared"), &all, turns);
}

#[test]
fn torn_last_line_is_skipped_then_repaired() {
    let (env, w) = setup("acme");
    let s = w.sessions();
    let mut h = s.create(Some("torn"), LockMode::FailFast).unwrap();
    h.push(Event::user_message("one")).unwrap();
    h.push(Event::assistant_message("two")).unwrap();
    h.commit().unwrap();
    drop(h);
    let path = s.path("torn");
    // A crash in the middle of a write: half a line, no newline.
    let half = br#"{"type":"assistant_message","ts":"2026-11-26T21:45:01.000Z","text":"thr"#;
    append_raw(&path, half);

    let t = s.read("torn").unwrap();
    assert_eq!(t.events.len(), 2);
    assert_eq!(t.skipped, 1);
    assert!(t.torn_tail);
    // A torn line that happens to be valid JSON is still torn (no newline).
    let info = &s.list().unwrap()[0];
    assert_eq!((info.events, info.skipped), (2, 1));

    let out = env.bulkhead(&["session", "show", "acme", "torn"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(text(&out.stdout).contains("two"));
    assert!(!text(&out.stdout).contains("thr\n"));
    assert!(
        text(&out.stderr).contains("skipped 1 damaged line"),
        "{}",
        text(&out.stderr)
    );
    let out = env.bulkhead(&["--json", "session", "list", "acme"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v[0]["events"], 2);
    assert_eq!(v[0]["skipped"], 1);

    // The next writer cuts the torn tail under the lock, then appends whole lines.
    let mut h = s.open("torn", LockMode::FailFast).unwrap();
    assert_eq!(h.repaired_bytes(), half.len() as u64);
    h.append_now(Event::user_message("three")).unwrap();
    drop(h);
    let lines = json_lines(&path);
    assert_eq!(lines.len(), 3);
    assert_eq!(lines[2]["text"], "three");
    let t = s.read("torn").unwrap();
    assert_eq!((t.events.len(), t.skipped, t.torn_tail), (3, 0, false));

    // Garbage inside the file (with its newline) is skipped and counted, never fatal; a
    // torn tail of garbage without any newline in the file is cut whole.
    append_raw(&path, b"\x00\x00garbage\n{\"type\":\n");
    let mut h = s.open("torn", LockMode::FailFast).unwrap();
    assert_eq!(h.repaired_bytes(), 0);
    h.append_now(Event::user_message("four")).unwrap();
    drop(h);
    let t = s.read("torn").unwrap();
    assert_eq!((t.events.len(), t.skipped, t.torn_tail), (4, 2, false));
    assert!(matches!(&t.events[3], Event::UserMessage { text, .. } if text == "four"));

    fs::write(s.path("nolines"), b"\x00\x00\x00\x00").unwrap();
    let t = s.read("nolines").unwrap();
    assert_eq!((t.events.len(), t.skipped, t.torn_tail), (0, 1, true));
    let mut h = s.open("nolines", LockMode::FailFast).unwrap();
    assert_eq!(h.repaired_bytes(), 4);
    h.append_now(Event::user_message("fresh")).unwrap();
    drop(h);
    assert_eq!(json_lines(&s.path("nolines")).len(), 1);
}

#[test]
fn unknown_event_types_are_preserved() {
    let (env, w) = setup("acme");
    let s = w.sessions();
    let mut h = s.create(Some("future"), LockMode::FailFast).unwrap();
    h.append_now(Event::user_message("before")).unwrap();
    drop(h);
    let newer = json!({
        "type": "tool_progress",
        "ts": "2026-11-26T21:45:01.000Z",
        "run_id": "r9",
        "percent": 50,
        "nested": {"a": [1, 2, {"b": null}]}
    });
    // A known type whose fields do not fit this version is kept too.
    let odd = json!({"type": "user_message", "ts": "2026-11-26T21:45:02.000Z", "text": 5});
    append_raw(&s.path("future"), format!("{newer}\n{odd}\n").as_bytes());

    let mut h = s.open("future", LockMode::FailFast).unwrap();
    // Written back by a writer, too.
    h.append_now(Event::Unknown(json!({"type": "custom", "x": 1})))
        .unwrap();
    assert!(h.push(Event::Unknown(json!([1, 2]))).is_err());
    assert!(h.push(Event::Unknown(json!({"no_type": 1}))).is_err());
    drop(h);

    let t = s.read("future").unwrap();
    assert_eq!(t.skipped, 0);
    assert_eq!(t.events.len(), 4);
    assert_eq!(t.events[1], Event::Unknown(newer.clone()));
    assert_eq!(t.events[1].kind(), "tool_progress");
    assert_eq!(t.events[1].run_id(), Some("r9"));
    assert_eq!(t.events[1].ts(), Some("2026-11-26T21:45:01.000Z"));
    assert_eq!(t.events[2], Event::Unknown(odd.clone()));
    match &t.events[3] {
        Event::Unknown(v) => {
            assert_eq!(v["type"], "custom");
            assert_eq!(v["x"], 1);
            assert!(v["ts"].is_string(), "stamped: {v}");
        }
        other => panic!("{other:?}"),
    }

    let out = env.bulkhead(&["--json", "session", "show", "acme", "future"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let shown: Vec<Value> = text(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(shown[1], newer);
    assert_eq!(shown[2], odd);
    let out = env.bulkhead(&["session", "show", "acme", "future"]);
    assert!(text(&out.stdout).contains("tool_progress"));
}

#[test]
fn session_cli_list_show_rm() {
    let env = TestEnv::new();
    env.create("acme");
    let p = platform(&env);
    let s = p.workspace("acme").unwrap().sessions();

    let out = env.bulkhead(&["--json", "session", "list", "acme"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(
        serde_json::from_slice::<Value>(&out.stdout).unwrap(),
        json!([])
    );

    let mut h = s.create(Some("s-a"), LockMode::FailFast).unwrap();
    for e in all_event_types() {
        h.push(e).unwrap();
    }
    h.push(Event::assistant_message(
        "evil \x1b]0;title\x07 text\nsecond line",
    ))
    .unwrap();
    h.commit().unwrap();
    drop(h);
    let mut h = s.create(None, LockMode::FailFast).unwrap();
    let gen = h.sid().to_string();
    h.append_now(Event::user_message("q")).unwrap();
    h.append_now(Event::assistant_message("a")).unwrap();
    drop(h);

    let out = env.bulkhead(&["--json", "session", "list", "acme"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    let arr = v.as_array().unwrap();
    assert_eq!(arr.len(), 2);
    // Sorted by id: generated ids start with the year, before "s-a".
    assert_eq!(arr[0]["sid"], gen.as_str());
    assert_eq!(arr[1]["sid"], "s-a");
    assert_eq!(arr[1]["events"], 9);
    assert_eq!(arr[1]["first_ts"], "2026-11-26T21:45:01.000Z");
    let last = s.read("s-a").unwrap().events.pop().unwrap();
    assert_eq!(arr[1]["last_ts"].as_str(), last.ts());
    assert_eq!(
        arr[1]["size_bytes"],
        fs::metadata(s.path("s-a")).unwrap().len()
    );
    assert_eq!(arr[0]["events"], 2);

    let out = env.bulkhead(&["session", "list", "acme"]);
    assert!(out.status.success());
    let listing = text(&out.stdout);
    assert!(listing.starts_with("SESSION"), "{listing}");
    let row = listing.lines().find(|l| l.starts_with("s-a ")).unwrap();
    assert!(
        row.contains(" 9 ") && row.contains("2026-11-26T21:45:01.000Z"),
        "{row}"
    );
    assert!(listing.contains(&gen));

    let out = env.bulkhead(&["session", "show", "acme", "s-a"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let shown = text(&out.stdout);
    for want in [
        "session s-a (workspace acme): 9 events",
        "run r1 started (model model-a via mock)",
        "user",
        "hello",
        "tool call",
        "bash [c1]",
        "ls -la",
        "tool result",
        "compaction",
        "llm: provider returned 503",
        "run r1 ended: completed; tokens in 120 out 7",
        "second line",
    ] {
        assert!(shown.contains(want), "missing {want:?} in:\n{shown}");
    }
    assert!(
        !shown.contains('\x1b'),
        "control characters reach the terminal"
    );

    let out = env.bulkhead(&["--json", "session", "show", "acme", "s-a"]);
    assert!(out.status.success());
    let lines: Vec<Value> = text(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).expect("JSONL"))
        .collect();
    assert_eq!(lines.len(), 9);
    assert_eq!(lines[0]["type"], "run_start");

    let out = env.bulkhead(&["session", "rm", "acme", "s-a"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(text(&out.stdout).contains("removed session s-a"));
    assert!(!s.path("s-a").exists());
    let out = env.bulkhead(&["--json", "session", "rm", "acme", &gen]);
    assert!(out.status.success());
    assert_eq!(
        serde_json::from_slice::<Value>(&out.stdout).unwrap()["removed"],
        gen.as_str()
    );

    // Not found: 3, with the names in the message.
    let out = env.bulkhead(&["session", "rm", "acme", "s-a"]);
    assert_eq!(out.status.code(), Some(3), "{}", text(&out.stderr));
    let out = env.bulkhead(&["session", "show", "acme", "nope"]);
    assert_eq!(out.status.code(), Some(3));
    assert!(
        text(&out.stderr).contains("session \"nope\" does not exist in workspace \"acme\""),
        "{}",
        text(&out.stderr)
    );
    for args in [
        &["session", "list", "ghost"][..],
        &["session", "show", "ghost", "s"],
        &["session", "rm", "ghost", "s"],
    ] {
        let out = env.bulkhead(args);
        assert_eq!(
            out.status.code(),
            Some(3),
            "{args:?}: {}",
            text(&out.stderr)
        );
        assert!(text(&out.stderr).contains("workspace \"ghost\" does not exist"));
    }
    // Invalid ids: 2.
    for args in [
        &["session", "show", "acme", "a.b"][..],
        &["session", "show", "acme", "../x"],
        &["session", "rm", "acme", "a/b"],
        &["session", "list", "Bad!"],
        &["session", "show", "ghost", "a.b"],
    ] {
        let out = env.bulkhead(args);
        assert_eq!(
            out.status.code(),
            Some(2),
            "{args:?}: {}",
            text(&out.stderr)
        );
        assert!(
            text(&out.stderr).contains("invalid"),
            "{}",
            text(&out.stderr)
        );
    }
    let out = env.bulkhead(&["--json", "session", "show", "acme", "nope"]);
    let err: Value = serde_json::from_slice(&out.stderr).unwrap();
    assert_eq!(err["exit_code"], 3);

    let out = env.bulkhead(&["session", "--help"]);
    assert!(text(&out.stdout).contains("list") && text(&out.stdout).contains("rm"));
    let out = env.bulkhead(&["--help"]);
    assert!(
        text(&out.stdout).contains("8    session in use by another run"),
        "{}",
        text(&out.stdout)
    );
}

#[test]
fn subscribers_receive_committed_events_in_order() {
    let (env, w) = setup("acme");
    let other = platform(&env)
        .create_workspace("other", WorkspaceConfig::default())
        .unwrap();
    let s = w.sessions();
    let rx = s.subscribe();
    let rx2 = w.sessions().subscribe();
    let everything = sessions::subscribe_all();
    assert_eq!(s.subscriber_count(), 2);

    let sid = sessions::generate_session_id();
    let mut h = s.create(Some(&sid), LockMode::FailFast).unwrap();
    h.push(Event::run_start("r1", None)).unwrap();
    h.push(Event::user_message("first").with_run_id("r1"))
        .unwrap();
    assert_eq!(
        rx.try_recv().unwrap_err(),
        TryRecvError::Empty,
        "before commit"
    );
    h.commit().unwrap();
    h.append_now(Event::assistant_message("second").with_run_id("r1"))
        .unwrap();
    h.push(Event::user_message("discarded")).unwrap();
    assert_eq!(h.discard(), 1);
    h.commit().unwrap();

    let on_disk = s.read(&sid).unwrap().events;
    assert_eq!(on_disk.len(), 3);
    for r in [&rx, &rx2] {
        let got: Vec<_> = r.try_iter().collect();
        assert_eq!(got.len(), 3);
        for (n, e) in got.iter().zip(&on_disk) {
            assert_eq!(n.workspace, "acme");
            assert_eq!(n.sid, sid);
            assert_eq!(&n.event, e, "delivered as written (ts filled in)");
        }
    }
    let mine: Vec<_> = everything.try_iter().filter(|n| n.sid == sid).collect();
    assert_eq!(mine.len(), 3);

    // Another workspace: not for this workspace's subscribers, but for subscribe_all.
    let mut o = other
        .sessions()
        .create(Some(&sid), LockMode::FailFast)
        .unwrap();
    o.append_now(Event::user_message("elsewhere")).unwrap();
    assert_eq!(rx.try_recv().unwrap_err(), TryRecvError::Empty);
    let got: Vec<_> = everything.try_iter().filter(|n| n.sid == sid).collect();
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].workspace, "other");

    // A dropped receiver is cleaned up at the next delivery; the others go on.
    drop(rx2);
    h.append_now(Event::run_end("r1", Usage::default(), "completed"))
        .unwrap();
    assert_eq!(s.subscriber_count(), 1);
    assert!(matches!(rx.try_recv().unwrap().event, Event::RunEnd { .. }));

    // Commits from several threads arrive in commit order.
    drop(h);
    std::thread::scope(|sc| {
        for i in 0..3 {
            let s = &s;
            let sid = &sid;
            sc.spawn(move || {
                for k in 0..5 {
                    let mut h = s.open(sid, LockMode::Wait).unwrap();
                    h.append_now(Event::user_message(format!("t{i} {k}")))
                        .unwrap();
                }
            });
        }
    });
    let got: Vec<Event> = rx.try_iter().map(|n| n.event).collect();
    let on_disk = s.read(&sid).unwrap().events;
    assert_eq!(got, on_disk[on_disk.len() - 15..]);
    drop(rx);
    drop(everything);
}

#[test]
fn line_size_is_bounded() {
    let (env, w) = setup("acme");
    let s = w.sessions();
    let mut h = s.create(Some("big"), LockMode::FailFast).unwrap();
    h.append_now(Event::user_message("small")).unwrap();
    let before = h.len_bytes();
    let e = h
        .push(Event::tool_result("c1", "x".repeat(MAX_LINE_BYTES), false))
        .unwrap_err();
    assert!(matches!(e, Error::Invalid(_)), "{e}");
    assert!(e.to_string().contains("16 MiB"), "{e}");
    assert_eq!(h.pending(), 0);
    assert_eq!(h.commit().unwrap(), 0);
    assert_eq!(fs::metadata(s.path("big")).unwrap().len(), before);
    // Just under the limit is fine.
    h.append_now(Event::tool_result(
        "c2",
        "y".repeat(MAX_LINE_BYTES - 200),
        false,
    ))
    .unwrap();
    drop(h);

    // An oversized line written by someone else is skipped on read, with what follows kept.
    let mut huge = br#"{"type":"user_message","ts":"t","text":""#.to_vec();
    huge.resize(MAX_LINE_BYTES + 1024, b'z');
    huge.extend_from_slice(b"\"}\n");
    append_raw(&s.path("big"), &huge);
    let mut h = s.open("big", LockMode::FailFast).unwrap();
    h.append_now(Event::user_message("after")).unwrap();
    drop(h);
    let t = s.read("big").unwrap();
    assert_eq!(t.skipped, 1);
    assert_eq!(t.events.len(), 3);
    assert!(matches!(&t.events[2], Event::UserMessage { text, .. } if text == "after"));
    let info = s.list().unwrap().remove(0);
    assert_eq!((info.events, info.skipped), (3, 1));
    let out = env.bulkhead(&["--json", "session", "show", "acme", "big"]);
    assert!(out.status.success());
    assert_eq!(text(&out.stdout).lines().count(), 3);
}
