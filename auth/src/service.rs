//! [`AuthService`]: authentication (API tokens, registry JWTs, anonymous), authorization decisions against the
//! stored role bindings and the token endpoint's grants. The administration operations (namespaces, users,
//! service accounts, tokens, role bindings) and the first-start bootstrap are in [`crate::admin`].
//!
//! The registry's HTTP edge calls this with typed values; this module calls only the metadata store.

use std::path::PathBuf;
use std::sync::Arc;

use base64::Engine;
use chrono::{DateTime, Utc};
use names::{Namespace, RepositoryName};
use serde::de::DeserializeOwned;
use storage_backends::{keys, MetadataStore, MetadataStoreExt, StoreError};

use crate::cache::RecordCache;
use crate::callers::JwtCallers;
use crate::identity::{Identity, ANONYMOUS};
use crate::ids::{Subject, TokenId};
use crate::jwt::{Claims, KeyRing, ISSUER, LIFETIME_SECS};
use crate::model::{RoleBinding, TokenRecord, User};
use crate::roles::{Resource, Verb};
use crate::scope::{covers, covers_catalog, AccessEntry, Action, Scope};
use crate::tokens;

/// The `service` (JWT audience) Tributary names in its challenges and accepts in tokens.
pub const DEFAULT_SERVICE: &str = "tributary";

/// Whether access control is on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum AuthMode {
    /// Everything is allowed to everyone, namespaces need not exist: for trusted networks and tests.
    None,
    /// API tokens, registry JWTs and role bindings decide (the default).
    #[default]
    Token,
}

impl std::str::FromStr for AuthMode {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "none" => Ok(AuthMode::None),
            "token" => Ok(AuthMode::Token),
            other => Err(format!("unknown auth mode {other:?}: use none or token")),
        }
    }
}

impl std::fmt::Display for AuthMode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            AuthMode::None => "none",
            AuthMode::Token => "token",
        })
    }
}

impl<'de> serde::Deserialize<'de> for AuthMode {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d)?.parse().map_err(serde::de::Error::custom)
    }
}

/// What a request presented.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Credentials {
    None,
    /// `Authorization: Basic`: any user name, an API token as the password.
    Basic {
        password: String,
    },
    /// `Authorization: Bearer`: a registry JWT or an API token.
    Bearer(String),
}

impl Credentials {
    /// Parses an `Authorization` header value. An unreadable header is refused, never taken as anonymous.
    pub fn from_header(value: Option<&str>) -> Result<Credentials, AuthError> {
        let Some(value) = value else { return Ok(Credentials::None) };
        let (scheme, rest) = value.trim().split_once(' ').ok_or(AuthError::InvalidCredentials)?;
        let rest = rest.trim();
        if scheme.eq_ignore_ascii_case("basic") {
            let raw =
                base64::engine::general_purpose::STANDARD.decode(rest).map_err(|_| AuthError::InvalidCredentials)?;
            let text = String::from_utf8(raw).map_err(|_| AuthError::InvalidCredentials)?;
            let (_, password) = text.split_once(':').ok_or(AuthError::InvalidCredentials)?;
            Ok(Credentials::Basic { password: password.to_owned() })
        } else if scheme.eq_ignore_ascii_case("bearer") && !rest.is_empty() {
            Ok(Credentials::Bearer(rest.to_owned()))
        } else {
            Err(AuthError::InvalidCredentials)
        }
    }
}

/// How the caller proved who it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Via {
    /// No credentials.
    Anonymous,
    ApiToken(TokenId),
    /// A registry JWT: only its `access` claims may be used.
    Jwt {
        access: Vec<AccessEntry>,
    },
    /// Access control is off: everything is allowed.
    Open,
}

/// An authenticated caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    pub identity: Identity,
    pub via: Via,
}

impl Caller {
    pub fn anonymous() -> Caller {
        Caller { identity: Identity::Anonymous, via: Via::Anonymous }
    }
}

/// What a registry request needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Need {
    /// `GET /v2/`: any valid credentials (a client checking its login).
    Login,
    /// The catalog (filtered to what the caller may pull).
    Catalog,
    /// `get imagestreams/layers`.
    Pull(RepositoryName),
    /// `update imagestreams/layers` (creating a missing stream also needs `create imagestreams`).
    Push(RepositoryName),
    /// `delete imagestreams/layers`.
    Delete(RepositoryName),
}

