//! Verifier calibration: does the confidence separate right from wrong answers?

/// Calibration of verifier confidences against the small model's correctness.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct CalibrationReport {
    /// Rows considered.
    pub rows: usize,
    /// Rows whose confidence was unknown (excluded from AUC and ECE).
    pub unknown: usize,
    /// `unknown / rows`.
    pub unknown_share: f64,
    /// ROC AUC of confidence against correctness (score ≥ 0.5); `None` if only one class.
    pub auc: Option<f64>,
    /// Expected calibration error with 10 equal-width bins; `None` without known rows.
    pub ece: Option<f64>,
    /// Mean correctness of the known rows.
    pub accuracy: Option<f64>,
}

/// Bins used by [`CalibrationReport::compute`]'s ECE.
pub const ECE_BINS: usize = 10;

impl CalibrationReport {
    /// From (confidence, small-model score in [0, 1]) pairs; `None` confidence = unknown.
    pub fn compute(rows: &[(Option<f64>, f64)]) -> Self {
        let known: Vec<(f64, f64)> = rows
            .iter()
            .filter_map(|(c, s)| c.filter(|c| c.is_finite()).map(|c| (c, *s)))
            .collect();
        let unknown = rows.len() - known.len();
        Self {
            rows: rows.len(),
            unknown,
            unknown_share: if rows.is_empty() {
                0.0
            } else {
                unknown as f64 / rows.len() as f64
            },
            auc: auc(&known),
            ece: ece(&known, ECE_BINS),
            accuracy: (!known.is_empty())
                .then(|| known.iter().map(|(_, s)| s).sum::<f64>() / known.len() as f64),
        }
    }
}

/// Mann–Whitney AUC with ties counted as one half.
pub fn auc(known: &[(f64, f64)]) -> Option<f64> {
    let mut sorted: Vec<(f64, bool)> = known
        .iter()
        .map(|(c, s)| (*c, *s >= automix_core::VERDICT_CUT))
        .collect();
    sorted.sort_by(|a, b| a.0.total_cmp(&b.0));
    let positives = sorted.iter().filter(|(_, p)| *p).count();
    let negatives = sorted.len() - positives;
    if positives == 0 || negatives == 0 {
        return None;
    }
    // Average ranks over tie groups, then the rank-sum statistic.
    let mut rank_sum = 0.0;
    let mut i = 0;
    while i < sorted.len() {
        let mut j = i;
        while j < sorted.len() && sorted[j].0 == sorted[i].0 {
            j += 1;
        }
        let mean_rank = (i + 1 + j) as f64 / 2.0;
        rank_sum += mean_rank * sorted[i..j].iter().filter(|(_, p)| *p).count() as f64;
        i = j;
    }
    let p = positives as f64;
    Some((rank_sum - p * (p + 1.0) / 2.0) / (p * negatives as f64))
}

/// Expected calibration error: Σ_b (n_b/n)·|mean confidence_b − mean score_b|.
pub fn ece(known: &[(f64, f64)], bins: usize) -> Option<f64> {
    if known.is_empty() || bins == 0 {
        return None;
    }
    let mut sums = vec![(0usize, 0.0f64, 0.0f64); bins];
    for (c, s) in known {
        let b = ((c.clamp(0.0, 1.0) * bins as f64) as usize).min(bins - 1);
        sums[b].0 += 1;
        sums[b].1 += c;
        sums[b].2 += s;
    }
    let n = known.len() as f64;
    Some(
        sums.iter()
            .filter(|(count, _, _)| *count > 0)
            .map(|(count, c, s)| (*count as f64 / n) * ((c - s) / *count as f64).abs())
            .sum(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn perfect_random_and_inverted_auc() {
        let perfect = [(0.9, 1.0), (0.8, 1.0), (0.2, 0.0), (0.1, 0.0)];
        assert_eq!(auc(&perfect), Some(1.0));
        let inverted = [(0.1, 1.0), (0.9, 0.0)];
        assert_eq!(auc(&inverted), Some(0.0));
        let ties = [(0.5, 1.0), (0.5, 0.0)];
        assert_eq!(auc(&ties), Some(0.5));
        assert_eq!(auc(&[(0.5, 1.0)]), None);
    }

    #[test]
    fn ece_and_unknowns() {
        let rows = [
            (Some(1.0), 1.0),
            (Some(1.0), 0.0),
            (None, 1.0),
            (Some(0.0), 0.0),
        ];
        let r = CalibrationReport::compute(&rows);
        assert_eq!(r.unknown, 1);
        assert_eq!(r.unknown_share, 0.25);
        // Bin 9: conf 1.0 vs accuracy 0.5 over 2 of 3 rows; bin 0 exact.
        assert!((r.ece.unwrap() - (2.0 / 3.0) * 0.5).abs() < 1e-12);
        assert_eq!(r.auc, Some(0.75));
    }
}
