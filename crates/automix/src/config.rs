//! The YAML config: LLMRouter's keys (`data_path`, `model_path`, `hparam`, `metric`) and
//! Semantic Router's `automix:` block in one schema.
//!
//! Unknown keys are errors that suggest the nearest known key; type errors name the file,
//! line and key; relative paths resolve against the config file's folder.

use std::path::{Path, PathBuf};

use automix_core::{Decision, MethodKind, Objective};
use serde::{Deserialize, Serialize};

use crate::error::{AutomixError, Result};

/// The whole config file.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Input files.
    #[serde(default)]
    pub data_path: DataPaths,
    /// Policy files and model choice.
    #[serde(default)]
    pub model_path: ModelPaths,
    /// Training hyper-parameters (LLMRouter's `hparam`, plus ours).
    #[serde(default)]
    pub hparam: HParams,
    /// LLMRouter's metric weights.
    #[serde(default)]
    pub metric: MetricConfig,
    /// Semantic Router's automix settings (verification and cascade).
    #[serde(default)]
    pub automix: AutomixSettings,
    /// Settings of `automix collect`.
    #[serde(default)]
    pub collect: CollectSettings,
}

/// Input files; relative paths are resolved against the config's folder at load.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DataPaths {
    /// Query JSONL (LLMRouter format) to collect training rows from.
    pub query_data_train: Option<PathBuf>,
    /// Held-out query JSONL.
    pub query_data_test: Option<PathBuf>,
    /// Training rows JSONL (what `collect` writes, what `train` reads).
    pub routing_data_train: Option<PathBuf>,
    /// Held-out training rows (for `eval`); without it, rows with `split: test` are used.
    pub routing_data_test: Option<PathBuf>,
    /// llm_data JSON.
    pub llm_data: Option<PathBuf>,
    /// Folder of prompt templates (default: the builtin copies of `configs/prompts/`).
    pub prompts_dir: Option<PathBuf>,
}

/// Policy files and which models are small and large.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelPaths {
    /// Where `train` writes the policy.
    pub save_model_path: Option<PathBuf>,
    /// Where `route`/`eval` read it (default: `save_model_path`).
    pub load_model_path: Option<PathBuf>,
    /// The small model's llm_data name (default: the cheapest, in the router's price-then-size order).
    pub engine_small: Option<String>,
    /// The large model's llm_data name (default: the most expensive in that order).
    pub engine_large: Option<String>,
}

/// How costs are counted.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CostMode {
    /// `small_model_cost`, `large_model_cost`, `verifier_cost` per call (the paper).
    #[default]
    Relative,
    /// Token usage × llm_data prices.
    Tokens,
}

/// Which verifier signal the two-model policy routes on.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum VerifierSignal {
    /// p_ver from k sampled verdicts.
    #[default]
    Samples,
    /// P(correct) from one verdict's logprobs.
    Logprob,
    /// Share of the modal answer among k sampled answers (see
    /// [`crate::signal::answer_consistency`]).
    AnswerConsistency,
    /// Mean token probability of the answer itself, from the answer call's logprobs (no
    /// extra call; see [`crate::signal`]).
    AnswerLogprob,
    /// Agreement with the next cheaper model's answer in a cascade (no extra call; see
    /// [`crate::signal`]).
    PreviousAgreement,
}

impl VerifierSignal {
    /// Its name in configs and reports (`samples`, `logprob`, `answer_consistency`).
    pub fn name(self) -> &'static str {
        match self {
            Self::Samples => "samples",
            Self::Logprob => "logprob",
            Self::AnswerConsistency => "answer_consistency",
            Self::AnswerLogprob => "answer_logprob",
            Self::PreviousAgreement => "previous_agreement",
        }
    }

    /// Whether it is known only after the next cheaper model answered
    /// ([`crate::signal::Signal::reads_previous_answer`]).
    pub fn reads_previous_answer(self) -> bool {
        crate::signal::of(self).reads_previous_answer()
    }
}

