//! End-to-end: three `tributary serve` replicas on different loopback ports sharing one real etcd (metadata) and
//! one real S3 server (moto, blobs), with no data directory, and nginx in front of them as the load balancer:
//! pushes by skopeo, podman and docker through one replica are pulled through the others byte for byte; a chunked
//! upload's POST, PATCHes and PUT land on three different replicas; concurrent pushes of one tag through different
//! replicas lose no history event; `kubectl get is -w` on one replica sees a tag set through another; a token revoked on one is refused by the others
//! within a second; `kill -9` of a replica in the middle of a push leaves nothing corrupted and the others
//! serving. etcd and moto are started by the test (`storage_backends::testing`); missing tools skip the test,
//! unless `TRIBUTARY_E2E_REQUIRED=1`.
mod common;

use std::io::Write;
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use common::*;
use serde_json::{json, Value};
use storage_backends::testing::{etcd::EtcdServer, s3::S3Server};

const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";

/// Three replicas on one etcd and one S3 server.
struct Cluster {
    replicas: Vec<Registry>,
    token: String,
    /// The `TRIBUTARY_*` settings every replica shares (its stores).
    env: Vec<(String, String)>,
    tmp: tempfile::TempDir,
    // Dropped last: the replicas stop before their stores.
    _s3: S3Server,
    _etcd: EtcdServer,
}

impl Cluster {
    fn start(n: usize) -> Option<Cluster> {
        let etcd = EtcdServer::start()?;
        let s3 = S3Server::start()?;
        let tmp = tempdir("tributary-e2e-replicas-");
        let env = replica_env(&etcd, &s3);
        let token = new_token();
        let mut replicas = Vec::new();
        for i in 0..n {
            // No replica keeps anything locally: the data directory named here must never be created.
            let data_dir = tmp.path().join(format!("unused-data-{i}"));
            replicas.push(Registry::start_replica(&data_dir, &token, &env));
            assert!(!data_dir.exists(), "replica {i} created a local data directory");
        }
        replicas[0].create_namespace(NAMESPACE);
        Some(Cluster { replicas, token, env, tmp, _s3: s3, _etcd: etcd })
    }
}

fn replica_env(etcd: &EtcdServer, s3: &S3Server) -> Vec<(String, String)> {
    let s3_config = s3.config("tributary", None);
    [
        ("TRIBUTARY_METADATA_BACKEND", "etcd".to_owned()),
        ("TRIBUTARY_ETCD_ENDPOINTS", etcd.endpoint().to_string()),
        ("TRIBUTARY_ETCD_PREFIX", format!("/e2e-{}/", unique())),
        ("TRIBUTARY_BLOB_BACKEND", "s3".to_owned()),
        ("TRIBUTARY_S3_ENDPOINT", s3.endpoint()),
        ("TRIBUTARY_S3_BUCKET", s3_config.bucket.clone()),
        ("TRIBUTARY_S3_ACCESS_KEY_ID", s3_config.access_key_id.clone().unwrap_or_default()),
        ("TRIBUTARY_S3_SECRET_ACCESS_KEY", s3_config.secret_access_key.clone().unwrap_or_default()),
        ("TRIBUTARY_S3_ALLOW_HTTP", "true".to_owned()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v))
    .collect()
}

fn tools() -> bool {
    tools_present(&["skopeo", "podman", "etcd", "moto_server", "nginx", "umoci", "busybox", "jq", "sha256sum"])
}

/// Pushes a config and a layer through `reg` and returns a manifest referencing them.
fn small_image(reg: &Registry, repo: &str, seed: &str) -> Vec<u8> {
    let config = json!({"architecture":"amd64","os":"linux","config":{"Cmd":["echo", seed]}}).to_string();
    let layer = format!("layer {seed}");
    for blob in [config.as_bytes(), layer.as_bytes()] {
        let d = sha256_digest(blob);
        let r = reg.request("POST", &format!("/v2/{repo}/blobs/uploads/?digest={d}"), &[], blob);
        assert_eq!(r.status, 201, "monolithic push of {d}: {r}");
    }
    json!({"schemaVersion":2,"mediaType":OCI_MANIFEST,
        "config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":sha256_digest(config.as_bytes()),"size":config.len()},
        "layers":[{"mediaType":"application/vnd.oci.image.layer.v1.tar","digest":sha256_digest(layer.as_bytes()),"size":layer.len()}]})
    .to_string()
    .into_bytes()
}

