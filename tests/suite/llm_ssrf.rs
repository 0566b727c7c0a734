//! Model calls behind the SSRF guard, through the real CLI: a workspace whose base URL points
//! at the offline mock model on 127.0.0.1 is refused before any connection unless the
//! operator's `config.toml` sets `[llm] allow_loopback = true` (the mock then serves the
//! run). Neither the workspace's settings, `--base-url`, nor the environment can grant it.
//! The replies are plain text, so no sandbox is started and these tests run on any host.

use std::process::{Command, Output};

use bulkhead_tests::mock_llm::{MockLlm, Reply, Script, Step};
use bulkhead_tests::{show, text, TestEnv};
use serde_json::Value;

/// `bulkhead run` exit code when every model of the chain failed (docs/agent-runs.md, "Exit codes").
const ALL_MODELS_FAILED: i32 = 9;

const KEY: &str = "sk-ant-ssrf-test-0123456789abcdef";

/// A `bulkhead` command with only PATH, the key and `vars` in its environment.
fn cmd(env: &TestEnv, vars: &[(&str, &str)]) -> Command {
    let mut c = env.cmd();
    c.env_clear();
    c.env("PATH", std::env::var_os("PATH").unwrap_or_default());
    c.env("ANTHROPIC_API_KEY", KEY);
    for (k, v) in vars {
        c.env(k, v);
    }
    c
}

/// The operator's config.toml, written before the first `bulkhead` command (so the test
/// harness's own, which allows loopback, is not used).
fn write_config(env: &TestEnv, body: &str) {
    std::fs::create_dir_all(env.state()).unwrap();
    std::fs::write(env.state().join("config.toml"), body).unwrap();
}

/// A workspace whose stored base URL is the mock's.
fn create_workspace(env: &TestEnv, id: &str, base_url: &str) {
    let out = cmd(env, &[])
        .args([
            "workspace",
            "create",
            id,
            "--model",
            "anthropic/claude-sonnet-4-5",
            "--base-url",
            base_url,
        ])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", show(&out));
}

fn mock() -> MockLlm {
    MockLlm::start(Script::new().step(Step::reply(Reply::text("hello from the mock")).forever()))
}

fn assert_refused(out: &Output, base_url: &str) {
    assert_eq!(out.status.code(), Some(ALL_MODELS_FAILED), "{}", show(out));
    let err = text(&out.stderr);
    for needle in [
        "all models failed".to_string(),
        format!("anthropic/claude-sonnet-4-5 key #1 ($ANTHROPIC_API_KEY): blocked: refused {base_url}/v1/messages"),
        "127.0.0.1 (loopback address)".to_string(),
        "which this host's operator does not allow".to_string(),
        "set `[llm] allow_loopback = true` in config.toml".to_string(),
        "no request was sent".to_string(),
    ] {
        assert!(err.contains(&needle), "missing {needle:?}\n{}", show(out));
    }
    assert!(!err.contains(KEY), "the key leaked: {}", show(out));
}

#[test]
fn a_loopback_base_url_is_refused_unless_the_operator_allows_loopback() {
    let env = TestEnv::new();
    write_config(&env, "[llm]\nallow_loopback = false\n");
    let mock = mock();
    let base = mock.base_url();
    create_workspace(&env, "acme", &base);

    // The workspace's base URL: refused, nothing reaches the mock. The environment cannot
    // widen the guard.
    let out = cmd(&env, &[("BULKHEAD_LLM_ALLOW_LOOPBACK", "1")])
        .args(["run", "acme", "--session", "s1", "--retries", "3", "hi"])
        .output()
        .unwrap();
    assert_refused(&out, &base);
    // Blocked is not retried: one attempt, although three retries were allowed.
    assert!(
        !text(&out.stderr).contains("2. anthropic"),
        "{}",
        show(&out)
    );

    // `--base-url` is checked the same way; `--json` reports the attempt's reason.
    let out = cmd(&env, &[])
        .args(["--json", "run", "acme", "--base-url", &base, "hi"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(ALL_MODELS_FAILED), "{}", show(&out));
    let events: Vec<Value> = text(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).expect("JSON event"))
        .collect();
    let end = events.last().expect("events");
    assert_eq!(end["type"], "run_end", "{}", show(&out));
    assert_eq!(end["outcome"], "failed", "{}", show(&out));
    assert_eq!(end["attempts"], 1, "{}", show(&out));
    assert!(
        end["error"]
            .as_str()
            .is_some_and(|m| m.contains("blocked: refused") && m.contains("allow_loopback")),
        "{}",
        show(&out)
    );

    // The transcript records the refusal.
    let transcript = std::fs::read_to_string(
        env.state()
            .join("workspaces/acme/sessions")
            .join("s1.jsonl"),
    )
    .unwrap();
    assert!(
        transcript.lines().any(|l| {
            let e: Value = serde_json::from_str(l).unwrap();
            e["type"] == "error"
                && e["message"]
                    .as_str()
                    .is_some_and(|m| m.contains("blocked: refused"))
        }),
        "{transcript}"
    );
    assert!(!transcript.contains(KEY));

    assert_eq!(mock.request_count(), 0, "a refused run reached the mock");

    // The operator allows loopback: the same workspace now runs against the mock.
    write_config(&env, "[llm]\nallow_loopback = true\n");
    let out = cmd(&env, &[]).args(["run", "acme", "hi"]).output().unwrap();
    assert!(out.status.success(), "{}", show(&out));
    assert_eq!(text(&out.stdout).trim(), "hello from the mock");
    assert_eq!(mock.request_count(), 1);
}

#[test]
fn a_hostname_resolving_to_loopback_is_refused_and_private_does_not_cover_loopback() {
    let env = TestEnv::new();
    // Private ranges allowed, loopback not: `localhost` resolves to loopback and is refused
    // after resolution, before any connection.
    write_config(&env, "[llm]\nallow_private = true\n");
    let mock = mock();
    let base = format!("http://localhost:{}", mock.addr().port());
    create_workspace(&env, "named", &base);
    let out = cmd(&env, &[])
        .args(["run", "named", "hi"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(ALL_MODELS_FAILED), "{}", show(&out));
    let err = text(&out.stderr);
    assert!(
        err.contains(&format!(
            "blocked: refused {base}/v1/messages: localhost resolves to"
        )) && err.contains("(loopback address)")
            && err.contains("[llm] allow_loopback = true"),
        "{}",
        show(&out)
    );
    assert_eq!(mock.request_count(), 0, "a refused run reached the mock");
}
