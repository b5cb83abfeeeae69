//! `automix serve`: an OpenAI-compatible proxy that applies AutoMix to any OpenAI client.
//!
//! `POST /v1/chat/completions` with model `automix` routes the client's own request (its
//! messages and sampling fields go to whichever model answers); the verifier sees the last
//! user message as the question. The reply is a normal chat completion from the kept model,
//! with routing metadata in `x-automix-*` headers and an extra `automix` field.

#![cfg_attr(test, allow(clippy::unwrap_used))]

use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use axum::body::Body;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde_json::{Value, json};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use automix_llm::{ChatMessage, ChatRequest};

use automix::AutomixError;
use automix::dataset::{QueryRow, query_id};
use automix::feedback::Scorer;
use automix::router::{RouteOptions, RouteOutcome, Routed, Router};
use automix::sync::lock;
use futures::StreamExt;

mod body;
mod error;
mod limits;
pub use error::ApiError;
pub use limits::{FeedbackLimitSettings, FeedbackLimits, Refusal};

/// Limits and auth of the proxy.
#[derive(Debug, Clone)]
pub struct ProxySettings {
    /// Accepted client bearer tokens; empty = no auth.
    pub client_keys: Vec<String>,
    /// Bearer tokens of `/admin/*`; empty = admin endpoints refused.
    pub admin_keys: Vec<String>,
    /// Largest request body in bytes.
    pub body_limit: usize,
    /// Concurrent requests per client key; with auth off every caller is anonymous and
    /// they share this one limit (a token that is not checked is not an identity).
    pub per_client_concurrency: usize,
    /// Limit for one routed request, upstream calls included.
    pub request_timeout: Duration,
    /// Open connections at once; a connection past it is closed at accept.
    pub max_connections: usize,
    /// Longest wait for a request's headers (also between requests on a kept-alive
    /// connection): a client that never finishes them is disconnected.
    pub header_read_timeout: Duration,
    /// While a streamed request is being verified, an SSE comment goes out this often so
    /// clients and intermediaries do not time the stream out.
    pub stream_keepalive: Duration,
    /// Longest wait for a request's whole body once its headers are in: a client that
    /// stalls mid-body gets a 408 and its connection is closed.
    pub body_read_timeout: Duration,
    /// How much feedback one client key may send and fold into the shared belief.
    pub feedback: FeedbackLimitSettings,
}

impl Default for ProxySettings {
    fn default() -> Self {
        Self {
            client_keys: Vec::new(),
            admin_keys: Vec::new(),
            body_limit: 1 << 20,
            per_client_concurrency: 64,
            request_timeout: Duration::from_secs(300),
            max_connections: 4096,
            header_read_timeout: Duration::from_secs(10),
            stream_keepalive: Duration::from_secs(2),
            body_read_timeout: Duration::from_secs(30),
            feedback: FeedbackLimitSettings::default(),
        }
    }
}

/// Builds a fresh router (from the policy file) for reloads.
pub type RouterLoader = Box<dyn Fn() -> automix::Result<Router> + Send + Sync>;

/// Counters and histograms for `/metrics`.
#[derive(Debug, Default)]
pub struct ProxyMetrics {
    requests: AtomicU64,
    escalations: AtomicU64,
    upstream_errors: AtomicU64,
    client_errors: AtomicU64,
    panics: Arc<AtomicU64>,
    feedback_refused: AtomicU64,
    per_model: Mutex<HashMap<String, (u64, u64, f64)>>,
    latency: Mutex<Vec<u64>>,
}

/// Latency histogram bucket bounds, seconds.
const BUCKETS: [f64; 10] = [0.005, 0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0];

impl ProxyMetrics {
    fn record(&self, outcome: &RouteOutcome, elapsed: Duration) {
        self.requests.fetch_add(1, Ordering::Relaxed);
        if outcome.route_to_llm {
            self.escalations.fetch_add(1, Ordering::Relaxed);
        }
        let mut m = lock(&self.per_model);
        for c in &outcome.calls {
            let e = m.entry(c.model.clone()).or_default();
            e.0 += 1;
            e.1 += c.tokens.prompt + c.tokens.completion;
            e.2 += c.cost;
        }
        self.observe_latency(elapsed);
    }

    fn observe_latency(&self, elapsed: Duration) {
        {
            let mut l = lock(&self.latency);
            if l.is_empty() {
                l.resize(BUCKETS.len() + 2, 0);
            }
            let s = elapsed.as_secs_f64();
            for (i, b) in BUCKETS.iter().enumerate() {
                if s <= *b {
                    l[i] += 1;
                }
            }
            l[BUCKETS.len()] += 1;
            l[BUCKETS.len() + 1] += elapsed.as_micros() as u64;
        }
    }

    /// Prometheus text exposition.
    pub fn render(&self) -> String {
        let mut out = String::new();
        let counter = |out: &mut String, name: &str, help: &str, v: u64| {
            out.push_str(&format!(
                "# HELP {name} {help}\n# TYPE {name} counter\n{name} {v}\n"
            ));
        };
        counter(
            &mut out,
            "automix_requests_total",
            "Routed requests.",
            self.requests.load(Ordering::Relaxed),
        );
        counter(
            &mut out,
            "automix_escalations_total",
            "Requests that left the first model.",
            self.escalations.load(Ordering::Relaxed),
        );
        counter(
            &mut out,
            "automix_upstream_errors_total",
            "Requests failed by an upstream model.",
            self.upstream_errors.load(Ordering::Relaxed),
        );
        counter(
            &mut out,
            "automix_client_errors_total",
            "Requests rejected as invalid or unauthorised.",
            self.client_errors.load(Ordering::Relaxed),
        );
        counter(
            &mut out,
            "automix_feedback_refused_total",
            "Feedback refused by a key's rate limit or weight cap (429).",
            self.feedback_refused.load(Ordering::Relaxed),
        );
        counter(
            &mut out,
            "automix_panics_total",
            "Requests answered 500 because a handler panicked.",
            self.panics.load(Ordering::Relaxed),
        );
        {
            let m = lock(&self.per_model);
            let mut models: Vec<_> = m.iter().collect();
            models.sort_by(|a, b| a.0.cmp(b.0));
            out.push_str("# HELP automix_model_calls_total Upstream calls per model.\n# TYPE automix_model_calls_total counter\n");
            for (name, (calls, _, _)) in &models {
                out.push_str(&format!(
                    "automix_model_calls_total{{model=\"{name}\"}} {calls}\n"
                ));
            }
            out.push_str("# HELP automix_tokens_total Tokens per model.\n# TYPE automix_tokens_total counter\n");
            for (name, (_, tokens, _)) in &models {
                out.push_str(&format!(
                    "automix_tokens_total{{model=\"{name}\"}} {tokens}\n"
                ));
            }
            out.push_str("# HELP automix_cost_total Money spent per model (llm_data prices).\n# TYPE automix_cost_total counter\n");
            for (name, (_, _, cost)) in &models {
                out.push_str(&format!("automix_cost_total{{model=\"{name}\"}} {cost}\n"));
            }
        }
        let l = lock(&self.latency);
        if !l.is_empty() {
            out.push_str("# HELP automix_request_duration_seconds Routed request latency.\n# TYPE automix_request_duration_seconds histogram\n");
            for (i, b) in BUCKETS.iter().enumerate() {
                out.push_str(&format!(
                    "automix_request_duration_seconds_bucket{{le=\"{b}\"}} {}\n",
                    l[i]
                ));
            }
            let count = l[BUCKETS.len()];
            out.push_str(&format!(
                "automix_request_duration_seconds_bucket{{le=\"+Inf\"}} {count}\n"
            ));
            out.push_str(&format!(
                "automix_request_duration_seconds_sum {}\nautomix_request_duration_seconds_count {count}\n",
                l[BUCKETS.len() + 1] as f64 / 1e6
            ));
        }
        out
    }
}

