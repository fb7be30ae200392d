//! End-to-end: docker push/pull against a real Tributary server, through a Docker engine that
//! the test starts itself (its own data root, exec root and socket; no bridge, no iptables).
mod common;

use common::*;

const TOOLS: &[&str] = &["dockerd", "docker", "skopeo", "umoci", "busybox", "jq", "sha256sum"];

/// `repo@digest` entries of `docker image inspect`.
fn repo_digests(engine: &DockerEngine, image: &str) -> Vec<String> {
    let o = run_ok(engine.docker().args(["image", "inspect", "--format", "{{json .RepoDigests}}", image]), SHORT);
    serde_json::from_str(o.stdout.trim()).unwrap_or_else(|e| panic!("RepoDigests {:?}: {e}", o.stdout))
}

#[test]
fn docker_push_pull_round_trip() {
    if !tools_present(TOOLS) {
        return;
    }
    let images = TestImages::get();
    let tmp = tempdir("e2e-docker-");
    let reg = Registry::start(&tmp.path().join("data"));
    let skopeo = Skopeo::new();
    let engine = DockerEngine::start(&tmp.path().join("docker"));
    if let Some(token) = &reg.token {
        run_ok(engine.docker().args(["login", "-u", "admin", "-p", token, &reg.host]), SHORT);
    }

    // Seed the registry with skopeo, and pull the image into the engine.
    let src = skopeo.push(&reg, &images.oci("app"), "ns/app:v1", &[]);
    let pulled = reg.image_ref("ns/app:v1");
    let o = run_ok(engine.docker().args(["pull", &pulled]), LONG);
    assert!(o.stdout.contains(&format!("Digest: {src}")), "docker pull output:\n{}", o.stdout);
    assert!(repo_digests(&engine, &pulled).contains(&reg.image_ref(&format!("ns/app@{src}"))));

    // Tag it into another stream and push.
    let target = reg.image_ref("ns/dockerapp:v1");
    run_ok(engine.docker().args(["tag", &pulled, &target]), SHORT);
    let o = run_ok(engine.docker().args(["push", &target]), LONG);
    eprintln!("{}", o.stdout);
    let pushed = docker_pushed_digest(&o.stdout);
    let raw = skopeo.inspect_raw(&reg, "ns/dockerapp:v1");
    assert_eq!(sha256_digest(&raw), pushed, "served manifest is not what docker pushed");
    let manifest: serde_json::Value = serde_json::from_slice(&raw).unwrap();
    assert_eq!(manifest["config"]["digest"], images.manifest("app")["config"]["digest"], "{manifest:#}");
    assert_eq!(skopeo.list_tags(&reg, "ns/dockerapp"), ["v1"]);
    reg.assert_stream_tag("ns", "app", "v1", &src);
    reg.assert_stream_tag("ns", "dockerapp", "v1", &pushed);

    // Drop every local image and pull the pushed one back, by tag and by digest.
    run_ok(engine.docker().args(["rmi", "--force", &pulled, &target]), SHORT);
    let o = run_ok(engine.docker().args(["images", "--quiet"]), SHORT);
    assert!(o.stdout.trim().is_empty(), "images left: {}", o.stdout);
    let o = run_ok(engine.docker().args(["pull", &target]), LONG);
    assert!(o.stdout.contains(&format!("Digest: {pushed}")), "docker pull output:\n{}", o.stdout);
    let by_digest = reg.image_ref(&format!("ns/dockerapp@{pushed}"));
    run_ok(engine.docker().args(["pull", &by_digest]), LONG);
    assert!(repo_digests(&engine, &target).contains(&by_digest));

    // The content is intact: the image runs where the engine can run containers.
    let o = run(engine.docker().args(["run", "--rm", "--network", "none", &target]), LONG);
    if o.success() {
        assert_eq!(o.stdout.trim(), "hello from tributary e2e", "docker run output");
    } else {
        eprintln!("note: `docker run` does not work here (not a registry problem), skipped:\n{}", o.stderr);
    }
}
