//! Each upstream fault: what the caller observes and how many attempts it took.

use std::time::Duration;

use automix_llm::fake_server::{FakeOpenAi, FakeReply};
use automix_llm::*;
use futures::StreamExt;

fn fast(base: String) -> EndpointConfig {
    EndpointConfig {
        request_timeout: Duration::from_millis(400),
        deadline: Duration::from_secs(10),
        max_attempts: 3,
        backoff_base: Duration::from_millis(5),
        backoff_max: Duration::from_millis(20),
        ..EndpointConfig::new(base)
    }
}

fn req(n: u32) -> ChatRequest {
    ChatRequest {
        n,
        seed: Some(100),
        ..ChatRequest::new("m", vec![ChatMessage::user("hi")])
    }
}

fn ok(text: &str) -> FakeReply {
    FakeReply::Completion {
        texts: vec![text.into()],
        logprobs: false,
    }
}

fn status(code: u16) -> FakeReply {
    FakeReply::Status {
        status: code,
        body: format!("{{\"error\":\"code {code}\"}}"),
        retry_after: None,
    }
}

#[tokio::test]
async fn rate_limit_then_success_is_retried() {
    let server = FakeOpenAi::start(vec![
        FakeReply::Status {
            status: 429,
            body: "slow down".into(),
            retry_after: Some(0),
        },
        ok("fine"),
    ])
    .await
    .unwrap();
    let backend = HttpBackend::new(fast(server.base_url())).unwrap();
    let resp = backend.chat(&req(1)).await.unwrap();
    assert_eq!(resp.choices[0].text, "fine");
    assert_eq!(resp.requests, 2);
    assert_eq!(server.calls(), 2);
}

#[tokio::test]
async fn retry_after_is_honoured() {
    let server = FakeOpenAi::start(vec![
        FakeReply::Status {
            status: 503,
            body: "busy".into(),
            retry_after: Some(1),
        },
        ok("after"),
    ])
    .await
    .unwrap();
    let backend = HttpBackend::new(fast(server.base_url())).unwrap();
    let started = tokio::time::Instant::now();
    let resp = backend.chat(&req(1)).await.unwrap();
    assert_eq!(resp.choices[0].text, "after");
    // The backoff alone would be ≤ 20 ms; the server asked for 1 s.
    assert!(started.elapsed() >= Duration::from_millis(950));
}

#[tokio::test]
async fn persistent_503_exhausts_retries_with_status() {
    let server = FakeOpenAi::start(vec![status(503), status(503), status(503), ok("never")])
        .await
        .unwrap();
    let backend = HttpBackend::new(fast(server.base_url())).unwrap();
    let err = backend.chat(&req(1)).await.unwrap_err();
    assert!(
        matches!(err, LlmError::RetriesExhausted { attempts: 3, .. }),
        "{err}"
    );
    assert_eq!(err.status(), Some(503));
    assert!(err.to_string().contains("code 503"), "{err}");
    assert_eq!(server.calls(), 3);
}

#[tokio::test]
async fn other_4xx_is_not_retried() {
    let server = FakeOpenAi::start(vec![status(401), ok("never")])
        .await
        .unwrap();
    let backend = HttpBackend::new(fast(server.base_url())).unwrap();
    let err = backend.chat(&req(1)).await.unwrap_err();
    assert!(
        matches!(
            err,
            LlmError::Http {
                status: 401,
                retryable: false,
                ..
            }
        ),
        "{err}"
    );
    assert_eq!(server.calls(), 1);
}

#[tokio::test]
async fn slow_reply_times_out_then_succeeds() {
    let server = FakeOpenAi::start(vec![
        FakeReply::Delay(Duration::from_secs(2), Box::new(ok("late"))),
        ok("quick"),
    ])
    .await
    .unwrap();
    let backend = HttpBackend::new(fast(server.base_url())).unwrap();
    let resp = backend.chat(&req(1)).await.unwrap();
    assert_eq!(resp.choices[0].text, "quick");
    assert_eq!(resp.requests, 2);
}

#[tokio::test]
async fn always_slow_reports_timeout_after_every_attempt() {
    let slow = || FakeReply::Delay(Duration::from_secs(2), Box::new(ok("late")));
    let server = FakeOpenAi::start(vec![slow(), slow(), slow()])
        .await
        .unwrap();
    let backend = HttpBackend::new(fast(server.base_url())).unwrap();
    let err = backend.chat(&req(1)).await.unwrap_err();
    match err {
        LlmError::RetriesExhausted { attempts: 3, last } => {
            assert!(matches!(*last, LlmError::Timeout { .. }))
        }
        other => panic!("expected timeouts, got {other}"),
    }
}

