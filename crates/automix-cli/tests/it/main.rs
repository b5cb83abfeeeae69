//! The `automix` binary end to end, offline (one test binary).

#![allow(clippy::unwrap_used, missing_docs)]

#[path = "../../../automix/tests/shared/support.rs"]
mod support;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::{Value, json};

fn automix(args: &[&str], cwd: &Path) -> Output {
    Command::new(env!("CARGO_BIN_EXE_automix"))
        .args(args)
        .current_dir(cwd)
        .output()
        .unwrap()
}

/// Fails the test with the command's stderr unless it exited successfully.
#[track_caller]
fn assert_succeeded(out: &Output) {
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// llm_data naming two scripted upstreams: `small` (cheaper) and `large`.
fn write_llm_data(
    dir: &Path,
    small: &automix_llm::fake_server::FakeOpenAi,
    large: &automix_llm::fake_server::FakeOpenAi,
) {
    let entry = |model: &str, size: &str, price: f64, base: String| {
        json!({"size": size, "input_price": price, "output_price": price, "model": model,
            "api_endpoint": base})
    };
    let data = json!({
        "small": entry("m-small", "1B", 1.0, small.base_url()),
        "large": entry("m-large", "9B", 5.0, large.base_url()),
    });
    std::fs::write(dir.join("llm.json"), data.to_string()).unwrap();
}

/// Two scripted upstreams answering anything, and a project in `temp(name)` routing to
/// them (`llm.json`, and `automix.yaml` with 2 verification samples); the upstreams live
/// as long as the values returned.
async fn fake_pair_project(
    name: &str,
) -> (
    automix_llm::fake_server::FakeOpenAi,
    automix_llm::fake_server::FakeOpenAi,
    PathBuf,
) {
    use automix_llm::fake_server::FakeOpenAi;
    let small = FakeOpenAi::start(vec![]).await.unwrap();
    let large = FakeOpenAi::start(vec![]).await.unwrap();
    let dir = temp(name);
    write_llm_data(&dir, &small, &large);
    std::fs::write(
        dir.join("automix.yaml"),
        "data_path:\n  llm_data: llm.json\nautomix:\n  verification_samples: 2\n",
    )
    .unwrap();
    (small, large, dir)
}

/// `automix serve --config automix.yaml` in `dir` on a free loopback port, with `extra`
/// arguments and one environment variable; its base URL once `/health` answers.
async fn spawn_serve(
    dir: &Path,
    extra: &[&str],
    (key, value): (&str, &str),
    stderr: std::process::Stdio,
) -> (KillOnDrop, String) {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let bind = format!("127.0.0.1:{port}");
    let child = Command::new(env!("CARGO_BIN_EXE_automix"))
        .args(["--config", "automix.yaml", "serve", "--bind", &bind])
        .args(extra)
        .current_dir(dir)
        .env(key, value)
        .stderr(stderr)
        .spawn()
        .unwrap();
    let base = format!("http://{bind}");
    let client = reqwest::Client::new();
    let mut up = false;
    for _ in 0..200 {
        if client.get(format!("{base}/health")).send().await.is_ok() {
            up = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    let child = KillOnDrop(Some(child));
    assert!(up, "automix serve at {base} did not come up");
    (child, base)
}

fn temp(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("automix-cli-{}-{name}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Rows in the collected format: confident small answers tend to be right.
fn write_rows(path: &Path) {
    write_rows_of(path, 240, |i| f64::from(i % 9) / 8.0);
}

/// `rows` rows whose verifier confidence (votes and logprob alike) is `p(i)`; every fourth
/// is a test row.
fn write_rows_of(path: &Path, rows: u32, p: impl Fn(u32) -> f64) {
    let mut out = String::new();
    for i in 0..rows {
        let p = p(i);
        let small_right = f64::from(i * 7919 % 100) / 100.0 < p;
        let large_right = i % 5 != 0;
        let run = |model: &str, right: bool, verified: bool| {
            let mut r = json!({
                "model": model, "answer": "x", "normalised_answer": "x",
                "score": if right { 1.0 } else { 0.0 },
                "tokens": {"prompt": 100, "completion": 3},
                "cost": if model == "small" { 1e-6 } else { 1e-5 }, "latency_ms": 3
            });
            if verified {
                r["verification"] = json!({
                    "samples": 8, "correct": (p * 8.0) as u32, "incorrect": 8 - (p * 8.0) as u32,
                    "unparsed": 0, "p_ver": p, "logprob_p": p, "logprob_source": "logprobs",
                    "tokens": {"prompt": 300, "completion": 8}, "cost": 3e-7
                });
            }
            r
        };
        let row = json!({
            "id": format!("r{i}"), "task_name": if i % 2 == 0 { "mmlu" } else { "arc" },
            "metric": "em_mc", "query": "q", "ground_truth": "B",
            "split": if i % 4 == 0 { "test" } else { "train" },
            "models": [run("small", small_right, true), run("large", large_right, false)]
        });
        out.push_str(&row.to_string());
        out.push('\n');
    }
    std::fs::write(path, out).unwrap();
}

fn write_config(dir: &Path, extra: &str) -> PathBuf {
    let path = dir.join("automix.yaml");
    std::fs::write(
        &path,
        format!(
            "data_path:\n  routing_data_train: rows.jsonl\nmodel_path:\n  save_model_path: out/policy.json\n  engine_small: small\n  engine_large: large\nhparam:\n  routing_method: ExactPOMDP\n{extra}"
        ),
    )
    .unwrap();
    path
}

#[test]
fn train_then_eval_with_table_json_and_plots() {
    let dir = temp("train");
    write_rows(&dir.join("rows.jsonl"));
    write_config(&dir, "");
    let out = automix(&["--config", "automix.yaml", "train"], &dir);
    assert_succeeded(&out);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("trained ExactPOMDP"), "{text}");
    // The signal by the name the config spells it.
    assert!(text.contains("→ large, signal samples\n"), "{text}");
    let policy: Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("out/policy.json")).unwrap())
            .unwrap();
    assert_eq!(policy["small_model"], "small");
    assert_eq!(policy["policy"]["method"]["kind"], "ExactPomdp");

    let out = automix(
        &["--config", "automix.yaml", "eval", "--plot", "out/frontier"],
        &dir,
    );
    assert_succeeded(&out);
    let text = String::from_utf8_lossy(&out.stdout);
    for want in [
        "method",
        "Threshold",
        "POMDP",
        "ExactPOMDP",
        "always-small",
        "always-large",
        "oracle",
        "ΔIBC",
    ] {
        assert!(text.contains(want), "{want} missing in\n{text}");
    }
    let png = std::fs::read(dir.join("out/frontier.png")).unwrap();
    assert_eq!(&png[..4], b"\x89PNG");
    // The PNG carries text: ink where the tick labels, the axis description and the title
    // go, strips a plot without a font leaves blank (its data area starts at the margin).
    let ink = png_ink(&png);
    assert!(
        ink(25..65, 100..500) > 100,
        "no y-axis tick labels in the PNG"
    );
    assert!(
        ink(300..600, 563..598) > 50,
        "no x-axis description in the PNG"
    );
    assert!(ink(170..730, 15..45) > 100, "no title in the PNG");
    let svg = std::fs::read_to_string(dir.join("out/frontier.svg")).unwrap();
    assert!(svg.contains("<svg") && svg.contains("oracle"));

    let out = automix(
        &["--config", "automix.yaml", "--json", "eval", "--cascade"],
        &dir,
    );
    let both: Value = serde_json::from_slice(&out.stdout).unwrap();
    let cascade = &both["cascade"];
    let lead = &cascade["cross_validation"]["lead_over_fixed"];
    assert!(
        lead[0].is_f64() && lead[1].as_f64().unwrap() >= 0.0,
        "{lead}"
    );
    let names: Vec<&str> = cascade["lines"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        vec![
            "POMDP cascade",
            "threshold 0.7",
            "only small",
            "only large",
            "oracle"
        ]
    );
    let report = &both["two_model"];
    assert_eq!(report["test_rows"], 60);
    let out = automix(&["--config", "automix.yaml", "train", "--cascade"], &dir);
    assert_succeeded(&out);
    let text = String::from_utf8_lossy(&out.stdout);
    let check = text
        .lines()
        .find(|l| l.contains("cascade against the best fixed model, small ("))
        .unwrap_or_else(|| panic!("{text}"));
    assert!(
        check.contains("out of fold the cascade leads it by") && check.contains("standard error"),
        "{check}"
    );
    let lines = report["lines"].as_array().unwrap();
    let oracle = lines.iter().find(|l| l["name"] == "oracle").unwrap();
    let small = lines.iter().find(|l| l["name"] == "always-small").unwrap();
    assert!(oracle["quality"].as_f64().unwrap() >= small["quality"].as_f64().unwrap());
}

/// `eval --compare-signals`: one line per signal the rows carry, then their fusion, under
/// columns named for the config's method; the same lines in JSON. A method that is not
/// cross-validated has no fusion to compare, and the table says so.
#[test]
fn eval_compares_every_signal_the_rows_carry() {
    let dir = temp("compare");
    write_rows(&dir.join("rows.jsonl"));
    let config = write_config(&dir, "");
    let exact = std::fs::read_to_string(&config).unwrap();
    std::fs::write(&config, exact.replace("ExactPOMDP", "auto")).unwrap();
    let args = [
        "--config",
        "automix.yaml",
        "eval",
        "--compare-signals",
        "--resplits",
        "2",
    ];
    let out = automix(&args, &dir);
    assert_succeeded(&out);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("every signal over 2 random re-splits of all 240 rows"),
        "{text}"
    );
    let mut lines = text.lines().skip(1);
    let header = lines.next().unwrap_or_default();
    for column in ["signal", "AUC", "ECE", "unknown", "auto", "Threshold"] {
        assert!(header.contains(column), "{header}");
    }
    let signals: Vec<&str> = lines.filter_map(|l| l.split_whitespace().next()).collect();
    assert_eq!(signals, ["samples", "logprob", "fused"], "{text}");
    let mut json_args = vec!["--config", "automix.yaml", "--json"];
    json_args.extend(&args[2..]);
    let out = automix(&json_args, &dir);
    assert_succeeded(&out);
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    let signals = v["signals"].as_array().unwrap();
    assert_eq!(signals.len(), 3);
    assert!(signals[0]["calibration"]["auc"].as_f64().is_some(), "{v}");
    assert_eq!(signals[0]["method"]["name"], "auto");
    assert_eq!(signals[1]["threshold"]["name"], "Threshold");
    let splits = signals[0]["method"]["per_split"].as_array().unwrap();
    assert_eq!(splits.len(), 2);
    assert_eq!(signals[2]["signal"], "fused");
    assert!(signals[2]["threshold"].is_null());
    std::fs::write(&config, exact).unwrap();
    let out = automix(&args, &dir);
    assert_succeeded(&out);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("no fused line: hparam.fuse_signals needs routing_method auto or Calibrated"),
        "{text}"
    );
    // No re-split is no comparison: refused by the flag, not an empty table.
    let out = automix(&[&args[..4], &["--resplits", "0"]].concat(), &dir);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("--resplits"), "{err}");
    // It re-splits all rows and plots nothing: held-out rows or a plot are refused, not ignored.
    let out = automix(&[&args[..], &["--plot", "p"]].concat(), &dir);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("cannot be used with"),
        "{err}"
    );
}

