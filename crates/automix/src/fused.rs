//! Routing on several signals at once (`hparam.fuse_signals`): the fused confidence
//! ([`automix_core::fusion`]) trained, compared out of fold with every signal alone, and
//! read live.
//!
//! Training cross-fits the fusion (each row's fused confidence from a fit on the other
//! folds), trains the configured cross-validated method on those values, and keeps the
//! fusion only if its out-of-fold objective beats every listed signal alone; otherwise the
//! policy routes on the best single signal (and says so). What each signal adds is the
//! fusion's out-of-fold objective minus the fusion's without it. Every candidate is charged
//! the calls of the signals it reads, where the rows break their verification cost down by
//! signal ([`VerificationRecord::cost_of`]): a fused policy measures every signal it
//! fuses, so live it pays each one's calls (zero for `answer_logprob`).

use automix_core::fusion::{FusedConfidence, cross_fit};
use automix_core::{RoutingRecord, VERDICT_CUT, VerifierScore};
use serde::{Deserialize, Serialize};

use crate::config::{Config, VerifierSignal};
use crate::dataset::{ModelRun, TrainingRow, VerificationRecord};
use crate::error::{AutomixError, Result};
use crate::training::{cost_model, method_and_options, routing_records};

/// What fusion training found, kept in the policy file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SignalFusion {
    /// The signals fused, in `hparam.fuse_signals` order.
    pub signals: Vec<VerifierSignal>,
    /// The fusion fitted on every training row, when it won; `None` when a single signal
    /// won (the policy then routes on its `verifier_signal` alone).
    pub model: Option<FusedConfidence>,
    /// The fusion's out-of-fold objective (the method's cross-validated mean).
    pub fused_cv: f64,
    /// Each signal alone.
    pub single_cv: Vec<(VerifierSignal, f64)>,
    /// The fusion without each signal: what a signal adds is `fused_cv` minus this.
    pub without_cv: Vec<(VerifierSignal, f64)>,
    /// The nested check that decided, run where the fusion led out of fold; `None` where
    /// it did not lead (or in a policy written before the check existed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nested: Option<NestedFusionCheck>,
}

/// The fusion against the best single signal on held-out outer folds, each procedure run
/// whole on the other folds (the fusion cross-fitted among them, the method trained on
/// those values, the fusion refitted on all of them to score the held-out fold). Why:
/// `fused_cv` scores the method on cross-fitted values whose fits saw the method's
/// held-out labels, a small optimism the single signals do not have.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NestedFusionCheck {
    /// Outer folds where both objectives are defined.
    pub folds: usize,
    /// The fusion's mean held-out objective over those folds.
    pub fused: f64,
    /// The best single signal's.
    pub single: f64,
    /// The fusion's mean lead exceeds one standard error of the per-fold differences:
    /// the simpler policy, one signal, stays unless the fusion's gain is clear.
    pub clearly_better: bool,
    /// Outer folds left out because a procedure could not be trained on the other folds.
    #[serde(default)]
    pub untrained: usize,
    /// Why the first of them could not be.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub untrained_reason: Option<String>,
}

impl NestedFusionCheck {
    /// The check from paired per-fold objectives (fused, single).
    fn of(pairs: &[(f64, f64)]) -> Self {
        let (fused, single): (Vec<f64>, Vec<f64>) = pairs.iter().copied().unzip();
        let lead = automix_core::calibrate::PairedLead::of(&fused, &single);
        let clearly_better = pairs.len() >= 2 && lead.mean > 0.0 && lead.mean > lead.standard_error;
        let n = pairs.len().max(1) as f64;
        Self {
            folds: pairs.len(),
            fused: pairs.iter().map(|p| p.0).sum::<f64>() / n,
            single: pairs.iter().map(|p| p.1).sum::<f64>() / n,
            clearly_better,
            untrained: 0,
            untrained_reason: None,
        }
    }
}

impl SignalFusion {
    /// The fused confidence of one verification record (`None`: every signal unknown).
    pub fn score(&self, record: &VerificationRecord) -> VerifierScore {
        let Some(model) = &self.model else {
            return VerifierScore::Unknown;
        };
        let values = signal_values(&self.signals, Some(record));
        model
            .predict(&values)
            .and_then(|p| automix_core::Confidence::new(p).ok())
            .map_or(VerifierScore::Unknown, VerifierScore::Known)
    }
}

