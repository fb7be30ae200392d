//! The image stream API against a real server: Kubernetes shapes and `Status` errors, discovery, CRUD with
//! `resourceVersion` conflicts and merge patches, every tag rule checked against what an OCI client sees
//! (`GET /v2/<ns>/<stream>/manifests/<tag>` and the tags list) after each operation, concurrent tag updates
//! from several clients, image stream images by short id, mappings, images, watches over HTTP, webhooks, and
//! the access check on tag sources in other namespaces.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use names::Digest;
use registry::testing::TestRegistry;
use reqwest::{Client, Method, Response, StatusCode};
use serde_json::{json, Value};

const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
const API: &str = "/apis/image.openshift.io/v1";
const ADMIN: &str = "admin-secret-for-streams-api-tests-0123456789";

struct Api {
    reg: TestRegistry,
    http: Client,
    token: Option<String>,
}

impl Api {
    fn start() -> Api {
        Api { reg: TestRegistry::start(), http: Client::new(), token: None }
    }

    fn with_auth() -> Api {
        Api {
            reg: TestRegistry::builder().with_admin_token(ADMIN).start(),
            http: Client::new(),
            token: Some(ADMIN.into()),
        }
    }

    async fn send_as(&self, token: Option<&str>, method: Method, path: &str, body: Option<Value>) -> Response {
        let mut r = self.http.request(method, format!("{}{path}", self.reg.url()));
        if let Some(t) = token {
            r = r.bearer_auth(t);
        }
        if let Some(b) = body {
            r = r.json(&b);
        }
        r.send().await.unwrap()
    }

    async fn send(&self, method: Method, path: &str, body: Option<Value>) -> Response {
        self.send_as(self.token.as_deref(), method, path, body).await
    }

    async fn json(&self, method: Method, path: &str, body: Option<Value>) -> (StatusCode, Value) {
        let r = self.send(method, path, body).await;
        let status = r.status();
        (status, r.json().await.unwrap_or(Value::Null))
    }

    async fn ok(&self, method: Method, path: &str, body: Option<Value>) -> Value {
        let (s, v) = self.json(method.clone(), path, body).await;
        assert!(s.is_success(), "{method} {path}: {s} {v}");
        v
    }

    async fn push_blob(&self, repo: &str, bytes: &[u8]) -> Digest {
        let d = Digest::sha256_of(bytes);
        let mut r =
            self.http.post(format!("{}/v2/{repo}/blobs/uploads/?digest={d}", self.reg.url())).body(bytes.to_vec());
        if let Some(t) = &self.token {
            r = r.bearer_auth(t);
        }
        assert_eq!(r.send().await.unwrap().status(), StatusCode::CREATED);
        d
    }

    /// Pushes an image (config + layer) by tag; returns its digest.
    async fn push(&self, repo: &str, tag: &str, seed: &str) -> Digest {
        let config =
            json!({"architecture":"amd64","os":"linux","config":{"Cmd":["echo", seed],"User":"1001"}}).to_string();
        let c = self.push_blob(repo, config.as_bytes()).await;
        let l = self.push_blob(repo, seed.as_bytes()).await;
        let m = json!({"schemaVersion":2,"mediaType":OCI_MANIFEST,
            "config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":c,"size":config.len()},
            "layers":[{"mediaType":"application/vnd.oci.image.layer.v1.tar","digest":l,"size":seed.len()}]})
        .to_string();
        let mut r = self
            .http
            .put(format!("{}/v2/{repo}/manifests/{tag}", self.reg.url()))
            .header("Content-Type", OCI_MANIFEST)
            .body(m.clone());
        if let Some(t) = &self.token {
            r = r.bearer_auth(t);
        }
        assert_eq!(r.send().await.unwrap().status(), StatusCode::CREATED);
        Digest::sha256_of(m.as_bytes())
    }

    async fn stream(&self, ns: &str, name: &str) -> Value {
        self.ok(Method::GET, &format!("{API}/namespaces/{ns}/imagestreams/{name}"), None).await
    }

    /// What an OCI client sees: every tag of the tags list and the digest `GET manifests/<tag>` answers.
    async fn oci_view(&self, repo: &str) -> BTreeMap<String, String> {
        let list = self.ok(Method::GET, &format!("/v2/{repo}/tags/list"), None).await;
        let mut out = BTreeMap::new();
        for t in list["tags"].as_array().cloned().unwrap_or_default() {
            let t = t.as_str().unwrap().to_owned();
            let r = self.send(Method::GET, &format!("/v2/{repo}/manifests/{t}"), None).await;
            assert_eq!(r.status(), StatusCode::OK, "pull {repo}:{t}");
            out.insert(t, r.headers()["docker-content-digest"].to_str().unwrap().to_owned());
        }
        out
    }

    /// The API's view: every status tag and the image on top of its history.
    async fn api_view(&self, ns: &str, name: &str) -> BTreeMap<String, String> {
        let is = self.stream(ns, name).await;
        is["status"]["tags"]
            .as_array()
            .cloned()
            .unwrap_or_default()
            .iter()
            .map(|t| (t["tag"].as_str().unwrap().to_owned(), t["items"][0]["image"].as_str().unwrap().to_owned()))
            .collect()
    }

    async fn agree(&self, ns: &str, name: &str) -> BTreeMap<String, String> {
        let api = self.api_view(ns, name).await;
        assert_eq!(self.oci_view(&format!("{ns}/{name}")).await, api, "OCI view and API view of {ns}/{name}");
        api
    }

    async fn history(&self, ns: &str, name: &str, tag: &str) -> Vec<String> {
        let is = self.stream(ns, name).await;
        let tags = is["status"]["tags"].as_array().cloned().unwrap_or_default();
        let t = tags.iter().find(|t| t["tag"] == tag).cloned().unwrap_or(Value::Null);
        t["items"]
            .as_array()
            .cloned()
            .unwrap_or_default()
            .iter()
            .map(|e| e["image"].as_str().unwrap().to_owned())
            .collect()
    }

    /// `oc tag`-like: sets a spec tag through the image stream tag (create or replace, retrying on 409).
    async fn tag(&self, ns: &str, name: &str, tag: &str, from: Value) {
        let path = format!("{API}/namespaces/{ns}/imagestreamtags/{name}:{tag}");
        for _ in 0..20 {
            let (s, mut current) = self.json(Method::GET, &path, None).await;
            let (s, v) = if s == StatusCode::NOT_FOUND {
                let body = json!({"metadata": {"name": format!("{name}:{tag}")}, "tag": {"from": from}});
                self.json(Method::POST, &format!("{API}/namespaces/{ns}/imagestreamtags"), Some(body)).await
            } else {
                current["tag"] = json!({"name": tag, "from": from});
                self.json(Method::PUT, &path, Some(current)).await
            };
            match s {
                s if s.is_success() => return,
                StatusCode::CONFLICT => continue,
                _ => panic!("tag {name}:{tag}: {s} {v}"),
            }
        }
        panic!("tag {name}:{tag}: too many conflicts");
    }
}

