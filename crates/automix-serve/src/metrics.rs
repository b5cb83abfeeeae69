//! The counters and histogram behind `/metrics`, kept in a `prometheus` registry (the
//! maintained crate renders the text exposition format, escaping label values).

use std::time::Duration;

use prometheus::{
    CounterVec, Encoder, Gauge, Histogram, HistogramOpts, IntCounter, IntCounterVec, IntGauge,
    IntGaugeVec, Opts, Registry, TextEncoder,
};

use automix::router::RouteOutcome;
use automix::traffic::ShadowCounts;

use crate::error::ErrorKind;

/// Latency histogram bucket bounds, seconds.
const BUCKETS: [f64; 10] = [0.005, 0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0];

/// The error counters, by [`ErrorKind`]: every error the proxy sends, as a status or as an
/// SSE error event, is counted by exactly one of them.
#[derive(Debug, Clone)]
pub(crate) struct ErrorCounters {
    client: IntCounter,
    upstream: IntCounter,
    server: IntCounter,
}

impl ErrorCounters {
    /// Counts one error of `kind`.
    pub(crate) fn count(&self, kind: ErrorKind) {
        match kind {
            ErrorKind::InvalidRequest => self.client.inc(),
            ErrorKind::Upstream => self.upstream.inc(),
            ErrorKind::Server => self.server.inc(),
        }
    }
}

/// Counters and histograms for `/metrics`.
#[derive(Debug, Clone)]
pub struct ProxyMetrics {
    registry: Registry,
    requests: IntCounter,
    escalations: IntCounter,
    errors: ErrorCounters,
    pub(crate) panics: IntCounter,
    pub(crate) feedback_refused: IntCounter,
    model_calls: IntCounterVec,
    failed_checks: IntCounterVec,
    tokens: IntCounterVec,
    cost: CounterVec,
    latency: Histogram,
    belief_healthy: IntGauge,
    shadow: ShadowGauges,
    retrains: IntCounterVec,
}

/// The shadow's counts (`automix.shadow`), read from it when `/metrics` renders.
#[derive(Debug, Clone)]
struct ShadowGauges {
    rows: IntGauge,
    skipped: IntGaugeVec,
    failed: IntGauge,
    cost: Gauge,
}

impl ShadowGauges {
    fn new(r: &Registry) -> Self {
        Self {
            rows: registered(
                r,
                IntGauge::new("automix_shadow_rows", "Shadow rows written."),
            ),
            skipped: registered(
                r,
                IntGaugeVec::new(
                    Opts::new(
                        "automix_shadow_skipped",
                        "Routed requests drawn for a shadow answer but not shadowed, by reason.",
                    ),
                    &["reason"],
                ),
            ),
            failed: registered(
                r,
                IntGauge::new("automix_shadow_failed", "Shadowed requests that failed."),
            ),
            cost: registered(
                r,
                Gauge::new("automix_shadow_cost", "Money the shadow answers spent."),
            ),
        }
    }

    fn set(&self, c: &ShadowCounts) {
        self.rows.set(c.rows as i64);
        self.skipped.with_label_values(&["busy"]).set(c.busy as i64);
        self.skipped
            .with_label_values(&["over_budget"])
            .set(c.over_budget as i64);
        self.skipped
            .with_label_values(&["judge_unparsed"])
            .set(c.judge_unparsed as i64);
        self.failed.set(c.failed as i64);
        self.cost.set(c.cost);
    }
}

impl Default for ProxyMetrics {
    fn default() -> Self {
        Self::new()
    }
}

/// Registers `metric` in `registry`. The names are this file's constants, each registered
/// once, so a failure is a bug here: it fails loudly at start, never per request.
fn registered<M>(registry: &Registry, metric: prometheus::Result<M>) -> M
where
    M: prometheus::core::Collector + Clone + 'static,
{
    let metric = metric.expect("a valid metric definition");
    registry
        .register(Box::new(metric.clone()))
        .expect("metric names are unique");
    metric
}

