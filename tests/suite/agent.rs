//! `bulkhead run` end to end: the real CLI, the real sandbox, and the offline mock model
//! over HTTP on 127.0.0.1 (never a real provider). Every provider format runs a multi-step
//! tool session whose effects land in the workspace's files; faults produce the right retry,
//! key rotation, fallback or compaction, visible in the events and the transcript; a canary
//! API key is found in no sandbox environment, request body, transcript or log line.
//!
//! The `bulkhead` child gets a cleared environment (PATH plus what each test sets), so no
//! key, base URL or proxy of the machine running the tests is ever used.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use bulkhead_tests::mock_llm::{Api, Fault, MockLlm, Reply, Script, Step};
use bulkhead_tests::{sandbox_or_skip, show, text, TestEnv};
use serde_json::{json, Value};

/// A `bulkhead` command against `env`'s state dir with only PATH and `vars` in its
/// environment.
fn cmd(env: &TestEnv, vars: &[(&str, &str)]) -> Command {
    let mut c = env.cmd();
    c.env_clear();
    c.env("PATH", std::env::var_os("PATH").unwrap_or_default());
    for (k, v) in vars {
        c.env(k, v);
    }
    c
}

fn run(env: &TestEnv, vars: &[(&str, &str)], args: &[&str]) -> Output {
    let mut c = cmd(env, vars);
    c.arg("run").args(args);
    c.output().expect("run bulkhead")
}

fn transcript_path(env: &TestEnv, ws: &str, sid: &str) -> PathBuf {
    env.state()
        .join("workspaces")
        .join(ws)
        .join("sessions")
        .join(format!("{sid}.jsonl"))
}

fn transcript(env: &TestEnv, ws: &str, sid: &str) -> Vec<Value> {
    let p = transcript_path(env, ws, sid);
    std::fs::read_to_string(&p)
        .unwrap_or_else(|e| panic!("{}: {e}", p.display()))
        .lines()
        .map(|l| serde_json::from_str(l).expect("transcript line is JSON"))
        .collect()
}

fn types(events: &[Value]) -> Vec<String> {
    events
        .iter()
        .map(|e| e["type"].as_str().unwrap_or("?").to_string())
        .collect()
}

/// The JSON-line events of a `--json` run.
fn json_events(out: &Output) -> Vec<Value> {
    text(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not a JSON event ({e}): {l}")))
        .collect()
}

/// Tool call, then a read of what it wrote, then an answer quoting the read.
fn write_read_answer(tag: &str) -> Script {
    Script::new()
        .reply(
            Reply::tool_call(
                "bash",
                json!({"command": format!("echo from-{tag} > /workspace/{tag}.txt && echo written")}),
            )
            .with_text("Writing the file."),
        )
        .step(
            Step::reply(Reply::tool_call(
                "read",
                json!({"path": format!("/workspace/{tag}.txt")}),
            ))
            .after_tool_result(true),
        )
        .step(Step::reply(Reply::echo_tool_result("The file says: ")).after_tool_result(true))
}

struct Format {
    tag: &'static str,
    model: &'static str,
    api: Api,
    key_var: &'static str,
    key: &'static str,
    /// `Some(var)`: the base URL goes in this variable; `None`: `--base-url`.
    base_var: Option<&'static str>,
    openai_path: bool,
    extra: &'static [&'static str],
}

