//! Cross-validation of the calibrated method and `auto`: seeded fold assignments, the
//! out-of-fold outcome of each candidate cut and κ, the choice between them and Threshold.

use super::*;

/// What cross-validation found, stored in the policy's training summary.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CvSummary {
    /// Folds per assignment.
    pub folds: usize,
    /// Seeded fold assignments.
    pub repeats: usize,
    /// The objective scored on the out-of-fold decisions.
    pub objective: Objective,
    /// The chosen setting's out-of-fold objective, mean over the assignments.
    pub mean: f64,
    /// Its standard deviation over the assignments.
    pub sd: f64,
    /// Its out-of-fold outcome, averaged over the assignments.
    pub outcome: Outcome,
    /// The chosen candidate, in words.
    pub chosen: String,
    /// The best out-of-fold mean of every alternative tried, for the report.
    pub alternatives: Vec<CvAlternative>,
    /// Set when the confidences were pooled into quantile groups before the fit (more
    /// distinct values than [`MAX_LEVELS`]); decisions stay those of the raw values.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pooled: Option<PooledLevels>,
}

/// How a continuous confidence was pooled for the cross-validated fit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct PooledLevels {
    /// Distinct known confidences in the training rows.
    pub distinct: usize,
    /// Groups they were pooled into (per task and fixed-answer flag, unknowns included).
    pub groups: usize,
}

/// One alternative of the cross-validated selection.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CvAlternative {
    /// What it is (e.g. `pooled`, `κ=30`, `Threshold`).
    pub name: String,
    /// Best out-of-fold objective mean.
    pub mean: f64,
    /// Its standard deviation over the assignments.
    pub sd: f64,
}

/// Seeded fold assignments: `assignments[r][row]` is the fold of `row` in repeat `r`.
pub fn fold_assignments(rows: usize, folds: usize, repeats: usize, seed: u64) -> Vec<Vec<usize>> {
    (0..repeats)
        .map(|r| {
            let mut rng = ChaCha8Rng::seed_from_u64(seed.wrapping_add(r as u64));
            let mut order: Vec<usize> = (0..rows).collect();
            order.shuffle(&mut rng);
            let mut fold = vec![0; rows];
            for (pos, row) in order.into_iter().enumerate() {
                fold[row] = pos % folds;
            }
            fold
        })
        .collect()
}

/// The decision of a cell that does not depend on a gain: fixed answers escalate, an
/// unknown confidence follows `unknown`.
pub(crate) fn forced_decision(key: &CellKey, unknown: Decision) -> Option<bool> {
    if key.forced {
        Some(true)
    } else {
        match key.score {
            VerifierScore::Known(_) => None,
            VerifierScore::Unknown => Some(unknown.escalates()),
        }
    }
}

/// One fold's entries (cell, sums) by reference: a nested fold is a union of buckets, read
/// in place rather than copied.
pub(crate) type FoldRef<'a> = Vec<&'a (u32, CellSums)>;

/// Rows of one cell (of one fold) with the gain predicted for them.
pub(crate) struct Entry<'a> {
    pub(crate) sums: &'a CellSums,
    pub(crate) forced: Option<bool>,
    pub(crate) predicted: f64,
}

/// Out-of-fold entries of one fold assignment, one list per κ of `kappas`: each fold's
/// cells with the gain predicted by the model fitted on the other folds (`gains`: every
/// cell's, from which each fold's training cells are taken once for all κ).
pub(crate) fn out_of_fold_entries<'a>(
    stats: &Stats<'_>,
    (gains, g): (&[CellGain], &GainCells),
    fold_sums: &[FoldRef<'a>],
    kappas: &[Option<f64>],
    unknown: Decision,
) -> Vec<Vec<Entry<'a>>> {
    let mut out: Vec<Vec<Entry<'a>>> = kappas.iter().map(|_| Vec::new()).collect();
    let mut train = Vec::new();
    for fold in fold_sums {
        CellGain::without_into(&mut train, gains, fold.iter().copied());
        for (kappa, entries) in kappas.iter().zip(&mut out) {
            let model = g.fit(&train, stats.task_names, *kappa);
            let curves = model
                .as_ref()
                .map(|m| g.curves_by_task(m, stats.task_names));
            for &(cell, ref sums) in fold.iter().copied() {
                let c = cell as usize;
                let forced = forced_decision(&stats.keys[c], unknown);
                // A known confidence without a prediction (its training folds had none)
                // escalates: the safe side.
                let predicted = match (&model, &curves, forced) {
                    (Some(m), Some(curves), None) => g.predict_on(curves, &m.pooled, c),
                    _ => f64::NAN,
                };
                entries.push(Entry {
                    sums,
                    forced,
                    predicted,
                });
            }
        }
    }
    out
}

