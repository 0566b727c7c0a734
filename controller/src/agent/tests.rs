//! The loop against a scripted in-process provider and host-side tools (no sandbox, no
//! network). End-to-end runs over HTTP against the mock model, with the real sandbox, are in
//! `tests/suite/agent.rs`.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{json, Value};

use super::*;
use crate::error::Error;
use crate::llm::{
    ApiKey, ChatRequest, ChatResponse, FailoverReason, Message, ProviderError, StopReason,
    ToolCall, Usage as LlmUsage,
};
use crate::platform::{Platform, PlatformConfig, WorkspaceConfig};
use crate::sessions::Event;

type Reply = std::result::Result<ChatResponse, (FailoverReason, Option<Duration>)>;

struct Fake {
    name: String,
    replies: Mutex<VecDeque<Reply>>,
    seen: Mutex<Vec<(ChatRequest, String)>>,
}

impl Fake {
    fn new(name: &str, replies: Vec<Reply>) -> Arc<Fake> {
        Arc::new(Fake {
            name: name.into(),
            replies: Mutex::new(replies.into()),
            seen: Mutex::new(Vec::new()),
        })
    }
    fn seen(&self) -> Vec<(ChatRequest, String)> {
        self.seen.lock().unwrap().clone()
    }
}

impl Provider for Fake {
    fn name(&self) -> &str {
        &self.name
    }
    fn chat(
        &self,
        req: &ChatRequest,
        key: &ApiKey,
        on_text_delta: &mut dyn FnMut(&str),
    ) -> std::result::Result<ChatResponse, ProviderError> {
        self.seen
            .lock()
            .unwrap()
            .push((req.clone(), key.expose_secret().to_string()));
        match self.replies.lock().unwrap().pop_front() {
            Some(Ok(r)) => {
                if !r.text.is_empty() {
                    on_text_delta(&r.text);
                }
                Ok(r)
            }
            Some(Err((reason, ra))) => Err(ProviderError::new(
                reason,
                Some(599),
                format!("scripted {reason}"),
                ra,
                &self.name,
                &req.model,
                Some(key),
            )),
            None => Err(ProviderError::new(
                FailoverReason::Format,
                Some(500),
                "script exhausted",
                None,
                &self.name,
                &req.model,
                None,
            )),
        }
    }
}

fn text(t: &str) -> Reply {
    Ok(ChatResponse {
        text: t.into(),
        tool_calls: vec![],
        usage: LlmUsage {
            input_tokens: 100,
            output_tokens: 10,
        },
        stop: StopReason::EndTurn,
    })
}

fn call(name: &str, args: Value) -> Reply {
    Ok(ChatResponse {
        text: String::new(),
        tool_calls: vec![ToolCall {
            id: format!("call-{}", crate::sessions::generate_session_id()),
            name: name.into(),
            arguments: args,
        }],
        usage: LlmUsage {
            input_tokens: 100,
            output_tokens: 10,
        },
        stop: StopReason::ToolUse,
    })
}

fn fail(reason: FailoverReason) -> Reply {
    Err((reason, None))
}

/// `echo {text}`: returns the text; `boom` cancels the run's token; output can be made big.
struct Echo;

impl Tool for Echo {
    fn name(&self) -> &str {
        "echo"
    }
    fn description(&self) -> &str {
        "echo text back"
    }
    fn schema(&self) -> Value {
        json!({"type": "object", "properties": {"text": {"type": "string"}, "times": {"type": "integer"}},
               "required": ["text"], "additionalProperties": false})
    }
    fn call(&self, args: &Value, ctx: &mut ToolContext<'_>) -> Result<ToolOutput> {
        let t = args["text"].as_str().unwrap_or_default();
        if t == "boom" {
            ctx.cancel_token().cancel();
            return Err(crate::Error::SandboxGone("killed".into()));
        }
        let n = args.get("times").and_then(Value::as_u64).unwrap_or(1) as usize;
        Ok(ToolOutput::ok(t.repeat(n)))
    }
}

/// A memory tool that records what it was asked to store.
struct Memory(Mutex<Vec<String>>);

impl Tool for Memory {
    fn name(&self) -> &str {
        "memory_store"
    }
    fn description(&self) -> &str {
        "store a fact"
    }
    fn schema(&self) -> Value {
        json!({"type": "object", "properties": {"text": {"type": "string"}}, "required": ["text"]})
    }
    fn kind(&self) -> ToolKind {
        ToolKind::Memory
    }
    fn call(&self, args: &Value, _: &mut ToolContext<'_>) -> Result<ToolOutput> {
        self.0
            .lock()
            .unwrap()
            .push(args["text"].as_str().unwrap_or_default().into());
        Ok(ToolOutput::ok("stored"))
    }
}

struct Env {
    _dir: tempfile::TempDir,
    ws: Workspace,
    cooldowns: Cooldowns,
}

