use std::path::Path;
use std::sync::Arc;

use automix::config::Config;
use automix::dataset::{LabelSource, query_id};
use automix::llm::*;
use automix::verify::PromptSet;
use automix::{ModelHandle, ModelSet, Router};
use automix_core::Decision;

use crate::support::{entry as priced, mc_query as query, scripted_model as model};

fn entry(name: &str, price: f64) -> ModelEntry {
    priced(name, price, None)
}

fn failing(name: &str, price: f64) -> ModelHandle {
    let provider = Arc::new(ScriptedProvider::from_fn(|_| {
        Err(LlmError::Http {
            status: 503,
            endpoint: "http://x".into(),
            body_excerpt: "overloaded".into(),
            retryable: true,
        })
    }));
    ModelHandle {
        entry: entry(name, price),
        provider,
    }
}

fn config(extra: &str) -> Config {
    let text =
        format!("automix:\n  verification_samples: 3\n  verification_threshold: 0.7\n{extra}");
    Config::parse(&text, Path::new("test.yaml")).unwrap()
}

fn router(config: &Config, small: ModelHandle, large: ModelHandle) -> Router {
    let models = ModelSet::new(vec![large, small]).unwrap();
    Router::new(config, models, Arc::new(PromptSet::builtin()), None).unwrap()
}

#[tokio::test]
async fn keeps_a_verified_answer_and_reports_costs() {
    let (small, sp) = model("small", 1.0, "B", &["Correct.", "Correct", "Yes"]);
    let (large, lp) = model("large", 10.0, "B", &["Correct"]);
    let out = router(&config(""), small, large)
        .route_single(&query("q1"))
        .await
        .unwrap();
    assert_eq!(out.model_name, "small");
    assert_eq!(out.api_model, "api/small");
    assert!(!out.route_to_llm);
    assert_eq!(out.verification_score, Some(1.0));
    assert_eq!(out.escalation_path, vec!["small"]);
    assert_eq!(out.task_performance, Some(1.0));
    assert_eq!(out.calls.len(), 2);
    assert_eq!(out.steps[0].decision, Decision::Keep);
    // answer 110 tokens + verification 110 tokens (one request, n = 3) at $1/M.
    assert_eq!(out.total_tokens, 220);
    assert!((out.total_cost - 220.0 / 1e6).abs() < 1e-15);
    assert_eq!(sp.requests().len(), 2);
    assert_eq!(sp.requests()[1].n, 3);
    assert!(lp.requests().is_empty());
}

#[tokio::test]
async fn escalates_a_rejected_answer() {
    let (small, _) = model("small", 1.0, "A", &["Incorrect", "Incorrect", "Correct"]);
    let (large, lp) = model("large", 10.0, "B", &["Correct"]);
    let out = router(&config(""), small, large)
        .route_single(&query("q2"))
        .await
        .unwrap();
    assert_eq!(out.model_name, "large");
    assert!(out.route_to_llm);
    assert_eq!(out.slm_answer, "A");
    assert_eq!(out.response, "B");
    assert_eq!(out.escalation_path, vec!["small", "large"]);
    assert!((out.verification_score.unwrap() - 1.0 / 3.0).abs() < 1e-12);
    assert_eq!(out.steps[0].decision, Decision::Escalate);
    assert_eq!(out.task_performance, Some(1.0));
    assert_eq!(lp.requests().len(), 1, "the large model only answers");
    let large_cost = out.calls.iter().find(|c| c.model == "large").unwrap().cost;
    assert!((large_cost - 110.0 * 10.0 / 1e6).abs() < 1e-15);
}

#[tokio::test]
async fn an_unknown_verdict_follows_the_explicit_rule() {
    let (small, _) = model("small", 1.0, "B", &["hmm", "???"]);
    let (large, _) = model("large", 10.0, "B", &["Correct"]);
    let out = router(&config(""), small.clone(), large.clone())
        .route_single(&query("q3"))
        .await
        .unwrap();
    assert_eq!(out.verification_score, None);
    assert!(out.route_to_llm, "unknown escalates by default");
    assert!(out.steps[0].reason.contains("unknown"));
    let keep = config("hparam:\n  unknown_confidence: keep\n");
    let out = router(&keep, small, large)
        .route_single(&query("q3"))
        .await
        .unwrap();
    assert!(!out.route_to_llm);
}

