//! The OpenAI-compatible proxy against fake upstreams.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use automix::config::Config;
use automix::llm::fake_server::{FakeOpenAi, FakeReply};
use automix::llm::*;
use automix::verify::PromptSet;
use automix::{ModelHandle, ModelSet, Router};
use automix_serve::{ProxySettings, ProxyState, serve};
use serde_json::{Value, json};

pub fn handle(
    name: &str,
    price: f64,
    base: String,
    attempts: u32,
    timeout: Duration,
) -> ModelHandle {
    let entry = ModelEntry {
        name: name.into(),
        parameters: price * 1e9,
        input_price: price,
        output_price: price,
        model: format!("api-{name}"),
        service: None,
        api_endpoint: Some(base.clone()),
        api_key_env: None,
    };
    let config = EndpointConfig {
        max_attempts: attempts,
        backoff_base: Duration::from_millis(1),
        request_timeout: timeout,
        api_key: Some(ApiKey::new("sk-upstream-secret")),
        ..EndpointConfig::new(base)
    };
    ModelHandle {
        entry,
        provider: Arc::new(HttpBackend::new(config).unwrap()),
    }
}

/// The small and large models of most tests: one attempt, 5 s per call.
pub fn pair(small: &FakeOpenAi, large: &FakeOpenAi) -> Vec<ModelHandle> {
    let t = Duration::from_secs(5);
    vec![
        handle("small", 1.0, small.base_url(), 1, t),
        handle("large", 10.0, large.base_url(), 1, t),
    ]
}

/// The reply's `x-automix-verification-score` header as a number (a test fails if it is
/// missing or "unknown").
fn score_header(headers: &reqwest::header::HeaderMap) -> f64 {
    headers["x-automix-verification-score"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap()
}

/// POSTs `body` to the proxy's chat endpoint.
pub async fn chat(base: &str, body: &Value) -> reqwest::Response {
    reqwest::Client::new()
        .post(format!("{base}/v1/chat/completions"))
        .json(body)
        .send()
        .await
        .unwrap()
}

pub struct Proxy {
    pub base: String,
    _shutdown: tokio::sync::oneshot::Sender<()>,
}

pub async fn start(
    small: &FakeOpenAi,
    large: &FakeOpenAi,
    settings: ProxySettings,
    attempts: u32,
    timeout: Duration,
) -> Proxy {
    start_with(
        vec![
            handle("small", 1.0, small.base_url(), attempts, timeout),
            handle("large", 10.0, large.base_url(), attempts, timeout),
        ],
        settings,
    )
    .await
}

async fn start_with(handles: Vec<ModelHandle>, settings: ProxySettings) -> Proxy {
    let config = Config::parse(
        "automix:\n  verification_samples: 2\n",
        Path::new("proxy.yaml"),
    )
    .unwrap();
    start_routed(handles, settings, &config, None).await
}

pub async fn start_routed(
    handles: Vec<ModelHandle>,
    settings: ProxySettings,
    config: &Config,
    policy: Option<automix::training::RouterPolicy>,
) -> Proxy {
    let models = ModelSet::new(handles).unwrap();
    let router = Router::new(config, models, Arc::new(PromptSet::builtin()), policy).unwrap();
    serve_state(ProxyState::new(router, None, settings)).await
}

/// Serves `state` on a free loopback port until the returned proxy is dropped.
pub async fn serve_state(state: Arc<ProxyState>) -> Proxy {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(serve(listener, state, async {
        let _ = rx.await;
    }));
    Proxy {
        base,
        _shutdown: tx,
    }
}

/// A request body as the official OpenAI Python SDK sends it.
fn openai_body(content: &str) -> Value {
    json!({
        "messages": [
            {"role": "system", "content": "You are a helpful assistant."},
            {"role": "user", "content": [{"type": "text", "text": content}]}
        ],
        "model": "automix",
        "max_completion_tokens": 64,
        "temperature": 0.2,
        "seed": 5,
        "stop": ["\n\n"]
    })
}

#[tokio::test(flavor = "multi_thread")]
async fn a_completion_round_trips_in_openai_shape_with_routing_metadata() {
    let small = FakeOpenAi::start(vec![]).await.unwrap();
    let large = FakeOpenAi::start(vec![]).await.unwrap();
    let proxy = start(
        &small,
        &large,
        ProxySettings::default(),
        2,
        Duration::from_secs(10),
    )
    .await;
    let client = reqwest::Client::new();
    let resp = client
        .post(format!("{}/v1/chat/completions", proxy.base))
        .json(&openai_body("What is 2+2?"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let h = resp.headers().clone();
    assert_eq!(h["x-automix-model"], "small");
    assert_eq!(h["x-automix-decision"], "keep");
    assert_eq!(h["x-automix-models-tried"], "small");
    assert!(h.contains_key("x-automix-verification-score"));
    assert!(h.contains_key("x-automix-cost"));
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["object"], "chat.completion");
    assert_eq!(body["model"], "api-small");
    assert_eq!(body["choices"][0]["message"]["role"], "assistant");
    assert_eq!(body["choices"][0]["finish_reason"], "stop");
    let content = body["choices"][0]["message"]["content"].as_str().unwrap();
    assert!(content.contains("What is 2+2?"), "{content}");
    let u = &body["usage"];
    assert_eq!(
        u["total_tokens"].as_u64(),
        Some(u["prompt_tokens"].as_u64().unwrap() + u["completion_tokens"].as_u64().unwrap())
    );
    assert_eq!(body["automix"]["decision"], "keep");
    // The client's fields reached the upstream; the upstream key did not reach the client.
    let sent = &small.requests()[0];
    assert_eq!(sent["model"], "api-small");
    assert_eq!(sent["seed"], 5);
    assert_eq!(sent["max_tokens"], 64);
    assert_eq!(sent["stop"], json!(["\n\n"]));
    assert_eq!(
        sent["messages"][0]["content"],
        "You are a helpful assistant."
    );
    assert!(!body.to_string().contains("sk-upstream-secret"));
    // /v1/models, /health.
    let models: Value = client
        .get(format!("{}/v1/models", proxy.base))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(models["data"][0]["id"], "automix");
    // A named route: straight to the large model, no verification.
    let mut named = openai_body("named route");
    named["model"] = json!("large");
    let resp = client
        .post(format!("{}/v1/chat/completions", proxy.base))
        .json(&named)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["x-automix-decision"], "direct");
    assert_eq!(resp.headers()["x-automix-model"], "large");
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["model"], "api-large");
    let content = body["choices"][0]["message"]["content"].as_str().unwrap();
    assert!(content.contains("named route"), "{content}");
    assert_eq!(large.requests().len(), 1);
    let health: Value = client
        .get(format!("{}/health", proxy.base))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(health["status"], "ok");
    let metrics = client
        .get(format!("{}/metrics", proxy.base))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(metrics.contains("automix_requests_total 2"), "{metrics}");
    assert!(
        metrics.contains("automix_model_calls_total{model=\"small\"} 2"),
        "{metrics}"
    );
    assert!(
        metrics.contains("automix_request_duration_seconds_count 2"),
        "{metrics}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_rejected_answer_is_escalated_and_streams_as_sse() {
    let small = FakeOpenAi::start(vec![
        FakeReply::Completion {
            texts: vec!["maybe 5".into()],
            logprobs: false,
        },
        FakeReply::Completion {
            texts: vec!["Incorrect".into(), "Incorrect.".into()],
            logprobs: false,
        },
    ])
    .await
    .unwrap();
    // The last model is not verified, so it is asked for a stream.
    let large = FakeOpenAi::start(vec![FakeReply::Stream {
        chunks: vec!["The answer ".into(), "is 4.".into()],
        complete: true,
    }])
    .await
    .unwrap();
    let proxy = start(
        &small,
        &large,
        ProxySettings::default(),
        2,
        Duration::from_secs(10),
    )
    .await;
    let mut body = openai_body("What is 2+2?");
    body["stream"] = json!(true);
    let resp = chat(&proxy.base, &body).await;
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["content-type"], "text/event-stream");
    let text = resp.text().await.unwrap();
    // Routing decided after the headers went: the decision is in the final chunk.
    let (_, summary) = sse_content(&text);
    assert_eq!(summary["decision"], "escalate");
    assert_eq!(summary["models_tried"], json!(["small", "large"]));
    let mut content = String::new();
    let mut finished = false;
    for line in text
        .lines()
        .filter(|l| !l.is_empty() && !l.starts_with(':'))
    {
        let data = line.strip_prefix("data: ").unwrap();
        if data == "[DONE]" {
            finished = true;
            continue;
        }
        let chunk: Value = serde_json::from_str(data).unwrap();
        assert_eq!(chunk["object"], "chat.completion.chunk");
        assert_eq!(chunk["model"], "api-large");
        if let Some(c) = chunk["choices"][0]["delta"]["content"].as_str() {
            content.push_str(c);
        }
    }
    assert!(finished);
    assert_eq!(content, "The answer is 4.");
}

