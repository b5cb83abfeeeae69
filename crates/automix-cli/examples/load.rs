//! The load run behind `cargo xtask load`: `automix serve` as its own process in front of
//! two fake upstreams on loopback, 100 concurrent clients for a bounded time, every request
//! with its own bearer token (so 50,000+ distinct tokens) and a unique marker the fake
//! echoes back. Prints throughput, p50/p99, errors, mixed-up replies and the server's RSS
//! before and after; exits non-zero on any error, mix-up or RSS growth over 32 MB.
//!
//! Then, where redis-server is installed, the shared belief's phases: a cascade trained on
//! the bundled rows, its online belief in Redis, replies scored through feedback, with
//! Redis answering and then stalled; the throughput of both is printed side by side.
//!
//! `cargo run --release -p automix-cli --example load -- <automix binary> [seconds]`

use std::path::Path;
use std::process::{Child, Command, Stdio};
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

/// What one load phase measured.
struct Phase {
    latencies: Vec<Duration>,
    elapsed: Duration,
    errors: u64,
    mixed: u64,
    feedback_refused: u64,
}

impl Phase {
    fn throughput(&self) -> f64 {
        self.latencies.len() as f64 / self.elapsed.as_secs_f64()
    }

    fn at(&self, q: f64) -> Duration {
        self.latencies[((self.latencies.len() - 1) as f64 * q) as usize]
    }
}

