//! Writing one stream's change within the store's transaction limits (at most [`MAX_TXN_OPS`] writes and as many
//! checks, as etcd allows). [`Loaded::plan`] turns what was read and what the rules want into a [`Plan`];
//! [`StreamService::commit_plan`] commits it. Called by every stream write of `service`, `objects` and `import`.
//!
//! **One transaction when it fits**, which is every change that touches fewer than about a hundred tags: each
//! tag key written is compare-and-swapped on the version read, the stream key too, and a strict write (one
//! conditional on the whole object's `resourceVersion`) adds one prefix check per tag prefix (`istags/<repo>/`,
//! `importconditions/<repo>/`): nothing under them written since the revision the stream was read at. A prefix
//! check cannot see deletions, so the rule of this crate is that **every deletion of a tag key also writes (or
//! deletes) the stream key**, which every write expects by version.
//!
//! **A chain of transactions when it does not** (a spec change that moves hundreds of tags, a push tracked by
//! hundreds of tags, forgetting an image hundreds of tags point at). The writes go in a fixed order, at most
//! [`CHUNK_WRITES`] per transaction: the caller's leading writes (links that make copied images pullable), then
//! the tag keys, then the caller's trailing writes (deletions of what no tag may point at any more), the new
//! stream key (metadata and spec) last. Every transaction of the chain compare-and-swaps its tag keys on the
//! versions read and expects the stream key as the previous link left it; each link of an existing stream
//! rewrites the stream key (its old content until the last link) so that every other writer of the stream, which
//! always expects the stream key's version, conflicts and retries on fresh data instead of interleaving. A strict
//! write's prefix checks go in the first link. What others see meanwhile: tags moving a hundred at a time, the
//! spec and generation changing with the last link. If a link loses a race (or the process dies) the tags
//! already moved stay moved, the spec stays the old one: the operation is retried from a fresh read (the client
//! retries after a crash), and since the rules are idempotent (an event equal to a history's top is not added
//! again; forgetting an image twice is forgetting it once) the retry completes the change rather than repeating
//! it. A strict write that loses a race mid-chain returns `Conflict` (its `resourceVersion` is stale now), the
//! tags already moved staying moved. A stream being created gets its key in the last link: until then its tag
//! keys exist without it (pulls by tag may resolve them; the API shows no stream).

use std::collections::{BTreeMap, BTreeSet};

use names::TagName;
use storage_backends::meta::{encode, MAX_TXN_BYTES, MAX_TXN_OPS};
use storage_backends::{keys, Expect, StoreError, Txn};

use crate::model::NamedTagEventList;
use crate::rules::StreamState;
use crate::service::{stored, Loaded, StreamError, StreamService};

/// Most writes of one link of a chain (its checks are as many, plus the stream key and two prefix checks).
pub(crate) const CHUNK_WRITES: usize = 100;
const _: () = assert!(CHUNK_WRITES + 3 <= MAX_TXN_OPS);

/// One key written: put (`value`) or deleted (`None`), expecting `expect` first when given.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Write {
    pub key: String,
    pub expect: Option<Expect>,
    pub value: Option<Vec<u8>>,
}

impl Write {
    pub(crate) fn add_to(&self, txn: Txn) -> Txn {
        let txn = match self.expect {
            Some(e) => txn.expect(self.key.clone(), e),
            None => txn,
        };
        match &self.value {
            Some(v) => txn.put(self.key.clone(), v.clone()),
            None => txn.delete(self.key.clone()),
        }
    }

    /// What it adds to a transaction's size toward [`MAX_TXN_BYTES`].
    fn bytes(&self) -> usize {
        self.key.len() * (1 + usize::from(self.expect.is_some())) + self.value.as_ref().map_or(0, Vec::len)
    }
}

/// The stream key: as read (`None`: absent) and its new content (`None`: left as it is).
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct StreamWrite {
    pub key: String,
    pub read: Option<(u64, Vec<u8>)>,
    pub new: Option<Vec<u8>>,
}

impl StreamWrite {
    fn expect_read(&self) -> Expect {
        self.read.as_ref().map_or(Expect::Absent, |(v, _)| Expect::Version(*v))
    }
}

