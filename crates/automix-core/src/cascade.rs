//! The N-model cascade as an exact finite-horizon POMDP.
//!
//! Models are sorted by cost. The hidden state is which models answer the query correctly
//! (a bit vector, 2^N states: N ≤ 5 keeps this at 32). DESIGN.md's "cheapest correct model"
//! is a function of it, but too coarse: once a model after the cheapest correct one has
//! answered, its verdict says something about *that* model, which the coarse state cannot
//! hold — and with it the optimal value could drop when a model is added. With the full
//! vector the model is exact for independent verifiers, and adding a model never lowers
//! the value (a property test checks this).
//!
//! After a model answers and verifies, its verifier symbol (a confidence bin, or "unknown"
//! as a symbol of its own) is observed; it depends on that model's correctness only. The
//! belief is Bayes' rule. Actions: keep the current answer, escalate to any more expensive
//! model and verify it, or call it and keep its answer unverified (each call is one
//! escalation). Reward: expected quality of the kept answer − λ·cost, the continuation
//! after an escalation discounted by γ. Backward induction over observation histories gives
//! a decision table; a runtime decision is a hash lookup.
//!
//! Pre-selection is part of the same problem: before any call the solver picks the start
//! model and whether to verify it at all, so the value is never below the best single
//! model's.

use std::collections::HashMap;

use serde::{Deserialize, Serialize};

use crate::cascade_bins::{Binning, CascadeBins, bin_of, quantile_edges};
use crate::error::{CoreError, Result};

/// Everything the solver needs, estimated from data or from a belief.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CascadeModel {
    /// Model names, cheapest first.
    pub models: Vec<String>,
    /// Observation symbols per verification (bins, plus one "unknown" symbol).
    pub symbols: usize,
    /// `prior[v]`: probability of correctness vector v (bit i = model i correct), 2^N entries.
    pub prior: Vec<f64>,
    /// `observation[i][c][o]`: P(symbol o | model i correct = c) for model i's verification
    /// (i < N−1).
    pub observation: Vec<Vec<Vec<f64>>>,
    /// The same for a model verified when the model before it did not answer just before
    /// (the cascade started there or jumped): its signal may read less then
    /// ([`CascadeRow::confidences_jumped`]). Empty: `observation` on every path.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub observation_jumped: Vec<Vec<Vec<f64>>>,
    /// `quality[i][c]`: expected score of model i's answer when its correctness is c.
    pub quality: Vec<Vec<f64>>,
    /// Cost of model i's answer.
    pub answer_cost: Vec<f64>,
    /// Cost of verifying model i's answer (the last model is never verified).
    pub verify_cost: Vec<f64>,
    /// Per verified model, ascending confidence edges (quantile bins): a confidence's
    /// symbol is the number of edges at or below it. Empty: `symbols − 2` equal-width bins.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub edges: Vec<Vec<f64>>,
}

/// Solver settings.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct CascadeSettings {
    /// λ: quality given up per unit of cost.
    pub lambda: f64,
    /// γ: discount of the continuation after each escalation.
    pub discount: f64,
    /// Most escalations per query.
    pub max_escalations: usize,
    /// Allow jumping over models when escalating (else only to the next one).
    pub allow_jumps: bool,
}

impl Default for CascadeSettings {
    fn default() -> Self {
        Self {
            lambda: 0.1,
            discount: 1.0,
            max_escalations: usize::MAX,
            allow_jumps: true,
        }
    }
}

/// What to do next.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CascadeAction {
    /// Keep the current model's answer.
    Keep,
    /// Call model `j` next, verify its answer and decide again.
    EscalateTo(usize),
    /// Call model `j` next and keep its answer without verifying it.
    AnswerWith(usize),
}

/// How a query starts, chosen before any call.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct StartChoice {
    /// The first model to call.
    pub model: usize,
    /// Verify its answer (and maybe escalate), or just return it.
    pub verify: bool,
}

