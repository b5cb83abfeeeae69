//! Datasets: LLMRouter query JSONL in, training rows JSONL in and out.
//!
//! A bad line is an error naming the file, line and field. Writes go to a temporary file
//! that is renamed over the target, so a crash never leaves a half-written file.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use serde_json::Value;

use automix_llm::Usage;

use crate::config::VerifierSignal;
use crate::error::{AutomixError, Result};

/// One query (LLMRouter's query JSONL).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct QueryRow {
    /// Stable id: a hash of task and query text.
    pub id: String,
    /// The task, e.g. `mmlu`.
    pub task_name: String,
    /// The question.
    pub query: String,
    /// The reference answer, as text.
    pub ground_truth: Option<String>,
    /// The metric name (`em_mc`, `f1_score`, `GSM8K`, ...).
    pub metric: Option<String>,
    /// Options as (label, text), for multiple choice.
    pub choices: Vec<(String, String)>,
    /// LLMRouter's task id, if any.
    pub task_id: Option<String>,
    /// Grounding context, if any.
    pub context: Option<String>,
}

/// FNV-1a, 64 bit: a stable, dependency-free id hash.
pub(crate) fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// The id of a query: `<task>-<16 hex digits>`.
pub fn query_id(task_name: &str, query: &str) -> String {
    let mut bytes = task_name.as_bytes().to_vec();
    bytes.push(0);
    bytes.extend_from_slice(query.as_bytes());
    format!("{task_name}-{:016x}", fnv1a(&bytes))
}

fn text_of(value: &Value) -> Option<String> {
    match value {
        Value::Null => None,
        Value::String(s) if s == "None" => None,
        Value::String(s) => Some(s.clone()),
        other => Some(other.to_string()),
    }
}

/// Parses a query JSONL line (already JSON) into a [`QueryRow`]; errors name the field.
pub fn query_from_json(value: &Value) -> std::result::Result<QueryRow, String> {
    let field = |name: &str| value.get(name).filter(|v| !v.is_null());
    let string = |name: &str| -> std::result::Result<String, String> {
        match field(name) {
            Some(Value::String(s)) => Ok(s.clone()),
            Some(other) => Err(format!("field `{name}`: expected a string, got {other}")),
            None => Err(format!("field `{name}` is missing")),
        }
    };
    let task_name = string("task_name")?;
    let query = string("query")?;
    let choices = match field("choices") {
        None => Vec::new(),
        Some(v) => parse_choices(v).map_err(|e| format!("field `choices`: {e}"))?,
    };
    Ok(QueryRow {
        id: query_id(&task_name, &query),
        ground_truth: field("ground_truth").and_then(text_of),
        metric: field("metric").and_then(text_of),
        task_id: field("task_id").and_then(text_of),
        context: field("context").and_then(text_of),
        choices,
        task_name,
        query,
    })
}

/// Options from `choices`: JSON or a Python-literal string; a dict with `text` and `label`
/// or `labels`, or a plain list (labelled A, B, C, ...).
pub fn parse_choices(value: &Value) -> std::result::Result<Vec<(String, String)>, String> {
    let parsed;
    let value = match value {
        Value::String(s) if s.trim() == "None" || s.trim().is_empty() => return Ok(Vec::new()),
        Value::String(s) => {
            parsed = parse_python_literal(s)?;
            &parsed
        }
        other => other,
    };
    let texts: Vec<String> = match value {
        Value::Array(items) => items.iter().filter_map(text_of).collect(),
        Value::Object(map) => {
            let texts = map
                .get("text")
                .ok_or("a dict of choices needs a `text` list")?;
            let Value::Array(texts) = texts else {
                return Err("`text` must be a list".into());
            };
            let texts: Vec<String> = texts.iter().filter_map(text_of).collect();
            if let Some(Value::Array(labels)) = map.get("label").or_else(|| map.get("labels")) {
                if labels.len() != texts.len() {
                    return Err(format!("{} labels for {} texts", labels.len(), texts.len()));
                }
                return Ok(labels.iter().filter_map(text_of).zip(texts).collect());
            }
            texts
        }
        Value::Null => return Ok(Vec::new()),
        other => return Err(format!("expected a list or a dict, got {other}")),
    };
    Ok(texts
        .into_iter()
        .enumerate()
        .map(|(i, t)| (option_label(i), t))
        .collect())
}

