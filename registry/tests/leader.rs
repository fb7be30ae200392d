//! Work that must happen once, across replicas: several registries on one real etcd (skipped without the etcd
//! binary unless `TRIBUTARY_E2E_REQUIRED=1`) deliver each webhook event once, not once per replica; when the
//! delivering replica stops, or dies without releasing its lease, another takes over within seconds and no event
//! is lost or repeated; scheduled imports run on one replica, and an import asked of one replica is not fetched
//! again by the leader. A single replica on the embedded store delivers and imports as before.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use names::Digest;
use registry::config::storage::{Metadata, Storage};
use registry::testing::TestRegistry;
use reqwest::{Client, StatusCode};
use serde_json::{json, Value};
use storage_backends::testing::etcd::EtcdServer;

mod common;

use common::{Fake, OCI_MANIFEST};
const API: &str = "/apis/image.openshift.io/v1";

/// A replica: metadata in the shared etcd under one prefix, blobs in its own directory.
fn replica(etcd: &EtcdServer, webhook: &str, scheduled: Duration) -> TestRegistry {
    let storage = Storage { metadata: Metadata::Etcd(etcd.config("/leader-test/")), ..Default::default() };
    TestRegistry::builder()
        .with_storage(storage)
        .with_webhooks(&[webhook])
        .with_scheduled_import_interval(scheduled)
        .start()
}

/// Stops (or crashes) a replica off the async threads: dropping one waits for its server thread.
fn stop(replica: TestRegistry, crash: bool) {
    tokio::task::block_in_place(|| if crash { replica.crash() } else { drop(replica) });
}

