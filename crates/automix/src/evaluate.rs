//! `eval`: every method trained on the train rows and measured on held-out rows, against
//! always-small, always-large and the oracle; plus the cost–quality frontier.

use serde::{Deserialize, Serialize};

use automix_core::{
    Dataset, FrontierMetrics, MethodKind, OperatingPoint, Outcome, QueryEvidence, VerifierScore,
    frontier, frontier_metrics,
};

use crate::config::Config;
use crate::dataset::TrainingRow;
use crate::error::{AutomixError, Result};
use crate::training::{cost_model, method_and_options, method_spec, routing_records};

/// One line of the evaluation table.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EvalLine {
    /// Method or baseline name.
    pub name: String,
    /// Mean quality on the held-out rows.
    pub quality: f64,
    /// Mean cost per query.
    pub cost: f64,
    /// Share escalated.
    pub escalation_rate: f64,
    /// ΔIBC; `None` when undefined on these rows.
    pub delta_ibc: Option<f64>,
    /// Why ΔIBC is undefined, if it is.
    pub delta_ibc_note: Option<String>,
    /// The component the union picked, or the training note.
    pub detail: String,
    /// LLMRouter's combined score under `metric.weights` (see [`crate::config::MetricWeights::score`]).
    #[serde(default)]
    pub score: f64,
}

/// The evaluation report.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct EvalReport {
    /// Training rows used.
    pub train_rows: usize,
    /// Held-out rows evaluated.
    pub test_rows: usize,
    /// Small model name.
    pub small_model: String,
    /// Large model name.
    pub large_model: String,
    /// Methods, then baselines and the oracle.
    pub lines: Vec<EvalLine>,
    /// The oracle's ΔIBC on the held-out rows.
    pub oracle_delta_ibc: Option<f64>,
    /// Operating points of the configured method's sweep on the held-out rows (the calibrated
    /// curves' cuts, or the ExactPOMDP λ sweep for methods without curves).
    pub sweep: Vec<OperatingPoint>,
    /// What the configured method's cross-validation chose on the training rows.
    pub cross_validation: Option<automix_core::CvSummary>,
    /// The frontier (upper convex hull) of all points.
    pub frontier: Vec<OperatingPoint>,
    /// AIQ, APGR, CPT of the frontier.
    pub frontier_metrics: FrontierMetrics,
}

fn line(name: &str, data: &Dataset, o: Outcome, detail: String) -> EvalLine {
    let lift = data.lift(&o);
    EvalLine {
        name: name.to_owned(),
        quality: o.quality,
        cost: o.cost,
        escalation_rate: o.escalation_rate,
        delta_ibc: lift.value(),
        delta_ibc_note: lift.value().is_none().then(|| lift.to_string()),
        detail,
        score: f64::NAN,
    }
}