/// Each signal's value in `record`.
fn signal_values(
    signals: &[VerifierSignal],
    record: Option<&VerificationRecord>,
) -> Vec<Option<f64>> {
    signals
        .iter()
        .map(|s| crate::training::verifier_score(record, *s).known())
        .collect()
}

/// Seed and folds of the cross-fit (the method's own cross-validation runs on top).
const CROSS_FIT_FOLDS: usize = 5;
const CROSS_FIT_SEED: u64 = 7;
/// Seed and folds of the nested check's outer assignment.
const NESTED_FOLDS: usize = 5;
const NESTED_SEED: u64 = 11;

/// Every signal's value per row (`[row][signal]`), and the small model's run per row,
/// whose verification prices a set of them.
struct SignalTable<'a> {
    signals: &'a [VerifierSignal],
    values: Vec<Vec<Option<f64>>>,
    small_runs: Vec<Option<&'a ModelRun>>,
}

impl<'a> SignalTable<'a> {
    /// The rows at `rows`, in that order.
    fn subset(&self, rows: &[usize]) -> SignalTable<'a> {
        SignalTable {
            signals: self.signals,
            values: rows.iter().map(|&i| self.values[i].clone()).collect(),
            small_runs: rows.iter().map(|&i| self.small_runs[i]).collect(),
        }
    }

    /// What verifying row `i` on the signals at `columns` cost.
    fn cost(&self, i: usize, columns: &[usize]) -> f64 {
        let picked: Vec<VerifierSignal> = columns.iter().map(|&j| self.signals[j]).collect();
        self.small_runs[i].map_or(0.0, |r| r.verification_cost(&picked))
    }
}

/// Records whose verifier score is the cross-fitted fusion of `columns` (indices into
/// the signals per row), on `base` records, charged the verification calls of every
/// signal in `columns` (a fused policy measures them all).
fn fused_records(
    base: &[RoutingRecord],
    table: &SignalTable<'_>,
    right: &[bool],
    columns: &[usize],
) -> Result<Vec<RoutingRecord>> {
    let values = &table.values;
    let picked: Vec<Vec<Option<f64>>> = values
        .iter()
        .map(|row| columns.iter().map(|&j| row[j]).collect())
        .collect();
    let folds = CROSS_FIT_FOLDS.min(base.len()).max(2);
    let assignment =
        automix_core::calibrate::fold_assignments(base.len(), folds, 1, CROSS_FIT_SEED)
            .pop()
            .unwrap_or_default();
    let oof = cross_fit(&picked, right, &assignment, folds)?;
    Ok((base.iter().zip(oof).enumerate())
        .map(|(i, (r, p))| fused_record(r, p, table.cost(i, columns)))
        .collect())
}

/// `r` with the fused confidence `p` (unknown where `None` or not a probability) and the
/// verification cost of the signals fused.
fn fused_record(r: &RoutingRecord, p: Option<f64>, verifier_cost: f64) -> RoutingRecord {
    RoutingRecord {
        verifier: p
            .and_then(|p| automix_core::Confidence::new(p).ok())
            .map_or(VerifierScore::Unknown, VerifierScore::Known),
        costs: r.costs.map(|c| automix_core::QueryCosts {
            verifier: verifier_cost,
            ..c
        }),
        ..r.clone()
    }
}

/// The rows at `rows` of `records`, in that order.
fn pick<T: Clone>(records: &[T], rows: &[usize]) -> Vec<T> {
    rows.iter().map(|&i| records[i].clone()).collect()
}

