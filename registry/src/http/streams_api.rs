//! The image stream REST API under `/apis/image.openshift.io/v1/` (read side): discovery, image streams and
//! images, in OpenShift's JSON shapes. Errors are Kubernetes `Status` objects.

use actix_web::{web, HttpResponse};
use names::{Digest, Namespace, RepositoryName, StreamName};
use serde_json::json;

use crate::service::Registry;

fn status(code: u16, reason: &str, message: String) -> HttpResponse {
    let body = json!({
        "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
        "message": message, "reason": reason, "code": code,
    });
    HttpResponse::build(actix_web::http::StatusCode::from_u16(code).unwrap_or(actix_web::http::StatusCode::BAD_REQUEST))
        .json(body)
}

fn internal(e: impl std::fmt::Display) -> HttpResponse {
    tracing::error!(cause = %e, "internal error in the stream API");
    status(500, "InternalError", "internal error".into())
}

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.route("/apis/image.openshift.io/v1", web::get().to(discovery))
        .route("/apis/image.openshift.io/v1/namespaces/{ns}/imagestreams/{name}", web::get().to(get_stream))
        .route("/apis/image.openshift.io/v1/images/{digest}", web::get().to(get_image));
}

async fn discovery() -> HttpResponse {
    HttpResponse::Ok().json(json!({
        "kind": "APIResourceList", "apiVersion": "v1", "groupVersion": "image.openshift.io/v1",
        "resources": [
            {"name": "imagestreams", "singularName": "imagestream", "namespaced": true, "kind": "ImageStream",
             "verbs": ["get"], "shortNames": ["is"]},
            {"name": "images", "singularName": "image", "namespaced": false, "kind": "Image", "verbs": ["get"]},
        ],
    }))
}

async fn get_stream(path: web::Path<(String, String)>, reg: web::Data<Registry>) -> HttpResponse {
    let (ns, name) = path.into_inner();
    let repo = match (ns.parse::<Namespace>(), name.parse::<StreamName>()) {
        (Ok(ns), Ok(name)) => RepositoryName::new(ns, name),
        (Err(e), _) | (_, Err(e)) => return status(400, "BadRequest", e.to_string()),
    };
    match reg.streams.get_stream(&repo).await {
        Ok(Some(s)) => HttpResponse::Ok().json(s),
        Ok(None) => status(404, "NotFound", format!("imagestreams.image.openshift.io \"{name}\" not found")),
        Err(e) => internal(e),
    }
}

async fn get_image(path: web::Path<String>, reg: web::Data<Registry>) -> HttpResponse {
    let name = path.into_inner();
    let digest = match name.parse::<Digest>() {
        Ok(d) => d,
        Err(e) => return status(400, "BadRequest", e.to_string()),
    };
    match reg.streams.get_image(&digest).await {
        Ok(Some(img)) => HttpResponse::Ok().json(img),
        Ok(None) => status(404, "NotFound", format!("images.image.openshift.io \"{name}\" not found")),
        Err(e) => internal(e),
    }
}
