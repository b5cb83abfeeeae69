//! Verdict parsing: what a verifier sample says about the answer.
//!
//! Only the model's continuation is parsed, and only up to the first line that starts a new
//! few-shot block (`Question:`, `Context:`, `AI generated answer:`, `---`): small models
//! often run on and invent further examples, whose verdicts are not about our answer. A
//! continuation that *starts* with such a block has no verdict at all.

/// The verifier's judgement of one sample.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    /// The answer is judged correct.
    Correct,
    /// The answer is judged incorrect.
    Incorrect,
}

/// Line starts that mean the model began echoing or inventing a few-shot example.
const ECHO_MARKERS: &[&str] = &[
    "question",
    "context",
    "ai generated answer",
    "options",
    "---",
    "example",
    "problem",
];

const POSITIVE: &[&str] = &["correct", "true", "yes", "right", "accurate", "valid"];
const NEGATIVE: &[&str] = &[
    "incorrect",
    "false",
    "no",
    "wrong",
    "inaccurate",
    "invalid",
    "not",
    "isnt",
];
/// Words that flip the polarity of a following verdict word ("is not correct").
const NEGATORS: &[&str] = &["not", "isnt", "never", "hardly"];

/// Lower-cases and splits into alphanumeric words ("isn't" becomes "isnt").
fn words(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut current = String::new();
    for c in text.chars() {
        if c.is_alphanumeric() {
            current.extend(c.to_lowercase());
        } else if c == '\'' || c == '’' {
            // keep contractions together
        } else if !current.is_empty() {
            out.push(std::mem::take(&mut current));
        }
    }
    if !current.is_empty() {
        out.push(current);
    }
    out
}

/// The part of a continuation that belongs to this verdict: up to the first echoed block.
pub fn own_continuation(continuation: &str) -> &str {
    let mut end = continuation.len();
    let mut offset = 0;
    for line in continuation.split_inclusive('\n') {
        let normalised: String = line
            .trim_start_matches(|c: char| c.is_whitespace() || matches!(c, '#' | '*' | '>'))
            .to_lowercase();
        if ECHO_MARKERS
            .iter()
            .any(|m| normalised.starts_with(m) && (*m == "---" || is_header(&normalised, m)))
        {
            end = offset;
            break;
        }
        offset += line.len();
    }
    &continuation[..end]
}

/// `marker` begins a `Header:` line (allowing "Question 3:" style numbering).
fn is_header(line: &str, marker: &str) -> bool {
    let rest = &line[marker.len()..];
    let rest = rest.trim_start_matches(|c: char| c.is_ascii_digit() || c.is_whitespace());
    rest.starts_with(':')
}

/// Parses one verifier continuation. `None` when it states no verdict.
///
/// The first verdict word decides; a negator within the two preceding words flips it
/// ("is not correct"); a word offered as an alternative ("Correct or Incorrect") is skipped.
pub fn parse_verdict(continuation: &str) -> Option<Verdict> {
    let words = words(own_continuation(continuation));
    for (i, word) in words.iter().enumerate() {
        let polarity = if POSITIVE.contains(&word.as_str()) {
            Verdict::Correct
        } else if NEGATIVE.contains(&word.as_str()) {
            if NEGATORS.contains(&word.as_str()) {
                // "not" alone is only a verdict when a verdict word follows it.
                continue;
            }
            Verdict::Incorrect
        } else {
            continue;
        };
        let offered_as_choice = words.get(i + 1).is_some_and(|w| w == "or")
            || (i > 0 && words[i - 1] == "or")
            || (i > 0 && words[i - 1] == "either");
        if offered_as_choice {
            continue;
        }
        let negated = words[i.saturating_sub(2)..i]
            .iter()
            .any(|w| NEGATORS.contains(&w.as_str()));
        return Some(match (polarity, negated) {
            (v, false) => v,
            (Verdict::Correct, true) => Verdict::Incorrect,
            (Verdict::Incorrect, true) => Verdict::Correct,
        });
    }
    None
}

/// Counts of verdicts over k samples.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct VerdictTally {
    /// Samples judged correct.
    pub correct: u32,
    /// Samples judged incorrect.
    pub incorrect: u32,
    /// Samples with no parseable verdict.
    pub unparsed: u32,
}

impl VerdictTally {
    /// Tallies parsed verdicts over `samples`.
    pub fn from_samples<'a>(samples: impl IntoIterator<Item = &'a str>) -> Self {
        let mut tally = Self::default();
        for s in samples {
            match parse_verdict(s) {
                Some(Verdict::Correct) => tally.correct += 1,
                Some(Verdict::Incorrect) => tally.incorrect += 1,
                None => tally.unparsed += 1,
            }
        }
        tally
    }

    /// Samples with a verdict.
    pub fn parsed(&self) -> u32 {
        self.correct + self.incorrect
    }

    /// p_ver = correct / parsed; `None` ("unknown") when nothing parsed, never 0.
    pub fn p_ver(&self) -> Option<f64> {
        (self.parsed() > 0).then(|| f64::from(self.correct) / f64::from(self.parsed()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use Verdict::*;

    #[test]
    fn accepts_the_usual_forms() {
        let cases = [
            ("Correct", Some(Correct)),
            (" correct.", Some(Correct)),
            ("CORRECT!", Some(Correct)),
            ("Incorrect. Canberra.", Some(Incorrect)),
            ("**Incorrect**", Some(Incorrect)),
            ("True", Some(Correct)),
            ("false", Some(Incorrect)),
            ("Yes, that is right.", Some(Correct)),
            ("No.", Some(Incorrect)),
            ("The AI generated answer is correct.", Some(Correct)),
            ("The answer is not correct.", Some(Incorrect)),
            ("The answer isn't correct", Some(Incorrect)),
            ("The answer is not incorrect", Some(Correct)),
            ("It is wrong", Some(Incorrect)),
            ("Correct or Incorrect? Incorrect", Some(Incorrect)),
            ("", None),
            ("I am unsure.", None),
            ("Not sure", None),
        ];
        for (text, want) in cases {
            assert_eq!(parse_verdict(text), want, "{text:?}");
        }
    }

    #[test]
    fn an_echoed_few_shot_example_is_not_a_verdict() {
        let echo =
            "Question: How many legs does a spider have?\nAI generated answer: 8\nVerdict: Correct";
        assert_eq!(parse_verdict(echo), None);
        let run_on =
            "Incorrect.\n---\nQuestion: What is 2+2?\nAI generated answer: 4\nVerdict: Correct";
        assert_eq!(parse_verdict(run_on), Some(Incorrect));
        let run_on = "\nQuestion: x\nVerdict: Correct";
        assert_eq!(parse_verdict(run_on), None);
    }

    #[test]
    fn tally_reports_unknown_not_zero() {
        let t = VerdictTally::from_samples(["Correct", "Incorrect", "??", "correct"]);
        assert_eq!(
            t,
            VerdictTally {
                correct: 2,
                incorrect: 1,
                unparsed: 1
            }
        );
        assert_eq!(t.p_ver(), Some(2.0 / 3.0));
        assert_eq!(VerdictTally::from_samples(["??", ""]).p_ver(), None);
    }
}
