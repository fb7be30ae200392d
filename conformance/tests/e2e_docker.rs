//! End-to-end: docker push/pull against a real Tributary server, through a Docker engine that
//! the test starts itself (its own data root, exec root and socket; no bridge, no iptables).
mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::*;

const TOOLS: &[&str] = &["dockerd", "docker", "skopeo", "umoci", "busybox", "jq", "sha256sum"];

/// A private dockerd; stopped with SIGTERM (then SIGKILL) when dropped.
struct DockerEngine {
    dir: PathBuf,
    child: Option<Child>,
    log: PathBuf,
}

impl DockerEngine {
    fn start(dir: &Path) -> DockerEngine {
        std::fs::create_dir_all(dir).unwrap();
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
        let logf = std::fs::File::create(&log).unwrap();
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
            std::thread::sleep(Duration::from_millis(200));
        }
        engine
    }

    fn docker(&self) -> Command {
        let mut c = Command::new("docker");
        c.env("DOCKER_HOST", format!("unix://{}", self.dir.join("docker.sock").display()))
            .env("DOCKER_CONFIG", self.dir.join("client-config"))
            .env_remove("DOCKER_CONTEXT")
            .env_remove("DOCKER_TLS_VERIFY");
        c
    }

    fn log_text(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
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
        if std::thread::panicking() {
            eprintln!("{}", self.log_text());
        }
    }
}

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
    // "v1: digest: sha256:… size: N"
    let pushed = o
        .stdout
        .lines()
        .find_map(|l| l.split("digest: ").nth(1))
        .and_then(|rest| rest.split_whitespace().next())
        .unwrap_or_else(|| panic!("no digest in docker push output:\n{}", o.stdout))
        .to_string();
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
