//! Context management: token estimates, the context-window guard, truncation of tool
//! results, pruning of old tool results, the session's history as model messages, and the
//! pieces of compaction.
//!
//! Tokens are estimated at 4 characters per token, corrected by the provider's own count
//! once a call has reported one (the estimate of a request is then the reported input of the
//! last call plus the estimate of what was added since).
//!
//! # History and compaction in the transcript
//!
//! The messages of a session are rebuilt from its transcript: `user_message` → a user turn,
//! `assistant_message` and the `tool_call`s after it → an assistant turn, `tool_result` → a
//! tool result (a call whose result was never recorded gets an error result, so the
//! conversation stays valid for every provider). These four are the *context events*.
//! A `compaction` event says that the first `replaced_events` context events of the session
//! are replaced by its `summary`: only the last compaction counts, and its summary (which
//! includes any earlier summary) becomes the first user turn.

use std::io::Read;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use crate::llm::{ChatRequest, Message, ToolCall};
use crate::sessions::{Event, Usage};

/// Context settings of a run.
#[derive(Debug, Clone, PartialEq)]
pub struct ContextConfig {
    /// Warn when a model's context window is below this many tokens (default 32,000).
    pub warn_below_tokens: u32,
    /// Refuse a model whose context window is below this many tokens (default 16,000).
    pub min_tokens: u32,
    /// Use this context window for every model instead of the model table's.
    pub context_window: Option<u32>,
    /// Most characters of one tool result given to the model (head + tail kept).
    pub tool_result_max_chars: usize,
    /// Prune old tool results when the estimate passes this fraction of the window (minus
    /// the output reserve).
    pub prune_at: f64,
    /// Compact when the estimate (after pruning) passes this fraction.
    pub compact_at: f64,
    /// A compaction keeps the most recent turns up to this fraction of the window.
    pub keep_recent: f64,
    /// Most output tokens asked of the model per call (reserved in the window).
    pub max_output_tokens: u32,
}

impl Default for ContextConfig {
    fn default() -> Self {
        ContextConfig {
            warn_below_tokens: 32_000,
            min_tokens: 16_000,
            context_window: None,
            tool_result_max_chars: 30_000,
            prune_at: 0.6,
            compact_at: 0.85,
            keep_recent: 0.25,
            max_output_tokens: 4096,
        }
    }
}

/// Tokens of `chars` characters at 4 per token.
pub fn tokens_for_chars(chars: usize) -> u64 {
    (chars as u64).div_ceil(4)
}

fn chars(s: &str) -> usize {
    s.chars().count()
}

/// Estimated tokens of one message (its text, tool arguments, and a little overhead).
pub fn message_tokens(m: &Message) -> u64 {
    let c = match m {
        Message::User { text } => chars(text),
        Message::Assistant { text, tool_calls } => {
            chars(text)
                + tool_calls
                    .iter()
                    .map(|c| c.name.len() + c.id.len() + c.arguments.to_string().len() + 8)
                    .sum::<usize>()
        }
        Message::ToolResult {
            call_id,
            name,
            content,
            ..
        } => call_id.len() + name.len() + chars(content),
    };
    tokens_for_chars(c) + 4
}

/// Estimated tokens of a whole request (system prompt, messages, tool schemas).
pub fn request_tokens(req: &ChatRequest) -> u64 {
    let tools: usize = req
        .tools
        .iter()
        .map(|t| t.name.len() + t.description.len() + t.input_schema.to_string().len())
        .sum();
    tokens_for_chars(chars(&req.system) + tools)
        + req.messages.iter().map(message_tokens).sum::<u64>()
}

/// `text` cut to `max` characters: the head and the tail kept, a marker between them.
/// Returns the text and whether it was cut.
pub fn truncate_middle(text: &str, max: usize) -> (String, bool) {
    let n = chars(text);
    if n <= max {
        return (text.to_string(), false);
    }
    let marker_room = 80;
    let keep = max.saturating_sub(marker_room).max(2);
    let head = keep * 2 / 3;
    let tail = keep - head;
    // `keep` may exceed `n` when `max` < 2: saturate rather than underflow.
    let omitted = n.saturating_sub(head + tail);
    let head_s: String = text.chars().take(head).collect();
    let tail_s: String = text
        .chars()
        .skip(n.saturating_sub(tail).max(head))
        .collect();
    (
        format!(
            "{head_s}\n[… {omitted} characters omitted of {n}; ask for less output …]\n{tail_s}"
        ),
        true,
    )
}

