//! The administration operations of [`AuthService`]: namespaces (with their default service accounts and
//! bindings), users, service accounts, API tokens and role bindings, each with its own permission check, and the
//! first-start bootstrap of the administrator's token. The admin API of the registry's HTTP edge and the CLI's
//! bootstrap call these; they call only the metadata store.

use std::path::Path;

use chrono::{Duration, Utc};
use names::Namespace;
use storage_backends::meta::encode;
use storage_backends::{keys, Expect, MetadataStoreExt, StoreError, Txn};

use crate::identity::WhoAmI;
use crate::ids::{GroupName, ServiceAccountName, Subject, TokenId, UserName};
use crate::model::{NamespaceRecord, RoleBinding, ServiceAccount, TokenInfo, TokenRecord, User};
use crate::roles::{Resource, Role, Verb};
use crate::service::{AuthError, AuthMode, AuthService, Bootstrap, Caller, Via, ADMIN_TOKEN_FILE, CAS_RETRIES};
use crate::tokens;

impl AuthService {
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

    /// Refuses unless the caller is a cluster administrator: for cluster-wide settings (read-only mode). The test
    /// is cluster-wide `create users`, which only `cluster-admin` holds.
    pub async fn require_cluster_admin(&self, caller: &Caller) -> Result<(), AuthError> {
        self.require(caller, Verb::Create, Resource::Users, None).await
    }

    /// Refuses unless the caller may read `/metrics` (`get metrics`, cluster-wide: `cluster-admin`).
    pub async fn require_metrics_reader(&self, caller: &Caller) -> Result<(), AuthError> {
        self.require(caller, Verb::Get, Resource::Metrics, None).await
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
