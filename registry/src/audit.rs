//! The audit log's sink: [`AuditLog`] takes finished audit records (JSON objects) and hands them, through a bounded
//! queue, to one writer thread that appends them as lines to stdout or to a file rotated by size (`file-rotate`:
//! at most `max-size-mb` plus one line per file, `max-files` rotated files kept), so the log can neither fill the
//! disk nor slow a request down on a slow disk. When the queue is full a record is dropped and counted; the writer
//! writes the count as a line of its own (`"action":"audit-dropped"`) before the next record, and a warning goes
//! to the server log. What a record says is decided by the HTTP edge ([`crate::http::audit`]); the composition
//! root (main.rs, the test harness) opens the sink from the configuration. This module knows nothing of HTTP.

use std::io::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, SyncSender, TrySendError};
use std::sync::Arc;

use file_rotate::compression::Compression;
use file_rotate::suffix::AppendCount;
use file_rotate::{ContentLimit, FileRotate};
use serde_json::{json, Value};

use crate::config::limits::{AuditConfig, AuditTarget};

/// Where records go; cheap to clone (all clones feed the same writer). `AuditLog::default()` is off.
#[derive(Clone, Default)]
pub struct AuditLog {
    inner: Option<Arc<Inner>>,
}

struct Inner {
    tx: SyncSender<Value>,
    dropped: Arc<AtomicU64>,
}

impl std::fmt::Debug for AuditLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuditLog").field("on", &self.is_on()).finish()
    }
}

/// The current time as audit lines write it (RFC 3339, UTC, milliseconds).
pub fn now() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

impl AuditLog {
    /// Opens the configured destination and starts its writer thread (`None` target: off). A file that cannot be
    /// created or opened is an error here, at start, not a silent loss later.
    pub fn open(config: &AuditConfig) -> anyhow::Result<AuditLog> {
        let out: Box<dyn Write + Send> = match &config.target {
            None => return Ok(AuditLog::default()),
            Some(AuditTarget::Stdout) => Box::new(std::io::stdout()),
            Some(AuditTarget::File { path, max_bytes, max_files }) => {
                let path =
                    std::path::absolute(path).map_err(|e| anyhow::anyhow!("audit log {}: {e}", path.display()))?;
                if let Some(dir) = path.parent() {
                    std::fs::create_dir_all(dir)
                        .map_err(|e| anyhow::anyhow!("audit log directory {}: {e}", dir.display()))?;
                }
                std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(&path)
                    .map_err(|e| anyhow::anyhow!("audit log {}: {e}", path.display()))?;
                let limit = usize::try_from(*max_bytes).unwrap_or(usize::MAX);
                Box::new(FileRotate::new(
                    path,
                    AppendCount::new(*max_files),
                    ContentLimit::BytesSurpassed(limit),
                    Compression::None,
                    None,
                ))
            }
        };
        AuditLog::writing_to(out, config.queue)
    }

    /// Starts the writer thread over `out` with a queue of `queue` records.
    fn writing_to(out: Box<dyn Write + Send>, queue: usize) -> anyhow::Result<AuditLog> {
        let (tx, rx) = std::sync::mpsc::sync_channel(queue);
        let dropped = Arc::new(AtomicU64::new(0));
        let counted = dropped.clone();
        std::thread::Builder::new()
            .name("audit-writer".into())
            .spawn(move || write_lines(rx, out, &counted))
            .map_err(|e| anyhow::anyhow!("starting the audit writer: {e}"))?;
        Ok(AuditLog { inner: Some(Arc::new(Inner { tx, dropped })) })
    }

    /// Whether records are written at all.
    pub fn is_on(&self) -> bool {
        self.inner.is_some()
    }