fn env() -> Env {
    let dir = tempfile::tempdir().unwrap();
    let p = Platform::open(PlatformConfig {
        state_dir: dir.path().join("state"),
        launcher: None,
    })
    .unwrap();
    let ws = p
        .create_workspace(
            "t",
            WorkspaceConfig {
                model: Some("anthropic/claude-sonnet-4-5".into()),
                ..Default::default()
            },
        )
        .unwrap();
    Env {
        _dir: dir,
        ws,
        cooldowns: Cooldowns::new(),
    }
}

fn request(msg: &str) -> RunRequest {
    let mut r = RunRequest::new(msg);
    r.session = Some("s1".into());
    r.env = Some(BTreeMap::from([
        (
            "ANTHROPIC_API_KEY".to_string(),
            "sk-ant-unit-test-key-0001".to_string(),
        ),
        (
            "OPENAI_API_KEY".to_string(),
            "sk-openai-unit-test-key-01".to_string(),
        ),
    ]));
    let mut tools = ToolRegistry::empty();
    tools.register(Arc::new(Echo)).unwrap();
    r.tools = Some(Arc::new(tools));
    r.retry.base_delay = Duration::from_millis(5);
    r.retry.max_delay = Duration::from_millis(20);
    r
}

fn run(e: &Env, req: RunRequest, providers: Vec<Arc<Fake>>) -> (Result<RunResult>, Vec<RunEvent>) {
    let map: HashMap<String, Arc<Fake>> = providers
        .iter()
        .map(|p| (p.name.clone(), Arc::clone(p)))
        .collect();
    let factory =
        move |m: &crate::llm::ModelRef, _base: Option<&str>| -> Result<Arc<dyn Provider>> {
            let p: Arc<dyn Provider> = map
                .get(&m.provider)
                .cloned()
                .unwrap_or_else(|| Fake::new(&m.provider, vec![]));
            Ok(p)
        };
    let mut events = Vec::new();
    let r = run_with_factory(&e.ws, req, &factory, &e.cooldowns, &mut |ev| {
        events.push(ev.clone())
    });
    (r, events)
}

fn kinds(events: &[RunEvent]) -> Vec<&'static str> {
    events
        .iter()
        .map(RunEvent::kind)
        .filter(|k| *k != "text_delta" && *k != "model_attempt")
        .collect()
}

fn transcript(e: &Env, sid: &str) -> Vec<Event> {
    e.ws.sessions().read(sid).unwrap().events
}

#[test]
fn tool_loop_records_everything() {
    let e = env();
    let p = Fake::new(
        "anthropic",
        vec![call("echo", json!({"text": "hi"})), text("said hi")],
    );
    let (r, events) = run(&e, request("say hi"), vec![p.clone()]);
    let r = r.unwrap();
    assert_eq!(r.response, "said hi");
    assert_eq!(r.outcome, RunOutcome::Completed);
    assert_eq!(r.steps, 2);
    assert_eq!(r.usage.input_tokens, 200);
    assert_eq!(r.usage.output_tokens, 20);
    assert!(r.usage.cost_usd.is_some());
    assert_eq!(r.model, "anthropic/claude-sonnet-4-5");
    assert_eq!(r.tool_calls.len(), 1);
    assert_eq!(r.attempts.len(), 2);
    assert_eq!(
        kinds(&events),
        vec![
            "run_start",
            "assistant_message",
            "tool_call",
            "tool_result",
            "assistant_message",
            "run_end"
        ]
    );
    let seen = p.seen();
    assert_eq!(seen[0].1, "sk-ant-unit-test-key-0001");
    assert_eq!(seen[0].0.model, "claude-sonnet-4-5");
    assert!(seen[0].0.system.contains("Your tools: echo"));
    assert!(matches!(
        seen[1].0.messages.last(),
        Some(Message::ToolResult { content, is_error: false, .. }) if content == "hi"
    ));
    let t: Vec<String> = transcript(&e, "s1")
        .iter()
        .map(|e| e.kind().to_string())
        .collect();
    assert_eq!(
        t,
        vec![
            "run_start",
            "user_message",
            "tool_call",
            "tool_result",
            "assistant_message",
            "run_end"
        ]
    );
    // The next run of the session continues it.
    let p2 = Fake::new("anthropic", vec![text("again")]);
    let (r2, events) = run(&e, request("and now?"), vec![p2.clone()]);
    assert_eq!(r2.unwrap().session_usage.input_tokens, 300);
    assert!(matches!(
        events[0],
        RunEvent::RunStart {
            history_messages: 4,
            ..
        }
    ));
    let msgs = &p2.seen()[0].0.messages;
    assert_eq!(msgs.len(), 5, "{msgs:#?}");
    assert_eq!(
        msgs[4],
        Message::User {
            text: "and now?".into()
        }
    );
}

