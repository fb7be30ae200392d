//! The `tributary` image stream verbs against a real server: `tag` (permanent, `--alias`, cross-stream alias
//! refused, `--reference`, `--reference-policy`, `--scheduled`, rollback, `-d`), `get is|istag -o …`,
//! `describe is/NAME` and `describe istag/NAME:TAG`, `delete istag/NAME:TAG`, `set image-lookup`, `-n`.

use std::process::{Command, Output};

use names::Digest;
use registry::testing::TestRegistry;
use reqwest::StatusCode;
use serde_json::{json, Value};

const ADMIN: &str = "streams-cli-admin-secret-0123456789";
const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";

fn tributary(reg: &TestRegistry, args: &[&str]) -> Output {
    let dir = tempfile::tempdir().unwrap();
    Command::new(env!("CARGO_BIN_EXE_tributary"))
        .args(args)
        .env("TRIBUTARY_CLIENT_CONFIG", dir.path().join("none.json"))
        .env("TRIBUTARY_SERVER", reg.url())
        .env("TRIBUTARY_TOKEN", ADMIN)
        .env_remove("TRIBUTARY_NAMESPACE")
        .env_remove("RUST_BACKTRACE")
        .env_remove("RUST_LIB_BACKTRACE")
        .output()
        .expect("run tributary")
}

fn ok(reg: &TestRegistry, args: &[&str]) -> String {
    let o = tributary(reg, args);
    let (out, err) = (String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr));
    assert!(o.status.success(), "tributary {args:?} failed:\n{out}\n{err}");
    out.into_owned()
}

fn fails(reg: &TestRegistry, args: &[&str]) -> String {
    let o = tributary(reg, args);
    assert!(!o.status.success(), "tributary {args:?} should fail:\n{}", String::from_utf8_lossy(&o.stdout));
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn json_of(reg: &TestRegistry, args: &[&str]) -> Value {
    serde_json::from_str(&ok(reg, args)).unwrap()
}

async fn push(reg: &TestRegistry, repo: &str, tag: &str, seed: &str) -> String {
    let http = reqwest::Client::new();
    let config = json!({"architecture": "amd64", "os": "linux", "created": "2024-05-01T10:00:00Z", "author": "me",
        "config": {"Cmd": ["/bin/sh", "-c", seed], "Entrypoint": ["/entry"], "WorkingDir": "/app", "User": "1001",
                   "ExposedPorts": {"8080/tcp": {}}, "Labels": {"seed": seed}, "Env": ["A=1"]}})
    .to_string();
    let mut descriptors = Vec::new();
    for bytes in [config.as_bytes(), seed.as_bytes()] {
        let d = Digest::sha256_of(bytes);
        let r = http
            .post(format!("{}/v2/{repo}/blobs/uploads/?digest={d}", reg.url()))
            .bearer_auth(ADMIN)
            .body(bytes.to_vec())
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::CREATED);
        descriptors.push((d, bytes.len()));
    }
    let m = json!({"schemaVersion": 2, "mediaType": OCI_MANIFEST,
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": descriptors[0].0, "size": descriptors[0].1},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": descriptors[1].0, "size": descriptors[1].1}]})
    .to_string();
    let r = http
        .put(format!("{}/v2/{repo}/manifests/{tag}", reg.url()))
        .bearer_auth(ADMIN)
        .header("Content-Type", OCI_MANIFEST)
        .body(m.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::CREATED);
    Digest::sha256_of(m.as_bytes()).to_string()
}

fn top(istag: &Value) -> String {
    istag["image"]["metadata"]["name"].as_str().unwrap_or_default().to_owned()
}

