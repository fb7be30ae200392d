//! A real registry for tests: bound on 127.0.0.1:0 (the port is read back from the bound socket, never guessed),
//! served on its own thread with a fresh temporary data directory, running the same background work as
//! `tributary serve` ([`crate::spawn_background`]), stopped on drop (the background work first: the webhook cursor is
//! saved and the leases handed over, as a stopped server does).
//!
//! `TestRegistry::start()` runs without access control (`auth = none`) so that protocol tests need no
//! credentials; `TestRegistry::builder().with_admin_token("…").start()` runs with it on, `admin` holding that token.
//! `with_limits` and `with_audit_file` set the `[limits]` and `[audit]` settings.

use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};

use auth::tokens::Secret;
use auth::AuthMode;

use crate::config::limits::{AuditConfig, AuditTarget, Limits};
use crate::config::storage::Storage;
use crate::config::{Config, DEFAULT_MAX_MANIFEST_BYTES};
use crate::service::Registry;

/// A running registry. `TestRegistry::start()` and go.
pub struct TestRegistry {
    addr: SocketAddr,
    data_dir: PathBuf,
    _tmp: Option<tempfile::TempDir>,
    handle: actix_web::dev::ServerHandle,
    thread: Option<std::thread::JoinHandle<()>>,
    admin_token: Option<String>,
    registry: Registry,
    leading: Leading,
    /// Set by [`TestRegistry::crash`]: the background work stops as in a killed process.
    crashed: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

/// Whether this replica holds each background lease now.
struct Leading {
    imports: tokio::sync::watch::Receiver<bool>,
    webhooks: tokio::sync::watch::Receiver<bool>,
    uploads: tokio::sync::watch::Receiver<bool>,
    gc: tokio::sync::watch::Receiver<bool>,
}

/// How to start a [`TestRegistry`].
#[derive(Debug, Default)]
pub struct Builder {
    data_dir: Option<PathBuf>,
    admin_token: Option<String>,
    allowed_registries: Vec<String>,
    scheduled_import_interval: Option<std::time::Duration>,
    storage: Storage,
    webhooks: Vec<url::Url>,
    upload_purge: Option<(std::time::Duration, std::time::Duration)>,
    read_only: bool,
    stores: Option<Stores>,
    limits: Limits,
    audit: AuditConfig,
    outbound: crate::upstream::Outbound,
    max_manifest_bytes: Option<usize>,
    metrics: crate::metrics::MetricsConfig,
    gc: Option<crate::config::gc::GcConfig>,
    prune: crate::config::prune::PruneConfig,
    cache: Option<crate::config::cache::CacheConfig>,
    cluster: crate::config::cluster::ClusterConfig,
}

/// Stores a test opened itself (see [`Builder::with_stores`]).
#[derive(Clone)]
struct Stores(std::sync::Arc<dyn storage_backends::MetadataStore>, storage_backends::BlobStore);

impl std::fmt::Debug for Stores {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Stores")
    }
}

impl Builder {
    /// Serve over these stores rather than opening the configured ones (fault-injecting decorators, say; see
    /// `storage_backends::testing::faults`). The blob store should keep its sessions in `meta`.
    pub fn with_stores(
        mut self,
        meta: std::sync::Arc<dyn storage_backends::MetadataStore>,
        blobs: storage_backends::BlobStore,
    ) -> Builder {
        self.stores = Some(Stores(meta, blobs));
        self
    }

    /// These limits (the `[limits]` settings) rather than the defaults.
    pub fn with_limits(mut self, limits: Limits) -> Builder {
        self.limits = limits;
        self
    }

    /// Write the audit log to `path`, rotating past `max_bytes` and keeping `max_files` rotated files.
    pub fn with_audit_file(mut self, path: &Path, max_bytes: u64, max_files: usize) -> Builder {
        self.audit = AuditConfig {
            target: Some(AuditTarget::File { path: path.to_path_buf(), max_bytes, max_files }),
            queue: crate::config::limits::DEFAULT_AUDIT_QUEUE,
        };
        self
    }

