//! Anthropic Messages API (`POST {base}/v1/messages`, `x-api-key`,
//! `anthropic-version: 2023-06-01`).
//!
//! Mapping: the system prompt goes in the top-level `system` field; a user turn is a `text`
//! block; an assistant turn is its `text` block plus one `tool_use` block (`id`, `name`,
//! `input`) per call; tool results are `tool_result` blocks (`tool_use_id`, `content`,
//! `is_error`) in a user turn. Consecutive turns of one role are merged into one message, so
//! the results of parallel calls travel together as the API requires. Tools are
//! `{name, description, input_schema}`.
//!
//! Streaming events: `message_start` (input usage), `content_block_start` (`text` or
//! `tool_use` with its id and name), `content_block_delta` (`text_delta`, or
//! `input_json_delta` pieces of the tool input), `content_block_stop`, `message_delta`
//! (`stop_reason`, output usage), `message_stop`; `ping` is ignored and `error` ends the call
//! with the classified error.

use std::collections::BTreeMap;
use std::sync::Arc;

use serde_json::{json, Value};

use super::http::{Call, HttpClient};
use super::{
    ApiKey, ChatRequest, ChatResponse, Message, Provider, ProviderError, StopReason, ToolCall,
    Usage,
};

/// The `anthropic-version` header sent.
pub const ANTHROPIC_VERSION: &str = "2023-06-01";

/// Client of the Anthropic Messages API.
#[derive(Debug)]
pub struct AnthropicProvider {
    base_url: String,
    http: Arc<HttpClient>,
}

impl AnthropicProvider {
    /// A client for `base_url` (the host, e.g. `https://api.anthropic.com`; a base ending in
    /// `/v1` is accepted too).
    pub fn new(base_url: &str, http: Arc<HttpClient>) -> Self {
        AnthropicProvider {
            base_url: base_url.trim_end_matches('/').to_string(),
            http,
        }
    }

    /// The endpoint called.
    pub fn messages_url(&self) -> String {
        if self.base_url.ends_with("/v1") {
            format!("{}/messages", self.base_url)
        } else {
            format!("{}/v1/messages", self.base_url)
        }
    }
}

fn stop_reason(s: &str) -> StopReason {
    match s {
        "end_turn" | "stop_sequence" => StopReason::EndTurn,
        "tool_use" => StopReason::ToolUse,
        "max_tokens" => StopReason::MaxTokens,
        other => StopReason::Other(other.to_string()),
    }
}

/// The request body for `req`.
pub fn build_body(req: &ChatRequest) -> Value {
    let mut messages: Vec<(&str, Vec<Value>)> = Vec::new();
    for m in &req.messages {
        let (role, blocks) = match m {
            Message::User { text } => (
                "user",
                if text.is_empty() {
                    vec![]
                } else {
                    vec![json!({"type": "text", "text": text})]
                },
            ),
            Message::Assistant { text, tool_calls } => {
                let mut b = Vec::new();
                if !text.is_empty() {
                    b.push(json!({"type": "text", "text": text}));
                }
                for c in tool_calls {
                    // The API wants an object; a call whose arguments did not parse is replayed
                    // with empty input (its error result follows it).
                    let input = if c.arguments.is_object() {
                        c.arguments.clone()
                    } else {
                        json!({})
                    };
                    b.push(json!({"type": "tool_use", "id": c.id, "name": c.name, "input": input}));
                }
                ("assistant", b)
            }
            Message::ToolResult {
                call_id,
                content,
                is_error,
                ..
            } => {
                let mut b = json!({"type": "tool_result", "tool_use_id": call_id});
                if !content.is_empty() {
                    b["content"] = json!(content);
                }
                if *is_error {
                    b["is_error"] = json!(true);
                }
                ("user", vec![b])
            }
        };
        if blocks.is_empty() {
            continue;
        }
        match messages.last_mut() {
            Some((r, existing)) if *r == role => {
                // Tool results must open a user message: put them before any text.
                for b in blocks {
                    if b["type"] == "tool_result" {
                        let at = existing
                            .iter()
                            .position(|x| x["type"] != "tool_result")
                            .unwrap_or(existing.len());
                        existing.insert(at, b);
                    } else {
                        existing.push(b);
                    }
                }
            }
            _ => messages.push((role, blocks)),
        }
    }
    let mut body = json!({
        "model": req.model,
        "max_tokens": req.max_tokens,
        "messages": messages
            .into_iter()
            .map(|(role, content)| json!({"role": role, "content": content}))
            .collect::<Vec<_>>(),
    });
    if !req.system.is_empty() {
        body["system"] = json!(req.system);
    }
    if !req.tools.is_empty() {
        body["tools"] = req
            .tools
            .iter()
            .map(|t| json!({"name": t.name, "description": t.description, "input_schema": t.input_schema}))
            .collect();
    }
    if let Some(t) = req.temperature {
        body["temperature"] = json!(t);
    }
    if req.stream {
        body["stream"] = json!(true);
    }
    body
}