#[test]
fn every_provider_format_runs_tools_in_the_sandbox() {
    if !sandbox_or_skip("every_provider_format_runs_tools_in_the_sandbox") {
        return;
    }
    let formats = [
        Format {
            tag: "anthropic",
            model: "anthropic/claude-sonnet-4-5",
            api: Api::Anthropic,
            key_var: "ANTHROPIC_API_KEY",
            key: "sk-ant-test-0123456789abcdef",
            base_var: None,
            openai_path: false,
            extra: &[],
        },
        Format {
            tag: "openai",
            model: "openai/gpt-4o",
            api: Api::OpenAi,
            key_var: "OPENAI_API_KEY",
            key: "sk-openai-test-0123456789abcdef",
            base_var: Some("OPENAI_BASE_URL"),
            openai_path: true,
            extra: &[],
        },
        Format {
            tag: "google",
            model: "google/gemini-2.5-flash",
            api: Api::Gemini,
            key_var: "GEMINI_API_KEY",
            key: "AIza-test-0123456789abcdef",
            base_var: Some("GEMINI_BASE_URL"),
            openai_path: false,
            extra: &["--json"],
        },
        Format {
            tag: "compat",
            model: "openai-compatible/local-model",
            api: Api::OpenAi,
            key_var: "OPENAI_COMPATIBLE_API_KEY",
            key: "compat-test-0123456789",
            base_var: None,
            openai_path: true,
            extra: &["--no-stream"],
        },
    ];
    let env = TestEnv::new();
    for f in &formats {
        let mock = MockLlm::start(write_read_answer(f.tag));
        let ws = format!("ws-{}", f.tag);
        env.create(&ws);
        // The tenant's instructions join the system prompt.
        std::fs::write(
            env.files(&ws).join("AGENTS.md"),
            format!("Sign every answer as agent-{}.\n", f.tag),
        )
        .unwrap();
        let base = if f.openai_path {
            mock.openai_base_url()
        } else {
            mock.base_url()
        };
        let mut vars = vec![(f.key_var, f.key)];
        if let Some(v) = f.base_var {
            vars.push((v, base.as_str()));
        }
        let mut args: Vec<&str> = Vec::new();
        args.extend_from_slice(f.extra);
        args.extend_from_slice(&[ws.as_str(), "--model", f.model, "--session", "s1"]);
        if f.base_var.is_none() {
            args.extend_from_slice(&["--base-url", base.as_str()]);
        }
        args.push("write a file, read it, tell me what it says");
        let mut c = cmd(&env, &vars);
        if args[0] == "--json" {
            c.arg("--json");
            args.remove(0);
        }
        let out = c.arg("run").args(&args).output().unwrap();
        assert!(out.status.success(), "{}: {}", f.tag, show(&out));

        // The effect is on the host, in the workspace's files.
        let on_host = std::fs::read_to_string(env.files(&ws).join(format!("{}.txt", f.tag)))
            .unwrap_or_else(|e| panic!("{}: file not written: {e}\n{}", f.tag, show(&out)));
        assert_eq!(on_host, format!("from-{}\n", f.tag));

        // The answer quotes what the read returned.
        let want = format!("The file says: from-{}", f.tag);
        if f.extra.contains(&"--json") {
            let events = json_events(&out);
            let t = types(&events);
            assert_eq!(t.first().map(String::as_str), Some("run_start"), "{t:?}");
            for k in [
                "model_attempt",
                "text_delta",
                "tool_call",
                "tool_result",
                "run_end",
            ] {
                assert!(t.iter().any(|x| x == k), "{}: no {k} in {t:?}", f.tag);
            }
            let end = events.last().unwrap();
            assert_eq!(end["type"], "run_end");
            assert_eq!(end["outcome"], "completed");
            assert!(end["response"].as_str().unwrap().contains(&want), "{end}");
            assert!(end["usage"]["input_tokens"].as_u64().unwrap() > 0);
        } else {
            assert!(
                text(&out.stdout).contains(&want),
                "{}: {}",
                f.tag,
                show(&out)
            );
            // One readable line per tool call on stderr.
            let err = text(&out.stderr);
            assert!(
                err.contains(&format!("· bash: echo from-{} >", f.tag)),
                "{err}"
            );
            assert!(
                err.contains(&format!("· read: /workspace/{}.txt", f.tag)),
                "{err}"
            );
        }

        // Three model calls in the provider's own format, with its key; the second carried
        // the bash result back.
        let reqs = mock.requests();
        assert_eq!(reqs.len(), 3, "{}: {:#?}", f.tag, reqs);
        for r in &reqs {
            assert_eq!(r.api, Some(f.api), "{}", f.tag);
            assert_eq!(r.api_key.as_deref(), Some(f.key), "{}", f.tag);
            assert_eq!(r.outcome, "reply");
        }
        assert_eq!(
            reqs[0].stream,
            !f.extra.contains(&"--no-stream"),
            "{}",
            f.tag
        );
        assert!(
            reqs[0].body_contains("Project instructions (from /workspace/AGENTS.md)")
                && reqs[0].body_contains(&format!("Sign every answer as agent-{}.", f.tag)),
            "{}: {}",
            f.tag,
            reqs[0].body_text
        );
        // The tools are offered in the provider's format.
        assert!(reqs[0].body_contains("\"bash\"") && reqs[0].body_contains("\"edit\""));
        assert!(
            reqs[1].tool_results().iter().any(|t| t.contains("written")),
            "{}: {:?}",
            f.tag,
            reqs[1].tool_results()
        );
        mock.assert_script_consumed();

        // The transcript holds the whole turn.
        let tr = transcript(&env, &ws, "s1");
        assert_eq!(
            types(&tr),
            vec![
                "run_start",
                "user_message",
                "assistant_message",
                "tool_call",
                "tool_result",
                "tool_call",
                "tool_result",
                "assistant_message",
                "run_end"
            ],
            "{}",
            f.tag
        );
        assert_eq!(tr[3]["name"], "bash");
        assert_eq!(tr[5]["name"], "read");
        assert_eq!(tr.last().unwrap()["outcome"], "completed");
    }
}

