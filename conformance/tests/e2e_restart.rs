//! End-to-end: a graceful restart keeps everything; a crash (SIGKILL) in the middle of a large
//! upload leaves no trace of the unfinished blob and loses nothing that was pushed before.
mod common;

use std::fs::File;
use std::io::{Read, Write};
use std::path::Path;

use common::*;

const TOOLS: &[&str] = &["skopeo", "umoci", "busybox", "jq", "sha256sum"];
const MIB: u64 = 1024 * 1024;

/// What was pushed before the restart or crash, to check afterwards.
struct Pushed {
    app: String,
    v2s2: String,
    multi: String,
}

fn push_fixtures(reg: &Registry, skopeo: &Skopeo, images: &TestImages) -> Pushed {
    let app = skopeo.push(reg, &images.oci("app"), "ns/app:v1", &[]);
    let v2s2 = skopeo.push(reg, &images.oci("app2"), "ns/app:v2", &["--format", "v2s2"]);
    let multi = skopeo.push(reg, &images.oci("multi"), "ns/multi:v1", &["--all"]);
    Pushed { app, v2s2, multi }
}

/// Everything pushed by [`push_fixtures`] is served unchanged.
fn check_fixtures(reg: &Registry, skopeo: &Skopeo, images: &TestImages, pushed: &Pushed, scratch: &Path) {
    assert_eq!(skopeo.list_tags(reg, "ns/app"), ["v1", "v2"]);
    assert_eq!(skopeo.list_tags(reg, "ns/multi"), ["v1"]);
    assert_eq!(skopeo.inspect_raw(reg, "ns/app:v1"), images.blob(&pushed.app));
    assert_eq!(sha256_digest(&skopeo.inspect_raw(reg, "ns/app:v2")), pushed.v2s2);
    assert_eq!(skopeo.inspect_raw(reg, "ns/multi:v1"), images.blob(&pushed.multi));
    for tag in ["app", "app2"] {
        for blob in manifest_blobs(&images.manifest(tag)) {
            let r = reg.head(&format!("/v2/ns/app/blobs/{blob}"));
            assert_eq!(r.status, 200, "HEAD blob {blob}: {r}");
            assert_eq!(r.header("content-length"), Some(images.blob(&blob).len().to_string().as_str()), "{r}");
        }
    }
    // Pull everything back and compare bytes.
    let out = scratch.join(format!("check-{}", unique()));
    skopeo.pull(reg, "ns/multi:v1", &format!("oci:{}:v1", out.display()), &["--all"]);
    assert_eq!(layout_digest(&out, "v1"), pushed.multi);
    for tag in ["amd64", "arm64"] {
        for blob in manifest_blobs(&images.manifest(tag)) {
            assert_eq!(layout_blob(&out, &blob), images.blob(&blob), "blob {blob}");
        }
    }
    skopeo.pull(reg, "ns/app:v1", &format!("oci:{}:app", out.display()), &[]);
    assert_eq!(layout_digest(&out, "app"), pushed.app);

    reg.assert_stream_tag("ns", "app", "v1", &pushed.app);
    reg.assert_stream_tag("ns", "app", "v2", &pushed.v2s2);
    reg.assert_stream_tag("ns", "multi", "v1", &pushed.multi);
}

#[test]
fn restart_keeps_tags_manifests_blobs_and_streams() {
    if !tools_present(TOOLS) {
        return;
    }
    let images = TestImages::get();
    let tmp = tempdir("e2e-restart-");
    let mut reg = Registry::start(&tmp.path().join("data"));
    let skopeo = Skopeo::new();
    let pushed = push_fixtures(&reg, &skopeo, images);
    check_fixtures(&reg, &skopeo, images, &pushed, tmp.path());
    let stream_before = reg.is_tributary().then(|| reg.image_stream("ns", "app").unwrap());

    let status = reg.stop();
    assert!(status.success(), "SIGTERM should stop the registry cleanly, got {status}\n{}", reg.log_text());
    reg.restart();
    check_fixtures(&reg, &skopeo, images, &pushed, tmp.path());
    if let Some(before) = stream_before {
        let after = reg.image_stream("ns", "app").unwrap();
        assert_eq!(after["status"]["tags"], before["status"]["tags"], "stream ns/app changed over a restart");
    }

    // And it still takes pushes.
    let d = skopeo.push(&reg, &images.oci("app2"), "ns/app:v3", &[]);
    assert_eq!(d, images.digest("app2"));
    reg.assert_stream_tag("ns", "app", "v3", &d);
}

