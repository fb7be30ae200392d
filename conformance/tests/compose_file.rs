//! The deployment files, checked with the real tools (no Docker engine needed):
//! - `docker-compose.yml` through `docker-compose config` (the compose implementation's own parser, validation and
//!   interpolation): the services, 3 registry replicas with the S3 and etcd settings, port 5000 on the load balancer,
//!   and the admin token required with a clear message.
//! - `deploy/nginx.conf` run by a real nginx in front of a small local backend: 256 MiB streamed through both ways,
//!   neither side buffered by nginx, the request URI and the forwarded headers intact.
//! - `deploy/healthcheck.sh` (the image's health check) against a backend answering like a ready, an older, an
//!   unready and an absent registry.
mod common;

use std::collections::BTreeMap;
use std::fs;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{mpsc, Arc, OnceLock};
use std::thread;
use std::time::{Duration, Instant};

use common::*;
use serde_json::Value;
use sha2::{Digest, Sha256};

const MIB: usize = 1024 * 1024;
/// Bytes streamed each way through nginx: far past any default body limit or buffer.
const STREAMED: usize = 256 * MIB;

// ---------------------------------------------------------------------------------------------
// docker-compose.yml

/// `docker-compose … config` on the workspace's compose file, with only PATH and HOME from this environment (so a
/// developer's own TRIBUTARY_* or MINIO_* variables do not change the result) plus `env`.
fn compose_config(env: &[(&str, &str)], extra: &[&str]) -> Output {
    let file = workspace_root().join("docker-compose.yml");
    let mut cmd = Command::new("docker-compose");
    // An empty env file instead of the workspace's .env: a developer's own (see the README) would supply the token.
    let env_file = tempfile::NamedTempFile::new().expect("create empty env file");
    cmd.env_clear().arg("--file").arg(&file).arg("--env-file").arg(env_file.path()).arg("config").args(extra);
    for key in ["PATH", "HOME"] {
        if let Some(v) = std::env::var_os(key) {
            cmd.env(key, v);
        }
    }
    cmd.envs(env.iter().copied());
    run(&mut cmd, SHORT)
}

/// The normalized configuration as JSON: `config --format json` (Compose v2), else docker-compose 1.x's YAML
/// converted by Python's yaml module (a dependency of docker-compose 1.x).
fn compose_json(env: &[(&str, &str)]) -> Value {
    let o = compose_config(env, &["--format", "json"]);
    if o.success() {
        if let Ok(config) = serde_json::from_str(&o.stdout) {
            return config;
        }
    }
    let o = compose_config(env, &[]);
    assert!(o.success(), "docker-compose config failed:\n{}", o.stderr);
    yaml_to_json(&o.stdout)
}

