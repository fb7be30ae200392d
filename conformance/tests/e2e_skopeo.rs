//! End-to-end: skopeo against a real Tributary server.
mod common;

use common::*;

const TOOLS: &[&str] = &["skopeo", "umoci", "busybox", "jq", "sha256sum"];

/// Pushes an OCI image unchanged and pulls it back: manifest and blobs are byte-identical.
#[test]
fn skopeo_oci_image_round_trip() {
    if !tools_present(TOOLS) {
        return;
    }
    let images = TestImages::get();
    let tmp = tempdir("e2e-skopeo-");
    let reg = Registry::start(&tmp.path().join("data"));
    let skopeo = Skopeo::new();

    let src_digest = images.digest("app");
    let pushed = skopeo.push(&reg, &images.oci("app"), "ns/app:v1", &[]);
    assert_eq!(pushed, src_digest, "skopeo pushed a different manifest than the layout's");

    // The served manifest is the exact bytes of the source manifest.
    let raw = skopeo.inspect_raw(&reg, "ns/app:v1");
    assert_eq!(sha256_digest(&raw), src_digest);
    assert_eq!(raw, images.blob(&src_digest), "manifest bytes changed");
    let by_digest = skopeo.inspect_raw(&reg, &format!("ns/app@{src_digest}"));
    assert_eq!(by_digest, raw);

    // The HTTP API agrees: media type, digest header and every blob.
    let r =
        reg.request("GET", "/v2/ns/app/manifests/v1", &[("Accept", "application/vnd.oci.image.manifest.v1+json")], &[]);
    assert_eq!(r.status, 200, "{r}");
    assert_eq!(r.header("content-type"), Some("application/vnd.oci.image.manifest.v1+json"), "{r}");
    assert_eq!(r.header("docker-content-digest"), Some(src_digest.as_str()), "{r}");
    for blob in manifest_blobs(&images.manifest("app")) {
        let r = reg.get(&format!("/v2/ns/app/blobs/{blob}"));
        assert_eq!(r.status, 200, "GET blob {blob}: {r}");
        assert_eq!(sha256_digest(&r.body), blob);
    }

    // skopeo inspect reads the config.
    let info = skopeo.inspect(&reg, "ns/app:v1", &[]);
    assert_eq!(info["Digest"], src_digest.as_str(), "{info:#}");
    assert_eq!(info["Architecture"], "amd64", "{info:#}");
    assert_eq!(info["Os"], "linux", "{info:#}");
    assert_eq!(info["Labels"]["e2e.tag"], "app", "{info:#}");
    assert!(info["Env"].as_array().unwrap().iter().any(|e| e == "GREETING=hello from tributary e2e"), "{info:#}");
    assert_eq!(info["Layers"].as_array().unwrap().len(), 3, "{info:#}");
    let config = skopeo.inspect(&reg, "ns/app:v1", &["--config"]);
    assert_eq!(config["config"]["WorkingDir"], "/srv", "{config:#}");
    assert!(config["config"]["ExposedPorts"]["8080/tcp"].is_object(), "{config:#}");
    assert_eq!(config["config"]["Cmd"][0], "/bin/sh", "{config:#}");

    // Pull back into a fresh OCI layout: same manifest digest and blob bytes.
    let out = tmp.path().join("pulled");
    skopeo.pull(&reg, "ns/app:v1", &format!("oci:{}:v1", out.display()), &[]);
    assert_eq!(layout_digest(&out, "v1"), src_digest);
    for blob in manifest_blobs(&images.manifest("app")) {
        assert_eq!(layout_blob(&out, &blob), images.blob(&blob), "blob {blob} differs after round trip");
    }

    assert_eq!(skopeo.list_tags(&reg, "ns/app"), ["v1"]);
    reg.assert_stream_tag("ns", "app", "v1", &src_digest);
}