#[test]
fn malformed_and_unknown_calls_go_back_as_errors() {
    let e = env();
    let p = Fake::new(
        "anthropic",
        vec![
            call("echo", json!({"text": 5})),
            call("echo", json!("{not json")),
            call("nope", json!({})),
            call("echo", json!("{\"text\": \"double-encoded\"}")),
            text("ok"),
        ],
    );
    let (r, _) = run(&e, request("x"), vec![p.clone()]);
    let r = r.unwrap();
    assert_eq!(r.response, "ok");
    let errs: Vec<bool> = r.tool_calls.iter().map(|c| c.is_error).collect();
    assert_eq!(errs, vec![true, true, true, false]);
    let seen = p.seen();
    let result = |i: usize| match seen[i].0.messages.last() {
        Some(Message::ToolResult { content, .. }) => content.clone(),
        other => panic!("{other:?}"),
    };
    assert!(
        result(1).contains("invalid arguments for `echo`: `text` must be string"),
        "{}",
        result(1)
    );
    assert!(
        result(2).contains("not a JSON object: {not json"),
        "{}",
        result(2)
    );
    assert!(
        result(3).contains("unknown tool `nope`; the tools are: echo"),
        "{}",
        result(3)
    );
    assert_eq!(result(4), "double-encoded");
}

#[test]
fn retry_then_key_rotation_then_fallback() {
    let e = env();
    let mut req = request("x");
    req.env.as_mut().unwrap().insert(
        "ANTHROPIC_API_KEYS".into(),
        "sk-ant-unit-second-key-0002".into(),
    );
    req.fallbacks = Some(vec!["openai/gpt-4o".into()]);
    req.retry.max_attempts = 2;
    let anth = Fake::new(
        "anthropic",
        vec![
            Err((FailoverReason::Overloaded, Some(Duration::from_millis(5)))),
            fail(FailoverReason::RateLimit),
            fail(FailoverReason::Overloaded),
        ],
    );
    let oai = Fake::new("openai", vec![text("from openai")]);
    let (r, events) = run(&e, req, vec![anth.clone(), oai.clone()]);
    let r = r.unwrap();
    assert_eq!(r.response, "from openai");
    assert_eq!(r.model, "openai/gpt-4o");
    assert_eq!(
        kinds(&events),
        vec![
            "run_start",
            "retry",
            "key_rotation",
            "fallback",
            "assistant_message",
            "run_end"
        ]
    );
    let keys: Vec<String> = anth.seen().into_iter().map(|(_, k)| k).collect();
    assert_eq!(
        keys,
        vec![
            "sk-ant-unit-test-key-0001",
            "sk-ant-unit-test-key-0001",
            "sk-ant-unit-second-key-0002"
        ]
    );
    let outcomes: Vec<&str> = r.attempts.iter().map(|a| a.outcome.as_str()).collect();
    assert_eq!(
        outcomes,
        vec!["overloaded", "rate_limit", "overloaded", "ok"]
    );
    assert_eq!(r.attempts[2].key_index, Some(1));
    let t = transcript(&e, "s1");
    let errs: Vec<String> = t
        .iter()
        .filter_map(|e| match e {
            Event::Error { kind, message, .. } => Some(format!("{kind}: {message}")),
            _ => None,
        })
        .collect();
    assert!(
        errs.iter().any(|m| m.starts_with(
            "fallback: falling back from anthropic/claude-sonnet-4-5 to openai/gpt-4o (overloaded)"
        )),
        "{errs:#?}"
    );
    assert!(
        errs.iter().any(|m| m.starts_with("key_rotation:")),
        "{errs:#?}"
    );
    // No key ever reaches the transcript.
    let raw = std::fs::read_to_string(e.ws.sessions().path("s1")).unwrap();
    assert!(!raw.contains("unit-test-key") && !raw.contains("second-key"));

    // The primary now cools down: the next run goes straight to the fallback.
    let anth2 = Fake::new("anthropic", vec![text("primary")]);
    let oai2 = Fake::new("openai", vec![text("fallback again")]);
    let mut req = request("y");
    req.fallbacks = Some(vec!["openai/gpt-4o".into()]);
    let (r, events) = run(&e, req, vec![anth2.clone(), oai2]);
    let r = r.unwrap();
    assert_eq!(r.response, "fallback again");
    assert!(anth2.seen().is_empty());
    assert_eq!(r.attempts[0].outcome, "cooldown");
    assert!(events
        .iter()
        .any(|e| matches!(e, RunEvent::Fallback { reason, .. } if reason == "cooldown")));
}

