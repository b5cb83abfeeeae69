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
use crate::stats::{CellKey, CellSums, Cells, Stats, Sum, Totals, escalates};
use crate::train::{
    Objective, TrainOptions, TrainingSummary, fallback_note, objective_key, objective_used,
    train_stats,
};

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
        let upper = self.levels.partition_point(|&l| l < x);
        let i = match upper {
            0 => 0,
            u if u == self.levels.len() || x - self.levels[u - 1] < self.levels[u] - x => u - 1,
            u => u,
        };
        self.gains[i]
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

/// Cells reduced to what the fit reads: a confidence level, a task id, in sorted orders.
struct GainCells {
    /// Known-confidence cells, sorted by (task, confidence).
    by_task: Vec<usize>,
    /// Known-confidence cells, sorted by confidence.
    by_level: Vec<usize>,
    /// Confidence per cell (NaN for an unknown one).
    x: Vec<f64>,
    task: Vec<u32>,
}

impl GainCells {
    fn new(stats: &Stats<'_>) -> Self {
        let x: Vec<f64> = stats
            .keys
            .iter()
            .map(|k| k.known().unwrap_or(f64::NAN))
            .collect();
        let task: Vec<u32> = stats.keys.iter().map(|k| k.task).collect();
        let mut by_level: Vec<usize> = (0..x.len()).filter(|&c| !x[c].is_nan()).collect();
        by_level.sort_by(|&a, &b| x[a].total_cmp(&x[b]));
        let mut by_task = by_level.clone();
        // Stable: within a task the cells stay in confidence order.
        by_task.sort_by_key(|&c| task[c]);
        Self {
            by_task,
            by_level,
            x,
            task,
        }
    }

    /// Rows with a known confidence in `sums`.
    fn known_rows(&self, sums: &[CellSums]) -> u64 {
        self.by_level.iter().map(|&c| sums[c].rows).sum()
    }

    /// Fits the model on the rows summed in `sums` (one entry per cell).
    fn fit(&self, sums: &[CellSums], names: &[String], kappa: Option<f64>) -> Option<GainModel> {
        let pooled = fit_curve(&aggregate(self.by_level.iter().copied(), self, sums))?;
        let mut tasks = BTreeMap::new();
        if let Some(kappa) = kappa {
            let mut start = 0;
            while start < self.by_task.len() {
                let t = self.task[self.by_task[start]];
                let end = start + self.by_task[start..].partition_point(|&c| self.task[c] == t);
                if let Some(name) = names.get(t as usize) {
                    let levels = aggregate(self.by_task[start..end].iter().copied(), self, sums);
                    if let Some(curve) = shrunk_curve(&levels, &pooled, kappa) {
                        tasks.insert(name.clone(), curve);
                    }
                }
                start = end;
            }
        }
        Some(GainModel { pooled, tasks })
    }

    fn predict(&self, model: &GainModel, names: &[String], cell: usize) -> f64 {
        let task = names.get(self.task[cell] as usize).map(String::as_str);
        model.gain(self.x[cell], task)
    }
}

/// Rows pooled at one confidence level.
#[derive(Debug, Clone, Copy)]
struct Level {
    x: f64,
    n: f64,
    gain_sum: f64,
}

/// Sums the gain per distinct confidence of `cells` (given in confidence order); cells of
/// other tasks or answers at the same confidence pool into one level.
fn aggregate(cells: impl Iterator<Item = usize>, g: &GainCells, sums: &[CellSums]) -> Vec<Level> {
    let mut out: Vec<(f64, u64, Sum)> = Vec::new();
    for c in cells.filter(|&c| sums[c].rows > 0) {
        match out.last_mut() {
            Some((x, n, gain)) if *x == g.x[c] => {
                *n += sums[c].rows;
                gain.merge(sums[c].gain());
            }
            _ => out.push((g.x[c], sums[c].rows, sums[c].gain())),
        }
    }
    out.into_iter()
        .map(|(x, n, gain)| Level {
            x,
            n: n as f64,
            gain_sum: gain.value(),
        })
        .collect()
}

