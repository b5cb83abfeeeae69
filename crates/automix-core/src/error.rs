//! Typed errors of the decision core.

use thiserror::Error;

/// Everything that can go wrong in the pure decision core.
#[derive(Debug, Clone, PartialEq, Error)]
pub enum CoreError {
    /// A confidence outside `[0, 1]` or not a number.
    #[error("confidence {value} is not a probability in [0, 1]")]
    InvalidConfidence {
        /// The offending value.
        value: f64,
    },
    /// A record field that must be finite is NaN or infinite.
    #[error("row {row}: field `{field}` is {value}, expected a finite number")]
    NonFinite {
        /// Zero-based row index within the slice given to the core.
        row: usize,
        /// Field name.
        field: &'static str,
        /// The offending value.
        value: f64,
    },
    /// Per-query costs were requested but the row carries none.
    #[error("row {row}: cost model is per-query but the row has no `costs`")]
    MissingQueryCosts {
        /// Zero-based row index.
        row: usize,
    },
    /// Training or evaluation on no rows.
    #[error("no rows to train or evaluate on")]
    Empty,
    /// `num_bins` must be at least 1.
    #[error("num_bins must be >= 1, got {0}")]
    InvalidBins(usize),
    /// The decision vector does not match the rows.
    #[error("{decisions} decisions for {rows} rows")]
    LengthMismatch {
        /// Number of rows.
        rows: usize,
        /// Number of decisions.
        decisions: usize,
    },
    /// No candidate parameter satisfied the cost constraint or budget.
    #[error(
        "no candidate of {method} satisfies {constraint} (candidates' mean costs span {min_cost:.4}..={max_cost:.4}, escalation rates {min_rate:.4}..={max_rate:.4})"
    )]
    NoFeasibleCandidate {
        /// Method name.
        method: String,
        /// Human-readable constraint.
        constraint: String,
        /// Cheapest candidate's mean cost.
        min_cost: f64,
        /// Dearest candidate's mean cost.
        max_cost: f64,
        /// Lowest escalation rate among candidates.
        min_rate: f64,
        /// Highest escalation rate among candidates.
        max_rate: f64,
    },
    /// A parameter is out of its valid range.
    #[error("invalid parameter `{name}`: {reason}")]
    InvalidParameter {
        /// Parameter name.
        name: &'static str,
        /// Why it is invalid.
        reason: String,
    },
    /// The policy file was written by an incompatible version.
    #[error(
        "policy format version {found} is not supported (this build reads version {supported})"
    )]
    UnsupportedPolicyVersion {
        /// Version in the file.
        found: u32,
        /// Version this build reads.
        supported: u32,
    },
    /// The policy JSON could not be parsed.
    #[error("policy JSON: {0}")]
    PolicyJson(String),
}

/// Result alias for the core.
pub type Result<T, E = CoreError> = std::result::Result<T, E>;
