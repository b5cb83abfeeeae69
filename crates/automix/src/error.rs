//! Errors of the runtime. Every error about user input names the file (and line, and key
//! or field, where there is one).

use std::path::PathBuf;

/// A runtime error.
#[derive(Debug, thiserror::Error)]
pub enum AutomixError {
    /// A config problem at a place in a file.
    #[error("{file}:{line}: {message}")]
    Config {
        /// The config file.
        file: PathBuf,
        /// 1-based line (0 when the problem is not at one line).
        line: u64,
        /// What is wrong, naming the key.
        message: String,
    },
    /// A data file line is malformed.
    #[error("{file}:{line}: {message}")]
    Data {
        /// The data file.
        file: PathBuf,
        /// 1-based line.
        line: usize,
        /// What is wrong, naming the field.
        message: String,
    },
    /// A file could not be read or written.
    #[error("{file}: {source}")]
    Io {
        /// The file.
        file: PathBuf,
        /// The IO error.
        source: std::io::Error,
    },
    /// An unknown or unsupported task metric.
    #[error("unknown task metric {name:?}; known: {known}")]
    UnknownMetric {
        /// The name given.
        name: String,
        /// The supported names.
        known: String,
    },
    /// llm_data problems.
    #[error(transparent)]
    Catalogue(#[from] automix_llm::CatalogueError),
    /// A model call failed.
    #[error("model {model}: {source}")]
    Model {
        /// The llm_data name of the model.
        model: String,
        /// The provider error.
        source: automix_llm::LlmError,
    },
    /// Prompt templates are broken.
    #[error(transparent)]
    Template(#[from] automix_verify::TemplateError),
    /// Training or policy errors from the core.
    #[error(transparent)]
    Core(#[from] automix_core::CoreError),
    /// A setting is inconsistent with the others.
    #[error("{0}")]
    Invalid(String),
}

/// Result with [`AutomixError`].
pub type Result<T, E = AutomixError> = std::result::Result<T, E>;

impl AutomixError {
    /// An IO error on `file`.
    pub fn io(file: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Self::Io {
            file: file.into(),
            source,
        }
    }

    /// The HTTP status, OpenAI error `code` and client-facing message of this error when a
    /// proxied request fails. The message names the model and what went wrong upstream but
    /// never an upstream URL or body (those stay in the server log).
    pub fn for_client(&self) -> (u16, &'static str, String) {
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
        match self {
            Self::Model { model, source } => {
                let (status, code, message) = upstream(source);
                (status, code, format!("model {model}: {message}"))
            }
            _ => (500, "server_error", "internal error while routing".into()),
        }
    }
}
