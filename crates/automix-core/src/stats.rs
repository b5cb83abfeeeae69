//! Sufficient statistics of training rows: every method trains on cells, not rows.
//!
//! Every meta-verifier decides from a row's (confidence, task, fixed-answer flag) alone, so
//! rows sharing that triple are interchangeable for training: any rule sends all of them the
//! same way. [`crate::Dataset`] groups its rows into such cells in one pass when it is built
//! and keeps, per cell, the sums that every candidate, every λ of a sweep and every fold
//! needs: rows, score sums, per-category counts and gains, per-query costs. Scoring a
//! candidate is then O(cells) instead of O(rows); a k-vote verifier has k + 1 cells per task.
//!
//! **Rounding.** Sums are compensated ([`Sum`]). When every partial sum is representable
//! (0/1 or k/2^m scores, integer costs: the common case) they are exact, so means equal
//! numpy's pairwise-summed means to the last bit and the parity methods pick the same
//! parameters with the same ΔIBC bits (`parity::cell_sums_reproduce_…` checks every
//! candidate). With arbitrary float scores the two sums differ in the last bits (at most
//! 3e-14 in ΔIBC on the parity fixtures); the chosen candidates are the same, and they
//! could only differ where two candidates tie to within that rounding.

use std::borrow::Cow;

use rustc_hash::FxHashMap;

use crate::confidence::VerifierScore;
use crate::cost::QueryCosts;
use crate::metrics::{Baseline, Decision, Outcome};
use crate::record::Category;
use crate::rule::DecisionRule;

/// The task id of a row without a task.
pub(crate) const NO_TASK: u32 = u32::MAX;

/// A Neumaier-compensated sum: exact whenever every partial sum is representable, and
/// within 2 ulps of the exact sum otherwise, whatever the order of the terms.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub(crate) struct Sum {
    hi: f64,
    lo: f64,
}

impl Sum {
    #[inline]
    pub(crate) fn add(&mut self, v: f64) {
        let t = self.hi + v;
        if self.hi.abs() >= v.abs() {
            self.lo += (self.hi - t) + v;
        } else {
            self.lo += (v - t) + self.hi;
        }
        self.hi = t;
    }

    #[inline]
    pub(crate) fn merge(&mut self, other: Sum) {
        self.add(other.hi);
        self.lo += other.lo;
    }

    #[inline]
    fn remove(&mut self, other: Sum) {
        self.add(-other.hi);
        self.lo -= other.lo;
    }

    pub(crate) fn value(self) -> f64 {
        self.hi + self.lo
    }
}

/// What identifies a cell: rows with the same key are decided the same way by every rule.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct CellKey {
    /// The verifier's confidence.
    pub(crate) score: VerifierScore,
    /// Index into the task names, or [`NO_TASK`].
    pub(crate) task: u32,
    /// The small answer is one of the fixed answers that always escalate.
    pub(crate) forced: bool,
}

impl CellKey {
    fn hash_key(&self) -> HashKey {
        let bits = match self.score {
            VerifierScore::Known(p) => p.get().to_bits(),
            // Not the bits of any probability.
            VerifierScore::Unknown => u64::MAX,
        };
        (bits, self.task, self.forced)
    }

    /// The known confidence, if any.
    pub(crate) fn known(&self) -> Option<f64> {
        self.score.known()
    }
}

/// A [`CellKey`] as plain bits, for hashing.
type HashKey = (u64, u32, bool);

/// Whether `rule` escalates the rows of `key`: fixed answers always escalate, an unknown
/// confidence follows `unknown`, a known one the rule. The one place this rule lives for
/// training, evaluation and cross-validation.
pub(crate) fn escalates(
    rule: &DecisionRule,
    key: &CellKey,
    task: Option<&str>,
    unknown: Decision,
) -> bool {
    key.forced
        || match key.score {
            VerifierScore::Known(p) => rule.escalates(p, task),
            VerifierScore::Unknown => unknown.escalates(),
        }
}

