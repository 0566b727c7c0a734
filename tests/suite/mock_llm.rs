//! The offline mock model server (`bulkhead_tests::mock_llm`, binary `bulkhead-mock-llm`):
//! each wire format's replies (JSON and SSE, text and tool calls) have the documented
//! shapes, each fault its status, headers and body, requests are recorded, scripts are
//! matched per model and key, exhaustion fails loudly, keep-alive works with a raw client
//! and with ureq (the controller's client), and the binary serves the demo script.

use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use bulkhead_tests::mock_llm::{Api, Fault, MockLlm, Reply, Script, Step, StreamErrorKind, Usage};
use serde_json::{json, Value};

// ---------------------------------------------------------------- a minimal HTTP client

/// A response as the raw client saw it.
#[derive(Debug)]
struct Resp {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
    /// Transport failure after the head (EOF inside the body, reset, timeout).
    error: Option<io::ErrorKind>,
}

impl Resp {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("response is not JSON ({e}): {}", self.text()))
    }
}

/// One TCP connection, reusable for keep-alive.
struct Conn {
    w: TcpStream,
    r: BufReader<TcpStream>,
}

impl Conn {
    fn open(mock: &MockLlm) -> Conn {
        let w = TcpStream::connect(mock.addr()).expect("connect to the mock");
        w.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let r = BufReader::new(w.try_clone().unwrap());
        Conn { w, r }
    }

    fn send(&mut self, path: &str, headers: &[(&str, &str)], body: &str) -> io::Result<Resp> {
        let mut req = format!(
            "POST {path} HTTP/1.1\r\nhost: 127.0.0.1\r\ncontent-type: application/json\r\n\
             content-length: {}\r\n",
            body.len()
        );
        for (n, v) in headers {
            req.push_str(&format!("{n}: {v}\r\n"));
        }
        req.push_str("\r\n");
        req.push_str(body);
        self.w.write_all(req.as_bytes())?;
        self.read_response()
    }

    fn line(&mut self) -> io::Result<String> {
        let mut l = String::new();
        if self.r.read_line(&mut l)? == 0 {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        Ok(l.trim_end_matches(['\r', '\n']).to_string())
    }

    fn read_response(&mut self) -> io::Result<Resp> {
        let status_line = self.line()?;
        let status: u16 = status_line
            .split(' ')
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| panic!("bad status line {status_line:?}"));
        let mut headers = Vec::new();
        loop {
            let l = self.line()?;
            if l.is_empty() {
                break;
            }
            let (n, v) = l.split_once(':').expect("header line");
            headers.push((n.trim().to_ascii_lowercase(), v.trim().to_string()));
        }
        let mut resp = Resp {
            status,
            headers,
            body: Vec::new(),
            error: None,
        };
        let res = if status < 200 {
            Ok(())
        } else if resp.header("transfer-encoding") == Some("chunked") {
            self.read_chunked(&mut resp.body)
        } else if let Some(n) = resp.header("content-length") {
            let n: usize = n.parse().unwrap();
            let mut buf = vec![0; n];
            let mut got = 0;
            let mut res = Ok(());
            while got < n {
                match self.r.read(&mut buf[got..]) {
                    Ok(0) => {
                        res = Err(io::ErrorKind::UnexpectedEof.into());
                        break;
                    }
                    Ok(k) => got += k,
                    Err(e) => {
                        res = Err(e);
                        break;
                    }
                }
            }
            buf.truncate(got);
            resp.body = buf;
            res
        } else {
            self.r.read_to_end(&mut resp.body).map(|_| ())
        };
        resp.error = res.err().map(|e| e.kind());
        Ok(resp)
    }

    fn read_chunked(&mut self, body: &mut Vec<u8>) -> io::Result<()> {
        loop {
            let size = usize::from_str_radix(&self.line()?, 16).expect("chunk size");
            if size == 0 {
                assert_eq!(self.line()?, "", "no trailers expected");
                return Ok(());
            }
            let start = body.len();
            body.resize(start + size, 0);
            self.r.read_exact(&mut body[start..])?;
            assert_eq!(self.line()?, "", "chunk must end with CRLF");
        }
    }
}

const ANT_KEY: &str = "sk-ant-test-key-0001";
const OAI_KEY: &str = "sk-openai-test-key-0001";
const GEM_KEY: &str = "AIza-gemini-test-key-0001";

fn anthropic(conn: &mut Conn, body: &Value) -> Resp {
    conn.send(
        "/v1/messages",
        &[("x-api-key", ANT_KEY), ("anthropic-version", "2023-06-01")],
        &body.to_string(),
    )
    .expect("anthropic request")
}

fn openai(conn: &mut Conn, body: &Value) -> Resp {
    conn.send(
        "/v1/chat/completions",
        &[("authorization", &format!("Bearer {OAI_KEY}"))],
        &body.to_string(),
    )
    .expect("openai request")
}

fn gemini(conn: &mut Conn, model: &str, stream: bool, body: &Value) -> Resp {
    let path = if stream {
        format!("/v1beta/models/{model}:streamGenerateContent?alt=sse")
    } else {
        format!("/v1beta/models/{model}:generateContent")
    };
    conn.send(&path, &[("x-goog-api-key", GEM_KEY)], &body.to_string())
        .expect("gemini request")
}

/// A one-request call in `api`'s format with a plain user message.
fn call(mock: &MockLlm, api: Api, stream: bool) -> Resp {
    let mut c = Conn::open(mock);
    match api {
        Api::Anthropic => anthropic(&mut c, &ant_body("claude-test", stream)),
        Api::OpenAi => openai(&mut c, &oai_body("gpt-test", stream)),
        Api::Gemini => gemini(&mut c, "gemini-test", stream, &gem_body()),
    }
}

fn ant_body(model: &str, stream: bool) -> Value {
    json!({"model": model, "max_tokens": 1024, "stream": stream,
           "messages": [{"role": "user", "content": "hello"}]})
}

fn oai_body(model: &str, stream: bool) -> Value {
    json!({"model": model, "stream": stream,
           "messages": [{"role": "user", "content": "hello"}]})
}

fn gem_body() -> Value {
    json!({"contents": [{"role": "user", "parts": [{"text": "hello"}]}]})
}

/// SSE events `(event name, data)`; accepts `\n` and `\r\n` line ends.
fn sse(body: &[u8]) -> Vec<(Option<String>, String)> {
    let text = String::from_utf8_lossy(body).replace("\r\n", "\n");
    text.split("\n\n")
        .filter(|b| !b.trim().is_empty())
        .map(|block| {
            let mut name = None;
            let mut data = Vec::new();
            for l in block.lines() {
                if let Some(v) = l.strip_prefix("event:") {
                    name = Some(v.trim().to_string());
                } else if let Some(v) = l.strip_prefix("data:") {
                    data.push(v.trim_start().to_string());
                } else {
                    panic!("unexpected SSE line {l:?}");
                }
            }
            (name, data.join("\n"))
        })
        .collect()
}