fn usage_of(u: &Value, into: &mut Usage) {
    let n = |k: &str| u.get(k).and_then(Value::as_u64).unwrap_or(0);
    let input = n("input_tokens") + n("cache_creation_input_tokens") + n("cache_read_input_tokens");
    if input > 0 {
        into.input_tokens = input;
    }
    if let Some(o) = u.get("output_tokens").and_then(Value::as_u64) {
        into.output_tokens = o;
    }
}

/// Parses a non-streaming reply.
pub fn parse_response(v: &Value) -> Result<ChatResponse, String> {
    let content = v
        .get("content")
        .and_then(Value::as_array)
        .ok_or("the reply has no `content` array")?;
    let mut text = String::new();
    let mut tool_calls = Vec::new();
    for b in content {
        match b.get("type").and_then(Value::as_str) {
            Some("text") => text.push_str(b.get("text").and_then(Value::as_str).unwrap_or("")),
            Some("tool_use") => tool_calls.push(ToolCall {
                id: b
                    .get("id")
                    .and_then(Value::as_str)
                    .unwrap_or("")
                    .to_string(),
                name: b
                    .get("name")
                    .and_then(Value::as_str)
                    .unwrap_or("")
                    .to_string(),
                arguments: b.get("input").cloned().unwrap_or_else(|| json!({})),
            }),
            _ => {} // thinking, redacted_thinking, server tools
        }
    }
    let mut usage = Usage::default();
    if let Some(u) = v.get("usage") {
        usage_of(u, &mut usage);
    }
    let stop = stop_reason(
        v.get("stop_reason")
            .and_then(Value::as_str)
            .unwrap_or("end_turn"),
    );
    Ok(ChatResponse {
        text,
        tool_calls,
        usage,
        stop,
    })
}

enum Block {
    Tool {
        id: String,
        name: String,
        json: String,
    },
    Other,
}

/// Folds stream events into a reply.
#[derive(Default)]
struct StreamState {
    text: String,
    blocks: BTreeMap<u64, Block>,
    usage: Usage,
    stop: Option<StopReason>,
    done: bool,
}

/// Parses tool arguments given as JSON text: empty is `{}`, invalid JSON is kept as a string.
pub(crate) fn parse_arguments(raw: &str) -> Value {
    if raw.trim().is_empty() {
        return json!({});
    }
    serde_json::from_str(raw).unwrap_or_else(|_| Value::String(raw.to_string()))
}

impl StreamState {
    /// Takes one event's data; `Err` carries an `error` event's data.
    fn event(&mut self, data: &Value, on_text: &mut dyn FnMut(&str)) -> Result<(), ()> {
        let index = data.get("index").and_then(Value::as_u64).unwrap_or(0);
        match data.get("type").and_then(Value::as_str).unwrap_or("") {
            "message_start" => {
                if let Some(u) = data.pointer("/message/usage") {
                    usage_of(u, &mut self.usage);
                }
            }
            "content_block_start" => {
                let b = data.get("content_block").cloned().unwrap_or(Value::Null);
                let block = match b.get("type").and_then(Value::as_str) {
                    Some("tool_use") => Block::Tool {
                        id: b
                            .get("id")
                            .and_then(Value::as_str)
                            .unwrap_or("")
                            .to_string(),
                        name: b
                            .get("name")
                            .and_then(Value::as_str)
                            .unwrap_or("")
                            .to_string(),
                        json: String::new(),
                    },
                    Some("text") => {
                        let t = b.get("text").and_then(Value::as_str).unwrap_or("");
                        if !t.is_empty() {
                            self.text.push_str(t);
                            on_text(t);
                        }
                        Block::Other
                    }
                    _ => Block::Other,
                };
                self.blocks.insert(index, block);
            }
            "content_block_delta" => {
                let d = data.get("delta").cloned().unwrap_or(Value::Null);
                match d.get("type").and_then(Value::as_str) {
                    Some("text_delta") => {
                        let t = d.get("text").and_then(Value::as_str).unwrap_or("");
                        if !t.is_empty() {
                            self.text.push_str(t);
                            on_text(t);
                        }
                    }
                    Some("input_json_delta") => {
                        if let Some(Block::Tool { json, .. }) = self.blocks.get_mut(&index) {
                            json.push_str(
                                d.get("partial_json").and_then(Value::as_str).unwrap_or(""),
                            );
                        }
                    }
                    _ => {}
                }
            }
            "message_delta" => {
                if let Some(s) = data.pointer("/delta/stop_reason").and_then(Value::as_str) {
                    self.stop = Some(stop_reason(s));
                }
                if let Some(u) = data.get("usage") {
                    usage_of(u, &mut self.usage);
                }
            }
            "message_stop" => self.done = true,
            "error" => return Err(()),
            _ => {} // ping, content_block_stop, unknown future events
        }
        Ok(())
    }

