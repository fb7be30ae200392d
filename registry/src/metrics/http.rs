//! The HTTP request metrics, recorded by the request log middleware: `tributary_http_requests_total{route,method,
//! status}` and `tributary_http_request_duration_seconds{route,method}`. The two families hold what `/metrics`
//! shows. In front of them, [`HttpMetrics`] keeps per route and method that pair's members (its histogram and its
//! first few status counters, handles sharing the families' counts), so a request whose route and method were seen
//! before costs one short hash under a read lock, two atomic adds for the duration and one for the status: no
//! allocation, and none of the families' keyed lookups.

use std::borrow::Cow;
use std::collections::HashMap;
use std::sync::{OnceLock, PoisonError, RwLock};
use std::time::Duration;

use actix_web::http::Method;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::registry::Registry as PromRegistry;

use super::histogram::{self, Histogram};

/// A request's route label: `oci:<kind>`, `oci:unknown`, `unmatched` (borrowed) or an API route pattern (see
/// `crate::http::request_log::route_of`). A bounded set: never a path.
pub type Route = Cow<'static, str>;

/// `tributary_http_requests_total`'s labels.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    route: Route,
    method: Cow<'static, str>,
    status: u16,
}

/// `tributary_http_request_duration_seconds`' labels.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RouteLabels {
    route: Route,
    method: Cow<'static, str>,
}

/// Statuses per route and method counted through [`RouteEntry::statuses`]; any more through the family's map.
const STATUS_SLOTS: usize = 6;

/// One route and method's members of the two families.
#[derive(Debug)]
struct RouteEntry {
    labels: RouteLabels,
    duration: Histogram,
    /// Filled in the order statuses are first seen.
    statuses: [OnceLock<(u16, Counter)>; STATUS_SLOTS],
}

impl RouteEntry {
    fn record(&self, requests: &Family<RequestLabels, Counter>, status: u16, elapsed: Duration) {
        self.duration.observe(elapsed);
        let labels = || RequestLabels { route: self.labels.route.clone(), method: self.labels.method.clone(), status };
        for slot in &self.statuses {
            let (seen, counter) = slot.get_or_init(|| (status, requests.get_or_create_owned(&labels())));
            if *seen == status {
                counter.inc();
                return;
            }
        }
        requests.get_or_create(&labels()).inc();
    }
}

/// The HTTP request families and the entries resolved from them (see the module documentation).
#[derive(Debug)]
pub struct HttpMetrics {
    requests: Family<RequestLabels, Counter>,
    durations: Family<RouteLabels, Histogram, fn() -> Histogram>,
    routes: RwLock<HashMap<(Route, Method), RouteEntry, foldhash::fast::RandomState>>,
}

fn request_histogram() -> Histogram {
    Histogram::new(histogram::REQUEST_BUCKETS)
}

/// The label of `method`: borrowed for the standard ones.
fn method_label(method: &Method) -> Cow<'static, str> {
    const STANDARD: [&str; 9] = ["GET", "HEAD", "PUT", "POST", "PATCH", "DELETE", "OPTIONS", "CONNECT", "TRACE"];
    match STANDARD.into_iter().find(|m| *m == method.as_str()) {
        Some(m) => Cow::Borrowed(m),
        None => Cow::Owned(method.as_str().to_owned()),
    }
}

impl Default for HttpMetrics {
    fn default() -> HttpMetrics {
        HttpMetrics {
            requests: Family::default(),
            durations: Family::new_with_constructor(request_histogram),
            routes: RwLock::default(),
        }
    }
}

impl HttpMetrics {
    /// Registers the two families.
    pub fn register(&self, r: &mut PromRegistry) {
        // Counters get `_total` from the encoder: register them without it.
        r.register("tributary_http_requests", "HTTP requests by route, method and status", self.requests.clone());
        r.register(
            "tributary_http_request_duration_seconds",
            "HTTP request duration until the response head, by route and method",
            self.durations.clone(),
        );
    }

    /// One request answered: counted by route, method and status, its duration by route and method.
    pub fn record(&self, route: Route, method: Method, status: u16, elapsed: Duration) {
        let key = (route, method);
        if let Some(entry) = self.routes.read().unwrap_or_else(PoisonError::into_inner).get(&key) {
            entry.record(&self.requests, status, elapsed);
            return;
        }
        let mut routes = self.routes.write().unwrap_or_else(PoisonError::into_inner);
        let entry = routes.entry(key).or_insert_with_key(|(route, method)| {
            let labels = RouteLabels { route: route.clone(), method: method_label(method) };
            let duration = self.durations.get_or_create_owned(&labels);
            RouteEntry { labels, duration, statuses: Default::default() }
        });
        entry.record(&self.requests, status, elapsed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn exposition(http: &HttpMetrics) -> String {
        let mut registry = PromRegistry::default();
        http.register(&mut registry);
        let mut text = String::new();
        prometheus_client::encoding::prometheus_text::encode(&mut text, &registry).unwrap();
        text
    }

    #[test]
    fn requests_are_counted_by_route_method_and_status_past_the_resolved_statuses() {
        let http = HttpMetrics::default();
        let ms = Duration::from_millis(1);
        let statuses = [200, 404, 401, 403, 500, 502, 503, 206];
        assert!(statuses.len() > STATUS_SLOTS);
        for (i, status) in statuses.into_iter().enumerate() {
            for _ in 0..=i {
                http.record(Cow::Borrowed("oci:manifest"), Method::GET, status, ms);
            }
        }
        http.record(Cow::Owned("/apis/v1/things".into()), Method::from_bytes(b"PURGE").unwrap(), 200, ms);
        let text = exposition(&http);
        for (i, status) in statuses.into_iter().enumerate() {
            let line = format!(
                "tributary_http_requests_total{{route=\"oci:manifest\",method=\"GET\",status=\"{status}\"}} {}\n",
                i + 1
            );
            assert!(text.contains(&line), "{line}\n{text}");
        }
        let total: usize = (1..=statuses.len()).sum();
        let count =
            format!("tributary_http_request_duration_seconds_count{{route=\"oci:manifest\",method=\"GET\"}} {total}\n");
        assert!(text.contains(&count), "{text}");
        let other = "tributary_http_requests_total{route=\"/apis/v1/things\",method=\"PURGE\",status=\"200\"} 1\n";
        assert!(text.contains(other), "{text}");
    }
}