/// LLMRouter's `hparam`, plus our objectives.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HParams {
    /// Threshold | DoubleThreshold | TripleThreshold | SelfConsistency | POMDPSimple |
    /// GreedyPOMDP | POMDP | ExactPOMDP | Calibrated | auto (case-insensitive), parsed at load.
    #[serde(with = "method_name")]
    pub routing_method: MethodKind,
    /// Grid resolution of the meta-verifier.
    pub num_bins: usize,
    /// Relative cost of a small-model call.
    pub small_model_cost: f64,
    /// Relative cost of a large-model call.
    pub large_model_cost: f64,
    /// Relative cost of verification.
    pub verifier_cost: f64,
    /// Print training detail.
    pub verbose: bool,
    /// Keep only candidates whose mean cost is in `[min, max]`.
    pub cost_constraint: Option<[f64; 2]>,
    /// Concurrent queries in `route_batch` and `collect`.
    pub max_workers: usize,
    /// LLMRouter's key; only `cpu` (every solver here is CPU code), checked at load.
    pub device: Device,
    /// `relative` (default) or `tokens`.
    pub cost_mode: CostMode,
    /// `delta_ibc` (default), `net_utility`, `cost_budget`, `escalation_budget`, `max_quality`.
    pub objective: ObjectiveName,
    /// λ for `net_utility`; budget for `cost_budget` or `escalation_budget`.
    pub objective_value: Option<f64>,
    /// `escalate` (default) or `keep` when the verifier gave no usable verdict.
    #[serde(with = "decision_name")]
    pub unknown_confidence: Decision,
    /// Small-model answers that always escalate (FixedAnswerRouting).
    pub fixed_answers: Vec<String>,
    /// `samples` (default), `logprob`, `answer_consistency`, `answer_logprob` or
    /// `previous_agreement` (a cascade's later models only).
    pub verifier_signal: VerifierSignal,
    /// Signals fused into one confidence (two or more; empty: route on `verifier_signal`
    /// alone). Training keeps the fusion only where it beats each of them alone out of
    /// fold, else routes on the best one ([`crate::fused`]).
    pub fuse_signals: Vec<VerifierSignal>,
    /// Per-task priors for ExactPOMDP.
    pub per_task_prior: bool,
    /// The cascade also tries the learned threshold chain and routes with it where it nets
    /// more out of fold ([`crate::cascade_chain`]); `false`: the solved table only.
    pub threshold_chain: bool,
}

impl Default for HParams {
    fn default() -> Self {
        Self {
            routing_method: MethodKind::PaperPomdp,
            num_bins: 8,
            small_model_cost: 1.0,
            large_model_cost: 50.0,
            verifier_cost: 1.0,
            verbose: false,
            cost_constraint: None,
            max_workers: 4,
            device: Device::Cpu,
            cost_mode: CostMode::Relative,
            objective: ObjectiveName::DeltaIbc,
            objective_value: None,
            unknown_confidence: Decision::Escalate,
            fixed_answers: Vec::new(),
            verifier_signal: VerifierSignal::Samples,
            fuse_signals: Vec::new(),
            per_task_prior: false,
            threshold_chain: true,
        }
    }
}

impl HParams {
    /// The signals the two-model path fuses: `fuse_signals` without those that read the
    /// previous answer (`previous_agreement`), which the small model never has; empty when fewer than
    /// two remain, and the two-model policy then routes on `verifier_signal`.
    pub fn two_model_fuse_signals(&self) -> Vec<VerifierSignal> {
        let kept: Vec<VerifierSignal> = self
            .fuse_signals
            .iter()
            .copied()
            .filter(|s| !s.reads_previous_answer())
            .collect();
        if kept.len() < 2 { Vec::new() } else { kept }
    }
}

/// What is wrong with `metric.weights`, if anything: (key, message).
fn weights_problem(w: &MetricWeights) -> Option<(&'static str, String)> {
    if let Some((key, v)) = [("performance", w.performance), ("cost", w.cost)]
        .into_iter()
        .find(|(_, v)| !(v.is_finite() && *v >= 0.0))
    {
        return Some((key, format!("weight {v} must be a finite number >= 0")));
    }
    // Nothing here judges answers with an LLM: a weight on it would be silently unused.
    (w.llm_judge != 0.0).then(|| {
        (
            "llm_judge",
            "AutoMix has no LLM judge (answers are scored by the task metric); set it to 0".into(),
        )
    })
}

/// `hparam.fuse_signals` is empty or lists two or more different signals.
fn fuse_signals_valid(signals: &[VerifierSignal]) -> bool {
    let mut distinct = signals.to_vec();
    distinct.sort_by_key(|s| s.name());
    distinct.dedup();
    signals.is_empty() || (distinct.len() == signals.len() && distinct.len() >= 2)
}

