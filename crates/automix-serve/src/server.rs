//! The accept loops: a connection limit, the header-read timeout and a graceful drain, for
//! the proxy's address and, where asked, a separate metrics address.

use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::{Semaphore, watch};

use crate::{ProxyState, app, metrics_app};

/// Open connections the metrics address takes at once (a scraper or two, never clients):
/// apart from the proxy's own limit, so neither can starve the other.
const METRICS_CONNECTIONS: usize = 16;

/// Serves `app` on `listener` until `shutdown` resolves, then drains requests in flight.
///
/// Our own accept loop rather than `axum::serve`, for the two limits it does not have: at
/// most `max_connections` open connections (one past it is closed at accept, so half-open
/// connections cannot exhaust file descriptors), and `header_read_timeout` for clients that
/// never finish their headers.
pub async fn serve(
    listener: TcpListener,
    state: Arc<ProxyState>,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    serve_with_metrics(listener, None, state, shutdown).await
}

/// [`serve`], and with `metrics` also `/metrics` and `/health` on that second listener
/// ([`metrics_app`]: no key asked there, so bind it where only the scraper reaches), both
/// until `shutdown`.
pub async fn serve_with_metrics(
    listener: TcpListener,
    metrics: Option<TcpListener>,
    state: Arc<ProxyState>,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let (stop, stopped) = watch::channel(false);
    tokio::spawn(async move {
        shutdown.await;
        let _ = stop.send(true);
    });
    // Retraining on shadow rows, if on, runs beside the accept loops until they end.
    let retrainer = tokio::spawn(crate::learning::retrain_loop(state.clone()));
    let header_timeout = state.settings.header_read_timeout;
    let proxy_limit = (state.settings.max_connections, header_timeout);
    let scrape = metrics.map(|l| {
        let app = metrics_app(state.clone());
        accept_loop(
            l,
            app,
            (METRICS_CONNECTIONS, header_timeout),
            stopped.clone(),
        )
    });
    let proxy = accept_loop(listener, app(state), proxy_limit, stopped);
    match scrape {
        Some(scrape) => {
            tokio::join!(proxy, scrape);
        }
        None => proxy.await,
    }
    retrainer.abort();
    Ok(())
}

/// Accepts connections to `app` on `listener` (at most `max_connections` open, headers
/// within `header_timeout`) until `stopped` turns true, then drains them.
async fn accept_loop(
    listener: TcpListener,
    app: axum::Router,
    (max_connections, header_timeout): (usize, Duration),
    mut stopped: watch::Receiver<bool>,
) {
    use hyper_util::rt::{TokioIo, TokioTimer};
    let slots = Arc::new(Semaphore::new(max_connections.max(1)));
    let service = hyper_util::service::TowerToHyperService::new(app);
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
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
            () = until_stopped(&mut stopped) => break,
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
}

/// Resolves once `stopped` turns true, or its sender is gone (nothing could stop the loop
/// after that). The guard `wait_for` returns is dropped here, not held across the select:
/// the accept loop's future stays `Send`.
async fn until_stopped(stopped: &mut watch::Receiver<bool>) {
    let _ = stopped.wait_for(|s| *s).await;
}
