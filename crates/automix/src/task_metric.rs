//! Task metrics: how an answer is scored against the ground truth.

use std::collections::HashMap;

use automix_verify::{TaskKind, normalise_answer};

use crate::error::{AutomixError, Result};

/// A task metric. Names as in LLMRouter's data (`em_mc`, `f1_score`, `GSM8K`, `MATH`), plus
/// `f1`, `cem`, `exact` and `commongen_coverage`. An unknown name is an error.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TaskMetric {
    /// Option letter equals the ground-truth letter.
    EmMc,
    /// SQuAD token F1.
    F1,
    /// Contains-exact-match: the normalised ground truth occurs in the normalised answer.
    Cem,
    /// Normalised exact match.
    Exact,
    /// GSM8K: final number equals the number after `####`.
    Gsm8k,
    /// MATH: final (boxed) answer equals the ground truth's boxed answer.
    Math,
    /// CommonGen: share of the concepts used in the sentence.
    CommongenCoverage,
}

const NAMES: &[(&str, TaskMetric)] = &[
    ("em_mc", TaskMetric::EmMc),
    ("f1", TaskMetric::F1),
    ("f1_score", TaskMetric::F1),
    ("cem", TaskMetric::Cem),
    ("exact", TaskMetric::Exact),
    ("exact_match", TaskMetric::Exact),
    ("gsm8k", TaskMetric::Gsm8k),
    ("math", TaskMetric::Math),
    ("commongen_coverage", TaskMetric::CommongenCoverage),
];

impl TaskMetric {
    /// Parses a metric name (case-insensitive).
    pub fn parse(name: &str) -> Result<Self> {
        let lower = name.to_ascii_lowercase();
        NAMES
            .iter()
            .find(|(n, _)| *n == lower)
            .map(|(_, m)| *m)
            .ok_or_else(|| AutomixError::UnknownMetric {
                name: name.to_owned(),
                known: NAMES.iter().map(|(n, _)| *n).collect::<Vec<_>>().join(", "),
            })
    }

    /// The canonical name.
    pub fn name(self) -> &'static str {
        match self {
            Self::EmMc => "em_mc",
            Self::F1 => "f1",
            Self::Cem => "cem",
            Self::Exact => "exact",
            Self::Gsm8k => "GSM8K",
            Self::Math => "MATH",
            Self::CommongenCoverage => "commongen_coverage",
        }
    }

    /// How the question is asked.
    pub fn task_kind(self) -> TaskKind {
        match self {
            Self::EmMc => TaskKind::MultipleChoice,
            Self::Gsm8k | Self::Math => TaskKind::Math,
            Self::F1 | Self::Cem | Self::Exact | Self::CommongenCoverage => TaskKind::ShortAnswer,
        }
    }

    /// The answer as this metric reads it: an option letter, a final number, or normalised text.
    pub fn extract(self, answer: &str, choices: &[(String, String)]) -> String {
        match self {
            Self::EmMc => option_letter(answer, choices).unwrap_or_default(),
            Self::Gsm8k | Self::Math => final_answer(answer).unwrap_or_default(),
            Self::F1 | Self::Cem | Self::Exact | Self::CommongenCoverage => {
                normalise_answer(first_line(answer))
            }
        }
    }

    /// Scores `answer` against `ground_truth` in [0, 1].
    pub fn score(self, answer: &str, ground_truth: &str, choices: &[(String, String)]) -> f64 {
        match self {
            Self::EmMc => {
                let got = self.extract(answer, choices);
                f64::from(!got.is_empty() && got.eq_ignore_ascii_case(ground_truth.trim()))
            }
            Self::F1 => token_f1(
                &self.extract(answer, choices),
                &normalise_answer(ground_truth),
            ),
            Self::Cem => {
                let truth = normalise_answer(ground_truth);
                let got = normalise_answer(answer);
                f64::from(!truth.is_empty() && format!(" {got} ").contains(&format!(" {truth} ")))
            }
            Self::Exact => {
                f64::from(self.extract(answer, choices) == normalise_answer(ground_truth))
            }
            Self::Gsm8k => {
                let truth = ground_truth
                    .rsplit("####")
                    .next()
                    .map(clean_number)
                    .unwrap_or_default();
                f64::from(same_answer(&self.extract(answer, choices), &truth))
            }
            Self::Math => {
                let truth = boxed(ground_truth)
                    .map(|b| clean_number(&b))
                    .unwrap_or_else(|| clean_number(ground_truth));
                f64::from(same_answer(&self.extract(answer, choices), &truth))
            }
            Self::CommongenCoverage => {
                let sentence = normalise_answer(answer);
                let words: Vec<&str> = sentence.split_whitespace().collect();
                let concepts: Vec<String> = ground_truth
                    .split(',')
                    .map(normalise_answer)
                    .filter(|c| !c.is_empty())
                    .collect();
                if concepts.is_empty() {
                    return 0.0;
                }
                let used = concepts
                    .iter()
                    .filter(|c| words.iter().any(|w| w.starts_with(c.as_str())))
                    .count();
                used as f64 / concepts.len() as f64
            }
        }
    }
}

