//! Signals: what a model's own calls say about its answer, one type per signal behind
//! [`Signal`], one file each. A signal is measured live by the router (`measure`, adding
//! its fields, tokens and cost to the step's [`VerificationRecord`]), measured for every
//! row by `collect` (every signal in [`ALL`]), and read back from a stored record by
//! training, `eval` and the collect summary (`read`).
//!
//! Adding a signal: a new file here with a type that implements [`Signal`], its variant in
//! [`VerifierSignal`] (the name `hparam.verifier_signal` takes), and its line in [`of`]
//! and [`ALL`]. A signal whose value has no field of its own in [`VerificationRecord`]
//! stores it in the record's `signals` map under its name, so old rows load unchanged.
//!
//! | signal (`verifier_signal`) | file | extra calls per verified answer |
//! |---|---|---|
//! | `samples` | `verdict_votes.rs` | one request for k verdicts (or k requests) |
//! | `logprob` | `verdict_logprob.rs` | one greedy verdict with logprobs |
//! | `answer_consistency` | `answer_consistency.rs` | one request for k answers (or k) |
//! | `answer_logprob` | `answer_logprob.rs` | none (the answer is asked with logprobs) |
//! | `previous_agreement` | `previous_agreement.rs` | none (the cheaper model's answer) |

pub mod answer_consistency;
mod answer_logprob;
pub mod previous_agreement;
mod verdict_logprob;
mod verdict_votes;

use async_trait::async_trait;

use crate::config::VerifierSignal;
use crate::dataset::{QueryRow, Tokens, VerificationRecord};
use crate::error::Result;
use crate::models::ModelHandle;
use crate::pipeline::AnswerSource;
use automix_llm::Usage;
use automix_verify::{PromptSet, Verifier};

pub use answer_consistency::AnswerConsistency;

/// What a signal may use to measure one answer.
#[derive(Debug, Clone, Copy)]
pub struct SignalInput<'a> {
    /// The model that answered (its prices are charged).
    pub model: &'a ModelHandle,
    /// Its verifier (the model itself, or `verifier_server_url`).
    pub verifier: &'a Verifier,
    /// The prompt templates.
    pub prompts: &'a PromptSet,
    /// The query.
    pub query: &'a QueryRow,
    /// How the answer was asked (templates, or the client's request).
    pub source: &'a AnswerSource,
    /// The answer.
    pub answer: &'a str,
    /// The answer's token logprobs, when the upstream returned them.
    pub answer_logprobs: Option<&'a [automix_llm::TokenLogprob]>,
    /// The next cheaper model's normalised answer, when that model answered just before
    /// this one in the same query (a cascade escalating one step).
    pub previous_answer: Option<&'a str>,
    /// Answers sampled by sampling signals (`automix.answer_samples`; 0: not measured).
    pub answer_samples: u32,
    /// Their temperature (`verification_temperature`).
    pub temperature: f32,
}

/// One signal: how it is measured live and read back from a stored record.
#[async_trait]
pub trait Signal: Send + Sync {
    /// Which one (its `hparam.verifier_signal` name).
    fn kind(&self) -> VerifierSignal;

    /// Whether the answer must be asked with `logprobs: true` (the signal reads them).
    fn wants_answer_logprobs(&self) -> bool {
        false
    }

    /// Whether it compares with the previous model's answer, so that it is known only for
    /// a model whose next cheaper model answered just before it (a cascade's signal: the
    /// two-model path's small model never has it, and a path that skips is unknown).
    fn reads_previous_answer(&self) -> bool {
        false
    }

    /// Its value in `record` (a probability-like confidence in [0, 1]); `None` when it
    /// was not measured or is unknown.
    fn read(&self, record: &VerificationRecord) -> Option<f64>;

