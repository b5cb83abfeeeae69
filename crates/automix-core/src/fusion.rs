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

use crate::calibrate::pav;
use crate::error::{CoreError, Result};

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
        let mut sorted: Vec<(f64, bool)> =
            points.iter().copied().filter(|p| p.0.is_finite()).collect();
        sorted.sort_by(|a, b| a.0.total_cmp(&b.0));
        Self::fit_sorted(sorted.into_iter())
    }

    /// [`SignalCurve::fit`] on finite points already in ascending order of value.
    fn fit_sorted(sorted: impl Iterator<Item = (f64, bool)>) -> Option<Self> {
        let mut levels: Vec<f64> = Vec::new();
        let mut counts: Vec<(f64, f64)> = Vec::new();
        for (x, right) in sorted {
            if levels.last() != Some(&x) {
                levels.push(x);
                counts.push((0.0, 0.0));
            }
            if let Some(c) = counts.last_mut() {
                c.0 += 1.0;
                c.1 += f64::from(u8::from(!right));
            }
        }
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

fn sigmoid(z: f64) -> f64 {
    1.0 / (1.0 + (-z).exp())
}

impl FusedConfidence {
    /// Fits on `signals[row][j]` (signal j's value for row, `None` if unknown) and
    /// `right[row]`.
    pub fn fit(signals: &[Vec<Option<f64>>], right: &[bool]) -> Result<Self> {
        check_shape(signals, right)?;
        Ok(SortedSignals::new(signals, right)
            .fit_where(signals, right, |_| true)
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

/// Each signal's known, finite values with their rows' labels, in ascending order of value:
/// sorted once, so every fold of a cross-fit reads its curves off the same order in one
/// sequential pass (an entry holds the value and label itself, since reading them through
/// the row index in value order is a cache miss per row).
struct SortedSignals {
    entries: Vec<Vec<SortedEntry>>,
}

#[derive(Clone, Copy)]
struct SortedEntry {
    value: f64,
    row: u32,
    right: bool,
}

impl SortedSignals {
    fn new(signals: &[Vec<Option<f64>>], right: &[bool]) -> Self {
        let m = signals.first().map_or(0, Vec::len);
        let entries = (0..m)
            .map(|j| {
                let mut rows: Vec<SortedEntry> = (signals.iter().enumerate())
                    .filter_map(|(i, row)| {
                        let value = row[j].filter(|v| v.is_finite())?;
                        Some(SortedEntry {
                            value,
                            // `check_shape` bounds the rows by `u32::MAX`.
                            row: i as u32,
                            right: right[i],
                        })
                    })
                    .collect();
                // Rows of equal value are read as one level, so their order is free.
                rows.sort_unstable_by(|a, b| a.value.total_cmp(&b.value));
                rows
            })
            .collect();
        Self { entries }
    }

    /// The logistic stage's inputs for every row, row after row: each signal's calibrated
    /// log-odds relative to the base rate (0 when unknown), as [`FusedConfidence::feature`]
    /// computes them, read off the sorted values in one walk along each curve instead of a
    /// search per row.
    fn features(&self, fused: &FusedConfidence, rows: usize) -> Vec<f64> {
        let m = self.entries.len();
        let base = logit(fused.base_rate);
        let mut features = vec![0.0; rows * m];
        for (j, entries) in self.entries.iter().enumerate() {
            let Some(curve) = &fused.curves[j] else {
                continue;
            };
            let log_odds: Vec<f64> = curve.p_right.iter().map(|&p| logit(p) - base).collect();
            let mut above = 0;
            for e in entries {
                while above < curve.levels.len() && curve.levels[above] < e.value {
                    above += 1;
                }
                let level = crate::calibrate::nearest_level_above(&curve.levels, above, e.value);
                features[e.row as usize * m + j] = log_odds[level];
            }
        }
        features
    }

    /// The fusion fitted on the rows `keep` accepts, and every row's logistic inputs under
    /// it ([`SortedSignals::features`]), so a cross-fit scores its held-out rows without a
    /// search either.
    fn fit_where(
        &self,
        signals: &[Vec<Option<f64>>],
        right: &[bool],
        keep: impl Fn(usize) -> bool,
    ) -> (FusedConfidence, Vec<f64>) {
        let curves: Vec<Option<SignalCurve>> = (self.entries.iter())
            .map(|entries| {
                let points = entries.iter().filter(|e| keep(e.row as usize));
                SignalCurve::fit_sorted(points.map(|e| (e.value, e.right)))
            })
            .collect();
        let kept: Vec<usize> = (0..signals.len()).filter(|&i| keep(i)).collect();
        let rights = kept.iter().filter(|&&i| right[i]).count() as f64;
        let base_rate = (rights + 1.0) / (kept.len() as f64 + 2.0);
        let m = self.entries.len();
        let mut fused = FusedConfidence {
            curves,
            base_rate,
            intercept: logit(base_rate),
            weights: vec![0.0; m],
        };
        let base = logit(base_rate);
        let all = self.features(&fused, signals.len());
        let features: Vec<f64> = (kept.iter())
            .flat_map(|&i| &all[i * m..(i + 1) * m])
            .copied()
            .collect();
        let labels: Vec<bool> = kept.iter().map(|&i| right[i]).collect();
        // From naive Bayes: every signal's log-odds counted once. (Starting a fold from the
        // previous fold's optimum was tried: its steps land so near the optimum that
        // `newton_logistic`'s slope test rejects them and the log-likelihood must be
        // computed, which cost as many passes as starting afresh.)
        let start: Vec<f64> = std::iter::once(base)
            .chain(std::iter::repeat_n(1.0, m))
            .collect();
        let (intercept, weights) = newton_logistic(&features, m, &labels, RIDGE, &start);
        fused.intercept = intercept;
        fused.weights = weights;
        (fused, all)
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

/// Ridge-penalised logistic regression by damped Newton (intercept unpenalised) on `m`
/// features per row, stored row after row in `x`, from `start` (intercept, then weights):
/// deterministic, a few features, a handful of steps (6 on 100,000 benchmark rows).
///
/// Why damped: plain Newton from the naive-Bayes start (every weight 1) can overshoot and
/// cycle on these log-odds features, and from all-zero weights it takes many short steps;
/// halving a step until the penalised log-likelihood improves converges from either. A
/// step is judged by the slope at its end first (one pass, no logarithm per row), by the
/// two values only when that slope is negative.
fn newton_logistic(x: &[f64], m: usize, y: &[bool], ridge: f64, start: &[f64]) -> (f64, Vec<f64>) {
    let mut beta = start.to_vec();
    let mut at = slope(x, m, y, ridge, &beta);
    // The penalised log-likelihood at `beta`, computed only when a step must be judged by it.
    let mut value_at: Option<f64> = None;
    for _ in 0..50 {
        let Some(mut step) = solve(at.hess.clone(), at.grad.clone()) else {
            break;
        };
        // The Newton decrement: half of it is how much a full step would still gain.
        let decrement: f64 = at.grad.iter().zip(&step).map(|(g, s)| g * s).sum();
        if decrement < 1e-9 {
            break;
        }
        let mut accepted = false;
        for _ in 0..30 {
            let trial: Vec<f64> = beta.iter().zip(&step).map(|(b, s)| b + s).collect();
            let next = slope(x, m, y, ridge, &trial);
            // The objective is concave, so its slope along the step only falls: still
            // rising at the trial point means it rose all the way there. Only otherwise
            // are the two values computed (a pass with a logarithm per row).
            let rising = next.grad.iter().zip(&step).map(|(g, s)| g * s).sum::<f64>() >= 0.0;
            let improves = rising || {
                let here = *value_at.get_or_insert_with(|| value(x, m, y, ridge, &beta));
                let there = value(x, m, y, ridge, &trial);
                there >= here
            };
            if improves {
                (beta, at, accepted, value_at) = (trial, next, true, None);
                break;
            }
            step.iter_mut().for_each(|s| *s *= 0.5);
        }
        if !accepted {
            break;
        }
    }
    (beta[0], beta[1..].to_vec())
}

/// `(1, features…)` of each row with its label.
fn design_rows<'a>(
    x: &'a [f64],
    m: usize,
    y: &'a [bool],
) -> impl Iterator<Item = (&'a [f64], bool)> + 'a {
    x.chunks_exact(m.max(1)).zip(y.iter().copied())
}

fn linear(beta: &[f64], row: &[f64]) -> f64 {
    beta[0] + row.iter().zip(&beta[1..]).map(|(a, b)| a * b).sum::<f64>()
}

/// `Σ y·z − log(1 + e^z) − ridge/2 · |w|²` at `beta`, stable for large |z|.
fn value(x: &[f64], m: usize, y: &[bool], ridge: f64, beta: &[f64]) -> f64 {
    let fit: f64 = design_rows(x, m, y)
        .map(|(row, yi)| {
            let z = linear(beta, row);
            let log1p_exp = z.max(0.0) + (-z.abs()).exp().ln_1p();
            if yi { z - log1p_exp } else { -log1p_exp }
        })
        .sum();
    fit - ridge / 2.0 * beta[1..].iter().map(|w| w * w).sum::<f64>()
}

/// The penalised log-likelihood's gradient and negated Hessian at a point.
struct Slope {
    grad: Vec<f64>,
    hess: Vec<Vec<f64>>,
}

/// The gradient and negated Hessian of [`value`] at `beta` (intercept unpenalised), in one
/// pass over the rows.
fn slope(x: &[f64], m: usize, y: &[bool], ridge: f64, beta: &[f64]) -> Slope {
    // The per-row sums are most of a fit's time: with the width a constant, the loops over
    // the 1 + m columns unroll and the sums stay in registers. Every width has its own
    // copy; `check_shape` bounds the signals by `MAX_SIGNALS`.
    match m {
        1 => slope_of_width::<2>(x, y, ridge, beta),
        2 => slope_of_width::<3>(x, y, ridge, beta),
        3 => slope_of_width::<4>(x, y, ridge, beta),
        4 => slope_of_width::<5>(x, y, ridge, beta),
        5 => slope_of_width::<6>(x, y, ridge, beta),
        6 => slope_of_width::<7>(x, y, ridge, beta),
        7 => slope_of_width::<8>(x, y, ridge, beta),
        8 => slope_of_width::<{ MAX_SIGNALS + 1 }>(x, y, ridge, beta),
        _ => unreachable!("check_shape bounds the signals by 1..={MAX_SIGNALS}, not {m}"),
    }
}

/// [`slope`] for rows of `D − 1` features (`D` coefficients with the intercept).
fn slope_of_width<const D: usize>(x: &[f64], y: &[bool], ridge: f64, beta: &[f64]) -> Slope {
    let (mut grad, upper) = row_sums::<D>(x, y, beta);
    let mut hess: Vec<Vec<f64>> = (0..D)
        .map(|a| (0..D).map(|b| upper[a.min(b)][a.max(b)]).collect())
        .collect();
    for k in 1..D {
        grad[k] -= ridge * beta[k];
        hess[k][k] += ridge;
    }
    Slope {
        grad: grad.to_vec(),
        hess,
    }
}

/// The most signals one fusion combines (every signal the router knows fits).
pub const MAX_SIGNALS: usize = 8;

/// `Σ (y − p)·x` and the upper triangle of `Σ p(1 − p)·x·xᵀ` over the rows of `x` (`D − 1`
/// features each, `x = (1, features…)`), unpenalised; `beta` has `D` entries.
fn row_sums<const D: usize>(x: &[f64], y: &[bool], beta: &[f64]) -> ([f64; D], [[f64; D]; D]) {
    let mut grad = [0.0; D];
    let mut upper = [[0.0; D]; D];
    let mut row_x = [1.0; D];
    for (row, yi) in design_rows(x, D - 1, y) {
        row_x[1..].copy_from_slice(row);
        let p = sigmoid(linear(beta, row));
        let w = (p * (1.0 - p)).max(1e-12);
        let r = f64::from(u8::from(yi)) - p;
        for a in 0..D {
            grad[a] += r * row_x[a];
            let wa = w * row_x[a];
            for b in a..D {
                upper[a][b] += wa * row_x[b];
            }
        }
    }
    (grad, upper)
}

/// Solves `a · x = b` by Gaussian elimination with partial pivoting; `None` if singular.
fn solve(mut a: Vec<Vec<f64>>, mut b: Vec<f64>) -> Option<Vec<f64>> {
    let n = b.len();
    for col in 0..n {
        let pivot = (col..n).max_by(|&i, &j| a[i][col].abs().total_cmp(&a[j][col].abs()))?;
        if a[pivot][col].abs() < 1e-12 {
            return None;
        }
        a.swap(col, pivot);
        b.swap(col, pivot);
        let (top, below) = a.split_at_mut(col + 1);
        let pivot_row = &top[col];
        for (offset, r) in below.iter_mut().enumerate() {
            let f = r[col] / pivot_row[col];
            for (x, p) in r[col..].iter_mut().zip(&pivot_row[col..]) {
                *x -= f * p;
            }
            b[col + 1 + offset] -= f * b[col];
        }
    }
    let mut x = vec![0.0; n];
    for row in (0..n).rev() {
        let s: f64 = (row + 1..n).map(|k| a[row][k] * x[k]).sum();
        x[row] = (b[row] - s) / a[row][row];
    }
    Some(x)
}

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
    let sorted = SortedSignals::new(signals, right);
    let fold_scores = |f: usize| {
        let (model, features) = sorted.fit_where(signals, right, |i| assignment[i] != f);
        let held_out = (0..signals.len()).filter(|&i| assignment[i] == f);
        let scores: Vec<(usize, Option<f64>, Vec<Option<f64>>)> = held_out
            .map(|i| {
                // The walked inputs are the ones `predict` computes (a test checks it).
                let own = (!all_unknown(&signals[i]))
                    .then(|| model.combine(features[i * m..(i + 1) * m].iter().copied()));
                (i, own, also.iter().map(|a| model.predict(&a[i])).collect())
            })
            .collect();
        scores
    };
    let trained: Vec<usize> = (0..folds)
        .filter(|&f| !assignment.iter().all(|a| *a == f))
        .collect();
    let mut out = vec![vec![None; signals.len()]; 1 + also.len()];
    for (i, own, others) in crate::parallel::map_in_parallel(&trained, |&f| fold_scores(f))
        .into_iter()
        .flatten()
    {
        out[0][i] = own;
        for (out, p) in out[1..].iter_mut().zip(others) {
            out[i] = p;
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
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
        let sorted = SortedSignals::new(&signals, &right);
        let keep = |i: usize| i % 5 != 2;
        let (fused, walked) = sorted.fit_where(&signals, &right, keep);
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
        let grad = slope(&x, 2, &right, RIDGE, &beta).grad;
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
