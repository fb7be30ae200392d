//! Tributary's Prometheus metrics: owns every metric family, their prometheus-client registry and the text
//! exposition of `/metrics` ([`Metrics::encode`]). The request log middleware, the OCI handlers, the services,
//! the background work and the store decorators ([`stores`]) record through [`Metrics`]' methods; garbage
//! collection and pruning report through [`Metrics::gc_run`] and [`Metrics::prune_run`]. Nothing here calls back
//! into the registry: it only counts. Labels are bounded sets (route kinds, never paths; upstream hosts; fixed
//! reasons and results), and recording takes no lock but a read lock (a write lock only the first time a label set
//! is seen); store operation and request timings are lock-free ([`histogram`]), read from one clock ([`clock`]).
//! A request is recorded through entries resolved once per route and method ([`http`]).
//!
//! Created once per server by [`crate::open`] (no global registry: two servers in one test process count apart)
//! and reached through `Registry::metrics`.

pub mod clock;
pub mod histogram;
pub mod http;
pub mod process;
pub mod stores;

use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::info::Info;
use prometheus_client::registry::Registry as PromRegistry;

pub use histogram::Histogram;
pub use http::Route;

/// The `[metrics]` settings: whether `/metrics` is served (and the HTTP and store timings recorded) and whether
/// anonymous callers may read it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MetricsConfig {
    /// Serve `/metrics` and time requests and store operations (`[metrics] enabled`, default on).
    pub enabled: bool,
    /// Anyone may read `/metrics`; otherwise only a caller allowed `get metrics` (`[metrics] anonymous`, default
    /// off).
    pub anonymous: bool,
}

impl Default for MetricsConfig {
    fn default() -> Self {
        MetricsConfig { enabled: true, anonymous: false }
    }
}

