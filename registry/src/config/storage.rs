//! The `[storage]` part of the configuration: which blob store and which metadata store the registry opens, and
//! their settings. One set of all-optional settings structs serves the three layers (the TOML file's
//! `[storage.s3]`/`[storage.etcd]` tables, `TRIBUTARY_*` variables and `--s3-*`/`--etcd-*` flags); [`Storage::resolve`]
//! merges them (flags and variables win over the file) and checks that what is chosen is complete. Read by
//! [`crate::open`], the composition root; nothing here opens a connection.
//!
//! ```toml
//! [storage]
//! blobs = "s3"              # or "filesystem" (the default: <data-dir>/blobs)
//! metadata = "etcd"         # or "redb" (the default: <data-dir>/metadata.redb)
//!
//! [storage.s3]
//! endpoint = "http://127.0.0.1:9000"   # absent: AWS (or AWS_ENDPOINT_URL)
//! region = "us-east-1"
//! bucket = "tributary"
//! prefix = "registry"                  # optional key prefix inside the bucket
//! access-key-id = "…"                  # absent: AWS_ACCESS_KEY_ID and the usual AWS environment
//! secret-access-key = "…"
//! path-style = true                    # default true (what MinIO, moto and most local servers need)
//! allow-http = true                    # default: true when the endpoint is http://
//! redirect = false                     # answer blob GETs with a presigned S3 URL (clients must reach S3)
//! sign-payload = true                  # default: true over http, false over https (TLS protects the bodies)
//!
//! [storage.etcd]
//! endpoints = ["http://127.0.0.1:2379"]
//! prefix = "/tributary/"
//! username = "…"                       # optional, with password
//! password = "…"
//! ca-file = "/etc/etcd/ca.pem"         # optional: TLS to etcd, verified with this CA
//! lease-ttl-secs = 5                   # how soon another replica takes over work from one that died
//! ```

use std::path::PathBuf;

use serde::Deserialize;
use storage_backends::{EtcdConfig, S3Config};

/// Where blobs (layers, configs, large manifests) are kept.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum BlobBackendKind {
    /// `<data-dir>/blobs` on the local filesystem.
    #[default]
    Filesystem,
    /// An S3-compatible object store (`[storage.s3]`).
    S3,
}

/// Where metadata (streams, images, identities, upload sessions) is kept.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum MetadataBackendKind {
    /// The embedded store, `<data-dir>/metadata.redb`.
    #[default]
    Redb,
    /// An etcd cluster (`[storage.etcd]`), shared by every replica.
    Etcd,
}

