//! The handlers of the chat, model-list, health, metrics and admin endpoints. Each returns
//! `Result<Response, ApiError>`: the error is the response, counted once by the app's
//! counting layer.

use std::sync::Arc;
use std::time::Instant;

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use automix::AutomixError;
use automix::router::{RouteOptions, Router};
use automix_llm::ChatRequest;

use crate::auth::{authorise, authorise_admin};
use crate::reply::{add_headers, completion_id, completion_json};
use crate::request::{chat_query, excerpt, parse_chat_request, request_task, route_options};
use crate::streaming::{live_stream, routed_stream, stream_response};
use crate::{ApiError, ProxyState};

pub(crate) async fn reload(
    State(state): State<Arc<ProxyState>>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    authorise_admin(&state, &headers)?;
    state.reload().await.map_err(|e| {
        ApiError::status(
            StatusCode::INTERNAL_SERVER_ERROR,
            "reload_failed",
            e.to_string(),
        )
    })?;
    Ok(axum::Json(json!({"reloaded": true})).into_response())
}

/// `ok`, or `degraded` while the shared belief's store does not answer (routing goes on
/// with the last table).
pub(crate) async fn health(State(state): State<Arc<ProxyState>>) -> Response {
    let store_down = state
        .router()
        .belief_healthy()
        .is_some_and(|healthy| !healthy);
    let body = if store_down {
        json!({"status": "degraded", "belief_store": "unreachable"})
    } else {
        json!({"status": "ok"})
    };
    axum::Json(body).into_response()
}

/// The online belief: store, health, updates, posterior per model, the table (admin key).
pub(crate) async fn admin_belief(
    State(state): State<Arc<ProxyState>>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    authorise_admin(&state, &headers)?;
    match state.router().belief_snapshot().await {
        Some(s) => Ok(axum::Json(s).into_response()),
        None => Err(ApiError::status(
            StatusCode::NOT_FOUND,
            "no_online_belief",
            "this server has no online belief (automix.online_belief is off)",
        )),
    }
}

pub(crate) async fn metrics(
    State(state): State<Arc<ProxyState>>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    // Metrics name models and volumes: with auth on they need a key (client or admin).
    if !state.settings.client_keys.is_empty() {
        crate::auth::admin_or_client(&state, &headers)?;
    }
    Ok(render_metrics(&state))
}

/// `/metrics` on the separate metrics address ([`crate::metrics_app`]): no key asked, as
/// scrapers expect; that address is the operator's to keep off the public network.
pub(crate) async fn open_metrics(State(state): State<Arc<ProxyState>>) -> Response {
    render_metrics(&state)
}

/// The Prometheus text of every counter.
fn render_metrics(state: &ProxyState) -> Response {
    let text = state
        .metrics
        .render(state.router().belief_healthy(), state.shadow_counts());
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], text).into_response()
}

pub(crate) async fn models(
    State(state): State<Arc<ProxyState>>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    authorise(&state, &headers)?;
    let mut data =
        vec![json!({"id": "automix", "object": "model", "created": 0, "owned_by": "automix"})];
    for m in state.router().models().models() {
        let owner = m.entry.service.clone().unwrap_or_else(|| "upstream".into());
        data.push(json!({"id": m.entry.name, "object": "model", "created": 0, "owned_by": owner}));
    }
    Ok(axum::Json(json!({"object": "list", "data": data})).into_response())
}

/// A request that passed every check: what it asks and how to route it.
pub(crate) struct Admitted {
    pub(crate) client: String,
    pub(crate) request: ChatRequest,
    pub(crate) question: String,
    pub(crate) stream: bool,
    pub(crate) router: Arc<Router>,
    pub(crate) options: RouteOptions,
    /// A named route (a configured model's name instead of `automix`).
    pub(crate) direct: bool,
    /// The request's task.
    pub(crate) task: String,
}

