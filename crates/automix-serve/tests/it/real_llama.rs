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

/// Shadow answers from the real local models: each routed request is answered again by
/// both models in the background and leaves one agreement-labelled row with real tokens,
/// costs and latencies, and no prompt text.
#[tokio::test(flavor = "multi_thread")]
async fn real_models_leave_shadow_rows_labelled_by_agreement() {
    use automix::dataset::{LabelSource, read_training_rows};
    use automix_serve::{Learning, ProxySettings, ProxyState, serve};
    let (Some(small_url), Some(large_url)) = (
        local_server("qwen2.5-coder-0.5b"),
        local_server("qwen2.5-coder-1.5b"),
    ) else {
        return;
    };
    let rows_path =
        std::env::temp_dir().join(format!("automix-real-shadow-{}.jsonl", std::process::id()));
    let _ = std::fs::remove_file(&rows_path);
    let text = format!(
        "automix:\n  verification_samples: 2\n  shadow:\n    rate: 1.0\n    rows_path: {}\n",
        rows_path.display()
    );
    let config = Config::parse(&text, std::path::Path::new("e2e.yaml")).unwrap();
    let models = ModelSet::new(vec![
        handle("qwen2.5-coder-0.5b", 0.04, small_url),
        handle("qwen2.5-coder-1.5b", 0.12, large_url),
    ])
    .unwrap();
    let router = Router::new(&config, models, Arc::new(PromptSet::builtin()), None).unwrap();
    let shadow = Arc::new(automix::project::shadow(&config, &router).unwrap().unwrap());
    let learning = Learning::from_config(&config, shadow.clone());
    let state = ProxyState::with_learning(router, None, ProxySettings::default(), Some(learning));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(serve(listener, state, std::future::pending()));
    let client = reqwest::Client::new();
    let questions = [
        "What is 2 + 3? Answer with the number.",
        "Name the largest planet. One word.",
    ];
    for (i, q) in questions.into_iter().enumerate() {
        let resp = client
            .post(format!("{base}/v1/chat/completions"))
            .json(&serde_json::json!({"model": "automix", "max_tokens": 16,
                "messages": [{"role": "user", "content": q}]}))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200);
        // One shadow at a time: a CPU-bound llama.cpp answers the next request faster.
        for _ in 0..600 {
            let c = shadow.counts();
            if c.rows + c.failed > i as u64 {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        }
    }
    let counts = shadow.counts();
    assert_eq!(counts.rows, 2, "{counts:?}");
    let rows = read_training_rows(&rows_path).unwrap();
    for r in &rows {
        assert_eq!(r.label_source, LabelSource::Agreement);
        assert_eq!(r.models.len(), 2);
        assert_eq!(r.models[1].score, 1.0, "the reference");
        assert!(
            r.models
                .iter()
                .all(|m| m.tokens.completion > 0 && m.cost > 0.0),
            "{r:?}"
        );
        assert!(r.models[0].verification.is_some());
        assert!(r.query.is_empty());
    }
    let text = std::fs::read_to_string(&rows_path).unwrap();
    assert!(!text.contains("largest planet"), "no prompt text");
    eprintln!(
        "shadow rows from real models: {} rows, {:.6} spent, small agreed {:?}",
        counts.rows,
        counts.cost,
        rows.iter().map(|r| r.models[0].score).collect::<Vec<_>>()
    );
}
