//! LimitRanges on a real server (filesystem and redb): served the Kubernetes way at
//! `/api/v1/namespaces/{ns}/limitranges` (create, get, list and table, update with and without a resource version,
//! patch, delete, discovery; bad quantities 422 `Invalid`; only a cluster-admin writes, a namespace's `view` reads);
//! a manifest PUT of an image over its namespace's smallest `openshift.io/Image` `max.storage` is refused with 403
//! `DENIED` naming the size and the limit, an ImageStreamMapping of one with 403 `Forbidden` (an index is not,
//! another namespace is not, a deleted limit no longer applies); and `adm prune images --prune-over-size-limit`: its dry run lists the over-size history items (old or
//! newest), their images and blobs, `--confirm` removes exactly those and frees their bytes on disk, while images
//! within the limit (however old) and in namespaces without one stay pullable.

use std::collections::BTreeSet;

use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

mod common;

use common::harness::{body_lines, bytes_under, digests, reported_blob_bytes, Harness, Pushed, TOKEN};

const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";

fn limit_range(name: &str, storage: &str) -> Value {
    json!({"apiVersion": "v1", "kind": "LimitRange", "metadata": {"name": name},
           "spec": {"limits": [{"type": "openshift.io/Image", "max": {"storage": storage}}]}})
}

impl Harness {
    async fn kube(&self, method: Method, path: &str, body: Option<Value>) -> (StatusCode, Value) {
        self.kube_as(TOKEN, method, path, body).await
    }

    async fn kube_as(&self, token: &str, method: Method, path: &str, body: Option<Value>) -> (StatusCode, Value) {
        let mut r = self.http.request(method, self.url(path)).bearer_auth(token);
        if let Some(b) = body {
            r = r.json(&b);
        }
        let r = r.send().await.unwrap();
        (r.status(), r.json().await.unwrap_or(Value::Null))
    }

    /// A new user with `role` in `ns`, and its token.
    async fn user_with(&self, name: &str, role: &str) -> String {
        let api = "/apis/tributary.dev/v1";
        let (s, _) = self.kube(Method::POST, &format!("{api}/users"), Some(json!({"name": name}))).await;
        assert_eq!(s, StatusCode::CREATED);
        let owner = json!({"owner": {"kind": "User", "name": name}});
        let (_, token) = self.kube(Method::POST, &format!("{api}/tokens"), Some(owner)).await;
        let out = self.cli(&["policy", "add-role-to-user", role, name, "-n", "ns"]);
        assert!(out.is_ok(), "{out:?}");
        token["token"].as_str().unwrap().to_owned()
    }

    /// PUTs a manifest: the status and the body.
    async fn put_manifest(&self, repo: &str, tag: &str, media_type: &str, manifest: &str) -> (StatusCode, Value) {
        let r = self.http.put(self.url(&format!("/v2/{repo}/manifests/{tag}"))).bearer_auth(TOKEN);
        let r = r.header("Content-Type", media_type).body(manifest.to_owned()).send().await.unwrap();
        (r.status(), r.json().await.unwrap_or(Value::Null))
    }
}

