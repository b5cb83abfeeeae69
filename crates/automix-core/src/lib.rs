//! The pure decision core of AutoMix: no IO, no async, no clocks.
//!
//! A query goes to a small model; a verifier scores the answer; a meta-verifier
//! decides whether to keep it or escalate to a larger model. This crate holds the
//! data types ([`RoutingRecord`], [`Confidence`], [`CostModel`]), the metrics
//! ([`Dataset::lift`] for ΔIBC, the oracle, the cost–quality [`frontier`]), the
//! meta-verifiers of the paper's code reproduced exactly ([`MethodKind`]), our exact
//! POMDP ([`pomdp`]), training under an [`Objective`], and the serialisable [`Policy`]
//! whose [`Policy::decide`] is what inference runs.
//!
//! ```
//! use automix_core::*;
//! let rows: Vec<RoutingRecord> = (0..40)
//!     .map(|i| {
//!         let p = (i % 9) as f64 / 8.0;
//!         let small = if p > 0.5 { 1.0 } else { 0.0 };
//!         RoutingRecord::new(small, 1.0, VerifierScore::Known(Confidence::new(p).unwrap()))
//!     })
//!     .collect();
//! let spec = MethodSpec::new(MethodKind::Threshold, 8);
//! let policy = train(&rows, &CostModel::default(), &spec, &TrainOptions::default()).unwrap();
//! assert_eq!(policy.decide(Confidence::new(0.0).unwrap()), Decision::Escalate);
//! assert_eq!(policy.decide(Confidence::new(1.0).unwrap()), Decision::Keep);
//! let reloaded = Policy::from_json(&policy.to_json().unwrap()).unwrap();
//! assert_eq!(reloaded, policy);
//! ```

#![cfg_attr(test, allow(clippy::unwrap_used))]

pub mod belief;
pub mod calibrate;
pub mod cascade;
pub mod cascade_bins;
pub mod compat;
mod confidence;
mod cost;
mod error;
pub mod fusion;
mod methods;
mod metrics;
mod parallel;
mod policy;
pub mod pomdp;
mod record;
pub mod replay;
mod rule;
pub mod shared_belief;
pub(crate) mod stats;
pub mod synthetic;
mod train;

pub use calibrate::{CalibratedConfig, Calibration, CvSummary, GainCurve, GainModel, PooledLevels};
pub use confidence::{Bins, Confidence, VERDICT_CUT, VerifierScore};
pub use cost::{CostModel, QueryCosts, TokenPrice, TokenUsage};
pub use error::{CoreError, Result};
pub use methods::{Candidate, MethodKind, MethodSpec, candidates};
pub use metrics::{
    Baseline, Dataset, Decision, FrontierMetrics, Lift, LiftUndefined, OperatingPoint, Outcome,
    frontier, frontier_metrics, frontier_quality_at, lift, mean,
};
pub use policy::{POLICY_FORMAT_VERSION, Policy, QueryEvidence, request_lambda};
pub use pomdp::{ExactPomdpConfig, PomdpModel};
pub use record::{Category, RoutingRecord, validate_all};
pub use rule::{DecisionRule, MAX_TABLE_BINS, TableLookup};
pub use train::{
    Objective, ScoredCandidate, TrainOptions, TrainingSummary, decisions, score_candidates, select,
    train, train_on,
};
