//! The blob store's object layout, in one place. Every object path is built here by a pure function.
//!
//! ```text
//! blobs/
//!   sha256/<hex[0..2]>/<hex>          content-addressed blob or manifest bytes (only verified content)
//!   sha512/<hex[0..2]>/<hex>
//!   uploaded/<upload-id>              a chunked upload finished on a multipart store (S3): its verified bytes,
//!                                     never served by this path itself, only through the location record
//!                                     `blob-objects/<digest>` in the metadata store (see `keys::blob_object`)
//! uploads/
//!   <upload-id>/data                  a chunked or monolithic upload's bytes, each chunk written at its offset by
//!                                     the one writer holding the upload's lock (see `BlobStore::lock_upload`)
//!   <upload-id>/failed                marker: a background writeback of `data` failed, the upload cannot commit
//!   <upload-id>/tail-<offset:020>-<nonce>
//!                                     multipart stores: the bytes after the upload's last full part, starting at
//!                                     <offset>, kept between requests (the session names the current one; a nonce
//!                                     so that a writer never overwrites the tail the session still names)
//! ```
//! Nothing under `uploads/` is ever served; a blob appears under `blobs/` only after its digest was verified.

use names::{Digest, UploadId};
use object_store::path::Path;

/// Where the verified content of `digest` lives.
pub fn blob(digest: &Digest) -> Path {
    let hex = digest.hex();
    Path::from(format!("blobs/{}/{}/{}", digest.algorithm().as_str(), &hex[..2], hex))
}

/// Where a chunked upload finished on a multipart store keeps its bytes (named by a location record).
pub fn uploaded(id: UploadId) -> Path {
    Path::from(format!("blobs/uploaded/{id}"))
}

/// A fresh object for the unfinished part of upload `id`, whose bytes start at `offset`.
pub fn upload_tail(id: UploadId, offset: u64) -> Path {
    Path::from(format!("uploads/{id}/tail-{}", new_part_name(offset)))
}

/// The folder holding an upload's staged parts.
pub fn upload_dir(id: UploadId) -> Path {
    Path::from(format!("uploads/{id}"))
}

/// The single staging object of upload `id`, written chunk by chunk at increasing offsets.
pub fn upload_data(id: UploadId) -> Path {
    Path::from(format!("uploads/{id}/data"))
}

/// Left by a background writeback of upload `id`'s staged bytes that failed: the upload can no longer commit.
pub fn upload_failed(id: UploadId) -> Path {
    Path::from(format!("uploads/{id}/failed"))
}

/// A fresh name for bytes that start at `offset`: the offset and a nonce.
pub fn new_part_name(offset: u64) -> String {
    format!("{offset:020}-{:08x}", rand_nonce())
}

fn rand_nonce() -> u32 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos()));
    h.finish() as u32
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layout() {
        let d: Digest = "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855".parse().unwrap();
        assert_eq!(
            blob(&d).as_ref(),
            "blobs/sha256/e3/e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
        let id: UploadId = "0b4a7e0e-1d2c-4e0f-9d3a-2f1e5c6b7a80".parse().unwrap();
        let part = new_part_name(42);
        assert!(part.starts_with("00000000000000000042-"));
        assert_ne!(part, new_part_name(42));
        assert_eq!(upload_data(id).as_ref(), "uploads/0b4a7e0e-1d2c-4e0f-9d3a-2f1e5c6b7a80/data");
        let tail = upload_tail(id, 7);
        assert!(tail.as_ref().starts_with("uploads/0b4a7e0e-1d2c-4e0f-9d3a-2f1e5c6b7a80/tail-00000000000000000007-"));
        assert_ne!(tail, upload_tail(id, 7), "a new tail never overwrites the one a session names");
        assert_eq!(uploaded(id).as_ref(), "blobs/uploaded/0b4a7e0e-1d2c-4e0f-9d3a-2f1e5c6b7a80");
    }
}
