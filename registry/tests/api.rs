//! Behaviour of the OCI API as a client sees it, against a real server on 127.0.0.1:0: uploads, manifests,
//! stream-backed tags, restarts, and bad input (every bad request gets the right 4xx and OCI code, and changes
//! nothing stored).

use names::{Algorithm, Digest};
use registry::testing::TestRegistry;
use reqwest::{Client, Method, Response, StatusCode};
use serde_json::{json, Value};

const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";

struct Api {
    reg: TestRegistry,
    http: Client,
}

impl Api {
    fn start() -> Api {
        Api { reg: TestRegistry::start(), http: Client::new() }
    }
    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.reg.url())
    }
    async fn send(&self, method: Method, path: &str, headers: &[(&str, &str)], body: Vec<u8>) -> Response {
        let mut r = self.http.request(method, self.url(path)).body(body);
        for (k, v) in headers {
            r = r.header(*k, *v);
        }
        r.send().await.unwrap()
    }
    async fn push_blob(&self, repo: &str, bytes: &[u8]) -> Digest {
        let d = Digest::sha256_of(bytes);
        let r = self.send(Method::POST, &format!("/v2/{repo}/blobs/uploads/?digest={d}"), &[], bytes.to_vec()).await;
        assert_eq!(r.status(), StatusCode::CREATED);
        d
    }
    async fn head_blob(&self, repo: &str, d: &Digest) -> StatusCode {
        self.send(Method::HEAD, &format!("/v2/{repo}/blobs/{d}"), &[], vec![]).await.status()
    }
    async fn start_upload(&self, repo: &str) -> String {
        let r = self.send(Method::POST, &format!("/v2/{repo}/blobs/uploads/"), &[], vec![]).await;
        assert_eq!(r.status(), StatusCode::ACCEPTED);
        r.headers()["location"].to_str().unwrap().to_owned()
    }
    /// Pushes a config and a layer, returns the manifest bytes referencing them.
    async fn image(&self, repo: &str, seed: &str) -> Vec<u8> {
        let config = json!({"architecture":"amd64","os":"linux","config":{"Cmd":["echo", seed]}}).to_string();
        let c = self.push_blob(repo, config.as_bytes()).await;
        let l = self.push_blob(repo, seed.as_bytes()).await;
        json!({"schemaVersion":2,"mediaType":OCI_MANIFEST,
            "config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":c,"size":config.len()},
            "layers":[{"mediaType":"application/vnd.oci.image.layer.v1.tar","digest":l,"size":seed.len()}]})
        .to_string()
        .into_bytes()
    }
    async fn put_manifest(&self, repo: &str, reference: &str, bytes: &[u8]) -> Response {
        self.send(
            Method::PUT,
            &format!("/v2/{repo}/manifests/{reference}"),
            &[("Content-Type", OCI_MANIFEST)],
            bytes.to_vec(),
        )
        .await
    }
    async fn tags(&self, repo: &str) -> Value {
        self.send(Method::GET, &format!("/v2/{repo}/tags/list"), &[], vec![]).await.json().await.unwrap()
    }
    async fn stream(&self, ns: &str, name: &str) -> Value {
        let path = format!("/apis/image.openshift.io/v1/namespaces/{ns}/imagestreams/{name}");
        self.send(Method::GET, &path, &[], vec![]).await.json().await.unwrap()
    }
}

/// Asserts an OCI error answer.
async fn expect_error(r: Response, status: StatusCode, code: &str) {
    assert_eq!(r.status(), status, "{:?}", r.url().path());
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["errors"][0]["code"], code, "{body}");
    assert!(body["errors"][0]["message"].is_string());
}