/// `hparam.objective`: what training maximises (its value, where it takes one, is
/// `hparam.objective_value`; [`HParams::objective`] puts the two together).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ObjectiveName {
    /// ΔIBC (the paper).
    #[default]
    DeltaIbc,
    /// Quality − λ·cost; λ is the value.
    NetUtility,
    /// Highest quality within a mean-cost budget (the value).
    CostBudget,
    /// Highest quality within an escalation-rate budget (the value).
    EscalationBudget,
    /// Highest quality, then lowest cost.
    MaxQuality,
}

/// Where the meta-verifier runs (LLMRouter's `hparam.device`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Device {
    /// The only one: a policy decides in nanoseconds and every solver is small CPU code.
    #[default]
    Cpu,
}

impl<'de> Deserialize<'de> for Device {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        let name = String::deserialize(d)?;
        // LLMRouter's routers may run on a GPU; ours would silently ignore one, so say why.
        if name.eq_ignore_ascii_case("cpu") {
            Ok(Self::Cpu)
        } else {
            Err(serde::de::Error::custom(format!(
                "hparam.device: {name:?} is not supported: AutoMix's meta-verifiers and solvers run on the CPU \
                 (use `cpu`); the models' own devices are the servers' business"
            )))
        }
    }
}

/// `routing_method` as its name: parsed case-insensitively (with the paper's aliases).
mod method_name {
    use automix_core::MethodKind;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(m: &MethodKind, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(m.name())
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<MethodKind, D::Error> {
        let name = String::deserialize(d)?;
        MethodKind::parse(&name).ok_or_else(|| {
            serde::de::Error::custom(format!(
                "hparam.routing_method: unknown method {name:?}; known: {}",
                MethodKind::ALL.map(MethodKind::name).join(", ")
            ))
        })
    }
}

/// `unknown_confidence` as `escalate` or `keep`.
mod decision_name {
    use automix_core::Decision;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(d: &Decision, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(if d.escalates() { "escalate" } else { "keep" })
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Decision, D::Error> {
        match String::deserialize(d)?.as_str() {
            "escalate" => Ok(Decision::Escalate),
            "keep" => Ok(Decision::Keep),
            other => Err(serde::de::Error::custom(format!(
                "hparam.unknown_confidence: {other:?} is neither \"escalate\" nor \"keep\""
            ))),
        }
    }
}

/// LLMRouter's `metric:` block.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[derive(Default)]
pub struct MetricConfig {
    /// Weights of performance, cost and llm_judge in LLMRouter's combined score.
    #[serde(default = "default_weights")]
    pub weights: MetricWeights,
}

/// LLMRouter's metric weights.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MetricWeights {
    /// Weight of task performance.
    pub performance: f64,
    /// Weight of cost.
    pub cost: f64,
    /// Weight of an LLM judge (not used by AutoMix).
    pub llm_judge: f64,
}

impl Default for MetricWeights {
    fn default() -> Self {
        default_weights()
    }
}

impl MetricWeights {
    /// LLMRouter's combined score: `performance · quality − cost · cost / large_cost` (cost
    /// in units of always calling the large model, so the two terms are comparable). The
    /// LLM-judge term is always 0 here: load refuses a non-zero `llm_judge` weight.
    pub fn score(&self, quality: f64, cost: f64, large_cost: f64) -> f64 {
        let unit = if large_cost > 0.0 { large_cost } else { 1.0 };
        self.performance * quality - self.cost * cost / unit
    }
}

fn default_weights() -> MetricWeights {
    MetricWeights {
        performance: 1.0,
        cost: 0.0,
        llm_judge: 0.0,
    }
}

/// Semantic Router's `automix:` block.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AutomixSettings {
    /// Escalate while confidence < this (the simple rule, `use_pomdp_router: false`).
    pub verification_threshold: f64,
    /// Most escalations per query in a cascade.
    pub max_escalations: usize,
    /// Weigh cost in routing decisions.
    pub cost_aware_routing: bool,
    /// 0 = quality only, 1 = cost only; maps onto `cost_lambda` when that is unset.
    pub cost_quality_tradeoff: f64,
    /// Discount per escalation in the cascade POMDP.
    pub discount_factor: f64,
    /// Verify by one verdict's logprobs instead of k samples.
    pub use_logprob_verification: bool,
    /// Verify at all (false: never escalate on verification; always keep the first answer).
    pub enable_self_verification: bool,
    /// k sampled verdicts.
    pub verification_samples: u32,
    /// Temperature of the verdict samples.
    pub verification_temperature: f32,
    /// Route with the trained policy (true) or the simple threshold (false).
    pub use_pomdp_router: bool,
    /// Particles of the online belief.
    pub belief_particles: usize,
    /// Adapt the cascade online: a particle belief started from the trained rates, updated by
    /// every routed query (and its correctness where the query has ground truth).
    pub online_belief: bool,
    /// Re-solve the online decision table every this many updates.
    pub belief_refresh_every: usize,
    /// Where the online belief lives: `memory` (this process, a particle filter) or a Redis
    /// URL (`redis://host:port/db`, or `rediss://` over TLS) shared by every replica that
    /// names it.
    pub belief_store: String,
    /// PEM file of the CA that signed the Redis server's certificate (`rediss://` only;
    /// default: the system's trust store).
    pub belief_store_ca_file: Option<PathBuf>,
    /// Key prefix in the shared store (default: one per trained plan, so two policies never
    /// share counts).
    pub belief_key_prefix: Option<String>,
    /// Time limit of one store call; past it the replica routes on its last table.
    pub belief_store_timeout_ms: u64,
    /// λ in quality − λ·cost.
    pub cost_lambda: Option<f64>,
    /// A separate verifier endpoint (OpenAI-compatible base URL).
    pub verifier_server_url: Option<String>,
    /// The verifier's model id (default: the answering model's).
    pub verifier_model: Option<String>,
    /// Cascade through every model (true) or pre-select one (false).
    pub enable_cascade: bool,
    /// Answers sampled for the answer-consistency signal (collection, and routing with
    /// `hparam.verifier_signal: answer_consistency`); default `verification_samples`, 0 off
    /// in collection.
    pub answer_samples: Option<u32>,
    /// The zero-call answer checks that escalate a bad answer without a verifier call
    /// (default: all of `empty`, `truncated`, `invalid_json`, `refusal`; `[]` turns them off).
    pub answer_checks: Vec<crate::checks::AnswerCheck>,
    /// Shadow answers of `automix serve` (rows from the server's own traffic, labelled
    /// without ground truth); unset = off.
    pub shadow: Option<crate::traffic::ShadowSettings>,
}

