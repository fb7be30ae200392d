//! Turns an OCI request line into an [`Endpoint`] before anything else happens. Repository names contain
//! slashes, so the path is split on the last route keyword, never on a fixed depth. Names, references, digests
//! and upload ids come out parsed; a malformed one is an [`EndpointError`] carrying the OCI code to answer with.
//! [`Endpoint::of_request`] parses a request's path once and keeps the result in the request's extensions: the
//! request log, the limits, the audit log and the OCI dispatcher all read that one value.

use names::{Digest, NameError, Reference, RepositoryName, UploadId};

/// Every OCI distribution route this registry serves.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Endpoint {
    /// `GET /v2/`
    Base,
    /// `GET /v2/_catalog`
    Catalog,
    /// `GET|HEAD|PUT|DELETE /v2/<name>/manifests/<reference>`
    Manifest(RepositoryName, Reference),
    /// `GET|HEAD|DELETE /v2/<name>/blobs/<digest>`
    Blob(RepositoryName, Digest),
    /// `POST /v2/<name>/blobs/uploads/`
    StartUpload(RepositoryName),
    /// `GET|PATCH|PUT|DELETE /v2/<name>/blobs/uploads/<id>`
    Upload(RepositoryName, UploadId),
    /// `GET /v2/<name>/tags/list`
    Tags(RepositoryName),
    /// `GET /v2/<name>/referrers/<digest>`
    Referrers(RepositoryName, Digest),
}

/// Why a path did not name an endpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EndpointError {
    /// No such route.
    NotFound,
    InvalidName(NameError),
    InvalidReference(NameError),
    InvalidDigest(NameError),
    UnknownUpload(NameError),
}

/// The parsed endpoint of a request under `/v2`, kept in its extensions.
#[derive(Debug, Clone)]
struct Parsed(Result<Endpoint, EndpointError>);

impl Endpoint {
    /// The endpoint of `req` (`None` when the path is not under `/v2`), parsed at the first call and remembered
    /// for the rest of the request.
    pub fn of_request(req: &actix_web::HttpRequest) -> Option<Result<Endpoint, EndpointError>> {
        Endpoint::with_request(req, Clone::clone)
    }

    /// [`Endpoint::of_request`] lent to `f` rather than cloned.
    pub fn with_request<T>(
        req: &actix_web::HttpRequest,
        f: impl FnOnce(&Result<Endpoint, EndpointError>) -> T,
    ) -> Option<T> {
        use actix_web::HttpMessage;
        let path = req.path();
        if path != "/v2" && !path.starts_with("/v2/") {
            return None;
        }
        if let Some(Parsed(known)) = req.extensions().get::<Parsed>() {
            return Some(f(known));
        }
        let parsed = Endpoint::parse(path);
        let out = f(&parsed);
        req.extensions_mut().insert(Parsed(parsed));
        Some(out)
    }

