//! The [`Router`]: answer with the cheapest model, self-verify, let the meta-verifier keep
//! the answer or escalate to the next model, up to `max_escalations`.

use std::sync::Arc;
use std::time::Instant;

use futures::StreamExt;
use serde::{Deserialize, Serialize};

use automix_core::{Decision, QueryEvidence, VerifierScore};
use automix_verify::{PromptSet, TaskKind, Verifier, normalise_answer};

use crate::config::{CollectSettings, Config, VerifierSignal};
use crate::dataset::{QueryRow, Tokens, VerificationRecord};
use crate::error::{AutomixError, Result};
use crate::models::{ModelHandle, ModelSet};
use crate::pipeline::{
    AnswerCall, AnswerSource, VerifyModes, answer, answer_budget, verifier_for, verify,
};
use crate::task_metric::TaskMetric;
use crate::training::{CascadePlan, RouterPolicy, verifier_score};
use automix_core::belief::{BeliefConfig, OnlineCascade, StepObservation};
use automix_core::cascade::{CascadeAction, CascadePolicy};
use automix_llm::ChatRequest;
use std::sync::Mutex;

/// The online belief, even after a panic elsewhere poisoned its lock: the belief is plain
/// data that a panic cannot leave half-updated in a way that matters more than silently
/// routing on the offline table instead would.
fn lock_belief<T>(m: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// A request's own routing settings; `None` fields take the trained or configured value.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct RouteOptions {
    /// λ of the two-model calibrated policy: escalate where the expected gain is at least
    /// λ × the cost of an escalation.
    pub lambda: Option<f64>,
    /// Most escalations for this request (0 keeps the first answer).
    pub max_escalations: Option<usize>,
}

/// One model call made while routing.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CallRecord {
    /// llm_data name.
    pub model: String,
    /// `answer` or `verify`.
    pub purpose: String,
    /// Tokens of the call.
    pub tokens: Tokens,
    /// Money at llm_data prices.
    pub cost: f64,
    /// Wall time.
    pub latency_ms: u64,
    /// The upstream's `finish_reason` of an answer call.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finish_reason: Option<String>,
}

impl CallRecord {
    fn answer(model: &str, call: &AnswerCall) -> Self {
        Self {
            model: model.to_owned(),
            purpose: "answer".into(),
            tokens: call.usage.into(),
            cost: call.cost,
            latency_ms: call.latency_ms,
            finish_reason: call.finish_reason.clone(),
        }
    }

    fn verify(model: &str, record: &VerificationRecord, started: Instant) -> Self {
        Self {
            model: model.to_owned(),
            purpose: "verify".into(),
            tokens: record.tokens,
            cost: record.cost,
            latency_ms: started.elapsed().as_millis() as u64,
            finish_reason: None,
        }
    }
}

/// One verification step of the cascade.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StepRecord {
    /// The model whose answer was verified.
    pub model: String,
    /// Its answer.
    pub answer: String,
    /// The verifier score used; `None` = unknown.
    pub verification_score: Option<f64>,
    /// `keep` or `escalate`.
    pub decision: Decision,
    /// Why: `policy`, `threshold`, `unknown score`, `max_escalations`, `verification off`.
    pub reason: String,
}

/// The result of routing one query (LLMRouter's `route_single` fields and more).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RouteOutcome {
    /// Query id.
    pub id: String,
    /// llm_data name of the model whose answer was kept.
    pub model_name: String,
    /// Its API model id.
    pub api_model: String,
    /// The kept answer.
    pub response: String,
    /// The small (first) model's answer.
    pub slm_answer: String,
    /// The verifier's score of the small model's answer; `None` = unknown or not verified.
    pub verification_score: Option<f64>,
    /// Whether the query left the small model.
    pub route_to_llm: bool,
    /// Models that answered, in order.
    pub escalation_path: Vec<String>,
    /// Every verification step and its decision.
    pub steps: Vec<StepRecord>,
    /// Every model call.
    pub calls: Vec<CallRecord>,
    /// Total tokens.
    pub total_tokens: u64,
    /// Total money at llm_data prices.
    pub total_cost: f64,
    /// Wall time of the whole route.
    pub latency_ms: u64,
    /// Score against the ground truth, when the query has one and a known metric.
    pub task_performance: Option<f64>,
    /// The λ the two-model policy decided at (a request's own, else the trained one);
    /// `None` when no λ family decided (threshold rule, cascade, named route).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lambda: Option<f64>,
}

