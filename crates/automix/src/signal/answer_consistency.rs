//! The answer-consistency signal (`hparam.verifier_signal: answer_consistency`, the seed's
//! Self-Consistency "over sampled answers"): the model answers the same query k more times
//! at `verification_temperature` with distinct seeds (one request with `n = k`, or k requests
//! where the upstream ignores `n`), the answers are normalised by the task metric (option
//! letter, final number, normalised text), and the confidence is the share of the modal
//! answer. Free text (the proxy's chat, F1/CEM/CommonGen tasks) is clustered by token F1
//! ≥ 0.5 instead of exact equality. The entropy of the answer distribution is recorded beside
//! it. The answer kept is the modal one: the original when it agrees, else the first sample
//! that does.

use automix_llm::{ChatRequest, Usage};
use automix_verify::SelfConsistency;

use crate::dataset::QueryRow;
use crate::error::{AutomixError, Result};
use crate::models::ModelHandle;
use crate::pipeline::{AnswerSource, answer_request};
use crate::task_metric::{TaskMetric, normalised, token_f1};

/// Two free-text answers agree at this token F1 or above (SQuAD's usual half-overlap).
const AGREEMENT_F1: f64 = 0.5;

/// What k sampled answers said about one answer.
#[derive(Debug, Clone, PartialEq)]
pub struct AnswerConsistency {
    /// Share of the samples that give the modal answer, in (0, 1].
    pub agreement: f64,
    /// Shannon entropy (nats) of the normalised answers.
    pub entropy: f64,
    /// Samples drawn.
    pub samples: u32,
    /// The modal sample's full text when the original answer is not modal.
    pub modal_text: Option<String>,
    /// Tokens of the sampling calls.
    pub usage: Usage,
}

/// Samples `k` answers of `model` to `query` (asked as `source` asks it, at `temperature`)
/// and measures how they agree with each other and with `original`.
pub async fn sample(
    model: &ModelHandle,
    prompts: &automix_verify::PromptSet,
    query: &QueryRow,
    source: &AnswerSource,
    original: &str,
    k: u32,
    temperature: f32,
) -> Result<AnswerConsistency> {
    let base = answer_request(model, prompts, query, source);
    let request = ChatRequest {
        n: k.max(1),
        temperature: Some(temperature),
        // Distinct seeds come from the backend's `n` fallback (seed + i).
        seed: Some(base.seed.unwrap_or(0).wrapping_add(1)),
        ..base
    };
    let response = model
        .provider
        .chat(&request)
        .await
        .map_err(|source| AutomixError::Model {
            model: format!("{} (answer samples)", model.entry.name),
            source,
        })?;
    let texts: Vec<String> = response.choices.into_iter().map(|c| c.text).collect();
    let metric = query.metric.as_deref().map(TaskMetric::parse).transpose()?;
    Ok(measure(
        &texts,
        original,
        metric,
        &query.choices,
        response.usage,
    ))
}

/// The agreement of `texts` (the samples) and which text to keep.
pub fn measure(
    texts: &[String],
    original: &str,
    metric: Option<TaskMetric>,
    choices: &[(String, String)],
    usage: Usage,
) -> AnswerConsistency {
    let norm = |t: &str| normalised(metric, t, choices);
    let free_text = metric.is_none_or(|m| {
        matches!(
            m,
            TaskMetric::F1 | TaskMetric::Cem | TaskMetric::CommongenCoverage
        )
    });
    let normalised: Vec<String> = texts.iter().map(|t| norm(t)).collect();
    let exact = SelfConsistency::measure(&normalised, str::to_owned);
    let entropy = exact.as_ref().map_or(0.0, |s| s.entropy);
    let same = |a: &str, b: &str| {
        if free_text {
            token_f1(a, b) >= AGREEMENT_F1
        } else {
            a == b
        }
    };
    // The modal sample: the one that agrees with the most samples (first on ties).
    let support = |i: usize| {
        normalised
            .iter()
            .filter(|n| same(&normalised[i], n))
            .count()
    };
    let modal = (0..normalised.len()).max_by(|&a, &b| support(a).cmp(&support(b)).then(b.cmp(&a)));
    let Some(modal) = modal else {
        return AnswerConsistency {
            agreement: 0.0,
            entropy,
            samples: 0,
            modal_text: None,
            usage,
        };
    };
    let agreement = support(modal) as f64 / normalised.len() as f64;
    let original_is_modal = same(&norm(original), &normalised[modal]);
    AnswerConsistency {
        agreement,
        entropy,
        samples: texts.len() as u32,
        modal_text: (!original_is_modal).then(|| texts[modal].clone()),
        usage,
    }
}

/// `answer_consistency`: the share of the modal answer among k sampled answers.
pub(super) struct AnswerConsistencySignal;

#[async_trait::async_trait]
impl super::Signal for AnswerConsistencySignal {
    fn kind(&self) -> crate::config::VerifierSignal {
        crate::config::VerifierSignal::AnswerConsistency
    }

    fn read(&self, record: &crate::dataset::VerificationRecord) -> Option<f64> {
        record.answer_consistency
    }

    /// Samples `answer_samples` answers (none when it is 0: rows say so by leaving the
    /// field out) and records their agreement, entropy, tokens and cost; the modal answer
    /// is the one to keep.
    async fn measure(
        &self,
        input: &super::SignalInput<'_>,
        record: &mut crate::dataset::VerificationRecord,
    ) -> Result<Option<String>> {
        if input.answer_samples == 0 {
            return Ok(None);
        }
        let c = sample(
            input.model,
            input.prompts,
            input.query,
            input.source,
            input.answer,
            input.answer_samples,
            input.temperature,
        )
        .await?;
        record.answer_consistency = (c.samples > 0).then_some(c.agreement);
        record.answer_entropy = (c.samples > 0).then_some(c.entropy);
        record.answer_samples = c.samples;
        super::charge(record, input.model, c.usage);
        Ok(c.modal_text)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn texts(t: &[&str]) -> Vec<String> {
        t.iter().map(|s| (*s).to_owned()).collect()
    }

    #[test]
    fn agreeing_samples_score_one_and_disagreeing_ones_below_a_half() {
        let gsm = Some(TaskMetric::Gsm8k);
        let all = measure(
            &texts(&["#### 4", "it is 4", "4"]),
            "4",
            gsm,
            &[],
            Usage::default(),
        );
        assert_eq!((all.agreement, all.modal_text.clone()), (1.0, None));
        assert_eq!(all.entropy, 0.0);
        let none = measure(&texts(&["1", "2", "3"]), "4", gsm, &[], Usage::default());
        assert!(none.agreement < 0.5, "{none:?}");
        assert!(none.entropy > 1.0);
    }

    #[test]
    fn the_modal_answer_is_kept_when_the_original_disagrees() {
        let gsm = Some(TaskMetric::Gsm8k);
        let m = measure(&texts(&["so 7", "7", "3"]), "5", gsm, &[], Usage::default());
        assert_eq!(m.modal_text.as_deref(), Some("so 7"));
        assert!((m.agreement - 2.0 / 3.0).abs() < 1e-12);
    }

    #[test]
    fn free_text_agrees_by_token_f1() {
        let chat = measure(
            &texts(&["Paris is the capital", "the capital is Paris", "Berlin"]),
            "Paris is the capital of France",
            None,
            &[],
            Usage::default(),
        );
        assert!((chat.agreement - 2.0 / 3.0).abs() < 1e-12, "{chat:?}");
        assert_eq!(chat.modal_text, None);
    }
}
