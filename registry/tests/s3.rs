//! The registry on an S3-compatible store (a real moto server; skipped without moto unless
//! `TRIBUTARY_E2E_REQUIRED=1`): chunked and monolithic pushes through HTTP read back byte-exact (whole and
//! ranges), and an upload started through one replica, continued through another and finished through the first.

use bytes::Bytes;
use names::Digest;
use registry::config::storage::{Blobs, Storage};
use registry::service::Registry;
use registry::testing::TestRegistry;
use reqwest::{Client, StatusCode};
use storage_backends::suite;
use storage_backends::testing::s3::{S3Server, BUCKET};

fn location(r: &reqwest::Response) -> String {
    r.headers()["location"].to_str().unwrap().to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pushes_and_pulls_on_s3_across_replicas() {
    let Some(s3) = S3Server::start() else { return };
    let storage = Storage { blobs: Blobs::S3(s3.config(BUCKET, Some("reg"))), ..Default::default() };
    let reg = TestRegistry::builder().with_storage(storage).start();
    let http = Client::new();
    let url = |p: &str| format!("{}{p}", reg.url());

    // Chunked: a 1-byte PATCH, then odd sizes past the 8 MiB part size, then the final PUT with a last chunk.
    let data = suite::noise(19 * 1024 * 1024 + 333, 42);
    let d = Digest::sha256_of(&data);
    let r = http.post(url("/v2/ns/app/blobs/uploads/")).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::ACCEPTED);
    let mut loc = location(&r);
    let cuts = [0, 1, 3 * 1024 * 1024 + 7, 11 * 1024 * 1024, data.len() - 10];
    for w in cuts.windows(2) {
        let r = http
            .patch(format!("{}{loc}", reg.url()))
            .header("Content-Range", format!("{}-{}", w[0], w[1] - 1))
            .body(data[w[0]..w[1]].to_vec())
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::ACCEPTED, "{:?}", r.text().await);
        loc = location(&r);
    }
    let r = http.put(format!("{}{loc}?digest={d}", reg.url())).body(data[cuts[4]..].to_vec()).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::CREATED, "{:?}", r.text().await);
    let got = http.get(url(&format!("/v2/ns/app/blobs/{d}"))).send().await.unwrap();
    assert_eq!(got.status(), StatusCode::OK);
    assert!(got.bytes().await.unwrap()[..] == data[..], "read back byte-exact");
    let part = http.get(url(&format!("/v2/ns/app/blobs/{d}"))).header("Range", "bytes=8388600-8388615").send();
    let part = part.await.unwrap();
    assert_eq!(part.status(), StatusCode::PARTIAL_CONTENT);
    assert_eq!(part.bytes().await.unwrap()[..], data[8388600..8388616]);

    // Monolithic: straight to the content-addressed path.
    let mono = suite::noise(9 * 1024 * 1024, 43);
    let md = Digest::sha256_of(&mono);
    let r = http.post(url(&format!("/v2/ns/app/blobs/uploads/?digest={md}"))).body(mono.clone()).send().await;
    assert_eq!(r.unwrap().status(), StatusCode::CREATED);
    let head = http.head(url(&format!("/v2/ns/app/blobs/{md}"))).send().await.unwrap();
    assert_eq!(head.headers()["content-length"], mono.len().to_string().as_str());
    assert!(http.get(url(&format!("/v2/ns/app/blobs/{md}"))).send().await.unwrap().bytes().await.unwrap() == mono);

    // Two replicas on the same stores: start on one, append on the other, finish on the first.
    let one: Registry = reg.registry().clone();
    let two = Registry { blobs: one.blobs.replica(), ..one.clone() };
    let repo = "ns/app".parse().unwrap();
    let more = suite::noise(9 * 1024 * 1024 + 1, 44);
    let md = Digest::sha256_of(&more);
    let r = http.post(url("/v2/ns/app/blobs/uploads/")).send().await.unwrap();
    let id = location(&r).rsplit('/').next().unwrap().parse().unwrap();
    let half = more.len() / 2;
    let body = suite::body([Bytes::copy_from_slice(&more[..half])]);
    assert_eq!(two.append_chunk(&repo, id, "system:anonymous", Some(0), body).await.unwrap(), half as u64);
    let status = http.get(url(&format!("/v2/ns/app/blobs/uploads/{id}"))).send().await.unwrap();
    assert_eq!(status.headers()["range"], format!("0-{}", half - 1).as_str(), "replica one sees replica two's bytes");
    let r = http
        .put(url(&format!("/v2/ns/app/blobs/uploads/{id}?digest={md}")))
        .header("Content-Range", format!("{half}-{}", more.len() - 1))
        .body(more[half..].to_vec())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::CREATED);
    let back = two.read_blob(&repo, &md, None).await.unwrap();
    let back: Vec<Bytes> = futures::TryStreamExt::try_collect(back.body).await.unwrap();
    assert!(back.concat() == more);
    assert!(s3.unfinished_multipart_uploads(BUCKET, None).is_empty());
    eprintln!("ran against moto at {}", s3.endpoint());
}

