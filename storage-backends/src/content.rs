//! What the blob store holds, as the garbage collector sees it: a streamed listing of every object under `blobs/`
//! ([`BlobStore::list_content`]: content-addressed blobs and the objects of chunked uploads finished on S3), the
//! location records ([`BlobStore::list_locations`]) and the deletions GC makes ([`BlobStore::delete_content`],
//! [`BlobStore::delete_object`]). Only `registry::gc` (and tests and benches seeding or counting content) call these;
//! they know nothing of references: deciding what may go is the caller's.

use chrono::{DateTime, Utc};
use futures::stream::BoxStream;
use futures::{StreamExt, TryStreamExt};
use names::{Digest, UploadId};
use object_store::path::Path;
use object_store::ObjectStoreExt;

use crate::blobs::{BlobError, BlobStore, ObjectLocation};
use crate::meta::MetadataStoreExt;
use crate::{keys, paths};

/// Location records read per page.
const PAGE: usize = 1000;

/// What an object under `blobs/` is.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum ContentName {
    /// At the content-addressed path of this digest ([`paths::blob`]).
    Blob(Digest),
    /// The object of a chunked upload finished on a multipart store ([`paths::uploaded`]); a location record
    /// names it once the upload verified its digest.
    Uploaded(UploadId),
}

/// One object of the blob store's content area.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredObject {
    pub name: ContentName,
    pub path: String,
    pub size: u64,
    pub last_modified: DateTime<Utc>,
}

/// What [`ContentName`] an object path under `blobs/` is, if any. Other names there (a staging file beside its
/// target while it is being written, `<hex>#<part>`) are none: nobody may delete them from a listing.
pub fn content_name(path: &str) -> Option<ContentName> {
    let mut parts = path.split('/');
    if parts.next()? != "blobs" {
        return None;
    }
    let name = match (parts.next()?, parts.next()?, parts.next()) {
        ("uploaded", id, None) => ContentName::Uploaded(id.parse().ok()?),
        (algorithm, shard, Some(hex)) => {
            let digest: Digest = format!("{algorithm}:{hex}").parse().ok()?;
            if !hex.starts_with(shard) {
                return None;
            }
            ContentName::Blob(digest)
        }
        _ => return None,
    };
    match parts.next() {
        None => Some(name),
        Some(_) => None,
    }
}

impl BlobStore {
    /// Every object under `blobs/` with its size and last modification, streamed (the object store pages the
    /// listing: 1,000 keys a request on S3). Objects of other names (staging files) are left out; an error of the
    /// listing ends the stream with it.
    pub fn list_content(&self) -> BoxStream<'static, Result<StoredObject, BlobError>> {
        self.store()
            .list(Some(&Path::from("blobs")))
            .map_err(BlobError::from)
            .try_filter_map(|meta| async move {
                let path = meta.location.to_string();
                Ok(content_name(&path).map(|name| StoredObject {
                    name,
                    path,
                    size: meta.size,
                    last_modified: meta.last_modified,
                }))
            })
            .boxed()
    }

    /// Every location record (`blob-objects/<digest>`) with its version, read a page at a time.
    pub async fn list_locations(&self) -> Result<Vec<(Digest, ObjectLocation, u64)>, BlobError> {
        let meta = self.meta()?;
        let mut out = Vec::new();
        let mut after: Option<String> = None;
        loop {
            let page = meta.list_json::<ObjectLocation>("blob-objects/", after.as_deref(), PAGE).await?;
            let Some((last, _, _)) = page.last() else { break };
            after = Some(last.clone());
            for (key, location, version) in page {
                if let Some(d) = keys::digest_of_key(&key) {
                    out.push((d, location, version));
                }
            }
        }
        Ok(out)
    }

    /// Whether `digest`'s content is stored now, as the stores have it (no cache: the garbage collector of another
    /// replica may have deleted it a moment ago).
    pub async fn exists_now(&self, digest: &Digest) -> Result<bool, BlobError> {
        if self.object_modified(paths::blob(digest).as_ref()).await?.is_some() {
            return Ok(true);
        }
        match self.meta()?.get_latest_json::<ObjectLocation>(&keys::blob_object(digest)).await? {
            Some((location, _)) => Ok(self.object_modified(&location.path).await?.is_some()),
            None => Ok(false),
        }
    }

    /// The last modification of the object at `path`, `None` when there is none.
    pub async fn object_modified(&self, path: &str) -> Result<Option<DateTime<Utc>>, BlobError> {
        match self.store().head(&Path::from(path)).await {
            Ok(meta) => Ok(Some(meta.last_modified)),
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    /// Deletes the object at `digest`'s content-addressed path (not what a location record names) and forgets what
    /// this handle cached of the digest. Absent is not an error.
    pub async fn delete_content(&self, digest: &Digest) -> Result<(), BlobError> {
        self.forget(digest);
        self.delete_object(paths::blob(digest).as_ref()).await
    }

    /// Deletes the object at `path`. Absent is not an error.
    pub async fn delete_object(&self, path: &str) -> Result<(), BlobError> {
        match self.store().delete(&Path::from(path)).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(e.into()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_of_content_objects() {
        let d = Digest::sha256_of(b"x");
        assert_eq!(content_name(paths::blob(&d).as_ref()), Some(ContentName::Blob(d.clone())));
        let id: UploadId = "0b4a7e0e-1d2c-4e0f-9d3a-2f1e5c6b7a80".parse().unwrap();
        assert_eq!(content_name(paths::uploaded(id).as_ref()), Some(ContentName::Uploaded(id)));
        let staging = format!("{}#{}", paths::blob(&d), paths::new_part_name(0));
        assert_eq!(content_name(&staging), None, "a staging file is never content");
        assert_eq!(content_name(&format!("blobs/sha256/zz/{}", d.hex())), None, "wrong shard");
        assert_eq!(content_name(&format!("{}/x", paths::blob(&d))), None);
        assert_eq!(content_name("uploads/x/data"), None);
    }
}
