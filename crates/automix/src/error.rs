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
}