/// With `storage.s3.redirect`, a blob GET is a 307 to a presigned S3 URL that serves the exact bytes (whole and
/// with the client's Range), for a monolithic push (content path) and a chunked one (a location record); HEAD
/// stays local; a repository that does not hold the blob still gets 404 `BLOB_UNKNOWN`, never a URL.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn blob_gets_redirect_to_presigned_s3_urls() {
    let Some(s3) = S3Server::start() else { return };
    let mut config = s3.config(BUCKET, Some("pre"));
    config.redirect = true;
    let reg = TestRegistry::builder().with_storage(Storage { blobs: Blobs::S3(config), ..Default::default() }).start();
    let http = Client::builder().redirect(reqwest::redirect::Policy::none()).build().unwrap();
    let follow = Client::new();
    let url = |p: &str| format!("{}{p}", reg.url());

    let mono = suite::noise(3 * 1024 * 1024 + 5, 51);
    let md = Digest::sha256_of(&mono);
    let r = http.post(url(&format!("/v2/ns/app/blobs/uploads/?digest={md}"))).body(mono.clone()).send().await;
    assert_eq!(r.unwrap().status(), StatusCode::CREATED);
    let chunked = suite::noise(9 * 1024 * 1024 + 3, 52);
    let cd = Digest::sha256_of(&chunked);
    let r = http.post(url("/v2/ns/app/blobs/uploads/")).send().await.unwrap();
    let loc = location(&r);
    let r = http.patch(format!("{}{loc}", reg.url())).body(chunked[..8 * 1024 * 1024].to_vec()).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::ACCEPTED);
    let r = http
        .put(format!("{}{}?digest={cd}", reg.url(), location(&r)))
        .body(chunked[8 * 1024 * 1024..].to_vec())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::CREATED, "{:?}", r.text().await);

    for (d, data) in [(&md, &mono), (&cd, &chunked)] {
        let r = http.get(url(&format!("/v2/ns/app/blobs/{d}"))).send().await.unwrap();
        assert_eq!(r.status(), StatusCode::TEMPORARY_REDIRECT);
        let target = location(&r);
        assert!(target.starts_with(&s3.endpoint()), "{target} is on the S3 server");
        assert!(target.contains("X-Amz-Signature="), "{target} is presigned");
        let direct = Client::new().get(&target).send().await.unwrap();
        assert_eq!(direct.status(), StatusCode::OK);
        assert!(direct.bytes().await.unwrap()[..] == data[..], "S3 serves the exact bytes of {d}");
        // A client that follows the redirect with a Range gets that range from S3.
        let part = follow.get(url(&format!("/v2/ns/app/blobs/{d}"))).header("Range", "bytes=100-199").send().await;
        let part = part.unwrap();
        assert_eq!(part.status(), StatusCode::PARTIAL_CONTENT);
        assert_eq!(part.bytes().await.unwrap()[..], data[100..200]);
        let head = http.head(url(&format!("/v2/ns/app/blobs/{d}"))).send().await.unwrap();
        assert_eq!(head.status(), StatusCode::OK);
        assert_eq!(head.headers()["content-length"], data.len().to_string().as_str());
    }
    let other = http.get(url(&format!("/v2/ns/other/blobs/{md}"))).send().await.unwrap();
    assert_eq!(other.status(), StatusCode::NOT_FOUND);
    assert!(other.headers().get("location").is_none());
    assert!(other.text().await.unwrap().contains("BLOB_UNKNOWN"));
}