/// Shared state of the proxy.
pub struct ProxyState {
    router: RwLock<Arc<Router>>,
    loader: Option<RouterLoader>,
    settings: ProxySettings,
    /// The metrics `/metrics` serves.
    pub metrics: ProxyMetrics,
    clients: Mutex<HashMap<String, Arc<Semaphore>>>,
    feedback_limits: FeedbackLimits,
}

impl ProxyState {
    /// State around `router`; `loader` (if any) rebuilds it on reload.
    pub fn new(router: Router, loader: Option<RouterLoader>, settings: ProxySettings) -> Arc<Self> {
        Arc::new(Self {
            router: RwLock::new(Arc::new(router)),
            loader,
            metrics: ProxyMetrics::default(),
            clients: Mutex::new(HashMap::new()),
            feedback_limits: FeedbackLimits::new(settings.feedback),
            settings,
        })
    }

    /// Rebuilds the router; requests in flight keep the one they started with. Counts the
    /// old router's shared belief has not yet sent move to the new one (none is lost).
    pub async fn reload(&self) -> automix::Result<()> {
        let loader = self.loader.as_ref().ok_or_else(|| {
            AutomixError::Reload("this proxy has no policy file to reload".into())
        })?;
        let fresh = Arc::new(loader()?);
        if let Some(old) = self.router() {
            fresh.inherit_belief(&old).await;
        }
        // A poisoned lock is recovered (the router inside is whole: it is only ever
        // replaced), never skipped: a reload that reports success has taken effect.
        *automix::sync::write(&self.router) = fresh;
        Ok(())
    }

    fn router(&self) -> Option<Arc<Router>> {
        Some(automix::sync::read(&self.router).clone())
    }

    /// The concurrency slot of `client`. Only configured keys (and the one anonymous
    /// caller) get slots, so the map is bounded by the key list, whatever tokens arrive.
    fn client_slot(&self, client: &str) -> Arc<Semaphore> {
        let mut map = lock(&self.clients);
        map.entry(client.to_owned())
            .or_insert_with(|| {
                Arc::new(Semaphore::new(self.settings.per_client_concurrency.max(1)))
            })
            .clone()
    }
}

/// The axum app.
pub fn app(state: Arc<ProxyState>) -> axum::Router {
    let limit = state.settings.body_limit;
    axum::Router::new()
        .route("/v1/chat/completions", post(chat_completions))
        .route("/v1/models", get(models))
        .route("/health", get(health))
        .route("/metrics", get(metrics))
        .route("/admin/reload", post(reload))
        .route("/admin/belief", get(admin_belief))
        .route("/v1/automix/feedback", post(feedback))
        .layer(DefaultBodyLimit::max(limit))
        .layer(axum::middleware::from_fn_with_state(
            body::BodyRules {
                timeout: state.settings.body_read_timeout,
                limit,
            },
            body::read_body_within,
        ))
        .layer(axum::middleware::map_response(openai_error_form))
        .layer(axum::middleware::from_fn_with_state(
            state.metrics.panics.clone(),
            catch_panic,
        ))
        .with_state(state)
}

/// The client id of every caller when auth is off.
const ANONYMOUS: &str = "anonymous";

/// An OpenAI-style error response.
pub fn error_response(
    status: StatusCode,
    kind: &'static str,
    code: &str,
    message: &str,
) -> Response {
    ApiError::new(status, kind, code, message).into_response()
}

