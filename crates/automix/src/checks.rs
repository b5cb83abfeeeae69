//! Zero-call answer checks: bad answers that arrive with HTTP 200, caught from the answer
//! itself before anyone pays for a verifier call.
//!
//! | check | fails when | what it can get wrong |
//! |---|---|---|
//! | `empty` | the answer is empty or only whitespace (and made no tool call) | nothing: an empty answer answers nothing |
//! | `refusal` | a short answer (under 400 characters) opens with a stock refusal ("I'm sorry, but I can't…", "I cannot help with…", "As an AI…") | a refusal the user wanted (an unsafe request) is escalated too, and a larger model may refuse as well; a long answer that merely contains such a phrase is not flagged |
//! | `truncated` | the upstream stopped at the token limit (`finish_reason: length`) | an answer that was complete exactly at the limit |
//! | `invalid_json` | the request asked for `response_format` `json_object` or `json_schema` and the answer does not parse as JSON (one surrounding Markdown code fence is allowed) | nothing about the schema is checked, only that it is JSON |
//!
//! A failed check is evidence that the answer is wrong, as a verifier saying "incorrect"
//! would be: where the runner would verify, it escalates instead, without the call. Where the
//! answer is kept anyway (the last model, `max_escalations`, verification off, a policy's
//! unverified pick), the failed check is reported in the step and the reply, not hidden.

use serde::{Deserialize, Serialize};

/// One zero-call check of an answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AnswerCheck {
    /// Empty or whitespace only.
    Empty,
    /// A stock refusal.
    Refusal,
    /// Cut at the token limit.
    Truncated,
    /// Not JSON although the request asked for JSON.
    InvalidJson,
}

/// Every check, in the order they are tried (the default of `automix.answer_checks`).
pub const ALL_CHECKS: [AnswerCheck; 4] = [
    AnswerCheck::Empty,
    AnswerCheck::Truncated,
    AnswerCheck::InvalidJson,
    AnswerCheck::Refusal,
];

impl AnswerCheck {
    /// Its name in config, replies and metrics.
    pub fn name(self) -> &'static str {
        match self {
            Self::Empty => "empty",
            Self::Refusal => "refusal",
            Self::Truncated => "truncated",
            Self::InvalidJson => "invalid_json",
        }
    }
}

/// What a check looks at: the answer and what the request asked of it.
#[derive(Debug, Clone, Copy)]
pub struct AnswerFacts<'a> {
    /// The answer text.
    pub text: &'a str,
    /// The upstream's `finish_reason`.
    pub finish_reason: Option<&'a str>,
    /// Whether the answer called tools (an action, not text).
    pub tool_call: bool,
    /// Whether the request asked for JSON (`response_format`).
    pub wants_json: bool,
}

/// The first of `enabled` that `facts` fail, if any.
pub fn first_failed(enabled: &[AnswerCheck], facts: &AnswerFacts<'_>) -> Option<AnswerCheck> {
    if facts.tool_call {
        return None;
    }
    enabled.iter().copied().find(|c| fails(*c, facts))
}

fn fails(check: AnswerCheck, f: &AnswerFacts<'_>) -> bool {
    match check {
        AnswerCheck::Empty => f.text.trim().is_empty(),
        AnswerCheck::Truncated => f.finish_reason == Some("length"),
        AnswerCheck::InvalidJson => f.wants_json && !is_json(f.text),
        AnswerCheck::Refusal => is_refusal(f.text),
    }
}

/// Whether a request's `response_format` asks for JSON.
pub fn wants_json(response_format: Option<&serde_json::Value>) -> bool {
    response_format
        .and_then(|f| f["type"].as_str())
        .is_some_and(|t| t == "json_object" || t == "json_schema")
}

fn is_json(text: &str) -> bool {
    let t = text.trim();
    let unfenced = t
        .strip_prefix("```json")
        .or_else(|| t.strip_prefix("```"))
        .and_then(|rest| rest.strip_suffix("```"))
        .unwrap_or(t);
    serde_json::from_str::<serde_json::Value>(unfenced.trim()).is_ok()
}

/// Longer answers than this are not read as refusals: a real answer may mention that
/// something "can't" be done in passing.
const REFUSAL_MAX_CHARS: usize = 400;

/// Openings of stock refusals, lowercased with straight apostrophes.
const REFUSAL_OPENINGS: [&str; 14] = [
    "i'm sorry, but i can't",
    "i'm sorry, but i cannot",
    "i am sorry, but i can't",
    "i am sorry, but i cannot",
    "sorry, but i can't",
    "sorry, i can't",
    "i'm sorry, i can't",
    "i can't help with",
    "i cannot help with",
    "i can't assist with",
    "i cannot assist with",
    "i'm unable to help",
    "i am unable to help",
    "as an ai",
];

fn is_refusal(text: &str) -> bool {
    let t = text.trim();
    if t.chars().count() > REFUSAL_MAX_CHARS {
        return false;
    }
    let t = t.to_lowercase().replace(['\u{2019}', '\u{2018}'], "'");
    REFUSAL_OPENINGS.iter().any(|p| t.starts_with(p))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn facts(text: &str) -> AnswerFacts<'_> {
        AnswerFacts {
            text,
            finish_reason: Some("stop"),
            tool_call: false,
            wants_json: false,
        }
    }

    #[test]
    fn each_check_catches_its_case_and_passes_a_good_answer() {
        let all = ALL_CHECKS;
        assert_eq!(first_failed(&all, &facts("")), Some(AnswerCheck::Empty));
        assert_eq!(
            first_failed(&all, &facts(" \n\t")),
            Some(AnswerCheck::Empty)
        );
        let refusal = "I’m sorry, but I can’t help with that request.";
        assert_eq!(
            first_failed(&all, &facts(refusal)),
            Some(AnswerCheck::Refusal)
        );
        let cut = AnswerFacts {
            finish_reason: Some("length"),
            ..facts("The answer is")
        };
        assert_eq!(first_failed(&all, &cut), Some(AnswerCheck::Truncated));
        let not_json = AnswerFacts {
            wants_json: true,
            ..facts("Sure! {\"a\": 1}")
        };
        assert_eq!(
            first_failed(&all, &not_json),
            Some(AnswerCheck::InvalidJson)
        );
        let fenced = AnswerFacts {
            wants_json: true,
            ..facts("```json\n{\"a\": 1}\n```")
        };
        assert_eq!(first_failed(&all, &fenced), None);
        assert_eq!(first_failed(&all, &facts("Paris.")), None);
    }

    #[test]
    fn long_answers_tool_calls_and_disabled_checks_pass() {
        let long = format!(
            "I can't help with the first part, but {}",
            "here is more. ".repeat(40)
        );
        assert_eq!(first_failed(&ALL_CHECKS, &facts(&long)), None);
        let tools = AnswerFacts {
            tool_call: true,
            ..facts("")
        };
        assert_eq!(first_failed(&ALL_CHECKS, &tools), None);
        assert_eq!(first_failed(&[AnswerCheck::Truncated], &facts("")), None);
    }

    #[test]
    fn json_is_wanted_for_json_object_and_json_schema_only() {
        let f = |t: &str| serde_json::json!({"type": t});
        assert!(wants_json(Some(&f("json_object"))));
        assert!(wants_json(Some(&f("json_schema"))));
        assert!(!wants_json(Some(&f("text"))));
        assert!(!wants_json(None));
    }
}
