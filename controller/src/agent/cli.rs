//! `bulkhead run`: one agent run from the command line.
//!
//! Events go to stderr as they happen (a line per tool call, retry, key rotation, fallback,
//! compaction and warning), the answer to stdout. With `--json`, every event is a JSON line
//! on stdout instead (the answer is in the last one, `run_end`). SIGINT/SIGTERM cancel the
//! run (its sandbox is killed; exit 130); a second one exits at once.

use std::io::{Read, Write};
use std::path::Path;
use std::time::Duration;

use clap::Args;
use serde_json::Value;

use super::{CancelToken, RunEvent, RunOutcome, RunRequest};
use crate::creds::{CredentialKey, KEY_ENV};
use crate::error::{exit, Error, Result};
use crate::platform::Platform;
use crate::sessions::LockMode;
pub use crate::util::cancel::cancel_on_signals;

/// Arguments of `bulkhead run`.
#[derive(Debug, Args)]
pub struct RunArgs {
    /// Workspace id.
    pub id: String,
    /// The message to the agent; `-` reads it from stdin.
    pub message: String,
    /// Session to continue (created if new); default: a new session with a generated id.
    #[arg(long, value_name = "SID")]
    pub session: Option<String>,
    /// Primary model, provider/model (default: the workspace's).
    #[arg(long, value_name = "PROVIDER/MODEL")]
    pub model: Option<String>,
    /// Fallback model, provider/model; repeatable, tried in order (default: the
    /// workspace's).
    #[arg(long = "fallback", value_name = "PROVIDER/MODEL")]
    pub fallbacks: Vec<String>,
    /// Base URL of the primary model's server (default: the workspace's, then
    /// $ANTHROPIC_BASE_URL, $OPENAI_BASE_URL, $GEMINI_BASE_URL, …).
    #[arg(long, value_name = "URL")]
    pub base_url: Option<String>,
    /// System prompt (replaces the default; the sandbox note and instructions files are
    /// still appended).
    #[arg(long, value_name = "TEXT")]
    pub system: Option<String>,
    /// Most model steps before giving up (exit 10).
    #[arg(long, value_name = "N", default_value_t = super::DEFAULT_MAX_STEPS)]
    pub max_steps: usize,
    /// Retries of a failing model before falling back (default 2).
    #[arg(long, value_name = "N")]
    pub retries: Option<u32>,
    /// Stop the run after SECS seconds (exit 124), also in the middle of a model call, a
    /// tool call or a hook.
    #[arg(long, value_name = "SECS")]
    pub timeout: Option<f64>,
    /// Ask for whole replies instead of streamed ones.
    #[arg(long)]
    pub no_stream: bool,
    /// Wait for a session in use by another run instead of failing (exit 8).
    #[arg(long)]
    pub wait: bool,
    /// Context window (tokens) to assume for every model, instead of the model table's.
    #[arg(long, value_name = "TOKENS")]
    pub context_window: Option<u32>,
}

fn one_line(s: &str, max: usize) -> String {
    let flat: String = s
        .chars()
        .map(|c| if c == '\n' || c == '\r' { ' ' } else { c })
        .collect();
    // Model and tool text: escaped, so it cannot drive the operator's terminal.
    let flat = crate::util::text::safe_line(&flat);
    if flat.chars().count() > max {
        format!("{}…", flat.chars().take(max).collect::<String>())
    } else {
        flat
    }
}

/// A readable summary of a tool call's arguments.
fn describe_args(name: &str, args: &Value) -> String {
    let field = |k: &str| args.get(k).and_then(Value::as_str);
    let main = match name {
        "bash" => field("command").map(str::to_string),
        "read" | "write" | "edit" | "ls" => Some(field("path").unwrap_or("/workspace").to_string()),
        _ => None,
    };
    one_line(&main.unwrap_or_else(|| args.to_string()), 160)
}

