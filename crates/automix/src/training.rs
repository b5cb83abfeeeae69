//! From training rows to the core's routing records; training and the policy file.

use std::path::Path;

use serde::{Deserialize, Serialize};

use automix_core::{
    CostModel, MethodKind, MethodSpec, Policy, QueryCosts, RoutingRecord, TrainOptions,
    VerifierScore,
};

use crate::config::{Config, CostMode, VerifierSignal};
use crate::dataset::{TrainingRow, VerificationRecord, write_atomic};
use crate::error::{AutomixError, Result};

/// Version of the router policy file.
pub const ROUTER_POLICY_VERSION: u32 = 1;

/// The saved policy: the core policy plus which models and which verifier signal it is for.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RouterPolicy {
    /// [`ROUTER_POLICY_VERSION`].
    pub format_version: u32,
    /// The small model's llm_data name.
    pub small_model: String,
    /// The large model's llm_data name.
    pub large_model: String,
    /// Which verifier score the policy reads.
    pub verifier_signal: VerifierSignal,
    /// How costs were counted in training.
    pub cost_mode: CostMode,
    /// The trained meta-verifier.
    pub policy: Policy,
    /// The N-model cascade, when trained with `--cascade`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cascade: Option<CascadePlan>,
    /// What `hparam.fuse_signals` training found; with a fitted model, the policy reads
    /// the fused confidence of those signals instead of `verifier_signal` alone.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fusion: Option<crate::fused::SignalFusion>,
    /// How the small model's verified runs were priced, under `cost_mode: tokens` (where a
    /// row's verification cost enters the objective).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub verification_pricing: Option<crate::dataset::VerificationPricing>,
}

/// A solved N-model cascade ready for the router.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CascadePlan {
    /// Models, cheapest first (llm_data names).
    pub models: Vec<String>,
    /// Money per cost unit (one answer of the largest model).
    pub cost_unit: f64,
    /// The solved decision table.
    pub policy: automix_core::cascade::CascadePolicy,
    /// Pre-selection per task (solved on that task's rows), where there were enough rows.
    #[serde(default)]
    pub task_starts: std::collections::BTreeMap<String, automix_core::cascade::StartChoice>,
    /// Per-model success and verifier rates on the training rows: where the online
    /// particle belief (`belief_particles` > 0) starts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rates: Option<automix_core::belief::ModelRates>,
    /// What the cascade's cross-validation chose, and any fallback to a single model.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cross_validation: Option<crate::cascade::CascadeCv>,
    /// Tables solved over a λ grid, ascending: a request's own λ routes with the nearest
    /// (`x-automix-lambda`, `automix route --lambda`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub lambda_family: Vec<crate::cascade::LambdaTable>,
    /// Per-task tables at the trained λ (each task's prior shrunk toward the pooled one,
    /// `cross_validation.task_kappa`): a query of such a task starts and decides by its
    /// task's table; a request's own λ uses the pooled family.
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub task_policies: std::collections::BTreeMap<String, automix_core::cascade::CascadePolicy>,
    /// Per-model fused confidences (`hparam.fuse_signals`), when they route: each verified
    /// model's verification measures every fused signal and the table reads their fusion.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fusion: Option<crate::cascade_fusion::CascadeFusion>,
    /// The signal the plan was trained on (`hparam.verifier_signal`); plans from before
    /// it was recorded read the two-model policy's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub verifier_signal: Option<VerifierSignal>,
    /// How every model's verified runs were priced, under `cost_mode: tokens`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub verification_pricing: Option<crate::dataset::VerificationPricing>,
}

impl CascadePlan {
    /// Where a query of `task` starts.
    pub fn start_for(&self, task: &str) -> automix_core::cascade::StartChoice {
        self.task_policies
            .get(task)
            .map(|p| p.start)
            .or_else(|| self.task_starts.get(task).copied())
            .unwrap_or(self.policy.start)
    }
}

impl RouterPolicy {
    /// Writes the policy atomically, once it is known to load back: JSON writes a NaN as
    /// `null`, and a file that `load` then refuses would be lost work found only at serve
    /// time, so it is refused here instead.
    pub fn save(&self, path: &Path) -> Result<()> {
        let text =
            serde_json::to_string_pretty(self).map_err(|source| AutomixError::Serialise {
                what: "the policy",
                source,
            })?;
        if let Err(source) = serde_json::from_str::<RouterPolicy>(&text) {
            return Err(AutomixError::Serialise {
                what: "the policy (it would not load back; a value is not finite)",
                source,
            });
        }
        write_atomic(path, text.as_bytes())
    }

