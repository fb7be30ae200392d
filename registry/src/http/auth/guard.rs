//! The guard in front of the Kubernetes-style APIs (image streams, image configuration, pull secrets,
//! LimitRanges): each
//! request is parsed once, by the parser its handler dispatches on, authorized from the parsed route (one arm per
//! route), and the parse left in the request for the handler ([`parsed`]) and the audit log ([`StreamApiTarget`]).
//! Installed as middleware by `super::super::serve_with`.

use actix_web::body::{EitherBody, MessageBody};
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::Method;
use actix_web::middleware::Next;
use actix_web::{web, HttpMessage, HttpRequest};
use auth::{AuthError, Resource, Verb, Verdict};
use names::{Namespace, RepositoryName};

use super::super::admin_api::auth_status;
use super::{caller, refused};
use crate::metrics::Refusal;
use crate::service::Registry;

/// What a stream API request names and needs, as the guard parsed it from the path: the verb, the resource (its
/// kind for access control, and the path segment as written), the namespace (none: cluster-wide), the object name
/// and, when it names one, the repository and tag. Left in the request's extensions for the audit log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamApiTarget {
    pub verb: Verb,
    pub resource: Resource,
    /// `imagestreams`, `imagestreamtags`, `imagestreamimports`, `secrets`, …
    pub resource_name: String,
    pub namespace: Option<Namespace>,
    pub repo: Option<RepositoryName>,
    /// The `TAG` of `imagestreamtags/NAME:TAG`.
    pub tag: Option<String>,
    /// The object name as the path gives it.
    pub name: Option<String>,
}

/// A request of one of the Kubernetes-style APIs, parsed once, by the parser its handler dispatches on: the guard
/// authorizes it from this and leaves it in the request's extensions, where the handler takes it
/// ([`parsed`]), so the two can never disagree about what a request names.
#[derive(Debug, Clone)]
pub enum KubeRequest {
    /// The image stream API (`/apis/image.openshift.io/v1/…`, `/api/v1/…`).
    Streams(Box<crate::http::streams_api::ApiRequest>),
    /// The image configuration API (`config.openshift.io`, `operator.openshift.io`).
    Policy(crate::http::config_api::PolicyRequest),
    /// Pull secrets (`/api/v1/namespaces/{ns}/secrets[/{name}]`).
    Secrets(crate::http::secrets::SecretsRequest),
    /// LimitRanges (`/api/v1/namespaces/{ns}/limitranges[/{name}]`).
    LimitRanges(crate::http::limitranges::LimitRangesRequest),
}

/// What the parser made of a Kubernetes-style API path: the request, or why it names nothing (the handler answers
/// that: 404 or 400, which say nothing about stored objects, so no access check comes first).
pub type Parsed = Result<KubeRequest, String>;

/// Parses a request of one of the Kubernetes-style APIs; `None` for every other path and for API discovery (open
/// to all).
fn parse_kube(path: &str, query: &str) -> Option<Parsed> {
    if let Some(parsed) = crate::http::secrets::SecretsRequest::parse(path) {
        return Some(parsed.map(KubeRequest::Secrets));
    }
    if let Some(parsed) = crate::http::limitranges::LimitRangesRequest::parse(path) {
        return Some(parsed.map(KubeRequest::LimitRanges));
    }
    if let Some(parsed) = crate::http::config_api::PolicyRequest::parse(path, query) {
        return Some(parsed.map(KubeRequest::Policy));
    }
    let (version, rest) = crate::http::kube::ApiVersion::of_path(path)?;
    if rest.is_empty() || rest == "watch" {
        return None;
    }
    Some(
        crate::http::streams_api::ApiRequest::parse(rest, query)
            .map(|api| KubeRequest::Streams(Box::new(crate::http::streams_api::ApiRequest { version, ..api }))),
    )
}

/// The request the guard parsed, for the handler (parsed here when no guard ran, as in unit tests).
pub fn parsed(req: &HttpRequest) -> Option<Parsed> {
    if let Some(p) = req.extensions().get::<Parsed>() {
        return Some(p.clone());
    }
    parse_kube(req.path(), req.query_string())
}

/// The verb of a request: by method, and for reads whether it watches or names one object.
fn verb_of(method: &Method, watch: bool, named: bool) -> Verb {
    match *method {
        Method::GET | Method::HEAD if watch => Verb::Watch,
        Method::GET | Method::HEAD if named => Verb::Get,
        Method::GET | Method::HEAD => Verb::List,
        Method::POST => Verb::Create,
        Method::PUT | Method::PATCH => Verb::Update,
        _ => Verb::Delete,
    }
}

