//! A tiny HTTP server on 127.0.0.1 serving canned responses, and the HTTP-level tests of the
//! provider clients against it. Tests never reach a real provider.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// One canned response.
#[derive(Debug, Clone)]
pub struct Canned {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    /// Pieces of the body, each written after its delay.
    pub chunks: Vec<(Duration, Vec<u8>)>,
    /// Send `content-length` (else the body ends when the connection closes).
    pub content_length: bool,
    /// After the last chunk, keep the connection open this long before closing.
    pub hold: Duration,
}

impl Canned {
    pub fn json(status: u16, body: &str) -> Canned {
        Canned {
            status,
            headers: vec![("content-type".into(), "application/json".into())],
            chunks: vec![(Duration::ZERO, body.as_bytes().to_vec())],
            content_length: true,
            hold: Duration::ZERO,
        }
    }

    /// An SSE body cut into `piece`-byte chunks written `gap` apart.
    pub fn sse(body: &str, piece: usize, gap: Duration) -> Canned {
        Canned {
            status: 200,
            headers: vec![("content-type".into(), "text/event-stream".into())],
            chunks: body
                .as_bytes()
                .chunks(piece.max(1))
                .map(|c| (gap, c.to_vec()))
                .collect(),
            content_length: false,
            hold: Duration::ZERO,
        }
    }

    pub fn header(mut self, k: &str, v: &str) -> Canned {
        self.headers.push((k.into(), v.into()));
        self
    }
}

/// A request as received.
#[derive(Debug, Clone)]
pub struct Recorded {
    pub method: String,
    pub target: String,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Recorded {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).expect("request body is JSON")
    }
}

/// Serves each canned response to one connection, in order, then stops.
pub struct TestServer {
    pub addr: SocketAddr,
    pub requests: Arc<Mutex<Vec<Recorded>>>,
    handle: Option<JoinHandle<()>>,
}

fn read_request(s: &mut TcpStream) -> std::io::Result<Recorded> {
    s.set_read_timeout(Some(Duration::from_secs(5)))?;
    let mut buf = Vec::new();
    let mut tmp = [0u8; 4096];
    let head_end = loop {
        let n = s.read(&mut tmp)?;
        if n == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        buf.extend_from_slice(&tmp[..n]);
        if let Some(p) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break p;
        }
        if buf.len() > 1 << 20 {
            return Err(std::io::ErrorKind::InvalidData.into());
        }
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).to_string();
    let mut lines = head.split("\r\n");
    let mut first = lines.next().unwrap_or("").split(' ');
    let method = first.next().unwrap_or("").to_string();
    let target = first.next().unwrap_or("").to_string();
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .collect();
    let len: usize = headers
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case("content-length"))
        .and_then(|(_, v)| v.parse().ok())
        .unwrap_or(0);
    let mut body = buf[head_end + 4..].to_vec();
    while body.len() < len {
        let n = s.read(&mut tmp)?;
        if n == 0 {
            break;
        }
        body.extend_from_slice(&tmp[..n]);
    }
    Ok(Recorded {
        method,
        target,
        headers,
        body,
    })
}

fn respond(s: &mut TcpStream, c: &Canned) -> std::io::Result<()> {
    let mut head = format!("HTTP/1.1 {} Canned\r\n", c.status);
    for (k, v) in &c.headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    if c.content_length {
        let n: usize = c.chunks.iter().map(|(_, b)| b.len()).sum();
        head.push_str(&format!("content-length: {n}\r\n"));
    }
    head.push_str("connection: close\r\n\r\n");
    s.write_all(head.as_bytes())?;
    s.flush()?;
    for (gap, bytes) in &c.chunks {
        if !gap.is_zero() {
            std::thread::sleep(*gap);
        }
        s.write_all(bytes)?;
        s.flush()?;
    }
    if !c.hold.is_zero() {
        std::thread::sleep(c.hold);
    }
    Ok(())
}

