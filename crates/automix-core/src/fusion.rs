//! A fused confidence: P(the small answer is right | several signals), for routing on every
//! signal a model gives about its own answer (verdict votes, verdict logprob, answer
//! consistency, answer logprob) instead of one.
//!
//! Two stages, each one a model that is easy to defend on a few hundred rows:
//! - **Per signal, isotonic**: `P(right | s)` fitted non-decreasing in `s` by
//!   pool-adjacent-violators, each block's rate add-one smoothed (so no signal value is ever
//!   "certain"). This puts every signal on one scale whatever its shape (k votes, a logprob
//!   piled up at 1.0, a consistency share).
//! - **Combined, shrunk logistic**: `logit P = b + Σ w_j · z_j`, where `z_j` is signal j's
//!   calibrated log-odds relative to the base rate (an unknown value is `z_j = 0`: no
//!   evidence either way), fitted by Newton's method with a ridge penalty on the weights.
//!   The ridge keeps correlated signals (votes and logprob of the same verdict) from
//!   trading huge opposite weights.
//!
//! Training code cross-fits it ([`cross_fit`]): each row's fused confidence comes from a
//! fit that did not see it, so the gain curve and its cross-validation on top read honest
//! values (stacking).

use serde::{Deserialize, Serialize};

mod logistic;

use crate::calibrate::pav;
use crate::error::{CoreError, Result};
use logistic::{Logistic, PARALLEL_ROWS, RowPasses, newton_logistic, sigmoid};

/// One signal's calibration: `P(right)` as a non-decreasing step function of the value,
/// read at the nearest stored level.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SignalCurve {
    /// Ascending values: the first and last value seen in each step of the curve.
    pub levels: Vec<f64>,
    /// Smoothed `P(right)` at each level, non-decreasing.
    pub p_right: Vec<f64>,
}

impl SignalCurve {
    /// Fits the curve on `(value, right)` pairs; `None` without any.
    pub fn fit(points: &[(f64, bool)]) -> Option<Self> {
        let right: Vec<bool> = points.iter().map(|p| p.1).collect();
        let values = points.iter().map(|p| Some(p.0));
        let (levels, _) = SignalLevels::of(values, &right, &[], 1);
        Self::fit_counted(levels.counts_without(None))
    }

    /// [`SignalCurve::fit`] on distinct ascending values, each with its rows and the wrong
    /// answers among them.
    fn fit_counted(counted: impl Iterator<Item = (f64, f64, f64)>) -> Option<Self> {
        let (levels, counts): (Vec<f64>, Vec<(f64, f64)>) =
            counted.map(|(x, rows, wrong)| (x, (rows, wrong))).unzip();
        if levels.is_empty() {
            return None;
        }
        // A non-increasing fit of P(wrong) is a non-decreasing one of P(right). Only each
        // block's first and last level are kept: every value inside a block, or nearer to
        // one of its ends than to the next block's, reads the same P(right) from them as
        // from every level, so the curve is as small as its steps (a continuous signal
        // has thousands of distinct values but a few dozen steps).
        let mut curve = Self {
            levels: Vec::new(),
            p_right: Vec::new(),
        };
        for b in pav(counts.iter().copied()) {
            let p = 1.0 - (b.sum + 1.0) / (b.weight + 2.0);
            let ends: &[usize] = if b.last > b.first {
                &[b.first, b.last]
            } else {
                &[b.first]
            };
            for &i in ends {
                curve.levels.push(levels[i]);
                curve.p_right.push(p);
            }
        }
        Some(curve)
    }

    /// `P(right)` at `x`: the nearest level's.
    pub fn at(&self, x: f64) -> f64 {
        self.p_right[crate::calibrate::nearest_level(&self.levels, x)]
    }
}

/// The fused confidence: per-signal curves and the shrunk logistic combination.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FusedConfidence {
    /// One curve per signal, in the input order; `None` for a signal no row carried.
    pub curves: Vec<Option<SignalCurve>>,
    /// The training rows' share of right answers (smoothed).
    pub base_rate: f64,
    /// Intercept of the logistic combination.
    pub intercept: f64,
    /// One weight per signal.
    pub weights: Vec<f64>,
}

/// Ridge penalty on the logistic weights (per row-equivalent: the penalty is
/// `RIDGE / 2 · |w|²` on the summed log-likelihood).
pub const RIDGE: f64 = 1.0;

