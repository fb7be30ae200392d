//! The runner tells Tributary from other registries by the `Server` header of `GET /v2/`: a Tributary without the
//! image stream API fails every stream check, any other registry without it skips them.

use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};

use conformance::{checks::streams::CHECKS, Config, Outcome};

/// A registry on 127.0.0.1 that answers `GET /v2/` with 200 (and `server`, if given) and 404 to everything else.
fn start(server: Option<&'static str>) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    std::thread::spawn(move || {
        for conn in listener.incoming().map_while(Result::ok) {
            std::thread::spawn(move || answer(conn, server));
        }
    });
    url
}

fn answer(mut conn: TcpStream, server: Option<&str>) {
    let mut reader = BufReader::new(conn.try_clone().unwrap());
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).unwrap_or(0) == 0 {
            return;
        }
        let path = line.split_whitespace().nth(1).unwrap_or("").to_owned();
        loop {
            let mut h = String::new();
            if reader.read_line(&mut h).unwrap_or(0) == 0 || h == "\r\n" {
                break;
            }
        }
        let server = server.map(|s| format!("Server: {s}\r\n")).unwrap_or_default();
        let (status, body) = if path == "/v2/" { ("200 OK", "{}") } else { ("404 Not Found", "404 page not found") };
        let head =
            format!("HTTP/1.1 {status}\r\n{server}Content-Type: text/plain\r\nContent-Length: {}\r\n\r\n", body.len());
        if conn.write_all(head.as_bytes()).and_then(|_| conn.write_all(body.as_bytes())).is_err() {
            return;
        }
    }
}

async fn streams_group(url: String) -> Vec<Outcome> {
    let mut config = Config::new(url);
    config.only = vec!["streams".into()];
    let report = conformance::run(config).await;
    report.group("streams").map(|r| r.outcome.clone()).collect()
}

#[tokio::test]
async fn tributary_without_the_stream_api_fails() {
    let outcomes = streams_group(start(Some("tributary/0.1.0"))).await;
    assert_eq!(outcomes.len(), CHECKS.len());
    for o in outcomes {
        assert!(matches!(&o, Outcome::Fail(why) if why.contains("tributary/0.1.0")), "{o:?}");
    }
}

#[tokio::test]
async fn another_registry_without_the_stream_api_skips() {
    let outcomes = streams_group(start(Some("nginx"))).await;
    assert_eq!(outcomes.len(), CHECKS.len());
    assert!(outcomes.iter().all(|o| matches!(o, Outcome::Skip(_))), "{outcomes:?}");
}
