//! The shared behaviour suite every [`MetadataStore`] implementation must pass, exported (not `cfg(test)`) so each
//! backend's tests, and a new backend's, call the same checks. Called only from tests; it panics on a failure.
//!
//! Each check uses its own key prefix, so they may run one after another on one store. Checks taking two handles
//! want two handles of one store: clones for the embedded stores, two connections (two replicas) for etcd.

use std::sync::Arc;
use std::time::Duration;

use super::{Expect, KvEvent, MetadataStore, StoreError, Txn, Versioned, MAX_TXN_OPS, MAX_VALUE_BYTES};

/// Every check, in order: `a` and `b` are two handles of one store.
pub async fn run_all(a: Arc<dyn MetadataStore>, b: Arc<dyn MetadataStore>) {
    basics(a.as_ref()).await;
    pagination(a.as_ref()).await;
    limits(a.as_ref()).await;
    deletions(a.as_ref()).await;
    prefix_deletes(a.as_ref()).await;
    prefix_checks(a.as_ref()).await;
    feed_published_before_commit_returns(a.as_ref()).await;
    feed_on_a_second_handle(a.as_ref(), b.as_ref()).await;
    concurrent_cas(a.clone(), b.clone()).await;
    leases(a.as_ref(), b.as_ref()).await;
}

/// Reads, CAS, multi-key atomicity, listing, deletes, the first event of the feed.
pub async fn basics(store: &dyn MetadataStore) {
    let mut feed = store.subscribe();
    assert!(store.get("a/1").await.unwrap().is_none());
    let r1 = store.commit(Txn::new().expect("a/1", Expect::Absent).put("a/1", b"one".to_vec())).await.unwrap();
    let got = store.get("a/1").await.unwrap().unwrap();
    assert_eq!((got.value.as_slice(), got.version), (&b"one"[..], r1));
    // A second create of the same key conflicts and changes nothing.
    let err = store.commit(Txn::new().expect("a/1", Expect::Absent).put("a/1", b"x".to_vec())).await;
    assert!(matches!(err, Err(StoreError::Conflict { key }) if key == "a/1"));
    // CAS on the right version wins, on a stale one loses.
    let r2 = store.commit(Txn::new().expect("a/1", Expect::Version(r1)).put("a/1", b"two".to_vec())).await.unwrap();
    assert!(r2 > r1);
    let stale = store.commit(Txn::new().expect("a/1", Expect::Version(r1)).put("a/1", b"bad".to_vec())).await;
    assert!(matches!(stale, Err(StoreError::Conflict { key }) if key == "a/1"));
    assert_eq!(store.get("a/1").await.unwrap().unwrap().value, b"two");
    // Multi-key atomicity: a failing check writes nothing, and the conflict names the key that failed.
    let failed = store
        .commit(
            Txn::new()
                .expect("a/1", Expect::Present)
                .expect("a/9", Expect::Present)
                .put("a/2", b"no".to_vec())
                .delete("a/1"),
        )
        .await;
    assert!(matches!(failed, Err(StoreError::Conflict { key }) if key == "a/9"));
    assert!(store.get("a/2").await.unwrap().is_none());
    assert!(store.get("a/1").await.unwrap().is_some());
    // Listing: ordered, prefix-bounded, paginated.
    let mut txn = Txn::new();
    for k in ["a/3", "a/2", "b/1", "a0"] {
        txn = txn.put(k, k.as_bytes().to_vec());
    }
    store.commit(txn).await.unwrap();
    let keys = |rows: Vec<(String, Versioned)>| rows.into_iter().map(|(k, _)| k).collect::<Vec<_>>();
    assert_eq!(keys(store.list("a/", None, 10).await.unwrap()), ["a/1", "a/2", "a/3"]);
    assert_eq!(store.list_keys("a/", Some("a/1"), 10).await.unwrap(), ["a/2", "a/3"]);
    assert_eq!(keys(store.list("a/", Some("a/1"), 1).await.unwrap()), ["a/2"]);
    assert_eq!(keys(store.list("a/", Some("a/3"), 10).await.unwrap()), Vec::<String>::new());
    // Deletes.
    store.commit(Txn::new().expect("a/1", Expect::Present).delete("a/1")).await.unwrap();
    assert!(store.get("a/1").await.unwrap().is_none());
    assert!(store.revision().await.unwrap() >= r2);
    // The feed saw the first write first.
    let first = feed.recv().await.unwrap();
    assert_eq!((first.key.as_str(), first.revision), ("a/1", r1));
}

