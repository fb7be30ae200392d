//! The local side of the staging seam (the filesystem backend): one staging file per blob upload
//! (`uploads/<id>/data`), written chunk by chunk at its offset on the blocking pool, around the page cache where
//! the file system allows ([`direct`]; else through it, with progressive writeback), so that finishing an upload is
//! an fsync and a rename, never a second copy. The one writer at a time is the one
//! holding the session's claim ([`crate::uploads`]); the file is also `flock`ed while written, so that a writer
//! whose claim expired while it was still writing cannot write at the same time as its successor.
//! This module never reads metadata: the session decides what the offset is.

use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use bytes::Bytes;
use futures::{Stream, StreamExt};
use names::{Algorithm, Digest, DigestHasher, UploadId};
use object_store::ObjectStoreExt;
use tokio::task::JoinHandle;

use crate::blobs::{BlobError, BlobStore};
use crate::paths;
use crate::uploads::Lease;

mod direct;
use direct::{Buffer, Sink, ALIGN};

/// Size of each write to a staging file: the next one is gathered (and hashed) while this one is written.
const WRITE_CHUNK: usize = 2 * 1024 * 1024;

/// Writeback of a staging file's bytes starts every this many bytes (an `fdatasync` in the background), so that
/// the sync at commit only waits for the tail.
const WRITEBACK_EVERY: u64 = 4 * 1024 * 1024;

/// Runs blocking file work on tokio's blocking pool.
async fn blocking<T: Send + 'static>(f: impl FnOnce() -> std::io::Result<T> + Send + 'static) -> Result<T, BlobError> {
    tokio::task::spawn_blocking(f).await.map_err(|e| BlobError::Io(std::io::Error::other(e)))?.map_err(BlobError::from)
}

/// Waits for a background write or sync and returns its outcome.
async fn join<T>(task: JoinHandle<std::io::Result<T>>) -> Result<T, BlobError> {
    task.await.map_err(|e| BlobError::Io(std::io::Error::other(e)))?.map_err(BlobError::from)
}

/// Exclusive hold on one upload's staging file, from [`BlobStore::lock_upload`]. While it is held no other
/// writer sharing the data directory can write, commit or hash the upload. Dropping it releases the lock.
pub(crate) struct UploadLock {
    store: BlobStore,
    id: UploadId,
    /// The staging file, open and `flock`ed (the lock is released when the last handle closes), with its direct
    /// handle.
    sink: Arc<Sink>,
    root: PathBuf,
    /// The last write left enough bytes without writeback that [`UploadLock::write_back`] should start it.
    tail: bool,
}

impl std::fmt::Debug for UploadLock {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UploadLock").field("id", &self.id).finish_non_exhaustive()
    }
}

impl BlobStore {
    /// Takes upload `id`'s lock, creating its empty staging file on first use. `None` when another writer holds
    /// it (the caller answers 416: a racing chunk loses).
    pub(crate) async fn lock_upload(&self, id: UploadId) -> Result<Option<UploadLock>, BlobError> {
        let (sink, root) = match self.local_root() {
            Some(root) => {
                let path = root.join(paths::upload_data(id).as_ref());
                let sink = blocking(move || {
                    if let Some(dir) = path.parent() {
                        std::fs::create_dir_all(dir)?;
                    }
                    let mut options = std::fs::OpenOptions::new();
                    let file = options.read(true).write(true).create(true).truncate(false).open(&path)?;
                    match file.try_lock() {
                        Ok(()) => Ok(Some(Sink::open(Arc::new(file), &path))),
                        Err(std::fs::TryLockError::WouldBlock) => Ok(None),
                        Err(std::fs::TryLockError::Error(e)) => Err(e),
                    }
                })
                .await?;
                let Some(sink) = sink else { return Ok(None) };
                (Arc::new(sink), root.to_path_buf())
            }
            None => return Err(BlobError::Config("local staging files on a store without a local directory".into())),
        };
        Ok(Some(UploadLock { store: self.clone(), id, sink, root, tail: false }))
    }
}