impl TestServer {
    pub fn start(responses: Vec<Canned>) -> TestServer {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1");
        let addr = listener.local_addr().unwrap();
        listener.set_nonblocking(true).unwrap();
        let requests = Arc::new(Mutex::new(Vec::new()));
        let rec = requests.clone();
        let handle = std::thread::spawn(move || {
            let deadline = Instant::now() + Duration::from_secs(20);
            for c in responses {
                let mut s = loop {
                    match listener.accept() {
                        Ok((s, _)) => break s,
                        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                            if Instant::now() > deadline {
                                return;
                            }
                            std::thread::sleep(Duration::from_millis(5));
                        }
                        Err(_) => return,
                    }
                };
                let _ = s.set_nonblocking(false);
                if let Ok(r) = read_request(&mut s) {
                    rec.lock().unwrap().push(r);
                    let _ = respond(&mut s, &c);
                }
            }
        });
        TestServer {
            addr,
            requests,
            handle: Some(handle),
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// Waits for the server thread, then returns what it received.
    pub fn finish(mut self) -> Vec<Recorded> {
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
        std::mem::take(&mut *self.requests.lock().unwrap())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::llm::models::{build_provider, lookup_provider};
    use crate::llm::*;
    use serde_json::json;

    const CANARY: &str = "sk-canary-7f3a9c1e5b2d4f60a8c7e9b1";

    fn http() -> HttpConfig {
        HttpConfig {
            connect_timeout: Duration::from_secs(2),
            request_timeout: Duration::from_secs(5),
            stream_idle_timeout: Duration::from_millis(400),
            proxy_from_env: false,
            // The test server is on loopback: allowed explicitly, as an operator would.
            ssrf: crate::net::SsrfPolicy {
                allow_loopback: true,
                ..Default::default()
            },
            ..Default::default()
        }
    }

    fn provider(name: &str, base: &str, cfg: HttpConfig) -> std::sync::Arc<dyn Provider> {
        build_provider(lookup_provider(name).unwrap(), base, cfg)
    }

    fn req(model: &str, stream: bool) -> ChatRequest {
        ChatRequest {
            model: model.into(),
            system: "sys".into(),
            messages: vec![Message::User { text: "hi".into() }],
            tools: vec![ToolSpec {
                name: "read".into(),
                description: "Read a file".into(),
                input_schema: json!({"type": "object", "properties": {"path": {"type": "string"}}}),
            }],
            max_tokens: 100,
            temperature: None,
            stream,
            deadline: None,
        }
    }

    fn assert_no_canary(e: &ProviderError) {
        for s in [e.to_string(), format!("{e:?}"), e.message.clone()] {
            assert!(!s.contains(CANARY), "key leaked: {s}");
        }
    }

    #[test]
    fn anthropic_non_streaming_over_http() {
        let body = r#"{"id":"msg_1","type":"message","role":"assistant","content":[{"type":"text","text":"Hello!"}],
            "stop_reason":"end_turn","usage":{"input_tokens":12,"output_tokens":3}}"#;
        let srv = TestServer::start(vec![Canned::json(200, body)]);
        let p = provider("anthropic", &srv.url(""), http());
        let key = ApiKey::new(CANARY);
        let mut seen = String::new();
        let r = p
            .chat(&req("claude-sonnet-4-5", false), &key, &mut |t| {
                seen.push_str(t)
            })
            .unwrap();
        assert_eq!((r.text.as_str(), seen.as_str()), ("Hello!", "Hello!"));
        assert_eq!(
            r.usage,
            Usage {
                input_tokens: 12,
                output_tokens: 3
            }
        );
        let got = srv.finish();
        assert_eq!(got[0].method, "POST");
        assert_eq!(got[0].target, "/v1/messages");
        assert_eq!(got[0].header("x-api-key"), Some(CANARY));
        assert_eq!(got[0].header("anthropic-version"), Some("2023-06-01"));
        assert_eq!(got[0].header("content-type"), Some("application/json"));
        assert!(got[0].header("authorization").is_none());
        assert_eq!(got[0].json()["system"], "sys");
    }

    #[test]
    fn anthropic_streaming_in_small_pieces() {
        let srv = TestServer::start(vec![Canned::sse(
            crate::llm::anthropic::tests::STREAM,
            7,
            Duration::from_millis(1),
        )]);
        let p = provider("anthropic", &srv.url(""), http());
        let mut deltas = Vec::new();
        let r = p
            .chat(
                &req("claude-sonnet-4-5", true),
                &ApiKey::new(CANARY),
                &mut |t| deltas.push(t.to_string()),
            )
            .unwrap();
        assert_eq!(deltas.concat(), "Okay, let's check.");
        assert_eq!(r.stop, StopReason::ToolUse);
        assert_eq!(
            r.tool_calls[0].arguments,
            json!({"location": "San Francisco, CA"})
        );
        let got = srv.finish();
        assert_eq!(got[0].json()["stream"], true);
        assert_eq!(got[0].header("accept"), Some("text/event-stream"));
    }

    #[test]
    fn openai_streaming_and_bearer_auth() {
        let srv = TestServer::start(vec![Canned::sse(
            crate::llm::openai::tests::STREAM,
            13,
            Duration::ZERO,
        )]);
        let p = provider("openai", &srv.url("/v1"), http());
        let r = p
            .chat(&req("gpt-4o", true), &ApiKey::new(CANARY), &mut |_| {})
            .unwrap();
        assert_eq!(r.tool_calls.len(), 2);
        assert_eq!(r.usage.output_tokens, 40);
        let got = srv.finish();
        assert_eq!(got[0].target, "/v1/chat/completions");
        assert_eq!(
            got[0].header("authorization"),
            Some(format!("Bearer {CANARY}").as_str())
        );
        let b = got[0].json();
        assert_eq!(b["stream_options"]["include_usage"], true);
        assert_eq!(b["max_completion_tokens"], 100);
    }

    #[test]
    fn ollama_needs_no_key() {
        let body = r#"{"choices":[{"message":{"role":"assistant","content":"hi there"},"finish_reason":"stop"}],
                       "usage":{"prompt_tokens":3,"completion_tokens":2}}"#;
        let srv = TestServer::start(vec![Canned::json(200, body)]);
        let p = provider("ollama", &srv.url("/v1"), http());
        let r = p
            .chat(&req("llama3.2", false), &ApiKey::none(), &mut |_| {})
            .unwrap();
        assert_eq!(r.text, "hi there");
        let got = srv.finish();
        assert!(got[0].header("authorization").is_none());
        assert_eq!(got[0].json()["max_tokens"], 100);
    }

