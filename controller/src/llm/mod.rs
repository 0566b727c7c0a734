//! LLM provider clients: the types the agent loop speaks, the wire formats of each provider,
//! the failover classifier, API keys and the retry policy.
//!
//! Every call is blocking (`ureq`; one thread per active run, no async runtime) and runs in the
//! controller: no API key ever enters a sandbox. A key lives in an [`ApiKey`], whose `Debug`
//! is redacted. A key of the operator (the environment) is registered with
//! [`crate::logging::register_operator_secret`] when it is made; a key from a workspace's
//! credential store is that workspace's secret and is redacted by its run's
//! [`crate::logging::Redactor`] only. Every [`ProviderError`] message is scrubbed of the key.
//!
//! The pieces, for the agent loop:
//! - [`models`]: `provider/model` strings ([`ModelRef`]), the provider table ([`ProviderSpec`]),
//!   context windows, base-URL resolution, and [`provider_for`] to build a [`Provider`].
//! - [`keys`]: keys from the workspace's credential store, then the environment; a [`KeyRing`]
//!   that rotates keys on rate-limit, quota and auth errors.
//! - [`classify`](mod@classify): HTTP status + body + headers → [`FailoverReason`] and `Retry-After`.
//! - [`retry`]: exponential backoff with jitter that honours `Retry-After`.
//! - [`sse`]: the event-stream parser the streaming clients use.
//!
//! A minimal turn:
//!
//! ```no_run
//! use bulkhead::llm::{self, ChatRequest, Message, ModelRef};
//! let model: ModelRef = "anthropic/claude-sonnet-4-5".parse()?;
//! let env = |name: &str| std::env::var(name).ok();
//! let provider = llm::provider_for(&model, None, &env, llm::HttpConfig::default())?;
//! let mut keys = llm::KeyRing::resolve(&model.provider, None, &env);
//! let (_, key) = keys.current(std::time::Instant::now()).expect("a key");
//! let req = ChatRequest {
//!     model: model.model.clone(),
//!     messages: vec![Message::User { text: "hello".into() }],
//!     stream: true,
//!     ..Default::default()
//! };
//! let resp = provider.chat(&req, key, &mut |delta| print!("{delta}"))?;
//! println!("\n{} tokens in, {} out", resp.usage.input_tokens, resp.usage.output_tokens);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use std::fmt;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::creds::SecretString;

pub mod anthropic;
pub mod classify;
pub mod gemini;
pub mod http;
pub mod keys;
pub mod models;
pub mod openai;
pub mod retry;
pub mod sse;

#[cfg(test)]
mod guard_tests;
#[cfg(test)]
mod testserver;

pub use classify::classify;
pub use http::HttpConfig;
pub use keys::{KeyRing, KeySource};
pub use models::{provider_for, ApiFlavor, ModelRef, ProviderSpec};
pub use retry::{RetryDecision, RetryPolicy};

/// A tool the model may call.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ToolSpec {
    /// Name the model uses to call it (`[A-Za-z0-9_-]{1,64}` is safe for every provider).
    pub name: String,
    /// What it does, for the model.
    pub description: String,
    /// JSON Schema of its arguments (an `object` schema).
    pub input_schema: serde_json::Value,
}

/// A call of a tool by the model.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ToolCall {
    /// The provider's id of the call; echo it in [`Message::ToolResult::call_id`]. Opaque:
    /// the Gemini client carries the call's thought signature in it.
    pub id: String,
    /// The tool's name.
    pub name: String,
    /// The arguments, as the model gave them (normally an object; not yet validated against
    /// the tool's schema). Arguments that were not valid JSON arrive as a JSON string.
    pub arguments: serde_json::Value,
}

