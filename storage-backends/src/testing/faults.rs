//! Fault injection for tests: decorators over a metadata store and over an object store (with its multipart
//! interface) that fail or stall the calls a test chooses, passing every other call through unchanged. A test
//! builds the registry on them (`BlobStore::over`, `registry::testing::Builder::with_stores`) and drives it
//! through the real HTTP server. Never used by the server.
//!
//! ```no_run
//! # use std::sync::Arc;
//! # use storage_backends::testing::faults::{Fault, Faults, Op};
//! let faults = Faults::new();
//! faults.inject(Op::PartPut, Fault::Fail).after(1).times(1); // the second part upload fails, once
//! faults.inject(Op::Commit, Fault::Stall(std::time::Duration::from_secs(3))); // every commit stalls
//! faults.clear();
//! ```

use std::collections::HashMap;
use std::fmt;
use std::ops::Range;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use futures::stream::BoxStream;
use futures::StreamExt;
use object_store::multipart::{MultipartStore, PartId};
use object_store::path::Path;
use object_store::{
    CopyOptions, GetOptions, GetResult, ListResult, MultipartId, MultipartUpload, ObjectMeta, ObjectStore,
    PutMultipartOptions, PutOptions, PutPayload, PutResult,
};
use tokio::sync::broadcast;

use crate::meta::{KvEvent, Leadership, MetadataStore, StoreError, Txn, Versioned};

/// The calls a fault can be injected into.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Op {
    /// Metadata reads (`get`, `get_latest`).
    Get,
    /// Metadata listings (`list`, `list_keys`, `deleted_since`).
    List,
    /// Metadata transactions.
    Commit,
    /// Object writes (`put_opts`, `put_multipart_opts`).
    ObjectPut,
    /// Object reads (`get_opts`, ranges, heads).
    ObjectGet,
    /// Object deletes.
    ObjectDelete,
    /// Object listings.
    ObjectList,
    /// Object copies and renames.
    ObjectCopy,
    /// Starting a multipart upload.
    MultipartCreate,
    /// Uploading one part.
    PartPut,
    /// Completing a multipart upload.
    MultipartComplete,
    /// Aborting a multipart upload.
    MultipartAbort,
}

/// What an injected fault does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// The call fails: the metadata store answers [`StoreError::Unavailable`], the object store a generic error.
    Fail,
    /// The call waits this long, then runs.
    Stall(Duration),
}

#[derive(Debug, Clone)]
struct Rule {
    op: Op,
    fault: Fault,
    /// Matching calls to let through before the fault applies.
    skip: u32,
    /// How many matching calls the fault applies to (`None`: until cleared).
    times: Option<u32>,
}

/// The faults in force and a count of the calls seen, shared by the decorators of one test.
#[derive(Debug, Default)]
pub struct Faults {
    rules: Mutex<Vec<Rule>>,
    calls: Mutex<HashMap<Op, u64>>,
}

/// A rule just added, to narrow with [`Injected::after`] and [`Injected::times`].
pub struct Injected<'a> {
    faults: &'a Faults,
    index: usize,
}

impl Injected<'_> {
    /// Lets the next `n` matching calls through first.
    pub fn after(self, n: u32) -> Self {
        self.faults.rules.lock().unwrap()[self.index].skip = n;
        self
    }

    /// Applies to `n` matching calls, then no more.
    pub fn times(self, n: u32) -> Self {
        self.faults.rules.lock().unwrap()[self.index].times = Some(n);
        self
    }
}

impl Faults {
    pub fn new() -> Arc<Faults> {
        Arc::default()
    }