#[test]
fn rate_limit_is_retried_after_retry_after() {
    let env = TestEnv::new();
    env.create("rl");
    let mock = MockLlm::start(
        Script::new()
            .fault(Fault::rate_limited(1))
            .reply(Reply::text("answered after the wait")),
    );
    let start = Instant::now();
    let out = run(
        &env,
        &[("ANTHROPIC_API_KEY", "sk-ant-only-key-0123456789")],
        &[
            "rl",
            "--model",
            "anthropic/claude-sonnet-4-5",
            "--base-url",
            &mock.base_url(),
            "--session",
            "s",
            "hi",
        ],
    );
    let took = start.elapsed();
    assert!(out.status.success(), "{}", show(&out));
    assert_eq!(text(&out.stdout).trim(), "answered after the wait");
    let err = text(&out.stderr);
    assert!(
        err.contains("retry: anthropic/claude-sonnet-4-5 rate_limit (HTTP 429), waiting 1."),
        "{err}"
    );
    assert!(
        took >= Duration::from_secs(1),
        "Retry-After: 1 was not honoured ({took:?})"
    );
    let reqs = mock.requests();
    assert_eq!(reqs.len(), 2);
    assert_eq!(reqs[0].outcome, "fault:rate_limited");
    assert_eq!(
        reqs[1].api_key.as_deref(),
        Some("sk-ant-only-key-0123456789")
    );
    let tr = transcript(&env, "rl", "s");
    assert!(tr.iter().any(|e| e["type"] == "error"
        && e["kind"] == "llm"
        && e["message"]
            .as_str()
            .unwrap()
            .contains("rate_limit (HTTP 429)")));
}

#[test]
fn a_rate_limited_key_rotates_to_the_next() {
    let env = TestEnv::new();
    env.create("keys");
    let (k1, k2) = (
        "sk-ant-first-key-0123456789",
        "sk-ant-second-key-0123456789",
    );
    let mock = MockLlm::start(
        Script::new()
            // A long Retry-After: rotating, not waiting, is what makes this fast.
            .step(Step::fault(Fault::rate_limited(30)).key(k1))
            .step(Step::reply(Reply::text("the second key answered")).key(k2)),
    );
    let start = Instant::now();
    let keys = format!("{k1},{k2}");
    let out = run(
        &env,
        &[("ANTHROPIC_API_KEYS", &keys)],
        &[
            "--json",
            "keys",
            "--model",
            "anthropic/claude-sonnet-4-5",
            "--base-url",
            &mock.base_url(),
            "--session",
            "s",
            "hi",
        ],
    );
    // `--json` before the subcommand works too (global flag).
    assert!(out.status.success(), "{}", show(&out));
    assert!(start.elapsed() < Duration::from_secs(20));
    let reqs = mock.requests();
    let used: Vec<&str> = reqs.iter().map(|r| r.api_key.as_deref().unwrap()).collect();
    assert_eq!(used, vec![k1, k2]);
    let events = json_events(&out);
    let rot = events
        .iter()
        .find(|e| e["type"] == "key_rotation")
        .expect("key_rotation event");
    assert_eq!(rot["from_key"], 0);
    assert_eq!(rot["reason"], "rate_limit");
    let attempts: Vec<(Value, Value)> = events
        .iter()
        .filter(|e| e["type"] == "model_attempt")
        .map(|e| (e["key_index"].clone(), e["key_source"].clone()))
        .collect();
    assert_eq!(
        attempts,
        vec![
            (json!(0), json!("$ANTHROPIC_API_KEYS")),
            (json!(1), json!("$ANTHROPIC_API_KEYS"))
        ]
    );
    assert_eq!(
        events.last().unwrap()["response"],
        "the second key answered"
    );
    let tr = transcript(&env, "keys", "s");
    assert!(tr.iter().any(|e| e["kind"] == "key_rotation"), "{tr:#?}");
    for e in &tr {
        let s = e.to_string();
        assert!(!s.contains(k1) && !s.contains(k2), "key in transcript: {s}");
    }
}