fn from_tag(name: &str) -> Value {
    json!({"kind": "ImageStreamTag", "name": name})
}

fn from_image(name: &str) -> Value {
    json!({"kind": "ImageStreamImage", "name": name})
}

async fn expect_status(r: Response, code: StatusCode, reason: &str) -> Value {
    assert_eq!(r.status(), code, "{:?}", r.url().path());
    let v: Value = r.json().await.unwrap();
    assert_eq!(
        (v["kind"].as_str(), v["status"].as_str(), v["reason"].as_str()),
        (Some("Status"), Some("Failure"), Some(reason)),
        "{v}"
    );
    assert_eq!(v["code"], code.as_u16(), "{v}");
    v
}

#[tokio::test]
async fn discovery_documents() {
    let api = Api::start();
    let v = api.ok(Method::GET, "/apis", None).await;
    assert_eq!(v["groups"][0]["name"], "image.openshift.io");
    let v = api.ok(Method::GET, "/api", None).await;
    assert_eq!(v["versions"][0], "v1");
    let v = api.ok(Method::GET, API, None).await;
    let short: BTreeSet<String> = v["resources"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|r| r["shortNames"].as_array().cloned().unwrap_or_default())
        .map(|s| s.as_str().unwrap().to_owned())
        .collect();
    assert_eq!(short, BTreeSet::from(["is".into(), "istag".into(), "isimage".into()]));
    assert!(api.ok(Method::GET, "/version", None).await["gitVersion"].is_string());
    let v3 = api.ok(Method::GET, "/openapi/v3/apis/image.openshift.io/v1", None).await;
    let patch = &v3["paths"]["/apis/image.openshift.io/v1/namespaces/{namespace}/imagestreams/{name}"]["patch"];
    assert_eq!(patch["x-kubernetes-group-version-kind"]["kind"], "ImageStream");
    assert!(patch["parameters"].as_array().unwrap().iter().any(|p| p["name"] == "fieldValidation"));
    // OpenAPI v2 in protobuf (kubectl's first ask) is refused so that clients fall back.
    let r = api
        .http
        .get(format!("{}/openapi/v2", api.reg.url()))
        .header("Accept", "application/com.github.proto-openapi.spec.v2@v1.0+protobuf")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::NOT_ACCEPTABLE);
}

