//! An offline mock LLM server speaking the Anthropic Messages, OpenAI Chat Completions
//! (and OpenAI-compatible) and Google Gemini wire formats, for tests, `make demo` and
//! `make bench`.
//!
//! It is a small HTTP/1.1 server on `127.0.0.1` (a thread per connection, keep-alive with
//! `Content-Length` bodies, chunked SSE streams flushed per event) that answers each model
//! request with the next step of a [`Script`] and records every request.
//!
//! ```no_run
//! use bulkhead_tests::mock_llm::{Fault, MockLlm, Reply, Script, Step};
//! use serde_json::json;
//!
//! let mock = MockLlm::start(
//!     Script::new()
//!         .fault(Fault::rate_limited(1))
//!         .reply(Reply::tool_call("bash", json!({"command": "echo hi > /workspace/a"})))
//!         .reply(Reply::echo_tool_result("The command printed: "))
//!         // a separate queue for the fallback model:
//!         .step(Step::reply(Reply::text("from the fallback")).model("gpt-4o")),
//! );
//! // point the provider at mock.base_url() (Anthropic, Gemini) or
//! // mock.openai_base_url() (`…/v1`, as OPENAI_BASE_URL conventionally is) …
//! let reqs = mock.requests();
//! assert_eq!(reqs[0].api_key.as_deref(), Some("sk-test"));
//! ```
//!
//! Routes (any prefix before them is accepted, so base URLs with or without `/v1` work):
//! - `POST …/messages`: Anthropic; key from `x-api-key` (or `Authorization: Bearer`);
//!   streams when the body has `"stream": true`.
//! - `POST …/chat/completions`: OpenAI and compatible servers; key from
//!   `Authorization: Bearer` (or `api-key`); streams when `"stream": true`, with a final
//!   usage chunk when `stream_options.include_usage`.
//! - `POST …/models/{model}:generateContent` and `:streamGenerateContent`: Gemini; key from
//!   `x-goog-api-key` or `?key=`; `?alt=sse` streams SSE, without it a streamed JSON array.
//!
//! Other paths get 404, other methods 405, unparsable bodies 400 (none consumes a step);
//! all are recorded.
//!
//! # Script files (`bulkhead-mock-llm --script FILE.json`)
//!
//! An array of steps, or `{"steps": [...], "zero_latency": false}`. A step:
//!
//! ```json
//! {
//!   "match": {"model": "gpt-4o", "key": "sk-1", "api": "openai", "stream": true,
//!             "tool_result": true, "contains": "substring of the body"},
//!   "delay_ms": 0, "times": 1, "forever": false,
//!   "reply": {"text": "… {{last_tool_result}} …",
//!             "tool_calls": [{"name": "bash", "arguments": {"command": "ls"}}],
//!             "usage": {"input_tokens": 10, "output_tokens": 5},
//!             "max_tokens": false, "event_delay_ms": 0, "chunk_chars": 16}
//! }
//! ```
//!
//! with `"fault": {"kind": …}` instead of `"reply"`; kinds (see [`Fault`]): `rate_limited`
//! (`retry_after_secs`, `headers`), `quota_exceeded`, `overloaded` / `unavailable`
//! (`retry_after_secs`), `server_error`, `timeout`, `unauthorized`, `forbidden`,
//! `payment_required` (`rate_limit`), `model_not_found`, `context_overflow` (`tokens`,
//! `max`), `bad_request` (`message`), `http` (`status`, `body`, `content_type`, `headers`),
//! `malformed_json` (`after_events`), `stall` (`after_events`, `max_secs`, `reply`),
//! `truncated` (`after_events`, `reply`), `mid_stream_error` (`after_events`, `error`:
//! `overloaded` | `server_error`, `reply`), `connection_reset`, `hangup`. Every field but
//! the step's `reply`/`fault` is optional; unknown fields are refused.

mod anthropic;
mod gemini;
mod http;
mod openai;
mod script;
mod server;
mod wire;

use std::io;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use serde_json::Value;

pub use script::{
    Action, Api, Fault, Match, Reply, Script, Step, StreamErrorKind, ToolCall, Usage,
};

use server::{lock, Shared};

/// One request the mock received.
#[derive(Debug, Clone)]
pub struct RecordedRequest {
    /// 1-based arrival number.
    pub seq: u64,
    /// Connection number (equal for requests sent on one keep-alive connection).
    pub connection: u64,
    /// HTTP method.
    pub method: String,
    /// Path without the query.
    pub path: String,
    /// Query string without `?`.
    pub query: String,
    /// Headers, names lower-cased, in order (the API key is visible here).
    pub headers: Vec<(String, String)>,
    /// The raw body (lossy UTF-8).
    pub body_text: String,
    /// The body as JSON (`Null` when empty or not JSON).
    pub body: Value,
    /// The wire format, when the path was a model route.
    pub api: Option<Api>,
    /// The requested model.
    pub model: Option<String>,
    /// The API key the request carried.
    pub api_key: Option<String>,
    /// Whether it asked for a stream.
    pub stream: bool,
    /// Index (in script order, pushed steps last) of the step that answered.
    pub step: Option<usize>,
    /// `reply`, `fault:<kind>`, `exhausted`, `no_route`, `bad_method` or `invalid_json`.
    pub outcome: String,
}

