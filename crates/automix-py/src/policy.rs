//! The core for notebooks: train a policy from row dicts, load and save it, decide on a
//! confidence (at the trained λ or another), read the λ family, evaluate rows. All of it is
//! [`automix::training`], [`automix::evaluate`] and [`automix_core::Policy`] unchanged.

use std::path::{Path, PathBuf};

use pyo3::prelude::*;

use automix::config::Config;
use automix::core::{Confidence, Decision, QueryEvidence, VerifierScore};
use automix::project;
use automix::training::{RouterPolicy, split, train_policy as train_router_policy};

use crate::convert;
use crate::errors::{ConfigError, to_py};

/// The config at `yaml_path`, or every default (as an empty YAML file).
fn config_of(yaml_path: Option<&Path>) -> PyResult<Config> {
    match yaml_path {
        Some(p) => Config::load(p).map_err(to_py),
        None => Config::parse("{}", Path::new("<defaults>")).map_err(to_py),
    }
}

fn label(d: Decision) -> &'static str {
    if d.escalates() { "escalate" } else { "keep" }
}

/// A trained two-model policy (what `automix train` saves).
#[pyclass(module = "automix_rs", frozen)]
pub struct Policy {
    inner: RouterPolicy,
}

impl Policy {
    fn evidence<'a>(
        &self,
        confidence: Option<f64>,
        task: Option<&'a str>,
    ) -> PyResult<QueryEvidence<'a>> {
        let verifier = match confidence {
            None => VerifierScore::Unknown,
            Some(c) => VerifierScore::Known(
                Confidence::new(c).map_err(|e| ConfigError::new_err(format!("confidence: {e}")))?,
            ),
        };
        Ok(QueryEvidence {
            verifier,
            task_name: task,
            small_answer: None,
        })
    }
}

#[pymethods]
impl Policy {
    /// Loads a saved policy file.
    #[staticmethod]
    fn load(path: PathBuf) -> PyResult<Self> {
        Ok(Self {
            inner: RouterPolicy::load(&path).map_err(to_py)?,
        })
    }

    /// Saves the policy (atomically).
    fn save(&self, path: PathBuf) -> PyResult<()> {
        self.inner.save(&path).map_err(to_py)
    }

    /// `"keep"` or `"escalate"` for the small model's verifier `confidence` in [0, 1]
    /// (`None`: no usable verdict) at the trained operating point.
    #[pyo3(signature = (confidence, task=None))]
    fn decide(&self, confidence: Option<f64>, task: Option<&str>) -> PyResult<&'static str> {
        Ok(label(
            self.inner
                .policy
                .decide_for(&self.evidence(confidence, task)?),
        ))
    }

    /// [`Policy::decide`] at another λ (quality per unit of cost; calibrated policies).
    #[pyo3(signature = (confidence, lam, task=None))]
    fn decide_at(
        &self,
        confidence: Option<f64>,
        lam: f64,
        task: Option<&str>,
    ) -> PyResult<&'static str> {
        let e = self.evidence(confidence, task)?;
        self.inner
            .policy
            .decide_at_lambda(&e, lam)
            .map(label)
            .map_err(|e| to_py(e.into()))
    }

    /// The λ family measured on the training rows: `lambda`, `escalation_rate`, `quality`,
    /// `cost` per operating point (empty for policies without one).
    #[getter]
    fn lambdas<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        let family = self
            .inner
            .policy
            .calibration
            .as_ref()
            .map(|c| c.lambdas.clone())
            .unwrap_or_default();
        convert::to_py(py, &family)
    }

    /// The λ the policy decides at when none is given.
    #[getter]
    fn trained_lambda(&self) -> Option<f64> {
        self.inner.policy.trained_lambda()
    }

    /// The small model's llm_data name.
    #[getter]
    fn small_model(&self) -> String {
        self.inner.small_model.clone()
    }

    /// The large model's llm_data name.
    #[getter]
    fn large_model(&self) -> String {
        self.inner.large_model.clone()
    }

    /// The rule, in words.
    #[getter]
    fn rule(&self) -> String {
        self.inner.policy.rule.describe()
    }

    /// The whole policy as dicts (the saved file's content).
    fn to_dict<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        convert::to_py(py, &self.inner)
    }

    fn __repr__(&self) -> String {
        format!(
            "Policy({} → {}: {})",
            self.inner.small_model,
            self.inner.large_model,
            self.inner.policy.rule.describe()
        )
    }
}

