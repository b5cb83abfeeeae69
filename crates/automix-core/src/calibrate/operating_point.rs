//! Which cut of the calibrated curves is kept under the ΔIBC objective: the robust
//! operating point.
//!
//! Cross-validation scores every cut out of fold. The cut with the best out-of-fold ΔIBC is
//! a fragile choice on a few hundred rows: ΔIBC is a ratio whose noise grows as the spend
//! shrinks (its standard error goes as 1/√(rows escalated)), so the best of a few hundred
//! noisy cuts is most often one that escalates a handful of rows that happened to gain.
//!
//! So the cut kept by default is the one with the largest out-of-fold **excess gain**,
//! ΔIBC × spend: the quality gained beyond what the same spend buys at the large model's own
//! average rate (up to that constant rate). It is additive over rows, so its best cut
//! escalates every row that pays at that rate, and it is far less noisy. The best-ΔIBC cut
//! replaces it only when its out-of-fold ΔIBC is higher by more than one standard error
//! (delta method, [`RatioNoise`]). With thousands of rows that error is small and the
//! best-ΔIBC cut is kept; on small sets the safer cut is. Where no cut has a positive
//! ΔIBC the excess gain ranks nothing useful (never escalating and always escalating both
//! lose the verifier's cost), so ΔIBC decides there.

use super::*;

/// What the standard error of an out-of-fold ΔIBC needs from the training rows.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct RatioNoise {
    rows: f64,
    /// Mean squared large−small gain per row, taken as the mean |gain|: exact for 0/1
    /// scores, an upper bound for scores in [0, 1].
    mean_sq_gain: f64,
}

impl RatioNoise {
    /// The baseline of `stats` and the noise of a ΔIBC on them, from one merge of the cells.
    pub(crate) fn with_baseline(stats: &Stats<'_>) -> (Baseline, Self) {
        Self::with_baseline_of(stats, &stats.total())
    }

    /// [`RatioNoise::with_baseline`] given the cells' total `t`.
    pub(crate) fn with_baseline_of(stats: &Stats<'_>, t: &CellSums) -> (Baseline, Self) {
        let abs_gain = t.needy_gain.value() - t.small_better_gain.value();
        let noise = Self {
            rows: t.rows as f64,
            mean_sq_gain: abs_gain / t.rows.max(1) as f64,
        };
        (stats.baseline_of(t), noise)
    }

    /// The delta-method standard error of ΔIBC at outcome `o` on these rows (∞ at no spend).
    ///
    /// ΔIBC + 1 = K·a/(a + b): `a` is the gain on the escalated rows, `b` on the kept ones,
    /// K the ratio of the baseline's spend to the outcome's (fixed by the costs). With a
    /// per-row gain variance v, Var(a) = n_e·v and Var(b) = (n − n_e)·v, so the error is
    /// K·√(v·(b²·n_e + a²·(n − n_e)))/(a + b)². It is 0 when every row escalates.
    pub(crate) fn delta_ibc_se(&self, base: &Baseline, o: &Outcome) -> f64 {
        let n = self.rows;
        let gain = n * (base.large_quality - base.small_quality);
        let a = n * (o.quality - base.small_quality);
        let b = gain - a;
        let escalated = o.escalation_rate * n;
        let spend = o.cost - base.small_cost;
        if spend <= 0.0 || gain <= 0.0 {
            return f64::INFINITY;
        }
        let k = (base.large_cost - base.small_cost) / spend;
        let var = self.mean_sq_gain * (b * b * escalated + a * a * (n - escalated)).max(0.0);
        k * var.sqrt() / (gain * gain)
    }
}

/// A cut of one curve family (`arm`, its index) with its out-of-fold score.
#[derive(Debug, Clone)]
pub(crate) struct ScoredCut {
    pub(crate) score: CvScore,
    pub(crate) cut: f64,
    pub(crate) arm: usize,
}

impl CvScore {
    /// Ranking by excess gain: a cut with a positive mean ΔIBC beats one without; among
    /// those, the larger excess gain (ties: the cheaper); among the rest, ΔIBC decides.
    pub(crate) fn beats_on_excess(&self, other: &CvScore) -> bool {
        match (self.excess, other.excess) {
            (Some(x), Some(y)) => match (self.mean() > 0.0, other.mean() > 0.0) {
                (true, false) => true,
                (false, true) => false,
                (true, true) => x > y || (x == y && self.outcome.cost < other.outcome.cost),
                (false, false) => self.beats(other),
            },
            _ => self.beats(other),
        }
    }
}

