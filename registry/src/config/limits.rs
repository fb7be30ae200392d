//! The `[limits]` and `[audit]` parts of the configuration: what protects the service from its clients (request
//! rate, concurrent uploads, slow bodies, slow and large headers, which proxies may name the client) and where the
//! audit log goes. One all-optional settings struct per table serves the three layers (TOML, `TRIBUTARY_*`
//! variables, flags); [`Limits::resolve`] and [`AuditConfig::resolve`] merge them (flags and variables win) and
//! check the result. Read by the HTTP edge ([`crate::http::limits`], [`crate::http::audit`]); nothing here opens a
//! file or a socket.
//!
//! ```toml
//! [limits]
//! rate-limit = 20                 # requests per second per client (token or user, else address); 0: off (default)
//! rate-limit-burst = 40           # requests a client may send at once [default: 2 x rate-limit, at least 1]
//! rate-limit-clients = 100000     # clients remembered at most (least recently seen forgotten first)
//! max-concurrent-uploads = 256    # blob bodies streaming in at once on this replica; 0: no cap
//! body-idle-timeout = "30s"       # longest silence between two pieces of a request body
//! body-min-rate = 1024            # bytes per second a body must average over each window; 0: no minimum
//! body-rate-window = "20s"        # the window body-min-rate is measured over
//! header-timeout = "5s"           # time to send the request line and headers
//! max-header-bytes = 32768        # request line and headers larger than this get 431
//! trusted-proxies = ["10.0.0.0/8"] # peers whose X-Forwarded-For / Forwarded name the client
//!
//! [audit]
//! path = "/var/log/tributary/audit.log"   # or "-" for stdout; absent: no audit log (the default)
//! max-size-mb = 100               # the file rotates past this size
//! max-files = 5                   # rotated files kept (audit.log.1 … .5); older ones are deleted
//! queue = 4096                    # lines waiting for the writer at most; more are dropped and counted
//! ```

use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

use super::duration::{seconds_or_duration, FileDuration};

fn file_duration(name: &str, d: Option<FileDuration>) -> anyhow::Result<Option<Duration>> {
    d.map(|d| d.resolve().map_err(|e| anyhow::anyhow!("limits.{name}: {e}"))).transpose()
}

/// A duration given as a flag or variable, or in the file.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(transparent)]
pub struct DurationSetting(pub FileDuration);

impl std::str::FromStr for DurationSetting {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        seconds_or_duration(s).map(|d| DurationSetting(FileDuration::Seconds(d.as_secs())))
    }
}

/// `[limits]` as any layer may give it; every field optional.
#[derive(Debug, Default, Clone, PartialEq, Deserialize, clap::Args)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct LimitsSettings {
    /// Requests per second each client may send (keyed by token or user, else by address); 0: no limit [default: 0].
    #[arg(long, value_name = "PER_SECOND", env = "TRIBUTARY_RATE_LIMIT", help_heading = "Limits")]
    pub rate_limit: Option<f64>,
    /// Requests a client may send at once above the rate [default: twice the rate, at least 1].
    #[arg(long, value_name = "N", env = "TRIBUTARY_RATE_LIMIT_BURST", help_heading = "Limits")]
    pub rate_limit_burst: Option<u32>,
    /// Clients the rate limiter remembers at most (the least recently seen are forgotten) [default: 100000].
    #[arg(long, value_name = "N", env = "TRIBUTARY_RATE_LIMIT_CLIENTS", help_heading = "Limits")]
    pub rate_limit_clients: Option<usize>,
    /// Blob bodies (upload PATCH and PUT, monolithic POST) streaming in at once on this replica; more get 429;
    /// 0: no cap [default: 256].
    #[arg(long, value_name = "N", env = "TRIBUTARY_MAX_CONCURRENT_UPLOADS", help_heading = "Limits")]
    pub max_concurrent_uploads: Option<usize>,
    /// Longest silence between two pieces of a request body before the request is cut off [default: 30s].
    #[arg(long, value_name = "DURATION", env = "TRIBUTARY_BODY_IDLE_TIMEOUT", help_heading = "Limits")]
    pub body_idle_timeout: Option<DurationSetting>,
    /// Bytes per second a request body must average over each window, or it is cut off; 0: no minimum
    /// [default: 1024].
    #[arg(long, value_name = "BYTES", env = "TRIBUTARY_BODY_MIN_RATE", help_heading = "Limits")]
    pub body_min_rate: Option<u64>,
    /// The window body-min-rate is measured over [default: 20s].
    #[arg(long, value_name = "DURATION", env = "TRIBUTARY_BODY_RATE_WINDOW", help_heading = "Limits")]
    pub body_rate_window: Option<DurationSetting>,
    /// Time a client has to send the request line and headers [default: 5s].
    #[arg(long, value_name = "DURATION", env = "TRIBUTARY_HEADER_TIMEOUT", help_heading = "Limits")]
    pub header_timeout: Option<DurationSetting>,
    /// Largest request line plus headers, in bytes; larger get 431 [default: 32768; at most 131072].
    #[arg(long, value_name = "BYTES", env = "TRIBUTARY_MAX_HEADER_BYTES", help_heading = "Limits")]
    pub max_header_bytes: Option<usize>,
    /// A proxy (CIDR or address) whose X-Forwarded-For / Forwarded headers name the client (repeatable;
    /// comma-separated in the environment) [default: none: the peer address is the client].
    #[arg(
        long = "trusted-proxy",
        value_name = "CIDR",
        env = "TRIBUTARY_TRUSTED_PROXIES",
        value_delimiter = ',',
        help_heading = "Limits"
    )]
    pub trusted_proxies: Option<Vec<String>>,
}

