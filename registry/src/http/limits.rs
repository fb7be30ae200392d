//! Limits that protect the service from its clients, enforced by one actix middleware ([`enforce`], wrapped around
//! the app by [`super::serve_with`] with a [`Guard`] built from `[limits]`):
//!
//! - request head size: a request line plus headers over `max-header-bytes` gets 431 (actix itself refuses heads
//!   over 128 KiB or with more than 96 headers with a bare 431, and `header-timeout` bounds the time to send one);
//! - per-client request rate (`governor`, one bucket per client in a bounded `quick_cache`): the client is the API
//!   token, user or service account the credentials authenticate, else the client address
//!   ([`super::client_addr`]); over the rate: 429 `TOOMANYREQUESTS` with `Retry-After`; health probes are spared;
//! - concurrent uploads on this replica: requests streaming blob data (upload `PATCH` and `PUT`, and a `POST` that
//!   starts an upload with a body) hold a permit until answered; none left: 429 with `Retry-After`;
//! - slow bodies: a body that stays silent for `body-idle-timeout`, or averages under `body-min-rate` bytes per
//!   second over a `body-rate-window`, ends with 408 and a closed connection. Only time spent waiting for the
//!   client counts, not time the server spends writing what it got.
//!
//! Refusals speak the route's wire format: OCI error bodies on `/v2` and the token endpoint, Kubernetes `Status`
//! bodies on the stream and access-control APIs. This module reads the parsed [`Endpoint`] and authenticates
//! through [`super::auth::caller`] (which remembers the caller for the handlers); it calls nothing else.

use std::future::Future;
use std::net::IpAddr;
use std::num::NonZeroU32;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use actix_web::body::{EitherBody, MessageBody};
use actix_web::dev::{Payload, ServiceRequest, ServiceResponse};
use actix_web::error::PayloadError;
use actix_web::http::Method;
use actix_web::middleware::Next;
use actix_web::{web, HttpMessage, HttpResponse};
use auth::{Caller, Identity, Via};
use futures::Stream;
use governor::clock::{Clock, DefaultClock};
use tokio::time::{Instant, Sleep};

use super::endpoint::Endpoint;
use super::errors::{ApiError, ErrorCode};
use super::status::{self, Reason};
use crate::config::limits::{Limits, RateLimit};
use crate::service::Registry;

/// How long a client refused for the upload cap is told to wait.
const UPLOAD_RETRY_AFTER: Duration = Duration::from_secs(2);

type Bucket = governor::DefaultDirectRateLimiter;

/// The per-client buckets.
struct RateLimiter {
    quota: governor::Quota,
    clock: DefaultClock,
    clients: quick_cache::sync::Cache<String, Arc<Bucket>>,
}

impl RateLimiter {
    fn new(rate: &RateLimit) -> RateLimiter {
        let period = Duration::from_secs_f64(1.0 / rate.per_second).max(Duration::from_nanos(1));
        let burst = NonZeroU32::new(rate.burst).unwrap_or(NonZeroU32::MIN);
        let quota =
            governor::Quota::with_period(period).map_or(governor::Quota::per_second(burst), |q| q.allow_burst(burst));
        RateLimiter { quota, clock: DefaultClock::default(), clients: quick_cache::sync::Cache::new(rate.clients) }
    }

    /// Takes one request from `client`'s bucket; `Err(wait)` when it is empty.
    fn check(&self, client: &str) -> Result<(), Duration> {
        let bucket = self
            .clients
            .get_or_insert_with(client, || {
                Ok::<_, std::convert::Infallible>(Arc::new(Bucket::direct_with_clock(self.quota, self.clock.clone())))
            })
            .unwrap_or_else(|never| match never {});
        bucket.check().map_err(|not_until| not_until.wait_time_from(self.clock.now()))
    }
}

/// The limits in force, registered as app data.
pub struct Guard {
    rate: Option<RateLimiter>,
    uploads: Option<Arc<tokio::sync::Semaphore>>,
    body: BodyLimits,
    max_header_bytes: usize,
}

