//! The image stream API's requests, parsed once: the path below a version's root into one [`Route`], and the
//! query into what the API honours (watch, resource version, field and label selectors, time-out, field
//! validation, pages). The access guard (`super::super::auth`) parses with [`ApiRequest::parse`] and authorizes
//! from the result; the dispatcher ([`super`]) takes the same result.

use std::collections::BTreeMap;
use std::time::Duration;

use names::{Digest, Namespace, RepositoryName, StreamName, TagName};
use streams::model::ObjectMeta;
use streams::pages::PageRequest;
use streams::refs::{ImageId, IsImageName, IsTagName};

use super::super::kube::ApiVersion;

pub(super) const NO_SUCH_RESOURCE: &str = "the server could not find the requested resource";

/// What a request names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Route {
    /// `imagestreams` of a namespace, or of all (`None`).
    Streams(Option<Namespace>),
    Stream(RepositoryName),
    /// `imagestreamtags` of a namespace, or of all (`None`).
    Tags(Option<Namespace>),
    Tag(RepositoryName, TagName),
    StreamImage(RepositoryName, ImageId),
    Mappings(Namespace),
    Imports(Namespace),
    Images,
    Image(Digest),
}

/// A parsed request: the route, whether it is a watch, and the query parameters the API honours.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiRequest {
    pub route: Route,
    /// Which path the request came by; objects answered carry its `apiVersion`.
    pub version: ApiVersion,
    pub watch: bool,
    pub resource_version: Option<u64>,
    /// `fieldSelector=metadata.name=…`
    pub name: Option<String>,
    pub labels: Vec<LabelTerm>,
    pub timeout: Option<Duration>,
    pub field_validation: FieldValidation,
    /// `limit`, `continue` and `search` (a substring of the name): a page of a namespace's streams, or of one
    /// stream's tags ([`super::stream_pages`]).
    pub page: Option<PageRequest>,
}

/// `fieldValidation`: what to do with fields of a sent object that its schema does not know (kubectl sends
/// `Strict` when the OpenAPI document says the server validates).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum FieldValidation {
    Ignore,
    #[default]
    Warn,
    Strict,
}

/// One term of a `labelSelector`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LabelTerm {
    Equals(String, String),
    NotEquals(String, String),
    Exists(String),
    Absent(String),
}

impl LabelTerm {
    fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        match self {
            LabelTerm::Equals(k, v) => labels.get(k) == Some(v),
            LabelTerm::NotEquals(k, v) => labels.get(k) != Some(v),
            LabelTerm::Exists(k) => labels.contains_key(k),
            LabelTerm::Absent(k) => !labels.contains_key(k),
        }
    }
}

fn parse_labels(selector: &str) -> Result<Vec<LabelTerm>, String> {
    let mut out = Vec::new();
    for term in selector.split(',').map(str::trim).filter(|t| !t.is_empty()) {
        let t = if let Some((k, v)) = term.split_once("!=") {
            LabelTerm::NotEquals(k.trim().into(), v.trim().into())
        } else if let Some((k, v)) = term.split_once("==").or_else(|| term.split_once('=')) {
            LabelTerm::Equals(k.trim().into(), v.trim().into())
        } else if let Some(k) = term.strip_prefix('!') {
            LabelTerm::Absent(k.trim().into())
        } else if term.contains([' ', '(', ')']) {
            return Err(format!("label selector {term:?}: only =, ==, !=, KEY and !KEY are supported"));
        } else {
            LabelTerm::Exists(term.into())
        };
        out.push(t);
    }
    Ok(out)
}

pub(super) fn parse_name<T: std::str::FromStr>(s: &str) -> Result<T, String>
where
    T::Err: std::fmt::Display,
{
    s.parse().map_err(|e: T::Err| e.to_string())
}

impl ApiRequest {
    /// Parses the path below `/apis/image.openshift.io/v1/` and the query string.
    pub fn parse(tail: &str, query: &str) -> Result<ApiRequest, String> {
        let mut segments: Vec<&str> = tail.trim_matches('/').split('/').collect();
        let mut watch = false;
        if segments.first() == Some(&"watch") {
            watch = true;
            segments.remove(0);
        }
        let route = match segments.as_slice() {
            ["namespaces", ns, resource, rest @ ..] => {
                let ns: Namespace = parse_name(ns)?;
                match (*resource, rest) {
                    ("imagestreams", []) => Route::Streams(Some(ns)),
                    ("imagestreams", [name]) => Route::Stream(RepositoryName::new(ns, parse_name::<StreamName>(name)?)),
                    ("imagestreamtags", []) => Route::Tags(Some(ns)),
                    ("imagestreamtags", [name]) => {
                        let n: IsTagName = parse_name(name)?;
                        Route::Tag(RepositoryName::new(ns, n.stream), n.tag)
                    }
                    ("imagestreamimages", [name]) => {
                        let n: IsImageName = parse_name(name)?;
                        Route::StreamImage(RepositoryName::new(ns, n.stream), n.id)
                    }
                    ("imagestreammappings", []) => Route::Mappings(ns),
                    ("imagestreamimports", []) => Route::Imports(ns),
                    _ => return Err(format!("{NO_SUCH_RESOURCE} ({tail})")),
                }
            }
            ["imagestreams"] => Route::Streams(None),
            ["imagestreamtags"] => Route::Tags(None),
            ["images"] => Route::Images,
            ["images", digest] => Route::Image(parse_name(digest)?),
            _ => return Err(format!("{NO_SUCH_RESOURCE} ({tail})")),
        };
        let mut request = ApiRequest {
            route,
            version: ApiVersion::default(),
            watch,
            resource_version: None,
            name: None,
            labels: Vec::new(),
            timeout: None,
            field_validation: FieldValidation::default(),
            page: None,
        };
        let mut page = super::super::stream_pages::PageQuery::default();
        for (k, v) in url::form_urlencoded::parse(query.as_bytes()) {
            match k.as_ref() {
                "watch" => request.watch |= v == "true" || v == "1",
                "resourceVersion" if !v.is_empty() => {
                    request.resource_version =
                        Some(v.parse().map_err(|_| format!("resourceVersion {v:?} is not one of this server's"))?)
                }
                "fieldSelector" => {
                    for term in v.split(',').filter(|t| !t.is_empty()) {
                        let (field, value) = term
                            .split_once("==")
                            .or_else(|| term.split_once('='))
                            .ok_or_else(|| format!("field selector {term:?}: only FIELD=VALUE is supported"))?;
                        match field {
                            "metadata.name" => request.name = Some(value.to_owned()),
                            "metadata.namespace" => {}
                            other => return Err(format!("field label not supported: {other}")),
                        }
                    }
                }
                "labelSelector" => request.labels = parse_labels(&v)?,
                "dryRun" if !v.is_empty() => return Err("dryRun is not supported by this server".into()),
                "fieldValidation" => {
                    request.field_validation = match v.as_ref() {
                        "Ignore" => FieldValidation::Ignore,
                        "Warn" | "" => FieldValidation::Warn,
                        "Strict" => FieldValidation::Strict,
                        other => return Err(format!("fieldValidation {other:?} is not Ignore, Warn or Strict")),
                    }
                }
                "timeoutSeconds" => {
                    request.timeout = Some(Duration::from_secs(v.parse().map_err(|_| "timeoutSeconds: not a number")?))
                }
                "limit" | "continue" | "search" | "tag" | "historyLimit" => page.set(&k, &v)?,
                _ => {}
            }
        }
        request.page = page.into_request()?;
        Ok(request)
    }