fn put_manifest(reg: &Registry, repo: &str, reference: &str, bytes: &[u8]) -> Response {
    reg.request("PUT", &format!("/v2/{repo}/manifests/{reference}"), &[("Content-Type", OCI_MANIFEST)], bytes)
}

#[test]
fn replicas_share_every_push_and_upload() {
    if !tools() {
        return;
    }
    let Some(cluster) = Cluster::start(3) else { return };
    let [a, b, c] = &cluster.replicas[..] else { unreachable!() };
    let images = TestImages::get();
    let skopeo = Skopeo::new();

    // skopeo pushes through A; B and C serve the same manifest and blobs.
    let pushed = skopeo.push(a, &images.oci("app"), "ns/app:v1", &[]);
    assert_eq!(pushed, images.digest("app"));
    for reg in [b, c] {
        assert_eq!(sha256_digest(&skopeo.inspect_raw(reg, "ns/app:v1")), pushed, "manifest through {}", reg.host);
        let out = cluster.tmp.path().join(format!("pulled-{}", reg.host.replace(':', "-")));
        skopeo.pull(reg, "ns/app:v1", &format!("oci:{}:v1", out.display()), &[]);
        assert_eq!(layout_digest(&out, "v1"), pushed);
        for blob in manifest_blobs(&images.manifest("app")) {
            assert_eq!(layout_blob(&out, &blob), images.blob(&blob), "blob {blob} through {}", reg.host);
        }
    }

    // podman pushes through B; skopeo pulls through C and A.
    let podman_dir = cluster.tmp.path().join("podman");
    let id = run_ok(podman(&podman_dir).args(["pull", "-q", &images.oci("app2")]), LONG).stdout.trim().to_owned();
    run_ok(podman(&podman_dir).args(["tag", &id, &b.image_ref("ns/app:v2")]), SHORT);
    let creds = format!("admin:{}", cluster.token);
    run_ok(
        podman(&podman_dir).args(["push", "--tls-verify=false", "--creds", &creds, &b.image_ref("ns/app:v2")]),
        LONG,
    );
    let via_b = skopeo.inspect_raw(b, "ns/app:v2");
    for reg in [c, a] {
        assert_eq!(skopeo.inspect_raw(reg, "ns/app:v2"), via_b, "podman's push read through {}", reg.host);
        for blob in manifest_blobs(&serde_json::from_slice(&via_b).unwrap()) {
            let r = reg.get(&format!("/v2/ns/app/blobs/{blob}"));
            assert_eq!((r.status, sha256_digest(&r.body)), (200, blob.clone()), "through {}", reg.host);
        }
    }

    // One chunked upload, its POST on A, its PATCHes on B and C, its PUT on A again: 9 MiB + 1 byte, chunks
    // that do not fall on S3 part boundaries.
    let body: Vec<u8> = (0..9 * 1024 * 1024 + 1).map(|i: u32| (i.wrapping_mul(2654435761) >> 24) as u8).collect();
    let digest = sha256_digest(&body);
    let mut location = a.start_upload("ns/chunked");
    let mut at = 0usize;
    for (reg, len) in [(b, 6 * 1024 * 1024 + 3), (c, 1024 * 1024), (b, 1)] {
        let range = format!("{at}-{}", at + len - 1);
        let r = reg.request(
            "PATCH",
            &location,
            &[("Content-Type", "application/octet-stream"), ("Content-Range", &range)],
            &body[at..at + len],
        );
        assert_eq!(r.status, 202, "PATCH {range} on {}: {r}", reg.host);
        assert_eq!(r.header("range"), Some(format!("0-{}", at + len - 1).as_str()), "{r}");
        location = r.header("location").unwrap().to_owned();
        at += len;
    }
    let status = c.get(&location);
    assert_eq!(status.header("range"), Some(format!("0-{}", at - 1).as_str()), "upload status on C: {status}");
    let r = a.request("PUT", &with_query(&location, &format!("digest={digest}")), &[], &body[at..]);
    assert_eq!(r.status, 201, "final PUT on A: {r}");
    for reg in [a, b, c] {
        let r = reg.get(&format!("/v2/ns/chunked/blobs/{digest}"));
        assert_eq!((r.status, r.body.len(), sha256_digest(&r.body)), (200, body.len(), digest.clone()), "{}", reg.host);
    }
    let ranged =
        c.request("GET", &format!("/v2/ns/chunked/blobs/{digest}"), &[("Range", "bytes=6291455-6291460")], &[]);
    assert_eq!((ranged.status, &ranged.body[..]), (206, &body[6291455..6291461]), "{ranged}");
}

