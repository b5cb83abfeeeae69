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

/// The OpenAI error `type` of an error, and so which counter of `/metrics` it adds to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// The client's request is at fault (4xx): `invalid_request_error`.
    InvalidRequest,
    /// An upstream model failed: `upstream_error`.
    Upstream,
    /// This server failed: `server_error`.
    Server,
}

impl ErrorKind {
    /// OpenAI's `type` string.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::InvalidRequest => "invalid_request_error",
            Self::Upstream => "upstream_error",
            Self::Server => "server_error",
        }
    }

    /// The kind a status implies when no upstream is involved.
    fn of(status: StatusCode) -> Self {
        if status.is_client_error() {
            Self::InvalidRequest
        } else {
            Self::Server
        }
    }
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

    /// An error of this server (4xx: the client's request; 5xx: ours), its type following
    /// its status.
    pub fn status(status: StatusCode, code: &str, message: impl Into<String>) -> Self {
        Self::new(
            status,
            ErrorKind::of(status).as_str(),
            code,
            &message.into(),
        )
    }

    /// A 400 naming the request field at fault.
    pub fn field(param: &str, message: impl Into<String>) -> Self {
        Self {
            param: Some(param.to_owned()),
            ..Self::status(StatusCode::BAD_REQUEST, "invalid_request", message)
        }
    }

    /// An upstream failure (`upstream_error`).
    pub fn upstream(status: StatusCode, code: &str, message: impl Into<String>) -> Self {
        Self::new(status, ErrorKind::Upstream.as_str(), code, &message.into())
    }

    /// This error asking the client to wait `seconds` (`Retry-After`).
    pub fn retry_after(self, seconds: u64) -> Self {
        Self {
            retry_after: Some(seconds),
            ..self
        }
    }

    /// The error's kind, from its `type`.
    pub fn error_kind(&self) -> ErrorKind {
        match self.kind {
            "upstream_error" => ErrorKind::Upstream,
            "server_error" => ErrorKind::Server,
            _ => ErrorKind::InvalidRequest,
        }
    }

    /// A failed route: the status, code and client-safe message of the runtime error. An
    /// upstream's fault is `upstream_error` (a 400 when the upstream refused the request as
    /// invalid); anything else is this server's, `server_error`, so type and code agree.
    pub fn routing(e: &AutomixError) -> Self {
        let (status, code, message) = for_client(e);
        let status = StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_GATEWAY);
        match e {
            AutomixError::Model { .. } if status == StatusCode::BAD_REQUEST => {
                Self::status(status, code, message)
            }
            AutomixError::Model { source, .. } if !is_configuration(source) => {
                Self::upstream(status, code, message)
            }
            _ => Self::status(status, code, message),
        }
    }

    /// OpenAI's error body.
    pub fn body(&self) -> serde_json::Value {
        json!({"error": {
            "message": self.message, "type": self.kind, "param": self.param, "code": self.code
        }})
    }

    /// The error as an event of a stream whose status line has gone: OpenAI's error body
    /// as one SSE `data` event.
    pub fn sse_data(&self) -> String {
        format!("data: {}\n\n", self.body())
    }

    /// The error as the last event of a stream: [`Self::sse_data`], then `[DONE]`.
    pub fn sse_event(&self) -> String {
        format!("{}data: [DONE]\n\n", self.sse_data())
    }
}

/// A model that is not configured here (no key, no endpoint) is this server's fault.
fn is_configuration(e: &automix_llm::LlmError) -> bool {
    matches!(
        e,
        automix_llm::LlmError::MissingApiKey { .. } | automix_llm::LlmError::MissingEndpoint { .. }
    )
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut response = (self.status, axum::Json(self.body())).into_response();
        // What `/metrics` counts the error as: read by the counting layer.
        response.extensions_mut().insert(self.error_kind());
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