/// A, B, ..., Z, then AA, AB, ...
fn option_label(i: usize) -> String {
    let letters = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ";
    if i < 26 {
        (letters[i] as char).to_string()
    } else {
        format!("{}{}", option_label(i / 26 - 1), letters[i % 26] as char)
    }
}

/// Parses a Python literal (str, list, tuple, dict, None/True/False, numbers) into JSON.
pub fn parse_python_literal(text: &str) -> std::result::Result<Value, String> {
    let chars: Vec<char> = text.chars().collect();
    let mut p = PyParser { s: &chars, i: 0 };
    let v = p.value()?;
    p.ws();
    if p.i != chars.len() {
        return Err(format!("unexpected text at character {}", p.i + 1));
    }
    Ok(v)
}

struct PyParser<'a> {
    s: &'a [char],
    i: usize,
}

impl PyParser<'_> {
    fn ws(&mut self) {
        while self.s.get(self.i).is_some_and(|c| c.is_whitespace()) {
            self.i += 1;
        }
    }

    fn err<T>(&self, what: &str) -> std::result::Result<T, String> {
        Err(format!("{what} at character {}", self.i + 1))
    }

    fn value(&mut self) -> std::result::Result<Value, String> {
        self.ws();
        match self.s.get(self.i) {
            Some('\'' | '"') => self.string().map(Value::String),
            Some('[') => self.seq(']'),
            Some('(') => self.seq(')'),
            Some('{') => self.dict(),
            Some(_) => self.atom(),
            None => self.err("unexpected end of literal"),
        }
    }

    fn string(&mut self) -> std::result::Result<String, String> {
        let quote = self.s[self.i];
        self.i += 1;
        let mut out = String::new();
        while let Some(&c) = self.s.get(self.i) {
            self.i += 1;
            match c {
                '\\' => {
                    let Some(&e) = self.s.get(self.i) else {
                        return self.err("unfinished escape");
                    };
                    self.i += 1;
                    out.push(match e {
                        'n' => '\n',
                        't' => '\t',
                        'r' => '\r',
                        '0' => '\0',
                        other => other,
                    });
                }
                c if c == quote => return Ok(out),
                c => out.push(c),
            }
        }
        self.err("unterminated string")
    }

    fn seq(&mut self, close: char) -> std::result::Result<Value, String> {
        self.i += 1;
        let mut items = Vec::new();
        loop {
            self.ws();
            if self.s.get(self.i) == Some(&close) {
                self.i += 1;
                return Ok(Value::Array(items));
            }
            items.push(self.value()?);
            self.ws();
            match self.s.get(self.i) {
                Some(',') => self.i += 1,
                Some(c) if *c == close => {}
                _ => return self.err(&format!("expected `,` or `{close}`")),
            }
        }
    }

    fn dict(&mut self) -> std::result::Result<Value, String> {
        self.i += 1;
        let mut map = serde_json::Map::new();
        loop {
            self.ws();
            if self.s.get(self.i) == Some(&'}') {
                self.i += 1;
                return Ok(Value::Object(map));
            }
            let key = match self.value()? {
                Value::String(s) => s,
                other => other.to_string(),
            };
            self.ws();
            if self.s.get(self.i) != Some(&':') {
                return self.err("expected `:`");
            }
            self.i += 1;
            let v = self.value()?;
            map.insert(key, v);
            self.ws();
            match self.s.get(self.i) {
                Some(',') => self.i += 1,
                Some('}') => {}
                _ => return self.err("expected `,` or `}`"),
            }
        }
    }

    fn atom(&mut self) -> std::result::Result<Value, String> {
        let start = self.i;
        while self
            .s
            .get(self.i)
            .is_some_and(|c| c.is_alphanumeric() || matches!(c, '.' | '-' | '+' | '_'))
        {
            self.i += 1;
        }
        let word: String = self.s[start..self.i].iter().collect();
        match word.as_str() {
            "None" => Ok(Value::Null),
            "True" => Ok(Value::Bool(true)),
            "False" => Ok(Value::Bool(false)),
            "" => self.err("unexpected character"),
            w => match w.parse::<f64>() {
                Ok(n) => Ok(serde_json::Number::from_f64(n).map_or(Value::Null, Value::Number)),
                Err(_) => {
                    self.i = start;
                    self.err(&format!("unknown literal {w:?}"))
                }
            },
        }
    }
}

