//! Test fixtures shared by the registry's integration tests: a scripted upstream registry on 127.0.0.1 that
//! answers fixed routes (slowly, wrongly, with an error, a redirect or not at all when asked) and counts requests
//! by path.
#![allow(dead_code)]

pub mod harness;

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use names::Digest;
use serde_json::json;

pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";

#[derive(Clone)]
pub enum Answer {
    /// 200 with this body; sent in 64 KiB pieces with `pause` between them.
    Body { content_type: &'static str, body: Arc<Vec<u8>>, pause: Duration },
    /// This status with an OCI error body.
    Error { status: u16, code: &'static str },
    /// 307 to this URL.
    Redirect(String),
    /// Nothing at all, for this long (then the connection closes).
    Hang(Duration),
    /// 200 announcing the whole body's `Content-Length`, then only its first `after` bytes; then silence for
    /// `stall` and the connection closes (an upstream that drops or hangs mid-body).
    Cut { body: Arc<Vec<u8>>, after: usize, stall: Duration },
    /// 200 without `Content-Length`: the body runs until the connection closes (which says nothing of its size).
    Unsized(Arc<Vec<u8>>),
}

/// A minimal registry on 127.0.0.1 answering fixed routes and counting every request by path.
pub struct Fake {
    pub host: String,
    routes: Arc<Mutex<HashMap<String, Answer>>>,
    hits: Arc<Mutex<HashMap<String, usize>>>,
    stop: Arc<AtomicBool>,
}

impl Fake {
    pub fn start() -> Fake {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let host = listener.local_addr().unwrap().to_string();
        let routes: Arc<Mutex<HashMap<String, Answer>>> = Arc::default();
        let hits: Arc<Mutex<HashMap<String, usize>>> = Arc::default();
        let stop = Arc::new(AtomicBool::new(false));
        let (r, h, s) = (routes.clone(), hits.clone(), stop.clone());
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                if s.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(conn) = conn else { continue };
                let (r, h) = (r.clone(), h.clone());
                std::thread::spawn(move || serve(conn, &r, &h));
            }
        });
        Fake { host, routes, hits, stop }
    }

    pub fn route(&self, path: &str, answer: Answer) {
        self.routes.lock().unwrap().insert(path.to_owned(), answer);
    }

    pub fn hits(&self, path: &str) -> usize {
        self.hits.lock().unwrap().get(path).copied().unwrap_or(0)
    }

    /// Serves an image `repo:tag` whose layer is `layer` (announced with `layer_digest`, which may lie).
    pub fn image(&self, repo: &str, tag: &str, layer: Vec<u8>, layer_digest: &Digest, pause: Duration) -> Digest {
        let size = layer.len();
        self.image_sized(repo, tag, layer, layer_digest, size, pause)
    }

    /// [`Fake::image`] with the layer's size in the manifest given (which may lie too).
    pub fn image_sized(
        &self,
        repo: &str,
        tag: &str,
        layer: Vec<u8>,
        layer_digest: &Digest,
        layer_size: usize,
        pause: Duration,
    ) -> Digest {
        let config = json!({"architecture": "amd64", "os": "linux"}).to_string().into_bytes();
        let c = Digest::sha256_of(&config);
        let manifest = json!({"schemaVersion": 2, "mediaType": OCI_MANIFEST,
            "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": c, "size": config.len()},
            "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": layer_digest, "size": layer_size}]})
        .to_string()
        .into_bytes();
        let m = Digest::sha256_of(&manifest);
        let body =
            |b: Vec<u8>, ct: &'static str, pause: Duration| Answer::Body { content_type: ct, body: Arc::new(b), pause };
        self.route(&format!("/v2/{repo}/manifests/{tag}"), body(manifest.clone(), OCI_MANIFEST, Duration::ZERO));
        self.route(&format!("/v2/{repo}/manifests/{m}"), body(manifest, OCI_MANIFEST, Duration::ZERO));
        self.route(&format!("/v2/{repo}/blobs/{c}"), body(config, "application/octet-stream", Duration::ZERO));
        self.route(&format!("/v2/{repo}/blobs/{layer_digest}"), body(layer, "application/octet-stream", pause));
        m
    }
}