fn logit(p: f64) -> f64 {
    (p / (1.0 - p)).ln()
}

impl FusedConfidence {
    /// Fits on `signals[row][j]` (signal j's value for row, `None` if unknown) and
    /// `right[row]`.
    pub fn fit(signals: &[Vec<Option<f64>>], right: &[bool]) -> Result<Self> {
        check_shape(signals, right)?;
        Ok(SortedSignals::new(signals, right, &[], 1)
            .fit_where(right, None, Start::NaiveBayes)
            .0)
    }

    /// Signal j's calibrated log-odds relative to the base rate (0 when unknown).
    fn feature(&self, j: usize, x: Option<f64>, base: f64) -> f64 {
        match (&self.curves[j], x) {
            (Some(c), Some(x)) if x.is_finite() => logit(c.at(x)) - base,
            _ => 0.0,
        }
    }

    /// Checks shapes and ranges for `signals` signals (a policy file may have been edited):
    /// the reason when it cannot score every row it is given.
    pub fn problem(&self, signals: usize) -> Option<String> {
        if self.weights.len() != signals || self.curves.len() != signals {
            return Some(format!(
                "{} weights and {} curves for {signals} signals",
                self.weights.len(),
                self.curves.len()
            ));
        }
        let finite = self.intercept.is_finite() && self.weights.iter().all(|w| w.is_finite());
        if !(finite && self.base_rate > 0.0 && self.base_rate < 1.0) {
            return Some("intercept and weights must be finite, base_rate in (0, 1)".into());
        }
        let curve_ok = |c: &SignalCurve| {
            !c.levels.is_empty()
                && c.levels.len() == c.p_right.len()
                && c.levels.windows(2).all(|w| w[0] < w[1])
                && c.p_right.iter().all(|p| *p > 0.0 && *p < 1.0)
        };
        (!self.curves.iter().flatten().all(curve_ok))
            .then(|| "every curve needs ascending levels, one P(right) in (0, 1) per level".into())
    }

    /// The fused `P(right)`; `None` when every signal is unknown (the policy's
    /// `unknown_confidence` rule decides such a row, as for one signal).
    pub fn predict(&self, row: &[Option<f64>]) -> Option<f64> {
        if row.len() != self.weights.len() || all_unknown(row) {
            return None;
        }
        let base = logit(self.base_rate);
        let features = row
            .iter()
            .enumerate()
            .map(|(j, x)| self.feature(j, *x, base));
        Some(self.combine(features))
    }

    /// The logistic coefficients, intercept first: a [`Start::From`] for a fit on
    /// overlapping rows.
    fn coefficients(&self) -> Vec<f64> {
        std::iter::once(self.intercept)
            .chain(self.weights.iter().copied())
            .collect()
    }

    /// The fused `P(right)` from a row's logistic inputs (one per signal).
    fn combine(&self, features: impl Iterator<Item = f64>) -> f64 {
        let z: f64 = features.zip(&self.weights).map(|(f, w)| w * f).sum();
        sigmoid(self.intercept + z)
    }
}

/// Whether no signal of the row is known (its fused confidence is unknown).
fn all_unknown(row: &[Option<f64>]) -> bool {
    row.iter().all(|x| x.is_none_or(|v| !v.is_finite()))
}

/// Where the logistic stage's Newton iterations start, and whether its passes over the rows
/// use the machine's cores.
#[derive(Clone, Copy)]
enum Start<'a> {
    /// From naive Bayes (every signal's log-odds counted once), the rows summed on every
    /// core: the first fit of a cross-fit, or a fit alone.
    NaiveBayes,
    /// From another fit's coefficients (intercept first), on one core: a cross-fit's other
    /// folds, fitted side by side.
    From(&'a [f64]),
}

/// Each signal's distinct known, finite values, counted per cross-fit fold, and each row's
/// place among them: sorted once, so every fold of a cross-fit fits its curves from the
/// levels' counts without the fold's rows (no pass over the rows), and reads every row's
/// logistic inputs off one table per signal, row after row.
struct SortedSignals {
    signals: Vec<SignalLevels>,
    /// Row i's level in signal j at `i·m + j`; [`NO_LEVEL`] where the value is unknown.
    level_of: Vec<u32>,
}

