//! The OCI error vocabulary, one row per wire code, and the single place where domain errors become HTTP
//! answers. Internal causes are logged here, once, and never sent to the client.

use actix_web::http::{Method, StatusCode};
use actix_web::{HttpResponse, ResponseError};
use names::NameError;
use serde_json::json;

use crate::service::RegistryError;
use crate::upstream::UpstreamError;

use super::endpoint::EndpointError;

/// What `Retry-After` says when writers collided past the retry budget (seconds).
pub const RETRY_AFTER_SECS: &str = "1";

/// The error codes of the OCI distribution spec (plus distribution's `UNKNOWN` for internal failures).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorCode {
    BlobUnknown,
    BlobUploadInvalid,
    BlobUploadUnknown,
    DigestInvalid,
    ManifestBlobUnknown,
    ManifestInvalid,
    ManifestUnknown,
    NameInvalid,
    NameUnknown,
    SizeInvalid,
    TagInvalid,
    Unauthorized,
    Denied,
    Unsupported,
    TooManyRequests,
    RangeInvalid,
    /// distribution's `UNAVAILABLE`: an upstream of a pull-through could not serve.
    Unavailable,
    /// `UNAVAILABLE` with 507 Insufficient Storage: the storage is full (the client may retry once room is made).
    StorageFull,
    Unknown,
}

impl ErrorCode {
    /// The wire string, the default message and the HTTP status of each code.
    pub fn row(self) -> (&'static str, &'static str, StatusCode) {
        use ErrorCode::*;
        match self {
            BlobUnknown => ("BLOB_UNKNOWN", "blob unknown to registry", StatusCode::NOT_FOUND),
            BlobUploadInvalid => ("BLOB_UPLOAD_INVALID", "blob upload invalid", StatusCode::BAD_REQUEST),
            BlobUploadUnknown => ("BLOB_UPLOAD_UNKNOWN", "blob upload unknown to registry", StatusCode::NOT_FOUND),
            DigestInvalid => {
                ("DIGEST_INVALID", "provided digest did not match uploaded content", StatusCode::BAD_REQUEST)
            }
            ManifestBlobUnknown => (
                "MANIFEST_BLOB_UNKNOWN",
                "manifest references a manifest or blob unknown to registry",
                StatusCode::BAD_REQUEST,
            ),
            ManifestInvalid => ("MANIFEST_INVALID", "manifest invalid", StatusCode::BAD_REQUEST),
            ManifestUnknown => ("MANIFEST_UNKNOWN", "manifest unknown to registry", StatusCode::NOT_FOUND),
            NameInvalid => ("NAME_INVALID", "invalid repository name", StatusCode::BAD_REQUEST),
            NameUnknown => ("NAME_UNKNOWN", "repository name not known to registry", StatusCode::NOT_FOUND),
            SizeInvalid => ("SIZE_INVALID", "provided length did not match content length", StatusCode::BAD_REQUEST),
            TagInvalid => ("TAG_INVALID", "manifest tag did not match URI", StatusCode::BAD_REQUEST),
            Unauthorized => ("UNAUTHORIZED", "authentication required", StatusCode::UNAUTHORIZED),
            Denied => ("DENIED", "requested access to the resource is denied", StatusCode::FORBIDDEN),
            Unsupported => ("UNSUPPORTED", "the operation is unsupported", StatusCode::METHOD_NOT_ALLOWED),
            TooManyRequests => ("TOOMANYREQUESTS", "too many requests", StatusCode::TOO_MANY_REQUESTS),
            RangeInvalid => {
                ("BLOB_UPLOAD_INVALID", "requested range not satisfiable", StatusCode::RANGE_NOT_SATISFIABLE)
            }
            Unavailable => ("UNAVAILABLE", "service unavailable", StatusCode::SERVICE_UNAVAILABLE),
            StorageFull => ("UNAVAILABLE", "storage is full", StatusCode::INSUFFICIENT_STORAGE),
            Unknown => ("UNKNOWN", "unknown error", StatusCode::INTERNAL_SERVER_ERROR),
        }
    }
}

