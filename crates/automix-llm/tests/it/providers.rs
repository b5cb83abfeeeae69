//! One provider suite, run against every wire format the HTTP backend speaks (OpenAI's
//! `/chat/completions` and Anthropic's `/messages`), each against replies recorded in that
//! API's shape: the same behaviour is asked of both.

use std::time::Duration;

use automix_llm::fake_server::{FakeOpenAi, FakeReply};
use automix_llm::*;
use serde_json::{Value, json};

const DIALECTS: [Dialect; 2] = [Dialect::OpenAi, Dialect::Anthropic];
const KEY: &str = "sk-test-0123456789abcdef";

fn backend(dialect: Dialect, server: &FakeOpenAi) -> HttpBackend {
    let config = EndpointConfig {
        api_key: Some(ApiKey::new(KEY)),
        request_timeout: Duration::from_millis(500),
        deadline: Duration::from_secs(10),
        max_attempts: 3,
        backoff_base: Duration::from_millis(5),
        backoff_max: Duration::from_millis(20),
        ..EndpointConfig::new(server.base_url())
    };
    HttpBackend::with_dialect(config, dialect).unwrap()
}

/// A successful reply in `dialect`'s shape: `text`, stopped for `why` (`stop`, `length`).
fn reply(dialect: Dialect, text: &str, why: &str) -> FakeReply {
    let body = match dialect {
        Dialect::OpenAi => json!({
            "id": "chatcmpl-1", "object": "chat.completion", "created": 1, "model": "m",
            "choices": [{"index": 0, "finish_reason": why,
                "message": {"role": "assistant", "content": text}}],
            "usage": {"prompt_tokens": 11, "completion_tokens": 3, "total_tokens": 14}
        }),
        Dialect::Anthropic => json!({
            "id": "msg_1", "type": "message", "role": "assistant", "model": "m",
            "content": [{"type": "text", "text": text}],
            "stop_reason": if why == "length" { "max_tokens" } else { "end_turn" },
            "stop_sequence": null,
            "usage": {"input_tokens": 11, "output_tokens": 3}
        }),
    };
    FakeReply::Raw(body.to_string())
}

/// A reply that calls `get_weather` for Paris, in `dialect`'s shape.
fn tool_reply(dialect: Dialect) -> FakeReply {
    let body = match dialect {
        Dialect::OpenAi => json!({
            "id": "chatcmpl-2", "object": "chat.completion", "created": 1, "model": "m",
            "choices": [{"index": 0, "finish_reason": "tool_calls", "message": {
                "role": "assistant", "content": null, "tool_calls": [{"id": "call_1",
                "type": "function", "function": {"name": "get_weather",
                "arguments": "{\"city\":\"Paris\"}"}}]}}],
            "usage": {"prompt_tokens": 20, "completion_tokens": 5, "total_tokens": 25}
        }),
        Dialect::Anthropic => json!({
            "id": "msg_2", "type": "message", "role": "assistant", "model": "m",
            "content": [{"type": "tool_use", "id": "call_1", "name": "get_weather",
                "input": {"city": "Paris"}}],
            "stop_reason": "tool_use", "usage": {"input_tokens": 20, "output_tokens": 5}
        }),
    };
    FakeReply::Raw(body.to_string())
}

fn status(code: u16, body: &str, retry_after: Option<u64>) -> FakeReply {
    FakeReply::Status {
        status: code,
        body: body.into(),
        retry_after,
    }
}

fn request(n: u32) -> ChatRequest {
    ChatRequest {
        n,
        max_tokens: Some(32),
        ..ChatRequest::new(
            "m",
            vec![ChatMessage::system("Be brief."), ChatMessage::user("hi")],
        )
    }
}

#[tokio::test]
async fn answers_with_text_usage_and_stop_reason() {
    for d in DIALECTS {
        let server = FakeOpenAi::start(vec![reply(d, "hello", "stop")])
            .await
            .unwrap();
        let r = backend(d, &server).chat(&request(1)).await.unwrap();
        assert_eq!(r.choices[0].text, "hello", "{d:?}");
        assert_eq!(r.choices[0].finish_reason.as_deref(), Some("stop"), "{d:?}");
        assert_eq!((r.usage.prompt_tokens, r.usage.completion_tokens), (11, 3));
        let sent: Value = server.requests()[0].clone();
        match d {
            Dialect::OpenAi => assert_eq!(sent["messages"][0]["role"], "system"),
            Dialect::Anthropic => {
                assert_eq!(sent["system"], "Be brief.");
                assert_eq!(sent["messages"][0]["role"], "user");
                assert_eq!(sent["max_tokens"], 32);
            }
        }
    }
}