/// A block of pooled adjacent levels: weight, weighted sum, and the levels it spans.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Block {
    pub(crate) weight: f64,
    pub(crate) sum: f64,
    pub(crate) first: usize,
    pub(crate) last: usize,
}

impl Block {
    pub(crate) fn mean(&self) -> f64 {
        self.sum / self.weight
    }
}

/// Pool-adjacent-violators for a non-increasing fit of `(weight, sum)` points in order.
pub(crate) fn pav(points: impl Iterator<Item = (f64, f64)>) -> Vec<Block> {
    let mut blocks: Vec<Block> = Vec::new();
    for (i, (weight, sum)) in points.enumerate() {
        blocks.push(Block {
            weight,
            sum,
            first: i,
            last: i,
        });
        while blocks.len() >= 2 {
            let (b, a) = (blocks[blocks.len() - 1], blocks[blocks.len() - 2]);
            if a.mean() >= b.mean() {
                break;
            }
            blocks.pop();
            let merged = blocks.last_mut().expect("two blocks were present");
            merged.weight += b.weight;
            merged.sum += b.sum;
            merged.last = b.last;
        }
    }
    blocks
}

/// The curve of `blocks` over `levels`, keeping only each block's first and last level: a
/// confidence between them has the block's gain either way, and a continuous signal would
/// otherwise put every training row's confidence in the policy file.
fn expand(blocks: &[Block], levels: &[Level]) -> GainCurve {
    let mut curve = GainCurve {
        levels: Vec::with_capacity(2 * blocks.len()),
        gains: Vec::with_capacity(2 * blocks.len()),
    };
    for b in blocks {
        let ends = if b.first == b.last {
            vec![b.first]
        } else {
            vec![b.first, b.last]
        };
        for i in ends {
            curve.levels.push(levels[i].x);
            curve.gains.push(b.mean());
        }
    }
    curve
}

fn fit_curve(levels: &[Level]) -> Option<GainCurve> {
    if levels.is_empty() {
        return None;
    }
    let blocks = pav(levels.iter().map(|l| (l.n, l.gain_sum)));
    Some(expand(&blocks, levels))
}

/// A task's monotone fit with each block pulled toward the pooled curve by `kappa`
/// pseudo-rows, then made monotone again.
fn shrunk_curve(levels: &[Level], pooled: &GainCurve, kappa: f64) -> Option<GainCurve> {
    if levels.is_empty() {
        return None;
    }
    let blocks = pav(levels.iter().map(|l| (l.n, l.gain_sum)));
    let shrunk = blocks.iter().map(|b| {
        let span = &levels[b.first..=b.last];
        let reference = span.iter().map(|l| l.n * pooled.at(l.x)).sum::<f64>() / b.weight;
        (b.weight + kappa, b.sum + kappa * reference)
    });
    let merged = pav(shrunk);
    // Blocks of blocks: map back to level indices.
    let blocks: Vec<Block> = merged
        .iter()
        .map(|m| Block {
            first: blocks[m.first].first,
            last: blocks[m.last].last,
            ..*m
        })
        .collect();
    Some(expand(&blocks, levels))
}

/// What cross-validation found, stored in the policy's training summary.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CvSummary {
    /// Folds per assignment.
    pub folds: usize,
    /// Seeded fold assignments.
    pub repeats: usize,
    /// The objective scored on the out-of-fold decisions.
    pub objective: Objective,
    /// The chosen setting's out-of-fold objective, mean over the assignments.
    pub mean: f64,
    /// Its standard deviation over the assignments.
    pub sd: f64,
    /// Its out-of-fold outcome, averaged over the assignments.
    pub outcome: Outcome,
    /// The chosen candidate, in words.
    pub chosen: String,
    /// The best out-of-fold mean of every alternative tried, for the report.
    pub alternatives: Vec<CvAlternative>,
}

