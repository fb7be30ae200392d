//! The `[limits]` as a client meets them, against a real server on 127.0.0.1:0: the per-client rate limit (429
//! `TOOMANYREQUESTS` with `Retry-After` in the OCI or Kubernetes format of the route, and served again after the
//! wait; one client's burst does not slow another), the concurrent upload cap, a slow body cut off within its
//! timeout while other clients are served, and an oversized request head answered 431.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use registry::config::limits::{Limits, RateLimit};
use registry::testing::TestRegistry;
use reqwest::{Client, Response, StatusCode};
use serde_json::{json, Value};

const ADMIN: &str = "admin-secret-for-limit-tests";

async fn oci_error(r: Response, status: StatusCode, code: &str) -> Value {
    assert_eq!(r.status(), status, "{}", r.url());
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["errors"][0]["code"], code, "{body}");
    body
}

fn retry_after(r: &Response) -> u64 {
    r.headers()
        .get("retry-after")
        .unwrap_or_else(|| panic!("no Retry-After on {}", r.url()))
        .to_str()
        .unwrap()
        .parse()
        .unwrap()
}

#[tokio::test]
async fn the_rate_limit_answers_429_with_retry_after_and_recovers() {
    let limits = Limits { rate: Some(RateLimit { per_second: 1.0, burst: 2, clients: 100 }), ..Limits::default() };
    let reg = TestRegistry::builder().with_admin_token(ADMIN).with_limits(limits).start();
    let http = Client::new();
    let get = |path: &str, token: Option<&str>| {
        let r = http.get(format!("{}{path}", reg.url()));
        match token {
            Some(t) => r.basic_auth("x", Some(t)),
            None => r,
        }
    };
    // The administrator's burst: two requests, then 429 in the OCI format.
    for _ in 0..2 {
        assert_eq!(get("/v2/", Some(ADMIN)).send().await.unwrap().status(), StatusCode::OK);
    }
    let r = get("/v2/", Some(ADMIN)).send().await.unwrap();
    let wait = retry_after(&r);
    assert!((1..=2).contains(&wait), "Retry-After {wait}");
    oci_error(r, StatusCode::TOO_MANY_REQUESTS, "TOOMANYREQUESTS").await;
    // The stream API answers a Kubernetes Status.
    let r = get("/apis/image.openshift.io/v1/namespaces/default/imagestreams", Some(ADMIN)).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::TOO_MANY_REQUESTS);
    retry_after(&r);
    let status: Value = r.json().await.unwrap();
    assert_eq!(
        (&status["kind"], &status["reason"], &status["code"]),
        (&json!("Status"), &json!("TooManyRequests"), &json!(429))
    );
    // Health probes are spared.
    assert_eq!(get("/healthz", None).send().await.unwrap().status(), StatusCode::OK);
    // Another client (anonymous, by address) has its own bucket.
    assert_eq!(get("/v2/", None).send().await.unwrap().status(), StatusCode::UNAUTHORIZED);
    // After the wait the administrator is served again.
    tokio::time::sleep(Duration::from_secs(wait)).await;
    assert_eq!(get("/v2/", Some(ADMIN)).send().await.unwrap().status(), StatusCode::OK);
}

/// Sends a request head announcing a body of `length` bytes and nothing more.
fn open_body(reg: &TestRegistry, method: &str, path: &str, length: usize) -> TcpStream {
    let mut s = TcpStream::connect(reg.host()).unwrap();
    write!(s, "{method} {path} HTTP/1.1\r\nHost: {}\r\nContent-Length: {length}\r\n\r\n", reg.host()).unwrap();
    s.flush().unwrap();
    s
}

/// Reads until the server closes: what it sent, when it began to answer (a reset after its answer counts as a
/// close).
fn read_to_close(s: &mut TcpStream, limit: Duration) -> (String, Option<Instant>) {
    s.set_read_timeout(Some(limit)).unwrap();
    let mut answered = None;
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match s.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => {
                answered.get_or_insert_with(Instant::now);
                got.extend_from_slice(&buf[..n])
            }
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => break,
            Err(e) => panic!("the server did not close the connection within {limit:?}: {e}"),
        }
    }
    (String::from_utf8_lossy(&got).into_owned(), answered)
}

async fn start_upload(http: &Client, reg: &TestRegistry) -> String {
    let r = http.post(format!("{}/v2/ns/app/blobs/uploads/", reg.url())).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::ACCEPTED);
    r.headers()["location"].to_str().unwrap().to_owned()
}

#[tokio::test]
async fn uploads_over_the_cap_get_429() {
    let limits = Limits { max_concurrent_uploads: Some(1), body_min_rate: 0, ..Limits::default() };
    let reg = TestRegistry::builder().with_limits(limits).start();
    let http = Client::new();
    let first = start_upload(&http, &reg).await;
    let second = start_upload(&http, &reg).await;
    // One upload streams (slowly: its body has not come yet) and holds the only place.
    let mut streaming = open_body(&reg, "PATCH", &first, 10);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let r = http.patch(format!("{}{second}", reg.url())).body(vec![1u8; 10]).send().await.unwrap();
    assert!(retry_after(&r) >= 1);
    oci_error(r, StatusCode::TOO_MANY_REQUESTS, "TOOMANYREQUESTS").await;
    // Reads and session starts are not uploads.
    start_upload(&http, &reg).await;
    // The first upload ends; its place is free again.
    streaming.write_all(&[0u8; 10]).unwrap();
    let mut answer = [0u8; 12];
    streaming.read_exact(&mut answer).unwrap();
    assert_eq!(&answer, b"HTTP/1.1 202");
    drop(streaming);
    let r = http.patch(format!("{}{second}", reg.url())).body(vec![1u8; 10]).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::ACCEPTED);
}

