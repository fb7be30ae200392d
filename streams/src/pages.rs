//! Paged reads for lists too long to send whole: a namespace's image streams a page at a time (Kubernetes'
//! `limit`/`continue`, what `kubectl get --chunk-size` and the web console ask for), and one stream with only a
//! page of its tags (a stream may hold 100,000). Both filter by a substring of the name on the server and read
//! only the page's values: the names come from a key-only scan. The `registry` crate's stream API calls these.

use std::collections::{BTreeMap, BTreeSet};

use names::{Namespace, RepositoryName, TagName};
use storage_backends::{keys, MetadataStore, MetadataStoreExt};

use crate::model::{ImageStream, NamedTagEventList, ObjectList, TagEventCondition};
use crate::service::{Loaded, StreamError, StreamService};

/// Which part of a long list to read.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PageRequest {
    /// At most this many entries (at least 1).
    pub limit: usize,
    /// The `continue` token of the previous page: the name after which this page starts.
    pub after: Option<String>,
    /// Only names containing this (case-sensitive, as names are lower case).
    pub search: Option<String>,
    /// Only this name (one tag's page: its spec, status and history).
    pub exact: Option<String>,
    /// At most this many events of each tag's history, newest first (a list showing what tags point at now
    /// needs only the first).
    pub history_limit: Option<usize>,
}

impl PageRequest {
    fn trim(&self, stream: &mut ImageStream) {
        if let Some(n) = self.history_limit {
            stream.status.tags.iter_mut().for_each(|t| t.items.truncate(n));
        }
    }
}

/// What a page says of the list it was cut from.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PageInfo {
    /// The token for the next page (`None`: this was the last).
    pub next: Option<String>,
    /// How many entries match the search in the whole list.
    pub total: usize,
    /// How many of them come after this page.
    pub remaining: usize,
    /// The store's revision before the read (where a watch for later changes starts).
    pub revision: u64,
}

impl PageRequest {
    /// Cuts the page out of `names` (sorted): the names matching the search after the token, at most `limit`.
    fn cut(&self, names: impl IntoIterator<Item = String>, revision: u64) -> (Vec<String>, PageInfo) {
        let matching: Vec<String> = names
            .into_iter()
            .filter(|n| self.search.as_ref().is_none_or(|s| n.contains(s.as_str())))
            .filter(|n| self.exact.as_ref().is_none_or(|e| n == e))
            .collect();
        let total = matching.len();
        let mut page: Vec<String> =
            matching.into_iter().filter(|n| self.after.as_ref().is_none_or(|a| n > a)).collect();
        let remaining = page.len().saturating_sub(self.limit);
        let next = if page.len() > self.limit {
            page.truncate(self.limit);
            page.last().cloned()
        } else {
            None
        };
        (page, PageInfo { next, total, remaining, revision })
    }
}

/// Every key under `prefix`, without values, a thousand at a time.
async fn all_keys(store: &dyn MetadataStore, prefix: &str) -> Result<Vec<String>, StreamError> {
    let mut out = Vec::new();
    let mut after: Option<String> = None;
    loop {
        let page = store.list_keys(prefix, after.as_deref(), 1000).await?;
        let Some(last) = page.last() else { break };
        after = Some(last.clone());
        out.extend(page);
    }
    Ok(out)
}

impl StreamService {
    /// A page of the image streams of `ns`, each whole, in name order.
    pub async fn list_streams_page(
        &self,
        ns: &Namespace,
        page: &PageRequest,
    ) -> Result<(ObjectList<ImageStream>, PageInfo), StreamError> {
        let revision = self.revision().await?;
        let keys = all_keys(&*self.store, &keys::imagestreams_in(ns)).await?;
        let names = keys
            .iter()
            .filter_map(|k| keys::repository_of_imagestream_key(k))
            .filter(|r| r.namespace() == ns)
            .map(|r| r.stream().to_string());
        let (names, info) = page.cut(names, revision);
        let mut items = Vec::with_capacity(names.len());
        for name in names {
            let Ok(stream) = name.parse() else { continue };
            if let Some(mut s) = self.assemble(&self.load(&RepositoryName::new(ns.clone(), stream)).await?) {
                page.trim(&mut s);
                items.push(s);
            }
        }
        Ok((ObjectList::new("ImageStream", revision, items), info))
    }

