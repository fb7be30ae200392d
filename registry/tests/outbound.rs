//! Outbound requests cannot be turned against the inside: import and pull-through through the real server,
//! against scripted upstreams on 127.0.0.1. Link-local and unspecified upstreams are refused (before any
//! connection), loopback ones only with `outbound-deny-private` (unless the host is allowed by name), every
//! redirect is checked against the same rules and `allowedRegistriesForImport`, and an oversized or silent
//! upstream ends in a clear error within the time-outs. (No test sends traffic anywhere but 127.0.0.1.)

use std::sync::Arc;
use std::time::{Duration, Instant};

use registry::testing::TestRegistry;
use registry::upstream::Outbound;
use reqwest::{Client, Method, StatusCode};
use serde_json::{json, Value};

mod common;

use common::{Answer, Fake, OCI_MANIFEST};

const API: &str = "/apis/image.openshift.io/v1";

async fn call(reg: &TestRegistry, method: Method, path: &str, body: Option<Value>) -> (StatusCode, Value) {
    let mut r = Client::new().request(method, format!("{}{path}", reg.url()));
    if let Some(b) = body {
        r = r.json(&b);
    }
    let resp = r.send().await.unwrap();
    let status = resp.status();
    (status, resp.json().await.unwrap_or(Value::Null))
}

async fn namespace(reg: &TestRegistry) {
    let (s, v) = call(reg, Method::POST, "/apis/tributary.dev/v1/namespaces", Some(json!({"name": "team"}))).await;
    assert!(s.is_success() || s == StatusCode::CONFLICT, "{s} {v}");
}

/// Imports `from` into `team/app:v1` (insecure: the fakes speak plain http); returns (status, reason, message).
async fn import(reg: &TestRegistry, from: &str) -> (String, String, String) {
    let isi = json!({"metadata": {"name": "app"}, "spec": {"import": true, "images": [
        {"from": {"kind": "DockerImage", "name": from}, "to": {"name": "v1"}, "importPolicy": {"insecure": true}}]}});
    let (s, v) = call(reg, Method::POST, &format!("{API}/namespaces/team/imagestreamimports"), Some(isi)).await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    let st = &v["status"]["images"][0]["status"];
    let text = |v: &Value| v.as_str().unwrap_or_default().to_owned();
    (text(&st["status"]), text(&st["reason"]), text(&st["message"]))
}

fn registry(outbound: Outbound) -> TestRegistry {
    TestRegistry::builder().with_outbound(outbound).start()
}

/// Serves `lib/app:1` from `fake`; returns the manifest's digest.
fn upstream_image(fake: &Fake) -> names::Digest {
    fake.image("lib/app", "1", b"layer".to_vec(), &names::Digest::sha256_of(b"layer"), Duration::ZERO)
}

#[tokio::test]
async fn link_local_and_unspecified_upstreams_are_refused() {
    let reg = registry(Outbound::default());
    namespace(&reg).await;
    for from in ["169.254.169.254/lib/app:1", "169.254.169.254:80/latest/meta-data:1", "0.0.0.0:5000/lib/app:1"] {
        let (status, reason, message) = import(&reg, from).await;
        assert_eq!((status.as_str(), reason.as_str()), ("Failure", "Forbidden"), "{from}: {message}");
        assert!(message.contains("refusing to reach"), "{from}: {message}");
        assert!(message.contains("link-local") || message.contains("unspecified"), "{from}: {message}");
        assert!(message.contains("outbound-allow-hosts"), "the message says how to allow it: {message}");
    }
    // Pull-through of a reference tag there: an OCI refusal, not a 500.
    let stream = json!({"metadata": {"name": "meta", "annotations": {"openshift.io/image.insecureRepository": "true"}},
        "spec": {"tags": [{"name": "ref", "reference": true, "referencePolicy": {"type": "Local"},
            "from": {"kind": "DockerImage", "name": format!("169.254.169.254/lib/app@{}", names::Digest::sha256_of(b"m"))}}]}});
    let (s, v) = call(&reg, Method::POST, &format!("{API}/namespaces/team/imagestreams"), Some(stream)).await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    let (s, v) = call(&reg, Method::GET, "/v2/team/meta/manifests/ref", None).await;
    assert_eq!(s, StatusCode::FORBIDDEN, "{v}");
    assert_eq!(v["errors"][0]["code"], "DENIED", "{v}");
    assert!(v["errors"][0]["message"].as_str().unwrap_or_default().contains("link-local"), "{v}");
}

