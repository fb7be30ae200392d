//! The metadata key layout, in one place. Every key is built here by a pure function from typed names.
//!
//! ```text
//! imagestreams/<ns>/<stream>                      ImageStream object: metadata and spec (status.tags live below)
//! istags/<ns>/<stream>/<tag>                      one tag's history (NamedTagEventList), newest event first
//! importconditions/<ns>/<stream>/<tag>           the conditions of a tag's last failed import (gone on success)
//! images/<digest>                                 Image object (cluster-scoped, immutable)
//! manifest-content/<digest>                       a manifest's bytes (content-addressed, shared by repositories)
//! blob-objects/<digest>                           where a blob's verified bytes are when not at their content-addressed
//!                                                 path (a chunked upload finished on S3): `{path, size}`, immutable
//! links/<ns>/<stream>/blobs/<digest>              a blob pushed or mounted into the repository
//! links/<ns>/<stream>/manifests/<digest>          a manifest stored in the repository
//! referrers/<ns>/<stream>/<subject>/<digest>      a manifest of the repository whose `subject` is <subject>
//! uploads/<upload-id>                             an upload session in progress: size, hash state, writer lease,
//!                                                 multipart id, part ETags and tail (`storage_backends::uploads`)
//! namespaces/<ns>                                 a namespace (project): creator, creation time
//! users/<user>                                    a user and its groups
//! serviceaccounts/<ns>/<sa>                       a service account of a namespace
//! tokens/<token-id>                               an API token: owner, expiry, SHA-256 of the secret (never the secret)
//! token-hashes/<sha256-hex>                       the id of the token whose secret hashes to <sha256-hex>
//! rolebindings/<ns>/<role>                        the subjects bound to <role> in <ns>
//! clusterrolebindings/<role>                      the subjects bound to <role> in every namespace
//! signing-keys/<kid>                              a JWT signing key pair (PKCS#8), named by its `kid`
//! webhooks/cursor                                 the revision up to which webhooks were told every tag change
//! secrets/<ns>/<name>                             a pull secret (`.dockerconfigjson`) of a namespace
//! limitranges/<ns>/<name>                         a LimitRange of a namespace (`openshift.io/Image` `max.storage`
//!                                                 caps the size of an image pushed there)
//! leases/<name>                                   the holder of a lease (etcd only; attached to an etcd lease)
//! settings/read-only                              the run-time read-only switch (`registry::service::readonly`)
//! imageconfig/<resource>/<name>                   a cluster-wide image policy object (`registry::imagepolicy`): the
//!                                                 `Image` `cluster`, ImageDigestMirrorSets, ImageTagMirrorSets,
//!                                                 ImageContentSourcePolicies (<resource> is the API's plural)
//! gc/candidates/<digest>                          when a GC sweep first saw <digest>'s stored content unreferenced
//! gc/deleting/<digest>                            tombstone: a GC sweep is deleting <digest> now; a link to <digest>
//!                                                 is written only while it is absent (`registry::gc`)
//! ```
//! Identity names (users, service accounts, roles, token ids, key ids) come from `auth`'s typed names, which only
//! admit characters that cannot break out of a key segment.
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

pub const ISTAGS: &str = "istags/";

pub fn istags_in(ns: &Namespace) -> String {
    format!("istags/{ns}/")
}

/// The repository and tag named by an `istags/` key, if it is one.
pub fn istag_of_key(key: &str) -> Option<(RepositoryName, TagName)> {
    let (repo, tag) = key.strip_prefix(ISTAGS)?.rsplit_once('/')?;
    Some((repo.parse().ok()?, tag.parse().ok()?))
}

pub fn import_conditions(repo: &RepositoryName, tag: &TagName) -> String {
    format!("importconditions/{repo}/{tag}")
}

pub fn import_conditions_of(repo: &RepositoryName) -> String {
    format!("importconditions/{repo}/")
}

/// The repository and tag named by an `importconditions/` key, if it is one.
pub fn import_conditions_of_key(key: &str) -> Option<(RepositoryName, TagName)> {
    let (repo, tag) = key.strip_prefix("importconditions/")?.rsplit_once('/')?;
    Some((repo.parse().ok()?, tag.parse().ok()?))
}

/// A manifest's bytes live in the metadata store, written in the same group-committed transaction as the
/// mapping that records it (one file and two fsyncs per manifest cost more than the manifest itself).
pub fn manifest_content(digest: &Digest) -> String {
    format!("manifest-content/{digest}")
}

/// Where `digest`'s bytes are stored when not at the content-addressed path (see `storage_backends::blobs`).
pub fn blob_object(digest: &Digest) -> String {
    format!("blob-objects/{digest}")
}