#[tokio::test]
async fn a_cut_answer_reports_length() {
    for d in DIALECTS {
        let server = FakeOpenAi::start(vec![reply(d, "hel", "length")])
            .await
            .unwrap();
        let r = backend(d, &server).chat(&request(1)).await.unwrap();
        assert_eq!(
            r.choices[0].finish_reason.as_deref(),
            Some("length"),
            "{d:?}"
        );
    }
}

#[tokio::test]
async fn rate_limits_are_retried_after_the_hinted_wait() {
    for d in DIALECTS {
        let server = FakeOpenAi::start(vec![
            status(429, "{\"error\":\"slow down\"}", Some(0)),
            reply(d, "ok", "stop"),
        ])
        .await
        .unwrap();
        let r = backend(d, &server).chat(&request(1)).await.unwrap();
        assert_eq!(r.choices[0].text, "ok", "{d:?}");
        assert_eq!((r.requests, server.calls()), (2, 2), "{d:?}");
    }
}

#[tokio::test]
async fn a_refused_request_is_not_retried() {
    for d in DIALECTS {
        let server = FakeOpenAi::start(vec![status(400, "{\"error\":\"bad\"}", None)])
            .await
            .unwrap();
        let e = backend(d, &server).chat(&request(1)).await.unwrap_err();
        assert_eq!(e.status(), Some(400), "{d:?}: {e}");
        assert_eq!(server.calls(), 1, "{d:?}");
    }
}

#[tokio::test]
async fn persistent_overload_exhausts_the_retries() {
    for d in DIALECTS {
        // Anthropic's overload status is 529; both are server errors.
        let code = if d == Dialect::Anthropic { 529 } else { 503 };
        let script = (0..3).map(|_| status(code, "{}", None)).collect();
        let server = FakeOpenAi::start(script).await.unwrap();
        let e = backend(d, &server).chat(&request(1)).await.unwrap_err();
        assert!(
            matches!(e, LlmError::RetriesExhausted { attempts: 3, .. }),
            "{d:?}: {e}"
        );
        assert_eq!(e.status(), Some(code));
    }
}

#[tokio::test]
async fn a_malformed_reply_is_retried_then_reported() {
    for d in DIALECTS {
        let script = (0..3).map(|_| FakeReply::Raw("{\"trunc".into())).collect();
        let server = FakeOpenAi::start(script).await.unwrap();
        let e = backend(d, &server).chat(&request(1)).await.unwrap_err();
        assert!(e.to_string().contains("malformed"), "{d:?}: {e}");
        assert_eq!(server.calls(), 3, "{d:?}");
    }
}

#[tokio::test]
async fn n_choices_are_returned_whatever_the_api_supports() {
    for d in DIALECTS {
        let script = match d {
            Dialect::OpenAi => vec![FakeReply::Completion {
                texts: vec!["a".into(), "b".into(), "c".into()],
                logprobs: false,
            }],
            // No `n` in the Messages API: three requests.
            Dialect::Anthropic => ["a", "b", "c"].map(|t| reply(d, t, "stop")).to_vec(),
        };
        let server = FakeOpenAi::start(script).await.unwrap();
        let r = backend(d, &server).chat(&request(3)).await.unwrap();
        assert_eq!(r.choices.len(), 3, "{d:?}");
        let indices: Vec<u32> = r.choices.iter().map(|c| c.index).collect();
        assert_eq!(indices, [0, 1, 2], "{d:?}");
    }
}

#[tokio::test]
async fn tool_calls_come_back_in_openai_shape() {
    for d in DIALECTS {
        let server = FakeOpenAi::start(vec![tool_reply(d)]).await.unwrap();
        let r = backend(d, &server).chat(&request(1)).await.unwrap();
        let c = &r.choices[0];
        assert_eq!(c.finish_reason.as_deref(), Some("tool_calls"), "{d:?}");
        let calls = c.tool_calls.as_ref().unwrap();
        assert_eq!(calls[0]["function"]["name"], "get_weather", "{d:?}");
        let args: Value =
            serde_json::from_str(calls[0]["function"]["arguments"].as_str().unwrap()).unwrap();
        assert_eq!(args, json!({"city": "Paris"}), "{d:?}");
    }
}

#[tokio::test]
async fn the_key_never_reaches_an_error_even_when_the_upstream_echoes_it() {
    for d in DIALECTS {
        let echoed = format!("{{\"error\":\"invalid key {KEY}\"}}");
        let server = FakeOpenAi::start(vec![status(401, &echoed, None)])
            .await
            .unwrap();
        let e = backend(d, &server).chat(&request(1)).await.unwrap_err();
        let shown = format!("{e} {e:?}");
        assert!(!shown.contains(&KEY[6..]), "{d:?}: {shown}");
        assert_eq!(e.status(), Some(401));
    }
}
