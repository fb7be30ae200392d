//! Content-addressed blob storage over `object_store`: verified blobs under `blobs/`, uploads staged under
//! `uploads/` (see [`crate::paths`]). Uploads go through one staging seam with two implementations: a local staging
//! file (the filesystem backend, [`crate::staging`]) and multipart uploads (S3 and the in-memory store,
//! [`crate::multipart`]); the sessions that drive them, with their writer lease, are in [`crate::uploads`]. Bodies
//! are streamed in and out; memory does not grow with blob size.
//!
//! A digest's bytes are either at its content-addressed path ([`paths::blob`]) or, for a chunked upload finished
//! on a multipart store, at the upload's own object ([`paths::uploaded`]), named by a location record in the
//! metadata store ([`keys::blob_object`], written only after the digest was verified and the object completed).
//! Readers look in both; records are immutable and cached.

use std::ops::Range;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures::stream::BoxStream;
use futures::{StreamExt, TryStreamExt};
use names::{Digest, UploadId};
use object_store::multipart::MultipartStore;
use object_store::path::Path;
use object_store::signer::Signer;
use object_store::{GetOptions, GetRange, GetResultPayload, ObjectStore, ObjectStoreExt, PutPayload};

pub use crate::backend::{BlobBackend, S3Config};
use crate::meta::{encode, MetadataStore, MetadataStoreExt};
use crate::{keys, paths, Expect, StoreError, Txn};

/// A stream of body bytes, as handed to the HTTP layer.
pub type ByteStream = BoxStream<'static, Result<Bytes, std::io::Error>>;

/// Default size of a multipart upload's parts (S3 wants at least 5 MiB for all but the last).
pub const DEFAULT_PART_SIZE: u64 = 8 * 1024 * 1024;

/// How long a writer's claim on an upload lasts without renewal (see [`crate::uploads`]).
pub const DEFAULT_LEASE: Duration = Duration::from_secs(30);

/// How long a presigned blob URL stays valid (distribution's S3 driver uses the same 20 minutes).
pub const PRESIGNED_URL_LIFETIME: Duration = Duration::from_secs(20 * 60);

