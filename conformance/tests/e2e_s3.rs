//! End-to-end on an S3-compatible blob store: the `tributary` binary configured (`--config`, `[storage]` with `blobs = "s3"`)
//! with a bucket on a real moto server; skopeo pushes and pulls an image byte for byte, the whole conformance
//! suite passes, no blob lands in the data directory and no multipart upload is left unfinished. A wrong bucket
//! stops the start with a clear error. Skipped without skopeo or moto unless `TRIBUTARY_E2E_REQUIRED=1`.
mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::*;
use storage_backends::testing::s3::{S3Server, BUCKET};

const TOOLS: &[&str] = &["skopeo", "umoci", "busybox", "jq", "sha256sum"];

/// The `--config` file for `bucket` on `s3`, with `extra` lines appended to `[storage.s3]`.
fn config_with(dir: &Path, s3: &S3Server, bucket: &str, extra: &str) -> PathBuf {
    let path = dir.join("tributary.toml");
    let toml = format!(
        "[storage]\nblobs = \"s3\"\n\n[storage.s3]\nendpoint = \"{}\"\nbucket = \"{bucket}\"\nprefix = \"e2e\"\naccess-key-id = \"testing\"\nsecret-access-key = \"testing\"\n{extra}",
        s3.endpoint()
    );
    std::fs::write(&path, toml).unwrap();
    path
}

/// skopeo pulls `ns/app:v1` into an OCI layout at `out`: the test image `app`, manifest and blobs byte for byte.
fn pull_and_compare(skopeo: &Skopeo, reg: &Registry, images: &TestImages, out: &Path) {
    skopeo.pull(reg, "ns/app:v1", &format!("oci:{}:v1", out.display()), &[]);
    assert_eq!(layout_digest(out, "v1"), images.digest("app"), "pulled back the same manifest");
    for blob in manifest_blobs(&images.manifest("app")) {
        assert_eq!(layout_blob(out, &blob), images.blob(&blob), "blob {blob} byte for byte");
    }
}

/// The project's whole conformance suite against `reg`, in namespace `conformance`.
fn run_the_suite(reg: &Registry, rt: &tokio::runtime::Runtime) {
    reg.create_namespace("conformance");
    let mut c = conformance::Config::new(format!("http://{}", reg.host));
    c.token = reg.token.clone();
    let report = rt.block_on(conformance::run(c));
    println!("{}", report.summary());
    assert!(report.success(), "{}\n{}", report.lines.join("\n"), report.summary());
}

#[test]
fn skopeo_and_the_conformance_suite_on_s3() {
    if !tools_present(TOOLS) {
        return;
    }
    let Some(s3) = S3Server::start() else { return };
    let images = TestImages::get();
    let tmp = tempdir("e2e-s3-");
    let config = config_with(tmp.path(), &s3, BUCKET, "");
    let reg = Registry::start_configured(&tmp.path().join("data"), Some(&config));
    let skopeo = Skopeo::new();

    let src = images.digest("app");
    assert_eq!(skopeo.push(&reg, &images.oci("app"), "ns/app:v1", &[]), src);
    pull_and_compare(&skopeo, &reg, images, &tmp.path().join("out"));

    run_the_suite(&reg, &tokio::runtime::Runtime::new().unwrap());

    let local = tmp.path().join("data/blobs");
    assert!(!local.exists(), "blobs went to S3, not to {}", local.display());
    assert!(s3.unfinished_multipart_uploads(BUCKET, None).is_empty());
}

/// `redirect = true`: blob GETs answer 307 to presigned S3 URLs; skopeo follows them and pulls byte for byte, and
/// the conformance suite passes with the redirects.
#[test]
fn skopeo_and_the_conformance_suite_through_s3_redirects() {
    if !tools_present(TOOLS) {
        return;
    }
    let Some(s3) = S3Server::start() else { return };
    let images = TestImages::get();
    let tmp = tempdir("e2e-s3-redirect-");
    let config = config_with(tmp.path(), &s3, BUCKET, "redirect = true\n");
    let reg = Registry::start_configured(&tmp.path().join("data"), Some(&config));
    let skopeo = Skopeo::new();
    let src = images.digest("app");
    assert_eq!(skopeo.push(&reg, &images.oci("app"), "ns/app:v1", &[]), src);

    let layer = manifest_blobs(&images.manifest("app")).pop().expect("a layer");
    let rt = tokio::runtime::Runtime::new().unwrap();
    let (status, to) = rt.block_on(async {
        let direct = reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().unwrap();
        let mut get = direct.get(format!("http://{}/v2/ns/app/blobs/{layer}", reg.host));
        if let Some(t) = &reg.token {
            get = get.bearer_auth(t);
        }
        let r = get.send().await.unwrap();
        (r.status().as_u16(), r.headers().get("location").map(|l| l.to_str().unwrap().to_owned()))
    });
    assert_eq!(status, 307, "a redirect, not the bytes");
    let to = to.expect("a Location");
    assert!(to.starts_with(&s3.endpoint()), "to the S3 server: {to}");

    pull_and_compare(&skopeo, &reg, images, &tmp.path().join("out"));
    run_the_suite(&reg, &rt);
}

#[test]
fn a_wrong_bucket_stops_the_start_with_a_clear_error() {
    let Some(s3) = S3Server::start() else { return };
    let tmp = tempdir("e2e-s3-wrong-");
    let config = config_with(tmp.path(), &s3, "no-such-bucket", "");
    let mut cmd = Command::new(tributary_bin());
    cmd.args(["serve", "--listen", "127.0.0.1:0", "--auth", "none", "--config"])
        .arg(&config)
        .arg("--data-dir")
        .arg(tmp.path().join("data"));
    let out = run_fails(&mut cmd, SHORT);
    let want = format!("S3 bucket no-such-bucket (prefix e2e) at {}: ", s3.endpoint());
    assert!(out.stderr.contains(&want), "{}", out.stderr);
}
