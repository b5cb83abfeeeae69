//! The calibrated meta-verifier: `E[large − small | confidence, task]` fitted monotonically,
//! and an operating point chosen by K-fold cross-validation.
//!
//! With one observation and two actions the Bayes-optimal policy escalates exactly when the
//! expected gain of escalating exceeds a cut. So the model is a gain curve, not a decision
//! table:
//! - **Monotone**: the gain is fitted by isotonic regression (pool-adjacent-violators),
//!   non-increasing in the confidence. Isotonic rather than a Beta/Platt fit because it
//!   assumes nothing about the verifier's shape (k votes, a logprob, four coarse levels all
//!   work), never extrapolates, and with few rows pools into a handful of blocks by itself.
//! - **At the signal's resolution**: levels are the distinct confidences seen, so k votes
//!   keep their k + 1 values and a continuous logprob is not forced onto a grid.
//! - **Per task, shrunk**: each task's curve is fitted on its rows, then every block of it is
//!   pulled toward the pooled curve by κ pseudo-rows and made monotone again. Without
//!   shrinkage per-task fits over-fit small tasks; with κ = ∞ the task is ignored.
//! - **Chosen out of sample**: the cut and κ are the ones whose out-of-fold decisions score
//!   best under the objective, averaged over several seeded fold assignments. In-sample
//!   selection over-fits (ΔIBC is a ratio and noisy at low spend).
//!
//! The trained rule is a confidence cut per task ([`DecisionRule::TaskCuts`]): since the
//! gain is non-increasing, "gain ≥ cut" is "confidence < x" for one x per task.

use std::collections::BTreeMap;

use rand::SeedableRng;
use rand::seq::SliceRandom;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use std::borrow::Cow;

use crate::confidence::VerifierScore;
use crate::cost::{CostModel, QueryCosts};
use crate::error::{CoreError, Result};
use crate::methods::MethodSpec;
use crate::methods::{Candidate, MethodKind};
use crate::metrics::{Baseline, Dataset, Decision, Lift, Outcome, lift};
use crate::policy::{POLICY_FORMAT_VERSION, Policy};
use crate::rule::DecisionRule;
use crate::stats::{CellGain, CellKey, CellSums, Cells, GridGroups, Stats, Sum, Totals, escalates};
use crate::train::{
    Objective, TrainOptions, TrainingSummary, fallback_note, objective_key, objective_used,
    train_stats,
};

mod curve;
mod cv;
mod levels;
mod nested;
mod operating_point;

pub(crate) use curve::*;
pub use cv::*;
pub(crate) use levels::*;
pub(crate) use nested::*;
pub(crate) use operating_point::*;

/// Settings of the calibrated method and its cross-validation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct CalibratedConfig {
    /// Fit a curve per `task_name`, shrunk toward the pooled one.
    pub per_task: bool,
    /// Shrinkage strengths tried (pseudo-rows of the pooled curve per block of a task's
    /// curve); the pooled curve alone is always tried too.
    pub kappas: Vec<f64>,
    /// Folds of the cross-validation.
    pub folds: usize,
    /// Seeded fold assignments averaged over.
    pub repeats: usize,
    /// Seed of the first fold assignment.
    pub seed: u64,
}

impl Default for CalibratedConfig {
    fn default() -> Self {
        Self {
            per_task: false,
            kappas: vec![100.0, 30.0, 10.0, 3.0],
            folds: 5,
            repeats: 5,
            seed: 0,
        }
    }
}

impl CalibratedConfig {
    fn validate(&self) -> Result<()> {
        let bad = |name, reason: String| Err(CoreError::InvalidParameter { name, reason });
        if self.folds < 2 {
            return bad("folds", format!("{} must be >= 2", self.folds));
        }
        if self.repeats == 0 {
            return bad("repeats", "must be >= 1".into());
        }
        if let Some(k) = self.kappas.iter().find(|k| !(k.is_finite() && **k >= 0.0)) {
            return bad("kappas", format!("{k} must be a finite number >= 0"));
        }
        Ok(())
    }

