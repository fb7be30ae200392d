//! The HTTP edge: the actix application (OCI routes under `/v2`, the image stream API, the health endpoints,
//! `/metrics`), the request log (which also records the HTTP metrics), the audit log's records ([`audit`]), the
//! limits that protect the service ([`limits`]), and the server start on a given listener with its shutdown rules
//! and limits ([`ServeOptions`]). The only module of Tributary that knows HTTP.

mod admin_api;
pub mod audit;
pub mod auth;
pub mod client_addr;
pub(crate) mod config_api;
mod console;
pub mod endpoint;
pub mod errors;
pub mod health;
pub mod kube;
pub(crate) mod limitranges;
pub mod limits;
pub mod metrics;
mod oci;
mod openapi;
pub mod ranges;
pub mod request_log;
pub(crate) mod secrets;
pub mod status;
mod stream_pages;
pub(crate) mod streams_api;
pub mod tls;
pub mod webhooks;

use std::net::TcpListener;

use std::time::Duration;

use actix_web::dev::Server;
use actix_web::middleware::{from_fn, DefaultHeaders};
use actix_web::{web, App, HttpServer};

use crate::service::Registry;

/// Registers every route on an actix app.
pub fn configure(registry: Registry) -> impl FnOnce(&mut web::ServiceConfig) {
    move |cfg| {
        // Routes are tried in order: the token endpoint's `/v2/token` first, then everything else under `/v2` (the
        // hot path, matched by a plain prefix rather than after every API route's pattern, `/metrics`' among them:
        // serving it costs an OCI request nothing), then the APIs.
        let metrics_enabled = registry.metrics.config().enabled;
        let admission = registry.cluster.admission;
        cfg.app_data(web::Data::new(registry))
            .configure(health::configure)
            .configure(self::auth::configure)
            .service(web::scope("/v2").default_service(web::to(oci::dispatch)))
            .configure(|cfg| {
                if metrics_enabled {
                    metrics::configure(cfg);
                }
            })
            .configure(secrets::configure)
            .configure(limitranges::configure)
            .configure(streams_api::configure)
            .configure(config_api::configure)
            .configure(admin_api::configure)
            .configure(console::configure)
            .configure(|cfg| crate::cluster::admission::configure(cfg, admission));
    }
}

/// How a server stops, what it lets clients do, and where its audit log goes.
#[derive(Debug, Clone)]
pub struct ServeOptions {
    /// How long in-flight requests (uploads included) may take to finish once a graceful stop began; then their
    /// connections are closed.
    pub shutdown_timeout: Duration,
    /// Whether actix itself stops the server on SIGTERM (graceful), SIGINT and SIGQUIT (forced). `tributary serve`
    /// turns it off and handles SIGTERM and SIGINT itself (both graceful); so does the test harness.
    pub os_signals: bool,
    /// Rate limit, upload cap, body and header limits, trusted proxies (`[limits]`).
    pub limits: crate::config::limits::Limits,
    /// Where audit records go (off by default).
    pub audit: crate::audit::AuditLog,
}

/// Default of `--shutdown-timeout` (seconds).
pub const DEFAULT_SHUTDOWN_TIMEOUT_SECS: u64 = 30;

impl Default for ServeOptions {
    fn default() -> Self {
        ServeOptions {
            shutdown_timeout: Duration::from_secs(DEFAULT_SHUTDOWN_TIMEOUT_SECS),
            os_signals: false,
            limits: crate::config::limits::Limits::default(),
            audit: crate::audit::AuditLog::default(),
        }
    }
}

/// `tributary/<version>`, sent in the `Server` header of every response.
pub fn server_header() -> String {
    format!("tributary/{}", crate::VERSION)
}

/// Starts serving on `listener` (already bound). The returned server runs until stopped.
pub fn serve(registry: Registry, listener: TcpListener) -> std::io::Result<Server> {
    serve_with(registry, listener, None, ServeOptions::default())
}

/// Starts serving on `listener`, speaking https when `tls` is given (see [`tls::server_config`]), stopping as
/// `options` say. The returned server runs until stopped ([`actix_web::dev::ServerHandle::stop`]).
pub fn serve_with(
    registry: Registry,
    listener: TcpListener,
    tls: Option<rustls::ServerConfig>,
    options: ServeOptions,
) -> std::io::Result<Server> {
    let readiness = web::Data::new(health::Readiness::default());
    let guard = web::Data::new(limits::Guard::new(&options.limits));
    let proxies = web::Data::new(client_addr::TrustedProxies::new(options.limits.trusted_proxies.clone()));
    let audit_log = web::Data::new(options.audit.clone());
    // Middleware runs outside in: request log, Server header, audit record, limits, the stream API's guard.
    let server = HttpServer::new(move || {
        App::new()
            .app_data(readiness.clone())
            .app_data(guard.clone())
            .app_data(proxies.clone())
            .app_data(audit_log.clone())
            .wrap(from_fn(self::auth::stream_api_guard))
            .wrap(from_fn(limits::enforce))
            .wrap(from_fn(audit::audit_request))
            .wrap(DefaultHeaders::new().add(("Server", server_header())))
            .wrap(from_fn(request_log::log_request))
            .configure(configure(registry.clone()))
    })
    .client_request_timeout(options.limits.header_timeout)
    .shutdown_timeout(options.shutdown_timeout.as_secs());
    let server = if options.os_signals { server } else { server.disable_signals() };
    let server = match tls {
        Some(tls) => server.listen_rustls_0_23(listener, tls)?,
        None => server.listen(listener)?,
    };
    Ok(server.run())
}
