//! The belief replicas share: counts of what was observed per model, folded into a conjugate
//! (Beta) posterior around the trained rates. Counts add exactly and in any order, so
//! replicas that hold the same counts hold the same posterior and solve the same table.
//!
//! Why counts and not particles: a particle cloud cannot be merged from concurrent updates
//! without losing some, and resampling is random; a sum of counts is exact under concurrent
//! increments (Redis `HINCRBY`) and the posterior of a sum is deterministic.
//!
//! What counts: an observation whose correctness is known (ground truth, or a client's
//! feedback). Its model's success count moves; if the model was verified, the verifier's
//! true- or false-positive count moves too. A verdict without known correctness cannot
//! update a conjugate posterior exactly and is not counted.

use serde::{Deserialize, Serialize};

use crate::belief::{ModelRates, StepObservation, cascade_from_rates};
use crate::cascade::{CascadePolicy, CascadeSettings, solve_cascade};
use crate::confidence::VERDICT_CUT;
use crate::error::Result;

/// Pseudo-rows the trained rates weigh at most: enough to start where training left off,
/// few enough that live evidence moves the posterior within a few dozen queries.
pub const MAX_PRIOR_ROWS: f64 = 50.0;

/// Per-model observation counts.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ModelCounts {
    /// Answers known to be correct.
    pub correct: u64,
    /// Answers known to be wrong.
    pub wrong: u64,
    /// Positive verdicts on correct answers.
    pub true_positive: u64,
    /// Negative verdicts on correct answers.
    pub false_negative: u64,
    /// Positive verdicts on wrong answers.
    pub false_positive: u64,
    /// Negative verdicts on wrong answers.
    pub true_negative: u64,
}

impl ModelCounts {
    /// The counts as named fields, for stores that keep them by name.
    pub fn fields(&self) -> [(&'static str, u64); 6] {
        [
            ("correct", self.correct),
            ("wrong", self.wrong),
            ("tp", self.true_positive),
            ("fn", self.false_negative),
            ("fp", self.false_positive),
            ("tn", self.true_negative),
        ]
    }

    /// Sets the field called `name` (see [`ModelCounts::fields`]); false for an unknown name.
    pub fn set(&mut self, name: &str, value: u64) -> bool {
        let slot = match name {
            "correct" => &mut self.correct,
            "wrong" => &mut self.wrong,
            "tp" => &mut self.true_positive,
            "fn" => &mut self.false_negative,
            "fp" => &mut self.false_positive,
            "tn" => &mut self.true_negative,
            _ => return false,
        };
        *slot = value;
        true
    }
}

/// Counts of every model, and how many observations were folded in.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct BeliefCounts {
    /// Per model, cheapest first.
    pub models: Vec<ModelCounts>,
    /// Observations counted.
    pub updates: u64,
}

impl BeliefCounts {
    /// Zero counts for `models` models.
    pub fn new(models: usize) -> Self {
        Self {
            models: vec![ModelCounts::default(); models],
            updates: 0,
        }
    }

    /// Whether nothing is counted.
    pub fn is_empty(&self) -> bool {
        self.updates == 0
    }

    /// Counts the observations whose correctness is known; returns how many counted.
    pub fn observe(&mut self, observations: &[StepObservation]) -> u64 {
        let mut counted = 0;
        for o in observations {
            let (Some(correct), Some(m)) = (o.correct, self.models.get_mut(o.model)) else {
                continue;
            };
            if correct {
                m.correct += 1;
            } else {
                m.wrong += 1;
            }
            match (o.verdict, correct) {
                (Some(true), true) => m.true_positive += 1,
                (Some(false), true) => m.false_negative += 1,
                (Some(true), false) => m.false_positive += 1,
                (Some(false), false) => m.true_negative += 1,
                (None, _) => {}
            }
            counted += 1;
        }
        self.updates += counted;
        counted
    }

