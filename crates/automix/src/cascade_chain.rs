//! The learned threshold chain: a cascade candidate that reads each model's confidence at
//! its own resolution. An ordered subset of the models (cheapest first) is called in turn;
//! each member but the last keeps its answer when its confidence reaches its own threshold
//! and escalates to the next member otherwise (an unknown confidence escalates). Members
//! and thresholds are fitted to the training rows' `quality − λ·cost` directly; every
//! distinct confidence is a candidate cut, so a confidence that piles up at exactly 1.0 is
//! told apart from 0.999 without a bin.
//!
//! The POMDP estimates a model of the chain and solves it, which needs bins; the chain
//! skips the model and optimises the objective, which needs rows. Which one routes is the
//! cascade's cross-validation's choice ([`crate::cascade`]): the chain only where it nets
//! strictly more out of fold. Per task, a chain keeps the pooled members and moves its
//! thresholds toward the task's rows, held to the pooled objective by κ pseudo-rows, as the
//! POMDP's per-task tables are.
//!
//! A chain is written as an ordinary [`CascadePolicy`] (one edge per verified model, three
//! symbols: below, at or above, unknown), so the router, the plan file and the replays run
//! it as they run any solved table.

use std::collections::{BTreeMap, HashMap};

use automix_core::cascade::{
    CascadeAction, CascadeModel, CascadePolicy, CascadeRow, CascadeSettings, StartChoice,
    estimate_cascade_binned, history_key,
};
use automix_core::cascade_bins::CascadeBins;
use serde::{Deserialize, Serialize};

use crate::cascade::{CASCADE_SMOOTHING, TrainedCascade, cascade_settings};
use crate::cascade_cv::{CvRows, OutOfFoldNets};
use crate::cascade_tasks::{TASK_KAPPAS, TASK_TABLE_MIN_ROWS};
use crate::config::Config;
use crate::error::{AutomixError, Result};

/// An edge above every confidence: the member never keeps (a confidence is at most 1).
const NEVER_KEEP: f64 = 2.0;

/// Coordinate-ascent rounds over the thresholds (each a sweep from the last verified
/// member back to the first); it stops early once a round changes nothing.
const ROUNDS: usize = 4;

/// Members (model indices, ascending) and the threshold of each member but the last.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ThresholdChain {
    /// The models called in turn, cheapest first.
    pub members: Vec<usize>,
    /// `thresholds[j]`: member `j` keeps its answer when its confidence is at least this.
    pub thresholds: Vec<f64>,
}

/// A row and its weight in the objective (1, or a pseudo-row's share for a task's fit).
type Weighted<'a> = (&'a CascadeRow, f64);

impl ThresholdChain {
    /// `(score kept, cost paid)` of one row, as [`automix_core::cascade::run_one`] replays
    /// the chain's policy.
    pub fn run(&self, r: &CascadeRow) -> (f64, f64) {
        let mut cost = 0.0;
        for (j, &m) in self.members.iter().enumerate() {
            cost += r.answer_costs[m];
            // The last member keeps its answer unverified (members ascend, so it is the
            // only one that can be the last model).
            let Some(&t) = self.thresholds.get(j) else {
                return (r.scores[m], cost);
            };
            cost += r.verify_costs[m];
            let previous = j.checked_sub(1).map(|p| self.members[p]);
            if r.confidence_after(m, previous).is_some_and(|p| p >= t) {
                return (r.scores[m], cost);
            }
        }
        (0.0, cost)
    }

