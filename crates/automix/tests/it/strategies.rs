//! Every routing strategy through `Router::route_single`, for the same config keys: one step
//! runner applies them, so they behave the same whichever policy decides.

use std::path::Path;
use std::sync::Arc;

use automix::config::Config;
use automix::dataset::TrainingRow;
use automix::llm::ScriptedProvider;
use automix::router::RouteDecision;
use automix::training::{RouterPolicy, train_cascade_plan, train_policy};
use automix::verify::PromptSet;
use automix::{ModelSet, Router};

use crate::support::{Run, mc_query as query, scripted_model, training_row};

#[derive(Debug, Clone, Copy)]
enum Kind {
    Threshold,
    TwoModel,
    Cascade,
    OnlineCascade,
}

const ALL: [Kind; 4] = [
    Kind::Threshold,
    Kind::TwoModel,
    Kind::Cascade,
    Kind::OnlineCascade,
];

const BASE: &str = "automix:\n  verification_samples: 3\n  cost_lambda: 0.02\n";

/// `kind`'s config with routing keys `extra`, reading the verifier `signal`
/// (`samples` or `logprob`).
fn config(kind: Kind, extra: &str, signal: &str) -> Config {
    let online = match kind {
        Kind::OnlineCascade => "  online_belief: true\n",
        _ => "",
    };
    let logprob = if signal == "logprob" {
        "  use_logprob_verification: true\n"
    } else {
        ""
    };
    let text = format!(
        "{BASE}{online}{logprob}{extra}hparam:\n  routing_method: Threshold\n  verifier_signal: {signal}\n"
    );
    Config::parse(&text, Path::new("test.yaml")).unwrap()
}

/// An informative verifier: the tiny model is right on even rows, and says so.
fn rows(tiny_right: impl Fn(usize) -> bool) -> Vec<TrainingRow> {
    (0..200)
        .map(|i| {
            let right = tiny_right(i);
            let runs = [
                Run {
                    model: "tiny",
                    right,
                    cost: 1e-6,
                    confidence: Some(if right { 1.0 } else { 0.0 }),
                },
                Run {
                    model: "big",
                    right: true,
                    cost: 1e-5,
                    confidence: None,
                },
            ];
            training_row(i, "mmlu", &runs)
        })
        .collect()
}

fn policy(kind: Kind, rows: &[TrainingRow], signal: &str) -> Option<RouterPolicy> {
    let c = config(kind, "", signal);
    match kind {
        Kind::Threshold => None,
        Kind::TwoModel => Some(train_policy(&c, rows, "tiny", "big").unwrap()),
        Kind::Cascade | Kind::OnlineCascade => {
            let mut p = train_policy(&c, rows, "tiny", "big").unwrap();
            let names = ["tiny".to_string(), "big".to_string()];
            p.cascade = Some(train_cascade_plan(&c, rows, &names).unwrap());
            Some(p)
        }
    }
}

struct Setup {
    router: Router,
    tiny: Arc<ScriptedProvider>,
    big: Arc<ScriptedProvider>,
}

/// `kind`'s router with routing keys `extra`; the tiny model answers `answer` and its
/// verifier says `verdicts`.
fn setup(
    kind: Kind,
    rows: &[TrainingRow],
    extra: &str,
    answer: &'static str,
    verdicts: &'static [&'static str],
) -> Setup {
    setup_read(kind, rows, extra, answer, verdicts, "samples")
}

/// [`setup`] with policies trained on, and routing reading, the verifier `signal`.
fn setup_read(
    kind: Kind,
    rows: &[TrainingRow],
    extra: &str,
    answer: &'static str,
    verdicts: &'static [&'static str],
    signal: &str,
) -> Setup {
    let (tiny_m, tiny) = scripted_model("tiny", 1.0, answer, verdicts);
    let (big_m, big) = scripted_model("big", 10.0, "B", &["Correct"]);
    let models = ModelSet::new(vec![big_m, tiny_m]).unwrap();
    let router = Router::new(
        &config(kind, extra, signal),
        models,
        Arc::new(PromptSet::builtin()),
        policy(kind, rows, signal),
    )
    .unwrap();
    Setup { router, tiny, big }
}

