//! Two handles on one real etcd, as two replicas have them: a replica's cached copy of a key may lag another
//! replica's commit by the watch's delay, but `get_latest` (and an absence confirmed with `get_json_confirmed`)
//! sees that commit as soon as it returns. Skipped without etcd unless `TRIBUTARY_E2E_REQUIRED=1`.

use storage_backends::testing::etcd::EtcdServer;
use storage_backends::{MetadataStore, MetadataStoreExt, Txn};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_latest_copy_has_another_replicas_commit_at_once() {
    let Some(etcd) = EtcdServer::start() else { return };
    let (a, b) = (etcd.connect("/latest/").await, etcd.connect("/latest/").await);
    for round in 0..200u32 {
        let key = format!("uploads/{round}");
        // B has a copy (absent, then the first value) before A writes.
        assert!(b.get(&key).await.unwrap().is_none());
        let first = a.commit(Txn::new().put(key.clone(), b"1".to_vec())).await.unwrap();
        let seen: Option<(u32, u64)> = b.get_json_confirmed(&key).await.unwrap();
        assert_eq!(seen, Some((1, first)), "round {round}: an absence is confirmed on etcd");
        let second = a.commit(Txn::new().put(key.clone(), b"2".to_vec())).await.unwrap();
        let latest = b.get_latest(&key).await.unwrap().map(|v| (v.value, v.version));
        assert_eq!(latest, Some((b"2".to_vec(), second)), "round {round}: the latest copy");
        // And B's copy is no older from now on.
        assert_eq!(b.get(&key).await.unwrap().map(|v| v.version), Some(second), "round {round}: B's copy");
    }
}