    /// From now on, calls of `op` meet `fault` (every one, unless narrowed).
    pub fn inject(&self, op: Op, fault: Fault) -> Injected<'_> {
        let mut rules = self.rules.lock().unwrap();
        rules.push(Rule { op, fault, skip: 0, times: None });
        Injected { faults: self, index: rules.len() - 1 }
    }

    /// Removes every fault: calls pass through again.
    pub fn clear(&self) {
        self.rules.lock().unwrap().clear();
    }

    /// How many calls of `op` were made.
    pub fn calls(&self, op: Op) -> u64 {
        self.calls.lock().unwrap().get(&op).copied().unwrap_or(0)
    }

    /// Counts a call of `op` and says which fault, if any, applies to it.
    fn check(&self, op: Op) -> Option<Fault> {
        *self.calls.lock().unwrap().entry(op).or_default() += 1;
        let mut rules = self.rules.lock().unwrap();
        for rule in rules.iter_mut().filter(|r| r.op == op) {
            if rule.skip > 0 {
                rule.skip -= 1;
                continue;
            }
            match &mut rule.times {
                Some(0) => continue,
                Some(n) => *n -= 1,
                None => {}
            }
            return Some(rule.fault);
        }
        None
    }

    /// Applies the fault for a call of `op`: waits out a stall; says whether the call must fail.
    async fn enter(&self, op: Op) -> bool {
        match self.check(op) {
            None => false,
            Some(Fault::Fail) => true,
            Some(Fault::Stall(d)) => {
                tokio::time::sleep(d).await;
                false
            }
        }
    }

    async fn meta(&self, op: Op) -> Result<(), StoreError> {
        if self.enter(op).await {
            return Err(StoreError::Unavailable(format!("injected fault in {op:?}")));
        }
        Ok(())
    }

    async fn object(&self, op: Op) -> object_store::Result<()> {
        if self.enter(op).await {
            return Err(object_store::Error::Generic {
                store: "faults",
                source: format!("injected fault in {op:?}").into(),
            });
        }
        Ok(())
    }
}

/// A metadata store whose calls meet the injected faults. Subscriptions and leader elections pass through.
pub struct FaultyMeta {
    inner: Arc<dyn MetadataStore>,
    faults: Arc<Faults>,
}

impl FaultyMeta {
    pub fn new(inner: Arc<dyn MetadataStore>, faults: Arc<Faults>) -> Arc<FaultyMeta> {
        Arc::new(FaultyMeta { inner, faults })
    }
}

#[async_trait]
impl MetadataStore for FaultyMeta {
    async fn get(&self, key: &str) -> Result<Option<Versioned>, StoreError> {
        self.faults.meta(Op::Get).await?;
        self.inner.get(key).await
    }

    async fn get_latest(&self, key: &str) -> Result<Option<Versioned>, StoreError> {
        self.faults.meta(Op::Get).await?;
        self.inner.get_latest(key).await
    }

    async fn list(
        &self,
        prefix: &str,
        start_after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<(String, Versioned)>, StoreError> {
        self.faults.meta(Op::List).await?;
        self.inner.list(prefix, start_after, limit).await
    }

    async fn list_keys(
        &self,
        prefix: &str,
        start_after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<String>, StoreError> {
        self.faults.meta(Op::List).await?;
        self.inner.list_keys(prefix, start_after, limit).await
    }

    async fn commit(&self, txn: Txn) -> Result<u64, StoreError> {
        self.faults.meta(Op::Commit).await?;
        self.inner.commit(txn).await
    }

    async fn revision(&self) -> Result<u64, StoreError> {
        self.faults.meta(Op::Get).await?;
        self.inner.revision().await
    }

    fn subscribe(&self) -> broadcast::Receiver<KvEvent> {
        self.inner.subscribe()
    }

    async fn deleted_since(&self, prefix: &str, since: u64) -> Result<Vec<(String, Versioned)>, StoreError> {
        self.faults.meta(Op::List).await?;
        self.inner.deleted_since(prefix, since).await
    }

    fn elect(&self, name: &str) -> Leadership {
        self.inner.elect(name)
    }
}

/// An object store (with its multipart interface) whose calls meet the injected faults.
pub struct FaultyObjects<T> {
    inner: Arc<T>,
    faults: Arc<Faults>,
}

impl<T> FaultyObjects<T> {
    pub fn new(inner: Arc<T>, faults: Arc<Faults>) -> Arc<FaultyObjects<T>> {
        Arc::new(FaultyObjects { inner, faults })
    }
}

impl<T: fmt::Display> fmt::Display for FaultyObjects<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "FaultyObjects({})", self.inner)
    }
}

impl<T: fmt::Debug> fmt::Debug for FaultyObjects<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FaultyObjects").field("inner", &self.inner).finish()
    }
}