#[test]
fn all_models_failing_lists_every_attempt() {
    let e = env();
    let mut req = request("x");
    req.fallbacks = Some(vec![
        "openai/gpt-4o".into(),
        "google/gemini-2.5-flash".into(),
    ]);
    let anth = Fake::new("anthropic", vec![fail(FailoverReason::Auth)]);
    let oai = Fake::new("openai", vec![fail(FailoverReason::Billing)]);
    let (r, events) = run(&e, req, vec![anth, oai]);
    let err = r.unwrap_err();
    assert_eq!(err.exit_code(), crate::error::exit::ALL_MODELS_FAILED);
    let msg = err.to_string();
    assert!(
        msg.starts_with("all models failed (3 attempt(s)):"),
        "{msg}"
    );
    assert!(
        msg.contains("1. anthropic/claude-sonnet-4-5 key #1 ($ANTHROPIC_API_KEY): auth (HTTP 599)"),
        "{msg}"
    );
    assert!(
        msg.contains("2. openai/gpt-4o key #1 ($OPENAI_API_KEY): billing"),
        "{msg}"
    );
    assert!(
        msg.contains("3. google/gemini-2.5-flash: no_key: no API key for google"),
        "{msg}"
    );
    assert!(matches!(
        events.last(),
        Some(RunEvent::RunEnd {
            outcome: RunOutcome::Failed,
            error: Some(_),
            ..
        })
    ));
    let t = transcript(&e, "s1");
    assert!(matches!(t.last(), Some(Event::RunEnd { outcome, .. }) if outcome == "failed"));
}

#[test]
fn context_overflow_compacts_and_continues() {
    let e = env();
    let p = Fake::new(
        "anthropic",
        vec![
            call("echo", json!({"text": "abc"})),
            fail(FailoverReason::ContextOverflow),
            text("SUMMARY: the user asked x; echo said abc"),
            text("final"),
        ],
    );
    let (r, events) = run(&e, request("task x"), vec![p.clone()]);
    assert_eq!(r.unwrap().response, "final");
    assert!(events
        .iter()
        .any(|e| matches!(e, RunEvent::Compaction { trigger, replaced_messages: 1, .. } if trigger == "overflow")));
    let seen = p.seen();
    // The summarizer saw the conversation, without tools.
    assert!(seen[2].0.tools.is_empty());
    assert!(
        matches!(&seen[2].0.messages[0], Message::User { text } if text.contains("User: task x"))
    );
    // The retried call starts with the summary (and the current request), then the kept turn.
    let m = &seen[3].0.messages;
    assert!(
        matches!(&m[0], Message::User { text } if text.contains("SUMMARY: the user asked x") && text.contains("[The user's current request]\ntask x")),
        "{m:#?}"
    );
    assert!(matches!(&m[1], Message::Assistant { tool_calls, .. } if tool_calls.len() == 1));
    let t = transcript(&e, "s1");
    assert!(t.iter().any(|e| matches!(e, Event::Compaction { replaced_events: 1, summary, .. } if summary.starts_with("SUMMARY"))));
    // The next run starts from the summary.
    let p2 = Fake::new("anthropic", vec![text("ok")]);
    let (_, _) = run(&e, request("next"), vec![p2.clone()]);
    let m = &p2.seen()[0].0.messages;
    assert!(
        matches!(&m[0], Message::User { text } if text.starts_with("[Summary of the earlier conversation]\nSUMMARY")),
        "{m:#?}"
    );
    assert!(!m
        .iter()
        .any(|x| matches!(x, Message::User { text } if text == "task x")));
}

#[test]
fn threshold_compaction_flushes_memory_first() {
    let e = env();
    let mut req = request("fill the context");
    let mem = Arc::new(Memory(Mutex::new(vec![])));
    let mut tools = ToolRegistry::empty();
    tools.register(Arc::new(Echo)).unwrap();
    tools.register(mem.clone()).unwrap();
    req.tools = Some(Arc::new(tools));
    req.context.context_window = Some(20_000);
    req.context.tool_result_max_chars = 1_000_000;
    // No pruning, so the estimate passes the compaction threshold.
    req.context.prune_at = 1.0;
    let p = Fake::new(
        "anthropic",
        vec![
            // 3 x 20,000 chars: about 15,000 tokens, past 85% of (20,000 - 4,096).
            call("echo", json!({"text": "0123456789", "times": 2000})),
            call("echo", json!({"text": "abcdefghij", "times": 2000})),
            call("echo", json!({"text": "ABCDEFGHIJ", "times": 2000})),
            call("memory_store", json!({"text": "remember the letters"})),
            text("summary of the letters"),
            text("done"),
        ],
    );
    let (r, events) = run(&e, req, vec![p.clone()]);
    assert_eq!(r.unwrap().response, "done");
    let k = kinds(&events);
    let flush = k
        .iter()
        .position(|x| *x == "memory_flush")
        .expect("memory flush");
    let compaction = k
        .iter()
        .position(|x| *x == "compaction")
        .expect("compaction");
    assert!(flush < compaction, "{k:?}");
    assert_eq!(
        *mem.0.lock().unwrap(),
        vec!["remember the letters".to_string()]
    );
    let seen = p.seen();
    // The flush turn offered only the memory tools, with the nudge.
    let flush_req = &seen[3].0;
    assert_eq!(flush_req.tools.len(), 1);
    assert!(
        matches!(flush_req.messages.last(), Some(Message::User { text }) if text.contains("about to be compacted"))
    );
    // The compaction kept the last turn after the summary.
    let last = &seen[5].0.messages;
    assert!(
        matches!(&last[0], Message::User { text } if text.contains("summary of the letters")),
        "{last:#?}"
    );
    assert_eq!(last.len(), 3);
}

