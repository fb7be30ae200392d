//! The access-control model end to end over a real (embedded) metadata store: bootstrap, namespaces and their
//! defaults, tokens (revocation, expiry), bindings, registry decisions and the token endpoint's grants.

use std::sync::Arc;

use ::names::{Namespace, RepositoryName};
use chrono::Duration;
use storage_backends::{MetadataStore, RedbStore};

use crate::*;

struct World {
    auth: AuthService,
    admin: Caller,
    dir: tempfile::TempDir,
}

fn ns(s: &str) -> Namespace {
    s.parse().unwrap()
}

fn repo(s: &str) -> RepositoryName {
    s.parse().unwrap()
}

async fn world() -> World {
    let dir = tempfile::tempdir().unwrap();
    let meta: Arc<dyn MetadataStore> = Arc::new(RedbStore::open(&dir.path().join("m.redb")).unwrap());
    let auth = AuthService::new(meta, AuthMode::Token);
    let b = auth.bootstrap(Some("root-secret"), Some(dir.path())).await.unwrap();
    assert_eq!(b, Bootstrap::Configured);
    let admin = auth.authenticate(&Credentials::Bearer("root-secret".into())).await.unwrap();
    World { auth, admin, dir }
}

impl World {
    async fn login(&self, secret: &str) -> Caller {
        self.auth.authenticate(&Credentials::Basic { password: secret.into() }).await.unwrap()
    }
    async fn user(&self, name: &str) -> (Caller, String) {
        self.auth.create_user(&self.admin, &name.parse().unwrap(), vec![]).await.unwrap();
        let (_, secret) = self
            .auth
            .create_token(&self.admin, &Subject::User { name: name.parse().unwrap() }, None, None)
            .await
            .unwrap();
        (self.login(&secret).await, secret)
    }
    async fn sa_token(&self, ns_name: &str, sa: &str) -> Caller {
        let owner = Subject::ServiceAccount { namespace: ns(ns_name), name: sa.parse().unwrap() };
        let (_, secret) = self.auth.create_token(&self.admin, &owner, None, None).await.unwrap();
        self.login(&secret).await
    }
    async fn verdict(&self, caller: &Caller, need: Need) -> Verdict {
        self.auth.check(caller, &need).await.unwrap()
    }
}

#[tokio::test]
async fn bootstrap_generates_once_and_env_replaces() {
    let dir = tempfile::tempdir().unwrap();
    let meta: Arc<dyn MetadataStore> = Arc::new(RedbStore::open(&dir.path().join("m.redb")).unwrap());
    let auth = AuthService::new(meta, AuthMode::Token);
    let Bootstrap::Generated { token, path: Some(path) } = auth.bootstrap(None, Some(dir.path())).await.unwrap() else {
        panic!("first start generates a token and saves it")
    };
    assert_eq!(std::fs::read_to_string(&path).unwrap().trim(), token);
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
    }
    assert_eq!(auth.bootstrap(None, Some(dir.path())).await.unwrap(), Bootstrap::Existing);
    // Another replica on the same store, without a directory of its own: the token exists, nothing is made.
    assert_eq!(auth.bootstrap(None, None).await.unwrap(), Bootstrap::Existing);
    let admin = auth.authenticate(&Credentials::Bearer(token.clone())).await.unwrap();
    assert_eq!(admin.identity.name(), "admin");
    // A configured token replaces the generated one, which stops working.
    assert_eq!(auth.bootstrap(Some("configured"), Some(dir.path())).await.unwrap(), Bootstrap::Configured);
    assert!(matches!(auth.authenticate(&Credentials::Bearer(token)).await, Err(AuthError::InvalidCredentials)));
    let configured = auth.authenticate(&Credentials::Basic { password: "configured".into() }).await.unwrap();
    // Rotating the configured token ends the JWTs obtained with the old one.
    let jwt = auth.issue(&configured, &[]).await.unwrap().token;
    assert!(auth.authenticate(&Credentials::Bearer(jwt.clone())).await.is_ok());
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    assert_eq!(auth.bootstrap(Some("rotated"), Some(dir.path())).await.unwrap(), Bootstrap::Configured);
    assert!(matches!(auth.authenticate(&Credentials::Bearer(jwt)).await, Err(AuthError::InvalidCredentials)));
}

