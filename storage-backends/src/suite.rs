//! The blob-and-upload suite every blob backend runs (filesystem, memory, S3): the same calls, the same
//! expectations. It drives [`BlobStore`]'s upload sessions directly (they live here, with their writer claim), on
//! two handles of one store (two replicas sharing the object store and the metadata store), and ends with a
//! teardown that fails when anything is left under `uploads/`.
//!
//! ```no_run
//! # async fn t(a: storage_backends::BlobStore) {
//! storage_backends::suite::run(&a, &a.replica()).await;
//! # }
//! ```
//! Backends that can list unfinished multipart uploads check those too after [`run`] (see the S3 test).

use std::time::Duration;

use bytes::Bytes;
use futures::{StreamExt, TryStreamExt};
use names::{Algorithm, Digest, RepositoryName, UploadId};
use object_store::path::Path;
use object_store::ObjectStoreExt;

use crate::blobs::{BlobError, BlobStore};
use crate::uploads::no_body;

type Body = futures::stream::BoxStream<'static, Result<Bytes, std::io::Error>>;

/// A body of these chunks.
pub fn body<I: IntoIterator<Item = Bytes>>(chunks: I) -> Body {
    futures::stream::iter(chunks.into_iter().map(Ok).collect::<Vec<_>>()).boxed()
}

/// A body that sends `good` and then fails, as a client that hangs up mid-chunk.
pub fn broken(good: Bytes) -> Body {
    futures::stream::iter(vec![Ok(good), Err(std::io::Error::other("connection reset"))]).boxed()
}

/// `len` bytes of deterministic noise.
pub fn noise(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
    (0..len)
        .map(|_| {
            x = x.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            (x >> 33) as u8
        })
        .collect()
}

/// `data` cut into chunks of the given sizes, in turn.
pub fn chunks_of(data: &[u8], sizes: &[usize]) -> Vec<Bytes> {
    let mut out = Vec::new();
    let (mut at, mut i) = (0, 0);
    while at < data.len() {
        let n = sizes[i % sizes.len()].min(data.len() - at);
        out.push(Bytes::copy_from_slice(&data[at..at + n]));
        at += n;
        i += 1;
    }
    out
}

async fn read(store: &BlobStore, d: &Digest) -> Vec<u8> {
    let (s, _, _) = store.read(d, None).await.unwrap().unwrap_or_else(|| panic!("{d} is stored"));
    s.try_collect::<Vec<Bytes>>().await.unwrap().concat()
}

fn repo() -> RepositoryName {
    "suite/blobs".parse().unwrap()
}

/// Runs every case on `a` and `b`, two handles on the same objects and metadata; then [`assert_clean`].
pub async fn run(a: &BlobStore, b: &BlobStore) {
    tiny_chunks_across_a_part_boundary_on_two_replicas(a, b).await;
    concurrent_writers_one_refused(a, b).await;
    a_dead_writers_claim_expires(a, b).await;
    a_long_body_keeps_its_claim(a, b).await;
    a_failed_writer_corrupts_nothing(a, b).await;
    mismatch_and_too_large_leave_nothing_visible(a, b).await;
    empty_blob_and_ranges(a, b).await;
    monolithic_and_other_algorithm(a, b).await;
    content_collected_while_linking_is_stored_again(a, b).await;
    cancel_discards(a, b).await;
    put_stream(a, b).await;
    large_blob_of_several_parts(a, b).await;
    idle_uploads_are_purged(a, b).await;
    assert_clean(a).await;
}

/// Fails when anything is left under `uploads/` (staged bytes of finished or cancelled uploads).
pub async fn assert_clean(store: &BlobStore) {
    let left: Vec<Path> =
        store.store().list(Some(&Path::from("uploads"))).map_ok(|m| m.location).try_collect().await.unwrap();
    assert!(left.is_empty(), "the backend left garbage under uploads/: {left:?}");
}

