//! The HTTP edge: the actix application (OCI routes under `/v2`, the image stream API), the request span, and the
//! server start on a given listener. The only module of Tributary that knows HTTP.

mod admin_api;
pub mod auth;
pub mod endpoint;
pub mod errors;
pub mod kube;
mod oci;
mod openapi;
mod secrets;
mod streams_api;
pub mod tls;
pub mod webhooks;

use std::net::TcpListener;

use actix_web::body::MessageBody;
use actix_web::dev::{Server, ServiceRequest, ServiceResponse};
use actix_web::middleware::{from_fn, Next};
use actix_web::{web, App, HttpServer};
use tracing::Instrument;

use crate::service::Registry;

/// Wraps each request in one tracing span and logs its outcome.
async fn request_span(
    req: ServiceRequest,
    next: Next<impl MessageBody>,
) -> Result<ServiceResponse<impl MessageBody>, actix_web::Error> {
    let span = tracing::info_span!("request", method = %req.method(), path = %req.path());
    async move {
        let res = next.call(req).await?;
        tracing::debug!(status = res.status().as_u16(), "done");
        Ok(res)
    }
    .instrument(span)
    .await
}

/// Registers every route on an actix app.
pub fn configure(registry: Registry) -> impl FnOnce(&mut web::ServiceConfig) {
    move |cfg| {
        // Routes are tried in order: the token endpoint's `/v2/token` first, then everything else under `/v2` (the
        // hot path, matched by a plain prefix rather than after every API route's pattern), then the APIs.
        cfg.app_data(web::Data::new(registry))
            .configure(self::auth::configure)
            .service(web::scope("/v2").default_service(web::to(oci::dispatch)))
            .configure(secrets::configure)
            .configure(streams_api::configure)
            .configure(admin_api::configure);
    }
}

/// Starts serving on `listener` (already bound). The returned server runs until stopped.
pub fn serve(registry: Registry, listener: TcpListener) -> std::io::Result<Server> {
    serve_with(registry, listener, None)
}

/// Like [`serve`], speaking https with `tls` (see [`tls::server_config`]).
pub fn serve_tls(registry: Registry, listener: TcpListener, tls: rustls::ServerConfig) -> std::io::Result<Server> {
    serve_with(registry, listener, Some(tls))
}

fn serve_with(registry: Registry, listener: TcpListener, tls: Option<rustls::ServerConfig>) -> std::io::Result<Server> {
    let server = HttpServer::new(move || {
        App::new()
            .wrap(from_fn(self::auth::stream_api_guard))
            .wrap(from_fn(request_span))
            .configure(configure(registry.clone()))
    });
    let server = match tls {
        Some(tls) => server.listen_rustls_0_23(listener, tls)?,
        None => server.listen(listener)?,
    };
    Ok(server.run())
}
