//! The threshold rule: escalate to the next model while the verifier's confidence is below
//! `verification_threshold`. The strategy without a policy (or with `use_pomdp_router:
//! false`), and the fallback of the two-model policy on steps it does not cover.

use automix_core::Decision;

use super::{Evidence, PolicyView, RouteState, RoutingStrategy, ScoreCut, Start, Step, linear};
use crate::error::Result;

/// The threshold rule every strategy falls back to on steps its policy does not cover.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ThresholdRule {
    /// Escalate while the confidence is below this.
    pub threshold: f64,
    /// What an unknown score does.
    pub unknown: Decision,
}

impl ThresholdRule {
    /// Keep or escalate (to the next model) on `e`.
    pub fn step(&self, e: &Evidence<'_>, models: usize) -> Step {
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

/// The threshold rule at every step, starting at the cheapest model.
#[derive(Debug, Clone)]
pub struct Threshold {
    rule: ThresholdRule,
    /// Why this strategy routes (`no policy`, `use_pomdp_router: false`), in every step.
    why: &'static str,
}

impl Threshold {
    /// The rule, and why it is the one routing.
    pub fn new(rule: ThresholdRule, why: &'static str) -> Self {
        Self { rule, why }
    }
}

impl RoutingStrategy for Threshold {
    fn name(&self) -> &'static str {
        "threshold"
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
        let mut step = self.rule.step(e, models);
        step.reason = format!("{} ({})", step.reason, self.why);
        Ok(step)
    }

    fn view(&self) -> PolicyView {
        PolicyView {
            strategy: self.name().to_owned(),
            rule: format!(
                "escalate while p < {} at every model ({})",
                self.rule.threshold, self.why
            ),
            cuts: vec![ScoreCut {
                task: None,
                at: vec![self.rule.threshold],
            }],
            ..PolicyView::default()
        }
    }
}