#[tokio::test]
async fn image_stream_verbs() {
    let reg = TestRegistry::builder().with_admin_token(ADMIN).start();
    ok(&reg, &["new-project", "team"]);
    let a = push(&reg, "team/python", "3.5", "a").await;
    let b = push(&reg, "team/python", "3.5", "b").await;
    let n = ["-n", "team"];
    let run = |args: &[&str]| ok(&reg, &[args, &n[..]].concat());
    let istag = |name: &str| json_of(&reg, &["get", "istag", name, "-o", "json", "-n", "team"]);

    // A permanent tag resolves the source now; an alias tracks it.
    let out = run(&["tag", "python:3.5", "python:latest"]);
    assert_eq!(out.trim(), format!("Tag python:latest set to python@{b}."));
    assert!(run(&["tag", "--alias", "python:3.5", "python:stable"]).contains("track python:3.5"));
    let err = fails(&reg, &["tag", "--alias", "other:1", "python:x", "-n", "team"]);
    assert!(err.contains("cannot set alias across different image streams"), "{err}");
    // External sources: scheduled import, and a reference pulled through this registry.
    assert!(run(&["tag", "docker.io/library/python:3.6.0", "python:3.6", "--scheduled"]).contains("periodically"));
    let pinned = format!("quay.io/x/y@{a}");
    run(&["tag", "--reference", "--reference-policy", "local", &pinned, "python:ext"]);
    // `-n` before the verb, as `oc -n team get is` allows.
    let is = json_of(&reg, &["-n", "team", "get", "is", "python", "-o", "json"]);
    let spec = |name: &str| is["spec"]["tags"].as_array().unwrap().iter().find(|t| t["name"] == name).cloned().unwrap();
    assert_eq!(spec("3.6")["importPolicy"]["scheduled"], true);
    assert_eq!(
        (spec("ext")["reference"].as_bool(), spec("ext")["referencePolicy"]["type"].as_str()),
        (Some(true), Some("Local"))
    );
    assert_eq!(spec("latest")["from"]["kind"], "ImageStreamImage");
    assert_eq!(spec("stable")["from"], json!({"kind": "ImageStreamTag", "name": "python:3.5"}));
    // A push moves the alias, not the permanent tag.
    let c = push(&reg, "team/python", "3.5", "c").await;
    assert_eq!((top(&istag("python:stable")), top(&istag("python:latest"))), (c.clone(), b.clone()));
    // Rollback by short id: 3.5 points at `a` again, the alias follows.
    run(&["tag", &format!("python@{}", &a["sha256:".len()..][..8]), "python:3.5"]);
    assert_eq!((top(&istag("python:3.5")), top(&istag("python:stable"))), (a.clone(), a.clone()));
    // get, in every format.
    let table = run(&["get", "is"]);
    assert!(
        table.starts_with("NAME")
            && table.contains("IMAGE REPOSITORY")
            && table.contains(&format!("{}/team/python", reg.host())),
        "{table}"
    );
    let tags = run(&["get", "istag"]);
    assert!(tags.contains("python:stable") && tags.contains("IMAGE REFERENCE"), "{tags}");
    assert!(run(&["get", "istag", "-o", "name"]).contains("imagestreamtag.image.openshift.io/python:3.5"));
    let yaml = run(&["get", "is", "python", "-o", "yaml"]);
    assert!(yaml.contains("kind: ImageStream\n") && yaml.contains("  name: python\n"), "{yaml}");
    // describe, as oc shows it.
    let d = run(&["describe", "is/python"]);
    for want in [
        "Name:",
        "Namespace:",
        "Docker Pull Spec:",
        "Image Lookup:",
        "local=false",
        "Unique Images:",
        "Tags:",
        "tagged from python:3.5 (tracking)",
        "updates automatically from registry docker.io/library/python:3.6.0",
        "reference to registry quay.io/x/y@",
        "prefer registry pullthrough",
        &format!("  * {}/team/python@{a}", reg.host()),
    ] {
        assert!(d.contains(want), "describe is/python lacks {want:?}:\n{d}");
    }
    let d = run(&["describe", "istag/python:3.5"]);
    for want in [
        "Image Name:",
        "Docker Image:",
        "Image Size:",
        "Image Created:",
        "Author:",
        "me",
        "Arch:",
        "linux/amd64",
        "Entrypoint:",
        "/entry",
        "Command:",
        "/bin/sh -c a",
        "Working Dir:",
        "/app",
        "User:",
        "1001",
        "Exposes Ports:",
        "8080/tcp",
        "Docker Labels:",
        "seed=a",
        "Layers:",
    ] {
        assert!(d.contains(want), "describe istag lacks {want:?}:\n{d}");
    }
    assert!(run(&["describe", "istag", "python:stable"]).contains(&a));
    // tag -d edits the spec only; delete istag removes the tag.
    assert_eq!(run(&["tag", "-d", "python:latest"]).trim(), "Deleted tag team/python:latest.");
    assert_eq!(top(&istag("python:latest")), b, "the history stays");
    assert!(fails(&reg, &["tag", "-d", "python:latest", "-n", "team"]).contains("not in the spec"));
    assert!(run(&["delete", "istag/python:latest"]).contains("\"python:latest\" deleted"));
    assert!(fails(&reg, &["get", "istag", "python:latest", "-n", "team"]).contains("not found"));
    // set image-lookup.
    run(&["set", "image-lookup", "python"]);
    assert_eq!(
        json_of(&reg, &["get", "is", "python", "-o", "json", "-n", "team"])["spec"]["lookupPolicy"]["local"],
        true
    );
    run(&["set", "image-lookup", "python", "--enabled=false"]);
    assert_eq!(
        json_of(&reg, &["get", "is", "python", "-o", "json", "-n", "team"])["spec"]["lookupPolicy"]["local"],
        false
    );
    assert!(run(&["set", "image-lookup"]).contains("python"));
    // Another namespace sees nothing of it.
    ok(&reg, &["new-project", "other"]);
    assert!(tributary(&reg, &["get", "is", "-n", "other"]).stderr.starts_with(b"No resources found"));
}