#[tokio::test]
async fn chunked_upload_rules() {
    let api = Api::start();
    let loc = api.start_upload("ns/app").await;
    let r = api.send(Method::PATCH, &loc, &[("Content-Range", "0-4")], b"hello".to_vec()).await;
    assert_eq!(r.status(), StatusCode::ACCEPTED);
    assert_eq!(r.headers()["range"], "0-4");
    // Repeated and out-of-order chunks: 416, the upload keeps its 5 bytes.
    let r = api.send(Method::PATCH, &loc, &[("Content-Range", "0-4")], b"hello".to_vec()).await;
    expect_error(r, StatusCode::RANGE_NOT_SATISFIABLE, "BLOB_UPLOAD_INVALID").await;
    let r = api.send(Method::PATCH, &loc, &[("Content-Range", "9-10")], b"xx".to_vec()).await;
    assert_eq!(r.status(), StatusCode::RANGE_NOT_SATISFIABLE);
    let r = api.send(Method::GET, &loc, &[], vec![]).await;
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    assert_eq!(r.headers()["range"], "0-4");
    assert!(r.headers()["location"].to_str().unwrap().ends_with(loc.rsplit('/').next().unwrap()));
    // Finish with a last chunk, digest verified.
    let d = Digest::sha256_of(b"hello world");
    let r = api.send(Method::PUT, &format!("{loc}?digest={d}"), &[("Content-Range", "5-10")], b" world".to_vec()).await;
    assert_eq!(r.status(), StatusCode::CREATED);
    assert_eq!(r.headers()["docker-content-digest"], d.to_string().as_str());
    let r = api.send(Method::GET, &format!("/v2/ns/app/blobs/{d}"), &[("Range", "bytes=6-10")], vec![]).await;
    assert_eq!(r.status(), StatusCode::PARTIAL_CONTENT);
    assert_eq!(r.headers()["content-range"], "bytes 6-10/11");
    assert_eq!(r.bytes().await.unwrap().as_ref(), b"world");
    // The finished session is gone.
    expect_error(api.send(Method::GET, &loc, &[], vec![]).await, StatusCode::NOT_FOUND, "BLOB_UPLOAD_UNKNOWN").await;
}

#[tokio::test]
async fn sha512_blobs_and_manifests() {
    let api = Api::start();
    let loc = api.start_upload("ns/app").await;
    api.send(Method::PATCH, &loc, &[], b"abc".to_vec()).await;
    let d = Digest::of(Algorithm::Sha512, b"abcdef");
    let r = api.send(Method::PUT, &format!("{loc}?digest={d}"), &[], b"def".to_vec()).await;
    assert_eq!(r.status(), StatusCode::CREATED);
    assert_eq!(api.head_blob("ns/app", &d).await, StatusCode::OK);
    let cfg = api.push_blob("ns/app", b"{}").await;
    let m = json!({"schemaVersion":2,"mediaType":OCI_MANIFEST,
        "config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":cfg,"size":2},
        "layers":[{"mediaType":"application/vnd.oci.image.layer.v1.tar","digest":d,"size":6}]})
    .to_string();
    let md = Digest::of(Algorithm::Sha512, m.as_bytes());
    let r = api.put_manifest("ns/app", &md.to_string(), m.as_bytes()).await;
    assert_eq!(r.status(), StatusCode::CREATED);
    let r = api.send(Method::GET, &format!("/v2/ns/app/manifests/{md}"), &[], vec![]).await;
    assert_eq!(r.headers()["docker-content-digest"], md.to_string().as_str());
    assert_eq!(r.bytes().await.unwrap().as_ref(), m.as_bytes());
}

