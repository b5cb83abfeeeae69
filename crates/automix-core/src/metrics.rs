//! Quality, cost, IBC and ΔIBC of routing decisions; the oracle; the cost–quality
//! frontier and the router metrics people compare on (AIQ, APGR, CPT).

use std::borrow::Cow;

use rustc_hash::FxHashMap;
use serde::{Deserialize, Serialize};

use crate::compat::{np_mean, np_sum};
use crate::confidence::VerifierScore;
use crate::cost::{CostModel, QueryCosts};
use crate::error::{CoreError, Result};
use crate::record::RoutingRecord;
use crate::stats::{CellSums, Cells, Columns, NO_TASK, Stats};

/// What to do with the small model's answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Decision {
    /// Return the small model's answer.
    Keep,
    /// Call the large model and return its answer.
    Escalate,
}

impl Decision {
    /// `true` for [`Decision::Escalate`].
    pub fn escalates(self) -> bool {
        self == Self::Escalate
    }

    /// From an escalate flag.
    pub fn from_escalate(escalate: bool) -> Self {
        if escalate { Self::Escalate } else { Self::Keep }
    }
}

/// Mean quality and cost of a decision vector.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Outcome {
    /// Mean score of the answers returned.
    pub quality: f64,
    /// Mean cost per query, verification included.
    pub cost: f64,
    /// Share of queries escalated.
    pub escalation_rate: f64,
}

/// The small and large model on their own.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Baseline {
    /// Mean small-model score.
    pub small_quality: f64,
    /// Mean large-model score.
    pub large_quality: f64,
    /// Mean small-model cost (no verification).
    pub small_cost: f64,
    /// Mean large-model cost (no small call, no verification).
    pub large_cost: f64,
}

impl Baseline {
    /// Whether ΔIBC means anything here: the large model must be better and dearer.
    pub fn lift_defined(&self) -> bool {
        self.large_quality > self.small_quality && self.large_cost > self.small_cost
    }
}

/// Why ΔIBC has no meaning on some data.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(tag = "reason", rename_all = "snake_case")]
pub enum LiftUndefined {
    /// The large model is not better than the small one: the baseline slope is ≤ 0
    /// and the paper's formula would flip sign.
    LargeNotBetter {
        /// Mean small-model score.
        small_quality: f64,
        /// Mean large-model score.
        large_quality: f64,
    },
    /// The large model is not dearer than the small one.
    CostsNotIncreasing {
        /// Mean small-model cost.
        small_cost: f64,
        /// Mean large-model cost.
        large_cost: f64,
    },
    /// The routed cost equals the small model's cost (zero spend, zero denominator).
    NoExtraCost,
}

impl std::fmt::Display for LiftUndefined {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::LargeNotBetter {
                small_quality,
                large_quality,
            } => write!(
                f,
                "undefined: large model ({large_quality:.4}) is not better than small ({small_quality:.4})"
            ),
            Self::CostsNotIncreasing {
                small_cost,
                large_cost,
            } => {
                write!(
                    f,
                    "undefined: large model cost ({large_cost}) is not above small ({small_cost})"
                )
            }
            Self::NoExtraCost => write!(f, "undefined: routed cost equals the small model's cost"),
        }
    }
}

/// ΔIBC of an operating point: a number, or an explicit reason it has none.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Lift {
    /// `(IBC_M − IBC_base) / IBC_base`.
    Defined(f64),
    /// No meaningful value on this data.
    Undefined(LiftUndefined),
}

impl Lift {
    /// The value when defined.
    pub fn value(self) -> Option<f64> {
        match self {
            Self::Defined(v) => Some(v),
            Self::Undefined(_) => None,
        }
    }
}

impl std::fmt::Display for Lift {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Defined(v) => write!(f, "{v:.4}"),
            Self::Undefined(u) => write!(f, "{u}"),
        }
    }
}

