//! The request body read whole, within a deadline and a size limit, before any handler runs.
//!
//! hyper bounds how long a client may take over its headers, not its body: a client that
//! sends headers and then stalls would hold its connection (and one of `max_connections`)
//! for as long as it likes. Here the body must arrive within `body_read_timeout`, or the
//! reply is a 408 and the connection is closed.

use std::time::Duration;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use http_body_util::{BodyExt, LengthLimitError, Limited};

use crate::ApiError;

/// How long and how large a body may be.
#[derive(Debug, Clone, Copy)]
pub(crate) struct BodyRules {
    pub timeout: Duration,
    pub limit: usize,
}

/// Middleware: buffers the body under [`BodyRules`], then runs the handler on it.
pub(crate) async fn read_body_within(
    State(rules): State<BodyRules>,
    request: Request,
    next: Next,
) -> Response {
    let (parts, body) = request.into_parts();
    let read = Limited::new(body, rules.limit).collect();
    match tokio::time::timeout(rules.timeout, read).await {
        Ok(Ok(collected)) => {
            let request = Request::from_parts(parts, Body::from(collected.to_bytes()));
            next.run(request).await
        }
        Ok(Err(e)) if e.downcast_ref::<LengthLimitError>().is_some() => ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "invalid_request_error",
            "request_too_large",
            "the request body is too large",
        )
        .into_response(),
        Ok(Err(_)) => closing(ApiError::new(
            StatusCode::BAD_REQUEST,
            "invalid_request_error",
            "invalid_body",
            "the request body could not be read",
        )),
        Err(_) => closing(ApiError::new(
            StatusCode::REQUEST_TIMEOUT,
            "invalid_request_error",
            "body_timeout",
            "the request body did not arrive in time",
        )),
    }
}

/// `e` with `Connection: close`: the rest of a body that never came cannot be skipped, so
/// the connection cannot carry another request.
fn closing(e: ApiError) -> Response {
    let mut response = e.into_response();
    response
        .headers_mut()
        .insert(header::CONNECTION, HeaderValue::from_static("close"));
    response
}
