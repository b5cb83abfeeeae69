//! Verification for AutoMix: the confidence signal the router decides on.
//!
//! - [`PromptSet`]: answer and few-shot verification prompts from `configs/prompts/`.
//! - [`parse_verdict`] / [`VerdictTally`]: what a sample says; unparseable samples are
//!   counted and "nothing parsed" is unknown (`None`), never 0.
//! - [`Verifier`]: k sampled verdicts with distinct seeds, or one greedy verdict's
//!   logprobs (falling back to sampling, and saying so, when there are none).
//! - [`SelfConsistency`]: agreement of m sampled answers.
//! - [`CalibrationReport`]: AUC, ECE and unknown share of a verifier on data.
//!
//! Models are reached only through [`automix_llm::ChatProvider`].

#![cfg_attr(test, allow(clippy::unwrap_used))]

mod calibration;
mod consistency;
mod template;
mod verdict;
mod verifier;

pub use calibration::{CalibrationReport, ECE_BINS, auc, ece};
pub use consistency::{SelfConsistency, normalise_answer};
pub use template::{PromptSet, PromptTemplate, QueryText, TaskKind, TemplateError};
pub use verdict::{Verdict, VerdictTally, own_continuation, parse_verdict};
pub use verifier::{
    LogprobSource, LogprobVerification, SampledVerification, Verifier, VerifierConfig,
    verdict_probability,
};
