//! Google Gemini API: `POST {base}/v1beta/models/{model}:generateContent` and
//! `:streamGenerateContent?alt=sse`, key in the `x-goog-api-key` header (never in the URL).
//!
//! Mapping: the system prompt is `systemInstruction`; turns are `contents` with role `user`
//! or `model`; a tool call is a `functionCall` part (`name`, `args`, and `id` when the API gave
//! one), a result a `functionResponse` part in a user turn (`name`, `response: {output}` or
//! `response: {error}`). Consecutive turns of one role are merged. Tools are one
//! `{functionDeclarations: [{name, description, parameters}]}`, the schema reduced to the
//! OpenAPI subset Gemini accepts (unsupported keywords such as `additionalProperties` or
//! `$schema` are dropped; `"type": ["string", "null"]` becomes `"type": "string",
//! "nullable": true`). `maxOutputTokens` and `temperature` go in `generationConfig`.
//!
//! Gemini 3 models sign their function calls (`thoughtSignature`) and refuse a history whose
//! calls lost their signature. [`ToolCall::id`] therefore carries it: `<id>#ts=<signature>`,
//! split again when the call is sent back. Ids the API did not give are `gemini-call-<n>`
//! and are not sent.
//!
//! Every streamed event is a whole `GenerateContentResponse` chunk: text parts are appended,
//! function calls arrive whole, `finishReason` and `usageMetadata` (cumulative) come last.

use std::sync::Arc;

use serde_json::{json, Map, Value};

use super::http::{Call, HttpClient};
use super::{
    ApiKey, ChatRequest, ChatResponse, Message, Provider, ProviderError, StopReason, ToolCall,
    Usage,
};

const SIGNATURE_MARK: &str = "#ts=";
const LOCAL_ID_PREFIX: &str = "gemini-call-";

/// Client of the Gemini API.
#[derive(Debug)]
pub struct GeminiProvider {
    name: String,
    base_url: String,
    http: Arc<HttpClient>,
}

impl GeminiProvider {
    /// A client named `name` for `base_url` (the host, e.g.
    /// `https://generativelanguage.googleapis.com`; a base ending in `/v1beta`, `/v1` or
    /// `/v1alpha` is used as is).
    pub fn new(name: &str, base_url: &str, http: Arc<HttpClient>) -> Self {
        GeminiProvider {
            name: name.to_string(),
            base_url: base_url.trim_end_matches('/').to_string(),
            http,
        }
    }

    /// The endpoint for `model` (`None` for a model id that is not a plain name).
    pub fn url(&self, model: &str, stream: bool) -> Option<String> {
        let model = model.strip_prefix("models/").unwrap_or(model);
        let plain = !model.is_empty()
            && model
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_'));
        if !plain {
            return None;
        }
        let versioned = ["/v1beta", "/v1", "/v1alpha"]
            .iter()
            .any(|v| self.base_url.ends_with(v));
        let base = if versioned {
            self.base_url.clone()
        } else {
            format!("{}/v1beta", self.base_url)
        };
        Some(if stream {
            format!("{base}/models/{model}:streamGenerateContent?alt=sse")
        } else {
            format!("{base}/models/{model}:generateContent")
        })
    }
}

/// Keeps only the schema keywords Gemini's OpenAPI subset knows.
pub fn gemini_schema(v: &Value) -> Value {
    const KEEP: &[&str] = &[
        "type",
        "format",
        "title",
        "description",
        "nullable",
        "enum",
        "maxItems",
        "minItems",
        "properties",
        "required",
        "minProperties",
        "maxProperties",
        "minLength",
        "maxLength",
        "pattern",
        "example",
        "anyOf",
        "propertyOrdering",
        "default",
        "items",
        "minimum",
        "maximum",
    ];
    let Value::Object(map) = v else {
        return v.clone();
    };
    let mut out = Map::new();
    for (k, val) in map {
        if !KEEP.contains(&k.as_str()) {
            continue;
        }
        let val = match k.as_str() {
            "properties" => match val {
                Value::Object(props) => Value::Object(
                    props
                        .iter()
                        .map(|(name, s)| (name.clone(), gemini_schema(s)))
                        .collect(),
                ),
                other => other.clone(),
            },
            "items" => gemini_schema(val),
            "anyOf" => match val {
                Value::Array(a) => Value::Array(a.iter().map(gemini_schema).collect()),
                other => other.clone(),
            },
            "type" => match val {
                Value::Array(types) => {
                    let non_null: Vec<&Value> = types.iter().filter(|t| *t != "null").collect();
                    if non_null.len() < types.len() {
                        out.insert("nullable".into(), json!(true));
                    }
                    non_null.first().map_or(json!("string"), |t| (*t).clone())
                }
                other => other.clone(),
            },
            _ => val.clone(),
        };
        out.insert(k.clone(), val);
    }
    Value::Object(out)
}