impl Default for AutomixSettings {
    fn default() -> Self {
        Self {
            verification_threshold: 0.7,
            max_escalations: 2,
            cost_aware_routing: true,
            cost_quality_tradeoff: 0.3,
            discount_factor: 0.95,
            use_logprob_verification: false,
            enable_self_verification: true,
            verification_samples: 5,
            verification_temperature: 0.7,
            use_pomdp_router: true,
            belief_particles: 100,
            online_belief: false,
            belief_refresh_every: 10,
            belief_store: "memory".into(),
            belief_key_prefix: None,
            belief_store_ca_file: None,
            belief_store_timeout_ms: 300,
            cost_lambda: None,
            verifier_server_url: None,
            verifier_model: None,
            enable_cascade: true,
            answer_checks: crate::checks::ALL_CHECKS.to_vec(),
            answer_samples: None,
            shadow: None,
        }
    }
}

/// Settings of `automix collect`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CollectSettings {
    /// Models that answer every query, by llm_data name (default: all, price then size).
    pub models: Vec<String>,
    /// Queries per task (taken in file order after a seeded shuffle).
    pub per_task: Option<usize>,
    /// Only these tasks (default: every task with a supported metric).
    pub tasks: Vec<String>,
    /// Max tokens of a short or multiple-choice answer.
    pub answer_max_tokens: u32,
    /// Max tokens of a math answer (reasoning included).
    pub math_max_tokens: u32,
    /// Share of rows marked `split: test`.
    pub test_share: f64,
    /// Seed of the shuffle and split.
    pub seed: u64,
    /// Longest query (characters) kept; longer ones are skipped, keeping prompts in context.
    pub max_query_chars: usize,
}