/// docker pushes through A; B and C serve exactly what it pushed, and docker pulls it back through them.
#[test]
fn docker_pushes_through_one_replica_and_pulls_through_the_others() {
    if !tools() || !tools_present(&["dockerd", "docker"]) {
        return;
    }
    let Some(cluster) = Cluster::start(3) else { return };
    let [a, b, c] = &cluster.replicas[..] else { unreachable!() };
    let images = TestImages::get();
    let skopeo = Skopeo::new();
    let engine = DockerEngine::start(&cluster.tmp.path().join("docker"));
    for reg in [a, b, c] {
        run_ok(engine.docker().args(["login", "-u", "admin", "-p", &cluster.token, &reg.host]), SHORT);
    }
    // The engine gets an image (seeded through C with skopeo), then docker pushes it to A under a new name.
    let seeded = skopeo.push(c, &images.oci("app"), "ns/seed:v1", &[]);
    run_ok(engine.docker().args(["pull", &c.image_ref("ns/seed:v1")]), LONG);
    let target = a.image_ref("ns/dockerapp:v1");
    run_ok(engine.docker().args(["tag", &c.image_ref("ns/seed:v1"), &target]), SHORT);
    let o = run_ok(engine.docker().args(["push", &target]), LONG);
    let pushed = docker_pushed_digest(&o.stdout);
    assert_ne!(seeded, "");
    for reg in [b, c] {
        let raw = skopeo.inspect_raw(reg, "ns/dockerapp:v1");
        assert_eq!(sha256_digest(&raw), pushed, "docker's manifest through {}", reg.host);
        let theirs = reg.image_ref("ns/dockerapp:v1");
        let o = run_ok(engine.docker().args(["pull", &theirs]), LONG);
        assert!(o.stdout.contains(&format!("Digest: {pushed}")), "docker pull through {}:\n{}", reg.host, o.stdout);
    }
}

/// A client that sends each chunk of an upload to the next replica, at once: every PATCH continues where the one
/// before it (on another replica, a moment ago) ended, none is refused, and the blob is exact.
#[test]
fn chunk_after_chunk_on_alternating_replicas() {
    if !tools() {
        return;
    }
    let Some(cluster) = Cluster::start(3) else { return };
    let body: Vec<u8> = (0..300 * 1024u32).map(|i| (i.wrapping_mul(2246822519) >> 24) as u8).collect();
    let digest = sha256_digest(&body);
    let mut location = cluster.replicas[0].start_upload("ns/alternating");
    for (i, chunk) in body.chunks(1024).enumerate() {
        let reg = &cluster.replicas[(i + 1) % 3];
        let at = i * 1024;
        let range = format!("{at}-{}", at + chunk.len() - 1);
        let r = reg.request(
            "PATCH",
            &location,
            &[("Content-Type", "application/octet-stream"), ("Content-Range", &range)],
            chunk,
        );
        assert_eq!(r.status, 202, "chunk {i} ({range}) on {}: {r}", reg.host);
        location = r.header("location").unwrap().to_owned();
    }
    let r = cluster.replicas[1].request("PUT", &with_query(&location, &format!("digest={digest}")), &[], &[]);
    assert_eq!(r.status, 201, "{r}");
    let got = cluster.replicas[2].get(&format!("/v2/ns/alternating/blobs/{digest}"));
    assert_eq!((got.status, sha256_digest(&got.body)), (200, digest));
}

