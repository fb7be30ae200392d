//! Import from external registries and pull-through, against real upstreams started here: a second Tributary
//! (with and without access control) and a scripted fake registry for what real ones will not do on demand
//! (a slow blob, wrong bytes, 429). Covers the `imagestreamimports` API (Legacy and PreserveOriginal), tag
//! events naming the source by digest, spec tags imported by the controller, scheduled re-import, failures as
//! tag conditions that keep the previous image, pull secrets, the insecure and `allowedRegistriesForImport`
//! refusals, one upstream fetch under concurrent pulls, digest verification before the last byte, 429 kept, and
//! serving from the local copy once the upstream is gone.

use std::sync::Arc;
use std::time::{Duration, Instant};

use names::Digest;
use registry::testing::TestRegistry;
use reqwest::{Client, Method, StatusCode};
use serde_json::{json, Value};

mod common;

use common::{Answer, Fake, OCI_MANIFEST};

const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
const API: &str = "/apis/image.openshift.io/v1";
const ADMIN: &str = "admin-token-for-import-tests-0123456789abcdef";

/// Talks to one registry, with its admin token when it has one.
struct Http {
    base: String,
    token: Option<String>,
    http: Client,
}

impl Http {
    fn of(reg: &TestRegistry) -> Http {
        Http { base: reg.url(), token: reg.admin_token().map(str::to_owned), http: Client::new() }
    }

    fn req(&self, method: Method, path: &str) -> reqwest::RequestBuilder {
        let r = self.http.request(method, format!("{}{path}", self.base));
        match &self.token {
            Some(t) => r.bearer_auth(t),
            None => r,
        }
    }

    async fn json(&self, method: Method, path: &str, body: Option<Value>) -> (StatusCode, Value) {
        let mut r = self.req(method, path);
        if let Some(b) = body {
            r = r.json(&b);
        }
        let resp = r.send().await.unwrap();
        let status = resp.status();
        (status, resp.json().await.unwrap_or(Value::Null))
    }

    async fn namespace(&self, ns: &str) {
        let (s, v) = self.json(Method::POST, "/apis/tributary.dev/v1/namespaces", Some(json!({"name": ns}))).await;
        assert!(s.is_success() || s == StatusCode::CONFLICT, "{s} {v}");
    }

    async fn push_blob(&self, repo: &str, bytes: &[u8]) -> Digest {
        let d = Digest::sha256_of(bytes);
        let r = self.req(Method::POST, &format!("/v2/{repo}/blobs/uploads/?digest={d}")).body(bytes.to_vec());
        assert_eq!(r.send().await.unwrap().status(), StatusCode::CREATED);
        d
    }

    async fn put_manifest(&self, repo: &str, reference: &str, media_type: &str, body: &[u8]) -> Digest {
        let r = self
            .req(Method::PUT, &format!("/v2/{repo}/manifests/{reference}"))
            .header("Content-Type", media_type)
            .body(body.to_vec());
        let resp = r.send().await.unwrap();
        assert_eq!(resp.status(), StatusCode::CREATED, "{}", resp.text().await.unwrap_or_default());
        Digest::sha256_of(body)
    }

