//! Cost models: the paper's relative unit costs, or real money from token usage.

use serde::{Deserialize, Serialize};

use crate::error::{CoreError, Result};
use crate::record::RoutingRecord;

/// What one query costs on each path: the small model's answer, the verification,
/// and the large model's answer if escalated.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct QueryCosts {
    /// Cost of the small model's answer.
    pub small: f64,
    /// Cost of the large model's answer.
    pub large: f64,
    /// Cost of verifying the small model's answer.
    pub verifier: f64,
}

/// How costs are assigned to records.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum CostModel {
    /// The paper's and LLMRouter's relative costs (defaults 1, 50, 1).
    Relative {
        /// `small_model_cost`.
        small: f64,
        /// `large_model_cost`.
        large: f64,
        /// `verifier_cost`.
        verifier: f64,
    },
    /// Each record carries its own costs (token usage times prices).
    PerQuery,
}

impl Default for CostModel {
    fn default() -> Self {
        Self::Relative {
            small: 1.0,
            large: 50.0,
            verifier: 1.0,
        }
    }
}

impl CostModel {
    /// The costs of one record under this model.
    pub fn query_costs(&self, row: usize, record: &RoutingRecord) -> Result<QueryCosts> {
        match *self {
            Self::Relative {
                small,
                large,
                verifier,
            } => Ok(QueryCosts {
                small,
                large,
                verifier,
            }),
            Self::PerQuery => record.costs.ok_or(CoreError::MissingQueryCosts { row }),
        }
    }

    /// Checks that relative costs are finite and non-negative.
    pub fn validate(&self) -> Result<()> {
        if let Self::Relative {
            small,
            large,
            verifier,
        } = *self
        {
            for (name, v) in [
                ("small_model_cost", small),
                ("large_model_cost", large),
                ("verifier_cost", verifier),
            ] {
                if !(v.is_finite() && v >= 0.0) {
                    return Err(CoreError::InvalidParameter {
                        name,
                        reason: format!("{v} is not a finite non-negative cost"),
                    });
                }
            }
        }
        Ok(())
    }
}

/// Token counts of one model call.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenUsage {
    /// Prompt tokens.
    pub prompt_tokens: u64,
    /// Completion tokens.
    pub completion_tokens: u64,
}

impl TokenUsage {
    /// Prompt plus completion tokens.
    pub fn total(self) -> u64 {
        self.prompt_tokens + self.completion_tokens
    }
}

impl std::ops::Add for TokenUsage {
    type Output = TokenUsage;
    /// Usage of two calls together.
    fn add(self, other: TokenUsage) -> TokenUsage {
        TokenUsage {
            prompt_tokens: self.prompt_tokens + other.prompt_tokens,
            completion_tokens: self.completion_tokens + other.completion_tokens,
        }
    }
}

/// A model's prices in money per million tokens (llm_data `input_price`, `output_price`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct TokenPrice {
    /// Price per million prompt tokens.
    pub input_per_million: f64,
    /// Price per million completion tokens.
    pub output_per_million: f64,
}

impl TokenPrice {
    /// Money cost of `usage`.
    pub fn cost(self, usage: TokenUsage) -> f64 {
        (usage.prompt_tokens as f64 * self.input_per_million
            + usage.completion_tokens as f64 * self.output_per_million)
            / 1_000_000.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn price_times_usage() {
        let p = TokenPrice {
            input_per_million: 0.2,
            output_per_million: 0.6,
        };
        let u = TokenUsage {
            prompt_tokens: 1_000_000,
            completion_tokens: 500_000,
        };
        assert!((p.cost(u) - 0.5).abs() < 1e-12);
    }

    #[test]
    fn per_query_needs_costs() {
        let r = RoutingRecord::new(1.0, 1.0, crate::VerifierScore::Unknown);
        assert_eq!(
            CostModel::PerQuery.query_costs(3, &r),
            Err(CoreError::MissingQueryCosts { row: 3 })
        );
    }
}
