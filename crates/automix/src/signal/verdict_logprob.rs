//! `logprob`: one greedy verdict whose "Correct" / "Incorrect" token probabilities (summed
//! over token variants) give P(correct) (`logprob_p`). Where the upstream returns no
//! logprobs the verifier samples verdicts instead and says so (`logprob_source:
//! fallback: …`); that vote share is not a logprob and never lands in `logprob_p`.

use async_trait::async_trait;

use super::{Signal, SignalInput, charge, verifier_failed};
use crate::config::VerifierSignal;
use crate::dataset::VerificationRecord;
use crate::error::Result;
use crate::pipeline::query_text;
use automix_verify::LogprobSource;

/// One verdict's logprobs.
pub(super) struct VerdictLogprob;

#[async_trait]
impl Signal for VerdictLogprob {
    fn kind(&self) -> VerifierSignal {
        VerifierSignal::Logprob
    }

    fn read(&self, record: &VerificationRecord) -> Option<f64> {
        record.logprob_p
    }

    async fn measure(
        &self,
        input: &SignalInput<'_>,
        record: &mut VerificationRecord,
    ) -> Result<Option<String>> {
        let text = query_text(input.query);
        let l = input
            .verifier
            .verify_logprob(&text, input.answer)
            .await
            .map_err(verifier_failed(input.model))?;
        record.logprob_source = match &l.source {
            LogprobSource::Logprobs { .. } => {
                record.logprob_p = l.p_correct;
                "logprobs".into()
            }
            // A vote fraction is not a logprob: a policy trained on logprobs would decide on
            // a signal of another scale. It stays out of `logprob_p` (the score is unknown to
            // a logprob policy, whose unknown rule then decides, visibly) and goes where
            // sampled votes belong, unless votes were measured already.
            LogprobSource::FellBackToSampling { reason, .. } => {
                if record.samples == 0 {
                    record.p_ver = l.p_correct;
                }
                format!("fallback: {reason}")
            }
        };
        charge(record, input.model, l.usage);
        Ok(None)
    }
}