#[tokio::test]
async fn without_a_directory_the_generated_token_is_only_shown() {
    let dir = tempfile::tempdir().unwrap();
    let meta: Arc<dyn MetadataStore> = Arc::new(RedbStore::open(&dir.path().join("m.redb")).unwrap());
    let auth = AuthService::new(meta, AuthMode::Token);
    let Bootstrap::Generated { token, path: None } = auth.bootstrap(None, None).await.unwrap() else {
        panic!("a token is generated and not saved")
    };
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1, "only the store's own file");
    let admin = auth.authenticate(&Credentials::Bearer(token)).await.unwrap();
    assert_eq!(admin.identity.name(), "admin");
}

#[tokio::test]
async fn namespaces_must_exist_and_get_defaults() {
    let w = world().await;
    let (alice, _) = w.user("alice").await;
    // Pushing into a namespace that does not exist is denied, even to a cluster administrator.
    assert_eq!(w.verdict(&w.admin, Need::Push(repo("team/app"))).await, Verdict::Denied);
    assert_eq!(w.verdict(&alice, Need::Push(repo("team/app"))).await, Verdict::Denied);
    // Any user may create a project and becomes its admin.
    w.auth.create_namespace(&alice, &ns("team")).await.unwrap();
    assert!(matches!(w.auth.create_namespace(&w.admin, &ns("team")).await, Err(AuthError::AlreadyExists(_))));
    assert_eq!(w.verdict(&alice, Need::Push(repo("team/app"))).await, Verdict::Allow);
    assert!(w.auth.may_create_stream(&alice, &repo("team/app")).await.unwrap());
    assert_eq!(w.verdict(&w.admin, Need::Push(repo("team/app"))).await, Verdict::Allow);
    // default and builder exist: every SA may pull, builder may push and create streams.
    let default = w.sa_token("team", "default").await;
    let builder = w.sa_token("team", "builder").await;
    assert_eq!(w.verdict(&default, Need::Pull(repo("team/app"))).await, Verdict::Allow);
    assert_eq!(w.verdict(&default, Need::Push(repo("team/app"))).await, Verdict::Denied);
    assert_eq!(w.verdict(&builder, Need::Push(repo("team/app"))).await, Verdict::Allow);
    assert!(w.auth.may_create_stream(&builder, &repo("team/app")).await.unwrap());
    assert!(!w.auth.may_create_stream(&default, &repo("team/app")).await.unwrap());
    // Service accounts may not create projects; anonymous neither.
    assert!(matches!(w.auth.create_namespace(&builder, &ns("other")).await, Err(AuthError::Forbidden)));
    assert!(matches!(
        w.auth.create_namespace(&Caller::anonymous(), &ns("other")).await,
        Err(AuthError::Unauthenticated)
    ));
    let names: Vec<String> =
        w.auth.list_namespaces(&alice).await.unwrap().into_iter().map(|n| n.name.to_string()).collect();
    assert_eq!(names, ["team"]);
}

#[tokio::test]
async fn roles_and_cross_namespace_access() {
    let w = world().await;
    for n in ["project-a", "project-b"] {
        w.auth.create_namespace(&w.admin, &ns(n)).await.unwrap();
    }
    let a_default = w.sa_token("project-a", "default").await;
    let b_app = repo("project-b/app");
    assert_eq!(w.verdict(&a_default, Need::Pull(b_app.clone())).await, Verdict::Denied);
    let subject = Subject::user_or_service_account("system:serviceaccount:project-a:default").unwrap();
    assert!(w.auth.add_role(&w.admin, &ns("project-b"), Role::ImagePuller, &subject).await.unwrap());
    assert!(!w.auth.add_role(&w.admin, &ns("project-b"), Role::ImagePuller, &subject).await.unwrap());
    assert_eq!(w.verdict(&a_default, Need::Pull(b_app.clone())).await, Verdict::Allow);
    assert_eq!(w.verdict(&a_default, Need::Push(b_app.clone())).await, Verdict::Denied);
    assert!(w.auth.remove_role(&w.admin, &ns("project-b"), Role::ImagePuller, &subject).await.unwrap());
    assert_eq!(w.verdict(&a_default, Need::Pull(b_app.clone())).await, Verdict::Denied);
    // Group binding: every service account of project-a.
    let group = Subject::Group { name: GroupName::service_accounts_of(&ns("project-a")) };
    w.auth.add_role(&w.admin, &ns("project-b"), Role::ImagePuller, &group).await.unwrap();
    assert_eq!(w.verdict(&a_default, Need::Pull(b_app.clone())).await, Verdict::Allow);
    // Pusher: may push, may not create streams, may not delete.
    let (bob, _) = w.user("bob").await;
    let bob_subject = Subject::User { name: "bob".parse().unwrap() };
    w.auth.add_role(&w.admin, &ns("project-b"), Role::ImagePusher, &bob_subject).await.unwrap();
    assert_eq!(w.verdict(&bob, Need::Push(b_app.clone())).await, Verdict::Allow);
    assert!(!w.auth.may_create_stream(&bob, &b_app).await.unwrap());
    assert_eq!(w.verdict(&bob, Need::Delete(b_app.clone())).await, Verdict::Denied);
    // bob is no admin of project-b: he cannot bind roles there.
    assert!(matches!(
        w.auth.add_role(&bob, &ns("project-b"), Role::Admin, &bob_subject).await,
        Err(AuthError::Forbidden)
    ));
    // Anonymous: only where system:unauthenticated is bound.
    let anon = Caller::anonymous();
    assert_eq!(w.verdict(&anon, Need::Pull(b_app.clone())).await, Verdict::Unauthenticated);
    let unauth = Subject::Group { name: GroupName::unauthenticated() };
    w.auth.add_role(&w.admin, &ns("project-b"), Role::ImagePuller, &unauth).await.unwrap();
    assert_eq!(w.verdict(&anon, Need::Pull(b_app.clone())).await, Verdict::Allow);
    assert_eq!(w.verdict(&anon, Need::Push(b_app)).await, Verdict::Unauthenticated);
    assert_eq!(w.verdict(&anon, Need::Pull(repo("project-a/app"))).await, Verdict::Unauthenticated);
    assert_eq!(w.verdict(&anon, Need::Login).await, Verdict::Unauthenticated);
    // The catalog filter.
    let pullable = w
        .auth
        .pullable(&anon, vec![repo("project-a/x"), repo("project-b/x"), repo("project-b/y"), repo("zzz/q")])
        .await
        .unwrap();
    assert_eq!(pullable, vec![repo("project-b/x"), repo("project-b/y")]);
}

