//! The controller's provider clients (`bulkhead::llm`) against the offline mock model
//! (`bulkhead_tests::mock_llm`), over real HTTP on 127.0.0.1: a two-step tool conversation
//! in each wire format, streaming and not; every fault the mock injects classified into the
//! right failover reason; key rotation; and a canary key absent from every error.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bulkhead::llm::models::{build_provider, lookup_provider};
use bulkhead::llm::{
    ApiKey, ChatRequest, FailoverReason, HttpConfig, KeyRing, KeySource, Message, Provider,
    ProviderError, StopReason, ToolSpec,
};
use bulkhead_tests::mock_llm::{Fault, MockLlm, Reply, Script, Step, StreamErrorKind};
use serde_json::json;

const CANARY: &str = "sk-canary-4b1d2e9f7a3c5e8d0b6a";

fn http() -> HttpConfig {
    HttpConfig {
        connect_timeout: Duration::from_secs(2),
        request_timeout: Duration::from_secs(10),
        stream_idle_timeout: Duration::from_millis(500),
        proxy_from_env: false,
        // The mock is on 127.0.0.1: allowed explicitly, as an operator's `[llm]
        // allow_loopback = true` would (the default refuses loopback).
        ssrf: bulkhead::net::SsrfPolicy {
            allow_loopback: true,
            ..Default::default()
        },
        ..Default::default()
    }
}

/// (provider name, model) pairs covering the three wire formats and an OpenAI-compatible
/// server.
const PROVIDERS: &[(&str, &str)] = &[
    ("anthropic", "claude-sonnet-4-5"),
    ("openai", "gpt-4o"),
    ("google", "gemini-2.5-flash"),
    ("groq", "llama-3.3-70b-versatile"),
];

fn client(mock: &MockLlm, name: &str) -> Arc<dyn Provider> {
    let spec = lookup_provider(name).unwrap();
    let base = match spec.api {
        bulkhead::llm::ApiFlavor::OpenAi => mock.openai_base_url(),
        _ => mock.base_url(),
    };
    build_provider(spec, &base, http())
}

fn tools() -> Vec<ToolSpec> {
    vec![ToolSpec {
        name: "read".into(),
        description: "Read a file in /workspace".into(),
        input_schema: json!({"type": "object", "properties": {"path": {"type": "string"}}, "required": ["path"]}),
    }]
}

fn request(model: &str, messages: Vec<Message>, stream: bool) -> ChatRequest {
    ChatRequest {
        model: model.into(),
        system: "You are a test agent.".into(),
        messages,
        tools: tools(),
        max_tokens: 256,
        temperature: Some(0.0),
        stream,
        deadline: None,
    }
}

fn assert_no_canary(e: &ProviderError) {
    for s in [e.to_string(), format!("{e:?}")] {
        assert!(!s.contains(CANARY), "the key leaked into an error: {s}");
    }
}