/// What a parsed request needs: one arm per route, no catch-all.
fn target_of(request: &KubeRequest, method: &Method) -> StreamApiTarget {
    use crate::http::streams_api::Route;
    match request {
        KubeRequest::Streams(api) => {
            let ns_of = |repo: &RepositoryName| Some(repo.namespace().clone());
            let (resource, resource_name, namespace, repo, tag, name) = match &api.route {
                Route::Streams(ns) => (Resource::ImageStreams, "imagestreams", ns.clone(), None, None, None),
                Route::Stream(r) => {
                    let name = Some(r.stream().to_string());
                    (Resource::ImageStreams, "imagestreams", ns_of(r), Some(r.clone()), None, name)
                }
                Route::Tags(ns) => (Resource::ImageStreams, "imagestreamtags", ns.clone(), None, None, None),
                Route::Tag(r, t) => {
                    let name = Some(format!("{}:{t}", r.stream()));
                    (Resource::ImageStreams, "imagestreamtags", ns_of(r), Some(r.clone()), Some(t.to_string()), name)
                }
                Route::StreamImage(r, id) => {
                    let name = Some(format!("{}@{id}", r.stream()));
                    (Resource::ImageStreams, "imagestreamimages", ns_of(r), Some(r.clone()), None, name)
                }
                Route::Mappings(ns) => {
                    (Resource::ImageStreams, "imagestreammappings", Some(ns.clone()), None, None, None)
                }
                Route::Imports(ns) => {
                    (Resource::ImageStreams, "imagestreamimports", Some(ns.clone()), None, None, None)
                }
                Route::Images => (Resource::Images, "images", None, None, None, None),
                Route::Image(d) => (Resource::Images, "images", None, None, None, Some(d.to_string())),
            };
            // A watch of one object names it in `fieldSelector`, not the path: still a watch.
            let named = name.is_some() && !matches!(api.route, Route::Streams(_) | Route::Tags(_));
            StreamApiTarget {
                verb: verb_of(method, api.watch, named),
                resource,
                resource_name: resource_name.to_owned(),
                namespace,
                repo,
                tag,
                name,
            }
        }
        KubeRequest::Policy(p) => StreamApiTarget {
            verb: verb_of(method, p.watch, p.name.is_some()),
            resource: Resource::ImageConfig,
            resource_name: p.kind.resource().to_owned(),
            namespace: None,
            repo: None,
            tag: None,
            name: p.name.clone(),
        },
        KubeRequest::Secrets(s) => StreamApiTarget {
            verb: verb_of(method, false, s.name.is_some()),
            resource: Resource::Secrets,
            resource_name: "secrets".to_owned(),
            namespace: Some(s.namespace.clone()),
            repo: None,
            tag: None,
            name: s.name.clone(),
        },
        KubeRequest::LimitRanges(l) => StreamApiTarget {
            verb: verb_of(method, false, l.name.is_some()),
            resource: Resource::LimitRanges,
            resource_name: "limitranges".to_owned(),
            namespace: Some(l.namespace.clone()),
            repo: None,
            tag: None,
            name: l.name.clone(),
        },
    }
}

