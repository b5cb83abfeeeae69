//! The routing plan: from the config, the llm_data catalogue and the trained policy, which
//! models a router needs and the router itself. The CLI (`route`, `serve` and its reloads)
//! builds routers only through here; `Router::new` then resolves the settings, the
//! verifiers and the strategy once (`strategy::build`).

use std::sync::Arc;

use automix_llm::Catalogue;
use automix_verify::PromptSet;

use crate::config::Config;
use crate::error::Result;
use crate::models::{ModelSet, UpstreamLimits, small_and_large};
use crate::router::Router;
use crate::training::RouterPolicy;

/// The models a router over `policy` calls, cheapest first by the catalogue: a cascade
/// plan's models when the plan routes (`use_pomdp_router`), else the policy's pair, else
/// the configured pair (`model_path.engine_small` / `engine_large`, defaulting to the
/// catalogue's cheapest and costliest).
pub fn router_models(
    config: &Config,
    catalogue: &Catalogue,
    policy: Option<&RouterPolicy>,
) -> Result<Vec<String>> {
    Ok(match policy {
        Some(p) => match &p.cascade {
            Some(c) if config.automix.use_pomdp_router => c.models.clone(),
            _ => vec![p.small_model.clone(), p.large_model.clone()],
        },
        None => {
            let (s, l) = small_and_large(
                catalogue,
                config.model_path.engine_small.as_deref(),
                config.model_path.engine_large.as_deref(),
            )?;
            vec![s, l]
        }
    })
}

/// The router `config` describes over `catalogue`'s live models, routing with `policy`.
pub fn router(
    config: &Config,
    catalogue: &Catalogue,
    policy: Option<RouterPolicy>,
    prompts: Arc<PromptSet>,
    limits: UpstreamLimits,
) -> Result<Router> {
    let names = router_models(config, catalogue, policy.as_ref())?;
    let models = ModelSet::from_catalogue(catalogue, &names, limits)?;
    Router::new(config, models, prompts, policy)
}