/// Per-cell sums of the rows in it.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub(crate) struct CellSums {
    pub(crate) rows: u64,
    pub(crate) small: Sum,
    pub(crate) large: Sum,
    /// Rows per [`Category`], in [`Category::ALL`] order.
    pub(crate) states: [u64; 4],
    /// Σ(large − small) over the `Needy` rows (the only positive gains).
    pub(crate) needy_gain: Sum,
    /// Σ(large − small) over the `SmallBetter` rows (the only negative gains).
    pub(crate) small_better_gain: Sum,
    /// Per-query costs (zero under a uniform cost model).
    pub(crate) cost_small: Sum,
    pub(crate) cost_large: Sum,
    pub(crate) cost_verifier: Sum,
    /// Large-model cost of the rows the oracle escalates.
    pub(crate) oracle_cost_large: Sum,
}

impl CellSums {
    #[inline]
    pub(crate) fn add_row(&mut self, small: f64, large: f64, costs: Option<&QueryCosts>) {
        self.rows += 1;
        self.small.add(small);
        self.large.add(large);
        let state = Category::of(small, large);
        self.states[state.index()] += 1;
        match state {
            Category::Needy => self.needy_gain.add(large - small),
            Category::SmallBetter => self.small_better_gain.add(large - small),
            Category::Good | Category::Hopeless => {}
        }
        if let Some(c) = costs {
            self.cost_small.add(c.small);
            self.cost_large.add(c.large);
            self.cost_verifier.add(c.verifier);
            if state == Category::Needy {
                self.oracle_cost_large.add(c.large);
            }
        }
    }

    /// One row's sums: bit for bit `add_row` on the default. Why not call that: the first
    /// value a zero compensated sum takes is its `hi` (`0.0 + v`, which turns −0.0 into
    /// +0.0) with a +0.0 remainder, so a continuous confidence's one-row cells skip the
    /// compensated additions in the hot fold pass.
    #[inline]
    pub(crate) fn of_row(small: f64, large: f64, costs: Option<&QueryCosts>) -> Self {
        let one = |v: f64| Sum {
            hi: 0.0 + v,
            lo: 0.0,
        };
        let state = Category::of(small, large);
        let mut states = [0; 4];
        states[state.index()] = 1;
        let gain_if = |c: Category| {
            if state == c {
                one(large - small)
            } else {
                Sum::default()
            }
        };
        let cost = |f: fn(&QueryCosts) -> f64| costs.map_or(Sum::default(), |c| one(f(c)));
        Self {
            rows: 1,
            small: one(small),
            large: one(large),
            states,
            needy_gain: gain_if(Category::Needy),
            small_better_gain: gain_if(Category::SmallBetter),
            cost_small: cost(|c| c.small),
            cost_large: cost(|c| c.large),
            cost_verifier: cost(|c| c.verifier),
            oracle_cost_large: match (costs, state) {
                (Some(c), Category::Needy) => one(c.large),
                _ => Sum::default(),
            },
        }
    }

    pub(crate) fn merge(&mut self, o: &CellSums) {
        self.rows += o.rows;
        self.small.merge(o.small);
        self.large.merge(o.large);
        for (a, b) in self.states.iter_mut().zip(o.states) {
            *a += b;
        }
        self.needy_gain.merge(o.needy_gain);
        self.small_better_gain.merge(o.small_better_gain);
        self.cost_small.merge(o.cost_small);
        self.cost_large.merge(o.cost_large);
        self.cost_verifier.merge(o.cost_verifier);
        self.oracle_cost_large.merge(o.oracle_cost_large);
    }

    /// The sums of rows whose scores are all 0 or 1, from their count per category
    /// (`states`, in [`Category::ALL`] order), bit for bit those of adding the rows one by
    /// one: every partial sum is a small integer, so each compensated sum holds the count
    /// exactly with a zero (+0.0) remainder, and a sum no row touched stays +0.0.
    pub(crate) fn of_binary(states: [u64; 4]) -> Self {
        let count = |c: Category| states[c.index()];
        let sum = |k: u64, sign: f64| Sum {
            hi: if k == 0 { 0.0 } else { sign * k as f64 },
            lo: 0.0,
        };
        let (needy, good) = (count(Category::Needy), count(Category::Good));
        let small_better = count(Category::SmallBetter);
        Self {
            rows: states.iter().sum(),
            small: sum(good + small_better, 1.0),
            large: sum(good + needy, 1.0),
            states,
            needy_gain: sum(needy, 1.0),
            small_better_gain: sum(small_better, -1.0),
            ..Self::default()
        }
    }