/// One alternative of the cross-validated selection.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CvAlternative {
    /// What it is (e.g. `pooled`, `κ=30`, `Threshold`).
    pub name: String,
    /// Best out-of-fold objective mean.
    pub mean: f64,
    /// Its standard deviation over the assignments.
    pub sd: f64,
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

/// Seeded fold assignments: `assignments[r][row]` is the fold of `row` in repeat `r`.
pub fn fold_assignments(rows: usize, folds: usize, repeats: usize, seed: u64) -> Vec<Vec<usize>> {
    (0..repeats)
        .map(|r| {
            let mut rng = ChaCha8Rng::seed_from_u64(seed.wrapping_add(r as u64));
            let mut order: Vec<usize> = (0..rows).collect();
            order.shuffle(&mut rng);
            let mut fold = vec![0; rows];
            for (pos, row) in order.into_iter().enumerate() {
                fold[row] = pos % folds;
            }
            fold
        })
        .collect()
}

/// The decision of a cell that does not depend on a gain: fixed answers escalate, an
/// unknown confidence follows `unknown`.
fn forced_decision(key: &CellKey, unknown: Decision) -> Option<bool> {
    if key.forced {
        Some(true)
    } else {
        match key.score {
            VerifierScore::Known(_) => None,
            VerifierScore::Unknown => Some(unknown.escalates()),
        }
    }
}

/// Rows of one cell (of one fold) with the gain predicted for them.
struct Entry<'a> {
    sums: &'a CellSums,
    forced: Option<bool>,
    predicted: f64,
}

/// Out-of-fold entries of one fold assignment: each fold's cells with the gain predicted
/// by the model fitted on the other folds.
fn out_of_fold_entries<'a>(
    stats: &Stats<'_>,
    cells: &Cells,
    g: &GainCells,
    fold_sums: &'a [Vec<(u32, CellSums)>],
    kappa: Option<f64>,
    unknown: Decision,
) -> Vec<Entry<'a>> {
    let mut out = Vec::new();
    for fold in fold_sums {
        let model = g.fit(&cells.without(fold), stats.task_names, kappa);
        for (cell, sums) in fold {
            let c = *cell as usize;
            let forced = forced_decision(&stats.keys[c], unknown);
            // A known confidence without a prediction (its training folds had none)
            // escalates: the safe side.
            let predicted = match (&model, forced) {
                (Some(m), None) => g.predict(m, stats.task_names, c),
                _ => f64::NAN,
            };
            out.push(Entry {
                sums,
                forced,
                predicted,
            });
        }
    }
    out
}

/// Outcomes of "escalate where the predicted gain ≥ cut" for every cut (descending cuts),
/// in one sort and one pass over the entries.
fn outcomes_for_cuts(
    entries: Vec<Entry<'_>>,
    uniform: Option<QueryCosts>,
    cuts: &[f64],
) -> Vec<Outcome> {
    let mut totals = Totals::default();
    let mut free: Vec<Entry<'_>> = Vec::new();
    for e in entries {
        match e.forced {
            Some(escalate) => totals.add(e.sums, escalate),
            None if e.predicted.is_nan() => totals.add(e.sums, true),
            None => {
                totals.add(e.sums, false);
                free.push(e);
            }
        }
    }
    free.sort_by(|a, b| b.predicted.total_cmp(&a.predicted));
    let mut next = 0;
    cuts.iter()
        .map(|&cut| {
            while next < free.len() && free[next].predicted >= cut {
                totals.escalate_kept(free[next].sums);
                next += 1;
            }
            totals.outcome(uniform)
        })
        .collect()
}

/// The cuts tried for `model`: above every gain (never escalate), the midpoints between
/// distinct gains, and below every gain (escalate every known confidence). At most
/// `MAX_CUTS` (quantiles of the distinct gains when a continuous signal has more).
fn candidate_cuts(model: &GainModel) -> Vec<f64> {
    const MAX_CUTS: usize = 256;
    let mut gains = model.distinct_gains();
    if gains.len() > MAX_CUTS {
        let step = gains.len() as f64 / MAX_CUTS as f64;
        gains = (0..MAX_CUTS)
            .map(|i| gains[(i as f64 * step) as usize])
            .collect();
    }
    let (Some(&hi), Some(&lo)) = (gains.first(), gains.last()) else {
        return Vec::new();
    };
    let mut cuts = vec![hi + 1.0];
    cuts.extend(gains.windows(2).map(|w| (w[0] + w[1]) / 2.0));
    cuts.push(lo - 1.0);
    cuts
}