    /// These `[cluster]` settings (image lookup admission, image-change triggers; off by default).
    pub fn with_cluster(mut self, cluster: crate::config::cluster::ClusterConfig) -> Builder {
        self.cluster = cluster;
        self
    }

    /// These outbound rules and upstream time-outs (the `outbound-*` and `upstream-*-timeout` settings).
    pub fn with_outbound(mut self, outbound: crate::upstream::Outbound) -> Builder {
        self.outbound = outbound;
        self
    }

    /// The manifest limit (`max-manifest-bytes`), for pushes and for what is read from upstreams.
    pub fn with_max_manifest_bytes(mut self, bytes: usize) -> Builder {
        self.max_manifest_bytes = Some(bytes);
        self
    }

    /// These `[metrics]` settings (default: on, not anonymous).
    pub fn with_metrics(mut self, metrics: crate::metrics::MetricsConfig) -> Builder {
        self.metrics = metrics;
        self
    }

    /// Garbage collection in the background every `interval` with `grace` (off unless asked for).
    pub fn with_gc(mut self, interval: std::time::Duration, grace: std::time::Duration) -> Builder {
        self.gc = Some(crate::config::gc::GcConfig { enabled: true, interval, grace });
        self
    }

    /// Purge uploads untouched for `after`, checking every `interval` (the `upload-purge-*` settings).
    /// Runs the scheduled image pruner every `interval` with these keep flags (off otherwise).
    pub fn with_prune(
        mut self,
        interval: std::time::Duration,
        keep_tag_revisions: usize,
        keep_younger_than: std::time::Duration,
    ) -> Builder {
        self.prune =
            crate::config::prune::PruneConfig { enabled: true, interval, keep_tag_revisions, keep_younger_than };
        self
    }

    /// Caps the pull-through cache at `max_bytes`, evicting down to `low_water_bytes`, checked every `interval`
    /// (the `[cache]` settings).
    pub fn with_cache(mut self, max_bytes: u64, low_water_bytes: u64, interval: std::time::Duration) -> Builder {
        self.cache = Some(crate::config::cache::CacheConfig { max_bytes, low_water_bytes, interval });
        self
    }

    pub fn with_upload_purge(mut self, after: std::time::Duration, interval: std::time::Duration) -> Builder {
        self.upload_purge = Some((after, interval));
        self
    }

    /// Read-only by the configuration (the `read-only` setting).
    pub fn read_only(mut self) -> Builder {
        self.read_only = true;
        self
    }

    /// POST tag change events to these URLs (the `webhooks` setting).
    pub fn with_webhooks(mut self, urls: &[&str]) -> Builder {
        self.webhooks = urls.iter().map(|u| u.parse().expect("a webhook URL")).collect();
        self
    }

    /// Open these stores (blobs in an S3 bucket, metadata in etcd) rather than both under the data directory.
    pub fn with_storage(mut self, storage: Storage) -> Builder {
        self.storage = storage;
        self
    }

    /// Access control on, with `token` as the cluster administrator's token.
    pub fn with_admin_token(mut self, token: impl Into<String>) -> Builder {
        self.admin_token = Some(token.into());
        self
    }

    /// Keep the data in `dir` (kept after the registry stops) rather than in a fresh temporary directory.
    pub fn in_dir(mut self, dir: &Path) -> Builder {
        self.data_dir = Some(dir.to_path_buf());
        self
    }

    /// Only these registries may be imported from (`allowedRegistriesForImport`).
    pub fn with_allowed_registries(mut self, hosts: &[&str]) -> Builder {
        self.allowed_registries = hosts.iter().map(|h| h.to_string()).collect();
        self
    }

    /// Scheduled imports every `interval` (at least [`crate::service::import::MIN_SCHEDULED_INTERVAL`]).
    pub fn with_scheduled_import_interval(mut self, interval: std::time::Duration) -> Builder {
        self.scheduled_import_interval = Some(interval);
        self
    }