/// Streams `len` bytes of `file` (from its start) into `w`; returns the number of bytes written
/// before the peer went away.
fn stream_prefix(file: &Path, len: u64, w: &mut impl Write) -> u64 {
    let mut f = File::open(file).unwrap();
    let mut buf = vec![0u8; MIB as usize];
    let mut sent = 0;
    while sent < len {
        let n = f.read(&mut buf[..(len - sent).min(MIB) as usize]).unwrap();
        assert!(n > 0, "file shorter than {len}");
        if w.write_all(&buf[..n]).is_err() {
            break;
        }
        sent += n as u64;
    }
    sent
}

/// After a crash: the unfinished blob is unknown, the registry works, older content is intact,
/// and the same blob can then be pushed (monolithically) and read back.
fn check_after_crash(
    reg: &mut Registry,
    skopeo: &Skopeo,
    images: &TestImages,
    pushed: &Pushed,
    big: &Path,
    digest: &str,
    tmp: &Path,
) {
    reg.restart();
    note("restarted after the crash");
    assert_eq!(reg.blob_status("ns/big", digest), 404, "half-uploaded blob is visible after the crash");
    assert_eq!(reg.blob_status("ns/app", digest), 404);
    let r = reg.get("/v2/");
    assert_eq!(r.status, 200, "{r}");
    check_fixtures(reg, skopeo, images, pushed, tmp);

    note("pushing the big blob again");
    reg.push_blob_file("ns/big", big, digest);
    note("pushed");
    let r = reg.head(&format!("/v2/ns/big/blobs/{digest}"));
    assert_eq!(r.status, 200, "{r}");
    let size = std::fs::metadata(big).unwrap().len();
    assert_eq!(r.header("content-length"), Some(size.to_string().as_str()), "{r}");
    assert_eq!(r.header("docker-content-digest"), Some(digest), "{r}");

    // Read it back (streamed to a file) and compare digests.
    let back = tmp.join("big.back");
    {
        let mut s = reg.open_request("GET", &format!("/v2/ns/big/blobs/{digest}"), &[], 0).unwrap();
        let mut out = File::create(&back).unwrap();
        let mut head = Vec::new();
        let mut byte = [0u8; 1];
        while !head.ends_with(b"\r\n\r\n") {
            s.read_exact(&mut byte).unwrap();
            head.push(byte[0]);
        }
        let head = String::from_utf8_lossy(&head).to_string();
        assert!(head.starts_with("HTTP/1.1 200"), "GET big blob: {head}");
        assert!(
            !head.to_ascii_lowercase().contains("transfer-encoding: chunked"),
            "expected a Content-Length body: {head}"
        );
        std::io::copy(&mut s.take(size), &mut out).unwrap();
    }
    note("read back");
    assert_eq!(file_digest(&back), digest, "big blob read back differs");
    std::fs::remove_file(back).unwrap();
}

