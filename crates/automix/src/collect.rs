//! `collect`: every configured model answers each query, each model but the last verifies
//! its own answer (k samples and logprob), answers are scored; rows are written atomically
//! and the run resumes where it stopped.

use std::collections::{BTreeMap, HashSet};
use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use futures::StreamExt;
use serde::{Deserialize, Serialize};

use automix_verify::{CalibrationReport, PromptSet};

use crate::config::{AutomixSettings, CollectSettings};
use crate::dataset::{
    LabelSource, ModelRun, QueryRow, TrainingRow, read_training_rows, write_jsonl,
};
use crate::error::{AutomixError, Result};
use crate::models::{ModelHandle, ModelSet};
use crate::pipeline::{AnswerSource, answer_budget, ask, verifier_for};
use crate::signal::SignalInput;
use crate::task_metric::TaskMetric;

/// What `collect` needs besides the queries.
#[derive(Debug, Clone)]
pub struct CollectJob {
    /// The models, cheapest first.
    pub models: ModelSet,
    /// Prompts.
    pub prompts: Arc<PromptSet>,
    /// Verification settings.
    pub automix: AutomixSettings,
    /// Collection settings.
    pub collect: CollectSettings,
    /// Queries in flight at once.
    pub max_workers: usize,
    /// How answers are scored: against ground truth, or by agreement (`collect --unlabelled`).
    pub labels: LabelSource,
}

/// The queries `collect` will run: supported metrics, chosen tasks, `per_task` each after a
/// seeded shuffle, short enough. Returns them and the tasks skipped with the reason.
pub fn select_queries(
    queries: Vec<QueryRow>,
    settings: &CollectSettings,
    labels: LabelSource,
) -> (Vec<QueryRow>, BTreeMap<String, String>) {
    let mut skipped = BTreeMap::new();
    let mut by_task: BTreeMap<String, Vec<QueryRow>> = BTreeMap::new();
    for q in queries {
        if !settings.tasks.is_empty() && !settings.tasks.contains(&q.task_name) {
            continue;
        }
        if let Err(e) = metric_of(&q, labels) {
            skipped.insert(q.task_name.clone(), e.to_string());
            continue;
        }
        let unlabelled = q.ground_truth.is_none() && labels == LabelSource::GroundTruth;
        if unlabelled || q.query.chars().count() > settings.max_query_chars {
            continue;
        }
        by_task.entry(q.task_name.clone()).or_default().push(q);
    }
    let mut out = Vec::new();
    for (_, mut rows) in by_task {
        rows.sort_by_key(|q| split_hash(&q.id, settings.seed));
        if let Some(n) = settings.per_task {
            rows.truncate(n);
        }
        out.extend(rows);
    }
    (out, skipped)
}

fn split_hash(id: &str, seed: u64) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325 ^ seed.wrapping_mul(0x9e37_79b9_7f4a_7c15);
    for b in id.bytes() {
        h = (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
    }
    h
}

/// `train` or `test`, deterministic per id and seed.
pub fn split_of(id: &str, seed: u64, test_share: f64) -> &'static str {
    let u = (split_hash(id, seed.wrapping_add(1)) % 10_000) as f64 / 10_000.0;
    if u < test_share { "test" } else { "train" }
}

/// The metric of an unlabelled query: its own when named, else token F1 (free text).
fn metric_of(query: &QueryRow, labels: LabelSource) -> Result<TaskMetric> {
    match (query.metric.as_deref(), labels) {
        (None | Some(""), l) if l != LabelSource::GroundTruth => Ok(TaskMetric::F1),
        (name, _) => TaskMetric::parse(name.unwrap_or_default()),
    }
}

