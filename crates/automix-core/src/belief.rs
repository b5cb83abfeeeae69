//! Particle-filter belief over the cascade's uncertain parameters, for online routing.
//!
//! Each particle holds, per model, its success rate θ and its verifier's true- and
//! false-positive rates (P(positive verdict | correct), P(positive | wrong)). Every routed
//! query reweights the particles by the likelihood of what was seen (verdicts, and
//! correctness where feedback exists); below half effective sample size the particles are
//! resampled systematically and jittered, which is what lets the belief follow drift. The
//! RNG is seeded: a run is reproducible.

use std::sync::Arc;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rand_distr::Distribution;
use serde::{Deserialize, Serialize};

use crate::cascade::{CascadeModel, CascadePolicy, CascadeSettings, solve_cascade};
use crate::error::{CoreError, Result};

/// Settings of the particle filter.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct BeliefConfig {
    /// Number of particles (`belief_particles`).
    pub particles: usize,
    /// Standard deviation of the jitter added after resampling.
    pub jitter: f64,
    /// Re-solve the decision table every this many updates.
    pub refresh_every: usize,
    /// RNG seed.
    pub seed: u64,
}

impl Default for BeliefConfig {
    fn default() -> Self {
        Self {
            particles: 100,
            jitter: 0.03,
            refresh_every: 10,
            seed: 0,
        }
    }
}

/// Per-model rates estimated offline, to centre a belief on: success rate θ and the
/// verifier's true/false-positive rates, each from `evidence` rows.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelRates {
    /// Success rate per model.
    pub theta: Vec<f64>,
    /// P(positive verdict | correct) per model (the last model's is unused).
    pub tpr: Vec<f64>,
    /// P(positive verdict | wrong) per model.
    pub fpr: Vec<f64>,
    /// Rows the rates come from; sets how tightly the particles start around them.
    pub evidence: usize,
}

/// What one model's step of a routed query showed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct StepObservation {
    /// The model.
    pub model: usize,
    /// Its verifier said positive (`Some(true)`), negative, or was not run / unknown.
    pub verdict: Option<bool>,
    /// Whether its answer was correct, when feedback exists.
    pub correct: Option<bool>,
}

/// The particle cloud.
#[derive(Debug, Clone)]
pub struct ParticleBelief {
    models: usize,
    /// Row-major: particle p's parameters at `p * 3 * models`: θ, then tpr, then fpr.
    params: Vec<f64>,
    weights: Vec<f64>,
    config: BeliefConfig,
    rng: ChaCha8Rng,
    resamples: usize,
}

const LOW: f64 = 0.01;
const HIGH: f64 = 0.99;

impl ParticleBelief {
    /// A uniform prior over θ ∈ (0, 1), tpr ∈ (0.5, 1), fpr ∈ (0, 0.5) for `models` models.
    pub fn new(models: usize, config: BeliefConfig) -> Result<Self> {
        if models == 0 || config.particles == 0 {
            return Err(CoreError::InvalidParameter {
                name: "belief_particles",
                reason: "need at least one model and one particle".into(),
            });
        }
        let mut rng = ChaCha8Rng::seed_from_u64(config.seed);
        let mut params = Vec::with_capacity(config.particles * 3 * models);
        for _ in 0..config.particles {
            for _ in 0..models {
                params.push(rng.random_range(0.05..0.95));
            }
            for _ in 0..models {
                params.push(rng.random_range(0.55..0.99));
            }
            for _ in 0..models {
                params.push(rng.random_range(0.01..0.45));
            }
        }
        Ok(Self {
            models,
            weights: vec![1.0 / config.particles as f64; config.particles],
            params,
            config,
            rng,
            resamples: 0,
        })
    }

    /// Particles spread around `rates` with the standard deviation of a mean over
    /// `rates.evidence` observations (at least 0.02), clipped to the parameter ranges.
    pub fn around(config: BeliefConfig, rates: &ModelRates) -> Result<Self> {
        let models = rates.theta.len();
        if rates.tpr.len() != models || rates.fpr.len() != models {
            return Err(CoreError::InvalidParameter {
                name: "model rates",
                reason: "theta, tpr and fpr need one entry per model".into(),
            });
        }
        let mut belief = Self::new(models, config)?;
        let n = rates.evidence.max(1) as f64;
        let spread = |m: f64| (m * (1.0 - m) / n).sqrt().max(0.02);
        let width = 3 * models;
        for p in 0..config.particles {
            for i in 0..models {
                let fields = [
                    (rates.theta[i], LOW, HIGH),
                    (rates.tpr[i], 0.5, HIGH),
                    (rates.fpr[i], LOW, 0.5),
                ];
                for (f, (mean, lo, hi)) in fields.into_iter().enumerate() {
                    let mean = mean.clamp(lo, hi);
                    let x = mean + spread(mean) * gaussian(&mut belief.rng);
                    belief.params[p * width + f * models + i] = x.clamp(lo, hi);
                }
            }
        }
        Ok(belief)
    }

