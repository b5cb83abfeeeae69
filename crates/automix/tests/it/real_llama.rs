//! The router against the real local llama.cpp models (run by `cargo xtask e2e`, which
//! brings up Qwen2.5-Coder 0.5B and 1.5B): at least 5 real queries, decisions checked
//! against the policy, recorded costs against the token usage.

use std::sync::Arc;

use automix::config::Config;
use automix::dataset::query_from_json;
use automix::llm::fake_server::local_server;
use automix::training::train_policy;
use automix::verify::PromptSet;
use automix::{ModelSet, Router};
use automix_core::{QueryEvidence, VerifierScore};

use crate::data::fixture_rows;

use crate::support::local_model as handle;

#[tokio::test]
async fn routes_real_queries_through_both_local_models() {
    let (Some(small_url), Some(large_url)) = (
        local_server("qwen2.5-coder-0.5b"),
        local_server("qwen2.5-coder-1.5b"),
    ) else {
        return;
    };
    let config = Config::parse(
        "hparam:\n  routing_method: Threshold\n  verifier_signal: logprob\n  max_workers: 2\nautomix:\n  verification_samples: 2\ncollect:\n  answer_max_tokens: 16\n  math_max_tokens: 32\n",
        std::path::Path::new("e2e.yaml"),
    )
    .unwrap();
    // A policy trained on synthetic rows, renamed onto the real models.
    let mut rows = fixture_rows();
    for r in &mut rows {
        r.models[0].model = "qwen2.5-coder-0.5b".into();
        r.models[1].model = "qwen2.5-coder-1.5b".into();
    }
    let policy = train_policy(&config, &rows, "qwen2.5-coder-0.5b", "qwen2.5-coder-1.5b").unwrap();
    let models = ModelSet::new(vec![
        handle("qwen2.5-coder-1.5b", 0.12, large_url),
        handle("qwen2.5-coder-0.5b", 0.04, small_url),
    ])
    .unwrap();
    let router = Router::new(
        &config,
        models,
        Arc::new(PromptSet::builtin()),
        Some(policy.clone()),
    )
    .unwrap();
    let lines = [
        r#"{"task_name":"openbook_qa","query":"a desert environment has low","ground_truth":"D","metric":"em_mc","choices":"{'text': ['sand count', 'cacti', 'dryness', 'wet sky falling'], 'label': ['A', 'B', 'C', 'D']}"}"#,
        r#"{"task_name":"arc_challenge","query":"Which planet is closest to the Sun?","ground_truth":"A","metric":"em_mc","choices":"{'text': ['Mercury', 'Venus', 'Earth', 'Mars'], 'label': ['A', 'B', 'C', 'D']}"}"#,
        r#"{"task_name":"trivia_qa","query":"What is the capital of France?","ground_truth":"Paris","metric":"f1_score","choices":"None"}"#,
        r#"{"task_name":"natural_qa","query":"who wrote romeo and juliet","ground_truth":"William Shakespeare","metric":"f1_score","choices":"None"}"#,
        r#"{"task_name":"gsm8k","query":"Tom has 3 apples and buys 4 more. How many apples does he have?","ground_truth":"3 + 4 = 7\n#### 7","metric":"GSM8K","choices":"None"}"#,
        r#"{"task_name":"mmlu","query":"What is 2 + 2?","ground_truth":"C","metric":"em_mc","choices":"['3', '5', '4', '22']"}"#,
    ];
    let queries: Vec<_> = lines
        .iter()
        .map(|l| query_from_json(&serde_json::from_str(l).unwrap()).unwrap())
        .collect();
    let items = router.route_batch(&queries).await;
    assert_eq!(items.len(), queries.len());
    for (item, q) in items.iter().zip(&queries) {
        assert_eq!(item.id, q.id, "order kept");
        let o = item
            .outcome
            .as_ref()
            .unwrap_or_else(|| panic!("{:?}", item.error));
        let step = &o.steps[0];
        let verifier = match step.verification_score {
            Some(p) => VerifierScore::Known(automix_core::Confidence::new(p).unwrap()),
            None => VerifierScore::Unknown,
        };
        let small_answer = automix::TaskMetric::parse(q.metric.as_deref().unwrap())
            .unwrap()
            .extract(&step.answer, &q.choices);
        let want = policy.policy.decide_for(&QueryEvidence {
            verifier,
            task_name: Some(&q.task_name),
            small_answer: Some(&small_answer),
        });
        assert_eq!(step.decision, want, "{o:?}");
        assert_eq!(o.route_to_llm, want.escalates());
        assert_eq!(
            o.model_name,
            if o.route_to_llm {
                "qwen2.5-coder-1.5b"
            } else {
                "qwen2.5-coder-0.5b"
            }
        );
        // Recorded costs are the token usage at the models' prices.
        for c in &o.calls {
            let price = if c.model == "qwen2.5-coder-0.5b" {
                0.04
            } else {
                0.12
            };
            let want = (c.tokens.prompt + c.tokens.completion) as f64 * price / 1e6;
            assert!((c.cost - want).abs() < 1e-12, "{c:?}");
            assert!(c.tokens.prompt > 0 && c.tokens.completion > 0, "{c:?}");
        }
        assert!(o.task_performance.is_some());
        eprintln!(
            "{} {} {:?} → {} ({:?})",
            q.task_name, o.model_name, o.verification_score, o.response, o.task_performance
        );
    }
}