fn informative() -> Vec<TrainingRow> {
    rows(|i| i % 2 == 0)
}

#[tokio::test]
async fn verification_off_keeps_the_start_answer_in_every_strategy() {
    let rows = informative();
    for kind in ALL {
        let s = setup(
            kind,
            &rows,
            "  enable_self_verification: false\n",
            "A",
            &["Incorrect"],
        );
        let out = s.router.route_single(&query("off")).await.unwrap();
        assert_eq!(out.escalation_path, ["tiny"], "{kind:?}");
        assert!(out.calls.iter().all(|c| c.purpose == "answer"), "{kind:?}");
        assert_eq!(
            s.tiny.requests().len(),
            1,
            "{kind:?}: answered, not verified"
        );
        assert!(s.big.requests().is_empty(), "{kind:?}");
        assert_eq!(out.decision, RouteDecision::Kept, "{kind:?}");
        assert_eq!(out.signal, None, "{kind:?}");
        assert_eq!(out.steps[0].reason, "verification off", "{kind:?}");
    }
}

#[tokio::test]
async fn max_escalations_caps_every_strategy() {
    let rows = informative();
    for kind in ALL {
        // A rejected answer escalates with the default cap...
        let s = setup(kind, &rows, "", "A", &["Incorrect"]);
        let out = s.router.route_single(&query("cap")).await.unwrap();
        assert_eq!(out.escalation_path, ["tiny", "big"], "{kind:?}");
        assert_eq!(out.decision, RouteDecision::Escalated, "{kind:?}");
        assert!(out.route_to_llm, "{kind:?}");
        // ...and not with a cap of 0 from the config...
        let s = setup(kind, &rows, "  max_escalations: 0\n", "A", &["Incorrect"]);
        let out = s.router.route_single(&query("cap")).await.unwrap();
        assert_eq!(out.escalation_path, ["tiny"], "{kind:?}");
        assert_eq!(out.steps[0].reason, "max_escalations reached", "{kind:?}");
        assert!(s.big.requests().is_empty(), "{kind:?}");
        // ...or from the request.
        let s = setup(kind, &rows, "", "A", &["Incorrect"]);
        let options = automix::router::RouteOptions {
            max_escalations: Some(0),
            ..Default::default()
        };
        let out = s
            .router
            .route_single_with(&query("cap"), &options)
            .await
            .unwrap();
        assert_eq!(out.escalation_path, ["tiny"], "{kind:?}");
    }
}

#[tokio::test]
async fn an_unknown_score_is_decided_by_each_strategys_rule_and_says_so() {
    let rows = informative();
    for kind in ALL {
        let s = setup(kind, &rows, "", "B", &["???"]);
        let out = s.router.route_single(&query("unknown")).await.unwrap();
        assert_eq!(out.verification_score, None, "{kind:?}");
        let reason = &out.steps[0].reason;
        assert!(reason.starts_with("unknown score"), "{kind:?}: {reason}");
    }
}

/// A cascade that learned the cheap model is useless starts at the big one without
/// verifying: labelled `preselected` and counted as leaving the cheap model.
#[tokio::test]
async fn a_preselected_start_is_a_fact_of_the_outcome() {
    let rows = rows(|_| false);
    for kind in [Kind::Cascade, Kind::OnlineCascade] {
        let s = setup(kind, &rows, "", "A", &["Incorrect"]);
        let out = s.router.route_single(&query("pre")).await.unwrap();
        assert_eq!(out.escalation_path, ["big"], "{kind:?}");
        assert_eq!(out.decision, RouteDecision::Preselected, "{kind:?}");
        assert!(out.route_to_llm, "{kind:?}");
        assert!(s.tiny.requests().is_empty(), "{kind:?}");
        assert_eq!(out.decision.label(), "preselect");
    }
}

