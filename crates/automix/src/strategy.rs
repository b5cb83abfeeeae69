//! Routing strategies: one per kind of policy, all driven by the one step runner in
//! [`crate::router`]. A strategy says where a query starts and, after a verified answer,
//! whether to keep it or which model to try next; the runner does the calls, applies the
//! rules every strategy shares (verification off, `max_escalations`, the last model) and
//! builds the outcome.
//!
//! | policy | strategy | unknown verifier score |
//! |---|---|---|
//! | none, or `use_pomdp_router: false` | [`Strategy::Threshold`] | `hparam.unknown_confidence` |
//! | two-model policy file | [`Strategy::TwoModel`] | the policy's `unknown_confidence` |
//! | `train --cascade` plan | [`Strategy::Cascade`] | the table's own "unknown" observation |
//! | plan + `online_belief` | [`Strategy::Cascade`] with a belief | the same, from the live table |

use std::sync::{Arc, Mutex};

use automix_core::belief::{OnlineCascade, StepObservation};
use automix_core::cascade::{CascadeAction, CascadePolicy};
use automix_core::{Decision, Policy, QueryEvidence, VerifierScore};

use crate::belief_store::SharedBelief;
use crate::error::{AutomixError, Result};
use crate::sync::lock;
use crate::training::CascadePlan;

/// Where a query starts: a model index of the router and whether its answer is verified.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Start {
    /// Index into the router's models.
    pub model: usize,
    /// Verify its answer (false: keep it unverified).
    pub verify: bool,
}

/// What a strategy decided after a verified answer.
#[derive(Debug, Clone, PartialEq)]
pub struct Step {
    /// Keep, or escalate to `next`.
    pub decision: Decision,
    /// The next model and whether to verify it (when escalating).
    pub next: Option<Start>,
    /// Why, for the outcome's steps.
    pub reason: String,
    /// The λ the decision was taken at, when the policy has a λ family.
    pub lambda: Option<f64>,
}

/// What a strategy may read about the answer it decides on.
#[derive(Debug, Clone, Copy)]
pub struct Evidence<'a> {
    /// The model that answered (router index).
    pub model: usize,
    /// Its verifier score.
    pub score: VerifierScore,
    /// The query's task.
    pub task: &'a str,
    /// The answer, normalised (for fixed-answer routing).
    pub normalised_answer: &'a str,
    /// A request's own λ.
    pub lambda: Option<f64>,
}

pub use automix_core::VERDICT_CUT;

/// The threshold rule every strategy falls back to on steps its policy does not cover.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ThresholdRule {
    /// Escalate while the confidence is below this.
    pub threshold: f64,
    /// What an unknown score does.
    pub unknown: Decision,
}

impl ThresholdRule {
    fn step(&self, e: &Evidence<'_>, models: usize) -> Step {
        let (decision, reason) = match e.score.known() {
            Some(p) => (
                Decision::from_escalate(p < self.threshold),
                format!("threshold {} on the verifier score", self.threshold),
            ),
            None => (
                self.unknown,
                "unknown score: hparam.unknown_confidence".into(),
            ),
        };
        linear(decision, e.model, models, reason, None)
    }
}

/// Escalation to the next model in price order.
fn linear(
    decision: Decision,
    at: usize,
    models: usize,
    reason: String,
    lambda: Option<f64>,
) -> Step {
    let next = (decision.escalates() && at + 1 < models).then_some(Start {
        model: at + 1,
        verify: true,
    });
    Step {
        decision,
        next,
        reason,
        lambda,
    }
}

/// One routing strategy per kind of policy.
#[derive(Debug, Clone)]
pub enum Strategy {
    /// No policy: the threshold rule at every step.
    Threshold(ThresholdRule),
    /// A trained two-model policy decides at its small model; an escalation goes to its
    /// large model; other steps use the threshold rule.
    TwoModel {
        /// The trained policy.
        policy: Box<Policy>,
        /// Router index of the policy's small model.
        small: usize,
        /// Router index of its large model.
        large: usize,
        /// For steps the policy does not cover.
        fallback: ThresholdRule,
    },
    /// The N-model cascade: pre-selected start, then the solved table over the history.
    Cascade {
        /// The trained plan.
        plan: Box<CascadePlan>,
        /// The plan's table, shared by every route.
        table: Arc<CascadePolicy>,
        /// Router index of each of the plan's models.
        index: Vec<usize>,
        /// The online belief, whose live table decides when present (shared by clones).
        online: Option<Arc<OnlineBelief>>,
        /// The plan's tables over a λ grid, ascending (empty for plans without one).
        family: Vec<(f64, Arc<CascadePolicy>)>,
    },
}