    /// Reads and version-checks a policy file.
    pub fn load(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|e| AutomixError::io(path, e))?;
        let value: serde_json::Value =
            serde_json::from_str(&text).map_err(|e| AutomixError::Data {
                file: path.to_owned(),
                line: e.line(),
                message: format!("invalid JSON: {e}"),
            })?;
        let version = value["format_version"].as_u64();
        if version != Some(u64::from(ROUTER_POLICY_VERSION)) {
            return Err(AutomixError::Data {
                file: path.to_owned(),
                line: 1,
                message: format!(
                    "field `format_version`: {version:?} is not the supported version \
                     {ROUTER_POLICY_VERSION}; retrain with `automix train`"
                ),
            });
        }
        let policy: Self = serde_json::from_value(value).map_err(|e| AutomixError::Data {
            file: path.to_owned(),
            line: 1,
            message: e.to_string(),
        })?;
        policy
            .validate()
            .map_err(|(field, reason)| AutomixError::Data {
                file: path.to_owned(),
                line: 1,
                message: format!("field `{field}`: {reason}"),
            })?;
        Ok(policy)
    }

    /// Checks everything routing relies on, so a bad file is refused at load (and reload)
    /// rather than failing, or panicking, per request. Errors name the field.
    pub fn validate(&self) -> std::result::Result<(), (&'static str, String)> {
        self.policy
            .validate()
            .map_err(|e| ("policy", e.to_string()))?;
        if let Some(f) = &self.fusion
            && let Some(model) = &f.model
            && let Some(reason) = model.problem(f.signals.len())
        {
            return Err(("fusion.model", reason));
        }
        let Some(plan) = &self.cascade else {
            return Ok(());
        };
        plan.policy
            .validate()
            .map_err(|e| ("cascade.policy", e.to_string()))?;
        let n = plan.policy.model.len();
        if plan.models.len() != n {
            return Err((
                "cascade.models",
                format!("{} names for a {n}-model policy", plan.models.len()),
            ));
        }
        let mut last = f64::NEG_INFINITY;
        for t in &plan.lambda_family {
            if !(t.lambda.is_finite() && t.lambda >= 0.0 && t.lambda > last) {
                return Err((
                    "cascade.lambda_family",
                    format!("λ {} must be finite, >= 0 and ascending", t.lambda),
                ));
            }
            last = t.lambda;
            t.policy
                .validate()
                .map_err(|e| ("cascade.lambda_family", e.to_string()))?;
            if t.policy.model.len() != n {
                return Err((
                    "cascade.lambda_family",
                    format!("a {}-model table in a {n}-model plan", t.policy.model.len()),
                ));
            }
        }
        if !(plan.cost_unit.is_finite() && plan.cost_unit > 0.0) {
            return Err((
                "cascade.cost_unit",
                format!("{} must be > 0", plan.cost_unit),
            ));
        }
        if let Some(problem) = plan.fusion.as_ref().and_then(|f| f.problem()) {
            return Err(("cascade.fusion", problem));
        }
        for (task, t) in &plan.task_policies {
            t.validate()
                .map_err(|e| ("cascade.task_policies", format!("task {task:?}: {e}")))?;
            if t.model.len() != n {
                return Err((
                    "cascade.task_policies",
                    format!("task {task:?} has a {}-model table", t.model.len()),
                ));
            }
        }
        if let Some((task, start)) = plan.task_starts.iter().find(|(_, s)| s.model >= n) {
            return Err((
                "cascade.task_starts",
                format!("task {task:?} starts at model {} of {n}", start.model),
            ));
        }
        if let Some(r) = &plan.rates
            && [r.theta.len(), r.tpr.len(), r.fpr.len()] != [n; 3]
        {
            return Err(("cascade.rates", format!("rates must have {n} entries each")));
        }
        Ok(())
    }
}

/// The verifier score of a verification under `signal`.
pub fn verifier_score(
    verification: Option<&VerificationRecord>,
    signal: VerifierSignal,
) -> VerifierScore {
    let p = verification.and_then(|v| crate::signal::of(signal).read(v));
    // A score outside [0, 1] cannot come from our verifier; it counts as unknown, which the
    // policy's explicit `unknown_confidence` rule then decides.
    p.and_then(|p| automix_core::Confidence::new(p).ok())
        .map_or(VerifierScore::Unknown, VerifierScore::Known)
}

