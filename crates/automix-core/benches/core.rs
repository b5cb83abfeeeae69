//! Training and decision benchmarks. Rows come from a deterministic integer hash that
//! `xtask/python/automix_parity.py --bench` reproduces, so `cargo xtask bench` times the
//! Python code on exactly the same rows.

#![allow(missing_docs)] // criterion_group! generates undocumented items

use std::hint::black_box;
use std::time::Duration;

use automix_core::*;
use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};

/// Same as `bench_rows` in the Python script.
fn bench_rows(n: u64) -> Vec<RoutingRecord> {
    let h = |i: u64, k: u64| ((i * 2_654_435_761 + k * 97_531) % 1_000_003) % 100;
    (0..n)
        .map(|i| {
            let votes = h(i, 1) % 9;
            let small = if h(i, 2) < 25 + 6 * votes { 1.0 } else { 0.0 };
            let large = if h(i, 3) < 85 { 1.0 } else { 0.0 };
            let p = Confidence::new(votes as f64 / 8.0).expect("votes/8 is a probability");
            RoutingRecord::new(small, large, VerifierScore::Known(p))
        })
        .collect()
}

/// Training from loaded data, as the Python side trains from a loaded DataFrame; loading
/// (validation and the one pass that groups rows into cells) is timed on its own.
fn training(c: &mut Criterion) {
    let mut group = c.benchmark_group("train");
    group
        .sample_size(10)
        .warm_up_time(Duration::from_millis(300))
        .measurement_time(Duration::from_secs(1));
    let costs = CostModel::default();
    let options = TrainOptions::default();
    for n in [1_000u64, 10_000, 100_000, 1_000_000] {
        let rows = bench_rows(n);
        group.bench_with_input(BenchmarkId::new("load", n), &rows, |b, rows| {
            b.iter(|| Dataset::new(black_box(rows), &costs))
        });
        let data = Dataset::new(&rows, &costs).expect("bench rows load");
        for kind in MethodKind::ALL {
            let spec = MethodSpec::paper(kind, 8);
            group.bench_with_input(BenchmarkId::new(kind.name(), n), &data, |b, data| {
                b.iter(|| train_on(black_box(data), &costs, &spec, &options))
            });
        }
        // Out-of-fold scores of a method selected in sample: 5 folds, one assignment.
        for kind in [MethodKind::Threshold, MethodKind::ExactPomdp] {
            let spec = MethodSpec::paper(kind, 8);
            let id = BenchmarkId::new(format!("cv5/{}", kind.name()), n);
            group.bench_with_input(id, &data, |b, data| {
                b.iter(|| calibrate::cross_validate(black_box(data), &spec, &options, 5, 1, 0))
            });
        }
    }
    group.finish();
}

fn decide(c: &mut Criterion) {
    let rows = bench_rows(10_000);
    let probes: Vec<Confidence> = (0..64)
        .map(|i| Confidence::new(i as f64 / 63.0).expect("in range"))
        .collect();
    let mut group = c.benchmark_group("decide");
    for kind in [
        MethodKind::Threshold,
        MethodKind::PaperPomdp,
        MethodKind::ExactPomdp,
    ] {
        let policy = train(
            &rows,
            &CostModel::default(),
            &MethodSpec::paper(kind, 8),
            &TrainOptions::default(),
        )
        .expect("bench rows train");
        let mut i = 0usize;
        group.bench_function(kind.name(), |b| {
            b.iter(|| {
                i = (i + 1) & 63;
                policy.decide(black_box(probes[i]))
            })
        });
    }
    group.finish();
}

fn cascade_rows(models: usize, n: usize) -> Vec<automix_core::cascade::CascadeRow> {
    (0..n)
        .map(|i| {
            let scores: Vec<f64> = (0..models)
                .map(|m| f64::from((i * (m + 3) * 7919) % 100 < 40 + 10 * m))
                .collect();
            automix_core::cascade::CascadeRow {
                confidences: scores
                    .iter()
                    .enumerate()
                    .map(|(m, s)| {
                        Some((0.6 * s + 0.4 * ((i * (m + 11)) % 97) as f64 / 96.0).min(1.0))
                    })
                    .collect(),
                scores,
                answer_costs: (0..models).map(|m| 3f64.powi(m as i32)).collect(),
                verify_costs: vec![0.2; models],
                confidences_jumped: Vec::new(),
            }
        })
        .collect()
}