#[async_trait]
impl<T: ObjectStore> ObjectStore for FaultyObjects<T> {
    async fn put_opts(
        &self,
        location: &Path,
        payload: PutPayload,
        opts: PutOptions,
    ) -> object_store::Result<PutResult> {
        self.faults.object(Op::ObjectPut).await?;
        self.inner.put_opts(location, payload, opts).await
    }

    async fn put_multipart_opts(
        &self,
        location: &Path,
        opts: PutMultipartOptions,
    ) -> object_store::Result<Box<dyn MultipartUpload>> {
        self.faults.object(Op::ObjectPut).await?;
        self.inner.put_multipart_opts(location, opts).await
    }

    async fn get_opts(&self, location: &Path, options: GetOptions) -> object_store::Result<GetResult> {
        self.faults.object(Op::ObjectGet).await?;
        self.inner.get_opts(location, options).await
    }

    async fn get_ranges(&self, location: &Path, ranges: &[Range<u64>]) -> object_store::Result<Vec<Bytes>> {
        self.faults.object(Op::ObjectGet).await?;
        self.inner.get_ranges(location, ranges).await
    }

    fn delete_stream(
        &self,
        locations: BoxStream<'static, object_store::Result<Path>>,
    ) -> BoxStream<'static, object_store::Result<Path>> {
        let faults = self.faults.clone();
        let checked = locations
            .then(move |p| {
                let faults = faults.clone();
                async move {
                    faults.object(Op::ObjectDelete).await?;
                    p
                }
            })
            .boxed();
        self.inner.delete_stream(checked)
    }

    fn list(&self, prefix: Option<&Path>) -> BoxStream<'static, object_store::Result<ObjectMeta>> {
        if matches!(self.faults.check(Op::ObjectList), Some(Fault::Fail)) {
            let e = object_store::Error::Generic { store: "faults", source: "injected fault in ObjectList".into() };
            return futures::stream::once(async move { Err(e) }).boxed();
        }
        self.inner.list(prefix)
    }

    async fn list_with_delimiter(&self, prefix: Option<&Path>) -> object_store::Result<ListResult> {
        self.faults.object(Op::ObjectList).await?;
        self.inner.list_with_delimiter(prefix).await
    }

    async fn copy_opts(&self, from: &Path, to: &Path, options: CopyOptions) -> object_store::Result<()> {
        self.faults.object(Op::ObjectCopy).await?;
        self.inner.copy_opts(from, to, options).await
    }
}

#[async_trait]
impl<T: MultipartStore> MultipartStore for FaultyObjects<T> {
    async fn create_multipart(&self, path: &Path) -> object_store::Result<MultipartId> {
        self.faults.object(Op::MultipartCreate).await?;
        self.inner.create_multipart(path).await
    }

    async fn put_part(
        &self,
        path: &Path,
        id: &MultipartId,
        part_idx: usize,
        data: PutPayload,
    ) -> object_store::Result<PartId> {
        self.faults.object(Op::PartPut).await?;
        self.inner.put_part(path, id, part_idx, data).await
    }

    async fn complete_multipart(
        &self,
        path: &Path,
        id: &MultipartId,
        parts: Vec<PartId>,
    ) -> object_store::Result<PutResult> {
        self.faults.object(Op::MultipartComplete).await?;
        self.inner.complete_multipart(path, id, parts).await
    }

    async fn abort_multipart(&self, path: &Path, id: &MultipartId) -> object_store::Result<()> {
        self.faults.object(Op::MultipartAbort).await?;
        self.inner.abort_multipart(path, id).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn rules_skip_then_apply_a_number_of_times() {
        let faults = Faults::new();
        faults.inject(Op::Commit, Fault::Fail).after(1).times(2);
        let hits: Vec<bool> = [0; 5].iter().map(|_| faults.check(Op::Commit).is_some()).collect();
        assert_eq!(hits, [false, true, true, false, false]);
        assert_eq!(faults.calls(Op::Commit), 5);
        assert_eq!(faults.check(Op::Get), None);
        faults.inject(Op::Get, Fault::Fail);
        assert!(faults.meta(Op::Get).await.is_err());
        faults.clear();
        assert!(faults.meta(Op::Get).await.is_ok());
    }
}
