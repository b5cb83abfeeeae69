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

/// Cell sums per (outer fold, inner fold) bucket of one pair of assignments.
type Buckets = Vec<Vec<(u32, CellSums)>>;

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
    /// Every cell's gain (from `stats`), the inner fits' starting point.
    pub(crate) gains: &'a [CellGain],
}

/// Runs both procedures on the training part of every outer fold and scores them on its
/// held-out part; Threshold trains on `groups`, the cells its grid tells apart.
pub(crate) fn nested_paired(
    input: &NestedInput<'_, '_>,
    groups: &GridGroups,
    (config, folds): (&CalibratedConfig, usize),
    threshold: &MethodSpec,
    used: Objective,
    options: &TrainOptions,
) -> Result<PairedFolds> {
    let n = input.data.len();
    let outer_seed = config.seed.wrapping_add(1_000);
    let inners = fold_assignments(n, folds, config.repeats.min(INNER_REPEATS), config.seed);
    let outers = fold_assignments(n, folds, OUTER_REPEATS, outer_seed);
    // Every outer assignment's buckets, then every (assignment, held-out fold) on its own:
    // the units are independent and each re-runs the inner cross-validation.
    // Each (outer, inner) pair's pass is independent of the others'.
    let pairs: Vec<(usize, usize)> = (0..outers.len())
        .flat_map(|o| (0..inners.len()).map(move |i| (o, i)))
        .collect();
    let mut passes = crate::parallel::map_in_parallel(&pairs, |&(o, i)| {
        joint_buckets(input, &outers[o], &inners[i], folds)
    })
    .into_iter();
    let buckets: Vec<Vec<Buckets>> = (0..outers.len())
        .map(|_| passes.by_ref().take(inners.len()).collect())
        .collect();
    let units: Vec<(usize, usize)> = (0..outers.len())
        .flat_map(|o| (0..folds).map(move |f| (o, f)))
        .collect();
    let pairs = crate::parallel::map_in_parallel(&units, |&(o, f)| {
        held_out_pair(
            (input, groups),
            &buckets[o],
            f,
            (config, folds),
            threshold,
            used,
            options,
        )
    });
    let (calibrated, threshold) = pairs.into_iter().flatten().unzip();
    Ok(PairedFolds {
        calibrated,
        threshold,
        folds,
    })
}

/// Both procedures trained outside held-out fold `f` of one outer assignment (its
/// `buckets`) and scored on it: `(calibrated, threshold)`, or `None` when either is
/// undefined there. A fold where Threshold has no feasible candidate is no evidence for it:
/// the pair is left out (with fewer than two pairs the calibrated fit is kept).
fn held_out_pair(
    (input, groups): (&NestedInput<'_, '_>, &GridGroups),
    buckets: &[Buckets],
    f: usize,
    (config, folds): (&CalibratedConfig, usize),
    threshold: &MethodSpec,
    used: Objective,
    options: &TrainOptions,
) -> Option<(f64, f64)> {
    let held: FoldRef<'_> = buckets[0][f * folds..(f + 1) * folds]
        .iter()
        .flatten()
        .collect();
    // The calibrated procedure reads only the training cells' gains and total: both are
    // taken from the held-out entries, without a copy of every cell's sums.
    let mut by_cell = held.clone();
    // Stable: a cell's entries stay in entry order, as `Cells::without` removes them.
    by_cell.sort_by_key(|(cell, _)| *cell);
    let gains = CellGain::without(input.gains, held.iter().copied());
    let noise = RatioNoise::with_baseline_of(input.stats, &input.cells.total_without(&by_cell));
    let inner: Vec<Vec<FoldRef<'_>>> = buckets.iter().map(|b| inner_folds(b, f, folds)).collect();
    let train = (input.stats, gains.as_slice(), input.g);
    let calibrated = inner_calibrated(train, noise, &inner, config, used, options);
    let threshold_train = Stats {
        sums: Cow::Owned(groups.cells.without(&groups.entries(held.iter().copied()))),
        ..groups.stats(input.stats)
    };
    let (threshold_rule, _) = train_stats(&threshold_train, threshold, options).ok()?;
    let (keys, sums) = fold_cells(&by_cell, input.stats.keys);
    let held_out = Stats {
        keys: &keys,
        sums: Cow::Owned(sums),
        ..input.stats.clone()
    };
    let base = held_out.baseline();
    let score = |rule: &DecisionRule| {
        let o = held_out.outcome_of(rule, options.unknown_confidence);
        objective_key(used, &o, lift(&base, &o), options).map(|k| k.0)
    };
    Some((score(&calibrated?)?, score(&threshold_rule.rule)?))
}