/// Paging through more keys than one page, by `list` and by `list_keys`, never leaking past the prefix.
pub async fn pagination(store: &dyn MetadataStore) {
    let all: Vec<String> = (0..250).map(|i| format!("page/k{i:04}")).collect();
    for chunk in all.chunks(100) {
        let txn = chunk.iter().fold(Txn::new(), |t, k| t.put(k.clone(), k.as_bytes().to_vec()));
        store.commit(txn).await.unwrap();
    }
    store
        .commit(Txn::new().put("page0", b"x".to_vec()).put("pagf", b"x".to_vec()).put("pag", b"x".to_vec()))
        .await
        .unwrap();
    let (mut listed, mut after) = (Vec::new(), None::<String>);
    loop {
        let page = store.list("page/", after.as_deref(), 7).await.unwrap();
        assert!(page.len() <= 7);
        let Some((last, _)) = page.last() else { break };
        after = Some(last.clone());
        for (k, v) in page {
            assert_eq!(v.value, k.as_bytes());
            listed.push(k);
        }
    }
    assert_eq!(listed, all);
    let (mut keys, mut after) = (Vec::new(), None::<String>);
    loop {
        let page = store.list_keys("page/", after.as_deref(), 64).await.unwrap();
        let Some(last) = page.last() else { break };
        after = Some(last.clone());
        keys.extend(page);
    }
    assert_eq!(keys, all);
    assert_eq!(store.list_keys("page/", Some("page/k0248"), 10).await.unwrap(), ["page/k0249"]);
    assert_eq!(store.list("page/", None, 1000).await.unwrap().len(), 250);
}

/// Transactions over the limits fail with [`StoreError::TooLarge`] and write nothing.
pub async fn limits(store: &dyn MetadataStore) {
    let puts = |n: usize| (0..n).fold(Txn::new(), |t, i| t.put(format!("limits/{i:03}"), vec![b'v']));
    let too_large = |r: Result<u64, StoreError>| matches!(r, Err(StoreError::TooLarge { .. }));
    assert!(too_large(store.commit(puts(MAX_TXN_OPS + 1)).await));
    assert!(store.list_keys("limits/", None, 1000).await.unwrap().is_empty());
    let mixed = puts(MAX_TXN_OPS).delete("limits/other");
    assert!(too_large(store.commit(mixed).await));
    let checks = (0..=MAX_TXN_OPS).fold(Txn::new(), |t, i| t.expect(format!("limits/c{i}"), Expect::Absent));
    assert!(too_large(store.commit(checks.put("limits/x", b"x".to_vec())).await));
    let huge = Txn::new().put("limits/small", b"s".to_vec()).put("limits/huge", vec![0; MAX_VALUE_BYTES + 1]);
    assert!(too_large(store.commit(huge).await));
    let two = Txn::new().put("limits/big1", vec![1; MAX_VALUE_BYTES]).put("limits/big2", vec![2; MAX_VALUE_BYTES / 2]);
    assert!(too_large(store.commit(two).await));
    assert!(store.list_keys("limits/", None, 1000).await.unwrap().is_empty());
    // At the limits it goes through.
    store.commit(puts(MAX_TXN_OPS)).await.unwrap();
    store.commit(Txn::new().put("limits/big", vec![7; MAX_VALUE_BYTES])).await.unwrap();
    assert_eq!(store.get("limits/big").await.unwrap().unwrap().value.len(), MAX_VALUE_BYTES);
    assert_eq!(store.list_keys("limits/", None, 1000).await.unwrap().len(), MAX_TXN_OPS + 1);
}

