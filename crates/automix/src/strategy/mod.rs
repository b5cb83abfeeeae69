//! Routing strategies: one file per kind, all behind [`RoutingStrategy`] and all driven by
//! the one step runner in [`crate::router`]. A strategy says where a query starts and,
//! after a verified answer, whether to keep it or which model to try next; the runner does
//! the calls, applies the rules every strategy shares (verification off, `max_escalations`,
//! the last model, a start that is not verified) and builds the outcome.
//!
//! | config and policy | strategy (file) | unknown verifier score |
//! |---|---|---|
//! | no policy, or `use_pomdp_router: false` | [`threshold::Threshold`] | `hparam.unknown_confidence` |
//! | two-model policy file | [`two_model::TwoModel`] | the policy's `unknown_confidence` |
//! | `train --cascade` plan | [`cascade::Cascade`] | the table's own "unknown" observation |
//! | plan + `online_belief` | [`online::Online`] | the same, from the live table |
//! | plan + `enable_cascade: false` | [`select::Select`] (one model, nothing verified) | — |
//!
//! A new strategy is one file here: its type, how it is built from the config and policy
//! ([`build`] picks it), where it starts, how it steps and what it observes.

use std::fmt::Debug;
use std::sync::Arc;

use async_trait::async_trait;
use automix_core::belief::StepObservation;
use automix_core::calibrate::LambdaPoint;
use automix_core::cascade::CascadePolicy;
use automix_core::{Decision, VerifierScore};
use serde::Serialize;

use crate::config::Config;
use crate::error::{AutomixError, Result};
use crate::models::ModelSet;
use crate::training::RouterPolicy;

pub mod cascade;
pub mod online;
pub mod select;
pub mod threshold;
pub mod two_model;

pub use automix_core::VERDICT_CUT;
pub use online::OnlineBelief;
pub use threshold::ThresholdRule;

/// Where a query starts: a model index of the router and whether its answer is verified.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Start {
    /// Index into the router's models.
    pub model: usize,
    /// Verify its answer (false: keep it unverified).
    pub verify: bool,
}

/// The start of strategies without pre-selection: the cheapest model, verified.
pub const CHEAPEST_VERIFIED: Start = Start {
    model: 0,
    verify: true,
};

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

/// Per-route state a strategy keeps (the cascade's history and table, what an online
/// belief learns).
#[derive(Debug, Default)]
pub struct RouteState {
    pub(crate) history: Vec<(usize, usize)>,
    pub(crate) table: Option<Arc<CascadePolicy>>,
    pub(crate) observed: Vec<StepObservation>,
}

impl RouteState {
    /// What the route observed of the answer it kept (its model and verdict), when an
    /// online belief records observations.
    pub fn kept(&self) -> Option<StepObservation> {
        self.observed.last().copied()
    }
}

/// One routing strategy: where a query starts and, after each verified answer, keep or
/// where next.
#[async_trait]
pub trait RoutingStrategy: Send + Sync + Debug {
    /// A short name for logs and `train`/`serve` output (`threshold`, `cascade`, …).
    fn name(&self) -> &'static str;

    /// Where `task`'s queries start, and the λ the route runs at when the request chose one.
    fn start(
        &self,
        task: &str,
        lambda: Option<f64>,
        state: &mut RouteState,
    ) -> (Start, Option<f64>);

