//! The proxy against hostile tenants and unlucky networks: feedback bound to the key that
//! made the completion, unguessable ids, bounded influence, exact streams whatever the TCP
//! chunking, limits that hold for streams, λ clamped, typed fields, short echoes and stalled
//! bodies. Each test is a row of issue 22's table, driven over HTTP.

use std::path::Path;
use std::time::Duration;

use automix::config::Config;
use automix::llm::fake_server::{FakeOpenAi, FakeReply};
use automix_serve::{FeedbackLimitSettings, ProxySettings};
use serde_json::{Value, json};

use crate::proxy::{Proxy, pair, start, start_routed};
use crate::redis::plan;

const K1: &str = "key-one";
const K2: &str = "key-two";
const ADMIN: &str = "admin-key";

fn keyed(feedback: FeedbackLimitSettings) -> ProxySettings {
    ProxySettings {
        client_keys: vec![K1.into(), K2.into()],
        admin_keys: vec![ADMIN.into()],
        feedback,
        ..ProxySettings::default()
    }
}

/// A proxy over a trained cascade with an in-process online belief (so feedback counts).
async fn learning_proxy(small: &FakeOpenAi, large: &FakeOpenAi, settings: ProxySettings) -> Proxy {
    let text = "automix:\n  verification_samples: 2\n  cost_lambda: 0.02\n  online_belief: true\n\
                hparam:\n  routing_method: Threshold\n  verifier_signal: samples\n";
    let config = Config::parse(text, Path::new("hostile.yaml")).unwrap();
    let policy = plan(&config);
    let handles = pair(small, large);
    start_routed(handles, settings, &config, Some(policy)).await
}

