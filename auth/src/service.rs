//! [`AuthService`]: authentication (API tokens, registry JWTs, anonymous), authorization decisions against the
//! stored role bindings, the token endpoint's grants, the administration operations (namespaces, users, service
//! accounts, tokens, role bindings) with their own permission checks, and the first-start bootstrap.
//!
//! The registry's HTTP edge calls this with typed values; this module calls only the metadata store.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use base64::Engine;
use chrono::{DateTime, Duration, Utc};
use names::{Namespace, RepositoryName};
use serde::de::DeserializeOwned;
use storage_backends::meta::encode;
use storage_backends::{keys, Expect, MetadataStore, MetadataStoreExt, StoreError, Txn};

use crate::cache::RecordCache;
use crate::identity::{Identity, WhoAmI, ANONYMOUS};
use crate::ids::{GroupName, ServiceAccountName, Subject, TokenId, UserName};
use crate::jwt::{Claims, KeyRing, ISSUER, LIFETIME_SECS};
use crate::model::{NamespaceRecord, RoleBinding, ServiceAccount, TokenInfo, TokenRecord, User};
use crate::roles::{Resource, Role, Verb};
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

const CAS_RETRIES: usize = 8;

struct Inner {
    meta: Arc<dyn MetadataStore>,
    /// What the request path reads (tokens, identities, namespaces, bindings), kept by the change feed.
    cache: RecordCache,
    mode: AuthMode,
    service: String,
    keys: KeyRing,
}

/// Access control over a metadata store. Cheap to clone.
#[derive(Clone)]
pub struct AuthService {
    inner: Arc<Inner>,
}

fn is_read(verb: Verb) -> bool {
    matches!(verb, Verb::Get | Verb::List | Verb::Watch)
}

impl AuthService {
    pub fn new(meta: Arc<dyn MetadataStore>, mode: AuthMode) -> AuthService {
        let keys = KeyRing::new(meta.clone());
        let cache = RecordCache::new(meta.as_ref());
        AuthService { inner: Arc::new(Inner { meta, cache, mode, service: DEFAULT_SERVICE.to_owned(), keys }) }
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

    fn meta(&self) -> &dyn MetadataStore {
        self.inner.meta.as_ref()
    }

    async fn list_all<T: DeserializeOwned + Send>(&self, prefix: &str) -> Result<Vec<T>, StoreError> {
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

    async fn by_jwt(&self, token: &str) -> Result<Caller, AuthError> {
        let claims = match self.inner.keys.verify(token, &self.inner.service).await {
            Ok(c) => c,
            Err(crate::jwt::JwtError::Store(e)) => return Err(e.into()),
            Err(e) => {
                tracing::debug!(error = %e, "registry token refused");
                return Err(AuthError::InvalidCredentials);
            }
        };
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
                let identity = self.identity_of(&rec.info.owner).await?.ok_or(AuthError::InvalidCredentials)?;
                if identity.name() != claims.sub {
                    return Err(AuthError::InvalidCredentials);
                }
                identity
            }
        };
        Ok(Caller { identity, via: Via::Jwt { access: claims.access } })
    }

