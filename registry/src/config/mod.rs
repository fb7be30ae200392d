//! Configuration: defaults, then a TOML file, then `TRIBUTARY_*` environment variables, then command-line flags.
//! With nothing set the registry listens on 0.0.0.0:5000 and keeps everything under ./data; [`storage`] chooses
//! other blob and metadata stores; [`limits`] holds the `[limits]` and `[audit]` tables.

pub mod cache;
pub mod cluster;
pub mod duration;
pub mod gc;
pub mod limits;
pub mod prune;
pub mod storage;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use auth::tokens::Secret;
use auth::AuthMode;
use serde::Deserialize;

/// Settings as they may appear in the TOML file; every field optional.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct FileConfig {
    pub listen: Option<String>,
    pub data_dir: Option<PathBuf>,
    pub public_host: Option<String>,
    pub max_manifest_bytes: Option<usize>,
    /// `token` (default) or `none`.
    pub auth: Option<AuthMode>,
    /// PEM certificate chain and private key: serve https (kubectl sends tokens only over https).
    pub tls_cert: Option<PathBuf>,
    pub tls_key: Option<PathBuf>,
    /// URLs POSTed an event whenever a stream tag changes.
    pub webhooks: Option<Vec<url::Url>>,
    /// `allowedRegistriesForImport`: registry hosts import and pull-through may reach (`*.domain` allowed);
    /// empty or absent: all.
    pub allowed_registries_for_import: Option<Vec<String>>,
    /// Hosts import and pull-through may reach even on link-local (or, with `outbound-deny-private`, private)
    /// addresses.
    pub outbound_allow_hosts: Option<Vec<String>>,
    /// Also refuse upstreams on loopback and private addresses (default false).
    pub outbound_deny_private: Option<bool>,
    /// Seconds to wait for a connection to an upstream (default 10).
    pub upstream_connect_timeout: Option<u64>,
    /// Seconds an upstream may stay silent while answering (default 30).
    pub upstream_read_timeout: Option<u64>,
    /// Seconds between imports of a tag with `importPolicy.scheduled` (default 900, at least 5).
    pub scheduled_import_interval: Option<u64>,
    /// Upload sessions untouched for this long are purged with their staged data: seconds or `24h` (default 24h).
    pub upload_purge_after: Option<duration::FileDuration>,
    /// How often the purge runs (default 1h): seconds or a duration.
    pub upload_purge_interval: Option<duration::FileDuration>,
    /// Refuse every write (a floor the admin API cannot lift; see `service::readonly`).
    pub read_only: Option<bool>,
    /// `[storage]`: the blob and metadata backends and their settings.
    #[serde(default)]
    pub storage: storage::StorageSettings,
    /// `[gc]`: background garbage collection.
    #[serde(default)]
    pub gc: gc::GcSettings,
    /// `[prune]`: the scheduled image pruner.
    #[serde(default)]
    pub prune: prune::PruneSettings,
    /// `[cache]`: the pull-through cache's size cap.
    #[serde(default)]
    pub cache: cache::CacheSettings,
    /// `[limits]`: rate limit, upload cap, body and header timeouts and sizes, trusted proxies.
    #[serde(default)]
    pub limits: limits::LimitsSettings,
    /// `[audit]`: where the audit log goes and how large it may grow.
    #[serde(default)]
    pub audit: limits::AuditSettings,
    /// `[metrics]`: `/metrics` on or off, and who may read it.
    #[serde(default)]
    pub metrics: MetricsSettings,
    /// `[cluster]`: image lookup admission and image-change triggers for a Kubernetes cluster.
    #[serde(default)]
    pub cluster: cluster::ClusterSettings,
}

/// `[metrics]` in the TOML file.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct MetricsSettings {
    /// Serve `/metrics` and time requests and store operations (default true).
    pub enabled: Option<bool>,
    /// Anyone may read `/metrics`, without credentials (default false: a caller allowed `get metrics`).
    pub anonymous: Option<bool>,
}