/// The solved policy: a start choice and a decision per observed history.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CascadePolicy {
    /// The model it was solved for.
    pub model: CascadeModel,
    /// The settings.
    pub settings: CascadeSettings,
    /// Where to start.
    pub start: StartChoice,
    /// Expected reward of the policy under the model.
    pub value: f64,
    /// [`history_key`] of a history of (model, symbol) → action.
    #[serde(with = "table_serde")]
    pub table: HashMap<u64, CascadeAction>,
}

mod table_serde {
    use std::collections::HashMap;

    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    use super::CascadeAction;

    pub fn serialize<S: Serializer>(
        table: &HashMap<u64, CascadeAction>,
        s: S,
    ) -> Result<S::Ok, S::Error> {
        let mut entries: Vec<(&u64, &CascadeAction)> = table.iter().collect();
        entries.sort_by(|a, b| a.0.cmp(b.0));
        entries.serialize(s)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(
        d: D,
    ) -> Result<HashMap<u64, CascadeAction>, D::Error> {
        let entries: Vec<(u64, CascadeAction)> = Vec::deserialize(d)?;
        Ok(entries.into_iter().collect())
    }
}

impl CascadeModel {
    /// Number of models.
    pub fn len(&self) -> usize {
        self.models.len()
    }

    /// Never true for a validated model.
    pub fn is_empty(&self) -> bool {
        self.models.is_empty()
    }

    /// Checks shapes and ranges.
    pub fn validate(&self) -> Result<()> {
        let n = self.len();
        let bad = |reason: String| {
            Err(CoreError::InvalidParameter {
                name: "cascade model",
                reason,
            })
        };
        if n == 0 {
            return bad("no models".into());
        }
        // History keys must fit u64 (≤ N−1 verified steps + the leading 1).
        let key_bits = (n as f64) * ((n * self.symbols.max(1)) as f64).log2();
        if n > 10 || key_bits >= 63.0 {
            return bad(format!(
                "{n} models with {} symbols is beyond the exact solver (histories would not fit)",
                self.symbols
            ));
        }
        if self.prior.len() != 1 << n {
            return bad(format!(
                "prior has {} states, expected 2^{n}",
                self.prior.len()
            ));
        }
        if self.quality.len() != n || self.quality.iter().any(|q| q.len() != 2) {
            return bad("quality must be N × 2".into());
        }
        if self.answer_cost.len() != n || self.verify_cost.len() != n {
            return bad("costs must have one entry per model".into());
        }
        if self.observation.len() + 1 < n
            || self
                .observation
                .iter()
                .take(n - 1)
                .any(|m| m.len() != 2 || m.iter().any(|row| row.len() != self.symbols))
        {
            return bad("observation must be (N−1) × 2 × symbols".into());
        }
        let same_shape = |a: &Vec<Vec<f64>>, b: &Vec<Vec<f64>>| {
            a.len() == b.len() && a.iter().zip(b).all(|(x, y)| x.len() == y.len())
        };
        if !self.observation_jumped.is_empty()
            && (self.observation_jumped.len() != self.observation.len()
                || !self
                    .observation_jumped
                    .iter()
                    .zip(&self.observation)
                    .all(|(a, b)| same_shape(a, b)))
        {
            return bad("observation_jumped must be empty or shaped as observation".into());
        }
        let finite = self.prior.iter().all(|p| p.is_finite() && *p >= 0.0)
            && self
                .answer_cost
                .iter()
                .chain(&self.verify_cost)
                .all(|c| c.is_finite())
            && self.quality.iter().flatten().all(|q| q.is_finite());
        if !finite {
            return bad("probabilities, qualities and costs must be finite".into());
        }
        let edges_ok = self.edges.is_empty()
            || (self.edges.len() + 1 == n
                && self.edges.iter().all(|e| {
                    e.len() + 2 <= self.symbols
                        && e.iter().all(|x| x.is_finite())
                        && e.windows(2).all(|w| w[0] < w[1])
                }));
        if !edges_ok {
            return bad(format!(
                "edges must be empty or one ascending list of at most {} finite edges per verified model",
                self.symbols.saturating_sub(2)
            ));
        }
        Ok(())
    }