    #[test]
    fn gemini_streaming_key_in_header_not_url() {
        let srv = TestServer::start(vec![Canned::sse(
            crate::llm::gemini::tests::STREAM,
            11,
            Duration::ZERO,
        )]);
        let p = provider("google", &srv.url(""), http());
        let mut text = String::new();
        let r = p
            .chat(
                &req("gemini-2.5-flash", true),
                &ApiKey::new(CANARY),
                &mut |t| text.push_str(t),
            )
            .unwrap();
        assert_eq!(text, "The file is written.");
        assert_eq!(r.tool_calls[0].name, "read");
        let got = srv.finish();
        assert_eq!(
            got[0].target,
            "/v1beta/models/gemini-2.5-flash:streamGenerateContent?alt=sse"
        );
        assert!(!got[0].target.contains(CANARY));
        assert_eq!(got[0].header("x-goog-api-key"), Some(CANARY));
        assert!(got[0].json()["tools"][0]["functionDeclarations"].is_array());
    }

    #[test]
    fn error_statuses_are_classified_and_scrubbed() {
        let echo = format!(
            r#"{{"error":{{"message":"Incorrect API key provided: {CANARY}. You can find your API key at https://platform.openai.com/account/api-keys.","type":"invalid_request_error","code":"invalid_api_key"}}}}"#
        );
        let srv = TestServer::start(vec![
            Canned::json(
                429,
                r#"{"type":"error","error":{"type":"rate_limit_error","message":"Number of request tokens has exceeded your per-minute rate limit"}}"#,
            )
            .header("retry-after", "3"),
            Canned::json(529, r#"{"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}"#),
            Canned::json(401, &echo),
            Canned::json(503, "<html><body>upstream unavailable</body></html>")
                .header("content-type", "text/html"),
        ]);
        let key = ApiKey::new(CANARY);
        let a = provider("anthropic", &srv.url(""), http());
        let e = a
            .chat(&req("claude-x", false), &key, &mut |_| {})
            .unwrap_err();
        assert_eq!((e.reason, e.status), (FailoverReason::RateLimit, Some(429)));
        assert_eq!(e.retry_after, Some(Duration::from_secs(3)));
        assert_eq!(e.provider, "anthropic");
        assert_eq!(e.model, "claude-x");
        let e = a
            .chat(&req("claude-x", true), &key, &mut |_| {})
            .unwrap_err();
        assert_eq!(e.reason, FailoverReason::Overloaded);
        assert_eq!(e.message, "Overloaded");
        let o = provider("openai", &srv.url("/v1"), http());
        let e = o
            .chat(&req("gpt-4o", false), &key, &mut |_| {})
            .unwrap_err();
        assert_eq!(e.reason, FailoverReason::Auth);
        assert!(e.message.contains("[redacted]"), "{}", e.message);
        assert_no_canary(&e);
        let e = o
            .chat(&req("gpt-4o", false), &key, &mut |_| {})
            .unwrap_err();
        assert_eq!(e.reason, FailoverReason::Overloaded);
        assert_eq!(e.message, "HTTP 503 Service Unavailable");
        srv.finish();
    }

    #[test]
    fn error_inside_a_stream() {
        let stream = "data: {\"choices\":[{\"delta\":{\"content\":\"par\"}}]}\n\n\
                      data: {\"error\":{\"message\":\"Rate limit reached. Please try again in 2s.\",\"type\":\"tokens\",\"code\":\"rate_limit_exceeded\"}}\n\n";
        let srv = TestServer::start(vec![Canned::sse(stream, 1000, Duration::ZERO)]);
        let p = provider("groq", &srv.url("/openai/v1"), http());
        let mut text = String::new();
        let e = p
            .chat(
                &req("llama-3.3-70b-versatile", true),
                &ApiKey::new(CANARY),
                &mut |t| text.push_str(t),
            )
            .unwrap_err();
        assert_eq!(text, "par");
        assert_eq!((e.reason, e.status), (FailoverReason::RateLimit, None));
        assert_eq!(e.retry_after, Some(Duration::from_secs(2)));
        srv.finish();
    }

    #[test]
    fn stalled_stream_ends_as_timeout() {
        let mut c = Canned::sse(
            "event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"usage\":{\"input_tokens\":1}}}\n\n",
            1000,
            Duration::ZERO,
        );
        c.hold = Duration::from_secs(3); // silent, connection open
        let srv = TestServer::start(vec![c]);
        let p = provider("anthropic", &srv.url(""), http());
        let t0 = Instant::now();
        let e = p
            .chat(&req("claude-x", true), &ApiKey::new(CANARY), &mut |_| {})
            .unwrap_err();
        assert_eq!(e.reason, FailoverReason::Timeout, "{e}");
        assert!(e.message.contains("stalled"), "{}", e.message);
        assert!(
            t0.elapsed() < Duration::from_secs(2),
            "took {:?}",
            t0.elapsed()
        );
        srv.finish();
    }

    #[test]
    fn the_request_deadline_bounds_a_slow_body_and_a_steady_stream() {
        // A body that starts after 3 s (within the client's own 5 s timeouts) ...
        let body = r#"{"id":"msg_1","type":"message","role":"assistant","content":[{"type":"text","text":"late"}],
            "stop_reason":"end_turn","usage":{"input_tokens":1,"output_tokens":1}}"#;
        let mut slow = Canned::json(200, body);
        slow.chunks[0].0 = Duration::from_secs(3);
        // ... and a stream whose pieces come well within the idle timeout but take 3 s.
        let steady = Canned::sse(
            crate::llm::gemini::tests::STREAM,
            8,
            Duration::from_millis(100),
        );
        for (name, model, stream, canned) in [
            ("anthropic", "claude-x", false, slow),
            ("google", "gemini-2.5-flash", true, steady),
        ] {
            // One server each: a server answers one connection at a time.
            let srv = TestServer::start(vec![canned]);
            let p = provider(name, &srv.url(""), http());
            let mut r = req(model, stream);
            let t0 = Instant::now();
            r.deadline = Some(t0 + Duration::from_millis(700));
            let e = p.chat(&r, &ApiKey::new(CANARY), &mut |_| {}).unwrap_err();
            let took = t0.elapsed();
            assert_eq!(e.reason, FailoverReason::Timeout, "{name}: {e}");
            assert!(e.message.contains("time limit"), "{name}: {}", e.message);
            assert!(
                took >= Duration::from_millis(650) && took < Duration::from_millis(1800),
                "{name}: took {took:?}"
            );
            assert_no_canary(&e);
            // A deadline already passed: no request at all.
            r.deadline = Some(Instant::now());
            let e = p.chat(&r, &ApiKey::new(CANARY), &mut |_| {}).unwrap_err();
            assert!(e.message.contains("time limit"), "{name}: {}", e.message);
            assert_eq!(srv.finish().len(), 1, "{name}");
        }
    }