async fn complete(client: &reqwest::Client, p: &Proxy, key: &str, q: &str) -> String {
    let resp = client
        .post(format!("{}/v1/chat/completions", p.base))
        .bearer_auth(key)
        .json(&json!({"model": "automix", "messages": [{"role": "user", "content": q}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let body: Value = resp.json().await.unwrap();
    body["id"].as_str().unwrap().to_owned()
}

async fn score(
    client: &reqwest::Client,
    p: &Proxy,
    key: &str,
    id: &str,
    score: f64,
) -> reqwest::Response {
    client
        .post(format!("{}/v1/automix/feedback", p.base))
        .bearer_auth(key)
        .json(&json!({"id": id, "score": score}))
        .send()
        .await
        .unwrap()
}

/// k2 cannot score k1's completion (the 404 of an unknown id, not a 403: no oracle), and
/// doing so does not use up k1's one score; an admin key may score anyone's.
#[tokio::test(flavor = "multi_thread")]
async fn feedback_is_bound_to_the_key_that_made_the_completion() {
    let small = FakeOpenAi::start(vec![]).await.unwrap();
    let large = FakeOpenAi::start(vec![]).await.unwrap();
    let p = learning_proxy(&small, &large, keyed(FeedbackLimitSettings::default())).await;
    let client = reqwest::Client::new();
    let id = complete(&client, &p, K1, "mine").await;
    let stolen = score(&client, &p, K2, &id, 0.0).await;
    assert_eq!(stolen.status(), 404);
    let stolen: Value = stolen.json().await.unwrap();
    let unknown: Value = score(&client, &p, K2, "chatcmpl-0000", 0.0)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(stolen["error"]["code"], unknown["error"]["code"]);
    assert_eq!(score(&client, &p, K1, &id, 1.0).await.status(), 200);
    assert_eq!(score(&client, &p, K1, &id, 1.0).await.status(), 409);
    let other = complete(&client, &p, K1, "theirs").await;
    assert_eq!(score(&client, &p, ADMIN, &other, 0.0).await.status(), 200);
}

/// Completion ids carry 128 random bits: 20 of them share no long prefix.
#[tokio::test(flavor = "multi_thread")]
async fn completion_ids_are_unguessable() {
    let small = FakeOpenAi::start(vec![]).await.unwrap();
    let large = FakeOpenAi::start(vec![]).await.unwrap();
    let p = learning_proxy(&small, &large, keyed(FeedbackLimitSettings::default())).await;
    let client = reqwest::Client::new();
    let mut ids = Vec::new();
    for i in 0..20 {
        ids.push(complete(&client, &p, K1, &format!("q{i}")).await);
    }
    for id in &ids {
        let random = id.strip_prefix("chatcmpl-").unwrap();
        assert!(random.len() >= 24, "{id}: fewer than 96 bits");
        assert!(random.chars().all(|c| c.is_ascii_hexdigit()), "{id}");
    }
    let common = |a: &str, b: &str| a.chars().zip(b.chars()).take_while(|(x, y)| x == y).count();
    let longest = ids
        .iter()
        .flat_map(|a| {
            ids.iter()
                .filter(move |b| *b != a)
                .map(move |b| common(a, b))
        })
        .max()
        .unwrap();
    // "chatcmpl-" is 9 characters; 20 random ids agree on a few more hex digits at most.
    assert!(
        longest < 9 + 6,
        "ids share {longest} leading characters: {ids:?}"
    );
}

/// One key scoring all of its completions 0 is capped: past `weight_per_window` its scores
/// get 429 `feedback_quota_exceeded` with Retry-After, and the belief counts no more than
/// the cap; another key's feedback is unaffected.
#[tokio::test(flavor = "multi_thread")]
async fn one_key_cannot_outweigh_the_cap() {
    let small = FakeOpenAi::start(vec![]).await.unwrap();
    let large = FakeOpenAi::start(vec![]).await.unwrap();
    let limits = FeedbackLimitSettings {
        per_minute: 1000,
        weight_per_window: 5,
        window: Duration::from_secs(3600),
    };
    let p = learning_proxy(&small, &large, keyed(limits)).await;
    let client = reqwest::Client::new();
    let before = probe(&client, &p, K2).await;
    let mut statuses = Vec::new();
    for i in 0..12 {
        let id = complete(&client, &p, K1, &format!("flood {i}")).await;
        let resp = score(&client, &p, K1, &id, 0.0).await;
        statuses.push(resp.status().as_u16());
        if resp.status() == 429 {
            let wait: u64 = resp.headers()["retry-after"]
                .to_str()
                .unwrap()
                .parse()
                .unwrap();
            assert!((3000..=3600).contains(&wait), "{wait}");
            let body: Value = resp.json().await.unwrap();
            assert_eq!(body["error"]["code"], "feedback_quota_exceeded");
        }
    }
    assert_eq!(
        statuses.iter().filter(|s| **s == 200).count(),
        5,
        "{statuses:?}"
    );
    assert_eq!(
        statuses.iter().filter(|s| **s == 429).count(),
        7,
        "{statuses:?}"
    );
    // What the cap lets through still teaches the shared belief (the point of feedback):
    // five zero scores for the small model send k2's next query straight to the large one
    // (the cascade pre-selects it). The cap
    // bounds how far one key can move it; it does not make the key harmless (README).
    assert_eq!(before, "small");
    assert_eq!(probe(&client, &p, K2).await, "large");
    let theirs = complete(&client, &p, K2, "honest").await;
    assert_eq!(score(&client, &p, K2, &theirs, 1.0).await.status(), 200);
    let metrics = client
        .get(format!("{}/metrics", p.base))
        .bearer_auth(ADMIN)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains("automix_feedback_refused_total 7"),
        "{metrics}"
    );
}

/// The models one probe question of `key` tried.
async fn probe(client: &reqwest::Client, p: &Proxy, key: &str) -> String {
    let resp = client
        .post(format!("{}/v1/chat/completions", p.base))
        .bearer_auth(key)
        .json(&json!({"model": "automix", "messages": [{"role": "user", "content": "probe"}]}))
        .send()
        .await
        .unwrap();
    resp.headers()["x-automix-models-tried"]
        .to_str()
        .unwrap()
        .to_owned()
}

/// Feedback requests past the per-minute rate get 429 `feedback_rate_limited` with a
/// Retry-After, before any lookup.
#[tokio::test(flavor = "multi_thread")]
async fn feedback_is_rate_limited_per_key() {
    let small = FakeOpenAi::start(vec![]).await.unwrap();
    let large = FakeOpenAi::start(vec![]).await.unwrap();
    let limits = FeedbackLimitSettings {
        per_minute: 3,
        ..FeedbackLimitSettings::default()
    };
    let p = learning_proxy(&small, &large, keyed(limits)).await;
    let client = reqwest::Client::new();
    for _ in 0..3 {
        assert_eq!(
            score(&client, &p, K1, "chatcmpl-x", 1.0).await.status(),
            404
        );
    }
    let limited = score(&client, &p, K1, "chatcmpl-x", 1.0).await;
    assert_eq!(limited.status(), 429);
    assert!(
        limited.headers()["retry-after"]
            .to_str()
            .unwrap()
            .parse::<u64>()
            .unwrap()
            >= 1
    );
    let body: Value = limited.json().await.unwrap();
    assert_eq!(body["error"]["code"], "feedback_rate_limited");
    assert_eq!(
        score(&client, &p, K2, "chatcmpl-x", 1.0).await.status(),
        404,
        "k2 has its own"
    );
}

/// "café 中文 😀 ñ" sent one byte per TCP write (every multi-byte character split) arrives
/// exactly, on a named route and on a routed answer kept unverified.
#[tokio::test(flavor = "multi_thread")]
async fn streams_split_inside_characters_arrive_exact() {
    let text = "café 中文 😀 ñ";
    let small = FakeOpenAi::start(vec![FakeReply::byte_stream(text)])
        .await
        .unwrap();
    let large = FakeOpenAi::start(vec![FakeReply::byte_stream(text)])
        .await
        .unwrap();
    let p = start(
        &small,
        &large,
        ProxySettings::default(),
        1,
        Duration::from_secs(10),
    )
    .await;
    let client = reqwest::Client::new();
    for body in [
        json!({"model": "large", "stream": true, "messages": [{"role": "user", "content": "q"}]}),
        // Zero escalations: the first answer is kept unverified, so it streams live.
        json!({"model": "automix", "stream": true, "messages": [{"role": "user", "content": "q"}]}),
    ] {
        let resp = client
            .post(format!("{}/v1/chat/completions", p.base))
            .header("x-automix-max-escalations", "0")
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200);
        let sse = resp.text().await.unwrap();
        let content: String = sse
            .lines()
            .filter_map(|l| l.strip_prefix("data: "))
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .filter_map(|c| {
                c["choices"][0]["delta"]["content"]
                    .as_str()
                    .map(str::to_owned)
            })
            .collect();
        assert_eq!(content, text, "{body}: {sse}");
    }
}

/// 20 concurrent streams of one key with `per_client_concurrency: 5`: 5 admitted, the rest
/// 429, on a routed stream and on a named route alike: a stream holds its slot to the end.
#[tokio::test(flavor = "multi_thread")]
async fn streams_hold_their_concurrency_slot_until_the_end() {
    for model in ["automix", "large"] {
        let slow = |n: usize| {
            (0..n)
                .map(|_| FakeReply::PacedStream {
                    chunks: vec!["slow ".into(); 10],
                    gap: Duration::from_millis(100),
                })
                .collect::<Vec<_>>()
        };
        let small = FakeOpenAi::start(slow(20)).await.unwrap();
        let large = FakeOpenAi::start(slow(20)).await.unwrap();
        let settings = ProxySettings {
            client_keys: vec![K1.into()],
            per_client_concurrency: 5,
            ..ProxySettings::default()
        };
        let p = start(&small, &large, settings, 1, Duration::from_secs(10)).await;
        let client = reqwest::Client::new();
        let calls = (0..20).map(|_| {
            let (client, base) = (&client, &p.base);
            async move {
                let resp = client
                    .post(format!("{base}/v1/chat/completions"))
                    .bearer_auth(K1)
                    .header("x-automix-max-escalations", "0")
                    .json(&json!({"model": model, "stream": true,
                        "messages": [{"role": "user", "content": "q"}]}))
                    .send()
                    .await
                    .unwrap();
                let status = resp.status().as_u16();
                let _ = resp.text().await;
                status
            }
        });
        let statuses = futures::future::join_all(calls).await;
        let admitted = statuses.iter().filter(|s| **s == 200).count();
        assert_eq!(admitted, 5, "{model}: {statuses:?}");
        assert_eq!(
            statuses.iter().filter(|s| **s == 429).count(),
            15,
            "{model}"
        );
    }
}

/// A request λ beyond the cascade's solved range uses the nearest end's table and says so:
/// 1e17 is the largest solved λ's (the cheapest model), not λ 0's.
#[tokio::test(flavor = "multi_thread")]
async fn a_request_lambda_is_clamped_into_the_solved_range() {
    let text = "automix:\n  verification_samples: 2\n  cost_lambda: 0.02\n\
                hparam:\n  routing_method: Threshold\n  verifier_signal: samples\n";
    let config = Config::parse(text, Path::new("lambda.yaml")).unwrap();
    let policy = plan(&config);
    let largest = policy
        .cascade
        .as_ref()
        .unwrap()
        .lambda_family
        .iter()
        .map(|t| t.lambda)
        .fold(0.0, f64::max);
    let small = FakeOpenAi::start(vec![]).await.unwrap();
    let large = FakeOpenAi::start(vec![]).await.unwrap();
    let handles = pair(&small, &large);
    let p = start_routed(handles, ProxySettings::default(), &config, Some(policy)).await;
    let client = reqwest::Client::new();
    let ask = |lambda: &'static str| {
        let (client, base) = (&client, &p.base);
        async move {
            let resp = client
                .post(format!("{base}/v1/chat/completions"))
                .header("x-automix-lambda", lambda)
                .json(&json!({"model": "automix", "messages": [{"role": "user", "content": "q"}]}))
                .send()
                .await
                .unwrap();
            assert_eq!(resp.status(), 200);
            let h = resp.headers().clone();
            let used: f64 = h["x-automix-lambda"].to_str().unwrap().parse().unwrap();
            (
                h["x-automix-models-tried"].to_str().unwrap().to_owned(),
                used,
            )
        }
    };
    let (at_largest, used) = ask("1e15").await;
    assert_eq!(used, largest);
    let (huge, used) = ask("1e17").await;
    assert_eq!(used, largest, "the echo names the λ used");
    assert_eq!(huge, at_largest, "1e17 routes like the largest solved λ");
    assert!(!huge.contains("large"), "the cheapest model only: {huge}");
    let (at_zero, used) = ask("0").await;
    assert_eq!(used, 0.0);
    assert!(at_zero.contains("large"), "λ 0 buys quality: {at_zero}");
}

/// `automix` must be an object: an array, a string, a number or null is a 400 naming it.
#[tokio::test(flavor = "multi_thread")]
async fn the_automix_field_must_be_an_object() {
    let small = FakeOpenAi::start(vec![]).await.unwrap();
    let large = FakeOpenAi::start(vec![]).await.unwrap();
    let p = start(
        &small,
        &large,
        ProxySettings::default(),
        1,
        Duration::from_secs(10),
    )
    .await;
    let client = reqwest::Client::new();
    for bad in [json!([]), json!("str"), json!(5), json!(null)] {
        let resp = client
            .post(format!("{}/v1/chat/completions", p.base))
            .json(&json!({"model": "automix", "automix": bad,
                "messages": [{"role": "user", "content": "q"}]}))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 400, "{bad}");
        let body: Value = resp.json().await.unwrap();
        assert_eq!(body["error"]["param"], "automix", "{bad}");
    }
    assert_eq!(small.calls(), 0);
}

