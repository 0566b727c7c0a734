//! Google Gemini: `POST /v1beta/models/{model}:generateContent` and
//! `:streamGenerateContent` (`?alt=sse` for SSE, else a streamed JSON array).

use serde_json::{json, Value};

use super::script::{Fault, Reply, StreamErrorKind};
use super::wire::{self, Ctx, ErrorResp, Event};

fn response_id(ctx: &Ctx<'_>) -> String {
    format!("mockresp{:06}", ctx.seq)
}

fn finish_reason(r: &Reply) -> &'static str {
    if r.max_tokens {
        "MAX_TOKENS"
    } else {
        "STOP"
    }
}

fn call_part(c: &super::script::ToolCall) -> Value {
    let mut fc = json!({"name": c.name, "args": c.arguments});
    if let Some(id) = &c.id {
        fc["id"] = json!(id);
    }
    json!({"functionCall": fc})
}

fn full_usage(ctx: &Ctx<'_>, r: &Reply) -> Value {
    let (input, output) = ctx.usage(r);
    json!({
        "promptTokenCount": input,
        "candidatesTokenCount": output,
        "totalTokenCount": input + output,
    })
}

fn response(ctx: &Ctx<'_>, parts: Vec<Value>, finish: Option<&str>, usage: Value) -> Value {
    let mut cand = json!({"content": {"parts": parts, "role": "model"}, "index": 0});
    if let Some(f) = finish {
        cand["finishReason"] = json!(f);
    }
    json!({
        "candidates": [cand],
        "usageMetadata": usage,
        "modelVersion": ctx.model,
        "responseId": response_id(ctx),
    })
}

pub(crate) fn reply(ctx: &Ctx<'_>, r: &Reply) -> Value {
    let mut parts = Vec::new();
    if let Some(t) = &r.text {
        parts.push(json!({"text": t}));
    }
    parts.extend(r.tool_calls.iter().map(call_part));
    if parts.is_empty() {
        parts.push(json!({"text": ""}));
    }
    response(ctx, parts, Some(finish_reason(r)), full_usage(ctx, r))
}

pub(crate) fn events(ctx: &Ctx<'_>, r: &Reply) -> Vec<Event> {
    let mut groups: Vec<Vec<Value>> = Vec::new();
    if let Some(t) = &r.text {
        for p in wire::pieces(t, wire::text_chunk(r)) {
            groups.push(vec![json!({"text": p})]);
        }
    }
    if !r.tool_calls.is_empty() {
        groups.push(r.tool_calls.iter().map(call_part).collect());
    }
    if groups.is_empty() {
        groups.push(vec![json!({"text": ""})]);
    }
    let (input, _) = ctx.usage(r);
    let last = groups.len() - 1;
    groups
        .into_iter()
        .enumerate()
        .map(|(i, parts)| {
            let data = if i == last {
                response(ctx, parts, Some(finish_reason(r)), full_usage(ctx, r))
            } else {
                let usage = json!({"promptTokenCount": input, "totalTokenCount": input});
                response(ctx, parts, None, usage)
            };
            Event::data(data)
        })
        .collect()
}

fn body(code: u16, message: &str, status: &str, details: Option<Value>) -> Value {
    let mut e = json!({"code": code, "message": message, "status": status});
    if let Some(d) = details {
        e["details"] = d;
    }
    json!({ "error": e })
}

pub(crate) fn plain_error(status: u16, message: &str) -> ErrorResp {
    let s = match status {
        400 => "INVALID_ARGUMENT",
        404 => "NOT_FOUND",
        _ => "INTERNAL",
    };
    ErrorResp::new(status, body(status, message, s, None))
}