    /// The shrinkage settings tried: pooled first (the simplest model wins ties), then
    /// the configured κ from strong to weak.
    fn shrinkages(&self, tasks: usize) -> Vec<Option<f64>> {
        let mut out = vec![None];
        // With one task, its curve is the pooled one.
        if self.per_task && tasks > 1 {
            let mut ks = self.kappas.clone();
            ks.sort_by(|a, b| b.total_cmp(a));
            ks.dedup();
            out.extend(ks.into_iter().map(Some));
        }
        out
    }
}

/// Expected large−small gain as a non-increasing step function of the confidence.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GainCurve {
    /// Distinct confidences seen in training, ascending.
    pub levels: Vec<f64>,
    /// Fitted `E[gain]` at each level, non-increasing.
    pub gains: Vec<f64>,
}

impl GainCurve {
    /// The fitted gain at `x`: the value of the nearest level (a tie goes to the higher
    /// level, the side [`GainCurve::cut_below`] keeps).
    pub fn at(&self, x: f64) -> f64 {
        self.gains[nearest_level(&self.levels, x)]
    }

    /// The confidence below which the gain is at least `cut`: escalate when `p < x`.
    /// `0` never escalates; a value above 1 escalates everything.
    pub fn cut_below(&self, cut: f64) -> f64 {
        let k = self.gains.partition_point(|&g| g >= cut);
        if k == 0 {
            0.0
        } else if k == self.levels.len() {
            ESCALATE_ALL
        } else {
            (self.levels[k - 1] + self.levels[k]) / 2.0
        }
    }
}

/// The index of the level nearest `x` in ascending, non-empty `levels` (a tie goes to the
/// higher level).
pub(crate) fn nearest_level(levels: &[f64], x: f64) -> usize {
    nearest_level_above(levels, levels.partition_point(|&l| l < x), x)
}

/// [`nearest_level`] given `above`, the index of the first level ≥ `x` (a caller walking
/// ascending values finds it without a search).
pub(crate) fn nearest_level_above(levels: &[f64], above: usize, x: f64) -> usize {
    match above {
        0 => 0,
        u if u == levels.len() || x - levels[u - 1] < levels[u] - x => u - 1,
        u => u,
    }
}

/// A confidence cut above every probability: escalate every known confidence.
pub const ESCALATE_ALL: f64 = 2.0;

/// The pooled curve and the per-task curves.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GainModel {
    /// Fitted on every row.
    pub pooled: GainCurve,
    /// Per task, shrunk toward `pooled` (empty when fitted pooled only).
    pub tasks: BTreeMap<String, GainCurve>,
}

impl GainModel {
    /// The fitted gain at confidence `x` for `task` (the pooled curve for an unseen task).
    pub fn gain(&self, x: f64, task: Option<&str>) -> f64 {
        task.and_then(|t| self.tasks.get(t))
            .unwrap_or(&self.pooled)
            .at(x)
    }

    /// The decision rule escalating where the fitted gain is at least `cut`.
    pub fn rule(&self, cut: f64) -> DecisionRule {
        DecisionRule::TaskCuts {
            default: self.pooled.cut_below(cut),
            tasks: self
                .tasks
                .iter()
                .map(|(t, c)| (t.clone(), c.cut_below(cut)))
                .collect(),
        }
    }

    /// Every distinct fitted gain, descending.
    fn distinct_gains(&self) -> Vec<f64> {
        let mut v: Vec<f64> = self
            .pooled
            .gains
            .iter()
            .chain(self.tasks.values().flat_map(|c| c.gains.iter()))
            .copied()
            .collect();
        v.sort_by(|a, b| b.total_cmp(a));
        v.dedup();
        v
    }
}

/// What a calibrated policy keeps besides its rule: the curves and the cut, so the cut can
/// be moved (a cost knob) without refitting.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Calibration {
    /// The curves fitted on every training row.
    pub model: GainModel,
    /// The gain cut chosen by cross-validation.
    pub cut: f64,
    /// κ chosen by cross-validation; `None` for the pooled curve.
    pub kappa: Option<f64>,
    /// Cost of one escalation in the cost model's unit (the mean large-model cost of the
    /// training rows): λ = cut / unit is quality per unit of cost.
    pub unit: f64,
    /// The λ family on the training rows, from never to always escalating: what a
    /// per-request λ buys (`automix calibrate` reads it).
    pub lambdas: Vec<LambdaPoint>,
}

