//! `POST /v1/automix/feedback`: scores bound to the tenant that made the completion, within
//! the key's budgets.

use std::sync::Arc;
use std::time::Instant;

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use automix::feedback::{FeedbackError, FeedbackRefused, Scorer};

use crate::auth::{Caller, admin_or_client};
use crate::{ApiError, ProxyState, Refusal, excerpt};

/// The 429 of a feedback limit, with the wait in `Retry-After`.
fn refused(state: &ProxyState, refusal: Refusal) -> ApiError {
    state.metrics.feedback_refused.inc();
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
    ApiError::status(StatusCode::TOO_MANY_REQUESTS, code, message)
        .retry_after(wait.as_secs().max(1))
}

/// The client's `{"id", "score"}`: the route id (a completion id's `chatcmpl-` prefix
/// dropped) and the score (a boolean is 0 or 1; anything else NaN, refused by the router).
fn parse(body: &[u8]) -> Result<(String, f64), ApiError> {
    let value = serde_json::from_slice::<Value>(body)
        .map_err(|_| ApiError::field("body", "the body must be JSON: {\"id\": …, \"score\": …}"))?;
    let id = value["id"].as_str().ok_or_else(|| {
        ApiError::field(
            "id",
            "`id` must be the completion id or x-automix-request-id",
        )
    })?;
    let score = match &value["score"] {
        Value::Bool(b) => f64::from(u8::from(*b)),
        Value::Number(n) => n.as_f64().unwrap_or(f64::NAN),
        _ => f64::NAN,
    };
    Ok((id.to_owned(), score))
}

/// What the route memory's refusal tells the client; ids are shown as a short prefix.
fn route_error(e: FeedbackError, id: &str) -> ApiError {
    let shown = excerpt(id);
    match e {
        FeedbackError::BadScore(_) => ApiError::field("score", e.to_string()),
        FeedbackError::Unknown(_) => ApiError::status(
            StatusCode::NOT_FOUND,
            "unknown_id",
            format!("no recent completion has id {shown:?} (unknown, or older than an hour)"),
        ),
        FeedbackError::AlreadyScored(_) => ApiError::status(
            StatusCode::CONFLICT,
            "already_scored",
            format!("completion {shown:?} was scored already"),
        ),
        FeedbackError::NoBelief => ApiError::status(
            StatusCode::BAD_REQUEST,
            "feedback_unsupported",
            e.to_string(),
        ),
    }
}

/// `POST /v1/automix/feedback` `{"id": <completion id or x-automix-request-id>, "score":
/// <0..1 or a boolean>}`: credits the model that answered, once. Only the key that made the
/// completion (or an admin key) may score it; any other gets the 404 of an unknown id.
/// Client keys are rate limited and capped in how many scores they fold in per window.
pub(crate) async fn feedback(
    State(state): State<Arc<ProxyState>>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Result<Response, ApiError> {
    let caller = admin_or_client(&state, &headers)?;
    let now = Instant::now();
    if let Caller::Tenant(t) = &caller {
        state
            .feedback_limits
            .request(t, now)
            .map_err(|r| refused(&state, r))?;
    }
    let (id, score) = parse(&body)?;
    let route = id.strip_prefix("chatcmpl-").unwrap_or(&id);
    let scorer = match &caller {
        Caller::Admin => Scorer::Admin,
        Caller::Tenant(t) => Scorer::Tenant(Some(t)),
    };
    let admit = || match &caller {
        Caller::Admin => Ok(()),
        Caller::Tenant(t) => state.feedback_limits.weigh(t, now),
    };
    match state.router().feedback(route, score, scorer, admit).await {
        Ok(credit) => {
            if let (Some(learning), Some(model)) = (&state.learning, &credit.model) {
                learning.shadow.feedback(route, model, credit.score).await;
            }
            Ok(axum::Json(json!({"accepted": true, "id": id})).into_response())
        }
        Err(FeedbackRefused::Admission(r)) => Err(refused(&state, r)),
        Err(FeedbackRefused::Route(e)) => Err(route_error(e, &id)),
    }
}
