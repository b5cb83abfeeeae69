//! Semi-synthetic routing rows: real correctness tables with a verifier signal of a chosen
//! AUC, to test how a meta-verifier behaves from a useless verifier to a perfect one.
//!
//! The signal is binormal: a latent score `z ~ N(μ, 1)` for rows where keeping the small
//! answer is right (the large model is not better) and `z ~ N(0, 1)` where escalating helps,
//! with `μ = √2 · Φ⁻¹(AUC)`, so the confidence separates the two classes with exactly that
//! AUC in expectation. The confidence is `Φ(z − μ/2)`, optionally rounded to `k` votes.

use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, Normal};
use statrs::distribution::{ContinuousCDF, Normal as StdNormal};

use crate::confidence::{Confidence, VerifierScore};
use crate::error::{CoreError, Result};
use crate::record::RoutingRecord;

/// The verifier signal to synthesise.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SyntheticSignal {
    /// AUC of the confidence against "keeping the small answer is right", in `[0.5, 1)`.
    pub auc: f64,
    /// Round the confidence to `k` votes (`k + 1` levels); `None` keeps it continuous.
    pub votes: Option<usize>,
    /// Seed of the draw.
    pub seed: u64,
}

/// `records` with their verifier scores replaced by a signal of `signal.auc`.
pub fn with_synthetic_signal(
    records: &[RoutingRecord],
    signal: SyntheticSignal,
) -> Result<Vec<RoutingRecord>> {
    if !(0.5..1.0).contains(&signal.auc) {
        return Err(CoreError::InvalidParameter {
            name: "auc",
            reason: format!("{} is not in [0.5, 1)", signal.auc),
        });
    }
    if signal.votes == Some(0) {
        return Err(CoreError::InvalidParameter {
            name: "votes",
            reason: "must be >= 1".into(),
        });
    }
    let phi = StdNormal::standard();
    let mu = std::f64::consts::SQRT_2 * phi.inverse_cdf(signal.auc);
    let noise = Normal::new(0.0, 1.0).map_err(|e| CoreError::InvalidParameter {
        name: "noise",
        reason: e.to_string(),
    })?;
    let mut rng = ChaCha8Rng::seed_from_u64(signal.seed);
    records
        .iter()
        .map(|r| {
            let keep_is_right = r.large_score <= r.small_score;
            let z = noise.sample(&mut rng) + if keep_is_right { mu } else { 0.0 };
            let mut p = phi.cdf(z - mu / 2.0);
            if let Some(k) = signal.votes {
                p = (p * k as f64).round() / k as f64;
            }
            Ok(RoutingRecord {
                verifier: VerifierScore::Known(Confidence::new(p.clamp(0.0, 1.0))?),
                ..r.clone()
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn auc(records: &[RoutingRecord]) -> f64 {
        let (pos, neg): (Vec<&RoutingRecord>, Vec<&RoutingRecord>) =
            records.iter().partition(|r| r.large_score <= r.small_score);
        let x = |r: &RoutingRecord| r.verifier.known().unwrap();
        let mut wins = 0.0;
        for p in &pos {
            for n in &neg {
                wins += match x(p).total_cmp(&x(n)) {
                    std::cmp::Ordering::Greater => 1.0,
                    std::cmp::Ordering::Equal => 0.5,
                    std::cmp::Ordering::Less => 0.0,
                };
            }
        }
        wins / (pos.len() * neg.len()) as f64
    }

    #[test]
    fn the_signal_has_the_requested_auc() {
        let rows: Vec<RoutingRecord> = (0..2000)
            .map(|i| RoutingRecord::new(f64::from(i % 3 == 0), 1.0, VerifierScore::Unknown))
            .collect();
        for target in [0.5, 0.7, 0.9] {
            let s = SyntheticSignal {
                auc: target,
                votes: None,
                seed: 7,
            };
            let got = auc(&with_synthetic_signal(&rows, s).unwrap());
            assert!((got - target).abs() < 0.03, "asked {target}, got {got}");
        }
        let bad = SyntheticSignal {
            auc: 1.0,
            votes: None,
            seed: 0,
        };
        assert!(with_synthetic_signal(&rows, bad).is_err());
    }
}
