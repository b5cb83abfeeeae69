//! The online belief shared by replicas: counts of what was observed per model
//! ([`automix_core::shared_belief`]) kept in a [`BeliefStore`] (this process, or Redis), and
//! the decision table every replica re-solves from the same totals.
//!
//! **Exactly once.** A replica sends its counts in batches numbered from 0; the store
//! applies a batch only if its number is above the last one applied for that replica
//! (one Lua script in Redis: check, `HINCRBY` every field, record the number). A batch whose
//! reply was lost is re-sent with the same number, so a timeout never double-counts and a
//! failure never drops counts: new observations wait in a buffer behind the batch in flight.
//!
//! **Store down.** Routing goes on with the last table and never waits on the store (a
//! background worker talks to it); `healthy` turns false (shown by `/health` and
//! `/metrics`); buffered counts are sent when the store answers again, and a reload hands
//! them to the new router's belief.

use std::collections::HashMap;
use std::fmt::Debug;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use automix_core::belief::{ModelRates, StepObservation};
use automix_core::cascade::{CascadePolicy, CascadeSettings};
use automix_core::shared_belief::{BeliefCounts, ModelCounts, shared_table};
use serde::Serialize;

use crate::redis_conn::RedisConn;
use crate::sync::lock;

/// A store failure: the store is unreachable or answered something else.
#[derive(Debug, Clone, thiserror::Error)]
pub enum StoreError {
    /// No answer (connection refused, timeout).
    #[error("belief store unreachable: {0}")]
    Unreachable(String),
    /// An answer that is not our counts.
    #[error("belief store answered malformed counts: {0}")]
    Malformed(String),
}

/// Where the shared counts live.
#[async_trait]
pub trait BeliefStore: Send + Sync + Debug {
    /// `memory` or `redis`.
    fn kind(&self) -> &'static str;

    /// Adds `delta` as batch `seq` of `replica`, unless that batch (or a later one) was
    /// applied already; returns the totals after.
    async fn add(
        &self,
        replica: &str,
        seq: u64,
        delta: &BeliefCounts,
    ) -> Result<BeliefCounts, StoreError>;

    /// The totals of `models` models.
    async fn load(&self, models: usize) -> Result<BeliefCounts, StoreError>;
}

/// Counts in this process (one replica; also the store of the tests).
#[derive(Debug, Default)]
pub struct MemoryStore {
    inner: std::sync::Mutex<(Option<BeliefCounts>, HashMap<String, u64>)>,
}

#[async_trait]
impl BeliefStore for MemoryStore {
    fn kind(&self) -> &'static str {
        "memory"
    }

    async fn add(
        &self,
        replica: &str,
        seq: u64,
        delta: &BeliefCounts,
    ) -> Result<BeliefCounts, StoreError> {
        let mut inner = lock(&self.inner);
        let (totals, seqs) = &mut *inner;
        let totals = totals.get_or_insert_with(|| BeliefCounts::new(delta.models.len()));
        if seqs.get(replica).is_none_or(|last| seq > *last) {
            totals.merge(delta);
            seqs.insert(replica.to_owned(), seq);
        }
        Ok(totals.clone())
    }

    async fn load(&self, models: usize) -> Result<BeliefCounts, StoreError> {
        Ok(lock(&self.inner)
            .0
            .clone()
            .unwrap_or_else(|| BeliefCounts::new(models)))
    }
}

/// Counts in Redis, shared by every replica that uses the same URL and key prefix.
#[derive(Debug)]
pub struct RedisStore {
    conn: RedisConn,
    counts_key: String,
    seqs_key: String,
}

/// Applies a batch once: skip it when its number is not above the replica's last one.
const ADD_SCRIPT: &str = r"
local last = tonumber(redis.call('HGET', KEYS[2], ARGV[1]) or '-1')
if tonumber(ARGV[2]) > last then
  for i = 3, #ARGV, 2 do
    redis.call('HINCRBY', KEYS[1], ARGV[i], ARGV[i + 1])
  end
  redis.call('HSET', KEYS[2], ARGV[1], ARGV[2])
end
return redis.call('HGETALL', KEYS[1])
";

