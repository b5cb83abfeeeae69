//! `AutomixRouter` and `AutomixTrainer` with LLMRouter's signatures, over
//! [`automix::project`] (the same config, training and router as `automix train` and
//! `automix route`).

use std::future::Future;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use pyo3::prelude::*;

use automix::config::Config;
use automix::dataset::{QueryRow, read_queries};
use automix::project::{self, TrainSpec};
use automix::{BatchItem, Router, UpstreamLimits};

use crate::convert;
use crate::errors::{ConfigError, to_py};

/// The task of a query that names none (LLMRouter's default task).
const DEFAULT_TASK: &str = "general";

/// How often a running batch looks for Ctrl-C.
const SIGNAL_CHECK: Duration = Duration::from_millis(50);

/// An AutoMix router from an LLMRouter YAML config. The router (policy and models) is
/// built on the first route, so a training config without a policy yet loads fine.
#[pyclass(module = "automix_rs", frozen)]
pub struct AutomixRouter {
    yaml_path: PathBuf,
    config: Arc<Config>,
    router: Mutex<Option<Arc<Router>>>,
}

impl AutomixRouter {
    /// The router, built once (inside the runtime: a shared belief starts a worker there).
    fn router(&self) -> PyResult<Arc<Router>> {
        let mut slot = automix::sync::lock(&self.router);
        if let Some(r) = slot.as_ref() {
            return Ok(r.clone());
        }
        let rt = crate::runtime()?;
        let _inside = rt.enter();
        let limits = UpstreamLimits::batch(self.config.hparam.max_workers);
        let built = Arc::new(project::router(&self.config, false, limits).map_err(to_py)?);
        *slot = Some(built.clone());
        Ok(built)
    }

    /// Routes `queries` with the GIL released, cancelling on Ctrl-C.
    fn run(&self, py: Python<'_>, queries: Vec<QueryRow>) -> PyResult<Vec<BatchItem>> {
        let router = self.router()?;
        let rt = crate::runtime()?;
        py.detach(|| {
            rt.block_on(cancellable(
                async move { router.route_batch(&queries).await },
            ))
        })
    }
}

/// Runs `work` until it ends or Python has a pending signal (Ctrl-C raises
/// `KeyboardInterrupt`): then `work` is dropped, which cancels its upstream calls.
async fn cancellable<F: Future>(work: F) -> PyResult<F::Output> {
    tokio::pin!(work);
    let mut tick = tokio::time::interval(SIGNAL_CHECK);
    loop {
        tokio::select! {
            out = &mut work => return Ok(out),
            _ = tick.tick() => Python::attach(|py| py.check_signals())?,
        }
    }
}

#[pymethods]
impl AutomixRouter {
    /// Loads the YAML config (LLMRouter's keys and Semantic Router's `automix:` block).
    #[new]
    #[pyo3(signature = (yaml_path))]
    fn new(yaml_path: PathBuf) -> PyResult<Self> {
        // A config file that cannot be read is a config problem, not a data one.
        let config = Config::load(&yaml_path).map_err(|e| match e {
            e @ automix::AutomixError::Io { .. } => ConfigError::new_err(e.to_string()),
            e => to_py(e),
        })?;
        Ok(Self {
            yaml_path,
            config: Arc::new(config),
            router: Mutex::new(None),
        })
    }

    /// The config file.
    #[getter]
    fn yaml_path(&self) -> PathBuf {
        self.yaml_path.clone()
    }

    /// Queries routed at once in a batch (`hparam.max_workers`).
    #[getter]
    fn max_workers(&self) -> usize {
        self.config.hparam.max_workers
    }

    /// Routes one query dict (`{"query": ...}`, optionally `task_name`, `ground_truth`,
    /// `metric`, `choices`); returns LLMRouter's keys (`model_name`, `response`,
    /// `verification_score`, `route_to_llm`, `task_performance`) and ours (`decision`,
    /// `models_tried`, `cost`, `steps`, `calls`, ...).
    fn route_single<'py>(
        &self,
        py: Python<'py>,
        query: &Bound<'py, PyAny>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let q = convert::query(convert::to_json(py, query, "query")?, DEFAULT_TASK, 1)?;
        let mut items = self.run(py, vec![q])?;
        match items.pop() {
            Some(BatchItem {
                outcome: Some(o), ..
            }) => convert::to_py(py, &o),
            Some(BatchItem { error, .. }) => Err(crate::errors::UpstreamError::new_err(
                error.unwrap_or_else(|| "routing failed".into()),
            )),
            None => Err(crate::errors::AutomixError::new_err("no result")),
        }
    }

    /// Routes a list of query dicts (`max_workers` at a time, order kept); without `batch`,
    /// the config's `data_path.query_data_test`. `task_name` fills queries that name no
    /// task. A query that fails is `{"id", "error"}` in its place; the batch goes on.
    #[pyo3(signature = (batch=None, task_name=None))]
    fn route_batch<'py>(
        &self,
        py: Python<'py>,
        batch: Option<&Bound<'py, PyAny>>,
        task_name: Option<String>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let task = task_name.as_deref().unwrap_or(DEFAULT_TASK);
        let queries = match batch {
            Some(b) => b
                .try_iter()?
                .enumerate()
                .map(|(i, q)| convert::query(convert::to_json(py, &q?, "query")?, task, i + 1))
                .collect::<PyResult<Vec<_>>>()?,
            None => {
                let path = self.config.data_path.query_data_test.as_deref().ok_or_else(|| {
                    ConfigError::new_err(
                        "route_batch() without a batch reads data_path.query_data_test, which is not set",
                    )
                })?;
                read_queries(path).map_err(to_py)?
            }
        };
        let items = self.run(py, queries)?;
        convert::to_py(py, &items)
    }

    /// Drops the built router: the next route loads the policy and models again (after a
    /// retrain, say).
    fn reload(&self) {
        *automix::sync::lock(&self.router) = None;
    }

    fn __repr__(&self) -> String {
        format!(
            "AutomixRouter(yaml_path={:?})",
            self.yaml_path.display().to_string()
        )
    }
}

/// Trains the router's policy as `automix train` does and saves it to the config's
/// `model_path.save_model_path`.
#[pyclass(module = "automix_rs", frozen)]
pub struct AutomixTrainer {
    router: Py<AutomixRouter>,
}

#[pymethods]
impl AutomixTrainer {
    /// A trainer for `router`; `device` must be `"cpu"` (every solver here is CPU code).
    #[new]
    #[pyo3(signature = (router, device="cpu"))]
    fn new(router: Py<AutomixRouter>, device: &str) -> PyResult<Self> {
        if device != "cpu" {
            return Err(ConfigError::new_err(format!(
                "device {device:?}: only \"cpu\" (every solver in automix-rs is CPU code)"
            )));
        }
        Ok(Self { router })
    }

    /// Trains on the config's rows (`split: train`), saves the policy and returns what
    /// training found (`policy_path`, the pair, the method chosen, train-row quality and
    /// cost). The router loads the new policy on its next route.
    fn train<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        let router = self.router.get();
        let config = router.config.clone();
        let trained = py
            .detach(move || project::train(&config, &TrainSpec::default()))
            .map_err(to_py)?;
        router.reload();
        let p = &trained.policy.policy;
        let summary = serde_json::json!({
            "policy_path": trained.path,
            "small_model": trained.pair.small,
            "large_model": trained.pair.large,
            "method": p.method.kind.name(),
            "chosen": p.chosen_component.name(),
            "rows": p.summary.rows,
            "train": p.summary.train,
            "trained_lambda": p.trained_lambda(),
        });
        convert::to_py(py, &summary)
    }
}