    /// Pushes an image (a config and the given layers) under `tag`; returns its digest.
    async fn push_image(&self, repo: &str, tag: &str, arch: &str, layers: &[&[u8]]) -> Digest {
        let config =
            json!({"architecture": arch, "os": "linux", "config": {"Cmd": ["/bin/app"], "WorkingDir": "/srv"}})
                .to_string();
        let c = self.push_blob(repo, config.as_bytes()).await;
        let mut descriptors = Vec::new();
        for l in layers {
            let d = self.push_blob(repo, l).await;
            descriptors
                .push(json!({"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": d, "size": l.len()}));
        }
        let m = json!({"schemaVersion": 2, "mediaType": OCI_MANIFEST,
            "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": c, "size": config.len()},
            "layers": descriptors})
        .to_string();
        self.put_manifest(repo, tag, OCI_MANIFEST, m.as_bytes()).await
    }

    async fn get_bytes(&self, path: &str) -> (StatusCode, Vec<u8>) {
        let resp = self.req(Method::GET, path).header("Accept", format!("{OCI_MANIFEST}, {OCI_INDEX}")).send().await;
        let resp = resp.unwrap();
        let status = resp.status();
        (status, resp.bytes().await.map(|b| b.to_vec()).unwrap_or_default())
    }

    async fn import(&self, ns: &str, stream: &str, tag: &str, from: &str, policy: Value) -> Value {
        let isi = json!({"metadata": {"name": stream}, "spec": {"import": true, "images": [
            {"from": {"kind": "DockerImage", "name": from}, "to": {"name": tag}, "importPolicy": policy}]}});
        let (s, v) = self.json(Method::POST, &format!("{API}/namespaces/{ns}/imagestreamimports"), Some(isi)).await;
        assert_eq!(s, StatusCode::CREATED, "{v}");
        v
    }

    async fn stream(&self, ns: &str, stream: &str) -> Value {
        let (s, v) = self.json(Method::GET, &format!("{API}/namespaces/{ns}/imagestreams/{stream}"), None).await;
        assert_eq!(s, StatusCode::OK, "{v}");
        v
    }

    async fn tag_status(&self, ns: &str, stream: &str, tag: &str) -> Value {
        let is = self.stream(ns, stream).await;
        is["status"]["tags"].as_array().into_iter().flatten().find(|t| t["tag"] == tag).cloned().unwrap_or(Value::Null)
    }
}

fn first_status(isi: &Value) -> (String, String, String) {
    let s = &isi["status"]["images"][0]["status"];
    let str_of = |v: &Value| v.as_str().unwrap_or_default().to_owned();
    (str_of(&s["status"]), str_of(&s["reason"]), str_of(&s["message"]))
}

