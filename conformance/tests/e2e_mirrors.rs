//! End-to-end: the image policy's mirror sets and registry sources (issue 14) with real registries and real
//! clients. Every upstream is Debian's `docker-registry` on a free loopback port (a source and mirrors), started by
//! the test; a source "down" is its process killed (nothing answers on its port any more); requests are counted in
//! each upstream's access log, from a mark taken after the test seeded it:
//!
//! - import by digest and pull-through (skopeo through Tributary) served by the second digest mirror while the
//!   source is down, the first mirror (which lacks the image) tried first; a tag import needing a tag mirror;
//! - `NeverContactSource`: every mirror fails, the import fails saying so, and the source (up, holding the image)
//!   gets no request; the most specific source match wins over a registry-wide one; a tag import (no tag mirror)
//!   then does reach the source, so the count would have seen a contact;
//! - `blockedRegistries` and `allowedRegistries`: refused at import naming the rule, without contacting the
//!   registry; a blocked mirror is passed over; a source outside `allowedRegistries` is served by its mirror;
//! - `tributary adm registries-conf` read back by `skopeo --registries-conf FILE`: `skopeo inspect` and `skopeo
//!   copy` of an image by the source's name, by digest and by tag, served by the mirrors while the source is down;
//! - a mirror on another host behind htpasswd: Unauthorized until the namespace has a pull secret for that host.
//!
//! The private CA (`additionalTrustedCA`) and `kubectl apply` on two replicas are in `e2e_mirrors_tls.rs`.
//! Needs: skopeo, docker-registry, umoci, busybox, jq, sha256sum (the test images); missing tools skip the tests
//! unless `TRIBUTARY_E2E_REQUIRED=1`.
mod common;

use std::sync::{Mutex, MutexGuard};

use common::*;
use serde_json::{json, Value};

const TOOLS: &[&str] = &["skopeo", "docker-registry", "umoci", "busybox", "jq", "sha256sum"];
const CONFIG: &str = "/apis/config.openshift.io/v1";

/// One test at a time: each starts three registries and Tributary on two shared cores.
fn serial() -> MutexGuard<'static, ()> {
    static LOCK: Mutex<()> = Mutex::new(());
    LOCK.lock().unwrap_or_else(|e| e.into_inner())
}

fn begin(prefix: &str) -> Option<(MutexGuard<'static, ()>, tempfile::TempDir, Skopeo)> {
    if !tools_present(TOOLS) {
        return None;
    }
    let turn = serial();
    Some((turn, tempdir(prefix), Skopeo::new()))
}

/// A merge patch of the `Image` object `cluster`.
fn patch_cluster(reg: &Registry, patch: Value) {
    let r = reg.request(
        "PATCH",
        &format!("{CONFIG}/images/cluster"),
        &[("Content-Type", "application/merge-patch+json")],
        patch.to_string().as_bytes(),
    );
    assert_eq!(r.status, 200, "PATCH images/cluster: {r}");
}

/// Creates an ImageDigestMirrorSet (`digest`) or ImageTagMirrorSet named `name` with these entries.
fn mirror_set(reg: &Registry, digest: bool, name: &str, entries: Value) {
    let (resource, kind, field) = if digest {
        ("imagedigestmirrorsets", "ImageDigestMirrorSet", "imageDigestMirrors")
    } else {
        ("imagetagmirrorsets", "ImageTagMirrorSet", "imageTagMirrors")
    };
    let o = json!({"apiVersion": "config.openshift.io/v1", "kind": kind, "metadata": {"name": name},
                   "spec": {field: entries}});
    let r = reg.request(
        "POST",
        &format!("{CONFIG}/{resource}"),
        &[("Content-Type", "application/json")],
        o.to_string().as_bytes(),
    );
    assert_eq!(r.status, 201, "create {kind} {name}: {r}");
}