/// Deletions of watched objects are remembered with their last value, until the key is written again.
pub async fn deletions(store: &dyn MetadataStore) {
    let before = store.revision().await.unwrap();
    let txn = Txn::new().put("imagestreams/ns/x", b"x1".to_vec()).put("imagestreams/ns/y", b"y1".to_vec());
    store.commit(txn.put("links/ns/x/blobs/d", b"l".to_vec())).await.unwrap();
    let gone = store
        .commit(Txn::new().delete("imagestreams/ns/x").delete("imagestreams/ns/y").delete("links/ns/x/blobs/d"))
        .await
        .unwrap();
    store.commit(Txn::new().put("imagestreams/ns/y", b"y2".to_vec())).await.unwrap();
    let deleted = store.deleted_since("imagestreams/ns/", before).await.unwrap();
    assert_eq!(deleted, [("imagestreams/ns/x".to_owned(), Versioned { value: b"x1".to_vec(), version: gone })]);
    assert!(store.deleted_since("imagestreams/ns/", gone).await.unwrap().is_empty());
    assert!(store.deleted_since("imagestreams/other/", before).await.unwrap().is_empty());
    // Keys without tombstones are not reported.
    assert!(store.deleted_since("links/", before).await.unwrap().is_empty());
    // Deleted again after a rewrite: the newest deletion and the value it removed.
    let mid = store.commit(Txn::new().put("istags/ns/s/t", b"t1".to_vec())).await.unwrap();
    store.commit(Txn::new().put("istags/ns/s/t", b"t2".to_vec())).await.unwrap();
    let again = store.commit(Txn::new().delete("istags/ns/s/t")).await.unwrap();
    let deleted = store.deleted_since("istags/ns/", mid).await.unwrap();
    assert_eq!(deleted, [("istags/ns/s/t".to_owned(), Versioned { value: b"t2".to_vec(), version: again })]);
    let now = store.revision().await.unwrap();
    assert!(store.deleted_since("istags/", now).await.unwrap().is_empty());
}