#[tokio::test]
async fn model_errors_fail_the_query_but_not_the_batch() {
    let (small, _) = model("small", 1.0, "B", &["Correct"]);
    let broken = failing("large", 10.0);
    let r = router(&config(""), small, broken);
    // q-keep stays on the small model; q-esc needs the broken large model.
    let (small2, _) = model("small", 1.0, "A", &["Incorrect"]);
    let err = router(&config(""), small2, failing("large", 10.0))
        .route_single(&query("q-esc"))
        .await
        .unwrap_err();
    assert!(err.to_string().starts_with("model large: "), "{err}");
    let items = r.route_batch(&[query("a"), query("b"), query("c")]).await;
    let ids: Vec<&str> = items.iter().map(|i| i.id.as_str()).collect();
    assert_eq!(
        ids,
        vec![
            query_id("mmlu", "a"),
            query_id("mmlu", "b"),
            query_id("mmlu", "c")
        ]
    );
    assert!(items.iter().all(|i| i.outcome.is_some()));
}

#[tokio::test]
async fn batch_keeps_order_and_reports_failures_in_place() {
    // The small model fails on queries mentioning "boom"; others are kept.
    let provider = Arc::new(ScriptedProvider::from_fn(|req| {
        if req.messages.iter().any(|m| m.content.contains("boom")) {
            return Err(LlmError::Scripted("boom".into()));
        }
        let n = req.n as usize;
        Ok(response(&req.model, &vec!["Correct"; n], Usage::default()))
    }));
    let small = ModelHandle {
        entry: entry("small", 1.0),
        provider,
    };
    let (large, _) = model("large", 10.0, "B", &["Correct"]);
    let r = router(&config("hparam:\n  max_workers: 3\n"), small, large);
    let qs = [query("one"), query("boom"), query("three")];
    let items = r.route_batch(&qs).await;
    assert_eq!(items.len(), 3);
    assert_eq!(items[0].id, qs[0].id);
    assert!(items[0].outcome.is_some());
    assert!(items[1].outcome.is_none());
    assert!(items[1].error.as_deref().unwrap().contains("boom"));
    assert_eq!(items[2].id, qs[2].id);
}

#[tokio::test]
async fn verification_off_keeps_the_first_answer_without_verifying() {
    let (small, sp) = model("small", 1.0, "A", &["Incorrect"]);
    let (large, _) = model("large", 10.0, "B", &["Correct"]);
    let c = config("  enable_self_verification: false\n");
    let out = router(&c, small, large)
        .route_single(&query("q"))
        .await
        .unwrap();
    assert_eq!(out.model_name, "small");
    assert_eq!(sp.requests().len(), 1);
    assert_eq!(out.steps[0].reason, "verification off");
}