#[test]
fn old_tool_results_are_pruned_as_the_window_fills() {
    let e = env();
    let mut req = request("fill the context");
    req.context.context_window = Some(20_000);
    req.context.tool_result_max_chars = 1_000_000;
    let p = Fake::new(
        "anthropic",
        vec![
            call("echo", json!({"text": "0123456789", "times": 2000})),
            call("echo", json!({"text": "abcdefghij", "times": 2000})),
            call("echo", json!({"text": "ABCDEFGHIJ", "times": 2000})),
            text("done"),
        ],
    );
    let (r, events) = run(&e, req, vec![p.clone()]);
    assert_eq!(r.unwrap().response, "done");
    let k = kinds(&events);
    assert!(
        k.contains(&"context_pruned") && !k.contains(&"compaction"),
        "{k:?}"
    );
    let last = &p.seen()[3].0.messages;
    let pruned = last
        .iter()
        .filter(|m| matches!(m, Message::ToolResult { content, .. } if content.starts_with("[older tool output (20000 characters)")))
        .count();
    assert_eq!(pruned, 2, "{last:#?}");
    // The transcript keeps the full results.
    let raw = std::fs::read_to_string(e.ws.sessions().path("s1")).unwrap();
    assert!(raw.contains(&"0123456789".repeat(2000)));
}

#[test]
fn step_limit_and_context_guard() {
    let e = env();
    let mut req = request("loop");
    req.max_steps = 2;
    let p = Fake::new(
        "anthropic",
        vec![
            call("echo", json!({"text": "1"})),
            call("echo", json!({"text": "2"})),
        ],
    );
    let (r, _) = run(&e, req, vec![p]);
    let r = r.unwrap();
    assert_eq!(r.outcome, RunOutcome::MaxSteps);
    assert_eq!(r.steps, 2);
    let t = transcript(&e, "s1");
    assert!(matches!(t.last(), Some(Event::RunEnd { outcome, .. }) if outcome == "max_steps"));

    let mut req = request("tiny");
    req.context.context_window = Some(8_000);
    let (r, _) = run(&e, req, vec![Fake::new("anthropic", vec![])]);
    let err = r.unwrap_err().to_string();
    assert!(err.contains("below the minimum of 16000"), "{err}");

    let mut req = request("small");
    req.context.context_window = Some(20_000);
    let (r, events) = run(&e, req, vec![Fake::new("anthropic", vec![text("fine")])]);
    assert_eq!(r.unwrap().response, "fine");
    assert!(events.iter().any(
        |e| matches!(e, RunEvent::Warning { message } if message.contains("small context window"))
    ));
}

#[test]
fn cancellation_ends_the_run() {
    let e = env();
    let mut req = request("cancel me");
    let token = CancelToken::new();
    req.cancel = Some(token.clone());
    let p = Fake::new(
        "anthropic",
        vec![call("echo", json!({"text": "boom"})), text("never")],
    );
    let (r, events) = run(&e, req, vec![p.clone()]);
    let err = r.unwrap_err();
    assert_eq!(err.exit_code(), crate::error::exit::CANCELLED);
    assert!(token.is_cancelled());
    assert_eq!(p.seen().len(), 1);
    assert!(matches!(
        events.last(),
        Some(RunEvent::RunEnd {
            outcome: RunOutcome::Cancelled,
            ..
        })
    ));
    let t = transcript(&e, "s1");
    assert!(matches!(t.last(), Some(Event::RunEnd { outcome, .. }) if outcome == "cancelled"));
}

#[test]
fn keys_are_redacted_from_tool_output_and_busy_sessions_fail_fast() {
    let e = env();
    let p = Fake::new(
        "anthropic",
        vec![
            call(
                "echo",
                json!({"text": "leak sk-ant-unit-test-key-0001 here"}),
            ),
            text("ok"),
        ],
    );
    let (r, events) = run(&e, request("x"), vec![p.clone()]);
    r.unwrap();
    let out = events
        .iter()
        .find_map(|e| match e {
            RunEvent::ToolResult { output, .. } => Some(output.clone()),
            _ => None,
        })
        .unwrap();
    assert_eq!(out, "leak [redacted] here");
    assert!(!format!("{:?}", p.seen()[1].0).contains("unit-test-key"));

    let _held =
        e.ws.sessions()
            .open("s1", crate::LockMode::FailFast)
            .unwrap();
    let (r, _) = run(
        &e,
        request("y"),
        vec![Fake::new("anthropic", vec![text("no")])],
    );
    let err = r.unwrap_err();
    assert_eq!(err.exit_code(), crate::error::exit::SESSION_BUSY);
}