    /// Σ weight · (quality − λ·cost) over `rows`.
    fn net(&self, rows: &[Weighted<'_>], lambda: f64) -> f64 {
        rows.iter()
            .map(|(r, w)| {
                let (q, c) = self.run(r);
                w * (q - lambda * c)
            })
            .sum()
    }

    /// Member `j`'s best threshold with the others fixed: over the rows that reach it,
    /// keeping (its score) against going on down the chain, at every distinct confidence.
    fn best_threshold(&self, j: usize, rows: &[Weighted<'_>], lambda: f64) -> f64 {
        let rest = ThresholdChain {
            members: self.members[j + 1..].to_vec(),
            thresholds: self.thresholds[j + 1..].to_vec(),
        };
        let m = self.members[j];
        let previous = j.checked_sub(1).map(|p| self.members[p]);
        // (confidence, weight · (keep − go on)) for the rows that reach member j with a
        // known confidence; the others' contribution does not depend on this threshold.
        let mut reach: Vec<(f64, f64)> = Vec::new();
        for (r, w) in rows {
            if !self.reaches(j, r) {
                continue;
            }
            let Some(p) = r.confidence_after(m, previous) else {
                continue;
            };
            let (q, c) = rest.run(r);
            reach.push((p, w * (r.scores[m] - (q - lambda * c))));
        }
        reach.sort_by(|a, b| b.0.total_cmp(&a.0));
        best_cut(&reach)
    }

    /// Whether row `r` escalates past every member before `j`.
    fn reaches(&self, j: usize, r: &CascadeRow) -> bool {
        (0..j).all(|i| {
            let previous = i.checked_sub(1).map(|p| self.members[p]);
            r.confidence_after(self.members[i], previous)
                .is_none_or(|p| p < self.thresholds[i])
        })
    }

    /// Coordinate ascent on the thresholds from the current ones, last verified member
    /// first (its continuation is fixed), until a round changes nothing.
    fn ascend(mut self, rows: &[Weighted<'_>], lambda: f64) -> Self {
        for _ in 0..ROUNDS {
            let before = self.thresholds.clone();
            for j in (0..self.thresholds.len()).rev() {
                self.thresholds[j] = self.best_threshold(j, rows, lambda);
            }
            if self.thresholds == before {
                break;
            }
        }
        self
    }
}

/// The cut over `(confidence, keep − go on)` sorted by confidence descending that keeps the
/// best prefix: midway between the last kept confidence and the next, 0 to keep every
/// one, [`NEVER_KEEP`] to keep none. The first best wins, so the cut stays high on a tie.
fn best_cut(reach: &[(f64, f64)]) -> f64 {
    let (mut acc, mut best, mut cut) = (0.0, 0.0, NEVER_KEEP);
    let mut i = 0;
    while i < reach.len() {
        let value = reach[i].0;
        while i < reach.len() && reach[i].0 == value {
            acc += reach[i].1;
            i += 1;
        }
        if acc > best + 1e-12 {
            best = acc;
            cut = match reach.get(i) {
                Some(next) => (value + next.0) / 2.0,
                None => 0.0_f64.min(value),
            };
        }
    }
    cut
}

/// The best chain of two or more members on `rows`: every ordered subset, its thresholds
/// by coordinate ascent from "every member escalates"; the first best (fewer, cheaper
/// members first) wins a tie.
pub fn fit_chain(rows: &[&CascadeRow], models: usize, lambda: f64) -> Option<ThresholdChain> {
    let weighted: Vec<Weighted<'_>> = rows.iter().map(|r| (*r, 1.0)).collect();
    let mut best: Option<(f64, ThresholdChain)> = None;
    for members in subsets(models) {
        let start = ThresholdChain {
            thresholds: vec![NEVER_KEEP; members.len() - 1],
            members,
        };
        let chain = start.ascend(&weighted, lambda);
        let net = chain.net(&weighted, lambda);
        if best.as_ref().is_none_or(|(b, _)| net > b + 1e-12) {
            best = Some((net, chain));
        }
    }
    best.map(|(_, chain)| chain)
}

/// Ordered subsets of `0..models` with at least two members, smaller ones first.
fn subsets(models: usize) -> Vec<Vec<usize>> {
    let mut out: Vec<Vec<usize>> = (1u32..1 << models)
        .filter(|mask| mask.count_ones() >= 2)
        .map(|mask| (0..models).filter(|i| mask >> i & 1 == 1).collect())
        .collect();
    out.sort_by_key(|m: &Vec<usize>| m.len());
    out
}

/// One chain per task with at least [`TASK_TABLE_MIN_ROWS`] rows: the pooled members, the
/// thresholds fitted to the task's rows plus `kappa` pseudo-rows of all of `rows` (each
/// weighing `kappa / rows`), from the pooled thresholds.
pub fn task_chains(
    pooled: &ThresholdChain,
    rows: &[&CascadeRow],
    tasks: &[&str],
    (lambda, kappa): (f64, f64),
) -> BTreeMap<String, ThresholdChain> {
    let mut by_task: BTreeMap<&str, Vec<&CascadeRow>> = BTreeMap::new();
    for (row, task) in rows.iter().zip(tasks) {
        by_task.entry(task).or_default().push(row);
    }
    let pseudo = kappa / rows.len().max(1) as f64;
    by_task
        .into_iter()
        .filter(|(_, r)| r.len() >= TASK_TABLE_MIN_ROWS)
        .map(|(task, own)| {
            let weighted: Vec<Weighted<'_>> = own
                .iter()
                .map(|r| (*r, 1.0))
                .chain(rows.iter().map(|r| (*r, pseudo)))
                .collect();
            let chain = pooled.clone().ascend(&weighted, lambda);
            (task.to_owned(), chain)
        })
        .collect()
}

/// What the chain's cross-validation found, for the report and the plan.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChainCv {
    /// Best out-of-fold net of the chain (mean over the assignments).
    pub net: f64,
    /// κ of its per-task thresholds at that net (`None`: one pooled chain).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub task_kappa: Option<f64>,
    /// Every κ tried with its out-of-fold net (the pooled chain first, κ = 0 standing for it).
    pub tried: Vec<(f64, f64)>,
    /// Whether the chain routes (it netted strictly more than the solved table).
    pub chosen: bool,
    /// The chain fitted on every training row: member names and thresholds.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub members: Vec<String>,
    /// Its thresholds, one per member but the last.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub thresholds: Vec<f64>,
}

impl ChainCv {
    /// Each verified member's cut ("tiny keeps at ≥ 0.6700"), as reports print it.
    pub fn cuts(&self) -> Vec<String> {
        (self.members.iter().zip(&self.thresholds))
            .map(|(m, t)| format!("{m} keeps at ≥ {t:.4}"))
            .collect()
    }
}

/// The per-task κs the chain's cross-validation tries after the pooled chain.
fn chain_kappas(per_task: bool, tasks: &[&str]) -> Vec<Option<f64>> {
    let distinct: std::collections::BTreeSet<&str> = tasks.iter().copied().collect();
    let mut out = vec![None];
    if per_task && distinct.len() >= 2 {
        out.extend(TASK_KAPPAS.iter().map(|k| Some(*k)));
    }
    out
}

/// Out-of-fold nets of the chain fitted on each fold's training rows, one per entry of
/// `kappas` (`None`: the pooled chain; `Some(κ)`: per-task thresholds).
fn chain_out_of_fold_nets(
    split: &ChainSplit<'_>,
    lambda: f64,
    kappas: &[Option<f64>],
) -> Vec<OutOfFoldNets> {
    let (rows, tasks) = (split.rows, split.tasks);
    let empty = OutOfFoldNets::zeros(split.assignments.len(), rows.len());
    let mut nets = vec![empty; kappas.len()];
    let models = rows.first().map_or(0, |r| r.scores.len());
    for (a, fold) in split.assignments.iter().enumerate() {
        for f in 0..split.folds {
            let (mut train, mut train_tasks, mut held) = (Vec::new(), Vec::new(), Vec::new());
            let fold_rows = crate::cascade_cv::fold_rows(rows, split.per_fold, (a, f));
            for (i, (r, t)) in fold_rows.iter().zip(tasks).enumerate() {
                if fold[i] == f {
                    held.push((i, r, *t));
                } else {
                    train.push(r);
                    train_tasks.push(*t);
                }
            }
            let Some(pooled) = (!held.is_empty())
                .then(|| fit_chain(&train, models, lambda))
                .flatten()
            else {
                continue;
            };
            for (kappa, net) in kappas.iter().zip(&mut nets) {
                let by_task = match kappa {
                    Some(k) => task_chains(&pooled, &train, &train_tasks, (lambda, *k)),
                    None => BTreeMap::new(),
                };
                for (i, r, task) in &held {
                    let (q, c) = by_task.get(*task).unwrap_or(&pooled).run(r);
                    net.add((a, *i), q - lambda * c);
                }
            }
        }
    }
    nets.into_iter().map(OutOfFoldNets::finish).collect()
}

/// The rows the chain's cross-validation splits: cascade rows, each row's task, the fold
/// assignments (shared with the solved table's cross-validation) and the folds per one.
pub struct ChainSplit<'a> {
    /// The cascade rows.
    pub rows: &'a [CascadeRow],
    /// `[assignment][fold]`: the rows as that fold sees them, where they differ per fold
    /// (a fusion's nested cross-fit); `None`: `rows` everywhere.
    pub per_fold: Option<&'a [Vec<Vec<CascadeRow>>]>,
    /// Each row's task.
    pub tasks: &'a [&'a str],
    /// Fold of each row, per seeded assignment.
    pub assignments: &'a [Vec<usize>],
    /// Folds per assignment.
    pub folds: usize,
}

