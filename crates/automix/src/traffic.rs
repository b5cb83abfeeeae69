//! Learning from a team's own traffic: after a request has its reply, a sampled share is
//! answered again by every model of the route in the background and scored without ground
//! truth (agreement with the most expensive model's answer), one row per request in the
//! project's row format, appended to `automix.shadow.rows_path`; `automix train --rows`
//! trains on them. Bounded in concurrency and by a money budget per hour; never on the
//! request's path.

use std::io::Write;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use tokio::sync::Semaphore;

use crate::collect::{CollectJob, collect_row};
use crate::dataset::{LabelSource, QueryRow, TrainingRow};
use crate::error::{AutomixError, Result};
use crate::sync::lock;
use crate::task_metric::TaskMetric;

/// `automix.shadow`: shadow answers in `automix serve`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ShadowSettings {
    /// Share of routed requests shadowed, in [0, 1].
    pub rate: f64,
    /// How shadow answers are labelled (`agreement`).
    pub label: ShadowLabel,
    /// The rows file (JSONL, appended).
    pub rows_path: Option<PathBuf>,
    /// Most money (llm_data prices) shadow calls may spend per hour; unset = no limit.
    pub max_cost_per_hour: Option<f64>,
    /// Keep the prompt, the reference and the answers' text in rows (default: only their
    /// hash, the id, and the normalised answers).
    pub store_prompts: bool,
    /// Shadowed requests in flight at once; a request past it is not shadowed.
    pub max_concurrency: usize,
    /// A judge model for `label: judge` (not built yet: refused at load).
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
    /// A judge model decides equivalence (not built yet).
    Judge,
}

impl ShadowSettings {
    /// What is wrong with these settings, as (key, message); `None` when they are usable.
    pub fn problem(&self) -> Option<(&'static str, String)> {
        if !(0.0..=1.0).contains(&self.rate) {
            return Some(("rate", "must be in [0, 1]".into()));
        }
        if self.rows_path.is_none() {
            return Some((
                "rows_path",
                "is required: where shadow rows are appended".into(),
            ));
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
        let not_yet = "is not built yet (label: agreement is); refused rather than ignored";
        if self.label == ShadowLabel::Judge || self.judge_model.is_some() {
            return Some(("label", format!("judge {not_yet}")));
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
    budget: Mutex<Budget>,
    rows: Mutex<std::fs::File>,
    counts: Counters,
}

#[derive(Debug, Default)]
struct Counters {
    rows: AtomicU64,
    busy: AtomicU64,
    over_budget: AtomicU64,
    failed: AtomicU64,
    /// Money in nano-units (an atomic float would need a lock).
    cost_nanos: AtomicU64,
    kept_scored: AtomicU64,
    /// Sum of the kept answers' agreement, in millionths.
    kept_agreement_micros: AtomicU64,
}

impl Shadow {
    /// A shadow over `job`'s models (the router's, cheapest first), appending to
    /// `settings.rows_path` (created with its folder if missing).
    pub fn new(settings: ShadowSettings, job: CollectJob) -> Result<Self> {
        if let Some((key, message)) = settings.problem() {
            return Err(AutomixError::Setting {
                key: "automix.shadow",
                message: format!("{key} {message}"),
            });
        }
        let path = settings.rows_path.clone().unwrap_or_default();
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|e| AutomixError::io(dir, e))?;
        }
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .map_err(|e| AutomixError::io(&path, e))?;
        Ok(Self {
            slots: Arc::new(Semaphore::new(settings.max_concurrency)),
            settings,
            job: CollectJob {
                labels: LabelSource::Agreement,
                ..job
            },
            budget: Mutex::new(Budget {
                window_start: Instant::now(),
                spent: 0.0,
            }),
            rows: Mutex::new(file),
            counts: Counters::default(),
        })
    }

    /// Offers a routed request: when drawn, within budget and a slot is free, it is
    /// answered again by every model in the background (a Tokio task) and its row
    /// appended. Returns at once.
    pub fn offer(self: &Arc<Self>, query: QueryRow, kept_model: &str) -> Offer {
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
        let me = self.clone();
        let kept_model = kept_model.to_owned();
        tokio::spawn(async move {
            let _slot = slot;
            match collect_row(&me.job, &query, LabelSource::Agreement).await {
                Ok(row) => me.record(row, &kept_model),
                Err(e) => {
                    me.counts.failed.fetch_add(1, Ordering::Relaxed);
                    eprintln!("automix serve: shadow answer failed: {e}");
                }
            }
        });
        Offer::Started
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

    /// Charges the row's calls to the budget, scores the kept answer, appends the row.
    fn record(&self, row: TrainingRow, kept_model: &str) {
        let cost = row_cost(&row);
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
        let written = serde_json::to_string(&row)
            .map_err(std::io::Error::other)
            .and_then(|line| {
                let mut f = lock(&self.rows);
                writeln!(f, "{line}").and_then(|()| f.flush())
            });
        match written {
            Ok(()) => {
                self.counts.rows.fetch_add(1, Ordering::Relaxed);
            }
            Err(e) => {
                self.counts.failed.fetch_add(1, Ordering::Relaxed);
                eprintln!("automix serve: shadow row not written: {e}");
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
        assert_eq!(ok.problem(), None);
        let judge = ShadowSettings {
            label: ShadowLabel::Judge,
            ..ok.clone()
        };
        assert_eq!(judge.problem().map(|p| p.0), Some("label"));
        let retrain = ShadowSettings {
            retrain_every: Some(0),
            ..ok.clone()
        };
        assert_eq!(retrain.problem().map(|p| p.0), Some("retrain_every"));
        let no_path = ShadowSettings::default();
        assert_eq!(no_path.problem().map(|p| p.0), Some("rows_path"));
        let rate = ShadowSettings { rate: 1.5, ..ok };
        assert_eq!(rate.problem().map(|p| p.0), Some("rate"));
    }
}