    /// Takes out rows merged in before (`o` must be a part of `self`).
    fn remove(&mut self, o: &CellSums) {
        self.rows -= o.rows;
        self.small.remove(o.small);
        self.large.remove(o.large);
        for (a, b) in self.states.iter_mut().zip(o.states) {
            *a -= b;
        }
        self.needy_gain.remove(o.needy_gain);
        self.small_better_gain.remove(o.small_better_gain);
        self.cost_small.remove(o.cost_small);
        self.cost_large.remove(o.cost_large);
        self.cost_verifier.remove(o.cost_verifier);
        self.oracle_cost_large.remove(o.oracle_cost_large);
    }

    /// Σ(large − small).
    pub(crate) fn gain(&self) -> Sum {
        CellGain::of(self).gain()
    }
}

/// What a gain curve reads of a cell: its rows and the two gain sums, 40 bytes where a
/// [`CellSums`] is 168, so the training cells of every fold are cheap to take out (with a
/// continuous confidence every row is a cell).
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct CellGain {
    pub(crate) rows: u64,
    needy_gain: Sum,
    small_better_gain: Sum,
}

impl CellGain {
    pub(crate) fn of(s: &CellSums) -> Self {
        Self {
            rows: s.rows,
            needy_gain: s.needy_gain,
            small_better_gain: s.small_better_gain,
        }
    }

    /// Every cell's, in cell order.
    pub(crate) fn all(sums: &[CellSums]) -> Vec<Self> {
        sums.iter().map(Self::of).collect()
    }

    /// Σ(large − small).
    pub(crate) fn gain(&self) -> Sum {
        let mut g = self.needy_gain;
        g.merge(self.small_better_gain);
        g
    }

    /// `all` without the rows of `fold` (a part of them), as [`Cells::without`] takes
    /// them out of the full sums.
    pub(crate) fn without<'f>(
        all: &[CellGain],
        fold: impl IntoIterator<Item = &'f (u32, CellSums)>,
    ) -> Vec<CellGain> {
        let mut out = Vec::new();
        Self::without_into(&mut out, all, fold);
        out
    }

    /// [`CellGain::without`] into `out`, whose allocation is reused across folds.
    pub(crate) fn without_into<'f>(
        out: &mut Vec<CellGain>,
        all: &[CellGain],
        fold: impl IntoIterator<Item = &'f (u32, CellSums)>,
    ) {
        out.clear();
        out.extend_from_slice(all);
        for (cell, s) in fold {
            let g = &mut out[*cell as usize];
            g.rows -= s.rows;
            g.needy_gain.remove(s.needy_gain);
            g.small_better_gain.remove(s.small_better_gain);
        }
    }
}

/// The columns a grouping pass reads.
pub(crate) struct Columns<'a> {
    pub(crate) small: &'a [f64],
    pub(crate) large: &'a [f64],
    pub(crate) verifier: &'a [VerifierScore],
    pub(crate) task: &'a [u32],
    /// Per-query costs; empty under a uniform cost model.
    pub(crate) costs: &'a [QueryCosts],
    /// Every small and large score is 0 or 1 (correctness labels, the usual case).
    pub(crate) binary: bool,
}

/// Rows grouped into cells: the keys, the sums over every row, and each row's cell.
#[derive(Debug, Clone, Default)]
pub(crate) struct Cells {
    pub(crate) keys: Vec<CellKey>,
    pub(crate) sums: Vec<CellSums>,
    pub(crate) row_cell: Vec<u32>,
    /// Whether each row is its cell's only row (a continuous confidence's usual case), read
    /// in row order by [`Cells::fold_sums`]; empty for cells not grouped from rows.
    pub(crate) row_alone: Vec<bool>,
}