#[test]
fn tool_conversation_in_every_wire_format() {
    for &(name, model) in PROVIDERS {
        for stream in [false, true] {
            let mock = MockLlm::start(
                Script::new()
                    .reply(
                        Reply::tool_call("read", json!({"path": "/workspace/a.txt"}))
                            .with_text("Reading it.")
                            .usage(40, 12),
                    )
                    .reply(Reply::echo_tool_result("The file says: ").usage(60, 9)),
            );
            let p = client(&mock, name);
            assert_eq!(p.name(), name);
            let key = ApiKey::new(CANARY);
            let ctx = format!("{name} stream={stream}");

            let mut messages = vec![Message::User {
                text: "What is in a.txt?".into(),
            }];
            let mut deltas = String::new();
            let r1 = p
                .chat(&request(model, messages.clone(), stream), &key, &mut |t| {
                    deltas.push_str(t)
                })
                .unwrap_or_else(|e| panic!("{ctx}: {e}"));
            assert_eq!(r1.stop, StopReason::ToolUse, "{ctx}");
            assert_eq!(r1.text, "Reading it.", "{ctx}");
            assert_eq!(deltas, "Reading it.", "{ctx}");
            assert_eq!(r1.tool_calls.len(), 1, "{ctx}");
            assert_eq!(r1.tool_calls[0].name, "read", "{ctx}");
            assert_eq!(
                r1.tool_calls[0].arguments,
                json!({"path": "/workspace/a.txt"}),
                "{ctx}"
            );
            assert_eq!(
                (r1.usage.input_tokens, r1.usage.output_tokens),
                (40, 12),
                "{ctx}"
            );

            let call = r1.tool_calls[0].clone();
            messages.push(Message::Assistant {
                text: r1.text.clone(),
                tool_calls: r1.tool_calls.clone(),
            });
            messages.push(Message::ToolResult {
                call_id: call.id.clone(),
                name: call.name.clone(),
                content: "hello from a.txt".into(),
                is_error: false,
            });
            let r2 = p
                .chat(&request(model, messages, stream), &key, &mut |_| {})
                .unwrap_or_else(|e| panic!("{ctx}: {e}"));
            assert_eq!(r2.stop, StopReason::EndTurn, "{ctx}");
            assert!(r2.tool_calls.is_empty(), "{ctx}");
            assert_eq!(r2.text, "The file says: hello from a.txt", "{ctx}");
            assert_eq!(
                (r2.usage.input_tokens, r2.usage.output_tokens),
                (60, 9),
                "{ctx}"
            );

            let reqs = mock.requests();
            assert_eq!(reqs.len(), 2, "{ctx}");
            for r in &reqs {
                assert_eq!(r.api_key.as_deref(), Some(CANARY), "{ctx}");
                assert_eq!(r.stream, stream, "{ctx}");
                assert_eq!(r.model.as_deref(), Some(model), "{ctx}");
                // The key travels in a header only.
                assert!(
                    !r.body_contains(CANARY),
                    "{ctx}: key in path, query or body"
                );
            }
            assert_eq!(reqs[1].tool_results(), vec!["hello from a.txt"], "{ctx}");
            assert!(reqs[1].ends_with_tool_result(), "{ctx}");
            mock.assert_script_consumed();
        }
    }
}

#[test]
fn keyless_local_server() {
    let mock = MockLlm::start(Script::new().reply(Reply::text("local answer")));
    let p = build_provider(
        lookup_provider("ollama").unwrap(),
        &mock.openai_base_url(),
        http(),
    );
    let mut ring = KeyRing::resolve("ollama", None, &|_| None);
    let (_, key) = ring.current(Instant::now()).unwrap();
    let r = p
        .chat(
            &request("llama3.2", vec![Message::User { text: "hi".into() }], true),
            key,
            &mut |_| {},
        )
        .unwrap();
    assert_eq!(r.text, "local answer");
    let reqs = mock.requests();
    assert!(reqs[0].header("authorization").is_none());
}

/// One fault, whether to stream, and the reason it must come back as.
fn fault_table() -> Vec<(Fault, bool, FailoverReason)> {
    use FailoverReason as R;
    vec![
        (Fault::rate_limited(2), false, R::RateLimit),
        (Fault::rate_limited(2), true, R::RateLimit),
        (
            Fault::RateLimited {
                retry_after_secs: None,
                headers: true,
            },
            false,
            R::RateLimit,
        ),
        (Fault::QuotaExceeded, false, R::Billing),
        (Fault::overloaded(), false, R::Overloaded),
        (Fault::overloaded(), true, R::Overloaded),
        (
            Fault::Unavailable {
                retry_after_secs: Some(1),
            },
            false,
            R::Overloaded,
        ),
        (Fault::ServerError, false, R::Unknown),
        (Fault::Timeout, false, R::Timeout),
        (Fault::Unauthorized, false, R::Auth),
        (Fault::Forbidden, false, R::AuthPermanent),
        (
            Fault::PaymentRequired { rate_limit: false },
            false,
            R::Billing,
        ),
        (
            Fault::PaymentRequired { rate_limit: true },
            false,
            R::RateLimit,
        ),
        (Fault::ModelNotFound, false, R::ModelNotFound),
        (Fault::context_overflow(), false, R::ContextOverflow),
        (Fault::context_overflow(), true, R::ContextOverflow),
        (
            Fault::BadRequest {
                message: "messages: roles must alternate between \"user\" and \"assistant\"".into(),
            },
            false,
            R::Format,
        ),
        (Fault::MalformedJson { after_events: 1 }, false, R::Format),
        (Fault::MalformedJson { after_events: 1 }, true, R::Format),
        (
            Fault::Stall {
                after_events: 1,
                max_secs: Some(5),
                reply: None,
            },
            true,
            R::Timeout,
        ),
        (
            Fault::Truncated {
                after_events: 2,
                reply: None,
            },
            true,
            R::Unknown,
        ),
        (
            Fault::MidStreamError {
                after_events: 2,
                error: StreamErrorKind::Overloaded,
                reply: None,
            },
            true,
            R::Overloaded,
        ),
        (Fault::ConnectionReset, false, R::Unknown),
        (Fault::Hangup, true, R::Unknown),
    ]
}

