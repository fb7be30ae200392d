//! Lifecycle as a client sees it: idle uploads are purged (their next chunk answers 404 `BLOB_UPLOAD_UNKNOWN`,
//! their staged bytes are gone) while uploads in use are kept; read-only mode refuses every write with 405
//! `UNSUPPORTED` (405 `MethodNotAllowed` on the image stream API) and serves every read, is switched at run time
//! through the admin API and followed by a second replica on the same etcd within a second (skipped without the
//! etcd binary unless `TRIBUTARY_E2E_REQUIRED=1`), and cannot be lifted when the configuration sets it.

mod common;

use std::time::{Duration, Instant};

use common::tributary;
use names::Digest;
use registry::config::storage::{Metadata, Storage};
use registry::testing::TestRegistry;
use reqwest::{Client, Method, Response, StatusCode};
use serde_json::{json, Value};
use storage_backends::testing::etcd::EtcdServer;

const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
const STREAMS: &str = "/apis/image.openshift.io/v1/namespaces/ns";
const READ_ONLY: &str = "/apis/tributary.dev/v1/readonly";

async fn send(reg: &TestRegistry, method: Method, path: &str, body: Vec<u8>) -> Response {
    let mut r = Client::new().request(method, format!("{}{path}", reg.url())).body(body);
    if path.contains("/manifests/") {
        r = r.header("Content-Type", OCI_MANIFEST);
    }
    if path.starts_with("/apis/") {
        r = r.header("Content-Type", "application/json");
    }
    r.send().await.unwrap()
}

async fn start_upload(reg: &TestRegistry) -> String {
    let r = send(reg, Method::POST, "/v2/ns/app/blobs/uploads/", vec![]).await;
    assert_eq!(r.status(), StatusCode::ACCEPTED);
    r.headers()["location"].to_str().unwrap().to_owned()
}

async fn patch(reg: &TestRegistry, location: &str, bytes: &[u8]) -> Response {
    send(reg, Method::PATCH, location, bytes.to_vec()).await
}

/// Pushes a blob and a manifest tagged `tag` that references it; returns both digests.
async fn push(reg: &TestRegistry, tag: &str) -> (Digest, Digest) {
    let config = json!({"architecture": "amd64", "os": "linux", "config": {"Cmd": ["echo", tag]}}).to_string();
    let c = Digest::sha256_of(config.as_bytes());
    let r = send(reg, Method::POST, &format!("/v2/ns/app/blobs/uploads/?digest={c}"), config.clone().into()).await;
    assert_eq!(r.status(), StatusCode::CREATED);
    let m = json!({"schemaVersion": 2, "mediaType": OCI_MANIFEST,
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": c, "size": config.len()},
        "layers": []})
    .to_string();
    let r = send(reg, Method::PUT, &format!("/v2/ns/app/manifests/{tag}"), m.clone().into()).await;
    assert_eq!(r.status(), StatusCode::CREATED);
    (c, Digest::sha256_of(m.as_bytes()))
}

async fn expect_oci_error(r: Response, status: StatusCode, code: &str) -> String {
    let what = format!("{} {}", r.status(), r.url().path());
    assert_eq!(r.status(), status, "{what}");
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["errors"][0]["code"], code, "{what}: {body}");
    body["errors"][0]["message"].as_str().unwrap().to_owned()
}

async fn expect_read_only(r: Response) {
    let message = expect_oci_error(r, StatusCode::METHOD_NOT_ALLOWED, "UNSUPPORTED").await;
    assert!(message.contains("read-only"), "{message}");
}

