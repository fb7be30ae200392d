//! The web console in a real browser: Debian's chromium driven by playwright-core (`console/tests/`), against a
//! real registry filled over HTTP: sign in, namespaces, a stream with 10,000 tags within a time box, a tag's
//! timeline updated live by a push, a roll back that `skopeo inspect` then agrees with, a viewer's refused action,
//! and a viewer seeing nothing of another namespace. Screenshots land in `target/console-screenshots/`. Skipped
//! without node, chromium, skopeo or `npm ci` in `console/tests`, unless `TRIBUTARY_E2E_REQUIRED=1`.

use std::path::{Path, PathBuf};
use std::process::Command;

use futures::StreamExt;
use names::Digest;
use registry::testing::TestRegistry;
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

const ADMIN: &str = "console-admin-token";
const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
const BIG_TAGS: usize = 10_000;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap().to_path_buf()
}

/// Whether everything the test drives is here; when not, fails under `TRIBUTARY_E2E_REQUIRED=1`, else skips.
fn tools_present() -> bool {
    let mut missing = Vec::new();
    for (tool, arg) in [("node", "--version"), ("/usr/bin/chromium", "--version"), ("skopeo", "--version")] {
        if !Command::new(tool).arg(arg).output().is_ok_and(|o| o.status.success()) {
            missing.push(tool.to_owned());
        }
    }
    if !root().join("console/tests/node_modules/playwright-core").is_dir() {
        missing.push("playwright-core (npm ci in console/tests)".into());
    }
    if missing.is_empty() {
        return true;
    }
    if std::env::var("TRIBUTARY_E2E_REQUIRED").is_ok_and(|v| v == "1") {
        panic!("missing {missing:?} and TRIBUTARY_E2E_REQUIRED=1 (scripts/install-deps.sh installs them)");
    }
    eprintln!("skipping the console test: missing {missing:?}");
    false
}

struct Client {
    http: reqwest::Client,
    base: String,
}

impl Client {
    async fn call(&self, method: Method, path: &str, token: &str, body: Option<Value>) -> Value {
        let mut r = self.http.request(method.clone(), format!("{}{path}", self.base)).bearer_auth(token);
        if let Some(b) = body {
            r = r.json(&b);
        }
        let resp = r.send().await.unwrap();
        let status = resp.status();
        let text = resp.text().await.unwrap();
        assert!(status.is_success(), "{method} {path}: {status} {text}");
        serde_json::from_str(&text).unwrap_or(Value::Null)
    }

