//! Bounded fuzzing (proptest): the config loader, the policy loader and the chat-request
//! parser never panic, whatever they are given; they return errors.

use std::path::Path;

use automix::Config;
use automix::training::RouterPolicy;
use automix_serve::parse_chat_request;
use proptest::prelude::*;
use serde_json::{Value, json};

/// Arbitrary JSON, biased toward the shapes the parsers look at.
fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(|n| json!(n)),
        any::<f64>()
            .prop_map(|f| serde_json::Number::from_f64(f).map_or(Value::Null, Value::Number)),
        "[a-z_ ]{0,12}".prop_map(Value::String),
        prop_oneof![Just("automix"), Just("user"), Just("text"), Just("system")]
            .prop_map(|s| Value::String(s.into())),
    ];
    leaf.prop_recursive(4, 48, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::btree_map(
                prop_oneof![
                    Just("model".to_owned()),
                    Just("messages".to_owned()),
                    Just("role".to_owned()),
                    Just("content".to_owned()),
                    Just("type".to_owned()),
                    Just("text".to_owned()),
                    Just("max_tokens".to_owned()),
                    Just("n".to_owned()),
                    Just("stop".to_owned()),
                    Just("stream".to_owned()),
                    "[a-z_]{1,8}",
                ],
                inner,
                0..6,
            )
            .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 256,
        rng_seed: proptest::test_runner::RngSeed::Fixed(7),
        ..ProptestConfig::default()
    })]

    #[test]
    fn the_chat_request_parser_never_panics(body in json_value()) {
        let _ = parse_chat_request(&body);
    }

    #[test]
    fn the_config_loader_never_panics(text in "(hparam|automix|data_path|model_path|collect|num_bins|routing_method|: |\n|  |-|[0-9.]{1,4}|[a-z_]{1,10}|\\[|\\]|\\{|\\}|'|\"|#){0,40}") {
        let _ = Config::parse(&text, Path::new("fuzz.yaml"));
    }

    #[test]
    fn the_policy_loader_never_panics(value in json_value(), spot in 0usize..8) {
        // A valid-looking shell with one part replaced by arbitrary JSON.
        let mut policy = json!({
            "format_version": 1, "small_model": "s", "large_model": "l",
            "verifier_signal": "samples", "cost_mode": "relative",
            "policy": {"format_version": 1, "rule": {"rule": "threshold", "threshold": 0.5}},
            "cascade": {"models": ["s", "l"], "cost_unit": 1.0, "policy": {}}
        });
        let paths = [
            "/policy", "/policy/rule", "/cascade", "/cascade/policy", "/cascade/models",
            "/policy/format_version", "/cascade/cost_unit", "/verifier_signal",
        ];
        if let Some(slot) = policy.pointer_mut(paths[spot]) {
            *slot = value;
        }
        let dir = std::env::temp_dir().join(format!("automix-fuzz-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("policy.json");
        std::fs::write(&path, policy.to_string()).unwrap();
        let _ = RouterPolicy::load(&path);
    }
}
