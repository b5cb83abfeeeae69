//! The cascade's cross-validation: the rows each fold reads, the out-of-fold nets of a
//! setting (per seeded assignment and per row), and the choices it makes with them: the
//! verifier bins jointly with the solver λ, then the per-task tables' κ.

use std::collections::BTreeMap;

use automix_core::cascade::{CascadeRow, run_one};
use automix_core::cascade_bins::{Binning, CascadeBins};

use crate::cascade::{CASCADE_FOLDS, SOLVER_LAMBDA_SCALES, solve_on};
use crate::cascade_tasks::{TaskShrink, policy_for, task_policies};
use crate::config::Config;
use crate::error::Result;

/// Verifier bin counts the cascade's cross-validation chooses from (with `hparam.num_bins`),
/// each with equal-width and with quantile edges: a fixed coarse count lumps the top of a
/// continuous confidence (on real chains most confidences of a strong small model sit at
/// the very top), a fine one needs rows, and quantile edges give a mass point its own bin.
const CASCADE_BIN_GRID: [usize; 4] = [4, 8, 16, 32];

/// The largest decision table a bin count may make: (bins + 2) symbols per verified model.
const MAX_HISTORIES: f64 = 2e5;

/// The bin counts tried for `models` models: the grid and `configured`, without those whose
/// observation histories would outgrow [`MAX_HISTORIES`] (the coarsest always stays).
fn bin_counts(configured: usize, models: usize) -> Vec<usize> {
    let mut counts: Vec<usize> = CASCADE_BIN_GRID
        .iter()
        .copied()
        .chain([configured])
        .collect();
    counts.sort_unstable();
    counts.dedup();
    let verified = models.saturating_sub(1) as i32;
    let fits = |b: usize| ((b + 2) as f64).powi(verified) <= MAX_HISTORIES;
    let smallest = counts[0];
    counts.retain(|b| fits(*b) || *b == smallest);
    counts
}

/// The rows the cascade's cross-validation splits: cascade rows and each row's task.
pub(crate) struct CvRows<'a> {
    pub(crate) rows: &'a [CascadeRow],
    /// `[assignment][fold]`: the rows as that fold sees them, where they differ per fold
    /// (a fusion's nested cross-fit); `None`: `rows` everywhere.
    pub(crate) per_fold: Option<&'a [Vec<Vec<CascadeRow>>]>,
    pub(crate) tasks: &'a [&'a str],
    pub(crate) assignments: &'a [Vec<usize>],
}

impl CvRows<'_> {
    /// The rows fold `f` of assignment `a` trains and is scored on.
    pub(crate) fn fold_rows(&self, a: usize, f: usize) -> &[CascadeRow] {
        fold_rows(self.rows, self.per_fold, (a, f))
    }
}

/// The rows fold `f` of assignment `a` reads: its own (`per_fold[a][f]`) where the rows
/// differ per fold, else `rows`. The solved table's and the chain's CVs both read this.
pub(crate) fn fold_rows<'a>(
    rows: &'a [CascadeRow],
    per_fold: Option<&'a [Vec<Vec<CascadeRow>>]>,
    (a, f): (usize, usize),
) -> &'a [CascadeRow] {
    let nested = per_fold.and_then(|p| p.get(a)?.get(f));
    nested.map_or(rows, Vec::as_slice)
}

/// Out-of-fold nets `quality − λ·cost` of one cascade setting: the mean per seeded
/// assignment, and each row's net averaged over the assignments (what the paired
/// comparison with a fixed model reads).
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct OutOfFoldNets {
    pub(crate) per_assignment: Vec<f64>,
    pub(crate) per_row: Vec<f64>,
}

impl OutOfFoldNets {
    pub(crate) fn zeros(assignments: usize, rows: usize) -> Self {
        Self {
            per_assignment: vec![0.0; assignments],
            per_row: vec![0.0; rows],
        }
    }

    /// Adds held-out row `i`'s net under assignment `a`.
    pub(crate) fn add(&mut self, (a, i): (usize, usize), net: f64) {
        self.per_assignment[a] += net;
        self.per_row[i] += net / self.per_assignment.len() as f64;
    }

    /// Turns the per-assignment sums into means over the rows.
    pub(crate) fn finish(mut self) -> Self {
        let n = self.per_row.len().max(1) as f64;
        self.per_assignment.iter_mut().for_each(|x| *x /= n);
        self
    }