    #[test]
    fn slow_but_steady_stream_is_not_a_stall() {
        // Each piece comes within the idle timeout; the whole stream takes longer than it.
        let srv = TestServer::start(vec![Canned::sse(
            crate::llm::gemini::tests::STREAM,
            200,
            Duration::from_millis(150),
        )]);
        let p = provider("google", &srv.url(""), http());
        let r = p.chat(
            &req("gemini-2.5-flash", true),
            &ApiKey::new(CANARY),
            &mut |_| {},
        );
        assert!(r.is_ok(), "{r:?}");
        srv.finish();
    }

    #[test]
    fn truncated_stream_is_an_error() {
        let cut = &crate::llm::openai::tests::STREAM[..400];
        let srv = TestServer::start(vec![Canned::sse(cut, 1000, Duration::ZERO)]);
        let p = provider("openai", &srv.url("/v1"), http());
        let e = p
            .chat(&req("gpt-4o", true), &ApiKey::new(CANARY), &mut |_| {})
            .unwrap_err();
        assert_eq!(e.reason, FailoverReason::Unknown);
        assert!(e.message.contains("ended before"), "{}", e.message);
        srv.finish();
    }

    #[test]
    fn oversized_and_malformed_replies_are_format_errors() {
        let big = format!("{{\"pad\":\"{}\"}}", "x".repeat(4096));
        let srv = TestServer::start(vec![
            Canned::json(200, &big),
            Canned::json(200, "{not json"),
            Canned::sse(
                &format!("data: {}\n\n", "y".repeat(5000)),
                1000,
                Duration::ZERO,
            ),
        ]);
        let cfg = HttpConfig {
            max_body_bytes: 2048,
            max_line_bytes: 1024,
            ..http()
        };
        let p = provider("openai", &srv.url("/v1"), cfg);
        let key = ApiKey::new(CANARY);
        let e = p
            .chat(&req("gpt-4o", false), &key, &mut |_| {})
            .unwrap_err();
        assert_eq!(e.reason, FailoverReason::Format);
        assert!(e.message.contains("larger than 2048"), "{}", e.message);
        let e = p
            .chat(&req("gpt-4o", false), &key, &mut |_| {})
            .unwrap_err();
        assert_eq!(e.reason, FailoverReason::Format);
        assert!(e.message.contains("not valid JSON"), "{}", e.message);
        let p = provider(
            "openai",
            &srv.url("/v1"),
            HttpConfig {
                max_line_bytes: 1024,
                ..http()
            },
        );
        let e = p.chat(&req("gpt-4o", true), &key, &mut |_| {}).unwrap_err();
        assert_eq!(e.reason, FailoverReason::Format);
        assert!(e.message.contains("line longer than 1024"), "{}", e.message);
        srv.finish();
    }

