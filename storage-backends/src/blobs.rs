//! Content-addressed blob storage over `object_store`: verified blobs under `blobs/`, uploads staged under
//! `uploads/` (see [`crate::paths`]; an upload's single staging object is in [`crate::staging`]). Bodies are streamed
//! in and out; memory does not grow with blob size. The caller (the registry's upload service) hashes and
//! verifies; this module only moves bytes.

use std::ops::Range;
use std::path::PathBuf;
use std::sync::Arc;

use bytes::Bytes;
use futures::stream::BoxStream;
use futures::{Stream, StreamExt, TryStreamExt};
use names::{Algorithm, Digest, DigestHasher, UploadId};
use object_store::{GetOptions, GetRange, GetResultPayload, ObjectStore, ObjectStoreExt, PutPayload, WriteMultipart};

use crate::paths;

/// A stream of body bytes, as handed to the HTTP layer.
pub type ByteStream = BoxStream<'static, Result<Bytes, std::io::Error>>;

/// Size of the buffers handed to the object store while streaming an upload in.
const WRITE_CHUNK: usize = 2 * 1024 * 1024;

/// Size of the reads when streaming a blob out of a local file.
const READ_CHUNK: usize = 1024 * 1024;

/// Streams `range` of a local file in [`READ_CHUNK`] pieces.
async fn file_stream(file: std::fs::File, range: Range<u64>) -> Result<ByteStream, BlobError> {
    use tokio::io::{AsyncReadExt, AsyncSeekExt};
    let mut file = tokio::fs::File::from_std(file);
    file.seek(std::io::SeekFrom::Start(range.start)).await?;
    let reader = file.take(range.end - range.start);
    Ok(tokio_util::io::ReaderStream::with_capacity(reader, READ_CHUNK).boxed())
}

/// Which object store holds the blobs. Chosen from configuration; building it never panics.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(tag = "type", rename_all = "lowercase")]
pub enum BlobBackend {
    /// A directory on the local filesystem (the default: `<data-dir>/blobs`).
    Filesystem { root: PathBuf },
    /// Process memory; for tests.
    Memory,
}

