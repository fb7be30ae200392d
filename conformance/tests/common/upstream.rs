//! Upstream registries for the import, pull-through and mirror tests: Debian's `docker-registry` (CNCF
//! distribution) started on a free loopback port (plain http, htpasswd auth or https with a given certificate),
//! its access log read back to count requests; a private CA made with `openssl`; and the `tributary` CLI and API
//! calls those tests share (import, the stream's tags, a pull through Tributary compared with the test image).

use std::fs::{self, File};
use std::io::{self, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use super::*;

/// A `docker-registry` on a free loopback port, logging every request (its access log) to a file; killed when
/// dropped.
pub struct Upstream {
    child: Option<Child>,
    /// `127.0.0.1:PORT`
    pub host: String,
    log: PathBuf,
    _dir: tempfile::TempDir,
}

impl Upstream {
    /// Starts it, with htpasswd auth when `htpasswd` names a file.
    pub fn start(htpasswd: Option<&Path>) -> Upstream {
        Upstream::start_with(htpasswd, None)
    }

    /// Starts it serving https with this certificate and key (PEM files).
    pub fn start_tls(cert: &Path, key: &Path) -> Upstream {
        Upstream::start_with(None, Some((cert, key)))
    }

    fn start_with(htpasswd: Option<&Path>, tls: Option<(&Path, &Path)>) -> Upstream {
        let dir = tempdir("tributary-e2e-upstream-");
        let port = free_port();
        let mut yml = format!(
            "version: 0.1\nlog:\n  level: info\n  accesslog:\n    disabled: false\nstorage:\n  filesystem:\n    \
             rootdirectory: {}\n  delete:\n    enabled: true\nhttp:\n  addr: 127.0.0.1:{port}\n  secret: e2e-upstream\n",
            dir.path().join("data").display()
        );
        if let Some((cert, key)) = tls {
            yml.push_str(&format!("  tls:\n    certificate: {}\n    key: {}\n", cert.display(), key.display()));
        }
        if let Some(file) = htpasswd {
            yml.push_str(&format!("auth:\n  htpasswd:\n    realm: test\n    path: {}\n", file.display()));
        }
        let config = dir.path().join("config.yml");
        fs::write(&config, yml).unwrap();
        let log = dir.path().join("registry.log");
        let out = File::create(&log).unwrap();
        let mut cmd = Command::new("docker-registry");
        cmd.arg("serve").arg(&config).stdin(Stdio::null()).stdout(out.try_clone().unwrap()).stderr(out);
        eprintln!("+ {cmd:?}");
        let child = cmd.spawn().expect("start docker-registry");
        let mut up = Upstream { child: Some(child), host: format!("127.0.0.1:{port}"), log, _dir: dir };
        let start = Instant::now();
        loop {
            // Over TLS, a plain request gets Go's 400 answer: it is listening.
            let answer = http(&up.host, "GET", "/v2/", &[], &[]).map(|r| r.status);
            if matches!(answer, Ok(200 | 401)) || (tls.is_some() && answer.is_ok()) {
                break;
            }
            if let Some(Ok(Some(status))) = up.child.as_mut().map(|c| c.try_wait()) {
                panic!("docker-registry exited ({status})\n{}", up.log_text());
            }
            assert!(start.elapsed() < Duration::from_secs(30), "docker-registry not up\n{}", up.log_text());
            std::thread::sleep(Duration::from_millis(50));
        }
        eprintln!("upstream docker-registry up at {} after {:.2}s", up.host, start.elapsed().as_secs_f64());
        up
    }

    /// SIGKILL, and waits until nothing answers on its port any more.
    pub fn kill(&mut self) {
        let mut child = self.child.take().expect("upstream running");
        let _ = child.kill();
        let _ = child.wait();
        assert!(TcpStream::connect(&self.host).is_err(), "something still answers on {}", self.host);
    }

    pub fn log_text(&self) -> String {
        let text = fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        format!(
            "--- upstream log ---\n{}\n--- end of upstream log ---",
            lines[lines.len().saturating_sub(60)..].join("\n")
        )
    }

    /// How many lines its log has now: a mark for [`Upstream::requests_since`].
    pub fn mark(&self) -> usize {
        fs::read_to_string(&self.log).unwrap_or_default().lines().count()
    }

    /// Access-log lines after `mark` of requests (any method) whose path starts with `/v2/{repository}/`.
    pub fn requests_since(&self, mark: usize, repository: &str) -> Vec<String> {
        let needle = format!(" /v2/{repository}/");
        let text = fs::read_to_string(&self.log).unwrap_or_default();
        text.lines()
            .skip(mark)
            .filter(|l| l.contains("HTTP/1.1\"") && l.contains(&needle))
            .map(str::to_string)
            .collect()
    }

    /// Access-log lines of `GET /v2/<any repository>/blobs/{digest}` requests, whatever their answer. Any
    /// repository: a layer two imported images share may be fetched through either (the newest import's link).
    pub fn blob_gets(&self, digest: &str) -> Vec<String> {
        let needle = format!("/blobs/{digest} HTTP/1.1\"");
        let text = fs::read_to_string(&self.log).unwrap_or_default();
        text.lines().filter(|l| l.contains("\"GET /v2/") && l.contains(&needle)).map(str::to_string).collect()
    }

    /// Asserts that each of `digests` was fetched from the upstream exactly once.
    pub fn assert_one_get_each(&self, digests: &[String]) {
        for d in digests {
            let gets = self.blob_gets(d);
            assert_eq!(gets.len(), 1, "upstream GETs of blob {d}: {}\n{}", gets.len(), gets.join("\n"));
        }
    }

    /// `docker://127.0.0.1:PORT/{repo_ref}`
    pub fn docker_ref(&self, repo_ref: &str) -> String {
        format!("docker://{}/{repo_ref}", self.host)
    }
}

impl Drop for Upstream {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        if std::thread::panicking() {
            eprintln!("{}", self.log_text());
        }
    }
}

