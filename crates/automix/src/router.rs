//! The [`Router`]: answer with the cheapest model, self-verify, let the meta-verifier keep
//! the answer or escalate to the next model, up to `max_escalations`.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::StreamExt;
use serde::{Deserialize, Serialize};

use automix_core::belief::{BeliefConfig, OnlineCascade};
use automix_core::{Decision, VerifierScore};
use automix_llm::ChatRequest;
use automix_verify::{PromptSet, TaskKind, Verifier, normalise_answer};

use crate::belief_store::{
    BeliefSnapshot, BeliefStore, RedisStore, SharedBelief, TableInputs, posteriors,
};
use crate::config::{CollectSettings, Config, VerifierSignal};
use crate::dataset::{QueryRow, Tokens, VerificationRecord};
use crate::error::{AutomixError, Result};
use crate::feedback::{FeedbackError, FeedbackRefused, RecentRoutes, Scorer};
use crate::models::{ModelHandle, ModelSet};
use crate::pipeline::{
    AnswerCall, AnswerSource, VerifyModes, answer, answer_budget, verifier_for, verify,
};
use crate::strategy::{
    Evidence, OnlineBelief, RouteState, Step, Strategy, ThresholdRule, VERDICT_CUT,
};
use crate::sync::lock;
use crate::task_metric::TaskMetric;
use crate::training::{CascadePlan, RouterPolicy, verifier_score};

/// A request's own routing settings; `None` fields take the trained or configured value.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RouteOptions {
    /// λ of the two-model calibrated policy: escalate where the expected gain is at least
    /// λ × the cost of an escalation.
    pub lambda: Option<f64>,
    /// Most escalations for this request (0 keeps the first answer).
    pub max_escalations: Option<usize>,
    /// Who asked (the proxy's client identity, never a key): only this tenant, or an
    /// operator, may score the route.
    pub tenant: Option<String>,
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
    /// Whether the kept answer is not the cheapest model's.
    pub route_to_llm: bool,
    /// How the route ended.
    pub decision: RouteDecision,
    /// This route's id (unique per router): what feedback names.
    #[serde(default)]
    pub route_id: String,
    /// The verifier signal the decisions read (`None` when nothing was verified).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signal: Option<VerifierSignal>,
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
    /// The kept reply's `tool_calls`, verbatim, when the model called tools.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool_calls: Option<serde_json::Value>,
    /// The kept reply's per-token logprobs, when the request asked for them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub logprobs: Option<Vec<automix_llm::TokenLogprob>>,
    /// The λ the two-model policy decided at (a request's own, else the trained one);
    /// `None` when no λ family decided (threshold rule, cascade, named route).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lambda: Option<f64>,
}

/// How a route ended: a fact for labels, headers and metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RouteDecision {
    /// The first model's answer was kept.
    Kept,
    /// A later model's answer was kept after an escalation.
    Escalated,
    /// The policy chose where to start (a model other than the cheapest, or no
    /// verification) and that answer was kept.
    Preselected,
    /// A named route: one model, nothing verified.
    Direct,
}

impl RouteDecision {
    /// The label in headers and the `automix` field.
    pub fn label(self) -> &'static str {
        match self {
            Self::Kept => "keep",
            Self::Escalated => "escalate",
            Self::Preselected => "preselect",
            Self::Direct => "direct",
        }
    }
}

/// A routed chat whose kept answer may still be arriving.
pub enum Routed {
    /// The whole answer (it was verified, or the route was asked not to stream).
    Whole(RouteOutcome),
    /// The kept model answers unverified and its tokens stream as they arrive: `outcome`
    /// has everything decided (path, steps, decision, the calls before this one; its
    /// `response` is empty and the streamed call's usage is unknown).
    Live {
        /// The route so far.
        outcome: RouteOutcome,
        /// The kept model's deltas.
        stream: automix_llm::DeltaStream,
    },
}