    /// Keep or escalate after a verified answer of one of `models` models.
    fn step(&self, e: &Evidence<'_>, models: usize, state: &mut RouteState) -> Result<Step>;

    /// Records what an online belief learns from one answer of the route (most strategies
    /// learn nothing).
    fn observe(
        &self,
        _state: &mut RouteState,
        _model: usize,
        _verdict: Option<f64>,
        _correct: Option<bool>,
    ) -> Result<()> {
        Ok(())
    }

    /// Folds a finished route into the online belief, if there is one.
    async fn finish(&self, _state: RouteState) -> Result<()> {
        Ok(())
    }

    /// The online belief, if the strategy has one.
    fn online(&self) -> Option<&Arc<OnlineBelief>> {
        None
    }

    /// The trained λ when requests may choose their own (a calibrated two-model policy, or
    /// a cascade plan with a λ family); `None` otherwise.
    fn trained_lambda(&self) -> Option<f64> {
        None
    }

    /// What a dashboard shows of this strategy's policy.
    fn view(&self) -> PolicyView {
        PolicyView {
            strategy: self.name().to_owned(),
            trained_lambda: self.trained_lambda(),
            ..PolicyView::default()
        }
    }
}

/// What a person watching the router sees of its policy: the rule, where it cuts the first
/// model's verifier score, and the trained frontier when the policy keeps one.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct PolicyView {
    /// The strategy's name.
    pub strategy: String,
    /// The rule, in words.
    pub rule: String,
    /// Where the first model's keep/escalate decision flips, pooled and per task.
    pub cuts: Vec<ScoreCut>,
    /// The trained λ family measured on the training rows (calibrated policies).
    pub frontier: Vec<LambdaPoint>,
    /// The λ a request that names none decides at.
    pub trained_lambda: Option<f64>,
    /// The λ a request may pick from (a cascade's solved grid; the frontier's λ otherwise).
    pub lambdas: Vec<f64>,
}

/// A verifier score where the decision flips, for one task (`None` = pooled / unseen tasks).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ScoreCut {
    /// The task, or `None` for the pooled rule.
    pub task: Option<String>,
    /// The scores where keep and escalate swap, ascending.
    pub at: Vec<f64>,
}

impl PolicyView {
    /// The view of a two-model `rule`: its switch points, pooled and per task.
    pub fn of_rule(strategy: &str, rule: &automix_core::DecisionRule) -> Self {
        let mut cuts = vec![ScoreCut {
            task: None,
            at: rule.switch_points(None),
        }];
        cuts.extend(rule.tasks().into_iter().map(|t| ScoreCut {
            task: Some(t.to_owned()),
            at: rule.switch_points(Some(t)),
        }));
        Self {
            strategy: strategy.to_owned(),
            rule: rule.describe(),
            cuts,
            ..Self::default()
        }
    }
}

/// Escalation to the next model in price order.
pub(crate) fn linear(
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

/// The router index of each of `wanted`, or why the policy cannot be used here.
pub(crate) fn indices(models: &ModelSet, wanted: &[String]) -> Result<Vec<usize>> {
    let names = models.names();
    wanted
        .iter()
        .map(|name| {
            names
                .iter()
                .position(|n| n == name)
                .ok_or_else(|| AutomixError::PolicyUnusable {
                    reason: format!(
                        "it is for model {name}, which is not among the router's models ({})",
                        names.join(", ")
                    ),
                })
        })
        .collect()
}

/// The strategy the config and `policy` call for over `models`, every model name in it
/// matched to a router index now. This is the one place the choice is made.
pub fn build(
    config: &Config,
    models: &ModelSet,
    policy: Option<RouterPolicy>,
    threshold: ThresholdRule,
) -> Result<Arc<dyn RoutingStrategy>> {
    let a = &config.automix;
    if !a.use_pomdp_router {
        // Honoured, not ignored: the threshold rule routes, and says why in every step.
        return Ok(Arc::new(threshold::Threshold::new(
            threshold,
            "use_pomdp_router: false",
        )));
    }
    let Some(p) = policy else {
        if a.online_belief {
            return Err(AutomixError::PolicyUnusable {
                reason: "automix.online_belief needs a policy trained with --cascade".into(),
            });
        }
        if !a.enable_cascade {
            return Err(select::needs_a_plan());
        }
        return Ok(Arc::new(threshold::Threshold::new(threshold, "no policy")));
    };
    match p.cascade {
        Some(plan) if !a.enable_cascade => {
            if a.online_belief {
                return Err(AutomixError::Setting {
                    key: "automix.enable_cascade",
                    message: "false (select mode) routes each query to one pre-selected \
                              model and learns nothing; online_belief adapts the cascade: \
                              turn one of them off"
                        .into(),
                });
            }
            Ok(Arc::new(select::Select::new(models, plan)?))
        }
        Some(plan) if a.online_belief => Ok(Arc::new(online::Online::new(config, models, plan)?)),
        Some(plan) => Ok(Arc::new(cascade::Cascade::new(models, plan)?)),
        None if !a.enable_cascade => Err(select::needs_a_plan()),
        None => Ok(Arc::new(two_model::TwoModel::new(models, p, threshold)?)),
    }
}
