//! The keep rules of `adm prune images` for one tag's history: by place and age (`--keep-tag-revisions`,
//! `--keep-younger-than`; the newest item always stays), or with `--prune-over-size-limit` by size alone (an item
//! goes exactly when its image exceeds the smallest `openshift.io/Image` `max.storage` of the stream's namespace,
//! whatever its place or age, as `oc` decides); with `--all=false` an item naming an image not pushed here stays.
//! Called by [`super::Pruner`] only; pure.

use std::collections::{BTreeMap, HashMap};

use chrono::{DateTime, Utc};
use names::{Digest, Namespace};
use storage_backends::keys;
use streams::model::{Image, NamedTagEventList, TagEvent};

use super::{PruneOptions, PrunedTagEvent};
use crate::service::limitranges::ImageLimit;

/// What the keep rules need besides the history: the options, the age cutoff, the Images (for their size) and
/// every namespace's image limit.
pub(super) struct Rules<'a> {
    pub options: &'a PruneOptions,
    pub cutoff: DateTime<Utc>,
    pub local_prefixes: &'a [String],
    pub images: &'a HashMap<Digest, (Image, u64)>,
    pub limits: &'a BTreeMap<Namespace, ImageLimit>,
}

/// Whether a tag event or Image reference names an image pushed here (`local_prefixes`: `<public-host>/`).
pub(super) fn is_local(local_prefixes: &[String], reference: &str) -> bool {
    local_prefixes.iter().any(|p| reference.starts_with(p))
}

impl Rules<'_> {
    /// The history split into what stays and what goes (a history outside `--namespace` stays whole).
    pub fn split(&self, key: &str, history: &NamedTagEventList) -> (NamedTagEventList, Vec<PrunedTagEvent>) {
        let mut kept = history.clone();
        let mut gone = Vec::new();
        let Some((repo, _)) = keys::istag_of_key(key) else { return (kept, gone) };
        if self.options.namespace.as_ref().is_some_and(|ns| repo.namespace() != ns) {
            return (kept, gone);
        }
        let limit = self.limits.get(repo.namespace());
        kept.items.clear();
        for (i, item) in history.items.iter().enumerate() {
            let by_rules = if self.options.prune_over_size_limit {
                limit.is_some_and(|l| self.exceeds(item, l))
            } else {
                i > 0 && i >= self.options.keep_tag_revisions && item.created < self.cutoff
            };
            let prunable =
                by_rules && (self.options.all || is_local(self.local_prefixes, &item.docker_image_reference));
            match (&item.image, prunable) {
                (Some(image), true) => gone.push(PrunedTagEvent {
                    repository: repo.clone(),
                    tag: history.tag.clone(),
                    image: image.clone(),
                    created: item.created,
                }),
                _ => kept.items.push(item.clone()),
            }
        }
        (kept, gone)
    }

    /// Whether the item's image is larger than `limit` (an image unknown here, or an index, whose own size is
    /// not an image's, is not).
    fn exceeds(&self, item: &TagEvent, limit: &ImageLimit) -> bool {
        let Some((image, _)) = item.image.as_ref().and_then(|d| self.images.get(d)) else { return false };
        limit.exceeded_by(image.docker_image_metadata.size)
    }
}