/// Records laid out column-wise with their costs resolved, so evaluating a candidate
/// policy is a tight loop.
#[derive(Debug, Clone)]
pub struct Dataset {
    small: Vec<f64>,
    large: Vec<f64>,
    verifier: Vec<VerifierScore>,
    costs: Vec<QueryCosts>,
    uniform_costs: Option<QueryCosts>,
    answers: Vec<Option<String>>,
    /// Task id per row (index into `task_names`, or `NO_TASK`).
    task_ids: Vec<u32>,
    /// Distinct task names, sorted.
    task_names: Vec<String>,
    baseline: Baseline,
    /// Every score is 0 or 1 (see [`Columns::binary`]).
    binary_scores: bool,
    /// The rows grouped into cells (see [`crate::stats`]): what training reads.
    cells: Cells,
}

impl Dataset {
    /// Validates `records` and resolves their costs under `cost_model`.
    pub fn new(records: &[RoutingRecord], cost_model: &CostModel) -> Result<Self> {
        if records.is_empty() {
            return Err(CoreError::Empty);
        }
        cost_model.validate()?;
        let uniform_costs = match *cost_model {
            CostModel::Relative {
                small,
                large,
                verifier,
            } => Some(QueryCosts {
                small,
                large,
                verifier,
            }),
            CostModel::PerQuery => None,
        };
        // One pass over the records (they are wide: one pass per column was memory-bound).
        let n = records.len();
        let mut small = Vec::with_capacity(n);
        let mut large = Vec::with_capacity(n);
        let mut verifier = Vec::with_capacity(n);
        // Uniform costs need no per-row column; per-query costs are resolved (and checked) here.
        let mut costs = Vec::with_capacity(if uniform_costs.is_some() { 0 } else { n });
        let mut tasks = TaskInterner::default();
        let mut task_ids = Vec::with_capacity(n);
        let mut has_answers = false;
        for (i, r) in records.iter().enumerate() {
            r.validate(i)?;
            small.push(r.small_score);
            large.push(r.large_score);
            verifier.push(r.verifier);
            if uniform_costs.is_none() {
                costs.push(cost_model.query_costs(i, r)?);
            }
            task_ids.push(tasks.id(r.task_name.as_deref()));
            has_answers |= r.small_answer.is_some();
        }
        let task_names = tasks.sort(&mut task_ids);
        let answers = if has_answers {
            records.iter().map(|r| r.small_answer.clone()).collect()
        } else {
            Vec::new()
        };
        Ok(Self::from_columns(
            small,
            large,
            verifier,
            costs,
            uniform_costs,
            answers,
            task_ids,
            task_names,
        ))
    }

    #[allow(clippy::too_many_arguments)] // the columns, named, in one private place
    fn from_columns(
        small: Vec<f64>,
        large: Vec<f64>,
        verifier: Vec<VerifierScore>,
        costs: Vec<QueryCosts>,
        uniform_costs: Option<QueryCosts>,
        answers: Vec<Option<String>>,
        task_ids: Vec<u32>,
        task_names: Vec<String>,
    ) -> Self {
        let baseline = baseline_of(&small, &large, &costs, uniform_costs);
        let is_binary = |v: &f64| *v == 0.0 || *v == 1.0;
        let binary_scores = small.iter().all(is_binary) && large.iter().all(is_binary);
        let mut data = Self {
            small,
            large,
            verifier,
            costs,
            uniform_costs,
            answers,
            task_ids,
            task_names,
            baseline,
            binary_scores,
            cells: Cells::default(),
        };
        data.cells = Cells::group(&data.columns(), |_| false);
        data
    }