fn split_id(id: &str) -> (&str, Option<&str>) {
    match id.split_once(SIGNATURE_MARK) {
        Some((base, sig)) => (base, Some(sig)),
        None => (id, None),
    }
}

/// The request body for `req`.
pub fn build_body(req: &ChatRequest) -> Value {
    let mut contents: Vec<(&str, Vec<Value>)> = Vec::new();
    for m in &req.messages {
        let (role, parts) = match m {
            Message::User { text } => (
                "user",
                if text.is_empty() {
                    vec![]
                } else {
                    vec![json!({"text": text})]
                },
            ),
            Message::Assistant { text, tool_calls } => {
                let mut p = Vec::new();
                if !text.is_empty() {
                    p.push(json!({"text": text}));
                }
                for c in tool_calls {
                    let (base, sig) = split_id(&c.id);
                    let args = if c.arguments.is_object() {
                        c.arguments.clone()
                    } else {
                        json!({})
                    };
                    let mut fc = json!({"name": c.name, "args": args});
                    if !base.is_empty() && !base.starts_with(LOCAL_ID_PREFIX) {
                        fc["id"] = json!(base);
                    }
                    let mut part = json!({"functionCall": fc});
                    if let Some(s) = sig {
                        part["thoughtSignature"] = json!(s);
                    }
                    p.push(part);
                }
                ("model", p)
            }
            Message::ToolResult {
                call_id,
                name,
                content,
                is_error,
            } => {
                let (base, _) = split_id(call_id);
                let response = if *is_error {
                    json!({"error": content})
                } else {
                    json!({"output": content})
                };
                let mut fr = json!({"name": name, "response": response});
                if !base.is_empty() && !base.starts_with(LOCAL_ID_PREFIX) {
                    fr["id"] = json!(base);
                }
                ("user", vec![json!({"functionResponse": fr})])
            }
        };
        if parts.is_empty() {
            continue;
        }
        match contents.last_mut() {
            Some((r, existing)) if *r == role => existing.extend(parts),
            _ => contents.push((role, parts)),
        }
    }
    let mut body = json!({
        "contents": contents
            .into_iter()
            .map(|(role, parts)| json!({"role": role, "parts": parts}))
            .collect::<Vec<_>>(),
    });
    if !req.system.is_empty() {
        body["systemInstruction"] = json!({"parts": [{"text": req.system}]});
    }
    if !req.tools.is_empty() {
        let decls: Vec<Value> = req
            .tools
            .iter()
            .map(|t| {
                json!({"name": t.name, "description": t.description,
                       "parameters": gemini_schema(&t.input_schema)})
            })
            .collect();
        body["tools"] = json!([{ "functionDeclarations": decls }]);
    }
    let mut gen = json!({"maxOutputTokens": req.max_tokens});
    if let Some(t) = req.temperature {
        gen["temperature"] = json!(t);
    }
    body["generationConfig"] = gen;
    body
}

fn usage_of(u: &Value) -> Usage {
    let n = |k: &str| u.get(k).and_then(Value::as_u64).unwrap_or(0);
    Usage {
        input_tokens: n("promptTokenCount"),
        output_tokens: n("candidatesTokenCount") + n("thoughtsTokenCount"),
    }
}