/// One signal's distinct values, ascending, and per value and fold the rows and the wrong
/// answers among them.
struct SignalLevels {
    values: Vec<f64>,
    /// `[rows, wrong]` of level l in fold f at `l·folds + f`.
    counts: Vec<[u32; 2]>,
    folds: usize,
}

/// [`SortedSignals::level_of`] for an unknown value.
const NO_LEVEL: u32 = u32::MAX;

impl SortedSignals {
    /// Sorts each signal's values; `fold[i]` is row i's cross-fit fold (below `folds`), or
    /// `fold` is empty outside a cross-fit (`folds` is then 1).
    fn new(signals: &[Vec<Option<f64>>], right: &[bool], fold: &[usize], folds: usize) -> Self {
        let m = signals.first().map_or(0, Vec::len);
        let columns: Vec<usize> = (0..m).collect();
        let column = |&j: &usize| {
            let values = signals.iter().map(|row| row[j]);
            SignalLevels::of(values, right, fold, folds)
        };
        // One signal per core where sorting takes longer than starting a thread.
        let by_signal = if signals.len() >= PARALLEL_ROWS {
            crate::parallel::map_in_parallel(&columns, column)
        } else {
            columns.iter().map(column).collect()
        };
        let (signals_levels, columns): (Vec<SignalLevels>, Vec<Vec<u32>>) =
            by_signal.into_iter().unzip();
        let level_of = (0..signals.len())
            .flat_map(|i| columns.iter().map(move |c| c[i]))
            .collect();
        Self {
            signals: signals_levels,
            level_of,
        }
    }

    /// The logistic stage's inputs for every row, row after row: each signal's calibrated
    /// log-odds relative to the base rate (0 when unknown), as [`FusedConfidence::feature`]
    /// computes them, read off a table of every level's, made in one walk along each curve
    /// instead of a search per row.
    fn features(&self, fused: &FusedConfidence) -> Vec<f64> {
        let m = self.signals.len();
        let base = logit(fused.base_rate);
        let tables: Vec<Vec<f64>> = (self.signals.iter().zip(&fused.curves))
            .map(|(levels, curve)| match curve {
                Some(curve) => levels.log_odds_under(curve, base),
                None => vec![0.0; levels.values.len()],
            })
            .collect();
        let mut features = vec![0.0; self.level_of.len()];
        for (row, levels) in features
            .chunks_exact_mut(m.max(1))
            .zip(self.level_of.chunks_exact(m.max(1)))
        {
            for ((x, &level), table) in row.iter_mut().zip(levels).zip(&tables) {
                if level != NO_LEVEL {
                    *x = table[level as usize];
                }
            }
        }
        features
    }

    /// The fusion fitted on every row but fold `held_out`'s (every row for `None`), and every
    /// row's logistic inputs under it ([`SortedSignals::features`]), so a cross-fit scores
    /// its held-out rows without a search either.
    fn fit_where(
        &self,
        right: &[bool],
        held_out: Option<(usize, &[usize])>,
        start: Start<'_>,
    ) -> (FusedConfidence, Vec<f64>) {
        let curves: Vec<Option<SignalCurve>> = (self.signals.iter())
            .map(|levels| SignalCurve::fit_counted(levels.counts_without(held_out.map(|h| h.0))))
            .collect();
        let kept: Vec<usize> = (0..right.len())
            .filter(|&i| held_out.is_none_or(|(f, fold)| fold[i] != f))
            .collect();
        let rights = kept.iter().filter(|&&i| right[i]).count() as f64;
        let base_rate = (rights + 1.0) / (kept.len() as f64 + 2.0);
        let m = self.signals.len();
        let mut fused = FusedConfidence {
            curves,
            base_rate,
            intercept: logit(base_rate),
            weights: vec![0.0; m],
        };
        let base = logit(base_rate);
        let all = self.features(&fused);
        let features: Vec<f64> = (kept.iter())
            .flat_map(|&i| &all[i * m..(i + 1) * m])
            .copied()
            .collect();
        let labels: Vec<bool> = kept.iter().map(|&i| right[i]).collect();
        let (from, rows) = match start {
            Start::NaiveBayes => {
                let naive: Vec<f64> = std::iter::once(base)
                    .chain(std::iter::repeat_n(1.0, m))
                    .collect();
                (naive, RowPasses::OnEveryCore)
            }
            Start::From(coefficients) => (coefficients.to_vec(), RowPasses::OnOneCore),
        };
        let problem = Logistic {
            x: &features,
            m,
            y: &labels,
            ridge: RIDGE,
            rows,
        };
        let (intercept, weights) = newton_logistic(&problem, &from);
        fused.intercept = intercept;
        fused.weights = weights;
        (fused, all)
    }
}

