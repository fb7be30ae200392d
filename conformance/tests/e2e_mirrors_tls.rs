//! End-to-end: the parts of the image policy (issue 14) that need TLS, with real registries and real clients.
//!
//! - A `docker-registry` serving https with a certificate from a private CA made in the test (`openssl`): an import
//!   fails on the unknown issuer, still fails with another CA in `additionalTrustedCA`, and succeeds (and skopeo
//!   pulls through) once the right CA is there for that host, with nothing marked insecure.
//! - `kubectl apply` against two Tributary replicas sharing one real etcd (metadata) and one blob directory, over
//!   https (kubectl sends a token only over TLS): an ImageDigestMirrorSet applied through one replica and the
//!   `Image` object `cluster` applied through the other take effect on the next import on both, the source being
//!   down (its process killed) and the mirror serving, and its `externalRegistryHostnames[0]` the host both show in
//!   the stream's `dockerImageRepository`; an edit of the set applied again (`NeverContactSource`, a
//!   dead mirror) makes the next import fail on both.
//!
//! Needs: skopeo, docker-registry, openssl, umoci, busybox, jq, sha256sum; and kubectl, curl and etcd for the
//! second test. Missing tools skip the tests unless `TRIBUTARY_E2E_REQUIRED=1`.
mod common;

use std::fs::{self, File};
use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{Mutex, MutexGuard};

use common::*;
use serde_json::{json, Value};
use storage_backends::testing::etcd::EtcdServer;

const TOOLS: &[&str] = &["skopeo", "docker-registry", "openssl", "umoci", "busybox", "jq", "sha256sum"];

fn serial() -> MutexGuard<'static, ()> {
    static LOCK: Mutex<()> = Mutex::new(());
    LOCK.lock().unwrap_or_else(|e| e.into_inner())
}

#[test]
fn a_private_ca_trusted_through_additional_trusted_ca() {
    if !tools_present(TOOLS) {
        return;
    }
    let _turn = serial();
    let tmp = tempdir("e2e-mirrors-ca-");
    let skopeo = Skopeo::new();
    let images = TestImages::get();
    let ca = PrivateCa::new(&tmp.path().join("ca"));
    let other_ca = PrivateCa::new(&tmp.path().join("other-ca"));
    let up = Upstream::start_tls(&ca.cert, &ca.key);
    seed(&skopeo, &up, &images.oci("app"), "lib/app:1", &[]);
    let reg = Registry::start(&tmp.path().join("data"));
    let app = images.digest("app");
    let from = format!("{}/lib/app:1", up.host);
    let patch = |ca_pem: &str| {
        let body = json!({"spec": {"additionalTrustedCA": {"data": {up.host.replace(':', ".."): ca_pem}}}});
        let r = reg.request(
            "PATCH",
            "/apis/config.openshift.io/v1/images/cluster",
            &[("Content-Type", "application/merge-patch+json")],
            body.to_string().as_bytes(),
        );
        assert_eq!(r.status, 200, "PATCH additionalTrustedCA: {r}");
    };
    let refused = |why: &str| {
        let o = import_image(&reg, "app:v1", &from, &["--reference-policy", "local"]);
        assert!(!o.success(), "import {why} succeeded:\n{}", o.stdout);
        let cond = status_tag(&reg, "app", "v1")["conditions"][0].clone();
        note(format!("import {why}: {cond}"));
        let message = cond["message"].as_str().unwrap_or_default().to_ascii_lowercase();
        assert!(message.contains("certificate") || message.contains("issuer"), "{cond}");
        assert!(message.contains("additionaltrustedca"), "the hint names the setting: {cond}");
    };

    refused("without the CA");
    patch(&other_ca.ca_pem);
    refused("with another CA");
    patch(&ca.ca_pem);
    let o = import_image(&reg, "app:v1", &from, &["--reference-policy", "local"]);
    assert_imported(&o, "app", &app);
    skopeo_pull_and_compare(&skopeo, &reg, "ns/app:v1", images, "app", &tmp.path().join("pulled"));
    let insecure = reg.get("/apis/config.openshift.io/v1/images/cluster").json();
    assert!(insecure["spec"]["registrySources"]["insecureRegistries"].is_null(), "{insecure:#}");
}

// ---------------------------------------------------------------------------------------------
// Two replicas over https, for kubectl

const TOKEN: &str = "mirrors-kubectl-e2e-admin-token-0123456789abcdef";

/// A `tributary serve` over https on a free port with the given stores; killed when dropped, its log printed if
/// the test panicked.
struct Replica {
    child: Child,
    /// `https://127.0.0.1:PORT`
    url: String,
    log: std::path::PathBuf,
}

