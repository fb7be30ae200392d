//! The audit log as an operator reads it, from a real server on 127.0.0.1:0 writing to a file: one JSON line per
//! write (blob and manifest push, delete, token and role binding changes) and per refusal (401, 403) with who,
//! what, which namespace/stream and the outcome; nothing for plain reads; the file rotated at its size bound; the
//! client address taken from `X-Forwarded-For` only when the peer is a trusted proxy.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use names::Digest;
use registry::config::limits::Limits;
use registry::testing::TestRegistry;
use reqwest::{Client, Method, RequestBuilder, StatusCode};
use serde_json::{json, Value};

const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
const ADMIN: &str = "admin-secret-for-audit-tests";
const APIS: &str = "/apis/tributary.dev/v1";

struct T {
    reg: TestRegistry,
    http: Client,
    audit: PathBuf,
    _dir: tempfile::TempDir,
}

impl T {
    fn start(limits: Limits, max_bytes: u64, max_files: usize) -> T {
        let dir = tempfile::tempdir().unwrap();
        let audit = dir.path().join("logs").join("audit.log");
        let reg = TestRegistry::builder()
            .with_admin_token(ADMIN)
            .with_limits(limits)
            .with_audit_file(&audit, max_bytes, max_files)
            .start();
        T { reg, http: Client::new(), audit, _dir: dir }
    }

    fn req(&self, method: Method, path: &str, token: Option<&str>) -> RequestBuilder {
        let r = self.http.request(method, format!("{}{path}", self.reg.url()));
        match token {
            Some(t) => r.basic_auth("anyone", Some(t)),
            None => r,
        }
    }

    async fn admin(&self, method: Method, path: &str, body: Value) -> Value {
        let r = self.req(method, &format!("{APIS}{path}"), Some(ADMIN)).json(&body).send().await.unwrap();
        assert!(r.status().is_success(), "{path}: {}", r.status());
        r.json().await.unwrap()
    }

    /// Every audit line written so far, once the line `until` picks has appeared (the writer is asynchronous).
    async fn lines_until(&self, what: &str, until: impl Fn(&Value) -> bool) -> Vec<Value> {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let lines = read_lines(&self.audit);
            if lines.iter().any(&until) {
                return lines;
            }
            assert!(Instant::now() < deadline, "no audit line for {what} in {lines:#?}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

fn read_lines(path: &Path) -> Vec<Value> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not one JSON object per line: {e}: {l}")))
        .collect()
}

fn find<'a>(lines: &'a [Value], action: &str, status: u16) -> &'a Value {
    lines
        .iter()
        .find(|l| l["action"] == action && l["status"] == status)
        .unwrap_or_else(|| panic!("no {action} / {status} in {lines:#?}"))
}

