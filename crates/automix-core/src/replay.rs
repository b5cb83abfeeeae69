//! Offline replays of cascade rules on recorded rows, and the per-model rates the online
//! belief starts from: pure statistics shared by training, evaluation and the router.

use std::collections::BTreeMap;

use crate::belief::ModelRates;
use crate::cascade::{
    CascadeRow, CascadeSettings, StartChoice, estimate_cascade_binned, solve_cascade,
};
use crate::cascade_bins::CascadeBins;
use crate::confidence::VERDICT_CUT;
use crate::error::Result;

/// What a rule did on a set of rows: mean quality and cost, and the share of rows that
/// reached each model.
#[derive(Debug, Clone, PartialEq)]
pub struct Replay {
    /// Mean score of the kept answers.
    pub quality: f64,
    /// Mean cost (answers and verifications).
    pub cost: f64,
    /// Share of rows that called each model.
    pub reached: Vec<f64>,
}

/// Semantic Router's simple rule over `n` models: escalate to the next model while the
/// confidence is below `threshold`, at most `max_escalations` times. An unknown confidence
/// escalates (there is no positive verdict to keep on).
pub fn threshold_replay(
    rows: &[CascadeRow],
    n: usize,
    threshold: f64,
    max_escalations: usize,
) -> Replay {
    let len = rows.len().max(1) as f64;
    let (mut q, mut c, mut reached) = (0.0, 0.0, vec![0.0; n]);
    for r in rows {
        let mut i = 0;
        loop {
            reached[i] += 1.0 / len;
            c += r.answer_costs[i];
            if i + 1 == n || i >= max_escalations {
                break;
            }
            c += r.verify_costs[i];
            if r.confidences[i].is_some_and(|p| p >= threshold) {
                break;
            }
            i += 1;
        }
        q += r.scores[i];
    }
    Replay {
        quality: q / len,
        cost: c / len,
        reached,
    }
}

/// The oracle: the best score of any model, at the cost of the cheapest model that is right
/// (the first one if none is).
pub fn oracle_replay(rows: &[CascadeRow], n: usize) -> Replay {
    let len = rows.len().max(1) as f64;
    let (mut q, mut c, mut reached) = (0.0, 0.0, vec![0.0; n]);
    for r in rows {
        let j = r.scores.iter().position(|s| *s >= VERDICT_CUT).unwrap_or(0);
        q += r.scores.iter().copied().fold(0.0, f64::max);
        c += r.answer_costs[j];
        reached[j] += 1.0 / len;
    }
    Replay {
        quality: q / len,
        cost: c / len,
        reached,
    }
}

/// Always calling model `j` of `n`, unverified.
pub fn fixed_replay(rows: &[CascadeRow], j: usize, n: usize) -> Replay {
    let len = rows.len().max(1) as f64;
    let mut reached = vec![0.0; n];
    reached[j] = 1.0;
    Replay {
        quality: rows.iter().map(|r| r.scores[j]).sum::<f64>() / len,
        cost: rows.iter().map(|r| r.answer_costs[j]).sum::<f64>() / len,
        reached,
    }
}

/// Laplace-smoothed success rate and verifier true/false-positive rates per model (a verdict
/// is positive when the confidence is at least [`VERDICT_CUT`]; unknown confidences are not
/// verdicts).
pub fn model_rates(rows: &[CascadeRow], n: usize) -> ModelRates {
    let mut rates = ModelRates {
        theta: Vec::with_capacity(n),
        tpr: Vec::with_capacity(n),
        fpr: Vec::with_capacity(n),
        evidence: rows.len(),
    };
    for m in 0..n {
        let (mut right, mut pos_right, mut n_right, mut pos_wrong, mut n_wrong) =
            (0.0, 0.0, 0.0, 0.0, 0.0);
        for r in rows {
            let ok = r.scores[m] >= VERDICT_CUT;
            right += f64::from(ok);
            if let Some(p) = r.confidences.get(m).copied().flatten() {
                let positive = f64::from(p >= VERDICT_CUT);
                if ok {
                    pos_right += positive;
                    n_right += 1.0;
                } else {
                    pos_wrong += positive;
                    n_wrong += 1.0;
                }
            }
        }
        rates.theta.push((right + 1.0) / (rows.len() as f64 + 2.0));
        rates.tpr.push((pos_right + 1.0) / (n_right + 2.0));
        rates.fpr.push((pos_wrong + 1.0) / (n_wrong + 2.0));
    }
    rates
}

/// The start each task's own rows choose: the cascade estimated and solved on that task
/// alone. Tasks with fewer than `min_rows` rows are left out (they keep the global start).
pub fn task_starts(
    models: &[String],
    by_task: &BTreeMap<String, Vec<CascadeRow>>,
    bins: CascadeBins,
    smoothing: f64,
    settings: CascadeSettings,
    min_rows: usize,
) -> Result<BTreeMap<String, StartChoice>> {
    let mut starts = BTreeMap::new();
    for (task, rows) in by_task.iter().filter(|(_, rows)| rows.len() >= min_rows) {
        let model = estimate_cascade_binned(models, rows, bins, smoothing)?;
        starts.insert(task.clone(), solve_cascade(&model, settings)?.start);
    }
    Ok(starts)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(scores: [f64; 2], confidence: Option<f64>) -> CascadeRow {
        CascadeRow {
            scores: scores.to_vec(),
            confidences: vec![confidence, None],
            answer_costs: vec![1.0, 10.0],
            verify_costs: vec![0.5, 0.0],
            confidences_jumped: Vec::new(),
        }
    }

    #[test]
    fn replays_count_quality_cost_and_reach() {
        let rows = [row([1.0, 1.0], Some(0.9)), row([0.0, 1.0], Some(0.1))];
        let t = threshold_replay(&rows, 2, 0.5, 2);
        assert_eq!(t.quality, 1.0);
        assert_eq!(t.cost, (1.5 + 11.5) / 2.0);
        assert_eq!(t.reached, vec![1.0, 0.5]);
        let capped = threshold_replay(&rows, 2, 0.5, 0);
        assert_eq!((capped.quality, capped.cost), (0.5, 1.0));
        let o = oracle_replay(&rows, 2);
        assert_eq!((o.quality, o.cost, o.reached), (1.0, 5.5, vec![0.5, 0.5]));
        assert_eq!(fixed_replay(&rows, 1, 2).cost, 10.0);
        let rates = model_rates(&rows, 2);
        assert_eq!(rates.theta, vec![0.5, 0.75]);
        assert_eq!((rates.tpr[0], rates.fpr[0]), (2.0 / 3.0, 1.0 / 3.0));
    }
}
