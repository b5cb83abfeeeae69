//! The N-model cascade of a `train --cascade` plan: a pre-selected start per task, then the
//! solved table over the observation history; a request λ picks the family's table.

use std::sync::Arc;

use automix_core::Decision;
use automix_core::cascade::{CascadeAction, CascadePolicy};

use super::{Evidence, PolicyView, RouteState, RoutingStrategy, Start, Step, indices};
use crate::error::{AutomixError, Result};
use crate::models::ModelSet;
use crate::training::CascadePlan;

/// A cascade plan over the router's models.
#[derive(Debug, Clone)]
pub struct Cascade {
    plan: Box<CascadePlan>,
    /// The plan's table, shared by every route.
    table: Arc<CascadePolicy>,
    /// Router index of each of the plan's models.
    index: Vec<usize>,
    /// The plan's tables over a λ grid, ascending (empty for plans without one).
    family: Vec<(f64, Arc<CascadePolicy>)>,
    /// The plan's per-task tables at the trained λ.
    tasks: std::collections::BTreeMap<String, Arc<CascadePolicy>>,
}

impl Cascade {
    /// `plan` over `models`, every model of it matched to a router index.
    pub fn new(models: &ModelSet, plan: CascadePlan) -> Result<Self> {
        let index = indices(models, &plan.models)?;
        let family = plan
            .lambda_family
            .iter()
            .map(|t| (t.lambda, Arc::new(t.policy.clone())))
            .collect();
        let tasks = plan
            .task_policies
            .iter()
            .map(|(task, p)| (task.clone(), Arc::new(p.clone())))
            .collect();
        Ok(Self {
            tasks,
            table: Arc::new(plan.policy.clone()),
            plan: Box::new(plan),
            index,
            family,
        })
    }

    /// The plan.
    pub fn plan(&self) -> &CascadePlan {
        &self.plan
    }

    /// Router index of each of the plan's models.
    pub fn index(&self) -> &[usize] {
        &self.index
    }

    /// The start of `table` as router indices.
    pub(crate) fn start_of(&self, start: automix_core::cascade::StartChoice) -> Start {
        Start {
            model: self.index[start.model],
            verify: start.verify,
        }
    }
}

impl RoutingStrategy for Cascade {
    fn name(&self) -> &'static str {
        "cascade"
    }

    fn start(
        &self,
        task: &str,
        lambda: Option<f64>,
        state: &mut RouteState,
    ) -> (Start, Option<f64>) {
        match lambda {
            Some(wanted) if !self.family.is_empty() => {
                let (used, table) = nearest_table(&self.family, wanted);
                let start = self.start_of(table.start);
                state.table = Some(table);
                (start, Some(used))
            }
            _ => match self.tasks.get(task) {
                Some(table) => {
                    state.table = Some(table.clone());
                    (self.start_of(table.start), None)
                }
                None => {
                    state.table = Some(self.table.clone());
                    (self.start_of(self.plan.start_for(task)), None)
                }
            },
        }
    }

    fn step(&self, e: &Evidence<'_>, _models: usize, state: &mut RouteState) -> Result<Step> {
        let table = state
            .table
            .get_or_insert_with(|| self.table.clone())
            .clone();
        table_step(&table, &self.index, e, state)
    }

    fn trained_lambda(&self) -> Option<f64> {
        (!self.family.is_empty()).then_some(self.table.settings.lambda)
    }

    fn view(&self) -> PolicyView {
        PolicyView {
            strategy: self.name().to_owned(),
            rule: format!(
                "{} over {} models ({}), λ {}",
                self.kind(),
                self.plan.models.len(),
                self.plan.models.join(" → "),
                self.table.settings.lambda
            ),
            trained_lambda: self.trained_lambda(),
            lambdas: self.family.iter().map(|(l, _)| *l).collect(),
            ..PolicyView::default()
        }
    }
}

impl Cascade {
    /// What the plan's table is: a learned threshold chain (its members and cuts) or a
    /// solved table.
    fn kind(&self) -> String {
        let cv = self.plan.cross_validation.as_ref();
        match cv.and_then(|cv| cv.chain_routes()) {
            Some(chain) => format!("a threshold chain ({})", chain.cuts().join(", ")),
            None => "a solved table".to_owned(),
        }
    }
}

/// One step of a cascade table over the route's history: the answer's observation is
/// appended, and the table says keep, escalate and verify, or answer unverified.
pub(crate) fn table_step(
    table: &CascadePolicy,
    index: &[usize],
    e: &Evidence<'_>,
    state: &mut RouteState,
) -> Result<Step> {
    let plan_model = plan_index(index, e.model)?;
    state
        .history
        .push((plan_model, table.symbol(plan_model, e.score.known())));
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

/// The family's table for a request λ: clamped into the solved range first (above the
/// largest solved λ is the largest's table, below the smallest the smallest's), then the
/// nearest. Clamping matters: far above the range every solved λ is equally far in `f64`
/// (1e17 − 3 == 1e17), and the nearest by distance would be the first, λ 0.
fn nearest_table<T: Clone>(family: &[(f64, T)], wanted: f64) -> (f64, T) {
    let lo = family.iter().map(|f| f.0).fold(f64::INFINITY, f64::min);
    let hi = family.iter().map(|f| f.0).fold(f64::NEG_INFINITY, f64::max);
    let clamped = wanted.max(lo).min(hi);
    family
        .iter()
        .min_by(|a, b| (a.0 - clamped).abs().total_cmp(&(b.0 - clamped).abs()))
        .map(|(l, t)| (*l, t.clone()))
        .unwrap_or_else(|| (wanted, family[0].1.clone()))
}

/// The plan's index of router model `model`. The runner only steps models the strategy sent
/// it to, so a miss is a bug in the runner, reported rather than routed on.
pub(crate) fn plan_index(index: &[usize], model: usize) -> Result<usize> {
    index
        .iter()
        .position(|&i| i == model)
        .ok_or_else(|| AutomixError::Internal(format!("model {model} is not in the cascade plan")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_lambda_beyond_the_family_takes_the_nearest_end() {
        let family = vec![(0.0, "λ0"), (1.0, "λ1"), (3.0, "λ3")];
        assert_eq!(nearest_table(&family, 1e17), (3.0, "λ3"));
        assert_eq!(nearest_table(&family, f64::MAX), (3.0, "λ3"));
        assert_eq!(nearest_table(&family, 0.9), (1.0, "λ1"));
        assert_eq!(nearest_table(&family, 2.5), (3.0, "λ3"));
        assert_eq!(nearest_table(&family, 0.0), (0.0, "λ0"));
    }
}
