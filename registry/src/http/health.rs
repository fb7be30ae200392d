//! Health endpoints, unauthenticated and outside `/v2`: `/healthz` (live: the process serves HTTP) and `/readyz`
//! (ready: the metadata store and the blob store both answer within [`CHECK_TIMEOUT`]), with a JSON body naming
//! each check and why it failed. Registered by [`super::configure`]; probed by Kubernetes, compose
//! (deploy/healthcheck.sh) and load balancers. Results are cached for [`CACHE_FOR`] and concurrent probes share
//! one check, so probes cannot hammer the stores.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use actix_web::{web, HttpResponse};
use serde::Serialize;

use crate::service::Registry;

/// How long each store has to answer a readiness check.
pub const CHECK_TIMEOUT: Duration = Duration::from_secs(2);

/// How long a readiness result is served from cache.
pub const CACHE_FOR: Duration = Duration::from_secs(1);

/// The outcome of one check.
#[derive(Debug, Clone, Serialize)]
pub struct Check {
    pub ok: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// The body of `/readyz`: `{"status":"ready"|"unready","checks":{"metadata":{…},"blobs":{…}}}`.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub status: &'static str,
    pub checks: BTreeMap<&'static str, Check>,
}

impl Report {
    pub fn ready(&self) -> bool {
        self.checks.values().all(|c| c.ok)
    }
}

/// The readiness cache, one per server (shared by its workers).
#[derive(Default)]
pub struct Readiness {
    last: tokio::sync::Mutex<Option<(Instant, Report)>>,
}

impl Readiness {
    /// The latest report, checked again when older than [`CACHE_FOR`]. A probe arriving while another checks
    /// waits for that check's result.
    pub async fn report(&self, reg: &Registry) -> Report {
        let mut last = self.last.lock().await;
        if let Some((at, report)) = &*last {
            if at.elapsed() < CACHE_FOR {
                return report.clone();
            }
        }
        let report = probe(reg).await;
        if !report.ready() {
            tracing::warn!(checks = %serde_json::to_string(&report.checks).unwrap_or_default(), "not ready");
        }
        *last = Some((Instant::now(), report.clone()));
        report
    }
}

/// Asks both stores at once: the metadata store for its revision (etcd: a count-only range read of etcd itself;
/// redb: a read transaction), the blob store to list its `blobs/` prefix (S3: a LIST of the bucket; filesystem:
/// the store's directory must exist and be listable).
async fn probe(reg: &Registry) -> Report {
    let metadata = within(async { reg.meta.revision().await.map(|_| ()).map_err(|e| e.to_string()) });
    let blobs = within(async { reg.blobs.check().await.map_err(|e| e.to_string()) });
    let (metadata, blobs) = futures::join!(metadata, blobs);
    let checks = BTreeMap::from([("metadata", metadata), ("blobs", blobs)]);
    let status = if checks.values().all(|c| c.ok) { "ready" } else { "unready" };
    Report { status, checks }
}

async fn within(check: impl std::future::Future<Output = Result<(), String>>) -> Check {
    match tokio::time::timeout(CHECK_TIMEOUT, check).await {
        Ok(Ok(())) => Check { ok: true, error: None },
        Ok(Err(e)) => Check { ok: false, error: Some(e) },
        Err(_) => Check { ok: false, error: Some(format!("no answer within {} s", CHECK_TIMEOUT.as_secs())) },
    }
}

/// `GET /healthz`: 200 while the process serves.
async fn healthz() -> HttpResponse {
    HttpResponse::Ok().json(serde_json::json!({ "status": "live" }))
}

/// `GET /readyz`: 200 when both stores answer, else 503; the body says which check failed and why.
async fn readyz(reg: web::Data<Registry>, readiness: Option<web::Data<Readiness>>) -> HttpResponse {
    let report = match readiness {
        Some(cache) => cache.report(&reg).await,
        None => probe(&reg).await,
    };
    let mut response = if report.ready() { HttpResponse::Ok() } else { HttpResponse::ServiceUnavailable() };
    response.insert_header(("Cache-Control", "no-store")).json(report)
}

/// Registers `/healthz` and `/readyz` (GET and HEAD).
/// Whether `path` is a health probe (orchestrators call these often; the rate limit and the request log spare them).
pub fn is_probe(path: &str) -> bool {
    path == "/healthz" || path == "/readyz"
}

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(web::resource("/healthz").route(web::get().to(healthz)).route(web::head().to(healthz)))
        .service(web::resource("/readyz").route(web::get().to(readyz)).route(web::head().to(readyz)));
}