#[tokio::test]
async fn stream_backed_tags() {
    let api = Api::start();
    let x = api.image("ns/app", "x").await;
    let y = api.image("ns/app", "y").await;
    let (dx, dy) = (Digest::sha256_of(&x), Digest::sha256_of(&y));
    assert_eq!(api.put_manifest("ns/app", "v1", &x).await.status(), StatusCode::CREATED);
    assert_eq!(api.put_manifest("ns/app", "v1", &x).await.status(), StatusCode::CREATED);
    assert_eq!(api.put_manifest("ns/app", "v1", &y).await.status(), StatusCode::CREATED);
    let s = api.stream("ns", "app").await;
    let items = s["status"]["tags"][0]["items"].as_array().unwrap();
    assert_eq!(items.len(), 2, "the same digest twice adds one event: {s}");
    assert_eq!(items[0]["image"], dy.to_string());
    assert_eq!(items[1]["image"], dx.to_string());
    assert_eq!(items[0]["dockerImageReference"], format!("{}/ns/app@{dy}", api.reg.host()));
    // Push by digest creates the Image, not a tag.
    let z = api.image("ns/app", "z").await;
    let dz = Digest::sha256_of(&z);
    assert_eq!(api.put_manifest("ns/app", &dz.to_string(), &z).await.status(), StatusCode::CREATED);
    assert_eq!(api.tags("ns/app").await["tags"], json!(["v1"]));
    let img: Value = api
        .send(Method::GET, &format!("/apis/image.openshift.io/v1/images/{dz}"), &[], vec![])
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(img["dockerImageMetadata"]["Config"]["Cmd"], json!(["echo", "z"]));
    assert_eq!(img["dockerImageLayers"][0]["size"], 1);
    // Delete by tag removes only the tag.
    assert_eq!(api.send(Method::DELETE, "/v2/ns/app/manifests/v1", &[], vec![]).await.status(), StatusCode::ACCEPTED);
    assert_eq!(api.tags("ns/app").await["tags"], json!([]));
    let r = api.send(Method::GET, &format!("/v2/ns/app/manifests/{dy}"), &[], vec![]).await;
    assert_eq!(r.status(), StatusCode::OK);
    // A blob of one stream is not served from another until mounted.
    let l = Digest::sha256_of(b"x");
    assert_eq!(api.head_blob("ns/other", &l).await, StatusCode::NOT_FOUND);
    let r = api.send(Method::POST, &format!("/v2/ns/other/blobs/uploads/?mount={l}&from=ns/app"), &[], vec![]).await;
    assert_eq!(r.status(), StatusCode::CREATED);
    assert_eq!(api.head_blob("ns/other", &l).await, StatusCode::OK);
    let r =
        api.send(Method::POST, &format!("/v2/ns/third/blobs/uploads/?mount={l}&from=ns/missing"), &[], vec![]).await;
    assert_eq!(r.status(), StatusCode::ACCEPTED);
}

#[tokio::test]
async fn pagination() {
    let api = Api::start();
    let m = api.image("ns/app", "p").await;
    for t in ["c", "a", "b", "d"] {
        assert_eq!(api.put_manifest("ns/app", t, &m).await.status(), StatusCode::CREATED);
    }
    let r = api.send(Method::GET, "/v2/ns/app/tags/list?n=2", &[], vec![]).await;
    assert_eq!(r.headers()["link"], "</v2/ns/app/tags/list?last=b&n=2>; rel=\"next\"");
    assert_eq!(r.json::<Value>().await.unwrap()["tags"], json!(["a", "b"]));
    let r = api.send(Method::GET, "/v2/ns/app/tags/list?n=2&last=b", &[], vec![]).await;
    assert!(r.headers().get("link").is_none());
    assert_eq!(r.json::<Value>().await.unwrap()["tags"], json!(["c", "d"]));
    for repo in ["ns/zz", "aa/bb"] {
        let m = api.image(repo, "q").await;
        api.put_manifest(repo, "t", &m).await;
    }
    let r = api.send(Method::GET, "/v2/_catalog?n=2", &[], vec![]).await;
    assert!(r.headers()["link"].to_str().unwrap().contains("last=ns%2Fapp"));
    assert_eq!(r.json::<Value>().await.unwrap()["repositories"], json!(["aa/bb", "ns/app"]));
    expect_error(
        api.send(Method::GET, "/v2/ns/nothing/tags/list", &[], vec![]).await,
        StatusCode::NOT_FOUND,
        "NAME_UNKNOWN",
    )
    .await;
}

