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
    /// Fewer models than the operation needs.
    #[error("{what} needs at least {needed} models; {got} configured")]
    TooFewModels {
        /// What needs them.
        what: &'static str,
        /// How many it needs.
        needed: usize,
        /// How many there are.
        got: usize,
    },
    /// A model named by a policy, a route or a flag is not among the configured ones.
    #[error("model {name} is not among the configured models ({known})")]
    UnknownModel {
        /// The name asked for.
        name: String,
        /// The configured names.
        known: String,
    },
    /// The policy cannot be used with these settings or models (and would otherwise be
    /// silently ignored).
    #[error("the policy cannot route here: {reason}")]
    PolicyUnusable {
        /// Why.
        reason: String,
    },
    /// A training row lacks a model's answer.
    #[error("training row {row} has no answer from model {model}")]
    MissingRun {
        /// The row's position and id.
        row: String,
        /// The model.
        model: String,
    },
    /// Rows that cannot support the requested computation.
    #[error("{0}")]
    InsufficientRows(String),
    /// A config value that is invalid together with another (the file and line are given
    /// by the caller that knows them).
    #[error("{key}: {message}")]
    Setting {
        /// The key, e.g. `hparam.objective`.
        key: &'static str,
        /// What is wrong.
        message: String,
    },
    /// A value could not be written as JSON.
    #[error("cannot serialise {what}: {source}")]
    Serialise {
        /// What was being written.
        what: &'static str,
        /// The serde error.
        source: serde_json::Error,
    },
    /// Reloading the router failed (the old one keeps serving).
    #[error("reload failed: {0}")]
    Reload(String),
    /// The step runner reached a state it never should (a bug, reported, not routed on).
    #[error("internal routing error: {0}")]
    Internal(String),
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
}
