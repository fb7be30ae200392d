//! Shared harness for Tributary's end-to-end tests.
//!
//! Each test starts its own registry (the `tributary` binary) on a free loopback port with its
//! own data directory, drives real clients (skopeo, podman, docker) against it with
//! `std::process::Command`, and stops it when the [`Registry`] guard is dropped.
//!
//! Environment:
//! - `TRIBUTARY_BIN`: the `tributary` binary to test. Default: `tributary` next to the test
//!   executable's profile directory (`$CARGO_TARGET_DIR/{debug,release}`), built with
//!   `cargo build -p registry --bin tributary` first so it is never stale.
//! - `TRIBUTARY_E2E_REQUIRED=1`: a missing client tool fails the test instead of skipping it (CI).
//! - `TRIBUTARY_E2E_TARGET=distribution`: run against Debian's `docker-registry` (CNCF
//!   distribution) instead, to check the harness itself; Tributary-only checks are skipped.
//! - `TRIBUTARY_E2E_AUTH=none`: start Tributary with `--auth none`. By default it runs with
//!   access control on (`--auth token`): the harness gives it a fresh `--admin-token`, creates
//!   the namespace `ns` through the admin API, and every client logs in with that token.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::fs::{self, File, OpenOptions};
use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::sync::{Mutex, OnceLock};
use std::thread;
use std::time::{Duration, Instant};

use serde_json::Value;
use sha2::{Digest, Sha256};

mod upstream;
#[allow(unused_imports)]
pub use upstream::*;

pub const SHORT: Duration = Duration::from_secs(120);
pub const LONG: Duration = Duration::from_secs(600);

// ---------------------------------------------------------------------------------------------
// Paths, tools, skipping

pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("conformance/ has a parent").to_path_buf()
}

pub fn required() -> bool {
    std::env::var("TRIBUTARY_E2E_REQUIRED").map(|v| v == "1" || v == "true").unwrap_or(false)
}

/// Finds `tool` on PATH, or in the sbin directories (dockerd lives in /usr/sbin).
pub fn which(tool: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    let mut dirs: Vec<PathBuf> = std::env::split_paths(&path).collect();
    dirs.extend(["/usr/local/sbin", "/usr/sbin", "/sbin", "/usr/bin", "/bin"].map(PathBuf::from));
    dirs.into_iter().map(|d| d.join(tool)).find(|p| p.is_file())
}

/// Returns true when every tool is installed. Otherwise, when `TRIBUTARY_E2E_REQUIRED=1`, the
/// test fails; else it prints `skipped: <tool> missing` and the caller returns.
#[must_use]
pub fn tools_present(tools: &[&str]) -> bool {
    for tool in tools {
        if which(tool).is_none() {
            if required() {
                panic!("{tool} missing, and TRIBUTARY_E2E_REQUIRED=1 (install the test dependencies: scripts/test.sh)");
            }
            println!("skipped: {tool} missing");
            eprintln!("skipped: {tool} missing");
            return false;
        }
    }
    true
}

/// The tools needed to build the test images.
pub const IMAGE_TOOLS: &[&str] = &["umoci", "busybox", "jq", "sha256sum"];

pub fn tempdir(prefix: &str) -> tempfile::TempDir {
    tempfile::Builder::new().prefix(prefix).tempdir().expect("create temp dir")
}

/// Prints a progress line stamped with the time since the test process started.
pub fn note(msg: impl std::fmt::Display) {
    static START: OnceLock<Instant> = OnceLock::new();
    let t = START.get_or_init(Instant::now).elapsed().as_secs_f64();
    eprintln!("[{t:7.1}s] {msg}");
}

// ---------------------------------------------------------------------------------------------
// Running commands

pub struct Output {
    pub status: ExitStatus,
    pub stdout: String,
    pub stderr: String,
}

impl Output {
    pub fn success(&self) -> bool {
        self.status.success()
    }
}

fn describe(cmd: &Command) -> String {
    let mut s = cmd.get_program().to_string_lossy().into_owned();
    for a in cmd.get_args() {
        s.push(' ');
        s.push_str(&a.to_string_lossy());
    }
    s
}

/// Runs a command with a timeout, capturing its output. Panics if it cannot be started or times
/// out (after killing it), printing what it wrote.
pub fn run(cmd: &mut Command, timeout: Duration) -> Output {
    let line = describe(cmd);
    eprintln!("+ {line}");
    let start = Instant::now();
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start `{line}`: {e}"));
    let out = drain(child.stdout.take().unwrap());
    let err = drain(child.stderr.take().unwrap());
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait for child") {
            break status;
        }
        if start.elapsed() > timeout {
            let _ = child.kill();
            let _ = child.wait();
            let stdout = out.join().unwrap_or_default();
            let stderr = err.join().unwrap_or_default();
            panic!("`{line}` timed out after {timeout:?}\n--- stdout ---\n{stdout}\n--- stderr ---\n{stderr}");
        }
        thread::sleep(Duration::from_millis(20));
    };
    let output = Output { status, stdout: out.join().unwrap_or_default(), stderr: err.join().unwrap_or_default() };
    eprintln!("  ({status}, {:.1}s)", start.elapsed().as_secs_f64());
    output
}

fn drain(mut r: impl Read + Send + 'static) -> thread::JoinHandle<String> {
    thread::spawn(move || {
        let mut buf = Vec::new();
        let _ = r.read_to_end(&mut buf);
        String::from_utf8_lossy(&buf).into_owned()
    })
}