pub(crate) async fn chat_completions(
    State(state): State<Arc<ProxyState>>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Result<Response, ApiError> {
    let started = Instant::now();
    let a = admit(&state, &headers, &body)?;
    let slot = state.client_slot(&a.client);
    // The slot is held until the reply's last byte (or a disconnect): a stream moves it into
    // its body, so streams count against the limit for as long as they run.
    let permit = slot.try_acquire_owned().map_err(|_| {
        ApiError::status(
            StatusCode::TOO_MANY_REQUESTS,
            "rate_limit_exceeded",
            "too many concurrent requests for this client",
        )
    })?;
    // Live streams carry text deltas; a request with tools is answered whole (buffered) so
    // that tool calls reach the client intact.
    if a.stream && !a.request.extra.contains_key("tools") {
        if a.direct {
            return live_stream(&state, &a.router, a.request, started, permit).await;
        }
        return Ok(routed_stream(state.clone(), a, started, permit));
    }
    let reply = routed_reply(&state, a, started).await;
    drop(permit);
    reply
}

/// Authorises and parses a request.
pub(crate) fn admit(
    state: &ProxyState,
    headers: &HeaderMap,
    body: &[u8],
) -> Result<Admitted, ApiError> {
    let client = authorise(state, headers)?;
    let value: Value = serde_json::from_slice(body).map_err(|e| {
        ApiError::status(
            StatusCode::BAD_REQUEST,
            "invalid_json",
            format!("request body is not valid JSON: {e}"),
        )
    })?;
    let (request, question, stream) = parse_chat_request(&value)?;
    let task = request_task(headers, &value)?;
    let router = state.router();
    // "automix" routes; a configured model's llm_data name is a named route straight to it.
    let direct = request.model != "automix";
    let family = if direct {
        Some(0.0)
    } else {
        router.lambda_family()
    };
    let options = RouteOptions {
        tenant: Some(client.clone()),
        ..route_options(headers, &value, family)?
    };
    let names = router.models().names();
    if direct && !names.iter().any(|n| *n == request.model) {
        return Err(ApiError::status(
            StatusCode::NOT_FOUND,
            "model_not_found",
            format!(
                "model {:?} is not served here; served: automix, {}",
                excerpt(&request.model),
                names.join(", ")
            ),
        ));
    }
    Ok(Admitted {
        client,
        request,
        question,
        stream,
        router,
        options,
        direct,
        task,
    })
}

/// Routes an admitted request (or sends it down its named route) and builds the reply.
async fn routed_reply(
    state: &ProxyState,
    a: Admitted,
    started: Instant,
) -> Result<Response, ApiError> {
    let query = chat_query(a.question, &a.task);
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
        Ok(Err(e)) => return Err(routing_failed(&e)),
        Err(_) => return Err(routing_timed_out()),
    };
    state.observe(&outcome, started.elapsed());
    if !a.direct {
        state.shadow(&query, &outcome);
    }
    let (id, created) = completion_id(&outcome.route_id);
    let mut response = if a.stream {
        stream_response(&id, created, &outcome)
    } else {
        axum::Json(completion_json(&id, created, &outcome)).into_response()
    };
    add_headers(response.headers_mut(), &outcome);
    Ok(response)
}

/// A failed routing for the client. The full error (with upstream URLs) goes to the server
/// log only; the client gets [`ApiError::routing`].
pub(crate) fn routing_failed(e: &AutomixError) -> ApiError {
    eprintln!("automix serve: request failed: {e}");
    ApiError::routing(e)
}

/// The whole route outlasted `request_timeout`.
pub(crate) fn routing_timed_out() -> ApiError {
    ApiError::upstream(
        StatusCode::GATEWAY_TIMEOUT,
        "upstream_timeout",
        "routing timed out",
    )
}

/// A routing error inside a stream (the status line has gone): counted, then the event.
pub(crate) fn routed_failed_event(state: &ProxyState, e: &ApiError) -> String {
    state.metrics.count(e.error_kind());
    e.sse_event()
}
