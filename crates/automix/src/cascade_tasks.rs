//! Per-task cascade tables: each task's table is solved from the pooled cascade model with
//! that task's own prior over which models are right and, optionally, its own verifier
//! observation models, each shrunk toward the pooled one by κ pseudo-rows: the two-model
//! path's per-task curves, for the cascade. Tasks differ most in how often each model is
//! right (a strong small model on one task, a hopeless one on another); a verifier's
//! confidence can also mean different things per task (a 0.9 that is nearly always right on
//! one, a coin flip on another), but its cells need more rows. The qualities and the costs
//! stay pooled. Whether to take the task's prior, its prior and observations, at which κ, or
//! no per-task tables at all, is chosen by the same cross-validation as the solver's λ and
//! the bins.

use std::collections::BTreeMap;

use automix_core::cascade::{
    CascadeModel, CascadeOutcome, CascadePolicy, CascadeRow, finish_observation,
    simulate_cascade_by, solve_cascade,
};
use serde::{Deserialize, Serialize};

use crate::error::Result;

/// Shrinkage strengths tried (pseudo-rows of the pooled model per task), strong to weak.
pub const TASK_KAPPAS: [f64; 3] = [100.0, 30.0, 10.0];

/// What a task's table takes from its own rows, and how strongly it is held to the pooled
/// model.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct TaskShrink {
    /// Pseudo-rows of the pooled model per task (per correctness class for observations).
    pub kappa: f64,
    /// The verifiers' observation models are the task's too (else only its prior).
    pub observation: bool,
}

impl TaskShrink {
    /// Every shrinkage cross-validation tries: each κ, prior only and with observations.
    pub fn candidates() -> impl Iterator<Item = TaskShrink> {
        [false, true].into_iter().flat_map(|observation| {
            TASK_KAPPAS
                .into_iter()
                .map(move |kappa| TaskShrink { kappa, observation })
        })
    }
}

/// Tasks with fewer training rows keep the pooled table.
pub const TASK_TABLE_MIN_ROWS: usize = 20;

/// The hidden-state prior of one task's `rows`, shrunk toward `pooled` by `kappa`
/// pseudo-rows.
pub fn shrunk_prior<'a>(
    pooled: &[f64],
    rows: impl Iterator<Item = &'a CascadeRow>,
    kappa: f64,
) -> Vec<f64> {
    let mut counts: Vec<f64> = pooled.iter().map(|p| kappa * p).collect();
    for r in rows {
        if let Some(c) = counts.get_mut(r.state()) {
            *c += 1.0;
        }
    }
    let total: f64 = counts.iter().sum();
    counts.iter().map(|c| c / total).collect()
}

/// The verifiers' observation models of one task's `rows`, each (model, correctness) class
/// shrunk toward `pooled`'s by `kappa` pseudo-rows and kept monotone as the pooled ones are.
/// Symbols are the pooled model's (its bins and edges), so a live table reads the same
/// confidence the same way.
pub fn shrunk_observation(
    pooled: &CascadeModel,
    rows: &[&CascadeRow],
    kappa: f64,
) -> Vec<Vec<Vec<f64>>> {
    let mut counts: Vec<Vec<Vec<f64>>> = pooled
        .observation
        .iter()
        .map(|classes| {
            classes
                .iter()
                .map(|p| p.iter().map(|x| kappa * x).collect())
                .collect()
        })
        .collect();
    for r in rows {
        let v = r.state();
        for (i, classes) in counts.iter_mut().enumerate() {
            let c = (v >> i) & 1;
            let o = pooled.symbol(i, r.confidences.get(i).copied().flatten());
            if let Some(cell) = classes.get_mut(c).and_then(|row| row.get_mut(o)) {
                *cell += 1.0;
            }
        }
    }
    finish_observation(&mut counts);
    counts
}