/// Folds replies (one for `generateContent`, one per event for streams).
#[derive(Default)]
struct State {
    text: String,
    calls: Vec<ToolCall>,
    usage: Usage,
    finish: Option<String>,
    blocked: Option<String>,
}

impl State {
    fn chunk(&mut self, v: &Value, on_text: &mut dyn FnMut(&str)) {
        if let Some(u) = v.get("usageMetadata") {
            self.usage = usage_of(u);
        }
        if let Some(b) = v
            .pointer("/promptFeedback/blockReason")
            .and_then(Value::as_str)
        {
            self.blocked = Some(b.to_string());
        }
        let Some(cand) = v.pointer("/candidates/0") else {
            return;
        };
        if let Some(parts) = cand.pointer("/content/parts").and_then(Value::as_array) {
            for p in parts {
                if p.get("thought").and_then(Value::as_bool) == Some(true) {
                    continue;
                }
                if let Some(t) = p.get("text").and_then(Value::as_str) {
                    if !t.is_empty() {
                        self.text.push_str(t);
                        on_text(t);
                    }
                }
                if let Some(fc) = p.get("functionCall") {
                    let mut id = fc
                        .get("id")
                        .and_then(Value::as_str)
                        .filter(|s| !s.is_empty())
                        .map_or_else(
                            || format!("{LOCAL_ID_PREFIX}{}", self.calls.len()),
                            str::to_string,
                        );
                    if let Some(sig) = p.get("thoughtSignature").and_then(Value::as_str) {
                        id = format!("{id}{SIGNATURE_MARK}{sig}");
                    }
                    self.calls.push(ToolCall {
                        id,
                        name: fc
                            .get("name")
                            .and_then(Value::as_str)
                            .unwrap_or("")
                            .to_string(),
                        arguments: fc.get("args").cloned().unwrap_or_else(|| json!({})),
                    });
                }
            }
        }
        if let Some(f) = cand.get("finishReason").and_then(Value::as_str) {
            self.finish = Some(f.to_string());
        }
    }

    fn finish(self) -> ChatResponse {
        let stop = if !self.calls.is_empty() {
            StopReason::ToolUse
        } else if let Some(b) = self.blocked {
            StopReason::Other(format!("blocked: {b}"))
        } else {
            match self.finish.as_deref() {
                None | Some("STOP") => StopReason::EndTurn,
                Some("MAX_TOKENS") => StopReason::MaxTokens,
                Some(other) => StopReason::Other(other.to_string()),
            }
        };
        ChatResponse {
            text: self.text,
            tool_calls: self.calls,
            usage: self.usage,
            stop,
        }
    }
}

/// Parses a non-streaming reply.
pub fn parse_response(v: &Value) -> Result<ChatResponse, String> {
    if v.get("candidates").is_none() && v.get("promptFeedback").is_none() {
        return Err("the reply has no `candidates`".into());
    }
    let mut s = State::default();
    s.chunk(v, &mut |_| {});
    Ok(s.finish())
}

impl Provider for GeminiProvider {
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
        let url = self.url(&req.model, req.stream).ok_or_else(|| {
            call.format(format!(
                "model id {:?} is not a plain Gemini model name",
                req.model
            ))
        })?;
        let mut headers = Vec::new();
        if !key.is_empty() {
            headers.push(("x-goog-api-key", key.expose_secret().to_string()));
        }
        let body = build_body(req);
        if !req.stream {
            return self.http.chat_once(
                &call,
                &url,
                &headers,
                &body,
                Some("candidates"),
                parse_response,
                on_text_delta,
            );
        }
        let mut stream = self.http.post_sse(&call, &url, &headers, &body)?;
        let mut state = State::default();
        while let Some(ev) = stream.next(&call)? {
            let v = call.stream_chunk(&ev.data, "candidates")?;
            state.chunk(&v, on_text_delta);
        }
        if state.finish.is_none() && state.blocked.is_none() {
            return Err(call.truncated());
        }
        Ok(state.finish())
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::llm::ToolSpec;

