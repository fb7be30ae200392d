//! The image policy API (`images.config.openshift.io/cluster`, ImageDigestMirrorSet, ImageTagMirrorSet,
//! ImageContentSourcePolicy) and its effect on import and pull-through, against upstreams started here (scripted
//! registries on loopback that count every request): the `cluster` object seeded from
//! `allowedRegistriesForImport`, edits by merge patch seen by the next import on another replica sharing the
//! store, `allowedRegistries` + `blockedRegistries` refused with 422, blocked and not-allowed sources refused at
//! import with the rule named, access for cluster administrators only, a digest mirror serving import and
//! pull-through while the source is down (digests verified: a lying mirror is passed over), tag mirrors for tags,
//! the most specific source winning, `NeverContactSource` never reaching the source, a watch seeing an edit, a
//! mirror sending wrong layer bytes passed over during pull-through, and `externalRegistryHostnames[0]` becoming
//! the host in references on every replica.
//! The same with real registries and real clients is in `conformance/tests/e2e_mirrors.rs`.

use std::sync::Arc;
use std::time::Duration;

use names::Digest;
use registry::testing::TestRegistry;
use reqwest::{Client, Method, StatusCode};
use serde_json::{json, Value};
use storage_backends::{BlobStore, MemoryStore, MetadataStore};

mod common;

use common::Fake;

const ADMIN: &str = "admin-token-for-image-policy-tests-0123456789";
const CONFIG: &str = "/apis/config.openshift.io/v1";

async fn call(reg: &TestRegistry, method: Method, path: &str, body: Option<Value>) -> (StatusCode, Value) {
    let mut r = Client::new().request(method.clone(), format!("{}{path}", reg.url()));
    if let Some(t) = reg.admin_token() {
        r = r.bearer_auth(t);
    }
    if let Some(b) = body {
        let ct = if method == Method::PATCH { "application/merge-patch+json" } else { "application/json" };
        r = r.header("Content-Type", ct).body(b.to_string());
    }
    let resp = r.send().await.unwrap();
    let status = resp.status();
    (status, resp.json().await.unwrap_or(Value::Null))
}

async fn import(reg: &TestRegistry, stream: &str, from: &str) -> Value {
    let (s, _) = call(reg, Method::POST, "/apis/tributary.dev/v1/namespaces", Some(json!({"name": "ns"}))).await;
    assert!(s.is_success() || s == StatusCode::CONFLICT);
    let isi = json!({"metadata": {"name": stream}, "spec": {"import": true, "images": [
        {"from": {"kind": "DockerImage", "name": from}, "to": {"name": "t"}}]}});
    let (s, v) =
        call(reg, Method::POST, "/apis/image.openshift.io/v1/namespaces/ns/imagestreamimports", Some(isi)).await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    v["status"]["images"][0]["status"].clone()
}

async fn put_set(reg: &TestRegistry, resource: &str, name: &str, field: &str, entries: Value) {
    let kind = match resource {
        "imagedigestmirrorsets" => "ImageDigestMirrorSet",
        _ => "ImageTagMirrorSet",
    };
    let o = json!({"apiVersion": "config.openshift.io/v1", "kind": kind, "metadata": {"name": name},
                   "spec": {field: entries}});
    let (s, v) = call(reg, Method::POST, &format!("{CONFIG}/{resource}"), Some(o)).await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
}

/// Marks `hosts` (plain-http test upstreams) insecure through `registrySources.insecureRegistries`.
async fn insecure(reg: &TestRegistry, hosts: &[&str]) {
    let patch = json!({"spec": {"registrySources": {"insecureRegistries": hosts}}});
    let (s, v) = call(reg, Method::PATCH, &format!("{CONFIG}/images/cluster"), Some(patch)).await;
    assert_eq!(s, StatusCode::OK, "{v}");
}

/// A loopback address nothing listens on: a source that is down.
fn dead_host() -> String {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().to_string()
}

