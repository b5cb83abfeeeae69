//! `samples`: the paper's signal. The model judges its own answer k times (few-shot
//! verification prompt, `verification_temperature`, distinct seeds); the confidence is the
//! share of "Correct" among the verdicts that parsed (`p_ver`; none parsed = unknown).

use async_trait::async_trait;

use super::{Signal, SignalInput, charge, verifier_failed};
use crate::config::VerifierSignal;
use crate::dataset::VerificationRecord;
use crate::error::Result;
use crate::pipeline::query_text;

/// k sampled verdicts.
pub(super) struct VerdictVotes;

#[async_trait]
impl Signal for VerdictVotes {
    fn kind(&self) -> VerifierSignal {
        VerifierSignal::Samples
    }

    fn read(&self, record: &VerificationRecord) -> Option<f64> {
        record.p_ver
    }

    async fn measure(
        &self,
        input: &SignalInput<'_>,
        record: &mut VerificationRecord,
    ) -> Result<Option<String>> {
        let text = query_text(input.query);
        let s = input
            .verifier
            .verify_sampled(&text, input.answer)
            .await
            .map_err(verifier_failed(input.model))?;
        record.samples = s.samples.len() as u32;
        record.correct = s.tally.correct;
        record.incorrect = s.tally.incorrect;
        record.unparsed = s.tally.unparsed;
        record.p_ver = s.p_ver;
        charge(record, input.model, s.usage);
        Ok(None)
    }
}
