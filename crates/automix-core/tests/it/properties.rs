//! Property tests of the decision core.

use automix_core::*;
use proptest::prelude::*;

fn record() -> impl Strategy<Value = RoutingRecord> {
    (0u8..=2, 0u8..=2, 0usize..=8, any::<bool>()).prop_map(|(s, l, votes, unknown)| {
        let verifier = if unknown && votes == 0 {
            VerifierScore::Unknown
        } else {
            VerifierScore::Known(Confidence::new(votes as f64 / 8.0).expect("in range"))
        };
        RoutingRecord::new(s as f64 / 2.0, l as f64 / 2.0, verifier)
    })
}

fn binary_records() -> impl Strategy<Value = Vec<RoutingRecord>> {
    records().prop_map(|rows| {
        rows.into_iter()
            .map(|mut r| {
                r.small_score = r.small_score.round();
                r.large_score = r.large_score.round();
                r
            })
            .collect()
    })
}

/// Methods fitted on the confidence (the exact POMDP, the calibrated curve) have nothing to
/// fit when no row has one, and say so.
fn nothing_to_fit(e: &CoreError, rows: &[RoutingRecord]) -> bool {
    matches!(
        e,
        CoreError::InvalidParameter {
            name: "verifier",
            ..
        }
    ) && rows.iter().all(|r| r.verifier == VerifierScore::Unknown)
}

fn records() -> impl Strategy<Value = Vec<RoutingRecord>> {
    prop::collection::vec(record(), 1..120)
}