/// Like [`run`], and panics with the command's stdout and stderr unless it succeeded.
pub fn run_ok(cmd: &mut Command, timeout: Duration) -> Output {
    let line = describe(cmd);
    let o = run(cmd, timeout);
    if !o.success() {
        panic!("`{line}` failed: {}\n--- stdout ---\n{}\n--- stderr ---\n{}", o.status, o.stdout, o.stderr);
    }
    o
}

/// Like [`run`], and panics unless the command failed.
pub fn run_fails(cmd: &mut Command, timeout: Duration) -> Output {
    let line = describe(cmd);
    let o = run(cmd, timeout);
    if o.success() {
        panic!("`{line}` unexpectedly succeeded\n--- stdout ---\n{}\n--- stderr ---\n{}", o.stdout, o.stderr);
    }
    o
}

pub fn signal(pid: u32, sig: &str) {
    let _ = Command::new("kill").arg(format!("-{sig}")).arg(pid.to_string()).stderr(Stdio::null()).status();
}

/// Waits for a child to exit; returns its status, or None after `timeout`.
pub fn wait_timeout(child: &mut Child, timeout: Duration) -> Option<ExitStatus> {
    let start = Instant::now();
    loop {
        if let Ok(Some(status)) = child.try_wait() {
            return Some(status);
        }
        if start.elapsed() > timeout {
            return None;
        }
        thread::sleep(Duration::from_millis(25));
    }
}

// ---------------------------------------------------------------------------------------------
// Digests and files

pub fn sha256_digest(bytes: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(bytes)))
}

/// The sha256 digest of a (possibly large) file, computed by `sha256sum` (fast in debug builds).
pub fn file_digest(path: &Path) -> String {
    let o = run_ok(Command::new("sha256sum").arg(path), LONG);
    format!("sha256:{}", o.stdout.split_whitespace().next().expect("sha256sum output"))
}

/// Writes `size` bytes of random data to `path` without holding it in memory.
pub fn write_random_file(path: &Path, size: u64) {
    let mut src = File::open("/dev/urandom").expect("open /dev/urandom");
    let mut dst = File::create(path).expect("create file");
    let copied = io::copy(&mut (&mut src).take(size), &mut dst).expect("write random file");
    assert_eq!(copied, size);
}

pub fn read_json(path: &Path) -> Value {
    let text = fs::read_to_string(path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("parse {}: {e}\n{text}", path.display()))
}

pub fn parse_json(text: &str) -> Value {
    serde_json::from_str(text).unwrap_or_else(|e| panic!("not JSON ({e}):\n{text}"))
}

/// The manifest digest tagged `tag` in an OCI image layout's index.json.
pub fn layout_digest(layout: &Path, tag: &str) -> String {
    let index = read_json(&layout.join("index.json"));
    index["manifests"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|m| m["annotations"]["org.opencontainers.image.ref.name"] == tag)
        .and_then(|m| m["digest"].as_str())
        .unwrap_or_else(|| panic!("tag {tag} not in {}/index.json", layout.display()))
        .to_string()
}

pub fn layout_blob(layout: &Path, digest: &str) -> Vec<u8> {
    let hex = digest.strip_prefix("sha256:").expect("sha256 digest");
    let path = layout.join("blobs/sha256").join(hex);
    fs::read(&path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()))
}

/// Config and layer digests referenced by an image manifest.
pub fn manifest_blobs(manifest: &Value) -> Vec<String> {
    let mut out = vec![manifest["config"]["digest"].as_str().expect("config digest").to_string()];
    for l in manifest["layers"].as_array().expect("layers") {
        out.push(l["digest"].as_str().expect("layer digest").to_string());
    }
    out
}

// ---------------------------------------------------------------------------------------------
// Test images (scripts/build-test-images.sh), built once and cached by the script's content.

pub struct TestImages {
    pub layout: PathBuf,
}

impl TestImages {
    /// Builds (once per script version, shared by all tests and test binaries) and returns the
    /// test image layout. Tags: app, app2, amd64, arm64, multi (an index of amd64 + arm64).
    pub fn get() -> &'static TestImages {
        static IMAGES: OnceLock<TestImages> = OnceLock::new();
        IMAGES.get_or_init(|| {
            let script = workspace_root().join("scripts/build-test-images.sh");
            let text = fs::read(&script).expect("read scripts/build-test-images.sh");
            let key = &hex::encode(Sha256::digest(&text))[..16];
            let cache = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("e2e-images-{key}"));
            if !cache.join("ready").exists() {
                let tmp =
                    Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("e2e-images-{key}.{}", std::process::id()));
                run_ok(Command::new("bash").arg(&script).arg(&tmp), SHORT);
                if fs::rename(&tmp, &cache).is_err() {
                    // Another test binary got there first.
                    let _ = fs::remove_dir_all(&tmp);
                }
            }
            assert!(cache.join("ready").exists(), "test images missing in {}", cache.display());
            TestImages { layout: cache.join("layout") }
        })
    }

    /// `oci:LAYOUT:TAG`, a containers-image transport reference.
    pub fn oci(&self, tag: &str) -> String {
        format!("oci:{}:{tag}", self.layout.display())
    }

    pub fn digest(&self, tag: &str) -> String {
        layout_digest(&self.layout, tag)
    }

    pub fn blob(&self, digest: &str) -> Vec<u8> {
        layout_blob(&self.layout, digest)
    }

    pub fn manifest(&self, tag: &str) -> Value {
        serde_json::from_slice(&self.blob(&self.digest(tag))).expect("manifest JSON")
    }
}

