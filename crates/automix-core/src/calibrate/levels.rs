//! Confidence levels of a continuous signal pooled into quantile groups before the
//! cross-validated fit.
//!
//! A logprob or fused confidence makes every row a cell, and every fold of every κ then
//! runs its PAV, its predictions and its cut sweep over all of them. Above
//! [`MAX_LEVELS`] distinct known confidences, adjacent confidences are pooled into groups
//! of about equal size (per task and fixed-answer flag, with the same boundaries for every
//! task), so training costs O(groups) per fold instead of O(rows).
//!
//! **Why the decisions stay exact.** Each group keeps the lowest and highest raw
//! confidence of its rows, and a curve's block ends are those raw values
//! ([`super::expand`]), so a cut falls between two raw training confidences and a rule
//! sends every row of a group the way the group's prediction does. A group never
//! straddles a point of the paper's grid, so `auto`'s Threshold challenger tells the same
//! rows apart on groups as on raw cells ([`GridGroups`]).

use rustc_hash::FxHashMap;

use super::PooledLevels;

use crate::confidence::{Confidence, VerifierScore};
use crate::stats::{CellKey, CellSums, Cells};

/// Distinct known confidences above which they are pooled into about this many groups
/// (plus one per grid interval). A curve on more levels than a fold has rows per level
/// tells nothing more apart; fewer levels (votes, a few logprob values) are never pooled.
pub(crate) const MAX_LEVELS: usize = 1024;

/// What a curve reads of one cell: its level in confidence order and the raw confidences
/// it spans.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct LevelRange {
    /// Cells of one level pool into one curve level (across tasks, for the pooled curve).
    pub(crate) level: u32,
    pub(crate) lo: f64,
    pub(crate) hi: f64,
}

/// Cells pooled into quantile groups: the groups as cells (row map included, so fold sums
/// are taken as from raw cells) and each group's level and raw range.
#[derive(Debug, Clone)]
pub(crate) struct LevelGroups {
    pub(crate) cells: Cells,
    /// Per group, in group order; unknown-confidence groups have a NaN range.
    pub(crate) ranges: Vec<LevelRange>,
    /// Distinct known confidences pooled.
    distinct: usize,
}

impl LevelGroups {
    /// The groups of `cells`, or `None` when they have at most [`MAX_LEVELS`] distinct known
    /// confidences (then every cell is its own level). No group straddles a point of `grid`.
    pub(crate) fn new(cells: &Cells, grid: &[f64]) -> Option<Self> {
        let mut distinct: Vec<f64> = cells.keys.iter().filter_map(CellKey::known).collect();
        distinct.sort_by(f64::total_cmp);
        distinct.dedup();
        if distinct.len() <= MAX_LEVELS {
            return None;
        }
        let level_of = quantile_levels(&distinct, grid);
        let mut index: FxHashMap<(u32, bool, u32), u32> = FxHashMap::default();
        let mut groups = Self {
            cells: Cells::default(),
            ranges: Vec::new(),
            distinct: distinct.len(),
        };
        let group_of: Vec<u32> = (cells.keys.iter().zip(&cells.sums))
            .map(|(key, sums)| {
                let level = key.known().map_or(u32::MAX, |x| {
                    level_of[distinct.partition_point(|&d| d.total_cmp(&x).is_lt())]
                });
                let next = groups.ranges.len() as u32;
                let g = *index.entry((key.task, key.forced, level)).or_insert(next);
                if g == next {
                    groups.push(*key, level);
                }
                groups.absorb(g as usize, key, sums);
                g
            })
            .collect();
        groups.finish(cells, &group_of);
        Some(groups)
    }

    /// What the training summary says of the pooling.
    pub(crate) fn summary(&self) -> PooledLevels {
        PooledLevels {
            distinct: self.distinct,
            groups: self.ranges.len(),
        }
    }

    fn push(&mut self, key: CellKey, level: u32) {
        self.cells.keys.push(key);
        self.cells.sums.push(CellSums::default());
        let (lo, hi) = match key.known() {
            Some(_) => (f64::INFINITY, f64::NEG_INFINITY),
            None => (f64::NAN, f64::NAN),
        };
        self.ranges.push(LevelRange { level, lo, hi });
    }

    fn absorb(&mut self, g: usize, key: &CellKey, sums: &CellSums) {
        self.cells.sums[g].merge(sums);
        if let Some(x) = key.known() {
            let r = &mut self.ranges[g];
            r.lo = r.lo.min(x);
            r.hi = r.hi.max(x);
        }
    }

    /// Each known group's key carries its lowest raw confidence (inside its range, so a
    /// curve looks it up in its own block); rows are mapped to their groups.
    fn finish(&mut self, cells: &Cells, group_of: &[u32]) {
        for (key, r) in self.cells.keys.iter_mut().zip(&self.ranges) {
            if key.known().is_some()
                && let Ok(p) = Confidence::new(r.lo)
            {
                key.score = VerifierScore::Known(p);
            }
        }
        self.cells.row_cell = (cells.row_cell.iter())
            .map(|&c| group_of[c as usize])
            .collect();
        self.cells.row_alone = (self.cells.row_cell.iter())
            .map(|&g| self.cells.sums[g as usize].rows == 1)
            .collect();
    }
}