/// Per-route state a strategy keeps (the cascade's history and table).
#[derive(Debug, Default)]
pub struct RouteState {
    history: Vec<(usize, usize)>,
    table: Option<Arc<CascadePolicy>>,
    observed: Vec<StepObservation>,
}

impl RouteState {
    /// What the route observed of the answer it kept (its model and verdict), when an
    /// online belief records observations.
    pub fn kept(&self) -> Option<StepObservation> {
        self.observed.last().copied()
    }
}

/// The family's table for a request λ: clamped into the solved range first (above the
/// largest solved λ is the largest's table, below the smallest the smallest's), then the
/// nearest. Clamping matters: far above the range every solved λ is equally far in `f64`
/// (1e17 − 3 == 1e17), and the nearest by distance would be the first, λ 0.
fn nearest_table(family: &[(f64, Arc<CascadePolicy>)], wanted: f64) -> (f64, Arc<CascadePolicy>) {
    let lo = family.iter().map(|f| f.0).fold(f64::INFINITY, f64::min);
    let hi = family.iter().map(|f| f.0).fold(f64::NEG_INFINITY, f64::max);
    let clamped = wanted.clamp(lo, hi);
    family
        .iter()
        .min_by(|a, b| (a.0 - clamped).abs().total_cmp(&(b.0 - clamped).abs()))
        .map(|(l, t)| (*l, Arc::clone(t)))
        .unwrap_or_else(|| (wanted, Arc::clone(&family[0].1)))
}

impl Strategy {
    /// Where `task`'s queries start, and the λ the route runs at when the request chose
    /// one (a cascade routes the whole query with the family's table nearest to it; the
    /// two-model policy applies it at its step).
    pub fn start(
        &self,
        task: &str,
        lambda: Option<f64>,
        state: &mut RouteState,
    ) -> (Start, Option<f64>) {
        match self {
            Self::Threshold(_) | Self::TwoModel { .. } => (
                Start {
                    model: 0,
                    verify: true,
                },
                None,
            ),
            Self::Cascade { index, family, .. } if lambda.is_some() && !family.is_empty() => {
                let (used, table) = nearest_table(family, lambda.unwrap_or_default());
                let start = table.start;
                state.table = Some(table);
                (
                    Start {
                        model: index[start.model],
                        verify: start.verify,
                    },
                    Some(used),
                )
            }
            Self::Cascade {
                plan,
                table,
                index,
                online,
                ..
            } => {
                let table = current_table(table, online.as_ref());
                // The online table has one global start; the plan may start per task.
                let start = match online {
                    Some(_) => table.start,
                    None => plan.start_for(task),
                };
                state.table = Some(table);
                (
                    Start {
                        model: index[start.model],
                        verify: start.verify,
                    },
                    None,
                )
            }
        }
    }

