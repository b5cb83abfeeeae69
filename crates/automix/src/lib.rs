//! The AutoMix router runtime: config, llm_data, datasets, task metrics, the
//! [`Router`], the `collect` pipeline and the evaluation report.

#![cfg_attr(test, allow(clippy::unwrap_used))]

pub mod belief_store;
pub mod cascade;
pub mod cascade_chain;
mod cascade_cv;
pub mod cascade_fusion;
pub mod cascade_tasks;
pub mod checks;
pub mod collect;
pub mod config;
pub mod dataset;
mod error;
pub mod evaluate;
pub mod feedback;
pub mod fused;
pub mod models;
mod outcome;
pub mod pipeline;
pub mod plan;
pub mod project;
pub mod redis_conn;
pub mod retrain;
pub mod router;
mod router_settings;
pub mod shard;
pub mod signal;
pub mod signal_comparison;
pub mod strategy;
pub mod sync;
pub mod task_metric;
pub mod traffic;
pub mod training;

pub use config::Config;
pub use error::{AutomixError, Result};
pub use models::{ModelHandle, ModelSet, UpstreamLimits};
pub use router::{BatchItem, RouteOptions, RouteOutcome, Router};
pub use task_metric::TaskMetric;

pub use automix_core as core;
pub use automix_llm as llm;
pub use automix_verify as verify;