    fn particle(&self, p: usize) -> &[f64] {
        let w = 3 * self.models;
        &self.params[p * w..(p + 1) * w]
    }

    fn likelihood(&self, p: usize, o: &StepObservation) -> f64 {
        let x = self.particle(p);
        let (theta, tpr, fpr) = (
            x[o.model],
            x[self.models + o.model],
            x[2 * self.models + o.model],
        );
        let verdict = |pos_rate: f64| match o.verdict {
            Some(true) => pos_rate,
            Some(false) => 1.0 - pos_rate,
            None => 1.0,
        };
        match o.correct {
            Some(true) => theta * verdict(tpr),
            Some(false) => (1.0 - theta) * verdict(fpr),
            None => theta * verdict(tpr) + (1.0 - theta) * verdict(fpr),
        }
    }

    /// Reweights by the observations of one query; resamples below half ESS.
    pub fn update(&mut self, observations: &[StepObservation]) {
        if observations.iter().any(|o| o.model >= self.models) {
            return;
        }
        let mut total = 0.0;
        for p in 0..self.weights.len() {
            let l: f64 = observations.iter().map(|o| self.likelihood(p, o)).product();
            self.weights[p] *= l;
            total += self.weights[p];
        }
        if !(total > 0.0 && total.is_finite()) {
            // Every particle ruled out: restart from uniform weights rather than divide by 0.
            let n = self.weights.len() as f64;
            self.weights.iter_mut().for_each(|w| *w = 1.0 / n);
            return;
        }
        self.weights.iter_mut().for_each(|w| *w /= total);
        if self.effective_sample_size() < self.weights.len() as f64 / 2.0 {
            self.resample();
        }
    }

    /// 1 / Σ w².
    pub fn effective_sample_size(&self) -> f64 {
        1.0 / self.weights.iter().map(|w| w * w).sum::<f64>()
    }

    /// How many times the cloud was resampled.
    pub fn resamples(&self) -> usize {
        self.resamples
    }

    /// Systematic resampling, then Gaussian jitter clipped to the parameter ranges.
    fn resample(&mut self) {
        let n = self.weights.len();
        let w = 3 * self.models;
        let step = 1.0 / n as f64;
        let mut u = self.rng.random_range(0.0..step);
        let mut cumulative = self.weights[0];
        let mut i = 0;
        let mut next = Vec::with_capacity(self.params.len());
        for _ in 0..n {
            while u > cumulative && i + 1 < n {
                i += 1;
                cumulative += self.weights[i];
            }
            next.extend_from_slice(&self.params[i * w..(i + 1) * w]);
            u += step;
        }
        for (k, x) in next.iter_mut().enumerate() {
            let field = (k % w) / self.models;
            let (lo, hi) = match field {
                0 => (LOW, HIGH),
                1 => (0.5, HIGH),
                _ => (LOW, 0.5),
            };
            *x = (*x + self.config.jitter * gaussian(&mut self.rng)).clamp(lo, hi);
        }
        self.params = next;
        self.weights.iter_mut().for_each(|x| *x = step);
        self.resamples += 1;
    }

    /// Posterior means: (θ per model, tpr per model, fpr per model).
    pub fn mean(&self) -> (Vec<f64>, Vec<f64>, Vec<f64>) {
        let m = self.models;
        let mut acc = vec![0.0; 3 * m];
        for (p, w) in self.weights.iter().enumerate() {
            for (a, x) in acc.iter_mut().zip(self.particle(p)) {
                *a += w * x;
            }
        }
        (
            acc[..m].to_vec(),
            acc[m..2 * m].to_vec(),
            acc[2 * m..].to_vec(),
        )
    }

    /// The cascade model the posterior mean implies (models independent; symbols negative,
    /// positive, unknown).
    pub fn cascade_model(
        &self,
        names: &[String],
        answer_cost: &[f64],
        verify_cost: &[f64],
    ) -> CascadeModel {
        let (theta, tpr, fpr) = self.mean();
        cascade_from_rates(names, &theta, &tpr, &fpr, answer_cost, verify_cost)
    }

    /// Pre-selection: the model with the best expected quality − λ·cost, no calls made.
    pub fn preselect(&self, lambda: f64, answer_cost: &[f64]) -> usize {
        let (theta, _, _) = self.mean();
        (0..self.models)
            .max_by(|&a, &b| {
                let va = theta[a] - lambda * answer_cost[a];
                let vb = theta[b] - lambda * answer_cost[b];
                va.total_cmp(&vb).then(b.cmp(&a))
            })
            .unwrap_or(0)
    }
}

/// Share of "unknown" verdicts assumed in the belief's observation model.
const UNKNOWN_RATE: f64 = 0.02;