impl Replica {
    fn start(dir: &Path, name: &str, data: &Path, cert: &Path, key: &Path, env: &[(&str, String)]) -> Replica {
        let log = dir.join(format!("{name}.log"));
        let mut cmd = Command::new(tributary_bin());
        cmd.args(["serve", "--listen", "127.0.0.1:0", "--admin-token", TOKEN])
            .arg("--data-dir")
            .arg(data)
            .arg("--tls-cert")
            .arg(cert)
            .arg("--tls-key")
            .arg(key)
            .stdout(Stdio::piped())
            .stderr(File::create(&log).unwrap());
        for (k, _) in std::env::vars_os() {
            if k.to_string_lossy().starts_with("TRIBUTARY_") {
                cmd.env_remove(k);
            }
        }
        cmd.envs(env.iter().map(|(k, v)| (k, v)));
        let mut child = cmd.spawn().expect("start tributary");
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let line = lines.next().and_then(Result::ok).unwrap_or_default();
        let url = line.trim().rsplit(' ').next().unwrap_or_default().to_owned();
        // Keep reading stdout so the process never blocks on it.
        let mut out = fs::OpenOptions::new().append(true).open(&log).unwrap();
        std::thread::spawn(move || {
            for l in lines.map_while(Result::ok) {
                let _ = writeln!(out, "{l}");
            }
        });
        let replica = Replica { child, url, log };
        assert!(replica.url.starts_with("https://127.0.0.1:"), "{line}\n{}", replica.log_text());
        replica
    }

    fn log_text(&self) -> String {
        format!("--- {} ---\n{}", self.log.display(), fs::read_to_string(&self.log).unwrap_or_default())
    }

    /// `curl -sk` with the admin token; returns the answer's JSON.
    fn call(&self, method: &str, path: &str, body: &Value) -> Value {
        let o = run_ok(
            Command::new("curl")
                .args(["-sk", "-X", method, "-H", &format!("Authorization: Bearer {TOKEN}")])
                .args(["-H", "Content-Type: application/json", "--data-binary", &body.to_string()])
                .arg(format!("{}{path}", self.url)),
            SHORT,
        );
        parse_json(&o.stdout)
    }

    /// Imports `from` into `ns/app:v1`; returns the image's import status.
    fn import(&self, from: &str) -> Value {
        let isi = json!({"kind": "ImageStreamImport", "apiVersion": "image.openshift.io/v1",
            "metadata": {"name": "app"}, "spec": {"import": true, "images": [
                {"from": {"kind": "DockerImage", "name": from}, "to": {"name": "v1"}}]}});
        let v =
            self.call("POST", &format!("/apis/image.openshift.io/v1/namespaces/{NAMESPACE}/imagestreamimports"), &isi);
        let status = v["status"]["images"][0]["status"].clone();
        note(format!("import on {}: {status}", self.url));
        assert!(status.is_object(), "{v:#}");
        status
    }
}

impl Drop for Replica {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            eprintln!("{}", self.log_text());
        }
    }
}

fn kubectl(home: &Path, kubeconfig: &Path, args: &[&str]) -> String {
    let o = run_ok(
        Command::new("kubectl")
            .arg("--kubeconfig")
            .arg(kubeconfig)
            .args(args)
            .env("HOME", home)
            .env_remove("KUBECONFIG"),
        SHORT,
    );
    eprintln!("{}", o.stdout);
    o.stdout
}

fn kubeconfig(dir: &Path, name: &str, url: &str) -> std::path::PathBuf {
    let file = dir.join(format!("kubeconfig-{name}"));
    fs::write(
        &file,
        format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: t\n  cluster:\n    server: {url}\n    \
             insecure-skip-tls-verify: true\nusers:\n- name: admin\n  user:\n    token: {TOKEN}\ncontexts:\n- name: t\n  \
             context: {{cluster: t, user: admin}}\ncurrent-context: t\n"
        ),
    )
    .unwrap();
    file
}

fn idms(source: &str, mirror: &str, policy: &str) -> String {
    format!(
        "apiVersion: config.openshift.io/v1\nkind: ImageDigestMirrorSet\nmetadata:\n  name: lib-mirror\nspec:\n  \
         imageDigestMirrors:\n  - source: {source}/lib\n    mirrors:\n    - {mirror}\n    mirrorSourcePolicy: {policy}\n"
    )
}