fn cascade(c: &mut Criterion) {
    use automix_core::belief::{BeliefConfig, ParticleBelief, StepObservation};
    use automix_core::cascade::{CascadeSettings, estimate_cascade, solve_cascade};
    let mut group = c.benchmark_group("cascade");
    group.sample_size(10);
    for models in [3usize, 5] {
        let names: Vec<String> = (0..models).map(|m| format!("m{m}")).collect();
        let rows = cascade_rows(models, 2000);
        for bins in [8usize, 16] {
            let model = estimate_cascade(&names, &rows, bins, 1.0).expect("rows estimate");
            group.bench_function(format!("solve/{models}models/{bins}bins"), |b| {
                b.iter(|| solve_cascade(black_box(&model), CascadeSettings::default()))
            });
        }
    }
    let names: Vec<String> = (0..3).map(|m| format!("m{m}")).collect();
    let model = estimate_cascade(&names, &cascade_rows(3, 2000), 8, 1.0).expect("rows estimate");
    let policy = solve_cascade(&model, CascadeSettings::default()).expect("solves");
    let histories: Vec<Vec<(usize, usize)>> = (0..64)
        .map(|i| vec![(0, i % 10), (1, (i / 10) % 10)])
        .collect();
    let mut i = 0usize;
    group.bench_function("lookup", |b| {
        b.iter(|| {
            i = (i + 1) & 63;
            policy.decide(black_box(&histories[i]))
        })
    });
    for particles in [100usize, 1000] {
        let mut belief = ParticleBelief::new(
            3,
            BeliefConfig {
                particles,
                ..BeliefConfig::default()
            },
        )
        .expect("belief");
        let mut t = 0usize;
        group.bench_function(format!("particle_update/{particles}"), |b| {
            b.iter(|| {
                t += 1;
                belief.update(black_box(&[
                    StepObservation {
                        model: 0,
                        verdict: Some(t.is_multiple_of(3)),
                        correct: Some(t.is_multiple_of(2)),
                    },
                    StepObservation {
                        model: 1,
                        verdict: None,
                        correct: Some(!t.is_multiple_of(5)),
                    },
                ]))
            })
        });
    }
    group.finish();
}

/// Four signals per row (two continuous, one a vote share, one sometimes unknown), each
/// carrying part of whether the answer is right: the fused confidence's inputs.
fn fusion_rows(n: usize) -> (Vec<Vec<Option<f64>>>, Vec<bool>) {
    // SplitMix64: independent draws per (row, signal), where `bench_rows`' linear hash
    // would make the signals nearly copies of the label.
    let h = |i: usize, k: usize| {
        let mut z = ((i as u64) << 8 | k as u64).wrapping_add(0x9e37_79b9_7f4a_7c15);
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        ((z ^ (z >> 31)) % 1000) as usize
    };
    (0..n)
        .map(|i| {
            let right = h(i, 1) < 400;
            let lean = if right { 150 } else { 0 };
            let signal = |k: usize| ((h(i, k) + lean).min(999) as f64) / 999.0;
            let votes = ((h(i, 6) % 3 + usize::from(right)) as f64 / 3.0).min(1.0);
            let unknown = h(i, 7) < 50;
            let row = vec![
                Some(signal(2)),
                Some(signal(3)),
                Some(votes),
                (!unknown).then(|| signal(4)),
            ];
            (row, right)
        })
        .unzip()
}

/// Routing rows whose confidence is the fused one: the small answer's score is whether it
/// is right, the large one right on 85% of rows.
fn fused_routing_rows(fused: &[Option<f64>], right: &[bool]) -> Vec<RoutingRecord> {
    (fused.iter().zip(right).enumerate())
        .map(|(i, (p, &r))| {
            let verifier = p
                .and_then(|p| Confidence::new(p).ok())
                .map_or(VerifierScore::Unknown, VerifierScore::Known);
            let large = f64::from(u8::from((i * 7919) % 100 < 85));
            RoutingRecord::new(f64::from(u8::from(r)), large, verifier)
        })
        .collect()
}

