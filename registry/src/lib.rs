//! Tributary's registry: configuration ([`config`]), the audit log's sink ([`audit`]), the composition root that opens the stores ([`open`]), the
//! registry operations free of HTTP ([`service`]), the HTTP edge ([`http`]), the background work one replica at a
//! time runs ([`background`]), the Prometheus metrics ([`metrics`]) and a test harness ([`testing`]).
//! The `tributary` binary (src/main.rs) is a thin CLI over this library.

pub mod audit;
pub mod background;
pub mod cluster;
pub mod config;
pub mod gc;
pub mod housekeeping;
pub mod http;
pub mod imagepolicy;
pub mod metrics;
pub mod service;
pub mod testing;
pub mod upstream;

pub use background::spawn_background;

/// The version of this build (the crate's).
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

/// The git commit this build was made from (see build.rs), or `unknown`.
pub const GIT_COMMIT: &str = env!("TRIBUTARY_GIT_COMMIT");

/// `<version> (commit <commit>)`, as `tributary version` and `--version` print it.
pub const LONG_VERSION: &str = concat!(env!("CARGO_PKG_VERSION"), " (commit ", env!("TRIBUTARY_GIT_COMMIT"), ")");

use std::sync::Arc;

use storage_backends::{BlobBackend, BlobStore, EtcdStore, MetadataStore, RedbStore};
use streams::StreamService;

use crate::config::storage::{Blobs, Metadata};
use crate::config::Config;
use crate::service::Registry;

/// Opens the stores the configuration names (by default both under the data directory; with S3 and etcd no
/// directory is needed or created) and builds the registry. Callers then run [`check`] before serving. An
/// unreachable etcd is an error here, within seconds.
pub async fn open(config: &Config) -> anyhow::Result<Registry> {
    if config.storage.uses_data_dir() {
        std::fs::create_dir_all(&config.data_dir)
            .map_err(|e| anyhow::anyhow!("creating data directory {}: {e}", config.data_dir.display()))?;
    }
    let metrics = Arc::new(metrics::Metrics::new(config.metrics));
    let (meta, meta_backend): (Arc<dyn MetadataStore>, _) = match &config.storage.metadata {
        Metadata::Redb => (Arc::new(RedbStore::open(&config.data_dir.join("metadata.redb"))?), "redb"),
        // The error names the store and its endpoints ("metadata store: etcd at http://…: …").
        Metadata::Etcd(etcd) => (Arc::new(EtcdStore::connect(etcd).await?), "etcd"),
    };
    let (backend, blob_backend) = match &config.storage.blobs {
        Blobs::Filesystem => (BlobBackend::Filesystem { root: config.data_dir.join("blobs") }, "filesystem"),
        Blobs::S3(s3) => (BlobBackend::S3(s3.clone()), "s3"),
    };
    // With metrics on, both stores are timed by decorators (see `metrics::stores`); off, nothing wraps them.
    let meta: Arc<dyn MetadataStore> = match config.metrics.enabled {
        true => Arc::new(metrics::stores::TimedMetadataStore::new(meta, meta_backend, &metrics)),
        false => meta,
    };
    let blobs = BlobStore::open(&backend, meta.clone())?;
    let blobs = match config.metrics.enabled {
        true => blobs.layered(&metrics::stores::BlobLayer { backend: blob_backend, metrics: metrics.clone() }),
        false => blobs,
    };
    assemble(config, meta, blobs, metrics)
}

/// Builds the registry over stores already open (what [`open`] does after opening them, and decorated as it
/// decorates them; tests hand in stores of their own, such as fault-injecting decorators).
pub fn assemble(
    config: &Config,
    meta: Arc<dyn MetadataStore>,
    blobs: BlobStore,
    metrics: Arc<metrics::Metrics>,
) -> anyhow::Result<Registry> {
    let read_only = Arc::new(service::readonly::ReadOnly::new(meta.clone(), config.read_only));
    let policy_store =
        imagepolicy::PolicyStore::new(meta.clone(), config.allowed_registries.clone(), config.public_host.clone());
    let streams = StreamService::new(meta.clone(), config.public_host.clone());
    // `externalRegistryHostnames[0]`, when set, is the host written into references.
    let policy = Arc::new(imagepolicy::ImagePolicy::new(policy_store).with_listener({
        let streams = streams.clone();
        move |p| streams.set_public_host(p.image.external_registry_hostnames.first().map(String::as_str))
    }));
    Ok(Registry {
        read_only,
        image_limits: Arc::new(service::limitranges::ImageLimits::new(meta.clone())),
        metrics: metrics.clone(),
        gc_grace: config.gc.grace,
        cluster: Arc::new(config.cluster.clone()),
        blobs,
        streams,
        auth: auth::AuthService::new(meta.clone(), config.auth),
        meta,
        max_manifest_bytes: config.max_manifest_bytes,
        upstreams: Arc::new(upstream::Upstreams::new(
            policy.clone(),
            &config.outbound,
            config.max_manifest_bytes,
            metrics.clone(),
        )?),
        policy,
        pullthrough: Arc::default(),
        pull_clock: Arc::default(),
        import_locks: Arc::default(),
        imports: service::import::ImportSettings {
            scheduled_interval: config.scheduled_import_interval,
            ..Default::default()
        },
    })
}

/// Checks that the blob store answers (a wrong S3 endpoint, bucket or credentials is a clear error within
/// seconds rather than a failure at the first push).
pub async fn check(registry: &Registry) -> anyhow::Result<()> {
    registry.blobs.check().await?;
    Ok(())
}