/// How long [`BlobStore::check`] waits for the object store.
const CHECK_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Debug, thiserror::Error)]
pub enum BlobError {
    #[error("blob storage configuration: {0}")]
    Config(String),
    #[error("{0}")]
    Unavailable(String),
    #[error("reading the request body: {0}")]
    Body(String),
    #[error("blob storage i/o: {0}")]
    Io(std::io::Error),
    /// The storage has no room (a full disk, a quota): what was staged for the request is removed, and the
    /// next write that fits succeeds.
    #[error("storage is full: {0}")]
    StorageFull(String),
    #[error("body larger than the limit of {0} bytes")]
    TooLarge(u64),
    #[error("object store: {0}")]
    Store(object_store::Error),
    #[error("metadata store: {0}")]
    Meta(#[from] StoreError),
    #[error("the upload's staged bytes are gone: {found} of {expected} bytes left")]
    StagingLost { expected: u64, found: u64 },
    #[error("upload unknown")]
    UploadUnknown(UploadId),
    /// The chunk does not start where the upload ends, or another writer is appending right now.
    #[error("chunk out of order or concurrent: the upload has {have} bytes, the chunk starts at {start}")]
    RangeInvalid { have: u64, start: u64 },
    /// The writer's claim on the upload was taken over (it expired) or the upload was closed meanwhile.
    #[error("the upload was taken over by another writer or closed")]
    LeaseLost,
    #[error("the content ({size} bytes) does not match the digest {expected}: it is {actual}")]
    DigestMismatch { expected: Digest, actual: Digest, size: u64 },
}

/// Whether `e`, or an error it wraps, says the storage has no room (ENOSPC and EDQUOT, which std decodes to
/// these kinds).
fn storage_full(e: &(dyn std::error::Error + 'static)) -> bool {
    let mut cause = Some(e);
    while let Some(c) = cause {
        if let Some(io) = c.downcast_ref::<std::io::Error>() {
            if matches!(io.kind(), std::io::ErrorKind::StorageFull | std::io::ErrorKind::QuotaExceeded) {
                return true;
            }
        }
        cause = c.source();
    }
    false
}

impl From<std::io::Error> for BlobError {
    fn from(e: std::io::Error) -> Self {
        if storage_full(&e) {
            BlobError::StorageFull(e.to_string())
        } else {
            BlobError::Io(e)
        }
    }
}

impl From<object_store::Error> for BlobError {
    fn from(e: object_store::Error) -> Self {
        if storage_full(&e) {
            BlobError::StorageFull(e.to_string())
        } else {
            BlobError::Store(e)
        }
    }
}

/// Where a digest's bytes are when they are not at its content-addressed path (see the module docs).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ObjectLocation {
    pub path: String,
    pub size: u64,
}

/// How many blobs [`BlobStore::read_cold`] remembers having read around the page cache.
const READ_ONCE_REMEMBERED: usize = 4096;

/// Objects up to this size (manifests, image configs) are kept in memory once read.
const SMALL_OBJECT: usize = 64 * 1024;
/// Memory given to small objects.
const SMALL_OBJECT_CACHE_BYTES: u64 = 8 * 1024 * 1024;

#[derive(Clone)]
struct ByteWeight;

impl quick_cache::Weighter<Digest, Bytes> for ByteWeight {
    fn weight(&self, _key: &Digest, val: &Bytes) -> u64 {
        val.len() as u64 + 64
    }
}

/// Decorators for the object stores behind a [`BlobStore`] (timing every call for metrics, say), applied by
/// [`BlobStore::layered`]. A layer must change nothing a store does: what it returns is what the inner store
/// returned.
pub trait StoreLayer {
    fn object_store(&self, store: Arc<dyn ObjectStore>) -> Arc<dyn ObjectStore>;
    fn multipart_store(&self, store: Arc<dyn MultipartStore>) -> Arc<dyn MultipartStore>;
}

/// How uploads are staged (the staging seam's two implementations).
#[derive(Clone)]
pub(crate) enum Staging {
    /// Local staging files under this directory, the store's root (fsync, rename into place).
    Local(PathBuf),
    /// Multipart uploads of the object store (S3, memory); unfinished parts' tails are small objects.
    Multipart(Arc<dyn MultipartStore>),
}

/// Handle on the blob store. Cheap to clone. Small objects read whole ([`BlobStore::read_all`]) are cached by
/// digest: content under a digest never changes, so the cache is only ever invalidated by [`BlobStore::delete`].
#[derive(Clone)]
pub struct BlobStore {
    store: Arc<dyn ObjectStore>,
    staging: Staging,
    /// Upload sessions and location records; required by uploads and by multipart stores.
    meta: Option<Arc<dyn MetadataStore>>,
    small: Arc<quick_cache::sync::Cache<Digest, Bytes, ByteWeight>>,
    /// Location records seen (immutable once written).
    locations: Arc<quick_cache::sync::Cache<Digest, ObjectLocation>>,
    /// Blobs read once around the page cache (local files): their next cold read goes through it
    /// ([`crate::fileread`]).
    read_once: Arc<quick_cache::sync::Cache<Digest, ()>>,
    /// The store without retries, for [`BlobStore::check`], and how errors name it.
    probe: Arc<dyn ObjectStore>,
    describe: Arc<str>,
    /// Signs GET URLs of stored objects (S3 with `redirect`), and the key prefix the store applies.
    signer: Option<(Arc<dyn Signer>, Option<String>)>,
    pub(crate) part_size: u64,
    pub(crate) lease: Duration,
}

impl std::fmt::Debug for BlobStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BlobStore").field("store", &self.store).finish_non_exhaustive()
    }
}

impl BlobStore {
    fn with(store: Arc<dyn ObjectStore>, staging: Staging, describe: String) -> Self {
        let small = quick_cache::sync::Cache::with_weighter(4096, SMALL_OBJECT_CACHE_BYTES, ByteWeight);
        BlobStore {
            probe: store.clone(),
            store,
            staging,
            meta: None,
            small: Arc::new(small),
            locations: Arc::new(quick_cache::sync::Cache::new(65536)),
            read_once: Arc::new(quick_cache::sync::Cache::new(READ_ONCE_REMEMBERED)),
            describe: describe.into(),
            signer: None,
            part_size: DEFAULT_PART_SIZE,
            lease: DEFAULT_LEASE,
        }
    }