pub(crate) fn error(ctx: &Ctx<'_>, f: &Fault) -> Option<ErrorResp> {
    let e = |code, msg: &str, status| ErrorResp::new(code, body(code, msg, status, None));
    Some(match f {
        Fault::RateLimited {
            retry_after_secs, ..
        } => {
            let details = retry_after_secs.map(|s| {
                json!([{
                    "@type": "type.googleapis.com/google.rpc.RetryInfo",
                    "retryDelay": format!("{s}s"),
                }])
            });
            ErrorResp::new(
                429,
                body(
                    429,
                    "Resource has been exhausted (e.g. check quota).",
                    "RESOURCE_EXHAUSTED",
                    details,
                ),
            )
            .retry_after(*retry_after_secs)
        }
        Fault::QuotaExceeded => ErrorResp::new(
            429,
            body(
                429,
                "You exceeded your current quota, please check your plan and billing details. \
                 For more information on this error, head to: \
                 https://ai.google.dev/gemini-api/docs/rate-limits.",
                "RESOURCE_EXHAUSTED",
                Some(json!([{
                    "@type": "type.googleapis.com/google.rpc.QuotaFailure",
                    "violations": [{
                        "quotaMetric":
                            "generativelanguage.googleapis.com/generate_content_free_tier_requests",
                        "quotaId": "GenerateRequestsPerDayPerProjectPerModel-FreeTier",
                    }],
                }])),
            ),
        ),
        Fault::Overloaded { retry_after_secs } => e(
            503,
            "The model is overloaded. Please try again later.",
            "UNAVAILABLE",
        )
        .retry_after(*retry_after_secs),
        Fault::Unavailable { retry_after_secs } => {
            e(503, "The service is currently unavailable.", "UNAVAILABLE")
                .retry_after(*retry_after_secs)
        }
        Fault::ServerError => e(
            500,
            "An internal error has occurred. Please retry or report in \
             https://developers.generativeai.google/guide/troubleshooting",
            "INTERNAL",
        ),
        Fault::Timeout => e(
            504,
            "Deadline expired before operation could complete.",
            "DEADLINE_EXCEEDED",
        ),
        Fault::Unauthorized => ErrorResp::new(
            400,
            body(
                400,
                "API key not valid. Please pass a valid API key.",
                "INVALID_ARGUMENT",
                Some(json!([{
                    "@type": "type.googleapis.com/google.rpc.ErrorInfo",
                    "reason": "API_KEY_INVALID",
                    "domain": "googleapis.com",
                    "metadata": {"service": "generativelanguage.googleapis.com"},
                }])),
            ),
        ),
        Fault::Forbidden => e(
            403,
            "The caller does not have permission",
            "PERMISSION_DENIED",
        ),
        Fault::PaymentRequired { rate_limit: false } => e(
            402,
            "Insufficient credits: billing is not enabled or the prepaid balance of this \
             project is exhausted. Enable billing or add credits to continue.",
            "FAILED_PRECONDITION",
        ),
        Fault::PaymentRequired { rate_limit: true } => e(
            402,
            "Too many requests: the usage limit of your plan for this period has been \
             reached. Please try again later (the rate limit resets in 30 seconds).",
            "RESOURCE_EXHAUSTED",
        ),
        Fault::ModelNotFound => e(
            404,
            &format!(
                "models/{} is not found for API version v1beta, or is not supported for \
                 generateContent. Call ListModels to see the list of available models and \
                 their supported methods.",
                ctx.model
            ),
            "NOT_FOUND",
        ),
        Fault::ContextOverflow { tokens, max } => {
            let max = max.unwrap_or(1_048_576);
            let tokens = tokens.unwrap_or(max + 12_345);
            e(
                400,
                &format!(
                    "The input token count ({tokens}) exceeds the maximum number of tokens \
                     allowed ({max})."
                ),
                "INVALID_ARGUMENT",
            )
        }
        Fault::BadRequest { message } => e(400, message, "INVALID_ARGUMENT"),
        _ => return None,
    })
}

pub(crate) fn stream_error(kind: StreamErrorKind) -> Event {
    Event::data(match kind {
        StreamErrorKind::Overloaded => body(
            503,
            "The model is overloaded. Please try again later.",
            "UNAVAILABLE",
            None,
        ),
        StreamErrorKind::ServerError => body(
            500,
            "An internal error has occurred. Please retry or report in \
             https://developers.generativeai.google/guide/troubleshooting",
            "INTERNAL",
            None,
        ),
    })
}