#[derive(Debug, Clone, Copy)]
struct BodyLimits {
    idle: Duration,
    min_rate: u64,
    window: Duration,
}

impl Guard {
    pub fn new(limits: &Limits) -> Guard {
        Guard {
            rate: limits.rate.as_ref().map(RateLimiter::new),
            uploads: limits.max_concurrent_uploads.map(|n| Arc::new(tokio::sync::Semaphore::new(n))),
            body: BodyLimits {
                idle: limits.body_idle_timeout,
                min_rate: limits.body_min_rate,
                window: limits.body_rate_window,
            },
            max_header_bytes: limits.max_header_bytes,
        }
    }
}

/// Which wire format a refusal speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Format {
    Oci,
    Kube,
}

fn format_of(req: &ServiceRequest) -> Format {
    let path = req.path();
    let kube = super::kube::ApiVersion::of_path(path).is_some()
        || path.starts_with(super::admin_api::BASE)
        || path == "/api"
        || path == "/apis"
        || path.starts_with("/api/")
        || path.starts_with("/apis/");
    if kube {
        Format::Kube
    } else {
        Format::Oci
    }
}

/// A refusal in the route's format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Refusal {
    HeadersTooLarge,
    TooManyRequests(Duration),
    TooManyUploads,
    BodyTooSlow,
}

fn retry_after(wait: Duration) -> String {
    // Whole seconds, rounded up: a client that waits this long finds a token.
    let secs = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
    secs.max(1).to_string()
}

fn refuse(format: Format, refusal: Refusal) -> HttpResponse {
    let (code, reason, message, wait) = match refusal {
        Refusal::HeadersTooLarge => {
            (ErrorCode::Unsupported, Reason::RequestHeaderFieldsTooLarge, "request headers too large".to_owned(), None)
        }
        Refusal::TooManyRequests(wait) => {
            (ErrorCode::TooManyRequests, Reason::TooManyRequests, "too many requests: slow down".to_owned(), Some(wait))
        }
        Refusal::TooManyUploads => (
            ErrorCode::TooManyRequests,
            Reason::TooManyRequests,
            "too many uploads in progress: try again shortly".to_owned(),
            Some(UPLOAD_RETRY_AFTER),
        ),
        Refusal::BodyTooSlow => {
            (ErrorCode::BlobUploadInvalid, Reason::Timeout, "the request body arrived too slowly".to_owned(), None)
        }
    };
    let mut resp = match format {
        // Built from the error so that the audit log reads its code.
        Format::Oci => HttpResponse::from_error(ApiError::new(code).status(reason.status_code()).message(message)),
        Format::Kube => status::failure(reason, message),
    };
    if let Some(wait) = wait {
        if let Ok(v) = actix_web::http::header::HeaderValue::from_str(&retry_after(wait)) {
            resp.headers_mut().insert(actix_web::http::header::RETRY_AFTER, v);
        }
    }
    if refusal == Refusal::BodyTooSlow {
        resp.head_mut().set_connection_type(actix_web::http::ConnectionType::Close);
    }
    resp
}

/// Bytes of the request line and headers, as sent (give or take the line ends).
fn head_bytes(req: &ServiceRequest) -> usize {
    let line = req.method().as_str().len() + req.path().len() + req.query_string().len() + 12;
    line + req.headers().iter().map(|(k, v)| k.as_str().len() + v.len() + 4).sum::<usize>()
}

/// Whether the request may have a body: a length over zero, chunked, or HTTP/2 (where neither need be said).
fn has_body(req: &ServiceRequest) -> bool {
    req.version() == actix_web::http::Version::HTTP_2
        || req.headers().contains_key(actix_web::http::header::TRANSFER_ENCODING)
        || req
            .headers()
            .get(actix_web::http::header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok())
            .is_some_and(|n| n > 0)
}

