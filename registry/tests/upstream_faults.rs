//! Upstreams that misbehave during a pull-through (issue 13, point 6), scripted so that each fault happens on
//! demand: an upstream that drops the connection mid-body, one that hangs mid-body, one that announces another
//! size than the image says, and one that sends no size and then more or fewer bytes than the image says. In every
//! case the client never gets a whole body with a 200, nothing is kept (the next pull asks the upstream again),
//! the wait is bounded by the read time-out, and once the upstream behaves the blob is served and stored, verified.

use std::sync::Arc;
use std::time::{Duration, Instant};

use names::Digest;
use registry::testing::TestRegistry;
use registry::upstream::Outbound;
use reqwest::{Client, StatusCode};
use serde_json::json;

mod common;

use common::{Answer, Fake};

const READ_TIMEOUT: Duration = Duration::from_secs(1);

fn layer(seed: u8, len: usize) -> Vec<u8> {
    (0..len).map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed)).collect()
}

/// What a client got: the body when the status was 200 and the body arrived whole, else what went wrong.
async fn pull(http: &Client, url: &str) -> Result<Vec<u8>, String> {
    let r = http.get(url).send().await.map_err(|e| e.to_string())?;
    let status = r.status();
    if status != StatusCode::OK {
        return Err(format!("{status}: {}", r.text().await.unwrap_or_default()));
    }
    r.bytes().await.map(|b| b.to_vec()).map_err(|e| format!("body: {e}"))
}

struct Case {
    name: &'static str,
    repo: &'static str,
    /// The fault, given the true bytes.
    fault: fn(Arc<Vec<u8>>) -> Answer,
    /// The size the manifest claims, given the true size.
    claimed: fn(usize) -> usize,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn misbehaving_upstreams_never_yield_a_whole_wrong_body_and_nothing_is_kept() {
    let cases = [
        Case {
            name: "drops the connection mid-body",
            repo: "lib/drop",
            fault: |b| Answer::Cut { after: b.len() / 2, body: b, stall: Duration::ZERO },
            claimed: |n| n,
        },
        Case {
            name: "hangs mid-body",
            repo: "lib/hang",
            fault: |b| Answer::Cut { after: b.len() / 3, body: b, stall: Duration::from_secs(30) },
            claimed: |n| n,
        },
        Case {
            name: "announces more bytes than the image says",
            repo: "lib/longer",
            fault: |b| Answer::Body { content_type: "application/octet-stream", body: b, pause: Duration::ZERO },
            claimed: |n| n - 100,
        },
        Case {
            name: "sends no size, then more bytes than the image says",
            repo: "lib/unsized-long",
            fault: Answer::Unsized,
            claimed: |n| n - 100,
        },
        Case {
            name: "sends no size, then fewer bytes than the image says",
            repo: "lib/unsized-short",
            fault: Answer::Unsized,
            claimed: |n| n + 100,
        },
    ];
    let fake = Fake::start();
    let tri = TestRegistry::builder()
        .with_outbound(Outbound {
            read_timeout: READ_TIMEOUT,
            connect_timeout: Duration::from_secs(2),
            ..Default::default()
        })
        .start();
    let http = Client::new();
    let r = http.post(format!("{}/apis/tributary.dev/v1/namespaces", tri.url())).json(&json!({"name": "team"})).send();
    assert!(r.await.unwrap().status().is_success());

    for (i, case) in cases.iter().enumerate() {
        let bytes = layer(i as u8, 3 * 64 * 1024 + 17);
        let d = Digest::sha256_of(&bytes);
        let claimed = (case.claimed)(bytes.len());
        // The manifest names the true digest; only the transfer misbehaves.
        fake.image_sized(case.repo, "1", bytes.clone(), &d, claimed, Duration::ZERO);
        let upstream_path = format!("/v2/{}/blobs/{d}", case.repo);
        fake.route(&upstream_path, (case.fault)(Arc::new(bytes.clone())));
        let stream = case.repo.trim_start_matches("lib/");
        let isi = json!({"metadata": {"name": stream}, "spec": {"import": true, "images": [{
            "from": {"kind": "DockerImage", "name": format!("{}/{}:1", fake.host, case.repo)},
            "to": {"name": "v1"}, "importPolicy": {"insecure": true}}]}});
        let r = http
            .post(format!("{}/apis/image.openshift.io/v1/namespaces/team/imagestreamimports", tri.url()))
            .json(&isi)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::CREATED, "{}", case.name);

        let url = format!("{}/v2/team/{stream}/blobs/{d}", tri.url());
        for attempt in 1..=2 {
            let started = Instant::now();
            let got = pull(&http, &url).await;
            let took = started.elapsed();
            assert!(
                got.is_err(),
                "{}: the client got a whole body with a 200 ({} bytes)",
                case.name,
                got.unwrap().len()
            );
            assert!(took < READ_TIMEOUT * 8, "{}: the pull waited {took:?}", case.name);
            assert_eq!(fake.hits(&upstream_path), attempt, "{}: nothing kept, the upstream is asked again", case.name);
        }
        // The upstream mends (with the size the image claims when it lied only about the transfer).
        if claimed == bytes.len() {
            let good = Answer::Body {
                content_type: "application/octet-stream",
                body: Arc::new(bytes.clone()),
                pause: Duration::ZERO,
            };
            fake.route(&upstream_path, good);
            let body =
                pull(&http, &url).await.unwrap_or_else(|e| panic!("{}: after the upstream mended: {e}", case.name));
            assert_eq!(Digest::sha256_of(&body), d, "{}", case.name);
            assert_eq!(pull(&http, &url).await.unwrap(), bytes, "{}: served locally", case.name);
            assert_eq!(fake.hits(&upstream_path), 3, "{}: stored after one good fetch", case.name);
        }
    }
}