/// The per-client request rate limit.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RateLimit {
    pub per_second: f64,
    pub burst: u32,
    /// Clients remembered at most.
    pub clients: usize,
}

/// The effective limits.
#[derive(Debug, Clone, PartialEq)]
pub struct Limits {
    /// `None`: no rate limit.
    pub rate: Option<RateLimit>,
    /// `None`: no cap.
    pub max_concurrent_uploads: Option<usize>,
    pub body_idle_timeout: Duration,
    /// Bytes per second over `body_rate_window`; 0: no minimum.
    pub body_min_rate: u64,
    pub body_rate_window: Duration,
    pub header_timeout: Duration,
    pub max_header_bytes: usize,
    pub trusted_proxies: Vec<ipnet::IpNet>,
}

pub const DEFAULT_RATE_LIMIT_CLIENTS: usize = 100_000;
pub const DEFAULT_MAX_CONCURRENT_UPLOADS: usize = 256;
pub const DEFAULT_BODY_IDLE_TIMEOUT: Duration = Duration::from_secs(30);
pub const DEFAULT_BODY_MIN_RATE: u64 = 1024;
pub const DEFAULT_BODY_RATE_WINDOW: Duration = Duration::from_secs(20);
pub const DEFAULT_HEADER_TIMEOUT: Duration = Duration::from_secs(5);
pub const DEFAULT_MAX_HEADER_BYTES: usize = 32 * 1024;
/// actix-http refuses (431) a request head over 128 KiB or with more than 96 headers, whatever is configured.
pub const HARD_MAX_HEADER_BYTES: usize = 128 * 1024;

impl Default for Limits {
    fn default() -> Self {
        Limits {
            rate: None,
            max_concurrent_uploads: Some(DEFAULT_MAX_CONCURRENT_UPLOADS),
            body_idle_timeout: DEFAULT_BODY_IDLE_TIMEOUT,
            body_min_rate: DEFAULT_BODY_MIN_RATE,
            body_rate_window: DEFAULT_BODY_RATE_WINDOW,
            header_timeout: DEFAULT_HEADER_TIMEOUT,
            max_header_bytes: DEFAULT_MAX_HEADER_BYTES,
            trusted_proxies: Vec::new(),
        }
    }
}

/// A trusted proxy: a CIDR, or one address.
pub fn parse_proxy(s: &str) -> Result<ipnet::IpNet, String> {
    let s = s.trim();
    s.parse::<ipnet::IpNet>()
        .or_else(|_| s.parse::<std::net::IpAddr>().map(ipnet::IpNet::from))
        .map_err(|_| format!("trusted proxy {s:?}: expected a CIDR (10.0.0.0/8) or an address"))
}

