//! Store decorators that time every operation into [`super::Metrics`]: [`TimedMetadataStore`] over any
//! [`MetadataStore`], and [`BlobLayer`], which wraps the blob store's `object_store` and multipart store
//! ([`TimedObjectStore`], [`TimedMultipartStore`]). Each keeps one histogram per operation, looked up once when
//! the decorator is built, so a call costs two raw clock reads and two atomic adds and takes no lock. Installed by
//! [`crate::open`] when metrics are enabled; they change nothing a store does.
//!
//! What is timed: metadata calls until they return (a watch feed and leases are passed through untimed); object
//! store calls until they return (a `get` until its response head, not while its body streams; a listing or a
//! delete stream until it ends). Uploads staged in local files on the filesystem backend write those files
//! directly, not through the object store: they are not timed here.

use std::ops::Range;
use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;
use futures::stream::BoxStream;
use futures::StreamExt;
use object_store::multipart::{MultipartStore, PartId};
use object_store::path::Path;
use object_store::{
    CopyOptions, GetOptions, GetResult, ListResult, MultipartId, MultipartUpload, ObjectMeta, ObjectStore,
    PutMultipartOptions, PutOptions, PutPayload, PutResult, RenameOptions,
};
use storage_backends::{KvEvent, Leadership, MetadataStore, StoreError, Txn, Versioned};
use tokio::sync::broadcast;

use super::clock::Instant;
use super::{Histogram, Metrics};

/// Times `f` into `h`. The clock ([`Instant`]) is the CPU's time-stamp counter, read raw: a fraction of the cost
/// of a `clock_gettime` on the virtual machines registries run on, and a store call reads it twice.
async fn timed<T>(h: &Histogram, f: impl std::future::Future<Output = T>) -> T {
    let started = Instant::now();
    let out = f.await;
    h.observe(started.elapsed());
    out
}

/// Observes into `h` the time from now until `stream` ends (a stream dropped before its end is not counted).
fn timed_stream<T: Send + 'static>(h: &Histogram, stream: BoxStream<'static, T>) -> BoxStream<'static, T> {
    let (h, started) = (h.clone(), Instant::now());
    let mut done = false;
    stream
        .chain(futures::stream::poll_fn(move |_| {
            if !done {
                done = true;
                h.observe(started.elapsed());
            }
            std::task::Poll::Ready(None)
        }))
        .boxed()
}

// -------------------------------------------------------------------------------------------------------------
// Metadata

/// A [`MetadataStore`] whose calls are timed (`tributary_metadata_operation_duration_seconds`).
pub struct TimedMetadataStore {
    inner: Arc<dyn MetadataStore>,
    get: Histogram,
    get_latest: Histogram,
    list: Histogram,
    list_keys: Histogram,
    commit: Histogram,
    revision: Histogram,
    deleted_since: Histogram,
}

impl TimedMetadataStore {
    /// Wraps `inner`, labelled `backend` (`redb`, `etcd`, `memory`).
    pub fn new(inner: Arc<dyn MetadataStore>, backend: &'static str, metrics: &Metrics) -> TimedMetadataStore {
        let h = |op| metrics.metadata_timer(backend, op);
        TimedMetadataStore {
            inner,
            get: h("get"),
            get_latest: h("get_latest"),
            list: h("list"),
            list_keys: h("list_keys"),
            commit: h("commit"),
            revision: h("revision"),
            deleted_since: h("deleted_since"),
        }
    }
}