#[tokio::test]
async fn bad_input_is_refused_and_changes_nothing() {
    let api = Api::start();
    let good = api.image("ns/app", "g").await;
    api.put_manifest("ns/app", "v1", &good).await;
    let before = api.stream("ns", "app").await;

    for path in ["/v2/app/blobs/uploads/", "/v2/a/b/c/blobs/uploads/", "/v2/NS/app/blobs/uploads/"] {
        expect_error(api.send(Method::POST, path, &[], vec![]).await, StatusCode::BAD_REQUEST, "NAME_INVALID").await;
    }
    expect_error(api.put_manifest("one/two/three", "v1", &good).await, StatusCode::BAD_REQUEST, "NAME_INVALID").await;
    // A malformed reference: a bad tag to write (400), a manifest that cannot exist to read (404).
    expect_error(api.put_manifest("ns/app", "-bad", &good).await, StatusCode::BAD_REQUEST, "TAG_INVALID").await;
    let bad_digest = api.put_manifest("ns/app", "sha256:1234", &good).await;
    expect_error(bad_digest, StatusCode::BAD_REQUEST, "MANIFEST_INVALID").await;
    for method in [Method::GET, Method::DELETE] {
        let r = api.send(method, "/v2/ns/app/manifests/.INVALID_MANIFEST_NAME", &[], vec![]).await;
        expect_error(r, StatusCode::NOT_FOUND, "MANIFEST_UNKNOWN").await;
    }
    let r = api.send(Method::HEAD, "/v2/ns/app/manifests/-bad", &[], vec![]).await;
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
    let r = api.send(Method::GET, "/v2/ns/app/blobs/sha256:1234", &[], vec![]).await;
    expect_error(r, StatusCode::BAD_REQUEST, "DIGEST_INVALID").await;

    // Digest mismatch, monolithic and chunked: nothing becomes visible.
    let wrong = Digest::sha256_of(b"something else");
    let r =
        api.send(Method::POST, &format!("/v2/ns/app/blobs/uploads/?digest={wrong}"), &[], b"payload".to_vec()).await;
    expect_error(r, StatusCode::BAD_REQUEST, "DIGEST_INVALID").await;
    assert_eq!(api.head_blob("ns/app", &wrong).await, StatusCode::NOT_FOUND);
    assert_eq!(api.head_blob("ns/app", &Digest::sha256_of(b"payload")).await, StatusCode::NOT_FOUND);
    let loc = api.start_upload("ns/app").await;
    api.send(Method::PATCH, &loc, &[], b"pay".to_vec()).await;
    let r = api.send(Method::PUT, &format!("{loc}?digest={wrong}"), &[], b"load".to_vec()).await;
    expect_error(r, StatusCode::BAD_REQUEST, "DIGEST_INVALID").await;
    assert_eq!(api.head_blob("ns/app", &Digest::sha256_of(b"payload")).await, StatusCode::NOT_FOUND);
    expect_error(api.send(Method::GET, &loc, &[], vec![]).await, StatusCode::NOT_FOUND, "BLOB_UPLOAD_UNKNOWN").await;
    let r = api.send(Method::PUT, &format!("{loc}?digest=sha256:zz"), &[], vec![]).await;
    assert_eq!(r.status().as_u16() / 100, 4);

    // Unknown, malformed and foreign upload ids.
    let unknown = "/v2/ns/app/blobs/uploads/0b4a7e0e-1d2c-4e0f-9d3a-2f1e5c6b7a80";
    expect_error(
        api.send(Method::PATCH, unknown, &[], b"x".to_vec()).await,
        StatusCode::NOT_FOUND,
        "BLOB_UPLOAD_UNKNOWN",
    )
    .await;
    let r = api.send(Method::GET, "/v2/ns/app/blobs/uploads/not-an-id", &[], vec![]).await;
    expect_error(r, StatusCode::NOT_FOUND, "BLOB_UPLOAD_UNKNOWN").await;
    let theirs = api.start_upload("ns/other").await;
    let id = theirs.rsplit('/').next().unwrap();
    let r = api.send(Method::PATCH, &format!("/v2/ns/app/blobs/uploads/{id}"), &[], b"x".to_vec()).await;
    expect_error(r, StatusCode::NOT_FOUND, "BLOB_UPLOAD_UNKNOWN").await;
    // Bad Content-Range values.
    let loc = api.start_upload("ns/app").await;
    let r = api.send(Method::PATCH, &loc, &[("Content-Range", "banana")], b"x".to_vec()).await;
    assert_eq!(r.status(), StatusCode::RANGE_NOT_SATISFIABLE);
    let r = api.send(Method::PATCH, &loc, &[("Content-Range", "0-9")], b"x".to_vec()).await;
    expect_error(r, StatusCode::BAD_REQUEST, "SIZE_INVALID").await;
    // Range outside a blob.
    let d = Digest::sha256_of(b"g");
    let r = api.send(Method::GET, &format!("/v2/ns/app/blobs/{d}"), &[("Range", "bytes=5-9")], vec![]).await;
    assert_eq!(r.status(), StatusCode::RANGE_NOT_SATISFIABLE);
    assert_eq!(r.headers()["content-range"], "bytes */1");

    // Malformed and lying manifests.
    expect_error(api.put_manifest("ns/app", "v1", b"{not json").await, StatusCode::BAD_REQUEST, "MANIFEST_INVALID")
        .await;
    let mut lying: Value = serde_json::from_slice(&good).unwrap();
    lying["layers"][0]["size"] = json!(999);
    let lying = lying.to_string();
    expect_error(api.put_manifest("ns/app", "v1", lying.as_bytes()).await, StatusCode::BAD_REQUEST, "MANIFEST_INVALID")
        .await;
    let r = api
        .send(
            Method::PUT,
            "/v2/ns/app/manifests/v1",
            &[("Content-Type", "application/vnd.oci.image.index.v1+json")],
            good.clone(),
        )
        .await;
    expect_error(r, StatusCode::BAD_REQUEST, "MANIFEST_INVALID").await;
    let mut missing: Value = serde_json::from_slice(&good).unwrap();
    missing["layers"][0]["digest"] = json!(Digest::sha256_of(b"never pushed"));
    let missing = missing.to_string();
    expect_error(
        api.put_manifest("ns/app", "v1", missing.as_bytes()).await,
        StatusCode::BAD_REQUEST,
        "MANIFEST_BLOB_UNKNOWN",
    )
    .await;
    let r = api.put_manifest("ns/app", &wrong.to_string(), &good).await;
    expect_error(r, StatusCode::BAD_REQUEST, "DIGEST_INVALID").await;
    // Oversized manifest: 413; a manifest of (almost) 4 MiB is accepted.
    let mut big: Value = serde_json::from_slice(&good).unwrap();
    big["annotations"] = json!({"pad": "x".repeat(4 * 1024 * 1024)});
    let r = api.put_manifest("ns/app", "big", big.to_string().as_bytes()).await;
    expect_error(r, StatusCode::PAYLOAD_TOO_LARGE, "SIZE_INVALID").await;
    big["annotations"] = json!({"pad": "x".repeat(4 * 1024 * 1024 - 1024)});
    assert_eq!(api.put_manifest("ns/app", "almost4m", big.to_string().as_bytes()).await.status(), StatusCode::CREATED);
    api.send(Method::DELETE, "/v2/ns/app/manifests/almost4m", &[], vec![]).await;
    // Unknown things.
    let r = api.send(Method::GET, "/v2/ns/app/manifests/nope", &[], vec![]).await;
    expect_error(r, StatusCode::NOT_FOUND, "MANIFEST_UNKNOWN").await;
    let r = api.send(Method::DELETE, &format!("/v2/ns/app/blobs/{wrong}"), &[], vec![]).await;
    expect_error(r, StatusCode::NOT_FOUND, "BLOB_UNKNOWN").await;
    let r = api.send(Method::PATCH, "/v2/ns/app/tags/list", &[], vec![]).await;
    expect_error(r, StatusCode::METHOD_NOT_ALLOWED, "UNSUPPORTED").await;

    // After all of that, the stream is exactly as it was.
    let mut after = api.stream("ns", "app").await;
    after["metadata"]["resourceVersion"] = before["metadata"]["resourceVersion"].clone();
    assert_eq!(after, before);
    assert_eq!(api.tags("ns/app").await["tags"], json!(["v1"]));
}