impl RedisStore {
    /// A store over `conn` (which connects on first use, so a replica starts even while
    /// Redis is down) under `prefix`.
    pub fn new(conn: RedisConn, prefix: &str) -> Self {
        Self {
            conn,
            counts_key: format!("{prefix}:counts"),
            seqs_key: format!("{prefix}:seqs"),
        }
    }
}

/// The counts of a flat `HGETALL` reply (`m{i}:{field}` and `updates`).
fn parse_counts(flat: &[String], models: usize) -> Result<BeliefCounts, StoreError> {
    let mut counts = BeliefCounts::new(models);
    for pair in flat.chunks(2) {
        let [field, value] = pair else {
            return Err(StoreError::Malformed("odd reply".into()));
        };
        let value: u64 = value
            .parse()
            .map_err(|_| StoreError::Malformed(format!("{field} = {value}")))?;
        if field == "updates" {
            counts.updates = value;
            continue;
        }
        let (model, name) = field
            .strip_prefix('m')
            .and_then(|f| f.split_once(':'))
            .and_then(|(i, n)| i.parse::<usize>().ok().map(|i| (i, n)))
            .ok_or_else(|| StoreError::Malformed(format!("field {field}")))?;
        let slot: &mut ModelCounts = counts
            .models
            .get_mut(model)
            .ok_or_else(|| StoreError::Malformed(format!("model {model} of {models}")))?;
        if !slot.set(name, value) {
            return Err(StoreError::Malformed(format!("field {field}")));
        }
    }
    Ok(counts)
}

#[async_trait]
impl BeliefStore for RedisStore {
    fn kind(&self) -> &'static str {
        "redis"
    }

    async fn add(
        &self,
        replica: &str,
        seq: u64,
        delta: &BeliefCounts,
    ) -> Result<BeliefCounts, StoreError> {
        let add = redis::Script::new(ADD_SCRIPT);
        let mut script = add.prepare_invoke();
        script
            .key(&self.counts_key)
            .key(&self.seqs_key)
            .arg(replica)
            .arg(seq);
        for (i, m) in delta.models.iter().enumerate() {
            for (name, v) in m.fields().into_iter().filter(|(_, v)| *v > 0) {
                script.arg(format!("m{i}:{name}")).arg(v);
            }
        }
        script.arg("updates").arg(delta.updates);
        let flat: Vec<String> = self
            .conn
            .run(async |mut c| script.invoke_async(&mut c).await)
            .await?;
        parse_counts(&flat, delta.models.len())
    }

    async fn load(&self, models: usize) -> Result<BeliefCounts, StoreError> {
        let key = self.counts_key.clone();
        let flat: Vec<String> = self
            .conn
            .run(async |mut c| redis::cmd("HGETALL").arg(&key).query_async(&mut c).await)
            .await?;
        parse_counts(&flat, models)
    }
}

/// What the cascade needs to re-solve its table from the shared counts.
#[derive(Debug, Clone)]
pub struct TableInputs {
    /// Model names, cheapest first.
    pub names: Vec<String>,
    /// Answer cost per model (cost units).
    pub answer_cost: Vec<f64>,
    /// Verification cost per model.
    pub verify_cost: Vec<f64>,
    /// λ, γ, `max_escalations` of the trained plan.
    pub settings: CascadeSettings,
    /// The trained rates the posterior starts from.
    pub prior: ModelRates,
}

/// Batches not yet confirmed by the store, and the replica id they are numbered under.
#[derive(Debug)]
struct Outbox {
    replica: String,
    in_flight: Option<(u64, BeliefCounts)>,
    next_seq: u64,
}

/// The shared counts as this replica last saw them, and the table solved from them.
#[derive(Debug)]
struct View {
    totals: BeliefCounts,
    table: Arc<CascadePolicy>,
    synced: Instant,
}