#[tokio::test]
async fn overall_deadline_stops_retrying() {
    let slow = || FakeReply::Delay(Duration::from_secs(2), Box::new(ok("late")));
    let server = FakeOpenAi::start(vec![slow(), slow(), slow()])
        .await
        .unwrap();
    let cfg = EndpointConfig {
        deadline: Duration::from_millis(600),
        max_attempts: 10,
        ..fast(server.base_url())
    };
    let backend = HttpBackend::new(cfg).unwrap();
    let err = backend.chat(&req(1)).await.unwrap_err();
    assert!(
        matches!(err, LlmError::DeadlineExceeded { attempts: 2, .. }),
        "{err}"
    );
}

#[tokio::test]
async fn connection_reset_is_retried() {
    let server = FakeOpenAi::start(vec![FakeReply::Reset, ok("recovered")])
        .await
        .unwrap();
    let backend = HttpBackend::new(fast(server.base_url())).unwrap();
    let resp = backend.chat(&req(1)).await.unwrap();
    assert_eq!(resp.choices[0].text, "recovered");
    assert_eq!(server.calls(), 2);
}

#[tokio::test]
async fn refused_connection_is_a_clear_error() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    drop(listener);
    let backend = HttpBackend::new(fast(format!("http://127.0.0.1:{port}/v1"))).unwrap();
    let err = backend.chat(&req(1)).await.unwrap_err();
    match err {
        LlmError::RetriesExhausted { attempts: 3, last } => {
            assert!(matches!(*last, LlmError::Connection { .. }))
        }
        other => panic!("expected connection errors, got {other}"),
    }
}

#[tokio::test]
async fn malformed_json_is_retried_then_reported() {
    let server = FakeOpenAi::start(vec![FakeReply::Raw("{not json".into()), ok("good")])
        .await
        .unwrap();
    let backend = HttpBackend::new(fast(server.base_url())).unwrap();
    assert_eq!(backend.chat(&req(1)).await.unwrap().choices[0].text, "good");

    let bad = || FakeReply::Raw("<html>gateway</html>".into());
    let server = FakeOpenAi::start(vec![bad(), bad(), bad()]).await.unwrap();
    let backend = HttpBackend::new(fast(server.base_url())).unwrap();
    let err = backend.chat(&req(1)).await.unwrap_err();
    assert!(
        err.to_string().contains("malformed") && err.to_string().contains("gateway"),
        "{err}"
    );
}

#[tokio::test]
async fn n_rejected_falls_back_to_distinct_seeds_and_is_remembered() {
    let server = FakeOpenAi::start(vec![FakeReply::Status {
        status: 400,
        body: "only n=1 supported".into(),
        retry_after: None,
    }])
    .await
    .unwrap();
    let backend = HttpBackend::new(fast(server.base_url())).unwrap();
    let resp = backend.chat(&req(3)).await.unwrap();
    assert_eq!(resp.choices.len(), 3);
    assert_eq!(
        resp.choices.iter().map(|c| c.index).collect::<Vec<_>>(),
        vec![0, 1, 2]
    );
    let mut seeds: Vec<u64> = server.requests()[1..]
        .iter()
        .map(|r| r["seed"].as_u64().unwrap())
        .collect();
    seeds.sort();
    assert_eq!(seeds, vec![100, 101, 102]);
    assert!(!backend.supports_n());
    assert_eq!(
        resp.usage.prompt_tokens, 30,
        "three real requests, three prompts billed"
    );
    // Remembered: the next call goes straight to single requests.
    let before = server.calls();
    backend.chat(&req(2)).await.unwrap();
    assert_eq!(server.calls() - before, 2);
    assert!(
        server.requests()[before..]
            .iter()
            .all(|r| r.get("n").is_none())
    );
}

#[tokio::test]
async fn fewer_choices_than_n_are_topped_up() {
    let server = FakeOpenAi::start(vec![FakeReply::Completion {
        texts: vec!["only one".into()],
        logprobs: false,
    }])
    .await
    .unwrap();
    let backend = HttpBackend::new(fast(server.base_url())).unwrap();
    let resp = backend.chat(&req(3)).await.unwrap();
    assert_eq!(resp.choices.len(), 3);
    assert_eq!(resp.choices[0].text, "only one");
    assert_eq!(server.calls(), 3);
    assert!(!backend.supports_n());
}

#[tokio::test]
async fn logprobs_are_parsed_and_missing_logprobs_are_none() {
    let server = FakeOpenAi::start(vec![
        FakeReply::Completion {
            texts: vec!["Correct answer".into()],
            logprobs: true,
        },
        FakeReply::Completion {
            texts: vec!["Correct".into()],
            logprobs: false,
        },
    ])
    .await
    .unwrap();
    let backend = HttpBackend::new(fast(server.base_url())).unwrap();
    let r = ChatRequest {
        logprobs: true,
        top_logprobs: Some(2),
        ..req(1)
    };
    let resp = backend.chat(&r).await.unwrap();
    let lp = resp.choices[0].logprobs.as_ref().expect("logprobs");
    assert_eq!(lp[0].token, "Correct ");
    assert_eq!(lp[0].top_logprobs.len(), 2);
    let resp = backend.chat(&r).await.unwrap();
    assert_eq!(resp.choices[0].logprobs, None);
}