    /// (mean, sd) over the assignments.
    pub(crate) fn mean_sd(&self) -> (f64, f64) {
        automix_core::calibrate::mean_sd(&self.per_assignment)
    }
}

/// Out-of-fold nets of the cascade solved with `solver_lambda` and `bins`, one per entry
/// of `routings`: `None` routes every held-out row by the pooled table, a [`TaskShrink`]
/// by its task's table fitted on the training folds. Each fold's pooled table is solved
/// once for all routings.
fn out_of_fold_nets(
    config: &Config,
    models: &[String],
    cv: &CvRows<'_>,
    (solver_lambda, bins): (f64, CascadeBins),
    (lambda, routings): (f64, &[Option<TaskShrink>]),
) -> Result<Vec<OutOfFoldNets>> {
    let empty = OutOfFoldNets::zeros(cv.assignments.len(), cv.rows.len());
    let mut nets = vec![empty; routings.len()];
    for (a, fold) in cv.assignments.iter().enumerate() {
        for f in 0..CASCADE_FOLDS {
            let (mut train, mut train_tasks, mut held) = (Vec::new(), Vec::new(), Vec::new());
            for (i, (r, t)) in cv.fold_rows(a, f).iter().zip(cv.tasks).enumerate() {
                if fold[i] == f {
                    held.push((i, r, *t));
                } else {
                    train.push(r.clone());
                    train_tasks.push(*t);
                }
            }
            if held.is_empty() || train.is_empty() {
                continue;
            }
            let policy = solve_on(config, models, &train, solver_lambda, bins)?;
            for (routing, net) in routings.iter().zip(&mut nets) {
                let tables = match routing {
                    Some(shrink) => task_policies(&policy, &train, &train_tasks, *shrink)?,
                    None => BTreeMap::new(),
                };
                for (i, r, task) in &held {
                    let (q, c, _) = run_one(policy_for(&policy, &tables, task), r);
                    net.add((a, *i), q - lambda * c);
                }
            }
        }
    }
    Ok(nets.into_iter().map(OutOfFoldNets::finish).collect())
}

/// What the per-task choice settled: the shrinkage (`None`: one pooled table), the solver
/// λ, the out-of-fold net (mean, sd) and each row's, the solver λs tried for the winner
/// with their nets, and every shrinkage tried with its best net.
pub(crate) struct TaskChoice {
    pub(crate) shrink: Option<TaskShrink>,
    pub(crate) solver_lambda: f64,
    pub(crate) net: (f64, f64),
    pub(crate) row_nets: Vec<f64>,
    pub(crate) lambdas: Vec<(f64, f64)>,
    pub(crate) tried: Vec<(TaskShrink, f64)>,
}

impl TaskChoice {
    /// One pooled table: the bins' choice.
    pub(crate) fn pooled(bins: &BinsChoice) -> Self {
        Self {
            shrink: None,
            solver_lambda: bins.solver_lambda,
            net: bins.net,
            row_nets: bins.row_nets.clone(),
            lambdas: bins.tried.clone(),
            tried: Vec::new(),
        }
    }
}

/// Per-task tables, chosen out of fold jointly with the solver λ (`scales` of the
/// objective's) at the chosen bins: every [`TaskShrink::candidates`], or the pooled table
/// unless one nets strictly more.
pub(crate) fn choose_task_shrink(
    config: &Config,
    models: &[String],
    cv: &CvRows<'_>,
    (bins, scales): (CascadeBins, &[f64]),
    (lambda, pooled): (f64, TaskChoice),
) -> Result<TaskChoice> {
    let distinct: std::collections::BTreeSet<&str> = cv.tasks.iter().copied().collect();
    if !config.hparam.per_task_prior || distinct.len() < 2 {
        return Ok(pooled);
    }
    let candidates: Vec<TaskShrink> = TaskShrink::candidates().collect();
    let routings: Vec<Option<TaskShrink>> = candidates.iter().copied().map(Some).collect();
    // [candidate][scale]: (solver λ, nets)
    let mut results = vec![Vec::new(); candidates.len()];
    for scale in scales {
        let point = (lambda * scale, bins);
        let nets = out_of_fold_nets(config, models, cv, point, (lambda, &routings))?;
        for (per_candidate, nets) in results.iter_mut().zip(nets) {
            per_candidate.push((point.0, nets));
        }
    }
    let mut best = pooled;
    for (shrink, per_scale) in candidates.iter().zip(&results) {
        let means: Vec<(f64, f64)> = per_scale.iter().map(|(l, n)| (*l, n.mean_sd().0)).collect();
        for (solver_lambda, nets) in per_scale {
            let (mean, sd) = nets.mean_sd();
            // Prior-only and stronger shrinkage come first and are kept on a tie.
            if mean > best.net.0 + 1e-12 {
                best.shrink = Some(*shrink);
                best.solver_lambda = *solver_lambda;
                best.net = (mean, sd);
                best.row_nets.clone_from(&nets.per_row);
                best.lambdas.clone_from(&means);
            }
        }
        let best_here = means.iter().map(|t| t.1).fold(f64::NEG_INFINITY, f64::max);
        best.tried.push((*shrink, best_here));
    }
    Ok(best)
}