/// Waits until exactly one of the running replicas holds the lease `leads` reads; returns its index.
async fn the_leader(replicas: &[Option<TestRegistry>], leads: fn(&TestRegistry) -> bool) -> usize {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let leaders: Vec<usize> =
            replicas.iter().enumerate().filter(|(_, r)| r.as_ref().is_some_and(leads)).map(|(i, _)| i).collect();
        assert!(leaders.len() <= 1, "two replicas lead at once: {leaders:?}");
        if let [one] = leaders[..] {
            return one;
        }
        assert!(Instant::now() < deadline, "no replica took the lease");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A webhook receiver on 127.0.0.1 recording each body; stops with the test's runtime.
async fn receiver() -> (String, Arc<Mutex<Vec<Value>>>) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    let bodies = Arc::new(Mutex::new(Vec::new()));
    let seen = bodies.clone();
    tokio::spawn(async move {
        while let Ok((mut sock, _)) = listener.accept().await {
            let seen = seen.clone();
            tokio::spawn(async move {
                let mut buf = Vec::new();
                let mut chunk = [0u8; 4096];
                loop {
                    let Ok(n) = sock.read(&mut chunk).await else { return };
                    if n == 0 {
                        return;
                    }
                    buf.extend_from_slice(&chunk[..n]);
                    let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") else { continue };
                    let head = String::from_utf8_lossy(&buf[..end]).to_ascii_lowercase();
                    let len = head
                        .lines()
                        .find_map(|l| l.strip_prefix("content-length:").map(|v| v.trim().parse::<usize>().unwrap()))
                        .unwrap_or(0);
                    if buf.len() < end + 4 + len {
                        continue;
                    }
                    seen.lock().unwrap().push(serde_json::from_slice(&buf[end + 4..end + 4 + len]).unwrap());
                    buf.drain(..end + 4 + len);
                    let ok = b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n";
                    if sock.write_all(ok).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    (url, bodies)
}

/// Pushes a one-layer image as `repo:tag` through `reg`.
async fn push(reg: &TestRegistry, repo: &str, tag: &str) {
    let http = Client::new();
    let config = json!({"architecture": "amd64", "os": "linux", "config": {"Cmd": ["echo", tag]}}).to_string();
    let c = Digest::sha256_of(config.as_bytes());
    let r = http.post(format!("{}/v2/{repo}/blobs/uploads/?digest={c}", reg.url())).body(config.clone()).send();
    assert_eq!(r.await.unwrap().status(), StatusCode::CREATED);
    let m = json!({"schemaVersion": 2, "mediaType": OCI_MANIFEST,
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": c, "size": config.len()},
        "layers": []})
    .to_string();
    let r = http.put(format!("{}/v2/{repo}/manifests/{tag}", reg.url())).header("Content-Type", OCI_MANIFEST).body(m);
    assert_eq!(r.send().await.unwrap().status(), StatusCode::CREATED);
}

/// Waits until `bodies` holds at least `n` events, then a while longer for any extra (duplicate) delivery;
/// returns how many times each tag was reported.
async fn deliveries(bodies: &Mutex<Vec<Value>>, n: usize) -> BTreeMap<String, usize> {
    let deadline = Instant::now() + Duration::from_secs(20);
    while bodies.lock().unwrap().len() < n {
        assert!(Instant::now() < deadline, "only {} of {n} events delivered", bodies.lock().unwrap().len());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let mut counts = BTreeMap::new();
    for b in bodies.lock().unwrap().iter() {
        assert_eq!(b["type"], "MODIFIED", "{b}");
        *counts.entry(b["tag"].as_str().unwrap().to_owned()).or_insert(0) += 1;
    }
    counts
}

/// Each of tags `t0`..`t{n-1}` once.
fn once_each(n: usize) -> BTreeMap<String, usize> {
    (0..n).map(|i| (format!("t{i}"), 1)).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn three_replicas_deliver_each_event_once_and_a_stopped_leader_is_replaced_at_once() {
    let Some(etcd) = EtcdServer::start() else { return };
    let (url, bodies) = receiver().await;
    let mut replicas: Vec<Option<TestRegistry>> =
        (0..3).map(|_| Some(replica(&etcd, &url, Duration::from_secs(900)))).collect();
    let leader = the_leader(&replicas, TestRegistry::leads_webhooks).await;
    for i in 0..6 {
        push(replicas[i % 3].as_ref().unwrap(), "ns/app", &format!("t{i}")).await;
    }
    assert_eq!(deliveries(&bodies, 6).await, once_each(6), "once each, not once per replica");

    stop(replicas[leader].take().unwrap(), false);
    let stopped = Instant::now();
    let next = the_leader(&replicas, TestRegistry::leads_webhooks).await;
    let took = stopped.elapsed();
    assert!(took < Duration::from_secs(2), "a released lease took {took:?} to move");
    for i in 6..10 {
        let via = replicas.iter().flatten().nth(i % 2).unwrap();
        push(via, "ns/app", &format!("t{i}")).await;
    }
    assert_eq!(deliveries(&bodies, 10).await, once_each(10), "after the handover: none lost, none repeated");
    eprintln!("webhooks: replica {leader} stopped, replica {next} delivering {took:?} later");
    for r in replicas.into_iter().flatten() {
        stop(r, false);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_crashed_leader_is_replaced_within_the_lease_ttl_and_no_event_is_lost() {
    let Some(etcd) = EtcdServer::start() else { return };
    let (url, bodies) = receiver().await;
    let mut replicas: Vec<Option<TestRegistry>> =
        (0..2).map(|_| Some(replica(&etcd, &url, Duration::from_secs(900)))).collect();
    let leader = the_leader(&replicas, TestRegistry::leads_webhooks).await;
    for i in 0..3 {
        push(replicas[i % 2].as_ref().unwrap(), "ns/app", &format!("t{i}")).await;
    }
    // Delivered, and the cursor (saved as soon as an event is handled) with it.
    assert_eq!(deliveries(&bodies, 3).await, once_each(3));

    stop(replicas[leader].take().unwrap(), true);
    let crashed = Instant::now();
    // Tags change while the dead replica still holds the lease: nobody delivers yet, nothing is lost.
    let survivor = replicas.iter().flatten().next().unwrap();
    for i in 3..6 {
        push(survivor, "ns/app", &format!("t{i}")).await;
    }
    let next = the_leader(&replicas, TestRegistry::leads_webhooks).await;
    let took = crashed.elapsed();
    // The test etcd's lease TTL is 2 s.
    assert!(took < Duration::from_secs(6), "took over {took:?} after the crash");
    assert_eq!(deliveries(&bodies, 6).await, once_each(6), "the events of the outage are delivered once");
    assert!(replicas[next].as_ref().unwrap().leads_imports(), "the import controller moved too");
    eprintln!("webhooks: replica {leader} crashed, replica {next} delivering {took:?} later (lease TTL 2 s)");
    for r in replicas.into_iter().flatten() {
        stop(r, false);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn scheduled_imports_run_on_one_replica_and_an_api_import_is_fetched_once() {
    let Some(etcd) = EtcdServer::start() else { return };
    let upstream = upstream();
    let (url, _bodies) = receiver().await;
    let interval = Duration::from_secs(5);
    let replicas: Vec<Option<TestRegistry>> = (0..3).map(|_| Some(replica(&etcd, &url, interval))).collect();
    let leader = the_leader(&replicas, TestRegistry::leads_imports).await;
    let other = replicas[(leader + 1) % 3].as_ref().unwrap();
    let http = Client::new();
    let r = http.post(format!("{}/apis/tributary.dev/v1/namespaces", other.url())).json(&json!({"name": "team"}));
    assert!(r.send().await.unwrap().status().is_success());

    // Asked of a replica that does not lead: it imports, and the leader finds nothing left to fetch.
    let isi = json!({"kind": "ImageStreamImport", "apiVersion": "image.openshift.io/v1",
        "metadata": {"name": "once"}, "spec": {"import": true, "images": [{"from": {"kind": "DockerImage",
        "name": format!("{}/lib/once:1", upstream.host)}, "importPolicy": {"insecure": true}}]}});
    let r = http.post(format!("{}{API}/namespaces/team/imagestreamimports", other.url())).json(&isi).send();
    let answer: Value = r.await.unwrap().json().await.unwrap();
    assert_eq!(answer["status"]["images"][0]["status"]["status"], "Success", "{answer}");
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(upstream.hits("/v2/lib/once/manifests/1"), 1, "fetched by the asked replica only");

    // A scheduled tag: the controller imports it, then again every interval, on one replica only.
    let stream = json!({"metadata": {"name": "app"}, "spec": {"tags": [{"name": "latest",
        "from": {"kind": "DockerImage", "name": format!("{}/lib/app:1", upstream.host)},
        "importPolicy": {"insecure": true, "scheduled": true}}]}});
    let r = http.post(format!("{}{API}/namespaces/team/imagestreams", other.url())).json(&stream).send();
    assert_eq!(r.await.unwrap().status(), StatusCode::CREATED);
    let deadline = Instant::now() + Duration::from_secs(10);
    while upstream.hits("/v2/lib/app/manifests/1") == 0 {
        assert!(Instant::now() < deadline, "the scheduled tag was never imported");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(upstream.hits("/v2/lib/app/manifests/1"), 1, "the first import, once");
    tokio::time::sleep(interval * 3).await;
    let scheduled = upstream.hits("/v2/lib/app/manifests/1") - 1;
    // One replica re-imports about three times in three intervals; three replicas would have made about nine.
    assert!((2..=4).contains(&scheduled), "{scheduled} scheduled imports in three intervals");
    eprintln!("scheduled imports: {scheduled} in {:?} across 3 replicas (interval {interval:?})", interval * 3);
    for r in replicas.into_iter().flatten() {
        stop(r, false);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_single_replica_on_the_embedded_store_still_delivers_and_imports() {
    let upstream = upstream();
    let (url, bodies) = receiver().await;
    let reg = TestRegistry::builder().with_webhooks(&[&url]).start();
    let deadline = Instant::now() + Duration::from_secs(5);
    while !(reg.leads_webhooks() && reg.leads_imports()) {
        assert!(Instant::now() < deadline, "the only replica leads");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    push(&reg, "ns/app", "t0").await;
    push(&reg, "ns/app", "t1").await;
    assert_eq!(deliveries(&bodies, 2).await, once_each(2));
    let http = Client::new();
    let stream = json!({"metadata": {"name": "imported"}, "spec": {"tags": [{"name": "t2",
        "from": {"kind": "DockerImage", "name": format!("{}/lib/app:1", upstream.host)},
        "importPolicy": {"insecure": true}}]}});
    let r = http.post(format!("{}{API}/namespaces/ns/imagestreams", reg.url())).json(&stream).send();
    let r = r.await.unwrap();
    assert!(r.status().is_success(), "{:?}", r.text().await);
    // The controller imports the spec tag; its new tag is delivered like any other.
    assert_eq!(deliveries(&bodies, 3).await, once_each(3));
    assert_eq!(upstream.hits("/v2/lib/app/manifests/1"), 1);
    stop(reg, false);
}

/// An upstream registry serving `lib/app:1` and `lib/once:1` on 127.0.0.1, counting requests by path.
fn upstream() -> Fake {
    let fake = Fake::start();
    for repo in ["lib/app", "lib/once"] {
        let layer = format!("layer of {repo}").into_bytes();
        let digest = Digest::sha256_of(&layer);
        fake.image(repo, "1", layer, &digest, Duration::ZERO);
    }
    fake
}
