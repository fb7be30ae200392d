//! The blob store's object layout, in one place. Every object path is built here by a pure function.
//!
//! ```text
//! blobs/
//!   sha256/<hex[0..2]>/<hex>          content-addressed blob or manifest bytes (only verified content)
//!   sha512/<hex[0..2]>/<hex>
//! uploads/
//!   <upload-id>/<offset:020>          one staged part per PATCH/PUT body, named by its start offset
//! ```
//! Nothing under `uploads/` is ever served; a blob appears under `blobs/` only after its digest was verified.

use names::{Digest, UploadId};
use object_store::path::Path;

/// Where the verified content of `digest` lives.
pub fn blob(digest: &Digest) -> Path {
    let hex = digest.hex();
    Path::from(format!("blobs/{}/{}/{}", digest.algorithm().as_str(), &hex[..2], hex))
}

/// The folder holding an upload's staged parts.
pub fn upload_dir(id: UploadId) -> Path {
    Path::from(format!("uploads/{id}"))
}

/// The staged part of upload `id` that starts at byte `offset`.
pub fn upload_part(id: UploadId, offset: u64) -> Path {
    Path::from(format!("uploads/{id}/{offset:020}"))
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
        assert_eq!(upload_part(id, 42).as_ref(), "uploads/0b4a7e0e-1d2c-4e0f-9d3a-2f1e5c6b7a80/00000000000000000042");
        assert!(upload_part(id, 0).as_ref().starts_with(upload_dir(id).as_ref()));
    }
}