/// The nested check of every signal fused against `single` (the best signal's records):
/// see [`NestedFusionCheck`]. A fold where either objective is undefined, or where either
/// procedure cannot be trained on the other folds (a budget no policy meets on fewer rows,
/// say), is no evidence: it is left out and counted.
fn nested_check(
    config: &Config,
    (base, single): (&[RoutingRecord], &[RoutingRecord]),
    table: &SignalTable<'_>,
    right: &[bool],
) -> NestedFusionCheck {
    let n = base.len();
    let folds = NESTED_FOLDS.min(n / 2).max(2);
    let assignment = automix_core::calibrate::fold_assignments(n, folds, 1, NESTED_SEED)
        .pop()
        .unwrap_or_default();
    let mut pairs = Vec::new();
    let mut untrained = Vec::new();
    for f in 0..folds {
        let (held, train): (Vec<usize>, Vec<usize>) = (0..n).partition(|&i| assignment[i] == f);
        if held.is_empty() || train.len() < 2 {
            continue;
        }
        match held_out_pair(config, (base, single), table, right, (&train, &held)) {
            Ok(Some(pair)) => pairs.push(pair),
            Ok(None) => {}
            Err(e) => untrained.push(e.to_string()),
        }
    }
    NestedFusionCheck {
        untrained: untrained.len(),
        untrained_reason: untrained.into_iter().next(),
        ..NestedFusionCheck::of(&pairs)
    }
}

/// Both procedures trained on the rows `train` and scored on `held`: (fused, single), or
/// `None` where either objective is undefined there.
fn held_out_pair(
    config: &Config,
    (base, single): (&[RoutingRecord], &[RoutingRecord]),
    table: &SignalTable<'_>,
    right: &[bool],
    (train, held): (&[usize], &[usize]),
) -> Result<Option<(f64, f64)>> {
    let all: Vec<usize> = (0..table.signals.len()).collect();
    let (_, single_policy) = train_cv(config, &pick(single, train))?;
    let single_score = single_policy.held_out_objective(&pick(single, held))?;
    let (sub, sub_right) = (table.subset(train), pick(right, train));
    let records = fused_records(&pick(base, train), &sub, &sub_right, &all)?;
    let (_, fused_policy) = train_cv(config, &records)?;
    let model = FusedConfidence::fit(&sub.values, &sub_right)?;
    let held_records: Vec<RoutingRecord> = (held.iter())
        .map(|&i| {
            fused_record(
                &base[i],
                model.predict(&table.values[i]),
                table.cost(i, &all),
            )
        })
        .collect();
    let fused_score = fused_policy.held_out_objective(&held_records)?;
    Ok(fused_score.zip(single_score))
}

/// The method's out-of-fold objective on `records`, and the policy.
fn train_cv(config: &Config, records: &[RoutingRecord]) -> Result<(f64, automix_core::Policy)> {
    let (spec, options) = method_and_options(config)?;
    let policy = automix_core::train(records, &cost_model(config), &spec, &options)?;
    let cv = policy
        .summary
        .cross_validation
        .as_ref()
        .map(|c| c.mean)
        .ok_or(AutomixError::Setting {
            key: "hparam.fuse_signals",
            message: "needs a cross-validated routing_method (auto or Calibrated): the fusion \
                      is kept only where it wins out of fold"
                .into(),
        })?;
    Ok((cv, policy))
}