impl Need {
    /// The scope a client should ask the token endpoint for.
    pub fn scope(&self) -> Option<Scope> {
        match self {
            Need::Login => None,
            Need::Catalog => Some(Scope::Catalog),
            Need::Pull(r) => Some(Scope::repository(r.clone(), [Action::Pull])),
            Need::Push(r) => Some(Scope::repository(r.clone(), [Action::Pull, Action::Push])),
            Need::Delete(r) => Some(Scope::repository(r.clone(), [Action::Delete])),
        }
    }
}

/// The answer to a registry request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Allow,
    /// No (usable) credentials and anonymous may not: 401 with a challenge.
    Unauthenticated,
    /// The caller may, but its JWT does not say so: 401 asking for a token with that scope.
    InsufficientScope,
    /// The caller may not: 403.
    Denied,
}

/// Why an operation was refused. Messages are safe to show to a client and name nothing the caller may not see.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    #[error("authentication required")]
    Unauthenticated,
    #[error("invalid, expired or revoked credentials")]
    InvalidCredentials,
    #[error("access denied")]
    Forbidden,
    #[error("{0} not found")]
    NotFound(String),
    #[error("{0} already exists")]
    AlreadyExists(String),
    #[error("{0}")]
    Invalid(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// A token from the token endpoint.
#[derive(Debug, Clone)]
pub struct IssuedToken {
    pub token: String,
    pub expires_in: i64,
    pub issued_at: DateTime<Utc>,
    pub claims: Claims,
}

/// What the first-start bootstrap did about the administrator's token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Bootstrap {
    /// Access control is off; nothing to do.
    Disabled,
    /// The token given in the configuration is now the administrator's.
    Configured,
    /// The administrator's token was made earlier and is kept.
    Existing,
    /// A token was generated (shown once) and written to `path` (mode 0600), when there is one: with remote
    /// stores there is no data directory, and the token is only shown.
    Generated { token: String, path: Option<PathBuf> },
}

/// The name of the file the generated administrator token is written to, in the data directory.
pub const ADMIN_TOKEN_FILE: &str = "admin.token";

pub(crate) const CAS_RETRIES: usize = 8;

pub(crate) struct Inner {
    pub(crate) meta: Arc<dyn MetadataStore>,
    /// What the request path reads (tokens, identities, namespaces, bindings), kept by the change feed.
    pub(crate) cache: RecordCache,
    pub(crate) mode: AuthMode,
    pub(crate) service: String,
    pub(crate) keys: KeyRing,
    /// The callers registry JWTs authenticated, while the records they were worked out from stand.
    pub(crate) jwt_callers: JwtCallers,
}

/// Access control over a metadata store. Cheap to clone.
#[derive(Clone)]
pub struct AuthService {
    pub(crate) inner: Arc<Inner>,
}

fn is_read(verb: Verb) -> bool {
    matches!(verb, Verb::Get | Verb::List | Verb::Watch)
}

impl AuthService {
    pub fn new(meta: Arc<dyn MetadataStore>, mode: AuthMode) -> AuthService {
        let keys = KeyRing::new(meta.clone());
        let cache = RecordCache::new(meta.as_ref());
        let service = DEFAULT_SERVICE.to_owned();
        let jwt_callers = JwtCallers::default();
        AuthService { inner: Arc::new(Inner { meta, cache, mode, service, keys, jwt_callers }) }
    }

    pub fn mode(&self) -> AuthMode {
        self.inner.mode
    }

    /// The service name (JWT audience).
    pub fn service(&self) -> &str {
        &self.inner.service
    }

    /// The signing keys (tests use them to forge tokens with the real key).
    pub fn keys(&self) -> &KeyRing {
        &self.inner.keys
    }

    pub(crate) fn meta(&self) -> &dyn MetadataStore {
        self.inner.meta.as_ref()
    }

    pub(crate) async fn list_all<T: DeserializeOwned + Send>(&self, prefix: &str) -> Result<Vec<T>, StoreError> {
        Ok(self.meta().list_all_json::<T>(prefix).await?.into_iter().map(|(v, _)| v).collect())
    }

    // ----------------------------------------------------------------------------------------------------------
    // Authentication

    /// Finds who presented `creds`. Bad, expired or revoked credentials are an error, never anonymous.
    pub async fn authenticate(&self, creds: &Credentials) -> Result<Caller, AuthError> {
        let result = match creds {
            Credentials::None => Ok(Caller::anonymous()),
            Credentials::Basic { password } => self.by_api_token(password).await,
            Credentials::Bearer(t) if t.split('.').count() == 3 && !t.starts_with(tokens::SECRET_PREFIX) => {
                match self.by_jwt(t).await {
                    Err(AuthError::InvalidCredentials) => match self.by_api_token(t).await {
                        Ok(c) => Ok(c),
                        Err(_) => Err(AuthError::InvalidCredentials),
                    },
                    other => other,
                }
            }
            Credentials::Bearer(t) => self.by_api_token(t).await,
        };
        match self.inner.mode {
            AuthMode::Token => result,
            AuthMode::None => match result {
                Err(AuthError::Store(e)) => Err(e.into()),
                other => {
                    Ok(Caller { identity: other.map(|c| c.identity).unwrap_or(Identity::Anonymous), via: Via::Open })
                }
            },
        }
    }