/// Trains every method on `train` and evaluates on `test`.
pub fn evaluate(
    config: &Config,
    train: &[TrainingRow],
    test: &[TrainingRow],
    small: &str,
    large: &str,
) -> Result<EvalReport> {
    if train.is_empty() || test.is_empty() {
        return Err(AutomixError::InsufficientRows(format!(
            "eval needs train and test rows; got {} and {}",
            train.len(),
            test.len()
        )));
    }
    let signal = config.hparam.verifier_signal;
    let costs = cost_model(config);
    let train_records = routing_records(train, small, large, signal)?;
    let test_records = routing_records(test, small, large, signal)?;
    let test_data = Dataset::new(&test_records, &costs)?;
    let (_, options) = method_and_options(config)?;
    let mut lines = Vec::new();
    let mut points = Vec::new();
    for kind in MethodKind::ALL {
        let spec = method_spec(config, kind);
        let policy = match automix_core::train(&train_records, &costs, &spec, &options) {
            Ok(p) => p,
            Err(e) => {
                lines.push(EvalLine {
                    name: kind.name().to_owned(),
                    quality: f64::NAN,
                    cost: f64::NAN,
                    escalation_rate: f64::NAN,
                    delta_ibc: None,
                    delta_ibc_note: None,
                    detail: format!("not trained: {e}"),
                    score: f64::NAN,
                });
                continue;
            }
        };
        let escalate: Vec<bool> = test_records
            .iter()
            .map(|r| {
                policy
                    .decide_for(&QueryEvidence {
                        verifier: r.verifier,
                        task_name: r.task_name.as_deref(),
                        small_answer: r.small_answer.as_deref(),
                    })
                    .escalates()
            })
            .collect();
        let o = test_data.evaluate(&escalate)?;
        points.push(OperatingPoint::from(o));
        let mut detail = policy.rule.describe();
        if policy.chosen_component != kind {
            detail = format!("chose {}: {detail}", policy.chosen_component.name());
        }
        if let Some(note) = &policy.summary.note {
            detail = format!("{detail}; {note}");
        }
        lines.push(line(kind.name(), &test_data, o, detail));
    }
    // The configured method's family, fitted on train, measured on test: the calibrated
    // curves' cut sweep when it has them, else the ExactPOMDP λ sweep.
    let (configured, _) = method_and_options(config)?;
    let default_policy = automix_core::train(&train_records, &costs, &configured, &options).ok();
    let cross_validation = default_policy
        .as_ref()
        .and_then(|p| p.summary.cross_validation.clone());
    let rules: Vec<automix_core::DecisionRule> = match default_policy.and_then(|p| p.calibration) {
        Some(c) => c.model.sweep().into_iter().map(|(_, rule)| rule).collect(),
        None => {
            let train_data = Dataset::new(&train_records, &costs)?;
            let spec = method_spec(config, MethodKind::ExactPomdp);
            automix_core::candidates(&spec, &train_data)?
                .into_iter()
                .map(|c| c.rule)
                .collect()
        }
    };
    let mut sweep = Vec::new();
    for rule in rules {
        let escalate: Vec<bool> = test_records
            .iter()
            .map(|r| match r.verifier {
                VerifierScore::Known(p) => rule.escalates(p, r.task_name.as_deref()),
                VerifierScore::Unknown => options.unknown_confidence.escalates(),
            })
            .collect();
        sweep.push(OperatingPoint::from(test_data.evaluate(&escalate)?));
    }
    let n = test_records.len();
    let none = test_data.evaluate(&vec![false; n])?;
    let all = test_data.evaluate(&vec![true; n])?;
    let oracle = test_data.evaluate(&test_data.oracle())?;
    let base = test_data.baseline();
    let small_only = Outcome {
        quality: base.small_quality,
        cost: base.small_cost,
        escalation_rate: 0.0,
    };
    let large_only = Outcome {
        quality: base.large_quality,
        cost: base.large_cost,
        escalation_rate: 1.0,
    };
    lines.push(line(
        "always-small",
        &test_data,
        small_only,
        "no verification".into(),
    ));
    lines.push(line(
        "always-large",
        &test_data,
        large_only,
        "large model only".into(),
    ));
    lines.push(line(
        "verify, never escalate",
        &test_data,
        none,
        String::new(),
    ));
    lines.push(line(
        "verify, always escalate",
        &test_data,
        all,
        String::new(),
    ));
    let oracle_line = line(
        "oracle",
        &test_data,
        oracle,
        "escalate iff large scores higher".into(),
    );
    let oracle_delta_ibc = oracle_line.delta_ibc;
    lines.push(oracle_line);
    for l in &mut lines {
        l.score = config
            .metric
            .weights
            .score(l.quality, l.cost, base.large_cost);
    }
    let mut all_points = points;
    all_points.extend(sweep.iter().copied());
    all_points.push(small_only.into());
    all_points.push(large_only.into());
    let hull = frontier(&all_points);
    let metrics = frontier_metrics(&all_points, &base, base.small_cost, base.large_cost);
    Ok(EvalReport {
        train_rows: train.len(),
        test_rows: test.len(),
        small_model: small.to_owned(),
        large_model: large.to_owned(),
        lines,
        oracle_delta_ibc,
        sweep,
        cross_validation,
        frontier: hull,
        frontier_metrics: metrics,
    })
}

