//! The fusion's logistic stage: ridge-penalised logistic regression by damped Newton on a
//! few features per row, deterministic whatever the machine's cores.

use super::MAX_SIGNALS;

pub(super) fn sigmoid(z: f64) -> f64 {
    1.0 / (1.0 + (-z).exp())
}

/// How a logistic fit's passes over the rows run. The sums are the same either way: the rows
/// are always summed in [`ROW_HALVES`] fixed halves, added in order, so a fit's result does
/// not depend on the machine's cores.
#[derive(Clone, Copy)]
pub(super) enum RowPasses {
    OnEveryCore,
    OnOneCore,
}

/// The fixed parts a pass over the rows sums separately (see [`RowPasses`]).
const ROW_HALVES: usize = 2;

/// The fewest rows whose sorting, and whose passes where [`RowPasses::OnEveryCore`], are
/// spread over the cores.
pub(super) const PARALLEL_ROWS: usize = 8_192;

/// Newton stops when a full step would gain less than this much log-likelihood per row
/// (half the decrement). (An absolute 1e-9 on the sum cost one more pass on 100,000 rows.)
const STOP_PER_ROW: f64 = 1e-12;

/// A ridge-penalised logistic regression problem: `m` features per row, stored row after
/// row in `x`, labels `y`.
pub(super) struct Logistic<'a> {
    pub(super) x: &'a [f64],
    pub(super) m: usize,
    pub(super) y: &'a [bool],
    pub(super) ridge: f64,
    pub(super) rows: RowPasses,
}

