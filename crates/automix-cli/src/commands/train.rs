//! `automix train`: a policy (and with `--cascade` a cascade plan) from the training rows.

use super::*;

/// Arguments of `automix train`.
#[derive(Args, Debug)]
pub struct TrainArgs {
    /// The rows (`--rows`, `--task`).
    #[command(flatten)]
    pub rows: RowsArgs,
    /// Where to write the policy (default: model_path.save_model_path).
    #[arg(long)]
    pub output: Option<PathBuf>,
    /// Train on every row, not only `split: train`.
    #[arg(long)]
    pub all_rows: bool,
    /// Also solve the N-model cascade over every model in the rows (cheapest first).
    #[arg(long)]
    pub cascade: bool,
}

/// `automix train`.
pub fn train(config: &Config, json: bool, args: &TrainArgs) -> Result<()> {
    let spec = project::TrainSpec {
        rows: args.rows.rows.clone(),
        task: args.rows.task.clone(),
        label_sources: args.rows.label_source.clone(),
        all_rows: args.all_rows,
        cascade: args.cascade,
        output: args.output.clone(),
    };
    let project::Trained {
        policy,
        path: out,
        pair,
    } = project::train(config, &spec)?;
    if pair.from_rows {
        eprintln!("note: no llm_data file; small and large model taken from the rows' order");
    }
    let (small, large) = (pair.small, pair.large);
    if json {
        println!("{}", serde_json::to_string_pretty(&policy)?);
        return Ok(());
    }
    let s = &policy.policy.summary;
    println!(
        "trained {} ({} chose {}) on {} rows: {small} → {large}, signal {}",
        policy.policy.method.kind.name(),
        policy.policy.method.kind.name(),
        policy.policy.chosen_component.name(),
        s.rows,
        policy.verifier_signal.name()
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
    if let Some(f) = &policy.fusion {
        print_fusion(f);
    }
    if let Some(p) = &policy.verification_pricing {
        print_pricing("", p);
    }
    if config.hparam.verbose {
        print_training_detail(&policy.policy);
    }
    if let Some(c) = &policy.cascade {
        let start = c.policy.start;
        println!(
            "  cascade {}: start {} {}, {} decision-table entries, {} per-task starts, {} per-task tables",
            c.models.join(" → "),
            c.models[start.model],
            if start.verify {
                "with verification"
            } else {
                "without verification"
            },
            c.policy.table.len(),
            c.task_starts.len(),
            c.task_policies.len()
        );
        if let Some(cv) = &c.cross_validation {
            print_cascade_cv(cv);
        }
        if let Some(p) = &c.verification_pricing {
            print_pricing("cascade ", p);
        }
    }
    println!("policy → {}", out.display());
    Ok(())
}

/// How token costs priced the verified runs, with a note when the rows mix both ways.
fn print_pricing(what: &str, p: &automix::dataset::VerificationPricing) {
    println!(
        "  {what}verification cost: {} verified runs charged per signal, {} their whole cost \
         (collected before the per-signal breakdown)",
        p.per_signal, p.whole
    );
    if p.is_mixed() {
        println!(
            "  note: the rows mix both, so a signal costs less on the re-collected ones; \
             re-collect the older rows (`automix collect`) to price them alike"
        );
    }
}

/// What fusing the signals found: used or not, each signal alone, what each adds.
fn print_fusion(f: &automix::fused::SignalFusion) {
    let names: Vec<&str> = f.signals.iter().map(|s| s.name()).collect();
    let verdict = match (&f.model, &f.nested) {
        (Some(_), _) => "used: it beats every signal alone out of fold and held out",
        (None, Some(_)) => "not used: its lead over the best signal alone is not clear held out",
        (None, None) => "not used: a signal alone does as well out of fold",
    };
    println!(
        "  fused confidence of {} (out of fold {:.4}): {verdict}",
        names.join(" + "),
        f.fused_cv
    );
    if let Some(n) = &f.nested {
        println!(
            "    nested check, {} held-out folds: fused {:.4} against the best signal alone {:.4}",
            n.folds, n.fused, n.single
        );
        if n.untrained > 0 {
            println!(
                "    ({} outer folds left out, a procedure could not be trained without them: {})",
                n.untrained,
                n.untrained_reason
                    .as_deref()
                    .unwrap_or("no reason recorded")
            );
        }
    }
    for ((s, alone), (_, without)) in f.single_cv.iter().zip(&f.without_cv) {
        println!(
            "    {:<20} alone {alone:>8.4}   adds {:>+8.4} to the fusion",
            s.name(),
            f.fused_cv - without
        );
    }
}

/// The cascade's cross-validation: the bins chosen, each bin count's and each κ's net.
fn print_cascade_cv(cv: &automix::cascade::CascadeCv) {
    if let Some(f) = &cv.fusion {
        let names: Vec<&str> = f.signals.iter().map(|s| s.name()).collect();
        let verdict = if f.fused_models.is_empty() {
            "routes on verifier_signal alone".to_owned()
        } else {
            format!(
                "routes on the fusion for {} (net {:.4}), the other models on verifier_signal",
                f.fused_models.join(", "),
                f.chosen_net
            )
        };
        println!(
            "  cascade fused confidence ({}): out-of-fold net {:.4} with every model fused, verifier_signal alone {:.4}: {verdict}",
            names.join(" + "),
            f.fused_net,
            f.single_net
        );
    }
    let tried: Vec<String> = cv
        .bins_tried
        .iter()
        .map(|(b, net)| format!("{b}: {net:.4}"))
        .chain(
            cv.quantile_bins_tried
                .iter()
                .map(|(b, net)| format!("{b} quantile: {net:.4}")),
        )
        .collect();
    println!(
        "  cascade verifier bins {} by cross-validation (out-of-fold net per bin count: {})",
        cv.bins().describe(),
        tried.join(", ")
    );
    let kappas: Vec<String> = cv
        .task_kappas_tried
        .iter()
        .map(|(k, net)| format!("prior κ={k}: {net:.4}"))
        .chain(
            cv.task_observation_tried
                .iter()
                .map(|(k, net)| format!("prior and verifier κ={k}: {net:.4}")),
        )
        .collect();
    if !kappas.is_empty() {
        let chain_routes = cv.chain_routes().is_some();
        let chosen = match (cv.task_kappa, cv.task_observation) {
            (None, _) if chain_routes => "none (the threshold chain routes)".to_owned(),
            (None, _) => "none, one pooled table".to_owned(),
            (Some(k), false) => format!("each task's prior, κ={k}"),
            (Some(k), true) => format!("each task's prior and verifier, κ={k}"),
        };
        println!(
            "  cascade per-task tables: {chosen} (out-of-fold net {:.4} pooled, {})",
            cv.bins_tried
                .iter()
                .chain(&cv.quantile_bins_tried)
                .map(|t| t.1)
                .fold(f64::NEG_INFINITY, f64::max),
            kappas.join(", ")
        );
    }
    if let Some(chain) = &cv.chain {
        print_chain_cv(chain);
    }
    print_fixed_model_check(cv);
}

/// The cascade against the best fixed model: its out-of-fold lead and what routes.
fn print_fixed_model_check(cv: &automix::cascade::CascadeCv) {
    let (name, net) = &cv.best_fixed;
    let (mean, se) = cv.lead_over_fixed.unwrap_or((cv.net.0 - net, f64::NAN));
    let verdict = match &cv.fallback {
        Some(_) => format!("every query goes to {name} alone"),
        None if mean > se => "the cascade routes".to_owned(),
        None => {
            "the cascade routes, on a lead within one standard error: it may not hold on new rows"
                .to_owned()
        }
    };
    println!(
        "  cascade against the best fixed model, {name} ({net:.4}): out of fold the cascade leads it by {mean:.4} (standard error {se:.4}); {verdict}"
    );
}

/// The learned threshold chain: its members and cuts, its out-of-fold nets, whether it routes.
fn print_chain_cv(chain: &automix::cascade_chain::ChainCv) {
    let cuts: Vec<String> = (chain.cuts().into_iter())
        .chain(chain.members.last().map(|m| format!("{m} answers")))
        .collect();
    let tried: Vec<String> = (chain.tried.iter())
        .map(|(k, net)| match k {
            0.0 => format!("pooled: {net:.4}"),
            k => format!("per task κ={k}: {net:.4}"),
        })
        .collect();
    let verdict = if chain.chosen {
        "it routes (it nets more than the solved table)"
    } else {
        "the solved table routes"
    };
    println!(
        "  cascade threshold chain {} (out-of-fold net {}): {verdict}",
        cuts.join(", "),
        tried.join(", ")
    );
}

/// `hparam.verbose`: the rule in full, the candidates and the λ family, so a user can see
/// what training weighed.
pub(crate) fn print_training_detail(policy: &automix::core::Policy) {
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

pub(crate) fn print_cross_validation(cv: &automix::core::CvSummary) {
    println!(
        "  cross-validation ({} folds × {} seeded assignments, {}): chose {}",
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
    if let Some(p) = &cv.pooled {
        println!(
            "    {} distinct confidences fitted as {} quantile groups (cuts and decisions on the raw values)",
            p.distinct, p.groups
        );
    }
    for a in &cv.alternatives {
        println!("    {:<24} {:.4} ± {:.4}", a.name, a.mean, a.sd);
    }
}