    pub(crate) fn columns(&self) -> Columns<'_> {
        Columns {
            small: &self.small,
            large: &self.large,
            verifier: &self.verifier,
            task: &self.task_ids,
            costs: &self.costs,
            binary: self.binary_scores,
        }
    }

    /// The cells of these rows with `fixed_answers` marked (regrouped only when there are
    /// fixed answers: they split cells by answer).
    pub(crate) fn cells_for(&self, fixed_answers: &[String]) -> Cow<'_, Cells> {
        if fixed_answers.is_empty() || self.answers.is_empty() {
            return Cow::Borrowed(&self.cells);
        }
        Cow::Owned(Cells::group(&self.columns(), |row| {
            self.answers[row]
                .as_deref()
                .is_some_and(|a| fixed_answers.iter().any(|f| f == a))
        }))
    }

    /// The statistics training reads, for `cells` (from [`Dataset::cells_for`]).
    pub(crate) fn stats<'a>(&'a self, cells: &'a Cells) -> Stats<'a> {
        Stats {
            keys: &cells.keys,
            sums: Cow::Borrowed(&cells.sums),
            task_names: &self.task_names,
            uniform: self.uniform_costs,
        }
    }

    /// The rows of every fold of `assignment` summed per cell of `cells` (one pass).
    pub(crate) fn fold_sums(
        &self,
        cells: &Cells,
        assignment: &[usize],
        folds: usize,
    ) -> Vec<Vec<(u32, CellSums)>> {
        cells.fold_sums(&self.columns(), assignment, folds)
    }

    /// The rows at `rows` (in that order), with their own baseline: a fold of a
    /// cross-validation. Empty `rows` is an error, as for [`Dataset::new`].
    pub fn subset(&self, rows: &[usize]) -> Result<Self> {
        if rows.is_empty() {
            return Err(CoreError::Empty);
        }
        let pick = |col: &[f64]| rows.iter().map(|&i| col[i]).collect::<Vec<f64>>();
        let small = pick(&self.small);
        let large = pick(&self.large);
        let costs: Vec<QueryCosts> = if self.costs.is_empty() {
            Vec::new()
        } else {
            rows.iter().map(|&i| self.costs[i]).collect()
        };
        let answers = if self.answers.is_empty() {
            Vec::new()
        } else {
            rows.iter().map(|&i| self.answers[i].clone()).collect()
        };
        Ok(Self::from_columns(
            small,
            large,
            rows.iter().map(|&i| self.verifier[i]).collect(),
            costs,
            self.uniform_costs,
            answers,
            rows.iter().map(|&i| self.task_ids[i]).collect(),
            self.task_names.clone(),
        ))
    }

    /// Number of rows.
    pub fn len(&self) -> usize {
        self.small.len()
    }

    /// Always false: construction rejects empty input.
    pub fn is_empty(&self) -> bool {
        self.small.is_empty()
    }

    /// Small-model scores.
    pub fn small_scores(&self) -> &[f64] {
        &self.small
    }

    /// Large-model scores.
    pub fn large_scores(&self) -> &[f64] {
        &self.large
    }

    /// Verifier scores.
    pub fn verifier(&self) -> &[VerifierScore] {
        &self.verifier
    }

    /// The small model's answer of `row` (for fixed-answer routing), if recorded.
    pub fn answer(&self, row: usize) -> Option<&str> {
        self.answers.get(row).and_then(|a| a.as_deref())
    }

    /// The task of `row`, if any.
    pub fn task(&self, row: usize) -> Option<&str> {
        self.task_names
            .get(self.task_ids[row] as usize)
            .map(String::as_str)
    }

    /// The distinct task names, sorted.
    pub fn task_names(&self) -> &[String] {
        &self.task_names
    }

    /// The costs of row `row`.
    pub fn query_costs(&self, row: usize) -> QueryCosts {
        self.uniform_costs.unwrap_or_else(|| self.costs[row])
    }

    /// The small and large model alone.
    pub fn baseline(&self) -> Baseline {
        self.baseline
    }

    /// Quality, cost and escalation rate of `escalate` (one flag per row).
    pub fn evaluate(&self, escalate: &[bool]) -> Result<Outcome> {
        if escalate.len() != self.len() {
            return Err(CoreError::LengthMismatch {
                rows: self.len(),
                decisions: escalate.len(),
            });
        }
        Ok(self.evaluate_unchecked(escalate))
    }

    pub(crate) fn evaluate_unchecked(&self, escalate: &[bool]) -> Outcome {
        let n = self.len();
        let served: Vec<f64> = escalate
            .iter()
            .enumerate()
            .map(|(i, &e)| if e { self.large[i] } else { self.small[i] })
            .collect();
        let quality = np_mean(&served);
        let n_esc = escalate.iter().filter(|&&e| e).count();
        let cost = match self.uniform_costs {
            // The paper's arithmetic, kept for bit-parity: whole-count totals, then the verifier.
            Some(c) => {
                ((n - n_esc) as f64 * c.small + n_esc as f64 * (c.large + c.small)) / n as f64
                    + c.verifier
            }
            None => {
                let per: Vec<f64> = escalate
                    .iter()
                    .zip(&self.costs)
                    .map(|(&e, c)| c.small + c.verifier + if e { c.large } else { 0.0 })
                    .collect();
                np_mean(&per)
            }
        };
        Outcome {
            quality,
            cost,
            escalation_rate: n_esc as f64 / n as f64,
        }
    }

    /// ΔIBC of `outcome` against the straight line from the small to the large model.
    pub fn lift(&self, outcome: &Outcome) -> Lift {
        lift(&self.baseline, outcome)
    }

    /// The oracle: escalate exactly when the large model scores higher.
    pub fn oracle(&self) -> Vec<bool> {
        self.small
            .iter()
            .zip(&self.large)
            .map(|(s, l)| l > s)
            .collect()
    }
}

