//! What a config file names, loaded: the llm_data catalogue, the prompts, the training rows
//! and the model pair; the router and the trained policy built from them. The one path the
//! CLI (`train`, `route`, `serve`) and the Python package (`automix_rs`) share, so that no
//! rule of which rows, which models or which policy is written twice.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use automix_llm::Catalogue;
use automix_verify::PromptSet;

use crate::config::Config;
use crate::dataset::{TrainingRow, read_training_rows};
use crate::error::{AutomixError, Result};
use crate::models::{UpstreamLimits, small_and_large};
use crate::router::Router;
use crate::training::{RouterPolicy, split, train_cascade_plan, train_policy};

/// The llm_data catalogue the config names.
pub fn catalogue(config: &Config) -> Result<Catalogue> {
    let path = config
        .data_path
        .llm_data
        .as_deref()
        .ok_or(AutomixError::Setting {
            key: "data_path.llm_data",
            message: "is not set in the config".into(),
        })?;
    let text = std::fs::read_to_string(path).map_err(|source| AutomixError::Io {
        file: path.to_owned(),
        source,
    })?;
    Ok(Catalogue::from_json(&text, &path.display().to_string())?)
}

/// The prompt templates the config names, or the builtin ones.
pub fn prompts(config: &Config) -> Result<Arc<PromptSet>> {
    Ok(Arc::new(match &config.data_path.prompts_dir {
        Some(dir) => PromptSet::load_dir(dir)?,
        None => PromptSet::builtin(),
    }))
}

/// The rows whose `label_source` is one of `sources` (their serde names: `ground_truth`,
/// `agreement`, `judge`, `feedback`); an unknown name, or no row left, is an error naming
/// the file.
pub fn with_label_sources(
    rows: Vec<TrainingRow>,
    sources: &[String],
    path: &Path,
) -> Result<Vec<TrainingRow>> {
    let wanted = sources
        .iter()
        .map(|name| {
            serde_json::from_value::<crate::dataset::LabelSource>(name.as_str().into()).map_err(
                |_| AutomixError::Setting {
                    key: "--label-source",
                    message: format!(
                        "{name:?} is not a label source (ground_truth, agreement, judge, feedback)"
                    ),
                },
            )
        })
        .collect::<Result<Vec<_>>>()?;
    let kept: Vec<TrainingRow> = rows
        .into_iter()
        .filter(|r| wanted.contains(&r.label_source))
        .collect();
    if kept.is_empty() {
        return Err(AutomixError::InsufficientRows(format!(
            "{}: no rows with label_source {}",
            path.display(),
            sources.join(" or ")
        )));
    }
    Ok(kept)
}

/// The training rows at `rows`, else the config's `data_path.routing_data_train`; only
/// `task`'s when given (a task with no rows is an error naming the tasks there are).
pub fn training_rows(
    config: &Config,
    rows: Option<&Path>,
    task: Option<&str>,
) -> Result<(PathBuf, Vec<TrainingRow>)> {
    let path = rows
        .map(Path::to_owned)
        .or_else(|| config.data_path.routing_data_train.clone())
        .ok_or(AutomixError::Setting {
            key: "data_path.routing_data_train",
            message: "no training rows: set it or pass the rows".into(),
        })?;
    let mut all = read_training_rows(&path)?;
    if let Some(task) = task {
        let mut known: Vec<String> = all.iter().map(|r| r.task_name.clone()).collect();
        known.sort_unstable();
        known.dedup();
        all.retain(|r| r.task_name == task);
        if all.is_empty() {
            return Err(AutomixError::InsufficientRows(format!(
                "{}: no rows of task {task:?}; tasks here: {}",
                path.display(),
                known.join(", ")
            )));
        }
    }
    Ok((path, all))
}

/// The two-model pair to train and evaluate, and where it came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModelPair {
    /// The small (first) model.
    pub small: String,
    /// The large model.
    pub large: String,
    /// Taken from the rows' order because there is no llm_data file (callers say so).
    pub from_rows: bool,
}

/// The pair: `engine_small`/`engine_large` when both are set; else by the catalogue's
/// prices; without an llm_data file, the rows' model order (cheapest first, as collected).
/// A catalogue file that exists but is broken is an error, not the fallback.
pub fn model_pair(config: &Config, rows: &[TrainingRow]) -> Result<ModelPair> {
    let mp = &config.model_path;
    if let (Some(s), Some(l)) = (&mp.engine_small, &mp.engine_large) {
        return Ok(ModelPair {
            small: s.clone(),
            large: l.clone(),
            from_rows: false,
        });
    }
    if config
        .data_path
        .llm_data
        .as_deref()
        .is_some_and(Path::exists)
    {
        let (small, large) = small_and_large(
            &catalogue(config)?,
            mp.engine_small.as_deref(),
            mp.engine_large.as_deref(),
        )?;
        return Ok(ModelPair {
            small,
            large,
            from_rows: false,
        });
    }
    let names: Vec<&str> = rows
        .first()
        .map(|r| r.models.iter().map(|m| m.model.as_str()).collect())
        .unwrap_or_default();
    match (names.first(), names.last()) {
        (Some(s), Some(l)) if s != l => Ok(ModelPair {
            small: (*s).to_owned(),
            large: (*l).to_owned(),
            from_rows: true,
        }),
        _ => Err(AutomixError::InsufficientRows(
            "the rows carry fewer than two models".into(),
        )),
    }
}

