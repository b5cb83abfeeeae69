//! Per-task cascade tables: each task's table is solved from the pooled cascade model with
//! that task's own prior over which models are right, shrunk toward the pooled prior by κ
//! pseudo-rows: the two-model path's per-task curves, for the cascade. Tasks differ most in
//! how often each model is right (a strong small model on one task, a hopeless one on
//! another); the verifier's observation models, the qualities and the costs need more rows
//! per cell, so they stay pooled. κ, or no per-task tables at all, is chosen by the same
//! cross-validation as the solver's λ and the bins.

use std::collections::BTreeMap;

use automix_core::cascade::{
    CascadeModel, CascadeOutcome, CascadePolicy, CascadeRow, simulate_cascade_by, solve_cascade,
};

use crate::error::Result;

/// Shrinkage strengths tried (pseudo-rows of the pooled prior per task), strong to weak.
pub const TASK_KAPPAS: [f64; 3] = [100.0, 30.0, 10.0];

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

/// One table per task with at least [`TASK_TABLE_MIN_ROWS`] rows: the pooled model with the
/// task's shrunk prior, solved with the pooled table's settings. `tasks[i]` is row i's task.
pub fn task_policies(
    pooled: &CascadePolicy,
    rows: &[CascadeRow],
    tasks: &[&str],
    kappa: f64,
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
        let model = CascadeModel {
            prior: shrunk_prior(&pooled.model.prior, rows.into_iter(), kappa),
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
}
