//! An in-process fake OpenAI server (axum on 127.0.0.1:0), scripted per call, for fault
//! tests. Enabled by the `test-support` feature.

use crate::sync::lock;
use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use serde_json::{Value, json};

/// What the fake server does for one call.
#[derive(Debug, Clone)]
pub enum FakeReply {
    /// A normal completion with these choice texts (and logprobs if asked and `logprobs`).
    Completion {
        /// One text per choice.
        texts: Vec<String>,
        /// Include per-token logprobs when the request asked for them.
        logprobs: bool,
    },
    /// An error status with a body and optional `Retry-After` seconds.
    Status {
        /// Status code.
        status: u16,
        /// Body.
        body: String,
        /// `Retry-After` header value in seconds.
        retry_after: Option<u64>,
    },
    /// Wait, then do `then`.
    Delay(Duration, Box<FakeReply>),
    /// Close the connection without a response.
    Reset,
    /// 200 with this raw body.
    Raw(String),
    /// An SSE stream of these content deltas; `complete: false` breaks it before `[DONE]`.
    Stream {
        /// Content per chunk.
        chunks: Vec<String>,
        /// Whether to finish with `[DONE]`.
        complete: bool,
    },
    /// A complete SSE stream of these content deltas, `gap` apart (a slow upstream).
    PacedStream {
        /// Content per chunk.
        chunks: Vec<String>,
        /// Pause before each event.
        gap: Duration,
    },
    /// An SSE response written as these raw byte pieces, `gap` apart, each flushed on its
    /// own: a piece may end inside a UTF-8 character or between `\r` and `\n`, as TCP
    /// chunks do.
    RawStream {
        /// The bytes of the response body, piece by piece.
        pieces: Vec<Vec<u8>>,
        /// Pause before each piece.
        gap: Duration,
    },
    /// Answer as the server would by default (see [`FakeOpenAi`]).
    Echo,
}

