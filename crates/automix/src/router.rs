//! The [`Router`]: answer with the cheapest model, self-verify, let the meta-verifier keep
//! the answer or escalate to the next model, up to `max_escalations`.

use std::sync::{Arc, Mutex};
use std::time::Instant;

use futures::StreamExt;

use automix_core::belief::StepObservation;
use automix_core::{Decision, VerifierScore};
use automix_llm::ChatRequest;
use automix_verify::{PromptSet, TaskKind, Verifier};

use crate::belief_store::{BeliefSnapshot, posteriors};
use crate::checks::{AnswerCheck, AnswerFacts, first_failed, wants_json};
use crate::config::{CollectSettings, Config};
use crate::dataset::QueryRow;
use crate::error::{AutomixError, Result};
use crate::feedback::{Credit, FeedbackError, FeedbackRefused, RecentRoutes, Scorer};
use crate::models::{ModelHandle, ModelSet};
use crate::pipeline::{AnswerCall, AnswerSource, answer, answer_budget, verifier_for};
use crate::signal::SignalInput;
use crate::strategy::{Evidence, OnlineBelief, RouteState, RoutingStrategy, Start, VERDICT_CUT};
use crate::sync::lock;
use crate::task_metric::{TaskMetric, normalised};

pub use crate::router_settings::RouterSettings;

pub use crate::outcome::{
    BatchItem, CallRecord, FailedCheck, RouteDecision, RouteOptions, RouteOutcome, Routed,
    StepRecord,
};
use crate::outcome::{OutcomeParts, Trace};
use crate::training::RouterPolicy;

/// Routes queries through a cascade of models with a verifier and a meta-verifier.
#[derive(Debug, Clone)]
pub struct Router {
    models: ModelSet,
    prompts: Arc<PromptSet>,
    /// One verifier per model, built once (with its HTTP client when
    /// `verifier_server_url` is set).
    verifiers: Vec<Verifier>,
    strategy: Arc<dyn RoutingStrategy>,
    settings: RouterSettings,
    collect: CollectSettings,
    /// Recent routes that may still get feedback (with an online belief or shadow rows,
    /// the two things a score teaches).
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
        let strategy = crate::strategy::build(config, &models, policy, settings.threshold)?;
        let verifiers = models
            .models()
            .iter()
            .map(|m| verifier_for(m, prompts.clone(), &config.automix))
            .collect::<Result<_>>()?;
        let learns = strategy.online().is_some() || config.automix.shadow.is_some();
        let recent = learns.then(|| Arc::new(Mutex::new(RecentRoutes::default())));
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

    /// What routes: `threshold`, `two-model policy`, `cascade`, `cascade with an online
    /// belief` or `select (enable_cascade: false)` (see [`crate::strategy`]).
    pub fn strategy_name(&self) -> &'static str {
        self.strategy.name()
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

    /// What a dashboard shows of the policy routing: rule, score cuts, frontier, λ grid.
    pub fn policy_view(&self) -> crate::strategy::PolicyView {
        self.strategy.view()
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
        let source = self.source(metric, request, false);
        let call = answer(model, &self.prompts, query, &source).await?;
        let mut trace = Trace::default();
        trace.answered(name, &call);
        Ok(trace.outcome(OutcomeParts {
            query,
            model_name: name,
            api_model: &model.entry.model,
            task_performance: score_of(metric, query, &call.text),
            response: call,
            route_to_llm: false,
            decision: RouteDecision::Direct,
            signal: self.settings.signal,
            fused: self.settings.fused_signals(),
            started,
        }))
    }