fn first_line(text: &str) -> &str {
    text.trim().lines().next().unwrap_or("")
}

/// The option letter an answer names: "B", "(B)", "B.", "Answer: B", "The answer is B",
/// or the text of exactly one option.
pub fn option_letter(answer: &str, choices: &[(String, String)]) -> Option<String> {
    let labels: Vec<String> = if choices.is_empty() {
        ["A", "B", "C", "D", "E"].map(String::from).to_vec()
    } else {
        choices
            .iter()
            .map(|(l, _)| l.to_ascii_uppercase())
            .collect()
    };
    let text = answer.trim();
    // Standalone label tokens, in order; the first one wins.
    let tokens: Vec<String> = text
        .split(|c: char| !c.is_ascii_alphanumeric())
        .filter(|t| !t.is_empty())
        .map(str::to_owned)
        .collect();
    let is_label = |t: &str| labels.iter().any(|l| l == t);
    if let Some(first) = tokens.first()
        && is_label(first)
        && (first != "A" || tokens.len() <= 2 || text.starts_with("A.") || text.starts_with("A)"))
    {
        return Some(first.clone());
    }
    for marker in ["answer is", "answer:", "option", "choice"] {
        let lower = text.to_ascii_lowercase();
        if let Some(i) = lower.find(marker) {
            let after = &text[i + marker.len()..];
            if let Some(t) = after
                .split(|c: char| !c.is_ascii_alphanumeric())
                .find(|t| !t.is_empty())
                && is_label(t)
            {
                return Some(t.to_owned());
            }
        }
    }
    let norm = normalise_answer(text);
    let matching: Vec<&(String, String)> = choices
        .iter()
        .filter(|(_, t)| !t.trim().is_empty() && normalise_answer(t) == norm)
        .collect();
    if matching.len() == 1 {
        return Some(matching[0].0.to_ascii_uppercase());
    }
    tokens
        .iter()
        .find(|t| t.len() == 1 && is_label(t) && t.as_str() != "A")
        .cloned()
}

/// The content of the last `\boxed{...}` (nested braces allowed).
pub fn boxed(text: &str) -> Option<String> {
    let start = text.rfind("\\boxed{").or_else(|| text.rfind("\\fbox{"))?;
    let open = start + text[start..].find('{')?;
    let mut depth = 0usize;
    for (i, c) in text[open..].char_indices() {
        match c {
            '{' => depth += 1,
            '}' => {
                depth -= 1;
                if depth == 0 {
                    return Some(text[open + 1..open + i].to_owned());
                }
            }
            _ => {}
        }
    }
    None
}

/// The final answer of a math solution: boxed, else after `####`, else the last number.
pub fn final_answer(text: &str) -> Option<String> {
    if let Some(b) = boxed(text) {
        return Some(clean_number(&b));
    }
    if let Some(after) = text.rsplit_once("####") {
        return Some(clean_number(after.1));
    }
    last_number(text)
}

fn last_number(text: &str) -> Option<String> {
    let mut found = None;
    let chars: Vec<char> = text.chars().collect();
    let mut i = 0;
    while i < chars.len() {
        if chars[i].is_ascii_digit()
            || (chars[i] == '-' && chars.get(i + 1).is_some_and(char::is_ascii_digit))
        {
            let start = i;
            i += 1;
            while i < chars.len()
                && (chars[i].is_ascii_digit()
                    || ((chars[i] == '.' || chars[i] == ',')
                        && chars.get(i + 1).is_some_and(char::is_ascii_digit)))
            {
                i += 1;
            }
            found = Some(chars[start..i].iter().collect::<String>());
        } else {
            i += 1;
        }
    }
    found.map(|n| clean_number(&n))
}

/// Strips `$`, commas, spaces, `\!`, `\text{..}` units and trailing `.0`s from an answer.
pub fn clean_number(text: &str) -> String {
    let mut s = text.trim().to_owned();
    for junk in [
        "\\!", "\\$", "$", "\\%", "%", "\\left", "\\right", "dfrac", "tfrac",
    ] {
        s = s.replace(junk, if junk.ends_with("frac") { "frac" } else { "" });
    }
    if let Some(i) = s.find("\\text{") {
        s.truncate(i);
    }
    let s: String = s.chars().filter(|c| !c.is_whitespace()).collect();
    let s = s.trim_end_matches('.').to_owned();
    let without_commas = s.replace(',', "");
    if let Ok(n) = without_commas.parse::<f64>() {
        return format_number(n);
    }
    s
}

fn format_number(n: f64) -> String {
    if n.fract() == 0.0 && n.abs() < 1e15 {
        format!("{}", n as i64)
    } else {
        format!("{n}")
    }
}