proptest! {
    /// Scored on its own training rows, a policy's held-out objective is its training
    /// outcome under the objective it used: ΔIBC where defined, else quality.
    #[test]
    fn the_held_out_objective_of_the_training_rows_is_the_training_score(rows in records()) {
        let spec = MethodSpec::new(MethodKind::Threshold, 8);
        let policy = train(&rows, &CostModel::default(), &spec, &TrainOptions::default()).unwrap();
        let got = policy.held_out_objective(&rows).unwrap();
        let s = &policy.summary;
        let want = match s.objective_used {
            Objective::DeltaIbc => s.train_lift.value(),
            _ => Some(s.train.quality),
        };
        match (got, want) {
            (Some(a), Some(b)) => prop_assert!((a - b).abs() < 1e-9, "{a} against {b}"),
            (a, b) => prop_assert_eq!(a, b),
        }
    }

    #[test]
    fn bins_partition_the_unit_interval(p in 0.0f64..=1.0, n in 1usize..64) {
        let bins = Bins::new(n).unwrap();
        let b = bins.index(Confidence::new(p).unwrap());
        prop_assert!(b < bins.len());
        // p lies in its bin's half-open interval [centre - 1/2n, centre + 1/2n).
        let half = 0.5 / n as f64;
        prop_assert!(p >= bins.centre(b) - half - 1e-12 && p < bins.centre(b) + half + 1e-12);
    }

    #[test]
    fn k_votes_map_exactly(k in 1usize..40, j in 0usize..40) {
        prop_assume!(j <= k);
        let bins = Bins::new(k).unwrap();
        prop_assert_eq!(bins.index(Confidence::new(j as f64 / k as f64).unwrap()), j);
    }

    #[test]
    fn threshold_decisions_are_monotone(rows in records(), a in 0.0f64..=1.0, b in 0.0f64..=1.0) {
        let spec = MethodSpec::new(MethodKind::Threshold, 8);
        if let Ok(policy) = train(&rows, &CostModel::default(), &spec, &TrainOptions::default()) {
            let (lo, hi) = if a <= b { (a, b) } else { (b, a) };
            let d_lo = policy.decide(Confidence::new(lo).unwrap()).escalates();
            let d_hi = policy.decide(Confidence::new(hi).unwrap()).escalates();
            // More confidence never turns keep into escalate.
            prop_assert!(d_lo || !d_hi);
        }
    }

    // The oracle bounds ΔIBC for correct/incorrect scores (the paper's setting). With
    // graded scores it need not: escalating only the largest gains can have a steeper slope.
    #[test]
    fn oracle_lift_bounds_every_policy(rows in binary_records(), method in 0usize..8) {
        let data = Dataset::new(&rows, &CostModel::default()).unwrap();
        let oracle = data.evaluate(&data.oracle()).unwrap();
        if let Some(best) = data.lift(&oracle).value() {
            let spec = MethodSpec::new(MethodKind::ALL[method], 8);
            let scored = match score_candidates(&spec, &data, &TrainOptions::default()) {
                Ok(scored) => scored,
                Err(e) if nothing_to_fit(&e, &rows) => return Ok(()),
                Err(e) => panic!("{e}"),
            };
            for s in scored {
                if let Some(v) = s.lift.value() {
                    prop_assert!(v <= best + 1e-9, "{:?} lift {} > oracle {}", s.candidate.rule, v, best);
                }
            }
        }
    }

    #[test]
    fn never_escalating_costs_small_plus_verifier(rows in records(), small in 0.0f64..5.0, large in 5.0f64..100.0, ver in 0.0f64..3.0) {
        let costs = CostModel::Relative { small, large, verifier: ver };
        let data = Dataset::new(&rows, &costs).unwrap();
        let o = data.evaluate(&vec![false; rows.len()]).unwrap();
        prop_assert!((o.cost - (small + ver)).abs() < 1e-9);
        prop_assert_eq!(o.escalation_rate, 0.0);
    }

    #[test]
    fn policies_round_trip(rows in records(), method in 0usize..8, per_task in any::<bool>()) {
        let rows: Vec<RoutingRecord> = rows.into_iter().enumerate()
            .map(|(i, mut r)| { r.task_name = Some(format!("task{}", i % 3)); r }).collect();
        let mut spec = MethodSpec::new(MethodKind::ALL[method], 8);
        spec.exact.per_task_prior = per_task;
        let options = TrainOptions { objective: Objective::NetUtility { lambda: 0.01 }, ..TrainOptions::default() };
        let policy = match train(&rows, &CostModel::default(), &spec, &options) {
            Ok(policy) => policy,
            Err(e) if nothing_to_fit(&e, &rows) => return Ok(()),
            Err(e) => panic!("{e}"),
        };
        let back = Policy::from_json(&policy.to_json().unwrap()).unwrap();
        prop_assert_eq!(&back, &policy);
        for r in &rows {
            let e = QueryEvidence { verifier: r.verifier, task_name: r.task_name.as_deref(), small_answer: None };
            prop_assert_eq!(back.decide_for(&e), policy.decide_for(&e));
        }
    }

    #[test]
    fn training_is_deterministic(rows in records(), method in 0usize..8) {
        let spec = MethodSpec::new(MethodKind::ALL[method], 8);
        let a = train(&rows, &CostModel::default(), &spec, &TrainOptions::default());
        let b = train(&rows, &CostModel::default(), &spec, &TrainOptions::default());
        prop_assert_eq!(a, b);
    }

    #[test]
    fn exact_pomdp_with_perfect_verifier_matches_oracle(labels in prop::collection::vec(any::<bool>(), 20..200)) {
        // Confidence 1 exactly when the small answer is right, 0 otherwise: the exact POMDP
        // under a quality objective must recover the oracle.
        let rows: Vec<RoutingRecord> = labels.iter().map(|&right| {
            let p = if right { 1.0 } else { 0.0 };
            RoutingRecord::new(if right { 1.0 } else { 0.0 }, 1.0, VerifierScore::Known(Confidence::new(p).unwrap()))
        }).collect();
        let data = Dataset::new(&rows, &CostModel::default()).unwrap();
        let oracle = data.evaluate(&data.oracle()).unwrap();
        let options = TrainOptions { objective: Objective::NetUtility { lambda: 0.001 }, ..TrainOptions::default() };
        let policy = train_on(&data, &CostModel::default(), &MethodSpec::new(MethodKind::ExactPomdp, 8), &options).unwrap();
        prop_assert!((policy.summary.train.quality - oracle.quality).abs() < 1e-12);
        prop_assert!((policy.summary.train.cost - oracle.cost).abs() < 1e-12);
    }
}

