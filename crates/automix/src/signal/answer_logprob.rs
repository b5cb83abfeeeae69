//! `answer_logprob`: how sure the model was of its own answer's tokens, read from the
//! answer call's logprobs: the geometric mean token probability, exp(mean logprob). No
//! extra call, so routing on it costs nothing beyond the answer. The answer is asked with
//! `logprobs: true`; an upstream that returns none leaves the signal unknown, which the
//! policy's unknown rule decides. It measures fluency as much as correctness (a confidently
//! wrong answer scores high), so it is worth what `collect`'s AUC says on your rows.

use async_trait::async_trait;

use super::{Signal, SignalInput};
use crate::config::VerifierSignal;
use crate::dataset::VerificationRecord;
use crate::error::Result;

/// The answer's mean token probability.
pub(super) struct AnswerLogprob;

/// Its key in [`VerificationRecord::signals`].
const NAME: &str = "answer_logprob";

#[async_trait]
impl Signal for AnswerLogprob {
    fn kind(&self) -> VerifierSignal {
        VerifierSignal::AnswerLogprob
    }

    fn wants_answer_logprobs(&self) -> bool {
        true
    }

    fn read(&self, record: &VerificationRecord) -> Option<f64> {
        record.signals.get(NAME).copied()
    }

    async fn measure(
        &self,
        input: &SignalInput<'_>,
        record: &mut VerificationRecord,
    ) -> Result<Option<String>> {
        let tokens = input.answer_logprobs.unwrap_or_default();
        let finite: Vec<f64> = tokens
            .iter()
            .map(|t| t.logprob)
            .filter(|l| l.is_finite())
            .collect();
        if !finite.is_empty() {
            let mean = finite.iter().sum::<f64>() / finite.len() as f64;
            record
                .signals
                .insert(NAME.into(), mean.exp().clamp(0.0, 1.0));
        }
        Ok(None)
    }
}