/// A batch entry: the outcome, or the error that query hit (the batch goes on).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct BatchItem {
    /// Query id.
    pub id: String,
    /// The outcome.
    #[serde(flatten)]
    pub outcome: Option<RouteOutcome>,
    /// The error, if routing failed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// Routes queries through a cascade of models with a verifier and a meta-verifier.
#[derive(Debug, Clone)]
pub struct Router {
    models: ModelSet,
    prompts: Arc<PromptSet>,
    verifiers: Vec<Verifier>,
    policy: Option<RouterPolicy>,
    config: Config,
    collect: CollectSettings,
    /// The online particle belief over the cascade (`automix.online_belief`), shared by
    /// clones of this router.
    online: Option<Arc<Mutex<OnlineCascade>>>,
}

impl Router {
    /// A router over `models` (cheapest first). With a policy, the step from its small to
    /// its large model is decided by it; other steps (and `use_pomdp_router: false`) use
    /// `verification_threshold`.
    pub fn new(
        config: &Config,
        models: ModelSet,
        prompts: Arc<PromptSet>,
        policy: Option<RouterPolicy>,
    ) -> Result<Self> {
        if models.len() < 2 {
            return Err(AutomixError::Invalid(
                "routing needs at least two models".into(),
            ));
        }
        if let Some(p) = &policy {
            let names: Vec<&str> = models
                .models()
                .iter()
                .map(|m| m.entry.name.as_str())
                .collect();
            let cascade_models = p
                .cascade
                .iter()
                .filter(|_| config.automix.use_pomdp_router)
                .flat_map(|c| c.models.iter());
            // The two-model path consults the policy at the first (cheapest) model only: a
            // policy whose small model sorts elsewhere would silently never decide.
            let through_cascade = config.automix.use_pomdp_router && p.cascade.is_some();
            if !through_cascade && names.first() != Some(&p.small_model.as_str()) {
                return Err(AutomixError::Invalid(format!(
                    "the policy's small model {} is not the router's first (cheapest) model {}; \
                     models are ordered by llm_data price, then size",
                    p.small_model,
                    names.first().copied().unwrap_or("(none)")
                )));
            }
            for m in [&p.small_model, &p.large_model]
                .into_iter()
                .chain(cascade_models)
            {
                if !names.contains(&m.as_str()) {
                    return Err(AutomixError::Invalid(format!(
                        "the policy is for model {m}, which is not among the router's models ({})",
                        names.join(", ")
                    )));
                }
            }
        }
        let verifiers = models.models()[..models.len() - 1]
            .iter()
            .map(|m| verifier_for(m, prompts.clone(), &config.automix))
            .collect::<Result<_>>()?;
        let online = match policy.as_ref().and_then(|p| p.cascade.as_ref()) {
            Some(plan) if config.automix.online_belief && config.automix.use_pomdp_router => {
                let rates = plan.rates.as_ref().ok_or_else(|| {
                    AutomixError::Invalid(
                        "automix.online_belief needs a policy trained with --cascade by this \
                         version (it carries the model rates the belief starts from)"
                            .into(),
                    )
                })?;
                let m = &plan.policy.model;
                let online = OnlineCascade::warm(
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
                )?;
                Some(Arc::new(Mutex::new(online)))
            }
            _ => None,
        };
        Ok(Self {
            models,
            prompts,
            verifiers,
            policy,
            config: config.clone(),
            collect: config.collect.clone(),
            online,
        })
    }

    /// The models, cheapest first.
    pub fn models(&self) -> &ModelSet {
        &self.models
    }

