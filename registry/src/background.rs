//! The registry's background work, and the rule that work which must happen once runs on one replica at a time.
//! [`spawn_background`] starts what `tributary serve` and [`crate::testing::TestRegistry`] both run: the import
//! controller (pending and scheduled imports, lease `imports`), webhook delivery (lease `webhooks`) and the upload
//! purge (idle upload sessions and their staged data, lease `uploads`; see `storage_backends::purge`), garbage
//! collection (lease `gc`), the scheduled image pruner (lease `prune`, off by default) and the pull-through cache's
//! eviction (lease `cache`, off unless capped). Each is a
//! [`LeaderTask`]: every replica campaigns for the lease ([`storage_backends::MetadataStore::elect`]: an etcd
//! lease, or the embedded store's in-process one); only the holder runs the work; when the lease is lost the work
//! is dropped at once (cancelled at its next await: every store write is an atomic transaction, so what a cancelled
//! pass leaves is either done or still due for the next holder) and the replica campaigns again.
//!
//! Imports asked for through the API (`imagestreamimports`, `import-image`) are not leader work: the replica that
//! got the request imports inline and answers with the result. The leader's controller reacts to the spec tags
//! that request wrote (it sees them on the change feed within milliseconds), and a per-stream lease
//! ([`crate::service::import`]) makes it wait for the requesting replica's import and then find nothing due.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use storage_backends::MetadataStore;
use tokio::sync::{watch, Notify};
use tokio::task::JoinHandle;

use crate::config::Config;
use crate::http::webhooks;
use crate::service::Registry;

/// How long [`LeaderTask::stop`] lets the work finish (the webhook cursor is saved) before cutting it off.
const STOP_GRACE: Duration = Duration::from_secs(5);

/// Pause before campaigning again after the work stepped down by itself (a conflict, a store error).
const RETRY_PAUSE: Duration = Duration::from_secs(1);

/// Work that runs only while this replica holds a lease. Dropping it cuts the work off and releases the lease
/// (without waiting); [`LeaderTask::stop`] lets the work finish and waits for the release.
pub struct LeaderTask {
    name: String,
    task: Option<JoinHandle<()>>,
    stop: watch::Sender<bool>,
    leading: watch::Receiver<bool>,
    crash: Arc<Notify>,
}

impl LeaderTask {
    /// Campaigns for lease `name` on the current tokio runtime; each time it is won, runs `work` (given a receiver
    /// that turns `true` when the task is asked to stop) until the work returns (steps down) or the lease is lost.
    pub fn spawn<W, F>(meta: Arc<dyn MetadataStore>, name: &str, work: W) -> LeaderTask
    where
        W: FnMut(watch::Receiver<bool>) -> F + Send + 'static,
        F: Future<Output = ()> + Send + 'static,
    {
        let (stop, stopping) = watch::channel(false);
        let (leading_tx, leading) = watch::channel(false);
        let crash = Arc::new(Notify::new());
        let task = tokio::spawn(lead(meta, name.to_owned(), leading_tx, stopping, crash.clone(), work));
        LeaderTask { name: name.to_owned(), task: Some(task), stop, leading, crash }
    }

    /// A task that never campaigns (this replica has nothing to do for lease `name`).
    pub fn idle(name: &str) -> LeaderTask {
        let (stop, _) = watch::channel(false);
        let (_, leading) = watch::channel(false);
        LeaderTask { name: name.to_owned(), task: None, stop, leading, crash: Arc::default() }
    }

    /// Whether this replica holds the lease and runs the work now.
    pub fn is_leader(&self) -> bool {
        *self.leading.borrow()
    }

    /// A view of [`LeaderTask::is_leader`] that outlives the task's owner being elsewhere (tests read it).
    pub fn leading(&self) -> watch::Receiver<bool> {
        self.leading.clone()
    }

    /// Asks the work to finish (within [`STOP_GRACE`], else it is cut off), then releases the lease and waits for
    /// that, so another replica takes over at once.
    pub async fn stop(mut self) {
        let _ = self.stop.send(true);
        if let Some(mut task) = self.task.take() {
            if tokio::time::timeout(STOP_GRACE * 2, &mut task).await.is_err() {
                tracing::warn!(lease = self.name, "background work did not stop in time; cut off");
                task.abort();
            }
        }
    }