    async fn by_api_token(&self, secret: &str) -> Result<Caller, AuthError> {
        let record = self.token_by_secret(secret).await?.ok_or(AuthError::InvalidCredentials)?;
        let identity = self.identity_of(&record.info.owner).await?.ok_or(AuthError::InvalidCredentials)?;
        Ok(Caller { identity, via: Via::ApiToken(record.info.id.clone()) })
    }

    /// The live, unexpired token whose secret is `secret`.
    async fn token_by_secret(&self, secret: &str) -> Result<Option<Arc<TokenRecord>>, StoreError> {
        if secret.is_empty() || secret.len() > 4096 {
            return Ok(None);
        }
        let hash = tokens::hash(secret);
        let cache = &self.inner.cache;
        let Some(id) = cache.get::<TokenId>(self.meta(), &keys::token_hash(&hash)).await? else { return Ok(None) };
        Ok(self.live_token(&id).await?.filter(|r| tokens::same_hash(&r.sha256, &hash)))
    }

    async fn live_token(&self, id: &TokenId) -> Result<Option<Arc<TokenRecord>>, StoreError> {
        let rec = self.inner.cache.get::<TokenRecord>(self.meta(), &keys::token(id.as_str())).await?;
        Ok(rec.filter(|r| !r.info.expired(Utc::now())))
    }

    /// The caller a registry JWT authenticates: remembered per token ([`JwtCallers`]) while no access-control
    /// record changed, else worked out from the claims and the records.
    async fn by_jwt(&self, token: &str) -> Result<Caller, AuthError> {
        let now_ms = Utc::now().timestamp_millis();
        // Read before the records: a change while they are read moves it, and the entry is never used.
        let epoch = self.inner.cache.epoch();
        if let Some(caller) = epoch.and_then(|e| self.inner.jwt_callers.get(token, e, now_ms)) {
            return Ok(caller);
        }
        let (caller, until_ms) = self.by_jwt_uncached(token).await?;
        if let Some(epoch) = epoch {
            self.inner.jwt_callers.insert(token, caller.clone(), epoch, until_ms, now_ms);
        }
        Ok(caller)
    }

    /// [`AuthService::by_jwt`] without its memory; also says until when (Unix milliseconds) the answer holds by
    /// the clock: the JWT's expiry with its leeway, and the API token's own.
    async fn by_jwt_uncached(&self, token: &str) -> Result<(Caller, i64), AuthError> {
        let claims = match self.inner.keys.verify(token, &self.inner.service).await {
            Ok(c) => c,
            Err(crate::jwt::JwtError::Store(e)) => return Err(e.into()),
            Err(e) => {
                tracing::debug!(error = %e, "registry token refused");
                return Err(AuthError::InvalidCredentials);
            }
        };
        let mut until_ms = claims.exp.saturating_add(crate::jwt::LEEWAY_SECS as i64).saturating_mul(1000);
        let identity = match &claims.tid {
            None if claims.sub == ANONYMOUS => Identity::Anonymous,
            None => return Err(AuthError::InvalidCredentials),
            Some(tid) => {
                let tid = tid.parse::<TokenId>().map_err(|_| AuthError::InvalidCredentials)?;
                let rec = self.live_token(&tid).await?.ok_or(AuthError::InvalidCredentials)?;
                // A token replaced under the same id (the bootstrap token) ends the JWTs of its predecessor.
                if claims.iat < rec.info.created.timestamp() {
                    return Err(AuthError::InvalidCredentials);
                }
                if let Some(expires) = rec.info.expires {
                    until_ms = until_ms.min(expires.timestamp_millis());
                }
                let identity = self.identity_of(&rec.info.owner).await?.ok_or(AuthError::InvalidCredentials)?;
                if identity.name() != claims.sub {
                    return Err(AuthError::InvalidCredentials);
                }
                identity
            }
        };
        Ok((Caller { identity, via: Via::Jwt { access: claims.access } }, until_ms))
    }