impl GainModel {
    /// Every distinct rule of the cut sweep, from never to always escalating, with the
    /// cut each stands for.
    pub fn sweep(&self) -> Vec<(f64, DecisionRule)> {
        let mut out: Vec<(f64, DecisionRule)> = Vec::new();
        for cut in candidate_cuts(self) {
            let rule = self.rule(cut);
            if out.last().is_none_or(|(_, r)| *r != rule) {
                out.push((cut, rule));
            }
        }
        out
    }
}

/// The cut sweep of the pooled curve fitted on every row of `data`, as candidates.
pub fn pooled_sweep(data: &Dataset) -> Result<Vec<Candidate>> {
    let cells = data.cells_for(&[]);
    pooled_sweep_stats(&data.stats(&cells))
}

/// [`pooled_sweep`] from the cells of training rows.
pub(crate) fn pooled_sweep_stats(stats: &Stats<'_>) -> Result<Vec<Candidate>> {
    let g = GainCells::new(stats);
    let model = g
        .fit(&stats.sums, stats.task_names, None)
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

/// Mean and standard deviation (n − 1) of `values`.
pub fn mean_sd(values: &[f64]) -> (f64, f64) {
    let n = values.len() as f64;
    let mean = values.iter().sum::<f64>() / n;
    let var = if values.len() > 1 {
        values.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / (n - 1.0)
    } else {
        0.0
    };
    (mean, var.sqrt())
}

/// The Student-t interval of the mean of `values` at `level` (e.g. 0.95); `None` with
/// fewer than two values.
pub fn t_interval(values: &[f64], level: f64) -> Option<(f64, f64)> {
    use statrs::distribution::{ContinuousCDF, StudentsT};
    if values.len() < 2 || !(0.0..1.0).contains(&level) {
        return None;
    }
    let (mean, sd) = mean_sd(values);
    let n = values.len() as f64;
    let t = StudentsT::new(0.0, 1.0, n - 1.0).ok()?;
    let half = t.inverse_cdf(0.5 + level / 2.0) * sd / n.sqrt();
    Some((mean - half, mean + half))
}

/// The averaged outcome of several assignments.
pub(crate) fn mean_outcome(outcomes: &[Outcome]) -> Outcome {
    let n = outcomes.len() as f64;
    Outcome {
        quality: outcomes.iter().map(|o| o.quality).sum::<f64>() / n,
        cost: outcomes.iter().map(|o| o.cost).sum::<f64>() / n,
        escalation_rate: outcomes.iter().map(|o| o.escalation_rate).sum::<f64>() / n,
    }
}

/// A candidate's cross-validated score: per-assignment objective values and their mean.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct CvScore {
    pub(crate) values: Vec<f64>,
    pub(crate) outcome: Outcome,
}

impl CvScore {
    /// Scores per-assignment outcomes under `objective`; `None` when infeasible or
    /// undefined in any assignment.
    pub(crate) fn of(
        base: &Baseline,
        outcomes: &[Outcome],
        objective: Objective,
        options: &TrainOptions,
    ) -> Option<Self> {
        let values = outcomes
            .iter()
            .map(|o| {
                let l: Lift = lift(base, o);
                objective_key(objective, o, l, options).map(|k| k.0)
            })
            .collect::<Option<Vec<f64>>>()?;
        Some(Self {
            values,
            outcome: mean_outcome(outcomes),
        })
    }

    pub(crate) fn mean(&self) -> f64 {
        mean_sd(&self.values).0
    }

