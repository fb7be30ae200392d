//! `/metrics` against a real server on 127.0.0.1:0: counters move by exactly what a push and a pull did, the
//! exposition parses with a Prometheus text parser, pull-through hits, misses and upstream errors are counted by
//! upstream, access needs `get metrics` (cluster-admin) unless anonymous reading is configured, metrics can be
//! turned off, and the Grafana dashboard (deploy/grafana/tributary.json) uses only metric names a real scrape has.

mod common;

use std::collections::BTreeSet;

use common::{Answer, Fake};
use names::Digest;
use prometheus_parse::{Sample, Scrape, Value};
use registry::metrics::MetricsConfig;
use registry::testing::TestRegistry;
use reqwest::{Client, Method, StatusCode};
use serde_json::json;

const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
const ADMIN: &str = "admin-token-for-metrics-tests-0123456789abcdef";

struct Http {
    base: String,
    token: Option<String>,
    http: Client,
}

impl Http {
    fn of(reg: &TestRegistry) -> Http {
        Http { base: reg.url(), token: reg.admin_token().map(str::to_owned), http: Client::new() }
    }

    fn req(&self, method: Method, path: &str) -> reqwest::RequestBuilder {
        let r = self.http.request(method, format!("{}{path}", self.base));
        match &self.token {
            Some(t) => r.bearer_auth(t),
            None => r,
        }
    }

    async fn send(&self, method: Method, path: &str, body: Vec<u8>) -> reqwest::Response {
        self.req(method, path).body(body).send().await.unwrap()
    }

    /// Scrapes `/metrics` (200 expected): the text and its parse.
    async fn scrape(&self) -> (String, Scrape) {
        let r = self.req(Method::GET, "/metrics").send().await.unwrap();
        assert_eq!(r.status(), StatusCode::OK);
        let content_type = r.headers()["content-type"].to_str().unwrap().to_owned();
        assert!(content_type.starts_with("text/plain; version=0.0.4"), "{content_type}");
        let text = r.text().await.unwrap();
        let parsed = Scrape::parse(text.lines().map(|l| Ok(l.to_owned()))).expect("the exposition parses");
        assert!(!parsed.samples.is_empty());
        (text, parsed)
    }

    /// A one-request blob upload (`POST ?digest=`).
    async fn push_blob(&self, repo: &str, bytes: &[u8]) -> Digest {
        let d = Digest::sha256_of(bytes);
        let r = self.send(Method::POST, &format!("/v2/{repo}/blobs/uploads/?digest={d}"), bytes.to_vec()).await;
        assert_eq!(r.status(), StatusCode::CREATED);
        d
    }

    async fn namespace(&self, ns: &str) {
        let r = self.req(Method::POST, "/apis/tributary.dev/v1/namespaces").json(&json!({"name": ns})).send().await;
        let s = r.unwrap().status();
        assert!(s.is_success() || s == StatusCode::CONFLICT, "{s}");
    }
}

/// The value of the sample `name` whose labels include `labels` (0 when there is none: a counter not yet moved).
fn value(scrape: &Scrape, name: &str, labels: &[(&str, &str)]) -> f64 {
    let matching: Vec<&Sample> = scrape
        .samples
        .iter()
        .filter(|s| s.metric == name && labels.iter().all(|(k, v)| s.labels.get(k) == Some(v)))
        .collect();
    assert!(matching.len() <= 1, "{name} {labels:?} names several series");
    match matching.first().map(|s| &s.value) {
        None => 0.0,
        Some(Value::Counter(v) | Value::Gauge(v) | Value::Untyped(v)) => *v,
        Some(other) => panic!("{name}: unexpected value {other:?}"),
    }
}

/// How much each `(name, labels)` moved from `before` to `after`.
fn delta(before: &Scrape, after: &Scrape, name: &str, labels: &[(&str, &str)]) -> f64 {
    value(after, name, labels) - value(before, name, labels)
}