impl SignalLevels {
    /// One signal's levels from every row's value, and each row's level ([`NO_LEVEL`] where
    /// the value is unknown or not finite).
    fn of(
        values: impl Iterator<Item = Option<f64>>,
        right: &[bool],
        fold: &[usize],
        folds: usize,
    ) -> (Self, Vec<u32>) {
        let mut rows: Vec<(f64, u32)> = values
            .enumerate()
            // `check_shape` bounds the rows by `u32::MAX`.
            .filter_map(|(i, v)| Some((v.filter(|v| v.is_finite())?, i as u32)))
            .collect();
        let mut level_of = vec![NO_LEVEL; right.len()];
        // Rows of equal value are read as one level, so their order is free.
        rows.sort_unstable_by(|a, b| a.0.total_cmp(&b.0));
        let mut levels = Self {
            values: Vec::new(),
            counts: Vec::new(),
            folds,
        };
        for (value, row) in rows {
            if levels.values.last() != Some(&value) {
                levels.values.push(value);
                levels.counts.extend(std::iter::repeat_n([0, 0], folds));
            }
            let level = levels.values.len() - 1;
            let row = row as usize;
            let at = level * folds + fold.get(row).copied().unwrap_or(0);
            levels.counts[at][0] += 1;
            levels.counts[at][1] += u32::from(!right[row]);
            // At most `u32::MAX` rows, so fewer levels.
            level_of[row] = level as u32;
        }
        (levels, level_of)
    }

    /// Every level's value with its rows and wrong answers outside fold `held_out`, levels
    /// without such rows left out.
    fn counts_without(
        &self,
        held_out: Option<usize>,
    ) -> impl Iterator<Item = (f64, f64, f64)> + '_ {
        (self
            .values
            .iter()
            .zip(self.counts.chunks_exact(self.folds.max(1))))
        .filter_map(move |(&value, by_fold)| {
            let [rows, wrong] = (by_fold.iter().enumerate())
                .filter(|(f, _)| Some(*f) != held_out)
                .fold([0, 0], |acc, (_, c)| [acc[0] + c[0], acc[1] + c[1]]);
            (rows > 0).then(|| (value, f64::from(rows), f64::from(wrong)))
        })
    }

    /// Each level's calibrated log-odds under `curve`, relative to `base`: the nearest curve
    /// level's, found in one walk (both are ascending).
    fn log_odds_under(&self, curve: &SignalCurve, base: f64) -> Vec<f64> {
        let log_odds: Vec<f64> = curve.p_right.iter().map(|&p| logit(p) - base).collect();
        let mut above = 0;
        (self.values.iter())
            .map(|&value| {
                while above < curve.levels.len() && curve.levels[above] < value {
                    above += 1;
                }
                log_odds[crate::calibrate::nearest_level_above(&curve.levels, above, value)]
            })
            .collect()
    }
}

fn check_shape(signals: &[Vec<Option<f64>>], right: &[bool]) -> Result<usize> {
    let m = signals.first().map_or(0, Vec::len);
    let bad = |reason: String| {
        Err(CoreError::InvalidParameter {
            name: "fused signals",
            reason,
        })
    };
    if signals.is_empty() || signals.len() != right.len() {
        return bad(format!(
            "{} rows of signals for {} labels (need one per row, at least one)",
            signals.len(),
            right.len()
        ));
    }
    if m == 0 || signals.iter().any(|r| r.len() != m) {
        return bad(format!(
            "every row needs the same number (≥ 1) of signals, {m} in the first"
        ));
    }
    if m > MAX_SIGNALS {
        return bad(format!("{m} signals: at most {MAX_SIGNALS} are fused"));
    }
    if u32::try_from(signals.len()).is_err() {
        return bad(format!(
            "{} rows: at most {} are fused",
            signals.len(),
            u32::MAX
        ));
    }
    Ok(m)
}