#[test]
fn concurrent_pushes_of_one_tag_through_three_replicas_lose_no_event() {
    if !tools() {
        return;
    }
    let Some(cluster) = Cluster::start(3) else { return };
    let pushed: Vec<String> = thread::scope(|s| {
        let workers: Vec<_> = (0..3)
            .map(|client| {
                let replicas = &cluster.replicas;
                s.spawn(move || {
                    let mut digests = Vec::new();
                    for i in 0..10 {
                        // Each client goes round the replicas.
                        let reg = &replicas[(client + i) % replicas.len()];
                        let m = small_image(reg, "ns/busy", &format!("client {client} push {i}"));
                        let r = put_manifest(reg, "ns/busy", "latest", &m);
                        assert_eq!(r.status, 201, "{r}");
                        digests.push(sha256_digest(&m));
                    }
                    digests
                })
            })
            .collect();
        workers.into_iter().flat_map(|w| w.join().unwrap()).collect()
    });
    for reg in &cluster.replicas {
        let mut history = reg.stream_tag_history("ns", "busy", "latest");
        assert_eq!(history.len(), 30, "every push is one event, seen through {}: {history:?}", reg.host);
        history.sort();
        let mut expected = pushed.clone();
        expected.sort();
        assert_eq!(history, expected);
    }
}

/// `kubectl get is -w` on C, a replica serving https (kubectl sends a bearer token only over TLS), sees a tag set
/// through B.
#[test]
fn kubectl_watch_on_one_replica_sees_a_tag_set_through_another() {
    if !tools() || !tools_present(&["kubectl", "openssl"]) {
        return;
    }
    let Some(cluster) = Cluster::start(2) else { return };
    let b = &cluster.replicas[1];
    let dir = cluster.tmp.path().join("kubectl");
    let c = TlsReplica::start(&dir, &cluster);
    let m = small_image(b, "ns/web", "v1");
    assert_eq!(put_manifest(b, "ns/web", "v1", &m).status, 201);

    let home = dir.join("home");
    std::fs::create_dir_all(&home).unwrap();
    let out_path = dir.join("watch.out");
    let mut watch = Command::new("kubectl")
        .args(["--server", &c.url, "--token", &cluster.token, "--insecure-skip-tls-verify", "-n", "ns"])
        .args(["get", "is", "-w"])
        .env("HOME", &home)
        .env_remove("KUBECONFIG")
        .stdout(std::fs::File::create(&out_path).unwrap())
        .stderr(Stdio::null())
        .spawn()
        .expect("kubectl get is -w");
    let mut seen = String::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut pushed = false;
    while Instant::now() < deadline {
        seen = std::fs::read_to_string(&out_path).unwrap_or_default();
        if !pushed && seen.contains("web") {
            // The watch has listed the stream; now B sets a new tag.
            let m2 = small_image(b, "ns/web", "v2");
            assert_eq!(put_manifest(b, "ns/web", "v2", &m2).status, 201);
            pushed = true;
        }
        if seen.contains("v2") {
            break;
        }
        thread::sleep(Duration::from_millis(100));
    }
    let _ = watch.kill();
    let _ = watch.wait();
    eprintln!("kubectl get is -w on {}:\n{seen}", c.url);
    assert!(pushed, "kubectl never listed ns/web:\n{seen}");
    assert!(seen.lines().any(|l| l.starts_with("web") && l.contains("v2")), "the watch on C saw B's tag:\n{seen}");
}

/// A replica on the cluster's stores serving https with a fresh self-signed certificate.
struct TlsReplica {
    child: Child,
    url: String,
}

