//! Prompt templates, loaded from files like those in `prompts/` (also reachable as
//! `configs/prompts/` at the workspace root).
//!
//! A template file has a `[system]` section (optional) and a `[user]` section. Placeholders
//! are `{{name}}`; double braces keep LaTeX such as `\boxed{x}` literal. Every placeholder
//! is checked at load time, so a typo fails at start with the file and line, not mid-run.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use automix_llm::ChatMessage;

/// Why a template could not be loaded.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum TemplateError {
    /// The file could not be read.
    #[error("{file}: cannot read prompt template: {reason}")]
    Read {
        /// The template file.
        file: String,
        /// The IO error.
        reason: String,
    },
    /// The file is malformed at a line.
    #[error("{file}:{line}: {reason}")]
    Syntax {
        /// The template file.
        file: String,
        /// 1-based line number.
        line: usize,
        /// What is wrong.
        reason: String,
    },
    /// A placeholder the template needs is absent.
    #[error("{file}: template must contain the placeholder {{{{{placeholder}}}}}")]
    MissingPlaceholder {
        /// The template file.
        file: String,
        /// The placeholder name.
        placeholder: String,
    },
}

/// One chat prompt template: optional system text and a user text with placeholders.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PromptTemplate {
    /// Where it came from (file path or a builtin name), for error messages.
    pub source: String,
    system: Option<String>,
    user: String,
}

impl PromptTemplate {
    /// Parses template text. `allowed` lists the placeholders it may use, `required` those it must.
    pub fn parse(
        source: &str,
        text: &str,
        allowed: &[&str],
        required: &[&str],
    ) -> Result<Self, TemplateError> {
        let syntax = |line: usize, reason: String| TemplateError::Syntax {
            file: source.to_owned(),
            line,
            reason,
        };
        let mut system: Option<Vec<&str>> = None;
        let mut user: Option<Vec<&str>> = None;
        let mut current: Option<&mut Vec<&str>> = None;
        let mut used = Vec::new();
        for (i, line) in text.lines().enumerate() {
            let number = i + 1;
            match line.trim_end() {
                "[system]" => {
                    if system.is_some() {
                        return Err(syntax(number, "second [system] section".into()));
                    }
                    current = Some(system.insert(Vec::new()));
                    continue;
                }
                "[user]" => {
                    if user.is_some() {
                        return Err(syntax(number, "second [user] section".into()));
                    }
                    current = Some(user.insert(Vec::new()));
                    continue;
                }
                _ => {}
            }
            let Some(section) = current.as_mut() else {
                if line.trim().is_empty() {
                    continue;
                }
                return Err(syntax(
                    number,
                    "text before the first [system] or [user] section header".into(),
                ));
            };
            for name in placeholders(line).map_err(|r| syntax(number, r))? {
                if !allowed.contains(&name) {
                    return Err(syntax(
                        number,
                        format!(
                            "unknown placeholder {{{{{name}}}}}; this template may use {}",
                            allowed
                                .iter()
                                .map(|a| format!("{{{{{a}}}}}"))
                                .collect::<Vec<_>>()
                                .join(", ")
                        ),
                    ));
                }
                used.push(name.to_owned());
            }
            section.push(line);
        }
        let Some(user) = user else {
            return Err(syntax(
                text.lines().count().max(1),
                "no [user] section".into(),
            ));
        };
        for name in required {
            if !used.iter().any(|u| u == name) {
                return Err(TemplateError::MissingPlaceholder {
                    file: source.to_owned(),
                    placeholder: (*name).to_owned(),
                });
            }
        }
        let join = |lines: Vec<&str>| lines.join("\n").trim().to_owned();
        Ok(Self {
            source: source.to_owned(),
            system: system.map(join).filter(|s| !s.is_empty()),
            user: join(user),
        })
    }

    /// Fills the placeholders; a placeholder without a value renders empty.
    pub fn render(&self, values: &BTreeMap<&str, &str>) -> Vec<ChatMessage> {
        let mut messages = Vec::with_capacity(2);
        if let Some(system) = &self.system {
            messages.push(ChatMessage::system(fill(system, values)));
        }
        messages.push(ChatMessage::user(fill(&self.user, values)));
        messages
    }
}