/// The effective configuration.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    pub listen: SocketAddr,
    pub data_dir: PathBuf,
    /// `host[:port]` the registry calls itself in `dockerImageReference`s.
    pub public_host: String,
    /// Largest manifest accepted (bytes); larger ones get 413.
    pub max_manifest_bytes: usize,
    /// Access control: `token` (API tokens, JWTs and role bindings; the default) or `none` (everything allowed).
    pub auth: AuthMode,
    /// The cluster administrator's token (`TRIBUTARY_ADMIN_TOKEN`); without it the first start generates one.
    pub admin_token: Option<Secret>,
    /// PEM certificate chain and private key (`TRIBUTARY_TLS_CERT`, `TRIBUTARY_TLS_KEY`): serve https.
    pub tls: Option<(PathBuf, PathBuf)>,
    /// URLs POSTed an event whenever a stream tag changes (`TRIBUTARY_WEBHOOKS`, comma-separated).
    pub webhooks: Vec<url::Url>,
    /// `allowedRegistriesForImport` (`TRIBUTARY_ALLOWED_REGISTRIES`, comma-separated); empty: every registry.
    pub allowed_registries: Vec<String>,
    /// What import and pull-through may reach, and their time-outs (`outbound-*`, `upstream-*-timeout`).
    pub outbound: crate::upstream::Outbound,
    /// How often scheduled tags are imported again (`TRIBUTARY_SCHEDULED_IMPORT_INTERVAL`, seconds).
    pub scheduled_import_interval: std::time::Duration,
    /// Upload sessions untouched for this long are purged (`TRIBUTARY_UPLOAD_PURGE_AFTER`).
    pub upload_purge_after: std::time::Duration,
    /// How often the upload purge runs (`TRIBUTARY_UPLOAD_PURGE_INTERVAL`).
    pub upload_purge_interval: std::time::Duration,
    /// Read-only from the configuration (`TRIBUTARY_READ_ONLY`): every write refused, whatever the admin API says.
    pub read_only: bool,
    /// The blob and metadata stores.
    pub storage: storage::Storage,
    /// Background garbage collection (`[gc]`).
    pub gc: gc::GcConfig,
    /// The scheduled image pruner (`[prune]`).
    pub prune: prune::PruneConfig,
    /// The pull-through cache's cap (`[cache]`); `None`: nothing is evicted.
    pub cache: Option<cache::CacheConfig>,
    /// What protects the service from its clients (`[limits]`).
    pub limits: limits::Limits,
    /// The audit log (`[audit]`); off unless a path is given.
    pub audit: limits::AuditConfig,
    /// `/metrics` (`TRIBUTARY_METRICS_ENABLED`, `TRIBUTARY_METRICS_ANONYMOUS`).
    pub metrics: crate::metrics::MetricsConfig,
    /// Image lookup admission and image-change triggers (`[cluster]`).
    pub cluster: cluster::ClusterConfig,
}

pub const DEFAULT_LISTEN: &str = "0.0.0.0:5000";
pub const DEFAULT_MAX_MANIFEST_BYTES: usize = 4 * 1024 * 1024;
pub const DEFAULT_SCHEDULED_IMPORT_INTERVAL_SECS: u64 = 15 * 60;
pub const DEFAULT_UPLOAD_PURGE_AFTER: std::time::Duration = std::time::Duration::from_secs(24 * 3600);
pub const DEFAULT_UPLOAD_PURGE_INTERVAL: std::time::Duration = std::time::Duration::from_secs(3600);