impl Limits {
    /// Merges the layers (`over` wins field by field) and checks the result.
    pub fn resolve(over: LimitsSettings, file: LimitsSettings) -> anyhow::Result<Limits> {
        let d = Limits::default();
        let duration = |name: &str, o: Option<DurationSetting>, f: Option<DurationSetting>, default: Duration| {
            file_duration(name, o.or(f).map(|s| s.0)).map(|v| v.unwrap_or(default))
        };
        let per_second = over.rate_limit.or(file.rate_limit).unwrap_or(0.0);
        if !per_second.is_finite() || per_second < 0.0 {
            anyhow::bail!("limits.rate-limit must be a number of requests per second, 0 or more");
        }
        let rate = (per_second > 0.0).then(|| RateLimit {
            per_second,
            burst: over
                .rate_limit_burst
                .or(file.rate_limit_burst)
                .unwrap_or_else(|| (per_second * 2.0).ceil().min(u32::MAX as f64) as u32)
                .max(1),
            clients: over.rate_limit_clients.or(file.rate_limit_clients).unwrap_or(DEFAULT_RATE_LIMIT_CLIENTS).max(1),
        });
        let uploads =
            over.max_concurrent_uploads.or(file.max_concurrent_uploads).unwrap_or(DEFAULT_MAX_CONCURRENT_UPLOADS);
        let limits = Limits {
            rate,
            max_concurrent_uploads: (uploads > 0).then_some(uploads),
            body_idle_timeout: duration(
                "body-idle-timeout",
                over.body_idle_timeout,
                file.body_idle_timeout,
                d.body_idle_timeout,
            )?,
            body_min_rate: over.body_min_rate.or(file.body_min_rate).unwrap_or(d.body_min_rate),
            body_rate_window: duration(
                "body-rate-window",
                over.body_rate_window,
                file.body_rate_window,
                d.body_rate_window,
            )?,
            header_timeout: duration("header-timeout", over.header_timeout, file.header_timeout, d.header_timeout)?,
            max_header_bytes: over.max_header_bytes.or(file.max_header_bytes).unwrap_or(d.max_header_bytes),
            trusted_proxies: over
                .trusted_proxies
                .or(file.trusted_proxies)
                .unwrap_or_default()
                .iter()
                .filter(|p| !p.trim().is_empty())
                .map(|p| parse_proxy(p).map_err(|e| anyhow::anyhow!("limits.{e}")))
                .collect::<anyhow::Result<_>>()?,
        };
        if limits.body_idle_timeout.is_zero() || limits.body_rate_window.is_zero() || limits.header_timeout.is_zero() {
            anyhow::bail!("limits: body-idle-timeout, body-rate-window and header-timeout must be more than zero");
        }
        if limits.max_header_bytes == 0 || limits.max_header_bytes > HARD_MAX_HEADER_BYTES {
            anyhow::bail!("limits.max-header-bytes must be between 1 and {HARD_MAX_HEADER_BYTES}");
        }
        Ok(limits)
    }
}

/// `[audit]` as any layer may give it; every field optional.
#[derive(Debug, Default, Clone, PartialEq, Eq, Deserialize, clap::Args)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct AuditSettings {
    /// Write the audit log (one JSON line per write and per refusal) to this file, or `-` for stdout
    /// [default: no audit log].
    #[arg(long = "audit-path", value_name = "FILE", env = "TRIBUTARY_AUDIT_PATH", help_heading = "Audit")]
    pub path: Option<String>,
    /// The audit file rotates when it passes this size, in MiB [default: 100].
    #[arg(long = "audit-max-size-mb", value_name = "MIB", env = "TRIBUTARY_AUDIT_MAX_SIZE_MB", help_heading = "Audit")]
    pub max_size_mb: Option<u64>,
    /// Rotated audit files kept (FILE.1 is the newest); older ones are deleted [default: 5].
    #[arg(long = "audit-max-files", value_name = "N", env = "TRIBUTARY_AUDIT_MAX_FILES", help_heading = "Audit")]
    pub max_files: Option<usize>,
    /// Audit lines waiting for the writer at most; past that they are dropped and counted [default: 4096].
    #[arg(long = "audit-queue", value_name = "N", env = "TRIBUTARY_AUDIT_QUEUE", help_heading = "Audit")]
    pub queue: Option<usize>,
}