#[tokio::test]
async fn crud_conflicts_patches_and_status_errors() {
    let api = Api::start();
    let base = format!("{API}/namespaces/ns/imagestreams");
    let seed = json!({"apiVersion": "image.openshift.io/v1", "kind": "ImageStream",
        "metadata": {"name": "ruby", "labels": {"app": "ruby"}},
        "spec": {"tags": [{"name": "latest", "from": {"kind": "DockerImage", "name": "openshift/ruby-20-centos7"},
                           "importPolicy": {"scheduled": true}}]}});
    let r = api.send(Method::POST, &base, Some(seed.clone())).await;
    assert_eq!(r.status(), StatusCode::CREATED);
    let created: Value = r.json().await.unwrap();
    assert_eq!(created["metadata"]["generation"], 1);
    assert_eq!(created["metadata"]["namespace"], "ns");
    assert!(created["metadata"]["uid"].as_str().is_some_and(|u| !u.is_empty()));
    assert!(created["metadata"]["creationTimestamp"].is_string());
    assert_eq!(created["spec"]["tags"][0]["generation"], 1);
    assert_eq!(created["spec"]["tags"][0]["referencePolicy"]["type"], "Source");
    assert_eq!(created["status"]["dockerImageRepository"], format!("{}/ns/ruby", api.reg.host()));
    let v = expect_status(api.send(Method::POST, &base, Some(seed)).await, StatusCode::CONFLICT, "AlreadyExists").await;
    assert_eq!(v["details"]["kind"], "imagestreams");
    // List, with selectors.
    let list = api.ok(Method::GET, &base, None).await;
    assert_eq!((list["kind"].as_str(), list["items"].as_array().unwrap().len()), (Some("ImageStreamList"), 1));
    assert!(list["metadata"]["resourceVersion"].as_str().is_some_and(|v| !v.is_empty()));
    let none = api.ok(Method::GET, &format!("{base}?labelSelector=app%3Dpython"), None).await;
    assert_eq!(none["items"].as_array().unwrap().len(), 0);
    let one = api.ok(Method::GET, &format!("{base}?fieldSelector=metadata.name%3Druby"), None).await;
    assert_eq!(one["items"].as_array().unwrap().len(), 1);
    // The spec tag is imported as soon as it is written; that import fails (no upstream here) and records its
    // condition, a status write with a new resourceVersion. Edit what is current once it is there.
    let mut current = Value::Null;
    for _ in 0..100 {
        current = api.ok(Method::GET, &format!("{base}/ruby"), None).await;
        if current["status"]["tags"][0]["conditions"][0]["type"] == "ImportSuccess" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(current["status"]["tags"][0]["conditions"][0]["status"], "False", "{current}");
    // PUT with the current resourceVersion wins, with a stale one gets 409 Conflict.
    let mut edited = current.clone();
    edited["spec"]["lookupPolicy"] = json!({"local": true});
    let updated = api.ok(Method::PUT, &format!("{base}/ruby"), Some(edited.clone())).await;
    assert_eq!(updated["metadata"]["generation"], 2);
    expect_status(api.send(Method::PUT, &format!("{base}/ruby"), Some(edited)).await, StatusCode::CONFLICT, "Conflict")
        .await;
    // Merge patch (what kubectl apply sends); a resourceVersion in it is a precondition.
    let r = api
        .http
        .patch(format!("{}{base}/ruby", api.reg.url()))
        .header("Content-Type", "application/merge-patch+json")
        .body(json!({"metadata": {"annotations": {"a": "b"}}}).to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let patched: Value = r.json().await.unwrap();
    assert_eq!(
        (patched["metadata"]["annotations"]["a"].as_str(), patched["metadata"]["generation"].as_i64()),
        (Some("b"), Some(2))
    );
    let r = api
        .http
        .patch(format!("{}{base}/ruby", api.reg.url()))
        .header("Content-Type", "application/json-patch+json")
        .body("[]")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::UNSUPPORTED_MEDIA_TYPE);
    // Strict field validation refuses unknown fields; Warn answers with a warning.
    let bad = json!({"metadata": {"name": "x"}, "spec": {"tagz": []}});
    let v = expect_status(
        api.send(Method::POST, &format!("{base}?fieldValidation=Strict"), Some(bad.clone())).await,
        StatusCode::BAD_REQUEST,
        "BadRequest",
    )
    .await;
    assert!(v["message"].as_str().unwrap().contains("spec.tagz"), "{v}");
    let r = api.send(Method::POST, &base, Some(bad)).await;
    assert_eq!(r.status(), StatusCode::CREATED);
    assert!(r.headers()["warning"].to_str().unwrap().contains("spec.tagz"));
    // Invalid specs: 422 with the field named.
    let invalid =
        json!({"metadata": {"name": "y"}, "spec": {"tags": [{"name": "t", "from": {"kind": "Pod", "name": "p"}}]}});
    let v =
        expect_status(api.send(Method::POST, &base, Some(invalid)).await, StatusCode::UNPROCESSABLE_ENTITY, "Invalid")
            .await;
    assert!(v["message"].as_str().unwrap().contains("spec.tags[0].from"), "{v}");
    // Delete, then 404 with Kubernetes' message.
    let v = api.ok(Method::DELETE, &format!("{base}/ruby"), None).await;
    assert_eq!((v["kind"].as_str(), v["status"].as_str()), (Some("Status"), Some("Success")));
    let v =
        expect_status(api.send(Method::GET, &format!("{base}/ruby"), None).await, StatusCode::NOT_FOUND, "NotFound")
            .await;
    assert_eq!(v["message"], "imagestreams.image.openshift.io \"ruby\" not found");
    expect_status(
        api.send(Method::GET, &format!("{API}/namespaces/ns/pods"), None).await,
        StatusCode::NOT_FOUND,
        "NotFound",
    )
    .await;
    expect_status(
        api.send(Method::GET, &format!("{API}/namespaces/NS/imagestreams"), None).await,
        StatusCode::BAD_REQUEST,
        "BadRequest",
    )
    .await;
}

/// Every tag rule, each followed by a check that `docker pull` (manifests by tag, tags list) sees what the
/// API says.
#[tokio::test]
async fn tag_rules_agree_with_the_oci_view() {
    let api = Api::start();
    let a = api.push("ns/app", "v1", "a").await.to_string();
    api.agree("ns", "app").await;
    // A tracking tag (alias) and a permanent copy.
    api.tag("ns", "app", "latest", from_tag("app:v1")).await;
    api.tag("ns", "app", "static", from_image(&format!("app@{}", &a["sha256:".len()..][..7]))).await;
    let view = api.agree("ns", "app").await;
    assert_eq!((view["latest"].as_str(), view["static"].as_str()), (a.as_str(), a.as_str()));
    // A push to v1: the alias moves at once, the permanent tag stays.
    let b = api.push("ns/app", "v1", "b").await.to_string();
    let view = api.agree("ns", "app").await;
    assert_eq!((view["latest"].as_str(), view["static"].as_str()), (b.as_str(), a.as_str()));
    assert_eq!(api.history("ns", "app", "latest").await, vec![b.clone(), a.clone()]);
    // Rollback: tag the older image into v1 again; it goes on top, the alias follows.
    api.tag("ns", "app", "v1", from_image(&format!("app@{a}"))).await;
    let view = api.agree("ns", "app").await;
    assert_eq!((view["v1"].as_str(), view["latest"].as_str()), (a.as_str(), a.as_str()));
    assert_eq!(api.history("ns", "app", "v1").await, vec![a.clone(), b.clone(), a.clone()]);
    // Another stream: a tag copied from there can be pulled from here (manifest and layers linked in).
    let c = api.push("ns/base", "1.0", "c").await.to_string();
    api.tag("ns", "app", "base", from_tag("base:1.0")).await;
    let view = api.agree("ns", "app").await;
    assert_eq!(view["base"], c);
    let manifest = api.ok(Method::GET, "/v2/ns/app/manifests/base", None).await;
    let layer = manifest["layers"][0]["digest"].as_str().unwrap();
    assert_eq!(api.send(Method::GET, &format!("/v2/ns/app/blobs/{layer}"), None).await.status(), StatusCode::OK);
    // `tag -d`: the spec loses the tag, pulls still work.
    let mut is = api.stream("ns", "app").await;
    let generation = is["metadata"]["generation"].as_i64().unwrap();
    is["spec"]["tags"] = json!(is["spec"]["tags"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|t| t["name"] != "latest")
        .cloned()
        .collect::<Vec<_>>());
    let is = api.ok(Method::PUT, &format!("{API}/namespaces/ns/imagestreams/app"), Some(is)).await;
    assert_eq!(is["metadata"]["generation"].as_i64(), Some(generation + 1));
    let view = api.agree("ns", "app").await;
    assert!(view.contains_key("latest"));
    // After `tag -d` the tag no longer tracks v1.
    api.push("ns/app", "v1", "d").await;
    assert_eq!(api.agree("ns", "app").await["latest"], a);
    // Deleting the image stream tag removes it from spec and status, and from the OCI view.
    api.ok(Method::DELETE, &format!("{API}/namespaces/ns/imagestreamtags/app:latest"), None).await;
    api.ok(Method::DELETE, &format!("{API}/namespaces/ns/imagestreamtags/app:static"), None).await;
    let view = api.agree("ns", "app").await;
    assert_eq!(view.keys().cloned().collect::<Vec<_>>(), ["base", "v1"]);
    expect_status(
        api.send(Method::GET, &format!("{API}/namespaces/ns/imagestreamtags/app:latest"), None).await,
        StatusCode::NOT_FOUND,
        "NotFound",
    )
    .await;
    assert_eq!(api.send(Method::GET, "/v2/ns/app/manifests/latest", None).await.status(), StatusCode::NOT_FOUND);
    // An OCI delete by tag is the same as deleting the image stream tag.
    assert_eq!(api.send(Method::DELETE, "/v2/ns/app/manifests/base", None).await.status(), StatusCode::ACCEPTED);
    assert_eq!(api.agree("ns", "app").await.keys().cloned().collect::<Vec<_>>(), ["v1"]);
    // Alias to a tag of the same stream that has no image yet: the alias waits and follows its first push.
    api.tag("ns", "app", "next", from_tag("app:future")).await;
    let e = api.push("ns/app", "future", "e").await.to_string();
    assert_eq!(api.agree("ns", "app").await["next"], e);
}

#[tokio::test]
async fn istags_isimages_mappings_and_images() {
    let api = Api::start();
    let a = api.push("ns/app", "v1", "a").await.to_string();
    let istag = api.ok(Method::GET, &format!("{API}/namespaces/ns/imagestreamtags/app:v1"), None).await;
    assert_eq!(istag["kind"], "ImageStreamTag");
    assert_eq!(istag["image"]["metadata"]["name"], a);
    assert_eq!(istag["image"]["dockerImageMetadata"]["Config"]["User"], "1001");
    let list = api.ok(Method::GET, &format!("{API}/namespaces/ns/imagestreamtags"), None).await;
    assert_eq!(list["kind"], "ImageStreamTagList");
    // ImageStreamImage by full digest and by a short id.
    let short = &a["sha256:".len()..][..7];
    let isi = api.ok(Method::GET, &format!("{API}/namespaces/ns/imagestreamimages/app@{short}"), None).await;
    assert_eq!(
        (isi["kind"].as_str(), isi["metadata"]["name"].as_str()),
        (Some("ImageStreamImage"), Some(format!("app@{short}").as_str()))
    );
    assert_eq!(isi["image"]["metadata"]["name"], a);
    api.ok(Method::GET, &format!("{API}/namespaces/ns/imagestreamimages/app@{a}"), None).await;
    let other = Digest::sha256_of(b"nope").to_string();
    expect_status(
        api.send(Method::GET, &format!("{API}/namespaces/ns/imagestreamimages/app@{other}"), None).await,
        StatusCode::NOT_FOUND,
        "NotFound",
    )
    .await;
    // Creating a tag that exists is a conflict; creating one in a missing stream creates the stream.
    let dup = json!({"metadata": {"name": "app:v1"}, "tag": {"from": from_tag("app:v1")}});
    expect_status(
        api.send(Method::POST, &format!("{API}/namespaces/ns/imagestreamtags"), Some(dup)).await,
        StatusCode::CONFLICT,
        "AlreadyExists",
    )
    .await;
    let fresh = json!({"metadata": {"name": "fresh:v1"}, "tag": {"from": from_image(&format!("app@{a}"))}});
    let r = api.send(Method::POST, &format!("{API}/namespaces/ns/imagestreamtags"), Some(fresh)).await;
    assert_eq!(r.status(), StatusCode::CREATED);
    assert_eq!(api.oci_view("ns/fresh").await["v1"], a);
    // An image stream tag update with a stale resourceVersion is refused.
    let mut stale = istag.clone();
    stale["tag"] = json!({"from": from_image(&format!("app@{a}"))});
    api.push("ns/app", "v1", "b").await;
    expect_status(
        api.send(Method::PUT, &format!("{API}/namespaces/ns/imagestreamtags/app:v1"), Some(stale)).await,
        StatusCode::CONFLICT,
        "Conflict",
    )
    .await;
    // Mappings: the image is created and tagged with its own reference.
    let digest = Digest::sha256_of(b"mapped").to_string();
    let mapping = json!({"kind": "ImageStreamMapping", "apiVersion": "image.openshift.io/v1",
        "metadata": {"name": "app"}, "tag": "mapped",
        "image": {"metadata": {"name": digest}, "dockerImageReference": format!("elsewhere.example/x/y@{digest}"),
                  "dockerImageManifestMediaType": OCI_MANIFEST}});
    let r = api.send(Method::POST, &format!("{API}/namespaces/ns/imagestreammappings"), Some(mapping)).await;
    assert_eq!(r.status(), StatusCode::CREATED);
    assert_eq!(api.history("ns", "app", "mapped").await, vec![digest.clone()]);
    let image = api.ok(Method::GET, &format!("{API}/images/{digest}"), None).await;
    assert_eq!(image["dockerImageReference"], format!("elsewhere.example/x/y@{digest}"));
    let images = api.ok(Method::GET, &format!("{API}/images"), None).await;
    assert!(images["items"].as_array().unwrap().len() >= 3);
    // Tables for kubectl.
    let r = api
        .http
        .get(format!("{}{API}/namespaces/ns/imagestreams", api.reg.url()))
        .header("Accept", "application/json;as=Table;v=v1;g=meta.k8s.io,application/json")
        .send()
        .await
        .unwrap();
    let table: Value = r.json().await.unwrap();
    assert_eq!(table["kind"], "Table");
    assert_eq!(table["columnDefinitions"][1]["name"], "Image Repository");
    assert_eq!(table["rows"].as_array().unwrap().len(), 2);
    assert_eq!(table["rows"][0]["object"]["metadata"]["name"], "app");
}

/// Several clients tag different images into one tag at once (read, edit, PUT, retry on 409): every client's
/// event is in the history afterwards, and the tag ends where its history's top says.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_tag_updates_from_several_clients_lose_no_event() {
    let api = Arc::new(Api::start());
    let mut digests = Vec::new();
    for i in 0..8 {
        digests.push(api.push("ns/app", &format!("src{i}"), &format!("img{i}")).await.to_string());
    }
    let mut tasks = Vec::new();
    for d in &digests {
        let (api, d) = (api.clone(), d.clone());
        tasks.push(tokio::spawn(async move { api.tag("ns", "app", "target", from_image(&format!("app@{d}"))).await }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let history: BTreeSet<String> = api.history("ns", "app", "target").await.into_iter().collect();
    assert_eq!(history, digests.iter().cloned().collect::<BTreeSet<_>>());
    api.agree("ns", "app").await;
}

/// Reads watch events (one JSON object per line) until `want` of them arrived.
async fn watch_events(r: Response, want: usize) -> Vec<Value> {
    let mut body = r.bytes_stream();
    let mut buf = Vec::new();
    let mut out = Vec::new();
    while out.len() < want {
        let chunk = tokio::time::timeout(Duration::from_secs(10), body.next()).await.expect("watch event in time");
        buf.extend_from_slice(&chunk.expect("stream open").unwrap());
        while let Some(i) = buf.iter().position(|b| *b == b'\n') {
            let line: Vec<u8> = buf.drain(..=i).collect();
            out.push(serde_json::from_slice(&line).unwrap());
        }
    }
    out
}

#[tokio::test]
async fn watch_streams_every_change() {
    let api = Api::start();
    api.push("ns/app", "v1", "a").await;
    let list = api.ok(Method::GET, &format!("{API}/namespaces/ns/imagestreams"), None).await;
    let rv = list["metadata"]["resourceVersion"].as_str().unwrap().to_owned();
    // From the list's resourceVersion: only what changes after it.
    let from_rv =
        api.send(Method::GET, &format!("{API}/namespaces/ns/imagestreams?watch=true&resourceVersion={rv}"), None).await;
    assert_eq!(from_rv.headers()["content-type"], "application/json");
    // Without one: the current state first, as ADDED; the /watch/ path form works too.
    let all = api.send(Method::GET, &format!("{API}/watch/namespaces/ns/imagestreams"), None).await;
    let b = api.push("ns/app", "v1", "b").await.to_string();
    api.ok(Method::DELETE, &format!("{API}/namespaces/ns/imagestreams/app"), None).await;
    let events = watch_events(from_rv, 2).await;
    assert_eq!(events[0]["type"], "MODIFIED");
    assert_eq!(events[0]["object"]["status"]["tags"][0]["items"][0]["image"], b);
    assert_eq!(events[1]["type"], "DELETED");
    assert_eq!(events[1]["object"]["metadata"]["name"], "app");
    let events = watch_events(all, 3).await;
    let kinds: Vec<&str> = events.iter().map(|e| e["type"].as_str().unwrap()).collect();
    assert_eq!(kinds, ["ADDED", "MODIFIED", "DELETED"]);
    // Tables, as `kubectl get -w` asks, and a timeout that ends the watch.
    let r = api
        .http
        .get(format!("{}{API}/namespaces/ns/imagestreamtags?watch=true&timeoutSeconds=1", api.reg.url()))
        .header("Accept", "application/json;as=Table;v=v1;g=meta.k8s.io,application/json")
        .send()
        .await
        .unwrap();
    api.push("ns/app", "v2", "c").await;
    let events = watch_events(r, 1).await;
    assert_eq!(events[0]["object"]["kind"], "Table");
    assert_eq!(events[0]["object"]["rows"][0]["cells"][0], "app:v2");
}

/// A minimal HTTP receiver: answers 500 to the first `fail` requests, 200 after; records the bodies.
async fn receiver(fail: usize) -> (String, Arc<Mutex<Vec<Value>>>) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    let bodies = Arc::new(Mutex::new(Vec::new()));
    let seen = bodies.clone();
    tokio::spawn(async move {
        let mut count = 0;
        loop {
            let (mut sock, _) = listener.accept().await.unwrap();
            let mut buf = Vec::new();
            let mut chunk = [0u8; 4096];
            let body = loop {
                let n = sock.read(&mut chunk).await.unwrap();
                if n == 0 {
                    break None;
                }
                buf.extend_from_slice(&chunk[..n]);
                let text = String::from_utf8_lossy(&buf).to_string();
                if let Some(end) = text.find("\r\n\r\n") {
                    let len = text[..end]
                        .lines()
                        .find_map(|l| {
                            l.to_ascii_lowercase()
                                .strip_prefix("content-length:")
                                .map(|v| v.trim().parse::<usize>().unwrap())
                        })
                        .unwrap_or(0);
                    if buf.len() >= end + 4 + len {
                        break Some(buf[end + 4..end + 4 + len].to_vec());
                    }
                }
            };
            let Some(body) = body else { continue };
            count += 1;
            let status = if count <= fail { "500 Internal Server Error" } else { "200 OK" };
            if count > fail {
                seen.lock().unwrap().push(serde_json::from_slice(&body).unwrap());
            }
            let _ = sock
                .write_all(format!("HTTP/1.1 {status}\r\ncontent-length: 0\r\nconnection: close\r\n\r\n").as_bytes())
                .await;
        }
    });
    (url, bodies)
}

#[tokio::test]
async fn webhooks_are_told_of_tag_changes_and_retried() {
    let api = Api::start();
    let early = api.push("ns/app", "v0", "early").await;
    let (url, bodies) = receiver(1).await;
    let retry = quick_retry(5, 200);
    let _hooks = registry::http::webhooks::spawn(api.reg.registry().meta.clone(), vec![url.parse().unwrap()], retry);
    tokio::time::sleep(Duration::from_millis(200)).await;
    let a = api.push("ns/app", "v1", "a").await.to_string();
    api.tag("ns", "app", "latest", from_tag("app:v1")).await;
    api.push("ns/app", "v1", "a").await; // the same image again: no news
    api.ok(Method::DELETE, &format!("{API}/namespaces/ns/imagestreamtags/app:latest"), None).await;
    let summary = received(&bodies, 3).await;
    let got = bodies.lock().unwrap().clone();
    assert_eq!(
        summary,
        [("v1".into(), "MODIFIED".into()), ("latest".into(), "MODIFIED".into()), ("latest".into(), "DELETED".into())],
        "{got:?}"
    );
    assert_eq!(got[0]["image"], a);
    assert_eq!((got[0]["namespace"].as_str(), got[0]["imageStream"].as_str()), (Some("ns"), Some("app")));
    assert!(got.iter().all(|b| b["image"] != early.to_string()), "tags that did not change are not reported");
}

/// Webhook retries fast enough for a test: `attempts`, from 50 ms up to `max_backoff_ms`.
fn quick_retry(attempts: u32, max_backoff_ms: u64) -> registry::http::webhooks::Retry {
    registry::http::webhooks::Retry {
        attempts,
        first_backoff: Duration::from_millis(50),
        max_backoff: Duration::from_millis(max_backoff_ms),
        timeout: Duration::from_secs(5),
    }
}

/// Waits until `bodies` holds `n` events; returns (tag, type) of each.
async fn received(bodies: &std::sync::Mutex<Vec<Value>>, n: usize) -> Vec<(String, String)> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while bodies.lock().unwrap().len() < n && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let got = bodies.lock().unwrap().clone();
    got.iter().map(|b| (b["tag"].as_str().unwrap().to_owned(), b["type"].as_str().unwrap().to_owned())).collect()
}

#[tokio::test]
async fn webhooks_catch_up_after_a_restart() {
    let api = Api::start();
    let (url, bodies) = receiver(0).await;
    let retry = quick_retry(3, 100);
    let meta = api.reg.registry().meta.clone();
    let hooks = registry::http::webhooks::spawn(meta.clone(), vec![url.parse().unwrap()], retry);
    tokio::time::sleep(Duration::from_millis(200)).await;
    api.push("ns/app", "v1", "a").await;
    api.push("ns/app", "gone", "a").await;
    assert_eq!(received(&bodies, 2).await, [("v1".into(), "MODIFIED".into()), ("gone".into(), "MODIFIED".into())]);
    // Let the cursor be saved, then stop; tags change while nobody delivers.
    tokio::time::sleep(Duration::from_millis(1200)).await;
    drop(hooks);
    let b = api.push("ns/app", "v1", "b").await.to_string();
    api.push("ns/app", "v1", "c").await; // two changes while stopped: the latest is reported
    api.ok(Method::DELETE, &format!("{API}/namespaces/ns/imagestreamtags/app:gone"), None).await;
    api.push("ns/app", "new", "d").await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(bodies.lock().unwrap().len(), 2, "nothing is delivered while stopped");
    let _hooks = registry::http::webhooks::spawn(meta, vec![url.parse().unwrap()], retry);
    let got = received(&bodies, 5).await;
    assert_eq!(
        got[2..],
        [("v1".into(), "MODIFIED".into()), ("gone".into(), "DELETED".into()), ("new".into(), "MODIFIED".into())],
        "{got:?}"
    );
    let all = bodies.lock().unwrap().clone();
    assert_ne!(all[2]["image"], b, "the tag's state now, not the intermediate one");
    // Nothing more: what was delivered before the stop is not repeated.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(bodies.lock().unwrap().len(), 5);
}

#[tokio::test]
async fn access_checks_cover_the_api_and_tag_sources() {
    let api = Api::with_auth();
    let admin = |path: &str| format!("/apis/tributary.dev/v1{path}");
    for ns in ["team", "secret"] {
        api.ok(Method::POST, &admin("/namespaces"), Some(json!({"name": ns}))).await;
    }
    api.ok(Method::POST, &admin("/users"), Some(json!({"name": "bob"}))).await;
    let bob = api.ok(Method::POST, &admin("/tokens"), Some(json!({"owner": {"kind": "User", "name": "bob"}}))).await
        ["token"]
        .as_str()
        .unwrap()
        .to_owned();
    api.ok(
        Method::POST,
        &admin("/namespaces/team/rolebindings/add"),
        Some(json!({"role": "edit", "subject": {"kind": "User", "name": "bob"}})),
    )
    .await;
    let hidden = api.push("secret/app", "v1", "hidden").await;
    let mine = api.push("team/app", "v1", "mine").await;
    // Discovery is open; the API is not.
    assert_eq!(api.send_as(None, Method::GET, API, None).await.status(), StatusCode::OK);
    expect_status(
        api.send_as(None, Method::GET, &format!("{API}/namespaces/team/imagestreams"), None).await,
        StatusCode::UNAUTHORIZED,
        "Unauthorized",
    )
    .await;
    let r = api.send_as(Some(&bob), Method::GET, &format!("{API}/namespaces/team/imagestreams"), None).await;
    assert_eq!(r.status(), StatusCode::OK);
    expect_status(
        api.send_as(Some(&bob), Method::GET, &format!("{API}/namespaces/secret/imagestreams"), None).await,
        StatusCode::FORBIDDEN,
        "Forbidden",
    )
    .await;
    // Bob may tag within his namespace, not copy from one he cannot read.
    let ok = json!({"metadata": {"name": "app:copy"}, "tag": {"from": from_image(&format!("app@{mine}"))}});
    let r = api.send_as(Some(&bob), Method::POST, &format!("{API}/namespaces/team/imagestreamtags"), Some(ok)).await;
    assert_eq!(r.status(), StatusCode::CREATED);
    let steal = json!({"metadata": {"name": "app:stolen"},
        "tag": {"from": {"kind": "ImageStreamImage", "name": format!("app@{hidden}"), "namespace": "secret"}}});
    let r = api
        .send_as(Some(&bob), Method::POST, &format!("{API}/namespaces/team/imagestreamtags"), Some(steal.clone()))
        .await;
    expect_status(r, StatusCode::FORBIDDEN, "Forbidden").await;
    assert_eq!(
        api.send(Method::GET, &format!("{API}/namespaces/team/imagestreamtags/app:stolen"), None).await.status(),
        StatusCode::NOT_FOUND
    );
    // The administrator may.
    let r = api.send(Method::POST, &format!("{API}/namespaces/team/imagestreamtags"), Some(steal)).await;
    assert_eq!(r.status(), StatusCode::CREATED);
}

/// The legacy `/api/v1` path (`apiVersion: v1`, as the seeds' OpenShift 3 examples are written) serves the same
/// streams as the group path, writes `v1` on what it answers, and sits behind the same access check.
#[tokio::test]
async fn legacy_core_path_serves_the_same_streams() {
    let api = Api::with_auth();
    let admin = |path: &str| format!("/apis/tributary.dev/v1{path}");
    api.ok(Method::POST, &admin("/namespaces"), Some(json!({"name": "team"}))).await;
    let core = api.ok(Method::GET, "/api/v1", None).await;
    assert_eq!(core["groupVersion"], "v1");
    let resources = core["resources"].as_array().unwrap();
    assert!(resources.iter().any(|r| r["name"] == "imagestreams" && r["kind"] == "ImageStream"));
    // The image API's short names stay with the group; `limits` (LimitRanges, core only) is Kubernetes' own.
    let mut image_api = resources.iter().filter(|r| r["name"] != "limitranges");
    assert!(image_api.all(|r| r["shortNames"].is_null()), "short names stay with the group");
    let root = api.ok(Method::GET, "/openapi/v3", None).await;
    assert_eq!(root["paths"]["api/v1"]["serverRelativeURL"], "/openapi/v3/api/v1");
    let v3 = api.ok(Method::GET, "/openapi/v3/api/v1", None).await;
    let patch = &v3["paths"]["/api/v1/namespaces/{namespace}/imagestreams/{name}"]["patch"];
    assert_eq!(patch["x-kubernetes-group-version-kind"], json!({"group": "", "version": "v1", "kind": "ImageStream"}));

    let seed = json!({"apiVersion": "v1", "kind": "ImageStream", "metadata": {"name": "ruby"},
        "spec": {"tags": [{"name": "latest", "from": {"kind": "DockerImage", "name": "openshift/ruby-20-centos7"}}]}});
    let (s, created) = api.json(Method::POST, "/api/v1/namespaces/team/imagestreams", Some(seed)).await;
    assert_eq!(s, StatusCode::CREATED, "{created}");
    assert_eq!(created["apiVersion"], "v1");
    let group = api.stream("team", "ruby").await;
    assert_eq!(group["apiVersion"], "image.openshift.io/v1", "stored once, labelled by the path it is read from");
    assert_eq!(group["metadata"]["uid"], created["metadata"]["uid"]);
    let list = api.ok(Method::GET, "/api/v1/namespaces/team/imagestreams", None).await;
    assert_eq!(list["items"][0]["apiVersion"], "v1");
    let d = api.push("team/ruby", "2.0", "legacy").await;
    let istag = api.ok(Method::GET, "/api/v1/namespaces/team/imagestreamtags/ruby:2.0", None).await;
    assert_eq!(
        (istag["apiVersion"].as_str(), istag["image"]["metadata"]["name"].as_str()),
        (Some("v1"), Some(d.to_string().as_str()))
    );
    // The guard covers it: no credentials, no streams.
    expect_status(
        api.send_as(None, Method::GET, "/api/v1/namespaces/team/imagestreams", None).await,
        StatusCode::UNAUTHORIZED,
        "Unauthorized",
    )
    .await;
    expect_status(
        api.send_as(None, Method::DELETE, "/api/v1/namespaces/team/imagestreams/ruby", None).await,
        StatusCode::UNAUTHORIZED,
        "Unauthorized",
    )
    .await;
    let (s, _) = api.json(Method::DELETE, "/api/v1/namespaces/team/imagestreams/ruby", None).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(
        api.send(Method::GET, &format!("{API}/namespaces/team/imagestreams/ruby"), None).await.status(),
        StatusCode::NOT_FOUND
    );
}
