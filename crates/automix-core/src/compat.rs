//! Bit-exact replicas of the numeric primitives the paper's Python code relies on
//! (`numpy` pairwise summation, Python float floor division, `scipy.ndimage.gaussian_filter`
//! in `reflect` mode, and the nearest-grid lookup of `POMDPSimple`). Parity with
//! `automix-llm` 1.0.3 down to tie-breaking needs the same rounding, not just the same maths.

/// numpy's pairwise summation (`add.reduce` on a contiguous float64 array).
pub fn np_sum(values: &[f64]) -> f64 {
    const BLOCK: usize = 128;
    let n = values.len();
    if n < 8 {
        let mut res = 0.0;
        for v in values {
            res += v;
        }
        res
    } else if n <= BLOCK {
        let mut r = [0.0f64; 8];
        r.copy_from_slice(&values[..8]);
        let full = n - n % 8;
        let mut i = 8;
        while i < full {
            for (j, acc) in r.iter_mut().enumerate() {
                *acc += values[i + j];
            }
            i += 8;
        }
        let mut res = ((r[0] + r[1]) + (r[2] + r[3])) + ((r[4] + r[5]) + (r[6] + r[7]));
        for v in &values[full..] {
            res += v;
        }
        res
    } else {
        let mut half = n / 2;
        half -= half % 8;
        np_sum(&values[..half]) + np_sum(&values[half..])
    }
}

/// numpy/pandas mean: pairwise sum divided by the count.
pub fn np_mean(values: &[f64]) -> f64 {
    np_sum(values) / values.len() as f64
}

/// Python's `float.__floordiv__` (CPython `float_floor_div`), which differs from
/// `(a / b).floor()`: `1.0 // 0.1 == 9.0`.
pub fn py_floordiv(a: f64, b: f64) -> f64 {
    let m = a % b;
    let mut div = (a - m) / b;
    if m != 0.0 && ((b < 0.0) != (m < 0.0)) {
        div -= 1.0;
    }
    if div != 0.0 {
        let floordiv = div.floor();
        if div - floordiv > 0.5 {
            floordiv + 1.0
        } else {
            floordiv
        }
    } else {
        (0.0f64).copysign(a / b)
    }
}

/// The grid `[i * gap for i in range(num_bins + 1)]` with `gap = 1 / num_bins`.
pub fn py_grid(num_bins: usize) -> Vec<f64> {
    let gap = 1.0 / num_bins as f64;
    (0..=num_bins).map(|i| i as f64 * gap).collect()
}

/// `POMDPSimple.get_neearest_prob_idx`: the first grid point `g` with
/// `p - g < gap/2` and `p - g >= -gap/2`, mapped through `int(g // gap)`.
/// `None` where Python returns `None` (outside `[-gap/2, 1 + gap/2)`).
pub fn py_nearest_index(p: f64, num_bins: usize) -> Option<usize> {
    let gap = 1.0 / num_bins as f64;
    let approx = (p * num_bins as f64).round();
    let approx = if approx.is_finite() {
        approx.clamp(0.0, num_bins as f64) as usize
    } else {
        0
    };
    let lo = approx.saturating_sub(1);
    let hi = (approx + 1).min(num_bins);
    // Python scans the whole grid; only neighbours of the rounded index can match.
    (lo..=hi).find_map(|i| {
        let g = i as f64 * gap;
        let d = p - g;
        (d < gap / 2.0 && d >= -gap / 2.0).then(|| py_floordiv(g, gap) as usize)
    })
}

/// `scipy.ndimage.gaussian_filter1d(x, sigma)` with the defaults the paper's code
/// uses (`mode="reflect"`, `truncate=4.0`), including scipy's symmetric-kernel
/// accumulation order.
pub fn gaussian_filter_reflect(x: &[f64], sigma: f64) -> Vec<f64> {
    let n = x.len();
    if n == 0 {
        return Vec::new();
    }
    let radius = (4.0 * sigma + 0.5) as i64;
    let coef = -0.5 / (sigma * sigma);
    let raw: Vec<f64> = (-radius..=radius)
        .map(|i| (coef * (i * i) as f64).exp())
        .collect();
    let total = np_sum(&raw);
    let w: Vec<f64> = raw.iter().map(|v| v / total).collect();
    let centre = radius as usize;
    let at = |i: i64| -> f64 {
        let period = 2 * n as i64;
        let mut k = i.rem_euclid(period);
        if k >= n as i64 {
            k = period - 1 - k;
        }
        x[k as usize]
    };
    (0..n as i64)
        .map(|l| {
            let mut acc = at(l) * w[centre];
            for j in (1..=radius).rev() {
                acc += (at(l - j) + at(l + j)) * w[centre - j as usize];
            }
            acc
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn floordiv_matches_python_quirks() {
        assert_eq!(py_floordiv(1.0, 0.1), 9.0);
        assert_eq!(py_floordiv(0.30000000000000004, 0.1), 3.0);
        assert_eq!(py_floordiv(7.0, 2.0), 3.0);
        assert_eq!(py_floordiv(-7.0, 2.0), -4.0);
        // Python: [int((i*g)//g) for i in range(11)] with g = 1/10
        let g = 0.1;
        let got: Vec<usize> = (0..=10)
            .map(|i| py_floordiv(i as f64 * g, g) as usize)
            .collect();
        assert_eq!(got, vec![0, 1, 2, 3, 4, 4, 6, 7, 8, 8, 9]);
    }

    #[test]
    fn pairwise_sum_blocks() {
        let v: Vec<f64> = (0..300).map(|i| i as f64 * 0.1).collect();
        let exact: f64 = (0..300).map(|i| i as f64).sum::<f64>() * 0.1;
        assert!((np_sum(&v) - exact).abs() < 1e-9);
        assert_eq!(np_sum(&[1.0, 2.0]), 3.0);
    }

    #[test]
    fn gaussian_filter_preserves_constants_and_mass() {
        let out = gaussian_filter_reflect(&[2.0; 9], 2.0);
        assert!(out.iter().all(|v| (v - 2.0).abs() < 1e-12));
        let impulse = gaussian_filter_reflect(&[0.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 0.0], 2.0);
        assert!((impulse.iter().sum::<f64>() - 1.0).abs() < 1e-12);
        assert!(impulse[4] > impulse[3] && impulse[3] > impulse[2]);
    }

    #[test]
    fn nearest_index_matches_python_mapping() {
        assert_eq!(py_nearest_index(1.0, 10), Some(9));
        assert_eq!(py_nearest_index(0.5, 10), Some(4));
        assert_eq!(py_nearest_index(0.375, 8), Some(3));
        assert_eq!(py_nearest_index(0.0, 8), Some(0));
        assert_eq!(py_nearest_index(1.2, 8), None);
    }
}