/// Runs one query through every model (answers, and the verification of every model but
/// the last), then scores each answer: against the ground truth, or with
/// [`LabelSource::Agreement`] against the most expensive model's answer (which scores 1).
pub async fn collect_row(
    job: &CollectJob,
    query: &QueryRow,
    labels: LabelSource,
) -> Result<TrainingRow> {
    let metric = metric_of(query, labels)?;
    let mut runs = Vec::new();
    let last = job.models.len() - 1;
    for (i, model) in job.models.models().iter().enumerate() {
        let previous = runs.last().map(|r: &ModelRun| r.normalised_answer.clone());
        let verified = (i < last).then_some(previous.as_deref());
        runs.push(answer_and_verify(job, query, metric, model, verified).await?);
    }
    let truth = match labels {
        LabelSource::GroundTruth => query.ground_truth.clone().unwrap_or_default(),
        // A judge re-scores these afterwards (`traffic`), as feedback may; the reference
        // is the same.
        LabelSource::Agreement | LabelSource::Judge | LabelSource::Feedback => {
            runs.last().map(|r| r.answer.clone()).unwrap_or_default()
        }
    };
    for run in &mut runs {
        run.score = metric.score(&run.answer, &truth, &query.choices);
    }
    if labels != LabelSource::GroundTruth
        && let Some(reference) = runs.last_mut()
    {
        reference.score = 1.0;
    }
    Ok(TrainingRow {
        id: query.id.clone(),
        task_name: query.task_name.clone(),
        metric: metric.name().to_owned(),
        query: query.query.clone(),
        ground_truth: truth,
        split: split_of(&query.id, job.collect.seed, job.collect.test_share).to_owned(),
        models: runs,
        label_source: labels,
    })
}

/// One model's answer to `query` and, when `verified` (with the next cheaper model's
/// normalised answer, if any), its self-verification; the score is filled in by the caller
/// once every answer is in.
async fn answer_and_verify(
    job: &CollectJob,
    query: &QueryRow,
    metric: TaskMetric,
    model: &ModelHandle,
    verified: Option<Option<&str>>,
) -> Result<ModelRun> {
    let kind = metric.task_kind();
    let budget = answer_budget(kind, &job.collect);
    // Every signal is measured, so the answer's token logprobs are asked for (an upstream
    // that does not return them leaves `answer_logprob` unknown).
    let call = ask(model, &job.prompts, query, kind, (budget, true)).await?;
    let verification = if let Some(previous_answer) = verified
        && job.automix.enable_self_verification
    {
        let verifier = verifier_for(model, job.prompts.clone(), &job.automix)?;
        // The answer already carries its logprobs; the signals' own samples need none.
        let source = AnswerSource::Templates {
            kind,
            max_tokens: budget,
            logprobs: false,
        };
        // Every signal, so any `verifier_signal` trains on the rows (answer consistency
        // only with `answer_samples` > 0).
        let input = SignalInput {
            model,
            verifier: &verifier,
            prompts: &job.prompts,
            query,
            source: &source,
            answer: &call.text,
            answer_logprobs: call.logprobs.as_deref(),
            previous_answer,
            answer_samples: job.automix.answer_samples(),
            temperature: job.automix.verification_temperature,
        };
        Some(crate::signal::measure(&crate::signal::ALL, &input).await?.0)
    } else {
        None
    };
    Ok(ModelRun {
        model: model.entry.name.clone(),
        normalised_answer: metric.extract(&call.text, &query.choices),
        score: 0.0,
        tokens: call.usage.into(),
        cost: call.cost,
        latency_ms: call.latency_ms,
        answer: call.text,
        verification,
    })
}

/// Progress reported while collecting.
#[derive(Debug)]
pub enum CollectEvent<'a> {
    /// A row was finished.
    Row(&'a TrainingRow),
    /// A query failed (it is retried on the next run).
    Failed(&'a QueryRow, &'a AutomixError),
}

/// What a collect run did.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CollectSummary {
    /// Rows already in the output before this run.
    pub resumed: usize,
    /// Rows added by this run.
    pub added: usize,
    /// Queries that failed.
    pub failed: usize,
    /// Rows in the output now.
    pub total: usize,
    /// Per task and model: mean score.
    pub quality: BTreeMap<String, BTreeMap<String, f64>>,
    /// Per model and signal: calibration against the model's own correctness.
    pub calibration: BTreeMap<String, ModelCalibration>,
    /// Tokens per model (prompt + completion, answers and verification).
    pub tokens: BTreeMap<String, u64>,
    /// Per model and signal: mean money its own calls cost per verified answer, over the
    /// rows that break their verification cost down (`verification.signal_costs`).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub signal_costs: BTreeMap<String, BTreeMap<String, f64>>,
    /// Seconds this run took.
    pub seconds: f64,
}

/// A model's calibration on collected rows, per signal (`samples`, `logprob`,
/// `answer_consistency`: every signal in [`crate::signal::ALL`] the rows carry).
pub type ModelCalibration = BTreeMap<String, CalibrationReport>;