    /// Opens the configured backend with `meta` holding upload sessions and location records: what the
    /// composition root calls (then [`BlobStore::check`]).
    pub fn open(backend: &BlobBackend, meta: Arc<dyn MetadataStore>) -> Result<BlobStore, BlobError> {
        let store = match backend {
            BlobBackend::Filesystem { root } => BlobStore::filesystem(root.clone())?,
            BlobBackend::Memory => {
                let mem = Arc::new(object_store::memory::InMemory::new());
                BlobStore::with(mem.clone(), Staging::Multipart(mem), "in-memory store".into())
            }
            BlobBackend::S3(c) => {
                let (store, multipart) = c.build(Default::default())?;
                let retry = object_store::RetryConfig { max_retries: 0, ..Default::default() };
                let mut s = BlobStore::with(store, Staging::Multipart(multipart), c.describe());
                s.probe = c.build(retry)?.0;
                if c.redirect {
                    s.signer = Some((c.signer()?, c.prefix.clone()));
                }
                s
            }
        };
        Ok(store.with_meta(meta))
    }

    /// A store over any object store with a multipart interface (uploads are multipart uploads, as on S3), named
    /// `describe` in errors; for stores this crate does not build itself (tests' fault-injecting decorators).
    /// Uploads also need [`BlobStore::with_meta`].
    pub fn over<T: ObjectStore + MultipartStore>(store: Arc<T>, describe: impl Into<String>) -> BlobStore {
        BlobStore::with(store.clone(), Staging::Multipart(store), describe.into())
    }

    /// The filesystem store under `root`: staged in local files, fsynced, renamed into place. Uploads also need
    /// [`BlobStore::with_meta`] (or use [`BlobStore::open`]).
    pub fn filesystem(root: PathBuf) -> Result<BlobStore, BlobError> {
        let store = BlobBackend::Filesystem { root: root.clone() }.build()?;
        Ok(BlobStore::with(store, Staging::Local(root.clone()), root.display().to_string()))
    }

    /// Another handle on the same objects and metadata (a second replica, as tests want it), sharing no cache.
    pub fn replica(&self) -> BlobStore {
        let mut s = BlobStore::with(self.store.clone(), self.staging.clone(), self.describe.to_string());
        s.probe = self.probe.clone();
        s.signer = self.signer.clone();
        s.meta = self.meta.clone();
        s.part_size = self.part_size;
        s.lease = self.lease;
        s
    }

    /// The object store (and the multipart store uploads use) wrapped by `layer`. The readiness probe
    /// ([`BlobStore::check`]) keeps the bare store. Local staging files (the filesystem backend's uploads) are
    /// written directly, not through the object store.
    pub fn layered(mut self, layer: &dyn StoreLayer) -> Self {
        self.store = layer.object_store(self.store);
        if let Staging::Multipart(multipart) = self.staging {
            self.staging = Staging::Multipart(layer.multipart_store(multipart));
        }
        self
    }

    /// Keeps upload sessions and location records in `meta`.
    pub fn with_meta(mut self, meta: Arc<dyn MetadataStore>) -> Self {
        self.meta = Some(meta);
        self
    }

    /// Multipart parts of `bytes` (at least 5 MiB on S3) for the first 1,000 parts; later parts grow
    /// (see [`crate::multipart::part_size`]).
    pub fn with_part_size(mut self, bytes: u64) -> Self {
        self.part_size = bytes.max(1);
        self
    }

    /// How long a writer's claim on an upload lasts without renewal.
    pub fn with_lease(mut self, lease: Duration) -> Self {
        self.lease = lease;
        self
    }

    pub(crate) fn store(&self) -> &Arc<dyn ObjectStore> {
        &self.store
    }

    pub(crate) fn staging(&self) -> &Staging {
        &self.staging
    }

    /// The local directory behind the store, for the filesystem backend.
    pub(crate) fn local_root(&self) -> Option<&std::path::Path> {
        match &self.staging {
            Staging::Local(root) => Some(root),
            Staging::Multipart(_) => None,
        }
    }