#[tokio::test]
async fn referrers_and_index() {
    let api = Api::start();
    let m = api.image("ns/app", "s").await;
    let subject = Digest::sha256_of(&m);
    api.put_manifest("ns/app", "v1", &m).await;
    let empty = api.send(Method::GET, &format!("/v2/ns/app/referrers/{subject}"), &[], vec![]).await;
    assert_eq!(empty.headers()["content-type"], "application/vnd.oci.image.index.v1+json");
    assert_eq!(empty.json::<Value>().await.unwrap()["manifests"], json!([]));
    let cfg = api.push_blob("ns/app", b"{}").await;
    let sig = json!({"schemaVersion":2,"mediaType":OCI_MANIFEST,"artifactType":"application/example.sig",
        "config":{"mediaType":"application/vnd.oci.empty.v1+json","digest":cfg,"size":2},"layers":[],
        "subject":{"mediaType":OCI_MANIFEST,"digest":subject,"size":m.len()}})
    .to_string();
    let sd = Digest::sha256_of(sig.as_bytes());
    let r = api.put_manifest("ns/app", &sd.to_string(), sig.as_bytes()).await;
    assert_eq!(r.headers()["oci-subject"], subject.to_string().as_str());
    let r = api
        .send(Method::GET, &format!("/v2/ns/app/referrers/{subject}?artifactType=application/example.sig"), &[], vec![])
        .await;
    assert_eq!(r.headers()["oci-filters-applied"], "artifactType");
    let idx: Value = r.json().await.unwrap();
    assert_eq!(idx["manifests"][0]["digest"], sd.to_string());
    assert_eq!(idx["manifests"][0]["artifactType"], "application/example.sig");
    let r = api.send(Method::GET, &format!("/v2/ns/app/referrers/{subject}?artifactType=other"), &[], vec![]).await;
    assert_eq!(r.json::<Value>().await.unwrap()["manifests"], json!([]));
    // Deleting the referrer removes it from the list.
    api.send(Method::DELETE, &format!("/v2/ns/app/manifests/{sd}"), &[], vec![]).await;
    let r = api.send(Method::GET, &format!("/v2/ns/app/referrers/{subject}"), &[], vec![]).await;
    assert_eq!(r.json::<Value>().await.unwrap()["manifests"], json!([]));
    // An index needs its children in the repository.
    let idx = json!({"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json",
        "manifests":[{"mediaType":OCI_MANIFEST,"digest":subject,"size":m.len(),"platform":{"architecture":"amd64","os":"linux"}}]})
    .to_string();
    let r = api
        .send(
            Method::PUT,
            "/v2/ns/other/manifests/multi",
            &[("Content-Type", "application/vnd.oci.image.index.v1+json")],
            idx.clone().into_bytes(),
        )
        .await;
    expect_error(r, StatusCode::BAD_REQUEST, "MANIFEST_BLOB_UNKNOWN").await;
    let r = api
        .send(
            Method::PUT,
            "/v2/ns/app/manifests/multi",
            &[("Content-Type", "application/vnd.oci.image.index.v1+json")],
            idx.into_bytes(),
        )
        .await;
    assert_eq!(r.status(), StatusCode::CREATED);
    // A client that takes no index gets the linux/amd64 manifest.
    let r = api.send(Method::GET, "/v2/ns/app/manifests/multi", &[("Accept", OCI_MANIFEST)], vec![]).await;
    assert_eq!(r.headers()["docker-content-digest"], subject.to_string().as_str());
}