/// The level of each of the ascending `distinct` confidences: runs of about
/// `len / MAX_LEVELS` values, a new run wherever the grid interval (`x ≤ t` for the same
/// first `t`, as [`GridGroups`] reads it) changes.
fn quantile_levels(distinct: &[f64], grid: &[f64]) -> Vec<u32> {
    let size = distinct.len().div_ceil(MAX_LEVELS);
    let interval = |x: f64| grid.partition_point(|&t| t < x);
    let mut level = 0u32;
    let mut run = 0usize;
    let mut out = Vec::with_capacity(distinct.len());
    for (i, &x) in distinct.iter().enumerate() {
        if i > 0 && (run == size || interval(x) != interval(distinct[i - 1])) {
            level += 1;
            run = 0;
        }
        run += 1;
        out.push(level);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn runs_are_even_and_never_straddle_a_grid_point() {
        let distinct: Vec<f64> = (0..5000).map(|i| f64::from(i) / 4999.0).collect();
        let grid = crate::compat::py_grid(8);
        let levels = quantile_levels(&distinct, &grid);
        let count = *levels.last().unwrap() as usize + 1;
        let runs = distinct.len().div_ceil(distinct.len().div_ceil(MAX_LEVELS));
        assert!((runs..=runs + grid.len()).contains(&count), "{count}");
        for w in distinct.windows(2).zip(levels.windows(2)) {
            let ((a, b), (la, lb)) = ((w.0[0], w.0[1]), (w.1[0], w.1[1]));
            assert!(lb == la || lb == la + 1);
            if grid.iter().any(|&t| a <= t && t < b) {
                assert_eq!(lb, la + 1, "{a}..{b} straddles a grid point");
            }
        }
    }

    /// 6,000 rows of a continuous confidence (almost every row its own cell), two tasks, a
    /// few unknown confidences and ties on grid points.
    fn continuous_rows() -> Vec<crate::record::RoutingRecord> {
        (0..6000u32)
            .map(|i| {
                let p = f64::from((i * 7919) % 5999) / 5998.0;
                let p = if i % 97 == 0 { 0.25 } else { p };
                let verifier = if i % 41 == 0 {
                    VerifierScore::Unknown
                } else {
                    VerifierScore::Known(Confidence::new(p).unwrap())
                };
                let right = (i * 31) % 100 < (30.0 + 60.0 * p) as u32;
                let large = f64::from(u8::from(i % 6 != 0));
                let mut r =
                    crate::record::RoutingRecord::new(f64::from(u8::from(right)), large, verifier);
                r.task_name = Some(["a", "b"][(i % 2) as usize].into());
                r
            })
            .collect()
    }

    #[test]
    fn a_policy_trained_on_groups_decides_every_raw_row_as_its_group() {
        use crate::cost::CostModel;
        use crate::methods::{MethodKind, MethodSpec};
        let rows = continuous_rows();
        let data = crate::metrics::Dataset::new(&rows, &CostModel::default()).unwrap();
        let cells = data.cells_for(&[]);
        let groups = LevelGroups::new(&cells, &crate::compat::py_grid(8)).unwrap();
        assert!(groups.cells.keys.len() < cells.keys.len() / 2);
        let mut known: Vec<f64> = (rows.iter())
            .filter_map(|r| match r.verifier {
                VerifierScore::Known(p) => Some(p.get()),
                VerifierScore::Unknown => None,
            })
            .collect();
        known.sort_by(f64::total_cmp);
        known.dedup();
        let distinct = known.len();
        for kind in [MethodKind::Calibrated, MethodKind::Auto] {
            let mut spec = MethodSpec::new(kind, 8);
            spec.calibrated.per_task = true;
            let options = crate::train::TrainOptions::default();
            let policy =
                crate::train::train(&rows, &CostModel::default(), &spec, &options).unwrap();
            // `auto` may pick the paper's Threshold; `Calibrated` always has a curve.
            let cv = policy.summary.cross_validation.as_ref();
            let pooled = cv
                .and_then(|cv| cv.pooled)
                .expect("the summary names the pooling");
            assert_eq!(
                (pooled.distinct, pooled.groups),
                (distinct, groups.ranges.len())
            );
            let Some(calibration) = &policy.calibration else {
                assert_eq!(kind, MethodKind::Auto, "Calibrated trained no curve");
                continue;
            };
            // Every rule of the λ family, applied to the raw rows, escalates exactly the
            // share the family reports (computed on the groups' predictions).
            let sweep = calibration.model.sweep();
            assert_eq!(sweep.len(), calibration.lambdas.len());
            for ((_, rule), point) in sweep.iter().zip(&calibration.lambdas) {
                let escalated = (rows.iter())
                    .filter(|r| match r.verifier {
                        VerifierScore::Known(p) => rule.escalates(p, r.task_name.as_deref()),
                        VerifierScore::Unknown => options.unknown_confidence.escalates(),
                    })
                    .count();
                let rate = escalated as f64 / rows.len() as f64;
                assert!(
                    (rate - point.escalation_rate).abs() < 1e-12,
                    "{kind:?} {rate} {point:?}"
                );
            }
        }
    }
}
