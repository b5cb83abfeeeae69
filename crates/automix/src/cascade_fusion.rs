//! The cascade on several signals at once (`hparam.fuse_signals` with `train --cascade`):
//! per verified model, the fused confidence of the listed signals
//! ([`automix_core::fusion`], as the two-model path fuses them), cross-fitted so the
//! cascade's observation models are estimated from out-of-fold values. The cascade's own
//! cross-validation then decides: the fused confidences route only if they net strictly
//! more out of fold than the configured `verifier_signal` alone.

use std::collections::BTreeMap;

use automix_core::VERDICT_CUT;
use automix_core::cascade::CascadeRow;
use automix_core::fusion::{FusedConfidence, cross_fit_at};
use serde::{Deserialize, Serialize};

use crate::config::VerifierSignal;
use crate::dataset::{TrainingRow, VerificationRecord};
use crate::error::{AutomixError, Result};
use crate::training::verifier_score;

/// Seed and folds of the cross-fit (the cascade's cross-validation runs on top).
const CROSS_FIT_FOLDS: usize = 5;
const CROSS_FIT_SEED: u64 = 11;

/// Per verified model of a chain, the fusion of `signals` fitted on every training row.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CascadeFusion {
    /// The signals fused, in `hparam.fuse_signals` order.
    pub signals: Vec<VerifierSignal>,
    /// Fusion per verified model (llm_data name); the last model is never verified.
    pub models: BTreeMap<String, FusedConfidence>,
}

/// A fusion and the training rows' out-of-fold fused confidences.
pub struct FittedCascadeFusion {
    /// What routes live.
    pub fusion: CascadeFusion,
    /// `confidences[row][model]`: out of fold for the verified models, `None` for the last.
    pub confidences: Vec<Vec<Option<f64>>>,
    /// The same with `previous_agreement` unknown (a path that skipped model i − 1);
    /// empty when it is not fused.
    pub jumped: Vec<Vec<Option<f64>>>,
}

/// `values` with every signal that reads the previous answer unknown.
fn masked(signals: &[VerifierSignal], values: &[Option<f64>]) -> Vec<Option<f64>> {
    signals
        .iter()
        .zip(values)
        .map(|(s, v)| v.filter(|_| !s.reads_previous_answer()))
        .collect()
}

/// Each listed signal's value in one run's verification.
fn values(signals: &[VerifierSignal], record: Option<&VerificationRecord>) -> Vec<Option<f64>> {
    signals
        .iter()
        .map(|s| verifier_score(record, *s).known())
        .collect()
}

/// Per row, every signal's value (`None`: unknown), and whether the answer was right.
type SignalColumns = (Vec<Vec<Option<f64>>>, Vec<bool>);

/// Every signal's values of model `name` per row, and whether its answer was right.
fn columns(rows: &[TrainingRow], name: &str, signals: &[VerifierSignal]) -> Result<SignalColumns> {
    rows.iter()
        .map(|row| {
            let run = row.run(name).ok_or_else(|| AutomixError::MissingRun {
                row: row.id.clone(),
                model: name.to_owned(),
            })?;
            Ok((
                values(signals, run.verification.as_ref()),
                run.score >= VERDICT_CUT,
            ))
        })
        .collect::<Result<Vec<_>>>()
        .map(|pairs| pairs.into_iter().unzip())
}

/// Fits the fusion of `signals` for every verified model of `models` (cheapest first), with
/// the rows' out-of-fold fused confidences.
pub fn fit(
    rows: &[TrainingRow],
    models: &[String],
    signals: &[VerifierSignal],
) -> Result<FittedCascadeFusion> {
    let folds = CROSS_FIT_FOLDS.min(rows.len()).max(2);
    let assignment =
        automix_core::calibrate::fold_assignments(rows.len(), folds, 1, CROSS_FIT_SEED)
            .pop()
            .unwrap_or_default();
    let agreement = signals.iter().any(|s| s.reads_previous_answer());
    let mut confidences = vec![vec![None; models.len()]; rows.len()];
    let mut jumped = if agreement {
        confidences.clone()
    } else {
        Vec::new()
    };
    let mut fitted = BTreeMap::new();
    let verified = models.len().saturating_sub(1);
    for (i, name) in models.iter().enumerate().take(verified) {
        let (values, right) = columns(rows, name, signals)?;
        let oof = cross_fit_at(&values, &right, &assignment, folds, &values)?;
        for (row, p) in confidences.iter_mut().zip(oof) {
            row[i] = p;
        }
        if agreement {
            let at: Vec<_> = values.iter().map(|v| masked(signals, v)).collect();
            let oof = cross_fit_at(&values, &right, &assignment, folds, &at)?;
            for (row, p) in jumped.iter_mut().zip(oof) {
                row[i] = p;
            }
        }
        fitted.insert(name.clone(), FusedConfidence::fit(&values, &right)?);
    }
    Ok(FittedCascadeFusion {
        fusion: CascadeFusion {
            signals: signals.to_vec(),
            models: fitted,
        },
        confidences,
        jumped,
    })
}

impl CascadeFusion {
    /// The fused confidence of model `name`'s verification; `None` when the model has no
    /// fusion (the last model) or every signal is unknown.
    pub fn confidence(&self, name: &str, record: Option<&VerificationRecord>) -> Option<f64> {
        self.models
            .get(name)?
            .predict(&values(&self.signals, record))
    }

    /// `crows` (built from `rows` for `models`) with every verified model's confidence
    /// replaced by its fused one: how held-out rows are replayed.
    pub fn apply(&self, rows: &[TrainingRow], models: &[String], crows: &mut [CascadeRow]) {
        let agreement = self.signals.iter().any(|s| s.reads_previous_answer());
        for (row, crow) in rows.iter().zip(crows) {
            if agreement {
                crow.confidences_jumped = crow.confidences.clone();
            }
            for (i, name) in models.iter().enumerate() {
                let Some(model) = self.models.get(name) else {
                    continue;
                };
                let record = row.run(name).and_then(|r| r.verification.as_ref());
                let v = values(&self.signals, record);
                crow.confidences[i] = model.predict(&v);
                if agreement {
                    crow.confidences_jumped[i] = model.predict(&masked(&self.signals, &v));
                }
            }
        }
    }

    /// Why this fusion cannot score every verification, if it cannot (checked at load).
    pub fn problem(&self) -> Option<String> {
        self.models.iter().find_map(|(name, f)| {
            f.problem(self.signals.len())
                .map(|p| format!("model {name:?}: {p}"))
        })
    }
}

/// `crows` with the verified models' confidences (and, where the fusion compares with the
/// previous answer, their off-path ones) taken from the fit's out-of-fold values.
pub fn with_confidences(crows: &[CascadeRow], fitted: &FittedCascadeFusion) -> Vec<CascadeRow> {
    crows
        .iter()
        .enumerate()
        .map(|(row, r)| {
            let mut r = r.clone();
            let verified = r.confidences.len().saturating_sub(1);
            if let Some(c) = fitted.confidences.get(row) {
                r.confidences[..verified].copy_from_slice(&c[..verified]);
            }
            r.confidences_jumped = match fitted.jumped.get(row) {
                Some(j) => {
                    let mut jumped = r.confidences.clone();
                    jumped[..verified].copy_from_slice(&j[..verified]);
                    jumped
                }
                None => Vec::new(),
            };
            r
        })
        .collect()
}