/// `automix serve` in `dir` with `args`, once `/health` answers.
async fn start_serve(binary: &str, dir: &Path, args: &[&str]) -> Result<(Child, String)> {
    let port = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    let mut child = Command::new(binary)
        .args(["--config", "automix.yaml", "serve"])
        .args(args)
        .args(["--bind", &format!("127.0.0.1:{port}")])
        .args(["--per-client-concurrency", "256"])
        .current_dir(dir)
        .stderr(Stdio::null())
        .spawn()
        .with_context(|| format!("starting {binary}"))?;
    let base = format!("http://127.0.0.1:{port}");
    let client = reqwest::Client::new();
    for _ in 0..200 {
        if client.get(format!("{base}/health")).send().await.is_ok() {
            return Ok((child, base));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let _ = child.kill();
    bail!("automix serve did not come up")
}

/// [`CLIENTS`] clients for `seconds`, each request with its own bearer token and marker;
/// with `feedback`, every fourth reply is scored too.
async fn drive(base: &str, seconds: f64, feedback: bool) -> Result<Phase> {
    let client = reqwest::Client::new();
    let next = Arc::new(AtomicU64::new(0));
    let errors = Arc::new(AtomicU64::new(0));
    let mixed = Arc::new(AtomicU64::new(0));
    let refused = Arc::new(AtomicU64::new(0));
    let deadline = Instant::now() + Duration::from_secs_f64(seconds);
    let started = Instant::now();
    let tasks: Vec<_> = (0..CLIENTS)
        .map(|_| {
            let (client, base) = (client.clone(), base.to_owned());
            let (next, errors, mixed, refused) =
                (next.clone(), errors.clone(), mixed.clone(), refused.clone());
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
                    let Some(b) = body else {
                        errors.fetch_add(1, Ordering::Relaxed);
                        continue;
                    };
                    let content = b["choices"][0]["message"]["content"].as_str().unwrap_or("");
                    if !content.contains(&marker) {
                        mixed.fetch_add(1, Ordering::Relaxed);
                    }
                    if feedback && i % 4 == 0 {
                        let scored = client
                            .post(format!("{base}/v1/automix/feedback"))
                            .json(&json!({"id": b["id"], "score": i % 8 == 0}))
                            .send()
                            .await;
                        if !scored.is_ok_and(|r| r.status().is_success()) {
                            refused.fetch_add(1, Ordering::Relaxed);
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
    latencies.sort();
    Ok(Phase {
        latencies,
        elapsed: started.elapsed(),
        errors: errors.load(Ordering::Relaxed),
        mixed: mixed.load(Ordering::Relaxed),
        feedback_refused: refused.load(Ordering::Relaxed),
    })
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
    let (mut child, base) = start_serve(binary, &dir, &["--no-policy"]).await?;
    let rss_before = rss_kb(child.id())?;
    let phase = drive(&base, seconds as f64, false).await?;
    let rss_after = rss_kb(child.id())?;
    let _ = child.kill();
    let _ = child.wait();
    let (errors, mixed) = (phase.errors, phase.mixed);
    println!("| load ({CLIENTS} clients, {seconds} s, one bearer token per request) | value |");
    println!("|---|---|");
    println!("| requests | {} |", phase.latencies.len());
    println!("| distinct bearer tokens | {} |", phase.latencies.len());
    println!("| throughput | {:.0} req/s |", phase.throughput());
    println!(
        "| p50 / p99 latency | {:.1} ms / {:.1} ms |",
        phase.at(0.5).as_secs_f64() * 1e3,
        phase.at(0.99).as_secs_f64() * 1e3
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
    shared_belief_phases(binary, &dir, seconds).await
}

/// The shared belief through a real redis-server: a cascade plan trained on the bundled
/// rows, the online belief in Redis, every fourth reply scored; half the time Redis answers,
/// half the time it is stalled (SIGSTOP). Nothing on the request path waits on the store,
/// so both halves should show the same throughput. Skipped without redis-server.
async fn shared_belief_phases(binary: &str, dir: &Path, seconds: u64) -> Result<()> {
    let Some(redis) = RedisServer::start()? else {
        println!("\n(no redis-server: the shared-belief phases are skipped)");
        return Ok(());
    };
    let upstreams = [
        FakeOpenAi::start(vec![]).await?,
        FakeOpenAi::start(vec![]).await?,
        FakeOpenAi::start(vec![]).await?,
    ];
    let names = ["smollm2-135m", "qwen2.5-coder-0.5b", "qwen2.5-coder-1.5b"];
    let mut llm = serde_json::Map::new();
    for (i, (name, up)) in names.iter().zip(&upstreams).enumerate() {
        llm.insert(
            (*name).into(),
            json!({"size": format!("{}B", i + 1), "input_price": 1.0 + i as f64,
                "output_price": 1.0 + i as f64, "model": name, "api_endpoint": up.base_url()}),
        );
    }
    std::fs::write(
        dir.join("llm.json"),
        serde_json::Value::Object(llm).to_string(),
    )?;
    let rows = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../data/routing_rows.jsonl");
    std::fs::write(
        dir.join("automix.yaml"),
        format!(
            "data_path:\n  llm_data: llm.json\n  routing_data_train: {}\n\
             model_path:\n  save_model_path: policy.json\n\
             hparam:\n  verifier_signal: samples\n\
             automix:\n  verification_samples: 2\n  online_belief: true\n  \
             belief_store: redis://127.0.0.1:{}/0\n  belief_store_timeout_ms: 300\n",
            rows.display(),
            redis.port
        ),
    )?;
    let trained = Command::new(binary)
        .args(["--config", "automix.yaml", "train", "--cascade"])
        .current_dir(dir)
        .stdout(Stdio::null())
        .status()?;
    if !trained.success() {
        bail!("automix train --cascade failed");
    }
    let limits = [
        "--feedback-per-minute",
        "100000000",
        "--feedback-weight-per-window",
        "100000000",
    ];
    let (mut child, base) = start_serve(binary, dir, &limits).await?;
    let half = seconds as f64 / 2.0;
    let healthy = drive(&base, half, true).await?;
    redis.signal("-STOP")?;
    let stalled = drive(&base, half, true).await;
    redis.signal("-CONT")?;
    let _ = child.kill();
    let _ = child.wait();
    let stalled = stalled?;
    println!(
        "\n| shared belief in Redis, every 4th reply scored | Redis answering | Redis stalled (SIGSTOP) |"
    );
    println!("|---|---|---|");
    println!(
        "| requests | {} | {} |",
        healthy.latencies.len(),
        stalled.latencies.len()
    );
    println!(
        "| throughput | {:.0} req/s | {:.0} req/s |",
        healthy.throughput(),
        stalled.throughput()
    );
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    println!(
        "| p50 / p99 latency | {:.1} / {:.1} ms | {:.1} / {:.1} ms |",
        ms(healthy.at(0.5)),
        ms(healthy.at(0.99)),
        ms(stalled.at(0.5)),
        ms(stalled.at(0.99))
    );
    println!("| errors | {} | {} |", healthy.errors, stalled.errors);
    println!(
        "| feedback not accepted | {} | {} |",
        healthy.feedback_refused, stalled.feedback_refused
    );
    println!(
        "| stalled / answering throughput | {:.2} | |",
        stalled.throughput() / healthy.throughput()
    );
    let failed = healthy.errors + stalled.errors + healthy.mixed + stalled.mixed;
    if failed > 0 {
        bail!("{failed} failed or mixed-up requests in the shared-belief phases");
    }
    Ok(())
}

/// A redis-server on a free loopback port (killed on drop); `None` when none is installed.
struct RedisServer {
    child: Child,
    port: u16,
}

impl RedisServer {
    fn start() -> Result<Option<Self>> {
        let port = std::net::TcpListener::bind("127.0.0.1:0")?
            .local_addr()?
            .port();
        let Ok(child) = Command::new("redis-server")
            .args([
                "--port",
                &port.to_string(),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
            ])
            .stdout(Stdio::null())
            .spawn()
        else {
            return Ok(None);
        };
        let server = Self { child, port };
        for _ in 0..100 {
            if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
                return Ok(Some(server));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        bail!("redis-server did not start")
    }

    fn signal(&self, sig: &str) -> Result<()> {
        let ok = Command::new("kill")
            .args([sig, &self.child.id().to_string()])
            .status()?
            .success();
        if !ok {
            bail!("kill {sig} failed");
        }
        Ok(())
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        let _ = self.signal("-CONT");
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