fn replicas(n: usize) -> Vec<TestRegistry> {
    let dir = tempfile::tempdir().unwrap();
    let meta: Arc<dyn MetadataStore> = Arc::new(MemoryStore::new());
    let blobs = BlobStore::filesystem(dir.path().join("blobs")).unwrap().with_meta(meta.clone());
    let out = (0..n)
        .map(|_| {
            TestRegistry::builder()
                .with_admin_token(ADMIN)
                .with_allowed_registries(&["127.0.0.1:1", "*.example.com"])
                .with_stores(meta.clone(), blobs.clone())
                .start()
        })
        .collect();
    std::mem::forget(dir);
    out
}

#[tokio::test(flavor = "multi_thread")]
async fn the_cluster_object_governs_imports_on_every_replica() {
    let regs = replicas(2);
    let (a, b) = (&regs[0], &regs[1]);
    let up = Fake::start();
    let layer = b"layer bytes".to_vec();
    let digest = up.image("team/app", "v1", layer.clone(), &Digest::sha256_of(&layer), Duration::ZERO);

    // Seeded from the configuration's allowedRegistriesForImport.
    let (s, cluster) = call(a, Method::GET, &format!("{CONFIG}/images/cluster"), None).await;
    assert_eq!(s, StatusCode::OK, "{cluster}");
    assert_eq!(cluster["apiVersion"], "config.openshift.io/v1");
    assert_eq!(cluster["spec"]["allowedRegistriesForImport"][0]["domainName"], "127.0.0.1:1");
    let st = import(b, "app", &format!("{}/team/app:v1", up.host)).await;
    assert_eq!(st["status"], "Failure", "{st}");
    assert!(st["message"].as_str().unwrap().contains("allowedRegistriesForImport"), "{st}");

    // An edit through one replica is in force at the next import on the other.
    // (An `insecure` entry: the scripted upstream speaks plain http.)
    let patch = json!({"spec": {"allowedRegistriesForImport": [{"domainName": up.host, "insecure": true}]}});
    let (s, v) = call(a, Method::PATCH, &format!("{CONFIG}/images/cluster"), Some(patch)).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["metadata"]["generation"], 2);
    let st = import(b, "app", &format!("{}/team/app:v1", up.host)).await;
    assert_eq!(st["status"], "Success", "{st}");

    // Both source lists at once: 422 Invalid in a Kubernetes Status, nothing changed.
    let both = json!({"spec": {"registrySources": {"allowedRegistries": ["a.io"], "blockedRegistries": ["b.io"]}}});
    let (s, v) = call(a, Method::PATCH, &format!("{CONFIG}/images/cluster"), Some(both)).await;
    assert_eq!(
        (s, v["kind"].as_str(), v["reason"].as_str()),
        (StatusCode::UNPROCESSABLE_ENTITY, Some("Status"), Some("Invalid"))
    );
    assert!(v["message"].as_str().unwrap().contains("only one of allowedRegistries and blockedRegistries"), "{v}");

    // Blocked: the import fails with a condition naming the rule; the tag's condition says it too.
    let block = json!({"spec": {"registrySources": {"blockedRegistries": [format!("{}/team", up.host)]}}});
    assert_eq!(call(b, Method::PATCH, &format!("{CONFIG}/images/cluster"), Some(block)).await.0, StatusCode::OK);
    let st = import(a, "app", &format!("{}/team/app@{digest}", up.host)).await;
    assert_eq!((st["status"].as_str(), st["reason"].as_str()), (Some("Failure"), Some("Forbidden")), "{st}");
    assert!(st["message"].as_str().unwrap().contains("blockedRegistries"), "{st}");
    // allowedRegistries without the upstream: refused too, naming the list.
    let allow = json!({"spec": {"registrySources": {"blockedRegistries": null, "allowedRegistries": ["quay.io"]}}});
    assert_eq!(call(a, Method::PATCH, &format!("{CONFIG}/images/cluster"), Some(allow)).await.0, StatusCode::OK);
    let st = import(b, "app", &format!("{}/team/app:v1", up.host)).await;
    assert!(st["message"].as_str().unwrap().contains("registrySources.allowedRegistries"), "{st}");

    // Only cluster administrators: anonymous callers are refused, reads included.
    let anon = Client::new().get(format!("{}{CONFIG}/images/cluster", a.url())).send().await.unwrap();
    assert!(matches!(anon.status().as_u16(), 401 | 403), "{}", anon.status());
    // The object cannot be deleted or created again, and no other name is valid.
    assert_eq!(
        call(a, Method::DELETE, &format!("{CONFIG}/images/cluster"), None).await.0,
        StatusCode::METHOD_NOT_ALLOWED
    );
    let other = json!({"metadata": {"name": "other"}, "spec": {}});
    assert_eq!(
        call(a, Method::POST, &format!("{CONFIG}/images"), Some(other)).await.0,
        StatusCode::UNPROCESSABLE_ENTITY
    );
    // Discovery lists the groups.
    let (_, groups) = call(a, Method::GET, "/apis", None).await;
    let names: Vec<&str> = groups["groups"].as_array().unwrap().iter().filter_map(|g| g["name"].as_str()).collect();
    assert!(names.contains(&"config.openshift.io") && names.contains(&"operator.openshift.io"), "{names:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn mirrors_serve_while_the_source_is_down() {
    let reg = TestRegistry::builder().with_admin_token(ADMIN).start();
    let source = dead_host();
    let (liar, good) = (Fake::start(), Fake::start());
    let layer = b"the real layer".to_vec();
    let digest = good.image("mirror/app", "v1", layer.clone(), &Digest::sha256_of(&layer), Duration::ZERO);
    // The first mirror answers the digest with other bytes: it must be passed over.
    let other = b"other".to_vec();
    liar.image("app", "v1", other.clone(), &Digest::sha256_of(&other), Duration::ZERO);
    let body = |b: &str| common::Answer::Body {
        content_type: common::OCI_MANIFEST,
        body: Arc::new(b.as_bytes().to_vec()),
        pause: Duration::ZERO,
    };
    liar.route(&format!("/v2/app/manifests/{digest}"), body("{\"schemaVersion\":2}"));
    insecure(&reg, &[&source, &liar.host, &good.host]).await;
    put_set(
        &reg,
        "imagedigestmirrorsets",
        "digests",
        "imageDigestMirrors",
        json!([
        {"source": format!("{source}/team"), "mirrors": [format!("{}", liar.host), format!("{}/mirror", good.host)]}]),
    )
    .await;

    let st = import(&reg, "app", &format!("{source}/team/app@{digest}")).await;
    assert_eq!(st["status"], "Success", "{st}");
    let message = st["message"].as_str().unwrap();
    assert!(message.contains(&format!("served by mirror {}/mirror/app", good.host)), "{message}");
    assert!(message.contains("another digest"), "the lying mirror's attempt is reported: {message}");
    // Pull-through of the layer goes to the mirror too (the source is still down).
    let resp = Client::new()
        .get(format!("{}/v2/ns/app/blobs/{}", reg.url(), Digest::sha256_of(&layer)))
        .bearer_auth(ADMIN)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(resp.bytes().await.unwrap().to_vec(), layer);
    let metrics = Client::new().get(format!("{}/metrics", reg.url())).bearer_auth(ADMIN).send().await.unwrap();
    let text = metrics.text().await.unwrap();
    assert!(
        text.lines().any(|l| l.starts_with("tributary_upstream_fetches_total")
            && l.contains(&format!("endpoint=\"{}\"", good.host))
            && l.contains("via=\"mirror\"")
            && l.contains("outcome=\"served\"")),
        "{text}"
    );

    // By tag: digest mirrors do not apply; a tag mirror does.
    let st = import(&reg, "app2", &format!("{source}/team/app:v1")).await;
    assert_eq!(st["status"], "Failure", "{st}");
    put_set(
        &reg,
        "imagetagmirrorsets",
        "tags",
        "imageTagMirrors",
        json!([
        {"source": format!("{source}/team/app"), "mirrors": [format!("{}/mirror/app", good.host)]}]),
    )
    .await;
    let st = import(&reg, "app2", &format!("{source}/team/app:v1")).await;
    assert_eq!(st["status"], "Success", "{st}");
}

