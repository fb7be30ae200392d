//! `/healthz` and `/readyz` on real stores: ready on redb + filesystem, on etcd and on S3 (moto); unready (503, the
//! failed check named with its reason) when the blob directory is gone, when etcd is stopped, when S3 stops
//! answering or dies; ready again when the store returns. Both endpoints answer without credentials.
//! The etcd and S3 tests skip without their binaries unless `TRIBUTARY_E2E_REQUIRED=1`.

use std::time::{Duration, Instant};

use registry::config::storage::{Blobs, Metadata, Storage};
use registry::testing::TestRegistry;
use reqwest::Client;
use serde_json::Value;
use storage_backends::testing::etcd::EtcdServer;
use storage_backends::testing::s3::{S3Server, BUCKET};

const ADMIN: &str = "trb_0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

async fn readyz(http: &Client, reg: &TestRegistry) -> Option<(u16, Value)> {
    let r = http.get(format!("{}/readyz", reg.url())).timeout(Duration::from_secs(10)).send().await.ok()?;
    let status = r.status().as_u16();
    Some((status, r.json().await.ok()?))
}

/// Polls `/readyz` until it answers `status`; returns the body.
async fn wait_readyz(http: &Client, reg: &TestRegistry, status: u16, within: Duration) -> Value {
    let deadline = Instant::now() + within;
    let mut last = None;
    while Instant::now() < deadline {
        if let Some((s, body)) = readyz(http, reg).await {
            if s == status {
                return body;
            }
            last = Some((s, body));
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    panic!("/readyz did not answer {status} within {within:?}; last: {last:?}");
}

fn assert_ready_body(body: &Value) {
    assert_eq!(body["status"], "ready", "{body}");
    assert_eq!(body["checks"]["metadata"]["ok"], true, "{body}");
    assert_eq!(body["checks"]["blobs"]["ok"], true, "{body}");
}

/// Asserts an unready body where exactly `failed` failed, with an error containing `reason`.
fn assert_unready_body(body: &Value, failed: &str, reason: &str) {
    let other = if failed == "blobs" { "metadata" } else { "blobs" };
    assert_eq!(body["status"], "unready", "{body}");
    assert_eq!(body["checks"][failed]["ok"], false, "{body}");
    let error = body["checks"][failed]["error"].as_str().unwrap_or_default();
    assert!(error.contains(reason), "{failed} error should mention {reason:?}: {body}");
    assert_eq!(body["checks"][other]["ok"], true, "{body}");
}

async fn assert_live(http: &Client, reg: &TestRegistry) {
    let r = http.get(format!("{}/healthz", reg.url())).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let server = r.headers().get("server").and_then(|v| v.to_str().ok()).unwrap_or_default().to_owned();
    assert_eq!(server, format!("tributary/{}", registry::VERSION));
}

fn stop(reg: TestRegistry) {
    tokio::task::block_in_place(|| drop(reg));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn local_stores_ready_until_the_blob_directory_is_gone() {
    let reg = TestRegistry::builder().with_admin_token(ADMIN).start();
    let http = Client::new();
    // No credentials needed, though access control is on (and /v2/ refuses the anonymous caller).
    assert_eq!(http.get(format!("{}/v2/", reg.url())).send().await.unwrap().status(), 401);
    assert_live(&http, &reg).await;
    let (status, body) = readyz(&http, &reg).await.expect("/readyz answers");
    assert_eq!(status, 200, "{body}");
    assert_ready_body(&body);
    let head = http.head(format!("{}/readyz", reg.url())).send().await.unwrap();
    assert_eq!(head.status(), 200);

    // The blob directory disappears (a volume gone from under the process): unready, the metadata still fine.
    let blobs = reg.data_dir().join("blobs");
    let away = reg.data_dir().join("blobs.away");
    std::fs::rename(&blobs, &away).unwrap();
    let body = wait_readyz(&http, &reg, 503, Duration::from_secs(5)).await;
    assert_unready_body(&body, "blobs", "No such file or directory");
    assert_live(&http, &reg).await;

    // A file where the directory was is no better.
    std::fs::write(&blobs, b"not a directory").unwrap();
    tokio::time::sleep(registry::http::health::CACHE_FOR).await; // the last answer is served for that long
    let body = wait_readyz(&http, &reg, 503, Duration::from_secs(5)).await;
    assert_unready_body(&body, "blobs", "not a directory");

    std::fs::remove_file(&blobs).unwrap();
    std::fs::rename(&away, &blobs).unwrap();
    let body = wait_readyz(&http, &reg, 200, Duration::from_secs(5)).await;
    assert_ready_body(&body);
    stop(reg);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etcd_stopped_makes_the_registry_unready_until_it_returns() {
    let Some(mut etcd) = EtcdServer::start() else { return };
    let storage = Storage { metadata: Metadata::Etcd(etcd.config("/health-test/")), ..Default::default() };
    let reg = TestRegistry::builder().with_storage(storage).start();
    let http = Client::new();
    let body = wait_readyz(&http, &reg, 200, Duration::from_secs(5)).await;
    assert_ready_body(&body);

    etcd.stop();
    let started = Instant::now();
    let body = wait_readyz(&http, &reg, 503, Duration::from_secs(10)).await;
    assert_unready_body(&body, "metadata", "");
    // The probe itself never waits past the check timeout (2 s) plus slack.
    let asked = Instant::now();
    let _ = readyz(&http, &reg).await.expect("/readyz answers while etcd is down");
    assert!(asked.elapsed() < Duration::from_secs(4), "a probe took {:?}", asked.elapsed());
    eprintln!("unready {:?} after etcd stopped: {body}", started.elapsed());
    assert_live(&http, &reg).await;
    // A write meanwhile is a clear, retryable 503 UNAVAILABLE, never a 500.
    let blob = b"written while etcd is down".to_vec();
    let d = names::Digest::sha256_of(&blob);
    let r = http.post(format!("{}/v2/ns/app/blobs/uploads/?digest={d}", reg.url())).body(blob.clone()).send();
    let r = r.await.unwrap();
    assert_eq!(r.status(), 503, "a push while etcd is down");
    assert!(r.headers().contains_key("retry-after"));
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["errors"][0]["code"], "UNAVAILABLE", "{body}");

    etcd.start_again();
    let started = Instant::now();
    let body = wait_readyz(&http, &reg, 200, Duration::from_secs(30)).await;
    assert_ready_body(&body);
    eprintln!("ready again {:?} after etcd answered", started.elapsed());
    let r = http.post(format!("{}/v2/ns/app/blobs/uploads/?digest={d}", reg.url())).body(blob).send().await.unwrap();
    assert_eq!(r.status(), 201, "the same push once etcd is back");
    stop(reg);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s3_not_answering_makes_the_registry_unready() {
    let Some(s3) = S3Server::start() else { return };
    let storage = Storage { blobs: Blobs::S3(s3.config(BUCKET, Some("health"))), ..Default::default() };
    let reg = TestRegistry::builder().with_storage(storage).start();
    let http = Client::new();
    let body = wait_readyz(&http, &reg, 200, Duration::from_secs(5)).await;
    assert_ready_body(&body);

    // Frozen (SIGSTOP): connections open but nothing answers, so the check times out.
    signal(s3.pid(), "STOP");
    let body = wait_readyz(&http, &reg, 503, Duration::from_secs(10)).await;
    assert_unready_body(&body, "blobs", "no answer within 2 s");
    assert_live(&http, &reg).await;
    signal(s3.pid(), "CONT");
    let body = wait_readyz(&http, &reg, 200, Duration::from_secs(10)).await;
    assert_ready_body(&body);

    // Killed: connections refused.
    signal(s3.pid(), "KILL");
    let body = wait_readyz(&http, &reg, 503, Duration::from_secs(10)).await;
    assert_unready_body(&body, "blobs", &format!("S3 bucket {BUCKET}"));
    stop(reg);
}

fn signal(pid: u32, sig: &str) {
    let status = std::process::Command::new("kill").arg(format!("-{sig}")).arg(pid.to_string()).status().unwrap();
    assert!(status.success(), "kill -{sig} {pid}");
}