/// One plain HTTP/1.1 request (no auth) to `host`; `body` is sent with a Content-Length for PUT and POST.
pub fn http(host: &str, method: &str, path: &str, headers: &[(&str, &str)], body: &[u8]) -> io::Result<Response> {
    let mut s = TcpStream::connect(host)?;
    s.set_read_timeout(Some(Duration::from_secs(120)))?;
    let mut head = format!("{method} {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n");
    for (k, v) in headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    if matches!(method, "PUT" | "POST" | "PATCH") {
        head.push_str(&format!("Content-Length: {}\r\n", body.len()));
    }
    head.push_str("\r\n");
    s.write_all(head.as_bytes())?;
    s.write_all(body)?;
    read_response(&mut s, method == "HEAD")
}

/// `http://host:port/v2/...?q` -> `/v2/...?q`
pub fn path_of(location: &str) -> String {
    match location.strip_prefix("http://") {
        Some(rest) => rest.find('/').map_or("/".into(), |i| rest[i..].to_string()),
        None => location.to_string(),
    }
}

/// `skopeo copy` of a test image into the upstream as `{repo_ref}`.
pub fn seed(skopeo: &Skopeo, up: &Upstream, src: &str, repo_ref: &str, extra: &[&str]) {
    let mut c = skopeo.cmd();
    c.args(["copy", "--dest-tls-verify=false", "--retry-times", "0"]).args(extra).arg(src).arg(up.docker_ref(repo_ref));
    run_ok(&mut c, LONG);
}

// ---------------------------------------------------------------------------------------------
// Tributary's CLI and API

/// `tributary ARGS -n ns --server http://HOST --token T`, with nothing from the environment.
pub fn tributary(reg: &Registry, args: &[&str]) -> Command {
    let mut c = Command::new(tributary_bin());
    c.args(args).args(["-n", NAMESPACE, "--server", &format!("http://{}", reg.host)]);
    if let Some(token) = &reg.token {
        c.args(["--token", token]);
    }
    for (key, _) in std::env::vars_os() {
        if key.to_string_lossy().starts_with("TRIBUTARY_") {
            c.env_remove(key);
        }
    }
    c
}

/// `tributary import-image STREAM_TAG --from FROM --confirm EXTRA…`
pub fn import_image(reg: &Registry, stream_tag: &str, from: &str, extra: &[&str]) -> Output {
    let mut args = vec!["import-image", stream_tag, "--from", from, "--confirm"];
    args.extend_from_slice(extra);
    run(&mut tributary(reg, &args), LONG)
}

