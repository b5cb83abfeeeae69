//! The HTTP transport every wire format goes through: one endpoint's client with retries
//! (exponential backoff, full jitter, `Retry-After`), a per-attempt timeout and an overall
//! deadline, a concurrency limit, bounded reads, key redaction and the `n` fallback. The
//! wire formats are [`crate::openai`] (OpenAI chat completions: OpenAI, vLLM, llama.cpp
//! server, Ollama `/v1`, OpenRouter) and [`crate::anthropic`] (the Messages API), picked by
//! [`Dialect`].

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use futures::StreamExt;
use rand::Rng;
use serde_json::{Value, json};
use tokio::sync::Semaphore;

use crate::catalogue::{ApiKey, ModelEntry};
use crate::error::{LlmError, Result};
use crate::provider::{ChatProvider, DeltaStream};
use crate::sse::{EventParser, event_deltas};
use crate::types::{ChatRequest, ChatResponse, Usage};

/// Settings of one endpoint.
#[derive(Debug, Clone)]
pub struct EndpointConfig {
    /// Base URL ending in `/v1` (the backend appends `/chat/completions`).
    pub base_url: String,
    /// Bearer key, if the endpoint needs one.
    pub api_key: Option<ApiKey>,
    /// Limit for one HTTP attempt.
    pub request_timeout: Duration,
    /// Limit for a whole call, retries included.
    pub deadline: Duration,
    /// Attempts per request, the first included.
    pub max_attempts: u32,
    /// First backoff; doubles per retry, with full jitter.
    pub backoff_base: Duration,
    /// Largest backoff (a longer `Retry-After` is honoured up to the deadline).
    pub backoff_max: Duration,
    /// Concurrent requests to this endpoint (`max_workers`; `automix serve
    /// --upstream-concurrency`).
    pub max_concurrency: usize,
    /// Longest wait for one of those slots; past it the call fails with
    /// [`LlmError::Busy`] instead of queueing behind hung requests. `None` waits.
    pub queue_timeout: Option<Duration>,
    /// Largest reply body read from one call; a larger one is [`LlmError::TooLarge`].
    pub max_response_bytes: usize,
}

impl EndpointConfig {
    /// Defaults: 60 s per attempt, 300 s overall, 4 attempts, 250 ms → 8 s backoff, 8 concurrent.
    pub fn new(base_url: impl Into<String>) -> Self {
        Self {
            base_url: base_url.into().trim_end_matches('/').to_owned(),
            api_key: None,
            request_timeout: Duration::from_secs(60),
            deadline: Duration::from_secs(300),
            max_attempts: 4,
            backoff_base: Duration::from_millis(250),
            backoff_max: Duration::from_secs(8),
            max_concurrency: 8,
            queue_timeout: None,
            max_response_bytes: 16 << 20,
        }
    }

    /// The endpoint of `model`: its `api_endpoint` (else `default_base_url`) with the key read
    /// from its `api_key_env`.
    pub fn for_model(model: &ModelEntry, default_base_url: Option<&str>) -> Result<Self> {
        let base = model
            .api_endpoint
            .as_deref()
            .or(default_base_url)
            .ok_or_else(|| LlmError::MissingEndpoint {
                model: model.name.clone(),
            })?;
        Ok(Self {
            api_key: model.api_key()?,
            ..Self::new(base)
        })
    }
}

/// The wire format an HTTP backend speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dialect {
    /// OpenAI's `/chat/completions` (also llama.cpp, vLLM, most gateways).
    OpenAi,
    /// Anthropic's `/messages` (see [`crate::anthropic`]).
    Anthropic,
}

/// What the transport asks of a wire format: where to post, how to authorise, the body,
/// and how to read a reply and a stream's events. The only place that branches on it.
impl Dialect {
    fn path(self) -> &'static str {
        match self {
            Self::OpenAi => "chat/completions",
            Self::Anthropic => "messages",
        }
    }

    fn authorise(
        self,
        req: reqwest::RequestBuilder,
        key: Option<&ApiKey>,
    ) -> reqwest::RequestBuilder {
        match (self, key) {
            (Self::OpenAi, Some(key)) => req.bearer_auth(key.expose()),
            (Self::OpenAi, None) => req,
            (Self::Anthropic, key) => {
                let req = req.header("anthropic-version", crate::anthropic::ANTHROPIC_VERSION);
                match key {
                    Some(key) => req.header("x-api-key", key.expose()),
                    None => req,
                }
            }
        }
    }

    fn body(self, request: &ChatRequest, n: u32, seed: Option<u64>, stream: bool) -> Value {
        match self {
            Self::OpenAi => crate::openai::body(request, n, seed, stream),
            Self::Anthropic => {
                let mut body = crate::anthropic::body(request);
                if stream {
                    body["stream"] = json!(true);
                }
                body
            }
        }
    }

    fn parse(
        self,
        bytes: &[u8],
        endpoint: String,
        excerpt: impl Fn(&str) -> String,
    ) -> Result<ChatResponse> {
        match self {
            Self::OpenAi => crate::openai::parse(bytes, endpoint, excerpt),
            Self::Anthropic => crate::anthropic::parse(bytes, endpoint, excerpt),
        }
    }

    fn event_parser(self) -> EventParser {
        match self {
            Self::OpenAi => crate::openai::stream_event,
            Self::Anthropic => crate::anthropic::stream_event,
        }
    }
}