impl Cells {
    /// Groups every row in one pass (cells in order of first appearance). `forced(row)`
    /// marks fixed answers.
    pub(crate) fn group(cols: &Columns<'_>, forced: impl Fn(usize) -> bool) -> Self {
        let n = cols.small.len();
        let mut index: FxHashMap<HashKey, u32> = FxHashMap::default();
        let mut cells = Cells {
            row_cell: Vec::with_capacity(n),
            ..Self::default()
        };
        // A verifier has few distinct confidences: a small direct-mapped cache in front of
        // the map answers almost every row without hashing the full key.
        let mut cache: [Option<(HashKey, u32)>; 64] = [None; 64];
        for row in 0..n {
            let key = CellKey {
                score: cols.verifier[row],
                task: cols.task[row],
                forced: forced(row),
            };
            let hk = key.hash_key();
            let slot =
                (hk.0.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 58) as usize ^ (hk.1 as usize & 63);
            let cell = match cache[slot] {
                Some((k, c)) if k == hk => c,
                _ => {
                    let next = cells.keys.len() as u32;
                    let c = *index.entry(hk).or_insert(next);
                    if c == next {
                        cells.keys.push(key);
                        cells.sums.push(CellSums::default());
                    }
                    cache[slot] = Some((hk, c));
                    c
                }
            };
            cells.row_cell.push(cell);
            cells.sums[cell as usize].add_row(
                cols.small[row],
                cols.large[row],
                cols.costs.get(row),
            );
        }
        cells.row_alone = (cells.row_cell.iter())
            .map(|&c| cells.sums[c as usize].rows == 1)
            .collect();
        cells
    }

    /// The rows of every fold summed per cell, in one pass: `assignment[row]` is the fold
    /// of `row`. Sparse: a fold lists only the cells it has rows in.
    pub(crate) fn fold_sums(
        &self,
        cols: &Columns<'_>,
        assignment: &[usize],
        folds: usize,
    ) -> Vec<Vec<(u32, CellSums)>> {
        if !(cols.binary && cols.costs.is_empty()) {
            let add = |sums: &mut CellSums, row: usize| {
                sums.add_row(cols.small[row], cols.large[row], cols.costs.get(row));
            };
            let one = |row: usize| {
                CellSums::of_row(cols.small[row], cols.large[row], cols.costs.get(row))
            };
            return self.fold_sums_by(assignment, folds, (add, one));
        }
        // Binary scores under uniform costs: a cell's sums follow from its rows per
        // category, so the pass only counts them (the hot loop of `auto`'s cross-validation).
        let add = |states: &mut [u64; 4], row: usize| {
            states[Category::of(cols.small[row], cols.large[row]).index()] += 1;
        };
        let one = |row: usize| {
            let mut states = [0; 4];
            add(&mut states, row);
            states
        };
        let counts = self.fold_sums_by(assignment, folds, (add, one));
        (counts.into_iter())
            .map(|fold| {
                (fold.into_iter())
                    .map(|(cell, states)| (cell, CellSums::of_binary(states)))
                    .collect()
            })
            .collect()
    }

    /// [`Cells::fold_sums`] with `add(acc, row)` summing a row into its cell's accumulator
    /// and `one(row)` the accumulator of a cell that row is alone in (the same as `add` on
    /// the default).
    fn fold_sums_by<A: Copy + Default>(
        &self,
        assignment: &[usize],
        folds: usize,
        (add, one): (impl Fn(&mut A, usize), impl Fn(usize) -> A),
    ) -> Vec<Vec<(u32, A)>> {
        let cells = self.keys.len();
        // A cell's place in its fold's list, plus one (0: not yet there). Zeroed memory
        // is mapped lazily, so a continuous confidence's one-row cells never touch it.
        let mut slot = vec![0u32; cells * folds];
        let mut out: Vec<Vec<(u32, A)>> = vec![Vec::new(); folds];
        for (row, &fold) in assignment.iter().enumerate() {
            let cell = self.row_cell[row];
            if self.row_alone.get(row).copied().unwrap_or(false) {
                // The cell's one row: no other row of any fold shares the cell.
                out[fold].push((cell, one(row)));
                continue;
            }
            let s = &mut slot[fold * cells + cell as usize];
            if *s == 0 {
                out[fold].push((cell, A::default()));
                *s = out[fold].len() as u32;
            }
            add(&mut out[fold][*s as usize - 1].1, row);
        }
        out
    }

