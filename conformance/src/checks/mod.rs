//! The check groups (one module each) and the assertions they share.

pub mod auth;
pub mod discovery;
pub mod errors;
pub mod foreign;
pub mod management;
pub mod pull;
pub mod push;
pub mod streams;

use std::fmt::Debug;

use anyhow::{bail, Context as _};

use crate::client::Response;
use crate::content::{sha256, sha512, Blob, Manifest};

/// Fails with `what: got X, want Y` unless equal.
pub fn expect_eq<T: Debug + PartialEq>(what: &str, got: T, want: T) -> anyhow::Result<()> {
    if got != want {
        bail!("{what}: got {got:?}, want {want:?}");
    }
    Ok(())
}

/// Checks a `Content-Length` header against `want`.
pub fn expect_content_length(resp: &Response, want: usize) -> anyhow::Result<()> {
    let got = resp.require_header("content-length")?;
    expect_eq("Content-Length", got, want.to_string().as_str())
}

/// Checks a `Docker-Content-Digest` header against `want`.
pub fn expect_digest_header(resp: &Response, want: &str) -> anyhow::Result<()> {
    let got = resp.require_header("docker-content-digest")?;
    expect_eq("Docker-Content-Digest", got, want)
}

/// A 200 manifest GET/HEAD with matching Content-Type, Docker-Content-Digest, Content-Length
/// and (GET) body.
pub fn expect_manifest(resp: &Response, m: &Manifest) -> anyhow::Result<()> {
    resp.expect_status(200)?;
    expect_eq("Content-Type", resp.content_type().unwrap_or_default(), m.media_type.as_str())?;
    expect_digest_header(resp, &m.digest)?;
    expect_content_length(resp, m.size())?;
    if resp.method != reqwest::Method::HEAD {
        if resp.body != m.body {
            bail!("manifest body differs from the pushed bytes ({} vs {} bytes)", resp.body.len(), m.size());
        }
    } else if !resp.body.is_empty() {
        bail!("HEAD response has a body");
    }
    Ok(())
}

/// A 200 blob GET whose bytes are the blob's and hash to its digest.
pub fn expect_blob(resp: &Response, b: &Blob) -> anyhow::Result<()> {
    resp.expect_status(200)?;
    let got = if b.digest.starts_with("sha512:") { sha512(&resp.body) } else { sha256(&resp.body) };
    if resp.body != b.data || got != b.digest {
        bail!(
            "blob content differs: got {} bytes hashing to {got}, want {} bytes ({})",
            resp.body.len(),
            b.size(),
            b.digest
        );
    }
    if let Some(cl) = resp.header("content-length") {
        expect_eq("Content-Length", cl, b.size().to_string().as_str())?;
    }
    Ok(())
}

/// A 201 from a manifest PUT with `Location` and the expected `Docker-Content-Digest`.
pub fn expect_manifest_created(resp: &Response, digest: &str) -> anyhow::Result<()> {
    resp.expect_status(201)?;
    resp.location().context("manifest PUT response")?;
    expect_digest_header(resp, digest)
}

/// A 201 from a blob upload completion/mount with `Location` and `Docker-Content-Digest`.
pub fn expect_blob_created(resp: &Response, digest: &str) -> anyhow::Result<()> {
    resp.expect_status(201)?;
    resp.location().context("blob creation response")?;
    expect_digest_header(resp, digest)
}