    /// Cuts the work off and stops keeping the lease alive without releasing it, as a killed process would: another
    /// replica takes over when the lease expires (etcd: its TTL). For tests of failover.
    pub async fn crash(mut self) {
        self.crash.notify_one();
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
    }
}

impl Drop for LeaderTask {
    fn drop(&mut self) {
        if let Some(task) = &self.task {
            task.abort();
        }
    }
}

/// The campaign loop of a [`LeaderTask`].
async fn lead<W, F>(
    meta: Arc<dyn MetadataStore>,
    name: String,
    leading: watch::Sender<bool>,
    mut stopping: watch::Receiver<bool>,
    crash: Arc<Notify>,
    mut work: W,
) where
    W: FnMut(watch::Receiver<bool>) -> F,
    F: Future<Output = ()>,
{
    loop {
        let mut leadership = meta.elect(&name);
        tokio::select! {
            _ = leadership.acquired() => {}
            _ = stopped(&mut stopping) => return,
            _ = crash.notified() => return leadership.abandon(),
        }
        leading.send_replace(true);
        tracing::info!(lease = name, "this replica leads");
        let job = work(stopping.clone());
        let lost = tokio::select! {
            _ = leadership.lost() => true,
            _ = job => false,
            _ = crash.notified() => {
                leading.send_replace(false);
                return leadership.abandon();
            }
        };
        leading.send_replace(false);
        if lost {
            tracing::warn!(lease = name, "lease lost: work stopped; campaigning again");
        } else {
            tracing::info!(lease = name, "stepped down");
        }
        tokio::time::timeout(STOP_GRACE, leadership.resign()).await.ok();
        if *stopping.borrow() {
            return;
        }
        if !lost {
            tokio::select! {
                _ = tokio::time::sleep(RETRY_PAUSE) => {}
                _ = stopped(&mut stopping) => return,
            }
        }
    }
}

/// Returns once `stopping` turns true (or its sender is gone).
pub(crate) async fn stopped(stopping: &mut watch::Receiver<bool>) {
    let _ = stopping.wait_for(|s| *s).await;
}

/// Runs `job` every `every` while this replica holds `lease` (the first run at once, or after one interval when
/// `wait_first`), skipping the turns that find the registry read-only (nothing is written then, housekeeping
/// included). The one loop of the periodic housekeeping below.
fn spawn_periodic<J, F>(
    registry: Registry,
    lease: &'static str,
    every: Duration,
    wait_first: bool,
    job: J,
) -> LeaderTask
where
    J: Fn() -> F + Clone + Send + Sync + 'static,
    F: Future<Output = ()> + Send + 'static,
{
    let read_only = registry.read_only.clone();
    LeaderTask::spawn(registry.meta.clone(), lease, move |mut stopping| {
        let (job, read_only) = (job.clone(), read_only.clone());
        async move {
            let mut tick = tokio::time::interval(every);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            if wait_first {
                tick.tick().await;
            }
            loop {
                tokio::select! {
                    _ = tick.tick() => {}
                    _ = stopped(&mut stopping) => return,
                }
                match read_only.is_on().await {
                    Ok(false) => job().await,
                    Ok(true) => {}
                    Err(e) => tracing::warn!(lease, error = %e, "reading the read-only switch"),
                }
            }
        }
    })
}

/// The lease of the upload purge.
pub const UPLOADS_LEASE: &str = "uploads";

/// Purges upload sessions untouched for `after`, every `every`, while this replica holds [`UPLOADS_LEASE`]; not
/// while the registry is read-only.
pub fn spawn_upload_purge(registry: Registry, after: Duration, every: Duration) -> LeaderTask {
    let blobs = registry.blobs.clone();
    spawn_periodic(registry, UPLOADS_LEASE, every, false, move || {
        let blobs = blobs.clone();
        async move {
            match blobs.purge_uploads(after).await {
                Ok(r) if r.sessions.is_empty() && r.orphans.is_empty() => {}
                Ok(r) => tracing::info!(
                    sessions = r.sessions.len(),
                    bytes = r.bytes,
                    orphans = r.orphans.len(),
                    "purged idle uploads"
                ),
                Err(e) => tracing::warn!(error = %e, "upload purge failed; trying again at the next interval"),
            }
        }
    })
}

/// The lease of the garbage collector.
pub const GC_LEASE: &str = "gc";

