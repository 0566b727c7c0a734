//! What the three wire formats have in common: the request context, streamed events and
//! their framing, error responses, usage estimates, placeholders.

use std::time::{SystemTime, UNIX_EPOCH};

use serde_json::{json, Value};

use super::script::{Api, Fault, Reply, StreamErrorKind};
use super::{anthropic, gemini, openai};

/// What rendering needs to know about the request being answered.
#[derive(Debug)]
pub(crate) struct Ctx<'a> {
    pub api: Api,
    /// Request number (1-based), used in ids.
    pub seq: u64,
    /// The model the request named (`mock-model` when it named none).
    pub model: String,
    pub key: Option<&'a str>,
    /// The parsed body (`Null` when there was none).
    pub body: &'a Value,
    pub body_len: usize,
    /// Gemini streaming without `alt=sse`: a JSON array instead of SSE.
    pub gemini_array: bool,
}

impl Ctx<'_> {
    /// OpenAI `stream_options.include_usage`.
    pub fn include_usage(&self) -> bool {
        self.body
            .pointer("/stream_options/include_usage")
            .and_then(Value::as_bool)
            .unwrap_or(false)
    }

    /// (input, output) tokens of a reply: scripted, else estimated at 4 bytes a token.
    pub fn usage(&self, r: &Reply) -> (u64, u64) {
        let est_in = (self.body_len as u64 / 4).max(1);
        let out_bytes = r.text.as_deref().map_or(0, str::len)
            + r.tool_calls
                .iter()
                .map(|c| c.name.len() + c.arguments.to_string().len())
                .sum::<usize>();
        let est_out = (out_bytes as u64 / 4).max(1);
        let u = r.usage.unwrap_or_default();
        (
            u.input_tokens.unwrap_or(est_in),
            u.output_tokens.unwrap_or(est_out),
        )
    }

    pub fn framing(&self) -> Framing {
        match self.api {
            Api::Anthropic => Framing::AnthropicSse,
            Api::OpenAi => Framing::OpenAiSse,
            Api::Gemini if self.gemini_array => Framing::GeminiArray,
            Api::Gemini => Framing::GeminiSse,
        }
    }
}

/// One streamed event before framing.
#[derive(Debug, Clone)]
pub(crate) struct Event {
    /// SSE `event:` name (Anthropic only).
    pub name: Option<&'static str>,
    /// The data line (JSON, or `[DONE]`).
    pub data: String,
}

impl Event {
    pub fn named(name: &'static str, data: Value) -> Event {
        Event {
            name: Some(name),
            data: data.to_string(),
        }
    }

    pub fn data(data: Value) -> Event {
        Event {
            name: None,
            data: data.to_string(),
        }
    }
}

/// How events are put on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Framing {
    /// `event: NAME\ndata: JSON\n\n`
    AnthropicSse,
    /// `data: JSON\n\n`
    OpenAiSse,
    /// `data: JSON\r\n\r\n` (what Gemini sends)
    GeminiSse,
    /// `[JSON\r\n,JSON\r\n]` (Gemini streaming without `alt=sse`)
    GeminiArray,
}

impl Framing {
    pub fn content_type(self) -> &'static str {
        match self {
            Framing::GeminiArray => "application/json; charset=UTF-8",
            _ => "text/event-stream; charset=utf-8",
        }
    }

    /// Bytes of the event at `index`.
    pub fn encode(self, index: usize, ev: &Event) -> Vec<u8> {
        let s = match self {
            Framing::AnthropicSse => match ev.name {
                Some(n) => format!("event: {n}\ndata: {}\n\n", ev.data),
                None => format!("data: {}\n\n", ev.data),
            },
            Framing::OpenAiSse => format!("data: {}\n\n", ev.data),
            Framing::GeminiSse => format!("data: {}\r\n\r\n", ev.data),
            Framing::GeminiArray if index == 0 => format!("[{}", ev.data),
            Framing::GeminiArray => format!("\r\n,{}", ev.data),
        };
        s.into_bytes()
    }

    /// Bytes after the last event.
    pub fn trailer(self, events: usize) -> &'static [u8] {
        match self {
            Framing::GeminiArray if events == 0 => b"[]",
            Framing::GeminiArray => b"\r\n]",
            _ => b"",
        }
    }
}

