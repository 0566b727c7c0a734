//! Anthropic Messages API: `POST /v1/messages`.

use serde_json::{json, Value};

use super::script::{Fault, Reply, StreamErrorKind};
use super::wire::{self, Ctx, ErrorResp, Event};

fn msg_id(ctx: &Ctx<'_>) -> String {
    format!("msg_mock_{:06}", ctx.seq)
}

fn tool_id(ctx: &Ctx<'_>, i: usize, id: Option<&str>) -> String {
    id.map_or_else(|| format!("toolu_mock_{:06}_{i}", ctx.seq), str::to_string)
}

fn stop_reason(r: &Reply) -> &'static str {
    if r.max_tokens {
        "max_tokens"
    } else if r.tool_calls.is_empty() {
        "end_turn"
    } else {
        "tool_use"
    }
}

pub(crate) fn reply(ctx: &Ctx<'_>, r: &Reply) -> Value {
    let mut content = Vec::new();
    if let Some(t) = &r.text {
        content.push(json!({"type": "text", "text": t}));
    }
    for (i, c) in r.tool_calls.iter().enumerate() {
        content.push(json!({
            "type": "tool_use",
            "id": tool_id(ctx, i, c.id.as_deref()),
            "name": c.name,
            "input": c.arguments,
        }));
    }
    let (input, output) = ctx.usage(r);
    json!({
        "id": msg_id(ctx),
        "type": "message",
        "role": "assistant",
        "model": ctx.model,
        "content": content,
        "stop_reason": stop_reason(r),
        "stop_sequence": null,
        "usage": {
            "input_tokens": input,
            "cache_creation_input_tokens": 0,
            "cache_read_input_tokens": 0,
            "output_tokens": output,
        },
    })
}

pub(crate) fn events(ctx: &Ctx<'_>, r: &Reply) -> Vec<Event> {
    let (input, output) = ctx.usage(r);
    let mut ev = vec![Event::named(
        "message_start",
        json!({"type": "message_start", "message": {
            "id": msg_id(ctx),
            "type": "message",
            "role": "assistant",
            "model": ctx.model,
            "content": [],
            "stop_reason": null,
            "stop_sequence": null,
            "usage": {
                "input_tokens": input,
                "cache_creation_input_tokens": 0,
                "cache_read_input_tokens": 0,
                "output_tokens": 1,
            },
        }}),
    )];
    let ping = || Event::named("ping", json!({"type": "ping"}));
    let mut index = 0;
    if let Some(t) = &r.text {
        ev.push(Event::named(
            "content_block_start",
            json!({"type": "content_block_start", "index": index,
                   "content_block": {"type": "text", "text": ""}}),
        ));
        ev.push(ping());
        for p in wire::pieces(t, wire::text_chunk(r)) {
            ev.push(Event::named(
                "content_block_delta",
                json!({"type": "content_block_delta", "index": index,
                       "delta": {"type": "text_delta", "text": p}}),
            ));
        }
        ev.push(Event::named(
            "content_block_stop",
            json!({"type": "content_block_stop", "index": index}),
        ));
        index += 1;
    }
    for (i, c) in r.tool_calls.iter().enumerate() {
        ev.push(Event::named(
            "content_block_start",
            json!({"type": "content_block_start", "index": index, "content_block": {
                "type": "tool_use", "id": tool_id(ctx, i, c.id.as_deref()),
                "name": c.name, "input": {},
            }}),
        ));
        if index == 0 {
            ev.push(ping());
        }
        let mut parts = vec![String::new()];
        parts.extend(wire::arg_pieces(&c.arguments.to_string()));
        for p in parts {
            ev.push(Event::named(
                "content_block_delta",
                json!({"type": "content_block_delta", "index": index,
                       "delta": {"type": "input_json_delta", "partial_json": p}}),
            ));
        }
        ev.push(Event::named(
            "content_block_stop",
            json!({"type": "content_block_stop", "index": index}),
        ));
        index += 1;
    }
    if index == 0 {
        ev.push(ping());
    }
    ev.push(Event::named(
        "message_delta",
        json!({"type": "message_delta",
               "delta": {"stop_reason": stop_reason(r), "stop_sequence": null},
               "usage": {"output_tokens": output}}),
    ));
    ev.push(Event::named(
        "message_stop",
        json!({"type": "message_stop"}),
    ));
    ev
}

