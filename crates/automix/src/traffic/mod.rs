//! Learning from a team's own traffic: after a request has its reply, a sampled share is
//! answered again by every model of the route in the background and scored without ground
//! truth (agreement with the most expensive model's answer, or a judge model's verdict of
//! equivalence with it; a client's feedback beats either, [`labels`]), one row per request
//! in the project's row format, appended to `automix.shadow.rows_path` or to a Redis
//! stream replicas share ([`sink`]); `automix train --rows` trains on them. Bounded in
//! concurrency and by a money budget per hour; never on the request's path.

pub mod labels;
pub mod sink;

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use tokio::sync::Semaphore;

use crate::collect::{CollectJob, collect_row};
use crate::dataset::{LabelSource, QueryRow, TrainingRow};
use crate::error::{AutomixError, Result};
use crate::models::ModelHandle;
use crate::sync::lock;
use crate::task_metric::TaskMetric;
use automix_llm::ChatRequest;
use automix_verify::PromptSet;
use labels::Ledger;
use sink::{DEFAULT_STREAM, RowSink};

/// `automix.shadow`: shadow answers in `automix serve`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ShadowSettings {
    /// Share of routed requests shadowed, in [0, 1].
    pub rate: f64,
    /// How shadow answers are labelled (`agreement`).
    pub label: ShadowLabel,
    /// The rows file (JSONL, appended). Without it, a Redis `belief_store` holds the rows
    /// in a stream replicas share (`rows_stream`).
    pub rows_path: Option<PathBuf>,
    /// The Redis stream key of the rows (with a Redis `belief_store` and no `rows_path`;
    /// default `automix:traffic:rows`), drained by `automix traffic export`.
    pub rows_stream: Option<String>,
    /// Most money (llm_data prices) shadow calls may spend per hour; unset = no limit.
    pub max_cost_per_hour: Option<f64>,
    /// Keep the prompt, the reference and the answers' text in rows (default: only their
    /// hash, the id, and the normalised answers).
    pub store_prompts: bool,
    /// Shadowed requests in flight at once; a request past it is not shadowed.
    pub max_concurrency: usize,
    /// The llm_data name of the judge of `label: judge`.
    pub judge_model: Option<String>,
    /// Retrain in the server every N new rows, on every row of `rows_path`, and swap the
    /// candidate in only when it beats the serving policy out of fold ([`crate::retrain`]).
    pub retrain_every: Option<usize>,
}

impl Default for ShadowSettings {
    fn default() -> Self {
        Self {
            rate: 0.1,
            label: ShadowLabel::Agreement,
            rows_path: None,
            rows_stream: None,
            max_cost_per_hour: None,
            store_prompts: false,
            max_concurrency: 2,
            judge_model: None,
            retrain_every: None,
        }
    }
}

/// How shadow answers get their labels.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ShadowLabel {
    /// Each answer against the most expensive model's.
    Agreement,
    /// A judge model decides whether each answer means the same as the most expensive
    /// model's (`judge_equivalence` prompt, parsed like a verdict).
    Judge,
}

/// Where a shadow's rows go, resolved from `rows_path`, `rows_stream` and `belief_store`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RowsTarget {
    /// A JSONL file.
    File(PathBuf),
    /// A Redis stream at `belief_store`, by key.
    Stream(String),
}

impl ShadowSettings {
    /// Where the rows go, given the config's `belief_store`.
    pub fn target(&self, belief_store: &str) -> Result<RowsTarget> {
        let redis = belief_store.starts_with("redis://") || belief_store.starts_with("rediss://");
        let fail = |key, message: &str| AutomixError::Setting {
            key,
            message: message.into(),
        };
        match (&self.rows_path, &self.rows_stream) {
            (Some(_), Some(_)) => Err(fail(
                "automix.shadow.rows_stream",
                "is for rows in Redis; with rows_path the rows go to that file (set one)",
            )),
            (Some(path), None) => Ok(RowsTarget::File(path.clone())),
            (None, _) if !redis => Err(fail(
                "automix.shadow.rows_path",
                "is required (where shadow rows are appended), unless belief_store is a \
                 Redis URL, whose stream replicas share",
            )),
            (None, stream) => Ok(RowsTarget::Stream(
                stream.clone().unwrap_or_else(|| DEFAULT_STREAM.into()),
            )),
        }
    }