/// Imports `from` into `ns/{stream}:v1` (reference policy Local) through the API; returns the image's import
/// status (`status`, `reason`, `message`: the attempts and the mirror that served).
fn import_status(reg: &Registry, stream: &str, from: &str) -> Value {
    let body = json!({"kind": "ImageStreamImport", "apiVersion": "image.openshift.io/v1",
        "metadata": {"name": stream}, "spec": {"import": true, "images": [{
            "from": {"kind": "DockerImage", "name": from}, "to": {"name": "v1"},
            "referencePolicy": {"type": "Local"}}]}});
    let r = reg.request(
        "POST",
        &format!("/apis/image.openshift.io/v1/namespaces/{NAMESPACE}/imagestreamimports"),
        &[("Content-Type", "application/json")],
        body.to_string().as_bytes(),
    );
    assert_eq!(r.status, 201, "POST imagestreamimports: {r}");
    let status = r.json()["status"]["images"][0]["status"].clone();
    note(format!("import of {from}: {status}"));
    status
}

fn message(status: &Value) -> &str {
    status["message"].as_str().unwrap_or_default()
}

/// Three `docker-registry`s: the source holding `lib/app:1`, and two mirrors.
struct Three {
    source: Upstream,
    m1: Upstream,
    m2: Upstream,
}

fn three() -> Three {
    Three { source: Upstream::start(None), m1: Upstream::start(None), m2: Upstream::start(None) }
}

#[test]
fn digest_and_tag_mirrors_serve_while_the_source_is_down() {
    let Some((_turn, tmp, skopeo)) = begin("e2e-mirrors-down-") else { return };
    let images = TestImages::get();
    let Three { mut source, m1, m2 } = three();
    seed(&skopeo, &source, &images.oci("app"), "lib/app:1", &[]);
    // The second mirror holds the image under another path; the first has nothing.
    seed(&skopeo, &m2, &images.oci("app"), "mirror/lib/app:1", &[]);
    let (mark1, mark2) = (m1.mark(), m2.mark());
    let reg = Registry::start(&tmp.path().join("data"));
    patch_cluster(
        &reg,
        json!({"spec": {"registrySources": {"insecureRegistries": [&source.host, &m1.host, &m2.host]}}}),
    );
    mirror_set(
        &reg,
        true,
        "lib-mirrors",
        json!([{"source": format!("{}/lib", source.host),
                "mirrors": [format!("{}/lib", m1.host), format!("{}/mirror/lib", m2.host)]}]),
    );
    source.kill();
    note("source killed");

    // By digest: the first mirror answers 404, the second serves.
    let app = images.digest("app");
    let from = format!("{}/lib/app@{app}", source.host);
    let o = import_image(&reg, "app:v1", &from, &["--reference-policy", "local"]);
    assert_imported(&o, "app", &app);
    let st = import_status(&reg, "app", &from);
    assert_eq!(st["status"], "Success", "{st}");
    assert!(message(&st).contains(&format!("served by mirror {}/mirror/lib/app", m2.host)), "{st}");
    assert!(message(&st).contains(&format!("{}/lib/app", m1.host)), "the first mirror's attempt is told: {st}");
    let m1_gets = m1.requests_since(mark1, "lib/app");
    assert!(m1_gets.iter().any(|l| l.contains(&format!("/manifests/{app}")) && l.contains("\" 404 ")), "{m1_gets:?}");

    // Pull-through of the layers, from the mirror (the source is still down).
    skopeo_pull_and_compare(&skopeo, &reg, "ns/app:v1", images, "app", &tmp.path().join("pulled"));
    let layers: Vec<String> = manifest_blobs(&images.manifest("app")).into_iter().skip(1).collect();
    let m2_log = m2.requests_since(mark2, "mirror/lib/app");
    for l in &layers {
        let gets: Vec<_> = m2_log.iter().filter(|g| g.contains(&format!("GET /v2/mirror/lib/app/blobs/{l}"))).collect();
        assert_eq!(gets.len(), 1, "GETs of layer {l} from the mirror: {gets:?}");
    }
    let metrics = reg.get("/metrics").text();
    let served = metrics.lines().find(|l| {
        l.starts_with("tributary_upstream_fetches_total")
            && l.contains(&format!("endpoint=\"{}\"", m2.host))
            && l.contains("via=\"mirror\"")
            && l.contains("outcome=\"served\"")
    });
    note(format!("metrics: {served:?}"));
    assert!(served.is_some(), "no served-by-mirror line in /metrics:\n{metrics}");

    // By tag: digest mirrors do not apply, and the source is down.
    let tag_from = format!("{}/lib/app:1", source.host);
    let o = import_image(&reg, "app:v2", &tag_from, &[]);
    assert!(!o.success(), "a tag import with the source down and no tag mirror succeeded:\n{}", o.stdout);
    assert!(o.stderr.contains(&source.host), "{}", o.stderr);
    // A tag mirror for the repository: the tag comes from the mirror.
    mirror_set(
        &reg,
        false,
        "app-tags",
        json!([{"source": format!("{}/lib/app", source.host), "mirrors": [format!("{}/mirror/lib/app", m2.host)]}]),
    );
    let o = import_image(&reg, "app:v2", &tag_from, &[]);
    assert_imported(&o, "app", &app);
    assert!(m2
        .requests_since(mark2, "mirror/lib/app")
        .iter()
        .any(|l| l.contains("GET /v2/mirror/lib/app/manifests/1 ")));
}

