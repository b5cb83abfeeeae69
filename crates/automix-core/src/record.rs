//! One routing record: what the small and large model scored on a query and what the
//! verifier said about the small model's answer.

use serde::{Deserialize, Serialize};

use crate::confidence::VerifierScore;
use crate::cost::QueryCosts;
use crate::error::{CoreError, Result};

/// A training or evaluation row for the two-model problem.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RoutingRecord {
    /// Task the query came from, when known (used by per-task priors).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub task_name: Option<String>,
    /// Quality of the small model's answer (0..1 for the bundled metrics).
    pub small_score: f64,
    /// Quality of the large model's answer.
    pub large_score: f64,
    /// The verifier's confidence in the small model's answer.
    pub verifier: VerifierScore,
    /// The small model's normalised answer, for `FixedAnswerRouting`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub small_answer: Option<String>,
    /// Real per-query costs (money), used by [`crate::CostModel::PerQuery`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub costs: Option<QueryCosts>,
}

impl RoutingRecord {
    /// A record with unit-cost semantics and no task or answer.
    pub fn new(small_score: f64, large_score: f64, verifier: VerifierScore) -> Self {
        Self {
            task_name: None,
            small_score,
            large_score,
            verifier,
            small_answer: None,
            costs: None,
        }
    }

    /// The hidden state this row belongs to.
    pub fn category(&self) -> Category {
        Category::of(self.small_score, self.large_score)
    }

    /// Checks that scores (and costs, when present) are finite.
    pub fn validate(&self, row: usize) -> Result<()> {
        finite(row, "small_score", self.small_score)?;
        finite(row, "large_score", self.large_score)?;
        if let Some(c) = &self.costs {
            finite(row, "costs.small", c.small)?;
            finite(row, "costs.large", c.large)?;
            finite(row, "costs.verifier", c.verifier)?;
        }
        Ok(())
    }
}

fn finite(row: usize, field: &'static str, value: f64) -> Result<()> {
    if value.is_finite() {
        Ok(())
    } else {
        Err(CoreError::NonFinite { row, field, value })
    }
}

/// Validates every record.
pub fn validate_all(records: &[RoutingRecord]) -> Result<()> {
    if records.is_empty() {
        return Err(CoreError::Empty);
    }
    records
        .iter()
        .enumerate()
        .try_for_each(|(i, r)| r.validate(i))
}

/// The hidden state of the two-model POMDP, from the two models' scores.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Category {
    /// The large model scores higher: escalating helps.
    Needy,
    /// Both score the same and above zero: the small answer is already right.
    Good,
    /// Both score zero (or the same non-positive score): escalating cannot help.
    Hopeless,
    /// The small model scores higher than the large one (the Python code drops this class).
    SmallBetter,
}

impl Category {
    /// All states, in the order used by observation tables.
    pub const ALL: [Category; 4] = [Self::Needy, Self::Good, Self::Hopeless, Self::SmallBetter];

    /// Classifies a pair of scores.
    pub fn of(small: f64, large: f64) -> Self {
        if large > small {
            Self::Needy
        } else if small > large {
            Self::SmallBetter
        } else if small > 0.0 {
            Self::Good
        } else {
            Self::Hopeless
        }
    }

    /// The three-way label the paper's code expects in its `category` column
    /// (small-better rows count as GOOD there: keeping them is right).
    pub fn paper_label(self) -> &'static str {
        match self {
            Self::Needy => "NEEDY",
            Self::Good | Self::SmallBetter => "GOOD",
            Self::Hopeless => "HOPELESS",
        }
    }

    /// Index into [`Category::ALL`].
    pub fn index(self) -> usize {
        self as usize
    }
}