/// One turn of the conversation (the system prompt is [`ChatRequest::system`]).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "role", rename_all = "snake_case")]
pub enum Message {
    /// The user's text.
    User {
        /// The text.
        text: String,
    },
    /// A reply of the model: its text and the tools it called.
    Assistant {
        /// The text (may be empty when the turn only calls tools).
        text: String,
        /// The tool calls, in order.
        tool_calls: Vec<ToolCall>,
    },
    /// The result of one tool call, sent back to the model.
    ToolResult {
        /// [`ToolCall::id`] of the call.
        call_id: String,
        /// [`ToolCall::name`] of the call (Gemini matches results by name).
        name: String,
        /// The output (already truncated to the budget).
        content: String,
        /// Whether the tool failed (or the call was malformed).
        is_error: bool,
    },
}

/// One model call.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChatRequest {
    /// The provider's model id (the part after `provider/`).
    pub model: String,
    /// System prompt; empty for none.
    pub system: String,
    /// The conversation so far.
    pub messages: Vec<Message>,
    /// Tools the model may call; empty for none.
    pub tools: Vec<ToolSpec>,
    /// Most tokens the reply may have.
    pub max_tokens: u32,
    /// Sampling temperature; `None` leaves the provider's default.
    pub temperature: Option<f32>,
    /// Stream the reply (SSE): text arrives through `on_text_delta` as it is generated.
    pub stream: bool,
    /// The call ends by then, whatever the client's own timeouts allow: the whole exchange,
    /// a stream's reads included, is bounded by the time left (the agent sets the run's
    /// deadline). Not part of the wire request.
    #[serde(skip)]
    pub deadline: Option<Instant>,
}

impl Default for ChatRequest {
    fn default() -> Self {
        ChatRequest {
            model: String::new(),
            system: String::new(),
            messages: Vec::new(),
            tools: Vec::new(),
            max_tokens: 4096,
            temperature: None,
            stream: false,
            deadline: None,
        }
    }
}

/// Tokens used by one call (or summed over several).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Usage {
    /// Prompt tokens, cached ones included (Anthropic's cache reads and writes are added in).
    pub input_tokens: u64,
    /// Generated tokens, reasoning ("thinking") tokens included.
    pub output_tokens: u64,
}

impl Usage {
    /// Adds `other` into `self`.
    pub fn add(&mut self, other: Usage) {
        self.input_tokens += other.input_tokens;
        self.output_tokens += other.output_tokens;
    }
}

/// Why the model stopped.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StopReason {
    /// It finished its turn.
    EndTurn,
    /// It called tools and waits for their results.
    ToolUse,
    /// It hit [`ChatRequest::max_tokens`].
    MaxTokens,
    /// Anything else, as the provider named it (`content_filter`, `SAFETY`, `refusal`, …).
    Other(String),
}

/// The model's reply.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChatResponse {
    /// Its text (all text blocks joined).
    pub text: String,
    /// Its tool calls, in order.
    pub tool_calls: Vec<ToolCall>,
    /// Tokens used.
    pub usage: Usage,
    /// Why it stopped.
    pub stop: StopReason,
}

pub use crate::error::FailoverReason;

impl FailoverReason {
    /// The snake_case name (`rate_limit`, `context_overflow`, …).
    pub fn as_str(self) -> &'static str {
        match self {
            FailoverReason::RateLimit => "rate_limit",
            FailoverReason::Overloaded => "overloaded",
            FailoverReason::Billing => "billing",
            FailoverReason::Auth => "auth",
            FailoverReason::AuthPermanent => "auth_permanent",
            FailoverReason::Timeout => "timeout",
            FailoverReason::ModelNotFound => "model_not_found",
            FailoverReason::ContextOverflow => "context_overflow",
            FailoverReason::Format => "format",
            FailoverReason::SessionExpired => "session_expired",
            FailoverReason::Blocked => "blocked",
            FailoverReason::Unknown => "unknown",
        }
    }

    /// Whether the same call may succeed if retried after a backoff.
    pub fn is_retryable(self) -> bool {
        matches!(
            self,
            FailoverReason::RateLimit
                | FailoverReason::Overloaded
                | FailoverReason::Timeout
                | FailoverReason::Unknown
        )
    }

    /// Whether another key of the same provider may succeed.
    pub fn rotates_key(self) -> bool {
        matches!(
            self,
            FailoverReason::RateLimit
                | FailoverReason::Billing
                | FailoverReason::Auth
                | FailoverReason::AuthPermanent
        )
    }

    /// Whether the context must be compacted before trying again.
    pub fn needs_compaction(self) -> bool {
        self == FailoverReason::ContextOverflow
    }
}