/// Outcomes of "escalate where the predicted gain ≥ cut" for every cut (descending cuts),
/// in one sort and one pass over the entries.
pub(crate) fn outcomes_for_cuts(
    entries: Vec<Entry<'_>>,
    uniform: Option<QueryCosts>,
    cuts: &[f64],
) -> Vec<Outcome> {
    let mut totals = Totals::default();
    let mut free: Vec<Entry<'_>> = Vec::new();
    for e in entries {
        match e.forced {
            Some(escalate) => totals.add(e.sums, escalate),
            None if e.predicted.is_nan() => totals.add(e.sums, true),
            None => {
                totals.add(e.sums, false);
                free.push(e);
            }
        }
    }
    free.sort_by(|a, b| b.predicted.total_cmp(&a.predicted));
    let mut next = 0;
    cuts.iter()
        .map(|&cut| {
            while next < free.len() && free[next].predicted >= cut {
                totals.escalate_kept(free[next].sums);
                next += 1;
            }
            totals.outcome(uniform)
        })
        .collect()
}

/// The cuts tried for `model`: above every gain (never escalate), the midpoints between
/// distinct gains, and below every gain (escalate every known confidence). At most
/// `MAX_CUTS` (quantiles of the distinct gains when a continuous signal has more).
pub(crate) fn candidate_cuts(model: &GainModel) -> Vec<f64> {
    const MAX_CUTS: usize = 256;
    let mut gains = model.distinct_gains();
    if gains.len() > MAX_CUTS {
        let step = gains.len() as f64 / MAX_CUTS as f64;
        gains = (0..MAX_CUTS)
            .map(|i| gains[(i as f64 * step) as usize])
            .collect();
    }
    let (Some(&hi), Some(&lo)) = (gains.first(), gains.last()) else {
        return Vec::new();
    };
    let mut cuts = vec![hi + 1.0];
    cuts.extend(gains.windows(2).map(|w| (w[0] + w[1]) / 2.0));
    cuts.push(lo - 1.0);
    cuts
}

impl GainModel {
    /// Every distinct rule of the cut sweep, from never to always escalating, with the
    /// cut each stands for.
    pub fn sweep(&self) -> Vec<(f64, DecisionRule)> {
        let mut out: Vec<(f64, DecisionRule)> = Vec::new();
        for cut in candidate_cuts(self) {
            let rule = self.rule(cut);
            if out.last().is_none_or(|(_, r)| *r != rule) {
                out.push((cut, rule));
            }
        }
        out
    }
}

/// Mean and standard deviation (n − 1) of `values`.
pub fn mean_sd(values: &[f64]) -> (f64, f64) {
    let n = values.len() as f64;
    let mean = values.iter().sum::<f64>() / n;
    let var = if values.len() > 1 {
        values.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / (n - 1.0)
    } else {
        0.0
    };
    (mean, var.sqrt())
}

/// How far one procedure leads another on the same rows: the mean of the per-row
/// differences and its standard error.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PairedLead {
    /// Mean of `a[i] − b[i]`.
    pub mean: f64,
    /// Standard error of that mean (sd of the differences / √n; 0 with fewer than 2 rows).
    pub standard_error: f64,
}