async fn switch(reg: &TestRegistry, on: bool) -> Response {
    send(reg, Method::PUT, READ_ONLY, json!({"readOnly": on}).to_string().into()).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_uploads_are_purged_and_active_ones_kept() {
    let reg = TestRegistry::builder().with_upload_purge(Duration::from_secs(1), Duration::from_millis(200)).start();
    let idle = start_upload(&reg).await;
    assert_eq!(patch(&reg, &idle, b"abandoned ").await.status(), StatusCode::ACCEPTED);
    let idle_id = idle.rsplit('/').next().unwrap().to_owned();
    let staging = reg.data_dir().join("blobs/uploads").join(&idle_id);
    assert!(staging.exists(), "the chunk is staged at {}", staging.display());
    // Another upload gets a chunk every 300 ms meanwhile: touched within the TTL, never purged.
    let active = start_upload(&reg).await;
    let mut sent = Vec::new();
    let until = Instant::now() + Duration::from_millis(2500);
    while Instant::now() < until {
        assert_eq!(patch(&reg, &active, b"busy ").await.status(), StatusCode::ACCEPTED, "the active upload is kept");
        sent.extend_from_slice(b"busy ");
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    let r = patch(&reg, &idle, b"more").await;
    expect_oci_error(r, StatusCode::NOT_FOUND, "BLOB_UPLOAD_UNKNOWN").await;
    let r = send(&reg, Method::GET, &idle, vec![]).await;
    expect_oci_error(r, StatusCode::NOT_FOUND, "BLOB_UPLOAD_UNKNOWN").await;
    assert!(!staging.exists(), "the idle upload's staged bytes are removed");
    let d = Digest::sha256_of(&sent);
    let r = send(&reg, Method::PUT, &format!("{active}?digest={d}"), vec![]).await;
    assert_eq!(r.status(), StatusCode::CREATED, "the active upload finishes");
    let r = send(&reg, Method::GET, &format!("/v2/ns/app/blobs/{d}"), vec![]).await;
    assert_eq!(r.bytes().await.unwrap(), sent);
    assert!(reg.leads_uploads(), "the only replica runs the purge");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn read_only_refuses_writes_and_serves_reads() {
    let reg = TestRegistry::start();
    let (config, manifest) = push(&reg, "v1").await;
    let upload = start_upload(&reg).await;
    assert_eq!(patch(&reg, &upload, b"half").await.status(), StatusCode::ACCEPTED);
    let stream: Value =
        send(&reg, Method::GET, &format!("{STREAMS}/imagestreams/app"), vec![]).await.json().await.unwrap();

    let r = switch(&reg, true).await;
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(r.json::<Value>().await.unwrap()["readOnly"], true);

    // Every write through the OCI API: 405 UNSUPPORTED, saying why.
    let other = Digest::sha256_of(b"other");
    let writes: Vec<(Method, String, Vec<u8>)> = vec![
        (Method::POST, "/v2/ns/app/blobs/uploads/".into(), vec![]),
        (Method::POST, format!("/v2/ns/app/blobs/uploads/?digest={other}"), b"other".to_vec()),
        (Method::POST, format!("/v2/ns/other/blobs/uploads/?mount={config}&from=ns/app"), vec![]),
        (Method::PATCH, upload.clone(), b"more".to_vec()),
        (Method::PUT, format!("{upload}?digest={other}"), vec![]),
        (Method::DELETE, upload.clone(), vec![]),
        (Method::PUT, "/v2/ns/app/manifests/v2".into(), b"{}".to_vec()),
        (Method::DELETE, format!("/v2/ns/app/manifests/{manifest}"), vec![]),
        (Method::DELETE, format!("/v2/ns/app/blobs/{config}"), vec![]),
    ];
    for (method, path, body) in writes {
        expect_read_only(send(&reg, method, &path, body).await).await;
    }
    // Tag changes and imports through the image stream API: a Status 405 MethodNotAllowed.
    let tag = json!({"apiVersion": "image.openshift.io/v1", "kind": "ImageStreamTag",
        "metadata": {"name": "app:v3"}, "tag": {"from": {"kind": "ImageStreamTag", "name": "app:v1"}}});
    let import = json!({"apiVersion": "image.openshift.io/v1", "kind": "ImageStreamImport",
        "metadata": {"name": "app"}, "spec": {"import": true, "images": [{"from": {"kind": "DockerImage",
        "name": "example.invalid/a:b"}, "to": {"name": "imported"}}]}});
    let stream_writes = [
        (Method::POST, format!("{STREAMS}/imagestreamtags"), tag.to_string()),
        (Method::PUT, format!("{STREAMS}/imagestreamtags/app:v1"), tag.to_string()),
        (Method::DELETE, format!("{STREAMS}/imagestreamtags/app:v1"), String::new()),
        (Method::DELETE, format!("{STREAMS}/imagestreams/app"), String::new()),
        (Method::POST, format!("{STREAMS}/imagestreamimports"), import.to_string()),
    ];
    for (method, path, body) in stream_writes {
        let r = send(&reg, method.clone(), &path, body.into()).await;
        assert_eq!(r.status(), StatusCode::METHOD_NOT_ALLOWED, "{method} {path}");
        let status: Value = r.json().await.unwrap();
        assert_eq!((status["kind"].as_str(), status["reason"].as_str()), (Some("Status"), Some("MethodNotAllowed")));
        assert!(status["message"].as_str().unwrap().contains("read-only"), "{status}");
    }

    // Reads go on, and nothing changed.
    let r = send(&reg, Method::GET, "/v2/ns/app/manifests/v1", vec![]).await;
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(r.headers()["docker-content-digest"], manifest.to_string().as_str());
    assert_eq!(send(&reg, Method::HEAD, &format!("/v2/ns/app/blobs/{config}"), vec![]).await.status(), StatusCode::OK);
    let tags: Value = send(&reg, Method::GET, "/v2/ns/app/tags/list", vec![]).await.json().await.unwrap();
    assert_eq!(tags["tags"], json!(["v1"]));
    assert_eq!(send(&reg, Method::GET, &upload, vec![]).await.status(), StatusCode::NO_CONTENT, "upload status");
    let now: Value =
        send(&reg, Method::GET, &format!("{STREAMS}/imagestreams/app"), vec![]).await.json().await.unwrap();
    assert_eq!(now["metadata"]["resourceVersion"], stream["metadata"]["resourceVersion"], "the stream is unchanged");
    let status: Value = send(&reg, Method::GET, READ_ONLY, vec![]).await.json().await.unwrap();
    assert_eq!((status["readOnly"].as_bool(), status["config"].as_bool()), (Some(true), Some(false)), "{status}");

    // The admin API still works: off again, and writes are accepted.
    assert_eq!(switch(&reg, false).await.status(), StatusCode::OK);
    assert_eq!(patch(&reg, &upload, b" and the rest").await.status(), StatusCode::ACCEPTED);
    push(&reg, "v2").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn configured_read_only_is_a_floor_the_api_cannot_lift() {
    let reg = TestRegistry::builder().read_only().start();
    expect_read_only(send(&reg, Method::POST, "/v2/ns/app/blobs/uploads/", vec![]).await).await;
    let r = switch(&reg, false).await;
    assert_eq!(r.status(), StatusCode::CONFLICT);
    let status: Value = r.json().await.unwrap();
    assert!(status["message"].as_str().unwrap().contains("configuration"), "{status}");
    let status: Value = send(&reg, Method::GET, READ_ONLY, vec![]).await.json().await.unwrap();
    assert_eq!((status["readOnly"].as_bool(), status["config"].as_bool()), (Some(true), Some(true)), "{status}");
    expect_read_only(send(&reg, Method::POST, "/v2/ns/app/blobs/uploads/", vec![]).await).await;
    assert_eq!(send(&reg, Method::GET, "/v2/", vec![]).await.status(), StatusCode::OK, "reads are served");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_a_cluster_admin_switches_read_only() {
    let reg = TestRegistry::builder().with_admin_token("admin-secret-token-for-tests").start();
    let anonymous = switch(&reg, true).await;
    assert_eq!(anonymous.status(), StatusCode::UNAUTHORIZED);
    let admin = Client::new()
        .put(format!("{}{READ_ONLY}", reg.url()))
        .bearer_auth("admin-secret-token-for-tests")
        .json(&json!({"readOnly": true}))
        .send()
        .await
        .unwrap();
    assert_eq!(admin.status(), StatusCode::OK);
    let status: Value = admin.json().await.unwrap();
    assert_eq!(status["switch"]["changedBy"], "admin", "{status}");
}

/// Waits until `reg` answers a new upload with `want` (within a second, else fails); returns how long it took.
async fn seen_within_a_second(reg: &TestRegistry, want: StatusCode) -> Duration {
    let start = Instant::now();
    loop {
        let got = send(reg, Method::POST, "/v2/ns/app/blobs/uploads/", vec![]).await.status();
        if got == want {
            return start.elapsed();
        }
        assert!(start.elapsed() < Duration::from_secs(1), "the other replica still answers {got}, not {want}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_replica_on_etcd_follows_the_switch_within_a_second() {
    let Some(etcd) = EtcdServer::start() else { return };
    let replica = || {
        let storage = Storage { metadata: Metadata::Etcd(etcd.config("/read-only-test/")), ..Default::default() };
        TestRegistry::builder().with_storage(storage).start()
    };
    let (a, b) = (replica(), replica());
    assert_eq!(send(&b, Method::POST, "/v2/ns/app/blobs/uploads/", vec![]).await.status(), StatusCode::ACCEPTED);
    assert_eq!(switch(&a, true).await.status(), StatusCode::OK);
    let on = seen_within_a_second(&b, StatusCode::METHOD_NOT_ALLOWED).await;
    expect_read_only(send(&b, Method::PUT, "/v2/ns/app/manifests/v1", b"{}".to_vec()).await).await;
    assert_eq!(send(&b, Method::GET, "/v2/", vec![]).await.status(), StatusCode::OK);
    assert_eq!(switch(&b, false).await.status(), StatusCode::OK, "switched off through the other replica");
    let off = seen_within_a_second(&a, StatusCode::ACCEPTED).await;
    eprintln!("replica b refused writes {on:?} after the switch on a; a accepted them {off:?} after b's");
    tokio::task::block_in_place(|| drop((a, b)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn adm_read_only_on_off_status() {
    let reg = TestRegistry::builder().with_admin_token("cli-admin-secret-token").start();
    let cli = |args: &'static [&'static str]| {
        let reg = &reg;
        tokio::task::block_in_place(|| tributary(reg, args))
    };
    cli(&["new-project", "ns"]).unwrap();
    assert_eq!(cli(&["adm", "read-only", "status"]).unwrap().trim(), "read-only: off");
    let on = cli(&["adm", "read-only", "on"]).unwrap();
    assert!(on.starts_with("read-only: on (switched by admin at "), "{on}");
    let r = Client::new()
        .post(format!("{}/v2/ns/app/blobs/uploads/", reg.url()))
        .bearer_auth("cli-admin-secret-token")
        .send()
        .await
        .unwrap();
    expect_read_only(r).await;
    assert!(cli(&["adm", "read-only", "status"]).unwrap().starts_with("read-only: on"));
    assert!(cli(&["adm", "read-only", "off"]).unwrap().starts_with("read-only: off"));
    assert!(cli(&["adm", "read-only", "maybe"]).is_err());
}