impl fmt::Display for FailoverReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A failed provider call, classified.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProviderError {
    /// The class of failure.
    pub reason: FailoverReason,
    /// HTTP status, when a response came back (`None` for transport errors and errors inside
    /// a stream).
    pub status: Option<u16>,
    /// What went wrong, from the provider's error message when there was one. Never contains
    /// the API key (scrubbed when built, along with every registered secret).
    pub message: String,
    /// How long the provider asked us to wait, if it said.
    pub retry_after: Option<Duration>,
    /// Provider name (`anthropic`, `openai`, …).
    pub provider: String,
    /// Model id.
    pub model: String,
}

impl ProviderError {
    /// Builds an error; `message` is scrubbed of `key` and of every registered secret, and
    /// capped at 2,000 characters.
    pub fn new(
        reason: FailoverReason,
        status: Option<u16>,
        message: impl Into<String>,
        retry_after: Option<Duration>,
        provider: &str,
        model: &str,
        key: Option<&ApiKey>,
    ) -> Self {
        ProviderError {
            reason,
            status,
            message: scrub(&message.into(), key),
            retry_after,
            provider: provider.to_string(),
            model: model.to_string(),
        }
    }
}

impl fmt::Display for ProviderError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}: {}", self.provider, self.model, self.reason)?;
        if let Some(s) = self.status {
            write!(f, " (HTTP {s})")?;
        }
        write!(f, ": {}", self.message)?;
        if let Some(d) = self.retry_after {
            write!(f, " (retry after {:.1}s)", d.as_secs_f64())?;
        }
        Ok(())
    }
}

impl std::error::Error for ProviderError {}

const MAX_MESSAGE_CHARS: usize = 2000;

/// `text` without `key`, without the operator's secrets, capped in length. (Not the live
/// secrets of other runs: a tenant pointing its run at its own server could read them off
/// what is redacted; the run redacts its own workspace's secrets from what it emits.)
pub(crate) fn scrub(text: &str, key: Option<&ApiKey>) -> String {
    let mut s = text.to_string();
    if let Some(k) = key {
        let v = k.expose_secret();
        if !v.is_empty() && s.contains(v) {
            s = s.replace(v, crate::logging::REDACTED);
        }
    }
    let mut s = crate::logging::redact_operator(&s);
    if s.chars().count() > MAX_MESSAGE_CHARS {
        s = s.chars().take(MAX_MESSAGE_CHARS).collect::<String>() + "…";
    }
    s
}

/// An API key. `Debug` prints `[redacted]`; there is no `Display`. Made with [`ApiKey::new`]
/// (an operator's key, registered with [`crate::logging::register_operator_secret`] so no log
/// line or output shows it) or [`ApiKey::of_workspace`] (a tenant's key, redacted by its
/// run's redactor).
/// An empty key means "send no credentials" (local servers such as Ollama).
#[derive(Clone, Default, PartialEq, Eq)]
pub struct ApiKey(SecretString);

impl ApiKey {
    /// Wraps an operator's key and registers it as an operator secret.
    pub fn new(value: impl Into<String>) -> Self {
        let value: String = value.into();
        crate::logging::register_operator_secret(&value);
        ApiKey(SecretString::new(value))
    }

    /// Wraps a key read from a workspace's credential store. It is not registered
    /// process-wide (another tenant's output must not be redacted of it): the run that
    /// decrypted the store redacts it with its own [`crate::logging::Redactor`].
    pub fn of_workspace(value: impl Into<String>) -> Self {
        ApiKey(SecretString::new(value.into()))
    }

    /// No key (for providers that need none).
    pub fn none() -> Self {
        ApiKey::default()
    }

    /// The value: only for the request header. Never log it or put it in an error.
    pub fn expose_secret(&self) -> &str {
        self.0.expose_secret()
    }

