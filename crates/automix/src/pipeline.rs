//! The steps a query goes through, shared by `collect` and the [`crate::Router`]:
//! ask a model, verify its answer.

use std::sync::Arc;
use std::time::Instant;

use automix_llm::{ChatProvider, ChatRequest, EndpointConfig, HttpBackend, Usage};
use automix_verify::{PromptSet, QueryText, TaskKind, Verifier, VerifierConfig};

use crate::config::{AutomixSettings, CollectSettings};
use crate::dataset::QueryRow;
use crate::error::{AutomixError, Result};
use crate::models::ModelHandle;

/// One answer call.
#[derive(Debug, Clone, PartialEq)]
pub struct AnswerCall {
    /// The model's reply.
    pub text: String,
    /// Tokens used.
    pub usage: Usage,
    /// Money at llm_data prices.
    pub cost: f64,
    /// Wall time of the call.
    pub latency_ms: u64,
    /// The upstream's `finish_reason` (`length` when the answer was cut).
    pub finish_reason: Option<String>,
    /// The reply's `tool_calls`, verbatim, when the model called tools.
    pub tool_calls: Option<serde_json::Value>,
    /// Per-token logprobs, when the request asked for them.
    pub logprobs: Option<Vec<automix_llm::TokenLogprob>>,
}

/// The view of a query the prompts need.
pub fn query_text(query: &QueryRow) -> QueryText<'_> {
    QueryText {
        question: &query.query,
        context: query.context.as_deref(),
        options: &query.choices,
    }
}

/// Max tokens of an answer of this kind.
pub fn answer_budget(kind: TaskKind, collect: &CollectSettings) -> u32 {
    match kind {
        TaskKind::Math => collect.math_max_tokens,
        TaskKind::MultipleChoice | TaskKind::ShortAnswer => collect.answer_max_tokens,
    }
}

/// The greedy templated answer request of `query` for `model` (with the answer's token
/// logprobs when `logprobs`).
fn template_request(
    model: &ModelHandle,
    prompts: &PromptSet,
    query: &QueryRow,
    kind: TaskKind,
    (max_tokens, logprobs): (u32, bool),
) -> ChatRequest {
    ChatRequest {
        temperature: Some(0.0),
        max_tokens: Some(max_tokens),
        seed: Some(0),
        logprobs,
        ..ChatRequest::new(
            model.entry.model.clone(),
            prompts.answer_messages(kind, &query_text(query)),
        )
    }
}

/// The request `source` asks `model` with (before any sampling settings of a signal).
pub fn answer_request(
    model: &ModelHandle,
    prompts: &PromptSet,
    query: &QueryRow,
    source: &AnswerSource,
) -> ChatRequest {
    match source {
        AnswerSource::Templates {
            kind,
            max_tokens,
            logprobs,
        } => template_request(model, prompts, query, *kind, (*max_tokens, *logprobs)),
        AnswerSource::Chat(request) => ChatRequest {
            model: model.entry.model.clone(),
            n: 1,
            ..(**request).clone()
        },
    }
}

/// Asks `model` for a greedy answer (`budget`: max tokens, and whether to ask for the
/// answer's token logprobs).
pub async fn ask(
    model: &ModelHandle,
    prompts: &PromptSet,
    query: &QueryRow,
    kind: TaskKind,
    budget: (u32, bool),
) -> Result<AnswerCall> {
    let request = template_request(model, prompts, query, kind, budget);
    let mut call = call(model, &request).await?;
    call.text = call.text.trim().to_owned();
    Ok(call)
}

/// One chat call to `model`, timed and priced; the text of the first choice, verbatim.
pub(crate) async fn call(model: &ModelHandle, request: &ChatRequest) -> Result<AnswerCall> {
    let started = Instant::now();
    let response = model
        .provider
        .chat(request)
        .await
        .map_err(|source| AutomixError::Model {
            model: model.entry.name.clone(),
            source,
        })?;
    // A reply without choices is an upstream fault, not an empty answer to verify and keep.
    let Some(first) = response.choices.into_iter().next() else {
        return Err(AutomixError::Model {
            model: model.entry.name.clone(),
            source: automix_llm::LlmError::Malformed {
                endpoint: String::new(),
                message: "the reply has no choices".into(),
                body_excerpt: String::new(),
            },
        });
    };
    Ok(AnswerCall {
        text: first.text,
        finish_reason: first.finish_reason,
        tool_calls: first.tool_calls,
        logprobs: first.logprobs,
        cost: model.entry.cost(response.usage),
        usage: response.usage,
        latency_ms: started.elapsed().as_millis() as u64,
    })
}

/// How a model is asked: from the answer templates, or with a client's own chat request
/// (the proxy passes the client's messages and sampling fields through).
#[derive(Debug, Clone)]
pub enum AnswerSource {
    /// The templates for this task kind.
    Templates {
        /// The task kind.
        kind: TaskKind,
        /// Token budget.
        max_tokens: u32,
        /// Ask for the answer's token logprobs (a signal reads them).
        logprobs: bool,
    },
    /// This request, with `model` replaced by each model's API id and `n` = 1.
    Chat(Box<ChatRequest>),
}

/// One answer from `model`, however it is asked.
pub async fn answer(
    model: &ModelHandle,
    prompts: &PromptSet,
    query: &QueryRow,
    source: &AnswerSource,
) -> Result<AnswerCall> {
    if let AnswerSource::Templates {
        kind,
        max_tokens,
        logprobs,
    } = source
    {
        return ask(model, prompts, query, *kind, (*max_tokens, *logprobs)).await;
    }
    call(model, &answer_request(model, prompts, query, source)).await
}

/// The verifier for `model`: itself, or `verifier_server_url` when configured.
pub fn verifier_for(
    model: &ModelHandle,
    prompts: Arc<PromptSet>,
    settings: &AutomixSettings,
) -> Result<Verifier> {
    let (provider, model_id): (Arc<dyn ChatProvider>, String) = match &settings.verifier_server_url
    {
        Some(url) => {
            let backend = HttpBackend::new(EndpointConfig::new(url.clone())).map_err(|source| {
                AutomixError::Model {
                    model: format!("verifier at {url}"),
                    source,
                }
            })?;
            (
                Arc::new(backend),
                settings
                    .verifier_model
                    .clone()
                    .unwrap_or_else(|| model.entry.model.clone()),
            )
        }
        None => (
            model.provider.clone(),
            settings
                .verifier_model
                .clone()
                .unwrap_or_else(|| model.entry.model.clone()),
        ),
    };
    let config = VerifierConfig {
        samples: settings.verification_samples,
        temperature: settings.verification_temperature,
        ..VerifierConfig::new(model_id)
    };
    Ok(Verifier::new(provider, prompts, config))
}
