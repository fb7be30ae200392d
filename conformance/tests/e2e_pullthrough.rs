//! End-to-end: import from external registries and pull-through (issue 5), against real upstreams that the
//! tests start themselves on free loopback ports.
//!
//! - Debian's `docker-registry` (CNCF distribution 2.8) without auth: `tributary import-image --reference-policy
//!   local`, pulls through Tributary with skopeo, podman and docker (a private dockerd), exactly one upstream GET
//!   per layer (counted in the upstream's access log), pulls again with the upstream killed, and a manifest list
//!   imported with `--import-mode PreserveOriginal` served with the upstream's digest.
//! - The same with a ~100 MiB single-layer image: 8 concurrent skopeo pulls cause one upstream GET of the layer;
//!   the cache-miss and cache-hit pull times of a second such image are printed.
//! - `docker-registry` with htpasswd auth: import fails as Unauthorized (shown as the tag's `ImportSuccess`
//!   condition) until a pull secret is created with `tributary create secret docker-registry`.
//! - A second Tributary (token auth) as the upstream, through a pull secret.
//!
//! Needs: skopeo, docker-registry, umoci, busybox, jq, sha256sum, tar (the test images and the big image);
//! podman and dockerd + docker for the client pulls of the first test (each skipped when missing unless
//! `TRIBUTARY_E2E_REQUIRED=1`). The tests take turns (one lock) so that the timings are not disturbed.
mod common;

// The upstream (`Upstream`), `seed`, and the CLI and API helpers are in common/upstream.rs.

use std::fs::{self, File};
use std::io::{self, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use common::*;
use serde_json::json;

const TOOLS: &[&str] = &["skopeo", "docker-registry", "umoci", "busybox", "jq", "sha256sum", "tar"];

/// One test at a time: they move hundreds of MiB on two cores, and the second one measures times.
fn serial() -> MutexGuard<'static, ()> {
    static LOCK: Mutex<()> = Mutex::new(());
    LOCK.lock().unwrap_or_else(|e| e.into_inner())
}

/// What every test here starts with: the tools it needs (else it is skipped), its turn, a scratch directory, skopeo.
fn begin(prefix: &str) -> Option<(MutexGuard<'static, ()>, tempfile::TempDir, Skopeo)> {
    if !tools_present(TOOLS) {
        return None;
    }
    let turn = serial();
    Some((turn, tempdir(prefix), Skopeo::new()))
}

/// Pushes a blob from a file to an unauthenticated registry: POST an upload, then one PUT with the whole body.
fn push_blob_file(host: &str, repo: &str, file: &Path, digest: &str) {
    let r = http(host, "POST", &format!("/v2/{repo}/blobs/uploads/"), &[], &[]).expect("POST upload");
    assert_eq!(r.status, 202, "POST blob upload: {r}");
    let location = path_of(r.header("location").expect("Location"));
    let size = fs::metadata(file).unwrap().len();
    let mut s = TcpStream::connect(host).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(120))).unwrap();
    let head = format!(
        "PUT {} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\nContent-Type: application/octet-stream\r\n\
         Content-Length: {size}\r\n\r\n",
        with_query(&location, &format!("digest={digest}"))
    );
    s.write_all(head.as_bytes()).unwrap();
    io::copy(&mut File::open(file).unwrap(), &mut s).expect("send blob");
    let r = read_response(&mut s, false).expect("PUT blob response");
    assert_eq!(r.status, 201, "PUT blob {digest}: {r}");
}