/// Task names to dense ids, in order of first appearance until [`TaskInterner::sort`].
#[derive(Default)]
struct TaskInterner<'a> {
    ids: FxHashMap<&'a str, u32>,
    names: Vec<&'a str>,
    /// The last task seen: rows usually come grouped by task.
    last: Option<(&'a str, u32)>,
}

impl<'a> TaskInterner<'a> {
    fn id(&mut self, task: Option<&'a str>) -> u32 {
        let Some(task) = task else {
            return NO_TASK;
        };
        if let Some((t, id)) = self.last
            && t == task
        {
            return id;
        }
        let next = self.names.len() as u32;
        let id = *self.ids.entry(task).or_insert(next);
        if id == next {
            self.names.push(task);
        }
        self.last = Some((task, id));
        id
    }

    /// Renumbers `ids` so that ids follow the sorted names (task order then does not depend
    /// on row order) and returns the names.
    fn sort(self, ids: &mut [u32]) -> Vec<String> {
        let mut sorted: Vec<u32> = (0..self.names.len() as u32).collect();
        sorted.sort_by_key(|&i| self.names[i as usize]);
        let mut rank = vec![0u32; self.names.len()];
        for (r, &i) in sorted.iter().enumerate() {
            rank[i as usize] = r as u32;
        }
        if rank.iter().enumerate().any(|(i, &r)| i as u32 != r) {
            for id in ids.iter_mut().filter(|id| **id != NO_TASK) {
                *id = rank[*id as usize];
            }
        }
        sorted
            .iter()
            .map(|&i| self.names[i as usize].to_owned())
            .collect()
    }
}

fn baseline_of(
    small: &[f64],
    large: &[f64],
    costs: &[QueryCosts],
    uniform: Option<QueryCosts>,
) -> Baseline {
    let (small_cost, large_cost) = match uniform {
        Some(c) => (c.small, c.large),
        None => (
            np_mean(&costs.iter().map(|c| c.small).collect::<Vec<_>>()),
            np_mean(&costs.iter().map(|c| c.large).collect::<Vec<_>>()),
        ),
    };
    Baseline {
        small_quality: np_mean(small),
        large_quality: np_mean(large),
        small_cost,
        large_cost,
    }
}

/// ΔIBC, or why it is undefined.
pub fn lift(base: &Baseline, outcome: &Outcome) -> Lift {
    if base.large_quality <= base.small_quality {
        return Lift::Undefined(LiftUndefined::LargeNotBetter {
            small_quality: base.small_quality,
            large_quality: base.large_quality,
        });
    }
    if base.large_cost <= base.small_cost {
        return Lift::Undefined(LiftUndefined::CostsNotIncreasing {
            small_cost: base.small_cost,
            large_cost: base.large_cost,
        });
    }
    if outcome.cost == base.small_cost {
        return Lift::Undefined(LiftUndefined::NoExtraCost);
    }
    let base_slope =
        (base.large_quality - base.small_quality) / (base.large_cost - base.small_cost);
    let slope = (outcome.quality - base.small_quality) / (outcome.cost - base.small_cost);
    Lift::Defined((slope - base_slope) / base_slope)
}

/// A point on the cost–quality plane.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct OperatingPoint {
    /// Mean cost.
    pub cost: f64,
    /// Mean quality.
    pub quality: f64,
    /// Share of queries sent to the large model.
    pub escalation_rate: f64,
}