impl PairedLead {
    /// The lead of `a` over `b`, row by row (rows beyond the shorter slice are ignored).
    pub fn of(a: &[f64], b: &[f64]) -> Self {
        let diffs: Vec<f64> = a.iter().zip(b).map(|(x, y)| x - y).collect();
        let (mean, sd) = mean_sd(&diffs);
        let n = diffs.len() as f64;
        Self {
            mean: if diffs.is_empty() { 0.0 } else { mean },
            standard_error: if diffs.len() > 1 { sd / n.sqrt() } else { 0.0 },
        }
    }
}

/// The Student-t interval of the mean of `values` at `level` (e.g. 0.95); `None` with
/// fewer than two values.
pub fn t_interval(values: &[f64], level: f64) -> Option<(f64, f64)> {
    use statrs::distribution::{ContinuousCDF, StudentsT};
    if values.len() < 2 || !(0.0..1.0).contains(&level) {
        return None;
    }
    let (mean, sd) = mean_sd(values);
    let n = values.len() as f64;
    let t = StudentsT::new(0.0, 1.0, n - 1.0).ok()?;
    let half = t.inverse_cdf(0.5 + level / 2.0) * sd / n.sqrt();
    Some((mean - half, mean + half))
}

/// The averaged outcome of several assignments.
pub(crate) fn mean_outcome(outcomes: &[Outcome]) -> Outcome {
    let n = outcomes.len() as f64;
    Outcome {
        quality: outcomes.iter().map(|o| o.quality).sum::<f64>() / n,
        cost: outcomes.iter().map(|o| o.cost).sum::<f64>() / n,
        escalation_rate: outcomes.iter().map(|o| o.escalation_rate).sum::<f64>() / n,
    }
}

/// A candidate's cross-validated score: per-assignment objective values and their mean.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct CvScore {
    pub(crate) values: Vec<f64>,
    pub(crate) outcome: Outcome,
    /// Under the ΔIBC objective, the mean of ΔIBC × spend (the excess gain,
    /// [`super::operating_point`]); `None` under the others.
    pub(crate) excess: Option<f64>,
}

impl CvScore {
    /// Scores per-assignment outcomes under `objective`; `None` when infeasible or
    /// undefined in any assignment, or when there is no assignment to score (a mean of
    /// nothing would be NaN, which a policy file cannot hold).
    pub(crate) fn of(
        base: &Baseline,
        outcomes: &[Outcome],
        objective: Objective,
        options: &TrainOptions,
    ) -> Option<Self> {
        if outcomes.is_empty() {
            return None;
        }
        let values = outcomes
            .iter()
            .map(|o| {
                let l: Lift = lift(base, o);
                objective_key(objective, o, l, options).map(|k| k.0)
            })
            .collect::<Option<Vec<f64>>>()?;
        let excess = (objective == Objective::DeltaIbc).then(|| {
            let spent = outcomes.iter().map(|o| o.cost - base.small_cost);
            let products: Vec<f64> = values.iter().zip(spent).map(|(d, s)| d * s).collect();
            mean_sd(&products).0
        });
        Some(Self {
            values,
            outcome: mean_outcome(outcomes),
            excess,
        })
    }

    pub(crate) fn mean(&self) -> f64 {
        mean_sd(&self.values).0
    }

    /// Larger is better; ties prefer the cheaper.
    pub(crate) fn beats(&self, other: &CvScore) -> bool {
        let (a, b) = (self.mean(), other.mean());
        a > b || (a == b && self.outcome.cost < other.outcome.cost)
    }
}

/// One fitted curve family of the cross-validation: κ, the model on every row, the cuts.
pub(crate) struct CalibratedArm {
    pub(crate) kappa: Option<f64>,
    pub(crate) model: GainModel,
    pub(crate) cuts: Vec<f64>,
    /// Out-of-fold outcome of every cut, per fold assignment.
    pub(crate) outcomes: Vec<Vec<Outcome>>,
}