/// A one-layer image whose layer is a tar of `size` random bytes, pushed to `up` as `{repo}:1`. Returns the
/// manifest digest and the layer digest.
fn push_big_image(up: &Upstream, work: &Path, repo: &str, size: u64) -> (String, String) {
    let dir = work.join(format!("big-{}", unique()));
    fs::create_dir_all(dir.join("content")).unwrap();
    write_random_file(&dir.join("content/random.bin"), size);
    let tar = dir.join("layer.tar");
    run_ok(Command::new("tar").arg("-cf").arg(&tar).arg("-C").arg(dir.join("content")).arg("random.bin"), SHORT);
    fs::remove_file(dir.join("content/random.bin")).unwrap();
    let layer = file_digest(&tar);
    let layer_size = fs::metadata(&tar).unwrap().len();
    push_blob_file(&up.host, repo, &tar, &layer);
    let config = json!({
        "architecture": "amd64", "os": "linux", "created": "2026-01-01T00:00:00Z",
        "config": {"Cmd": ["/bin/sh"]}, "rootfs": {"type": "layers", "diff_ids": [layer]},
    })
    .to_string();
    let config_digest = sha256_digest(config.as_bytes());
    let config_file = dir.join("config.json");
    fs::write(&config_file, &config).unwrap();
    push_blob_file(&up.host, repo, &config_file, &config_digest);
    let manifest = json!({
        "schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": config_digest,
                   "size": config.len()},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": layer, "size": layer_size}],
    })
    .to_string();
    let r = http(
        &up.host,
        "PUT",
        &format!("/v2/{repo}/manifests/1"),
        &[("Content-Type", "application/vnd.oci.image.manifest.v1+json")],
        manifest.as_bytes(),
    )
    .expect("PUT manifest");
    assert_eq!(r.status, 201, "PUT manifest: {r}");
    let _ = fs::remove_dir_all(&dir);
    (sha256_digest(manifest.as_bytes()), layer)
}

/// Which of podman and docker this run drives (skopeo is always required).
fn optional_client(tools: &[&str]) -> bool {
    tools.iter().all(|t| which(t).is_some()) || {
        assert!(!required(), "{tools:?} missing, and TRIBUTARY_E2E_REQUIRED=1");
        eprintln!("skipped part: {tools:?} missing");
        false
    }
}

/// Pulls `image` (`HOST/ns/…`) with podman into its isolated storage and returns the manifest digest it reports.
fn podman_pull(pd: &Path, image: &str) -> String {
    run_ok(podman(pd).args(["pull", "--tls-verify=false"]).arg(image), LONG);
    let o = run_ok(podman(pd).args(["image", "inspect", "--format", "{{.Digest}}"]).arg(image), SHORT);
    o.stdout.trim().to_string()
}

/// Pulls `image` with docker and returns the digest from `docker pull`'s `Digest:` line.
fn docker_pull(engine: &DockerEngine, image: &str) -> String {
    let o = run_ok(engine.docker().args(["pull", image]), LONG);
    o.stdout
        .lines()
        .find_map(|l| l.strip_prefix("Digest: "))
        .unwrap_or_else(|| panic!("no Digest: line in docker pull output:\n{}", o.stdout))
        .trim()
        .to_string()
}

// ---------------------------------------------------------------------------------------------
// Tests