/// The marker that replaces a pruned tool result.
pub fn pruned_marker(chars: usize) -> String {
    format!("[older tool output ({chars} characters) removed to fit the context window; run the tool again if it is still needed]")
}

/// Replaces the content of old tool results, oldest first, until `tokens` fits under
/// `target`; results after the last assistant turn are kept. Returns how many were pruned
/// and the new estimate.
pub fn prune_tool_results(
    messages: &mut [CtxMessage],
    mut tokens: u64,
    target: u64,
) -> (usize, u64) {
    let protect_from = messages
        .iter()
        .rposition(|m| matches!(m.msg, Message::Assistant { .. }))
        .unwrap_or(messages.len());
    let mut pruned = 0;
    for m in messages[..protect_from].iter_mut() {
        if tokens <= target {
            break;
        }
        if let Message::ToolResult { content, .. } = &mut m.msg {
            let n = chars(content);
            let marker = pruned_marker(n);
            if n <= chars(&marker) + 32 || content.starts_with("[older tool output") {
                continue;
            }
            let before = tokens_for_chars(n);
            *content = marker;
            tokens = tokens.saturating_sub(before) + tokens_for_chars(chars(content));
            pruned += 1;
        }
    }
    (pruned, tokens)
}

/// A message of the context and how many transcript context events it stands for (0 for
/// messages made up by the loop: a summary, a result for a call that never got one).
#[derive(Debug, Clone, PartialEq)]
pub struct CtxMessage {
    /// The message.
    pub msg: Message,
    /// Context events it stands for.
    pub events: u64,
}

impl CtxMessage {
    /// A message of this run (its events are what the loop writes for it).
    pub fn new(msg: Message) -> Self {
        let events = match &msg {
            Message::User { .. } | Message::ToolResult { .. } => 1,
            Message::Assistant { text, tool_calls } => {
                u64::from(!text.is_empty() || tool_calls.is_empty()) + tool_calls.len() as u64
            }
        };
        CtxMessage { msg, events }
    }
}

/// A session's history, rebuilt from its transcript.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct History {
    /// The summary of the last compaction, if any.
    pub summary: Option<String>,
    /// Context events the summary replaces (counted from the start of the session).
    pub replaced_events: u64,
    /// Messages after the summary.
    pub messages: Vec<CtxMessage>,
    /// Compactions recorded in the session.
    pub compactions: u64,
    /// Sum of the `run_end` usages.
    pub usage: Usage,
}

/// Adds `b` into `a` (cost known only when known on both sides).
pub fn add_usage(a: &mut Usage, b: &Usage) {
    let a_empty = a.input_tokens == 0 && a.output_tokens == 0 && a.cost_usd.is_none();
    let b_empty = b.input_tokens == 0 && b.output_tokens == 0;
    a.cost_usd = match (a.cost_usd, b.cost_usd) {
        (Some(x), Some(y)) => Some(x + y),
        (None, Some(y)) if a_empty => Some(y),
        (Some(x), None) if b_empty => Some(x),
        _ => None,
    };
    a.input_tokens += b.input_tokens;
    a.output_tokens += b.output_tokens;
}

const MISSING_RESULT: &str =
    "[no result was recorded for this call: the run ended before it finished]";

