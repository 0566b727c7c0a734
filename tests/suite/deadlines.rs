//! Deadlines everywhere: nothing a worker, a model or a hook does holds a run past its time.
//!
//! - A worker that completes the handshake and then never answers (`bulkhead-stub-worker`,
//!   put beside a copy of the launcher): the tool call fails at its deadline (its timeout
//!   plus the grace), the next call gets a fresh sandbox, the run ends at its `timeout_secs`,
//!   and afterwards the same `serve` process runs the same session with the real worker and
//!   shuts down at once (no request left in flight). `bulkhead exec --timeout` fails the same
//!   way.
//! - Through the library: a request capped by `Sandbox::set_deadline_cap` fails at the cap
//!   and kills the worker; a worker that ignores the request to exit is stopped after
//!   `STOP_GRACE`.
//! - A model call that hangs (a delayed reply, a stalled stream) is cut at `run --timeout`.
//! - A hook executable that sleeps is killed at the run's deadline.
//!
//! Everything talks to the offline mock model on 127.0.0.1 only.

use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::{Duration, Instant};

use bulkhead_tests::mock_llm::{Fault, MockLlm, Reply, Script, Step};
use bulkhead_tests::{bin, sandbox_or_skip, show, text, TestEnv};
use serde_json::{json, Value};

use super::rpc::{cmd, Server, MODEL};

/// The JSON-RPC error code of a run that timed out.
const TIMED_OUT: i64 = -32007;

fn copy_exe(from: &Path, to: &Path) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::copy(from, to)
        .unwrap_or_else(|e| panic!("{} -> {}: {e}", from.display(), to.display()));
    std::fs::set_permissions(to, std::fs::Permissions::from_mode(0o755)).unwrap();
}

