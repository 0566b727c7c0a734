//! OpenAI Chat Completions (and OpenAI-compatible servers): `POST /v1/chat/completions`.

use serde_json::{json, Value};

use super::script::{Fault, Reply, StreamErrorKind};
use super::wire::{self, Ctx, ErrorResp, Event};

fn completion_id(ctx: &Ctx<'_>) -> String {
    format!("chatcmpl-mock{:06}", ctx.seq)
}

fn call_id(ctx: &Ctx<'_>, i: usize, id: Option<&str>) -> String {
    id.map_or_else(|| format!("call_mock_{:06}_{i}", ctx.seq), str::to_string)
}

fn finish_reason(r: &Reply) -> &'static str {
    if r.max_tokens {
        "length"
    } else if r.tool_calls.is_empty() {
        "stop"
    } else {
        "tool_calls"
    }
}

fn usage(ctx: &Ctx<'_>, r: &Reply) -> Value {
    let (input, output) = ctx.usage(r);
    json!({
        "prompt_tokens": input,
        "completion_tokens": output,
        "total_tokens": input + output,
    })
}

pub(crate) fn reply(ctx: &Ctx<'_>, r: &Reply) -> Value {
    let mut message = json!({
        "role": "assistant",
        "content": r.text,
        "refusal": null,
    });
    if !r.tool_calls.is_empty() {
        message["tool_calls"] = r
            .tool_calls
            .iter()
            .enumerate()
            .map(|(i, c)| {
                json!({
                    "id": call_id(ctx, i, c.id.as_deref()),
                    "type": "function",
                    "function": {"name": c.name, "arguments": c.arguments.to_string()},
                })
            })
            .collect();
    }
    json!({
        "id": completion_id(ctx),
        "object": "chat.completion",
        "created": wire::unix_now(),
        "model": ctx.model,
        "system_fingerprint": "fp_mock",
        "choices": [{
            "index": 0,
            "message": message,
            "logprobs": null,
            "finish_reason": finish_reason(r),
        }],
        "usage": usage(ctx, r),
    })
}

pub(crate) fn events(ctx: &Ctx<'_>, r: &Reply) -> Vec<Event> {
    let created = wire::unix_now();
    let include_usage = ctx.include_usage();
    let chunk = |delta: Value, finish: Value| {
        let mut c = json!({
            "id": completion_id(ctx),
            "object": "chat.completion.chunk",
            "created": created,
            "model": ctx.model,
            "system_fingerprint": "fp_mock",
            "choices": [{"index": 0, "delta": delta, "logprobs": null, "finish_reason": finish}],
        });
        if include_usage {
            c["usage"] = Value::Null;
        }
        Event::data(c)
    };
    let mut ev = vec![chunk(
        json!({"role": "assistant", "content": "", "refusal": null}),
        Value::Null,
    )];
    if let Some(t) = &r.text {
        for p in wire::pieces(t, wire::text_chunk(r)) {
            ev.push(chunk(json!({"content": p}), Value::Null));
        }
    }
    for (i, c) in r.tool_calls.iter().enumerate() {
        ev.push(chunk(
            json!({"tool_calls": [{
                "index": i,
                "id": call_id(ctx, i, c.id.as_deref()),
                "type": "function",
                "function": {"name": c.name, "arguments": ""},
            }]}),
            Value::Null,
        ));
        for p in wire::arg_pieces(&c.arguments.to_string()) {
            ev.push(chunk(
                json!({"tool_calls": [{"index": i, "function": {"arguments": p}}]}),
                Value::Null,
            ));
        }
    }
    ev.push(chunk(json!({}), json!(finish_reason(r))));
    if include_usage {
        ev.push(Event::data(json!({
            "id": completion_id(ctx),
            "object": "chat.completion.chunk",
            "created": created,
            "model": ctx.model,
            "system_fingerprint": "fp_mock",
            "choices": [],
            "usage": usage(ctx, r),
        })));
    }
    ev.push(Event {
        name: None,
        data: "[DONE]".into(),
    });
    ev
}

fn body(message: &str, kind: &str, param: Option<&str>, code: Option<&str>) -> Value {
    json!({"error": {"message": message, "type": kind, "param": param, "code": code}})
}

pub(crate) fn plain_error(status: u16, message: &str) -> ErrorResp {
    let kind = if status < 500 {
        "invalid_request_error"
    } else {
        "server_error"
    };
    ErrorResp::new(status, body(message, kind, None, None))
}

/// How OpenAI shows a key in an error: `sk-abc*****wxyz`.
fn mask(key: &str) -> String {
    let chars: Vec<char> = key.chars().collect();
    if chars.len() <= 8 {
        return "*".repeat(chars.len());
    }
    let head: String = chars[..3].iter().collect();
    let tail: String = chars[chars.len() - 4..].iter().collect();
    format!("{head}{}{tail}", "*".repeat(chars.len() - 7))
}