/// Everything one stream change writes (see the module documentation for how it is committed).
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct Plan {
    pub leading: Vec<Write>,
    pub tags: Vec<Write>,
    pub trailing: Vec<Write>,
    /// `None` only when there is no stream before or after (histories left without one).
    pub stream: Option<StreamWrite>,
    /// A strict write: these prefixes must have nothing written after this revision.
    pub unchanged_since: Option<(Vec<String>, u64)>,
}

impl Plan {
    fn is_empty(&self) -> bool {
        self.leading.is_empty()
            && self.tags.is_empty()
            && self.trailing.is_empty()
            && self.stream.as_ref().is_none_or(|s| s.new.is_none())
    }

    fn writes(&self) -> impl Iterator<Item = &Write> {
        self.leading.iter().chain(&self.tags).chain(&self.trailing)
    }

    fn prefix_checks(&self, mut txn: Txn) -> Txn {
        if let Some((prefixes, since)) = &self.unchanged_since {
            for p in prefixes {
                txn = txn.expect_prefix_unchanged(p.clone(), *since);
            }
        }
        txn
    }

    /// The whole change as one transaction.
    fn single(&self) -> Txn {
        let mut txn = self.writes().fold(self.prefix_checks(Txn::new()), |t, w| w.add_to(t));
        if let Some(s) = &self.stream {
            txn = txn.expect(s.key.clone(), s.expect_read());
            if let Some(new) = &s.new {
                txn = txn.put(s.key.clone(), new.clone());
            }
        }
        txn
    }

    /// The writes split into the links of a chain, in order; at least one link.
    fn links(&self) -> Vec<Vec<&Write>> {
        let stream_bytes = self.stream.as_ref().map_or(0, |s| {
            let value = s.new.iter().chain(s.read.iter().map(|(_, v)| v)).map(Vec::len).max().unwrap_or(0);
            2 * s.key.len() + value
        });
        let prefix_bytes = self.unchanged_since.as_ref().map_or(0, |(p, _)| p.iter().map(String::len).sum());
        let budget = MAX_TXN_BYTES.saturating_sub(stream_bytes + prefix_bytes + 1024);
        let mut links = Vec::new();
        let (mut link, mut bytes) = (Vec::new(), 0);
        for w in self.writes() {
            if !link.is_empty() && (link.len() >= CHUNK_WRITES || bytes + w.bytes() > budget) {
                links.push(std::mem::take(&mut link));
                bytes = 0;
            }
            bytes += w.bytes();
            link.push(w);
        }
        if !link.is_empty() || links.is_empty() {
            links.push(link);
        }
        links
    }
}

impl Loaded {
    /// The plan that turns what was read into `after`, expecting every key written to be as read. With `strict`,
    /// tag keys left alone must be unchanged too (an update conditional on the whole object's
    /// `resourceVersion`): one prefix check per tag prefix against the revision the stream was read at. `extra`'s
    /// puts go first, its deletes last. A history that loses its last event is deleted, and so are the import
    /// conditions of a tag in neither spec nor status; a deletion rewrites the stream key (the guard of the
    /// prefix checks; the stream's `resourceVersion` still goes up).
    pub(crate) fn plan(&self, extra: Txn, after: &StreamState, strict: bool) -> Plan {
        let blind = |key: String, value| Write { key, expect: None, value };
        let mut plan = Plan {
            leading: extra.puts.into_iter().map(|(k, v)| blind(k, Some(v))).collect(),
            trailing: extra.deletes.into_iter().map(|k| blind(k, None)).collect(),
            ..Plan::default()
        };
        let mut deleted_any = false;
        for (tag, (_, v)) in &self.conditions {
            let kept = after.histories.get(tag).is_some_and(|h| !h.items.is_empty())
                || after.stream.spec.tags.iter().any(|t| t.name == tag.as_str());
            if !kept {
                let key = keys::import_conditions(&self.repo, tag);
                plan.tags.push(Write { key, expect: Some(Expect::Version(*v)), value: None });
                deleted_any = true;
            }
        }
        let tags: BTreeSet<_> = self.histories.keys().chain(after.histories.keys()).collect();
        for tag in tags {
            let key = keys::istag(&self.repo, tag);
            let new = after.histories.get(tag).filter(|h| !h.items.is_empty());
            let write = match (self.histories.get(tag), new) {
                (Some((old, v)), Some(new)) if old != new => (Expect::Version(*v), Some(encode(new))),
                (Some(_), Some(_)) | (None, None) => continue,
                (Some((_, v)), None) => {
                    deleted_any = true;
                    (Expect::Version(*v), None)
                }
                (None, Some(new)) => (Expect::Absent, Some(encode(new))),
            };
            plan.tags.push(Write { key, expect: Some(write.0), value: write.1 });
        }
        let new = stored(&after.stream);
        let read = self.stream.as_ref().map(|(old, v)| (*v, encode(old)));
        let changed = self.stream.as_ref().is_none_or(|(old, _)| old != &new);
        plan.stream = Some(StreamWrite {
            key: keys::imagestream(&self.repo),
            read,
            new: (changed || deleted_any).then(|| encode(&new)),
        });
        if strict {
            let prefixes = vec![keys::istags_of(&self.repo), keys::import_conditions_of(&self.repo)];
            plan.unchanged_since = Some((prefixes, self.read_at));
        }
        plan
    }
}

