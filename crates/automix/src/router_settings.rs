//! [`RouterSettings`]: the routing keys of a config and a policy, resolved once (ripgrep's
//! `HiArgs`): which signal decisions read, which fusion scores a verification, the checks,
//! the limits. The router reads only these typed values.

use automix_core::VerifierScore;

use crate::checks::AnswerCheck;
use crate::config::{Config, VerifierSignal};
use crate::error::{AutomixError, Result};
use crate::strategy::ThresholdRule;
use crate::training::{RouterPolicy, verifier_score};

/// The routing settings, resolved from the config once (ripgrep's `HiArgs`): how the keys
/// interact is decided here, and routing reads only these typed values.
#[derive(Debug, Clone)]
pub struct RouterSettings {
    /// Verify answers (`enable_self_verification`); off keeps the start answer.
    pub verify: bool,
    /// Which verifier score decisions read: the policy's, else `use_logprob_verification`.
    pub signal: VerifierSignal,
    /// The policy's fused confidence, when it routes on several signals (then every one of
    /// them is measured and `signal` names the first).
    pub fusion: Option<std::sync::Arc<crate::fused::SignalFusion>>,
    /// The cascade's per-model fused confidences, when the cascade routes on them (then
    /// every fused signal is measured and each model's verification reads its fusion).
    pub cascade_fusion: Option<std::sync::Arc<crate::cascade_fusion::CascadeFusion>>,
    /// Most escalations per query (`max_escalations`; a request may lower or raise it).
    pub max_escalations: usize,
    /// The rule on steps no trained policy covers.
    pub threshold: ThresholdRule,
    /// Concurrent queries of a batch.
    pub max_workers: usize,
    /// The zero-call answer checks (`automix.answer_checks`).
    pub checks: Vec<AnswerCheck>,
    /// Answers sampled for the answer-consistency signal (`automix.answer_samples`).
    pub answer_samples: u32,
    /// Temperature of those samples (`verification_temperature`).
    pub answer_temperature: f32,
}

impl RouterSettings {
    /// Every signal some verification measures: the fused ones (with the one configured
    /// signal where a cascade model routes on it alone), else the one routed on.
    pub fn measured(&self) -> Vec<VerifierSignal> {
        match (&self.cascade_fusion, &self.fusion) {
            (Some(c), _) => {
                let mut signals = c.signals.clone();
                if !c.unfused.is_empty() && !signals.contains(&self.signal) {
                    signals.push(self.signal);
                }
                signals
            }
            (None, Some(f)) => f.signals.clone(),
            (None, None) => vec![self.signal],
        }
    }

    /// The signals model `name`'s verification measures: its fusion's, or the one signal.
    pub fn measured_for(&self, name: &str) -> Vec<VerifierSignal> {
        match &self.cascade_fusion {
            Some(c) if c.models.contains_key(name) => c.signals.clone(),
            Some(_) => vec![self.signal],
            None => self.measured(),
        }
    }

    /// The signals a fusion combines (empty without one): what an outcome lists.
    pub fn fused_signals(&self) -> Vec<VerifierSignal> {
        if self.cascade_fusion.is_some() || self.fusion.is_some() {
            self.measured()
        } else {
            Vec::new()
        }
    }

    /// The score decisions read from model `name`'s verification `record`.
    pub fn score(&self, name: &str, record: &crate::dataset::VerificationRecord) -> VerifierScore {
        match (&self.cascade_fusion, &self.fusion) {
            (Some(c), _) if c.models.contains_key(name) => c
                .confidence(name, Some(record))
                .and_then(|p| automix_core::Confidence::new(p).ok())
                .map_or(VerifierScore::Unknown, VerifierScore::Known),
            // A model the cascade's fusion does not cover reads the configured signal.
            (Some(_), _) => verifier_score(Some(record), self.signal),
            (None, Some(f)) => f.score(record),
            (None, None) => verifier_score(Some(record), self.signal),
        }
    }

    /// Resolves the settings of `config` for `policy`.
    pub fn resolve(config: &Config, policy: Option<&RouterPolicy>) -> Result<Self> {
        let a = &config.automix;
        // The cascade routes where a policy has a plan, the POMDP router is on and
        // `enable_cascade`: then the plan's own signal and fusion score verifications, not
        // the two-model policy's (which was trained on the small model alone).
        let plan = policy
            .and_then(|p| p.cascade.as_ref())
            .filter(|_| a.use_pomdp_router && a.enable_cascade);
        let signal = match (policy, plan) {
            (Some(p), Some(plan)) => plan.verifier_signal.unwrap_or(p.verifier_signal),
            (Some(p), None) if a.use_pomdp_router => p.verifier_signal,
            _ if a.use_logprob_verification => VerifierSignal::Logprob,
            // Without a policy the configured signal is read (samples unless set).
            _ => config.hparam.verifier_signal,
        };
        let fusion = match policy {
            Some(p) if a.use_pomdp_router && plan.is_none() => p
                .fusion
                .clone()
                .filter(|f| f.model.is_some())
                .map(std::sync::Arc::new),
            _ => None,
        };
        let cascade_fusion = plan.and_then(|p| p.fusion.clone()).map(std::sync::Arc::new);
        let settings = Self {
            verify: a.enable_self_verification,
            signal,
            fusion,
            cascade_fusion,
            max_escalations: a.max_escalations,
            threshold: ThresholdRule {
                threshold: a.verification_threshold,
                unknown: config.hparam.unknown_confidence,
            },
            max_workers: config.hparam.max_workers.max(1),
            checks: a.answer_checks.clone(),
            answer_samples: a.answer_samples(),
            answer_temperature: a.verification_temperature,
        };
        let samples = settings
            .measured()
            .contains(&VerifierSignal::AnswerConsistency);
        if samples && settings.answer_samples == 0 {
            // Refused rather than quietly sampling one answer: the signal needs samples.
            return Err(AutomixError::Setting {
                key: "automix.answer_samples",
                message: "is 0, but routing reads answer_consistency, which samples answers".into(),
            });
        }
        Ok(settings)
    }
}
