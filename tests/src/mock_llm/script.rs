//! Scripts: what the mock answers, step by step, as Rust values and as JSON.

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// Which wire format a request spoke (decided by its path).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Api {
    /// Anthropic Messages: `POST …/v1/messages`.
    Anthropic,
    /// OpenAI Chat Completions and OpenAI-compatible servers: `POST …/chat/completions`.
    #[serde(rename = "openai")]
    OpenAi,
    /// Google Gemini: `POST …/models/{model}:generateContent` / `:streamGenerateContent`.
    Gemini,
}

impl Api {
    /// Lower-case name, as in scripts.
    pub fn name(self) -> &'static str {
        match self {
            Api::Anthropic => "anthropic",
            Api::OpenAi => "openai",
            Api::Gemini => "gemini",
        }
    }
}

/// One tool call the model makes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ToolCall {
    /// Tool name (`bash`, `read`, …).
    pub name: String,
    /// Arguments (a JSON object). String values may hold placeholders (see [`Reply`]).
    #[serde(default = "empty_object")]
    pub arguments: Value,
    /// Call id; generated (`toolu_mock_…`, `call_mock_…`) when absent. Gemini has none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
}

fn empty_object() -> Value {
    Value::Object(Default::default())
}

/// Token counts reported for a reply; each defaults to an estimate (bytes / 4).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Usage {
    /// Prompt tokens (`input_tokens` / `prompt_tokens` / `promptTokenCount`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub input_tokens: Option<u64>,
    /// Completion tokens (`output_tokens` / `completion_tokens` / `candidatesTokenCount`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output_tokens: Option<u64>,
}

/// A successful model turn: text and/or tool calls.
///
/// Text and string values inside tool-call arguments may hold placeholders, filled from
/// the request being answered:
/// - `{{last_tool_result}}`: the content of the last tool result in the request
///   (Anthropic `tool_result` block, OpenAI `role: tool` message, Gemini
///   `functionResponse.response`), or `<no tool result>`;
/// - `{{last_user_text}}`: the text of the last user message, or `<no user text>`;
/// - `{{model}}`: the model the request named.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Reply {
    /// Assistant text (comes before the tool calls in the content).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub text: Option<String>,
    /// Tool calls, in order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tool_calls: Vec<ToolCall>,
    /// Reported usage.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub usage: Option<Usage>,
    /// Stop because the output limit was hit (`max_tokens` / `length` / `MAX_TOKENS`).
    #[serde(default, skip_serializing_if = "is_false")]
    pub max_tokens: bool,
    /// Streaming only: pause between events (a slow stream). Ignored in zero-latency mode.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub event_delay_ms: u64,
    /// Streaming only: characters of text per delta event (default 16).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub chunk_chars: Option<usize>,
}