/// Import from docker-registry with `--reference-policy local`, pull through with skopeo, podman and docker,
/// one upstream GET per layer, then pull again with the upstream gone; a manifest list kept whole.
#[test]
fn pull_through_docker_registry_with_every_client() {
    let Some((_turn, tmp, skopeo)) = begin("e2e-pullthrough-") else { return };
    let images = TestImages::get();
    let mut up = Upstream::start(None);
    seed(&skopeo, &up, &images.oci("app"), "lib/app:1", &[]);
    seed(&skopeo, &up, &images.oci("multi"), "lib/multi:1", &["--all"]);
    let reg = Registry::start(&tmp.path().join("data"));

    let app = images.digest("app");
    let from = format!("{}/lib/app:1", up.host);
    let o = import_image(&reg, "app:v1", &from, &["--insecure", "--reference-policy", "local"]);
    assert_imported(&o, "app", &app);
    // Pulled through this registry: the image stream tag names the local repository, the tag event the source.
    let local = format!("{}/{NAMESPACE}/app@{app}", reg.host);
    assert!(o.stdout.contains(&local), "import-image output does not show the local reference {local}:\n{}", o.stdout);
    let istag = image_stream_tag(&reg, "app", "v1");
    assert_eq!(istag["image"]["metadata"]["name"], app.as_str(), "{istag:#}");
    assert_eq!(istag["image"]["dockerImageReference"], local.as_str(), "{istag:#}");
    assert_eq!(istag["tag"]["referencePolicy"]["type"], "Local", "{istag:#}");
    let event = &status_tag(&reg, "app", "v1")["items"][0];
    assert_eq!(event["image"], app.as_str(), "{event:#}");
    assert_eq!(event["dockerImageReference"], format!("{}/lib/app@{app}", up.host), "{event:#}");

    // A manifest list, kept whole.
    let multi = images.digest("multi");
    let from_multi = format!("{}/lib/multi:1", up.host);
    let o = import_image(&reg, "app:multi", &from_multi, &["--insecure", "--import-mode", "PreserveOriginal"]);
    assert_imported(&o, "app", &multi);
    for arch in ["amd64", "arm64"] {
        let line = format!("linux/{arch}\t{}", images.digest(arch));
        assert!(o.stdout.contains(&line), "import-image output lacks the manifest line {line:?}:\n{}", o.stdout);
    }

    // Config and manifest came at import; no layer has been fetched yet.
    let app_manifest = images.manifest("app");
    let layers: Vec<String> = manifest_blobs(&app_manifest).into_iter().skip(1).collect();
    for l in &layers {
        assert_eq!(up.blob_gets(l).len(), 0, "layer {l} fetched before anyone pulled it");
    }

    // skopeo, podman, docker pull through Tributary.
    let image = reg.image_ref("ns/app:v1");
    skopeo_pull_and_compare(&skopeo, &reg, "ns/app:v1", images, "app", &tmp.path().join("skopeo-1"));
    let token = reg.token.clone().expect("token auth");
    let pd = tmp.path().join("podman");
    let with_podman = optional_client(&["podman"]);
    if with_podman {
        run_ok(podman(&pd).args(["login", "--tls-verify=false", "-u", "admin", "-p", &token]).arg(&reg.host), SHORT);
        assert_eq!(podman_pull(&pd, &image), app, "podman pull {image}");
    }
    let engine = optional_client(&["dockerd", "docker"]).then(|| DockerEngine::start(&tmp.path().join("docker")));
    if let Some(engine) = &engine {
        run_ok(engine.docker().args(["login", "-u", "admin", "-p", &token, &reg.host]), SHORT);
        assert_eq!(docker_pull(engine, &image), app, "docker pull {image}");
    }
    let mut counts = Vec::new();
    for l in &layers {
        counts.push(up.blob_gets(l).len());
    }
    note(format!("upstream GETs per layer of app:v1 after the client pulls: {counts:?}"));
    up.assert_one_get_each(&manifest_blobs(&app_manifest));

    // The whole list is served as the upstream has it, and every platform's image pulls.
    let raw = skopeo.inspect_raw(&reg, "ns/app:multi");
    assert_eq!(sha256_digest(&raw), multi, "index served through Tributary");
    assert_eq!(raw, images.blob(&multi), "index bytes changed");
    let all = tmp.path().join("skopeo-all-1");
    skopeo.pull(&reg, "ns/app:multi", &format!("oci:{}:x", all.display()), &["--all"]);
    assert_eq!(layout_digest(&all, "x"), multi);

    // The upstream goes away: everything was mirrored.
    up.kill();
    note("upstream killed");
    skopeo_pull_and_compare(&skopeo, &reg, "ns/app:v1", images, "app", &tmp.path().join("skopeo-2"));
    skopeo_pull_and_compare(&skopeo, &reg, &format!("ns/app@{app}"), images, "app", &tmp.path().join("skopeo-3"));
    let all = tmp.path().join("skopeo-all-2");
    skopeo.pull(&reg, "ns/app:multi", &format!("oci:{}:x", all.display()), &["--all"]);
    assert_eq!(layout_digest(&all, "x"), multi);
    for arch in ["amd64", "arm64"] {
        for blob in manifest_blobs(&images.manifest(arch)) {
            assert_eq!(layout_blob(&all, &blob), images.blob(&blob), "{arch} blob {blob} with the upstream gone");
        }
    }
    if with_podman {
        run_ok(podman(&pd).args(["rmi", "--all", "--force"]), SHORT);
        let o = run_ok(podman(&pd).args(["images", "--quiet"]), SHORT);
        assert!(o.stdout.trim().is_empty(), "podman images left: {}", o.stdout);
        assert_eq!(podman_pull(&pd, &image), app, "podman pull {image} with the upstream gone");
    }
    if let Some(engine) = &engine {
        run_ok(engine.docker().args(["rmi", "--force", &image]), SHORT);
        let o = run_ok(engine.docker().args(["images", "--quiet"]), SHORT);
        assert!(o.stdout.trim().is_empty(), "docker images left: {}", o.stdout);
        assert_eq!(docker_pull(engine, &image), app, "docker pull {image} with the upstream gone");
    }
}

