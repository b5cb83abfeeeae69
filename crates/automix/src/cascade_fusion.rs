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

use crate::cascade::{FusionCv, cascade_rows};
use crate::cascade_cv::{BinsChoice, CvRows, choose_bins};
use crate::config::{Config, VerifierSignal};
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
    /// Every training row's fused confidences, out of fold (cross-fitted over all rows);
    /// what the final tables are estimated from.
    pub whole: FusedValues,
    /// `verify_costs[row][model]`: what measuring every fused signal cost (in the cost
    /// unit), for the verified models; what a model routing on its fusion is charged.
    pub verify_costs: Vec<Vec<f64>>,
    /// `per_fold[assignment][fold]`: the fused confidences as that fold of the cascade's
    /// cross-validation sees them, so no held-out label shapes them (nested cross-fit).
    pub per_fold: Vec<Vec<FusedValues>>,
}

/// Fused confidences per row and model (`None`: unknown or the last model), on and off
/// the sequential path.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct FusedValues {
    /// `confidences[row][model]`: `None` when unknown, and for the last model.
    pub confidences: Vec<Vec<Option<f64>>>,
    /// The same with `previous_agreement` unknown (a path that skipped model i − 1);
    /// empty when it is not fused.
    pub jumped: Vec<Vec<Option<f64>>>,
}

impl FusedValues {
    /// Every value unknown: `rows` rows of `width` models, with off-path values when
    /// `agreement` (a fused signal reads the previous answer).
    fn unknown(rows: usize, width: usize, agreement: bool) -> Self {
        let confidences = vec![vec![None; width]; rows];
        let jumped = if agreement {
            confidences.clone()
        } else {
            Vec::new()
        };
        Self {
            confidences,
            jumped,
        }
    }
}

/// One verified model's signal values per row, whether its answer was right, and the
/// values with the previous answer unknown (empty when no signal reads it).
struct ModelColumns {
    values: Vec<Vec<Option<f64>>>,
    right: Vec<bool>,
    off_path: Vec<Vec<Option<f64>>>,
}

