//! The registry's operations, free of HTTP: blobs and repository links ([`blobs`]), upload sessions
//! ([`uploads`]), manifests, tags and referrers ([`manifests`]), pull secrets ([`secrets`]), LimitRanges and the
//! image size limit they set ([`limitranges`]), imports from external
//! registries ([`import`]), pull-through of their layers ([`pullthrough`]) and read-only mode ([`readonly`]). Handlers in [`crate::http`] call these with typed
//! values and map [`RegistryError`] to the wire once; this module calls `streams` and `storage-backends`.

pub mod blobs;
pub mod cached;
pub mod import;
pub mod limitranges;
pub mod manifests;
pub mod pullthrough;
pub mod readonly;
pub mod secrets;
pub mod uploads;

use std::sync::Arc;

use names::{Digest, RepositoryName, UploadId};
use storage_backends::{BlobError, BlobStore, MetadataStore, StoreError, Txn};
use streams::{StreamError, StreamService};

/// Everything that can go wrong in a registry operation, in domain terms.
#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    #[error("blob unknown to the repository")]
    BlobUnknown(Digest),
    #[error("upload unknown")]
    UploadUnknown(UploadId),
    #[error("the content does not match the digest {expected}")]
    DigestMismatch { expected: Digest, actual: Digest },
    #[error("{0}")]
    DigestInvalid(String),
    #[error("chunk out of order: the upload has {have} bytes, the chunk starts at {start}")]
    RangeInvalid { have: u64, start: u64 },
    #[error("{0}")]
    UploadInvalid(String),
    #[error("requested range not satisfiable")]
    RangeNotSatisfiable { size: u64 },
    #[error("manifest unknown")]
    ManifestUnknown,
    #[error("manifest invalid: {0}")]
    ManifestInvalid(String),
    #[error("manifest references {0}, which is not in the repository")]
    ManifestBlobUnknown(Digest),
    #[error("manifest larger than the limit of {0} bytes")]
    ManifestTooLarge(usize),
    #[error("repository name not known to registry")]
    NameUnknown(RepositoryName),
    #[error("the request body could not be read: {0}")]
    Body(String),
    /// An upstream registry failed (pull-through).
    #[error("upstream: {0}")]
    Upstream(crate::upstream::UpstreamError),
    /// The storage has no room for what was sent (a full disk, a quota); what was staged is gone again.
    #[error("{0}; nothing of this request was kept")]
    StorageFull(String),
    /// A store could not be reached or failed (etcd down, S3 or the disk failing); nothing of the request was
    /// kept. The cause is logged, not sent: the client is told to retry.
    #[error("{0}")]
    Unavailable(String),
    /// Writers kept colliding on the same metadata past the retry budget: the client should try again shortly.
    #[error("too much contention on {0}; try again")]
    Contention(String),
    /// The registry is in read-only mode: no write is accepted.
    #[error("{}", readonly::REFUSAL)]
    ReadOnly,
    /// The image is larger than its namespace's `openshift.io/Image` `max.storage` (a LimitRange).
    #[error(
        "image size {size} bytes exceeds the limit of {} ({} bytes) that LimitRange \"{}\" sets for \
         openshift.io/Image storage in namespace {namespace}",
        limit.quantity, limit.bytes, limit.limit_range
    )]
    ImageTooLarge { size: u64, namespace: names::Namespace, limit: Box<limitranges::ImageLimit> },
    #[error("internal error: {0}")]
    Internal(String),
}

impl From<StoreError> for RegistryError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::Unavailable(_) => RegistryError::Unavailable(e.to_string()),
            StoreError::Conflict { .. }
            | StoreError::Corrupt { .. }
            | StoreError::Backend(_)
            | StoreError::Compacted { .. }
            | StoreError::TooLarge { .. }
            | StoreError::InvalidTxn(_) => RegistryError::Internal(e.to_string()),
        }
    }
}

impl From<StreamError> for RegistryError {
    fn from(e: StreamError) -> Self {
        match e {
            StreamError::StreamNotFound(repo) => RegistryError::NameUnknown(repo),
            StreamError::Store(store) => store.into(),
            StreamError::Contention(what) => RegistryError::Contention(what),
            other => RegistryError::Internal(other.to_string()),
        }
    }
}

impl From<BlobError> for RegistryError {
    fn from(e: BlobError) -> Self {
        match e {
            BlobError::Body(m) => RegistryError::Body(m),
            e @ BlobError::StagingLost { .. } => RegistryError::UploadInvalid(format!("{e}; start the upload again")),
            BlobError::UploadUnknown(id) => RegistryError::UploadUnknown(id),
            BlobError::RangeInvalid { have, start } => RegistryError::RangeInvalid { have, start },
            BlobError::DigestMismatch { expected, actual, .. } => RegistryError::DigestMismatch { expected, actual },
            e @ BlobError::LeaseLost => RegistryError::UploadInvalid(format!("{e}; check the upload's progress")),
            e @ BlobError::StorageFull(_) => RegistryError::StorageFull(e.to_string()),
            BlobError::Meta(m) => m.into(),
            // The storage failed under the request (S3 answering errors, a disk error): a retry may succeed, and
            // nothing half-written is visible (uploads stay where their session says).
            e @ (BlobError::Unavailable(_) | BlobError::Io(_) | BlobError::Store(_)) => {
                RegistryError::Unavailable(format!("blob storage: {e}"))
            }
            e @ (BlobError::Config(_) | BlobError::TooLarge(_)) => RegistryError::Internal(e.to_string()),
        }
    }
}

