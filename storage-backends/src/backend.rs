//! Which object store holds the blobs, as configuration chooses it ([`BlobBackend`], [`S3Config`]), and how each
//! is built: the filesystem, memory, or any S3-compatible bucket (with the usual AWS environment). Building never
//! panics; a bad setting is a [`BlobError::Config`]. Used by [`crate::blobs::BlobStore::open`] and by tools that
//! only read or list.

use std::path::PathBuf;
use std::sync::Arc;

use object_store::multipart::MultipartStore;
use object_store::signer::Signer;
use object_store::ObjectStore;

use crate::blobs::BlobError;

/// Which object store holds the blobs. Chosen from configuration; building it never panics.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(tag = "type", rename_all = "lowercase")]
pub enum BlobBackend {
    /// A directory on the local filesystem (the default: `<data-dir>/blobs`).
    Filesystem { root: PathBuf },
    /// Process memory; for tests. Uploads use its multipart uploads, as on S3.
    Memory,
    /// An S3-compatible object store.
    S3(S3Config),
}

/// An S3-compatible bucket. Building starts from the usual `AWS_*` environment variables
/// (`AmazonS3Builder::from_env`); the fields given here override them.
#[derive(Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct S3Config {
    /// `http(s)://host:port` of an S3-compatible service; AWS itself when absent.
    #[serde(default)]
    pub endpoint: Option<String>,
    #[serde(default = "default_region")]
    pub region: String,
    pub bucket: String,
    /// Every object's path starts with this (several registries may share a bucket).
    #[serde(default)]
    pub prefix: Option<String>,
    #[serde(default)]
    pub access_key_id: Option<String>,
    #[serde(default)]
    pub secret_access_key: Option<String>,
    /// `endpoint/bucket/key` requests (MinIO, moto, Ceph) rather than `bucket.endpoint/key`.
    #[serde(default = "yes")]
    pub path_style: bool,
    /// Allow a plain `http://` endpoint.
    #[serde(default)]
    pub allow_http: bool,
    /// Offer presigned GET URLs for stored blobs ([`BlobStore::presigned_get`]), for redirecting clients to S3.
    #[serde(default)]
    pub redirect: bool,
    /// Sign each request's body (`x-amz-content-sha256` holds its SHA-256) rather than send `UNSIGNED-PAYLOAD`.
    /// Over plain http the signature is all that keeps a part from being altered on the way; over https TLS
    /// does that, and hashing every part a second time (the blob's digest is the first) costs as much CPU as the
    /// digest: AWS's own SDKs send S3 bodies unsigned over https.
    #[serde(default = "yes")]
    pub sign_payload: bool,
}

pub(crate) fn default_region() -> String {
    "us-east-1".to_owned()
}

fn yes() -> bool {
    true
}

impl std::fmt::Debug for S3Config {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("S3Config")
            .field("endpoint", &self.endpoint)
            .field("region", &self.region)
            .field("bucket", &self.bucket)
            .field("prefix", &self.prefix)
            .field("access_key_id", &self.access_key_id)
            .field("secret_access_key", &self.secret_access_key.as_ref().map(|_| "<redacted>"))
            .field("path_style", &self.path_style)
            .field("allow_http", &self.allow_http)
            .field("redirect", &self.redirect)
            .field("sign_payload", &self.sign_payload)
            .finish()
    }
}

/// How long the S3 endpoint may stay silent (connecting, or while a response is awaited or read) before a request
/// fails and is retried. There is no limit on a whole request: object_store's default of 30 s per request would cut
/// a blob read that a slow client paces (a large layer at a few MB/s) every 30 s, and once its retries ran out (3
/// minutes after the first) the pull would fail.
const S3_SILENCE: std::time::Duration = std::time::Duration::from_secs(30);
const S3_CONNECT: std::time::Duration = std::time::Duration::from_secs(5);

fn client_options() -> object_store::ClientOptions {
    object_store::ClientOptions::new()
        .with_timeout_disabled()
        .with_connect_timeout(S3_CONNECT)
        .with_read_timeout(S3_SILENCE)
}

impl S3Config {
    /// `S3 bucket X at http://…`, as errors name it.
    pub fn describe(&self) -> String {
        let at = self.endpoint.as_deref().unwrap_or("AWS");
        match &self.prefix {
            Some(p) => format!("S3 bucket {} (prefix {p}) at {at}", self.bucket),
            None => format!("S3 bucket {} at {at}", self.bucket),
        }
    }

    fn builder(&self) -> object_store::aws::AmazonS3Builder {
        let mut b = object_store::aws::AmazonS3Builder::from_env()
            .with_bucket_name(&self.bucket)
            .with_region(&self.region)
            .with_virtual_hosted_style_request(!self.path_style)
            // Before `allow_http`, which is one of the client options.
            .with_client_options(client_options())
            .with_allow_http(self.allow_http)
            .with_unsigned_payload(!self.sign_payload);
        if let Some(e) = &self.endpoint {
            b = b.with_endpoint(e);
        }
        if let Some(k) = &self.access_key_id {
            b = b.with_access_key_id(k);
        }
        if let Some(s) = &self.secret_access_key {
            b = b.with_secret_access_key(s);
        }
        b
    }

    /// Signs URLs of the bucket's objects (paths with the prefix, which the signer does not apply).
    pub(crate) fn signer(&self) -> Result<Arc<dyn Signer>, BlobError> {
        let s3 = self.builder().build().map_err(|e| BlobError::Config(format!("{}: {e}", self.describe())))?;
        Ok(Arc::new(s3))
    }

    /// The store and its multipart interface (one object), with `prefix` applied.
    pub(crate) fn build(&self, retry: object_store::RetryConfig) -> Result<Stores, BlobError> {
        let s3 = self
            .builder()
            .with_retry(retry)
            .build()
            .map_err(|e| BlobError::Config(format!("{}: {e}", self.describe())))?;
        Ok(match self.prefix.as_deref().map(|p| p.trim_matches('/')).filter(|p| !p.is_empty()) {
            Some(p) => {
                let s = Arc::new(object_store::prefix::PrefixStore::new(s3, p));
                (s.clone(), s)
            }
            None => {
                let s = Arc::new(s3);
                (s.clone(), s)
            }
        })
    }
}

pub(crate) type Stores = (Arc<dyn ObjectStore>, Arc<dyn MultipartStore>);

impl BlobBackend {
    /// The object store alone (for tools that only read or list).
    pub fn build(&self) -> Result<Arc<dyn ObjectStore>, BlobError> {
        match self {
            BlobBackend::Filesystem { root } => {
                std::fs::create_dir_all(root).map_err(|e| BlobError::Config(format!("{}: {e}", root.display())))?;
                let fs = object_store::local::LocalFileSystem::new_with_prefix(root)
                    .map_err(|e| BlobError::Config(e.to_string()))?;
                Ok(Arc::new(fs))
            }
            BlobBackend::Memory => Ok(Arc::new(object_store::memory::InMemory::new())),
            BlobBackend::S3(c) => Ok(c.build(Default::default())?.0),
        }
    }
}
