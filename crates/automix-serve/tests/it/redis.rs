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

use crate::proxy::{Proxy, pair, start_routed};
use crate::support::{Redis, Run, training_row};

/// A tiny model right on even rows (its verifier says so) and a big one always right.
pub fn plan(config: &Config) -> RouterPolicy {
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
    let handles = pair(small, large);
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

async fn health_of(client: &reqwest::Client, r: &Replica) -> Value {
    let resp = client
        .get(format!("{}/health", r.base))
        .send()
        .await
        .unwrap();
    resp.json().await.unwrap()
}

/// `r`'s belief once it counts `updates` (or after 5 s): replicas see each other's counts
/// when the background worker has sent them.
async fn settled(client: &reqwest::Client, r: &Replica, updates: u64) -> Value {
    let mut view = belief(client, r).await;
    for _ in 0..50 {
        if view["updates"] == updates {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        view = belief(client, r).await;
    }
    view
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
    // Feedback reaches the store in the background (no request waits on it).
    assert_eq!(settled(&client, &b, 1).await["updates"], 1);

    redis.pause();
    let mut during = Vec::new();
    for i in 0..3 {
        during.push(ask(&client, &a, &format!("during {i}")).await);
    }
    for id in &during {
        assert_eq!(score(&client, &a, id, json!(0.0)).await, 200);
    }
    // The background worker finds the store stalled within its timeout.
    let mut health = json!(null);
    for _ in 0..50 {
        health = health_of(&client, &a).await;
        if health["status"] == "degraded" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
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
    assert_eq!(settled(&client, &b, 4).await["updates"], 4);
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

/// A CA and a server certificate for 127.0.0.1 signed by it, written under `dir`:
/// (CA PEM path, server cert path, server key path).
fn certificates(dir: &Path) -> (std::path::PathBuf, std::path::PathBuf, std::path::PathBuf) {
    use rcgen::{BasicConstraints, CertificateParams, IsCa, KeyPair};
    let ca_key = KeyPair::generate().unwrap();
    let mut ca_params = CertificateParams::new(Vec::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca = ca_params.self_signed(&ca_key).unwrap();
    let key = KeyPair::generate().unwrap();
    let params = CertificateParams::new(vec!["127.0.0.1".into(), "localhost".into()]).unwrap();
    let cert = params.signed_by(&key, &ca, &ca_key).unwrap();
    std::fs::create_dir_all(dir).unwrap();
    let paths = (
        dir.join("ca.pem"),
        dir.join("server.pem"),
        dir.join("server.key"),
    );
    std::fs::write(&paths.0, ca.pem()).unwrap();
    std::fs::write(&paths.1, cert.pem()).unwrap();
    std::fs::write(&paths.2, key.serialize_pem()).unwrap();
    paths
}

/// `rediss://`: a replica talks to a real redis-server over TLS only (its plain port is
/// off), verifying the server against the configured CA file; without that CA the server's
/// certificate is not trusted and the store stays unreachable (routing goes on).
#[tokio::test(flavor = "multi_thread")]
async fn a_tls_redis_is_reached_with_its_ca_and_refused_without() {
    let dir = std::env::temp_dir().join(format!("automix-tls-{}", std::process::id()));
    let (ca, cert, key) = certificates(&dir);
    let args: Vec<String> = [
        "--tls-port",
        "--tls-cert-file",
        cert.to_str().unwrap(),
        "--tls-key-file",
        key.to_str().unwrap(),
        "--tls-ca-cert-file",
        ca.to_str().unwrap(),
        "--tls-auth-clients",
        "no",
    ]
    .map(String::from)
    .to_vec();
    let Some(redis) = Redis::start_with(&args) else {
        return;
    };
    let url = redis.url().replace("redis://", "rediss://");
    let small = FakeOpenAi::start(vec![]).await.unwrap();
    let large = FakeOpenAi::start(vec![]).await.unwrap();
    let client = reqwest::Client::new();

    let with_ca = format!(
        "automix:\n  verification_samples: 2\n  cost_lambda: 0.02\n  online_belief: true\n  \
         belief_store: {url}\n  belief_store_ca_file: {}\n  belief_store_timeout_ms: 2000\n\
         hparam:\n  routing_method: Threshold\n  verifier_signal: samples\n",
        ca.display()
    );
    let config = Config::parse(&with_ca, Path::new("tls.yaml")).unwrap();
    let policy = plan(&config);
    let r = replica(&config, &policy, &small, &large).await;
    let id = ask(&client, &r, "over tls").await;
    assert_eq!(score(&client, &r, &id, json!(true)).await, 200);
    let view = belief(&client, &r).await;
    assert_eq!(view["store"], "redis");
    assert_eq!(view["healthy"], true, "{view}");
    assert_eq!(view["updates"], 1, "{view}");

    let without_ca = format!(
        "automix:\n  verification_samples: 2\n  cost_lambda: 0.02\n  online_belief: true\n  \
         belief_store: {url}\n  belief_store_timeout_ms: 500\nhparam:\n  \
         routing_method: Threshold\n  verifier_signal: samples\n"
    );
    let config = Config::parse(&without_ca, Path::new("tls.yaml")).unwrap();
    let untrusting = replica(&config, &policy, &small, &large).await;
    let id = ask(&client, &untrusting, "not trusted").await;
    assert_eq!(score(&client, &untrusting, &id, json!(true)).await, 200);
    let view = belief(&client, &untrusting).await;
    assert_eq!(view["healthy"], false, "{view}");
    assert_eq!(view["pending"], 1, "{view}");
    let _ = std::fs::remove_dir_all(&dir);
}

/// A replica whose `/admin/reload` rebuilds its router from the same plan.
async fn reloadable(
    config: &Config,
    policy: &RouterPolicy,
    small: &FakeOpenAi,
    large: &FakeOpenAi,
) -> Replica {
    use std::sync::Arc;
    let handles = pair(small, large);
    let build = {
        let (config, policy) = (config.clone(), policy.clone());
        move || {
            let models = automix::ModelSet::new(handles.clone())?;
            let prompts = Arc::new(automix::verify::PromptSet::builtin());
            automix::Router::new(&config, models, prompts, Some(policy.clone()))
        }
    };
    let router = build().unwrap();
    let settings = ProxySettings {
        admin_keys: vec!["admin".into()],
        ..ProxySettings::default()
    };
    let state = automix_serve::ProxyState::new(router, Some(Box::new(build)), settings);
    crate::proxy::serve_state(state).await
}

fn stalled_config(redis_url: &str, timeout_ms: u64) -> Config {
    let text = format!(
        "automix:\n  verification_samples: 2\n  cost_lambda: 0.02\n  online_belief: true\n  \
         belief_store: {redis_url}\n  belief_store_timeout_ms: {timeout_ms}\nhparam:\n  \
         routing_method: Threshold\n  verifier_signal: samples\n"
    );
    Config::parse(&text, Path::new("replica.yaml")).unwrap()
}

/// With Redis stalled (SIGSTOP) and a store timeout of 30 s, chat requests and feedback
/// still answer at once: nothing on the request path waits on the store. (A client timeout
/// of 5 s fails the test if any request waited for the store's 30.)
#[tokio::test(flavor = "multi_thread")]
async fn no_request_waits_on_a_stalled_store() {
    let Some(redis) = Redis::start() else {
        return;
    };
    let config = stalled_config(&redis.url(), 30_000);
    let policy = plan(&config);
    let small = FakeOpenAi::start(vec![]).await.unwrap();
    let large = FakeOpenAi::start(vec![]).await.unwrap();
    let a = replica(&config, &policy, &small, &large).await;
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()
        .unwrap();
    let first = ask(&client, &a, "warm").await;
    assert_eq!(score(&client, &a, &first, json!(true)).await, 200);
    redis.pause();
    let asks = (0..16).map(|i| {
        let (client, a) = (&client, &a);
        async move {
            let id = ask(client, a, &format!("stalled {i}")).await;
            score(client, a, &id, json!(i % 2 == 0)).await
        }
    });
    let statuses = futures::future::join_all(asks).await;
    assert!(statuses.iter().all(|s| *s == 200), "{statuses:?}");
    let health = health_of(&client, &a).await;
    assert!(
        health["status"] == "ok" || health["status"] == "degraded",
        "{health}"
    );
    redis.resume();
}

/// A reload while Redis is down keeps the feedback not yet sent: the new router's belief
/// takes it over, and after recovery every count reaches the store once.
#[tokio::test(flavor = "multi_thread")]
async fn a_reload_while_the_store_is_down_keeps_pending_feedback() {
    let Some(redis) = Redis::start() else {
        return;
    };
    let config = stalled_config(&redis.url(), 200);
    let policy = plan(&config);
    let small = FakeOpenAi::start(vec![]).await.unwrap();
    let large = FakeOpenAi::start(vec![]).await.unwrap();
    let a = reloadable(&config, &policy, &small, &large).await;
    let b = replica(&config, &policy, &small, &large).await;
    let client = reqwest::Client::new();
    redis.pause();
    for i in 0..5 {
        let id = ask(&client, &a, &format!("pending {i}")).await;
        assert_eq!(score(&client, &a, &id, json!(false)).await, 200);
    }
    assert_eq!(belief(&client, &a).await["pending"], 5);
    let reloaded = client
        .post(format!("{}/admin/reload", a.base))
        .bearer_auth("admin")
        .send()
        .await
        .unwrap();
    assert_eq!(reloaded.status(), 200);
    assert_eq!(
        belief(&client, &a).await["pending"],
        5,
        "kept across the reload"
    );
    redis.resume();
    assert_eq!(settled(&client, &b, 5).await["updates"], 5);
    let after = settled(&client, &a, 5).await;
    assert_eq!(
        (after["updates"].clone(), after["pending"].clone()),
        (json!(5), json!(0))
    );
}