#[test]
fn every_fault_is_classified_in_every_wire_format() {
    let mut failures = Vec::new();
    for &(name, model) in &PROVIDERS[..3] {
        let table = fault_table();
        let mut script = Script::new();
        for (f, _, _) in &table {
            script = script.fault(f.clone());
        }
        let mock = MockLlm::start(script);
        let p = client(&mock, name);
        let key = ApiKey::new(CANARY);
        for (fault, stream, want) in table {
            let t0 = Instant::now();
            let res = p.chat(
                &request(model, vec![Message::User { text: "hi".into() }], stream),
                &key,
                &mut |_| {},
            );
            let ctx = format!("{name} {} stream={stream}", fault.kind());
            match res {
                Ok(r) => failures.push(format!("{ctx}: succeeded: {r:?}")),
                Err(e) => {
                    assert_no_canary(&e);
                    assert_eq!(e.provider, name);
                    assert_eq!(e.model, model);
                    if e.reason != want {
                        failures.push(format!("{ctx}: got {} ({e}), want {want}", e.reason));
                    }
                    if let Fault::RateLimited {
                        retry_after_secs: Some(s),
                        ..
                    } = fault
                    {
                        if e.retry_after != Some(Duration::from_secs(s)) {
                            failures.push(format!("{ctx}: retry_after {:?}", e.retry_after));
                        }
                    }
                    if matches!(fault, Fault::Stall { .. }) && t0.elapsed() > Duration::from_secs(3)
                    {
                        failures.push(format!("{ctx}: the stall took {:?}", t0.elapsed()));
                    }
                }
            }
        }
        mock.assert_script_consumed();
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn rate_limited_key_rotates_to_the_next() {
    let mock = MockLlm::start(
        Script::new()
            .step(Step::fault(Fault::rate_limited(30)).key("sk-first-11111111"))
            .step(Step::reply(Reply::text("served by the second key")).key("sk-second-22222222")),
    );
    let p = client(&mock, "anthropic");
    let env = |name: &str| {
        (name == "ANTHROPIC_API_KEYS").then(|| "sk-first-11111111,sk-second-22222222".to_string())
    };
    let mut ring = KeyRing::resolve("anthropic", None, &env);
    assert_eq!(ring.len(), 2);
    let req = request(
        "claude-sonnet-4-5",
        vec![Message::User { text: "hi".into() }],
        true,
    );
    let now = Instant::now();
    let mut answer = None;
    for _ in 0..3 {
        let (idx, key) = ring.current(now).expect("a key is available");
        let key = key.clone();
        match p.chat(&req, &key, &mut |_| {}) {
            Ok(r) => {
                ring.report_success(idx);
                answer = Some((idx, r.text));
                break;
            }
            Err(e) => {
                assert_eq!(e.reason, FailoverReason::RateLimit);
                assert_eq!(e.retry_after, Some(Duration::from_secs(30)));
                assert!(ring.report_failure(idx, e.reason, e.retry_after, now));
            }
        }
    }
    assert_eq!(answer, Some((1, "served by the second key".to_string())));
    assert_eq!(
        ring.source(1),
        Some(&KeySource::Env("ANTHROPIC_API_KEYS".into()))
    );
    // The first key stays out for the 30 s the provider asked.
    assert_eq!(ring.current(now + Duration::from_secs(5)).unwrap().0, 1);
    let keys: Vec<_> = mock.requests().iter().map(|r| r.api_key.clone()).collect();
    assert_eq!(
        keys,
        vec![
            Some("sk-first-11111111".to_string()),
            Some("sk-second-22222222".to_string())
        ]
    );
    mock.assert_script_consumed();
}