#[test]
fn a_blocked_model_falls_back_without_retry_rotation_or_cooldown() {
    let e = env();
    let mut req = request("x");
    req.env.as_mut().unwrap().insert(
        "ANTHROPIC_API_KEYS".into(),
        "sk-ant-unit-second-key-0002".into(),
    );
    req.fallbacks = Some(vec!["openai/gpt-4o".into()]);
    let anth = Fake::new(
        "anthropic",
        vec![fail(FailoverReason::Blocked), text("never")],
    );
    let oai = Fake::new("openai", vec![text("from openai")]);
    let (r, events) = run(&e, req, vec![anth.clone(), oai]);
    let r = r.unwrap();
    assert_eq!(r.response, "from openai");
    // One call: no retry of the same model, no second key.
    assert_eq!(anth.seen().len(), 1);
    assert_eq!(
        kinds(&events),
        vec!["run_start", "fallback", "assistant_message", "run_end"]
    );
    assert!(events
        .iter()
        .any(|e| matches!(e, RunEvent::Fallback { reason, .. } if reason == "blocked")));
    let outcomes: Vec<&str> = r.attempts.iter().map(|a| a.outcome.as_str()).collect();
    assert_eq!(outcomes, vec!["blocked", "ok"]);

    // No cooldown: once the configuration is fixed, the next run uses the primary again.
    let anth2 = Fake::new("anthropic", vec![text("primary again")]);
    let mut req = request("y");
    req.fallbacks = Some(vec!["openai/gpt-4o".into()]);
    let (r, _) = run(&e, req, vec![anth2.clone()]);
    assert_eq!(r.unwrap().response, "primary again");
    assert_eq!(anth2.seen().len(), 1);
}

#[test]
fn model_calls_use_the_operators_llm_settings() {
    let e = env();
    let state = e.ws.dir().parent().unwrap().parent().unwrap().to_path_buf();
    assert_eq!(
        operator_llm_config(&e.ws).unwrap(),
        crate::config::LlmConfig::default()
    );
    // A base URL on loopback is refused before any connection (port 9 is never contacted)
    // and the run fails listing the refusal.
    let mut req = request("hi");
    req.model = Some("vllm/local".into());
    req.base_url = Some("http://127.0.0.1:9/v1".into());
    req.fallbacks = Some(vec![]);
    let err = e.ws.run(req).unwrap_err();
    assert_eq!(err.exit_code(), crate::error::exit::ALL_MODELS_FAILED);
    let msg = err.to_string();
    assert!(
        msg.contains("1. vllm/local key #1 (no key): blocked: refused http://127.0.0.1:9/v1/chat/completions: the host is 127.0.0.1 (loopback address)")
            && msg.contains("[llm] allow_loopback = true"),
        "{msg}"
    );
    // The operator's config.toml is read at each run.
    std::fs::write(
        state.join("config.toml"),
        "[llm]\nallow_loopback = true\nallow_private = true\n",
    )
    .unwrap();
    let llm = operator_llm_config(&e.ws).unwrap();
    assert!(llm.allow_loopback && llm.allow_private);
    let http = http_config(&Timeouts::default(), &llm);
    assert!(http.ssrf.allow_loopback && http.ssrf.allow_private);
    assert_eq!(http.ssrf.host_allowlist, None);
}

