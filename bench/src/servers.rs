//! The two registries under test: finding their binaries (never building or installing them), starting each on a
//! fresh data directory on loopback, pinned to a core with `taskset` when possible, and reading their CPU time and
//! memory from `/proc`. Nothing here speaks the registry API beyond waiting for `/v2/` to answer.

use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};

/// Which registry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    Ours,
    Peer,
}

impl Kind {
    pub const BOTH: [Kind; 2] = [Kind::Ours, Kind::Peer];

    pub fn name(self) -> &'static str {
        match self {
            Kind::Ours => "tributary",
            Kind::Peer => "distribution",
        }
    }
}

/// What the run needs from the machine, found before anything starts.
#[derive(Debug, Clone)]
pub struct Tools {
    pub tributary: PathBuf,
    pub peer: PathBuf,
    /// `taskset`, when present and there are at least two cores.
    pub taskset: Option<PathBuf>,
    pub server_core: usize,
    pub client_core: usize,
    pub clock_ticks: f64,
}

fn in_path(name: &str) -> Option<PathBuf> {
    std::env::var_os("PATH")?.to_str()?.split(':').map(|d| Path::new(d).join(name)).find(|p| p.is_file())
}

impl Tools {
    /// Finds the binaries (the peer's only when `need_peer`); explains what is missing and how to get it.
    pub fn find(need_peer: bool) -> anyhow::Result<Tools> {
        let mut missing = Vec::new();
        // TRIBUTARY_BIN, else next to this executable (same target directory), else $CARGO_TARGET_DIR, else the
        // workspace's target/.
        let tributary = match std::env::var_os("TRIBUTARY_BIN") {
            Some(p) => Some(PathBuf::from(p)).filter(|p| p.is_file()),
            None => {
                let sibling = std::env::current_exe().ok().and_then(|e| Some(e.parent()?.join("tributary")));
                let target = std::env::var_os("CARGO_TARGET_DIR")
                    .map(PathBuf::from)
                    .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../target"));
                sibling.into_iter().chain([target.join("release/tributary")]).find(|p| p.is_file())
            }
        };
        if tributary.is_none() {
            missing.push(
                "the tributary binary: build it with `cargo build --release -p registry --bin tributary` (same \
                 CARGO_TARGET_DIR as this command), or point TRIBUTARY_BIN at one"
                    .to_owned(),
            );
        }
        let peer = std::env::var_os("PEER_BIN").map(PathBuf::from).or_else(|| in_path("docker-registry"));
        if need_peer && peer.as_ref().is_none_or(|p| !p.is_file()) {
            missing.push(
                "docker-registry (CNCF distribution 2.8): `sudo apt-get install docker-registry` on Debian, or point \
                 PEER_BIN at a distribution binary"
                    .to_owned(),
            );
        }
        if !missing.is_empty() {
            bail!("missing:\n  - {}", missing.join("\n  - "));
        }
        let cores = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1);
        let taskset = if cores >= 2 { in_path("taskset") } else { None };
        let clock_ticks = Command::new("getconf")
            .arg("CLK_TCK")
            .output()
            .ok()
            .and_then(|o| String::from_utf8(o.stdout).ok())
            .and_then(|s| s.trim().parse::<f64>().ok())
            .unwrap_or(100.0);
        Ok(Tools {
            tributary: tributary.unwrap_or_default(),
            peer: peer.unwrap_or_default(),
            taskset,
            server_core: cores.saturating_sub(1),
            client_core: 0,
            clock_ticks,
        })
    }

    /// Pins this process (every thread it has and will start) to the client core.
    pub fn pin_client(&self) -> anyhow::Result<bool> {
        let Some(taskset) = &self.taskset else { return Ok(false) };
        let status = Command::new(taskset)
            .args(["-a", "-p", "-c", &self.client_core.to_string(), &std::process::id().to_string()])
            .stdout(Stdio::null())
            .status()
            .context("running taskset")?;
        Ok(status.success())
    }

    fn command(&self, bin: &Path) -> Command {
        match &self.taskset {
            Some(taskset) => {
                let mut c = Command::new(taskset);
                c.arg("-c").arg(self.server_core.to_string()).arg(bin);
                c
            }
            None => Command::new(bin),
        }
    }
}

