//! What a run reports as it goes ([`RunEvent`]) and what it returns ([`RunResult`]).
//!
//! Every event serializes to one JSON object with a `type` field (`bulkhead --json run`
//! prints them one per line). No event ever carries an API key: keys are named by their
//! index in the provider's key ring and by where they came from (`$ANTHROPIC_API_KEY`,
//! `credential anthropic.api_key`).

use std::time::Duration;

use serde::Serialize;
use serde_json::Value;

use crate::error::ms;
pub use crate::error::{format_attempts, Attempt};
use crate::llm::FailoverReason;
use crate::sessions::Usage;

/// One tool call of a run and how it ended.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ToolCallRecord {
    /// Step (1-based).
    pub step: usize,
    /// The model's id of the call.
    pub call_id: String,
    /// Tool name.
    pub name: String,
    /// Arguments as the model gave them.
    pub arguments: Value,
    /// Whether it failed (including invalid arguments and unknown tools).
    pub is_error: bool,
    /// Characters of output returned to the model (after truncation).
    pub output_chars: usize,
    /// Whether the output was truncated to the budget.
    pub truncated: bool,
    /// Wall time.
    #[serde(rename = "duration_ms", serialize_with = "ms")]
    pub duration: Duration,
}

/// How a run ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RunOutcome {
    /// The model gave a final answer.
    Completed,
    /// The step limit was reached while the model still called tools (CLI exit 10).
    MaxSteps,
    /// Every model failed (CLI exit 9).
    Failed,
    /// The run was cancelled (CLI exit 130).
    Cancelled,
    /// The run's time limit passed (CLI exit 124).
    TimedOut,
}

impl RunOutcome {
    /// The snake_case name, as in transcripts.
    pub fn as_str(self) -> &'static str {
        match self {
            RunOutcome::Completed => "completed",
            RunOutcome::MaxSteps => "max_steps",
            RunOutcome::Failed => "failed",
            RunOutcome::Cancelled => "cancelled",
            RunOutcome::TimedOut => "timed_out",
        }
    }
}

/// What a run returns.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RunResult {
    /// Run id (also in the transcript's `run_start`/`run_end`).
    pub run_id: String,
    /// Session id (generated when the request named none).
    pub session: String,
    /// The final answer (for `MaxSteps`: the model's last text, possibly empty).
    pub response: String,
    /// [`RunOutcome::Completed`] or [`RunOutcome::MaxSteps`] (failures are errors).
    pub outcome: RunOutcome,
    /// Tokens (and cost when known) of this run, summed over every model call.
    pub usage: Usage,
    /// Tokens (and cost when known) of the whole session, this run included.
    pub session_usage: Usage,
    /// Every model call, in order.
    pub attempts: Vec<Attempt>,
    /// Every tool call, in order.
    pub tool_calls: Vec<ToolCallRecord>,
    /// Steps taken (model calls that produced a reply, summaries not counted).
    pub steps: usize,
    /// The model that gave the final answer (`provider/model`).
    pub model: String,
}