#[test]
fn hooks_see_the_run_in_order_veto_and_rewrite_tool_calls() {
    use super::hooks::{HookDecision, HookEvent, HookEventKind, Hooks};
    let e = env();
    let p = Fake::new(
        "anthropic",
        vec![
            call("echo", json!({"text": "forbidden"})),
            call("echo", json!({"text": "rewrite-me"})),
            text("done"),
        ],
    );
    let seen: Arc<Mutex<Vec<String>>> = Arc::default();
    let mut req = request("go");
    let mut hooks = Hooks::new();
    // Registered out of priority order: "late" (10) must run after "policy" (0) and
    // "first" (-1); "policy" and "audit" tie at 0 and keep registration order.
    let s = Arc::clone(&seen);
    hooks.add("late", 10, move |ev: &HookEvent| {
        s.lock().unwrap().push(format!("late:{}", ev.event));
        HookDecision::Allow
    });
    let s = Arc::clone(&seen);
    hooks.add_for(
        &[HookEventKind::BeforeToolCall],
        "policy",
        0,
        move |ev: &HookEvent| {
            s.lock().unwrap().push(format!("policy:{}", ev.event));
            match ev.arguments().and_then(|a| a["text"].as_str()) {
                Some("forbidden") => HookDecision::Veto {
                    reason: "not this text".into(),
                },
                Some("rewrite-me") => HookDecision::Rewrite {
                    arguments: json!({"text": "rewritten"}),
                },
                _ => HookDecision::Allow,
            }
        },
    );
    let s = Arc::clone(&seen);
    hooks.add_for(
        &[HookEventKind::BeforeToolCall],
        "audit",
        0,
        move |ev: &HookEvent| {
            s.lock().unwrap().push(format!(
                "audit:{}",
                ev.arguments()
                    .map(|a| a["text"].to_string())
                    .unwrap_or_default()
            ));
            HookDecision::Allow
        },
    );
    let s = Arc::clone(&seen);
    hooks.add("first", -1, move |ev: &HookEvent| {
        let extra = match ev.event {
            HookEventKind::AfterToolCall => format!("={}", ev.get("result").unwrap()),
            HookEventKind::AfterAgentEnd => {
                format!("={}", ev.get("usage").unwrap()["output_tokens"])
            }
            _ => String::new(),
        };
        s.lock().unwrap().push(format!("first:{}{extra}", ev.event));
        HookDecision::Allow
    });
    req.hooks = hooks;
    let (r, events) = run(&e, req, vec![p.clone()]);
    let r = r.unwrap();
    assert_eq!(r.response, "done");
    let seen = seen.lock().unwrap().clone();
    assert_eq!(
        seen,
        vec![
            "first:session_start",
            "late:session_start",
            "first:before_agent_start",
            "late:before_agent_start",
            // The veto stops the chain: neither "audit" nor "late" sees the first call.
            "first:before_tool_call",
            "policy:before_tool_call",
            "first:after_tool_call=\"refused by policy hook policy: not this text\"",
            "late:after_tool_call",
            "first:before_tool_call",
            "policy:before_tool_call",
            "audit:\"rewritten\"",
            "late:before_tool_call",
            "first:after_tool_call=\"rewritten\"",
            "late:after_tool_call",
            "first:after_agent_end=30",
            "late:after_agent_end",
            "first:session_end",
            "late:session_end",
        ]
    );
    // The model got the refusal, then the rewritten call's result.
    let seen_by_model = p.seen();
    let result = |i: usize| match seen_by_model[i].0.messages.last() {
        Some(Message::ToolResult {
            content, is_error, ..
        }) => (content.clone(), *is_error),
        other => panic!("{other:?}"),
    };
    assert_eq!(
        result(1),
        ("refused by policy hook policy: not this text".into(), true)
    );
    assert_eq!(result(2), ("rewritten".into(), false));
    assert_eq!(r.tool_calls[1].arguments, json!({"text": "rewritten"}));
    // Decisions are `hook` events; the veto is in the transcript.
    let decisions: Vec<(String, String)> = events
        .iter()
        .filter_map(|e| match e {
            RunEvent::Hook { hook, decision, .. } if decision != "allow" => {
                Some((hook.clone(), decision.clone()))
            }
            _ => None,
        })
        .collect();
    assert_eq!(
        decisions,
        vec![
            ("policy".to_string(), "veto".to_string()),
            ("policy".to_string(), "rewrite".to_string())
        ]
    );
    let v = serde_json::to_value(events.iter().find(|e| e.kind() == "hook").unwrap()).unwrap();
    assert_eq!(v["type"], "hook");
    assert!(transcript(&e, "s1").iter().any(|ev| {
        let v = serde_json::to_value(ev).unwrap();
        v["type"] == "error"
            && v["kind"] == "hook"
            && v["message"] == "refused by policy hook policy: not this text"
    }));
}

#[test]
fn on_error_fires_when_the_run_fails() {
    use super::hooks::{HookDecision, HookEvent, HookEventKind, Hooks};
    let e = env();
    let p = Fake::new("anthropic", vec![fail(FailoverReason::Auth)]);
    let seen: Arc<Mutex<Vec<(HookEventKind, Value)>>> = Arc::default();
    let mut req = request("go");
    req.fallbacks = Some(vec![]);
    let s = Arc::clone(&seen);
    let mut hooks = Hooks::new();
    hooks.add("errors", 0, move |ev: &HookEvent| {
        s.lock()
            .unwrap()
            .push((ev.event, serde_json::to_value(ev).unwrap()));
        HookDecision::Allow
    });
    req.hooks = hooks;
    let (r, _) = run(&e, req, vec![p]);
    assert!(matches!(r, Err(Error::AllModelsFailed { .. })), "{r:?}");
    let seen = seen.lock().unwrap().clone();
    let kinds: Vec<HookEventKind> = seen.iter().map(|(k, _)| *k).collect();
    assert_eq!(
        kinds,
        vec![
            HookEventKind::SessionStart,
            HookEventKind::BeforeAgentStart,
            HookEventKind::OnError,
            HookEventKind::AfterAgentEnd,
            HookEventKind::SessionEnd
        ]
    );
    let err = &seen[2].1;
    assert_eq!(err["kind"], "llm");
    assert!(
        err["message"]
            .as_str()
            .unwrap()
            .starts_with("all models failed"),
        "{err}"
    );
    assert!(!err.to_string().contains("sk-ant-unit-test-key-0001"));
    assert_eq!(seen[3].1["outcome"], "failed");
}