impl UploadLock {
    /// Streams `body` into the staging object from byte `offset` (the bytes the session has recorded), feeding
    /// `hasher` on the way; anything staged past `offset` by a writer that failed is discarded first. Stops with
    /// [`BlobError::TooLarge`] past `limit` bytes of body. Returns the number of bytes written. Memory does not
    /// grow with the body. The session's claim is renewed (`lease`) while the body streams.
    pub(crate) async fn write_at<S, E>(
        &mut self,
        offset: u64,
        body: S,
        hasher: &mut DigestHasher,
        limit: Option<u64>,
        lease: &mut Lease,
    ) -> Result<u64, BlobError>
    where
        S: Stream<Item = Result<Bytes, E>> + Unpin,
        E: std::fmt::Display,
    {
        let path = self.root.join(paths::upload_data(self.id).as_ref());
        let failed = self.root.join(paths::upload_failed(self.id).as_ref());
        let (written, crossed) =
            write_file_at(&self.sink, (&path, &failed), offset, body, hasher, limit, lease).await?;
        self.tail = crossed;
        Ok(written)
    }

    /// Starts writeback of what the last [`UploadLock::write_at`] left unsynced, when that is a good share, without
    /// waiting for it: for a chunk that is not the last, so that the disk works while the next one arrives. (Before
    /// a commit there is no point: the commit syncs at once.)
    pub(crate) fn write_back(&mut self) {
        if self.tail {
            self.tail = false;
            let path = self.root.join(paths::upload_data(self.id).as_ref());
            let failed = self.root.join(paths::upload_failed(self.id).as_ref());
            start_writeback(&path, &failed, &mut None);
        }
    }

    /// Hashes the first `size` staged bytes with `algorithm` (when the client names a digest algorithm other than
    /// the one hashed while receiving).
    pub(crate) async fn hash(&self, size: u64, algorithm: Algorithm) -> Result<Digest, BlobError> {
        let mut hasher = DigestHasher::new(algorithm);
        let mut seen = 0u64;
        match self.store.store().get(&paths::upload_data(self.id)).await {
            Ok(r) => {
                let mut s = r.into_stream();
                while let Some(chunk) = s.next().await {
                    let chunk = chunk?;
                    let take = chunk.len().min((size - seen) as usize);
                    hasher.update(&chunk[..take]);
                    seen += take as u64;
                }
            }
            Err(object_store::Error::NotFound { .. }) => {}
            Err(e) => return Err(e.into()),
        }
        if seen != size {
            return Err(BlobError::StagingLost { expected: size, found: seen });
        }
        Ok(hasher.finish())
    }

    /// Makes the `size` staged bytes visible as blob `digest`, which the caller has verified, and removes the
    /// upload's staging area. In a local directory the content is fsynced before the rename and the directory
    /// after it, so an acknowledged blob survives a crash; the blob path never holds partial content.
    pub(crate) async fn commit(self, size: u64, digest: &Digest) -> Result<(), BlobError> {
        let (id, sink, root) = (self.id, self.sink.clone(), self.root.clone());
        let target = root.join(paths::blob(digest).as_ref());
        blocking(move || {
            // Published now, whenever its bytes were written: a garbage-collection sweep keeps content written
            // within its grace period, which covers the moment between this and the caller's link.
            let file = &sink.file;
            file.set_modified(std::time::SystemTime::now())?;
            file.sync_data()?;
            let failed = root.join(paths::upload_failed(id).as_ref());
            if let Ok(why) = std::fs::read_to_string(&failed) {
                return Err(std::io::Error::other(format!("an earlier writeback of the upload failed: {why}")));
            }
            let found = file.metadata()?.len();
            if found != size {
                return Ok(Err(BlobError::StagingLost { expected: size, found }));
            }
            let staged = root.join(paths::upload_data(id).as_ref());
            let created = make_dir_for(&target)?;
            install(&staged, &target, created)?;
            remove_dir(&root.join(paths::upload_dir(id).as_ref()));
            Ok(Ok(()))
        })
        .await?
    }
}

/// Creates `target`'s directory when missing; says whether it did (see [`install`]).
pub(crate) fn make_dir_for(target: &Path) -> std::io::Result<bool> {
    let dir = target.parent().ok_or_else(|| std::io::Error::other("blob path without a directory"))?;
    if dir.is_dir() {
        return Ok(false);
    }
    std::fs::create_dir_all(dir)?;
    Ok(true)
}

