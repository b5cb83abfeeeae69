//! Few-shot self-verification through the provider trait: k sampled verdicts, or the
//! logprobs of one verdict token.

use std::sync::Arc;

use automix_llm::{ChatProvider, ChatRequest, Choice, LlmError, Usage};

use crate::template::{PromptSet, QueryText};
use crate::verdict::VerdictTally;

/// How verification is run.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct VerifierConfig {
    /// The verifier's model id (by default the answering model's).
    pub model: String,
    /// k: sampled verdicts per answer (`verification_samples`).
    pub samples: u32,
    /// Sampling temperature (`verification_temperature`).
    pub temperature: f32,
    /// Tokens per verdict sample: the verdict word plus a short reason.
    pub max_tokens: u32,
    /// Base seed; sample i uses `seed + i`.
    pub seed: u64,
    /// Alternatives per position asked for in logprob verification.
    pub top_logprobs: u8,
}

impl VerifierConfig {
    /// Defaults for `model`: k = 5 at temperature 0.7, 8 tokens (the prompts put the verdict
    /// first, so 8 tokens hold it and a few words of reason), seed 0, top 10 logprobs.
    pub fn new(model: impl Into<String>) -> Self {
        Self {
            model: model.into(),
            samples: 5,
            temperature: 0.7,
            max_tokens: 8,
            seed: 0,
            top_logprobs: 10,
        }
    }
}

/// What the k-sample verifier found.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct SampledVerification {
    /// Verdict counts, including unparseable samples.
    pub tally: VerdictTally,
    /// p_ver = correct / parsed; `None` = unknown (nothing parsed).
    pub p_ver: Option<f64>,
    /// The raw continuations, in sample order.
    pub samples: Vec<String>,
    /// Tokens spent.
    pub usage: Usage,
    /// HTTP requests made (1 with `n` support, k without).
    pub requests: u32,
}

/// How a logprob verification got its number.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum LogprobSource {
    /// From the verdict token's top logprobs.
    Logprobs {
        /// Index of the token position the verdict was read from.
        position: usize,
    },
    /// The server gave no usable logprobs; k samples were drawn instead.
    FellBackToSampling {
        /// Why the logprobs could not be used.
        reason: String,
        /// The sampling result.
        sampled: SampledVerification,
    },
}

/// What the logprob verifier found.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct LogprobVerification {
    /// P(correct) / (P(correct) + P(incorrect)); `None` = unknown.
    pub p_correct: Option<f64>,
    /// Where the number came from.
    pub source: LogprobSource,
    /// The greedy continuation.
    pub text: String,
    /// Tokens spent, including any fallback sampling.
    pub usage: Usage,
}

/// Verifies answers with a model behind [`ChatProvider`].
#[derive(Clone)]
pub struct Verifier {
    provider: Arc<dyn ChatProvider>,
    prompts: Arc<PromptSet>,
    config: VerifierConfig,
}

impl std::fmt::Debug for Verifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Verifier")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

/// Token positions scanned for the verdict in logprob mode ("Verdict: Correct" puts it third).
const VERDICT_POSITIONS: usize = 6;

impl Verifier {
    /// A verifier calling `provider` with `prompts`.
    pub fn new(
        provider: Arc<dyn ChatProvider>,
        prompts: Arc<PromptSet>,
        config: VerifierConfig,
    ) -> Self {
        Self {
            provider,
            prompts,
            config,
        }
    }

    /// The configuration.
    pub fn config(&self) -> &VerifierConfig {
        &self.config
    }

    fn request(&self, query: &QueryText<'_>, answer: &str) -> ChatRequest {
        ChatRequest {
            temperature: Some(self.config.temperature),
            max_tokens: Some(self.config.max_tokens),
            stop: vec!["---".into(), "\nQuestion:".into()],
            seed: Some(self.config.seed),
            n: self.config.samples.max(1),
            ..ChatRequest::new(
                self.config.model.clone(),
                self.prompts.verify_messages(query, answer),
            )
        }
    }

    /// k sampled verdicts at the configured temperature, distinct seeds.
    pub async fn verify_sampled(
        &self,
        query: &QueryText<'_>,
        answer: &str,
    ) -> Result<SampledVerification, LlmError> {
        let request = self.request(query, answer);
        let response = self.provider.chat(&request).await?;
        let samples: Vec<String> = response.choices.into_iter().map(|c| c.text).collect();
        let tally = VerdictTally::from_samples(samples.iter().map(String::as_str));
        Ok(SampledVerification {
            p_ver: tally.p_ver(),
            tally,
            samples,
            usage: response.usage,
            requests: response.requests,
        })
    }

    /// One greedy verdict; p from its token logprobs, or k samples when there are none.
    pub async fn verify_logprob(
        &self,
        query: &QueryText<'_>,
        answer: &str,
    ) -> Result<LogprobVerification, LlmError> {
        let request = ChatRequest {
            temperature: Some(0.0),
            n: 1,
            logprobs: true,
            top_logprobs: Some(self.config.top_logprobs),
            ..self.request(query, answer)
        };
        let response = self.provider.chat(&request).await?;
        let choice = response.choices.into_iter().next();
        let text = choice.as_ref().map(|c| c.text.clone()).unwrap_or_default();
        let reason = match choice.as_ref().map(verdict_probability) {
            Some(Ok((p, position))) => {
                return Ok(LogprobVerification {
                    p_correct: Some(p),
                    source: LogprobSource::Logprobs { position },
                    text,
                    usage: response.usage,
                });
            }
            Some(Err(reason)) => reason,
            None => "the server returned no choice".to_owned(),
        };
        let sampled = self.verify_sampled(query, answer).await?;
        Ok(LogprobVerification {
            p_correct: sampled.p_ver,
            usage: response.usage + sampled.usage,
            source: LogprobSource::FellBackToSampling { reason, sampled },
            text,
        })
    }
}