/// Rebuilds the history from a transcript's events.
pub fn history_from_events(events: &[Event]) -> History {
    let mut h = History::default();
    // The last compaction decides how many context events to skip.
    for e in events {
        if let Event::Compaction {
            summary,
            replaced_events,
            ..
        } = e
        {
            h.summary = Some(summary.clone());
            h.replaced_events = *replaced_events;
            h.compactions += 1;
        }
        if let Event::RunEnd { usage, .. } = e {
            let u = usage.clone();
            add_usage(&mut h.usage, &u);
        }
    }
    let mut seen: u64 = 0;
    let mut pending: Option<CtxMessage> = None;
    // Calls of the pending/last assistant turn still waiting for a result: (id, name).
    let mut open_calls: Vec<(String, String)> = Vec::new();
    let mut out: Vec<CtxMessage> = Vec::new();

    fn close_open(out: &mut Vec<CtxMessage>, open: &mut Vec<(String, String)>) {
        for (id, name) in open.drain(..) {
            out.push(CtxMessage {
                msg: Message::ToolResult {
                    call_id: id,
                    name,
                    content: MISSING_RESULT.into(),
                    is_error: true,
                },
                events: 0,
            });
        }
    }

    for e in events {
        let is_ctx = matches!(
            e,
            Event::UserMessage { .. }
                | Event::AssistantMessage { .. }
                | Event::ToolCall { .. }
                | Event::ToolResult { .. }
        );
        if !is_ctx {
            continue;
        }
        seen += 1;
        if seen <= h.replaced_events {
            continue;
        }
        match e {
            Event::UserMessage { text, .. } => {
                if let Some(p) = pending.take() {
                    out.push(p);
                }
                close_open(&mut out, &mut open_calls);
                match out.last_mut() {
                    Some(CtxMessage {
                        msg: Message::User { text: prev },
                        events,
                    }) => {
                        // Two user turns in a row (a run that failed before answering):
                        // merge them so roles alternate.
                        prev.push_str("\n\n");
                        prev.push_str(text);
                        *events += 1;
                    }
                    _ => out.push(CtxMessage {
                        msg: Message::User { text: text.clone() },
                        events: 1,
                    }),
                }
            }
            Event::AssistantMessage { text, .. } => {
                if let Some(p) = pending.take() {
                    out.push(p);
                }
                close_open(&mut out, &mut open_calls);
                pending = Some(CtxMessage {
                    msg: Message::Assistant {
                        text: text.clone(),
                        tool_calls: vec![],
                    },
                    events: 1,
                });
            }
            Event::ToolCall {
                call_id,
                name,
                arguments,
                ..
            } => {
                let p = pending.get_or_insert_with(|| {
                    close_open(&mut out, &mut open_calls);
                    CtxMessage {
                        msg: Message::Assistant {
                            text: String::new(),
                            tool_calls: vec![],
                        },
                        events: 0,
                    }
                });
                if let Message::Assistant { tool_calls, .. } = &mut p.msg {
                    tool_calls.push(ToolCall {
                        id: call_id.clone(),
                        name: name.clone(),
                        arguments: arguments.clone(),
                    });
                }
                p.events += 1;
                open_calls.push((call_id.clone(), name.clone()));
            }
            Event::ToolResult {
                call_id,
                output,
                is_error,
                ..
            } => {
                if let Some(p) = pending.take() {
                    out.push(p);
                }
                let Some(i) = open_calls.iter().position(|(id, _)| id == call_id) else {
                    // A result without its call (the call was compacted away): drop it.
                    continue;
                };
                let (id, name) = open_calls.remove(i);
                out.push(CtxMessage {
                    msg: Message::ToolResult {
                        call_id: id,
                        name,
                        content: output.clone(),
                        is_error: *is_error,
                    },
                    events: 1,
                });
            }
            _ => {}
        }
    }
    if let Some(p) = pending.take() {
        out.push(p);
    }
    close_open(&mut out, &mut open_calls);
    // A final assistant turn that still has open calls was closed above. Drop leading
    // tool results whose call was compacted away (kept results always follow their call).
    h.messages = out;
    h
}

/// The first user turn made from a summary.
pub fn summary_message(summary: &str, current_request: Option<&str>) -> String {
    let mut s = format!("[Summary of the earlier conversation]\n{summary}");
    if let Some(r) = current_request {
        s.push_str("\n\n[The user's current request]\n");
        s.push_str(r);
    }
    s
}

