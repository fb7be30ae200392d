//! End-to-end graceful shutdown of `tributary serve`: SIGTERM in the middle of a 300 MiB upload closes the
//! listener at once (a new connection is refused) yet lets the upload finish; the process then exits 0 on its own,
//! and after a restart on the same data the blob is complete and byte-exact. With a short `--shutdown-timeout`
//! (`TRIBUTARY_SHUTDOWN_TIMEOUT`) a stalled upload is cut off at the deadline, the process still exits 0 and
//! nothing of the unfinished blob is served.
mod common;

use std::fs::File;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use common::*;
use sha2::{Digest as _, Sha256};

const MIB: u64 = 1024 * 1024;

fn start(dir: &std::path::Path, shutdown_timeout_secs: u64) -> Option<Registry> {
    if Target::from_env() != Target::Tributary {
        note("graceful shutdown is Tributary's: skipped for another registry");
        return None;
    }
    let env = [("TRIBUTARY_SHUTDOWN_TIMEOUT".to_owned(), shutdown_timeout_secs.to_string())];
    Some(Registry::start_replica(dir, &new_token(), &env))
}

/// Polls until a new connection to `host` is refused (the listener closed), at most `within`.
fn wait_refused(host: &str, within: Duration) -> Duration {
    let start = Instant::now();
    loop {
        match TcpStream::connect(host) {
            Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => return start.elapsed(),
            Err(e) => panic!("connecting to {host} after SIGTERM: {e}"),
            Ok(_) if start.elapsed() < within => std::thread::sleep(Duration::from_millis(20)),
            Ok(_) => panic!("{host} still accepts connections {within:?} after SIGTERM"),
        }
    }
}

/// GETs a blob and hashes its body as it streams: (status, bytes, digest).
fn blob_digest(reg: &Registry, repo: &str, digest: &str) -> (u16, u64, String) {
    let mut s = reg.open_request("GET", &format!("/v2/{repo}/blobs/{digest}"), &[], 0).expect("open GET");
    let mut r = BufReader::new(&mut s);
    let mut line = String::new();
    r.read_line(&mut line).unwrap();
    let status: u16 = line.split_whitespace().nth(1).and_then(|c| c.parse().ok()).expect("status line");
    loop {
        line.clear();
        r.read_line(&mut line).unwrap();
        if line.trim().is_empty() {
            break;
        }
    }
    let mut hasher = Sha256::new();
    let (mut n, mut buf) = (0u64, vec![0u8; MIB as usize]);
    loop {
        let got = r.read(&mut buf).expect("read blob body");
        if got == 0 {
            break;
        }
        hasher.update(&buf[..got]);
        n += got as u64;
    }
    (status, n, format!("sha256:{}", hex::encode(hasher.finalize())))
}

#[test]
fn sigterm_lets_a_300_mib_upload_finish_and_exits_0() {
    let dir = tempdir("tributary-e2e-shutdown-");
    let Some(mut reg) = start(dir.path(), 60) else { return };
    let size = 300 * MIB;
    let file = dir.path().join("big.bin");
    write_random_file(&file, size);
    let digest = file_digest(&file);

    let location = reg.start_upload("ns/big");
    let url = with_query(&location, &format!("digest={digest}"));
    let mut body = File::open(&file).unwrap();
    let mut s = reg.open_request("PUT", &url, &[("Content-Type", "application/octet-stream")], size).unwrap();
    let mut chunk = vec![0u8; 4 * MIB as usize];
    let mut sent = 0u64;
    // A third before the signal, then the rest at a pace that keeps the request in flight for seconds.
    while sent < 100 * MIB {
        body.read_exact(&mut chunk).unwrap();
        s.write_all(&chunk).unwrap();
        sent += chunk.len() as u64;
    }
    let pid = reg.pid();
    let host = reg.host.clone();
    signal(pid, "TERM");
    let signalled = Instant::now();
    let refused_after = wait_refused(&host, Duration::from_secs(5));
    note(format!("new connections refused {refused_after:?} after SIGTERM, with {} MiB of 300 sent", sent / MIB));
    while sent < size {
        let n = body.read(&mut chunk).unwrap();
        assert!(n > 0, "file shorter than {size}");
        s.write_all(&chunk[..n]).unwrap();
        sent += n as u64;
        std::thread::sleep(Duration::from_millis(40));
    }
    let r = read_response(&mut s, false).expect("the upload's response after SIGTERM");
    assert_eq!(r.status, 201, "PUT after SIGTERM: {r}\n{}", reg.log_text());
    assert_eq!(r.header("docker-content-digest"), Some(digest.as_str()), "{r}");
    note(format!("upload finished {:?} after SIGTERM", signalled.elapsed()));

    let status = reg.wait_exit(Duration::from_secs(60)).unwrap_or_else(|| panic!("no exit\n{}", reg.log_text()));
    assert!(status.success(), "exit status {status}\n{}", reg.log_text());
    note(format!("exited ({status}) {:?} after SIGTERM", signalled.elapsed()));
    let log = reg.log_text();
    assert!(log.contains("SIGTERM"), "the log says why it stopped\n{log}");

    reg.restart();
    let (status, bytes, got) = blob_digest(&reg, "ns/big", &digest);
    assert_eq!((status, bytes), (200, size), "the blob after restart");
    assert_eq!(got, digest, "the blob after restart is byte-exact");
    let status = reg.stop();
    assert!(status.success(), "exit status of an idle registry on SIGTERM: {status}");
}

#[test]
fn an_upload_past_the_shutdown_deadline_is_cut_off_and_the_process_exits_0() {
    let dir = tempdir("tributary-e2e-shutdown-deadline-");
    let Some(mut reg) = start(dir.path(), 2) else { return };
    let data = vec![7u8; 8 * MIB as usize];
    let digest = sha256_digest(&data);
    let location = reg.start_upload("ns/stalled");
    let url = with_query(&location, &format!("digest={digest}"));
    let mut s = reg.open_request("PUT", &url, &[], data.len() as u64).unwrap();
    s.write_all(&data[..MIB as usize]).unwrap();
    std::thread::sleep(Duration::from_millis(300));
    signal(reg.pid(), "TERM");
    let signalled = Instant::now();
    // The client stalls; the deadline (2 s) ends its request.
    let status = reg.wait_exit(Duration::from_secs(15)).unwrap_or_else(|| panic!("no exit\n{}", reg.log_text()));
    let took = signalled.elapsed();
    assert!(status.success(), "exit status {status}\n{}", reg.log_text());
    assert!(took >= Duration::from_secs(2), "exited after {took:?}, before the deadline");
    assert!(took < Duration::from_secs(10), "exited after {took:?}, long past the 2 s deadline");
    note(format!("exited ({status}) {took:?} after SIGTERM with a stalled upload"));
    let mut rest = Vec::new();
    let _ = s.set_read_timeout(Some(Duration::from_secs(5)));
    let _ = s.read_to_end(&mut rest);
    assert!(!String::from_utf8_lossy(&rest).contains("201"), "the stalled upload did not succeed");

    reg.restart();
    assert_eq!(reg.blob_status("ns/stalled", &digest), 404, "nothing of the unfinished blob is served");
    reg.stop();
}