/// An HTTP error answer.
#[derive(Debug, Clone)]
pub(crate) struct ErrorResp {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Value,
}

impl ErrorResp {
    pub fn new(status: u16, body: Value) -> ErrorResp {
        ErrorResp {
            status,
            headers: Vec::new(),
            body,
        }
    }

    pub fn header(mut self, n: &str, v: impl Into<String>) -> ErrorResp {
        self.headers.push((n.to_string(), v.into()));
        self
    }

    pub fn retry_after(self, secs: Option<u64>) -> ErrorResp {
        match secs {
            Some(s) => self.header("retry-after", s.to_string()),
            None => self,
        }
    }
}

/// The non-streaming body of a reply.
pub(crate) fn reply_json(ctx: &Ctx<'_>, r: &Reply) -> Value {
    match ctx.api {
        Api::Anthropic => anthropic::reply(ctx, r),
        Api::OpenAi => openai::reply(ctx, r),
        Api::Gemini => gemini::reply(ctx, r),
    }
}

/// The streamed events of a reply (OpenAI's includes the final `[DONE]`).
pub(crate) fn reply_events(ctx: &Ctx<'_>, r: &Reply) -> Vec<Event> {
    match ctx.api {
        Api::Anthropic => anthropic::events(ctx, r),
        Api::OpenAi => openai::events(ctx, r),
        Api::Gemini => gemini::events(ctx, r),
    }
}

/// The HTTP error of a fault that is one (`None` for the connection-level faults).
pub(crate) fn fault_error(ctx: &Ctx<'_>, f: &Fault) -> Option<ErrorResp> {
    let e = match ctx.api {
        Api::Anthropic => anthropic::error(ctx, f)?,
        Api::OpenAi => openai::error(ctx, f)?,
        Api::Gemini => gemini::error(ctx, f)?,
    };
    Some(with_common_headers(ctx, e))
}

/// An error event in the middle of a stream.
pub(crate) fn stream_error(ctx: &Ctx<'_>, kind: StreamErrorKind) -> Event {
    match ctx.api {
        Api::Anthropic => anthropic::stream_error(kind),
        Api::OpenAi => openai::stream_error(kind),
        Api::Gemini => gemini::stream_error(kind),
    }
}

/// 500 in the API's error shape with `message` (exhausted script, unparsable body…).
pub(crate) fn plain_error(ctx: &Ctx<'_>, status: u16, message: &str) -> ErrorResp {
    let e = match ctx.api {
        Api::Anthropic => anthropic::plain_error(ctx, status, message),
        Api::OpenAi => openai::plain_error(status, message),
        Api::Gemini => gemini::plain_error(status, message),
    };
    with_common_headers(ctx, e)
}

fn with_common_headers(ctx: &Ctx<'_>, mut e: ErrorResp) -> ErrorResp {
    e.headers
        .insert(0, ("content-type".into(), "application/json".into()));
    e.headers.extend(request_id_header(ctx));
    e
}

/// The provider's request-id header.
pub(crate) fn request_id_header(ctx: &Ctx<'_>) -> Option<(String, String)> {
    match ctx.api {
        Api::Anthropic => Some(("request-id".into(), format!("req_mock_{:06}", ctx.seq))),
        Api::OpenAi => Some(("x-request-id".into(), format!("req_mock_{:06}", ctx.seq))),
        Api::Gemini => None,
    }
}

