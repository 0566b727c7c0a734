//! Lifecycle hook executables end to end: `bulkhead workspace hook` configures them and
//! `bulkhead run` (against the offline mock model on 127.0.0.1) fires them. A
//! `before_tool_call` veto stops a `bash` call and the model gets the refusal; a rewrite
//! changes what runs; a hook that times out fails closed; a crashing `after_tool_call` hook
//! is reported and the run goes on; `on_error` fires when every model fails.
//!
//! The hook scripts live in the test's state directory on the host (never in a sandbox).

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use bulkhead_tests::mock_llm::{Fault, MockLlm, Reply, Script, Step};
use bulkhead_tests::{sandbox_or_skip, show, text, TestEnv};
use serde_json::{json, Value};

const KEY: &str = "sk-ant-hooks-test-0123456789abcdef";

fn cmd(env: &TestEnv) -> Command {
    let mut c = env.cmd();
    c.env_clear();
    c.env("PATH", std::env::var_os("PATH").unwrap_or_default());
    c.env("ANTHROPIC_API_KEY", KEY);
    c
}

/// Writes an executable `/bin/sh` script into the test's directory (outside the state dir's
/// workspaces, so never visible in a sandbox).
fn script(env: &TestEnv, name: &str, body: &str) -> PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let dir = env.dir.path().join("hooks");
    std::fs::create_dir_all(&dir).unwrap();
    let p = dir.join(name);
    std::fs::write(&p, format!("#!/bin/sh\n{body}\n")).unwrap();
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
    p
}

fn hook_add(env: &TestEnv, ws: &str, event: &str, path: &Path, extra: &[&str]) {
    let out = cmd(env)
        .args(["workspace", "hook", ws, "add", event])
        .arg(path)
        .args(extra)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", show(&out));
}

/// `bulkhead --json run WS --model … --base-url MOCK --session s MESSAGE`.
fn run_json(env: &TestEnv, ws: &str, mock: &MockLlm, extra: &[&str]) -> Output {
    cmd(env)
        .args([
            "--json",
            "run",
            ws,
            "--model",
            "anthropic/claude-sonnet-4-5",
        ])
        .args(["--base-url", &mock.base_url(), "--session", "s"])
        .args(extra)
        .arg("do the task")
        .output()
        .unwrap()
}

fn events(out: &Output) -> Vec<Value> {
    text(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect()
}

fn hook_events(ev: &[Value]) -> Vec<&Value> {
    ev.iter().filter(|e| e["type"] == "hook").collect()
}

fn transcript(env: &TestEnv, ws: &str) -> Vec<Value> {
    let p = env
        .state()
        .join("workspaces")
        .join(ws)
        .join("sessions")
        .join("s.jsonl");
    std::fs::read_to_string(&p)
        .unwrap_or_else(|e| panic!("{}: {e}", p.display()))
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// A bash call that would create `/workspace/<name>`, then an answer quoting the result.
fn bash_then_answer(command: &str) -> Script {
    Script::new()
        .reply(Reply::tool_call("bash", json!({ "command": command })))
        .step(Step::reply(Reply::echo_tool_result("Tool said: ")).after_tool_result(true))
}

#[test]
fn a_before_tool_call_veto_stops_a_bash_call() {
    let env = TestEnv::new();
    env.create("veto");
    let seen = env.dir.path().join("veto-payload.json");
    let veto = script(
        &env,
        "veto.sh",
        &format!(
            r#"in=$(cat)
printf '%s' "$in" > '{}'
case "$in" in
  *'"tool":"bash"'*) echo '{{"decision":"veto","reason":"bash is not allowed here"}}' ;;
  *) echo '{{"decision":"allow"}}' ;;
esac"#,
            seen.display()
        ),
    );
    hook_add(&env, "veto", "before_tool_call", &veto, &[]);
    let mock = MockLlm::start(bash_then_answer("echo pwned > /workspace/vetoed.txt"));
    let out = run_json(&env, "veto", &mock, &[]);
    assert!(out.status.success(), "{}", show(&out));

    // The command never ran.
    assert!(!env.files("veto").join("vetoed.txt").exists());
    // The model got the refusal as the tool result, and the run completed.
    let refusal = "refused by policy hook";
    let reqs = mock.requests();
    assert_eq!(reqs.len(), 2, "{reqs:#?}");
    let results = reqs[1].tool_results();
    assert!(
        results
            .iter()
            .any(|r| r.contains(refusal) && r.contains("bash is not allowed here")),
        "{results:?}"
    );
    let ev = events(&out);
    let end = ev.last().unwrap();
    assert_eq!(end["type"], "run_end");
    assert_eq!(end["outcome"], "completed");
    assert!(end["response"].as_str().unwrap().contains(refusal), "{end}");
    // The decision is a `hook` event, and the veto is in the transcript.
    let veto_ev: Vec<_> = hook_events(&ev)
        .into_iter()
        .filter(|e| e["decision"] == "veto")
        .collect();
    assert_eq!(veto_ev.len(), 1, "{ev:#?}");
    assert_eq!(veto_ev[0]["event"], "before_tool_call");
    assert_eq!(veto_ev[0]["hook"], veto.display().to_string());
    assert_eq!(veto_ev[0]["reason"], "bash is not allowed here");
    let tr = transcript(&env, "veto");
    assert!(
        tr.iter().any(|e| e["type"] == "error"
            && e["kind"] == "hook"
            && e["message"].as_str().unwrap().contains(refusal)),
        "{tr:#?}"
    );
    // The payload the hook read.
    let p: Value = serde_json::from_str(&std::fs::read_to_string(&seen).unwrap()).unwrap();
    assert_eq!(p["event"], "before_tool_call");
    assert_eq!(p["workspace"], "veto");
    assert_eq!(p["session"], "s");
    assert_eq!(p["tool"], "bash");
    assert_eq!(
        p["arguments"]["command"],
        "echo pwned > /workspace/vetoed.txt"
    );
}

