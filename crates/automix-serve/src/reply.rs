//! A routed outcome as the client sees it: the chat completion body and the `x-automix-*`
//! headers.

use std::time::{SystemTime, UNIX_EPOCH};

use axum::http::{HeaderMap, HeaderValue};
use serde_json::{Value, json};

use automix::router::RouteOutcome;

pub(crate) fn usage_json(o: &RouteOutcome) -> Value {
    let prompt: u64 = o.calls.iter().map(|c| c.tokens.prompt).sum();
    let completion: u64 = o.calls.iter().map(|c| c.tokens.completion).sum();
    json!({"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion})
}

pub(crate) fn metadata_json(o: &RouteOutcome) -> Value {
    // The outcome's own JSON, cut to what a reply carries: one shape (each key once) for
    // `automix --json route`, the Python package and this field.
    let full = serde_json::to_value(o).unwrap_or(Value::Null);
    REPLY_KEYS
        .iter()
        .map(|k| {
            (
                (*k).to_owned(),
                full.get(*k).cloned().unwrap_or(Value::Null),
            )
        })
        .collect::<serde_json::Map<_, _>>()
        .into()
}

/// The keys of a routed outcome that a reply's `automix` field carries.
const REPLY_KEYS: [&str; 8] = [
    "model_name",
    "models_tried",
    "verification_score",
    "decision",
    "cost",
    "lambda",
    "answer_checks",
    "steps",
];

/// The upstream `finish_reason` of the kept answer (`length` when it was cut), else `stop`.
pub(crate) fn finish_reason(o: &RouteOutcome) -> String {
    o.calls
        .iter()
        .rev()
        .find(|c| c.purpose == "answer" && c.model == o.model_name)
        .and_then(|c| c.finish_reason.clone())
        .unwrap_or_else(|| "stop".into())
}

/// The kept reply as an assistant message: its text, or `null` content and its
/// `tool_calls` when the model called tools.
pub(crate) fn message_json(o: &RouteOutcome) -> Value {
    match &o.tool_calls {
        Some(calls) => {
            let content = if o.response.is_empty() {
                Value::Null
            } else {
                json!(o.response)
            };
            json!({"role": "assistant", "content": content, "tool_calls": calls, "refusal": null})
        }
        None => json!({"role": "assistant", "content": o.response, "refusal": null}),
    }
}

/// The kept reply's logprobs in OpenAI's shape, when the client asked for them.
pub(crate) fn logprobs_json(o: &RouteOutcome) -> Value {
    match &o.logprobs {
        Some(tokens) => json!({"content": tokens, "refusal": null}),
        None => Value::Null,
    }
}

/// `tool_calls` for a stream delta: each call carries its `index`, as stream deltas must.
pub(crate) fn indexed(calls: &Value) -> Value {
    match calls {
        Value::Array(items) => Value::Array(
            items
                .iter()
                .enumerate()
                .map(|(i, c)| {
                    let mut c = c.clone();
                    if let Some(o) = c.as_object_mut() {
                        o.entry("index").or_insert(json!(i));
                    }
                    c
                })
                .collect(),
        ),
        other => other.clone(),
    }
}

/// The chat completion a client sees.
pub fn completion_json(id: &str, created: u64, o: &RouteOutcome) -> Value {
    json!({
        "id": id,
        "object": "chat.completion",
        "created": created,
        "model": o.api_model,
        "choices": [{
            "index": 0,
            "message": message_json(o),
            "logprobs": logprobs_json(o),
            "finish_reason": finish_reason(o)
        }],
        "usage": usage_json(o),
        "system_fingerprint": null,
        "automix": metadata_json(o),
    })
}

/// A fresh completion id and creation time.
pub(crate) fn completion_id(route_id: &str) -> (String, u64) {
    // A routed reply is named by its route (128 random bits), so feedback can find it;
    // others by 128 fresh random bits: no id tells anything about another.
    let id = if route_id.is_empty() {
        format!("chatcmpl-{:032x}", rand::random::<u128>())
    } else {
        format!("chatcmpl-{route_id}")
    };
    let created = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    (id, created)
}

pub(crate) fn add_headers(headers: &mut HeaderMap, o: &RouteOutcome) {
    let mut put = |name: &'static str, value: String| {
        if let Ok(v) = HeaderValue::from_str(&value) {
            headers.insert(name, v);
        }
    };
    if !o.route_id.is_empty() {
        put("x-automix-request-id", o.route_id.clone());
    }
    put("x-automix-model", o.model_name.clone());
    put("x-automix-models-tried", o.escalation_path.join(","));
    put(
        "x-automix-verification-score",
        o.verification_score
            .map_or_else(|| "unknown".into(), |p| format!("{p:.4}")),
    );
    put("x-automix-decision", o.decision.label().into());
    if let Some(last) = o.failed_checks.last() {
        put("x-automix-answer-check", last.check.name().into());
    }
    put("x-automix-cost", format!("{:.9}", o.total_cost));
    if let Some(l) = o.lambda {
        put("x-automix-lambda", format!("{l}"));
    }
}
