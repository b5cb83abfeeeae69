use std::sync::Arc;

use automix_llm::*;
use automix_verify::*;

fn query() -> QueryText<'static> {
    QueryText {
        question: "What is the capital of France?",
        context: None,
        options: &[],
    }
}

fn verifier(provider: Arc<ScriptedProvider>, samples: u32) -> Verifier {
    let config = VerifierConfig {
        samples,
        seed: 42,
        ..VerifierConfig::new("small")
    };
    Verifier::new(provider, Arc::new(PromptSet::builtin()), config)
}

#[tokio::test]
async fn k_samples_in_one_request_with_temperature_and_seed() {
    let provider = Arc::new(ScriptedProvider::from_fn(|req| {
        Ok(response(
            &req.model,
            &[
                "Correct.",
                " Incorrect",
                "Question: x\nVerdict: Correct",
                "Yes",
            ],
            Usage {
                prompt_tokens: 100,
                completion_tokens: 12,
            },
        ))
    }));
    let v = verifier(provider.clone(), 4);
    let out = v.verify_sampled(&query(), "Paris").await.unwrap();
    assert_eq!(
        out.tally,
        VerdictTally {
            correct: 2,
            incorrect: 1,
            unparsed: 1
        }
    );
    assert_eq!(out.p_ver, Some(2.0 / 3.0));
    assert_eq!(out.usage.completion_tokens, 12);
    let reqs = provider.requests();
    assert_eq!(reqs.len(), 1);
    assert_eq!(reqs[0].n, 4);
    assert_eq!(reqs[0].seed, Some(42));
    assert_eq!(reqs[0].temperature, Some(0.7));
    assert!(
        reqs[0]
            .messages
            .last()
            .unwrap()
            .content
            .ends_with("AI generated answer: Paris\nVerdict:")
    );
}

#[tokio::test]
async fn nothing_parsed_is_unknown_not_zero() {
    let provider = Arc::new(ScriptedProvider::from_fn(|req| {
        Ok(response(&req.model, &["hmm", "???"], Usage::default()))
    }));
    let out = verifier(provider, 2)
        .verify_sampled(&query(), "Paris")
        .await
        .unwrap();
    assert_eq!(out.p_ver, None);
    assert_eq!(out.tally.unparsed, 2);
}

#[tokio::test]
async fn distinct_seeds_when_the_server_rejects_n() {
    // A real OpenAI backend against a fake server that 400s on n > 1: the backend falls
    // back to k single requests with seeds seed, seed+1, ...
    use automix_llm::fake_server::{FakeOpenAi, FakeReply};
    let server = FakeOpenAi::start(vec![FakeReply::Status {
        status: 400,
        body: r#"{"error":{"message":"n > 1 not supported"}}"#.into(),
        retry_after: None,
    }])
    .await
    .unwrap();
    let backend = HttpBackend::new(EndpointConfig::new(server.base_url())).unwrap();
    let config = VerifierConfig {
        samples: 3,
        seed: 7,
        ..VerifierConfig::new("small")
    };
    let v = Verifier::new(Arc::new(backend), Arc::new(PromptSet::builtin()), config);
    let out = v.verify_sampled(&query(), "Paris").await.unwrap();
    assert_eq!(out.samples.len(), 3);
    let mut seeds: Vec<u64> = server
        .requests()
        .iter()
        .filter(|r| r["n"].as_u64().unwrap_or(1) == 1)
        .filter_map(|r| r["seed"].as_u64())
        .collect();
    seeds.sort();
    assert_eq!(seeds, vec![7, 8, 9]);
}

fn logprob_choice(alternatives: &[(&str, f64)]) -> Choice {
    Choice {
        index: 0,
        tool_calls: None,
        text: alternatives[0].0.trim().to_owned(),
        finish_reason: Some("stop".into()),
        logprobs: Some(vec![TokenLogprob {
            token: alternatives[0].0.to_owned(),
            logprob: alternatives[0].1,
            top_logprobs: alternatives
                .iter()
                .map(|(t, l)| TopLogprob {
                    token: (*t).to_owned(),
                    logprob: *l,
                })
                .collect(),
        }]),
    }
}

#[tokio::test]
async fn logprob_verification_reads_the_verdict_token() {
    let provider = Arc::new(ScriptedProvider::new(vec![Ok(ChatResponse {
        model: "small".into(),
        choices: vec![logprob_choice(&[
            (" Correct", 0.5f64.ln()),
            (" Incorrect", 0.3f64.ln()),
            (" correct", 0.1f64.ln()),
            (" I", 0.05f64.ln()),
        ])],
        usage: Usage {
            prompt_tokens: 90,
            completion_tokens: 1,
        },
        requests: 1,
    })]));
    let out = verifier(provider.clone(), 5)
        .verify_logprob(&query(), "Paris")
        .await
        .unwrap();
    assert!((out.p_correct.unwrap() - 0.6 / 0.9).abs() < 1e-12);
    assert_eq!(out.source, LogprobSource::Logprobs { position: 0 });
    let req = &provider.requests()[0];
    assert_eq!((req.n, req.temperature, req.logprobs), (1, Some(0.0), true));
}

#[tokio::test]
async fn logprob_verification_falls_back_to_sampling_and_says_so() {
    let provider = Arc::new(ScriptedProvider::new(vec![
        Ok(response(
            "small",
            &["Correct"],
            Usage {
                prompt_tokens: 90,
                completion_tokens: 1,
            },
        )),
        Ok(response(
            "small",
            &["Incorrect", "Incorrect", "Correct"],
            Usage {
                prompt_tokens: 90,
                completion_tokens: 6,
            },
        )),
    ]));
    let out = verifier(provider, 3)
        .verify_logprob(&query(), "Paris")
        .await
        .unwrap();
    assert_eq!(out.p_correct, Some(1.0 / 3.0));
    match &out.source {
        LogprobSource::FellBackToSampling { reason, sampled } => {
            assert_eq!(reason, "the server returned no logprobs");
            assert_eq!(sampled.tally.incorrect, 2);
        }
        other => panic!("expected a fallback, got {other:?}"),
    }
    assert_eq!(out.usage.completion_tokens, 7);
}

#[tokio::test]
async fn provider_errors_propagate() {
    let provider = Arc::new(ScriptedProvider::new(vec![Err(LlmError::Scripted(
        "down".into(),
    ))]));
    let err = verifier(provider, 3)
        .verify_sampled(&query(), "Paris")
        .await
        .unwrap_err();
    assert!(err.to_string().contains("down"));
}

#[test]
fn calibration_report_on_verified_rows() {
    let rows: Vec<(Option<f64>, f64)> = vec![
        (Some(0.9), 1.0),
        (Some(0.7), 1.0),
        (Some(0.6), 0.0),
        (Some(0.2), 0.0),
        (None, 1.0),
    ];
    let r = CalibrationReport::compute(&rows);
    assert_eq!(r.auc, Some(1.0));
    assert_eq!(r.unknown, 1);
    assert!(r.ece.unwrap() > 0.0);
}

#[test]
fn self_consistency_of_sampled_answers() {
    let answers: Vec<String> = ["B", "b.", "C", "B"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    let sc = SelfConsistency::measure(&answers, normalise_answer).unwrap();
    assert_eq!((sc.majority_answer.as_str(), sc.agreement), ("b", 0.75));
}
