use std::path::{Path, PathBuf};

use automix::Config;

fn parse(text: &str) -> Result<Config, String> {
    Config::parse(text, Path::new("cfg.yaml")).map_err(|e| e.to_string())
}

#[test]
fn the_shipped_configs_load_with_paths_resolved() {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../configs");
    let c = Config::load(&dir.join("local.yaml")).unwrap();
    assert_eq!(c.hparam.routing_method, automix_core::MethodKind::Auto);
    assert_eq!(c.automix.verification_samples, 3);
    let llm = c.data_path.llm_data.unwrap();
    assert!(llm.starts_with(&dir), "{}", llm.display());
    assert!(llm.ends_with("../.cache/llms/llm_data.json"));
    let llmrouter = Config::load(&dir.join("llmrouter_automix.yaml")).unwrap();
    assert_eq!(
        llmrouter.hparam.routing_method,
        automix_core::MethodKind::PaperPomdp
    );
    assert_eq!(llmrouter.hparam.large_model_cost, 50.0);
}

#[test]
fn defaults_follow_llmrouter_and_semantic_router() {
    let c = parse("{}").unwrap();
    assert_eq!(
        c.hparam.routing_method,
        automix_core::MethodKind::PaperPomdp
    );
    assert_eq!(c.hparam.num_bins, 8);
    assert_eq!(
        (
            c.hparam.small_model_cost,
            c.hparam.large_model_cost,
            c.hparam.verifier_cost
        ),
        (1.0, 50.0, 1.0)
    );
    assert_eq!(c.automix.verification_temperature, 0.7);
    assert!(c.automix.enable_self_verification);
    assert_eq!(c.metric.weights.performance, 1.0);
}

#[test]
fn unknown_keys_suggest_the_nearest() {
    let err = parse("automix:\n  verification_treshold: 0.5\n").unwrap_err();
    assert!(
        err.starts_with("cfg.yaml:2: unknown key `verification_treshold`; did you mean `verification_threshold`?"),
        "{err}"
    );
    let err = parse("hparm:\n  num_bins: 4\n").unwrap_err();
    assert!(
        err.starts_with("cfg.yaml:1: unknown key `hparm`; did you mean `hparam`?"),
        "{err}"
    );
    let err = parse("metric:\n  weights:\n    performance: 1\n    cots: 0\n").unwrap_err();
    assert!(
        err.starts_with("cfg.yaml:4: unknown key `cots`; did you mean `cost`?"),
        "{err}"
    );
    let err = parse("zzzzzz: 1\n").unwrap_err();
    assert!(
        err.starts_with("cfg.yaml:1: unknown key `zzzzzz` (known here: data_path"),
        "{err}"
    );
}

#[test]
fn type_errors_name_line_and_key() {
    let err = parse("hparam:\n  routing_method: POMDP\n  num_bins: many\n").unwrap_err();
    assert!(err.starts_with("cfg.yaml:3: key `num_bins`: "), "{err}");
    let err = parse("automix:\n  enable_cascade: 3\n").unwrap_err();
    assert!(
        err.starts_with("cfg.yaml:2: key `enable_cascade`: "),
        "{err}"
    );
}

#[test]
fn invalid_values_name_the_key() {
    let err = parse("hparam:\n  routing_method: Magic\n").unwrap_err();
    assert!(
        err.starts_with("cfg.yaml:2: key `routing_method`: hparam.routing_method: unknown method \"Magic\"; known: Threshold"),
        "{err}"
    );
    let err = parse("automix:\n  verification_threshold: 1.5\n").unwrap_err();
    assert_eq!(err, "cfg.yaml:2: verification_threshold: must be in [0, 1]");
    let err = parse("hparam:\n  objective: net_utility\n").unwrap_err();
    assert!(err.contains("needs hparam.objective_value"), "{err}");
    let err = parse("hparam:\n  objective: cheapest\n").unwrap_err();
    assert!(
        err.starts_with("cfg.yaml:2: key `objective`") && err.contains("net_utility"),
        "{err}"
    );
    let err = parse("hparam:\n  cost_constraint: [5, 1]\n").unwrap_err();
    assert_eq!(err, "cfg.yaml:2: cost_constraint: min 5 > max 1");
    let err = parse("hparam:\n  unknown_confidence: maybe\n").unwrap_err();
    assert!(
        err.starts_with("cfg.yaml:2: key `unknown_confidence`:")
            && err.contains("neither \"escalate\" nor \"keep\""),
        "{err}"
    );
    // LLMRouter's `device: cuda` is refused with the reason, not ignored.
    let err = parse("hparam:\n  device: cuda\n").unwrap_err();
    assert!(
        err.starts_with("cfg.yaml:2: key `device`: hparam.device: \"cuda\" is not supported"),
        "{err}"
    );
    assert!(parse("hparam:\n  device: CPU\n").is_ok());
    // metric.weights: an LLM-judge weight would be silently unused, so it is refused.
    let err = parse("metric:\n  weights:\n    llm_judge: 0.3\n").unwrap_err();
    assert!(
        err.starts_with("cfg.yaml:3: llm_judge: AutoMix has no LLM judge"),
        "{err}"
    );
    let err = parse("metric:\n  weights:\n    cost: -1\n").unwrap_err();
    assert!(err.starts_with("cfg.yaml:3: cost: weight -1"), "{err}");
}

#[test]
fn a_missing_file_is_named() {
    let err = Config::load(Path::new("/nonexistent/automix.yaml")).unwrap_err();
    assert!(
        err.to_string().starts_with("/nonexistent/automix.yaml: "),
        "{err}"
    );
}

/// `configs/semantic_router.yaml` reproduces Semantic Router's automix block: select mode,
/// and a router built from it over a plan trained on the bundled rows pre-selects.
#[test]
fn the_semantic_router_config_is_select_mode() {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../configs");
    let c = Config::load(&dir.join("semantic_router.yaml")).unwrap();
    assert!(!c.automix.enable_cascade);
    assert!(c.automix.use_pomdp_router);
    assert_eq!(c.automix.verification_threshold, 0.7);
    assert_eq!(c.automix.max_escalations, 2);
    let rows =
        automix::dataset::read_training_rows(c.data_path.routing_data_train.as_ref().unwrap())
            .unwrap();
    let names: Vec<String> = rows[0].models.iter().map(|m| m.model.clone()).collect();
    let mut policy =
        automix::training::train_policy(&c, &rows, &names[0], &names[names.len() - 1]).unwrap();
    policy.cascade = Some(automix::training::train_cascade_plan(&c, &rows, &names).unwrap());
    let handles = names
        .iter()
        .enumerate()
        .map(|(i, n)| crate::support::scripted_model(n, 1.0 + i as f64, "A", &["Correct"]).0)
        .collect();
    let router = automix::Router::new(
        &c,
        automix::ModelSet::new(handles).unwrap(),
        std::sync::Arc::new(automix::verify::PromptSet::builtin()),
        Some(policy),
    )
    .unwrap();
    assert_eq!(router.strategy_name(), "select (enable_cascade: false)");
}