    /// The observation symbol of model `model`'s verifier score: its bin (quantile edges
    /// if the model has them, else equal width), or the last symbol for unknown.
    #[inline]
    pub fn symbol(&self, model: usize, confidence: Option<f64>) -> usize {
        match (self.edges.get(model), confidence) {
            (Some(edges), Some(p)) if p.is_finite() => bin_of(edges, p),
            _ => symbol(self.symbols, confidence),
        }
    }
}

struct Solver<'a> {
    m: &'a CascadeModel,
    s: CascadeSettings,
    table: HashMap<u64, CascadeAction>,
}

impl Solver<'_> {
    /// Σ_v w[v]·quality of model i under v.
    fn expected_quality(&self, w: &[f64], i: usize) -> f64 {
        let q = &self.m.quality[i];
        w.iter().enumerate().map(|(v, x)| x * q[(v >> i) & 1]).sum()
    }

    /// Joint-weighted value of being at model `i` (already answered and verified) with
    /// history `h` and joint weights `w[s] = P(s, history)`; records the best action.
    fn after_verify(
        &mut self,
        h: &mut Vec<(usize, usize)>,
        w: &[f64],
        i: usize,
        escalations: usize,
    ) -> f64 {
        let mass: f64 = w.iter().sum();
        let keep = self.expected_quality(w, i);
        let mut best = (keep, CascadeAction::Keep);
        if escalations < self.s.max_escalations {
            let n = self.m.len();
            let targets: Vec<usize> = if self.s.allow_jumps {
                (i + 1..n).collect()
            } else {
                (i + 1..(i + 2).min(n)).collect()
            };
            for j in targets {
                let cost = -self.s.lambda * self.m.answer_cost[j] * mass;
                let plain = self.expected_quality(w, j);
                let mut options =
                    vec![(cost + self.s.discount * plain, CascadeAction::AnswerWith(j))];
                if j + 1 < n {
                    let verified = self.verify_then_decide(h, w, j, escalations + 1);
                    options.push((
                        cost + self.s.discount * verified,
                        CascadeAction::EscalateTo(j),
                    ));
                }
                for (v, action) in options {
                    // Ties keep the cheaper action, so a useless call is never made.
                    if v > best.0 + 1e-12 * mass.max(1e-300) {
                        best = (v, action);
                    }
                }
            }
        }
        self.table
            .insert(history_key(self.m.len(), self.m.symbols, h), best.1);
        best.0
    }

    fn verify_then_decide(
        &mut self,
        h: &mut Vec<(usize, usize)>,
        w: &[f64],
        j: usize,
        escalations: usize,
    ) -> f64 {
        let mass: f64 = w.iter().sum();
        let mut total = -self.s.lambda * self.m.verify_cost[j] * mass;
        let mut next = vec![0.0; w.len()];
        // The model just verified (the last in the history) answered just before j.
        let sequential = h.last().is_some_and(|(m, _)| m + 1 == j);
        let table = match self.m.observation_jumped.get(j) {
            Some(jumped) if !sequential => jumped,
            _ => &self.m.observation[j],
        };
        let likelihood = |v: usize, o: usize| table[(v >> j) & 1][o];
        for o in 0..self.m.symbols {
            for (v, x) in next.iter_mut().enumerate() {
                *x = w[v] * likelihood(v, o);
            }
            h.push((j, o));
            total += self.after_verify(h, &next, j, escalations);
            h.pop();
        }
        total
    }
}