    /// The total ([`Stats::total`]) of the sums [`Cells::without`] would return for a fold
    /// given stably sorted by cell, bit for bit, without building them.
    pub(crate) fn total_without(&self, by_cell: &[&(u32, CellSums)]) -> CellSums {
        let mut total = CellSums::default();
        let mut next = 0;
        for (c, whole) in self.sums.iter().enumerate() {
            let mut s = *whole;
            while let Some((cell, part)) = by_cell.get(next).copied() {
                if *cell as usize != c {
                    break;
                }
                s.remove(part);
                next += 1;
            }
            total.merge(&s);
        }
        total
    }

    /// Every row's sums minus the rows of `fold`: the training part of a fold.
    pub(crate) fn without<'f>(
        &self,
        fold: impl IntoIterator<Item = &'f (u32, CellSums)>,
    ) -> Vec<CellSums> {
        let mut sums = self.sums.clone();
        for (cell, s) in fold {
            sums[*cell as usize].remove(s);
        }
        sums
    }
}

/// Cells merged where every rule of a threshold grid decides alike: known confidences with
/// the same grid points at or above them (`x ≤ t` for the same `t`), of the same task and
/// fixed-answer flag; unknown ones by task and flag. With a continuous confidence every row
/// is a cell, but the paper's Threshold on n bins tells at most n + 2 groups apart per
/// task, so `auto`'s Threshold challenger trains on groups (the same candidates, the same
/// rows behind each decision).
pub(crate) struct GridGroups {
    /// Each cell's group.
    group_of: Vec<u32>,
    /// The groups as cells: a member's key, every member's sums merged.
    pub(crate) cells: Cells,
}

impl GridGroups {
    /// The groups of `stats`' cells under the thresholds `grid`.
    pub(crate) fn new(stats: &Stats<'_>, grid: &[f64]) -> Self {
        let mut index: FxHashMap<(u32, bool, usize), u32> = FxHashMap::default();
        let mut cells = Cells::default();
        let group_of = (stats.keys.iter().zip(stats.sums.iter()))
            .map(|(key, sums)| {
                let above = key
                    .known()
                    .map_or(usize::MAX, |x| grid.partition_point(|&t| t < x));
                let next = cells.keys.len() as u32;
                let g = *index.entry((key.task, key.forced, above)).or_insert(next);
                if g == next {
                    cells.keys.push(*key);
                    cells.sums.push(CellSums::default());
                }
                cells.sums[g as usize].merge(sums);
                g
            })
            .collect();
        Self { group_of, cells }
    }

    /// The groups as training statistics (task names and costs as in `like`).
    pub(crate) fn stats<'a>(&'a self, like: &Stats<'a>) -> Stats<'a> {
        Stats {
            keys: &self.cells.keys,
            sums: Cow::Borrowed(&self.cells.sums),
            ..like.clone()
        }
    }

    /// Cell entries (a fold's) as group entries, merged per group in entry order.
    pub(crate) fn entries<'f>(
        &self,
        fold: impl IntoIterator<Item = &'f (u32, CellSums)>,
    ) -> Vec<(u32, CellSums)> {
        const NONE: u32 = u32::MAX;
        let mut slot = vec![NONE; self.cells.keys.len()];
        let mut out: Vec<(u32, CellSums)> = Vec::new();
        for (cell, sums) in fold {
            let g = self.group_of[*cell as usize];
            let s = &mut slot[g as usize];
            if *s == NONE {
                *s = out.len() as u32;
                out.push((g, CellSums::default()));
            }
            out[*s as usize].1.merge(sums);
        }
        out
    }
}

/// Training rows as cells: what every method trains and is scored on.
#[derive(Debug, Clone)]
pub(crate) struct Stats<'a> {
    pub(crate) keys: &'a [CellKey],
    pub(crate) sums: Cow<'a, [CellSums]>,
    pub(crate) task_names: &'a [String],
    /// The uniform per-query costs, or `None` for per-query costs (in the sums).
    pub(crate) uniform: Option<QueryCosts>,
}

/// Totals of a decision over some cells, before dividing by the row count.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Totals {
    pub(crate) rows: u64,
    pub(crate) served: Sum,
    pub(crate) cost: Sum,
    pub(crate) escalated: u64,
}