fn sse_json(body: &[u8]) -> Vec<(Option<String>, Value)> {
    sse(body)
        .into_iter()
        .filter(|(_, d)| d != "[DONE]")
        .map(|(n, d)| {
            let v = serde_json::from_str(&d).unwrap_or_else(|e| panic!("bad data {d:?}: {e}"));
            (n, v)
        })
        .collect()
}

fn demo_reply() -> Reply {
    Reply::text("Let me look.")
        .and_tool_call(
            "bash",
            json!({"command": "echo hello > /workspace/hello.txt"}),
        )
        .and_tool_call("read", json!({"path": "/workspace/hello.txt"}))
        .usage(120, 34)
}

// ---------------------------------------------------------------- Anthropic

#[test]
fn anthropic_json_replies_have_the_documented_shape() {
    let mock = MockLlm::start(
        Script::new()
            .reply(demo_reply())
            .reply(Reply::text("All done.")),
    );
    let mut c = Conn::open(&mock);
    let r = anthropic(&mut c, &ant_body("claude-sonnet-4-5", false));
    assert_eq!(r.status, 200);
    assert_eq!(r.header("content-type"), Some("application/json"));
    assert!(r.header("request-id").is_some());
    let v = r.json();
    assert_eq!(v["type"], "message");
    assert_eq!(v["role"], "assistant");
    assert_eq!(v["model"], "claude-sonnet-4-5");
    assert!(v["id"].as_str().unwrap().starts_with("msg_"));
    assert_eq!(v["stop_reason"], "tool_use");
    let content = v["content"].as_array().unwrap();
    assert_eq!(content.len(), 3);
    assert_eq!(content[0], json!({"type": "text", "text": "Let me look."}));
    assert_eq!(content[1]["type"], "tool_use");
    assert!(content[1]["id"].as_str().unwrap().starts_with("toolu_"));
    assert_ne!(content[1]["id"], content[2]["id"]);
    assert_eq!(content[1]["name"], "bash");
    assert_eq!(
        content[1]["input"],
        json!({"command": "echo hello > /workspace/hello.txt"})
    );
    assert_eq!(content[2]["name"], "read");
    assert_eq!(v["usage"]["input_tokens"], 120);
    assert_eq!(v["usage"]["output_tokens"], 34);

    let v = anthropic(&mut c, &ant_body("claude-sonnet-4-5", false)).json();
    assert_eq!(v["stop_reason"], "end_turn");
    assert_eq!(v["content"], json!([{"type": "text", "text": "All done."}]));
    assert!(
        v["usage"]["input_tokens"].as_u64().unwrap() > 0,
        "estimated usage"
    );
    mock.assert_script_consumed();
}

#[test]
fn anthropic_stream_has_the_documented_events() {
    let mock = MockLlm::start(Script::new().reply(demo_reply().chunk_chars(4)));
    let r = call(&mock, Api::Anthropic, true);
    assert_eq!(r.status, 200);
    assert!(r
        .header("content-type")
        .unwrap()
        .starts_with("text/event-stream"));
    assert_eq!(r.header("transfer-encoding"), Some("chunked"));
    assert_eq!(r.error, None);
    let events = sse_json(&r.body);
    for (name, data) in &events {
        assert_eq!(
            name.as_deref(),
            data["type"].as_str(),
            "event name = data.type"
        );
    }
    let names: Vec<&str> = events.iter().map(|(n, _)| n.as_deref().unwrap()).collect();
    assert_eq!(names[0], "message_start");
    assert_eq!(names[1], "content_block_start");
    assert!(names.contains(&"ping"));
    assert_eq!(&names[names.len() - 2..], ["message_delta", "message_stop"]);
    let start = &events[0].1["message"];
    assert_eq!(start["content"], json!([]));
    assert_eq!(start["usage"]["input_tokens"], 120);
    assert_eq!(start["stop_reason"], Value::Null);

    // Rebuild the content the way a client does.
    let mut blocks: Vec<Value> = Vec::new();
    let mut partial: Vec<String> = Vec::new();
    let mut text_deltas = 0;
    for (_, d) in &events {
        match d["type"].as_str().unwrap() {
            "content_block_start" => {
                assert_eq!(d["index"].as_u64().unwrap() as usize, blocks.len());
                blocks.push(d["content_block"].clone());
                partial.push(String::new());
            }
            "content_block_delta" => {
                let i = d["index"].as_u64().unwrap() as usize;
                match d["delta"]["type"].as_str().unwrap() {
                    "text_delta" => {
                        text_deltas += 1;
                        let t = blocks[i]["text"].as_str().unwrap().to_string();
                        blocks[i]["text"] = json!(t + d["delta"]["text"].as_str().unwrap());
                    }
                    "input_json_delta" => {
                        partial[i].push_str(d["delta"]["partial_json"].as_str().unwrap())
                    }
                    other => panic!("delta type {other}"),
                }
            }
            "content_block_stop" => {
                let i = d["index"].as_u64().unwrap() as usize;
                if blocks[i]["type"] == "tool_use" {
                    blocks[i]["input"] = serde_json::from_str(&partial[i]).unwrap();
                }
            }
            "message_delta" => {
                assert_eq!(d["delta"]["stop_reason"], "tool_use");
                assert_eq!(d["usage"]["output_tokens"], 34);
            }
            _ => {}
        }
    }
    assert!(text_deltas >= 3, "text comes in several deltas");
    assert_eq!(blocks[0], json!({"type": "text", "text": "Let me look."}));
    assert_eq!(blocks[1]["name"], "bash");
    assert_eq!(
        blocks[1]["input"],
        json!({"command": "echo hello > /workspace/hello.txt"})
    );
    assert_eq!(blocks[2]["input"], json!({"path": "/workspace/hello.txt"}));
}

// ---------------------------------------------------------------- OpenAI

#[test]
fn openai_json_replies_have_the_documented_shape() {
    let mock = MockLlm::start(
        Script::new()
            .reply(demo_reply())
            .reply(Reply::text("short").max_tokens()),
    );
    let mut c = Conn::open(&mock);
    let r = openai(&mut c, &oai_body("gpt-4o", false));
    assert_eq!(r.status, 200);
    let v = r.json();
    assert_eq!(v["object"], "chat.completion");
    assert_eq!(v["model"], "gpt-4o");
    let choice = &v["choices"][0];
    assert_eq!(choice["finish_reason"], "tool_calls");
    assert_eq!(choice["message"]["role"], "assistant");
    assert_eq!(choice["message"]["content"], "Let me look.");
    let calls = choice["message"]["tool_calls"].as_array().unwrap();
    assert_eq!(calls.len(), 2);
    assert_eq!(calls[0]["type"], "function");
    assert!(calls[0]["id"].as_str().unwrap().starts_with("call_"));
    assert_eq!(calls[0]["function"]["name"], "bash");
    let args: Value =
        serde_json::from_str(calls[0]["function"]["arguments"].as_str().unwrap()).unwrap();
    assert_eq!(
        args,
        json!({"command": "echo hello > /workspace/hello.txt"})
    );
    assert_eq!(v["usage"]["prompt_tokens"], 120);
    assert_eq!(v["usage"]["completion_tokens"], 34);
    assert_eq!(v["usage"]["total_tokens"], 154);

    let v = openai(&mut c, &oai_body("gpt-4o", false)).json();
    assert_eq!(v["choices"][0]["finish_reason"], "length");
    assert!(v["choices"][0]["message"].get("tool_calls").is_none());
}