    /// Larger is better; ties prefer the cheaper.
    pub(crate) fn beats(&self, other: &CvScore) -> bool {
        let (a, b) = (self.mean(), other.mean());
        a > b || (a == b && self.outcome.cost < other.outcome.cost)
    }
}

/// One fitted curve family of the cross-validation: κ, the model on every row, the cuts.
struct CalibratedArm {
    kappa: Option<f64>,
    model: GainModel,
    cuts: Vec<f64>,
    /// Out-of-fold outcome of every cut, per fold assignment.
    outcomes: Vec<Vec<Outcome>>,
}

/// Picks κ and the cut whose out-of-fold scores are best under `objective`.
fn choose_calibrated(
    arms: Vec<CalibratedArm>,
    base: &Baseline,
    folds: usize,
    repeats: usize,
    objective: Objective,
    options: &TrainOptions,
) -> Result<CalibratedFit> {
    let mut best: Option<(CvScore, Option<f64>, f64, GainModel)> = None;
    let mut alternatives = Vec::new();
    for arm in arms {
        let mut best_here: Option<(CvScore, f64)> = None;
        for (c, &cut) in arm.cuts.iter().enumerate() {
            let outcomes: Vec<Outcome> = arm.outcomes.iter().map(|o| o[c]).collect();
            let Some(score) = CvScore::of(base, &outcomes, objective, options) else {
                continue;
            };
            if best_here.as_ref().is_none_or(|(b, _)| score.beats(b)) {
                best_here = Some((score, cut));
            }
        }
        let Some((score, cut)) = best_here else {
            continue;
        };
        let (mean, sd) = mean_sd(&score.values);
        alternatives.push(CvAlternative {
            name: kappa_name(arm.kappa),
            mean,
            sd,
        });
        if best.as_ref().is_none_or(|(b, ..)| score.beats(b)) {
            best = Some((score, arm.kappa, cut, arm.model));
        }
    }
    let Some((score, kappa, cut, model)) = best else {
        return Err(CoreError::NoFeasibleCandidate {
            method: "Calibrated".into(),
            constraint: format!("{objective:?} out of fold"),
            min_cost: f64::NAN,
            max_cost: f64::NAN,
            min_rate: f64::NAN,
            max_rate: f64::NAN,
        });
    };
    let (mean, sd) = mean_sd(&score.values);
    let rule = model.rule(cut);
    Ok(CalibratedFit {
        cv: CvSummary {
            folds,
            repeats,
            objective,
            mean,
            sd,
            outcome: score.outcome,
            chosen: format!("{}, escalate where E[gain] ≥ {cut:.4}", kappa_name(kappa)),
            alternatives,
        },
        rule,
        cut,
        kappa,
        model,
        score,
    })
}

/// The out-of-fold outcome of `spec` (a method selected in sample) on one fold assignment:
/// trained on the other folds' cells, decided on the fold's.
fn out_of_fold_outcome(
    stats: &Stats<'_>,
    cells: &Cells,
    fold_sums: &[Vec<(u32, CellSums)>],
    spec: &MethodSpec,
    options: &TrainOptions,
) -> Result<Outcome> {
    let mut totals = Totals::default();
    for fold in fold_sums {
        let train = Stats {
            sums: Cow::Owned(cells.without(fold)),
            ..stats.clone()
        };
        let (chosen, _) = train_stats(&train, spec, options)?;
        for (cell, sums) in fold {
            let key = &stats.keys[*cell as usize];
            let escalate = escalates(
                &chosen.rule,
                key,
                stats.task(key),
                options.unknown_confidence,
            );
            totals.add(sums, escalate);
        }
    }
    Ok(totals.outcome(stats.uniform))
}

