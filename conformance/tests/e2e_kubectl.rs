//! kubectl against Tributary's image stream API, with a bearer token over https (kubectl sends credentials only
//! over TLS): `apply -f` of the seed image stream twice (kubectl's default validation, which reads the OpenAPI
//! document), `get is`, `get istag`, `describe is`, `get is -w` seeing a push, `delete istag`, with a kubeconfig
//! and with `--server/--token` flags; then `tributary describe` over the same server.
//!
//! Needs `kubectl`, `openssl` (for the test certificate) and `curl` (to push); skipped without them unless
//! `TRIBUTARY_E2E_REQUIRED=1`.

mod common;

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{
    note, run, run_ok, self_signed_cert, sha256_digest, tempdir, tools_present, tributary_bin, Skopeo, TestImages,
    IMAGE_TOOLS, LONG, SHORT,
};

const TOKEN: &str = "kubectl-e2e-admin-token-0123456789abcdef";

/// The seed's image stream (OpenShift docs, "Importing Tag and Image Metadata") exactly as the seed prints it
/// (`../shared/seeds`, OpenShift 3): legacy `apiVersion: v1`, served under `/api/v1`.
const SEED_STREAM_LEGACY: &str = "apiVersion: v1
kind: ImageStream
metadata:
  name: ruby
spec:
  tags:
  - from:
      kind: DockerImage
      name: openshift/ruby-20-centos7
    name: latest
    importPolicy:
      scheduled: true
";

struct Server {
    child: Child,
    url: String,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start(dir: &Path) -> Server {
    let (cert, key) = self_signed_cert(dir);
    let mut cmd = Command::new(tributary_bin());
    cmd.args(["serve", "--listen", "127.0.0.1:0", "--admin-token", TOKEN])
        .arg("--data-dir")
        .arg(dir.join("data"))
        .arg("--tls-cert")
        .arg(&cert)
        .arg("--tls-key")
        .arg(&key)
        .stdout(Stdio::piped())
        .stderr(Stdio::null());
    for (k, _) in std::env::vars_os() {
        if k.to_string_lossy().starts_with("TRIBUTARY_") {
            cmd.env_remove(k);
        }
    }
    let mut child = cmd.spawn().expect("start tributary");
    let stdout = child.stdout.take().unwrap();
    let mut line = String::new();
    BufReader::new(stdout).read_line(&mut line).expect("tributary says where it listens");
    let url = line.trim().rsplit(' ').next().unwrap().to_owned();
    assert!(url.starts_with("https://127.0.0.1:"), "{line}");
    Server { child, url }
}

fn curl(args: &[&str]) -> String {
    let out =
        run_ok(Command::new("curl").args(["-skf", "-H", &format!("Authorization: Bearer {TOKEN}")]).args(args), SHORT);
    out.stdout
}

/// Pushes a small image (config and one layer) by tag with curl; returns its digest.
fn push(server: &Server, repo: &str, tag: &str, seed: &str) -> String {
    let config = format!(
        r#"{{"architecture":"amd64","os":"linux","config":{{"Cmd":["/bin/sh","-c","echo {seed}"],"WorkingDir":"/app","User":"1001","ExposedPorts":{{"8080/tcp":{{}}}}}}}}"#
    );
    let layer = format!("layer {seed}");
    for blob in [&config, &layer] {
        let d = sha256_digest(blob.as_bytes());
        curl(&["-X", "POST", "--data-binary", blob, &format!("{}/v2/{repo}/blobs/uploads/?digest={d}", server.url)]);
    }
    let manifest = format!(
        r#"{{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"{}","size":{}}},"layers":[{{"mediaType":"application/vnd.oci.image.layer.v1.tar","digest":"{}","size":{}}}]}}"#,
        sha256_digest(config.as_bytes()),
        config.len(),
        sha256_digest(layer.as_bytes()),
        layer.len()
    );
    curl(&[
        "-X",
        "PUT",
        "-H",
        "Content-Type: application/vnd.oci.image.manifest.v1+json",
        "--data-binary",
        &manifest,
        &format!("{}/v2/{repo}/manifests/{tag}", server.url),
    ]);
    sha256_digest(manifest.as_bytes())
}

fn kubectl(home: &Path, args: &[&str]) -> Command {
    let mut c = Command::new("kubectl");
    c.args(args).env("HOME", home).env_remove("KUBECONFIG");
    c
}

fn ok(cmd: &mut Command) -> String {
    let o = run_ok(cmd, SHORT);
    eprintln!("{}", o.stdout);
    o.stdout
}

#[test]
fn kubectl_drives_image_streams() {
    if !tools_present(&["kubectl", "openssl", "curl"]) {
        return;
    }
    let dir = tempdir("tributary-e2e-kubectl-");
    let server = start(dir.path());
    note(format!("tributary on {}", server.url));
    curl(&[
        "-H",
        "Content-Type: application/json",
        "-d",
        r#"{"name":"ns"}"#,
        &format!("{}/apis/tributary.dev/v1/namespaces", server.url),
    ]);
    let home = dir.path().join("home");
    std::fs::create_dir_all(&home).unwrap();
    let kubeconfig = dir.path().join("kubeconfig");
    std::fs::write(
        &kubeconfig,
        format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: tributary\n  cluster:\n    server: {}\n    insecure-skip-tls-verify: true\nusers:\n- name: admin\n  user:\n    token: {TOKEN}\ncontexts:\n- name: tributary\n  context: {{cluster: tributary, user: admin, namespace: ns}}\ncurrent-context: tributary\n",
            server.url
        ),
    )
    .unwrap();
    let kc = kubeconfig.to_str().unwrap().to_owned();
    let with_config = |args: &[&str]| kubectl(&home, &[&["--kubeconfig", kc.as_str()][..], args].concat());
    let flags = ["--server", server.url.as_str(), "--token", TOKEN, "--insecure-skip-tls-verify", "-n", "ns"];
    let with_flags = |args: &[&str]| kubectl(&home, &[&flags[..], args].concat());
    let file = dir.path().join("imagestream.yaml");
    // The seed in today's API group.
    let seed_stream = SEED_STREAM_LEGACY.replace("apiVersion: v1", "apiVersion: image.openshift.io/v1");
    std::fs::write(&file, &seed_stream).unwrap();
    let file = file.to_str().unwrap();

