//! Self-consistency: how much m sampled answers agree.

use std::collections::BTreeMap;

/// Agreement among sampled answers after normalisation.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct SelfConsistency {
    /// The most frequent normalised answer (ties: the one sampled first).
    pub majority_answer: String,
    /// Share of samples that agree with the majority, in (0, 1]; the confidence.
    pub agreement: f64,
    /// Shannon entropy (nats) of the answer distribution; 0 when all agree.
    pub entropy: f64,
    /// Number of distinct normalised answers.
    pub distinct: usize,
    /// Number of samples.
    pub samples: usize,
}

/// SQuAD-style normalisation: lower case, no punctuation or articles, single spaces.
pub fn normalise_answer(text: &str) -> String {
    let lowered: String = text
        .to_lowercase()
        .chars()
        .map(|c| {
            if c.is_alphanumeric() || c.is_whitespace() {
                c
            } else {
                ' '
            }
        })
        .collect();
    lowered
        .split_whitespace()
        .filter(|w| !matches!(*w, "a" | "an" | "the"))
        .collect::<Vec<_>>()
        .join(" ")
}

impl SelfConsistency {
    /// Agreement of `answers` under `normalise` (task-aware: option letter, final number, ...).
    /// `None` for no answers.
    pub fn measure(answers: &[String], normalise: impl Fn(&str) -> String) -> Option<Self> {
        if answers.is_empty() {
            return None;
        }
        let mut counts: BTreeMap<String, (usize, usize)> = BTreeMap::new();
        for (i, a) in answers.iter().enumerate() {
            counts.entry(normalise(a)).or_insert((0, i)).0 += 1;
        }
        let (majority_answer, (top, _)) = counts
            .iter()
            .max_by(|a, b| a.1.0.cmp(&b.1.0).then(b.1.1.cmp(&a.1.1)))
            .map(|(k, v)| (k.clone(), *v))?;
        let n = answers.len() as f64;
        let entropy = counts
            .values()
            .map(|(c, _)| {
                let p = *c as f64 / n;
                -p * p.ln()
            })
            .sum::<f64>()
            .max(0.0);
        Some(Self {
            majority_answer,
            agreement: top as f64 / n,
            entropy,
            distinct: counts.len(),
            samples: answers.len(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn majority_agreement_and_entropy() {
        let answers: Vec<String> = ["The Paris.", "paris", "Lyon", "PARIS"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        let sc = SelfConsistency::measure(&answers, normalise_answer).unwrap();
        assert_eq!(sc.majority_answer, "paris");
        assert_eq!(sc.agreement, 0.75);
        assert_eq!(sc.distinct, 2);
        let want = -(0.75f64 * 0.75f64.ln() + 0.25 * 0.25f64.ln());
        assert!((sc.entropy - want).abs() < 1e-12);
        let same = vec!["x".to_string(); 3];
        assert_eq!(
            SelfConsistency::measure(&same, normalise_answer)
                .unwrap()
                .entropy,
            0.0
        );
        assert!(SelfConsistency::measure(&[], normalise_answer).is_none());
    }

    #[test]
    fn ties_go_to_the_first_sampled() {
        let answers: Vec<String> = ["b", "a", "a", "b"].iter().map(|s| s.to_string()).collect();
        let sc = SelfConsistency::measure(&answers, normalise_answer).unwrap();
        assert_eq!(sc.majority_answer, "b");
        assert_eq!(sc.agreement, 0.5);
    }
}