/// A replica's handle on the shared belief.
///
/// **Off the request path.** Routing reads the last table and folding an observation in
/// only adds to a buffer: neither ever waits on the store. A background worker (started by
/// the first observation, inside the runtime) sends the buffer as numbered batches, re-reads
/// the totals every [`SYNC_EVERY`], and backs off exponentially (up to [`MAX_BACKOFF`])
/// while the store fails.
#[derive(Debug)]
pub struct SharedBelief {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    store: Arc<dyn BeliefStore>,
    inputs: TableInputs,
    /// New counts: a plain lock, never held across an await.
    buffer: std::sync::Mutex<BeliefCounts>,
    /// The batch in flight: held by whoever talks to the store.
    outbox: tokio::sync::Mutex<Outbox>,
    view: std::sync::Mutex<View>,
    healthy: AtomicBool,
    errors: AtomicU64,
    wake: Arc<tokio::sync::Notify>,
    worker: std::sync::Once,
}

/// What `/admin/belief` shows, for the shared belief and the in-process one alike.
#[derive(Debug, Clone, Serialize)]
pub struct BeliefSnapshot {
    /// `memory` or `redis`.
    pub store: &'static str,
    /// Whether the last store call succeeded.
    pub healthy: bool,
    /// Observations folded into the shared counts.
    pub updates: u64,
    /// Counts waiting for the store (non-zero while it is down).
    pub pending: u64,
    /// Failed store calls since start.
    pub store_errors: u64,
    /// Posterior mean per model.
    pub models: Vec<ModelPosterior>,
    /// The decision table the replica routes with.
    pub table: CascadePolicy,
}

/// One model's posterior mean rates.
#[derive(Debug, Clone, Serialize)]
pub struct ModelPosterior {
    /// llm_data name.
    pub name: String,
    /// Success rate.
    pub theta: f64,
    /// P(positive verdict | correct).
    pub tpr: f64,
    /// P(positive verdict | wrong).
    pub fpr: f64,
}

/// How often the worker re-reads the shared counts.
pub const SYNC_EVERY: Duration = Duration::from_secs(1);

/// The longest wait between store attempts while it fails.
pub const MAX_BACKOFF: Duration = Duration::from_secs(5);

/// The first wait after a failed store call.
const MIN_BACKOFF: Duration = Duration::from_millis(100);

impl SharedBelief {
    /// A replica of the belief in `store`, starting from the trained table.
    pub fn new(store: Arc<dyn BeliefStore>, inputs: TableInputs) -> automix_core::Result<Self> {
        let n = inputs.names.len();
        let totals = BeliefCounts::new(n);
        let table = Arc::new(solve(&inputs, &totals)?);
        let inner = Inner {
            store,
            inputs,
            buffer: std::sync::Mutex::new(BeliefCounts::new(n)),
            outbox: tokio::sync::Mutex::new(Outbox {
                replica: replica_id(),
                in_flight: None,
                next_seq: 0,
            }),
            view: std::sync::Mutex::new(View {
                totals,
                table,
                synced: Instant::now() - SYNC_EVERY,
            }),
            healthy: AtomicBool::new(true),
            errors: AtomicU64::new(0),
            wake: Arc::new(tokio::sync::Notify::new()),
            worker: std::sync::Once::new(),
        };
        Ok(Self {
            inner: Arc::new(inner),
        })
    }

    /// The table to route with now.
    pub fn table(&self) -> Arc<CascadePolicy> {
        lock(&self.inner.view).table.clone()
    }

    /// Whether the last store call succeeded.
    pub fn healthy(&self) -> bool {
        self.inner.healthy.load(Ordering::Relaxed)
    }

    /// Counts `observations` (those with known correctness) for the worker to send. Never
    /// waits on the store.
    pub fn observe(&self, observations: &[StepObservation]) {
        let counted = lock(&self.inner.buffer).observe(observations);
        self.start_worker();
        if counted > 0 {
            self.inner.wake.notify_one();
        }
    }

    /// Starts the background worker once, where a Tokio runtime runs (a belief used outside
    /// one is synced by [`Self::sync`] only).
    fn start_worker(&self) {
        if tokio::runtime::Handle::try_current().is_err() {
            return;
        }
        self.inner.worker.call_once(|| {
            let weak = Arc::downgrade(&self.inner);
            let wake = self.inner.wake.clone();
            tokio::spawn(run_worker(weak, wake));
        });
    }