/// Rewrites the framework's plain-text or empty 404, 405 and 413 into OpenAI error form.
async fn openai_error_form(response: Response) -> Response {
    let is_json = response
        .headers()
        .get(header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/json"));
    let status = response.status();
    let (code, message) = match status {
        StatusCode::NOT_FOUND => ("not_found", "no such endpoint"),
        StatusCode::METHOD_NOT_ALLOWED => ("method_not_allowed", "method not allowed here"),
        StatusCode::PAYLOAD_TOO_LARGE => ("request_too_large", "the request body is too large"),
        _ => return response,
    };
    if is_json {
        return response;
    }
    error_response(status, "invalid_request_error", code, message)
}

/// Last resort: a panic in a handler becomes a counted 500 in OpenAI form instead of a
/// dropped connection. Validation at load is what keeps panics out; this keeps one from
/// reaching a client as an empty reply.
async fn catch_panic(
    State(panics): State<Arc<AtomicU64>>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    use futures::FutureExt;
    match std::panic::AssertUnwindSafe(next.run(request))
        .catch_unwind()
        .await
    {
        Ok(response) => response,
        Err(_) => {
            panics.fetch_add(1, Ordering::Relaxed);
            error_response(
                StatusCode::INTERNAL_SERVER_ERROR,
                "server_error",
                "internal_error",
                "internal error while handling the request",
            )
        }
    }
}

fn bearer(headers: &HeaderMap) -> Option<&str> {
    headers
        .get(header::AUTHORIZATION)?
        .to_str()
        .ok()?
        .strip_prefix("Bearer ")
        .map(str::trim)
}

/// Equal bytes, compared in time that depends on the lengths only.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// The position of `token` in `keys`, every key compared (no early exit on a match).
fn key_index(keys: &[String], token: &str) -> Option<usize> {
    keys.iter().enumerate().fold(None, |found, (i, k)| {
        let hit = constant_time_eq(k.as_bytes(), token.as_bytes());
        found.or(hit.then_some(i))
    })
}

/// The caller's tenant id: `key-<i>` for the i-th configured client key (an identity that
/// is not the secret, so it may be kept and logged), [`ANONYMOUS`] with auth off.
fn authorise(state: &ProxyState, headers: &HeaderMap) -> Result<String, Box<Response>> {
    let token = bearer(headers);
    if state.settings.client_keys.is_empty() {
        return Ok(ANONYMOUS.to_owned());
    }
    match token.and_then(|t| key_index(&state.settings.client_keys, t)) {
        Some(i) => Ok(format!("key-{i}")),
        None => {
            state.metrics.client_errors.fetch_add(1, Ordering::Relaxed);
            Err(Box::new(error_response(
                StatusCode::UNAUTHORIZED,
                "invalid_request_error",
                "invalid_api_key",
                "missing or invalid bearer token",
            )))
        }
    }
}

/// Admin endpoints take only admin keys and are refused outright when none is configured:
/// a reload is not something an anonymous caller may trigger.
fn authorise_admin(state: &ProxyState, headers: &HeaderMap) -> Result<(), Box<Response>> {
    if state.settings.admin_keys.is_empty() {
        return Err(Box::new(error_response(
            StatusCode::FORBIDDEN,
            "invalid_request_error",
            "admin_disabled",
            "admin endpoints are disabled: set AUTOMIX_ADMIN_KEYS",
        )));
    }
    match bearer(headers).and_then(|t| key_index(&state.settings.admin_keys, t)) {
        Some(_) => Ok(()),
        None => Err(Box::new(error_response(
            StatusCode::UNAUTHORIZED,
            "invalid_request_error",
            "invalid_api_key",
            "missing or invalid admin bearer token",
        ))),
    }
}

async fn reload(State(state): State<Arc<ProxyState>>, headers: HeaderMap) -> Response {
    if let Err(r) = authorise_admin(&state, &headers) {
        return *r;
    }
    match state.reload().await {
        Ok(()) => axum::Json(json!({"reloaded": true})).into_response(),
        Err(e) => error_response(
            StatusCode::INTERNAL_SERVER_ERROR,
            "server_error",
            "reload_failed",
            &e.to_string(),
        ),
    }
}

/// `ok`, or `degraded` while the shared belief's store does not answer (routing goes on
/// with the last table).
async fn health(State(state): State<Arc<ProxyState>>) -> Response {
    let store_down = state
        .router()
        .and_then(|r| r.belief_healthy())
        .is_some_and(|healthy| !healthy);
    let body = if store_down {
        json!({"status": "degraded", "belief_store": "unreachable"})
    } else {
        json!({"status": "ok"})
    };
    axum::Json(body).into_response()
}

/// The online belief: store, health, updates, posterior per model, the table (admin key).
async fn admin_belief(State(state): State<Arc<ProxyState>>, headers: HeaderMap) -> Response {
    if let Err(r) = authorise_admin(&state, &headers) {
        return *r;
    }
    let snapshot = match state.router() {
        Some(router) => router.belief_snapshot().await,
        None => None,
    };
    match snapshot {
        Some(s) => axum::Json(s).into_response(),
        None => error_response(
            StatusCode::NOT_FOUND,
            "invalid_request_error",
            "no_online_belief",
            "this server has no online belief (automix.online_belief is off)",
        ),
    }
}

/// Who may score: an admin key scores any completion; a client key only its own.
enum FeedbackCaller {
    Admin,
    Tenant(String),
}

fn feedback_caller(state: &ProxyState, headers: &HeaderMap) -> Result<FeedbackCaller, Box<Response>> {
    let is_admin = bearer(headers)
        .is_some_and(|t| key_index(&state.settings.admin_keys, t).is_some());
    if is_admin {
        return Ok(FeedbackCaller::Admin);
    }
    authorise(state, headers).map(FeedbackCaller::Tenant)
}

/// A 429 of a feedback limit, with the wait in `Retry-After`.
fn feedback_refused(state: &ProxyState, refusal: Refusal) -> Response {
    state.metrics.client_errors.fetch_add(1, Ordering::Relaxed);
    state.metrics.feedback_refused.fetch_add(1, Ordering::Relaxed);
    let (code, message, wait) = match refusal {
        Refusal::Rate { retry_after } => (
            "feedback_rate_limited",
            "too many feedback requests for this key",
            retry_after,
        ),
        Refusal::Weight { retry_after } => (
            "feedback_quota_exceeded",
            "this key's feedback for the current window is used up",
            retry_after,
        ),
    };
    ApiError {
        retry_after: Some(wait.as_secs().max(1)),
        ..ApiError::new(StatusCode::TOO_MANY_REQUESTS, "invalid_request_error", code, message)
    }
    .into_response()
}

/// `POST /v1/automix/feedback` `{"id": <completion id or x-automix-request-id>, "score":
/// <0..1 or a boolean>}`: credits the model that answered, once. Only the key that made the
/// completion (or an admin key) may score it; any other gets the 404 of an unknown id.
/// Client keys are rate limited and capped in how many scores they fold in per window.
async fn feedback(
    State(state): State<Arc<ProxyState>>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Response {
    let caller = match feedback_caller(&state, &headers) {
        Ok(c) => c,
        Err(r) => return *r,
    };
    let now = Instant::now();
    if let FeedbackCaller::Tenant(t) = &caller
        && let Err(refusal) = state.feedback_limits.request(t, now)
    {
        return feedback_refused(&state, refusal);
    }
    let field = |param: &str, message: &str| field_response(&state, &field_error(param, message));
    let Ok(value) = serde_json::from_slice::<Value>(&body) else {
        return field("body", "the body must be JSON: {\"id\": …, \"score\": …}");
    };
    let Some(id) = value["id"].as_str() else {
        return field(
            "id",
            "`id` must be the completion id or x-automix-request-id",
        );
    };
    let score = match &value["score"] {
        Value::Bool(b) => f64::from(u8::from(*b)),
        Value::Number(n) => n.as_f64().unwrap_or(f64::NAN),
        _ => f64::NAN,
    };
    let Some(router) = state.router() else {
        return error_response(
            StatusCode::INTERNAL_SERVER_ERROR,
            "server_error",
            "router_unavailable",
            "router unavailable",
        );
    };
    let route = id.strip_prefix("chatcmpl-").unwrap_or(id);
    let scorer = match &caller {
        FeedbackCaller::Admin => Scorer::Admin,
        FeedbackCaller::Tenant(t) => Scorer::Tenant(Some(t)),
    };
    let admit = || match &caller {
        FeedbackCaller::Admin => Ok(()),
        FeedbackCaller::Tenant(t) => state.feedback_limits.weigh(t, now),
    };
    use automix::feedback::{FeedbackError as E, FeedbackRefused as R};
    let shown = excerpt(id);
    match router.feedback(route, score, scorer, admit).await {
        Ok(()) => axum::Json(json!({"accepted": true, "id": id})).into_response(),
        Err(R::Admission(refusal)) => feedback_refused(&state, refusal),
        Err(R::Route(e @ E::BadScore(_))) => field("score", &e.to_string()),
        Err(R::Route(E::Unknown(_))) => client_error(
            &state,
            format!("no recent completion has id {shown:?} (unknown, or older than an hour)"),
            "unknown_id",
            StatusCode::NOT_FOUND,
        ),
        Err(R::Route(E::AlreadyScored(_))) => client_error(
            &state,
            format!("completion {shown:?} was scored already"),
            "already_scored",
            StatusCode::CONFLICT,
        ),
        Err(R::Route(e @ E::NoBelief)) => client_error(
            &state,
            e.to_string(),
            "feedback_unsupported",
            StatusCode::BAD_REQUEST,
        ),
    }
}

async fn metrics(State(state): State<Arc<ProxyState>>, headers: HeaderMap) -> Response {
    // Metrics name models and volumes: with auth on they need a key (client or admin).
    if !state.settings.client_keys.is_empty()
        && authorise_admin(&state, &headers).is_err()
        && let Err(r) = authorise(&state, &headers)
    {
        return *r;
    }
    let mut text = state.metrics.render();
    if let Some(healthy) = state.router().and_then(|r| r.belief_healthy()) {
        text.push_str(&format!(
            "# HELP automix_belief_store_healthy Whether the shared belief's store answers.\n\
             # TYPE automix_belief_store_healthy gauge\nautomix_belief_store_healthy {}\n",
            u8::from(healthy)
        ));
    }
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], text).into_response()
}

