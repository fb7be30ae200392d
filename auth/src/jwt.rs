//! Registry bearer tokens: short-lived ES256 JWTs in the shape of the Docker token spec (`iss`, `sub`, `aud` =
//! the service, `exp`, `nbf`, `iat`, `jti`, `access`), signed with a key pair made at first start and kept in
//! the metadata store (`signing-keys/<kid>`, shared by every replica), named in the header's `kid`.
//!
//! Verification accepts exactly ES256 with a stored key (so `alg: none` and HS256-signed-with-the-public-key are
//! refused before any signature check), then checks the signature, issuer, audience, `nbf` and expiry.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, RwLock};

use base64::Engine;
use chrono::{DateTime, Utc};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use ring::signature::{EcdsaKeyPair, KeyPair as _, ECDSA_P256_SHA256_FIXED_SIGNING};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use storage_backends::meta::encode;
use storage_backends::{keys, Expect, MetadataStore, MetadataStoreExt, StoreError, Txn};

use crate::scope::AccessEntry;

/// The `iss` of every token Tributary signs.
pub const ISSUER: &str = "tributary";
/// How long an issued token lives, in seconds.
pub const LIFETIME_SECS: i64 = 300;
/// Tolerated clock difference between replicas, in seconds.
pub(crate) const LEEWAY_SECS: u64 = 5;

/// The claims of a registry token.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    pub iss: String,
    /// The caller: a user name, `system:serviceaccount:<ns>:<name>`, or `system:anonymous`.
    pub sub: String,
    /// The service (audience) the token is for.
    pub aud: String,
    pub exp: i64,
    pub nbf: i64,
    pub iat: i64,
    pub jti: String,
    pub access: Vec<AccessEntry>,
    /// The API token the JWT was obtained with: revoking it ends the JWT at once.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tid: Option<String>,
}

/// Why a JWT was refused. Never sent to the client in detail.
#[derive(Debug, thiserror::Error)]
pub enum JwtError {
    #[error("malformed token: {0}")]
    Malformed(String),
    #[error("token names an unknown signing key")]
    UnknownKey,
    #[error("token rejected: {0}")]
    Rejected(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// A stored signing key.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct SigningKeyRecord {
    kid: String,
    /// PKCS#8 DER, base64.
    pkcs8: String,
    created: DateTime<Utc>,
}

/// A loaded key pair.
struct Loaded {
    kid: String,
    encoding: EncodingKey,
    decoding: DecodingKey,
    /// The uncompressed P-256 point.
    public: Vec<u8>,
}

fn b64() -> base64::engine::GeneralPurpose {
    base64::engine::general_purpose::STANDARD
}

impl Loaded {
    fn from_pkcs8(kid: String, pkcs8: &[u8]) -> Result<Loaded, String> {
        let rng = ring::rand::SystemRandom::new();
        let pair =
            EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, pkcs8, &rng).map_err(|e| e.to_string())?;
        let public = pair.public_key().as_ref().to_vec();
        Ok(Loaded {
            kid,
            encoding: EncodingKey::from_ec_der(pkcs8),
            decoding: DecodingKey::from_ec_der(&public),
            public,
        })
    }
}

/// The signing keys: the one to sign with, and every stored one by `kid` for verifying.
pub struct KeyRing {
    meta: Arc<dyn MetadataStore>,
    current: RwLock<Option<Arc<Loaded>>>,
    by_kid: RwLock<HashMap<String, Arc<Loaded>>>,
    /// Tokens whose signature was verified, by their text: a client sends the same token with every request of a
    /// pull, and checking an ES256 signature costs more than the rest of a manifest GET. Times are checked anew at
    /// every use; signing keys are never withdrawn, so a verified signature stays verified.
    verified: Mutex<HashMap<String, Arc<Claims>>>,
}

/// Verified tokens remembered at most (each lives [`LIFETIME_SECS`]); past it the expired ones are dropped, and
/// all of them if that is not enough.
const MAX_VERIFIED: usize = 4_096;

fn poisoned<T>(e: std::sync::PoisonError<T>) -> StoreError {
    StoreError::Backend(format!("key cache lock poisoned: {e}"))
}

impl KeyRing {
    pub fn new(meta: Arc<dyn MetadataStore>) -> KeyRing {
        KeyRing {
            meta,
            current: RwLock::new(None),
            by_kid: RwLock::new(HashMap::new()),
            verified: Mutex::new(HashMap::new()),
        }
    }