fn requests(route: &str, method: &str, status: &str) -> [(&'static str, String); 3] {
    [("route", route.to_owned()), ("method", method.to_owned()), ("status", status.to_owned())]
}

fn request_delta(before: &Scrape, after: &Scrape, route: &str, method: &str, status: &str) -> f64 {
    let labels = requests(route, method, status);
    let labels: Vec<(&str, &str)> = labels.iter().map(|(k, v)| (*k, v.as_str())).collect();
    delta(before, after, "tributary_http_requests_total", &labels)
}

#[tokio::test]
async fn counters_follow_a_push_and_a_pull_and_the_exposition_parses() {
    let reg = TestRegistry::start();
    let http = Http::of(&reg);
    let (_, before) = http.scrape().await;

    // A config and a layer, each in one request; a chunked upload; a cancelled one; a manifest; its pull.
    let layer: Vec<u8> = (0..300 * 1024u32).map(|i| (i % 251) as u8).collect();
    let config = json!({"architecture": "amd64", "os": "linux"}).to_string().into_bytes();
    let c = http.push_blob("team/app", &config).await;
    let l = http.push_blob("team/app", &layer).await;
    let chunk = b"a chunked blob".to_vec();
    let r = http.send(Method::POST, "/v2/team/app/blobs/uploads/", vec![]).await;
    assert_eq!(r.status(), StatusCode::ACCEPTED);
    let location = r.headers()["location"].to_str().unwrap().to_owned();
    let r = http.send(Method::PATCH, &location, chunk.clone()).await;
    assert_eq!(r.status(), StatusCode::ACCEPTED);
    let r = http.send(Method::PUT, &format!("{location}?digest={}", Digest::sha256_of(&chunk)), vec![]).await;
    assert_eq!(r.status(), StatusCode::CREATED);
    let r = http.send(Method::POST, "/v2/team/app/blobs/uploads/", vec![]).await;
    let cancelled = r.headers()["location"].to_str().unwrap().to_owned();
    assert_eq!(http.send(Method::DELETE, &cancelled, vec![]).await.status(), StatusCode::NO_CONTENT);
    let manifest = json!({"schemaVersion": 2, "mediaType": OCI_MANIFEST,
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": c, "size": config.len()},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": l, "size": layer.len()}]})
    .to_string()
    .into_bytes();
    let r =
        http.req(Method::PUT, "/v2/team/app/manifests/v1").header("Content-Type", OCI_MANIFEST).body(manifest.clone());
    assert_eq!(r.send().await.unwrap().status(), StatusCode::CREATED);
    let r = http.req(Method::GET, "/v2/team/app/manifests/v1").header("Accept", OCI_MANIFEST).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(r.bytes().await.unwrap(), manifest);
    assert_eq!(http.send(Method::HEAD, "/v2/team/app/manifests/v1", vec![]).await.status(), StatusCode::OK);
    let r = http.send(Method::GET, &format!("/v2/team/app/blobs/{l}"), vec![]).await;
    assert_eq!(r.bytes().await.unwrap(), layer);
    assert_eq!(http.send(Method::GET, "/v2/team/app/manifests/nope", vec![]).await.status(), StatusCode::NOT_FOUND);

    let (text, after) = http.scrape().await;
    let d = |route, method, status| request_delta(&before, &after, route, method, status);
    assert_eq!(d("oci:start_upload", "POST", "201"), 2.0, "two one-request uploads");
    assert_eq!(d("oci:start_upload", "POST", "202"), 2.0, "two uploads started in steps");
    assert_eq!(d("oci:upload", "PATCH", "202"), 1.0);
    assert_eq!(d("oci:upload", "PUT", "201"), 1.0);
    assert_eq!(d("oci:upload", "DELETE", "204"), 1.0);
    assert_eq!(d("oci:manifest", "PUT", "201"), 1.0);
    assert_eq!(d("oci:manifest", "GET", "200"), 1.0);
    assert_eq!(d("oci:manifest", "HEAD", "200"), 1.0);
    assert_eq!(d("oci:manifest", "GET", "404"), 1.0);
    assert_eq!(d("oci:blob", "GET", "200"), 1.0);
    assert_eq!(d("/metrics", "GET", "200"), 1.0, "the first scrape, counted once it was answered");
    let count = |name| delta(&before, &after, name, &[]);
    assert_eq!(count("tributary_uploads_started_total"), 4.0);
    assert_eq!(count("tributary_uploads_finished_total"), 3.0);
    assert_eq!(count("tributary_uploads_cancelled_total"), 1.0);
    assert_eq!(count("tributary_blob_bytes_stored_total"), (config.len() + layer.len() + chunk.len()) as f64);
    assert_eq!(count("tributary_manifest_pushes_total"), 1.0);
    assert_eq!(count("tributary_manifest_pulls_total"), 1.0, "a HEAD is no pull");
    let pushed = (config.len() + layer.len() + chunk.len() + manifest.len()) as f64;
    assert!(count("tributary_http_received_bytes_total") >= pushed, "{text}");
    assert!(count("tributary_http_sent_bytes_total") >= (layer.len() + manifest.len()) as f64, "{text}");
    let get_manifest = [("route", "oci:manifest"), ("method", "GET")];
    assert_eq!(delta(&before, &after, "tributary_http_request_duration_seconds_count", &get_manifest), 2.0);

    // The store decorators timed the filesystem and redb operations behind those requests.
    let ops = |name, backend, operation| value(&after, name, &[("backend", backend), ("operation", operation)]);
    assert!(ops("tributary_storage_operation_duration_seconds_count", "filesystem", "get") >= 1.0, "{text}");
    assert!(ops("tributary_metadata_operation_duration_seconds_count", "redb", "commit") >= 4.0, "{text}");
    assert!(ops("tributary_metadata_operation_duration_seconds_count", "redb", "get") >= 1.0, "{text}");

    // Build info and the process.
    let build =
        format!("tributary_build_info{{version=\"{}\",commit=\"{}\"}} 1", registry::VERSION, registry::GIT_COMMIT);
    assert!(text.lines().any(|l| l == build), "{text}");
    assert!(value(&after, "process_resident_memory_bytes", &[]) > 1e6);
    assert!(value(&after, "process_open_fds", &[]) >= 3.0);
}