impl Default for CollectSettings {
    fn default() -> Self {
        Self {
            models: Vec::new(),
            per_task: None,
            tasks: Vec::new(),
            answer_max_tokens: 32,
            math_max_tokens: 320,
            test_share: 0.3,
            seed: 0,
            max_query_chars: 2000,
        }
    }
}

impl AutomixSettings {
    /// Answers sampled for the answer-consistency signal.
    pub fn answer_samples(&self) -> u32 {
        self.answer_samples.unwrap_or(self.verification_samples)
    }

    /// λ: `cost_lambda`, else `cost_quality_tradeoff` mapped as t/(1−t) per unit of the
    /// most expensive model's cost (0 when routing is not cost-aware).
    pub fn lambda(&self) -> f64 {
        if !self.cost_aware_routing {
            return 0.0;
        }
        self.cost_lambda.unwrap_or_else(|| {
            let t = self.cost_quality_tradeoff.clamp(0.0, 0.99);
            t / (1.0 - t)
        })
    }
}

impl HParams {
    /// The training objective.
    pub fn objective(&self) -> Result<Objective> {
        let value = |what: &str| {
            self.objective_value.ok_or_else(|| AutomixError::Setting {
                key: "hparam.objective",
                message: format!("{:?} needs hparam.objective_value ({what})", self.objective),
            })
        };
        Ok(match self.objective {
            ObjectiveName::DeltaIbc => Objective::DeltaIbc,
            ObjectiveName::MaxQuality => Objective::MaxQuality,
            ObjectiveName::NetUtility => Objective::NetUtility {
                lambda: value("λ")?,
            },
            ObjectiveName::CostBudget => Objective::CostBudget {
                max_mean_cost: value("the mean cost budget")?,
            },
            ObjectiveName::EscalationBudget => Objective::EscalationBudget {
                max_rate: value("the largest escalation rate")?,
            },
        })
    }
}

