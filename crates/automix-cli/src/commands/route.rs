//! `automix route`: one query, stdin or a batch, with an optional comparison against
//! always-small and always-large.

use super::*;

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
    /// calls), and compare quality and cost with routing. With `--json` the output is one
    /// object, `{"items": [...], "comparison": [...]}`, instead of JSON lines.
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

/// `automix route`.
pub async fn route(config: &Config, json: bool, args: &RouteArgs) -> Result<()> {
    let router = build_router(
        config,
        args.no_policy,
        UpstreamLimits::batch(config.hparam.max_workers),
    )?;
    if let Some(l) = args.lambda {
        if automix::core::request_lambda(l).is_err() {
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
    // The progress bar goes to stderr (and hides itself when that is not a terminal), so
    // JSON on stdout stays clean.
    let items = if queries.len() < 2 {
        router.route_batch_with(&queries, &options).await
    } else {
        route_with_progress(&router, &queries, &options, config.hparam.max_workers).await
    };
    if let Some(path) = &args.output {
        automix::dataset::write_jsonl(path, &items)?;
        if !json {
            println!("{} routed items → {}", items.len(), path.display());
        }
    } else if json && args.compare && items.len() > 1 {
        let comparison = compare(&router, &queries, &items, config.hparam.max_workers).await;
        let out = serde_json::json!({"items": items, "comparison": comparison});
        println!("{}", serde_json::to_string(&out)?);
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
pub(crate) async fn route_with_progress(
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

/// One line of a comparison: a way of answering the batch, its mean quality (where the
/// queries have ground truth) and mean cost per query.
#[derive(Debug, serde::Serialize)]
pub(crate) struct CompareLine {
    name: String,
    quality: Option<f64>,
    cost_per_query: f64,
    failed: usize,
}

/// Always-small and always-large on the same queries (each model asked alone), against what
/// routing did: AutoMix first, then the cheapest and the most expensive model alone.
pub(crate) async fn compare(
    router: &Router,
    queries: &[QueryRow],
    items: &[automix::BatchItem],
    workers: usize,
) -> Vec<CompareLine> {
    use futures::StreamExt;
    let models = router.models();
    let (small, large) = (&models.first().entry.name, &models.last().entry.name);
    let line = |name: String, outcomes: &[&automix::RouteOutcome], failed: usize| {
        let n = outcomes.len().max(1) as f64;
        let q: Vec<f64> = outcomes.iter().filter_map(|o| o.task_performance).collect();
        CompareLine {
            name,
            quality: (!q.is_empty()).then(|| q.iter().sum::<f64>() / q.len() as f64),
            cost_per_query: outcomes.iter().map(|o| o.total_cost).sum::<f64>() / n,
            failed,
        }
    };
    let routed: Vec<&automix::RouteOutcome> =
        items.iter().filter_map(|i| i.outcome.as_ref()).collect();
    let mut lines = vec![line("AutoMix".into(), &routed, items.len() - routed.len())];
    for name in [small, large] {
        let alone: Vec<_> = futures::stream::iter(queries.iter().map(|q| router.alone(q, name)))
            .buffered(workers.max(1))
            .collect()
            .await;
        let ok: Vec<&automix::RouteOutcome> =
            alone.iter().filter_map(|r| r.as_ref().ok()).collect();
        lines.push(line(format!("always {name}"), &ok, alone.len() - ok.len()));
    }
    lines
}

/// [`compare`], printed.
pub(crate) async fn print_comparison(
    router: &Router,
    queries: &[QueryRow],
    items: &[automix::BatchItem],
    workers: usize,
) {
    let lines = compare(router, queries, items, workers).await;
    let routed_cost = lines[0].cost_per_query;
    println!("\ncompared on the same {} queries:", items.len());
    for (i, l) in lines.iter().enumerate() {
        let saved = if i > 0 && l.cost_per_query > 0.0 {
            format!(
                "  (AutoMix costs {:.0}% of it)",
                100.0 * routed_cost / l.cost_per_query
            )
        } else {
            String::new()
        };
        let failed = if l.failed > 0 {
            format!("  [{} failed]", l.failed)
        } else {
            String::new()
        };
        println!(
            "  {:<24} quality {:>6}  cost/query {}{saved}{failed}",
            l.name,
            fmt_opt(l.quality),
            fmt_cost(l.cost_per_query)
        );
    }
}

/// What routing a batch did: the share answered by each model, escalations, cost, and the
/// quality where the queries had ground truth.
pub(crate) fn print_route_summary(items: &[automix::BatchItem]) {
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

pub(crate) fn single_query(text: &str) -> QueryRow {
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