/// A directory holding a copy of `bulkhead-launch` with the stub worker beside it as
/// `bulkhead-worker` (the launcher runs the worker next to its own executable), and the real
/// worker as `real-worker` for [`use_real_worker`]. Returns the launcher's path.
fn stub_launcher(env: &TestEnv) -> PathBuf {
    let dir = env.dir.path().join("launch");
    std::fs::create_dir_all(&dir).unwrap();
    // Readable and searchable by the sandbox's user (the launcher opens the worker first,
    // but keep the directory like an install's).
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(env.dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    copy_exe(&bin("bulkhead-launch"), &dir.join("bulkhead-launch"));
    copy_exe(
        Path::new(env!("CARGO_BIN_EXE_bulkhead-stub-worker")),
        &dir.join("bulkhead-worker"),
    );
    copy_exe(&bin("bulkhead-worker"), &dir.join("real-worker"));
    dir.join("bulkhead-launch")
}

/// Puts the real worker in the stub's place (atomically: the launcher opens the worker
/// afresh for every sandbox).
fn use_real_worker(launcher: &Path) {
    let dir = launcher.parent().unwrap();
    std::fs::rename(dir.join("real-worker"), dir.join("bulkhead-worker")).unwrap();
}

fn run_events(notes: &[Value], kind: &str) -> Vec<Value> {
    notes
        .iter()
        .filter(|n| n["method"] == "run.event" && n["params"]["event"]["type"] == kind)
        .map(|n| n["params"]["event"].clone())
        .collect()
}

#[test]
fn a_stalled_worker_fails_its_tool_call_then_the_run_at_its_timeout_and_frees_the_server() {
    if !sandbox_or_skip("deadlines a_stalled_worker_fails_its_tool_call_then_the_run") {
        return;
    }
    let env = TestEnv::new();
    env.create("stall");
    let launcher = stub_launcher(&env);
    // Two bash calls: the first with a 1 s timeout (its reply is due 1 + 5 s later), the
    // second with the default timeout, capped by what is left of the run's 20 s.
    let mock = MockLlm::start(
        Script::new()
            .reply(Reply::tool_call(
                "bash",
                json!({"command": "echo first", "timeout_secs": 1}),
            ))
            .step(
                Step::reply(Reply::tool_call("bash", json!({"command": "echo second"})))
                    .after_tool_result(true),
            ),
    );
    let mut c = cmd(&env);
    c.env("BULKHEAD_LAUNCH", &launcher);
    // A request still in flight at end of input would hold the shutdown for 30 s.
    let mut s = Server::start_with(c, &["--shutdown-grace", "30"]);
    let t0 = Instant::now();
    let id = s.request(
        "run",
        json!({"workspace": "stall", "message": "run two commands", "model": MODEL,
               "base_url": mock.base_url(), "session": "s", "timeout_secs": 20, "retries": 0}),
    );
    let (r, notes) = s.response(&json!(id), Duration::from_secs(60));
    let took = t0.elapsed();

    // The run ended at its timeout (not before, not much after), as a timeout.
    assert_eq!(r["error"]["code"], TIMED_OUT, "{r}");
    assert_eq!(r["error"]["data"]["exit_code"], 124, "{r}");
    assert!(
        r["error"]["message"]
            .as_str()
            .unwrap()
            .contains("timed out after 20s"),
        "{r}"
    );
    assert!(
        took >= Duration::from_secs(20) && took < Duration::from_secs(26),
        "the run took {took:?}"
    );

    // The first call failed at its deadline with a clear error, and the model saw it.
    let results = run_events(&notes, "tool_result");
    assert_eq!(results.len(), 1, "{results:#?}");
    let first = &results[0];
    assert_eq!(first["is_error"], true, "{first}");
    let out = first["output"].as_str().unwrap();
    assert!(
        out.contains("the sandbox did not answer within 6s; it was stopped")
            && out.contains("a new sandbox will be started for the next call"),
        "{out}"
    );
    // Its duration includes starting the sandbox (well under a second unless the host is
    // very busy).
    let ms = first["duration_ms"].as_u64().unwrap();
    assert!((6000..12_000).contains(&ms), "the first call took {ms} ms");
    let reqs = mock.requests();
    assert_eq!(reqs.len(), 2, "{reqs:#?}");
    assert!(
        reqs[1]
            .tool_results()
            .iter()
            .any(|t| t.contains("did not answer within 6s")),
        "{:?}",
        reqs[1].tool_results()
    );
    // The second call had a fresh, live sandbox (a stopped one fails at once): it waited
    // until the run's deadline.
    assert_eq!(run_events(&notes, "tool_call").len(), 2);
    let end = run_events(&notes, "run_end");
    assert_eq!(end[0]["outcome"], "timed_out", "{end:?}");

    // The transcript records it, and no sandbox is left.
    let shown = s.call("session.show", json!({"workspace": "stall", "sid": "s"}));
    let events = shown["events"].as_array().unwrap();
    assert!(
        events.iter().any(|e| e["type"] == "tool_result"
            && e["is_error"] == true
            && e["output"]
                .as_str()
                .is_some_and(|o| o.contains("did not answer within 6s"))),
        "{shown:#}"
    );
    assert!(
        events
            .iter()
            .any(|e| e["type"] == "error" && e["kind"] == "timeout"),
        "{shown:#}"
    );
    assert_eq!(events.last().unwrap()["type"], "run_end");
    assert_eq!(events.last().unwrap()["outcome"], "timed_out");
    let run_dir = env.state().join("workspaces/stall/run");
    assert_eq!(
        std::fs::read_dir(&run_dir).map_or(0, |d| d.count()),
        0,
        "a sandbox of the timed-out run is still there"
    );

    // Same server, same session, the real worker: the session lock was released.
    use_real_worker(&launcher);
    mock.push(Reply::tool_call(
        "bash",
        json!({"command": "echo real > /workspace/real.txt && cat /workspace/real.txt"}),
    ));
    mock.push(Step::reply(Reply::echo_tool_result("Tool said: ")).after_tool_result(true));
    let id = s.request(
        "run",
        json!({"workspace": "stall", "message": "again", "model": MODEL,
               "base_url": mock.base_url(), "session": "s", "timeout_secs": 60}),
    );
    let (r, _) = s.response(&json!(id), Duration::from_secs(90));
    assert_eq!(r["result"]["outcome"], "completed", "{r}");
    assert_eq!(r["result"]["session"], "s");
    assert_eq!(
        r["result"]["text"].as_str().unwrap().trim_end(),
        "Tool said: real",
        "{r}"
    );
    assert_eq!(
        std::fs::read_to_string(env.files("stall").join("real.txt")).unwrap(),
        "real\n"
    );

    // Nothing is left in flight: end of input shuts down at once, not after the 30 s grace.
    let t0 = Instant::now();
    assert_eq!(s.close(Duration::from_secs(40)), 0);
    assert!(
        t0.elapsed() < Duration::from_secs(5),
        "shutdown waited {:?}: a request was still in flight",
        t0.elapsed()
    );
}

/// `bulkhead --json run WS … --session s --timeout SECS EXTRA… MESSAGE`, timed.
fn run_timed(
    env: &TestEnv,
    ws: &str,
    mock: &MockLlm,
    secs: &str,
    extra: &[&str],
) -> (Output, Duration) {
    let t0 = Instant::now();
    let out = cmd(env)
        .args(["--json", "run", ws, "--model", MODEL])
        .args(["--base-url", &mock.base_url(), "--session", "s"])
        .args(["--timeout", secs, "--retries", "0"])
        .args(extra)
        .arg("do the task")
        .output()
        .unwrap();
    (out, t0.elapsed())
}

fn transcript(env: &TestEnv, ws: &str) -> Vec<Value> {
    let p = env
        .state()
        .join("workspaces")
        .join(ws)
        .join("sessions/s.jsonl");
    std::fs::read_to_string(&p)
        .unwrap_or_else(|e| panic!("{}: {e}", p.display()))
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// The last run of the transcript timed out and said so.
fn assert_recorded_timeout(env: &TestEnv, ws: &str) {
    let t = transcript(env, ws);
    let last = t.last().unwrap();
    assert_eq!(
        (last["type"].as_str(), last["outcome"].as_str()),
        (Some("run_end"), Some("timed_out")),
        "{t:#?}"
    );
    assert!(
        t.iter().any(|e| e["type"] == "error"
            && e["kind"] == "timeout"
            && e["message"]
                .as_str()
                .is_some_and(|m| m.contains("timed out after 3s"))),
        "{t:#?}"
    );
}

#[test]
fn a_model_call_that_hangs_is_cut_at_the_run_timeout() {
    let env = TestEnv::new();
    env.create("hang");
    // A whole reply that comes after 30 s, then a stream that stalls after its first event.
    let mock = MockLlm::start(
        Script::new()
            .step(Step::reply(Reply::text("too late")).delay_ms(30_000))
            .step(Step::fault(Fault::Stall {
                after_events: 1,
                max_secs: Some(60),
                reply: None,
            })),
    );
    for extra in [&["--no-stream"][..], &[][..]] {
        let (out, took) = run_timed(&env, "hang", &mock, "3", extra);
        assert_eq!(out.status.code(), Some(124), "{extra:?}: {}", show(&out));
        assert!(
            text(&out.stderr).contains("the run timed out after 3s"),
            "{extra:?}: {}",
            show(&out)
        );
        assert!(
            took >= Duration::from_secs(3) && took < Duration::from_secs(9),
            "{extra:?}: took {took:?}"
        );
        assert_recorded_timeout(&env, "hang");
    }
    let reqs = mock.requests();
    assert_eq!(reqs.len(), 2, "{reqs:#?}");
    assert!(!reqs[0].stream && reqs[1].stream);
    // The session is free again: a run that gets its answer completes.
    mock.push(Reply::text("on time"));
    let (out, _) = run_timed(&env, "hang", &mock, "30", &[]);
    assert!(out.status.success(), "{}", show(&out));
}

#[test]
fn a_hook_that_sleeps_is_killed_at_the_run_deadline() {
    use std::os::unix::fs::PermissionsExt;
    let env = TestEnv::new();
    env.create("hooked");
    // The hook's own timeout (120 s) is far beyond the run's (3 s).
    let pid_file = env.dir.path().join("hook.pid");
    let hook = env.dir.path().join("slow-hook.sh");
    std::fs::write(
        &hook,
        format!(
            "#!/bin/sh\necho $$ > {}\nexec sleep 120\n",
            pid_file.display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&hook, std::fs::Permissions::from_mode(0o755)).unwrap();
    let out = cmd(&env)
        .args(["workspace", "hook", "hooked", "add", "before_tool_call"])
        .arg(&hook)
        .args(["--timeout", "120"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", show(&out));
    let mock = MockLlm::start(
        Script::new()
            .reply(Reply::tool_call(
                "bash",
                json!({"command": "echo ran > /workspace/ran.txt"}),
            ))
            .step(Step::reply(Reply::text("done")).after_tool_result(true)),
    );
    let (out, took) = run_timed(&env, "hooked", &mock, "3", &[]);
    assert_eq!(out.status.code(), Some(124), "{}", show(&out));
    assert!(
        took >= Duration::from_secs(3) && took < Duration::from_secs(9),
        "took {took:?}"
    );
    // The hook failed closed (the call never ran) because it was stopped at the deadline.
    assert!(!env.files("hooked").join("ran.txt").exists());
    let events: Vec<Value> = text(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let failed: Vec<&Value> = events
        .iter()
        .filter(|e| e["type"] == "hook" && e["decision"] == "failed")
        .collect();
    assert_eq!(failed.len(), 1, "{events:#?}");
    assert!(
        failed[0]["reason"]
            .as_str()
            .unwrap()
            .contains("stopped at the run's time limit"),
        "{}",
        failed[0]
    );
    // And it is gone, not left sleeping.
    let pid = std::fs::read_to_string(&pid_file).unwrap();
    let pid = pid.trim();
    assert!(
        !Path::new(&format!("/proc/{pid}")).exists(),
        "the hook (pid {pid}) is still running"
    );
    assert_recorded_timeout(&env, "hooked");
}

#[test]
fn exec_with_a_timeout_fails_when_the_worker_never_answers() {
    if !sandbox_or_skip("deadlines exec_with_a_timeout_fails_when_the_worker_never_answers") {
        return;
    }
    let env = TestEnv::new();
    env.create("ex");
    let launcher = stub_launcher(&env);
    let t0 = Instant::now();
    let out = cmd(&env)
        .env("BULKHEAD_LAUNCH", &launcher)
        .args(["exec", "ex", "--timeout", "1", "--", "true"])
        .output()
        .unwrap();
    let took = t0.elapsed();
    assert_eq!(out.status.code(), Some(1), "{}", show(&out));
    assert!(
        text(&out.stderr).contains("the sandbox did not answer within 6s; it was stopped"),
        "{}",
        show(&out)
    );
    assert!(
        took >= Duration::from_secs(6) && took < Duration::from_secs(12),
        "took {took:?}"
    );
    let run_dir = env.state().join("workspaces/ex/run");
    assert_eq!(std::fs::read_dir(&run_dir).map_or(0, |d| d.count()), 0);
    // The same command with the real worker answers at once.
    use_real_worker(&launcher);
    let out = cmd(&env)
        .env("BULKHEAD_LAUNCH", &launcher)
        .args(["exec", "ex", "--timeout", "1", "--", "true"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", show(&out));
}

/// A workspace's launch spec, through the library, with the stub launcher.
fn stub_sandbox_spec(env: &TestEnv, id: &str) -> (PathBuf, bulkhead_shared::LaunchSpec) {
    use bulkhead::{LimitsConfig, Platform, PlatformConfig, WorkspaceConfig};
    let launcher = stub_launcher(env);
    let platform = Platform::open(PlatformConfig {
        state_dir: env.state(),
        launcher: Some(launcher.clone()),
    })
    .expect("open platform");
    let ws = platform
        .create_workspace(id, WorkspaceConfig::default())
        .expect("create workspace");
    let spec = ws
        .launch_spec(&LimitsConfig::default())
        .expect("launch spec");
    (launcher, spec)
}

#[test]
fn the_library_sandbox_caps_requests_and_bounds_its_stop() {
    use bulkhead::Sandbox;
    use bulkhead_shared::Request;
    if !sandbox_or_skip("deadlines the_library_sandbox_caps_requests_and_bounds_its_stop") {
        return;
    }
    let env = TestEnv::new();
    let (launcher, spec) = stub_sandbox_spec(&env, "lib");

    // A file request (own deadline 30 s) capped at 1 s from now.
    let mut sb = Sandbox::start(&launcher, &spec).expect("start the stub sandbox");
    let worker = sb.info().worker_pid;
    let t0 = Instant::now();
    sb.set_deadline_cap(Some(t0 + Duration::from_secs(1)));
    let e = sb
        .request(Request::Ls { path: ".".into() }, &mut |_, _| {})
        .unwrap_err();
    let took = t0.elapsed();
    assert!(matches!(e, bulkhead::Error::SandboxTimedOut(_)), "{e:?}");
    assert_eq!(
        e.to_string(),
        "the sandbox did not answer within 1s; it was stopped"
    );
    assert!(
        took >= Duration::from_secs(1) && took < Duration::from_secs(4),
        "took {took:?}"
    );
    assert!(
        !Path::new(&format!("/proc/{worker}")).exists(),
        "the worker (pid {worker}) outlived its deadline"
    );
    // The sandbox is stopped: the next request fails at once.
    let t0 = Instant::now();
    let e = sb.request(Request::Ping, &mut |_, _| {}).unwrap_err();
    assert!(matches!(e, bulkhead::Error::SandboxGone(_)), "{e:?}");
    assert!(t0.elapsed() < Duration::from_secs(1));

    // A worker that ignores the request to exit is stopped after the grace.
    std::fs::write(env.files("lib").join("stub-ignores-eof"), "").unwrap();
    let sb = Sandbox::start(&launcher, &spec).expect("start the stub sandbox");
    let worker = sb.info().worker_pid;
    let t0 = Instant::now();
    sb.shutdown().expect("shutdown");
    let took = t0.elapsed();
    assert!(
        took >= bulkhead::sandbox::STOP_GRACE && took < Duration::from_secs(10),
        "shutdown took {took:?}"
    );
    assert!(
        !Path::new(&format!("/proc/{worker}")).exists(),
        "the worker (pid {worker}) outlived the shutdown"
    );
}

#[test]
fn a_request_without_a_deadline_is_not_cut_by_an_earlier_ones_timeout() {
    use bulkhead::Sandbox;
    use bulkhead_shared::{Command as WireCommand, ExecRequest, Request};
    if !sandbox_or_skip("deadlines a_request_without_a_deadline_is_not_cut_by_an_earlier_ones") {
        return;
    }
    let env = TestEnv::new();
    let (_, spec) = stub_sandbox_spec(&env, "mixed");
    // The real worker this time.
    let mut sb = Sandbox::start(&bin("bulkhead-launch"), &spec).expect("start a sandbox");
    sb.set_deadline_cap(Some(Instant::now() + Duration::from_millis(300)));
    sb.request(Request::Ping, &mut |_, _| {})
        .expect("ping")
        .expect("pong");
    sb.set_deadline_cap(None);
    // An exec without a timeout, longer than the earlier request's deadline left.
    let out = sb
        .exec(
            ExecRequest {
                command: WireCommand::Argv(vec!["sleep".into(), "1".into()]),
                cwd: "/workspace".into(),
                env: Vec::new(),
                stdin: Vec::new(),
                timeout_ms: 0,
                output_cap: 1024,
                kill_stragglers: true,
            },
            &mut |_, _| {},
        )
        .expect("an exec without a deadline waits for its command");
    assert!(!out.result.timed_out, "{:?}", out.result);
    sb.shutdown().expect("shutdown");
}