/// A three-model cascade trained on rows where the verifier is informative: a confident
/// cheap answer is kept, a rejected one goes up the cascade as the decision table says.
#[tokio::test]
async fn the_cascade_follows_its_decision_table() {
    use crate::support::{Run, training_row};
    use automix::dataset::TrainingRow;
    use automix::training::{RouterPolicy, train_cascade_plan, train_policy};
    use automix_core::cascade::CascadeAction;

    let names = ["tiny", "mid", "big"];
    let rows: Vec<TrainingRow> = (0..300)
        .map(|i| {
            let right = [i % 3 == 0, i % 2 == 0, i % 10 != 0];
            let runs: Vec<Run<'_>> = (0..3)
                .map(|m| Run {
                    model: names[m],
                    right: right[m],
                    cost: [1e-6, 3e-6, 1e-5][m],
                    confidence: (m < 2).then_some(if right[m] { 0.9 } else { 0.1 }),
                })
                .collect();
            training_row(i, "mmlu", &runs)
        })
        .collect();
    let config = config("  cost_lambda: 0.05\nhparam:\n  verifier_signal: samples\n");
    let mut policy: RouterPolicy = train_policy(&config, &rows, "tiny", "big").unwrap();
    let names_owned: Vec<String> = names.iter().map(|s| s.to_string()).collect();
    let plan = train_cascade_plan(&config, &rows, &names_owned).unwrap();
    assert!(
        plan.policy.start.verify,
        "an informative verifier is worth running"
    );
    let after_reject = plan.policy.decide(&[(
        plan.policy.start.model,
        plan.policy.symbol(plan.policy.start.model, Some(0.0)),
    )]);
    assert_ne!(after_reject, CascadeAction::Keep);
    policy.cascade = Some(plan.clone());

    let (tiny, _) = model("tiny", 1.0, "A", &["Incorrect"]);
    let (mid, _) = model("mid", 3.0, "B", &["Correct"]);
    let (big, big_p) = model("big", 10.0, "B", &["Correct"]);
    let models = ModelSet::new(vec![big, tiny, mid]).unwrap();
    let router = Router::new(
        &config,
        models,
        Arc::new(PromptSet::builtin()),
        Some(policy),
    )
    .unwrap();
    let out = router.route_single(&query("cascade")).await.unwrap();
    assert_eq!(out.escalation_path[0], names[plan.policy.start.model]);
    assert_eq!(out.steps[0].decision, Decision::Escalate);
    assert!(out.steps[0].reason.starts_with("cascade policy"));
    // After "tiny" is rejected the table escalates; "mid" is confident, so "big" is only
    // called if the table jumps straight to it.
    match after_reject {
        CascadeAction::EscalateTo(1) => {
            assert_eq!(out.model_name, "mid");
            assert!(big_p.requests().is_empty());
        }
        other => assert_eq!(out.escalation_path.len(), 2, "{other:?}"),
    }
    assert_eq!(out.task_performance, Some(1.0));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_separate_verifier_endpoint_does_the_verification() {
    use automix::llm::fake_server::{FakeOpenAi, FakeReply};
    let verifier = FakeOpenAi::start(vec![FakeReply::Completion {
        texts: vec!["Correct".into(), "Correct".into(), "Correct".into()],
        logprobs: false,
    }])
    .await
    .unwrap();
    let (small, sp) = model("small", 1.0, "B", &["Incorrect"]);
    let (large, lp) = model("large", 10.0, "B", &["Correct"]);
    let c = config(&format!(
        "  verifier_server_url: {}\n  verifier_model: judge-1\n",
        verifier.base_url()
    ));
    let out = router(&c, small, large)
        .route_single(&query("q"))
        .await
        .unwrap();
    assert_eq!(out.model_name, "small", "the separate verifier approved");
    assert_eq!(sp.requests().len(), 1, "the small model only answered");
    assert!(lp.requests().is_empty());
    let seen = verifier.requests();
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0]["model"], "judge-1");
    assert_eq!(seen[0]["n"], 3);
}