async fn eventually<F, Fut>(what: &str, timeout: Duration, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + timeout;
    while !check().await {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

// ---------------------------------------------------------------------------------------------------------------
// Tests

#[tokio::test]
async fn import_from_another_tributary_then_pull_through_and_survive_its_loss() {
    let upstream = TestRegistry::start();
    let up = Http::of(&upstream);
    let layers: [&[u8]; 2] = [b"first layer bytes", b"second layer bytes"];
    let digest = up.push_image("lib/app", "1", "amd64", &layers).await;
    let tri = TestRegistry::start();
    let http = Http::of(&tri);
    http.namespace("team").await;

    // Plain http is refused unless the source is marked insecure.
    let from = format!("{}/lib/app:1", upstream.host());
    let refused = http.import("team", "app", "v1", &from, json!({})).await;
    let (status, _, message) = first_status(&refused);
    assert_eq!(status, "Failure");
    assert!(message.contains("insecure"), "the message says how to allow it: {message}");

    let isi = http.import("team", "app", "v1", &from, json!({"insecure": true})).await;
    assert_eq!(first_status(&isi).0, "Success", "{isi}");
    assert_eq!(isi["status"]["images"][0]["image"]["metadata"]["name"], digest.to_string());
    let tag = http.tag_status("team", "app", "v1").await;
    assert_eq!(tag["items"][0]["dockerImageReference"], format!("{}/lib/app@{digest}", upstream.host()));
    assert_eq!(tag["items"][0]["image"], digest.to_string());
    assert!(tag["conditions"].is_null(), "a success clears the failure: {tag}");

    // The manifest is served by tag and digest; layers come through from the upstream.
    let (s, manifest) = http.get_bytes("/v2/team/app/manifests/v1").await;
    assert_eq!((s, Digest::sha256_of(&manifest)), (StatusCode::OK, digest.clone()));
    let first = Digest::sha256_of(layers[0]);
    let head = http.req(Method::HEAD, &format!("/v2/team/app/blobs/{first}")).send().await.unwrap();
    assert_eq!(head.status(), StatusCode::OK);
    assert_eq!(head.headers()["content-length"], layers[0].len().to_string().as_str());
    let (s, body) = http.get_bytes(&format!("/v2/team/app/blobs/{first}")).await;
    assert_eq!((s, body.as_slice()), (StatusCode::OK, layers[0]));
    let (s, body) = http.get_bytes(&format!("/v2/team/app/blobs/{first}")).await;
    assert_eq!((s, body.as_slice()), (StatusCode::OK, layers[0]), "and again, locally");

    // The upstream goes away: what was pulled is still served; what was not is a clear 503.
    drop(upstream);
    let (s, body) = http.get_bytes(&format!("/v2/team/app/blobs/{first}")).await;
    assert_eq!((s, body.as_slice()), (StatusCode::OK, layers[0]));
    let (s, manifest) = http.get_bytes("/v2/team/app/manifests/v1").await;
    assert_eq!((s, Digest::sha256_of(&manifest)), (StatusCode::OK, digest));
    let second = Digest::sha256_of(layers[1]);
    let (s, v) = http.json(Method::GET, &format!("/v2/team/app/blobs/{second}"), None).await;
    assert_eq!(s, StatusCode::SERVICE_UNAVAILABLE, "{v}");
    assert_eq!(v["errors"][0]["code"], "UNAVAILABLE");
}

#[tokio::test]
async fn pull_secrets_let_import_and_pull_through_authenticate() {
    let upstream = TestRegistry::builder().with_admin_token(ADMIN).start();
    let up = Http::of(&upstream);
    up.namespace("lib").await;
    let layer: &[u8] = b"private layer";
    let digest = up.push_image("lib/private", "1", "amd64", &[layer]).await;
    let tri = TestRegistry::builder().with_admin_token("tributary-admin-token-for-import-0123456789").start();
    let http = Http::of(&tri);
    http.namespace("team").await;
    let from = format!("{}/lib/private:1", upstream.host());

    let denied = http.import("team", "app", "v1", &from, json!({"insecure": true})).await;
    let (status, reason, _) = first_status(&denied);
    assert_eq!((status.as_str(), reason.as_str()), ("Failure", "Unauthorized"), "{denied}");
    let tag = http.tag_status("team", "app", "v1").await;
    assert_eq!(tag["conditions"][0]["type"], "ImportSuccess");
    assert_eq!(tag["conditions"][0]["status"], "False");
    assert_eq!(tag["conditions"][0]["reason"], "Unauthorized");

    use base64::Engine;
    let config = json!({"auths": {upstream.host(): {"username": "anyone", "password": ADMIN}}}).to_string();
    let secret = json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "upstream"},
        "type": "kubernetes.io/dockerconfigjson",
        "data": {".dockerconfigjson": base64::engine::general_purpose::STANDARD.encode(config)}});
    let (s, v) = http.json(Method::POST, "/api/v1/namespaces/team/secrets", Some(secret.clone())).await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    let (s, _) = http.json(Method::POST, "/api/v1/namespaces/team/secrets", Some(secret)).await;
    assert_eq!(s, StatusCode::CONFLICT);
    let (s, list) = http.json(Method::GET, "/api/v1/namespaces/team/secrets", None).await;
    assert_eq!((s, list["items"][0]["metadata"]["name"].as_str()), (StatusCode::OK, Some("upstream")));
    // Without credentials nobody reads the secrets.
    let r = reqwest::get(format!("{}/api/v1/namespaces/team/secrets", tri.url())).await.unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);

    let isi = http.import("team", "app", "v1", &from, json!({"insecure": true})).await;
    assert_eq!(first_status(&isi).0, "Success", "{isi}");
    let tag = http.tag_status("team", "app", "v1").await;
    assert_eq!(tag["items"][0]["image"], digest.to_string());
    assert!(tag["conditions"].is_null(), "{tag}");
    let (s, body) = http.get_bytes(&format!("/v2/team/app/blobs/{}", Digest::sha256_of(layer))).await;
    assert_eq!((s, body.as_slice()), (StatusCode::OK, layer), "pulled through with the secret");
}

