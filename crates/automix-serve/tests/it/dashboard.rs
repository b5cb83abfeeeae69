//! `GET /dashboard` after scripted traffic: the data a person sees, the access rules with
//! auth on, and (where Debian's `chromium` is installed; required in `cargo xtask e2e`) the
//! page as a real headless browser renders it, kept as a screenshot.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use automix::config::Config;
use automix::llm::fake_server::{FakeOpenAi, FakeReply};
use automix_serve::ProxySettings;
use serde_json::{Value, json};

use crate::proxy::{Proxy, calibrated_policy, pair, start_routed};

const CLIENT: &str = "client-key";
const ADMIN: &str = "admin-key-0123456789";

/// A small-model answer and its two verdicts: `sure` = both "Correct" (kept), else both
/// "Incorrect" (escalated).
fn small_turn(sure: bool) -> Vec<FakeReply> {
    let verdict = if sure { "Correct" } else { "Incorrect" };
    vec![
        FakeReply::Completion {
            texts: vec!["the answer is 4".into()],
            logprobs: false,
        },
        FakeReply::Completion {
            texts: vec![verdict.into(), verdict.into()],
            logprobs: false,
        },
    ]
}

/// A calibrated two-model proxy whose small model is sure on `sure` of `n` requests.
async fn routed_proxy(
    n: usize,
    sure: usize,
    settings: ProxySettings,
) -> (Proxy, FakeOpenAi, FakeOpenAi) {
    let script: Vec<FakeReply> = (0..n).flat_map(|i| small_turn(i < sure)).collect();
    let small = FakeOpenAi::start(script).await.unwrap();
    let large = FakeOpenAi::start(vec![]).await.unwrap();
    let config = Config::parse(
        "hparam:\n  routing_method: Calibrated\n  verifier_signal: samples\n  per_task_prior: false\nautomix:\n  verification_samples: 2\n",
        Path::new("dashboard.yaml"),
    )
    .unwrap();
    let policy = calibrated_policy(&config);
    let proxy = start_routed(pair(&small, &large), settings, &config, Some(policy)).await;
    (proxy, small, large)
}

/// Sends `n` requests one after another (the scripted small model answers in order).
async fn traffic(p: &Proxy, n: usize, key: Option<&str>) {
    let client = reqwest::Client::new();
    for i in 0..n {
        let task = if i % 2 == 0 { "math" } else { "trivia" };
        let mut req = client
            .post(format!("{}/v1/chat/completions", p.base))
            .json(&json!({"model": "automix", "automix": {"task": task},
                           "messages": [{"role": "user", "content": format!("q{i}")}]}));
        if let Some(k) = key {
            req = req.bearer_auth(k);
        }
        let resp = req.send().await.unwrap();
        assert_eq!(resp.status(), 200, "{:?}", resp.text().await);
    }
}