/// Trains a policy on `rows` (an iterable of row dicts in the project's row format, all
/// of them), between `small` and `large` (default: the config's pair, else the rows'
/// first and last model), with the settings of `yaml_path` (default: every default).
#[pyfunction]
#[pyo3(signature = (rows, small=None, large=None, yaml_path=None))]
pub(crate) fn train_policy(
    py: Python<'_>,
    rows: &Bound<'_, PyAny>,
    small: Option<String>,
    large: Option<String>,
    yaml_path: Option<PathBuf>,
) -> PyResult<Policy> {
    let rows = convert::training_rows(py, rows)?;
    let config = config_of(yaml_path.as_deref())?;
    let pair = project::model_pair(&config, &rows).map_err(to_py)?;
    let (small, large) = (small.unwrap_or(pair.small), large.unwrap_or(pair.large));
    let inner = py
        .detach(|| train_router_policy(&config, &rows, &small, &large))
        .map_err(to_py)?;
    Ok(Policy { inner })
}

/// Trains every method on the train rows and evaluates on the test rows (`test_rows`, else
/// the rows' own `split`), as `automix eval` does; the report as dicts.
#[pyfunction]
#[pyo3(signature = (rows, test_rows=None, yaml_path=None))]
pub(crate) fn evaluate_rows<'py>(
    py: Python<'py>,
    rows: &Bound<'py, PyAny>,
    test_rows: Option<&Bound<'py, PyAny>>,
    yaml_path: Option<PathBuf>,
) -> PyResult<Bound<'py, PyAny>> {
    let all = convert::training_rows(py, rows)?;
    let config = config_of(yaml_path.as_deref())?;
    let (train, test) = match test_rows {
        Some(t) => (all.clone(), convert::training_rows(py, t)?),
        None => (
            split(&all, "train").into_iter().cloned().collect(),
            split(&all, "test").into_iter().cloned().collect(),
        ),
    };
    let pair = project::model_pair(&config, &all).map_err(to_py)?;
    let report = py
        .detach(|| automix::evaluate::evaluate(&config, &train, &test, &pair.small, &pair.large))
        .map_err(to_py)?;
    convert::to_py(py, &report)
}

/// Every verification signal the rows carry, each as `verifier_signal`, then their fusion,
/// over the same `resplits` random re-splits of all rows, as `automix eval
/// --compare-signals` does: a list of dicts (signal, calibration, method, threshold).
#[pyfunction]
#[pyo3(signature = (rows, resplits=10, yaml_path=None))]
pub(crate) fn compare_signals<'py>(
    py: Python<'py>,
    rows: &Bound<'py, PyAny>,
    resplits: u64,
    yaml_path: Option<PathBuf>,
) -> PyResult<Bound<'py, PyAny>> {
    use automix::signal_comparison::{Resplits, compare_signals};
    let all = convert::training_rows(py, rows)?;
    let config = config_of(yaml_path.as_deref())?;
    let pair = project::model_pair(&config, &all).map_err(to_py)?;
    let split = Resplits {
        seeds: resplits,
        test_share: config.collect.test_share,
        cascade: None,
    };
    let lines = py
        .detach(|| compare_signals(&config, &all, (&pair.small, &pair.large), split))
        .map_err(to_py)?;
    convert::to_py(py, &lines)
}