/// Solves the cascade exactly (backward induction over observation histories).
pub fn solve_cascade(model: &CascadeModel, settings: CascadeSettings) -> Result<CascadePolicy> {
    model.validate()?;
    if !(settings.lambda.is_finite() && settings.lambda >= 0.0) {
        return Err(CoreError::InvalidParameter {
            name: "cost_lambda",
            reason: format!("{} must be finite and ≥ 0", settings.lambda),
        });
    }
    if !(0.0..=1.0).contains(&settings.discount) {
        return Err(CoreError::InvalidParameter {
            name: "discount_factor",
            reason: format!("{} must be in [0, 1]", settings.discount),
        });
    }
    let total: f64 = model.prior.iter().sum();
    let prior: Vec<f64> = if total > 0.0 {
        model.prior.iter().map(|p| p / total).collect()
    } else {
        vec![1.0 / model.prior.len() as f64; model.prior.len()]
    };
    let mut solver = Solver {
        m: model,
        s: settings,
        table: HashMap::new(),
    };
    let n = model.len();
    let mut best: Option<(f64, StartChoice)> = None;
    for j in 0..n {
        let cost = model.answer_cost[j];
        let plain = solver.expected_quality(&prior, j) - settings.lambda * cost;
        let mut consider = |v: f64, choice: StartChoice| {
            if best.is_none_or(|(b, _)| v > b + 1e-12) {
                best = Some((v, choice));
            }
        };
        consider(
            plain,
            StartChoice {
                model: j,
                verify: false,
            },
        );
        if j + 1 < n {
            let mut h = Vec::new();
            let verified =
                -settings.lambda * cost + solver.verify_then_decide(&mut h, &prior, j, 0);
            consider(
                verified,
                StartChoice {
                    model: j,
                    verify: true,
                },
            );
        }
    }
    let (value, start) = best.unwrap_or((
        0.0,
        StartChoice {
            model: 0,
            verify: false,
        },
    ));
    Ok(CascadePolicy {
        model: model.clone(),
        settings,
        start,
        value,
        table: solver.table,
    })
}

impl CascadePolicy {
    /// Checks a policy read from a file: a valid model, a start and every table action
    /// pointing at a model that exists (and, for an escalation, one after the current),
    /// finite settings. Refusing such a file at load is what keeps routing panic-free.
    pub fn validate(&self) -> Result<()> {
        self.model.validate()?;
        let n = self.model.len();
        let bad = |reason: String| {
            Err(CoreError::InvalidParameter {
                name: "cascade policy",
                reason,
            })
        };
        if self.start.model >= n {
            return bad(format!(
                "start.model {} is out of range for {n} models",
                self.start.model
            ));
        }
        if n >= 2 && self.table.is_empty() {
            return bad("the decision table is empty".into());
        }
        for (key, action) in &self.table {
            if let CascadeAction::EscalateTo(j) | CascadeAction::AnswerWith(j) = action
                && (*j >= n || *j == 0)
            {
                return bad(format!("table entry {key} names model {j}, outside 1..{n}"));
            }
        }
        let lambda_ok = self.settings.lambda.is_finite() && self.settings.lambda >= 0.0;
        if !(lambda_ok && (0.0..=1.0).contains(&self.settings.discount)) {
            return bad("settings.lambda must be finite ≥ 0 and discount in [0, 1]".into());
        }
        Ok(())
    }

    /// The action after the observed `history` of (model, symbol) pairs; `Keep` for a
    /// history the policy never reaches.
    #[inline]
    pub fn decide(&self, history: &[(usize, usize)]) -> CascadeAction {
        let key = history_key(self.model.len(), self.model.symbols, history);
        self.table.get(&key).copied().unwrap_or(CascadeAction::Keep)
    }

    /// The symbol of model `model`'s verifier score ([`CascadeModel::symbol`]).
    #[inline]
    pub fn symbol(&self, model: usize, confidence: Option<f64>) -> usize {
        self.model.symbol(model, confidence)
    }
}