impl BlobBackend {
    pub fn build(&self) -> Result<Arc<dyn ObjectStore>, BlobError> {
        match self {
            BlobBackend::Filesystem { root } => {
                std::fs::create_dir_all(root).map_err(|e| BlobError::Config(format!("{}: {e}", root.display())))?;
                let fs = object_store::local::LocalFileSystem::new_with_prefix(root)
                    .map_err(|e| BlobError::Config(e.to_string()))?;
                Ok(Arc::new(fs))
            }
            BlobBackend::Memory => Ok(Arc::new(object_store::memory::InMemory::new())),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum BlobError {
    #[error("blob storage configuration: {0}")]
    Config(String),
    #[error("reading the request body: {0}")]
    Body(String),
    #[error("blob storage i/o: {0}")]
    Io(#[from] std::io::Error),
    #[error("body larger than the limit of {0} bytes")]
    TooLarge(u64),
    #[error("object store: {0}")]
    Store(#[from] object_store::Error),
    #[error("the upload's staged bytes are gone: {found} of {expected} bytes left")]
    StagingLost { expected: u64, found: u64 },
}

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

/// Handle on the blob store. Cheap to clone. Small objects read whole ([`BlobStore::read_all`]) are cached by
/// digest: content under a digest never changes, so the cache is only ever invalidated by [`BlobStore::delete`].
#[derive(Clone)]
pub struct BlobStore {
    store: Arc<dyn ObjectStore>,
    /// The local directory behind `store`, when there is one: committed blobs are fsynced there.
    durable_root: Option<PathBuf>,
    small: Arc<quick_cache::sync::Cache<Digest, Bytes, ByteWeight>>,
    /// Uploads locked in this process, when there is no local directory to lock files in.
    held: crate::staging::HeldUploads,
}

impl std::fmt::Debug for BlobStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BlobStore").field("store", &self.store).finish_non_exhaustive()
    }
}

impl BlobStore {
    pub fn new(store: Arc<dyn ObjectStore>) -> Self {
        let small = quick_cache::sync::Cache::with_weighter(4096, SMALL_OBJECT_CACHE_BYTES, ByteWeight);
        BlobStore { store, durable_root: None, small: Arc::new(small), held: Default::default() }
    }

    pub(crate) fn store(&self) -> &Arc<dyn ObjectStore> {
        &self.store
    }

    /// The local directory behind the store, when there is one (see [`BlobStore::durable_in`]).
    pub(crate) fn local_root(&self) -> Option<&std::path::Path> {
        self.durable_root.as_deref()
    }

    pub(crate) fn held_uploads(&self) -> &crate::staging::HeldUploads {
        &self.held
    }

    /// The filesystem store under `root`, durable (see [`BlobStore::durable_in`]): what the registry runs on.
    pub fn filesystem(root: PathBuf) -> Result<BlobStore, BlobError> {
        let store = BlobBackend::Filesystem { root: root.clone() }.build()?;
        Ok(BlobStore::new(store).durable_in(root))
    }

    /// Makes every committed blob durable before it is acknowledged: `root` is the local directory behind the
    /// store (the filesystem backend's root); file contents and the directory entries are fsynced there, and
    /// uploads are staged in files written there directly (and locked with `flock`, see [`crate::staging`]).
    pub fn durable_in(mut self, root: PathBuf) -> Self {
        self.durable_root = Some(root);
        self
    }

    /// fsyncs the object at `path` (and, with `dir`, the directory holding it) when the store is local.
    async fn sync(&self, path: &object_store::path::Path, dir: bool) -> Result<(), BlobError> {
        let Some(root) = &self.durable_root else { return Ok(()) };
        let file = root.join(path.as_ref());
        tokio::task::spawn_blocking(move || {
            std::fs::File::open(&file)?.sync_all()?;
            if dir {
                if let Some(parent) = file.parent() {
                    std::fs::File::open(parent)?.sync_all()?;
                }
            }
            Ok::<_, std::io::Error>(())
        })
        .await
        .map_err(|e| BlobError::Io(std::io::Error::other(e)))??;
        Ok(())
    }

    /// Size of a stored blob, or `None` when it is not stored.
    pub async fn stat(&self, digest: &Digest) -> Result<Option<u64>, BlobError> {
        match self.store.head(&paths::blob(digest)).await {
            Ok(meta) => Ok(Some(meta.size)),
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    /// Streams a blob, whole or a byte range of it. Returns the stream, the range served and the total size.
    pub async fn read(
        &self,
        digest: &Digest,
        range: Option<Range<u64>>,
    ) -> Result<Option<(ByteStream, Range<u64>, u64)>, BlobError> {
        let opts = GetOptions { range: range.map(GetRange::Bounded), ..Default::default() };
        match self.store.get_opts(&paths::blob(digest), opts).await {
            Ok(res) => {
                let total = res.meta.size;
                let served = res.range.clone();
                let stream = match res.payload {
                    // object_store reads local files 8 KiB per blocking task; read them in large chunks instead.
                    GetResultPayload::File(file, _) => file_stream(file, served.clone()).await?,
                    GetResultPayload::Stream(s) => s.map_err(std::io::Error::other).boxed(),
                };
                Ok(Some((stream, served, total)))
            }
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    /// Reads a whole small blob (manifests, image configs) into memory.
    pub async fn read_all(&self, digest: &Digest) -> Result<Option<Bytes>, BlobError> {
        if let Some(b) = self.small.get(digest) {
            return Ok(Some(b));
        }
        match self.store.get(&paths::blob(digest)).await {
            Ok(res) => {
                let bytes = res.bytes().await?;
                if bytes.len() <= SMALL_OBJECT {
                    self.small.insert(digest.clone(), bytes.clone());
                }
                Ok(Some(bytes))
            }
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    /// Stores bytes whose digest the caller has just computed (manifests).
    pub async fn put_verified(&self, digest: &Digest, bytes: Bytes) -> Result<(), BlobError> {
        let target = paths::blob(digest);
        if let Some(root) = &self.durable_root {
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
            .map_err(BlobError::Io);
        }
        self.store.put(&target, PutPayload::from_bytes(bytes)).await?;
        Ok(())
    }

    /// Streams `body` into the staged part `part` of upload `id`, feeding `hasher` on the way.
    /// Stops with [`BlobError::TooLarge`] past `limit` bytes. Returns the number of bytes written; a part of zero
    /// bytes is not stored. On any error the part is removed.
    pub async fn write_part<S, E>(
        &self,
        id: UploadId,
        part: &str,
        body: S,
        hasher: &mut DigestHasher,
        limit: Option<u64>,
    ) -> Result<u64, BlobError>
    where
        S: Stream<Item = Result<Bytes, E>> + Unpin,
        E: std::fmt::Display,
    {
        let mut body = body;
        // Do not create an object for an empty body.
        let first = loop {
            match body.next().await {
                None => return Ok(0),
                Some(Err(e)) => return Err(BlobError::Body(e.to_string())),
                Some(Ok(b)) if b.is_empty() => continue,
                Some(Ok(b)) => break b,
            }
        };
        let path = paths::upload_part(id, part);
        let upload = self.store.put_multipart(&path).await?;
        let mut writer = WriteMultipart::new_with_chunk_size(upload, WRITE_CHUNK);
        let mut written = 0u64;
        let mut next = Some(Ok(first));
        let result: Result<(), BlobError> = async {
            while let Some(item) = next.take() {
                let chunk = item.map_err(|e: E| BlobError::Body(e.to_string()))?;
                written += chunk.len() as u64;
                if limit.is_some_and(|l| written > l) {
                    return Err(BlobError::TooLarge(limit.unwrap_or_default()));
                }
                hasher.update(&chunk);
                writer.wait_for_capacity(2).await?;
                writer.put(chunk);
                next = body.next().await;
            }
            Ok(())
        }
        .await;
        match result {
            Ok(()) => {
                writer.finish().await?;
                Ok(written)
            }
            Err(e) => {
                let _ = writer.abort().await;
                Err(e)
            }
        }
    }

    /// Makes the staged parts of upload `id` (in order) visible as blob `digest`.
    /// The caller has verified the digest. One part is renamed into place; several are concatenated into a
    /// staging object first, so the blob path only ever holds complete content. With [`BlobStore::durable_in`] the
    /// content is fsynced before the rename and the directory after it.
    pub async fn commit_upload(&self, id: UploadId, parts: &[String], digest: &Digest) -> Result<(), BlobError> {
        let target = paths::blob(digest);
        match parts {
            [] => {
                self.store.put(&target, PutPayload::default()).await?;
                self.sync(&target, true).await?;
            }
            [only] => {
                let part = paths::upload_part(id, only);
                self.sync(&part, false).await?;
                self.store.rename(&part, &target).await?;
                self.sync(&target, true).await?;
            }
            many => {
                let staging = paths::upload_part(id, "assembled");
                let upload = self.store.put_multipart(&staging).await?;
                let mut writer = WriteMultipart::new_with_chunk_size(upload, WRITE_CHUNK);
                for part in many {
                    let mut s = self.store.get(&paths::upload_part(id, part)).await?.into_stream();
                    while let Some(chunk) = s.next().await {
                        let chunk = match chunk {
                            Ok(c) => c,
                            Err(e) => {
                                let _ = writer.abort().await;
                                return Err(e.into());
                            }
                        };
                        writer.wait_for_capacity(2).await?;
                        writer.put(chunk);
                    }
                }
                writer.finish().await?;
                self.sync(&staging, false).await?;
                self.store.rename(&staging, &target).await?;
                self.sync(&target, true).await?;
            }
        }
        self.abort_upload(id).await;
        Ok(())
    }

    /// Hashes the staged parts of upload `id` with `algorithm` (used when the client names a digest algorithm
    /// other than the one hashed while receiving).
    pub async fn hash_parts(&self, id: UploadId, parts: &[String], algorithm: Algorithm) -> Result<Digest, BlobError> {
        let mut hasher = DigestHasher::new(algorithm);
        for part in parts {
            let mut s = self.store.get(&paths::upload_part(id, part)).await?.into_stream();
            while let Some(chunk) = s.next().await {
                hasher.update(&chunk?);
            }
        }
        Ok(hasher.finish())
    }

    /// Removes one staged part (a part that lost a race and belongs to no session).
    pub async fn delete_part(&self, id: UploadId, part: &str) {
        if let Err(e) = self.store.delete(&paths::upload_part(id, part)).await {
            tracing::warn!(upload = %id, error = %e, "could not remove a staged upload part");
        }
    }

    /// Removes whatever upload `id` staged. Best effort: leftovers are invisible and only cost space.
    pub async fn abort_upload(&self, id: UploadId) {
        if let Some(root) = &self.durable_root {
            let dir = root.join(paths::upload_dir(id).as_ref());
            let _ = tokio::task::spawn_blocking(move || crate::staging::remove_dir(&dir)).await;
            return;
        }
        let dir = paths::upload_dir(id);
        let locations = self.store.list(Some(&dir)).map_ok(|m| m.location).boxed();
        let mut deleted = self.store.delete_stream(locations);
        while let Some(r) = deleted.next().await {
            if let Err(e) = r {
                tracing::warn!(upload = %id, error = %e, "could not remove a staged upload part");
            }
        }
    }

    /// Deletes a blob's content. Callers remove repository links first.
    pub async fn delete(&self, digest: &Digest) -> Result<(), BlobError> {
        self.small.remove(digest);
        match self.store.delete(&paths::blob(digest)).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(e.into()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn body(chunks: &[&'static [u8]]) -> impl Stream<Item = Result<Bytes, std::io::Error>> + Unpin {
        futures::stream::iter(chunks.iter().map(|c| Ok(Bytes::from_static(c))).collect::<Vec<_>>())
    }

    async fn suite(store: BlobStore) {
        let id = UploadId::random();
        let mut h = DigestHasher::new(Algorithm::Sha256);
        let parts = [paths::new_part_name(0), paths::new_part_name(9)];
        let n1 = store.write_part(id, &parts[0], body(&[b"hello ", b"wor"]), &mut h, None).await.unwrap();
        let n2 = store.write_part(id, &parts[1], body(&[b"ld"]), &mut h, None).await.unwrap();
        let d = h.finish();
        assert_eq!(d, Digest::sha256_of(b"hello world"));
        assert_eq!(store.stat(&d).await.unwrap(), None, "not visible before commit");
        let sha512 = store.hash_parts(id, &parts, Algorithm::Sha512).await.unwrap();
        assert_eq!(sha512, Digest::of(Algorithm::Sha512, b"hello world"));
        store.commit_upload(id, &parts, &d).await.unwrap();
        assert_eq!(store.stat(&d).await.unwrap(), Some(n1 + n2));
        assert_eq!(store.read_all(&d).await.unwrap().unwrap(), Bytes::from_static(b"hello world"));
        let (s, r, total) = store.read(&d, Some(6..11)).await.unwrap().unwrap();
        let got: Vec<Bytes> = s.try_collect().await.unwrap();
        assert_eq!((got.concat(), r, total), (b"world".to_vec(), 6..11, 11));

        // Too large: nothing staged stays behind, nothing becomes visible.
        let id2 = UploadId::random();
        let mut h2 = DigestHasher::new(Algorithm::Sha256);
        let err = store.write_part(id2, "p", body(&[b"12345", b"678"]), &mut h2, Some(6)).await.unwrap_err();
        assert!(matches!(err, BlobError::TooLarge(6)));
        store.abort_upload(id2).await;

        store.delete(&d).await.unwrap();
        assert_eq!(store.stat(&d).await.unwrap(), None);
        assert_eq!(store.read_all(&d).await.unwrap(), None, "the small-object cache forgets deleted blobs");
    }

    #[tokio::test]
    async fn memory_backend() {
        suite(BlobStore::new(BlobBackend::Memory.build().unwrap())).await;
    }

    #[tokio::test]
    async fn filesystem_backend() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("blobs");
        let store = BlobStore::filesystem(root).unwrap();
        suite(store).await;
    }
}