/// Out-of-fold outcomes of `spec`, one per seeded assignment of the rows to `folds` folds:
/// how a method selected in sample generalises. One pass over the rows per assignment;
/// training and scoring read only the cells.
pub fn cross_validate(
    data: &Dataset,
    spec: &MethodSpec,
    options: &TrainOptions,
    folds: usize,
    repeats: usize,
    seed: u64,
) -> Result<Vec<Outcome>> {
    if spec.kind.cross_validated() {
        return Err(CoreError::InvalidParameter {
            name: "method",
            reason: format!("{} already selects by cross-validation", spec.kind.name()),
        });
    }
    if folds < 2 || folds > data.len() {
        return Err(CoreError::InvalidParameter {
            name: "folds",
            reason: format!("{folds} must be in 2..={}", data.len()),
        });
    }
    let cells = data.cells_for(&options.fixed_answers);
    let stats = data.stats(&cells);
    fold_assignments(data.len(), folds, repeats, seed)
        .iter()
        .map(|a| {
            let fold_sums = data.fold_sums(&cells, a, folds);
            out_of_fold_outcome(&stats, &cells, &fold_sums, spec, options)
        })
        .collect()
}

/// Whether `challenger` beats `incumbent` by more than one standard error of their paired
/// per-assignment difference. `auto` keeps the calibrated model unless the paper's Threshold
/// (selected in sample, as the paper does) clearly generalises better out of fold: where the
/// two are close, the difference is selection noise, and switching on noise made `auto`
/// worse than either (measured on the development set, see the README).
fn clearly_better(challenger: &CvScore, incumbent: &CvScore) -> bool {
    let diffs: Vec<f64> = challenger
        .values
        .iter()
        .zip(&incumbent.values)
        .map(|(a, b)| a - b)
        .collect();
    let (mean, sd) = mean_sd(&diffs);
    mean > 0.0 && mean > sd / (diffs.len() as f64).sqrt()
}

