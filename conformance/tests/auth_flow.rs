//! The client's Docker token flow against a tiny in-process HTTP server: a 401 Bearer challenge
//! is answered by fetching a token from the realm (Basic `tributary:<token>` when a token is
//! configured, anonymous otherwise), and tokens are cached per scope.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

use conformance::client::Client;

struct Mock {
    /// Basic credentials the realm demands (`None`: anonymous tokens).
    basic: Option<String>,
    token_requests: AtomicUsize,
}

async fn serve(mock: Arc<Mock>) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let base = format!("http://{addr}");
    let realm = format!("{base}/token");
    tokio::spawn(async move {
        loop {
            let Ok((mut sock, _)) = listener.accept().await else { return };
            let mock = mock.clone();
            let realm = realm.clone();
            tokio::spawn(async move {
                let mut buf = Vec::new();
                let mut chunk = [0u8; 4096];
                while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
                    match sock.read(&mut chunk).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => buf.extend_from_slice(&chunk[..n]),
                    }
                }
                let head = String::from_utf8_lossy(&buf).into_owned();
                let mut lines = head.lines();
                let target = lines.next().unwrap_or_default().split(' ').nth(1).unwrap_or_default().to_string();
                let headers: HashMap<String, String> = lines
                    .filter_map(|l| l.split_once(':'))
                    .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
                    .collect();
                let auth = headers.get("authorization").cloned().unwrap_or_default();
                let (status, extra, body) = if target.starts_with("/token") {
                    mock.token_requests.fetch_add(1, Ordering::SeqCst);
                    let scope_ok = target.contains("scope=repository%3Ans%2Frepo%3Apull");
                    let cred_ok = match &mock.basic {
                        Some(b) => auth == format!("Basic {b}"),
                        None => auth.is_empty(),
                    };
                    if scope_ok && target.contains("service=mock") && cred_ok {
                        ("200 OK", String::new(), r#"{"access_token":"granted"}"#.to_string())
                    } else {
                        (
                            "401 Unauthorized",
                            String::new(),
                            r#"{"errors":[{"code":"UNAUTHORIZED","message":"no"}]}"#.into(),
                        )
                    }
                } else if auth == "Bearer granted" {
                    ("200 OK", String::new(), r#"{"name":"ns/repo","tags":["a"]}"#.to_string())
                } else {
                    (
                        "401 Unauthorized",
                        format!(
                            "WWW-Authenticate: Bearer realm=\"{realm}\",service=\"mock\",scope=\"repository:ns/repo:pull\"\r\n"
                        ),
                        r#"{"errors":[{"code":"UNAUTHORIZED","message":"authentication required"}]}"#.to_string(),
                    )
                };
                let resp = format!(
                    "HTTP/1.1 {status}\r\n{extra}Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = sock.write_all(resp.as_bytes()).await;
                let _ = sock.shutdown().await;
            });
        }
    });
    base
}

#[tokio::test]
async fn token_flow_with_basic_credentials_and_cache() {
    // base64("tributary:s3cret")
    let mock = Arc::new(Mock { basic: Some("dHJpYnV0YXJ5OnMzY3JldA==".into()), token_requests: AtomicUsize::new(0) });
    let base = serve(mock.clone()).await;
    let client = Client::new(&base, Some("s3cret".into())).unwrap();
    for _ in 0..3 {
        let resp = client.get("/v2/ns/repo/tags/list").send().await.unwrap();
        assert_eq!(resp.status, 200, "{}", resp.describe());
    }
    assert_eq!(mock.token_requests.load(Ordering::SeqCst), 1, "token should be cached per scope");
}

#[tokio::test]
async fn anonymous_token_flow() {
    let mock = Arc::new(Mock { basic: None, token_requests: AtomicUsize::new(0) });
    let base = serve(mock.clone()).await;
    let client = Client::new(&base, None).unwrap();
    let resp = client.get("/v2/ns/repo/tags/list").send().await.unwrap();
    assert_eq!(resp.status, 200, "{}", resp.describe());
}

#[tokio::test]
async fn wrong_credentials_surface_as_an_error() {
    let mock = Arc::new(Mock { basic: Some("dHJpYnV0YXJ5OnMzY3JldA==".into()), token_requests: AtomicUsize::new(0) });
    let base = serve(mock).await;
    let client = Client::new(&base, Some("wrong".into())).unwrap();
    let err = client.get("/v2/ns/repo/tags/list").send().await.unwrap_err();
    assert!(format!("{err:#}").contains("401"), "{err:#}");
}