    /// The identity of a stored user or service account (whose namespace exists); `None` when gone.
    async fn identity_of(&self, subject: &Subject) -> Result<Option<Identity>, StoreError> {
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

    async fn namespace_exists(&self, ns: &Namespace) -> Result<bool, StoreError> {
        let cache = &self.inner.cache;
        Ok(cache.get::<serde::de::IgnoredAny>(self.meta(), &keys::namespace(ns)).await?.is_some())
    }

    async fn cluster_allows(&self, identity: &Identity, verb: Verb, resource: Resource) -> Result<bool, StoreError> {
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

    // ----------------------------------------------------------------------------------------------------------
    // Administration

    /// Refuses unless the caller may `verb` `resource` (in `ns`). Registry JWTs are scoped to repositories and do
    /// not administer anything.
    async fn require(
        &self,
        caller: &Caller,
        verb: Verb,
        resource: Resource,
        ns: Option<&Namespace>,
    ) -> Result<(), AuthError> {
        match caller.via {
            Via::Open => return Ok(()),
            Via::Jwt { .. } => return Err(AuthError::Forbidden),
            Via::Anonymous | Via::ApiToken(_) => {}
        }
        if self.allowed(&caller.identity, verb, resource, ns).await? {
            return Ok(());
        }
        if caller.identity.is_anonymous() {
            return Err(AuthError::Unauthenticated);
        }
        // A cluster administrator learns that a namespace is missing; anyone else just gets no.
        if let Some(ns) = ns {
            if !self.namespace_exists(ns).await?
                && self.cluster_allows(&caller.identity, Verb::Get, Resource::Namespaces).await?
            {
                return Err(AuthError::NotFound(format!("namespace {ns}")));
            }
        }
        Err(AuthError::Forbidden)
    }

    pub fn whoami(&self, caller: &Caller) -> WhoAmI {
        caller.identity.describe()
    }

    /// Creates a namespace with its `default` and `builder` service accounts and the default bindings: every
    /// service account of the namespace may pull, `builder` may push (and create streams), the creator is admin.
    pub async fn create_namespace(&self, caller: &Caller, ns: &Namespace) -> Result<NamespaceRecord, AuthError> {
        self.require(caller, Verb::Create, Resource::Namespaces, None).await?;
        let now = Utc::now();
        let creator = caller.identity.subject();
        let record = NamespaceRecord { name: ns.clone(), created: now, creator: creator.clone() };
        let key = keys::namespace(ns);
        let mut txn = Txn::new().expect(key.clone(), Expect::Absent).put(key, encode(&record));
        for sa in [ServiceAccountName::default_account(), ServiceAccountName::builder()] {
            let rec = ServiceAccount { namespace: ns.clone(), name: sa.clone(), created: now };
            txn = txn.put(keys::service_account(ns, sa.as_str()), encode(&rec));
        }
        let mut bindings = vec![
            (Role::ImagePuller, Subject::Group { name: GroupName::service_accounts_of(ns) }),
            (
                Role::ImageBuilder,
                Subject::ServiceAccount { namespace: ns.clone(), name: ServiceAccountName::builder() },
            ),
        ];
        if let Some(creator) = creator {
            bindings.push((Role::Admin, creator));
        }
        for (role, subject) in bindings {
            let b = RoleBinding { namespace: Some(ns.clone()), role, subjects: vec![subject] };
            txn = txn.put(keys::role_binding(ns, role.name()), encode(&b));
        }
        match self.meta().commit(txn).await {
            Ok(_) => Ok(record),
            Err(StoreError::Conflict { .. }) => Err(AuthError::AlreadyExists(format!("namespace {ns}"))),
            Err(e) => Err(e.into()),
        }
    }

    /// The namespaces the caller can see (all, for cluster readers).
    pub async fn list_namespaces(&self, caller: &Caller) -> Result<Vec<NamespaceRecord>, AuthError> {
        if matches!(caller.via, Via::Jwt { .. }) {
            return Err(AuthError::Forbidden);
        }
        if caller.identity.is_anonymous() && caller.via != Via::Open {
            return Err(AuthError::Unauthenticated);
        }
        let all = self.list_all::<NamespaceRecord>(keys::NAMESPACES).await?;
        let mut out = Vec::new();
        for ns in all {
            if self.allowed(&caller.identity, Verb::Get, Resource::Namespaces, Some(&ns.name)).await? {
                out.push(ns);
            }
        }
        Ok(out)
    }

    /// Creates a user (cluster administrators only).
    pub async fn create_user(
        &self,
        caller: &Caller,
        name: &UserName,
        groups: Vec<GroupName>,
    ) -> Result<User, AuthError> {
        self.require(caller, Verb::Create, Resource::Users, None).await?;
        if let Some(g) = groups.iter().find(|g| g.as_str().starts_with("system:")) {
            return Err(AuthError::Invalid(format!("group {g} is virtual; users cannot be added to it")));
        }
        let user = User { name: name.clone(), groups, created: Utc::now() };
        let key = keys::user(name.as_str());
        match self.meta().commit(Txn::new().expect(key.clone(), Expect::Absent).put(key, encode(&user))).await {
            Ok(_) => Ok(user),
            Err(StoreError::Conflict { .. }) => Err(AuthError::AlreadyExists(format!("user {name}"))),
            Err(e) => Err(e.into()),
        }
    }

    pub async fn list_users(&self, caller: &Caller) -> Result<Vec<User>, AuthError> {
        self.require(caller, Verb::List, Resource::Users, None).await?;
        Ok(self.list_all::<User>(keys::USERS).await?)
    }

    pub async fn create_service_account(
        &self,
        caller: &Caller,
        ns: &Namespace,
        name: &ServiceAccountName,
    ) -> Result<ServiceAccount, AuthError> {
        self.require(caller, Verb::Create, Resource::ServiceAccounts, Some(ns)).await?;
        if !self.namespace_exists(ns).await? {
            return Err(AuthError::NotFound(format!("namespace {ns}")));
        }
        let sa = ServiceAccount { namespace: ns.clone(), name: name.clone(), created: Utc::now() };
        let key = keys::service_account(ns, name.as_str());
        match self.meta().commit(Txn::new().expect(key.clone(), Expect::Absent).put(key, encode(&sa))).await {
            Ok(_) => Ok(sa),
            Err(StoreError::Conflict { .. }) => Err(AuthError::AlreadyExists(format!("service account {ns}/{name}"))),
            Err(e) => Err(e.into()),
        }
    }

    pub async fn list_service_accounts(
        &self,
        caller: &Caller,
        ns: &Namespace,
    ) -> Result<Vec<ServiceAccount>, AuthError> {
        self.require(caller, Verb::List, Resource::ServiceAccounts, Some(ns)).await?;
        Ok(self.list_all::<ServiceAccount>(&keys::service_accounts_in(ns)).await?)
    }

    /// Whether the caller may see and revoke tokens of `owner`: its own, a service account's of a namespace it
    /// administers, anyone's for cluster administrators.
    async fn may_manage_tokens_of(&self, caller: &Caller, owner: &Subject) -> Result<bool, StoreError> {
        match caller.via {
            Via::Open => return Ok(true),
            Via::Jwt { .. } | Via::Anonymous => return Ok(false),
            Via::ApiToken(_) => {}
        }
        if caller.identity.subject().as_ref() == Some(owner) {
            return Ok(true);
        }
        match owner {
            Subject::ServiceAccount { namespace, .. } => {
                self.allowed(&caller.identity, Verb::Update, Resource::ServiceAccounts, Some(namespace)).await
            }
            Subject::User { .. } | Subject::Group { .. } => {
                self.allowed(&caller.identity, Verb::Update, Resource::Users, None).await
            }
        }
    }

    /// Mints an API token for a user or service account. Returns its info and the secret (shown only now).
    pub async fn create_token(
        &self,
        caller: &Caller,
        owner: &Subject,
        ttl: Option<Duration>,
        description: Option<String>,
    ) -> Result<(TokenInfo, String), AuthError> {
        if matches!(owner, Subject::Group { .. }) {
            return Err(AuthError::Invalid("tokens belong to a user or a service account, not a group".into()));
        }
        if caller.identity.is_anonymous() && caller.via != Via::Open {
            return Err(AuthError::Unauthenticated);
        }
        if !self.may_manage_tokens_of(caller, owner).await? {
            return Err(AuthError::Forbidden);
        }
        if self.identity_of(owner).await?.is_none() {
            return Err(AuthError::NotFound(owner.to_string()));
        }
        if ttl.is_some_and(|t| t <= Duration::zero()) {
            return Err(AuthError::Invalid("a token's lifetime must be positive".into()));
        }
        let now = Utc::now();
        let info = TokenInfo {
            id: TokenId::random(),
            owner: owner.clone(),
            created: now,
            expires: ttl.map(|t| now + t),
            description: description.filter(|d| !d.is_empty()),
        };
        let secret = tokens::new_secret();
        self.store_token(&info, &secret, None).await?;
        Ok((info, secret))
    }

    /// Writes a token record and its hash index; replaces the record read at `previous` (its old hash unindexed).
    async fn store_token(
        &self,
        info: &TokenInfo,
        secret: &str,
        previous: Option<(&TokenRecord, u64)>,
    ) -> Result<(), StoreError> {
        let hash = tokens::hash(secret);
        let rec = TokenRecord { info: info.clone(), sha256: hash.clone() };
        let key = keys::token(info.id.as_str());
        let hash_key = keys::token_hash(&hash);
        let mut txn = match previous {
            Some((old, version)) => {
                let t = Txn::new().expect(key.clone(), Expect::Version(version));
                if old.sha256 != hash {
                    t.delete(keys::token_hash(&old.sha256))
                } else {
                    t
                }
            }
            None => Txn::new().expect(key.clone(), Expect::Absent),
        };
        txn = txn.put(key, encode(&rec)).put(hash_key, encode(&info.id));
        self.meta().commit(txn).await?;
        Ok(())
    }

    /// The tokens the caller may see, without their secrets.
    pub async fn list_tokens(&self, caller: &Caller) -> Result<Vec<TokenInfo>, AuthError> {
        if caller.identity.is_anonymous() && caller.via != Via::Open {
            return Err(AuthError::Unauthenticated);
        }
        if matches!(caller.via, Via::Jwt { .. }) {
            return Err(AuthError::Forbidden);
        }
        let mut out = Vec::new();
        for rec in self.list_all::<TokenRecord>(keys::TOKENS).await? {
            if self.may_manage_tokens_of(caller, &rec.info.owner).await? {
                out.push(rec.info);
            }
        }
        Ok(out)
    }

    /// Revokes a token: it stops working at once, and so do the JWTs obtained with it.
    pub async fn delete_token(&self, caller: &Caller, id: &TokenId) -> Result<(), AuthError> {
        if caller.identity.is_anonymous() && caller.via != Via::Open {
            return Err(AuthError::Unauthenticated);
        }
        let key = keys::token(id.as_str());
        let not_found = || AuthError::NotFound(format!("token {id}"));
        let (rec, version) = self.meta().get_json::<TokenRecord>(&key).await?.ok_or_else(not_found)?;
        if !self.may_manage_tokens_of(caller, &rec.info.owner).await? {
            return Err(not_found());
        }
        let txn =
            Txn::new().expect(key.clone(), Expect::Version(version)).delete(key).delete(keys::token_hash(&rec.sha256));
        match self.meta().commit(txn).await {
            Ok(_) | Err(StoreError::Conflict { .. }) => Ok(()),
            Err(e) => Err(e.into()),
        }
    }

    pub async fn list_role_bindings(&self, caller: &Caller, ns: &Namespace) -> Result<Vec<RoleBinding>, AuthError> {
        self.require(caller, Verb::List, Resource::RoleBindings, Some(ns)).await?;
        Ok(self.list_all::<RoleBinding>(&keys::role_bindings_in(ns)).await?)
    }

    /// Binds `role` to `subject` in `ns` (`policy add-role-to-user|group`). Returns whether it was new.
    pub async fn add_role(
        &self,
        caller: &Caller,
        ns: &Namespace,
        role: Role,
        subject: &Subject,
    ) -> Result<bool, AuthError> {
        self.require(caller, Verb::Create, Resource::RoleBindings, Some(ns)).await?;
        if !self.namespace_exists(ns).await? {
            return Err(AuthError::NotFound(format!("namespace {ns}")));
        }
        self.edit_binding(&keys::role_binding(ns, role.name()), Some(ns), role, |subjects| {
            if subjects.contains(subject) {
                false
            } else {
                subjects.push(subject.clone());
                true
            }
        })
        .await
    }

    /// Unbinds `role` from `subject` in `ns`. Returns whether it was bound.
    pub async fn remove_role(
        &self,
        caller: &Caller,
        ns: &Namespace,
        role: Role,
        subject: &Subject,
    ) -> Result<bool, AuthError> {
        self.require(caller, Verb::Delete, Resource::RoleBindings, Some(ns)).await?;
        self.edit_binding(&keys::role_binding(ns, role.name()), Some(ns), role, |subjects| {
            let before = subjects.len();
            subjects.retain(|s| s != subject);
            subjects.len() != before
        })
        .await
    }

    /// Read-modify-write of one binding with compare-and-swap; an emptied binding is deleted.
    async fn edit_binding(
        &self,
        key: &str,
        ns: Option<&Namespace>,
        role: Role,
        mut edit: impl FnMut(&mut Vec<Subject>) -> bool,
    ) -> Result<bool, AuthError> {
        for _ in 0..CAS_RETRIES {
            let current = self.meta().get_json::<RoleBinding>(key).await?;
            let (mut binding, expect) = match current {
                Some((b, v)) => (b, Expect::Version(v)),
                None => (RoleBinding { namespace: ns.cloned(), role, subjects: Vec::new() }, Expect::Absent),
            };
            if !edit(&mut binding.subjects) {
                return Ok(false);
            }
            let txn = Txn::new().expect(key, expect);
            let txn = if binding.subjects.is_empty() { txn.delete(key) } else { txn.put(key, encode(&binding)) };
            match self.meta().commit(txn).await {
                Ok(_) => return Ok(true),
                Err(StoreError::Conflict { .. }) => continue,
                Err(e) => return Err(e.into()),
            }
        }
        Err(StoreError::Backend(format!("too many concurrent updates of {key}")).into())
    }

    // ----------------------------------------------------------------------------------------------------------
    // Bootstrap

    /// Run at every start: makes the signing key, the cluster administrator `admin` and its token. With
    /// `admin_token` given, that secret becomes `admin`'s bootstrap token (replacing an earlier one); without it,
    /// the first start (of the first replica, when several share the store) generates one and writes it to
    /// `<save_in>/admin.token` (mode 0600) when a directory is given.
    pub async fn bootstrap(&self, admin_token: Option<&str>, save_in: Option<&Path>) -> Result<Bootstrap, AuthError> {
        self.inner.keys.ensure().await?;
        if self.inner.mode == AuthMode::None {
            return Ok(Bootstrap::Disabled);
        }
        let admin = UserName::admin();
        let user = User { name: admin.clone(), groups: Vec::new(), created: Utc::now() };
        let key = keys::user(admin.as_str());
        match self.meta().commit(Txn::new().expect(key.clone(), Expect::Absent).put(key, encode(&user))).await {
            Ok(_) | Err(StoreError::Conflict { .. }) => {}
            Err(e) => return Err(e.into()),
        }
        let subject = Subject::User { name: admin };
        self.edit_binding(&keys::cluster_role_binding(Role::ClusterAdmin.name()), None, Role::ClusterAdmin, |s| {
            if s.contains(&subject) {
                false
            } else {
                s.push(subject.clone());
                true
            }
        })
        .await?;
        let id = TokenId::bootstrap();
        let token_key = keys::token(id.as_str());
        let existing = self.meta().get_json::<TokenRecord>(&token_key).await?;
        let info = |created| TokenInfo {
            id: id.clone(),
            owner: subject.clone(),
            created,
            expires: None,
            description: Some("bootstrap administrator token".into()),
        };
        match (admin_token, existing) {
            (Some(""), _) => Err(AuthError::Invalid("the administrator token must not be empty".into())),
            (Some(secret), Some((old, version))) => {
                if !tokens::same_hash(&old.sha256, &tokens::hash(secret)) {
                    self.store_token(&info(Utc::now()), secret, Some((&old, version))).await?;
                }
                Ok(Bootstrap::Configured)
            }
            (Some(secret), None) => {
                self.store_token(&info(Utc::now()), secret, None).await?;
                Ok(Bootstrap::Configured)
            }
            (None, Some(_)) => Ok(Bootstrap::Existing),
            (None, None) => {
                let secret = tokens::new_secret();
                match self.store_token(&info(Utc::now()), &secret, None).await {
                    Ok(()) => {}
                    // Another replica made it first.
                    Err(StoreError::Conflict { .. }) => return Ok(Bootstrap::Existing),
                    Err(e) => return Err(e.into()),
                }
                // The token is stored: whatever happens to the file, it is shown (once) to whoever started us.
                let path = save_in.map(|dir| dir.join(ADMIN_TOKEN_FILE)).and_then(|path| {
                    match write_secret_file(&path, &secret) {
                        Ok(()) => Some(path),
                        Err(e) => {
                            tracing::warn!(file = %path.display(), error = %e, "could not save the administrator token");
                            None
                        }
                    }
                });
                Ok(Bootstrap::Generated { token: secret, path })
            }
        }
    }
}

/// Writes a secret to a file only its owner may read.
fn write_secret_file(path: &Path, secret: &str) -> std::io::Result<()> {
    use std::io::Write;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
        options.mode(0o600);
        let mut f = options.open(path)?;
        f.set_permissions(std::fs::Permissions::from_mode(0o600))?;
        writeln!(f, "{secret}")?;
        f.sync_all()
    }
    #[cfg(not(unix))]
    {
        let mut f = options.open(path)?;
        writeln!(f, "{secret}")?;
        f.sync_all()
    }
}