/// Many 1-byte and odd-sized chunks, alternately through both replicas, gathered past a part boundary; the
/// upload is finished through the other replica than the one that started it.
pub async fn tiny_chunks_across_a_part_boundary_on_two_replicas(a: &BlobStore, b: &BlobStore) {
    let part = a.part_size as usize;
    let data = noise(part + part / 2 + 17, 1);
    let id = a.start_upload(&repo()).await.unwrap();
    let mut at = 0usize;
    let mut requests = 0;
    // 40 one-byte requests, then a request of one-byte chunks, then odd sizes up to the end.
    let mut sizes: Vec<usize> = vec![1; 40];
    sizes.push(0);
    // The second to last request crosses the first part boundary (the tail objects are read back into it).
    sizes.extend([7, 1, 4093, part / 3 + 11, 3, 2 * part / 3 + 5, 1]);
    for (i, n) in sizes.iter().enumerate() {
        let store = if i % 2 == 0 { a } else { b };
        let before = at as u64;
        let body = if *n == 0 {
            // One request made of 300 one-byte chunks.
            let end = (at + 300).min(data.len());
            let c = chunks_of(&data[at..end], &[1]);
            at = end;
            body(c)
        } else {
            let end = (at + n).min(data.len());
            let c = chunks_of(&data[at..end], &[1, 2, 3, 5]);
            at = end;
            body(c)
        };
        let size = store.append_upload(id, Some(before), body).await;
        let size = size.unwrap_or_else(|e| panic!("request {i}: {e}"));
        assert_eq!(size, at as u64);
        requests += 1;
    }
    assert!(requests > 40);
    let rest = Bytes::copy_from_slice(&data[at..]);
    let d = Digest::sha256_of(&data);
    let store = if requests % 2 == 0 { a } else { b };
    assert_eq!(store.stat(&d).await.unwrap(), None);
    let size = store.finish_upload(id, &d, Some(at as u64), body([rest])).await.unwrap();
    assert_eq!(size, data.len() as u64);
    assert!(a.upload_session(id).await.unwrap().is_none(), "the session is gone once finished");
    assert_eq!(read(a, &d).await, data, "read back through the other replica");
    assert_eq!(b.stat(&d).await.unwrap(), Some(data.len() as u64));
}