/// S3 settings as any layer may give them; every field optional.
#[derive(Debug, Default, Clone, PartialEq, Eq, Deserialize, clap::Args)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct S3Settings {
    /// S3 endpoint URL, e.g. http://127.0.0.1:9000 [default: AWS itself, or AWS_ENDPOINT_URL].
    #[arg(
        id = "s3-endpoint",
        long = "s3-endpoint",
        value_name = "URL",
        env = "TRIBUTARY_S3_ENDPOINT",
        help_heading = "Storage"
    )]
    pub endpoint: Option<String>,
    /// S3 region [default: us-east-1, or AWS_REGION].
    #[arg(
        id = "s3-region",
        long = "s3-region",
        value_name = "REGION",
        env = "TRIBUTARY_S3_REGION",
        help_heading = "Storage"
    )]
    pub region: Option<String>,
    /// The bucket holding the blobs (it must exist).
    #[arg(
        id = "s3-bucket",
        long = "s3-bucket",
        value_name = "BUCKET",
        env = "TRIBUTARY_S3_BUCKET",
        help_heading = "Storage"
    )]
    pub bucket: Option<String>,
    /// A key prefix inside the bucket, so that several registries may share one bucket.
    #[arg(
        id = "s3-prefix",
        long = "s3-prefix",
        value_name = "PREFIX",
        env = "TRIBUTARY_S3_PREFIX",
        help_heading = "Storage"
    )]
    pub prefix: Option<String>,
    /// Access key id [default: AWS_ACCESS_KEY_ID and the rest of the usual AWS environment].
    #[arg(
        id = "s3-access-key-id",
        long = "s3-access-key-id",
        env = "TRIBUTARY_S3_ACCESS_KEY_ID",
        help_heading = "Storage"
    )]
    pub access_key_id: Option<String>,
    /// Secret access key [default: AWS_SECRET_ACCESS_KEY].
    #[arg(
        id = "s3-secret-access-key",
        long = "s3-secret-access-key",
        env = "TRIBUTARY_S3_SECRET_ACCESS_KEY",
        hide_env_values = true,
        help_heading = "Storage"
    )]
    pub secret_access_key: Option<String>,
    /// Path-style addressing (http://host/bucket/key) rather than virtual-hosted buckets [default: true].
    #[arg(id = "s3-path-style", long = "s3-path-style", value_name = "BOOL", env = "TRIBUTARY_S3_PATH_STYLE", value_parser = clap::builder::BoolishValueParser::new(), help_heading = "Storage")]
    pub path_style: Option<bool>,
    /// Allow plain http to the endpoint [default: true for an http:// endpoint].
    #[arg(id = "s3-allow-http", long = "s3-allow-http", value_name = "BOOL", env = "TRIBUTARY_S3_ALLOW_HTTP", value_parser = clap::builder::BoolishValueParser::new(), help_heading = "Storage")]
    pub allow_http: Option<bool>,
    /// Answer blob GETs with a 307 to a presigned S3 URL (valid 20 minutes), so that layers flow from S3 to the
    /// client directly; every client must be able to reach the S3 endpoint [default: false].
    #[arg(id = "s3-redirect", long = "s3-redirect", value_name = "BOOL", env = "TRIBUTARY_S3_REDIRECT", value_parser = clap::builder::BoolishValueParser::new(), help_heading = "Storage")]
    pub redirect: Option<bool>,
    /// Sign request bodies (each part's SHA-256 in the signature) rather than send them as `UNSIGNED-PAYLOAD`
    /// [default: true over http, false over https, where TLS protects them and the hash only costs CPU].
    #[arg(id = "s3-sign-payload", long = "s3-sign-payload", value_name = "BOOL", env = "TRIBUTARY_S3_SIGN_PAYLOAD", value_parser = clap::builder::BoolishValueParser::new(), help_heading = "Storage")]
    pub sign_payload: Option<bool>,
}

/// etcd settings as any layer may give them; every field optional.
#[derive(Debug, Default, Clone, PartialEq, Eq, Deserialize, clap::Args)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct EtcdSettings {
    /// etcd client URLs (repeatable; comma-separated in the environment) [default: http://127.0.0.1:2379].
    #[arg(
        id = "etcd-endpoint",
        long = "etcd-endpoint",
        env = "TRIBUTARY_ETCD_ENDPOINTS",
        value_delimiter = ',',
        help_heading = "Storage"
    )]
    pub endpoints: Option<Vec<String>>,
    /// The key prefix under which Tributary keeps everything [default: /tributary/].
    #[arg(
        id = "etcd-prefix",
        long = "etcd-prefix",
        value_name = "PREFIX",
        env = "TRIBUTARY_ETCD_PREFIX",
        help_heading = "Storage"
    )]
    pub prefix: Option<String>,
    /// etcd user name (with --etcd-password).
    #[arg(
        id = "etcd-username",
        long = "etcd-username",
        value_name = "USER",
        env = "TRIBUTARY_ETCD_USERNAME",
        help_heading = "Storage"
    )]
    pub username: Option<String>,
    /// etcd password.
    #[arg(
        id = "etcd-password",
        long = "etcd-password",
        env = "TRIBUTARY_ETCD_PASSWORD",
        hide_env_values = true,
        help_heading = "Storage"
    )]
    pub password: Option<String>,
    /// PEM CA certificate that signs etcd's server certificate (https endpoints).
    #[arg(
        id = "etcd-ca-file",
        long = "etcd-ca-file",
        value_name = "FILE",
        env = "TRIBUTARY_ETCD_CA_FILE",
        help_heading = "Storage"
    )]
    pub ca_file: Option<PathBuf>,
    /// Seconds a replica's lease (imports, webhooks) outlives its last keep-alive: how soon another replica takes
    /// over from one that died [default: 5].
    #[arg(
        id = "etcd-lease-ttl",
        long = "etcd-lease-ttl",
        value_name = "SECONDS",
        env = "TRIBUTARY_ETCD_LEASE_TTL",
        help_heading = "Storage"
    )]
    pub lease_ttl_secs: Option<u64>,
}

