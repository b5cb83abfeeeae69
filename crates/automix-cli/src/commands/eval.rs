//! `automix eval`: the held-out table, re-splits and the cascade's report and plots.

use super::*;

/// Arguments of `automix eval`.
#[derive(Args, Debug)]
pub struct EvalArgs {
    /// The rows (`--rows`, `split: train` of them, and `--task`).
    #[command(flatten)]
    pub rows: RowsArgs,
    /// Held-out rows (default: data_path.routing_data_test, else `split: test` of --rows).
    #[arg(long)]
    pub test_rows: Option<PathBuf>,
    /// Write the cost–quality plot as `<stem>.png` and `<stem>.svg`.
    #[arg(long)]
    pub plot: Option<PathBuf>,
    /// Also evaluate the N-model cascade over every model in the rows (cheapest first).
    #[arg(long)]
    pub cascade: bool,
    /// Also evaluate every method over this many random re-splits of all rows (mean ± sd
    /// and the worst split).
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..))]
    pub resplits: Option<u64>,
    /// Instead of the held-out table: every verification signal the rows carry, and their
    /// fusion, over the same re-splits (`--resplits`, default 10; with `--cascade`, the
    /// cascade's net too): the small model's AUC, ECE and unknown share, ΔIBC of
    /// `routing_method` and of the paper's Threshold.
    #[arg(long, conflicts_with_all = ["test_rows", "plot"])]
    pub compare_signals: bool,
}

/// Every row, and the train and test rows: `--test-rows` (or `routing_data_test`) tests
/// against all the rows, else their `split`.
fn eval_rows(
    config: &Config,
    args: &EvalArgs,
) -> Result<(Vec<TrainingRow>, Vec<TrainingRow>, Vec<TrainingRow>)> {
    let (_, all) = args.rows.read(config)?;
    let test_path = args
        .test_rows
        .clone()
        .or_else(|| config.data_path.routing_data_test.clone());
    let (train, test) = match test_path {
        Some(t) => (
            all.clone(),
            project::training_rows(config, Some(&t), args.rows.task.as_deref())?.1,
        ),
        None => (
            split(&all, "train").into_iter().cloned().collect(),
            split(&all, "test").into_iter().cloned().collect(),
        ),
    };
    Ok((all, train, test))
}

/// `automix eval`.
pub fn eval(config: &Config, json: bool, args: &EvalArgs) -> Result<()> {
    if args.compare_signals {
        return super::compare_signals::compare(config, json, args);
    }
    let (all, train_rows, test_rows) = eval_rows(config, args)?;
    let (small, large) = pair(config, &all)?;
    let report = evaluate(config, &train_rows, &test_rows, &small, &large)?;
    if let Some(stem) = &args.plot {
        crate::plot::cost_quality(&report, stem)?;
    }
    let cascade = if args.cascade {
        Some(evaluate_cascade(
            config,
            &train_rows,
            &test_rows,
            &models_in(&all),
        )?)
    } else {
        None
    };
    if let (Some(stem), Some(c)) = (&args.plot, &cascade) {
        crate::plot::cascade_frontier(c, &cascade_stem(stem))?;
    }
    let share = config.collect.test_share;
    let resplits = match args.resplits {
        Some(n) => Some(evaluate_resplits(config, &all, &small, &large, n, share)?),
        None => None,
    };
    let cascade_resplits = match (args.resplits, args.cascade) {
        (Some(n), true) => Some(evaluate_cascade_resplits(
            config,
            &all,
            &models_in(&all),
            n,
            share,
        )?),
        _ => None,
    };
    if json {
        let value = serde_json::json!({
            "two_model": report,
            "cascade": cascade,
            "resplits": resplits,
            "cascade_resplits": cascade_resplits,
        });
        println!("{}", serde_json::to_string_pretty(&value)?);
        return Ok(());
    }
    print_report(&report);
    if let Some(lines) = &resplits {
        println!(
            "\nover {} random re-splits of all {} rows ({:.0}% held out each):",
            args.resplits.unwrap_or(0),
            all.len(),
            100.0 * config.collect.test_share
        );
        print_resplits(lines);
    }
    if let Some(c) = &cascade {
        print_cascade(c);
    }
    if let Some(lines) = &cascade_resplits {
        println!(
            "\ncascade over {} random re-splits (net = quality − λ·cost):",
            args.resplits.unwrap_or(0)
        );
        println!(
            "{:<28} {:>8} {:>8} {:>17} {:>8}",
            "policy", "quality", "cost", "net mean ± sd", "worst"
        );
        for l in lines {
            println!(
                "{:<28} {:>8.3} {:>8.3} {:>17} {:>8.3}",
                l.name,
                l.quality,
                l.cost,
                format!("{:.3} ± {:.3}", l.net.mean, l.net.sd),
                l.net.worst
            );
        }
    }
    if let Some(stem) = &args.plot {
        println!("plot → {}.png, {}.svg", stem.display(), stem.display());
        if cascade.is_some() {
            let c = cascade_stem(stem);
            println!("cascade plot → {}.png, {}.svg", c.display(), c.display());
        }
    }
    Ok(())
}