/// Mean, standard deviation and worst value of a metric over re-splits.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Spread {
    /// Mean over the splits where it is defined.
    pub mean: f64,
    /// Sample standard deviation (0 with one split).
    pub sd: f64,
    /// The lowest value.
    pub worst: f64,
    /// Splits where it is defined.
    pub defined: usize,
    /// Student-t 95% interval of the mean (re-splits overlap, so read it as a guide, not a
    /// test); `None` with fewer than two splits.
    pub ci95: Option<(f64, f64)>,
}

impl Spread {
    /// The spread of `values` (`None` entries are undefined splits); `None` if none is defined.
    pub fn of(values: &[Option<f64>]) -> Option<Self> {
        let v: Vec<f64> = values.iter().flatten().copied().collect();
        if v.is_empty() {
            return None;
        }
        let (mean, sd) = automix_core::calibrate::mean_sd(&v);
        Some(Self {
            mean,
            sd,
            worst: v.iter().copied().fold(f64::INFINITY, f64::min),
            defined: v.len(),
            ci95: automix_core::calibrate::t_interval(&v, 0.95),
        })
    }
}

/// One method over many re-splits.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ResplitLine {
    /// Method or baseline name.
    pub name: String,
    /// Mean quality over the splits it trained on.
    pub quality: f64,
    /// Mean cost.
    pub cost: f64,
    /// Mean share escalated.
    pub escalation_rate: f64,
    /// ΔIBC over the splits: mean ± sd and the worst split.
    pub delta_ibc: Option<Spread>,
    /// ΔIBC of every split, in split order (`None` where undefined or not trained).
    pub per_split: Vec<Option<f64>>,
}

/// Every method's line over `seeds` random train/test re-splits of `rows` (by id hash,
/// `test_share` held out), as the paper averages over seeds: mean, spread and worst split.
pub fn evaluate_resplits(
    config: &Config,
    rows: &[TrainingRow],
    small: &str,
    large: &str,
    seeds: u64,
    test_share: f64,
) -> Result<Vec<ResplitLine>> {
    let mut out: Vec<(ResplitLine, usize)> = Vec::new();
    for seed in 0..seeds {
        let (test, train): (Vec<TrainingRow>, Vec<TrainingRow>) = rows
            .iter()
            .cloned()
            .partition(|r| crate::collect::split_of(&r.id, seed + 1000, test_share) == "test");
        let report = evaluate(config, &train, &test, small, large)?;
        for line in report.lines {
            let index = match out.iter().position(|(s, _)| s.name == line.name) {
                Some(i) => i,
                None => {
                    out.push((
                        ResplitLine {
                            name: line.name.clone(),
                            quality: 0.0,
                            cost: 0.0,
                            escalation_rate: 0.0,
                            delta_ibc: None,
                            per_split: vec![None; seed as usize],
                        },
                        0,
                    ));
                    out.len() - 1
                }
            };
            let (slot, trained) = &mut out[index];
            if line.quality.is_finite() {
                slot.quality += line.quality;
                slot.cost += line.cost;
                slot.escalation_rate += line.escalation_rate;
                *trained += 1;
            }
            slot.per_split.push(line.delta_ibc);
        }
    }
    Ok(out
        .into_iter()
        .map(|(mut line, trained)| {
            let n = trained.max(1) as f64;
            line.quality /= n;
            line.cost /= n;
            line.escalation_rate /= n;
            line.delta_ibc = Spread::of(&line.per_split);
            line
        })
        .collect())
}