/// A cross-fit's fold assignment: one fold per row, each below `folds`, at most
/// `MAX_FOLDS`.
fn check_folds(assignment: &[usize], rows: usize, folds: usize) -> Result<()> {
    let reason = if assignment.len() != rows {
        format!("{} folds assigned for {rows} rows", assignment.len())
    } else if folds > MAX_FOLDS {
        format!("{folds} folds: at most {MAX_FOLDS} are cross-fitted")
    } else if let Some(f) = assignment.iter().find(|&&f| f >= folds) {
        format!("a row assigned to fold {f} of {folds}")
    } else {
        return Ok(());
    };
    Err(CoreError::InvalidParameter {
        name: "fold assignment",
        reason,
    })
}

/// The most folds a cross-fit takes (each signal's levels are counted per fold).
pub const MAX_FOLDS: usize = 64;

/// The most signals one fusion combines (every signal the router knows fits).
pub const MAX_SIGNALS: usize = 8;

/// Out-of-fold fused confidences: row i's from a fit on the other folds of `assignment`
/// (`assignment[i]` is row i's fold, as [`crate::calibrate::fold_assignments`] makes them).
pub fn cross_fit(
    signals: &[Vec<Option<f64>>],
    right: &[bool],
    assignment: &[usize],
    folds: usize,
) -> Result<Vec<Option<f64>>> {
    let mut out = cross_fit_at(signals, right, assignment, folds, &[])?;
    Ok(out.swap_remove(0))
}