    pub(in crate::http) fn selects(&self, meta: &ObjectMeta) -> bool {
        self.name.as_ref().is_none_or(|n| *n == meta.name) && self.labels.iter().all(|t| t.matches(&meta.labels))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_parse() {
        let ns: Namespace = "team".parse().unwrap();
        let app: RepositoryName = "team/app".parse().unwrap();
        let d = Digest::sha256_of(b"x");
        let p = |tail: &str, q: &str| ApiRequest::parse(tail, q);
        let image_path = format!("images/{d}");
        let table: Vec<(&str, &str, Route, bool)> = vec![
            ("namespaces/team/imagestreams", "", Route::Streams(Some(ns.clone())), false),
            ("namespaces/team/imagestreams", "watch=true", Route::Streams(Some(ns.clone())), true),
            ("watch/namespaces/team/imagestreams", "", Route::Streams(Some(ns.clone())), true),
            ("namespaces/team/imagestreams/app", "", Route::Stream(app.clone()), false),
            ("watch/namespaces/team/imagestreams/app", "", Route::Stream(app.clone()), true),
            ("namespaces/team/imagestreamtags", "", Route::Tags(Some(ns.clone())), false),
            ("namespaces/team/imagestreamtags/app:v1", "", Route::Tag(app.clone(), "v1".parse().unwrap()), false),
            (
                "namespaces/team/imagestreamimages/app@3a335d7",
                "",
                Route::StreamImage(app.clone(), "3a335d7".parse().unwrap()),
                false,
            ),
            ("namespaces/team/imagestreammappings", "", Route::Mappings(ns.clone()), false),
            ("imagestreams", "watch=1", Route::Streams(None), true),
            ("imagestreamtags", "", Route::Tags(None), false),
            ("images", "", Route::Images, false),
            (&image_path, "", Route::Image(d.clone()), false),
        ];
        for (tail, q, route, watch) in table {
            let r = p(tail, q).unwrap_or_else(|e| panic!("{tail}: {e}"));
            assert_eq!((r.route, r.watch), (route, watch), "{tail}?{q}");
        }
        for bad in [
            "namespaces/Team/imagestreams",
            "namespaces/team/imagestreamtags/app",
            "namespaces/team/imagestreamimages/app@zz",
            "namespaces/team/pods",
            "images/sha256:nothex",
            "namespaces/team/imagestreams/app/status/x",
        ] {
            assert!(p(bad, "").is_err(), "{bad}");
        }
        let r = p(
            "namespaces/team/imagestreams",
            "resourceVersion=42&fieldSelector=metadata.name%3Dapp&labelSelector=a%3Db,!c&timeoutSeconds=5",
        )
        .unwrap();
        assert_eq!(r.resource_version, Some(42));
        assert_eq!(r.name.as_deref(), Some("app"));
        assert_eq!(r.labels, vec![LabelTerm::Equals("a".into(), "b".into()), LabelTerm::Absent("c".into())]);
        assert_eq!(r.timeout, Some(Duration::from_secs(5)));
        assert!(p("imagestreams", "fieldSelector=spec.x%3D1").is_err());
        assert!(p("imagestreams", "labelSelector=a+in+(b)").is_err());
        assert!(p("imagestreams", "resourceVersion=abc").is_err());
        assert!(p("namespaces/team/imagestreams", "dryRun=All").is_err(), "a dry run must not write");
    }

    #[test]
    fn selectors_select() {
        let r = ApiRequest::parse("imagestreams", "labelSelector=a%3D1,b!%3D2,c").unwrap();
        let mut meta = ObjectMeta { name: "x".into(), ..ObjectMeta::default() };
        meta.labels = BTreeMap::from([("a".into(), "1".into()), ("c".into(), "".into())]);
        assert!(r.selects(&meta));
        meta.labels.insert("b".into(), "2".into());
        assert!(!r.selects(&meta));
    }
}
