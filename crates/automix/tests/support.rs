//! Shared builders for the integration tests of the runtime and of `automix-serve` (one file,
//! included by both test binaries).

use automix::dataset::{ModelRun, Tokens, TrainingRow, VerificationRecord};

/// One model's part of a synthetic training row.
pub struct Run<'a> {
    /// llm_data name.
    pub model: &'a str,
    /// Whether its answer is right (score 1 or 0).
    pub right: bool,
    /// Money per answer.
    pub cost: f64,
    /// The verifier's `p_ver`; `None` for a model that is not verified.
    pub confidence: Option<f64>,
}

/// A training row of task `task` with one run per model, cheapest first.
pub fn training_row(id: usize, task: &str, runs: &[Run<'_>]) -> TrainingRow {
    let models = runs
        .iter()
        .map(|r| ModelRun {
            model: r.model.into(),
            answer: String::new(),
            normalised_answer: String::new(),
            score: f64::from(r.right),
            tokens: Tokens {
                prompt: 10,
                completion: 1,
            },
            cost: r.cost,
            latency_ms: 1,
            verification: r.confidence.map(|p| VerificationRecord {
                samples: 3,
                correct: (p * 3.0).round() as u32,
                incorrect: 3 - (p * 3.0).round() as u32,
                unparsed: 0,
                p_ver: Some(p),
                logprob_p: None,
                logprob_source: String::new(),
                tokens: Tokens {
                    prompt: 30,
                    completion: 1,
                },
                cost: r.cost / 10.0,
            }),
        })
        .collect();
    TrainingRow {
        id: format!("r{id}"),
        task_name: task.into(),
        metric: "em_mc".into(),
        query: String::new(),
        ground_truth: "B".into(),
        split: "train".into(),
        models,
    }
}