/// Reads JSONL, parsing each non-blank line with `parse`; errors name file and line.
pub fn read_jsonl<T>(
    path: &Path,
    parse: impl Fn(Value) -> std::result::Result<T, String>,
) -> Result<Vec<T>> {
    let text = std::fs::read_to_string(path).map_err(|e| AutomixError::io(path, e))?;
    let mut rows = Vec::new();
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let data_error = |message: String| AutomixError::Data {
            file: path.to_owned(),
            line: i + 1,
            message,
        };
        let value: Value =
            serde_json::from_str(line).map_err(|e| data_error(format!("invalid JSON: {e}")))?;
        rows.push(parse(value).map_err(data_error)?);
    }
    Ok(rows)
}

/// Reads a query JSONL file.
pub fn read_queries(path: &Path) -> Result<Vec<QueryRow>> {
    read_jsonl(path, |v| query_from_json(&v))
}

/// Writes `lines` to `path` via a temporary file and a rename (never half-written).
pub fn write_atomic(path: &Path, contents: &[u8]) -> Result<()> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(|e| AutomixError::io(dir, e))?;
    }
    let tmp: PathBuf = path.with_extension(format!(
        "{}.tmp{}",
        path.extension().and_then(|e| e.to_str()).unwrap_or(""),
        std::process::id()
    ));
    let write = || -> std::io::Result<()> {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(contents)?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)
    };
    write().map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        AutomixError::io(path, e)
    })
}

/// Writes rows as JSONL atomically.
pub fn write_jsonl<T: Serialize>(path: &Path, rows: &[T]) -> Result<()> {
    let mut out = Vec::new();
    for row in rows {
        serde_json::to_writer(&mut out, row).map_err(|source| AutomixError::Serialise {
            what: "a row",
            source,
        })?;
        out.push(b'\n');
    }
    write_atomic(path, &out)
}

/// Token usage as stored in rows.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Tokens {
    /// Prompt tokens.
    pub prompt: u64,
    /// Completion tokens.
    pub completion: u64,
}

impl From<Usage> for Tokens {
    fn from(u: Usage) -> Self {
        Self {
            prompt: u.prompt_tokens,
            completion: u.completion_tokens,
        }
    }
}

impl From<Tokens> for Usage {
    fn from(t: Tokens) -> Self {
        Usage {
            prompt_tokens: t.prompt,
            completion_tokens: t.completion,
        }
    }
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

/// What one verification of a model's answer found.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct VerificationRecord {
    /// k: samples drawn.
    pub samples: u32,
    /// Samples judged correct.
    pub correct: u32,
    /// Samples judged incorrect.
    pub incorrect: u32,
    /// Samples with no verdict.
    pub unparsed: u32,
    /// correct / parsed; `null` = unknown.
    pub p_ver: Option<f64>,
    /// P(correct) from the verdict's logprobs; `null` = unknown.
    pub logprob_p: Option<f64>,
    /// `logprobs`, or `fallback: <reason>` when sampling stood in.
    pub logprob_source: String,
    /// Share of the modal answer among `answer_samples` sampled answers; `null` = not
    /// sampled (rows collected before this signal existed load as `null`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub answer_consistency: Option<f64>,
    /// Entropy (nats) of those answers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub answer_entropy: Option<f64>,
    /// Answers sampled for `answer_consistency`.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub answer_samples: u32,
    /// Signals without a field of their own, by name (`answer_logprob`); old rows have
    /// none.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub signals: BTreeMap<String, f64>,
    /// Tokens spent on verification (samples and logprob request).
    pub tokens: Tokens,
    /// Money spent on verification (llm_data prices).
    pub cost: f64,
    /// Money each measured signal's own calls cost, by signal name (`collect` and the
    /// router record it; rows collected before it have none, see [`Self::cost_of`]).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub signal_costs: BTreeMap<String, f64>,
}

