//! `train`, `eval` and `route`.

use std::io::Read;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use clap::Args;

use automix::cascade::{CascadeReport, evaluate_cascade, evaluate_cascade_resplits};
use automix::config::Config;
use automix::dataset::{QueryRow, TrainingRow, read_queries, read_training_rows};
use automix::evaluate::{EvalReport, evaluate, evaluate_resplits};
use automix::models::small_and_large;
use automix::training::{RouterPolicy, split, train_cascade_plan, train_policy};
use automix::{ModelSet, Router, UpstreamLimits};

use crate::{catalogue, fmt_opt, prompts};

/// Arguments of `automix train`.
#[derive(Args, Debug)]
pub struct TrainArgs {
    /// Training rows (default: data_path.routing_data_train).
    #[arg(long)]
    pub rows: Option<PathBuf>,
    /// Where to write the policy (default: model_path.save_model_path).
    #[arg(long)]
    pub output: Option<PathBuf>,
    /// Train on every row, not only `split: train`.
    #[arg(long)]
    pub all_rows: bool,
    /// Also solve the N-model cascade over every model in the rows (cheapest first).
    #[arg(long)]
    pub cascade: bool,
    /// Only rows of this task (`task_name`).
    #[arg(long)]
    pub task: Option<String>,
}

/// Arguments of `automix eval`.
#[derive(Args, Debug)]
pub struct EvalArgs {
    /// Training rows (default: data_path.routing_data_train, `split: train`).
    #[arg(long)]
    pub rows: Option<PathBuf>,
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
    #[arg(long)]
    pub resplits: Option<u64>,
    /// Only rows of this task (`task_name`).
    #[arg(long)]
    pub task: Option<String>,
}

/// Arguments of `automix route`.
#[derive(Args, Debug)]
pub struct RouteArgs {
    /// The question (reads stdin when absent and no --batch).
    pub query: Option<String>,
    /// A query JSONL file to route as a batch.
    #[arg(long)]
    pub batch: Option<PathBuf>,
    /// Route with the threshold rule instead of a saved policy.
    #[arg(long)]
    pub no_policy: bool,
    /// The operating point: escalate where the expected gain is at least λ × the cost of an
    /// escalation (needs a calibrated two-model policy; `automix calibrate` shows the family).
    #[arg(long)]
    pub lambda: Option<f64>,
    /// Most escalations per query.
    #[arg(long)]
    pub max_escalations: Option<usize>,
    /// Also ask the cheapest and the most expensive model alone for every query (extra
    /// calls), and compare quality and cost with routing.
    #[arg(long)]
    pub compare: bool,
    /// With --batch: route only shard I of N (1-based) of the queries, by a stable hash of
    /// the query id (run one shard per machine).
    #[arg(long)]
    pub shard: Option<String>,
    /// Write the routed items as JSONL to this file (atomically) instead of stdout.
    #[arg(long)]
    pub output: Option<PathBuf>,
}

/// Arguments of `automix calibrate`.
#[derive(Args, Debug)]
pub struct CalibrateArgs {
    /// The policy file (default: model_path.save_model_path).
    #[arg(long)]
    pub policy: Option<PathBuf>,
    /// Print the λ whose escalation share on the training rows is at most this.
    #[arg(long)]
    pub escalation_share: Option<f64>,
}