    /// The identity of a stored user or service account (whose namespace exists); `None` when gone.
    pub(crate) async fn identity_of(&self, subject: &Subject) -> Result<Option<Identity>, StoreError> {
        let cache = &self.inner.cache;
        match subject {
            Subject::User { name } => {
                let user = cache.get::<User>(self.meta(), &keys::user(name.as_str())).await?;
                Ok(user.map(|u| Identity::User { name: u.name.clone(), groups: u.groups.clone() }))
            }
            Subject::ServiceAccount { namespace, name } => {
                let key = keys::service_account(namespace, name.as_str());
                let sa = cache.get::<serde::de::IgnoredAny>(self.meta(), &key).await?;
                Ok((sa.is_some() && self.namespace_exists(namespace).await?)
                    .then(|| Identity::ServiceAccount { namespace: namespace.clone(), name: name.clone() }))
            }
            Subject::Group { .. } => Ok(None),
        }
    }

    // ----------------------------------------------------------------------------------------------------------
    // Authorization

    pub(crate) async fn namespace_exists(&self, ns: &Namespace) -> Result<bool, StoreError> {
        let cache = &self.inner.cache;
        Ok(cache.get::<serde::de::IgnoredAny>(self.meta(), &keys::namespace(ns)).await?.is_some())
    }

    pub(crate) async fn cluster_allows(
        &self,
        identity: &Identity,
        verb: Verb,
        resource: Resource,
    ) -> Result<bool, StoreError> {
        let bindings = self.inner.cache.list::<RoleBinding>(self.meta(), "clusterrolebindings/").await?;
        Ok(bindings.iter().any(|b| b.role.allows(verb, resource) && b.subjects.iter().any(|s| identity.matches(s))))
    }

    /// Whether `identity` may `verb` `resource` in `ns` (or cluster-wide when `None`), by the stored bindings. A
    /// namespace that does not exist grants nothing; cluster administrators may still read and delete there.
    pub async fn allowed(
        &self,
        identity: &Identity,
        verb: Verb,
        resource: Resource,
        ns: Option<&Namespace>,
    ) -> Result<bool, StoreError> {
        if self.inner.mode == AuthMode::None {
            return Ok(true);
        }
        let cluster = self.cluster_allows(identity, verb, resource).await?;
        let Some(ns) = ns else {
            // Any user may ask for a project (OpenShift's self-provisioner default); service accounts may not.
            let self_provisioner =
                resource == Resource::Namespaces && verb == Verb::Create && matches!(identity, Identity::User { .. });
            return Ok(cluster || self_provisioner);
        };
        if !self.namespace_exists(ns).await? {
            return Ok(cluster && (is_read(verb) || verb == Verb::Delete));
        }
        if cluster {
            return Ok(true);
        }
        let bindings = self.inner.cache.list::<RoleBinding>(self.meta(), &keys::role_bindings_in(ns)).await?;
        Ok(bindings.iter().any(|b| b.role.allows(verb, resource) && b.subjects.iter().any(|s| identity.matches(s))))
    }

    /// Decides a registry request.
    pub async fn check(&self, caller: &Caller, need: &Need) -> Result<Verdict, StoreError> {
        let access = match &caller.via {
            Via::Open => return Ok(Verdict::Allow),
            Via::Jwt { access } => Some(access),
            Via::Anonymous | Via::ApiToken(_) => None,
        };
        let (rbac, scoped) = match need {
            Need::Login => (caller.via != Via::Anonymous, true),
            Need::Catalog => (caller.via != Via::Anonymous, access.is_none_or(|a| covers_catalog(a))),
            Need::Pull(repo) | Need::Push(repo) | Need::Delete(repo) => {
                let (verb, action) = match need {
                    Need::Push(_) => (Verb::Update, Action::Push),
                    Need::Delete(_) => (Verb::Delete, Action::Delete),
                    _ => (Verb::Get, Action::Pull),
                };
                let rbac =
                    self.allowed(&caller.identity, verb, Resource::ImageStreamLayers, Some(repo.namespace())).await?;
                (rbac, access.is_none_or(|a| covers(a, repo, action)))
            }
        };
        Ok(match (rbac, scoped) {
            (true, true) => Verdict::Allow,
            (true, false) => Verdict::InsufficientScope,
            (false, _) if caller.identity.is_anonymous() => Verdict::Unauthenticated,
            (false, _) => Verdict::Denied,
        })
    }

    /// Whether the caller may create the stream `repo` (pushing into a stream that does not exist yet).
    pub async fn may_create_stream(&self, caller: &Caller, repo: &RepositoryName) -> Result<bool, StoreError> {
        if caller.via == Via::Open {
            return Ok(true);
        }
        self.allowed(&caller.identity, Verb::Create, Resource::ImageStreams, Some(repo.namespace())).await
    }

