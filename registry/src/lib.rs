//! Tributary's registry: configuration ([`config`]), the composition root that opens the stores ([`open`]), the
//! registry operations free of HTTP ([`service`]), the HTTP edge ([`http`]) and a test harness ([`testing`]).
//! The `tributary` binary (src/main.rs) is a thin CLI over this library.

pub mod config;
pub mod http;
pub mod service;
pub mod testing;
pub mod upstream;

use std::sync::Arc;

use storage_backends::{BlobBackend, BlobStore, MetadataStore, RedbStore};
use streams::StreamService;

use crate::config::Config;
use crate::service::Registry;

/// Opens the stores (the metadata store under the configured data directory, the blob store where configured)
/// and builds the registry. Callers then run [`check`] before serving.
pub fn open(config: &Config) -> anyhow::Result<Registry> {
    std::fs::create_dir_all(&config.data_dir)
        .map_err(|e| anyhow::anyhow!("creating data directory {}: {e}", config.data_dir.display()))?;
    let meta: Arc<dyn MetadataStore> = Arc::new(RedbStore::open(&config.data_dir.join("metadata.redb"))?);
    let backend =
        config.blob_store.clone().unwrap_or_else(|| BlobBackend::Filesystem { root: config.data_dir.join("blobs") });
    let blobs = BlobStore::open(&backend, meta.clone())?;
    Ok(Registry {
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
