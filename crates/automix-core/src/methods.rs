//! Meta-verifiers and their parameter grids: the paper's methods, reproduced exactly
//! (including float quirks, see [`crate::compat`]), and our exact POMDP.

use serde::{Deserialize, Serialize};

use crate::calibrate::{CalibratedConfig, pooled_sweep_stats};
use crate::compat::{gaussian_filter_reflect, py_floordiv, py_grid};
use crate::error::{CoreError, Result};
use crate::metrics::Dataset;
use crate::pomdp::{ExactPomdpConfig, exact_pomdp_grid};
use crate::record::Category;
use crate::rule::{DecisionRule, TableLookup};
use crate::stats::{Stats, Sum};

/// Which meta-verifier to train.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum MethodKind {
    /// Escalate below a threshold.
    Threshold,
    /// Escalate inside a band.
    DoubleThreshold,
    /// Escalate in `[0, a]` or in a band `[b, c]`.
    TripleThreshold,
    /// Threshold on self-consistency agreement (the paper fixes it at 0.5; we learn it unless told).
    SelfConsistency,
    /// The paper's `POMDPSimple`: per-bin tables from a reward sweep.
    #[serde(rename = "POMDPSimple")]
    PomdpSimple,
    /// The paper's `GreedyPOMDP`: bins ranked by smoothed large−small gain.
    #[serde(rename = "GreedyPOMDP")]
    GreedyPomdp,
    /// The paper's "POMDP": union of POMDPSimple, GreedyPOMDP, DoubleThreshold and Threshold.
    #[serde(rename = "POMDP")]
    PaperPomdp,
    /// Our exact one-step POMDP solved by Bayes' rule (optionally with per-task priors).
    ExactPomdp,
    /// Isotonic `E[gain | confidence, task]` with shrinkage, cut chosen by cross-validation.
    Calibrated,
    /// Calibrated or the paper's Threshold, whichever cross-validates better.
    Auto,
}

impl MethodKind {
    /// Every method.
    pub const ALL: [MethodKind; 10] = [
        Self::Threshold,
        Self::DoubleThreshold,
        Self::TripleThreshold,
        Self::SelfConsistency,
        Self::PomdpSimple,
        Self::GreedyPomdp,
        Self::PaperPomdp,
        Self::ExactPomdp,
        Self::Calibrated,
        Self::Auto,
    ];

    /// Whether the method selects its operating point by cross-validation.
    pub fn cross_validated(self) -> bool {
        matches!(self, Self::Calibrated | Self::Auto)
    }

    /// The name used in configs and reports.
    pub fn name(self) -> &'static str {
        match self {
            Self::Threshold => "Threshold",
            Self::DoubleThreshold => "DoubleThreshold",
            Self::TripleThreshold => "TripleThreshold",
            Self::SelfConsistency => "SelfConsistency",
            Self::PomdpSimple => "POMDPSimple",
            Self::GreedyPomdp => "GreedyPOMDP",
            Self::PaperPomdp => "POMDP",
            Self::ExactPomdp => "ExactPOMDP",
            Self::Calibrated => "Calibrated",
            Self::Auto => "auto",
        }
    }

    /// Parses a config name (case-insensitive; `Automix`/`AutomixUnion` alias the paper union).
    pub fn parse(name: &str) -> Option<Self> {
        let lower = name.to_ascii_lowercase();
        match lower.as_str() {
            "automixunion" | "automix_union" => return Some(Self::PaperPomdp),
            "exact_pomdp" | "exactpomdp" => return Some(Self::ExactPomdp),
            _ => {}
        }
        Self::ALL
            .into_iter()
            .find(|m| m.name().eq_ignore_ascii_case(&lower))
    }
}

/// A method with its settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MethodSpec {
    /// The method.
    pub kind: MethodKind,
    /// `num_bins`: grid resolution (set it to k for k votes).
    pub num_bins: usize,
    /// SelfConsistency threshold; `None` learns it over the grid (the paper fixes 0.5).
    #[serde(default)]
    pub self_consistency_threshold: Option<f64>,
    /// Exact-POMDP settings.
    #[serde(default)]
    pub exact: ExactPomdpConfig,
    /// Calibrated-method and cross-validation settings.
    #[serde(default)]
    pub calibrated: CalibratedConfig,
}