/// What the bins' cross-validation settled: the solver λ and bins with the best
/// out-of-fold net (mean, sd) and each row's, the solver λs tried at those bins with
/// their nets, and the best net of every equal-width and quantile bin count.
pub(crate) struct BinsChoice {
    pub(crate) solver_lambda: f64,
    pub(crate) bins: CascadeBins,
    pub(crate) net: (f64, f64),
    pub(crate) row_nets: Vec<f64>,
    pub(crate) tried: Vec<(f64, f64)>,
    pub(crate) uniform: Vec<(usize, f64)>,
    pub(crate) quantile: Vec<(usize, f64)>,
}

/// The solver λ (`scales` of the objective's `lambda`) and the verifier bins, chosen
/// jointly out of fold with one pooled table.
pub(crate) fn choose_bins(
    config: &Config,
    models: &[String],
    cv_rows: &CvRows<'_>,
    scales: &[f64],
    lambda: f64,
) -> Result<BinsChoice> {
    let mut tried = Vec::new();
    let (mut bins_tried, mut quantile_bins_tried) = (Vec::new(), Vec::new());
    // (solver λ, bins, their nets)
    let mut best: Option<(f64, CascadeBins, OutOfFoldNets)> = None;
    let candidates = bin_counts(config.hparam.num_bins, models.len())
        .into_iter()
        .flat_map(|count| [CascadeBins::uniform(count), CascadeBins::quantile(count)]);
    for bins in candidates {
        let mut best_here = f64::NEG_INFINITY;
        for scale in scales {
            let point = (lambda * scale, bins);
            let nets = out_of_fold_nets(config, models, cv_rows, point, (lambda, &[None]))?;
            let Some(nets) = nets.into_iter().next() else {
                continue;
            };
            let mean = nets.mean_sd().0;
            tried.push((bins, point.0, mean));
            best_here = best_here.max(mean);
            // Coarser bins are tried first (equal-width before quantile) and kept on a tie:
            // the simpler model wins unless finer resolution is better out of fold.
            if best
                .as_ref()
                .is_none_or(|(_, _, b)| mean > b.mean_sd().0 + 1e-12)
            {
                best = Some((point.0, bins, nets));
            }
        }
        match bins.binning {
            Binning::Uniform => bins_tried.push((bins.count, best_here)),
            Binning::Quantile => quantile_bins_tried.push((bins.count, best_here)),
        }
    }
    let (solver_lambda, bins, net, row_nets) = match best {
        Some((l, b, nets)) => (l, b, nets.mean_sd(), nets.per_row),
        None => (
            lambda,
            CascadeBins::uniform(config.hparam.num_bins),
            (f64::NEG_INFINITY, 0.0),
            Vec::new(),
        ),
    };
    Ok(BinsChoice {
        solver_lambda,
        bins,
        net,
        row_nets,
        // The solver λs at the chosen bins (the other bins are in `uniform` / `quantile`).
        tried: tried
            .into_iter()
            .filter(|(b, _, _)| *b == bins)
            .map(|(_, l, m)| (l, m))
            .collect(),
        uniform: bins_tried,
        quantile: quantile_bins_tried,
    })
}

/// The multiples of `lambda` tried as the solver's λ (only λ itself at λ = 0).
pub(crate) fn solver_scales(lambda: f64) -> &'static [f64] {
    if lambda > 0.0 {
        &SOLVER_LAMBDA_SCALES
    } else {
        &[1.0]
    }
}