// ---------------------------------------------------------------------------------------------
// The registry under test

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Target {
    Tributary,
    /// Debian's docker-registry (CNCF distribution 2.8), for checking the harness itself.
    Distribution,
}

impl Target {
    pub fn from_env() -> Target {
        match std::env::var("TRIBUTARY_E2E_TARGET").as_deref() {
            Ok("distribution") | Ok("docker-registry") => Target::Distribution,
            _ => Target::Tributary,
        }
    }
}

/// The `tributary` binary: `$TRIBUTARY_BIN`, or built (once per test process) into the same
/// target directory and profile as this test executable.
pub fn tributary_bin() -> PathBuf {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        if let Some(bin) = std::env::var_os("TRIBUTARY_BIN") {
            let bin = PathBuf::from(bin);
            assert!(bin.is_file(), "TRIBUTARY_BIN={} does not exist", bin.display());
            return bin;
        }
        // The test executable is <target>/<profile>/deps/<name>-<hash>.
        let exe = std::env::current_exe().expect("current_exe");
        let profile_dir = exe.parent().and_then(Path::parent).expect("profile dir").to_path_buf();
        let bin = profile_dir.join("tributary");
        let target_dir = profile_dir.parent().expect("target dir").to_path_buf();
        let release = profile_dir.file_name().is_some_and(|n| n == "release");
        let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
        let mut cmd = Command::new(cargo);
        cmd.current_dir(workspace_root())
            .args(["build", "-p", "registry", "--bin", "tributary"])
            .env("CARGO_TARGET_DIR", &target_dir);
        // Drop what `cargo test` set for this test crate: build scripts that watch these (ring's
        // watches CARGO_MANIFEST_DIR) would otherwise rebuild, and `scripts/test.sh`'s own
        // `cargo build` would then rebuild again.
        for (key, _) in std::env::vars_os() {
            let key = key.to_string_lossy();
            let set_by_cargo_test =
                ["CARGO_PKG_", "CARGO_BIN_EXE_", "CARGO_MANIFEST_"].iter().any(|p| key.starts_with(p))
                    || [
                        "CARGO_CRATE_NAME",
                        "CARGO_BIN_NAME",
                        "CARGO_PRIMARY_PACKAGE",
                        "CARGO_TARGET_TMPDIR",
                        "CARGO_RUSTC_CURRENT_DIR",
                        "OUT_DIR",
                    ]
                    .contains(&key.as_ref());
            if set_by_cargo_test {
                cmd.env_remove(key.as_ref());
            }
        }
        if release {
            cmd.arg("--release");
        }
        let o = run(&mut cmd, LONG);
        if !o.success() {
            if bin.is_file() {
                eprintln!(
                    "warning: `cargo build -p registry --bin tributary` failed; using {}\n{}",
                    bin.display(),
                    o.stderr
                );
            } else {
                panic!("cannot build tributary:\n{}", o.stderr);
            }
        }
        assert!(bin.is_file(), "{} missing after cargo build", bin.display());
        bin
    })
    .clone()
}

/// A running registry; killed (SIGKILL) when dropped. Its log is printed if the test panicked.
pub struct Registry {
    pub target: Target,
    pub data_dir: PathBuf,
    /// `127.0.0.1:PORT`
    pub host: String,
    /// The cluster administrator's API token, when access control is on: sent as a bearer token
    /// by the HTTP helpers and as the password (user `admin`) by the clients.
    pub token: Option<String>,
    child: Option<Child>,
    work: tempfile::TempDir,
    log: PathBuf,
    starts: u32,
    /// `TRIBUTARY_*` settings given to the process (storage backends of a replica).
    env: Vec<(String, String)>,
    /// A TOML configuration file passed with `--config` (Tributary only).
    config: Option<PathBuf>,
}

impl Registry {
    /// Starts a registry on a free loopback port, storing its data in `data_dir`, with the
    /// namespace [`NAMESPACE`] ready to push into.
    pub fn start(data_dir: &Path) -> Registry {
        Registry::start_configured(data_dir, None)
    }

    /// [`Registry::start`] with a TOML configuration file (`--config`), for Tributary.
    pub fn start_configured(data_dir: &Path, config: Option<&Path>) -> Registry {
        let target = Target::from_env();
        let auth = target == Target::Tributary && std::env::var("TRIBUTARY_E2E_AUTH").as_deref() != Ok("none");
        Registry::start_with(target, data_dir, auth.then(new_token), &[], config)
    }

    /// Starts one Tributary replica: `token` is the administrator token every replica shares, `env` the
    /// `TRIBUTARY_*` settings of its stores.
    pub fn start_replica(data_dir: &Path, token: &str, env: &[(String, String)]) -> Registry {
        Registry::start_with(Target::Tributary, data_dir, Some(token.to_owned()), env, None)
    }

    /// A handle on a registry someone else runs at `host` (a load balancer in front of replicas), with `token`.
    pub fn attach(host: &str, token: &str) -> Registry {
        let work = tempdir("tributary-e2e-attached-");
        let log = work.path().join("server.log");
        Registry {
            target: Target::Tributary,
            data_dir: work.path().to_path_buf(),
            host: host.to_owned(),
            token: Some(token.to_owned()),
            child: None,
            work,
            log,
            starts: 0,
            env: Vec::new(),
            config: None,
        }
    }

