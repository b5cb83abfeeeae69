//! Verifier confidence and the bins it is discretised into.

use serde::{Deserialize, Serialize};

use crate::error::{CoreError, Result};

/// The score or confidence at or above which an answer counts as correct: a sampled or
/// logprob verdict, a graded task score, a cascade model's hidden state. One constant so
/// training, routing and evaluation cut in the same place.
pub const VERDICT_CUT: f64 = 0.5;

/// A validated probability in `[0, 1]` that the small model's answer is correct.
#[derive(Debug, Clone, Copy, PartialEq, PartialOrd, Serialize, Deserialize)]
#[serde(try_from = "f64", into = "f64")]
pub struct Confidence(f64);

impl Confidence {
    /// Validates `value`; NaN and values outside `[0, 1]` are errors, never clamped.
    pub fn new(value: f64) -> Result<Self> {
        if (0.0..=1.0).contains(&value) {
            Ok(Self(value))
        } else {
            Err(CoreError::InvalidConfidence { value })
        }
    }

    /// The probability.
    pub fn get(self) -> f64 {
        self.0
    }
}

impl TryFrom<f64> for Confidence {
    type Error = CoreError;
    fn try_from(value: f64) -> Result<Self> {
        Self::new(value)
    }
}

impl From<Confidence> for f64 {
    fn from(c: Confidence) -> f64 {
        c.0
    }
}

/// What the verifier said about one answer: a confidence, or nothing usable
/// (every sampled verdict unparseable). Unknown is never coerced to 0.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum VerifierScore {
    /// A usable confidence.
    Known(Confidence),
    /// No verdict could be parsed.
    Unknown,
}

impl VerifierScore {
    /// Builds a score from an optional probability.
    pub fn from_option(p: Option<f64>) -> Result<Self> {
        match p {
            Some(p) => Ok(Self::Known(Confidence::new(p)?)),
            None => Ok(Self::Unknown),
        }
    }

    /// The confidence when known.
    pub fn known(self) -> Option<f64> {
        match self {
            Self::Known(c) => Some(c.get()),
            Self::Unknown => None,
        }
    }
}

/// `num_bins + 1` bins centred on `0, 1/num_bins, …, 1`, so `k` votes map exactly
/// onto `num_bins = k`. Bin `b` covers `[(b - ½)/n, (b + ½)/n)`, clipped to `[0, 1]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Bins {
    num_bins: usize,
}

impl Bins {
    /// `num_bins` must be at least 1.
    pub fn new(num_bins: usize) -> Result<Self> {
        if num_bins == 0 {
            return Err(CoreError::InvalidBins(num_bins));
        }
        Ok(Self { num_bins })
    }

    /// The `num_bins` parameter (there are `num_bins + 1` bins).
    pub fn num_bins(self) -> usize {
        self.num_bins
    }

    /// Number of bins, `num_bins + 1`.
    pub fn len(self) -> usize {
        self.num_bins + 1
    }

    /// Always false: there is at least one bin.
    pub fn is_empty(self) -> bool {
        false
    }

    /// The bin holding `confidence` (nearest grid point, halves rounding up).
    #[inline]
    pub fn index(self, confidence: Confidence) -> usize {
        let scaled = confidence.get() * self.num_bins as f64 + 0.5;
        // `as` saturates; scaled is in [0.5, n + 0.5] so the floor is in 0..=n.
        (scaled.floor() as usize).min(self.num_bins)
    }

    /// The grid point of bin `b`, `b / num_bins`.
    pub fn centre(self, b: usize) -> f64 {
        b as f64 / self.num_bins as f64
    }
}