#[async_trait]
impl MetadataStore for TimedMetadataStore {
    async fn get(&self, key: &str) -> Result<Option<Versioned>, StoreError> {
        timed(&self.get, self.inner.get(key)).await
    }
    async fn get_latest(&self, key: &str) -> Result<Option<Versioned>, StoreError> {
        timed(&self.get_latest, self.inner.get_latest(key)).await
    }
    async fn list(
        &self,
        prefix: &str,
        start_after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<(String, Versioned)>, StoreError> {
        timed(&self.list, self.inner.list(prefix, start_after, limit)).await
    }
    async fn list_keys(
        &self,
        prefix: &str,
        start_after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<String>, StoreError> {
        timed(&self.list_keys, self.inner.list_keys(prefix, start_after, limit)).await
    }
    async fn commit(&self, txn: Txn) -> Result<u64, StoreError> {
        timed(&self.commit, self.inner.commit(txn)).await
    }
    async fn revision(&self) -> Result<u64, StoreError> {
        timed(&self.revision, self.inner.revision()).await
    }
    fn subscribe(&self) -> broadcast::Receiver<KvEvent> {
        self.inner.subscribe()
    }
    async fn deleted_since(&self, prefix: &str, since: u64) -> Result<Vec<(String, Versioned)>, StoreError> {
        timed(&self.deleted_since, self.inner.deleted_since(prefix, since)).await
    }
    fn elect(&self, name: &str) -> Leadership {
        self.inner.elect(name)
    }
}

// -------------------------------------------------------------------------------------------------------------
// Blobs

/// Wraps the blob store's object stores in timing decorators labelled `backend` (`filesystem`, `s3`, `memory`).
pub struct BlobLayer {
    pub backend: &'static str,
    pub metrics: Arc<Metrics>,
}

impl storage_backends::blobs::StoreLayer for BlobLayer {
    fn object_store(&self, store: Arc<dyn ObjectStore>) -> Arc<dyn ObjectStore> {
        Arc::new(TimedObjectStore::new(store, self.backend, &self.metrics))
    }
    fn multipart_store(&self, store: Arc<dyn MultipartStore>) -> Arc<dyn MultipartStore> {
        Arc::new(TimedMultipartStore::new(store, self.backend, &self.metrics))
    }
}

/// An [`ObjectStore`] whose calls are timed (`tributary_storage_operation_duration_seconds`).
#[derive(Debug)]
pub struct TimedObjectStore {
    inner: Arc<dyn ObjectStore>,
    put: Histogram,
    put_multipart: Histogram,
    get: Histogram,
    head: Histogram,
    get_ranges: Histogram,
    delete: Histogram,
    list: Histogram,
    list_with_delimiter: Histogram,
    copy: Histogram,
    rename: Histogram,
}

impl TimedObjectStore {
    pub fn new(inner: Arc<dyn ObjectStore>, backend: &'static str, metrics: &Metrics) -> TimedObjectStore {
        let h = |op| metrics.storage_timer(backend, op);
        TimedObjectStore {
            inner,
            put: h("put"),
            put_multipart: h("put_multipart"),
            get: h("get"),
            head: h("head"),
            get_ranges: h("get_ranges"),
            delete: h("delete"),
            list: h("list"),
            list_with_delimiter: h("list_with_delimiter"),
            copy: h("copy"),
            rename: h("rename"),
        }
    }
}

impl std::fmt::Display for TimedObjectStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Timed({})", self.inner)
    }
}

#[async_trait]
impl ObjectStore for TimedObjectStore {
    async fn put_opts(
        &self,
        location: &Path,
        payload: PutPayload,
        opts: PutOptions,
    ) -> object_store::Result<PutResult> {
        timed(&self.put, self.inner.put_opts(location, payload, opts)).await
    }
    async fn put_multipart_opts(
        &self,
        location: &Path,
        opts: PutMultipartOptions,
    ) -> object_store::Result<Box<dyn MultipartUpload>> {
        timed(&self.put_multipart, self.inner.put_multipart_opts(location, opts)).await
    }
    async fn get_opts(&self, location: &Path, options: GetOptions) -> object_store::Result<GetResult> {
        let h = if options.head { &self.head } else { &self.get };
        timed(h, self.inner.get_opts(location, options)).await
    }
    async fn get_ranges(&self, location: &Path, ranges: &[Range<u64>]) -> object_store::Result<Vec<Bytes>> {
        timed(&self.get_ranges, self.inner.get_ranges(location, ranges)).await
    }
    fn delete_stream(
        &self,
        locations: BoxStream<'static, object_store::Result<Path>>,
    ) -> BoxStream<'static, object_store::Result<Path>> {
        timed_stream(&self.delete, self.inner.delete_stream(locations))
    }
    fn list(&self, prefix: Option<&Path>) -> BoxStream<'static, object_store::Result<ObjectMeta>> {
        timed_stream(&self.list, self.inner.list(prefix))
    }
    fn list_with_offset(
        &self,
        prefix: Option<&Path>,
        offset: &Path,
    ) -> BoxStream<'static, object_store::Result<ObjectMeta>> {
        timed_stream(&self.list, self.inner.list_with_offset(prefix, offset))
    }
    async fn list_with_delimiter(&self, prefix: Option<&Path>) -> object_store::Result<ListResult> {
        timed(&self.list_with_delimiter, self.inner.list_with_delimiter(prefix)).await
    }
    async fn copy_opts(&self, from: &Path, to: &Path, options: CopyOptions) -> object_store::Result<()> {
        timed(&self.copy, self.inner.copy_opts(from, to, options)).await
    }
    async fn rename_opts(&self, from: &Path, to: &Path, options: RenameOptions) -> object_store::Result<()> {
        timed(&self.rename, self.inner.rename_opts(from, to, options)).await
    }
}