/// An error answer: a code, a message for humans, optional detail, optional extra headers.
#[derive(Debug)]
pub struct ApiError {
    pub code: ErrorCode,
    pub message: String,
    pub detail: Option<serde_json::Value>,
    pub status: Option<StatusCode>,
    pub headers: Vec<(&'static str, String)>,
}

impl ApiError {
    pub fn new(code: ErrorCode) -> Self {
        ApiError { code, message: code.row().1.to_owned(), detail: None, status: None, headers: Vec::new() }
    }
    pub fn message(mut self, m: impl Into<String>) -> Self {
        self.message = m.into();
        self
    }
    pub fn detail(mut self, d: serde_json::Value) -> Self {
        self.detail = Some(d);
        self
    }
    pub fn status(mut self, s: StatusCode) -> Self {
        self.status = Some(s);
        self
    }
    pub fn header(mut self, name: &'static str, value: String) -> Self {
        self.headers.push((name, value));
        self
    }
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.code.row().0, self.message)
    }
}

impl ResponseError for ApiError {
    fn status_code(&self) -> StatusCode {
        self.status.unwrap_or(self.code.row().2)
    }
    fn error_response(&self) -> HttpResponse {
        let mut body = json!({"code": self.code.row().0, "message": self.message});
        if let Some(d) = &self.detail {
            body["detail"] = d.clone();
        }
        let mut resp = HttpResponse::build(self.status_code());
        for (k, v) in &self.headers {
            resp.insert_header((*k, v.as_str()));
        }
        resp.json(json!({ "errors": [body] }))
    }
}

impl ApiError {
    /// The answer to a request line that names no endpoint. `method` matters for a malformed manifest reference:
    /// a read or delete asks about a manifest that cannot exist (404 `MANIFEST_UNKNOWN`, as distribution answers),
    /// a write sends one under a name it cannot have (400 `TAG_INVALID`, or `MANIFEST_INVALID` for a malformed
    /// digest).
    pub fn of_endpoint(e: EndpointError, method: &Method) -> Self {
        match e {
            EndpointError::NotFound => {
                ApiError::new(ErrorCode::Unsupported).status(StatusCode::NOT_FOUND).message("no such endpoint")
            }
            EndpointError::InvalidName(n) => ApiError::new(ErrorCode::NameInvalid).message(n.to_string()),
            EndpointError::InvalidReference(n) if is_lookup(method) => {
                ApiError::new(ErrorCode::ManifestUnknown).message(n.to_string())
            }
            EndpointError::InvalidReference(n @ NameError::Tag(_)) => {
                ApiError::new(ErrorCode::TagInvalid).message(n.to_string())
            }
            EndpointError::InvalidReference(n) => ApiError::new(ErrorCode::ManifestInvalid).message(n.to_string()),
            EndpointError::InvalidDigest(n) => ApiError::new(ErrorCode::DigestInvalid).message(n.to_string()),
            EndpointError::UnknownUpload(n) => ApiError::new(ErrorCode::BlobUploadUnknown).message(n.to_string()),
        }
    }
}

/// Methods that look a manifest up rather than write one.
fn is_lookup(method: &Method) -> bool {
    *method == Method::GET || *method == Method::HEAD || *method == Method::DELETE
}

