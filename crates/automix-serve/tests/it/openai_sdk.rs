//! The official OpenAI Python SDK against `automix serve` (run by `cargo xtask e2e`, which
//! sets `AUTOMIX_OPENAI_PYTHON` to a venv with a pinned `openai`): what the SDK sends reaches
//! the answering model, and what the model answers reaches the SDK.

use std::time::Duration;

use automix::llm::fake_server::{FakeOpenAi, FakeReply};
use automix_serve::ProxySettings;
use serde_json::{Value, json};

use crate::proxy::{start, tool_call_reply};

#[tokio::test(flavor = "multi_thread")]
async fn the_openai_sdk_sends_every_field_through_the_proxy() {
    let Some(python) = std::env::var_os("AUTOMIX_OPENAI_PYTHON") else {
        assert!(
            std::env::var_os("AUTOMIX_REQUIRE_LLMS").is_none(),
            "AUTOMIX_OPENAI_PYTHON is not set"
        );
        eprintln!("skipped: AUTOMIX_OPENAI_PYTHON is not set (cargo xtask e2e sets it)");
        return;
    };
    let tool_reply = tool_call_reply();
    let small = FakeOpenAi::start(vec![FakeReply::Raw(tool_reply.to_string())])
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
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/it/openai_sdk_client.py");
    let base = proxy.base.clone();
    let out = tokio::task::spawn_blocking(move || {
        std::process::Command::new(python)
            .arg(script)
            .arg(base)
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    assert!(
        out.status.success(),
        "the SDK script failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let parsed: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(parsed["tool_name"], "get_weather");
    assert_eq!(parsed["tool_arguments"], "{\"city\": \"Paris\"}");
    assert_eq!(parsed["finish_reason"], "tool_calls");
    assert!(parsed["second"].as_str().unwrap().contains("What is 2+2?"));

    let seen = small.requests();
    let first = &seen[0];
    assert_eq!(first["tools"][0]["function"]["name"], "get_weather");
    assert_eq!(first["tool_choice"], "auto");
    assert_eq!(first["response_format"], json!({"type": "json_object"}));
    assert_eq!(first["top_p"], 0.9);
    assert_eq!(first["logprobs"], true);
    assert_eq!(first["top_logprobs"], 2);
    assert_eq!(first["user"], "user-42");
    let messages = first["messages"].as_array().unwrap();
    assert_eq!(messages.len(), 5);
    assert_eq!(messages[1]["content"][0]["type"], "text");
    assert_eq!(messages[2]["content"], Value::Null);
    assert_eq!(messages[2]["tool_calls"][0]["id"], "call_0");
    assert_eq!(messages[3]["tool_call_id"], "call_0");
    // The tool call was kept without verifying; the second question was verified.
    assert!(seen.len() >= 2, "{seen:?}");
    assert_eq!(seen[1]["seed"], 3);
}