    fn source(
        &self,
        metric: Option<TaskMetric>,
        request: Option<ChatRequest>,
        routed: bool,
    ) -> AnswerSource {
        // A routed answer's signal may read its token logprobs; a named route has none.
        let logprobs = routed
            && self
                .settings
                .measured()
                .iter()
                .any(|s| crate::signal::of(*s).wants_answer_logprobs());
        match request {
            Some(mut r) => {
                r.logprobs |= logprobs;
                AnswerSource::Chat(Box::new(r))
            }
            None => {
                let kind = metric.map_or(TaskKind::ShortAnswer, TaskMetric::task_kind);
                AnswerSource::Templates {
                    kind,
                    max_tokens: answer_budget(kind, &self.collect),
                    logprobs,
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
        let mut run = self.begin(query, request, options)?;
        let models = self.models.models();
        loop {
            let model = &models[run.at.model];
            let unverified = self.cut_off_before_answer(&run);
            if live
                && let (Some(reason), AnswerSource::Chat(request)) = (unverified, &run.source)
                // A backend that cannot stream (e.g. the Anthropic dialect) answers whole.
                && let Some(stream) = self.open_stream(model, request).await?
            {
                return self.conclude_live(run, reason, stream).await;
            }
            let mut answer = answer(model, &self.prompts, query, &run.source).await?;
            run.trace.answered(&model.entry.name, &answer);
            match self.after_answer(&mut run, &mut answer, unverified).await? {
                Some(next) => {
                    run.trace.escalations += 1;
                    run.at = next;
                }
                None => return self.conclude(run, answer).await,
            }
        }
    }

    /// A route's start: its id, metric, answer source, escalation cap and first model.
    fn begin<'a>(
        &self,
        query: &'a QueryRow,
        request: Option<ChatRequest>,
        options: &'a RouteOptions,
    ) -> Result<Run<'a>> {
        if let Some(l) = options.lambda {
            automix_core::request_lambda(l)?;
        }
        if options.lambda.is_some() && self.strategy.trained_lambda().is_none() {
            return Err(AutomixError::PolicyUnusable {
                reason: "a request λ needs a policy with a λ family (a calibrated two-model \
                         policy, or a cascade plan trained by this version)"
                    .into(),
            });
        }
        let metric = query.metric.as_deref().map(TaskMetric::parse).transpose()?;
        // The client's own logprobs request: answers asked with logprobs for a signal
        // only return them to a client that asked.
        let client_logprobs = request.as_ref().is_some_and(|r| r.logprobs);
        let source = self.source(metric, request, true);
        let wants_json = match &source {
            AnswerSource::Chat(r) => wants_json(r.extra.get("response_format")),
            AnswerSource::Templates { .. } => false,
        };
        let mut state = RouteState::default();
        let (start, lambda) = self
            .strategy
            .start(&query.task_name, options.lambda, &mut state);
        Ok(Run {
            query,
            options,
            started: Instant::now(),
            route_id: route_id(),
            metric,
            source,
            client_logprobs,
            wants_json,
            max_escalations: options
                .max_escalations
                .unwrap_or(self.settings.max_escalations),
            state,
            start,
            at: start,
            previous: None,
            trace: Trace {
                lambda,
                ..Trace::default()
            },
        })
    }

    /// Known before the answer: it will be kept without verifying, and why (`None` inside
    /// when the policy itself does not verify it: the last model, an unverified start).
    fn cut_off_before_answer(&self, run: &Run<'_>) -> Option<Option<&'static str>> {
        if run.at.model + 1 == self.models.len() || !run.at.verify {
            Some(None)
        } else if run.trace.escalations >= run.max_escalations {
            Some(Some("max_escalations reached"))
        } else if !self.settings.verify {
            Some(Some("verification off"))
        } else {
            None
        }
    }

    /// After an answer: kept unverified (a cut-off, a tool call), or verified and decided by
    /// the strategy. Returns where to go next, `None` to keep it.
    async fn after_answer(
        &self,
        run: &mut Run<'_>,
        answer: &mut AnswerCall,
        unverified: Option<Option<&'static str>>,
    ) -> Result<Option<Start>> {
        let model = &self.models.models()[run.at.model];
        let correct = correctness(run.metric, run.query, &answer.text);
        let facts = AnswerFacts {
            text: &answer.text,
            finish_reason: answer.finish_reason.as_deref(),
            tool_call: answer.tool_calls.is_some(),
            wants_json: run.wants_json,
        };
        let failed = first_failed(&self.settings.checks, &facts);
        if let Some(check) = failed {
            run.trace.check_failed(&model.entry.name, check);
        }
        // A tool call is an action, not an answer a verifier can judge: the first model
        // that makes a well-formed one is kept.
        let cut_off = unverified.or_else(|| {
            answer
                .tool_calls
                .is_some()
                .then_some(Some("tool call: kept unverified"))
        });
        if let Some(reason) = cut_off {
            // Kept anyway: a failed check is reported, not hidden.
            let reason = match (failed, reason) {
                (Some(c), Some(r)) => Some(format!("{r}; answer check failed: {}", c.name())),
                (Some(c), None) => Some(format!(
                    "kept unverified; answer check failed: {}",
                    c.name()
                )),
                (None, r) => r.map(str::to_owned),
            };
            run.trace
                .kept_unverified(&model.entry.name, &answer.text, reason.as_deref());
            self.strategy
                .observe(&mut run.state, run.at.model, None, correct)?;
            return Ok(None);
        }
        if let Some(check) = failed {
            self.strategy
                .observe(&mut run.state, run.at.model, None, correct)?;
            return self.escalate_on_check(run, answer, check);
        }
        let (score, modal) = self.verify_step(run, answer).await?;
        if let Some(modal) = modal {
            // Answer consistency keeps the modal answer, not an outlier first draw.
            answer.text = modal;
        }
        self.strategy
            .observe(&mut run.state, run.at.model, score.known(), correct)?;
        let normalised = normalised(run.metric, &answer.text, &run.query.choices);
        let evidence = Evidence {
            model: run.at.model,
            score,
            task: &run.query.task_name,
            normalised_answer: &normalised,
            lambda: run.options.lambda,
        };
        let step = self
            .strategy
            .step(&evidence, self.models.len(), &mut run.state)?;
        run.trace
            .decided(&model.entry.name, &answer.text, score, &step);
        run.previous = Some((run.at.model, normalised));
        Ok(step.next)
    }

    /// A failed answer check where the runner would verify: escalate without the verifier
    /// call. The strategy picks where to (it sees the lowest confidence, as if the verifier
    /// had said "incorrect"); if it would keep, the next model in price order answers.
    fn escalate_on_check(
        &self,
        run: &mut Run<'_>,
        answer: &AnswerCall,
        check: AnswerCheck,
    ) -> Result<Option<Start>> {
        let model = &self.models.models()[run.at.model];
        // The failed answer is what the next model's `previous_agreement` compares with,
        // as in the rows.
        let normalised = normalised(run.metric, &answer.text, &run.query.choices);
        run.previous = Some((run.at.model, normalised));
        let lowest = VerifierScore::from_option(Some(0.0))?;
        let evidence = Evidence {
            model: run.at.model,
            score: lowest,
            task: &run.query.task_name,
            normalised_answer: "",
            lambda: run.options.lambda,
        };
        let mut step = self
            .strategy
            .step(&evidence, self.models.len(), &mut run.state)?;
        let next = step.next.unwrap_or(Start {
            model: run.at.model + 1,
            verify: true,
        });
        step.decision = Decision::Escalate;
        step.next = Some(next);
        step.reason = format!(
            "answer check failed: {} (no verification call)",
            check.name()
        );
        run.trace.decided(
            &model.entry.name,
            &answer.text,
            VerifierScore::Unknown,
            &step,
        );
        Ok(step.next)
    }

    /// A route whose last answer streams: what is known now, and the stream.
    async fn conclude_live(
        &self,
        mut run: Run<'_>,
        reason: Option<&'static str>,
        stream: automix_llm::DeltaStream,
    ) -> Result<Routed> {
        let name = &self.models.models()[run.at.model].entry.name;
        run.trace.streaming(name, reason);
        self.strategy
            .observe(&mut run.state, run.at.model, None, None)?;
        let partial = AnswerCall {
            text: String::new(),
            usage: automix_llm::Usage::default(),
            cost: 0.0,
            latency_ms: 0,
            finish_reason: None,
            tool_calls: None,
            logprobs: None,
        };
        let Routed::Whole(outcome) = self.conclude(run, partial).await? else {
            return Err(AutomixError::Internal(
                "conclude returned a live route".into(),
            ));
        };
        Ok(Routed::Live { outcome, stream })
    }

    /// The end of a route: remembered for feedback, folded into the online belief, and its
    /// outcome with `response` kept.
    async fn conclude(&self, run: Run<'_>, mut response: AnswerCall) -> Result<Routed> {
        if !run.client_logprobs {
            response.logprobs = None;
        }
        self.remember(&run, run.at.model);
        self.strategy.finish(run.state).await?;
        let (kept, route_id) = (run.at.model, run.route_id);
        let mut outcome = self.finish(
            run.query,
            run.metric,
            run.start,
            kept,
            response,
            run.trace,
            run.started,
        );
        outcome.route_id = route_id;
        Ok(Routed::Whole(outcome))
    }

    /// Remembers `run`, which kept model `kept`'s answer, for feedback (with an online
    /// belief or a shadow): what the belief observed of that answer, else (a strategy
    /// without a belief) just whose answer it was.
    fn remember(&self, run: &Run<'_>, kept: usize) {
        let Some(recent) = &self.recent else {
            return;
        };
        let observed = run.state.kept().unwrap_or(StepObservation {
            model: kept,
            verdict: None,
            correct: None,
        });
        lock(recent).remember(
            run.route_id.clone(),
            run.options.tenant.clone(),
            observed,
            Instant::now(),
        );
    }

    /// A client's score (in [0, 1]; ≥ 0.5 counts as correct) for the answer of route `id`:
    /// the model that gave it is credited once, in the online belief when there is one
    /// (shared by replicas when the belief lives in a store); the returned [`Credit`] says
    /// which model's answer it scored, for the shadow's rows.
    ///
    /// `admit` runs after the route is found and before it is credited (the caller's quota):
    /// when it refuses, the route keeps its one score and its error is returned.
    pub async fn feedback<E>(
        &self,
        id: &str,
        score: f64,
        by: Scorer<'_>,
        admit: impl FnOnce() -> std::result::Result<(), E>,
    ) -> std::result::Result<Credit, FeedbackRefused<E>> {
        let Some(recent) = &self.recent else {
            return Err(FeedbackError::NoBelief.into());
        };
        let observation = lock(recent).score(id, score, by, Instant::now())?;
        if let Err(e) = admit() {
            lock(recent).unscore(id);
            return Err(FeedbackRefused::Admission(e));
        }
        let online = self.strategy.online();
        // Learning cannot fail a feedback the route memory accepted: a store that is down
        // keeps the count for later (see `belief_store`).
        if let Some(online) = &online
            && let Err(e) = online.observe(&[observation])
        {
            eprintln!("automix: folding feedback into the belief failed: {e}");
        }
        let names = self.models.names();
        Ok(Credit {
            model: names.get(observation.model).map(|n| (*n).to_owned()),
            score,
            belief: online.is_some(),
        })
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
        start: Start,
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
            fused: self.settings.fused_signals(),
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
    /// Also returns, for answer consistency, the modal sample's text when `answer` is not
    /// the modal one.
    async fn verify_step(
        &self,
        run: &mut Run<'_>,
        call: &AnswerCall,
    ) -> Result<(VerifierScore, Option<String>)> {
        let answer = call.text.as_str();
        let (index, query) = (run.at.model, run.query);
        let model = &self.models.models()[index];
        let signals = self.settings.measured_for(&model.entry.name);
        let started = Instant::now();
        let input = SignalInput {
            model,
            verifier: &self.verifiers[index],
            prompts: &self.prompts,
            query,
            source: &run.source,
            answer,
            answer_logprobs: call.logprobs.as_deref(),
            // Only the next cheaper model's answer, as the rows record it.
            previous_answer: run
                .previous
                .as_ref()
                .filter(|(m, _)| m + 1 == index)
                .map(|(_, a)| a.as_str()),
            answer_samples: self.settings.answer_samples,
            temperature: self.settings.answer_temperature,
        };
        let (record, modal) = crate::signal::measure(&signals, &input).await?;
        let trace = &mut run.trace;
        trace
            .calls
            .push(CallRecord::verify(&model.entry.name, &record, started));
        let score = self.settings.score(&model.entry.name, &record);
        trace.verified = true;
        if trace.path.len() == 1 {
            trace.first_score = score.known();
        }
        Ok((score, modal))
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

/// One route in progress: what the runner carries from step to step.
struct Run<'a> {
    query: &'a QueryRow,
    options: &'a RouteOptions,
    started: Instant,
    route_id: String,
    metric: Option<TaskMetric>,
    source: AnswerSource,
    /// The client asked for logprobs (else the kept answer's are not returned).
    client_logprobs: bool,
    /// The request asked for JSON (`response_format`), for the `invalid_json` check.
    wants_json: bool,
    max_escalations: usize,
    state: RouteState,
    start: Start,
    at: Start,
    /// The last model that answered and its normalised answer (`previous_agreement`).
    previous: Option<(usize, String)>,
    trace: Trace,
}

/// A random-enough prefix for route ids: unique per router.
/// A fresh route id: 128 bits from the thread's CSPRNG (ChaCha, seeded from the OS), so ids
/// cannot be guessed from one another; feedback names a route by it.
fn route_id() -> String {
    format!("{:032x}", rand::random::<u128>())
}