/// A running registry, killed on drop. Its directory (data, config, log) is left in the run's scratch directory:
/// on this kind of disk (ext4 mounted with `discard`) unlinking synced files costs milliseconds each, so removal is
/// left to the end of the run, off the clock.
pub struct Server {
    pub kind: Kind,
    pub base: String,
    /// Sent as `Authorization: Bearer` on every request (Tributary only).
    pub token: Option<String>,
    pub pid: u32,
    child: Child,
    dir: PathBuf,
    clock_ticks: f64,
}

/// A fresh random secret in the shape of Tributary's API tokens.
pub fn new_token() -> String {
    format!("trb_{}{}", uuid::Uuid::new_v4().simple(), uuid::Uuid::new_v4().simple())
}

fn free_port() -> anyhow::Result<u16> {
    let l = std::net::TcpListener::bind("127.0.0.1:0")?;
    Ok(l.local_addr()?.port())
}

/// Where a server keeps blobs and metadata: by default its data directory; blobs on the run's S3 server (moto)
/// and, for ours, metadata on etcd when given. Each server gets its own key prefix, so several share one S3 server
/// and one etcd.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Storage {
    /// S3 `endpoint`, `bucket` and key `prefix`.
    pub s3: Option<(String, String, String)>,
    /// etcd `endpoint` and key prefix (ours only: the peer has no such store).
    pub etcd: Option<(String, String)>,
    /// Blob GETs answered with a 307 to a presigned S3 URL (ours only: `--s3-redirect`).
    pub redirect: bool,
    /// Ours' administrator token, shared by the replicas on one metadata store (the token is kept there: a replica
    /// starting with another one replaces it, and the first replica then refuses its own); fresh when `None`.
    pub admin_token: Option<String>,
}

/// The credentials every server gives moto (which checks none).
const S3_KEY: &str = "testing";

impl Storage {
    /// Tributary's flags for this storage.
    fn ours_args(&self) -> Vec<String> {
        let mut a = Vec::new();
        if let Some((endpoint, bucket, prefix)) = &self.s3 {
            a.extend(["--blob-backend", "s3", "--s3-endpoint", endpoint, "--s3-bucket", bucket, "--s3-prefix", prefix]);
            a.extend(["--s3-access-key-id", S3_KEY, "--s3-secret-access-key", S3_KEY]);
            if self.redirect {
                a.extend(["--s3-redirect", "true"]);
            }
        }
        if let Some((endpoint, prefix)) = &self.etcd {
            a.extend(["--metadata-backend", "etcd", "--etcd-endpoint", endpoint, "--etcd-prefix", prefix]);
        }
        a.into_iter().map(str::to_owned).collect()
    }

    /// distribution's storage driver section (indented under `storage:`). On S3: 8 MiB parts like ours, and
    /// blobs served through the registry (`redirect: disable`), as ours serves them, rather than by redirecting
    /// the client to a pre-signed S3 URL.
    fn peer_driver(&self, data: &Path) -> String {
        match &self.s3 {
            None => format!("  filesystem:\n    rootdirectory: {}\n", data.display()),
            Some((endpoint, bucket, prefix)) => format!(
                "  s3:\n    region: us-east-1\n    bucket: {bucket}\n    regionendpoint: {endpoint}\n    accesskey: \
                 {S3_KEY}\n    secretkey: {S3_KEY}\n    secure: false\n    v4auth: true\n    chunksize: 8388608\n    \
                 rootdirectory: /{prefix}\n  redirect:\n    disable: true\n"
            ),
        }
    }
}

/// How a peer (distribution) is configured.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PeerRole {
    /// A plain registry, pinned to the server core, without an access log.
    Plain,
    /// The upstream of the pull-through workloads: unpinned (it plays the network), with its access log on.
    Upstream,
    /// distribution's pull-through cache of the registry at this URL (`proxy.remoteurl`).
    Proxy(String),
}

impl Server {
    /// Starts `kind`; a peer in the given role.
    pub fn start_as(tools: &Tools, kind: Kind, scratch: &Path, role: PeerRole) -> anyhow::Result<Server> {
        Server::start_on(tools, kind, scratch, role, &Storage::default())
    }

    /// Starts `kind` on `storage`; a peer in the given role.
    pub fn start_on(
        tools: &Tools,
        kind: Kind,
        scratch: &Path,
        role: PeerRole,
        storage: &Storage,
    ) -> anyhow::Result<Server> {
        Server::start_with_args(tools, kind, scratch, role, storage, &[])
    }