/// One operating point of the λ family, measured on the training rows.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct LambdaPoint {
    /// Escalate where `E[gain] ≥ λ · unit`.
    pub lambda: f64,
    /// Share of training rows escalated.
    pub escalation_rate: f64,
    /// Mean quality on the training rows.
    pub quality: f64,
    /// Mean cost on the training rows.
    pub cost: f64,
}

impl Calibration {
    /// The λ the policy was trained at.
    pub fn trained_lambda(&self) -> f64 {
        self.cut / self.unit
    }

    /// Whether to escalate a known confidence `p` of `task` at `lambda`.
    pub fn escalates_at(&self, p: f64, task: Option<&str>, lambda: f64) -> bool {
        self.model.gain(p, task) >= lambda * self.unit
    }
}

/// The λ family of `model` on `stats`: one point per distinct escalation share.
fn lambda_table(
    stats: &Stats<'_>,
    g: &GainCells,
    model: &GainModel,
    unknown: Decision,
    unit: f64,
) -> Vec<LambdaPoint> {
    let cuts: Vec<f64> = model.sweep().into_iter().map(|(cut, _)| cut).collect();
    let entries: Vec<Entry<'_>> = stats
        .sums
        .iter()
        .enumerate()
        .map(|(c, sums)| Entry {
            sums,
            forced: forced_decision(&stats.keys[c], unknown),
            predicted: g.predict(model, stats.task_names, c),
        })
        .collect();
    let outcomes = outcomes_for_cuts(entries, stats.uniform, &cuts);
    cuts.iter()
        .zip(outcomes)
        .map(|(cut, o)| LambdaPoint {
            // The "never" cut is above every gain; clamp it at 0 for a readable table.
            lambda: (cut / unit).max(0.0),
            escalation_rate: o.escalation_rate,
            quality: o.quality,
            cost: o.cost,
        })
        .collect()
}

/// The calibrated model chosen by cross-validation: the rule, the cut, the model.
#[derive(Debug, Clone, PartialEq)]
pub struct CalibratedFit {
    /// The rule to decide with.
    pub rule: DecisionRule,
    /// The gain cut (escalate where `E[gain] ≥ cut`).
    pub cut: f64,
    /// κ, or `None` for the pooled curve.
    pub kappa: Option<f64>,
    /// The model fitted on every training row.
    pub model: GainModel,
    /// What cross-validation found.
    pub cv: CvSummary,
    score: CvScore,
}

/// The cut sweep of the pooled curve fitted on every row of `data`, as candidates.
pub fn pooled_sweep(data: &Dataset) -> Result<Vec<Candidate>> {
    let cells = data.cells_for(&[]);
    pooled_sweep_stats(&data.stats(&cells))
}

/// [`pooled_sweep`] from the cells of training rows.
pub(crate) fn pooled_sweep_stats(stats: &Stats<'_>) -> Result<Vec<Candidate>> {
    let g = GainCells::new(stats, None);
    let model = g
        .fit(&CellGain::all(&stats.sums), stats.task_names, None)
        .ok_or_else(no_known_confidence)?;
    Ok(model
        .sweep()
        .into_iter()
        .map(|(cut, rule)| Candidate {
            method: MethodKind::Calibrated,
            rule,
            lambda: Some(cut),
        })
        .collect())
}

