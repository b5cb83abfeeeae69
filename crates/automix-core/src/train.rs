//! Training: evaluate every candidate of a method on the rows and pick one under an
//! objective. Ties go to the earliest candidate in the method's own order.

use serde::{Deserialize, Serialize};

use crate::calibrate::CvSummary;
use crate::cost::CostModel;
use crate::error::{CoreError, Result};
use crate::methods::{Candidate, MethodSpec, candidates_on};
use crate::metrics::{Baseline, Dataset, Decision, Lift, Outcome, lift};
use crate::policy::{POLICY_FORMAT_VERSION, Policy};
use crate::record::RoutingRecord;
use crate::stats::{CellKey, Stats, escalates};

/// What training maximises.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Objective {
    /// ΔIBC against the small→large line (the paper). Where ΔIBC is undefined on the
    /// training data, training maximises quality (then lowers cost) and says so.
    DeltaIbc,
    /// Quality − λ·cost.
    NetUtility {
        /// λ, quality per unit of cost.
        lambda: f64,
    },
    /// Highest quality with mean cost ≤ `max_mean_cost` (ties: cheaper).
    CostBudget {
        /// Budget per query, in the cost model's unit.
        max_mean_cost: f64,
    },
    /// Highest quality with escalation rate ≤ `max_rate` (RouteLLM-style calibration).
    EscalationBudget {
        /// Largest share of queries sent to the large model.
        max_rate: f64,
    },
    /// Highest quality, then lowest cost (used when ΔIBC is undefined).
    MaxQuality,
}

/// The config's name of the objective, with its parameter: what reports print.
impl std::fmt::Display for Objective {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::DeltaIbc => write!(f, "delta_ibc"),
            Self::NetUtility { lambda } => write!(f, "net_utility, λ {lambda}"),
            Self::CostBudget { max_mean_cost } => write!(f, "cost_budget ≤ {max_mean_cost}"),
            Self::EscalationBudget { max_rate } => write!(f, "escalation_budget ≤ {max_rate}"),
            Self::MaxQuality => write!(f, "max_quality"),
        }
    }
}

impl Objective {
    pub(crate) fn validate(self) -> Result<()> {
        let bad = |name, v: f64| {
            Err(CoreError::InvalidParameter {
                name,
                reason: format!("{v} is out of range"),
            })
        };
        match self {
            Self::NetUtility { lambda } if !(lambda.is_finite() && lambda >= 0.0) => {
                bad("cost_lambda", lambda)
            }
            Self::CostBudget { max_mean_cost } if !max_mean_cost.is_finite() => {
                bad("max_mean_cost", max_mean_cost)
            }
            Self::EscalationBudget { max_rate } if !(0.0..=1.0).contains(&max_rate) => {
                bad("max_escalation_rate", max_rate)
            }
            _ => Ok(()),
        }
    }

    fn describe(self) -> String {
        match self {
            Self::DeltaIbc => "max ΔIBC".into(),
            Self::NetUtility { lambda } => format!("max quality − {lambda}·cost"),
            Self::CostBudget { max_mean_cost } => format!("mean cost ≤ {max_mean_cost}"),
            Self::EscalationBudget { max_rate } => format!("escalation rate ≤ {max_rate}"),
            Self::MaxQuality => "max quality".into(),
        }
    }
}

/// Training options beyond the method itself.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrainOptions {
    /// The objective.
    pub objective: Objective,
    /// The paper's `cost_constraint`: drop candidates whose mean cost is outside `[min, max]`.
    pub cost_constraint: Option<(f64, f64)>,
    /// What to do when the verifier gave no usable verdict.
    pub unknown_confidence: Decision,
    /// Small-model answers that always escalate (FixedAnswerRouting, e.g. "unanswerable").
    pub fixed_answers: Vec<String>,
}

impl Default for TrainOptions {
    fn default() -> Self {
        Self {
            objective: Objective::DeltaIbc,
            cost_constraint: None,
            unknown_confidence: Decision::Escalate,
            fixed_answers: Vec::new(),
        }
    }
}

/// One candidate with its training-set result.
#[derive(Debug, Clone, PartialEq)]
pub struct ScoredCandidate {
    /// The candidate.
    pub candidate: Candidate,
    /// Quality, cost and escalation rate on the training rows.
    pub outcome: Outcome,
    /// ΔIBC on the training rows.
    pub lift: Lift,
    /// Passed the cost constraint (and budget, if any).
    pub feasible: bool,
}