/// Equal as numbers (relative 1e-6) or as cleaned strings.
fn same_answer(a: &str, b: &str) -> bool {
    if a.is_empty() || b.is_empty() {
        return false;
    }
    match (a.parse::<f64>(), b.parse::<f64>()) {
        (Ok(x), Ok(y)) => (x - y).abs() <= 1e-6 * y.abs().max(1.0),
        _ => a == b,
    }
}

/// `text` as `metric` reads it (option letter, final number, ...); without a metric, the
/// normalised text.
pub fn normalised(metric: Option<TaskMetric>, text: &str, choices: &[(String, String)]) -> String {
    match metric {
        Some(m) => m.extract(text, choices),
        None => normalise_answer(text),
    }
}

/// SQuAD token F1 between normalised strings.
pub fn token_f1(prediction: &str, truth: &str) -> f64 {
    let p: Vec<&str> = prediction.split_whitespace().collect();
    let t: Vec<&str> = truth.split_whitespace().collect();
    if p.is_empty() || t.is_empty() {
        return f64::from(p.is_empty() && t.is_empty());
    }
    let mut counts: HashMap<&str, i64> = HashMap::new();
    for w in &t {
        *counts.entry(w).or_default() += 1;
    }
    let mut common = 0;
    for w in &p {
        if let Some(c) = counts.get_mut(w)
            && *c > 0
        {
            *c -= 1;
            common += 1;
        }
    }
    if common == 0 {
        return 0.0;
    }
    let precision = common as f64 / p.len() as f64;
    let recall = common as f64 / t.len() as f64;
    2.0 * precision * recall / (precision + recall)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn opts() -> Vec<(String, String)> {
        ["A", "B", "C", "D"]
            .iter()
            .zip(["sand", "cacti", "dryness", "wet sky"])
            .map(|(l, t)| (l.to_string(), t.to_string()))
            .collect()
    }

    #[test]
    fn multiple_choice_letters() {
        let o = opts();
        for (answer, want) in [
            ("D", "D"),
            ("(B)", "B"),
            ("C. dryness", "C"),
            ("The answer is D.", "D"),
            ("Answer: B", "B"),
            ("dryness", "C"),
            ("A", "A"),
        ] {
            assert_eq!(option_letter(answer, &o).as_deref(), Some(want), "{answer}");
        }
        assert_eq!(TaskMetric::EmMc.score("The answer is D", "D", &o), 1.0);
        assert_eq!(TaskMetric::EmMc.score("B", "D", &o), 0.0);
        assert_eq!(TaskMetric::EmMc.score("", "D", &o), 0.0);
    }

    #[test]
    fn math_final_numbers() {
        let gsm = "so $60,000/3 = 20,000.\n#### 20,000";
        assert_eq!(
            TaskMetric::Gsm8k.score("She gave \\boxed{20000}", gsm, &[]),
            1.0
        );
        assert_eq!(
            TaskMetric::Gsm8k.score("The answer is $20,000.", gsm, &[]),
            1.0
        );
        assert_eq!(TaskMetric::Gsm8k.score("It is 2000", gsm, &[]), 0.0);
        let math = "the sum is $\\boxed{494550}$.";
        assert_eq!(TaskMetric::Math.score("\\boxed{494,550}", math, &[]), 1.0);
        assert_eq!(
            TaskMetric::Math.score("\\boxed{\\dfrac{1}{2}}", "\\boxed{\\frac{1}{2}}", &[]),
            1.0
        );
        assert_eq!(TaskMetric::Math.score("28 pets", "28", &[]), 1.0);
        assert_eq!(
            boxed("a \\boxed{\\frac{1}{2}} b").as_deref(),
            Some("\\frac{1}{2}")
        );
        assert_eq!(final_answer("x = -3.50"), Some("-3.5".into()));
    }

    #[test]
    fn text_metrics() {
        assert_eq!(
            TaskMetric::F1.score("Sammy Davis Jr.", "Sammy Davis, Jr", &[]),
            1.0
        );
        let f = TaskMetric::F1.score("Bayreuth", "bayreuth germany", &[]);
        assert!((f - 2.0 / 3.0).abs() < 1e-12);
        assert_eq!(
            TaskMetric::Cem.score("It is in Bayreuth, Germany.", "Bayreuth Germany", &[]),
            1.0
        );
        assert_eq!(TaskMetric::Exact.score("The Paris", "paris", &[]), 1.0);
        let c = TaskMetric::CommongenCoverage.score(
            "A dog runs in the field",
            "dog, field, cat, run",
            &[],
        );
        assert_eq!(c, 0.75);
    }

    #[test]
    fn unknown_metric_is_an_error() {
        let err = TaskMetric::parse("code_eval").unwrap_err();
        assert!(
            err.to_string()
                .starts_with("unknown task metric \"code_eval\"; known: em_mc")
        );
        assert_eq!(TaskMetric::parse("f1_score").unwrap(), TaskMetric::F1);
        assert_eq!(TaskMetric::parse("GSM8K").unwrap(), TaskMetric::Gsm8k);
    }
}
