//! Rows without ground truth: `collect --unlabelled`'s agreement labels, and the shadow
//! that writes them from a server's traffic (its budget, its privacy), on scripted models.

use std::sync::Arc;

use automix::collect::{CollectJob, collect_row};
use automix::config::Config;
use automix::dataset::{LabelSource, QueryRow, read_training_rows};
use automix::traffic::sink::RowSink;
use automix::traffic::{Offer, Shadow, ShadowSettings};
use automix::verify::PromptSet;
use automix::{ModelHandle, ModelSet};

use crate::support::{mc_query, scripted_model};

fn job(small_answer: &'static str) -> CollectJob {
    let (small, _) = scripted_model("small", 1.0, small_answer, &["Correct", "Incorrect"]);
    let (large, _) = scripted_model("large", 10.0, "B", &["Correct"]);
    let config = Config::parse(
        "automix:\n  verification_samples: 2\n",
        std::path::Path::new("t.yaml"),
    )
    .unwrap();
    CollectJob {
        models: ModelSet::new(vec![small, large]).unwrap(),
        prompts: Arc::new(PromptSet::builtin()),
        automix: config.automix.clone(),
        collect: config.collect.clone(),
        max_workers: 1,
        labels: LabelSource::Agreement,
    }
}

fn unlabelled(q: &str) -> QueryRow {
    QueryRow {
        ground_truth: None,
        ..mc_query(q)
    }
}

#[tokio::test]
async fn agreement_scores_each_answer_against_the_most_expensive_models() {
    let agree = collect_row(&job("B"), &unlabelled("pick two"), LabelSource::Agreement)
        .await
        .unwrap();
    assert_eq!(agree.label_source, LabelSource::Agreement);
    assert_eq!(
        agree.ground_truth, "B",
        "the reference is the large model's answer"
    );
    assert_eq!((agree.models[0].score, agree.models[1].score), (1.0, 1.0));
    assert_eq!(agree.models[0].verification.as_ref().unwrap().samples, 2);
    let disagree = collect_row(&job("A"), &unlabelled("pick two"), LabelSource::Agreement)
        .await
        .unwrap();
    assert_eq!(
        (disagree.models[0].score, disagree.models[1].score),
        (0.0, 1.0)
    );
    // A free-text query with no metric is scored by token F1.
    let free = QueryRow {
        metric: None,
        choices: Vec::new(),
        ..unlabelled("say something")
    };
    let row = collect_row(&job("the answer is B"), &free, LabelSource::Agreement)
        .await
        .unwrap();
    assert_eq!(row.metric, "f1");
    assert!(
        row.models[0].score > 0.0 && row.models[0].score < 1.0,
        "{}",
        row.models[0].score
    );
    // The label source round-trips; true-label rows do not write it.
    let text = serde_json::to_string(&row).unwrap();
    assert!(text.contains("\"label_source\":\"agreement\""));
    let labelled = collect_row(&job("B"), &mc_query("pick two"), LabelSource::GroundTruth)
        .await
        .unwrap();
    assert!(
        !serde_json::to_string(&labelled)
            .unwrap()
            .contains("label_source")
    );
}

/// `collect` records what each signal's own calls cost, so training can charge a policy
/// only for the signals it reads; the parts add up to the verification's cost.
#[tokio::test]
async fn collect_breaks_the_verification_cost_down_by_signal() {
    let row = collect_row(&job("B"), &mc_query("pick two"), LabelSource::GroundTruth)
        .await
        .unwrap();
    let v = row.models[0].verification.as_ref().unwrap();
    let names: Vec<&str> = v.signal_costs.keys().map(String::as_str).collect();
    assert_eq!(
        names,
        [
            "answer_consistency",
            "answer_logprob",
            "logprob",
            "previous_agreement",
            "samples"
        ]
    );
    let part = |name: &str| v.signal_costs[name];
    assert!(
        part("samples") > 0.0 && part("answer_consistency") > 0.0,
        "{v:?}"
    );
    assert!(
        part("logprob") > 0.0,
        "the verdict fell back to sampling: {v:?}"
    );
    assert_eq!(
        (part("answer_logprob"), part("previous_agreement")),
        (0.0, 0.0)
    );
    let sum: f64 = v.signal_costs.values().sum();
    assert!(
        (sum - v.cost).abs() <= 1e-12 * v.cost,
        "{sum} vs {}",
        v.cost
    );
    // The largest model is not verified, so it has no breakdown either.
    assert!(row.models[1].verification.is_none());
    // The collect summary reports the mean per verified answer.
    let summary = automix::collect::summarise(std::slice::from_ref(&row));
    assert_eq!(summary.signal_costs["small"], v.signal_costs);
    assert!(!summary.signal_costs.contains_key("large"));
}