    /// What is wrong with these settings, as (key, message); `None` when they are usable:
    /// their own rules, then where the rows go (`belief_store` decides a stream).
    pub fn problem(&self, belief_store: &str) -> Option<(&'static str, String)> {
        if let Some(p) = self.rules_problem() {
            return Some(p);
        }
        match self.target(belief_store) {
            Err(AutomixError::Setting { key, message }) => {
                Some((key.rsplit('.').next().unwrap_or(key), message))
            }
            _ => None,
        }
    }

    /// What is wrong with the settings' own rules (rate, budget, slots, judge, retrain),
    /// whatever the rows' target.
    pub fn rules_problem(&self) -> Option<(&'static str, String)> {
        if !(0.0..=1.0).contains(&self.rate) {
            return Some(("rate", "must be in [0, 1]".into()));
        }
        if self
            .max_cost_per_hour
            .is_some_and(|c| !(c.is_finite() && c >= 0.0))
        {
            return Some(("max_cost_per_hour", "must be a number >= 0".into()));
        }
        if self.max_concurrency == 0 {
            return Some(("max_concurrency", "must be at least 1".into()));
        }
        match (self.label, &self.judge_model) {
            (ShadowLabel::Judge, None) => {
                return Some(("judge_model", "is required with label: judge".into()));
            }
            (ShadowLabel::Agreement, Some(_)) => {
                return Some(("judge_model", "is for label: judge only".into()));
            }
            _ => {}
        }
        if self.retrain_every == Some(0) {
            return Some(("retrain_every", "must be at least 1".into()));
        }
        None
    }
}

/// What a request's offer to the shadow became.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Offer {
    /// Answered again in the background.
    Started,
    /// Not drawn (`rate`).
    SampledOut,
    /// `max_concurrency` shadowed requests are in flight.
    Busy,
    /// This hour's `max_cost_per_hour` is spent.
    OverBudget,
}

/// Counts since start, for `/metrics`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct ShadowCounts {
    /// Rows written.
    pub rows: u64,
    /// Requests not shadowed because `max_concurrency` were in flight.
    pub busy: u64,
    /// Requests not shadowed because the hour's budget was spent.
    pub over_budget: u64,
    /// Shadowed requests that failed (an upstream error; nothing written).
    pub failed: u64,
    /// Shadowed requests not written because the judge's reply did not parse (unknown).
    pub judge_unparsed: u64,
    /// Client scores that corrected a shadow row.
    pub feedback: u64,
    /// Money the shadow calls spent.
    pub cost: f64,
    /// Shadowed requests whose kept answer was scored against the reference.
    pub kept_scored: u64,
    /// Mean agreement of the answer the client got with the reference (`None`: none yet).
    pub kept_agreement: Option<f64>,
}

/// The hour's spend.
#[derive(Debug)]
struct Budget {
    window_start: Instant,
    spent: f64,
}

/// One hour: the budget's window.
const BUDGET_WINDOW: Duration = Duration::from_secs(3600);

/// Shadow answers for one server.
#[derive(Debug)]
pub struct Shadow {
    settings: ShadowSettings,
    job: CollectJob,
    slots: Arc<Semaphore>,
    judge: Option<ModelHandle>,
    budget: Mutex<Budget>,
    sink: RowSink,
    ledger: Mutex<Ledger>,
    counts: Counters,
}