/// The `[storage]` table of the TOML file, and the storage flags and variables: every field optional.
#[derive(Debug, Default, Clone, PartialEq, Eq, Deserialize, clap::Args)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct StorageSettings {
    /// Blob backend: filesystem or s3 [default: filesystem].
    #[arg(long = "blob-backend", value_name = "BACKEND", env = "TRIBUTARY_BLOB_BACKEND", help_heading = "Storage")]
    pub blobs: Option<BlobBackendKind>,
    /// Metadata backend: redb or etcd [default: redb].
    #[arg(
        long = "metadata-backend",
        value_name = "BACKEND",
        env = "TRIBUTARY_METADATA_BACKEND",
        help_heading = "Storage"
    )]
    pub metadata: Option<MetadataBackendKind>,
    #[command(flatten)]
    #[serde(default)]
    pub s3: S3Settings,
    #[command(flatten)]
    #[serde(default)]
    pub etcd: EtcdSettings,
}

/// The effective blob store choice.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum Blobs {
    /// Under `<data-dir>/blobs`.
    #[default]
    Filesystem,
    S3(S3Config),
}

/// The effective metadata store choice.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum Metadata {
    /// `<data-dir>/metadata.redb`.
    #[default]
    Redb,
    Etcd(EtcdConfig),
}

pub const DEFAULT_ETCD_ENDPOINT: &str = "http://127.0.0.1:2379";
pub const DEFAULT_ETCD_PREFIX: &str = "/tributary/";

/// The effective storage configuration.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Storage {
    pub blobs: Blobs,
    pub metadata: Metadata,
}

impl Storage {
    /// Merges the layers (`over` wins field by field) and checks the result.
    pub fn resolve(over: StorageSettings, file: StorageSettings) -> anyhow::Result<Storage> {
        let s3 = S3Settings {
            endpoint: over.s3.endpoint.or(file.s3.endpoint),
            region: over.s3.region.or(file.s3.region),
            bucket: over.s3.bucket.or(file.s3.bucket),
            prefix: over.s3.prefix.or(file.s3.prefix),
            access_key_id: over.s3.access_key_id.or(file.s3.access_key_id),
            secret_access_key: over.s3.secret_access_key.or(file.s3.secret_access_key),
            path_style: over.s3.path_style.or(file.s3.path_style),
            allow_http: over.s3.allow_http.or(file.s3.allow_http),
            redirect: over.s3.redirect.or(file.s3.redirect),
            sign_payload: over.s3.sign_payload.or(file.s3.sign_payload),
        };
        let etcd = EtcdSettings {
            endpoints: over.etcd.endpoints.or(file.etcd.endpoints),
            prefix: over.etcd.prefix.or(file.etcd.prefix),
            username: over.etcd.username.or(file.etcd.username),
            password: over.etcd.password.or(file.etcd.password),
            ca_file: over.etcd.ca_file.or(file.etcd.ca_file),
            lease_ttl_secs: over.etcd.lease_ttl_secs.or(file.etcd.lease_ttl_secs),
        };
        let blobs = match over.blobs.or(file.blobs).unwrap_or_default() {
            BlobBackendKind::Filesystem => {
                if s3 != S3Settings::default() {
                    anyhow::bail!("S3 settings are given but the blob backend is filesystem (set blobs = \"s3\")");
                }
                Blobs::Filesystem
            }
            BlobBackendKind::S3 => Blobs::S3(s3.complete()?),
        };
        let metadata = match over.metadata.or(file.metadata).unwrap_or_default() {
            MetadataBackendKind::Redb => {
                if etcd != EtcdSettings::default() {
                    anyhow::bail!("etcd settings are given but the metadata backend is redb (set metadata = \"etcd\")");
                }
                Metadata::Redb
            }
            MetadataBackendKind::Etcd => Metadata::Etcd(etcd.complete()?),
        };
        Ok(Storage { blobs, metadata })
    }

    /// Whether anything is kept in the data directory (with both stores remote, no replica needs one).
    pub fn uses_data_dir(&self) -> bool {
        self.blobs == Blobs::Filesystem || self.metadata == Metadata::Redb
    }
}