/// The registry's state shared by all handlers. Cheap to clone.
#[derive(Clone)]
pub struct Registry {
    pub blobs: BlobStore,
    pub meta: Arc<dyn MetadataStore>,
    pub streams: StreamService,
    pub max_manifest_bytes: usize,
    /// Access control: who the caller is and what it may do (`auth` crate).
    pub auth: auth::AuthService,
    /// External registries (import, pull-through).
    pub upstreams: Arc<crate::upstream::Upstreams>,
    /// The cluster-wide image policy (the `Image` object `cluster`, mirror sets), as every replica applies it.
    pub policy: Arc<crate::imagepolicy::ImagePolicy>,
    /// Upstream fetches in progress.
    pub pullthrough: Arc<pullthrough::PullThrough>,
    /// When cached (pulled-through) blobs were last pulled, for the cache's eviction.
    pub pull_clock: Arc<crate::gc::evict::PullClock>,
    /// Import settings.
    pub imports: import::ImportSettings,
    /// Streams with an import running.
    pub import_locks: Arc<import::ImportLocks>,
    /// Read-only mode: the configuration's floor and the run-time switch.
    pub read_only: Arc<readonly::ReadOnly>,
    /// Every namespace's image size limit (LimitRanges), as the manifest PUT enforces it.
    pub image_limits: Arc<limitranges::ImageLimits>,
    /// This server's Prometheus metrics ([`crate::metrics`]).
    pub metrics: Arc<crate::metrics::Metrics>,
    /// The configured garbage-collection grace period (`[gc] grace`), for sweeps asked for through the API.
    pub gc_grace: std::time::Duration,
    /// What Tributary does for a Kubernetes cluster (`[cluster]`; see [`crate::cluster`]).
    pub cluster: Arc<crate::config::cluster::ClusterConfig>,
}

impl Registry {
    /// Commits `txn`, which links `digests` into a repository, guarded against a garbage-collection sweep deleting
    /// them ([`crate::gc::guard`]). When a sweep was, waits for it and commits again; with `need_content` only when
    /// the content is still stored ([`RegistryError::BlobUnknown`] when the sweep deleted it). With
    /// `need_content`, the content is also checked after the commit: a sweep may have deleted it (and cleared its
    /// tombstone) between the caller's own check and this commit; then the link is taken back and the answer is
    /// [`RegistryError::BlobUnknown`]. A caller that holds the bytes passes `false` and stores them again instead.
    pub(crate) async fn commit_linking(
        &self,
        txn: Txn,
        digests: &[Digest],
        need_content: bool,
    ) -> Result<u64, RegistryError> {
        use crate::gc::guard::{commit_guarded, Guarded};
        for _ in 0..8 {
            match commit_guarded(&*self.meta, txn.clone(), digests).await {
                Ok(revision) if need_content => {
                    for d in digests {
                        if !self.content_exists(d).await? {
                            self.take_back(&txn, revision).await;
                            return Err(RegistryError::BlobUnknown(d.clone()));
                        }
                    }
                    return Ok(revision);
                }
                Ok(revision) => return Ok(revision),
                Err(Guarded::Swept(d)) => {
                    if need_content && !self.content_exists(&d).await? {
                        return Err(RegistryError::BlobUnknown(d));
                    }
                }
                // A sweep still deleting after the writer's wait (housekeeping yields the CPU to serving): the
                // client tries again shortly (429 with Retry-After), nothing was written.
                Err(e @ Guarded::Busy(_)) => return Err(RegistryError::Contention(e.to_string())),
                Err(Guarded::Store(e)) => return Err(e.into()),
            }
        }
        Err(RegistryError::Internal("garbage collection kept deleting what this write links".into()))
    }

    /// Deletes the keys `txn` wrote at `revision`, unless written again since (best effort: a link left behind
    /// names content that is gone, which a pull answers 404 and a push uploads again).
    async fn take_back(&self, txn: &Txn, revision: u64) {
        let undo = txn.puts.iter().fold(Txn::new(), |t, (key, _)| {
            t.expect(key.clone(), storage_backends::Expect::Version(revision)).delete(key.clone())
        });
        if let Err(e) = self.meta.commit(undo).await {
            tracing::warn!(error = %e, "could not take back a link to collected content");
        }
    }

    /// The garbage collector over this registry's stores.
    pub fn collector(&self) -> crate::gc::Collector {
        crate::gc::Collector::new(self.meta.clone(), self.blobs.clone())
    }

    /// The image pruner (`adm prune images`) over this registry's stores.
    pub fn pruner(&self) -> crate::gc::prune::Pruner {
        crate::gc::prune::Pruner::new(
            self.meta.clone(),
            self.blobs.clone(),
            self.collector(),
            &[self.streams.configured_host(), &self.streams.public_host()],
        )
    }

    /// Whether `digest`'s content (a blob, or a manifest's bytes) is stored now, as the stores have it.
    pub(crate) async fn content_exists(&self, digest: &Digest) -> Result<bool, RegistryError> {
        Ok(self.blobs.exists_now(digest).await?
            || self.meta.get_latest(&storage_backends::keys::manifest_content(digest)).await?.is_some())
    }

    /// [`RegistryError::ReadOnly`] while the registry is read-only: every write asks this first.
    pub async fn check_writable(&self) -> Result<(), RegistryError> {
        match self.read_only.is_on().await? {
            true => Err(RegistryError::ReadOnly),
            false => Ok(()),
        }
    }
}
