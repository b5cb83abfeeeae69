//! `stream: true`: server-sent events of a routed outcome (whole or live) and of a named
//! route, built by one response builder; errors after the status line are SSE error events
//! from [`ApiError::sse_event`], counted like any other error.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Instant;

use axum::body::Body;
use axum::http::{HeaderName, HeaderValue, StatusCode, header};
use axum::response::Response;
use futures::{Stream, StreamExt};
use serde_json::{Value, json};
use tokio::sync::OwnedSemaphorePermit;

use automix::AutomixError;
use automix::router::{RouteOutcome, Routed, Router};
use automix_llm::ChatRequest;

use crate::reply::{add_headers, completion_id, finish_reason, indexed, metadata_json, usage_json};
use crate::request::{DEFAULT_TASK, chat_query, last_user_text};
use crate::routes::{Admitted, routed_failed_event, routing_failed, routing_timed_out};
use crate::{ApiError, ProxyState};

/// The one builder of SSE responses: `events` as the body, with the event-stream headers
/// and `headers` (values that are not valid header text are left out).
pub(crate) fn sse_response<S>(events: S, headers: &[(&'static str, &str)]) -> Response
where
    S: Stream<Item = String> + Send + 'static,
{
    let mut response = Response::new(Body::from_stream(events.map(Ok::<_, Infallible>)));
    let h = response.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/event-stream"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    for (name, value) in headers {
        if let Ok(v) = HeaderValue::from_str(value) {
            h.insert(HeaderName::from_static(name), v);
        }
    }
    response
}

/// `events`, holding the client's concurrency slot until the last one is sent or the
/// client goes away (the stream is dropped).
fn holding<S>(events: S, permit: OwnedSemaphorePermit) -> impl Stream<Item = String> + Send
where
    S: Stream<Item = String> + Send,
{
    events.map(move |e| {
        let _held = &permit;
        e
    })
}

/// A routed request with `stream: true`. The SSE response starts at once; while earlier
/// answers are verified, keep-alive comments flow. An answer kept unverified (the last
/// model, a pre-selected start) streams live as the model sends it; a verified answer is
/// sent whole once kept. What routing decided (model, path, decision) goes in the final
/// chunk's `automix` field, since the headers have gone by then.
pub(crate) fn routed_stream(
    state: Arc<ProxyState>,
    a: Admitted,
    started: Instant,
    permit: OwnedSemaphorePermit,
) -> Response {
    let (tx, rx) = tokio::sync::mpsc::channel::<String>(64);
    tokio::spawn(async move {
        let Some(routed) = route_with_keepalive(&state, a, &tx).await else {
            return; // the client left
        };
        let mut events = routed_events(&state, routed, started);
        while let Some(event) = events.next().await {
            if tx.send(event).await.is_err() {
                return;
            }
        }
    });
    let body =
        futures::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|e| (e, rx)) });
    sse_response(holding(body, permit), &[])
}

type Routing = Result<automix::Result<Routed>, tokio::time::error::Elapsed>;

/// Routes `a` within the request timeout, sending keep-alive comments meanwhile; `None`
/// when the client left.
async fn route_with_keepalive(
    state: &ProxyState,
    a: Admitted,
    tx: &tokio::sync::mpsc::Sender<String>,
) -> Option<Routing> {
    let query = chat_query(a.question, &a.task);
    let routing = a.router.route_chat_streaming(&query, a.request, &a.options);
    let routing = tokio::time::timeout(state.settings.request_timeout, routing);
    tokio::pin!(routing);
    let mut tick = tokio::time::interval(state.settings.stream_keepalive);
    tick.tick().await;
    loop {
        tokio::select! {
            r = &mut routing => {
                if let Ok(Ok(Routed::Whole(o) | Routed::Live { outcome: o, .. })) = &r {
                    state.shadow(&query, o);
                }
                return Some(r);
            }
            _ = tick.tick() => {
                if tx.send(": keep-alive\n\n".into()).await.is_err() {
                    return None;
                }
            }
        }
    }
}