    /// Measures it for `input`'s answer, adding its fields, tokens and cost to `record`.
    /// Returns the text to keep instead of the answer, when the signal picks another
    /// (answer consistency keeps the modal answer).
    async fn measure(
        &self,
        input: &SignalInput<'_>,
        record: &mut VerificationRecord,
    ) -> Result<Option<String>>;
}

/// Every signal, in the order `collect` measures them (votes before the logprob verdict,
/// whose fallback fills the votes' field only when they were not measured).
pub const ALL: [VerifierSignal; 5] = [
    VerifierSignal::Samples,
    VerifierSignal::Logprob,
    VerifierSignal::AnswerConsistency,
    VerifierSignal::AnswerLogprob,
    VerifierSignal::PreviousAgreement,
];

/// The signal of `kind` (the registration).
pub fn of(kind: VerifierSignal) -> &'static dyn Signal {
    match kind {
        VerifierSignal::Samples => &verdict_votes::VerdictVotes,
        VerifierSignal::Logprob => &verdict_logprob::VerdictLogprob,
        VerifierSignal::AnswerConsistency => &answer_consistency::AnswerConsistencySignal,
        VerifierSignal::AnswerLogprob => &answer_logprob::AnswerLogprob,
        VerifierSignal::PreviousAgreement => &previous_agreement::PreviousAgreement,
    }
}

/// The record of `kinds` measured for `input`'s answer (in [`ALL`]'s order), and the
/// text to keep instead of the answer if a signal picked one.
pub async fn measure(
    kinds: &[VerifierSignal],
    input: &SignalInput<'_>,
) -> Result<(VerificationRecord, Option<String>)> {
    let mut record = VerificationRecord {
        logprob_source: "not run".into(),
        ..VerificationRecord::default()
    };
    let mut keep = None;
    for kind in ALL.into_iter().filter(|k| kinds.contains(k)) {
        let before = record.cost;
        if let Some(text) = of(kind).measure(input, &mut record).await? {
            keep = Some(text);
        }
        // What this signal's own calls cost, so training charges a policy only for the
        // signals it routes on (`VerificationRecord::cost_of`).
        let spent = record.cost - before;
        record.signal_costs.insert(kind.name().to_owned(), spent);
    }
    Ok((record, keep))
}

/// Charges `usage` at `model`'s prices to `record`.
pub(crate) fn charge(record: &mut VerificationRecord, model: &ModelHandle, usage: Usage) {
    record.tokens = Tokens {
        prompt: record.tokens.prompt + usage.prompt_tokens,
        completion: record.tokens.completion + usage.completion_tokens,
    };
    record.cost += model.entry.cost(usage);
}

/// A verifier failure, named by the answering model.
pub(crate) fn verifier_failed(
    model: &ModelHandle,
) -> impl Fn(automix_llm::LlmError) -> crate::AutomixError + '_ {
    |source| crate::AutomixError::Model {
        model: format!("{} (verifier)", model.entry.name),
        source,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_signal_is_registered_once_and_reads_its_own_field() {
        for kind in ALL {
            assert_eq!(of(kind).kind(), kind, "{kind:?} registered as itself");
        }
        let mut names: Vec<&str> = ALL.iter().map(|k| k.name()).collect();
        names.dedup();
        assert_eq!(names.len(), ALL.len());
        let record = VerificationRecord {
            p_ver: Some(0.25),
            logprob_p: Some(0.5),
            answer_consistency: Some(0.75),
            signals: [
                ("answer_logprob".to_owned(), 0.125),
                ("previous_agreement".to_owned(), 0.0625),
            ]
            .into(),
            ..VerificationRecord::default()
        };
        let read: Vec<Option<f64>> = ALL.iter().map(|k| of(*k).read(&record)).collect();
        assert_eq!(
            read,
            [Some(0.25), Some(0.5), Some(0.75), Some(0.125), Some(0.0625)]
        );
        assert_eq!(
            of(VerifierSignal::Logprob).read(&VerificationRecord::default()),
            None
        );
    }
}
