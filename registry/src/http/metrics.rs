//! `GET /metrics`: the Prometheus text exposition of [`crate::metrics::Metrics`]. Registered by
//! [`super::configure`] only while metrics are enabled (`[metrics] enabled`; otherwise 404). Readable by anyone when
//! `[metrics] anonymous` is set; otherwise the caller needs `get metrics` (cluster-scoped: `cluster-admin`),
//! presented as an API token (`Authorization: Bearer <token>`, or Basic with the token as password, which is
//! what Prometheus' `authorization` and `basic_auth` scrape settings send). Refusals are 401 (no or bad
//! credentials, with a `WWW-Authenticate` challenge) or 403, with the API's JSON status body.

use actix_web::{web, HttpRequest, HttpResponse};
use auth::AuthError;

use super::admin_api::auth_status;
use crate::metrics::Refusal;
use crate::service::Registry;

/// `GET /metrics`.
async fn metrics(req: HttpRequest, reg: web::Data<Registry>) -> HttpResponse {
    if !reg.metrics.config().anonymous {
        let allowed = match super::auth::caller(&req, &reg).await {
            Ok(caller) => reg.auth.require_metrics_reader(&caller).await,
            Err(e) => Err(e),
        };
        if let Err(e) = allowed {
            match e {
                AuthError::Unauthenticated => super::auth::refused(&req, Refusal::Unauthenticated),
                AuthError::Forbidden => super::auth::refused(&req, Refusal::Denied),
                // Bad credentials were marked by `caller`; store errors are no refusal.
                _ => {}
            }
            let mut response = auth_status(&e);
            if response.status() == actix_web::http::StatusCode::UNAUTHORIZED {
                let challenge = actix_web::http::header::HeaderValue::from_static("Basic realm=\"tributary metrics\"");
                response.headers_mut().insert(actix_web::http::header::WWW_AUTHENTICATE, challenge);
            }
            return response;
        }
    }
    let (text, content_type) = reg.metrics.encode();
    HttpResponse::Ok().content_type(content_type).insert_header(("Cache-Control", "no-store")).body(text)
}

/// Registers `GET /metrics`.
pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.route("/metrics", web::get().to(metrics));
}