impl Routed {
    /// The outcome of a route asked not to stream (a live stream cannot occur then).
    fn into_whole(self) -> RouteOutcome {
        match self {
            Self::Whole(o) | Self::Live { outcome: o, .. } => o,
        }
    }
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

/// The routing settings, resolved from the config once (ripgrep's `HiArgs`): how the keys
/// interact is decided here, and routing reads only these typed values.
#[derive(Debug, Clone)]
pub struct RouterSettings {
    /// Verify answers (`enable_self_verification`); off keeps the start answer.
    pub verify: bool,
    /// Which verifier score decisions read: the policy's, else `use_logprob_verification`.
    pub signal: VerifierSignal,
    /// Most escalations per query (`max_escalations`; a request may lower or raise it).
    pub max_escalations: usize,
    /// The rule on steps no trained policy covers.
    pub threshold: ThresholdRule,
    /// Concurrent queries of a batch.
    pub max_workers: usize,
}

impl RouterSettings {
    /// Resolves the settings of `config` for `policy`.
    pub fn resolve(config: &Config, policy: Option<&RouterPolicy>) -> Result<Self> {
        let a = &config.automix;
        let signal = match policy {
            Some(p) if a.use_pomdp_router => p.verifier_signal,
            _ if a.use_logprob_verification => VerifierSignal::Logprob,
            _ => VerifierSignal::Samples,
        };
        Ok(Self {
            verify: a.enable_self_verification,
            signal,
            max_escalations: a.max_escalations,
            threshold: ThresholdRule {
                threshold: a.verification_threshold,
                unknown: config.hparam.unknown_confidence,
            },
            max_workers: config.hparam.max_workers.max(1),
        })
    }
}

/// Routes queries through a cascade of models with a verifier and a meta-verifier.
#[derive(Debug, Clone)]
pub struct Router {
    models: ModelSet,
    prompts: Arc<PromptSet>,
    /// One verifier per model, built once (with its HTTP client when
    /// `verifier_server_url` is set).
    verifiers: Vec<Verifier>,
    strategy: Strategy,
    settings: RouterSettings,
    collect: CollectSettings,
    /// Recent routes that may still get feedback (only with an online belief).
    recent: Option<Arc<Mutex<RecentRoutes>>>,
}

impl Router {
    /// A router over `models` (cheapest first). The policy picks the strategy (see
    /// [`crate::strategy`]); without one, or with `use_pomdp_router: false`, every step uses
    /// `verification_threshold`.
    pub fn new(
        config: &Config,
        models: ModelSet,
        prompts: Arc<PromptSet>,
        policy: Option<RouterPolicy>,
    ) -> Result<Self> {
        if models.len() < 2 {
            return Err(AutomixError::TooFewModels {
                what: "routing",
                needed: 2,
                got: models.len(),
            });
        }
        let settings = RouterSettings::resolve(config, policy.as_ref())?;
        let policy = policy.filter(|_| config.automix.use_pomdp_router);
        let strategy = strategy_for(config, &models, policy, settings.threshold)?;
        let verifiers = models
            .models()
            .iter()
            .map(|m| verifier_for(m, prompts.clone(), &config.automix))
            .collect::<Result<_>>()?;
        let recent = strategy
            .online()
            .map(|_| Arc::new(Mutex::new(RecentRoutes::default())));
        Ok(Self {
            models,
            prompts,
            verifiers,
            strategy,
            settings,
            collect: config.collect.clone(),
            recent,
        })
    }

    /// The models, cheapest first.
    pub fn models(&self) -> &ModelSet {
        &self.models
    }

    /// Routes one query.
    pub async fn route_single(&self, query: &QueryRow) -> Result<RouteOutcome> {
        self.route_with(query, None, &RouteOptions::default(), false)
            .await
            .map(Routed::into_whole)
    }

    /// Routes one query at the request's own operating point.
    pub async fn route_single_with(
        &self,
        query: &QueryRow,
        options: &RouteOptions,
    ) -> Result<RouteOutcome> {
        self.route_with(query, None, options, false)
            .await
            .map(Routed::into_whole)
    }

    /// Routes a client's chat request: `query` holds the question the verifier sees (the last
    /// user message); every model is asked with `request` itself.
    pub async fn route_chat(&self, query: &QueryRow, request: ChatRequest) -> Result<RouteOutcome> {
        self.route_with(query, Some(request), &RouteOptions::default(), false)
            .await
            .map(Routed::into_whole)
    }