impl Drop for Fake {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect(&self.host);
    }
}

fn serve(mut conn: TcpStream, routes: &Mutex<HashMap<String, Answer>>, hits: &Mutex<HashMap<String, usize>>) {
    let mut reader = BufReader::new(conn.try_clone().unwrap());
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).unwrap_or(0) == 0 {
            return;
        }
        let mut parts = line.split_whitespace();
        let (method, path) = (parts.next().unwrap_or("").to_owned(), parts.next().unwrap_or("").to_owned());
        let mut content_length = 0usize;
        loop {
            let mut h = String::new();
            if reader.read_line(&mut h).unwrap_or(0) == 0 {
                return;
            }
            if h == "\r\n" {
                break;
            }
            if let Some(v) = h.to_ascii_lowercase().strip_prefix("content-length:") {
                content_length = v.trim().parse().unwrap_or(0);
            }
        }
        let mut body = vec![0; content_length];
        let _ = reader.read_exact(&mut body);
        let path = path.split('?').next().unwrap_or("").to_owned();
        *hits.lock().unwrap().entry(path.clone()).or_default() += 1;
        let answer = if path == "/v2/" {
            Some(Answer::Body {
                content_type: "application/json",
                body: Arc::new(b"{}".to_vec()),
                pause: Duration::ZERO,
            })
        } else {
            routes.lock().unwrap().get(&path).cloned()
        };
        let ok = match answer {
            Some(Answer::Body { content_type, body, pause }) => {
                let head = format!(
                    "HTTP/1.1 200 OK\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\n\r\n",
                    body.len()
                );
                let mut ok = conn.write_all(head.as_bytes()).is_ok();
                if method != "HEAD" {
                    for piece in body.chunks(64 * 1024) {
                        ok = ok && conn.write_all(piece).is_ok();
                        if !pause.is_zero() {
                            std::thread::sleep(pause);
                        }
                    }
                }
                ok
            }
            Some(Answer::Redirect(location)) => {
                let head =
                    format!("HTTP/1.1 307 Temporary Redirect\r\nLocation: {location}\r\nContent-Length: 0\r\n\r\n");
                conn.write_all(head.as_bytes()).is_ok()
            }
            Some(Answer::Hang(how_long)) => {
                std::thread::sleep(how_long);
                false
            }
            Some(Answer::Cut { body, after, stall }) => {
                let head = format!(
                    "HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\nContent-Length: {}\r\n\r\n",
                    body.len()
                );
                let _ = conn.write_all(head.as_bytes()).and_then(|_| conn.write_all(&body[..after.min(body.len())]));
                let _ = conn.flush();
                std::thread::sleep(stall);
                false
            }
            Some(Answer::Unsized(body)) => {
                let head = "HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\nConnection: close\r\n\r\n";
                let _ = conn.write_all(head.as_bytes()).and_then(|_| conn.write_all(&body));
                false
            }
            other => {
                let (status, code) = match other {
                    Some(Answer::Error { status, code }) => (status, code),
                    _ => (404, "BLOB_UNKNOWN"),
                };
                let body = json!({"errors": [{"code": code, "message": format!("scripted {status}")}]}).to_string();
                let head = format!(
                    "HTTP/1.1 {status} Scripted\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
                    body.len()
                );
                conn.write_all(head.as_bytes()).is_ok() && conn.write_all(body.as_bytes()).is_ok()
            }
        };
        if !ok {
            return;
        }
    }
}

/// Runs `tributary ARGS` against `reg` with the administrator's token; stdout, or the failure's stderr.
pub fn tributary(reg: &registry::testing::TestRegistry, args: &[&str]) -> Result<String, String> {
    let o = std::process::Command::new(env!("CARGO_BIN_EXE_tributary"))
        .args(args)
        .args(["--server", &reg.url(), "--token", reg.admin_token().unwrap()])
        .env("TRIBUTARY_CLIENT_CONFIG", reg.data_dir().join("no-client-config"))
        .output()
        .expect("run tributary");
    let (out, err) = (String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr));
    if o.status.success() {
        Ok(out.into_owned())
    } else {
        Err(err.into_owned())
    }
}