/// One fetch from an external registry: the source asked for, the registry that answered (the source or one of
/// its mirrors), and whether it served.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct FetchLabels {
    /// The source registry's host.
    pub source: String,
    /// The host tried (a mirror's or the source's).
    pub endpoint: String,
    /// `mirror` or `source`.
    pub via: &'static str,
    /// `served` or `failed`.
    pub outcome: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct UpstreamLabels {
    /// The upstream registry's host (`quay.io`, `registry:5000`).
    pub upstream: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ResultLabels {
    pub result: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OperationLabels {
    /// `filesystem`, `s3`, `memory` (blobs); `redb`, `etcd`, `memory` (metadata).
    pub backend: &'static str,
    pub operation: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabels {
    pub reason: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OutcomeLabels {
    pub outcome: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct BuildLabels {
    version: &'static str,
    commit: &'static str,
}

/// Why a request was refused for its credentials or rights (`tributary_auth_refusals_total{reason}`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// Credentials were given but are wrong, expired or revoked (401).
    InvalidCredentials,
    /// None were given and anonymous may not (401 with a challenge).
    Unauthenticated,
    /// A registry token that does not cover the request (401 `insufficient_scope`).
    InsufficientScope,
    /// The caller is known but lacks the rights (403).
    Denied,
}

impl Refusal {
    pub const ALL: [Refusal; 4] =
        [Refusal::InvalidCredentials, Refusal::Unauthenticated, Refusal::InsufficientScope, Refusal::Denied];

    pub fn name(self) -> &'static str {
        match self {
            Refusal::InvalidCredentials => "invalid_credentials",
            Refusal::Unauthenticated => "unauthenticated",
            Refusal::InsufficientScope => "insufficient_scope",
            Refusal::Denied => "denied",
        }
    }
}

/// Import results: `success`, or the failure's reason (`crate::upstream::UpstreamError::reason`).
pub const IMPORT_RESULTS: &[&str] =
    &["success", "InvalidImage", "Forbidden", "NotFound", "Unauthorized", "TooManyRequests", "InternalError"];

/// Webhook delivery outcomes.
pub const WEBHOOK_OUTCOMES: &[&str] = &["delivered", "given_up"];

type TimingFamily = Family<OperationLabels, Histogram, fn() -> Histogram>;

fn store_histogram() -> Histogram {
    Histogram::new(histogram::STORE_BUCKETS)
}

/// The counters webhook delivery moves (a clone shares them). [`Default`]: counters no registry exposes, for
/// delivery started without a server (tests).
#[derive(Debug, Clone, Default)]
pub struct WebhookMetrics {
    deliveries: Family<OutcomeLabels, Counter>,
    retries: Counter,
}

impl WebhookMetrics {
    /// An event handled: taken by the receiver (`delivered`) or given up after the last attempt.
    pub fn delivery(&self, delivered: bool) {
        let outcome = if delivered { "delivered" } else { "given_up" };
        self.deliveries.get_or_create(&OutcomeLabels { outcome }).inc();
    }

    /// One more attempt after a failed one.
    pub fn retry(&self) {
        self.retries.inc();
    }
}

/// Every metric of one server. See the module documentation.
#[derive(Debug)]
pub struct Metrics {
    config: MetricsConfig,
    registry: PromRegistry,
    http: http::HttpMetrics,
    received_bytes: Counter,
    sent_bytes: Counter,
    uploads_started: Counter,
    uploads_finished: Counter,
    uploads_cancelled: Counter,
    blob_bytes: Counter,
    manifest_pushes: Counter,
    manifest_pulls: Counter,
    pullthrough_hits: Family<UpstreamLabels, Counter>,
    pullthrough_misses: Family<UpstreamLabels, Counter>,
    pullthrough_errors: Family<UpstreamLabels, Counter>,
    imports: Family<ResultLabels, Counter>,
    upstream_fetches: Family<FetchLabels, Counter>,
    storage_ops: TimingFamily,
    metadata_ops: TimingFamily,
    gc_runs: Counter,
    gc_items: Counter,
    gc_bytes: Counter,
    prune_runs: Counter,
    cache_bytes: prometheus_client::metrics::gauge::Gauge,
    cache_evicted_items: Counter,
    cache_evicted_bytes: Counter,
    prune_items: Counter,
    prune_bytes: Counter,
    webhooks: WebhookMetrics,
    auth_refusals: Family<ReasonLabels, Counter>,
}

impl Metrics {
    /// Every family registered, the bounded label sets known in advance (refusal reasons, import results,
    /// webhook outcomes) created at zero so that rates over them start from the first scrape.
    pub fn new(config: MetricsConfig) -> Metrics {
        let mut m = Metrics {
            config,
            registry: PromRegistry::default(),
            http: http::HttpMetrics::default(),
            received_bytes: Counter::default(),
            sent_bytes: Counter::default(),
            uploads_started: Counter::default(),
            uploads_finished: Counter::default(),
            uploads_cancelled: Counter::default(),
            blob_bytes: Counter::default(),
            manifest_pushes: Counter::default(),
            manifest_pulls: Counter::default(),
            pullthrough_hits: Family::default(),
            pullthrough_misses: Family::default(),
            pullthrough_errors: Family::default(),
            imports: Family::default(),
            upstream_fetches: Family::default(),
            storage_ops: Family::new_with_constructor(store_histogram),
            metadata_ops: Family::new_with_constructor(store_histogram),
            gc_runs: Counter::default(),
            gc_items: Counter::default(),
            gc_bytes: Counter::default(),
            prune_runs: Counter::default(),
            cache_bytes: Default::default(),
            cache_evicted_items: Counter::default(),
            cache_evicted_bytes: Counter::default(),
            prune_items: Counter::default(),
            prune_bytes: Counter::default(),
            webhooks: WebhookMetrics::default(),
            auth_refusals: Family::default(),
        };
        for r in Refusal::ALL {
            let _ = m.auth_refusals.get_or_create(&ReasonLabels { reason: r.name() });
        }
        for &result in IMPORT_RESULTS {
            let _ = m.imports.get_or_create(&ResultLabels { result });
        }
        for &outcome in WEBHOOK_OUTCOMES {
            let _ = m.webhooks.deliveries.get_or_create(&OutcomeLabels { outcome });
        }
        m.register_all();
        m
    }

    fn register_all(&mut self) {
        let r = &mut self.registry;
        self.http.register(r);
        // Counters get `_total` from the encoder: register them without it.
        r.register("tributary_http_received_bytes", "Request body bytes received", self.received_bytes.clone());
        r.register("tributary_http_sent_bytes", "Response body bytes sent", self.sent_bytes.clone());
        r.register("tributary_uploads_started", "Blob uploads started", self.uploads_started.clone());
        r.register(
            "tributary_uploads_finished",
            "Blob uploads finished (blob verified and stored)",
            self.uploads_finished.clone(),
        );
        r.register(
            "tributary_uploads_cancelled",
            "Blob uploads cancelled by the client",
            self.uploads_cancelled.clone(),
        );
        r.register("tributary_blob_bytes_stored", "Bytes of blobs stored by finished uploads", self.blob_bytes.clone());
        r.register("tributary_manifest_pushes", "Manifests pushed (PUT accepted)", self.manifest_pushes.clone());
        r.register("tributary_manifest_pulls", "Manifests pulled (GET served)", self.manifest_pulls.clone());
        r.register(
            "tributary_pullthrough_cache_hits",
            "Reads of upstream-linked blobs served from local storage, by upstream",
            self.pullthrough_hits.clone(),
        );
        r.register(
            "tributary_pullthrough_cache_misses",
            "Reads of upstream-linked blobs fetched from the upstream, by upstream",
            self.pullthrough_misses.clone(),
        );
        r.register(
            "tributary_pullthrough_upstream_errors",
            "Pull-through fetches the upstream failed, by upstream",
            self.pullthrough_errors.clone(),
        );
        r.register("tributary_imports", "Tag imports by result (success or the failure reason)", self.imports.clone());
        r.register(
            "tributary_upstream_fetches",
            "Fetches from external registries by source, the registry tried (source or mirror) and outcome",
            self.upstream_fetches.clone(),
        );
        r.register(
            "tributary_storage_operation_duration_seconds",
            "Blob store operation latency by backend and operation",
            self.storage_ops.clone(),
        );
        r.register(
            "tributary_metadata_operation_duration_seconds",
            "Metadata store operation latency by backend and operation",
            self.metadata_ops.clone(),
        );
        r.register("tributary_gc_runs", "Garbage collection runs", self.gc_runs.clone());
        r.register("tributary_gc_removed_items", "Items garbage collection removed", self.gc_items.clone());
        r.register("tributary_gc_removed_bytes", "Bytes garbage collection removed", self.gc_bytes.clone());
        r.register("tributary_prune_runs", "Prune runs", self.prune_runs.clone());
        r.register(
            "tributary_cache_bytes",
            "Bytes of pulled-through blobs stored, as of the last eviction check",
            self.cache_bytes.clone(),
        );
        r.register(
            "tributary_cache_evicted_items",
            "Blobs evicted from the pull-through cache",
            self.cache_evicted_items.clone(),
        );
        r.register(
            "tributary_cache_evicted_bytes",
            "Bytes evicted from the pull-through cache",
            self.cache_evicted_bytes.clone(),
        );
        r.register("tributary_prune_removed_items", "Items pruning removed", self.prune_items.clone());
        r.register("tributary_prune_removed_bytes", "Bytes pruning removed", self.prune_bytes.clone());
        r.register(
            "tributary_webhook_deliveries",
            "Webhook events handled, by outcome (delivered or given up)",
            self.webhooks.deliveries.clone(),
        );
        r.register(
            "tributary_webhook_retries",
            "Webhook delivery attempts after a failed one",
            self.webhooks.retries.clone(),
        );
        r.register(
            "tributary_auth_refusals",
            "Requests refused for credentials or rights, by reason",
            self.auth_refusals.clone(),
        );
        let build = Info::new(BuildLabels { version: crate::VERSION, commit: crate::GIT_COMMIT });
        r.register("tributary_build", "The version and git commit of this build", build);
        r.register_collector(Box::new(process::ProcessCollector));
    }

    pub fn config(&self) -> MetricsConfig {
        self.config
    }

    /// The exposition in the Prometheus text format (version 0.0.4), with its content type.
    pub fn encode(&self) -> (String, &'static str) {
        let mut text = String::with_capacity(16 * 1024);
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::prometheus_text::encode(&mut text, &self.registry);
        (text, prometheus_client::encoding::prometheus_text::CONTENT_TYPE)
    }

    // ---------------------------------------------------------------------------------------------------------
    // HTTP (the request log middleware)

    /// One request answered: counted by route, method and status, its duration by route and method.
    pub fn http_request(&self, route: Route, method: actix_web::http::Method, status: u16, elapsed: Duration) {
        self.http.record(route, method, status, elapsed);
    }

    pub fn received_bytes(&self) -> &Counter {
        &self.received_bytes
    }

    pub fn sent_bytes(&self) -> &Counter {
        &self.sent_bytes
    }

    // ---------------------------------------------------------------------------------------------------------
    // The registry's work

    pub fn upload_started(&self) {
        self.uploads_started.inc();
    }

    /// An upload finished: its blob (`bytes` long) is verified and stored.
    pub fn upload_finished(&self, bytes: u64) {
        self.uploads_finished.inc();
        self.blob_bytes.inc_by(bytes);
    }

    pub fn upload_cancelled(&self) {
        self.uploads_cancelled.inc();
    }

    pub fn manifest_pushed(&self) {
        self.manifest_pushes.inc();
    }

    pub fn manifest_pulled(&self) {
        self.manifest_pulls.inc();
    }

    /// A read of a blob linked to `upstream` found it stored locally.
    pub fn pullthrough_hit(&self, upstream: &str) {
        self.pullthrough_hits.get_or_create(&UpstreamLabels { upstream: upstream.to_owned() }).inc();
    }

    /// A read of a blob linked to `upstream` went to the upstream; `ok` false when the fetch failed.
    pub fn pullthrough_miss(&self, upstream: &str, ok: bool) {
        let labels = UpstreamLabels { upstream: upstream.to_owned() };
        self.pullthrough_misses.get_or_create(&labels).inc();
        if !ok {
            self.pullthrough_errors.get_or_create(&labels).inc();
        }
    }

    /// One attempt to fetch from `endpoint` (a mirror of `source`, or `source` itself) for import or pull-through.
    pub fn upstream_fetch(&self, source: &str, endpoint: &str, mirror: bool, served: bool) {
        let labels = FetchLabels {
            source: source.to_owned(),
            endpoint: endpoint.to_owned(),
            via: if mirror { "mirror" } else { "source" },
            outcome: if served { "served" } else { "failed" },
        };
        self.upstream_fetches.get_or_create(&labels).inc();
    }

    /// A tag import ended: `success` or a reason of [`IMPORT_RESULTS`].
    pub fn import(&self, result: &'static str) {
        self.imports.get_or_create(&ResultLabels { result }).inc();
    }

    /// One garbage collection run that removed `items` (blobs, manifests, links: whatever the collector counts)
    /// totalling `bytes`. For the garbage collector to call once per run, on the replica that ran it.
    pub fn gc_run(&self, items: u64, bytes: u64) {
        self.gc_runs.inc();
        self.gc_items.inc_by(items);
        self.gc_bytes.inc_by(bytes);
    }

    /// One prune run (old images, tag history) that removed `items` totalling `bytes`; as [`Metrics::gc_run`].
    pub fn prune_run(&self, items: u64, bytes: u64) {
        self.prune_runs.inc();
        self.prune_items.inc_by(items);
        self.prune_bytes.inc_by(bytes);
    }

    /// One check of the pull-through cache ([`crate::gc::evict`]), on the replica that ran it.
    pub fn cache_evicted(&self, report: &crate::gc::evict::EvictReport) {
        let left = report.cached_bytes.saturating_sub(report.evicted_bytes);
        self.cache_bytes.set(i64::try_from(left).unwrap_or(i64::MAX));
        self.cache_evicted_items.inc_by(report.evicted.len() as u64);
        self.cache_evicted_bytes.inc_by(report.evicted_bytes);
    }

    /// The counters webhook delivery moves.
    pub fn webhooks(&self) -> WebhookMetrics {
        self.webhooks.clone()
    }

    pub fn auth_refused(&self, reason: Refusal) {
        self.auth_refusals.get_or_create(&ReasonLabels { reason: reason.name() }).inc();
    }

    // ---------------------------------------------------------------------------------------------------------
    // Stores ([`stores`])

    /// The latency histogram of blob store `operation` on `backend`, to keep and observe without a lookup.
    pub fn storage_timer(&self, backend: &'static str, operation: &'static str) -> Histogram {
        self.storage_ops.get_or_create_owned(&OperationLabels { backend, operation })
    }

    /// The latency histogram of metadata store `operation` on `backend`.
    pub fn metadata_timer(&self, backend: &'static str, operation: &'static str) -> Histogram {
        self.metadata_ops.get_or_create_owned(&OperationLabels { backend, operation })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_exposition_names_every_family_and_the_build() {
        let m = Metrics::new(MetricsConfig::default());
        m.gc_run(3, 300);
        m.auth_refused(Refusal::Denied);
        let (text, content_type) = m.encode();
        assert!(content_type.starts_with("text/plain; version=0.0.4"));
        let build =
            format!("tributary_build_info{{version=\"{}\",commit=\"{}\"}} 1\n", crate::VERSION, crate::GIT_COMMIT);
        assert!(text.contains(&build), "{text}");
        for line in [
            "tributary_gc_runs_total 1\n",
            "tributary_gc_removed_items_total 3\n",
            "tributary_gc_removed_bytes_total 300\n",
            "tributary_prune_runs_total 0\n",
            "tributary_auth_refusals_total{reason=\"denied\"} 1\n",
            "tributary_auth_refusals_total{reason=\"unauthenticated\"} 0\n",
            "tributary_imports_total{result=\"success\"} 0\n",
            "tributary_webhook_deliveries_total{outcome=\"given_up\"} 0\n",
        ] {
            assert!(text.contains(line), "{line:?} missing from\n{text}");
        }
    }
}