/// Policies trained on logprob confidences; live, the logprob verification falls back to
/// sampled votes (the scripted upstream returns no logprobs). A vote fraction is not a
/// logprob: every strategy sees an unknown score and says so.
#[tokio::test]
async fn a_logprob_fallback_is_an_unknown_score_in_every_strategy() {
    let rows: Vec<TrainingRow> = informative()
        .into_iter()
        .map(|mut r| {
            for run in &mut r.models {
                if let Some(v) = &mut run.verification {
                    v.logprob_p = v.p_ver;
                    v.logprob_source = "logprobs".into();
                }
            }
            r
        })
        .collect();
    for kind in ALL {
        let s = setup_read(kind, &rows, "", "B", &["Correct"], "logprob");
        let out = s.router.route_single(&query("fallback")).await.unwrap();
        assert_eq!(out.verification_score, None, "{kind:?}");
        let reason = &out.steps[0].reason;
        assert!(reason.starts_with("unknown score"), "{kind:?}: {reason}");
        assert_eq!(
            out.signal,
            Some(automix::config::VerifierSignal::Logprob),
            "{kind:?}"
        );
    }
}

/// A request's λ picks the cascade table solved nearest to it: at λ = 0 (cost does not
/// matter) the big model answers; at λ = 3 (an escalation must buy three times its cost in
/// quality) the tiny one does. The λ used is in the outcome. A policy without a λ family
/// refuses a request λ rather than ignoring it.
#[tokio::test]
async fn a_request_lambda_moves_a_cascade_between_its_tables() {
    let rows = informative();
    for kind in [Kind::Cascade, Kind::OnlineCascade] {
        let s = setup(kind, &rows, "", "A", &["Incorrect"]);
        let at = |lambda: f64| automix::router::RouteOptions {
            lambda: Some(lambda),
            ..Default::default()
        };
        assert!(s.router.lambda_family().is_some(), "{kind:?}");
        let free = s
            .router
            .route_single_with(&query("free"), &at(0.0))
            .await
            .unwrap();
        assert_eq!(
            free.model_name, "big",
            "{kind:?}: {:?}",
            free.escalation_path
        );
        assert_eq!(free.lambda, Some(0.0));
        let dear = s
            .router
            .route_single_with(&query("dear"), &at(2.5))
            .await
            .unwrap();
        assert_eq!(
            dear.model_name, "tiny",
            "{kind:?}: {:?}",
            dear.escalation_path
        );
        assert_eq!(dear.lambda, Some(3.0), "the nearest table's λ is reported");
    }
    let s = setup(Kind::Threshold, &rows, "", "A", &["Incorrect"]);
    let options = automix::router::RouteOptions {
        lambda: Some(0.1),
        ..Default::default()
    };
    let err = s
        .router
        .route_single_with(&query("no family"), &options)
        .await
        .unwrap_err();
    assert!(err.to_string().contains("λ family"), "{err}");
}

/// `enable_cascade: false` (Semantic Router's select flow): the plan's pre-selected model
/// answers and its answer is returned: one call, no verification, no escalation.
#[tokio::test]
async fn select_mode_answers_with_one_call_and_no_verification() {
    let rows = informative();
    let s = setup(
        Kind::Cascade,
        &rows,
        "  enable_cascade: false\n",
        "A",
        &["Incorrect"],
    );
    assert!(
        s.router.strategy_name().starts_with("select"),
        "{}",
        s.router.strategy_name()
    );
    let out = s.router.route_single(&query("select")).await.unwrap();
    assert_eq!(out.calls.len(), 1, "{:?}", out.calls);
    assert_eq!(out.calls[0].purpose, "answer");
    assert_eq!(s.tiny.requests().len() + s.big.requests().len(), 1);
    assert_eq!(out.escalation_path.len(), 1);
    assert_eq!(out.verification_score, None);
    assert_eq!(out.decision, RouteDecision::Preselected);
}