async fn models(State(state): State<Arc<ProxyState>>, headers: HeaderMap) -> Response {
    if let Err(r) = authorise(&state, &headers) {
        return *r;
    }
    let mut data =
        vec![json!({"id": "automix", "object": "model", "created": 0, "owned_by": "automix"})];
    if let Some(router) = state.router() {
        for m in router.models().models() {
            data.push(json!({"id": m.entry.name, "object": "model", "created": 0, "owned_by": m.entry.service.clone().unwrap_or_else(|| "upstream".into())}));
        }
    }
    axum::Json(json!({"object": "list", "data": data})).into_response()
}

/// The text of an OpenAI message `content`: a string, an array of parts (text parts joined;
/// images and other parts travel upstream in the original message), or `null` (an assistant
/// turn that only called tools).
fn content_text(content: &Value) -> Option<String> {
    match content {
        Value::Null => Some(String::new()),
        Value::String(s) => Some(s.clone()),
        Value::Array(parts) => Some(
            parts
                .iter()
                .filter(|p| p["type"] == "text")
                .filter_map(|p| p["text"].as_str())
                .collect::<Vec<_>>()
                .join("\n"),
        ),
        _ => None,
    }
}

/// A client error naming the request field (400 with `param`).
#[derive(Debug, Clone, PartialEq)]
pub struct FieldError {
    /// The field, e.g. `max_tokens` or `messages[2].content`.
    pub param: String,
    /// What is wrong.
    pub message: String,
}

fn field_error(param: &str, message: impl Into<String>) -> FieldError {
    FieldError {
        param: param.to_owned(),
        message: message.into(),
    }
}

/// Checks the sampling fields OpenAI defines ranges for: a value out of range or of the
/// wrong type is a 400 naming the field, never silently dropped or clamped.
fn validate_sampling(body: &Value) -> Result<(), FieldError> {
    let number_in = |field: &str, lo: f64, hi: f64| -> Result<(), FieldError> {
        match &body[field] {
            Value::Null => Ok(()),
            Value::Number(n) if n.as_f64().is_some_and(|x| (lo..=hi).contains(&x)) => Ok(()),
            other => Err(field_error(
                field,
                format!("`{field}` must be a number in [{lo}, {hi}], got {}", shown(other)),
            )),
        }
    };
    number_in("temperature", 0.0, 2.0)?;
    number_in("top_p", 0.0, 1.0)?;
    number_in("presence_penalty", -2.0, 2.0)?;
    number_in("frequency_penalty", -2.0, 2.0)?;
    for field in ["max_tokens", "max_completion_tokens"] {
        match &body[field] {
            Value::Null => {}
            Value::Number(n)
                if n.as_u64()
                    .is_some_and(|t| (1..=u64::from(u32::MAX)).contains(&t)) => {}
            other => {
                return Err(field_error(
                    field,
                    format!(
                        "`{field}` must be an integer in [1, {}], got {}",
                        u32::MAX,
                        shown(other)
                    ),
                ));
            }
        }
    }
    match &body["n"] {
        Value::Null => {}
        Value::Number(n) if n.as_u64() == Some(1) => {}
        other => {
            // One routed answer per request: more would be n separate routings.
            return Err(field_error("n", format!("`n` must be 1 here, got {}", shown(other))));
        }
    }
    match &body["stream"] {
        Value::Null | Value::Bool(_) => {}
        other => {
            return Err(field_error(
                "stream",
                format!("`stream` must be a boolean, got {}", shown(other)),
            ));
        }
    }
    match &body["seed"] {
        Value::Null => {}
        Value::Number(n) if n.as_u64().is_some() => {}
        other => {
            return Err(field_error(
                "seed",
                format!("`seed` must be a non-negative integer, got {}", shown(other)),
            ));
        }
    }
    match &body["stop"] {
        Value::Null | Value::String(_) => {}
        Value::Array(a) if a.len() <= 4 && a.iter().all(Value::is_string) => {}
        other => {
            return Err(field_error(
                "stop",
                format!("`stop` must be a string or up to 4 strings, got {}", shown(other)),
            ));
        }
    }
    Ok(())
}

/// The 400 of a request field at fault, counted as a client error.
fn field_response(state: &ProxyState, e: &FieldError) -> Response {
    state.metrics.client_errors.fetch_add(1, Ordering::Relaxed);
    ApiError {
        param: Some(e.param.clone()),
        ..ApiError::new(
            StatusCode::BAD_REQUEST,
            "invalid_request_error",
            "invalid_request",
            &e.message,
        )
    }
    .into_response()
}

