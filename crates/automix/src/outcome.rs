//! What a route did, as its caller sees it: the calls made, the steps decided, the kept
//! answer (`RouteOutcome`), and the trace the step runner fills in on the way.

use std::time::Instant;

use serde::{Deserialize, Serialize};

use automix_core::{Decision, VerifierScore};

use crate::checks::AnswerCheck;
use crate::config::VerifierSignal;
use crate::dataset::{QueryRow, Tokens, VerificationRecord};
use crate::pipeline::AnswerCall;
use crate::strategy::Step;

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
    pub(crate) fn answer(model: &str, call: &AnswerCall) -> Self {
        Self {
            model: model.to_owned(),
            purpose: "answer".into(),
            tokens: call.usage.into(),
            cost: call.cost,
            latency_ms: call.latency_ms,
            finish_reason: call.finish_reason.clone(),
        }
    }

    pub(crate) fn verify(model: &str, record: &VerificationRecord, started: Instant) -> Self {
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
    /// The query's task (whose per-task policy decided; `chat` for a proxy request that
    /// named none).
    #[serde(default)]
    pub task: String,
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
    /// The verifier signal the decisions read (`None` when nothing was verified); with a
    /// fused policy, `fused_signals` says what they read.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signal: Option<VerifierSignal>,
    /// With a fused policy, every signal whose fused confidence the decisions read.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub fused_signals: Vec<VerifierSignal>,
    /// Models that answered, in order (`models_tried` in JSON, as in the proxy's reply).
    #[serde(rename = "models_tried", alias = "escalation_path")]
    pub escalation_path: Vec<String>,
    /// Every verification step and its decision.
    pub steps: Vec<StepRecord>,
    /// Every model call.
    pub calls: Vec<CallRecord>,
    /// Total tokens.
    pub total_tokens: u64,
    /// Total money at llm_data prices (`cost` in JSON, as in the proxy's reply).
    #[serde(rename = "cost", alias = "total_cost")]
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
    #[serde(default)]
    pub lambda: Option<f64>,
    /// The zero-call answer checks that failed, per model, in order (the last one may be
    /// the kept answer's: reported, not hidden); `answer_checks` in JSON.
    #[serde(default, rename = "answer_checks", alias = "failed_checks")]
    pub failed_checks: Vec<FailedCheck>,
}

/// A zero-call answer check a model's answer failed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FailedCheck {
    /// llm_data name.
    pub model: String,
    /// Which check.
    pub check: AnswerCheck,
}

/// How a route ended: a fact for labels, headers and metrics. In JSON it is its
/// [`RouteDecision::label`], as in `x-automix-decision`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum RouteDecision {
    /// The first model's answer was kept.
    #[serde(rename = "keep", alias = "kept")]
    Kept,
    /// A later model's answer was kept after an escalation.
    #[serde(rename = "escalate", alias = "escalated")]
    Escalated,
    /// The policy chose where to start (a model other than the cheapest, or no
    /// verification) and that answer was kept.
    #[serde(rename = "preselect", alias = "preselected")]
    Preselected,
    /// A named route: one model, nothing verified.
    #[serde(rename = "direct")]
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
    pub(crate) fn into_whole(self) -> RouteOutcome {
        match self {
            Self::Whole(o) | Self::Live { outcome: o, .. } => o,
        }
    }
}

/// A batch entry: the outcome, or the error that query hit (the batch goes on). As JSON it
/// is the outcome's own object (each key once: its `id` is the query's), or `{"id", "error"}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(from = "BatchWire", into = "BatchWire")]
pub struct BatchItem {
    /// Query id.
    pub id: String,
    /// The outcome.
    pub outcome: Option<RouteOutcome>,
    /// The error, if routing failed.
    pub error: Option<String>,
}

/// [`BatchItem`]'s JSON: an outcome, or a failure.
#[derive(Serialize, Deserialize)]
#[serde(untagged)]
enum BatchWire {
    Routed(Box<RouteOutcome>),
    Failed { id: String, error: Option<String> },
}

impl From<BatchItem> for BatchWire {
    fn from(item: BatchItem) -> Self {
        match item.outcome {
            Some(o) => Self::Routed(Box::new(o)),
            None => Self::Failed {
                id: item.id,
                error: item.error,
            },
        }
    }
}

impl From<BatchWire> for BatchItem {
    fn from(wire: BatchWire) -> Self {
        match wire {
            BatchWire::Routed(o) => Self {
                id: o.id.clone(),
                outcome: Some(*o),
                error: None,
            },
            BatchWire::Failed { id, error } => Self {
                id,
                outcome: None,
                error,
            },
        }
    }
}

/// What a route did so far: calls, steps, path.
#[derive(Debug, Default)]
pub(crate) struct Trace {
    pub(crate) calls: Vec<CallRecord>,
    pub(crate) steps: Vec<StepRecord>,
    pub(crate) path: Vec<String>,
    pub(crate) first_answer: Option<String>,
    pub(crate) first_score: Option<f64>,
    pub(crate) escalations: usize,
    pub(crate) lambda: Option<f64>,
    pub(crate) verified: bool,
    pub(crate) failed_checks: Vec<FailedCheck>,
}

/// The parts of an outcome the runner knows at the end.
pub(crate) struct OutcomeParts<'a> {
    pub(crate) query: &'a QueryRow,
    pub(crate) model_name: &'a str,
    pub(crate) api_model: &'a str,
    pub(crate) response: AnswerCall,
    pub(crate) task_performance: Option<f64>,
    pub(crate) route_to_llm: bool,
    pub(crate) decision: RouteDecision,
    pub(crate) signal: VerifierSignal,
    /// The fused signals, empty without a fusion.
    pub(crate) fused: Vec<VerifierSignal>,
    pub(crate) started: Instant,
}

impl Trace {
    pub(crate) fn answered(&mut self, model: &str, answer: &AnswerCall) {
        self.path.push(model.to_owned());
        self.calls.push(CallRecord::answer(model, answer));
        self.first_answer.get_or_insert_with(|| answer.text.clone());
    }

    /// Model `model` answers as a live stream, kept unverified.
    pub(crate) fn streaming(&mut self, model: &str, reason: Option<&str>) {
        self.path.push(model.to_owned());
        self.first_answer.get_or_insert_with(String::new);
        self.kept_unverified(model, "", reason);
    }

    /// Model `model`'s answer failed `check`.
    pub(crate) fn check_failed(&mut self, model: &str, check: AnswerCheck) {
        self.failed_checks.push(FailedCheck {
            model: model.to_owned(),
            check,
        });
    }

    pub(crate) fn kept_unverified(&mut self, model: &str, answer: &str, reason: Option<&str>) {
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

    pub(crate) fn decided(&mut self, model: &str, answer: &str, score: VerifierScore, step: &Step) {
        self.lambda = self.lambda.or(step.lambda);
        self.steps.push(StepRecord {
            model: model.to_owned(),
            answer: answer.to_owned(),
            verification_score: score.known(),
            decision: step.decision,
            reason: step.reason.clone(),
        });
    }

    pub(crate) fn outcome(self, parts: OutcomeParts<'_>) -> RouteOutcome {
        RouteOutcome {
            id: parts.query.id.clone(),
            task: parts.query.task_name.clone(),
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
            fused_signals: if self.verified {
                parts.fused
            } else {
                Vec::new()
            },
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
            failed_checks: self.failed_checks,
        }
    }
}