#[test]
fn fallback_on_overload_and_on_a_bad_key() {
    let env = TestEnv::new();
    env.create("fb");
    for (fault, reason, tag) in [
        (Fault::overloaded(), "overloaded", "overload"),
        (Fault::Unauthorized, "auth", "auth"),
    ] {
        let mock = MockLlm::start(
            Script::new()
                .step(Step::fault(fault).model("claude-sonnet-4-5"))
                .step(
                    Step::reply(Reply::text("the fallback ({{model}}) answered")).model("gpt-4o"),
                ),
        );
        let base = mock.openai_base_url();
        let out = run(
            &env,
            &[
                ("ANTHROPIC_API_KEY", "sk-ant-primary-0123456789"),
                ("OPENAI_API_KEY", "sk-openai-fallback-0123456789"),
                // The fallback's server comes from its own variable; --base-url is the
                // primary's.
                ("OPENAI_BASE_URL", &base),
            ],
            &[
                "--json",
                "fb",
                "--model",
                "anthropic/claude-sonnet-4-5",
                "--fallback",
                "openai/gpt-4o",
                "--base-url",
                &mock.base_url(),
                "--retries",
                "0",
                "--session",
                tag,
                "hi",
            ],
        );
        assert!(out.status.success(), "{tag}: {}", show(&out));
        let events = json_events(&out);
        let fb = events
            .iter()
            .find(|e| e["type"] == "fallback")
            .unwrap_or_else(|| panic!("{tag}: no fallback event: {}", show(&out)));
        assert_eq!(fb["from"], "anthropic/claude-sonnet-4-5");
        assert_eq!(fb["to"], "openai/gpt-4o");
        assert_eq!(fb["reason"], reason);
        assert_eq!(
            events.last().unwrap()["response"],
            "the fallback (gpt-4o) answered"
        );
        let reqs = mock.requests();
        assert_eq!(
            reqs.len(),
            2,
            "{tag}: no retry of the primary with --retries 0"
        );
        assert_eq!(reqs[0].api, Some(Api::Anthropic));
        assert_eq!(reqs[1].api, Some(Api::OpenAi));
        assert_eq!(
            reqs[1].api_key.as_deref(),
            Some("sk-openai-fallback-0123456789")
        );
        let tr = transcript(&env, "fb", tag);
        let fallback_note = tr
            .iter()
            .find(|e| e["kind"] == "fallback")
            .unwrap_or_else(|| panic!("{tag}: {tr:#?}"));
        assert_eq!(
            fallback_note["message"],
            format!("falling back from anthropic/claude-sonnet-4-5 to openai/gpt-4o ({reason})")
        );
        assert_eq!(tr.last().unwrap()["outcome"], "completed");
    }
}