#[test]
fn crash_during_monolithic_upload() {
    if !tools_present(TOOLS) {
        return;
    }
    let images = TestImages::get();
    let tmp = tempdir("e2e-crash-mono-");
    let mut reg = Registry::start(&tmp.path().join("data"));
    let skopeo = Skopeo::new();
    let pushed = push_fixtures(&reg, &skopeo, images);

    let size = 300 * MIB;
    let big = tmp.path().join("big.bin");
    write_random_file(&big, size);
    let digest = file_digest(&big);
    note("big blob written");

    // POST, then a PUT announcing the whole body; SIGKILL after 120 MiB of it.
    let location = reg.start_upload("ns/big");
    let url = with_query(&location, &format!("digest={digest}"));
    let mut s = reg.open_request("PUT", &url, &[("Content-Type", "application/octet-stream")], size).unwrap();
    let sent = stream_prefix(&big, 120 * MIB, &mut s);
    assert_eq!(sent, 120 * MIB, "server stopped reading early");
    note("killing the registry");
    reg.kill9();
    let rest = stream_prefix(&big, size - sent, &mut s);
    eprintln!("sent {sent} bytes, killed the registry; {rest} more bytes went into the socket buffers");
    drop(s);

    check_after_crash(&mut reg, &skopeo, images, &pushed, &big, &digest, tmp.path());
}

#[test]
fn crash_during_chunked_upload() {
    if !tools_present(TOOLS) {
        return;
    }
    let images = TestImages::get();
    let tmp = tempdir("e2e-crash-chunked-");
    let mut reg = Registry::start(&tmp.path().join("data"));
    let skopeo = Skopeo::new();
    let pushed = push_fixtures(&reg, &skopeo, images);

    let size = 160 * MIB;
    let chunk = 32 * MIB;
    let big = tmp.path().join("big.bin");
    write_random_file(&big, size);
    let digest = file_digest(&big);
    note("big blob written");

    // Three whole chunks (PATCH with Content-Range), then SIGKILL halfway through the fourth.
    let mut location = reg.start_upload("ns/big");
    let mut f = File::open(&big).unwrap();
    let mut buf = vec![0u8; chunk as usize];
    for i in 0..3u64 {
        f.read_exact(&mut buf).unwrap();
        let range = format!("{}-{}", i * chunk, (i + 1) * chunk - 1);
        let r = reg.request(
            "PATCH",
            &location,
            &[("Content-Type", "application/octet-stream"), ("Content-Range", &range)],
            &buf,
        );
        assert_eq!(r.status, 202, "PATCH chunk {i}: {r}");
        assert_eq!(r.header("range"), Some(format!("0-{}", (i + 1) * chunk - 1).as_str()), "{r}");
        location = r.header("location").unwrap_or_else(|| panic!("PATCH without Location: {r}")).to_string();
    }
    let range = format!("{}-{}", 3 * chunk, 4 * chunk - 1);
    let mut s = reg
        .open_request(
            "PATCH",
            &location,
            &[("Content-Type", "application/octet-stream"), ("Content-Range", &range)],
            chunk,
        )
        .unwrap();
    f.read_exact(&mut buf).unwrap();
    s.write_all(&buf[..(chunk / 2) as usize]).unwrap();
    note("killing the registry");
    reg.kill9();
    let _ = s.write_all(&buf[(chunk / 2) as usize..]);
    drop(s);

    check_after_crash(&mut reg, &skopeo, images, &pushed, &big, &digest, tmp.path());

    // A chunked push of the same content into another repository works too.
    note("chunked push into ns/big2");
    let mut location = reg.start_upload("ns/big2");
    let mut f = File::open(&big).unwrap();
    for i in 0..(size / chunk) {
        f.read_exact(&mut buf).unwrap();
        let range = format!("{}-{}", i * chunk, (i + 1) * chunk - 1);
        let r = reg.request(
            "PATCH",
            &location,
            &[("Content-Type", "application/octet-stream"), ("Content-Range", &range)],
            &buf,
        );
        assert_eq!(r.status, 202, "PATCH chunk {i}: {r}");
        location = r.header("location").unwrap().to_string();
    }
    let r = reg.request("PUT", &with_query(&location, &format!("digest={digest}")), &[], &[]);
    assert_eq!(r.status, 201, "PUT closing the chunked upload: {r}");
    assert_eq!(reg.blob_status("ns/big2", &digest), 200);
    note("done");
}