/// A request's own operating point: `automix.lambda` in the body or `x-automix-lambda`
/// (the body wins), `x-automix-max-escalations`. Invalid values are 400s naming the field.
fn route_options(
    headers: &HeaderMap,
    body: &Value,
    lambda_family: Option<f64>,
) -> Result<RouteOptions, FieldError> {
    let header = |name: &str| -> Result<Option<String>, FieldError> {
        match headers.get(name) {
            None => Ok(None),
            Some(v) => v
                .to_str()
                .map(|s| Some(s.trim().to_owned()))
                .map_err(|_| field_error(name, format!("header {name} is not text"))),
        }
    };
    let valid_lambda = |l: f64| l.is_finite() && l >= 0.0;
    match &body["automix"] {
        Value::Null if body.get("automix").is_none() => {}
        Value::Object(_) => {}
        other => {
            return Err(field_error(
                "automix",
                format!(
                    "`automix` must be an object such as {{\"lambda\": 0.5}}, got {}",
                    json_kind(other)
                ),
            ));
        }
    }
    let from_body = match &body["automix"]["lambda"] {
        Value::Null => None,
        Value::Number(n) if n.as_f64().is_some_and(valid_lambda) => n.as_f64(),
        other => {
            return Err(field_error(
                "automix.lambda",
                format!("`automix.lambda` must be a number >= 0, got {}", shown(other)),
            ));
        }
    };
    let from_header = match header("x-automix-lambda")? {
        None => None,
        Some(text) => match text.parse::<f64>() {
            Ok(l) if valid_lambda(l) => Some(l),
            _ => {
                return Err(field_error(
                    "x-automix-lambda",
                    format!("x-automix-lambda must be a number >= 0, got {:?}", excerpt(&text)),
                ));
            }
        },
    };
    let lambda = from_body.or(from_header);
    if lambda.is_some() && lambda_family.is_none() {
        let param = if from_body.is_some() {
            "automix.lambda"
        } else {
            "x-automix-lambda"
        };
        return Err(field_error(
            param,
            "this server's policy has no λ family (a two-model policy trained with \
             routing_method auto or Calibrated has one)",
        ));
    }
    let max_escalations = match header("x-automix-max-escalations")? {
        None => None,
        Some(text) => Some(text.parse::<usize>().map_err(|_| {
            field_error(
                "x-automix-max-escalations",
                format!(
                    "x-automix-max-escalations must be an integer >= 0, got {:?}",
                    excerpt(&text)
                ),
            )
        })?),
    };
    Ok(RouteOptions {
        lambda,
        max_escalations,
        tenant: None,
    })
}

/// The JSON type of `v`, for errors that must not echo what a client sent.
fn json_kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// At most the first 32 characters of a client string, marked when cut: errors name what
/// the client sent without echoing a megabyte of it back.
pub fn excerpt(s: &str) -> String {
    const KEEP: usize = 32;
    match s.char_indices().nth(KEEP) {
        Some((cut, _)) => format!("{}… ({} bytes)", &s[..cut], s.len()),
        None => s.to_owned(),
    }
}

/// A client's JSON value in an error: its excerpt.
fn shown(v: &Value) -> String {
    excerpt(&v.to_string())
}

/// The request fields the router interprets; every other field travels to the answering
/// model as it came (`ChatRequest::extra`).
const INTERPRETED: [&str; 10] = [
    "model",
    "messages",
    "temperature",
    "max_tokens",
    "max_completion_tokens",
    "stop",
    "seed",
    "n",
    "stream",
    "automix",
];

/// The client's request as ours; errors are client errors (400) naming the field.
pub fn parse_chat_request(body: &Value) -> Result<(ChatRequest, String, bool), FieldError> {
    validate_sampling(body)?;
    let model = body["model"]
        .as_str()
        .ok_or_else(|| field_error("model", "field `model` is required"))?;
    let messages = body["messages"]
        .as_array()
        .ok_or_else(|| field_error("messages", "field `messages` must be an array"))?;
    let parsed = messages
        .iter()
        .enumerate()
        .map(|(i, m)| parse_message(i, m))
        .collect::<Result<Vec<_>, _>>()?;
    let question = parsed
        .iter()
        .rev()
        .find(|m| m.role == "user")
        .map(|m| m.content.clone())
        .ok_or_else(|| field_error("messages", "messages must contain a user message"))?;
    let stop = match &body["stop"] {
        Value::String(s) => vec![s.clone()],
        Value::Array(a) => a
            .iter()
            .filter_map(|s| s.as_str().map(str::to_owned))
            .collect(),
        _ => Vec::new(),
    };
    let extra = body
        .as_object()
        .map(|o| {
            o.iter()
                .filter(|(k, _)| !INTERPRETED.contains(&k.as_str()))
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect()
        })
        .unwrap_or_default();
    let request = ChatRequest {
        temperature: body["temperature"].as_f64().map(|t| t as f32),
        // Validated above: within u32.
        max_tokens: body["max_completion_tokens"]
            .as_u64()
            .or_else(|| body["max_tokens"].as_u64())
            .and_then(|t| u32::try_from(t).ok()),
        stop,
        seed: body["seed"].as_u64(),
        extra,
        ..ChatRequest::new(model, parsed)
    };
    Ok((request, question, body["stream"].as_bool().unwrap_or(false)))
}

/// Message `i` of a request: its text for the verifier, and the message itself to forward.
fn parse_message(i: usize, m: &Value) -> Result<ChatMessage, FieldError> {
    let object = m.as_object().ok_or_else(|| {
        field_error(
            &format!("messages[{i}]"),
            format!("messages[{i}] must be an object"),
        )
    })?;
    let role = m["role"].as_str().ok_or_else(|| {
        field_error(
            &format!("messages[{i}].role"),
            format!("messages[{i}].role must be a string"),
        )
    })?;
    let content = content_text(&m["content"]).ok_or_else(|| {
        field_error(
            &format!("messages[{i}].content"),
            format!("messages[{i}].content must be a string, an array of parts or null"),
        )
    })?;
    Ok(ChatMessage {
        role: role.to_owned(),
        content,
        original: Some(object.clone()),
    })
}

/// A request that passed every check: what it asks and how to route it.
struct Admitted {
    client: String,
    request: ChatRequest,
    question: String,
    stream: bool,
    router: Arc<Router>,
    options: RouteOptions,
    /// A named route (a configured model's name instead of `automix`).
    direct: bool,
}

