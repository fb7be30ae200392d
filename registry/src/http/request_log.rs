//! The request log: an actix middleware ([`log_request`], wrapped around the app by [`super::serve`]) that runs each
//! request in a tracing span and writes one `info` event per request with its method, route (the OCI
//! [`Endpoint`] kind or the API route pattern, never the raw path: a bounded set), status, bytes received and
//! sent, duration, client address and user. The user is what [`super::auth::caller`] authenticated
//! ([`LoggedUser`]); health probes are logged at `debug` so that they do not drown the log.

use std::time::Instant;

use actix_web::body::{BodySize, MessageBody};
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::middleware::Next;
use actix_web::HttpMessage;
use tracing::Instrument;

use super::endpoint::Endpoint;

/// The authenticated caller's name, left in the request's extensions for the request log.
#[derive(Debug, Clone)]
pub struct LoggedUser(pub String);

/// The route of a request as logs name it: `oci:<kind>` for `/v2` (see [`Endpoint::kind`]), the matched route
/// pattern for the APIs, `unmatched` otherwise.
pub fn route_of(req: &ServiceRequest) -> String {
    if let Some(parsed) = Endpoint::of_request(req.request()) {
        return match parsed {
            Ok(endpoint) => format!("oci:{}", endpoint.kind()),
            // The token endpoint lives under /v2 too.
            Err(_) => req.match_pattern().filter(|p| p != "/v2").unwrap_or_else(|| "oci:unknown".to_owned()),
        };
    }
    req.match_pattern().unwrap_or_else(|| "unmatched".to_owned())
}

fn is_probe(path: &str) -> bool {
    path == "/healthz" || path == "/readyz"
}

/// Wraps each request in a span and logs its outcome (see the module documentation).
pub async fn log_request(
    req: ServiceRequest,
    next: Next<impl MessageBody>,
) -> Result<ServiceResponse<impl MessageBody>, actix_web::Error> {
    let started = Instant::now();
    let method = req.method().to_string();
    let route = route_of(&req);
    let probe = is_probe(req.path());
    let client =
        super::client_addr::client_addr(req.request()).map(|a| a.to_string()).unwrap_or_else(|| "-".to_owned());
    let bytes_in = req
        .headers()
        .get(actix_web::http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    let span = tracing::info_span!("request", method = %method, route = %route);
    async move {
        let result = next.call(req).await;
        let (status, bytes_out, user) = match &result {
            Ok(res) => {
                let bytes_out = match res.response().body().size() {
                    BodySize::Sized(n) => Some(n),
                    BodySize::None => Some(0),
                    BodySize::Stream => None,
                };
                let user = res.request().extensions().get::<LoggedUser>().map(|u| u.0.clone());
                (res.status().as_u16(), bytes_out, user)
            }
            Err(e) => (e.as_response_error().status_code().as_u16(), None, None),
        };
        let duration_ms = started.elapsed().as_secs_f64() * 1000.0;
        let user = user.as_deref().unwrap_or("-");
        // One line, at debug for health probes (they would flood the log) and info for everything else.
        macro_rules! request_line {
            ($level:ident) => {
                tracing::$level!(
                    method = %method,
                    route = %route,
                    status,
                    bytes_in,
                    bytes_out,
                    duration_ms,
                    client = %client,
                    user = %user,
                    "request"
                )
            };
        }
        if probe {
            request_line!(debug);
        } else {
            request_line!(info);
        }
        result
    }
    .instrument(span)
    .await
}