/// Arguments of `automix serve`.
#[derive(Args, Debug)]
pub struct ServeArgs {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:8080")]
    pub bind: String,
    /// Route with the threshold rule instead of a saved policy.
    #[arg(long)]
    pub no_policy: bool,
    /// Largest request body in bytes.
    #[arg(long, default_value_t = 1 << 20)]
    pub body_limit: usize,
    /// Concurrent requests per client key (with auth off, all callers share this limit).
    #[arg(long, default_value_t = 64)]
    pub per_client_concurrency: usize,
    /// Concurrent calls to each upstream model (not `hparam.max_workers`, which is for
    /// batch work: a proxy needs room for many clients).
    #[arg(long, default_value_t = 32)]
    pub upstream_concurrency: usize,
    /// Longest wait in milliseconds for a free upstream slot; past it the request fails
    /// with 503 `upstream_busy` instead of queueing behind hung calls.
    #[arg(long, default_value_t = 10_000)]
    pub upstream_queue_timeout_ms: u64,
    /// Open connections at once; one past it is closed at accept.
    #[arg(long, default_value_t = 4096)]
    pub max_connections: usize,
    /// Longest wait in milliseconds for a request's headers before the connection is closed.
    #[arg(long, default_value_t = 10_000)]
    pub header_read_timeout_ms: u64,
    /// Longest wait in milliseconds for a request's whole body once its headers are in; a
    /// stalled body gets 408 and its connection is closed.
    #[arg(long, default_value_t = 30_000)]
    pub body_read_timeout_ms: u64,
    /// Feedback requests per minute per client key (429 with Retry-After past it).
    #[arg(long, default_value_t = 60)]
    pub feedback_per_minute: u32,
    /// Scores one client key may fold into the online belief per
    /// `--feedback-window-secs`; past it, 429 `feedback_quota_exceeded`.
    #[arg(long, default_value_t = 100)]
    pub feedback_weight_per_window: u32,
    /// The window of `--feedback-weight-per-window`, seconds.
    #[arg(long, default_value_t = 3600)]
    pub feedback_window_secs: u64,
}

impl ServeArgs {
    fn upstream_limits(&self) -> UpstreamLimits {
        UpstreamLimits {
            max_concurrency: self.upstream_concurrency,
            queue_timeout: Some(std::time::Duration::from_millis(
                self.upstream_queue_timeout_ms,
            )),
        }
    }
}

fn rows_path(config: &Config, rows: Option<&PathBuf>) -> Result<PathBuf> {
    rows.cloned()
        .or_else(|| config.data_path.routing_data_train.clone())
        .context("no training rows: set data_path.routing_data_train or pass --rows")
}

fn pair(config: &Config, rows: &[TrainingRow]) -> Result<(String, String)> {
    if let (Some(s), Some(l)) = (
        &config.model_path.engine_small,
        &config.model_path.engine_large,
    ) {
        return Ok((s.clone(), l.clone()));
    }
    let has_catalogue = config
        .data_path
        .llm_data
        .as_deref()
        .is_some_and(Path::exists);
    match has_catalogue {
        true => Ok(small_and_large(
            &catalogue(config)?,
            config.model_path.engine_small.as_deref(),
            config.model_path.engine_large.as_deref(),
        )?),
        // Without an llm_data file the rows' model order (cheapest first, as collected)
        // decides; a file that exists but is broken is an error, not this fallback.
        false => {
            eprintln!("note: no llm_data file; small and large model taken from the rows' order");
            let first = rows.first().context("no training rows")?;
            let names: Vec<&str> = first.models.iter().map(|m| m.model.as_str()).collect();
            match (names.first(), names.last()) {
                (Some(s), Some(l)) if s != l => Ok(((*s).to_owned(), (*l).to_owned())),
                _ => bail!("the rows carry fewer than two models"),
            }
        }
    }
}

/// Rows of `path`, only those of `task` when given (an unknown task is an error).
fn read_rows(path: &Path, task: Option<&str>) -> Result<Vec<TrainingRow>> {
    let mut rows = read_training_rows(path)?;
    if let Some(task) = task {
        let mut known: Vec<String> = rows.iter().map(|r| r.task_name.clone()).collect();
        known.sort_unstable();
        known.dedup();
        rows.retain(|r| r.task_name == task);
        if rows.is_empty() {
            bail!(
                "{}: no rows of task {task:?}; tasks here: {}",
                path.display(),
                known.join(", ")
            );
        }
    }
    Ok(rows)
}