fn is_false(b: &bool) -> bool {
    !*b
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

impl Reply {
    /// A text-only final answer.
    pub fn text(text: impl Into<String>) -> Reply {
        Reply {
            text: Some(text.into()),
            ..Reply::default()
        }
    }

    /// One tool call, no text.
    pub fn tool_call(name: impl Into<String>, arguments: Value) -> Reply {
        Reply::default().and_tool_call(name, arguments)
    }

    /// Several tool calls in one turn.
    pub fn tool_calls(calls: impl IntoIterator<Item = (String, Value)>) -> Reply {
        let mut r = Reply::default();
        for (name, args) in calls {
            r = r.and_tool_call(name, args);
        }
        r
    }

    /// A text answer that quotes the last tool result: `prefix{{last_tool_result}}`.
    pub fn echo_tool_result(prefix: impl Into<String>) -> Reply {
        Reply::text(format!("{}{{{{last_tool_result}}}}", prefix.into()))
    }

    /// Adds text (before the tool calls).
    pub fn with_text(mut self, text: impl Into<String>) -> Reply {
        self.text = Some(text.into());
        self
    }

    /// Adds a tool call.
    pub fn and_tool_call(mut self, name: impl Into<String>, arguments: Value) -> Reply {
        self.tool_calls.push(ToolCall {
            name: name.into(),
            arguments,
            id: None,
        });
        self
    }

    /// Sets the reported usage.
    pub fn usage(mut self, input_tokens: u64, output_tokens: u64) -> Reply {
        self.usage = Some(Usage {
            input_tokens: Some(input_tokens),
            output_tokens: Some(output_tokens),
        });
        self
    }

    /// Marks the turn as cut by the output limit.
    pub fn max_tokens(mut self) -> Reply {
        self.max_tokens = true;
        self
    }

    /// A slow stream: `ms` between events.
    pub fn slow(mut self, ms: u64) -> Reply {
        self.event_delay_ms = ms;
        self
    }

    /// Characters of text per streamed delta.
    pub fn chunk_chars(mut self, n: usize) -> Reply {
        self.chunk_chars = Some(n.max(1));
        self
    }
}

/// Kind of error sent in the middle of a stream by [`Fault::MidStreamError`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StreamErrorKind {
    /// Anthropic `overloaded_error`, Gemini `UNAVAILABLE`, OpenAI `server_error` "overloaded".
    #[default]
    Overloaded,
    /// Anthropic `api_error`, Gemini `INTERNAL`, OpenAI `server_error`.
    ServerError,
}

/// A failure, rendered in the words (status, headers, body) of the API that was called.
///
/// In JSON: `{"kind": "<snake_case variant>", …fields}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum Fault {
    /// 429 rate limit. `Retry-After: N` when `retry_after_secs` is set (Gemini also gets a
    /// `RetryInfo` detail); `headers: true` adds the provider's rate-limit headers
    /// (`anthropic-ratelimit-*`, `x-ratelimit-*` and `retry-after-ms`).
    RateLimited {
        /// Seconds for `Retry-After`.
        #[serde(default)]
        retry_after_secs: Option<u64>,
        /// Add the provider's rate-limit headers.
        #[serde(default)]
        headers: bool,
    },
    /// Out of credit / quota, in each provider's own way: Anthropic 400 "Your credit balance
    /// is too low…", OpenAI 429 `insufficient_quota`, Gemini 429 "You exceeded your current
    /// quota…".
    QuotaExceeded,
    /// Overloaded: Anthropic 529 `overloaded_error`, OpenAI and Gemini 503.
    Overloaded {
        /// Seconds for `Retry-After`.
        #[serde(default)]
        retry_after_secs: Option<u64>,
    },
    /// 503 service unavailable.
    Unavailable {
        /// Seconds for `Retry-After`.
        #[serde(default)]
        retry_after_secs: Option<u64>,
    },
    /// 500 internal error.
    ServerError,
    /// 504 gateway timeout (Anthropic `timeout_error`, Gemini `DEADLINE_EXCEEDED`).
    Timeout,
    /// Invalid API key: Anthropic 401 `authentication_error`, OpenAI 401 `invalid_api_key`
    /// (the key masked as OpenAI does), Gemini **400** `INVALID_ARGUMENT` "API key not
    /// valid" with reason `API_KEY_INVALID` (what Gemini really sends).
    Unauthorized,
    /// 403 permission denied.
    Forbidden,
    /// 402 Payment Required: with `rate_limit: false` a billing message (insufficient
    /// credits); with `rate_limit: true` the rate-limit-flavoured 402 some providers send
    /// ("too many requests … try again later").
    PaymentRequired {
        /// Rate-limit-flavoured message instead of billing.
        #[serde(default)]
        rate_limit: bool,
    },
    /// 404 model not found (naming the requested model).
    ModelNotFound,
    /// 400 context overflow in the provider's words (defaults: Anthropic 200,000,
    /// OpenAI 128,000, Gemini 1,048,576 maximum; `tokens` = maximum + 12,345).
    ContextOverflow {
        /// Tokens the prompt had.
        #[serde(default)]
        tokens: Option<u64>,
        /// Maximum the model allows.
        #[serde(default)]
        max: Option<u64>,
    },
    /// 400 invalid request with this message.
    BadRequest {
        /// The message.
        message: String,
    },
    /// Any status and raw body.
    Http {
        /// HTTP status.
        status: u16,
        /// Raw body.
        #[serde(default)]
        body: String,
        /// Content type (default `application/json`).
        #[serde(default)]
        content_type: Option<String>,
        /// Extra headers.
        #[serde(default)]
        headers: Vec<(String, String)>,
    },
    /// 200 with a body that is not valid JSON. Streaming: the event at `after_events` has
    /// broken JSON in its data, the rest of the stream follows normally.
    MalformedJson {
        /// Streaming: index of the broken event (default 1).
        #[serde(default = "one")]
        after_events: usize,
    },
    /// Headers and the first `after_events` events of `reply` (non-streaming: headers and
    /// half the body), then nothing until the client gives up, the mock stops, or
    /// `max_secs` (default 30) pass; then the connection closes. Not shortened by
    /// zero-latency mode.
    Stall {
        /// Events sent before stalling (default 1).
        #[serde(default = "one")]
        after_events: usize,
        /// Cap on the stall (default 30 s).
        #[serde(default)]
        max_secs: Option<u64>,
        /// The reply whose first events are sent (default: a short text).
        #[serde(default)]
        reply: Option<Reply>,
    },
    /// The first `after_events` events of `reply`, then half of the next one, then the
    /// connection closes without the final chunk (non-streaming: half the body).
    Truncated {
        /// Complete events before the cut (default 2).
        #[serde(default = "two")]
        after_events: usize,
        /// The reply that gets cut (default: a short text).
        #[serde(default)]
        reply: Option<Reply>,
    },
    /// Streaming: `after_events` events of `reply`, then an error event (Anthropic
    /// `event: error`, OpenAI/Gemini `data: {"error":…}`), then the stream ends.
    /// Non-streaming requests get the matching error status (529/503 or 500).
    MidStreamError {
        /// Events before the error (default 2).
        #[serde(default = "two")]
        after_events: usize,
        /// Which error.
        #[serde(default)]
        error: StreamErrorKind,
        /// The reply whose first events are sent (default: a short text).
        #[serde(default)]
        reply: Option<Reply>,
    },
    /// The request is read, then the connection is reset (RST, no response).
    ConnectionReset,
    /// The request is read, then the connection is closed (FIN, no response).
    Hangup,
}