    fn signal(&self) -> VerifierSignal {
        match &self.policy {
            Some(p) => p.verifier_signal,
            None if self.config.automix.use_logprob_verification => VerifierSignal::Logprob,
            None => VerifierSignal::Samples,
        }
    }

    /// Routes one query.
    pub async fn route_single(&self, query: &QueryRow) -> Result<RouteOutcome> {
        self.route_with(query, None, &RouteOptions::default()).await
    }

    /// Routes one query at the request's own operating point.
    pub async fn route_single_with(
        &self,
        query: &QueryRow,
        options: &RouteOptions,
    ) -> Result<RouteOutcome> {
        self.route_with(query, None, options).await
    }

    /// Routes a client's chat request: `query` holds the question the verifier sees (the last
    /// user message); every model is asked with `request` itself.
    pub async fn route_chat(&self, query: &QueryRow, request: ChatRequest) -> Result<RouteOutcome> {
        self.route_with(query, Some(request), &RouteOptions::default())
            .await
    }

    /// [`Router::route_chat`] at the request's own operating point.
    pub async fn route_chat_with(
        &self,
        query: &QueryRow,
        request: ChatRequest,
        options: &RouteOptions,
    ) -> Result<RouteOutcome> {
        self.route_with(query, Some(request), options).await
    }

    /// The trained λ of the two-model policy when requests may choose their own: a
    /// calibrated policy that is not routed through a cascade. `None` otherwise.
    pub fn lambda_family(&self) -> Option<f64> {
        let policy = self.policy.as_ref()?;
        let through_cascade = self.config.automix.use_pomdp_router && policy.cascade.is_some();
        if through_cascade || !self.config.automix.use_pomdp_router {
            return None;
        }
        policy.policy.trained_lambda()
    }

    /// The query's metric, how models are asked, and which verification runs.
    fn prepare(
        &self,
        query: &QueryRow,
        request: Option<ChatRequest>,
    ) -> Result<(
        Option<TaskMetric>,
        AnswerSource,
        VerifierSignal,
        VerifyModes,
    )> {
        let metric = match query.metric.as_deref() {
            Some(m) => Some(TaskMetric::parse(m)?),
            None => None,
        };
        let signal = self.signal();
        let modes = VerifyModes {
            sampled: signal == VerifierSignal::Samples,
            logprob: signal == VerifierSignal::Logprob,
        };
        Ok((metric, self.source(metric, request), signal, modes))
    }

    /// The configured model called `name`.
    fn model_named(&self, name: &str) -> Result<&ModelHandle> {
        self.models
            .models()
            .iter()
            .find(|m| m.entry.name == name)
            .ok_or_else(|| AutomixError::Invalid(format!("model {name} is not configured")))
    }

    /// A named route, streamed: `request` straight to the configured model `name`, its
    /// deltas as they arrive (nothing to verify, so nothing to wait for). Returns the model's
    /// API id and the stream.
    pub async fn direct_stream(
        &self,
        name: &str,
        request: ChatRequest,
    ) -> Result<(String, automix_llm::DeltaStream)> {
        let model = self.model_named(name)?;
        let request = ChatRequest {
            model: model.entry.model.clone(),
            n: 1,
            ..request
        };
        let stream = model
            .provider
            .chat_stream(&request)
            .await
            .map_err(|source| AutomixError::Model {
                model: name.to_owned(),
                source,
            })?;
        Ok((model.entry.model.clone(), stream))
    }

    /// A named route: `request` straight to the configured model `name`, no verification.
    pub async fn direct(
        &self,
        query: &QueryRow,
        name: &str,
        request: ChatRequest,
    ) -> Result<RouteOutcome> {
        let started = Instant::now();
        let model = self.model_named(name)?;
        let call = answer(
            model,
            &self.prompts,
            query,
            &AnswerSource::Chat(Box::new(request)),
        )
        .await?;
        let record = CallRecord::answer(name, &call);
        Ok(RouteOutcome {
            id: query.id.clone(),
            model_name: name.to_owned(),
            api_model: model.entry.model.clone(),
            slm_answer: call.text.clone(),
            verification_score: None,
            route_to_llm: false,
            escalation_path: vec![name.to_owned()],
            steps: Vec::new(),
            total_tokens: record.tokens.prompt + record.tokens.completion,
            total_cost: record.cost,
            calls: vec![record],
            latency_ms: started.elapsed().as_millis() as u64,
            task_performance: None,
            response: call.text,
            lambda: None,
        })
    }