/// The chain cross-validation chose, fitted on every training row.
#[derive(Debug, Clone)]
pub struct ChainChoice {
    /// The report.
    pub cv: ChainCv,
    /// Out-of-fold net (mean, sd over the assignments).
    pub net: (f64, f64),
    /// Each training row's out-of-fold net, averaged over the assignments.
    pub row_nets: Vec<f64>,
    /// The pooled chain.
    pub pooled: ThresholdChain,
    /// Per-task chains (empty unless a κ won).
    pub by_task: BTreeMap<String, ThresholdChain>,
}

/// The chain's cross-validation on `split` for `quality − λ·cost`: the pooled chain and,
/// with `per_task` and several tasks, per-task thresholds at each κ (the pooled chain and
/// the stronger κ first, kept on a tie). It routes only when it nets strictly more than
/// `table_net`, the solved table's best out-of-fold net.
pub fn choose_chain(
    split: &ChainSplit<'_>,
    (names, lambda, per_task): (&[String], f64, bool),
    table_net: f64,
) -> Option<ChainChoice> {
    let models = names.len();
    let kappas = chain_kappas(per_task, split.tasks);
    let mut nets = chain_out_of_fold_nets(split, lambda, &kappas);
    let scored: Vec<(Option<f64>, (f64, f64))> = kappas
        .iter()
        .zip(&nets)
        .map(|(k, n)| (*k, n.mean_sd()))
        .collect();
    let best = (0..scored.len()).reduce(|best, next| {
        if scored[next].1.0 > scored[best].1.0 + 1e-12 {
            next
        } else {
            best
        }
    })?;
    let (task_kappa, net) = scored[best];
    let all: Vec<&CascadeRow> = split.rows.iter().collect();
    let pooled = fit_chain(&all, models, lambda)?;
    let by_task = match task_kappa {
        Some(k) => task_chains(&pooled, &all, split.tasks, (lambda, k)),
        None => BTreeMap::new(),
    };
    let cv = ChainCv {
        net: net.0,
        task_kappa,
        tried: scored
            .iter()
            .map(|(k, n)| (k.unwrap_or(0.0), n.0))
            .collect(),
        chosen: net.0 > table_net + 1e-12,
        members: pooled.members.iter().map(|&m| names[m].clone()).collect(),
        thresholds: pooled.thresholds.clone(),
    };
    Some(ChainChoice {
        cv,
        net,
        row_nets: nets.swap_remove(best).per_row,
        pooled,
        by_task,
    })
}

