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

/// One signal's calibration: `P(right)` at each distinct value seen, non-decreasing.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SignalCurve {
    /// Distinct values seen, ascending.
    pub levels: Vec<f64>,
    /// Smoothed `P(right)` at each level, non-decreasing.
    pub p_right: Vec<f64>,
}

impl SignalCurve {
    /// Fits the curve on `(value, right)` pairs; `None` without any.
    pub fn fit(points: &[(f64, bool)]) -> Option<Self> {
        let mut sorted: Vec<(f64, bool)> =
            points.iter().copied().filter(|p| p.0.is_finite()).collect();
        if sorted.is_empty() {
            return None;
        }
        sorted.sort_by(|a, b| a.0.total_cmp(&b.0));
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
        // A non-increasing fit of P(wrong) is a non-decreasing one of P(right).
        let blocks = pav(counts.iter().copied());
        let mut p_right = vec![0.0; levels.len()];
        for b in blocks {
            let p = 1.0 - (b.sum + 1.0) / (b.weight + 2.0);
            p_right[b.first..=b.last].iter_mut().for_each(|x| *x = p);
        }
        Some(Self { levels, p_right })
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
        let m = check_shape(signals, right)?;
        let curves: Vec<Option<SignalCurve>> = (0..m)
            .map(|j| {
                let pts: Vec<(f64, bool)> = signals
                    .iter()
                    .zip(right)
                    .filter_map(|(row, &r)| row[j].map(|x| (x, r)))
                    .collect();
                SignalCurve::fit(&pts)
            })
            .collect();
        let rights = right.iter().filter(|r| **r).count() as f64;
        let base_rate = (rights + 1.0) / (right.len() as f64 + 2.0);
        let mut fused = Self {
            curves,
            base_rate,
            intercept: logit(base_rate),
            weights: vec![0.0; m],
        };
        let features: Vec<Vec<f64>> = signals.iter().map(|row| fused.features(row)).collect();
        let (intercept, weights) = newton_logistic(&features, right, RIDGE);
        fused.intercept = intercept;
        fused.weights = weights;
        Ok(fused)
    }

    /// Each signal's calibrated log-odds relative to the base rate (0 when unknown).
    fn features(&self, row: &[Option<f64>]) -> Vec<f64> {
        let base = logit(self.base_rate);
        self.curves
            .iter()
            .zip(row)
            .map(|(curve, x)| match (curve, x) {
                (Some(c), Some(x)) if x.is_finite() => logit(c.at(*x)) - base,
                _ => 0.0,
            })
            .collect()
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
        if row.len() != self.weights.len() || row.iter().all(|x| x.is_none_or(|v| !v.is_finite())) {
            return None;
        }
        let z: f64 = self.intercept
            + self
                .features(row)
                .iter()
                .zip(&self.weights)
                .map(|(f, w)| f * w)
                .sum::<f64>();
        Some(sigmoid(z))
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
    Ok(m)
}

/// Ridge-penalised logistic regression by Newton's method (intercept unpenalised):
/// deterministic, a few features, converges in a handful of steps.
fn newton_logistic(x: &[Vec<f64>], y: &[bool], ridge: f64) -> (f64, Vec<f64>) {
    let m = x.first().map_or(0, Vec::len);
    let d = m + 1;
    let mut beta = vec![0.0; d];
    let share = y.iter().filter(|v| **v).count() as f64;
    beta[0] = logit((share + 1.0) / (y.len() as f64 + 2.0));
    for _ in 0..50 {
        let mut grad = vec![0.0; d];
        let mut hess = vec![vec![0.0; d]; d];
        for (row, &yi) in x.iter().zip(y) {
            let z = beta[0] + row.iter().zip(&beta[1..]).map(|(a, b)| a * b).sum::<f64>();
            let p = sigmoid(z);
            let w = (p * (1.0 - p)).max(1e-12);
            let r = f64::from(u8::from(yi)) - p;
            let xi = |k: usize| if k == 0 { 1.0 } else { row[k - 1] };
            for (a, (g, h_row)) in grad.iter_mut().zip(hess.iter_mut()).enumerate() {
                *g += r * xi(a);
                for (b, h) in h_row.iter_mut().enumerate() {
                    *h += w * xi(a) * xi(b);
                }
            }
        }
        for k in 1..d {
            grad[k] -= ridge * beta[k];
            hess[k][k] += ridge;
        }
        let Some(step) = solve(hess, grad) else {
            break;
        };
        let size: f64 = step.iter().map(|s| s.abs()).fold(0.0, f64::max);
        beta.iter_mut().zip(&step).for_each(|(b, s)| *b += s);
        if size < 1e-10 {
            break;
        }
    }
    (beta[0], beta[1..].to_vec())
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
    cross_fit_at(signals, right, assignment, folds, signals)
}

/// [`cross_fit`], predicting each row at `at[row]` instead of its own values: the same
/// out-of-fold fits scored on other inputs (a row with one signal masked as unknown, say).
pub fn cross_fit_at(
    signals: &[Vec<Option<f64>>],
    right: &[bool],
    assignment: &[usize],
    folds: usize,
    at: &[Vec<Option<f64>>],
) -> Result<Vec<Option<f64>>> {
    check_shape(signals, right)?;
    check_shape(at, right)?;
    let mut out = vec![None; signals.len()];
    for f in 0..folds {
        let (train_x, train_y): (Vec<Vec<Option<f64>>>, Vec<bool>) = signals
            .iter()
            .zip(right)
            .zip(assignment)
            .filter(|(_, a)| **a != f)
            .map(|((s, r), _)| (s.clone(), *r))
            .unzip();
        if train_x.is_empty() {
            continue;
        }
        let model = FusedConfidence::fit(&train_x, &train_y)?;
        for (i, a) in assignment.iter().enumerate() {
            if *a == f {
                out[i] = model.predict(&at[i]);
            }
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