#[tokio::test]
async fn pushes_deletes_and_refusals_are_audited() {
    let t = T::start(Limits::default(), 100 << 20, 2);
    t.admin(Method::POST, "/namespaces", json!({"name": "team"})).await;
    t.admin(Method::POST, "/users", json!({"name": "bob"})).await;
    let created = t.admin(Method::POST, "/tokens", json!({"owner": {"kind": "User", "name": "bob"}})).await;
    let bob = created["token"].as_str().unwrap().to_owned();
    let bob_token_id = created["id"].as_str().unwrap().to_owned();
    t.admin(
        Method::POST,
        "/namespaces/team/rolebindings/add",
        json!({"role": "view", "subject": {"kind": "User", "name": "bob"}}),
    )
    .await;

    // The administrator pushes a layer and a manifest, reads them back, deletes the manifest.
    let layer = b"audited layer".to_vec();
    let config = br#"{"architecture":"amd64","os":"linux"}"#.to_vec();
    for blob in [&config, &layer] {
        let d = Digest::sha256_of(blob);
        let r = t
            .req(Method::POST, &format!("/v2/team/app/blobs/uploads/?digest={d}"), Some(ADMIN))
            .body(blob.clone())
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::CREATED);
    }
    let manifest = json!({"schemaVersion":2,"mediaType":OCI_MANIFEST,
        "config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":Digest::sha256_of(&config),"size":config.len()},
        "layers":[{"mediaType":"application/vnd.oci.image.layer.v1.tar","digest":Digest::sha256_of(&layer),"size":layer.len()}]})
    .to_string();
    let manifest_digest = Digest::sha256_of(manifest.as_bytes()).to_string();
    let r = t
        .req(Method::PUT, "/v2/team/app/manifests/v1", Some(ADMIN))
        .header("Content-Type", OCI_MANIFEST)
        .body(manifest)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::CREATED);
    let r = t.req(Method::GET, "/v2/team/app/manifests/v1", Some(ADMIN)).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let r =
        t.req(Method::DELETE, &format!("/v2/team/app/manifests/{manifest_digest}"), Some(ADMIN)).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::ACCEPTED);

    // Stream API writes (what `tributary tag`, `kubectl` and `oc` send) and the read-only switch.
    let streams = "/apis/image.openshift.io/v1/namespaces/team/imagestreams";
    let r = t
        .req(Method::POST, streams, Some(ADMIN))
        .json(&json!({"apiVersion": "image.openshift.io/v1", "kind": "ImageStream", "metadata": {"name": "other"}}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::CREATED);
    let r = t.req(Method::DELETE, &format!("{streams}/other"), Some(ADMIN)).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    t.admin(Method::PUT, "/readonly", json!({"readOnly": true})).await;
    t.admin(Method::PUT, "/readonly", json!({"readOnly": false})).await;

    // Refusals: nobody (401), bob who may only view (403 on a push, and on the stream API).
    let d = Digest::sha256_of(b"x");
    let r =
        t.req(Method::POST, &format!("/v2/team/app/blobs/uploads/?digest={d}"), None).body("x").send().await.unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    let r = t.req(Method::DELETE, "/v2/team/app/manifests/v1", Some(&bob)).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    let r = t
        .req(Method::DELETE, "/apis/image.openshift.io/v1/namespaces/team/imagestreamtags/app:v1", Some(&bob))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::FORBIDDEN);

    let lines = t.lines_until("the stream API refusal", |l| l["action"] == "delete imagestreamtags").await;
    for line in &lines {
        println!("{line}");
        assert!(line["time"].as_str().is_some_and(|s| s.ends_with('Z')), "{line}");
        assert_eq!(line["client"], "127.0.0.1", "{line}");
    }
    let admin_who = |l: &Value| {
        assert_eq!(l["who"]["kind"], "user", "{l}");
        assert_eq!(l["who"]["name"], "admin", "{l}");
        assert_eq!(l["who"]["via"], "token", "{l}");
        assert!(l["who"]["token"].is_string(), "{l}");
    };

    let layer_push = lines
        .iter()
        .find(|l| l["action"] == "push blob" && l["digest"] == Digest::sha256_of(&layer).to_string())
        .unwrap_or_else(|| panic!("no layer push in {lines:#?}"));
    admin_who(layer_push);
    assert_eq!(
        (&layer_push["namespace"], &layer_push["stream"], &layer_push["status"], &layer_push["outcome"]),
        (&json!("team"), &json!("app"), &json!(201), &json!("ok"))
    );

    let push = find(&lines, "push manifest", 201);
    admin_who(push);
    assert_eq!((&push["namespace"], &push["stream"], &push["tag"]), (&json!("team"), &json!("app"), &json!("v1")));
    assert_eq!(push["digest"], manifest_digest);
    assert_eq!((&push["method"], &push["outcome"]), (&json!("PUT"), &json!("ok")));

    let delete = find(&lines, "delete manifest", 202);
    admin_who(delete);
    assert_eq!(
        (&delete["stream"], &delete["digest"], &delete["outcome"]),
        (&json!("app"), &json!(manifest_digest), &json!("ok"))
    );

    let unauthenticated = find(&lines, "push blob", 401);
    assert_eq!(unauthenticated["who"], json!({"kind": "anonymous"}));
    assert_eq!(
        (&unauthenticated["namespace"], &unauthenticated["outcome"], &unauthenticated["reason"]),
        (&json!("team"), &json!("refused"), &json!("UNAUTHORIZED"))
    );

    let denied = find(&lines, "delete manifest", 403);
    assert_eq!(denied["who"], json!({"kind": "user", "name": "bob", "token": bob_token_id, "via": "token"}));
    assert_eq!(
        (&denied["namespace"], &denied["stream"], &denied["tag"], &denied["outcome"], &denied["reason"]),
        (&json!("team"), &json!("app"), &json!("v1"), &json!("refused"), &json!("DENIED"))
    );

    let api_denied = find(&lines, "delete imagestreamtags", 403);
    assert_eq!(api_denied["who"]["name"], "bob");
    assert_eq!(
        (&api_denied["namespace"], &api_denied["stream"], &api_denied["tag"]),
        (&json!("team"), &json!("app"), &json!("v1"))
    );
    assert_eq!((&api_denied["outcome"], &api_denied["reason"]), (&json!("refused"), &json!("Forbidden")));

    // The access-control changes, with what only their handlers know.
    let token = find(&lines, "create token", 201);
    assert_eq!((&token["token"], &token["owner"]), (&json!(bob_token_id), &json!("User/bob")), "{token}");
    let binding = find(&lines, "add rolebinding", 200);
    assert_eq!((&binding["namespace"], &binding["role"]), (&json!("team"), &json!("view")), "{binding}");
    find(&lines, "create namespace", 201);
    let created = find(&lines, "create imagestreams", 201);
    assert_eq!((&created["namespace"], &created["stream"]), (&json!("team"), &json!("other")), "{created}");
    let deleted = find(&lines, "delete imagestreams", 200);
    assert_eq!((&deleted["namespace"], &deleted["stream"]), (&json!("team"), &json!("other")), "{deleted}");
    let switches: Vec<&Value> = lines.iter().filter(|l| l["action"] == "set read-only").collect();
    assert_eq!(switches.len(), 2, "{switches:?}");
    assert_eq!((&switches[0]["readOnly"], &switches[1]["readOnly"]), (&json!(true), &json!(false)));

    // Reads are not audited.
    assert!(!lines.iter().any(|l| l["action"] == "pull manifest"), "{lines:#?}");
    assert!(!lines.iter().any(|l| l["method"] == "GET" && l["outcome"] == "ok"), "{lines:#?}");
}

