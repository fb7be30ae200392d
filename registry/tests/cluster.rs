//! The image lookup admission webhook through a real registry (always runs): AdmissionReviews as the API server
//! sends them, POSTed to `/admission/image-lookup` of a registry with pushed images, answered with a JSON Patch
//! that resolves `ruby:2.5` to the tag's pull spec by digest only where lookup is on; bad bodies get a 400
//! `Status`; the route does not exist unless `[cluster] admission` is on. Also `tributary adm admission-config`'s
//! output. The same webhook and the trigger controller against a real kube-apiserver are in `cluster_e2e.rs`.

mod common;

use base64::Engine;
use names::Digest;
use registry::config::cluster::ClusterConfig;
use registry::testing::TestRegistry;
use reqwest::StatusCode;
use serde_json::{json, Value};

const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";

async fn push(reg: &TestRegistry, repo: &str, tag: &str, seed: &str) -> Digest {
    let http = reqwest::Client::new();
    let blob = |bytes: Vec<u8>| {
        let d = Digest::sha256_of(&bytes);
        let req = http.post(format!("{}/v2/{repo}/blobs/uploads/?digest={d}", reg.url())).body(bytes);
        async move {
            assert_eq!(req.send().await.unwrap().status(), StatusCode::CREATED);
            d
        }
    };
    let config = json!({"architecture":"amd64","os":"linux","config":{"Cmd":["echo", seed]}}).to_string();
    let c = blob(config.clone().into_bytes()).await;
    let l = blob(seed.as_bytes().to_vec()).await;
    let m = json!({"schemaVersion":2,"mediaType":OCI_MANIFEST,
        "config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":c,"size":config.len()},
        "layers":[{"mediaType":"application/vnd.oci.image.layer.v1.tar","digest":l,"size":seed.len()}]})
    .to_string();
    let r = http
        .put(format!("{}/v2/{repo}/manifests/{tag}", reg.url()))
        .header("Content-Type", OCI_MANIFEST)
        .body(m.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::CREATED);
    Digest::sha256_of(m.as_bytes())
}

async fn set_lookup(reg: &TestRegistry, ns: &str, stream: &str) {
    let r = reqwest::Client::new()
        .patch(format!("{}/apis/image.openshift.io/v1/namespaces/{ns}/imagestreams/{stream}", reg.url()))
        .header("Content-Type", "application/merge-patch+json")
        .body(json!({"spec": {"lookupPolicy": {"local": true}}}).to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK, "{}", r.text().await.unwrap());
}

/// An AdmissionReview as kube-apiserver sends it for creating `object` of `kind` in `ns`.
fn review(group: &str, kind: &str, resource: &str, ns: &str, object: Value) -> Value {
    json!({
        "apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
        "request": {
            "uid": "705ab4f5-6393-11e8-b7cc-42010a800002",
            "kind": {"group": group, "version": "v1", "kind": kind},
            "resource": {"group": group, "version": "v1", "resource": resource},
            "requestKind": {"group": group, "version": "v1", "kind": kind},
            "requestResource": {"group": group, "version": "v1", "resource": resource},
            "name": object["metadata"]["name"], "namespace": ns, "operation": "CREATE",
            "userInfo": {"username": "admin", "groups": ["system:authenticated"]},
            "object": object, "oldObject": null, "dryRun": false,
            "options": {"apiVersion": "meta.k8s.io/v1", "kind": "CreateOptions"}
        }
    })
}

fn deployment(name: &str, image: &str) -> Value {
    json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": name},
        "spec": {"selector": {"matchLabels": {"app": name}}, "template": {
            "metadata": {"labels": {"app": name}},
            "spec": {"containers": [{"name": "web", "image": image}, {"name": "proxy", "image": "docker.io/library/nginx:1"}]}}}})
}

async fn admit(reg: &TestRegistry, body: &str) -> (StatusCode, Value) {
    let r = reqwest::Client::new()
        .post(format!("{}/admission/image-lookup", reg.url()))
        .header("Content-Type", "application/json")
        .body(body.to_owned())
        .send()
        .await
        .unwrap();
    let status = r.status();
    (status, r.json().await.unwrap_or(Value::Null))
}