/// Renames the synced file `staged` to `target` and syncs the directories that changed: the target's directory,
/// and its parent too when the directory was `created` for it (by [`make_dir_for`]).
pub(crate) fn install(staged: &Path, target: &Path, created: bool) -> std::io::Result<()> {
    let dir = target.parent().ok_or_else(|| std::io::Error::other("blob path without a directory"))?;
    std::fs::rename(staged, target)?;
    std::fs::File::open(dir)?.sync_all()?;
    if created {
        if let Some(parent) = dir.parent() {
            std::fs::File::open(parent)?.sync_all()?;
        }
    }
    Ok(())
}

/// Removes a staging directory; leftovers are invisible and only cost space.
pub(crate) fn remove_dir(dir: &Path) {
    match std::fs::remove_dir_all(dir) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => tracing::warn!(dir = %dir.display(), error = %e, "could not remove an upload's staging directory"),
    }
}

/// The local half of [`UploadLock::write_at`]: gathers the body in [`WRITE_CHUNK`] buffers, hashing on the way, and
/// writes each at its position on the blocking pool while the next is gathered (two buffers, reused). With direct
/// writes ([`direct`]) the first buffer starts at the aligned offset before `offset`, with the staged bytes
/// between the two read back, so that every write but the tail is aligned. Through the page cache, every
/// [`WRITEBACK_EVERY`] bytes it starts writeback (see [`start_writeback`]), so that the disk works while the body
/// arrives and the sync at commit only waits for the tail. Returns the bytes written and whether the tail crossed a
/// writeback boundary since the last writeback started (see [`UploadLock::write_back`]).
async fn write_file_at<S, E>(
    sink: &Arc<Sink>,
    (path, failed): (&Path, &Path),
    offset: u64,
    mut body: S,
    hasher: &mut DigestHasher,
    limit: Option<u64>,
    lease: &mut Lease,
) -> Result<(u64, bool), BlobError>
where
    S: Stream<Item = Result<Bytes, E>> + Unpin,
    E: std::fmt::Display,
{
    let direct = sink.direct();
    let head = if direct { (offset % ALIGN as u64) as usize } else { 0 };
    let s = sink.clone();
    let (found, buf) = blocking(move || {
        let len = s.file.metadata()?.len();
        if len > offset {
            s.file.set_len(offset)?;
        }
        let mut buf = Buffer::take(WRITE_CHUNK, direct);
        if len >= offset && head > 0 {
            s.file.read_exact_at(buf.space(head), offset - head as u64)?;
        }
        Ok((len, buf))
    })
    .await?;
    if found < offset {
        return Err(BlobError::StagingLost { expected: offset, found });
    }
    let mut buf = buf;
    let mut spare: Option<Buffer> = None;
    let mut in_flight: Option<JoinHandle<std::io::Result<Buffer>>> = None;
    let mut pos = offset - head as u64;
    let mut written = 0u64;
    // Where the last writeback this call started reached; one starts whenever the position crosses a multiple of
    // WRITEBACK_EVERY (counted from the file's start, so that small chunks take turns). Direct writes need none.
    let mut synced_to = offset;
    let mut writeback = None;
    let outcome: Result<(), BlobError> = async {
        loop {
            let chunk = match body.next().await {
                None => break,
                Some(Err(e)) => return Err(BlobError::Body(e.to_string())),
                Some(Ok(chunk)) => chunk,
            };
            written += chunk.len() as u64;
            if let Some(l) = limit.filter(|l| written > *l) {
                return Err(BlobError::TooLarge(l));
            }
            hasher.update(&chunk);
            lease.keep().await?;
            let mut rest = &chunk[..];
            while !rest.is_empty() {
                rest = &rest[buf.fill(rest)..];
                if !buf.is_full() {
                    break;
                }
                if let Some(task) = in_flight.take() {
                    spare = Some(join(task).await?);
                }
                let next = spare.take().unwrap_or_else(|| Buffer::take(WRITE_CHUNK, direct));
                let full = std::mem::replace(&mut buf, next);
                let len = full.len() as u64;
                in_flight = Some(write_in_background(sink, full, pos));
                pos += len;
                if !direct && pos / WRITEBACK_EVERY > synced_to / WRITEBACK_EVERY {
                    start_writeback(path, failed, &mut writeback);
                    synced_to = pos;
                }
            }
        }
        Ok(())
    }
    .await;
    let mut result = outcome;
    if let Some(task) = in_flight.take() {
        let joined = join(task).await;
        result = result.and(joined.map(drop));
    }
    if result.is_ok() && written > 0 && !buf.is_empty() {
        let len = buf.len() as u64;
        result = join(write_in_background(sink, buf, pos)).await.map(drop);
        pos += len;
    }
    if let Err(e) = result {
        // What this call staged is discarded now (not at the next write): a full disk gets its room back at
        // once, and the upload resumes at `offset`, where the session says it ends.
        let s = sink.clone();
        if let Err(t) = blocking(move || s.file.set_len(offset)).await {
            tracing::warn!(path = %path.display(), error = %t, "could not discard a failed chunk's staged bytes");
        }
        return Err(e);
    }
    Ok((written, !direct && pos / WRITEBACK_EVERY > synced_to / WRITEBACK_EVERY))
}