impl VerificationRecord {
    /// What routing on `signals` pays for this verification: their own calls, where the
    /// record breaks its cost down by signal (a signal it does not list was not measured,
    /// so nothing was spent on it). A record without the breakdown (collected before it
    /// existed) charges its whole `cost` whatever it routes on, as it always did.
    pub fn cost_of(&self, signals: &[VerifierSignal]) -> f64 {
        if self.signal_costs.is_empty() {
            return self.cost;
        }
        signals
            .iter()
            .filter_map(|s| self.signal_costs.get(s.name()))
            .sum()
    }
}

/// How a training priced its verified runs: each signal at its own calls, or, for runs
/// collected before the per-signal breakdown, at their whole verification cost
/// ([`VerificationRecord::cost_of`]). Reported so a file mixing the two says so.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct VerificationPricing {
    /// Verified runs whose record breaks its cost down by signal.
    pub per_signal: usize,
    /// Verified runs charged their whole cost, whatever the policy reads.
    pub whole: usize,
}

impl VerificationPricing {
    /// The pricing of the verified ones among `runs`.
    pub fn of<'a>(runs: impl IntoIterator<Item = &'a ModelRun>) -> Self {
        let mut out = Self::default();
        for v in runs.into_iter().filter_map(|r| r.verification.as_ref()) {
            if v.signal_costs.is_empty() {
                out.whole += 1;
            } else {
                out.per_signal += 1;
            }
        }
        out
    }

    /// Whether some runs were priced each way: the same signal then costs different
    /// amounts on different rows.
    pub fn is_mixed(&self) -> bool {
        self.per_signal > 0 && self.whole > 0
    }
}

/// One model's answer to a query in a training row.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ModelRun {
    /// llm_data name.
    pub model: String,
    /// The raw answer.
    pub answer: String,
    /// The answer as the metric reads it (option letter, final number, ...).
    pub normalised_answer: String,
    /// Task metric score in [0, 1].
    pub score: f64,
    /// Tokens of the answer.
    pub tokens: Tokens,
    /// Money of the answer (llm_data prices).
    pub cost: f64,
    /// Latency of the answer call.
    pub latency_ms: u64,
    /// The model's self-verification of this answer (absent for the last model).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub verification: Option<VerificationRecord>,
}

impl ModelRun {
    /// What verifying this answer on `signals` cost ([`VerificationRecord::cost_of`]; 0
    /// for an answer that was not verified).
    pub fn verification_cost(&self, signals: &[VerifierSignal]) -> f64 {
        self.verification
            .as_ref()
            .map_or(0.0, |v| v.cost_of(signals))
    }
}

/// One training row: every model's answer, score, usage and verification for a query.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct TrainingRow {
    /// [`query_id`].
    pub id: String,
    /// Task name.
    pub task_name: String,
    /// Metric used to score.
    pub metric: String,
    /// The question.
    pub query: String,
    /// The reference answer.
    pub ground_truth: String,
    /// `train` or `test`.
    pub split: String,
    /// One entry per model, cheapest first.
    pub models: Vec<ModelRun>,
    /// Where the scores came from: absent (`ground_truth`, rows collected from a labelled
    /// query set), or, without ground truth, [`LabelSource::Agreement`],
    /// [`LabelSource::Judge`] or [`LabelSource::Feedback`].
    #[serde(default, skip_serializing_if = "LabelSource::is_ground_truth")]
    pub label_source: LabelSource,
}

/// Where a row's scores came from.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LabelSource {
    /// Against the query's ground truth.
    #[default]
    GroundTruth,
    /// Against the most expensive model's answer (which scores 1): labels without ground
    /// truth, as good as true ones where the large model really is better, optimistic for
    /// the large model where it is not.
    Agreement,
    /// A judge model's verdict of equivalence with the most expensive model's answer
    /// (which scores 1).
    Judge,
    /// A shadow row corrected by the client's feedback on the answer it got: that model's
    /// score is the client's; when it was the most expensive model's (the reference), every
    /// score is scaled by it (agreeing with a wrong reference is not worth 1). Such a row
    /// replaces the earlier row with its id ([`settle_feedback`]).
    Feedback,
}

