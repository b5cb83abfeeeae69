//! `cargo xtask quality`: the README's routing-quality tables, regenerated in one run from
//! the bundled data (no models needed): ΔIBC over 10 re-splits on each development dataset
//! and on our own rows, the cascade's net over the same re-splits, and the signal tables
//! (every signal the bundled rows and the 240 signal rows carry, `eval --compare-signals`).

use std::fmt::Write as _;
use std::path::Path;

use anyhow::{Context, Result, bail};
use serde_json::Value;

const SPLITS: &str = "10";
const METHODS: [&str; 4] = ["auto", "Threshold", "ExactPOMDP", "oracle"];

/// Runs `automix --json <args>` (release build) and parses its output.
fn automix_json(root: &Path, args: &[&str]) -> Result<Value> {
    let out = crate::release_run(root)
        .args(["--", "--json"])
        .args(args)
        .output()
        .context("running automix")?;
    if !out.status.success() {
        bail!(
            "automix {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    serde_json::from_slice(&out.stdout).context("automix --json output")
}

fn spread(v: &Value) -> String {
    match (v["mean"].as_f64(), v["sd"].as_f64(), v["worst"].as_f64()) {
        (Some(m), Some(s), Some(w)) => format!("{m:.3} ± {s:.3} (worst {w:.3})"),
        _ => "—".into(),
    }
}

fn resplit_row(label: &str, report: &Value) -> String {
    let lines = report["resplits"].as_array().cloned().unwrap_or_default();
    let cells: Vec<String> = METHODS
        .iter()
        .map(|m| {
            lines
                .iter()
                .find(|l| l["name"] == *m)
                .map_or_else(|| "—".into(), |l| spread(&l["delta_ibc"]))
        })
        .collect();
    format!("| {label} | {} |", cells.join(" | "))
}

/// Prints the tables (and writes them to target/quality-report.md).
pub fn main(root: &Path) -> Result<()> {
    let mut md = String::new();
    writeln!(
        md,
        "| data (10 re-splits) | auto (default) | Threshold (paper) | ExactPOMDP | oracle |"
    )?;
    writeln!(md, "|---|---|---|---|---|")?;
    for task in ["cnli", "coqa", "narrative_qa", "qasper"] {
        let report = automix_json(
            root,
            &[
                "-c",
                "configs/anlp.yaml",
                "eval",
                "--task",
                task,
                "--resplits",
                SPLITS,
            ],
        )?;
        writeln!(
            md,
            "{}",
            resplit_row(&format!("{task} (8B → GPT-5)"), &report)
        )?;
    }
    let local = automix_json(
        root,
        &[
            "-c",
            "configs/local.yaml",
            "eval",
            "--cascade",
            "--resplits",
            SPLITS,
        ],
    )?;
    writeln!(md, "{}", resplit_row("bundled rows (0.5B → 1.5B)", &local))?;
    writeln!(md)?;
    writeln!(
        md,
        "| cascade policy (bundled rows, 10 re-splits) | quality | cost | net = quality − λ·cost |"
    )?;
    writeln!(md, "|---|---|---|---|")?;
    for l in local["cascade_resplits"]
        .as_array()
        .cloned()
        .unwrap_or_default()
    {
        writeln!(
            md,
            "| {} | {:.3} | {:.3} | {} |",
            l["name"].as_str().unwrap_or("?"),
            l["quality"].as_f64().unwrap_or(f64::NAN),
            l["cost"].as_f64().unwrap_or(f64::NAN),
            spread(&l["net"])
        )?;
    }
    for (config, cascade) in [
        ("configs/local.yaml", true),
        ("configs/signals.yaml", false),
    ] {
        writeln!(md)?;
        signal_table(&mut md, root, config, cascade)?;
    }
    print!("{md}");
    let out = root.join("target/quality-report.md");
    std::fs::create_dir_all(root.join("target"))?;
    std::fs::write(&out, &md).with_context(|| format!("writing {}", out.display()))?;
    println!("→ {}", out.display());
    Ok(())
}

/// The signal table of `config`'s rows (`eval --compare-signals`, with the cascade's net
/// when `cascade`): the small model's AUC, ECE and unknown share, ΔIBC of `auto` and of
/// Threshold per signal, then the fusion.
fn signal_table(md: &mut String, root: &Path, config: &str, cascade: bool) -> Result<()> {
    let mut args = vec![
        "-c",
        config,
        "eval",
        "--compare-signals",
        "--resplits",
        SPLITS,
    ];
    if cascade {
        args.push("--cascade");
    }
    let report = automix_json(root, &args)?;
    let small = report["small_model"].as_str().unwrap_or("?");
    let extra = if cascade { " cascade net |" } else { "" };
    writeln!(
        md,
        "| signal ({config}, {small} judging itself) | AUC | ECE | unknown | auto ΔIBC | Threshold |{extra}"
    )?;
    writeln!(
        md,
        "|---|---:|---:|---:|---|---|{}",
        if cascade { "---|" } else { "" }
    )?;
    for line in report["signals"].as_array().cloned().unwrap_or_default() {
        let cal = &line["calibration"];
        let number = |v: &Value| v.as_f64().map_or_else(|| "—".into(), |x| format!("{x:.3}"));
        let unknown = cal["unknown_share"]
            .as_f64()
            .map_or_else(|| "—".into(), |u| format!("{:.1}%", 100.0 * u));
        let cascade_cell = if cascade {
            format!(" {} |", spread(&line["cascade"]))
        } else {
            String::new()
        };
        writeln!(
            md,
            "| `{}` | {} | {} | {unknown} | {} | {} |{cascade_cell}",
            line["signal"].as_str().unwrap_or("?"),
            number(&cal["auc"]),
            number(&cal["ece"]),
            spread(&line["method"]["delta_ibc"]),
            spread(&line["threshold"]["delta_ibc"]),
        )?;
    }
    Ok(())
}