    fn start_with(
        target: Target,
        data_dir: &Path,
        token: Option<String>,
        env: &[(String, String)],
        config: Option<&Path>,
    ) -> Registry {
        let work = tempdir("tributary-e2e-server-");
        let log = work.path().join("server.log");
        let mut r = Registry {
            target,
            data_dir: data_dir.to_path_buf(),
            host: String::new(),
            token,
            child: None,
            work,
            log,
            starts: 0,
            env: env.to_vec(),
            config: config.map(Path::to_path_buf),
        };
        r.spawn();
        r.create_namespace(NAMESPACE);
        r
    }

    /// Creates a namespace (project) through the admin API, when access control is on.
    pub fn create_namespace(&self, ns: &str) {
        if self.token.is_none() {
            return;
        }
        let body = serde_json::json!({ "name": ns }).to_string();
        let r = self.request(
            "POST",
            "/apis/tributary.dev/v1/namespaces",
            &[("Content-Type", "application/json")],
            body.as_bytes(),
        );
        assert!(matches!(r.status, 200 | 201 | 409), "create namespace {ns}: {r}");
    }

    pub fn is_tributary(&self) -> bool {
        self.target == Target::Tributary
    }

    fn spawn(&mut self) {
        assert!(self.child.is_none(), "registry already running");
        self.starts += 1;
        let mut log = OpenOptions::new().create(true).append(true).open(&self.log).expect("open server log");
        writeln!(log, "===== start #{} =====", self.starts).unwrap();
        let stderr = log.try_clone().unwrap();
        let (mut cmd, fixed_port) = match self.target {
            Target::Tributary => {
                let mut cmd = Command::new(tributary_bin());
                cmd.arg("serve").arg("--listen").arg("127.0.0.1:0").arg("--data-dir").arg(&self.data_dir);
                if let Some(config) = &self.config {
                    cmd.arg("--config").arg(config);
                }
                match &self.token {
                    Some(token) => cmd.arg("--auth").arg("token").arg("--admin-token").arg(token),
                    None => cmd.arg("--auth").arg("none"),
                };
                cmd.env("RUST_BACKTRACE", "1");
                // Only the flags above configure it (TRIBUTARY_LOG may still set the log filter).
                for (key, _) in std::env::vars_os() {
                    let key = key.to_string_lossy();
                    if key.starts_with("TRIBUTARY_") && key != "TRIBUTARY_LOG" {
                        cmd.env_remove(key.as_ref());
                    }
                }
                cmd.envs(self.env.iter().map(|(k, v)| (k, v)));
                (cmd, None)
            }
            Target::Distribution => {
                let port = free_port();
                let config = self.work.path().join("config.yml");
                let yml = format!(
                    "version: 0.1\nlog:\n  level: info\nstorage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\nhttp:\n  addr: 127.0.0.1:{port}\n",
                    self.data_dir.display()
                );
                fs::write(&config, yml).unwrap();
                let mut cmd = Command::new("docker-registry");
                cmd.arg("serve").arg(&config);
                (cmd, Some(port))
            }
        };
        eprintln!("+ {}", describe(&cmd));
        let mut child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::from(stderr))
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start registry `{}`: {e}", describe(&cmd)));
        // Copy stdout to the log, and report the port from the "listening" line.
        let (tx, rx) = mpsc::channel::<u16>();
        let stdout = child.stdout.take().unwrap();
        thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                // One write per line: stderr goes to the same file, and `writeln!` would write the text and its
                // newline in two calls, between which a log line of the server could land.
                let _ = log.write_all(format!("{line}\n").as_bytes());
                if let Some(rest) = line.split("listening on http://").nth(1) {
                    let port = rest.trim().rsplit(':').next().and_then(|p| p.trim_end_matches('/').parse().ok());
                    if let Some(port) = port {
                        let _ = tx.send(port);
                    }
                }
            }
        });
        let start = Instant::now();
        let port = loop {
            if let Some(port) = fixed_port {
                break port;
            }
            if let Ok(port) = rx.recv_timeout(Duration::from_millis(100)) {
                break port;
            }
            if let Ok(Some(status)) = child.try_wait() {
                panic!("registry exited ({status}) before listening\n{}", self.log_text());
            }
            if start.elapsed() > Duration::from_secs(60) {
                let _ = child.kill();
                panic!("registry printed no `tributary listening on http://…` line within 60s\n{}", self.log_text());
            }
        };
        self.host = format!("127.0.0.1:{port}");
        self.child = Some(child);
        // Wait until it answers /v2/.
        loop {
            if let Ok(r) = self.try_request("GET", "/v2/", &[], &[]) {
                if r.status == 200 || r.status == 401 {
                    break;
                }
            }
            if let Some(Ok(Some(status))) = self.child.as_mut().map(|c| c.try_wait()) {
                panic!("registry exited ({status}) during startup\n{}", self.log_text());
            }
            if start.elapsed() > Duration::from_secs(60) {
                panic!("registry at {} does not answer GET /v2/\n{}", self.host, self.log_text());
            }
            thread::sleep(Duration::from_millis(50));
        }
        eprintln!("registry up at {} after {:.2}s", self.host, start.elapsed().as_secs_f64());
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("registry running").id()
    }

    /// Graceful stop: SIGTERM, then waits (up to 30s) for the process to exit.
    pub fn stop(&mut self) -> ExitStatus {
        let mut child = self.child.take().expect("registry running");
        signal(child.id(), "TERM");
        match wait_timeout(&mut child, Duration::from_secs(30)) {
            Some(status) => status,
            None => {
                let _ = child.kill();
                let _ = child.wait();
                panic!("registry did not exit within 30s of SIGTERM\n{}", self.log_text());
            }
        }
    }

    /// Waits (up to `timeout`) for the process to exit by itself, without signalling it; reaps it.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let status = wait_timeout(self.child.as_mut().expect("registry running"), timeout)?;
        self.child = None;
        Some(status)
    }

    /// Crash: SIGKILL, and reaps the process.
    pub fn kill9(&mut self) {
        let mut child = self.child.take().expect("registry running");
        let _ = child.kill();
        let _ = child.wait();
    }

    /// Starts the registry again on the same data directory (on a new port).
    pub fn restart(&mut self) {
        self.spawn();
    }

    /// The file the registry's stdout and stderr go to (with `===== start #N =====` markers).
    pub fn log_path(&self) -> &Path {
        &self.log
    }

    pub fn log_text(&self) -> String {
        let text = fs::read_to_string(&self.log).unwrap_or_default();
        let tail: Vec<&str> = text.lines().rev().take(80).collect();
        let tail: Vec<&str> = tail.into_iter().rev().collect();
        format!("--- registry log ({}) ---\n{}\n--- end of registry log ---", self.log.display(), tail.join("\n"))
    }

    // --- HTTP -------------------------------------------------------------------------------

    fn head_lines(&self, method: &str, path: &str, headers: &[(&str, &str)], content_length: Option<u64>) -> String {
        let path = strip_origin(path);
        let mut req = format!(
            "{method} {path} HTTP/1.1\r\nHost: {}\r\nConnection: close\r\nUser-Agent: tributary-e2e\r\n",
            self.host
        );
        if let Some(token) = &self.token {
            req.push_str(&format!("Authorization: Bearer {token}\r\n"));
        }
        for (k, v) in headers {
            req.push_str(&format!("{k}: {v}\r\n"));
        }
        if let Some(n) = content_length {
            req.push_str(&format!("Content-Length: {n}\r\n"));
        }
        req.push_str("\r\n");
        req
    }

    /// Sends a request line and headers (with `Content-Length: content_length`) and returns the
    /// connection, for the caller to stream the body and then call [`read_response`].
    pub fn open_request(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        content_length: u64,
    ) -> io::Result<TcpStream> {
        let mut s = TcpStream::connect(&self.host)?;
        s.set_read_timeout(Some(Duration::from_secs(300)))?;
        s.set_write_timeout(Some(Duration::from_secs(300)))?;
        s.write_all(self.head_lines(method, path, headers, Some(content_length)).as_bytes())?;
        Ok(s)
    }

    pub fn try_request(&self, method: &str, path: &str, headers: &[(&str, &str)], body: &[u8]) -> io::Result<Response> {
        let has_body = !body.is_empty() || matches!(method, "PUT" | "POST" | "PATCH");
        let mut s = TcpStream::connect(&self.host)?;
        s.set_read_timeout(Some(Duration::from_secs(120)))?;
        s.write_all(self.head_lines(method, path, headers, has_body.then_some(body.len() as u64)).as_bytes())?;
        s.write_all(body)?;
        read_response(&mut s, method == "HEAD")
    }

    pub fn request(&self, method: &str, path: &str, headers: &[(&str, &str)], body: &[u8]) -> Response {
        self.try_request(method, path, headers, body)
            .unwrap_or_else(|e| panic!("{method} {path} on {}: {e}\n{}", self.host, self.log_text()))
    }

    pub fn get(&self, path: &str) -> Response {
        self.request("GET", path, &[], &[])
    }

    pub fn head(&self, path: &str) -> Response {
        self.request("HEAD", path, &[], &[])
    }

    /// HEAD /v2/{repo}/blobs/{digest} -> status
    pub fn blob_status(&self, repo: &str, digest: &str) -> u16 {
        self.head(&format!("/v2/{repo}/blobs/{digest}")).status
    }

    /// Pushes a blob from a file the OCI way, monolithically: POST, then PUT with the whole body.
    pub fn push_blob_file(&self, repo: &str, path: &Path, digest: &str) {
        let location = self.start_upload(repo);
        let size = fs::metadata(path).unwrap().len();
        let url = with_query(&location, &format!("digest={digest}"));
        let mut s =
            self.open_request("PUT", &url, &[("Content-Type", "application/octet-stream")], size).expect("open PUT");
        io::copy(&mut File::open(path).unwrap(), &mut s).expect("stream blob");
        let r = read_response(&mut s, false).expect("PUT response");
        assert_eq!(r.status, 201, "PUT blob: {r}");
        assert_eq!(r.header("docker-content-digest"), Some(digest), "PUT blob Docker-Content-Digest: {r}");
    }

    /// POST /v2/{repo}/blobs/uploads/ and returns the Location of the upload session.
    pub fn start_upload(&self, repo: &str) -> String {
        let r = self.request("POST", &format!("/v2/{repo}/blobs/uploads/"), &[], &[]);
        assert_eq!(r.status, 202, "POST blob upload: {r}");
        r.header("location").unwrap_or_else(|| panic!("no Location: {r}")).to_string()
    }

    // --- Image streams ------------------------------------------------------------------------

    /// GET the ImageStream `ns/stream`; None if 404.
    pub fn image_stream(&self, ns: &str, stream: &str) -> Option<Value> {
        let r = self.get(&format!("/apis/image.openshift.io/v1/namespaces/{ns}/imagestreams/{stream}"));
        match r.status {
            404 => None,
            200 => Some(r.json()),
            _ => panic!("GET imagestream {ns}/{stream}: {r}"),
        }
    }

    /// The image digests recorded for `tag` in the stream, newest first (empty if no such tag).
    pub fn stream_tag_history(&self, ns: &str, stream: &str, tag: &str) -> Vec<String> {
        let Some(is) = self.image_stream(ns, stream) else { return vec![] };
        stream_history(&is, tag)
    }

    /// Asserts that the stream's newest image for `tag` is `digest`, and that the Image API
    /// knows that digest. No-op when testing another registry.
    pub fn assert_stream_tag(&self, ns: &str, stream: &str, tag: &str, digest: &str) {
        if !self.is_tributary() {
            eprintln!("(not Tributary: skipping image stream check {ns}/{stream}:{tag})");
            return;
        }
        let is = self.image_stream(ns, stream).unwrap_or_else(|| panic!("image stream {ns}/{stream} not found"));
        assert_eq!(is["kind"], "ImageStream", "{is:#}");
        assert_eq!(is["metadata"]["name"], stream, "{is:#}");
        assert_eq!(is["metadata"]["namespace"], ns, "{is:#}");
        let history = stream_history(&is, tag);
        assert_eq!(history.first().map(String::as_str), Some(digest), "stream {ns}/{stream} tag {tag}: {is:#}");
        let item = &is["status"]["tags"].as_array().unwrap().iter().find(|t| t["tag"] == tag).unwrap()["items"][0];
        let reference = item["dockerImageReference"].as_str().unwrap_or_default();
        assert!(reference.ends_with(&format!("{ns}/{stream}@{digest}")), "dockerImageReference {reference:?}: {is:#}");
        let r = self.get(&format!("/apis/image.openshift.io/v1/images/{digest}"));
        assert_eq!(r.status, 200, "GET image {digest}: {r}");
        let image = r.json();
        assert_eq!(image["kind"], "Image", "{image:#}");
        assert_eq!(image["metadata"]["name"], digest, "{image:#}");
    }

    // --- Client arguments -------------------------------------------------------------------

    /// `docker://127.0.0.1:PORT/{repo_ref}`
    pub fn docker_ref(&self, repo_ref: &str) -> String {
        format!("docker://{}/{repo_ref}", self.host)
    }

    /// `127.0.0.1:PORT/{repo_ref}`
    pub fn image_ref(&self, repo_ref: &str) -> String {
        format!("{}/{repo_ref}", self.host)
    }

    /// `user:password` for clients, when the registry needs a token.
    pub fn creds(&self) -> Option<String> {
        self.token.as_ref().map(|t| format!("admin:{t}"))
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        if thread::panicking() {
            eprintln!("{}", self.log_text());
        }
    }
}

