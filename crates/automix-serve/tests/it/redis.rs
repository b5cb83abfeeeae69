//! Replicas of `automix serve` sharing one online belief through a real redis-server (run
//! by `cargo xtask e2e`, which installs it; skipped where the binary is missing unless
//! `AUTOMIX_REQUIRE_REDIS` is set). Each replica is its own router and proxy on loopback.

use std::path::Path;
use std::time::Duration;

use automix::config::Config;
use automix::llm::fake_server::FakeOpenAi;
use automix::training::{RouterPolicy, train_cascade_plan, train_policy};
use automix_serve::ProxySettings;
use serde_json::{Value, json};

use crate::proxy::{Proxy, handle, start_routed};
use crate::support::{Redis, Run, training_row};

/// A tiny model right on even rows (its verifier says so) and a big one always right.
fn plan(config: &Config) -> RouterPolicy {
    let rows: Vec<_> = (0..200)
        .map(|i| {
            let right = i % 2 == 0;
            let runs = [
                Run {
                    model: "small",
                    right,
                    cost: 1e-6,
                    confidence: Some(if right { 1.0 } else { 0.0 }),
                },
                Run {
                    model: "large",
                    right: true,
                    cost: 1e-5,
                    confidence: None,
                },
            ];
            training_row(i, "mmlu", &runs)
        })
        .collect();
    let mut policy = train_policy(config, &rows, "small", "large").unwrap();
    let names = ["small".to_string(), "large".to_string()];
    policy.cascade = Some(train_cascade_plan(config, &rows, &names).unwrap());
    policy
}

fn config(redis_url: &str) -> Config {
    let text = format!(
        "automix:\n  verification_samples: 2\n  cost_lambda: 0.02\n  online_belief: true\n  \
         belief_store: {redis_url}\n  belief_store_timeout_ms: 200\nhparam:\n  \
         routing_method: Threshold\n  verifier_signal: samples\n"
    );
    Config::parse(&text, Path::new("replica.yaml")).unwrap()
}

type Replica = Proxy;

async fn replica(
    config: &Config,
    policy: &RouterPolicy,
    small: &FakeOpenAi,
    large: &FakeOpenAi,
) -> Replica {
    let t = Duration::from_secs(5);
    let handles = vec![
        handle("small", 1.0, small.base_url(), 1, t),
        handle("large", 10.0, large.base_url(), 1, t),
    ];
    let settings = ProxySettings {
        admin_keys: vec!["admin".into()],
        ..ProxySettings::default()
    };
    start_routed(handles, settings, config, Some(policy.clone())).await
}

