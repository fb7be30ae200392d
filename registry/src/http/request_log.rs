//! The request log: an actix middleware ([`log_request`], wrapped around the app by [`super::serve`]) that runs each
//! request in a tracing span and writes one `info` event per request with its method, route (the OCI
//! [`Endpoint`] kind or the API route pattern, never the raw path: a bounded set), status, bytes received and
//! sent, duration, client address and user. The user is what [`super::auth::caller`] authenticated
//! ([`LoggedUser`]); health probes are logged at `debug` so that they do not drown the log.
//!
//! With metrics enabled the same middleware, from the same parse of the request (its route), counts the request
//! by route, method and status, times it until the response head, counts the body bytes received and sent
//! ([`Counted`] wraps the response body, a counting stream the request body), and counts an auth refusal that a
//! handler marked on the request ([`super::auth::refused`]).

use std::pin::Pin;
use std::task::{Context, Poll};

use actix_web::body::{BodySize, MessageBody};
use actix_web::dev::{Payload, ServiceRequest, ServiceResponse};
use actix_web::middleware::Next;
use actix_web::{web, HttpMessage};
use bytes::Bytes;
use futures::StreamExt;
use prometheus_client::metrics::counter::Counter;
use tracing::Instrument;

use super::client_addr::ClientAddr;
use super::endpoint::Endpoint;
use crate::metrics::clock::Instant;
use crate::metrics::{Refusal, Route};
use crate::service::Registry;

/// The authenticated caller's name, left in the request's extensions for the request log.
#[derive(Debug, Clone)]
pub struct LoggedUser(pub String);

/// The route of a request as logs and metrics name it: `oci:<kind>` for `/v2` (see [`Endpoint::route`]), the
/// matched route pattern for the APIs, `unmatched` otherwise. Only a pattern is allocated (by actix).
pub fn route_of(req: &ServiceRequest) -> Route {
    let oci = Endpoint::with_request(req.request(), |parsed| parsed.as_ref().ok().map(Endpoint::route));
    match oci {
        Some(Some(route)) => Route::Borrowed(route),
        // The token endpoint lives under /v2 too.
        Some(None) => req.match_pattern().filter(|p| p != "/v2").map_or(Route::Borrowed("oci:unknown"), Route::Owned),
        None => req.match_pattern().map_or(Route::Borrowed("unmatched"), Route::Owned),
    }
}

/// A client address as the log line shows it, `-` when unknown; formatted only when the line is written.
struct ClientField(Option<ClientAddr>);

impl std::fmt::Display for ClientField {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.0 {
            Some(addr) => addr.fmt(f),
            None => f.write_str("-"),
        }
    }
}

fn is_probe(path: &str) -> bool {
    path == "/healthz" || path == "/readyz"
}

/// Wraps each request in a span and logs its outcome (see the module documentation).
pub async fn log_request(
    mut req: ServiceRequest,
    next: Next<impl MessageBody>,
) -> Result<ServiceResponse<impl MessageBody>, actix_web::Error> {
    let started = Instant::now();
    let method = req.method().clone();
    let route = route_of(&req);
    let probe = is_probe(req.path());
    let client = ClientField(super::client_addr::client_addr(req.request()));
    let content_length = req.headers().get(actix_web::http::header::CONTENT_LENGTH).and_then(|v| v.to_str().ok());
    let bytes_in = content_length.and_then(|v| v.parse::<u64>().ok());
    let declares_body = content_length.is_some_and(|v| v.trim() != "0");
    let metrics = req.app_data::<web::Data<Registry>>().map(|r| r.metrics.clone()).filter(|m| m.config().enabled);
    if let Some(m) = &metrics {
        count_request_body(&mut req, declares_body, m.received_bytes().clone());
    }
    let span = tracing::info_span!("request", method = %method, route = %route);
    async move {
        let result = next.call(req).await;
        let (status, bytes_out, refusal) = match &result {
            Ok(res) => {
                let bytes_out = match res.response().body().size() {
                    BodySize::Sized(n) => Some(n),
                    BodySize::None => Some(0),
                    BodySize::Stream => None,
                };
                (res.status().as_u16(), bytes_out, res.request().extensions().get::<Refusal>().copied())
            }
            Err(e) => (e.as_response_error().status_code().as_u16(), None, None),
        };
        // One clock read serves the log line and the metric.
        let elapsed = started.elapsed();
        {
            let extensions = result.as_ref().ok().map(|res| res.request().extensions());
            let user = extensions.as_ref().and_then(|e| e.get::<LoggedUser>()).map_or("-", |u| u.0.as_str());
            let duration_ms = elapsed.as_secs_f64() * 1000.0;
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
        }
        let sent = match metrics {
            Some(m) => {
                m.http_request(route, method, status, elapsed);
                if let Some(reason) = refusal {
                    m.auth_refused(reason);
                }
                Some(m.sent_bytes().clone())
            }
            None => None,
        };
        result.map(|res| res.map_body(|_, inner| Counted { inner, counter: sent }))
    }
    .instrument(span)
    .await
}

/// Counts the request body's bytes as the handler reads them. Only requests that carry a body are wrapped: a
/// non-zero `Content-Length` (`declares_body`) or a `Transfer-Encoding`.
fn count_request_body(req: &mut ServiceRequest, declares_body: bool, counter: Counter) {
    if !declares_body && !req.headers().contains_key(actix_web::http::header::TRANSFER_ENCODING) {
        return;
    }
    let counted = req.take_payload().inspect(move |chunk| {
        if let Ok(chunk) = chunk {
            counter.inc_by(chunk.len() as u64);
        }
    });
    req.set_payload(Payload::Stream { payload: Box::pin(counted) });
}

pin_project_lite::pin_project! {
    /// A response body that adds the bytes it yields to a counter (none: it only passes them on).
    pub struct Counted<B> {
        #[pin]
        inner: B,
        counter: Option<Counter>,
    }
}

impl<B: MessageBody> MessageBody for Counted<B> {
    type Error = B::Error;

    fn size(&self) -> BodySize {
        self.inner.size()
    }

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Bytes, Self::Error>>> {
        let this = self.project();
        let polled = this.inner.poll_next(cx);
        if let (Some(counter), Poll::Ready(Some(Ok(chunk)))) = (this.counter.as_ref(), &polled) {
            counter.inc_by(chunk.len() as u64);
        }
        polled
    }

    fn try_into_bytes(self) -> Result<Bytes, Self> {
        let Counted { inner, counter } = self;
        match inner.try_into_bytes() {
            Ok(bytes) => {
                if let Some(counter) = &counter {
                    counter.inc_by(bytes.len() as u64);
                }
                Ok(bytes)
            }
            Err(inner) => Err(Counted { inner, counter }),
        }
    }
}