impl ProxyMetrics {
    /// Fresh counters in their own registry.
    pub fn new() -> Self {
        let r = Registry::new();
        let counter = |name: &str, help: &str| registered(&r, IntCounter::new(name, help));
        let per_model = |name: &str, help: &str| {
            registered(&r, IntCounterVec::new(Opts::new(name, help), &["model"]))
        };
        let latency = HistogramOpts::new(
            "automix_request_duration_seconds",
            "Routed request latency.",
        )
        .buckets(BUCKETS.to_vec());
        Self {
            requests: counter("automix_requests_total", "Routed requests."),
            escalations: counter(
                "automix_escalations_total",
                "Requests that left the first model.",
            ),
            errors: ErrorCounters {
                client: counter(
                    "automix_client_errors_total",
                    "Requests rejected as invalid, unauthorised or over a limit (4xx).",
                ),
                upstream: counter(
                    "automix_upstream_errors_total",
                    "Requests failed by an upstream model.",
                ),
                server: counter(
                    "automix_server_errors_total",
                    "Requests failed by this server.",
                ),
            },
            panics: counter(
                "automix_panics_total",
                "Requests answered 500 because a handler panicked.",
            ),
            feedback_refused: counter(
                "automix_feedback_refused_total",
                "Feedback refused by a key's rate limit or weight cap (429).",
            ),
            model_calls: per_model("automix_model_calls_total", "Upstream calls per model."),
            failed_checks: registered(
                &r,
                IntCounterVec::new(
                    Opts::new(
                        "automix_answer_checks_failed_total",
                        "Answers that failed a zero-call check, per check.",
                    ),
                    &["check"],
                ),
            ),
            tokens: per_model("automix_tokens_total", "Tokens per model."),
            cost: registered(
                &r,
                CounterVec::new(
                    Opts::new(
                        "automix_cost_total",
                        "Money spent per model (llm_data prices).",
                    ),
                    &["model"],
                ),
            ),
            latency: registered(&r, Histogram::with_opts(latency)),
            belief_healthy: registered(
                &r,
                IntGauge::new(
                    "automix_belief_store_healthy",
                    "Whether the shared belief's store answers.",
                ),
            ),
            shadow: ShadowGauges::new(&r),
            retrains: registered(
                &r,
                IntCounterVec::new(
                    Opts::new(
                        "automix_retrains_total",
                        "Retrains on shadow rows, by outcome (swapped, kept, failed).",
                    ),
                    &["outcome"],
                ),
            ),
            registry: r,
        }
    }

    /// Records a routed (or named-route) outcome: the request, its calls and its latency.
    pub(crate) fn record(&self, outcome: &RouteOutcome, elapsed: Duration) {
        self.requests.inc();
        if outcome.route_to_llm {
            self.escalations.inc();
        }
        for c in &outcome.calls {
            let model = [c.model.as_str()];
            self.model_calls.with_label_values(&model).inc();
            self.tokens
                .with_label_values(&model)
                .inc_by(c.tokens.prompt + c.tokens.completion);
            if c.cost.is_finite() && c.cost >= 0.0 {
                self.cost.with_label_values(&model).inc_by(c.cost);
            }
        }
        for f in &outcome.failed_checks {
            self.failed_checks
                .with_label_values(&[f.check.name()])
                .inc();
        }
        self.latency.observe(elapsed.as_secs_f64());
    }

    /// Records a named-route stream at its first byte (its calls are not known yet).
    pub(crate) fn record_direct_stream(&self, elapsed: Duration) {
        self.requests.inc();
        self.latency.observe(elapsed.as_secs_f64());
    }

    /// Counts one retrain by its outcome.
    pub(crate) fn count_retrain(&self, outcome: &str) {
        self.retrains.with_label_values(&[outcome]).inc();
    }

    /// Counts one error of `kind`.
    pub(crate) fn count(&self, kind: ErrorKind) {
        self.errors.count(kind);
    }

    /// The error counters, for a stream that may fail after its handler returned.
    pub(crate) fn error_counter(&self) -> ErrorCounters {
        self.errors.clone()
    }

    /// Prometheus text exposition; the belief store's health when there is a shared belief,
    /// the shadow's counts when there is a shadow.
    pub fn render(&self, belief_healthy: Option<bool>, shadow: Option<ShadowCounts>) -> String {
        if let Some(healthy) = belief_healthy {
            self.belief_healthy.set(i64::from(healthy));
        }
        if let Some(c) = &shadow {
            self.shadow.set(c);
        }
        let mut families = self.registry.gather();
        if belief_healthy.is_none() {
            families.retain(|f| f.name() != "automix_belief_store_healthy");
        }
        if shadow.is_none() {
            families.retain(|f| !f.name().starts_with("automix_shadow_"));
        }
        let mut out = Vec::new();
        // Encoding into a Vec cannot fail for well-formed families.
        if TextEncoder::new().encode(&families, &mut out).is_err() {
            return String::new();
        }
        String::from_utf8(out).unwrap_or_default()
    }
}