fn one() -> usize {
    1
}

fn two() -> usize {
    2
}

impl Fault {
    /// The variant's snake_case name (the JSON `kind`), used in recordings.
    pub fn kind(&self) -> &'static str {
        match self {
            Fault::RateLimited { .. } => "rate_limited",
            Fault::QuotaExceeded => "quota_exceeded",
            Fault::Overloaded { .. } => "overloaded",
            Fault::Unavailable { .. } => "unavailable",
            Fault::ServerError => "server_error",
            Fault::Timeout => "timeout",
            Fault::Unauthorized => "unauthorized",
            Fault::Forbidden => "forbidden",
            Fault::PaymentRequired { .. } => "payment_required",
            Fault::ModelNotFound => "model_not_found",
            Fault::ContextOverflow { .. } => "context_overflow",
            Fault::BadRequest { .. } => "bad_request",
            Fault::Http { .. } => "http",
            Fault::MalformedJson { .. } => "malformed_json",
            Fault::Stall { .. } => "stall",
            Fault::Truncated { .. } => "truncated",
            Fault::MidStreamError { .. } => "mid_stream_error",
            Fault::ConnectionReset => "connection_reset",
            Fault::Hangup => "hangup",
        }
    }

    /// 429 with `Retry-After: secs`.
    pub fn rate_limited(secs: u64) -> Fault {
        Fault::RateLimited {
            retry_after_secs: Some(secs),
            headers: false,
        }
    }

    /// Overloaded (529 on Anthropic, 503 elsewhere), no `Retry-After`.
    pub fn overloaded() -> Fault {
        Fault::Overloaded {
            retry_after_secs: None,
        }
    }

    /// Context overflow with the provider's default numbers.
    pub fn context_overflow() -> Fault {
        Fault::ContextOverflow {
            tokens: None,
            max: None,
        }
    }
}