/// Collects rows for `queries` into `output`, skipping ids already there.
pub async fn collect(
    job: &CollectJob,
    queries: &[QueryRow],
    output: &Path,
    mut on_event: impl FnMut(CollectEvent<'_>),
) -> Result<CollectSummary> {
    let started = Instant::now();
    let mut rows = if output.exists() {
        read_training_rows(output)?
    } else {
        Vec::new()
    };
    let resumed = rows.len();
    let done: HashSet<String> = rows.iter().map(|r| r.id.clone()).collect();
    let todo: Vec<&QueryRow> = queries.iter().filter(|q| !done.contains(&q.id)).collect();
    let mut stream = futures::stream::iter(todo.iter().map(|q| async move {
        let result = collect_row(job, q, job.labels).await;
        (*q, result)
    }))
    .buffer_unordered(job.max_workers.max(1));
    let (mut added, mut failed, mut since_write) = (0, 0, 0);
    while let Some((query, result)) = stream.next().await {
        match result {
            Ok(row) => {
                on_event(CollectEvent::Row(&row));
                rows.push(row);
                added += 1;
                since_write += 1;
                if since_write >= 5 {
                    write_jsonl(output, &rows)?;
                    since_write = 0;
                }
            }
            Err(e) => {
                on_event(CollectEvent::Failed(query, &e));
                failed += 1;
            }
        }
    }
    write_jsonl(output, &rows)?;
    let mut summary = summarise(&rows);
    summary.resumed = resumed;
    summary.added = added;
    summary.failed = failed;
    summary.seconds = started.elapsed().as_secs_f64();
    Ok(summary)
}

/// (confidence, score) pairs of one verifier signal.
type ScoredConfidences = Vec<(Option<f64>, f64)>;

/// Quality, calibration and tokens over rows.
pub fn summarise(rows: &[TrainingRow]) -> CollectSummary {
    let mut sums: BTreeMap<String, BTreeMap<String, (f64, usize)>> = BTreeMap::new();
    let mut cal: BTreeMap<String, BTreeMap<String, ScoredConfidences>> = BTreeMap::new();
    let mut tokens: BTreeMap<String, u64> = BTreeMap::new();
    let mut costs: BTreeMap<String, BTreeMap<String, (f64, usize)>> = BTreeMap::new();
    for row in rows {
        for run in &row.models {
            let s = sums
                .entry(row.task_name.clone())
                .or_default()
                .entry(run.model.clone())
                .or_default();
            s.0 += run.score;
            s.1 += 1;
            let mut t = run.tokens.prompt + run.tokens.completion;
            if let Some(v) = &run.verification {
                let c = cal.entry(run.model.clone()).or_default();
                for kind in crate::signal::ALL {
                    let pairs = c.entry(kind.name().to_owned()).or_default();
                    pairs.push((crate::signal::of(kind).read(v), run.score));
                }
                t += v.tokens.prompt + v.tokens.completion;
                for (signal, cost) in &v.signal_costs {
                    let c = costs.entry(run.model.clone()).or_default();
                    let (sum, n) = c.entry(signal.clone()).or_default();
                    *sum += cost;
                    *n += 1;
                }
            }
            *tokens.entry(run.model.clone()).or_default() += t;
        }
    }
    CollectSummary {
        resumed: 0,
        added: 0,
        failed: 0,
        total: rows.len(),
        quality: sums
            .into_iter()
            .map(|(task, m)| {
                (
                    task,
                    m.into_iter()
                        .map(|(model, (s, n))| (model, s / n as f64))
                        .collect(),
                )
            })
            .collect(),
        calibration: cal
            .into_iter()
            .map(|(m, per_signal)| {
                let reports = per_signal
                    .into_iter()
                    .map(|(name, pairs)| (name, CalibrationReport::compute(&pairs)))
                    .collect();
                (m, reports)
            })
            .collect(),
        tokens,
        signal_costs: costs
            .into_iter()
            .map(|(m, per_signal)| {
                let means = (per_signal.into_iter())
                    .map(|(name, (sum, n))| (name, sum / n as f64))
                    .collect();
                (m, means)
            })
            .collect(),
        seconds: 0.0,
    }
}