/// A prefix delete removes every key under the prefix (not a sibling sharing its first characters) as one write,
/// atomically with the rest of its transaction; each key deleted is on the feed and in `deleted_since` as a
/// single delete would put it, once even when also deleted by name.
pub async fn prefix_deletes(store: &dyn MetadataStore) {
    let before = store.revision().await.unwrap();
    let tags: Vec<String> = (0..300).map(|i| format!("istags/pd/s/t{i:03}")).collect();
    for chunk in tags.chunks(MAX_TXN_OPS) {
        let txn = chunk.iter().fold(Txn::new(), |t, k| t.put(k.clone(), k.as_bytes().to_vec()));
        store.commit(txn).await.unwrap();
    }
    let stream = store
        .commit(
            Txn::new()
                .put("imagestreams/pd/s", b"s".to_vec())
                .put("istags/pd/s2/x", b"x".to_vec())
                .put("istags/pd/s0", b"0".to_vec())
                .put("links/pd/s/blobs/d", b"l".to_vec())
                .put("manifest-content/pd", b"m".to_vec()),
        )
        .await
        .unwrap();
    // A failing check leaves every key in place.
    let stale = Txn::new().expect("imagestreams/pd/s", Expect::Version(stream - 1)).delete_prefix("istags/pd/s/");
    assert!(matches!(store.commit(stale).await, Err(StoreError::Conflict { key }) if key == "imagestreams/pd/s"));
    assert_eq!(store.list_keys("istags/pd/s/", None, 1000).await.unwrap(), tags);
    // A transaction may not put under a prefix it deletes; nothing is written.
    let contradiction = Txn::new().delete_prefix("istags/pd/s/").put("istags/pd/s/t000", b"again".to_vec());
    assert!(matches!(store.commit(contradiction).await, Err(StoreError::InvalidTxn(_))));
    assert_eq!(store.list_keys("istags/pd/s/", None, 1000).await.unwrap().len(), 300);
    let too_many = (0..=MAX_TXN_OPS).fold(Txn::new(), |t, i| t.delete_prefix(format!("pd-none/{i}/")));
    assert!(matches!(store.commit(too_many).await, Err(StoreError::TooLarge { .. })));
    let mut feed = store.subscribe();
    let gone = store
        .commit(
            Txn::new()
                .expect("imagestreams/pd/s", Expect::Version(stream))
                .delete("imagestreams/pd/s")
                .delete("istags/pd/s/t007")
                .delete_prefix("istags/pd/s/")
                .delete_prefix("links/pd/s/")
                .delete_prefix("manifest-content/pd")
                .delete_prefix("pd-none/")
                .put("pd-done", b"d".to_vec()),
        )
        .await
        .unwrap();
    assert!(store.list_keys("istags/pd/s/", None, 10).await.unwrap().is_empty());
    assert!(store.list_keys("links/pd/", None, 10).await.unwrap().is_empty());
    assert!(store.get("manifest-content/pd").await.unwrap().is_none());
    assert!(store.get("imagestreams/pd/s").await.unwrap().is_none());
    assert_eq!(store.get("pd-done").await.unwrap().map(|v| v.version), Some(gone));
    // Siblings whose names merely start alike stay.
    assert_eq!(store.list_keys("istags/pd/", None, 10).await.unwrap(), ["istags/pd/s0", "istags/pd/s2/x"]);
    // The feed has one deletion per key, in the commit's revision, unwatched keys excepted.
    let mut deleted = Vec::new();
    while let Ok(event) = feed.try_recv() {
        assert_eq!(event.revision, gone, "{event:?}");
        if event.value.is_none() {
            deleted.push(event.key);
        }
    }
    deleted.sort();
    let mut want: Vec<String> = tags.clone();
    want.extend(["imagestreams/pd/s".to_owned(), "links/pd/s/blobs/d".to_owned()]);
    want.sort();
    assert_eq!(deleted, want, "every deleted key on the feed, once");
    // Tombstones as for single deletes: each key with its last value, at the deleting revision.
    let tombs = store.deleted_since("istags/pd/", before).await.unwrap();
    let want: Vec<(String, Versioned)> =
        tags.iter().map(|k| (k.clone(), Versioned { value: k.as_bytes().to_vec(), version: gone })).collect();
    assert_eq!(tombs, want);
    let streams = store.deleted_since("imagestreams/pd/", before).await.unwrap();
    assert_eq!(streams, [("imagestreams/pd/s".to_owned(), Versioned { value: b"s".to_vec(), version: gone })]);
    assert!(store.deleted_since("istags/pd/", gone).await.unwrap().is_empty());
    // Written again, a key is no longer deleted; a prefix with nothing under it deletes nothing.
    store.commit(Txn::new().put("istags/pd/s/t001", b"back".to_vec()).delete_prefix("istags/pd/q/")).await.unwrap();
    assert_eq!(store.deleted_since("istags/pd/", before).await.unwrap().len(), 299);
}