#[tokio::test(flavor = "multi_thread")]
async fn client_errors_and_upstream_faults_map_to_openai_errors() {
    let small = FakeOpenAi::start(vec![
        FakeReply::Status {
            status: 503,
            body: "{\"error\":\"busy\"}".into(),
            retry_after: None,
        },
        FakeReply::Status {
            status: 503,
            body: "{\"error\":\"busy\"}".into(),
            retry_after: None,
        },
        FakeReply::Delay(Duration::from_secs(3), Box::new(FakeReply::Echo)),
        FakeReply::Delay(Duration::from_secs(3), Box::new(FakeReply::Echo)),
    ])
    .await
    .unwrap();
    let large = FakeOpenAi::start(vec![]).await.unwrap();
    let settings = ProxySettings {
        client_keys: vec!["client-key".into()],
        body_limit: 4096,
        ..ProxySettings::default()
    };
    let proxy = start(&small, &large, settings, 2, Duration::from_millis(300)).await;
    let client = reqwest::Client::new();
    let url = format!("{}/v1/chat/completions", proxy.base);
    let post = |body: String, key: Option<&str>| {
        let mut r = client
            .post(&url)
            .header("content-type", "application/json")
            .body(body);
        if let Some(k) = key {
            r = r.bearer_auth(k);
        }
        r.send()
    };
    let ok_body = openai_body("hi").to_string();
    let resp = post(ok_body.clone(), None).await.unwrap();
    assert_eq!(resp.status(), 401);
    let e: Value = resp.json().await.unwrap();
    assert_eq!(e["error"]["code"], "invalid_api_key");
    let resp = post("{not json".into(), Some("client-key")).await.unwrap();
    assert_eq!(resp.status(), 400);
    assert_eq!(
        resp.json::<Value>().await.unwrap()["error"]["type"],
        "invalid_request_error"
    );
    let resp = post(
        json!({"model": "gpt-4o", "messages": [{"role": "user", "content": "x"}]}).to_string(),
        Some("client-key"),
    )
    .await
    .unwrap();
    assert_eq!(resp.status(), 404);
    let e: Value = resp.json().await.unwrap();
    let message = e["error"]["message"].as_str().unwrap();
    assert!(
        message.ends_with("served: automix, small, large"),
        "{message}"
    );
    let resp = post("x".repeat(10_000), Some("client-key")).await.unwrap();
    assert_eq!(resp.status(), 413);
    // Two 503s exhaust the two attempts: a 502 with an OpenAI error object.
    let resp = post(ok_body.clone(), Some("client-key")).await.unwrap();
    assert_eq!(resp.status(), 502);
    let e: Value = resp.json().await.unwrap();
    assert_eq!(e["error"]["code"], "upstream_error");
    assert!(!e.to_string().contains("sk-upstream-secret"));
    // Two slow replies time out: 504.
    let resp = post(ok_body, Some("client-key")).await.unwrap();
    assert_eq!(resp.status(), 504);
    assert_eq!(
        resp.json::<Value>().await.unwrap()["error"]["code"],
        "upstream_timeout"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_hundred_concurrent_requests_get_their_own_answers() {
    let small = FakeOpenAi::start(vec![]).await.unwrap();
    let large = FakeOpenAi::start(vec![]).await.unwrap();
    let proxy = start(
        &small,
        &large,
        ProxySettings {
            per_client_concurrency: 200,
            ..ProxySettings::default()
        },
        2,
        Duration::from_secs(10),
    )
    .await;
    let client = reqwest::Client::new();
    let tasks: Vec<_> = (0..100)
        .map(|i| {
            let client = client.clone();
            let url = format!("{}/v1/chat/completions", proxy.base);
            tokio::spawn(async move {
                let marker = format!("request-{i}-marker");
                let resp = client
                    .post(url)
                    .json(&openai_body(&marker))
                    .send()
                    .await
                    .unwrap();
                assert_eq!(resp.status(), 200);
                let body: Value = resp.json().await.unwrap();
                (
                    marker,
                    body["choices"][0]["message"]["content"]
                        .as_str()
                        .unwrap()
                        .to_owned(),
                    body["id"].as_str().unwrap().to_owned(),
                )
            })
        })
        .collect();
    let mut ids = std::collections::HashSet::new();
    for t in tasks {
        let (marker, content, id) = t.await.unwrap();
        assert!(content.contains(&marker), "{marker} got {content}");
        assert!(ids.insert(id), "duplicate response id");
    }
    assert_eq!(ids.len(), 100);
}

/// Every key of `recorded` (recursively, first array element for arrays) is in `ours` with
/// the same JSON type (null matches anything: OpenAI uses it for "absent").
fn same_shape(recorded: &Value, ours: &Value, path: &str, skip: &[&str]) {
    match (recorded, ours) {
        (Value::Object(r), Value::Object(o)) => {
            for (k, v) in r {
                let p = format!("{path}.{k}");
                if skip.contains(&p.as_str()) {
                    continue;
                }
                let got = o.get(k).unwrap_or_else(|| panic!("missing {p} in {ours}"));
                same_shape(v, got, &p, skip);
            }
        }
        (Value::Array(r), Value::Array(o)) => {
            if let (Some(r0), Some(o0)) = (r.first(), o.first()) {
                same_shape(r0, o0, &format!("{path}[0]"), skip);
            }
        }
        (Value::Null, _) | (_, Value::Null) => {}
        (r, o) => assert_eq!(
            std::mem::discriminant(r),
            std::mem::discriminant(o),
            "{path}: {r} vs {o}"
        ),
    }
}

fn fixture(name: &str) -> Value {
    let path = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/it/fixtures")
        .join(name);
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

/// Recorded OpenAI bodies (API reference examples): the request is accepted, an upstream that
/// answers with the recorded response is read, and our reply has the recorded shape.
#[tokio::test(flavor = "multi_thread")]
async fn recorded_openai_bodies_round_trip() {
    let recorded = fixture("openai_chat_response.json");
    let small = FakeOpenAi::start(vec![
        FakeReply::Raw(recorded.to_string()),
        FakeReply::Completion {
            texts: vec!["Correct".into(), "Correct".into()],
            logprobs: false,
        },
        FakeReply::Raw(recorded.to_string()),
        FakeReply::Completion {
            texts: vec!["Correct".into(), "Correct".into()],
            logprobs: false,
        },
    ])
    .await
    .unwrap();
    let large = FakeOpenAi::start(vec![]).await.unwrap();
    let proxy = start(
        &small,
        &large,
        ProxySettings::default(),
        1,
        Duration::from_secs(10),
    )
    .await;
    let client = reqwest::Client::new();
    let request = fixture("openai_chat_request.json");
    let resp = client
        .post(format!("{}/v1/chat/completions", proxy.base))
        .json(&request)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let ours: Value = resp.json().await.unwrap();
    assert_eq!(
        ours["choices"][0]["message"]["content"],
        "Hello! How can I assist you today?"
    );
    // Optional newer fields we do not produce: annotations, token details, service tier.
    let skip = [
        ".choices[0].message.annotations",
        ".usage.prompt_tokens_details",
        ".usage.completion_tokens_details",
        ".service_tier",
    ];
    same_shape(&recorded, &ours, "", &skip);
    let sent = &small.requests()[0];
    assert_eq!(sent["messages"][0]["role"], "developer");
    assert_eq!(sent["max_tokens"], 32);

    let mut streaming = request.clone();
    streaming["stream"] = json!(true);
    let text = client
        .post(format!("{}/v1/chat/completions", proxy.base))
        .json(&streaming)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let first: Value =
        serde_json::from_str(text.lines().next().unwrap().strip_prefix("data: ").unwrap()).unwrap();
    same_shape(
        &fixture("openai_chat_chunk.json"),
        &first,
        "",
        &[".system_fingerprint"],
    );
}

async fn start_default(small: &FakeOpenAi, large: &FakeOpenAi, settings: ProxySettings) -> Proxy {
    start(small, large, settings, 1, Duration::from_secs(10)).await
}

fn raw_completion(choices: Value) -> FakeReply {
    FakeReply::Raw(
        json!({
            "id": "x", "object": "chat.completion", "created": 0, "model": "m",
            "choices": choices,
            "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2}
        })
        .to_string(),
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn invalid_sampling_values_are_400s_naming_the_field() {
    let small = FakeOpenAi::start(vec![]).await.unwrap();
    let large = FakeOpenAi::start(vec![]).await.unwrap();
    let proxy = start_default(&small, &large, ProxySettings::default()).await;
    let client = reqwest::Client::new();
    let cases = [
        ("max_tokens", json!(-5)),
        ("max_tokens", json!(99_999_999_999_999u64)),
        ("n", json!(0)),
        ("n", json!(-1)),
        ("n", json!(1000)),
        ("temperature", json!("hot")),
        ("top_p", json!(7)),
        ("stream", json!("yes")),
    ];
    for (field, value) in cases {
        let mut body = openai_body("hi");
        body[field] = value.clone();
        let resp = client
            .post(format!("{}/v1/chat/completions", proxy.base))
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 400, "{field} = {value}");
        let err: Value = resp.json().await.unwrap();
        assert_eq!(err["error"]["param"], field, "{err}");
        assert_eq!(err["error"]["type"], "invalid_request_error");
    }
    assert_eq!(
        small.calls() + large.calls(),
        0,
        "no invalid request reached a model"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn framework_errors_and_limits_answer_in_openai_form() {
    let small = FakeOpenAi::start(vec![FakeReply::Delay(
        Duration::from_millis(600),
        Box::new(FakeReply::Echo),
    )])
    .await
    .unwrap();
    let large = FakeOpenAi::start(vec![]).await.unwrap();
    let settings = ProxySettings {
        body_limit: 4096,
        per_client_concurrency: 1,
        ..ProxySettings::default()
    };
    let proxy = start_default(&small, &large, settings).await;
    let client = reqwest::Client::new();
    let error_of = |resp: reqwest::Response| async move {
        let status = resp.status().as_u16();
        let retry = resp.headers().get("retry-after").cloned();
        let body: Value = resp.json().await.expect("an OpenAI error body");
        (
            status,
            body["error"]["code"].as_str().unwrap_or("").to_owned(),
            retry,
        )
    };
    let nope = client
        .get(format!("{}/nope", proxy.base))
        .send()
        .await
        .unwrap();
    assert_eq!(error_of(nope).await.0, 404);
    let get = client
        .get(format!("{}/v1/chat/completions", proxy.base))
        .send()
        .await
        .unwrap();
    assert_eq!(error_of(get).await.0, 405);
    let mut huge = openai_body("hi");
    huge["messages"][1]["content"] = json!("x".repeat(10_000));
    let big = client
        .post(format!("{}/v1/chat/completions", proxy.base))
        .json(&huge)
        .send()
        .await
        .unwrap();
    assert_eq!(error_of(big).await.0, 413);
    // With auth off every caller is one anonymous client: a second token does not buy a
    // second slot, and the 429 says when to retry.
    let slow = {
        let client = client.clone();
        let url = format!("{}/v1/chat/completions", proxy.base);
        tokio::spawn(async move {
            client
                .post(url)
                .bearer_auth("token-a")
                .json(&json!({"model": "small", "messages": [{"role": "user", "content": "slow"}]}))
                .send()
                .await
                .unwrap()
                .status()
        })
    };
    tokio::time::sleep(Duration::from_millis(200)).await;
    let second = client
        .post(format!("{}/v1/chat/completions", proxy.base))
        .bearer_auth("token-b")
        .json(&openai_body("fast"))
        .send()
        .await
        .unwrap();
    let (status, code, retry) = error_of(second).await;
    assert_eq!((status, code.as_str()), (429, "rate_limit_exceeded"));
    assert_eq!(retry.unwrap(), "1");
    assert_eq!(slow.await.unwrap(), 200);
}

#[tokio::test(flavor = "multi_thread")]
async fn upstream_faults_keep_urls_out_and_finish_reasons_in() {
    let small = FakeOpenAi::start(vec![]).await.unwrap();
    let large = FakeOpenAi::start(vec![
        raw_completion(json!([{
            "index": 0, "message": {"role": "assistant", "content": "cut sh"},
            "finish_reason": "length"
        }])),
        raw_completion(json!([])),
        FakeReply::Status {
            status: 500,
            body: "internal trace at http://10.0.0.7/secret".into(),
            retry_after: None,
        },
    ])
    .await
    .unwrap();
    let proxy = start_default(&small, &large, ProxySettings::default()).await;
    let client = reqwest::Client::new();
    let ask = || {
        client
            .post(format!("{}/v1/chat/completions", proxy.base))
            .json(&json!({"model": "large", "messages": [{"role": "user", "content": "q"}]}))
            .send()
    };
    let cut: Value = ask().await.unwrap().json().await.unwrap();
    assert_eq!(cut["choices"][0]["finish_reason"], "length");
    assert_eq!(cut["choices"][0]["message"]["content"], "cut sh");
    for expected in ["has no choices", "HTTP 500"] {
        let resp = ask().await.unwrap();
        assert_eq!(resp.status(), 502);
        let text = resp.text().await.unwrap();
        assert!(text.contains(expected), "{text}");
        assert!(
            !text.contains("http://") && !text.contains("127.0.0.1"),
            "{text}"
        );
    }
    assert_eq!(
        large.calls(),
        3,
        "one upstream call each, none retried here"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn hung_upstream_calls_do_not_queue_a_request_for_minutes() {
    let hang = || FakeReply::Delay(Duration::from_secs(3), Box::new(FakeReply::Echo));
    let small = FakeOpenAi::start(vec![]).await.unwrap();
    let large = FakeOpenAi::start(vec![hang(), hang()]).await.unwrap();
    let mut limited = handle("large", 10.0, large.base_url(), 1, Duration::from_secs(10));
    limited.provider = Arc::new(
        HttpBackend::new(EndpointConfig {
            max_attempts: 1,
            max_concurrency: 2,
            queue_timeout: Some(Duration::from_millis(300)),
            ..EndpointConfig::new(large.base_url())
        })
        .unwrap(),
    );
    let proxy = start_with(
        vec![
            handle("small", 1.0, small.base_url(), 1, Duration::from_secs(10)),
            limited,
        ],
        ProxySettings::default(),
    )
    .await;
    let client = reqwest::Client::new();
    let url = format!("{}/v1/chat/completions", proxy.base);
    let body = json!({"model": "large", "messages": [{"role": "user", "content": "q"}]});
    let slow: Vec<_> = (0..2)
        .map(|_| {
            let (client, url, body) = (client.clone(), url.clone(), body.clone());
            tokio::spawn(async move { client.post(url).json(&body).send().await.unwrap().status() })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let third = client.post(&url).json(&body).send().await.unwrap();
    // Refused while the hung calls still hold both slots, not queued behind them.
    assert!(slow.iter().all(|h| !h.is_finished()));
    assert_eq!(third.status(), 503);
    assert_eq!(third.headers()["retry-after"], "1");
    let err: Value = third.json().await.unwrap();
    assert_eq!(err["error"]["code"], "upstream_busy");
    for s in slow {
        assert_eq!(s.await.unwrap(), 200);
    }
    assert_eq!(
        large.calls(),
        2,
        "the refused request never reached the upstream"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn admin_and_metrics_need_their_keys() {
    let small = FakeOpenAi::start(vec![]).await.unwrap();
    let large = FakeOpenAi::start(vec![]).await.unwrap();
    let client = reqwest::Client::new();
    // Auth off and no admin keys: reload is refused outright, whoever asks.
    let open = start_default(&small, &large, ProxySettings::default()).await;
    let reload = client
        .post(format!("{}/admin/reload", open.base))
        .bearer_auth("anything")
        .send()
        .await
        .unwrap();
    assert_eq!(reload.status(), 403);
    // Auth on: metrics and models need a client (or admin) key; reload an admin key.
    let settings = ProxySettings {
        client_keys: vec!["client-key".into()],
        admin_keys: vec!["admin-key".into()],
        ..ProxySettings::default()
    };
    let locked = start_default(&small, &large, settings).await;
    for path in ["/metrics", "/v1/models"] {
        let url = format!("{}{path}", locked.base);
        assert_eq!(
            client.get(&url).send().await.unwrap().status(),
            401,
            "{path}"
        );
        let ok = client
            .get(&url)
            .bearer_auth("client-key")
            .send()
            .await
            .unwrap();
        assert_eq!(ok.status(), 200, "{path}");
    }
    let metrics = client
        .get(format!("{}/metrics", locked.base))
        .bearer_auth("admin-key")
        .send()
        .await
        .unwrap();
    assert_eq!(metrics.status(), 200);
    let as_client = client
        .post(format!("{}/admin/reload", locked.base))
        .bearer_auth("client-key")
        .send()
        .await
        .unwrap();
    assert_eq!(as_client.status(), 401);
    let as_admin = client
        .post(format!("{}/admin/reload", locked.base))
        .bearer_auth("admin-key")
        .send()
        .await
        .unwrap();
    // Authorised; this proxy has no policy file to reload, which it says in OpenAI form.
    assert_eq!(as_admin.status(), 500);
    let body: Value = as_admin.json().await.unwrap();
    assert_eq!(body["error"]["code"], "reload_failed");
}

/// Reads until the server closes the connection (or `limit` passes): what it sent.
async fn read_until_closed(stream: &mut tokio::net::TcpStream, limit: Duration) -> Option<String> {
    use tokio::io::AsyncReadExt;
    let mut got = Vec::new();
    let read = tokio::time::timeout(limit, stream.read_to_end(&mut got)).await;
    read.ok()
        .map(|_| String::from_utf8_lossy(&got).into_owned())
}

#[tokio::test(flavor = "multi_thread")]
async fn slow_headers_and_excess_connections_are_cut_off() {
    use tokio::io::AsyncWriteExt;
    let small = FakeOpenAi::start(vec![]).await.unwrap();
    let large = FakeOpenAi::start(vec![]).await.unwrap();
    let settings = ProxySettings {
        header_read_timeout: Duration::from_millis(300),
        max_connections: 2,
        ..ProxySettings::default()
    };
    let proxy = start_default(&small, &large, settings).await;
    let addr = proxy.base.trim_start_matches("http://").to_owned();
    // A client that never finishes its headers is disconnected, not held.
    let mut slow = tokio::net::TcpStream::connect(&addr).await.unwrap();
    slow.write_all(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\n")
        .await
        .unwrap();
    let closed = read_until_closed(&mut slow, Duration::from_secs(20)).await;
    assert!(closed.is_some(), "a half-sent request was held open");
    // A kept-alive connection that goes idle after its reply is closed on the same clock:
    // hyper runs the header-read timer from the moment it waits for the next request.
    let mut idle = tokio::net::TcpStream::connect(&addr).await.unwrap();
    idle.write_all(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let served = read_until_closed(&mut idle, Duration::from_secs(20)).await;
    assert!(
        served
            .as_deref()
            .is_some_and(|r| r.starts_with("HTTP/1.1 200")),
        "an idle kept-alive connection was held open: {served:?}"
    );
    // Two open connections fill the limit; a third is closed at accept.
    let mut held = Vec::new();
    for _ in 0..2 {
        let mut c = tokio::net::TcpStream::connect(&addr).await.unwrap();
        c.write_all(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
            .await
            .unwrap();
        held.push(c);
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    let mut third = tokio::net::TcpStream::connect(&addr).await.unwrap();
    let _ = third
        .write_all(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
        .await;
    let reply = read_until_closed(&mut third, Duration::from_secs(20)).await;
    assert_eq!(
        reply.as_deref(),
        Some(""),
        "a connection past the limit was served"
    );
    // Once they close, the limit frees up again.
    drop(held);
    tokio::time::sleep(Duration::from_millis(100)).await;
    let ok = reqwest::get(format!("{}/health", proxy.base))
        .await
        .unwrap();
    assert_eq!(ok.status(), 200);
}

/// One fault scenario of the upstream, what the client sees and how often it was called.
struct Scenario {
    name: &'static str,
    script: Vec<FakeReply>,
    status: u16,
    /// OpenAI error `code`, or the `finish_reason` of a 200.
    code: &'static str,
    upstream_calls: usize,
}

/// The fault suite (failoverbench's scenarios) through `automix serve` on a named route:
/// up to 3 attempts, 300 ms per attempt, replies capped at 1 MB. Rules: 429, 5xx, resets,
/// timeouts and malformed bodies are retried; a 400/413/422 is the request's fault (400 to
/// the client, never retried, never escalated); a reply with no choices or over the size
/// cap is not retried (it would be again).
#[tokio::test(flavor = "multi_thread")]
async fn the_fault_suite_sees_exact_outcomes_and_call_counts() {
    let status = |code: u16, retry_after: Option<u64>| FakeReply::Status {
        status: code,
        body: format!("{{\"error\": {{\"message\": \"status {code}\"}}}}"),
        retry_after,
    };
    let ok = || {
        raw_completion(
            json!([{"index": 0, "message": {"role": "assistant", "content": "fine"}, "finish_reason": "stop"}]),
        )
    };
    let hang = || FakeReply::Delay(Duration::from_secs(2), Box::new(FakeReply::Echo));
    let scenarios = vec![
        Scenario {
            name: "429 with Retry-After, then success",
            script: vec![status(429, Some(0)), ok()],
            status: 200,
            code: "stop",
            upstream_calls: 2,
        },
        Scenario {
            name: "429 without Retry-After, always",
            script: vec![status(429, None), status(429, None), status(429, None)],
            status: 429,
            code: "upstream_rate_limited",
            upstream_calls: 3,
        },
        Scenario {
            name: "500 then 503 then success",
            script: vec![status(500, None), status(503, None), ok()],
            status: 200,
            code: "stop",
            upstream_calls: 3,
        },
        Scenario {
            name: "connection reset, then success",
            script: vec![FakeReply::Reset, ok()],
            status: 200,
            code: "stop",
            upstream_calls: 2,
        },
        Scenario {
            name: "hang past the timeout, every attempt",
            script: vec![hang(), hang(), hang()],
            status: 504,
            code: "upstream_timeout",
            upstream_calls: 3,
        },
        Scenario {
            name: "malformed JSON, every attempt",
            script: vec![
                FakeReply::Raw("not json".into()),
                FakeReply::Raw("{".into()),
                FakeReply::Raw("[]".into()),
            ],
            status: 502,
            code: "upstream_error",
            upstream_calls: 3,
        },
        Scenario {
            name: "truncated JSON, then success",
            script: vec![
                FakeReply::Raw("{\"choices\": [{\"index\": 0, \"mess".into()),
                ok(),
            ],
            status: 200,
            code: "stop",
            upstream_calls: 2,
        },
        Scenario {
            name: "400 context length",
            script: vec![FakeReply::Status {
                status: 400,
                body: "{\"error\": {\"code\": \"context_length_exceeded\"}}".into(),
                retry_after: None,
            }],
            status: 400,
            code: "context_length_exceeded",
            upstream_calls: 1,
        },
        Scenario {
            name: "content-filter refusal",
            script: vec![raw_completion(
                json!([{"index": 0, "message": {"role": "assistant", "content": ""}, "finish_reason": "content_filter"}]),
            )],
            status: 200,
            code: "content_filter",
            upstream_calls: 1,
        },
        Scenario {
            name: "flapping: 503, 200",
            script: vec![status(503, None), ok()],
            status: 200,
            code: "stop",
            upstream_calls: 2,
        },
        Scenario {
            name: "zero choices",
            script: vec![raw_completion(json!([]))],
            status: 502,
            code: "upstream_error",
            upstream_calls: 1,
        },
        Scenario {
            name: "a 20 MB reply",
            script: vec![FakeReply::Raw(format!(
                "{{\"pad\": \"{}\"}}",
                "x".repeat(20 << 20)
            ))],
            status: 502,
            code: "upstream_error",
            upstream_calls: 1,
        },
    ];
    let client = reqwest::Client::new();
    for s in scenarios {
        let small = FakeOpenAi::start(vec![]).await.unwrap();
        let large = FakeOpenAi::start(s.script).await.unwrap();
        let mut limited = handle(
            "large",
            10.0,
            large.base_url(),
            3,
            Duration::from_millis(300),
        );
        limited.provider = Arc::new(
            HttpBackend::new(EndpointConfig {
                max_attempts: 3,
                backoff_base: Duration::from_millis(1),
                request_timeout: Duration::from_millis(300),
                max_response_bytes: 1 << 20,
                ..EndpointConfig::new(large.base_url())
            })
            .unwrap(),
        );
        let small_handle = handle("small", 1.0, small.base_url(), 1, Duration::from_secs(5));
        let proxy = start_with(vec![small_handle, limited], ProxySettings::default()).await;
        let resp = client
            .post(format!("{}/v1/chat/completions", proxy.base))
            .json(&json!({"model": "large", "messages": [{"role": "user", "content": "q"}]}))
            .send()
            .await
            .unwrap();
        let got_status = resp.status().as_u16();
        let body: Value = resp.json().await.unwrap();
        let code = if got_status == 200 {
            body["choices"][0]["finish_reason"].clone()
        } else {
            body["error"]["code"].clone()
        };
        assert_eq!(
            (got_status, code.as_str().unwrap_or("")),
            (s.status, s.code),
            "{}: {body}",
            s.name
        );
        assert_eq!(large.calls(), s.upstream_calls, "{}", s.name);
        assert_eq!(
            small.calls(),
            0,
            "{}: a named route calls one model",
            s.name
        );
    }
}

/// A calibrated policy where a half-confident answer gains 0.5 by escalating: λ = 0.001
/// escalates it, λ = 0.1 keeps it (an escalation costs 50 units).
pub fn calibrated_policy(config: &Config) -> automix::training::RouterPolicy {
    let rows = crate::support::three_level_rows(300, "chat");
    automix::training::train_policy(config, &rows, "small", "large").unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_request_chooses_its_operating_point_with_lambda() {
    let half_sure = || {
        vec![
            FakeReply::Completion {
                texts: vec!["maybe 5".into()],
                logprobs: false,
            },
            FakeReply::Completion {
                texts: vec!["Correct".into(), "Incorrect".into()],
                logprobs: false,
            },
        ]
    };
    let small = FakeOpenAi::start([half_sure(), half_sure(), half_sure()].concat())
        .await
        .unwrap();
    let large = FakeOpenAi::start(vec![]).await.unwrap();
    let config = Config::parse(
        "hparam:\n  routing_method: Calibrated\n  verifier_signal: samples\n  per_task_prior: false\nautomix:\n  verification_samples: 2\n",
        Path::new("proxy.yaml"),
    )
    .unwrap();
    let policy = calibrated_policy(&config);
    let trained = policy.policy.trained_lambda().unwrap();
    let handles = vec![
        handle("small", 1.0, small.base_url(), 1, Duration::from_secs(5)),
        handle("large", 10.0, large.base_url(), 1, Duration::from_secs(5)),
    ];
    let proxy = start_routed(handles, ProxySettings::default(), &config, Some(policy)).await;
    let client = reqwest::Client::new();
    let url = format!("{}/v1/chat/completions", proxy.base);
    let ask = |lambda_header: Option<&str>, body_lambda: Option<Value>| {
        let mut body =
            json!({"model": "automix", "messages": [{"role": "user", "content": "2+2?"}]});
        if let Some(l) = body_lambda {
            body["automix"] = json!({"lambda": l});
        }
        let mut req = client.post(&url).json(&body);
        if let Some(h) = lambda_header {
            req = req.header("x-automix-lambda", h);
        }
        req.send()
    };
    // Header λ small: the half-sure answer is escalated; the λ used is echoed.
    let cheap_quality = ask(Some("0.001"), None).await.unwrap();
    assert_eq!(cheap_quality.status(), 200);
    assert_eq!(
        cheap_quality.headers()["x-automix-models-tried"],
        "small,large"
    );
    assert_eq!(cheap_quality.headers()["x-automix-lambda"], "0.001");
    // Body λ large wins over the header: the same answer is kept.
    let frugal = ask(Some("0.001"), Some(json!(0.1))).await.unwrap();
    assert_eq!(frugal.headers()["x-automix-models-tried"], "small");
    let body: Value = frugal.json().await.unwrap();
    assert_eq!(body["automix"]["lambda"], 0.1);
    // Without one, the trained λ applies and is echoed.
    let default = ask(None, None).await.unwrap();
    let echoed: f64 = default.headers()["x-automix-lambda"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert_eq!(echoed, trained);
    // Invalid values are 400s naming the field, before any model is called.
    let calls_before = small.calls();
    for (header, body_lambda, param) in [
        (Some("abc"), None, "x-automix-lambda"),
        (Some("-1"), None, "x-automix-lambda"),
        (None, Some(json!(-0.5)), "automix.lambda"),
        (None, Some(json!("high")), "automix.lambda"),
    ] {
        let resp = ask(header, body_lambda).await.unwrap();
        assert_eq!(resp.status(), 400);
        let err: Value = resp.json().await.unwrap();
        assert_eq!(err["error"]["param"], param, "{err}");
    }
    let capped = client
        .post(&url)
        .header("x-automix-max-escalations", "-1")
        .json(&json!({"model": "automix", "messages": [{"role": "user", "content": "q"}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(capped.status(), 400);
    assert_eq!(small.calls(), calls_before);
}

#[tokio::test(flavor = "multi_thread")]
async fn lambda_is_refused_where_the_policy_has_no_family() {
    let small = FakeOpenAi::start(vec![]).await.unwrap();
    let large = FakeOpenAi::start(vec![]).await.unwrap();
    let proxy = start_default(&small, &large, ProxySettings::default()).await;
    let resp = reqwest::Client::new()
        .post(format!("{}/v1/chat/completions", proxy.base))
        .header("x-automix-lambda", "0.5")
        .json(&openai_body("q"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 400);
    let err: Value = resp.json().await.unwrap();
    assert_eq!(err["error"]["param"], "x-automix-lambda");
    assert_eq!(small.calls(), 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_named_route_streams_tokens_as_the_upstream_sends_them() {
    let small = FakeOpenAi::start(vec![]).await.unwrap();
    let chunks: Vec<String> = ["The ", "answer ", "is ", "four", ", ", "surely."]
        .map(String::from)
        .to_vec();
    let large = FakeOpenAi::start(vec![FakeReply::PacedStream {
        chunks: chunks.clone(),
        gap: Duration::from_millis(100),
    }])
    .await
    .unwrap();
    let proxy = start_default(&small, &large, ProxySettings::default()).await;
    let resp = chat(
        &proxy.base,
        &json!({"model": "large", "stream": true,
            "messages": [{"role": "user", "content": "2+2?"}]}),
    )
    .await;
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["x-automix-decision"], "direct");
    assert_eq!(resp.headers()["x-automix-model"], "large");
    let (text, first, done) = read_sse(resp, "\"content\":\"The \"").await;
    // The first token reached the client while the upstream was still sending the other
    // five (100 ms apart); a buffered reply would deliver them all at once.
    let spread = done - first;
    assert!(
        spread >= Duration::from_millis(250),
        "streamed over only {spread:?}"
    );
    assert!(text.contains("\"model\":\"api-large\""));
    let (content, summary) = sse_content(&text);
    assert_eq!(summary["decision"], "direct");
    assert_eq!(content, chunks.concat());
    assert!(text.contains("\"finish_reason\":\"stop\""));
    assert_eq!(large.calls(), 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_stream_cut_mid_way_ends_in_an_sse_error_event() {
    let small = FakeOpenAi::start(vec![]).await.unwrap();
    let large = FakeOpenAi::start(vec![FakeReply::Stream {
        chunks: vec!["partial ".into(), "answ".into()],
        complete: false,
    }])
    .await
    .unwrap();
    let proxy = start_default(&small, &large, ProxySettings::default()).await;
    let resp = chat(
        &proxy.base,
        &json!({"model": "large", "stream": true,
            "messages": [{"role": "user", "content": "q"}]}),
    )
    .await;
    assert_eq!(resp.status(), 200, "the status line went before the cut");
    let text = resp.text().await.unwrap();
    assert!(text.contains("\"content\":\"partial \""), "{text}");
    let error = text
        .lines()
        .filter_map(|l| l.strip_prefix("data: "))
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .find(|v| v["error"].is_object())
        .expect("an SSE error event");
    assert_eq!(error["error"]["code"], "upstream_error");
    assert!(!text.contains("127.0.0.1"), "{text}");
    assert_eq!(large.calls(), 1, "a started stream is not retried");
}

/// A tool-calling conversation as the OpenAI SDK sends it: every field the router does not
/// interpret reaches the answering model unchanged, messages included (content parts, `null`
/// content with `tool_calls`, `tool` messages), and the model's tool call comes back whole.
#[tokio::test(flavor = "multi_thread")]
async fn uninterpreted_fields_and_tool_calls_pass_through() {
    let reply = tool_call_reply();
    let tool_call = reply["choices"][0]["message"]["tool_calls"].clone();
    let small = FakeOpenAi::start(vec![FakeReply::Raw(reply.to_string())])
        .await
        .unwrap();
    let large = FakeOpenAi::start(vec![]).await.unwrap();
    let proxy = start(
        &small,
        &large,
        ProxySettings::default(),
        1,
        Duration::from_secs(10),
    )
    .await;
    let tools = json!([{
        "type": "function",
        "function": {"name": "get_weather", "parameters": {"type": "object",
            "properties": {"city": {"type": "string"}}}}
    }]);
    let messages = json!([
        {"role": "user", "content": [
            {"type": "text", "text": "Weather in Paris and Rome?"},
            {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}}
        ]},
        {"role": "assistant", "content": null, "tool_calls": [{
            "id": "call_0", "type": "function",
            "function": {"name": "get_weather", "arguments": "{\"city\":\"Rome\"}"}}]},
        {"role": "tool", "tool_call_id": "call_0", "content": "sunny"},
        {"role": "user", "content": "And Paris?"}
    ]);
    let body = json!({
        "model": "automix",
        "messages": messages,
        "tools": tools,
        "tool_choice": "auto",
        "parallel_tool_calls": false,
        "response_format": {"type": "json_object"},
        "top_p": 0.9,
        "logprobs": true,
        "top_logprobs": 2,
        "user": "user-42",
        "frequency_penalty": 0.5,
        "metadata": {"trace": "t1"}
    });
    let resp = chat(&proxy.base, &body).await;
    assert_eq!(resp.status(), 200);
    let out: Value = resp.json().await.unwrap();
    let seen = small.requests();
    assert_eq!(seen.len(), 1, "a tool call is kept unverified: {seen:?}");
    let up = &seen[0];
    for field in [
        "tools",
        "tool_choice",
        "parallel_tool_calls",
        "response_format",
        "top_p",
        "logprobs",
        "top_logprobs",
        "user",
        "frequency_penalty",
        "metadata",
    ] {
        assert_eq!(up[field], body[field], "{field} did not arrive");
    }
    assert_eq!(up["messages"], messages, "messages arrive as sent");
    assert_eq!(up["model"], "api-small");
    assert!(large.requests().is_empty());
    let choice = &out["choices"][0];
    assert_eq!(choice["finish_reason"], "tool_calls");
    assert_eq!(choice["message"]["content"], Value::Null);
    assert_eq!(choice["message"]["tool_calls"], tool_call);
    assert_eq!(
        out["automix"]["steps"][0]["reason"],
        "tool call: kept unverified"
    );
}

/// A policy file that breaks while serving (truncated, wrong version, bad index) fails the
/// reload with the file and field named, and the server keeps routing on the old policy.
#[tokio::test(flavor = "multi_thread")]
async fn a_corrupt_policy_on_reload_keeps_the_old_one() {
    use automix::training::{RouterPolicy, train_policy};
    let config = Config::parse(
        "automix:\n  verification_samples: 2\nhparam:\n  routing_method: Threshold\n",
        Path::new("proxy.yaml"),
    )
    .unwrap();
    let rows = crate::support::two_model_rows(60, "small", "large", None);
    let policy = train_policy(&config, &rows, "small", "large").unwrap();
    let dir = std::env::temp_dir().join(format!("automix-reload-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("policy.json");
    policy.save(&path).unwrap();
    let good = std::fs::read_to_string(&path).unwrap();

    let small = FakeOpenAi::start(vec![]).await.unwrap();
    let large = FakeOpenAi::start(vec![]).await.unwrap();
    let handles = vec![
        handle("small", 1.0, small.base_url(), 1, Duration::from_secs(10)),
        handle("large", 10.0, large.base_url(), 1, Duration::from_secs(10)),
    ];
    let models = ModelSet::new(handles).unwrap();
    let loader: automix_serve::RouterLoader = {
        let (path, config, models) = (path.clone(), config.clone(), models.clone());
        Box::new(move || {
            let policy = RouterPolicy::load(&path)?;
            Router::new(
                &config,
                models.clone(),
                Arc::new(PromptSet::builtin()),
                Some(policy),
            )
        })
    };
    let router = loader().unwrap();
    let settings = ProxySettings {
        admin_keys: vec!["admin-key".into()],
        ..ProxySettings::default()
    };
    let state = ProxyState::new(router, Some(loader), settings);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let (_tx, rx) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(serve(listener, state.clone(), async {
        let _ = rx.await;
    }));
    let client = reqwest::Client::new();
    let ask = || {
        client
            .post(format!("{base}/v1/chat/completions"))
            .json(&openai_body("still there?"))
            .send()
    };
    assert_eq!(ask().await.unwrap().status(), 200);
    let bad_version = good.replacen("\"format_version\":", "\"format_version\": 99, \"x\":", 1);
    let corruptions = [
        ("truncated", good[..good.len() / 2].to_owned()),
        ("wrong version", bad_version),
        (
            "bad index",
            good.replace("\"large_model\": \"large\"", "\"large_model\": \"gone\""),
        ),
    ];
    for (what, text) in corruptions {
        std::fs::write(&path, text).unwrap();
        let err = state.reload().await.unwrap_err().to_string();
        assert!(
            err.contains("policy.json") || err.contains("gone"),
            "{what}: {err}"
        );
        let resp = client
            .post(format!("{base}/admin/reload"))
            .bearer_auth("admin-key")
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 500, "{what}");
        let body: Value = resp.json().await.unwrap();
        assert_eq!(body["error"]["code"], "reload_failed", "{what}");
        let routed = ask().await.unwrap();
        assert_eq!(routed.status(), 200, "{what}: the old policy keeps routing");
    }
    std::fs::write(&path, &good).unwrap();
    assert!(state.reload().await.is_ok());
    let _ = std::fs::remove_dir_all(&dir);
}

/// An upstream reply that calls `get_weather` for Paris (the body as OpenAI sends it).
pub fn tool_call_reply() -> Value {
    json!({
        "id": "x", "object": "chat.completion", "created": 1, "model": "api-small",
        "choices": [{"index": 0, "finish_reason": "tool_calls", "message": {
            "role": "assistant", "content": null, "tool_calls": [{
                "id": "call_1", "type": "function",
                "function": {"name": "get_weather", "arguments": "{\"city\": \"Paris\"}"}}]}}],
        "usage": {"prompt_tokens": 20, "completion_tokens": 5, "total_tokens": 25}
    })
}

/// Reads an SSE body to the end: the text, and when the first content delta and `[DONE]`
/// arrived.
async fn read_sse(
    resp: reqwest::Response,
    first_content: &str,
) -> (String, std::time::Instant, std::time::Instant) {
    use futures::StreamExt;
    let mut bytes = resp.bytes_stream();
    let (mut text, mut first, mut done) = (String::new(), None, None);
    while let Some(piece) = bytes.next().await {
        text.push_str(&String::from_utf8_lossy(&piece.unwrap()));
        if first.is_none() && text.contains(first_content) {
            first = Some(std::time::Instant::now());
        }
        if done.is_none() && text.contains("[DONE]") {
            done = Some(std::time::Instant::now());
        }
    }
    let first = first.unwrap_or_else(|| panic!("no {first_content} in {text}"));
    (text, first, done.unwrap())
}

/// The content deltas of an SSE body, concatenated, and its `automix` summary.
fn sse_content(text: &str) -> (String, Value) {
    let mut content = String::new();
    let mut summary = Value::Null;
    for line in text.lines().filter_map(|l| l.strip_prefix("data: ")) {
        if line == "[DONE]" {
            continue;
        }
        let chunk: Value = serde_json::from_str(line).unwrap();
        if let Some(c) = chunk["choices"][0]["delta"]["content"].as_str() {
            content.push_str(c);
        }
        if chunk["automix"].is_object() {
            summary = chunk["automix"].clone();
        }
    }
    (content, summary)
}

/// A routed stream whose kept answer is the last model's (the small answer's verdict was
/// unusable, so the router escalated): nothing is left to verify, so its tokens reach the
/// client as the upstream sends them.
#[tokio::test(flavor = "multi_thread")]
async fn the_last_model_of_a_route_streams_live() {
    let small = FakeOpenAi::start(vec![
        FakeReply::Completion {
            texts: vec!["Lyon".into()],
            logprobs: false,
        },
        FakeReply::Completion {
            texts: vec!["Incorrect".into(), "Incorrect".into()],
            logprobs: false,
        },
    ])
    .await
    .unwrap();
    let chunks: Vec<String> = ["Paris ", "is ", "the ", "capital", "."]
        .map(String::from)
        .to_vec();
    let large = FakeOpenAi::start(vec![FakeReply::PacedStream {
        chunks: chunks.clone(),
        gap: Duration::from_millis(100),
    }])
    .await
    .unwrap();
    let proxy = start_default(&small, &large, ProxySettings::default()).await;
    let resp = chat(
        &proxy.base,
        &json!({"model": "automix", "stream": true,
            "messages": [{"role": "user", "content": "Capital of France?"}]}),
    )
    .await;
    assert_eq!(resp.status(), 200);
    let (text, first, done) = read_sse(resp, "\"content\":\"Paris \"").await;
    // The first token arrived while the upstream was still sending the other four, 100 ms
    // apart; a buffered reply would deliver them together.
    let spread = done - first;
    assert!(
        spread >= Duration::from_millis(200),
        "streamed over only {spread:?}"
    );
    let (content, summary) = sse_content(&text);
    assert_eq!(content, chunks.concat());
    assert_eq!(summary["model_name"], "large");
    assert_eq!(summary["decision"], "escalate");
    assert_eq!(summary["models_tried"], json!(["small", "large"]));
    assert_eq!(
        large.calls(),
        1,
        "the last model was asked once, as a stream"
    );
}

/// A routed stream whose answer must be verified first stays alive with SSE comments while
/// the small model is slow, then streams the kept answer.
#[tokio::test(flavor = "multi_thread")]
async fn a_verified_stream_stays_alive_then_streams_the_kept_answer() {
    let small = FakeOpenAi::start(vec![
        FakeReply::Delay(
            Duration::from_millis(700),
            Box::new(FakeReply::Completion {
                texts: vec!["Paris is the capital.".into()],
                logprobs: false,
            }),
        ),
        FakeReply::Completion {
            texts: vec!["Correct".into(), "Correct".into()],
            logprobs: false,
        },
    ])
    .await
    .unwrap();
    let large = FakeOpenAi::start(vec![]).await.unwrap();
    let settings = ProxySettings {
        stream_keepalive: Duration::from_millis(100),
        ..ProxySettings::default()
    };
    let proxy = start_default(&small, &large, settings).await;
    let resp = chat(
        &proxy.base,
        &json!({"model": "automix", "stream": true,
            "messages": [{"role": "user", "content": "Capital of France?"}]}),
    )
    .await;
    assert_eq!(resp.status(), 200);
    let (text, _, _) = read_sse(resp, "\"content\":\"Paris ").await;
    let comments = text.lines().filter(|l| *l == ": keep-alive").count();
    assert!(comments >= 2, "no keep-alive while verifying: {text}");
    let first_data = text.find("data: ").unwrap();
    assert!(text[..first_data].contains(": keep-alive"), "{text}");
    let (content, summary) = sse_content(&text);
    assert_eq!(content, "Paris is the capital.");
    assert_eq!(summary["decision"], "keep");
    assert_eq!(summary["model_name"], "small");
    assert!(large.calls() == 0);
}

/// Every error response is counted once, by its type: a 401, a 400 naming a field, a 404
/// model and an admin 401 are client errors; an upstream failure is an upstream error; and
/// an error's `type` follows who failed.
#[tokio::test(flavor = "multi_thread")]
async fn every_error_is_counted_once_by_its_type() {
    let small = FakeOpenAi::start(vec![FakeReply::Status {
        status: 500,
        body: "boom".into(),
        retry_after: None,
    }])
    .await
    .unwrap();
    let large = FakeOpenAi::start(vec![]).await.unwrap();
    let settings = ProxySettings {
        client_keys: vec!["k".into()],
        admin_keys: vec!["adm".into()],
        ..ProxySettings::default()
    };
    let proxy = start_default(&small, &large, settings).await;
    let client = reqwest::Client::new();
    let chat = |key: &'static str, body: Value| {
        let (client, base) = (&client, &proxy.base);
        async move {
            client
                .post(format!("{base}/v1/chat/completions"))
                .bearer_auth(key)
                .json(&body)
                .send()
                .await
                .unwrap()
        }
    };
    let q = json!([{"role": "user", "content": "q"}]);
    assert_eq!(
        chat("wrong", json!({"model": "automix", "messages": q}))
            .await
            .status(),
        401
    );
    let bad = chat(
        "k",
        json!({"model": "automix", "messages": q, "temperature": 9}),
    )
    .await;
    assert_eq!(bad.status(), 400);
    assert_eq!(
        chat("k", json!({"model": "nope", "messages": q}))
            .await
            .status(),
        404
    );
    let admin = client
        .post(format!("{}/admin/reload", proxy.base))
        .bearer_auth("k")
        .send()
        .await
        .unwrap();
    assert_eq!(admin.status(), 401);
    let failed = chat("k", json!({"model": "small", "messages": q})).await;
    assert_eq!(failed.status(), 502);
    let body: Value = failed.json().await.unwrap();
    assert_eq!(body["error"]["type"], "upstream_error");
    let metrics = client
        .get(format!("{}/metrics", proxy.base))
        .bearer_auth("adm")
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains("automix_client_errors_total 4"),
        "{metrics}"
    );
    assert!(
        metrics.contains("automix_upstream_errors_total 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains("automix_server_errors_total 0"),
        "{metrics}"
    );
}

/// `enable_cascade: false` through the proxy: one upstream call (the pre-selected model's
/// answer), no verification call, and the reply says it was pre-selected.
#[tokio::test(flavor = "multi_thread")]
async fn select_mode_answers_with_one_model_call_and_no_verification() {
    let text = "automix:\n  verification_samples: 2\n  cost_lambda: 0.02\n  enable_cascade: false\n\
                hparam:\n  routing_method: Threshold\n  verifier_signal: samples\n";
    let config = Config::parse(text, Path::new("select.yaml")).unwrap();
    let policy = crate::redis::plan(&config);
    let small = FakeOpenAi::start(vec![]).await.unwrap();
    let large = FakeOpenAi::start(vec![]).await.unwrap();
    let handles = pair(&small, &large);
    let proxy = start_routed(handles, ProxySettings::default(), &config, Some(policy)).await;
    let resp = chat(
        &proxy.base,
        &json!({"model": "automix", "messages": [{"role": "user", "content": "q"}]}),
    )
    .await;
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["x-automix-decision"], "preselect");
    assert_eq!(resp.headers()["x-automix-verification-score"], "unknown");
    let body: Value = resp.json().await.unwrap();
    assert!(
        body["choices"][0]["message"]["content"]
            .as_str()
            .unwrap()
            .starts_with("echo")
    );
    assert_eq!(
        small.calls() + large.calls(),
        1,
        "one answer, no verification"
    );
}

/// The zero-call answer checks: an empty answer, a refusal, a `length`-truncated answer and
/// non-JSON under `response_format: json_object` from the small model are escalated with no
/// verification call, and the reply names the check; the large model's own failed check is
/// reported, not hidden.
#[tokio::test(flavor = "multi_thread")]
async fn bad_answers_escalate_without_a_verification_call() {
    let text = |t: &str| FakeReply::Completion {
        texts: vec![t.into()],
        logprobs: false,
    };
    let cut = raw_completion(json!([{"index": 0, "finish_reason": "length",
        "message": {"role": "assistant", "content": "The answer is"}}]));
    let cases = [
        ("empty", text("  "), json!({})),
        (
            "refusal",
            text("I'm sorry, but I can't help with that request."),
            json!({}),
        ),
        ("truncated", cut, json!({})),
        (
            "invalid_json",
            text("Sure! Here it is."),
            json!({"response_format": {"type": "json_object"}}),
        ),
    ];
    for (check, small_reply, extra) in cases {
        let small = FakeOpenAi::start(vec![small_reply]).await.unwrap();
        let large = FakeOpenAi::start(vec![text("{\"answer\": 4}")])
            .await
            .unwrap();
        let proxy = start_default(&small, &large, ProxySettings::default()).await;
        let mut body =
            json!({"model": "automix", "messages": [{"role": "user", "content": "2+2?"}]});
        for (k, v) in extra.as_object().unwrap() {
            body[k] = v.clone();
        }
        let resp = chat(&proxy.base, &body).await;
        assert_eq!(resp.status(), 200, "{check}");
        let h = resp.headers().clone();
        assert_eq!(h["x-automix-decision"], "escalate", "{check}");
        assert_eq!(h["x-automix-models-tried"], "small,large", "{check}");
        assert_eq!(h["x-automix-answer-check"], check, "{check}");
        let reply: Value = resp.json().await.unwrap();
        assert_eq!(reply["automix"]["answer_checks"][0]["check"], check);
        assert_eq!(reply["automix"]["answer_checks"][0]["model"], "small");
        let reason = reply["automix"]["steps"][0]["reason"].as_str().unwrap();
        assert!(
            reason.contains(check) && reason.contains("no verification call"),
            "{reason}"
        );
        assert_eq!(small.calls(), 1, "{check}: answered once, never verified");
        assert_eq!(large.calls(), 1, "{check}");
        assert_eq!(reply["choices"][0]["message"]["content"], "{\"answer\": 4}");
    }
    // The last model's failed check is reported with its answer, not hidden.
    let small = FakeOpenAi::start(vec![text("")]).await.unwrap();
    let large = FakeOpenAi::start(vec![text("")]).await.unwrap();
    let proxy = start_default(&small, &large, ProxySettings::default()).await;
    let resp = chat(
        &proxy.base,
        &json!({"model": "automix", "messages": [{"role": "user", "content": "q"}]}),
    )
    .await;
    assert_eq!(resp.headers()["x-automix-answer-check"], "empty");
    let reply: Value = resp.json().await.unwrap();
    let checks = reply["automix"]["answer_checks"].as_array().unwrap();
    assert_eq!(checks.len(), 2);
    assert_eq!(checks[1]["model"], "large");
    let metrics = reqwest::Client::new()
        .get(format!("{}/metrics", proxy.base))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains("automix_answer_checks_failed_total{check=\"empty\"} 2"),
        "{metrics}"
    );
}

/// `automix.answer_checks: []` turns the checks off: an empty answer is verified as before.
#[tokio::test(flavor = "multi_thread")]
async fn answer_checks_can_be_turned_off() {
    let small = FakeOpenAi::start(vec![FakeReply::Completion {
        texts: vec!["".into()],
        logprobs: false,
    }])
    .await
    .unwrap();
    let large = FakeOpenAi::start(vec![]).await.unwrap();
    let config = Config::parse(
        "automix:\n  verification_samples: 2\n  answer_checks: []\n",
        Path::new("off.yaml"),
    )
    .unwrap();
    let handles = pair(&small, &large);
    let proxy = start_routed(handles, ProxySettings::default(), &config, None).await;
    let resp = chat(
        &proxy.base,
        &json!({"model": "automix", "messages": [{"role": "user", "content": "q"}]}),
    )
    .await;
    assert_eq!(resp.status(), 200);
    assert!(!resp.headers().contains_key("x-automix-answer-check"));
    assert_eq!(small.calls(), 2, "answered, then verified");
}

/// An Anthropic upstream streams live through a named route: its recorded event stream,
/// sent a few bytes at a time, arrives as OpenAI chunks with the exact text.
#[tokio::test(flavor = "multi_thread")]
async fn an_anthropic_stream_arrives_live_through_a_named_route() {
    let raw = include_str!("../../../automix-llm/tests/it/fixtures/anthropic_stream.txt");
    let pieces = raw.as_bytes().chunks(7).map(<[u8]>::to_vec).collect();
    let claude = FakeOpenAi::start(vec![FakeReply::RawStream {
        pieces,
        gap: Duration::from_millis(2),
    }])
    .await
    .unwrap();
    let small = FakeOpenAi::start(vec![]).await.unwrap();
    let mut anthropic = handle("claude", 10.0, claude.base_url(), 1, Duration::from_secs(5));
    let config = EndpointConfig {
        max_attempts: 1,
        ..EndpointConfig::new(claude.base_url())
    };
    anthropic.provider = Arc::new(HttpBackend::anthropic(config).unwrap());
    let proxy = start_with(
        vec![
            handle("small", 1.0, small.base_url(), 1, Duration::from_secs(5)),
            anthropic,
        ],
        ProxySettings::default(),
    )
    .await;
    let resp = chat(
        &proxy.base,
        &json!({"model": "claude", "stream": true,
            "messages": [{"role": "user", "content": "hi"}]}),
    )
    .await;
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["x-automix-decision"], "direct");
    let text = resp.text().await.unwrap();
    let (content, summary) = sse_content(&text);
    assert_eq!(content, "Hello! Café 😀 here.");
    assert_eq!(summary["decision"], "direct");
    assert!(text.contains("\"finish_reason\":\"stop\""), "{text}");
    assert_eq!(claude.requests()[0]["stream"], true);
}

/// `verifier_signal: answer_consistency` live: the small model's answer plus k = 3 sampled
/// answers (one request, `n` = 3, at the verification temperature) and no verdict calls;
/// agreeing samples score 1 and keep the answer, disagreeing ones score below 0.5 and
/// escalate.
#[tokio::test(flavor = "multi_thread")]
async fn answer_consistency_scores_agreement_of_sampled_answers() {
    let text = "automix:\n  answer_samples: 3\nhparam:\n  verifier_signal: answer_consistency\n";
    let config = Config::parse(text, Path::new("sc.yaml")).unwrap();
    let reply = |texts: &[&str]| FakeReply::Completion {
        texts: texts.iter().map(|t| (*t).to_owned()).collect(),
        logprobs: false,
    };
    for (samples, expect_score, expect_models) in [
        (["4", "4", "4"], 1.0, "small"),
        (["1", "2", "3"], 1.0 / 3.0, "small,large"),
    ] {
        let small = FakeOpenAi::start(vec![reply(&["4"]), reply(&samples)])
            .await
            .unwrap();
        let large = FakeOpenAi::start(vec![reply(&["4"])]).await.unwrap();
        let handles = pair(&small, &large);
        let proxy = start_routed(handles, ProxySettings::default(), &config, None).await;
        let resp = chat(
            &proxy.base,
            &json!({"model": "automix", "messages": [{"role": "user", "content": "2+2?"}]}),
        )
        .await;
        assert_eq!(resp.status(), 200);
        let h = resp.headers().clone();
        let score = score_header(&h);
        assert!((score - expect_score).abs() < 1e-3, "{samples:?}: {score}");
        assert_eq!(h["x-automix-models-tried"], expect_models, "{samples:?}");
        let body: Value = resp.json().await.unwrap();
        let reported = body["automix"]["verification_score"].as_f64().unwrap();
        assert!((reported - expect_score).abs() < 1e-9);
        let requests = small.requests();
        assert_eq!(
            requests.len(),
            2,
            "an answer and one sampling request, no verdicts"
        );
        assert_eq!(requests[1]["n"], 3);
        assert!(requests[1]["temperature"].as_f64().unwrap() > 0.0);
    }
}

/// A policy trained with `hparam.fuse_signals: [samples, answer_logprob]` measures both
/// live (the answer asked with logprobs, then one request for the verdicts) and decides on
/// their fused confidence: the same answer probability is kept with agreeing verdicts and
/// escalated with disagreeing ones, and the score header is the fused value.
#[tokio::test(flavor = "multi_thread")]
async fn a_fused_policy_measures_every_signal_and_routes_on_their_fusion() {
    let config = Config::parse(
        "hparam:\n  routing_method: auto\n  fuse_signals: [samples, answer_logprob]\n  per_task_prior: false\nautomix:\n  verification_samples: 2\n",
        Path::new("fused.yaml"),
    )
    .unwrap();
    let rows = crate::support::two_signal_rows(400, "small", "large");
    let policy = automix::training::train_policy(&config, &rows, "small", "large").unwrap();
    let fusion = policy.fusion.clone().unwrap();
    let model = fusion.model.clone().expect("the fusion wins on these rows");
    for (verdict, votes, decision) in [("Correct", 1.0, "keep"), ("Incorrect", 0.0, "escalate")] {
        let small = FakeOpenAi::start(vec![
            FakeReply::Completion {
                texts: vec!["B".into()],
                logprobs: true,
            },
            FakeReply::Completion {
                texts: vec![verdict.into(), verdict.into()],
                logprobs: false,
            },
        ])
        .await
        .unwrap();
        let large = FakeOpenAi::start(vec![]).await.unwrap();
        let p = start_routed(
            pair(&small, &large),
            ProxySettings::default(),
            &config,
            Some(policy.clone()),
        )
        .await;
        let body =
            json!({"model": "automix", "messages": [{"role": "user", "content": "which one?"}]});
        let resp = chat(&p.base, &body).await;
        assert_eq!(resp.status(), 200);
        assert_eq!(resp.headers()["x-automix-decision"], decision);
        let score = score_header(resp.headers());
        let expected = model
            .predict(&[Some(votes), Some((-0.5f64).exp())])
            .unwrap();
        assert!((score - expected).abs() < 1e-3, "{score} vs {expected}");
        let requests = small.requests();
        assert_eq!(requests.len(), 2, "the answer and one verdict request");
        assert_eq!(requests[0]["logprobs"], true, "asked for answer_logprob");
        assert_eq!(requests[1]["n"], 2);
    }
}

/// `verifier_signal: answer_logprob` routes on the answer's own token logprobs: no
/// verification call at all. The fake upstream gives every token logprob −0.5, so the
/// score is e^−0.5 ≈ 0.61: kept at `verification_threshold: 0.5`, escalated at 0.7. The
/// logprobs asked for the signal are not returned to a client that did not ask.
#[tokio::test(flavor = "multi_thread")]
async fn answer_logprob_routes_without_a_verification_call() {
    for (threshold, decision, model) in [(0.5, "keep", "small"), (0.7, "escalate", "large")] {
        let small = FakeOpenAi::start(vec![]).await.unwrap();
        let large = FakeOpenAi::start(vec![]).await.unwrap();
        let text = format!(
            "hparam:\n  verifier_signal: answer_logprob\nautomix:\n  verification_threshold: {threshold}\n"
        );
        let config = Config::parse(&text, Path::new("t.yaml")).unwrap();
        let p = start_routed(
            pair(&small, &large),
            ProxySettings::default(),
            &config,
            None,
        )
        .await;
        let body =
            json!({"model": "automix", "messages": [{"role": "user", "content": "hi there"}]});
        let resp = chat(&p.base, &body).await;
        assert_eq!(resp.status(), 200);
        assert_eq!(resp.headers()["x-automix-decision"], decision);
        let score = score_header(resp.headers());
        assert!((score - (-0.5f64).exp()).abs() < 1e-3, "{score}");
        let reply: Value = resp.json().await.unwrap();
        assert_eq!(reply["automix"]["model_name"], model);
        assert_eq!(small.calls(), 1, "one answer, no verification call");
        assert_eq!(
            small.requests()[0]["logprobs"],
            true,
            "asked for the signal"
        );
        assert!(
            reply["choices"][0]["logprobs"].is_null(),
            "not returned unasked"
        );
    }
}