/// A logprob with more distinct values than the fit's levels trains on quantile groups, and
/// `train` says so, in its report and in the policy's summary.
#[test]
fn a_continuous_confidence_trains_on_quantile_groups_and_says_so() {
    let dir = temp("pooled");
    let p = |i: u32| f64::from((i * 7919) % 2999) / 2998.0;
    write_rows_of(&dir.join("rows.jsonl"), 3000, p);
    let config = write_config(&dir, "  verifier_signal: logprob\n");
    let text = std::fs::read_to_string(&config).unwrap();
    std::fs::write(&config, text.replace("ExactPOMDP", "Calibrated")).unwrap();
    let out = automix(&["--config", "automix.yaml", "train"], &dir);
    assert_succeeded(&out);
    let mut train: Vec<u64> = (0..3000)
        .filter(|i| i % 4 != 0)
        .map(|i| p(i).to_bits())
        .collect();
    train.sort_unstable();
    train.dedup();
    let policy: Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("out/policy.json")).unwrap())
            .unwrap();
    let pooled = &policy["policy"]["summary"]["cross_validation"]["pooled"];
    assert_eq!(pooled["distinct"], json!(train.len()), "{policy:#}");
    let groups = pooled["groups"].as_u64().unwrap();
    assert!((1..train.len() as u64 / 2).contains(&groups), "{groups}");
    let text = String::from_utf8_lossy(&out.stdout);
    let line = format!(
        "{} distinct confidences fitted as {groups} quantile groups",
        train.len()
    );
    assert!(text.contains(&line), "{text}");
}