fn body(ctx: &Ctx<'_>, kind: &str, message: &str) -> Value {
    json!({
        "type": "error",
        "error": {"type": kind, "message": message},
        "request_id": format!("req_mock_{:06}", ctx.seq),
    })
}

pub(crate) fn plain_error(ctx: &Ctx<'_>, status: u16, message: &str) -> ErrorResp {
    let kind = match status {
        400 => "invalid_request_error",
        404 => "not_found_error",
        _ => "api_error",
    };
    ErrorResp::new(status, body(ctx, kind, message))
}

/// The `anthropic-ratelimit-*` headers, all used up, resetting in `secs`.
fn ratelimit_headers(e: ErrorResp, secs: u64) -> ErrorResp {
    let reset = wire::rfc3339(wire::unix_now() + secs);
    let mut e = e;
    for (what, limit) in [
        ("requests", 50),
        ("tokens", 80_000),
        ("input-tokens", 40_000),
        ("output-tokens", 40_000),
    ] {
        let p = format!("anthropic-ratelimit-{what}");
        e = e
            .header(&format!("{p}-limit"), limit.to_string())
            .header(&format!("{p}-remaining"), "0")
            .header(&format!("{p}-reset"), reset.clone());
    }
    e
}

const CREDIT_TOO_LOW: &str = "Your credit balance is too low to access the Anthropic API. \
     Please go to Plans & Billing to upgrade or purchase credits.";

pub(crate) fn error(ctx: &Ctx<'_>, f: &Fault) -> Option<ErrorResp> {
    let e = |status, kind, msg: &str| ErrorResp::new(status, body(ctx, kind, msg));
    Some(match f {
        Fault::RateLimited {
            retry_after_secs,
            headers,
        } => {
            let r = e(
                429,
                "rate_limit_error",
                "This request would exceed the rate limit for your organization (mock-org) of \
                 50 requests per minute. For details, refer to: \
                 https://docs.claude.com/en/api/rate-limits. You can see the response headers \
                 for current usage. Please reduce the prompt length or the maximum tokens \
                 requested, or try again later. You may also contact sales at \
                 https://www.anthropic.com/contact-sales to discuss your options for a rate \
                 limit increase.",
            )
            .retry_after(*retry_after_secs);
            if *headers {
                ratelimit_headers(r, retry_after_secs.unwrap_or(60))
            } else {
                r
            }
        }
        Fault::QuotaExceeded => e(400, "invalid_request_error", CREDIT_TOO_LOW),
        Fault::Overloaded { retry_after_secs } => {
            e(529, "overloaded_error", "Overloaded").retry_after(*retry_after_secs)
        }
        Fault::Unavailable { retry_after_secs } => {
            e(503, "api_error", "Service unavailable").retry_after(*retry_after_secs)
        }
        Fault::ServerError => e(500, "api_error", "Internal server error"),
        Fault::Timeout => e(504, "timeout_error", "Request timed out"),
        Fault::Unauthorized => match ctx.key {
            Some(_) => e(401, "authentication_error", "invalid x-api-key"),
            None => e(401, "authentication_error", "x-api-key header is required"),
        },
        Fault::Forbidden => e(
            403,
            "permission_error",
            "Your API key does not have permission to use the specified resource.",
        ),
        Fault::PaymentRequired { rate_limit: false } => e(402, "billing_error", CREDIT_TOO_LOW),
        Fault::PaymentRequired { rate_limit: true } => e(
            402,
            "billing_error",
            "Too many requests: the usage limit of your plan for this period has been \
             reached. Please try again later (the rate limit resets in 30 seconds).",
        ),
        Fault::ModelNotFound => e(404, "not_found_error", &format!("model: {}", ctx.model)),
        Fault::ContextOverflow { tokens, max } => {
            let max = max.unwrap_or(200_000);
            let tokens = tokens.unwrap_or(max + 12_345);
            e(
                400,
                "invalid_request_error",
                &format!("prompt is too long: {tokens} tokens > {max} maximum"),
            )
        }
        Fault::BadRequest { message } => e(400, "invalid_request_error", message),
        _ => return None,
    })
}

pub(crate) fn stream_error(kind: StreamErrorKind) -> Event {
    let (t, m) = match kind {
        StreamErrorKind::Overloaded => ("overloaded_error", "Overloaded"),
        StreamErrorKind::ServerError => ("api_error", "Internal server error"),
    };
    Event::named(
        "error",
        json!({"type": "error", "error": {"type": t, "message": m}}),
    )
}