/// A ~100 MiB layer: 8 concurrent pulls cause one upstream GET; miss and hit times of a second such image.
#[test]
fn pull_through_one_upstream_fetch_under_concurrent_pulls() {
    const SIZE: u64 = 100 << 20;
    const CLIENTS: usize = 8;
    let Some((_turn, tmp, skopeo)) = begin("e2e-pullthrough-big-") else { return };
    let up = Upstream::start(None);
    let (big1, layer1) = push_big_image(&up, tmp.path(), "lib/big1", SIZE);
    let (big2, layer2) = push_big_image(&up, tmp.path(), "lib/big2", SIZE);
    let reg = Registry::start(&tmp.path().join("data"));
    for (stream, repo, digest) in [("big1", "lib/big1", &big1), ("big2", "lib/big2", &big2)] {
        let o = import_image(
            &reg,
            &format!("{stream}:v1"),
            &format!("{}/{repo}:1", up.host),
            &["--insecure", "--reference-policy", "local"],
        );
        assert_imported(&o, stream, digest);
    }

    // 8 clients at once ask for the same missing layer.
    let started = Instant::now();
    let outs: Vec<PathBuf> = (0..CLIENTS).map(|i| tmp.path().join(format!("pull-{i}"))).collect();
    let spans: Vec<(Instant, Instant)> = std::thread::scope(|s| {
        let pulls: Vec<_> = outs
            .iter()
            .map(|out| {
                let (skopeo, reg) = (&skopeo, &reg);
                s.spawn(move || {
                    let begin = Instant::now();
                    skopeo.pull(reg, "ns/big1:v1", &format!("dir:{}", out.display()), &[]);
                    (begin, Instant::now())
                })
            })
            .collect();
        pulls.into_iter().map(|p| p.join().expect("pull thread")).collect()
    });
    let concurrent = started.elapsed().as_secs_f64();
    // They really overlapped: every client had started before the first one had the whole layer.
    let last_start = spans.iter().map(|s| s.0).max().unwrap();
    let first_end = spans.iter().map(|s| s.1).min().unwrap();
    assert!(last_start < first_end, "the {CLIENTS} pulls did not overlap; the single-flight check would prove nothing");
    let hex1 = layer1.strip_prefix("sha256:").unwrap();
    for out in &outs {
        let file = out.join(hex1);
        assert_eq!(file_digest(&file), layer1, "layer pulled into {}", out.display());
        assert_eq!(sha256_digest(&fs::read(out.join("manifest.json")).unwrap()), big1, "{}", out.display());
        fs::remove_dir_all(out).unwrap();
    }
    let gets = up.blob_gets(&layer1);
    note(format!(
        "{CLIENTS} concurrent pulls of 100 MiB in {concurrent:.2} s, upstream GETs of the layer: {}",
        gets.len()
    ));
    assert_eq!(gets.len(), 1, "upstream GETs of the layer under {CLIENTS} concurrent pulls:\n{}", gets.join("\n"));

    // A single client: a miss (fetched from the upstream while streamed), then hits (local; the best of 3, as
    // the machine is shared).
    let mut times = Vec::new();
    for (i, what) in ["miss", "hit", "hit", "hit"].iter().enumerate() {
        let out = tmp.path().join(format!("single-{i}"));
        let started = Instant::now();
        skopeo.pull(&reg, "ns/big2:v1", &format!("dir:{}", out.display()), &[]);
        let secs = started.elapsed().as_secs_f64();
        assert_eq!(file_digest(&out.join(layer2.strip_prefix("sha256:").unwrap())), layer2, "{what} pull");
        fs::remove_dir_all(&out).unwrap();
        note(format!("{what}: {secs:.2} s"));
        times.push(secs);
    }
    let hit = times[1..].iter().copied().fold(f64::INFINITY, f64::min);
    // For scale: the same image straight from the upstream.
    let direct = tmp.path().join("direct");
    let started = Instant::now();
    run_ok(
        skopeo
            .cmd()
            .args(["copy", "--src-tls-verify=false", "--retry-times", "0"])
            .arg(up.docker_ref("lib/big2:1"))
            .arg(format!("dir:{}", direct.display())),
        LONG,
    );
    let direct_secs = started.elapsed().as_secs_f64();
    let gets2 = up.blob_gets(&layer2).len();
    // (The direct pull above is one of them.)
    let through = gets2 - 1;
    let line = format!(
        "pull-through 100 MiB: miss {:.2} s, hit {hit:.2} s (upstream direct {direct_secs:.2} s), upstream GETs per \
         blob: {through} (and {} under {CLIENTS} concurrent pulls)",
        times[0],
        gets.len()
    );
    eprintln!("{line}");
    note(&line);
    assert_eq!(through, 1, "upstream GETs of big2's layer by Tributary after a miss and a hit");
}

