//! The writers' half of the garbage collector's protocol: a repository link to a digest is committed only while no
//! sweep is deleting that digest (its tombstone `gc/deleting/<digest>` absent, checked in the link's own
//! transaction), and a writer that finds a sweep at work waits for it and then checks that the content survived.
//! Called by every writer of a link in `crate::service` (upload finish, mount, pull-through, import) and by the
//! manifest PUT for manifests kept in the blob store ([`settle`]).

use std::time::Duration;

use chrono::Utc;
use names::Digest;
use storage_backends::meta::decode;
use storage_backends::{keys, Expect, MetadataStore, StoreError, Txn};

use super::{Tombstone, STALE_TOMBSTONE};

/// How long a writer waits for a sweep to finish deleting a digest before giving up.
pub const WAIT: Duration = Duration::from_secs(30);
/// How often a waiting writer looks again.
const POLL: Duration = Duration::from_millis(20);

/// Why a guarded commit did not happen.
#[derive(Debug, thiserror::Error)]
pub enum Guarded {
    /// A sweep was deleting the digest; it is done now. The caller checks whether the content is still there (or
    /// stores it again when it holds the bytes) and commits again.
    #[error("{0} was being garbage collected")]
    Swept(Digest),
    /// A sweep is still deleting the digest after [`WAIT`].
    #[error("{0} is being garbage collected; try again")]
    Busy(Digest),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// `txn` with the expectation that no sweep is deleting any of `digests`.
pub fn guard<'a>(txn: Txn, digests: impl IntoIterator<Item = &'a Digest>) -> Txn {
    digests.into_iter().fold(txn, |t, d| t.expect(keys::gc_deleting(d), Expect::Absent))
}

/// Commits `txn` guarded for `digests` ([`guard`]). When a sweep was deleting one of them, waits until it is done
/// and answers [`Guarded::Swept`]: nothing was written.
pub async fn commit_guarded(meta: &dyn MetadataStore, txn: Txn, digests: &[Digest]) -> Result<u64, Guarded> {
    match meta.commit(guard(txn, digests)).await {
        Ok(revision) => Ok(revision),
        Err(StoreError::Conflict { key }) if key.starts_with(keys::GC_DELETING) => {
            let digest = keys::digest_of_key(&key).ok_or_else(|| StoreError::Conflict { key: key.clone() })?;
            wait_for_sweep(meta, &digest).await?;
            Err(Guarded::Swept(digest))
        }
        Err(e) => Err(e.into()),
    }
}

/// Returns once no sweep is deleting `digest` (a tombstone older than [`STALE_TOMBSTONE`], left by a sweep that
/// died, is cleared); [`Guarded::Busy`] after [`WAIT`].
pub async fn wait_for_sweep(meta: &dyn MetadataStore, digest: &Digest) -> Result<(), Guarded> {
    let key = keys::gc_deleting(digest);
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let Some(found) = meta.get_latest(&key).await? else { return Ok(()) };
        let tombstone: Tombstone = decode(&key, &found.value)?;
        if (Utc::now() - tombstone.at).to_std().is_ok_and(|age| age > STALE_TOMBSTONE) {
            let clear = Txn::new().expect(key.clone(), Expect::Version(found.version)).delete(key.clone());
            match meta.commit(clear).await {
                Ok(_) | Err(StoreError::Conflict { .. }) => continue,
                Err(e) => return Err(e.into()),
            }
        }
        if tokio::time::Instant::now() >= deadline {
            return Err(Guarded::Busy(digest.clone()));
        }
        tokio::time::sleep(POLL).await;
    }
}

/// For a writer that committed a reference to `digest` without a guard but holds its bytes (a large manifest PUT):
/// waits out a sweep deleting it. The caller then checks that the content is there and stores it again if not
/// (a sweep whose second mark ran before the commit may have deleted it).
pub async fn settle(meta: &dyn MetadataStore, digest: &Digest) -> Result<(), Guarded> {
    wait_for_sweep(meta, digest).await
}