async fn chat_completions(
    State(state): State<Arc<ProxyState>>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Response {
    let started = Instant::now();
    let a = match admit(&state, &headers, &body) {
        Ok(a) => a,
        Err(r) => return *r,
    };
    let slot = state.client_slot(&a.client);
    // The slot is held until the reply's last byte (or a disconnect): a stream moves it into
    // its body, so streams count against the limit for as long as they run.
    let Ok(permit) = slot.try_acquire_owned() else {
        return client_error(
            &state,
            "too many concurrent requests for this client".into(),
            "rate_limit_exceeded",
            StatusCode::TOO_MANY_REQUESTS,
        );
    };
    // Live streams carry text deltas; a request with tools is answered whole (buffered) so
    // that tool calls reach the client intact.
    if a.stream && !a.request.extra.contains_key("tools") {
        if a.direct {
            return live_stream(&state, &a.router, a.request, started, permit).await;
        }
        return routed_stream(state.clone(), a, started, permit);
    }
    let reply = routed_reply(&state, a, started).await;
    drop(permit);
    reply
}

/// A client error (4xx) in OpenAI form, counted.
fn client_error(state: &ProxyState, message: String, code: &str, status: StatusCode) -> Response {
    state.metrics.client_errors.fetch_add(1, Ordering::Relaxed);
    error_response(status, "invalid_request_error", code, &message)
}

/// Authorises and parses a request; the error is the response to send.
fn admit(state: &ProxyState, headers: &HeaderMap, body: &[u8]) -> Result<Admitted, Box<Response>> {
    let client = authorise(state, headers)?;
    let value: Value = serde_json::from_slice(body).map_err(|e| {
        Box::new(client_error(
            state,
            format!("request body is not valid JSON: {e}"),
            "invalid_json",
            StatusCode::BAD_REQUEST,
        ))
    })?;
    let (request, question, stream) =
        parse_chat_request(&value).map_err(|e| Box::new(field_response(state, &e)))?;
    let router = state.router().ok_or_else(|| {
        Box::new(error_response(
            StatusCode::INTERNAL_SERVER_ERROR,
            "server_error",
            "router_unavailable",
            "router unavailable",
        ))
    })?;
    // "automix" routes; a configured model's llm_data name is a named route straight to it.
    let direct = request.model != "automix";
    let family = if direct {
        Some(0.0)
    } else {
        router.lambda_family()
    };
    let options = RouteOptions {
        tenant: Some(client.clone()),
        ..route_options(headers, &value, family).map_err(|e| Box::new(field_response(state, &e)))?
    };
    let names: Vec<&str> = router
        .models()
        .models()
        .iter()
        .map(|m| m.entry.name.as_str())
        .collect();
    if direct && !names.contains(&request.model.as_str()) {
        return Err(Box::new(client_error(
            state,
            format!(
                "model {:?} is not served here; served: automix, {}",
                excerpt(&request.model),
                names.join(", ")
            ),
            "model_not_found",
            StatusCode::NOT_FOUND,
        )));
    }
    Ok(Admitted {
        client,
        request,
        question,
        stream,
        router,
        options,
        direct,
    })
}

/// The text of the last user message of `request`.
fn last_user_text(request: &ChatRequest) -> String {
    request
        .messages
        .iter()
        .rev()
        .find(|m| m.role == "user")
        .map(|m| m.content.clone())
        .unwrap_or_default()
}

/// What the verifier sees of a chat request: its last user message.
fn chat_query(question: String) -> QueryRow {
    QueryRow {
        id: query_id("chat", &question),
        task_name: "chat".into(),
        query: question,
        ground_truth: None,
        metric: None,
        choices: Vec::new(),
        task_id: None,
        context: None,
    }
}

/// A routed request with `stream: true`. The SSE response starts at once; while earlier
/// answers are verified, keep-alive comments flow. An answer kept unverified (the last
/// model, a pre-selected start) streams live as the model sends it; a verified answer is
/// sent whole once kept. What routing decided (model, path, decision) goes in the final
/// chunk's `automix` field, since the headers have gone by then.
fn routed_stream(
    state: Arc<ProxyState>,
    a: Admitted,
    started: Instant,
    permit: OwnedSemaphorePermit,
) -> Response {
    let (tx, rx) = tokio::sync::mpsc::channel::<String>(64);
    tokio::spawn(async move {
        let query = chat_query(a.question);
        let routing = a.router.route_chat_streaming(&query, a.request, &a.options);
        let routing = tokio::time::timeout(state.settings.request_timeout, routing);
        tokio::pin!(routing);
        let mut tick = tokio::time::interval(state.settings.stream_keepalive);
        tick.tick().await;
        let routed = loop {
            tokio::select! {
                r = &mut routing => break r,
                _ = tick.tick() => {
                    if tx.send(": keep-alive\n\n".into()).await.is_err() {
                        return; // the client left
                    }
                }
            }
        };
        let route_id = match &routed {
            Ok(Ok(Routed::Whole(o) | Routed::Live { outcome: o, .. })) => o.route_id.clone(),
            _ => String::new(),
        };
        let (id, created) = completion_id(&route_id);
        let events = match routed {
            Ok(Ok(Routed::Whole(o))) => {
                state.metrics.record(&o, started.elapsed());
                futures::stream::iter(outcome_events(&id, created, &o)).boxed()
            }
            Ok(Ok(Routed::Live { outcome, stream })) => {
                state.metrics.record(&outcome, started.elapsed());
                let summary = metadata_json(&outcome);
                live_events(id, created, outcome.api_model, summary, stream)
            }
            Ok(Err(e)) => {
                state
                    .metrics
                    .upstream_errors
                    .fetch_add(1, Ordering::Relaxed);
                eprintln!("automix serve: request failed: {e}");
                futures::stream::iter([sse_error(&ApiError::routing(&e))]).boxed()
            }
            Err(_) => {
                state
                    .metrics
                    .upstream_errors
                    .fetch_add(1, Ordering::Relaxed);
                let e = ApiError::new(
                    StatusCode::GATEWAY_TIMEOUT,
                    "upstream_error",
                    "upstream_timeout",
                    "routing timed out",
                );
                futures::stream::iter([sse_error(&e)]).boxed()
            }
        };
        let mut events = events;
        while let Some(event) = events.next().await {
            if tx.send(event).await.is_err() {
                return;
            }
        }
    });
    let body = futures::stream::unfold((rx, permit), |(mut rx, permit)| async move {
        rx.recv()
            .await
            .map(|e| (Ok::<_, Infallible>(e), (rx, permit)))
    });
    Response::builder()
        .header(header::CONTENT_TYPE, "text/event-stream")
        .header(header::CACHE_CONTROL, "no-cache")
        .body(Body::from_stream(body))
        .unwrap_or_else(|_| StatusCode::INTERNAL_SERVER_ERROR.into_response())
}

/// An error inside an SSE stream (the status line has gone): OpenAI's error body as an
/// event, then the end of the stream.
fn sse_error(e: &ApiError) -> String {
    let body = json!({"error": {"message": e.message, "type": e.kind, "param": e.param,
        "code": e.code}});
    format!("data: {body}\n\ndata: [DONE]\n\n")
}

/// A model's deltas as chunks as they arrive, then the `automix` summary (usage is null:
/// OpenAI-compatible upstreams do not report it in streams).
fn live_events(
    id: String,
    created: u64,
    model: String,
    summary: Value,
    deltas: automix_llm::DeltaStream,
) -> futures::stream::BoxStream<'static, String> {
    let chunk = {
        let (id, model) = (id.clone(), model.clone());
        move |delta: Value, finish: Value| sse_chunk(&id, created, &model, delta, finish)
    };
    let first = futures::stream::once({
        let chunk = chunk.clone();
        async move { chunk(json!({"role": "assistant", "content": ""}), Value::Null) }
    });
    let body = deltas.scan(false, move |done, item| {
        let event = match (*done, item) {
            (true, _) => None,
            (false, Ok(d)) => {
                let finish = d.finish_reason.map_or(Value::Null, Value::String);
                Some(chunk(json!({"content": d.content}), finish))
            }
            (false, Err(e)) => {
                *done = true;
                eprintln!("automix serve: upstream stream broke: {e}");
                let err = json!({"error": {"message": "the upstream stream broke",
                        "type": "upstream_error", "param": null, "code": "upstream_error"}});
                Some(format!("data: {err}\n\n"))
            }
        };
        futures::future::ready(event)
    });
    let tail = futures::stream::once(async move {
        let last = json!({"id": id, "object": "chat.completion.chunk", "created": created,
            "model": model, "choices": [], "usage": null, "automix": summary});
        format!("data: {last}\n\ndata: [DONE]\n\n")
    });
    first.chain(body).chain(tail).boxed()
}