impl TlsReplica {
    fn start(dir: &std::path::Path, cluster: &Cluster) -> TlsReplica {
        std::fs::create_dir_all(dir).unwrap();
        let (cert, key) = self_signed_cert(dir);
        let mut cmd = Command::new(tributary_bin());
        cmd.args(["serve", "--listen", "127.0.0.1:0", "--admin-token", &cluster.token])
            .arg("--data-dir")
            .arg(dir.join("unused-data"))
            .arg("--tls-cert")
            .arg(&cert)
            .arg("--tls-key")
            .arg(&key)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        for (k, _) in std::env::vars_os() {
            if k.to_string_lossy().starts_with("TRIBUTARY_") {
                cmd.env_remove(k);
            }
        }
        cmd.envs(cluster.env.iter().map(|(k, v)| (k, v)));
        let mut child = cmd.spawn().expect("start tributary with TLS");
        let mut line = String::new();
        std::io::BufRead::read_line(&mut std::io::BufReader::new(child.stdout.take().unwrap()), &mut line)
            .expect("tributary says where it listens");
        let url = line.trim().rsplit(' ').next().unwrap_or_default().to_owned();
        assert!(url.starts_with("https://127.0.0.1:"), "{line}");
        assert!(!dir.join("unused-data").exists(), "the TLS replica created a local data directory");
        TlsReplica { child, url }
    }
}

impl Drop for TlsReplica {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn a_token_revoked_or_a_role_removed_on_one_replica_is_refused_by_all_within_a_second() {
    if !tools() {
        return;
    }
    let Some(cluster) = Cluster::start(3) else { return };
    let [a, b, c] = &cluster.replicas[..] else { unreachable!() };
    let created = a.request(
        "POST",
        "/apis/tributary.dev/v1/tokens",
        &[("Content-Type", "application/json")],
        json!({"owner": {"kind": "User", "name": "admin"}, "description": "revoked soon"}).to_string().as_bytes(),
    );
    assert_eq!(created.status, 201, "{created}");
    let created: Value = created.json();
    let (id, secret) = (created["id"].as_str().unwrap(), created["token"].as_str().unwrap());
    let with = |reg: &Registry| {
        let auth = format!("Bearer {secret}");
        let r = TcpStream::connect(&reg.host).and_then(|mut s| {
            write!(
                s,
                "GET /v2/_catalog HTTP/1.1\r\nHost: {}\r\nAuthorization: {auth}\r\nConnection: close\r\n\r\n",
                reg.host
            )?;
            read_response(&mut s, false)
        });
        r.unwrap().status
    };
    for reg in [a, b, c] {
        assert_eq!(with(reg), 200, "the new token works on {}", reg.host);
    }
    let r = a.request("DELETE", &format!("/apis/tributary.dev/v1/tokens/{id}"), &[], &[]);
    assert_eq!(r.status, 200, "{r}");
    let revoked = Instant::now();
    for reg in [b, c] {
        while with(reg) != 401 {
            assert!(revoked.elapsed() < Duration::from_secs(1), "{} still accepts the revoked token", reg.host);
            thread::sleep(Duration::from_millis(20));
        }
    }
    eprintln!("revocation seen by every replica after {:?}", revoked.elapsed());