fn temp(name: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("automix-traffic-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    dir.join("rows.jsonl")
}

async fn settle(shadow: &Shadow, rows: u64) {
    for _ in 0..200 {
        if shadow.counts().rows + shadow.counts().failed >= rows {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
}

/// A shadow over `job` appending to `settings.rows_path`.
fn shadow_of(settings: ShadowSettings, job: CollectJob, judge: Option<ModelHandle>) -> Shadow {
    let sink = RowSink::file(settings.rows_path.as_deref().unwrap()).unwrap();
    Shadow::new(settings, job, judge, sink).unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn the_shadow_writes_private_rows_within_its_budget() {
    let path = temp("budget");
    let settings = ShadowSettings {
        rate: 1.0,
        rows_path: Some(path.clone()),
        // One row's calls cost more than this: the first row spends the hour's budget.
        max_cost_per_hour: Some(1e-6),
        max_concurrency: 1,
        ..ShadowSettings::default()
    };
    let shadow = Arc::new(shadow_of(settings, job("A"), None));
    assert_eq!(
        shadow.offer(unlabelled("secret prompt"), "small", "route-1"),
        Offer::Started
    );
    settle(&shadow, 1).await;
    assert_eq!(
        shadow.offer(unlabelled("another"), "small", "route-2"),
        Offer::OverBudget
    );
    let counts = shadow.counts();
    assert_eq!((counts.rows, counts.over_budget), (1, 1));
    assert!(counts.cost > 1e-6);
    assert_eq!(
        counts.kept_agreement,
        Some(0.0),
        "the client got A, the reference says B"
    );
    let rows = read_training_rows(&path).unwrap();
    assert_eq!(rows.len(), 1);
    let text = std::fs::read_to_string(&path).unwrap();
    assert!(
        !text.contains("secret prompt"),
        "no prompt text without store_prompts"
    );
    assert_eq!(rows[0].models[0].score, 0.0);
    assert_eq!(rows[0].label_source, LabelSource::Agreement);
    let hash = unlabelled("secret prompt").id;
    assert!(
        rows[0].id.starts_with(&format!("{hash}-")),
        "the prompt's hash, then the request's suffix: {}",
        rows[0].id
    );
}

#[test]
fn shadow_settings_are_checked_at_load() {
    let bad = "automix:\n  shadow:\n    rate: 0.5\n    label: judge\n    rows_path: r.jsonl\n";
    let e = Config::parse(bad, std::path::Path::new("s.yaml"))
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("s.yaml:2") && e.contains("judge_model is required"),
        "{e}"
    );
    let typo = "automix:\n  shadow:\n    rows_path: r.jsonl\n    rat: 0.5\n";
    let e = Config::parse(typo, std::path::Path::new("s.yaml"))
        .unwrap_err()
        .to_string();
    assert!(e.contains("rat"), "{e}");
    let orphan = "automix:\n  shadow:\n    rows_path: r.jsonl\n    retrain_every: 10\n";
    let e = Config::parse(orphan, std::path::Path::new("s.yaml"))
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("s.yaml:4") && e.contains("save_model_path"),
        "{e}"
    );
}

fn calibrated() -> Config {
    Config::parse(
        "hparam:\n  routing_method: Calibrated\n  verifier_signal: samples\n  per_task_prior: false\n",
        std::path::Path::new("r.yaml"),
    )
    .unwrap()
}

#[test]
fn a_retrain_swaps_in_a_better_policy_and_keeps_one_that_is_not() {
    use crate::support::verifier_rows;
    use automix::retrain::{MIN_ROWS, compare};
    use automix::training::train_policy;
    let config = calibrated();
    let traffic = verifier_rows(150, true);
    // Serving a policy trained where the verifier lied: the traffic's candidate beats it.
    let misled = train_policy(&config, &verifier_rows(150, false), "small", "large").unwrap();
    let (report, candidate) = compare(&config, &traffic, &misled).unwrap();
    assert!(report.swapped, "{report:?}");
    assert!(report.candidate.unwrap() > report.serving.unwrap());
    assert!(candidate.is_some());
    // Serving a policy trained on rows like the traffic: the candidate is no better.
    let good = train_policy(&config, &verifier_rows(150, true), "small", "large").unwrap();
    let (report, _) = compare(&config, &traffic, &good).unwrap();
    assert!(!report.swapped, "{report:?}");
    assert!(report.reason.contains("≤ serving"), "{report:?}");
    // Too few rows: kept, said so.
    let (report, candidate) = compare(&config, &traffic[..MIN_ROWS - 1], &misled).unwrap();
    assert!(!report.swapped && candidate.is_none() && report.reason.contains("needs"));
}

/// A judge that says "Correct" when the candidate equals the reference, "Incorrect" when it
/// does not, and garbage for a question that asks for it.
fn judge() -> automix::ModelHandle {
    use automix::llm::{ScriptedProvider, Usage, response};
    let provider = ScriptedProvider::from_fn(|req| {
        let text = &req.messages.last().unwrap().content;
        let field = |name: &str| {
            text.rsplit(name)
                .next()
                .unwrap_or("")
                .lines()
                .next()
                .unwrap_or("")
                .trim()
                .to_owned()
        };
        let verdict = if text.contains("garbled") {
            "hmm, hard to say"
        } else if field("Candidate answer:") == field("Reference answer:") {
            "Correct. Same."
        } else {
            "Incorrect. Different."
        };
        Ok(response(
            &req.model,
            &[verdict],
            Usage {
                prompt_tokens: 50,
                completion_tokens: 3,
            },
        ))
    });
    automix::ModelHandle {
        entry: crate::support::entry("judge", 3.0, None),
        provider: Arc::new(provider),
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_judge_labels_rows_and_an_unparsed_verdict_writes_none() {
    use automix::traffic::ShadowLabel;
    let path = temp("judge");
    let settings = ShadowSettings {
        rate: 1.0,
        label: ShadowLabel::Judge,
        judge_model: Some("judge".into()),
        rows_path: Some(path.clone()),
        max_concurrency: 1,
        ..ShadowSettings::default()
    };
    // Agreement would score the small model's "A" 0 against "B"; so does the judge, and it
    // scores a free-text paraphrase that token F1 would half-credit as its verdict says.
    let shadow = Arc::new(shadow_of(settings.clone(), job("A"), Some(judge())));
    shadow.offer(unlabelled("pick two"), "large", "route-3");
    settle(&shadow, 1).await;
    shadow.offer(unlabelled("a garbled one"), "large", "route-4");
    for _ in 0..200 {
        if shadow.counts().judge_unparsed == 1 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    let counts = shadow.counts();
    assert_eq!((counts.rows, counts.judge_unparsed), (1, 1), "{counts:?}");
    let rows = read_training_rows(&path).unwrap();
    assert_eq!(rows[0].label_source, LabelSource::Judge);
    assert_eq!(
        (rows[0].models[0].score, rows[0].models[1].score),
        (0.0, 1.0)
    );
    assert_eq!(
        counts.kept_agreement,
        Some(1.0),
        "the client got the reference"
    );
    // A judge verdict of equivalence where the metric would not give it.
    let agree = Arc::new(shadow_of(settings, job("B"), Some(judge())));
    agree.offer(unlabelled("pick two"), "small", "route-5");
    settle(&agree, 1).await;
    let rows = read_training_rows(&path).unwrap();
    assert_eq!(rows.last().unwrap().models[0].score, 1.0);
    // A judge without its model, or a model without label: judge, is refused.
    let mismatch = ShadowSettings {
        rows_path: Some(path.clone()),
        ..ShadowSettings::default()
    };
    let sink = RowSink::file(&path).unwrap();
    assert!(Shadow::new(mismatch, job("A"), Some(judge()), sink).is_err());
}

/// A client's score beats the agreement label of the answer it got, whether it arrives
/// after the row was written (a correction row that replaces it when read) or for the
/// reference's answer (every score scaled by it); a score for a route never shadowed, or a
/// second one, changes nothing.
#[tokio::test(flavor = "multi_thread")]
async fn client_feedback_overrides_agreement_labels() {
    let path = temp("feedback");
    let settings = ShadowSettings {
        rate: 1.0,
        rows_path: Some(path.clone()),
        max_concurrency: 1,
        ..ShadowSettings::default()
    };
    let shadow = Arc::new(shadow_of(settings, job("A"), None));
    shadow.offer(unlabelled("first"), "small", "r-small");
    settle(&shadow, 1).await;
    shadow.offer(unlabelled("second"), "large", "r-large");
    settle(&shadow, 2).await;
    let before = read_training_rows(&path).unwrap();
    assert_eq!(before.len(), 2);
    assert_eq!(
        before[0].models[0].score, 0.0,
        "A disagrees with the reference B"
    );
    assert_ne!(before[0].id, before[1].id, "one row per shadowed request");

    // The client says the small model's A was right after all.
    shadow.feedback("r-small", "small", 1.0).await;
    // The client says the large model's B (the reference) was wrong.
    shadow.feedback("r-large", "large", 0.0).await;
    shadow.feedback("never-shadowed", "small", 1.0).await;
    let after = read_training_rows(&path).unwrap();
    assert_eq!(after.len(), 2, "corrections replace their rows");
    assert_eq!(after[0].label_source, LabelSource::Feedback);
    assert_eq!(
        (after[0].models[0].score, after[0].models[1].score),
        (1.0, 1.0)
    );
    assert_eq!(after[1].label_source, LabelSource::Feedback);
    assert_eq!(
        (after[1].models[0].score, after[1].models[1].score),
        (0.0, 0.0)
    );
    assert_eq!(shadow.counts().feedback, 2);
    let lines = std::fs::read_to_string(&path).unwrap().lines().count();
    assert_eq!(lines, 4, "appended, never rewritten");
}
