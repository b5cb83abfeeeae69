//! The load run behind `cargo xtask load`: `automix serve` as its own process in front of
//! two fake upstreams on loopback, 100 concurrent clients for a bounded time, every request
//! with its own bearer token (so 50,000+ distinct tokens) and a unique marker the fake
//! echoes back. Prints throughput, p50/p99, errors, mixed-up replies and the server's RSS
//! before and after; exits non-zero on any error, mix-up or RSS growth over 32 MB.
//!
//! `cargo run --release -p automix-cli --example load -- <automix binary> [seconds]`

use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use automix_llm::fake_server::FakeOpenAi;
use serde_json::json;

const CLIENTS: usize = 100;
const MAX_RSS_GROWTH_KB: u64 = 32 * 1024;

fn rss_kb(pid: u32) -> Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .context("no VmRSS")
}

#[tokio::main]
async fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let binary = args
        .first()
        .context("usage: load <automix binary> [seconds]")?;
    let seconds: u64 = args.get(1).map_or(Ok(20), |s| s.parse())?;
    let small = FakeOpenAi::start(vec![]).await?;
    let large = FakeOpenAi::start(vec![]).await?;
    let dir = std::env::temp_dir().join(format!("automix-load-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    std::fs::write(
        dir.join("llm.json"),
        json!({
            "small": {"size": "1B", "input_price": 1.0, "output_price": 1.0, "model": "m-small", "api_endpoint": small.base_url()},
            "large": {"size": "9B", "input_price": 5.0, "output_price": 5.0, "model": "m-large", "api_endpoint": large.base_url()}
        })
        .to_string(),
    )?;
    std::fs::write(
        dir.join("automix.yaml"),
        "data_path:\n  llm_data: llm.json\nautomix:\n  verification_samples: 2\n",
    )?;
    let port = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    let mut child = Command::new(binary)
        .args(["--config", "automix.yaml", "serve", "--no-policy"])
        .args(["--bind", &format!("127.0.0.1:{port}")])
        .args(["--per-client-concurrency", "256"])
        .current_dir(&dir)
        .stderr(Stdio::null())
        .spawn()
        .with_context(|| format!("starting {binary}"))?;
    let base = format!("http://127.0.0.1:{port}");
    let client = reqwest::Client::new();
    let mut up = false;
    for _ in 0..200 {
        if client.get(format!("{base}/health")).send().await.is_ok() {
            up = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    if !up {
        let _ = child.kill();
        bail!("automix serve did not come up");
    }
    let rss_before = rss_kb(child.id())?;
    let next = Arc::new(AtomicU64::new(0));
    let errors = Arc::new(AtomicU64::new(0));
    let mixed = Arc::new(AtomicU64::new(0));
    let deadline = Instant::now() + Duration::from_secs(seconds);
    let started = Instant::now();
    let tasks: Vec<_> = (0..CLIENTS)
        .map(|_| {
            let (client, base) = (client.clone(), base.clone());
            let (next, errors, mixed) = (next.clone(), errors.clone(), mixed.clone());
            tokio::spawn(async move {
                let mut latencies = Vec::new();
                while Instant::now() < deadline {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    let marker = format!("marker-{i}-end");
                    let sent = Instant::now();
                    let reply = client
                        .post(format!("{base}/v1/chat/completions"))
                        .bearer_auth(format!("token-{i}"))
                        .json(&json!({"model": "automix", "messages": [{"role": "user", "content": marker}]}))
                        .send()
                        .await;
                    let body = match reply {
                        Ok(r) if r.status().is_success() => r.json::<serde_json::Value>().await.ok(),
                        _ => None,
                    };
                    latencies.push(sent.elapsed());
                    match body {
                        None => {
                            errors.fetch_add(1, Ordering::Relaxed);
                        }
                        Some(b) => {
                            let content = b["choices"][0]["message"]["content"].as_str().unwrap_or("");
                            if !content.contains(&marker) {
                                mixed.fetch_add(1, Ordering::Relaxed);
                            }
                        }
                    }
                }
                latencies
            })
        })
        .collect();
    let mut latencies = Vec::new();
    for t in tasks {
        latencies.extend(t.await?);
    }
    let elapsed = started.elapsed();
    let rss_after = rss_kb(child.id())?;
    let _ = child.kill();
    let _ = child.wait();
    latencies.sort();
    let at = |q: f64| latencies[((latencies.len() - 1) as f64 * q) as usize];
    let (errors, mixed) = (
        errors.load(Ordering::Relaxed),
        mixed.load(Ordering::Relaxed),
    );
    println!("| load ({CLIENTS} clients, {seconds} s, one bearer token per request) | value |");
    println!("|---|---|");
    println!("| requests | {} |", latencies.len());
    println!("| distinct bearer tokens | {} |", latencies.len());
    println!(
        "| throughput | {:.0} req/s |",
        latencies.len() as f64 / elapsed.as_secs_f64()
    );
    println!(
        "| p50 / p99 latency | {:.1} ms / {:.1} ms |",
        at(0.5).as_secs_f64() * 1e3,
        at(0.99).as_secs_f64() * 1e3
    );
    println!("| errors | {errors} |");
    println!("| mixed-up replies | {mixed} |");
    println!(
        "| server RSS before → after | {} MB → {} MB |",
        rss_before / 1024,
        rss_after / 1024
    );
    if errors > 0 || mixed > 0 {
        bail!("{errors} errors, {mixed} mixed-up replies");
    }
    if rss_after > rss_before + MAX_RSS_GROWTH_KB {
        bail!("server RSS grew from {rss_before} kB to {rss_after} kB");
    }
    Ok(())
}