/// Keys the change feed does not carry: content nobody watches, which would only fill the feed's buffer
/// (a manifest may be megabytes).
pub fn is_unwatched(key: &str) -> bool {
    key.starts_with("manifest-content/")
        || key.starts_with("blob-objects/")
        || key == WEBHOOK_CURSOR
        || key.starts_with(LEASES)
        || key.starts_with(GC)
}

/// Everything the garbage collector keeps for itself.
pub const GC: &str = "gc/";

pub const GC_CANDIDATES: &str = "gc/candidates/";

/// When a sweep first found `digest`'s content referenced by nothing (the grace period counts from there).
pub fn gc_candidate(digest: &Digest) -> String {
    format!("gc/candidates/{digest}")
}

pub const GC_DELETING: &str = "gc/deleting/";

/// The tombstone a sweep writes before it deletes `digest`'s content. Every writer of a link to `digest` expects it
/// absent in the transaction that writes the link.
pub fn gc_deleting(digest: &Digest) -> String {
    format!("gc/deleting/{digest}")
}

pub const GC_PULLED: &str = "gc/pulled/";

/// When a blob of the pull-through cache was last pulled (recorded at most once a minute per replica), for the
/// cache's least-recently-pulled eviction.
pub fn gc_pulled(digest: &Digest) -> String {
    format!("gc/pulled/{digest}")
}

/// The digest a key under one of the `gc/` prefixes, `links/…/blobs/`, `links/…/manifests/`, `images/`,
/// `manifest-content/` or `blob-objects/` names (its last segment), if it is one.
pub fn digest_of_key(key: &str) -> Option<Digest> {
    key.rsplit_once('/')?.1.parse().ok()
}

pub const LEASES: &str = "leases/";

/// Who holds the lease `name` ([`crate::meta::MetadataStore::elect`]); written by the etcd store only.
pub fn lease(name: &str) -> String {
    format!("leases/{name}")
}

/// The revision up to which every tag change was handed to every webhook.
pub const WEBHOOK_CURSOR: &str = "webhooks/cursor";

/// Keys whose deletion the store remembers for a while, so that a watch from an older revision reports it (the
/// stream objects and tag histories that `ADDED`/`MODIFIED`/`DELETED` events are made of).
pub fn keeps_tombstone(key: &str) -> bool {
    key.starts_with(IMAGESTREAMS) || key.starts_with(ISTAGS) || key.starts_with(IMAGE_CONFIG)
}

pub const IMAGES: &str = "images/";

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

pub fn referrers_in(repo: &RepositoryName) -> String {
    format!("referrers/{repo}/")
}

pub const UPLOADS: &str = "uploads/";

pub fn upload(id: UploadId) -> String {
    format!("uploads/{id}")
}

/// The run-time read-only switch every replica follows.
pub const READ_ONLY: &str = "settings/read-only";

/// Every cluster-wide image policy object.
pub const IMAGE_CONFIG: &str = "imageconfig/";

/// An image policy object: `resource` is the API's plural (`images`, `imagedigestmirrorsets`, …), `name` a
/// Kubernetes object name (checked by the caller).
pub fn image_config(resource: &str, name: &str) -> String {
    format!("imageconfig/{resource}/{name}")
}

/// Every image policy object of one resource.
pub fn image_configs(resource: &str) -> String {
    format!("imageconfig/{resource}/")
}

pub const NAMESPACES: &str = "namespaces/";

pub fn namespace(ns: &Namespace) -> String {
    format!("namespaces/{ns}")
}

pub const USERS: &str = "users/";

pub fn user(name: &str) -> String {
    format!("users/{name}")
}

pub fn service_account(ns: &Namespace, name: &str) -> String {
    format!("serviceaccounts/{ns}/{name}")
}

pub fn service_accounts_in(ns: &Namespace) -> String {
    format!("serviceaccounts/{ns}/")
}

pub const TOKENS: &str = "tokens/";

pub fn token(id: &str) -> String {
    format!("tokens/{id}")
}

pub fn token_hash(sha256_hex: &str) -> String {
    format!("token-hashes/{sha256_hex}")
}

pub fn role_binding(ns: &Namespace, role: &str) -> String {
    format!("rolebindings/{ns}/{role}")
}

pub fn role_bindings_in(ns: &Namespace) -> String {
    format!("rolebindings/{ns}/")
}

pub fn cluster_role_binding(role: &str) -> String {
    format!("clusterrolebindings/{role}")
}

pub const SIGNING_KEYS: &str = "signing-keys/";

pub fn signing_key(kid: &str) -> String {
    format!("signing-keys/{kid}")
}