/// Trains with `hparam.fuse_signals`: (the signal the policy reads, its policy, the report).
pub fn train_fused(
    config: &Config,
    rows: &[TrainingRow],
    (small, large): (&str, &str),
) -> Result<(VerifierSignal, automix_core::Policy, SignalFusion)> {
    let signals = config.hparam.two_model_fuse_signals();
    let mut singles = Vec::new();
    let mut per_signal = Vec::new();
    let mut best: Option<(f64, VerifierSignal, automix_core::Policy)> = None;
    for &s in &signals {
        let records = routing_records(rows, small, large, s)?;
        if records.iter().all(|r| r.verifier.known().is_none()) {
            return Err(AutomixError::Setting {
                key: "hparam.fuse_signals",
                message: format!(
                    "{}: no row carries it; re-collect with `automix collect`",
                    s.name()
                ),
            });
        }
        let (cv, policy) = train_cv(config, &records)?;
        singles.push((s, cv));
        if best.as_ref().is_none_or(|(b, ..)| cv > *b) {
            best = Some((cv, s, policy));
        }
        per_signal.push(records);
    }
    // A listed signal makes `best` and a first `per_signal` entry.
    let (best_cv, best_signal, best_policy) = best.ok_or(AutomixError::Setting {
        key: "hparam.fuse_signals",
        message: "lists no signal".into(),
    })?;
    // The first signal's records carry everything else a record needs.
    let table = SignalTable {
        signals: &signals,
        values: (0..rows.len())
            .map(|i| per_signal.iter().map(|r| r[i].verifier.known()).collect())
            .collect(),
        small_runs: rows.iter().map(|row| row.run(small)).collect(),
    };
    let values = &table.values;
    let base = per_signal[0].clone();
    let right: Vec<bool> = base.iter().map(|r| r.small_score >= VERDICT_CUT).collect();
    let all: Vec<usize> = (0..signals.len()).collect();
    let (fused_cv, fused_policy) = train_cv(config, &fused_records(&base, &table, &right, &all)?)?;
    let mut without_cv = Vec::new();
    for (j, &s) in signals.iter().enumerate() {
        let rest: Vec<usize> = all.iter().copied().filter(|&k| k != j).collect();
        let cv = match rest.as_slice() {
            [only] => singles[*only].1,
            _ => train_cv(config, &fused_records(&base, &table, &right, &rest)?)?.0,
        };
        without_cv.push((s, cv));
    }
    // Led out of fold: the nested check decides (see `NestedFusionCheck` for why).
    let nested = (fused_cv > best_cv + 1e-9).then(|| {
        let at = signals.iter().position(|s| *s == best_signal).unwrap_or(0);
        nested_check(config, (&base, &per_signal[at]), &table, &right)
    });
    let wins = nested.as_ref().is_some_and(|c| c.clearly_better);
    let model = wins
        .then(|| FusedConfidence::fit(values, &right))
        .transpose()?;
    let report = SignalFusion {
        signals: signals.clone(),
        model,
        fused_cv,
        single_cv: singles,
        without_cv,
        nested,
    };
    Ok(if wins {
        (signals[0], fused_policy, report)
    } else {
        (best_signal, best_policy, report)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_fusion_must_lead_by_more_than_the_fold_noise() {
        let steady = NestedFusionCheck::of(&[(1.0, 0.8), (1.1, 0.9), (0.9, 0.8), (1.0, 0.7)]);
        assert!(steady.clearly_better && steady.folds == 4, "{steady:?}");
        assert!((steady.fused - 1.0).abs() < 1e-12 && (steady.single - 0.8).abs() < 1e-12);
        // Ahead on the mean, but by less than the spread of the per-fold differences.
        let noisy = NestedFusionCheck::of(&[(1.5, 0.8), (0.5, 0.9), (1.4, 0.8), (0.4, 0.9)]);
        assert!(
            noisy.fused > noisy.single && !noisy.clearly_better,
            "{noisy:?}"
        );
        // One fold is no evidence; none is none.
        assert!(!NestedFusionCheck::of(&[(2.0, 0.0)]).clearly_better);
        assert!(!NestedFusionCheck::of(&[]).clearly_better);
    }

    #[test]
    fn a_fold_that_cannot_be_trained_is_left_out_and_counted() {
        // A method without cross-validation cannot be trained by `train_cv` on any fold.
        let config = Config::parse(
            "hparam:\n  routing_method: Threshold\n",
            std::path::Path::new("t.yaml"),
        )
        .unwrap();
        let n = 40;
        let base: Vec<RoutingRecord> = (0..n)
            .map(|i| {
                let p = automix_core::Confidence::new(f64::from(i % 5) / 4.0).unwrap();
                RoutingRecord::new(f64::from(i % 2), 1.0, VerifierScore::Known(p))
            })
            .collect();
        let signals = [VerifierSignal::Samples, VerifierSignal::AnswerLogprob];
        let table = SignalTable {
            signals: &signals,
            values: (0..n)
                .map(|i| vec![Some(f64::from(i % 5) / 4.0), Some(0.5)])
                .collect(),
            small_runs: vec![None; n as usize],
        };
        let right: Vec<bool> = (0..n).map(|i| i % 2 == 1).collect();
        let check = nested_check(&config, (&base, &base), &table, &right);
        assert_eq!((check.folds, check.untrained), (0, 5), "{check:?}");
        assert!(!check.clearly_better);
        let why = check.untrained_reason.unwrap_or_default();
        assert!(why.contains("cross-validated"), "{why}");
    }
}