#[tokio::test]
async fn streaming_yields_deltas_and_reports_a_broken_stream() {
    let server = FakeOpenAi::start(vec![
        FakeReply::Stream {
            chunks: vec!["Hel".into(), "lo".into()],
            complete: true,
        },
        FakeReply::Stream {
            chunks: vec!["partial".into()],
            complete: false,
        },
    ])
    .await
    .unwrap();
    let backend = HttpBackend::new(fast(server.base_url())).unwrap();
    let items: Vec<_> = backend.chat_stream(&req(1)).await.unwrap().collect().await;
    let text: String = items
        .iter()
        .map(|d| d.as_ref().unwrap().content.clone())
        .collect();
    assert_eq!(text, "Hello");
    assert_eq!(
        items
            .last()
            .unwrap()
            .as_ref()
            .unwrap()
            .finish_reason
            .as_deref(),
        Some("stop")
    );

    let items: Vec<_> = backend.chat_stream(&req(1)).await.unwrap().collect().await;
    assert_eq!(items[0].as_ref().unwrap().content, "partial");
    assert!(
        matches!(items.last().unwrap(), Err(LlmError::Stream { .. })),
        "{:?}",
        items.last()
    );
}

#[tokio::test]
async fn sse_parser_handles_split_events() {
    let raw = "data: {\"choices\":[{\"index\":0,\"delta\":{\"content\":\"a\"}}]}\r\n\r\ndata: {\"choices\":[{\"index\":0,\"delta\":{\"content\":\"b\"}}]}\n\ndata: [DONE]\n\n";
    let pieces: Vec<Result<bytes::Bytes, String>> = raw
        .as_bytes()
        .chunks(7)
        .map(|c| Ok(bytes::Bytes::copy_from_slice(c)))
        .collect();
    let out: Vec<_> = sse_deltas(futures::stream::iter(pieces), "x".into())
        .collect()
        .await;
    let text: String = out.into_iter().map(|d| d.unwrap().content).collect();
    assert_eq!(text, "ab");
}

#[tokio::test]
async fn concurrency_limit_is_respected() {
    let server = FakeOpenAi::start(
        (0..6)
            .map(|_| FakeReply::Delay(Duration::from_millis(150), Box::new(FakeReply::Echo)))
            .collect(),
    )
    .await
    .unwrap();
    let cfg = EndpointConfig {
        max_concurrency: 2,
        request_timeout: Duration::from_secs(5),
        ..fast(server.base_url())
    };
    let backend = std::sync::Arc::new(HttpBackend::new(cfg).unwrap());
    let started = tokio::time::Instant::now();
    let calls = (0..6).map(|_| {
        let b = backend.clone();
        async move { b.chat(&req(1)).await }
    });
    let results = futures::future::join_all(calls).await;
    assert!(results.iter().all(Result::is_ok));
    // 6 calls of 150 ms, 2 at a time: at least three rounds.
    assert!(
        started.elapsed() >= Duration::from_millis(440),
        "{:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn api_key_is_sent_but_never_shown() {
    let server = FakeOpenAi::start(vec![FakeReply::Status {
        status: 401,
        body: "bad key sk-test-SECRET".into(),
        retry_after: None,
    }])
    .await
    .unwrap();
    let cfg = EndpointConfig {
        api_key: Some(ApiKey::new("sk-test-SECRET")),
        ..fast(server.base_url())
    };
    let backend = HttpBackend::new(cfg).unwrap();
    let err = backend.chat(&req(1)).await.unwrap_err();
    assert!(!err.to_string().contains("SECRET"), "{err}");
    assert!(!format!("{err:?}").contains("SECRET"));
    assert!(!format!("{backend:?}").contains("SECRET"));
}

/// A key straddling the excerpt's cut, or echoed in part, never reaches an error.
#[tokio::test]
async fn a_key_cut_by_the_excerpt_or_echoed_in_part_is_redacted() {
    let key = "sk-proj-abcdefghij0123456789";
    for body in [
        format!("{}{key} trailing", "x".repeat(290)),
        format!(
            "Incorrect API key provided: {}…{}",
            &key[..10],
            &key[key.len() - 6..]
        ),
    ] {
        let server = FakeOpenAi::start(vec![FakeReply::Status {
            status: 401,
            body,
            retry_after: None,
        }])
        .await
        .unwrap();
        let cfg = EndpointConfig {
            api_key: Some(ApiKey::new(key)),
            ..fast(server.base_url())
        };
        let err = HttpBackend::new(cfg)
            .unwrap()
            .chat(&req(1))
            .await
            .unwrap_err();
        let shown = format!("{err} {err:?}");
        for piece in key.as_bytes().windows(6) {
            let piece = std::str::from_utf8(piece).unwrap();
            assert!(!shown.contains(piece), "{piece:?} leaked in {shown}");
        }
    }
}