/// A cascade model from independent success rates and verifier rates.
pub fn cascade_from_rates(
    names: &[String],
    theta: &[f64],
    tpr: &[f64],
    fpr: &[f64],
    answer_cost: &[f64],
    verify_cost: &[f64],
) -> CascadeModel {
    let n = names.len();
    let prior: Vec<f64> = (0..1usize << n)
        .map(|v| {
            (0..n)
                .map(|i| {
                    if (v >> i) & 1 == 1 {
                        theta[i]
                    } else {
                        1.0 - theta[i]
                    }
                })
                .product()
        })
        .collect();
    let k = 1.0 - UNKNOWN_RATE;
    let observation = (0..n.saturating_sub(1))
        .map(|i| {
            [fpr[i], tpr[i]]
                .iter()
                .map(|positive| vec![k * (1.0 - positive), k * positive, UNKNOWN_RATE])
                .collect()
        })
        .collect();
    CascadeModel {
        models: names.to_vec(),
        symbols: 3,
        prior,
        observation,
        observation_jumped: Vec::new(),
        quality: vec![vec![0.0, 1.0]; n],
        answer_cost: answer_cost.to_vec(),
        verify_cost: verify_cost.to_vec(),
        edges: Vec::new(),
    }
}

/// A standard normal draw (`rand_distr`'s ziggurat sampler).
fn gaussian(rng: &mut ChaCha8Rng) -> f64 {
    rand_distr::StandardNormal.sample(rng)
}

/// An online cascade router: a particle belief and the decision table solved from it,
/// refreshed every `refresh_every` updates.
#[derive(Debug, Clone)]
pub struct OnlineCascade {
    names: Vec<String>,
    answer_cost: Vec<f64>,
    verify_cost: Vec<f64>,
    settings: CascadeSettings,
    belief: ParticleBelief,
    policy: Arc<CascadePolicy>,
    updates: usize,
}

impl OnlineCascade {
    /// Starts from the prior belief.
    pub fn new(
        names: Vec<String>,
        answer_cost: Vec<f64>,
        verify_cost: Vec<f64>,
        settings: CascadeSettings,
        config: BeliefConfig,
    ) -> Result<Self> {
        let belief = ParticleBelief::new(names.len(), config)?;
        Self::from_belief(names, answer_cost, verify_cost, settings, belief)
    }

    /// Starts from a belief centred on rates estimated offline (see [`ModelRates`]).
    pub fn warm(
        names: Vec<String>,
        answer_cost: Vec<f64>,
        verify_cost: Vec<f64>,
        settings: CascadeSettings,
        config: BeliefConfig,
        rates: &ModelRates,
    ) -> Result<Self> {
        let belief = ParticleBelief::around(config, rates)?;
        Self::from_belief(names, answer_cost, verify_cost, settings, belief)
    }

    fn from_belief(
        names: Vec<String>,
        answer_cost: Vec<f64>,
        verify_cost: Vec<f64>,
        settings: CascadeSettings,
        belief: ParticleBelief,
    ) -> Result<Self> {
        let policy = Arc::new(solve_cascade(
            &belief.cascade_model(&names, &answer_cost, &verify_cost),
            settings,
        )?);
        Ok(Self {
            names,
            answer_cost,
            verify_cost,
            settings,
            belief,
            policy,
            updates: 0,
        })
    }

    /// The current decision table (shared: routing holds it while the belief moves on).
    pub fn policy(&self) -> Arc<CascadePolicy> {
        self.policy.clone()
    }

    /// The models, cheapest first.
    pub fn names(&self) -> &[String] {
        &self.names
    }

    /// Queries observed so far.
    pub fn updates(&self) -> usize {
        self.updates
    }

    /// The belief.
    pub fn belief(&self) -> &ParticleBelief {
        &self.belief
    }

    /// Learns from one routed query; re-solves every `refresh_every` updates.
    pub fn observe(&mut self, observations: &[StepObservation]) -> Result<()> {
        self.belief.update(observations);
        self.updates += 1;
        if self
            .updates
            .is_multiple_of(self.belief.config.refresh_every.max(1))
        {
            self.policy = Arc::new(solve_cascade(
                &self
                    .belief
                    .cascade_model(&self.names, &self.answer_cost, &self.verify_cost),
                self.settings,
            )?);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seeded_runs_are_reproducible_and_learn_the_rate() {
        let run = || {
            let mut b = ParticleBelief::new(
                1,
                BeliefConfig {
                    particles: 500,
                    ..Default::default()
                },
            )
            .unwrap();
            for i in 0..300 {
                b.update(&[StepObservation {
                    model: 0,
                    verdict: None,
                    correct: Some(i % 10 < 7),
                }]);
            }
            b.mean().0[0]
        };
        let a = run();
        assert_eq!(a, run());
        assert!((a - 0.7).abs() < 0.08, "{a}");
    }

    #[test]
    fn resampling_keeps_weights_normalised() {
        let mut b = ParticleBelief::new(2, BeliefConfig::default()).unwrap();
        for i in 0..50 {
            b.update(&[StepObservation {
                model: i % 2,
                verdict: Some(i % 3 == 0),
                correct: Some(i % 2 == 0),
            }]);
        }
        assert!(b.resamples() > 0);
        assert!((b.weights.iter().sum::<f64>() - 1.0).abs() < 1e-9);
        assert!(b.effective_sample_size() >= 1.0);
    }
}
