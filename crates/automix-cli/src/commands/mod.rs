//! `train`, `eval` and `route`.

use std::io::Read;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use clap::Args;

use automix::cascade::{CascadeReport, evaluate_cascade, evaluate_cascade_resplits};
use automix::config::Config;
use automix::dataset::{QueryRow, TrainingRow, read_queries};
use automix::evaluate::{EvalReport, evaluate, evaluate_resplits};
use automix::project::{self, models_in};
use automix::training::{RouterPolicy, split};
use automix::{Router, UpstreamLimits};

use crate::fmt_opt;

mod calibrate;
mod compare_signals;
mod eval;
mod route;
mod serve;
mod traffic;
mod train;

pub(crate) use calibrate::*;
pub(crate) use eval::*;
pub(crate) use route::*;
pub(crate) use serve::*;
pub(crate) use traffic::*;
pub(crate) use train::*;

/// The training rows a command reads: the flag, else the config's path (the one
/// flag-or-config fallback of the CLI), optionally one task's.
#[derive(Args, Debug, Default)]
pub struct RowsArgs {
    /// Training rows (default: data_path.routing_data_train).
    #[arg(long)]
    pub rows: Option<PathBuf>,
    /// Only rows of this task (`task_name`).
    #[arg(long)]
    pub task: Option<String>,
    /// Only rows whose labels came from these sources (comma-separated: ground_truth,
    /// agreement, judge, feedback), e.g. shadow rows the clients corrected.
    #[arg(long, value_delimiter = ',')]
    pub label_source: Vec<String>,
}

impl RowsArgs {
    /// The rows' path and the rows (of `--task` and `--label-source` when given).
    pub fn read(&self, config: &Config) -> Result<(PathBuf, Vec<TrainingRow>)> {
        let (path, rows) =
            project::training_rows(config, self.rows.as_deref(), self.task.as_deref())?;
        if self.label_source.is_empty() {
            return Ok((path, rows));
        }
        let rows = project::with_label_sources(rows, &self.label_source, &path)?;
        Ok((path, rows))
    }
}

/// The two-model pair ([`project::model_pair`]), saying so when it came from the rows.
fn pair(config: &Config, rows: &[TrainingRow]) -> Result<(String, String)> {
    let pair = project::model_pair(config, rows)?;
    if pair.from_rows {
        eprintln!("note: no llm_data file; small and large model taken from the rows' order");
    }
    Ok((pair.small, pair.large))
}

/// Costs in money are tiny: switch to scientific notation below 0.01.
fn fmt_cost(c: f64) -> String {
    if c != 0.0 && c.abs() < 0.01 {
        format!("{c:.2e}")
    } else {
        format!("{c:.3}")
    }
}

/// The router the config describes ([`project::router`]).
pub fn build_router(config: &Config, no_policy: bool, limits: UpstreamLimits) -> Result<Router> {
    project::router(config, no_policy, limits).map_err(|e| {
        // A file that cannot be read gets the hint for that file.
        let hint = match &e {
            automix::AutomixError::Io { file, .. }
                if Some(file.as_path()) == config.policy_path() =>
            {
                Some("loading the policy (train one with `automix train`)")
            }
            automix::AutomixError::Io { file, .. }
                if Some(file.as_path()) == config.data_path.llm_data.as_deref() =>
            {
                Some("reading llm_data (for local models run `cargo xtask llms up`)")
            }
            _ => None,
        };
        match hint {
            Some(h) => anyhow::Error::new(e).context(h),
            None => e.into(),
        }
    })
}