fn no_known_confidence() -> CoreError {
    CoreError::InvalidParameter {
        name: "verifier",
        reason: "no training row has a known verifier confidence".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn levels(points: &[(f64, f64, f64)]) -> Vec<Level> {
        points
            .iter()
            .map(|&(x, n, mean)| Level {
                x,
                lo: x,
                hi: x,
                n,
                gain_sum: n * mean,
            })
            .collect()
    }

    #[test]
    fn a_request_lambda_moves_the_operating_point() {
        use crate::confidence::Confidence;
        use crate::policy::QueryEvidence;
        use crate::record::RoutingRecord;
        let rows: Vec<RoutingRecord> = (0..300)
            .map(|i| {
                let p = [0.0, 0.5, 1.0][i % 3];
                let small = match i % 3 {
                    0 => 0.0,
                    1 => f64::from(u8::from(i % 2 == 0)),
                    _ => 1.0,
                };
                RoutingRecord::new(
                    small,
                    1.0,
                    VerifierScore::Known(Confidence::new(p).unwrap()),
                )
            })
            .collect();
        let spec = MethodSpec::new(MethodKind::Calibrated, 2);
        let policy = crate::train::train(
            &rows,
            &CostModel::default(),
            &spec,
            &TrainOptions::default(),
        )
        .unwrap();
        let c = policy.calibration.as_ref().unwrap();
        assert!(
            c.lambdas
                .windows(2)
                .all(|w| w[0].escalation_rate <= w[1].escalation_rate)
        );
        assert!(policy.trained_lambda().is_some());
        let at = |lambda| {
            let e = QueryEvidence {
                verifier: VerifierScore::Known(Confidence::new(0.5).unwrap()),
                task_name: None,
                small_answer: None,
            };
            policy.decide_at_lambda(&e, lambda)
        };
        // Gain 0.5 at p = 0.5; an escalation costs 50 units.
        assert_eq!(at(0.001), Ok(crate::metrics::Decision::Escalate));
        assert_eq!(at(0.1), Ok(crate::metrics::Decision::Keep));
        assert!(at(f64::NAN).is_err() && at(f64::INFINITY).is_err());
    }

    #[test]
    fn t_interval_matches_the_table_value() {
        // n = 5: t(0.975, 4) = 2.776.
        let v = [-1.0f64, -0.5, 0.0, 0.5, 1.0];
        let sd = mean_sd(&v).1;
        let (lo, hi) = t_interval(&v, 0.95).unwrap();
        assert!((hi - 2.776 * sd / 5f64.sqrt()).abs() < 1e-3 && (lo + hi).abs() < 1e-12);
        assert_eq!(t_interval(&[1.0], 0.95), None);
    }

    #[test]
    fn pav_pools_violators_into_a_non_increasing_fit() {
        let l = levels(&[(0.0, 1.0, 0.2), (0.5, 1.0, 0.6), (1.0, 2.0, 0.1)]);
        let c = fit_curve(&l).unwrap();
        assert_eq!(c.gains, vec![0.4, 0.4, 0.1]);
        // A block keeps its two ends only.
        let wide = levels(&[
            (0.0, 1.0, 0.3),
            (0.2, 1.0, 0.5),
            (0.4, 1.0, 0.7),
            (1.0, 1.0, 0.1),
        ]);
        let c = fit_curve(&wide).unwrap();
        assert_eq!(c.levels, vec![0.0, 0.4, 1.0]);
        assert_eq!(c.at(0.2), 0.5);
        assert!(c.gains.windows(2).all(|w| w[0] >= w[1]));
    }

    #[test]
    fn lookup_and_cut_agree_at_the_midpoint() {
        let c = GainCurve {
            levels: vec![0.0, 0.5, 1.0],
            gains: vec![0.5, 0.2, -0.1],
        };
        assert_eq!(c.at(0.24), 0.5);
        assert_eq!(c.at(0.25), 0.2);
        assert_eq!(c.cut_below(0.3), 0.25);
        assert_eq!(c.cut_below(0.6), 0.0);
        assert_eq!(c.cut_below(-0.5), ESCALATE_ALL);
    }

    #[test]
    fn shrinkage_moves_a_small_task_toward_the_pooled_curve() {
        let pooled = GainCurve {
            levels: vec![0.0, 1.0],
            gains: vec![0.5, 0.0],
        };
        let task = levels(&[(0.0, 2.0, 0.0), (1.0, 2.0, 0.0)]);
        let weak = shrunk_curve(&task, &pooled, 0.0).unwrap();
        let strong = shrunk_curve(&task, &pooled, 1000.0).unwrap();
        assert_eq!(weak.gains, vec![0.0, 0.0]);
        assert!((strong.gains[0] - 0.5).abs() < 0.01 && strong.gains[1].abs() < 0.01);
    }
}