/// The human-readable line for an event (stderr), if it gets one.
pub fn human_line(e: &RunEvent) -> Option<String> {
    Some(match e {
        RunEvent::RunStart {
            session,
            model,
            fallbacks,
            history_messages,
            ..
        } => {
            let mut s = format!("session {session}, model {model}");
            if !fallbacks.is_empty() {
                s.push_str(&format!(" (fallbacks: {})", fallbacks.join(", ")));
            }
            if *history_messages > 0 {
                s.push_str(&format!(", continuing after {history_messages} messages"));
            }
            s
        }
        RunEvent::Warning { message } => format!("warning: {message}"),
        RunEvent::Hook {
            hook,
            event,
            decision,
            reason,
            ..
        } if decision != "allow" => format!(
            "hook {hook} ({event}): {decision}{}",
            reason
                .as_deref()
                .map(|r| format!(": {}", one_line(r, 200)))
                .unwrap_or_default()
        ),
        RunEvent::AssistantMessage {
            text, tool_calls, ..
        } if *tool_calls > 0 && !text.trim().is_empty() => format!("> {}", one_line(text.trim(), 200)),
        RunEvent::ToolCall {
            name, arguments, ..
        } => format!("· {name}: {}", describe_args(name, arguments)),
        RunEvent::ToolResult {
            output, is_error, ..
        } if *is_error => format!("  ! {}", one_line(output.trim(), 200)),
        RunEvent::Retry {
            provider,
            model,
            reason,
            status,
            delay_ms,
            attempt,
            ..
        } => format!(
            "retry: {provider}/{model} {reason}{}, waiting {:.1}s (try {attempt})",
            status.map(|s| format!(" (HTTP {s})")).unwrap_or_default(),
            *delay_ms as f64 / 1000.0
        ),
        RunEvent::KeyRotation {
            provider,
            from_key,
            reason,
        } => format!(
            "key: {provider} key #{} failed ({reason}), using the next key",
            from_key + 1
        ),
        RunEvent::Fallback { from, to, reason } => {
            format!("fallback: {from} → {to} ({reason})")
        }
        RunEvent::ContextPruned {
            results,
            tokens_before,
            tokens_after,
        } => format!(
            "context: pruned {results} old tool result(s) ({tokens_before} → {tokens_after} tokens)"
        ),
        RunEvent::MemoryFlush { tool_calls } => {
            format!("memory: saved before compaction ({tool_calls} call(s))")
        }
        RunEvent::Compaction {
            trigger,
            replaced_messages,
            tokens_before,
            tokens_after,
            ..
        } => format!(
            "compaction ({trigger}): summarized {replaced_messages} message(s) ({tokens_before} → {tokens_after} tokens)"
        ),
        RunEvent::SubagentStart {
            label, session, ..
        } => format!("subagent {label}: started (session {session})"),
        RunEvent::SubagentEnd {
            label,
            outcome,
            usage,
            error,
            ..
        } => format!(
            "subagent {label}: {} ({} in / {} out tokens){}",
            outcome.as_str(),
            usage.input_tokens,
            usage.output_tokens,
            error
                .as_deref()
                .map(|e| format!(": {}", one_line(e, 200)))
                .unwrap_or_default()
        ),
        RunEvent::RunEnd {
            outcome,
            usage,
            steps,
            tool_calls,
            ..
        } => {
            let mut s = format!(
                "{}: {steps} step(s), {tool_calls} tool call(s), {} in / {} out tokens",
                outcome.as_str(),
                usage.input_tokens,
                usage.output_tokens
            );
            if let Some(c) = usage.cost_usd {
                s.push_str(&format!(", ${c:.4}"));
            }
            s
        }
        _ => return None,
    })
}

