//! Train the default meta-verifier with `automix-core` alone, save it, load it, decide.
//!
//! `cargo run -p automix-core --example train_and_decide`

use automix_core::*;

fn main() -> Result<()> {
    // One row per query: both models' scores and the verifier's confidence in the small
    // model's answer (here 8 sampled verdicts, so confidences k/8), from two tasks.
    let rows: Vec<RoutingRecord> = (0..400)
        .map(|i| {
            let votes = (i * 7 % 9) as f64;
            let p = votes / 8.0;
            let task = if i % 2 == 0 { "math" } else { "trivia" };
            // The small model is right more often when its verifier is confident, and less
            // often on math.
            let small_right =
                (i * 13 % 10) as f64 / 10.0 < p - if task == "math" { 0.3 } else { 0.0 };
            let mut r = RoutingRecord::new(
                f64::from(u8::from(small_right)),
                1.0,
                VerifierScore::Known(Confidence::new(p)?),
            );
            r.task_name = Some(task.into());
            Ok(r)
        })
        .collect::<Result<_>>()?;
    let mut spec = MethodSpec::new(MethodKind::Auto, 8);
    spec.calibrated.per_task = true;
    let policy = train(
        &rows,
        &CostModel::default(),
        &spec,
        &TrainOptions::default(),
    )?;
    let cv = policy
        .summary
        .cross_validation
        .as_ref()
        .expect("auto cross-validates");
    println!("chose {}: {}", policy.chosen_component.name(), cv.chosen);
    println!("out-of-fold ΔIBC {:.3} ± {:.3}", cv.mean, cv.sd);

    let reloaded = Policy::from_json(&policy.to_json()?)?;
    for (p, task) in [(0.125, "math"), (0.125, "trivia"), (0.875, "math")] {
        let evidence = QueryEvidence {
            verifier: VerifierScore::Known(Confidence::new(p)?),
            task_name: Some(task),
            small_answer: None,
        };
        println!(
            "confidence {p} on {task}: {:?}",
            reloaded.decide_for(&evidence)
        );
        if let Some(lambda) = reloaded.trained_lambda() {
            // A cheaper operating point: ten times the trained λ escalates less.
            let frugal = reloaded.decide_at_lambda(&evidence, 10.0 * lambda)?;
            println!("  at 10× the trained λ: {frugal:?}");
        }
    }
    Ok(())
}