/// A history of (model, symbol) as one integer: mixed radix over `models × symbols` with a
/// leading 1, so histories of different lengths differ. Fits u64 for every solvable size.
#[inline]
pub fn history_key(models: usize, symbols: usize, history: &[(usize, usize)]) -> u64 {
    let stride = (models * symbols) as u64;
    history.iter().fold(1u64, |k, &(m, o)| {
        k.wrapping_mul(stride)
            .wrapping_add((m * symbols + o) as u64)
    })
}

/// The symbol of a confidence with `symbols − 1` bins plus "unknown" (the last symbol).
pub fn symbol(symbols: usize, confidence: Option<f64>) -> usize {
    let bins = symbols.saturating_sub(2);
    match confidence {
        Some(p) if p.is_finite() => {
            ((p.clamp(0.0, 1.0) * bins as f64 + 0.5).floor() as usize).min(bins)
        }
        _ => symbols - 1,
    }
}

/// One row for estimating a cascade: every model's score, verifier confidence (for all
/// but the last model) and costs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CascadeRow {
    /// Score of each model's answer, cheapest first.
    pub scores: Vec<f64>,
    /// Verifier confidence of each model's answer (`None` = unknown); the last is ignored.
    pub confidences: Vec<Option<f64>>,
    /// Cost of each model's answer.
    pub answer_costs: Vec<f64>,
    /// Cost of each model's verification.
    pub verify_costs: Vec<f64>,
    /// Model i's confidence when model i − 1 did not answer just before it (the cascade
    /// started at i or jumped to it): a signal that compares with the previous answer is
    /// unknown then. Empty: the same as `confidences` on every path.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub confidences_jumped: Vec<Option<f64>>,
}

impl CascadeRow {
    /// Model `model`'s confidence on a path whose previous model was `previous`.
    pub fn confidence_after(&self, model: usize, previous: Option<usize>) -> Option<f64> {
        let sequential = model > 0 && previous == Some(model - 1);
        match self.confidences_jumped.get(model) {
            Some(jumped) if !sequential => *jumped,
            _ => self.confidences.get(model).copied().flatten(),
        }
    }

    /// The hidden state: bit i set when model i scores ≥ [`crate::VERDICT_CUT`].
    pub fn state(&self) -> usize {
        self.scores
            .iter()
            .enumerate()
            .filter(|(_, s)| **s >= crate::VERDICT_CUT)
            .fold(0, |v, (i, _)| v | (1 << i))
    }
}

/// Estimates a cascade model from rows with Dirichlet smoothing `alpha` (pseudo-count per
/// cell) and `num_bins` equal-width verifier bins (plus the unknown symbol).
pub fn estimate_cascade(
    models: &[String],
    rows: &[CascadeRow],
    num_bins: usize,
    alpha: f64,
) -> Result<CascadeModel> {
    estimate_cascade_binned(models, rows, CascadeBins::uniform(num_bins), alpha)
}