    /// Queues one record; never waits. A full queue drops the record and counts it.
    pub fn record(&self, record: Value) {
        let Some(inner) = &self.inner else { return };
        match inner.tx.try_send(record) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) => {
                if inner.dropped.fetch_add(1, Ordering::Relaxed) == 0 {
                    tracing::warn!("audit log queue full: records are being dropped (the count follows in the log)");
                }
            }
            Err(TrySendError::Disconnected(_)) => {
                inner.dropped.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    /// Records dropped so far and not yet reported in the log.
    pub fn dropped(&self) -> u64 {
        self.inner.as_ref().map_or(0, |i| i.dropped.load(Ordering::Relaxed))
    }
}

/// The writer thread: one line per record, flushed whenever the queue runs empty; ends when every [`AuditLog`]
/// clone is gone.
fn write_lines(rx: Receiver<Value>, mut out: Box<dyn Write + Send>, dropped: &AtomicU64) {
    let mut failing = false;
    let mut write = |out: &mut Box<dyn Write + Send>, record: &Value| {
        let mut line = serde_json::to_vec(record).unwrap_or_default();
        line.push(b'\n');
        match out.write_all(&line) {
            Ok(()) => failing = false,
            Err(e) => {
                if !failing {
                    tracing::error!(cause = %e, "writing the audit log");
                }
                failing = true;
            }
        }
    };
    while let Ok(first) = rx.recv() {
        let mut next = Some(first);
        while let Some(record) = next {
            let lost = dropped.swap(0, Ordering::Relaxed);
            if lost > 0 {
                write(&mut out, &json!({"time": now(), "action": "audit-dropped", "dropped": lost}));
            }
            write(&mut out, &record);
            next = rx.try_recv().ok();
        }
        if let Err(e) = out.flush() {
            tracing::error!(cause = %e, "flushing the audit log");
        }
    }
    let _ = out.flush();
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The files in `dir` with their lengths. A file the writer renames or removes between the listing and the
    /// read (it rotates while the test looks) is left out: the caller looks again.
    fn lines_in(dir: &std::path::Path) -> Vec<(String, usize)> {
        let mut files: Vec<(String, usize)> = std::fs::read_dir(dir)
            .unwrap()
            .filter_map(|e| {
                let e = e.ok()?;
                let text = std::fs::read_to_string(e.path()).ok()?;
                Some((e.file_name().to_string_lossy().into_owned(), text.len()))
            })
            .collect();
        files.sort();
        files
    }

    #[test]
    fn rotates_at_the_size_bound_and_keeps_max_files() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.log");
        let config = AuditConfig {
            target: Some(AuditTarget::File { path: path.clone(), max_bytes: 1000, max_files: 2 }),
            queue: 10_000,
        };
        let log = AuditLog::open(&config).unwrap();
        for i in 0..200 {
            log.record(json!({"time": now(), "action": "push manifest", "n": i}));
        }
        drop(log);
        // The writer ends once every handle is gone; wait for its last flush.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        loop {
            let files = lines_in(dir.path());
            let names: Vec<&str> = files.iter().map(|(n, _)| n.as_str()).collect();
            if names == ["audit.log", "audit.log.1", "audit.log.2"] && files[0].1 > 0 {
                // Each file holds at most the bound plus one line.
                assert!(files.iter().all(|(_, len)| *len < 1000 + 100), "{files:?}");
                let newest = std::fs::read_to_string(&path).unwrap();
                if newest.contains("\"n\":199") {
                    return;
                }
            }
            assert!(std::time::Instant::now() < deadline, "{files:?}");
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
    }

    /// A disk that hangs until told to go on; what was written is kept.
    struct StuckDisk {
        go: std::sync::mpsc::Receiver<()>,
        entered: std::sync::mpsc::Sender<()>,
        stuck: bool,
        written: Arc<std::sync::Mutex<Vec<u8>>>,
    }

    impl Write for StuckDisk {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            if self.stuck {
                let _ = self.entered.send(());
                let _ = self.go.recv();
                self.stuck = false;
            }
            self.written.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn a_full_queue_drops_records_without_waiting_and_says_so() {
        let (go, wait) = std::sync::mpsc::channel();
        let written = Arc::new(std::sync::Mutex::new(Vec::new()));
        let (entered, stuck) = std::sync::mpsc::channel();
        let disk = StuckDisk { go: wait, entered, stuck: true, written: written.clone() };
        let log = AuditLog::writing_to(Box::new(disk), 2).unwrap();
        // The writer takes the first record and hangs on the disk with it...
        log.record(json!({"n": 0}));
        stuck.recv_timeout(std::time::Duration::from_secs(10)).expect("the writer reaches the disk");
        let started = std::time::Instant::now();
        for i in 1..20 {
            log.record(json!({"n": i}));
        }
        assert!(started.elapsed() < std::time::Duration::from_secs(1), "recording never waits for the disk");
        // ...the queue holds the next two: the other seventeen were dropped.
        let dropped = log.dropped();
        assert_eq!(dropped, 17);
        go.send(()).unwrap();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        let text = || String::from_utf8(written.lock().unwrap().clone()).unwrap();
        while !text().contains("\"n\":1") {
            assert!(std::time::Instant::now() < deadline, "{}", text());
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        log.record(json!({"n": "after"}));
        loop {
            let text = text();
            if text.contains("\"after\"") {
                let lines: Vec<Value> = text.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
                let note = lines.iter().find(|l| l["action"] == "audit-dropped").expect("a line counting the drops");
                assert_eq!(note["dropped"], json!(dropped), "{text}");
                break;
            }
            assert!(std::time::Instant::now() < deadline, "{text}");
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
    }

    #[test]
    fn an_unwritable_path_is_an_error_at_start() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("a-file");
        std::fs::write(&file, "x").unwrap();
        let config = AuditConfig {
            target: Some(AuditTarget::File { path: file.join("audit.log"), max_bytes: 1000, max_files: 1 }),
            queue: 1,
        };
        assert!(AuditLog::open(&config).is_err());
        assert!(!AuditLog::default().is_on());
    }
}