/// A chat-completion client for one HTTP endpoint: OpenAI-compatible by default, or the
/// Anthropic Messages API ([`HttpBackend::anthropic`]). Retries, backoff, deadlines,
/// concurrency, bounded reads and key redaction are the same for both.
pub struct HttpBackend {
    dialect: Dialect,
    config: EndpointConfig,
    client: reqwest::Client,
    permits: Arc<Semaphore>,
    /// Cleared once the endpoint rejects `n > 1` or returns fewer choices.
    supports_n: AtomicBool,
}

impl std::fmt::Debug for HttpBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HttpBackend")
            .field("dialect", &self.dialect)
            .field("base_url", &self.config.base_url)
            .field("supports_n", &self.supports_n.load(Ordering::Relaxed))
            .finish_non_exhaustive()
    }
}

impl HttpBackend {
    /// An OpenAI-compatible backend for `config`.
    pub fn new(config: EndpointConfig) -> Result<Self> {
        Self::with_dialect(config, Dialect::OpenAi)
    }

    /// A backend speaking the Anthropic Messages API at `config.base_url` (e.g.
    /// `https://api.anthropic.com/v1`); the key goes in `x-api-key`. The API has no `n`, so
    /// `n` choices are `n` requests.
    pub fn anthropic(config: EndpointConfig) -> Result<Self> {
        Self::with_dialect(config, Dialect::Anthropic)
    }

    /// A backend for `config` speaking `dialect`.
    pub fn with_dialect(config: EndpointConfig, dialect: Dialect) -> Result<Self> {
        let client = reqwest::Client::builder()
            .build()
            .map_err(|e| LlmError::Connection {
                endpoint: config.base_url.clone(),
                message: format!("building HTTP client: {e}"),
            })?;
        let permits = Arc::new(Semaphore::new(config.max_concurrency.max(1)));
        Ok(Self {
            dialect,
            config,
            client,
            permits,
            supports_n: AtomicBool::new(dialect == Dialect::OpenAi),
        })
    }

    /// Whether the endpoint is still believed to honour `n > 1`.
    pub fn supports_n(&self) -> bool {
        self.supports_n.load(Ordering::Relaxed)
    }

    fn endpoint(&self) -> String {
        self.config.base_url.clone()
    }

    /// The body of `resp`, at most `limit` bytes: `Err` with what was read when it is longer
    /// (or the transfer broke), so a huge or endless reply cannot exhaust memory.
    async fn read_bounded(
        &self,
        mut resp: reqwest::Response,
        limit: usize,
    ) -> std::result::Result<Vec<u8>, Vec<u8>> {
        let mut out = Vec::new();
        if resp.content_length().is_some_and(|n| n > limit as u64) {
            return Err(out);
        }
        loop {
            match resp.chunk().await {
                Ok(Some(chunk)) => {
                    if out.len() + chunk.len() > limit {
                        let room = limit - out.len();
                        out.extend_from_slice(&chunk[..room]);
                        return Err(out);
                    }
                    out.extend_from_slice(&chunk);
                }
                Ok(None) => return Ok(out),
                Err(_) => return Err(out),
            }
        }
    }

    /// One of the endpoint's concurrency slots, waiting at most `queue_timeout`.
    async fn slot(&self) -> Result<tokio::sync::OwnedSemaphorePermit> {
        let acquire = self.permits.clone().acquire_owned();
        let acquired = match self.config.queue_timeout {
            Some(limit) => {
                tokio::time::timeout(limit, acquire)
                    .await
                    .map_err(|_| LlmError::Busy {
                        endpoint: self.endpoint(),
                        slots: self.config.max_concurrency,
                        waited: limit,
                    })?
            }
            None => acquire.await,
        };
        acquired.map_err(|_| LlmError::Unsupported("backend closed".into()))
    }