/// Picks κ and the cut whose out-of-fold scores are best under `objective`; under ΔIBC,
/// the robust operating point of [`super::operating_point`].
pub(crate) fn choose_calibrated(
    arms: Vec<CalibratedArm>,
    (base, noise): (&Baseline, &RatioNoise),
    folds: usize,
    repeats: usize,
    objective: Objective,
    options: &TrainOptions,
) -> Result<CalibratedFit> {
    let mut best_ratio: Option<ScoredCut> = None;
    let mut best_excess: Option<ScoredCut> = None;
    let mut alternatives = Vec::new();
    for (index, arm) in arms.iter().enumerate() {
        let (by_objective, by_excess) = best_cuts(arm, index, base, objective, options);
        let Some(here) = by_objective else {
            continue;
        };
        let (mean, sd) = mean_sd(&here.score.values);
        alternatives.push(CvAlternative {
            name: kappa_name(arm.kappa),
            mean,
            sd,
        });
        if best_ratio
            .as_ref()
            .is_none_or(|b| here.score.beats(&b.score))
        {
            best_ratio = Some(here);
        }
        if let Some(e) = by_excess
            && best_excess
                .as_ref()
                .is_none_or(|b| e.score.beats_on_excess(&b.score))
        {
            best_excess = Some(e);
        }
    }
    let Some(best_ratio) = best_ratio else {
        return Err(CoreError::NoFeasibleCandidate {
            method: "Calibrated".into(),
            constraint: format!("{objective:?} out of fold"),
            min_cost: f64::NAN,
            max_cost: f64::NAN,
            min_rate: f64::NAN,
            max_rate: f64::NAN,
        });
    };
    let (kept, why) = settle_point(best_ratio, best_excess, base, noise);
    let ScoredCut { score, cut, arm } = kept;
    let Some(arm) = arms.into_iter().nth(arm) else {
        unreachable!("a scored cut names one of the arms it was scored on");
    };
    let (kappa, model) = (arm.kappa, arm.model);
    let (mean, sd) = mean_sd(&score.values);
    let rule = model.rule(cut);
    let why = why.map_or_else(String::new, |w| format!(" ({w})"));
    Ok(CalibratedFit {
        cv: CvSummary {
            folds,
            repeats,
            objective,
            mean,
            sd,
            outcome: score.outcome,
            chosen: format!(
                "{}, escalate where E[gain] ≥ {cut:.4}{why}",
                kappa_name(kappa)
            ),
            alternatives,
            pooled: None,
        },
        rule,
        cut,
        kappa,
        model,
        score,
    })
}

/// The out-of-fold outcome of `spec` (a method selected in sample) on one fold assignment:
/// trained on the other folds' cells, decided on the fold's.
pub(crate) fn out_of_fold_outcome(
    stats: &Stats<'_>,
    cells: &Cells,
    fold_sums: &[Vec<(u32, CellSums)>],
    spec: &MethodSpec,
    options: &TrainOptions,
) -> Result<Outcome> {
    let mut totals = Totals::default();
    for fold in fold_sums {
        let train = Stats {
            sums: Cow::Owned(cells.without(fold)),
            ..stats.clone()
        };
        let (chosen, _) = train_stats(&train, spec, options)?;
        for (cell, sums) in fold {
            let key = &stats.keys[*cell as usize];
            let escalate = escalates(
                &chosen.rule,
                key,
                stats.task(key),
                options.unknown_confidence,
            );
            totals.add(sums, escalate);
        }
    }
    Ok(totals.outcome(stats.uniform))
}

/// Out-of-fold outcomes of `spec`, one per seeded assignment of the rows to `folds` folds:
/// how a method selected in sample generalises. One pass over the rows per assignment;
/// training and scoring read only the cells.
pub fn cross_validate(
    data: &Dataset,
    spec: &MethodSpec,
    options: &TrainOptions,
    folds: usize,
    repeats: usize,
    seed: u64,
) -> Result<Vec<Outcome>> {
    if spec.kind.cross_validated() {
        return Err(CoreError::InvalidParameter {
            name: "method",
            reason: format!("{} already selects by cross-validation", spec.kind.name()),
        });
    }
    if folds < 2 || folds > data.len() {
        return Err(CoreError::InvalidParameter {
            name: "folds",
            reason: format!("{folds} must be in 2..={}", data.len()),
        });
    }
    let cells = data.cells_for(&options.fixed_answers);
    let stats = data.stats(&cells);
    fold_assignments(data.len(), folds, repeats, seed)
        .iter()
        .map(|a| {
            let fold_sums = data.fold_sums(&cells, a, folds);
            out_of_fold_outcome(&stats, &cells, &fold_sums, spec, options)
        })
        .collect()
}