/// `chain` as a cascade policy over `base`'s models (its prior, qualities and costs kept,
/// for the report and the per-request λ family): one edge per verified model (the member's
/// threshold), symbols below / at or above / unknown, and the table of the chain's
/// histories. The observation model is left as `base` has it only in shape and `value`
/// is 0: the table, not a solve, decides.
pub fn chain_policy(
    chain: &ThresholdChain,
    base: &CascadeModel,
    settings: CascadeSettings,
) -> CascadePolicy {
    let n = base.len();
    let symbols = 3;
    let mut edges = vec![vec![NEVER_KEEP]; n.saturating_sub(1)];
    for (&m, &t) in chain.members.iter().zip(&chain.thresholds) {
        if let Some(e) = edges.get_mut(m) {
            *e = vec![t];
        }
    }
    let flat = |per_class: &Vec<Vec<f64>>| -> Vec<Vec<f64>> {
        per_class
            .iter()
            .map(|_| vec![1.0 / symbols as f64; symbols])
            .collect()
    };
    let model = CascadeModel {
        symbols,
        observation: base.observation.iter().map(flat).collect(),
        observation_jumped: base.observation_jumped.iter().map(flat).collect(),
        edges,
        ..base.clone()
    };
    CascadePolicy {
        table: chain_table(chain, n, symbols),
        start: StartChoice {
            model: chain.members[0],
            verify: chain.members[0] + 1 < n,
        },
        value: 0.0,
        model,
        settings,
    }
}

