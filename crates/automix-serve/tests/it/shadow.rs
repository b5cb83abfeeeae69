//! Shadow answers in the proxy (`automix.shadow`): after 30 routed requests, 30 rows with
//! every model's answer scored by agreement, no prompt text, counted in `/metrics`; the
//! replies are those of a proxy without a shadow; the rows train a policy.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use automix::config::Config;
use automix::dataset::{LabelSource, read_training_rows};
use automix::llm::fake_server::FakeOpenAi;
use automix::verify::PromptSet;
use automix::{ModelSet, Router};
use automix_serve::{ProxySettings, ProxyState};
use serde_json::{Value, json};

use crate::proxy::{Proxy, chat, pair, serve_state};

const REQUESTS: usize = 30;

fn config(rows: &Path) -> Config {
    let text = format!(
        "automix:\n  verification_samples: 2\n  shadow:\n    rate: 1.0\n    rows_path: {}\n    max_concurrency: 32\n",
        rows.display()
    );
    Config::parse(&text, Path::new("shadow.yaml")).unwrap()
}

async fn proxy(
    small: &FakeOpenAi,
    large: &FakeOpenAi,
    config: &Config,
    shadowed: bool,
) -> (Proxy, Option<Arc<automix::traffic::Shadow>>) {
    let models = ModelSet::new(pair(small, large)).unwrap();
    let router = Router::new(config, models, Arc::new(PromptSet::builtin()), None).unwrap();
    let shadow =
        shadowed.then(|| Arc::new(automix::project::shadow(config, &router).unwrap().unwrap()));
    let learning = shadow
        .clone()
        .map(|s| automix_serve::Learning::from_config(config, s));
    let state = ProxyState::with_learning(router, None, ProxySettings::default(), learning);
    (serve_state(state).await, shadow)
}

async fn replies(p: &Proxy) -> Vec<Value> {
    let mut out = Vec::new();
    for i in 0..REQUESTS {
        let body = json!({"model": "automix", "automix": {"task": "support"},
            "messages": [{"role": "user", "content": format!("private question {i}")}]});
        let resp = chat(&p.base, &body).await;
        assert_eq!(resp.status(), 200);
        let reply: Value = resp.json().await.unwrap();
        out.push(reply["choices"][0]["message"]["content"].clone());
    }
    out
}