/// Sweeps every `config.interval` (the first after one interval) with `config.grace` while this replica holds
/// [`GC_LEASE`]; not while the registry is read-only. Each sweep's outcome goes to [`record_gc_sweep`].
pub fn spawn_gc(registry: Registry, config: crate::config::gc::GcConfig) -> LeaderTask {
    if !config.enabled {
        return LeaderTask::idle(GC_LEASE);
    }
    let (collector, metrics) = (Arc::new(registry.collector()), registry.metrics.clone());
    let options = crate::gc::SweepOptions { grace: config.grace, ..Default::default() };
    spawn_periodic(registry, GC_LEASE, config.interval, true, move || {
        let (collector, metrics, options) = (collector.clone(), metrics.clone(), options.clone());
        async move {
            let outcome = crate::housekeeping::run({
                let (collector, options) = (collector.clone(), options.clone());
                async move { collector.sweep(&options).await }
            })
            .await;
            if let Err(e) = &outcome {
                tracing::warn!(error = %e, "garbage collection failed; trying again at the next interval");
            }
            record_gc_sweep(&metrics, &outcome);
        }
    })
}

/// The lease of the scheduled image pruner.
pub const PRUNE_LEASE: &str = "prune";

/// Prunes images every `config.interval` (the first after one interval) with the configured keep flags while this
/// replica holds [`PRUNE_LEASE`]; not while the registry is read-only. Off unless `[prune] enabled = true`.
pub fn spawn_prune(registry: Registry, config: crate::config::prune::PruneConfig) -> LeaderTask {
    if !config.enabled {
        return LeaderTask::idle(PRUNE_LEASE);
    }
    let (pruner, metrics) = (Arc::new(registry.pruner()), registry.metrics.clone());
    let options = crate::gc::prune::PruneOptions {
        keep_tag_revisions: config.keep_tag_revisions,
        keep_younger_than: config.keep_younger_than,
        prune_over_size_limit: false,
        all: true,
        namespace: None,
        confirm: true,
    };
    spawn_periodic(registry, PRUNE_LEASE, config.interval, true, move || {
        let (pruner, metrics, options) = (pruner.clone(), metrics.clone(), options.clone());
        async move {
            let outcome = crate::housekeeping::run({
                let (pruner, options) = (pruner.clone(), options.clone());
                async move { pruner.prune(&options).await }
            })
            .await;
            match outcome {
                // The pruner logs what it removed.
                Ok(report) => metrics.prune_run(report.deleted_objects as u64, report.bytes_freed),
                Err(e) => tracing::warn!(error = %e, "scheduled prune failed; trying again at the next interval"),
            }
        }
    })
}

/// Where a sweep's outcome goes besides the log: the hook for metrics (sweeps, items and bytes freed, failures).
pub fn record_gc_sweep(
    metrics: &crate::metrics::Metrics,
    outcome: &Result<crate::gc::SweepReport, crate::gc::GcError>,
) {
    if let Ok(report) = outcome {
        if !report.dry_run {
            metrics.gc_run(report.deleted.len() as u64, report.bytes_freed);
        }
        tracing::debug!(
            items = report.deleted.len(),
            bytes = report.bytes_freed,
            waiting = report.waiting,
            ms = report.duration_ms,
            "gc sweep"
        );
    }
}

/// The lease of the pull-through cache's eviction.
pub const CACHE_LEASE: &str = "cache";

/// Evicts the least recently pulled blobs of the pull-through cache when it is over `config`'s cap, every
/// `config.interval`, while this replica holds [`CACHE_LEASE`]; not while the registry is read-only. Off unless
/// `[cache] max-size-mb` is set.
pub fn spawn_cache_eviction(registry: Registry, config: Option<crate::config::cache::CacheConfig>) -> LeaderTask {
    let Some(config) = config else { return LeaderTask::idle(CACHE_LEASE) };
    let limits = crate::gc::evict::CacheLimits {
        max_bytes: config.max_bytes,
        low_water_bytes: config.low_water_bytes,
        grace: registry.gc_grace,
    };
    let (collector, metrics) = (Arc::new(registry.collector()), registry.metrics.clone());
    spawn_periodic(registry, CACHE_LEASE, config.interval, false, move || {
        let (collector, metrics) = (collector.clone(), metrics.clone());
        async move {
            let collector = collector.clone();
            match crate::housekeeping::run(async move { collector.evict(&limits).await }).await {
                Ok(report) => metrics.cache_evicted(&report),
                Err(e) => tracing::warn!(error = %e, "cache eviction failed; trying again at the next interval"),
            }
        }
    })
}

