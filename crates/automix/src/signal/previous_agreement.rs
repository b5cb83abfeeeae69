//! `previous_agreement`: in a cascade, how well a model's answer agrees with the answer of
//! the next cheaper model, which was escalated: two models of different sizes reaching the
//! same answer is evidence that it is right (or that they share a mistake, which the fitted
//! curve prices). No extra call. Answers are compared after the task metric's normalisation
//! (option letter, last number, normalised text): 1 or 0 where answers are exact, their
//! token F1 for free text. Known only for a model whose next cheaper model answered just
//! before it in the same query; the cheapest model, and a model the cascade jumped to, read
//! it as unknown (no evidence). It is worth most fused with the model's own verifier
//! (`hparam.fuse_signals` with `train --cascade`); the two-model path's small model never
//! has it. Rows collected before it existed get it from their stored normalised answers
//! ([`fill_missing`]); `collect` stores it.

use std::borrow::Cow;

use async_trait::async_trait;

use super::{Signal, SignalInput};
use crate::config::VerifierSignal;
use crate::dataset::{TrainingRow, VerificationRecord};
use crate::error::Result;
use crate::task_metric::{TaskMetric, normalised, token_f1};

/// Agreement with the next cheaper model's answer.
pub(super) struct PreviousAgreement;

/// Its key in [`VerificationRecord::signals`].
const NAME: &str = "previous_agreement";

/// Agreement of two normalised answers under `metric` (free text: token F1).
pub fn agreement(metric: Option<TaskMetric>, previous: &str, answer: &str) -> f64 {
    let free_text = metric.is_none_or(|m| {
        matches!(
            m,
            TaskMetric::F1 | TaskMetric::Cem | TaskMetric::CommongenCoverage
        )
    });
    if free_text {
        token_f1(previous, answer)
    } else {
        f64::from(u8::from(previous == answer))
    }
}

#[async_trait]
impl Signal for PreviousAgreement {
    fn kind(&self) -> VerifierSignal {
        VerifierSignal::PreviousAgreement
    }

    fn reads_previous_answer(&self) -> bool {
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
        let Some(previous) = input.previous_answer else {
            return Ok(None);
        };
        let metric = input
            .query
            .metric
            .as_deref()
            .map(TaskMetric::parse)
            .transpose()?;
        let answer = normalised(metric, input.answer, &input.query.choices);
        record
            .signals
            .insert(NAME.into(), agreement(metric, previous, &answer));
        Ok(None)
    }
}

/// `rows` with every verified model after the first (in `models` order, cheapest first)
/// carrying its agreement with the model before it, where the stored record lacks it:
/// computed from the rows' normalised answers. Borrowed unchanged when `wanted` is false
/// or no record lacks it (rows collected with the signal).
/// A row whose metric is unknown is an error naming the row: the comparison depends on it.
pub fn fill_missing<'a>(
    rows: &'a [TrainingRow],
    models: &[String],
    wanted: bool,
) -> Result<Cow<'a, [TrainingRow]>> {
    let lacks = |row: &TrainingRow| {
        models.windows(2).any(|pair| {
            row.run(&pair[0]).is_some()
                && (row.run(&pair[1]).and_then(|r| r.verification.as_ref()))
                    .is_some_and(|v| !v.signals.contains_key(NAME))
        })
    };
    if !wanted || !rows.iter().any(lacks) {
        return Ok(Cow::Borrowed(rows));
    }
    let mut rows = rows.to_vec();
    for row in &mut rows {
        let metric =
            Some(
                TaskMetric::parse(&row.metric).map_err(|e| crate::AutomixError::Setting {
                    key: "hparam.fuse_signals",
                    message: format!(
                        "previous_agreement compares answers by the row's metric: row {}: {e}",
                        row.id
                    ),
                })?,
            );
        for pair in models.windows(2) {
            let Some(previous) = row.run(&pair[0]).map(|r| r.normalised_answer.clone()) else {
                continue;
            };
            let Some(run) = row.models.iter_mut().find(|r| r.model == pair[1]) else {
                continue;
            };
            if let Some(v) = run.verification.as_mut() {
                let value = agreement(metric, &previous, &run.normalised_answer);
                v.signals.entry(NAME.into()).or_insert(value);
            }
        }
    }
    Ok(Cow::Owned(rows))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exact_answers_agree_or_not_and_free_text_agrees_by_token_f1() {
        assert_eq!(agreement(Some(TaskMetric::EmMc), "b", "b"), 1.0);
        assert_eq!(agreement(Some(TaskMetric::EmMc), "b", "c"), 0.0);
        let f1 = agreement(None, "the cat sat", "the cat ran");
        assert!(f1 > 0.5 && f1 < 1.0, "{f1}");
    }

    /// One row of a two-model chain; the second model's record carries `stored` if given.
    fn row(stored: Option<f64>) -> TrainingRow {
        let signals = stored.map_or(serde_json::json!({}), |v| serde_json::json!({ NAME: v }));
        let run = |model: &str, answer: &str| {
            serde_json::json!({
                "model": model, "answer": answer, "normalised_answer": answer, "score": 1.0,
                "tokens": {"prompt": 1, "completion": 1}, "cost": 0.0, "latency_ms": 1,
                "verification": {"samples": 1, "correct": 1, "incorrect": 0, "unparsed": 0,
                    "logprob_source": "",
                    "tokens": {"prompt": 1, "completion": 1}, "cost": 0.0, "signals": signals}
            })
        };
        serde_json::from_value(serde_json::json!({
            "id": "r", "task_name": "mmlu", "metric": "em_mc", "query": "q", "ground_truth": "b",
            "split": "train", "models": [run("a", "b"), run("c", "b")]
        }))
        .unwrap()
    }

    #[test]
    fn stored_agreement_is_borrowed_and_missing_agreement_is_derived() {
        let models = ["a".to_string(), "c".to_string()];
        let stored = [row(Some(0.0))];
        let kept = fill_missing(&stored, &models, true).unwrap();
        assert!(matches!(kept, Cow::Borrowed(_)));
        let old = [row(None)];
        let filled = fill_missing(&old, &models, true).unwrap();
        assert!(matches!(filled, Cow::Owned(_)));
        let v = filled[0].models[1].verification.as_ref().unwrap();
        assert_eq!(v.signals.get(NAME), Some(&1.0));
    }
}