/// The exit code says what happened (`cli::exit` has the table), and `import-image -o json` prints the server's
/// `ImageStreamImport` answer for a script, even when the import failed.
#[tokio::test]
async fn exit_codes_and_json_output() {
    let reg = TestRegistry::builder().with_admin_token(ADMIN).start();
    ok(&reg, &["new-project", "codes"]);
    let code = |o: &Output| o.status.code().expect("exited");

    let o = tributary(&reg, &["describe", "is/missing", "-n", "codes"]);
    assert_eq!(code(&o), 4, "not found: {}", String::from_utf8_lossy(&o.stderr));
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(stderr.starts_with("error: ") && stderr.lines().count() == 1, "one line: {stderr}");

    let mut bad_token = Command::new(env!("CARGO_BIN_EXE_tributary"));
    bad_token
        .args(["get", "is", "-n", "codes"])
        .env("TRIBUTARY_CLIENT_CONFIG", "/nonexistent/none.json")
        .env("TRIBUTARY_SERVER", reg.url())
        .env("TRIBUTARY_TOKEN", "not-a-token");
    assert_eq!(code(&bad_token.output().unwrap()), 3, "refused token");

    let unreachable = Command::new(env!("CARGO_BIN_EXE_tributary"))
        .args(["get", "is", "-n", "codes"])
        .env("TRIBUTARY_CLIENT_CONFIG", "/nonexistent/none.json")
        .env("TRIBUTARY_SERVER", "http://127.0.0.1:1")
        .env("TRIBUTARY_TOKEN", ADMIN)
        .output()
        .unwrap();
    assert_eq!(code(&unreachable), 6, "{}", String::from_utf8_lossy(&unreachable.stderr));

    assert_eq!(code(&tributary(&reg, &["tag", "--no-such-flag"])), 2, "usage");

    // An import from a source that does not answer: the answer (with the tag's failure) on stdout, exit 1.
    let o = tributary(
        &reg,
        &[
            "import-image",
            "app:v1",
            "--from",
            "127.0.0.1:1/lib/app:1",
            "--confirm",
            "--insecure",
            "-o",
            "json",
            "-n",
            "codes",
        ],
    );
    assert_eq!(code(&o), 1, "{}", String::from_utf8_lossy(&o.stderr));
    let answer: Value = serde_json::from_slice(&o.stdout).expect("JSON on stdout");
    assert_eq!(answer["kind"], "ImageStreamImport", "{answer:#}");
    assert_eq!(answer["status"]["images"][0]["status"]["status"], "Failure", "{answer:#}");
    assert!(String::from_utf8_lossy(&o.stderr).contains("import failed"), "{}", String::from_utf8_lossy(&o.stderr));
    // Off a terminal no spinner is drawn: stderr holds the one error line only.
    assert_eq!(String::from_utf8_lossy(&o.stderr).matches('⠋').count(), 0);
}
