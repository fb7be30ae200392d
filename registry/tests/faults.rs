//! Fault injection through the real HTTP server (issue 13): the registry runs over decorators of an in-memory
//! object store (multipart uploads, as on S3) and metadata store that fail or stall chosen calls
//! (`storage_backends::testing::faults`). A storage error in the middle of an upload is a retryable `503` and the
//! upload continues where it was; an error when the upload is completed leaves nothing visible and the upload can
//! be finished again; the metadata store failing answers `503 UNAVAILABLE` (OCI) and `503 ServiceUnavailable`
//! (stream API), never 500, and service resumes when it returns; a stalled metadata store turns `/readyz` to 503
//! within its 2 s budget.

use std::sync::Arc;
use std::time::{Duration, Instant};

use names::Digest;
use object_store::memory::InMemory;
use registry::testing::TestRegistry;
use reqwest::{Client, Response, StatusCode};
use serde_json::{json, Value};
use storage_backends::meta::MemoryStore;
use storage_backends::suite::noise;
use storage_backends::testing::faults::{Fault, Faults, FaultyMeta, FaultyObjects, Op};
use storage_backends::{BlobStore, MetadataStore};

const MIB: usize = 1024 * 1024;
const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";

fn faulty_registry() -> (TestRegistry, Arc<Faults>) {
    let faults = Faults::new();
    let meta: Arc<dyn MetadataStore> = FaultyMeta::new(Arc::new(MemoryStore::new()), faults.clone());
    let objects = FaultyObjects::new(Arc::new(InMemory::new()), faults.clone());
    let blobs = BlobStore::over(objects, "faulty in-memory store").with_meta(meta.clone()).with_part_size(MIB as u64);
    (TestRegistry::builder().with_stores(meta, blobs).start(), faults)
}

fn location(r: &Response) -> String {
    r.headers()["location"].to_str().unwrap().to_owned()
}

/// Asserts an OCI `503 UNAVAILABLE` with `Retry-After`, and that no internal cause leaks into the body.
async fn assert_unavailable(r: Response, what: &str) {
    assert_eq!(r.status(), StatusCode::SERVICE_UNAVAILABLE, "{what}");
    assert!(r.headers().contains_key("retry-after"), "{what}: Retry-After");
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["errors"][0]["code"], "UNAVAILABLE", "{what}: {body}");
    assert!(!body.to_string().contains("injected"), "{what}: the internal cause is not sent: {body}");
}

async fn blob_status(http: &Client, reg: &TestRegistry, d: &Digest) -> StatusCode {
    http.head(format!("{}/v2/ns/app/blobs/{d}", reg.url())).send().await.unwrap().status()
}

async fn pull(http: &Client, reg: &TestRegistry, d: &Digest) -> Vec<u8> {
    let r = http.get(format!("{}/v2/ns/app/blobs/{d}", reg.url())).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK, "GET {d}");
    r.bytes().await.unwrap().to_vec()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_storage_error_mid_upload_is_retryable_and_the_upload_continues() {
    let (reg, faults) = faulty_registry();
    let http = Client::new();
    let data = noise(5 * MIB + 77, 1);
    let d = Digest::sha256_of(&data);
    let r = http.post(format!("{}/v2/ns/app/blobs/uploads/", reg.url())).send().await.unwrap();
    let loc = location(&r);
    let r = http.patch(format!("{}{loc}", reg.url())).body(data[..2 * MIB].to_vec()).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::ACCEPTED);
    let loc = location(&r);

    // The second chunk's first part upload fails.
    faults.inject(Op::PartPut, Fault::Fail).times(1);
    let second = || {
        http.patch(format!("{}{loc}", reg.url()))
            .header("Content-Range", format!("{}-{}", 2 * MIB, 4 * MIB - 1))
            .body(data[2 * MIB..4 * MIB].to_vec())
            .send()
    };
    assert_unavailable(second().await.unwrap(), "PATCH whose part upload fails").await;
    // Two parts of the first chunk, then the second chunk's (two are sent at a time; one fails).
    assert!(faults.calls(Op::PartPut) >= 3, "the fault was met: {} part uploads", faults.calls(Op::PartPut));
    let status = http.get(format!("{}{loc}", reg.url())).send().await.unwrap();
    assert_eq!(status.headers()["range"], format!("0-{}", 2 * MIB - 1).as_str(), "the upload is where it was");
    assert_eq!(blob_status(&http, &reg, &d).await, StatusCode::NOT_FOUND, "nothing half-written is visible");

    // The client retries the chunk, then finishes.
    let r = second().await.unwrap();
    assert_eq!(r.status(), StatusCode::ACCEPTED, "{:?}", r.text().await);
    let r = http
        .put(format!("{}{loc}?digest={d}", reg.url()))
        .header("Content-Range", format!("{}-{}", 4 * MIB, data.len() - 1))
        .body(data[4 * MIB..].to_vec())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::CREATED, "{:?}", r.text().await);
    assert!(pull(&http, &reg, &d).await == data, "read back byte-exact");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_error_at_completion_leaves_nothing_visible_and_the_upload_finishes_on_retry() {
    let (reg, faults) = faulty_registry();
    let http = Client::new();
    let data = noise(3 * MIB + 5, 2);
    let d = Digest::sha256_of(&data);
    let r = http.post(format!("{}/v2/ns/app/blobs/uploads/", reg.url())).send().await.unwrap();
    let loc = location(&r);
    let r = http.patch(format!("{}{loc}", reg.url())).body(data.clone()).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::ACCEPTED);
    let loc = location(&r);

    faults.inject(Op::MultipartComplete, Fault::Fail).times(1);
    let finish = || http.put(format!("{}{loc}?digest={d}", reg.url())).send();
    assert_unavailable(finish().await.unwrap(), "PUT whose completion fails").await;
    assert_eq!(blob_status(&http, &reg, &d).await, StatusCode::NOT_FOUND, "nothing half-written is visible");
    let status = http.get(format!("{}{loc}", reg.url())).send().await.unwrap();
    assert_eq!(status.status(), StatusCode::NO_CONTENT, "the upload is still there");
    assert_eq!(status.headers()["range"], format!("0-{}", data.len() - 1).as_str());

    let r = finish().await.unwrap();
    assert_eq!(r.status(), StatusCode::CREATED, "{:?}", r.text().await);
    assert!(pull(&http, &reg, &d).await == data, "read back byte-exact");
}