#[test]
fn spawn_subagents_uses_the_runs_factory_inherits_custom_tools_and_sums_usage() {
    let e = env();
    // Serial children (concurrency 1) so the one scripted queue is consumed in order:
    // parent call, child 1, child 2, parent answer.
    let p = Fake::new(
        "anthropic",
        vec![
            call(
                "spawn_subagents",
                json!({"tasks": [{"task": "first part", "label": "one", "role": "counter"},
                                 {"task": "second part"}]}),
            ),
            text("ONE-DONE"),
            text("TWO-DONE"),
            text("all done"),
        ],
    );
    let mut req = request("split the work");
    let mut tools = ToolRegistry::empty();
    tools.register(Arc::new(Echo)).unwrap();
    tools
        .register(Arc::new(subagents::SpawnSubagentsTool))
        .unwrap();
    req.tools = Some(Arc::new(tools));
    req.subagents.concurrency = 1;
    req.subagents.max_depth = 1;
    let (r, events) = run(&e, req, vec![p.clone()]);
    let r = r.unwrap();
    assert_eq!(r.response, "all done");
    // 4 model calls of 100 in / 10 out: the children's two are in the parent's usage.
    assert_eq!(r.usage.input_tokens, 400);
    assert_eq!(r.usage.output_tokens, 40);
    let seen = p.seen();
    assert_eq!(seen.len(), 4);
    // The children got the parent's custom tools, without the spawner at max depth, and
    // the role as a system-prompt line.
    let child_tools: Vec<String> = seen[1].0.tools.iter().map(|t| t.name.clone()).collect();
    assert_eq!(child_tools, vec!["echo".to_string()]);
    assert!(seen[1].0.system.contains("Your role: counter"));
    assert!(!seen[2].0.system.contains("Your role"));
    // The tool result quotes both answers in order.
    let Message::ToolResult { content, .. } = seen[3].0.messages.last().unwrap() else {
        panic!("no tool result")
    };
    let (a, b) = (
        content.find("ONE-DONE").unwrap(),
        content.find("TWO-DONE").unwrap(),
    );
    assert!(a < b, "{content}");
    assert!(content.contains("## 2. task-2"), "{content}");
    let k = kinds(&events);
    let starts = k.iter().filter(|k| **k == "subagent_start").count();
    let ends = k.iter().filter(|k| **k == "subagent_end").count();
    assert_eq!((starts, ends), (2, 2), "{k:?}");
    // Each child has its own session with a run in it.
    for ev in &events {
        if let RunEvent::SubagentEnd { session, ok, .. } = ev {
            assert!(ok);
            assert_ne!(session, "s1");
            let t = transcript(&e, session);
            assert!(t.iter().any(|x| matches!(x, Event::RunEnd { .. })), "{t:?}");
        }
    }
}

/// A tool with a bug: it panics.
struct Panicky;

impl Tool for Panicky {
    fn name(&self) -> &str {
        "panicky"
    }
    fn description(&self) -> &str {
        "panics"
    }
    fn schema(&self) -> Value {
        json!({"type": "object"})
    }
    fn call(&self, _: &Value, _: &mut ToolContext<'_>) -> Result<ToolOutput> {
        panic!("a bug in a tool")
    }
}

#[test]
fn a_panic_in_a_run_fails_that_run_with_an_internal_error_and_frees_its_session() {
    let e = env();
    let mut req = request("go");
    let mut tools = ToolRegistry::empty();
    tools.register(Arc::new(Panicky)).unwrap();
    req.tools = Some(Arc::new(tools));
    let p = Fake::new(
        "anthropic",
        vec![call("panicky", json!({})), text("unreached")],
    );
    let (r, _) = run(&e, req, vec![p]);
    let err = r.unwrap_err();
    assert!(matches!(err, Error::Internal(_)), "{err}");
    assert_eq!(err.exit_code(), crate::error::exit::INTERNAL);
    assert!(err.to_string().starts_with("internal error: "), "{err}");
    // The unwinding released the session's lock: the next run on it answers.
    let p = Fake::new("anthropic", vec![text("fine")]);
    let (r, _) = run(&e, request("again"), vec![p]);
    assert_eq!(r.unwrap().response, "fine");
}