/// The `{{name}}` placeholders in one line.
fn placeholders(line: &str) -> Result<Vec<&str>, String> {
    let mut found = Vec::new();
    let mut rest = line;
    while let Some(start) = rest.find("{{") {
        let after = &rest[start + 2..];
        let end = after
            .find("}}")
            .ok_or_else(|| "unclosed placeholder: `{{` without `}}`".to_owned())?;
        let name = &after[..end];
        if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
            return Err(format!("bad placeholder name {name:?}"));
        }
        found.push(name);
        rest = &after[end + 2..];
    }
    Ok(found)
}

fn fill(text: &str, values: &BTreeMap<&str, &str>) -> String {
    let mut out = String::with_capacity(text.len() + 256);
    let mut rest = text;
    while let Some(start) = rest.find("{{") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        match after.find("}}") {
            Some(end) => {
                out.push_str(values.get(&after[..end]).copied().unwrap_or(""));
                rest = &after[end + 2..];
            }
            None => {
                out.push_str(&rest[start..]);
                rest = "";
            }
        }
    }
    out.push_str(rest);
    out
}

/// How a task is asked: decides the answer template.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TaskKind {
    /// Options with letters; the answer is a letter.
    MultipleChoice,
    /// A short phrase (QA).
    ShortAnswer,
    /// A math problem with a final number.
    Math,
}

/// The template files, by name (file stem under `configs/prompts/`).
const FILES: &[(&str, &[&str], &[&str])] = &[
    (
        "verify_closed_book",
        &["question", "answer"],
        &["question", "answer"],
    ),
    (
        "verify_with_context",
        &["question", "answer", "context"],
        &["question", "answer", "context"],
    ),
    (
        "answer_multiple_choice",
        &["question", "options"],
        &["question", "options"],
    ),
    ("answer_short", &["question"], &["question"]),
    (
        "answer_with_context",
        &["question", "context"],
        &["question", "context"],
    ),
    ("answer_math", &["question"], &["question"]),
    (
        "judge_equivalence",
        &["question", "reference", "answer"],
        &["reference", "answer"],
    ),
];

const BUILTIN: &[(&str, &str)] = &[
    (
        "verify_closed_book",
        include_str!("../prompts/verify_closed_book.txt"),
    ),
    (
        "verify_with_context",
        include_str!("../prompts/verify_with_context.txt"),
    ),
    (
        "answer_multiple_choice",
        include_str!("../prompts/answer_multiple_choice.txt"),
    ),
    ("answer_short", include_str!("../prompts/answer_short.txt")),
    (
        "answer_with_context",
        include_str!("../prompts/answer_with_context.txt"),
    ),
    ("answer_math", include_str!("../prompts/answer_math.txt")),
    (
        "judge_equivalence",
        include_str!("../prompts/judge_equivalence.txt"),
    ),
];

/// All prompts AutoMix sends: answer prompts per task kind and the two verification prompts.
///
/// Indexed like `FILES`, so every template is always present.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PromptSet {
    templates: Vec<PromptTemplate>,
}

/// What a query looks like to the prompts.
#[derive(Debug, Clone, Copy)]
pub struct QueryText<'a> {
    /// The question.
    pub question: &'a str,
    /// Grounding context, when the row has one.
    pub context: Option<&'a str>,
    /// Options as (label, text) for multiple choice.
    pub options: &'a [(String, String)],
}

impl QueryText<'_> {
    /// The question with its options appended, as the verifier sees it.
    pub fn question_with_options(&self) -> String {
        if self.options.is_empty() {
            return self.question.to_owned();
        }
        format!(
            "{}\nOptions:\n{}",
            self.question,
            options_block(self.options)
        )
    }
}

fn options_block(options: &[(String, String)]) -> String {
    options
        .iter()
        .map(|(label, text)| format!("{label}. {text}"))
        .collect::<Vec<_>>()
        .join("\n")
}

impl PromptSet {
    /// The templates shipped in this crate's `prompts/` (`configs/prompts/`), compiled in.
    pub fn builtin() -> Self {
        let templates = FILES
            .iter()
            .zip(BUILTIN)
            .map(|((name, allowed, required), (_, text))| {
                PromptTemplate::parse(&format!("builtin:{name}"), text, allowed, required)
                    .expect("builtin templates parse (checked by a unit test)")
            })
            .collect();
        Self { templates }
    }