/// `<stem>_cascade`: where the cascade frontier plot goes.
pub(crate) fn cascade_stem(stem: &Path) -> PathBuf {
    let name = stem
        .file_name()
        .map_or_else(|| "plot".into(), |n| n.to_string_lossy().into_owned());
    stem.with_file_name(format!("{name}_cascade"))
}

pub(crate) fn print_cascade(c: &CascadeReport) {
    println!(
        "\ncascade over {} (λ {:.3}; cost unit = one {} answer = {:.3e}; start {} {}):",
        c.models.join(" → "),
        c.lambda,
        c.models.last().map_or("", String::as_str),
        c.cost_unit,
        c.models[c.start.model],
        if c.start.verify {
            "with verification"
        } else {
            "without verification"
        }
    );
    let reached: Vec<String> = c.models.iter().map(|m| format!("reach {m}")).collect();
    println!(
        "{:<28} {:>8} {:>8} {:>8}  {}",
        "policy",
        "quality",
        "cost",
        "net",
        reached.join("  ")
    );
    for l in &c.lines {
        let r: Vec<String> = l
            .reached
            .iter()
            .map(|x| format!("{:>5.1}%", 100.0 * x))
            .collect();
        println!(
            "{:<28} {:>8.3} {:>8.3} {:>8.3}  {}",
            l.name,
            l.quality,
            l.cost,
            l.net,
            r.join("  ")
        );
    }
    let cv = &c.cross_validation;
    println!(
        "cross-validation ({} folds × {}): solver λ {:.4} nets {:.4} ± {:.4} out of fold; best fixed model {} nets {:.4}",
        cv.folds,
        cv.repeats,
        cv.solver_lambda,
        cv.net.0,
        cv.net.1,
        cv.best_fixed.0,
        cv.best_fixed.1
    );
    if let Some((mean, se)) = cv.lead_over_fixed {
        println!(
            "the cascade's out-of-fold lead over {}: {mean:.4} (standard error {se:.4})",
            cv.best_fixed.0
        );
    }
    if let Some(f) = &cv.fallback {
        println!("fallback: {f}");
    }
    let sweep: Vec<String> = c
        .sweep
        .iter()
        .map(|p| format!("λ {}: {:.3} @ {:.3}", p.lambda, p.quality, p.cost))
        .collect();
    println!("λ sweep (held-out quality @ cost): {}", sweep.join(", "));
    let m = &c.frontier_metrics;
    println!(
        "frontier over the sweep, fixed models and threshold rule: AIQ {:.3} APGR {}",
        m.aiq,
        fmt_opt(m.apgr)
    );
}

pub(crate) fn print_report(r: &EvalReport) {
    println!(
        "{} → {}: trained on {} rows, evaluated on {} held-out rows",
        r.small_model, r.large_model, r.train_rows, r.test_rows
    );
    print_lines(&r.lines);
    if let Some(cv) = &r.cross_validation {
        print_cross_validation(cv);
    }
    let m = &r.frontier_metrics;
    println!(
        "oracle ΔIBC {}; frontier AIQ {:.3} APGR {} CPT50 {} CPT80 {}",
        fmt_opt(r.oracle_delta_ibc),
        m.aiq,
        fmt_opt(m.apgr),
        fmt_opt(m.cpt50),
        fmt_opt(m.cpt80)
    );
}

pub(crate) fn print_resplits(lines: &[automix::evaluate::ResplitLine]) {
    println!(
        "{:<24} {:>8} {:>9} {:>10} {:>17} {:>9}  95% interval of the mean",
        "method", "quality", "cost", "escalated", "ΔIBC mean ± sd", "worst"
    );
    for l in lines {
        let (spread, worst, interval) = match &l.delta_ibc {
            Some(s) => (
                format!("{:.3} ± {:.3}", s.mean, s.sd),
                format!("{:.3}", s.worst),
                s.ci95
                    .map_or_else(String::new, |(lo, hi)| format!("[{lo:.3}, {hi:.3}]")),
            ),
            None => ("—".into(), "—".into(), String::new()),
        };
        println!(
            "{:<24} {:>8.3} {:>9} {:>9.1}% {:>17} {:>9}  {interval}",
            l.name,
            l.quality,
            fmt_cost(l.cost),
            100.0 * l.escalation_rate,
            spread,
            worst
        );
    }
}

pub(crate) fn print_lines(lines: &[automix::evaluate::EvalLine]) {
    println!(
        "{:<24} {:>8} {:>9} {:>10} {:>9} {:>7}  detail",
        "method", "quality", "cost", "escalated", "ΔIBC", "score"
    );
    for l in lines {
        println!(
            "{:<24} {:>8.3} {:>9} {:>9.1}% {:>9} {:>7.3}  {}",
            l.name,
            l.quality,
            fmt_cost(l.cost),
            100.0 * l.escalation_rate,
            fmt_opt(l.delta_ibc),
            l.score,
            l.delta_ibc_note.as_deref().unwrap_or(&l.detail)
        );
    }
}