#[test]
fn never_contact_source_and_the_most_specific_match() {
    let Some((_turn, tmp, skopeo)) = begin("e2e-mirrors-never-") else { return };
    let images = TestImages::get();
    // The source is up and holds the image: any request to it would succeed, and be in its log.
    let Three { source, m1: wide, m2: narrow } = three();
    seed(&skopeo, &source, &images.oci("app"), "lib/app:1", &[]);
    seed(&skopeo, &wide, &images.oci("app"), "lib/app:1", &[]);
    let (src_mark, wide_mark, narrow_mark) = (source.mark(), wide.mark(), narrow.mark());
    let reg = Registry::start(&tmp.path().join("data"));
    patch_cluster(
        &reg,
        json!({"spec": {"registrySources": {"insecureRegistries": [&source.host, &wide.host, &narrow.host]}}}),
    );
    // Registry-wide: to `wide` (which has the image). For the repository: to `narrow` (empty), never the source.
    mirror_set(&reg, true, "wide", json!([{"source": source.host, "mirrors": [wide.host]}]));
    mirror_set(
        &reg,
        true,
        "narrow",
        json!([{"source": format!("{}/lib/app", source.host), "mirrors": [format!("{}/lib/app", narrow.host)],
                "mirrorSourcePolicy": "NeverContactSource"}]),
    );
    let app = images.digest("app");
    let from = format!("{}/lib/app@{app}", source.host);
    let st = import_status(&reg, "app", &from);
    assert_eq!(st["status"], "Failure", "{st}");
    assert!(message(&st).contains("NeverContactSource"), "{st}");
    assert!(message(&st).contains(&format!("{}/lib/app", narrow.host)), "{st}");
    let o = import_image(&reg, "app:v1", &from, &[]);
    assert!(!o.success(), "{}", o.stdout);
    assert!(o.stderr.contains("NeverContactSource"), "import-image says: {}", o.stderr);
    // Counted in the access logs: the narrow mirror was asked (twice: API and CLI), the source and the less
    // specific rule's mirror never.
    let asked = narrow.requests_since(narrow_mark, "lib/app");
    assert_eq!(
        asked.iter().filter(|l| l.contains(&format!("GET /v2/lib/app/manifests/{app}"))).count(),
        2,
        "{asked:?}"
    );
    assert_eq!(source.requests_since(src_mark, "lib/app"), Vec::<String>::new(), "the source was contacted");
    assert_eq!(wide.requests_since(wide_mark, "lib/app"), Vec::<String>::new(), "the registry-wide rule was used");

    // Without the repository rule the registry-wide mirror serves; the source is still not contacted.
    let r = reg.request("DELETE", &format!("{CONFIG}/imagedigestmirrorsets/narrow"), &[], &[]);
    assert_eq!(r.status, 200, "{r}");
    let st = import_status(&reg, "app", &from);
    assert_eq!(st["status"], "Success", "{st}");
    assert!(message(&st).contains(&format!("served by mirror {}/lib/app", wide.host)), "{st}");
    assert_eq!(source.requests_since(src_mark, "lib/app"), Vec::<String>::new(), "the source was contacted");
    // A tag import has no tag mirror and may contact the source: the count sees it.
    let o = import_image(&reg, "app:v2", &format!("{}/lib/app:1", source.host), &[]);
    assert_imported(&o, "app", &app);
    let contacts = source.requests_since(src_mark, "lib/app");
    assert!(contacts.iter().any(|l| l.contains("GET /v2/lib/app/manifests/1 ")), "{contacts:?}");
}

