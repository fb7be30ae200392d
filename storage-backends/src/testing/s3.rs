//! A real S3-compatible service for tests: moto's server (`moto_server`, from `PATH` or `TRIBUTARY_MOTO_BIN`),
//! started on 127.0.0.1 on a free port, with a bucket, killed (by its pid) on drop.
//!
//! ```no_run
//! # async fn t() {
//! let Some(s3) = storage_backends::testing::s3::S3Server::start() else { return }; // skipped: no moto
//! let config = s3.config("bucket", Some("prefix"));
//! # }
//! ```
//! Without the binary, [`S3Server::start`] says the test is skipped and returns `None`, unless
//! `TRIBUTARY_E2E_REQUIRED=1` (CI), where it panics.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::blobs::S3Config;

/// A running moto server.
pub struct S3Server {
    child: Child,
    addr: SocketAddr,
}

/// The bucket [`S3Server::start`] creates.
pub const BUCKET: &str = "tributary";

fn required() -> bool {
    std::env::var("TRIBUTARY_E2E_REQUIRED").is_ok_and(|v| v == "1")
}

fn binary() -> Option<std::path::PathBuf> {
    if let Some(bin) = std::env::var_os("TRIBUTARY_MOTO_BIN") {
        return Some(bin.into());
    }
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path).map(|d| d.join("moto_server")).find(|p| p.is_file())
}

impl S3Server {
    /// Starts moto and creates [`BUCKET`]; `None` (the test skips) when moto is not installed.
    pub fn start() -> Option<S3Server> {
        let Some(bin) = binary() else {
            if required() {
                panic!("moto_server not found (PATH or TRIBUTARY_MOTO_BIN) and TRIBUTARY_E2E_REQUIRED=1");
            }
            eprintln!("SKIPPED: moto_server not found (install moto[server] or set TRIBUTARY_MOTO_BIN)");
            return None;
        };
        let mut last = String::new();
        // The port is free when read and taken by moto a moment later; another process may win it in between.
        for _ in 0..3 {
            let port = TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).map(|a| a.port());
            let port = match port {
                Ok(p) => p,
                Err(e) => panic!("no free port on 127.0.0.1: {e}"),
            };
            let child = Command::new(&bin)
                .args(["-H", "127.0.0.1", "-p", &port.to_string()])
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn();
            let child = match child {
                Ok(c) => c,
                Err(e) => panic!("starting {}: {e}", bin.display()),
            };
            let mut server = S3Server { child, addr: SocketAddr::from(([127, 0, 0, 1], port)) };
            match server.wait_ready(Duration::from_secs(30)) {
                Ok(()) => {
                    server.create_bucket(BUCKET);
                    return Some(server);
                }
                Err(e) => last = e,
            }
        }
        panic!("moto_server did not start: {last}");
    }

    fn wait_ready(&mut self, within: Duration) -> Result<(), String> {
        let deadline = Instant::now() + within;
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Err(format!("moto_server exited: {status}"));
            }
            if let Ok((200..=499, _)) = self.request("GET", "/") {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(format!("no answer on {} within {within:?}", self.addr));
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// One plain HTTP/1.1 request (moto does not check signatures): the status and the body.
    fn request(&self, method: &str, path: &str) -> std::io::Result<(u16, String)> {
        let mut s = TcpStream::connect_timeout(&self.addr, Duration::from_secs(2))?;
        s.set_read_timeout(Some(Duration::from_secs(10)))?;
        let req = format!(
            "{method} {path} HTTP/1.1\r\nHost: {}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
            self.addr
        );
        s.write_all(req.as_bytes())?;
        let mut out = String::new();
        s.read_to_string(&mut out)?;
        let status = out.split(' ').nth(1).and_then(|c| c.parse().ok()).unwrap_or(0);
        let body = out.split_once("\r\n\r\n").map(|(_, b)| b.to_owned()).unwrap_or_default();
        Ok((status, body))
    }

    /// Creates a bucket.
    pub fn create_bucket(&self, bucket: &str) {
        match self.request("PUT", &format!("/{bucket}")) {
            Ok((200, _)) => {}
            other => panic!("creating bucket {bucket} on moto: {other:?}"),
        }
    }

    /// `http://127.0.0.1:PORT`
    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The configuration of `bucket` on this server, with objects under `prefix`.
    pub fn config(&self, bucket: &str, prefix: Option<&str>) -> S3Config {
        S3Config {
            endpoint: Some(self.endpoint()),
            region: "us-east-1".into(),
            bucket: bucket.into(),
            prefix: prefix.map(str::to_owned),
            access_key_id: Some("testing".into()),
            secret_access_key: Some("testing".into()),
            path_style: true,
            allow_http: true,
            redirect: false,
            sign_payload: true,
        }
    }

    /// How many objects `bucket` holds under `prefix`, and their bytes (one listing page: at most 1000 objects).
    pub fn stored(&self, bucket: &str, prefix: Option<&str>) -> (usize, u64) {
        let query = prefix.map(|p| format!("&prefix={p}")).unwrap_or_default();
        let (status, body) = match self.request("GET", &format!("/{bucket}?list-type=2{query}")) {
            Ok(r) => r,
            Err(e) => panic!("listing objects on moto: {e}"),
        };
        assert_eq!(status, 200, "listing objects: {body}");
        assert!(!body.contains("<IsTruncated>true</IsTruncated>"), "more objects than one listing page");
        let sizes: Vec<u64> =
            body.split("<Size>").skip(1).filter_map(|s| s.split("</Size>").next()?.trim().parse().ok()).collect();
        (sizes.len(), sizes.iter().sum())
    }

    /// The keys of the multipart uploads of `bucket` not completed nor aborted (under `prefix`).
    pub fn unfinished_multipart_uploads(&self, bucket: &str, prefix: Option<&str>) -> Vec<String> {
        let query = prefix.map(|p| format!("&prefix={p}")).unwrap_or_default();
        let (status, body) = match self.request("GET", &format!("/{bucket}?uploads{query}")) {
            Ok(r) => r,
            Err(e) => panic!("listing multipart uploads on moto: {e}"),
        };
        assert_eq!(status, 200, "listing multipart uploads: {body}");
        body.split("<Key>").skip(1).filter_map(|s| s.split("</Key>").next()).map(str::to_owned).collect()
    }

    /// The process id of the server.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for S3Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