/// Asserts that `import-image` succeeded and printed the `imported` line and the image's digest.
pub fn assert_imported(o: &Output, stream: &str, digest: &str) {
    assert!(
        o.success(),
        "import-image failed: {}\n--- stdout ---\n{}\n--- stderr ---\n{}",
        o.status,
        o.stdout,
        o.stderr
    );
    assert!(
        o.stdout.lines().next() == Some(&format!("imagestream.image.openshift.io/{stream} imported")),
        "import-image output:\n{}",
        o.stdout
    );
    assert!(o.stdout.contains(digest), "import-image output lacks {digest}:\n{}", o.stdout);
}

/// GET the ImageStreamTag `ns/{stream}:{tag}`.
pub fn image_stream_tag(reg: &Registry, stream: &str, tag: &str) -> Value {
    let r = reg.get(&format!("/apis/image.openshift.io/v1/namespaces/{NAMESPACE}/imagestreamtags/{stream}:{tag}"));
    assert_eq!(r.status, 200, "GET imagestreamtag {stream}:{tag}: {r}");
    r.json()
}

/// The stream's `status.tags[tag]` entry.
pub fn status_tag(reg: &Registry, stream: &str, tag: &str) -> Value {
    let is = reg.image_stream(NAMESPACE, stream).unwrap_or_else(|| panic!("image stream {stream} not found"));
    is["status"]["tags"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|t| t["tag"] == tag)
        .cloned()
        .unwrap_or_else(|| panic!("no status tag {tag} in {is:#}"))
}

/// Pulls `repo_ref` from Tributary into a fresh OCI layout with skopeo and checks the manifest digest and
/// every config and layer blob against the test image `tag`.
pub fn skopeo_pull_and_compare(
    skopeo: &Skopeo,
    reg: &Registry,
    repo_ref: &str,
    images: &TestImages,
    tag: &str,
    out: &Path,
) {
    skopeo.pull(reg, repo_ref, &format!("oci:{}:x", out.display()), &[]);
    assert_eq!(layout_digest(out, "x"), images.digest(tag), "manifest digest of {repo_ref} pulled through");
    for blob in manifest_blobs(&images.manifest(tag)) {
        assert_eq!(layout_blob(out, &blob), images.blob(&blob), "blob {blob} of {repo_ref} differs from the source");
    }
}

/// A private certificate authority and a server certificate it signed for 127.0.0.1 and localhost (a day long),
/// made with `openssl` in `dir`.
pub struct PrivateCa {
    /// The CA's certificate (PEM), what a client must trust.
    pub ca_pem: String,
    pub cert: PathBuf,
    pub key: PathBuf,
}

impl PrivateCa {
    pub fn new(dir: &Path) -> PrivateCa {
        fs::create_dir_all(dir).unwrap();
        let p = |name: &str| dir.join(name);
        let ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"];
        run_ok(
            Command::new("openssl")
                .args(["req", "-x509", "-days", "1"])
                .args(ec)
                .args(["-subj", "/CN=Tributary e2e test CA", "-addext", "basicConstraints=critical,CA:TRUE"])
                .args(["-addext", "keyUsage=critical,keyCertSign,cRLSign"])
                .arg("-keyout")
                .arg(p("ca.key"))
                .arg("-out")
                .arg(p("ca.pem")),
            SHORT,
        );
        run_ok(
            Command::new("openssl")
                .arg("req")
                .args(ec)
                .args(["-subj", "/CN=127.0.0.1"])
                .arg("-keyout")
                .arg(p("server.key"))
                .arg("-out")
                .arg(p("server.csr")),
            SHORT,
        );
        fs::write(p("ext.cnf"), "subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth\n").unwrap();
        run_ok(
            Command::new("openssl")
                .args(["x509", "-req", "-days", "1", "-set_serial", "2"])
                .arg("-in")
                .arg(p("server.csr"))
                .arg("-CA")
                .arg(p("ca.pem"))
                .arg("-CAkey")
                .arg(p("ca.key"))
                .arg("-extfile")
                .arg(p("ext.cnf"))
                .arg("-out")
                .arg(p("server.pem")),
            SHORT,
        );
        PrivateCa { ca_pem: fs::read_to_string(p("ca.pem")).unwrap(), cert: p("server.pem"), key: p("server.key") }
    }
}
