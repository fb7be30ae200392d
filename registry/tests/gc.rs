//! Garbage collection (`registry::gc`) on the embedded stores: content unreferenced within the grace period is
//! kept and goes after it; linked content, Images' layers and referenced manifests' bytes stay; a reference that
//! appears between the first mark and the deletion wins (written before the tombstone: the second mark keeps it;
//! after it: the link's guarded write waits for the sweep and then finds the content gone, so it is never
//! acknowledged dangling; a manifest stored again just before its deletion: the compare-and-swap delete loses).
//! `tributary adm gc` prints a dry run, then deletes with `--confirm`, measured on disk.

mod common;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use common::tributary;
use futures::future::BoxFuture;
use names::Digest;
use registry::gc::guard::{commit_guarded, Guarded};
use registry::gc::{Collector, SweepOptions};
use registry::testing::TestRegistry;
use reqwest::{Client, StatusCode};
use serde_json::{json, Value};
use storage_backends::meta::Leadership;
use storage_backends::{keys, BlobStore, KvEvent, MemoryStore, MetadataStore, StoreError, Txn, Versioned};

/// When a [`Hooked`] store's hook runs: before or after the first transaction it matches commits.
#[derive(Clone, Copy, PartialEq)]
enum When {
    Before,
    After,
}

type Action = Box<dyn FnOnce(MemoryStore) -> BoxFuture<'static, ()> + Send>;

/// A memory store that runs one action around the first transaction matching a predicate: the test's way of
/// landing a write inside a sweep's window.
#[derive(Clone)]
struct Hooked {
    inner: MemoryStore,
    #[allow(clippy::type_complexity)]
    hook: Arc<Mutex<Option<(fn(&Txn) -> bool, When, Action)>>>,
}

impl Hooked {
    fn new() -> Hooked {
        Hooked { inner: MemoryStore::new(), hook: Arc::default() }
    }
    fn on(&self, matches: fn(&Txn) -> bool, when: When, action: Action) {
        *self.hook.lock().unwrap() = Some((matches, when, action));
    }
}

#[async_trait]
impl MetadataStore for Hooked {
    async fn get(&self, key: &str) -> Result<Option<Versioned>, StoreError> {
        self.inner.get(key).await
    }
    async fn list(
        &self,
        prefix: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<(String, Versioned)>, StoreError> {
        self.inner.list(prefix, after, limit).await
    }
    async fn commit(&self, txn: Txn) -> Result<u64, StoreError> {
        let hook = {
            let mut slot = self.hook.lock().unwrap();
            match slot.as_ref() {
                Some((matches, _, _)) if matches(&txn) => slot.take(),
                _ => None,
            }
        };
        match hook {
            Some((_, When::Before, action)) => {
                action(self.inner.clone()).await;
                self.inner.commit(txn).await
            }
            Some((_, When::After, action)) => {
                let r = self.inner.commit(txn).await;
                action(self.inner.clone()).await;
                r
            }
            None => self.inner.commit(txn).await,
        }
    }
    async fn revision(&self) -> Result<u64, StoreError> {
        self.inner.revision().await
    }
    fn subscribe(&self) -> tokio::sync::broadcast::Receiver<KvEvent> {
        self.inner.subscribe()
    }
    async fn deleted_since(&self, prefix: &str, since: u64) -> Result<Vec<(String, Versioned)>, StoreError> {
        self.inner.deleted_since(prefix, since).await
    }
    fn elect(&self, name: &str) -> Leadership {
        self.inner.elect(name)
    }
}

struct Fixture {
    meta: Hooked,
    blobs: BlobStore,
    gc: Collector,
    _dir: tempfile::TempDir,
}

fn fixture() -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let meta = Hooked::new();
    let shared: Arc<dyn MetadataStore> = Arc::new(meta.clone());
    let blobs = BlobStore::filesystem(dir.path().join("blobs")).unwrap().with_meta(shared.clone());
    Fixture { gc: Collector::new(shared, blobs.clone()), meta, blobs, _dir: dir }
}

fn blob_link(d: &Digest) -> String {
    keys::blob_link(&"ns/app".parse().unwrap(), d)
}

fn manifest_link(d: &Digest) -> String {
    keys::manifest_link(&"ns/app".parse().unwrap(), d)
}

async fn put_blob(f: &Fixture, bytes: &[u8]) -> Digest {
    let d = Digest::sha256_of(bytes);
    f.blobs.put_verified(&d, bytes.to_vec().into()).await.unwrap();
    d
}

async fn put(meta: &MemoryStore, key: String, value: Vec<u8>) {
    meta.commit(Txn::new().put(key, value)).await.unwrap();
}

fn options(grace: Duration) -> SweepOptions {
    SweepOptions { grace, ..Default::default() }
}