    pub fn start(self) -> TestRegistry {
        let options = Options {
            admin_token: self.admin_token,
            allowed_registries: self.allowed_registries,
            scheduled_import_interval: self
                .scheduled_import_interval
                .unwrap_or(std::time::Duration::from_secs(crate::config::DEFAULT_SCHEDULED_IMPORT_INTERVAL_SECS)),
            storage: self.storage,
            webhooks: self.webhooks,
            upload_purge: self
                .upload_purge
                .unwrap_or((crate::config::DEFAULT_UPLOAD_PURGE_AFTER, crate::config::DEFAULT_UPLOAD_PURGE_INTERVAL)),
            read_only: self.read_only,
            stores: self.stores,
            limits: self.limits,
            audit: self.audit,
            outbound: self.outbound,
            max_manifest_bytes: self.max_manifest_bytes.unwrap_or(DEFAULT_MAX_MANIFEST_BYTES),
            metrics: self.metrics,
            gc: self.gc.unwrap_or(crate::config::gc::GcConfig { enabled: false, ..Default::default() }),
            prune: self.prune,
            cache: self.cache,
            cluster: self.cluster,
        };
        match &self.data_dir {
            Some(dir) => TestRegistry::launch(dir, options),
            None => {
                let tmp = tempfile::tempdir().expect("temporary data directory");
                let mut r = TestRegistry::launch(tmp.path(), options);
                r._tmp = Some(tmp);
                r
            }
        }
    }
}

struct Options {
    admin_token: Option<String>,
    allowed_registries: Vec<String>,
    scheduled_import_interval: std::time::Duration,
    storage: Storage,
    webhooks: Vec<url::Url>,
    upload_purge: (std::time::Duration, std::time::Duration),
    read_only: bool,
    stores: Option<Stores>,
    limits: Limits,
    audit: AuditConfig,
    outbound: crate::upstream::Outbound,
    max_manifest_bytes: usize,
    metrics: crate::metrics::MetricsConfig,
    gc: crate::config::gc::GcConfig,
    prune: crate::config::prune::PruneConfig,
    cache: Option<crate::config::cache::CacheConfig>,
    cluster: crate::config::cluster::ClusterConfig,
}

impl TestRegistry {
    /// Starts a registry without access control on a fresh temporary data directory.
    pub fn start() -> TestRegistry {
        TestRegistry::builder().start()
    }

    /// Starts a registry without access control on `data_dir` (kept after the registry stops).
    pub fn start_in(data_dir: &Path) -> TestRegistry {
        TestRegistry::builder().in_dir(data_dir).start()
    }

    pub fn builder() -> Builder {
        Builder::default()
    }