impl Totals {
    /// Adds `sums`' rows decided by `escalate`.
    #[inline]
    pub(crate) fn add(&mut self, sums: &CellSums, escalate: bool) {
        self.rows += sums.rows;
        self.cost.merge(sums.cost_small);
        self.cost.merge(sums.cost_verifier);
        if escalate {
            self.served.merge(sums.large);
            self.cost.merge(sums.cost_large);
            self.escalated += sums.rows;
        } else {
            self.served.merge(sums.small);
        }
    }

    /// Moves kept rows `sums` (added with `escalate = false`) to the escalated side.
    #[inline]
    pub(crate) fn escalate_kept(&mut self, sums: &CellSums) {
        self.served.remove(sums.small);
        self.served.merge(sums.large);
        self.cost.merge(sums.cost_large);
        self.escalated += sums.rows;
    }

    /// Means per row. Under uniform costs, the paper's arithmetic (whole-count totals, then
    /// the verifier), kept for bit parity.
    pub(crate) fn outcome(&self, uniform: Option<QueryCosts>) -> Outcome {
        let n = self.rows as f64;
        let n_esc = self.escalated as f64;
        let cost = match uniform {
            Some(c) => ((n - n_esc) * c.small + n_esc * (c.large + c.small)) / n + c.verifier,
            None => self.cost.value() / n,
        };
        Outcome {
            quality: self.served.value() / n,
            cost,
            escalation_rate: n_esc / n,
        }
    }
}