/// Every metric name a PromQL expression uses: identifiers outside strings, label matchers, ranges and grouping
/// clauses that are not functions, operators or aggregations.
fn metric_names(expr: &str) -> BTreeSet<String> {
    let mut cleaned = String::new();
    let mut depth_braces = 0;
    let mut depth_brackets = 0;
    let mut in_string = false;
    for ch in expr.chars() {
        match ch {
            '"' => in_string = !in_string,
            _ if in_string => {}
            '{' => depth_braces += 1,
            '}' => depth_braces -= 1,
            '[' => depth_brackets += 1,
            ']' => depth_brackets -= 1,
            _ if depth_braces > 0 || depth_brackets > 0 => {}
            c => cleaned.push(c),
        }
        if matches!(ch, '{' | '[' | '"') {
            cleaned.push(' ');
        }
    }
    const GROUPING: &[&str] = &["by", "without", "on", "ignoring", "group_left", "group_right"];
    // Operators and aggregations, which may be followed by a grouping clause rather than their parenthesis.
    const KEYWORDS: &[&str] = &[
        "and",
        "or",
        "unless",
        "bool",
        "offset",
        "sum",
        "avg",
        "min",
        "max",
        "count",
        "group",
        "stddev",
        "stdvar",
        "topk",
        "bottomk",
        "quantile",
        "count_values",
    ];
    let mut names = BTreeSet::new();
    let mut rest = cleaned.as_str();
    let mut skip_group = false;
    while let Some(start) = rest.find(|c: char| c.is_ascii_alphabetic() || c == '_') {
        let tail = &rest[start..];
        let end = tail.find(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == ':')).unwrap_or(tail.len());
        let word = &tail[..end];
        let after = tail[end..].trim_start();
        let preceded_by_digit = start > 0 && rest[..start].ends_with(|c: char| c.is_ascii_digit() || c == '.');
        if skip_group {
            // Inside `by (...)`: label names up to the closing parenthesis.
            if let Some(close) = tail.find(')') {
                rest = &tail[close + 1..];
                skip_group = false;
                continue;
            }
        }
        if GROUPING.contains(&word) {
            skip_group = true;
        } else if !after.starts_with('(') && !KEYWORDS.contains(&word) && !preceded_by_digit {
            names.insert(word.to_owned());
        }
        rest = &tail[end..];
    }
    names
}