#[tokio::test]
async fn a_slow_body_is_cut_off_while_others_are_served() {
    let window = Duration::from_secs(2);
    let limits = Limits {
        body_idle_timeout: Duration::from_secs(10),
        body_min_rate: 100,
        body_rate_window: window,
        ..Limits::default()
    };
    let reg = TestRegistry::builder().with_limits(limits).start();
    let http = Client::new();
    let location = start_upload(&http, &reg).await;
    // Headers, then the body one byte a second: far below 100 bytes a second.
    let started = Instant::now();
    let mut slow = open_body(&reg, "PATCH", &location, 1000);
    let mut trickle = slow.try_clone().unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let stopping = stop.clone();
    let trickler = std::thread::spawn(move || {
        while !stopping.load(Ordering::SeqCst) {
            if trickle.write_all(b"x").is_err() {
                return;
            }
            std::thread::sleep(Duration::from_secs(1));
        }
    });
    // Meanwhile another client on another connection is served, and can push.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let r = http.get(format!("{}/v2/", reg.url())).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let other = start_upload(&http, &reg).await;
    let digest = names::Digest::sha256_of(b"quick");
    let r = http.put(format!("{}{other}?digest={digest}", reg.url())).body("quick").send().await.unwrap();
    assert_eq!(r.status(), StatusCode::CREATED);
    let (answer, answered) =
        tokio::task::spawn_blocking(move || read_to_close(&mut slow, Duration::from_secs(10))).await.unwrap();
    let closed = started.elapsed();
    stop.store(true, Ordering::SeqCst);
    let _ = trickler.join();
    // Answered 408 when the window ends (the connection closed within actix's one-second disconnect grace); the
    // bounds leave room for a loaded machine, far below the 1000 s the trickle would take.
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(answer.to_ascii_lowercase().contains("connection: close"), "{answer}");
    let answered = answered.unwrap().duration_since(started);
    assert!(answered < window + Duration::from_secs(4), "answered after {answered:?}");
    assert!(closed < window + Duration::from_secs(6), "closed after {closed:?}");
    // The upload is still there, with nothing of the slow body accepted beyond what arrived.
    let r = http.get(format!("{}{location}", reg.url())).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
}

#[tokio::test]
async fn silent_clients_are_cut_off() {
    let limits = Limits {
        header_timeout: Duration::from_secs(1),
        body_idle_timeout: Duration::from_secs(1),
        body_min_rate: 0,
        ..Limits::default()
    };
    let reg = TestRegistry::builder().with_limits(limits).start();
    let http = Client::new();
    // Half a request head, then nothing: actix's client_request_timeout answers 408.
    let started = Instant::now();
    let mut s = TcpStream::connect(reg.host()).unwrap();
    write!(s, "GET /v2/ HTTP/1.1\r\nHost: {}\r\n", reg.host()).unwrap();
    let (answer, _) =
        tokio::task::spawn_blocking(move || read_to_close(&mut s, Duration::from_secs(10))).await.unwrap();
    assert!(answer.is_empty() || answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(started.elapsed() < Duration::from_secs(4), "closed after {:?}", started.elapsed());
    // A whole head and no body: the body idle timeout answers 408.
    let location = start_upload(&http, &reg).await;
    let started = Instant::now();
    let mut s = open_body(&reg, "PATCH", &location, 10);
    let (answer, _) =
        tokio::task::spawn_blocking(move || read_to_close(&mut s, Duration::from_secs(10))).await.unwrap();
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(started.elapsed() < Duration::from_secs(4), "closed after {:?}", started.elapsed());
}

#[tokio::test]
async fn an_oversized_request_head_gets_431() {
    let limits = Limits { max_header_bytes: 4096, ..Limits::default() };
    let reg = TestRegistry::builder().with_limits(limits).start();
    let http = Client::new();
    let r = http.get(format!("{}/v2/", reg.url())).header("X-Padding", "a".repeat(3000)).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK, "under the cap");
    let r = http.get(format!("{}/v2/", reg.url())).header("X-Padding", "a".repeat(5000)).send().await.unwrap();
    oci_error(r, StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE, "UNSUPPORTED").await;
    let r = http
        .get(format!("{}/apis/image.openshift.io/v1/namespaces/ns/imagestreams", reg.url()))
        .header("X-Padding", "a".repeat(5000))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE);
    assert_eq!(r.json::<Value>().await.unwrap()["kind"], "Status");
    // Past what actix reads at all (128 KiB), the answer is still 431.
    let r = http.get(format!("{}/v2/", reg.url())).header("X-Padding", "a".repeat(200_000)).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE);
}
