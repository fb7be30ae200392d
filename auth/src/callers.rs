//! [`JwtCallers`]: the callers that registry JWTs authenticated, remembered by token so that the next request with
//! the same token (a client sends one token with every request of a pull) costs one lookup instead of the
//! signature check's cache, the API token's record, the owner's identity and the claims' copies.
//!
//! An entry is used only while everything it was made from still holds: before the JWT's `exp` (with the leeway
//! the verification allows) and the API token's own expiry, and while no access-control record changed since it was
//! made (the [`crate::cache::RecordCache`] epoch: a revoked or replaced API token, a removed user, service account
//! or namespace all move it, on this replica at once and on the others as their change feed delivers, as for API
//! tokens). Signing keys are never withdrawn, so a verified signature stays verified. Only
//! [`crate::service::AuthService`] uses it.

use std::collections::HashMap;
use std::sync::Mutex;

use crate::service::Caller;

/// Entries kept at most (each lives at most [`crate::jwt::LIFETIME_SECS`]); past it the stale ones are dropped, and
/// all of them if that is not enough. Bounds what callers presenting many different tokens can make it hold.
const MAX_ENTRIES: usize = 4_096;

struct Entry {
    /// The whole token: the map's key is only its signature.
    token: Box<str>,
    caller: Caller,
    /// The access-control epoch the caller was worked out at.
    epoch: u64,
    /// Unix milliseconds from which the entry must not be used.
    until_ms: i64,
}

/// Authenticated JWT callers by token.
#[derive(Default)]
pub(crate) struct JwtCallers {
    /// Keyed by the token's signature segment (86 characters for ES256), cheaper to hash than the whole token.
    entries: Mutex<HashMap<Box<str>, Entry>>,
}

fn signature(token: &str) -> &str {
    token.rsplit_once('.').map_or(token, |(_, s)| s)
}

impl JwtCallers {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<Box<str>, Entry>> {
        // A cache: after a panic elsewhere it is still sound to use.
        self.entries.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The caller `token` authenticated, if it was remembered at `epoch` and is still good at `now_ms`.
    pub(crate) fn get(&self, token: &str, epoch: u64, now_ms: i64) -> Option<Caller> {
        let entries = self.lock();
        let e = entries.get(signature(token))?;
        (*e.token == *token && e.epoch == epoch && now_ms < e.until_ms).then(|| e.caller.clone())
    }

    /// Remembers that `token` authenticated `caller` at `epoch`, until `until_ms`.
    pub(crate) fn insert(&self, token: &str, caller: Caller, epoch: u64, until_ms: i64, now_ms: i64) {
        let mut entries = self.lock();
        if entries.len() >= MAX_ENTRIES {
            entries.retain(|_, e| e.epoch == epoch && now_ms < e.until_ms);
            if entries.len() >= MAX_ENTRIES {
                entries.clear();
            }
        }
        let entry = Entry { token: token.into(), caller, epoch, until_ms };
        entries.insert(signature(token).into(), entry);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn used_only_for_the_same_token_epoch_and_time() {
        let callers = JwtCallers::default();
        callers.insert("h.p.sig", Caller::anonymous(), 3, 1_000, 0);
        assert_eq!(callers.get("h.p.sig", 3, 999), Some(Caller::anonymous()));
        assert_eq!(callers.get("h.p.sig", 3, 1_000), None, "past its end");
        assert_eq!(callers.get("h.p.sig", 4, 10), None, "an access-control record changed since");
        assert_eq!(callers.get("h.other.sig", 3, 10), None, "same signature, another token");
    }

    #[test]
    fn bounded() {
        let callers = JwtCallers::default();
        for i in 0..MAX_ENTRIES + 10 {
            callers.insert(&format!("h.p.{i}"), Caller::anonymous(), 0, 1_000, 0);
        }
        assert!(callers.lock().len() <= MAX_ENTRIES);
    }
}