    #[test]
    fn request_body_shape() {
        let req = ChatRequest {
            model: "gemini-2.5-flash".into(),
            system: "Be kind.".into(),
            messages: vec![
                Message::User {
                    text: "files?".into(),
                },
                Message::Assistant {
                    text: "Let me look.".into(),
                    tool_calls: vec![
                        ToolCall {
                            id: "gemini-call-0#ts=c2lnMQ==".into(),
                            name: "ls".into(),
                            arguments: json!({"path": "."}),
                        },
                        ToolCall {
                            id: "fc_77".into(),
                            name: "bash".into(),
                            arguments: json!({"command": "id"}),
                        },
                    ],
                },
                Message::ToolResult {
                    call_id: "gemini-call-0#ts=c2lnMQ==".into(),
                    name: "ls".into(),
                    content: "a.txt".into(),
                    is_error: false,
                },
                Message::ToolResult {
                    call_id: "fc_77".into(),
                    name: "bash".into(),
                    content: "denied".into(),
                    is_error: true,
                },
            ],
            tools: vec![ToolSpec {
                name: "ls".into(),
                description: "List".into(),
                input_schema: json!({
                    "$schema": "https://json-schema.org/draft/2020-12/schema",
                    "type": "object",
                    "additionalProperties": false,
                    "properties": {
                        "path": {"type": ["string", "null"], "description": "dir"},
                        "additionalProperties": {"type": "boolean"},
                        "tags": {"type": "array", "items": {"type": "string", "const": "x"}}
                    },
                    "required": ["path"]
                }),
            }],
            max_tokens: 256,
            temperature: Some(0.0),
            stream: false,
            deadline: None,
        };
        let b = build_body(&req);
        assert_eq!(
            b,
            json!({
                "systemInstruction": {"parts": [{"text": "Be kind."}]},
                "contents": [
                    {"role": "user", "parts": [{"text": "files?"}]},
                    {"role": "model", "parts": [
                        {"text": "Let me look."},
                        {"functionCall": {"name": "ls", "args": {"path": "."}}, "thoughtSignature": "c2lnMQ=="},
                        {"functionCall": {"name": "bash", "args": {"command": "id"}, "id": "fc_77"}}
                    ]},
                    {"role": "user", "parts": [
                        {"functionResponse": {"name": "ls", "response": {"output": "a.txt"}}},
                        {"functionResponse": {"name": "bash", "response": {"error": "denied"}, "id": "fc_77"}}
                    ]}
                ],
                "tools": [{"functionDeclarations": [{"name": "ls", "description": "List", "parameters": {
                    "type": "object",
                    "properties": {
                        "path": {"type": "string", "nullable": true, "description": "dir"},
                        "additionalProperties": {"type": "boolean"},
                        "tags": {"type": "array", "items": {"type": "string"}}
                    },
                    "required": ["path"]
                }}]}],
                "generationConfig": {"maxOutputTokens": 256, "temperature": 0.0}
            })
        );
    }

    #[test]
    fn urls_and_model_names() {
        let http = Arc::new(HttpClient::new(Default::default()));
        let g = GeminiProvider::new(
            "google",
            "https://generativelanguage.googleapis.com/",
            http.clone(),
        );
        assert_eq!(
            g.url("gemini-2.5-flash", false).unwrap(),
            "https://generativelanguage.googleapis.com/v1beta/models/gemini-2.5-flash:generateContent"
        );
        assert_eq!(
            g.url("models/gemini-2.5-flash", true).unwrap(),
            "https://generativelanguage.googleapis.com/v1beta/models/gemini-2.5-flash:streamGenerateContent?alt=sse"
        );
        assert_eq!(g.url("../../etc", false), None);
        assert_eq!(g.url("a/b", false), None);
        let g = GeminiProvider::new("google", "http://127.0.0.1:7/v1", http);
        assert_eq!(
            g.url("m", false).unwrap(),
            "http://127.0.0.1:7/v1/models/m:generateContent"
        );
    }

