//! Against a real llama.cpp server (`cargo xtask llms up` writes its address to
//! `.cache/llms/servers.json`). Skipped with a message when no server is up; CI runs
//! it through `cargo xtask e2e`, which sets `AUTOMIX_REQUIRE_LLMS=1` so a missing server fails.

use automix_llm::fake_server::local_server;
use automix_llm::*;

#[tokio::test]
async fn real_llama_cpp_gives_three_different_samples_with_logprobs() {
    let Some(base) = local_server("smollm2-135m") else {
        return;
    };
    let backend = HttpBackend::new(EndpointConfig::new(base)).unwrap();
    let request = ChatRequest {
        temperature: Some(1.0),
        max_tokens: Some(24),
        seed: Some(7),
        n: 3,
        logprobs: true,
        top_logprobs: Some(3),
        ..ChatRequest::new(
            "smollm2-135m",
            vec![ChatMessage::user("Write a short sentence about the sea.")],
        )
    };
    let resp = backend.chat(&request).await.unwrap();
    assert_eq!(resp.choices.len(), 3);
    // llama.cpp rejects n > 1 with HTTP 400: the fallback ran and was remembered.
    assert!(!backend.supports_n());
    let texts: Vec<&str> = resp.choices.iter().map(|c| c.text.as_str()).collect();
    assert!(texts.iter().all(|t| !t.trim().is_empty()), "{texts:?}");
    assert!(
        texts[0] != texts[1] || texts[1] != texts[2],
        "samples with distinct seeds should differ: {texts:?}"
    );
    for c in &resp.choices {
        let lp = c.logprobs.as_ref().expect("llama.cpp returns logprobs");
        assert!(!lp.is_empty());
        assert!(
            lp.iter()
                .all(|t| t.logprob <= 0.0 && !t.top_logprobs.is_empty())
        );
    }
    assert!(resp.usage.prompt_tokens > 0 && resp.usage.completion_tokens > 0);
}