/// The namespace every test pushes into.
pub const NAMESPACE: &str = "ns";

/// A fresh random API token (`trb_` and 64 hex digits).
pub fn new_token() -> String {
    let mut bytes = [0u8; 32];
    File::open("/dev/urandom").and_then(|mut f| f.read_exact(&mut bytes)).expect("read /dev/urandom");
    format!("trb_{}", hex::encode(bytes))
}

pub fn stream_history(is: &Value, tag: &str) -> Vec<String> {
    is["status"]["tags"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|t| t["tag"] == tag)
        .and_then(|t| t["items"].as_array())
        .into_iter()
        .flatten()
        .filter_map(|i| i["image"].as_str().map(str::to_string))
        .collect()
}

pub fn stream_tags(is: &Value) -> Vec<String> {
    is["status"]["tags"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|t| t["tag"].as_str().map(str::to_string))
        .collect()
}

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// `http://host:port/v2/...` -> `/v2/...`
fn strip_origin(url: &str) -> &str {
    match url.strip_prefix("http://").or_else(|| url.strip_prefix("https://")) {
        Some(rest) => rest.find('/').map_or("/", |i| &rest[i..]),
        None => url,
    }
}

pub fn with_query(url: &str, query: &str) -> String {
    let sep = if url.contains('?') { '&' } else { '?' };
    format!("{url}{sep}{query}")
}