    /// Whether this is [`ApiKey::none`].
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// A short, non-secret label for events and logs: `…` plus the last 4 characters when the
    /// key is 20 characters or longer, else `[redacted]`.
    pub fn label(&self) -> String {
        let v = self.0.expose_secret();
        let n = v.chars().count();
        if n >= 20 {
            let tail: String = v.chars().skip(n - 4).collect();
            format!("…{tail}")
        } else {
            crate::logging::REDACTED.to_string()
        }
    }
}

impl fmt::Debug for ApiKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(crate::logging::REDACTED)
    }
}

impl From<SecretString> for ApiKey {
    fn from(s: SecretString) -> Self {
        crate::logging::register_operator_secret(s.expose_secret());
        ApiKey(s)
    }
}

/// A model API: one provider's wire format over one base URL.
pub trait Provider: Send + Sync {
    /// The provider's name (`anthropic`, `openai`, `google`, `groq`, …).
    fn name(&self) -> &str;

    /// Makes one model call with `key`. When `req.stream` is set, text arrives through
    /// `on_text_delta` as it is generated; without streaming it is called once with the whole
    /// text (if any). Errors are classified ([`ProviderError::reason`]); a stream that stalls
    /// longer than the idle timeout ends as [`FailoverReason::Timeout`].
    fn chat(
        &self,
        req: &ChatRequest,
        key: &ApiKey,
        on_text_delta: &mut dyn FnMut(&str),
    ) -> Result<ChatResponse, ProviderError>;
}

#[cfg(test)]
mod tests {
    use super::*;

    const CANARY: &str = "sk-canary-0123456789abcdefXYZ";

    #[test]
    fn api_key_debug_is_redacted_and_label_is_short() {
        let k = ApiKey::new(CANARY);
        assert_eq!(format!("{k:?}"), "[redacted]");
        assert_eq!(k.label(), "…fXYZ");
        assert!(!format!("{:?}", Some(&k)).contains("canary"));
        assert_eq!(ApiKey::new("short").label(), "[redacted]");
    }

    #[test]
    fn provider_error_never_shows_the_key() {
        let k = ApiKey::new(CANARY);
        let e = ProviderError::new(
            FailoverReason::Auth,
            Some(401),
            format!("Incorrect API key provided: {CANARY}."),
            None,
            "openai",
            "gpt-4o",
            Some(&k),
        );
        for s in [e.to_string(), format!("{e:?}"), e.message.clone()] {
            assert!(!s.contains(CANARY), "{s}");
            assert!(s.contains("[redacted]"), "{s}");
        }
        assert_eq!(
            e.to_string(),
            "openai/gpt-4o: auth (HTTP 401): Incorrect API key provided: [redacted]."
        );
        // Also scrubbed when built without the key, since ApiKey::new registered it.
        let e2 = ProviderError::new(
            FailoverReason::Auth,
            None,
            CANARY,
            None,
            "openai",
            "m",
            None,
        );
        assert!(!e2.message.contains(CANARY));
    }

    #[test]
    fn reasons_have_snake_case_names() {
        assert_eq!(
            FailoverReason::ContextOverflow.to_string(),
            "context_overflow"
        );
        assert_eq!(
            serde_json::to_string(&FailoverReason::AuthPermanent).unwrap(),
            "\"auth_permanent\""
        );
        assert!(FailoverReason::RateLimit.is_retryable());
        assert!(FailoverReason::RateLimit.rotates_key());
        assert!(!FailoverReason::ContextOverflow.is_retryable());
        assert!(FailoverReason::ContextOverflow.needs_compaction());
    }

    #[test]
    fn messages_serialize_with_a_role_tag() {
        let m = Message::ToolResult {
            call_id: "c1".into(),
            name: "bash".into(),
            content: "ok".into(),
            is_error: false,
        };
        let v = serde_json::to_value(&m).unwrap();
        assert_eq!(v["role"], "tool_result");
        let back: Message = serde_json::from_value(v).unwrap();
        assert_eq!(back, m);
    }
}
