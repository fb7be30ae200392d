//! Figures on a real S3 service (moto). The peak RSS growth of a streamed 256 MiB upload is also a check (it
//! must stay near two parts, whatever the size; the only test run by default in this binary, so that no other
//! test's memory counts). The time to finish a 64 MiB and a 512 MiB chunked upload and the push throughput next
//! to object_store's own multipart put are figures only: run them with
//! `cargo test -p storage-backends --test s3_measure -- --ignored --nocapture --test-threads 1`.

use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use futures::StreamExt;
use names::{Algorithm, Digest, DigestHasher};
use object_store::multipart::MultipartStore;
use object_store::{ObjectStore, ObjectStoreExt, WriteMultipart};
use storage_backends::testing::s3::{S3Server, BUCKET};
use storage_backends::uploads::no_body;
use storage_backends::{suite, BlobBackend, BlobStore, MetadataStore, RedbStore};

const MIB: usize = 1024 * 1024;

fn status(field: &str) -> u64 {
    let s = std::fs::read_to_string("/proc/self/status").unwrap();
    let line = s.lines().find(|l| l.starts_with(field)).unwrap();
    line.split_whitespace().nth(1).unwrap().parse::<u64>().unwrap() / 1024
}

/// Resets the peak RSS (VmHWM) to the current RSS.
fn reset_peak() {
    std::fs::write("/proc/self/clear_refs", "5").unwrap();
}

/// `mib` MiB made of one 1 MiB block of noise, and its digest.
fn content(mib: usize, seed: u64) -> (Bytes, usize, Digest) {
    let block = Bytes::from(suite::noise(MIB, seed));
    let mut h = DigestHasher::new(Algorithm::Sha256);
    for _ in 0..mib {
        h.update(&block);
    }
    (block, mib, h.finish())
}

fn body(block: &Bytes, mib: usize) -> impl futures::Stream<Item = Result<Bytes, std::io::Error>> + Unpin {
    let block = block.clone();
    futures::stream::iter((0..mib).map(move |_| Ok(block.clone())))
}

async fn open(server: &S3Server, dir: &tempfile::TempDir) -> BlobStore {
    let meta: Arc<dyn MetadataStore> = Arc::new(RedbStore::open(&dir.path().join("m.redb")).unwrap());
    let store = BlobStore::open(&BlobBackend::S3(server.config(BUCKET, None)), meta).unwrap();
    store.check().await.unwrap();
    store
}

/// Pushes `mib` MiB in PATCHes of `patch` MiB; returns (push seconds, finish seconds).
async fn push(store: &BlobStore, mib: usize, patch: usize, seed: u64) -> (f64, f64) {
    let (block, n, digest) = content(mib, seed);
    let repo = "measure/app".parse().unwrap();
    let id = store.start_upload(&repo).await.unwrap();
    let t = Instant::now();
    let mut sent = 0;
    while sent < n {
        let k = patch.min(n - sent);
        store.append_upload(id, Some((sent * MIB) as u64), body(&block, k)).await.unwrap();
        sent += k;
    }
    let pushed = t.elapsed().as_secs_f64();
    let t = Instant::now();
    store.finish_upload(id, &digest, None, no_body()).await.unwrap();
    (pushed, t.elapsed().as_secs_f64())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rss_of_a_streamed_256_mib_upload_stays_flat() {
    let Some(server) = S3Server::start() else { return };
    let dir = tempfile::tempdir().unwrap();
    let store = open(&server, &dir).await;
    // Warm up (connection pool, first allocations) with a small upload.
    push(&store, 16, 16, 1).await;
    let before = status("VmRSS:");
    reset_peak();
    let (pushed, finished) = push(&store, 256, 256, 2).await;
    let peak = status("VmHWM:");
    println!(
        "256 MiB streamed upload (one PATCH, 8 MiB parts): RSS before {before} MiB, peak during {peak} MiB, growth {} MiB; push {pushed:.2} s ({:.0} MiB/s), finish {finished:.3} s",
        peak.saturating_sub(before),
        256.0 / pushed
    );
    assert!(peak.saturating_sub(before) < 64, "memory grew with the blob: {before} -> {peak} MiB");
    reset_peak();
    let before = status("VmRSS:");
    let (pushed, _) = push(&store, 256, 1, 3).await;
    let peak = status("VmHWM:");
    println!(
        "256 MiB in 1 MiB PATCHes: RSS before {before} MiB, peak {peak} MiB, growth {} MiB; push {pushed:.2} s",
        peak.saturating_sub(before)
    );
    assert!(peak.saturating_sub(before) < 64, "memory grew with the blob: {before} -> {peak} MiB");
}

/// moto's own CompleteMultipartUpload of `mib` MiB in 8 MiB parts, in seconds (parts uploaded first, untimed).
async fn raw_complete(server: &S3Server, mib: usize, name: &str) -> f64 {
    let c = server.config(BUCKET, None);
    let s3 = object_store::aws::AmazonS3Builder::new()
        .with_endpoint(c.endpoint.unwrap())
        .with_bucket_name(c.bucket)
        .with_region(c.region)
        .with_access_key_id("testing")
        .with_secret_access_key("testing")
        .with_allow_http(true)
        .build()
        .unwrap();
    let part = Bytes::from(suite::noise(8 * MIB, 9));
    let path = format!("raw/complete-{name}").into();
    let id = s3.create_multipart(&path).await.unwrap();
    let mut parts = Vec::new();
    for i in 0..mib / 8 {
        parts.push(s3.put_part(&path, &id, i, part.clone().into()).await.unwrap());
    }
    let t = Instant::now();
    s3.complete_multipart(&path, &id, parts).await.unwrap();
    t.elapsed().as_secs_f64()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a measurement: run by hand"]
async fn finish_time_and_throughput() {
    let Some(server) = S3Server::start() else { return };
    let dir = tempfile::tempdir().unwrap();
    let store = open(&server, &dir).await;
    push(&store, 16, 16, 1).await;
    // Interleaved with moto's own completion of the same size, so that moto's state weighs on both alike.
    for (i, mib) in [64, 512, 64, 512].into_iter().enumerate() {
        let raw = raw_complete(&server, mib, &format!("{i}")).await;
        let (pushed, finished) = push(&store, mib, 32, mib as u64 + i as u64).await;
        println!(
            "{mib} MiB chunked (32 MiB PATCHes): push {pushed:.2} s ({:.0} MiB/s), finish (final PUT) {finished:.3} s; moto's own CompleteMultipartUpload of {mib} MiB just before: {raw:.3} s",
            mib as f64 / pushed
        );
    }
    // moto's own put speed: object_store's multipart put of the same 512 MiB (8 MiB parts), no sessions.
    let raw = BlobBackend::S3(server.config(BUCKET, None)).build().unwrap();
    let (block, n, _) = content(512, 7);
    let t = Instant::now();
    let upload = raw.put_multipart(&"raw/512".into()).await.unwrap();
    let mut w = WriteMultipart::new_with_chunk_size(upload, 8 * MIB);
    let mut s = body(&block, n);
    while let Some(chunk) = s.next().await {
        w.wait_for_capacity(2).await.unwrap();
        w.put(chunk.unwrap());
    }
    w.finish().await.unwrap();
    let secs = t.elapsed().as_secs_f64();
    println!("512 MiB by object_store's WriteMultipart straight to moto: {secs:.2} s ({:.0} MiB/s)", 512.0 / secs);
    let _: &dyn ObjectStore = raw.as_ref();
}