/// The models of the rows, in their order (cheapest first, as collected).
pub fn models_in(rows: &[TrainingRow]) -> Vec<String> {
    rows.first()
        .map(|r| r.models.iter().map(|m| m.model.clone()).collect())
        .unwrap_or_default()
}

/// What to train, beyond the config.
#[derive(Debug, Clone, Default)]
pub struct TrainSpec {
    /// Rows instead of `data_path.routing_data_train`.
    pub rows: Option<PathBuf>,
    /// Only this task's rows.
    pub task: Option<String>,
    /// Only rows with these label sources ([`with_label_sources`]); empty: every row.
    pub label_sources: Vec<String>,
    /// Every row, not only `split: train`.
    pub all_rows: bool,
    /// Also solve the N-model cascade over every model of the rows.
    pub cascade: bool,
    /// Where to save instead of `model_path.save_model_path`.
    pub output: Option<PathBuf>,
}

/// A policy trained and saved.
#[derive(Debug, Clone)]
pub struct Trained {
    /// The policy.
    pub policy: RouterPolicy,
    /// Where it was saved.
    pub path: PathBuf,
    /// The pair it decides between.
    pub pair: ModelPair,
}

/// Trains the config's policy (`automix train`) and saves it.
pub fn train(config: &Config, spec: &TrainSpec) -> Result<Trained> {
    let (path, mut all) = training_rows(config, spec.rows.as_deref(), spec.task.as_deref())?;
    if !spec.label_sources.is_empty() {
        all = with_label_sources(all, &spec.label_sources, &path)?;
    }
    let rows: Vec<TrainingRow> = if spec.all_rows {
        all.clone()
    } else {
        split(&all, "train").into_iter().cloned().collect()
    };
    if rows.is_empty() {
        return Err(AutomixError::InsufficientRows(format!(
            "{}: no training rows (split: train)",
            path.display()
        )));
    }
    let pair = model_pair(config, &all)?;
    let mut policy = train_policy(config, &rows, &pair.small, &pair.large)?;
    if spec.cascade {
        policy.cascade = Some(train_cascade_plan(config, &rows, &models_in(&rows))?);
    }
    let out = spec
        .output
        .clone()
        .or_else(|| config.model_path.save_model_path.clone())
        .ok_or(AutomixError::Setting {
            key: "model_path.save_model_path",
            message: "no place to save the policy: set it or pass an output".into(),
        })?;
    policy.save(&out)?;
    Ok(Trained {
        policy,
        path: out,
        pair,
    })
}

/// The router the config describes: the saved policy (unless `no_policy`) with its
/// cascade, and live models, built through the one routing plan ([`crate::plan`]).
pub fn router(config: &Config, no_policy: bool, limits: UpstreamLimits) -> Result<Router> {
    let catalogue = catalogue(config)?;
    let policy = if no_policy {
        None
    } else {
        let path = config.policy_path().ok_or(AutomixError::Setting {
            key: "model_path.save_model_path",
            message: "no policy: set it (or load_model_path), or route without a policy".into(),
        })?;
        Some(RouterPolicy::load(path)?)
    };
    crate::plan::router(config, &catalogue, policy, prompts(config)?, limits)
}

/// The shadow of `automix serve` over `router`'s models, when `automix.shadow` is set.
pub fn shadow(config: &Config, router: &Router) -> Result<Option<crate::traffic::Shadow>> {
    let Some(settings) = config.automix.shadow.clone() else {
        return Ok(None);
    };
    let job = crate::collect::CollectJob {
        models: router.models().clone(),
        prompts: prompts(config)?,
        automix: config.automix.clone(),
        collect: config.collect.clone(),
        max_workers: 1,
        labels: crate::dataset::LabelSource::Agreement,
    };
    let judge = match &settings.judge_model {
        None => None,
        Some(name) => {
            let set = crate::models::ModelSet::from_catalogue(
                &catalogue(config)?,
                std::slice::from_ref(name),
                UpstreamLimits::batch(settings.max_concurrency),
            )?;
            set.models().first().cloned()
        }
    };
    let sink = rows_sink(config, &settings)?;
    crate::traffic::Shadow::new(settings, job, judge, sink).map(Some)
}

/// Where `settings`' rows go: its file, or the Redis stream at `belief_store`.
pub fn rows_sink(
    config: &Config,
    settings: &crate::traffic::ShadowSettings,
) -> Result<crate::traffic::sink::RowSink> {
    use crate::traffic::{RowsTarget, sink::RowSink};
    Ok(match settings.target(&config.automix.belief_store)? {
        RowsTarget::File(path) => RowSink::file(&path)?,
        RowsTarget::Stream(key) => RowSink::Stream(Box::new(row_stream(config, &key)?)),
    })
}

/// The Redis stream `key` at the config's `belief_store`.
pub fn row_stream(config: &Config, key: &str) -> Result<crate::traffic::sink::RowStream> {
    let conn = crate::redis_conn::from_settings(&config.automix)?;
    Ok(crate::traffic::sink::RowStream::new(conn, key))
}
