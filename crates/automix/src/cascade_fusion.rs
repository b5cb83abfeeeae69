//! The cascade on several signals at once (`hparam.fuse_signals` with `train --cascade`):
//! per verified model, the fused confidence of the listed signals
//! ([`automix_core::fusion`], as the two-model path fuses them), cross-fitted so the
//! cascade's observation models are estimated from out-of-fold values. The cascade's own
//! cross-validation then decides, per verified model ([`choose_fused_models`]): a model's
//! fused confidence routes only where it makes the cascade net strictly more out of fold
//! than that model's configured `verifier_signal` alone.

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
    /// Fusion per verified model that routes on it (llm_data name); the last model is
    /// never verified.
    pub models: BTreeMap<String, FusedConfidence>,
    /// Verified models that route on the configured `verifier_signal` alone (their fusion
    /// did not pay out of fold).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub unfused: Vec<String>,
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
    /// `verify_costs[row][model]`: what measuring every fused signal cost (in the cost
    /// unit), for the verified models; what a model routing on its fusion is charged.
    pub verify_costs: Vec<Vec<f64>>,
}

/// What verifying model `name` of `row` on every one of `signals` cost, in `unit`s.
fn fused_cost(row: &TrainingRow, name: &str, signals: &[VerifierSignal], unit: f64) -> f64 {
    let record = row.run(name).and_then(|r| r.verification.as_ref());
    record.map_or(0.0, |v| v.cost_of(signals)) / unit
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
/// the rows' out-of-fold fused confidences and their verification costs in `unit`s.
pub fn fit(
    rows: &[TrainingRow],
    models: &[String],
    signals: &[VerifierSignal],
    unit: f64,
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
        // The off-path inputs (the previous answer unknown) are scored by the same fits.
        let off_path: Vec<_> = if agreement {
            values.iter().map(|v| masked(signals, v)).collect()
        } else {
            Vec::new()
        };
        let also: Vec<&[Vec<Option<f64>>]> = if agreement {
            vec![&off_path]
        } else {
            Vec::new()
        };
        let mut oof = cross_fit_at(&values, &right, &assignment, folds, &also)?.into_iter();
        for (row, p) in confidences.iter_mut().zip(oof.next().unwrap_or_default()) {
            row[i] = p;
        }
        // Without agreement `jumped` is empty and there is no second result.
        for (row, p) in jumped.iter_mut().zip(oof.next().unwrap_or_default()) {
            row[i] = p;
        }
        fitted.insert(name.clone(), FusedConfidence::fit(&values, &right)?);
    }
    Ok(FittedCascadeFusion {
        fusion: CascadeFusion {
            signals: signals.to_vec(),
            models: fitted,
            unfused: Vec::new(),
        },
        confidences,
        jumped,
        verify_costs: rows
            .iter()
            .map(|row| {
                (models.iter().take(verified))
                    .map(|name| fused_cost(row, name, signals, unit))
                    .collect()
            })
            .collect(),
    })
}

impl CascadeFusion {
    /// The fusion of the models `fused` marks (per verified model, cheapest first); the
    /// others route on the configured signal. `None` when it marks none.
    pub fn only(mut self, models: &[String], fused: &[bool]) -> Option<Self> {
        for (name, _) in models.iter().zip(fused).filter(|(_, f)| !**f) {
            if self.models.remove(name).is_some() {
                self.unfused.push(name.clone());
            }
        }
        (!self.models.is_empty()).then_some(self)
    }

    /// The fused confidence of model `name`'s verification; `None` when the model has no
    /// fusion (the last model) or every signal is unknown.
    pub fn confidence(&self, name: &str, record: Option<&VerificationRecord>) -> Option<f64> {
        self.models
            .get(name)?
            .predict(&values(&self.signals, record))
    }

