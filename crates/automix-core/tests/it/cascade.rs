//! Properties of the N-model cascade POMDP and the particle-filter belief.

use automix_core::belief::*;
use automix_core::cascade::*;
use proptest::prelude::*;

fn names(n: usize) -> Vec<String> {
    (0..n).map(|i| format!("m{i}")).collect()
}

fn rows_strategy(n: usize) -> impl Strategy<Value = Vec<Vec<bool>>> {
    prop::collection::vec(prop::collection::vec(any::<bool>(), n), 20..80)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    /// With a perfect verifier the cascade keeps a correct answer whenever any model has one:
    /// its quality is the oracle's.
    #[test]
    fn perfect_verifier_reaches_oracle_quality(correct in rows_strategy(3)) {
        let rows: Vec<CascadeRow> = correct.iter().map(|c| CascadeRow {
            scores: c.iter().map(|&x| f64::from(x)).collect(),
            confidences: c.iter().map(|&x| Some(f64::from(x))).collect(),
            answer_costs: vec![1.0, 3.0, 9.0],
            verify_costs: vec![0.1, 0.1, 0.0],
            confidences_jumped: Vec::new(),
        }).collect();
        let model = estimate_cascade(&names(3), &rows, 4, 1e-9).unwrap();
        let policy = solve_cascade(&model, CascadeSettings { lambda: 1e-6, ..Default::default() }).unwrap();
        let out = simulate_cascade(&policy, &rows);
        let oracle = correct.iter().filter(|c| c.iter().any(|&x| x)).count() as f64 / rows.len() as f64;
        prop_assert!((out.quality - oracle).abs() < 1e-9, "quality {} oracle {}", out.quality, oracle);
    }

    /// With an uninformative verifier the cascade is never worse than the best single model
    /// at the same λ (in the model, and replayed on the rows).
    #[test]
    fn uninformative_verifier_never_loses_to_a_fixed_model(
        correct in rows_strategy(3),
        lambda in 0.0f64..0.2,
        conf in prop::collection::vec(0.0f64..=1.0, 80),
    ) {
        let rows: Vec<CascadeRow> = correct.iter().enumerate().map(|(i, c)| CascadeRow {
            scores: c.iter().map(|&x| f64::from(x)).collect(),
            // Confidences drawn independently of correctness.
            confidences: vec![Some(conf[i % conf.len()]), Some(conf[(i * 7) % conf.len()]), None],
            answer_costs: vec![1.0, 2.0, 4.0],
            verify_costs: vec![0.1, 0.1, 0.0],
            confidences_jumped: Vec::new(),
        }).collect();
        let model = estimate_cascade(&names(3), &rows, 2, 1.0).unwrap();
        let policy = solve_cascade(&model, CascadeSettings { lambda, ..Default::default() }).unwrap();
        for j in 0..3 {
            let fixed: f64 = model.prior.iter().enumerate().map(|(v, p)| p * model.quality[j][(v >> j) & 1]).sum::<f64>()
                - lambda * model.answer_cost[j];
            prop_assert!(policy.value >= fixed - 1e-9, "value {} < fixed model {j} {}", policy.value, fixed);
        }
    }

    /// Adding a model never lowers the optimal value (it can always be skipped).
    #[test]
    fn adding_a_model_never_lowers_the_value(
        theta in prop::collection::vec(0.05f64..0.95, 4),
        tpr in prop::collection::vec(0.5f64..0.99, 4),
        fpr in prop::collection::vec(0.01f64..0.5, 4),
        lambda in 0.0f64..0.3,
        insert_at in 0usize..4,
    ) {
        let costs = [1.0, 2.0, 4.0, 8.0];
        let verify = [0.1, 0.2, 0.3, 0.0];
        let keep: Vec<usize> = (0..4).filter(|&i| i != insert_at).collect();
        let pick = |v: &[f64]| keep.iter().map(|&i| v[i]).collect::<Vec<f64>>();
        let without = cascade_from_rates(&names(3), &pick(&theta), &pick(&tpr), &pick(&fpr), &pick(&costs), &pick(&verify));
        let with = cascade_from_rates(&names(4), &theta, &tpr, &fpr, &costs, &verify);
        let settings = CascadeSettings { lambda, ..Default::default() };
        let v3 = solve_cascade(&without, settings).unwrap().value;
        let v4 = solve_cascade(&with, settings).unwrap().value;
        // Skipping the inserted model (or calling a model without verifying it) recovers
        // every 3-model policy.
        prop_assert!(v4 >= v3 - 1e-9, "v4 {v4} < v3 {v3}");
    }
}