/// An htpasswd-protected docker-registry: import fails as Unauthorized without a pull secret, works with one.
#[test]
fn pull_through_htpasswd_upstream_with_pull_secret() {
    let Some((_turn, tmp, skopeo)) = begin("e2e-pullthrough-auth-") else { return };
    let images = TestImages::get();
    let (user, password) = ("puller", "s3cret-upstream");
    let hash = bcrypt::hash_with_result(password, 5).expect("bcrypt").format_for_version(bcrypt::Version::TwoY);
    let htpasswd = tmp.path().join("htpasswd");
    fs::write(&htpasswd, format!("{user}:{hash}\n")).unwrap();
    let up = Upstream::start(Some(&htpasswd));
    let creds = format!("{user}:{password}");
    // Anonymous pushes are refused: the upstream really wants the password.
    let mut c = skopeo.cmd();
    c.args(["copy", "--dest-tls-verify=false", "--retry-times", "0"])
        .arg(images.oci("app"))
        .arg(up.docker_ref("lib/app:1"));
    run_fails(&mut c, LONG);
    seed(&skopeo, &up, &images.oci("app"), "lib/app:1", &["--dest-creds", &creds]);
    let reg = Registry::start(&tmp.path().join("data"));
    let app = images.digest("app");
    let from = format!("{}/lib/app:1", up.host);
    let import_args = ["--insecure", "--reference-policy", "local"];

    // No secret: the import fails, and the tag says why.
    let o = import_image(&reg, "app:v1", &from, &import_args);
    assert!(!o.success(), "import without credentials succeeded:\n{}", o.stdout);
    eprintln!("import-image without a pull secret says:\n{}", o.stderr);
    assert!(!o.stdout.contains("imported"), "{}", o.stdout);
    assert!(o.stderr.contains("import failed") && o.stderr.contains("v1:"), "import-image stderr:\n{}", o.stderr);
    let tag = status_tag(&reg, "app", "v1");
    let conditions = tag["conditions"].as_array().cloned().unwrap_or_default();
    let cond = conditions
        .iter()
        .find(|c| c["type"] == "ImportSuccess")
        .unwrap_or_else(|| panic!("no ImportSuccess condition on tag v1: {tag:#}"));
    eprintln!("tag v1 condition: {cond}");
    assert_eq!(cond["status"], "False", "{cond:#}");
    assert_eq!(cond["reason"], "Unauthorized", "{cond:#}");
    assert!(!cond["message"].as_str().unwrap_or_default().is_empty(), "{cond:#}");
    assert!(tag["items"].as_array().is_none_or(|i| i.is_empty()), "a failed import added an image: {tag:#}");
    let r = reg.get("/v2/ns/app/manifests/v1");
    assert_eq!(r.status, 404, "nothing imported, yet: {r}");

    // With a pull secret for that registry, the import and the pull-through work.
    let o = run_ok(
        &mut tributary(
            &reg,
            &[
                "create",
                "secret",
                "docker-registry",
                "up",
                "--docker-server",
                &up.host,
                "--docker-username",
                user,
                "--docker-password",
                password,
            ],
        ),
        SHORT,
    );
    assert_eq!(o.stdout.trim(), "secret/up created");
    let o = import_image(&reg, "app:v1", &from, &import_args);
    assert_imported(&o, "app", &app);
    let tag = status_tag(&reg, "app", "v1");
    assert_eq!(tag["items"][0]["image"], app.as_str(), "{tag:#}");
    let failed = tag["conditions"].as_array().into_iter().flatten().any(|c| c["type"] == "ImportSuccess");
    assert!(!failed, "the failure condition stayed after a successful import: {tag:#}");
    skopeo_pull_and_compare(&skopeo, &reg, "ns/app:v1", images, "app", &tmp.path().join("pulled"));
    let layers: Vec<String> = manifest_blobs(&images.manifest("app")).into_iter().skip(1).collect();
    for l in &layers {
        let gets = up.blob_gets(l);
        assert!(
            gets.iter().any(|g| g.contains("\" 200 ") || g.contains("\" 206 ")),
            "no authorized upstream GET of layer {l}:\n{}",
            gets.join("\n")
        );
    }
}