/// Pushes with conversion to Docker schema 2 and pulls back the exact manifest bytes.
#[test]
fn skopeo_docker_schema2_round_trip() {
    if !tools_present(TOOLS) {
        return;
    }
    let images = TestImages::get();
    let tmp = tempdir("e2e-skopeo-");
    let reg = Registry::start(&tmp.path().join("data"));
    let skopeo = Skopeo::new();

    let pushed = skopeo.push(&reg, &images.oci("app"), "ns/docker:v1", &["--format", "v2s2"]);
    assert_ne!(pushed, images.digest("app"), "v2s2 conversion should change the manifest");
    let raw = skopeo.inspect_raw(&reg, "ns/docker:v1");
    assert_eq!(sha256_digest(&raw), pushed);
    let manifest: serde_json::Value = serde_json::from_slice(&raw).unwrap();
    assert_eq!(manifest["mediaType"], "application/vnd.docker.distribution.manifest.v2+json", "{manifest:#}");
    assert_eq!(manifest["config"]["mediaType"], "application/vnd.docker.container.image.v1+json");

    let r = reg.request(
        "GET",
        "/v2/ns/docker/manifests/v1",
        &[("Accept", "application/vnd.docker.distribution.manifest.v2+json")],
        &[],
    );
    assert_eq!(r.status, 200, "{r}");
    assert_eq!(r.header("content-type"), Some("application/vnd.docker.distribution.manifest.v2+json"), "{r}");
    assert_eq!(r.body, raw);

    // dir: keeps the manifest bytes as served.
    let out = tmp.path().join("dir");
    skopeo.pull(&reg, "ns/docker:v1", &format!("dir:{}", out.display()), &[]);
    let pulled = std::fs::read(out.join("manifest.json")).unwrap();
    assert_eq!(sha256_digest(&pulled), pushed);
    for blob in manifest_blobs(&manifest) {
        let file = out.join(blob.strip_prefix("sha256:").unwrap());
        assert_eq!(file_digest(&file), blob, "blob {blob} in dir: copy");
    }

    let info = skopeo.inspect(&reg, "ns/docker:v1", &[]);
    assert_eq!(info["Labels"]["e2e.tag"], "app", "{info:#}");
    reg.assert_stream_tag("ns", "docker", "v1", &pushed);
}

/// Copies a two-platform OCI index with --all, both ways: the index digest is unchanged.
#[test]
fn skopeo_multi_platform_index_all() {
    if !tools_present(TOOLS) {
        return;
    }
    let images = TestImages::get();
    let tmp = tempdir("e2e-skopeo-");
    let reg = Registry::start(&tmp.path().join("data"));
    let skopeo = Skopeo::new();

    let index_digest = images.digest("multi");
    let pushed = skopeo.push(&reg, &images.oci("multi"), "ns/multi:v1", &["--all"]);
    assert_eq!(pushed, index_digest);
    let raw = skopeo.inspect_raw(&reg, "ns/multi:v1");
    assert_eq!(raw, images.blob(&index_digest), "index bytes changed");

    let r =
        reg.request("GET", "/v2/ns/multi/manifests/v1", &[("Accept", "application/vnd.oci.image.index.v1+json")], &[]);
    assert_eq!(r.status, 200, "{r}");
    assert_eq!(r.header("content-type"), Some("application/vnd.oci.image.index.v1+json"), "{r}");

    // Each platform's manifest is there by digest, and skopeo picks the right one.
    for (arch, tag) in [("amd64", "amd64"), ("arm64", "arm64")] {
        let d = images.digest(tag);
        assert_eq!(skopeo.inspect_raw(&reg, &format!("ns/multi@{d}")), images.blob(&d));
        let info = skopeo.inspect(&reg, "ns/multi:v1", &["--override-arch", arch, "--override-os", "linux"]);
        assert_eq!(info["Architecture"], arch, "{info:#}");
        // (skopeo reports the index's digest as "Digest"; the layers tell which image it chose.)
        let layers: Vec<String> = manifest_blobs(&images.manifest(tag)).into_iter().skip(1).collect();
        assert_eq!(info["Layers"], serde_json::json!(layers), "{info:#}");
    }

    let out = tmp.path().join("pulled");
    skopeo.pull(&reg, "ns/multi:v1", &format!("oci:{}:v1", out.display()), &["--all"]);
    assert_eq!(layout_digest(&out, "v1"), index_digest);
    for tag in ["amd64", "arm64"] {
        let d = images.digest(tag);
        assert_eq!(layout_blob(&out, &d), images.blob(&d));
        for blob in manifest_blobs(&images.manifest(tag)) {
            assert_eq!(layout_blob(&out, &blob), images.blob(&blob), "blob {blob} differs after round trip");
        }
    }
    reg.assert_stream_tag("ns", "multi", "v1", &index_digest);
}