#[test]
fn all_models_failing_exits_9_listing_every_attempt() {
    let env = TestEnv::new();
    env.create("down");
    let mock = MockLlm::start(
        Script::new()
            .step(Step::fault(Fault::Unauthorized).model("claude-sonnet-4-5"))
            .step(Step::fault(Fault::PaymentRequired { rate_limit: false }).model("gpt-4o"))
            .step(Step::fault(Fault::ModelNotFound).model("gemini-2.5-flash")),
    );
    let oai = mock.openai_base_url();
    let gem = mock.base_url();
    let out = run(
        &env,
        &[
            ("ANTHROPIC_API_KEY", "sk-ant-down-0123456789"),
            ("OPENAI_API_KEY", "sk-openai-down-0123456789"),
            ("OPENAI_BASE_URL", &oai),
            ("GEMINI_API_KEY", "AIza-down-0123456789"),
            ("GEMINI_BASE_URL", &gem),
        ],
        &[
            "down",
            "--model",
            "anthropic/claude-sonnet-4-5",
            "--fallback",
            "openai/gpt-4o",
            "--fallback",
            "google/gemini-2.5-flash",
            "--base-url",
            &mock.base_url(),
            "--session",
            "s",
            "hi",
        ],
    );
    assert_eq!(out.status.code(), Some(9), "{}", show(&out));
    let err = text(&out.stderr);
    assert!(err.contains("all models failed (3 attempt(s)):"), "{err}");
    assert!(
        err.contains("1. anthropic/claude-sonnet-4-5 key #1 ($ANTHROPIC_API_KEY): auth (HTTP 401)"),
        "{err}"
    );
    assert!(
        err.contains("2. openai/gpt-4o key #1 ($OPENAI_API_KEY): billing (HTTP 402)"),
        "{err}"
    );
    assert!(
        err.contains(
            "3. google/gemini-2.5-flash key #1 ($GEMINI_API_KEY): model_not_found (HTTP 404)"
        ),
        "{err}"
    );
    assert!(text(&out.stdout).is_empty());
    let tr = transcript(&env, "down", "s");
    let end = tr.last().unwrap();
    assert_eq!(end["type"], "run_end");
    assert_eq!(end["outcome"], "failed");
    assert!(tr.iter().any(|e| e["type"] == "error"
        && e["message"]
            .as_str()
            .unwrap()
            .starts_with("all models failed")));
}

#[test]
fn malformed_tool_arguments_go_back_to_the_model() {
    // Validation refuses the call before any sandbox is needed.
    let env = TestEnv::new();
    env.create("bad");
    let mock = MockLlm::start(
        Script::new()
            .reply(Reply::tool_call("bash", json!({"cmd": "ls"})))
            .step(Step::reply(Reply::echo_tool_result("The tool said: ")).after_tool_result(true)),
    );
    let out = run(
        &env,
        &[("ANTHROPIC_API_KEY", "sk-ant-bad-args-0123456789")],
        &[
            "bad",
            "--model",
            "anthropic/claude-sonnet-4-5",
            "--base-url",
            &mock.base_url(),
            "--session",
            "s",
            "go",
        ],
    );
    assert!(out.status.success(), "{}", show(&out));
    let answer = text(&out.stdout);
    assert!(
        answer.contains(
            "The tool said: invalid arguments for `bash`: missing required argument `command`"
        ),
        "{answer}"
    );
    let reqs = mock.requests();
    assert_eq!(reqs.len(), 2);
    assert!(reqs[1].ends_with_tool_result());
    // Anthropic's wire format marks it as an error result.
    assert!(
        reqs[1].body_text.contains("\"is_error\":true"),
        "{}",
        reqs[1].body_text
    );
    let tr = transcript(&env, "bad", "s");
    let result = tr.iter().find(|e| e["type"] == "tool_result").unwrap();
    assert_eq!(result["is_error"], true);
    assert!(
        text(&out.stderr).contains("  ! invalid arguments for `bash`"),
        "{}",
        show(&out)
    );
}