impl Stats<'_> {
    /// The name of a cell's task.
    pub(crate) fn task(&self, key: &CellKey) -> Option<&str> {
        self.task_names.get(key.task as usize).map(String::as_str)
    }

    /// Rows in these statistics.
    pub(crate) fn rows(&self) -> u64 {
        self.sums.iter().map(|s| s.rows).sum()
    }

    /// All cells merged.
    pub(crate) fn total(&self) -> CellSums {
        let mut t = CellSums::default();
        for s in self.sums.iter() {
            t.merge(s);
        }
        t
    }

    /// Totals of escalating the cells where `escalate(cell)` holds.
    pub(crate) fn totals(&self, mut escalate: impl FnMut(usize) -> bool) -> Totals {
        let mut t = Totals::default();
        for (c, sums) in self.sums.iter().enumerate() {
            if sums.rows > 0 {
                t.add(sums, escalate(c));
            }
        }
        t
    }

    /// Quality, cost and escalation rate of `rule`.
    pub(crate) fn outcome_of(&self, rule: &DecisionRule, unknown: Decision) -> Outcome {
        self.totals(|c| {
            let key = &self.keys[c];
            escalates(rule, key, self.task(key), unknown)
        })
        .outcome(self.uniform)
    }

    /// The small and large model alone.
    pub(crate) fn baseline(&self) -> Baseline {
        self.baseline_of(&self.total())
    }

    /// [`Stats::baseline`] from the already merged cells `t`.
    pub(crate) fn baseline_of(&self, t: &CellSums) -> Baseline {
        let n = t.rows as f64;
        let (small_cost, large_cost) = match self.uniform {
            Some(c) => (c.small, c.large),
            None => (t.cost_small.value() / n, t.cost_large.value() / n),
        };
        Baseline {
            small_quality: t.small.value() / n,
            large_quality: t.large.value() / n,
            small_cost,
            large_cost,
        }
    }

    /// The oracle: escalate exactly the rows where the large model scores higher.
    pub(crate) fn oracle(&self) -> Outcome {
        let t = self.total();
        let mut served = t.small;
        served.merge(t.needy_gain);
        let mut cost = t.cost_small;
        cost.merge(t.cost_verifier);
        cost.merge(t.oracle_cost_large);
        Totals {
            rows: t.rows,
            served,
            cost,
            escalated: t.states[Category::Needy.index()],
        }
        .outcome(self.uniform)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn compensated_sum_is_exact_where_naive_summation_drifts() {
        let mut s = Sum::default();
        let mut naive = 0.0;
        for _ in 0..10 {
            s.add(0.1);
            naive += 0.1;
        }
        assert_eq!(s.value(), 1.0);
        assert_ne!(naive, 1.0);
        let mut t = Sum::default();
        t.add(1e16);
        t.add(1.0);
        t.add(-1e16);
        assert_eq!(t.value(), 1.0);
    }

    #[test]
    fn removing_a_part_restores_the_rest_exactly_for_dyadic_terms() {
        let mut all = CellSums::default();
        let mut part = CellSums::default();
        for (i, (s, l)) in [(0.0, 1.0), (0.5, 0.25), (1.0, 1.0), (0.75, 0.0)]
            .into_iter()
            .enumerate()
        {
            all.add_row(s, l, None);
            if i % 2 == 0 {
                part.add_row(s, l, None);
            }
        }
        all.remove(&part);
        let mut rest = CellSums::default();
        rest.add_row(0.5, 0.25, None);
        rest.add_row(0.75, 0.0, None);
        assert_eq!(all, rest);
    }

    #[test]
    fn fold_sums_and_the_total_without_a_fold_are_the_slow_ways_bit_for_bit() {
        use crate::confidence::Confidence;
        use crate::metrics::Dataset;
        use crate::record::RoutingRecord;
        // One-row cells (a continuous part) beside shared ones (a few vote levels), with
        // scores that are not dyadic, so any change of order would show.
        let score = |i: usize| {
            let i = i as u32;
            let small = f64::from((i * 37) % 10) / 10.0 + 0.03;
            (small, f64::from((i * 11) % 7) / 7.0)
        };
        let rows: Vec<RoutingRecord> = (0..300u32)
            .map(|i| {
                let p = if i % 3 == 0 {
                    f64::from(i) / 301.0
                } else {
                    f64::from(i % 4) / 3.0
                };
                let verifier = VerifierScore::Known(Confidence::new(p).unwrap());
                let (small, large) = score(i as usize);
                RoutingRecord::new(small, large, verifier)
            })
            .collect();
        let data = Dataset::new(&rows, &crate::cost::CostModel::default()).unwrap();
        let cells = data.cells_for(&[]);
        assert!(cells.row_alone.iter().any(|&a| a) && cells.row_alone.iter().any(|&a| !a));
        let assignment: Vec<usize> = (0..rows.len()).map(|i| (i * 7) % 5).collect();
        let folds = data.fold_sums(&cells, &assignment, 5);
        for (f, fold) in folds.iter().enumerate() {
            let mut slow: Vec<(u32, CellSums)> = Vec::new();
            for row in (0..rows.len()).filter(|&r| assignment[r] == f) {
                let cell = cells.row_cell[row];
                let at = match slow.iter().position(|(c, _)| *c == cell) {
                    Some(at) => at,
                    None => {
                        slow.push((cell, CellSums::default()));
                        slow.len() - 1
                    }
                };
                let (small, large) = score(row);
                slow[at].1.add_row(small, large, None);
            }
            assert_eq!(fold, &slow, "fold {f}");
            let mut by_cell: Vec<&(u32, CellSums)> = fold.iter().collect();
            by_cell.sort_by_key(|(cell, _)| *cell);
            let stats = data.stats(&cells);
            let without = Stats {
                sums: std::borrow::Cow::Owned(cells.without(fold)),
                ..stats
            };
            assert_eq!(cells.total_without(&by_cell), without.total(), "fold {f}");
        }
    }

    #[test]
    fn one_rows_sums_are_add_row_on_the_default_bit_for_bit() {
        let values = [0.0, -0.0, 1.0, 0.3, 1e-300, -0.7, 5e-5];
        let costs = QueryCosts {
            small: -0.0,
            large: 2e-5,
            verifier: 0.0,
        };
        for &small in &values {
            for &large in &values {
                for costs in [None, Some(&costs)] {
                    let mut slow = CellSums::default();
                    slow.add_row(small, large, costs);
                    // Debug prints −0.0 apart from +0.0: a bit-level comparison.
                    let fast = CellSums::of_row(small, large, costs);
                    assert_eq!(format!("{fast:?}"), format!("{slow:?}"), "{small} {large}");
                }
            }
        }
    }

    #[test]
    fn binary_fold_sums_are_the_row_by_row_sums_bit_for_bit() {
        use crate::confidence::Confidence;
        use crate::metrics::Dataset;
        use crate::record::RoutingRecord;
        // Scores 0, -0 and 1 in every combination, shared and one-row cells.
        let rows: Vec<RoutingRecord> = (0..500u32)
            .map(|i| {
                let score = |k: u32| [0.0, 1.0, -0.0, 1.0][((i * k) % 7 % 4) as usize];
                let p = if i % 4 == 0 {
                    f64::from(i) / 501.0
                } else {
                    f64::from(i % 3) / 2.0
                };
                let verifier = VerifierScore::Known(Confidence::new(p).unwrap());
                RoutingRecord::new(score(31), score(17), verifier)
            })
            .collect();
        let data = Dataset::new(&rows, &crate::cost::CostModel::default()).unwrap();
        let cells = data.cells_for(&[]);
        assert!(data.columns().binary);
        let assignment: Vec<usize> = (0..rows.len()).map(|i| (i * 13) % 7).collect();
        let binary = data.fold_sums(&cells, &assignment, 7);
        let cols = Columns {
            binary: false,
            ..data.columns()
        };
        let row_by_row = cells.fold_sums(&cols, &assignment, 7);
        let bits = |s: Sum| (s.hi.to_bits(), s.lo.to_bits());
        for (fast, slow) in binary.iter().flatten().zip(row_by_row.iter().flatten()) {
            assert_eq!(fast, slow);
            let (a, b) = (fast.1, slow.1);
            for (x, y) in [
                (a.small, b.small),
                (a.large, b.large),
                (a.needy_gain, b.needy_gain),
                (a.small_better_gain, b.small_better_gain),
            ] {
                assert_eq!(bits(x), bits(y));
            }
        }
        assert_eq!(
            binary.iter().map(Vec::len).sum::<usize>(),
            row_by_row.iter().map(Vec::len).sum::<usize>()
        );
    }

    #[test]
    fn threshold_decides_its_grid_groups_as_it_decides_their_cells() {
        use crate::confidence::Confidence;
        use crate::metrics::Dataset;
        use crate::record::RoutingRecord;
        // A continuous confidence (every row its own cell), two tasks, some unknown, and
        // confidences exactly on the grid.
        let rows: Vec<RoutingRecord> = (0..400u32)
            .map(|i| {
                let p = f64::from((i * 7919) % 1000) / 999.0;
                let p = if i % 50 == 0 { 0.25 } else { p };
                let verifier = if i % 37 == 0 {
                    VerifierScore::Unknown
                } else {
                    VerifierScore::Known(Confidence::new(p).unwrap())
                };
                let small = f64::from(u8::from((i * 31) % 100 < (40.0 + 50.0 * p) as u32));
                let mut r = RoutingRecord::new(small, f64::from(u8::from(i % 5 != 0)), verifier);
                r.task_name = Some(["a", "b"][(i % 2) as usize].into());
                r
            })
            .collect();
        let data = Dataset::new(&rows, &crate::cost::CostModel::default()).unwrap();
        let cells = data.cells_for(&[]);
        let stats = data.stats(&cells);
        let groups = GridGroups::new(&stats, &crate::compat::py_grid(8));
        let grouped = groups.stats(&stats);
        assert!(groups.cells.keys.len() <= 2 * (8 + 2) && grouped.rows() == 400);
        let spec = crate::methods::MethodSpec::new(crate::methods::MethodKind::Threshold, 8);
        let options = crate::train::TrainOptions::default();
        let on_cells = crate::train::train_stats(&stats, &spec, &options).unwrap();
        let on_groups = crate::train::train_stats(&grouped, &spec, &options).unwrap();
        assert_eq!(on_cells.0.rule, on_groups.0.rule);
        for t in crate::compat::py_grid(8) {
            let rule = DecisionRule::Threshold { threshold: t };
            let a = stats.outcome_of(&rule, Decision::Escalate);
            let b = grouped.outcome_of(&rule, Decision::Escalate);
            assert!((a.quality - b.quality).abs() < 1e-12, "{t}: {a:?} {b:?}");
            assert_eq!(a.escalation_rate, b.escalation_rate);
        }
        // A fold's entries land in their groups.
        let fold: Vec<(u32, CellSums)> = (0..stats.keys.len() as u32)
            .step_by(3)
            .map(|c| (c, stats.sums[c as usize]))
            .collect();
        let rows_of = |e: &[(u32, CellSums)]| e.iter().map(|(_, s)| s.rows).sum::<u64>();
        assert_eq!(rows_of(&groups.entries(&fold)), rows_of(&fold));
    }
}