/// What verifying model `name` of `row` on every one of `signals` cost, in `unit`s.
fn fused_cost(row: &TrainingRow, name: &str, signals: &[VerifierSignal], unit: f64) -> f64 {
    row.run(name).map_or(0.0, |r| r.verification_cost(signals)) / unit
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
/// the rows' out-of-fold fused confidences, their verification costs in `unit`s, and the
/// confidences each fold of the cascade's cross-validation (`assignments` over `folds`)
/// sees: its training rows cross-fitted among themselves, its held-out rows scored by a
/// fusion fitted on the training rows alone.
pub fn fit(
    rows: &[TrainingRow],
    (models, signals): (&[String], &[VerifierSignal]),
    unit: f64,
    (assignments, folds): (&[Vec<usize>], usize),
) -> Result<FittedCascadeFusion> {
    let agreement = signals.iter().any(|s| s.reads_previous_answer());
    let verified = models.len().saturating_sub(1);
    let cols = (models.iter().take(verified))
        .map(|name| {
            let (values, right) = columns(rows, name, signals)?;
            let off_path = if agreement {
                values.iter().map(|v| masked(signals, v)).collect()
            } else {
                Vec::new()
            };
            Ok(ModelColumns {
                values,
                right,
                off_path,
            })
        })
        .collect::<Result<Vec<_>>>()?;
    let all: Vec<usize> = (0..rows.len()).collect();
    let whole = cross_fitted(&cols, &all, models.len(), agreement)?;
    let fitted = (models.iter().zip(&cols))
        .map(|(name, c)| Ok((name.clone(), FusedConfidence::fit(&c.values, &c.right)?)))
        .collect::<Result<BTreeMap<_, _>>>()?;
    let per_fold = (assignments.iter())
        .map(|fold| {
            (0..folds)
                .map(|f| fold_values(&cols, (fold, f), models.len(), agreement))
                .collect::<Result<Vec<_>>>()
        })
        .collect::<Result<Vec<_>>>()?;
    Ok(FittedCascadeFusion {
        fusion: CascadeFusion {
            signals: signals.to_vec(),
            models: fitted,
            unfused: Vec::new(),
        },
        whole,
        verify_costs: rows
            .iter()
            .map(|row| {
                (models.iter().take(verified))
                    .map(|name| fused_cost(row, name, signals, unit))
                    .collect()
            })
            .collect(),
        per_fold,
    })
}

/// The rows at `subset`, cross-fitted among themselves (each row's value from a fit on the
/// other cross-fit folds of the subset): `width` models per row, in `subset`'s order.
fn cross_fitted(
    cols: &[ModelColumns],
    subset: &[usize],
    width: usize,
    agreement: bool,
) -> Result<FusedValues> {
    let folds = CROSS_FIT_FOLDS.min(subset.len()).max(2);
    let assignment =
        automix_core::calibrate::fold_assignments(subset.len(), folds, 1, CROSS_FIT_SEED)
            .pop()
            .unwrap_or_default();
    let mut out = FusedValues::unknown(subset.len(), width, agreement);
    for (i, c) in cols.iter().enumerate() {
        let pick = |v: &[Vec<Option<f64>>]| subset.iter().map(|&r| v[r].clone()).collect();
        let values: Vec<Vec<Option<f64>>> = pick(&c.values);
        let right: Vec<bool> = subset.iter().map(|&r| c.right[r]).collect();
        // The off-path inputs (the previous answer unknown) are scored by the same fits.
        let off_path: Vec<Vec<Option<f64>>> = if agreement {
            pick(&c.off_path)
        } else {
            Vec::new()
        };
        let also: Vec<&[Vec<Option<f64>>]> = if agreement {
            vec![&off_path]
        } else {
            Vec::new()
        };
        let mut oof = cross_fit_at(&values, &right, &assignment, folds, &also)?.into_iter();
        for (row, p) in out
            .confidences
            .iter_mut()
            .zip(oof.next().unwrap_or_default())
        {
            row[i] = p;
        }
        // Without agreement `jumped` is empty and there is no second result.
        for (row, p) in out.jumped.iter_mut().zip(oof.next().unwrap_or_default()) {
            row[i] = p;
        }
    }
    Ok(out)
}

/// Fold `f` of assignment `fold`'s view: its training rows cross-fitted among themselves,
/// its held-out rows scored by a fusion fitted on the training rows; every row, in order.
fn fold_values(
    cols: &[ModelColumns],
    (fold, f): (&[usize], usize),
    width: usize,
    agreement: bool,
) -> Result<FusedValues> {
    let (held, train): (Vec<usize>, Vec<usize>) = (0..fold.len()).partition(|&r| fold[r] == f);
    let mut out = FusedValues::unknown(fold.len(), width, agreement);
    if held.is_empty() || train.is_empty() {
        return Ok(out);
    }
    let inner = cross_fitted(cols, &train, width, agreement)?;
    for (k, &r) in train.iter().enumerate() {
        out.confidences[r].clone_from(&inner.confidences[k]);
        if agreement {
            out.jumped[r].clone_from(&inner.jumped[k]);
        }
    }
    for (i, c) in cols.iter().enumerate() {
        let values: Vec<Vec<Option<f64>>> = train.iter().map(|&r| c.values[r].clone()).collect();
        let right: Vec<bool> = train.iter().map(|&r| c.right[r]).collect();
        let model = FusedConfidence::fit(&values, &right)?;
        for &r in &held {
            out.confidences[r][i] = model.predict(&c.values[r]);
            if agreement {
                out.jumped[r][i] = model.predict(&c.off_path[r]);
            }
        }
    }
    Ok(out)
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
/// fusion compares with the previous answer, their off-path ones) taken from `values`, and
/// charged every fused signal's calls (`fitted.verify_costs`); the other models keep their
/// own signal's.
pub fn with_confidences(
    crows: &[CascadeRow],
    (fitted, values): (&FittedCascadeFusion, &FusedValues),
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
            if let Some(c) = values.confidences.get(row) {
                (0..verified)
                    .filter(|&i| marked(i))
                    .for_each(|i| r.confidences[i] = c[i]);
            }
            if let Some(c) = fitted.verify_costs.get(row) {
                (0..verified)
                    .filter(|&i| marked(i))
                    .for_each(|i| r.verify_costs[i] = c[i]);
            }
            if let Some(j) = values.jumped.get(row) {
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

/// [`with_confidences`] for every fold of the cascade's cross-validation, from the fit's
/// nested values: `[assignment][fold]`.
pub fn per_fold_rows(
    crows: &[CascadeRow],
    fitted: &FittedCascadeFusion,
    fused: &[bool],
) -> Vec<Vec<Vec<CascadeRow>>> {
    (fitted.per_fold.iter())
        .map(|folds| {
            (folds.iter())
                .map(|values| with_confidences(crows, (fitted, values), fused))
                .collect()
        })
        .collect()
}

/// The training rows' cascade rows as the cascade will read them, and the bins'
/// cross-validation on them: the configured `verifier_signal`, or with
/// `hparam.fuse_signals` the fused confidences where they net strictly more out of fold.
pub(crate) struct ConfidenceChoice {
    pub(crate) rows: Vec<CascadeRow>,
    /// `[assignment][fold]`: the rows as each fold of the cross-validation sees them, when
    /// a fusion routes (its nested cross-fit); `None`: `rows` for every fold.
    pub(crate) per_fold: Option<Vec<Vec<Vec<CascadeRow>>>>,
    pub(crate) choice: BinsChoice,
    pub(crate) fusion: Option<CascadeFusion>,
    pub(crate) record: Option<FusionCv>,
}

/// The confidences the cascade routes on (see [`ConfidenceChoice`]): the fusion's
/// candidates are cross-validated on their nested per-fold values, so no held-out label
/// shapes the confidences a fold is scored on.
pub(crate) fn choose_confidences(
    config: &Config,
    (rows, models, unit): (&[TrainingRow], &[String], f64),
    (tasks, assignments, folds): (&[&str], &[Vec<usize>], usize),
    scales: &[f64],
) -> Result<ConfidenceChoice> {
    let lambda = config.automix.lambda();
    let crows = cascade_rows(rows, models, config.hparam.verifier_signal, unit)?;
    let choose = |crows: &[CascadeRow], per_fold: Option<&[Vec<Vec<CascadeRow>>]>| {
        let cv = CvRows {
            rows: crows,
            per_fold,
            tasks,
            assignments,
        };
        choose_bins(config, models, &cv, scales, lambda)
    };
    let single = choose(&crows, None)?;
    let signals = &config.hparam.fuse_signals;
    if signals.len() < 2 {
        return Ok(ConfidenceChoice {
            rows: crows,
            per_fold: None,
            choice: single,
            fusion: None,
            record: None,
        });
    }
    let fitted = fit(rows, (models, signals), unit, (assignments, folds))?;
    let verified = models.len().saturating_sub(1);
    let chosen = choose_fused_models(verified, |mask| {
        if mask.iter().all(|f| !*f) {
            // The single signal's rows, evaluated above.
            return Ok((None, single.net.0));
        }
        let rows = with_confidences(&crows, (&fitted, &fitted.whole), mask);
        let per_fold = per_fold_rows(&crows, &fitted, mask);
        let choice = choose(&rows, Some(&per_fold))?;
        let net = choice.net.0;
        Ok((Some((rows, per_fold, choice)), net))
    })?;
    let fused_models: Vec<String> = (models.iter().zip(&chosen.mask))
        .filter(|(_, f)| **f)
        .map(|(m, _)| m.clone())
        .collect();
    let record = Some(FusionCv {
        signals: signals.clone(),
        fused_net: chosen.fused_net,
        single_net: chosen.single_net,
        fused_models,
        chosen_net: chosen.net,
    });
    Ok(match chosen.choice {
        Some((rows, per_fold, choice)) => ConfidenceChoice {
            rows,
            per_fold: Some(per_fold),
            choice,
            fusion: fitted.fusion.only(models, &chosen.mask),
            record,
        },
        None => ConfidenceChoice {
            rows: crows,
            per_fold: None,
            choice: single,
            fusion: None,
            record,
        },
    })
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
