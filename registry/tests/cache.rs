//! Pull-through cache eviction (`[cache] max-size-mb`) against a real upstream (a second Tributary): layers pulled
//! through are evicted least recently pulled first, down to the low-water mark, once the cache is over its cap;
//! a layer also pushed here is never evicted (nor counted); an evicted layer is fetched again from the upstream on
//! the next pull, and is gone for good once the upstream is.

use std::time::{Duration, Instant};

use names::Digest;
use registry::testing::TestRegistry;
use reqwest::{Client, StatusCode};
use serde_json::json;

const MIB: usize = 1 << 20;
const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";

fn layer(seed: u8) -> Vec<u8> {
    let mut x = u64::from(seed).wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    (0..MIB)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

async fn push_blob(http: &Client, base: &str, repo: &str, bytes: &[u8]) -> Digest {
    let d = Digest::sha256_of(bytes);
    let r = http.post(format!("{base}/v2/{repo}/blobs/uploads/?digest={d}")).body(bytes.to_vec()).send().await;
    assert_eq!(r.unwrap().status(), StatusCode::CREATED);
    d
}

/// Pushes an image of `layers` to `repo:tag`.
async fn push_image(http: &Client, base: &str, repo: &str, tag: &str, layers: &[Vec<u8>]) {
    let config = json!({"architecture": "amd64", "os": "linux"}).to_string();
    let c = push_blob(http, base, repo, config.as_bytes()).await;
    let mut descriptors = Vec::new();
    for l in layers {
        let d = push_blob(http, base, repo, l).await;
        descriptors.push(json!({"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": d, "size": l.len()}));
    }
    let m = json!({"schemaVersion": 2, "mediaType": OCI_MANIFEST,
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": c, "size": config.len()},
        "layers": descriptors});
    let r = http
        .put(format!("{base}/v2/{repo}/manifests/{tag}"))
        .header("Content-Type", OCI_MANIFEST)
        .body(m.to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::CREATED);
}

async fn pull(http: &Client, base: &str, repo: &str, bytes: &[u8]) -> StatusCode {
    let d = Digest::sha256_of(bytes);
    let r = http.get(format!("{base}/v2/{repo}/blobs/{d}")).send().await.unwrap();
    let status = r.status();
    if status == StatusCode::OK {
        assert_eq!(r.bytes().await.unwrap().as_ref(), bytes, "{d} verified");
    }
    status
}

fn stored(reg: &TestRegistry, bytes: &[u8]) -> bool {
    let path = storage_backends::paths::blob(&Digest::sha256_of(bytes));
    reg.data_dir().join("blobs").join(path.as_ref()).exists()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn least_recently_pulled_go_first_and_pushed_blobs_stay() {
    let upstream = TestRegistry::start();
    let http = Client::new();
    let layers: Vec<Vec<u8>> = (1..=5).map(layer).collect();
    push_image(&http, &upstream.url(), "lib/app", "1", &layers).await;

    // Cap 3.5 MiB, low water 2.5 MiB; no grace, checked every 100 ms.
    let mib = MIB as u64;
    let tri = TestRegistry::builder()
        .with_gc(Duration::from_secs(3600), Duration::ZERO)
        .with_cache(mib * 7 / 2, mib * 5 / 2, Duration::from_millis(100))
        .start();
    let base = tri.url();
    let r = http.post(format!("{base}/apis/tributary.dev/v1/namespaces")).json(&json!({"name": "team"})).send();
    assert!(r.await.unwrap().status().is_success());
    let isi = json!({"metadata": {"name": "app"}, "spec": {"import": true, "images": [{
        "from": {"kind": "DockerImage", "name": format!("{}/lib/app:1", upstream.host())},
        "to": {"name": "1"}, "importPolicy": {"insecure": true}}]}});
    let r = http
        .post(format!("{base}/apis/image.openshift.io/v1/namespaces/team/imagestreamimports"))
        .json(&isi)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::CREATED);

    // Layer 4 is also pushed here (another repository): a local blob, neither counted nor evicted.
    push_blob(&http, &base, "team/local", &layers[3]).await;
    for l in &layers[..4] {
        assert_eq!(pull(&http, &base, "team/app", l).await, StatusCode::OK);
    }
    // Layer 1 is pulled again later than 2 and 3 (pull times are recorded at most every few seconds).
    tokio::time::sleep(registry::gc::evict::RECORD_EVERY + Duration::from_millis(500)).await;
    assert_eq!(pull(&http, &base, "team/app", &layers[0]).await, StatusCode::OK);
    // Three cached MiB: under the cap; nothing goes.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let missing: Vec<usize> = (0..4).filter(|i| !stored(&tri, &layers[*i])).collect();
    assert!(missing.is_empty(), "under the cap, everything stays; missing: {missing:?}");

    // The fifth pulls the cache to 4 MiB: 2 and 3, the least recently pulled, go (down to 2 MiB ≤ 2.5).
    assert_eq!(pull(&http, &base, "team/app", &layers[4]).await, StatusCode::OK);
    let deadline = Instant::now() + Duration::from_secs(20);
    while stored(&tri, &layers[1]) || stored(&tri, &layers[2]) {
        assert!(Instant::now() < deadline, "layers 2 and 3 were not evicted");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(stored(&tri, &layers[0]), "layer 1 was pulled recently: kept");
    assert!(stored(&tri, &layers[4]), "layer 5 was pulled last: kept");
    assert!(stored(&tri, &layers[3]), "layer 4 was pushed here: never evicted");

    // The metrics say what went: layers 2 and 3, and the image's config, which the import fetched (a cached
    // blob too, never pulled since: the least recently pulled of all).
    let config = json!({"architecture": "amd64", "os": "linux"}).to_string();
    assert!(!stored(&tri, config.as_bytes()), "the config went first");
    let metrics = http.get(format!("{base}/metrics")).send().await.unwrap().text().await.unwrap();
    assert!(metrics.contains("tributary_cache_evicted_items_total 3\n"), "{metrics}");
    let bytes = 2 * MIB + config.len();
    assert!(metrics.contains(&format!("tributary_cache_evicted_bytes_total {bytes}\n")), "{metrics}");
    assert!(metrics.contains(&format!("tributary_cache_bytes {}\n", 2 * MIB)), "{metrics}");

    // An evicted layer comes back from the upstream on the next pull (verified); once the upstream is gone,
    // evicted layers are gone too, while the kept ones are still served.
    assert_eq!(pull(&http, &base, "team/app", &layers[1]).await, StatusCode::OK);
    // The copy is committed once the client has its last byte: wait for it rather than race it.
    let deadline = Instant::now() + Duration::from_secs(20);
    while !stored(&tri, &layers[1]) {
        assert!(Instant::now() < deadline, "fetched again but never stored");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    drop(upstream);
    assert_eq!(pull(&http, &base, "team/app", &layers[2]).await, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(pull(&http, &base, "team/local", &layers[3]).await, StatusCode::OK);
    assert_eq!(pull(&http, &base, "team/app", &layers[4]).await, StatusCode::OK);
}