impl S3Settings {
    fn complete(self) -> anyhow::Result<S3Config> {
        let bucket = self.bucket.filter(|b| !b.trim().is_empty()).ok_or_else(|| {
            anyhow::anyhow!(
                "the s3 blob backend needs a bucket (storage.s3.bucket, TRIBUTARY_S3_BUCKET or --s3-bucket)"
            )
        })?;
        if let Some(endpoint) = &self.endpoint {
            let url = url::Url::parse(endpoint).map_err(|e| anyhow::anyhow!("S3 endpoint {endpoint:?}: {e}"))?;
            if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none() {
                anyhow::bail!("S3 endpoint {endpoint:?}: expected http://host[:port] or https://host[:port]");
            }
        }
        let plain = self.endpoint.as_deref().is_some_and(|e| e.starts_with("http://"));
        let allow_http = self.allow_http.unwrap_or(plain);
        if plain && !allow_http {
            anyhow::bail!("S3 endpoint {:?} is plain http but allow-http is false", self.endpoint.unwrap_or_default());
        }
        if self.access_key_id.is_some() != self.secret_access_key.is_some() {
            anyhow::bail!("S3 credentials need both the access key id and the secret access key");
        }
        // The region given, else the usual AWS variables, else us-east-1 (what local S3 servers accept).
        let region = self
            .region
            .or_else(|| std::env::var("AWS_REGION").ok())
            .or_else(|| std::env::var("AWS_DEFAULT_REGION").ok())
            .filter(|r| !r.trim().is_empty())
            .unwrap_or_else(|| "us-east-1".to_owned());
        Ok(S3Config {
            endpoint: self.endpoint,
            region,
            bucket,
            prefix: self.prefix.map(|p| p.trim_matches('/').to_owned()).filter(|p| !p.is_empty()),
            access_key_id: self.access_key_id,
            secret_access_key: self.secret_access_key,
            path_style: self.path_style.unwrap_or(true),
            allow_http,
            redirect: self.redirect.unwrap_or(false),
            sign_payload: self.sign_payload.unwrap_or(plain),
        })
    }
}