impl From<Outcome> for OperatingPoint {
    fn from(o: Outcome) -> Self {
        Self {
            cost: o.cost,
            quality: o.quality,
            escalation_rate: o.escalation_rate,
        }
    }
}

/// The non-decreasing upper convex hull of `points`, sorted by cost: the best quality
/// reachable at each cost by mixing operating points.
pub fn frontier(points: &[OperatingPoint]) -> Vec<OperatingPoint> {
    let mut pts: Vec<OperatingPoint> = points
        .iter()
        .copied()
        .filter(|p| p.cost.is_finite() && p.quality.is_finite())
        .collect();
    pts.sort_by(|a, b| {
        a.cost
            .total_cmp(&b.cost)
            .then(b.quality.total_cmp(&a.quality))
    });
    let mut hull: Vec<OperatingPoint> = Vec::new();
    for p in pts {
        // Dominated: no better than the best quality already reachable more cheaply.
        if hull.last().is_some_and(|last| p.quality <= last.quality) {
            continue;
        }
        while hull.len() >= 2 {
            let a = hull[hull.len() - 2];
            let b = hull[hull.len() - 1];
            let cross = (b.cost - a.cost) * (p.quality - a.quality)
                - (b.quality - a.quality) * (p.cost - a.cost);
            if cross >= 0.0 {
                hull.pop();
            } else {
                break;
            }
        }
        hull.push(p);
    }
    hull
}

/// Quality of the frontier at `cost` (linear between hull points, flat after the
/// last one); `None` below the cheapest point.
pub fn frontier_quality_at(hull: &[OperatingPoint], cost: f64) -> Option<f64> {
    let first = hull.first()?;
    if cost < first.cost {
        return None;
    }
    for w in hull.windows(2) {
        if cost <= w[1].cost {
            let t = if w[1].cost > w[0].cost {
                (cost - w[0].cost) / (w[1].cost - w[0].cost)
            } else {
                1.0
            };
            return Some(w[0].quality + t * (w[1].quality - w[0].quality));
        }
    }
    hull.last().map(|p| p.quality)
}

/// Router metrics over a set of operating points.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct FrontierMetrics {
    /// AIQ: area under the frontier over `[cost_min, cost_max]`, divided by the range
    /// (so it reads as a mean quality).
    pub aiq: f64,
    /// APGR: mean share of the small→large quality gap recovered over the cost range.
    pub apgr: Option<f64>,
    /// CPT(50%): least escalation rate among points recovering half the gap.
    pub cpt50: Option<f64>,
    /// CPT(80%).
    pub cpt80: Option<f64>,
}

/// AIQ, APGR and CPT of `points` against `base` over `[cost_min, cost_max]`.
pub fn frontier_metrics(
    points: &[OperatingPoint],
    base: &Baseline,
    cost_min: f64,
    cost_max: f64,
) -> FrontierMetrics {
    const STEPS: usize = 200;
    let hull = frontier(points);
    let gap = base.large_quality - base.small_quality;
    let span = cost_max - cost_min;
    let mut area = 0.0;
    let mut pgr = 0.0;
    if span > 0.0 {
        let samples: Vec<f64> = (0..=STEPS)
            .map(|i| {
                let c = cost_min + span * i as f64 / STEPS as f64;
                frontier_quality_at(&hull, c).unwrap_or(base.small_quality)
            })
            .collect();
        // Trapezoid rule on a uniform grid.
        area = samples.windows(2).map(|w| (w[0] + w[1]) / 2.0).sum::<f64>() / STEPS as f64;
        pgr = area - base.small_quality;
    } else if let Some(q) = frontier_quality_at(&hull, cost_min) {
        area = q;
        pgr = q - base.small_quality;
    }
    let cpt = |share: f64| -> Option<f64> {
        (gap > 0.0)
            .then(|| {
                points
                    .iter()
                    .filter(|p| (p.quality - base.small_quality) / gap >= share)
                    .map(|p| p.escalation_rate)
                    .min_by(f64::total_cmp)
            })
            .flatten()
    };
    FrontierMetrics {
        aiq: area,
        apgr: (gap > 0.0).then(|| pgr / gap),
        cpt50: cpt(0.5),
        cpt80: cpt(0.8),
    }
}