impl MethodSpec {
    /// `kind` with `num_bins` and default settings.
    pub fn new(kind: MethodKind, num_bins: usize) -> Self {
        Self {
            kind,
            num_bins,
            self_consistency_threshold: None,
            exact: ExactPomdpConfig::default(),
            calibrated: CalibratedConfig::default(),
        }
    }

    /// Settings that reproduce `automix-llm` 1.0.3 (SelfConsistency at 0.5).
    pub fn paper(kind: MethodKind, num_bins: usize) -> Self {
        Self {
            self_consistency_threshold: Some(0.5),
            ..Self::new(kind, num_bins)
        }
    }
}

/// One parameter setting of a method.
#[derive(Debug, Clone, PartialEq)]
pub struct Candidate {
    /// The component method that produced it (differs from the spec for the union).
    pub method: MethodKind,
    /// The rule it stands for.
    pub rule: DecisionRule,
    /// The λ of an exact-POMDP candidate (escalate where expected gain ≥ λ·large cost).
    pub lambda: Option<f64>,
}

impl Candidate {
    fn plain(method: MethodKind, rule: DecisionRule) -> Self {
        Self {
            method,
            rule,
            lambda: None,
        }
    }
}

/// The candidate grid of `spec` on `data`, in the order the paper's code tries it
/// (that order breaks ties: the first best candidate wins).
pub fn candidates(spec: &MethodSpec, data: &Dataset) -> Result<Vec<Candidate>> {
    let cells = data.cells_for(&[]);
    candidates_on(spec, &data.stats(&cells))
}

/// [`candidates`] from the cells of training rows.
pub(crate) fn candidates_on(spec: &MethodSpec, data: &Stats<'_>) -> Result<Vec<Candidate>> {
    let n = spec.num_bins;
    if n == 0 {
        return Err(CoreError::InvalidBins(n));
    }
    Ok(match spec.kind {
        MethodKind::Threshold => threshold_grid(n),
        MethodKind::SelfConsistency => match spec.self_consistency_threshold {
            Some(t) => {
                if !(0.0..=1.0).contains(&t) {
                    return Err(CoreError::InvalidParameter {
                        name: "self_consistency_threshold",
                        reason: format!("{t} is not in [0, 1]"),
                    });
                }
                vec![Candidate::plain(
                    MethodKind::SelfConsistency,
                    DecisionRule::Threshold { threshold: t },
                )]
            }
            None => threshold_grid(n)
                .into_iter()
                .map(|c| Candidate {
                    method: MethodKind::SelfConsistency,
                    ..c
                })
                .collect(),
        },
        MethodKind::DoubleThreshold => double_threshold_grid(n),
        MethodKind::TripleThreshold => triple_threshold_grid(n),
        MethodKind::PomdpSimple => pomdp_simple_grid(n, data),
        MethodKind::GreedyPomdp => greedy_pomdp_grid(n, data),
        MethodKind::PaperPomdp => {
            let mut all = pomdp_simple_grid(n, data);
            all.extend(greedy_pomdp_grid(n, data));
            all.extend(double_threshold_grid(n));
            all.extend(threshold_grid(n));
            all
        }
        MethodKind::ExactPomdp => exact_pomdp_grid(&spec.exact, n, data)?,
        // The λ sweep of the pooled curve fitted on every row; training itself chooses
        // the cut (and κ) by cross-validation, see `crate::calibrate`.
        MethodKind::Calibrated | MethodKind::Auto => pooled_sweep_stats(data)?,
    })
}

fn threshold_grid(n: usize) -> Vec<Candidate> {
    py_grid(n)
        .into_iter()
        .map(|t| {
            Candidate::plain(
                MethodKind::Threshold,
                DecisionRule::Threshold { threshold: t },
            )
        })
        .collect()
}

fn double_threshold_grid(n: usize) -> Vec<Candidate> {
    let gap = 1.0 / n as f64;
    let mut out = Vec::with_capacity(n * n / 2);
    for i in 0..n {
        for j in i + 1..n {
            let rule = DecisionRule::Band {
                low: i as f64 * gap,
                high: j as f64 * gap,
            };
            out.push(Candidate::plain(MethodKind::DoubleThreshold, rule));
        }
    }
    out
}

fn triple_threshold_grid(n: usize) -> Vec<Candidate> {
    let gap = 1.0 / n as f64;
    let mut out = Vec::new();
    for i in 0..n {
        for j in i + 1..n {
            for k in j + 1..n {
                let rule = DecisionRule::TwoBands {
                    first: i as f64 * gap,
                    second: j as f64 * gap,
                    third: k as f64 * gap,
                };
                out.push(Candidate::plain(MethodKind::TripleThreshold, rule));
            }
        }
    }
    out
}