#[tokio::test]
async fn loopback_upstreams_work_by_default_and_are_refused_when_strict() {
    let fake = Fake::start();
    upstream_image(&fake);
    let port = fake.host.rsplit(':').next().unwrap().to_owned();

    let open = registry(Outbound::default());
    namespace(&open).await;
    let (status, _, message) = import(&open, &format!("{}/lib/app:1", fake.host)).await;
    assert_eq!(status, "Success", "a registry and its mirror on one host: {message}");

    let strict = registry(Outbound { deny_private: true, ..Outbound::default() });
    namespace(&strict).await;
    let before = fake.hits("/v2/lib/app/manifests/1");
    // By address (checked before sending) and by name (checked where the name is resolved).
    for from in [format!("{}/lib/app:1", fake.host), format!("localhost:{port}/lib/app:1")] {
        let (status, reason, message) = import(&strict, &from).await;
        assert_eq!((status.as_str(), reason.as_str()), ("Failure", "Forbidden"), "{from}: {message}");
        assert!(message.contains("loopback") && message.contains("outbound-deny-private"), "{from}: {message}");
    }
    assert_eq!(fake.hits("/v2/lib/app/manifests/1"), before, "nothing reached the upstream");

    // An administrator may allow one host by name.
    let allowed =
        registry(Outbound { deny_private: true, allow_hosts: vec!["localhost".into()], ..Outbound::default() });
    namespace(&allowed).await;
    let (status, _, message) = import(&allowed, &format!("localhost:{port}/lib/app:1")).await;
    assert_eq!(status, "Success", "{message}");
}

#[tokio::test]
async fn redirects_are_checked_against_the_rules_and_the_allowed_registries() {
    let allowed = Fake::start();
    let other = Fake::start();
    let digest = upstream_image(&allowed);
    upstream_image(&other);
    let reg = TestRegistry::builder().with_allowed_registries(&[allowed.host.as_str()]).start();
    namespace(&reg).await;

    // A redirect within the allowed registry is followed.
    let to_digest = format!("http://{}/v2/lib/app/manifests/{digest}", allowed.host);
    allowed.route("/v2/lib/app/manifests/1", Answer::Redirect(to_digest));
    let (status, _, message) = import(&reg, &format!("{}/lib/app:1", allowed.host)).await;
    assert_eq!(status, "Success", "{message}");
    assert_eq!(allowed.hits(&format!("/v2/lib/app/manifests/{digest}")), 1, "the redirect was followed");

    // One to a registry outside allowedRegistriesForImport is refused, and that registry never hears of it.
    allowed
        .route("/v2/lib/away/manifests/1", Answer::Redirect(format!("http://{}/v2/lib/app/manifests/1", other.host)));
    let (status, reason, message) = import(&reg, &format!("{}/lib/away:1", allowed.host)).await;
    assert_eq!((status.as_str(), reason.as_str()), ("Failure", "Forbidden"), "{message}");
    assert!(message.contains("redirected") && message.contains("allowedRegistriesForImport"), "{message}");
    assert_eq!(other.hits("/v2/lib/app/manifests/1"), 0);

    // One to a link-local address is refused without a connection, even with every registry allowed.
    let open = TestRegistry::start();
    namespace(&open).await;
    allowed.route("/v2/lib/meta/manifests/1", Answer::Redirect("http://169.254.169.254/latest/meta-data/".into()));
    let (status, reason, message) = import(&open, &format!("{}/lib/meta:1", allowed.host)).await;
    assert_eq!((status.as_str(), reason.as_str()), ("Failure", "Forbidden"), "{message}");
    assert!(message.contains("redirect") && message.contains("link-local"), "{message}");
}

#[tokio::test]
async fn oversized_and_silent_upstreams_end_in_bounded_clear_errors() {
    let fake = Fake::start();
    let big = json!({"schemaVersion": 2, "mediaType": OCI_MANIFEST, "annotations": {"pad": "x".repeat(64 * 1024)}});
    let body = Arc::new(big.to_string().into_bytes());
    fake.route("/v2/lib/big/manifests/1", Answer::Body { content_type: OCI_MANIFEST, body, pause: Duration::ZERO });
    fake.route("/v2/lib/hung/manifests/1", Answer::Hang(Duration::from_secs(60)));
    let read_timeout = Duration::from_secs(1);
    let reg = TestRegistry::builder()
        .with_max_manifest_bytes(16 * 1024)
        .with_outbound(Outbound { read_timeout, connect_timeout: Duration::from_secs(2), ..Outbound::default() })
        .start();
    namespace(&reg).await;

    let (status, _, message) = import(&reg, &format!("{}/lib/big:1", fake.host)).await;
    assert_eq!(status, "Failure", "{message}");
    assert!(message.contains("larger than 16384 bytes"), "{message}");

    let started = Instant::now();
    let (status, _, message) = import(&reg, &format!("{}/lib/hung:1", fake.host)).await;
    let took = started.elapsed();
    assert_eq!(status, "Failure", "{message}");
    assert!(message.contains("timed out"), "{message}");
    // The read time-out (or at worst four times it) ends the wait, far before the upstream would answer.
    assert!(took < Duration::from_secs(15), "the import waited {took:?}");
}