#[test]
fn openai_stream_has_deltas_usage_chunk_and_done() {
    let mock = MockLlm::start(
        Script::new()
            .reply(demo_reply().chunk_chars(5))
            .reply(Reply::text("no usage asked")),
    );
    let mut c = Conn::open(&mock);
    let mut body = oai_body("gpt-4o", true);
    body["stream_options"] = json!({"include_usage": true});
    let r = openai(&mut c, &body);
    assert_eq!(r.status, 200);
    assert!(r
        .header("content-type")
        .unwrap()
        .starts_with("text/event-stream"));
    let raw = sse(&r.body);
    assert!(
        raw.iter().all(|(n, _)| n.is_none()),
        "OpenAI sends data lines only"
    );
    assert_eq!(raw.last().unwrap().1, "[DONE]");
    let chunks = sse_json(&r.body);
    let mut text = String::new();
    let mut calls: Vec<(String, String, String)> = Vec::new();
    let mut finish = None;
    let mut usage = None;
    for (_, ch) in &chunks {
        assert_eq!(ch["object"], "chat.completion.chunk");
        if !ch["usage"].is_null() {
            assert_eq!(ch["choices"], json!([]), "the usage chunk has no choices");
            usage = Some(ch["usage"].clone());
            continue;
        }
        let choice = &ch["choices"][0];
        let delta = &choice["delta"];
        if let Some(t) = delta["content"].as_str() {
            text.push_str(t);
        }
        for tc in delta["tool_calls"].as_array().into_iter().flatten() {
            let i = tc["index"].as_u64().unwrap() as usize;
            if i == calls.len() {
                calls.push((
                    tc["id"].as_str().unwrap().into(),
                    tc["function"]["name"].as_str().unwrap().into(),
                    String::new(),
                ));
            }
            calls[i].2 += tc["function"]["arguments"].as_str().unwrap_or("");
        }
        if !choice["finish_reason"].is_null() {
            finish = Some(choice["finish_reason"].clone());
        }
    }
    assert_eq!(text, "Let me look.");
    assert_eq!(finish, Some(json!("tool_calls")));
    assert_eq!(calls.len(), 2);
    assert!(calls[0].0.starts_with("call_"));
    assert_eq!(calls[1].1, "read");
    let args: Value = serde_json::from_str(&calls[1].2).unwrap();
    assert_eq!(args, json!({"path": "/workspace/hello.txt"}));
    assert_eq!(usage.unwrap()["completion_tokens"], 34);

    // Without include_usage: no usage field, no usage chunk.
    let r = openai(&mut c, &oai_body("gpt-4o", true));
    let chunks = sse_json(&r.body);
    assert!(chunks.iter().all(|(_, ch)| ch.get("usage").is_none()));
    assert_eq!(sse(&r.body).last().unwrap().1, "[DONE]");
}

// ---------------------------------------------------------------- Gemini

#[test]
fn gemini_replies_json_sse_and_array() {
    let mock = MockLlm::start(
        Script::new()
            .reply(demo_reply())
            .reply(demo_reply().chunk_chars(3))
            .reply(Reply::text("array form").chunk_chars(3)),
    );
    let mut c = Conn::open(&mock);
    let r = gemini(&mut c, "gemini-2.5-flash", false, &gem_body());
    assert_eq!(r.status, 200);
    let v = r.json();
    let cand = &v["candidates"][0];
    assert_eq!(cand["content"]["role"], "model");
    assert_eq!(cand["finishReason"], "STOP");
    let parts = cand["content"]["parts"].as_array().unwrap();
    assert_eq!(parts[0], json!({"text": "Let me look."}));
    assert_eq!(
        parts[1]["functionCall"],
        json!({"name": "bash", "args": {"command": "echo hello > /workspace/hello.txt"}})
    );
    assert_eq!(v["usageMetadata"]["promptTokenCount"], 120);
    assert_eq!(v["usageMetadata"]["candidatesTokenCount"], 34);
    assert_eq!(v["modelVersion"], "gemini-2.5-flash");

    let r = gemini(&mut c, "gemini-2.5-flash", true, &gem_body());
    assert!(r
        .header("content-type")
        .unwrap()
        .starts_with("text/event-stream"));
    assert!(
        r.text().contains("\r\n\r\n"),
        "Gemini frames events with CRLF"
    );
    let chunks = sse_json(&r.body);
    assert!(chunks.len() > 2);
    let mut text = String::new();
    let mut calls = Vec::new();
    for (_, ch) in &chunks {
        for p in ch["candidates"][0]["content"]["parts"].as_array().unwrap() {
            if let Some(t) = p["text"].as_str() {
                text.push_str(t);
            }
            if let Some(fc) = p.get("functionCall") {
                calls.push(fc.clone());
            }
        }
    }
    assert_eq!(text, "Let me look.");
    assert_eq!(calls.len(), 2);
    assert_eq!(calls[1]["args"], json!({"path": "/workspace/hello.txt"}));
    let last = &chunks.last().unwrap().1;
    assert_eq!(last["candidates"][0]["finishReason"], "STOP");
    assert_eq!(last["usageMetadata"]["candidatesTokenCount"], 34);
    assert!(chunks[0].1["candidates"][0].get("finishReason").is_none());

    // Without alt=sse: one streamed JSON array.
    let r = c
        .send(
            "/v1beta/models/gemini-2.5-flash:streamGenerateContent?key=QUERY-KEY",
            &[],
            &gem_body().to_string(),
        )
        .unwrap();
    assert!(r
        .header("content-type")
        .unwrap()
        .starts_with("application/json"));
    let arr = r.json();
    let arr = arr.as_array().unwrap();
    let text: String = arr
        .iter()
        .map(|ch| {
            ch["candidates"][0]["content"]["parts"][0]["text"]
                .as_str()
                .unwrap()
        })
        .collect();
    assert_eq!(text, "array form");
    let reqs = mock.requests();
    assert_eq!(reqs[0].api_key.as_deref(), Some(GEM_KEY));
    assert_eq!(reqs[2].api_key.as_deref(), Some("QUERY-KEY"));
    assert_eq!(reqs[2].model.as_deref(), Some("gemini-2.5-flash"));
    assert!(!reqs[0].stream && reqs[1].stream && reqs[2].stream);
}

// ---------------------------------------------------------------- faults