/// The response's patch applied to `object`.
fn patched(answer: &Value, mut object: Value) -> Value {
    let response = &answer["response"];
    assert_eq!(response["allowed"], true, "{answer}");
    if !response["patch"].is_null() {
        assert_eq!(response["patchType"], "JSONPatch");
        // Go's []byte: base64 text, or (as kube-core writes it, and the API server reads too) a list of bytes.
        let bytes = match &response["patch"] {
            Value::String(p) => base64::engine::general_purpose::STANDARD.decode(p).unwrap(),
            other => serde_json::from_value::<Vec<u8>>(other.clone()).unwrap(),
        };
        let patch: json_patch::Patch = serde_json::from_slice(&bytes).unwrap();
        json_patch::patch(&mut object, &patch).unwrap();
    }
    object
}

fn admission_on() -> ClusterConfig {
    ClusterConfig { admission: true, ..ClusterConfig::default() }
}

#[tokio::test]
async fn short_names_resolve_where_lookup_is_on_and_nowhere_else() {
    let reg = TestRegistry::builder().with_cluster(admission_on()).start();
    let digest = push(&reg, "app/ruby", "2.5", "ruby 2.5").await;
    set_lookup(&reg, "app", "ruby").await;
    push(&reg, "other/ruby", "2.5", "ruby 2.5 elsewhere").await;
    let spec = format!("{}/app/ruby@{digest}", reg.url().trim_start_matches("http://"));

    // Lookup on for the stream: the web container resolves, the fully named one stays.
    let d = deployment("web", "ruby:2.5");
    let (status, answer) =
        admit(&reg, &review("apps", "Deployment", "deployments", "app", d.clone()).to_string()).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(answer["apiVersion"], "admission.k8s.io/v1");
    assert_eq!(answer["response"]["uid"], "705ab4f5-6393-11e8-b7cc-42010a800002");
    let out = patched(&answer, d);
    assert_eq!(out["spec"]["template"]["spec"]["containers"][0]["image"], json!(spec));
    assert_eq!(out["spec"]["template"]["spec"]["containers"][1]["image"], "docker.io/library/nginx:1");

    // A Pod by digest resolves too; an unknown tag and another stream are left alone.
    let pod = json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"}, "spec": {"containers": [
        {"name": "a", "image": format!("ruby@{digest}")}, {"name": "b", "image": "ruby:9"}, {"name": "c", "image": "python:3"}]}});
    let (_, answer) = admit(&reg, &review("", "Pod", "pods", "app", pod.clone()).to_string()).await;
    let out = patched(&answer, pod);
    assert_eq!(out["spec"]["containers"][0]["image"], json!(spec));
    assert_eq!(
        (out["spec"]["containers"][1]["image"].as_str(), out["spec"]["containers"][2]["image"].as_str()),
        (Some("ruby:9"), Some("python:3"))
    );

    // The namespace `other` has a `ruby` stream without lookup: untouched, unless the resource asks for it.
    let d = deployment("web", "ruby:2.5");
    let (_, answer) = admit(&reg, &review("apps", "Deployment", "deployments", "other", d.clone()).to_string()).await;
    assert!(answer["response"]["patch"].is_null(), "{answer}");
    assert_eq!(patched(&answer, d.clone()), d);
    let mut asking = d.clone();
    asking["spec"]["template"]["metadata"]["annotations"] =
        json!({"alpha.image.policy.openshift.io/resolve-names": "*"});
    let (_, answer) =
        admit(&reg, &review("apps", "Deployment", "deployments", "other", asking.clone()).to_string()).await;
    let image = patched(&answer, asking)["spec"]["template"]["spec"]["containers"][0]["image"].clone();
    assert!(image.as_str().unwrap().contains("/other/ruby@sha256:"), "{image}");

    // A namespace with no such stream, and a kind without a pod template: allowed, unchanged.
    let (_, answer) =
        admit(&reg, &review("apps", "Deployment", "deployments", "empty", deployment("w", "ruby:2.5")).to_string())
            .await;
    assert!(answer["response"]["patch"].is_null() && answer["response"]["allowed"] == true, "{answer}");
    let cm = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c"}, "data": {"image": "ruby:2.5"}});
    let (_, answer) = admit(&reg, &review("", "ConfigMap", "configmaps", "app", cm).to_string()).await;
    assert!(answer["response"]["patch"].is_null() && answer["response"]["allowed"] == true, "{answer}");
}

