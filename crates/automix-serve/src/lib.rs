//! `automix serve`: an OpenAI-compatible proxy that applies AutoMix to any OpenAI client.
//!
//! `POST /v1/chat/completions` with model `automix` routes the client's own request (its
//! messages and sampling fields go to whichever model answers); the verifier sees the last
//! user message as the question. The reply is a normal chat completion from the kept model,
//! with routing metadata in `x-automix-*` headers and an extra `automix` field.

#![cfg_attr(test, allow(clippy::unwrap_used))]

use std::sync::Arc;

use axum::extract::{DefaultBodyLimit, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};

mod auth;
mod body;
mod dashboard;
mod error;
mod feedback;
mod learning;
mod limits;
mod metrics;
mod reply;
mod request;
mod routes;
mod server;
mod settings;
mod state;
mod streaming;

pub use error::{ApiError, ErrorKind};
pub use learning::{Learning, Retraining};
pub use limits::{FeedbackLimitSettings, FeedbackLimits, Refusal};
pub use metrics::ProxyMetrics;
pub use reply::completion_json;
pub use request::{FieldError, excerpt, parse_chat_request};
pub use server::{serve, serve_with_metrics};
pub use settings::ProxySettings;
pub use state::{ProxyState, RouterLoader};

/// The axum app: the endpoints, then (inside out) the body reader, the OpenAI form of the
/// framework's own errors, the error counter and the panic catcher.
pub fn app(state: Arc<ProxyState>) -> axum::Router {
    let limit = state.settings.body_limit;
    let metrics = state.metrics.clone();
    axum::Router::new()
        .route("/v1/chat/completions", post(routes::chat_completions))
        .route("/v1/models", get(routes::models))
        .route("/health", get(routes::health))
        .route("/metrics", get(routes::metrics))
        .route("/admin/reload", post(routes::reload))
        .route("/admin/belief", get(routes::admin_belief))
        .route("/admin/traffic", get(learning::traffic))
        .route("/v1/automix/feedback", post(feedback::feedback))
        .route("/dashboard", get(dashboard::page))
        .route("/dashboard/data", get(dashboard::data))
        .route("/dashboard/login", post(dashboard::login))
        .route("/dashboard/logout", post(dashboard::logout))
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
            metrics.clone(),
            count_errors,
        ))
        .layer(axum::middleware::from_fn_with_state(metrics, catch_panic))
        .with_state(state)
}

/// The separate metrics address's app: `/metrics` (no key asked) and `/health`, nothing
/// else, with the same error form and panic catcher as [`app`].
pub fn metrics_app(state: Arc<ProxyState>) -> axum::Router {
    let metrics = state.metrics.clone();
    axum::Router::new()
        .route("/metrics", get(routes::open_metrics))
        .route("/health", get(routes::health))
        .layer(axum::middleware::map_response(openai_error_form))
        .layer(axum::middleware::from_fn_with_state(metrics, catch_panic))
        .with_state(state)
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
    ApiError::status(status, code, message).into_response()
}

/// The one place error responses are counted: every [`ApiError`] marks its response with
/// its [`ErrorKind`], and this layer counts the mark (errors inside a stream, after the
/// status line, are counted where they are sent).
async fn count_errors(
    State(metrics): State<ProxyMetrics>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let response = next.run(request).await;
    if let Some(kind) = response.extensions().get::<ErrorKind>() {
        metrics.count(*kind);
    }
    response
}

/// Last resort: a panic in a handler becomes a counted 500 in OpenAI form instead of a
/// dropped connection. Validation at load is what keeps panics out; this keeps one from
/// reaching a client as an empty reply.
async fn catch_panic(
    State(metrics): State<ProxyMetrics>,
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
            metrics.panics.inc();
            metrics.count(ErrorKind::Server);
            ApiError::status(
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal_error",
                "internal error while handling the request",
            )
            .into_response()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::body::Body;
    use serde_json::Value;
    use tower::ServiceExt;

    /// A handler that panics answers a counted 500 in OpenAI form instead of dropping the
    /// connection.
    #[tokio::test]
    async fn a_panicking_handler_becomes_a_counted_500() {
        let metrics = ProxyMetrics::new();
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
                metrics.clone(),
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
        assert_eq!(v["error"]["type"], "server_error");
        let text = metrics.render(None, None);
        assert!(text.contains("automix_panics_total 1"), "{text}");
        assert!(text.contains("automix_server_errors_total 1"), "{text}");
    }
}
