//! Select mode (`automix.enable_cascade: false`, Semantic Router's "Select Flow"): each query
//! goes to the one model the trained plan pre-selects for its task, and that model's answer
//! is returned as it is: one call, no verification, no escalation.

use automix_core::Decision;

use super::cascade::Cascade;
use super::{Evidence, RouteState, RoutingStrategy, Start, Step};
use crate::error::{AutomixError, Result};
use crate::models::ModelSet;
use crate::training::CascadePlan;

/// The plan's pre-selection, nothing else.
#[derive(Debug, Clone)]
pub struct Select {
    cascade: Cascade,
}

impl Select {
    /// `plan` over `models`.
    pub fn new(models: &ModelSet, plan: CascadePlan) -> Result<Self> {
        Ok(Self {
            cascade: Cascade::new(models, plan)?,
        })
    }
}

/// Why select mode cannot run without a cascade plan.
pub(crate) fn needs_a_plan() -> AutomixError {
    AutomixError::Setting {
        key: "automix.enable_cascade",
        message: "false (select mode) routes each query to the model a cascade plan \
                  pre-selects for its task: train one with `automix train --cascade`, or set \
                  enable_cascade: true"
            .into(),
    }
}

impl RoutingStrategy for Select {
    fn name(&self) -> &'static str {
        "select (enable_cascade: false)"
    }

    /// The plan's start for `task` (or, at a request λ, the start of the λ family's table),
    /// never verified.
    fn start(
        &self,
        task: &str,
        lambda: Option<f64>,
        state: &mut RouteState,
    ) -> (Start, Option<f64>) {
        let (chosen, used) = self.cascade.start(task, lambda, state);
        (
            Start {
                model: chosen.model,
                verify: false,
            },
            used,
        )
    }

    /// Never reached: the start is not verified, so the runner keeps its answer. Kept total
    /// anyway (keep), so a change to the runner cannot make select mode escalate.
    fn step(&self, _e: &Evidence<'_>, _models: usize, _state: &mut RouteState) -> Result<Step> {
        Ok(Step {
            decision: Decision::Keep,
            next: None,
            reason: "select mode: the pre-selected answer".into(),
            lambda: None,
        })
    }

    fn trained_lambda(&self) -> Option<f64> {
        self.cascade.trained_lambda()
    }

    fn view(&self) -> super::PolicyView {
        super::PolicyView {
            strategy: self.name().to_owned(),
            ..self.cascade.view()
        }
    }
}