    fn source(&self, metric: Option<TaskMetric>, request: Option<ChatRequest>) -> AnswerSource {
        match request {
            Some(r) => AnswerSource::Chat(Box::new(r)),
            None => {
                let kind = metric.map_or(TaskKind::ShortAnswer, TaskMetric::task_kind);
                AnswerSource::Templates {
                    kind,
                    max_tokens: answer_budget(kind, &self.collect),
                }
            }
        }
    }

    async fn route_with(
        &self,
        query: &QueryRow,
        request: Option<ChatRequest>,
        options: &RouteOptions,
    ) -> Result<RouteOutcome> {
        if self.config.automix.use_pomdp_router
            && let Some(plan) = self.policy.as_ref().and_then(|p| p.cascade.as_ref())
        {
            return self
                .route_cascade(query, plan, request, options.max_escalations)
                .await;
        }
        let started = Instant::now();
        let (metric, source, signal, modes) = self.prepare(query, request)?;
        let max_escalations = options
            .max_escalations
            .unwrap_or(self.config.automix.max_escalations);
        let mut lambda_used = None;
        let mut calls = Vec::new();
        let mut steps = Vec::new();
        let mut path = Vec::new();
        let mut first_answer = None;
        let mut first_score = None;
        let models = self.models.models();
        let mut kept = None;
        for (i, model) in models.iter().enumerate() {
            let answer = answer(model, &self.prompts, query, &source).await?;
            path.push(model.entry.name.clone());
            calls.push(CallRecord::answer(&model.entry.name, &answer));
            if first_answer.is_none() {
                first_answer = Some(answer.text.clone());
            }
            let last = i + 1 == models.len();
            if last {
                kept = Some((i, answer.text));
                break;
            }
            if i >= max_escalations {
                steps.push(StepRecord {
                    model: model.entry.name.clone(),
                    answer: answer.text.clone(),
                    verification_score: None,
                    decision: Decision::Keep,
                    reason: "max_escalations reached".into(),
                });
                kept = Some((i, answer.text));
                break;
            }
            if !self.config.automix.enable_self_verification {
                steps.push(StepRecord {
                    model: model.entry.name.clone(),
                    answer: answer.text.clone(),
                    verification_score: None,
                    decision: Decision::Keep,
                    reason: "verification off".into(),
                });
                kept = Some((i, answer.text));
                break;
            }
            let v_started = Instant::now();
            let record = verify(&self.verifiers[i], model, query, &answer.text, modes).await?;
            calls.push(CallRecord::verify(&model.entry.name, &record, v_started));
            let run_score = verifier_score(Some(&record), signal);
            if i == 0 {
                first_score = run_score.known();
            }
            let normalised = match metric {
                Some(m) => m.extract(&answer.text, &query.choices),
                None => normalise_answer(&answer.text),
            };
            let (decision, reason, lambda) =
                self.decide(i, run_score, &query.task_name, &normalised, options.lambda)?;
            lambda_used = lambda_used.or(lambda);
            steps.push(StepRecord {
                model: model.entry.name.clone(),
                answer: answer.text.clone(),
                verification_score: run_score.known(),
                decision,
                reason,
            });
            if decision == Decision::Keep {
                kept = Some((i, answer.text));
                break;
            }
        }
        let (index, response) =
            kept.ok_or_else(|| AutomixError::Invalid("the cascade kept no answer".into()))?;
        let model = &models[index];
        let task_performance = match (metric, &query.ground_truth) {
            (Some(m), Some(truth)) => Some(m.score(&response, truth, &query.choices)),
            _ => None,
        };
        Ok(RouteOutcome {
            id: query.id.clone(),
            model_name: model.entry.name.clone(),
            api_model: model.entry.model.clone(),
            slm_answer: first_answer.unwrap_or_default(),
            verification_score: first_score,
            route_to_llm: index > 0,
            escalation_path: path,
            total_tokens: calls
                .iter()
                .map(|c| c.tokens.prompt + c.tokens.completion)
                .sum(),
            total_cost: calls.iter().map(|c| c.cost).sum(),
            calls,
            steps,
            latency_ms: started.elapsed().as_millis() as u64,
            task_performance,
            response,
            lambda: lambda_used,
        })
    }