#[tokio::test]
async fn tokens_expire_and_revoke_at_once() {
    let w = world().await;
    w.auth.create_namespace(&w.admin, &ns("team")).await.unwrap();
    let (alice, alice_secret) = w.user("alice").await;
    let alice_subject = Subject::User { name: "alice".parse().unwrap() };
    // A user mints its own tokens, not someone else's.
    let (info, secret) = w.auth.create_token(&alice, &alice_subject, None, Some("ci".into())).await.unwrap();
    assert!(matches!(
        w.auth.create_token(&alice, &Subject::User { name: "admin".parse().unwrap() }, None, None).await,
        Err(AuthError::Forbidden)
    ));
    let listed = w.auth.list_tokens(&alice).await.unwrap();
    assert_eq!(listed.len(), 2);
    assert!(listed.iter().all(|t| t.owner == alice_subject));
    assert!(w.auth.list_tokens(&w.admin).await.unwrap().len() >= 3);
    let json = serde_json::to_string(&listed).unwrap();
    assert!(!json.contains(&secret) && !json.contains(&alice_secret) && !json.contains("sha256"), "{json}");
    // A JWT obtained with the token dies with it.
    let caller = w.login(&secret).await;
    let jwt = w.auth.issue(&caller, &[]).await.unwrap();
    assert!(w.auth.authenticate(&Credentials::Bearer(jwt.token.clone())).await.is_ok());
    w.auth.delete_token(&alice, &info.id).await.unwrap();
    for creds in [Credentials::Basic { password: secret.clone() }, Credentials::Bearer(jwt.token)] {
        assert!(matches!(w.auth.authenticate(&creds).await, Err(AuthError::InvalidCredentials)));
    }
    // Someone else's token looks like no token at all.
    let (bob, _) = w.user("bob").await;
    let alice_tokens = w.auth.list_tokens(&alice).await.unwrap();
    assert!(matches!(w.auth.delete_token(&bob, &alice_tokens[0].id).await, Err(AuthError::NotFound(_))));
    // Expiry.
    let (_, short) =
        w.auth.create_token(&w.admin, &alice_subject, Some(Duration::milliseconds(300)), None).await.unwrap();
    assert!(w.auth.authenticate(&Credentials::Bearer(short.clone())).await.is_ok());
    tokio::time::sleep(std::time::Duration::from_millis(400)).await;
    assert!(matches!(w.auth.authenticate(&Credentials::Bearer(short)).await, Err(AuthError::InvalidCredentials)));
    assert!(w.auth.create_token(&w.admin, &alice_subject, Some(Duration::seconds(-1)), None).await.is_err());
    // Unknown secrets and garbage headers.
    for bad in ["nope", "trb_nope", "a.b.c"] {
        assert!(w.auth.authenticate(&Credentials::Bearer(bad.into())).await.is_err(), "{bad}");
    }
    assert!(Credentials::from_header(Some("Basic !!!")).is_err());
    assert!(Credentials::from_header(Some("Digest x")).is_err());
    assert_eq!(
        Credentials::from_header(Some("Basic eDpzZWNyZXQ=")).unwrap(),
        Credentials::Basic { password: "secret".into() }
    );
    // Namespace admins mint tokens for their service accounts.
    let team_sa = Subject::ServiceAccount { namespace: ns("team"), name: "builder".parse().unwrap() };
    assert!(matches!(w.auth.create_token(&alice, &team_sa, None, None).await, Err(AuthError::Forbidden)));
    w.auth.add_role(&w.admin, &ns("team"), Role::Admin, &alice_subject).await.unwrap();
    assert!(w.auth.create_token(&alice, &team_sa, None, None).await.is_ok());
    let _ = &w.dir;
}