/// A prefix check fails when a key under the prefix was written (or created) after the revision given, holds
/// otherwise (and on an empty range), counts as one check, and does not see deletions: those are noticed through
/// a guard key the deleter writes in the same transaction.
pub async fn prefix_checks(store: &dyn MetadataStore) {
    let r0 = store
        .commit(Txn::new().put("pc/a/1", b"1".to_vec()).put("pc/a/2", b"2".to_vec()).put("pc/guard", b"g".to_vec()))
        .await
        .unwrap();
    let held = |since| Txn::new().expect_prefix_unchanged("pc/a/", since).put("pc/out", b"o".to_vec());
    store.commit(held(r0)).await.unwrap();
    store.commit(Txn::new().expect_prefix_unchanged("pc/none/", 0).put("pc/out", b"o".to_vec())).await.unwrap();
    // A sibling sharing the first characters is not under the prefix.
    let sibling = store.commit(Txn::new().put("pc/ab", b"x".to_vec())).await.unwrap();
    store.commit(held(r0)).await.unwrap();
    assert!(sibling > r0);
    // A rewrite after `since` fails the check, and the failed transaction writes nothing.
    let r1 = store.commit(Txn::new().put("pc/a/2", b"2b".to_vec())).await.unwrap();
    let failed = store.commit(Txn::new().expect_prefix_unchanged("pc/a/", r0).put("pc/never", b"n".to_vec())).await;
    assert!(matches!(failed, Err(StoreError::Conflict { key }) if key == "pc/a/"), "a write after since fails it");
    assert!(store.get("pc/never").await.unwrap().is_none());
    store.commit(held(r1)).await.unwrap();
    // So does a key created after `since`.
    store.commit(Txn::new().put("pc/a/3", b"3".to_vec())).await.unwrap();
    assert!(matches!(store.commit(held(r1)).await, Err(StoreError::Conflict { key }) if key == "pc/a/"));
    // A failing single check is named even beside a prefix check that holds.
    let now = store.revision().await.unwrap();
    let mixed = Txn::new().expect_prefix_unchanged("pc/a/", now).expect("pc/missing", Expect::Present);
    assert!(
        matches!(store.commit(mixed.put("pc/x", vec![1])).await, Err(StoreError::Conflict { key }) if key == "pc/missing")
    );
    // A deletion alone is invisible to a prefix check (etcd's range compare sees only keys that exist) ...
    let before_delete = store.revision().await.unwrap();
    store.commit(Txn::new().delete("pc/a/1")).await.unwrap();
    store.commit(held(before_delete)).await.unwrap();
    // ... so deleters write a guard key that the checker expects by version.
    let guard = store.get("pc/guard").await.unwrap().unwrap().version;
    let since = store.revision().await.unwrap();
    store
        .commit(Txn::new().delete("pc/a/3").expect("pc/guard", Expect::Version(guard)).put("pc/guard", vec![2]))
        .await
        .unwrap();
    let guarded = held(since).expect("pc/guard", Expect::Version(guard));
    assert!(matches!(store.commit(guarded).await, Err(StoreError::Conflict { key }) if key == "pc/guard"));
    // Limits: a prefix check counts as one check.
    let checks = (0..MAX_TXN_OPS).fold(Txn::new(), |t, i| t.expect(format!("pc/c{i}"), Expect::Absent));
    assert!(matches!(
        store.commit(checks.clone().expect_prefix_unchanged("pc/a/", 0).put("pc/y", vec![1])).await,
        Err(StoreError::TooLarge { .. })
    ));
    store.commit(checks.put("pc/y", vec![1])).await.unwrap();
}

/// The feed carries a commit's changes by the time `commit` returns, unwatched keys excepted.
pub async fn feed_published_before_commit_returns(store: &dyn MetadataStore) {
    let mut feed = store.subscribe();
    let txn = Txn::new().put("manifest-content/sha256:00", b"m".to_vec()).put("feed/now", b"1".to_vec());
    let r = store.commit(txn).await.unwrap();
    let event = feed.try_recv().expect("the event is on the feed when commit returns");
    assert_eq!(event, KvEvent { key: "feed/now".into(), value: Some(b"1".to_vec()), revision: r });
    let gone = store.commit(Txn::new().delete("feed/now")).await.unwrap();
    let event = feed.try_recv().expect("the deletion is on the feed when commit returns");
    assert_eq!(event, KvEvent { key: "feed/now".into(), value: None, revision: gone });
    assert!(feed.try_recv().is_err(), "unwatched keys stay off the feed");
}