#[test]
fn blocked_and_allowed_registries() {
    let Some((_turn, tmp, skopeo)) = begin("e2e-mirrors-sources-") else { return };
    let images = TestImages::get();
    let Three { source, m1: mirror, m2: other } = three();
    seed(&skopeo, &source, &images.oci("app"), "lib/app:1", &[]);
    seed(&skopeo, &mirror, &images.oci("app"), "lib/app:1", &[]);
    let (src_mark, mirror_mark) = (source.mark(), mirror.mark());
    let reg = Registry::start(&tmp.path().join("data"));
    let insecure = json!([&source.host, &mirror.host, &other.host]);
    let app = images.digest("app");
    let by_digest = format!("{}/lib/app@{app}", source.host);

    // The source's repository blocked: refused at import naming the rule, nothing sent to it.
    patch_cluster(
        &reg,
        json!({"spec": {"registrySources": {"insecureRegistries": insecure,
                                                "blockedRegistries": [format!("{}/lib", source.host)]}}}),
    );
    let o = import_image(&reg, "app:v1", &format!("{}/lib/app:1", source.host), &[]);
    assert!(!o.success(), "{}", o.stdout);
    let cond = status_tag(&reg, "app", "v1")["conditions"][0].clone();
    note(format!("blocked: {cond}"));
    assert_eq!((cond["type"].as_str(), cond["reason"].as_str()), (Some("ImportSuccess"), Some("Forbidden")), "{cond}");
    assert!(cond["message"].as_str().unwrap_or_default().contains("blockedRegistries"), "{cond}");
    assert_eq!(source.requests_since(src_mark, "lib/app"), Vec::<String>::new());

    // A blocked mirror is passed over: the source serves.
    mirror_set(&reg, true, "m", json!([{"source": source.host, "mirrors": [mirror.host]}]));
    patch_cluster(&reg, json!({"spec": {"registrySources": {"blockedRegistries": [&mirror.host]}}}));
    let st = import_status(&reg, "app", &by_digest);
    assert_eq!(st["status"], "Success", "{st}");
    assert!(message(&st).contains("blockedRegistries"), "the skipped mirror is told: {st}");
    assert_eq!(mirror.requests_since(mirror_mark, "lib/app"), Vec::<String>::new(), "the blocked mirror was contacted");
    assert!(!source.requests_since(src_mark, "lib/app").is_empty(), "the source did not serve");

    // allowedRegistries names only the mirror: the source's image comes from the mirror; a tag (no tag mirror)
    // is refused naming the list; the source sees nothing more.
    patch_cluster(
        &reg,
        json!({"spec": {"registrySources": {"blockedRegistries": null, "allowedRegistries": [&mirror.host]}}}),
    );
    let src_mark = source.mark();
    let st = import_status(&reg, "app", &by_digest);
    assert_eq!(st["status"], "Success", "{st}");
    assert!(message(&st).contains(&format!("served by mirror {}/lib/app", mirror.host)), "{st}");
    let st = import_status(&reg, "app", &format!("{}/lib/app:1", source.host));
    assert_eq!((st["status"].as_str(), st["reason"].as_str()), (Some("Failure"), Some("Forbidden")), "{st}");
    assert!(message(&st).contains("registrySources.allowedRegistries"), "{st}");
    assert_eq!(source.requests_since(src_mark, "lib/app"), Vec::<String>::new());
    // Both lists at once: a 422 in a Kubernetes Status.
    let both = json!({"spec": {"registrySources": {"allowedRegistries": ["a.io"], "blockedRegistries": ["b.io"]}}});
    let r = reg.request(
        "PATCH",
        &format!("{CONFIG}/images/cluster"),
        &[("Content-Type", "application/merge-patch+json")],
        both.to_string().as_bytes(),
    );
    assert_eq!((r.status, r.json()["reason"].as_str().map(str::to_owned)), (422, Some("Invalid".into())), "{r}");
}