    /// The route's label for logs and metrics: `oci:<kind>`, the route without its parameters (a bounded set).
    pub fn route(&self) -> &'static str {
        match self {
            Endpoint::Base => "oci:base",
            Endpoint::Catalog => "oci:catalog",
            Endpoint::Manifest(..) => "oci:manifest",
            Endpoint::Blob(..) => "oci:blob",
            Endpoint::StartUpload(_) => "oci:start_upload",
            Endpoint::Upload(..) => "oci:upload",
            Endpoint::Tags(_) => "oci:tags",
            Endpoint::Referrers(..) => "oci:referrers",
        }
    }

    /// Whether `method` on this endpoint writes (pushes, mounts, deletes, uploads): what read-only mode refuses.
    /// Methods an endpoint does not serve are not writes (they are answered `UNSUPPORTED` anyway).
    pub fn is_write(&self, method: &actix_web::http::Method) -> bool {
        use actix_web::http::Method;
        match self {
            Endpoint::Manifest(..) | Endpoint::Blob(..) => *method == Method::PUT || *method == Method::DELETE,
            Endpoint::StartUpload(_) => *method == Method::POST,
            Endpoint::Upload(..) => *method == Method::PATCH || *method == Method::PUT || *method == Method::DELETE,
            Endpoint::Base | Endpoint::Catalog | Endpoint::Tags(_) | Endpoint::Referrers(..) => false,
        }
    }

    /// Parses the path of a request (without query string).
    pub fn parse(path: &str) -> Result<Endpoint, EndpointError> {
        let rest = path.strip_prefix("/v2").ok_or(EndpointError::NotFound)?;
        if rest.is_empty() || rest == "/" {
            return Ok(Endpoint::Base);
        }
        let rest = rest.strip_prefix('/').ok_or(EndpointError::NotFound)?;
        if rest == "_catalog" {
            return Ok(Endpoint::Catalog);
        }
        let name = |n: &str| n.parse::<RepositoryName>().map_err(EndpointError::InvalidName);
        let digest = |d: &str| d.parse::<Digest>().map_err(EndpointError::InvalidDigest);
        if let Some(n) = rest.strip_suffix("/tags/list") {
            return Ok(Endpoint::Tags(name(n)?));
        }
        if let Some(n) = rest.strip_suffix("/blobs/uploads/").or_else(|| rest.strip_suffix("/blobs/uploads")) {
            return Ok(Endpoint::StartUpload(name(n)?));
        }
        if let Some((n, id)) = rest.rsplit_once("/blobs/uploads/") {
            let id = id.parse::<UploadId>().map_err(EndpointError::UnknownUpload)?;
            return Ok(Endpoint::Upload(name(n)?, id));
        }
        if let Some((n, r)) = rest.rsplit_once("/manifests/") {
            let repo = name(n)?;
            let reference = r.parse::<Reference>().map_err(EndpointError::InvalidReference)?;
            return Ok(Endpoint::Manifest(repo, reference));
        }
        if let Some((n, d)) = rest.rsplit_once("/blobs/") {
            let repo = name(n)?;
            return Ok(Endpoint::Blob(repo, digest(d)?));
        }
        if let Some((n, d)) = rest.rsplit_once("/referrers/") {
            let repo = name(n)?;
            return Ok(Endpoint::Referrers(repo, digest(d)?));
        }
        Err(EndpointError::NotFound)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const D: &str = "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";
    const U: &str = "0b4a7e0e-1d2c-4e0f-9d3a-2f1e5c6b7a80";

    #[test]
    fn table() {
        let repo: RepositoryName = "ns/app".parse().unwrap();
        let ok = [
            ("/v2/".to_string(), Endpoint::Base),
            ("/v2".to_string(), Endpoint::Base),
            ("/v2/_catalog".to_string(), Endpoint::Catalog),
            ("/v2/ns/app/tags/list".to_string(), Endpoint::Tags(repo.clone())),
            ("/v2/ns/app/manifests/latest".to_string(), Endpoint::Manifest(repo.clone(), "latest".parse().unwrap())),
            (format!("/v2/ns/app/manifests/{D}"), Endpoint::Manifest(repo.clone(), D.parse().unwrap())),
            (format!("/v2/ns/app/blobs/{D}"), Endpoint::Blob(repo.clone(), D.parse().unwrap())),
            ("/v2/ns/app/blobs/uploads/".to_string(), Endpoint::StartUpload(repo.clone())),
            (format!("/v2/ns/app/blobs/uploads/{U}"), Endpoint::Upload(repo.clone(), U.parse().unwrap())),
            (format!("/v2/ns/app/referrers/{D}"), Endpoint::Referrers(repo.clone(), D.parse().unwrap())),
            // A stream may be called like a route keyword.
            (
                "/v2/ns/manifests/manifests/v1".to_string(),
                Endpoint::Manifest("ns/manifests".parse().unwrap(), "v1".parse().unwrap()),
            ),
            ("/v2/blobs/tags/tags/list".to_string(), Endpoint::Tags("blobs/tags".parse().unwrap())),
        ];
        for (path, want) in ok {
            assert_eq!(Endpoint::parse(&path), Ok(want), "{path}");
        }
        let bad = [
            ("/v2/app/manifests/latest", "name"),
            ("/v2/a/b/c/manifests/latest", "name"),
            ("/v2/NS/app/tags/list", "name"),
            ("/v2/ns/app/manifests/-bad", "reference"),
            ("/v2/ns/app/manifests/sha256:abc", "reference"),
            ("/v2/ns/app/blobs/sha256:abc", "digest"),
            ("/v2/ns/app/blobs/uploads/not-a-uuid", "upload"),
            ("/v2/ns/app/other", "route"),
            ("/v3/", "route"),
        ];
        for (path, kind) in bad {
            let got = Endpoint::parse(path);
            let matches = matches!(
                (kind, &got),
                ("name", Err(EndpointError::InvalidName(_)))
                    | ("reference", Err(EndpointError::InvalidReference(_)))
                    | ("digest", Err(EndpointError::InvalidDigest(_)))
                    | ("upload", Err(EndpointError::UnknownUpload(_)))
                    | ("route", Err(EndpointError::NotFound))
            );
            assert!(matches, "{path}: {got:?}");
        }
    }

    #[test]
    fn writes() {
        let m = |s: &str| s.parse::<actix_web::http::Method>().unwrap();
        let writes = [
            ("PUT", "/v2/ns/app/manifests/v1".to_string()),
            ("DELETE", "/v2/ns/app/manifests/v1".to_string()),
            ("DELETE", format!("/v2/ns/app/blobs/{D}")),
            ("POST", "/v2/ns/app/blobs/uploads/".to_string()),
            ("PATCH", format!("/v2/ns/app/blobs/uploads/{U}")),
            ("PUT", format!("/v2/ns/app/blobs/uploads/{U}")),
            ("DELETE", format!("/v2/ns/app/blobs/uploads/{U}")),
        ];
        for (method, path) in writes {
            assert!(Endpoint::parse(&path).unwrap().is_write(&m(method)), "{method} {path}");
        }
        let reads = [
            ("GET", "/v2/ns/app/manifests/v1".to_string()),
            ("HEAD", format!("/v2/ns/app/blobs/{D}")),
            ("GET", format!("/v2/ns/app/blobs/uploads/{U}")),
            ("GET", "/v2/_catalog".to_string()),
            ("GET", "/v2/ns/app/tags/list".to_string()),
        ];
        for (method, path) in reads {
            assert!(!Endpoint::parse(&path).unwrap().is_write(&m(method)), "{method} {path}");
        }
    }
}