    async fn blob(&self, repo: &str, bytes: &[u8]) -> (Digest, usize) {
        let d = Digest::sha256_of(bytes);
        let r = self
            .http
            .post(format!("{}/v2/{repo}/blobs/uploads/?digest={d}", self.base))
            .bearer_auth(ADMIN)
            .body(bytes.to_vec())
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::CREATED);
        (d, bytes.len())
    }

    /// Pushes an image with a full config and two layers of different sizes; returns its digest.
    async fn push(&self, repo: &str, tag: &str, seed: &str) -> Digest {
        let config = json!({"architecture": "amd64", "os": "linux", "created": "2024-05-01T10:00:00Z",
            "config": {"Entrypoint": ["/entry"], "Cmd": ["serve", seed], "User": "1001", "WorkingDir": "/app",
                       "ExposedPorts": {"8080/tcp": {}}, "Env": ["MODE=test"], "Labels": {"org.example.seed": seed}}})
        .to_string();
        let c = self.blob(repo, config.as_bytes()).await;
        let small = self.blob(repo, format!("small {seed}").as_bytes()).await;
        let large = self.blob(repo, format!("large {seed} ").repeat(4000).as_bytes()).await;
        let layer = |(d, n): &(Digest, usize)| json!({"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": d, "size": n});
        let m = json!({"schemaVersion": 2, "mediaType": OCI_MANIFEST,
            "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": c.0, "size": c.1},
            "layers": [layer(&large), layer(&small)]})
        .to_string();
        let r = self
            .http
            .put(format!("{}/v2/{repo}/manifests/{tag}", self.base))
            .bearer_auth(ADMIN)
            .header("Content-Type", OCI_MANIFEST)
            .body(m.clone())
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::CREATED);
        Digest::sha256_of(m.as_bytes())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_console_in_chromium() {
    if !tools_present() {
        return;
    }
    let reg = TestRegistry::builder().with_admin_token(ADMIN).start();
    let c = Client { http: reqwest::Client::new(), base: reg.url() };
    const ADM: &str = "/apis/tributary.dev/v1";
    for ns in ["team", "secret"] {
        c.call(Method::POST, &format!("{ADM}/namespaces"), ADMIN, Some(json!({"name": ns}))).await;
    }
    c.call(Method::POST, &format!("{ADM}/users"), ADMIN, Some(json!({"name": "viewer"}))).await;
    let viewer = c
        .call(Method::POST, &format!("{ADM}/tokens"), ADMIN, Some(json!({"owner": {"kind": "User", "name": "viewer"}})))
        .await["token"]
        .as_str()
        .unwrap()
        .to_owned();
    c.call(
        Method::POST,
        &format!("{ADM}/namespaces/team/rolebindings/add"),
        ADMIN,
        Some(json!({"role": "view", "subject": {"kind": "User", "name": "viewer"}})),
    )
    .await;

    let a = c.push("team/app", "v1", "a").await;
    let b = c.push("team/app", "v1", "b").await;
    c.push("secret/hidden", "v1", "hidden").await;
    // 10,000 tags pushed as a CI would push them: the same manifest under each tag, sixteen requests at a time.
    let big = c.push("team/big", "tag-00000", "big").await;
    let manifest = c
        .http
        .get(format!("{}/v2/team/big/manifests/{big}", c.base))
        .bearer_auth(ADMIN)
        .header("Accept", OCI_MANIFEST)
        .send()
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    let started = std::time::Instant::now();
    let pushes = futures::stream::iter(1..BIG_TAGS).map(|i| {
        let req = c
            .http
            .put(format!("{}/v2/team/big/manifests/tag-{i:05}", c.base))
            .bearer_auth(ADMIN)
            .header("Content-Type", OCI_MANIFEST)
            .body(manifest.clone());
        async move { req.send().await.map(|r| r.status()) }
    });
    let statuses: Vec<_> = pushes.buffer_unordered(16).collect().await;
    assert!(statuses.iter().all(|s| matches!(s, Ok(StatusCode::CREATED))), "every tag pushed");
    eprintln!("pushed {} tags in {:?}", BIG_TAGS - 1, started.elapsed());

    let target = std::env::var_os("CARGO_TARGET_DIR").map(PathBuf::from).unwrap_or_else(|| root().join("target"));
    let shots = target.join("console-screenshots");
    let results = tempfile::NamedTempFile::new().unwrap();
    let out = Command::new("node")
        .arg("console.test.mjs")
        .current_dir(root().join("console/tests"))
        .env("REGISTRY_URL", reg.url())
        .env("ADMIN_TOKEN", ADMIN)
        .env("VIEWER_TOKEN", &viewer)
        .env("SHOTS", &shots)
        .env("RESULTS", results.path())
        .env("DIGEST_A", a.to_string())
        .env("DIGEST_B", b.to_string())
        .output()
        .expect("run node");
    println!("{}", String::from_utf8_lossy(&out.stdout));
    eprintln!("{}", String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "the browser test failed (see above); screenshots in {}", shots.display());
    let results: Value = serde_json::from_slice(&std::fs::read(results.path()).unwrap()).unwrap();
    println!("timings: namespace {} ms, 10,000-tag stream {} ms", results["namespaceMs"], results["bigStreamMs"]);

    // The roll back made in the browser is what a registry client now gets.
    assert_eq!(results["rolledBackTo"], a.to_string());
    let host = reg.url().trim_start_matches("http://").to_owned();
    let inspect = Command::new("skopeo")
        .args(["inspect", "--tls-verify=false", "--creds", &format!("admin:{ADMIN}")])
        .arg(format!("docker://{host}/team/app:v1"))
        .output()
        .expect("run skopeo");
    assert!(inspect.status.success(), "skopeo inspect: {}", String::from_utf8_lossy(&inspect.stderr));
    let inspected: Value = serde_json::from_slice(&inspect.stdout).unwrap();
    assert_eq!(inspected["Digest"], a.to_string(), "skopeo sees the rolled-back image");
    for shot in ["05-tag-timeline", "08-image", "04-stream-10000-tags"] {
        assert!(shots.join(format!("{shot}.png")).is_file(), "{shot} saved");
    }
}