    /// Adds `other`'s counts (same models).
    pub fn merge(&mut self, other: &BeliefCounts) {
        for (a, b) in self.models.iter_mut().zip(&other.models) {
            a.correct += b.correct;
            a.wrong += b.wrong;
            a.true_positive += b.true_positive;
            a.false_negative += b.false_negative;
            a.false_positive += b.false_positive;
            a.true_negative += b.true_negative;
        }
        self.updates += other.updates;
    }

    /// The posterior mean rates: `prior` as at most [`MAX_PRIOR_ROWS`] pseudo-rows, plus the
    /// counts.
    pub fn posterior(&self, prior: &ModelRates) -> ModelRates {
        let w = (prior.evidence as f64).clamp(1.0, MAX_PRIOR_ROWS);
        let mean = |p: f64, yes: u64, no: u64| (p * w + yes as f64) / (w + (yes + no) as f64);
        let mut out = ModelRates {
            theta: Vec::new(),
            tpr: Vec::new(),
            fpr: Vec::new(),
            evidence: prior.evidence + self.updates as usize,
        };
        for (i, c) in self.models.iter().enumerate() {
            let at = |v: &[f64]| v.get(i).copied().unwrap_or(VERDICT_CUT);
            out.theta.push(mean(at(&prior.theta), c.correct, c.wrong));
            out.tpr
                .push(mean(at(&prior.tpr), c.true_positive, c.false_negative));
            out.fpr
                .push(mean(at(&prior.fpr), c.false_positive, c.true_negative));
        }
        out
    }
}

/// The table the shared belief implies: the cascade solved from the posterior rates.
pub fn shared_table(
    names: &[String],
    answer_cost: &[f64],
    verify_cost: &[f64],
    settings: CascadeSettings,
    prior: &ModelRates,
    counts: &BeliefCounts,
) -> Result<CascadePolicy> {
    let r = counts.posterior(prior);
    let model = cascade_from_rates(names, &r.theta, &r.tpr, &r.fpr, answer_cost, verify_cost);
    solve_cascade(&model, settings)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn prior() -> ModelRates {
        ModelRates {
            theta: vec![0.9, 0.95],
            tpr: vec![0.8, 0.5],
            fpr: vec![0.2, 0.5],
            evidence: 300,
        }
    }

    #[test]
    fn counts_add_in_any_order_and_give_the_same_table() {
        let obs = |m, v, c| StepObservation {
            model: m,
            verdict: v,
            correct: c,
        };
        let batches = [
            vec![obs(0, Some(true), Some(false)), obs(1, None, Some(true))],
            vec![obs(0, Some(false), Some(false))],
            vec![obs(0, Some(true), None)], // not counted: correctness unknown
        ];
        let mut a = BeliefCounts::new(2);
        let mut b = BeliefCounts::new(2);
        for batch in &batches {
            a.observe(batch);
        }
        for batch in batches.iter().rev() {
            let mut part = BeliefCounts::new(2);
            part.observe(batch);
            b.merge(&part);
        }
        assert_eq!(a, b);
        assert_eq!(a.updates, 3);
        assert_eq!(a.models[0].wrong, 2);
        let names = ["s".to_string(), "l".to_string()];
        let table = |c: &BeliefCounts| {
            shared_table(
                &names,
                &[1.0, 10.0],
                &[0.1, 0.0],
                CascadeSettings::default(),
                &prior(),
                c,
            )
            .unwrap()
        };
        assert_eq!(table(&a), table(&b));
    }

    #[test]
    fn evidence_moves_the_posterior_off_the_prior() {
        let mut c = BeliefCounts::new(2);
        let wrong = StepObservation {
            model: 0,
            verdict: Some(true),
            correct: Some(false),
        };
        for _ in 0..100 {
            c.observe(&[wrong]);
        }
        let r = c.posterior(&prior());
        assert!(r.theta[0] < 0.4, "{r:?}");
        assert!(r.fpr[0] > 0.6, "{r:?}");
        assert_eq!(r.theta[1], 0.95, "model 1 saw nothing");
    }
}