/// Where audit lines go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AuditTarget {
    Stdout,
    /// A file rotated by size: at most `max_bytes` (plus one line) each, `max_files` rotated ones kept.
    File {
        path: PathBuf,
        max_bytes: u64,
        max_files: usize,
    },
}

/// The effective audit configuration: `None` target means no audit log.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AuditConfig {
    pub target: Option<AuditTarget>,
    pub queue: usize,
}

pub const DEFAULT_AUDIT_MAX_SIZE_MB: u64 = 100;
pub const DEFAULT_AUDIT_MAX_FILES: usize = 5;
pub const DEFAULT_AUDIT_QUEUE: usize = 4096;

impl AuditConfig {
    /// Merges the layers (`over` wins field by field) and checks the result.
    pub fn resolve(over: AuditSettings, file: AuditSettings) -> anyhow::Result<AuditConfig> {
        let max_mb = over.max_size_mb.or(file.max_size_mb).unwrap_or(DEFAULT_AUDIT_MAX_SIZE_MB);
        let max_files = over.max_files.or(file.max_files).unwrap_or(DEFAULT_AUDIT_MAX_FILES);
        let queue = over.queue.or(file.queue).unwrap_or(DEFAULT_AUDIT_QUEUE);
        if max_mb == 0 || max_files == 0 || queue == 0 {
            anyhow::bail!("audit: max-size-mb, max-files and queue must be more than zero");
        }
        let target = match over.path.or(file.path).as_deref().map(str::trim) {
            None | Some("") => None,
            Some("-") => Some(AuditTarget::Stdout),
            Some(path) => Some(AuditTarget::File {
                path: PathBuf::from(path),
                max_bytes: max_mb.saturating_mul(1024 * 1024),
                max_files,
            }),
        };
        Ok(AuditConfig { target, queue })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_layers() {
        let l = Limits::resolve(LimitsSettings::default(), LimitsSettings::default()).unwrap();
        assert_eq!(l, Limits::default());
        let file: LimitsSettings = toml::from_str(
            "rate-limit = 5\nmax-concurrent-uploads = 0\nbody-idle-timeout = \"1m\"\ntrusted-proxies = [\"10.0.0.0/8\", \"::1\"]\n",
        )
        .unwrap();
        let over = LimitsSettings { rate_limit_burst: Some(3), ..LimitsSettings::default() };
        let l = Limits::resolve(over, file).unwrap();
        assert_eq!(l.rate, Some(RateLimit { per_second: 5.0, burst: 3, clients: DEFAULT_RATE_LIMIT_CLIENTS }));
        assert_eq!((l.max_concurrent_uploads, l.body_idle_timeout.as_secs()), (None, 60));
        assert_eq!(l.trusted_proxies.len(), 2);
        let bad = |toml: &str| Limits::resolve(LimitsSettings::default(), toml::from_str(toml).unwrap()).is_err();
        assert!(bad("trusted-proxies = [\"nope\"]"));
        assert!(bad("rate-limit = -1"));
        assert!(bad("max-header-bytes = 200000"));
        assert!(bad("header-timeout = 0"));
        assert!(toml::from_str::<LimitsSettings>("bogus = 1").is_err());
    }

    #[test]
    fn audit_layers() {
        let off = AuditConfig::resolve(AuditSettings::default(), AuditSettings::default()).unwrap();
        assert_eq!(off.target, None);
        let file: AuditSettings = toml::from_str("path = \"/var/log/a.log\"\nmax-size-mb = 2\n").unwrap();
        let a = AuditConfig::resolve(AuditSettings::default(), file.clone()).unwrap();
        assert_eq!(
            a.target,
            Some(AuditTarget::File { path: "/var/log/a.log".into(), max_bytes: 2 << 20, max_files: 5 })
        );
        let over = AuditSettings { path: Some("-".into()), ..AuditSettings::default() };
        assert_eq!(AuditConfig::resolve(over, file).unwrap().target, Some(AuditTarget::Stdout));
        let zero = AuditSettings { max_files: Some(0), ..AuditSettings::default() };
        assert!(AuditConfig::resolve(zero, AuditSettings::default()).is_err());
    }
}