    pub(crate) fn meta(&self) -> Result<&Arc<dyn MetadataStore>, BlobError> {
        self.meta.as_ref().ok_or_else(|| BlobError::Config("uploads need a metadata store (BlobStore::open)".into()))
    }

    /// Checks that the store answers (bucket exists, credentials work) within a few seconds; the composition
    /// root calls it at start. The error names the store: `S3 bucket X at http://…: <reason>`.
    /// On the filesystem the store's directory must exist (listing a missing one would find it empty).
    pub async fn check(&self) -> Result<(), BlobError> {
        if let Some(root) = self.local_root() {
            match tokio::fs::metadata(root).await {
                Ok(m) if m.is_dir() => {}
                Ok(_) => return Err(BlobError::Unavailable(format!("{}: not a directory", self.describe))),
                Err(e) => return Err(BlobError::Unavailable(format!("{}: {e}", self.describe))),
            }
        }
        let probe = self.probe.clone();
        let listing = async move { probe.list_with_delimiter(Some(&Path::from("blobs"))).await };
        match tokio::time::timeout(CHECK_TIMEOUT, listing).await {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(e)) => Err(BlobError::Unavailable(format!("{}: {}", self.describe, error_chain(&e)))),
            Err(_) => Err(BlobError::Unavailable(format!(
                "{}: no answer within {} s",
                self.describe,
                CHECK_TIMEOUT.as_secs()
            ))),
        }
    }

    /// The location record of `digest`, when its bytes are not at the content-addressed path.
    async fn location(&self, digest: &Digest) -> Result<Option<ObjectLocation>, BlobError> {
        if let Some(l) = self.locations.get(digest) {
            return Ok(Some(l));
        }
        let Some(meta) = &self.meta else { return Ok(None) };
        match meta.get_json::<ObjectLocation>(&keys::blob_object(digest)).await? {
            Some((l, _)) => {
                self.locations.insert(digest.clone(), l.clone());
                Ok(Some(l))
            }
            None => Ok(None),
        }
    }

    /// Records that `digest`'s verified bytes (`size` of them) are at `path`. When another upload recorded the
    /// digest first, returns `false` and the caller removes its object.
    pub(crate) async fn record_location(&self, digest: &Digest, path: &Path, size: u64) -> Result<bool, BlobError> {
        let key = keys::blob_object(digest);
        let l = ObjectLocation { path: path.to_string(), size };
        match self.meta()?.commit(Txn::new().expect(key.clone(), Expect::Absent).put(key, encode(&l))).await {
            Ok(_) => {
                self.locations.insert(digest.clone(), l);
                Ok(true)
            }
            Err(StoreError::Conflict { .. }) => Ok(false),
            Err(e) => Err(e.into()),
        }
    }

    /// Forgets what this handle cached of `digest` (its bytes, its location record): the garbage collector
    /// deleted it.
    pub(crate) fn forget(&self, digest: &Digest) {
        self.small.remove(digest);
        self.locations.remove(digest);
    }

    /// Size of a stored blob, or `None` when it is not stored.
    pub async fn stat(&self, digest: &Digest) -> Result<Option<u64>, BlobError> {
        if let Some(l) = self.locations.get(digest) {
            return Ok(Some(l.size));
        }
        match self.store.head(&paths::blob(digest)).await {
            Ok(meta) => Ok(Some(meta.size)),
            Err(object_store::Error::NotFound { .. }) => Ok(self.location(digest).await?.map(|l| l.size)),
            Err(e) => Err(e.into()),
        }
    }

    /// Whether [`BlobStore::presigned_get`] can give URLs (S3 with `redirect`); cheap, for callers that would
    /// otherwise look the blob up first.
    pub fn redirects(&self) -> bool {
        self.signer.is_some()
    }

    /// A presigned GET URL of `digest`'s stored bytes, valid for [`PRESIGNED_URL_LIFETIME`], when this store
    /// offers them (S3 with `redirect`) and the blob is stored here; `None` otherwise (the caller serves the
    /// bytes itself, e.g. a pull-through blob not fetched yet). `verify` asks S3 whether the content path exists
    /// before signing it; without it the caller knows the blob is stored (a link with no upstream).
    pub async fn presigned_get(
        &self,
        digest: &Digest,
        verify: bool,
    ) -> Result<Option<object_store::signer::Url>, BlobError> {
        let Some((signer, prefix)) = &self.signer else { return Ok(None) };
        let path = match self.location(digest).await? {
            Some(l) => Path::from(l.path),
            None => {
                let path = paths::blob(digest);
                if verify {
                    match self.store.head(&path).await {
                        Ok(_) => {}
                        Err(object_store::Error::NotFound { .. }) => return Ok(None),
                        Err(e) => return Err(e.into()),
                    }
                }
                path
            }
        };
        let full = match prefix {
            Some(p) => Path::from(format!("{p}/{path}")),
            None => path,
        };
        let url = signer.signed_url(object_store::signer::Method::GET, &full, PRESIGNED_URL_LIFETIME).await?;
        Ok(Some(url))
    }

    /// Streams a blob, whole or a byte range of it. Returns the stream, the range served and the total size.
    pub async fn read(
        &self,
        digest: &Digest,
        range: Option<Range<u64>>,
    ) -> Result<Option<(ByteStream, Range<u64>, u64)>, BlobError> {
        let opts = || GetOptions { range: range.clone().map(GetRange::Bounded), ..Default::default() };
        let cached = match self.locations.get(digest) {
            Some(l) => match self.store.get_opts(&Path::from(l.path), opts()).await {
                // The record was deleted with its object (garbage collected, perhaps stored again since under
                // another record): read afresh.
                Err(object_store::Error::NotFound { .. }) => {
                    self.locations.remove(digest);
                    None
                }
                other => Some(other),
            },
            None => None,
        };
        let res = match cached {
            Some(res) => res,
            None => match self.store.get_opts(&paths::blob(digest), opts()).await {
                Err(object_store::Error::NotFound { .. }) => match self.location(digest).await? {
                    Some(l) => self.store.get_opts(&Path::from(l.path), opts()).await,
                    None => return Ok(None),
                },
                other => other,
            },
        };
        match res {
            Ok(res) => {
                let total = res.meta.size;
                let served = res.range.clone();
                let stream = match res.payload {
                    // object_store reads local files 8 KiB per blocking task; read them in large chunks instead.
                    GetResultPayload::File(file, _) => {
                        let cold = self.read_cold(digest, &file, &served);
                        crate::fileread::stream(file, served.clone(), cold).await?
                    }
                    GetResultPayload::Stream(s) => s.map_err(std::io::Error::other).boxed(),
                };
                Ok(Some((stream, served, total)))
            }
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    /// Whether `served` of a local blob file is read around the page cache: when it is large, not in the page cache
    /// and not read that way before. A cold blob's first read leaves the page cache to the blobs that are read again
    /// (nginx's `proxy_cache_min_uses 2` for the same reason); its second fills it.
    /// The probe does not block (`RWF_NOWAIT`), so it runs on the caller's thread.
    fn read_cold(&self, digest: &Digest, file: &std::fs::File, served: &Range<u64>) -> bool {
        if served.end - served.start < crate::fileread::DIRECT_MIN || self.read_once.get(digest).is_some() {
            return false;
        }
        let cached = crate::fileread::is_cached(file, served.start);
        if !cached {
            self.read_once.insert(digest.clone(), ());
        }
        !cached
    }

    /// Reads a whole small blob (manifests, image configs) into memory.
    pub async fn read_all(&self, digest: &Digest) -> Result<Option<Bytes>, BlobError> {
        if let Some(b) = self.small.get(digest) {
            return Ok(Some(b));
        }
        let Some((stream, _, _)) = self.read(digest, None).await? else { return Ok(None) };
        let chunks: Vec<Bytes> = stream.try_collect().await?;
        let bytes = Bytes::from(chunks.concat());
        if bytes.len() <= SMALL_OBJECT {
            self.small.insert(digest.clone(), bytes.clone());
        }
        Ok(Some(bytes))
    }

    /// Stores bytes whose digest the caller has just computed (manifests).
    pub async fn put_verified(&self, digest: &Digest, bytes: Bytes) -> Result<(), BlobError> {
        let target = paths::blob(digest);
        if let Some(root) = self.local_root() {
            // One blocking task: write a staging file beside the target, sync it, rename it, sync the directory.
            let target = root.join(target.as_ref());
            let staged = target.with_file_name(format!("{}#{}", digest.hex(), crate::paths::new_part_name(0)));
            return tokio::task::spawn_blocking(move || {
                // Content-addressed: bytes already there are these bytes (renamed there only once synced); only
                // their directory entry may still be on its way to disk, so sync the directory and be done.
                if std::fs::metadata(&target).is_ok_and(|m| m.len() == bytes.len() as u64) {
                    let dir = target.parent().ok_or_else(|| std::io::Error::other("blob path without a directory"))?;
                    return std::fs::File::open(dir)?.sync_all();
                }
                let created = crate::staging::make_dir_for(&target)?;
                let written = (|| {
                    let mut file = std::fs::File::create_new(&staged)?;
                    std::io::Write::write_all(&mut file, &bytes)?;
                    file.sync_data()?;
                    crate::staging::install(&staged, &target, created)
                })();
                if written.is_err() {
                    let _ = std::fs::remove_file(&staged);
                }
                written
            })
            .await
            .map_err(|e| BlobError::Io(std::io::Error::other(e)))?
            .map_err(BlobError::from);
        }
        self.store.put(&target, PutPayload::from_bytes(bytes)).await?;
        Ok(())
    }

    /// Deletes a blob's content (at its content-addressed path and wherever a location record says). Callers
    /// remove repository links first.
    pub async fn delete(&self, digest: &Digest) -> Result<(), BlobError> {
        self.small.remove(digest);
        if let Some(l) = self.location(digest).await? {
            self.meta()?.commit(Txn::new().delete(keys::blob_object(digest))).await?;
            self.locations.remove(digest);
            match self.store.delete(&Path::from(l.path)).await {
                Ok(()) | Err(object_store::Error::NotFound { .. }) => {}
                Err(e) => return Err(e.into()),
            }
        }
        match self.store.delete(&paths::blob(digest)).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(e.into()),
        }
    }
}

