//! The cascade's verifier bins: how a confidence becomes an observation symbol.
//!
//! Equal-width bins (`round(p · bins)`) are the paper's grid and map k votes exactly; on a
//! continuous confidence they lump the top of the scale, where a strong small model puts
//! most of its answers (on a real chain, 56% of gpt-4o-mini's confidences are exactly 1.0).
//! Quantile bins put the edges at the training confidences' quantiles, per model, so every
//! bin holds about the same number of rows and a value with a large mass (1.0) gets a bin of
//! its own: the signal at its own resolution, with as many bins as the rows can estimate.

use serde::{Deserialize, Serialize};

/// Where the bin edges go.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Binning {
    /// `count + 1` bins centred on the grid `0, 1/count, …, 1` (k votes map exactly).
    #[default]
    Uniform,
    /// At most `count + 1` bins with edges at the training confidences' quantiles, per model.
    Quantile,
}

impl Binning {
    /// Its name in reports.
    pub fn name(self) -> &'static str {
        match self {
            Self::Uniform => "uniform",
            Self::Quantile => "quantile",
        }
    }
}

/// A bin count and where its edges go.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct CascadeBins {
    /// Edges per model (`count + 1` bins at most), so `count + 2` symbols with "unknown".
    pub count: usize,
    /// Where the edges go.
    pub binning: Binning,
}

impl CascadeBins {
    /// `count` equal-width bins.
    pub fn uniform(count: usize) -> Self {
        Self {
            count,
            binning: Binning::Uniform,
        }
    }

    /// `count` quantile edges.
    pub fn quantile(count: usize) -> Self {
        Self {
            count,
            binning: Binning::Quantile,
        }
    }

    /// E.g. `16 quantile`.
    pub fn describe(self) -> String {
        format!("{} {}", self.count, self.binning.name())
    }
}

/// Up to `count` ascending edges at the quantiles `j / (count + 1)` of `values` (known
/// confidences): a confidence's bin is the number of edges at or below it. Equal quantiles
/// collapse into one edge, so a mass point ends up in a bin of its own; no edge sits at the
/// minimum, so the lowest bin is never empty.
pub fn quantile_edges(values: &mut [f64], count: usize) -> Vec<f64> {
    values.sort_by(f64::total_cmp);
    let Some(&lowest) = values.first() else {
        return Vec::new();
    };
    let n = values.len();
    let mut edges: Vec<f64> = Vec::with_capacity(count);
    for j in 1..=count {
        let e = values[(j * n / (count + 1)).min(n - 1)];
        if e > lowest && edges.last().is_none_or(|&last| e > last) {
            edges.push(e);
        }
    }
    edges
}

/// The bin of `p` among `edges` (the number of edges at or below it).
#[inline]
pub fn bin_of(edges: &[f64], p: f64) -> usize {
    edges.partition_point(|&e| e <= p)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_mass_point_gets_a_bin_of_its_own() {
        // 56% at exactly 1.0, the rest spread below.
        let mut v: Vec<f64> = (0..44).map(|i| f64::from(i) / 50.0).collect();
        v.extend(std::iter::repeat_n(1.0, 56));
        let edges = quantile_edges(&mut v, 8);
        assert_eq!(edges.last(), Some(&1.0));
        assert!(edges.windows(2).all(|w| w[0] < w[1]));
        assert_eq!(bin_of(&edges, 1.0), edges.len());
        assert!(bin_of(&edges, 0.99) < edges.len());
        assert_eq!(bin_of(&edges, 0.0), 0);
        // Below half the rows, bins split the spread part.
        assert!(edges.len() >= 3);
    }

    #[test]
    fn few_distinct_values_give_few_edges() {
        let mut v = vec![0.0, 0.0, 0.5, 0.5, 1.0, 1.0];
        assert_eq!(quantile_edges(&mut v, 16), vec![0.5, 1.0]);
        assert!(quantile_edges(&mut [], 4).is_empty());
        assert!(quantile_edges(&mut [0.3, 0.3], 4).is_empty());
    }
}
