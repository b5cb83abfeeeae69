//! `automix serve`: the proxy's settings from flags and environment, reloads on SIGHUP.

use super::*;

/// Arguments of `automix serve`.
#[derive(Args, Debug)]
pub struct ServeArgs {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:8080")]
    pub bind: String,
    /// Also serve `/metrics` and `/health` on this address, with no key asked (for a
    /// Prometheus scraper: bind it where only the scraper reaches, e.g. an internal
    /// interface); `/metrics` on `--bind` stays as it is.
    #[arg(long)]
    pub metrics_bind: Option<String>,
    /// Route with the threshold rule instead of a saved policy.
    #[arg(long)]
    pub no_policy: bool,
    /// Largest request body in bytes.
    #[arg(long, default_value_t = 1 << 20)]
    pub body_limit: usize,
    /// Concurrent requests per client key (with auth off, all callers share this limit).
    #[arg(long, default_value_t = 64)]
    pub per_client_concurrency: usize,
    /// Concurrent calls to each upstream model (not `hparam.max_workers`, which is for
    /// batch work: a proxy needs room for many clients).
    #[arg(long, default_value_t = 32)]
    pub upstream_concurrency: usize,
    /// Longest wait in milliseconds for a free upstream slot; past it the request fails
    /// with 503 `upstream_busy` instead of queueing behind hung calls.
    #[arg(long, default_value_t = 10_000)]
    pub upstream_queue_timeout_ms: u64,
    /// Open connections at once; one past it is closed at accept.
    #[arg(long, default_value_t = 4096)]
    pub max_connections: usize,
    /// Longest wait in milliseconds for a request's headers before the connection is closed.
    #[arg(long, default_value_t = 10_000)]
    pub header_read_timeout_ms: u64,
    /// Longest wait in milliseconds for a request's whole body once its headers are in; a
    /// stalled body gets 408 and its connection is closed.
    #[arg(long, default_value_t = 30_000)]
    pub body_read_timeout_ms: u64,
    /// Feedback requests per minute per client key (429 with Retry-After past it).
    #[arg(long, default_value_t = 60)]
    pub feedback_per_minute: u32,
    /// Scores one client key may fold into the online belief per
    /// `--feedback-window-secs`; past it, 429 `feedback_quota_exceeded`.
    #[arg(long, default_value_t = 100)]
    pub feedback_weight_per_window: u32,
    /// The window of `--feedback-weight-per-window`, seconds.
    #[arg(long, default_value_t = 3600)]
    pub feedback_window_secs: u64,
}

impl ServeArgs {
    fn upstream_limits(&self) -> UpstreamLimits {
        UpstreamLimits {
            max_concurrency: self.upstream_concurrency,
            queue_timeout: Some(std::time::Duration::from_millis(
                self.upstream_queue_timeout_ms,
            )),
        }
    }
}

/// Comma-separated keys from the environment variable `name` (none when unset).
pub(crate) fn keys_from_env(name: &str) -> Vec<String> {
    std::env::var(name)
        .map(|v| {
            v.split(',')
                .map(|k| k.trim().to_owned())
                .filter(|k| !k.is_empty())
                .collect()
        })
        .unwrap_or_default()
}

/// The `--metrics-bind` listener, if asked for, announced on stderr.
async fn bind_metrics(addr: Option<&str>) -> Result<Option<tokio::net::TcpListener>> {
    let Some(addr) = addr else {
        return Ok(None);
    };
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("binding --metrics-bind {addr}"))?;
    eprintln!(
        "metrics on http://{}/metrics (no key asked on this address)",
        listener.local_addr()?
    );
    Ok(Some(listener))
}

/// `automix serve`: the proxy until Ctrl-C or SIGTERM (drains requests in flight); SIGHUP or
/// `POST /admin/reload` reloads the policy.
pub async fn serve(config: Config, args: &ServeArgs) -> Result<()> {
    use automix_serve::{ProxySettings, ProxyState, serve_with_metrics};
    let limits = args.upstream_limits();
    let router = build_router(&config, args.no_policy, limits)?;
    let no_policy = args.no_policy;
    let reload_config = config.clone();
    let loader: automix_serve::RouterLoader = Box::new(move || {
        build_router(&reload_config, no_policy, limits)
            .map_err(|e| automix::AutomixError::Reload(format!("{e:#}")))
    });
    // Client keys come from the environment, never from files or flags (they would leak
    // into shell history and process lists).
    let client_keys = keys_from_env("AUTOMIX_PROXY_KEYS");
    let settings = ProxySettings {
        client_keys,
        admin_keys: keys_from_env("AUTOMIX_ADMIN_KEYS"),
        body_limit: args.body_limit,
        per_client_concurrency: args.per_client_concurrency,
        max_connections: args.max_connections,
        header_read_timeout: std::time::Duration::from_millis(args.header_read_timeout_ms),
        body_read_timeout: std::time::Duration::from_millis(args.body_read_timeout_ms),
        feedback: automix_serve::FeedbackLimitSettings {
            per_minute: args.feedback_per_minute,
            weight_per_window: args.feedback_weight_per_window,
            window: std::time::Duration::from_secs(args.feedback_window_secs),
        },
        ..ProxySettings::default()
    };
    let auth = !settings.client_keys.is_empty();
    let strategy = router.strategy_name();
    // Shadow answers over the models the server starts with (a reload keeps them).
    let shadow = automix::project::shadow(&config, &router)?.map(std::sync::Arc::new);
    if let Some(s) = config.automix.shadow.as_ref().filter(|_| shadow.is_some()) {
        let rows = shadow.as_ref().map(|s| s.rows_target()).unwrap_or_default();
        let label = match s.label {
            automix::traffic::ShadowLabel::Agreement => "agreement",
            automix::traffic::ShadowLabel::Judge => "judge",
        };
        eprintln!(
            "shadow answers: {:.0}% of routed requests, {label} labels → {rows}",
            100.0 * s.rate
        );
    }
    let learning = shadow.map(|s| automix_serve::Learning::from_config(&config, s));
    if let Some(r) = learning.as_ref().and_then(|l| l.retrain.as_ref()) {
        eprintln!(
            "retraining every {} shadow rows; a better policy replaces {}",
            r.every,
            r.policy_path.display()
        );
    }
    let state = ProxyState::with_learning(router, Some(loader), settings, learning);
    let listener = tokio::net::TcpListener::bind(&args.bind)
        .await
        .with_context(|| format!("binding {}", args.bind))?;
    eprintln!(
        "automix proxy on http://{}/v1 (model \"automix\"; routing: {strategy}; client auth {})",
        listener.local_addr()?,
        if auth { "on" } else { "off" }
    );
    let metrics = bind_metrics(args.metrics_bind.as_deref()).await?;
    let reloader = state.clone();
    tokio::spawn(async move {
        let Ok(mut hup) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())
        else {
            return;
        };
        while hup.recv().await.is_some() {
            match reloader.reload().await {
                Ok(()) => eprintln!("policy reloaded"),
                Err(e) => eprintln!("reload failed, keeping the old policy: {e}"),
            }
        }
    });
    let shutdown = async {
        let term = async {
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(mut s) => {
                    s.recv().await;
                }
                Err(_) => std::future::pending::<()>().await,
            }
        };
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {},
            () = term => {},
        }
        eprintln!("shutting down: draining requests in flight");
    };
    serve_with_metrics(listener, metrics, state, shutdown).await?;
    Ok(())
}