    /// The N-model cascade: pre-selected start, then the solved decision table.
    async fn route_cascade(
        &self,
        query: &QueryRow,
        plan: &CascadePlan,
        request: Option<ChatRequest>,
        request_max_escalations: Option<usize>,
    ) -> Result<RouteOutcome> {
        let started = Instant::now();
        let (metric, source, signal, modes) = self.prepare(query, request)?;
        let handle = |name: &str| {
            self.models
                .models()
                .iter()
                .position(|m| m.entry.name == name)
                .ok_or_else(|| {
                    AutomixError::Invalid(format!("cascade model {name} is not configured"))
                })
        };
        // With the online belief, its current table decides (and its global start).
        let online_table = self.online.as_ref().map(|o| lock_belief(o).policy());
        let table: &CascadePolicy = online_table.as_deref().unwrap_or(&plan.policy);
        let start = match online_table {
            Some(ref t) => t.start,
            None => plan.start_for(&query.task_name),
        };
        let correct = |text: &str| match (metric, &query.ground_truth) {
            (Some(m), Some(truth)) => Some(m.score(text, truth, &query.choices) >= 0.5),
            _ => None,
        };
        let mut observed = Vec::new();
        let mut calls = Vec::new();
        let mut steps = Vec::new();
        let mut path = Vec::new();
        let mut history = Vec::new();
        let mut current = start.model;
        let mut verify_next = start.verify && self.config.automix.enable_cascade;
        let mut first: Option<(String, Option<f64>)> = None;
        let last = plan.models.len() - 1;
        let response = loop {
            let name = &plan.models[current];
            let index = handle(name)?;
            let model = &self.models.models()[index];
            let answer = answer(model, &self.prompts, query, &source).await?;
            path.push(name.clone());
            calls.push(CallRecord::answer(name, &answer));
            // A request's own cap: past it the current answer is kept unverified.
            let capped = request_max_escalations.is_some_and(|m| path.len() > m);
            if !verify_next || current == last || capped {
                if first.is_none() {
                    first = Some((answer.text.clone(), None));
                }
                observed.push(StepObservation {
                    model: current,
                    verdict: None,
                    correct: correct(&answer.text),
                });
                break answer.text;
            }
            let v_started = Instant::now();
            let verifier = verifier_for(model, self.prompts.clone(), &self.config.automix)?;
            let record = verify(&verifier, model, query, &answer.text, modes).await?;
            calls.push(CallRecord::verify(name, &record, v_started));
            let score = verifier_score(Some(&record), signal).known();
            if first.is_none() {
                first = Some((answer.text.clone(), score));
            }
            observed.push(StepObservation {
                model: current,
                verdict: score.map(|p| p >= 0.5),
                correct: correct(&answer.text),
            });
            history.push((current, table.symbol(score)));
            let action = table.decide(&history);
            let (decision, next) = match action {
                CascadeAction::Keep => (Decision::Keep, None),
                CascadeAction::EscalateTo(j) => (Decision::Escalate, Some((j, true))),
                CascadeAction::AnswerWith(j) => (Decision::Escalate, Some((j, false))),
            };
            steps.push(StepRecord {
                model: name.clone(),
                answer: answer.text.clone(),
                verification_score: score,
                decision,
                reason: format!("cascade policy: {action:?}"),
            });
            match next {
                None => break answer.text,
                Some((j, verify_j)) => {
                    current = j;
                    verify_next = verify_j;
                }
            }
        };
        if let Some(online) = &self.online {
            lock_belief(online).observe(&observed)?;
        }
        let kept = &plan.models[current];
        let index = handle(kept)?;
        let (slm_answer, verification_score) = first.unwrap_or_default();
        Ok(RouteOutcome {
            id: query.id.clone(),
            model_name: kept.clone(),
            api_model: self.models.models()[index].entry.model.clone(),
            task_performance: match (metric, &query.ground_truth) {
                (Some(m), Some(truth)) => Some(m.score(&response, truth, &query.choices)),
                _ => None,
            },
            response,
            slm_answer,
            verification_score,
            route_to_llm: path.len() > 1,
            lambda: None,
            escalation_path: path,
            total_tokens: calls
                .iter()
                .map(|c| c.tokens.prompt + c.tokens.completion)
                .sum(),
            total_cost: calls.iter().map(|c| c.cost).sum(),
            calls,
            steps,
            latency_ms: started.elapsed().as_millis() as u64,
        })
    }