    fn finish(self) -> ChatResponse {
        let tool_calls = self
            .blocks
            .into_values()
            .filter_map(|b| match b {
                Block::Tool { id, name, json } => Some(ToolCall {
                    id,
                    name,
                    arguments: parse_arguments(&json),
                }),
                Block::Other => None,
            })
            .collect();
        ChatResponse {
            text: self.text,
            tool_calls,
            usage: self.usage,
            stop: self.stop.unwrap_or(StopReason::EndTurn),
        }
    }
}

impl Provider for AnthropicProvider {
    fn name(&self) -> &str {
        "anthropic"
    }

    fn chat(
        &self,
        req: &ChatRequest,
        key: &ApiKey,
        on_text_delta: &mut dyn FnMut(&str),
    ) -> Result<ChatResponse, ProviderError> {
        let call = Call::of("anthropic", req, key);
        let mut headers = vec![("anthropic-version", ANTHROPIC_VERSION.to_string())];
        if !key.is_empty() {
            headers.push(("x-api-key", key.expose_secret().to_string()));
        }
        let body = build_body(req);
        let url = self.messages_url();
        if !req.stream {
            // No error-object check (`None`): an Anthropic error has an error status.
            return self.http.chat_once(
                &call,
                &url,
                &headers,
                &body,
                None,
                parse_response,
                on_text_delta,
            );
        }
        let mut stream = self.http.post_sse(&call, &url, &headers, &body)?;
        let mut state = StreamState::default();
        while let Some(ev) = stream.next(&call)? {
            let data: Value = match serde_json::from_str(&ev.data) {
                Ok(v) => v,
                Err(e) => {
                    return Err(call.format(format!("invalid JSON in event {:?}: {e}", ev.event)))
                }
            };
            if state.event(&data, on_text_delta).is_err() {
                return Err(call.stream_error(&ev.data));
            }
            if state.done {
                break;
            }
        }
        if !state.done && state.stop.is_none() {
            return Err(call.truncated());
        }
        Ok(state.finish())
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::llm::{FailoverReason, ToolSpec};

    fn req() -> ChatRequest {
        ChatRequest {
            model: "claude-sonnet-4-5".into(),
            system: "You are terse.".into(),
            messages: vec![
                Message::User {
                    text: "list files".into(),
                },
                Message::Assistant {
                    text: "Looking.".into(),
                    tool_calls: vec![
                        ToolCall {
                            id: "toolu_1".into(),
                            name: "ls".into(),
                            arguments: json!({"path": "/workspace"}),
                        },
                        ToolCall {
                            id: "toolu_2".into(),
                            name: "bash".into(),
                            arguments: json!({"command": "pwd"}),
                        },
                    ],
                },
                Message::ToolResult {
                    call_id: "toolu_1".into(),
                    name: "ls".into(),
                    content: "a.txt".into(),
                    is_error: false,
                },
                Message::ToolResult {
                    call_id: "toolu_2".into(),
                    name: "bash".into(),
                    content: "exit 127".into(),
                    is_error: true,
                },
            ],
            tools: vec![ToolSpec {
                name: "ls".into(),
                description: "List a directory".into(),
                input_schema: json!({"type": "object", "properties": {"path": {"type": "string"}}}),
            }],
            max_tokens: 1024,
            temperature: Some(0.2),
            stream: true,
            deadline: None,
        }
    }

    #[test]
    fn request_body_shape() {
        let b = build_body(&req());
        assert_eq!(
            b,
            json!({
                "model": "claude-sonnet-4-5",
                "max_tokens": 1024,
                "system": "You are terse.",
                "temperature": 0.2f32,
                "stream": true,
                "tools": [{"name": "ls", "description": "List a directory",
                           "input_schema": {"type": "object", "properties": {"path": {"type": "string"}}}}],
                "messages": [
                    {"role": "user", "content": [{"type": "text", "text": "list files"}]},
                    {"role": "assistant", "content": [
                        {"type": "text", "text": "Looking."},
                        {"type": "tool_use", "id": "toolu_1", "name": "ls", "input": {"path": "/workspace"}},
                        {"type": "tool_use", "id": "toolu_2", "name": "bash", "input": {"command": "pwd"}}
                    ]},
                    // Both results in one user message.
                    {"role": "user", "content": [
                        {"type": "tool_result", "tool_use_id": "toolu_1", "content": "a.txt"},
                        {"type": "tool_result", "tool_use_id": "toolu_2", "content": "exit 127", "is_error": true}
                    ]}
                ]
            })
        );
    }

    #[test]
    fn minimal_body_omits_optional_fields() {
        let b = build_body(&ChatRequest {
            model: "m".into(),
            messages: vec![Message::User { text: "hi".into() }],
            ..Default::default()
        });
        assert!(b.get("system").is_none());
        assert!(b.get("tools").is_none());
        assert!(b.get("temperature").is_none());
        assert!(b.get("stream").is_none());
        assert_eq!(b["max_tokens"], 4096);
    }

    #[test]
    fn text_after_tool_results_stays_behind_them() {
        let b = build_body(&ChatRequest {
            model: "m".into(),
            messages: vec![
                Message::User { text: "go".into() },
                Message::Assistant {
                    text: String::new(),
                    tool_calls: vec![ToolCall {
                        id: "t1".into(),
                        name: "x".into(),
                        arguments: Value::String("{bad json".into()),
                    }],
                },
                Message::ToolResult {
                    call_id: "t1".into(),
                    name: "x".into(),
                    content: "invalid arguments".into(),
                    is_error: true,
                },
                Message::User {
                    text: "and now?".into(),
                },
            ],
            ..Default::default()
        });
        let msgs = b["messages"].as_array().unwrap();
        assert_eq!(msgs.len(), 3);
        assert_eq!(msgs[1]["content"][0]["input"], json!({}));
        assert_eq!(msgs[2]["content"][0]["type"], "tool_result");
        assert_eq!(msgs[2]["content"][1]["text"], "and now?");
    }

    #[test]
    fn parses_a_real_reply_with_tool_use() {
        let v: Value = serde_json::from_str(
            r#"{"id":"msg_01Aq9w938a90dw8q","type":"message","role":"assistant","model":"claude-sonnet-4-5-20250929",
            "content":[{"type":"text","text":"I'll check the weather."},
              {"type":"tool_use","id":"toolu_01A09q90qw90lq917835lq9","name":"get_weather","input":{"location":"San Francisco, CA","unit":"celsius"}}],
            "stop_reason":"tool_use","stop_sequence":null,
            "usage":{"input_tokens":472,"cache_creation_input_tokens":10,"cache_read_input_tokens":100,"output_tokens":89}}"#,
        )
        .unwrap();
        let r = parse_response(&v).unwrap();
        assert_eq!(r.text, "I'll check the weather.");
        assert_eq!(r.stop, StopReason::ToolUse);
        assert_eq!(
            r.usage,
            Usage {
                input_tokens: 582,
                output_tokens: 89
            }
        );
        assert_eq!(r.tool_calls[0].name, "get_weather");
        assert_eq!(r.tool_calls[0].arguments["unit"], "celsius");
    }

