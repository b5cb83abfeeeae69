//! The accept loop: a connection limit, the header-read timeout and a graceful drain.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Semaphore;

use crate::{ProxyState, app};

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
    // Retraining on shadow rows, if on, runs beside the accept loop until it ends.
    let retrainer = tokio::spawn(crate::learning::retrain_loop(state.clone()));
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
    retrainer.abort();
    graceful.shutdown().await;
    Ok(())
}