    /// Keep or escalate after model `step` answered with verifier score `score`; with the
    /// λ the policy decided at, when it has a λ family.
    fn decide(
        &self,
        step: usize,
        score: VerifierScore,
        task: &str,
        normalised_answer: &str,
        lambda: Option<f64>,
    ) -> Result<(Decision, String, Option<f64>)> {
        let models = self.models.models();
        if self.config.automix.use_pomdp_router
            && let Some(p) = &self.policy
            && models[step].entry.name == p.small_model
        {
            let evidence = QueryEvidence {
                verifier: score,
                task_name: Some(task),
                small_answer: Some(normalised_answer),
            };
            let reason = match score {
                VerifierScore::Unknown => "unknown score: policy's unknown_confidence rule",
                VerifierScore::Known(_) => "policy",
            };
            return Ok(match lambda {
                Some(l) => (
                    p.policy.decide_at_lambda(&evidence, l)?,
                    format!("{reason} at the request's λ {l}"),
                    Some(l),
                ),
                None => (
                    p.policy.decide_for(&evidence),
                    reason.into(),
                    p.policy.trained_lambda(),
                ),
            });
        }
        let (decision, reason) = self.threshold_rule(score)?;
        Ok((decision, reason, None))
    }

    /// The threshold rule on the verifier score (no trained policy for this step).
    fn threshold_rule(&self, score: VerifierScore) -> Result<(Decision, String)> {
        Ok(match score.known() {
            Some(p) => (
                Decision::from_escalate(p < self.config.automix.verification_threshold),
                format!(
                    "threshold {} on the verifier score",
                    self.config.automix.verification_threshold
                ),
            ),
            None => (
                self.config.hparam.unknown_decision()?,
                "unknown score: hparam.unknown_confidence".into(),
            ),
        })
    }

    /// Routes queries concurrently (up to `max_workers`), keeping input order; a failing
    /// query is reported in its slot and the batch goes on.
    pub async fn route_batch(&self, queries: &[QueryRow]) -> Vec<BatchItem> {
        self.route_batch_with(queries, &RouteOptions::default())
            .await
    }

    /// [`Router::route_batch`] at one operating point for every query.
    pub async fn route_batch_with(
        &self,
        queries: &[QueryRow],
        options: &RouteOptions,
    ) -> Vec<BatchItem> {
        futures::stream::iter(queries.iter().map(|q| async move {
            match self.route_single_with(q, options).await {
                Ok(outcome) => BatchItem {
                    id: q.id.clone(),
                    outcome: Some(outcome),
                    error: None,
                },
                Err(e) => BatchItem {
                    id: q.id.clone(),
                    outcome: None,
                    error: Some(e.to_string()),
                },
            }
        }))
        .buffered(self.config.hparam.max_workers.max(1))
        .collect()
        .await
    }
}