fn puts_tombstone(t: &Txn) -> bool {
    t.puts.iter().any(|(k, _)| k.starts_with(keys::GC_DELETING))
}

#[tokio::test]
async fn unreferenced_content_goes_only_after_the_grace_period() {
    let f = fixture();
    let orphan = put_blob(&f, b"uploaded, never referenced").await;
    let linked = put_blob(&f, b"a linked layer").await;
    put(&f.meta.inner, blob_link(&linked), br#"{"size":14}"#.to_vec()).await;
    let layer = put_blob(&f, b"a layer only an Image names").await;
    let image = json!({"metadata": {"name": Digest::sha256_of(b"m").to_string()}, "dockerImageReference": "",
        "dockerImageManifestMediaType": "x", "dockerImageLayers": [{"name": layer, "size": 1, "mediaType": "x"}]});
    put(&f.meta.inner, keys::image(&Digest::sha256_of(b"m")), image.to_string().into_bytes()).await;
    let manifest = br#"{"schemaVersion":2,"layers":[]}"#;
    let unlinked_manifest = Digest::sha256_of(manifest);
    put(&f.meta.inner, keys::manifest_content(&unlinked_manifest), manifest.to_vec()).await;

    let grace = Duration::from_millis(1500);
    let first = f.gc.sweep(&options(grace)).await.unwrap();
    assert!(first.deleted.is_empty(), "{first:?}");
    assert_eq!((first.unreferenced, first.waiting), (2, 2), "{first:?}");
    assert!(f.meta.inner.get(&keys::gc_candidate(&orphan)).await.unwrap().is_some(), "first seen recorded");

    tokio::time::sleep(grace + Duration::from_millis(200)).await;
    let dry = f.gc.sweep(&SweepOptions { dry_run: true, ..options(grace) }).await.unwrap();
    let mut would: Vec<_> = dry.deleted.iter().map(|d| (d.digest.clone(), d.kind.clone())).collect();
    would.sort();
    let mut expected = vec![(orphan.clone(), "blob".to_owned()), (unlinked_manifest.clone(), "manifest".to_owned())];
    expected.sort();
    assert_eq!(would, expected);
    assert!(f.blobs.exists_now(&orphan).await.unwrap(), "a dry run deletes nothing");

    let swept = f.gc.sweep(&options(grace)).await.unwrap();
    assert_eq!(swept.deleted.len(), 2, "{swept:?}");
    assert_eq!(swept.bytes_freed, 26 + manifest.len() as u64);
    assert!(!f.blobs.exists_now(&orphan).await.unwrap(), "the orphan is gone");
    assert!(f.meta.inner.get(&keys::manifest_content(&unlinked_manifest)).await.unwrap().is_none());
    assert!(f.blobs.exists_now(&linked).await.unwrap() && f.blobs.exists_now(&layer).await.unwrap());
    assert!(f.meta.inner.get(&keys::gc_candidate(&orphan)).await.unwrap().is_none(), "record cleared");
    assert!(f.meta.inner.list(keys::GC_DELETING, None, 10).await.unwrap().is_empty(), "no tombstone left");

    // Unlinked now: counted from now, not from when it was written.
    f.meta.inner.commit(Txn::new().delete(blob_link(&linked))).await.unwrap();
    let after = f.gc.sweep(&options(grace)).await.unwrap();
    assert!(after.deleted.is_empty() && after.waiting == 1, "{after:?}");
}

#[tokio::test]
async fn a_link_written_before_the_tombstone_keeps_the_blob() {
    let f = fixture();
    let d = put_blob(&f, b"about to be mounted").await;
    let link = blob_link(&d);
    f.meta.on(
        puts_tombstone,
        When::Before,
        Box::new(move |m| Box::pin(async move { put(&m, link, br#"{"size":19}"#.to_vec()).await })),
    );
    let report = f.gc.sweep(&options(Duration::ZERO)).await.unwrap();
    assert_eq!(report.kept_at_recheck, vec![d.clone()], "{report:?}");
    assert!(report.deleted.is_empty());
    assert!(f.blobs.exists_now(&d).await.unwrap(), "the second mark saw the link");
}

#[tokio::test]
async fn a_link_written_after_the_tombstone_waits_and_is_never_dangling() {
    let f = fixture();
    let d = put_blob(&f, b"deduplicated upload").await;
    let (tx, rx) = tokio::sync::oneshot::channel();
    let digest = d.clone();
    f.meta.on(
        puts_tombstone,
        When::After,
        Box::new(move |m| {
            Box::pin(async move {
                // A finishing upload of the same content: its link's transaction expects no tombstone.
                tokio::spawn(async move {
                    let txn = Txn::new().put(blob_link(&digest), br#"{"size":19}"#.to_vec());
                    let r = commit_guarded(&m, txn, std::slice::from_ref(&digest)).await;
                    let tombstone = m.get(&keys::gc_deleting(&digest)).await.unwrap();
                    let _ = tx.send((r, tombstone.is_none()));
                });
                tokio::time::sleep(Duration::from_millis(50)).await;
            })
        }),
    );
    let report = f.gc.sweep(&options(Duration::ZERO)).await.unwrap();
    assert_eq!(report.deleted.len(), 1, "{report:?}");
    let (written, after_sweep) = rx.await.unwrap();
    assert!(matches!(written, Err(Guarded::Swept(ref x)) if x == &d), "{written:?}");
    assert!(after_sweep, "the writer waited until the sweep was done");
    assert!(f.meta.inner.get(&blob_link(&d)).await.unwrap().is_none(), "no link to deleted content");
    assert!(!f.blobs.exists_now(&d).await.unwrap(), "so the writer knows to fail (or store the bytes again)");
}

#[tokio::test]
async fn a_manifest_stored_again_just_before_its_deletion_wins() {
    let f = fixture();
    let bytes = br#"{"schemaVersion":2,"layers":[]}"#.to_vec();
    let d = Digest::sha256_of(&bytes);
    put(&f.meta.inner, keys::manifest_content(&d), bytes.clone()).await;
    let (key, link) = (keys::manifest_content(&d), manifest_link(&d));
    f.meta.on(
        |t| t.deletes.iter().any(|k| k.starts_with("manifest-content/")),
        When::Before,
        Box::new(move |m| {
            Box::pin(async move {
                // A manifest PUT: its bytes and link in one transaction, after the sweep's second mark.
                m.commit(Txn::new().put(key, bytes).put(link, br#"{"mediaType":"x","size":1}"#.to_vec()))
                    .await
                    .unwrap();
            })
        }),
    );
    let report = f.gc.sweep(&options(Duration::ZERO)).await.unwrap();
    assert_eq!(report.kept_at_recheck, vec![d.clone()], "{report:?}");
    assert!(f.meta.inner.get(&keys::manifest_content(&d)).await.unwrap().is_some(), "the push won");
}

/// Files under the registry's blob directory (content and upload objects).
fn files_on_disk(reg: &TestRegistry) -> usize {
    fn walk(p: &std::path::Path) -> usize {
        std::fs::read_dir(p)
            .map(|rd| rd.flatten().map(|e| if e.path().is_dir() { walk(&e.path()) } else { 1 }).sum())
            .unwrap_or(0)
    }
    walk(&reg.data_dir().join("blobs").join("blobs"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn adm_gc_dry_run_then_confirm() {
    const TOKEN: &str = "gc-admin-secret-token";
    let reg = TestRegistry::builder().with_admin_token(TOKEN).start();
    let cli = |args: &'static [&'static str]| {
        let reg = &reg;
        tokio::task::block_in_place(|| tributary(reg, args))
    };
    cli(&["new-project", "ns"]).unwrap();
    let http = Client::new();
    let url = |p: &str| format!("{}{p}", reg.url());
    let mut digests = Vec::new();
    for body in ["kept layer, in an image", "junk layer, unlinked later"] {
        let d = Digest::sha256_of(body.as_bytes());
        let r = http.post(url(&format!("/v2/ns/app/blobs/uploads/?digest={d}"))).bearer_auth(TOKEN).body(body).send();
        assert_eq!(r.await.unwrap().status(), StatusCode::CREATED);
        digests.push(d);
    }
    let config = json!({"architecture": "amd64", "os": "linux"}).to_string();
    let c = Digest::sha256_of(config.as_bytes());
    let r = http.post(url(&format!("/v2/ns/app/blobs/uploads/?digest={c}"))).bearer_auth(TOKEN).body(config.clone());
    assert_eq!(r.send().await.unwrap().status(), StatusCode::CREATED);
    let manifest = json!({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": c, "size": config.len()},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": digests[0], "size": 23}]});
    let r = http
        .put(url("/v2/ns/app/manifests/v1"))
        .bearer_auth(TOKEN)
        .header("Content-Type", "application/vnd.oci.image.manifest.v1+json")
        .body(manifest.to_string())
        .send();
    assert_eq!(r.await.unwrap().status(), StatusCode::CREATED);
    let r = http.delete(url(&format!("/v2/ns/app/blobs/{}", digests[1]))).bearer_auth(TOKEN).send();
    assert_eq!(r.await.unwrap().status(), StatusCode::ACCEPTED);
    let before = files_on_disk(&reg);

    let dry = cli(&["adm", "gc", "--grace", "0"]).unwrap();
    assert!(dry.contains(&digests[1].to_string()) && !dry.contains(&digests[0].to_string()), "{dry}");
    assert!(dry.contains("1 items, 26 bytes would free") && dry.contains("dry run"), "{dry}");
    assert_eq!(files_on_disk(&reg), before, "a dry run deletes nothing");
    let default_grace = cli(&["adm", "gc"]).unwrap();
    assert!(default_grace.starts_with("0 items"), "the configured hour protects it: {default_grace}");

    let json: Value =
        serde_json::from_str(&cli(&["adm", "gc", "--grace", "0", "--confirm", "-o", "json"]).unwrap()).unwrap();
    assert_eq!(json["deleted"][0]["digest"], json!(digests[1]), "{json}");
    assert_eq!((json["bytesFreed"].as_u64(), json["dryRun"].as_bool()), (Some(26), Some(false)));
    assert_eq!(files_on_disk(&reg), before - 1, "the junk layer's file is gone");
    let again = cli(&["adm", "gc", "--grace", "0", "--confirm"]).unwrap();
    assert!(again.starts_with("0 items, 0 bytes freed"), "{again}");
    let r = http.get(url(&format!("/v2/ns/app/blobs/{}", digests[0]))).bearer_auth(TOKEN).send();
    assert_eq!(r.await.unwrap().status(), StatusCode::OK, "the image's layer stays");

    let anonymous = http.post(url("/apis/tributary.dev/v1/gc")).json(&json!({"confirm": true})).send();
    assert_eq!(anonymous.await.unwrap().status(), StatusCode::UNAUTHORIZED);
    tokio::task::block_in_place(|| drop(reg));
}

/// Two replicas on one etcd and one bucket: only the holder of the `gc` lease sweeps; when it stops, the other
/// takes over and sweeps.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_one_of_two_replicas_sweeps_and_the_other_takes_over() {
    use registry::config::storage::{Blobs, Metadata, Storage};
    use storage_backends::testing::{etcd::EtcdServer, s3::S3Server, s3::BUCKET};
    let Some(etcd) = EtcdServer::start() else { return };
    let Some(s3) = S3Server::start() else { return };
    let replica = || {
        let storage = Storage {
            blobs: Blobs::S3(s3.config(BUCKET, Some("gc-replicas"))),
            metadata: Metadata::Etcd(etcd.config("/gc-replicas/")),
        };
        TestRegistry::builder().with_storage(storage).with_gc(Duration::from_millis(200), Duration::ZERO).start()
    };
    let mut replicas = vec![Some(replica()), Some(replica())];
    let leader = the_gc_leader(&replicas).await;
    let http = Client::new();
    // Junk pushed through the replica that does not sweep goes all the same.
    for round in 0..2 {
        let through = replicas.iter().flatten().find(|r| !r.leads_gc()).or(replicas.iter().flatten().next()).unwrap();
        let body = format!("junk of round {round}");
        let d = Digest::sha256_of(body.as_bytes());
        let url = |p: &str| format!("{}{p}", through.url());
        let r = http.post(url(&format!("/v2/ns/app/blobs/uploads/?digest={d}"))).body(body).send().await.unwrap();
        assert_eq!(r.status(), StatusCode::CREATED);
        assert_eq!(
            http.delete(url(&format!("/v2/ns/app/blobs/{d}"))).send().await.unwrap().status(),
            StatusCode::ACCEPTED
        );
        let deadline = std::time::Instant::now() + Duration::from_secs(15);
        while through.registry().blobs.exists_now(&d).await.unwrap() {
            assert!(std::time::Instant::now() < deadline, "round {round}: the junk was not collected");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert_eq!(replicas.iter().flatten().filter(|r| r.leads_gc()).count(), 1, "one sweeper at a time");
        if round == 0 {
            let stopped = replicas[leader].take().unwrap();
            tokio::task::block_in_place(|| drop(stopped));
            let next = the_gc_leader(&replicas).await;
            assert_ne!(next, leader, "the other replica took over");
        }
    }
    tokio::task::block_in_place(|| drop(replicas));
}

/// Waits until exactly one running replica holds the `gc` lease; returns its index.
async fn the_gc_leader(replicas: &[Option<TestRegistry>]) -> usize {
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        let leaders: Vec<usize> = replicas
            .iter()
            .enumerate()
            .filter(|(_, r)| r.as_ref().is_some_and(|r| r.leads_gc()))
            .map(|(i, _)| i)
            .collect();
        assert!(leaders.len() <= 1, "two replicas sweep at once: {leaders:?}");
        if let [one] = leaders[..] {
            return one;
        }
        assert!(std::time::Instant::now() < deadline, "no replica took the gc lease");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
