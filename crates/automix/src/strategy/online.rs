//! The cascade adapting online: a plan whose table is re-solved from a belief updated by
//! every routed query and every client's feedback, in this process (particles) or shared by
//! replicas through a store (counts in Redis).

use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use automix_core::belief::{BeliefConfig, ModelRates, OnlineCascade, StepObservation};
use automix_core::cascade::CascadePolicy;

use super::cascade::{Cascade, plan_index, table_step};
use super::{Evidence, RouteState, RoutingStrategy, Start, Step, VERDICT_CUT};
use crate::belief_store::{BeliefStore, RedisStore, SharedBelief, TableInputs};
use crate::config::Config;
use crate::error::{AutomixError, Result};
use crate::models::ModelSet;
use crate::sync::lock;
use crate::training::CascadePlan;

/// The online belief of a cascade: a particle filter in this process (`belief_store:
/// memory`, the default), or counts shared by replicas through a store (`redis://…`).
// One per cascade strategy, built once: the size difference between variants costs nothing.
#[allow(clippy::large_enum_variant)]
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

    /// Learns from one routed query (or one client's feedback). Never waits on a store.
    pub fn observe(&self, observations: &[StepObservation]) -> Result<()> {
        match self {
            Self::Local(o) => Ok(lock(o).observe(observations)?),
            Self::Shared(s) => {
                s.observe(observations);
                Ok(())
            }
        }
    }
}

/// A cascade plan whose live table comes from an online belief.
#[derive(Debug)]
pub struct Online {
    cascade: Cascade,
    belief: Arc<OnlineBelief>,
}

impl Online {
    /// `plan` over `models` with the belief `config` asks for, started from the plan's
    /// trained rates.
    pub fn new(config: &Config, models: &ModelSet, plan: CascadePlan) -> Result<Self> {
        // The belief re-solves a table from its rates: a plan whose cascade is a threshold
        // chain would silently stop routing by the chain it was trained to be.
        let cv = plan.cross_validation.as_ref();
        if cv.and_then(|cv| cv.chain_routes()).is_some() {
            return Err(AutomixError::Setting {
                key: "automix.online_belief",
                message: "the plan's cascade is a learned threshold chain, which an online \
                          belief would replace by a re-solved table: retrain with \
                          online_belief: true (the chain is not tried then) or turn it off"
                    .into(),
            });
        }
        let belief = Arc::new(online_belief(config, &plan)?);
        Ok(Self {
            cascade: Cascade::new(models, plan)?,
            belief,
        })
    }
}

#[async_trait]
impl RoutingStrategy for Online {
    fn name(&self) -> &'static str {
        "cascade with an online belief"
    }

    /// The live table has one global start (the plan's per-task starts are for its own
    /// table). A request λ picks from the plan's family, as without a belief.
    fn start(
        &self,
        task: &str,
        lambda: Option<f64>,
        state: &mut RouteState,
    ) -> (Start, Option<f64>) {
        if lambda.is_some() && self.cascade.trained_lambda().is_some() {
            return self.cascade.start(task, lambda, state);
        }
        let table = self.belief.table();
        let start = self.cascade.start_of(table.start);
        state.table = Some(table);
        (start, None)
    }

    fn step(&self, e: &Evidence<'_>, _models: usize, state: &mut RouteState) -> Result<Step> {
        let table = state
            .table
            .get_or_insert_with(|| self.belief.table())
            .clone();
        table_step(&table, self.cascade.index(), e, state)
    }

    fn observe(
        &self,
        state: &mut RouteState,
        model: usize,
        verdict: Option<f64>,
        correct: Option<bool>,
    ) -> Result<()> {
        state.observed.push(StepObservation {
            model: plan_index(self.cascade.index(), model)?,
            verdict: verdict.map(|p| p >= VERDICT_CUT),
            correct,
        });
        Ok(())
    }

    async fn finish(&self, state: RouteState) -> Result<()> {
        self.belief.observe(&state.observed)
    }

    fn online(&self) -> Option<&Arc<OnlineBelief>> {
        Some(&self.belief)
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

/// The online belief of `plan`, started from its trained rates: in this process, or shared
/// through the configured store.
fn online_belief(config: &Config, plan: &CascadePlan) -> Result<OnlineBelief> {
    let rates = plan
        .rates
        .as_ref()
        .ok_or_else(|| AutomixError::PolicyUnusable {
            reason: "automix.online_belief needs a policy trained with --cascade by this \
                     version (it carries the model rates the belief starts from)"
                .into(),
        })?;
    if config.automix.belief_store == "memory" {
        let local = local_belief(config, plan, rates)?;
        return Ok(OnlineBelief::Local(Mutex::new(local)));
    }
    let store = redis_store(config, plan)?;
    let m = &plan.policy.model;
    let inputs = TableInputs {
        names: plan.models.clone(),
        answer_cost: m.answer_cost.clone(),
        verify_cost: m.verify_cost.clone(),
        settings: plan.policy.settings,
        prior: rates.clone(),
    };
    Ok(OnlineBelief::Shared(SharedBelief::new(store, inputs)?))
}

/// The Redis store of `config.automix.belief_store` (checked to be a Redis URL at load).
fn redis_store(config: &Config, plan: &CascadePlan) -> Result<Arc<dyn BeliefStore>> {
    let a = &config.automix;
    let prefix = a
        .belief_key_prefix
        .clone()
        .unwrap_or_else(|| format!("automix:belief:{}", plan_fingerprint(plan)));
    let store = RedisStore::new(crate::redis_conn::from_settings(a)?, &prefix);
    Ok(Arc::new(store))
}

/// A stable name for `plan`'s shared counts: two policies never share counts.
fn plan_fingerprint(plan: &CascadePlan) -> String {
    // FNV-1a over the plan's models and trained table: stable across processes and builds.
    let text = serde_json::to_string(&(&plan.models, &plan.policy)).unwrap_or_default();
    format!("{:016x}", crate::dataset::fnv1a(text.as_bytes()))
}

/// The particle belief of `plan`, started from its trained rates.
fn local_belief(config: &Config, plan: &CascadePlan, rates: &ModelRates) -> Result<OnlineCascade> {
    let m = &plan.policy.model;
    Ok(OnlineCascade::warm(
        plan.models.clone(),
        m.answer_cost.clone(),
        m.verify_cost.clone(),
        plan.policy.settings,
        BeliefConfig {
            particles: config.automix.belief_particles,
            refresh_every: config.automix.belief_refresh_every,
            ..BeliefConfig::default()
        },
        rates,
    )?)
}