    /// `crows` (built from `rows` for `models`, costs in `unit`s) with every verified
    /// model's confidence replaced by its fused one, and its verification cost by that of
    /// every fused signal: how held-out rows are replayed.
    pub fn apply(
        &self,
        rows: &[TrainingRow],
        models: &[String],
        (crows, unit): (&mut [CascadeRow], f64),
    ) {
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
                crow.verify_costs[i] = fused_cost(row, name, &self.signals, unit);
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

/// `crows` with the confidences of the verified models `fused` marks (and, where the
/// fusion compares with the previous answer, their off-path ones) taken from the fit's
/// out-of-fold values, and charged every fused signal's calls; the other models keep
/// their own signal's.
pub fn with_confidences(
    crows: &[CascadeRow],
    fitted: &FittedCascadeFusion,
    fused: &[bool],
) -> Vec<CascadeRow> {
    let marked = |i: usize| fused.get(i).copied().unwrap_or(false);
    crows
        .iter()
        .enumerate()
        .map(|(row, r)| {
            let mut r = r.clone();
            let verified = r.confidences.len().saturating_sub(1);
            // A model's off-path confidence is its own unless stored apart.
            let mut jumped = if r.confidences_jumped.is_empty() {
                r.confidences.clone()
            } else {
                r.confidences_jumped.clone()
            };
            if let Some(c) = fitted.confidences.get(row) {
                (0..verified)
                    .filter(|&i| marked(i))
                    .for_each(|i| r.confidences[i] = c[i]);
            }
            if let Some(c) = fitted.verify_costs.get(row) {
                (0..verified)
                    .filter(|&i| marked(i))
                    .for_each(|i| r.verify_costs[i] = c[i]);
            }
            if let Some(j) = fitted.jumped.get(row) {
                (0..verified)
                    .filter(|&i| marked(i))
                    .for_each(|i| jumped[i] = j[i]);
                r.confidences_jumped = jumped;
            } else if !r.confidences_jumped.is_empty() {
                (0..verified)
                    .filter(|&i| marked(i))
                    .for_each(|i| jumped[i] = r.confidences[i]);
                r.confidences_jumped = jumped;
            }
            r
        })
        .collect()
}

/// Which verified models route on their fused confidence: `evaluate(fused)` cross-validates
/// the cascade with the models `fused` marks on their fusion and returns its choice and
/// out-of-fold net. Starts from the better of "every model fused" and "none", then flips
/// one model at a time and keeps a flip that nets strictly more (or ties and fuses fewer:
/// the single signal is simpler and measured with fewer calls). `verified + 2` evaluations
/// instead of `2^verified`. Returns the mask, its choice and net, and the nets of none and
/// of all.
pub fn choose_fused_models<T>(
    verified: usize,
    mut evaluate: impl FnMut(&[bool]) -> Result<(T, f64)>,
) -> Result<FusedModelsChoice<T>> {
    const TIE: f64 = 1e-12;
    let none = vec![false; verified];
    let all = vec![true; verified];
    let (single, single_net) = evaluate(&none)?;
    let (fused, fused_net) = evaluate(&all)?;
    let (mut mask, mut choice, mut net) = if fused_net > single_net + TIE {
        (all, fused, fused_net)
    } else {
        (none, single, single_net)
    };
    for i in 0..verified {
        let mut trial = mask.clone();
        trial[i] = !trial[i];
        // Both extremes were evaluated already.
        if trial.iter().all(|f| *f) || trial.iter().all(|f| !*f) {
            continue;
        }
        let (c, n) = evaluate(&trial)?;
        let simpler = !trial[i];
        if n > net + TIE || (simpler && n >= net - TIE) {
            (mask, choice, net) = (trial, c, n);
        }
    }
    Ok(FusedModelsChoice {
        mask,
        choice,
        net,
        single_net,
        fused_net,
    })
}

/// What [`choose_fused_models`] settled.
pub struct FusedModelsChoice<T> {
    /// Per verified model (cheapest first): whether it routes on its fusion.
    pub mask: Vec<bool>,
    /// The cross-validation's choice for that mask.
    pub choice: T,
    /// Its out-of-fold net.
    pub net: f64,
    /// The net with every model on the configured signal alone.
    pub single_net: f64,
    /// The net with every verified model on its fusion.
    pub fused_net: f64,
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Nets of a 3-verified-model chain where only the middle model's fusion pays.
    fn net_of(mask: &[bool]) -> f64 {
        let gains = [-0.01, 0.05, 0.0];
        0.2 + mask
            .iter()
            .zip(gains)
            .map(|(f, g)| if *f { g } else { 0.0 })
            .sum::<f64>()
    }

    #[test]
    fn each_model_routes_on_its_fusion_only_where_that_pays() {
        let mut calls = Vec::new();
        let chosen = choose_fused_models(3, |mask| {
            calls.push(mask.to_vec());
            Ok(((), net_of(mask)))
        })
        .unwrap();
        // The first model's fusion loses; the third's ties, and the simpler side wins.
        assert_eq!(chosen.mask, [false, true, false]);
        assert!((chosen.net - 0.25).abs() < 1e-12);
        assert!((chosen.fused_net - 0.24).abs() < 1e-12 && chosen.single_net == 0.2);
        assert_eq!(calls.len(), 5, "{calls:?}");
    }
}