/// The events of a finished routing: the outcome (whole or live), or its error.
fn routed_events(
    state: &ProxyState,
    routed: Routing,
    started: Instant,
) -> futures::stream::BoxStream<'static, String> {
    let failed = |e: ApiError| futures::stream::iter([routed_failed_event(state, &e)]).boxed();
    match routed {
        Ok(Ok(Routed::Whole(o))) => {
            state.observe(&o, started.elapsed());
            let (id, created) = completion_id(&o.route_id);
            futures::stream::iter(outcome_events(&id, created, &o)).boxed()
        }
        Ok(Ok(Routed::Live { outcome, stream })) => {
            state.observe(&outcome, started.elapsed());
            let (id, created) = completion_id(&outcome.route_id);
            let summary = metadata_json(&outcome);
            live_events(state, id, created, outcome.api_model, summary, stream)
        }
        Ok(Err(e)) => failed(routing_failed(&e)),
        Err(_) => failed(routing_timed_out()),
    }
}

/// A model's deltas as chunks as they arrive, then the `automix` summary (usage is null:
/// OpenAI-compatible upstreams do not report it in streams). A break mid-stream is an SSE
/// error event (counted), then the summary and `[DONE]`.
fn live_events(
    state: &ProxyState,
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
    let errors = state.metrics.error_counter();
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
                let e = ApiError::upstream(
                    StatusCode::BAD_GATEWAY,
                    "upstream_error",
                    "the upstream stream broke",
                );
                errors.count(e.error_kind());
                Some(e.sse_data())
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

/// A named route with `stream: true`: the model's deltas go to the client as they arrive.
/// Headers known before the first byte (model, decision) are sent; the final chunk carries
/// the `automix` summary. A failure before the first delta is an ordinary OpenAI error; one
/// after it is an SSE `error` event, since the status line has gone.
pub(crate) async fn live_stream(
    state: &Arc<ProxyState>,
    router: &Router,
    request: ChatRequest,
    started: Instant,
    permit: OwnedSemaphorePermit,
) -> Result<Response, ApiError> {
    let name = request.model.clone();
    let (api_model, deltas) = match router.direct_stream(&name, request.clone()).await {
        Ok(s) => s,
        // A backend that cannot stream answers whole, sent as chunks.
        Err(AutomixError::Model {
            source: automix_llm::LlmError::Unsupported(_),
            ..
        }) => {
            let query = chat_query(last_user_text(&request), DEFAULT_TASK);
            let o = router
                .direct(&query, &name, request)
                .await
                .map_err(|e| routing_failed(&e))?;
            state.observe(&o, started.elapsed());
            let (id, created) = completion_id(&o.route_id);
            let mut response = stream_response(&id, created, &o);
            add_headers(response.headers_mut(), &o);
            return Ok(response);
        }
        Err(e) => return Err(routing_failed(&e)),
    };
    state.metrics.record_direct_stream(started.elapsed());
    let (id, created) = completion_id("");
    let summary =
        json!({"model_name": name, "models_tried": [name], "decision": "direct", "lambda": null});
    let events = live_events(state, id, created, api_model, summary, deltas);
    let headers = [
        ("x-automix-model", name.as_str()),
        ("x-automix-models-tried", name.as_str()),
        ("x-automix-decision", "direct"),
    ];
    Ok(sse_response(holding(events, permit), &headers))
}

/// One SSE event of a `chat.completion.chunk` with a single choice.
fn sse_chunk(id: &str, created: u64, model: &str, delta: Value, finish: Value) -> String {
    let c = json!({
        "id": id, "object": "chat.completion.chunk", "created": created, "model": model,
        "choices": [{"index": 0, "delta": delta, "logprobs": null, "finish_reason": finish}]
    });
    format!("data: {c}\n\n")
}

/// A whole outcome as an SSE response (a verified answer, or a request with tools).
pub(crate) fn stream_response(id: &str, created: u64, o: &RouteOutcome) -> Response {
    sse_response(futures::stream::iter(outcome_events(id, created, o)), &[])
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