/// Which requests a step may answer; every field that is set must hold.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Match {
    /// The requested model, exactly.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    /// The API key, exactly (`x-api-key`, `Authorization: Bearer`, `x-goog-api-key`, `?key=`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
    /// The wire format.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api: Option<Api>,
    /// Streaming or not.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stream: Option<bool>,
    /// Whether the request ends with a tool result (the model is continuing after a tool).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool_result: Option<bool>,
    /// A substring of the raw request body.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub contains: Option<String>,
}

impl Match {
    /// True when no field is set.
    pub fn is_any(&self) -> bool {
        *self == Match::default()
    }
}

/// What a step does.
#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    /// Answer with a model turn.
    Reply(Reply),
    /// Fail.
    Fault(Fault),
}

/// One scripted answer. In JSON: `{"reply": {…}}` or `{"fault": {"kind": …}}`, with optional
/// `"match": {…}`, `"delay_ms": N`, `"times": N`, `"forever": true`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(try_from = "StepJson", into = "StepJson")]
pub struct Step {
    /// Which requests this step may answer.
    pub when: Match,
    /// Wait before the response headers (slow first byte). Ignored in zero-latency mode.
    pub delay_ms: u64,
    /// How many requests it answers: `Some(n)`, or `None` for every matching request.
    pub times: Option<u64>,
    /// What it answers.
    pub action: Action,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct StepJson {
    #[serde(default, rename = "match", skip_serializing_if = "Match::is_any")]
    when: Match,
    #[serde(default, skip_serializing_if = "is_zero")]
    delay_ms: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    times: Option<u64>,
    #[serde(default, skip_serializing_if = "is_false")]
    forever: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    reply: Option<Reply>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    fault: Option<Fault>,
}

impl TryFrom<StepJson> for Step {
    type Error = String;

    fn try_from(j: StepJson) -> Result<Step, String> {
        let action = match (j.reply, j.fault) {
            (Some(r), None) => Action::Reply(r),
            (None, Some(f)) => Action::Fault(f),
            (Some(_), Some(_)) => return Err("a step has both `reply` and `fault`".into()),
            (None, None) => return Err("a step needs `reply` or `fault`".into()),
        };
        if j.forever && j.times.is_some() {
            return Err("a step has both `times` and `forever`".into());
        }
        if j.times == Some(0) {
            return Err("`times` must be at least 1".into());
        }
        Ok(Step {
            when: j.when,
            delay_ms: j.delay_ms,
            times: if j.forever {
                None
            } else {
                Some(j.times.unwrap_or(1))
            },
            action,
        })
    }
}

impl From<Step> for StepJson {
    fn from(s: Step) -> StepJson {
        let (reply, fault) = match s.action {
            Action::Reply(r) => (Some(r), None),
            Action::Fault(f) => (None, Some(f)),
        };
        StepJson {
            when: s.when,
            delay_ms: s.delay_ms,
            times: s.times.filter(|&n| n != 1),
            forever: s.times.is_none(),
            reply,
            fault,
        }
    }
}

impl From<Reply> for Step {
    fn from(r: Reply) -> Step {
        Step::reply(r)
    }
}

impl From<Fault> for Step {
    fn from(f: Fault) -> Step {
        Step::fault(f)
    }
}

impl Step {
    /// A step answering one request with `reply`.
    pub fn reply(reply: Reply) -> Step {
        Step {
            when: Match::default(),
            delay_ms: 0,
            times: Some(1),
            action: Action::Reply(reply),
        }
    }

    /// A step answering one request with `fault`.
    pub fn fault(fault: Fault) -> Step {
        Step {
            action: Action::Fault(fault),
            ..Step::reply(Reply::default())
        }
    }

