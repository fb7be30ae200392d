//! Paged reads of the image stream API over HTTP: a namespace's streams by `limit`/`continue` (Kubernetes'
//! chunking) and `search`, one stream with a page of its tags (`Tributary-Tags-*` headers), one `tag`, and
//! `historyLimit`; bad paging parameters are a 400 `Status`.

use std::collections::BTreeSet;

use names::Digest;
use registry::testing::TestRegistry;
use reqwest::StatusCode;
use serde_json::{json, Value};

const API: &str = "/apis/image.openshift.io/v1";
const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";

async fn push(http: &reqwest::Client, reg: &TestRegistry, repo: &str, tags: &[&str], seed: &str) -> Digest {
    let config = json!({"architecture": "amd64", "os": "linux", "config": {"Cmd": [seed]}}).to_string();
    let c = Digest::sha256_of(config.as_bytes());
    let r = http.post(format!("{}/v2/{repo}/blobs/uploads/?digest={c}", reg.url())).body(config.clone()).send();
    assert_eq!(r.await.unwrap().status(), StatusCode::CREATED);
    let m = json!({"schemaVersion": 2, "mediaType": OCI_MANIFEST, "layers": [],
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": c, "size": config.len()}})
    .to_string();
    for tag in tags {
        let r = http
            .put(format!("{}/v2/{repo}/manifests/{tag}", reg.url()))
            .header("Content-Type", OCI_MANIFEST)
            .body(m.clone())
            .send();
        assert_eq!(r.await.unwrap().status(), StatusCode::CREATED);
    }
    Digest::sha256_of(m.as_bytes())
}

async fn get(
    http: &reqwest::Client,
    reg: &TestRegistry,
    path: &str,
) -> (StatusCode, reqwest::header::HeaderMap, Value) {
    let r = http.get(format!("{}{API}{path}", reg.url())).send().await.unwrap();
    let (status, headers) = (r.status(), r.headers().clone());
    (status, headers, r.json().await.unwrap())
}

#[tokio::test]
async fn streams_and_tags_come_in_pages() {
    let reg = TestRegistry::start();
    let http = reqwest::Client::new();
    for i in 0..7 {
        push(&http, &reg, &format!("team/app{i}"), &["v1"], &format!("s{i}")).await;
    }
    push(&http, &reg, "other/app9", &["v1"], "o").await;

    // Streams: three pages of at most 3, in name order, each saying what remains.
    let (mut seen, mut token) = (Vec::new(), String::new());
    for (expected_len, remaining) in [(3, Some(4)), (3, Some(1)), (1, None)] {
        let (s, _, list) = get(&http, &reg, &format!("/namespaces/team/imagestreams?limit=3&continue={token}")).await;
        assert_eq!(s, StatusCode::OK);
        let items = list["items"].as_array().unwrap();
        assert_eq!(items.len(), expected_len, "{list}");
        seen.extend(items.iter().map(|i| i["metadata"]["name"].as_str().unwrap().to_owned()));
        assert_eq!(list["metadata"]["remainingItemCount"].as_u64(), remaining);
        token = list["metadata"]["continue"].as_str().unwrap_or_default().to_owned();
    }
    assert_eq!(seen, (0..7).map(|i| format!("app{i}")).collect::<Vec<_>>());
    let (_, _, found) = get(&http, &reg, "/namespaces/team/imagestreams?search=p5").await;
    assert_eq!(found["items"].as_array().unwrap().len(), 1);
    assert_eq!(found["items"][0]["metadata"]["name"], "app5");

    // Tags of one stream: a page, a search, one tag with its whole history, and the history trimmed.
    let tags: Vec<String> = (0..25).map(|i| format!("t{i:02}")).collect();
    let refs: Vec<&str> = tags.iter().map(String::as_str).collect();
    let first = push(&http, &reg, "team/many", &refs, "a").await;
    let second = push(&http, &reg, "team/many", &["t07"], "b").await;
    let (s, h, page) = get(&http, &reg, "/namespaces/team/imagestreams/many?limit=10&continue=t04").await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(h["tributary-tags-total"], "25");
    assert_eq!(h["tributary-tags-continue"], "t14");
    assert!(h["tributary-revision"].to_str().unwrap().parse::<u64>().is_ok());
    let names: BTreeSet<&str> =
        page["status"]["tags"].as_array().unwrap().iter().map(|t| t["tag"].as_str().unwrap()).collect();
    assert_eq!(
        names,
        (5..15).map(|i| format!("t{i:02}")).collect::<BTreeSet<_>>().iter().map(String::as_str).collect()
    );
    let (_, h, one) = get(&http, &reg, "/namespaces/team/imagestreams/many?tag=t07").await;
    assert_eq!(h["tributary-tags-total"], "1");
    assert!(h.get("tributary-tags-continue").is_none());
    let items: Vec<&str> =
        one["status"]["tags"][0]["items"].as_array().unwrap().iter().map(|e| e["image"].as_str().unwrap()).collect();
    assert_eq!(items, [second.to_string(), first.to_string()], "newest first");
    let (_, _, trimmed) = get(&http, &reg, "/namespaces/team/imagestreams/many?tag=t07&historyLimit=1").await;
    assert_eq!(trimmed["status"]["tags"][0]["items"].as_array().unwrap().len(), 1);
    let (_, h, searched) = get(&http, &reg, "/namespaces/team/imagestreams/many?search=1").await;
    assert_eq!(h["tributary-tags-total"], "12", "t01, t10…t19, t21");
    assert_eq!(searched["status"]["tags"].as_array().unwrap().len(), 12);

    // Without paging parameters the answers are whole, as before.
    let (_, h, whole) = get(&http, &reg, "/namespaces/team/imagestreams/many").await;
    assert!(h.get("tributary-tags-total").is_none());
    assert_eq!(whole["status"]["tags"].as_array().unwrap().len(), 25);

    for bad in ["limit=0", "limit=ten", "historyLimit=-1"] {
        let (s, _, body) = get(&http, &reg, &format!("/namespaces/team/imagestreams?{bad}")).await;
        assert_eq!(
            (s, body["kind"].as_str(), body["reason"].as_str()),
            (StatusCode::BAD_REQUEST, Some("Status"), Some("BadRequest")),
            "{bad}"
        );
    }
    let (s, _, _) = get(&http, &reg, "/namespaces/team/imagestreams/nothing?limit=5").await;
    assert_eq!(s, StatusCode::NOT_FOUND);
}