    /// A real stream (shape of the API docs' example), tool input split across deltas.
    pub(crate) const STREAM: &str = "event: message_start\n\
data: {\"type\":\"message_start\",\"message\":{\"id\":\"msg_014p7gG3wDgGV9EUtLvnow3U\",\"type\":\"message\",\"role\":\"assistant\",\"model\":\"claude-sonnet-4-5\",\"stop_sequence\":null,\"usage\":{\"input_tokens\":472,\"output_tokens\":2},\"content\":[],\"stop_reason\":null}}\n\n\
event: content_block_start\n\
data: {\"type\":\"content_block_start\",\"index\":0,\"content_block\":{\"type\":\"text\",\"text\":\"\"}}\n\n\
event: ping\n\
data: {\"type\": \"ping\"}\n\n\
event: content_block_delta\n\
data: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"text_delta\",\"text\":\"Okay\"}}\n\n\
event: content_block_delta\n\
data: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"text_delta\",\"text\":\", let's check.\"}}\n\n\
event: content_block_stop\n\
data: {\"type\":\"content_block_stop\",\"index\":0}\n\n\
event: content_block_start\n\
data: {\"type\":\"content_block_start\",\"index\":1,\"content_block\":{\"type\":\"tool_use\",\"id\":\"toolu_01T1x1fJ34qAmk2tNTrN7Up6\",\"name\":\"get_weather\",\"input\":{}}}\n\n\
event: content_block_delta\n\
data: {\"type\":\"content_block_delta\",\"index\":1,\"delta\":{\"type\":\"input_json_delta\",\"partial_json\":\"\"}}\n\n\
event: content_block_delta\n\
data: {\"type\":\"content_block_delta\",\"index\":1,\"delta\":{\"type\":\"input_json_delta\",\"partial_json\":\"{\\\"location\\\":\"}}\n\n\
event: content_block_delta\n\
data: {\"type\":\"content_block_delta\",\"index\":1,\"delta\":{\"type\":\"input_json_delta\",\"partial_json\":\" \\\"San Francisco, CA\\\"}\"}}\n\n\
event: content_block_stop\n\
data: {\"type\":\"content_block_stop\",\"index\":1}\n\n\
event: message_delta\n\
data: {\"type\":\"message_delta\",\"delta\":{\"stop_reason\":\"tool_use\",\"stop_sequence\":null},\"usage\":{\"output_tokens\":89}}\n\n\
event: message_stop\n\
data: {\"type\":\"message_stop\"}\n\n";