/// `automix train`.
pub fn train(config: &Config, json: bool, args: &TrainArgs) -> Result<()> {
    let path = rows_path(config, args.rows.as_ref())?;
    let all = read_rows(&path, args.task.as_deref())?;
    let rows: Vec<TrainingRow> = if args.all_rows {
        all.clone()
    } else {
        split(&all, "train").into_iter().cloned().collect()
    };
    if rows.is_empty() {
        bail!("{}: no training rows (split: train)", path.display());
    }
    let (small, large) = pair(config, &all)?;
    let mut policy = train_policy(config, &rows, &small, &large)?;
    if args.cascade {
        policy.cascade = Some(train_cascade_plan(config, &rows, &models_in(&rows))?);
    }
    let out = args
        .output
        .clone()
        .or_else(|| config.model_path.save_model_path.clone())
        .context("no output: set model_path.save_model_path or pass --output")?;
    policy.save(&out)?;
    if json {
        println!("{}", serde_json::to_string_pretty(&policy)?);
        return Ok(());
    }
    let s = &policy.policy.summary;
    println!(
        "trained {} ({} chose {}) on {} rows: {small} → {large}, signal {:?}",
        policy.policy.method.kind.name(),
        policy.policy.method.kind.name(),
        policy.policy.chosen_component.name(),
        s.rows,
        policy.verifier_signal
    );
    println!(
        "  train: quality {:.3}  cost {:.3}  escalation {:.1}%  ΔIBC {}",
        s.train.quality,
        s.train.cost,
        100.0 * s.train.escalation_rate,
        s.train_lift
    );
    println!(
        "  small {:.3} / large {:.3} quality; oracle ΔIBC {}",
        s.baseline.small_quality, s.baseline.large_quality, s.oracle_lift
    );
    if let Some(note) = &s.note {
        println!("  note: {note}");
    }
    if let Some(cv) = &s.cross_validation {
        print_cross_validation(cv);
    }
    if config.hparam.verbose {
        print_training_detail(&policy.policy);
    }
    if let Some(c) = &policy.cascade {
        let start = c.policy.start;
        println!(
            "  cascade {}: start {} {}, {} decision-table entries, {} per-task starts",
            c.models.join(" → "),
            c.models[start.model],
            if start.verify {
                "with verification"
            } else {
                "without verification"
            },
            c.policy.table.len(),
            c.task_starts.len()
        );
    }
    println!("policy → {}", out.display());
    Ok(())
}

/// `hparam.verbose`: the rule in full, the candidates and the λ family, so a user can see
/// what training weighed.
fn print_training_detail(policy: &automix::core::Policy) {
    let s = &policy.summary;
    println!(
        "  detail: {} candidates, {} feasible; rule: {}",
        s.candidates,
        s.feasible,
        policy.rule.describe()
    );
    if let Some(c) = &policy.calibration {
        println!(
            "  λ family (training rows): {} points; trained λ {:.6}; κ {}",
            c.lambdas.len(),
            c.trained_lambda(),
            c.kappa.map_or("pooled".into(), |k| k.to_string())
        );
        for p in &c.lambdas {
            println!(
                "    λ {:>10.6}  escalated {:>5.1}%  quality {:.3}  cost {}",
                p.lambda,
                100.0 * p.escalation_rate,
                p.quality,
                fmt_cost(p.cost)
            );
        }
    }
}

fn print_cross_validation(cv: &automix::core::CvSummary) {
    println!(
        "  cross-validation ({} folds × {} seeded assignments, {:?}): chose {}",
        cv.folds, cv.repeats, cv.objective, cv.chosen
    );
    println!(
        "    out of fold: {:.4} ± {:.4}; quality {:.3}, cost {:.3}, escalation {:.1}%",
        cv.mean,
        cv.sd,
        cv.outcome.quality,
        cv.outcome.cost,
        100.0 * cv.outcome.escalation_rate
    );
    for a in &cv.alternatives {
        println!("    {:<24} {:.4} ± {:.4}", a.name, a.mean, a.sd);
    }
}