/// Pushes a config and a layer, returns the manifest that references them.
async fn blobs_for_a_manifest(http: &Client, reg: &TestRegistry, seed: u64) -> String {
    let mut descriptors = Vec::new();
    for (i, bytes) in [noise(300, seed), noise(3000, seed + 1)].into_iter().enumerate() {
        let d = Digest::sha256_of(&bytes);
        let r = http.post(format!("{}/v2/ns/app/blobs/uploads/?digest={d}", reg.url())).body(bytes.clone()).send();
        assert_eq!(r.await.unwrap().status(), StatusCode::CREATED, "blob {i}");
        descriptors.push((d, bytes.len()));
    }
    json!({"schemaVersion": 2, "mediaType": OCI_MANIFEST,
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": descriptors[0].0, "size": descriptors[0].1},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": descriptors[1].0, "size": descriptors[1].1}]})
    .to_string()
}

async fn put_manifest(http: &Client, reg: &TestRegistry, tag: &str, m: &str) -> Response {
    http.put(format!("{}/v2/ns/app/manifests/{tag}", reg.url()))
        .header("Content-Type", OCI_MANIFEST)
        .body(m.to_owned())
        .send()
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_metadata_store_failing_is_503_and_service_resumes() {
    let (reg, faults) = faulty_registry();
    let http = Client::new();
    let before = blobs_for_a_manifest(&http, &reg, 10).await;
    assert_eq!(put_manifest(&http, &reg, "v1", &before).await.status(), StatusCode::CREATED);

    faults.inject(Op::Commit, Fault::Fail);
    let m = blobs_for_a_manifest_unchecked(&http, &reg).await;
    assert_unavailable(m, "blob push while metadata writes fail").await;
    assert_unavailable(put_manifest(&http, &reg, "v2", &before).await, "manifest PUT while metadata writes fail").await;
    let stream = json!({"kind": "ImageStream", "apiVersion": "image.openshift.io/v1", "metadata": {"name": "other"}});
    let r = http
        .post(format!("{}/apis/image.openshift.io/v1/namespaces/ns/imagestreams", reg.url()))
        .json(&stream)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::SERVICE_UNAVAILABLE);
    let status: Value = r.json().await.unwrap();
    assert_eq!(status["kind"], "Status", "{status}");
    assert_eq!(status["reason"], "ServiceUnavailable", "{status}");
    assert_eq!(status["code"], 503, "{status}");
    // Reads go on.
    let r = http.get(format!("{}/v2/ns/app/manifests/v1", reg.url())).header("Accept", OCI_MANIFEST).send();
    assert_eq!(r.await.unwrap().status(), StatusCode::OK, "a pull while writes fail");

    faults.clear();
    let after = blobs_for_a_manifest(&http, &reg, 20).await;
    assert_eq!(put_manifest(&http, &reg, "v2", &after).await.status(), StatusCode::CREATED, "service resumed");
    let r = http.get(format!("{}/v2/ns/app/tags/list", reg.url())).send().await.unwrap();
    let tags: Value = r.json().await.unwrap();
    assert_eq!(tags["tags"], json!(["v1", "v2"]), "nothing lost, nothing half-written");
}

async fn blobs_for_a_manifest_unchecked(http: &Client, reg: &TestRegistry) -> Response {
    let bytes = noise(1000, 99);
    let d = Digest::sha256_of(&bytes);
    http.post(format!("{}/v2/ns/app/blobs/uploads/?digest={d}", reg.url())).body(bytes).send().await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_metadata_store_makes_the_replica_unready_within_its_budget() {
    let (reg, faults) = faulty_registry();
    let http = Client::new();
    assert_eq!(http.get(format!("{}/readyz", reg.url())).send().await.unwrap().status(), StatusCode::OK);
    faults.inject(Op::Get, Fault::Stall(Duration::from_secs(6)));
    // A result is reused for a second: wait it out.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let started = Instant::now();
    let r = http.get(format!("{}/readyz", reg.url())).send().await.unwrap();
    let took = started.elapsed();
    assert_eq!(r.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert!(took < Duration::from_secs(4), "answered in {took:?}, not after the stall");
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["checks"]["metadata"]["ok"], false, "{body}");
    assert_eq!(body["checks"]["blobs"]["ok"], true, "{body}");
    faults.clear();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let r = http.get(format!("{}/readyz", reg.url())).send().await.unwrap();
        if r.status() == StatusCode::OK {
            break;
        }
        assert!(Instant::now() < deadline, "ready again once the store answers");
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}
