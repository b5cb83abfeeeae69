//! What the dashboard counts: one [`Entry`] per routed request, folded into totals since
//! start and kept in a bounded ring for the last minutes. Memory is bounded whatever the
//! traffic: the ring has a fixed capacity, and the per-task and per-λ maps cap their keys
//! (the rest is counted under `other`).

use std::collections::{BTreeMap, VecDeque};
use std::time::{Duration, Instant};

use serde::Serialize;

use automix::models::ModelSet;
use automix::router::RouteOutcome;
use automix_llm::Usage;

/// Requests the ring keeps for the recent window (older ones are in the totals only).
pub(crate) const RING_CAPACITY: usize = 4096;

/// Width of the recent window.
pub(crate) const WINDOW: Duration = Duration::from_secs(300);

/// Bins of the verifier-score histogram over [0, 1].
pub(crate) const SCORE_BINS: usize = 20;

/// Distinct task names (and λ values) counted by name; later ones count as `other`.
const MAX_KEYS: usize = 64;

/// Upper bounds (ms) of the latency histogram's buckets; the last bucket is unbounded.
const LATENCY_BOUNDS_MS: [u64; 15] = [
    1, 2, 5, 10, 20, 50, 100, 200, 500, 1_000, 2_000, 5_000, 10_000, 30_000, 60_000,
];

/// One routed request, as the dashboard sees it.
#[derive(Debug, Clone)]
pub(crate) struct Entry {
    at: Instant,
    decision: &'static str,
    kept_model: String,
    calls: Vec<String>,
    task: String,
    checks: Vec<&'static str>,
    cost: CostSample,
    latency_ms: u64,
    score: Option<f64>,
    lambda: Option<f64>,
}

/// What a request cost, and what it would have cost at the cheapest and the most
/// expensive model (the same prompt and answer length at that model's prices).
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub(crate) struct CostSample {
    /// Money spent (every call, verification included).
    pub(crate) actual: f64,
    /// Of it, on verification calls.
    pub(crate) verification: f64,
    /// The estimate for always calling the most expensive model.
    pub(crate) always_largest: f64,
    /// The estimate for always calling the cheapest model.
    pub(crate) always_smallest: f64,
    /// Tokens of every call.
    pub(crate) tokens: u64,
}

impl Entry {
    /// The entry of `outcome`, its baselines priced at `models`' llm_data prices.
    pub(crate) fn of(outcome: &RouteOutcome, models: &ModelSet, elapsed: Duration) -> Self {
        Self {
            at: Instant::now(),
            decision: outcome.decision.label(),
            kept_model: outcome.model_name.clone(),
            calls: outcome.calls.iter().map(|c| c.model.clone()).collect(),
            task: outcome.task.clone(),
            checks: outcome
                .failed_checks
                .iter()
                .map(|f| f.check.name())
                .collect(),
            cost: cost_sample(outcome, models),
            latency_ms: elapsed.as_millis() as u64,
            score: outcome.verification_score,
            lambda: outcome.lambda,
        }
    }
}

/// The request's cost and its two baselines. The baselines use the first answer's prompt
/// tokens and the kept answer's completion tokens: what one call to that model alone would
/// have been billed, had it answered at the same length.
fn cost_sample(outcome: &RouteOutcome, models: &ModelSet) -> CostSample {
    let answers: Vec<_> = outcome
        .calls
        .iter()
        .filter(|c| c.purpose == "answer")
        .collect();
    let usage = Usage {
        prompt_tokens: answers.first().map_or(0, |c| c.tokens.prompt),
        completion_tokens: answers.last().map_or(0, |c| c.tokens.completion),
    };
    let at = |m: Option<&automix::models::ModelHandle>| m.map_or(0.0, |m| m.entry.cost(usage));
    let spent = |purpose: Option<&str>| -> f64 {
        outcome
            .calls
            .iter()
            .filter(|c| purpose.is_none_or(|p| c.purpose == p))
            .map(|c| c.cost)
            .filter(|c| c.is_finite() && *c >= 0.0)
            .sum()
    };
    CostSample {
        actual: spent(None),
        verification: spent(Some("verify")),
        always_largest: at(models.models().last()),
        always_smallest: at(models.models().first()),
        tokens: outcome.total_tokens,
    }
}

/// Counts over a period (since start, or the recent window).
#[derive(Debug, Clone, Default, Serialize)]
pub(crate) struct Period {
    /// Routed requests.
    pub(crate) requests: u64,
    /// Requests per decision (`keep`, `escalate`, `preselect`, `direct`).
    pub(crate) decisions: BTreeMap<&'static str, u64>,
    /// Requests per model whose answer was kept.
    pub(crate) answered_by: BTreeMap<String, u64>,
    /// Upstream calls per model.
    pub(crate) calls_by: BTreeMap<String, u64>,
    /// Requests and escalations per task.
    pub(crate) tasks: BTreeMap<String, TaskCount>,
    /// Zero-call checks that failed, per check.
    pub(crate) checks: BTreeMap<&'static str, u64>,
    /// Money spent and the baselines' estimates.
    pub(crate) cost: CostSample,
    /// Latency per decision.
    pub(crate) latency: BTreeMap<&'static str, LatencyHistogram>,
    /// The first model's verifier scores.
    pub(crate) scores: ScoreHistogram,
    /// Requests per λ their policy decided at (rounded to 3 significant digits).
    pub(crate) lambdas: BTreeMap<String, u64>,
}