/// `online_belief`: the cascade starts from the trained rates (the cheap model is right 90%
/// of the time, so it answers alone), then learns from ground truth that it has gone bad
/// and moves queries to the big model.
#[tokio::test]
async fn the_online_belief_moves_traffic_when_a_model_goes_bad() {
    use automix::dataset::{ModelRun, Tokens, TrainingRow, VerificationRecord};
    use automix::training::{train_cascade_plan, train_policy};

    let rows: Vec<TrainingRow> = (0..300)
        .map(|i| {
            let right = [i % 10 != 0, i % 10 != 1];
            let models = ["tiny", "big"]
                .iter()
                .zip(right)
                .enumerate()
                .map(|(m, (name, ok))| ModelRun {
                    model: (*name).into(),
                    answer: String::new(),
                    normalised_answer: String::new(),
                    score: f64::from(ok),
                    tokens: Tokens {
                        prompt: 10,
                        completion: 1,
                    },
                    cost: [1e-6, 1e-5][m],
                    latency_ms: 1,
                    verification: (m == 0).then(|| VerificationRecord {
                        samples: 3,
                        correct: 2,
                        incorrect: 1,
                        unparsed: 0,
                        p_ver: Some(if i % 3 == 0 { 0.3 } else { 0.7 }),
                        logprob_p: None,
                        logprob_source: String::new(),
                        tokens: Tokens {
                            prompt: 30,
                            completion: 1,
                        },
                        cost: 1e-7,
                        ..VerificationRecord::default()
                    }),
                })
                .collect();
            TrainingRow {
                id: format!("r{i}"),
                task_name: "mmlu".into(),
                metric: "em_mc".into(),
                query: String::new(),
                ground_truth: "B".into(),
                split: "train".into(),
                models,
                label_source: LabelSource::GroundTruth,
            }
        })
        .collect();
    let c = config(
        "  cost_lambda: 0.05\n  online_belief: true\n  belief_particles: 300\n  belief_refresh_every: 5\nhparam:\n  verifier_signal: samples\n",
    );
    let mut policy = train_policy(&c, &rows, "tiny", "big").unwrap();
    let plan = train_cascade_plan(&c, &rows, &["tiny".to_string(), "big".to_string()]).unwrap();
    assert!(plan.rates.as_ref().unwrap().theta[0] > 0.85);
    policy.cascade = Some(plan);
    // Live, the tiny model now always answers "A" (wrong); the big one answers "B".
    let (tiny, _) = model("tiny", 1.0, "A", &["Correct"]);
    let (big, _) = model("big", 10.0, "B", &["Correct"]);
    let models = ModelSet::new(vec![tiny, big]).unwrap();
    // Without online_belief the trained table does not learn: its choices never change.
    let off = config("  cost_lambda: 0.05\nhparam:\n  verifier_signal: samples\n");
    let fixed = Router::new(
        &off,
        models.clone(),
        Arc::new(PromptSet::builtin()),
        Some(policy.clone()),
    )
    .unwrap();
    let first = fixed
        .route_single(&query("f"))
        .await
        .unwrap()
        .escalation_path;
    for i in 0..20 {
        let out = fixed.route_single(&query(&format!("f{i}"))).await.unwrap();
        assert_eq!(out.escalation_path, first);
    }
    let router = Router::new(&c, models, Arc::new(PromptSet::builtin()), Some(policy)).unwrap();
    let mut kept = Vec::new();
    for i in 0..80 {
        let out = router.route_single(&query(&format!("q{i}"))).await.unwrap();
        kept.push(out.model_name);
    }
    assert_eq!(kept[0], "tiny", "starts where the training data says");
    let moved = kept.iter().position(|m| m == "big");
    assert!(
        moved.is_some_and(|t| t <= 60),
        "never moved to the big model: {kept:?}"
    );
    assert!(kept[70..].iter().all(|m| m == "big"), "{kept:?}");
}

/// A logprob verification that fell back to sampled votes does not pass the vote fraction
/// off as a logprob: to a logprob-read router the score is unknown, and its rule decides.
#[tokio::test]
async fn a_logprob_fallback_is_not_read_as_a_logprob() {
    let (small, _) = model("small", 1.0, "B", &["Correct", "Correct", "Correct"]);
    let (large, _) = model("large", 10.0, "B", &["Correct"]);
    let cfg = config("  use_logprob_verification: true\n");
    let out = router(&cfg, small, large)
        .route_single(&query("q-logprob"))
        .await
        .unwrap();
    assert_eq!(out.verification_score, None);
    assert!(
        out.steps[0].reason.contains("unknown"),
        "{}",
        out.steps[0].reason
    );
    assert!(out.route_to_llm, "unknown escalates by default");
}

/// A policy whose small model is not the router's cheapest would never be consulted: that is
/// an error at start, not a silent switch to the threshold rule.
#[tokio::test]
async fn a_policy_for_another_small_model_is_refused() {
    let rows = crate::support::two_model_rows(60, "small", "large", Some(0.5));
    let cfg = config("hparam:\n  routing_method: Threshold\n  verifier_signal: samples\n");
    // Trained as if "large" were the small model.
    let policy = automix::training::train_policy(&cfg, &rows, "large", "small").unwrap();
    let (small, _) = model("small", 1.0, "B", &["Correct"]);
    let (large, _) = model("large", 10.0, "B", &["Correct"]);
    let models = ModelSet::new(vec![large, small]).unwrap();
    let Err(err) = Router::new(&cfg, models, Arc::new(PromptSet::builtin()), Some(policy)) else {
        panic!("a policy for another small model was accepted");
    };
    assert!(err.to_string().contains("not the router's first"), "{err}");
}
