//! OpenAI Chat Completions (`POST {base}/chat/completions`, `Authorization: Bearer`), for
//! OpenAI and every compatible server (Groq, Cerebras, Mistral, xAI, OpenRouter, Ollama,
//! llama.cpp, vLLM, …).
//!
//! Mapping: the system prompt is a leading `system` message; an assistant turn carries
//! `tool_calls` (`{id, type: "function", function: {name, arguments}}`, the arguments as a JSON
//! string); a tool result is a `tool` message with its `tool_call_id` (a failed tool's content
//! is prefixed with `Error: `, as the format has no error flag). Tools are
//! `{type: "function", function: {name, description, parameters}}`.
//!
//! Streaming: `data:` chunks whose `choices[0].delta` holds `content` pieces and
//! `tool_calls` pieces keyed by `index` (the id and name come first, the arguments arrive in
//! pieces); `finish_reason` ends the choice; with `stream_options.include_usage` a last chunk
//! has `usage` and no choices (Groq also reports it in `x_groq.usage`); `data: [DONE]` ends
//! the stream. A chunk holding `error` ends the call with the classified error.

use std::sync::Arc;

use serde_json::{json, Value};

use super::anthropic::parse_arguments;
use super::http::{Call, HttpClient};
use super::{
    ApiKey, ChatRequest, ChatResponse, Message, Provider, ProviderError, StopReason, ToolCall,
    Usage,
};

/// The name of the output-token limit in the request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MaxTokensField {
    /// `max_tokens` (compatible servers).
    MaxTokens,
    /// `max_completion_tokens` (OpenAI; its reasoning models refuse `max_tokens`).
    MaxCompletionTokens,
}

/// Client of a Chat Completions endpoint.
#[derive(Debug)]
pub struct OpenAiProvider {
    name: String,
    base_url: String,
    http: Arc<HttpClient>,
    max_tokens_field: MaxTokensField,
    stream_usage_option: bool,
}

impl OpenAiProvider {
    /// A client named `name` for `base_url` (including the version, e.g.
    /// `https://api.openai.com/v1`).
    pub fn new(
        name: &str,
        base_url: &str,
        http: Arc<HttpClient>,
        max_tokens_field: MaxTokensField,
        stream_usage_option: bool,
    ) -> Self {
        OpenAiProvider {
            name: name.to_string(),
            base_url: base_url.trim_end_matches('/').to_string(),
            http,
            max_tokens_field,
            stream_usage_option,
        }
    }

    /// The endpoint called.
    pub fn completions_url(&self) -> String {
        format!("{}/chat/completions", self.base_url)
    }

    /// The request body for `req`.
    pub fn build_body(&self, req: &ChatRequest) -> Value {
        build_body(req, self.max_tokens_field, self.stream_usage_option)
    }
}

/// The request body for `req`.
pub fn build_body(req: &ChatRequest, max_field: MaxTokensField, stream_usage: bool) -> Value {
    let mut messages = Vec::new();
    if !req.system.is_empty() {
        messages.push(json!({"role": "system", "content": req.system}));
    }
    for m in &req.messages {
        match m {
            Message::User { text } => messages.push(json!({"role": "user", "content": text})),
            Message::Assistant { text, tool_calls } => {
                let mut msg = json!({
                    "role": "assistant",
                    "content": if text.is_empty() && !tool_calls.is_empty() { Value::Null } else { json!(text) },
                });
                if !tool_calls.is_empty() {
                    msg["tool_calls"] = tool_calls
                        .iter()
                        .map(|c| {
                            let args = match &c.arguments {
                                Value::String(raw) => raw.clone(),
                                v => v.to_string(),
                            };
                            json!({"id": c.id, "type": "function",
                                   "function": {"name": c.name, "arguments": args}})
                        })
                        .collect();
                }
                messages.push(msg);
            }
            Message::ToolResult {
                call_id,
                content,
                is_error,
                ..
            } => {
                let content = if *is_error && !content.starts_with("Error") {
                    format!("Error: {content}")
                } else {
                    content.clone()
                };
                messages.push(json!({"role": "tool", "tool_call_id": call_id, "content": content}));
            }
        }
    }
    let max_key = match max_field {
        MaxTokensField::MaxTokens => "max_tokens",
        MaxTokensField::MaxCompletionTokens => "max_completion_tokens",
    };
    let mut body = json!({"model": req.model, "messages": messages});
    body[max_key] = json!(req.max_tokens);
    if !req.tools.is_empty() {
        body["tools"] = req
            .tools
            .iter()
            .map(|t| {
                json!({"type": "function", "function": {
                    "name": t.name, "description": t.description, "parameters": t.input_schema}})
            })
            .collect();
    }
    if let Some(t) = req.temperature {
        body["temperature"] = json!(t);
    }
    if req.stream {
        body["stream"] = json!(true);
        if stream_usage {
            body["stream_options"] = json!({"include_usage": true});
        }
    }
    body
}