#[tokio::test]
async fn refusals_failures_and_the_previous_image() {
    let upstream = TestRegistry::start();
    let up = Http::of(&upstream);
    let good = up.push_image("lib/app", "1", "amd64", &[b"v1 layer"]).await;

    // A registry outside allowedRegistriesForImport is refused.
    let fenced = TestRegistry::builder().with_allowed_registries(&["quay.io", "*.example.com"]).start();
    let f = Http::of(&fenced);
    f.namespace("team").await;
    let isi = f.import("team", "app", "v1", &format!("{}/lib/app:1", upstream.host()), json!({"insecure": true})).await;
    let (status, reason, message) = first_status(&isi);
    assert_eq!((status.as_str(), reason.as_str()), ("Failure", "Forbidden"));
    assert!(message.contains("allowedRegistriesForImport"), "{message}");

    // The stream annotation allows insecure transport for all its tags.
    let tri = TestRegistry::start();
    let http = Http::of(&tri);
    http.namespace("team").await;
    let stream = json!({"metadata": {"name": "app", "annotations": {"openshift.io/image.insecureRepository": "true"}}});
    let (s, v) = http.json(Method::POST, &format!("{API}/namespaces/team/imagestreams"), Some(stream)).await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    let isi = http.import("team", "app", "v1", &format!("{}/lib/app:1", upstream.host()), json!({})).await;
    assert_eq!(first_status(&isi).0, "Success", "{isi}");

    // A failed import of the same tag keeps its image and says why.
    let isi = http.import("team", "app", "v1", &format!("{}/lib/app:gone", upstream.host()), json!({})).await;
    let (status, reason, message) = first_status(&isi);
    assert_eq!((status.as_str(), reason.as_str()), ("Failure", "NotFound"), "{message}");
    let tag = http.tag_status("team", "app", "v1").await;
    let items: Vec<&str> = tag["items"].as_array().unwrap().iter().map(|e| e["image"].as_str().unwrap()).collect();
    assert_eq!(items, vec![good.to_string().as_str()], "the previous image stays");
    assert_eq!(tag["conditions"][0]["reason"], "NotFound");
    assert!(tag["conditions"][0]["message"].as_str().unwrap().contains("lib/app:gone"));
    let (s, manifest) = http.get_bytes("/v2/team/app/manifests/v1").await;
    assert_eq!((s, Digest::sha256_of(&manifest)), (StatusCode::OK, good));

    // Bad requests are refused before anything is fetched.
    let bad = json!({"metadata": {"name": "app"}, "spec": {"import": true, "images": [
        {"from": {"kind": "ImageStreamTag", "name": "x:y"}, "to": {"name": "v2"}}]}});
    let (s, v) = http.json(Method::POST, &format!("{API}/namespaces/team/imagestreamimports"), Some(bad)).await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{v}");
    let bad = json!({"metadata": {"name": "app"}, "spec": {"import": true, "images": [
        {"from": {"kind": "DockerImage", "name": "http://nope/x"}}]}});
    let (s, _) = http.json(Method::POST, &format!("{API}/namespaces/team/imagestreamimports"), Some(bad)).await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY);
}

#[tokio::test]
async fn manifest_lists_legacy_and_preserve_original() {
    let upstream = TestRegistry::start();
    let up = Http::of(&upstream);
    let amd = up.push_image("lib/multi", "amd", "amd64", &[b"amd64 layer"]).await;
    let arm = up.push_image("lib/multi", "arm", "arm64", &[b"arm64 layer"]).await;
    let amd_m = up.get_bytes(&format!("/v2/lib/multi/manifests/{amd}")).await.1;
    let arm_m = up.get_bytes(&format!("/v2/lib/multi/manifests/{arm}")).await.1;
    let index = json!({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": [
        {"mediaType": OCI_MANIFEST, "digest": arm, "size": arm_m.len(), "platform": {"architecture": "arm64", "os": "linux"}},
        {"mediaType": OCI_MANIFEST, "digest": amd, "size": amd_m.len(), "platform": {"architecture": "amd64", "os": "linux"}}]})
    .to_string();
    let index_digest = up.put_manifest("lib/multi", "1", OCI_INDEX, index.as_bytes()).await;

    let tri = TestRegistry::start();
    let http = Http::of(&tri);
    http.namespace("team").await;
    let from = format!("{}/lib/multi:1", upstream.host());
    let legacy = http.import("team", "multi", "one", &from, json!({"insecure": true})).await;
    assert_eq!(first_status(&legacy).0, "Success", "{legacy}");
    assert_eq!(http.tag_status("team", "multi", "one").await["items"][0]["image"], amd.to_string(), "linux/amd64");
    let kept =
        http.import("team", "multi", "all", &from, json!({"insecure": true, "importMode": "PreserveOriginal"})).await;
    assert_eq!(first_status(&kept).0, "Success", "{kept}");
    assert_eq!(kept["status"]["images"][0]["manifests"].as_array().map(Vec::len), Some(2));
    assert_eq!(http.tag_status("team", "multi", "all").await["items"][0]["image"], index_digest.to_string());
    let (s, body) = http.get_bytes("/v2/team/multi/manifests/all").await;
    assert_eq!((s, Digest::sha256_of(&body)), (StatusCode::OK, index_digest));
    for (child, layer) in [(arm, b"arm64 layer" as &[u8]), (amd, b"amd64 layer")] {
        let (s, body) = http.get_bytes(&format!("/v2/team/multi/manifests/{child}")).await;
        assert_eq!((s, Digest::sha256_of(&body)), (StatusCode::OK, child.clone()));
        let (s, body) = http.get_bytes(&format!("/v2/team/multi/blobs/{}", Digest::sha256_of(layer))).await;
        assert_eq!((s, body.as_slice()), (StatusCode::OK, layer));
    }
}