impl LabelSource {
    /// For serde: rows with true labels do not write the field (older rows had none).
    pub fn is_ground_truth(&self) -> bool {
        *self == Self::GroundTruth
    }
}

impl TrainingRow {
    /// The run of `model`.
    pub fn run(&self, model: &str) -> Option<&ModelRun> {
        self.models.iter().find(|m| m.model == model)
    }
}

/// Reads training rows; a malformed row names file, line and field. A feedback correction
/// replaces the earlier row with its id ([`settle_feedback`]).
pub fn read_training_rows(path: &Path) -> Result<Vec<TrainingRow>> {
    read_jsonl(path, |v| {
        serde_json::from_value(v).map_err(|e| e.to_string())
    })
    .map(settle_feedback)
}

/// Rows with each [`LabelSource::Feedback`] row in the place of the last earlier row with
/// its id (shadow rows are appended, so a client's later score arrives as a second row); a
/// correction with no earlier row stays as it is.
pub fn settle_feedback(rows: Vec<TrainingRow>) -> Vec<TrainingRow> {
    let mut out: Vec<TrainingRow> = Vec::with_capacity(rows.len());
    let mut at: std::collections::HashMap<String, usize> = std::collections::HashMap::new();
    for row in rows {
        match at.get(&row.id) {
            Some(&i) if row.label_source == LabelSource::Feedback => out[i] = row,
            _ => {
                at.insert(row.id.clone(), out.len());
                out.push(row);
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn choices_in_every_shape() {
        let labels = json!("{'text': ['1', '2', '3'], 'labels': ['A', 'B', 'C']}");
        assert_eq!(
            parse_choices(&labels).unwrap(),
            vec![
                ("A".into(), "1".into()),
                ("B".into(), "2".into()),
                ("C".into(), "3".into())
            ]
        );
        let label = json!("{'label': ['A', 'B'], 'text': [\"it's\", 'x']}");
        assert_eq!(
            parse_choices(&label).unwrap()[0],
            ("A".into(), "it's".into())
        );
        let list = json!("['$100', '$150']");
        assert_eq!(
            parse_choices(&list).unwrap()[1],
            ("B".into(), "$150".into())
        );
        let as_json = json!({"text": ["a"], "label": ["Z"]});
        assert_eq!(
            parse_choices(&as_json).unwrap(),
            vec![("Z".into(), "a".into())]
        );
        assert!(parse_choices(&json!("None")).unwrap().is_empty());
        assert!(
            parse_choices(&json!("['a', "))
                .unwrap_err()
                .contains("character")
        );
    }

    #[test]
    fn python_literals() {
        assert_eq!(
            parse_python_literal("{'a': (1, None, True), \"b\": 'x\\'y'}").unwrap(),
            json!({"a": [1.0, null, true], "b": "x'y"})
        );
        assert!(parse_python_literal("[1, 2] x").is_err());
    }

    #[test]
    fn labels_past_z() {
        assert_eq!(option_label(0), "A");
        assert_eq!(option_label(25), "Z");
        assert_eq!(option_label(26), "AA");
    }

    #[test]
    fn query_rows_name_the_bad_field() {
        let err = query_from_json(&json!({"task_name": "t"})).unwrap_err();
        assert_eq!(err, "field `query` is missing");
        let err = query_from_json(&json!({"task_name": "t", "query": 3})).unwrap_err();
        assert_eq!(err, "field `query`: expected a string, got 3");
        let ok = query_from_json(
            &json!({"task_name": "t", "query": "q", "ground_truth": 5, "task_id": "None"}),
        )
        .unwrap();
        assert_eq!(ok.ground_truth.as_deref(), Some("5"));
        assert_eq!(ok.task_id, None);
        assert_eq!(ok.id, query_id("t", "q"));
    }
}