#[test]
fn train_says_when_token_costs_price_old_and_new_rows_differently() {
    let dir = temp("pricing");
    let rows = dir.join("rows.jsonl");
    write_rows(&rows);
    // Every other row re-collected with the per-signal breakdown.
    let text = std::fs::read_to_string(&rows).unwrap();
    let mixed: Vec<String> = (text.lines().enumerate())
        .map(|(i, line)| {
            let mut row: Value = serde_json::from_str(line).unwrap();
            if i % 2 == 0 {
                row["models"][0]["verification"]["signal_costs"] =
                    json!({"samples": 2e-7, "logprob": 1e-7});
            }
            row.to_string()
        })
        .collect();
    std::fs::write(&rows, mixed.join("\n") + "\n").unwrap();
    write_config(&dir, "  cost_mode: tokens\n");
    let out = automix(&["--config", "automix.yaml", "train"], &dir);
    assert_succeeded(&out);
    let text = String::from_utf8_lossy(&out.stdout);
    // Training rows are those with i % 4 != 0: 60 even ones re-collected, 120 odd ones old.
    let line = "verification cost: 60 verified runs charged per signal, 120 their whole cost";
    assert!(text.contains(line), "{text}");
    assert!(text.contains("note: the rows mix both"), "{text}");
}

/// `train` with `fuse_signals` says whether the fusion routes and what the nested check
/// found: on rows where each signal sees half the story, it routes, and held out it leads.
#[test]
fn train_reports_the_fusion_and_its_nested_check() {
    let dir = temp("fused");
    let rows: Vec<String> = support::two_signal_rows(400, "small", "large")
        .iter()
        .map(|r| serde_json::to_string(r).unwrap())
        .collect();
    std::fs::write(dir.join("rows.jsonl"), rows.join("\n") + "\n").unwrap();
    std::fs::write(
        dir.join("automix.yaml"),
        "data_path:\n  routing_data_train: rows.jsonl\nmodel_path:\n  save_model_path: out/policy.json\n  engine_small: small\n  engine_large: large\nhparam:\n  routing_method: auto\n  fuse_signals: [samples, answer_logprob]\n",
    )
    .unwrap();
    let out = automix(&["--config", "automix.yaml", "train", "--all-rows"], &dir);
    assert_succeeded(&out);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("(out of fold ")
            && text.contains("used: it beats every signal alone out of fold and held out"),
        "{text}"
    );
    let nested = text
        .lines()
        .find(|l| l.contains("nested check, 5 held-out folds: fused "))
        .unwrap_or_else(|| panic!("{text}"));
    let means: Vec<f64> = nested
        .split_whitespace()
        .filter_map(|w| w.parse().ok())
        .collect();
    assert!(means.len() == 3 && means[1] > means[2], "{nested}");
}

#[test]
fn bad_config_and_bad_rows_fail_with_file_and_line() {
    let dir = temp("bad");
    let cfg = write_config(&dir, "  num_binz: 3\n");
    let out = automix(&["--config", cfg.to_str().unwrap(), "train"], &dir);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&format!(
            "{}:9: unknown key `num_binz`; did you mean `num_bins`?",
            cfg.display()
        )),
        "{err}"
    );
    write_config(&dir, "");
    std::fs::write(dir.join("rows.jsonl"), "{\"id\": 1}\n").unwrap();
    let out = automix(&["--config", "automix.yaml", "train"], &dir);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("rows.jsonl:1: "), "{err}");
}