/// [`estimate_cascade`] with the bins' placement chosen: quantile edges are taken per
/// model from the rows' known confidences.
pub fn estimate_cascade_binned(
    models: &[String],
    rows: &[CascadeRow],
    bins: CascadeBins,
    alpha: f64,
) -> Result<CascadeModel> {
    let num_bins = bins.count;
    let n = models.len();
    if rows.is_empty() || n == 0 {
        return Err(CoreError::InvalidParameter {
            name: "cascade rows",
            reason: "need at least one row and one model".into(),
        });
    }
    if let Some((i, _)) = rows.iter().enumerate().find(|(_, r)| {
        r.scores.len() != n
            || r.confidences.len() != n
            || r.answer_costs.len() != n
            || r.verify_costs.len() != n
    }) {
        return Err(CoreError::InvalidParameter {
            name: "cascade rows",
            reason: format!("row {i} does not have one entry per model ({n})"),
        });
    }
    if n > 10 {
        return Err(CoreError::InvalidParameter {
            name: "cascade rows",
            reason: format!("{n} models: the exact solver handles at most 10"),
        });
    }
    let symbols = num_bins + 2;
    let edges = model_edges(rows, n, bins);
    let bin = |i: usize, p: Option<f64>| match (edges.get(i), p) {
        (Some(e), Some(p)) if p.is_finite() => bin_of(e, p),
        _ => symbol(symbols, p),
    };
    let mut prior = vec![alpha; 1 << n];
    let mut qsum = vec![[0.0; 2]; n];
    let mut qcount = vec![[0.0; 2]; n];
    for r in rows {
        let v = r.state();
        prior[v] += 1.0;
        for i in 0..n {
            let c = (v >> i) & 1;
            qsum[i][c] += r.scores[i];
            qcount[i][c] += 1.0;
        }
    }
    let counts = |confidence: &dyn Fn(&CascadeRow, usize) -> Option<f64>| {
        observation_model(rows, (n, symbols, alpha), &bin, confidence)
    };
    let obs = counts(&|r, i| r.confidences[i]);
    let observation_jumped = if rows.iter().any(|r| !r.confidences_jumped.is_empty()) {
        counts(&|r, i| r.confidence_after(i, None))
    } else {
        Vec::new()
    };
    let mean = |v: &[f64]| v.iter().sum::<f64>() / v.len() as f64;
    // Without rows of a kind, a wrong answer scores 0 and a right one 1; graded scores use
    // the data.
    let quality = (0..n)
        .map(|i| {
            (0..2)
                .map(|c| {
                    if qcount[i][c] > 0.0 {
                        qsum[i][c] / qcount[i][c]
                    } else {
                        c as f64
                    }
                })
                .collect()
        })
        .collect();
    let total: f64 = prior.iter().sum();
    Ok(CascadeModel {
        models: models.to_vec(),
        symbols,
        prior: prior.iter().map(|p| p / total).collect(),
        observation: obs,
        observation_jumped,
        quality,
        answer_cost: (0..n)
            .map(|i| mean(&rows.iter().map(|r| r.answer_costs[i]).collect::<Vec<_>>()))
            .collect(),
        verify_cost: (0..n)
            .map(|i| mean(&rows.iter().map(|r| r.verify_costs[i]).collect::<Vec<_>>()))
            .collect(),
        edges,
    })
}

/// Every verified model's observation model, P(symbol | correct), from the rows'
/// confidences as `confidence(row, model)` reads them: Dirichlet pseudo-count `alpha` per
/// cell, monotone in the confidence, normalised per correctness class.
fn observation_model(
    rows: &[CascadeRow],
    (n, symbols, alpha): (usize, usize, f64),
    bin: &dyn Fn(usize, Option<f64>) -> usize,
    confidence: &dyn Fn(&CascadeRow, usize) -> Option<f64>,
) -> Vec<Vec<Vec<f64>>> {
    let mut obs = vec![vec![vec![alpha; symbols]; 2]; n.saturating_sub(1)];
    for r in rows {
        let v = r.state();
        for (i, per_model) in obs.iter_mut().enumerate() {
            per_model[(v >> i) & 1][bin(i, confidence(r, i))] += 1.0;
        }
    }
    finish_observation(&mut obs);
    obs
}

/// Turns observation counts (per verified model, per correctness class, per symbol) into
/// the model the solver reads: monotone in the confidence ([`monotone_observation`]) and
/// normalised per class (uniform for a class without counts).
pub fn finish_observation(counts: &mut [Vec<Vec<f64>>]) {
    for per_model in counts {
        monotone_observation(per_model);
        for row in per_model.iter_mut() {
            let total: f64 = row.iter().sum();
            let symbols = row.len().max(1) as f64;
            if total > 0.0 {
                row.iter_mut().for_each(|x| *x /= total);
            } else {
                row.iter_mut().for_each(|x| *x = 1.0 / symbols);
            }
        }
    }
}