/// A second writer while the first one's body streams is refused (416), on either replica.
pub async fn concurrent_writers_one_refused(a: &BlobStore, b: &BlobStore) {
    let id = a.start_upload(&repo()).await.unwrap();
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let slow = futures::stream::once(async { Ok::<_, std::io::Error>(Bytes::from_static(b"first ")) })
        .chain(futures::stream::once(async move {
            let _ = rx.await;
            Ok(Bytes::from_static(b"writer"))
        }))
        .boxed();
    let writer = {
        let a = a.clone();
        tokio::spawn(async move { a.append_upload(id, Some(0), slow).await })
    };
    // Wait until the first writer holds the claim.
    for _ in 0..200 {
        if a.upload_session(id).await.unwrap().is_some_and(|(s, _)| s.busy()) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    for other in [a, b] {
        let err = other.append_upload(id, None, body([Bytes::from_static(b"x")])).await.unwrap_err();
        assert!(matches!(err, BlobError::RangeInvalid { have: 0, .. }), "a second writer is refused: {err}");
        let err = other.finish_upload(id, &Digest::sha256_of(b"x"), None, no_body()).await.unwrap_err();
        assert!(matches!(err, BlobError::RangeInvalid { .. }), "a finisher too: {err}");
    }
    tx.send(()).unwrap();
    assert_eq!(writer.await.unwrap().unwrap(), 12);
    let d = Digest::sha256_of(b"first writer");
    b.finish_upload(id, &d, Some(12), no_body()).await.unwrap();
    assert_eq!(read(a, &d).await, b"first writer");
}

/// A writer that dies mid-body (its task is gone, its claim not released) blocks others only until its claim
/// expires; then another replica continues from the session's size.
pub async fn a_dead_writers_claim_expires(a: &BlobStore, b: &BlobStore) {
    let short = a.replica().with_lease(Duration::from_millis(1500));
    let id = short.start_upload(&repo()).await.unwrap();
    short.append_upload(id, None, body([Bytes::from_static(b"kept ")])).await.unwrap();
    let stalled = futures::stream::once(async { Ok::<_, std::io::Error>(Bytes::from_static(b"lost")) })
        .chain(futures::stream::pending())
        .boxed();
    let dying = {
        let short = short.clone();
        tokio::spawn(async move { short.append_upload(id, None, stalled).await })
    };
    for _ in 0..200 {
        if b.upload_session(id).await.unwrap().is_some_and(|(s, _)| s.busy()) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    dying.abort();
    let err = b.append_upload(id, None, body([Bytes::from_static(b"x")])).await.unwrap_err();
    assert!(matches!(err, BlobError::RangeInvalid { have: 5, .. }), "the claim is live: {err}");
    tokio::time::sleep(Duration::from_millis(1700)).await;
    assert_eq!(b.append_upload(id, Some(5), body([Bytes::from_static(b"and more")])).await.unwrap(), 13);
    let d = Digest::sha256_of(b"kept and more");
    a.finish_upload(id, &d, None, no_body()).await.unwrap();
    assert_eq!(read(b, &d).await, b"kept and more");
}

/// A body that streams for longer than the lease keeps its claim (renewed as it goes): a second writer is
/// refused all along, and the first one's bytes are all recorded.
pub async fn a_long_body_keeps_its_claim(a: &BlobStore, b: &BlobStore) {
    let short = a.replica().with_lease(Duration::from_millis(600));
    let id = short.start_upload(&repo()).await.unwrap();
    let slow = futures::stream::iter(0..12u8)
        .then(|i| async move {
            tokio::time::sleep(Duration::from_millis(150)).await;
            Ok::<_, std::io::Error>(Bytes::from(vec![i; 1000]))
        })
        .boxed();
    let writer = {
        let short = short.clone();
        tokio::spawn(async move { short.append_upload(id, Some(0), slow).await })
    };
    let mut refused = 0;
    while !writer.is_finished() {
        tokio::time::sleep(Duration::from_millis(200)).await;
        // Starting at 0 as the first writer did: only a lost claim would let it in.
        match b.append_upload(id, Some(0), body([Bytes::from_static(b"x")])).await {
            Err(BlobError::RangeInvalid { have: 0, .. }) => refused += 1,
            Err(BlobError::RangeInvalid { have: 12_000, .. }) => {}
            other => panic!("a second writer got in while the first streamed: {other:?}"),
        }
    }
    assert_eq!(writer.await.unwrap().unwrap(), 12_000, "the first writer kept its claim past the lease");
    assert!(refused >= 5, "refused {refused} times");
    let data: Vec<u8> = (0..12u8).flat_map(|i| vec![i; 1000]).collect();
    let size = b.append_upload(id, Some(12_000), body([Bytes::from_static(b"!")])).await.unwrap();
    assert_eq!(size, 12_001);
    let mut all = data;
    all.push(b'!');
    let d = Digest::sha256_of(&all);
    a.finish_upload(id, &d, None, no_body()).await.unwrap();
    assert_eq!(read(b, &d).await, all);
}

/// A writer whose body fails (after gathering more than a part) changes nothing: the next continues at the
/// session's size, on the other replica, and the blob is exactly what the session recorded plus the rest.
pub async fn a_failed_writer_corrupts_nothing(a: &BlobStore, b: &BlobStore) {
    let part = a.part_size as usize;
    let data = noise(2 * part + 1000, 2);
    let id = a.start_upload(&repo()).await.unwrap();
    let first = 1000;
    a.append_upload(id, None, body(chunks_of(&data[..first], &[333]))).await.unwrap();
    // More than a part of junk, then the connection drops.
    let junk = Bytes::from(noise(part + 4321, 99));
    let err = b.append_upload(id, Some(first as u64), broken(junk)).await.unwrap_err();
    assert!(matches!(err, BlobError::Body(_)), "{err}");
    let (session, _) = a.upload_session(id).await.unwrap().unwrap();
    assert_eq!(session.size, first as u64, "the failed body changed nothing");
    assert!(!session.busy(), "the failed writer let go of its claim");
    let err = a.append_upload(id, Some(first as u64 + 1), body([Bytes::from_static(b"x")])).await.unwrap_err();
    assert!(matches!(err, BlobError::RangeInvalid { have: 1000, start: 1001 }), "never a gap: {err}");
    a.append_upload(id, Some(first as u64), body(chunks_of(&data[first..], &[1 << 20, 3]))).await.unwrap();
    let d = Digest::sha256_of(&data);
    b.finish_upload(id, &d, Some(data.len() as u64), no_body()).await.unwrap();
    assert_eq!(read(a, &d).await, data);
}

/// A digest that does not match, and a body past the limit, leave nothing visible (and nothing staged).
pub async fn mismatch_and_too_large_leave_nothing_visible(a: &BlobStore, b: &BlobStore) {
    let part = a.part_size as usize;
    for data in [b"short body".to_vec(), noise(part + 10, 3)] {
        let claimed = Digest::sha256_of(b"something else");
        // Chunked: the digest is only known at the end.
        let id = a.start_upload(&repo()).await.unwrap();
        a.append_upload(id, None, body(chunks_of(&data, &[4096]))).await.unwrap();
        let err = b.finish_upload(id, &claimed, None, no_body()).await.unwrap_err();
        assert!(matches!(err, BlobError::DigestMismatch { .. }), "{err}");
        assert!(a.upload_session(id).await.unwrap().is_none(), "the session is discarded");
        assert!(matches!(a.append_upload(id, None, body([])).await, Err(BlobError::UploadUnknown(_))));
        // Monolithic: the digest is known before the first byte.
        let id = a.start_upload(&repo()).await.unwrap();
        let err = a.finish_upload(id, &claimed, None, body(chunks_of(&data, &[4096]))).await.unwrap_err();
        assert!(matches!(err, BlobError::DigestMismatch { .. }), "{err}");
        for s in [a, b] {
            assert_eq!(s.stat(&claimed).await.unwrap(), None);
            assert!(s.read(&claimed, None).await.unwrap().is_none());
            assert_eq!(s.stat(&Digest::sha256_of(&data)).await.unwrap(), None);
        }
    }
    let data = noise(a.part_size as usize + 10, 4);
    let d = Digest::sha256_of(&data);
    let err = a.put_stream(&d, 100, body(chunks_of(&data, &[64]))).await.unwrap_err();
    assert!(matches!(err, BlobError::TooLarge(100)), "{err}");
    let err = a.put_stream(&d, data.len() as u64 - 1, body([Bytes::from(data.clone())])).await.unwrap_err();
    assert!(matches!(err, BlobError::TooLarge(_)), "{err}");
    assert_eq!(b.stat(&d).await.unwrap(), None, "nothing visible");
}

/// An empty blob; byte ranges of a stored one.
pub async fn empty_blob_and_ranges(a: &BlobStore, b: &BlobStore) {
    let empty = Digest::sha256_of(b"");
    let id = a.start_upload(&repo()).await.unwrap();
    assert_eq!(a.append_upload(id, None, body([])).await.unwrap(), 0);
    assert_eq!(b.finish_upload(id, &empty, Some(0), body([Bytes::new()])).await.unwrap(), 0);
    assert_eq!(a.stat(&empty).await.unwrap(), Some(0));
    assert_eq!(b.read_all(&empty).await.unwrap().unwrap().len(), 0);

    let data = noise(a.part_size as usize + 99, 5);
    let d = Digest::sha256_of(&data);
    let id = a.start_upload(&repo()).await.unwrap();
    a.append_upload(id, None, body(chunks_of(&data, &[1 << 20]))).await.unwrap();
    b.finish_upload(id, &d, None, no_body()).await.unwrap();
    let len = data.len() as u64;
    for range in [0..1, 5..11, len - 1..len, 1000..len - 1000, 0..len] {
        for s in [a, b] {
            let (stream, served, total) = s.read(&d, Some(range.clone())).await.unwrap().unwrap();
            let got = stream.try_collect::<Vec<Bytes>>().await.unwrap().concat();
            assert_eq!((served.clone(), total), (range.clone(), len));
            assert!(got == data[range.start as usize..range.end as usize], "range {range:?}");
        }
    }
    let small = b"hello, small world".to_vec();
    let d = Digest::sha256_of(&small);
    let id = a.start_upload(&repo()).await.unwrap();
    a.append_upload(id, None, body([Bytes::from(small.clone())])).await.unwrap();
    a.finish_upload(id, &d, None, no_body()).await.unwrap();
    assert_eq!(b.read_all(&d).await.unwrap().unwrap(), small);
    let (s, r, total) = b.read(&d, Some(7..12)).await.unwrap().unwrap();
    assert_eq!((s.try_collect::<Vec<Bytes>>().await.unwrap().concat(), r, total), (b"small".to_vec(), 7..12, 18));
}

/// A monolithic upload (digest known before the first byte, more than a part); a chunked upload finished with
/// another digest algorithm than the one hashed while receiving; an upload of content already stored.
pub async fn monolithic_and_other_algorithm(a: &BlobStore, b: &BlobStore) {
    let data = noise(a.part_size as usize * 2 + 3, 6);
    let d = Digest::sha256_of(&data);
    let id = a.start_upload(&repo()).await.unwrap();
    a.finish_upload(id, &d, Some(0), body(chunks_of(&data, &[1 << 20, 7]))).await.unwrap();
    assert_eq!(read(b, &d).await, data);

    let data = noise(a.part_size as usize + 5, 7);
    let d512 = Digest::of(Algorithm::Sha512, &data);
    let id = a.start_upload(&repo()).await.unwrap();
    a.append_upload(id, None, body(chunks_of(&data, &[1 << 20]))).await.unwrap();
    b.finish_upload(id, &d512, None, no_body()).await.unwrap();
    assert_eq!(read(a, &d512).await, data);
    // Wrong, in the other algorithm: nothing visible.
    let id = a.start_upload(&repo()).await.unwrap();
    a.append_upload(id, None, body([Bytes::from_static(b"abc")])).await.unwrap();
    let wrong = Digest::of(Algorithm::Sha512, b"abd");
    assert!(matches!(b.finish_upload(id, &wrong, None, no_body()).await, Err(BlobError::DigestMismatch { .. })));
    assert_eq!(a.stat(&wrong).await.unwrap(), None);

    // The same content again, chunked: the stored blob stays, the upload's bytes go.
    let id = b.start_upload(&repo()).await.unwrap();
    b.append_upload(id, None, body([Bytes::from(data.clone())])).await.unwrap();
    b.finish_upload(id, &d512, None, no_body()).await.unwrap();
    assert_eq!(read(b, &d512).await, data);
}

/// An upload of content stored already keeps its own bytes until its link is committed: when a garbage
/// collection sweep deletes the content between the upload's check and its link (simulated inside the link), the
/// upload stores its copy (monolithic and chunked alike), and nothing of it is left staged.
pub async fn content_collected_while_linking_is_stored_again(a: &BlobStore, b: &BlobStore) {
    for (seed, chunked) in [(21, false), (22, true)] {
        let data = noise(a.part_size as usize + 11, seed);
        let d = Digest::sha256_of(&data);
        let id = a.start_upload(&repo()).await.unwrap();
        a.finish_upload(id, &d, Some(0), body([Bytes::from(data.clone())])).await.unwrap();

        let id = b.start_upload(&repo()).await.unwrap();
        let last = if chunked {
            b.append_upload(id, None, body(chunks_of(&data, &[1 << 20]))).await.unwrap();
            body([])
        } else {
            body([Bytes::from(data.clone())])
        };
        let (len, d2) = (data.len() as u64, d.clone());
        let sweep = |size: u64| async move {
            assert_eq!(size, len);
            a.delete_content(&d2).await.unwrap();
            assert!(!a.exists_now(&d2).await.unwrap(), "the sweep deleted it");
            Ok::<(), std::convert::Infallible>(())
        };
        let start = if chunked { None } else { Some(0) };
        let size = b.finish_upload_linked(id, &d, start, last, sweep).await.unwrap();
        assert_eq!(size, data.len() as u64);
        assert_eq!(read(a, &d).await, data, "stored again by the upload (chunked: {chunked})");
    }
}

/// Cancelling discards the session and everything staged, also while parts were uploaded.
pub async fn cancel_discards(a: &BlobStore, b: &BlobStore) {
    let data = noise(a.part_size as usize + 100, 8);
    let id = a.start_upload(&repo()).await.unwrap();
    a.append_upload(id, None, body(chunks_of(&data, &[1 << 20]))).await.unwrap();
    b.cancel_upload(id).await.unwrap();
    assert!(matches!(a.append_upload(id, None, body([])).await, Err(BlobError::UploadUnknown(_))));
    assert!(matches!(a.cancel_upload(id).await, Err(BlobError::UploadUnknown(_))));
    assert!(matches!(b.cancel_upload(UploadId::random()).await, Err(BlobError::UploadUnknown(_))));
}

/// A body whose digest is known before it starts (pull-through).
pub async fn put_stream(a: &BlobStore, b: &BlobStore) {
    let data = noise(a.part_size as usize + 1, 9);
    let d = Digest::sha256_of(&data);
    let wrong = Digest::sha256_of(b"not it");
    let mut told = false;
    let err = a
        .put_stream_then(&wrong, data.len() as u64, body(chunks_of(&data, &[100_000])), || told = true)
        .await
        .unwrap_err();
    assert!(matches!(err, BlobError::DigestMismatch { .. }), "{err}");
    assert!(!told, "bytes that do not verify are not said to");
    assert_eq!(b.stat(&wrong).await.unwrap(), None);
    // A digest that matches fewer bytes than announced is not the blob either.
    let short = a.put_stream_then(&d, data.len() as u64 + 1, body([Bytes::from(data.clone())]), || told = true);
    assert!(matches!(short.await.unwrap_err(), BlobError::DigestMismatch { .. }));
    assert!(!told);
    a.put_stream_then(&d, data.len() as u64, body(chunks_of(&data, &[100_000])), || told = true).await.unwrap();
    assert!(told, "verified bytes are said to be before they are stored");
    assert_eq!(read(b, &d).await, data);
    let e = Digest::sha256_of(b"");
    b.put_stream(&e, 0, body([])).await.unwrap();
    assert_eq!(a.stat(&e).await.unwrap(), Some(0));
}

/// 20 MiB (several parts) from 1 MiB and 3-byte chunks in a few requests on both replicas, read back
/// byte-exact; then deleted.
pub async fn large_blob_of_several_parts(a: &BlobStore, b: &BlobStore) {
    let data = noise(20 << 20, 10);
    let d = Digest::sha256_of(&data);
    let id = a.start_upload(&repo()).await.unwrap();
    let cuts = [0, 3 << 20, (7 << 20) + 5, 13 << 20, data.len() - 3];
    for (i, w) in cuts.windows(2).enumerate() {
        let store = if i % 2 == 0 { a } else { b };
        let chunks = chunks_of(&data[w[0]..w[1]], &[1 << 20, 3]);
        assert_eq!(store.append_upload(id, Some(w[0] as u64), body(chunks)).await.unwrap(), w[1] as u64);
    }
    let last = Bytes::copy_from_slice(&data[cuts[4]..]);
    b.finish_upload(id, &d, Some(cuts[4] as u64), body([last])).await.unwrap();
    let (stream, _, total) = a.read(&d, None).await.unwrap().unwrap();
    assert_eq!(total, data.len() as u64);
    let mut at = 0usize;
    let mut stream = stream;
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.unwrap();
        assert!(chunk[..] == data[at..at + chunk.len()], "bytes differ at {at}");
        at += chunk.len();
    }
    assert_eq!(at, data.len());
    // On the filesystem the first read of a blob goes around the page cache and the next through it: the same
    // bytes either way, whole or in part, on either replica.
    assert!(read(b, &d).await == data, "a second read of the blob differs");
    let range = (5 << 20) + 3..(17 << 20) + 1;
    let (stream, served, _) = b.read(&d, Some(range.clone())).await.unwrap().unwrap();
    assert_eq!(served, range);
    let got: Vec<Bytes> = stream.try_collect().await.unwrap();
    assert!(got.concat() == data[range.start as usize..range.end as usize], "a range of the blob differs");
    a.delete(&d).await.unwrap();
    assert_eq!(a.stat(&d).await.unwrap(), None);
    assert!(a.read(&d, None).await.unwrap().is_none());
}

/// Objects under `uploads/<id>/`.
async fn staged_objects(store: &BlobStore, id: UploadId) -> Vec<Path> {
    let dir = crate::paths::upload_dir(id);
    store.store().list(Some(&dir)).map_ok(|m| m.location).try_collect().await.unwrap()
}

/// An upload untouched for longer than the TTL is purged with its staged bytes (more than a part: a multipart
/// upload and a tail on multipart stores), and so is a staging folder no session names; an upload whose writer
/// holds a live claim (though it was last touched before the cutoff) and one touched within the TTL are kept and
/// finish normally.
pub async fn idle_uploads_are_purged(a: &BlobStore, b: &BlobStore) {
    let ttl = Duration::from_millis(1200);
    let idle = a.start_upload(&repo()).await.unwrap();
    let data = noise(a.part_size as usize + 777, 11);
    a.append_upload(idle, None, body(chunks_of(&data, &[1 << 20]))).await.unwrap();
    assert!(!staged_objects(a, idle).await.is_empty(), "bytes are staged");
    // A writer that streams (its claim live) but was last touched before the cutoff.
    let active = a.start_upload(&repo()).await.unwrap();
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let slow = futures::stream::once(async { Ok::<_, std::io::Error>(Bytes::from_static(b"still ")) })
        .chain(futures::stream::once(async move {
            let _ = rx.await;
            Ok(Bytes::from_static(b"writing"))
        }))
        .boxed();
    let writer = {
        let a = a.clone();
        tokio::spawn(async move { a.append_upload(active, Some(0), slow).await })
    };
    for _ in 0..200 {
        if a.upload_session(active).await.unwrap().is_some_and(|(s, _)| s.busy()) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // Staged bytes a crash left behind, named by no session.
    let orphan = UploadId::random();
    let orphan_object = crate::paths::upload_tail(orphan, 0);
    a.store().put(&orphan_object, Bytes::from_static(b"left by a crash").into()).await.unwrap();
    tokio::time::sleep(ttl + Duration::from_millis(300)).await;
    let recent = b.start_upload(&repo()).await.unwrap();
    b.append_upload(recent, None, body([Bytes::from_static(b"recent")])).await.unwrap();

    let report = b.purge_uploads(ttl).await.unwrap();
    assert_eq!(report.sessions, [idle], "only the idle upload is purged");
    assert_eq!(report.bytes, data.len() as u64);
    assert_eq!(report.orphans, [orphan], "the orphaned staging folder is removed");
    assert!(a.upload_session(idle).await.unwrap().is_none());
    assert!(matches!(a.append_upload(idle, None, body([])).await, Err(BlobError::UploadUnknown(_))));
    assert!(staged_objects(a, idle).await.is_empty(), "the idle upload's staged bytes are gone");
    assert!(staged_objects(a, orphan).await.is_empty(), "the orphan's bytes are gone");
    if let Some(root) = a.local_root() {
        assert!(!root.join(crate::paths::upload_dir(idle).as_ref()).exists(), "the staging directory is gone");
    }
    assert_eq!(b.purge_uploads(ttl).await.unwrap(), Default::default(), "nothing more to purge");

    tx.send(()).unwrap();
    assert_eq!(writer.await.unwrap().unwrap(), 13, "the active writer was not disturbed");
    let d = Digest::sha256_of(b"still writing");
    b.finish_upload(active, &d, Some(13), no_body()).await.unwrap();
    assert_eq!(read(a, &d).await, b"still writing");
    let d = Digest::sha256_of(b"recent");
    a.finish_upload(recent, &d, None, no_body()).await.unwrap();
    assert_eq!(read(b, &d).await, b"recent");
}