    /// Keeps the repositories the caller may pull (the catalog), deciding once per namespace.
    pub async fn pullable(
        &self,
        caller: &Caller,
        repos: Vec<RepositoryName>,
    ) -> Result<Vec<RepositoryName>, StoreError> {
        if caller.via == Via::Open {
            return Ok(repos);
        }
        let mut decided: Vec<(Namespace, bool)> = Vec::new();
        let mut out = Vec::with_capacity(repos.len());
        for repo in repos {
            let ns = repo.namespace();
            let ok = match decided.iter().find(|(n, _)| n == ns) {
                Some((_, ok)) => *ok,
                None => {
                    let ok = self.allowed(&caller.identity, Verb::Get, Resource::ImageStreamLayers, Some(ns)).await?;
                    decided.push((ns.clone(), ok));
                    ok
                }
            };
            if ok {
                out.push(repo);
            }
        }
        Ok(out)
    }

    /// Whether the caller may `verb` image stream objects in `ns` through the stream API (cluster-wide when
    /// `None`); `repo` names the stream a request is about, which a JWT must cover.
    pub async fn check_stream_api(
        &self,
        caller: &Caller,
        verb: Verb,
        resource: Resource,
        ns: Option<&Namespace>,
        repo: Option<&RepositoryName>,
    ) -> Result<Verdict, StoreError> {
        let scoped = match (&caller.via, repo) {
            (Via::Open, _) => return Ok(Verdict::Allow),
            (Via::Jwt { access }, Some(repo)) => {
                covers(access, repo, if is_read(verb) { Action::Pull } else { Action::Push })
            }
            (Via::Jwt { .. }, None) => false,
            (Via::Anonymous | Via::ApiToken(_), _) => true,
        };
        let rbac = self.allowed(&caller.identity, verb, resource, ns).await?;
        Ok(match (rbac, scoped) {
            (true, true) => Verdict::Allow,
            (true, false) => Verdict::Denied,
            (false, _) if caller.identity.is_anonymous() => Verdict::Unauthenticated,
            (false, _) => Verdict::Denied,
        })
    }

    // ----------------------------------------------------------------------------------------------------------
    // The token endpoint

    /// The requested scopes cut down to what the caller holds.
    pub async fn grant(&self, caller: &Caller, requested: &[Scope]) -> Result<Vec<Scope>, StoreError> {
        let mut out = Vec::new();
        for scope in requested {
            match scope {
                Scope::Catalog => out.push(Scope::Catalog),
                Scope::Repository { name, actions } => {
                    let mut granted = Vec::new();
                    for action in actions {
                        let verb = match action {
                            Action::Pull => Verb::Get,
                            Action::Push => Verb::Update,
                            Action::Delete => Verb::Delete,
                        };
                        let ok = caller.via == Via::Open
                            || self
                                .allowed(&caller.identity, verb, Resource::ImageStreamLayers, Some(name.namespace()))
                                .await?;
                        if ok {
                            granted.push(*action);
                        }
                    }
                    if !granted.is_empty() {
                        out.push(Scope::repository(name.clone(), granted));
                    }
                }
            }
        }
        Ok(out)
    }

    /// Issues a registry JWT for the caller (authenticated by API token, or anonymous) with the requested scopes
    /// cut down to what it holds.
    pub async fn issue(&self, caller: &Caller, requested: &[Scope]) -> Result<IssuedToken, AuthError> {
        let tid = match &caller.via {
            Via::ApiToken(id) => Some(id.to_string()),
            // With access control off every token is as good as none; with it on, a JWT without `tid` is anonymous
            // or refused.
            Via::Anonymous | Via::Open => None,
            // A JWT cannot be exchanged for another.
            Via::Jwt { .. } => return Err(AuthError::InvalidCredentials),
        };
        let granted = self.grant(caller, requested).await?;
        let now = Utc::now();
        let claims = Claims {
            iss: ISSUER.to_owned(),
            sub: caller.identity.name(),
            aud: self.inner.service.clone(),
            exp: now.timestamp() + LIFETIME_SECS,
            nbf: now.timestamp() - 1,
            iat: now.timestamp(),
            jti: hex::encode(tokens::random_bytes::<16>()),
            access: granted.iter().map(Scope::to_access).collect(),
            tid,
        };
        let token = self.inner.keys.sign(&claims).await?;
        Ok(IssuedToken { token, expires_in: LIFETIME_SECS, issued_at: now, claims })
    }
}