impl Config {
    /// Reads and validates a config file; relative paths become relative to its folder.
    pub fn load(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|e| AutomixError::io(path, e))?;
        let mut config = Self::parse(&text, path)?;
        let base = path.parent().unwrap_or(Path::new("."));
        config.resolve_paths(base);
        Ok(config)
    }

    /// Parses YAML text; `path` is used in error messages only.
    pub fn parse(text: &str, path: &Path) -> Result<Self> {
        let config: Self = serde_saphyr::from_str(text).map_err(|e| yaml_error(&e, text, path))?;
        config.validate(text, path)?;
        Ok(config)
    }

    fn validate(&self, text: &str, path: &Path) -> Result<()> {
        let fail = |key: &str, message: String| AutomixError::Config {
            file: path.to_owned(),
            line: line_of_key(text, key),
            message: format!("{key}: {message}"),
        };
        let h = &self.hparam;
        h.objective()
            .map_err(|e| fail("objective", e.to_string()))?;
        if h.num_bins == 0 {
            return Err(fail("num_bins", "must be at least 1".into()));
        }
        if let Some((key, message)) = weights_problem(&self.metric.weights) {
            return Err(fail(key, message));
        }
        if h.max_workers == 0 {
            return Err(fail("max_workers", "must be at least 1".into()));
        }
        if !fuse_signals_valid(&h.fuse_signals) {
            return Err(fail(
                "fuse_signals",
                "must list two or more different signals (or none)".into(),
            ));
        }
        if let Some([lo, hi]) = h.cost_constraint
            && lo > hi
        {
            return Err(fail("cost_constraint", format!("min {lo} > max {hi}")));
        }
        let a = &self.automix;
        if !(0.0..=1.0).contains(&a.verification_threshold) {
            return Err(fail("verification_threshold", "must be in [0, 1]".into()));
        }
        if !(0.0..=1.0).contains(&a.discount_factor) {
            return Err(fail("discount_factor", "must be in [0, 1]".into()));
        }
        if !(0.0..=1.0).contains(&a.cost_quality_tradeoff) {
            return Err(fail("cost_quality_tradeoff", "must be in [0, 1]".into()));
        }
        if a.online_belief && a.belief_particles == 0 {
            return Err(fail(
                "belief_particles",
                "must be at least 1 with online_belief".into(),
            ));
        }
        let store = a.belief_store.as_str();
        let tls = store.starts_with("rediss://");
        if !(store == "memory" || store.starts_with("redis://") || tls) {
            // Not echoed: a URL may carry a password.
            return Err(fail(
                "belief_store",
                "must be `memory`, a redis://host:port/db URL or a rediss:// (TLS) one".into(),
            ));
        }
        if a.belief_store_ca_file.is_some() && !tls {
            return Err(fail(
                "belief_store_ca_file",
                "is for a TLS store only: belief_store must be a rediss:// URL".into(),
            ));
        }
        if let Some((key, message)) = a.shadow.as_ref().and_then(|s| s.problem(&a.belief_store)) {
            // A missing key has no line of its own: point at the block.
            let line = match line_of_key(text, key) {
                0 => line_of_key(text, "shadow"),
                n => n,
            };
            return Err(AutomixError::Config {
                file: path.to_owned(),
                line,
                message: format!("automix.shadow.{key} {message}"),
            });
        }
        if a.shadow.as_ref().is_some_and(|s| s.retrain_every.is_some())
            && self.policy_path().is_none()
        {
            return Err(fail(
                "retrain_every",
                "needs the serving policy's file (model_path.save_model_path or load_model_path): \
                 a better policy is saved there and reloaded"
                    .into(),
            ));
        }
        if a.verification_samples == 0 {
            return Err(fail("verification_samples", "must be at least 1".into()));
        }
        if !(0.0..=1.0).contains(&self.collect.test_share) {
            return Err(fail("test_share", "must be in [0, 1]".into()));
        }
        Ok(())
    }

    fn resolve_paths(&mut self, base: &Path) {
        let fix = |p: &mut Option<PathBuf>| {
            if let Some(path) = p
                && path.is_relative()
            {
                *path = base.join(&*path);
            }
        };
        let d = &mut self.data_path;
        for p in [
            &mut d.query_data_train,
            &mut d.query_data_test,
            &mut d.routing_data_train,
            &mut d.routing_data_test,
            &mut d.llm_data,
            &mut d.prompts_dir,
        ] {
            fix(p);
        }
        fix(&mut self.automix.belief_store_ca_file);
        if let Some(shadow) = &mut self.automix.shadow {
            fix(&mut shadow.rows_path);
        }
        fix(&mut self.model_path.save_model_path);
        fix(&mut self.model_path.load_model_path);
    }

    /// The policy file to read: `load_model_path`, else `save_model_path`.
    pub fn policy_path(&self) -> Option<&Path> {
        self.model_path
            .load_model_path
            .as_deref()
            .or(self.model_path.save_model_path.as_deref())
    }
}

/// The first line (1-based) whose key is `key`, or 0.
fn line_of_key(text: &str, key: &str) -> u64 {
    text.lines()
        .position(|l| {
            let t = l.trim_start();
            t.strip_prefix(key)
                .is_some_and(|rest| rest.trim_start().starts_with(':'))
        })
        .map_or(0, |i| i as u64 + 1)
}

/// The key written on a YAML line (`  key: value` → `key`).
fn key_on_line(text: &str, line: u64) -> Option<String> {
    let l = text
        .lines()
        .nth(usize::try_from(line).ok()?.checked_sub(1)?)?;
    let t = l.trim_start().trim_start_matches("- ");
    let (key, _) = t.split_once(':')?;
    let key = key.trim().trim_matches(['"', '\'']);
    (!key.is_empty() && !key.contains(' ')).then(|| key.to_owned())
}

fn yaml_error(e: &serde_saphyr::Error, text: &str, path: &Path) -> AutomixError {
    let mut line = e.location().map_or(0, |l| l.line());
    let raw = strip_location(&e.to_string());
    // Our own value checks (`hparam.routing_method: …`) carry no location: find the key.
    if line == 0
        && let Some((key, _)) = raw.split_once(": ")
        && let Some(field) = key.rsplit('.').next()
        && let Some(i) = (0..text.lines().count())
            .find(|&i| key_on_line(text, i as u64 + 1).as_deref() == Some(field))
    {
        line = i as u64 + 1;
    }
    let message = if let Some(field) = unknown_field(&raw) {
        // The parser may point at the previous entry; the key's own line is the useful one.
        let from = usize::try_from(line).unwrap_or(0).saturating_sub(1);
        if let Some(i) = (from..text.lines().count())
            .find(|&i| key_on_line(text, i as u64 + 1).as_deref() == Some(field.as_str()))
        {
            line = i as u64 + 1;
        }
        let expected = known_keys(text, line);
        let suggestion = nearest(&field, &expected)
            .map(|s| format!("; did you mean `{s}`?"))
            .unwrap_or_default();
        format!(
            "unknown key `{field}`{suggestion} (known here: {})",
            expected.join(", ")
        )
    } else {
        match key_on_line(text, line) {
            Some(key) => format!("key `{key}`: {raw}"),
            None => raw,
        }
    };
    AutomixError::Config {
        file: path.to_owned(),
        line,
        message,
    }
}