    fn run_stream(s: &str) -> (Result<ChatResponse, ()>, Vec<String>) {
        let mut p = crate::llm::sse::SseParser::new(Default::default());
        let mut evs = Vec::new();
        p.feed(s.as_bytes(), &mut evs).unwrap();
        p.finish(&mut evs).unwrap();
        let mut st = StreamState::default();
        let mut deltas = Vec::new();
        for e in evs {
            let v: Value = serde_json::from_str(&e.data).unwrap();
            if st.event(&v, &mut |t| deltas.push(t.to_string())).is_err() {
                return (Err(()), deltas);
            }
        }
        (Ok(st.finish()), deltas)
    }

    #[test]
    fn stream_reassembles_text_and_tool_input() {
        let (r, deltas) = run_stream(STREAM);
        let r = r.unwrap();
        assert_eq!(deltas, vec!["Okay", ", let's check."]);
        assert_eq!(r.text, "Okay, let's check.");
        assert_eq!(r.stop, StopReason::ToolUse);
        assert_eq!(
            r.usage,
            Usage {
                input_tokens: 472,
                output_tokens: 89
            }
        );
        assert_eq!(
            r.tool_calls,
            vec![ToolCall {
                id: "toolu_01T1x1fJ34qAmk2tNTrN7Up6".into(),
                name: "get_weather".into(),
                arguments: json!({"location": "San Francisco, CA"}),
            }]
        );
    }

    #[test]
    fn stream_error_event_is_classified() {
        let s = "event: error\ndata: {\"type\":\"error\",\"error\":{\"type\":\"overloaded_error\",\"message\":\"Overloaded\"}}\n\n";
        let (r, _) = run_stream(s);
        assert!(r.is_err());
        let key = ApiKey::none();
        let call = Call {
            provider: "anthropic",
            model: "m",
            key: &key,
            deadline: None,
        };
        let e = call.stream_error("{\"type\":\"error\",\"error\":{\"type\":\"overloaded_error\",\"message\":\"Overloaded\"}}");
        assert_eq!(e.reason, FailoverReason::Overloaded);
        assert_eq!(e.status, None);
    }

    #[test]
    fn urls() {
        let http = Arc::new(HttpClient::new(Default::default()));
        assert_eq!(
            AnthropicProvider::new("https://api.anthropic.com/", http.clone()).messages_url(),
            "https://api.anthropic.com/v1/messages"
        );
        assert_eq!(
            AnthropicProvider::new("http://127.0.0.1:9/v1", http).messages_url(),
            "http://127.0.0.1:9/v1/messages"
        );
    }
}