#[test]
fn max_escalations_and_discount_limit_the_cascade() {
    let rows: Vec<CascadeRow> = (0..90)
        .map(|i| CascadeRow {
            scores: vec![f64::from(i % 3 == 0), f64::from(i % 3 == 1), 1.0],
            confidences: vec![
                Some(f64::from(i % 3 == 0)),
                Some(f64::from(i % 3 == 1)),
                None,
            ],
            answer_costs: vec![1.0, 2.0, 4.0],
            verify_costs: vec![0.1, 0.1, 0.0],
            confidences_jumped: Vec::new(),
        })
        .collect();
    let model = estimate_cascade(&names(3), &rows, 2, 1e-6).unwrap();
    let free = solve_cascade(
        &model,
        CascadeSettings {
            lambda: 0.01,
            ..Default::default()
        },
    )
    .unwrap();
    assert_eq!(simulate_cascade(&free, &rows).quality, 1.0);
    let one = solve_cascade(
        &model,
        CascadeSettings {
            lambda: 0.01,
            max_escalations: 1,
            ..Default::default()
        },
    )
    .unwrap();
    let out = simulate_cascade(&one, &rows);
    assert!(out.reached.iter().sum::<f64>() <= 2.0 + 1e-9);
    let myopic = solve_cascade(
        &model,
        CascadeSettings {
            lambda: 0.01,
            discount: 0.0,
            ..Default::default()
        },
    )
    .unwrap();
    let out = simulate_cascade(&myopic, &rows);
    assert!(
        (out.reached.iter().sum::<f64>() - 1.0).abs() < 1e-9,
        "γ = 0: escalating is worthless"
    );
}

/// The belief follows a shift: model 0's success rate drops from 0.9 to 0.2 at query 400;
/// within 150 queries the share of queries sent past model 0 (over the last 50) exceeds
/// one half, from about zero before the shift.
#[test]
fn particle_belief_adapts_when_a_model_gets_worse() {
    use rand::{Rng, SeedableRng};
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(7);
    let mut online = OnlineCascade::new(
        names(2),
        vec![1.0, 10.0],
        vec![0.1, 0.0],
        CascadeSettings {
            lambda: 0.03,
            ..Default::default()
        },
        BeliefConfig {
            particles: 300,
            jitter: 0.03,
            refresh_every: 5,
            seed: 1,
        },
    )
    .unwrap();
    let (tpr, fpr, large) = (0.85, 0.25, 0.85);
    let mut escalated = Vec::new();
    for t in 0..600 {
        let small_rate = if t < 400 { 0.9 } else { 0.2 };
        let small_ok = rng.random_bool(small_rate);
        let large_ok = rng.random_bool(large);
        let policy = online.policy();
        let mut obs = Vec::new();
        let mut went_large = policy.start.model == 1;
        if policy.start.model == 0 {
            let verdict = policy
                .start
                .verify
                .then(|| rng.random_bool(if small_ok { tpr } else { fpr }));
            obs.push(StepObservation {
                model: 0,
                verdict,
                correct: Some(small_ok),
            });
            if let Some(v) = verdict {
                let symbol = usize::from(v);
                went_large = policy.decide(&[(0, symbol)]) != CascadeAction::Keep;
            }
        }
        if went_large {
            obs.push(StepObservation {
                model: 1,
                verdict: None,
                correct: Some(large_ok),
            });
        }
        escalated.push(went_large);
        online.observe(&obs).unwrap();
    }
    let rate =
        |from: usize| escalated[from..from + 50].iter().filter(|&&e| e).count() as f64 / 50.0;
    assert!(rate(350) < 0.2, "before the shift: {}", rate(350));
    let adapted = (400..=500).find(|&t| rate(t) > 0.5);
    assert!(
        adapted.is_some(),
        "escalation rate never followed the shift: {:?}",
        (400..550).step_by(25).map(rate).collect::<Vec<_>>()
    );
    eprintln!(
        "escalation rate passed 0.5 within {} queries of the shift",
        adapted.unwrap() + 50 - 400
    );
}