#[tokio::test]
async fn grants_are_cut_to_what_the_caller_holds() {
    let w = world().await;
    w.auth.create_namespace(&w.admin, &ns("team")).await.unwrap();
    let default = w.sa_token("team", "default").await;
    let requested =
        Scope::parse_all(["repository:team/app:pull,push,delete repository:other/app:pull registry:catalog:*"]);
    let issued = w.auth.issue(&default, &requested).await.unwrap();
    let access: Vec<String> =
        issued.claims.access.iter().map(|a| format!("{}:{}:{}", a.kind, a.name, a.actions.join(","))).collect();
    assert_eq!(access, ["repository:team/app:pull", "registry:catalog:*"]);
    assert_eq!(issued.claims.sub, "system:serviceaccount:team:default");
    // The JWT carries exactly that: pull allowed, push refused for lack of rights.
    let caller = w.auth.authenticate(&Credentials::Bearer(issued.token)).await.unwrap();
    assert_eq!(w.verdict(&caller, Need::Pull(repo("team/app"))).await, Verdict::Allow);
    assert_eq!(w.verdict(&caller, Need::Push(repo("team/app"))).await, Verdict::Denied);
    assert_eq!(w.verdict(&caller, Need::Catalog).await, Verdict::Allow);
    // The builder may push, but its pull-only JWT does not say so: ask for a wider token.
    let builder = w.sa_token("team", "builder").await;
    let pull_only = w.auth.issue(&builder, &Scope::parse_all(["repository:team/app:pull"])).await.unwrap();
    let caller = w.auth.authenticate(&Credentials::Bearer(pull_only.token)).await.unwrap();
    assert_eq!(w.verdict(&caller, Need::Push(repo("team/app"))).await, Verdict::InsufficientScope);
    assert_eq!(w.verdict(&caller, Need::Pull(repo("team/other"))).await, Verdict::InsufficientScope);
    // Anonymous tokens hold nothing unless system:unauthenticated is bound.
    let anon = w.auth.issue(&Caller::anonymous(), &Scope::parse_all(["repository:team/app:pull"])).await.unwrap();
    assert!(anon.claims.access.is_empty());
    assert_eq!(anon.claims.sub, "system:anonymous");
    let caller = w.auth.authenticate(&Credentials::Bearer(anon.token)).await.unwrap();
    assert_eq!(caller.identity, Identity::Anonymous);
    assert_eq!(w.verdict(&caller, Need::Pull(repo("team/app"))).await, Verdict::Unauthenticated);
    assert_eq!(w.verdict(&caller, Need::Login).await, Verdict::Allow);
}

#[tokio::test]
async fn open_mode_allows_everything() {
    let dir = tempfile::tempdir().unwrap();
    let meta: Arc<dyn MetadataStore> = Arc::new(RedbStore::open(&dir.path().join("m.redb")).unwrap());
    let auth = AuthService::new(meta, AuthMode::None);
    assert_eq!(auth.bootstrap(None, Some(dir.path())).await.unwrap(), Bootstrap::Disabled);
    assert!(!dir.path().join(ADMIN_TOKEN_FILE).exists());
    let caller = auth.authenticate(&Credentials::None).await.unwrap();
    assert_eq!(auth.check(&caller, &Need::Push(repo("nowhere/app"))).await.unwrap(), Verdict::Allow);
    assert!(auth.may_create_stream(&caller, &repo("nowhere/app")).await.unwrap());
    let caller = auth.authenticate(&Credentials::Bearer("garbage".into())).await.unwrap();
    assert_eq!(caller.via, Via::Open);
}
