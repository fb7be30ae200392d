//! The wire side of `adm prune images`: the request the API takes ([`PruneRequest`], checked into
//! [`PruneOptions`] with `oc`'s defaults) and the report it answers ([`PruneReport`]). Used by the engine
//! ([`super`]), the admin API and the scheduled pruner; no I/O.

use std::time::Duration;

use chrono::{DateTime, Utc};
use names::{Digest, Namespace, RepositoryName};

use crate::gc::Freed;

/// `--keep-tag-revisions`' default.
pub const DEFAULT_KEEP_TAG_REVISIONS: usize = 3;
/// `--keep-younger-than`'s default.
pub const DEFAULT_KEEP_YOUNGER_THAN: Duration = Duration::from_secs(60 * 60);

/// A prune request as the API takes it (JSON, camelCase); [`PruneRequest::resolve`] checks it.
#[derive(Debug, Default, Clone, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PruneRequest {
    pub keep_tag_revisions: Option<usize>,
    pub keep_younger_than_seconds: Option<u64>,
    #[serde(default)]
    pub prune_over_size_limit: bool,
    pub all: Option<bool>,
    pub namespace: Option<Namespace>,
    #[serde(default)]
    pub confirm: bool,
}

/// Why a request is refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PruneRequestError {
    #[error("--prune-over-size-limit cannot be combined with --keep-tag-revisions or --keep-younger-than")]
    OverSizeLimitWithKeepFlags,
}

impl PruneRequest {
    /// The options, with `oc`'s defaults filled in (with `pruneOverSizeLimit`, the keep defaults do not apply:
    /// the size limit alone decides).
    pub fn resolve(self) -> Result<PruneOptions, PruneRequestError> {
        if self.prune_over_size_limit {
            if self.keep_tag_revisions.is_some() || self.keep_younger_than_seconds.is_some() {
                return Err(PruneRequestError::OverSizeLimitWithKeepFlags);
            }
            return Ok(PruneOptions {
                keep_tag_revisions: 0,
                keep_younger_than: Duration::ZERO,
                prune_over_size_limit: true,
                all: self.all.unwrap_or(true),
                namespace: self.namespace,
                confirm: self.confirm,
            });
        }
        Ok(PruneOptions {
            prune_over_size_limit: false,
            keep_tag_revisions: self.keep_tag_revisions.unwrap_or(DEFAULT_KEEP_TAG_REVISIONS),
            keep_younger_than: self
                .keep_younger_than_seconds
                .map(Duration::from_secs)
                .unwrap_or(DEFAULT_KEEP_YOUNGER_THAN),
            all: self.all.unwrap_or(true),
            namespace: self.namespace,
            confirm: self.confirm,
        })
    }
}

/// What to prune.
#[derive(Debug, Clone)]
pub struct PruneOptions {
    /// Keep the newest N items of every tag's history (the newest is always kept).
    pub keep_tag_revisions: usize,
    /// Never prune a history item or an Image younger than this.
    pub keep_younger_than: Duration,
    /// Prune what exceeds its namespace's image size limit (LimitRange `openshift.io/Image` `max.storage`), and
    /// only that among history items, whatever their place or age; the two keep limits do not apply.
    pub prune_over_size_limit: bool,
    /// Include imported and pulled-through images; `false`: only images pushed here.
    pub all: bool,
    /// Only this namespace's histories, and only Images linked in no other namespace.
    pub namespace: Option<Namespace>,
    /// Change things; `false`: a dry run.
    pub confirm: bool,
}

/// One tag-history item removed.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct PrunedTagEvent {
    pub repository: RepositoryName,
    pub tag: String,
    pub image: Digest,
    pub created: DateTime<Utc>,
}

/// One Image removed.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct PrunedImage {
    pub digest: Digest,
    pub size: u64,
}

/// One repository link removed (`kind`: `manifest` or `blob`).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct PrunedLink {
    pub repository: RepositoryName,
    pub kind: String,
    pub digest: Digest,
}

/// What a prune removed (a dry run: would remove).
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PruneReport {
    pub dry_run: bool,
    pub tag_events: Vec<PrunedTagEvent>,
    pub images: Vec<PrunedImage>,
    pub links: Vec<PrunedLink>,
    /// Manifests' and blobs' content deleted by the sweep.
    pub blobs: Vec<Freed>,
    pub bytes_freed: u64,
    /// History items, Images and content deleted.
    pub deleted_objects: usize,
    /// Unreferenced by the plan but referenced again (or tagged again) before deletion: kept.
    pub kept_at_recheck: Vec<Digest>,
    pub errors: Vec<String>,
    pub duration_ms: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_resolve_with_oc_defaults_and_refusals() {
        let o = PruneRequest::default().resolve().unwrap();
        assert_eq!((o.keep_tag_revisions, o.keep_younger_than.as_secs(), o.all, o.confirm), (3, 3600, true, false));
        let with = |keep: Option<usize>, young: Option<u64>| PruneRequest {
            prune_over_size_limit: true,
            keep_tag_revisions: keep,
            keep_younger_than_seconds: young,
            ..Default::default()
        };
        assert_eq!(with(Some(1), None).resolve().unwrap_err(), PruneRequestError::OverSizeLimitWithKeepFlags);
        assert_eq!(with(None, Some(1)).resolve().unwrap_err(), PruneRequestError::OverSizeLimitWithKeepFlags);
        let o = with(None, None).resolve().unwrap();
        assert!(o.prune_over_size_limit && o.all && !o.confirm);
        assert_eq!((o.keep_tag_revisions, o.keep_younger_than), (0, Duration::ZERO), "the keep defaults do not apply");
        let r: PruneRequest = serde_json::from_str(r#"{"all":false,"namespace":"ns","confirm":true}"#).unwrap();
        let o = r.resolve().unwrap();
        assert_eq!((o.all, o.namespace.unwrap().to_string(), o.confirm), (false, "ns".to_owned(), true));
        assert!(serde_json::from_str::<PruneRequest>(r#"{"keep":1}"#).is_err());
    }
}