    // apply, twice, with kubectl's default validation.
    assert!(ok(&mut with_config(&["apply", "-f", file])).contains("imagestream.image.openshift.io/ruby created"));
    let again = ok(&mut with_flags(&["apply", "-f", file]));
    assert!(again.contains("imagestream.image.openshift.io/ruby unchanged"), "{again}");
    let is = ok(&mut with_config(&["get", "is", "ruby", "-o", "json"]));
    let is: serde_json::Value = serde_json::from_str(&is).unwrap();
    assert_eq!(is["metadata"]["generation"], 1, "applying the same file again changes nothing");
    assert_eq!(is["spec"]["tags"][0]["importPolicy"]["scheduled"], true);
    // Validation still catches a misspelt field.
    std::fs::write(dir.path().join("bad.yaml"), seed_stream.replace("importPolicy", "importPolicyy")).unwrap();
    let bad = run(&mut with_config(&["apply", "-f", dir.path().join("bad.yaml").to_str().unwrap()]), SHORT);
    assert!(!bad.success() && bad.stderr.contains("importPolicyy"), "{}", bad.stderr);

    // The seed verbatim (apiVersion: v1), twice, in another namespace: the same streams under the legacy path.
    curl(&[
        "-H",
        "Content-Type: application/json",
        "-d",
        r#"{"name":"legacy"}"#,
        &format!("{}/apis/tributary.dev/v1/namespaces", server.url),
    ]);
    let legacy = dir.path().join("legacy.yaml");
    std::fs::write(&legacy, SEED_STREAM_LEGACY).unwrap();
    let legacy = legacy.to_str().unwrap();
    let first = ok(&mut with_config(&["apply", "-n", "legacy", "-f", legacy]));
    assert!(first.contains("imagestream/ruby created"), "{first}");
    let second = ok(&mut with_config(&["apply", "-n", "legacy", "-f", legacy]));
    assert!(second.contains("imagestream/ruby unchanged"), "{second}");
    // An edited file: kubectl's strategic merge patch removes the dropped tag and adds the new one, by name.
    let edited = SEED_STREAM_LEGACY.replace("name: latest", "name: \"2.0\"")
        + "  - from:\n      kind: DockerImage\n      name: openshift/ruby-22-centos7\n    name: \"2.2\"\n";
    let edited_path = dir.path().join("legacy-edited.yaml");
    std::fs::write(&edited_path, edited).unwrap();
    let third = ok(&mut with_config(&["apply", "-n", "legacy", "-f", edited_path.to_str().unwrap()]));
    assert!(third.contains("imagestream/ruby configured"), "{third}");
    let tags = ok(&mut with_config(&[
        "get",
        "imagestreams.image.openshift.io",
        "ruby",
        "-n",
        "legacy",
        "-o",
        "jsonpath={.spec.tags[*].name} {.metadata.generation}",
    ]));
    assert_eq!(tags.trim(), "2.0 2.2 2", "tags by name, one spec change");
    let again = ok(&mut with_config(&["apply", "-n", "legacy", "-f", edited_path.to_str().unwrap()]));
    assert!(again.contains("imagestream/ruby unchanged"), "{again}");
    let via_group =
        ok(&mut with_config(&["get", "imagestreams.image.openshift.io", "ruby", "-n", "legacy", "-o", "json"]));
    let via_group: serde_json::Value = serde_json::from_str(&via_group).unwrap();
    assert_eq!(via_group["apiVersion"], "image.openshift.io/v1");
    assert_eq!(via_group["metadata"]["generation"], 2, "applying the legacy files: one change");
    assert_eq!(via_group["spec"]["tags"][0]["from"]["name"], "openshift/ruby-20-centos7");
    let via_core = ok(&mut with_config(&["get", "imagestreams.v1.", "ruby", "-n", "legacy", "-o", "json"]));
    let via_core: serde_json::Value = serde_json::from_str(&via_core).unwrap();
    assert_eq!(via_core["apiVersion"], "v1");
    assert_eq!(via_core["metadata"]["uid"], via_group["metadata"]["uid"], "one stream, two paths");
    let bad = SEED_STREAM_LEGACY.replace("importPolicy", "importPolicyy");
    std::fs::write(dir.path().join("bad-legacy.yaml"), bad).unwrap();
    let bad = run(
        &mut with_config(&["apply", "-n", "legacy", "-f", dir.path().join("bad-legacy.yaml").to_str().unwrap()]),
        SHORT,
    );
    assert!(!bad.success() && bad.stderr.contains("importPolicyy"), "{}", bad.stderr);

