//! Every verification signal the rows carry, compared on the same rows and re-splits: how
//! well the small model's confidence ranks its own answers (AUC, ECE, unknown share), what
//! the configured method and the paper's Threshold make of it, and then the fusion of all
//! of them. What `automix eval --compare-signals` prints: the README's signal tables, from
//! one command instead of one edited config per signal.

use automix_verify::CalibrationReport;
use serde::{Deserialize, Serialize};

use crate::config::{Config, VerifierSignal};
use crate::dataset::TrainingRow;
use crate::error::{AutomixError, Result};
use crate::evaluate::{ResplitLine, Spread, evaluate_cascade_resplits, evaluate_resplits};

/// Name of the line that fuses every compared signal.
pub const FUSED: &str = "fused";

/// One signal (or the fusion of all) over the re-splits.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SignalLine {
    /// The signal's config name, or [`FUSED`].
    pub signal: String,
    /// The small model's confidence against its own correctness on every row (`None` for
    /// the fusion, whose values are cross-fitted per training).
    pub calibration: Option<CalibrationReport>,
    /// The configured `routing_method` on this signal (the `fused` line for the fusion).
    pub method: ResplitLine,
    /// The paper's Threshold on this signal (`None` for the fusion).
    pub threshold: Option<ResplitLine>,
    /// With a cascade: its net over the same re-splits, routed on this signal.
    pub cascade: Option<Spread>,
}

/// Re-splits of the comparison: how many, the share held out, and the cascade's models
/// (cheapest first) when the cascade is compared too.
#[derive(Debug, Clone, Copy)]
pub struct Resplits<'a> {
    /// Re-splits (seeds 0..n).
    pub seeds: u64,
    /// Share of the rows held out in each.
    pub test_share: f64,
    /// The cascade's models, or `None` for the two-model comparison only.
    pub cascade: Option<&'a [String]>,
}

/// The signals the small model's rows carry a value of (some row known), in
/// [`crate::signal::ALL`] order, each with its calibration on every row the model was
/// verified on (the collect summary's); a cascade-only signal (agreement with a previous
/// answer) is not one the small model can have.
pub fn signals_present(
    rows: &[TrainingRow],
    small: &str,
) -> Vec<(VerifierSignal, CalibrationReport)> {
    let mut summary = crate::collect::summarise(rows);
    let calibration = summary.calibration.remove(small).unwrap_or_default();
    crate::signal::ALL
        .into_iter()
        .filter(|s| !s.reads_previous_answer())
        .filter_map(|s| {
            let report = calibration.get(s.name())?;
            (report.unknown < report.rows).then(|| (s, report.clone()))
        })
        .collect()
}

/// Every signal present ([`signals_present`]) with `config`'s settings and only
/// `hparam.verifier_signal` changed, then their fusion (`hparam.fuse_signals` set to all
/// of them) where there are two or more and the method is cross-validated (the fusion is
/// kept only where it wins out of fold), each over the same `resplits`.
pub fn compare_signals(
    config: &Config,
    rows: &[TrainingRow],
    (small, large): (&str, &str),
    resplits: Resplits<'_>,
) -> Result<Vec<SignalLine>> {
    if resplits.seeds == 0 {
        return Err(AutomixError::Setting {
            key: "resplits",
            message: "at least 1 re-split to compare on, 0 given".into(),
        });
    }
    let present = signals_present(rows, small);
    if present.is_empty() {
        return Err(AutomixError::InsufficientRows(format!(
            "no verification signal of {small} in the rows: nothing to compare"
        )));
    }
    let mut out = Vec::new();
    for (signal, calibration) in &present {
        let signal = *signal;
        let mut c = config.clone();
        c.hparam.verifier_signal = signal;
        c.hparam.fuse_signals.clear();
        let lines = evaluate_resplits(&c, rows, small, large, resplits.seeds, resplits.test_share)?;
        out.push(SignalLine {
            signal: signal.name().to_owned(),
            calibration: Some(calibration.clone()),
            method: line_named(&lines, config.hparam.routing_method.name())?,
            threshold: Some(line_named(&lines, "Threshold")?),
            cascade: cascade_net(&c, rows, resplits)?,
        });
    }
    if present.len() >= 2 && config.hparam.routing_method.cross_validated() {
        let mut c = config.clone();
        c.hparam.fuse_signals = present.iter().map(|(s, _)| *s).collect();
        let lines = evaluate_resplits(&c, rows, small, large, resplits.seeds, resplits.test_share)?;
        out.push(SignalLine {
            signal: FUSED.to_owned(),
            calibration: None,
            method: line_named(&lines, FUSED)?,
            threshold: None,
            cascade: cascade_net(&c, rows, resplits)?,
        });
    }
    Ok(out)
}

/// The re-split line called `name`; its absence is a bug in the evaluation, said as such.
fn line_named(lines: &[ResplitLine], name: &str) -> Result<ResplitLine> {
    lines
        .iter()
        .find(|l| l.name == name)
        .cloned()
        .ok_or_else(|| {
            AutomixError::InsufficientRows(format!("the re-split evaluation has no {name:?} line"))
        })
}

/// The trained cascade's net over the re-splits (its first line), if a cascade is compared.
fn cascade_net(config: &Config, rows: &[TrainingRow], r: Resplits<'_>) -> Result<Option<Spread>> {
    let Some(models) = r.cascade else {
        return Ok(None);
    };
    let lines = evaluate_cascade_resplits(config, rows, models, r.seeds, r.test_share)?;
    Ok(lines.first().map(|l| l.net))
}
