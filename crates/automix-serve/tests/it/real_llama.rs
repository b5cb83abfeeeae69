//! The proxy in front of the real local llama.cpp models (run by `cargo xtask e2e`).

use std::sync::Arc;

use automix::config::Config;
use automix::llm::fake_server::local_server;
use automix::verify::PromptSet;
use automix::{ModelSet, Router};

use crate::support::local_model as handle;

/// The proxy in front of the real local models: an OpenAI-shaped request in, a chat
/// completion from whichever model was kept out, with routing headers.
#[tokio::test(flavor = "multi_thread")]
async fn the_proxy_serves_a_real_model() {
    use automix_serve::{ProxySettings, ProxyState, serve};
    let (Some(small_url), Some(large_url)) = (
        local_server("qwen2.5-coder-0.5b"),
        local_server("qwen2.5-coder-1.5b"),
    ) else {
        return;
    };
    let config = Config::parse(
        "hparam:\n  verifier_signal: logprob\nautomix:\n  use_logprob_verification: true\n",
        std::path::Path::new("e2e.yaml"),
    )
    .unwrap();
    let models = ModelSet::new(vec![
        handle("qwen2.5-coder-0.5b", 0.04, small_url),
        handle("qwen2.5-coder-1.5b", 0.12, large_url),
    ])
    .unwrap();
    let router = Router::new(&config, models, Arc::new(PromptSet::builtin()), None).unwrap();
    let state = ProxyState::new(router, None, ProxySettings::default());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(serve(listener, state, std::future::pending()));
    let resp = reqwest::Client::new()
        .post(format!("{base}/v1/chat/completions"))
        .json(&serde_json::json!({
            "model": "automix",
            "messages": [{"role": "user", "content": "What is the capital of France? Answer in one word."}],
            "max_tokens": 8,
            "temperature": 0
        }))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let model = resp.headers()["x-automix-model"]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(model.starts_with("qwen2.5-coder-"), "{model}");
    let body: serde_json::Value = resp.json().await.unwrap();
    let content = body["choices"][0]["message"]["content"].as_str().unwrap();
    assert!(!content.trim().is_empty());
    assert!(body["usage"]["total_tokens"].as_u64().unwrap() > 0);
    eprintln!(
        "proxy kept {model}: {content:?} (score {})",
        body["automix"]["verification_score"]
    );
}