/// Select mode needs a plan to pre-select from, and learns nothing: without a cascade plan,
/// or with `online_belief`, it is refused at load naming the key.
#[test]
fn select_mode_without_a_plan_or_with_a_belief_is_refused_naming_the_key() {
    let rows = informative();
    for (kind, extra) in [
        (Kind::Threshold, "  enable_cascade: false\n"),
        (Kind::TwoModel, "  enable_cascade: false\n"),
        (Kind::OnlineCascade, "  enable_cascade: false\n"),
    ] {
        let (tiny_m, _) = scripted_model("tiny", 1.0, "A", &["Correct"]);
        let (big_m, _) = scripted_model("big", 10.0, "B", &["Correct"]);
        let models = ModelSet::new(vec![big_m, tiny_m]).unwrap();
        let err = Router::new(
            &config(kind, extra, "samples"),
            models,
            Arc::new(PromptSet::builtin()),
            policy(kind, &rows, "samples"),
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("automix.enable_cascade"), "{kind:?}: {err}");
    }
}

/// `use_pomdp_router: false` with a policy loaded routes by the threshold rule, and every
/// step says why (the policy is not silently dropped).
#[tokio::test]
async fn use_pomdp_router_false_routes_by_the_threshold_and_says_so() {
    let rows = informative();
    for kind in [Kind::TwoModel, Kind::Cascade] {
        let s = setup(
            kind,
            &rows,
            "  use_pomdp_router: false\n",
            "A",
            &["Incorrect"],
        );
        assert_eq!(s.router.strategy_name(), "threshold", "{kind:?}");
        let out = s.router.route_single(&query("q")).await.unwrap();
        let reason = &out.steps[0].reason;
        assert!(
            reason.contains("use_pomdp_router: false"),
            "{kind:?}: {reason}"
        );
    }
}

/// Routing on answer consistency with `answer_samples: 0` is refused at load naming the
/// key, not run on a quietly substituted sample count.
#[test]
fn answer_consistency_without_samples_is_refused() {
    let config = Config::parse(
        "automix:\n  answer_samples: 0\nhparam:\n  verifier_signal: answer_consistency\n",
        Path::new("sc.yaml"),
    )
    .unwrap();
    let (tiny_m, _) = scripted_model("tiny", 1.0, "A", &["Correct"]);
    let (big_m, _) = scripted_model("big", 10.0, "B", &["Correct"]);
    let models = ModelSet::new(vec![big_m, tiny_m]).unwrap();
    let err = Router::new(&config, models, Arc::new(PromptSet::builtin()), None)
        .unwrap_err()
        .to_string();
    assert!(err.contains("automix.answer_samples"), "{err}");
}