/// The quantile edges of every verified model's known confidences (none for uniform bins).
fn model_edges(rows: &[CascadeRow], n: usize, bins: CascadeBins) -> Vec<Vec<f64>> {
    match bins.binning {
        Binning::Uniform => Vec::new(),
        Binning::Quantile => (0..n.saturating_sub(1))
            .map(|i| {
                let mut known: Vec<f64> = rows
                    .iter()
                    .filter_map(|r| r.confidences[i].filter(|p| p.is_finite()))
                    .collect();
                quantile_edges(&mut known, bins.count)
            })
            .collect(),
    }
}

/// Makes one model's verifier calibrated in the sense of the two-model method: the share
/// of correct answers per confidence bin, `P(correct | bin)`, is fitted non-decreasing in
/// the bin by pool-adjacent-violators (weights = rows per bin), and the counts are rebuilt
/// from it. Bin and class totals are unchanged; a bin where, by noise, fewer answers were
/// right than in the bin below no longer argues for escalating a more confident answer.
/// The "unknown" symbol (last) is not ordered and keeps its counts.
fn monotone_observation(counts: &mut [Vec<f64>]) {
    let [wrong, right] = counts else {
        return;
    };
    let bins = right.len().saturating_sub(1);
    // Non-decreasing P(right | bin) is a non-increasing fit of P(wrong | bin).
    let blocks = crate::calibrate::pav((0..bins).map(|o| (wrong[o] + right[o], wrong[o])));
    for b in blocks {
        let p_wrong = b.mean();
        for o in b.first..=b.last {
            let total = wrong[o] + right[o];
            wrong[o] = p_wrong * total;
            right[o] = (1.0 - p_wrong) * total;
        }
    }
}

/// The result of running a cascade policy on rows (offline, with every model's answer known).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CascadeOutcome {
    /// Mean score of the kept answers.
    pub quality: f64,
    /// Mean cost (answers and verifications paid).
    pub cost: f64,
    /// Share of queries that reached model i (index i).
    pub reached: Vec<f64>,
    /// Share of queries whose kept answer came from model i.
    pub kept: Vec<f64>,
}

/// Replays `policy` on `rows`: which models each query visits, what it keeps, what it pays.
pub fn simulate_cascade(policy: &CascadePolicy, rows: &[CascadeRow]) -> CascadeOutcome {
    simulate_cascade_by(rows, policy.model.len(), |_| policy)
}

/// [`simulate_cascade`] with row `i` routed by `policy_of(i)` (e.g. its task's table), all
/// over the same `n` models.
pub fn simulate_cascade_by<'a>(
    rows: &[CascadeRow],
    n: usize,
    policy_of: impl Fn(usize) -> &'a CascadePolicy,
) -> CascadeOutcome {
    let mut reached = vec![0.0; n];
    let mut kept = vec![0.0; n];
    let (mut quality, mut cost) = (0.0, 0.0);
    for (i, r) in rows.iter().enumerate() {
        let (q, c, path) = run_one(policy_of(i), r);
        quality += q;
        cost += c;
        for &m in &path {
            reached[m] += 1.0;
        }
        if let Some(&last) = path.last() {
            kept[last] += 1.0;
        }
    }
    let len = rows.len().max(1) as f64;
    CascadeOutcome {
        quality: quality / len,
        cost: cost / len,
        reached: reached.iter().map(|x| x / len).collect(),
        kept: kept.iter().map(|x| x / len).collect(),
    }
}