impl FakeReply {
    /// A complete OpenAI SSE stream whose content is `text` (one delta per word), written
    /// one byte per piece: every multi-byte character arrives split.
    pub fn byte_stream(text: &str) -> Self {
        let mut body = String::new();
        for word in text.split_inclusive(' ') {
            let ev = json!({"object": "chat.completion.chunk",
                "choices": [{"index": 0, "delta": {"content": word}, "finish_reason": null}]});
            body.push_str(&format!("data: {ev}\r\n\r\n"));
        }
        let end = json!({"object": "chat.completion.chunk",
            "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]});
        body.push_str(&format!("data: {end}\n\ndata: [DONE]\n\n"));
        Self::RawStream {
            pieces: body.bytes().map(|b| vec![b]).collect(),
            gap: Duration::from_micros(200),
        }
    }
}

#[derive(Default)]
struct Shared {
    script: Mutex<VecDeque<FakeReply>>,
    requests: Mutex<Vec<Value>>,
}

/// A running fake server. Once the script is used up every call gets [`FakeReply::Echo`]:
/// `n` choices (the request's `n`), choice `i` reading `echo <last user message> #i seed <seed>`.
pub struct FakeOpenAi {
    addr: SocketAddr,
    shared: Arc<Shared>,
    task: tokio::task::JoinHandle<()>,
}

impl FakeOpenAi {
    /// Starts a server with `script`.
    pub async fn start(script: Vec<FakeReply>) -> std::io::Result<Self> {
        let shared = Arc::new(Shared {
            script: Mutex::new(script.into()),
            requests: Mutex::new(Vec::new()),
        });
        let app = Router::new()
            .route("/v1/chat/completions", post(handle))
            // Anthropic's Messages API, for its dialect's tests (script its replies: the
            // default echo answers in OpenAI's shape).
            .route("/v1/messages", post(handle))
            .with_state(shared.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Ok(Self { addr, shared, task })
    }

    /// `http://127.0.0.1:PORT/v1`.
    pub fn base_url(&self) -> String {
        format!("http://{}/v1", self.addr)
    }

    /// Request bodies received, in arrival order.
    pub fn requests(&self) -> Vec<Value> {
        lock(&self.shared.requests).clone()
    }

    /// Number of requests received.
    pub fn calls(&self) -> usize {
        lock(&self.shared.requests).len()
    }
}

impl Drop for FakeOpenAi {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn handle(State(shared): State<Arc<Shared>>, body: Bytes) -> Response {
    let request: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    lock(&shared.requests).push(request.clone());
    let reply = lock(&shared.script).pop_front().unwrap_or(FakeReply::Echo);
    respond(reply, &request).await
}

async fn respond(mut reply: FakeReply, request: &Value) -> Response {
    while let FakeReply::Delay(d, then) = reply {
        tokio::time::sleep(d).await;
        reply = *then;
    }
    match reply {
        FakeReply::Echo => {
            let n = request["n"].as_u64().unwrap_or(1).max(1);
            // A string, or the text parts of an array of parts (as clients send them).
            let last = match request["messages"].as_array().and_then(|m| m.last()) {
                Some(m) => match &m["content"] {
                    Value::String(s) => s.clone(),
                    Value::Array(parts) => parts
                        .iter()
                        .filter_map(|p| p["text"].as_str())
                        .collect::<Vec<_>>()
                        .join("\n"),
                    _ => String::new(),
                },
                None => String::new(),
            };
            let seed = request["seed"]
                .as_u64()
                .map_or("none".to_owned(), |s| s.to_string());
            let texts = (0..n)
                .map(|i| format!("echo {last} #{i} seed {seed}"))
                .collect();
            completion(texts, true, request)
        }
        FakeReply::Completion { texts, logprobs } => completion(texts, logprobs, request),
        FakeReply::Status {
            status,
            body,
            retry_after,
        } => {
            let code = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
            let mut resp = (code, body).into_response();
            if let Some(s) = retry_after {
                resp.headers_mut()
                    .insert(header::RETRY_AFTER, HeaderValue::from(s));
            }
            resp
        }
        FakeReply::Raw(body) => {
            ([(header::CONTENT_TYPE, "application/json")], body).into_response()
        }
        FakeReply::Reset => {
            // A body that fails before its first byte makes hyper drop the connection
            // without sending a response: the client sees a reset.
            let failing = futures::stream::once(async {
                Err::<Bytes, std::io::Error>(std::io::Error::new(
                    std::io::ErrorKind::ConnectionReset,
                    "reset",
                ))
            });
            Response::new(Body::from_stream(failing))
        }
        FakeReply::PacedStream { chunks, gap } => sse(chunks, true, gap, request),
        FakeReply::Stream { chunks, complete } => {
            sse(chunks, complete, Duration::from_millis(5), request)
        }
        FakeReply::RawStream { pieces, gap } => {
            let stream =
                futures::StreamExt::then(futures::stream::iter(pieces), move |p| async move {
                    tokio::time::sleep(gap).await;
                    Ok::<_, std::io::Error>(Bytes::from(p))
                });
            (
                [(header::CONTENT_TYPE, "text/event-stream")],
                Body::from_stream(stream),
            )
                .into_response()
        }
        FakeReply::Delay(..) => unreachable!("delays unwrapped above"),
    }
}

/// An SSE response of `chunks`, each event `gap` after the previous one; `complete: false`
/// breaks the connection instead of sending `[DONE]`.
fn sse(chunks: Vec<String>, complete: bool, gap: Duration, request: &Value) -> Response {
    let model = request["model"].as_str().unwrap_or("fake").to_owned();
    let mut events: Vec<Result<Bytes, std::io::Error>> = chunks
        .iter()
        .map(|c| {
            let ev = json!({"id": "chatcmpl-fake", "object": "chat.completion.chunk", "model": model,
                "choices": [{"index": 0, "delta": {"content": c}, "finish_reason": null}]});
            Ok(Bytes::from(format!("data: {ev}\n\n")))
        })
        .collect();
    if complete {
        let ev = json!({"id": "chatcmpl-fake", "object": "chat.completion.chunk", "model": model,
                "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]});
        events.push(Ok(Bytes::from(format!("data: {ev}\n\ndata: [DONE]\n\n"))));
    } else {
        events.push(Err(std::io::Error::new(
            std::io::ErrorKind::ConnectionReset,
            "upstream died",
        )));
    }
    // Pace the events so each is flushed before the next (and before a break).
    let stream = futures::StreamExt::then(futures::stream::iter(events), move |e| async move {
        tokio::time::sleep(gap).await;
        e
    });
    (
        [(header::CONTENT_TYPE, "text/event-stream")],
        Body::from_stream(stream),
    )
        .into_response()
}

fn completion(texts: Vec<String>, logprobs: bool, request: &Value) -> Response {
    let want_logprobs = logprobs && request["logprobs"].as_bool().unwrap_or(false);
    let top_k = request["top_logprobs"].as_u64().unwrap_or(0) as usize;
    let choices: Vec<Value> = texts
        .iter()
        .enumerate()
        .map(|(i, t)| {
            let mut c = json!({"index": i, "message": {"role": "assistant", "content": t}, "finish_reason": "stop"});
            if want_logprobs {
                let toks: Vec<Value> = t
                    .split_inclusive(' ')
                    .map(|tok| {
                        let alts: Vec<Value> = (0..top_k).map(|k| json!({"token": format!("{tok}{k}"), "logprob": -1.0 - k as f64})).collect();
                        json!({"token": tok, "logprob": -0.5, "top_logprobs": alts})
                    })
                    .collect();
                c["logprobs"] = json!({"content": toks});
            }
            c
        })
        .collect();
    let completion_tokens: usize = texts.iter().map(|t| t.split_whitespace().count()).sum();
    let body = json!({
        "id": "chatcmpl-fake", "object": "chat.completion", "created": 0,
        "model": request["model"].as_str().unwrap_or("fake"),
        "choices": choices,
        "usage": {"prompt_tokens": 10, "completion_tokens": completion_tokens, "total_tokens": 10 + completion_tokens}
    });
    axum::Json(body).into_response()
}

/// The base URL of the local llama.cpp server named `name`, from the
/// `.cache/llms/servers.json` that `cargo xtask llms up` writes (searched upwards from the
/// working directory). `None`, with a message, when it is not up; panics instead when
/// `AUTOMIX_REQUIRE_LLMS` is set, so CI cannot skip real-model tests silently.
pub fn local_server(name: &str) -> Option<String> {
    let cwd = std::env::current_dir().unwrap_or_default();
    let found = cwd
        .ancestors()
        .map(|dir| dir.join(".cache/llms/servers.json"))
        .find(|p| p.exists())
        .and_then(|p| std::fs::read_to_string(p).ok())
        .and_then(|t| serde_json::from_str::<serde_json::Value>(&t).ok())
        .and_then(|v| v[name]["base_url"].as_str().map(str::to_owned));
    if found.is_none() {
        assert!(
            std::env::var_os("AUTOMIX_REQUIRE_LLMS").is_none(),
            "local LLM server {name} is required but not up"
        );
        eprintln!("skipping: no local LLM server {name} (run `cargo xtask llms up`)");
    }
    found
}