/// A [`MultipartStore`] whose calls are timed (S3 and in-memory uploads: parts, completion).
pub struct TimedMultipartStore {
    inner: Arc<dyn MultipartStore>,
    create: Histogram,
    put_part: Histogram,
    complete: Histogram,
    abort: Histogram,
}

impl TimedMultipartStore {
    pub fn new(inner: Arc<dyn MultipartStore>, backend: &'static str, metrics: &Metrics) -> TimedMultipartStore {
        let h = |op| metrics.storage_timer(backend, op);
        TimedMultipartStore {
            inner,
            create: h("create_multipart"),
            put_part: h("put_part"),
            complete: h("complete_multipart"),
            abort: h("abort_multipart"),
        }
    }
}

#[async_trait]
impl MultipartStore for TimedMultipartStore {
    async fn create_multipart(&self, path: &Path) -> object_store::Result<MultipartId> {
        timed(&self.create, self.inner.create_multipart(path)).await
    }
    async fn create_multipart_opts(&self, path: &Path, opts: PutMultipartOptions) -> object_store::Result<MultipartId> {
        timed(&self.create, self.inner.create_multipart_opts(path, opts)).await
    }
    async fn put_part(
        &self,
        path: &Path,
        id: &MultipartId,
        part_idx: usize,
        data: PutPayload,
    ) -> object_store::Result<PartId> {
        timed(&self.put_part, self.inner.put_part(path, id, part_idx, data)).await
    }
    async fn complete_multipart(
        &self,
        path: &Path,
        id: &MultipartId,
        parts: Vec<PartId>,
    ) -> object_store::Result<PutResult> {
        timed(&self.complete, self.inner.complete_multipart(path, id, parts)).await
    }
    async fn abort_multipart(&self, path: &Path, id: &MultipartId) -> object_store::Result<()> {
        timed(&self.abort, self.inner.abort_multipart(path, id)).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use storage_backends::MemoryStore;

    fn count(m: &Metrics, line_start: &str) -> u64 {
        let (text, _) = m.encode();
        let line = text.lines().find(|l| l.starts_with(line_start)).unwrap_or_else(|| panic!("{line_start}\n{text}"));
        line.rsplit(' ').next().unwrap().parse().unwrap()
    }

    #[tokio::test]
    async fn the_metadata_decorator_times_each_call_and_changes_nothing() {
        let m = Metrics::new(Default::default());
        let store = TimedMetadataStore::new(Arc::new(MemoryStore::new()), "memory", &m);
        store.commit(Txn::new().put("a/1", b"x".to_vec())).await.unwrap();
        assert_eq!(store.get("a/1").await.unwrap().unwrap().value, b"x");
        assert!(store.get("a/2").await.unwrap().is_none());
        let get = "tributary_metadata_operation_duration_seconds_count{backend=\"memory\",operation=\"get\"}";
        let commit = "tributary_metadata_operation_duration_seconds_count{backend=\"memory\",operation=\"commit\"}";
        assert_eq!((count(&m, get), count(&m, commit)), (2, 1));
    }

    #[tokio::test]
    async fn the_object_store_decorator_times_each_call_and_changes_nothing() {
        use object_store::ObjectStoreExt;
        let m = Metrics::new(Default::default());
        let store = TimedObjectStore::new(Arc::new(object_store::memory::InMemory::new()), "memory", &m);
        store.put(&Path::from("a/b"), PutPayload::from_static(b"hello")).await.unwrap();
        assert_eq!(store.get(&Path::from("a/b")).await.unwrap().bytes().await.unwrap(), &b"hello"[..]);
        assert_eq!(store.head(&Path::from("a/b")).await.unwrap().size, 5);
        let listed: Vec<_> = store.list(Some(&Path::from("a"))).collect().await;
        assert_eq!(listed.len(), 1);
        store.delete(&Path::from("a/b")).await.unwrap();
        let op = |o: &str| {
            count(
                &m,
                &format!("tributary_storage_operation_duration_seconds_count{{backend=\"memory\",operation=\"{o}\"}}"),
            )
        };
        assert_eq!([op("put"), op("get"), op("head"), op("list"), op("delete")], [1, 1, 1, 1, 1]);
    }
}