/// One query through the policy: (score kept, cost paid, models visited).
pub fn run_one(policy: &CascadePolicy, r: &CascadeRow) -> (f64, f64, Vec<usize>) {
    let n = policy.model.len();
    let mut current = policy.start.model;
    let mut path = vec![current];
    let mut cost = r.answer_costs[current];
    if !policy.start.verify || current + 1 == n {
        return (r.scores[current], cost, path);
    }
    let mut history = Vec::new();
    loop {
        cost += r.verify_costs[current];
        let previous = path.len().checked_sub(2).map(|k| path[k]);
        let confidence = r.confidence_after(current, previous);
        history.push((current, policy.symbol(current, confidence)));
        match policy.decide(&history) {
            CascadeAction::Keep => return (r.scores[current], cost, path),
            CascadeAction::AnswerWith(j) => {
                path.push(j);
                return (r.scores[j], cost + r.answer_costs[j], path);
            }
            CascadeAction::EscalateTo(j) => {
                current = j;
                path.push(j);
                cost += r.answer_costs[j];
                if j + 1 == n {
                    return (r.scores[j], cost, path);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(n: usize) -> Vec<String> {
        (0..n).map(|i| format!("m{i}")).collect()
    }

    #[test]
    fn symbols_and_unknown() {
        assert_eq!(symbol(10, Some(0.0)), 0);
        assert_eq!(symbol(10, Some(1.0)), 8);
        assert_eq!(symbol(10, Some(0.5)), 4);
        assert_eq!(symbol(10, None), 9);
        assert_eq!(symbol(10, Some(f64::NAN)), 9);
    }

    #[test]
    fn perfect_verifier_two_models() {
        let rows: Vec<CascadeRow> = (0..100)
            .map(|i| {
                let small = f64::from(i % 2 == 0);
                CascadeRow {
                    scores: vec![small, 1.0],
                    confidences: vec![Some(small), None],
                    answer_costs: vec![1.0, 10.0],
                    verify_costs: vec![0.1, 0.0],
                    confidences_jumped: Vec::new(),
                }
            })
            .collect();
        let model = estimate_cascade(&names(2), &rows, 4, 1e-9).unwrap();
        let policy = solve_cascade(
            &model,
            CascadeSettings {
                lambda: 0.01,
                ..Default::default()
            },
        )
        .unwrap();
        assert_eq!(
            policy.start,
            StartChoice {
                model: 0,
                verify: true
            }
        );
        assert_eq!(policy.decide(&[(0, 4)]), CascadeAction::Keep);
        assert_eq!(policy.decide(&[(0, 0)]), CascadeAction::AnswerWith(1));
        let out = simulate_cascade(&policy, &rows);
        assert_eq!(out.quality, 1.0);
        assert!((out.reached[1] - 0.5).abs() < 1e-12);
    }

    #[test]
    fn expensive_escalation_is_not_taken() {
        let rows: Vec<CascadeRow> = (0..50)
            .map(|i| CascadeRow {
                scores: vec![f64::from(i % 2 == 0), 1.0],
                confidences: vec![Some(0.5), None],
                answer_costs: vec![1.0, 10.0],
                verify_costs: vec![0.1, 0.0],
                confidences_jumped: Vec::new(),
            })
            .collect();
        let model = estimate_cascade(&names(2), &rows, 4, 1.0).unwrap();
        let policy = solve_cascade(
            &model,
            CascadeSettings {
                lambda: 1.0,
                ..Default::default()
            },
        )
        .unwrap();
        // A large call costs 10 quality units for a 0.5 gain: answer with the small model only.
        assert_eq!(
            policy.start,
            StartChoice {
                model: 0,
                verify: false
            }
        );
    }

    #[test]
    fn policies_round_trip_through_json() {
        let rows: Vec<CascadeRow> = (0..30)
            .map(|i| CascadeRow {
                scores: vec![f64::from(i % 3 == 0), f64::from(i % 2 == 0), 1.0],
                confidences: vec![Some(f64::from(i % 4) / 3.0), None, None],
                answer_costs: vec![1.0, 3.0, 9.0],
                verify_costs: vec![0.2, 0.5, 0.0],
                confidences_jumped: Vec::new(),
            })
            .collect();
        let model = estimate_cascade(&names(3), &rows, 3, 1.0).unwrap();
        let policy = solve_cascade(
            &model,
            CascadeSettings {
                lambda: 0.05,
                ..Default::default()
            },
        )
        .unwrap();
        let back: CascadePolicy =
            serde_json::from_str(&serde_json::to_string(&policy).unwrap()).unwrap();
        assert_eq!(back, policy);
    }
}
