//! `automix eval --compare-signals`: every verification signal the rows carry, side by side
//! over the same re-splits (the README's signal tables).

use automix::signal_comparison::{FUSED, Resplits, SignalLine, compare_signals};

use super::*;

/// Re-splits when `--resplits` is not given: the README's tables use 10.
const DEFAULT_RESPLITS: u64 = 10;

/// `eval --compare-signals`: the comparison instead of the held-out table.
pub(crate) fn compare(config: &Config, json: bool, args: &EvalArgs) -> Result<()> {
    let (_, all) = args.rows.read(config)?;
    let (small, large) = pair(config, &all)?;
    let models = models_in(&all);
    let resplits = Resplits {
        seeds: args.resplits.unwrap_or(DEFAULT_RESPLITS),
        test_share: config.collect.test_share,
        cascade: args.cascade.then_some(models.as_slice()),
    };
    let lines = compare_signals(config, &all, (&small, &large), resplits)?;
    if json {
        let value =
            serde_json::json!({ "small_model": small, "large_model": large, "signals": lines });
        println!("{}", serde_json::to_string_pretty(&value)?);
        return Ok(());
    }
    println!(
        "{small} → {large}: every signal over {} random re-splits of all {} rows ({:.0}% held out each); ΔIBC mean ± sd (worst split)",
        resplits.seeds,
        all.len(),
        100.0 * resplits.test_share
    );
    let method = config.hparam.routing_method.name();
    let cascade = if args.cascade { "  cascade net" } else { "" };
    let header = format!(
        "{:<20} {:>6} {:>6} {:>8}  {:<26} {:<26}{cascade}",
        "signal", "AUC", "ECE", "unknown", method, "Threshold"
    );
    println!("{}", header.trim_end());
    for line in &lines {
        print_signal_line(line);
    }
    let fused = lines.iter().any(|l| l.signal == FUSED);
    if !fused && lines.len() >= 2 {
        println!("no fused line: hparam.fuse_signals needs routing_method auto or Calibrated");
    }
    Ok(())
}

/// One signal's row of the table.
fn print_signal_line(line: &SignalLine) {
    let cal = line.calibration.as_ref();
    let unknown = cal.map_or("—".to_owned(), |c| {
        format!("{:.1}%", 100.0 * c.unknown_share)
    });
    let threshold = line.threshold.as_ref().map_or("—".to_owned(), delta_ibc);
    let cascade = line.cascade.map_or(String::new(), |s| {
        format!("  {:.3} ± {:.3} ({:.3})", s.mean, s.sd, s.worst)
    });
    let text = format!(
        "{:<20} {:>6} {:>6} {:>8}  {:<26} {:<26}{cascade}",
        line.signal,
        fmt_opt(cal.and_then(|c| c.auc)),
        fmt_opt(cal.and_then(|c| c.ece)),
        unknown,
        delta_ibc(&line.method),
        threshold
    );
    println!("{}", text.trim_end());
}

/// A re-split line's ΔIBC as "mean ± sd (worst)".
fn delta_ibc(line: &automix::evaluate::ResplitLine) -> String {
    line.delta_ibc.map_or("—".to_owned(), |s| {
        format!("{:.2} ± {:.2} ({:.2})", s.mean, s.sd, s.worst)
    })
}