    /// Only for requests naming this model.
    pub fn model(mut self, model: impl Into<String>) -> Step {
        self.when.model = Some(model.into());
        self
    }

    /// Only for requests carrying this API key.
    pub fn key(mut self, key: impl Into<String>) -> Step {
        self.when.key = Some(key.into());
        self
    }

    /// Only for requests in this wire format.
    pub fn api(mut self, api: Api) -> Step {
        self.when.api = Some(api);
        self
    }

    /// Only for streaming (`true`) or non-streaming (`false`) requests.
    pub fn streaming(mut self, stream: bool) -> Step {
        self.when.stream = Some(stream);
        self
    }

    /// Only for requests that end (`true`) or do not end (`false`) with a tool result.
    pub fn after_tool_result(mut self, yes: bool) -> Step {
        self.when.tool_result = Some(yes);
        self
    }

    /// Only for requests whose raw body contains `s`.
    pub fn containing(mut self, s: impl Into<String>) -> Step {
        self.when.contains = Some(s.into());
        self
    }

    /// Waits `ms` before the response headers.
    pub fn delay_ms(mut self, ms: u64) -> Step {
        self.delay_ms = ms;
        self
    }

    /// Answers `n` (≥ 1) requests.
    pub fn times(mut self, n: u64) -> Step {
        self.times = Some(n.max(1));
        self
    }

    /// Answers every matching request.
    pub fn forever(mut self) -> Step {
        self.times = None;
        self
    }
}

/// An ordered list of steps, and server-wide settings.
///
/// Each request takes the **first step, in order, that still has uses left and whose
/// `match` accepts it**. Steps without `match` accept anything, so a plain list is a
/// strict sequence; steps matched on model or key form separate queues (e.g. a primary and
/// a fallback) that may be interleaved in the list in any order. When no step is left for
/// a request, the mock answers 500 "mock script exhausted …" in the API's error shape.
///
/// JSON: either an array of steps or `{"steps": [...], "zero_latency": false}`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Script {
    /// The steps.
    #[serde(default)]
    pub steps: Vec<Step>,
    /// Zero-latency mode (benchmarks): every `delay_ms` and `event_delay_ms` is ignored
    /// and each streamed response goes out in one write.
    #[serde(default, skip_serializing_if = "is_false")]
    pub zero_latency: bool,
}

impl Script {
    /// An empty script (every request gets "mock script exhausted").
    pub fn new() -> Script {
        Script::default()
    }

    /// Appends a one-shot reply.
    pub fn reply(self, reply: Reply) -> Script {
        self.step(Step::reply(reply))
    }

    /// Appends a one-shot fault.
    pub fn fault(self, fault: Fault) -> Script {
        self.step(Step::fault(fault))
    }

    /// Appends a step.
    pub fn step(mut self, step: impl Into<Step>) -> Script {
        self.steps.push(step.into());
        self
    }

    /// Zero-latency mode.
    pub fn zero_latency(mut self) -> Script {
        self.zero_latency = true;
        self
    }

    /// Parses a script file's text: an array of steps or `{"steps": […], …}`.
    pub fn from_json(text: &str) -> Result<Script, String> {
        let v: Value = serde_json::from_str(text).map_err(|e| format!("script: {e}"))?;
        if v.is_array() {
            let steps: Vec<Step> =
                serde_json::from_value(v).map_err(|e| format!("script steps: {e}"))?;
            Ok(Script {
                steps,
                ..Script::default()
            })
        } else {
            serde_json::from_value(v).map_err(|e| format!("script: {e}"))
        }
    }

    /// Reads and parses a script file.
    pub fn from_file(path: &std::path::Path) -> Result<Script, String> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("read script {}: {e}", path.display()))?;
        Script::from_json(&text).map_err(|e| format!("{}: {e}", path.display()))
    }

    /// The script as JSON (the object form).
    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).expect("script serializes")
    }
}