/// A router over scripted `tiny` → `mid` → `big` (prices 1, 5, 10) with `policy`: `tiny`
/// gives `(answer, verdicts)`, `mid` answers "B" with `mid_verdicts`, `big` answers "B".
/// Also `mid`'s provider, to see whether it was called.
fn chain_router(
    config: &Config,
    policy: &RouterPolicy,
    (tiny_answer, tiny_verdicts): (&'static str, &'static [&'static str]),
    mid_verdicts: &'static [&'static str],
) -> (Router, Arc<ScriptedProvider>) {
    let (tiny_m, _) = scripted_model("tiny", 1.0, tiny_answer, tiny_verdicts);
    let (mid_m, mid) = scripted_model("mid", 5.0, "B", mid_verdicts);
    let (big_m, _) = scripted_model("big", 10.0, "B", &["Correct"]);
    let models = ModelSet::new(vec![big_m, mid_m, tiny_m]).unwrap();
    let prompts = Arc::new(PromptSet::builtin());
    let router = Router::new(config, models, prompts, Some(policy.clone())).unwrap();
    (router, mid)
}

/// `previous_agreement` live: the middle model's verification reads whether its answer
/// agrees with the cheap model's (zero calls), scored by the plan's fusion: agreeing, it is
/// kept; disagreeing, the query goes on to the large model.
#[tokio::test]
async fn a_fused_cascade_reads_agreement_with_the_previous_answer_live() {
    let rows = crate::support::agreement_chain_rows(400);
    let text = format!(
        "{}  fuse_signals: [samples, previous_agreement]\n",
        crate::support::AGREEMENT_CHAIN_CONFIG
    );
    let config = Config::parse(&text, Path::new("agree.yaml")).unwrap();
    let names = ["tiny".to_string(), "mid".to_string(), "big".to_string()];
    let mut policy = train_policy(&config, &rows, "tiny", "big").unwrap();
    policy.cascade = Some(train_cascade_plan(&config, &rows, &names).unwrap());
    for (tiny_answer, kept, mid_high) in [("B", "mid", true), ("A", "big", false)] {
        let both = &["Correct", "Incorrect"][..];
        let (router, _) = chain_router(&config, &policy, (tiny_answer, both), both);
        let out = router.route_single(&query("q")).await.unwrap();
        assert_eq!(out.model_name, kept, "{out:?}");
        assert_eq!(out.escalation_path[..2], ["tiny", "mid"], "{out:?}");
        use automix::config::VerifierSignal::{PreviousAgreement, Samples};
        assert_eq!(out.fused_signals, [Samples, PreviousAgreement]);
        let mid = out.steps.iter().find(|s| s.model == "mid").unwrap();
        let score = mid.verification_score.unwrap();
        assert_eq!(score > 0.8, mid_high, "{out:?}");
        assert!(mid_high || score < 0.5, "{out:?}");
    }
}

/// A plan whose cascade is the learned threshold chain routes live by the chain's cuts:
/// the cheap model's confident answer is kept; a doubtful one goes on to the chain's next
/// member, skipping the model the chain left out, and the outcome names the chain.
#[tokio::test]
async fn a_threshold_chain_plan_routes_live_by_its_cuts() {
    let rows = crate::support::continuous_chain_rows(1200);
    let text = "automix:\n  cost_lambda: 0.3\nhparam:\n  per_task_prior: false\n";
    let config = Config::parse(text, Path::new("chain.yaml")).unwrap();
    let names = ["tiny".to_string(), "mid".to_string(), "big".to_string()];
    let mut policy = train_policy(&config, &rows, "tiny", "big").unwrap();
    let plan = train_cascade_plan(&config, &rows, &names).unwrap();
    let chain = plan
        .cross_validation
        .as_ref()
        .unwrap()
        .chain
        .clone()
        .unwrap();
    assert!(chain.chosen, "{chain:?}");
    assert_eq!(chain.members, ["tiny", "big"], "{chain:?}");
    policy.cascade = Some(plan);
    let cases: [(&'static [&'static str], &str); 2] =
        [(&["Correct"], "tiny"), (&["Incorrect"], "big")];
    for (verdicts, kept) in cases {
        let (router, mid) = chain_router(&config, &policy, ("B", verdicts), &["Correct"]);
        let out = router.route_single(&query("q")).await.unwrap();
        assert_eq!(out.model_name, kept, "{out:?}");
        let expected: &[&str] = if kept == "tiny" {
            &["tiny"]
        } else {
            &["tiny", "big"]
        };
        assert_eq!(out.escalation_path, expected, "{out:?}");
        assert!(mid.requests().is_empty(), "{out:?}");
    }
    let view = chain_router(&config, &policy, ("B", &["Correct"]), &["Correct"])
        .0
        .policy_view();
    assert!(
        view.rule.starts_with("a threshold chain (tiny keeps at ≥ "),
        "{view:?}"
    );
    // Served with an online belief, which would re-solve a table, it is refused by name.
    let online =
        "automix:\n  cost_lambda: 0.3\n  online_belief: true\nhparam:\n  per_task_prior: false\n";
    let online = Config::parse(online, Path::new("online.yaml")).unwrap();
    let models = ModelSet::new(
        ["big", "mid", "tiny"]
            .map(|m| scripted_model(m, 1.0, "B", &["Correct"]).0)
            .to_vec(),
    )
    .unwrap();
    let prompts = Arc::new(PromptSet::builtin());
    let err = match Router::new(&online, models, prompts, Some(policy)) {
        Ok(_) => panic!("a chain plan served with online_belief was accepted"),
        Err(e) => e.to_string(),
    };
    assert!(err.contains("automix.online_belief"), "{err}");
}