#[test]
fn metric_names_are_read_out_of_promql() {
    let names = metric_names(
        r#"histogram_quantile(0.99, sum by (le, route) (rate(a_bucket{instance=~"$instance",x="y z"}[$__rate_interval]))) / on(route) group_left sum without (x) (b_total) + 1e3"#,
    );
    assert_eq!(names, BTreeSet::from(["a_bucket".to_owned(), "b_total".to_owned()]));
}

#[tokio::test]
async fn pull_through_and_imports_are_counted_and_the_dashboard_uses_only_exported_metrics() {
    let fake = Fake::start();
    let layer: Vec<u8> = (0..64 * 1024u32).map(|i| (i % 241) as u8).collect();
    let layer_digest = Digest::sha256_of(&layer);
    fake.image("lib/app", "1", layer, &layer_digest, std::time::Duration::ZERO);
    let broken = Digest::sha256_of(b"broken layer");
    fake.image("lib/broken", "1", b"broken layer".to_vec(), &broken, std::time::Duration::ZERO);
    fake.route(&format!("/v2/lib/broken/blobs/{broken}"), Answer::Error { status: 500, code: "UNKNOWN" });

    let reg = TestRegistry::start();
    let http = Http::of(&reg);
    http.namespace("team").await;
    let (_, before) = http.scrape().await;
    for (stream, repo) in [("app", "lib/app"), ("broken", "lib/broken")] {
        let isi = json!({"metadata": {"name": stream}, "spec": {"import": true, "images": [
            {"from": {"kind": "DockerImage", "name": format!("{}/{repo}:1", fake.host)}, "to": {"name": "v1"},
             "importPolicy": {"insecure": true}}]}});
        let r = http.req(Method::POST, "/apis/image.openshift.io/v1/namespaces/team/imagestreamimports").json(&isi);
        assert!(r.send().await.unwrap().status().is_success());
    }
    // Not imported: the upstream does not have it.
    let isi = json!({"metadata": {"name": "gone"}, "spec": {"import": true, "images": [
        {"from": {"kind": "DockerImage", "name": format!("{}/lib/gone:1", fake.host)}, "to": {"name": "v1"},
         "importPolicy": {"insecure": true}}]}});
    let r = http.req(Method::POST, "/apis/image.openshift.io/v1/namespaces/team/imagestreamimports").json(&isi);
    r.send().await.unwrap();

    let path = format!("/v2/team/app/blobs/{layer_digest}");
    for _ in 0..3 {
        let r = http.send(Method::GET, &path, vec![]).await;
        assert_eq!(r.status(), StatusCode::OK);
        assert_eq!(Digest::sha256_of(&r.bytes().await.unwrap()), layer_digest);
    }
    let r = http.send(Method::GET, &format!("/v2/team/broken/blobs/{broken}"), vec![]).await;
    assert!(r.status().is_server_error() || r.status() == StatusCode::BAD_GATEWAY, "{}", r.status());

    let (text, after) = http.scrape().await;
    let upstream = [("upstream", fake.host.as_str())];
    assert_eq!(delta(&before, &after, "tributary_pullthrough_cache_misses_total", &upstream), 2.0, "{text}");
    assert_eq!(delta(&before, &after, "tributary_pullthrough_cache_hits_total", &upstream), 2.0, "{text}");
    assert_eq!(delta(&before, &after, "tributary_pullthrough_upstream_errors_total", &upstream), 1.0, "{text}");
    assert_eq!(delta(&before, &after, "tributary_imports_total", &[("result", "success")]), 2.0, "{text}");
    assert_eq!(delta(&before, &after, "tributary_imports_total", &[("result", "NotFound")]), 1.0, "{text}");

    // A push and a pull too, so that every family the dashboard shows has a series.
    let config = b"{}".to_vec();
    let c = http.push_blob("team/local", &config).await;
    let manifest = json!({"schemaVersion": 2, "mediaType": OCI_MANIFEST,
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": c, "size": config.len()},
        "layers": []})
    .to_string();
    let r = http.req(Method::PUT, "/v2/team/local/manifests/v1").header("Content-Type", OCI_MANIFEST).body(manifest);
    assert_eq!(r.send().await.unwrap().status(), StatusCode::CREATED);
    assert_eq!(http.send(Method::GET, "/v2/team/local/manifests/v1", vec![]).await.status(), StatusCode::OK);
    let (text, _) = http.scrape().await;
    let exported: BTreeSet<&str> = text
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .map(|l| l.split(['{', ' ']).next().unwrap())
        .collect();

    let dashboard_path = concat!(env!("CARGO_MANIFEST_DIR"), "/../deploy/grafana/tributary.json");
    let dashboard: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(dashboard_path).unwrap()).unwrap();
    let mut used = BTreeSet::new();
    let mut exprs = 0;
    for panel in dashboard["panels"].as_array().unwrap() {
        for target in panel["targets"].as_array().into_iter().flatten() {
            let expr = target["expr"].as_str().unwrap();
            exprs += 1;
            let names = metric_names(expr);
            assert!(!names.is_empty(), "{expr} uses no metric");
            used.extend(names);
        }
    }
    for variable in dashboard["templating"]["list"].as_array().unwrap() {
        if let Some(q) = variable["definition"].as_str() {
            let metric = q.strip_prefix("label_values(").and_then(|r| r.split([',', ')']).next()).unwrap();
            used.insert(metric.trim().to_owned());
        }
    }
    assert!(exprs >= 20 && used.len() >= 20, "{exprs} expressions, {used:?}");
    let missing: Vec<&String> = used.iter().filter(|m| !exported.contains(m.as_str())).collect();
    assert!(missing.is_empty(), "the dashboard uses metrics /metrics does not export: {missing:?}\n{text}");
}

