//! End-to-end: podman push/pull against a real Tributary server (root, isolated storage).
mod common;

use std::path::Path;

use common::*;

const TOOLS: &[&str] = &["podman", "skopeo", "umoci", "busybox", "jq", "sha256sum"];

fn podman_login(dir: &Path, reg: &Registry) {
    if let Some(token) = &reg.token {
        run_ok(podman(dir).args(["login", "--tls-verify=false", "-u", "admin", "-p", token]).arg(&reg.host), SHORT);
    }
}

#[test]
fn podman_push_pull_round_trip() {
    if !tools_present(TOOLS) {
        return;
    }
    let images = TestImages::get();
    let tmp = tempdir("e2e-podman-");
    let reg = Registry::start(&tmp.path().join("data"));
    let skopeo = Skopeo::new();
    let pd = tmp.path().join("podman");
    podman_login(&pd, &reg);

    // Load the test image into podman's storage from the OCI layout.
    let o = run_ok(podman(&pd).args(["pull", "-q"]).arg(images.oci("app")), SHORT);
    let id = o.stdout.trim().lines().last().expect("image id").to_string();
    run_ok(podman(&pd).args(["tag", &id, "localhost/e2e/app:v1"]), SHORT);

    // Push in podman's default format and as Docker schema 2.
    let mut pushed = Vec::new();
    for (tag, format) in [("v1", None), ("v1-docker", Some("v2s2"))] {
        let digestfile = pd.join(format!("digest-{tag}"));
        let mut c = podman(&pd);
        c.args(["push", "--tls-verify=false"]).arg("--digestfile").arg(&digestfile);
        if let Some(f) = format {
            c.args(["--format", f]);
        }
        c.arg("localhost/e2e/app:v1").arg(reg.docker_ref(&format!("ns/podapp:{tag}")));
        run_ok(&mut c, LONG);
        let digest = std::fs::read_to_string(&digestfile).unwrap().trim().to_string();
        // What the registry serves is what podman pushed.
        let raw = skopeo.inspect_raw(&reg, &format!("ns/podapp:{tag}"));
        assert_eq!(sha256_digest(&raw), digest, "ns/podapp:{tag}");
        let manifest: serde_json::Value = serde_json::from_slice(&raw).unwrap();
        if format.is_some() {
            assert_eq!(manifest["mediaType"], "application/vnd.docker.distribution.manifest.v2+json");
        }
        // The image config is the same object whatever the manifest format.
        assert_eq!(manifest["config"]["digest"], images.manifest("app")["config"]["digest"], "{manifest:#}");
        reg.assert_stream_tag("ns", "podapp", tag, &digest);
        pushed.push((tag, digest));
    }
    assert_eq!(skopeo.list_tags(&reg, "ns/podapp"), ["v1", "v1-docker"]);

    // Forget everything locally, then pull back each tag (by tag and by digest).
    let config = images.manifest("app")["config"]["digest"].as_str().unwrap().to_string();
    for (tag, digest) in &pushed {
        run_ok(podman(&pd).args(["rmi", "--all", "--force"]), SHORT);
        let by_tag = reg.image_ref(&format!("ns/podapp:{tag}"));
        run_ok(podman(&pd).args(["pull", "--tls-verify=false"]).arg(&by_tag), LONG);
        let o = run_ok(podman(&pd).args(["image", "inspect", "--format", "{{.Digest}} {{.Id}}"]).arg(&by_tag), SHORT);
        let mut parts = o.stdout.split_whitespace();
        assert_eq!(parts.next(), Some(digest.as_str()), "podman image inspect {by_tag}: {}", o.stdout);
        assert_eq!(parts.next(), config.strip_prefix("sha256:"), "image id of {by_tag}");

        let by_digest = reg.image_ref(&format!("ns/podapp@{digest}"));
        run_ok(podman(&pd).args(["pull", "--tls-verify=false"]).arg(&by_digest), LONG);
        let o =
            run_ok(podman(&pd).args(["image", "inspect", "--format", "{{json .RepoDigests}}"]).arg(&by_digest), SHORT);
        assert!(o.stdout.contains(&by_digest), "RepoDigests of {by_digest}: {}", o.stdout);
    }
    let o =
        run_ok(podman(&pd).args(["images", "--digests", "--format", "{{.Repository}}:{{.Tag}} {{.Digest}}"]), SHORT);
    eprintln!("{}", o.stdout);
    assert!(o.stdout.contains(&format!("{} {}", reg.image_ref("ns/podapp:v1-docker"), pushed[1].1)), "{}", o.stdout);
}