    /// One HTTP attempt up to a success status (body not yet read).
    async fn attempt(&self, body: &Value) -> Result<reqwest::Response, AttemptFailure> {
        let req = self
            .client
            .post(format!("{}/{}", self.config.base_url, self.dialect.path()))
            .json(body);
        let req = self.dialect.authorise(req, self.config.api_key.as_ref());
        let resp = req.send().await.map_err(|e| self.transport_error(&e))?;
        let status = resp.status();
        if status.is_success() {
            return Ok(resp);
        }
        let retry_after = retry_after(&resp);
        // An error body is only excerpted: read a bounded prefix, never all of it.
        let text = String::from_utf8_lossy(
            &self
                .read_bounded(resp, 64 << 10)
                .await
                .unwrap_or_else(|partial| partial),
        )
        .into_owned();
        Err(AttemptFailure {
            error: LlmError::Http {
                endpoint: self.endpoint(),
                status: status.as_u16(),
                body_excerpt: self.excerpt(&text),
                retryable: status.as_u16() == 429 || status.is_server_error(),
            },
            retry_after,
        })
    }

    fn transport_error(&self, e: &reqwest::Error) -> LlmError {
        // reqwest errors may carry the URL; ours never holds the key, so it is safe to show.
        LlmError::Connection {
            endpoint: self.endpoint(),
            message: error_chain(e),
        }
    }

    /// The first 300 characters of an upstream body, the key redacted *before* the cut so a
    /// key straddling the cut cannot leak in part. Only a bounded window is scanned.
    fn excerpt(&self, text: &str) -> String {
        let window: String = text.chars().take(1200).collect();
        let redacted = match &self.config.api_key {
            Some(key) => key.redact(&window),
            None => window,
        };
        redacted.chars().take(300).collect()
    }

    /// Runs `op` with retries, backoff and the overall deadline. Returns the value and the
    /// number of attempts.
    async fn with_retries<T, F, Fut>(&self, mut op: F) -> Result<(T, u32)>
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = Result<T, AttemptFailure>>,
    {
        let start = Instant::now();
        let deadline = self.config.deadline;
        let mut attempts = 0u32;
        loop {
            attempts += 1;
            let remaining = deadline.saturating_sub(start.elapsed());
            let limit = self.config.request_timeout.min(remaining);
            let outcome = match tokio::time::timeout(limit, op()).await {
                Ok(r) => r,
                Err(_) if limit < self.config.request_timeout => {
                    let last = LlmError::Timeout {
                        endpoint: self.endpoint(),
                        after: limit,
                    };
                    return Err(LlmError::DeadlineExceeded {
                        deadline,
                        attempts,
                        last: Box::new(last),
                    });
                }
                Err(_) => Err(LlmError::Timeout {
                    endpoint: self.endpoint(),
                    after: limit,
                }
                .into()),
            };
            let AttemptFailure {
                error: err,
                retry_after: hint,
            } = match outcome {
                Ok(v) => return Ok((v, attempts)),
                Err(e) => e,
            };
            if !err.is_retryable() {
                return Err(if attempts > 1 {
                    LlmError::RetriesExhausted {
                        attempts,
                        last: Box::new(err),
                    }
                } else {
                    err
                });
            }
            if attempts >= self.config.max_attempts {
                return Err(LlmError::RetriesExhausted {
                    attempts,
                    last: Box::new(err),
                });
            }
            let wait = hint.unwrap_or_else(|| self.backoff(attempts));
            if start.elapsed() + wait >= deadline {
                return Err(LlmError::DeadlineExceeded {
                    deadline,
                    attempts,
                    last: Box::new(err),
                });
            }
            tokio::time::sleep(wait).await;
        }
    }

    /// Full jitter: uniform in `[0, min(max, base·2^(attempt−1))]`.
    fn backoff(&self, attempt: u32) -> Duration {
        let cap = self
            .config
            .backoff_base
            .saturating_mul(1u32 << (attempt - 1).min(16))
            .min(self.config.backoff_max);
        let nanos = cap.as_nanos().min(u128::from(u64::MAX)) as u64;
        Duration::from_nanos(if nanos == 0 {
            0
        } else {
            rand::rng().random_range(0..=nanos)
        })
    }