    // Pushes show up in get is / get istag / describe.
    let a = push(&server, "ns/python", "3.5", "a");
    let list = ok(&mut with_config(&["get", "is"]));
    assert!(list.contains("IMAGE REPOSITORY") && list.contains("python") && list.contains("ruby"), "{list}");
    let tags = ok(&mut with_flags(&["get", "istag"]));
    assert!(tags.contains("python:3.5") && tags.contains(&a), "{tags}");
    let described = ok(&mut with_config(&["describe", "is", "python"]));
    assert!(described.contains("Name:") && described.contains("python") && described.contains(&a), "{described}");

    // get is -w sees a push as it happens.
    let out_path = dir.path().join("watch.out");
    let mut watch = with_config(&["get", "is", "-w"])
        .stdout(std::fs::File::create(&out_path).unwrap())
        .stderr(Stdio::null())
        .spawn()
        .expect("kubectl get is -w");
    let mut seen = String::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut pushed = false;
    while Instant::now() < deadline {
        seen = std::fs::read_to_string(&out_path).unwrap_or_default();
        if !pushed && seen.contains("python") {
            push(&server, "ns/python", "3.6", "b");
            pushed = true;
        }
        if seen.contains("3.6") {
            break;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    let _ = watch.kill();
    let _ = watch.wait();
    eprintln!("kubectl get is -w:\n{seen}");
    assert!(seen.contains("3.6"), "the watch saw the push:\n{seen}");

    // delete istag.
    assert!(ok(&mut with_flags(&["delete", "istag", "python:3.5"])).contains("\"python:3.5\" deleted"));
    let tags = ok(&mut with_config(&["get", "istag"]));
    assert!(!tags.contains("python:3.5") && tags.contains("python:3.6"), "{tags}");
    assert_eq!(
        curl(&[&format!("{}/v2/ns/python/tags/list", server.url)]).trim(),
        r#"{"name":"ns/python","tags":["3.6"]}"#
    );

    // And the tributary CLI against the same https server.
    let described = run_ok(
        Command::new(tributary_bin())
            .args([
                "describe",
                "is/python",
                "-n",
                "ns",
                "--insecure-skip-tls-verify",
                "--server",
                &server.url,
                "--token",
                TOKEN,
            ])
            .env("HOME", &home),
        SHORT,
    );
    eprintln!("{}", described.stdout);
    assert!(described.stdout.contains("Docker Pull Spec:"), "{}", described.stdout);

    // An alias made with the CLI moves with a push, and skopeo pulls what kubectl shows.
    let cli = |args: &[&str]| {
        let mut c = Command::new(tributary_bin());
        c.args(args)
            .args(["-n", "ns", "--insecure-skip-tls-verify", "--server", &server.url, "--token", TOKEN])
            .env("HOME", &home);
        run_ok(&mut c, SHORT).stdout
    };
    assert!(cli(&["tag", "--alias", "python:3.6", "python:latest"]).contains("track python:3.6"));
    let c = push(&server, "ns/python", "3.6", "c");
    let shown = ok(&mut with_config(&["get", "istag", "python:latest", "-o", "jsonpath={.image.metadata.name}"]));
    assert_eq!(shown.trim(), c);
    if tools_present(&["skopeo"]) {
        let host = server.url.trim_start_matches("https://");
        let inspect = run_ok(
            Command::new("skopeo")
                .args(["inspect", "--raw", "--tls-verify=false", "--creds", &format!("admin:{TOKEN}")])
                .arg(format!("docker://{host}/ns/python:latest")),
            SHORT,
        );
        assert_eq!(sha256_digest(inspect.stdout.as_bytes()), c, "skopeo pulls the manifest the alias points at");
    }
}

const LIMIT_RANGE: &str = "apiVersion: v1
kind: LimitRange
metadata:
  name: images
spec:
  limits:
  - type: openshift.io/Image
    max:
      storage: 1k
  - type: Container
    max:
      memory: 1Gi
";

#[test]
fn kubectl_manages_limit_ranges_and_skopeo_is_refused_over_the_limit() {
    if !tools_present(&[&["kubectl", "openssl", "curl", "skopeo"][..], IMAGE_TOOLS].concat()) {
        return;
    }
    let images = TestImages::get();
    let dir = tempdir("tributary-e2e-kubectl-limits-");
    let server = start(dir.path());
    note(format!("tributary on {}", server.url));
    curl(&[
        "-H",
        "Content-Type: application/json",
        "-d",
        r#"{"name":"ns"}"#,
        &format!("{}/apis/tributary.dev/v1/namespaces", server.url),
    ]);
    let home = dir.path().join("home");
    std::fs::create_dir_all(&home).unwrap();
    let flags = ["--server", server.url.as_str(), "--token", TOKEN, "--insecure-skip-tls-verify", "-n", "ns"];
    let kc = |args: &[&str]| kubectl(&home, &[&flags[..], args].concat());
    let file = dir.path().join("limitrange.yaml");
    std::fs::write(&file, LIMIT_RANGE).unwrap();
    let file = file.to_str().unwrap();

    assert!(ok(&mut kc(&["create", "-f", file])).contains("limitrange/images created"));
    let listed = ok(&mut kc(&["get", "limitranges"]));
    assert!(listed.contains("NAME") && listed.contains("images"), "{listed}");
    let storage = ok(&mut kc(&["get", "limits", "images", "-o", "jsonpath={.spec.limits[0].max.storage}"]));
    assert_eq!(storage.trim(), "1k");
    let exists = run(&mut kc(&["create", "-f", file]), SHORT);
    assert!(!exists.success() && exists.stderr.contains("already exists"), "{}", exists.stderr);

    // skopeo's push of the test image (far more than 1k) is refused.
    let host = server.url.trim_start_matches("https://").to_owned();
    let skopeo = Skopeo::new();
    let push = |tag: &str| {
        let mut c = skopeo.cmd();
        c.args(["copy", "--dest-tls-verify=false", "--retry-times", "0", "--dest-creds", &format!("admin:{TOKEN}")])
            .arg(images.oci("app"))
            .arg(format!("docker://{host}/ns/app:{tag}"));
        run(&mut c, LONG)
    };
    let refused = push("v1");
    eprintln!("skopeo over the limit: {}", refused.stderr);
    assert!(!refused.success(), "{}", refused.stdout);
    let said = refused.stderr.to_lowercase();
    assert!(said.contains("denied") && said.contains("exceeds the limit of 1k"), "{}", refused.stderr);

    // kubectl apply of the edited file raises the limit; the push goes through.
    std::fs::write(dir.path().join("raised.yaml"), LIMIT_RANGE.replace("storage: 1k", "storage: 1Gi")).unwrap();
    let applied = ok(&mut kc(&["apply", "-f", dir.path().join("raised.yaml").to_str().unwrap()]));
    assert!(applied.contains("limitrange/images configured"), "{applied}");
    let storage = ok(&mut kc(&["get", "limitrange", "images", "-o", "jsonpath={.spec.limits[0].max.storage}"]));
    assert_eq!(storage.trim(), "1Gi");
    let pushed = push("v1");
    assert!(pushed.success(), "{}", pushed.stderr);

    // A malformed quantity is refused by the server with its reason.
    std::fs::write(dir.path().join("bad.yaml"), LIMIT_RANGE.replace("name: images", "name: bad").replace("1k", "1kk"))
        .unwrap();
    let bad = run(&mut kc(&["create", "-f", dir.path().join("bad.yaml").to_str().unwrap()]), SHORT);
    assert!(!bad.success() && bad.stderr.contains("quantities must match"), "{}", bad.stderr);

    assert!(ok(&mut kc(&["delete", "limitrange", "images"])).contains("\"images\" deleted"));
    let listed = run(&mut kc(&["get", "limits"]), SHORT);
    assert!(
        listed.stdout.trim().is_empty() && listed.stderr.contains("No resources found"),
        "{}{}",
        listed.stdout,
        listed.stderr
    );
}