#[tokio::test(flavor = "multi_thread")]
async fn route_a_batch_against_fake_openai_servers() {
    let (small, _large, dir) = fake_pair_project("route").await;
    std::fs::write(
        dir.join("q.jsonl"),
        "{\"task_name\":\"mmlu\",\"query\":\"Pick one\",\"ground_truth\":\"A\",\"metric\":\"em_mc\",\"choices\":\"['x','y']\"}\n{\"task_name\":\"trivia_qa\",\"query\":\"Capital of France?\",\"ground_truth\":\"Paris\",\"metric\":\"f1_score\"}\n",
    )
    .unwrap();
    let dir2 = dir.clone();
    let out = tokio::task::spawn_blocking(move || {
        automix(
            &[
                "--config",
                "automix.yaml",
                "--json",
                "route",
                "--no-policy",
                "--batch",
                "q.jsonl",
            ],
            &dir2,
        )
    })
    .await
    .unwrap();
    assert_succeeded(&out);
    let stdout = String::from_utf8_lossy(&out.stdout);
    for line in stdout.lines() {
        // Each key once in a routed query's object (serde_json keeps the last of a repeat).
        assert_eq!(line.matches("\"id\":").count(), 1, "{line}");
    }
    let lines: Vec<Value> = stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 2);
    for l in &lines {
        assert!(
            l["model_name"] == "small" || l["model_name"] == "large",
            "{l}"
        );
        assert_eq!(l["models_tried"][0], "small");
        assert!(l["cost"].as_f64().unwrap() > 0.0);
        assert!(
            ["keep", "escalate"].contains(&l["decision"].as_str().unwrap()),
            "{l}"
        );
        assert!(l["task_performance"].is_number());
    }
    // The echo server saw our answer prompt and (n=2, one request) verification prompt.
    assert!(small.calls() >= 4);
    // Without --json the batch ends on what routing did.
    let dir3 = dir.clone();
    let out = tokio::task::spawn_blocking(move || {
        automix(
            &[
                "--config",
                "automix.yaml",
                "route",
                "--no-policy",
                "--batch",
                "q.jsonl",
                "--compare",
            ],
            &dir3,
        )
    })
    .await
    .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("2 queries routed (0 failed): answered by"),
        "{text}"
    );
    assert!(
        text.contains("on the 2 queries with ground truth"),
        "{text}"
    );
    // --compare asks each model alone on the same queries and sets routing against them.
    assert!(text.contains("compared on the same 2 queries:"), "{text}");
    for line in ["AutoMix", "always small", "always large"] {
        assert!(
            text.lines()
                .any(|l| l.trim_start().starts_with(line) && l.contains("cost/query")),
            "{line}: {text}"
        );
    }
    assert!(text.contains("AutoMix costs"), "{text}");
    // With --json, --compare makes one object: the items and the comparison.
    let dir4 = dir.clone();
    let out = tokio::task::spawn_blocking(move || {
        automix(
            &[
                "--config",
                "automix.yaml",
                "--json",
                "route",
                "--no-policy",
                "--batch",
                "q.jsonl",
                "--compare",
            ],
            &dir4,
        )
    })
    .await
    .unwrap();
    let both: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(both["items"].as_array().unwrap().len(), 2);
    let names: Vec<&str> = both["comparison"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["AutoMix", "always small", "always large"]);
    assert!(both["comparison"][2]["cost_per_query"].as_f64().unwrap() > 0.0);
}