#[test]
fn budget_objectives_respect_their_limits() {
    let rows: Vec<RoutingRecord> = (0..200)
        .map(|i| {
            let p = (i % 9) as f64 / 8.0;
            let small = if (i * 7) % 9 < (i % 9) { 1.0 } else { 0.0 };
            RoutingRecord::new(
                small,
                1.0,
                VerifierScore::Known(Confidence::new(p).unwrap()),
            )
        })
        .collect();
    let spec = MethodSpec::new(MethodKind::ExactPomdp, 8);
    for rate in [0.1, 0.3, 0.6] {
        let o = TrainOptions {
            objective: Objective::EscalationBudget { max_rate: rate },
            ..TrainOptions::default()
        };
        let p = train(&rows, &CostModel::default(), &spec, &o).unwrap();
        assert!(p.summary.train.escalation_rate <= rate);
    }
    let o = TrainOptions {
        objective: Objective::CostBudget {
            max_mean_cost: 10.0,
        },
        ..TrainOptions::default()
    };
    let p = train(&rows, &CostModel::default(), &spec, &o).unwrap();
    assert!(p.summary.train.cost <= 10.0);
    let o = TrainOptions {
        objective: Objective::CostBudget { max_mean_cost: 1.0 },
        ..TrainOptions::default()
    };
    let err = train(&rows, &CostModel::default(), &spec, &o).unwrap_err();
    assert!(err.to_string().contains("mean cost ≤ 1"), "{err}");
}

#[test]
fn unknown_confidence_follows_the_explicit_policy() {
    let mut rows: Vec<RoutingRecord> = (0..50)
        .map(|i| {
            RoutingRecord::new(
                (i % 2) as f64,
                1.0,
                VerifierScore::Known(Confidence::new((i % 2) as f64).unwrap()),
            )
        })
        .collect();
    rows.push(RoutingRecord::new(0.0, 1.0, VerifierScore::Unknown));
    for unknown in [Decision::Escalate, Decision::Keep] {
        let o = TrainOptions {
            unknown_confidence: unknown,
            ..TrainOptions::default()
        };
        let p = train(
            &rows,
            &CostModel::default(),
            &MethodSpec::new(MethodKind::Threshold, 8),
            &o,
        )
        .unwrap();
        let e = QueryEvidence {
            verifier: VerifierScore::Unknown,
            task_name: None,
            small_answer: None,
        };
        assert_eq!(p.decide_for(&e), unknown);
    }
}

#[test]
fn fixed_answers_always_escalate() {
    let rows: Vec<RoutingRecord> = (0..40)
        .map(|i| {
            RoutingRecord::new(
                1.0,
                1.0,
                VerifierScore::Known(Confidence::new(1.0 - (i % 2) as f64 * 0.5).unwrap()),
            )
        })
        .collect();
    let o = TrainOptions {
        fixed_answers: vec!["unanswerable".into()],
        ..TrainOptions::default()
    };
    let p = train(
        &rows,
        &CostModel::default(),
        &MethodSpec::new(MethodKind::Threshold, 8),
        &o,
    )
    .unwrap();
    let sure = VerifierScore::Known(Confidence::new(1.0).unwrap());
    let e = QueryEvidence {
        verifier: sure,
        task_name: None,
        small_answer: Some("unanswerable"),
    };
    assert_eq!(p.decide_for(&e), Decision::Escalate);
    let e = QueryEvidence {
        small_answer: Some("Paris"),
        ..e
    };
    assert_eq!(p.decide_for(&e), Decision::Keep);
}

#[test]
fn policy_version_is_checked() {
    let rows = vec![RoutingRecord::new(
        0.0,
        1.0,
        VerifierScore::Known(Confidence::new(0.5).unwrap()),
    )];
    let p = train(
        &rows,
        &CostModel::default(),
        &MethodSpec::new(MethodKind::Threshold, 2),
        &TrainOptions::default(),
    )
    .unwrap();
    let json = p
        .to_json()
        .unwrap()
        .replace("\"format_version\": 1", "\"format_version\": 99");
    assert_eq!(
        Policy::from_json(&json).unwrap_err(),
        CoreError::UnsupportedPolicyVersion {
            found: 99,
            supported: POLICY_FORMAT_VERSION
        }
    );
}
