//! The client's request as ours: OpenAI's chat body parsed and checked field by field, and
//! the request's own routing options (λ, escalation cap).

use axum::http::HeaderMap;
use serde_json::Value;

use automix::dataset::{QueryRow, query_id};
use automix::router::RouteOptions;
use automix_llm::{ChatMessage, ChatRequest};

/// The text of an OpenAI message `content`: a string, an array of parts (text parts joined;
/// images and other parts travel upstream in the original message), or `null` (an assistant
/// turn that only called tools).
pub(crate) fn content_text(content: &Value) -> Option<String> {
    match content {
        Value::Null => Some(String::new()),
        Value::String(s) => Some(s.clone()),
        Value::Array(parts) => Some(
            parts
                .iter()
                .filter(|p| p["type"] == "text")
                .filter_map(|p| p["text"].as_str())
                .collect::<Vec<_>>()
                .join("\n"),
        ),
        _ => None,
    }
}

/// A client error naming the request field (400 with `param`).
#[derive(Debug, Clone, PartialEq)]
pub struct FieldError {
    /// The field, e.g. `max_tokens` or `messages[2].content`.
    pub param: String,
    /// What is wrong.
    pub message: String,
}

impl From<FieldError> for crate::ApiError {
    fn from(e: FieldError) -> Self {
        Self::field(&e.param, e.message)
    }
}

pub(crate) fn field_error(param: &str, message: impl Into<String>) -> FieldError {
    FieldError {
        param: param.to_owned(),
        message: message.into(),
    }
}

/// Checks the sampling fields OpenAI defines ranges for: a value out of range or of the
/// wrong type is a 400 naming the field, never silently dropped or clamped.
pub(crate) fn validate_sampling(body: &Value) -> Result<(), FieldError> {
    let number_in = |field: &str, lo: f64, hi: f64| -> Result<(), FieldError> {
        match &body[field] {
            Value::Null => Ok(()),
            Value::Number(n) if n.as_f64().is_some_and(|x| (lo..=hi).contains(&x)) => Ok(()),
            other => Err(field_error(
                field,
                format!(
                    "`{field}` must be a number in [{lo}, {hi}], got {}",
                    shown(other)
                ),
            )),
        }
    };
    number_in("temperature", 0.0, 2.0)?;
    number_in("top_p", 0.0, 1.0)?;
    number_in("presence_penalty", -2.0, 2.0)?;
    number_in("frequency_penalty", -2.0, 2.0)?;
    for field in ["max_tokens", "max_completion_tokens"] {
        match &body[field] {
            Value::Null => {}
            Value::Number(n)
                if n.as_u64()
                    .is_some_and(|t| (1..=u64::from(u32::MAX)).contains(&t)) => {}
            other => {
                return Err(field_error(
                    field,
                    format!(
                        "`{field}` must be an integer in [1, {}], got {}",
                        u32::MAX,
                        shown(other)
                    ),
                ));
            }
        }
    }
    match &body["n"] {
        Value::Null => {}
        Value::Number(n) if n.as_u64() == Some(1) => {}
        other => {
            // One routed answer per request: more would be n separate routings.
            return Err(field_error(
                "n",
                format!("`n` must be 1 here, got {}", shown(other)),
            ));
        }
    }
    match &body["stream"] {
        Value::Null | Value::Bool(_) => {}
        other => {
            return Err(field_error(
                "stream",
                format!("`stream` must be a boolean, got {}", shown(other)),
            ));
        }
    }
    match &body["seed"] {
        Value::Null => {}
        Value::Number(n) if n.as_u64().is_some() => {}
        other => {
            return Err(field_error(
                "seed",
                format!(
                    "`seed` must be a non-negative integer, got {}",
                    shown(other)
                ),
            ));
        }
    }
    match &body["stop"] {
        Value::Null | Value::String(_) => {}
        Value::Array(a) if a.len() <= 4 && a.iter().all(Value::is_string) => {}
        other => {
            return Err(field_error(
                "stop",
                format!(
                    "`stop` must be a string or up to 4 strings, got {}",
                    shown(other)
                ),
            ));
        }
    }
    Ok(())
}