/// Routes an admitted request (or sends it down its named route) and builds the reply.
async fn routed_reply(state: &ProxyState, a: Admitted, started: Instant) -> Response {
    let query = chat_query(a.question);
    let (router, request) = (a.router, a.request);
    let routed = tokio::time::timeout(state.settings.request_timeout, async {
        if a.direct {
            let name = request.model.clone();
            router.direct(&query, &name, request).await
        } else {
            router.route_chat_with(&query, request, &a.options).await
        }
    })
    .await;
    let outcome = match routed {
        Ok(Ok(o)) => o,
        Ok(Err(e)) => return upstream_failure(state, &e),
        Err(_) => {
            state
                .metrics
                .upstream_errors
                .fetch_add(1, Ordering::Relaxed);
            return error_response(
                StatusCode::GATEWAY_TIMEOUT,
                "upstream_error",
                "upstream_timeout",
                "routing timed out",
            );
        }
    };
    state.metrics.record(&outcome, started.elapsed());
    let (id, created) = completion_id(&outcome.route_id);
    let mut response = if a.stream {
        stream_response(&id, created, &outcome)
    } else {
        axum::Json(completion_json(&id, created, &outcome)).into_response()
    };
    add_headers(response.headers_mut(), &outcome);
    response
}

/// A failed routing in OpenAI form, counted. The full error (with upstream URLs) goes to
/// the server log only; the client gets [`ApiError::routing`].
fn upstream_failure(state: &ProxyState, e: &AutomixError) -> Response {
    state
        .metrics
        .upstream_errors
        .fetch_add(1, Ordering::Relaxed);
    eprintln!("automix serve: request failed: {e}");
    ApiError::routing(e).into_response()
}

/// A named route with `stream: true`: the model's deltas go to the client as they arrive.
/// Headers known before the first byte (model, decision) are sent; the final chunk carries
/// the `automix` summary. A failure before the first delta is an ordinary OpenAI error; one
/// after it is an SSE `error` event, since the status line has gone.
async fn live_stream(
    state: &Arc<ProxyState>,
    router: &Router,
    request: ChatRequest,
    started: Instant,
    permit: OwnedSemaphorePermit,
) -> Response {
    use futures::StreamExt;
    let name = request.model.clone();
    let (api_model, deltas) = match router.direct_stream(&name, request.clone()).await {
        Ok(s) => s,
        // A backend that cannot stream answers whole, sent as chunks.
        Err(AutomixError::Model {
            source: automix_llm::LlmError::Unsupported(_),
            ..
        }) => {
            let query = chat_query(last_user_text(&request));
            return match router.direct(&query, &name, request).await {
                Ok(o) => {
                    state.metrics.record(&o, started.elapsed());
                    let (id, created) = completion_id(&o.route_id);
                    let mut response = stream_response(&id, created, &o);
                    add_headers(response.headers_mut(), &o);
                    response
                }
                Err(e) => upstream_failure(state, &e),
            };
        }
        Err(e) => return upstream_failure(state, &e),
    };
    state.metrics.requests.fetch_add(1, Ordering::Relaxed);
    state.metrics.observe_latency(started.elapsed());
    let (id, created) = completion_id("");
    let summary =
        json!({"model_name": name, "models_tried": [name], "decision": "direct", "lambda": null});
    let events = live_events(id, created, api_model, summary, deltas).map(move |e| {
        let _held = &permit;
        Ok::<_, Infallible>(e)
    });
    Response::builder()
        .header(header::CONTENT_TYPE, "text/event-stream")
        .header(header::CACHE_CONTROL, "no-cache")
        .header(
            "x-automix-model",
            HeaderValue::from_str(&name).unwrap_or(HeaderValue::from_static("unknown")),
        )
        .header(
            "x-automix-models-tried",
            HeaderValue::from_str(&name).unwrap_or(HeaderValue::from_static("unknown")),
        )
        .header("x-automix-decision", "direct")
        .body(Body::from_stream(events))
        .unwrap_or_else(|_| StatusCode::INTERNAL_SERVER_ERROR.into_response())
}