/// Writes `buf` at `pos` on the blocking pool and hands the emptied buffer back for reuse.
fn write_in_background(sink: &Arc<Sink>, mut buf: Buffer, pos: u64) -> JoinHandle<std::io::Result<Buffer>> {
    let sink = sink.clone();
    tokio::task::spawn_blocking(move || {
        sink.write_at(&buf, pos)?;
        buf.clear();
        Ok(buf)
    })
}

/// Starts an `fdatasync` of `file` in the background unless the previous one of this call is still running.
/// It syncs through a handle of its own on `path`, so it never holds the upload's lock. Nobody waits for it (the
/// commit syncs again), but a writeback error is reported only once, to whichever sync sees it first: when this one
/// does, it leaves the marker `failed`, which the commit checks after its own sync.
fn start_writeback(path: &Path, failed: &Path, running: &mut Option<JoinHandle<()>>) {
    if running.as_ref().is_some_and(|t| !t.is_finished()) {
        return;
    }
    let path = path.to_path_buf();
    let failed = failed.to_path_buf();
    *running = Some(tokio::task::spawn_blocking(move || {
        // Gone means committed or discarded meanwhile: nothing left to write back.
        let Ok(file) = std::fs::File::open(&path) else { return };
        if let Err(e) = file.sync_data() {
            tracing::error!(error = %e, "writing an upload's staged bytes back to disk failed");
            if let Err(e) = std::fs::write(&failed, e.to_string()) {
                tracing::error!(marker = %failed.display(), error = %e, "could not mark the upload as failed");
            }
        }
    }));
}

#[cfg(test)]
mod tests {
    use futures::TryStreamExt;

    use super::*;