fn finish_reason(s: &str) -> StopReason {
    match s {
        "stop" | "end_turn" | "eos" => StopReason::EndTurn,
        "tool_calls" | "function_call" | "tool_use" => StopReason::ToolUse,
        "length" | "max_tokens" => StopReason::MaxTokens,
        other => StopReason::Other(other.to_string()),
    }
}

fn usage_of(u: &Value) -> Option<Usage> {
    if !u.is_object() {
        return None;
    }
    let n = |k: &str| u.get(k).and_then(Value::as_u64).unwrap_or(0);
    Some(Usage {
        input_tokens: n("prompt_tokens"),
        output_tokens: n("completion_tokens"),
    })
}

/// Text of a `content` that may be a string or (some servers) an array of text parts.
fn content_text(c: &Value) -> String {
    match c {
        Value::String(s) => s.clone(),
        Value::Array(parts) => parts
            .iter()
            .filter_map(|p| p.get("text").and_then(Value::as_str))
            .collect(),
        _ => String::new(),
    }
}

fn tool_arguments(v: Option<&Value>) -> Value {
    match v {
        Some(Value::String(s)) => parse_arguments(s),
        Some(v @ Value::Object(_)) => v.clone(), // Ollama sometimes sends an object
        _ => json!({}),
    }
}

/// Parses a non-streaming reply.
pub fn parse_response(v: &Value) -> Result<ChatResponse, String> {
    let choice = v
        .pointer("/choices/0")
        .ok_or("the reply has no `choices`")?;
    let msg = choice.get("message").ok_or("the choice has no `message`")?;
    let text = msg.get("content").map(content_text).unwrap_or_default();
    let mut tool_calls = Vec::new();
    if let Some(calls) = msg.get("tool_calls").and_then(Value::as_array) {
        for (i, c) in calls.iter().enumerate() {
            let id = c
                .get("id")
                .and_then(Value::as_str)
                .filter(|s| !s.is_empty());
            tool_calls.push(ToolCall {
                id: id.map_or_else(|| format!("call_{i}"), str::to_string),
                name: c
                    .pointer("/function/name")
                    .and_then(Value::as_str)
                    .unwrap_or("")
                    .to_string(),
                arguments: tool_arguments(c.pointer("/function/arguments")),
            });
        }
    }
    let mut stop = finish_reason(
        choice
            .get("finish_reason")
            .and_then(Value::as_str)
            .unwrap_or("stop"),
    );
    if !tool_calls.is_empty() && stop == StopReason::EndTurn {
        stop = StopReason::ToolUse; // Ollama and others say "stop" after tool calls
    }
    let usage = v.get("usage").and_then(usage_of).unwrap_or_default();
    Ok(ChatResponse {
        text,
        tool_calls,
        usage,
        stop,
    })
}

#[derive(Default)]
struct PartialCall {
    id: String,
    name: String,
    args: String,
    args_object: Option<Value>,
}

/// Folds stream chunks into a reply.
#[derive(Default)]
struct StreamState {
    text: String,
    calls: Vec<(u64, PartialCall)>,
    usage: Usage,
    stop: Option<StopReason>,
    done: bool,
}