/// Every κ's curves fitted on all rows, and the out-of-fold outcomes of their cuts (and of
/// the in-sample `challenger`, if any) over the seeded fold assignments: one pass over the
/// rows per assignment, shared by every κ and the challenger.
fn cross_validate_arms(
    data: &Dataset,
    (cells, stats, g): (&Cells, &Stats<'_>, &GainCells),
    config: &CalibratedConfig,
    folds: usize,
    challenger: Option<&MethodSpec>,
    options: &TrainOptions,
) -> Result<(Vec<CalibratedArm>, Vec<Outcome>)> {
    let mut arms: Vec<CalibratedArm> = config
        .shrinkages(stats.task_names.len())
        .into_iter()
        .filter_map(|kappa| {
            let model = g.fit(&stats.sums, stats.task_names, kappa)?;
            let cuts = candidate_cuts(&model);
            Some(CalibratedArm {
                kappa,
                model,
                cuts,
                outcomes: Vec::new(),
            })
        })
        .collect();
    let mut challenger_outcomes = Vec::new();
    for assignment in fold_assignments(data.len(), folds, config.repeats, config.seed) {
        let fold_sums = data.fold_sums(cells, &assignment, folds);
        for arm in &mut arms {
            let entries = out_of_fold_entries(
                stats,
                cells,
                g,
                &fold_sums,
                arm.kappa,
                options.unknown_confidence,
            );
            arm.outcomes
                .push(outcomes_for_cuts(entries, stats.uniform, &arm.cuts));
        }
        if let Some(spec) = challenger {
            challenger_outcomes.push(out_of_fold_outcome(
                stats, cells, &fold_sums, spec, options,
            )?);
        }
    }
    Ok((arms, challenger_outcomes))
}

/// Trains a cross-validated method ([`MethodKind::Calibrated`] or [`MethodKind::Auto`]):
/// one pass over the rows per fold assignment, shared by every κ and by the Threshold
/// challenger; everything else reads cells.
pub(crate) fn train_cross_validated(
    data: &Dataset,
    cost_model: &CostModel,
    spec: &MethodSpec,
    options: &TrainOptions,
) -> Result<Policy> {
    options.objective.validate()?;
    let config = &spec.calibrated;
    config.validate()?;
    let cells = data.cells_for(&options.fixed_answers);
    let stats = data.stats(&cells);
    let base = stats.baseline();
    let used = objective_used(options.objective, base.lift_defined());
    let g = GainCells::new(&stats);
    let known = g.known_rows(&stats.sums) as usize;
    if known == 0 {
        return Err(no_known_confidence());
    }
    // Fewer rows than 2 per fold cannot be cross-validated meaningfully.
    let folds = config.folds.min(known / 2).max(2);
    let threshold = MethodSpec::new(MethodKind::Threshold, spec.num_bins);
    let challenger = (spec.kind == MethodKind::Auto).then_some(&threshold);
    let (arms, threshold_outcomes) = cross_validate_arms(
        data,
        (&cells, &stats, &g),
        config,
        folds,
        challenger,
        options,
    )?;
    let fit = choose_calibrated(arms, &base, folds, config.repeats, used, options)?;
    let unit = if base.large_cost > 0.0 {
        base.large_cost
    } else {
        1.0
    };
    let calibrated = Calibrated {
        candidate: Candidate {
            method: MethodKind::Calibrated,
            rule: fit.rule.clone(),
            lambda: Some(fit.cut),
        },
        calibration: Some(Calibration {
            lambdas: lambda_table(&stats, &g, &fit.model, options.unknown_confidence, unit),
            model: fit.model.clone(),
            cut: fit.cut,
            kappa: fit.kappa,
            unit,
        }),
        cv: fit.cv.clone(),
    };
    let challenge = CvScore::of(&base, &threshold_outcomes, used, options);
    let chosen = settle(calibrated, &fit.score, challenge, || {
        Ok(train_stats(&stats, &threshold, options)?.0)
    })?;
    let train = stats.outcome_of(&chosen.candidate.rule, options.unknown_confidence);
    let oracle = stats.oracle();
    let tried = chosen.cv.alternatives.len();
    Ok(Policy {
        format_version: POLICY_FORMAT_VERSION,
        method: spec.clone(),
        chosen_component: chosen.candidate.method,
        rule: chosen.candidate.rule,
        fixed_answers: options.fixed_answers.clone(),
        unknown_confidence: options.unknown_confidence,
        costs: *cost_model,
        objective: options.objective,
        cost_constraint: options.cost_constraint,
        calibration: chosen.calibration,
        summary: TrainingSummary {
            rows: data.len(),
            candidates: tried,
            feasible: tried,
            objective_used: used,
            note: fallback_note(used, options.objective, &base, &oracle),
            train,
            train_lift: lift(&base, &train),
            baseline: base,
            oracle,
            oracle_lift: lift(&base, &oracle),
            lambda: chosen.candidate.lambda,
            cross_validation: Some(chosen.cv),
        },
    })
}

/// What a cross-validated training keeps: the rule, the curves (if calibrated), the CV record.
struct Calibrated {
    candidate: Candidate,
    calibration: Option<Calibration>,
    cv: CvSummary,
}

/// `auto`'s choice: the calibrated fit, unless the paper's Threshold (`challenge`, trained
/// by `threshold` when needed) is clearly better out of fold. Either way the challenger's
/// score is recorded among the alternatives.
fn settle(
    mut calibrated: Calibrated,
    score: &CvScore,
    challenge: Option<CvScore>,
    threshold: impl FnOnce() -> Result<Candidate>,
) -> Result<Calibrated> {
    let Some(challenge) = challenge else {
        return Ok(calibrated);
    };
    let (mean, sd) = mean_sd(&challenge.values);
    calibrated.cv.alternatives.push(CvAlternative {
        name: "Threshold".into(),
        mean,
        sd,
    });
    if !clearly_better(&challenge, score) {
        return Ok(calibrated);
    }
    let candidate = threshold()?;
    let mut cv = calibrated.cv;
    cv.mean = mean;
    cv.sd = sd;
    cv.outcome = challenge.outcome;
    cv.chosen = format!("Threshold, {}", candidate.rule.describe());
    Ok(Calibrated {
        candidate,
        calibration: None,
        cv,
    })
}

fn kappa_name(kappa: Option<f64>) -> String {
    match kappa {
        None => "pooled".into(),
        Some(k) => format!("per task, κ={k}"),
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