/// A second Tributary as the upstream, through a pull secret holding its token.
#[test]
fn pull_through_from_another_tributary() {
    let Some((_turn, tmp, skopeo)) = begin("e2e-pullthrough-trib-") else { return };
    let images = TestImages::get();
    let upstream = Registry::start(&tmp.path().join("upstream-data"));
    let pushed = skopeo.push(&upstream, &images.oci("app"), "ns/app:v1", &[]);
    let app = images.digest("app");
    assert_eq!(pushed, app);
    let reg = Registry::start(&tmp.path().join("data"));
    let token2 = upstream.token.clone().expect("token auth");
    let from = format!("{}/{NAMESPACE}/app:v1", upstream.host);

    // Without the upstream's token the import fails.
    let o = import_image(&reg, "mirror:v1", &from, &["--insecure", "--reference-policy", "local"]);
    assert!(!o.success(), "import from a Tributary without its token succeeded:\n{}", o.stdout);
    assert_eq!(status_tag(&reg, "mirror", "v1")["conditions"][0]["reason"], "Unauthorized");

    run_ok(
        &mut tributary(
            &reg,
            &[
                "create",
                "secret",
                "docker-registry",
                "upstream",
                "--docker-server",
                &upstream.host,
                "--docker-username",
                "anything",
                "--docker-password",
                &token2,
            ],
        ),
        SHORT,
    );
    let o = import_image(&reg, "mirror:v1", &from, &["--insecure", "--reference-policy", "local"]);
    assert_imported(&o, "mirror", &app);
    let istag = image_stream_tag(&reg, "mirror", "v1");
    assert_eq!(istag["image"]["dockerImageReference"], format!("{}/{NAMESPACE}/mirror@{app}", reg.host), "{istag:#}");
    skopeo_pull_and_compare(&skopeo, &reg, "ns/mirror:v1", images, "app", &tmp.path().join("pulled"));
    let raw = skopeo.inspect_raw(&reg, "ns/mirror:v1");
    assert_eq!(sha256_digest(&raw), sha256_digest(&skopeo.inspect_raw(&upstream, "ns/app:v1")));
}