/// Routing records for the (small, large) pair, read on `signal` and charged its own
/// verification calls ([`VerificationRecord::cost_of`]); a row missing either model is an
/// error.
pub fn routing_records(
    rows: &[TrainingRow],
    small: &str,
    large: &str,
    signal: VerifierSignal,
) -> Result<Vec<RoutingRecord>> {
    rows.iter()
        .enumerate()
        .map(|(i, row)| {
            let missing = |m: &str| AutomixError::MissingRun {
                row: format!("{} ({})", i + 1, row.id),
                model: m.to_owned(),
            };
            let s = row.run(small).ok_or_else(|| missing(small))?;
            let l = row.run(large).ok_or_else(|| missing(large))?;
            Ok(RoutingRecord {
                task_name: Some(row.task_name.clone()),
                small_score: s.score,
                large_score: l.score,
                verifier: verifier_score(s.verification.as_ref(), signal),
                small_answer: Some(s.normalised_answer.clone()),
                costs: Some(QueryCosts {
                    small: s.cost,
                    large: l.cost,
                    verifier: s.verification_cost(&[signal]),
                }),
            })
        })
        .collect()
}

/// Routing records for `policy`'s pair, scored as it reads them: its fused confidence when
/// it fuses signals, else its `verifier_signal`.
pub fn policy_records(rows: &[TrainingRow], policy: &RouterPolicy) -> Result<Vec<RoutingRecord>> {
    let (small, large) = (&policy.small_model, &policy.large_model);
    let mut records = routing_records(rows, small, large, policy.verifier_signal)?;
    if let Some(f) = policy.fusion.as_ref().filter(|f| f.model.is_some()) {
        for (r, row) in records.iter_mut().zip(rows) {
            let run = row.run(small);
            let v = run.and_then(|run| run.verification.as_ref());
            r.verifier = v.map_or(VerifierScore::Unknown, |v| f.score(v));
            // Live, a fused policy measures every signal it fuses.
            if let (Some(costs), Some(run)) = (r.costs.as_mut(), run) {
                costs.verifier = run.verification_cost(&f.signals);
            }
        }
    }
    Ok(records)
}

/// The cost model the config asks for.
pub fn cost_model(config: &Config) -> CostModel {
    match config.hparam.cost_mode {
        CostMode::Relative => CostModel::Relative {
            small: config.hparam.small_model_cost,
            large: config.hparam.large_model_cost,
            verifier: config.hparam.verifier_cost,
        },
        CostMode::Tokens => CostModel::PerQuery,
    }
}

/// `kind` with the config's settings (bins, per-task evidence).
pub fn method_spec(config: &Config, kind: MethodKind) -> MethodSpec {
    let h = &config.hparam;
    let mut spec = MethodSpec::new(kind, h.num_bins);
    spec.exact.per_task_prior = h.per_task_prior;
    spec.calibrated.per_task = h.per_task_prior;
    spec
}

/// The method spec and training options the config asks for.
pub fn method_and_options(config: &Config) -> Result<(MethodSpec, TrainOptions)> {
    let h = &config.hparam;
    let spec = method_spec(config, h.routing_method);
    let options = TrainOptions {
        objective: h.objective()?,
        cost_constraint: h.cost_constraint.map(|[a, b]| (a, b)),
        unknown_confidence: h.unknown_confidence,
        fixed_answers: h.fixed_answers.clone(),
    };
    Ok((spec, options))
}

/// The rows of a split (`train` or `test`).
pub fn split<'a>(rows: &'a [TrainingRow], name: &str) -> Vec<&'a TrainingRow> {
    rows.iter().filter(|r| r.split == name).collect()
}

/// Re-split `seed` of `rows`: (train, test), `test_share` held out by a stable hash of the
/// id. The one partition every re-split evaluation uses.
pub fn resplit(
    rows: &[TrainingRow],
    seed: u64,
    test_share: f64,
) -> (Vec<TrainingRow>, Vec<TrainingRow>) {
    let (test, train) = rows
        .iter()
        .cloned()
        .partition(|r| crate::collect::split_of(&r.id, seed + 1000, test_share) == "test");
    (train, test)
}