    // A role removed through A: bob's token stops reading ns on B and C within a second.
    let m = small_image(a, "ns/roles", "v1");
    assert_eq!(put_manifest(a, "ns/roles", "v1", &m).status, 201);
    let config = cluster.tmp.path().join("client.json");
    let cli = |args: &[&str]| {
        let mut cmd = Command::new(tributary_bin());
        cmd.args(args)
            .env("TRIBUTARY_SERVER", format!("http://{}", a.host))
            .env("TRIBUTARY_TOKEN", &cluster.token)
            .env("TRIBUTARY_CLIENT_CONFIG", &config);
        run_ok(&mut cmd, SHORT).stdout.trim().to_owned()
    };
    cli(&["create", "user", "bob"]);
    let bob = cli(&["create", "token", "--user", "bob"]);
    cli(&["policy", "add-role-to-user", "system:image-puller", "bob", "-n", "ns"]);
    let pull = |reg: &Registry| {
        let r = TcpStream::connect(&reg.host).and_then(|mut s| {
            write!(
                s,
                "GET /v2/ns/roles/manifests/v1 HTTP/1.1\r\nHost: {}\r\nAuthorization: Bearer {bob}\r\n\
                 Accept: {OCI_MANIFEST}\r\nConnection: close\r\n\r\n",
                reg.host
            )?;
            read_response(&mut s, false)
        });
        r.unwrap().status
    };
    for reg in [b, c] {
        assert_eq!(pull(reg), 200, "bob pulls through {} while he has the role", reg.host);
    }
    cli(&["policy", "remove-role-from-user", "system:image-puller", "bob", "-n", "ns"]);
    let removed = Instant::now();
    for reg in [b, c] {
        while !matches!(pull(reg), 401 | 403 | 404) {
            assert!(removed.elapsed() < Duration::from_secs(1), "{} still lets bob pull", reg.host);
            thread::sleep(Duration::from_millis(20));
        }
    }
    eprintln!("role removal seen by every replica after {:?}", removed.elapsed());
}

#[test]
fn kill_9_of_a_replica_mid_push_leaves_the_others_serving() {
    if !tools() {
        return;
    }
    let Some(mut cluster) = Cluster::start(3) else { return };
    let before = small_image(&cluster.replicas[0], "ns/app", "before");
    assert_eq!(put_manifest(&cluster.replicas[0], "ns/app", "v1", &before).status, 201);

    // B takes a 64 MiB PATCH; it dies when about half has been sent.
    let location = cluster.replicas[1].start_upload("ns/app");
    let size = 64 * 1024 * 1024u64;
    let mut conn = cluster.replicas[1]
        .open_request("PATCH", &location, &[("Content-Type", "application/octet-stream")], size)
        .unwrap();
    let chunk = vec![7u8; 1024 * 1024];
    for _ in 0..32 {
        conn.write_all(&chunk).unwrap();
    }
    thread::sleep(Duration::from_millis(300));
    cluster.replicas[1].kill9();
    drop(conn);

    // A and C keep serving: what was there is intact, new pushes work, the broken upload is not a blob.
    let [a, _, c] = &cluster.replicas[..] else { unreachable!() };
    for reg in [a, c] {
        let r = reg.get("/v2/ns/app/manifests/v1");
        assert_eq!((r.status, r.body.as_slice()), (200, before.as_slice()), "{}", reg.host);
    }
    let after = small_image(c, "ns/app", "after");
    assert_eq!(put_manifest(c, "ns/app", "v2", &after).status, 201);
    assert_eq!(a.get("/v2/ns/app/manifests/v2").body, after);
    let r = a.get(&location);
    assert!(matches!(r.status, 204 | 404), "the interrupted upload is pending or gone, never a blob: {r}");
    assert_eq!(a.blob_status("ns/app", &sha256_digest(&vec![7u8; size as usize])), 404);

    // The killed replica comes back on the same stores and serves everything.
    cluster.replicas[1].restart();
    let b = &cluster.replicas[1];
    assert_eq!(b.get("/v2/ns/app/manifests/v2").body, after);
}

/// Three replicas started at once on empty remote stores, none given a token: exactly one generates the
/// administrator's token and shows it (nothing is written locally), and that token works on all three.
#[test]
fn the_first_replica_creates_the_administrator_token() {
    if !tools() {
        return;
    }
    let (Some(etcd), Some(s3)) = (EtcdServer::start(), S3Server::start()) else { return };
    let env = replica_env(&etcd, &s3);
    let tmp = tempdir("tributary-e2e-first-token-");
    let mut children: Vec<(Child, std::path::PathBuf)> = (0..3)
        .map(|i| {
            let data_dir = tmp.path().join(format!("unused-data-{i}"));
            let mut cmd = Command::new(tributary_bin());
            cmd.args(["serve", "--listen", "127.0.0.1:0"]).arg("--data-dir").arg(&data_dir);
            for (k, _) in std::env::vars_os() {
                if k.to_string_lossy().starts_with("TRIBUTARY_") {
                    cmd.env_remove(k);
                }
            }
            cmd.envs(env.iter().map(|(k, v)| (k, v))).stdout(Stdio::piped()).stderr(Stdio::null());
            (cmd.spawn().expect("start tributary"), data_dir)
        })
        .collect();
    let mut tokens = Vec::new();
    let mut hosts = Vec::new();
    for (child, data_dir) in &mut children {
        let mut out = std::io::BufReader::new(child.stdout.take().unwrap());
        let mut lines = Vec::new();
        loop {
            let mut line = String::new();
            assert!(std::io::BufRead::read_line(&mut out, &mut line).unwrap() > 0, "no listening line: {lines:?}");
            lines.push(line.trim().to_owned());
            if line.contains("listening on") {
                break;
            }
        }
        if let Some(i) = lines.iter().position(|l| l.starts_with("generated the cluster administrator token")) {
            assert!(lines[i].contains("shown only now"), "{lines:?}");
            tokens.push(lines[i + 1].clone());
        }
        hosts.push(lines.last().unwrap().rsplit("http://").next().unwrap().to_owned());
        assert!(!data_dir.exists(), "a replica wrote to {}", data_dir.display());
        // Keep the pipe open and drained so later output never blocks or kills the replica.
        thread::spawn(move || std::io::copy(&mut out, &mut std::io::sink()));
    }
    assert_eq!(tokens.len(), 1, "exactly one replica generated the token: {tokens:?}");
    for host in &hosts {
        let reg = Registry::attach(host, &tokens[0]);
        assert_eq!(reg.get("/apis/tributary.dev/v1/whoami").status, 200, "the token on {host}");
    }
    for (child, _) in &mut children {
        let _ = child.kill();
        let _ = child.wait();
    }
}

/// nginx balances the three replicas; skopeo pushes and pulls through it as through one registry.
#[test]
fn nginx_in_front_of_three_replicas() {
    if !tools() {
        return;
    }
    let Some(cluster) = Cluster::start(3) else { return };
    let lb = Nginx::start(&cluster.tmp.path().join("nginx"), &cluster.replicas);
    let front = lb.as_registry(&cluster);
    let images = TestImages::get();
    let skopeo = Skopeo::new();
    let pushed = skopeo.push(&front, &images.oci("app"), "ns/lb:v1", &[]);
    assert_eq!(pushed, images.digest("app"));
    let out = cluster.tmp.path().join("through-lb");
    skopeo.pull(&front, "ns/lb:v1", &format!("oci:{}:v1", out.display()), &[]);
    assert_eq!(layout_digest(&out, "v1"), pushed);
    for reg in &cluster.replicas {
        assert_eq!(sha256_digest(&skopeo.inspect_raw(reg, "ns/lb:v1")), pushed);
    }
}

/// nginx on a free loopback port, round-robin over the replicas, streaming bodies both ways.
struct Nginx {
    child: Child,
    port: u16,
}

impl Nginx {
    fn start(dir: &std::path::Path, replicas: &[Registry]) -> Nginx {
        std::fs::create_dir_all(dir.join("logs")).unwrap();
        let port = free_port();
        let servers: String = replicas.iter().map(|r| format!("        server {};\n", r.host)).collect();
        let conf = format!(
            "daemon off;\nworker_processes 1;\npid {dir}/nginx.pid;\nerror_log {dir}/logs/error.log;\n\
             events {{ worker_connections 256; }}\n\
             http {{\n    access_log {dir}/logs/access.log;\n    client_body_temp_path {dir}/body;\n\
                 proxy_temp_path {dir}/proxy;\n    fastcgi_temp_path {dir}/fastcgi;\n    uwsgi_temp_path {dir}/uwsgi;\n\
                 scgi_temp_path {dir}/scgi;\n    upstream tributary {{\n{servers}    }}\n\
                 server {{\n        listen 127.0.0.1:{port};\n        client_max_body_size 0;\n\
                     proxy_request_buffering off;\n        proxy_buffering off;\n        proxy_http_version 1.1;\n\
                     proxy_read_timeout 900s;\n        proxy_send_timeout 900s;\n\
                     location / {{\n            proxy_pass http://tributary;\n            proxy_set_header Host $http_host;\n\
                         proxy_set_header X-Forwarded-For $remote_addr;\n            proxy_set_header X-Forwarded-Proto $scheme;\n\
                     }}\n    }}\n}}\n",
            dir = dir.display()
        );
        let path = dir.join("nginx.conf");
        std::fs::write(&path, conf).unwrap();
        let child = Command::new("nginx")
            .arg("-c")
            .arg(&path)
            .arg("-p")
            .arg(dir)
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start nginx");
        let started = Instant::now();
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(started.elapsed() < Duration::from_secs(10), "nginx does not listen on {port}");
            thread::sleep(Duration::from_millis(50));
        }
        Nginx { child, port }
    }