async fn ask(client: &reqwest::Client, r: &Replica, q: &str) -> String {
    let resp = client
        .post(format!("{}/v1/chat/completions", r.base))
        .json(&json!({"model": "automix", "messages": [{"role": "user", "content": q}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let header = resp.headers()["x-automix-request-id"]
        .to_str()
        .unwrap()
        .to_owned();
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["id"], format!("chatcmpl-{header}"));
    body["id"].as_str().unwrap().to_owned()
}

async fn score(client: &reqwest::Client, r: &Replica, id: &str, score: Value) -> u16 {
    client
        .post(format!("{}/v1/automix/feedback", r.base))
        .json(&json!({"id": id, "score": score}))
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

async fn belief(client: &reqwest::Client, r: &Replica) -> Value {
    let resp = client
        .get(format!("{}/admin/belief", r.base))
        .bearer_auth("admin")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    resp.json().await.unwrap()
}

/// A running redis-server, the config pointing at it, a trained cascade and two upstreams.
async fn setup() -> Option<(Redis, Config, RouterPolicy, FakeOpenAi, FakeOpenAi)> {
    let redis = Redis::start()?;
    let config = config(&redis.url());
    let policy = plan(&config);
    let small = FakeOpenAi::start(vec![]).await.unwrap();
    let large = FakeOpenAi::start(vec![]).await.unwrap();
    Some((redis, config, policy, small, large))
}

/// Traffic and feedback through the first replica only; all three report the same count
/// and solve the same table, because they read the same counts.
#[tokio::test(flavor = "multi_thread")]
async fn three_replicas_share_one_belief() {
    let Some((_redis, config, policy, small, large)) = setup().await else {
        return;
    };
    let mut replicas = Vec::new();
    for _ in 0..3 {
        replicas.push(replica(&config, &policy, &small, &large).await);
    }
    let client = reqwest::Client::new();
    let mut ids = Vec::new();
    for i in 0..6 {
        ids.push(ask(&client, &replicas[0], &format!("question {i}")).await);
    }
    for id in &ids {
        assert_eq!(score(&client, &replicas[0], id, json!(false)).await, 200);
    }
    assert_eq!(
        score(&client, &replicas[0], &ids[0], json!(1.0)).await,
        409,
        "scored twice"
    );
    assert_eq!(
        score(&client, &replicas[0], "chatcmpl-nope", json!(1.0)).await,
        404
    );
    assert_eq!(score(&client, &replicas[0], &ids[1], json!(7)).await, 400);
    let views: Vec<Value> = futures_join(&client, &replicas).await;
    for v in &views {
        assert_eq!(v["store"], "redis");
        assert_eq!(v["healthy"], true);
        assert_eq!(v["updates"], 6, "{v}");
    }
    assert_eq!(views[0]["table"], views[1]["table"]);
    assert_eq!(views[0]["table"], views[2]["table"]);
    assert_eq!(views[1]["models"], views[2]["models"]);
    // What was credited: every scored answer was wrong.
    let answered = views[0]["models"].as_array().unwrap();
    assert!(answered.iter().any(|m| m["theta"].as_f64().unwrap() < 0.95));
}

async fn futures_join(client: &reqwest::Client, replicas: &[Replica]) -> Vec<Value> {
    let mut out = Vec::new();
    for r in replicas {
        out.push(belief(client, r).await);
    }
    out
}

/// Redis stops answering mid-run: requests still succeed on the last table, `/health` says
/// degraded, feedback is kept; when Redis answers again the counts arrive, each once.
#[tokio::test(flavor = "multi_thread")]
async fn routing_survives_the_store_going_away_and_catches_up() {
    let Some((redis, config, policy, small, large)) = setup().await else {
        return;
    };
    let a = replica(&config, &policy, &small, &large).await;
    let b = replica(&config, &policy, &small, &large).await;
    let client = reqwest::Client::new();
    let id = ask(&client, &a, "before").await;
    assert_eq!(score(&client, &a, &id, json!(true)).await, 200);
    assert_eq!(belief(&client, &b).await["updates"], 1);

    redis.pause();
    let mut during = Vec::new();
    for i in 0..3 {
        during.push(ask(&client, &a, &format!("during {i}")).await);
    }
    for id in &during {
        assert_eq!(score(&client, &a, id, json!(0.0)).await, 200);
    }
    let health: Value = client
        .get(format!("{}/health", a.base))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(health["status"], "degraded");
    let down = belief(&client, &a).await;
    assert_eq!(down["healthy"], false);
    assert!(down["pending"].as_u64().unwrap() >= 1, "{down}");
    let metrics = client
        .get(format!("{}/metrics", a.base))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains("automix_belief_store_healthy 0"),
        "{metrics}"
    );

    redis.resume();
    // Batches sent while Redis was stalled may have been applied when it woke; re-sending
    // them must not count them again.
    let mut view = belief(&client, &a).await;
    for _ in 0..20 {
        if view["healthy"] == true && view["pending"] == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        view = belief(&client, &a).await;
    }
    assert_eq!(view["updates"], 4, "{view}");
    assert_eq!(belief(&client, &b).await["updates"], 4);
    let health: Value = client
        .get(format!("{}/health", a.base))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(health["status"], "ok");
}