/// The client a rate limit counts against: the token, user or service account, else the address.
fn client_key(caller: Option<&Caller>, addr: Option<IpAddr>) -> String {
    if let Some(caller) = caller {
        if let Via::ApiToken(id) = &caller.via {
            return format!("token:{id}");
        }
        match &caller.identity {
            Identity::User { .. } | Identity::ServiceAccount { .. } => {
                return format!("who:{}", caller.identity.name())
            }
            Identity::Anonymous => {}
        }
    }
    addr.map_or_else(|| "addr:-".to_owned(), |a| format!("addr:{a}"))
}

/// Whether the request streams blob data into an upload.
fn is_upload(req: &ServiceRequest) -> bool {
    let Some(Ok(endpoint)) = Endpoint::of_request(req.request()) else { return false };
    match (&endpoint, req.method()) {
        (Endpoint::Upload(..), &Method::PATCH | &Method::PUT) => true,
        (Endpoint::StartUpload(_), &Method::POST) => has_body(req),
        (
            Endpoint::Base
            | Endpoint::Catalog
            | Endpoint::Manifest(..)
            | Endpoint::Blob(..)
            | Endpoint::StartUpload(_)
            | Endpoint::Upload(..)
            | Endpoint::Tags(_)
            | Endpoint::Referrers(..),
            _,
        ) => false,
    }
}

/// Applies the limits (see the module documentation).
pub async fn enforce<B: MessageBody>(
    mut req: ServiceRequest,
    next: Next<B>,
) -> Result<ServiceResponse<EitherBody<B>>, actix_web::Error> {
    let Some(guard) = req.app_data::<web::Data<Guard>>().cloned() else {
        return Ok(next.call(req).await?.map_into_left_body());
    };
    let format = format_of(&req);
    if head_bytes(&req) > guard.max_header_bytes {
        return Ok(req.into_response(refuse(format, Refusal::HeadersTooLarge)).map_into_right_body());
    }
    if let Some(rate) = guard.rate.as_ref().filter(|_| !super::health::is_probe(req.path())) {
        let caller = match req.app_data::<web::Data<Registry>>() {
            // Invalid credentials count against the address; the handler answers them as before.
            Some(reg) => super::auth::caller(req.request(), reg).await.ok(),
            None => None,
        };
        let key = client_key(caller.as_ref(), super::client_addr::client_addr(req.request()).map(|a| a.ip));
        if let Err(wait) = rate.check(&key) {
            return Ok(req.into_response(refuse(format, Refusal::TooManyRequests(wait))).map_into_right_body());
        }
    }
    let _permit = match (&guard.uploads, is_upload(&req)) {
        (Some(uploads), true) => match uploads.clone().try_acquire_owned() {
            Ok(permit) => Some(permit),
            Err(_) => return Ok(req.into_response(refuse(format, Refusal::TooManyUploads)).map_into_right_body()),
        },
        _ => None,
    };
    if !has_body(&req) {
        return Ok(next.call(req).await?.map_into_left_body());
    }
    let too_slow = Arc::new(AtomicBool::new(false));
    let body = TimedBody::new(req.take_payload(), guard.body, too_slow.clone());
    req.set_payload(Payload::from(Box::pin(body) as Pin<Box<dyn Stream<Item = Result<web::Bytes, PayloadError>>>>));
    let res = next.call(req).await?;
    if too_slow.load(Ordering::SeqCst) {
        tracing::info!("request body too slow: connection closed");
        let (req, _) = res.into_parts();
        return Ok(ServiceResponse::new(req, refuse(format, Refusal::BodyTooSlow)).map_into_right_body());
    }
    Ok(res.map_into_left_body())
}

/// A request body that fails when the client is too slow (see [`BodyLimits`]), setting `too_slow`.
struct TimedBody {
    inner: Payload,
    limits: BodyLimits,
    too_slow: Arc<AtomicBool>,
    timer: Pin<Box<Sleep>>,
    /// When the last piece arrived.
    last_piece: Instant,
    window_start: Instant,
    window_bytes: u64,
    /// When a piece was last handed on, while the reader has not asked for more since (its time is not the
    /// client's).
    handed_on: Option<Instant>,
    done: bool,
}