    /// Sends what is waiting, then re-reads the totals and re-solves the table (the admin
    /// view and tests call this; routing never does).
    pub async fn sync(&self) {
        self.inner.sync().await;
    }

    /// Takes over what `old` (the belief of the router a reload replaces) has not yet sent:
    /// its buffer, its batch in flight and its batch numbering, so a reload loses no counts
    /// and the store still applies each batch once. `old` goes on under a fresh replica id
    /// for whatever requests still in flight fold into it.
    pub async fn inherit(&self, old: &SharedBelief) {
        let moved = std::mem::replace(
            &mut *lock(&old.inner.buffer),
            BeliefCounts::new(old.inner.inputs.names.len()),
        );
        let same_shape = moved.models.len() == self.inner.inputs.names.len();
        if !same_shape {
            eprintln!(
                "automix: the reloaded plan has other models; {} pending counts of the old \
                 belief stay with it",
                moved.updates
            );
            lock(&old.inner.buffer).merge(&moved);
            return;
        }
        {
            let mut theirs = old.inner.outbox.lock().await;
            let mut ours = self.inner.outbox.lock().await;
            let fresh = Outbox {
                replica: replica_id(),
                in_flight: None,
                next_seq: 0,
            };
            let taken = std::mem::replace(&mut *theirs, fresh);
            if ours.in_flight.is_none() && ours.next_seq == 0 {
                *ours = taken;
            } else if let Some((_, batch)) = taken.in_flight {
                // Never happens in a reload (the new router has sent nothing yet); kept
                // correct anyway: resent as new counts of ours.
                lock(&self.inner.buffer).merge(&batch);
            }
        }
        lock(&self.inner.buffer).merge(&moved);
        self.start_worker();
        self.inner.wake.notify_one();
    }

    /// The posterior, the counts and the table, after syncing with the store.
    pub async fn snapshot(&self) -> BeliefSnapshot {
        let inner = &self.inner;
        inner.sync().await;
        let pending = {
            let outbox = inner.outbox.lock().await;
            lock(&inner.buffer).updates + outbox.in_flight.as_ref().map_or(0, |(_, b)| b.updates)
        };
        let view = lock(&inner.view);
        let p = view.totals.posterior(&inner.inputs.prior);
        let models = posteriors(&inner.inputs.names, &p.theta, &p.tpr, &p.fpr);
        BeliefSnapshot {
            store: inner.store.kind(),
            healthy: self.healthy(),
            updates: view.totals.updates,
            pending,
            store_errors: inner.errors.load(Ordering::Relaxed),
            models,
            table: (*view.table).clone(),
        }
    }
}

/// The worker: sends counts when woken (or every [`SYNC_EVERY`], re-reading the totals),
/// waiting longer after each failure. Ends when the belief is dropped.
async fn run_worker(weak: std::sync::Weak<Inner>, wake: Arc<tokio::sync::Notify>) {
    let mut backoff: Option<Duration> = None;
    loop {
        match backoff {
            // While the store fails, new counts do not hurry the next attempt.
            Some(wait) => tokio::time::sleep(wait).await,
            None => {
                tokio::select! {
                    () = wake.notified() => {}
                    () = tokio::time::sleep(SYNC_EVERY) => {}
                }
            }
        }
        let Some(inner) = weak.upgrade() else {
            return;
        };
        let ok = inner.flush().await && inner.sync_if_due().await;
        backoff = if ok {
            None
        } else {
            Some(backoff.map_or(MIN_BACKOFF, |b| (b * 2).min(MAX_BACKOFF)))
        };
    }
}

impl Inner {
    async fn sync(&self) {
        if self.flush().await {
            self.load().await;
        }
    }

    async fn sync_if_due(&self) -> bool {
        if lock(&self.view).synced.elapsed() < SYNC_EVERY {
            return true;
        }
        self.load().await
    }

    async fn load(&self) -> bool {
        match self.store.load(self.inputs.names.len()).await {
            Ok(totals) => {
                self.healthy.store(true, Ordering::Relaxed);
                self.adopt(totals);
                true
            }
            Err(e) => {
                self.failed(&e);
                false
            }
        }
    }

