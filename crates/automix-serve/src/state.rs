//! What every handler shares: the router (swapped whole on reload), the settings, the
//! metrics, the per-client slots and the feedback budgets.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use tokio::sync::Semaphore;

use automix::AutomixError;
use automix::dataset::QueryRow;
use automix::retrain::RetrainReport;
use automix::router::{RouteOutcome, Router};
use automix::sync::lock;
use automix::traffic::ShadowCounts;

use crate::learning::Learning;

use crate::dashboard::stats::Entry;
use crate::dashboard::{Sessions, SharedStats};
use crate::{FeedbackLimits, ProxyMetrics, ProxySettings};

/// Builds a fresh router (from the policy file) for reloads.
pub type RouterLoader = Box<dyn Fn() -> automix::Result<Router> + Send + Sync>;

/// Shared state of the proxy.
pub struct ProxyState {
    router: RwLock<Arc<Router>>,
    loader: Option<RouterLoader>,
    pub(crate) settings: ProxySettings,
    /// The metrics `/metrics` serves.
    pub metrics: ProxyMetrics,
    clients: Mutex<HashMap<String, Arc<Semaphore>>>,
    pub(crate) feedback_limits: FeedbackLimits,
    /// What `/dashboard` shows.
    pub(crate) dashboard: SharedStats,
    /// Dashboard login sessions.
    pub(crate) sessions: Sessions,
    /// Shadow answers and retraining (`automix.shadow`), if on.
    pub(crate) learning: Option<Learning>,
    /// What the last retrain found.
    pub(crate) last_retrain: Mutex<Option<RetrainReport>>,
}

impl ProxyState {
    /// State around `router`; `loader` (if any) rebuilds it on reload.
    pub fn new(router: Router, loader: Option<RouterLoader>, settings: ProxySettings) -> Arc<Self> {
        Self::with_learning(router, loader, settings, None)
    }

    /// [`ProxyState::new`] with shadow answers (every routed request is offered to the
    /// shadow once its reply is built) and, if asked, retraining on their rows.
    pub fn with_learning(
        router: Router,
        loader: Option<RouterLoader>,
        settings: ProxySettings,
        learning: Option<Learning>,
    ) -> Arc<Self> {
        Arc::new(Self {
            learning,
            last_retrain: Mutex::new(None),
            router: RwLock::new(Arc::new(router)),
            loader,
            metrics: ProxyMetrics::new(),
            clients: Mutex::new(HashMap::new()),
            feedback_limits: FeedbackLimits::new(settings.feedback),
            dashboard: SharedStats::default(),
            sessions: Sessions::default(),
            settings,
        })
    }

    /// Rebuilds the router; requests in flight keep the one they started with. Counts the
    /// old router's shared belief has not yet sent move to the new one (none is lost).
    pub async fn reload(&self) -> automix::Result<()> {
        let loader = self.loader.as_ref().ok_or_else(|| {
            AutomixError::Reload("this proxy has no policy file to reload".into())
        })?;
        let fresh = Arc::new(loader()?);
        fresh.inherit_belief(&self.router()).await;
        // A poisoned lock is recovered (the router inside is whole: it is only ever
        // replaced), never skipped: a reload that reports success has taken effect.
        *automix::sync::write(&self.router) = fresh;
        Ok(())
    }

    /// Records a finished route for `/metrics` and `/dashboard`.
    pub(crate) fn observe(&self, outcome: &RouteOutcome, elapsed: Duration) {
        self.metrics.record(outcome, elapsed);
        let entry = Entry::of(outcome, self.router().models(), elapsed);
        lock(&self.dashboard).record(entry);
    }

    /// Offers a routed (not named-route) request to the shadow, if there is one; it runs in
    /// the background and never touches the reply.
    pub(crate) fn shadow(&self, query: &QueryRow, outcome: &automix::RouteOutcome) {
        if let Some(l) = &self.learning {
            l.shadow
                .offer(query.clone(), &outcome.model_name, &outcome.route_id);
        }
    }

    /// The shadow's counts, if there is one.
    pub(crate) fn shadow_counts(&self) -> Option<ShadowCounts> {
        self.learning.as_ref().map(|l| l.shadow.counts())
    }

    /// The router requests route with now.
    pub(crate) fn router(&self) -> Arc<Router> {
        automix::sync::read(&self.router).clone()
    }

    /// The concurrency slot of `client`. Only configured keys (and the one anonymous
    /// caller) get slots, so the map is bounded by the key list, whatever tokens arrive.
    pub(crate) fn client_slot(&self, client: &str) -> Arc<Semaphore> {
        let mut map = lock(&self.clients);
        map.entry(client.to_owned())
            .or_insert_with(|| {
                Arc::new(Semaphore::new(self.settings.per_client_concurrency.max(1)))
            })
            .clone()
    }
}