    /// [`Server::start_on`], with more `tributary serve` flags for ours (`--metrics false`, say).
    pub fn start_with_args(
        tools: &Tools,
        kind: Kind,
        scratch: &Path,
        role: PeerRole,
        storage: &Storage,
        ours_extra: &[&str],
    ) -> anyhow::Result<Server> {
        let dir = Server::new_dir(kind, scratch)?;
        Server::start_in(tools, kind, dir, role, storage, ours_extra)
    }

    /// A fresh directory for a server in `scratch`; its data directory is `<dir>/data` (seed it, then
    /// [`Server::start_in`]).
    pub fn new_dir(kind: Kind, scratch: &Path) -> anyhow::Result<PathBuf> {
        Ok(tempfile::Builder::new().prefix(&format!("{}-", kind.name())).tempdir_in(scratch)?.keep())
    }

    /// Starts `kind` in `dir` (from [`Server::new_dir`], perhaps seeded), on `storage`, with more `tributary serve`
    /// flags for ours; a peer in the given role.
    pub fn start_in(
        tools: &Tools,
        kind: Kind,
        dir: PathBuf,
        role: PeerRole,
        storage: &Storage,
        ours_extra: &[&str],
    ) -> anyhow::Result<Server> {
        let log = std::fs::File::create(dir.join("server.log"))?;
        let data = dir.join("data");
        match kind {
            Kind::Ours => {
                let token = storage.admin_token.clone().unwrap_or_else(new_token);
                let mut child = tools
                    .command(&tools.tributary)
                    .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
                    .arg(&data)
                    .args(storage.ours_args())
                    .args(ours_extra)
                    .env("TRIBUTARY_ADMIN_TOKEN", &token)
                    .env("TRIBUTARY_LOG", "warn")
                    .stdin(Stdio::null())
                    .stdout(Stdio::piped())
                    .stderr(log)
                    .spawn()
                    .with_context(|| format!("starting {}", tools.tributary.display()))?;
                let stdout = child.stdout.take().context("no stdout")?;
                let (tx, rx) = std::sync::mpsc::channel();
                std::thread::spawn(move || {
                    let mut lines = BufReader::new(stdout);
                    let mut first = String::new();
                    let _ = lines.read_line(&mut first);
                    let _ = tx.send(first);
                    // Keep draining so the server never blocks on a full pipe.
                    let _ = std::io::copy(&mut lines, &mut std::io::sink());
                });
                let pid = child.id();
                let mut server = Server {
                    kind,
                    base: String::new(),
                    token: Some(token),
                    pid,
                    child,
                    dir,
                    clock_ticks: tools.clock_ticks,
                };
                let line = rx.recv_timeout(Duration::from_secs(30)).unwrap_or_default();
                let Some(url) = line.trim().strip_prefix("tributary listening on ") else {
                    bail!("tributary did not print its address (got {line:?}); log:\n{}", server.log_tail());
                };
                server.base = url.trim_end_matches('/').to_owned();
                server.wait_ready()?;
                Ok(server)
            }
            Kind::Peer => {
                let port = free_port()?;
                let config = dir.join("config.yml");
                let access_log = if role == PeerRole::Upstream { "false" } else { "true" };
                let proxy = match &role {
                    PeerRole::Proxy(url) => format!("proxy:\n  remoteurl: {url}\n"),
                    _ => String::new(),
                };
                std::fs::write(
                    &config,
                    format!(
                        "version: 0.1\nlog:\n  level: warn\n  accesslog:\n    disabled: {access_log}\nstorage:\n  \
                         cache:\n    blobdescriptor: inmemory\n{}  delete:\n    enabled: true\nhttp:\n  addr: \
                         127.0.0.1:{port}\n{proxy}",
                        storage.peer_driver(&data)
                    ),
                )?;
                let mut command = match role {
                    PeerRole::Upstream => Command::new(&tools.peer),
                    _ => tools.command(&tools.peer),
                };
                if storage.s3.is_some() {
                    // The AWS SDK of distribution 2.8 panics at start when AWS_CA_BUNDLE is set ("unable to load
                    // custom CA bundle, HTTPClient's transport unsupported type"); moto is plain HTTP anyway.
                    command.env_remove("AWS_CA_BUNDLE");
                }
                let child = command
                    .arg("serve")
                    .arg(&config)
                    .stdin(Stdio::null())
                    .stdout(log.try_clone()?)
                    .stderr(log)
                    .spawn()
                    .with_context(|| format!("starting {}", tools.peer.display()))?;
                let pid = child.id();
                let mut server = Server {
                    kind,
                    base: format!("http://127.0.0.1:{port}"),
                    token: None,
                    pid,
                    child,
                    dir,
                    clock_ticks: tools.clock_ticks,
                };
                server.wait_ready()?;
                Ok(server)
            }
        }
    }

