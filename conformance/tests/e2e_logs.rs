//! End-to-end log output and version of the `tributary` binary: with stderr going to a file (not a terminal) the
//! text log has no ANSI colour codes and one `request` line per request; `TRIBUTARY_LOG_FORMAT=json` writes one
//! JSON object per line, the request lines carrying method, route (never the raw path), status, bytes, duration,
//! client address and user; `tributary version` and `--version` print the version and commit, and responses
//! carry `Server: tributary/<version>`.
mod common;

use std::process::Command;
use std::time::Duration;

use common::*;
use serde_json::Value;

fn tributary_only() -> bool {
    if Target::from_env() != Target::Tributary {
        note("log output is Tributary's: skipped for another registry");
        return false;
    }
    true
}

/// The registry's log lines written since it started (stdout and stderr both go to its log file).
fn log_lines(reg: &Registry) -> Vec<String> {
    let text = std::fs::read_to_string(reg.log_path()).expect("read the server log");
    text.lines().map(str::to_owned).collect()
}

/// Waits until a log line satisfies `found` (the log is written asynchronously to the request's answer).
fn wait_for_line(reg: &Registry, found: impl Fn(&str) -> bool) -> String {
    for _ in 0..100 {
        if let Some(line) = log_lines(reg).into_iter().find(|l| found(l)) {
            return line;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("no such log line\n{}", reg.log_text());
}

#[test]
fn text_logs_off_a_terminal_have_no_colour_codes() {
    if !tributary_only() {
        return;
    }
    let dir = tempdir("tributary-e2e-logs-text-");
    let reg = Registry::start(dir.path());
    let r = reg.get("/v2/ns/app/tags/list");
    assert!(matches!(r.status, 404 | 200), "{r}");
    let line = wait_for_line(&reg, |l| l.contains("route=oci:tags"));
    assert!(line.contains(" INFO ") && line.contains("request"), "{line}");
    assert!(line.contains("status=") && line.contains("duration_ms=") && line.contains("client=127.0.0.1:"), "{line}");
    assert!(!line.contains("/v2/ns/app"), "the raw path is not logged: {line}");
    let all = log_lines(&reg).join("\n");
    assert!(!all.contains("\x1b["), "ANSI escape codes in a log written to a file:\n{all}");
}

#[test]
fn json_logs_carry_one_line_per_request_with_its_fields() {
    if !tributary_only() {
        return;
    }
    let dir = tempdir("tributary-e2e-logs-json-");
    let env = [("TRIBUTARY_LOG_FORMAT".to_owned(), "json".to_owned())];
    let reg = Registry::start_replica(dir.path(), &new_token(), &env);
    let blob = vec![42u8; 3000];
    let digest = sha256_digest(&blob);
    let location = reg.start_upload("ns/app");
    let r = reg.request("PUT", &with_query(&location, &format!("digest={digest}")), &[], &blob);
    assert_eq!(r.status, 201, "{r}");
    assert_eq!(r.header("server"), Some(format!("tributary/{}", env!("CARGO_PKG_VERSION")).as_str()), "{r}");
    let get = reg.get(&format!("/v2/ns/app/blobs/{digest}"));
    assert_eq!(get.status, 200, "{get}");

    let is_request = |v: &Value, route: &str, method: &str| {
        v["message"] == "request" && v["route"] == route && v["method"] == method
    };
    let parse = |l: &str| serde_json::from_str::<Value>(l).ok();
    let put = wait_for_line(&reg, |l| parse(l).is_some_and(|v| is_request(&v, "oci:upload", "PUT")));
    let put: Value = serde_json::from_str(&put).unwrap();
    assert_eq!(put["level"], "INFO", "{put}");
    assert_eq!(put["status"], 201, "{put}");
    assert_eq!(put["bytes_in"], 3000, "{put}");
    assert!(put["duration_ms"].as_f64().is_some_and(|d| d >= 0.0), "{put}");
    assert!(put["client"].as_str().is_some_and(|c| c.starts_with("127.0.0.1:")), "{put}");
    assert_eq!(put["user"], "admin", "{put}");
    assert!(put["timestamp"].is_string(), "{put}");
    let got = wait_for_line(&reg, |l| parse(l).is_some_and(|v| is_request(&v, "oci:blob", "GET")));
    let got: Value = serde_json::from_str(&got).unwrap();
    assert_eq!((got["status"].as_u64(), got["bytes_out"].as_u64()), (Some(200), Some(3000)), "{got}");

    // Every stderr line is JSON (stdout's "listening" line and the harness's markers are not the log).
    let lines = log_lines(&reg);
    for line in lines.iter().filter(|l| !l.starts_with("=====") && !l.starts_with("tributary listening")) {
        assert!(parse(line).is_some(), "not a JSON line: {line:?}");
    }
    assert!(!lines.join("\n").contains("\x1b["), "ANSI escape codes in the JSON log");
}

#[test]
fn version_is_printed_with_the_commit() {
    let bin = tributary_bin();
    let version = env!("CARGO_PKG_VERSION");
    for args in [&["version"][..], &["--version"][..]] {
        let out = run_ok(Command::new(&bin).args(args), Duration::from_secs(30));
        let line = out.stdout.trim();
        assert!(line.starts_with(&format!("tributary {version} (commit ")), "{args:?}: {line}");
        let commit = line.rsplit_once("(commit ").map(|(_, c)| c.trim_end_matches(')')).unwrap_or_default();
        assert!(
            commit == "unknown" || (commit.len() == 12 && commit.chars().all(|c| c.is_ascii_hexdigit())),
            "{args:?}: commit {commit:?}"
        );
    }
}