/// Mean with the core's (numpy-compatible) summation order; `None` for no values.
pub fn mean(values: &[f64]) -> Option<f64> {
    (!values.is_empty()).then(|| np_sum(values) / values.len() as f64)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::confidence::Confidence;

    fn rec(s: f64, l: f64, p: f64) -> RoutingRecord {
        RoutingRecord::new(s, l, VerifierScore::Known(Confidence::new(p).unwrap()))
    }

    #[test]
    fn never_escalate_costs_small_plus_verifier() {
        let d = Dataset::new(
            &[rec(1.0, 1.0, 0.5), rec(0.0, 1.0, 0.2)],
            &CostModel::default(),
        )
        .unwrap();
        let o = d.evaluate(&[false, false]).unwrap();
        assert_eq!(o.cost, 2.0);
        assert_eq!(o.quality, 0.5);
        let o = d.evaluate(&[true, true]).unwrap();
        assert_eq!(o.cost, 52.0);
        assert_eq!(o.quality, 1.0);
    }

    #[test]
    fn lift_undefined_when_large_not_better() {
        let d = Dataset::new(
            &[rec(1.0, 0.0, 0.5), rec(0.0, 0.0, 0.2)],
            &CostModel::default(),
        )
        .unwrap();
        let o = d.evaluate(&[true, false]).unwrap();
        assert!(matches!(
            d.lift(&o),
            Lift::Undefined(LiftUndefined::LargeNotBetter { .. })
        ));
    }

    #[test]
    fn lift_undefined_for_equal_costs() {
        let costs = CostModel::Relative {
            small: 1.0,
            large: 1.0,
            verifier: 0.0,
        };
        let d = Dataset::new(&[rec(0.0, 1.0, 0.5)], &costs).unwrap();
        let o = d.evaluate(&[true]).unwrap();
        assert!(matches!(
            d.lift(&o),
            Lift::Undefined(LiftUndefined::CostsNotIncreasing { .. })
        ));
    }

    #[test]
    fn empty_and_nan_are_errors() {
        assert_eq!(
            Dataset::new(&[], &CostModel::default()).err(),
            Some(CoreError::Empty)
        );
        let err = Dataset::new(&[rec(f64::NAN, 1.0, 0.5)], &CostModel::default()).unwrap_err();
        assert!(matches!(
            err,
            CoreError::NonFinite {
                row: 0,
                field: "small_score",
                ..
            }
        ));
    }

    #[test]
    fn frontier_is_non_decreasing_and_convex() {
        let p = |c, q| OperatingPoint {
            cost: c,
            quality: q,
            escalation_rate: 0.0,
        };
        let hull = frontier(&[
            p(1.0, 0.2),
            p(2.0, 0.5),
            p(3.0, 0.55),
            p(4.0, 0.9),
            p(5.0, 0.8),
            p(2.5, 0.1),
        ]);
        let costs: Vec<f64> = hull.iter().map(|p| p.cost).collect();
        assert_eq!(costs, vec![1.0, 2.0, 4.0]);
        assert_eq!(frontier_quality_at(&hull, 3.0), Some(0.7));
        assert_eq!(frontier_quality_at(&hull, 10.0), Some(0.9));
        assert_eq!(frontier_quality_at(&hull, 0.5), None);
    }

    #[test]
    fn frontier_metrics_on_a_straight_line() {
        let base = Baseline {
            small_quality: 0.0,
            large_quality: 1.0,
            small_cost: 0.0,
            large_cost: 1.0,
        };
        let pts = [
            OperatingPoint {
                cost: 0.0,
                quality: 0.0,
                escalation_rate: 0.0,
            },
            OperatingPoint {
                cost: 1.0,
                quality: 1.0,
                escalation_rate: 1.0,
            },
        ];
        let m = frontier_metrics(&pts, &base, 0.0, 1.0);
        assert!((m.aiq - 0.5).abs() < 1e-12);
        assert!((m.apgr.unwrap() - 0.5).abs() < 1e-12);
        assert_eq!(m.cpt50, Some(1.0));
    }
}