#[test]
fn a_hook_that_times_out_fails_closed() {
    let env = TestEnv::new();
    env.create("slow");
    let slow = script(&env, "slow.sh", "sleep 30");
    hook_add(&env, "slow", "before_tool_call", &slow, &["--timeout", "1"]);
    let mock = MockLlm::start(bash_then_answer("echo ran > /workspace/slow.txt"));
    let t0 = std::time::Instant::now();
    let out = run_json(&env, "slow", &mock, &[]);
    assert!(out.status.success(), "{}", show(&out));
    assert!(t0.elapsed() < std::time::Duration::from_secs(20));
    assert!(!env.files("slow").join("slow.txt").exists());
    let results = mock.requests()[1].tool_results();
    assert!(
        results
            .iter()
            .any(|r| r.contains("refused by policy hook") && r.contains("timed out")),
        "{results:?}"
    );
    let ev = events(&out);
    let failed: Vec<_> = hook_events(&ev)
        .into_iter()
        .filter(|e| e["decision"] == "failed")
        .collect();
    assert_eq!(failed.len(), 1, "{ev:#?}");
    assert!(failed[0]["reason"].as_str().unwrap().contains("timed out"));
}

#[test]
fn a_rewrite_changes_the_command_that_runs() {
    if !sandbox_or_skip("a_rewrite_changes_the_command_that_runs") {
        return;
    }
    let env = TestEnv::new();
    env.create("rw");
    let rw = script(
        &env,
        "rewrite.sh",
        r#"cat >/dev/null
echo '{"decision":"rewrite","arguments":{"command":"echo safe > /workspace/rewritten.txt && echo rewritten-ran"}}'"#,
    );
    hook_add(&env, "rw", "before_tool_call", &rw, &[]);
    let mock = MockLlm::start(bash_then_answer("echo original > /workspace/original.txt"));
    let out = run_json(&env, "rw", &mock, &[]);
    assert!(out.status.success(), "{}", show(&out));
    assert!(!env.files("rw").join("original.txt").exists());
    assert_eq!(
        std::fs::read_to_string(env.files("rw").join("rewritten.txt")).unwrap(),
        "safe\n"
    );
    let ev = events(&out);
    assert!(hook_events(&ev).iter().any(|e| e["decision"] == "rewrite"));
    // The tool_call event shows what ran.
    let call = ev.iter().find(|e| e["type"] == "tool_call").unwrap();
    assert!(call["arguments"]["command"]
        .as_str()
        .unwrap()
        .contains("rewritten.txt"));
    let end = ev.last().unwrap();
    assert!(end["response"].as_str().unwrap().contains("rewritten-ran"));
}

