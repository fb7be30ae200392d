//! The metadata key layout, in one place. Every key is built here by a pure function from typed names.
//!
//! ```text
//! imagestreams/<ns>/<stream>                      ImageStream object: metadata and spec (status.tags live below)
//! istags/<ns>/<stream>/<tag>                      one tag's history (NamedTagEventList), newest event first
//! images/<digest>                                 Image object (cluster-scoped, immutable)
//! links/<ns>/<stream>/blobs/<digest>              a blob pushed or mounted into the repository
//! links/<ns>/<stream>/manifests/<digest>          a manifest stored in the repository
//! referrers/<ns>/<stream>/<subject>/<digest>      a manifest of the repository whose `subject` is <subject>
//! uploads/<upload-id>                             an upload session in progress
//! ```
//! Lexical key order is the order users see (catalog and tags list are sorted), so listing a prefix from a
//! `last` key is the pagination.

use names::{Digest, Namespace, RepositoryName, TagName, UploadId};

pub const IMAGESTREAMS: &str = "imagestreams/";

pub fn imagestream(repo: &RepositoryName) -> String {
    format!("imagestreams/{repo}")
}

pub fn imagestreams_in(ns: &Namespace) -> String {
    format!("imagestreams/{ns}/")
}

/// The repository named by an `imagestreams/` key, if it is one.
pub fn repository_of_imagestream_key(key: &str) -> Option<RepositoryName> {
    key.strip_prefix(IMAGESTREAMS)?.parse().ok()
}

pub fn istag(repo: &RepositoryName, tag: &TagName) -> String {
    format!("istags/{repo}/{tag}")
}

pub fn istags_of(repo: &RepositoryName) -> String {
    format!("istags/{repo}/")
}

pub fn image(digest: &Digest) -> String {
    format!("images/{digest}")
}

pub fn blob_link(repo: &RepositoryName, digest: &Digest) -> String {
    format!("links/{repo}/blobs/{digest}")
}

pub fn manifest_link(repo: &RepositoryName, digest: &Digest) -> String {
    format!("links/{repo}/manifests/{digest}")
}

pub fn links_of(repo: &RepositoryName) -> String {
    format!("links/{repo}/")
}

pub fn referrer(repo: &RepositoryName, subject: &Digest, digest: &Digest) -> String {
    format!("referrers/{repo}/{subject}/{digest}")
}

pub fn referrers_of(repo: &RepositoryName, subject: &Digest) -> String {
    format!("referrers/{repo}/{subject}/")
}

pub fn upload(id: UploadId) -> String {
    format!("uploads/{id}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layout() {
        let repo: RepositoryName = "ns/app".parse().unwrap();
        let d = Digest::sha256_of(b"");
        assert_eq!(imagestream(&repo), "imagestreams/ns/app");
        assert_eq!(repository_of_imagestream_key(&imagestream(&repo)), Some(repo.clone()));
        assert_eq!(istag(&repo, &"v1".parse().unwrap()), "istags/ns/app/v1");
        assert!(istag(&repo, &"v1".parse().unwrap()).starts_with(&istags_of(&repo)));
        assert_eq!(blob_link(&repo, &d), format!("links/ns/app/blobs/{d}"));
        assert!(manifest_link(&repo, &d).starts_with(&links_of(&repo)));
        assert!(referrer(&repo, &d, &d).starts_with(&referrers_of(&repo, &d)));
        // A stream named like another's prefix does not leak into its listings.
        let other: RepositoryName = "ns/app2".parse().unwrap();
        assert!(!istag(&other, &"v1".parse().unwrap()).starts_with(&istags_of(&repo)));
    }
}