/// One table per task with at least [`TASK_TABLE_MIN_ROWS`] rows: the pooled model with the
/// task's shrunk prior (and observations, if `shrink` says so), solved with the pooled
/// table's settings. `tasks[i]` is row i's task.
pub fn task_policies(
    pooled: &CascadePolicy,
    rows: &[CascadeRow],
    tasks: &[&str],
    shrink: TaskShrink,
) -> Result<BTreeMap<String, CascadePolicy>> {
    let mut by_task: BTreeMap<&str, Vec<&CascadeRow>> = BTreeMap::new();
    for (row, task) in rows.iter().zip(tasks) {
        by_task.entry(task).or_default().push(row);
    }
    let mut out = BTreeMap::new();
    for (task, rows) in by_task
        .into_iter()
        .filter(|(_, r)| r.len() >= TASK_TABLE_MIN_ROWS)
    {
        let observation = if shrink.observation {
            shrunk_observation(&pooled.model, &rows, shrink.kappa)
        } else {
            pooled.model.observation.clone()
        };
        let model = CascadeModel {
            prior: shrunk_prior(&pooled.model.prior, rows.iter().copied(), shrink.kappa),
            observation,
            ..pooled.model.clone()
        };
        out.insert(task.to_owned(), solve_cascade(&model, pooled.settings)?);
    }
    Ok(out)
}

/// The table a query of `task` routes with: its task's, else the pooled one.
pub fn policy_for<'a>(
    pooled: &'a CascadePolicy,
    tasks: &'a BTreeMap<String, CascadePolicy>,
    task: &str,
) -> &'a CascadePolicy {
    tasks.get(task).unwrap_or(pooled)
}

/// [`automix_core::cascade::simulate_cascade`] with each row routed by its task's table.
pub fn simulate_by_task(
    pooled: &CascadePolicy,
    tasks: &BTreeMap<String, CascadePolicy>,
    rows: &[CascadeRow],
    row_tasks: &[&str],
) -> CascadeOutcome {
    simulate_cascade_by(rows, pooled.model.len(), |i| {
        policy_for(pooled, tasks, row_tasks.get(i).copied().unwrap_or(""))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(scores: [f64; 2]) -> CascadeRow {
        CascadeRow {
            scores: scores.to_vec(),
            confidences: vec![Some(0.5), None],
            answer_costs: vec![0.1, 1.0],
            verify_costs: vec![0.01, 0.0],
            confidences_jumped: Vec::new(),
        }
    }

    #[test]
    fn the_prior_moves_from_the_pooled_one_toward_the_task_with_its_rows() {
        let pooled = [0.25; 4];
        let task = vec![row([1.0, 1.0]); 30];
        let strong = shrunk_prior(&pooled, task.iter(), 1e6);
        let weak = shrunk_prior(&pooled, task.iter(), 1.0);
        assert!((strong[3] - 0.25).abs() < 1e-3);
        assert!(weak[3] > 0.9);
        assert!((weak.iter().sum::<f64>() - 1.0).abs() < 1e-12);
    }

    #[test]
    fn a_task_where_the_verifier_means_more_moves_its_observations_and_stays_a_distribution() {
        let rows = vec![
            row([0.0, 1.0]),
            row([1.0, 1.0]),
            CascadeRow {
                confidences: vec![Some(0.0), None],
                ..row([0.0, 1.0])
            },
            CascadeRow {
                confidences: vec![Some(1.0), None],
                ..row([1.0, 1.0])
            },
        ];
        let pooled = automix_core::cascade::estimate_cascade(
            &["small".into(), "large".into()],
            &rows,
            4,
            1.0,
        )
        .unwrap();
        // This task's right answers all say 1.0 and its wrong ones 0.0.
        let task: Vec<CascadeRow> = (0..40)
            .map(|i| CascadeRow {
                confidences: vec![Some(if i % 2 == 0 { 1.0 } else { 0.0 }), None],
                ..row([if i % 2 == 0 { 1.0 } else { 0.0 }, 1.0])
            })
            .collect();
        let refs: Vec<&CascadeRow> = task.iter().collect();
        let weak = shrunk_observation(&pooled, &refs, 1.0);
        let strong = shrunk_observation(&pooled, &refs, 1e6);
        let top = pooled.symbol(0, Some(1.0));
        assert!(weak[0][1][top] > 0.9, "{weak:?}");
        assert!(weak[0][0][top] < 0.1, "{weak:?}");
        assert!((strong[0][1][top] - pooled.observation[0][1][top]).abs() < 1e-3);
        for class in &weak[0] {
            assert!((class.iter().sum::<f64>() - 1.0).abs() < 1e-12);
        }
    }
}