#[test]
fn kubectl_apply_takes_effect_on_every_replica() {
    if !tools_present(TOOLS) || !tools_present(&["kubectl", "curl", "etcd"]) {
        return;
    }
    let Some(etcd) = EtcdServer::start() else { return };
    let _turn = serial();
    let tmp = tempdir("e2e-mirrors-kubectl-");
    let dir = tmp.path();
    let skopeo = Skopeo::new();
    let images = TestImages::get();
    let mut source = Upstream::start(None);
    let mirror = Upstream::start(None);
    seed(&skopeo, &source, &images.oci("app"), "lib/app:1", &[]);
    seed(&skopeo, &mirror, &images.oci("app"), "mirror/lib/app:1", &[]);
    let mark = mirror.mark();
    source.kill();
    note("source killed");

    let (cert, key) = self_signed_cert(dir);
    let env = [
        ("TRIBUTARY_METADATA_BACKEND", "etcd".to_owned()),
        ("TRIBUTARY_ETCD_ENDPOINTS", etcd.endpoint().to_owned()),
        ("TRIBUTARY_ETCD_PREFIX", format!("/e2e-mirrors-{}/", std::process::id())),
    ];
    // Both replicas keep blobs in one directory; metadata (the policy objects included) in etcd.
    let data = dir.join("shared-data");
    let a = Replica::start(dir, "a", &data, &cert, &key, &env);
    let b = Replica::start(dir, "b", &data, &cert, &key, &env);
    a.call("POST", "/apis/tributary.dev/v1/namespaces", &json!({"name": NAMESPACE}));
    let home = dir.join("home");
    fs::create_dir_all(&home).unwrap();
    let (kc_a, kc_b) = (kubeconfig(dir, "a", &a.url), kubeconfig(dir, "b", &b.url));
    let app = images.digest("app");
    let from = format!("{}/lib/app@{app}", source.host);

    // The mirror set, through replica a. The mirror speaks plain http and is not marked insecure yet: both
    // replicas try it over https and fail.
    let set_file = dir.join("idms.yaml");
    fs::write(&set_file, idms(&source.host, &format!("{}/mirror/lib", mirror.host), "AllowContactingSource")).unwrap();
    let out = kubectl(&home, &kc_a, &["apply", "-f", set_file.to_str().unwrap()]);
    assert!(out.contains("imagedigestmirrorset.config.openshift.io/lib-mirror created"), "{out}");
    for r in [&a, &b] {
        let st = r.import(&from);
        assert_eq!(st["status"], "Failure", "{st}");
        let message = st["message"].as_str().unwrap_or_default();
        assert!(message.contains(&mirror.host), "the mirror was tried: {st}");
        assert!(message.contains("registrySources.insecureRegistries"), "the hint for a mirror: {st}");
    }

    // The Image object, through replica b: the mirror (and the source) insecure. The next import on either
    // replica is served by the mirror, the source being down.
    let image_file = dir.join("image.yaml");
    fs::write(
        &image_file,
        format!(
            "apiVersion: config.openshift.io/v1\nkind: Image\nmetadata:\n  name: cluster\nspec:\n  \
             externalRegistryHostnames:\n  - registry.example.com\n  registrySources:\n    \
             insecureRegistries:\n    - {}\n    - {}\n",
            mirror.host, source.host
        ),
    )
    .unwrap();
    let out = kubectl(&home, &kc_b, &["apply", "-f", image_file.to_str().unwrap()]);
    assert!(out.contains("image.config.openshift.io/cluster"), "{out}");
    for r in [&a, &b] {
        let st = r.import(&from);
        assert_eq!(st["status"], "Success", "{st}");
        let served = format!("served by mirror {}/mirror/lib/app", mirror.host);
        assert!(st["message"].as_str().unwrap_or_default().contains(&served), "{st}");
    }
    let gets = mirror.requests_since(mark, "mirror/lib/app");
    let manifest_gets = gets.iter().filter(|l| l.contains(&format!("GET /v2/mirror/lib/app/manifests/{app}"))).count();
    assert!(manifest_gets >= 2, "each replica asked the mirror: {gets:?}");
    let shown = kubectl(&home, &kc_a, &["get", "image.config.openshift.io/cluster", "-o", "yaml"]);
    assert!(shown.contains("insecureRegistries") && shown.contains(&mirror.host), "{shown}");
    // externalRegistryHostnames[0] is the public host on both replicas.
    for r in [&a, &b] {
        let is =
            r.call("GET", &format!("/apis/image.openshift.io/v1/namespaces/{NAMESPACE}/imagestreams/app"), &json!({}));
        assert_eq!(is["status"]["dockerImageRepository"], "registry.example.com/ns/app", "{is:#}");
    }

    // An edit of the set applied again through b: a dead mirror and NeverContactSource; both replicas fail.
    let dead = format!("127.0.0.1:{}/mirror/lib", free_port());
    fs::write(&set_file, idms(&source.host, &dead, "NeverContactSource")).unwrap();
    let out = kubectl(&home, &kc_b, &["apply", "-f", set_file.to_str().unwrap()]);
    assert!(out.contains("imagedigestmirrorset.config.openshift.io/lib-mirror configured"), "{out}");
    let listed = kubectl(&home, &kc_a, &["get", "imagedigestmirrorsets", "-o", "yaml"]);
    assert!(listed.contains("NeverContactSource"), "{listed}");
    for r in [&a, &b] {
        let st = r.import(&from);
        assert_eq!(st["status"], "Failure", "{st}");
        let message = st["message"].as_str().unwrap_or_default();
        assert!(message.contains("NeverContactSource") && message.contains(&dead), "{st}");
    }
}