pub fn secret(ns: &Namespace, name: &str) -> String {
    format!("secrets/{ns}/{name}")
}

pub fn secrets_in(ns: &Namespace) -> String {
    format!("secrets/{ns}/")
}

/// Every LimitRange of every namespace.
pub const LIMIT_RANGES: &str = "limitranges/";

pub fn limit_range(ns: &Namespace, name: &str) -> String {
    format!("limitranges/{ns}/{name}")
}

pub fn limit_ranges_in(ns: &Namespace) -> String {
    format!("limitranges/{ns}/")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layout() {
        let repo: RepositoryName = "ns/app".parse().unwrap();
        let d = Digest::sha256_of(b"");
        assert!(is_unwatched(&manifest_content(&d)));
        assert!(is_unwatched(&lease("imports")) && !keeps_tombstone(&lease("imports")));
        assert!(is_unwatched(&blob_object(&d)));
        assert!(is_unwatched(&gc_candidate(&d)) && is_unwatched(&gc_deleting(&d)));
        assert!(gc_candidate(&d).starts_with(GC_CANDIDATES) && gc_deleting(&d).starts_with(GC_DELETING));
        assert_eq!(digest_of_key(&gc_deleting(&d)), Some(d.clone()));
        assert_eq!(digest_of_key(&manifest_link(&repo, &d)), Some(d.clone()));
        assert_eq!(digest_of_key(&manifest_content(&d)), Some(d.clone()));
        assert_eq!(digest_of_key("links/ns/app/blobs/nope"), None);
        assert!(!is_unwatched(&imagestream(&repo)) && !is_unwatched(&image(&d)));
        assert_eq!(imagestream(&repo), "imagestreams/ns/app");
        assert_eq!(repository_of_imagestream_key(&imagestream(&repo)), Some(repo.clone()));
        assert_eq!(istag(&repo, &"v1".parse().unwrap()), "istags/ns/app/v1");
        assert!(istag(&repo, &"v1".parse().unwrap()).starts_with(&istags_of(&repo)));
        assert_eq!(blob_link(&repo, &d), format!("links/ns/app/blobs/{d}"));
        assert!(manifest_link(&repo, &d).starts_with(&links_of(&repo)));
        assert!(referrer(&repo, &d, &d).starts_with(&referrers_of(&repo, &d)));
        assert!(referrers_of(&repo, &d).starts_with(&referrers_in(&repo)));
        assert!(image(&d).starts_with(IMAGES));
        let v1: TagName = "v1".parse().unwrap();
        assert_eq!(istag_of_key(&istag(&repo, &v1)), Some((repo.clone(), v1.clone())));
        assert!(istag(&repo, &v1).starts_with(&istags_in(repo.namespace())));
        assert_eq!(istag_of_key("istags/ns/app"), None);
        assert_eq!(istag_of_key(&imagestream(&repo)), None);
        // A stream named like another's prefix does not leak into its listings.
        let other: RepositoryName = "ns/app2".parse().unwrap();
        assert!(!istag(&other, &"v1".parse().unwrap()).starts_with(&istags_of(&repo)));
    }

    #[test]
    fn identity_layout() {
        let ns: Namespace = "team".parse().unwrap();
        let ns2: Namespace = "team2".parse().unwrap();
        assert_eq!(namespace(&ns), "namespaces/team");
        assert!(namespace(&ns).starts_with(NAMESPACES));
        assert_eq!(user("alice"), "users/alice");
        assert!(user("alice").starts_with(USERS));
        assert_eq!(service_account(&ns, "builder"), "serviceaccounts/team/builder");
        assert!(service_account(&ns, "builder").starts_with(&service_accounts_in(&ns)));
        assert!(!service_account(&ns2, "builder").starts_with(&service_accounts_in(&ns)));
        assert_eq!(token("0123abcd"), "tokens/0123abcd");
        assert!(token("0123abcd").starts_with(TOKENS));
        assert_eq!(token_hash("ff00"), "token-hashes/ff00");
        assert_eq!(role_binding(&ns, "admin"), "rolebindings/team/admin");
        assert!(!role_binding(&ns2, "admin").starts_with(&role_bindings_in(&ns)));
        assert_eq!(cluster_role_binding("cluster-admin"), "clusterrolebindings/cluster-admin");
        assert!(signing_key("k1").starts_with(SIGNING_KEYS));
        assert_eq!(limit_range(&ns, "images"), "limitranges/team/images");
        assert!(limit_range(&ns, "images").starts_with(&limit_ranges_in(&ns)));
        assert!(limit_ranges_in(&ns).starts_with(LIMIT_RANGES));
        assert!(!limit_range(&ns2, "images").starts_with(&limit_ranges_in(&ns)));
    }
}
