//! `auto`'s one choice between the calibrated curves and the paper's Threshold, by nested
//! cross-validation: both *procedures* are run on the training part of each outer fold
//! (the calibrated one with its own inner cross-validation choosing κ and the cut,
//! Threshold selected in sample as the paper does) and scored on the held-out part.
//!
//! Why not compare the cross-validated scores directly: the calibrated score is the best of
//! many cuts and κ *on the out-of-fold decisions themselves*, so it is optimistic, while
//! Threshold's out-of-fold score is honest; and the spread of the per-assignment means
//! understates the noise, since every assignment reuses the same rows. Here the two are
//! scored alike, on the same held-out folds, and Threshold must win by more than one
//! standard error of the per-fold differences.

use super::*;

/// Outer fold assignments of the nested comparison (inner ones: the config's `repeats`,
/// capped here, since each outer fold re-runs them).
const OUTER_REPEATS: usize = 2;
const INNER_REPEATS: usize = 2;

/// Objective values of the two procedures on each held-out outer fold, paired.
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct PairedFolds {
    /// Calibrated (κ and cut by inner cross-validation), per (assignment, fold).
    pub(crate) calibrated: Vec<f64>,
    /// Threshold (selected in sample), per (assignment, fold).
    pub(crate) threshold: Vec<f64>,
    /// Folds per assignment: the sample size the standard error is taken over.
    pub(crate) folds: usize,
}

impl PairedFolds {
    /// Whether Threshold's mean per-fold lead exceeds one standard error of the per-fold
    /// differences over `folds` folds (the repeats reuse the rows, so they do not shrink it).
    pub(crate) fn threshold_clearly_better(&self) -> bool {
        let diffs: Vec<f64> = self
            .threshold
            .iter()
            .zip(&self.calibrated)
            .map(|(t, c)| t - c)
            .collect();
        if diffs.len() < 2 {
            return false;
        }
        let (mean, sd) = mean_sd(&diffs);
        mean > 0.0 && mean > sd / (self.folds as f64).sqrt()
    }

    /// The mean per-fold values (calibrated, threshold), for the report.
    pub(crate) fn means(&self) -> (f64, f64) {
        (mean_sd(&self.calibrated).0, mean_sd(&self.threshold).0)
    }
}

/// What the nested comparison reads: the rows, their cells, the curve fitter.
pub(crate) struct NestedInput<'a, 'b> {
    pub(crate) data: &'a Dataset,
    pub(crate) cells: &'a Cells,
    pub(crate) stats: &'a Stats<'b>,
    pub(crate) g: &'a GainCells,
}

/// Runs both procedures on the training part of every outer fold and scores them on its
/// held-out part.
pub(crate) fn nested_paired(
    input: &NestedInput<'_, '_>,
    (config, folds): (&CalibratedConfig, usize),
    threshold: &MethodSpec,
    used: Objective,
    options: &TrainOptions,
) -> Result<PairedFolds> {
    let mut paired = PairedFolds {
        folds,
        ..PairedFolds::default()
    };
    let n = input.data.len();
    let outer_seed = config.seed.wrapping_add(1_000);
    let inners = fold_assignments(n, folds, config.repeats.min(INNER_REPEATS), config.seed);
    for outer in fold_assignments(n, folds, OUTER_REPEATS, outer_seed) {
        let buckets: Vec<_> = inners
            .iter()
            .map(|inner| joint_buckets(input, &outer, inner, folds))
            .collect();
        for f in 0..folds {
            let held: Vec<(u32, CellSums)> = buckets[0][f * folds..(f + 1) * folds]
                .iter()
                .flatten()
                .cloned()
                .collect();
            let train_cells = Cells {
                sums: input.cells.without(&held),
                ..Cells::default()
            };
            let train = Stats {
                sums: Cow::Borrowed(&train_cells.sums),
                ..input.stats.clone()
            };
            let inner: Vec<Vec<Vec<(u32, CellSums)>>> =
                buckets.iter().map(|b| inner_folds(b, f, folds)).collect();
            let calibrated =
                inner_calibrated(&train, &train_cells, input.g, &inner, config, used, options);
            // A fold where Threshold has no feasible candidate is no evidence for it: the
            // pair is left out (with fewer than two pairs the calibrated fit is kept).
            let Ok((threshold_rule, _)) = train_stats(&train, threshold, options) else {
                continue;
            };
            let held_out = fold_stats(input.stats, &held);
            let base = held_out.baseline();
            let score = |rule: &DecisionRule| {
                let o = held_out.outcome_of(rule, options.unknown_confidence);
                objective_key(used, &o, lift(&base, &o), options).map(|k| k.0)
            };
            if let (Some(c), Some(t)) = (
                calibrated.as_ref().and_then(&score),
                score(&threshold_rule.rule),
            ) {
                paired.calibrated.push(c);
                paired.threshold.push(t);
            }
        }
    }
    Ok(paired)
}