fn yaml_to_json(yaml: &str) -> Value {
    let mut child = Command::new("python3")
        .args(["-c", "import json, sys, yaml; json.dump(yaml.safe_load(sys.stdin), sys.stdout)"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start python3");
    child.stdin.take().unwrap().write_all(yaml.as_bytes()).expect("write YAML to python3");
    let out = child.wait_with_output().expect("python3");
    assert!(out.status.success(), "YAML to JSON failed: {}\n{yaml}", String::from_utf8_lossy(&out.stderr));
    parse_json(&String::from_utf8_lossy(&out.stdout))
}

/// A service's environment as a map, from either normalized form (a mapping, or a list of `KEY=value`).
fn environment(service: &Value) -> BTreeMap<String, String> {
    match &service["environment"] {
        Value::Object(map) => {
            map.iter().map(|(k, v)| (k.clone(), v.as_str().map_or_else(|| v.to_string(), str::to_string))).collect()
        }
        Value::Array(list) => list
            .iter()
            .filter_map(|e| e.as_str()?.split_once('='))
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        _ => BTreeMap::new(),
    }
}

/// `(published, target)` of every port a service publishes, from the short (`"5000:5000"`) or long syntax.
fn published_ports(service: &Value) -> Vec<(String, String)> {
    let text = |v: &Value| v.as_str().map_or_else(|| v.to_string(), str::to_string);
    service["ports"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|p| match p {
            Value::String(s) => {
                let s = s.split('/').next().unwrap_or_default();
                let mut parts = s.rsplitn(3, ':');
                let target = parts.next()?.to_string();
                let published = parts.next()?.to_string();
                Some((published, target))
            }
            Value::Object(_) => Some((text(&p["published"]), text(&p["target"]))),
            _ => None,
        })
        .collect()
}

#[test]
fn compose_file_describes_the_scaled_out_topology() {
    if !tools_present(&["docker-compose"]) {
        return;
    }
    let token = "compose-test-token";
    let check = compose_config(&[("TRIBUTARY_ADMIN_TOKEN", token)], &["--quiet"]);
    assert!(check.success(), "docker-compose config --quiet rejected the file:\n{}", check.stderr);

    let config = compose_json(&[("TRIBUTARY_ADMIN_TOKEN", token)]);
    let services = config["services"].as_object().unwrap_or_else(|| panic!("no services:\n{config:#}"));
    for name in ["etcd", "minio", "createbucket", "registry", "lb"] {
        assert!(services.contains_key(name), "service {name} missing:\n{config:#}");
    }
    let volumes = config["volumes"].as_object().unwrap_or_else(|| panic!("no named volumes:\n{config:#}"));
    for name in ["etcd-data", "minio-data"] {
        assert!(volumes.contains_key(name), "volume {name} missing:\n{config:#}");
    }

    // Three replicas, built from the Dockerfile, none publishing a host port (they would collide).
    let registry = &services["registry"];
    let replicas = registry["deploy"]["replicas"].as_u64().or_else(|| registry["scale"].as_u64());
    assert_eq!(replicas, Some(3), "registry replicas:\n{registry:#}");
    assert!(!registry["build"].is_null(), "registry is not built from the Dockerfile:\n{registry:#}");
    assert!(published_ports(registry).is_empty(), "registry replicas publish ports:\n{registry:#}");

    // Every replica gets the same stores and the same admin token.
    let env = environment(registry);
    for (key, want) in [
        ("TRIBUTARY_ADMIN_TOKEN", token),
        ("TRIBUTARY_LISTEN", "0.0.0.0:5000"),
        ("TRIBUTARY_PUBLIC_HOST", "localhost:5000"),
        ("TRIBUTARY_BLOB_BACKEND", "s3"),
        ("TRIBUTARY_S3_ENDPOINT", "http://minio:9000"),
        ("TRIBUTARY_S3_REGION", "us-east-1"),
        ("TRIBUTARY_S3_BUCKET", "tributary"),
        ("TRIBUTARY_S3_PATH_STYLE", "true"),
        ("TRIBUTARY_S3_ALLOW_HTTP", "true"),
        ("TRIBUTARY_METADATA_BACKEND", "etcd"),
        ("TRIBUTARY_ETCD_ENDPOINTS", "http://etcd:2379"),
        ("TRIBUTARY_ETCD_PREFIX", "/tributary/"),
    ] {
        assert_eq!(env.get(key).map(String::as_str), Some(want), "registry environment {key}:\n{env:#?}");
    }
    // The S3 credentials are MinIO's, whatever they are set to.
    let minio_env = environment(&services["minio"]);
    assert_eq!(env.get("TRIBUTARY_S3_ACCESS_KEY_ID"), minio_env.get("MINIO_ROOT_USER"), "{env:#?}\n{minio_env:#?}");
    assert_eq!(env.get("TRIBUTARY_S3_SECRET_ACCESS_KEY"), minio_env.get("MINIO_ROOT_PASSWORD"));
    let custom = compose_json(&[
        ("TRIBUTARY_ADMIN_TOKEN", token),
        ("MINIO_ROOT_USER", "someone"),
        ("MINIO_ROOT_PASSWORD", "a-long-secret"),
    ]);
    let custom_env = environment(&custom["services"]["registry"]);
    assert_eq!(custom_env["TRIBUTARY_S3_ACCESS_KEY_ID"], "someone");
    assert_eq!(custom_env["TRIBUTARY_S3_SECRET_ACCESS_KEY"], "a-long-secret");
    assert_eq!(environment(&custom["services"]["minio"])["MINIO_ROOT_USER"], "someone");

    // Replicas start once etcd and MinIO are healthy and the bucket exists; each has a health check.
    let depends = &registry["depends_on"];
    assert_eq!(depends["etcd"]["condition"], "service_healthy", "{registry:#}");
    assert_eq!(depends["minio"]["condition"], "service_healthy", "{registry:#}");
    assert_eq!(depends["createbucket"]["condition"], "service_completed_successfully", "{registry:#}");
    for name in ["etcd", "minio", "registry", "lb"] {
        let test = &services[name]["healthcheck"]["test"];
        assert!(test.is_array() || test.is_string(), "{name} has no health check:\n{:#}", services[name]);
    }
    assert!(services["etcd"]["healthcheck"]["test"].to_string().contains("endpoint"), "{:#}", services["etcd"]);

    // The load balancer publishes 5000 and uses the repository's nginx configuration.
    let lb = &services["lb"];
    assert!(
        published_ports(lb).iter().any(|(published, target)| published == "5000" && target == "5000"),
        "lb does not publish 5000:\n{lb:#}"
    );
    let mounts = lb["volumes"].to_string();
    assert!(mounts.contains("deploy/nginx.conf") && mounts.contains("/etc/nginx/nginx.conf"), "lb volumes: {mounts}");
    note("docker-compose config: etcd, minio, createbucket, 3 registry replicas, lb on 5000");
}

#[test]
fn compose_file_requires_the_admin_token() {
    if !tools_present(&["docker-compose"]) {
        return;
    }
    for env in [&[][..], &[("TRIBUTARY_ADMIN_TOKEN", "")][..]] {
        let o = compose_config(env, &["--quiet"]);
        assert!(!o.success(), "docker-compose config accepted a missing admin token ({env:?}):\n{}", o.stdout);
        let message = format!("{}{}", o.stdout, o.stderr);
        assert!(
            message.contains("set TRIBUTARY_ADMIN_TOKEN to the admin token every replica shares"),
            "no clear message for the missing admin token:\n{message}"
        );
    }
}

// ---------------------------------------------------------------------------------------------
// A small HTTP/1.1 backend standing in for the registry replicas.

/// One request as the backend received it.
#[derive(Debug)]
struct Received {
    request_line: String,
    headers: BTreeMap<String, String>,
    body_bytes: usize,
    body_digest: String,
}

/// What the backend reports to the test while serving.
enum Event {
    /// The first body bytes of a request arrived (before the client sent the rest, unless nginx buffered it).
    BodyStarted,
    Request(Received),
}

/// Serves each connection on a thread: `GET /download` answers [`STREAMED`] bytes (see `download_progress`),
/// anything else reads the body (Content-Length or chunked), then answers 201.
struct Backend {
    port: u16,
    events: mpsc::Receiver<Event>,
    /// Body bytes of the current download written into the socket so far.
    download_progress: Arc<AtomicU64>,
}

impl Backend {
    fn start() -> Backend {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind backend");
        let port = listener.local_addr().unwrap().port();
        let (tx, events) = mpsc::channel();
        let download_progress = Arc::new(AtomicU64::new(0));
        let progress = download_progress.clone();
        thread::spawn(move || {
            for conn in listener.incoming() {
                let Ok(conn) = conn else { break };
                let (tx, progress) = (tx.clone(), progress.clone());
                thread::spawn(move || {
                    let _ = serve_connection(conn, &tx, &progress);
                });
            }
        });
        Backend { port, events, download_progress }
    }

    fn next_request(&self, timeout: Duration) -> Received {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.events.recv_timeout(left) {
                Ok(Event::Request(r)) => return r,
                Ok(Event::BodyStarted) => continue,
                Err(_) => panic!("the backend received no complete request within {timeout:?}"),
            }
        }
    }
}

fn read_head(r: &mut impl BufRead) -> io::Result<Option<(String, BTreeMap<String, String>)>> {
    let mut line = String::new();
    if r.read_line(&mut line)? == 0 {
        return Ok(None);
    }
    let request_line = line.trim_end().to_string();
    let mut headers = BTreeMap::new();
    loop {
        line.clear();
        if r.read_line(&mut line)? == 0 {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        let l = line.trim_end();
        if l.is_empty() {
            break;
        }
        if let Some((k, v)) = l.split_once(':') {
            headers.insert(k.trim().to_ascii_lowercase(), v.trim().to_string());
        }
    }
    Ok(Some((request_line, headers)))
}

/// Reads a request body, hashing it; reports [`Event::BodyStarted`] at its first bytes.
fn read_body(
    r: &mut impl BufRead,
    headers: &BTreeMap<String, String>,
    tx: &mpsc::Sender<Event>,
) -> io::Result<(usize, String)> {
    let mut hasher = Sha256::new();
    let mut total = 0usize;
    let mut buf = vec![0u8; 256 * 1024];
    let mut take = |r: &mut dyn Read, mut n: usize| -> io::Result<()> {
        while n > 0 {
            let want = n.min(buf.len());
            r.read_exact(&mut buf[..want])?;
            if total == 0 {
                let _ = tx.send(Event::BodyStarted);
            }
            hasher.update(&buf[..want]);
            total += want;
            n -= want;
        }
        Ok(())
    };
    if headers.get("transfer-encoding").is_some_and(|t| t.eq_ignore_ascii_case("chunked")) {
        let mut line = String::new();
        loop {
            line.clear();
            r.read_line(&mut line)?;
            let size = usize::from_str_radix(line.trim().split(';').next().unwrap_or_default(), 16)
                .map_err(|_| io::Error::new(io::ErrorKind::InvalidData, format!("bad chunk size {line:?}")))?;
            if size == 0 {
                // Trailers, then the empty line.
                loop {
                    line.clear();
                    if r.read_line(&mut line)? == 0 || line.trim_end().is_empty() {
                        break;
                    }
                }
                break;
            }
            take(r, size)?;
            line.clear();
            r.read_line(&mut line)?;
        }
    } else if let Some(n) = headers.get("content-length").and_then(|n| n.parse().ok()) {
        take(r, n)?;
    }
    Ok((total, format!("sha256:{}", hex::encode(hasher.finalize()))))
}

fn serve_connection(conn: TcpStream, tx: &mpsc::Sender<Event>, progress: &AtomicU64) -> io::Result<()> {
    let mut w = conn.try_clone()?;
    let mut r = BufReader::with_capacity(256 * 1024, conn);
    while let Some((request_line, headers)) = read_head(&mut r)? {
        if request_line.starts_with("GET /download ") {
            progress.store(0, Ordering::SeqCst);
            write!(
                w,
                "HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\nContent-Length: {STREAMED}\r\n\r\n"
            )?;
            let block = pattern_block(7);
            let mut sent = 0;
            while sent < STREAMED {
                w.write_all(&block)?;
                sent += block.len();
                progress.store(sent as u64, Ordering::SeqCst);
            }
            let _ =
                tx.send(Event::Request(Received { request_line, headers, body_bytes: 0, body_digest: String::new() }));
            continue;
        }
        let (body_bytes, body_digest) = read_body(&mut r, &headers, tx)?;
        let reply = format!("{body_bytes} {body_digest}");
        write!(w, "HTTP/1.1 201 Created\r\nContent-Length: {}\r\nX-Backend: yes\r\n\r\n{reply}", reply.len())?;
        let _ = tx.send(Event::Request(Received { request_line, headers, body_bytes, body_digest }));
    }
    Ok(())
}

/// 1 MiB of pseudo-random bytes, different for each `seed` (the first 8 bytes are the seed; the rest is generated
/// once).
fn pattern_block(seed: u64) -> Vec<u8> {
    static BASE: OnceLock<Vec<u8>> = OnceLock::new();
    let base = BASE.get_or_init(|| {
        let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
        (0..MIB)
            .map(|_| {
                // xorshift64
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect()
    });
    let mut block = base.clone();
    block[..8].copy_from_slice(&seed.to_le_bytes());
    block
}

// ---------------------------------------------------------------------------------------------
// deploy/nginx.conf under a real nginx

/// nginx running `deploy/nginx.conf` with its upstream replaced by a local backend and its port by a free one, as
/// an unprivileged process with its own prefix; stopped when dropped.
struct Nginx {
    port: u16,
    child: Child,
    log: PathBuf,
    _dir: tempfile::TempDir,
}

impl Nginx {
    fn start(backend_port: u16) -> Nginx {
        let template = fs::read_to_string(workspace_root().join("deploy/nginx.conf")).expect("read deploy/nginx.conf");
        assert!(
            template.contains("http://registry:5000"),
            "deploy/nginx.conf no longer proxies to http://registry:5000"
        );
        assert!(template.contains("listen 5000;"), "deploy/nginx.conf no longer listens on 5000");
        let version = run(Command::new("nginx").arg("-V"), SHORT);
        let built = version.stderr + &version.stdout;
        let mut last_error = String::new();
        for _ in 0..5 {
            let dir = tempdir("compose-nginx-");
            // Workers may run as another user (nobody) when the test runs as root.
            let _ = Command::new("chmod").arg("0755").arg(dir.path()).status();
            let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
            let mut temp_paths = String::new();
            for (module, directive) in [
                ("", "client_body_temp_path"),
                ("", "proxy_temp_path"),
                ("fastcgi", "fastcgi_temp_path"),
                ("uwsgi", "uwsgi_temp_path"),
                ("scgi", "scgi_temp_path"),
            ] {
                if module.is_empty() || !built.contains(&format!("--without-http_{module}_module")) {
                    temp_paths.push_str(&format!("    {directive} {};\n", dir.path().join(directive).display()));
                }
            }
            let conf = template
                .replace("http://registry:5000", &format!("http://127.0.0.1:{backend_port}"))
                .replace("listen 5000;", &format!("listen 127.0.0.1:{port};"))
                .replacen("http {\n", &format!("http {{\n{temp_paths}"), 1);
            let conf_path = dir.path().join("nginx.conf");
            fs::write(&conf_path, conf).unwrap();
            let args = |cmd: &mut Command| {
                cmd.arg("-p")
                    .arg(dir.path())
                    .arg("-e")
                    .arg("stderr")
                    .arg("-c")
                    .arg(&conf_path)
                    .arg("-g")
                    .arg(format!("daemon off; pid {};", dir.path().join("nginx.pid").display()));
            };
            let mut test = Command::new("nginx");
            args(&mut test);
            test.arg("-t");
            let t = run(&mut test, SHORT);
            assert!(t.success(), "nginx -t rejects deploy/nginx.conf:\n{}", t.stderr);

            let log = dir.path().join("nginx.log");
            let logf = fs::File::create(&log).unwrap();
            let mut cmd = Command::new("nginx");
            args(&mut cmd);
            let child = cmd
                .stdin(Stdio::null())
                .stdout(Stdio::from(logf.try_clone().unwrap()))
                .stderr(Stdio::from(logf))
                .spawn()
                .expect("start nginx");
            let mut nginx = Nginx { port, child, log, _dir: dir };
            let start = Instant::now();
            loop {
                if TcpStream::connect(("127.0.0.1", port)).is_ok() {
                    note(format!("nginx listening on 127.0.0.1:{port}, proxying to 127.0.0.1:{backend_port}"));
                    return nginx;
                }
                if let Ok(Some(status)) = nginx.child.try_wait() {
                    last_error = format!("nginx exited ({status}):\n{}", nginx.log_text());
                    break; // most likely the port was taken meanwhile: try another
                }
                assert!(start.elapsed() < Duration::from_secs(20), "nginx does not listen:\n{}", nginx.log_text());
                thread::sleep(Duration::from_millis(20));
            }
        }
        panic!("nginx did not start: {last_error}");
    }

    fn log_text(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn connect(&self) -> TcpStream {
        let s = TcpStream::connect(("127.0.0.1", self.port)).expect("connect to nginx");
        s.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
        s.set_write_timeout(Some(Duration::from_secs(60))).unwrap();
        s
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        signal(self.child.id(), "QUIT");
        if wait_timeout(&mut self.child, Duration::from_secs(10)).is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
        if thread::panicking() {
            eprintln!("--- nginx log ---\n{}\n--- end of nginx log ---", self.log_text());
        }
    }
}

#[test]
fn nginx_conf_streams_large_uploads_and_downloads() {
    if !tools_present(&["nginx"]) {
        return;
    }
    let backend = Backend::start();
    let nginx = Nginx::start(backend.port);
    let host = "registry.example:5000";

    // A chunked upload (docker's PATCH) of 256 MiB: no size limit, and the backend sees its first bytes while the
    // client still holds the rest (not buffered), with the URI and the client's Host unchanged.
    let uri = "/v2/ns/app/blobs/uploads/0f3c?digest=sha256%3Aab%2Fcd&n=1";
    let mut s = nginx.connect();
    write!(
        s,
        "PATCH {uri} HTTP/1.1\r\nHost: {host}\r\nTransfer-Encoding: chunked\r\nContent-Type: application/octet-stream\r\n\r\n"
    )
    .unwrap();
    let mut sent = Sha256::new();
    let mut send_chunk = |s: &mut TcpStream, i: u64| -> io::Result<()> {
        let block = pattern_block(i);
        write!(s, "{:x}\r\n", block.len())?;
        s.write_all(&block)?;
        s.write_all(b"\r\n")?;
        sent.update(&block);
        Ok(())
    };
    send_chunk(&mut s, 0).unwrap();
    s.flush().unwrap();
    let start = Instant::now();
    let streamed = match backend.events.recv_timeout(Duration::from_secs(10)) {
        Ok(Event::BodyStarted) => true,
        Ok(Event::Request(r)) => panic!("unexpected request {r:?}"),
        Err(_) => false,
    };
    assert!(
        streamed,
        "nginx held back the upload's first MiB for 10s: it buffers requests (proxy_request_buffering on, or \
         HTTP/1.0 to the upstream)\n{}",
        nginx.log_text()
    );
    note(format!(
        "upload: first bytes at the backend after {:.3}s, while the client held the rest",
        start.elapsed().as_secs_f64()
    ));
    for i in 1..(STREAMED / MIB) as u64 {
        if let Err(e) = send_chunk(&mut s, i) {
            let answer = read_response(&mut s, false).map_or_else(|e| format!("no response: {e}"), |r| r.to_string());
            panic!("nginx stopped the upload after {i} MiB ({e}); it answered: {answer}\n{}", nginx.log_text());
        }
    }
    s.write_all(b"0\r\n\r\n").unwrap();
    let want_digest = format!("sha256:{}", hex::encode(sent.finalize()));
    // The response first: nginx answers an error (a body size limit) without involving the backend.
    let r = read_response(&mut s, false).expect("read the upload's response");
    assert_eq!(r.status, 201, "{r}\n{}", nginx.log_text());
    let got = backend.next_request(Duration::from_secs(60));
    assert_eq!(r.header("x-backend"), Some("yes"), "{r}");
    assert_eq!(got.body_bytes, STREAMED, "{got:?}");
    assert_eq!(got.body_digest, want_digest, "the body changed on the way");
    assert_eq!(r.text(), format!("{STREAMED} {want_digest}"));
    note(format!("upload: {} MiB through nginx in {:.1}s", STREAMED / MIB, start.elapsed().as_secs_f64()));
    assert_eq!(got.request_line, format!("PATCH {uri} HTTP/1.1"), "the request line changed");
    let h = &got.headers;
    assert_eq!(h.get("host").map(String::as_str), Some(host), "{h:#?}");
    assert_eq!(h.get("x-forwarded-host").map(String::as_str), Some(host), "{h:#?}");
    assert_eq!(h.get("x-forwarded-proto").map(String::as_str), Some("http"), "{h:#?}");
    assert_eq!(h.get("x-forwarded-for").map(String::as_str), Some("127.0.0.1"), "{h:#?}");
    assert_eq!(h.get("x-real-ip").map(String::as_str), Some("127.0.0.1"), "{h:#?}");

    // A monolithic PUT with Content-Length on the same client connection (keep-alive).
    let body = pattern_block(99);
    write!(
        s,
        "PUT /v2/ns/app/blobs/uploads/0f3c?digest=x HTTP/1.1\r\nHost: {host}\r\nContent-Length: {}\r\n\r\n",
        body.len()
    )
    .unwrap();
    s.write_all(&body).unwrap();
    let r = read_response(&mut s, false).expect("read the PUT's response");
    assert_eq!(r.status, 201, "{r}");
    assert_eq!(r.text(), format!("{} {}", body.len(), sha256_digest(&body)));
    let got = backend.next_request(Duration::from_secs(30));
    assert_eq!(got.headers.get("content-length").map(String::as_str), Some(body.len().to_string().as_str()));
    drop(s);

    // A 256 MiB download to a client that stops reading after the first MiB: nginx does not spool the response
    // (proxy_buffering off), so the backend stalls far short of the end until the client reads on.
    let mut s = nginx.connect();
    write!(s, "GET /download HTTP/1.1\r\nHost: {host}\r\n\r\n").unwrap();
    let mut r = BufReader::new(s.try_clone().unwrap());
    let mut line = String::new();
    r.read_line(&mut line).unwrap();
    assert!(line.starts_with("HTTP/1.1 200"), "download: {line:?}\n{}", nginx.log_text());
    let mut length = None;
    loop {
        line.clear();
        r.read_line(&mut line).unwrap();
        if line.trim_end().is_empty() {
            break;
        }
        if let Some((k, v)) = line.split_once(':') {
            if k.eq_ignore_ascii_case("content-length") {
                length = v.trim().parse::<usize>().ok();
            }
        }
    }
    assert_eq!(length, Some(STREAMED), "the download lost its Content-Length");
    let mut first = vec![0u8; MIB];
    r.read_exact(&mut first).unwrap();
    thread::sleep(Duration::from_secs(2));
    let written = backend.download_progress.load(Ordering::SeqCst) as usize;
    note(format!(
        "download: client paused after 1 MiB; backend had written {} MiB of {}",
        written / MIB,
        STREAMED / MIB
    ));
    assert!(
        written < STREAMED / 2,
        "the backend wrote {written} bytes while the client read 1 MiB: nginx buffers responses\n{}",
        nginx.log_text()
    );
    let mut hasher = Sha256::new();
    hasher.update(&first);
    let mut buf = vec![0u8; 256 * 1024];
    let mut total = first.len();
    while total < STREAMED {
        let n = r.read(&mut buf[..(STREAMED - total).min(256 * 1024)]).unwrap();
        assert!(n > 0, "download ended after {total} bytes");
        hasher.update(&buf[..n]);
        total += n;
    }
    let block = pattern_block(7);
    let mut want = Sha256::new();
    for _ in 0..STREAMED / MIB {
        want.update(&block);
    }
    assert_eq!(hex::encode(hasher.finalize()), hex::encode(want.finalize()), "the download changed on the way");
    let got = backend.next_request(Duration::from_secs(30));
    assert_eq!(got.request_line, "GET /download HTTP/1.1");
    s.shutdown(Shutdown::Both).ok();
    assert!(
        !nginx.log_text().contains("buffered to a temporary file"),
        "nginx spooled a body to disk:\n{}",
        nginx.log_text()
    );

    // The load balancer's own health endpoint.
    let mut s = nginx.connect();
    write!(s, "GET /nginx-health HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n").unwrap();
    let r = read_response(&mut s, false).unwrap();
    assert_eq!(r.status, 200, "{r}");
}

// ---------------------------------------------------------------------------------------------
// deploy/healthcheck.sh

/// Answers every request with the status `status_of(path)` and no body.
fn status_server(status_of: fn(&str) -> u16) -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().unwrap().port();
    thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(conn) = conn else { break };
            thread::spawn(move || {
                let mut w = conn.try_clone().unwrap();
                let mut r = BufReader::new(conn);
                while let Ok(Some((line, _))) = read_head(&mut r) {
                    let path = line.split_whitespace().nth(1).unwrap_or_default().to_string();
                    let status = status_of(&path);
                    if write!(w, "HTTP/1.1 {status} X\r\nContent-Length: 0\r\n\r\n").is_err() {
                        break;
                    }
                }
            });
        }
    });
    port
}

fn healthcheck(port: u16) -> Output {
    let script = workspace_root().join("deploy/healthcheck.sh");
    let mut cmd = Command::new("sh");
    cmd.arg(&script).env("TRIBUTARY_LISTEN", format!("0.0.0.0:{port}")).env_remove("TRIBUTARY_TLS_CERT");
    run(&mut cmd, SHORT)
}

#[test]
fn healthcheck_script_tells_ready_from_unready() {
    if !tools_present(&["sh", "curl"]) {
        return;
    }
    assert!(workspace_root().join("deploy/healthcheck.sh").is_file());
    // Ready: /readyz answers 200.
    let port = status_server(|p| if p == "/readyz" { 200 } else { 500 });
    let o = healthcheck(port);
    assert!(o.success(), "ready server judged unhealthy: {}", o.stderr);
    // A server from before /readyz: 404 there, 401 on /v2/ (access control on).
    let port = status_server(|p| match p {
        "/readyz" => 404,
        "/v2/" => 401,
        _ => 500,
    });
    let o = healthcheck(port);
    assert!(o.success(), "serving server without /readyz judged unhealthy: {}", o.stderr);
    // Up but not ready (its stores unreachable): unhealthy, even though /v2/ would answer.
    let port = status_server(|p| if p == "/readyz" { 503 } else { 200 });
    let o = healthcheck(port);
    assert!(!o.success(), "unready server judged healthy");
    assert!(o.stderr.contains("503"), "{}", o.stderr);
    // No /readyz and a failing API.
    let port = status_server(|p| if p == "/readyz" { 404 } else { 500 });
    assert!(!healthcheck(port).success(), "server answering 500 judged healthy");
    // Nothing listening.
    let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let o = healthcheck(port);
    assert!(!o.success(), "closed port judged healthy");
    assert!(o.stderr.contains("000"), "{}", o.stderr);
}