// ---------------------------------------------------------------------------------------------
// A minimal HTTP/1.1 client (enough to drive uploads byte by byte and crash the server mid-way)

pub struct Response {
    pub status: u16,
    pub headers: BTreeMap<String, String>,
    pub body: Vec<u8>,
}

impl Response {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(&name.to_ascii_lowercase()).map(String::as_str)
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| panic!("response is not JSON ({e}): {self}"))
    }
}

impl std::fmt::Display for Response {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "HTTP {}", self.status)?;
        for (k, v) in &self.headers {
            write!(f, "\n{k}: {v}")?;
        }
        let text = self.text();
        let cut: String = text.chars().take(2000).collect();
        write!(f, "\n\n{cut}")
    }
}

pub fn read_response(stream: &mut TcpStream, head_request: bool) -> io::Result<Response> {
    let mut r = BufReader::new(stream);
    let mut line = String::new();
    r.read_line(&mut line)?;
    let status: u16 = line
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, format!("bad status line {line:?}")))?;
    let mut headers = BTreeMap::new();
    loop {
        line.clear();
        if r.read_line(&mut line)? == 0 {
            return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "eof in headers"));
        }
        let l = line.trim_end();
        if l.is_empty() {
            break;
        }
        if let Some((k, v)) = l.split_once(':') {
            headers.insert(k.trim().to_ascii_lowercase(), v.trim().to_string());
        }
    }
    let mut body = Vec::new();
    if !(head_request || status == 204 || status == 304 || (100..200).contains(&status)) {
        if headers.get("transfer-encoding").is_some_and(|t| t.eq_ignore_ascii_case("chunked")) {
            loop {
                line.clear();
                r.read_line(&mut line)?;
                let size = usize::from_str_radix(line.trim().split(';').next().unwrap_or(""), 16)
                    .map_err(|_| io::Error::new(io::ErrorKind::InvalidData, format!("bad chunk size {line:?}")))?;
                if size == 0 {
                    break;
                }
                let mut chunk = vec![0; size];
                r.read_exact(&mut chunk)?;
                body.extend_from_slice(&chunk);
                line.clear();
                r.read_line(&mut line)?;
            }
        } else if let Some(n) = headers.get("content-length").and_then(|n| n.parse::<usize>().ok()) {
            body.resize(n, 0);
            r.read_exact(&mut body)?;
        } else {
            r.read_to_end(&mut body)?;
        }
    }
    Ok(Response { status, headers, body })
}