    /// Sends the batch in flight (again, with its number, if it failed before), then the
    /// buffer as the next batch. False when the store failed.
    async fn flush(&self) -> bool {
        let mut outbox = self.outbox.lock().await;
        loop {
            if outbox.in_flight.is_none() {
                let n = self.inputs.names.len();
                let batch = std::mem::replace(&mut *lock(&self.buffer), BeliefCounts::new(n));
                if batch.is_empty() {
                    return true;
                }
                let seq = outbox.next_seq;
                outbox.next_seq += 1;
                outbox.in_flight = Some((seq, batch));
            }
            let Some((seq, batch)) = outbox.in_flight.clone() else {
                return true;
            };
            match self.store.add(&outbox.replica, seq, &batch).await {
                Ok(totals) => {
                    outbox.in_flight = None;
                    self.healthy.store(true, Ordering::Relaxed);
                    self.adopt(totals);
                }
                Err(e) => {
                    self.failed(&e);
                    return false;
                }
            }
        }
    }

    fn failed(&self, e: &StoreError) {
        self.healthy.store(false, Ordering::Relaxed);
        self.errors.fetch_add(1, Ordering::Relaxed);
        eprintln!("automix: {e}; routing on the last table");
    }

    /// Takes `totals` (newer than what this replica had) and re-solves the table from them:
    /// replicas holding the same totals hold the same table.
    fn adopt(&self, totals: BeliefCounts) {
        let mut view = lock(&self.view);
        view.synced = Instant::now();
        if totals == view.totals {
            return;
        }
        match solve(&self.inputs, &totals) {
            Ok(table) => {
                view.table = Arc::new(table);
                view.totals = totals;
            }
            Err(e) => eprintln!("automix: re-solving the shared table failed: {e}"),
        }
    }
}

/// Per model, its posterior mean rates (for a [`BeliefSnapshot`] of either belief).
pub fn posteriors(
    names: &[String],
    theta: &[f64],
    tpr: &[f64],
    fpr: &[f64],
) -> Vec<ModelPosterior> {
    names
        .iter()
        .enumerate()
        .map(|(i, name)| ModelPosterior {
            name: name.clone(),
            theta: theta[i],
            tpr: tpr[i],
            fpr: fpr[i],
        })
        .collect()
}

fn solve(inputs: &TableInputs, totals: &BeliefCounts) -> automix_core::Result<CascadePolicy> {
    shared_table(
        &inputs.names,
        &inputs.answer_cost,
        &inputs.verify_cost,
        inputs.settings,
        &inputs.prior,
        totals,
    )
}

/// An id for a replica's batches: 128 random bits, unique per belief.
fn replica_id() -> String {
    format!("{:032x}", rand::random::<u128>())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redis_replies_parse_into_counts_and_bad_ones_are_errors() {
        let flat: Vec<String> = ["m0:correct", "3", "m1:fp", "2", "updates", "5"]
            .map(String::from)
            .to_vec();
        let c = parse_counts(&flat, 2).unwrap();
        assert_eq!(
            (c.models[0].correct, c.models[1].false_positive, c.updates),
            (3, 2, 5)
        );
        for bad in [vec!["m0:correct", "x"], vec!["m7:tp", "1"], vec!["zz", "1"]] {
            let flat: Vec<String> = bad.into_iter().map(String::from).collect();
            assert!(parse_counts(&flat, 2).is_err());
        }
    }

    #[tokio::test]
    async fn a_batch_resent_after_a_lost_reply_is_counted_once() {
        let store = MemoryStore::default();
        let mut delta = BeliefCounts::new(1);
        delta.observe(&[StepObservation {
            model: 0,
            verdict: None,
            correct: Some(true),
        }]);
        store.add("r", 0, &delta).await.unwrap();
        let again = store.add("r", 0, &delta).await.unwrap();
        assert_eq!(again.updates, 1);
        let next = store.add("r", 1, &delta).await.unwrap();
        assert_eq!(next.updates, 2);
        assert_eq!(store.add("other", 0, &delta).await.unwrap().updates, 3);
    }
}