/// Values given on the command line or in the environment (clap merges the two; flags win).
#[derive(Debug, Default, Clone)]
pub struct Overrides {
    pub listen: Option<String>,
    pub data_dir: Option<PathBuf>,
    pub public_host: Option<String>,
    pub max_manifest_bytes: Option<usize>,
    pub auth: Option<AuthMode>,
    pub admin_token: Option<Secret>,
    pub tls_cert: Option<PathBuf>,
    pub tls_key: Option<PathBuf>,
    pub webhooks: Option<Vec<url::Url>>,
    pub allowed_registries: Option<Vec<String>>,
    pub outbound_allow_hosts: Option<Vec<String>>,
    pub outbound_deny_private: Option<bool>,
    pub upstream_connect_timeout: Option<u64>,
    pub upstream_read_timeout: Option<u64>,
    pub scheduled_import_interval: Option<u64>,
    pub upload_purge_after: Option<std::time::Duration>,
    pub upload_purge_interval: Option<std::time::Duration>,
    pub read_only: Option<bool>,
    pub storage: storage::StorageSettings,
    pub limits: limits::LimitsSettings,
    pub audit: limits::AuditSettings,
    pub metrics_enabled: Option<bool>,
    pub metrics_anonymous: Option<bool>,
    pub cluster: cluster::ClusterSettings,
}

impl Config {
    /// Builds the configuration from an optional TOML file and the overrides.
    pub fn load(file: Option<&Path>, overrides: Overrides) -> anyhow::Result<Config> {
        let from_file = match file {
            Some(path) => {
                let text = std::fs::read_to_string(path)
                    .map_err(|e| anyhow::anyhow!("reading config {}: {e}", path.display()))?;
                toml::from_str::<FileConfig>(&text).map_err(|e| anyhow::anyhow!("config {}: {e}", path.display()))?
            }
            None => FileConfig::default(),
        };
        let listen_text = overrides.listen.or(from_file.listen).unwrap_or_else(|| DEFAULT_LISTEN.to_owned());
        let listen: SocketAddr =
            listen_text.parse().map_err(|e| anyhow::anyhow!("listen address {listen_text:?}: {e}"))?;
        let public_host =
            overrides.public_host.or(from_file.public_host).unwrap_or_else(|| default_public_host(listen));
        let from_file_duration = |name: &str, d: Option<duration::FileDuration>| {
            d.map(|d| d.resolve().map_err(|e| anyhow::anyhow!("{name}: {e}"))).transpose()
        };
        let upload_purge_after = match overrides.upload_purge_after {
            Some(d) => d,
            None => from_file_duration("upload-purge-after", from_file.upload_purge_after)?
                .unwrap_or(DEFAULT_UPLOAD_PURGE_AFTER),
        };
        let upload_purge_interval = match overrides.upload_purge_interval {
            Some(d) => d,
            None => from_file_duration("upload-purge-interval", from_file.upload_purge_interval)?
                .unwrap_or(DEFAULT_UPLOAD_PURGE_INTERVAL),
        };
        let timeout = |name: &str, secs: Option<u64>, default: std::time::Duration| match secs {
            Some(0) => anyhow::bail!("{name} must be at least 1 second"),
            Some(s) => Ok(std::time::Duration::from_secs(s)),
            None => Ok(default),
        };
        let outbound = crate::upstream::Outbound {
            allow_hosts: overrides
                .outbound_allow_hosts
                .or(from_file.outbound_allow_hosts)
                .unwrap_or_default()
                .into_iter()
                .map(|h| h.trim().to_ascii_lowercase())
                .filter(|h| !h.is_empty())
                .collect(),
            deny_private: overrides.outbound_deny_private.or(from_file.outbound_deny_private).unwrap_or(false),
            connect_timeout: timeout(
                "upstream-connect-timeout",
                overrides.upstream_connect_timeout.or(from_file.upstream_connect_timeout),
                crate::upstream::guard::DEFAULT_CONNECT_TIMEOUT,
            )?,
            read_timeout: timeout(
                "upstream-read-timeout",
                overrides.upstream_read_timeout.or(from_file.upstream_read_timeout),
                crate::upstream::guard::DEFAULT_READ_TIMEOUT,
            )?,
        };
        if upload_purge_after.is_zero() || upload_purge_interval.is_zero() {
            anyhow::bail!("upload-purge-after and upload-purge-interval must be more than zero");
        }
        Ok(Config {
            listen,
            data_dir: overrides.data_dir.or(from_file.data_dir).unwrap_or_else(|| PathBuf::from("data")),
            public_host,
            max_manifest_bytes: overrides
                .max_manifest_bytes
                .or(from_file.max_manifest_bytes)
                .unwrap_or(DEFAULT_MAX_MANIFEST_BYTES),
            auth: overrides.auth.or(from_file.auth).unwrap_or_default(),
            admin_token: overrides.admin_token,
            tls: match (overrides.tls_cert.or(from_file.tls_cert), overrides.tls_key.or(from_file.tls_key)) {
                (Some(cert), Some(key)) => Some((cert, key)),
                (None, None) => None,
                _ => anyhow::bail!("TLS needs both a certificate (tls-cert) and its key (tls-key)"),
            },
            webhooks: overrides.webhooks.or(from_file.webhooks).unwrap_or_default(),
            allowed_registries: overrides
                .allowed_registries
                .or(from_file.allowed_registries_for_import)
                .unwrap_or_default()
                .into_iter()
                .map(|r| r.trim().to_ascii_lowercase())
                .filter(|r| !r.is_empty())
                .collect(),
            outbound,
            scheduled_import_interval: {
                let secs = overrides
                    .scheduled_import_interval
                    .or(from_file.scheduled_import_interval)
                    .unwrap_or(DEFAULT_SCHEDULED_IMPORT_INTERVAL_SECS);
                let min = crate::service::import::MIN_SCHEDULED_INTERVAL.as_secs();
                if secs < min {
                    anyhow::bail!("scheduled-import-interval {secs}s is below the minimum of {min}s");
                }
                std::time::Duration::from_secs(secs)
            },
            upload_purge_after,
            upload_purge_interval,
            read_only: overrides.read_only.or(from_file.read_only).unwrap_or(false),
            storage: storage::Storage::resolve(overrides.storage, from_file.storage)?,
            gc: from_file.gc.resolve()?,
            prune: from_file.prune.resolve()?,
            cache: from_file.cache.resolve()?,
            limits: limits::Limits::resolve(overrides.limits, from_file.limits)?,
            cluster: cluster::ClusterConfig::resolve(overrides.cluster, from_file.cluster)?,
            audit: limits::AuditConfig::resolve(overrides.audit, from_file.audit)?,
            metrics: {
                let default = crate::metrics::MetricsConfig::default();
                crate::metrics::MetricsConfig {
                    enabled: overrides.metrics_enabled.or(from_file.metrics.enabled).unwrap_or(default.enabled),
                    anonymous: overrides.metrics_anonymous.or(from_file.metrics.anonymous).unwrap_or(default.anonymous),
                }
            },
        })
    }
}

