//! The N-model cascade on training rows: estimate, solve, replay on held-out rows, and
//! compare with every fixed model, the simple threshold rule and the oracle.

use serde::{Deserialize, Serialize};

use automix_core::cascade::{
    CascadePolicy, CascadeRow, CascadeSettings, StartChoice, estimate_cascade, simulate_cascade,
    solve_cascade,
};

use crate::config::{Config, VerifierSignal};
use crate::dataset::TrainingRow;
use crate::error::{AutomixError, Result};
use crate::training::verifier_score;

/// Dirichlet pseudo-count of the cascade's observation model and prior.
pub const CASCADE_SMOOTHING: f64 = 1.0;

/// Cascade rows for `models` (cheapest first). Costs are money divided by `unit`, the mean
/// answer cost of the most expensive model on the training rows, so λ reads as "quality
/// given up per call of the largest model".
pub fn cascade_rows(
    rows: &[TrainingRow],
    models: &[String],
    signal: VerifierSignal,
    unit: f64,
) -> Result<Vec<CascadeRow>> {
    rows.iter()
        .map(|row| {
            let runs = models
                .iter()
                .map(|m| {
                    row.run(m).ok_or_else(|| {
                        AutomixError::Invalid(format!(
                            "row {} has no answer from model {m}",
                            row.id
                        ))
                    })
                })
                .collect::<Result<Vec<_>>>()?;
            Ok(CascadeRow {
                scores: runs.iter().map(|r| r.score).collect(),
                confidences: runs
                    .iter()
                    .map(|r| verifier_score(r.verification.as_ref(), signal).known())
                    .collect(),
                answer_costs: runs.iter().map(|r| r.cost / unit).collect(),
                verify_costs: runs
                    .iter()
                    .map(|r| r.verification.as_ref().map_or(0.0, |v| v.cost) / unit)
                    .collect(),
            })
        })
        .collect()
}

/// The cost unit: mean answer cost of the last (most expensive) model.
pub fn cost_unit(rows: &[TrainingRow], largest: &str) -> Result<f64> {
    let costs: Vec<f64> = rows
        .iter()
        .filter_map(|r| r.run(largest))
        .map(|r| r.cost)
        .collect();
    let unit = costs.iter().sum::<f64>() / costs.len().max(1) as f64;
    if unit > 0.0 && unit.is_finite() {
        Ok(unit)
    } else {
        Err(AutomixError::Invalid(format!(
            "model {largest} has no positive answer cost in the rows; costs need llm_data prices"
        )))
    }
}

/// Solver settings from the config's `automix:` block.
pub fn cascade_settings(config: &Config) -> CascadeSettings {
    CascadeSettings {
        lambda: config.automix.lambda(),
        discount: config.automix.discount_factor,
        max_escalations: config.automix.max_escalations,
        allow_jumps: true,
    }
}

/// Estimates and solves the cascade on training rows.
pub fn train_cascade(
    config: &Config,
    rows: &[TrainingRow],
    models: &[String],
) -> Result<(CascadePolicy, f64)> {
    let largest = models
        .last()
        .ok_or_else(|| AutomixError::Invalid("no cascade models".into()))?;
    let unit = cost_unit(rows, largest)?;
    let crows = cascade_rows(rows, models, config.hparam.verifier_signal, unit)?;
    let model = estimate_cascade(models, &crows, config.hparam.num_bins, CASCADE_SMOOTHING)?;
    Ok((solve_cascade(&model, cascade_settings(config))?, unit))
}

/// One line of the cascade table.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CascadeLine {
    /// What was run.
    pub name: String,
    /// Mean quality.
    pub quality: f64,
    /// Mean cost (largest-model calls).
    pub cost: f64,
    /// quality − λ·cost.
    pub net: f64,
    /// Share of queries reaching each model.
    pub reached: Vec<f64>,
}

/// The cascade evaluation.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CascadeReport {
    /// Models, cheapest first.
    pub models: Vec<String>,
    /// λ used.
    pub lambda: f64,
    /// Money per cost unit (one largest-model answer).
    pub cost_unit: f64,
    /// Where the solved policy starts.
    pub start: StartChoice,
    /// Training rows, held-out rows.
    pub rows: (usize, usize),
    /// The POMDP cascade, the threshold rule, fixed models and the oracle.
    pub lines: Vec<CascadeLine>,
}

/// Trains on `train`, replays on `test`.
pub fn evaluate_cascade(
    config: &Config,
    train: &[TrainingRow],
    test: &[TrainingRow],
    models: &[String],
) -> Result<CascadeReport> {
    let (policy, unit) = train_cascade(config, train, models)?;
    let signal = config.hparam.verifier_signal;
    let rows = cascade_rows(test, models, signal, unit)?;
    if rows.is_empty() {
        return Err(AutomixError::Invalid(
            "no held-out rows for the cascade".into(),
        ));
    }
    let lambda = policy.settings.lambda;
    let n = models.len();
    let line = |name: String, quality: f64, cost: f64, reached: Vec<f64>| CascadeLine {
        net: quality - lambda * cost,
        name,
        quality,
        cost,
        reached,
    };
    let mut lines = Vec::new();
    let out = simulate_cascade(&policy, &rows);
    lines.push(line(
        "POMDP cascade".into(),
        out.quality,
        out.cost,
        out.reached,
    ));
    // Semantic Router's simple rule: escalate to the next model while confidence < threshold.
    let threshold = config.automix.verification_threshold;
    let len = rows.len() as f64;
    let (mut q, mut c, mut reached) = (0.0, 0.0, vec![0.0; n]);
    for r in &rows {
        let mut i = 0;
        let mut escalations = 0;
        loop {
            reached[i] += 1.0 / len;
            c += r.answer_costs[i];
            if i + 1 == n || escalations >= config.automix.max_escalations {
                break;
            }
            c += r.verify_costs[i];
            let confident = r.confidences[i].is_some_and(|p| p >= threshold);
            if confident {
                break;
            }
            i += 1;
            escalations += 1;
        }
        q += r.scores[i];
    }
    lines.push(line(
        format!("threshold {threshold}"),
        q / len,
        c / len,
        reached,
    ));
    for (j, name) in models.iter().enumerate() {
        let quality = rows.iter().map(|r| r.scores[j]).sum::<f64>() / len;
        let cost = rows.iter().map(|r| r.answer_costs[j]).sum::<f64>() / len;
        let mut reached = vec![0.0; n];
        reached[j] = 1.0;
        lines.push(line(format!("only {name}"), quality, cost, reached));
    }
    // The oracle calls only the cheapest model that is right (the first one if none is).
    let (mut q, mut c, mut reached) = (0.0, 0.0, vec![0.0; n]);
    for r in &rows {
        let j = r.scores.iter().position(|s| *s >= 0.5).unwrap_or(0);
        q += r.scores.iter().copied().fold(0.0, f64::max);
        c += r.answer_costs[j];
        reached[j] += 1.0 / len;
    }
    lines.push(line("oracle".into(), q / len, c / len, reached));
    Ok(CascadeReport {
        models: models.to_vec(),
        lambda,
        cost_unit: unit,
        start: policy.start,
        rows: (train.len(), test.len()),
        lines,
    })
}