/// The rows' cell sums per (outer fold, inner fold) bucket, `outer * folds + inner`, in
/// one pass: every outer fold's held-out rows and inner folds are unions of buckets, so the
/// nested comparison passes over the rows once per pair of assignments.
fn joint_buckets(
    input: &NestedInput<'_, '_>,
    outer: &[usize],
    inner: &[usize],
    folds: usize,
) -> Vec<Vec<(u32, CellSums)>> {
    let joint: Vec<usize> = outer
        .iter()
        .zip(inner)
        .map(|(o, i)| o * folds + i)
        .collect();
    input.data.fold_sums(input.cells, &joint, folds * folds)
}

/// The inner folds of the rows outside outer fold `f`: inner fold `g` is the union of the
/// buckets `(o, g)`, `o ≠ f` (a cell may appear once per bucket; every reader sums entries).
fn inner_folds(
    buckets: &[Vec<(u32, CellSums)>],
    f: usize,
    folds: usize,
) -> Vec<Vec<(u32, CellSums)>> {
    (0..folds)
        .map(|g| {
            (0..folds)
                .filter(|&o| o != f)
                .flat_map(|o| buckets[o * folds + g].iter().cloned())
                .collect()
        })
        .collect()
}

/// The calibrated procedure on `train`: every κ's curves, their cuts scored on the inner
/// folds, the best chosen as [`choose_calibrated`] does; its rule.
fn inner_calibrated(
    train: &Stats<'_>,
    train_cells: &Cells,
    g: &GainCells,
    inner: &[Vec<Vec<(u32, CellSums)>>],
    config: &CalibratedConfig,
    used: Objective,
    options: &TrainOptions,
) -> Option<DecisionRule> {
    let arms: Vec<CalibratedArm> = config
        .shrinkages(train.task_names.len())
        .into_iter()
        .filter_map(|kappa| {
            let model = g.fit(&train.sums, train.task_names, kappa)?;
            let cuts = candidate_cuts(&model);
            let outcomes = inner
                .iter()
                .map(|fold_sums| {
                    let entries = out_of_fold_entries(
                        train,
                        train_cells,
                        g,
                        fold_sums,
                        kappa,
                        options.unknown_confidence,
                    );
                    outcomes_for_cuts(entries, train.uniform, &cuts)
                })
                .collect();
            Some(CalibratedArm {
                kappa,
                model,
                cuts,
                outcomes,
            })
        })
        .collect();
    let (base, noise) = RatioNoise::with_baseline(train);
    let folds = inner.first().map_or(0, Vec::len);
    choose_calibrated(arms, (&base, &noise), folds, inner.len(), used, options)
        .ok()
        .map(|fit| fit.rule)
}

/// The cells of one fold as statistics of their own (every other cell empty; a cell's
/// entries from several buckets are merged).
fn fold_stats<'a>(stats: &Stats<'a>, fold: &[(u32, CellSums)]) -> Stats<'a> {
    let mut sums = vec![CellSums::default(); stats.keys.len()];
    for (cell, s) in fold {
        sums[*cell as usize].merge(s);
    }
    Stats {
        sums: Cow::Owned(sums),
        ..stats.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_lead_within_the_fold_noise_is_not_clear() {
        let noisy = PairedFolds {
            calibrated: vec![0.0, 1.0, 0.0, 1.0, 0.0],
            threshold: vec![1.0, 0.0, 1.0, 0.0, 1.2],
            folds: 5,
        };
        assert!(!noisy.threshold_clearly_better());
        let steady = PairedFolds {
            calibrated: vec![0.0, 0.1, 0.0, 0.1, 0.0],
            threshold: vec![0.2, 0.3, 0.2, 0.3, 0.2],
            folds: 5,
        };
        assert!(steady.threshold_clearly_better());
        assert!(!PairedFolds::default().threshold_clearly_better());
    }
}