#[tokio::test]
async fn spec_tags_import_soon_and_scheduled_tags_follow_the_upstream() {
    let upstream = TestRegistry::start();
    let up = Http::of(&upstream);
    let first = up.push_image("lib/app", "1", "amd64", &[b"one"]).await;
    let tri = TestRegistry::builder().with_scheduled_import_interval(Duration::from_secs(5)).start();
    let http = Http::of(&tri);
    http.namespace("team").await;
    let from = format!("{}/lib/app:1", upstream.host());
    let stream = json!({"metadata": {"name": "app"}, "spec": {"tags": [
        {"name": "latest", "from": {"kind": "DockerImage", "name": from},
         "importPolicy": {"insecure": true, "scheduled": true}},
        {"name": "pinned", "from": {"kind": "DockerImage", "name": from}, "importPolicy": {"insecure": true}}]}});
    let (s, v) = http.json(Method::POST, &format!("{API}/namespaces/team/imagestreams"), Some(stream)).await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    eventually("the spec tags' first import", Duration::from_secs(10), || async {
        http.tag_status("team", "app", "latest").await["items"][0]["image"] == first.to_string()
            && http.tag_status("team", "app", "pinned").await["items"][0]["image"] == first.to_string()
    })
    .await;
    // The upstream tag moves: the scheduled tag follows within an interval, the other does not.
    let second = up.push_image("lib/app", "1", "amd64", &[b"two"]).await;
    eventually("the scheduled re-import", Duration::from_secs(20), || async {
        http.tag_status("team", "app", "latest").await["items"][0]["image"] == second.to_string()
    })
    .await;
    let latest = http.tag_status("team", "app", "latest").await;
    let history: Vec<&str> = latest["items"].as_array().unwrap().iter().map(|e| e["image"].as_str().unwrap()).collect();
    assert_eq!(history, vec![second.to_string().as_str(), first.to_string().as_str()]);
    assert_eq!(http.tag_status("team", "app", "pinned").await["items"][0]["image"], first.to_string());
    // An unchanged upstream adds nothing.
    tokio::time::sleep(Duration::from_secs(7)).await;
    let again = http.tag_status("team", "app", "latest").await;
    assert_eq!(again["items"].as_array().map(Vec::len), Some(2), "{again}");
}