/// `automix serve` as its own process: 100 concurrent requests from this process over
/// loopback, none lost, duplicated or mixed up; SIGHUP reloads without dropping the server;
/// SIGTERM drains and exits cleanly.
#[tokio::test(flavor = "multi_thread")]
async fn serve_as_a_second_process_under_load_then_reload_and_drain() {
    let (_small, _large, dir) = fake_pair_project("serve").await;
    let (child, base) = spawn_serve(
        &dir,
        &["--no-policy"],
        ("AUTOMIX_PROXY_KEYS", "k1,k2"),
        std::process::Stdio::piped(),
    )
    .await;
    let client = reqwest::Client::new();
    let tasks: Vec<_> = (0..100)
        .map(|i| {
            let client = client.clone();
            let url = format!("{base}/v1/chat/completions");
            tokio::spawn(async move {
                let marker = format!("load-{i}-marker");
                let body =
                    json!({"model": "automix", "messages": [{"role": "user", "content": marker}]});
                let resp = client
                    .post(url)
                    .bearer_auth(if i % 2 == 0 { "k1" } else { "k2" })
                    .json(&body)
                    .send()
                    .await
                    .unwrap();
                assert_eq!(resp.status(), 200);
                let v: Value = resp.json().await.unwrap();
                (
                    marker,
                    v["choices"][0]["message"]["content"]
                        .as_str()
                        .unwrap()
                        .to_owned(),
                    v["id"].as_str().unwrap().to_owned(),
                )
            })
        })
        .collect();
    let mut ids = std::collections::HashSet::new();
    for t in tasks {
        let (marker, content, id) = t.await.unwrap();
        assert!(content.contains(&marker), "{marker} got {content}");
        assert!(ids.insert(id));
    }
    let kill = |signal: &str| {
        Command::new("kill")
            .args([signal, &child.id().to_string()])
            .status()
            .unwrap()
    };
    assert!(kill("-HUP").success());
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    let resp = client
        .post(format!("{base}/v1/chat/completions"))
        .bearer_auth("k1")
        .json(
            &json!({"model": "automix", "messages": [{"role": "user", "content": "after reload"}]}),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let unauthorised = client
        .post(format!("{base}/v1/chat/completions"))
        .json(&json!({"model": "automix", "messages": [{"role": "user", "content": "x"}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(unauthorised.status(), 401);
    assert!(kill("-TERM").success());
    let child = child.into_inner();
    let status = tokio::task::spawn_blocking(move || child.wait_with_output())
        .await
        .unwrap()
        .unwrap();
    assert!(status.status.success());
    let log = String::from_utf8_lossy(&status.stderr);
    assert!(
        log.contains("policy reloaded") && log.contains("draining"),
        "{log}"
    );
    assert!(
        !log.contains("k1") && !log.contains("k2"),
        "client keys must not be logged: {log}"
    );
}

/// `calibrate` on the bundled rows: the λ family of the default policy, and the λ whose
/// escalation share on the training rows stays within the one asked for.
#[test]
fn calibrate_finds_the_lambda_of_an_escalation_share() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let dir = temp("calibrate");
    let policy = dir.join("policy.json");
    let policy_arg = policy.to_str().unwrap();
    let out = automix(
        &[
            "--config",
            "configs/local.yaml",
            "train",
            "--all-rows",
            "--output",
            policy_arg,
        ],
        &root,
    );
    assert_succeeded(&out);
    // `hparam.verbose` prints what training weighed, the λ family included.
    let verbose_config = dir.join("verbose.yaml");
    let local = std::fs::read_to_string(root.join("configs/local.yaml")).unwrap();
    std::fs::write(
        &verbose_config,
        local
            .replace("verbose: false", "verbose: true")
            .replace("../", &format!("{}/", root.display())),
    )
    .unwrap();
    let verbose = automix(
        &[
            "--config",
            verbose_config.to_str().unwrap(),
            "train",
            "--all-rows",
            "--output",
            policy_arg,
        ],
        &root,
    );
    let text = String::from_utf8_lossy(&verbose.stdout);
    assert!(
        text.contains("detail:") && text.contains("λ family (training rows)"),
        "{text}"
    );
    let out = automix(
        &[
            "--config",
            "configs/local.yaml",
            "--json",
            "calibrate",
            "--policy",
            policy_arg,
            "--escalation-share",
            "0.2",
        ],
        &root,
    );
    assert_succeeded(&out);
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    let table = v["table"].as_array().unwrap();
    assert!(table.len() > 2);
    let chosen = &v["chosen"];
    assert!(chosen["escalation_rate"].as_f64().unwrap() <= 0.2);
    assert!(chosen["lambda"].as_f64().unwrap() > 0.0);
    // No point of the family escalating more while staying within the share was skipped.
    let best = table
        .iter()
        .map(|p| p["escalation_rate"].as_f64().unwrap())
        .filter(|r| *r <= 0.2)
        .fold(0.0, f64::max);
    assert_eq!(chosen["escalation_rate"].as_f64().unwrap(), best);
    let bad = automix(
        &[
            "--config",
            "configs/local.yaml",
            "calibrate",
            "--policy",
            policy_arg,
            "--escalation-share",
            "2",
        ],
        &root,
    );
    assert!(!bad.status.success());
}

/// Counts non-white pixels of a PNG inside `x × y`.
fn png_ink(bytes: &[u8]) -> impl Fn(std::ops::Range<usize>, std::ops::Range<usize>) -> usize {
    let mut reader = png::Decoder::new(std::io::Cursor::new(bytes.to_vec()))
        .read_info()
        .unwrap();
    let mut buf = vec![0; reader.output_buffer_size()];
    let info = reader.next_frame(&mut buf).unwrap();
    let channels = info.color_type.samples();
    let width = info.width as usize;
    move |xs, ys| {
        let mut n = 0;
        for y in ys {
            for x in xs.clone() {
                let i = (y * width + x) * channels;
                if buf[i..i + 3].iter().any(|&c| c < 200) {
                    n += 1;
                }
            }
        }
        n
    }
}

/// The rows of a JSONL file without wall-clock fields, by id: what two runs must agree on.
fn rows_by_id(path: &Path) -> Vec<Value> {
    fn strip(v: &mut Value) {
        match v {
            Value::Object(m) => {
                m.remove("latency_ms");
                m.values_mut().for_each(strip);
            }
            Value::Array(a) => a.iter_mut().for_each(strip),
            _ => {}
        }
    }
    let mut rows: Vec<Value> = std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .map(|l| {
            let mut v: Value = serde_json::from_str(l).unwrap();
            strip(&mut v);
            v
        })
        .collect();
    rows.sort_by(|a, b| a["id"].as_str().cmp(&b["id"].as_str()));
    rows
}

/// Collection split over two shards and merged gives the rows of one unsharded run (on the
/// bundled query set against scripted upstreams); overlapping shards are refused; routing a
/// batch by shards covers every query once.
#[tokio::test(flavor = "multi_thread")]
async fn sharded_collection_merges_into_the_unsharded_rows() {
    use automix_llm::fake_server::FakeOpenAi;
    let small = FakeOpenAi::start(vec![]).await.unwrap();
    let large = FakeOpenAi::start(vec![]).await.unwrap();
    let dir = temp("shards");
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    write_llm_data(&dir, &small, &large);
    let queries = root.join("data/llmrouter_query_train.jsonl");
    std::fs::write(
        dir.join("automix.yaml"),
        format!(
            "data_path:\n  llm_data: llm.json\n  query_data_train: {}\n  routing_data_train: rows.jsonl\n\
             automix:\n  verification_samples: 2\ncollect:\n  per_task: 3\n",
            queries.display()
        ),
    )
    .unwrap();
    let run = |args: Vec<String>| {
        let dir = dir.clone();
        async move {
            let out = tokio::task::spawn_blocking(move || {
                let args: Vec<&str> = args.iter().map(String::as_str).collect();
                automix(&args, &dir)
            })
            .await
            .unwrap();
            (
                out.status.success(),
                format!(
                    "{}{}",
                    String::from_utf8_lossy(&out.stdout),
                    String::from_utf8_lossy(&out.stderr)
                ),
            )
        }
    };
    let cmd = |s: &str| -> Vec<String> {
        ["--config", "automix.yaml"]
            .into_iter()
            .chain(s.split(' '))
            .map(String::from)
            .collect()
    };
    for args in [
        "collect --output full.jsonl",
        "collect --shard 1/2",
        "collect --shard 2/2",
        "merge --output merged.jsonl rows.shard-1-of-2.jsonl rows.shard-2-of-2.jsonl",
    ] {
        let (ok, log) = run(cmd(args)).await;
        assert!(ok, "{args}: {log}");
        if args.starts_with("collect --output") {
            // What each signal's calls cost, per verified answer of the small model.
            let costs = log
                .lines()
                .skip_while(|l| !l.starts_with("verification cost per verified answer"))
                .nth(1)
                .unwrap_or_default();
            assert!(
                costs.contains("samples") && costs.contains("answer_logprob 0"),
                "{log}"
            );
            // Tokens per model, in words.
            let tokens = log
                .lines()
                .find(|l| l.starts_with("tokens: "))
                .unwrap_or_default();
            assert!(tokens.contains("small ") && !tokens.contains('{'), "{log}");
        }
    }
    let full = rows_by_id(&dir.join("full.jsonl"));
    let one = rows_by_id(&dir.join("rows.shard-1-of-2.jsonl"));
    let two = rows_by_id(&dir.join("rows.shard-2-of-2.jsonl"));
    assert!(full.len() >= 20, "{} rows", full.len());
    assert!(!one.is_empty() && !two.is_empty() && one.len() + two.len() == full.len());
    assert_eq!(rows_by_id(&dir.join("merged.jsonl")), full);
    // Collection samples answers for the answer-consistency signal (k = verification_samples
    // by default), and `train` / `eval` read it.
    for row in &full {
        let v = &row["models"][0]["verification"];
        assert_eq!(v["answer_samples"], 2, "{v}");
        assert!(
            v["answer_consistency"]
                .as_f64()
                .is_some_and(|c| c > 0.0 && c <= 1.0),
            "{v}"
        );
    }
    // And the answer's own token logprobs (the fake upstream's are all −0.5): no call.
    for row in &full {
        let p = row["models"][0]["verification"]["signals"]["answer_logprob"].as_f64();
        assert!(
            p.is_some_and(|p| (p - (-0.5f64).exp()).abs() < 1e-9),
            "{row}"
        );
    }
    for signal in ["answer_consistency", "answer_logprob"] {
        std::fs::write(
            dir.join("sc.yaml"),
            format!(
                "data_path:\n  llm_data: llm.json\n  routing_data_train: full.jsonl\n\
                 model_path:\n  save_model_path: sc_policy.json\n\
                 hparam:\n  routing_method: Threshold\n  verifier_signal: {signal}\n"
            ),
        )
        .unwrap();
        for args in ["train --all-rows", "eval --resplits 2"] {
            let args: Vec<String> = ["--config", "sc.yaml"]
                .into_iter()
                .chain(args.split(' '))
                .map(String::from)
                .collect();
            let (ok, log) = run(args.clone()).await;
            assert!(ok, "{args:?}: {log}");
        }
        let policy: Value =
            serde_json::from_str(&std::fs::read_to_string(dir.join("sc_policy.json")).unwrap())
                .unwrap();
        assert_eq!(policy["verifier_signal"], signal, "{policy}");
    }
    // A shard merged twice overlaps: refused, naming both files.
    let (ok, log) = run(cmd(
        "merge --output bad.jsonl rows.shard-1-of-2.jsonl full.jsonl",
    ))
    .await;
    assert!(!ok && log.contains("in both"), "{log}");
    // A missing shard: refused, counting what is missing.
    let (ok, log) = run(cmd("merge --output bad.jsonl rows.shard-1-of-2.jsonl")).await;
    assert!(!ok && log.contains("have no row in the shards"), "{log}");
    // Routing a batch by shards covers every query once.
    let demo = root.join("data/demo_queries.jsonl").display().to_string();
    let mut ids = Vec::new();
    for s in ["1/2", "2/2"] {
        let args = format!(
            "route --no-policy --batch {demo} --shard {s} --output routed-{}.jsonl",
            &s[..1]
        );
        let (ok, log) = run(cmd(&args)).await;
        assert!(ok, "{args}: {log}");
        let path = dir.join(format!("routed-{}.jsonl", &s[..1]));
        ids.extend(
            rows_by_id(&path)
                .into_iter()
                .map(|r| r["id"].as_str().unwrap().to_owned()),
        );
    }
    let mut unique = ids.clone();
    unique.sort();
    unique.dedup();
    assert_eq!((ids.len(), unique.len()), (8, 8), "{ids:?}");
    // A prompt log without ground truth (one query without a metric either) becomes rows
    // with agreement labels, which train a policy.
    let log: String = [
        r#"{"task_name":"support","query":"How do I reset my password?"}"#,
        r#"{"task_name":"support","query":"Where is my invoice?","metric":"f1_score"}"#,
        r#"{"task_name":"quiz","query":"Pick one","metric":"em_mc","choices":"['x','y']"}"#,
    ]
    .join("\n");
    std::fs::write(dir.join("log.jsonl"), log).unwrap();
    let (ok, log) = run(cmd(
        "collect --unlabelled --queries log.jsonl --output unlabelled.jsonl",
    ))
    .await;
    assert!(ok, "{log}");
    let rows = rows_by_id(&dir.join("unlabelled.jsonl"));
    assert_eq!(rows.len(), 3, "every query of the log: {log}");
    for r in &rows {
        assert_eq!(r["label_source"], "agreement", "{r}");
        assert_eq!(r["models"][1]["score"], 1.0, "the reference: {r}");
        assert_eq!(r["ground_truth"], r["models"][1]["answer"], "{r}");
    }
    let (ok, log) = run(cmd(
        "train --rows unlabelled.jsonl --all-rows --output unlabelled_policy.json",
    ))
    .await;
    assert!(ok, "{log}");
    // Without --unlabelled those queries have no ground truth and are not collected.
    let (ok, log) = run(cmd("collect --queries log.jsonl --output none.jsonl")).await;
    assert!(!ok && log.contains("no queries selected"), "{log}");
}

/// `serve --metrics-bind`: `/metrics` and `/health` on a second address with no key asked,
/// counting the proxy's traffic; the proxy's own `/metrics` still behind the client keys;
/// nothing else on the metrics address.
#[tokio::test(flavor = "multi_thread")]
async fn serve_exposes_metrics_on_a_separate_address() {
    let (_small, _large, dir) = fake_pair_project("metrics-bind").await;
    let free = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let scrape_at = format!("http://{}", free.local_addr().unwrap());
    let metrics_bind = free.local_addr().unwrap().to_string();
    drop(free);
    let (_serve, base) = spawn_serve(
        &dir,
        &["--no-policy", "--metrics-bind", &metrics_bind],
        ("AUTOMIX_PROXY_KEYS", "k1"),
        std::process::Stdio::null(),
    )
    .await;
    let client = reqwest::Client::new();
    let chat = json!({"model": "automix", "messages": [{"role": "user", "content": "q"}]});
    let resp = (client.post(format!("{base}/v1/chat/completions")))
        .bearer_auth("k1")
        .json(&chat)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let keyless = client.get(format!("{base}/metrics")).send().await.unwrap();
    assert_eq!(keyless.status(), 401);
    let scrape = client
        .get(format!("{scrape_at}/metrics"))
        .send()
        .await
        .unwrap();
    assert_eq!(scrape.status(), 200);
    let text = scrape.text().await.unwrap();
    assert!(text.contains("\nautomix_requests_total 1\n"), "{text}");
    let health = client
        .get(format!("{scrape_at}/health"))
        .send()
        .await
        .unwrap();
    assert_eq!(health.status(), 200);
    let elsewhere = (client.post(format!("{scrape_at}/v1/chat/completions")))
        .bearer_auth("k1")
        .json(&chat)
        .send()
        .await
        .unwrap();
    assert_eq!(elsewhere.status(), 404);
    let v: Value = elsewhere.json().await.unwrap();
    assert_eq!(v["error"]["code"], "not_found", "{v}");
}

/// Three `automix serve` processes on loopback share one online belief through a real
/// redis-server: traffic and feedback go through the first only, and all three report the
/// same update count and decision table. (Skipped without redis-server unless
/// `AUTOMIX_REQUIRE_REDIS` is set; `cargo xtask e2e` installs it.)
#[tokio::test(flavor = "multi_thread")]
async fn three_serve_processes_share_one_belief_through_redis() {
    use automix_llm::fake_server::FakeOpenAi;
    let Some(redis) = support::Redis::start() else {
        return;
    };
    let small = FakeOpenAi::start(vec![]).await.unwrap();
    let large = FakeOpenAi::start(vec![]).await.unwrap();
    let dir = temp("replicas");
    write_llm_data(&dir, &small, &large);
    write_rows(&dir.join("rows.jsonl"));
    std::fs::write(
        dir.join("automix.yaml"),
        format!(
            "data_path:\n  llm_data: llm.json\n  routing_data_train: rows.jsonl\n\
             model_path:\n  save_model_path: policy.json\n  engine_small: small\n  engine_large: large\n\
             automix:\n  verification_samples: 2\n  online_belief: true\n  belief_store: {}\n\
             hparam:\n  routing_method: Threshold\n",
            redis.url()
        ),
    )
    .unwrap();
    let out = automix(&["--config", "automix.yaml", "train", "--cascade"], &dir);
    assert_succeeded(&out);
    let mut children = Vec::new();
    let mut bases = Vec::new();
    for _ in 0..3 {
        let (child, base) = spawn_serve(
            &dir,
            &[],
            ("AUTOMIX_ADMIN_KEYS", "admin"),
            std::process::Stdio::null(),
        )
        .await;
        children.push(child);
        bases.push(base);
    }
    let client = reqwest::Client::new();
    let mut ids = Vec::new();
    for i in 0..5 {
        let resp = client
            .post(format!("{}/v1/chat/completions", bases[0]))
            .json(&json!({"model": "automix", "messages": [{"role": "user", "content": format!("q{i}")}]}))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200);
        let v: Value = resp.json().await.unwrap();
        ids.push(v["id"].as_str().unwrap().to_owned());
    }
    for id in &ids {
        let resp = client
            .post(format!("{}/v1/automix/feedback", bases[0]))
            .json(&json!({"id": id, "score": 0}))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200);
    }
    let mut views = Vec::new();
    for base in &bases {
        let v: Value = client
            .get(format!("{base}/admin/belief"))
            .bearer_auth("admin")
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(v["store"], "redis", "{v}");
        assert_eq!(v["updates"], 5, "{base}: {v}");
        views.push(v);
    }
    assert_eq!(views[0]["table"], views[1]["table"]);
    assert_eq!(views[0]["table"], views[2]["table"]);
    for child in children {
        let _ = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status();
        let mut child = child.into_inner();
        let _ = tokio::task::spawn_blocking(move || child.wait()).await;
    }
}

/// `automix serve` with a Redis `belief_store` and a shadow without `rows_path` appends its
/// rows to a Redis stream; `automix traffic export` moves them into a file once, and
/// `automix train --rows` trains on it. A config whose rows go to a file is told to train
/// on that file. (Skipped without redis-server unless `AUTOMIX_REQUIRE_REDIS` is set.)
#[tokio::test(flavor = "multi_thread")]
async fn traffic_export_drains_the_shadow_stream_into_rows_that_train() {
    use automix_llm::fake_server::FakeOpenAi;
    let Some(redis) = support::Redis::start() else {
        return;
    };
    let small = FakeOpenAi::start(vec![]).await.unwrap();
    let large = FakeOpenAi::start(vec![]).await.unwrap();
    let dir = temp("traffic-export");
    write_llm_data(&dir, &small, &large);
    std::fs::write(
        dir.join("automix.yaml"),
        format!(
            "data_path:\n  llm_data: llm.json\n\
             model_path:\n  engine_small: small\n  engine_large: large\n\
             automix:\n  verification_samples: 2\n  belief_store: {}\n  shadow:\n    rate: 1.0\n    max_concurrency: 4\n",
            redis.url()
        ),
    )
    .unwrap();
    let (_serve, base) = spawn_serve(
        &dir,
        &["--no-policy"],
        ("AUTOMIX_ADMIN_KEYS", "admin"),
        std::process::Stdio::inherit(),
    )
    .await;
    let client = reqwest::Client::new();
    for i in 0..3 {
        let resp = client
            .post(format!("{base}/v1/chat/completions"))
            .json(&json!({"model": "automix", "messages": [{"role": "user", "content": format!("q{i}")}]}))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200);
    }
    let mut metrics = String::new();
    for _ in 0..200 {
        let resp = client.get(format!("{base}/metrics")).send().await.unwrap();
        metrics = resp.text().await.unwrap();
        if metrics.contains("automix_shadow_rows 3") {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert!(metrics.contains("automix_shadow_rows 3"), "{metrics}");
    let args = [
        "--config",
        "automix.yaml",
        "traffic",
        "export",
        "--out",
        "traffic.jsonl",
    ];
    let out = automix(&args, &dir);
    let said = String::from_utf8_lossy(&out.stdout);
    assert_succeeded(&out);
    assert!(said.contains("moved 3 rows"), "{said}");
    let again = automix(&args, &dir);
    assert!(String::from_utf8_lossy(&again.stdout).contains("moved 0 rows"));
    assert_eq!(rows_by_id(&dir.join("traffic.jsonl")).len(), 3);
    let train = automix(
        &[
            "--config",
            "automix.yaml",
            "train",
            "--rows",
            "traffic.jsonl",
            "--all-rows",
            "--output",
            "p.json",
        ],
        &dir,
    );
    assert_succeeded(&train);
    // `--label-source` keeps rows by where their labels came from.
    let only = |sources: &str| {
        let args = [
            "--config",
            "automix.yaml",
            "train",
            "--rows",
            "traffic.jsonl",
            "--all-rows",
            "--output",
            "p.json",
            "--label-source",
            sources,
        ];
        let out = automix(&args, &dir);
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    assert!(only("agreement,feedback").0);
    let (ok, err) = only("feedback");
    assert!(
        !ok && err.contains("no rows with label_source feedback"),
        "{err}"
    );
    let (ok, err) = only("vibes");
    assert!(!ok && err.contains("not a label source"), "{err}");

    std::fs::write(
        dir.join("file.yaml"),
        "automix:\n  shadow:\n    rows_path: mine.jsonl\n",
    )
    .unwrap();
    let out = automix(
        &[
            "--config",
            "file.yaml",
            "traffic",
            "export",
            "--out",
            "x.jsonl",
        ],
        &dir,
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("mine.jsonl"), "{err}");
}

/// A child process killed when the test ends, passed or not (a panicking test must not
/// leave a server holding the test's output open), unless taken out to be waited for.
struct KillOnDrop(Option<std::process::Child>);

impl KillOnDrop {
    fn id(&self) -> u32 {
        self.0.as_ref().map_or(0, std::process::Child::id)
    }

    /// The child, no longer killed on drop (the caller stops and waits for it).
    fn into_inner(mut self) -> std::process::Child {
        self.0.take().expect("taken once")
    }
}

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        if let Some(child) = self.0.as_mut() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}