/// Runs `bulkhead run`; `key_file` is the global `--credential-key-file`.
pub fn run(p: &Platform, args: RunArgs, json: bool, key_file: Option<&Path>) -> Result<i32> {
    let ws = p.workspace(&args.id)?;
    let message = if args.message == "-" {
        let mut s = String::new();
        std::io::stdin()
            .take(4 << 20)
            .read_to_string(&mut s)
            .map_err(|e| Error::Invalid(format!("reading the message from stdin: {e}")))?;
        s
    } else {
        args.message.clone()
    };
    let mut req = request_from_args(&args, message, key_file)?;
    req.subagents = ws.platform_config()?.subagents;
    let token = CancelToken::new();
    req.cancel = Some(token.clone());
    cancel_on_signals(token);

    let mut on_event = |e: &RunEvent| {
        if json {
            let mut out = std::io::stdout().lock();
            let _ = writeln!(out, "{}", e.to_json_line());
            let _ = out.flush();
        } else if let Some(line) = human_line(e) {
            // A completed run's end is its answer on stdout; other ends get a line.
            if !matches!(
                e,
                RunEvent::RunEnd {
                    outcome: RunOutcome::Completed,
                    ..
                }
            ) {
                eprintln!("{line}");
            }
        }
    };
    let result = ws.run_with_events(req, &mut on_event)?;
    if !json {
        let mut out = std::io::stdout().lock();
        // The model's answer, escaped for the terminal (--json has it exact).
        let _ = writeln!(
            out,
            "{}",
            crate::util::text::safe(result.response.trim_end())
        );
        let _ = out.flush();
    }
    Ok(match result.outcome {
        RunOutcome::MaxSteps => {
            eprintln!(
                "bulkhead: stopped after {} steps without a final answer (raise --max-steps)",
                result.steps
            );
            exit::MAX_STEPS
        }
        _ => exit::OK,
    })
}

/// The [`RunRequest`] for `args` with `message` (already read), shared by `bulkhead run`
/// and the JSON-RPC `run`: refuses an empty message and a bad timeout, and opens the
/// credential store's key when `key_file` or `$BULKHEAD_CREDENTIAL_KEY` is given. The
/// caller sets the cancel token.
pub fn request_from_args(
    args: &RunArgs,
    message: String,
    key_file: Option<&Path>,
) -> Result<RunRequest> {
    if message.trim().is_empty() {
        return Err(Error::Invalid("the message is empty".into()));
    }
    let credential_key =
        if key_file.is_some() || std::env::var_os(KEY_ENV).is_some_and(|v| !v.is_empty()) {
            Some(CredentialKey::resolve(key_file)?)
        } else {
            None
        };
    let mut req = RunRequest::new(message);
    req.session = args.session.clone();
    req.system_prompt = args.system.clone();
    req.model = args.model.clone();
    if !args.fallbacks.is_empty() {
        req.fallbacks = Some(args.fallbacks.clone());
    }
    req.base_url = args.base_url.clone();
    req.max_steps = args.max_steps;
    req.stream = !args.no_stream;
    req.credential_key = credential_key;
    if let Some(r) = args.retries {
        req.retry.max_attempts = r.saturating_add(1);
    }
    if let Some(t) = args.timeout {
        if !(t.is_finite() && t > 0.0) {
            return Err(Error::Invalid(
                "--timeout must be a positive number of seconds".into(),
            ));
        }
        let d = Duration::try_from_secs_f64(t).map_err(|_| {
            Error::Invalid(format!(
                "--timeout {t} is too large: give at most {} seconds",
                Duration::MAX.as_secs()
            ))
        })?;
        req.timeouts.run = Some(d);
    }
    if args.wait {
        req.lock = LockMode::Wait;
    }
    req.context.context_window = args.context_window;
    Ok(req)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn lines_are_short_and_readable() {
        let e = RunEvent::ToolCall {
            step: 1,
            call_id: "c".into(),
            name: "bash".into(),
            arguments: json!({"command": "echo hi\necho there"}),
        };
        assert_eq!(human_line(&e).unwrap(), "· bash: echo hi echo there");
        let e = RunEvent::Fallback {
            from: "anthropic/a".into(),
            to: "openai/b".into(),
            reason: "overloaded".into(),
        };
        assert_eq!(
            human_line(&e).unwrap(),
            "fallback: anthropic/a → openai/b (overloaded)"
        );
        let e = RunEvent::TextDelta {
            step: 1,
            text: "x".into(),
        };
        assert!(human_line(&e).is_none());
        let e = RunEvent::ToolCall {
            step: 1,
            call_id: "c".into(),
            name: "memory_store".into(),
            arguments: json!({"text": "t"}),
        };
        assert_eq!(human_line(&e).unwrap(), "· memory_store: {\"text\":\"t\"}");
    }
}