/// The messages sent to the model: the summary as the first user turn (merged with a user
/// turn that follows it), then the rest; a conversation that would start with an assistant
/// turn gets a short user turn first.
pub fn assemble(summary: Option<&str>, messages: &[CtxMessage]) -> Vec<Message> {
    let mut out: Vec<Message> = Vec::with_capacity(messages.len() + 1);
    if let Some(s) = summary {
        out.push(Message::User {
            text: s.to_string(),
        });
    }
    for m in messages {
        match (&m.msg, out.last_mut()) {
            (Message::User { text }, Some(Message::User { text: prev })) => {
                prev.push_str("\n\n");
                prev.push_str(text);
            }
            (msg, _) => out.push(msg.clone()),
        }
    }
    if !matches!(out.first(), None | Some(Message::User { .. })) {
        out.insert(
            0,
            Message::User {
                text: "[The conversation continues.]".into(),
            },
        );
    }
    out
}

/// Where to cut for a compaction: the index of the first message kept. The kept part
/// starts at a user or assistant turn (never at a tool result, which must follow its call),
/// holds at most `keep_tokens` if possible, and at least the last turn; index 0 (nothing
/// to summarize) gives `None`.
pub fn compaction_boundary(messages: &[CtxMessage], keep_tokens: u64) -> Option<usize> {
    let safe: Vec<usize> = (1..messages.len())
        .filter(|&i| !matches!(messages[i].msg, Message::ToolResult { .. }))
        .collect();
    let last = *safe.last()?;
    let mut suffix = vec![0u64; messages.len() + 1];
    for i in (0..messages.len()).rev() {
        suffix[i] = suffix[i + 1] + message_tokens(&messages[i].msg);
    }
    Some(
        safe.iter()
            .copied()
            .find(|&i| suffix[i] <= keep_tokens)
            .unwrap_or(last),
    )
}

/// The older part of a conversation as plain text for the summarizer, at most `max_chars`
/// (each tool result cut to a few thousand characters, then the whole kept head + tail).
pub fn render_for_summary(
    summary: Option<&str>,
    messages: &[CtxMessage],
    max_chars: usize,
) -> String {
    let mut s = String::new();
    if let Some(prev) = summary {
        s.push_str("Earlier summary:\n");
        s.push_str(prev);
        s.push_str("\n\n");
    }
    for m in messages {
        match &m.msg {
            Message::User { text } => {
                s.push_str("User: ");
                s.push_str(text);
                s.push('\n');
            }
            Message::Assistant { text, tool_calls } => {
                if !text.is_empty() {
                    s.push_str("Assistant: ");
                    s.push_str(text);
                    s.push('\n');
                }
                for c in tool_calls {
                    let (args, _) = truncate_middle(&c.arguments.to_string(), 2000);
                    s.push_str(&format!("Assistant called {}: {args}\n", c.name));
                }
            }
            Message::ToolResult {
                name,
                content,
                is_error,
                ..
            } => {
                let (c, _) = truncate_middle(content, 3000);
                s.push_str(&format!(
                    "{} result{}: {c}\n",
                    name,
                    if *is_error { " (error)" } else { "" }
                ));
            }
        }
    }
    truncate_middle(&s, max_chars).0
}

/// System prompt of the summarizer.
pub const SUMMARY_SYSTEM: &str = "You write summaries of conversations between a user and an \
AI agent that works with tools in a sandboxed Linux workspace. The summary replaces the \
conversation in the agent's context, so it must let the agent continue without it.";

/// The summarizer's request text.
pub fn summary_request(rendered: &str) -> String {
    format!(
        "Summarize the conversation below. Keep: what the user asked for and still wants, \
decisions made, facts learned, files created or changed (with paths), commands that worked \
or failed, errors still open, and the next steps. Be concise; use short bullet points. \
Reply with the summary only.\n\n<conversation>\n{rendered}\n</conversation>"
    )
}

/// The nudge of the memory-flush turn.
pub const MEMORY_FLUSH_PROMPT: &str = "[System notice] The conversation is about to be \
compacted: older turns will be replaced by a summary. If anything from this conversation is \
worth keeping for later (facts about the user, decisions, results), save it now with the \
memory tools. Reply briefly when done.";

