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

use super::endpoint::Endpoint;
use crate::metrics::{Refusal, RequestLabels};
use crate::service::Registry;

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
    mut req: ServiceRequest,
    next: Next<impl MessageBody>,
) -> Result<ServiceResponse<impl MessageBody>, actix_web::Error> {
    let started = quanta::Instant::now();
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
    let metrics = req.app_data::<web::Data<Registry>>().map(|r| r.metrics.clone()).filter(|m| m.config().enabled);
    if let Some(m) = &metrics {
        count_request_body(&mut req, m.received_bytes().clone());
    }
    let span = tracing::info_span!("request", method = %method, route = %route);
    async move {
        let result = next.call(req).await;
        let (status, bytes_out, user, refusal) = match &result {
            Ok(res) => {
                let bytes_out = match res.response().body().size() {
                    BodySize::Sized(n) => Some(n),
                    BodySize::None => Some(0),
                    BodySize::Stream => None,
                };
                let extensions = res.request().extensions();
                let user = extensions.get::<LoggedUser>().map(|u| u.0.clone());
                (res.status().as_u16(), bytes_out, user, extensions.get::<Refusal>().copied())
            }
            Err(e) => (e.as_response_error().status_code().as_u16(), None, None, None),
        };
        // One clock read serves the log line and the metric.
        let elapsed = started.elapsed();
        let duration_ms = elapsed.as_secs_f64() * 1000.0;
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
        let sent = match metrics {
            Some(m) => {
                m.http_request(RequestLabels { route, method, status }, elapsed);
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

/// Counts the request body's bytes as the handler reads them (only requests that carry a body are wrapped).
fn count_request_body(req: &mut ServiceRequest, counter: Counter) {
    let headers = req.headers();
    let has_body = headers.contains_key(actix_web::http::header::TRANSFER_ENCODING)
        || headers
            .get(actix_web::http::header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.trim() != "0");
    if !has_body {
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