/// The host clients most likely use: the listen address, or `localhost` when listening on every interface.
pub fn default_public_host(listen: SocketAddr) -> String {
    if listen.ip().is_unspecified() {
        format!("localhost:{}", listen.port())
    } else {
        listen.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outbound_settings() {
        let c = Config::load(None, Overrides::default()).unwrap();
        assert_eq!(c.outbound, crate::upstream::Outbound::default());
        assert!(!c.outbound.deny_private);
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("t.toml");
        std::fs::write(
            &f,
            "outbound-deny-private = true\noutbound-allow-hosts = [\"Mirror.Internal\"]\nupstream-read-timeout = 5\n",
        )
        .unwrap();
        let c =
            Config::load(Some(&f), Overrides { upstream_connect_timeout: Some(3), ..Overrides::default() }).unwrap();
        assert!(c.outbound.deny_private);
        assert_eq!(c.outbound.allow_hosts, ["mirror.internal"]);
        assert_eq!((c.outbound.connect_timeout.as_secs(), c.outbound.read_timeout.as_secs()), (3, 5));
        let zero = Overrides { upstream_read_timeout: Some(0), ..Overrides::default() };
        assert!(Config::load(None, zero).is_err());
    }

    #[test]
    fn defaults_file_and_overrides() {
        let c = Config::load(None, Overrides::default()).unwrap();
        assert_eq!(c.listen.to_string(), "0.0.0.0:5000");
        assert_eq!(c.data_dir, PathBuf::from("data"));
        assert_eq!(c.public_host, "localhost:5000");
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("t.toml");
        std::fs::write(&f, "listen = \"127.0.0.1:7000\"\ndata-dir = \"/srv/t\"\n").unwrap();
        let c = Config::load(Some(&f), Overrides { data_dir: Some("/x".into()), ..Overrides::default() }).unwrap();
        assert_eq!((c.listen.to_string(), c.data_dir), ("127.0.0.1:7000".to_string(), PathBuf::from("/x")));
        assert_eq!(c.public_host, "127.0.0.1:7000");
        assert_eq!(c.auth, AuthMode::Token);
        std::fs::write(&f, "auth = \"none\"\n").unwrap();
        assert_eq!(Config::load(Some(&f), Overrides::default()).unwrap().auth, AuthMode::None);
        std::fs::write(&f, "auth = \"maybe\"\n").unwrap();
        assert!(Config::load(Some(&f), Overrides::default()).is_err());
        std::fs::write(&f, "tls-cert = \"/c.pem\"\ntls-key = \"/k.pem\"\nwebhooks = [\"http://hooks.example/a\"]\n")
            .unwrap();
        let c = Config::load(Some(&f), Overrides::default()).unwrap();
        assert_eq!(c.tls, Some((PathBuf::from("/c.pem"), PathBuf::from("/k.pem"))));
        assert_eq!(c.webhooks.len(), 1);
        std::fs::write(&f, "tls-cert = \"/c.pem\"\n").unwrap();
        assert!(Config::load(Some(&f), Overrides::default()).is_err(), "a certificate without its key");
        std::fs::write(&f, "allowed-registries-for-import = [\"Quay.io\"]\nscheduled-import-interval = 60\n").unwrap();
        let c = Config::load(Some(&f), Overrides::default()).unwrap();
        assert_eq!((c.allowed_registries, c.scheduled_import_interval.as_secs()), (vec!["quay.io".to_string()], 60));
        std::fs::write(&f, "scheduled-import-interval = 1\n").unwrap();
        assert!(Config::load(Some(&f), Overrides::default()).is_err(), "below the minimum interval");
        let c = Config::load(None, Overrides::default()).unwrap();
        assert_eq!((c.upload_purge_after, c.read_only), (DEFAULT_UPLOAD_PURGE_AFTER, false));
        std::fs::write(&f, "upload-purge-after = \"2h\"\nupload-purge-interval = 60\nread-only = true\n").unwrap();
        let c = Config::load(Some(&f), Overrides::default()).unwrap();
        assert_eq!((c.upload_purge_after.as_secs(), c.upload_purge_interval.as_secs(), c.read_only), (7200, 60, true));
        let flags = Overrides { upload_purge_after: Some(std::time::Duration::from_secs(5)), ..Overrides::default() };
        assert_eq!(Config::load(Some(&f), flags).unwrap().upload_purge_after.as_secs(), 5, "flags win");
        std::fs::write(&f, "upload-purge-after = \"soon\"\n").unwrap();
        assert!(Config::load(Some(&f), Overrides::default()).is_err());
        let c = Config::load(None, Overrides::default()).unwrap();
        assert_eq!((c.metrics.enabled, c.metrics.anonymous), (true, false), "metrics on, not anonymous");
        std::fs::write(&f, "[metrics]\nenabled = false\nanonymous = true\n").unwrap();
        let c = Config::load(Some(&f), Overrides::default()).unwrap();
        assert_eq!((c.metrics.enabled, c.metrics.anonymous), (false, true));
        let flags = Overrides { metrics_enabled: Some(true), ..Overrides::default() };
        assert!(Config::load(Some(&f), flags).unwrap().metrics.enabled, "flags win");
        std::fs::write(&f, "[metrics]\nenable = false\n").unwrap();
        assert!(Config::load(Some(&f), Overrides::default()).is_err(), "a misspelt metrics setting");
        std::fs::write(&f, "bogus = 1\n").unwrap();
        assert!(Config::load(Some(&f), Overrides::default()).is_err());
    }
}