/// `automix eval`.
pub fn eval(config: &Config, json: bool, args: &EvalArgs) -> Result<()> {
    let path = rows_path(config, args.rows.as_ref())?;
    let all = read_rows(&path, args.task.as_deref())?;
    let test_path = args
        .test_rows
        .clone()
        .or_else(|| config.data_path.routing_data_test.clone());
    let (train_rows, test_rows): (Vec<TrainingRow>, Vec<TrainingRow>) = match test_path {
        Some(t) => (all.clone(), read_rows(&t, args.task.as_deref())?),
        None => (
            split(&all, "train").into_iter().cloned().collect(),
            split(&all, "test").into_iter().cloned().collect(),
        ),
    };
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

/// `automix calibrate`: the policy's λ family on its training rows, and the λ that gives an
/// escalation share (RouteLLM-style calibration).
pub fn calibrate(config: &Config, json: bool, args: &CalibrateArgs) -> Result<()> {
    let path = match &args.policy {
        Some(p) => p.clone(),
        None => config
            .policy_path()
            .context("no policy: set model_path.save_model_path or pass --policy")?
            .to_path_buf(),
    };
    let policy = RouterPolicy::load(&path)?;
    let calibration = policy.policy.calibration.as_ref().with_context(|| {
        format!(
            "{}: this policy ({}) has no λ family; train with routing_method auto or Calibrated",
            path.display(),
            policy.policy.chosen_component.name()
        )
    })?;
    let chosen = match args.escalation_share {
        Some(share) if !(0.0..=1.0).contains(&share) => {
            bail!("--escalation-share {share}: must be in [0, 1]")
        }
        Some(share) => calibration
            .lambdas
            .iter()
            .rfind(|p| p.escalation_rate <= share)
            .copied(),
        None => None,
    };
    if json {
        let value = serde_json::json!({
            "trained_lambda": calibration.trained_lambda(),
            "unit": calibration.unit,
            "table": calibration.lambdas,
            "chosen": chosen,
        });
        println!("{}", serde_json::to_string_pretty(&value)?);
        return Ok(());
    }
    println!(
        "{} → {}: λ is quality per unit of cost; one escalation costs {:.4} units. Trained λ {:.6}.",
        policy.small_model,
        policy.large_model,
        calibration.unit,
        calibration.trained_lambda()
    );
    println!(
        "{:>12} {:>10} {:>8} {:>9}",
        "λ", "escalated", "quality", "cost"
    );
    for p in &calibration.lambdas {
        println!(
            "{:>12.6} {:>9.1}% {:>8.3} {:>9}",
            p.lambda,
            100.0 * p.escalation_rate,
            p.quality,
            fmt_cost(p.cost)
        );
    }
    if let (Some(share), Some(p)) = (args.escalation_share, chosen) {
        println!(
            "escalation share ≤ {:.1}%: λ {:.6} ({:.1}% on the training rows)",
            100.0 * share,
            p.lambda,
            100.0 * p.escalation_rate
        );
    }
    Ok(())
}

/// Comma-separated keys from the environment variable `name` (none when unset).
fn keys_from_env(name: &str) -> Vec<String> {
    std::env::var(name)
        .map(|v| {
            v.split(',')
                .map(|k| k.trim().to_owned())
                .filter(|k| !k.is_empty())
                .collect()
        })
        .unwrap_or_default()
}

/// `<stem>_cascade`: where the cascade frontier plot goes.
fn cascade_stem(stem: &Path) -> PathBuf {
    let name = stem
        .file_name()
        .map_or_else(|| "plot".into(), |n| n.to_string_lossy().into_owned());
    stem.with_file_name(format!("{name}_cascade"))
}

/// The models of the rows, in their order (cheapest first, as collected).
fn models_in(rows: &[TrainingRow]) -> Vec<String> {
    rows.first()
        .map(|r| r.models.iter().map(|m| m.model.clone()).collect())
        .unwrap_or_default()
}

fn print_cascade(c: &CascadeReport) {
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

/// Costs in money are tiny: switch to scientific notation below 0.01.
fn fmt_cost(c: f64) -> String {
    if c != 0.0 && c.abs() < 0.01 {
        format!("{c:.2e}")
    } else {
        format!("{c:.3}")
    }
}

fn print_report(r: &EvalReport) {
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

fn print_resplits(lines: &[automix::evaluate::ResplitLine]) {
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

fn print_lines(lines: &[automix::evaluate::EvalLine]) {
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

/// The router the config describes: the saved policy (with its cascade) and live models.
pub fn build_router(config: &Config, no_policy: bool, limits: UpstreamLimits) -> Result<Router> {
    let catalogue = catalogue(config)?;
    let policy =
        if no_policy {
            None
        } else {
            let path = config
                .policy_path()
                .context("no policy: set model_path.save_model_path or pass --no-policy")?;
            Some(RouterPolicy::load(path).with_context(|| {
                "loading the policy (train one with `automix train`)".to_string()
            })?)
        };
    let names: Vec<String> = match &policy {
        Some(p) => match &p.cascade {
            Some(c) if config.automix.use_pomdp_router => c.models.clone(),
            _ => vec![p.small_model.clone(), p.large_model.clone()],
        },
        None => {
            let (s, l) = small_and_large(
                &catalogue,
                config.model_path.engine_small.as_deref(),
                config.model_path.engine_large.as_deref(),
            )?;
            vec![s, l]
        }
    };
    let models = ModelSet::from_catalogue(&catalogue, &names, limits)?;
    Ok(Router::new(config, models, prompts(config)?, policy)?)
}

/// `automix serve`: the proxy until Ctrl-C or SIGTERM (drains requests in flight); SIGHUP or
/// `POST /admin/reload` reloads the policy.
pub async fn serve(config: Config, args: &ServeArgs) -> Result<()> {
    use automix_serve::{ProxySettings, ProxyState, serve};
    let limits = args.upstream_limits();
    let router = build_router(&config, args.no_policy, limits)?;
    let no_policy = args.no_policy;
    let reload_config = config.clone();
    let loader: automix_serve::RouterLoader = Box::new(move || {
        build_router(&reload_config, no_policy, limits)
            .map_err(|e| automix::AutomixError::Reload(format!("{e:#}")))
    });
    // Client keys come from the environment, never from files or flags (they would leak
    // into shell history and process lists).
    let client_keys = keys_from_env("AUTOMIX_PROXY_KEYS");
    let settings = ProxySettings {
        client_keys,
        admin_keys: keys_from_env("AUTOMIX_ADMIN_KEYS"),
        body_limit: args.body_limit,
        per_client_concurrency: args.per_client_concurrency,
        max_connections: args.max_connections,
        header_read_timeout: std::time::Duration::from_millis(args.header_read_timeout_ms),
        body_read_timeout: std::time::Duration::from_millis(args.body_read_timeout_ms),
        feedback: automix_serve::FeedbackLimitSettings {
            per_minute: args.feedback_per_minute,
            weight_per_window: args.feedback_weight_per_window,
            window: std::time::Duration::from_secs(args.feedback_window_secs),
        },
        ..ProxySettings::default()
    };
    let auth = !settings.client_keys.is_empty();
    let state = ProxyState::new(router, Some(loader), settings);
    let listener = tokio::net::TcpListener::bind(&args.bind)
        .await
        .with_context(|| format!("binding {}", args.bind))?;
    eprintln!(
        "automix proxy on http://{}/v1 (model \"automix\"; client auth {})",
        listener.local_addr()?,
        if auth { "on" } else { "off" }
    );
    let reloader = state.clone();
    tokio::spawn(async move {
        let Ok(mut hup) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())
        else {
            return;
        };
        while hup.recv().await.is_some() {
            match reloader.reload().await {
                Ok(()) => eprintln!("policy reloaded"),
                Err(e) => eprintln!("reload failed, keeping the old policy: {e}"),
            }
        }
    });
    let shutdown = async {
        let term = async {
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(mut s) => {
                    s.recv().await;
                }
                Err(_) => std::future::pending::<()>().await,
            }
        };
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {},
            () = term => {},
        }
        eprintln!("shutting down: draining requests in flight");
    };
    serve(listener, state, shutdown).await?;
    Ok(())
}

/// `automix route`.
pub async fn route(config: &Config, json: bool, args: &RouteArgs) -> Result<()> {
    let router = build_router(
        config,
        args.no_policy,
        UpstreamLimits::batch(config.hparam.max_workers),
    )?;
    if let Some(l) = args.lambda {
        if !(l.is_finite() && l >= 0.0) {
            bail!("--lambda {l}: must be a number >= 0");
        }
        if router.lambda_family().is_none() {
            bail!(
                "--lambda: this policy has no λ family (train a two-model policy with \
                 routing_method auto or Calibrated)"
            );
        }
    }
    let options = automix::RouteOptions {
        lambda: args.lambda,
        max_escalations: args.max_escalations,
        tenant: None,
    };
    let shard = args
        .shard
        .as_deref()
        .map(automix::shard::Shard::parse)
        .transpose()?;
    if shard.is_some() && args.batch.is_none() {
        bail!("--shard splits a --batch file; there is no batch to split");
    }
    let queries: Vec<QueryRow> = match (&args.batch, &args.query) {
        (Some(path), _) => {
            let all = read_queries(path)?;
            match shard {
                Some(s) => s.select(all),
                None => all,
            }
        }
        (None, Some(q)) => vec![single_query(q)],
        (None, None) => {
            let mut text = String::new();
            std::io::stdin().read_to_string(&mut text)?;
            vec![single_query(text.trim())]
        }
    };
    let items = if json || queries.len() < 2 {
        router.route_batch_with(&queries, &options).await
    } else {
        route_with_progress(&router, &queries, &options, config.hparam.max_workers).await
    };
    if let Some(path) = &args.output {
        automix::dataset::write_jsonl(path, &items)?;
        if !json {
            println!("{} routed items → {}", items.len(), path.display());
        }
    } else if json {
        for item in &items {
            println!("{}", serde_json::to_string(item)?);
        }
    } else {
        for item in &items {
            match (&item.outcome, &item.error) {
                (Some(o), _) => println!(
                    "{:<28} {:<20} score {:>5} {:<8} → {}{}",
                    o.id,
                    o.model_name,
                    fmt_opt(o.verification_score),
                    if o.route_to_llm { "escalate" } else { "keep" },
                    o.response.lines().next().unwrap_or(""),
                    o.task_performance
                        .map(|p| format!("  (performance {p:.2})"))
                        .unwrap_or_default()
                ),
                (None, e) => println!(
                    "{:<28} failed: {}",
                    item.id,
                    e.as_deref().unwrap_or("unknown error")
                ),
            }
        }
    }
    if !json && items.len() > 1 {
        print_route_summary(&items);
        if args.compare {
            print_comparison(&router, &queries, &items, config.hparam.max_workers).await;
        }
    }
    if items.iter().all(|i| i.error.is_some()) {
        bail!("every query failed");
    }
    Ok(())
}

/// [`Router::route_batch_with`] under a progress bar (routing real models takes a while).
async fn route_with_progress(
    router: &Router,
    queries: &[QueryRow],
    options: &automix::RouteOptions,
    workers: usize,
) -> Vec<automix::BatchItem> {
    use futures::StreamExt;
    let bar = indicatif::ProgressBar::new(queries.len() as u64);
    bar.set_style(
        indicatif::ProgressStyle::with_template("{elapsed_precise} [{bar:30}] {pos}/{len} {msg}")
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    let items = futures::stream::iter(queries.chunks(1).map(|q| {
        let bar = bar.clone();
        async move {
            let item = router.route_batch_with(q, options).await.remove(0);
            bar.inc(1);
            if let Some(o) = &item.outcome {
                bar.set_message(format!("{} → {}", o.id, o.model_name));
            }
            item
        }
    }))
    .buffered(workers.max(1))
    .collect()
    .await;
    bar.finish_and_clear();
    items
}

/// Always-small and always-large on the same queries (each model asked alone), against what
/// routing did: the saving in cost and the change in quality.
async fn print_comparison(
    router: &Router,
    queries: &[QueryRow],
    items: &[automix::BatchItem],
    workers: usize,
) {
    use futures::StreamExt;
    let models = router.models();
    let (small, large) = (&models.first().entry.name, &models.last().entry.name);
    let mean = |outcomes: &[&automix::RouteOutcome]| {
        let n = outcomes.len().max(1) as f64;
        let q: Vec<f64> = outcomes.iter().filter_map(|o| o.task_performance).collect();
        let quality = (!q.is_empty()).then(|| q.iter().sum::<f64>() / q.len() as f64);
        (
            quality,
            outcomes.iter().map(|o| o.total_cost).sum::<f64>() / n,
        )
    };
    let routed: Vec<&automix::RouteOutcome> =
        items.iter().filter_map(|i| i.outcome.as_ref()).collect();
    let (rq, rc) = mean(&routed);
    println!("\ncompared on the same {} queries:", routed.len());
    println!(
        "  {:<24} quality {:>6}  cost/query {}",
        "AutoMix",
        fmt_opt(rq),
        fmt_cost(rc)
    );
    for name in [small, large] {
        let alone: Vec<_> = futures::stream::iter(queries.iter().map(|q| router.alone(q, name)))
            .buffered(workers.max(1))
            .collect()
            .await;
        let failed = alone.iter().filter(|r| r.is_err()).count();
        let ok: Vec<&automix::RouteOutcome> =
            alone.iter().filter_map(|r| r.as_ref().ok()).collect();
        let (q, c) = mean(&ok);
        let saved = if c > 0.0 {
            format!("  (AutoMix costs {:.0}% of it)", 100.0 * rc / c)
        } else {
            String::new()
        };
        let failed = if failed > 0 {
            format!("  [{failed} failed]")
        } else {
            String::new()
        };
        println!(
            "  {:<24} quality {:>6}  cost/query {}{saved}{failed}",
            format!("always {name}"),
            fmt_opt(q),
            fmt_cost(c)
        );
    }
}

/// What routing a batch did: the share answered by each model, escalations, cost, and the
/// quality where the queries had ground truth.
fn print_route_summary(items: &[automix::BatchItem]) {
    let done: Vec<&automix::RouteOutcome> =
        items.iter().filter_map(|i| i.outcome.as_ref()).collect();
    let n = done.len().max(1) as f64;
    let mut by_model: Vec<(&str, usize)> = Vec::new();
    for o in &done {
        match by_model.iter_mut().find(|(m, _)| *m == o.model_name) {
            Some((_, c)) => *c += 1,
            None => by_model.push((&o.model_name, 1)),
        }
    }
    let shares: Vec<String> = by_model
        .iter()
        .map(|(m, c)| format!("{m} {:.0}%", 100.0 * *c as f64 / n))
        .collect();
    let escalated = done.iter().filter(|o| o.route_to_llm).count();
    let cost: f64 = done.iter().map(|o| o.total_cost).sum();
    let scored: Vec<f64> = done.iter().filter_map(|o| o.task_performance).collect();
    println!(
        "\n{} queries routed ({} failed): answered by {}; escalated {:.0}%; cost {} in all, {} per query",
        done.len(),
        items.len() - done.len(),
        shares.join(", "),
        100.0 * escalated as f64 / n,
        fmt_cost(cost),
        fmt_cost(cost / n)
    );
    if !scored.is_empty() {
        println!(
            "quality {:.3} on the {} queries with ground truth",
            scored.iter().sum::<f64>() / scored.len() as f64,
            scored.len()
        );
    }
}

fn single_query(text: &str) -> QueryRow {
    QueryRow {
        id: automix::dataset::query_id("cli", text),
        task_name: "cli".into(),
        query: text.to_owned(),
        ground_truth: None,
        metric: None,
        choices: Vec::new(),
        task_id: None,
        context: None,
    }
}