#[tokio::test]
async fn reading_needs_cluster_admin_unless_anonymous_is_configured() {
    let reg = TestRegistry::builder().with_admin_token(ADMIN).start();
    let url = format!("{}/metrics", reg.url());
    let client = Client::new();
    let r = client.get(&url).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    assert!(r.headers().contains_key("www-authenticate"));
    let r = client.get(&url).bearer_auth("not-a-token").send().await.unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    // A user without cluster-admin.
    let admin = Http::of(&reg);
    let r = admin.req(Method::POST, "/apis/tributary.dev/v1/users").json(&json!({"name": "alice"})).send().await;
    assert!(r.unwrap().status().is_success());
    let owner = json!({"owner": {"kind": "User", "name": "alice"}});
    let r = admin.req(Method::POST, "/apis/tributary.dev/v1/tokens").json(&owner).send().await.unwrap();
    assert!(r.status().is_success());
    let body: serde_json::Value = r.json().await.unwrap();
    let alice = body["token"].as_str().unwrap_or_else(|| panic!("{body}")).to_owned();
    let r = client.get(&url).bearer_auth(&alice).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    let r = client.get(&url).basic_auth("anyone", Some(ADMIN)).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK, "Basic with the token as password");
    let (_, scrape) = admin.scrape().await;
    for (reason, n) in [("unauthenticated", 1.0), ("invalid_credentials", 1.0), ("denied", 1.0)] {
        assert_eq!(value(&scrape, "tributary_auth_refusals_total", &[("reason", reason)]), n, "{reason}");
    }
    let refused =
        |status| value(&scrape, "tributary_http_requests_total", &[("route", "/metrics"), ("status", status)]);
    assert_eq!((refused("401"), refused("403")), (2.0, 1.0));
    drop(reg);

    let open = TestRegistry::builder()
        .with_admin_token(ADMIN)
        .with_metrics(MetricsConfig { enabled: true, anonymous: true })
        .start();
    let r = client.get(format!("{}/metrics", open.url())).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert!(r.text().await.unwrap().contains("tributary_build_info{"));
}

#[tokio::test]
async fn metrics_can_be_turned_off() {
    let reg = TestRegistry::builder().with_metrics(MetricsConfig { enabled: false, anonymous: true }).start();
    let http = Http::of(&reg);
    assert_eq!(http.send(Method::GET, "/metrics", vec![]).await.status(), StatusCode::NOT_FOUND);
    http.push_blob("team/app", b"still a registry").await;
    assert_eq!(http.send(Method::GET, "/v2/", vec![]).await.status(), StatusCode::OK);
}