/// [`cross_fit`], and the same out-of-fold fits (made once) scored on other inputs too:
/// row i at `also[k][i]` for each input set `k` (a row with one signal masked as unknown,
/// say). The first result is the rows' own, then one per input set.
pub fn cross_fit_at(
    signals: &[Vec<Option<f64>>],
    right: &[bool],
    assignment: &[usize],
    folds: usize,
    also: &[&[Vec<Option<f64>>]],
) -> Result<Vec<Vec<Option<f64>>>> {
    let m = check_shape(signals, right)?;
    for inputs in also {
        check_shape(inputs, right)?;
    }
    check_folds(assignment, signals.len(), folds)?;
    let sorted = SortedSignals::new(signals, right, assignment, folds);
    let fold_scores = |f: usize, start: Start<'_>| {
        let (model, features) = sorted.fit_where(right, Some((f, assignment)), start);
        let held_out = (0..signals.len()).filter(|&i| assignment[i] == f);
        let scores: Vec<(usize, Option<f64>, Vec<Option<f64>>)> = held_out
            .map(|i| {
                // The walked inputs are the ones `predict` computes (a test checks it).
                let own = (!all_unknown(&signals[i]))
                    .then(|| model.combine(features[i * m..(i + 1) * m].iter().copied()));
                (i, own, also.iter().map(|a| model.predict(&a[i])).collect())
            })
            .collect();
        (scores, model.coefficients())
    };
    let trained: Vec<usize> = (0..folds)
        .filter(|&f| !assignment.iter().all(|a| *a == f))
        .collect();
    let mut out = vec![vec![None; signals.len()]; 1 + also.len()];
    let Some((&first, rest)) = trained.split_first() else {
        return Ok(out);
    };
    // The first fold alone on every core, then the others side by side from its optimum:
    // any two folds share most of their training rows, so their optima are 2–4 Newton
    // steps apart where naive Bayes is 6–7 away.
    let (first_scores, pilot) = fold_scores(first, Start::NaiveBayes);
    let others = crate::parallel::map_in_parallel(rest, |&f| fold_scores(f, Start::From(&pilot)).0);
    for (i, own, others) in std::iter::once(first_scores).chain(others).flatten() {
        out[0][i] = own;
        for (out, p) in out[1..].iter_mut().zip(others) {
            out[i] = p;
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::logistic::slope;
    use super::*;

    #[test]
    fn curves_are_monotone_and_never_certain() {
        let pts = [
            (0.0, false),
            (0.0, false),
            (0.5, true),
            (0.5, false),
            (1.0, true),
            (1.0, true),
        ];
        let c = SignalCurve::fit(&pts).unwrap();
        assert!(c.p_right.windows(2).all(|w| w[0] <= w[1]));
        assert!(c.p_right.iter().all(|p| *p > 0.0 && *p < 1.0));
        assert_eq!(c.at(0.9), c.p_right[2]);
    }

    #[test]
    fn two_signals_that_each_see_half_the_story_fuse_into_a_better_one() {
        // Right iff both signals are high; each alone separates only partly.
        let mut signals = Vec::new();
        let mut right = Vec::new();
        for i in 0..400 {
            let a = f64::from(u8::from(i % 2 == 0));
            let b = f64::from(u8::from(i % 4 < 2 || i % 7 == 0));
            signals.push(vec![Some(a), Some(b)]);
            right.push(a > 0.5 && b > 0.5);
        }
        let fused = FusedConfidence::fit(&signals, &right).unwrap();
        assert!(fused.weights.iter().all(|w| *w > 0.0), "{fused:?}");
        let hi = fused.predict(&[Some(1.0), Some(1.0)]).unwrap();
        let one = fused.predict(&[Some(1.0), Some(0.0)]).unwrap();
        assert!(hi > 0.7 && one < 0.3, "{hi} {one}");
        // An unknown signal is no evidence; all unknown is unknown.
        let partial = fused.predict(&[Some(1.0), None]).unwrap();
        assert!(one < partial && partial < hi);
        assert_eq!(fused.predict(&[None, None]), None);
        // Out of fold: every row gets a value from a fit that did not see it.
        let assignment: Vec<usize> = (0..400).map(|i| i % 5).collect();
        let oof = cross_fit(&signals, &right, &assignment, 5).unwrap();
        assert!(oof.iter().all(Option::is_some));
    }

    #[test]
    fn the_walked_features_are_the_searched_ones() {
        // Unknown and non-finite values, ties, and a subset of rows kept, as a fold has.
        let signals: Vec<Vec<Option<f64>>> = (0..300)
            .map(|i| {
                let a = f64::from((i * 37 % 101) as u8) / 100.0;
                let b = match i % 11 {
                    0 => None,
                    1 => Some(f64::NAN),
                    _ => Some(f64::from((i * 13 % 7) as u8) / 6.0),
                };
                vec![Some(a), b]
            })
            .collect();
        let right: Vec<bool> = (0..300).map(|i| (i * 37 % 101) > 40 + i % 30).collect();
        let fold: Vec<usize> = (0..300).map(|i| i % 5).collect();
        let sorted = SortedSignals::new(&signals, &right, &fold, 5);
        let (fused, walked) = sorted.fit_where(&right, Some((2, &fold)), Start::NaiveBayes);
        // The curves counted per fold are the ones fitted on the fold's training points.
        for (j, curve) in fused.curves.iter().enumerate() {
            let points: Vec<(f64, bool)> = (0..300)
                .filter(|&i| fold[i] != 2)
                .filter_map(|i| Some((signals[i][j]?, right[i])))
                .collect();
            assert_eq!(curve, &SignalCurve::fit(&points), "signal {j}");
        }
        let base = logit(fused.base_rate);
        let searched: Vec<f64> = (0..300)
            .flat_map(|i| (0..2).map(move |j| (i, j)))
            .map(|(i, j)| fused.feature(j, signals[i][j], base))
            .collect();
        assert_eq!(walked, searched);
        // So the cross-fit's walked scores are the scores `predict` gives.
        let assignment: Vec<usize> = (0..300).map(|i| (i * 7) % 5).collect();
        let [own, searched] =
            &cross_fit_at(&signals, &right, &assignment, 5, &[&signals]).unwrap()[..]
        else {
            panic!("two result sets")
        };
        assert_eq!(own, searched);
        assert!(own.iter().all(Option::is_some));
    }

    #[test]
    fn a_warm_started_fold_reaches_the_fit_made_from_scratch() {
        // Three signals, one vote-like, one sometimes unknown; the cross-fit starts folds
        // after the first from the first fold's optimum.
        let h = |i: usize, k: usize| ((i * 2_654_435_761 + k * 97_531) % 1_009) as f64 / 1_009.0;
        let right: Vec<bool> = (0..2_000).map(|i| h(i, 1) < 0.45).collect();
        let signals: Vec<Vec<Option<f64>>> = (0..2_000)
            .map(|i| {
                let lean = if right[i] { 0.3 } else { 0.0 };
                vec![
                    Some((h(i, 2) + lean).min(1.0)),
                    Some(((h(i, 3) * 3.0).floor() + f64::from(u8::from(right[i]))) / 4.0),
                    (h(i, 4) > 0.1).then(|| (h(i, 5) + lean / 2.0).min(1.0)),
                ]
            })
            .collect();
        let assignment: Vec<usize> = (0..2_000).map(|i| (i * 7) % 5).collect();
        let oof = cross_fit(&signals, &right, &assignment, 5).unwrap();
        for f in 0..5 {
            let train: Vec<usize> = (0..2_000).filter(|&i| assignment[i] != f).collect();
            let rows: Vec<Vec<Option<f64>>> = train.iter().map(|&i| signals[i].clone()).collect();
            let labels: Vec<bool> = train.iter().map(|&i| right[i]).collect();
            let fresh = FusedConfidence::fit(&rows, &labels).unwrap();
            for i in (0..2_000).filter(|&i| assignment[i] == f) {
                let (warm, scratch) = (oof[i].unwrap(), fresh.predict(&signals[i]).unwrap());
                // Newton stops within 1e-12 log-likelihood per row of the optimum, from
                // either side: far inside the weights' sampling error.
                assert!(
                    (warm - scratch).abs() < 1e-6,
                    "fold {f} row {i}: {warm} {scratch}"
                );
            }
        }
    }

    #[test]
    fn a_curve_keeps_only_its_steps_and_reads_every_value_as_before() {
        // 0.1..0.4 (right, right, wrong, wrong) violate the order and pool into one block;
        // 0.9 is its own.
        let pts = [
            (0.1, true),
            (0.2, true),
            (0.3, false),
            (0.4, false),
            (0.9, true),
            (0.9, true),
        ];
        let c = SignalCurve::fit(&pts).unwrap();
        assert_eq!(c.levels, vec![0.1, 0.4, 0.9]);
        let pooled = 1.0 - (2.0 + 1.0) / (4.0 + 2.0);
        for x in [0.0, 0.1, 0.2, 0.3, 0.4, 0.6] {
            assert_eq!(c.at(x), pooled, "{x}");
        }
        assert_eq!(c.at(0.7), 1.0 - 1.0 / 4.0);
    }

    #[test]
    fn the_logistic_fit_reaches_its_optimum_from_naive_bayes() {
        // Two copies of one informative signal: naive Bayes counts it twice, so the fit
        // must move well away from its start (weights 1) to the penalised optimum.
        let signals: Vec<Vec<Option<f64>>> = (0..600)
            .map(|i| {
                let x = f64::from((i * 37 % 100) as u8) / 100.0;
                vec![Some(x), Some(x)]
            })
            .collect();
        let right: Vec<bool> = (0..600)
            .map(|i| (i * 37 % 100) as f64 / 100.0 > (i % 7) as f64 / 7.0)
            .collect();
        let fused = FusedConfidence::fit(&signals, &right).unwrap();
        let base = logit(fused.base_rate);
        let x: Vec<f64> = (signals.iter())
            .flat_map(|row| {
                (0..2)
                    .map(|j| fused.feature(j, row[j], base))
                    .collect::<Vec<_>>()
            })
            .collect();
        let beta = [fused.intercept, fused.weights[0], fused.weights[1]];
        let problem = Logistic {
            x: &x,
            m: 2,
            y: &right,
            ridge: RIDGE,
            rows: RowPasses::OnOneCore,
        };
        let grad = slope(&problem, &beta).grad;
        // A summed gradient over 600 rows: within 1e-9 of the optimal log-likelihood.
        assert!(grad.iter().all(|g| g.abs() < 1e-3), "{grad:?}");
        let sum = fused.weights[0] + fused.weights[1];
        assert!(
            (fused.weights[0] - fused.weights[1]).abs() < 1e-6 && sum < 1.5,
            "{fused:?}"
        );
    }

    #[test]
    fn a_damaged_fusion_is_named() {
        let signals = vec![vec![Some(0.2), Some(0.9)], vec![Some(0.8), Some(0.1)]];
        let mut f = FusedConfidence::fit(&signals, &[false, true]).unwrap();
        assert_eq!(f.problem(2), None);
        assert!(f.problem(3).unwrap().contains("3 signals"));
        f.weights[0] = f64::NAN;
        assert!(f.problem(2).is_some());
    }

    #[test]
    fn a_shape_mismatch_is_an_error() {
        assert!(FusedConfidence::fit(&[vec![Some(0.1)]], &[true, false]).is_err());
        assert!(FusedConfidence::fit(&[vec![Some(0.1)], vec![]], &[true, false]).is_err());
    }
}