/// Requests and escalations of one task.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub(crate) struct TaskCount {
    /// Routed requests.
    pub(crate) requests: u64,
    /// Of them, answered by a model other than the first.
    pub(crate) escalated: u64,
}

/// The first model's verifier scores in [`SCORE_BINS`] bins, and how many were unknown.
#[derive(Debug, Clone, Default, Serialize)]
pub(crate) struct ScoreHistogram {
    /// Counts per bin, bin `i` covering `[i/n, (i+1)/n)` (the last one includes 1).
    pub(crate) bins: Vec<u64>,
    /// Requests with no known score (not verified, or the verifier gave none).
    pub(crate) unknown: u64,
}

/// A latency histogram with fixed bucket bounds; its percentiles are read off the buckets
/// when it is shown, not kept.
#[derive(Debug, Clone, Default)]
pub(crate) struct LatencyHistogram {
    /// Counts per bucket of [`LATENCY_BOUNDS_MS`], then one for slower requests.
    buckets: Vec<u64>,
    /// Requests.
    count: u64,
}

/// What the page shows of a [`LatencyHistogram`]: the count and the upper bound (ms) of
/// the bucket holding the median, the 95th and 99th percentile (`null` above the last).
#[derive(Debug, Serialize)]
struct LatencyView {
    count: u64,
    p50_ms: Option<u64>,
    p95_ms: Option<u64>,
    p99_ms: Option<u64>,
}

impl Serialize for LatencyHistogram {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        LatencyView {
            count: self.count,
            p50_ms: self.quantile(0.50),
            p95_ms: self.quantile(0.95),
            p99_ms: self.quantile(0.99),
        }
        .serialize(s)
    }
}

impl LatencyHistogram {
    fn add(&mut self, ms: u64) {
        if self.buckets.is_empty() {
            self.buckets = vec![0; LATENCY_BOUNDS_MS.len() + 1];
        }
        let i = LATENCY_BOUNDS_MS
            .iter()
            .position(|&b| ms <= b)
            .unwrap_or(LATENCY_BOUNDS_MS.len());
        self.buckets[i] += 1;
        self.count += 1;
    }

    /// The upper bound of the bucket holding the `q` quantile.
    fn quantile(&self, q: f64) -> Option<u64> {
        let rank = (q * self.count as f64).ceil().max(1.0) as u64;
        let mut seen = 0;
        for (i, n) in self.buckets.iter().enumerate() {
            seen += n;
            if seen >= rank {
                return LATENCY_BOUNDS_MS.get(i).copied();
            }
        }
        None
    }
}

/// The entry of `key` in `map`, or of `other` once `map` holds [`MAX_KEYS`] names.
fn capped<'m, V: Default>(map: &'m mut BTreeMap<String, V>, key: &str) -> &'m mut V {
    let key = if map.contains_key(key) || map.len() < MAX_KEYS {
        key
    } else {
        "other"
    };
    map.entry(key.to_owned()).or_default()
}

/// λ rounded to 3 significant digits: the key a chart groups requests by.
fn lambda_key(lambda: f64) -> String {
    format!("{lambda:.2e}")
        .parse::<f64>()
        .map_or_else(|_| "other".into(), |l| l.to_string())
}

impl Period {
    /// Folds one request in.
    pub(crate) fn add(&mut self, e: &Entry) {
        self.requests += 1;
        *self.decisions.entry(e.decision).or_default() += 1;
        *self.answered_by.entry(e.kept_model.clone()).or_default() += 1;
        for model in &e.calls {
            *self.calls_by.entry(model.clone()).or_default() += 1;
        }
        let t = capped(&mut self.tasks, &e.task);
        t.requests += 1;
        t.escalated += u64::from(e.decision == "escalate");
        for check in &e.checks {
            *self.checks.entry(check).or_default() += 1;
        }
        self.cost.actual += e.cost.actual;
        self.cost.verification += e.cost.verification;
        self.cost.always_largest += e.cost.always_largest;
        self.cost.always_smallest += e.cost.always_smallest;
        self.cost.tokens += e.cost.tokens;
        self.latency
            .entry(e.decision)
            .or_default()
            .add(e.latency_ms);
        self.add_score(e.score);
        if let Some(l) = e.lambda {
            *capped(&mut self.lambdas, &lambda_key(l)) += 1;
        }
    }

