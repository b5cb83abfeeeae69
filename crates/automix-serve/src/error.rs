//! How a failed route reaches the client: the HTTP status, OpenAI error `code` and message of
//! each runtime error. The mapping lives here, with the HTTP server, so the runtime crate
//! stays free of HTTP concerns.

use automix::AutomixError;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::json;

/// An error as the client sees it: the HTTP status and OpenAI's error body. Every error the
/// proxy sends is one of these, so the status and the body cannot disagree.
#[derive(Debug, Clone, PartialEq)]
pub struct ApiError {
    /// HTTP status.
    pub status: StatusCode,
    /// OpenAI's `type` (`invalid_request_error`, `upstream_error`, `server_error`).
    pub kind: &'static str,
    /// OpenAI's `code`.
    pub code: String,
    /// What went wrong, safe to show (no upstream URL, body or key).
    pub message: String,
    /// The request field at fault, if one is.
    pub param: Option<String>,
    /// Seconds a 429 or 503 asks the client to wait (`Retry-After`); 1 when unset.
    pub retry_after: Option<u64>,
}

impl ApiError {
    /// An error without a field.
    pub fn new(status: StatusCode, kind: &'static str, code: &str, message: &str) -> Self {
        Self {
            status,
            kind,
            code: code.to_owned(),
            message: message.to_owned(),
            param: None,
            retry_after: None,
        }
    }

    /// A failed route: the status, code and client-safe message of the runtime error.
    pub fn routing(e: &AutomixError) -> Self {
        let (status, code, message) = for_client(e);
        let status = StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_GATEWAY);
        let kind = if status == StatusCode::BAD_REQUEST {
            "invalid_request_error"
        } else {
            "upstream_error"
        };
        Self::new(status, kind, code, &message)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = json!({"error": {
            "message": self.message, "type": self.kind, "param": self.param, "code": self.code
        }});
        let mut response = (self.status, axum::Json(body)).into_response();
        if self.status == StatusCode::TOO_MANY_REQUESTS
            || self.status == StatusCode::SERVICE_UNAVAILABLE
        {
            // Our own concurrency limits clear as requests finish: a second is a fair first
            // wait. A limit with a known reset says when.
            let wait = self.retry_after.unwrap_or(1).to_string();
            if let Ok(v) = HeaderValue::from_str(&wait) {
                response.headers_mut().insert(header::RETRY_AFTER, v);
            }
        }
        response
    }
}

/// The HTTP status, OpenAI error `code` and client-facing message of this error when a
/// proxied request fails. The message names the model and what went wrong upstream but
/// never an upstream URL or body (those stay in the server log).
fn for_client(e: &AutomixError) -> (u16, &'static str, String) {
    use automix_llm::LlmError;
    fn upstream(e: &LlmError) -> (u16, &'static str, String) {
        match e {
            LlmError::Timeout { after, .. } => (
                504,
                "upstream_timeout",
                format!("timed out after {after:?}"),
            ),
            LlmError::Http { status: 429, .. } => {
                (429, "upstream_rate_limited", "rate limited upstream".into())
            }
            // The request itself was refused (too long for the context, invalid for this
            // model): the client's to fix, so a 400, and never retried or escalated.
            LlmError::Http {
                status: status @ (400 | 413 | 422),
                body_excerpt,
                ..
            } => {
                let code = if body_excerpt.contains("context_length_exceeded") {
                    "context_length_exceeded"
                } else {
                    "upstream_rejected_request"
                };
                (
                    400,
                    code,
                    format!("the upstream refused the request (HTTP {status})"),
                )
            }
            LlmError::Http { status, .. } => (
                502,
                "upstream_error",
                format!("upstream answered HTTP {status}"),
            ),
            LlmError::TooLarge { limit, .. } => (
                502,
                "upstream_error",
                format!("upstream reply larger than {limit} bytes"),
            ),
            LlmError::Busy { slots, waited, .. } => (
                503,
                "upstream_busy",
                format!("all {slots} upstream slots stayed busy for {waited:?}"),
            ),
            LlmError::Connection { .. } => (
                502,
                "upstream_error",
                "connection to the upstream failed".into(),
            ),
            LlmError::Malformed { message, .. } => (
                502,
                "upstream_error",
                format!("malformed upstream reply: {message}"),
            ),
            LlmError::Stream { .. } => (502, "upstream_error", "upstream stream broke".into()),
            LlmError::RetriesExhausted { attempts, last }
            | LlmError::DeadlineExceeded { attempts, last, .. } => {
                let (status, code, message) = upstream(last);
                let status = if matches!(**last, LlmError::Timeout { .. }) {
                    504
                } else {
                    status
                };
                (
                    status,
                    code,
                    format!("{message} (after {attempts} attempts)"),
                )
            }
            LlmError::MissingApiKey { .. } | LlmError::MissingEndpoint { .. } => (
                500,
                "server_error",
                "the model is not configured on this server".into(),
            ),
            LlmError::Unsupported(_) | LlmError::Scripted(_) => {
                (502, "upstream_error", "upstream call failed".into())
            }
        }
    }
    match e {
        AutomixError::Model { model, source } => {
            let (status, code, message) = upstream(source);
            (status, code, format!("model {model}: {message}"))
        }
        _ => (500, "server_error", "internal error while routing".into()),
    }
}