/// Changes made through `a` reach `b`'s feed (another replica's), all of them, in revision order.
pub async fn feed_on_a_second_handle(a: &dyn MetadataStore, b: &dyn MetadataStore) {
    let mut feed = b.subscribe();
    let mut expected = Vec::new();
    for i in 0..20u32 {
        let key = format!("replica/{}", i % 3);
        let r = a.commit(Txn::new().put(key.clone(), i.to_be_bytes().to_vec())).await.unwrap();
        expected.push(KvEvent { key: key.clone(), value: Some(i.to_be_bytes().to_vec()), revision: r });
        if i % 4 == 3 {
            let r = a.commit(Txn::new().delete(key.clone())).await.unwrap();
            expected.push(KvEvent { key, value: None, revision: r });
        }
    }
    // `b` may still be publishing changes from before it subscribed: those are skipped.
    let first = expected[0].revision;
    let mut next = async || loop {
        let got = tokio::time::timeout(Duration::from_secs(5), feed.recv()).await.expect("feed stalled").unwrap();
        if got.revision >= first {
            return got;
        }
    };
    for want in expected {
        assert_eq!(next().await, want);
    }
    // A read through the other handle sees the write once its feed did.
    let r = a.commit(Txn::new().put("replica/last", b"l".to_vec())).await.unwrap();
    assert_eq!(next().await.revision, r);
    assert_eq!(b.get("replica/last").await.unwrap().map(|v| v.version), Some(r));
}

/// Concurrent read-modify-write on one key through two handles: no increment is lost.
pub async fn concurrent_cas(a: Arc<dyn MetadataStore>, b: Arc<dyn MetadataStore>) {
    const KEY: &str = "cas/counter";
    let mut tasks = Vec::new();
    for t in 0..8 {
        let store = if t % 2 == 0 { a.clone() } else { b.clone() };
        tasks.push(tokio::spawn(async move {
            let mut conflicts = 0u32;
            for _ in 0..20 {
                loop {
                    let (n, expect) = match store.get(KEY).await.unwrap() {
                        Some(v) => (u64::from_be_bytes(v.value.try_into().unwrap()), Expect::Version(v.version)),
                        None => (0, Expect::Absent),
                    };
                    match store.commit(Txn::new().expect(KEY, expect).put(KEY, (n + 1).to_be_bytes().to_vec())).await {
                        Ok(_) => break,
                        Err(StoreError::Conflict { key }) => {
                            assert_eq!(key, KEY);
                            conflicts += 1;
                        }
                        Err(e) => panic!("{e}"),
                    }
                }
            }
            conflicts
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    // Each handle sees the last write once its feed has it (at once for the embedded stores, soon for etcd's).
    for store in [a, b] {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        loop {
            let end = store.get(KEY).await.unwrap().unwrap();
            let end = u64::from_be_bytes(end.value.try_into().unwrap());
            assert!(end <= 160, "more increments than made: {end}");
            if end == 160 {
                break;
            }
            assert!(tokio::time::Instant::now() < deadline, "increments lost: {end} of 160");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

/// One leader at a time across two handles; dropping the leader hands the lease to the other within seconds.
pub async fn leases(a: &dyn MetadataStore, b: &dyn MetadataStore) {
    let within = |secs| Duration::from_secs(secs);
    let mut first = a.elect("suite");
    tokio::time::timeout(within(10), first.acquired()).await.expect("the only candidate becomes leader");
    let mut second = b.elect("suite");
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(first.is_leader() && !second.is_leader(), "one leader at a time");
    // Another name is independent.
    let mut other = b.elect("suite-other");
    tokio::time::timeout(within(10), other.acquired()).await.expect("another name has its own lease");
    drop(first);
    tokio::time::timeout(within(10), second.acquired()).await.expect("the lease moves when the leader goes");
    let mut third = a.elect("suite");
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(second.is_leader() && !third.is_leader());
    drop(second);
    tokio::time::timeout(within(10), third.acquired()).await.expect("and moves back");
    assert!(futures::FutureExt::now_or_never(third.lost()).is_none(), "a leader has not lost its lease");
    drop((third, other));
}