    #[test]
    fn redirects_are_refused() {
        let other = TestServer::start(vec![]);
        let srv = TestServer::start(vec![Canned {
            status: 307,
            headers: vec![("location".into(), other.url("/steal"))],
            chunks: vec![],
            content_length: true,
            hold: Duration::ZERO,
        }]);
        let p = provider("anthropic", &srv.url(""), http());
        let e = p
            .chat(&req("claude-x", false), &ApiKey::new(CANARY), &mut |_| {})
            .unwrap_err();
        // A configuration problem: not retried, not a key problem.
        assert_eq!(e.reason, FailoverReason::Blocked, "{e}");
        assert_eq!(e.status, Some(307));
        assert!(
            e.message.contains("redirect") && e.message.contains("/steal"),
            "{}",
            e.message
        );
        assert_no_canary(&e);
        assert_eq!(srv.finish().len(), 1);
        assert!(other.finish().is_empty());
    }

    #[test]
    fn connection_refused_names_the_url_not_the_key() {
        let port = {
            let l = TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap().port()
        };
        let p = provider("xai", &format!("http://127.0.0.1:{port}/v1"), http());
        let e = p
            .chat(&req("grok-4", false), &ApiKey::new(CANARY), &mut |_| {})
            .unwrap_err();
        assert_eq!(e.reason, FailoverReason::Unknown);
        assert!(
            e.message
                .contains(&format!("127.0.0.1:{port}/v1/chat/completions")),
            "{}",
            e.message
        );
        assert_no_canary(&e);
    }

    #[test]
    fn registered_keys_never_reach_a_log_line() {
        let _k = ApiKey::new(CANARY);
        let line = crate::logging::redact(&format!("POST with header x-api-key: {CANARY}"));
        assert!(!line.contains(CANARY));
    }
}