#[test]
fn the_step_limit_exits_10() {
    let env = TestEnv::new();
    env.create("loop");
    let mock = MockLlm::start(
        Script::new().step(Step::reply(Reply::tool_call("no_such_tool", json!({}))).forever()),
    );
    let out = run(
        &env,
        &[
            ("OPENAI_API_KEY", "sk-openai-loop-0123456789"),
            ("OPENAI_BASE_URL", &mock.openai_base_url()),
        ],
        &[
            "loop",
            "--model",
            "openai/gpt-4o",
            "--max-steps",
            "3",
            "--session",
            "s",
            "go",
        ],
    );
    assert_eq!(out.status.code(), Some(10), "{}", show(&out));
    assert!(
        text(&out.stderr).contains("stopped after 3 steps"),
        "{}",
        show(&out)
    );
    assert_eq!(mock.request_count(), 3);
    let tr = transcript(&env, "loop", "s");
    assert_eq!(tr.last().unwrap()["outcome"], "max_steps");
    let results: Vec<&Value> = tr.iter().filter(|e| e["type"] == "tool_result").collect();
    assert_eq!(results.len(), 3);
    assert!(results[0]["output"]
        .as_str()
        .unwrap()
        .starts_with("unknown tool `no_such_tool`; the tools are: bash, read, write, edit, ls"));
}

#[test]
fn context_overflow_triggers_compaction() {
    if !sandbox_or_skip("context_overflow_triggers_compaction") {
        return;
    }
    let env = TestEnv::new();
    env.create("big");
    let mock = MockLlm::start(
        Script::new()
            .reply(Reply::tool_call(
                "bash",
                json!({"command": "echo one > /workspace/one.txt; echo did-one"}),
            ))
            .fault(Fault::context_overflow())
            .step(
                Step::reply(Reply::text(
                    "SUMMARY: the user asked for one.txt; it was written",
                ))
                .containing("<conversation>"),
            )
            .step(
                Step::reply(Reply::text("finished after compaction"))
                    .containing("SUMMARY: the user asked"),
            ),
    );
    let out = run(
        &env,
        &[("ANTHROPIC_API_KEY", "sk-ant-big-0123456789")],
        &[
            "--json",
            "big",
            "--model",
            "anthropic/claude-sonnet-4-5",
            "--base-url",
            &mock.base_url(),
            "--session",
            "s",
            "make one.txt",
        ],
    );
    assert!(out.status.success(), "{}", show(&out));
    let events = json_events(&out);
    let c = events
        .iter()
        .find(|e| e["type"] == "compaction")
        .unwrap_or_else(|| panic!("no compaction: {}", show(&out)));
    assert_eq!(c["trigger"], "overflow");
    assert_eq!(
        events.last().unwrap()["response"],
        "finished after compaction"
    );
    assert!(!events.iter().any(|e| e["type"] == "fallback"));
    assert_eq!(mock.requests()[1].outcome, "fault:context_overflow");
    mock.assert_script_consumed();
    let tr = transcript(&env, "big", "s");
    let marker = tr
        .iter()
        .find(|e| e["type"] == "compaction")
        .expect("compaction marker");
    assert_eq!(
        marker["summary"],
        "SUMMARY: the user asked for one.txt; it was written"
    );
    assert_eq!(marker["replaced_events"], 1);
    assert!(std::fs::read_to_string(env.files("big").join("one.txt")).unwrap() == "one\n");

    // The next run of the session starts from the summary.
    mock.push(
        Step::reply(Reply::text("continued")).containing("[Summary of the earlier conversation]"),
    );
    let out = run(
        &env,
        &[("ANTHROPIC_API_KEY", "sk-ant-big-0123456789")],
        &[
            "big",
            "--model",
            "anthropic/claude-sonnet-4-5",
            "--base-url",
            &mock.base_url(),
            "--session",
            "s",
            "and now?",
        ],
    );
    assert!(out.status.success(), "{}", show(&out));
    assert_eq!(text(&out.stdout).trim(), "continued");
}