/// Drops the " at line X column Y" suffix serde-saphyr appends.
fn strip_location(message: &str) -> String {
    let first = message.lines().next().unwrap_or(message);
    match first.rfind(" at line ") {
        Some(i) => first[..i].to_owned(),
        None => first.to_owned(),
    }
}

/// The field named in serde's "unknown field `x`..." message.
fn unknown_field(message: &str) -> Option<String> {
    let rest = message.split("unknown field `").nth(1)?;
    Some(rest.split_once('`')?.0.to_owned())
}

/// The keys allowed where line `line` sits: the section is the nearest line above with less
/// indentation (top level when there is none); keys come from the schema's defaults.
fn known_keys(text: &str, line: u64) -> Vec<String> {
    let lines: Vec<&str> = text.lines().collect();
    let index = usize::try_from(line).unwrap_or(0).saturating_sub(1);
    let indent = |l: &str| l.len() - l.trim_start().len();
    let own = lines.get(index).map_or(0, |l| indent(l));
    let section = lines[..index.min(lines.len())]
        .iter()
        .rev()
        .filter(|l| !l.trim().is_empty() && !l.trim_start().starts_with('#'))
        .find(|l| indent(l) < own)
        .and_then(|l| l.trim().split(':').next().map(str::to_owned));
    let schema = serde_json::to_value(Config::default()).unwrap_or_default();
    let level = match &section {
        Some(name) => find_section(&schema, name),
        None => Some(&schema),
    };
    level
        .and_then(serde_json::Value::as_object)
        .map(|o| o.keys().cloned().collect())
        .unwrap_or_default()
}

/// The object under key `name`, searched depth-first (sections nest: `metric.weights`).
fn find_section<'a>(value: &'a serde_json::Value, name: &str) -> Option<&'a serde_json::Value> {
    let object = value.as_object()?;
    if let Some(v) = object.get(name).filter(|v| v.is_object()) {
        return Some(v);
    }
    object.values().find_map(|v| find_section(v, name))
}

/// The candidate with the smallest edit distance, if it is close enough to be a typo.
pub fn nearest<'a>(word: &str, candidates: &'a [String]) -> Option<&'a str> {
    candidates
        .iter()
        .map(|c| (edit_distance(word, c), c))
        .min_by_key(|(d, _)| *d)
        .filter(|(d, c)| *d <= (c.len().max(word.len()) / 2).max(2))
        .map(|(_, c)| c.as_str())
}

fn edit_distance(a: &str, b: &str) -> usize {
    let a: Vec<char> = a.chars().collect();
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.iter().enumerate() {
        let mut cur = vec![i + 1; b.len() + 1];
        for (j, cb) in b.iter().enumerate() {
            cur[j + 1] = (prev[j] + usize::from(ca != cb))
                .min(prev[j + 1] + 1)
                .min(cur[j] + 1);
        }
        prev = cur;
    }
    prev[b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn edit_distance_and_nearest() {
        assert_eq!(edit_distance("kitten", "sitting"), 3);
        let keys = vec![
            "verification_threshold".to_string(),
            "max_escalations".into(),
        ];
        assert_eq!(
            nearest("verificaton_threshold", &keys),
            Some("verification_threshold")
        );
        assert_eq!(nearest("zzz", &keys), None);
    }

    #[test]
    fn lambda_from_tradeoff() {
        let mut a = AutomixSettings::default();
        assert!((a.lambda() - 0.3 / 0.7).abs() < 1e-12);
        a.cost_lambda = Some(0.01);
        assert_eq!(a.lambda(), 0.01);
        a.cost_aware_routing = false;
        assert_eq!(a.lambda(), 0.0);
    }
}