#[tokio::test]
async fn large_manifests_are_served_byte_for_byte_across_a_restart() {
    // Manifests past the metadata store's share (16 KiB) keep their bytes in the blob store.
    let dir = tempfile::tempdir().unwrap();
    let (small, large);
    {
        let api = Api { reg: TestRegistry::start_in(dir.path()), http: Client::new() };
        small = api.image("ns/app", "s").await;
        let mut doc: Value = serde_json::from_slice(&api.image("ns/app", "l").await).unwrap();
        doc["annotations"] = json!({"org.example.padding": "x".repeat(3 * 1024 * 1024)});
        large = serde_json::to_vec(&doc).unwrap();
        assert_eq!(api.put_manifest("ns/app", "small", &small).await.status(), StatusCode::CREATED);
        assert_eq!(api.put_manifest("ns/app", "large", &large).await.status(), StatusCode::CREATED);
    }
    let api = Api { reg: TestRegistry::start_in(dir.path()), http: Client::new() };
    for (tag, bytes) in [("small", &small), ("large", &large)] {
        let r = api.send(Method::GET, &format!("/v2/ns/app/manifests/{tag}"), &[], vec![]).await;
        assert_eq!(r.status(), StatusCode::OK);
        let digest = r.headers()["docker-content-digest"].to_str().unwrap().to_owned();
        assert_eq!(digest, Digest::sha256_of(bytes).to_string());
        assert_eq!(r.bytes().await.unwrap().as_ref(), bytes.as_slice(), "{tag}");
        let by_digest = api.send(Method::GET, &format!("/v2/ns/app/manifests/{digest}"), &[], vec![]).await;
        assert_eq!(by_digest.bytes().await.unwrap().as_ref(), bytes.as_slice(), "{tag} by digest");
    }
}