#[derive(Debug, Default)]
struct Counters {
    rows: AtomicU64,
    busy: AtomicU64,
    over_budget: AtomicU64,
    failed: AtomicU64,
    judge_unparsed: AtomicU64,
    feedback: AtomicU64,
    /// Money in nano-units (an atomic float would need a lock).
    cost_nanos: AtomicU64,
    kept_scored: AtomicU64,
    /// Sum of the kept answers' agreement, in millionths.
    kept_agreement_micros: AtomicU64,
}

impl Shadow {
    /// A shadow over `job`'s models (the router's, cheapest first), appending to `sink`.
    pub fn new(
        settings: ShadowSettings,
        job: CollectJob,
        judge: Option<ModelHandle>,
        sink: RowSink,
    ) -> Result<Self> {
        if (settings.label == ShadowLabel::Judge) != judge.is_some() {
            return Err(AutomixError::Setting {
                key: "automix.shadow.judge_model",
                message: "label: judge needs the judge model's handle (and only it does)".into(),
            });
        }
        // The sink is the caller's: only the settings' own rules are checked here.
        if let Some((key, message)) = settings.rules_problem() {
            return Err(AutomixError::Setting {
                key: "automix.shadow",
                message: format!("{key} {message}"),
            });
        }
        Ok(Self {
            slots: Arc::new(Semaphore::new(settings.max_concurrency)),
            judge,
            settings,
            job: CollectJob {
                labels: LabelSource::Agreement,
                ..job
            },
            budget: Mutex::new(Budget {
                window_start: Instant::now(),
                spent: 0.0,
            }),
            sink,
            ledger: Mutex::new(Ledger::default()),
            counts: Counters::default(),
        })
    }

    /// Offers routed request `route` (its id, for feedback): when drawn, within budget and
    /// a slot is free, it is answered again by every model in the background (a Tokio
    /// task) and its row appended. Returns at once.
    pub fn offer(self: &Arc<Self>, mut query: QueryRow, kept_model: &str, route: &str) -> Offer {
        if rand::random::<f64>() >= self.settings.rate {
            return Offer::SampledOut;
        }
        if !self.within_budget() {
            self.counts.over_budget.fetch_add(1, Ordering::Relaxed);
            return Offer::OverBudget;
        }
        let Ok(slot) = self.slots.clone().try_acquire_owned() else {
            self.counts.busy.fetch_add(1, Ordering::Relaxed);
            return Offer::Busy;
        };
        // One row per shadowed request, even for a prompt asked twice: the prompt's hash,
        // then a random suffix that says nothing about the client.
        query.id = format!("{}-{:08x}", query.id, rand::random::<u32>());
        lock(&self.ledger).start(route, Instant::now());
        let me = self.clone();
        let (kept_model, route) = (kept_model.to_owned(), route.to_owned());
        tokio::spawn(async move {
            let _slot = slot;
            match me.labelled_row(&query).await {
                Ok(Some((row, judge_cost))) => {
                    me.record(row, &kept_model, &route, judge_cost).await
                }
                Ok(None) => {
                    lock(&me.ledger).abandon(&route);
                    me.counts.judge_unparsed.fetch_add(1, Ordering::Relaxed);
                }
                Err(e) => {
                    lock(&me.ledger).abandon(&route);
                    me.counts.failed.fetch_add(1, Ordering::Relaxed);
                    eprintln!("automix serve: shadow answer failed: {e}");
                }
            }
        });
        Offer::Started
    }

    /// A client's score for `model`'s answer of `route` (taken once by the router, which
    /// checked who may score it): applied to the shadow's row of that route, if any (see
    /// [`labels`]).
    pub async fn feedback(&self, route: &str, model: &str, score: f64) {
        let correction = lock(&self.ledger).feedback(route, model, score);
        let Some(row) = correction else {
            return;
        };
        self.counts.feedback.fetch_add(1, Ordering::Relaxed);
        self.write(&row).await;
    }

    /// Every row so far, corrections applied (what a retrain reads).
    pub async fn rows(&self) -> Result<Vec<TrainingRow>> {
        self.sink.rows().await
    }