#[test]
fn a_session_continues_and_a_busy_one_exits_8() {
    let env = TestEnv::new();
    env.create("cont");
    let mock = MockLlm::start(
        Script::new()
            .reply(Reply::text("noted: the colour is teal"))
            .step(Step::reply(Reply::text("you said teal")).containing("remember: teal")),
    );
    let vars = [("ANTHROPIC_API_KEY", "sk-ant-cont-0123456789")];
    let base = mock.base_url();
    let args = |msg: &'static str| -> Vec<String> {
        [
            "cont",
            "--model",
            "anthropic/claude-sonnet-4-5",
            "--base-url",
            &base,
            "--session",
            "s",
            msg,
        ]
        .iter()
        .map(|s| s.to_string())
        .collect()
    };
    let a1 = args("remember: teal");
    let out = run(
        &env,
        &vars,
        &a1.iter().map(String::as_str).collect::<Vec<_>>(),
    );
    assert!(out.status.success(), "{}", show(&out));
    let a2 = args("what colour?");
    let out = run(
        &env,
        &vars,
        &a2.iter().map(String::as_str).collect::<Vec<_>>(),
    );
    assert!(out.status.success(), "{}", show(&out));
    assert_eq!(text(&out.stdout).trim(), "you said teal");
    assert!(
        text(&out.stderr).contains("continuing after 2 messages"),
        "{}",
        show(&out)
    );

    // Another run holds the session: fail fast with exit 8.
    let platform = bulkhead::Platform::open(bulkhead::PlatformConfig {
        state_dir: env.state(),
        launcher: None,
    })
    .unwrap();
    let held = platform
        .workspace("cont")
        .unwrap()
        .sessions()
        .open("s", bulkhead::LockMode::FailFast)
        .unwrap();
    let a3 = args("busy?");
    let out = run(
        &env,
        &vars,
        &a3.iter().map(String::as_str).collect::<Vec<_>>(),
    );
    assert_eq!(out.status.code(), Some(8), "{}", show(&out));
    drop(held);
    assert_eq!(mock.request_count(), 2);

    // An unknown workspace is exit 3.
    let out = run(
        &env,
        &vars,
        &["nosuch", "--model", "anthropic/claude-sonnet-4-5", "hi"],
    );
    assert_eq!(out.status.code(), Some(3), "{}", show(&out));
}