// ---------------------------------------------------------------------------------------------
// skopeo

pub struct Skopeo {
    policy: PathBuf,
    _dir: tempfile::TempDir,
}

impl Skopeo {
    pub fn new() -> Skopeo {
        let dir = tempdir("tributary-e2e-skopeo-");
        let policy = dir.path().join("policy.json");
        fs::write(&policy, r#"{"default":[{"type":"insecureAcceptAnything"}]}"#).unwrap();
        Skopeo { policy, _dir: dir }
    }

    pub fn cmd(&self) -> Command {
        let mut c = Command::new("skopeo");
        c.arg("--policy").arg(&self.policy);
        c
    }

    fn creds_args(cmd: &mut Command, flag: &str, reg: &Registry) {
        if let Some(c) = reg.creds() {
            cmd.arg(flag).arg(c);
        }
    }

    /// `skopeo copy` into the registry; returns the pushed manifest digest.
    pub fn push(&self, reg: &Registry, src: &str, repo_ref: &str, extra: &[&str]) -> String {
        let digestfile = self._dir.path().join(format!("digest-{}", unique()));
        let mut c = self.cmd();
        c.args(["copy", "--dest-tls-verify=false", "--retry-times", "0"]).arg("--digestfile").arg(&digestfile);
        Self::creds_args(&mut c, "--dest-creds", reg);
        c.args(extra).arg(src).arg(reg.docker_ref(repo_ref));
        run_ok(&mut c, LONG);
        let d = fs::read_to_string(&digestfile).expect("skopeo --digestfile").trim().to_string();
        assert!(d.starts_with("sha256:"), "digest file: {d:?}");
        d
    }

    /// `skopeo copy` out of the registry.
    pub fn pull(&self, reg: &Registry, repo_ref: &str, dest: &str, extra: &[&str]) {
        let mut c = self.cmd();
        c.args(["copy", "--src-tls-verify=false", "--retry-times", "0"]);
        Self::creds_args(&mut c, "--src-creds", reg);
        c.args(extra).arg(reg.docker_ref(repo_ref)).arg(dest);
        run_ok(&mut c, LONG);
    }

    pub fn inspect_cmd(&self, reg: &Registry, repo_ref: &str, extra: &[&str]) -> Command {
        let mut c = self.cmd();
        c.args(["inspect", "--tls-verify=false", "--retry-times", "0"]);
        Self::creds_args(&mut c, "--creds", reg);
        c.args(extra).arg(reg.docker_ref(repo_ref));
        c
    }

    /// `skopeo inspect --raw`: the manifest bytes as served.
    pub fn inspect_raw(&self, reg: &Registry, repo_ref: &str) -> Vec<u8> {
        let o = run_ok(&mut self.inspect_cmd(reg, repo_ref, &["--raw"]), SHORT);
        // skopeo prints the raw manifest unchanged; its stdout is exactly the served bytes.
        o.stdout.into_bytes()
    }

    pub fn inspect(&self, reg: &Registry, repo_ref: &str, extra: &[&str]) -> Value {
        parse_json(&run_ok(&mut self.inspect_cmd(reg, repo_ref, extra), SHORT).stdout)
    }

    pub fn list_tags(&self, reg: &Registry, repo: &str) -> Vec<String> {
        let mut c = self.cmd();
        c.args(["list-tags", "--tls-verify=false", "--retry-times", "0"]);
        Self::creds_args(&mut c, "--creds", reg);
        c.arg(reg.docker_ref(repo));
        let v = parse_json(&run_ok(&mut c, SHORT).stdout);
        let mut tags: Vec<String> =
            v["Tags"].as_array().expect("Tags").iter().map(|t| t.as_str().unwrap().to_string()).collect();
        tags.sort();
        tags
    }

    pub fn delete(&self, reg: &Registry, repo_ref: &str) {
        let mut c = self.cmd();
        c.args(["delete", "--tls-verify=false", "--retry-times", "0"]);
        Self::creds_args(&mut c, "--creds", reg);
        c.arg(reg.docker_ref(repo_ref));
        run_ok(&mut c, SHORT);
    }
}

impl Default for Skopeo {
    fn default() -> Self {
        Self::new()
    }
}

pub fn unique() -> u64 {
    static N: Mutex<u64> = Mutex::new(0);
    let mut n = N.lock().unwrap();
    *n += 1;
    *n
}

/// podman with its own storage and auth file under `dir`, so the host's images and logins are never touched.
pub fn podman(dir: &Path) -> Command {
    let tmp = dir.join("tmp");
    std::fs::create_dir_all(&tmp).unwrap();
    let auth = dir.join("auth.json");
    if !auth.exists() {
        std::fs::write(&auth, "{}").unwrap();
    }
    let mut c = Command::new("podman");
    c.arg("--root")
        .arg(dir.join("root"))
        .arg("--runroot")
        .arg(dir.join("runroot"))
        .args(["--storage-driver", "vfs", "--cgroup-manager", "cgroupfs", "--events-backend", "file"])
        .arg("--tmpdir")
        .arg(dir.join("libpod-tmp"))
        .env("TMPDIR", &tmp)
        .env("REGISTRY_AUTH_FILE", &auth);
    c
}

// ---------------------------------------------------------------------------------------------
// docker

/// A fresh self-signed certificate for 127.0.0.1 and localhost (a day long) made with `openssl` in `dir`:
/// the paths of the certificate and its key, for `--tls-cert`/`--tls-key`.
pub fn self_signed_cert(dir: &Path) -> (PathBuf, PathBuf) {
    let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
    run_ok(
        Command::new("openssl")
            .args(["req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes", "-days", "1"])
            .args(["-subj", "/CN=localhost", "-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost"])
            .arg("-keyout")
            .arg(&key)
            .arg("-out")
            .arg(&cert),
        SHORT,
    );
    (cert, key)
}

/// The manifest digest `docker push` printed ("v1: digest: sha256:… size: N").
pub fn docker_pushed_digest(stdout: &str) -> String {
    stdout
        .lines()
        .find_map(|l| l.split("digest: ").nth(1))
        .and_then(|rest| rest.split_whitespace().next())
        .unwrap_or_else(|| panic!("no digest in docker push output:\n{stdout}"))
        .to_owned()
}

/// A private Docker engine (`dockerd`) started for one test, so the host's engine, images and logins are never
/// touched: its own `--data-root`, `--exec-root`, pidfile and `unix://` socket under `dir`, no bridge and no
/// iptables rules, and `127.0.0.0/8` trusted as an insecure (plain HTTP) registry. Set
/// `TRIBUTARY_E2E_DOCKER_STORAGE_DRIVER` to pass `--storage-driver`. Stopped with SIGTERM (then SIGKILL after 30s)
/// when dropped; its log is printed if the test is panicking.
///
/// Callers check for `dockerd` and `docker` first ([`tools_present`] or [`which`]); this only starts the engine.
pub struct DockerEngine {
    dir: PathBuf,
    child: Option<Child>,
    log: PathBuf,
}

impl DockerEngine {
    /// Starts `dockerd` under `dir` (created if missing) and waits up to 60s for it to answer `docker version`;
    /// panics with its log if it exits or does not come up.
    pub fn start(dir: &Path) -> DockerEngine {
        fs::create_dir_all(dir).unwrap();
        let log = dir.join("dockerd.log");
        let sock = dir.join("docker.sock");
        let mut cmd = Command::new(which("dockerd").expect("dockerd"));
        cmd.arg("--data-root")
            .arg(dir.join("data"))
            .arg("--exec-root")
            .arg(dir.join("exec"))
            .arg("--host")
            .arg(format!("unix://{}", sock.display()))
            .arg("--pidfile")
            .arg(dir.join("docker.pid"))
            .args(["--bridge=none", "--iptables=false", "--ip6tables=false", "--insecure-registry", "127.0.0.0/8"]);
        if let Ok(driver) = std::env::var("TRIBUTARY_E2E_DOCKER_STORAGE_DRIVER") {
            cmd.args(["--storage-driver", &driver]);
        }
        let logf = File::create(&log).unwrap();
        cmd.stdin(Stdio::null()).stdout(Stdio::from(logf.try_clone().unwrap())).stderr(Stdio::from(logf));
        eprintln!("+ {cmd:?}");
        let child = cmd.spawn().expect("start dockerd");
        let mut engine = DockerEngine { dir: dir.to_path_buf(), child: Some(child), log };
        let start = Instant::now();
        loop {
            let o = engine.docker().args(["version", "--format", "{{.Server.Version}}"]).output().unwrap();
            if o.status.success() {
                eprintln!(
                    "dockerd {} up after {:.1}s",
                    String::from_utf8_lossy(&o.stdout).trim(),
                    start.elapsed().as_secs_f64()
                );
                break;
            }
            if let Some(Ok(Some(status))) = engine.child.as_mut().map(|c| c.try_wait()) {
                panic!("dockerd exited ({status})\n{}", engine.log_text());
            }
            if start.elapsed() > Duration::from_secs(60) {
                panic!("dockerd did not come up in 60s\n{}", engine.log_text());
            }
            thread::sleep(Duration::from_millis(200));
        }
        engine
    }

    /// `docker` talking to this engine, with its own client config under `dir` (so logins stay here).
    pub fn docker(&self) -> Command {
        let mut c = Command::new("docker");
        c.env("DOCKER_HOST", format!("unix://{}", self.dir.join("docker.sock").display()))
            .env("DOCKER_CONFIG", self.dir.join("client-config"))
            .env_remove("DOCKER_CONTEXT")
            .env_remove("DOCKER_TLS_VERIFY");
        c
    }

    /// The last 60 lines of the engine's log, framed for a panic message.
    pub fn log_text(&self) -> String {
        let text = fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        let tail = lines[lines.len().saturating_sub(60)..].join("\n");
        format!("--- dockerd log ({}) ---\n{tail}\n--- end of dockerd log ---", self.log.display())
    }
}

impl Drop for DockerEngine {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            signal(child.id(), "TERM");
            if wait_timeout(&mut child, Duration::from_secs(30)).is_none() {
                eprintln!("dockerd ignored SIGTERM for 30s; killing it");
                let _ = child.kill();
                let _ = child.wait();
            }
        }
        if thread::panicking() {
            eprintln!("{}", self.log_text());
        }
    }
}