    /// Where the rows go (for logs).
    pub fn rows_target(&self) -> String {
        self.sink.describe()
    }

    /// The request's row: every model's answer scored by agreement, or by the judge (with
    /// the judge calls' cost); `None` when a judge reply did not parse (the label is
    /// unknown, so no row is written).
    async fn labelled_row(&self, query: &QueryRow) -> Result<Option<(TrainingRow, f64)>> {
        let mut row = collect_row(&self.job, query, LabelSource::Agreement).await?;
        let Some(judge) = &self.judge else {
            return Ok(Some((row, 0.0)));
        };
        let reference = row.ground_truth.clone();
        let last = row.models.len().saturating_sub(1);
        let mut cost = 0.0;
        for run in &mut row.models[..last] {
            let (same, call_cost) =
                judge_equivalence(judge, &self.job.prompts, query, &reference, &run.answer).await?;
            cost += call_cost;
            match same {
                Some(s) => run.score = f64::from(s),
                None => return Ok(None),
            }
        }
        row.label_source = LabelSource::Judge;
        Ok(Some((row, cost)))
    }

    /// Whether this hour's spend is below `max_cost_per_hour` (a new hour starts afresh).
    fn within_budget(&self) -> bool {
        let Some(limit) = self.settings.max_cost_per_hour else {
            return true;
        };
        let mut b = lock(&self.budget);
        if b.window_start.elapsed() >= BUDGET_WINDOW {
            *b = Budget {
                window_start: Instant::now(),
                spent: 0.0,
            };
        }
        b.spent < limit
    }

