//! The models a router or collector talks to: llm_data entries with their providers,
//! cheapest first.

use std::sync::Arc;
use std::time::Duration;

use automix_llm::{Catalogue, ChatProvider, EndpointConfig, HttpBackend, ModelEntry};

use crate::error::{AutomixError, Result};

/// One model and the provider that reaches it.
#[derive(Clone)]
pub struct ModelHandle {
    /// Its llm_data entry (prices, API model id).
    pub entry: ModelEntry,
    /// How to call it.
    pub provider: Arc<dyn ChatProvider>,
}

impl std::fmt::Debug for ModelHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ModelHandle")
            .field("entry", &self.entry)
            .finish_non_exhaustive()
    }
}

/// Models ordered from cheapest to most expensive.
#[derive(Debug, Clone)]
pub struct ModelSet {
    models: Vec<ModelHandle>,
}

/// Per-model upstream limits: concurrent calls, and how long a call may wait for a slot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UpstreamLimits {
    /// Concurrent calls per model.
    pub max_concurrency: usize,
    /// Longest wait for a slot before the call fails as busy; `None` waits.
    pub queue_timeout: Option<Duration>,
}

impl UpstreamLimits {
    /// `max_concurrency` calls per model, queueing without limit (batch work: collect, route).
    pub fn batch(max_concurrency: usize) -> Self {
        Self {
            max_concurrency,
            queue_timeout: None,
        }
    }
}

impl ModelSet {
    /// Models from given handles, sorted by price then size (stable: ties keep file order).
    pub fn new(mut models: Vec<ModelHandle>) -> Result<Self> {
        if models.is_empty() {
            return Err(AutomixError::TooFewModels {
                what: "a model set",
                needed: 1,
                got: 0,
            });
        }
        models.sort_by(|a, b| a.entry.cost_order(&b.entry));
        Ok(Self { models })
    }

    /// OpenAI-compatible backends for the named models (each at its `api_endpoint`), each
    /// with its own `limits`.
    pub fn from_catalogue(
        catalogue: &Catalogue,
        names: &[String],
        limits: UpstreamLimits,
    ) -> Result<Self> {
        let mut handles = Vec::new();
        for name in names {
            let entry = catalogue.get(name)?.clone();
            let config =
                EndpointConfig::for_model(&entry, None).map_err(|source| AutomixError::Model {
                    model: name.clone(),
                    source,
                })?;
            // llm_data's `service` picks the wire format: `anthropic` speaks the Messages API.
            let dialect = match entry.service.as_deref() {
                Some(s) if s.eq_ignore_ascii_case("anthropic") => automix_llm::Dialect::Anthropic,
                _ => automix_llm::Dialect::OpenAi,
            };
            let backend = HttpBackend::with_dialect(
                EndpointConfig {
                    max_concurrency: limits.max_concurrency.max(1),
                    queue_timeout: limits.queue_timeout,
                    request_timeout: Duration::from_secs(180),
                    deadline: Duration::from_secs(600),
                    ..config
                },
                dialect,
            )
            .map_err(|source| AutomixError::Model {
                model: name.clone(),
                source,
            })?;
            handles.push(ModelHandle {
                entry,
                provider: Arc::new(backend),
            });
        }
        Self::new(handles)
    }

    /// All models, cheapest first.
    pub fn models(&self) -> &[ModelHandle] {
        &self.models
    }

    /// The llm_data names, cheapest first.
    pub fn names(&self) -> Vec<&str> {
        self.models.iter().map(|m| m.entry.name.as_str()).collect()
    }

    /// The cheapest.
    pub fn first(&self) -> &ModelHandle {
        &self.models[0]
    }

    /// The most expensive.
    pub fn last(&self) -> &ModelHandle {
        &self.models[self.models.len() - 1]
    }

    /// Number of models.
    pub fn len(&self) -> usize {
        self.models.len()
    }

    /// Never true: construction requires a model.
    pub fn is_empty(&self) -> bool {
        self.models.is_empty()
    }
}

/// The small and large model names: explicit, else the cheapest and the most expensive in
/// [`ModelEntry::cost_order`], the order the router uses.
pub fn small_and_large(
    catalogue: &Catalogue,
    small: Option<&str>,
    large: Option<&str>,
) -> Result<(String, String)> {
    let small = match small {
        Some(n) => catalogue.get(n)?.name.clone(),
        None => catalogue.cheapest().name.clone(),
    };
    let large = match large {
        Some(n) => catalogue.get(n)?.name.clone(),
        None => catalogue.costliest().name.clone(),
    };
    if small == large {
        return Err(AutomixError::Setting {
            key: "model_path.engine_small",
            message: format!(
                "the small and the large model are both {small}; name two different models \
                 (model_path.engine_small / engine_large) or add one to llm_data"
            ),
        });
    }
    Ok((small, large))
}