#[tokio::test(flavor = "multi_thread")]
async fn thirty_routed_requests_leave_thirty_private_agreement_rows_that_train() {
    let dir = std::env::temp_dir().join(format!("automix-shadow-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let rows_path = dir.join("traffic.jsonl");
    let cfg = config(&rows_path);
    let (small, large) = (
        FakeOpenAi::start(vec![]).await.unwrap(),
        FakeOpenAi::start(vec![]).await.unwrap(),
    );
    let (plain, _) = proxy(&small, &large, &cfg, false).await;
    let without = replies(&plain).await;
    let (shadowed, shadow) = proxy(&small, &large, &cfg, true).await;
    let with = replies(&shadowed).await;
    assert_eq!(with, without, "a shadow never changes a reply");
    let shadow = shadow.unwrap();
    for _ in 0..500 {
        if shadow.counts().rows as usize + shadow.counts().busy as usize >= REQUESTS {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let counts = shadow.counts();
    let rows = read_training_rows(&rows_path).unwrap();
    assert_eq!(rows.len() as u64, counts.rows);
    assert_eq!(rows.len(), REQUESTS, "one row per request: {counts:?}");
    for r in &rows {
        assert_eq!(r.label_source, LabelSource::Agreement);
        assert_eq!(r.task_name, "support");
        assert_eq!(r.models.len(), 2);
        assert!(
            r.models[0].verification.is_some(),
            "the small model verified its answer"
        );
        assert_eq!(r.models[1].score, 1.0, "the reference");
        assert!(r.query.is_empty() && r.models.iter().all(|m| m.answer.is_empty()));
    }
    let text = std::fs::read_to_string(&rows_path).unwrap();
    assert!(!text.contains("private question"), "no prompt text in rows");
    let metrics = reqwest::get(format!("{}/metrics", shadowed.base))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains(&format!("automix_shadow_rows {}", rows.len())),
        "{metrics}"
    );
    // `automix train --rows traffic.jsonl` trains on them (the same library call).
    let spec = automix::project::TrainSpec {
        rows: Some(rows_path.clone()),
        all_rows: true,
        output: Some(dir.join("policy.json")),
        ..Default::default()
    };
    let trained = automix::project::train(&cfg, &spec).unwrap();
    assert_eq!(trained.policy.small_model, "small");
}

/// A proxy serving the policy file `policy`, with a shadow that retrains every 5 rows on
/// `rows` (seeded with 150 rows where the verifier is honest) and reloads from the file.
async fn retraining_proxy_with_admin(
    dir: &Path,
    serving: &automix::training::RouterPolicy,
) -> (Proxy, FakeOpenAi, FakeOpenAi) {
    use crate::support::verifier_rows;
    let rows = dir.join("traffic.jsonl");
    let policy = dir.join("policy.json");
    std::fs::create_dir_all(dir).unwrap();
    automix::dataset::write_jsonl(&rows, &verifier_rows(150, true)).unwrap();
    serving.save(&policy).unwrap();
    let text = format!(
        "model_path:\n  save_model_path: {}\nhparam:\n  routing_method: Calibrated\n  verifier_signal: samples\n  per_task_prior: false\n\
         automix:\n  verification_samples: 2\n  shadow:\n    rate: 1.0\n    rows_path: {}\n    retrain_every: 5\n",
        policy.display(),
        rows.display()
    );
    let config = Config::parse(&text, Path::new("retrain.yaml")).unwrap();
    let (small, large) = (
        FakeOpenAi::start(vec![]).await.unwrap(),
        FakeOpenAi::start(vec![]).await.unwrap(),
    );
    let handles = pair(&small, &large);
    let load = {
        let (config, handles, policy) = (config.clone(), handles.clone(), policy.clone());
        move || {
            let p = automix::training::RouterPolicy::load(&policy)?;
            Router::new(
                &config,
                ModelSet::new(handles.clone())?,
                Arc::new(PromptSet::builtin()),
                Some(p),
            )
        }
    };
    let router = load().unwrap();
    let shadow = Arc::new(automix::project::shadow(&config, &router).unwrap().unwrap());
    let learning = automix_serve::Learning::from_config(&config, shadow);
    assert!(learning.retrain.is_some());
    let settings = ProxySettings {
        admin_keys: vec!["admin".into()],
        ..ProxySettings::default()
    };
    let state = ProxyState::with_learning(router, Some(Box::new(load)), settings, Some(learning));
    (serve_state(state).await, small, large)
}

/// Routes until `/admin/traffic` reports a retrain; returns its report.
async fn until_retrained(p: &Proxy) -> Value {
    let client = reqwest::Client::new();
    for i in 0..200 {
        let body =
            json!({"model": "automix", "messages": [{"role": "user", "content": format!("q{i}")}]});
        chat(&p.base, &body).await;
        let traffic: Value = client
            .get(format!("{}/admin/traffic", p.base))
            .bearer_auth("admin")
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        if !traffic["last_retrain"].is_null() {
            return traffic;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("no retrain reported");
}

#[tokio::test(flavor = "multi_thread")]
async fn retrain_every_swaps_in_a_better_policy_and_refuses_one_that_is_not() {
    use crate::support::verifier_rows;
    let config = Config::parse(
        "hparam:\n  routing_method: Calibrated\n  verifier_signal: samples\n  per_task_prior: false\n",
        Path::new("t.yaml"),
    )
    .unwrap();
    let train = |honest| {
        automix::training::train_policy(&config, &verifier_rows(150, honest), "small", "large")
            .unwrap()
    };
    for (serving, swaps) in [(train(false), true), (train(true), false)] {
        let dir =
            std::env::temp_dir().join(format!("automix-retrain-{}-{swaps}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let (p, _s, _l) = retraining_proxy_with_admin(&dir, &serving).await;
        let traffic = until_retrained(&p).await;
        let report = &traffic["last_retrain"];
        assert_eq!(report["swapped"], swaps, "{traffic}");
        let on_disk = automix::training::RouterPolicy::load(&dir.join("policy.json")).unwrap();
        assert_eq!(
            on_disk.policy.rule != serving.policy.rule,
            swaps,
            "{report}"
        );
        assert!(
            traffic["shadow"]["rows"].as_u64().unwrap() >= 5,
            "{traffic}"
        );
        let metrics = reqwest::get(format!("{}/metrics", p.base))
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        let outcome = if swaps { "swapped" } else { "kept" };
        assert!(
            metrics.contains(&format!(
                "automix_retrains_total{{outcome=\"{outcome}\"}} 1"
            )),
            "{metrics}"
        );
    }
}

/// Waits until `shadow` has written `n` rows.
async fn until_rows(shadow: &automix::traffic::Shadow, n: u64) {
    for _ in 0..500 {
        if shadow.counts().rows >= n {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("shadow wrote {:?}, not {n} rows", shadow.counts());
}

/// `POST /v1/automix/feedback` on a shadowed completion corrects its row: the client's
/// score replaces the agreement label of the answer it got, and the row says so. Without
/// an online belief, feedback is taken because the shadow learns from it.
#[tokio::test(flavor = "multi_thread")]
async fn client_feedback_over_http_overrides_the_shadow_label() {
    let dir = std::env::temp_dir().join(format!("automix-shadow-fb-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let rows_path = dir.join("traffic.jsonl");
    let cfg = config(&rows_path);
    let small = FakeOpenAi::start(vec![]).await.unwrap();
    let large = FakeOpenAi::start(vec![]).await.unwrap();
    let (p, shadow) = proxy(&small, &large, &cfg, true).await;
    let shadow = shadow.unwrap();
    let body = json!({"model": "automix", "messages": [{"role": "user", "content": "pick"}]});
    let reply: Value = chat(&p.base, &body).await.json().await.unwrap();
    until_rows(&shadow, 1).await;
    let before = read_training_rows(&rows_path).unwrap();
    let kept = reply["automix"]["model_name"].as_str().unwrap().to_owned();
    let at = before[0]
        .models
        .iter()
        .position(|m| m.model == kept)
        .unwrap();
    let feedback = reqwest::Client::new()
        .post(format!("{}/v1/automix/feedback", p.base))
        .json(&json!({"id": reply["id"], "score": 0.0}))
        .send()
        .await
        .unwrap();
    assert_eq!(feedback.status(), 200, "{:?}", feedback.text().await);
    let after = read_training_rows(&rows_path).unwrap();
    assert_eq!(after.len(), 1, "the correction replaces the row");
    assert_eq!(after[0].label_source, LabelSource::Feedback);
    assert_eq!(after[0].models[at].score, 0.0, "the client's score");
    assert_eq!(after[0].id, before[0].id);
    assert_eq!(shadow.counts().feedback, 1);
}

/// Two replicas with a Redis `belief_store` and no `rows_path` append their shadow rows to
/// one stream; `automix traffic export`'s call drains every row into a file once.
#[tokio::test(flavor = "multi_thread")]
async fn replicas_share_one_row_stream_that_export_drains() {
    let Some(redis) = crate::support::Redis::start() else {
        return;
    };
    let text = format!(
        "automix:\n  verification_samples: 2\n  belief_store: {}\n  shadow:\n    rate: 1.0\n    max_concurrency: 4\n",
        redis.url()
    );
    let cfg = Config::parse(&text, Path::new("replicas.yaml")).unwrap();
    let (small, large) = (
        FakeOpenAi::start(vec![]).await.unwrap(),
        FakeOpenAi::start(vec![]).await.unwrap(),
    );
    let (a, shadow_a) = proxy(&small, &large, &cfg, true).await;
    let (b, shadow_b) = proxy(&small, &large, &cfg, true).await;
    for (i, p) in [&a, &b, &a, &b, &a, &b].into_iter().enumerate() {
        let body = json!({"model": "automix",
            "messages": [{"role": "user", "content": format!("private {i}")}]});
        assert_eq!(chat(&p.base, &body).await.status(), 200);
    }
    let (shadow_a, shadow_b) = (shadow_a.unwrap(), shadow_b.unwrap());
    until_rows(&shadow_a, 3).await;
    until_rows(&shadow_b, 3).await;
    assert_eq!(
        shadow_a.rows().await.unwrap().len(),
        6,
        "one stream for both"
    );
    let stream =
        automix::project::row_stream(&cfg, automix::traffic::sink::DEFAULT_STREAM).unwrap();
    let dir = std::env::temp_dir().join(format!("automix-stream-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let out = dir.join("traffic.jsonl");
    assert_eq!(stream.export(&out, false).await.unwrap(), 6);
    assert_eq!(stream.export(&out, false).await.unwrap(), 0, "drained");
    let rows = read_training_rows(&out).unwrap();
    assert_eq!(rows.len(), 6);
    assert!(
        rows.iter()
            .all(|r| r.label_source == LabelSource::Agreement)
    );
    let text = std::fs::read_to_string(&out).unwrap();
    assert!(
        !text.contains("private"),
        "no prompt text in the stream's rows"
    );
}
