//! Paged reads of the image stream API, for lists too long to send whole (the web console's pages,
//! `kubectl get --chunk-size`): `limit`, `continue` and `search` (a substring of the name) on
//!
//! ```text
//! GET namespaces/{ns}/imagestreams?limit=&continue=&search=   a page of the streams (metadata.continue,
//!                                                             metadata.remainingItemCount), Kubernetes' chunking
//! GET namespaces/{ns}/imagestreams/{name}?limit=&continue=&search=&tag=
//!                                                             the stream with a page of its tags (or the one
//!                                                             `tag`) in spec.tags and
//!                                                             status.tags; headers Tributary-Tags-Total,
//!                                                             Tributary-Tags-Continue, Tributary-Revision
//! ```
//! `historyLimit=N` keeps at most N events of each tag's history (newest first) in either answer.
//! Other lists ignore these parameters and answer whole, as a Kubernetes server may. Only `streams_api` calls
//! this, after the access check its guard made.

use actix_web::http::StatusCode;
use actix_web::{HttpRequest, HttpResponse};
use names::{Namespace, RepositoryName};
use serde_json::Value;
use streams::pages::PageRequest;
use streams::{ObjectKind, StreamError, StreamService};

use super::kube;
use super::streams_api::ApiRequest;

/// A page holds this many entries when the request names no `limit`.
pub const DEFAULT_LIMIT: usize = 100;
/// The most entries a page holds, whatever `limit` asks (Kubernetes lets a server answer fewer).
pub const MAX_LIMIT: usize = 1000;
/// The longest `continue` token or `search` accepted (names are shorter).
const MAX_TEXT: usize = 256;

/// The paging parameters of a query string, as read.
#[derive(Debug, Default)]
pub struct PageQuery {
    limit: Option<usize>,
    after: Option<String>,
    search: Option<String>,
    exact: Option<String>,
    history_limit: Option<usize>,
}

impl PageQuery {
    /// Takes one of `limit`, `continue`, `search`, `tag`, `historyLimit`.
    pub fn set(&mut self, key: &str, value: &str) -> Result<(), String> {
        if value.len() > MAX_TEXT {
            return Err(format!("{key}: longer than {MAX_TEXT} characters"));
        }
        match key {
            "limit" if value.is_empty() => {}
            "limit" => match value.parse::<usize>() {
                Ok(n) if n > 0 => self.limit = Some(n.min(MAX_LIMIT)),
                _ => return Err(format!("limit {value:?}: not a positive number")),
            },
            "continue" if !value.is_empty() => self.after = Some(value.to_owned()),
            "search" if !value.is_empty() => self.search = Some(value.to_owned()),
            "tag" if !value.is_empty() => self.exact = Some(value.to_owned()),
            "historyLimit" if !value.is_empty() => match value.parse::<usize>() {
                Ok(n) if n > 0 => self.history_limit = Some(n),
                _ => return Err(format!("historyLimit {value:?}: not a positive number")),
            },
            _ => {}
        }
        Ok(())
    }

    /// The page asked for; `None` when the request asks for the whole list.
    pub fn into_request(self) -> Result<Option<PageRequest>, String> {
        if self.limit.is_none()
            && self.after.is_none()
            && self.search.is_none()
            && self.exact.is_none()
            && self.history_limit.is_none()
        {
            return Ok(None);
        }
        Ok(Some(PageRequest {
            limit: self.limit.unwrap_or(DEFAULT_LIMIT),
            after: self.after,
            search: self.search,
            exact: self.exact,
            history_limit: self.history_limit,
        }))
    }
}

/// `GET namespaces/{ns}/imagestreams` with a page asked for.
pub async fn streams(req: &HttpRequest, api: &ApiRequest, svc: &StreamService, ns: &Namespace) -> HttpResponse {
    let Some(page) = &api.page else { return kube::bad_request("no page asked for") };
    let (mut list, info) = match svc.list_streams_page(ns, page).await {
        Ok(l) => l,
        Err(e) => return kube::error(&e),
    };
    list.items.retain(|s| api.selects(&s.metadata));
    if kube::wants_table(req) {
        return kube::json_response(
            StatusCode::OK,
            &kube::stream_table(&list.metadata.resource_version, &list.items),
            true,
        );
    }
    list.metadata.remaining_item_count = info.next.as_ref().map(|_| info.remaining as u64);
    list.metadata.continue_token = info.next;
    kube::json_response(StatusCode::OK, &serde_json::to_value(&list).unwrap_or(Value::Null), false)
}

/// `GET namespaces/{ns}/imagestreams/{name}` with a page of tags asked for.
pub async fn stream(api: &ApiRequest, svc: &StreamService, repo: &RepositoryName) -> HttpResponse {
    let Some(page) = &api.page else { return kube::bad_request("no page asked for") };
    match svc.get_stream_page(repo, page).await {
        Ok(Some((stream, info))) => {
            let mut resp = HttpResponse::Ok();
            resp.insert_header(("Tributary-Tags-Total", info.total.to_string()))
                .insert_header(("Tributary-Revision", info.revision.to_string()));
            if let Some(next) = &info.next {
                // Tag names are header-safe ([A-Za-z0-9_.-]).
                resp.insert_header(("Tributary-Tags-Continue", next.as_str()));
            }
            resp.json(stream)
        }
        Ok(None) => {
            kube::error(&StreamError::NotFound { kind: ObjectKind::ImageStream, name: repo.stream().to_string() })
        }
        Err(e) => kube::error(&e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(pairs: &[(&str, &str)]) -> Result<Option<PageRequest>, String> {
        let mut q = PageQuery::default();
        for (k, v) in pairs {
            q.set(k, v)?;
        }
        q.into_request()
    }

    #[test]
    fn paging_parameters_parse() {
        assert_eq!(parse(&[]).unwrap(), None);
        assert_eq!(parse(&[("limit", "")]).unwrap(), None, "kubectl may send an empty limit");
        let p = parse(&[("limit", "20"), ("continue", "v9"), ("search", "rc")]).unwrap().unwrap();
        assert_eq!(
            p,
            PageRequest { limit: 20, after: Some("v9".into()), search: Some("rc".into()), ..PageRequest::default() }
        );
        assert_eq!(parse(&[("historyLimit", "1")]).unwrap().unwrap().history_limit, Some(1));
        assert!(parse(&[("historyLimit", "0")]).is_err());
        assert_eq!(parse(&[("tag", "v1")]).unwrap().unwrap().exact.as_deref(), Some("v1"));
        assert_eq!(parse(&[("search", "x")]).unwrap().unwrap().limit, DEFAULT_LIMIT);
        assert_eq!(parse(&[("limit", "999999")]).unwrap().unwrap().limit, MAX_LIMIT);
        for bad in ["0", "-1", "ten"] {
            assert!(parse(&[("limit", bad)]).is_err(), "{bad}");
        }
        assert!(parse(&[("search", &"x".repeat(300))]).is_err());
    }
}