    /// Polls `GET /v2/` until it answers 200. A 401 with the admin token is an error worth reporting as such.
    /// When the token it was given is refused but the server wrote one to `<data-dir>/admin.token`, that one is used.
    fn wait_ready(&mut self) -> anyhow::Result<()> {
        let deadline = Instant::now() + Duration::from_secs(30);
        let host = self.base.trim_start_matches("http://").to_owned();
        loop {
            match raw_get(&host, "/v2/", self.token.as_deref()) {
                Ok(200) => return Ok(()),
                Ok(401) if self.kind == Kind::Ours && self.adopt_generated_token() => continue,
                Ok(401) => bail!(
                    "{} answers 401 to GET /v2/ with the admin token it was started with \
                     (TRIBUTARY_ADMIN_TOKEN); the benchmark cannot authenticate. Log:\n{}",
                    self.kind.name(),
                    self.log_tail()
                ),
                Ok(_) | Err(_) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(20)),
                Ok(code) => bail!("{} answers {code} to GET /v2/; log:\n{}", self.kind.name(), self.log_tail()),
                Err(e) => {
                    bail!("{} does not answer on {}: {e}; log:\n{}", self.kind.name(), self.base, self.log_tail())
                }
            }
        }
    }

    /// Switches to the token the server generated in its data directory, if there is a different one.
    fn adopt_generated_token(&mut self) -> bool {
        let file = std::fs::read_to_string(self.data_dir().join("admin.token")).unwrap_or_default();
        let file = file.trim();
        if file.is_empty() || self.token.as_deref() == Some(file) {
            return false;
        }
        eprintln!("note: tributary ignored TRIBUTARY_ADMIN_TOKEN; using the token it wrote to admin.token");
        self.token = Some(file.to_owned());
        true
    }

    pub fn data_dir(&self) -> PathBuf {
        self.dir.join("data")
    }

    /// The end of the server's log, for error messages.
    pub fn log_tail(&self) -> String {
        let mut s = String::new();
        if let Ok(mut f) = std::fs::File::open(self.dir.join("server.log")) {
            let _ = f.read_to_string(&mut s);
        }
        let start = s.len().saturating_sub(2000);
        s[s.floor_char_boundary_compat(start)..].to_owned()
    }

    /// CPU seconds the server's threads have run so far, to the nanosecond: the sum of the scheduler's runtime of
    /// each thread (`/proc/PID/task/*/schedstat`, first field), exact for threads that are not running when read.
    /// A thread that has exited no longer counts, so this measures intervals in which the server keeps its threads
    /// (the short slices of [`crate::overhead`]); `None` where the kernel does not say.
    pub fn cpu_seconds_exact(&self) -> Option<f64> {
        let mut nanos = 0u64;
        for task in std::fs::read_dir(format!("/proc/{}/task", self.pid)).ok()? {
            let stat = std::fs::read_to_string(task.ok()?.path().join("schedstat")).ok()?;
            nanos += stat.split_whitespace().next()?.parse::<u64>().ok()?;
        }
        Some(nanos as f64 / 1e9)
    }

    /// User + system CPU seconds the server has used so far (all threads, exited ones included), in clock ticks.
    pub fn cpu_seconds(&self) -> f64 {
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", self.pid)).unwrap_or_default();
        // Fields after the command name, which is in parentheses and may hold spaces.
        let rest = stat.rsplit_once(") ").map(|(_, r)| r).unwrap_or("");
        let f: Vec<&str> = rest.split_whitespace().collect();
        // utime and stime are fields 14 and 15 of stat, i.e. 11 and 12 after the name and state.
        let ticks = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
        (ticks(11) + ticks(12)) / self.clock_ticks
    }

    fn status_kib(&self, field: &str) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid)).unwrap_or_default();
        status
            .lines()
            .find_map(|l| l.strip_prefix(field))
            .and_then(|v| v.trim_start_matches(':').split_whitespace().next()?.parse().ok())
            .unwrap_or(0)
    }

    /// Resident set size now, in bytes.
    pub fn rss(&self) -> u64 {
        self.status_kib("VmRSS") * 1024
    }

    /// Peak resident set size since start or the last [`Server::reset_peak`], in bytes.
    pub fn peak_rss(&self) -> u64 {
        self.status_kib("VmHWM") * 1024
    }

    /// How many bytes of the stored file of blob `digest` (`size` bytes, somewhere under the data directory) the
    /// page cache holds, by util-linux's `fincore`; `None` when `fincore` is missing. Memory a push costs the
    /// machine that the RSS does not show: a server that writes through the page cache leaves the blob there
    /// (dirty, then clean until reclaimed), one that writes around it (ours, `O_DIRECT`) does not.
    pub fn page_cache_of(&self, digest: &str, size: u64) -> anyhow::Result<Option<u64>> {
        let dir = self.data_dir();
        let file = find_file(&dir, &|path, len| {
            len == size && path.to_string_lossy().contains(digest.trim_start_matches("sha256:"))
        })?
        .with_context(|| format!("no stored file of {size} bytes for {digest} under {}", dir.display()))?;
        let out = match Command::new("fincore").args(["--bytes", "--noheadings", "--output", "RES"]).arg(&file).output()
        {
            Ok(out) => out,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e.into()),
        };
        anyhow::ensure!(out.status.success(), "fincore {}: {}", file.display(), String::from_utf8_lossy(&out.stderr));
        let text = String::from_utf8_lossy(&out.stdout);
        Ok(Some(text.trim().parse().with_context(|| format!("fincore printed {text:?}"))?))
    }

    /// Freezes (`SIGSTOP`) or thaws (`SIGCONT`) the server.
    pub fn freeze(&self, frozen: bool) -> anyhow::Result<()> {
        let sig = if frozen { "-STOP" } else { "-CONT" };
        let ok = Command::new("kill").arg(sig).arg(self.pid.to_string()).status()?.success();
        anyhow::ensure!(ok, "kill {sig} {} failed", self.pid);
        Ok(())
    }

    /// How many requests for `path_part` the server's access log shows (an upstream's).
    pub fn requests_for(&self, path_part: &str) -> usize {
        let log = std::fs::read_to_string(self.dir.join("server.log")).unwrap_or_default();
        log.lines().filter(|l| l.contains(path_part) && l.contains("\"GET ")).count()
    }

    /// Resets `VmHWM` to the current RSS (`/proc/PID/clear_refs`, Linux ≥ 4.0). Returns whether it worked.
    pub fn reset_peak(&self) -> bool {
        std::fs::write(format!("/proc/{}/clear_refs", self.pid), "5").is_ok()
    }
}