    fn load(key: &str, rec: &SigningKeyRecord) -> Result<Arc<Loaded>, StoreError> {
        let corrupt = |reason: String| StoreError::Corrupt { key: key.to_owned(), reason };
        let der = b64().decode(&rec.pkcs8).map_err(|e| corrupt(e.to_string()))?;
        Loaded::from_pkcs8(rec.kid.clone(), &der).map(Arc::new).map_err(corrupt)
    }

    /// The key to sign with: the first stored one, made now when there is none. Two replicas starting at once may
    /// both make one; both are kept and verify, and each signs with the first in key order.
    async fn current(&self) -> Result<Arc<Loaded>, StoreError> {
        if let Some(k) = self.current.read().map_err(poisoned)?.clone() {
            return Ok(k);
        }
        let loaded = match self.meta.list_json::<SigningKeyRecord>(keys::SIGNING_KEYS, None, 1).await?.pop() {
            Some((key, rec, _)) => Self::load(&key, &rec)?,
            None => {
                let rng = ring::rand::SystemRandom::new();
                let doc = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng)
                    .map_err(|e| StoreError::Backend(format!("generating the signing key: {e}")))?;
                let probe = Loaded::from_pkcs8(String::new(), doc.as_ref()).map_err(StoreError::Backend)?;
                let kid = hex::encode(&Sha256::digest(&probe.public)[..12]);
                let rec = SigningKeyRecord { kid: kid.clone(), pkcs8: b64().encode(doc.as_ref()), created: Utc::now() };
                let key = keys::signing_key(&kid);
                self.meta.commit(Txn::new().expect(key.clone(), Expect::Absent).put(key.clone(), encode(&rec))).await?;
                tracing::info!(%kid, "generated the token signing key");
                Self::load(&key, &rec)?
            }
        };
        self.by_kid.write().map_err(poisoned)?.insert(loaded.kid.clone(), loaded.clone());
        *self.current.write().map_err(poisoned)? = Some(loaded.clone());
        Ok(loaded)
    }

    /// Makes sure a signing key exists (at start, so that the first token request does not pay for it).
    pub async fn ensure(&self) -> Result<String, StoreError> {
        Ok(self.current().await?.kid.clone())
    }

    async fn by_kid(&self, kid: &str) -> Result<Option<Arc<Loaded>>, StoreError> {
        if let Some(k) = self.by_kid.read().map_err(poisoned)?.get(kid) {
            return Ok(Some(k.clone()));
        }
        if kid.is_empty() || kid.len() > 64 || !kid.bytes().all(|c| c.is_ascii_alphanumeric()) {
            return Ok(None);
        }
        let key = keys::signing_key(kid);
        let Some((rec, _)) = self.meta.get_json::<SigningKeyRecord>(&key).await? else { return Ok(None) };
        let loaded = Self::load(&key, &rec)?;
        self.by_kid.write().map_err(poisoned)?.insert(kid.to_owned(), loaded.clone());
        Ok(Some(loaded))
    }

    /// The public key (uncompressed P-256 point) named `kid`, e.g. for publishing or for tests.
    pub async fn public_key(&self, kid: &str) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(self.by_kid(kid).await?.map(|k| k.public.clone()))
    }

    /// The `kid` tokens are signed with now.
    pub async fn current_kid(&self) -> Result<String, StoreError> {
        Ok(self.current().await?.kid.clone())
    }

    /// Signs `claims` with the current key. Trusts the claims: callers decide what they grant.
    pub async fn sign(&self, claims: &Claims) -> Result<String, StoreError> {
        let key = self.current().await?;
        let mut header = Header::new(Algorithm::ES256);
        header.kid = Some(key.kid.clone());
        jsonwebtoken::encode(&header, claims, &key.encoding)
            .map_err(|e| StoreError::Backend(format!("signing a token: {e}")))
    }

    /// Verifies a token for `audience` and returns its claims.
    pub async fn verify(&self, token: &str, audience: &str) -> Result<Claims, JwtError> {
        let remembered = self.verified.lock().map_err(poisoned)?.get(token).cloned();
        if let Some(claims) = remembered {
            let now = Utc::now().timestamp();
            let leeway = LEEWAY_SECS as i64;
            if claims.aud == audience && claims.exp + leeway > now && claims.nbf - leeway <= now {
                return Ok(Claims::clone(&claims));
            }
        }
        let claims = self.verify_signed(token, audience).await?;
        let mut verified = self.verified.lock().map_err(poisoned)?;
        if verified.len() >= MAX_VERIFIED {
            let now = Utc::now().timestamp();
            verified.retain(|_, c| c.exp + LEEWAY_SECS as i64 > now);
            if verified.len() >= MAX_VERIFIED {
                verified.clear();
            }
        }
        verified.insert(token.to_owned(), Arc::new(claims.clone()));
        Ok(claims)
    }

    /// Checks `token`'s signature, issuer, audience and times.
    async fn verify_signed(&self, token: &str, audience: &str) -> Result<Claims, JwtError> {
        let header = jsonwebtoken::decode_header(token).map_err(|e| JwtError::Malformed(e.to_string()))?;
        if header.alg != Algorithm::ES256 {
            return Err(JwtError::Rejected(format!("algorithm {:?} is not accepted", header.alg)));
        }
        let kid = header.kid.ok_or_else(|| JwtError::Rejected("no kid".into()))?;
        let key = self.by_kid(&kid).await?.ok_or(JwtError::UnknownKey)?;
        let mut v = Validation::new(Algorithm::ES256);
        v.leeway = LEEWAY_SECS;
        v.validate_nbf = true;
        v.set_issuer(&[ISSUER]);
        v.set_audience(&[audience]);
        v.set_required_spec_claims(&["exp", "nbf", "iss", "aud", "sub"]);
        let data =
            jsonwebtoken::decode::<Claims>(token, &key.decoding, &v).map_err(|e| JwtError::Rejected(e.to_string()))?;
        // Typed claims make `exp` a number; check it here too rather than trusting the library alone.
        let now = Utc::now().timestamp();
        if data.claims.exp + LEEWAY_SECS as i64 <= now {
            return Err(JwtError::Rejected("expired".into()));
        }
        Ok(data.claims)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use storage_backends::RedbStore;

    fn claims(aud: &str, exp_in: i64) -> Claims {
        let now = Utc::now().timestamp();
        Claims {
            iss: ISSUER.into(),
            sub: "alice".into(),
            aud: aud.into(),
            exp: now + exp_in,
            nbf: now - 1,
            iat: now,
            jti: "j".into(),
            access: vec![],
            tid: None,
        }
    }

    #[tokio::test]
    async fn sign_verify_and_refuse() {
        let dir = tempfile::tempdir().unwrap();
        let meta: Arc<dyn MetadataStore> = Arc::new(RedbStore::open(&dir.path().join("m.redb")).unwrap());
        let ring = KeyRing::new(meta.clone());
        let kid = ring.ensure().await.unwrap();
        let good = ring.sign(&claims("svc", 60)).await.unwrap();
        assert_eq!(ring.verify(&good, "svc").await.unwrap().sub, "alice");
        assert!(ring.verify(&good, "other").await.is_err());
        assert!(ring.verify(&ring.sign(&claims("svc", -60)).await.unwrap(), "svc").await.is_err());
        // Another ring over the same store (a second replica) uses the same key.
        let other = KeyRing::new(meta);
        assert_eq!(other.current_kid().await.unwrap(), kid);
        assert!(other.verify(&good, "svc").await.is_ok());
        // Tampered payload.
        let parts: Vec<&str> = good.split('.').collect();
        let mut c = claims("svc", 60);
        c.sub = "admin".into();
        let payload = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(serde_json::to_vec(&c).unwrap());
        assert!(ring.verify(&format!("{}.{payload}.{}", parts[0], parts[2]), "svc").await.is_err());
        // alg none.
        let none = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(br#"{"alg":"none","typ":"JWT"}"#);
        assert!(ring.verify(&format!("{none}.{}.", parts[1]), "svc").await.is_err());
        // HS256 with the public key as the secret.
        let public = ring.public_key(&kid).await.unwrap().unwrap();
        let mut h = Header::new(Algorithm::HS256);
        h.kid = Some(kid);
        let hs = jsonwebtoken::encode(&h, &claims("svc", 60), &EncodingKey::from_secret(&public)).unwrap();
        assert!(ring.verify(&hs, "svc").await.is_err());
    }
}
