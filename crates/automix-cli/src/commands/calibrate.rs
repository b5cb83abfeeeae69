//! `automix calibrate`: the trained λ family of a calibrated policy.

use super::*;

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