    fn launch(data_dir: &Path, options: Options) -> TestRegistry {
        let Options {
            admin_token,
            allowed_registries: builder_allowed,
            scheduled_import_interval: builder_interval,
            storage,
            webhooks,
            upload_purge,
            read_only,
            stores,
            limits,
            audit,
            outbound,
            max_manifest_bytes,
            metrics,
            gc,
            prune,
            cache,
            cluster,
        } = options;
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
        let addr = listener.local_addr().expect("local address");
        let config = Config {
            listen: addr,
            data_dir: data_dir.to_path_buf(),
            public_host: addr.to_string(),
            max_manifest_bytes,
            auth: if admin_token.is_some() { AuthMode::Token } else { AuthMode::None },
            admin_token: admin_token.clone().map(Secret::new),
            tls: None,
            webhooks,
            allowed_registries: builder_allowed,
            outbound,
            scheduled_import_interval: builder_interval,
            upload_purge_after: upload_purge.0,
            upload_purge_interval: upload_purge.1,
            read_only,
            storage,
            limits,
            audit,
            metrics,
            gc,
            prune,
            cache,
            cluster,
        };
        let (tx, rx) = std::sync::mpsc::channel();
        let crashed = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let crashing = crashed.clone();
        let thread = std::thread::spawn(move || {
            let system = actix_web::rt::System::new();
            system.block_on(async move {
                // A registry stopped a moment ago on the same data directory may still have worker threads
                // letting go of the database; give them a few seconds.
                let mut attempts = 0;
                let registry = loop {
                    if let Some(Stores(meta, blobs)) = &stores {
                        let metrics = std::sync::Arc::new(crate::metrics::Metrics::new(config.metrics));
                        break crate::assemble(&config, meta.clone(), blobs.clone(), metrics)
                            .expect("assemble the registry");
                    }
                    match crate::open(&config).await {
                        Ok(r) => break r,
                        Err(e) if attempts < 50 && e.to_string().contains("already open") => {
                            attempts += 1;
                            actix_web::rt::time::sleep(std::time::Duration::from_millis(100)).await;
                        }
                        Err(e) => panic!("open registry: {e}"),
                    }
                };
                crate::check(&registry).await.expect("the blob store answers");
                let token = config.admin_token.as_ref().map(Secret::expose);
                registry.auth.bootstrap(token, Some(&config.data_dir)).await.expect("bootstrap access control");
                if let Some(store) = registry.policy.store() {
                    store.seed().await.expect("seed the image policy");
                }
                let background = crate::spawn_background(&registry, &config);
                let leading = Leading {
                    imports: background.imports.leading(),
                    webhooks: background.webhooks.leading(),
                    uploads: background.uploads.leading(),
                    gc: background.gc.leading(),
                };
                let options = crate::http::ServeOptions {
                    limits: config.limits.clone(),
                    audit: crate::audit::AuditLog::open(&config.audit).expect("open the audit log"),
                    ..crate::http::ServeOptions::default()
                };
                let server = crate::http::serve_with(registry.clone(), listener, None, options).expect("serve");
                tx.send((server.handle(), registry, leading)).expect("hand back the server handle");
                let _ = server.await;
                if crashing.load(std::sync::atomic::Ordering::SeqCst) {
                    background.crash().await;
                } else {
                    background.stop().await;
                }
            });
        });
        let (handle, registry, leading) = rx.recv().expect("server started");
        TestRegistry {
            addr,
            data_dir: data_dir.to_path_buf(),
            _tmp: None,
            handle,
            thread: Some(thread),
            admin_token,
            registry,
            leading,
            crashed,
        }
    }

    /// `http://127.0.0.1:PORT`
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// `127.0.0.1:PORT`, as image references want it.
    pub fn host(&self) -> String {
        self.addr.to_string()
    }

    pub fn data_dir(&self) -> &Path {
        &self.data_dir
    }

    /// The cluster administrator's token, when access control is on.
    pub fn admin_token(&self) -> Option<&str> {
        self.admin_token.as_deref()
    }

    /// The running registry's state (same stores), for tests that reach behind the HTTP API.
    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    /// Stops as a killed process would, as far as other replicas can tell: the background work is cut off (the
    /// webhook cursor not saved) and its leases are not released, so another replica takes over only when they
    /// expire (etcd: the lease TTL).
    pub fn crash(self) {
        self.crashed.store(true, std::sync::atomic::Ordering::SeqCst);
        drop(self);
    }

    /// Whether this replica runs the import controller now (holds the lease `imports`).
    pub fn leads_imports(&self) -> bool {
        *self.leading.imports.borrow()
    }

    /// Whether this replica delivers webhooks now (holds the lease `webhooks`).
    pub fn leads_webhooks(&self) -> bool {
        *self.leading.webhooks.borrow()
    }

    /// Whether this replica purges idle uploads now (holds the lease `uploads`).
    pub fn leads_uploads(&self) -> bool {
        *self.leading.uploads.borrow()
    }

    /// Whether this replica runs the background garbage collector now (holds the lease `gc`).
    pub fn leads_gc(&self) -> bool {
        *self.leading.gc.borrow()
    }
}

impl Drop for TestRegistry {
    fn drop(&mut self) {
        let handle = self.handle.clone();
        futures::executor::block_on(handle.stop(false));
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