    /// One request with `n` choices asked in the body (n may be 1).
    async fn request(
        &self,
        request: &ChatRequest,
        n: u32,
        seed: Option<u64>,
    ) -> Result<ChatResponse> {
        let body = self.dialect.body(request, n, seed, false);
        let _permit = self.slot().await?;
        let (resp, attempts) = self
            .with_retries(|| async {
                let resp = self.attempt(&body).await?;
                let limit = self.config.max_response_bytes;
                let bytes =
                    self.read_bounded(resp, limit)
                        .await
                        .map_err(|_| LlmError::TooLarge {
                            endpoint: self.endpoint(),
                            limit,
                        })?;
                Ok(self
                    .dialect
                    .parse(&bytes, self.endpoint(), |t| self.excerpt(t))?)
            })
            .await?;
        Ok(ChatResponse {
            requests: attempts,
            ..resp
        })
    }

    /// `count` single requests in parallel with seeds `seed + first ..`.
    async fn fan_out(
        &self,
        request: &ChatRequest,
        first: u32,
        count: u32,
    ) -> Result<Vec<ChatResponse>> {
        let calls = (first..first + count)
            .map(|i| self.request(request, 1, request.seed.map(|s| s + u64::from(i))));
        futures::future::try_join_all(calls).await
    }
}

#[async_trait]
impl ChatProvider for HttpBackend {
    async fn chat(&self, request: &ChatRequest) -> Result<ChatResponse> {
        let n = request.n.max(1);
        if n == 1 {
            return self.request(request, 1, request.seed).await;
        }
        let mut merged = if self.supports_n() {
            match self.request(request, n, request.seed).await {
                Ok(resp) if resp.choices.len() as u32 >= n => return Ok(resp),
                Ok(resp) => {
                    self.supports_n.store(false, Ordering::Relaxed);
                    resp
                }
                Err(e) if e.status() == Some(400) => {
                    self.supports_n.store(false, Ordering::Relaxed);
                    ChatResponse {
                        model: request.model.clone(),
                        choices: Vec::new(),
                        usage: Usage::default(),
                        requests: e_attempts(&e),
                    }
                }
                Err(e) => return Err(e),
            }
        } else {
            ChatResponse {
                model: request.model.clone(),
                choices: Vec::new(),
                usage: Usage::default(),
                requests: 0,
            }
        };
        let have = merged.choices.len() as u32;
        for resp in self.fan_out(request, have, n - have).await? {
            merged.usage = merged.usage + resp.usage;
            merged.requests += resp.requests;
            if merged.model.is_empty() {
                merged.model = resp.model;
            }
            merged.choices.extend(resp.choices.into_iter().take(1));
        }
        for (i, c) in merged.choices.iter_mut().enumerate() {
            c.index = i as u32;
        }
        Ok(merged)
    }

    async fn chat_stream(&self, request: &ChatRequest) -> Result<DeltaStream> {
        let body = self.dialect.body(request, 1, request.seed, true);
        let parse = self.dialect.event_parser();
        let permit = self.slot().await?;
        // Only the connection phase is retried: once deltas flow, a retry could duplicate text.
        let (resp, _) = self.with_retries(|| self.attempt(&body)).await?;
        let endpoint = self.endpoint();
        let bytes = resp
            .bytes_stream()
            .map(move |r| r.map_err(|e| error_chain(&e)));
        let stream = event_deltas(bytes, endpoint, parse).map(move |item| {
            let _held = &permit;
            item
        });
        Ok(Box::pin(stream))
    }
}

fn e_attempts(e: &LlmError) -> u32 {
    match e {
        LlmError::RetriesExhausted { attempts, .. }
        | LlmError::DeadlineExceeded { attempts, .. } => *attempts,
        _ => 1,
    }
}

/// One failed attempt, with the server's `Retry-After` hint when it sent one.
struct AttemptFailure {
    error: LlmError,
    retry_after: Option<Duration>,
}

impl From<LlmError> for AttemptFailure {
    fn from(error: LlmError) -> Self {
        Self {
            error,
            retry_after: None,
        }
    }
}

fn retry_after(resp: &reqwest::Response) -> Option<Duration> {
    let v = resp
        .headers()
        .get(reqwest::header::RETRY_AFTER)?
        .to_str()
        .ok()?;
    v.trim()
        .parse::<f64>()
        .ok()
        .filter(|s| s.is_finite() && *s >= 0.0)
        .map(Duration::from_secs_f64)
}

fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut s = e.to_string();
    let mut source = e.source();
    while let Some(inner) = source {
        s.push_str(": ");
        s.push_str(&inner.to_string());
        source = inner.source();
    }
    s
}