/// The best cut of `arm` by ΔIBC (or the objective) and the best by excess gain (only under
/// the ΔIBC objective; `None` otherwise).
pub(crate) fn best_cuts(
    arm: &CalibratedArm,
    index: usize,
    base: &Baseline,
    objective: Objective,
    options: &TrainOptions,
) -> (Option<ScoredCut>, Option<ScoredCut>) {
    let mut by_objective: Option<ScoredCut> = None;
    let mut by_excess: Option<ScoredCut> = None;
    for (c, &cut) in arm.cuts.iter().enumerate() {
        let outcomes: Vec<Outcome> = arm.outcomes.iter().map(|o| o[c]).collect();
        let Some(score) = CvScore::of(base, &outcomes, objective, options) else {
            continue;
        };
        if score.excess.is_some()
            && by_excess
                .as_ref()
                .is_none_or(|b| score.beats_on_excess(&b.score))
        {
            by_excess = Some(ScoredCut {
                score: score.clone(),
                cut,
                arm: index,
            });
        }
        if by_objective.as_ref().is_none_or(|b| score.beats(&b.score)) {
            by_objective = Some(ScoredCut {
                score,
                cut,
                arm: index,
            });
        }
    }
    (by_objective, by_excess)
}

/// The operating point kept (see the module doc) and, when the safer cut replaced the
/// best-ΔIBC one, why, for the report.
pub(crate) fn settle_point(
    best_ratio: ScoredCut,
    best_excess: Option<ScoredCut>,
    base: &Baseline,
    noise: &RatioNoise,
) -> (ScoredCut, Option<String>) {
    let Some(safe) = best_excess else {
        return (best_ratio, None);
    };
    if safe.arm == best_ratio.arm && safe.cut == best_ratio.cut {
        return (best_ratio, None);
    }
    let lead = best_ratio.score.mean() - safe.score.mean();
    let se = noise.delta_ibc_se(base, &best_ratio.score.outcome);
    if lead > se {
        return (best_ratio, None);
    }
    let why = format!(
        "the largest excess gain; the best-ΔIBC cut ({:.4}) led by {lead:.4}, \
         within one standard error ({se:.4})",
        best_ratio.cut
    );
    (safe, Some(why))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn base() -> Baseline {
        Baseline {
            small_quality: 0.5,
            large_quality: 0.7,
            small_cost: 1.0,
            large_cost: 50.0,
        }
    }

    #[test]
    fn the_ratio_error_shrinks_with_rows_and_vanishes_when_everything_escalates() {
        let few = RatioNoise {
            rows: 200.0,
            mean_sq_gain: 0.3,
        };
        let many = RatioNoise {
            rows: 20_000.0,
            ..few
        };
        // Escalating 10% of the rows and catching a quarter of the gain.
        let o = Outcome {
            quality: 0.55,
            cost: 1.0 + 1.0 + 5.0,
            escalation_rate: 0.1,
        };
        let (se_few, se_many) = (
            few.delta_ibc_se(&base(), &o),
            many.delta_ibc_se(&base(), &o),
        );
        assert!(se_few > 0.0 && se_many > 0.0);
        assert!((se_few / se_many - 10.0).abs() < 1e-9, "{se_few} {se_many}");
        let all = Outcome {
            quality: 0.7,
            cost: 52.0,
            escalation_rate: 1.0,
        };
        assert_eq!(few.delta_ibc_se(&base(), &all), 0.0);
        let none = Outcome {
            quality: 0.5,
            cost: 1.0,
            escalation_rate: 0.0,
        };
        assert!(few.delta_ibc_se(&base(), &none).is_infinite());
    }

    fn scored(mean: f64, spend: f64, cut: f64) -> ScoredCut {
        ScoredCut {
            score: CvScore {
                values: vec![mean],
                outcome: Outcome {
                    quality: 0.6,
                    cost: 1.0 + spend,
                    escalation_rate: spend / 50.0,
                },
                excess: Some(mean * spend),
            },
            cut,
            arm: 0,
        }
    }

    #[test]
    fn the_best_ratio_cut_is_kept_only_when_its_lead_is_clear() {
        let ratio = scored(2.0, 5.0, 0.3);
        let safe = scored(0.8, 20.0, 0.1);
        let noisy = RatioNoise {
            rows: 100.0,
            mean_sq_gain: 0.3,
        };
        let (kept, why) = settle_point(ratio.clone(), Some(safe.clone()), &base(), &noisy);
        assert_eq!(kept.cut, 0.1);
        assert!(why.is_some_and(|w| w.contains("within one standard error")));
        let plenty = RatioNoise { rows: 1e6, ..noisy };
        let (kept, why) = settle_point(ratio, Some(safe), &base(), &plenty);
        assert_eq!((kept.cut, why), (0.3, None));
    }

    #[test]
    fn excess_gain_ranks_paying_cuts_by_size_and_the_rest_by_ratio() {
        let small_spike = scored(2.0, 2.0, 0.4);
        let broad = scored(0.5, 20.0, 0.1);
        assert!(broad.score.beats_on_excess(&small_spike.score));
        let losing_all = scored(-0.04, 51.0, -1.0);
        let losing_none = scored(-1.0, 1.0, 9.0);
        assert!(broad.score.beats_on_excess(&losing_all.score));
        // Nothing pays: escalating everything loses least, as ΔIBC says.
        assert!(losing_all.score.beats_on_excess(&losing_none.score));
    }
}