#[tokio::test]
async fn one_upstream_fetch_for_many_clients_and_only_verified_bytes() {
    let fake = Fake::start();
    let layer: Vec<u8> = (0..4 * 1024 * 1024u32).map(|i| (i % 251) as u8).collect();
    let layer_digest = Digest::sha256_of(&layer);
    fake.image("lib/slow", "1", layer.clone(), &layer_digest, Duration::from_millis(20));
    let lying: Vec<u8> = vec![7u8; 1024 * 1024];
    let claimed = Digest::sha256_of(b"what the manifest claims");
    fake.image("lib/liar", "1", lying, &claimed, Duration::from_millis(5));
    let busy_layer = Digest::sha256_of(b"busy");
    fake.image("lib/busy", "1", b"busy".to_vec(), &busy_layer, Duration::ZERO);
    fake.route(&format!("/v2/lib/busy/blobs/{busy_layer}"), Answer::Error { status: 429, code: "TOOMANYREQUESTS" });

    let tri = TestRegistry::start();
    let http = Arc::new(Http::of(&tri));
    http.namespace("team").await;
    for (stream, repo) in [("slow", "lib/slow"), ("liar", "lib/liar"), ("busy", "lib/busy")] {
        let isi =
            http.import("team", stream, "v1", &format!("{}/{repo}:1", fake.host), json!({"insecure": true})).await;
        assert_eq!(first_status(&isi).0, "Success", "{isi}");
    }

    // Eight clients at once: one upstream fetch, every client gets the whole verified blob.
    let path = format!("/v2/team/slow/blobs/{layer_digest}");
    let pulls: Vec<_> = (0..8)
        .map(|_| {
            let (http, path) = (http.clone(), path.clone());
            tokio::spawn(async move { http.get_bytes(&path).await })
        })
        .collect();
    for p in pulls {
        let (s, body) = p.await.unwrap();
        assert_eq!(s, StatusCode::OK);
        assert_eq!(Digest::sha256_of(&body), layer_digest);
    }
    let upstream_path = format!("/v2/lib/slow/blobs/{layer_digest}");
    assert_eq!(fake.hits(&upstream_path), 1, "one upstream fetch for eight concurrent pulls");
    let (s, body) = http.get_bytes(&path).await;
    assert_eq!((s, Digest::sha256_of(&body)), (StatusCode::OK, layer_digest.clone()));
    // A range read of the stored blob.
    let r = http.req(Method::GET, &path).header("Range", "bytes=10-19").send().await.unwrap();
    assert_eq!(r.status(), StatusCode::PARTIAL_CONTENT);
    assert_eq!(r.bytes().await.unwrap().as_ref(), &layer[10..20]);
    assert_eq!(fake.hits(&upstream_path), 1, "later reads are local");

    // Bytes that do not match the digest never make a whole body, and are not kept.
    let liar = format!("/v2/team/liar/blobs/{claimed}");
    let r = http.req(Method::GET, &liar).send().await.unwrap();
    let got = r.bytes().await;
    assert!(got.as_ref().map(|b| b.len() < 1024 * 1024).unwrap_or(true), "the body is cut short");
    let r = http.req(Method::GET, &liar).send().await.unwrap();
    let status = r.status();
    let got = r.bytes().await;
    assert!(status != StatusCode::OK || got.is_err(), "still not served whole");
    assert_eq!(fake.hits(&format!("/v2/lib/liar/blobs/{claimed}")), 2, "nothing was kept");

    // An upstream 429 stays a 429.
    let (s, v) = http.json(Method::GET, &format!("/v2/team/busy/blobs/{busy_layer}"), None).await;
    assert_eq!(s, StatusCode::TOO_MANY_REQUESTS, "{v}");
    assert_eq!(v["errors"][0]["code"], "TOOMANYREQUESTS");
}

#[tokio::test]
async fn a_stream_with_a_docker_image_repository_imports_its_tags() {
    let upstream = TestRegistry::start();
    let up = Http::of(&upstream);
    let one = up.push_image("lib/repo", "1.0", "amd64", &[b"one"]).await;
    let two = up.push_image("lib/repo", "2.0", "amd64", &[b"two"]).await;
    let tri = TestRegistry::start();
    let http = Http::of(&tri);
    http.namespace("team").await;
    let stream = json!({"metadata": {"name": "repo", "annotations": {"openshift.io/image.insecureRepository": "true"}},
        "spec": {"dockerImageRepository": format!("{}/lib/repo", upstream.host())}});
    let (s, v) = http.json(Method::POST, &format!("{API}/namespaces/team/imagestreams"), Some(stream)).await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    eventually("the repository's tags", Duration::from_secs(10), || async {
        http.tag_status("team", "repo", "1.0").await["items"][0]["image"] == one.to_string()
            && http.tag_status("team", "repo", "2.0").await["items"][0]["image"] == two.to_string()
    })
    .await;
    let is = http.stream("team", "repo").await;
    assert!(is["metadata"]["annotations"]["openshift.io/image.dockerRepositoryCheck"].is_string(), "{is}");
    let (s, body) = http.get_bytes("/v2/team/repo/manifests/2.0").await;
    assert_eq!((s, Digest::sha256_of(&body)), (StatusCode::OK, two));
}