#[test]
fn skopeo_reads_the_generated_registries_conf() {
    let Some((_turn, tmp, skopeo)) = begin("e2e-mirrors-conf-") else { return };
    let images = TestImages::get();
    let Three { mut source, m1, m2 } = three();
    seed(&skopeo, &source, &images.oci("app"), "lib/app:1", &[]);
    seed(&skopeo, &m1, &images.oci("app"), "digests/lib/app:unused", &[]);
    seed(&skopeo, &m2, &images.oci("app"), "tags/lib/app:1", &[]);
    let (mark1, mark2) = (m1.mark(), m2.mark());
    let reg = Registry::start(&tmp.path().join("data"));
    patch_cluster(
        &reg,
        json!({"spec": {"registrySources": {"insecureRegistries": [&source.host, &m1.host, &m2.host]}}}),
    );
    mirror_set(
        &reg,
        true,
        "d",
        json!([{"source": format!("{}/lib", source.host), "mirrors": [format!("{}/digests/lib", m1.host)]}]),
    );
    mirror_set(
        &reg,
        false,
        "t",
        json!([{"source": format!("{}/lib", source.host), "mirrors": [format!("{}/tags/lib", m2.host)]}]),
    );
    let conf = tmp.path().join("registries.conf");
    let token = reg.token.clone().expect("token auth");
    let server = format!("http://{}", reg.host);
    let mut adm = std::process::Command::new(tributary_bin());
    adm.args(["adm", "registries-conf", "--server", &server, "--token", &token]);
    let o = run_ok(&mut adm, SHORT);
    std::fs::write(&conf, &o.stdout).unwrap();
    eprintln!("--- tributary adm registries-conf ---\n{}", o.stdout);
    source.kill();
    note("source killed");

    // By digest, by the source's name: the digest mirror serves.
    let app = images.digest("app");
    let by_digest = format!("docker://{}/lib/app@{app}", source.host);
    let with_conf = |args: &[&str]| {
        let mut c = skopeo.cmd();
        c.arg("--registries-conf").arg(&conf).args(args);
        c
    };
    let raw = run_ok(&mut with_conf(&["inspect", "--raw", "--retry-times", "0", &by_digest]), SHORT).stdout;
    assert_eq!(sha256_digest(raw.as_bytes()), app, "skopeo inspect --raw {by_digest}");
    let out = tmp.path().join("copied");
    run_ok(&mut with_conf(&["copy", "--retry-times", "0", &by_digest, &format!("oci:{}:x", out.display())]), LONG);
    assert_eq!(layout_digest(&out, "x"), app);
    for blob in manifest_blobs(&images.manifest("app")) {
        assert_eq!(layout_blob(&out, &blob), images.blob(&blob), "blob {blob} copied through the mirror");
    }
    let m1_log = m1.requests_since(mark1, "digests/lib/app");
    assert!(m1_log.iter().any(|l| l.contains(&format!("GET /v2/digests/lib/app/manifests/{app}"))), "{m1_log:?}");

    // By tag: the tag mirror serves (the digest mirror is for digests only).
    let by_tag = format!("docker://{}/lib/app:1", source.host);
    // (`--no-tags`: listing the tags would ask the source.)
    let v = parse_json(&run_ok(&mut with_conf(&["inspect", "--no-tags", "--retry-times", "0", &by_tag]), SHORT).stdout);
    eprintln!("skopeo inspect {by_tag}: {v}");
    assert_eq!(v["Digest"], app.as_str(), "{v:#}");
    let out = tmp.path().join("copied-by-tag");
    run_ok(&mut with_conf(&["copy", "--retry-times", "0", &by_tag, &format!("oci:{}:x", out.display())]), LONG);
    assert_eq!(layout_digest(&out, "x"), app);
    let m2_log = m2.requests_since(mark2, "tags/lib/app");
    assert!(m2_log.iter().any(|l| l.contains("/v2/tags/lib/app/manifests/1 ")), "{m2_log:?}");
    // Without the file skopeo goes to the source, which is down.
    let mut plain = skopeo.cmd();
    plain.args(["inspect", "--raw", "--tls-verify=false", "--retry-times", "0", &by_digest]);
    run_fails(&mut plain, SHORT);
}