    /// The stream with only a page of its tags in `spec.tags` and `status.tags` (the tags named by the spec or
    /// holding a history, in name order); `None` when the stream does not exist.
    pub async fn get_stream_page(
        &self,
        repo: &RepositoryName,
        page: &PageRequest,
    ) -> Result<Option<(ImageStream, PageInfo)>, StreamError> {
        let read_at = self.revision().await?;
        let Some((stored, version)) = self.store.get_json::<ImageStream>(&keys::imagestream(repo)).await? else {
            return Ok(None);
        };
        let mut names: BTreeSet<String> = stored.spec.tags.iter().map(|t| t.name.clone()).collect();
        for key in all_keys(&*self.store, &keys::istags_of(repo)).await? {
            if let Some((r, tag)) = keys::istag_of_key(&key) {
                if &r == repo {
                    names.insert(tag.to_string());
                }
            }
        }
        let (names, info) = page.cut(names, read_at);
        let (mut histories, mut conditions) = (BTreeMap::new(), BTreeMap::new());
        for name in &names {
            let Ok(tag) = name.parse::<TagName>() else { continue };
            if let Some(h) = self.store.get_json::<NamedTagEventList>(&keys::istag(repo, &tag)).await? {
                histories.insert(tag.clone(), h);
            }
            let key = keys::import_conditions(repo, &tag);
            if let Some(c) = self.store.get_json::<Vec<TagEventCondition>>(&key).await? {
                conditions.insert(tag, c);
            }
        }
        let loaded = Loaded { repo: repo.clone(), stream: Some((stored, version)), histories, conditions, read_at };
        let Some(mut stream) = self.assemble(&loaded) else { return Ok(None) };
        let wanted: BTreeSet<&str> = names.iter().map(String::as_str).collect();
        stream.spec.tags.retain(|t| wanted.contains(t.name.as_str()));
        page.trim(&mut stream);
        Ok(Some((stream, info)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(n: usize) -> Vec<String> {
        (0..n).map(|i| format!("t{i:03}")).collect()
    }

    #[test]
    fn pages_follow_each_other_to_the_end() {
        let mut req = PageRequest { limit: 40, ..PageRequest::default() };
        let mut seen = Vec::new();
        loop {
            let (page, info) = req.cut(names(100), 7);
            assert_eq!((info.total, info.revision), (100, 7));
            seen.extend(page);
            match info.next {
                Some(next) => req.after = Some(next),
                None => break,
            }
        }
        assert_eq!(seen, names(100));
    }

    #[test]
    fn search_counts_and_pages_matches_only() {
        let req = PageRequest { limit: 5, search: Some("9".into()), ..PageRequest::default() };
        let (page, info) = req.cut(names(100), 0);
        assert_eq!(info.total, 19, "t009, t019 … t089 and t090 … t099");
        assert_eq!(page, ["t009", "t019", "t029", "t039", "t049"]);
        assert_eq!(info.next.as_deref(), Some("t049"));
        assert_eq!(info.remaining, 14);
        let last =
            PageRequest { limit: 100, after: Some("t049".into()), search: Some("9".into()), ..PageRequest::default() };
        let (page, info) = last.cut(names(100), 0);
        assert_eq!(page.len(), 14);
        assert_eq!(info.next, None);
        let one = PageRequest { limit: 100, exact: Some("t010".into()), ..PageRequest::default() };
        assert_eq!(one.cut(names(100), 0).0, ["t010"], "one tag, not every tag containing its name");
    }
}