#[tokio::test]
async fn a_reference_tag_with_local_policy_is_pulled_through() {
    let upstream = TestRegistry::start();
    let up = Http::of(&upstream);
    let layer: &[u8] = b"referenced layer";
    let digest = up.push_image("lib/app", "1", "amd64", &[layer]).await;
    let tri = TestRegistry::start();
    let http = Http::of(&tri);
    http.namespace("team").await;
    let stream = json!({"metadata": {"name": "app", "annotations": {"openshift.io/image.insecureRepository": "true"}},
        "spec": {"tags": [{"name": "ref", "reference": true, "referencePolicy": {"type": "Local"},
            "from": {"kind": "DockerImage", "name": format!("{}/lib/app@{digest}", upstream.host())}}]}});
    let (s, v) = http.json(Method::POST, &format!("{API}/namespaces/team/imagestreams"), Some(stream)).await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    // Nothing was imported: the manifest and then the layer come through on the first pull.
    let (s, manifest) = http.get_bytes("/v2/team/app/manifests/ref").await;
    assert_eq!((s, Digest::sha256_of(&manifest)), (StatusCode::OK, digest.clone()));
    let layer_path = format!("/v2/team/app/blobs/{}", Digest::sha256_of(layer));
    let (s, body) = http.get_bytes(&layer_path).await;
    assert_eq!((s, body.as_slice()), (StatusCode::OK, layer));
    drop(upstream);
    let (s, manifest) = http.get_bytes(&format!("/v2/team/app/manifests/{digest}")).await;
    assert_eq!((s, Digest::sha256_of(&manifest)), (StatusCode::OK, digest));
    let (s, body) = http.get_bytes(&layer_path).await;
    assert_eq!((s, body.as_slice()), (StatusCode::OK, layer), "kept locally");
    let (s, v) = http.json(Method::GET, "/v2/team/app/manifests/missing", None).await;
    assert_eq!((s, v["errors"][0]["code"].as_str()), (StatusCode::NOT_FOUND, Some("MANIFEST_UNKNOWN")));
}

#[tokio::test]
async fn a_failed_import_shows_on_a_watch() {
    let tri = TestRegistry::start();
    let http = Http::of(&tri);
    http.namespace("team").await;
    let (s, _) = http
        .json(Method::POST, &format!("{API}/namespaces/team/imagestreams"), Some(json!({"metadata": {"name": "app"}})))
        .await;
    assert_eq!(s, StatusCode::CREATED);
    let rv = http.stream("team", "app").await["metadata"]["resourceVersion"].as_str().unwrap().to_owned();
    let mut watch = http
        .req(
            Method::GET,
            &format!("{API}/namespaces/team/imagestreams?watch=true&resourceVersion={rv}&timeoutSeconds=10"),
        )
        .send()
        .await
        .unwrap();
    // Nothing listens on port 9 of the loopback: the import fails at once.
    let isi = http.import("team", "app", "v1", "127.0.0.1:9/lib/none:1", json!({"insecure": true})).await;
    assert_eq!(first_status(&isi).0, "Failure");
    let mut seen = String::new();
    let deadline = Instant::now() + Duration::from_secs(10);
    while !seen.contains("ImportSuccess") && Instant::now() < deadline {
        match tokio::time::timeout(Duration::from_secs(10), watch.chunk()).await {
            Ok(Ok(Some(c))) => seen.push_str(&String::from_utf8_lossy(&c)),
            _ => break,
        }
    }
    let event: Value = seen
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .find(|e| e.to_string().contains("ImportSuccess"))
        .unwrap_or_else(|| panic!("no watch event with the failure: {seen}"));
    assert_eq!(event["type"], "MODIFIED");
    let tags = event["object"]["status"]["tags"].as_array().unwrap();
    assert_eq!(tags[0]["conditions"][0]["status"], "False");
}