#[tokio::test]
async fn the_audit_file_rotates_at_its_size_bound() {
    const BOUND: u64 = 4096;
    let t = T::start(Limits::default(), BOUND, 2);
    for i in 0..120 {
        let r = t.req(Method::GET, &format!("/v2/team/app{i}/tags/list"), None).send().await.unwrap();
        assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    }
    let dir = t.audit.parent().unwrap().to_path_buf();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let newest = read_lines(&t.audit);
        if newest.iter().any(|l| l["stream"] == "app119") {
            break;
        }
        assert!(Instant::now() < deadline, "the last refusal never reached the file");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let mut names: Vec<String> =
        std::fs::read_dir(&dir).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
    names.sort();
    assert_eq!(names, ["audit.log", "audit.log.1", "audit.log.2"], "two rotated files kept, older ones deleted");
    for name in &names {
        let text = std::fs::read_to_string(dir.join(name)).unwrap();
        let longest = text.lines().map(str::len).max().unwrap_or(0) as u64;
        // Rotated once past the bound: at most the bound plus one line.
        assert!(text.len() as u64 <= BOUND + longest + 1, "{name}: {} bytes", text.len());
        for line in text.lines() {
            let v: Value = serde_json::from_str(line).unwrap();
            assert_eq!(v["outcome"], "refused");
        }
    }
    let rotated = read_lines(&dir.join("audit.log.1"));
    assert!(rotated.len() > 5, "a rotated file holds whole lines: {}", rotated.len());
}

#[tokio::test]
async fn forwarded_addresses_count_only_from_trusted_proxies() {
    for (trusted, want) in [(vec![], "127.0.0.1"), (vec!["127.0.0.0/8".to_string()], "203.0.113.7")] {
        let limits = Limits {
            trusted_proxies: trusted.iter().map(|p| registry::config::limits::parse_proxy(p).unwrap()).collect(),
            ..Limits::default()
        };
        let t = T::start(limits, 100 << 20, 1);
        let r = t
            .req(Method::GET, "/v2/team/app/tags/list", None)
            .header("X-Forwarded-For", "198.51.100.1, 203.0.113.7")
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
        let r = t
            .req(Method::GET, "/v2/team/other/tags/list", None)
            .header("Forwarded", "for=\"203.0.113.7:5555\";proto=http")
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
        let lines = t.lines_until("two refusals", |l| l["stream"] == "other").await;
        assert_eq!(lines.len(), 2, "{lines:#?}");
        for line in lines {
            assert_eq!(line["client"], want, "trusted {trusted:?}: {line}");
        }
    }
}