/// The class a token votes for, if it is (a prefix of) a verdict word of exactly one class.
fn token_class(token: &str) -> Option<bool> {
    const POSITIVE: &[&str] = &["correct", "true", "yes", "right"];
    const NEGATIVE: &[&str] = &["incorrect", "false", "no", "not", "wrong"];
    let t: String = token
        .trim()
        .trim_matches(|c: char| !c.is_alphanumeric())
        .to_lowercase();
    if t.is_empty() {
        return None;
    }
    let full = |words: &[&str]| words.contains(&t.as_str());
    if full(POSITIVE) {
        return Some(true);
    }
    if full(NEGATIVE) {
        return Some(false);
    }
    // Tokenisers split "Incorrect" into "In"+"correct"; a prefix of two or more letters that
    // starts words of one class only counts for that class.
    if t.len() < 2 {
        return None;
    }
    let pos = POSITIVE.iter().any(|w| w.starts_with(&t));
    let neg = NEGATIVE.iter().any(|w| w.starts_with(&t));
    match (pos, neg) {
        (true, false) => Some(true),
        (false, true) => Some(false),
        _ => None,
    }
}

/// p = P(correct)/(P(correct)+P(incorrect)) at the first position whose alternatives
/// include a verdict token; the error says why none could be read.
pub fn verdict_probability(choice: &Choice) -> Result<(f64, usize), String> {
    let Some(positions) = choice.logprobs.as_ref().filter(|l| !l.is_empty()) else {
        return Err("the server returned no logprobs".to_owned());
    };
    for (index, position) in positions.iter().take(VERDICT_POSITIONS).enumerate() {
        let mut alternatives: Vec<(&str, f64)> = position
            .top_logprobs
            .iter()
            .map(|t| (t.token.as_str(), t.logprob))
            .collect();
        if alternatives.is_empty() {
            alternatives.push((position.token.as_str(), position.logprob));
        }
        let (mut correct, mut incorrect) = (0.0, 0.0);
        for (token, logprob) in alternatives {
            match token_class(token) {
                Some(true) => correct += logprob.exp(),
                Some(false) => incorrect += logprob.exp(),
                None => {}
            }
        }
        if correct + incorrect > 0.0 {
            return Ok((correct / (correct + incorrect), index));
        }
    }
    Err(format!(
        "no verdict token among the top logprobs of the first {VERDICT_POSITIONS} positions"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use automix_llm::{TokenLogprob, TopLogprob};

    fn choice(positions: Vec<Vec<(&str, f64)>>) -> Choice {
        Choice {
            index: 0,
            tool_calls: None,
            text: String::new(),
            finish_reason: None,
            logprobs: Some(
                positions
                    .into_iter()
                    .map(|alts| TokenLogprob {
                        token: alts[0].0.to_owned(),
                        logprob: alts[0].1,
                        top_logprobs: alts
                            .into_iter()
                            .map(|(t, l)| TopLogprob {
                                token: t.to_owned(),
                                logprob: l,
                            })
                            .collect(),
                    })
                    .collect(),
            ),
        }
    }

    #[test]
    fn sums_token_variants_and_skips_leading_non_verdict_tokens() {
        let c = choice(vec![
            vec![("Ver", -0.1), ("The", -2.0)],
            vec![("dict", -0.01)],
            vec![
                (" Correct", 0.6f64.ln()),
                (" correct", 0.1f64.ln()),
                (" In", 0.2f64.ln()),
                (" The", 0.1f64.ln()),
            ],
        ]);
        let (p, pos) = verdict_probability(&c).unwrap();
        assert_eq!(pos, 2);
        assert!((p - 0.7 / 0.9).abs() < 1e-12);
    }

    #[test]
    fn token_classes() {
        assert_eq!(token_class(" Correct"), Some(true));
        assert_eq!(token_class("TRUE"), Some(true));
        assert_eq!(token_class("In"), Some(false));
        assert_eq!(token_class("Incor"), Some(false));
        assert_eq!(token_class("No"), Some(false));
        assert_eq!(token_class("cor"), Some(true));
        assert_eq!(token_class("The"), None);
        assert_eq!(token_class("n"), None);
    }

    #[test]
    fn no_logprobs_is_an_explained_error() {
        let c = Choice {
            index: 0,
            tool_calls: None,
            text: "Correct".into(),
            finish_reason: None,
            logprobs: None,
        };
        assert_eq!(
            verdict_probability(&c).unwrap_err(),
            "the server returned no logprobs"
        );
        let c = choice(vec![vec![("Hmm", -0.1)]]);
        assert!(
            verdict_probability(&c)
                .unwrap_err()
                .contains("no verdict token")
        );
    }
}
