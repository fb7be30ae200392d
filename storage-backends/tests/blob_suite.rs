//! The blob-and-upload suite on every backend: filesystem, memory, and S3 (a real moto server; skipped when moto
//! is not installed, unless `TRIBUTARY_E2E_REQUIRED=1`). Each runs on two handles of one store, as two replicas.

use std::sync::Arc;

use storage_backends::testing::s3::{S3Server, BUCKET};
use storage_backends::{suite, BlobBackend, BlobStore, MetadataStore, RedbStore};

fn meta(dir: &tempfile::TempDir) -> Arc<dyn MetadataStore> {
    Arc::new(RedbStore::open(&dir.path().join("metadata.redb")).unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn filesystem() {
    let dir = tempfile::tempdir().unwrap();
    let meta = meta(&dir);
    let backend = BlobBackend::Filesystem { root: dir.path().join("blobs") };
    let a = BlobStore::open(&backend, meta.clone()).unwrap();
    let b = BlobStore::open(&backend, meta).unwrap();
    a.check().await.unwrap();
    suite::run(&a, &b).await;
    let uploads = dir.path().join("blobs/uploads");
    let left: Vec<_> = std::fs::read_dir(&uploads).map(|d| d.collect()).unwrap_or_default();
    assert!(left.is_empty(), "staging directories are removed: {left:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory() {
    let dir = tempfile::tempdir().unwrap();
    let a = BlobStore::open(&BlobBackend::Memory, meta(&dir)).unwrap().with_part_size(256 * 1024);
    suite::run(&a, &a.replica()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s3() {
    let Some(server) = S3Server::start() else { return };
    let dir = tempfile::tempdir().unwrap();
    let meta = meta(&dir);
    let backend = BlobBackend::S3(server.config(BUCKET, Some("registry-a")));
    let a = BlobStore::open(&backend, meta.clone()).unwrap().with_part_size(5 * 1024 * 1024);
    // Replica b sends bodies unsigned (as over https), a signs them: both kinds of request build one upload.
    let unsigned = storage_backends::S3Config { sign_payload: false, ..server.config(BUCKET, Some("registry-a")) };
    let unsigned = BlobBackend::S3(unsigned);
    let b = BlobStore::open(&unsigned, meta).unwrap().with_part_size(5 * 1024 * 1024);
    a.check().await.unwrap();
    // The teardown's listing sees a multipart upload in progress, and cancelling aborts it.
    let repo = "ns/app".parse().unwrap();
    let id = a.start_upload(&repo).await.unwrap();
    let part = suite::body([bytes::Bytes::from(suite::noise(5 * 1024 * 1024 + 1, 0))]);
    a.append_upload(id, None, part).await.unwrap();
    assert_eq!(server.unfinished_multipart_uploads(BUCKET, None), [format!("registry-a/blobs/uploaded/{id}")]);
    b.cancel_upload(id).await.unwrap();
    assert!(server.unfinished_multipart_uploads(BUCKET, None).is_empty());
    // An idle upload's multipart upload is aborted when it is purged.
    suite::idle_uploads_are_purged(&a, &b).await;
    let unfinished = server.unfinished_multipart_uploads(BUCKET, None);
    assert!(unfinished.is_empty(), "purged uploads left multipart uploads unfinished: {unfinished:?}");
    suite::run(&a, &b).await;
    let unfinished = server.unfinished_multipart_uploads(BUCKET, None);
    assert!(unfinished.is_empty(), "multipart uploads left unfinished: {unfinished:?}");
    eprintln!("S3 suite ran against moto at {} (pid {})", server.endpoint(), server.pid());
}

#[tokio::test]
async fn s3_wrong_bucket_is_a_clear_error() {
    let Some(server) = S3Server::start() else { return };
    let dir = tempfile::tempdir().unwrap();
    let backend = BlobBackend::S3(server.config("no-such-bucket", None));
    let store = BlobStore::open(&backend, meta(&dir)).unwrap();
    let err = store.check().await.unwrap_err().to_string();
    let want = format!("S3 bucket no-such-bucket at {}: ", server.endpoint());
    assert!(err.starts_with(&want), "{err}");
    assert!(err.contains("NoSuchBucket") || err.contains("does not exist") || err.contains("404"), "{err}");
}