#[tokio::test]
async fn everything_survives_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let m;
    {
        let reg = TestRegistry::start_in(dir.path());
        let api = Api { reg, http: Client::new() };
        m = api.image("ns/app", "r").await;
        api.put_manifest("ns/app", "v1", &m).await;
        api.start_upload("ns/app").await;
    }
    let api = Api { reg: TestRegistry::start_in(dir.path()), http: Client::new() };
    assert_eq!(api.tags("ns/app").await["tags"], json!(["v1"]));
    let r = api.send(Method::GET, "/v2/ns/app/manifests/v1", &[], vec![]).await;
    assert_eq!(r.bytes().await.unwrap().as_ref(), m.as_slice());
    assert_eq!(api.head_blob("ns/app", &Digest::sha256_of(b"r")).await, StatusCode::OK);
}

#[tokio::test]
async fn a_chunk_racing_one_in_flight_gets_416_and_changes_nothing() {
    let api = Api::start();
    let loc = api.start_upload("ns/app").await;
    // The first PATCH sends half its body and waits.
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<Vec<u8>, std::io::Error>>(1);
    let body = reqwest::Body::wrap_stream(tokio_stream_from(rx));
    let slow = api.http.patch(api.url(&loc)).header("Content-Range", "0-9").header("Content-Length", "10").body(body);
    let slow = tokio::spawn(slow.send());
    tx.send(Ok(b"01234".to_vec())).await.unwrap();
    // Give the server time to take the upload's lock (it does so before reading the body), then race it.
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    let r = api.send(Method::PATCH, &loc, &[("Content-Range", "0-9")], b"XXXXXXXXXX".to_vec()).await;
    expect_error(r, StatusCode::RANGE_NOT_SATISFIABLE, "BLOB_UPLOAD_INVALID").await;
    tx.send(Ok(b"56789".to_vec())).await.unwrap();
    drop(tx);
    let r = slow.await.unwrap().unwrap();
    assert_eq!(r.status(), StatusCode::ACCEPTED);
    assert_eq!(r.headers()["range"], "0-9");
    let d = Digest::sha256_of(b"0123456789!");
    let r = api.send(Method::PUT, &format!("{loc}?digest={d}"), &[], b"!".to_vec()).await;
    assert_eq!(r.status(), StatusCode::CREATED);
    let r = api.send(Method::GET, &format!("/v2/ns/app/blobs/{d}"), &[], vec![]).await;
    assert_eq!(r.bytes().await.unwrap().as_ref(), b"0123456789!", "only the first chunk's bytes were kept");
}

/// A stream over a channel's items.
fn tokio_stream_from<T: Send + 'static>(
    mut rx: tokio::sync::mpsc::Receiver<T>,
) -> impl futures::Stream<Item = T> + Send + 'static {
    futures::stream::poll_fn(move |cx| rx.poll_recv(cx))
}