#[test]
fn a_crashing_after_tool_call_hook_is_reported_and_the_run_goes_on() {
    if !sandbox_or_skip("a_crashing_after_tool_call_hook_is_reported_and_the_run_goes_on") {
        return;
    }
    let env = TestEnv::new();
    env.create("crash");
    let crash = script(
        &env,
        "crash.sh",
        "cat >/dev/null; echo 'hook exploded' >&2; exit 7",
    );
    hook_add(&env, "crash", "after_tool_call", &crash, &[]);
    let mock = MockLlm::start(bash_then_answer(
        "echo kept > /workspace/kept.txt && echo wrote-it",
    ));
    let out = run_json(&env, "crash", &mock, &[]);
    assert!(out.status.success(), "{}", show(&out));
    assert_eq!(
        std::fs::read_to_string(env.files("crash").join("kept.txt")).unwrap(),
        "kept\n"
    );
    let ev = events(&out);
    let failed: Vec<_> = hook_events(&ev)
        .into_iter()
        .filter(|e| e["decision"] == "failed")
        .collect();
    assert_eq!(failed.len(), 1, "{ev:#?}");
    assert_eq!(failed[0]["event"], "after_tool_call");
    let reason = failed[0]["reason"].as_str().unwrap();
    assert!(
        reason.contains("exit status: 7") && reason.contains("hook exploded"),
        "{reason}"
    );
    let end = ev.last().unwrap();
    assert_eq!(end["outcome"], "completed");
    assert!(end["response"].as_str().unwrap().contains("wrote-it"));
}

#[test]
fn on_error_fires_when_every_model_fails() {
    let env = TestEnv::new();
    env.create("down");
    let got = env.dir.path().join("on-error.json");
    let h = script(
        &env,
        "on-error.sh",
        &format!("cat > '{}'; env > '{}.env'", got.display(), got.display()),
    );
    hook_add(&env, "down", "on_error", &h, &[]);
    let mock = MockLlm::start(Script::new().step(Step::fault(Fault::ServerError).forever()));
    let out = run_json(&env, "down", &mock, &["--retries", "0"]);
    assert_eq!(out.status.code(), Some(9), "{}", show(&out));
    let p: Value = serde_json::from_str(
        &std::fs::read_to_string(&got).unwrap_or_else(|e| panic!("on_error not fired: {e}")),
    )
    .unwrap();
    assert_eq!(p["event"], "on_error");
    assert_eq!(p["workspace"], "down");
    assert_eq!(p["kind"], "llm");
    assert!(
        p["message"]
            .as_str()
            .unwrap()
            .starts_with("all models failed"),
        "{p}"
    );
    // No secret in the payload, none in the hook's environment.
    assert!(!p.to_string().contains(KEY));
    let hook_env = std::fs::read_to_string(format!("{}.env", got.display())).unwrap();
    assert!(!hook_env.contains(KEY), "{hook_env}");
    assert!(!hook_env.contains("ANTHROPIC"), "{hook_env}");
}

#[test]
fn the_hook_cli_validates_and_lists() {
    let env = TestEnv::new();
    env.create("cli");
    let ok = script(&env, "ok.sh", "true");
    let bad = |args: &[&str], want: &str| {
        let out = cmd(&env)
            .args(["workspace", "hook", "cli"])
            .args(args)
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(2), "{args:?}: {}", show(&out));
        assert!(text(&out.stderr).contains(want), "{args:?}: {}", show(&out));
    };
    let okp = ok.display().to_string();
    bad(&["add", "before_tool", &okp], "unknown hook event");
    bad(&["add", "on_error", "hooks/ok.sh"], "not absolute");
    bad(&["add", "on_error", "/nonexistent/hook"], "No such file");
    let dir = env.dir.path().display().to_string();
    bad(&["add", "on_error", &dir], "not a regular file");
    let plain = env.dir.path().join("plain.sh");
    std::fs::write(&plain, "#!/bin/sh\n").unwrap();
    bad(
        &["add", "on_error", &plain.display().to_string()],
        "not executable",
    );
    bad(&["add", "on_error", &okp, "--timeout", "0"], "timeout");
    bad(&["rm", "on_error", &okp], "no on_error hook");

    hook_add(
        &env,
        "cli",
        "on_error",
        &ok,
        &["--priority", "-3", "--timeout", "9"],
    );
    hook_add(&env, "cli", "session_end", &ok, &[]);
    let out = cmd(&env)
        .args(["--json", "workspace", "hook", "cli", "list"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", show(&out));
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        v["hooks"],
        json!([
            {"event": "session_end", "path": okp, "priority": 0},
            {"event": "on_error", "path": okp, "timeout_secs": 9, "priority": -3},
        ])
    );
    let out = cmd(&env)
        .args(["workspace", "hook", "cli", "rm", "on_error", &okp])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", show(&out));
    let out = cmd(&env)
        .args(["workspace", "hook", "cli", "list"])
        .output()
        .unwrap();
    let listed = text(&out.stdout);
    assert!(
        listed.contains("session_end") && !listed.contains("on_error"),
        "{listed}"
    );
}
