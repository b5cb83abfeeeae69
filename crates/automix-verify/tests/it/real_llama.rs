//! Verification against the real local llama.cpp server (run by `cargo xtask e2e`).

use std::sync::Arc;

use automix_llm::fake_server::local_server;
use automix_llm::*;
use automix_verify::*;

#[tokio::test]
async fn real_model_verifies_with_samples_and_logprobs() {
    let Some(base) = local_server("smollm2-135m") else {
        return;
    };
    let backend = HttpBackend::new(EndpointConfig::new(base)).unwrap();
    let config = VerifierConfig {
        samples: 3,
        seed: 11,
        ..VerifierConfig::new("smollm2-135m")
    };
    let verifier = Verifier::new(Arc::new(backend), Arc::new(PromptSet::builtin()), config);
    let q = QueryText {
        question: "What is the capital of France?",
        context: None,
        options: &[],
    };

    let sampled = verifier.verify_sampled(&q, "Paris").await.unwrap();
    assert_eq!(sampled.samples.len(), 3);
    let t = sampled.tally;
    assert_eq!(t.correct + t.incorrect + t.unparsed, 3);
    assert_eq!(sampled.p_ver.is_none(), t.parsed() == 0);
    assert!(
        sampled.usage.prompt_tokens > 100,
        "the few-shot prompt was sent"
    );
    assert!(
        sampled.requests >= 3,
        "llama.cpp rejects n: one request per sample"
    );

    let lp = verifier.verify_logprob(&q, "Paris").await.unwrap();
    match &lp.source {
        LogprobSource::Logprobs { position } => {
            assert!(*position < 6);
            let p = lp.p_correct.unwrap();
            assert!((0.0..=1.0).contains(&p), "{p}");
        }
        LogprobSource::FellBackToSampling { reason, .. } => {
            // Allowed (the model may not put a verdict first), but it must say why.
            assert!(!reason.is_empty());
        }
    }
    eprintln!(
        "sampled {:?} logprob {:?} text {:?}",
        sampled.tally, lp.p_correct, lp.text
    );
}
