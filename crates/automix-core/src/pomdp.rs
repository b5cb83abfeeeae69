//! The two-model AutoMix POMDP solved exactly.
//!
//! Hidden state: the query's [`Category`]. Observation: the verifier confidence's bin.
//! `P(o | s)` and `P(s)` are estimated from training rows with Dirichlet (Laplace)
//! smoothing; the expected score of each model per state comes from the data. After one
//! observation the belief is Bayes' rule, and escalating beats keeping exactly when the
//! expected gain `Σ_s b(s | o)·(E[large | s] − E[small | s])` exceeds `λ·c_large`. Sweeping
//! λ over the breakpoints yields every Bayes-optimal decision table; the training
//! objective picks one. With `per_task_prior`, `P(s)` is estimated per `task_name`,
//! shrunk toward the global prior by `task_prior_strength` pseudo-counts.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::confidence::{Bins, VerifierScore};
use crate::error::{CoreError, Result};
use crate::methods::{Candidate, MethodKind};
use crate::metrics::Dataset;
use crate::record::Category;
use crate::rule::{DecisionRule, TableLookup};
use crate::stats::{Stats, Sum};

const STATES: usize = Category::ALL.len();

/// Settings of the exact POMDP.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct ExactPomdpConfig {
    /// Dirichlet pseudo-count added to every observation and prior cell.
    pub smoothing: f64,
    /// Condition the state prior on `task_name`.
    pub per_task_prior: bool,
    /// Pseudo-counts pulling a task's prior toward the global one.
    pub task_prior_strength: f64,
}

impl Default for ExactPomdpConfig {
    fn default() -> Self {
        Self {
            smoothing: 1.0,
            per_task_prior: false,
            task_prior_strength: 20.0,
        }
    }
}

/// The fitted model: everything the Bayes decision needs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PomdpModel {
    /// Observation bins.
    pub bins: Bins,
    /// `P(o | s)`, indexed `[state][bin]`, states in [`Category::ALL`] order.
    pub observation: Vec<Vec<f64>>,
    /// Global `P(s)`.
    pub prior: Vec<f64>,
    /// `P(s)` per task.
    pub task_priors: BTreeMap<String, Vec<f64>>,
    /// `E[large − small | s]`.
    pub gain_per_state: Vec<f64>,
}

impl PomdpModel {
    /// Fits the model on the rows with a known confidence.
    pub fn fit(config: &ExactPomdpConfig, num_bins: usize, data: &Dataset) -> Result<Self> {
        let cells = data.cells_for(&[]);
        Self::fit_stats(config, num_bins, &data.stats(&cells))
    }

    /// [`PomdpModel::fit`] from the cells of training rows.
    pub(crate) fn fit_stats(
        config: &ExactPomdpConfig,
        num_bins: usize,
        data: &Stats<'_>,
    ) -> Result<Self> {
        let bins = Bins::new(num_bins)?;
        let alpha = config.smoothing;
        if !(alpha.is_finite() && alpha > 0.0) {
            return Err(CoreError::InvalidParameter {
                name: "smoothing",
                reason: format!("{alpha} must be > 0"),
            });
        }
        let kappa = config.task_prior_strength;
        if !(kappa.is_finite() && kappa >= 0.0) {
            return Err(CoreError::InvalidParameter {
                name: "task_prior_strength",
                reason: format!("{kappa} must be >= 0"),
            });
        }
        let mut counts = vec![vec![0.0f64; bins.len()]; STATES];
        let mut state_n = [0.0f64; STATES];
        let mut gain = [Sum::default(); STATES];
        let mut task_n: BTreeMap<&str, [f64; STATES]> = BTreeMap::new();
        for (key, sums) in data.keys.iter().zip(data.sums.iter()) {
            let VerifierScore::Known(p) = key.score else {
                continue;
            };
            let bin = bins.index(p);
            for state in 0..STATES {
                let rows = sums.states[state] as f64;
                counts[state][bin] += rows;
                state_n[state] += rows;
            }
            gain[Category::Needy.index()].merge(sums.needy_gain);
            gain[Category::SmallBetter.index()].merge(sums.small_better_gain);
            if let Some(task) = data.task(key) {
                let n = task_n.entry(task).or_insert([0.0; STATES]);
                for (a, b) in n.iter_mut().zip(sums.states) {
                    *a += b as f64;
                }
            }
        }
        let gain_sum = gain.map(Sum::value);
        let total: f64 = state_n.iter().sum();
        if total == 0.0 {
            return Err(CoreError::InvalidParameter {
                name: "verifier",
                reason: "no training row has a known verifier confidence".into(),
            });
        }
        let observation = counts
            .iter()
            .zip(state_n)
            .map(|(row, n)| {
                row.iter()
                    .map(|c| (c + alpha) / (n + alpha * bins.len() as f64))
                    .collect()
            })
            .collect();
        let prior: Vec<f64> = state_n
            .iter()
            .map(|n| (n + alpha) / (total + alpha * STATES as f64))
            .collect();
        // States never seen keep the gain their definition implies.
        let default_gain = [1.0, 0.0, 0.0, -1.0];
        let gain_per_state = (0..STATES)
            .map(|s| {
                if state_n[s] > 0.0 {
                    gain_sum[s] / state_n[s]
                } else {
                    default_gain[s]
                }
            })
            .collect();
        let task_priors = if config.per_task_prior {
            task_n
                .into_iter()
                .map(|(task, n)| {
                    let nt: f64 = n.iter().sum();
                    let p = (0..STATES)
                        .map(|s| (n[s] + kappa * prior[s]) / (nt + kappa))
                        .collect();
                    (task.to_owned(), p)
                })
                .collect()
        } else {
            BTreeMap::new()
        };
        Ok(Self {
            bins,
            observation,
            prior,
            task_priors,
            gain_per_state,
        })
    }

