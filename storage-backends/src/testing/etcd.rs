//! A real etcd for tests: [`EtcdServer`] runs the `etcd` binary (from `PATH`, or `TRIBUTARY_ETCD_BIN`) on free
//! local ports with a fresh data directory and kills it when dropped. Called by tests of any crate, never by the
//! server. Without the binary, [`EtcdServer::start`] returns `None` (the test skips) unless
//! `TRIBUTARY_E2E_REQUIRED=1` (as CI sets), which makes a missing etcd a failure.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::meta::{EtcdConfig, EtcdStore, StoreError};

/// A running etcd, owned by one test.
pub struct EtcdServer {
    child: Child,
    endpoint: String,
    _dir: tempfile::TempDir,
}

/// How long etcd may take to answer after starting.
const START_TIMEOUT: Duration = Duration::from_secs(20);

impl EtcdServer {
    /// Starts etcd and waits until it answers. `None` when there is no etcd binary (and it is not required).
    pub fn start() -> Option<EtcdServer> {
        let binary = std::env::var("TRIBUTARY_ETCD_BIN").unwrap_or_else(|_| "etcd".to_owned());
        let required = std::env::var("TRIBUTARY_E2E_REQUIRED").is_ok_and(|v| v == "1");
        let mut last_error = String::new();
        // Ports are picked by binding port 0 and handing the number to etcd, which may lose a race with another
        // process: a failed start is tried again on new ports.
        for _ in 0..3 {
            match Self::try_start(&binary) {
                Ok(server) => return Some(server),
                Err(Missing) if !required => {
                    eprintln!("etcd not found ({binary}): skipping this test (TRIBUTARY_E2E_REQUIRED=1 makes it fail)");
                    return None;
                }
                Err(Missing) => panic!("TRIBUTARY_E2E_REQUIRED=1 but there is no etcd binary ({binary})"),
                Err(Failed(e)) => last_error = e,
            }
        }
        panic!("etcd did not start: {last_error}");
    }

    fn try_start(binary: &str) -> Result<EtcdServer, StartError> {
        let dir = tempfile::tempdir().map_err(|e| Failed(e.to_string()))?;
        let (client_port, peer_port) = (free_port()?, free_port()?);
        let endpoint = format!("http://127.0.0.1:{client_port}");
        let peer = format!("http://127.0.0.1:{peer_port}");
        let log = std::fs::File::create(dir.path().join("etcd.log")).map_err(|e| Failed(e.to_string()))?;
        let spawned = Command::new(binary)
            .arg("--name=test")
            .arg(format!("--data-dir={}", dir.path().join("data").display()))
            .arg(format!("--listen-client-urls={endpoint}"))
            .arg(format!("--advertise-client-urls={endpoint}"))
            .arg(format!("--listen-peer-urls={peer}"))
            .arg(format!("--initial-advertise-peer-urls={peer}"))
            .arg(format!("--initial-cluster=test={peer}"))
            .arg("--logger=zap")
            .arg("--log-level=warn")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn();
        let child = match spawned {
            Ok(child) => child,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Err(Missing),
            Err(e) => return Err(Failed(format!("spawning {binary}: {e}"))),
        };
        let mut server = EtcdServer { child, endpoint, _dir: dir };
        let deadline = Instant::now() + START_TIMEOUT;
        while Instant::now() < deadline {
            if let Ok(Some(status)) = server.child.try_wait() {
                let log = std::fs::read_to_string(server._dir.path().join("etcd.log")).unwrap_or_default();
                return Err(Failed(format!("etcd exited with {status}: {}", log.lines().last().unwrap_or(""))));
            }
            if healthy(client_port) {
                return Ok(server);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Err(Failed(format!("etcd at {} did not answer within {START_TIMEOUT:?}", server.endpoint)))
    }

    /// `http://127.0.0.1:<port>`.
    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }

    /// A configuration for a store under `prefix` on this etcd (a short lease TTL, so leases move fast).
    pub fn config(&self, prefix: &str) -> EtcdConfig {
        EtcdConfig { prefix: prefix.to_owned(), lease_ttl_secs: 2, ..EtcdConfig::new(vec![self.endpoint.clone()]) }
    }

    /// Connects a store under `prefix` (each call is another replica).
    pub async fn connect(&self, prefix: &str) -> EtcdStore {
        EtcdStore::connect(&self.config(prefix)).await.unwrap_or_else(|e| panic!("connecting to test etcd: {e}"))
    }
}

impl Drop for EtcdServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Compacts etcd's history up to `revision` (physically), as an operator's or etcd's auto-compaction would: later
/// reads of older history fail with [`StoreError::Compacted`].
pub async fn compact(store: &EtcdStore, revision: u64) -> Result<(), StoreError> {
    let options = etcd_client::CompactionOptions::new().with_physical();
    let mut kv = store.client().kv_client();
    kv.compact(revision as i64, Some(options)).await.map_err(|e| StoreError::Backend(e.to_string()))?;
    Ok(())
}

enum StartError {
    Missing,
    Failed(String),
}
use StartError::{Failed, Missing};

fn free_port() -> Result<u16, StartError> {
    let listener = TcpListener::bind("127.0.0.1:0").map_err(|e| Failed(e.to_string()))?;
    Ok(listener.local_addr().map_err(|e| Failed(e.to_string()))?.port())
}

/// etcd's `/health` answers `"health":"true"`.
fn healthy(port: u16) -> bool {
    let Ok(mut s) = TcpStream::connect(("127.0.0.1", port)) else { return false };
    let _ = s.set_read_timeout(Some(Duration::from_secs(1)));
    if s.write_all(b"GET /health HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n").is_err() {
        return false;
    }
    let mut body = String::new();
    let _ = s.read_to_string(&mut body);
    body.contains("\"health\":\"true\"")
}
