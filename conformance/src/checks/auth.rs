//! The Docker token flow where one request needs two scopes: a cross-repository mount needs push on the target
//! and pull on the source, so the 401 challenge names both (as distribution's does), and a token for the target
//! alone is challenged again rather than silently turned into an ordinary upload. Skipped for a registry that
//! does not challenge.

use anyhow::{bail, Context as _};
use reqwest::header::{CONTENT_LENGTH, WWW_AUTHENTICATE};

use crate::client::Challenge;
use crate::content::{Blob, OCI_LAYER};
use crate::{ops, skip, Group};

/// The Bearer challenge of a 401, or why there is none.
fn challenge_of(resp: &reqwest::Response, what: &str) -> anyhow::Result<Challenge> {
    if resp.status() != 401 {
        bail!("{what}: got {}, want 401 with a Bearer challenge", resp.status());
    }
    let value = resp.headers().get(WWW_AUTHENTICATE).and_then(|v| v.to_str().ok()).unwrap_or_default();
    Challenge::parse(value).with_context(|| format!("{what}: 401 without a Bearer challenge ({value:?})"))
}

fn expect_scope(challenge: &Challenge, want: &str, what: &str) -> anyhow::Result<()> {
    let scopes = challenge.scope.clone().unwrap_or_default();
    if !scopes.split(' ').any(|s| s == want) {
        bail!("{what}: the challenge asks for {scopes:?}, which lacks {want}");
    }
    Ok(())
}

pub async fn run(g: Group<'_>) {
    let c = g.client();
    let source = g.ctx.repo("auth-mount-source");
    let target = g.ctx.repo("auth-mount-target");
    let (source, target) = (source.as_str(), target.as_str());
    g.check("mount-challenge-names-source", async {
        let http = reqwest::Client::new();
        let ping = http.get(c.base().join("/v2/")?).send().await?;
        if ping.status() != 401 {
            return Err(skip("the registry does not challenge anonymous requests"));
        }
        let blob = Blob::random(1500, OCI_LAYER);
        ops::push_blob(c, source, &blob).await.context("setup: pushing the blob to the source")?;
        let mount = c.base().join(&format!("/v2/{target}/blobs/uploads/?mount={}&from={source}", blob.digest))?;
        let post = |token: Option<String>| {
            let req = http.post(mount.clone()).header(CONTENT_LENGTH, "0");
            match token {
                Some(t) => req.bearer_auth(t).send(),
                None => req.send(),
            }
        };
        let want = format!("repository:{source}:pull");
        let both = challenge_of(&post(None).await?, "anonymous mount")?;
        expect_scope(&both, &format!("repository:{target}:pull,push"), "anonymous mount")?;
        expect_scope(&both, &want, "anonymous mount")?;
        // A token for the target alone: asked again, for both.
        let narrow = Challenge { scope: Some(format!("repository:{target}:pull,push")), ..both.clone() };
        let again = challenge_of(&post(Some(c.fetch_token(&narrow).await?)).await?, "mount with a target-only token")?;
        expect_scope(&again, &want, "mount with a target-only token")?;
        // A token for what the challenge names: mounted.
        let resp = post(Some(c.fetch_token(&both).await?)).await?;
        if resp.status() != 201 {
            bail!("mount with a token for both scopes: got {}, want 201", resp.status());
        }
        Ok(())
    })
    .await;
}
