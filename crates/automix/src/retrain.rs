//! Retraining on a server's own rows that only swaps in a better policy: a candidate is
//! trained on every row, and judged by its out-of-fold decisions (each fold's rows decided
//! by a policy trained on the other folds) against the serving policy's decisions on the
//! same rows, by ΔIBC over all rows at once (pooling the folds keeps the ratio stable). The
//! candidate is saved over the serving policy only when it is strictly better; a tie, an
//! undefined ΔIBC or too few rows keep the serving one.

use std::path::Path;

use serde::Serialize;

use automix_core::{Dataset, Outcome};

use crate::config::Config;
use crate::dataset::TrainingRow;
use crate::error::Result;
use crate::evaluate::rule_flags;
use crate::training::{RouterPolicy, cost_model, method_and_options, policy_records, train_policy};

/// Folds of the out-of-fold comparison.
const FOLDS: usize = 5;

/// Fewest rows a retrain compares on (fewer: the serving policy stays, said so).
pub const MIN_ROWS: usize = 50;

/// What one retrain found.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RetrainReport {
    /// Rows compared on.
    pub rows: usize,
    /// The serving policy's ΔIBC on them (`None`: undefined).
    pub serving: Option<f64>,
    /// The candidate's out-of-fold ΔIBC on them.
    pub candidate: Option<f64>,
    /// Whether the candidate replaced the serving policy.
    pub swapped: bool,
    /// Why, in words.
    pub reason: String,
}

/// Retrains on `rows` (a shadow's) and, when the candidate is better out of fold, saves it
/// to `policy_path` (the serving policy's file, which a reload then reads).
pub fn retrain(config: &Config, rows: &[TrainingRow], policy_path: &Path) -> Result<RetrainReport> {
    let serving = RouterPolicy::load(policy_path)?;
    let (report, candidate) = compare(config, rows, &serving)?;
    if let Some(candidate) = candidate.filter(|_| report.swapped) {
        candidate.save(policy_path)?;
    }
    Ok(report)
}

/// The comparison, and the candidate trained on every row (when there were enough).
pub fn compare(
    config: &Config,
    rows: &[TrainingRow],
    serving: &RouterPolicy,
) -> Result<(RetrainReport, Option<RouterPolicy>)> {
    let (small, large) = (serving.small_model.as_str(), serving.large_model.as_str());
    let kept = |reason: String, serving, candidate| RetrainReport {
        rows: rows.len(),
        serving,
        candidate,
        swapped: false,
        reason,
    };
    if serving.cascade.is_some() {
        // A two-model candidate saved over it would drop the plan the router routes with.
        let why = "the serving policy carries a cascade plan; retraining in the server \
                   covers two-model policies (retrain with `automix train --cascade`)";
        return Ok((kept(why.into(), None, None), None));
    }
    if rows.len() < MIN_ROWS {
        let why = format!("{} rows; a retrain needs {MIN_ROWS}", rows.len());
        return Ok((kept(why, None, None), None));
    }
    let records = policy_records(rows, serving)?;
    let costs = cost_model(config);
    let (_, options) = method_and_options(config)?;
    let data = Dataset::new(&records, &costs)?;
    let serving_flags = rule_flags(&data, &serving.policy.rule, &options);
    let mut oof = vec![false; rows.len()];
    for fold in 0..FOLDS {
        let train: Vec<TrainingRow> = rows
            .iter()
            .enumerate()
            .filter(|(i, _)| i % FOLDS != fold)
            .map(|(_, r)| r.clone())
            .collect();
        let held: Vec<usize> = (0..rows.len()).filter(|i| i % FOLDS == fold).collect();
        let policy = train_policy(config, &train, small, large)?;
        // Each policy decides on its own score (a fused candidate on its fusion).
        let held_rows: Vec<TrainingRow> = held.iter().map(|&i| rows[i].clone()).collect();
        let held_records = policy_records(&held_rows, &policy)?;
        let held_data = Dataset::new(&held_records, &costs)?;
        for (j, f) in rule_flags(&held_data, &policy.policy.rule, &options)
            .into_iter()
            .enumerate()
        {
            oof[held[j]] = f;
        }
    }
    let lift = |f: &[bool]| -> Result<Option<f64>> {
        let o: Outcome = data.evaluate(f)?;
        Ok(data.lift(&o).value())
    };
    let (s, c) = (lift(&serving_flags)?, lift(&oof)?);
    let candidate = train_policy(config, rows, small, large)?;
    let report = match (s, c) {
        (Some(s), Some(c)) if c > s => RetrainReport {
            rows: rows.len(),
            serving: Some(s),
            candidate: Some(c),
            swapped: true,
            reason: format!("out of fold ΔIBC {c:.4} > serving {s:.4}"),
        },
        (Some(s), Some(c)) => kept(
            format!("out of fold ΔIBC {c:.4} ≤ serving {s:.4}"),
            Some(s),
            Some(c),
        ),
        (s, c) => kept("ΔIBC undefined on these rows".into(), s, c),
    };
    Ok((report, Some(candidate)))
}