/// `POMDPSimple.compute_obs_probs`: per grid point, the share of NEEDY/GOOD/HOPELESS
/// rows strictly within half a gap; then the action table for each reward 0..5000,
/// de-duplicated in first-seen order (Python de-duplicates through a `set`, whose
/// order is hash-defined; see the parity notes).
fn pomdp_simple_grid(n: usize, data: &Stats<'_>) -> Vec<Candidate> {
    let gap = 1.0 / n as f64;
    let grid = py_grid(n);
    let mut obs = vec![[0.0f64; 3]; n + 1];
    for (idx, &g) in grid.iter().enumerate() {
        let mut counts = [0u64; 3];
        for (key, sums) in data.keys.iter().zip(data.sums.iter()) {
            let Some(p) = key.known() else {
                continue;
            };
            let d = p - g;
            if d < gap / 2.0 && d > -gap / 2.0 {
                for (state, rows) in Category::ALL.iter().zip(sums.states) {
                    let c = match state.paper_label() {
                        "NEEDY" => 0,
                        "GOOD" => 1,
                        _ => 2,
                    };
                    counts[c] += rows;
                }
            }
        }
        let total: u64 = counts.iter().sum();
        if total > 0 {
            obs[idx] = counts.map(|c| c as f64 / total as f64);
        }
    }
    let mut seen: Vec<Vec<bool>> = Vec::new();
    for reward in 0..5000i64 {
        let r = reward as f64;
        let keep_w = [-r, 0.0, -r - 1.0];
        let esc_w = [-100.0, -100.0, -r - 100.0];
        let table: Vec<bool> = obs
            .iter()
            .map(|o| {
                let keep = ((0.0 + o[0] * keep_w[0]) + o[1] * keep_w[1]) + o[2] * keep_w[2];
                let esc = ((0.0 + o[0] * esc_w[0]) + o[1] * esc_w[1]) + o[2] * esc_w[2];
                esc > keep
            })
            .collect();
        if !seen.contains(&table) {
            seen.push(table);
        }
    }
    seen.into_iter()
        .map(|t| {
            let rule = DecisionRule::Table {
                escalate: t,
                lookup: TableLookup::PaperNearest { num_bins: n },
            };
            Candidate::plain(MethodKind::PomdpSimple, rule)
        })
        .collect()
}

/// `GreedyPOMDP.generate_points`: mean large−small gain per floor-bin, Gaussian-smoothed
/// (σ = 2, reflect), bins ranked by smoothed gain, then the nested tables escalating
/// the top 1, 2, … bins.
fn greedy_pomdp_grid(n: usize, data: &Stats<'_>) -> Vec<Candidate> {
    let gap = 1.0 / n as f64;
    let mut gains: Vec<(u64, Sum)> = vec![(0, Sum::default()); n + 1];
    for (key, sums) in data.keys.iter().zip(data.sums.iter()) {
        let Some(p) = key.known() else {
            continue;
        };
        let bin = py_floordiv(p, gap);
        if bin >= 0.0 && bin <= n as f64 && bin.fract() == 0.0 {
            let (rows, gain) = &mut gains[bin as usize];
            *rows += sums.rows;
            gain.merge(sums.gain());
        }
    }
    // numpy's mean of the bin's gains: exact sums give the same bits (see `crate::stats`).
    let means: Vec<f64> = gains
        .iter()
        .map(|(rows, gain)| {
            if *rows == 0 {
                0.0
            } else {
                gain.value() / *rows as f64
            }
        })
        .collect();
    let smoothed = gaussian_filter_reflect(&means, 2.0);
    let mut order: Vec<usize> = (0..=n).collect();
    // Python: sorted(points, key=gain)[::-1] — stable ascending sort, then reversed.
    order.sort_by(|&a, &b| {
        smoothed[a]
            .partial_cmp(&smoothed[b])
            .unwrap_or(std::cmp::Ordering::Equal)
    });
    order.reverse();
    let mut table = vec![false; n + 1];
    order
        .into_iter()
        .map(|bin| {
            table[bin] = true;
            let rule = DecisionRule::Table {
                escalate: table.clone(),
                lookup: TableLookup::PaperNearest { num_bins: n },
            };
            Candidate::plain(MethodKind::GreedyPomdp, rule)
        })
        .collect()
}