    /// [`Router::route_chat`] at the request's own operating point.
    pub async fn route_chat_with(
        &self,
        query: &QueryRow,
        request: ChatRequest,
        options: &RouteOptions,
    ) -> Result<RouteOutcome> {
        self.route_with(query, Some(request), options, false)
            .await
            .map(Routed::into_whole)
    }

    /// The trained λ of the two-model policy when requests may choose their own: a
    /// calibrated policy that is not routed through a cascade. `None` otherwise.
    pub fn lambda_family(&self) -> Option<f64> {
        self.strategy.trained_lambda()
    }

    /// The configured model called `name`.
    fn model_named(&self, name: &str) -> Result<&ModelHandle> {
        self.models
            .models()
            .iter()
            .find(|m| m.entry.name == name)
            .ok_or_else(|| AutomixError::UnknownModel {
                name: name.to_owned(),
                known: self.models.names().join(", "),
            })
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
        self.one_model(query, name, Some(request)).await
    }

    /// The configured model `name` alone, asked with the answer templates and scored against
    /// the query's ground truth: what always calling that model would give (for comparisons).
    pub async fn alone(&self, query: &QueryRow, name: &str) -> Result<RouteOutcome> {
        self.one_model(query, name, None).await
    }

    async fn one_model(
        &self,
        query: &QueryRow,
        name: &str,
        request: Option<ChatRequest>,
    ) -> Result<RouteOutcome> {
        let started = Instant::now();
        let model = self.model_named(name)?;
        let metric = query.metric.as_deref().map(TaskMetric::parse).transpose()?;
        let source = self.source(metric, request);
        let call = answer(model, &self.prompts, query, &source).await?;
        let record = CallRecord::answer(name, &call);
        Ok(RouteOutcome {
            id: query.id.clone(),
            model_name: name.to_owned(),
            api_model: model.entry.model.clone(),
            slm_answer: call.text.clone(),
            verification_score: None,
            route_to_llm: false,
            decision: RouteDecision::Direct,
            route_id: String::new(),
            signal: None,
            escalation_path: vec![name.to_owned()],
            steps: Vec::new(),
            total_tokens: record.tokens.prompt + record.tokens.completion,
            total_cost: record.cost,
            calls: vec![record],
            latency_ms: started.elapsed().as_millis() as u64,
            task_performance: score_of(metric, query, &call.text),
            tool_calls: call.tool_calls,
            logprobs: call.logprobs,
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

    /// The step runner: every strategy's route goes through here. With `live`, an answer
    /// that will be kept unverified (the last model, a start the policy does not verify, the
    /// escalation cap, verification off) is not awaited: its stream is returned instead.
    async fn route_with(
        &self,
        query: &QueryRow,
        request: Option<ChatRequest>,
        options: &RouteOptions,
        live: bool,
    ) -> Result<Routed> {
        let started = Instant::now();
        let route_id = route_id();
        let metric = query.metric.as_deref().map(TaskMetric::parse).transpose()?;
        let source = self.source(metric, request);
        let max_escalations = options
            .max_escalations
            .unwrap_or(self.settings.max_escalations);
        let models = self.models.models();
        let mut state = RouteState::default();
        if options.lambda.is_some() && self.strategy.trained_lambda().is_none() {
            return Err(AutomixError::PolicyUnusable {
                reason: "a request λ needs a policy with a λ family (a calibrated two-model \
                         policy, or a cascade plan trained by this version)"
                    .into(),
            });
        }
        let (start, lambda) = self
            .strategy
            .start(&query.task_name, options.lambda, &mut state);
        let mut at = start;
        let mut trace = Trace {
            lambda,
            ..Trace::default()
        };
        let (kept, response) = loop {
            let model = &models[at.model];
            // Known before the answer: it will be kept without verifying.
            let unverified = if at.model + 1 == models.len() || !at.verify {
                Some(None)
            } else if trace.escalations >= max_escalations {
                Some(Some("max_escalations reached"))
            } else if !self.settings.verify {
                Some(Some("verification off"))
            } else {
                None
            };
            let live_request = match (live, unverified, &source) {
                (true, Some(_), AnswerSource::Chat(request)) => Some(request),
                _ => None,
            };
            // A backend that cannot stream (e.g. the Anthropic dialect) answers whole.
            let stream = match live_request {
                Some(request) => self.open_stream(model, request).await?,
                None => None,
            };
            if let (Some(stream), Some(reason)) = (stream, unverified) {
                trace.streaming(&model.entry.name, reason);
                self.strategy.observe(&mut state, at.model, None, None)?;
                self.remember(&route_id, options.tenant.as_deref(), &state);
                self.strategy.finish(state).await?;
                let partial = AnswerCall {
                    text: String::new(),
                    usage: automix_llm::Usage::default(),
                    cost: 0.0,
                    latency_ms: 0,
                    finish_reason: None,
                    tool_calls: None,
                    logprobs: None,
                };
                let mut outcome =
                    self.finish(query, metric, start, at.model, partial, trace, started);
                outcome.route_id = route_id;
                return Ok(Routed::Live { outcome, stream });
            }
            let answer = answer(model, &self.prompts, query, &source).await?;
            trace.answered(&model.entry.name, &answer);
            let correct = correctness(metric, query, &answer.text);
            // A tool call is an action, not an answer a verifier can judge: the first model
            // that makes a well-formed one is kept.
            let cut_off = unverified.or_else(|| {
                answer
                    .tool_calls
                    .is_some()
                    .then_some(Some("tool call: kept unverified"))
            });
            if let Some(reason) = cut_off {
                trace.kept_unverified(&model.entry.name, &answer.text, reason);
                self.strategy.observe(&mut state, at.model, None, correct)?;
                break (at.model, answer);
            }
            let score = self
                .verify_step(model, at.model, query, &answer.text, &mut trace)
                .await?;
            self.strategy
                .observe(&mut state, at.model, score.known(), correct)?;
            let normalised = match metric {
                Some(m) => m.extract(&answer.text, &query.choices),
                None => normalise_answer(&answer.text),
            };
            let evidence = Evidence {
                model: at.model,
                score,
                task: &query.task_name,
                normalised_answer: &normalised,
                lambda: options.lambda,
            };
            let step = self.strategy.step(&evidence, models.len(), &mut state)?;
            trace.decided(&model.entry.name, &answer.text, score, &step);
            match step.next {
                Some(next) => {
                    trace.escalations += 1;
                    at = next;
                }
                None => break (at.model, answer),
            }
        };
        self.remember(&route_id, options.tenant.as_deref(), &state);
        self.strategy.finish(state).await?;
        let mut outcome = self.finish(query, metric, start, kept, response, trace, started);
        outcome.route_id = route_id;
        Ok(Routed::Whole(outcome))
    }

    /// Remembers route `id` of `tenant` for feedback (with an online belief).
    fn remember(&self, id: &str, tenant: Option<&str>, state: &RouteState) {
        if let (Some(recent), Some(kept)) = (&self.recent, state.kept()) {
            lock(recent).remember(
                id.to_owned(),
                tenant.map(str::to_owned),
                kept,
                Instant::now(),
            );
        }
    }

    /// A client's score (in [0, 1]; ≥ 0.5 counts as correct) for the answer of route `id`:
    /// the model that gave it is credited once, in the online belief (shared by replicas when
    /// the belief lives in a store).
    ///
    /// `admit` runs after the route is found and before it is credited (the caller's quota):
    /// when it refuses, the route keeps its one score and its error is returned.
    pub async fn feedback<E>(
        &self,
        id: &str,
        score: f64,
        by: Scorer<'_>,
        admit: impl FnOnce() -> std::result::Result<(), E>,
    ) -> std::result::Result<(), FeedbackRefused<E>> {
        let (Some(recent), Some(online)) = (&self.recent, self.strategy.online()) else {
            return Err(FeedbackError::NoBelief.into());
        };
        let observation = lock(recent).score(id, score, by, Instant::now())?;
        if let Err(e) = admit() {
            lock(recent).unscore(id);
            return Err(FeedbackRefused::Admission(e));
        }
        // Learning cannot fail a feedback the route memory accepted: a store that is down
        // keeps the count for later (see `belief_store`).
        if let Err(e) = online.observe(&[observation]).await {
            eprintln!("automix: folding feedback into the belief failed: {e}");
        }
        Ok(())
    }

    /// Hands what `old`'s shared belief has not yet sent to this router's (a reload):
    /// pending feedback survives the swap and reaches the store once.
    pub async fn inherit_belief(&self, old: &Router) {
        if let (Some(new), Some(old)) = (self.strategy.online(), old.strategy.online())
            && let (OnlineBelief::Shared(new), OnlineBelief::Shared(old)) = (&**new, &**old)
        {
            new.inherit(old).await;
        }
    }

    /// The online belief as operators see it (synced with its store first); `None` without
    /// one.
    pub async fn belief_snapshot(&self) -> Option<BeliefSnapshot> {
        Some(match self.strategy.online()?.as_ref() {
            OnlineBelief::Shared(s) => s.snapshot().await,
            OnlineBelief::Local(o) => {
                let o = lock(o);
                let (theta, tpr, fpr) = o.belief().mean();
                BeliefSnapshot {
                    store: "memory",
                    healthy: true,
                    updates: o.updates() as u64,
                    pending: 0,
                    store_errors: 0,
                    models: posteriors(o.names(), &theta, &tpr, &fpr),
                    table: (*o.policy()).clone(),
                }
            }
        })
    }

    /// Whether the online belief's store answers (`None` without a shared belief).
    pub fn belief_healthy(&self) -> Option<bool> {
        match self.strategy.online()?.as_ref() {
            OnlineBelief::Shared(s) => Some(s.healthy()),
            OnlineBelief::Local(_) => None,
        }
    }

    /// The outcome of a route that kept model `kept`'s `response`.
    #[allow(clippy::too_many_arguments)] // the runner's state at the end, in one place
    fn finish(
        &self,
        query: &QueryRow,
        metric: Option<TaskMetric>,
        start: crate::strategy::Start,
        kept: usize,
        response: AnswerCall,
        trace: Trace,
        started: Instant,
    ) -> RouteOutcome {
        let decision = if trace.escalations > 0 {
            RouteDecision::Escalated
        } else if start.model != 0 || !start.verify {
            RouteDecision::Preselected
        } else {
            RouteDecision::Kept
        };
        let model = &self.models.models()[kept];
        trace.outcome(OutcomeParts {
            query,
            model_name: &model.entry.name,
            api_model: &model.entry.model,
            task_performance: score_of(metric, query, &response.text),
            response,
            route_to_llm: kept != 0,
            decision,
            signal: self.settings.signal,
            started,
        })
    }

    /// `request` to `model` as a stream of one choice; `None` when its backend cannot stream.
    async fn open_stream(
        &self,
        model: &ModelHandle,
        request: &ChatRequest,
    ) -> Result<Option<automix_llm::DeltaStream>> {
        let request = ChatRequest {
            model: model.entry.model.clone(),
            n: 1,
            ..request.clone()
        };
        match model.provider.chat_stream(&request).await {
            Ok(stream) => Ok(Some(stream)),
            Err(automix_llm::LlmError::Unsupported(_)) => Ok(None),
            Err(source) => Err(AutomixError::Model {
                model: model.entry.name.clone(),
                source,
            }),
        }
    }

    /// Routes a client's chat request for a streaming reply: when the answer the client gets
    /// will not be verified, its tokens stream as the model sends them
    /// ([`Routed::Live`]); otherwise the whole verified answer ([`Routed::Whole`]).
    pub async fn route_chat_streaming(
        &self,
        query: &QueryRow,
        request: ChatRequest,
        options: &RouteOptions,
    ) -> Result<Routed> {
        self.route_with(query, Some(request), options, true).await
    }

    /// Verifies `answer` of model `index` and records the call; the score under the
    /// configured signal.
    async fn verify_step(
        &self,
        model: &ModelHandle,
        index: usize,
        query: &QueryRow,
        answer: &str,
        trace: &mut Trace,
    ) -> Result<VerifierScore> {
        let signal = self.settings.signal;
        let modes = VerifyModes {
            sampled: signal == VerifierSignal::Samples,
            logprob: signal == VerifierSignal::Logprob,
        };
        let started = Instant::now();
        let record = verify(&self.verifiers[index], model, query, answer, modes).await?;
        trace
            .calls
            .push(CallRecord::verify(&model.entry.name, &record, started));
        let score = verifier_score(Some(&record), signal);
        trace.verified = true;
        if trace.path.len() == 1 {
            trace.first_score = score.known();
        }
        Ok(score)
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
        .buffered(self.settings.max_workers)
        .collect()
        .await
    }
}

/// The strategy of `policy` over `models`, every name in it matched to a model now.
fn strategy_for(
    config: &Config,
    models: &ModelSet,
    policy: Option<RouterPolicy>,
    threshold: ThresholdRule,
) -> Result<Strategy> {
    let names = models.names();
    let index_of = |name: &str| {
        names
            .iter()
            .position(|n| *n == name)
            .ok_or_else(|| AutomixError::PolicyUnusable {
                reason: format!(
                    "it is for model {name}, which is not among the router's models ({})",
                    names.join(", ")
                ),
            })
    };
    let Some(p) = policy else {
        if config.automix.online_belief && config.automix.use_pomdp_router {
            return Err(AutomixError::PolicyUnusable {
                reason: "automix.online_belief needs a policy trained with --cascade".into(),
            });
        }
        return Ok(Strategy::Threshold(threshold));
    };
    if let Some(plan) = p.cascade {
        let index = plan
            .models
            .iter()
            .map(|m| index_of(m))
            .collect::<Result<Vec<_>>>()?;
        let online = if config.automix.online_belief {
            Some(Arc::new(online_belief(config, &plan)?))
        } else {
            None
        };
        let family = plan
            .lambda_family
            .iter()
            .map(|t| (t.lambda, Arc::new(t.policy.clone())))
            .collect();
        return Ok(Strategy::Cascade {
            family,
            table: Arc::new(plan.policy.clone()),
            plan: Box::new(plan),
            index,
            online,
        });
    }
    let small = index_of(&p.small_model)?;
    let large = index_of(&p.large_model)?;
    // The policy decides at the first (cheapest) model only: a policy whose small model
    // sorts elsewhere would silently never decide.
    if small != 0 {
        return Err(AutomixError::PolicyUnusable {
            reason: format!(
                "its small model {} is not the router's first (cheapest) model {}; models \
                 are ordered by llm_data price, then size",
                p.small_model, names[0]
            ),
        });
    }
    Ok(Strategy::TwoModel {
        policy: Box::new(p.policy),
        small,
        large,
        fallback: threshold,
    })
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
    let store: Arc<dyn BeliefStore> = match config.automix.belief_store.as_str() {
        "memory" => {
            let local = local_belief(config, plan, rates)?;
            return Ok(OnlineBelief::Local(Mutex::new(local)));
        }
        url => {
            let prefix = config
                .automix
                .belief_key_prefix
                .clone()
                .unwrap_or_else(|| format!("automix:belief:{}", plan_fingerprint(plan)));
            let timeout = Duration::from_millis(config.automix.belief_store_timeout_ms.max(1));
            let ca = match &config.automix.belief_store_ca_file {
                Some(path) => Some(std::fs::read(path).map_err(|e| AutomixError::Setting {
                    key: "automix.belief_store_ca_file",
                    message: format!("{}: {e}", path.display()),
                })?),
                None => None,
            };
            Arc::new(RedisStore::new(url, &prefix, timeout, ca).map_err(|e| {
                AutomixError::Setting {
                    key: "automix.belief_store",
                    message: e.to_string(),
                }
            })?)
        }
    };
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

/// A stable name for `plan`'s shared counts: two policies never share counts.
fn plan_fingerprint(plan: &CascadePlan) -> String {
    // FNV-1a over the plan's models and trained table: stable across processes and builds.
    let text = serde_json::to_string(&(&plan.models, &plan.policy)).unwrap_or_default();
    format!("{:016x}", crate::dataset::fnv1a(text.as_bytes()))
}

/// The particle belief of `plan`, started from its trained rates.
fn local_belief(
    config: &Config,
    plan: &CascadePlan,
    rates: &automix_core::belief::ModelRates,
) -> Result<OnlineCascade> {
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

/// The query's score of `text` against its ground truth, when it has one and a metric.
fn score_of(metric: Option<TaskMetric>, query: &QueryRow, text: &str) -> Option<f64> {
    match (metric, &query.ground_truth) {
        (Some(m), Some(truth)) => Some(m.score(text, truth, &query.choices)),
        _ => None,
    }
}

/// Whether `text` is correct (score at or above the verdict cut), when that is known.
fn correctness(metric: Option<TaskMetric>, query: &QueryRow, text: &str) -> Option<bool> {
    score_of(metric, query, text).map(|s| s >= VERDICT_CUT)
}

/// What a route did so far: calls, steps, path.
#[derive(Debug, Default)]
struct Trace {
    calls: Vec<CallRecord>,
    steps: Vec<StepRecord>,
    path: Vec<String>,
    first_answer: Option<String>,
    first_score: Option<f64>,
    escalations: usize,
    lambda: Option<f64>,
    verified: bool,
}

/// The parts of an outcome the runner knows at the end.
struct OutcomeParts<'a> {
    query: &'a QueryRow,
    model_name: &'a str,
    api_model: &'a str,
    response: AnswerCall,
    task_performance: Option<f64>,
    route_to_llm: bool,
    decision: RouteDecision,
    signal: VerifierSignal,
    started: Instant,
}

impl Trace {
    fn answered(&mut self, model: &str, answer: &AnswerCall) {
        self.path.push(model.to_owned());
        self.calls.push(CallRecord::answer(model, answer));
        self.first_answer.get_or_insert_with(|| answer.text.clone());
    }

    /// Model `model` answers as a live stream, kept unverified.
    fn streaming(&mut self, model: &str, reason: Option<&str>) {
        self.path.push(model.to_owned());
        self.first_answer.get_or_insert_with(String::new);
        self.kept_unverified(model, "", reason);
    }

    fn kept_unverified(&mut self, model: &str, answer: &str, reason: Option<&str>) {
        if let Some(reason) = reason {
            self.steps.push(StepRecord {
                model: model.to_owned(),
                answer: answer.to_owned(),
                verification_score: None,
                decision: Decision::Keep,
                reason: reason.to_owned(),
            });
        }
    }

    fn decided(&mut self, model: &str, answer: &str, score: VerifierScore, step: &Step) {
        self.lambda = self.lambda.or(step.lambda);
        self.steps.push(StepRecord {
            model: model.to_owned(),
            answer: answer.to_owned(),
            verification_score: score.known(),
            decision: step.decision,
            reason: step.reason.clone(),
        });
    }

    fn outcome(self, parts: OutcomeParts<'_>) -> RouteOutcome {
        RouteOutcome {
            id: parts.query.id.clone(),
            model_name: parts.model_name.to_owned(),
            api_model: parts.api_model.to_owned(),
            response: parts.response.text,
            tool_calls: parts.response.tool_calls,
            logprobs: parts.response.logprobs,
            slm_answer: self.first_answer.unwrap_or_default(),
            verification_score: self.first_score,
            route_to_llm: parts.route_to_llm,
            decision: parts.decision,
            route_id: String::new(),
            signal: self.verified.then_some(parts.signal),
            escalation_path: self.path,
            total_tokens: self
                .calls
                .iter()
                .map(|c| c.tokens.prompt + c.tokens.completion)
                .sum(),
            total_cost: self.calls.iter().map(|c| c.cost).sum(),
            calls: self.calls,
            steps: self.steps,
            latency_ms: parts.started.elapsed().as_millis() as u64,
            task_performance: parts.task_performance,
            lambda: self.lambda,
        }
    }
}

/// A random-enough prefix for route ids: unique per router.
/// A fresh route id: 128 bits from the thread's CSPRNG (ChaCha, seeded from the OS), so ids
/// cannot be guessed from one another; feedback names a route by it.
fn route_id() -> String {
    format!("{:032x}", rand::random::<u128>())
}