/// Middleware in front of the image stream API (`/apis/image.openshift.io/v1/...`, and its legacy twin under
/// `/api/v1/...`): every route there, present
/// and future, is checked by method (GET = get/list/watch, POST = create, PUT/PATCH = update, DELETE = delete) on
/// `imagestreams` in the route's namespace, or on cluster-scoped `images`/all-namespace lists.
pub async fn stream_api_guard<B: MessageBody>(
    req: ServiceRequest,
    next: Next<B>,
) -> Result<ServiceResponse<EitherBody<B>>, actix_web::Error> {
    let Some(parsed) = parse_kube(req.path(), req.query_string()) else {
        return Ok(next.call(req).await?.map_into_left_body());
    };
    req.extensions_mut().insert(parsed.clone());
    let Ok(request) = parsed else {
        return Ok(next.call(req).await?.map_into_left_body());
    };
    let target = target_of(&request, req.method());
    req.extensions_mut().insert(target.clone());
    let StreamApiTarget { verb, resource, namespace: ns, repo, .. } = target;
    let Some(reg) = req.app_data::<web::Data<Registry>>().cloned() else {
        return Ok(next.call(req).await?.map_into_left_body());
    };
    let refusal = match caller(req.request(), &reg).await {
        Err(e) => Some(auth_status(&e)),
        Ok(caller) => match reg.auth.check_stream_api(&caller, verb, resource, ns.as_ref(), repo.as_ref()).await {
            Ok(Verdict::Allow) => None,
            Ok(verdict @ (Verdict::Unauthenticated | Verdict::InsufficientScope)) => {
                let reason = match verdict {
                    Verdict::InsufficientScope => Refusal::InsufficientScope,
                    _ => Refusal::Unauthenticated,
                };
                refused(req.request(), reason);
                Some(auth_status(&AuthError::Unauthenticated))
            }
            Ok(Verdict::Denied) => {
                refused(req.request(), Refusal::Denied);
                Some(auth_status(&AuthError::Forbidden))
            }
            Err(e) => Some(auth_status(&AuthError::Store(e))),
        },
    };
    match refusal {
        None => Ok(next.call(req).await?.map_into_left_body()),
        Some(resp) => Ok(req.into_response(resp).map_into_right_body()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stream_api_needs() {
        let ns: Namespace = "team".parse().unwrap();
        let app: RepositoryName = "team/app".parse().unwrap();
        let need = |m: &Method, path: &str, q: &str| parse_kube(path, q)?.ok().map(|r| target_of(&r, m));
        let p = |m: &str, path: &str, q: &str| {
            need(&m.parse().unwrap(), path, q).map(|t| (t.verb, t.resource, t.namespace, t.repo))
        };
        assert_eq!(p("GET", "/apis/image.openshift.io/v1", ""), None);
        assert_eq!(p("GET", "/apis/config.openshift.io/v1", ""), None, "discovery is open");
        assert_eq!(
            p("PATCH", "/apis/config.openshift.io/v1/images/cluster", ""),
            Some((Verb::Update, Resource::ImageConfig, None, None))
        );
        assert_eq!(
            p("GET", "/apis/operator.openshift.io/v1alpha1/imagecontentsourcepolicies", "watch=true"),
            Some((Verb::Watch, Resource::ImageConfig, None, None))
        );
        assert_eq!(
            p("GET", "/apis/image.openshift.io/v1/namespaces/team/imagestreams/app", ""),
            Some((Verb::Get, Resource::ImageStreams, Some(ns.clone()), Some(app.clone())))
        );
        assert_eq!(
            p("PUT", "/apis/image.openshift.io/v1/namespaces/team/imagestreamtags/app:v1", ""),
            Some((Verb::Update, Resource::ImageStreams, Some(ns.clone()), Some(app.clone())))
        );
        assert_eq!(
            p("GET", "/apis/image.openshift.io/v1/namespaces/team/imagestreams", "watch=true"),
            Some((Verb::Watch, Resource::ImageStreams, Some(ns.clone()), None))
        );
        assert_eq!(
            p("GET", "/apis/image.openshift.io/v1/watch/namespaces/team/imagestreams", ""),
            Some((Verb::Watch, Resource::ImageStreams, Some(ns.clone()), None))
        );
        assert_eq!(
            p("GET", "/apis/image.openshift.io/v1/watch/namespaces/team/imagestreams/app", ""),
            Some((Verb::Watch, Resource::ImageStreams, Some(ns.clone()), Some(app.clone())))
        );
        assert_eq!(
            p("POST", "/apis/image.openshift.io/v1/namespaces/team/imagestreamimports", ""),
            Some((Verb::Create, Resource::ImageStreams, Some(ns), None))
        );
        assert_eq!(
            p("GET", &format!("/apis/image.openshift.io/v1/images/{}", names::Digest::sha256_of(b"x")), ""),
            Some((Verb::Get, Resource::Images, None, None))
        );
        assert_eq!(
            p("GET", "/apis/image.openshift.io/v1/imagestreams", ""),
            Some((Verb::List, Resource::ImageStreams, None, None))
        );
        assert_eq!(p("GET", "/apis/other/v1/x", ""), None);
        assert_eq!(
            p("PUT", "/api/v1/namespaces/team/limitranges/images", ""),
            Some((Verb::Update, Resource::LimitRanges, Some("team".parse().unwrap()), None))
        );
        assert_eq!(
            p("GET", "/api/v1/namespaces/team/limitranges", ""),
            Some((Verb::List, Resource::LimitRanges, Some("team".parse().unwrap()), None))
        );
        let tag = need(&Method::PUT, "/apis/image.openshift.io/v1/namespaces/team/imagestreamtags/app:v1", "").unwrap();
        assert_eq!(
            (tag.resource_name.as_str(), tag.tag.as_deref(), tag.name.as_deref()),
            ("imagestreamtags", Some("v1"), Some("app:v1"))
        );
    }
}
