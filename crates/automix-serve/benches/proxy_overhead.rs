//! Median and p99 overhead of the proxy over calling the (fake) upstream directly, in one
//! run: `cargo bench -p automix-serve --bench proxy_overhead`. Verification is off, so both
//! paths make exactly one upstream call and the difference is the proxy's own work. Then
//! the same proxy with shadow answers on (`automix.shadow.rate: 1.0`, rows to a temporary
//! file): the reply's latency with the shadow's background work competing for the cores.

#![allow(clippy::unwrap_used, missing_docs)]

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use automix::config::Config;
use automix::llm::fake_server::FakeOpenAi;
use automix::llm::*;
use automix::verify::PromptSet;
use automix::{ModelHandle, ModelSet, Router};
use automix_serve::{Learning, ProxySettings, ProxyState, serve};
use serde_json::json;

const WARMUP: usize = 200;
const SAMPLES: usize = 2000;

fn handle(name: &str, price: f64, base: String) -> ModelHandle {
    let entry = ModelEntry {
        name: name.into(),
        parameters: price,
        input_price: price,
        output_price: price,
        model: name.into(),
        service: None,
        api_endpoint: None,
        api_key_env: None,
    };
    ModelHandle {
        entry,
        provider: Arc::new(HttpBackend::new(EndpointConfig::new(base)).unwrap()),
    }
}

async fn time(
    client: &reqwest::Client,
    url: &str,
    body: &serde_json::Value,
    n: usize,
) -> Vec<Duration> {
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        let t = Instant::now();
        let r = client.post(url).json(body).send().await.unwrap();
        assert!(r.status().is_success());
        r.bytes().await.unwrap();
        out.push(t.elapsed());
    }
    out.sort();
    out
}

fn pct(v: &[Duration], p: f64) -> Duration {
    v[((v.len() - 1) as f64 * p).round() as usize]
}

/// A proxy over `upstream` with `config`; with a shadow when the config has one.
async fn start_proxy(upstream: &FakeOpenAi, config: &Config) -> String {
    let models = ModelSet::new(vec![
        handle("small", 1.0, upstream.base_url()),
        handle("large", 2.0, upstream.base_url()),
    ])
    .unwrap();
    let router = Router::new(config, models, Arc::new(PromptSet::builtin()), None).unwrap();
    let shadow = automix::project::shadow(config, &router)
        .unwrap()
        .map(Arc::new);
    let learning = shadow.map(|s| Learning::from_config(config, s));
    let state = ProxyState::with_learning(router, None, ProxySettings::default(), learning);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!(
        "http://{}/v1/chat/completions",
        listener.local_addr().unwrap()
    );
    tokio::spawn(serve(listener, state, std::future::pending()));
    url
}

fn report(name: &str, v: &[Duration]) {
    println!(
        "{name:<12} median {:>9.1?}  p99 {:>9.1?}",
        pct(v, 0.5),
        pct(v, 0.99)
    );
}

fn main() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let upstream = FakeOpenAi::start(vec![]).await.unwrap();
        let plain = "automix:\n  enable_self_verification: false\n";
        let config = Config::parse(plain, Path::new("bench.yaml")).unwrap();
        let rows = std::env::temp_dir().join(format!("automix-bench-shadow-{}.jsonl", std::process::id()));
        let shadowed = format!("{plain}  shadow:\n    rate: 1.0\n    rows_path: {}\n", rows.display());
        let shadow_config = Config::parse(&shadowed, Path::new("bench.yaml")).unwrap();
        let proxy = start_proxy(&upstream, &config).await;
        let shadow_proxy = start_proxy(&upstream, &shadow_config).await;
        let client = reqwest::Client::new();
        let direct = format!("{}/chat/completions", upstream.base_url());
        let body = |model: &str| json!({"model": model, "messages": [{"role": "user", "content": "ping"}], "max_tokens": 8});
        time(&client, &direct, &body("small"), WARMUP).await;
        time(&client, &proxy, &body("automix"), WARMUP).await;
        time(&client, &shadow_proxy, &body("automix"), WARMUP).await;
        let d = time(&client, &direct, &body("small"), SAMPLES).await;
        let p = time(&client, &proxy, &body("automix"), SAMPLES).await;
        let s = time(&client, &shadow_proxy, &body("automix"), SAMPLES).await;
        let shadow_rows = std::fs::read_to_string(&rows).map_or(0, |t| t.lines().count());
        let _ = std::fs::remove_file(&rows);
        println!("requests: {SAMPLES} each, sequential, loopback");
        report("direct", &d);
        report("proxy", &p);
        report("proxy+shadow", &s);
        println!(
            "overhead median {:>9.1?}  p99 {:>9.1?}",
            pct(&p, 0.5).saturating_sub(pct(&d, 0.5)),
            pct(&p, 0.99).saturating_sub(pct(&d, 0.99))
        );
        println!(
            "shadow on/off: median x{:.2}  p99 x{:.2}  ({shadow_rows} shadow rows over warm-up and samples; the rest skipped at max_concurrency)",
            pct(&s, 0.5).as_secs_f64() / pct(&p, 0.5).as_secs_f64(),
            pct(&s, 0.99).as_secs_f64() / pct(&p, 0.99).as_secs_f64()
        );
    });
}
