//! Typed errors of model calls.

use std::time::Duration;

use thiserror::Error;

/// Why a model call failed.
#[derive(Debug, Clone, PartialEq, Error)]
pub enum LlmError {
    /// The server answered with a non-success status.
    #[error("HTTP {status} from {endpoint}: {body_excerpt}")]
    Http {
        /// Endpoint base URL (never contains the key).
        endpoint: String,
        /// Status code.
        status: u16,
        /// The start of the response body.
        body_excerpt: String,
        /// 429 and 5xx are retryable; other 4xx are not.
        retryable: bool,
    },
    /// No response within the per-request timeout.
    #[error("request to {endpoint} timed out after {after:?}")]
    Timeout {
        /// Endpoint base URL.
        endpoint: String,
        /// The per-request timeout.
        after: Duration,
    },
    /// Connecting or reading failed (refused, reset, closed mid-response).
    #[error("connection to {endpoint} failed: {message}")]
    Connection {
        /// Endpoint base URL.
        endpoint: String,
        /// What the transport said.
        message: String,
    },
    /// The reply body was larger than `max_response_bytes` (not retried: it would be again).
    #[error("reply from {endpoint} is larger than {limit} bytes")]
    TooLarge {
        /// Endpoint base URL.
        endpoint: String,
        /// The limit.
        limit: usize,
    },
    /// Every concurrency slot of the endpoint stayed busy for the queue timeout.
    #[error("all {slots} slots to {endpoint} stayed busy for {waited:?}")]
    Busy {
        /// Endpoint base URL.
        endpoint: String,
        /// The endpoint's concurrency limit.
        slots: usize,
        /// How long the call waited.
        waited: Duration,
    },
    /// A success status with a body that is not a chat completion.
    #[error("malformed response from {endpoint}: {message}; body starts {body_excerpt:?}")]
    Malformed {
        /// Endpoint base URL.
        endpoint: String,
        /// The parse error.
        message: String,
        /// The start of the body.
        body_excerpt: String,
    },
    /// A stream ended before `data: [DONE]` or carried an unparseable event.
    #[error("stream from {endpoint} broke: {message}")]
    Stream {
        /// Endpoint base URL.
        endpoint: String,
        /// What went wrong.
        message: String,
    },
    /// Retries ran out; `last` is the final attempt's error.
    #[error("gave up after {attempts} attempts: {last}")]
    RetriesExhausted {
        /// Attempts made.
        attempts: u32,
        /// The last error.
        last: Box<LlmError>,
    },
    /// The overall deadline passed before a successful attempt.
    #[error("deadline of {deadline:?} passed after {attempts} attempts: {last}")]
    DeadlineExceeded {
        /// The overall deadline.
        deadline: Duration,
        /// Attempts made.
        attempts: u32,
        /// The last error.
        last: Box<LlmError>,
    },
    /// The model's API key variable is not set.
    #[error("environment variable {env} (API key of model {model}) is not set")]
    MissingApiKey {
        /// Model name in llm_data.
        model: String,
        /// Variable name.
        env: String,
    },
    /// The model has no `api_endpoint` and no default endpoint was given.
    #[error("model {model} has no api_endpoint and no default endpoint is configured")]
    MissingEndpoint {
        /// Model name in llm_data.
        model: String,
    },
    /// The provider cannot do this (e.g. streaming on a test double).
    #[error("unsupported: {0}")]
    Unsupported(String),
    /// The scripted test provider ran out of replies or was told to fail.
    #[error("scripted provider: {0}")]
    Scripted(String),
}

impl LlmError {
    /// Whether another attempt may succeed.
    pub fn is_retryable(&self) -> bool {
        match self {
            Self::Http { retryable, .. } => *retryable,
            Self::Timeout { .. } | Self::Connection { .. } | Self::Malformed { .. } => true,
            _ => false,
        }
    }

    /// The HTTP status, when the server sent one.
    pub fn status(&self) -> Option<u16> {
        match self {
            Self::Http { status, .. } => Some(*status),
            Self::RetriesExhausted { last, .. } | Self::DeadlineExceeded { last, .. } => {
                last.status()
            }
            _ => None,
        }
    }
}

/// Result alias.
pub type Result<T, E = LlmError> = std::result::Result<T, E>;