impl RecordedRequest {
    /// A header's value (name case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// Every tool result the request carried back to the model, oldest first.
    pub fn tool_results(&self) -> Vec<String> {
        self.api
            .map(|a| wire::tool_results(a, &self.body))
            .unwrap_or_default()
    }

    /// Whether the conversation sent ends with a tool result.
    pub fn ends_with_tool_result(&self) -> bool {
        self.api
            .is_some_and(|a| wire::ends_with_tool_result(a, &self.body))
    }

    /// The text of the last user message.
    pub fn last_user_text(&self) -> Option<String> {
        wire::last_user_text(self.api?, &self.body)
    }

    /// Whether `needle` occurs in the path, query or body (headers excluded: they carry the
    /// key legitimately).
    pub fn body_contains(&self, needle: &str) -> bool {
        self.path.contains(needle) || self.query.contains(needle) || self.body_text.contains(needle)
    }

    /// Whether `needle` occurs anywhere: path, query, header values or body.
    pub fn contains(&self, needle: &str) -> bool {
        self.body_contains(needle) || self.headers.iter().any(|(_, v)| v.contains(needle))
    }
}

/// Server options beyond the script.
#[derive(Debug, Clone, Default)]
pub struct MockOptions {
    /// Port on 127.0.0.1 (0: any free port).
    pub port: u16,
    /// Log each request (api, path, model, step, outcome; never keys) to stderr.
    pub verbose: bool,
}

/// A running mock server; stops (and joins its threads) on drop.
#[derive(Debug)]
pub struct MockLlm {
    addr: SocketAddr,
    shared: Arc<Shared>,
    accept: Option<JoinHandle<()>>,
}

impl MockLlm {
    /// Starts on a free port of 127.0.0.1. Panics when it cannot bind.
    pub fn start(script: Script) -> MockLlm {
        MockLlm::start_with(script, MockOptions::default()).expect("start the mock LLM server")
    }

    /// Starts with options.
    pub fn start_with(script: Script, opts: MockOptions) -> io::Result<MockLlm> {
        let listener = TcpListener::bind(("127.0.0.1", opts.port))?;
        let addr = listener.local_addr()?;
        let shared = Arc::new(Shared::new(script.steps, script.zero_latency, opts.verbose));
        let sh = Arc::clone(&shared);
        let accept = std::thread::Builder::new()
            .name("mock-llm-accept".into())
            .spawn(move || server::accept_loop(listener, sh))?;
        Ok(MockLlm {
            addr,
            shared,
            accept: Some(accept),
        })
    }

    /// The listening address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://127.0.0.1:PORT`: the base URL for Anthropic (`/v1/messages` is appended)
    /// and Gemini (`/v1beta/models/…` is appended).
    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// `http://127.0.0.1:PORT/v1`: the base URL for OpenAI and compatible servers
    /// (`/chat/completions` is appended).
    pub fn openai_base_url(&self) -> String {
        format!("{}/v1", self.base_url())
    }

    /// Every request so far, in arrival order.
    pub fn requests(&self) -> Vec<RecordedRequest> {
        lock(&self.shared.state).requests.clone()
    }

    /// Number of requests so far.
    pub fn request_count(&self) -> usize {
        lock(&self.shared.state).requests.len()
    }

    /// Waits until at least `n` requests arrived; `false` on timeout.
    pub fn wait_for_requests(&self, n: usize, timeout: Duration) -> bool {
        let end = Instant::now() + timeout;
        let mut st = lock(&self.shared.state);
        while st.requests.len() < n {
            let now = Instant::now();
            if now >= end {
                return false;
            }
            st = self
                .shared
                .changed
                .wait_timeout(st, end - now)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
        true
    }

    /// Forgets the recorded requests (the script cursor is kept).
    pub fn clear_requests(&self) {
        lock(&self.shared.state).requests.clear();
    }

    /// Appends a step to the script.
    pub fn push(&self, step: impl Into<Step>) {
        lock(&self.shared.state).slots.push(server::Slot {
            step: step.into(),
            used: 0,
        });
    }

    /// Indices of the finite steps that still have uses left (`forever` steps are never
    /// listed): empty when the script was played to the end.
    pub fn unused_steps(&self) -> Vec<usize> {
        lock(&self.shared.state)
            .slots
            .iter()
            .enumerate()
            .filter(|(_, s)| s.step.times.is_some_and(|n| s.used < n))
            .map(|(i, _)| i)
            .collect()
    }

    /// Panics unless every finite step was used up.
    pub fn assert_script_consumed(&self) {
        let unused = self.unused_steps();
        assert!(
            unused.is_empty(),
            "mock LLM steps never used: {unused:?}; requests: {:#?}",
            self.requests()
                .iter()
                .map(|r| format!("#{} {} {} -> {}", r.seq, r.method, r.path, r.outcome))
                .collect::<Vec<_>>()
        );
    }

    /// Serves until the process ends (for the binary).
    pub fn serve_forever(mut self) {
        if let Some(h) = self.accept.take() {
            let _ = h.join();
        }
    }

    /// Stops accepting, closes every connection (stalled streams end) and joins the
    /// threads. Also done on drop.
    pub fn stop(&mut self) {
        let Some(h) = self.accept.take() else { return };
        self.shared.shut_down();
        // Wake the blocking accept().
        let _ = TcpStream::connect_timeout(&self.addr, Duration::from_secs(1));
        let _ = h.join();
    }
}

impl Drop for MockLlm {
    fn drop(&mut self) {
        self.stop();
    }
}