/// Every κ's curves fitted on all rows, and the out-of-fold outcomes of their cuts (and of
/// the in-sample `challenger`, if any) over the seeded fold assignments: one pass over the
/// rows per assignment, shared by every κ and the challenger. `gains` are every cell's
/// ([`CellGain::all`] of `stats`).
pub(crate) fn cross_validate_arms(
    data: &Dataset,
    (cells, stats, g, gains): (&Cells, &Stats<'_>, &GainCells, &[CellGain]),
    config: &CalibratedConfig,
    folds: usize,
    challenger: Option<(&MethodSpec, &GridGroups)>,
    options: &TrainOptions,
) -> Result<(Vec<CalibratedArm>, Vec<Outcome>)> {
    let mut arms: Vec<CalibratedArm> = config
        .shrinkages(stats.task_names.len())
        .into_iter()
        .filter_map(|kappa| {
            let model = g.fit(gains, stats.task_names, kappa)?;
            let cuts = candidate_cuts(&model);
            Some(CalibratedArm {
                kappa,
                model,
                cuts,
                outcomes: Vec::new(),
            })
        })
        .collect();
    // Each assignment is independent: its arms' outcomes and the challenger's.
    let assignments = fold_assignments(data.len(), folds, config.repeats, config.seed);
    let scored = crate::parallel::map_in_parallel(&assignments, |assignment| {
        let fold_sums = data.fold_sums(cells, assignment, folds);
        let fold_refs: Vec<FoldRef<'_>> = fold_sums.iter().map(|f| f.iter().collect()).collect();
        let kappas: Vec<Option<f64>> = arms.iter().map(|a| a.kappa).collect();
        let entries = out_of_fold_entries(
            stats,
            (gains, g),
            &fold_refs,
            &kappas,
            options.unknown_confidence,
        );
        let per_arm: Vec<Vec<Outcome>> = (arms.iter().zip(entries))
            .map(|(arm, entries)| outcomes_for_cuts(entries, stats.uniform, &arm.cuts))
            .collect();
        // The challenger (Threshold) on the cells its grid tells apart: the same decisions.
        let challenger = challenger
            .map(|(spec, groups)| {
                let fold_sums: Vec<_> = fold_sums.iter().map(|f| groups.entries(f)).collect();
                let grouped = groups.stats(stats);
                out_of_fold_outcome(&grouped, &groups.cells, &fold_sums, spec, options)
            })
            .transpose()?;
        Ok((per_arm, challenger))
    });
    let mut challenger_outcomes = Vec::new();
    for result in scored {
        let (per_arm, challenger): (Vec<Vec<Outcome>>, Option<Outcome>) = result?;
        for (arm, outcomes) in arms.iter_mut().zip(per_arm) {
            arm.outcomes.push(outcomes);
        }
        challenger_outcomes.extend(challenger);
    }
    Ok((arms, challenger_outcomes))
}

/// Trains a cross-validated method ([`MethodKind::Calibrated`] or [`MethodKind::Auto`]):
/// one pass over the rows per fold assignment, shared by every κ and by the Threshold
/// challenger; everything else reads cells.
pub(crate) fn train_cross_validated(
    data: &Dataset,
    cost_model: &CostModel,
    spec: &MethodSpec,
    options: &TrainOptions,
) -> Result<Policy> {
    options.objective.validate()?;
    let config = &spec.calibrated;
    config.validate()?;
    let raw_cells = data.cells_for(&options.fixed_answers);
    let raw_stats = data.stats(&raw_cells);
    // A continuous confidence trains on quantile groups of its levels (exact decisions,
    // see `levels`); a few-level one on its cells.
    let pooled = LevelGroups::new(&raw_cells, &crate::compat::py_grid(spec.num_bins));
    let (cells, ranges) = match &pooled {
        Some(p) => (&p.cells, Some(p.ranges.as_slice())),
        None => (&*raw_cells, None),
    };
    let stats = data.stats(cells);
    let (base, noise) = RatioNoise::with_baseline(&raw_stats);
    let used = objective_used(options.objective, base.lift_defined());
    let g = GainCells::new(&stats, ranges);
    let gains = CellGain::all(&stats.sums);
    let known = g.known_rows(&gains) as usize;
    if known == 0 {
        return Err(no_known_confidence());
    }
    // Fewer rows than 2 per fold cannot be cross-validated meaningfully.
    let folds = config.folds.min(known / 2).max(2);
    let threshold = threshold_challenger(spec, &stats);
    let challenger = threshold.as_ref().map(|(spec, groups)| (spec, groups));
    let (arms, threshold_outcomes) = cross_validate_arms(
        data,
        (cells, &stats, &g, &gains),
        config,
        folds,
        challenger,
        options,
    )?;
    let fit = choose_calibrated(arms, (&base, &noise), folds, config.repeats, used, options)?;
    let calibrated = calibrated_of(&fit, (&stats, &g, &base), options);
    let input = NestedInput {
        data,
        cells,
        stats: &stats,
        g: &g,
        gains: &gains,
    };
    let challenge = (&base, threshold_outcomes.as_slice());
    let chosen = challenge_calibrated(
        calibrated,
        &input,
        challenge,
        challenger,
        (config, folds),
        used,
        options,
    )?;
    let train = raw_stats.outcome_of(&chosen.candidate.rule, options.unknown_confidence);
    let oracle = raw_stats.oracle();
    let tried = chosen.cv.alternatives.len();
    let mut cv = chosen.cv;
    cv.pooled = pooled.as_ref().map(|p| p.summary());
    Ok(Policy {
        format_version: POLICY_FORMAT_VERSION,
        method: spec.clone(),
        chosen_component: chosen.candidate.method,
        rule: chosen.candidate.rule,
        fixed_answers: options.fixed_answers.clone(),
        unknown_confidence: options.unknown_confidence,
        costs: *cost_model,
        objective: options.objective,
        cost_constraint: options.cost_constraint,
        calibration: chosen.calibration,
        summary: TrainingSummary {
            rows: data.len(),
            candidates: tried,
            feasible: tried,
            objective_used: used,
            note: fallback_note(used, options.objective, &base, &oracle),
            train,
            train_lift: lift(&base, &train),
            baseline: base,
            oracle,
            oracle_lift: lift(&base, &oracle),
            lambda: chosen.candidate.lambda,
            cross_validation: Some(cv),
        },
    })
}

/// `auto`'s challenger: the paper's Threshold and the cells its grid tells apart, where
/// it trains. `Calibrated` has none, and never pays for the groups.
fn threshold_challenger(spec: &MethodSpec, stats: &Stats<'_>) -> Option<(MethodSpec, GridGroups)> {
    (spec.kind == MethodKind::Auto).then(|| {
        let grid = crate::compat::py_grid(spec.num_bins);
        let threshold = MethodSpec::new(MethodKind::Threshold, spec.num_bins);
        (threshold, GridGroups::new(stats, &grid))
    })
}

/// The calibrated fit as a candidate, with its curves and λ table (in units of the large
/// model's cost, 1 when that is free).
fn calibrated_of(
    fit: &CalibratedFit,
    (stats, g, base): (&Stats<'_>, &GainCells, &Baseline),
    options: &TrainOptions,
) -> Calibrated {
    let unit = if base.large_cost > 0.0 {
        base.large_cost
    } else {
        1.0
    };
    Calibrated {
        candidate: Candidate {
            method: MethodKind::Calibrated,
            rule: fit.rule.clone(),
            lambda: Some(fit.cut),
        },
        calibration: Some(Calibration {
            lambdas: lambda_table(stats, g, &fit.model, options.unknown_confidence, unit),
            model: fit.model.clone(),
            cut: fit.cut,
            kappa: fit.kappa,
            unit,
        }),
        cv: fit.cv.clone(),
    }
}

/// `auto`'s challenge of the calibrated fit by the paper's Threshold (on its grid's
/// `groups`), decided by the nested comparison; without a challenger, the calibrated fit.
fn challenge_calibrated(
    calibrated: Calibrated,
    input: &NestedInput<'_, '_>,
    (base, threshold_outcomes): (&Baseline, &[Outcome]),
    challenger: Option<(&MethodSpec, &GridGroups)>,
    (config, folds): (&CalibratedConfig, usize),
    used: Objective,
    options: &TrainOptions,
) -> Result<Calibrated> {
    let Some((threshold, groups)) = challenger else {
        return Ok(calibrated);
    };
    let challenge = CvScore::of(base, threshold_outcomes, used, options);
    let paired = nested_paired(input, groups, (config, folds), threshold, used, options)?;
    settle(calibrated, challenge, Some(&paired), || {
        Ok(train_stats(&groups.stats(input.stats), threshold, options)?.0)
    })
}

/// What a cross-validated training keeps: the rule, the curves (if calibrated), the CV record.
pub(crate) struct Calibrated {
    pub(crate) candidate: Candidate,
    pub(crate) calibration: Option<Calibration>,
    pub(crate) cv: CvSummary,
}

/// `auto`'s choice: the calibrated fit, unless the paper's Threshold (trained by
/// `threshold` when needed) is clearly better on the held-out folds of the nested
/// comparison ([`PairedFolds`]). Either way the challenger's out-of-fold score
/// (`challenge`) is recorded among the alternatives.
pub(crate) fn settle(
    mut calibrated: Calibrated,
    challenge: Option<CvScore>,
    paired: Option<&PairedFolds>,
    threshold: impl FnOnce() -> Result<Candidate>,
) -> Result<Calibrated> {
    let (Some(challenge), Some(paired)) = (challenge, paired) else {
        return Ok(calibrated);
    };
    let (mean, sd) = mean_sd(&challenge.values);
    calibrated.cv.alternatives.push(CvAlternative {
        name: "Threshold".into(),
        mean,
        sd,
    });
    let (cal, thr) = paired.means();
    let nested = format!("nested, per held-out fold: Threshold {thr:.4}, calibrated {cal:.4}");
    if !paired.threshold_clearly_better() {
        calibrated.cv.chosen = format!("{} ({nested})", calibrated.cv.chosen);
        return Ok(calibrated);
    }
    let candidate = threshold()?;
    let mut cv = calibrated.cv;
    cv.mean = mean;
    cv.sd = sd;
    cv.outcome = challenge.outcome;
    cv.chosen = format!("Threshold, {} ({nested})", candidate.rule.describe());
    Ok(Calibrated {
        candidate,
        calibration: None,
        cv,
    })
}

pub(crate) fn kappa_name(kappa: Option<f64>) -> String {
    match kappa {
        None => "pooled".into(),
        Some(k) => format!("per task, κ={k}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_paired_lead_is_the_mean_difference_and_its_standard_error() {
        let lead = PairedLead::of(&[1.0, 0.0, 1.0, 1.0], &[0.0, 0.0, 0.0, 1.0]);
        assert!((lead.mean - 0.5).abs() < 1e-12);
        // sd of [1, 0, 1, 0] is √(1/3), over √4.
        assert!((lead.standard_error - (1.0_f64 / 3.0).sqrt() / 2.0).abs() < 1e-12);
        let one = PairedLead::of(&[0.7], &[0.2]);
        assert!((one.mean - 0.5).abs() < 1e-12 && one.standard_error == 0.0);
        assert_eq!(
            PairedLead::of(&[], &[]),
            PairedLead {
                mean: 0.0,
                standard_error: 0.0
            }
        );
    }
}
