use std::path::PathBuf;

use automix::TaskMetric;
use automix::config::{Config, VerifierSignal};
use automix::dataset::*;
use automix::evaluate::evaluate;
use automix::training::{RouterPolicy, routing_records, split, train_policy};

fn temp(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("automix-it-{}-{name}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

#[test]
fn query_jsonl_errors_name_file_line_and_field() {
    let dir = temp("queries");
    let path = dir.join("q.jsonl");
    std::fs::write(
        &path,
        "{\"task_name\":\"mmlu\",\"query\":\"q\",\"choices\":\"['a','b']\",\"ground_truth\":\"A\",\"metric\":\"em_mc\"}\n\n{\"task_name\":\"mmlu\"}\n",
    )
    .unwrap();
    let err = read_queries(&path).unwrap_err().to_string();
    assert_eq!(
        err,
        format!("{}:3: field `query` is missing", path.display())
    );
    std::fs::write(&path, "{not json\n").unwrap();
    let err = read_queries(&path).unwrap_err().to_string();
    assert!(
        err.starts_with(&format!("{}:1: invalid JSON", path.display())),
        "{err}"
    );
    std::fs::write(
        &path,
        "{\"task_name\":\"m\",\"query\":\"q\",\"choices\":\"{'text': ['x'], 'label': \"}\n",
    )
    .unwrap();
    let err = read_queries(&path).unwrap_err().to_string();
    assert!(err.contains(":1: field `choices`: "), "{err}");
}

#[test]
fn the_shared_query_file_parses_completely() {
    let path =
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../data/llmrouter_query_train.jsonl");
    let rows = read_queries(&path).unwrap();
    assert_eq!(rows.len(), 5616);
    let mc = rows.iter().filter(|r| r.metric.as_deref() == Some("em_mc"));
    assert!(
        mc.clone()
            .all(|r| !r.choices.is_empty() || r.task_name == "gpqa" || r.task_name == "mmlu")
    );
    assert!(mc.filter(|r| r.choices.len() >= 2).count() > 2500);
    // Every metric in the file is either supported or reported as unknown by name.
    for r in &rows {
        let m = r.metric.as_deref().unwrap();
        match TaskMetric::parse(m) {
            Ok(_) => {}
            Err(e) => assert!(m == "code_eval" && e.to_string().contains("code_eval")),
        }
    }
}

#[test]
fn writes_are_atomic_and_round_trip() {
    let dir = temp("rows");
    let path = dir.join("rows.jsonl");
    let rows = fixture_rows();
    write_jsonl(&path, &rows).unwrap();
    assert_eq!(read_training_rows(&path).unwrap(), rows);
    let leftovers: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .filter(|e| {
            e.as_ref()
                .unwrap()
                .file_name()
                .to_string_lossy()
                .contains(".tmp")
        })
        .collect();
    assert!(leftovers.is_empty());
    // A bad row names the line and the field.
    let mut text = std::fs::read_to_string(&path).unwrap();
    text.push_str("{\"id\": \"x\"}\n");
    std::fs::write(&path, text).unwrap();
    let err = read_training_rows(&path).unwrap_err().to_string();
    assert!(
        err.starts_with(&format!(
            "{}:{}: missing field",
            path.display(),
            rows.len() + 1
        )),
        "{err}"
    );
}

/// Synthetic rows in the collected format: the small model is right when its verifier is
/// confident, often wrong otherwise; the large model is right 80% of the time.
pub fn fixture_rows() -> Vec<TrainingRow> {
    (0..200)
        .map(|i| {
            let p = (i % 9) as f64 / 8.0;
            let small_right = (i * 7919 % 100) as f64 / 100.0 < p;
            let large_right = i % 5 != 0;
            let run =
                |model: &str, right: bool, verification: Option<VerificationRecord>| ModelRun {
                    model: model.into(),
                    answer: if right { "B".into() } else { "A".into() },
                    normalised_answer: if right { "B".into() } else { "A".into() },
                    score: f64::from(right),
                    tokens: Tokens {
                        prompt: 100,
                        completion: 2,
                    },
                    cost: if model == "small" { 1e-6 } else { 1e-5 },
                    latency_ms: 5,
                    verification,
                };
            TrainingRow {
                id: format!("t-{i}"),
                task_name: if i % 2 == 0 {
                    "mmlu".into()
                } else {
                    "arc".into()
                },
                metric: "em_mc".into(),
                query: format!("q{i}"),
                ground_truth: "B".into(),
                split: if i % 4 == 0 {
                    "test".into()
                } else {
                    "train".into()
                },
                label_source: LabelSource::GroundTruth,
                models: vec![
                    run(
                        "small",
                        small_right,
                        Some(VerificationRecord {
                            samples: 8,
                            correct: (p * 8.0) as u32,
                            incorrect: 8 - (p * 8.0) as u32,
                            unparsed: 0,
                            p_ver: Some(((p * 8.0) as u32) as f64 / 8.0),
                            logprob_p: if i % 17 == 0 { None } else { Some(p) },
                            logprob_source: "logprobs".into(),
                            tokens: Tokens {
                                prompt: 300,
                                completion: 8,
                            },
                            cost: 3e-7,
                            ..VerificationRecord::default()
                        }),
                    ),
                    run("large", large_right, None),
                ],
            }
        })
        .collect()
}

#[test]
fn train_save_load_and_evaluate_on_rows() {
    let rows = fixture_rows();
    let config = Config::parse(
        "hparam:\n  routing_method: ExactPOMDP\n  verifier_signal: samples\n",
        std::path::Path::new("t.yaml"),
    )
    .unwrap();
    let train: Vec<TrainingRow> = split(&rows, "train").into_iter().cloned().collect();
    let test: Vec<TrainingRow> = split(&rows, "test").into_iter().cloned().collect();
    let policy = train_policy(&config, &train, "small", "large").unwrap();
    let path = temp("policy").join("policy.json");
    policy.save(&path).unwrap();
    let loaded = RouterPolicy::load(&path).unwrap();
    assert_eq!(loaded, policy);
    // A confident small answer is kept, a doubtful one escalated.
    let records = routing_records(&test, "small", "large", loaded.verifier_signal).unwrap();
    let decide = |p: f64| {
        loaded
            .policy
            .decide(automix_core::Confidence::new(p).unwrap())
    };
    assert_eq!(decide(1.0), automix_core::Decision::Keep);
    assert_eq!(decide(0.0), automix_core::Decision::Escalate);
    assert_eq!(records.len(), test.len());

    let report = evaluate(&config, &train, &test, "small", "large").unwrap();
    let names: Vec<&str> = report.lines.iter().map(|l| l.name.as_str()).collect();
    for want in [
        "Threshold",
        "POMDP",
        "ExactPOMDP",
        "always-small",
        "always-large",
        "oracle",
    ] {
        assert!(names.contains(&want), "{names:?}");
    }
    // metric.weights: the default scores quality alone; a cost weight charges the cost in
    // units of always calling the large model.
    let large = report
        .lines
        .iter()
        .find(|l| l.name == "always-large")
        .unwrap();
    for l in report.lines.iter().filter(|l| l.quality.is_finite()) {
        assert_eq!(l.score, l.quality, "{}", l.name);
    }
    let mut weighted = config.clone();
    weighted.metric.weights.cost = 0.5;
    let report_w = evaluate(&weighted, &train, &test, "small", "large").unwrap();
    for l in report_w.lines.iter().filter(|l| l.quality.is_finite()) {
        let want = l.quality - 0.5 * l.cost / large.cost;
        assert!(
            (l.score - want).abs() < 1e-12,
            "{}: {} vs {want}",
            l.name,
            l.score
        );
    }
    let oracle = report.lines.iter().find(|l| l.name == "oracle").unwrap();
    for l in report.lines.iter().filter(|l| l.quality.is_finite()) {
        assert!(
            l.quality <= oracle.quality + 1e-12
                || l.name == "always-large"
                || l.name.starts_with("verify"),
            "{l:?}"
        );
    }
    assert!(!report.frontier.is_empty());

    // A policy file from another version is refused with the field named.
    std::fs::write(&path, "{\"format_version\": 99}").unwrap();
    let err = RouterPolicy::load(&path).unwrap_err().to_string();
    assert!(err.contains("field `format_version`"), "{err}");
}

/// A policy file that would make routing index out of range, or decide on a table that
/// does not cover every confidence, is refused at load with the field named.
#[test]
fn a_policy_file_routing_cannot_use_is_refused_at_load() {
    use automix::training::train_cascade_plan;
    let config = Config::load(
        &std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../configs/local.yaml"),
    )
    .unwrap();
    let rows = automix::dataset::read_training_rows(
        &std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../data/routing_rows.jsonl"),
    )
    .unwrap();
    let models: Vec<String> = rows[0].models.iter().map(|m| m.model.clone()).collect();
    let mut policy = train_policy(&config, &rows, &models[1], &models[2]).unwrap();
    policy.cascade = Some(train_cascade_plan(&config, &rows, &models).unwrap());
    let dir = temp("bad-policy");
    let good = dir.join("good.json");
    policy.save(&good).unwrap();
    assert!(RouterPolicy::load(&good).is_ok());
    let text = std::fs::read_to_string(&good).unwrap();
    let table_rule = serde_json::json!({
        "rule": "table",
        "escalate": [true],
        "lookup": {"kind": "nearest", "num_bins": 4}
    });
    type Tamper = Box<dyn Fn(&mut serde_json::Value)>;
    let cases: Vec<(&str, Tamper)> = vec![
        (
            "cascade.policy",
            Box::new(|v| v["cascade"]["policy"]["start"]["model"] = 7.into()),
        ),
        (
            "policy",
            Box::new(|v| v["policy"]["format_version"] = 99.into()),
        ),
        (
            "policy",
            Box::new(move |v| v["policy"]["rule"] = table_rule.clone()),
        ),
        (
            "policy",
            Box::new(|v| {
                v["policy"]["rule"] = serde_json::json!({
                    "rule": "table", "escalate": [true], "lookup": {"kind": "nearest", "num_bins": 0}
                })
            }),
        ),
        (
            "cascade.policy",
            Box::new(|v| v["cascade"]["policy"]["table"] = serde_json::json!([])),
        ),
        (
            "cascade.policy",
            Box::new(|v| v["cascade"]["policy"]["model"]["prior"] = serde_json::json!([1.0])),
        ),
        (
            "cascade.policy",
            Box::new(|v| v["cascade"]["policy"]["model"]["observation"] = serde_json::json!([])),
        ),
        (
            "cascade.task_starts",
            Box::new(|v| {
                v["cascade"]["task_starts"]["mmlu"] =
                    serde_json::json!({"model": 9, "verify": true})
            }),
        ),
    ];
    for (i, (field, tamper)) in cases.iter().enumerate() {
        let mut value: serde_json::Value = serde_json::from_str(&text).unwrap();
        tamper(&mut value);
        let path = dir.join(format!("bad{i}.json"));
        std::fs::write(&path, value.to_string()).unwrap();
        let err = RouterPolicy::load(&path).unwrap_err().to_string();
        assert!(
            err.contains(&format!("field `{field}`")) && err.contains(&format!("bad{i}.json")),
            "case {i}: {err}"
        );
    }
}

/// The cascade's verifier resolution is chosen by cross-validation, not fixed: when the
/// small model's right answers are told apart only at the top of a continuous confidence
/// (0.94 wrong, 0.96 right: one bin at 4 bins), a finer bin count wins out of fold.
#[test]
fn the_cascade_chooses_its_bin_count_by_cross_validation() {
    let config = automix::Config::parse(
        "automix:\n  cost_lambda: 0.2\nhparam:\n  num_bins: 4\n  per_task_prior: false\n",
        std::path::Path::new("bins.yaml"),
    )
    .unwrap();
    let rows = crate::support::chain_rows(400, |i| {
        let confidence = 0.85 + 0.15 * (i % 100) as f64 / 100.0;
        (confidence, confidence > 0.95)
    });
    let names = ["tiny".to_string(), "mid".to_string(), "big".to_string()];
    let plan = automix::training::train_cascade_plan(&config, &rows, &names).unwrap();
    let cv = plan.cross_validation.unwrap();
    let tried: Vec<usize> = cv.bins_tried.iter().map(|(b, _)| *b).collect();
    assert_eq!(tried, [4, 8, 16, 32]);
    assert!(cv.num_bins >= 16, "{cv:?}");
    let net_of = |bins: usize| cv.bins_tried.iter().find(|(b, _)| *b == bins).unwrap().1;
    assert!(net_of(cv.num_bins) > net_of(4), "{cv:?}");
}

/// Where the small model's confidence piles up at exactly 1.0 (as gpt-4o-mini's does on a
/// real chain), equal-width bins lump 1.0 with the just-below-1 answers that are mostly
/// wrong; quantile edges give 1.0 a bin of its own, and cross-validation picks them.
#[test]
fn the_cascade_gives_a_confidence_mass_point_its_own_bin() {
    let config = automix::Config::parse(
        "automix:\n  cost_lambda: 0.2\nhparam:\n  num_bins: 4\n  per_task_prior: false\n",
        std::path::Path::new("bins.yaml"),
    )
    .unwrap();
    let rows = crate::support::chain_rows(500, |i| {
        let k = i % 100;
        if k < 56 {
            (1.0, (i / 100 + k) % 20 != 0)
        } else {
            (0.97 + 0.029 * (k - 56) as f64 / 44.0, i % 10 < 3)
        }
    });
    let names = ["tiny".to_string(), "mid".to_string(), "big".to_string()];
    let plan = automix::training::train_cascade_plan(&config, &rows, &names).unwrap();
    let cv = plan.cross_validation.unwrap();
    assert_eq!(
        cv.binning,
        automix::core::cascade_bins::Binning::Quantile,
        "{cv:?}"
    );
    let best = |tried: &[(usize, f64)]| tried.iter().map(|t| t.1).fold(f64::MIN, f64::max);
    assert!(
        best(&cv.quantile_bins_tried) > best(&cv.bins_tried) + 0.01,
        "{cv:?}"
    );
    // The plan routes with the edges it was trained with: 1.0 is its own symbol.
    let edges = &plan.policy.model.edges[0];
    assert_eq!(edges.last(), Some(&1.0), "{edges:?}");
}

/// Where two models' confidences are continuous and informative, the learned threshold
/// chain (each model's cut at the signal's own resolution) nets more out of fold than the
/// best solved table, so it routes: the plan's table is the chain's (one edge per verified
/// model, three symbols), it survives the policy file, and `eval` replays it on held-out
/// rows ahead of every fixed model.
#[test]
fn a_threshold_chain_routes_where_it_beats_the_solved_table_out_of_fold() {
    let config = Config::parse(
        "automix:\n  cost_lambda: 0.3\nhparam:\n  per_task_prior: false\n",
        std::path::Path::new("chain.yaml"),
    )
    .unwrap();
    let rows = crate::support::continuous_chain_rows(1200);
    let names = ["tiny".to_string(), "mid".to_string(), "big".to_string()];
    let plan = automix::training::train_cascade_plan(&config, &rows, &names).unwrap();
    let cv = plan.cross_validation.clone().unwrap();
    let chain = cv.chain.clone().unwrap();
    let best_table = (cv.bins_tried.iter().chain(&cv.quantile_bins_tried))
        .map(|t| t.1)
        .fold(f64::NEG_INFINITY, f64::max);
    assert!(chain.chosen && chain.net > best_table, "{cv:?}");
    assert_eq!(cv.net.0, chain.net, "{cv:?}");
    assert_eq!(plan.policy.model.symbols, 3);
    // The chain starts at its first member, verified, whose cut is that model's one edge.
    let first = names.iter().position(|n| *n == chain.members[0]).unwrap();
    assert!(
        plan.policy.start.model == first && plan.policy.start.verify,
        "{cv:?}"
    );
    assert_eq!(plan.policy.model.edges[first], vec![chain.thresholds[0]]);
    let mut policy = train_policy(&config, &rows, "tiny", "big").unwrap();
    policy.cascade = Some(plan);
    let path = temp("chain").join("policy.json");
    policy.save(&path).unwrap();
    assert_eq!(RouterPolicy::load(&path).unwrap().cascade, policy.cascade);
    let (train, test) = automix::training::resplit(&rows, 0, 0.5);
    let report = automix::cascade::evaluate_cascade(&config, &train, &test, &names).unwrap();
    assert_eq!(
        report.lines[0].name, "threshold chain",
        "{:?}",
        report.lines
    );
    let fixed = (report.lines.iter().filter(|l| l.name.starts_with("only ")))
        .map(|l| l.net)
        .fold(f64::NEG_INFINITY, f64::max);
    assert!(report.lines[0].net > fixed, "{:?}", report.lines);
    // An online belief re-solves the table, so with it the chain is not a candidate.
    let online = Config::parse(
        "automix:\n  cost_lambda: 0.3\n  online_belief: true\nhparam:\n  per_task_prior: false\n",
        std::path::Path::new("online.yaml"),
    )
    .unwrap();
    let plan = automix::training::train_cascade_plan(&online, &rows, &names).unwrap();
    assert_eq!(plan.cross_validation.unwrap().chain, None);
}

/// Tasks that differ in how often the small model is right get their own cascade tables
/// (the task's prior shrunk toward the pooled one), chosen out of fold: with an
/// uninformative verifier, the pooled table must treat both tasks alike.
#[test]
fn the_cascade_solves_a_table_per_task_where_tasks_differ() {
    use crate::support::{Run, training_row};
    let config = automix::Config::parse(
        "automix:\n  cost_lambda: 0.2\nhparam:\n  num_bins: 4\n  per_task_prior: true\n",
        std::path::Path::new("tasks.yaml"),
    )
    .unwrap();
    let rows: Vec<TrainingRow> = (0..400)
        .map(|i| {
            let easy = i % 2 == 0;
            let right = if easy { i % 40 != 0 } else { i % 40 == 1 };
            let runs = [
                Run {
                    model: "tiny",
                    right,
                    cost: 1e-6,
                    confidence: Some(0.5),
                },
                Run {
                    model: "big",
                    right: true,
                    cost: 1e-4,
                    confidence: None,
                },
            ];
            training_row(i as usize, if easy { "easy" } else { "hard" }, &runs)
        })
        .collect();
    let names = ["tiny".to_string(), "big".to_string()];
    let plan = automix::training::train_cascade_plan(&config, &rows, &names).unwrap();
    let cv = plan.cross_validation.as_ref().unwrap();
    assert!(cv.task_kappa.is_some(), "{cv:?}");
    assert_eq!(cv.task_kappas_tried.len(), 3, "{cv:?}");
    assert_eq!(cv.task_observation_tried.len(), 3, "{cv:?}");
    assert_eq!(plan.task_policies.len(), 2);
    assert_eq!(plan.start_for("easy").model, 0, "{plan:?}");
    assert_eq!(plan.start_for("hard").model, 1, "{plan:?}");
    // Held out, the per-task tables net more than one pooled table could: the best
    // single choice for both tasks is the big model at 1 − 0.2 = 0.8.
    let (train, test) = automix::training::resplit(&rows, 0, 0.3);
    let report = automix::cascade::evaluate_cascade(&config, &train, &test, &names).unwrap();
    assert!(report.lines[0].net > 0.84, "{:?}", report.lines[0]);
}

/// Tasks where the small model is right equally often but its verifier means different
/// things (exact on one task, a coin flip on the other) get per-task observation models:
/// the pooled table trusts a confident answer of the noisy task, the task's own table
/// does not.
#[test]
fn the_cascade_fits_a_verifier_per_task_where_its_confidence_means_different_things() {
    use crate::support::{Run, training_row};
    let config = automix::Config::parse(
        "automix:\n  cost_lambda: 0.3\nhparam:\n  num_bins: 4\n  per_task_prior: true\n",
        std::path::Path::new("tasks.yaml"),
    )
    .unwrap();
    let rows: Vec<TrainingRow> = (0..600)
        .map(|i| {
            let (honest, j) = (i % 2 == 0, i / 2);
            let right = j % 2 == 0;
            let confident = if honest { right } else { (j / 2) % 3 == 0 };
            let runs = [
                Run {
                    model: "tiny",
                    right,
                    cost: 1e-6,
                    confidence: Some(if confident { 1.0 } else { 0.0 }),
                },
                Run {
                    model: "big",
                    right: true,
                    cost: 1e-4,
                    confidence: None,
                },
            ];
            training_row(i, if honest { "honest" } else { "noisy" }, &runs)
        })
        .collect();
    let names = ["tiny".to_string(), "big".to_string()];
    let plan = automix::training::train_cascade_plan(&config, &rows, &names).unwrap();
    let cv = plan.cross_validation.as_ref().unwrap();
    assert!(cv.task_kappa.is_some() && cv.task_observation, "{cv:?}");
    assert_eq!(plan.start_for("honest").model, 0, "{plan:?}");
    assert_eq!(plan.start_for("noisy").model, 1, "{plan:?}");
    // Held out: the pooled table nets about 0.74 (it keeps the noisy task's confident
    // answers, half of them wrong); per-task verifiers net about 0.775.
    let (train, test) = automix::training::resplit(&rows, 0, 0.3);
    let report = automix::cascade::evaluate_cascade(&config, &train, &test, &names).unwrap();
    assert!(report.lines[0].net > 0.76, "{:?}", report.lines[0]);
}

/// `eval --compare-signals`' library half: exactly the signals the small model's rows
/// carry, each evaluated as a config naming it in `verifier_signal` is (same re-splits,
/// same lines), its calibration on every row, then the fusion of them all.
#[test]
fn every_signal_the_rows_carry_is_compared_on_the_same_resplits() {
    use automix::evaluate::evaluate_resplits;
    use automix::signal_comparison::{FUSED, Resplits, compare_signals};
    let rows = crate::support::two_signal_rows(200, "small", "large");
    let config = Config::parse(
        "hparam:\n  routing_method: auto\n",
        std::path::Path::new("compare.yaml"),
    )
    .unwrap();
    let resplits = Resplits {
        seeds: 2,
        test_share: 0.3,
        cascade: None,
    };
    let lines = compare_signals(&config, &rows, ("small", "large"), resplits).unwrap();
    let names: Vec<&str> = lines.iter().map(|l| l.signal.as_str()).collect();
    assert_eq!(names, ["samples", "answer_logprob", FUSED]);
    for (line, signal) in lines
        .iter()
        .zip([VerifierSignal::Samples, VerifierSignal::AnswerLogprob])
    {
        let mut c = config.clone();
        c.hparam.verifier_signal = signal;
        let want = evaluate_resplits(&c, &rows, "small", "large", 2, 0.3).unwrap();
        let by_name = |n: &str| want.iter().find(|l| l.name == n).cloned();
        assert_eq!(Some(line.method.clone()), by_name("auto"));
        assert_eq!(line.threshold, by_name("Threshold"));
        let calibration = line.calibration.as_ref().unwrap();
        assert_eq!((calibration.rows, calibration.unknown), (200, 0));
    }
    // The small model is right only with high votes: they rank its answers.
    assert!(lines[0].calibration.as_ref().unwrap().auc.unwrap() > 0.7);
    let fused = &lines[2];
    assert_eq!(fused.method.name, FUSED);
    assert!(fused.calibration.is_none() && fused.threshold.is_none());
    assert_eq!(fused.method.per_split.len(), 2);
    // Rows without any signal of the small model: an error that says so, not an empty table.
    let mut bare = rows.clone();
    bare.iter_mut()
        .for_each(|r| r.models[0].verification = None);
    let err = compare_signals(&config, &bare, ("small", "large"), resplits).unwrap_err();
    assert!(
        err.to_string().contains("no verification signal of small"),
        "{err}"
    );
    // No re-split: an error naming the parameter, not a missing line.
    let none = Resplits {
        seeds: 0,
        ..resplits
    };
    let err = compare_signals(&config, &rows, ("small", "large"), none).unwrap_err();
    assert_eq!(
        err.to_string(),
        "resplits: at least 1 re-split to compare on, 0 given"
    );
}

/// `hparam.fuse_signals`: where two signals each see half of what makes the small answer
/// right, their fused confidence beats either alone out of fold, training keeps it and
/// says what each adds, the policy file carries it, and `eval` replays it on held-out rows
/// ahead of the single-signal default.
#[test]
fn fused_signals_beat_each_signal_alone_and_replay_in_eval() {
    let rows = crate::support::two_signal_rows(400, "small", "large");
    let config = Config::parse(
        "hparam:\n  routing_method: auto\n  fuse_signals: [samples, answer_logprob]\n",
        std::path::Path::new("fuse.yaml"),
    )
    .unwrap();
    let policy = train_policy(&config, &rows, "small", "large").unwrap();
    let fusion = policy.fusion.as_ref().unwrap();
    assert!(fusion.model.is_some(), "{fusion:?}");
    assert!(
        fusion.single_cv.iter().all(|(_, cv)| fusion.fused_cv > *cv),
        "{fusion:?}"
    );
    // The lead out of fold was checked on held-out outer folds, each procedure run whole.
    let nested = fusion.nested.as_ref().unwrap();
    assert!(nested.clearly_better && nested.folds == 5, "{nested:?}");
    assert!(nested.fused > nested.single, "{nested:?}");
    // Each signal adds: the fusion without it is the other alone.
    assert!(fusion.without_cv.iter().all(|(_, w)| fusion.fused_cv > *w));
    let path = temp("fused").join("policy.json");
    policy.save(&path).unwrap();
    assert_eq!(RouterPolicy::load(&path).unwrap().fusion, policy.fusion);
    // A damaged fusion is refused at load, naming the field, not routed as "unknown".
    let mut damaged: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    damaged["fusion"]["model"]["weights"] = serde_json::json!([1.0]);
    std::fs::write(&path, damaged.to_string()).unwrap();
    let err = RouterPolicy::load(&path).unwrap_err().to_string();
    assert!(err.contains("fusion.model"), "{err}");
    let (train, test) = automix::training::resplit(&rows, 0, 0.3);
    let report = automix::evaluate::evaluate(&config, &train, &test, "small", "large").unwrap();
    let line = |name: &str| report.lines.iter().find(|l| l.name == name).unwrap();
    let (fused, single) = (line("fused"), line("auto"));
    // The single signal passes the answers only the other catches; the fusion does not.
    assert!(fused.quality > single.quality + 0.1, "{report:?}");
    assert!(
        fused.delta_ibc.unwrap() > single.delta_ibc.unwrap(),
        "{report:?}"
    );
    assert!(fused.detail.starts_with("fused samples + answer_logprob"));
    // Two signals or none: one is refused at load, naming the key.
    let one = Config::parse(
        "hparam:\n  fuse_signals: [samples]\n",
        std::path::Path::new("one.yaml"),
    );
    assert!(one.unwrap_err().to_string().contains("fuse_signals"));
}

/// What the small model's votes and its answer's logprob cost in [`signal_cost_rows`].
const SIGNAL_COSTS: (f64, f64) = (1.0 / 67_108_864.0, 1.0 / 134_217_728.0);

/// [`crate::support::two_signal_rows`] whose small verification costs both signals' calls,
/// broken down by signal (`broken_down`) or recorded as one total, as older rows are.
fn signal_cost_rows(broken_down: bool) -> Vec<TrainingRow> {
    let (votes, answer) = SIGNAL_COSTS;
    let mut rows = crate::support::two_signal_rows(400, "small", "large");
    for row in &mut rows {
        let v = row.models[0].verification.as_mut().unwrap();
        assert!(v.signal_costs.is_empty());
        v.cost = votes + answer;
        if broken_down {
            v.signal_costs = [("samples".into(), votes), ("answer_logprob".into(), answer)].into();
        }
    }
    rows
}

/// Rows that break their verification cost down by signal charge a policy only the signals
/// it reads: a single signal its own calls, a fusion every signal it fuses; rows without the
/// breakdown charge their whole recorded cost, as before.
#[test]
fn a_policy_is_charged_the_calls_of_the_signals_it_reads() {
    let (votes, answer) = SIGNAL_COSTS;
    let broken_down = signal_cost_rows(true);
    let flat = signal_cost_rows(false);
    let charged = |rows: &[TrainingRow], signal| {
        routing_records(rows, "small", "large", signal).unwrap()[0]
            .costs
            .unwrap()
            .verifier
    };
    assert_eq!(charged(&broken_down, VerifierSignal::AnswerLogprob), answer);
    assert_eq!(charged(&broken_down, VerifierSignal::Samples), votes);
    assert_eq!(
        charged(&broken_down, VerifierSignal::Logprob),
        0.0,
        "not measured"
    );
    assert_eq!(
        charged(&flat, VerifierSignal::AnswerLogprob),
        votes + answer
    );
    // A fused policy (it wins under the paper's relative costs) pays both signals' calls.
    let relative = Config::parse(
        "hparam:\n  routing_method: auto\n  fuse_signals: [samples, answer_logprob]\n",
        std::path::Path::new("fuse.yaml"),
    )
    .unwrap();
    let fused = train_policy(&relative, &broken_down, "small", "large").unwrap();
    assert!(fused.fusion.as_ref().unwrap().model.is_some());
    for rows in [&broken_down, &flat] {
        let records = automix::training::policy_records(rows, &fused).unwrap();
        assert_eq!(records[0].costs.unwrap().verifier, votes + answer);
    }
    // Under token costs, training compares each signal alone at its own price.
    let tokens = Config::parse(
        "hparam:\n  routing_method: auto\n  cost_mode: tokens\n  fuse_signals: [samples, answer_logprob]\n",
        std::path::Path::new("fuse.yaml"),
    )
    .unwrap();
    let fusion_of = |rows: &[TrainingRow]| {
        let policy = train_policy(&tokens, rows, "small", "large").unwrap();
        policy.fusion.unwrap()
    };
    let (split_costs, whole_costs) = (fusion_of(&broken_down), fusion_of(&flat));
    // The fusion pays what every row recorded either way; each signal alone pays less
    // once the rows say what it cost, so it scores higher out of fold.
    assert_eq!(split_costs.fused_cv, whole_costs.fused_cv);
    for ((s, alone), (_, charged_all)) in split_costs.single_cv.iter().zip(&whole_costs.single_cv) {
        assert!(alone > charged_all, "{s:?}: {alone} vs {charged_all}");
    }
}

#[test]
fn training_says_how_many_runs_were_priced_by_their_whole_cost() {
    let tokens = Config::parse(
        "hparam:\n  routing_method: auto\n  cost_mode: tokens\n",
        std::path::Path::new("tokens.yaml"),
    )
    .unwrap();
    // Old rows (no breakdown) followed by re-collected ones: a mixed file.
    let (old, new) = (signal_cost_rows(false), signal_cost_rows(true));
    let mixed: Vec<TrainingRow> = old[..old.len() / 2]
        .iter()
        .chain(&new[new.len() / 2..])
        .cloned()
        .collect();
    let verified = |rows: &[TrainingRow]| {
        (rows.iter())
            .filter(|r| r.run("small").is_some_and(|s| s.verification.is_some()))
            .count()
    };
    let pricing = train_policy(&tokens, &mixed, "small", "large")
        .unwrap()
        .verification_pricing
        .unwrap();
    assert_eq!(pricing.whole, verified(&old[..old.len() / 2]));
    assert_eq!(pricing.per_signal, verified(&new[new.len() / 2..]));
    assert!(pricing.is_mixed() && pricing.whole > 0);
    let all_new = train_policy(&tokens, &new, "small", "large").unwrap();
    assert!(!all_new.verification_pricing.unwrap().is_mixed());
    // Relative costs charge a fixed verifier cost: nothing to report.
    let relative = Config::parse(
        "hparam:\n  routing_method: auto\n",
        std::path::Path::new("r.yaml"),
    );
    let policy = train_policy(&relative.unwrap(), &mixed, "small", "large").unwrap();
    assert_eq!(policy.verification_pricing, None);
}

/// A two-model cascade's configs on votes alone and on votes fused with the answer's
/// logprob (`single`, `fused`).
fn cascade_signal_configs() -> (Config, Config) {
    let text = "automix:\n  cost_lambda: 0.2\nhparam:\n  verifier_signal: samples\n";
    let single = Config::parse(text, std::path::Path::new("one.yaml")).unwrap();
    let fused = Config::parse(
        &format!("{text}  fuse_signals: [samples, answer_logprob]\n"),
        std::path::Path::new("fuse.yaml"),
    )
    .unwrap();
    (single, fused)
}

/// `hparam.fuse_signals` with `train --cascade`: where two signals each see half of what
/// makes the small answer right, the cascade reads their fused confidence (out of fold
/// ahead of the configured signal alone), the plan carries the fusion (a damaged one is
/// refused at load), the router measures both signals and scores with it, and `eval
/// --cascade` replays held-out rows through it ahead of the single-signal cascade.
#[test]
fn the_cascade_routes_on_fused_signals_where_they_beat_one_signal() {
    let rows = crate::support::two_signal_rows(400, "small", "large");
    let (single, fused) = cascade_signal_configs();
    let names = ["small".to_string(), "large".to_string()];
    let plan = automix::training::train_cascade_plan(&fused, &rows, &names).unwrap();
    let cv = plan.cross_validation.as_ref().unwrap();
    let record = cv.fusion.as_ref().unwrap();
    assert!(record.fused_net > record.single_net + 0.02, "{record:?}");
    let fusion = plan.fusion.as_ref().unwrap();
    assert_eq!(fusion.models.keys().collect::<Vec<_>>(), ["small"]);
    // Live: every fused signal is measured, and a verification scores by the fusion.
    let policy = RouterPolicy {
        cascade: Some(plan.clone()),
        ..train_policy(&single, &rows, "small", "large").unwrap()
    };
    let settings = automix::router::RouterSettings::resolve(&fused, Some(&policy)).unwrap();
    assert_eq!(
        settings.measured(),
        [VerifierSignal::Samples, VerifierSignal::AnswerLogprob]
    );
    let both = rows[0].models[0].verification.clone().unwrap();
    let only_votes = rows[2].models[0].verification.clone().unwrap();
    let (high, low) = (
        settings.score("small", &both),
        settings.score("small", &only_votes),
    );
    assert!(
        high.known().unwrap() > 0.8 && low.known().unwrap() < 0.2,
        "{high:?} {low:?}"
    );
    // A routing cascade scores with its own signal, not the two-model policy's fusion
    // (fitted on the small model alone).
    let single_plan = automix::training::train_cascade_plan(&single, &rows, &names).unwrap();
    let two_model_fused = Config::parse(
        "hparam:\n  routing_method: auto\n  fuse_signals: [samples, answer_logprob]\n",
        std::path::Path::new("fuse.yaml"),
    )
    .unwrap();
    let mixed = RouterPolicy {
        cascade: Some(single_plan),
        ..train_policy(&two_model_fused, &rows, "small", "large").unwrap()
    };
    assert!(mixed.fusion.as_ref().unwrap().model.is_some());
    let settings = automix::router::RouterSettings::resolve(&single, Some(&mixed)).unwrap();
    assert_eq!(settings.measured(), [VerifierSignal::Samples]);
    assert!(settings.fused_signals().is_empty());
    let path = temp("cascade-fused").join("policy.json");
    policy.save(&path).unwrap();
    assert_eq!(
        RouterPolicy::load(&path).unwrap().cascade.unwrap().fusion,
        plan.fusion
    );
    let mut damaged: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    damaged["cascade"]["fusion"]["models"]["small"]["weights"] = serde_json::json!([1.0]);
    std::fs::write(&path, damaged.to_string()).unwrap();
    let err = RouterPolicy::load(&path).unwrap_err().to_string();
    assert!(err.contains("cascade.fusion"), "{err}");
    let (train, test) = automix::training::resplit(&rows, 0, 0.3);
    let net = |config: &Config| {
        automix::cascade::evaluate_cascade(config, &train, &test, &names)
            .unwrap()
            .lines[0]
            .net
    };
    let (fused_net, single_net) = (net(&fused), net(&single));
    assert!(fused_net > single_net + 0.02, "{fused_net} vs {single_net}");
}

/// A cascade model routing on its fusion is charged every fused signal's calls, in
/// training and in the held-out replay; on its own signal, that signal's calls.
#[test]
fn the_cascade_charges_a_fused_model_every_signal_it_measures() {
    let (votes, answer) = SIGNAL_COSTS;
    let rows = signal_cost_rows(true);
    let (single, fused) = cascade_signal_configs();
    let names = ["small".to_string(), "large".to_string()];
    let trained = automix::cascade::train_cascade(&fused, &rows, &names).unwrap();
    let fusion = trained.fusion.as_ref().expect("the fusion routes here");
    let unit = trained.unit;
    assert_eq!(trained.rows[0].verify_costs[0], (votes + answer) / unit);
    let alone = automix::cascade::train_cascade(&single, &rows, &names).unwrap();
    assert_eq!(alone.rows[0].verify_costs[0], votes / alone.unit);
    let mut replayed =
        automix::cascade::cascade_rows(&rows, &names, VerifierSignal::Samples, unit).unwrap();
    assert_eq!(replayed[0].verify_costs[0], votes / unit);
    fusion.apply(&rows, &names, (&mut replayed, unit));
    assert_eq!(replayed[0].verify_costs[0], (votes + answer) / unit);
}

/// The cascade's fusion is cross-fitted inside each fold of the cascade's own
/// cross-validation: flipping the labels of one fold's held-out rows leaves every fused
/// confidence that fold is trained and scored on unchanged, while the fit over all rows
/// (what the final tables read) moves.
#[test]
fn the_cascade_fusion_is_nested_in_the_cascade_folds() {
    let rows = crate::support::two_signal_rows(300, "small", "large");
    let assignments = automix_core::calibrate::fold_assignments(rows.len(), 5, 2, 0);
    let mut flipped = rows.clone();
    for (row, &fold) in flipped.iter_mut().zip(&assignments[0]) {
        if fold == 0 {
            row.models[0].score = 1.0 - row.models[0].score;
        }
    }
    let names = ["small".to_string(), "large".to_string()];
    let signals = [VerifierSignal::Samples, VerifierSignal::AnswerLogprob];
    let fit = |rows: &[TrainingRow]| {
        automix::cascade_fusion::fit(rows, (&names, &signals), 1.0, (&assignments, 5)).unwrap()
    };
    let (plain, changed) = (fit(&rows), fit(&flipped));
    assert_eq!(plain.per_fold.len(), 2);
    assert!(plain.per_fold.iter().all(|folds| folds.len() == 5));
    assert_eq!(plain.per_fold[0][0], changed.per_fold[0][0]);
    assert_ne!(plain.per_fold[0][1], changed.per_fold[0][1]);
    assert_ne!(plain.whole, changed.whole);
    // Every row of a fold has a value for the verified model, held out or not.
    let fold = &plain.per_fold[1][3];
    assert!(
        fold.confidences
            .iter()
            .all(|c| c[0].is_some() && c[1].is_none())
    );
}

/// The cascade cross-validation's record of the fused-against-single comparison.
fn fusion_cv(plan: &automix::training::CascadePlan) -> automix::cascade::FusionCv {
    let cv = plan
        .cross_validation
        .as_ref()
        .expect("a trained plan records its CV");
    cv.fusion.clone().expect("fuse_signals was set")
}

/// In a chain where one model's fusion pays and another's adds nothing, each verified model
/// is chosen on its own: the first routes on its fused confidence, the middle one on the
/// configured signal (a tie goes to the simpler signal), the plan says which, and live the
/// middle model measures and scores its one signal only.
#[test]
fn the_cascade_fuses_only_the_models_whose_fusion_pays() {
    use crate::support::{Run, training_row};
    let rows: Vec<_> = (0..600)
        .map(|i| {
            // tiny: right exactly when both signals are high (the fusion sees it, votes
            // alone do not); mid: right exactly when its votes say so, its answer
            // probability noise.
            let votes = if i % 2 == 0 { 1.0 } else { 0.0 };
            let answer_p = if i % 4 < 2 || i % 7 == 0 { 0.9 } else { 0.2 };
            let mid_right = i % 3 != 0;
            let runs = [
                Run {
                    model: "tiny",
                    right: votes > 0.5 && answer_p > 0.5,
                    cost: 1e-6,
                    confidence: Some(votes),
                },
                Run {
                    model: "mid",
                    right: mid_right,
                    cost: 2e-5,
                    confidence: Some(f64::from(u8::from(mid_right))),
                },
                Run {
                    model: "big",
                    right: true,
                    cost: 1e-4,
                    confidence: None,
                },
            ];
            let mut row = training_row(i, "general", &runs);
            let noise = f64::from(((i * 7919) % 10) as u8) / 10.0;
            for (m, p) in [(0, answer_p), (1, noise)] {
                if let Some(v) = row.models[m].verification.as_mut() {
                    v.signals.insert("answer_logprob".into(), p);
                }
            }
            row
        })
        .collect();
    let config = Config::parse(
        "automix:\n  cost_lambda: 0.2\nhparam:\n  routing_method: auto\n  verifier_signal: samples\n  fuse_signals: [samples, answer_logprob]\n",
        std::path::Path::new("fuse.yaml"),
    )
    .unwrap();
    let names = ["tiny", "mid", "big"].map(String::from);
    let plan = automix::training::train_cascade_plan(&config, &rows, &names).unwrap();
    let record = fusion_cv(&plan);
    assert_eq!(record.fused_models, ["tiny"], "{record:?}");
    assert!(record.chosen_net > record.single_net + 0.02, "{record:?}");
    assert!(record.chosen_net >= record.fused_net - 1e-12, "{record:?}");
    let fusion = plan.fusion.as_ref().unwrap();
    assert_eq!(fusion.models.keys().collect::<Vec<_>>(), ["tiny"]);
    assert_eq!(fusion.unfused, ["mid"]);
    let policy = RouterPolicy {
        cascade: Some(plan.clone()),
        ..train_policy(&config, &rows, "tiny", "mid").unwrap()
    };
    let settings = automix::router::RouterSettings::resolve(&config, Some(&policy)).unwrap();
    assert_eq!(
        settings.measured_for("tiny"),
        [VerifierSignal::Samples, VerifierSignal::AnswerLogprob]
    );
    assert_eq!(settings.measured_for("mid"), [VerifierSignal::Samples]);
    let mid_wrong = rows[0].models[1].verification.clone().unwrap();
    assert_eq!(settings.score("mid", &mid_wrong).known(), Some(0.0));
}

/// `previous_agreement` fused in a cascade: where the middle model's own verifier says
/// nothing but its answer agreeing with the cheap model's means it is right, the fused
/// cascade runs the cheap model first to get that evidence, keeps the middle model's
/// agreeing answers and escalates the rest. Rows collected without the signal get it from
/// their stored answers; a path that skips the cheap model reads it as unknown.
#[test]
fn the_cascade_fuses_agreement_with_the_previous_answer() {
    let rows = crate::support::agreement_chain_rows(400);
    let single = Config::parse(
        crate::support::AGREEMENT_CHAIN_CONFIG,
        std::path::Path::new("one.yaml"),
    )
    .unwrap();
    let fused = Config::parse(
        &format!(
            "{}  fuse_signals: [samples, previous_agreement]\n",
            crate::support::AGREEMENT_CHAIN_CONFIG
        ),
        std::path::Path::new("agree.yaml"),
    )
    .unwrap();
    let names = ["tiny".to_string(), "mid".to_string(), "big".to_string()];
    let plan = automix::training::train_cascade_plan(&fused, &rows, &names).unwrap();
    let record = fusion_cv(&plan);
    assert!(record.fused_net > record.single_net + 0.03, "{record:?}");
    assert!(plan.fusion.is_some());
    // The fused table starts at the cheap model: the agreement exists only after it.
    assert_eq!(plan.policy.start.model, 0, "{:?}", plan.policy.start);
    let (train, test) = automix::training::resplit(&rows, 0, 0.3);
    let report = |config: &Config| {
        automix::cascade::evaluate_cascade(config, &train, &test, &names).unwrap()
    };
    let (with, without) = (report(&fused), report(&single));
    assert!(
        with.lines[0].net > without.lines[0].net + 0.03,
        "{:?} vs {:?}",
        with.lines[0],
        without.lines[0]
    );
    // Every query reached the middle model through the cheap one, so none read the
    // agreement as unknown; a quarter of them (both right) kept its answer.
    assert!(
        (with.lines[0].reached[2] - 0.75).abs() < 0.1,
        "{:?}",
        with.lines[0]
    );
    // The two-model path leaves the cascade's signal out: nothing left to fuse.
    assert!(fused.hparam.two_model_fuse_signals().is_empty());
}

/// A calibrated policy over three confidence levels (the Python package's test rows): its
/// cross-validation once recorded a challenger scored on no assignment as a NaN mean,
/// which JSON writes as `null`, so the saved file did not load back. Every trained policy
/// must survive save and load.
#[test]
fn a_calibrated_policy_on_three_levels_saves_and_loads_back() {
    let rows = crate::support::three_level_rows(225, "general");
    let config = Config::parse(
        "hparam:\n  routing_method: Calibrated\n  verifier_signal: samples\n  per_task_prior: false\n",
        std::path::Path::new("t.yaml"),
    )
    .unwrap();
    let policy = train_policy(&config, &rows, "small", "large").unwrap();
    let path = temp("three-levels").join("policy.json");
    policy.save(&path).unwrap();
    let loaded = RouterPolicy::load(&path).unwrap();
    assert_eq!(loaded.policy.rule, policy.policy.rule);
}