pub(crate) fn error(ctx: &Ctx<'_>, f: &Fault) -> Option<ErrorResp> {
    let e =
        |status, msg: &str, kind, param, code| ErrorResp::new(status, body(msg, kind, param, code));
    Some(match f {
        Fault::RateLimited {
            retry_after_secs,
            headers,
        } => {
            let secs = retry_after_secs.unwrap_or(20);
            let msg = format!(
                "Rate limit reached for {} in organization org-mock on requests per min \
                 (RPM): Limit 500, Used 500, Requested 1. Please try again in {secs}s. Visit \
                 https://platform.openai.com/account/rate-limits to learn more.",
                ctx.model
            );
            let r = e(429, &msg, "requests", None, Some("rate_limit_exceeded"))
                .retry_after(*retry_after_secs);
            if *headers {
                r.header("retry-after-ms", (secs * 1000).to_string())
                    .header("x-ratelimit-limit-requests", "500")
                    .header("x-ratelimit-remaining-requests", "0")
                    .header("x-ratelimit-reset-requests", wire::go_duration(secs))
                    .header("x-ratelimit-limit-tokens", "30000")
                    .header("x-ratelimit-remaining-tokens", "0")
                    .header("x-ratelimit-reset-tokens", wire::go_duration(secs))
            } else {
                r
            }
        }
        Fault::QuotaExceeded => e(
            429,
            "You exceeded your current quota, please check your plan and billing details. For \
             more information on this error, read the docs: \
             https://platform.openai.com/docs/guides/error-codes/api-errors.",
            "insufficient_quota",
            None,
            Some("insufficient_quota"),
        ),
        Fault::Overloaded { retry_after_secs } => e(
            503,
            "The engine is currently overloaded, please try again later",
            "server_error",
            None,
            None,
        )
        .retry_after(*retry_after_secs),
        Fault::Unavailable { retry_after_secs } => e(
            503,
            "The server is overloaded or not ready yet.",
            "server_error",
            None,
            None,
        )
        .retry_after(*retry_after_secs),
        Fault::ServerError => e(
            500,
            "The server had an error while processing your request. Sorry about that!",
            "server_error",
            None,
            None,
        ),
        Fault::Timeout => e(504, "Gateway timeout.", "server_error", None, None),
        Fault::Unauthorized => match ctx.key {
            Some(k) => e(
                401,
                &format!(
                    "Incorrect API key provided: {}. You can find your API key at \
                     https://platform.openai.com/account/api-keys.",
                    mask(k)
                ),
                "invalid_request_error",
                None,
                Some("invalid_api_key"),
            ),
            None => e(
                401,
                "You didn't provide an API key. You need to provide your API key in an \
                 Authorization header using Bearer auth (i.e. Authorization: Bearer YOUR_KEY).",
                "invalid_request_error",
                None,
                None,
            ),
        },
        Fault::Forbidden => e(
            403,
            "Country, region, or territory not supported",
            "request_forbidden",
            None,
            Some("unsupported_country_region_territory"),
        ),
        Fault::PaymentRequired { rate_limit: false } => e(
            402,
            "Insufficient credits. This account does not have enough credits to run this \
             request; add credits to your billing account to continue.",
            "insufficient_quota",
            None,
            Some("payment_required"),
        ),
        Fault::PaymentRequired { rate_limit: true } => e(
            402,
            "Too many requests: the usage limit of your plan for this period has been \
             reached. Please try again later (the rate limit resets in 30 seconds).",
            "requests",
            None,
            Some("payment_required"),
        ),
        Fault::ModelNotFound => e(
            404,
            &format!(
                "The model `{}` does not exist or you do not have access to it.",
                ctx.model
            ),
            "invalid_request_error",
            None,
            Some("model_not_found"),
        ),
        Fault::ContextOverflow { tokens, max } => {
            let max = max.unwrap_or(128_000);
            let tokens = tokens.unwrap_or(max + 12_345);
            e(
                400,
                &format!(
                    "This model's maximum context length is {max} tokens. However, your \
                     messages resulted in {tokens} tokens. Please reduce the length of the \
                     messages."
                ),
                "invalid_request_error",
                Some("messages"),
                Some("context_length_exceeded"),
            )
        }
        Fault::BadRequest { message } => e(400, message, "invalid_request_error", None, None),
        _ => return None,
    })
}

pub(crate) fn stream_error(kind: StreamErrorKind) -> Event {
    let msg = match kind {
        StreamErrorKind::Overloaded => "The engine is currently overloaded, please try again later",
        StreamErrorKind::ServerError => {
            "The server had an error while processing your request. Sorry about that!"
        }
    };
    Event::data(body(msg, "server_error", None, None))
}

#[cfg(test)]
mod tests {
    #[test]
    fn mask_hides_the_middle() {
        assert_eq!(super::mask("sk-abcdefghijkl"), "sk-********ijkl");
        assert_eq!(super::mask("short"), "*****");
    }
}