#[tokio::test]
async fn namespaces_can_be_mapped() {
    let mut cluster = admission_on();
    cluster.namespaces = registry::cluster::lookup::NamespaceMap::parse_pairs(&["prod=app".into()]).unwrap();
    let reg = TestRegistry::builder().with_cluster(cluster).start();
    let digest = push(&reg, "app/ruby", "2.5", "ruby").await;
    set_lookup(&reg, "app", "ruby").await;
    let d = deployment("web", "ruby:2.5");
    let (_, answer) = admit(&reg, &review("apps", "Deployment", "deployments", "prod", d.clone()).to_string()).await;
    let image = patched(&answer, d)["spec"]["template"]["spec"]["containers"][0]["image"].clone();
    assert!(image.as_str().unwrap().ends_with(&format!("/app/ruby@{digest}")), "{image}");
}

#[tokio::test]
async fn bad_reviews_get_a_400_status_and_the_route_is_off_by_default() {
    let reg = TestRegistry::builder().with_cluster(admission_on()).start();
    for body in
        ["not json", "{}", r#"{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview"}"#, r#"{"request": 5}"#]
    {
        let (status, answer) = admit(&reg, body).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
        assert_eq!((answer["kind"].as_str(), answer["code"].as_u64()), (Some("Status"), Some(400)), "{body}: {answer}");
        assert!(answer["message"].as_str().unwrap().contains("AdmissionReview"), "{answer}");
    }
    let off = TestRegistry::start();
    let (status, _) =
        admit(&off, &review("", "Pod", "pods", "app", json!({"metadata": {"name": "p"}})).to_string()).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}

#[test]
fn admission_config_prints_a_webhook_configuration() {
    let dir = tempfile::tempdir().unwrap();
    let ca = dir.path().join("ca.pem");
    std::fs::write(&ca, "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n").unwrap();
    let run = |args: &[&str]| {
        std::process::Command::new(env!("CARGO_BIN_EXE_tributary")).args(args).output().expect("run tributary")
    };
    let ca_arg = ca.to_str().unwrap();
    let o = run(&[
        "adm",
        "admission-config",
        "--server",
        "https://reg.example:5000",
        "--ca-file",
        ca_arg,
        "--exclude-namespace",
        "tributary",
        "-o",
        "json",
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let v: Value = serde_json::from_slice(&o.stdout).unwrap();
    let w = &v["webhooks"][0];
    assert_eq!(w["clientConfig"]["url"], "https://reg.example:5000/admission/image-lookup");
    let ca_bundle =
        base64::engine::general_purpose::STANDARD.decode(w["clientConfig"]["caBundle"].as_str().unwrap()).unwrap();
    assert_eq!(ca_bundle, std::fs::read(&ca).unwrap());
    assert_eq!((w["sideEffects"].as_str(), w["failurePolicy"].as_str()), (Some("None"), Some("Ignore")));
    assert!(w["namespaceSelector"]["matchExpressions"][0]["values"].as_array().unwrap().contains(&json!("tributary")));
    let yaml = run(&["adm", "admission-config", "--server", "https://reg.example:5000", "--ca-file", ca_arg]);
    let text = String::from_utf8_lossy(&yaml.stdout);
    assert!(text.contains("kind: MutatingWebhookConfiguration") && text.contains("sideEffects: None"), "{text}");
    // http is refused: the API server calls webhooks over https only.
    let o = run(&["adm", "admission-config", "--server", "http://reg.example:5000", "--ca-file", ca_arg]);
    assert_eq!(o.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&o.stderr).contains("https only"));
}