/// Every history the chain can produce (each earlier member below its threshold or
/// unknown) and its action: keep at or above the threshold, else the next member (called
/// unverified when it is the chain's last and not the last model, which is never verified).
fn chain_table(chain: &ThresholdChain, n: usize, symbols: usize) -> HashMap<u64, CascadeAction> {
    const BELOW: usize = 0;
    const ABOVE: usize = 1;
    const UNKNOWN: usize = 2;
    let mut table = HashMap::new();
    let mut prefixes: Vec<Vec<(usize, usize)>> = vec![Vec::new()];
    let verified = chain.thresholds.len();
    for j in 0..verified {
        let m = chain.members[j];
        let next = chain.members[j + 1];
        let go_on = if j + 1 == verified && next + 1 < n {
            CascadeAction::AnswerWith(next)
        } else {
            CascadeAction::EscalateTo(next)
        };
        let mut longer = Vec::new();
        for prefix in &prefixes {
            for (symbol, action) in [
                (BELOW, go_on),
                (ABOVE, CascadeAction::Keep),
                (UNKNOWN, go_on),
            ] {
                let mut h = prefix.clone();
                h.push((m, symbol));
                table.insert(history_key(n, symbols, &h), action);
                if action != CascadeAction::Keep {
                    longer.push(h);
                }
            }
        }
        prefixes = longer;
    }
    table
}

/// [`chain_policy`], checked as a policy file is at load.
fn validated_policy(
    chain: &ThresholdChain,
    base: &CascadeModel,
    settings: CascadeSettings,
) -> Result<CascadePolicy> {
    let policy = chain_policy(chain, base, settings);
    policy.validate()?;
    Ok(policy)
}