    /// Expected large−small gain per bin under `prior`.
    pub fn expected_gain(&self, prior: &[f64]) -> Vec<f64> {
        (0..self.bins.len())
            .map(|b| {
                let mut num = 0.0;
                let mut den = 0.0;
                for ((p, obs), gain) in prior
                    .iter()
                    .zip(&self.observation)
                    .zip(&self.gain_per_state)
                {
                    let joint = p * obs[b];
                    num += joint * gain;
                    den += joint;
                }
                if den > 0.0 { num / den } else { 0.0 }
            })
            .collect()
    }

    /// Posterior `P(s | o = bin)` under `prior`.
    pub fn belief(&self, prior: &[f64], bin: usize) -> Vec<f64> {
        let joint: Vec<f64> = (0..STATES)
            .map(|s| prior[s] * self.observation[s][bin])
            .collect();
        let z: f64 = joint.iter().sum();
        joint
            .into_iter()
            .map(|j| if z > 0.0 { j / z } else { 0.0 })
            .collect()
    }
}

/// Every Bayes-optimal table of the fitted model, from "never escalate" to "escalate
/// every bin with a non-trivial gain", in order of rising spend.
pub fn exact_pomdp_candidates(
    config: &ExactPomdpConfig,
    num_bins: usize,
    data: &Dataset,
) -> Result<Vec<Candidate>> {
    let cells = data.cells_for(&[]);
    exact_pomdp_grid(config, num_bins, &data.stats(&cells))
}

/// [`exact_pomdp_candidates`] from the cells of training rows.
pub(crate) fn exact_pomdp_grid(
    config: &ExactPomdpConfig,
    num_bins: usize,
    data: &Stats<'_>,
) -> Result<Vec<Candidate>> {
    let model = PomdpModel::fit_stats(config, num_bins, data)?;
    let global = model.expected_gain(&model.prior);
    let per_task: BTreeMap<String, Vec<f64>> = model
        .task_priors
        .iter()
        .map(|(t, p)| (t.clone(), model.expected_gain(p)))
        .collect();
    let large_cost = data.baseline().large_cost;
    let scale = if large_cost > 0.0 { large_cost } else { 1.0 };

    let mut cuts: Vec<f64> = global
        .iter()
        .chain(per_task.values().flatten())
        .copied()
        .collect();
    cuts.sort_by(|a, b| b.total_cmp(a));
    cuts.dedup();
    let lookup = TableLookup::Nearest { num_bins };
    let table = |gains: &[f64], cut: f64| gains.iter().map(|&g| g >= cut).collect::<Vec<bool>>();
    let rule_at = |cut: f64| -> DecisionRule {
        if config.per_task_prior {
            DecisionRule::TaskTables {
                default: table(&global, cut),
                tasks: per_task
                    .iter()
                    .map(|(t, g)| (t.clone(), table(g, cut)))
                    .collect(),
                lookup,
            }
        } else {
            DecisionRule::Table {
                escalate: table(&global, cut),
                lookup,
            }
        }
    };
    let mut out: Vec<Candidate> = vec![Candidate {
        method: MethodKind::ExactPomdp,
        rule: rule_at(f64::INFINITY),
        lambda: None,
    }];
    for cut in cuts {
        let rule = rule_at(cut);
        if out.last().is_some_and(|c| c.rule == rule) {
            continue;
        }
        out.push(Candidate {
            method: MethodKind::ExactPomdp,
            rule,
            lambda: Some(cut / scale),
        });
    }
    Ok(out)
}