impl EtcdSettings {
    fn complete(self) -> anyhow::Result<EtcdConfig> {
        let endpoints = self
            .endpoints
            .unwrap_or_default()
            .into_iter()
            .map(|e| e.trim().to_owned())
            .filter(|e| !e.is_empty())
            .collect::<Vec<_>>();
        let endpoints = if endpoints.is_empty() { vec![DEFAULT_ETCD_ENDPOINT.to_owned()] } else { endpoints };
        for e in &endpoints {
            let url = url::Url::parse(e).map_err(|err| anyhow::anyhow!("etcd endpoint {e:?}: {err}"))?;
            if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none() {
                anyhow::bail!("etcd endpoint {e:?}: expected http://host:port or https://host:port");
            }
        }
        if self.username.is_some() != self.password.is_some() {
            anyhow::bail!("etcd authentication needs both the user name and the password");
        }
        let prefix = self.prefix.unwrap_or_else(|| DEFAULT_ETCD_PREFIX.to_owned());
        if prefix.is_empty() {
            anyhow::bail!("the etcd key prefix must not be empty (it keeps Tributary's keys apart)");
        }
        let defaults = EtcdConfig::new(endpoints);
        let lease_ttl_secs = self.lease_ttl_secs.unwrap_or(defaults.lease_ttl_secs);
        if !(2..=300).contains(&lease_ttl_secs) {
            anyhow::bail!("the etcd lease TTL must be between 2 and 300 seconds (got {lease_ttl_secs})");
        }
        Ok(EtcdConfig {
            prefix,
            lease_ttl_secs,
            username: self.username,
            password: self.password,
            ca_file: self.ca_file,
            ..defaults
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(text: &str) -> StorageSettings {
        #[derive(Deserialize)]
        struct F {
            storage: StorageSettings,
        }
        toml::from_str::<F>(text).unwrap().storage
    }

    #[test]
    fn defaults_are_local() {
        let s = Storage::resolve(StorageSettings::default(), StorageSettings::default()).unwrap();
        assert_eq!(s, Storage { blobs: Blobs::Filesystem, metadata: Metadata::Redb });
        assert!(s.uses_data_dir());
    }

    #[test]
    fn remote_stores_from_the_file_with_overrides() {
        let f = file(
            r#"
            [storage]
            blobs = "s3"
            metadata = "etcd"
            [storage.s3]
            endpoint = "http://127.0.0.1:9000"
            bucket = "b"
            prefix = "/reg/"
            access-key-id = "k"
            secret-access-key = "s"
            [storage.etcd]
            endpoints = ["http://10.0.0.1:2379", "http://10.0.0.2:2379"]
            "#,
        );
        let over = StorageSettings {
            s3: S3Settings { bucket: Some("other".into()), ..Default::default() },
            etcd: EtcdSettings { prefix: Some("/t2/".into()), ..Default::default() },
            ..Default::default()
        };
        let s = Storage::resolve(over, f).unwrap();
        let Blobs::S3(s3) = &s.blobs else { panic!("{s:?}") };
        assert_eq!(
            (s3.bucket.as_str(), s3.prefix.as_deref(), s3.allow_http, s3.path_style),
            ("other", Some("reg"), true, true)
        );
        let Metadata::Etcd(etcd) = &s.metadata else { panic!("{s:?}") };
        assert_eq!((etcd.endpoints.len(), etcd.prefix.as_str()), (2, "/t2/"));
        assert!(!s.uses_data_dir());
    }

    #[test]
    fn bodies_are_signed_over_http_and_not_over_https_unless_told() {
        let sign = |text: &str| {
            let s = Storage::resolve(StorageSettings::default(), file(text)).unwrap();
            let Blobs::S3(s3) = s.blobs else { panic!("{s:?}") };
            s3.sign_payload
        };
        let s3 = "[storage]\nblobs = \"s3\"\n[storage.s3]\nbucket = \"b\"\n";
        assert!(sign(&format!("{s3}endpoint = \"http://127.0.0.1:9000\"\n")));
        assert!(!sign(&format!("{s3}endpoint = \"https://s3.example.com\"\n")));
        assert!(!sign(s3), "AWS itself is reached over https");
        assert!(sign(&format!("{s3}endpoint = \"https://s3.example.com\"\nsign-payload = true\n")));
        assert!(!sign(&format!("{s3}endpoint = \"http://127.0.0.1:9000\"\nsign-payload = false\n")));
    }

    #[test]
    fn incomplete_or_contradictory_settings_are_refused() {
        let bad = |text: &str| Storage::resolve(StorageSettings::default(), file(text)).unwrap_err().to_string();
        assert!(bad("[storage]\nblobs = \"s3\"\n").contains("needs a bucket"));
        assert!(bad("[storage.s3]\nbucket = \"b\"\n").contains("blob backend is filesystem"));
        assert!(bad("[storage.etcd]\nprefix = \"/x/\"\n").contains("metadata backend is redb"));
        assert!(bad("[storage]\nblobs = \"s3\"\n[storage.s3]\nbucket = \"b\"\nendpoint = \"ftp://x\"\n")
            .contains("expected http"));
        assert!(bad("[storage]\nblobs = \"s3\"\n[storage.s3]\nbucket = \"b\"\naccess-key-id = \"k\"\n")
            .contains("both the access key id"));
        assert!(bad("[storage]\nmetadata = \"etcd\"\n[storage.etcd]\nendpoints = [\"127.0.0.1:2379\"]\n")
            .contains("etcd endpoint"));
        assert!(bad("[storage]\nmetadata = \"etcd\"\n[storage.etcd]\nusername = \"u\"\n").contains("password"));
        assert!(bad("[storage]\nmetadata = \"etcd\"\n[storage.etcd]\nlease-ttl-secs = 1\n").contains("lease TTL"));
        let unknown = toml::from_str::<toml::Table>("[storage]\nblobs = \"tape\"\n").unwrap();
        assert!(StorageSettings::deserialize(unknown["storage"].clone()).is_err());
        let s = Storage::resolve(StorageSettings::default(), file("[storage]\nmetadata = \"etcd\"\n")).unwrap();
        assert_eq!(
            s.metadata,
            Metadata::Etcd(EtcdConfig {
                prefix: DEFAULT_ETCD_PREFIX.into(),
                ..EtcdConfig::new(vec![DEFAULT_ETCD_ENDPOINT.into()])
            })
        );
    }
}