/// The background work of one replica (see the module documentation). Stop it with [`Background::stop`].
pub struct Background {
    pub imports: LeaderTask,
    pub webhooks: LeaderTask,
    pub uploads: LeaderTask,
    pub gc: LeaderTask,
    pub prune: LeaderTask,
    pub cache: LeaderTask,
    /// The image-change trigger controller (lease `triggers`; idle unless `[cluster] triggers`).
    pub triggers: LeaderTask,
    /// Keeps this replica's view of the image policy current ([`crate::imagepolicy::ImagePolicy::follow`]).
    pub policy: Follower,
}

/// A task that lives as long as this handle: aborted when it is dropped.
pub struct Follower(JoinHandle<()>);

impl Drop for Follower {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Starts the background work `config` asks for on the current tokio runtime: what `tributary serve` runs and
/// what tests get from [`crate::testing::TestRegistry`].
pub fn spawn_background(registry: &Registry, config: &Config) -> Background {
    Background {
        imports: crate::service::import::spawn_controller(registry.clone()),
        webhooks: webhooks::spawn_counted(
            registry.meta.clone(),
            config.webhooks.clone(),
            webhooks::Retry::default(),
            registry.metrics.webhooks(),
        ),
        uploads: spawn_upload_purge(registry.clone(), config.upload_purge_after, config.upload_purge_interval),
        gc: spawn_gc(registry.clone(), config.gc),
        prune: spawn_prune(registry.clone(), config.prune),
        cache: spawn_cache_eviction(registry.clone(), config.cache),
        triggers: crate::cluster::controller::spawn_triggers(registry.clone()),
        policy: {
            let policy = registry.policy.clone();
            Follower(tokio::spawn(async move { policy.follow().await }))
        },
    }
}

impl Background {
    /// Lets the work finish (the webhook cursor saved) and hands the leases over.
    pub async fn stop(self) {
        let Background { imports, webhooks, uploads, gc, prune, cache, triggers, policy } = self;
        drop(policy);
        futures::join!(
            imports.stop(),
            webhooks.stop(),
            uploads.stop(),
            gc.stop(),
            prune.stop(),
            cache.stop(),
            triggers.stop()
        );
    }

    /// Stops as a killed process would ([`LeaderTask::crash`]).
    pub async fn crash(self) {
        let Background { imports, webhooks, uploads, gc, prune, cache, triggers, policy } = self;
        drop(policy);
        futures::join!(
            imports.crash(),
            webhooks.crash(),
            uploads.crash(),
            gc.crash(),
            prune.crash(),
            cache.crash(),
            triggers.crash()
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use storage_backends::MemoryStore;

    #[tokio::test]
    async fn only_the_holder_works_and_the_next_one_takes_over() {
        let meta: Arc<dyn MetadataStore> = Arc::new(MemoryStore::new());
        let runs = Arc::new(AtomicUsize::new(0));
        let start = |runs: Arc<AtomicUsize>| {
            LeaderTask::spawn(meta.clone(), "work", move |mut stopping| {
                let runs = runs.clone();
                async move {
                    runs.fetch_add(1, Ordering::SeqCst);
                    stopped(&mut stopping).await;
                }
            })
        };
        let a = start(runs.clone());
        let b = start(runs.clone());
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert_eq!(runs.load(Ordering::SeqCst), 1, "one replica works");
        assert!(a.is_leader() != b.is_leader());
        let (leader, other) = if a.is_leader() { (a, b) } else { (b, a) };
        leader.stop().await;
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert!(other.is_leader());
        assert_eq!(runs.load(Ordering::SeqCst), 2, "the other replica took over");
        other.stop().await;
    }

    #[tokio::test]
    async fn work_that_steps_down_runs_again_after_a_pause() {
        let meta: Arc<dyn MetadataStore> = Arc::new(MemoryStore::new());
        let runs = Arc::new(AtomicUsize::new(0));
        let counted = runs.clone();
        let task = LeaderTask::spawn(meta, "work", move |_| {
            counted.fetch_add(1, Ordering::SeqCst);
            async {}
        });
        tokio::time::sleep(RETRY_PAUSE + Duration::from_millis(500)).await;
        assert_eq!(runs.load(Ordering::SeqCst), 2, "stepped down, paused, led again");
        task.stop().await;
    }
}