impl StreamState {
    fn chunk(&mut self, v: &Value, on_text: &mut dyn FnMut(&str)) {
        if let Some(u) = v.get("usage").and_then(usage_of) {
            self.usage = u;
        } else if let Some(u) = v.pointer("/x_groq/usage").and_then(usage_of) {
            self.usage = u;
        }
        let Some(choice) = v.pointer("/choices/0") else {
            return;
        };
        let delta = choice.get("delta").cloned().unwrap_or(Value::Null);
        if let Some(c) = delta.get("content") {
            let t = content_text(c);
            if !t.is_empty() {
                self.text.push_str(&t);
                on_text(&t);
            }
        }
        if let Some(calls) = delta.get("tool_calls").and_then(Value::as_array) {
            for c in calls {
                let id = c.get("id").and_then(Value::as_str).unwrap_or("");
                let index = match c.get("index").and_then(Value::as_u64) {
                    Some(i) => i,
                    // No index (some servers): a new id is a new call, else the last call.
                    None => match self.calls.last() {
                        Some((i, p)) if id.is_empty() || p.id == id => *i,
                        Some((i, _)) => i + 1,
                        None => 0,
                    },
                };
                let pos = match self.calls.iter().position(|(i, _)| *i == index) {
                    Some(p) => p,
                    None => {
                        self.calls.push((index, PartialCall::default()));
                        self.calls.len() - 1
                    }
                };
                let p = &mut self.calls[pos].1;
                if !id.is_empty() && p.id.is_empty() {
                    p.id = id.to_string();
                }
                if let Some(n) = c.pointer("/function/name").and_then(Value::as_str) {
                    if p.name.is_empty() {
                        p.name = n.to_string();
                    }
                }
                match c.pointer("/function/arguments") {
                    Some(Value::String(s)) => p.args.push_str(s),
                    Some(o @ Value::Object(_)) => p.args_object = Some(o.clone()),
                    _ => {}
                }
            }
        }
        if let Some(r) = choice.get("finish_reason").and_then(Value::as_str) {
            self.stop = Some(finish_reason(r));
        }
    }

    fn finish(self) -> ChatResponse {
        let mut calls = self.calls;
        calls.sort_by_key(|(i, _)| *i);
        let tool_calls: Vec<ToolCall> = calls
            .into_iter()
            .enumerate()
            .map(|(n, (_, p))| ToolCall {
                id: if p.id.is_empty() {
                    format!("call_{n}")
                } else {
                    p.id
                },
                name: p.name,
                arguments: p.args_object.unwrap_or_else(|| parse_arguments(&p.args)),
            })
            .collect();
        let mut stop = self.stop.unwrap_or(StopReason::EndTurn);
        if !tool_calls.is_empty() && stop == StopReason::EndTurn {
            stop = StopReason::ToolUse;
        }
        ChatResponse {
            text: self.text,
            tool_calls,
            usage: self.usage,
            stop,
        }
    }
}

impl Provider for OpenAiProvider {
    fn name(&self) -> &str {
        &self.name
    }