    /// The load balancer seen as one registry (same token).
    fn as_registry(&self, cluster: &Cluster) -> Registry {
        Registry::attach(&format!("127.0.0.1:{}", self.port), &cluster.token)
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        // SIGTERM makes the master stop its workers (a SIGKILL would leave them running).
        signal(self.child.id(), "TERM");
        if wait_timeout(&mut self.child, Duration::from_secs(10)).is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// A store that is misconfigured or out of reach stops `tributary serve` at once with a message saying which,
/// never a panic and never a hang.
#[test]
fn bad_or_unreachable_backends_are_clear_errors_at_start() {
    let closed = free_port();
    let dead = format!("http://127.0.0.1:{closed}");
    let cases: Vec<(Vec<(&str, &str)>, &str)> = vec![
        (vec![("TRIBUTARY_METADATA_BACKEND", "etcd"), ("TRIBUTARY_ETCD_ENDPOINTS", &dead)], "etcd"),
        (
            vec![
                ("TRIBUTARY_BLOB_BACKEND", "s3"),
                ("TRIBUTARY_S3_ENDPOINT", &dead),
                ("TRIBUTARY_S3_BUCKET", "tributary"),
                ("TRIBUTARY_S3_ACCESS_KEY_ID", "k"),
                ("TRIBUTARY_S3_SECRET_ACCESS_KEY", "s"),
            ],
            "S3",
        ),
        (vec![("TRIBUTARY_BLOB_BACKEND", "s3")], "needs a bucket"),
        (vec![("TRIBUTARY_BLOB_BACKEND", "tape")], "invalid value 'tape'"),
        (vec![("TRIBUTARY_METADATA_BACKEND", "etcd"), ("TRIBUTARY_ETCD_ENDPOINTS", "127.0.0.1:2379")], "etcd endpoint"),
    ];
    let tmp = tempdir("tributary-e2e-bad-backends-");
    for (env, says) in cases {
        let mut cmd = Command::new(tributary_bin());
        // As on many developers' machines: the error must still be one message.
        cmd.env("RUST_BACKTRACE", "1");
        cmd.args(["serve", "--listen", "127.0.0.1:0", "--admin-token", "bad-backend-test-token"])
            .arg("--data-dir")
            .arg(tmp.path().join("data"));
        for (k, _) in std::env::vars_os() {
            if k.to_string_lossy().starts_with("TRIBUTARY_") {
                cmd.env_remove(k);
            }
        }
        cmd.envs(env.iter().copied());
        let started = Instant::now();
        let out = run(&mut cmd, Duration::from_secs(60));
        let took = started.elapsed();
        assert!(!out.success(), "{env:?}: tributary started\n{}", out.stdout);
        assert!(out.stderr.contains(says), "{env:?}: stderr does not say {says:?}:\n{}", out.stderr);
        assert!(!out.stderr.contains("panicked"), "{env:?}: panicked:\n{}", out.stderr);
        assert!(!out.stderr.contains("Stack backtrace"), "{env:?}: a backtrace, not a message:\n{}", out.stderr);
        assert!(took < Duration::from_secs(30), "{env:?}: took {took:?} to give up");
        eprintln!("{env:?} -> after {took:?}: {}", out.stderr.lines().last().unwrap_or_default());
    }
}