fn usage_json(o: &RouteOutcome) -> Value {
    let prompt: u64 = o.calls.iter().map(|c| c.tokens.prompt).sum();
    let completion: u64 = o.calls.iter().map(|c| c.tokens.completion).sum();
    json!({"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion})
}

fn metadata_json(o: &RouteOutcome) -> Value {
    json!({
        "model_name": o.model_name,
        "models_tried": o.escalation_path,
        "verification_score": o.verification_score,
        "decision": o.decision.label(),
        "cost": o.total_cost,
        "lambda": o.lambda,
        "steps": o.steps,
    })
}

/// The upstream `finish_reason` of the kept answer (`length` when it was cut), else `stop`.
fn finish_reason(o: &RouteOutcome) -> String {
    o.calls
        .iter()
        .rev()
        .find(|c| c.purpose == "answer" && c.model == o.model_name)
        .and_then(|c| c.finish_reason.clone())
        .unwrap_or_else(|| "stop".into())
}

/// The kept reply as an assistant message: its text, or `null` content and its
/// `tool_calls` when the model called tools.
fn message_json(o: &RouteOutcome) -> Value {
    match &o.tool_calls {
        Some(calls) => {
            let content = if o.response.is_empty() {
                Value::Null
            } else {
                json!(o.response)
            };
            json!({"role": "assistant", "content": content, "tool_calls": calls, "refusal": null})
        }
        None => json!({"role": "assistant", "content": o.response, "refusal": null}),
    }
}

/// The kept reply's logprobs in OpenAI's shape, when the client asked for them.
fn logprobs_json(o: &RouteOutcome) -> Value {
    match &o.logprobs {
        Some(tokens) => json!({"content": tokens, "refusal": null}),
        None => Value::Null,
    }
}

/// `tool_calls` for a stream delta: each call carries its `index`, as stream deltas must.
fn indexed(calls: &Value) -> Value {
    match calls {
        Value::Array(items) => Value::Array(
            items
                .iter()
                .enumerate()
                .map(|(i, c)| {
                    let mut c = c.clone();
                    if let Some(o) = c.as_object_mut() {
                        o.entry("index").or_insert(json!(i));
                    }
                    c
                })
                .collect(),
        ),
        other => other.clone(),
    }
}

/// The chat completion a client sees.
pub fn completion_json(id: &str, created: u64, o: &RouteOutcome) -> Value {
    json!({
        "id": id,
        "object": "chat.completion",
        "created": created,
        "model": o.api_model,
        "choices": [{
            "index": 0,
            "message": message_json(o),
            "logprobs": logprobs_json(o),
            "finish_reason": finish_reason(o)
        }],
        "usage": usage_json(o),
        "system_fingerprint": null,
        "automix": metadata_json(o),
    })
}

/// A fresh completion id and creation time.
fn completion_id(route_id: &str) -> (String, u64) {
    // A routed reply is named by its route (128 random bits), so feedback can find it;
    // others by 128 fresh random bits: no id tells anything about another.
    let id = if route_id.is_empty() {
        format!("chatcmpl-{:032x}", rand::random::<u128>())
    } else {
        format!("chatcmpl-{route_id}")
    };
    let created = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    (id, created)
}

/// One SSE event of a `chat.completion.chunk` with a single choice.
fn sse_chunk(id: &str, created: u64, model: &str, delta: Value, finish: Value) -> String {
    let c = json!({
        "id": id, "object": "chat.completion.chunk", "created": created, "model": model,
        "choices": [{"index": 0, "delta": delta, "logprobs": null, "finish_reason": finish}]
    });
    format!("data: {c}\n\n")
}

fn stream_response(id: &str, created: u64, o: &RouteOutcome) -> Response {
    let stream = futures::stream::iter(
        outcome_events(id, created, o)
            .into_iter()
            .map(Ok::<_, Infallible>),
    );
    Response::builder()
        .header(header::CONTENT_TYPE, "text/event-stream")
        .header(header::CACHE_CONTROL, "no-cache")
        .body(Body::from_stream(stream))
        .unwrap_or_else(|_| StatusCode::INTERNAL_SERVER_ERROR.into_response())
}

/// A whole outcome as SSE events: the role, the answer in word-sized pieces, tool calls,
/// the final chunk with usage and the `automix` summary, `[DONE]`.
fn outcome_events(id: &str, created: u64, o: &RouteOutcome) -> Vec<String> {
    let chunk = |delta: Value, finish: Value| sse_chunk(id, created, &o.api_model, delta, finish);
    let mut events = vec![chunk(
        json!({"role": "assistant", "content": ""}),
        Value::Null,
    )];
    // Word-sized pieces, whitespace kept, so the concatenation is the answer exactly.
    let mut piece = String::new();
    for ch in o.response.chars() {
        piece.push(ch);
        if ch.is_whitespace() && piece.len() > 1 {
            events.push(chunk(
                json!({"content": std::mem::take(&mut piece)}),
                Value::Null,
            ));
        }
    }
    if !piece.is_empty() {
        events.push(chunk(json!({"content": piece}), Value::Null));
    }
    if let Some(calls) = &o.tool_calls {
        events.push(chunk(json!({"tool_calls": indexed(calls)}), Value::Null));
    }
    let last = json!({
        "id": id, "object": "chat.completion.chunk", "created": created, "model": o.api_model,
        "choices": [{"index": 0, "delta": {}, "logprobs": null, "finish_reason": finish_reason(o)}],
        "usage": usage_json(o),
        "automix": metadata_json(o),
    });
    events.push(format!("data: {last}\n\n"));
    events.push("data: [DONE]\n\n".into());
    events
}

fn add_headers(headers: &mut HeaderMap, o: &RouteOutcome) {
    let mut put = |name: &'static str, value: String| {
        if let Ok(v) = HeaderValue::from_str(&value) {
            headers.insert(name, v);
        }
    };
    if !o.route_id.is_empty() {
        put("x-automix-request-id", o.route_id.clone());
    }
    put("x-automix-model", o.model_name.clone());
    put("x-automix-models-tried", o.escalation_path.join(","));
    put(
        "x-automix-verification-score",
        o.verification_score
            .map_or_else(|| "unknown".into(), |p| format!("{p:.4}")),
    );
    put("x-automix-decision", o.decision.label().into());
    put("x-automix-cost", format!("{:.9}", o.total_cost));
    if let Some(l) = o.lambda {
        put("x-automix-lambda", format!("{l}"));
    }
}

/// Serves `app` on `listener` until `shutdown` resolves, then drains requests in flight.
///
/// Our own accept loop rather than `axum::serve`, for the two limits it does not have: at
/// most `max_connections` open connections (one past it is closed at accept, so half-open
/// connections cannot exhaust file descriptors), and `header_read_timeout` for clients that
/// never finish their headers.
pub async fn serve(
    listener: tokio::net::TcpListener,
    state: Arc<ProxyState>,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    use hyper_util::rt::{TokioIo, TokioTimer};
    let slots = Arc::new(Semaphore::new(state.settings.max_connections.max(1)));
    let header_timeout = state.settings.header_read_timeout;
    let service = hyper_util::service::TowerToHyperService::new(app(state));
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let stream = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                // Accept errors (EMFILE, a reset before accept) are per connection: back off
                // briefly and keep serving.
                Err(_) => {
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let Ok(permit) = slots.clone().try_acquire_owned() else {
            drop(stream);
            continue;
        };
        let conn = hyper::server::conn::http1::Builder::new()
            .timer(TokioTimer::new())
            .header_read_timeout(header_timeout)
            .serve_connection(TokioIo::new(stream), service.clone());
        let conn = graceful.watch(conn);
        tokio::spawn(async move {
            let _ = conn.await;
            drop(permit);
        });
    }
    drop(listener);
    graceful.shutdown().await;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use tower::ServiceExt;

    /// A handler that panics answers a counted 500 in OpenAI form instead of dropping the
    /// connection.
    #[tokio::test]
    async fn a_panicking_handler_becomes_a_counted_500() {
        let panics = Arc::new(AtomicU64::new(0));
        let app = axum::Router::new()
            .route(
                "/boom",
                get(|| async {
                    let v: Vec<u8> = Vec::new();
                    // An out-of-range index, as a bad table once caused.
                    v[usize::from(v.is_empty())].to_string()
                }),
            )
            .layer(axum::middleware::from_fn_with_state(
                panics.clone(),
                catch_panic,
            ));
        let request = axum::http::Request::get("/boom")
            .body(Body::empty())
            .unwrap();
        let response = app.oneshot(request).await.unwrap();
        assert_eq!(response.status(), StatusCode::INTERNAL_SERVER_ERROR);
        let body = axum::body::to_bytes(response.into_body(), 1 << 16)
            .await
            .unwrap();
        let v: Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(v["error"]["code"], "internal_error");
        assert_eq!(panics.load(Ordering::Relaxed), 1);
    }
}
