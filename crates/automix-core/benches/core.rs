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

fn training(c: &mut Criterion) {
    let mut group = c.benchmark_group("train");
    group
        .sample_size(10)
        .warm_up_time(Duration::from_millis(300))
        .measurement_time(Duration::from_secs(1));
    for n in [1_000u64, 10_000, 100_000] {
        let rows = bench_rows(n);
        for kind in MethodKind::ALL {
            let spec = MethodSpec::paper(kind, 8);
            group.bench_with_input(BenchmarkId::new(kind.name(), n), &rows, |b, rows| {
                b.iter(|| {
                    train(
                        black_box(rows),
                        &CostModel::default(),
                        &spec,
                        &TrainOptions::default(),
                    )
                })
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

criterion_group!(benches, training, decide);
criterion_main!(benches);