/// list-tags, delete, and re-pushing a tag with a different image (stream history).
#[test]
fn skopeo_tags_delete_and_repush() {
    if !tools_present(TOOLS) {
        return;
    }
    let images = TestImages::get();
    let tmp = tempdir("e2e-skopeo-");
    let reg = Registry::start(&tmp.path().join("data"));
    let skopeo = Skopeo::new();

    let app = skopeo.push(&reg, &images.oci("app"), "ns/tags:v1", &[]);
    let app2 = skopeo.push(&reg, &images.oci("app2"), "ns/tags:v2", &[]);
    assert_ne!(app, app2);
    assert_eq!(skopeo.list_tags(&reg, "ns/tags"), ["v1", "v2"]);

    // Re-push: `latest` first points at app, then at app2; the stream keeps both, newest first.
    skopeo.push(&reg, &images.oci("app"), "ns/tags:latest", &[]);
    skopeo.push(&reg, &images.oci("app2"), "ns/tags:latest", &[]);
    assert_eq!(sha256_digest(&skopeo.inspect_raw(&reg, "ns/tags:latest")), app2);
    assert_eq!(skopeo.list_tags(&reg, "ns/tags"), ["latest", "v1", "v2"]);
    if reg.is_tributary() {
        reg.assert_stream_tag("ns", "tags", "latest", &app2);
        let history = reg.stream_tag_history("ns", "tags", "latest");
        assert_eq!(history.get(..2), Some(&[app2.clone(), app.clone()][..]), "latest history: {history:?}");
        reg.assert_stream_tag("ns", "tags", "v1", &app);
    }

    // skopeo delete removes the manifest (by digest): v1 goes, the app2 tags stay.
    skopeo.delete(&reg, "ns/tags:v1");
    run_fails(&mut skopeo.inspect_cmd(&reg, "ns/tags:v1", &["--raw"]), SHORT);
    let r = reg.head(&format!("/v2/ns/tags/manifests/{app}"));
    assert_eq!(r.status, 404, "deleted manifest still served: {r}");
    assert_eq!(skopeo.list_tags(&reg, "ns/tags"), ["latest", "v2"]);
    assert_eq!(sha256_digest(&skopeo.inspect_raw(&reg, "ns/tags:v2")), app2);
    if reg.is_tributary() {
        let is = reg.image_stream("ns", "tags").expect("stream ns/tags");
        let tags = stream_tags(&is);
        assert!(!tags.contains(&"v1".to_string()), "deleted tag v1 still in the stream: {is:#}");
        reg.assert_stream_tag("ns", "tags", "v2", &app2);
    }

    // Unknown things are 404 with an OCI error body.
    let r = reg.get("/v2/ns/tags/manifests/nope");
    assert_eq!(r.status, 404, "{r}");
    assert_eq!(r.json()["errors"][0]["code"], "MANIFEST_UNKNOWN", "{r}");
    run_fails(&mut skopeo.inspect_cmd(&reg, "ns/nothing:v1", &["--raw"]), SHORT);
    if reg.is_tributary() {
        assert!(reg.image_stream("ns", "nothing").is_none());
    }
}
