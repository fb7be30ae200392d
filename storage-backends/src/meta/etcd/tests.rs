//! Tests of [`super::EtcdStore`] against a real etcd ([`crate::testing::etcd`]); skipped without the binary.

use super::*;
use crate::meta::suite;
use crate::testing::etcd::{compact, EtcdServer};

fn etcd() -> Option<EtcdServer> {
    let server = EtcdServer::start();
    if server.is_none() {
        eprintln!("SKIPPED: no etcd binary");
    }
    server
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etcd_passes_the_suite() {
    let Some(etcd) = etcd() else { return };
    // Two replicas on one etcd, and a third registry under another prefix that neither must see.
    let (a, b) = (etcd.connect("/reg/").await, etcd.connect("/reg/").await);
    let other = etcd.connect("/other/").await;
    let mut other_feed = other.subscribe();
    suite::run_all(Arc::new(a), Arc::new(b)).await;
    assert!(other_feed.try_recv().is_err());
    assert!(other.list_keys("", None, 10).await.unwrap().is_empty());
    eprintln!("etcd suite ran against {}", etcd.endpoint());
}

#[tokio::test]
async fn compacted_history_makes_older_revisions_too_old() {
    let Some(etcd) = etcd() else { return };
    let store = etcd.connect("/reg/").await;
    let created = store.commit(Txn::new().put("istags/ns/s/t", b"h".to_vec())).await.unwrap();
    let gone = store.commit(Txn::new().delete("istags/ns/s/t")).await.unwrap();
    let later = store.commit(Txn::new().put("other", b"o".to_vec())).await.unwrap();
    compact(&store, later).await.unwrap();
    assert!(matches!(
        store.deleted_since("istags/", created).await,
        Err(StoreError::Compacted { since, compacted }) if since == created && compacted == later
    ));
    assert!(store.deleted_since("istags/", later).await.unwrap().is_empty());
    assert!(gone < later);
    // The store goes on: writes, reads and the feed still work.
    let mut feed = store.subscribe();
    let r = store.commit(Txn::new().put("after", b"a".to_vec())).await.unwrap();
    // Published before `commit` returns, unless the watch took longer than PUBLISH_WAIT (a loaded machine).
    let event = tokio::time::timeout(Duration::from_secs(10), feed.recv()).await.expect("the event arrives");
    assert_eq!(event.unwrap().revision, r);
    assert_eq!(store.get("after").await.unwrap().unwrap().version, r);
}

#[tokio::test]
async fn unreachable_etcd_is_a_clear_error_not_a_hang() {
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let config = EtcdConfig::new(vec![format!("http://127.0.0.1:{port}")]);
    let started = std::time::Instant::now();
    let Err(StoreError::Backend(reason)) = EtcdStore::connect(&config).await else { panic!("connected to nothing") };
    assert!(reason.starts_with(&format!("etcd at http://127.0.0.1:{port}: ")), "{reason}");
    assert!(started.elapsed() < Duration::from_secs(10));
}

#[test]
fn config_reads_kebab_case_with_defaults() {
    let config: EtcdConfig =
        serde_json::from_str(r#"{"endpoints":["http://e:2379"],"ca-file":"/ca.pem","lease-ttl-secs":9}"#).unwrap();
    assert_eq!(config.prefix, "/tributary/");
    assert_eq!(config.ca_file, Some(std::path::PathBuf::from("/ca.pem")));
    assert_eq!(config.lease_ttl_secs, 9);
    assert_eq!(range_end("/t/"), b"/t0");
}

#[tokio::test]
async fn cached_reads_follow_writes_from_another_replica() {
    let Some(etcd) = etcd() else { return };
    let (a, b) = (etcd.connect("/reg/").await, etcd.connect("/reg/").await);
    a.commit(Txn::new().put("istags/ns/s/t", b"1".to_vec())).await.unwrap();
    assert_eq!(b.get("istags/ns/s/t").await.unwrap().unwrap().value, b"1");
    assert!(b.get("absent").await.unwrap().is_none());
    let mut feed = b.subscribe();
    let r = a.commit(Txn::new().put("istags/ns/s/t", b"2".to_vec()).put("absent", b"now".to_vec())).await.unwrap();
    while feed.recv().await.unwrap().revision < r {}
    let (t, absent) = (b.get("istags/ns/s/t").await.unwrap().unwrap(), b.get("absent").await.unwrap().unwrap());
    assert_eq!((t.value.as_slice(), t.version, absent.value.as_slice()), (&b"2"[..], r, &b"now"[..]));
    // Latency of a cached read against one that asks etcd.
    let n = 200;
    let started = std::time::Instant::now();
    for _ in 0..n {
        b.get("istags/ns/s/t").await.unwrap();
    }
    let cached = started.elapsed() / n;
    let mut kv = b.client().kv_client();
    let started = std::time::Instant::now();
    for _ in 0..n {
        kv.get(b.full_key("istags/ns/s/t"), None).await.unwrap();
    }
    let uncached = started.elapsed() / n;
    let started = std::time::Instant::now();
    for i in 0..n {
        a.commit(Txn::new().put("bench/commit", i.to_be_bytes().to_vec())).await.unwrap();
    }
    let commit = started.elapsed() / n;
    eprintln!("etcd get: cached {cached:?}, uncached {uncached:?}; commit (feed published) {commit:?}");
}

#[tokio::test]
async fn a_stalled_leader_loses_its_lease_within_the_ttl() {
    let Some(etcd) = etcd() else { return };
    let (a, b) = (etcd.connect("/reg/").await, etcd.connect("/reg/").await);
    let mut first = a.elect("imports");
    tokio::time::timeout(Duration::from_secs(10), first.acquired()).await.unwrap();
    let mut second = b.elect("imports");
    // The first holder's process "dies": its campaign stops without releasing, so only the TTL frees the lease.
    first.abandon();
    let started = std::time::Instant::now();
    tokio::time::timeout(Duration::from_secs(10), second.acquired()).await.expect("the lease moved");
    let moved = started.elapsed();
    assert!(moved >= Duration::from_secs(1), "moved after {moved:?}, before the TTL could expire");
    eprintln!("etcd lease moved {moved:?} after its holder stopped (TTL 2 s)");
}

#[tokio::test]
async fn a_resigning_leader_hands_over_at_once_and_an_abandoned_one_is_not_leader() {
    let Some(etcd) = etcd() else { return };
    let (a, b) = (etcd.connect("/reg/").await, etcd.connect("/reg/").await);
    let mut first = a.elect("webhooks");
    tokio::time::timeout(Duration::from_secs(10), first.acquired()).await.unwrap();
    let mut second = b.elect("webhooks");
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!second.is_leader());
    let started = std::time::Instant::now();
    first.resign().await;
    tokio::time::timeout(Duration::from_secs(10), second.acquired()).await.expect("the lease moved");
    let moved = started.elapsed();
    assert!(moved < Duration::from_secs(1), "a resigned lease moved after {moved:?}, as if it had expired");
    second.abandon();
    assert!(!second.is_leader(), "an abandoned holder no longer claims the lease");
    let mut third = a.elect("webhooks");
    tokio::time::timeout(Duration::from_secs(10), third.acquired()).await.expect("the TTL frees it");
    eprintln!("etcd lease moved {moved:?} after its holder resigned");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_steps_down_before_its_lease_could_expire_when_etcd_goes() {
    let Some(mut etcd) = etcd() else { return };
    let a = etcd.connect("/reg/").await;
    let mut leader = a.elect("imports");
    tokio::time::timeout(Duration::from_secs(10), leader.acquired()).await.unwrap();
    tokio::task::block_in_place(|| etcd.stop());
    let started = std::time::Instant::now();
    tokio::time::timeout(Duration::from_secs(10), leader.lost()).await.expect("the leader noticed");
    let noticed = started.elapsed();
    // The TTL is 2 s: etcd (had it stayed up for others) could expire the lease 2 s after the last keep-alive.
    assert!(noticed < Duration::from_secs(2), "stepped down {noticed:?} after etcd went, past the TTL");
    assert!(!leader.is_leader());
    tokio::task::block_in_place(|| etcd.start_again());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_feed_and_the_cache_recover_when_etcd_restarts() {
    let Some(mut etcd) = etcd() else { return };
    let (a, b) = (etcd.connect("/reg/").await, etcd.connect("/reg/").await);
    a.commit(Txn::new().put("istags/ns/s/t", b"1".to_vec())).await.unwrap();
    assert_eq!(b.get("istags/ns/s/t").await.unwrap().unwrap().value, b"1");
    let mut feed = b.subscribe();
    tokio::task::block_in_place(|| etcd.stop());
    let started = std::time::Instant::now();
    let down = a.commit(Txn::new().put("istags/ns/s/t", b"lost".to_vec())).await;
    assert!(matches!(down, Err(StoreError::Unavailable(_))), "{down:?}");
    assert!(started.elapsed() < Duration::from_secs(15), "a commit to a dead etcd took {:?}", started.elapsed());
    tokio::task::block_in_place(|| etcd.start_again());
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    let r = loop {
        match a.commit(Txn::new().put("istags/ns/s/t", b"2".to_vec())).await {
            Ok(r) => break r,
            Err(e) if tokio::time::Instant::now() < deadline => {
                eprintln!("etcd not back yet: {e}");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Err(e) => panic!("etcd did not come back: {e}"),
        }
    };
    let event = tokio::time::timeout(Duration::from_secs(20), async {
        loop {
            let event = feed.recv().await.unwrap();
            if event.revision >= r {
                return event;
            }
        }
    })
    .await
    .expect("the other replica's feed resumed");
    assert_eq!((event.key.as_str(), event.value.as_deref(), event.revision), ("istags/ns/s/t", Some(&b"2"[..]), r));
    assert_eq!(b.get("istags/ns/s/t").await.unwrap().unwrap().value, b"2");
}

#[tokio::test]
async fn a_leader_whose_key_disappears_reports_the_loss_and_campaigns_again() {
    let Some(etcd) = etcd() else { return };
    let store = etcd.connect("/reg/").await;
    let mut leader = store.elect("gc");
    tokio::time::timeout(Duration::from_secs(10), leader.acquired()).await.unwrap();
    let mut kv = store.client().kv_client();
    kv.delete(store.full_key(&keys::lease("gc")), None).await.unwrap();
    tokio::time::timeout(Duration::from_secs(5), leader.lost()).await.expect("the loss is reported");
    tokio::time::timeout(Duration::from_secs(10), leader.acquired()).await.expect("it campaigns again");
    let holder = kv.get(store.full_key(&keys::lease("gc")), None).await.unwrap();
    assert_ne!(holder.kvs()[0].lease(), 0, "the key is attached to an etcd lease");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_cut_off_from_etcd_steps_down_within_the_ttl_and_comes_back() {
    let Some(mut etcd) = etcd() else { return };
    let store = etcd.connect("/reg/").await;
    let mut leader = store.elect("webhooks");
    tokio::time::timeout(Duration::from_secs(10), leader.acquired()).await.unwrap();
    tokio::task::block_in_place(|| etcd.stop());
    let started = std::time::Instant::now();
    // TTL 2 s ([`EtcdServer::config`]): the leader gives up before etcd could expire its lease.
    tokio::time::timeout(Duration::from_secs(2), leader.lost()).await.expect("stepped down within the TTL");
    eprintln!("etcd leader stepped down {:?} after etcd went away", started.elapsed());
    tokio::task::block_in_place(|| etcd.start_again());
    tokio::time::timeout(Duration::from_secs(20), leader.acquired()).await.expect("leader again once etcd is back");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reads_racing_writes_never_leave_a_stale_cache_entry() {
    let Some(etcd) = etcd() else { return };
    let (a, b) = (etcd.connect("/reg/").await, etcd.connect("/reg/").await);
    let writer = tokio::spawn(async move {
        let mut last = 0;
        for i in 0..200u32 {
            last = a.commit(Txn::new().put("istags/ns/s/hot", i.to_be_bytes().to_vec())).await.unwrap();
        }
        last
    });
    let reader = b.clone();
    let reads = tokio::spawn(async move {
        let mut seen = 0;
        while seen < 199 {
            if let Some(v) = reader.get("istags/ns/s/hot").await.unwrap() {
                let now = u32::from_be_bytes(v.value.try_into().unwrap());
                assert!(now >= seen, "a read went back in time: {now} after {seen}");
                seen = now;
            }
            tokio::task::yield_now().await;
        }
    });
    let last = writer.await.unwrap();
    tokio::time::timeout(Duration::from_secs(10), reads).await.expect("the reader saw the last write").unwrap();
    let got = b.get("istags/ns/s/hot").await.unwrap().unwrap();
    assert_eq!((got.version, got.value), (last, 199u32.to_be_bytes().to_vec()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_prefix_delete_drops_every_cached_key_on_every_replica() {
    let Some(etcd) = etcd() else { return };
    let (a, b) = (etcd.connect("/reg/").await, etcd.connect("/reg/").await);
    let keys: Vec<String> = (0..50).map(|i| format!("istags/ns/s/t{i:02}")).collect();
    a.commit(keys.iter().fold(Txn::new(), |t, k| t.put(k.clone(), b"v".to_vec()))).await.unwrap();
    // Both replicas have every key cached.
    for store in [&a, &b] {
        for k in &keys {
            assert!(store.get(k).await.unwrap().is_some());
        }
    }
    let mut feed = b.subscribe();
    let gone = a.commit(Txn::new().delete_prefix("istags/ns/s/")).await.unwrap();
    let mut seen = 0;
    while seen < keys.len() {
        let event = tokio::time::timeout(Duration::from_secs(5), feed.recv()).await.expect("feed stalled").unwrap();
        // b's own watch may still be delivering the puts (b read them from etcd before its watch got there).
        if event.revision < gone {
            continue;
        }
        assert_eq!((event.value, event.revision), (None, gone));
        seen += 1;
    }
    for store in [&a, &b] {
        for k in &keys {
            assert!(store.get(k).await.unwrap().is_none(), "{k} is still served from the cache");
        }
    }
}