/// What training found, stored in the policy.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrainingSummary {
    /// Training rows.
    pub rows: usize,
    /// Candidates evaluated.
    pub candidates: usize,
    /// Candidates that met the constraints.
    pub feasible: usize,
    /// The objective actually maximised.
    pub objective_used: Objective,
    /// Why it differs from the requested one, if it does.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
    /// The chosen candidate's result on the training rows.
    pub train: Outcome,
    /// Its ΔIBC.
    pub train_lift: Lift,
    /// The small and large model alone.
    pub baseline: Baseline,
    /// The oracle on the training rows.
    pub oracle: Outcome,
    /// The oracle's ΔIBC.
    pub oracle_lift: Lift,
    /// λ of the chosen exact-POMDP table, or the gain cut of a calibrated policy.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lambda: Option<f64>,
    /// What cross-validation found (cross-validated methods).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cross_validation: Option<CvSummary>,
}

/// Escalation flags of `candidate` for every row of `data` (fixed answers escalate, an
/// unknown confidence follows `unknown`), for callers that need decisions per row.
pub fn decisions(
    data: &Dataset,
    candidate: &Candidate,
    unknown: Decision,
    fixed_answers: &[String],
) -> Vec<bool> {
    data.verifier()
        .iter()
        .enumerate()
        .map(|(row, score)| {
            let key = CellKey {
                score: *score,
                task: 0,
                forced: data
                    .answer(row)
                    .is_some_and(|a| fixed_answers.iter().any(|f| f == a)),
            };
            escalates(&candidate.rule, &key, data.task(row), unknown)
        })
        .collect()
}

/// Every candidate of `spec` scored on `data`.
pub fn score_candidates(
    spec: &MethodSpec,
    data: &Dataset,
    options: &TrainOptions,
) -> Result<Vec<ScoredCandidate>> {
    let cells = data.cells_for(&options.fixed_answers);
    score_on(spec, &data.stats(&cells), options)
}

/// Every candidate of `spec` scored on the cells of `stats`.
pub(crate) fn score_on(
    spec: &MethodSpec,
    stats: &Stats<'_>,
    options: &TrainOptions,
) -> Result<Vec<ScoredCandidate>> {
    options.objective.validate()?;
    let all = candidates_on(spec, stats)?;
    let base = stats.baseline();
    Ok(all
        .into_iter()
        .map(|candidate| {
            let outcome = stats.outcome_of(&candidate.rule, options.unknown_confidence);
            let lift = lift(&base, &outcome);
            let feasible = feasible(&outcome, options);
            ScoredCandidate {
                candidate,
                outcome,
                lift,
                feasible,
            }
        })
        .collect())
}

fn feasible(o: &Outcome, options: &TrainOptions) -> bool {
    let within = options
        .cost_constraint
        .is_none_or(|(lo, hi)| !(o.cost < lo || o.cost > hi));
    let budget = match options.objective {
        Objective::CostBudget { max_mean_cost } => o.cost <= max_mean_cost,
        Objective::EscalationBudget { max_rate } => o.escalation_rate <= max_rate,
        _ => true,
    };
    within && budget
}

/// The comparison key of an outcome under `used` (lexicographic, larger is better);
/// `None` where the objective is undefined.
fn key_of(used: Objective, o: &Outcome, lift: Lift) -> Option<(f64, f64)> {
    match used {
        Objective::DeltaIbc => lift.value().map(|v| (v, 0.0)),
        Objective::NetUtility { lambda } => Some((o.quality - lambda * o.cost, 0.0)),
        Objective::CostBudget { .. }
        | Objective::EscalationBudget { .. }
        | Objective::MaxQuality => Some((o.quality, -o.cost)),
    }
}

/// [`key_of`] for a feasible outcome, `None` for an infeasible one.
pub(crate) fn objective_key(
    used: Objective,
    o: &Outcome,
    lift: Lift,
    options: &TrainOptions,
) -> Option<(f64, f64)> {
    if feasible(o, options) {
        key_of(used, o, lift).filter(|k| !k.0.is_nan())
    } else {
        None
    }
}

/// The objective maximised: ΔIBC falls back to max quality where it is undefined.
pub(crate) fn objective_used(objective: Objective, base_lift_defined: bool) -> Objective {
    match objective {
        Objective::DeltaIbc if !base_lift_defined => Objective::MaxQuality,
        other => other,
    }
}

