//! The shared stores of the S3 group: a moto S3 server and an etcd, each started on 127.0.0.1 on free ports in the
//! run's scratch directory and free to use every core (they play the network and the storage service both
//! registries share), killed by pid on drop; and moto's own put and get speed through object_store, the client
//! Tributary uses, with the same part size — the ceiling both registries share.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use bytes::{Bytes, BytesMut};
use futures::{StreamExt, TryStreamExt};
use object_store::multipart::MultipartStore;
use object_store::path::Path as ObjectPath;
use object_store::{ObjectStoreExt, PutPayload};

use crate::content::Blob;
use crate::servers::Tools;

/// The bucket every server of the group uses (each under its own prefix).
pub const BUCKET: &str = "bench";

/// A helper process (moto or etcd), killed on drop.
pub struct Helper {
    pub endpoint: String,
    child: Child,
}

impl Drop for Helper {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> anyhow::Result<u16> {
    let l = std::net::TcpListener::bind("127.0.0.1:0")?;
    Ok(l.local_addr()?.port())
}

fn in_path(name: &str) -> Option<std::path::PathBuf> {
    std::env::var_os("PATH")?.to_str()?.split(':').map(|d| Path::new(d).join(name)).find(|p| p.is_file())
}

/// `bin` from `$var`, else `PATH`; `None` when absent.
pub fn find(var: &str, name: &str) -> Option<std::path::PathBuf> {
    std::env::var_os(var).map(Into::into).or_else(|| in_path(name)).filter(|p: &std::path::PathBuf| p.is_file())
}

/// A command that may run on every core: this process is pinned to the client core, and children inherit that.
fn unpinned(tools: &Tools, bin: &Path) -> Command {
    match &tools.taskset {
        Some(taskset) => {
            let mut c = Command::new(taskset);
            c.arg("-c").arg(format!("0-{}", tools.server_core)).arg(bin);
            c
        }
        None => Command::new(bin),
    }
}

/// Polls `GET url` until `ok(status, body)`, for `within`.
async fn wait_for(
    http: &reqwest::Client,
    child: &mut Child,
    url: &str,
    ok: impl Fn(u16, &str) -> bool,
) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(status) = child.try_wait()? {
            bail!("{url}: the process exited ({status})");
        }
        if let Ok(r) = http.get(url).send().await {
            let status = r.status().as_u16();
            if ok(status, &r.text().await.unwrap_or_default()) {
                return Ok(());
            }
        }
        if Instant::now() > deadline {
            bail!("{url} did not answer within 30 s");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Starts moto (`$TRIBUTARY_MOTO_BIN` or `moto_server` on `PATH`) and creates [`BUCKET`].
pub async fn moto(tools: &Tools, bin: &Path, dir: &Path) -> anyhow::Result<Helper> {
    let port = free_port()?;
    let log = std::fs::File::create(dir.join(format!("moto-{port}.log")))?;
    let mut child = unpinned(tools, bin)
        .args(["-H", "127.0.0.1", "-p", &port.to_string()])
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log)
        .spawn()
        .with_context(|| format!("starting {}", bin.display()))?;
    let endpoint = format!("http://127.0.0.1:{port}");
    let http = reqwest::Client::new();
    wait_for(&http, &mut child, &format!("{endpoint}/"), |s, _| (200..500).contains(&s)).await?;
    let helper = Helper { endpoint, child };
    let r = http.put(format!("{}/{BUCKET}", helper.endpoint)).send().await?;
    anyhow::ensure!(r.status().is_success(), "creating bucket {BUCKET} on moto: {}", r.status());
    Ok(helper)
}

/// Starts etcd (`$TRIBUTARY_ETCD_BIN` or `etcd` on `PATH`) with a fresh data directory under `dir`.
pub async fn etcd(tools: &Tools, bin: &Path, dir: &Path) -> anyhow::Result<Helper> {
    let (client, peer) = (free_port()?, free_port()?);
    let endpoint = format!("http://127.0.0.1:{client}");
    let peer_url = format!("http://127.0.0.1:{peer}");
    let data = dir.join(format!("etcd-{client}"));
    let log = std::fs::File::create(dir.join(format!("etcd-{client}.log")))?;
    let mut child = unpinned(tools, bin)
        .arg("--name=bench")
        .arg(format!("--data-dir={}", data.display()))
        .arg(format!("--listen-client-urls={endpoint}"))
        .arg(format!("--advertise-client-urls={endpoint}"))
        .arg(format!("--listen-peer-urls={peer_url}"))
        .arg(format!("--initial-advertise-peer-urls={peer_url}"))
        .arg(format!("--initial-cluster=bench={peer_url}"))
        .args(["--logger=zap", "--log-level=warn"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .with_context(|| format!("starting {}", bin.display()))?;
    let http = reqwest::Client::new();
    wait_for(&http, &mut child, &format!("{endpoint}/health"), |_, b| b.contains("\"health\":\"true\"")).await?;
    Ok(Helper { endpoint, child })
}

/// object_store's S3 client on moto's bucket (moto checks no signature).
pub fn raw_client(endpoint: &str) -> anyhow::Result<Arc<object_store::aws::AmazonS3>> {
    let s3 = object_store::aws::AmazonS3Builder::new()
        .with_endpoint(endpoint)
        .with_bucket_name(BUCKET)
        .with_region("us-east-1")
        .with_access_key_id("testing")
        .with_secret_access_key("testing")
        .with_allow_http(true)
        .build()?;
    Ok(Arc::new(s3))
}

/// What one raw put took.
pub struct RawPut {
    /// From CreateMultipartUpload to the end of CompleteMultipartUpload.
    pub total: f64,
    /// CompleteMultipartUpload alone.
    pub complete: f64,
}

/// Puts `blob` at `key` as a multipart upload of `part` bytes per part, `in_flight` parts at a time (each part
/// gathered into one buffer first, as Tributary gathers them).
pub async fn raw_put(
    s3: &Arc<object_store::aws::AmazonS3>,
    key: &str,
    blob: &Blob,
    part: u64,
    in_flight: usize,
) -> anyhow::Result<RawPut> {
    let path = ObjectPath::from(key);
    let start = Instant::now();
    let id = s3.create_multipart(&path).await?;
    let count = blob.size.div_ceil(part) as usize;
    let parts: Vec<_> = futures::stream::iter(0..count)
        .map(|i| {
            let (s3, path, id) = (s3.clone(), path.clone(), id.clone());
            let (a, b) = (i as u64 * part, ((i as u64 + 1) * part).min(blob.size));
            let mut buf = BytesMut::with_capacity((b - a) as usize);
            for piece in blob.range(a, b) {
                buf.extend_from_slice(&piece);
            }
            let data: Bytes = buf.freeze();
            async move { s3.put_part(&path, &id, i, PutPayload::from(data)).await }
        })
        .buffered(in_flight)
        .try_collect()
        .await?;
    let t = Instant::now();
    s3.complete_multipart(&path, &id, parts).await?;
    Ok(RawPut { total: start.elapsed().as_secs_f64(), complete: t.elapsed().as_secs_f64() })
}

/// GETs `key` whole, streaming; returns the bytes read.
pub async fn raw_get(s3: &Arc<object_store::aws::AmazonS3>, key: &str) -> anyhow::Result<u64> {
    let r = s3.get(&ObjectPath::from(key)).await?;
    let mut stream = r.into_stream();
    let mut n = 0u64;
    while let Some(chunk) = stream.next().await {
        n += chunk?.len() as u64;
    }
    Ok(n)
}