/// A body that is not JSON, shaped like the start of a real one.
pub(crate) fn malformed_body(ctx: &Ctx<'_>) -> String {
    let full = reply_json(ctx, &Reply::text("this body is cut short")).to_string();
    format!("{}\"unterminated", &full[..full.len() / 2])
}

/// `data` cut in half (at a char boundary): no longer JSON.
pub(crate) fn break_event(ev: &Event) -> Event {
    let mut cut = ev.data.len() / 2;
    while !ev.data.is_char_boundary(cut) {
        cut -= 1;
    }
    Event {
        name: ev.name,
        data: format!("{}\"unterminated", &ev.data[..cut]),
    }
}

/// Splits `s` into pieces of at most `n` chars (at least one piece).
pub(crate) fn pieces(s: &str, n: usize) -> Vec<String> {
    let n = n.max(1);
    let chars: Vec<char> = s.chars().collect();
    if chars.is_empty() {
        return vec![String::new()];
    }
    chars.chunks(n).map(|c| c.iter().collect()).collect()
}

/// Text piece size of a reply's stream.
pub(crate) fn text_chunk(r: &Reply) -> usize {
    r.chunk_chars.unwrap_or(16)
}

/// Pieces of a tool call's JSON arguments (at most 4, at least 16 chars each).
pub(crate) fn arg_pieces(args: &str) -> Vec<String> {
    let n = args.chars().count().div_ceil(4).max(16);
    pieces(args, n)
}

pub(crate) fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// `YYYY-MM-DDTHH:MM:SSZ` of a Unix time.
pub(crate) fn rfc3339(secs: u64) -> String {
    bulkhead::util::time::format_rfc3339_secs(secs)
}

/// OpenAI-style duration: `20s`, `1m30s`.
pub(crate) fn go_duration(secs: u64) -> String {
    if secs >= 60 {
        format!("{}m{}s", secs / 60, secs % 60)
    } else {
        format!("{secs}s")
    }
}

/// The text of a message `content` that is a string or an array of text blocks/parts.
fn content_text(c: &Value) -> Option<String> {
    match c {
        Value::String(s) => Some(s.clone()),
        Value::Array(items) => {
            let texts: Vec<&str> = items
                .iter()
                .filter_map(|b| {
                    (b.get("type").and_then(Value::as_str) == Some("text"))
                        .then(|| b.get("text").and_then(Value::as_str))
                        .flatten()
                })
                .collect();
            (!texts.is_empty()).then(|| texts.join("\n"))
        }
        _ => None,
    }
}

fn messages<'a>(body: &'a Value, field: &str) -> &'a [Value] {
    body.get(field)
        .and_then(Value::as_array)
        .map_or(&[], Vec::as_slice)
}

/// Every tool result in the request, oldest first.
pub(crate) fn tool_results(api: Api, body: &Value) -> Vec<String> {
    let mut out = Vec::new();
    match api {
        Api::Anthropic => {
            for m in messages(body, "messages") {
                if let Some(blocks) = m.get("content").and_then(Value::as_array) {
                    for b in blocks {
                        if b.get("type").and_then(Value::as_str) == Some("tool_result") {
                            let c = b.get("content").cloned().unwrap_or(Value::Null);
                            out.push(content_text(&c).unwrap_or_else(|| match c {
                                Value::Null => String::new(),
                                other => other.to_string(),
                            }));
                        }
                    }
                }
            }
        }
        Api::OpenAi => {
            for m in messages(body, "messages") {
                if m.get("role").and_then(Value::as_str) == Some("tool") {
                    let c = m.get("content").cloned().unwrap_or(Value::Null);
                    out.push(content_text(&c).unwrap_or_default());
                }
            }
        }
        Api::Gemini => {
            for c in messages(body, "contents") {
                for p in c
                    .get("parts")
                    .and_then(Value::as_array)
                    .into_iter()
                    .flatten()
                {
                    if let Some(fr) = p.get("functionResponse") {
                        let resp = fr.get("response").cloned().unwrap_or(Value::Null);
                        let s = ["content", "output", "result"]
                            .iter()
                            .find_map(|k| resp.get(k).and_then(Value::as_str))
                            .map(str::to_string)
                            .unwrap_or_else(|| resp.to_string());
                        out.push(s);
                    }
                }
            }
        }
    }
    out
}