impl StreamService {
    /// Commits `plan`: as one transaction when it fits the store's limits, else as a chain guarded by the stream
    /// key (see the module documentation). A conflict anywhere is [`StoreError::Conflict`], for the caller's retry.
    pub(crate) async fn commit_plan(&self, plan: Plan) -> Result<(), StreamError> {
        if plan.is_empty() {
            return Ok(());
        }
        let single = plan.single();
        match single.check_limits() {
            Ok(()) => {
                self.store.commit(single).await?;
                return Ok(());
            }
            Err(StoreError::TooLarge { .. }) => {}
            Err(e) => return Err(e.into()),
        }
        let links = plan.links();
        let mut guard = plan.stream.as_ref().map(StreamWrite::expect_read);
        for (i, link) in links.iter().enumerate() {
            let last = i + 1 == links.len();
            let mut txn = if i == 0 { plan.prefix_checks(Txn::new()) } else { Txn::new() };
            txn = link.iter().fold(txn, |t, w| w.add_to(t));
            let mut moved = false;
            if let (Some(s), Some(expect)) = (&plan.stream, guard) {
                txn = txn.expect(s.key.clone(), expect);
                let old = s.read.as_ref().map(|(_, v)| v);
                if let Some(value) = if last { s.new.as_ref().or(old) } else { old } {
                    txn = txn.put(s.key.clone(), value.clone());
                    moved = true;
                }
            }
            let revision = self.store.commit(txn).await?;
            if moved {
                guard = Some(Expect::Version(revision));
            }
        }
        Ok(())
    }
}