/// Fitting the fused confidence (per-signal isotonic curves and the ridge logistic fit),
/// its 5-fold cross-fit, training `auto` on the cross-fitted values, and one fused score at
/// decision time.
fn fusion(c: &mut Criterion) {
    use automix_core::fusion::{FusedConfidence, cross_fit};
    let mut group = c.benchmark_group("fusion");
    group
        .sample_size(10)
        .warm_up_time(Duration::from_millis(300))
        .measurement_time(Duration::from_secs(1));
    for n in [1_000usize, 10_000, 100_000] {
        let (signals, right) = fusion_rows(n);
        group.bench_with_input(BenchmarkId::new("fit/4signals", n), &n, |b, _| {
            b.iter(|| FusedConfidence::fit(black_box(&signals), &right))
        });
        let assignment: Vec<usize> = (0..n).map(|i| i % 5).collect();
        group.bench_with_input(BenchmarkId::new("cross_fit5/4signals", n), &n, |b, _| {
            b.iter(|| cross_fit(black_box(&signals), &right, &assignment, 5))
        });
    }
    // Training on a fused confidence at 100k rows: the cross-fit, then `auto` (with its
    // cross-validation) on the cross-fitted confidences.
    let (signals, right) = fusion_rows(100_000);
    let assignment: Vec<usize> = (0..signals.len()).map(|i| i % 5).collect();
    let costs = CostModel::default();
    group.bench_function("cross_fit5_then_auto/4signals/100000", |b| {
        b.iter(|| {
            let oof = cross_fit(black_box(&signals), &right, &assignment, 5)?;
            let rows = fused_routing_rows(&oof, &right);
            train(
                &rows,
                &costs,
                &MethodSpec::paper(MethodKind::Auto, 8),
                &TrainOptions::default(),
            )
        })
    });
    // The same training without the cross-fit: a continuous confidence (every row its own
    // level) is the cross-validated methods' slowest input.
    let oof = cross_fit(&signals, &right, &assignment, 5).expect("bench rows cross-fit");
    let rows = fused_routing_rows(&oof, &right);
    for kind in [MethodKind::Calibrated, MethodKind::Auto] {
        let spec = MethodSpec::paper(kind, 8);
        let id = format!("continuous/{}/100000", kind.name());
        group.bench_function(id, |b| {
            b.iter(|| train(black_box(&rows), &costs, &spec, &TrainOptions::default()))
        });
    }
    // The same rows as a token-cost, token-F1 user has them: per-query costs and scores
    // that are not 0 or 1, so every fold pass sums each row (no counting shortcut).
    let graded: Vec<RoutingRecord> = (rows.iter().enumerate())
        .map(|(i, r)| RoutingRecord {
            small_score: r.small_score * (0.5 + (i % 7) as f64 / 12.0),
            costs: Some(QueryCosts {
                small: 1e-6 * (1 + i % 13) as f64,
                large: 5e-5 * (1 + i % 11) as f64,
                verifier: 2e-6 * (1 + i % 5) as f64,
            }),
            ..r.clone()
        })
        .collect();
    group.bench_function("continuous/auto/100000/graded_token_costs", |b| {
        b.iter(|| {
            let spec = MethodSpec::paper(MethodKind::Auto, 8);
            train(
                black_box(&graded),
                &CostModel::PerQuery,
                &spec,
                &TrainOptions::default(),
            )
        })
    });
    let (signals, right) = fusion_rows(10_000);
    let fused = FusedConfidence::fit(&signals, &right).expect("bench rows fit");
    let mut i = 0usize;
    group.bench_function("predict/4signals", |b| {
        b.iter(|| {
            i = (i + 1) & 1023;
            fused.predict(black_box(&signals[i]))
        })
    });
    group.finish();
}

criterion_group!(benches, training, decide, cascade, fusion);
criterion_main!(benches);
