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
    client_port: u16,
    command: Vec<String>,
    dir: tempfile::TempDir,
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
                Err(Missing(_)) if !required => {
                    eprintln!("etcd not found ({binary}): skipping this test (TRIBUTARY_E2E_REQUIRED=1 makes it fail)");
                    return None;
                }
                Err(Missing(_)) => panic!("TRIBUTARY_E2E_REQUIRED=1 but there is no etcd binary ({binary})"),
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
        let command = vec![
            binary.to_owned(),
            "--name=test".to_owned(),
            format!("--data-dir={}", dir.path().join("data").display()),
            format!("--listen-client-urls={endpoint}"),
            format!("--advertise-client-urls={endpoint}"),
            format!("--listen-peer-urls={peer}"),
            format!("--initial-advertise-peer-urls={peer}"),
            format!("--initial-cluster=test={peer}"),
            "--logger=zap".to_owned(),
            "--log-level=warn".to_owned(),
        ];
        let child = spawn(&command, &dir)?;
        let mut server = EtcdServer { child, endpoint, client_port, command, dir };
        server.wait_healthy()?;
        Ok(server)
    }

    /// Waits until etcd answers, or fails when it exits or [`START_TIMEOUT`] passes.
    fn wait_healthy(&mut self) -> Result<(), StartError> {
        let deadline = Instant::now() + START_TIMEOUT;
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                let log = std::fs::read_to_string(self.dir.path().join("etcd.log")).unwrap_or_default();
                return Err(Failed(format!("etcd exited with {status}: {}", log.lines().last().unwrap_or(""))));
            }
            if healthy(self.client_port) {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Err(Failed(format!("etcd at {} did not answer within {START_TIMEOUT:?}", self.endpoint)))
    }

    /// Stops etcd (as a crash would: SIGKILL) and starts it again on the same ports and data; clients see their
    /// connections break meanwhile.
    pub fn restart(&mut self) {
        self.stop();
        self.start_again();
    }

    /// Kills etcd, keeping its data; [`EtcdServer::start_again`] brings it back.
    pub fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Starts a [`EtcdServer::stop`]ped etcd again on the same ports and data.
    pub fn start_again(&mut self) {
        let restarted = spawn(&self.command, &self.dir).and_then(|child| {
            self.child = child;
            self.wait_healthy()
        });
        if let Err(Failed(e) | Missing(e)) = restarted {
            panic!("etcd did not start again: {e}");
        }
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
        self.stop();
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
    Missing(String),
    Failed(String),
}

/// Runs `command` (the binary, then its arguments) with its log in `dir`.
fn spawn(command: &[String], dir: &tempfile::TempDir) -> Result<Child, StartError> {
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.path().join("etcd.log"))
        .map_err(|e| Failed(e.to_string()))?;
    match Command::new(&command[0]).args(&command[1..]).stdin(Stdio::null()).stdout(Stdio::null()).stderr(log).spawn() {
        Ok(child) => Ok(child),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Err(Missing(e.to_string())),
        Err(e) => Err(Failed(format!("spawning {}: {e}", command[0]))),
    }
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