/// The first regular file under `dir` (depth first) whose path and length `wanted` accepts.
fn find_file(dir: &Path, wanted: &dyn Fn(&Path, u64) -> bool) -> std::io::Result<Option<PathBuf>> {
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let (path, meta) = (entry.path(), entry.metadata()?);
        let found = match meta.is_dir() {
            true => find_file(&path, wanted)?,
            false => wanted(&path, meta.len()).then_some(path),
        };
        if found.is_some() {
            return Ok(found);
        }
    }
    Ok(None)
}

/// `str::floor_char_boundary` is unstable; this is enough for log tails.
trait FloorBoundary {
    fn floor_char_boundary_compat(&self, i: usize) -> usize;
}

impl FloorBoundary for str {
    fn floor_char_boundary_compat(&self, mut i: usize) -> usize {
        while i > 0 && !self.is_char_boundary(i) {
            i -= 1;
        }
        i
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A minimal blocking `GET` returning the status code, used only while waiting for a server to come up.
fn raw_get(host: &str, path: &str, token: Option<&str>) -> std::io::Result<u16> {
    use std::io::Write;
    let mut s = std::net::TcpStream::connect(host)?;
    s.set_read_timeout(Some(Duration::from_secs(5)))?;
    let auth = token.map(|t| format!("Authorization: Bearer {t}\r\n")).unwrap_or_default();
    write!(s, "GET {path} HTTP/1.1\r\nHost: {host}\r\n{auth}Connection: close\r\n\r\n")?;
    let mut line = String::new();
    BufReader::new(s).read_line(&mut line)?;
    line.split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| std::io::Error::other(format!("bad status line {line:?}")))
}