    fn chat(
        &self,
        req: &ChatRequest,
        key: &ApiKey,
        on_text_delta: &mut dyn FnMut(&str),
    ) -> Result<ChatResponse, ProviderError> {
        let call = Call::of(&self.name, req, key);
        let mut headers = Vec::new();
        if !key.is_empty() {
            headers.push(("authorization", format!("Bearer {}", key.expose_secret())));
        }
        let body = self.build_body(req);
        let url = self.completions_url();
        if !req.stream {
            return self.http.chat_once(
                &call,
                &url,
                &headers,
                &body,
                Some("choices"),
                parse_response,
                on_text_delta,
            );
        }
        let mut stream = self.http.post_sse(&call, &url, &headers, &body)?;
        let mut state = StreamState::default();
        while let Some(ev) = stream.next(&call)? {
            let data = ev.data.trim();
            if data == "[DONE]" {
                state.done = true;
                break;
            }
            if data.is_empty() {
                continue;
            }
            let v = call.stream_chunk(data, "choices")?;
            state.chunk(&v, on_text_delta);
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
    use crate::llm::ToolSpec;

    fn req() -> ChatRequest {
        ChatRequest {
            model: "gpt-4o".into(),
            system: "Be brief.".into(),
            messages: vec![
                Message::User {
                    text: "weather?".into(),
                },
                Message::Assistant {
                    text: String::new(),
                    tool_calls: vec![ToolCall {
                        id: "call_abc".into(),
                        name: "get_weather".into(),
                        arguments: json!({"city": "Paris"}),
                    }],
                },
                Message::ToolResult {
                    call_id: "call_abc".into(),
                    name: "get_weather".into(),
                    content: "timeout".into(),
                    is_error: true,
                },
            ],
            tools: vec![ToolSpec {
                name: "get_weather".into(),
                description: "Weather for a city".into(),
                input_schema: json!({"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}),
            }],
            max_tokens: 500,
            temperature: None,
            stream: true,
            deadline: None,
        }
    }

    #[test]
    fn request_body_shape() {
        let b = build_body(&req(), MaxTokensField::MaxCompletionTokens, true);
        assert_eq!(
            b,
            json!({
                "model": "gpt-4o",
                "max_completion_tokens": 500,
                "stream": true,
                "stream_options": {"include_usage": true},
                "messages": [
                    {"role": "system", "content": "Be brief."},
                    {"role": "user", "content": "weather?"},
                    {"role": "assistant", "content": null, "tool_calls": [
                        {"id": "call_abc", "type": "function",
                         "function": {"name": "get_weather", "arguments": "{\"city\":\"Paris\"}"}}
                    ]},
                    {"role": "tool", "tool_call_id": "call_abc", "content": "Error: timeout"}
                ],
                "tools": [{"type": "function", "function": {
                    "name": "get_weather", "description": "Weather for a city",
                    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}]
            })
        );
        // Compatible servers: max_tokens, and no stream_options where refused (Mistral).
        let b = build_body(&req(), MaxTokensField::MaxTokens, false);
        assert_eq!(b["max_tokens"], 500);
        assert!(b.get("max_completion_tokens").is_none());
        assert!(b.get("stream_options").is_none());
        let mut r = req();
        r.stream = false;
        r.temperature = Some(0.5);
        let b = build_body(&r, MaxTokensField::MaxTokens, true);
        assert!(b.get("stream").is_none() && b.get("stream_options").is_none());
        assert_eq!(b["temperature"], 0.5);
    }

    #[test]
    fn unparsed_arguments_are_replayed_verbatim() {
        let mut r = req();
        r.messages[1] = Message::Assistant {
            text: "hm".into(),
            tool_calls: vec![ToolCall {
                id: "c".into(),
                name: "x".into(),
                arguments: Value::String("{oops".into()),
            }],
        };
        let b = build_body(&r, MaxTokensField::MaxTokens, false);
        assert_eq!(b["messages"][2]["content"], "hm");
        assert_eq!(
            b["messages"][2]["tool_calls"][0]["function"]["arguments"],
            "{oops"
        );
    }

    #[test]
    fn parses_a_real_reply() {
        let v: Value = serde_json::from_str(
            r#"{"id":"chatcmpl-abc123","object":"chat.completion","created":1699896916,"model":"gpt-4o-2024-08-06",
            "choices":[{"index":0,"message":{"role":"assistant","content":null,
              "tool_calls":[{"id":"call_abc123","type":"function","function":{"name":"get_current_weather","arguments":"{\n\"location\": \"Boston, MA\"\n}"}}]},
              "logprobs":null,"finish_reason":"tool_calls"}],
            "usage":{"prompt_tokens":82,"completion_tokens":17,"total_tokens":99,"completion_tokens_details":{"reasoning_tokens":0}}}"#,
        )
        .unwrap();
        let r = parse_response(&v).unwrap();
        assert_eq!(r.text, "");
        assert_eq!(r.stop, StopReason::ToolUse);
        assert_eq!(
            r.usage,
            Usage {
                input_tokens: 82,
                output_tokens: 17
            }
        );
        assert_eq!(r.tool_calls[0].id, "call_abc123");
        assert_eq!(r.tool_calls[0].arguments, json!({"location": "Boston, MA"}));
    }

    #[test]
    fn ollama_style_reply_with_object_arguments_and_stop() {
        let v = json!({"choices": [{"message": {"role": "assistant", "content": "",
            "tool_calls": [{"function": {"name": "ls", "arguments": {"path": "."}}}]},
            "finish_reason": "stop"}]});
        let r = parse_response(&v).unwrap();
        assert_eq!(r.stop, StopReason::ToolUse);
        assert_eq!(r.tool_calls[0].id, "call_0");
        assert_eq!(r.tool_calls[0].arguments, json!({"path": "."}));
    }

    /// A real stream: two parallel tool calls whose arguments arrive in pieces, then a usage
    /// chunk (include_usage) and [DONE].
    pub(crate) const STREAM: &str = concat!(
        "data: {\"id\":\"chatcmpl-9\",\"object\":\"chat.completion.chunk\",\"choices\":[{\"index\":0,\"delta\":{\"role\":\"assistant\",\"content\":\"\"},\"finish_reason\":null}],\"usage\":null}\n\n",
        "data: {\"id\":\"chatcmpl-9\",\"object\":\"chat.completion.chunk\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"Checking\"},\"finish_reason\":null}],\"usage\":null}\n\n",
        "data: {\"id\":\"chatcmpl-9\",\"object\":\"chat.completion.chunk\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\" both.\"},\"finish_reason\":null}],\"usage\":null}\n\n",
        "data: {\"id\":\"chatcmpl-9\",\"object\":\"chat.completion.chunk\",\"choices\":[{\"index\":0,\"delta\":{\"tool_calls\":[{\"index\":0,\"id\":\"call_DdmO9pD3xa9XTPNJ32zg2hcA\",\"type\":\"function\",\"function\":{\"name\":\"get_weather\",\"arguments\":\"\"}}]},\"finish_reason\":null}],\"usage\":null}\n\n",
        "data: {\"id\":\"chatcmpl-9\",\"object\":\"chat.completion.chunk\",\"choices\":[{\"index\":0,\"delta\":{\"tool_calls\":[{\"index\":0,\"function\":{\"arguments\":\"{\\\"lo\"}}]},\"finish_reason\":null}],\"usage\":null}\n\n",
        "data: {\"id\":\"chatcmpl-9\",\"object\":\"chat.completion.chunk\",\"choices\":[{\"index\":0,\"delta\":{\"tool_calls\":[{\"index\":0,\"function\":{\"arguments\":\"cation\\\": \\\"Paris\\\"}\"}}]},\"finish_reason\":null}],\"usage\":null}\n\n",
        "data: {\"id\":\"chatcmpl-9\",\"object\":\"chat.completion.chunk\",\"choices\":[{\"index\":0,\"delta\":{\"tool_calls\":[{\"index\":1,\"id\":\"call_2\",\"type\":\"function\",\"function\":{\"name\":\"get_weather\",\"arguments\":\"{\\\"location\\\":\"}}]},\"finish_reason\":null}],\"usage\":null}\n\n",
        "data: {\"id\":\"chatcmpl-9\",\"object\":\"chat.completion.chunk\",\"choices\":[{\"index\":0,\"delta\":{\"tool_calls\":[{\"index\":1,\"function\":{\"arguments\":\" \\\"Oslo\\\"}\"}}]},\"finish_reason\":null}],\"usage\":null}\n\n",
        "data: {\"id\":\"chatcmpl-9\",\"object\":\"chat.completion.chunk\",\"choices\":[{\"index\":0,\"delta\":{},\"finish_reason\":\"tool_calls\"}],\"usage\":null}\n\n",
        "data: {\"id\":\"chatcmpl-9\",\"object\":\"chat.completion.chunk\",\"choices\":[],\"usage\":{\"prompt_tokens\":80,\"completion_tokens\":40,\"total_tokens\":120}}\n\n",
        "data: [DONE]\n\n",
    );

    fn fold(s: &str) -> (ChatResponse, Vec<String>) {
        let mut p = crate::llm::sse::SseParser::new(Default::default());
        let mut evs = Vec::new();
        p.feed(s.as_bytes(), &mut evs).unwrap();
        let mut st = StreamState::default();
        let mut deltas = Vec::new();
        for e in evs {
            if e.data == "[DONE]" {
                break;
            }
            let v: Value = serde_json::from_str(&e.data).unwrap();
            st.chunk(&v, &mut |t| deltas.push(t.to_string()));
        }
        (st.finish(), deltas)
    }

    #[test]
    fn stream_reassembles_parallel_tool_calls() {
        let (r, deltas) = fold(STREAM);
        assert_eq!(deltas, vec!["Checking", " both."]);
        assert_eq!(r.text, "Checking both.");
        assert_eq!(r.stop, StopReason::ToolUse);
        assert_eq!(
            r.usage,
            Usage {
                input_tokens: 80,
                output_tokens: 40
            }
        );
        assert_eq!(r.tool_calls.len(), 2);
        assert_eq!(r.tool_calls[0].id, "call_DdmO9pD3xa9XTPNJ32zg2hcA");
        assert_eq!(r.tool_calls[0].arguments, json!({"location": "Paris"}));
        assert_eq!(r.tool_calls[1].id, "call_2");
        assert_eq!(r.tool_calls[1].arguments, json!({"location": "Oslo"}));
    }

    #[test]
    fn groq_usage_and_calls_without_index() {
        let s = concat!(
            "data: {\"choices\":[{\"delta\":{\"tool_calls\":[{\"id\":\"a\",\"function\":{\"name\":\"ls\",\"arguments\":\"{}\"}}]}}]}\n\n",
            "data: {\"choices\":[{\"delta\":{\"tool_calls\":[{\"id\":\"b\",\"function\":{\"name\":\"pwd\",\"arguments\":\"{}\"}}]},\"finish_reason\":\"tool_calls\"}],\"x_groq\":{\"usage\":{\"prompt_tokens\":5,\"completion_tokens\":6}}}\n\n",
        );
        let (r, _) = fold(s);
        assert_eq!(
            r.tool_calls
                .iter()
                .map(|c| c.name.as_str())
                .collect::<Vec<_>>(),
            vec!["ls", "pwd"]
        );
        assert_eq!(
            r.usage,
            Usage {
                input_tokens: 5,
                output_tokens: 6
            }
        );
    }
}
