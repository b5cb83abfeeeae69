//! The server's learning loop: shadow rows (`automix.shadow`) and, with `retrain_every`, a
//! background retrain every N new rows that swaps the candidate in (a reload) only when it
//! beats the serving policy out of fold; `GET /admin/traffic` shows the drift line.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::json;

use automix::config::Config;
use automix::retrain::RetrainReport;
use automix::traffic::Shadow;

use crate::auth::authorise_admin;
use crate::{ApiError, ProxyState};

/// How often the retrainer looks at the row count.
const POLL: Duration = Duration::from_millis(500);

/// Shadow answers, and what retraining needs.
#[derive(Debug)]
pub struct Learning {
    /// The shadow.
    pub shadow: Arc<Shadow>,
    /// Retraining every N rows, if on.
    pub retrain: Option<Retraining>,
}

/// Retraining in the server.
#[derive(Debug, Clone)]
pub struct Retraining {
    /// The config training reads.
    pub config: Config,
    /// The serving policy's file (a swap writes it; the reload reads it).
    pub policy_path: PathBuf,
    /// Retrain every this many new rows.
    pub every: usize,
}

impl Learning {
    /// The learning loop the config asks for over `shadow` (`retrain_every` needs the
    /// policy's file, which the reload reads).
    pub fn from_config(config: &Config, shadow: Arc<Shadow>) -> Self {
        let settings = config.automix.shadow.as_ref();
        let retrain = settings
            .and_then(|s| s.retrain_every)
            .zip(config.policy_path())
            .map(|(every, policy)| Retraining {
                config: config.clone(),
                policy_path: policy.to_owned(),
                every,
            });
        Self { shadow, retrain }
    }
}

/// Retrains every `every` new rows until the server stops (spawned by `serve`).
pub(crate) async fn retrain_loop(state: Arc<ProxyState>) {
    let Some(learning) = &state.learning else {
        return;
    };
    let Some(plan) = learning.retrain.clone() else {
        return;
    };
    let mut last = learning.shadow.counts().rows;
    loop {
        tokio::time::sleep(POLL).await;
        let rows = learning.shadow.counts().rows;
        if rows < last + plan.every as u64 {
            continue;
        }
        last = rows;
        // Every row so far: this replica's file, or the stream all replicas append to.
        let rows = match learning.shadow.rows().await {
            Ok(rows) => rows,
            Err(e) => {
                failed(&state, format!("the rows could not be read: {e}"));
                continue;
            }
        };
        let job = plan.clone();
        let done = tokio::task::spawn_blocking(move || {
            automix::retrain::retrain(&job.config, &rows, &job.policy_path)
        })
        .await;
        let report = match done {
            Ok(Ok(r)) => r,
            Ok(Err(e)) => {
                failed(&state, e.to_string());
                continue;
            }
            Err(e) => {
                failed(&state, format!("the retrain task ended: {e}"));
                continue;
            }
        };
        if report.swapped
            && let Err(e) = state.reload().await
        {
            failed(
                &state,
                format!("the better policy was saved but the reload failed: {e}"),
            );
            continue;
        }
        eprintln!(
            "automix serve: retrain on {} rows: {}",
            report.rows, report.reason
        );
        state
            .metrics
            .count_retrain(if report.swapped { "swapped" } else { "kept" });
        *automix::sync::lock(&state.last_retrain) = Some(report);
    }
}

/// A retrain that could not run: logged, counted, kept as the last report.
fn failed(state: &ProxyState, reason: String) {
    eprintln!("automix serve: retrain failed: {reason}");
    state.metrics.count_retrain("failed");
    let report = RetrainReport {
        rows: 0,
        serving: None,
        candidate: None,
        swapped: false,
        reason,
    };
    *automix::sync::lock(&state.last_retrain) = Some(report);
}

/// `GET /admin/traffic` (admin key): the drift line — live escalation rate, the kept
/// answers' agreement with the reference, the shadow's counts and the last retrain.
pub(crate) async fn traffic(
    State(state): State<Arc<ProxyState>>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    authorise_admin(&state, &headers)?;
    let Some(learning) = &state.learning else {
        return Err(ApiError::status(
            StatusCode::NOT_FOUND,
            "no_shadow",
            "this server has no shadow answers (automix.shadow is off)",
        ));
    };
    let (requests, escalated) = {
        let stats = automix::sync::lock(&state.dashboard);
        let p = stats.since_start();
        (
            p.requests,
            p.decisions.get("escalate").copied().unwrap_or(0),
        )
    };
    let counts = learning.shadow.counts();
    let body = json!({
        "requests": requests,
        "escalation_rate": (requests > 0).then(|| escalated as f64 / requests as f64),
        "kept_agreement": counts.kept_agreement,
        "shadow": counts,
        "retrain_every": learning.retrain.as_ref().map(|r| r.every),
        "last_retrain": *automix::sync::lock(&state.last_retrain),
    });
    Ok(axum::Json(body).into_response())
}