const BASE: &str = "/api/v1/namespaces/ns/limitranges";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn limit_ranges_are_served_the_kubernetes_way() {
    let h = Harness::start().await;
    let (s, discovery) = h.kube(Method::GET, "/api/v1", None).await;
    assert_eq!(s, StatusCode::OK);
    let lr = discovery["resources"].as_array().unwrap().iter().find(|r| r["name"] == "limitranges").cloned();
    let lr = lr.expect("limitranges in discovery");
    assert_eq!(
        (lr["kind"].clone(), lr["namespaced"].clone(), lr["shortNames"].clone()),
        (json!("LimitRange"), json!(true), json!(["limits"]))
    );

    // Create: every type and field kept as given, numbers as quantities.
    let mut doc = limit_range("images", "1Gi");
    doc["spec"]["limits"]
        .as_array_mut()
        .unwrap()
        .push(json!({"type": "Container", "max": {"cpu": "2", "memory": 1000},
        "defaultRequest": {"cpu": "100m"}}));
    let (s, created) = h.kube(Method::POST, BASE, Some(doc.clone())).await;
    assert_eq!(s, StatusCode::CREATED, "{created}");
    assert_eq!(created["kind"], "LimitRange");
    assert_eq!(created["metadata"]["namespace"], "ns");
    assert!(created["metadata"]["uid"].as_str().is_some_and(|u| !u.is_empty()));
    assert_eq!(created["spec"]["limits"][0], json!({"type": "openshift.io/Image", "max": {"storage": "1Gi"}}));
    assert_eq!(created["spec"]["limits"][1]["max"], json!({"cpu": "2", "memory": "1000"}));
    assert_eq!(created["spec"]["limits"][1]["defaultRequest"], json!({"cpu": "100m"}));
    let (s, again) = h.kube(Method::POST, BASE, Some(doc)).await;
    assert_eq!((s, again["reason"].clone()), (StatusCode::CONFLICT, json!("AlreadyExists")), "{again}");

    let (s, got) = h.kube(Method::GET, &format!("{BASE}/images"), None).await;
    assert_eq!((s, got.clone()), (StatusCode::OK, created.clone()));
    let (s, list) = h.kube(Method::GET, BASE, None).await;
    assert_eq!(
        (s, list["kind"].clone(), list["items"][0].clone()),
        (StatusCode::OK, json!("LimitRangeList"), created.clone())
    );
    let table = h
        .http
        .get(h.url(BASE))
        .bearer_auth(TOKEN)
        .header("Accept", "application/json;as=Table;v=v1;g=meta.k8s.io,application/json");
    let table: Value = table.send().await.unwrap().json().await.unwrap();
    assert_eq!(table["kind"], "Table", "{table}");
    assert_eq!(table["rows"][0]["cells"][0], "images");

    // Update: without a resource version (unconditional), with the current one, with a stale one (409).
    let mut next = created.clone();
    next["spec"]["limits"][0]["max"]["storage"] = json!("512Mi");
    next["metadata"].as_object_mut().unwrap().remove("resourceVersion");
    let (s, updated) = h.kube(Method::PUT, &format!("{BASE}/images"), Some(next.clone())).await;
    assert_eq!(s, StatusCode::OK, "{updated}");
    assert_eq!(updated["spec"]["limits"][0]["max"]["storage"], "512Mi");
    assert_eq!(updated["metadata"]["uid"], created["metadata"]["uid"], "the uid stays");
    let stale = json!(created["metadata"]["resourceVersion"]);
    next["metadata"]["resourceVersion"] = stale;
    let (s, conflict) = h.kube(Method::PUT, &format!("{BASE}/images"), Some(next.clone())).await;
    assert_eq!((s, conflict["reason"].clone()), (StatusCode::CONFLICT, json!("Conflict")), "{conflict}");
    next["metadata"]["resourceVersion"] = updated["metadata"]["resourceVersion"].clone();
    let (s, _) = h.kube(Method::PUT, &format!("{BASE}/images"), Some(next)).await;
    assert_eq!(s, StatusCode::OK);
    let patch = h
        .http
        .patch(h.url(&format!("{BASE}/images")))
        .bearer_auth(TOKEN)
        .header("Content-Type", "application/merge-patch+json");
    let patch = patch.body(json!({"metadata": {"labels": {"team": "a"}}}).to_string()).send().await.unwrap();
    assert_eq!(patch.status(), StatusCode::OK);
    let patched: Value = patch.json().await.unwrap();
    assert_eq!(
        (patched["metadata"]["labels"]["team"].clone(), patched["spec"]["limits"][0]["max"]["storage"].clone()),
        (json!("a"), json!("512Mi"))
    );

    // Bad quantities: 422 Invalid, in Kubernetes' Status format.
    for (bad, at) in [("1Gx", "max[storage]"), ("-1Mi", "max[storage]")] {
        let (s, status) = h.kube(Method::POST, BASE, Some(limit_range("bad", bad))).await;
        assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{status}");
        assert_eq!(
            (status["kind"].clone(), status["status"].clone(), status["reason"].clone(), status["code"].clone()),
            (json!("Status"), json!("Failure"), json!("Invalid"), json!(422))
        );
        assert_eq!(status["details"]["name"], "bad");
        assert_eq!(status["details"]["kind"], "LimitRange");
        assert_eq!(status["details"]["causes"][0]["field"], format!("spec.limits[0].{at}"));
        assert_eq!(status["details"]["causes"][0]["reason"], "FieldValueInvalid");
        let message = status["message"].as_str().unwrap();
        assert!(
            message.starts_with("LimitRange \"bad\" is invalid: spec.limits[0].")
                && message.contains(at)
                && message.contains(bad),
            "{message}"
        );
    }
    let mut bad = limit_range("bad", "1Gi");
    bad["spec"]["limits"][0]["max"]["storage"] = json!("1Gi");
    bad["spec"]["limits"][0]["min"] = json!({"storage": "10 Mi"});
    let (s, status) = h
        .kube(
            Method::PUT,
            &format!("{BASE}/images"),
            Some({
                let mut b = bad.clone();
                b["metadata"]["name"] = json!("images");
                b
            }),
        )
        .await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{status}");
    assert!(status["message"].as_str().unwrap().contains("min[storage]: Invalid value: \"10 Mi\""), "{status}");

    // Unknown fields: refused with fieldValidation=Strict (what kubectl sends), dropped otherwise.
    let mut typo = limit_range("typo", "1Gi");
    typo["spec"]["limits"][0]["maxx"] = json!({"storage": "1Mi"});
    let (s, status) = h.kube(Method::POST, &format!("{BASE}?fieldValidation=Strict"), Some(typo.clone())).await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{status}");
    assert!(status["message"].as_str().unwrap().contains("unknown field \"spec.limits[0].maxx\""), "{status}");
    let (s, created) = h.kube(Method::POST, BASE, Some(typo)).await;
    assert_eq!(s, StatusCode::CREATED, "{created}");
    assert_eq!(created["spec"]["limits"][0], json!({"type": "openshift.io/Image", "max": {"storage": "1Gi"}}));
    let (s, _) = h.kube(Method::POST, &format!("{BASE}?dryRun=All"), Some(limit_range("dry", "1Gi"))).await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "a dry run is not pretended");

    // Access: a namespace's viewer reads, an admin of the namespace may not write, anonymous is 401.
    let viewer = h.user_with("viewer", "view").await;
    let (s, _) = h.kube_as(&viewer, Method::GET, BASE, None).await;
    assert_eq!(s, StatusCode::OK);
    let admin = h.user_with("nsadmin", "admin").await;
    let (s, _) = h.kube_as(&admin, Method::GET, &format!("{BASE}/images"), None).await;
    assert_eq!(s, StatusCode::OK);
    for (method, path) in [(Method::POST, BASE.to_owned()), (Method::DELETE, format!("{BASE}/images"))] {
        let (s, _) = h.kube_as(&admin, method, &path, Some(limit_range("mine", "1Ti"))).await;
        assert_eq!(s, StatusCode::FORBIDDEN);
    }
    let anonymous = h.http.get(h.url(BASE)).send().await.unwrap();
    assert_eq!(anonymous.status(), StatusCode::UNAUTHORIZED);

    // Delete.
    let (s, deleted) = h.kube(Method::DELETE, &format!("{BASE}/images"), None).await;
    assert_eq!((s, deleted["status"].clone()), (StatusCode::OK, json!("Success")), "{deleted}");
    let (s, gone) = h.kube(Method::GET, &format!("{BASE}/images"), None).await;
    assert_eq!((s, gone["reason"].clone()), (StatusCode::NOT_FOUND, json!("NotFound")));
    let (_, list) = h.kube(Method::GET, BASE, None).await;
    let names: Vec<&str> =
        list["items"].as_array().unwrap().iter().map(|i| i["metadata"]["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["typo"]);
    h.stop().await;
}

/// An image manifest of `layer` (config included in the size).
fn image_manifest(config: &(String, usize), layer: &(String, usize)) -> String {
    json!({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": config.0, "size": config.1},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": layer.0, "size": layer.1}]})
    .to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_push_over_the_limit_is_denied() {
    let h = Harness::start().await;
    // Two limits: the smaller one applies.
    for (name, storage) in [("loose", "1Mi"), ("tight", "2Ki")] {
        let (s, b) = h.kube(Method::POST, BASE, Some(limit_range(name, storage))).await;
        assert_eq!(s, StatusCode::CREATED, "{b}");
    }
    let small = h.push("ns/app", "small", &[vec![b's'; 1000]]).await;
    h.pull("ns/app", &small).await;

    let config = br#"{"architecture":"amd64","os":"linux"}"#.to_vec();
    let big_layer = vec![b'b'; 3000];
    let c = (h.put_blob("ns/app", &config).await.to_string(), config.len());
    let l = (h.put_blob("ns/app", &big_layer).await.to_string(), big_layer.len());
    let manifest = image_manifest(&c, &l);
    let size = config.len() + big_layer.len();
    let (s, body) = h.put_manifest("ns/app", "big", "application/vnd.oci.image.manifest.v1+json", &manifest).await;
    assert_eq!(s, StatusCode::FORBIDDEN, "{body}");
    let error = &body["errors"][0];
    assert_eq!(error["code"], "DENIED", "{body}");
    let message = error["message"].as_str().unwrap();
    assert!(
        message.contains(&format!("image size {size} bytes"))
            && message.contains("2Ki (2048 bytes)")
            && message.contains("\"tight\""),
        "{message}"
    );
    assert_eq!(error["detail"]["limitBytes"], 2048);
    let (s, _) = h.get("/v2/ns/app/manifests/big").await;
    assert_eq!(s, StatusCode::NOT_FOUND, "nothing was recorded");
    let (s, _) = h
        .put_manifest(
            "ns/app",
            &names::Digest::sha256_of(manifest.as_bytes()).to_string(),
            "application/vnd.oci.image.manifest.v1+json",
            &manifest,
        )
        .await;
    assert_eq!(s, StatusCode::FORBIDDEN, "by digest too");

    // An ImageStreamMapping of an image over the limit is refused too (403 Forbidden, as OpenShift's admission).
    let digest = names::Digest::sha256_of(b"mapped").to_string();
    let mapping = |size: usize| {
        json!({"kind": "ImageStreamMapping", "apiVersion": "image.openshift.io/v1",
        "metadata": {"name": "app"}, "tag": "mapped",
        "image": {"metadata": {"name": digest}, "dockerImageReference": format!("elsewhere.example/x/y@{digest}"),
                  "dockerImageManifestMediaType": "application/vnd.oci.image.manifest.v1+json",
                  "dockerImageMetadata": {"Size": size}}})
    };
    let path = "/apis/image.openshift.io/v1/namespaces/ns/imagestreammappings";
    let (s, status) = h.kube(Method::POST, path, Some(mapping(4096))).await;
    assert_eq!((s, status["reason"].clone()), (StatusCode::FORBIDDEN, json!("Forbidden")), "{status}");
    assert!(status["message"].as_str().unwrap().contains("image size 4096 bytes exceeds the limit of 2Ki"), "{status}");
    let (s, status) = h.kube(Method::POST, path, Some(mapping(2048))).await;
    assert_eq!(s, StatusCode::CREATED, "{status}");

    // An index is not limited by its own size (its children are checked as they are pushed).
    let index = json!({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": [
        {"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": small.manifest, "size": h.get(&format!("/v2/ns/app/manifests/{}", small.manifest)).await.1.len(),
         "platform": {"architecture": "amd64", "os": "linux"}}]}).to_string();
    let (s, body) = h.put_manifest("ns/app", "multi", OCI_INDEX, &index).await;
    assert_eq!(s, StatusCode::CREATED, "{body}");

    // Another namespace has no limit.
    let r = h.http.post(h.url("/apis/tributary.dev/v1/namespaces")).bearer_auth(TOKEN).json(&json!({"name": "free"}));
    assert_eq!(r.send().await.unwrap().status(), StatusCode::CREATED);
    let free = h.push("free/app", "big", std::slice::from_ref(&big_layer)).await;
    h.pull("free/app", &free).await;

    // Without the tight limit, the loose one applies: the same push goes through.
    let (s, _) = h.kube(Method::DELETE, &format!("{BASE}/tight"), None).await;
    assert_eq!(s, StatusCode::OK);
    let (s, body) = h.put_manifest("ns/app", "big", "application/vnd.oci.image.manifest.v1+json", &manifest).await;
    assert_eq!(s, StatusCode::CREATED, "{body}");
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prune_over_size_limit_removes_what_exceeds_the_limit() {
    let h = Harness::start().await;
    let r = h.http.post(h.url("/apis/tributary.dev/v1/namespaces")).bearer_auth(TOKEN).json(&json!({"name": "free"}));
    assert_eq!(r.send().await.unwrap().status(), StatusCode::CREATED);
    // ns/app:latest, oldest first: small, big, small, small, big (the newest is over the limit too);
    // ns/app:stable one small image; free/app (no limit) big images.
    let shared = vec![b'h'; 1000];
    let mut latest: Vec<(Pushed, bool)> = Vec::new();
    for (i, big) in [false, true, false, false, true].into_iter().enumerate() {
        let unique = vec![b'a' + i as u8; if big { 6000 } else { 500 + i }];
        latest.push((h.push("ns/app", "latest", &[shared.clone(), unique]).await, big));
    }
    let stable = h.push("ns/app", "stable", &[vec![b'z'; 300]]).await;
    let free: Vec<Pushed> =
        vec![h.push("free/app", "t", &[vec![b'x'; 9000]]).await, h.push("free/app", "t", &[vec![b'y'; 9000]]).await];
    // The limit comes after the pushes: 4Ki, between the small images (about 1.6 KiB) and the big (about 7 KiB).
    let (s, b) = h.kube(Method::POST, BASE, Some(limit_range("images", "4Ki"))).await;
    assert_eq!(s, StatusCode::CREATED, "{b}");
    let blob_dir = h.reg.data_dir().join("blobs");
    let disk_before = bytes_under(&blob_dir);

    let over: BTreeSet<String> = latest.iter().filter(|(_, big)| *big).map(|(p, _)| p.manifest.to_string()).collect();
    let flags = ["adm", "prune", "images", "--prune-over-size-limit"];
    let dry: Value = serde_json::from_str(&h.cli(&[&flags[..], &["-o", "json"]].concat()).unwrap()).unwrap();
    assert_eq!(dry["dryRun"], json!(true));
    assert_eq!(digests(&dry, "tagEvents", "image"), over, "only the over-size items, old or newest: {dry:#}");
    assert_eq!(digests(&dry, "images", "digest"), over, "{dry:#}");
    let mut expected_blobs = over.clone();
    for (p, _) in latest.iter().filter(|(_, big)| *big) {
        expected_blobs.insert(p.blobs[0].to_string());
        expected_blobs.insert(p.blobs[2].to_string());
    }
    assert_eq!(digests(&dry, "blobs", "digest"), expected_blobs, "their configs and unique layers: {dry:#}");
    assert_eq!(bytes_under(&blob_dir), disk_before, "a dry run changes nothing");

    // The CLI's dry run and --confirm list the same.
    let dry_text = h.cli(&flags).unwrap();
    println!("--- dry run\n{dry_text}");
    let confirm_text = h.cli(&[&flags[..], &["--confirm"]].concat()).unwrap();
    println!("--- confirm\n{confirm_text}");
    assert_eq!(body_lines(&confirm_text), body_lines(&dry_text), "the same list");
    let blob_bytes = reported_blob_bytes(&dry);
    assert_eq!(disk_before - bytes_under(&blob_dir), blob_bytes, "the reported blob bytes are freed");
    assert!(confirm_text.trim_end().ends_with(&format!("freed {} bytes", dry["bytesFreed"])), "{confirm_text}");

    // The small images stay (the oldest too) and pull; the big ones are gone; the other namespace is untouched.
    assert_eq!(h.history_len("ns/app", "latest").await, 3);
    for (p, big) in &latest {
        if *big {
            let (s, _) = h.get(&format!("/v2/ns/app/manifests/{}", p.manifest)).await;
            assert_eq!(s, StatusCode::NOT_FOUND, "{}", p.manifest);
        } else {
            h.pull("ns/app", p).await;
        }
    }
    let (s, body) = h.get("/v2/ns/app/manifests/latest").await;
    assert_eq!(
        (s, names::Digest::sha256_of(&body)),
        (StatusCode::OK, latest[3].0.manifest.clone()),
        "the newest small image is latest now"
    );
    h.pull("ns/app", &stable).await;
    for p in &free {
        h.pull("free/app", p).await;
    }
    // Again: nothing over the limit is left; the keep flags still cannot be combined with it.
    let (_, again) = h.prune(json!({"pruneOverSizeLimit": true, "confirm": true})).await;
    assert_eq!(again["deletedObjects"], json!(0), "{again:#}");
    let err = h.cli(&["adm", "prune", "images", "--prune-over-size-limit", "--keep-tag-revisions=1"]).unwrap_err();
    assert!(err.contains("cannot be combined"), "{err}");
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tag_whose_every_item_is_over_the_limit_goes() {
    let h = Harness::start().await;
    let big = [h.push("ns/huge", "v1", &[vec![b'q'; 5000]]).await, h.push("ns/huge", "v1", &[vec![b'r'; 5000]]).await];
    let small = h.push("ns/huge", "v2", &[vec![b's'; 100]]).await;
    let (s, _) = h.kube(Method::POST, BASE, Some(limit_range("images", "1k"))).await;
    assert_eq!(s, StatusCode::CREATED);
    let (_, done) = h.prune(json!({"pruneOverSizeLimit": true, "confirm": true, "namespace": "ns"})).await;
    let all_big: BTreeSet<String> = big.iter().map(|p| p.manifest.to_string()).collect();
    assert_eq!(digests(&done, "images", "digest"), all_big, "{done:#}");
    let (s, _) = h.get("/v2/ns/huge/manifests/v1").await;
    assert_eq!(s, StatusCode::NOT_FOUND, "the tag went with its last item");
    let (s, tags) = h.get("/v2/ns/huge/tags/list").await;
    assert_eq!((s, serde_json::from_slice::<Value>(&tags).unwrap()["tags"].clone()), (StatusCode::OK, json!(["v2"])));
    h.pull("ns/huge", &small).await;
    h.stop().await;
}