#[test]
fn cancellation_kills_the_running_command() {
    if !sandbox_or_skip("cancellation_kills_the_running_command") {
        return;
    }
    let env = TestEnv::new();
    env.create("stop");
    let mock = MockLlm::start(Script::new().reply(Reply::tool_call(
        "bash",
        json!({"command": "echo started > /workspace/started.txt; sleep 30; echo never > /workspace/never.txt"}),
    )));
    let child = cmd(&env, &[("ANTHROPIC_API_KEY", "sk-ant-stop-0123456789")])
        .args([
            "run",
            "stop",
            "--model",
            "anthropic/claude-sonnet-4-5",
            "--base-url",
            &mock.base_url(),
            "--session",
            "s",
            "sleep",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Wait until the command runs in the sandbox.
    let started = env.files("stop").join("started.txt");
    let t0 = Instant::now();
    while !started.exists() {
        assert!(
            t0.elapsed() < Duration::from_secs(30),
            "the command never started"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let run_dir = env.state().join("workspaces/stop/run");
    assert_eq!(
        std::fs::read_dir(&run_dir).unwrap().count(),
        1,
        "one sandbox runs"
    );
    let t1 = Instant::now();
    let st = Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(st.success());
    let out = child.wait_with_output().unwrap();
    assert!(
        t1.elapsed() < Duration::from_secs(10),
        "cancellation took {:?}",
        t1.elapsed()
    );
    assert_eq!(out.status.code(), Some(130), "{}", show(&out));
    assert!(
        text(&out.stderr).contains("the run was cancelled"),
        "{}",
        show(&out)
    );
    std::thread::sleep(Duration::from_millis(200));
    assert!(!env.files("stop").join("never.txt").exists());
    assert_eq!(
        std::fs::read_dir(&run_dir).unwrap().count(),
        0,
        "the sandbox is gone"
    );
    let tr = transcript(&env, "stop", "s");
    assert_eq!(tr.last().unwrap()["outcome"], "cancelled");
    assert_eq!(mock.request_count(), 1);
}

/// A piece of `secret` found in `text`: any 12 characters of it as they are, or any 8 of its
/// bytes hex-encoded (as in a wire dump, whitespace ignored). Catching pieces matters: a log
/// line may cut a key in two where a redactor of whole values cannot see it.
fn leaked_piece(text: &str, secret: &str) -> Option<String> {
    let b = secret.as_bytes();
    for w in b.windows(12) {
        let piece = std::str::from_utf8(w).unwrap();
        if text.contains(piece) {
            return Some(piece.to_string());
        }
    }
    let squashed: String = text
        .chars()
        .filter(|c| !c.is_whitespace())
        .collect::<String>()
        .to_ascii_lowercase();
    for w in b.windows(8) {
        let hex: String = w.iter().map(|x| format!("{x:02x}")).collect();
        if squashed.contains(&hex) {
            return Some(format!("hex {hex}"));
        }
    }
    None
}

#[test]
fn a_canary_key_reaches_no_sandbox_request_body_transcript_or_log() {
    if !sandbox_or_skip("a_canary_key_reaches_no_sandbox_request_body_transcript_or_log") {
        return;
    }
    const ENV_CANARY: &str = "sk-ant-canary-env-4f1d9a7c2e8b6035";
    const STORE_CANARY: &str = "sk-ant-canary-store-9b3e5c1a7d2f8046";
    const PASSPHRASE: &str = "canary test passphrase";
    let env = TestEnv::new();
    env.create("canary");
    // The tenant's own key, in its credential store, comes before the environment's.
    let mut set = cmd(&env, &[("BULKHEAD_CREDENTIAL_KEY", PASSPHRASE)]);
    let st = set
        .args([
            "cred",
            "set",
            "canary",
            "anthropic",
            &format!("api_key={STORE_CANARY}"),
        ])
        .output()
        .unwrap();
    assert!(st.status.success(), "{}", show(&st));

    // (The pattern is assembled by the shell so the command itself holds no piece of a key.)
    let probe = "env; echo ---; cat /proc/1/environ 2>&1 | tr '\\0' '\\n'; echo ---; \
                 grep -rlF \"$(printf 'sk-ant-%s' canary)\" /workspace /tmp /etc 2>/dev/null; echo searched";
    let mock = MockLlm::start(
        Script::new()
            .reply(Reply::tool_call("bash", json!({"command": probe})))
            .step(
                Step::reply(Reply::echo_tool_result("The environment: ")).after_tool_result(true),
            ),
    );
    let out = run(
        &env,
        &[
            ("ANTHROPIC_API_KEY", ENV_CANARY),
            ("BULKHEAD_CREDENTIAL_KEY", PASSPHRASE),
            ("BULKHEAD_LOG_LEVEL", "trace"),
        ],
        &[
            "canary",
            "--model",
            "anthropic/claude-sonnet-4-5",
            "--base-url",
            &mock.base_url(),
            "--session",
            "s",
            "print your environment",
        ],
    );
    assert!(out.status.success(), "{}", show(&out));
    let reqs = mock.requests();
    assert_eq!(reqs.len(), 2);
    // The store's key was used (in the header, where it belongs).
    assert_eq!(reqs[0].api_key.as_deref(), Some(STORE_CANARY));
    // The sandbox's environment went back to the model, without either key.
    let results = reqs[1].tool_results();
    let env_out = results.join("\n");
    assert!(
        env_out.contains("PATH=") && env_out.contains("searched"),
        "{env_out}"
    );
    let mut seen: BTreeMap<&str, String> = BTreeMap::new();
    seen.insert("sandbox environment", env_out);
    for r in &reqs {
        seen.insert(
            "request body",
            format!("{}{}{}", r.path, r.query, r.body_text),
        );
    }
    seen.insert("stdout", text(&out.stdout));
    seen.insert("stderr (trace log)", text(&out.stderr));
    seen.insert(
        "transcript",
        std::fs::read_to_string(transcript_path(&env, "canary", "s")).unwrap(),
    );
    assert!(
        text(&out.stderr).contains("TRACE") || text(&out.stderr).contains("DEBUG"),
        "trace logging is on: {}",
        show(&out)
    );
    for (what, s) in &seen {
        for canary in [ENV_CANARY, STORE_CANARY, PASSPHRASE] {
            if let Some(piece) = leaked_piece(s, canary) {
                panic!("a piece of {canary} ({piece}) is in the {what}:\n{s}");
            }
        }
    }
    // Nor anywhere in the workspace's files.
    let out = env.sh("canary", "grep -rl sk-ant-canary /workspace || echo clean");
    assert_eq!(text(&out.stdout).trim(), "clean");
}
