//! The `automix` command: collect, train, eval, route. Thin: parses arguments, calls the
//! runtime, prints tables or `--json`.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context, Result, bail};
use clap::{Parser, Subcommand};

use automix::ModelSet;
use automix::collect::{CollectEvent, CollectJob, collect, select_queries};
use automix::config::Config;
use automix::dataset::{LabelSource, read_queries, write_jsonl};
use automix::llm::Catalogue;
use automix::shard::{Shard, merge_rows, shard_path};
use automix::verify::PromptSet;

mod commands;
mod plot;

/// AutoMix: answer with a small model, self-verify, escalate only when needed.
#[derive(Parser, Debug)]
#[command(name = "automix", version, about)]
struct Cli {
    /// The YAML config.
    #[arg(long, short, global = true, default_value = "configs/local.yaml")]
    config: PathBuf,
    /// Machine-readable JSON output.
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Answer queries with every model, self-verify, score; write training rows (resumable).
    Collect {
        /// Query JSONL (default: data_path.query_data_train).
        #[arg(long)]
        queries: Option<PathBuf>,
        /// Output rows JSONL (default: data_path.routing_data_train).
        #[arg(long)]
        output: Option<PathBuf>,
        /// Queries per task (default: collect.per_task).
        #[arg(long)]
        per_task: Option<usize>,
        /// Comma-separated tasks (default: collect.tasks, or all supported).
        #[arg(long)]
        tasks: Option<String>,
        /// Collect only shard I of N (1-based) of the selected queries, by a stable hash of
        /// the query id; the default output gets a `.shard-I-of-N` suffix. `automix merge`
        /// joins the shards.
        #[arg(long)]
        shard: Option<String>,
        /// Queries without ground truth (a prompt log): score each answer against the most
        /// expensive model's (agreement labels, `label_source: agreement`); a query with no
        /// metric is scored by token F1.
        #[arg(long)]
        unlabelled: bool,
    },
    /// Merge shard row files (from `collect --shard`) into one, checking for duplicates
    /// and, with --queries, for queries no shard collected.
    Merge {
        /// The merged rows JSONL.
        #[arg(long)]
        output: PathBuf,
        /// The query JSONL the shards were collected from (default:
        /// data_path.query_data_train): every selected query must have a row.
        #[arg(long)]
        queries: Option<PathBuf>,
        /// Shard row files.
        #[arg(required = true)]
        files: Vec<PathBuf>,
    },
    /// Train the meta-verifier on the training rows; write the policy file.
    Train(commands::TrainArgs),
    /// Evaluate every method and the baselines on held-out rows; table and plot.
    Eval(commands::EvalArgs),
    /// Route one query (argument or stdin) or a JSONL batch through live models.
    Route(commands::RouteArgs),
    /// Serve an OpenAI-compatible proxy that applies AutoMix (model "automix").
    Serve(commands::ServeArgs),
    /// Show the trained policy's λ family; the λ for an escalation share.
    Calibrate(commands::CalibrateArgs),
    /// Shadow rows of `automix serve` (`automix.shadow`): `export` drains the Redis stream.
    Traffic(commands::TrafficArgs),
}

fn main() {
    let cli = Cli::parse();
    if let Err(e) = run(cli) {
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
}

fn run(cli: Cli) -> Result<()> {
    let config = Config::load(&cli.config)?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    match cli.command {
        Command::Collect {
            queries,
            output,
            per_task,
            tasks,
            shard,
            unlabelled,
        } => {
            let shard = shard.as_deref().map(Shard::parse).transpose()?;
            let args = CollectArgs {
                queries,
                output,
                per_task,
                tasks,
                shard,
                labels: if unlabelled {
                    LabelSource::Agreement
                } else {
                    LabelSource::GroundTruth
                },
            };
            runtime.block_on(run_collect(&config, cli.json, args))
        }
        Command::Merge {
            output,
            queries,
            files,
        } => run_merge(&config, cli.json, &output, queries.as_deref(), &files),
        Command::Train(args) => commands::train(&config, cli.json, &args),
        Command::Eval(args) => commands::eval(&config, cli.json, &args),
        Command::Route(args) => runtime.block_on(commands::route(&config, cli.json, &args)),
        Command::Serve(args) => runtime.block_on(commands::serve(config, &args)),
        Command::Calibrate(args) => commands::calibrate(&config, cli.json, &args),
        Command::Traffic(args) => runtime.block_on(commands::traffic(&config, cli.json, &args)),
    }
}

/// The llm_data catalogue named by the config.
pub fn catalogue(config: &Config) -> Result<Catalogue> {
    automix::project::catalogue(config).context("for local models run `cargo xtask llms up`")
}

/// The prompt templates named by the config, or the builtin ones.
pub fn prompts(config: &Config) -> Result<Arc<PromptSet>> {
    Ok(automix::project::prompts(config)?)
}

fn required<'a>(value: Option<&'a Path>, what: &str) -> Result<&'a Path> {
    value.with_context(|| format!("{what} is not set (in the config or on the command line)"))
}

/// `automix collect`'s arguments.
struct CollectArgs {
    queries: Option<PathBuf>,
    output: Option<PathBuf>,
    per_task: Option<usize>,
    tasks: Option<String>,
    shard: Option<Shard>,
    labels: LabelSource,
}