/// A request's own operating point: `automix.lambda` in the body or `x-automix-lambda`
/// (the body wins), `x-automix-max-escalations`. Invalid values are 400s naming the field.
pub(crate) fn route_options(
    headers: &HeaderMap,
    body: &Value,
    lambda_family: Option<f64>,
) -> Result<RouteOptions, FieldError> {
    let header = |name: &str| -> Result<Option<String>, FieldError> {
        match headers.get(name) {
            None => Ok(None),
            Some(v) => v
                .to_str()
                .map(|s| Some(s.trim().to_owned()))
                .map_err(|_| field_error(name, format!("header {name} is not text"))),
        }
    };
    let valid_lambda = |l: f64| automix::core::request_lambda(l).is_ok();
    match &body["automix"] {
        Value::Null if body.get("automix").is_none() => {}
        Value::Object(_) => {}
        other => {
            return Err(field_error(
                "automix",
                format!(
                    "`automix` must be an object such as {{\"lambda\": 0.5}}, got {}",
                    json_kind(other)
                ),
            ));
        }
    }
    let from_body = match &body["automix"]["lambda"] {
        Value::Null => None,
        Value::Number(n) if n.as_f64().is_some_and(valid_lambda) => n.as_f64(),
        other => {
            return Err(field_error(
                "automix.lambda",
                format!(
                    "`automix.lambda` must be a number >= 0, got {}",
                    shown(other)
                ),
            ));
        }
    };
    let from_header = match header("x-automix-lambda")? {
        None => None,
        Some(text) => match text.parse::<f64>() {
            Ok(l) if valid_lambda(l) => Some(l),
            _ => {
                return Err(field_error(
                    "x-automix-lambda",
                    format!(
                        "x-automix-lambda must be a number >= 0, got {:?}",
                        excerpt(&text)
                    ),
                ));
            }
        },
    };
    let lambda = from_body.or(from_header);
    if lambda.is_some() && lambda_family.is_none() {
        let param = if from_body.is_some() {
            "automix.lambda"
        } else {
            "x-automix-lambda"
        };
        return Err(field_error(
            param,
            "this server's policy has no λ family (a two-model policy trained with \
             routing_method auto or Calibrated has one)",
        ));
    }
    let max_escalations = match header("x-automix-max-escalations")? {
        None => None,
        Some(text) => Some(text.parse::<usize>().map_err(|_| {
            field_error(
                "x-automix-max-escalations",
                format!(
                    "x-automix-max-escalations must be an integer >= 0, got {:?}",
                    excerpt(&text)
                ),
            )
        })?),
    };
    Ok(RouteOptions {
        lambda,
        max_escalations,
        tenant: None,
    })
}

/// The JSON type of `v`, for errors that must not echo what a client sent.
pub(crate) fn json_kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// At most the first 32 characters of a client string, marked when cut: errors name what
/// the client sent without echoing a megabyte of it back.
pub fn excerpt(s: &str) -> String {
    const KEEP: usize = 32;
    match s.char_indices().nth(KEEP) {
        Some((cut, _)) => format!("{}… ({} bytes)", &s[..cut], s.len()),
        None => s.to_owned(),
    }
}

/// A client's JSON value in an error: its excerpt.
pub(crate) fn shown(v: &Value) -> String {
    excerpt(&v.to_string())
}

/// The request fields the router interprets; every other field travels to the answering
/// model as it came (`ChatRequest::extra`).
pub(crate) const INTERPRETED: [&str; 10] = [
    "model",
    "messages",
    "temperature",
    "max_tokens",
    "max_completion_tokens",
    "stop",
    "seed",
    "n",
    "stream",
    "automix",
];