/// A megabyte id (or model name) is not echoed back: the error names a short prefix.
#[tokio::test(flavor = "multi_thread")]
async fn client_strings_are_echoed_only_as_a_short_prefix() {
    let small = FakeOpenAi::start(vec![]).await.unwrap();
    let large = FakeOpenAi::start(vec![]).await.unwrap();
    let settings = ProxySettings {
        body_limit: 4 << 20,
        ..keyed(FeedbackLimitSettings::default())
    };
    let p = learning_proxy(&small, &large, settings).await;
    let client = reqwest::Client::new();
    let huge = "x".repeat(1 << 20);
    let resp = score(&client, &p, K1, &huge, 1.0).await;
    assert_eq!(resp.status(), 404);
    let text = resp.text().await.unwrap();
    assert!(text.len() < 1024, "{} bytes echoed", text.len());
    let resp = client
        .post(format!("{}/v1/chat/completions", p.base))
        .bearer_auth(K1)
        .json(&json!({"model": huge, "messages": [{"role": "user", "content": "q"}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 404);
    assert!(resp.text().await.unwrap().len() < 1024);
}

/// A client that sends its headers and then stalls its body gets a 408 and is closed once
/// the body-read timeout passes, so stalled bodies cannot hold every connection.
#[tokio::test(flavor = "multi_thread")]
async fn a_stalled_body_is_cut_off() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let small = FakeOpenAi::start(vec![]).await.unwrap();
    let large = FakeOpenAi::start(vec![]).await.unwrap();
    let settings = ProxySettings {
        body_read_timeout: Duration::from_millis(300),
        max_connections: 2,
        ..ProxySettings::default()
    };
    let p = start(&small, &large, settings, 1, Duration::from_secs(10)).await;
    let addr = p.base.strip_prefix("http://").unwrap().to_owned();
    let mut stalled = Vec::new();
    for _ in 0..2 {
        let mut s = tokio::net::TcpStream::connect(&addr).await.unwrap();
        s.write_all(
            b"POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n\
              content-length: 100\r\n\r\n{\"model\":",
        )
        .await
        .unwrap();
        stalled.push(s);
    }
    for s in &mut stalled {
        let mut got = Vec::new();
        let read = tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut got)).await;
        assert!(read.is_ok(), "the stalled connection was not closed");
        let text = String::from_utf8_lossy(&got);
        assert!(text.starts_with("HTTP/1.1 408"), "{text}");
        assert!(text.contains("body_timeout"), "{text}");
    }
    // Both slots are free again: a normal request gets through.
    let resp = reqwest::Client::new()
        .post(format!("{}/v1/chat/completions", p.base))
        .json(&json!({"model": "automix", "messages": [{"role": "user", "content": "q"}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
}