/// An event of a run, delivered as it happens.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
#[non_exhaustive]
pub enum RunEvent {
    /// A lifecycle hook answered an event (or failed); see [`super::hooks`].
    Hook {
        /// The hook (a Rust hook's name or an executable's path).
        hook: String,
        /// The event.
        event: super::hooks::HookEventKind,
        /// `allow`, `veto`, `rewrite` or `failed`.
        decision: String,
        /// A veto's reason or the failure.
        #[serde(skip_serializing_if = "Option::is_none")]
        reason: Option<String>,
        /// The tool call it was about (`before_tool_call`, `after_tool_call`).
        #[serde(skip_serializing_if = "Option::is_none")]
        call_id: Option<String>,
        /// Wall time in milliseconds.
        duration_ms: u64,
    },
    /// The run began.
    RunStart {
        /// Run id.
        run_id: String,
        /// Workspace id.
        workspace: String,
        /// Session id.
        session: String,
        /// Primary model (`provider/model`).
        model: String,
        /// Fallback models, in order.
        fallbacks: Vec<String>,
        /// Messages of earlier runs of the session loaded as context.
        history_messages: usize,
    },
    /// Something the caller should know that does not stop the run (a small context
    /// window, a fallback dropped, a memory flush skipped, …).
    Warning {
        /// What.
        message: String,
    },
    /// A model call is about to be made.
    ModelAttempt {
        /// Step (0 for summaries).
        step: usize,
        /// Provider.
        provider: String,
        /// Model.
        model: String,
        /// Key index in the provider's ring.
        key_index: Option<usize>,
        /// Where the key came from.
        key_source: Option<String>,
        /// A probe of a model in cooldown.
        probe: bool,
    },
    /// A piece of the model's text, as it streams.
    TextDelta {
        /// Step.
        step: usize,
        /// The text.
        text: String,
    },
    /// The model's text of one step (the final answer, or what it said before tool calls).
    AssistantMessage {
        /// Step.
        step: usize,
        /// The text.
        text: String,
        /// Tool calls it made in this step.
        tool_calls: usize,
        /// `provider/model` that answered.
        model: String,
    },
    /// The model called a tool.
    ToolCall {
        /// Step.
        step: usize,
        /// Call id.
        call_id: String,
        /// Tool.
        name: String,
        /// Arguments as given.
        arguments: Value,
    },
    /// A tool returned (or the call was refused).
    ToolResult {
        /// Step.
        step: usize,
        /// Call id.
        call_id: String,
        /// Tool.
        name: String,
        /// Output as given to the model (truncated, secrets redacted).
        output: String,
        /// Whether it failed.
        is_error: bool,
        /// Whether the output was truncated.
        truncated: bool,
        /// Wall time in milliseconds.
        duration_ms: u64,
    },
    /// A failed call is retried on the same model after a wait.
    Retry {
        /// Provider.
        provider: String,
        /// Model.
        model: String,
        /// Why the call failed.
        reason: FailoverReason,
        /// HTTP status.
        status: Option<u16>,
        /// The wait, in milliseconds (`Retry-After` honoured).
        delay_ms: u64,
        /// The number of the coming try on this model.
        attempt: u32,
        /// What the provider said.
        message: String,
    },
    /// The next key of a provider is used after a key failed.
    KeyRotation {
        /// Provider.
        provider: String,
        /// Key that failed.
        from_key: usize,
        /// Why.
        reason: FailoverReason,
    },
    /// The run moves to the next model of the chain.
    Fallback {
        /// Model given up on (`provider/model`).
        from: String,
        /// Model tried next.
        to: String,
        /// Why (`overloaded`, `auth`, `cooldown`, …).
        reason: String,
    },
    /// Old tool results were replaced by a marker to fit the context window.
    ContextPruned {
        /// Results pruned.
        results: usize,
        /// Estimated tokens before.
        tokens_before: u64,
        /// Estimated tokens after.
        tokens_after: u64,
    },
    /// Before a compaction, the model was asked to save what matters with memory tools.
    MemoryFlush {
        /// Memory tool calls it made.
        tool_calls: usize,
    },
    /// Older turns were summarized (and the summary recorded in the transcript).
    Compaction {
        /// Why: `overflow` (the provider said the prompt is too long) or `threshold` (the
        /// estimate passed the compaction threshold).
        trigger: String,
        /// Messages replaced by the summary.
        replaced_messages: usize,
        /// Estimated tokens before.
        tokens_before: u64,
        /// Estimated tokens after.
        tokens_after: u64,
        /// Characters of the summary.
        summary_chars: usize,
    },
    /// A subagent started (see [`super::subagents`]).
    SubagentStart {
        /// Position of its task (0-based).
        index: usize,
        /// Its label.
        label: String,
        /// Its new session.
        session: String,
        /// Its depth.
        depth: usize,
    },
    /// A subagent ended.
    SubagentEnd {
        /// Position of its task (0-based).
        index: usize,
        /// Its label.
        label: String,
        /// Its session.
        session: String,
        /// Whether it answered.
        ok: bool,
        /// How its run ended.
        outcome: RunOutcome,
        /// Its tokens (added to this run's).
        usage: Usage,
        /// Why it failed.
        #[serde(skip_serializing_if = "Option::is_none")]
        error: Option<String>,
        /// Wall time in milliseconds.
        duration_ms: u64,
    },
    /// The run ended (always the last event).
    RunEnd {
        /// Run id.
        run_id: String,
        /// Session id.
        session: String,
        /// How it ended.
        outcome: RunOutcome,
        /// The final answer (empty unless completed or max steps).
        response: String,
        /// Tokens of this run.
        usage: Usage,
        /// Tokens of the session so far.
        session_usage: Usage,
        /// Steps taken.
        steps: usize,
        /// Model calls made.
        attempts: usize,
        /// Tool calls made.
        tool_calls: usize,
        /// The error, when the run failed.
        #[serde(skip_serializing_if = "Option::is_none")]
        error: Option<String>,
        /// Wall time in milliseconds.
        duration_ms: u64,
    },
}

