//! The verdict parser never panics, and is stable under whitespace and ASCII case.

use automix_verify::*;
use proptest::prelude::*;

fn verdictish() -> impl Strategy<Value = String> {
    let words = prop::sample::select(vec![
        "Correct",
        "Incorrect",
        "correct",
        "not",
        "is",
        "the",
        "answer",
        "True",
        "False",
        "Yes",
        "No",
        "or",
        "isn't",
        "wrong",
        "Question:",
        "---",
        "\n",
        ".",
        "!",
        "**",
        "maybe",
    ]);
    prop::collection::vec(words, 0..12).prop_map(|w| w.join(" "))
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

    #[test]
    fn never_panics_on_arbitrary_text(text in any::<String>()) {
        let _ = parse_verdict(&text);
        let _ = own_continuation(&text);
    }

    #[test]
    fn stable_under_case_and_spacing(text in verdictish(), pad in "[ \t]{0,3}", upper in any::<bool>()) {
        let base = parse_verdict(&text);
        let cased = if upper { text.to_ascii_uppercase() } else { text.to_ascii_lowercase() };
        let spaced = format!("{pad}{}{pad}", cased.replace(' ', &format!(" {pad}")));
        prop_assert_eq!(parse_verdict(&spaced), base);
    }

    #[test]
    fn tally_counts_every_sample(texts in prop::collection::vec(verdictish(), 0..10)) {
        let t = VerdictTally::from_samples(texts.iter().map(String::as_str));
        prop_assert_eq!((t.correct + t.incorrect + t.unparsed) as usize, texts.len());
        match t.p_ver() {
            None => prop_assert_eq!(t.parsed(), 0),
            Some(p) => prop_assert!((0.0..=1.0).contains(&p)),
        }
    }

    #[test]
    fn auc_is_a_probability(rows in prop::collection::vec((0.0f64..=1.0, 0.0f64..=1.0), 0..40)) {
        if let Some(a) = auc(&rows) { prop_assert!((0.0..=1.0).contains(&a)); }
        if let Some(e) = ece(&rows, 10) { prop_assert!((0.0..=1.0).contains(&e)); }
    }
}