/// Most bytes of an instructions file read into the system prompt.
pub const MAX_INSTRUCTIONS_BYTES: u64 = 64 * 1024;

/// Reads an instructions file for the system prompt: a regular file, not a symlink (opened
/// with `O_NOFOLLOW`, so a link planted by the sandbox cannot point the controller at a host
/// file), with one hard link, cut at [`MAX_INSTRUCTIONS_BYTES`]. `None` when absent or not
/// acceptable (with a warning in the log for the latter).
pub fn read_instructions(path: &Path) -> Option<String> {
    let f = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(nix::fcntl::OFlag::O_NOFOLLOW.bits() | nix::fcntl::OFlag::O_NONBLOCK.bits())
        .open(path);
    let f = match f {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return None,
        Err(e) => {
            log::warn!(target: "agent", "not reading {}: {e}", path.display());
            return None;
        }
    };
    let meta = f.metadata().ok()?;
    if !meta.is_file() || std::os::unix::fs::MetadataExt::nlink(&meta) != 1 {
        log::warn!(target: "agent", "not reading {}: not a regular file with one link", path.display());
        return None;
    }
    let mut buf = Vec::new();
    f.take(MAX_INSTRUCTIONS_BYTES).read_to_end(&mut buf).ok()?;
    let s = String::from_utf8_lossy(&buf).trim().to_string();
    (!s.is_empty()).then_some(s)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn user(t: &str) -> CtxMessage {
        CtxMessage::new(Message::User { text: t.into() })
    }
    fn asst(t: &str, calls: &[(&str, &str)]) -> CtxMessage {
        CtxMessage::new(Message::Assistant {
            text: t.into(),
            tool_calls: calls
                .iter()
                .map(|(id, n)| ToolCall {
                    id: id.to_string(),
                    name: n.to_string(),
                    arguments: json!({}),
                })
                .collect(),
        })
    }
    fn result(id: &str, c: &str) -> CtxMessage {
        CtxMessage::new(Message::ToolResult {
            call_id: id.into(),
            name: "bash".into(),
            content: c.into(),
            is_error: false,
        })
    }

    #[test]
    fn truncation_keeps_head_and_tail() {
        let s: String = (0..1000)
            .map(|i| char::from(b'a' + (i % 26) as u8))
            .collect();
        let (t, cut) = truncate_middle(&s, 300);
        assert!(cut);
        assert!(t.chars().count() <= 300 + 80, "{}", t.len());
        assert!(t.starts_with(&s[..100]));
        assert!(t.ends_with(&s[s.len() - 50..]));
        assert!(t.contains("characters omitted of 1000"));
        assert_eq!(truncate_middle("short", 300), ("short".into(), false));
        // Multibyte characters are never split.
        let m = "é".repeat(500);
        let (t, _) = truncate_middle(&m, 200);
        assert!(t.starts_with("éé"));
    }

    #[test]
    fn pruning_replaces_oldest_results_first_and_keeps_the_last_turn() {
        let big = "x".repeat(4000);
        let mut msgs = vec![
            user("do it"),
            asst("", &[("a", "bash")]),
            result("a", &big),
            asst("", &[("b", "bash")]),
            result("b", &big),
            asst("", &[("c", "bash")]),
            result("c", &big),
        ];
        let total: u64 = msgs.iter().map(|m| message_tokens(&m.msg)).sum();
        let (n, after) = prune_tool_results(&mut msgs, total, total - 1500);
        assert_eq!(n, 2);
        assert!(after < total - 1500);
        assert!(
            matches!(&msgs[2].msg, Message::ToolResult { content, .. } if content.starts_with("[older tool output (4000"))
        );
        assert!(matches!(&msgs[6].msg, Message::ToolResult { content, .. } if content == &big));
        // Nothing left to prune: the last turn's result stays.
        let (n, _) = prune_tool_results(&mut msgs, total, 0);
        assert_eq!(n, 0);
    }

    #[test]
    fn history_round_trips_events_and_closes_open_calls() {
        let events = vec![
            Event::run_start("r1", Some("anthropic/x")),
            Event::user_message("write a file"),
            Event::assistant_message("ok"),
            Event::tool_call("c1", "bash", json!({"command": "echo hi"})),
            Event::tool_result("c1", "hi", false),
            Event::tool_call("c2", "read", json!({"path": "a"})),
            Event::tool_result("c2", "hi", false),
            Event::assistant_message("done: hi"),
            Event::run_end(
                "r1",
                Usage {
                    input_tokens: 10,
                    output_tokens: 5,
                    cost_usd: None,
                },
                "completed",
            ),
            Event::run_start("r2", None),
            Event::user_message("again"),
            Event::tool_call("c3", "bash", json!({})),
            // The run died here: no result, no answer.
            Event::run_start("r3", None),
            Event::user_message("and again"),
        ];
        let h = history_from_events(&events);
        assert_eq!(h.usage.input_tokens, 10);
        let kinds: Vec<String> = h
            .messages
            .iter()
            .map(|m| match &m.msg {
                Message::User { text } => format!("U:{text}"),
                Message::Assistant { text, tool_calls } => format!("A:{text}:{}", tool_calls.len()),
                Message::ToolResult {
                    call_id, is_error, ..
                } => format!("R:{call_id}:{is_error}"),
            })
            .collect();
        assert_eq!(
            kinds,
            vec![
                "U:write a file",
                "A:ok:1",
                "R:c1:false",
                "A::1",
                "R:c2:false",
                "A:done: hi:0",
                "U:again",
                "A::1",
                "R:c3:true",
                "U:and again",
            ]
        );
        // Event counts match what the transcript holds (10 context events, 1 made up).
        let ctx_events: u64 = h.messages.iter().map(|m| m.events).sum();
        assert_eq!(ctx_events, 10);
    }

    #[test]
    fn compaction_skips_replaced_events() {
        let events = vec![
            Event::user_message("one"),
            Event::assistant_message("1"),
            Event::user_message("two"),
            Event::assistant_message(""),
            Event::compaction("they said one", 2),
            Event::user_message("three"),
        ];
        let h = history_from_events(&events);
        assert_eq!(h.summary.as_deref(), Some("they said one"));
        assert_eq!(h.compactions, 1);
        let msgs = assemble(h.summary.as_deref(), &h.messages);
        assert_eq!(
            msgs,
            vec![
                Message::User {
                    text: "they said one\n\ntwo".into()
                },
                Message::Assistant {
                    text: "".into(),
                    tool_calls: vec![]
                },
                Message::User {
                    text: "three".into()
                },
            ]
        );
    }

    #[test]
    fn boundary_never_starts_at_a_tool_result() {
        let big = "y".repeat(400);
        let msgs = vec![
            user("task"),
            asst("", &[("a", "bash")]),
            result("a", &big),
            asst("", &[("b", "bash")]),
            result("b", &big),
        ];
        // Nothing fits: keep only the last turn.
        assert_eq!(compaction_boundary(&msgs, 0), Some(3));
        // Everything after the first message fits.
        assert_eq!(compaction_boundary(&msgs, 1_000_000), Some(1));
        assert_eq!(compaction_boundary(&msgs[..1], 0), None);
        let r = render_for_summary(Some("before"), &msgs, 100_000);
        assert!(r.starts_with("Earlier summary:\nbefore"));
        assert!(r.contains("User: task") && r.contains("Assistant called bash"));
    }

    #[test]
    fn instructions_refuse_symlinks() {
        let d = tempfile::tempdir().unwrap();
        let real = d.path().join("real.md");
        std::fs::write(&real, "  be nice  \n").unwrap();
        assert_eq!(read_instructions(&real).as_deref(), Some("be nice"));
        let link = d.path().join("AGENTS.md");
        std::os::unix::fs::symlink(&real, &link).unwrap();
        assert_eq!(read_instructions(&link), None);
        let hard = d.path().join("hard.md");
        std::fs::hard_link(&real, &hard).unwrap();
        assert_eq!(read_instructions(&hard), None);
        assert_eq!(read_instructions(&d.path().join("absent.md")), None);
    }
}