/// Trains the configured method on `rows` for the (small, large) pair.
pub fn train_policy(
    config: &Config,
    rows: &[TrainingRow],
    small: &str,
    large: &str,
) -> Result<RouterPolicy> {
    let (signal, policy, fusion) = if config.hparam.two_model_fuse_signals().is_empty() {
        let signal = config.hparam.verifier_signal;
        (
            signal,
            train_on_signal(config, rows, (small, large), signal)?,
            None,
        )
    } else {
        let (signal, policy, fusion) = crate::fused::train_fused(config, rows, (small, large))?;
        (signal, policy, Some(fusion))
    };
    Ok(RouterPolicy {
        format_version: ROUTER_POLICY_VERSION,
        small_model: small.to_owned(),
        large_model: large.to_owned(),
        verifier_signal: signal,
        cost_mode: config.hparam.cost_mode,
        policy,
        cascade: None,
        fusion,
        verification_pricing: token_pricing(config, rows.iter().filter_map(|r| r.run(small))),
    })
}

/// [`VerificationPricing`](crate::dataset::VerificationPricing) of `runs` where it enters
/// the objective: under `cost_mode: tokens` (relative costs charge a fixed verifier cost).
fn token_pricing<'a>(
    config: &Config,
    runs: impl IntoIterator<Item = &'a crate::dataset::ModelRun>,
) -> Option<crate::dataset::VerificationPricing> {
    (config.hparam.cost_mode == CostMode::Tokens)
        .then(|| crate::dataset::VerificationPricing::of(runs))
}

/// The configured method trained on `signal` alone.
fn train_on_signal(
    config: &Config,
    rows: &[TrainingRow],
    (small, large): (&str, &str),
    signal: VerifierSignal,
) -> Result<automix_core::Policy> {
    let records = routing_records(rows, small, large, signal)?;
    let known = records.iter().any(|r| r.verifier.known().is_some());
    // The paper's votes are in every row; a signal added later may not be.
    if signal != VerifierSignal::Samples && !known {
        return Err(AutomixError::Setting {
            key: "hparam.verifier_signal",
            message: format!(
                "{}: no row carries it (rows collected before the signal existed, with \
                 automix.answer_samples: 0, or from an upstream without logprobs); \
                 re-collect with `automix collect`",
                signal.name()
            ),
        });
    }
    let (spec, options) = method_and_options(config)?;
    Ok(automix_core::train(
        &records,
        &cost_model(config),
        &spec,
        &options,
    )?)
}

/// The runs of every model of the cascade: each one's verification is priced.
fn cascade_runs<'a>(
    rows: &'a [TrainingRow],
    models: &'a [String],
) -> impl Iterator<Item = &'a crate::dataset::ModelRun> {
    rows.iter()
        .flat_map(move |row| models.iter().filter_map(move |m| row.run(m)))
}

/// Rows per task needed before a task gets its own pre-selection.
pub const TASK_START_MIN_ROWS: usize = 20;

/// Trains the cascade over `models` (cheapest first), with per-task starts when
/// `hparam.per_task_prior` is set.
pub fn train_cascade_plan(
    config: &Config,
    rows: &[TrainingRow],
    models: &[String],
) -> Result<CascadePlan> {
    let trained = crate::cascade::train_cascade(config, rows, models)?;
    let lambda_family = crate::cascade::lambda_family(config, &trained, models)?;
    let mut task_starts = std::collections::BTreeMap::new();
    // A fallback was validated for every task together; per-task starts were not. Per-task
    // tables, where cross-validation chose them, carry their own starts.
    // A routing threshold chain's start is its first member, never a re-solved table's.
    let chain_routes = trained.cv.chain_routes().is_some();
    if config.hparam.per_task_prior
        && trained.cv.fallback.is_none()
        && trained.task_policies.is_empty()
        && !chain_routes
    {
        let mut by_task: std::collections::BTreeMap<String, Vec<_>> = Default::default();
        for (row, crow) in rows.iter().zip(&trained.rows) {
            by_task
                .entry(row.task_name.clone())
                .or_default()
                .push(crow.clone());
        }
        task_starts = automix_core::replay::task_starts(
            models,
            &by_task,
            trained.cv.bins(),
            crate::cascade::CASCADE_SMOOTHING,
            crate::cascade::cascade_settings(config, trained.cv.solver_lambda),
            TASK_START_MIN_ROWS,
        )?;
    }
    Ok(CascadePlan {
        models: models.to_vec(),
        cost_unit: trained.unit,
        policy: trained.policy,
        task_starts,
        rates: Some(automix_core::replay::model_rates(
            &trained.rows,
            models.len(),
        )),
        lambda_family,
        task_policies: trained.task_policies,
        fusion: trained.fusion,
        verifier_signal: Some(config.hparam.verifier_signal),
        cross_validation: Some(trained.cv),
        verification_pricing: token_pricing(config, cascade_runs(rows, models)),
    })
}