/// The rows' cell sums per (outer fold, inner fold) bucket, `outer * folds + inner`, in
/// one pass: every outer fold's held-out rows and inner folds are unions of buckets, so the
/// nested comparison passes over the rows once per pair of assignments.
fn joint_buckets(
    input: &NestedInput<'_, '_>,
    outer: &[usize],
    inner: &[usize],
    folds: usize,
) -> Buckets {
    let joint: Vec<usize> = outer
        .iter()
        .zip(inner)
        .map(|(o, i)| o * folds + i)
        .collect();
    input.data.fold_sums(input.cells, &joint, folds * folds)
}

/// The inner folds of the rows outside outer fold `f`: inner fold `g` is the union of the
/// buckets `(o, g)`, `o ≠ f` (a cell may appear once per bucket; every reader sums entries).
fn inner_folds(buckets: &[Vec<(u32, CellSums)>], f: usize, folds: usize) -> Vec<FoldRef<'_>> {
    (0..folds)
        .map(|g| {
            (0..folds)
                .filter(|&o| o != f)
                .flat_map(|o| buckets[o * folds + g].iter())
                .collect()
        })
        .collect()
}

/// The calibrated procedure on `train`: every κ's curves, their cuts scored on the inner
/// folds, the best chosen as [`choose_calibrated`] does; its rule.
fn inner_calibrated(
    (train, gains, g): (&Stats<'_>, &[CellGain], &GainCells),
    (base, noise): (Baseline, RatioNoise),
    inner: &[Vec<FoldRef<'_>>],
    config: &CalibratedConfig,
    used: Objective,
    options: &TrainOptions,
) -> Option<DecisionRule> {
    let mut arms: Vec<CalibratedArm> = config
        .shrinkages(train.task_names.len())
        .into_iter()
        .filter_map(|kappa| {
            let model = g.fit(gains, train.task_names, kappa)?;
            Some(CalibratedArm {
                kappa,
                cuts: candidate_cuts(&model),
                model,
                outcomes: Vec::new(),
            })
        })
        .collect();
    let kappas: Vec<Option<f64>> = arms.iter().map(|a| a.kappa).collect();
    for fold_sums in inner {
        let entries = out_of_fold_entries(
            train,
            (gains, g),
            fold_sums,
            &kappas,
            options.unknown_confidence,
        );
        for (arm, entries) in arms.iter_mut().zip(entries) {
            (arm.outcomes).push(outcomes_for_cuts(entries, train.uniform, &arm.cuts));
        }
    }
    let folds = inner.first().map_or(0, Vec::len);
    choose_calibrated(arms, (&base, &noise), folds, inner.len(), used, options)
        .ok()
        .map(|fit| fit.rule)
}

/// The cells of one fold (its entries stably sorted by cell) on their own, in cell order:
/// their keys, and their sums (a cell's entries from several buckets merged in entry
/// order). Scoring reads only cells with rows, in cell order, so these score a rule as the
/// fold's cells among all the others would.
fn fold_cells(by_cell: &[&(u32, CellSums)], keys: &[CellKey]) -> (Vec<CellKey>, Vec<CellSums>) {
    let mut out_keys: Vec<CellKey> = Vec::new();
    let mut out_sums: Vec<CellSums> = Vec::new();
    let mut last = None;
    for (cell, s) in by_cell.iter().copied() {
        if last != Some(*cell) {
            out_keys.push(keys[*cell as usize]);
            out_sums.push(CellSums::default());
            last = Some(*cell);
        }
        if let Some(sum) = out_sums.last_mut() {
            sum.merge(s);
        }
    }
    (out_keys, out_sums)
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