impl TimedBody {
    fn new(inner: Payload, limits: BodyLimits, too_slow: Arc<AtomicBool>) -> TimedBody {
        let now = Instant::now();
        let mut body = TimedBody {
            inner,
            limits,
            too_slow,
            timer: Box::pin(tokio::time::sleep_until(now)),
            last_piece: now,
            window_start: now,
            window_bytes: 0,
            handed_on: None,
            done: false,
        };
        let deadline = body.deadline();
        body.timer.as_mut().reset(deadline);
        body
    }

    fn deadline(&self) -> Instant {
        let idle = self.last_piece + self.limits.idle;
        if self.limits.min_rate > 0 {
            idle.min(self.window_start + self.limits.window)
        } else {
            idle
        }
    }

    /// Whether the client has been too slow by `now`; starts a new rate window when one passed at a good rate.
    fn check(&mut self, now: Instant) -> bool {
        if now >= self.last_piece + self.limits.idle {
            return true;
        }
        if self.limits.min_rate > 0 && now >= self.window_start + self.limits.window {
            let needed = (self.limits.min_rate as f64 * self.limits.window.as_secs_f64()) as u64;
            if self.window_bytes < needed {
                return true;
            }
            self.window_start = now;
            self.window_bytes = 0;
        }
        false
    }
}

impl Stream for TimedBody {
    type Item = Result<web::Bytes, PayloadError>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        if this.done {
            return Poll::Ready(None);
        }
        let now = Instant::now();
        if let Some(at) = this.handed_on.take() {
            // The reader was busy (writing to storage) since it got the last piece: not the client's time.
            let busy = now.saturating_duration_since(at);
            this.last_piece += busy;
            this.window_start += busy;
        }
        match Pin::new(&mut this.inner).poll_next(cx) {
            Poll::Ready(Some(Ok(piece))) => {
                this.last_piece = now;
                this.window_bytes += piece.len() as u64;
                this.handed_on = Some(now);
                let deadline = this.deadline();
                this.timer.as_mut().reset(deadline);
                return Poll::Ready(Some(Ok(piece)));
            }
            Poll::Ready(other) => {
                this.done = other.is_none();
                return Poll::Ready(other);
            }
            Poll::Pending => {}
        }
        loop {
            let deadline = this.deadline();
            if this.timer.deadline() != deadline {
                this.timer.as_mut().reset(deadline);
            }
            if this.timer.as_mut().poll(cx).is_pending() {
                return Poll::Pending;
            }
            if this.check(Instant::now()) {
                this.done = true;
                this.too_slow.store(true, Ordering::SeqCst);
                let e = std::io::Error::new(std::io::ErrorKind::TimedOut, "request body too slow");
                return Poll::Ready(Some(Err(PayloadError::Io(e))));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_after_rounds_up() {
        assert_eq!(retry_after(Duration::from_millis(1)), "1");
        assert_eq!(retry_after(Duration::from_millis(1500)), "2");
        assert_eq!(retry_after(Duration::from_secs(3)), "3");
        assert_eq!(retry_after(Duration::ZERO), "1");
    }

    #[test]
    fn buckets_per_client() {
        let limiter = RateLimiter::new(&RateLimit { per_second: 1.0, burst: 2, clients: 10 });
        assert!(limiter.check("a").is_ok());
        assert!(limiter.check("a").is_ok());
        let wait = limiter.check("a").unwrap_err();
        assert!(wait > Duration::ZERO && wait <= Duration::from_secs(1), "{wait:?}");
        assert!(limiter.check("b").is_ok(), "another client has its own bucket");
    }

    #[test]
    fn keys() {
        let addr = Some("10.1.2.3".parse().unwrap());
        assert_eq!(client_key(None, addr), "addr:10.1.2.3");
        assert_eq!(client_key(Some(&Caller::anonymous()), addr), "addr:10.1.2.3");
        let alice = Caller {
            identity: Identity::User { name: "alice".parse().unwrap(), groups: vec![] },
            via: Via::Jwt { access: vec![] },
        };
        assert_eq!(client_key(Some(&alice), addr), "who:alice");
    }
}