impl From<RegistryError> for ApiError {
    fn from(e: RegistryError) -> Self {
        let msg = e.to_string();
        match e {
            RegistryError::BlobUnknown(d) => ApiError::new(ErrorCode::BlobUnknown).detail(json!({"digest": d})),
            RegistryError::UploadUnknown(id) => {
                ApiError::new(ErrorCode::BlobUploadUnknown).detail(json!({"uuid": id.to_string()}))
            }
            RegistryError::DigestMismatch { expected, actual } => ApiError::new(ErrorCode::DigestInvalid)
                .message(msg)
                .detail(json!({"expected": expected, "actual": actual})),
            RegistryError::DigestInvalid(m) => ApiError::new(ErrorCode::DigestInvalid).message(m),
            RegistryError::RangeInvalid { have, .. } => {
                let range = if have == 0 { "0-0".to_string() } else { format!("0-{}", have - 1) };
                ApiError::new(ErrorCode::RangeInvalid).message(msg).header("Range", range)
            }
            RegistryError::UploadInvalid(m) => ApiError::new(ErrorCode::BlobUploadInvalid).message(m),
            RegistryError::RangeNotSatisfiable { size } => {
                ApiError::new(ErrorCode::RangeInvalid).header("Content-Range", format!("bytes */{size}"))
            }
            RegistryError::ManifestUnknown => ApiError::new(ErrorCode::ManifestUnknown),
            RegistryError::ManifestInvalid(m) => ApiError::new(ErrorCode::ManifestInvalid).message(m),
            RegistryError::ManifestBlobUnknown(d) => {
                ApiError::new(ErrorCode::ManifestBlobUnknown).message(msg).detail(json!({"digest": d}))
            }
            RegistryError::ManifestTooLarge(_) => {
                ApiError::new(ErrorCode::SizeInvalid).message(msg).status(StatusCode::PAYLOAD_TOO_LARGE)
            }
            RegistryError::NameUnknown(repo) => {
                ApiError::new(ErrorCode::NameUnknown).detail(json!({"name": repo.to_string()}))
            }
            RegistryError::Body(m) => ApiError::new(ErrorCode::BlobUploadInvalid).message(m),
            RegistryError::Upstream(u) => {
                let m = format!("upstream: {u}");
                match u {
                    UpstreamError::NotFound(_) => ApiError::new(ErrorCode::BlobUnknown).message(m),
                    UpstreamError::TooManyRequests(_) => ApiError::new(ErrorCode::TooManyRequests).message(m),
                    UpstreamError::NotAllowed(_) | UpstreamError::Refused(_) => {
                        ApiError::new(ErrorCode::Denied).message(m)
                    }
                    UpstreamError::Invalid(_) | UpstreamError::InvalidReference(_) => {
                        ApiError::new(ErrorCode::Unavailable).message(m).status(StatusCode::BAD_GATEWAY)
                    }
                    UpstreamError::Unauthorized(_) | UpstreamError::Unavailable(_) => {
                        ApiError::new(ErrorCode::Unavailable).message(m)
                    }
                }
            }
            RegistryError::StorageFull(_) => ApiError::new(ErrorCode::StorageFull).message(msg),
            RegistryError::Unavailable(cause) => {
                tracing::error!(%cause, "storage unavailable");
                ApiError::new(ErrorCode::Unavailable)
                    .message("storage is unavailable; try again")
                    .header("Retry-After", "1".to_owned())
            }
            RegistryError::Contention(_) => {
                ApiError::new(ErrorCode::TooManyRequests).message(msg).header("Retry-After", RETRY_AFTER_SECS.into())
            }
            RegistryError::ReadOnly => ApiError::new(ErrorCode::Unsupported).message(msg),
            RegistryError::ImageTooLarge { size, namespace, limit } => ApiError::new(ErrorCode::Denied)
                .message(msg)
                .detail(json!({"size": size, "namespace": namespace.to_string(), "limitRange": limit.limit_range,
                               "limit": limit.quantity.to_string(), "limitBytes": limit.bytes})),
            RegistryError::Internal(cause) => {
                tracing::error!(%cause, "internal error");
                ApiError::new(ErrorCode::Unknown)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn contention_past_the_retry_budget_is_429_with_retry_after() {
        let e = ApiError::from(RegistryError::from(streams::StreamError::Contention("ns/app".into())));
        assert_eq!((e.code, e.status_code()), (ErrorCode::TooManyRequests, StatusCode::TOO_MANY_REQUESTS));
        let resp = e.error_response();
        assert_eq!(resp.headers().get("Retry-After").and_then(|v| v.to_str().ok()), Some(RETRY_AFTER_SECS));
        assert!(e.message.contains("ns/app"), "{}", e.message);
    }

    #[test]
    fn malformed_references_depend_on_the_method() {
        let bad = || EndpointError::InvalidReference(NameError::Tag(".bad".into()));
        for (method, code, status) in [
            (Method::GET, ErrorCode::ManifestUnknown, StatusCode::NOT_FOUND),
            (Method::HEAD, ErrorCode::ManifestUnknown, StatusCode::NOT_FOUND),
            (Method::DELETE, ErrorCode::ManifestUnknown, StatusCode::NOT_FOUND),
            (Method::PUT, ErrorCode::TagInvalid, StatusCode::BAD_REQUEST),
        ] {
            let e = ApiError::of_endpoint(bad(), &method);
            assert_eq!((e.code, e.status_code()), (code, status), "{method}");
        }
        let digest = EndpointError::InvalidReference(NameError::Digest("sha256:x".into(), "too short"));
        assert_eq!(ApiError::of_endpoint(digest, &Method::PUT).code, ErrorCode::ManifestInvalid);
    }
}
