//! `train`, `eval` and `route`.

use std::io::Read;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use clap::Args;

use automix::cascade::{CascadeReport, evaluate_cascade, evaluate_cascade_resplits};
use automix::config::Config;
use automix::dataset::{QueryRow, TrainingRow, read_queries, read_training_rows};
use automix::evaluate::{EvalReport, evaluate, evaluate_resplits};
use automix::models::small_and_large;
use automix::training::{RouterPolicy, split, train_cascade_plan, train_policy};
use automix::{Router, UpstreamLimits};

use crate::{catalogue, fmt_opt, prompts};

mod calibrate;
mod eval;
mod route;
mod serve;
mod train;

pub(crate) use calibrate::*;
pub(crate) use eval::*;
pub(crate) use route::*;
pub(crate) use serve::*;
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
}

impl RowsArgs {
    /// The rows' path and the rows (of `--task` when given).
    pub fn read(&self, config: &Config) -> Result<(PathBuf, Vec<TrainingRow>)> {
        let path = self
            .rows
            .clone()
            .or_else(|| config.data_path.routing_data_train.clone())
            .context("no training rows: set data_path.routing_data_train or pass --rows")?;
        let rows = read_rows(&path, self.task.as_deref())?;
        Ok((path, rows))
    }
}

fn pair(config: &Config, rows: &[TrainingRow]) -> Result<(String, String)> {
    if let (Some(s), Some(l)) = (
        &config.model_path.engine_small,
        &config.model_path.engine_large,
    ) {
        return Ok((s.clone(), l.clone()));
    }
    let has_catalogue = config
        .data_path
        .llm_data
        .as_deref()
        .is_some_and(Path::exists);
    match has_catalogue {
        true => Ok(small_and_large(
            &catalogue(config)?,
            config.model_path.engine_small.as_deref(),
            config.model_path.engine_large.as_deref(),
        )?),
        // Without an llm_data file the rows' model order (cheapest first, as collected)
        // decides; a file that exists but is broken is an error, not this fallback.
        false => {
            eprintln!("note: no llm_data file; small and large model taken from the rows' order");
            let first = rows.first().context("no training rows")?;
            let names: Vec<&str> = first.models.iter().map(|m| m.model.as_str()).collect();
            match (names.first(), names.last()) {
                (Some(s), Some(l)) if s != l => Ok(((*s).to_owned(), (*l).to_owned())),
                _ => bail!("the rows carry fewer than two models"),
            }
        }
    }
}

/// Rows of `path`, only those of `task` when given (an unknown task is an error).
fn read_rows(path: &Path, task: Option<&str>) -> Result<Vec<TrainingRow>> {
    let mut rows = read_training_rows(path)?;
    if let Some(task) = task {
        let mut known: Vec<String> = rows.iter().map(|r| r.task_name.clone()).collect();
        known.sort_unstable();
        known.dedup();
        rows.retain(|r| r.task_name == task);
        if rows.is_empty() {
            bail!(
                "{}: no rows of task {task:?}; tasks here: {}",
                path.display(),
                known.join(", ")
            );
        }
    }
    Ok(rows)
}

/// The models of the rows, in their order (cheapest first, as collected).
fn models_in(rows: &[TrainingRow]) -> Vec<String> {
    rows.first()
        .map(|r| r.models.iter().map(|m| m.model.clone()).collect())
        .unwrap_or_default()
}

/// Costs in money are tiny: switch to scientific notation below 0.01.
fn fmt_cost(c: f64) -> String {
    if c != 0.0 && c.abs() < 0.01 {
        format!("{c:.2e}")
    } else {
        format!("{c:.3}")
    }
}

/// The router the config describes: the saved policy (with its cascade) and live models,
/// built through the one routing plan (`automix::plan`).
pub fn build_router(config: &Config, no_policy: bool, limits: UpstreamLimits) -> Result<Router> {
    let catalogue = catalogue(config)?;
    let policy = if no_policy {
        None
    } else {
        let path = config
            .policy_path()
            .context("no policy: set model_path.save_model_path or pass --no-policy")?;
        Some(
            RouterPolicy::load(path)
                .context("loading the policy (train one with `automix train`)")?,
        )
    };
    Ok(automix::plan::router(
        config,
        &catalogue,
        policy,
        prompts(config)?,
        limits,
    )?)
}
