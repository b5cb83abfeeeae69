//! The trained, versioned, serialisable policy that inference runs.

use serde::{Deserialize, Serialize};

use crate::calibrate::Calibration;
use crate::confidence::{Confidence, VerifierScore};
use crate::cost::CostModel;
use crate::error::{CoreError, Result};
use crate::methods::{Candidate, MethodKind, MethodSpec};
use crate::metrics::{Dataset, Decision};
use crate::record::RoutingRecord;
use crate::rule::DecisionRule;
use crate::train::{Objective, TrainOptions, TrainingSummary, decisions, objective_key};

/// Version of the policy JSON this build writes and reads.
pub const POLICY_FORMAT_VERSION: u32 = 1;

/// What is known about a query when deciding.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct QueryEvidence<'a> {
    /// The verifier's score of the small model's answer.
    pub verifier: VerifierScore,
    /// The query's task, if known.
    pub task_name: Option<&'a str>,
    /// The small model's normalised answer, if known.
    pub small_answer: Option<&'a str>,
}

/// A trained two-model routing policy.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Policy {
    /// [`POLICY_FORMAT_VERSION`] at write time.
    pub format_version: u32,
    /// The method and its settings.
    pub method: MethodSpec,
    /// The component that won (differs from `method.kind` for the paper's union).
    pub chosen_component: MethodKind,
    /// The decision rule.
    pub rule: DecisionRule,
    /// Small-model answers that always escalate.
    #[serde(default)]
    pub fixed_answers: Vec<String>,
    /// Decision when the verifier gave no usable verdict.
    pub unknown_confidence: Decision,
    /// Cost model used in training.
    pub costs: CostModel,
    /// The requested objective.
    pub objective: Objective,
    /// The `cost_constraint` used in training.
    #[serde(default)]
    pub cost_constraint: Option<(f64, f64)>,
    /// The fitted gain curves and cut of a calibrated policy.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub calibration: Option<Calibration>,
    /// What training found.
    pub summary: TrainingSummary,
}

/// A request's own λ (quality per unit of cost): finite and at least 0. The one check of
/// it, used by the router, the proxy and the CLI.
pub fn request_lambda(lambda: f64) -> Result<f64> {
    if lambda.is_finite() && lambda >= 0.0 {
        Ok(lambda)
    } else {
        Err(CoreError::InvalidParameter {
            name: "lambda",
            reason: format!("{lambda} must be a finite number >= 0"),
        })
    }
}

impl Policy {
    /// Decision for a known confidence (the hot path: a comparison or a lookup).
    #[inline]
    pub fn decide(&self, confidence: Confidence) -> Decision {
        Decision::from_escalate(self.rule.escalates(confidence, None))
    }

    /// Decision with everything known about the query.
    pub fn decide_for(&self, evidence: &QueryEvidence<'_>) -> Decision {
        if let Some(answer) = evidence.small_answer
            && self.fixed_answers.iter().any(|f| f == answer)
        {
            return Decision::Escalate;
        }
        match evidence.verifier {
            VerifierScore::Known(p) => {
                Decision::from_escalate(self.rule.escalates(p, evidence.task_name))
            }
            VerifierScore::Unknown => self.unknown_confidence,
        }
    }

    /// The λ this policy decides at when a request names none; `None` for a policy without
    /// a λ family (only calibrated policies keep one).
    pub fn trained_lambda(&self) -> Option<f64> {
        self.calibration.as_ref().map(Calibration::trained_lambda)
    }

    /// [`Policy::decide_for`] at another operating point: escalate where the calibrated
    /// expected gain is at least `lambda` × the cost of an escalation. An error for a
    /// policy without a λ family or a λ that is not finite. (A trained λ can be below 0:
    /// ΔIBC may favour escalating answers whose expected gain is ≤ 0, to amortise the
    /// verifier; requests are held to λ ≥ 0 by the proxy and the CLI.)
    pub fn decide_at_lambda(&self, evidence: &QueryEvidence<'_>, lambda: f64) -> Result<Decision> {
        let lambda = request_lambda(lambda)?;
        let calibration = self
            .calibration
            .as_ref()
            .ok_or(CoreError::InvalidParameter {
                name: "lambda",
                reason:
                    "this policy has no λ family (train with routing_method auto or Calibrated)"
                        .into(),
            })?;
        if let Some(answer) = evidence.small_answer
            && self.fixed_answers.iter().any(|f| f == answer)
        {
            return Ok(Decision::Escalate);
        }
        Ok(match evidence.verifier {
            VerifierScore::Known(p) => Decision::from_escalate(calibration.escalates_at(
                p.get(),
                evidence.task_name,
                lambda,
            )),
            VerifierScore::Unknown => self.unknown_confidence,
        })
    }

    /// The objective this policy was trained for ([`TrainingSummary::objective_used`]),
    /// scored on `records` it was not trained on: `None` where it is undefined there (ΔIBC
    /// on rows whose large model is no better) or the decisions break a budget. What a
    /// nested comparison of two training procedures reads per held-out fold.
    pub fn held_out_objective(&self, records: &[RoutingRecord]) -> Result<Option<f64>> {
        let data = Dataset::new(records, &self.costs)?;
        let candidate = Candidate {
            method: self.chosen_component,
            rule: self.rule.clone(),
            lambda: None,
        };
        let escalate = decisions(
            &data,
            &candidate,
            self.unknown_confidence,
            &self.fixed_answers,
        );
        let outcome = data.evaluate(&escalate)?;
        let options = TrainOptions {
            objective: self.objective,
            cost_constraint: self.cost_constraint,
            ..TrainOptions::default()
        };
        let used = self.summary.objective_used;
        Ok(objective_key(used, &outcome, data.lift(&outcome), &options).map(|k| k.0))
    }

    /// Pretty JSON.
    pub fn to_json(&self) -> Result<String> {
        serde_json::to_string_pretty(self).map_err(|e| CoreError::PolicyJson(e.to_string()))
    }

    /// Parses and version-checks a policy.
    pub fn from_json(text: &str) -> Result<Self> {
        #[derive(Deserialize)]
        struct Version {
            format_version: u32,
        }
        let v: Version =
            serde_json::from_str(text).map_err(|e| CoreError::PolicyJson(e.to_string()))?;
        if v.format_version != POLICY_FORMAT_VERSION {
            return Err(CoreError::UnsupportedPolicyVersion {
                found: v.format_version,
                supported: POLICY_FORMAT_VERSION,
            });
        }
        let policy: Self =
            serde_json::from_str(text).map_err(|e| CoreError::PolicyJson(e.to_string()))?;
        policy.validate()?;
        Ok(policy)
    }

    /// Checks what deserialising cannot: the version and a rule that decides every
    /// confidence (see [`DecisionRule::validate`]).
    pub fn validate(&self) -> Result<()> {
        if self.format_version != POLICY_FORMAT_VERSION {
            return Err(CoreError::UnsupportedPolicyVersion {
                found: self.format_version,
                supported: POLICY_FORMAT_VERSION,
            });
        }
        self.rule.validate()
    }
}
