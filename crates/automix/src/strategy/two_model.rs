//! A trained two-model policy (the paper's meta-verifiers, `Calibrated`, `auto`): it decides
//! at its small model, an escalation goes to its large model, and steps it does not cover
//! use the threshold rule. A calibrated policy also takes a request's own λ.

use automix_core::{Policy, QueryEvidence, VerifierScore};

use super::{
    Evidence, PolicyView, RouteState, RoutingStrategy, Start, Step, ThresholdRule, indices,
};
use crate::error::{AutomixError, Result};
use crate::models::ModelSet;
use crate::training::RouterPolicy;

/// A two-model policy over the router's models.
#[derive(Debug, Clone)]
pub struct TwoModel {
    policy: Box<Policy>,
    /// Router index of the policy's large model (its small one is the router's first).
    large: usize,
    fallback: ThresholdRule,
}

impl TwoModel {
    /// `p` over `models`; refused unless its small model is the router's first (cheapest):
    /// a policy whose small model sorts elsewhere would silently never decide.
    pub fn new(models: &ModelSet, p: RouterPolicy, fallback: ThresholdRule) -> Result<Self> {
        let found = indices(models, &[p.small_model.clone(), p.large_model.clone()])?;
        if found[0] != 0 {
            return Err(AutomixError::PolicyUnusable {
                reason: format!(
                    "its small model {} is not the router's first (cheapest) model {}; models \
                     are ordered by llm_data price, then size",
                    p.small_model,
                    models.names().first().copied().unwrap_or_default()
                ),
            });
        }
        Ok(Self {
            policy: Box::new(p.policy),
            large: found[1],
            fallback,
        })
    }
}

impl RoutingStrategy for TwoModel {
    fn name(&self) -> &'static str {
        "two-model policy"
    }

    fn start(
        &self,
        _task: &str,
        _lambda: Option<f64>,
        _state: &mut RouteState,
    ) -> (Start, Option<f64>) {
        (super::CHEAPEST_VERIFIED, None)
    }

    fn step(&self, e: &Evidence<'_>, models: usize, _state: &mut RouteState) -> Result<Step> {
        if e.model != 0 {
            return Ok(self.fallback.step(e, models));
        }
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
                self.policy.decide_at_lambda(&evidence, l)?,
                format!("{reason} at the request's λ {l}"),
                Some(l),
            ),
            None => (
                self.policy.decide_for(&evidence),
                reason.to_owned(),
                self.policy.trained_lambda(),
            ),
        };
        let next = decision.escalates().then_some(Start {
            model: self.large,
            verify: true,
        });
        Ok(Step {
            decision,
            next,
            reason,
            lambda,
        })
    }

    fn trained_lambda(&self) -> Option<f64> {
        self.policy.trained_lambda()
    }

    fn view(&self) -> PolicyView {
        let frontier = self
            .policy
            .calibration
            .as_ref()
            .map(|c| c.lambdas.clone())
            .unwrap_or_default();
        PolicyView {
            trained_lambda: self.trained_lambda(),
            lambdas: frontier.iter().map(|p| p.lambda).collect(),
            frontier,
            ..PolicyView::of_rule(self.name(), &self.policy.rule)
        }
    }
}