/// The client's request as ours; errors are client errors (400) naming the field.
pub fn parse_chat_request(body: &Value) -> Result<(ChatRequest, String, bool), FieldError> {
    validate_sampling(body)?;
    let model = body["model"]
        .as_str()
        .ok_or_else(|| field_error("model", "field `model` is required"))?;
    let messages = body["messages"]
        .as_array()
        .ok_or_else(|| field_error("messages", "field `messages` must be an array"))?;
    let parsed = messages
        .iter()
        .enumerate()
        .map(|(i, m)| parse_message(i, m))
        .collect::<Result<Vec<_>, _>>()?;
    let question = parsed
        .iter()
        .rev()
        .find(|m| m.role == "user")
        .map(|m| m.content.clone())
        .ok_or_else(|| field_error("messages", "messages must contain a user message"))?;
    let stop = match &body["stop"] {
        Value::String(s) => vec![s.clone()],
        Value::Array(a) => a
            .iter()
            .filter_map(|s| s.as_str().map(str::to_owned))
            .collect(),
        _ => Vec::new(),
    };
    let extra = body
        .as_object()
        .map(|o| {
            o.iter()
                .filter(|(k, _)| !INTERPRETED.contains(&k.as_str()))
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect()
        })
        .unwrap_or_default();
    let request = ChatRequest {
        temperature: body["temperature"].as_f64().map(|t| t as f32),
        // Validated above: within u32.
        max_tokens: body["max_completion_tokens"]
            .as_u64()
            .or_else(|| body["max_tokens"].as_u64())
            .and_then(|t| u32::try_from(t).ok()),
        stop,
        seed: body["seed"].as_u64(),
        extra,
        ..ChatRequest::new(model, parsed)
    };
    Ok((request, question, body["stream"].as_bool().unwrap_or(false)))
}

/// Message `i` of a request: its text for the verifier, and the message itself to forward.
pub(crate) fn parse_message(i: usize, m: &Value) -> Result<ChatMessage, FieldError> {
    let object = m.as_object().ok_or_else(|| {
        field_error(
            &format!("messages[{i}]"),
            format!("messages[{i}] must be an object"),
        )
    })?;
    let role = m["role"].as_str().ok_or_else(|| {
        field_error(
            &format!("messages[{i}].role"),
            format!("messages[{i}].role must be a string"),
        )
    })?;
    let content = content_text(&m["content"]).ok_or_else(|| {
        field_error(
            &format!("messages[{i}].content"),
            format!("messages[{i}].content must be a string, an array of parts or null"),
        )
    })?;
    Ok(ChatMessage {
        role: role.to_owned(),
        content,
        original: Some(object.clone()),
    })
}

/// The text of the last user message of `request`.
pub(crate) fn last_user_text(request: &ChatRequest) -> String {
    request
        .messages
        .iter()
        .rev()
        .find(|m| m.role == "user")
        .map(|m| m.content.clone())
        .unwrap_or_default()
}

/// The task of a request that names none.
pub(crate) const DEFAULT_TASK: &str = "chat";

/// Longest task name a request may carry.
const MAX_TASK_LEN: usize = 64;

/// The request's task (`automix.task`, else header `x-automix-task`, else [`DEFAULT_TASK`]):
/// the per-task policy decides with it, and the dashboard counts by it. Names are short
/// and plain (letters, digits, `_-.:`) so that they are safe to show and to count.
pub(crate) fn request_task(headers: &HeaderMap, body: &Value) -> Result<String, FieldError> {
    let (param, given) = match &body["automix"]["task"] {
        Value::Null => match headers.get("x-automix-task") {
            None => return Ok(DEFAULT_TASK.to_owned()),
            Some(v) => (
                "x-automix-task",
                v.to_str()
                    .map_err(|_| field_error("x-automix-task", "x-automix-task is not text"))?
                    .trim()
                    .to_owned(),
            ),
        },
        Value::String(t) => ("automix.task", t.clone()),
        other => {
            return Err(field_error(
                "automix.task",
                format!("`automix.task` must be a string, got {}", json_kind(other)),
            ));
        }
    };
    let plain = |c: char| c.is_ascii_alphanumeric() || "_-.:".contains(c);
    if given.is_empty() || given.len() > MAX_TASK_LEN || !given.chars().all(plain) {
        return Err(field_error(
            param,
            format!(
                "{param} must be 1 to {MAX_TASK_LEN} letters, digits or _-.:, got {:?}",
                excerpt(&given)
            ),
        ));
    }
    Ok(given)
}

/// What the verifier sees of a chat request: its last user message, and its task.
pub(crate) fn chat_query(question: String, task: &str) -> QueryRow {
    QueryRow {
        id: query_id(task, &question),
        task_name: task.to_owned(),
        query: question,
        ground_truth: None,
        metric: None,
        choices: Vec::new(),
        task_id: None,
        context: None,
    }
}
