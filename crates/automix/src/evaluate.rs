//! `eval`: every method trained on the train rows and measured on held-out rows, against
//! always-small, always-large and the oracle; plus the cost–quality frontier.

use serde::{Deserialize, Serialize};

use automix_core::{
    Dataset, FrontierMetrics, MethodKind, OperatingPoint, Outcome, frontier, frontier_metrics,
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

/// The escalation flags of `rule` on every row of `data`, under the same unknown-score and
/// fixed-answer rules the router applies (`automix_core::decisions`).
pub(crate) fn rule_flags(
    data: &Dataset,
    rule: &automix_core::DecisionRule,
    options: &automix_core::TrainOptions,
) -> Vec<bool> {
    let candidate = automix_core::Candidate {
        method: MethodKind::Threshold,
        rule: rule.clone(),
        lambda: None,
    };
    automix_core::decisions(
        data,
        &candidate,
        options.unknown_confidence,
        &options.fixed_answers,
    )
}

/// The rows of one evaluation, resolved once: records, costs, the held-out dataset.
struct EvalData {
    train: Vec<automix_core::RoutingRecord>,
    test: Dataset,
    costs: automix_core::CostModel,
    options: automix_core::TrainOptions,
}

impl EvalData {
    /// The held-out outcome of `rule` under the same unknown-score and fixed-answer rules the
    /// router applies (`automix_core::decisions`).
    fn outcome_of(&self, rule: &automix_core::DecisionRule) -> Result<Outcome> {
        Ok(self
            .test
            .evaluate(&rule_flags(&self.test, rule, &self.options))?)
    }

    /// `kind` trained on the train rows, measured on the held-out rows.
    fn method_line(
        &self,
        config: &Config,
        kind: MethodKind,
    ) -> Result<(EvalLine, Option<Outcome>)> {
        let spec = method_spec(config, kind);
        let policy = match automix_core::train(&self.train, &self.costs, &spec, &self.options) {
            Ok(p) => p,
            Err(e) => {
                let failed = EvalLine {
                    name: kind.name().to_owned(),
                    quality: f64::NAN,
                    cost: f64::NAN,
                    escalation_rate: f64::NAN,
                    delta_ibc: None,
                    delta_ibc_note: None,
                    detail: format!("not trained: {e}"),
                    score: f64::NAN,
                };
                return Ok((failed, None));
            }
        };
        let o = self.outcome_of(&policy.rule)?;
        let mut detail = policy.rule.describe();
        if policy.chosen_component != kind {
            detail = format!("chose {}: {detail}", policy.chosen_component.name());
        }
        if let Some(note) = &policy.summary.note {
            detail = format!("{detail}; {note}");
        }
        Ok((line(kind.name(), &self.test, o, detail), Some(o)))
    }

    /// The configured method's family, fitted on train, measured on test: the calibrated
    /// curves' cut sweep when it has them, else the ExactPOMDP λ sweep; and what the
    /// configured method's cross-validation chose.
    fn sweep(
        &self,
        config: &Config,
    ) -> Result<(Vec<OperatingPoint>, Option<automix_core::CvSummary>)> {
        let (configured, _) = method_and_options(config)?;
        let policy = automix_core::train(&self.train, &self.costs, &configured, &self.options).ok();
        let cross_validation = policy
            .as_ref()
            .and_then(|p| p.summary.cross_validation.clone());
        let rules: Vec<automix_core::DecisionRule> = match policy.and_then(|p| p.calibration) {
            Some(c) => c.model.sweep().into_iter().map(|(_, rule)| rule).collect(),
            None => {
                let train_data = Dataset::new(&self.train, &self.costs)?;
                let spec = method_spec(config, MethodKind::ExactPomdp);
                automix_core::candidates(&spec, &train_data)?
                    .into_iter()
                    .map(|c| c.rule)
                    .collect()
            }
        };
        let sweep = rules
            .iter()
            .map(|rule| self.outcome_of(rule).map(OperatingPoint::from))
            .collect::<Result<_>>()?;
        Ok((sweep, cross_validation))
    }

    /// Always-small, always-large, verify-and-never/always-escalate and the oracle.
    fn baseline_lines(&self) -> Result<Vec<EvalLine>> {
        let n = self.test.len();
        let base = self.test.baseline();
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
        let lines = [
            ("always-small", small_only, "no verification"),
            ("always-large", large_only, "large model only"),
            (
                "verify, never escalate",
                self.test.evaluate(&vec![false; n])?,
                "",
            ),
            (
                "verify, always escalate",
                self.test.evaluate(&vec![true; n])?,
                "",
            ),
            (
                "oracle",
                self.test.evaluate(&self.test.oracle())?,
                "escalate iff large scores higher",
            ),
        ];
        Ok(lines
            .into_iter()
            .map(|(name, o, detail)| line(name, &self.test, o, detail.into()))
            .collect())
    }
}

/// The `hparam.fuse_signals` policy trained on `train`, replayed on `test` (each test
/// row's fused confidence from the fusion fitted on the training rows).
fn fused_line(
    config: &Config,
    (train, test): (&[TrainingRow], &[TrainingRow]),
    (small, large): (&str, &str),
    data: &EvalData,
) -> Result<EvalLine> {
    let policy = crate::training::train_policy(config, train, small, large)?;
    let records = crate::training::policy_records(test, &policy)?;
    let (signal, fusion) = match &policy.fusion {
        Some(f) => (policy.verifier_signal, f),
        // `train_policy` reports on the fusion whenever `fuse_signals` is set.
        None => {
            return Err(AutomixError::Setting {
                key: "hparam.fuse_signals",
                message: "training returned no fusion report".into(),
            });
        }
    };
    let detail = match &fusion.model {
        Some(_) => {
            let names: Vec<&str> = fusion.signals.iter().map(|s| s.name()).collect();
            format!(
                "fused {}: {}",
                names.join(" + "),
                policy.policy.rule.describe()
            )
        }
        None => format!(
            "fusion lost out of fold; routes on {} alone: {}",
            signal.name(),
            policy.policy.rule.describe()
        ),
    };
    let test_data = Dataset::new(&records, &data.costs)?;
    let flags = rule_flags(&test_data, &policy.policy.rule, &data.options);
    let o = test_data.evaluate(&flags)?;
    Ok(line("fused", &test_data, o, detail))
}

fn point(l: &EvalLine) -> OperatingPoint {
    OperatingPoint {
        cost: l.cost,
        quality: l.quality,
        escalation_rate: l.escalation_rate,
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
    let test_records = routing_records(test, small, large, signal)?;
    let data = EvalData {
        train: routing_records(train, small, large, signal)?,
        test: Dataset::new(&test_records, &costs)?,
        costs,
        options: method_and_options(config)?.1,
    };
    let mut lines = Vec::new();
    let mut points = Vec::new();
    for kind in MethodKind::ALL {
        let (l, o) = data.method_line(config, kind)?;
        lines.push(l);
        points.extend(o.map(OperatingPoint::from));
    }
    if !config.hparam.two_model_fuse_signals().is_empty() {
        lines.push(fused_line(config, (train, test), (small, large), &data)?);
    }
    let (sweep, cross_validation) = data.sweep(config)?;
    let baselines = data.baseline_lines()?;
    let oracle_delta_ibc = baselines.last().and_then(|l| l.delta_ibc);
    // Always-small and always-large anchor the frontier.
    points.extend(baselines[..2].iter().map(point));
    points.extend(sweep.iter().copied());
    lines.extend(baselines);
    let base = data.test.baseline();
    for l in &mut lines {
        l.score = config
            .metric
            .weights
            .score(l.quality, l.cost, base.large_cost);
    }
    Ok(EvalReport {
        train_rows: train.len(),
        test_rows: test.len(),
        small_model: small.to_owned(),
        large_model: large.to_owned(),
        lines,
        oracle_delta_ibc,
        sweep,
        cross_validation,
        frontier: frontier(&points),
        frontier_metrics: frontier_metrics(&points, &base, base.small_cost, base.large_cost),
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
        let (train, test) = crate::training::resplit(rows, seed, test_share);
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

/// One cascade line over many re-splits.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CascadeResplitLine {
    /// What was run.
    pub name: String,
    /// Mean quality.
    pub quality: f64,
    /// Mean cost.
    pub cost: f64,
    /// Net quality − λ·cost: mean ± sd and the worst split.
    pub net: Spread,
}

/// The cascade table over `seeds` random re-splits (as [`crate::evaluate::evaluate_resplits`]).
/// The trained cascade's line is named `cascade` whether or not it fell back.
pub fn evaluate_cascade_resplits(
    config: &Config,
    rows: &[TrainingRow],
    models: &[String],
    seeds: u64,
    test_share: f64,
) -> Result<Vec<CascadeResplitLine>> {
    let mut acc: Vec<(String, f64, f64, Vec<Option<f64>>)> = Vec::new();
    for seed in 0..seeds {
        let (train, test) = crate::training::resplit(rows, seed, test_share);
        let report = crate::cascade::evaluate_cascade(config, &train, &test, models)?;
        for (i, line) in report.lines.into_iter().enumerate() {
            let name = if i == 0 {
                "cascade".to_owned()
            } else {
                line.name
            };
            match acc.iter_mut().find(|a| a.0 == name) {
                Some(a) => {
                    a.1 += line.quality;
                    a.2 += line.cost;
                    a.3.push(Some(line.net));
                }
                None => acc.push((name, line.quality, line.cost, vec![Some(line.net)])),
            }
        }
    }
    Ok(acc
        .into_iter()
        .filter_map(|(name, q, c, nets)| {
            let n = nets.len() as f64;
            Spread::of(&nets).map(|net| CascadeResplitLine {
                name,
                quality: q / n,
                cost: c / n,
                net,
            })
        })
        .collect())
}