/// Whether the conversation ends with a tool result.
pub(crate) fn ends_with_tool_result(api: Api, body: &Value) -> bool {
    match api {
        Api::Anthropic => messages(body, "messages").last().is_some_and(|m| {
            m.get("content")
                .and_then(Value::as_array)
                .is_some_and(|bs| {
                    bs.iter()
                        .any(|b| b.get("type").and_then(Value::as_str) == Some("tool_result"))
                })
        }),
        Api::OpenAi => messages(body, "messages")
            .last()
            .is_some_and(|m| m.get("role").and_then(Value::as_str) == Some("tool")),
        Api::Gemini => messages(body, "contents").last().is_some_and(|c| {
            c.get("parts")
                .and_then(Value::as_array)
                .is_some_and(|ps| ps.iter().any(|p| p.get("functionResponse").is_some()))
        }),
    }
}

/// The text of the last user message.
pub(crate) fn last_user_text(api: Api, body: &Value) -> Option<String> {
    let (field, content) = match api {
        Api::Anthropic | Api::OpenAi => ("messages", "content"),
        Api::Gemini => ("contents", "parts"),
    };
    messages(body, field).iter().rev().find_map(|m| {
        let role = m.get("role").and_then(Value::as_str);
        if role != Some("user") {
            return None;
        }
        match api {
            Api::Gemini => {
                let texts: Vec<&str> = m
                    .get(content)
                    .and_then(Value::as_array)?
                    .iter()
                    .filter_map(|p| p.get("text").and_then(Value::as_str))
                    .collect();
                (!texts.is_empty()).then(|| texts.join("\n"))
            }
            _ => content_text(m.get(content)?),
        }
    })
}

/// The reply with its placeholders filled from the request.
pub(crate) fn fill(r: &Reply, api: Api, body: &Value, model: &str) -> Reply {
    let needs = |s: &str| s.contains("{{");
    let has_any = r.text.as_deref().is_some_and(needs)
        || r.tool_calls.iter().any(|c| needs(&c.arguments.to_string()));
    if !has_any {
        return r.clone();
    }
    let last_tool = tool_results(api, body)
        .pop()
        .unwrap_or_else(|| "<no tool result>".into());
    let user = last_user_text(api, body).unwrap_or_else(|| "<no user text>".into());
    let sub = |s: &str| {
        s.replace("{{last_tool_result}}", &last_tool)
            .replace("{{last_user_text}}", &user)
            .replace("{{model}}", model)
    };
    fn walk(v: &mut Value, sub: &dyn Fn(&str) -> String) {
        match v {
            Value::String(s) => *s = sub(s),
            Value::Array(a) => a.iter_mut().for_each(|x| walk(x, sub)),
            Value::Object(o) => o.values_mut().for_each(|x| walk(x, sub)),
            _ => {}
        }
    }
    let mut out = r.clone();
    out.text = out.text.as_deref().map(sub);
    for c in &mut out.tool_calls {
        walk(&mut c.arguments, &sub);
    }
    out
}

/// Default reply for the stream faults that need one.
pub(crate) fn default_stream_reply() -> Reply {
    Reply::text("This reply is a mock stream that will not finish normally.")
        .and_tool_call("bash", json!({"command": "echo never-runs"}))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_known_dates() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(rfc3339(1_735_689_599), "2024-12-31T23:59:59Z");
    }

    #[test]
    fn pieces_split_on_chars() {
        assert_eq!(pieces("héllo", 2), ["hé", "ll", "o"]);
        assert_eq!(pieces("", 3), [""]);
    }
}