async fn get(url: &str, key: Option<&str>, cookie: Option<&str>) -> reqwest::Response {
    let mut req = reqwest::Client::new().get(url);
    if let Some(k) = key {
        req = req.bearer_auth(k);
    }
    if let Some(c) = cookie {
        req = req.header("cookie", c);
    }
    req.send().await.unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn the_data_counts_every_request_by_model_decision_and_task() {
    let (p, _s, _l) = routed_proxy(20, 14, ProxySettings::default()).await;
    traffic(&p, 20, None).await;
    let data: Value = get(&format!("{}/dashboard/data", p.base), None, None)
        .await
        .json()
        .await
        .unwrap();
    let start = &data["since_start"];
    assert_eq!(start["requests"], 20);
    assert_eq!(start["decisions"]["keep"], 14);
    assert_eq!(start["decisions"]["escalate"], 6);
    assert_eq!(start["answered_by"]["small"], 14);
    assert_eq!(start["answered_by"]["large"], 6);
    assert_eq!(start["tasks"]["math"]["requests"], 10);
    assert_eq!(start["recent"], Value::Null, "periods are separate objects");
    assert_eq!(data["recent"]["requests"], 20);
    let names: Vec<&str> = data["models"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["small", "large"]);
    // Verdict shares 1.0 (kept) and 0.0 (escalated) land in the top and bottom bins.
    let bins = start["scores"]["bins"].as_array().unwrap();
    assert_eq!(bins[19], 14);
    assert_eq!(bins[0], 6);
    // The escalations cost more than the small model alone and less than the large alone.
    let cost = &start["cost"];
    let actual = cost["actual"].as_f64().unwrap();
    assert!(actual > cost["always_smallest"].as_f64().unwrap(), "{cost}");
    assert!(actual < cost["always_largest"].as_f64().unwrap(), "{cost}");
    // The calibrated policy's frontier, its operating point and its cut are there to draw.
    assert!(!data["policy"]["frontier"].as_array().unwrap().is_empty());
    assert!(data["policy"]["trained_lambda"].is_number());
    assert_eq!(data["policy"]["cuts"][0]["task"], Value::Null);
    assert!(start["latency"]["keep"]["count"] == 14);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_task_field_that_is_not_a_plain_name_is_a_400_naming_it() {
    let (p, _s, _l) = routed_proxy(1, 1, ProxySettings::default()).await;
    let resp = reqwest::Client::new()
        .post(format!("{}/v1/chat/completions", p.base))
        .json(&json!({"model": "automix", "automix": {"task": "<script>"},
                       "messages": [{"role": "user", "content": "hi"}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 400);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["error"]["param"], "automix.task");
}

#[tokio::test(flavor = "multi_thread")]
async fn with_auth_on_the_dashboard_takes_an_admin_key_or_a_login_session() {
    let settings = ProxySettings {
        client_keys: vec![CLIENT.into()],
        admin_keys: vec![ADMIN.into()],
        ..ProxySettings::default()
    };
    let (p, _s, _l) = routed_proxy(2, 2, settings).await;
    traffic(&p, 2, Some(CLIENT)).await;
    let page = format!("{}/dashboard", p.base);
    let data = format!("{}/dashboard/data", p.base);

    let anonymous = get(&page, None, None).await;
    assert_eq!(anonymous.status(), 401);
    let form = anonymous.text().await.unwrap();
    assert!(form.contains("action=\"/dashboard/login\""), "{form}");
    assert!(!form.contains("small"), "no data before sign-in");
    assert_eq!(get(&data, None, None).await.status(), 401);
    assert_eq!(
        get(&data, Some(CLIENT), None).await.status(),
        401,
        "a client key is not enough"
    );
    assert_eq!(get(&data, Some(ADMIN), None).await.status(), 200);

    let client = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let login = |key: &'static str| {
        client
            .post(format!("{}/dashboard/login", p.base))
            .form(&[("key", key)])
            .send()
    };
    assert_eq!(login("wrong").await.unwrap().status(), 401);
    let ok = login(ADMIN).await.unwrap();
    assert_eq!(ok.status(), 303);
    let set_cookie = ok.headers()["set-cookie"].to_str().unwrap().to_owned();
    assert!(
        set_cookie.contains("HttpOnly") && set_cookie.contains("SameSite=Strict"),
        "{set_cookie}"
    );
    assert!(
        !set_cookie.contains(ADMIN),
        "the cookie never holds the key"
    );
    let cookie = set_cookie.split(';').next().unwrap().to_owned();
    let shown = get(&page, None, Some(&cookie)).await;
    assert_eq!(shown.status(), 200);
    let csp = shown.headers()["content-security-policy"]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(csp.contains("default-src 'none'"), "{csp}");
    let html = shown.text().await.unwrap();
    assert!(html.contains("\"requests\":2"), "the first data is inline");

    let out = client
        .post(format!("{}/dashboard/logout", p.base))
        .header("cookie", &cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(out.status(), 303);
    assert_eq!(
        get(&data, None, Some(&cookie)).await.status(),
        401,
        "the session is over"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn with_auth_on_and_no_admin_key_nobody_sees_the_dashboard() {
    let settings = ProxySettings {
        client_keys: vec![CLIENT.into()],
        ..ProxySettings::default()
    };
    let (p, _s, _l) = routed_proxy(0, 0, settings).await;
    assert_eq!(
        get(&format!("{}/dashboard", p.base), Some(CLIENT), None)
            .await
            .status(),
        403
    );
    let resp = get(&format!("{}/dashboard/data", p.base), Some(CLIENT), None).await;
    assert_eq!(resp.status(), 403);
}

/// Where Debian's chromium is: `AUTOMIX_CHROMIUM`, else `chromium` on the PATH. With
/// `AUTOMIX_REQUIRE_CHROMIUM=1` (set by `cargo xtask e2e`) a missing browser fails.
fn chromium() -> Option<PathBuf> {
    let candidate = std::env::var_os("AUTOMIX_CHROMIUM")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("chromium"));
    let found = Command::new(&candidate)
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    if found {
        return Some(candidate);
    }
    assert!(
        std::env::var_os("AUTOMIX_REQUIRE_CHROMIUM").is_none(),
        "AUTOMIX_REQUIRE_CHROMIUM is set but no chromium runs ({})",
        candidate.display()
    );
    eprintln!("skipping the browser test: no chromium (apt-get install chromium)");
    None
}

/// Runs headless chromium on `url` with `extra` arguments and returns its stdout.
async fn headless(browser: &Path, url: &str, extra: &[String]) -> String {
    let profile = tempfile_dir("automix-chromium");
    let mut cmd = tokio::process::Command::new(browser);
    cmd.args([
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--no-first-run",
        // Without these Chromium keeps dialling out, which a closed network refuses.
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--disable-quic",
        "--virtual-time-budget=3000",
    ])
    .arg(format!("--user-data-dir={}", profile.display()))
    .args(extra)
    .arg(url)
    .kill_on_drop(true);
    let out = tokio::time::timeout(Duration::from_secs(120), cmd.output())
        .await
        .expect("chromium finished")
        .unwrap();
    let _ = std::fs::remove_dir_all(&profile);
    assert!(
        out.status.success(),
        "chromium: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn tempfile_dir(prefix: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("{prefix}-{:016x}", rand::random::<u64>()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

#[tokio::test(flavor = "multi_thread")]
async fn headless_chromium_renders_the_dashboard_after_twenty_requests() {
    let Some(browser) = chromium() else { return };
    let (p, _s, _l) = routed_proxy(20, 14, ProxySettings::default()).await;
    traffic(&p, 20, None).await;
    let url = format!("{}/dashboard", p.base);
    let dom = headless(&browser, &url, &["--dump-dom".into()]).await;
    // What a person sees, after the page's script has drawn it.
    let cards = between(&dom, "id=\"cards\"", "</div></div><section");
    assert!(cards.contains(">20<"), "the request count: {cards}");
    for model in ["small", "large"] {
        assert!(
            dom.contains(&format!(">{model}<")),
            "model {model} named: {dom}"
        );
    }
    let charts = between(&dom, "id=\"chart-models\"", "</section>");
    assert!(
        charts.contains("<svg") && charts.contains("<rect"),
        "a bar chart: {charts}"
    );
    assert!(dom.contains("operating point"), "the frontier is drawn");
    assert!(dom.contains("class=\"cut\""), "the policy's cut is marked");
    assert!(dom.contains("strategy: two-model policy"));
    // The screenshot is kept as a test artefact (README shows it).
    let shot = artefact_dir().join("dashboard.png");
    headless(
        &browser,
        &url,
        &[
            format!("--screenshot={}", shot.display()),
            "--window-size=1400,1500".into(),
            "--hide-scrollbars".into(),
        ],
    )
    .await;
    let png = std::fs::read(&shot).unwrap();
    assert!(
        png.starts_with(b"\x89PNG") && png.len() > 10_000,
        "a real screenshot"
    );
}

/// `target/automix/test-artefacts` of the workspace.
fn artefact_dir() -> PathBuf {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target/automix/test-artefacts");
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// The text of `haystack` from `from` to the next `to` (or its end).
fn between<'a>(haystack: &'a str, from: &str, to: &str) -> &'a str {
    let start = haystack
        .find(from)
        .unwrap_or_else(|| panic!("{from} in {haystack}"));
    let rest = &haystack[start..];
    &rest[..rest.find(to).unwrap_or(rest.len())]
}