    #[test]
    fn parses_a_real_reply_with_a_function_call() {
        let v: Value = serde_json::from_str(
            r#"{"candidates":[{"content":{"parts":[{"functionCall":{"name":"set_light_values","args":{"brightness":25,"color_temp":"warm"}},"thoughtSignature":"CiQBVKhc7"}],"role":"model"},
               "finishReason":"STOP","index":0}],
               "usageMetadata":{"promptTokenCount":76,"candidatesTokenCount":21,"totalTokenCount":150,"thoughtsTokenCount":53},
               "modelVersion":"gemini-2.5-flash","responseId":"abc"}"#,
        )
        .unwrap();
        let r = parse_response(&v).unwrap();
        assert_eq!(r.stop, StopReason::ToolUse);
        assert_eq!(
            r.usage,
            Usage {
                input_tokens: 76,
                output_tokens: 74
            }
        );
        assert_eq!(r.tool_calls[0].name, "set_light_values");
        assert_eq!(r.tool_calls[0].id, "gemini-call-0#ts=CiQBVKhc7");
        assert_eq!(r.tool_calls[0].arguments["brightness"], 25);
    }

    #[test]
    fn blocked_prompts_and_thoughts() {
        let v = json!({"promptFeedback": {"blockReason": "SAFETY"}, "usageMetadata": {"promptTokenCount": 5}});
        let r = parse_response(&v).unwrap();
        assert_eq!(r.stop, StopReason::Other("blocked: SAFETY".into()));
        let v = json!({"candidates": [{"content": {"parts": [
            {"text": "thinking...", "thought": true}, {"text": "Answer."}]}, "finishReason": "MAX_TOKENS"}]});
        let r = parse_response(&v).unwrap();
        assert_eq!(
            (r.text.as_str(), r.stop),
            ("Answer.", StopReason::MaxTokens)
        );
        assert!(parse_response(&json!({"foo": 1})).is_err());
    }

    /// A real `streamGenerateContent?alt=sse` stream (CRLF line ends, as the API sends them).
    pub(crate) const STREAM: &str = concat!(
        "data: {\"candidates\": [{\"content\": {\"parts\": [{\"text\": \"The\"}],\"role\": \"model\"},\"index\": 0}],\"usageMetadata\": {\"promptTokenCount\": 9,\"totalTokenCount\": 9},\"modelVersion\": \"gemini-2.5-flash\"}\r\n\r\n",
        "data: {\"candidates\": [{\"content\": {\"parts\": [{\"text\": \" file is written.\"}],\"role\": \"model\"},\"index\": 0}],\"usageMetadata\": {\"promptTokenCount\": 9,\"totalTokenCount\": 12},\"modelVersion\": \"gemini-2.5-flash\"}\r\n\r\n",
        "data: {\"candidates\": [{\"content\": {\"parts\": [{\"functionCall\": {\"name\": \"read\",\"args\": {\"path\": \"/workspace/a.txt\"}}}],\"role\": \"model\"},\"finishReason\": \"STOP\",\"index\": 0}],\"usageMetadata\": {\"promptTokenCount\": 9,\"candidatesTokenCount\": 14,\"totalTokenCount\": 23},\"modelVersion\": \"gemini-2.5-flash\"}\r\n\r\n",
    );

    #[test]
    fn stream_chunks_fold_into_a_reply() {
        let mut p = crate::llm::sse::SseParser::new(Default::default());
        let mut evs = Vec::new();
        p.feed(STREAM.as_bytes(), &mut evs).unwrap();
        p.finish(&mut evs).unwrap();
        let mut s = State::default();
        let mut deltas = Vec::new();
        for e in evs {
            s.chunk(&serde_json::from_str(&e.data).unwrap(), &mut |t| {
                deltas.push(t.to_string())
            });
        }
        let r = s.finish();
        assert_eq!(deltas, vec!["The", " file is written."]);
        assert_eq!(r.stop, StopReason::ToolUse);
        assert_eq!(
            r.usage,
            Usage {
                input_tokens: 9,
                output_tokens: 14
            }
        );
        assert_eq!(r.tool_calls[0].id, "gemini-call-0");
        assert_eq!(
            r.tool_calls[0].arguments,
            json!({"path": "/workspace/a.txt"})
        );
    }
}