async fn run_collect(config: &Config, json: bool, args: CollectArgs) -> Result<()> {
    let CollectArgs {
        queries,
        output,
        per_task,
        tasks,
        shard,
        labels: args_labels,
    } = args;
    let mut settings = config.collect.clone();
    if per_task.is_some() {
        settings.per_task = per_task;
    }
    if let Some(t) = tasks {
        settings.tasks = t.split(',').map(|s| s.trim().to_owned()).collect();
    }
    let queries_path = required(
        queries
            .as_deref()
            .or(config.data_path.query_data_train.as_deref()),
        "data_path.query_data_train",
    )?;
    let output_given = output.is_some();
    let output = required(
        output
            .as_deref()
            .or(config.data_path.routing_data_train.as_deref()),
        "data_path.routing_data_train",
    )?;
    let output = match shard {
        Some(s) if !output_given => shard_path(output, s),
        _ => output.to_path_buf(),
    };
    let output = output.as_path();
    let catalogue = catalogue(config)?;
    let names: Vec<String> = if settings.models.is_empty() {
        catalogue.models().iter().map(|m| m.name.clone()).collect()
    } else {
        settings.models.clone()
    };
    let models = ModelSet::from_catalogue(
        &catalogue,
        &names,
        automix::UpstreamLimits::batch(config.hparam.max_workers),
    )?;
    let (selected, skipped) = select_queries(read_queries(queries_path)?, &settings, args_labels);
    let selected = match shard {
        Some(s) => s.select(selected),
        None => selected,
    };
    for (task, why) in &skipped {
        eprintln!("skipping task {task}: {why}");
    }
    if selected.is_empty() {
        bail!("no queries selected from {}", queries_path.display());
    }
    let job = CollectJob {
        models,
        prompts: prompts(config)?,
        automix: config.automix.clone(),
        collect: settings,
        max_workers: config.hparam.max_workers,
        labels: args_labels,
    };
    let bar = indicatif::ProgressBar::new(selected.len() as u64);
    bar.set_style(
        indicatif::ProgressStyle::with_template(
            "{elapsed_precise} [{bar:30}] {pos}/{len} {msg} (eta {eta})",
        )
        .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    let summary = collect(&job, &selected, output, |event| match event {
        CollectEvent::Row(row) => {
            bar.inc(1);
            bar.set_message(row.task_name.clone());
        }
        CollectEvent::Failed(q, e) => {
            bar.inc(1);
            bar.println(format!("failed {} ({}): {e}", q.id, q.task_name));
        }
    })
    .await?;
    bar.finish_and_clear();
    if json {
        println!("{}", serde_json::to_string_pretty(&summary)?);
    } else {
        print_collect_summary(&summary, output);
    }
    Ok(())
}

/// What `collect` did, for people: rows, quality per task, verifier calibration, tokens.
fn print_collect_summary(summary: &automix::collect::CollectSummary, output: &Path) {
    println!(
        "rows: {} ({} resumed, {} added, {} failed) in {:.0} s → {}",
        summary.total,
        summary.resumed,
        summary.added,
        summary.failed,
        summary.seconds,
        output.display()
    );
    println!("\nmean score per task:");
    for (task, per_model) in &summary.quality {
        let cells: Vec<String> = per_model
            .iter()
            .map(|(m, q)| format!("{m} {q:.3}"))
            .collect();
        println!("  {task:<16} {}", cells.join("  "));
    }
    println!("\nverifier calibration (AUC against the model's own correctness):");
    for (model, per_signal) in &summary.calibration {
        let cells: Vec<String> = per_signal
            .iter()
            .filter(|(_, c)| c.unknown_share < 1.0)
            .map(|(signal, c)| {
                format!(
                    "{signal} AUC {} ECE {} unknown {:.1}%",
                    fmt_opt(c.auc),
                    fmt_opt(c.ece),
                    100.0 * c.unknown_share
                )
            })
            .collect();
        println!("  {model:<22} {}", cells.join(" | "));
    }
    if !summary.signal_costs.is_empty() {
        println!("\nverification cost per verified answer, by signal:");
    }
    for (model, per_signal) in &summary.signal_costs {
        let cells: Vec<String> = (per_signal.iter())
            .map(|(signal, cost)| format!("{signal} {cost:.3e}"))
            .collect();
        println!("  {model:<22} {}", cells.join(" | "));
    }
    let tokens: Vec<String> = (summary.tokens.iter())
        .map(|(model, n)| format!("{model} {n}"))
        .collect();
    println!("\ntokens: {}", tokens.join(", "));
}

/// `automix merge`: shard row files into one, every selected query once.
fn run_merge(
    config: &Config,
    json: bool,
    output: &Path,
    queries: Option<&Path>,
    files: &[PathBuf],
) -> Result<()> {
    let expected = match queries.or(config.data_path.query_data_train.as_deref()) {
        Some(path) => Some(
            select_queries(
                read_queries(path)?,
                &config.collect,
                LabelSource::GroundTruth,
            )
            .0,
        ),
        None => None,
    };
    let rows = merge_rows(files, expected.as_deref())?;
    write_jsonl(output, &rows)?;
    if json {
        println!(
            "{}",
            serde_json::json!({"rows": rows.len(), "output": output})
        );
    } else {
        println!(
            "merged {} rows from {} shard files → {}",
            rows.len(),
            files.len(),
            output.display()
        );
    }
    Ok(())
}

/// `0.123` or `—`.
pub fn fmt_opt(v: Option<f64>) -> String {
    v.map_or_else(|| "—".to_owned(), |v| format!("{v:.3}"))
}