    /// Charges the row's calls to the budget, scores the kept answer, appends the row
    /// (with a score the client sent meanwhile).
    async fn record(&self, row: TrainingRow, kept_model: &str, route: &str, judge_cost: f64) {
        let cost = row_cost(&row) + judge_cost;
        if let Some(kept) = row.run(kept_model) {
            self.counts.kept_scored.fetch_add(1, Ordering::Relaxed);
            let micros = (kept.score.clamp(0.0, 1.0) * 1e6).round() as u64;
            self.counts
                .kept_agreement_micros
                .fetch_add(micros, Ordering::Relaxed);
        }
        lock(&self.budget).spent += cost;
        self.counts
            .cost_nanos
            .fetch_add((cost * 1e9).round() as u64, Ordering::Relaxed);
        let row = if self.settings.store_prompts {
            row
        } else {
            without_text(row)
        };
        let row = lock(&self.ledger).finish(route, row);
        if row.label_source == LabelSource::Feedback {
            self.counts.feedback.fetch_add(1, Ordering::Relaxed);
        }
        if self.write(&row).await {
            self.counts.rows.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Appends `row`; a failure is logged and counted.
    async fn write(&self, row: &TrainingRow) -> bool {
        match self.sink.append(row).await {
            Ok(()) => true,
            Err(e) => {
                self.counts.failed.fetch_add(1, Ordering::Relaxed);
                eprintln!("automix serve: shadow row not written: {e}");
                false
            }
        }
    }

    /// Counts since start.
    pub fn counts(&self) -> ShadowCounts {
        let c = &self.counts;
        ShadowCounts {
            rows: c.rows.load(Ordering::Relaxed),
            busy: c.busy.load(Ordering::Relaxed),
            over_budget: c.over_budget.load(Ordering::Relaxed),
            failed: c.failed.load(Ordering::Relaxed),
            judge_unparsed: c.judge_unparsed.load(Ordering::Relaxed),
            feedback: c.feedback.load(Ordering::Relaxed),
            cost: c.cost_nanos.load(Ordering::Relaxed) as f64 / 1e9,
            kept_scored: c.kept_scored.load(Ordering::Relaxed),
            kept_agreement: {
                let n = c.kept_scored.load(Ordering::Relaxed);
                let sum = c.kept_agreement_micros.load(Ordering::Relaxed) as f64 / 1e6;
                (n > 0).then(|| sum / n as f64)
            },
        }
    }
}

/// Asks `judge` whether `answer` means the same as `reference`: `Some(true)` for a
/// "Correct" verdict, `Some(false)` for "Incorrect", `None` when the reply does not parse;
/// and the call's cost.
pub async fn judge_equivalence(
    judge: &ModelHandle,
    prompts: &PromptSet,
    query: &QueryRow,
    reference: &str,
    answer: &str,
) -> Result<(Option<bool>, f64)> {
    let messages = prompts.judge_messages(&crate::pipeline::query_text(query), reference, answer);
    let request = ChatRequest {
        temperature: Some(0.0),
        max_tokens: Some(JUDGE_MAX_TOKENS),
        seed: Some(0),
        ..ChatRequest::new(judge.entry.model.clone(), messages)
    };
    let call = crate::pipeline::call(judge, &request).await?;
    let verdict = automix_verify::parse_verdict(&call.text);
    Ok((
        verdict.map(|v| v == automix_verify::Verdict::Correct),
        call.cost,
    ))
}

/// Tokens a judge may reply with (a verdict word and a short reason).
const JUDGE_MAX_TOKENS: u32 = 24;

/// Money of every call a row records (answers and verifications).
pub fn row_cost(row: &TrainingRow) -> f64 {
    row.models
        .iter()
        .map(|m| m.cost + m.verification.as_ref().map_or(0.0, |v| v.cost))
        .filter(|c| c.is_finite() && *c >= 0.0)
        .sum()
}

/// The row without the prompt, the reference or the answers' text: the id (a hash of task
/// and prompt), scores, verifications, tokens and costs stay, and the normalised answers
/// only where they are an option letter or a number (free text often repeats the prompt).
pub fn without_text(mut row: TrainingRow) -> TrainingRow {
    let closed = matches!(
        TaskMetric::parse(&row.metric),
        Ok(TaskMetric::EmMc | TaskMetric::Gsm8k | TaskMetric::Math)
    );
    row.query.clear();
    row.ground_truth.clear();
    for m in &mut row.models {
        m.answer.clear();
        if !closed {
            m.normalised_answer.clear();
        }
    }
    row
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settings_that_are_not_built_are_refused_with_the_reason() {
        let ok = ShadowSettings {
            rows_path: Some("rows.jsonl".into()),
            ..ShadowSettings::default()
        };
        assert_eq!(ok.problem("memory"), None);
        let judge = ShadowSettings {
            label: ShadowLabel::Judge,
            ..ok.clone()
        };
        assert_eq!(judge.problem("memory").map(|p| p.0), Some("judge_model"));
        let judged = ShadowSettings {
            judge_model: Some("big".into()),
            ..judge
        };
        assert_eq!(judged.problem("memory"), None);
        let retrain = ShadowSettings {
            retrain_every: Some(0),
            ..ok.clone()
        };
        assert_eq!(
            retrain.problem("memory").map(|p| p.0),
            Some("retrain_every")
        );
        let no_path = ShadowSettings::default();
        assert_eq!(no_path.problem("memory").map(|p| p.0), Some("rows_path"));
        assert_eq!(
            no_path.target("redis://127.0.0.1:6379/0").unwrap(),
            RowsTarget::Stream(DEFAULT_STREAM.into())
        );
        let both = ShadowSettings {
            rows_stream: Some("s".into()),
            ..ok.clone()
        };
        assert_eq!(both.problem("redis://h").map(|p| p.0), Some("rows_stream"));
        assert_eq!(
            ok.target("redis://h").unwrap(),
            RowsTarget::File("rows.jsonl".into())
        );
        let rate = ShadowSettings { rate: 1.5, ..ok };
        assert_eq!(rate.problem("memory").map(|p| p.0), Some("rate"));
    }
}