impl RunEvent {
    /// Replaces the secrets `r` knows (the run's workspace's and the operator's) in every
    /// field that carries free text: model text, tool arguments and output, hook reasons,
    /// provider messages, errors. (A secret cut between two `text_delta` events is caught
    /// in the `assistant_message` that follows, not in the deltas.)
    pub fn redact(&mut self, r: &crate::logging::Redactor) {
        let text = |s: &mut String| {
            let red = r.redact(s);
            if red != *s {
                *s = red;
            }
        };
        match self {
            RunEvent::Hook { reason, .. } => reason.iter_mut().for_each(text),
            RunEvent::Warning { message } | RunEvent::Retry { message, .. } => text(message),
            RunEvent::TextDelta { text: t, .. } | RunEvent::AssistantMessage { text: t, .. } => {
                text(t)
            }
            RunEvent::ToolCall { arguments, .. } => r.redact_json(arguments),
            RunEvent::ToolResult { output, .. } => text(output),
            RunEvent::Fallback { reason, .. } => text(reason),
            RunEvent::SubagentEnd { error, .. } => error.iter_mut().for_each(text),
            RunEvent::RunEnd {
                response, error, ..
            } => {
                text(response);
                error.iter_mut().for_each(text);
            }
            RunEvent::RunStart { .. }
            | RunEvent::ModelAttempt { .. }
            | RunEvent::KeyRotation { .. }
            | RunEvent::ContextPruned { .. }
            | RunEvent::MemoryFlush { .. }
            | RunEvent::Compaction { .. }
            | RunEvent::SubagentStart { .. } => {}
        }
    }

    /// The `type` tag.
    pub fn kind(&self) -> &'static str {
        match self {
            RunEvent::Hook { .. } => "hook",
            RunEvent::RunStart { .. } => "run_start",
            RunEvent::Warning { .. } => "warning",
            RunEvent::ModelAttempt { .. } => "model_attempt",
            RunEvent::TextDelta { .. } => "text_delta",
            RunEvent::AssistantMessage { .. } => "assistant_message",
            RunEvent::ToolCall { .. } => "tool_call",
            RunEvent::ToolResult { .. } => "tool_result",
            RunEvent::Retry { .. } => "retry",
            RunEvent::KeyRotation { .. } => "key_rotation",
            RunEvent::Fallback { .. } => "fallback",
            RunEvent::ContextPruned { .. } => "context_pruned",
            RunEvent::MemoryFlush { .. } => "memory_flush",
            RunEvent::Compaction { .. } => "compaction",
            RunEvent::SubagentStart { .. } => "subagent_start",
            RunEvent::SubagentEnd { .. } => "subagent_end",
            RunEvent::RunEnd { .. } => "run_end",
        }
    }

    /// The event as one line of JSON (no newline).
    pub fn to_json_line(&self) -> String {
        serde_json::to_string(self).unwrap_or_else(|e| {
            serde_json::json!({"type": "error", "message": format!("event does not serialize: {e}")})
                .to_string()
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_are_json_with_a_type() {
        let e = RunEvent::Retry {
            provider: "anthropic".into(),
            model: "claude-x".into(),
            reason: FailoverReason::RateLimit,
            status: Some(429),
            delay_ms: 1000,
            attempt: 2,
            message: "slow down".into(),
        };
        let v: Value = serde_json::from_str(&e.to_json_line()).unwrap();
        assert_eq!(v["type"], "retry");
        assert_eq!(v["reason"], "rate_limit");
        assert_eq!(e.kind(), "retry");
        let end = RunEvent::RunEnd {
            run_id: "r".into(),
            session: "s".into(),
            outcome: RunOutcome::MaxSteps,
            response: String::new(),
            usage: Usage::default(),
            session_usage: Usage::default(),
            steps: 3,
            attempts: 3,
            tool_calls: 2,
            error: None,
            duration_ms: 5,
        };
        let v: Value = serde_json::from_str(&end.to_json_line()).unwrap();
        assert_eq!(v["outcome"], "max_steps");
        assert!(v.get("error").is_none());
    }

    #[test]
    fn attempts_list_reads_well() {
        let a = Attempt {
            step: 1,
            provider: "anthropic".into(),
            model: "claude-x".into(),
            key_index: Some(0),
            key_source: Some("$ANTHROPIC_API_KEY".into()),
            outcome: "overloaded".into(),
            reason: Some(FailoverReason::Overloaded),
            status: Some(529),
            message: Some("Overloaded".into()),
            probe: false,
            duration: Duration::from_millis(3),
        };
        assert_eq!(
            format_attempts(&[a]),
            "\n  1. anthropic/claude-x key #1 ($ANTHROPIC_API_KEY): overloaded (HTTP 529): Overloaded"
        );
    }
}