/// A mirror on another host that wants a password (htpasswd) gets the namespace's pull secret for its host:
/// refused as Unauthorized without one, served by the mirror (the source down) with one, for import and
/// pull-through.
#[test]
fn a_mirror_gets_the_pull_secret_for_its_host() {
    let Some((_turn, tmp, skopeo)) = begin("e2e-mirrors-creds-") else { return };
    let images = TestImages::get();
    let (user, password) = ("mirror-puller", "s3cret-mirror");
    let hash = bcrypt::hash_with_result(password, 5).expect("bcrypt").format_for_version(bcrypt::Version::TwoY);
    let htpasswd = tmp.path().join("htpasswd");
    std::fs::write(&htpasswd, format!("{user}:{hash}\n")).unwrap();
    let mut source = Upstream::start(None);
    let mirror = Upstream::start(Some(&htpasswd));
    seed(&skopeo, &mirror, &images.oci("app"), "lib/app:1", &["--dest-creds", &format!("{user}:{password}")]);
    let reg = Registry::start(&tmp.path().join("data"));
    patch_cluster(&reg, json!({"spec": {"registrySources": {"insecureRegistries": [&source.host, &mirror.host]}}}));
    mirror_set(&reg, true, "m", json!([{"source": source.host, "mirrors": [mirror.host]}]));
    source.kill();
    let app = images.digest("app");
    let from = format!("{}/lib/app@{app}", source.host);

    let st = import_status(&reg, "app", &from);
    assert_eq!((st["status"].as_str(), st["reason"].as_str()), (Some("Failure"), Some("InternalError")), "{st}");
    let refused = format!("{}/lib/app@{app}: the registry refused the credentials", mirror.host);
    assert!(message(&st).contains(&refused), "{st}");

    // A secret for the mirror's host (none for the source's).
    let o = run_ok(
        &mut tributary(
            &reg,
            &["create", "secret", "docker-registry", "mirror-pull", "--docker-server", &mirror.host]
                .into_iter()
                .chain(["--docker-username", user, "--docker-password", password])
                .collect::<Vec<_>>(),
        ),
        SHORT,
    );
    assert_eq!(o.stdout.trim(), "secret/mirror-pull created");
    let o = import_image(&reg, "app:v1", &from, &["--reference-policy", "local"]);
    assert_imported(&o, "app", &app);
    skopeo_pull_and_compare(&skopeo, &reg, "ns/app:v1", images, "app", &tmp.path().join("pulled"));
}
