//! Kubernetes `Status` bodies, from one table: every Kubernetes-style API here (image streams, image configuration,
//! administration, secrets, watch errors, the limits' refusals) answers a failure with a [`Reason`], whose HTTP code
//! and `reason` string are written once, below. The OCI API's table is [`super::errors`]. Called by the HTTP
//! modules only.

use actix_web::http::StatusCode;
use actix_web::HttpResponse;
use serde_json::{json, Value};

/// Why a Kubernetes-style request failed, as `metav1.StatusReason` names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reason {
    BadRequest,
    Unauthorized,
    Forbidden,
    NotFound,
    MethodNotAllowed,
    NotAcceptable,
    /// The request body did not arrive in time.
    Timeout,
    AlreadyExists,
    Conflict,
    /// A watch's resource version is older than the store keeps.
    Expired,
    UnsupportedMediaType,
    /// The request's headers are too large (not a Kubernetes reason: HTTP's own, as the limits answer it).
    RequestHeaderFieldsTooLarge,
    /// The object is not valid (422).
    Invalid,
    TooManyRequests,
    InternalError,
    ServiceUnavailable,
}

impl Reason {
    /// The HTTP status and the `reason` string: the table.
    pub const fn row(self) -> (u16, &'static str) {
        match self {
            Reason::BadRequest => (400, "BadRequest"),
            Reason::Unauthorized => (401, "Unauthorized"),
            Reason::Forbidden => (403, "Forbidden"),
            Reason::NotFound => (404, "NotFound"),
            Reason::MethodNotAllowed => (405, "MethodNotAllowed"),
            Reason::NotAcceptable => (406, "NotAcceptable"),
            Reason::Timeout => (408, "Timeout"),
            Reason::AlreadyExists => (409, "AlreadyExists"),
            Reason::Conflict => (409, "Conflict"),
            Reason::Expired => (410, "Expired"),
            Reason::UnsupportedMediaType => (415, "UnsupportedMediaType"),
            Reason::Invalid => (422, "Invalid"),
            Reason::RequestHeaderFieldsTooLarge => (431, "RequestHeaderFieldsTooLarge"),
            Reason::TooManyRequests => (429, "TooManyRequests"),
            Reason::InternalError => (500, "InternalError"),
            Reason::ServiceUnavailable => (503, "ServiceUnavailable"),
        }
    }

    pub fn status_code(self) -> StatusCode {
        StatusCode::from_u16(self.row().0).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
    }
}

/// The object a `Status` is about: its name, API group and resource (`kind` in `details`).
#[derive(Debug, Clone, Copy)]
pub struct Details<'a> {
    pub name: &'a str,
    pub group: &'a str,
    pub resource: &'a str,
}

/// The `Status` object of a failure (also the object of a watch's `ERROR` event).
pub fn object(reason: Reason, message: impl Into<String>, details: Option<Details<'_>>) -> Value {
    let (code, text) = reason.row();
    let mut body = json!({
        "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
        "message": message.into(), "reason": text, "code": code,
    });
    if let Some(d) = details {
        body["details"] = json!({"name": d.name, "group": d.group, "kind": d.resource});
    }
    body
}

/// A failure answer.
pub fn failure(reason: Reason, message: impl Into<String>) -> HttpResponse {
    HttpResponse::build(reason.status_code()).json(object(reason, message, None))
}

/// A failure answer about one object.
pub fn failure_about(reason: Reason, message: impl Into<String>, details: Details<'_>) -> HttpResponse {
    HttpResponse::build(reason.status_code()).json(object(reason, message, Some(details)))
}

/// A `Status` success (what a delete or a mapping answers), about one object when `details` names it.
pub fn success(code: StatusCode, details: Option<Details<'_>>) -> HttpResponse {
    let mut body = json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success",
        "code": code.as_u16()});
    if let Some(d) = details {
        body["details"] = json!({"name": d.name, "group": d.group, "kind": d.resource});
    }
    HttpResponse::build(code).json(body)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_table_agrees_with_http() {
        for reason in [
            Reason::BadRequest,
            Reason::Unauthorized,
            Reason::Forbidden,
            Reason::NotFound,
            Reason::MethodNotAllowed,
            Reason::NotAcceptable,
            Reason::Timeout,
            Reason::AlreadyExists,
            Reason::Conflict,
            Reason::Expired,
            Reason::UnsupportedMediaType,
            Reason::RequestHeaderFieldsTooLarge,
            Reason::Invalid,
            Reason::TooManyRequests,
            Reason::InternalError,
            Reason::ServiceUnavailable,
        ] {
            let (code, text) = reason.row();
            assert_eq!(reason.status_code().as_u16(), code, "{text}");
            let o = object(reason, "m", Some(Details { name: "n", group: "g", resource: "r" }));
            assert_eq!((o["code"].as_u64(), o["reason"].as_str()), (Some(u64::from(code)), Some(text)));
            assert_eq!(o["details"]["kind"], "r");
        }
    }
}