    fn add_score(&mut self, score: Option<f64>) {
        if self.scores.bins.is_empty() {
            self.scores.bins = vec![0; SCORE_BINS];
        }
        match score.filter(|s| s.is_finite()) {
            Some(s) => {
                let i = ((s.clamp(0.0, 1.0) * SCORE_BINS as f64) as usize).min(SCORE_BINS - 1);
                self.scores.bins[i] += 1;
            }
            None => self.scores.unknown += 1,
        }
    }
}

/// Totals since start and the ring of recent requests.
#[derive(Debug)]
pub(crate) struct DashboardStats {
    started: Instant,
    since_start: Period,
    ring: VecDeque<Entry>,
}

impl Default for DashboardStats {
    fn default() -> Self {
        Self {
            started: Instant::now(),
            since_start: Period::default(),
            ring: VecDeque::with_capacity(RING_CAPACITY),
        }
    }
}

impl DashboardStats {
    /// Records one request.
    pub(crate) fn record(&mut self, entry: Entry) {
        self.since_start.add(&entry);
        if self.ring.len() == RING_CAPACITY {
            self.ring.pop_front();
        }
        self.ring.push_back(entry);
    }

    /// Seconds since start.
    pub(crate) fn uptime(&self) -> Duration {
        self.started.elapsed()
    }

    /// Totals since start.
    pub(crate) fn since_start(&self) -> &Period {
        &self.since_start
    }

    /// Counts over the requests of the last [`WINDOW`] still in the ring.
    pub(crate) fn recent(&self, now: Instant) -> Period {
        let mut period = Period::default();
        self.ring
            .iter()
            .filter(|e| now.saturating_duration_since(e.at) <= WINDOW)
            .for_each(|e| period.add(e));
        period
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(decision: &'static str, model: &str, score: Option<f64>, ms: u64) -> Entry {
        Entry {
            at: Instant::now(),
            decision,
            kept_model: model.into(),
            calls: vec!["small".into(), model.into()],
            task: "chat".into(),
            checks: Vec::new(),
            cost: CostSample {
                actual: 1.0,
                verification: 0.25,
                always_largest: 3.0,
                always_smallest: 0.5,
                tokens: 10,
            },
            latency_ms: ms,
            score,
            lambda: None,
        }
    }

    #[test]
    fn a_period_counts_decisions_models_costs_and_scores() {
        let mut stats = DashboardStats::default();
        stats.record(entry("keep", "small", Some(0.9), 3));
        stats.record(entry("escalate", "large", Some(0.1), 40));
        stats.record(entry("keep", "small", None, 4));
        let p = stats.since_start();
        assert_eq!(p.requests, 3);
        assert_eq!(p.decisions["keep"], 2);
        assert_eq!(p.answered_by["large"], 1);
        assert_eq!(p.calls_by["small"], 5);
        assert_eq!(p.tasks["chat"].escalated, 1);
        assert_eq!(p.cost.always_largest, 9.0);
        assert_eq!(p.scores.bins[18], 1);
        assert_eq!(p.scores.bins[2], 1);
        assert_eq!(p.scores.unknown, 1);
        assert_eq!(p.latency["keep"].quantile(0.5), Some(5));
        assert_eq!(p.latency["escalate"].quantile(0.99), Some(50));
        assert_eq!(stats.recent(Instant::now()).requests, 3);
    }

    #[test]
    fn the_ring_and_the_key_maps_stay_bounded() {
        let mut stats = DashboardStats::default();
        for i in 0..RING_CAPACITY + 10 {
            let mut e = entry("keep", "small", Some(1.0), 1);
            e.task = format!("task{i}");
            e.lambda = Some(i as f64);
            stats.record(e);
        }
        assert_eq!(stats.ring.len(), RING_CAPACITY);
        let p = stats.since_start();
        assert_eq!(p.tasks.len(), MAX_KEYS + 1);
        assert_eq!(p.lambdas.len(), MAX_KEYS + 1);
        assert_eq!(p.requests, (RING_CAPACITY + 10) as u64);
        assert_eq!(p.scores.bins[SCORE_BINS - 1], p.requests);
    }

    #[test]
    fn a_latency_quantile_is_its_bucket_bound() {
        let mut h = LatencyHistogram::default();
        for ms in [1, 1, 1, 1, 1, 1, 1, 1, 1, 70_000] {
            h.add(ms);
        }
        assert_eq!(h.quantile(0.5), Some(1));
        assert_eq!(h.quantile(0.99), None, "above the last bound");
        let shown = serde_json::to_value(&h).unwrap();
        assert_eq!(shown["p50_ms"], 1);
        assert_eq!(shown["count"], 10);
    }

    #[test]
    fn lambda_keys_round_to_three_digits() {
        assert_eq!(lambda_key(0.123456), "0.123");
        assert_eq!(lambda_key(2.0), "2");
    }
}