    fn body(chunks: &[&'static [u8]]) -> impl Stream<Item = Result<Bytes, std::io::Error>> + Unpin {
        futures::stream::iter(chunks.iter().map(|c| Ok(Bytes::from_static(c))).collect::<Vec<_>>())
    }

    /// A body that sends `good` and then fails, as a client that hangs up mid-chunk.
    fn broken(good: &'static [u8]) -> impl Stream<Item = Result<Bytes, std::io::Error>> + Unpin {
        futures::stream::iter(vec![Ok(Bytes::from_static(good)), Err(std::io::Error::other("connection reset"))])
    }

    async fn read(store: &BlobStore, d: &Digest) -> Vec<u8> {
        let (s, _, _) = store.read(d, None).await.unwrap().unwrap();
        s.try_collect::<Vec<Bytes>>().await.unwrap().concat()
    }

    async fn suite(store: BlobStore) {
        let id = UploadId::random();
        let mut lock = store.lock_upload(id).await.unwrap().expect("free upload");
        assert!(store.lock_upload(id).await.unwrap().is_none(), "a second writer is refused while one writes");
        let mut h = DigestHasher::new(Algorithm::Sha256);
        assert_eq!(
            lock.write_at(0, body(&[b"hello ", b"wor"]), &mut h, None, &mut Lease::detached()).await.unwrap(),
            9
        );
        lock.write_back();
        drop(lock);

        // A writer that fails halfway leaves junk past the session's 9 bytes; the next one starts at 9 anyway.
        let mut lock = store.lock_upload(id).await.unwrap().expect("released on drop");
        let mut scratch = DigestHasher::new(Algorithm::Sha256);
        let err = lock.write_at(9, broken(b"JUNK"), &mut scratch, None, &mut Lease::detached()).await.unwrap_err();
        assert!(matches!(err, BlobError::Body(_)), "{err}");
        drop(lock);
        let mut lock = store.lock_upload(id).await.unwrap().unwrap();
        let err = lock.write_at(12, body(&[b"x"]), &mut scratch, None, &mut Lease::detached()).await.unwrap_err();
        assert!(matches!(err, BlobError::StagingLost { expected: 12, found: 9 }), "never a gap: {err}");
        assert_eq!(lock.write_at(9, body(&[b"ld"]), &mut h, None, &mut Lease::detached()).await.unwrap(), 2);
        let d = h.finish();
        assert_eq!(d, Digest::sha256_of(b"hello world"));
        assert_eq!(lock.hash(11, Algorithm::Sha512).await.unwrap(), Digest::of(Algorithm::Sha512, b"hello world"));
        assert_eq!(store.stat(&d).await.unwrap(), None, "not visible before commit");
        lock.commit(11, &d).await.unwrap();
        assert_eq!(read(&store, &d).await, b"hello world");

        // Past the limit: an error, nothing visible.
        let id = UploadId::random();
        let mut lock = store.lock_upload(id).await.unwrap().unwrap();
        let mut h = DigestHasher::new(Algorithm::Sha256);
        let err =
            lock.write_at(0, body(&[b"12345", b"678"]), &mut h, Some(6), &mut Lease::detached()).await.unwrap_err();
        assert!(matches!(err, BlobError::TooLarge(6)));
        drop(lock);
        store.clean_staging(id, &Default::default()).await;

        // A commit whose size does not match what is staged fails and publishes nothing.
        let id = UploadId::random();
        let mut lock = store.lock_upload(id).await.unwrap().unwrap();
        let mut h = DigestHasher::new(Algorithm::Sha256);
        lock.write_at(0, body(&[b"abc"]), &mut h, None, &mut Lease::detached()).await.unwrap();
        let d = h.finish();
        let err = lock.commit(4, &d).await.unwrap_err();
        assert!(matches!(err, BlobError::StagingLost { expected: 4, found: 3 }), "{err}");
        assert_eq!(store.stat(&d).await.unwrap(), None);
        store.clean_staging(id, &Default::default()).await;

        // An empty upload commits an empty blob.
        let id = UploadId::random();
        let lock = store.lock_upload(id).await.unwrap().unwrap();
        let empty = Digest::sha256_of(b"");
        lock.commit(0, &empty).await.unwrap();
        assert_eq!(store.stat(&empty).await.unwrap(), Some(0));
    }

    #[tokio::test]
    async fn filesystem_backend() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("blobs");
        let store = BlobStore::filesystem(root).unwrap();
        suite(store.clone()).await;
        let uploads: Vec<_> = std::fs::read_dir(dir.path().join("blobs/uploads")).unwrap().collect();
        assert!(uploads.is_empty(), "staging directories are removed: {uploads:?}");
    }

    #[tokio::test]
    async fn another_process_lock_is_respected() {
        // flock works between open files, so a second store on the same directory (as another process would
        // have) cannot take an upload that is being written.
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("blobs");
        let open = || BlobStore::filesystem(root.clone()).unwrap();
        let (a, b) = (open(), open());
        let id = UploadId::random();
        let lock = a.lock_upload(id).await.unwrap().unwrap();
        assert!(b.lock_upload(id).await.unwrap().is_none());
        drop(lock);
        assert!(b.lock_upload(id).await.unwrap().is_some());
    }
}