/// The index of the best feasible candidate under `objective` (first wins ties), and
/// the objective actually used.
pub fn select(
    scored: &[ScoredCandidate],
    objective: Objective,
    base_lift_defined: bool,
) -> (Option<usize>, Objective) {
    let used = objective_used(objective, base_lift_defined);
    let mut best: Option<(usize, (f64, f64))> = None;
    for (i, s) in scored.iter().enumerate() {
        if !s.feasible {
            continue;
        }
        let Some(k) = key_of(used, &s.outcome, s.lift) else {
            continue;
        };
        if k.0.is_nan() {
            continue;
        }
        if best.is_none_or(|(_, b)| k.0 > b.0 || (k.0 == b.0 && k.1 > b.1)) {
            best = Some((i, k));
        }
    }
    (best.map(|(i, _)| i), used)
}

/// Trains `spec` on `records` and returns the policy inference uses.
pub fn train(
    records: &[RoutingRecord],
    cost_model: &CostModel,
    spec: &MethodSpec,
    options: &TrainOptions,
) -> Result<Policy> {
    let data = Dataset::new(records, cost_model)?;
    train_on(&data, cost_model, spec, options)
}

/// [`train`] on an already-built [`Dataset`]: no pass over the rows, only over its cells.
pub fn train_on(
    data: &Dataset,
    cost_model: &CostModel,
    spec: &MethodSpec,
    options: &TrainOptions,
) -> Result<Policy> {
    if spec.kind.cross_validated() {
        return crate::calibrate::train_cross_validated(data, cost_model, spec, options);
    }
    let cells = data.cells_for(&options.fixed_answers);
    let stats = data.stats(&cells);
    let (best, summary) = train_stats(&stats, spec, options)?;
    Ok(Policy {
        format_version: POLICY_FORMAT_VERSION,
        method: spec.clone(),
        chosen_component: best.method,
        rule: best.rule,
        fixed_answers: options.fixed_answers.clone(),
        unknown_confidence: options.unknown_confidence,
        costs: *cost_model,
        objective: options.objective,
        cost_constraint: options.cost_constraint,
        calibration: None,
        summary,
    })
}

/// Selects the best candidate of `spec` on `stats` (a method selected in sample).
pub(crate) fn train_stats(
    stats: &Stats<'_>,
    spec: &MethodSpec,
    options: &TrainOptions,
) -> Result<(Candidate, TrainingSummary)> {
    let scored = score_on(spec, stats, options)?;
    let base = stats.baseline();
    let oracle = stats.oracle();
    let (chosen, used) = select(&scored, options.objective, base.lift_defined());
    let Some(chosen) = chosen else {
        return Err(no_feasible(spec, &scored, options));
    };
    let best = &scored[chosen];
    let summary = TrainingSummary {
        rows: stats.rows() as usize,
        candidates: scored.len(),
        feasible: scored.iter().filter(|s| s.feasible).count(),
        objective_used: used,
        note: fallback_note(used, options.objective, &base, &oracle),
        train: best.outcome,
        train_lift: best.lift,
        baseline: base,
        oracle,
        oracle_lift: lift(&base, &oracle),
        lambda: best.candidate.lambda,
        cross_validation: None,
    };
    Ok((best.candidate.clone(), summary))
}

/// Why the objective used differs from the one asked for, if it does.
pub(crate) fn fallback_note(
    used: Objective,
    asked: Objective,
    base: &Baseline,
    oracle: &Outcome,
) -> Option<String> {
    (used != asked).then(|| {
        format!(
            "ΔIBC is {}; selected by max quality, then lower cost",
            lift(base, oracle)
        )
    })
}

/// The error when no candidate meets the constraints, with the ranges that were reachable.
fn no_feasible(spec: &MethodSpec, scored: &[ScoredCandidate], options: &TrainOptions) -> CoreError {
    let span = |f: fn(&Outcome) -> f64| {
        scored
            .iter()
            .map(|s| f(&s.outcome))
            .fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), v| {
                (a.min(v), b.max(v))
            })
    };
    let (min_cost, max_cost) = span(|o| o.cost);
    let (min_rate, max_rate) = span(|o| o.escalation_rate);
    let mut constraint = options.objective.describe();
    if let Some((lo, hi)) = options.cost_constraint {
        constraint = format!("{constraint} and cost_constraint [{lo}, {hi}]");
    }
    CoreError::NoFeasibleCandidate {
        method: spec.kind.name().into(),
        constraint,
        min_cost,
        max_cost,
        min_rate,
        max_rate,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn objectives_print_as_the_config_spells_them() {
        assert_eq!(Objective::DeltaIbc.to_string(), "delta_ibc");
        let net = Objective::NetUtility { lambda: 0.5 };
        assert_eq!(net.to_string(), "net_utility, λ 0.5");
        let rate = Objective::EscalationBudget { max_rate: 0.07 };
        assert_eq!(rate.to_string(), "escalation_budget ≤ 0.07");
    }
}