    /// Loads `<dir>/<name>.txt` for every template; a missing file falls back to the builtin.
    pub fn load_dir(dir: &Path) -> Result<Self, TemplateError> {
        let mut set = Self::builtin();
        for (slot, (name, allowed, required)) in set.templates.iter_mut().zip(FILES) {
            let path: PathBuf = dir.join(format!("{name}.txt"));
            if !path.exists() {
                continue;
            }
            let file = path.display().to_string();
            let text = std::fs::read_to_string(&path).map_err(|e| TemplateError::Read {
                file: file.clone(),
                reason: e.to_string(),
            })?;
            *slot = PromptTemplate::parse(&file, &text, allowed, required)?;
        }
        Ok(set)
    }

    fn get(&self, name: &str) -> &PromptTemplate {
        let index = FILES.iter().position(|(n, _, _)| *n == name);
        &self.templates[index.expect("template names are constants from FILES")]
    }

    /// Where the named template came from.
    pub fn source(&self, name: &str) -> Option<&str> {
        let index = FILES.iter().position(|(n, _, _)| *n == name)?;
        Some(self.templates[index].source.as_str())
    }

    /// The messages that ask a model to answer `query`.
    pub fn answer_messages(&self, kind: TaskKind, query: &QueryText<'_>) -> Vec<ChatMessage> {
        let options = options_block(query.options);
        let mut values = BTreeMap::from([("question", query.question), ("options", &options)]);
        let name = match (kind, query.context) {
            (TaskKind::MultipleChoice, _) => "answer_multiple_choice",
            (TaskKind::Math, _) => "answer_math",
            (TaskKind::ShortAnswer, Some(context)) => {
                values.insert("context", context);
                "answer_with_context"
            }
            (TaskKind::ShortAnswer, None) => "answer_short",
        };
        self.get(name).render(&values)
    }

    /// The few-shot messages that ask a judge model whether `answer` means the same as
    /// `reference` (parsed like a verdict: `Correct` = equivalent).
    pub fn judge_messages(
        &self,
        query: &QueryText<'_>,
        reference: &str,
        answer: &str,
    ) -> Vec<ChatMessage> {
        let question = query.question_with_options();
        let values = BTreeMap::from([
            ("question", question.as_str()),
            ("reference", reference),
            ("answer", answer),
        ]);
        self.get("judge_equivalence").render(&values)
    }

    /// The few-shot messages that ask a model whether `answer` to `query` is correct.
    pub fn verify_messages(&self, query: &QueryText<'_>, answer: &str) -> Vec<ChatMessage> {
        let question = query.question_with_options();
        let mut values = BTreeMap::from([("question", question.as_str()), ("answer", answer)]);
        let name = match query.context {
            Some(context) => {
                values.insert("context", context);
                "verify_with_context"
            }
            None => "verify_closed_book",
        };
        self.get(name).render(&values)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builtin_templates_all_parse() {
        for ((name, allowed, required), (file, text)) in FILES.iter().zip(BUILTIN) {
            assert_eq!(name, file);
            PromptTemplate::parse(name, text, allowed, required).unwrap();
        }
        assert_eq!(PromptSet::builtin().templates.len(), FILES.len());
    }

    #[test]
    fn latex_braces_stay_literal() {
        let set = PromptSet::builtin();
        let q = QueryText {
            question: "1+1?",
            context: None,
            options: &[],
        };
        let m = set.answer_messages(TaskKind::Math, &q);
        assert!(m[0].content.contains("\\boxed{number}"));
        assert!(m[1].content.contains("Problem: 1+1?"));
    }

    #[test]
    fn errors_name_file_and_line() {
        let err = PromptTemplate::parse(
            "x.txt",
            "[user]\nQ: {{question}}\nA: {{answr}}",
            &["question", "answer"],
            &["question"],
        )
        .unwrap_err();
        assert_eq!(
            err.to_string(),
            "x.txt:3: unknown placeholder {{answr}}; this template may use {{question}}, {{answer}}"
        );
        let err = PromptTemplate::parse("y.txt", "hello", &["question"], &[]).unwrap_err();
        assert_eq!(
            err.to_string(),
            "y.txt:1: text before the first [system] or [user] section header"
        );
        let err = PromptTemplate::parse("z.txt", "[user]\nno slot", &["question"], &["question"])
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            "z.txt: template must contain the placeholder {{question}}"
        );
        let err =
            PromptTemplate::parse("w.txt", "[user]\n{{question", &["question"], &[]).unwrap_err();
        assert!(err.to_string().starts_with("w.txt:2: unclosed placeholder"));
    }
}