    /// Keep or escalate after a verified answer.
    pub fn step(&self, e: &Evidence<'_>, models: usize, state: &mut RouteState) -> Result<Step> {
        match self {
            Self::Threshold(rule) => Ok(rule.step(e, models)),
            Self::TwoModel {
                policy,
                small,
                large,
                fallback: _,
            } if e.model == *small => {
                let evidence = QueryEvidence {
                    verifier: e.score,
                    task_name: Some(e.task),
                    small_answer: Some(e.normalised_answer),
                };
                let reason = match e.score {
                    VerifierScore::Unknown => "unknown score: policy's unknown_confidence rule",
                    VerifierScore::Known(_) => "policy",
                };
                let (decision, reason, lambda) = match e.lambda {
                    Some(l) => (
                        policy.decide_at_lambda(&evidence, l)?,
                        format!("{reason} at the request's λ {l}"),
                        Some(l),
                    ),
                    None => (
                        policy.decide_for(&evidence),
                        reason.to_owned(),
                        policy.trained_lambda(),
                    ),
                };
                let next = decision.escalates().then_some(Start {
                    model: *large,
                    verify: true,
                });
                Ok(Step {
                    decision,
                    next,
                    reason,
                    lambda,
                })
            }
            Self::TwoModel { fallback, .. } => Ok(fallback.step(e, models)),
            Self::Cascade {
                table,
                index,
                online,
                ..
            } => {
                let plan_model = plan_index(index, e.model)?;
                let table = state
                    .table
                    .get_or_insert_with(|| current_table(table, online.as_ref()))
                    .clone();
                state
                    .history
                    .push((plan_model, table.symbol(e.score.known())));
                let action = table.decide(&state.history);
                let (decision, next) = match action {
                    CascadeAction::Keep => (Decision::Keep, None),
                    CascadeAction::EscalateTo(j) => (
                        Decision::Escalate,
                        Some(Start {
                            model: index[j],
                            verify: true,
                        }),
                    ),
                    CascadeAction::AnswerWith(j) => (
                        Decision::Escalate,
                        Some(Start {
                            model: index[j],
                            verify: false,
                        }),
                    ),
                };
                let unknown = if e.score.known().is_none() {
                    "unknown score: the table's unknown observation; "
                } else {
                    ""
                };
                Ok(Step {
                    decision,
                    next,
                    reason: format!("{unknown}cascade policy: {action:?}"),
                    lambda: None,
                })
            }
        }
    }

    /// Records what the online belief learns from one answer of the route.
    pub fn observe(
        &self,
        state: &mut RouteState,
        model: usize,
        verdict: Option<f64>,
        correct: Option<bool>,
    ) -> Result<()> {
        if let Self::Cascade {
            index,
            online: Some(_),
            ..
        } = self
        {
            state.observed.push(StepObservation {
                model: plan_index(index, model)?,
                verdict: verdict.map(|p| p >= VERDICT_CUT),
                correct,
            });
        }
        Ok(())
    }

    /// Folds a finished route into the online belief, if there is one.
    pub async fn finish(&self, state: RouteState) -> Result<()> {
        if let Self::Cascade {
            online: Some(o), ..
        } = self
        {
            o.observe(&state.observed).await?;
        }
        Ok(())
    }

    /// The online belief, if the strategy has one.
    pub fn online(&self) -> Option<&Arc<OnlineBelief>> {
        match self {
            Self::Cascade { online, .. } => online.as_ref(),
            _ => None,
        }
    }

    /// The trained λ when requests may choose their own: a calibrated two-model policy, or
    /// a cascade plan with a λ family.
    pub fn trained_lambda(&self) -> Option<f64> {
        match self {
            Self::TwoModel { policy, .. } => policy.trained_lambda(),
            Self::Cascade { table, family, .. } if !family.is_empty() => {
                Some(table.settings.lambda)
            }
            _ => None,
        }
    }
}

/// The table deciding now: the online belief's, else the plan's.
fn current_table(
    plan: &Arc<CascadePolicy>,
    online: Option<&Arc<OnlineBelief>>,
) -> Arc<CascadePolicy> {
    online.map_or_else(|| plan.clone(), |o| o.table())
}

/// The online belief of a cascade: a particle filter in this process (`belief_store:
/// memory`, the default), or counts shared by replicas through a store (`redis://…`).
#[derive(Debug)]
pub enum OnlineBelief {
    /// Particles, this process only.
    Local(Mutex<OnlineCascade>),
    /// Counts in a shared store.
    Shared(SharedBelief),
}

impl OnlineBelief {
    /// The table to route with now.
    pub fn table(&self) -> Arc<CascadePolicy> {
        match self {
            Self::Local(o) => lock(o).policy(),
            Self::Shared(s) => s.table(),
        }
    }

    /// Learns from one routed query (or one client's feedback).
    pub async fn observe(&self, observations: &[StepObservation]) -> Result<()> {
        match self {
            Self::Local(o) => Ok(lock(o).observe(observations)?),
            Self::Shared(s) => {
                s.observe(observations);
                Ok(())
            }
        }
    }
}

/// The plan's index of router model `model`. The runner only steps models the strategy sent
/// it to, so a miss is a bug in the runner, reported rather than routed on.
fn plan_index(index: &[usize], model: usize) -> Result<usize> {
    index
        .iter()
        .position(|&i| i == model)
        .ok_or_else(|| AutomixError::Internal(format!("model {model} is not in the cascade plan")))
}
