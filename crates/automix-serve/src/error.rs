//! How a failed route reaches the client: the HTTP status, OpenAI error `code` and message of
//! each runtime error. The mapping lives here, with the HTTP server, so the runtime crate
//! stays free of HTTP concerns.

use automix::AutomixError;

/// The HTTP status, OpenAI error `code` and client-facing message of this error when a
/// proxied request fails. The message names the model and what went wrong upstream but
/// never an upstream URL or body (those stay in the server log).
pub(crate) fn for_client(e: &AutomixError) -> (u16, &'static str, String) {
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