/// Ridge-penalised logistic regression by damped Newton (intercept unpenalised) from
/// `start` (intercept, then weights): deterministic, a few features, a handful of steps (6
/// on 100,000 benchmark rows from naive Bayes, 3–4 from a neighbouring fold's optimum).
///
/// Why damped: plain Newton from the naive-Bayes start (every weight 1) can overshoot and
/// cycle on these log-odds features, and from all-zero weights it takes many short steps;
/// halving a step until the penalised log-likelihood improves converges from either. A
/// step is judged by the slopes at its two ends first ([`gain_lower_bound`]: one pass, no
/// logarithm per row), by the two values only when that bound cannot rule out a loss.
pub(super) fn newton_logistic(problem: &Logistic<'_>, start: &[f64]) -> (f64, Vec<f64>) {
    let tolerance = STOP_PER_ROW * problem.y.len().max(1) as f64;
    let mut beta = start.to_vec();
    let mut at = slope(problem, &beta);
    // The penalised log-likelihood at `beta`, computed only when a step must be judged by it.
    let mut value_at: Option<f64> = None;
    let range = problem.feature_range();
    for _ in 0..50 {
        let Some(mut step) = solve(at.hess.clone(), at.grad.clone()) else {
            break;
        };
        // The Newton decrement: half of it is how much a full step would still gain.
        if dot(&at.grad, &step) < 2.0 * tolerance {
            break;
        }
        let mut accepted = false;
        for _ in 0..30 {
            let trial: Vec<f64> = beta.iter().zip(&step).map(|(b, s)| b + s).collect();
            let next = slope(problem, &trial);
            let curvature: f64 = (at.hess.iter().zip(&step))
                .map(|(row, a)| a * dot(row, &step))
                .sum();
            let least_gain = gain_lower_bound(
                dot(&at.grad, &step),
                dot(&next.grad, &step),
                curvature,
                range.reach(&step),
            );
            let improves = least_gain >= 0.0 || {
                let here = *value_at.get_or_insert_with(|| value(problem, &beta));
                value(problem, &trial) >= here
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

fn dot(a: &[f64], b: &[f64]) -> f64 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

/// Each feature's largest magnitude over the rows: with the intercept's 1 they bound how far
/// any row's linear score moves along a step.
struct FeatureRange(Vec<f64>);

impl Logistic<'_> {
    fn feature_range(&self) -> FeatureRange {
        let mut largest = vec![0.0_f64; self.m];
        for (row, _) in design_rows(self.x, self.m, self.y) {
            for (l, x) in largest.iter_mut().zip(row) {
                *l = l.max(x.abs());
            }
        }
        FeatureRange(largest)
    }
}

impl FeatureRange {
    /// An upper bound on `max_i |x_i · step|` over the rows, `x_i = (1, features…)`.
    fn reach(&self, step: &[f64]) -> f64 {
        step[0].abs()
            + step[1..]
                .iter()
                .zip(&self.0)
                .map(|(s, l)| s.abs() * l)
                .sum::<f64>()
    }
}

/// The least the penalised log-likelihood can have gained along a step (from 0 to 1), from
/// its slope at both ends and its curvature `curvature` (`stepᵀ·H·step`) at the start. The
/// logistic loss's third derivative is at most its second times `|x·step|` (it is
/// `p(1 − p)(1 − 2p)`), so with `reach ≥ max |x·step|` the curvature at `t` is at most
/// `curvature·e^(reach·t)`, and the slope at `t` is at least `start − curvature·(e^(reach·t)
/// − 1)/reach`; it is also at least `end`, since a concave objective's slope only falls.
fn gain_lower_bound(start: f64, end: f64, curvature: f64, reach: f64) -> f64 {
    let (q, r) = (curvature.max(0.0), reach.max(1e-12));
    // Where the first bound on the slope falls to `end`.
    let t = ((r * (start - end) / q.max(f64::MIN_POSITIVE)).ln_1p() / r).clamp(0.0, 1.0);
    // Up to `t` the slope falls at most `q·(e^(r·u) − 1)/r` below `start`; that costs
    // `q·t²·(e^x − 1 − x)/x²` with `x = r·t`, by its series where `x` is small (the closed
    // form cancels there).
    let x = r * t;
    let fall = if x < 1e-3 {
        0.5 + x / 6.0 + x * x / 24.0
    } else {
        (x.exp_m1() - x) / (x * x)
    };
    start * t - q * t * t * fall + end * (1.0 - t)
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
fn value(problem: &Logistic<'_>, beta: &[f64]) -> f64 {
    let fit: f64 = design_rows(problem.x, problem.m, problem.y)
        .map(|(row, yi)| {
            let z = linear(beta, row);
            let log1p_exp = z.max(0.0) + (-z.abs()).exp().ln_1p();
            if yi { z - log1p_exp } else { -log1p_exp }
        })
        .sum();
    fit - problem.ridge / 2.0 * beta[1..].iter().map(|w| w * w).sum::<f64>()
}

/// The penalised log-likelihood's gradient and negated Hessian at a point.
pub(super) struct Slope {
    pub(super) grad: Vec<f64>,
    hess: Vec<Vec<f64>>,
}

/// The gradient and negated Hessian of [`value`] at `beta` (intercept unpenalised), in one
/// pass over the rows.
pub(super) fn slope(problem: &Logistic<'_>, beta: &[f64]) -> Slope {
    // The per-row sums are most of a fit's time: with the width a constant, the loops over
    // the 1 + m columns unroll and the sums stay in registers. Every width has its own
    // copy; `check_shape` bounds the signals by `MAX_SIGNALS`.
    match problem.m {
        1 => slope_of_width::<2>(problem, beta),
        2 => slope_of_width::<3>(problem, beta),
        3 => slope_of_width::<4>(problem, beta),
        4 => slope_of_width::<5>(problem, beta),
        5 => slope_of_width::<6>(problem, beta),
        6 => slope_of_width::<7>(problem, beta),
        7 => slope_of_width::<8>(problem, beta),
        8 => slope_of_width::<{ MAX_SIGNALS + 1 }>(problem, beta),
        m => unreachable!("check_shape bounds the signals by 1..={MAX_SIGNALS}, not {m}"),
    }
}

/// [`slope`] for rows of `D − 1` features (`D` coefficients with the intercept).
fn slope_of_width<const D: usize>(problem: &Logistic<'_>, beta: &[f64]) -> Slope {
    let (mut grad, upper) = halved_row_sums::<D>(problem, beta);
    let mut hess: Vec<Vec<f64>> = (0..D)
        .map(|a| (0..D).map(|b| upper[a.min(b)][a.max(b)]).collect())
        .collect();
    for k in 1..D {
        grad[k] -= problem.ridge * beta[k];
        hess[k][k] += problem.ridge;
    }
    Slope {
        grad: grad.to_vec(),
        hess,
    }
}

/// [`row_sums`] of each of the [`ROW_HALVES`] halves of the rows, added in order, the halves
/// on their own cores where `problem.rows` says so.
fn halved_row_sums<const D: usize>(
    problem: &Logistic<'_>,
    beta: &[f64],
) -> ([f64; D], [[f64; D]; D]) {
    let rows = problem.y.len();
    let bounds: Vec<(usize, usize)> = (0..ROW_HALVES)
        .map(|h| (rows * h / ROW_HALVES, rows * (h + 1) / ROW_HALVES))
        .collect();
    let half = |&(from, to): &(usize, usize)| {
        let x = &problem.x[from * (D - 1)..to * (D - 1)];
        row_sums::<D>(x, &problem.y[from..to], beta)
    };
    // Below a few thousand rows a pass takes microseconds, less than starting a thread.
    let halves = match problem.rows {
        RowPasses::OnEveryCore if rows >= PARALLEL_ROWS => {
            crate::parallel::map_in_parallel(&bounds, half)
        }
        _ => bounds.iter().map(half).collect(),
    };
    let mut grad = [0.0; D];
    let mut upper = [[0.0; D]; D];
    for (g, u) in halves {
        for a in 0..D {
            grad[a] += g[a];
            for b in a..D {
                upper[a][b] += u[a][b];
            }
        }
    }
    (grad, upper)
}

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

#[cfg(test)]
mod tests {
    use super::*;

    /// Rows of three features and labels that depend on them (a deterministic hash).
    fn problem_rows(n: usize) -> (Vec<f64>, Vec<bool>) {
        let h = |i: usize, k: usize| ((i * 2_654_435_761 + k * 40_503) % 10_007) as f64 / 10_007.0;
        let x: Vec<f64> = (0..n * 3).map(|c| 6.0 * h(c / 3, c % 3) - 3.0).collect();
        let y = (0..n)
            .map(|i| h(i, 7) < sigmoid(x[3 * i] - 0.5 * x[3 * i + 1]))
            .collect();
        (x, y)
    }

    #[test]
    fn the_gain_bound_never_exceeds_the_gain() {
        let (x, y) = problem_rows(500);
        let problem = Logistic {
            x: &x,
            m: 3,
            y: &y,
            ridge: 1.0,
            rows: RowPasses::OnOneCore,
        };
        let range = problem.feature_range();
        let mut bounded = 0;
        for k in 0..200 {
            let at = |c: usize| ((k * 7 + c * 13) % 17) as f64 / 4.0 - 2.0;
            let beta = [at(0) / 2.0, at(1), at(2), at(3)];
            let here = slope(&problem, &beta);
            // Newton's step and its halves, and steps that overshoot it.
            let newton = solve(here.hess.clone(), here.grad.clone()).unwrap();
            let scale = [0.25, 0.5, 1.0, 2.0, 4.0][k % 5];
            let step: Vec<f64> = newton.iter().map(|s| s * scale).collect();
            let trial: Vec<f64> = beta.iter().zip(&step).map(|(b, s)| b + s).collect();
            let curvature: f64 = (here.hess.iter().zip(&step))
                .map(|(row, a)| a * dot(row, &step))
                .sum();
            let bound = gain_lower_bound(
                dot(&here.grad, &step),
                dot(&slope(&problem, &trial).grad, &step),
                curvature,
                range.reach(&step),
            );
            let gain = value(&problem, &trial) - value(&problem, &beta);
            assert!(bound <= gain + 1e-9, "{k}: bound {bound} above gain {gain}");
            bounded += usize::from(bound >= 0.0);
        }
        // It is a useful bound, not only a safe one: it clears many of these steps.
        assert!(bounded >= 40, "{bounded} of 200 steps cleared");
    }

    #[test]
    fn the_gain_bound_is_the_quadratic_one_without_reach_and_continuous_in_it() {
        // No reach: the slope falls linearly from 1 to 0 over the step, gaining 1/2.
        assert!((gain_lower_bound(1.0, 0.0, 1.0, 0.0) - 0.5).abs() < 1e-12);
        // Either side of the series' threshold (x = r·t = 1e-3) the two forms agree.
        let below = gain_lower_bound(1.0, -0.5, 1.0, 0.999e-3);
        let above = gain_lower_bound(1.0, -0.5, 1.0, 1.001e-3);
        assert!((below - above).abs() < 1e-6, "{below} {above}");
        // More reach, less certainty.
        assert!(gain_lower_bound(1.0, -0.1, 1.0, 2.0) < gain_lower_bound(1.0, -0.1, 1.0, 0.5));
    }

    #[test]
    fn row_halves_on_every_core_sum_as_on_one() {
        let (x, y) = problem_rows(2 * PARALLEL_ROWS + 3);
        let fit = |rows| {
            let problem = Logistic {
                x: &x,
                m: 3,
                y: &y,
                ridge: 1.0,
                rows,
            };
            newton_logistic(&problem, &[0.0, 1.0, 1.0, 1.0])
        };
        assert_eq!(fit(RowPasses::OnEveryCore), fit(RowPasses::OnOneCore));
    }
}