/// An error with its sources, as one line (object_store hides the useful part in `source()`).
pub(crate) fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut next = e.source();
    while let Some(cause) = next {
        let c = cause.to_string();
        if !s.contains(&c) {
            s.push_str(": ");
            s.push_str(&c);
        }
        next = cause.source();
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::default_region;

    #[test]
    fn s3_config_reads_kebab_case_with_defaults() {
        let c: S3Config = toml::from_str("bucket = \"b\"\nendpoint = \"http://127.0.0.1:9\"\nallow-http = true\naccess-key-id = \"k\"\nsecret-access-key = \"s\"").unwrap();
        assert_eq!(c.region, "us-east-1");
        assert!(c.path_style && c.allow_http);
        assert_eq!(c.access_key_id.as_deref(), Some("k"));
        assert!(!format!("{c:?}").contains("\"s\""), "the secret is not printed");
        let b: BlobBackend = serde_json::from_str(r#"{"type":"s3","bucket":"b","prefix":"p"}"#).unwrap();
        assert!(matches!(b, BlobBackend::S3(S3Config { prefix: Some(_), .. })));
    }

    #[tokio::test]
    async fn a_wrong_endpoint_is_a_clear_error_within_seconds() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        drop(listener);
        let c = S3Config {
            endpoint: Some(format!("http://127.0.0.1:{port}")),
            region: default_region(),
            bucket: "nope".into(),
            prefix: None,
            access_key_id: Some("k".into()),
            secret_access_key: Some("s".into()),
            path_style: true,
            allow_http: true,
            redirect: false,
            sign_payload: true,
        };
        let dir = tempfile::tempdir().unwrap();
        let meta = Arc::new(crate::RedbStore::open(&dir.path().join("m.redb")).unwrap());
        let store = BlobStore::open(&BlobBackend::S3(c), meta).unwrap();
        let started = std::time::Instant::now();
        let err = store.check().await.unwrap_err().to_string();
        assert!(err.starts_with(&format!("S3 bucket nope at http://127.0.0.1:{port}: ")), "{err}");
        assert!(started.elapsed() < Duration::from_secs(8), "{:?}", started.elapsed());
    }
}