/// (fault, api, status, body pointer → expected value, message fragment)
type FaultCase = (Fault, Api, u16, (&'static str, &'static str), &'static str);

fn fault_cases() -> Vec<FaultCase> {
    use Api::{Anthropic as A, Gemini as G, OpenAi as O};
    let rl = Fault::RateLimited {
        retry_after_secs: None,
        headers: false,
    };
    let ovl = Fault::overloaded();
    let unav = Fault::Unavailable {
        retry_after_secs: None,
    };
    let bill = Fault::PaymentRequired { rate_limit: false };
    let rl402 = Fault::PaymentRequired { rate_limit: true };
    let ctx = Fault::ContextOverflow {
        tokens: Some(250_000),
        max: Some(200_000),
    };
    let at = "/error/type";
    let ot = "/error/type";
    let oc = "/error/code";
    let gs = "/error/status";
    vec![
        (rl.clone(), A, 429, (at, "rate_limit_error"), "rate limit"),
        (rl.clone(), O, 429, (oc, "rate_limit_exceeded"), "Rate limit reached for gpt-test"),
        (rl, G, 429, (gs, "RESOURCE_EXHAUSTED"), "Resource has been exhausted"),
        (Fault::QuotaExceeded, A, 400, (at, "invalid_request_error"), "credit balance is too low"),
        (Fault::QuotaExceeded, O, 429, (oc, "insufficient_quota"), "exceeded your current quota"),
        (Fault::QuotaExceeded, G, 429, (gs, "RESOURCE_EXHAUSTED"), "exceeded your current quota"),
        (ovl.clone(), A, 529, (at, "overloaded_error"), "Overloaded"),
        (ovl.clone(), O, 503, (ot, "server_error"), "overloaded"),
        (ovl, G, 503, (gs, "UNAVAILABLE"), "The model is overloaded"),
        (unav.clone(), A, 503, (at, "api_error"), "unavailable"),
        (unav.clone(), O, 503, (ot, "server_error"), "not ready"),
        (unav, G, 503, (gs, "UNAVAILABLE"), "unavailable"),
        (Fault::ServerError, A, 500, (at, "api_error"), "Internal server error"),
        (Fault::ServerError, O, 500, (ot, "server_error"), "had an error"),
        (Fault::ServerError, G, 500, (gs, "INTERNAL"), "internal error"),
        (Fault::Timeout, A, 504, (at, "timeout_error"), "timed out"),
        (Fault::Timeout, G, 504, (gs, "DEADLINE_EXCEEDED"), "Deadline"),
        (Fault::Unauthorized, A, 401, (at, "authentication_error"), "invalid x-api-key"),
        (Fault::Unauthorized, O, 401, (oc, "invalid_api_key"), "Incorrect API key provided: sk-*"),
        (Fault::Unauthorized, G, 400, ("/error/details/0/reason", "API_KEY_INVALID"), "API key not valid"),
        (Fault::Forbidden, A, 403, (at, "permission_error"), "permission"),
        (Fault::Forbidden, O, 403, (oc, "unsupported_country_region_territory"), "not supported"),
        (Fault::Forbidden, G, 403, (gs, "PERMISSION_DENIED"), "permission"),
        (bill.clone(), A, 402, (at, "billing_error"), "credit balance is too low"),
        (bill.clone(), O, 402, (ot, "insufficient_quota"), "Insufficient credits"),
        (bill, G, 402, (gs, "FAILED_PRECONDITION"), "Insufficient credits"),
        (rl402.clone(), A, 402, (at, "billing_error"), "Please try again later"),
        (rl402.clone(), O, 402, (oc, "payment_required"), "Too many requests"),
        (rl402, G, 402, (gs, "RESOURCE_EXHAUSTED"), "rate limit resets"),
        (Fault::ModelNotFound, A, 404, (at, "not_found_error"), "model: claude-test"),
        (Fault::ModelNotFound, O, 404, (oc, "model_not_found"), "The model `gpt-test` does not exist"),
        (Fault::ModelNotFound, G, 404, (gs, "NOT_FOUND"), "models/gemini-test is not found"),
        (ctx.clone(), A, 400, (at, "invalid_request_error"), "prompt is too long: 250000 tokens > 200000 maximum"),
        (ctx.clone(), O, 400, (oc, "context_length_exceeded"), "This model's maximum context length is 200000 tokens. However, your messages resulted in 250000 tokens."),
        (ctx, G, 400, (gs, "INVALID_ARGUMENT"), "The input token count (250000) exceeds the maximum number of tokens allowed (200000)."),
        (Fault::BadRequest { message: "bad tools".into() }, O, 400, (ot, "invalid_request_error"), "bad tools"),
    ]
}

#[test]
fn every_error_fault_has_the_providers_status_and_body() {
    let cases = fault_cases();
    let mut script = Script::new();
    for (f, api, ..) in &cases {
        script = script.step(Step::fault(f.clone()).api(*api));
    }
    let mock = MockLlm::start(script);
    for (i, (fault, api, status, (ptr, want), msg)) in cases.iter().enumerate() {
        let what = format!("case {i}: {fault:?} on {api:?}");
        let r = call(&mock, *api, i % 2 == 0);
        assert_eq!(r.status, *status, "{what}: {}", r.text());
        assert_eq!(r.header("content-type"), Some("application/json"), "{what}");
        let v = r.json();
        assert_eq!(v.pointer(ptr), Some(&json!(want)), "{what}: {v}");
        let message = v["error"]["message"].as_str().unwrap();
        let frag = msg.trim_end_matches('*');
        assert!(message.contains(frag), "{what}: {message:?} lacks {msg:?}");
        match api {
            Api::Anthropic => {
                assert_eq!(v["type"], "error", "{what}");
                assert!(v["request_id"].is_string(), "{what}");
            }
            Api::OpenAi => assert!(v["error"].get("param").is_some(), "{what}"),
            Api::Gemini => assert_eq!(v["error"]["code"], *status, "{what}"),
        }
        assert!(r.header("retry-after").is_none(), "{what}");
    }
    // OpenAI masks the key; nothing echoes it whole.
    let reqs = mock.requests();
    assert_eq!(reqs.len(), cases.len());
    assert!(reqs.iter().all(|r| r.outcome.starts_with("fault:")));
    mock.assert_script_consumed();
}

#[test]
fn unauthorized_never_echoes_the_key() {
    let mock = MockLlm::start(
        Script::new()
            .fault(Fault::Unauthorized)
            .fault(Fault::Unauthorized)
            .fault(Fault::Unauthorized),
    );
    for api in [Api::Anthropic, Api::OpenAi, Api::Gemini] {
        let r = call(&mock, api, false);
        for key in [ANT_KEY, OAI_KEY, GEM_KEY] {
            assert!(
                !r.text().contains(key),
                "{api:?} echoed the key: {}",
                r.text()
            );
        }
    }
}

#[test]
fn rate_limits_carry_retry_after_and_provider_headers() {
    let rl = Fault::RateLimited {
        retry_after_secs: Some(7),
        headers: true,
    };
    let mock = MockLlm::start(
        Script::new()
            .fault(rl.clone())
            .fault(rl.clone())
            .fault(rl)
            .fault(Fault::Overloaded {
                retry_after_secs: Some(3),
            })
            .fault(Fault::Unavailable {
                retry_after_secs: Some(2),
            }),
    );
    let r = call(&mock, Api::Anthropic, false);
    assert_eq!(r.status, 429);
    assert_eq!(r.header("retry-after"), Some("7"));
    assert_eq!(
        r.header("anthropic-ratelimit-requests-remaining"),
        Some("0")
    );
    assert_eq!(r.header("anthropic-ratelimit-requests-limit"), Some("50"));
    let reset = r.header("anthropic-ratelimit-tokens-reset").unwrap();
    assert!(
        reset.len() == 20 && reset.ends_with('Z') && reset.as_bytes()[10] == b'T',
        "RFC 3339 reset: {reset}"
    );
    assert!(r.header("anthropic-ratelimit-input-tokens-reset").is_some());

    let r = call(&mock, Api::OpenAi, true);
    assert_eq!(r.status, 429);
    assert_eq!(r.header("retry-after"), Some("7"));
    assert_eq!(r.header("retry-after-ms"), Some("7000"));
    assert_eq!(r.header("x-ratelimit-remaining-requests"), Some("0"));
    assert_eq!(r.header("x-ratelimit-reset-requests"), Some("7s"));
    assert_eq!(r.header("x-ratelimit-reset-tokens"), Some("7s"));
    assert!(r.json()["error"]["message"]
        .as_str()
        .unwrap()
        .contains("try again in 7s"));

    let r = call(&mock, Api::Gemini, false);
    assert_eq!(r.status, 429);
    assert_eq!(r.header("retry-after"), Some("7"));
    let d = &r.json()["error"]["details"][0];
    assert_eq!(d["@type"], "type.googleapis.com/google.rpc.RetryInfo");
    assert_eq!(d["retryDelay"], "7s");

    let r = call(&mock, Api::Anthropic, true);
    assert_eq!((r.status, r.header("retry-after")), (529, Some("3")));
    let r = call(&mock, Api::Gemini, true);
    assert_eq!((r.status, r.header("retry-after")), (503, Some("2")));
}

#[test]
fn raw_http_fault_and_malformed_json() {
    let mock = MockLlm::start(
        Script::new()
            .fault(Fault::Http {
                status: 502,
                body: "<html>Bad Gateway</html>".into(),
                content_type: Some("text/html".into()),
                headers: vec![("x-extra".into(), "1".into())],
            })
            .fault(Fault::MalformedJson { after_events: 1 })
            .fault(Fault::MalformedJson { after_events: 2 })
            .fault(Fault::MalformedJson { after_events: 1 }),
    );
    let r = call(&mock, Api::OpenAi, false);
    assert_eq!(r.status, 502);
    assert_eq!(r.header("content-type"), Some("text/html"));
    assert_eq!(r.header("x-extra"), Some("1"));
    assert_eq!(r.text(), "<html>Bad Gateway</html>");

    let r = call(&mock, Api::Anthropic, false);
    assert_eq!(r.status, 200);
    assert_eq!(r.error, None);
    assert!(
        r.text().starts_with("{\"content\""),
        "looks like a reply: {}",
        r.text()
    );
    assert!(serde_json::from_slice::<Value>(&r.body).is_err());

    for api in [Api::Anthropic, Api::OpenAi] {
        let r = call(&mock, api, true);
        assert_eq!(
            (r.status, r.error),
            (200, None),
            "the stream itself completes"
        );
        let events = sse(&r.body);
        let bad: Vec<usize> = events
            .iter()
            .enumerate()
            .filter(|(_, (_, d))| d != "[DONE]" && serde_json::from_str::<Value>(d).is_err())
            .map(|(i, _)| i)
            .collect();
        assert_eq!(bad.len(), 1, "{api:?}: one broken event: {events:?}");
    }
}

#[test]
fn mid_stream_errors_in_each_format() {
    let mid = |error| Fault::MidStreamError {
        after_events: 2,
        error,
        reply: None,
    };
    let mock = MockLlm::start(
        Script::new()
            .fault(mid(StreamErrorKind::Overloaded))
            .fault(mid(StreamErrorKind::ServerError))
            .fault(mid(StreamErrorKind::Overloaded))
            .fault(mid(StreamErrorKind::Overloaded)),
    );
    let r = call(&mock, Api::Anthropic, true);
    assert_eq!((r.status, r.error), (200, None));
    let ev = sse_json(&r.body);
    assert_eq!(ev.len(), 3);
    assert_eq!(ev[0].0.as_deref(), Some("message_start"));
    assert_eq!(ev[2].0.as_deref(), Some("error"));
    assert_eq!(
        ev[2].1,
        json!({"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}})
    );

    let r = call(&mock, Api::OpenAi, true);
    let raw = sse(&r.body);
    assert_ne!(raw.last().unwrap().1, "[DONE]", "no [DONE] after an error");
    let last: Value = serde_json::from_str(&raw.last().unwrap().1).unwrap();
    assert_eq!(last["error"]["type"], "server_error");

    let r = call(&mock, Api::Gemini, true);
    let ev = sse_json(&r.body);
    assert_eq!(ev.last().unwrap().1["error"]["status"], "UNAVAILABLE");

    // A non-streaming request gets the matching HTTP error.
    let r = call(&mock, Api::Anthropic, false);
    assert_eq!(r.status, 529);
}

#[test]
fn truncated_streams_and_bodies_end_without_completion() {
    let mock = MockLlm::start(
        Script::new()
            .fault(Fault::Truncated {
                after_events: 3,
                reply: None,
            })
            .fault(Fault::Truncated {
                after_events: 2,
                reply: None,
            })
            .fault(Fault::Truncated {
                after_events: 2,
                reply: None,
            }),
    );
    let r = call(&mock, Api::Anthropic, true);
    assert_eq!(r.status, 200);
    assert_eq!(r.error, Some(io::ErrorKind::UnexpectedEof), "no last chunk");
    let text = r.text();
    assert_eq!(
        text.matches("\n\n").count(),
        3,
        "three whole events: {text}"
    );
    assert!(!text.ends_with("\n\n"), "then half an event: {text}");
    assert!(!text.contains("message_stop"));

    let r = call(&mock, Api::OpenAi, true);
    assert_eq!(r.error, Some(io::ErrorKind::UnexpectedEof));
    assert!(!r.text().contains("[DONE]"));

    let r = call(&mock, Api::Gemini, false);
    assert_eq!(r.status, 200);
    assert_eq!(r.error, Some(io::ErrorKind::UnexpectedEof));
    let full: usize = r.header("content-length").unwrap().parse().unwrap();
    assert_eq!(r.body.len(), full / 2);
}

#[test]
fn stalled_stream_hangs_until_the_client_gives_up() {
    let mock = MockLlm::start(
        Script::new()
            .fault(Fault::Stall {
                after_events: 1,
                max_secs: None,
                reply: None,
            })
            .fault(Fault::Stall {
                after_events: 1,
                max_secs: None,
                reply: None,
            })
            .reply(Reply::text("after the stall")),
    );
    // Streaming: headers and one event, then silence.
    let mut c = Conn::open(&mock);
    c.w.set_read_timeout(Some(Duration::from_millis(300)))
        .unwrap();
    let t = Instant::now();
    let r = anthropic(&mut c, &ant_body("claude-test", true));
    assert_eq!(r.status, 200);
    assert!(
        matches!(
            r.error,
            Some(io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut)
        ),
        "{:?}",
        r.error
    );
    assert!(t.elapsed() >= Duration::from_millis(300));
    let ev = sse_json(&r.body);
    assert_eq!(ev.len(), 1);
    assert_eq!(ev[0].0.as_deref(), Some("message_start"));
    drop(c);

    // Non-streaming: headers and half the body.
    let mut c = Conn::open(&mock);
    c.w.set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let r = openai(&mut c, &oai_body("gpt-test", false));
    assert_eq!(r.status, 200);
    assert!(r.error.is_some());
    assert!(!r.body.is_empty());

    // The server goes on serving others meanwhile, and stops promptly with c still open.
    let r = call(&mock, Api::Gemini, false);
    assert_eq!(r.status, 200);
    let t = Instant::now();
    drop(mock);
    assert!(
        t.elapsed() < Duration::from_secs(3),
        "stop waited for the stall"
    );
}

#[test]
fn reset_and_hangup_give_no_response() {
    let mock = MockLlm::start(
        Script::new()
            .fault(Fault::ConnectionReset)
            .fault(Fault::Hangup),
    );
    let mut c = Conn::open(&mock);
    match c.send("/v1/messages", &[], &ant_body("m", false).to_string()) {
        Err(e) => assert!(
            matches!(
                e.kind(),
                io::ErrorKind::ConnectionReset | io::ErrorKind::UnexpectedEof
            ),
            "{e}"
        ),
        Ok(r) => panic!("got a response: {r:?}"),
    }
    let mut c = Conn::open(&mock);
    let e = c
        .send("/v1/messages", &[], &ant_body("m", false).to_string())
        .unwrap_err();
    assert_eq!(e.kind(), io::ErrorKind::UnexpectedEof);
    let outcomes: Vec<String> = mock.requests().into_iter().map(|r| r.outcome).collect();
    assert_eq!(outcomes, ["fault:connection_reset", "fault:hangup"]);
}

#[test]
fn slow_streams_pace_events_and_zero_latency_does_not() {
    let reply = || Reply::text("abcdefgh").chunk_chars(2).slow(40);
    let mock = MockLlm::start(
        Script::new()
            .reply(reply())
            .step(Step::reply(reply()).delay_ms(200)),
    );
    let t = Instant::now();
    let r = call(&mock, Api::OpenAi, true);
    // role chunk + 4 text + finish + [DONE] = 7 events, 6 gaps of 40 ms.
    assert_eq!(sse(&r.body).len(), 7);
    assert!(
        t.elapsed() >= Duration::from_millis(240),
        "{:?}",
        t.elapsed()
    );
    let t = Instant::now();
    let r = call(&mock, Api::OpenAi, false);
    assert_eq!(r.status, 200);
    assert!(t.elapsed() >= Duration::from_millis(200), "step delay");

    let mock = MockLlm::start(
        Script::new()
            .step(Step::reply(reply()).delay_ms(2_000).forever())
            .zero_latency(),
    );
    let t = Instant::now();
    for _ in 0..3 {
        assert_eq!(call(&mock, Api::Anthropic, true).status, 200);
    }
    assert!(
        t.elapsed() < Duration::from_millis(1500),
        "{:?}",
        t.elapsed()
    );
}

// ---------------------------------------------------------------- script semantics

#[test]
fn steps_match_on_model_and_key_as_separate_queues() {
    let mock = MockLlm::start(
        Script::new()
            .step(Step::fault(Fault::rate_limited(1)).key("key-a"))
            .step(Step::reply(Reply::text("from key b")).key("key-b"))
            .step(
                Step::fault(Fault::overloaded())
                    .model("claude-primary")
                    .times(2),
            )
            .step(Step::reply(Reply::text("fallback answers")).model("gpt-fallback"))
            .step(
                Step::reply(Reply::text("stream only"))
                    .streaming(true)
                    .api(Api::OpenAi),
            ),
    );
    let ant = |key: &str, model: &str| {
        Conn::open(&mock)
            .send(
                "/v1/messages",
                &[("x-api-key", key)],
                &ant_body(model, false).to_string(),
            )
            .unwrap()
    };
    assert_eq!(ant("key-a", "x").status, 429);
    assert_eq!(ant("key-a", "x").status, 500, "key-a's queue is empty");
    assert_eq!(ant("key-b", "x").json()["content"][0]["text"], "from key b");
    assert_eq!(ant("key-c", "claude-primary").status, 529);
    // The fallback's step is listed before the primary's second use; order is per queue.
    assert_eq!(
        openai(&mut Conn::open(&mock), &oai_body("gpt-fallback", false)).json()["choices"][0]
            ["message"]["content"],
        "fallback answers"
    );
    assert_eq!(ant("key-c", "claude-primary").status, 529);
    assert_eq!(ant("key-c", "claude-primary").status, 500);
    let r = openai(&mut Conn::open(&mock), &oai_body("any", true));
    assert!(r.text().contains("stream only"));
    let steps: Vec<Option<usize>> = mock.requests().iter().map(|r| r.step).collect();
    assert_eq!(
        steps,
        [
            Some(0),
            None,
            Some(1),
            Some(2),
            Some(3),
            Some(2),
            None,
            Some(4)
        ]
    );
    mock.assert_script_consumed();
}

#[test]
fn exhausted_script_fails_loudly_in_each_format() {
    let mock = MockLlm::start(Script::new());
    for api in [Api::Anthropic, Api::OpenAi, Api::Gemini] {
        for stream in [false, true] {
            let r = call(&mock, api, stream);
            assert_eq!(r.status, 500, "{api:?}");
            let v = r.json();
            let msg = v["error"]["message"].as_str().unwrap();
            assert!(msg.contains("mock script exhausted"), "{msg}");
        }
    }
    assert!(mock.requests().iter().all(|r| r.outcome == "exhausted"));
    // A step pushed later is used.
    mock.push(Reply::text("late"));
    assert_eq!(
        call(&mock, Api::Anthropic, false).json()["content"][0]["text"],
        "late"
    );
}

#[test]
fn recording_and_tool_result_echo_in_each_format() {
    let echo = || Reply::echo_tool_result("The tool said: ").usage(5, 6);
    let mock = MockLlm::start(
        Script::new()
            .step(Step::reply(echo()).after_tool_result(true).times(3))
            .step(
                Step::reply(Reply::tool_call(
                    "write",
                    json!({"path": "/workspace/{{model}}.txt", "content": "{{last_user_text}}"}),
                ))
                .after_tool_result(false),
            ),
    );
    let mut c = Conn::open(&mock);
    // Anthropic: tool_result with a string, then with text blocks.
    let body = json!({"model": "claude-test", "max_tokens": 100, "messages": [
        {"role": "user", "content": "run it"},
        {"role": "assistant", "content": [
            {"type": "tool_use", "id": "toolu_1", "name": "bash", "input": {"command": "ls"}}]},
        {"role": "user", "content": [
            {"type": "tool_result", "tool_use_id": "toolu_1",
             "content": [{"type": "text", "text": "hello.txt"}]}]}
    ]});
    let v = anthropic(&mut c, &body).json();
    assert_eq!(v["content"][0]["text"], "The tool said: hello.txt");
    // OpenAI: role tool.
    let body = json!({"model": "gpt-test", "messages": [
        {"role": "user", "content": "run it"},
        {"role": "assistant", "content": null, "tool_calls": [{"id": "call_1", "type": "function",
            "function": {"name": "bash", "arguments": "{\"command\":\"ls\"}"}}]},
        {"role": "tool", "tool_call_id": "call_1", "content": "secret-free output"}
    ]});
    let v = openai(&mut c, &body).json();
    assert_eq!(
        v["choices"][0]["message"]["content"],
        "The tool said: secret-free output"
    );
    // Gemini: functionResponse.
    let body = json!({"contents": [
        {"role": "user", "parts": [{"text": "run it"}]},
        {"role": "model", "parts": [{"functionCall": {"name": "read", "args": {"path": "a"}}}]},
        {"role": "user", "parts": [{"functionResponse": {"name": "read",
            "response": {"content": "file body"}}}]}
    ]});
    let v = gemini(&mut c, "gemini-test", false, &body).json();
    assert_eq!(
        v["candidates"][0]["content"]["parts"][0]["text"],
        "The tool said: file body"
    );
    // No tool result at the end: the other step, with placeholders in the arguments.
    let v = openai(&mut c, &oai_body("gpt-x", false)).json();
    let args = v["choices"][0]["message"]["tool_calls"][0]["function"]["arguments"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(
        serde_json::from_str::<Value>(&args).unwrap(),
        json!({"path": "/workspace/gpt-x.txt", "content": "hello"})
    );

    let reqs = mock.requests();
    assert_eq!(reqs.len(), 4);
    let r = &reqs[0];
    assert_eq!(
        (r.seq, r.method.as_str(), r.path.as_str()),
        (1, "POST", "/v1/messages")
    );
    assert_eq!(r.api, Some(Api::Anthropic));
    assert_eq!(r.api_key.as_deref(), Some(ANT_KEY));
    assert_eq!(r.header("X-Api-Key"), Some(ANT_KEY));
    assert_eq!(r.header("anthropic-version"), Some("2023-06-01"));
    assert_eq!(r.model.as_deref(), Some("claude-test"));
    assert_eq!(r.body["max_tokens"], 100);
    assert_eq!(r.tool_results(), ["hello.txt"]);
    assert!(r.ends_with_tool_result());
    assert!(r.contains(ANT_KEY) && !r.body_contains(ANT_KEY));
    assert_eq!(reqs[1].api_key.as_deref(), Some(OAI_KEY));
    assert_eq!(reqs[1].tool_results(), ["secret-free output"]);
    assert_eq!(reqs[2].tool_results(), ["file body"]);
    assert_eq!(reqs[2].model.as_deref(), Some("gemini-test"));
    assert_eq!(reqs[3].last_user_text().as_deref(), Some("hello"));
    assert!(!reqs[3].ends_with_tool_result());
    assert_eq!(
        reqs.iter().map(|r| r.step).collect::<Vec<_>>(),
        [Some(0), Some(0), Some(0), Some(1)]
    );
    assert!(reqs.iter().all(|r| r.connection == reqs[0].connection));
    assert!(mock.wait_for_requests(4, Duration::from_millis(10)));
    assert!(!mock.wait_for_requests(5, Duration::from_millis(10)));
    mock.clear_requests();
    assert_eq!(mock.request_count(), 0);
}

#[test]
fn unknown_routes_bad_methods_and_bad_bodies_consume_no_step() {
    let mock = MockLlm::start(Script::new().reply(Reply::text("still here")));
    let mut c = Conn::open(&mock);
    let r = c.send("/v1/embeddings", &[], "{}").unwrap();
    assert_eq!(r.status, 404);
    assert!(r.text().contains("no route"));
    let r = c.send("/v1/messages", &[], "{not json").unwrap();
    assert_eq!(r.status, 400);
    assert_eq!(r.json()["error"]["type"], "invalid_request_error");
    c.w.write_all(b"GET /v1/chat/completions HTTP/1.1\r\nhost: x\r\n\r\n")
        .unwrap();
    assert_eq!(c.read_response().unwrap().status, 405);
    let r = anthropic(&mut c, &ant_body("m", false));
    assert_eq!(r.json()["content"][0]["text"], "still here");
    let outcomes: Vec<String> = mock.requests().into_iter().map(|r| r.outcome).collect();
    assert_eq!(
        outcomes,
        ["no_route", "invalid_json", "bad_method", "reply"]
    );
}

#[test]
fn keep_alive_serves_many_requests_on_one_connection() {
    let mock = MockLlm::start(
        Script::new()
            .step(Step::reply(Reply::text("same connection")).forever())
            .zero_latency(),
    );
    let mut c = Conn::open(&mock);
    for (i, stream) in [false, true, false, true].into_iter().enumerate() {
        let r = anthropic(&mut c, &ant_body("m", stream));
        assert_eq!(r.status, 200, "request {i}");
        assert_eq!(r.header("connection"), Some("keep-alive"));
        assert_eq!(r.error, None);
    }
    // Chunked request bodies and Expect: 100-continue are understood too.
    let body = ant_body("m", false).to_string();
    let (a, b) = body.split_at(10);
    let req = format!(
        "POST /v1/messages HTTP/1.1\r\nhost: x\r\ntransfer-encoding: chunked\r\n\
         expect: 100-continue\r\n\r\n{:x}\r\n{a}\r\n{:x}\r\n{b}\r\n0\r\n\r\n",
        a.len(),
        b.len()
    );
    c.w.write_all(req.as_bytes()).unwrap();
    assert_eq!(c.read_response().unwrap().status, 100);
    let r = c.read_response().unwrap();
    assert_eq!(r.json()["content"][0]["text"], "same connection");
    // Connection: close is honoured.
    let r = c
        .send("/v1/messages", &[("connection", "close")], &body)
        .unwrap();
    assert_eq!(r.header("connection"), Some("close"));
    let mut rest = Vec::new();
    assert_eq!(
        c.r.read_to_end(&mut rest).unwrap(),
        0,
        "closed after the reply"
    );
    let reqs = mock.requests();
    assert_eq!(reqs.len(), 6);
    assert!(reqs.iter().all(|r| r.connection == reqs[0].connection));
}

#[test]
fn ureq_works_unchanged_and_reuses_connections() {
    let mock = MockLlm::start(
        Script::new()
            .reply(demo_reply())
            .reply(Reply::text("streamed answer"))
            .fault(Fault::rate_limited(2)),
    );
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(10)))
        .build()
        .into();
    let url = format!("{}/chat/completions", mock.openai_base_url());
    let post = |body: &Value| {
        agent
            .post(&url)
            .header("authorization", &format!("Bearer {OAI_KEY}"))
            .header("content-type", "application/json")
            .send(&body.to_string())
            .expect("ureq request")
    };
    let mut r = post(&oai_body("gpt-4o", false));
    assert_eq!(r.status(), 200);
    let v: Value = serde_json::from_str(&r.body_mut().read_to_string().unwrap()).unwrap();
    assert_eq!(v["choices"][0]["finish_reason"], "tool_calls");

    let mut r = post(&oai_body("gpt-4o", true));
    assert_eq!(r.status(), 200);
    let mut text = String::new();
    let mut done = false;
    for line in BufReader::new(r.body_mut().as_reader()).lines() {
        let line = line.unwrap();
        let Some(data) = line.strip_prefix("data: ") else {
            continue;
        };
        if data == "[DONE]" {
            done = true;
            continue;
        }
        let ch: Value = serde_json::from_str(data).unwrap();
        text += ch["choices"][0]["delta"]["content"].as_str().unwrap_or("");
    }
    assert!(done);
    assert_eq!(text, "streamed answer");

    let mut r = post(&oai_body("gpt-4o", false));
    assert_eq!(r.status(), 429);
    assert_eq!(
        r.headers().get("retry-after").and_then(|v| v.to_str().ok()),
        Some("2")
    );
    let v: Value = serde_json::from_str(&r.body_mut().read_to_string().unwrap()).unwrap();
    assert_eq!(v["error"]["code"], "rate_limit_exceeded");

    let reqs = mock.requests();
    assert_eq!(reqs.len(), 3);
    assert!(
        reqs.iter().all(|r| r.connection == reqs[0].connection),
        "ureq reused its pooled connection"
    );
    assert_eq!(reqs[0].api_key.as_deref(), Some(OAI_KEY));
}

// ---------------------------------------------------------------- script files, binary

#[test]
fn script_json_round_trips_and_rejects_mistakes() {
    let text = r#"[
        {"reply": {"text": "hi", "usage": {"input_tokens": 3}}},
        {"match": {"model": "m", "key": "k", "api": "openai", "stream": true,
                   "tool_result": false, "contains": "x"},
         "times": 2, "delay_ms": 5,
         "fault": {"kind": "rate_limited", "retry_after_secs": 4, "headers": true}},
        {"forever": true, "fault": {"kind": "context_overflow", "tokens": 9, "max": 8}},
        {"fault": {"kind": "stall", "reply": {"tool_calls": [{"name": "ls"}]}}},
        {"fault": {"kind": "mid_stream_error", "error": "server_error"}},
        {"fault": {"kind": "payment_required", "rate_limit": true}},
        {"fault": {"kind": "quota_exceeded"}}
    ]"#;
    let s = Script::from_json(text).unwrap();
    assert_eq!(s.steps.len(), 7);
    assert_eq!(
        s.steps[0].action,
        bulkhead_tests::mock_llm::Action::Reply(Reply {
            usage: Some(Usage {
                input_tokens: Some(3),
                output_tokens: None
            }),
            ..Reply::text("hi")
        })
    );
    assert_eq!(s.steps[1].times, Some(2));
    assert_eq!(s.steps[1].when.api, Some(Api::OpenAi));
    assert_eq!(s.steps[2].times, None);
    assert_eq!(Script::from_json(&s.to_json()).unwrap(), s);

    for bad in [
        r#"[{"reply": {"txt": "typo"}}]"#,
        r#"[{"reply": {"text": "a"}, "fault": {"kind": "hangup"}}]"#,
        r#"[{"fault": {"kind": "no_such_fault"}}]"#,
        r#"[{"mtach": {}, "reply": {}}]"#,
        r#"[{}]"#,
        r#"{"steps": [], "zero_latency": true, "extra": 1}"#,
    ] {
        assert!(Script::from_json(bad).is_err(), "accepted {bad}");
    }

    let demo = Script::from_file(
        &std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("demo-script.json"),
    )
    .unwrap();
    assert_eq!(demo.steps.len(), 3);
}

#[test]
fn binary_serves_the_demo_script() {
    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("demo-script.json");
    let mut child = Command::new(env!("CARGO_BIN_EXE_bulkhead-mock-llm"))
        .arg("--script")
        .arg(&script)
        .arg("--zero-latency")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn bulkhead-mock-llm");
    let mut out = BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    out.read_line(&mut line).unwrap();
    let base = line
        .trim()
        .strip_prefix("listening on ")
        .unwrap_or_else(|| panic!("first line: {line:?}"))
        .to_string();
    let addr = base
        .strip_prefix("http://127.0.0.1:")
        .expect("loopback URL");
    let port: u16 = addr.parse().unwrap();

    let run = || -> Result<String, String> {
        let w = TcpStream::connect(("127.0.0.1", port)).map_err(|e| e.to_string())?;
        w.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let mut c = Conn {
            r: BufReader::new(w.try_clone().unwrap()),
            w,
        };
        let mut messages = vec![json!({"role": "user", "content": "write and read a file"})];
        for turn in 0..3 {
            let body = json!({"model": "claude-demo", "max_tokens": 512, "stream": true,
                              "messages": messages});
            let r = anthropic(&mut c, &body);
            assert_eq!(r.status, 200, "turn {turn}: {}", r.text());
            // Collect the assistant content from the stream.
            let mut blocks: Vec<Value> = Vec::new();
            let mut partial = String::new();
            for (_, d) in sse_json(&r.body) {
                match d["type"].as_str().unwrap() {
                    "content_block_start" => {
                        blocks.push(d["content_block"].clone());
                        partial.clear();
                    }
                    "content_block_delta" => {
                        let b = blocks.last_mut().unwrap();
                        if let Some(t) = d["delta"]["text"].as_str() {
                            b["text"] = json!(format!("{}{t}", b["text"].as_str().unwrap()));
                        }
                        if let Some(p) = d["delta"]["partial_json"].as_str() {
                            partial.push_str(p);
                        }
                    }
                    "content_block_stop" => {
                        let b = blocks.last_mut().unwrap();
                        if b["type"] == "tool_use" {
                            b["input"] = serde_json::from_str(&partial).unwrap();
                        }
                    }
                    _ => {}
                }
            }
            let Some(tool) = blocks.iter().find(|b| b["type"] == "tool_use").cloned() else {
                return Ok(blocks[0]["text"].as_str().unwrap().to_string());
            };
            // Play the tool: bash writes, read returns the file.
            let result = match tool["name"].as_str().unwrap() {
                "bash" => {
                    assert_eq!(
                        tool["input"]["command"],
                        "echo hello > /workspace/hello.txt"
                    );
                    String::new()
                }
                "read" => {
                    assert_eq!(tool["input"]["path"], "/workspace/hello.txt");
                    "hello\n".to_string()
                }
                other => return Err(format!("unexpected tool {other}")),
            };
            messages.push(json!({"role": "assistant", "content": blocks}));
            messages.push(json!({"role": "user", "content": [{"type": "tool_result",
                "tool_use_id": tool["id"], "content": result}]}));
        }
        Err("no final answer in 3 turns".into())
    };
    let answer = run();
    let _ = child.kill();
    let _ = child.wait();
    let mut log = String::new();
    let _ = child.stderr.take().unwrap().read_to_string(&mut log);
    let answer = answer.unwrap_or_else(|e| panic!("{e}; mock log:\n{log}"));
    assert!(
        answer.contains("hello"),
        "the answer quotes the file: {answer}"
    );
    assert_eq!(
        log.matches("-> step").count(),
        3,
        "three logged requests: {log}"
    );
    assert!(!log.contains(ANT_KEY), "the log never shows keys");
}