/// The plan for histories left without a stream (`after` by tag; an empty history is deleted): per-key
/// compare-and-swap, no stream key to guard them.
pub(crate) fn orphan_plan(loaded: &Loaded, after: &BTreeMap<TagName, NamedTagEventList>) -> Plan {
    let mut plan = Plan::default();
    for (tag, h) in after {
        let Some((old, v)) = loaded.histories.get(tag) else { continue };
        let key = keys::istag(&loaded.repo, tag);
        if h.items.is_empty() {
            plan.tags.push(Write { key, expect: Some(Expect::Version(*v)), value: None });
        } else if h != old {
            plan.tags.push(Write { key, expect: Some(Expect::Version(*v)), value: Some(encode(h)) });
        }
    }
    plan
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use storage_backends::{KvEvent, MemoryStore, MetadataStore};

    use super::*;

    fn tag_writes(n: usize) -> Vec<Write> {
        let put = |i| Write { key: format!("istags/ns/s/t{i:03}"), expect: Some(Expect::Absent), value: Some(vec![1]) };
        (0..n).map(put).collect()
    }

    fn plan(read: u64, tags: Vec<Write>) -> Plan {
        Plan {
            leading: vec![Write { key: "links/ns/s/manifests/m".into(), expect: None, value: Some(b"l".to_vec()) }],
            tags,
            trailing: vec![Write { key: "links/ns/s/blobs/b".into(), expect: None, value: None }],
            stream: Some(StreamWrite {
                key: "imagestreams/ns/s".into(),
                read: Some((read, b"old".to_vec())),
                new: Some(b"new".to_vec()),
            }),
            unchanged_since: Some((vec!["istags/ns/s/".into()], read)),
        }
    }

    async fn setup() -> (MemoryStore, StreamService, u64) {
        let store = MemoryStore::new();
        let svc = StreamService::new(Arc::new(store.clone()), "reg.example");
        let txn = Txn::new().put("imagestreams/ns/s", b"old".to_vec()).put("links/ns/s/blobs/b", b"b".to_vec());
        let read = store.commit(txn).await.unwrap();
        (store, svc, read)
    }

    /// Every event on the feed, by revision.
    fn drain(feed: &mut tokio::sync::broadcast::Receiver<KvEvent>) -> BTreeMap<u64, Vec<KvEvent>> {
        let mut out: BTreeMap<u64, Vec<KvEvent>> = BTreeMap::new();
        while let Ok(e) = feed.try_recv() {
            out.entry(e.revision).or_default().push(e);
        }
        out
    }

    #[tokio::test]
    async fn a_change_that_fits_is_one_transaction() {
        let (store, svc, read) = setup().await;
        let mut feed = store.subscribe();
        svc.commit_plan(plan(read, tag_writes(120))).await.unwrap();
        let commits = drain(&mut feed);
        assert_eq!(commits.len(), 1, "one revision");
        assert_eq!(commits.values().next().unwrap().len(), 123);
        assert_eq!(store.get("imagestreams/ns/s").await.unwrap().unwrap().value, b"new");
    }

    /// Leading writes first, tags a hundred at a time, trailing writes and the new stream key last; every link
    /// within the store's limits (it refuses more) and moving the stream key.
    #[tokio::test]
    async fn a_change_too_large_for_one_transaction_commits_as_a_chain_guarded_by_the_stream_key() {
        let (store, svc, read) = setup().await;
        let mut feed = store.subscribe();
        svc.commit_plan(plan(read, tag_writes(250))).await.unwrap();
        let commits: Vec<Vec<KvEvent>> = drain(&mut feed).into_values().collect();
        assert_eq!(commits.len(), 3, "252 writes in links of at most {CHUNK_WRITES}");
        let stream_value =
            |c: &[KvEvent]| c.iter().find(|e| e.key == "imagestreams/ns/s").and_then(|e| e.value.clone());
        assert_eq!(stream_value(&commits[0]).as_deref(), Some(&b"old"[..]), "the old spec until the last link");
        assert_eq!(stream_value(&commits[1]).as_deref(), Some(&b"old"[..]));
        assert_eq!(stream_value(&commits[2]).as_deref(), Some(&b"new"[..]));
        assert_eq!(commits[0][0].key, "links/ns/s/manifests/m", "the leading write goes first");
        assert!(commits[2].iter().any(|e| e.key == "links/ns/s/blobs/b" && e.value.is_none()), "trailing last");
        assert!(commits.iter().all(|c| c.len() <= MAX_TXN_OPS));
        assert_eq!(store.list_keys("istags/ns/s/", None, 1000).await.unwrap().len(), 250);
    }

    /// A strict chain checks the prefix in its first link: a tag written since the read stops it before anything
    /// is written.
    #[tokio::test]
    async fn a_strict_chain_whose_tags_moved_since_the_read_writes_nothing() {
        let (store, svc, read) = setup().await;
        store.commit(Txn::new().put("istags/ns/s/zzz", vec![9])).await.unwrap();
        let err = svc.commit_plan(plan(read, tag_writes(250))).await;
        assert!(matches!(err, Err(StreamError::Store(StoreError::Conflict { key })) if key == "istags/ns/s/"));
        assert_eq!(store.list_keys("istags/ns/s/", None, 1000).await.unwrap(), ["istags/ns/s/zzz"]);
        assert_eq!(store.get("links/ns/s/manifests/m").await.unwrap(), None);
    }

    /// A link that loses its race stops the chain: the tags of the links before it stay written, the stream key
    /// keeps its old content (the retry starts from there).
    #[tokio::test]
    async fn a_chain_stops_at_the_link_that_loses_a_race() {
        let (store, svc, read) = setup().await;
        let mut p = plan(read, tag_writes(250));
        p.unchanged_since = None;
        // Someone wrote a tag of the second link after the read.
        store.commit(Txn::new().put("istags/ns/s/t150", vec![9])).await.unwrap();
        let err = svc.commit_plan(p).await;
        assert!(matches!(err, Err(StreamError::Store(StoreError::Conflict { key })) if key == "istags/ns/s/t150"));
        assert_eq!(store.list_keys("istags/ns/s/", None, 1000).await.unwrap().len(), 100, "the first link stays");
        let stream = store.get("imagestreams/ns/s").await.unwrap().unwrap();
        assert_eq!(stream.value, b"old");
        assert!(stream.version > read, "the stream key moved with the first link");
    }
}
