//! A registry with an administrator (token [`TOKEN`]) and a namespace `ns`, driven over HTTP and through the
//! `tributary` CLI: push an image of given layers, pull it completely (every digest verified), call the prune API,
//! read a tag's history. Shared by the prune and LimitRange tests.

use std::collections::BTreeSet;
use std::path::Path;

use names::Digest;
use registry::testing::TestRegistry;
use reqwest::{Client, StatusCode};
use serde_json::{json, Value};
use storage_backends::keys;

use super::OCI_MANIFEST;

pub const TOKEN: &str = "prune-admin-secret-token";

/// One pushed image: its manifest's digest and its blobs (config first).
pub struct Pushed {
    pub manifest: Digest,
    pub blobs: Vec<Digest>,
}

pub struct Harness {
    pub reg: TestRegistry,
    pub http: Client,
}

impl Harness {
    pub async fn start() -> Harness {
        Harness::on(TestRegistry::builder().with_admin_token(TOKEN).start()).await
    }

    pub async fn on(reg: TestRegistry) -> Harness {
        let h = Harness { reg, http: Client::new() };
        let r = h.http.post(h.url("/apis/tributary.dev/v1/namespaces")).bearer_auth(TOKEN).json(&json!({"name": "ns"}));
        assert_eq!(r.send().await.unwrap().status(), StatusCode::CREATED);
        h
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.reg.url())
    }

    pub async fn put_blob(&self, repo: &str, bytes: &[u8]) -> Digest {
        let d = Digest::sha256_of(bytes);
        let r = self.http.post(self.url(&format!("/v2/{repo}/blobs/uploads/?digest={d}"))).bearer_auth(TOKEN);
        assert_eq!(r.body(bytes.to_vec()).send().await.unwrap().status(), StatusCode::CREATED);
        d
    }

    /// Pushes an image of `layers` (each its bytes) by `tag`.
    pub async fn push(&self, repo: &str, tag: &str, layers: &[Vec<u8>]) -> Pushed {
        let config = json!({"architecture": "amd64", "os": "linux", "tag": tag, "n": layers.len(),
            "first": Digest::sha256_of(layers.last().unwrap()).to_string()})
        .to_string();
        let c = self.put_blob(repo, config.as_bytes()).await;
        let mut blobs = vec![c.clone()];
        let mut descriptors = Vec::new();
        for l in layers {
            let d = self.put_blob(repo, l).await;
            descriptors
                .push(json!({"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": d, "size": l.len()}));
            blobs.push(d);
        }
        let manifest = json!({"schemaVersion": 2, "mediaType": OCI_MANIFEST,
            "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": c, "size": config.len()},
            "layers": descriptors})
        .to_string();
        let r = self
            .http
            .put(self.url(&format!("/v2/{repo}/manifests/{tag}")))
            .bearer_auth(TOKEN)
            .header("Content-Type", OCI_MANIFEST)
            .body(manifest.clone());
        assert_eq!(r.send().await.unwrap().status(), StatusCode::CREATED);
        Pushed { manifest: Digest::sha256_of(manifest.as_bytes()), blobs }
    }

    /// GET `path`: its status and body.
    pub async fn get(&self, path: &str) -> (StatusCode, Vec<u8>) {
        let r = self.http.get(self.url(path)).bearer_auth(TOKEN).header("Accept", OCI_MANIFEST).send().await.unwrap();
        (r.status(), r.bytes().await.unwrap().to_vec())
    }

    /// Pulls an image completely by digest, every digest verified.
    pub async fn pull(&self, repo: &str, image: &Pushed) {
        let (status, body) = self.get(&format!("/v2/{repo}/manifests/{}", image.manifest)).await;
        assert_eq!(status, StatusCode::OK, "manifest {}", image.manifest);
        assert_eq!(Digest::sha256_of(&body), image.manifest);
        for b in &image.blobs {
            let (status, body) = self.get(&format!("/v2/{repo}/blobs/{b}")).await;
            assert_eq!(status, StatusCode::OK, "blob {b} of {}", image.manifest);
            assert_eq!(&Digest::sha256_of(&body), b);
        }
    }

    pub async fn prune(&self, body: Value) -> (StatusCode, Value) {
        let r = self.http.post(self.url("/apis/tributary.dev/v1/prune/images")).bearer_auth(TOKEN).json(&body);
        let r = r.send().await.unwrap();
        (r.status(), r.json().await.unwrap_or(Value::Null))
    }

    pub async fn history_len(&self, repo: &str, tag: &str) -> usize {
        let key = keys::istag(&repo.parse().unwrap(), &tag.parse().unwrap());
        let v = self.reg.registry().meta.get_latest(&key).await.unwrap().expect("history");
        serde_json::from_slice::<Value>(&v.value).unwrap()["items"].as_array().unwrap().len()
    }

    /// Runs `tributary ARGS` with the administrator's token: stdout, or the failure's stderr.
    pub fn cli(&self, args: &[&str]) -> Result<String, String> {
        let o = tokio::task::block_in_place(|| {
            std::process::Command::new(env!("CARGO_BIN_EXE_tributary"))
                .args(args)
                .args(["--server", &self.reg.url(), "--token", TOKEN])
                .env("TRIBUTARY_CLIENT_CONFIG", self.reg.data_dir().join("no-client-config"))
                .output()
                .expect("run tributary")
        });
        let (out, err) = (String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr));
        if o.status.success() {
            Ok(out.into_owned())
        } else {
            Err(err.into_owned())
        }
    }

    pub async fn stop(self) {
        tokio::task::block_in_place(|| drop(self.reg));
    }
}

/// The bytes of the blobs (not manifests) a prune report lists.
pub fn reported_blob_bytes(report: &Value) -> u64 {
    report["blobs"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|b| b["kind"] == "blob")
        .map(|b| b["size"].as_u64().unwrap())
        .sum()
}

/// Bytes of every file under `dir`.
pub fn bytes_under(dir: &Path) -> u64 {
    std::fs::read_dir(dir)
        .map(|rd| {
            rd.flatten()
                .map(|e| if e.path().is_dir() { bytes_under(&e.path()) } else { e.metadata().map_or(0, |m| m.len()) })
                .sum()
        })
        .unwrap_or(0)
}

pub fn digests(v: &Value, field: &str, key: &str) -> BTreeSet<String> {
    v[field].as_array().unwrap().iter().map(|i| i[key].as_str().unwrap().to_owned()).collect()
}

/// The lines between the dry-run banner and the summary.
pub fn body_lines(out: &str) -> Vec<&str> {
    out.lines()
        .filter(|l| !l.starts_with("Dry run") && !l.starts_with("Would delete") && !l.starts_with("Deleted "))
        .filter(|l| !l.is_empty())
        .collect()
}