#[tokio::test(flavor = "multi_thread")]
async fn never_contact_source_and_most_specific_match() {
    let reg = TestRegistry::builder().with_admin_token(ADMIN).start();
    let (source, registry_mirror, repo_mirror) = (Fake::start(), Fake::start(), Fake::start());
    let layer = b"layer".to_vec();
    let digest = source.image("team/app", "v1", layer.clone(), &Digest::sha256_of(&layer), Duration::ZERO);
    registry_mirror.image("team/app", "v1", layer.clone(), &Digest::sha256_of(&layer), Duration::ZERO);
    insecure(&reg, &[&source.host, &registry_mirror.host, &repo_mirror.host]).await;
    // A registry-wide rule and a repository rule: the repository one (whose mirror has nothing) wins.
    put_set(
        &reg,
        "imagedigestmirrorsets",
        "wide",
        "imageDigestMirrors",
        json!([
        {"source": source.host, "mirrors": [registry_mirror.host]}]),
    )
    .await;
    put_set(
        &reg,
        "imagedigestmirrorsets",
        "narrow",
        "imageDigestMirrors",
        json!([
        {"source": format!("{}/team/app", source.host), "mirrors": [format!("{}/x", repo_mirror.host)],
         "mirrorSourcePolicy": "NeverContactSource"}]),
    )
    .await;
    let st = import(&reg, "app", &format!("{}/team/app@{digest}", source.host)).await;
    assert_eq!(st["status"], "Failure", "{st}");
    let message = st["message"].as_str().unwrap();
    assert!(
        message.contains("NeverContactSource") && message.contains(&format!("{}/x", repo_mirror.host)),
        "{message}"
    );
    assert_eq!(repo_mirror.hits(&format!("/v2/x/manifests/{digest}")), 1);
    assert_eq!(registry_mirror.hits(&format!("/v2/team/app/manifests/{digest}")), 0, "the less specific rule");
    assert_eq!(source.hits(&format!("/v2/team/app/manifests/{digest}")), 0, "the source is never contacted");

    // The watch sees the narrow set go; then the registry-wide mirror serves.
    let mut watch = Client::new()
        .get(format!("{}{CONFIG}/imagedigestmirrorsets?watch=true&timeoutSeconds=5", reg.url()))
        .bearer_auth(ADMIN)
        .send()
        .await
        .unwrap();
    let (s, _) = call(&reg, Method::DELETE, &format!("{CONFIG}/imagedigestmirrorsets/narrow"), None).await;
    assert_eq!(s, StatusCode::OK);
    let mut seen = String::new();
    while let Ok(Some(chunk)) = tokio::time::timeout(Duration::from_secs(5), watch.chunk()).await.unwrap_or(Ok(None)) {
        seen.push_str(&String::from_utf8_lossy(&chunk));
        if seen.contains("\"DELETED\"") {
            break;
        }
    }
    assert!(seen.contains("\"ADDED\"") && seen.contains("\"DELETED\"") && seen.contains("narrow"), "{seen}");
    let st = import(&reg, "app", &format!("{}/team/app@{digest}", source.host)).await;
    assert_eq!(st["status"], "Success", "{st}");
    assert!(st["message"].as_str().unwrap().contains(&format!("served by mirror {}/team/app", registry_mirror.host)));
    assert_eq!(source.hits(&format!("/v2/team/app/manifests/{digest}")), 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn registries_conf_and_icsp_migration_from_the_cli() {
    let reg = TestRegistry::builder().with_admin_token(ADMIN).start();
    put_set(
        &reg,
        "imagedigestmirrorsets",
        "d",
        "imageDigestMirrors",
        json!([
        {"source": "src.io/team/app", "mirrors": ["m1.io/app"], "mirrorSourcePolicy": "NeverContactSource"}]),
    )
    .await;
    let icsp = json!({"apiVersion": "operator.openshift.io/v1alpha1", "kind": "ImageContentSourcePolicy",
        "metadata": {"name": "legacy"}, "spec": {"repositoryDigestMirrors": [{"source": "src.io/team/app", "mirrors": ["m2.io/app"]}]}});
    let (s, v) =
        call(&reg, Method::POST, "/apis/operator.openshift.io/v1alpha1/imagecontentsourcepolicies", Some(icsp)).await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    let block = json!({"spec": {"registrySources": {"blockedRegistries": ["bad.io"]}}});
    assert_eq!(call(&reg, Method::PATCH, &format!("{CONFIG}/images/cluster"), Some(block)).await.0, StatusCode::OK);

    let text = common::tributary(&reg, &["adm", "registries-conf"]).unwrap();
    let conf: toml::Value = toml::from_str(&text).unwrap_or_else(|e| panic!("{e}\n{text}"));
    let regs = conf["registry"].as_array().unwrap();
    let app = regs.iter().find(|r| r["location"].as_str() == Some("src.io/team/app")).expect(&text);
    assert_eq!(app["blocked"].as_bool(), Some(true), "{text}");
    let mirrors: Vec<&str> = app["mirror"].as_array().unwrap().iter().filter_map(|m| m["location"].as_str()).collect();
    assert_eq!(mirrors, ["m1.io/app", "m2.io/app"], "the set, then the ICSP, merged: {text}");
    assert!(regs.iter().any(|r| r["location"].as_str() == Some("bad.io") && r["blocked"].as_bool() == Some(true)));

    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("icsp.yaml");
    std::fs::write(
        &file,
        "apiVersion: operator.openshift.io/v1alpha1\nkind: ImageContentSourcePolicy\nmetadata:\n  name: ubi9repo\nspec:\n  \
         repositoryDigestMirrors:\n  - mirrors:\n    - example.io/example/ubi-minimal\n    source: registry.access.redhat.com/ubi9/ubi-minimal\n",
    )
    .unwrap();
    let out_dir = dir.path().join("idms-files");
    // Offline: no server involved.
    let o = std::process::Command::new(env!("CARGO_BIN_EXE_tributary"))
        .args(["adm", "migrate", "icsp"])
        .arg(&file)
        .arg("--dest-dir")
        .arg(&out_dir)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let out = String::from_utf8_lossy(&o.stdout).into_owned();
    let written = out.trim().strip_prefix("wrote ImageDigestMirrorSet to ").expect(&out);
    assert!(written.contains("imagedigestmirrorset_ubi9repo."), "{out}");
    let yaml = std::fs::read_to_string(written).unwrap();
    assert!(yaml.contains("kind: ImageDigestMirrorSet") && yaml.contains("imageDigestMirrors:"), "{yaml}");
    assert!(yaml.contains("apiVersion: config.openshift.io/v1") && !yaml.contains("repositoryDigestMirrors"), "{yaml}");
}

/// Pull-through from a mirror that sends other bytes for a layer: the next mirror is tried. A body of one piece
/// never reached the client before it was checked, so that read gets the right bytes at once; a body of many
/// pieces was already streaming, so that read ends in an error and the next read is served (locally) from the
/// next mirror. Nothing wrong is kept.
#[tokio::test(flavor = "multi_thread")]
async fn pull_through_passes_over_a_mirror_sending_wrong_blob_bytes() {
    let reg = TestRegistry::builder().with_admin_token(ADMIN).start();
    let source = dead_host();
    let (liar, good) = (Fake::start(), Fake::start());
    let small = b"the real small layer".to_vec();
    // 1 MiB: the fake sends it in 64 KiB pieces.
    let big: Vec<u8> = (0..(1u32 << 20)).map(|i| (i % 251) as u8).collect();
    let mut digests = Vec::new();
    for (stream, layer) in [("small", &small), ("big", &big)] {
        let d = Digest::sha256_of(layer);
        // Same manifest (digest and size of the real layer) on both; the liar's layer bytes are others.
        let mut wrong = layer.clone();
        wrong[0] ^= 0xff;
        let m = liar.image(&format!("lib/{stream}"), "v1", wrong, &d, Duration::ZERO);
        assert_eq!(good.image(&format!("lib/{stream}"), "v1", layer.clone(), &d, Duration::ZERO), m);
        digests.push((stream, m, d));
    }
    insecure(&reg, &[&source, &liar.host, &good.host]).await;
    put_set(
        &reg,
        "imagedigestmirrorsets",
        "two-mirrors",
        "imageDigestMirrors",
        json!([{"source": source.clone(), "mirrors": [liar.host.clone(), good.host.clone()]}]),
    )
    .await;
    let get = |d: &Digest, stream: &str| {
        Client::new().get(format!("{}/v2/ns/{stream}/blobs/{d}", reg.url())).bearer_auth(ADMIN).send()
    };
    for (stream, manifest, _) in &digests {
        let st = import(&reg, stream, &format!("{source}/lib/{stream}@{manifest}")).await;
        assert_eq!(st["status"], "Success", "{st}");
        assert!(st["message"].as_str().unwrap().contains(&format!("served by mirror {}/lib/{stream}", liar.host)));
    }

    // One piece: checked before the client got a byte; the right bytes from the second mirror at once.
    let d = &digests[0].2;
    let resp = get(d, "small").await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(resp.bytes().await.unwrap().to_vec(), small, "the first read of the small layer");
    assert_eq!(liar.hits(&format!("/v2/lib/small/blobs/{d}")), 1, "the mirror that served the manifest, first");
    assert_eq!(good.hits(&format!("/v2/lib/small/blobs/{d}")), 1);

    // Many pieces: the first read is cut (it had begun); the flight goes on to the next mirror and keeps its bytes.
    let d = &digests[1].2;
    let first = get(d, "big").await.unwrap();
    assert_eq!(first.status(), StatusCode::OK);
    let cut = first.bytes().await;
    assert!(cut.as_ref().map_or(true, |b| b.len() < big.len()), "the first read of the big layer was not cut");
    let mut served = None;
    for _ in 0..50 {
        let resp = get(d, "big").await.unwrap();
        if resp.status() == StatusCode::OK {
            if let Ok(b) = resp.bytes().await {
                served = Some(b.to_vec());
                break;
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(served.as_deref() == Some(&big[..]), "the next read of the big layer is not the real layer");
    assert_eq!(liar.hits(&format!("/v2/lib/big/blobs/{d}")), 1);
    assert_eq!(good.hits(&format!("/v2/lib/big/blobs/{d}")), 1, "fetched once from the second mirror, then local");
    // Local now: with both mirrors gone the layers still read.
    drop((liar, good));
    for (stream, layer, (_, _, d)) in [("small", &small, &digests[0]), ("big", &big, &digests[1])] {
        let resp = get(d, stream).await.unwrap();
        assert_eq!(resp.bytes().await.unwrap().to_vec(), *layer, "{stream} after the mirrors went");
    }
}

/// Pushes a one-layer image to `ns/{stream}:{tag}` through `reg`; returns its digest.
async fn push(reg: &TestRegistry, stream: &str, tag: &str, seed: &str) -> Digest {
    let config = json!({"architecture": "amd64", "os": "linux", "seed": seed}).to_string().into_bytes();
    let layer = format!("layer {seed}").into_bytes();
    for blob in [&config, &layer] {
        let d = Digest::sha256_of(blob);
        let r = Client::new()
            .post(format!("{}/v2/ns/{stream}/blobs/uploads/?digest={d}", reg.url()))
            .bearer_auth(ADMIN)
            .body(blob.clone())
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::CREATED);
    }
    let manifest = json!({"schemaVersion": 2, "mediaType": common::OCI_MANIFEST,
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": Digest::sha256_of(&config), "size": config.len()},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": Digest::sha256_of(&layer), "size": layer.len()}]})
    .to_string();
    let r = Client::new()
        .put(format!("{}/v2/ns/{stream}/manifests/{tag}", reg.url()))
        .bearer_auth(ADMIN)
        .header("Content-Type", common::OCI_MANIFEST)
        .body(manifest.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::CREATED, "{}", r.text().await.unwrap());
    Digest::sha256_of(manifest.as_bytes())
}

async fn stream(reg: &TestRegistry) -> Value {
    call(reg, Method::GET, "/apis/image.openshift.io/v1/namespaces/ns/imagestreams/app", None).await.1
}

/// `externalRegistryHostnames[0]` is the host in the references every replica writes and shows from the edit on;
/// without it, the configured public host again.
#[tokio::test(flavor = "multi_thread")]
async fn the_first_external_hostname_is_the_public_host_on_every_replica() {
    let regs = replicas(2);
    let (a, b) = (&regs[0], &regs[1]);
    let (s, _) = call(a, Method::POST, "/apis/tributary.dev/v1/namespaces", Some(json!({"name": "ns"}))).await;
    assert!(s.is_success());
    let before = push(b, "app", "v1", "one").await;
    let configured = b.host();
    assert_eq!(stream(b).await["status"]["dockerImageRepository"], format!("{configured}/ns/app"));

    let patch = json!({"spec": {"externalRegistryHostnames": ["registry.example.com", "other.example.com:8443"]}});
    let (s, v) = call(a, Method::PATCH, &format!("{CONFIG}/images/cluster"), Some(patch)).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["status"]["externalRegistryHostnames"][0], "registry.example.com", "{v}");
    // The other replica follows within moments, without a fetch or a restart.
    let mut shown = Value::Null;
    for _ in 0..50 {
        shown = stream(b).await["status"]["dockerImageRepository"].clone();
        if shown == "registry.example.com/ns/app" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(shown, "registry.example.com/ns/app");
    let after = push(b, "app", "v2", "two").await;
    let is = stream(b).await;
    let event = |tag: &str| {
        let t = is["status"]["tags"].as_array().unwrap().iter().find(|t| t["tag"] == tag).unwrap();
        t["items"][0]["dockerImageReference"].as_str().unwrap().to_owned()
    };
    assert_eq!(event("v2"), format!("registry.example.com/ns/app@{after}"), "{is:#}");
    assert_eq!(event("v1"), format!("{configured}/ns/app@{before}"), "an earlier push keeps its reference: {is:#}");
    let (_, istag) =
        call(a, Method::GET, "/apis/image.openshift.io/v1/namespaces/ns/imagestreamtags/app:v2", None).await;
    assert_eq!(istag["image"]["dockerImageReference"], format!("registry.example.com/ns/app@{after}"), "{istag:#}");

    // A bad host is refused; emptied, the configured host is back.
    let bad = json!({"spec": {"externalRegistryHostnames": ["not a host"]}});
    let (s, v) = call(a, Method::PATCH, &format!("{CONFIG}/images/cluster"), Some(bad)).await;
    assert_eq!((s, v["reason"].as_str()), (StatusCode::UNPROCESSABLE_ENTITY, Some("Invalid")), "{v}");
    let clear = json!({"spec": {"externalRegistryHostnames": null}});
    assert_eq!(call(b, Method::PATCH, &format!("{CONFIG}/images/cluster"), Some(clear)).await.0, StatusCode::OK);
    let mut shown = Value::Null;
    for _ in 0..50 {
        shown = stream(a).await["status"]["dockerImageRepository"].clone();
        if shown == format!("{}/ns/app", a.host()) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(shown, format!("{}/ns/app", a.host()));
}