/// The threshold chain's cross-validation against the solved table's out-of-fold net
/// `table_net`; none with `hparam.threshold_chain: false`, or with `automix.online_belief`,
/// whose belief re-solves the table.
pub(crate) fn routing_chain(
    config: &Config,
    (cv, folds): (&CvRows<'_>, usize),
    models: &[String],
    table_net: f64,
) -> Option<ChainChoice> {
    if config.automix.online_belief || !config.hparam.threshold_chain {
        return None;
    }
    let split = ChainSplit {
        rows: cv.rows,
        per_fold: cv.per_fold,
        tasks: cv.tasks,
        assignments: cv.assignments,
        folds,
    };
    let task = config.hparam.per_task_prior;
    choose_chain(&split, (models, config.automix.lambda(), task), table_net)
}

/// The chain's pooled and per-task policies over the rows' cascade model (per-task ones
/// only when the cascade does not fall back).
pub(crate) fn chain_tables(
    config: &Config,
    (models, rows): (&[String], &[CascadeRow]),
    bins: CascadeBins,
    chain: &ChainChoice,
    falls_back: bool,
) -> Result<(CascadePolicy, BTreeMap<String, CascadePolicy>)> {
    let base = estimate_cascade_binned(models, rows, bins, CASCADE_SMOOTHING)?;
    let settings = cascade_settings(config, config.automix.lambda());
    let policy = validated_policy(&chain.pooled, &base, settings)?;
    let tables = if falls_back {
        BTreeMap::new()
    } else {
        (chain.by_task.iter())
            .map(|(task, c)| Ok((task.clone(), validated_policy(c, &base, settings)?)))
            .collect::<Result<_>>()?
    };
    Ok((policy, tables))
}

/// The pooled table at λ `l` on the trained rows: the chain fitted at `l` where a chain
/// routes, else the table solved at `l` (the per-request λ family and the sweep).
pub(crate) fn table_at(
    config: &Config,
    trained: &TrainedCascade,
    models: &[String],
    l: f64,
) -> Result<CascadePolicy> {
    if trained.cv.chain_routes().is_some() {
        let rows: Vec<&CascadeRow> = trained.rows.iter().collect();
        // A routing chain had two models to fit; without them this is no silent table.
        let chain = fit_chain(&rows, models.len(), l).ok_or_else(|| {
            AutomixError::InsufficientRows("a threshold chain needs two models".into())
        })?;
        let bins = trained.cv.bins();
        let base = estimate_cascade_binned(models, &trained.rows, bins, CASCADE_SMOOTHING)?;
        return validated_policy(&chain, &base, cascade_settings(config, l));
    }
    crate::cascade::solve_on(config, models, &trained.rows, l, trained.cv.bins())
}

#[cfg(test)]
mod tests {
    use automix_core::cascade::{estimate_cascade, run_one};

    use super::*;

    /// Three models; the first is right exactly when its confidence is 1.0 (half the rows),
    /// the second right on 70% whatever it says, the last always right.
    fn rows() -> Vec<CascadeRow> {
        (0..200)
            .map(|i| {
                let top = i % 2 == 0;
                CascadeRow {
                    scores: vec![
                        f64::from(u8::from(top)),
                        f64::from(u8::from(i % 10 < 7)),
                        1.0,
                    ],
                    confidences: vec![
                        Some(if top {
                            1.0
                        } else {
                            0.999 - (i % 7) as f64 / 100.0
                        }),
                        Some(0.5),
                        None,
                    ],
                    answer_costs: vec![0.05, 0.3, 1.0],
                    verify_costs: vec![0.01, 0.01, 0.0],
                    confidences_jumped: Vec::new(),
                }
            })
            .collect()
    }

    #[test]
    fn the_chain_keeps_exactly_the_mass_point_and_skips_a_model_that_does_not_pay() {
        let rows = rows();
        let refs: Vec<&CascadeRow> = rows.iter().collect();
        let chain = fit_chain(&refs, 3, 0.1).unwrap();
        assert_eq!(chain.members, vec![0, 2]);
        assert!(
            chain.thresholds[0] > 0.999 && chain.thresholds[0] <= 1.0,
            "{chain:?}"
        );
        let (q, c) = chain.run(&rows[0]);
        assert_eq!(q, 1.0);
        assert!((c - 0.06).abs() < 1e-12);
        let (q, c) = chain.run(&rows[1]);
        assert_eq!(q, 1.0);
        assert!((c - 1.06).abs() < 1e-12);
    }

    #[test]
    fn the_chain_policy_replays_as_the_chain_does() {
        let rows = rows();
        let names: Vec<String> = ["a", "b", "c"].map(String::from).to_vec();
        let base = estimate_cascade(&names, &rows, 4, 1.0).unwrap();
        for chain in [
            ThresholdChain {
                members: vec![0, 2],
                thresholds: vec![0.9995],
            },
            ThresholdChain {
                members: vec![0, 1],
                thresholds: vec![0.98],
            },
            ThresholdChain {
                members: vec![0, 1, 2],
                thresholds: vec![0.97, 0.5],
            },
        ] {
            let policy = chain_policy(&chain, &base, CascadeSettings::default());
            policy.validate().unwrap();
            for r in &rows {
                let (q, c, _) = run_one(&policy, r);
                assert_eq!((q, c), chain.run(r), "{chain:?}");
            }
        }
    }

    #[test]
    fn a_task_chain_moves_toward_its_rows_only_as_far_as_kappa_lets_it() {
        // Task "b": 20 more rows where the first model says 1.0 and is wrong (too few to
        // move the pooled chain at λ = 0.5).
        let mut rows = rows();
        let wrong_at_top = CascadeRow {
            scores: vec![0.0, 0.0, 1.0],
            ..rows[0].clone()
        };
        rows.extend(std::iter::repeat_n(wrong_at_top, 20));
        let tasks: Vec<&str> = (0..rows.len())
            .map(|i| if i < 200 { "a" } else { "b" })
            .collect();
        let refs: Vec<&CascadeRow> = rows.iter().collect();
        let pooled = fit_chain(&refs, 3, 0.5).unwrap();
        assert!(pooled.thresholds[0] <= 1.0, "{pooled:?}");
        let weak = task_chains(&pooled, &refs, &tasks, (0.5, 1.0));
        assert_eq!(weak["b"].thresholds[0], NEVER_KEEP);
        assert_eq!(weak["a"].thresholds, pooled.thresholds);
        let strong = task_chains(&pooled, &refs, &tasks, (0.5, 1e6));
        assert_eq!(strong["b"].thresholds, pooled.thresholds);
    }

    #[test]
    fn the_best_cut_keeps_the_best_prefix() {
        assert_eq!(best_cut(&[(1.0, 1.0), (0.8, 1.0), (0.5, -3.0)]), 0.65);
        assert_eq!(best_cut(&[(1.0, -1.0)]), NEVER_KEEP);
        assert_eq!(best_cut(&[(0.4, 1.0), (0.2, 1.0)]), 0.0);
        assert_eq!(best_cut(&[]), NEVER_KEEP);
    }
}
