//! Tributary's registry: configuration ([`config`]), the composition root that opens the stores ([`open`]), the
//! registry operations free of HTTP ([`service`]), the HTTP edge ([`http`]), the background work one replica at a
//! time runs ([`background`]) and a test harness ([`testing`]).
//! The `tributary` binary (src/main.rs) is a thin CLI over this library.

pub mod background;
pub mod config;
pub mod gc;
pub mod http;
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
    let meta: Arc<dyn MetadataStore> = match &config.storage.metadata {
        Metadata::Redb => Arc::new(RedbStore::open(&config.data_dir.join("metadata.redb"))?),
        // The error names the store and its endpoints ("metadata store: etcd at http://…: …").
        Metadata::Etcd(etcd) => Arc::new(EtcdStore::connect(etcd).await?),
    };
    let backend = match &config.storage.blobs {
        Blobs::Filesystem => BlobBackend::Filesystem { root: config.data_dir.join("blobs") },
        Blobs::S3(s3) => BlobBackend::S3(s3.clone()),
    };
    let blobs = BlobStore::open(&backend, meta.clone())?;
    let read_only = Arc::new(service::readonly::ReadOnly::new(meta.clone(), config.read_only));
    Ok(Registry {
        read_only,
        gc_grace: config.gc.grace,
        blobs,
        streams: StreamService::new(meta.clone(), config.public_host.clone()),
        auth: auth::AuthService::new(meta.clone(), config.auth),
        meta,
        max_manifest_bytes: config.max_manifest_bytes,
        upstreams: Arc::new(upstream::Upstreams::new(config.allowed_registries.clone())),
        pullthrough: Arc::default(),
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
