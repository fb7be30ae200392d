//! Access control as a client sees it, against a real server with access control on (`TestRegistry` with an
//! admin token): the 401 challenge, the token endpoint, forged JWTs, roles deciding pull/push/create/delete,
//! namespaces isolating each other, anonymous access, the catalog, cross-repository mounts, revocation and
//! expiry, the stream API and the administration API. Every refusal is checked to be a 401/403 with the OCI (or
//! Kubernetes `Status`) body and to name no repository.

use base64::Engine;
use names::Digest;
use registry::testing::TestRegistry;
use reqwest::{Client, Method, RequestBuilder, Response, StatusCode};
use serde_json::{json, Value};

const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
const ADMIN: &str = "admin-secret-for-tests";
const APIS: &str = "/apis/tributary.dev/v1";

fn b64url(bytes: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

fn b64url_decode(s: &str) -> Vec<u8> {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(s).unwrap()
}

/// How a request authenticates.
#[derive(Clone, Copy)]
enum As<'a> {
    Nobody,
    /// Basic, any user, the API token as password.
    Token(&'a str),
    /// `Authorization: Bearer <jwt or API token>`.
    Bearer(&'a str),
}

struct T {
    reg: TestRegistry,
    http: Client,
}

impl T {
    fn start() -> T {
        T { reg: TestRegistry::builder().with_admin_token(ADMIN).start(), http: Client::new() }
    }

    fn req(&self, method: Method, path: &str, who: As<'_>) -> RequestBuilder {
        let r = self.http.request(method, format!("{}{path}", self.reg.url()));
        match who {
            As::Nobody => r,
            As::Token(t) => r.basic_auth("anyone", Some(t)),
            As::Bearer(t) => r.bearer_auth(t),
        }
    }

    async fn send(&self, method: Method, path: &str, who: As<'_>) -> Response {
        self.req(method, path, who).send().await.unwrap()
    }

    async fn api(&self, method: Method, path: &str, who: As<'_>, body: Value) -> Response {
        self.req(method, &format!("{APIS}{path}"), who).json(&body).send().await.unwrap()
    }

    async fn api_ok(&self, method: Method, path: &str, body: Value) -> Value {
        let r = self.api(method, path, As::Token(ADMIN), body).await;
        assert!(r.status().is_success(), "{path}: {}", r.status());
        r.json().await.unwrap()
    }

    async fn new_project(&self, ns: &str) {
        self.api_ok(Method::POST, "/namespaces", json!({"name": ns})).await;
    }

    /// Makes a user and returns a token for it.
    async fn user(&self, name: &str) -> String {
        self.api_ok(Method::POST, "/users", json!({"name": name})).await;
        self.token_for(json!({"kind":"User","name":name}), None).await
    }

    async fn token_for(&self, owner: Value, expires: Option<i64>) -> String {
        let out = self.api_ok(Method::POST, "/tokens", json!({"owner": owner, "expiresInSeconds": expires})).await;
        out["token"].as_str().unwrap().to_owned()
    }

    async fn sa_token(&self, ns: &str, sa: &str) -> String {
        self.token_for(json!({"kind":"ServiceAccount","namespace":ns,"name":sa}), None).await
    }

    async fn bind(&self, ns: &str, role: &str, subject: Value) {
        self.api_ok(
            Method::POST,
            &format!("/namespaces/{ns}/rolebindings/add"),
            json!({"role": role, "subject": subject}),
        )
        .await;
    }

    async fn unbind(&self, ns: &str, role: &str, subject: Value) {
        self.api_ok(
            Method::POST,
            &format!("/namespaces/{ns}/rolebindings/remove"),
            json!({"role": role, "subject": subject}),
        )
        .await;
    }

    async fn push_blob(&self, repo: &str, bytes: &[u8], who: As<'_>) -> Response {
        let d = Digest::sha256_of(bytes);
        self.req(Method::POST, &format!("/v2/{repo}/blobs/uploads/?digest={d}"), who)
            .body(bytes.to_vec())
            .send()
            .await
            .unwrap()
    }

    /// Pushes a one-layer image under `tag`; returns the status of the manifest PUT (or of the first refused step).
    async fn push_image(&self, repo: &str, tag: &str, seed: &str, who: As<'_>) -> Response {
        let config = json!({"architecture":"amd64","os":"linux","config":{"Cmd":["echo", seed]}}).to_string();
        for blob in [config.as_bytes(), seed.as_bytes()] {
            let r = self.push_blob(repo, blob, who).await;
            if r.status() != StatusCode::CREATED {
                return r;
            }
        }
        let manifest = json!({"schemaVersion":2,"mediaType":OCI_MANIFEST,
            "config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":Digest::sha256_of(config.as_bytes()),"size":config.len()},
            "layers":[{"mediaType":"application/vnd.oci.image.layer.v1.tar","digest":Digest::sha256_of(seed.as_bytes()),"size":seed.len()}]});
        self.req(Method::PUT, &format!("/v2/{repo}/manifests/{tag}"), who)
            .header("Content-Type", OCI_MANIFEST)
            .body(manifest.to_string())
            .send()
            .await
            .unwrap()
    }

    async fn pull_status(&self, repo: &str, tag: &str, who: As<'_>) -> StatusCode {
        self.send(Method::GET, &format!("/v2/{repo}/manifests/{tag}"), who).await.status()
    }

    /// A registry JWT from the token endpoint.
    async fn jwt(&self, secret: Option<&str>, scopes: &[&str]) -> String {
        let mut q: Vec<(&str, &str)> = vec![("service", "tributary")];
        q.extend(scopes.iter().map(|s| ("scope", *s)));
        let mut r = self.http.get(format!("{}/openshift/token", self.reg.url())).query(&q);
        if let Some(s) = secret {
            r = r.basic_auth("whoever", Some(s));
        }
        let resp = r.send().await.unwrap();
        assert_eq!(resp.status(), StatusCode::OK);
        resp.json::<Value>().await.unwrap()["token"].as_str().unwrap().to_owned()
    }
}

/// A refusal: the status, the OCI error code, and no repository name anywhere in it.
async fn refused(r: Response, status: StatusCode, code: &str, hidden: &[&str]) -> (String, String) {
    assert_eq!(r.status(), status, "{}", r.url());
    let challenge = r.headers().get("www-authenticate").map(|v| v.to_str().unwrap().to_owned()).unwrap_or_default();
    let text = r.text().await.unwrap();
    let body: Value = serde_json::from_str(&text).unwrap_or_else(|_| panic!("not JSON: {text}"));
    assert_eq!(body["errors"][0]["code"], code, "{text}");
    for h in hidden {
        assert!(!text.contains(h), "{h} leaked in {text}");
    }
    (text, challenge)
}

/// A refusal of the stream or administration API: a Kubernetes `Status` that names nothing hidden.
async fn refused_status(r: Response, status: StatusCode, hidden: &[&str]) -> String {
    assert_eq!(r.status(), status, "{}", r.url());
    let text = r.text().await.unwrap();
    let body: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(body["kind"], "Status", "{text}");
    for h in hidden {
        assert!(!text.contains(h), "{h} leaked in {text}");
    }
    text
}

fn user(name: &str) -> Value {
    json!({"kind":"User","name":name})
}

fn group(name: &str) -> Value {
    json!({"kind":"Group","name":name})
}

#[tokio::test]
async fn challenge_and_token_endpoint() {
    let t = T::start();
    t.new_project("team").await;
    let realm = format!("{}/openshift/token", t.reg.url());
    let (_, c) =
        refused(t.send(Method::GET, "/v2/", As::Nobody).await, StatusCode::UNAUTHORIZED, "UNAUTHORIZED", &[]).await;
    assert_eq!(c, format!("Bearer realm=\"{realm}\",service=\"tributary\""));
    let (_, c) = refused(
        t.send(Method::GET, "/v2/team/app/tags/list", As::Nobody).await,
        StatusCode::UNAUTHORIZED,
        "UNAUTHORIZED",
        &[],
    )
    .await;
    assert_eq!(c, format!("Bearer realm=\"{realm}\",service=\"tributary\",scope=\"repository:team/app:pull\""));
    let (_, c) =
        refused(t.push_image("team/app", "v1", "x", As::Nobody).await, StatusCode::UNAUTHORIZED, "UNAUTHORIZED", &[])
            .await;
    assert!(c.ends_with("scope=\"repository:team/app:pull,push\""), "{c}");
    let (_, c) =
        refused(t.send(Method::GET, "/v2/_catalog", As::Nobody).await, StatusCode::UNAUTHORIZED, "UNAUTHORIZED", &[])
            .await;
    assert!(c.ends_with("scope=\"registry:catalog:*\""), "{c}");
    // Wrong credentials are refused, not taken as anonymous.
    let (_, c) =
        refused(t.send(Method::GET, "/v2/", As::Token("wrong")).await, StatusCode::UNAUTHORIZED, "UNAUTHORIZED", &[])
            .await;
    assert!(c.contains("error=\"invalid_token\""), "{c}");
    assert_eq!(t.send(Method::GET, "/v2/", As::Token(ADMIN)).await.status(), StatusCode::OK);
    assert_eq!(t.send(Method::GET, "/v2/", As::Bearer(ADMIN)).await.status(), StatusCode::OK);

    // GET, Docker token spec, on both paths.
    for path in ["/openshift/token", "/v2/token"] {
        let r = t
            .http
            .get(format!(
                "{}{path}?service=tributary&scope=repository:team/app:pull,push&scope=repository:team/other:pull",
                t.reg.url()
            ))
            .basic_auth("anyone", Some(ADMIN))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::OK, "{path}");
        let body: Value = r.json().await.unwrap();
        assert_eq!(body["token"], body["access_token"]);
        assert_eq!(body["expires_in"], 300);
        assert!(body["issued_at"].as_str().unwrap().ends_with('Z'));
        let parts: Vec<&str> = body["token"].as_str().unwrap().split('.').collect();
        let header: Value = serde_json::from_slice(&b64url_decode(parts[0])).unwrap();
        assert_eq!(header["alg"], "ES256");
        assert!(header["kid"].is_string());
        let claims: Value = serde_json::from_slice(&b64url_decode(parts[1])).unwrap();
        assert_eq!(
            (claims["iss"].as_str(), claims["aud"].as_str(), claims["sub"].as_str()),
            (Some("tributary"), Some("tributary"), Some("admin"))
        );
        assert_eq!(
            claims["access"],
            json!([{"type":"repository","name":"team/app","actions":["pull","push"]},
                   {"type":"repository","name":"team/other","actions":["pull"]}])
        );
    }
    // OAuth2 POST (podman, containerd).
    let form = |pairs: &[(&str, &str)]| {
        t.http
            .post(format!("{}/openshift/token", t.reg.url()))
            .form(&pairs.iter().map(|(a, b)| (a.to_string(), b.to_string())).collect::<Vec<_>>())
    };
    let r = form(&[
        ("grant_type", "password"),
        ("username", "x"),
        ("password", ADMIN),
        ("service", "tributary"),
        ("client_id", "podman"),
        ("scope", "repository:team/app:pull registry:catalog:*"),
        ("access_type", "offline"),
    ])
    .send()
    .await
    .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let body: Value = r.json().await.unwrap();
    assert!(body["access_token"].is_string());
    assert_eq!(body["refresh_token"], ADMIN);
    let r = form(&[
        ("grant_type", "refresh_token"),
        ("refresh_token", ADMIN),
        ("service", "tributary"),
        ("client_id", "c"),
    ])
    .send()
    .await
    .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let r = form(&[("grant_type", "password"), ("username", "x"), ("password", "wrong"), ("service", "tributary")])
        .send()
        .await
        .unwrap();
    refused(r, StatusCode::UNAUTHORIZED, "UNAUTHORIZED", &[]).await;
    let r = form(&[("grant_type", "authorization_code"), ("code", "c")]).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    // Bad Basic credentials at the GET endpoint; another service; anonymous tokens hold nothing here.
    let r = t
        .http
        .get(format!("{}/openshift/token?service=tributary", t.reg.url()))
        .basic_auth("x", Some("nope"))
        .send()
        .await
        .unwrap();
    refused(r, StatusCode::UNAUTHORIZED, "UNAUTHORIZED", &[]).await;
    let r = t.http.get(format!("{}/openshift/token?service=elsewhere", t.reg.url())).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    let anon = t.jwt(None, &["repository:team/app:pull"]).await;
    let claims: Value = serde_json::from_slice(&b64url_decode(anon.split('.').nth(1).unwrap())).unwrap();
    assert_eq!((claims["sub"].as_str(), claims["access"].clone()), (Some("system:anonymous"), json!([])));
    assert_eq!(t.send(Method::GET, "/v2/", As::Bearer(&anon)).await.status(), StatusCode::OK);
    refused(
        t.send(Method::GET, "/v2/team/app/tags/list", As::Bearer(&anon)).await,
        StatusCode::UNAUTHORIZED,
        "UNAUTHORIZED",
        &[],
    )
    .await;
}

#[tokio::test]
async fn forged_jwts_are_refused() {
    let t = T::start();
    t.new_project("team").await;
    assert_eq!(t.push_image("team/app", "v1", "forge", As::Token(ADMIN)).await.status(), StatusCode::CREATED);
    let alice = t.user("alice").await;
    t.bind("team", "system:image-puller", user("alice")).await;
    let good = t.jwt(Some(&alice), &["repository:team/app:pull,push"]).await;
    assert_eq!(t.pull_status("team/app", "v1", As::Bearer(&good)).await, StatusCode::OK);
    // The grant was cut to pull: pushing with it is denied.
    refused(t.push_blob("team/app", b"b", As::Bearer(&good)).await, StatusCode::FORBIDDEN, "DENIED", &["team/app"])
        .await;

    let parts: Vec<String> = good.split('.').map(str::to_owned).collect();
    let header: Value = serde_json::from_slice(&b64url_decode(&parts[0])).unwrap();
    let kid = header["kid"].as_str().unwrap().to_owned();
    let claims: Value = serde_json::from_slice(&b64url_decode(&parts[1])).unwrap();
    let keys = t.reg.registry().auth.keys();
    let real_claims = |edit: &dyn Fn(&mut auth::jwt::Claims)| {
        let mut c: auth::jwt::Claims = serde_json::from_value(claims.clone()).unwrap();
        edit(&mut c);
        c
    };
    let mut forged: Vec<(&str, String)> = Vec::new();
    // Signed with another key, under the real kid.
    {
        let rng = ring::rand::SystemRandom::new();
        let doc =
            ring::signature::EcdsaKeyPair::generate_pkcs8(&ring::signature::ECDSA_P256_SHA256_FIXED_SIGNING, &rng)
                .unwrap();
        let mut h = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::ES256);
        h.kid = Some(kid.clone());
        let c = real_claims(&|_| {});
        let tok = jsonwebtoken::encode(&h, &c, &jsonwebtoken::EncodingKey::from_ec_der(doc.as_ref())).unwrap();
        forged.push(("wrong key", tok));
    }
    // alg: none, no signature.
    let none_header = b64url(json!({"alg":"none","typ":"JWT","kid":kid}).to_string().as_bytes());
    forged.push(("alg none", format!("{none_header}.{}.", parts[1])));
    forged.push(("alg none, old signature", format!("{none_header}.{}.{}", parts[1], parts[2])));
    // HS256 keyed with the public key.
    {
        let public = keys.public_key(&kid).await.unwrap().unwrap();
        let mut h = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256);
        h.kid = Some(kid.clone());
        let c = real_claims(&|_| {});
        forged.push((
            "HS256 with the public key",
            jsonwebtoken::encode(&h, &c, &jsonwebtoken::EncodingKey::from_secret(&public)).unwrap(),
        ));
    }
    // The real key, but expired / for another audience / from another issuer.
    let now = chrono::Utc::now().timestamp();
    let expired = real_claims(&|c| {
        c.exp = now - 3600;
        c.iat = now - 4000;
        c.nbf = now - 4000;
    });
    forged.push(("expired", keys.sign(&expired).await.unwrap()));
    forged.push(("wrong audience", keys.sign(&real_claims(&|c| c.aud = "other-registry".into())).await.unwrap()));
    forged.push(("wrong issuer", keys.sign(&real_claims(&|c| c.iss = "someone".into())).await.unwrap()));
    forged.push(("not yet valid", keys.sign(&real_claims(&|c| c.nbf = now + 3600)).await.unwrap()));
    // Scopes widened by editing the payload, signature kept.
    let mut wide = claims.clone();
    wide["access"] = json!([{"type":"repository","name":"team/app","actions":["pull","push","delete"]}]);
    forged.push(("widened scope", format!("{}.{}.{}", parts[0], b64url(wide.to_string().as_bytes()), parts[2])));
    let mut admin = claims.clone();
    admin["sub"] = json!("admin");
    forged.push(("other subject", format!("{}.{}.{}", parts[0], b64url(admin.to_string().as_bytes()), parts[2])));
    forged.push(("truncated", format!("{}.{}", parts[0], parts[1])));

    for (what, token) in &forged {
        for (method, path) in [
            (Method::GET, "/v2/team/app/manifests/v1"),
            (Method::POST, "/v2/team/app/blobs/uploads/"),
            (Method::GET, "/v2/"),
        ] {
            let r = t.send(method.clone(), path, As::Bearer(token)).await;
            let (_, c) = refused(r, StatusCode::UNAUTHORIZED, "UNAUTHORIZED", &[]).await;
            assert!(c.contains("error=\"invalid_token\""), "{what}: {c}");
        }
    }
    // The stream API refuses them too.
    let r = t
        .send(Method::GET, "/apis/image.openshift.io/v1/namespaces/team/imagestreams/app", As::Bearer(&forged[0].1))
        .await;
    refused_status(r, StatusCode::UNAUTHORIZED, &["team/app"]).await;
    // And the untouched token still works.
    assert_eq!(t.pull_status("team/app", "v1", As::Bearer(&good)).await, StatusCode::OK);
}

#[tokio::test]
async fn roles_decide_pull_push_create_delete() {
    let t = T::start();
    t.new_project("team").await;
    assert_eq!(t.push_image("team/app", "v1", "one", As::Token(ADMIN)).await.status(), StatusCode::CREATED);
    let (alice, bob, carol) = (t.user("alice").await, t.user("bob").await, t.user("carol").await);
    t.bind("team", "system:image-puller", user("alice")).await;
    t.bind("team", "system:image-pusher", user("bob")).await;
    let hidden = ["team/app", "team/missing", "nowhere/app"];

    // A puller pulls and cannot push.
    assert_eq!(t.pull_status("team/app", "v1", As::Token(&alice)).await, StatusCode::OK);
    refused(t.push_image("team/app", "v2", "two", As::Token(&alice)).await, StatusCode::FORBIDDEN, "DENIED", &hidden)
        .await;
    // A pusher pushes to the existing stream, but cannot create one.
    assert_eq!(t.push_image("team/app", "v2", "two", As::Token(&bob)).await.status(), StatusCode::CREATED);
    refused(
        t.push_image("team/new", "v1", "three", As::Token(&bob)).await,
        StatusCode::FORBIDDEN,
        "DENIED",
        &["team/new"],
    )
    .await;
    let r = t
        .req(Method::PUT, "/v2/team/new/manifests/v1", As::Token(&bob))
        .header("Content-Type", OCI_MANIFEST)
        .body("{}")
        .send()
        .await
        .unwrap();
    refused(r, StatusCode::FORBIDDEN, "DENIED", &["team/new"]).await;
    // system:image-builder (and the namespace's builder SA) may create.
    let builder = t.sa_token("team", "builder").await;
    assert_eq!(t.push_image("team/built", "v1", "four", As::Token(&builder)).await.status(), StatusCode::CREATED);
    // Deleting needs delete rights: the pusher has none, the admin has.
    let r = t.send(Method::DELETE, "/v2/team/app/manifests/v2", As::Token(&bob)).await;
    refused(r, StatusCode::FORBIDDEN, "DENIED", &hidden).await;
    let r = t.send(Method::DELETE, &format!("/v2/team/app/blobs/{}", Digest::sha256_of(b"two")), As::Token(&bob)).await;
    refused(r, StatusCode::FORBIDDEN, "DENIED", &hidden).await;
    assert_eq!(
        t.send(Method::DELETE, "/v2/team/app/manifests/v2", As::Token(ADMIN)).await.status(),
        StatusCode::ACCEPTED
    );

    // Someone without a role: an existing and a missing repository are refused alike.
    let (a, _) = refused(
        t.send(Method::GET, "/v2/team/app/manifests/v1", As::Token(&carol)).await,
        StatusCode::FORBIDDEN,
        "DENIED",
        &hidden,
    )
    .await;
    let (b, _) = refused(
        t.send(Method::GET, "/v2/team/missing/manifests/v1", As::Token(&carol)).await,
        StatusCode::FORBIDDEN,
        "DENIED",
        &hidden,
    )
    .await;
    let (c, _) = refused(
        t.send(Method::GET, "/v2/nowhere/app/manifests/v1", As::Token(&carol)).await,
        StatusCode::FORBIDDEN,
        "DENIED",
        &hidden,
    )
    .await;
    assert!(a == b && b == c, "{a} / {b} / {c}");
    for path in ["/v2/team/app/tags/list", "/v2/team/missing/tags/list"] {
        refused(t.send(Method::GET, path, As::Token(&carol)).await, StatusCode::FORBIDDEN, "DENIED", &hidden).await;
    }
    let r = t.send(Method::HEAD, &format!("/v2/team/app/blobs/{}", Digest::sha256_of(b"one")), As::Token(&carol)).await;
    assert_eq!(r.status(), StatusCode::FORBIDDEN);

    // Anonymous: 401 alike for existing and missing, until system:unauthenticated is bound.
    let (a, _) = refused(
        t.send(Method::GET, "/v2/team/app/manifests/v1", As::Nobody).await,
        StatusCode::UNAUTHORIZED,
        "UNAUTHORIZED",
        &hidden,
    )
    .await;
    let (b, _) = refused(
        t.send(Method::GET, "/v2/team/missing/manifests/v1", As::Nobody).await,
        StatusCode::UNAUTHORIZED,
        "UNAUTHORIZED",
        &hidden,
    )
    .await;
    assert_eq!(a, b);
    t.bind("team", "system:image-puller", group("system:unauthenticated")).await;
    assert_eq!(t.pull_status("team/app", "v1", As::Nobody).await, StatusCode::OK);
    let anon = t.jwt(None, &["repository:team/app:pull,push"]).await;
    assert_eq!(t.pull_status("team/app", "v1", As::Bearer(&anon)).await, StatusCode::OK);
    refused(
        t.push_image("team/app", "v3", "five", As::Nobody).await,
        StatusCode::UNAUTHORIZED,
        "UNAUTHORIZED",
        &hidden,
    )
    .await;
    refused(
        t.push_image("team/app", "v3", "five", As::Bearer(&anon)).await,
        StatusCode::UNAUTHORIZED,
        "UNAUTHORIZED",
        &hidden,
    )
    .await;
    t.unbind("team", "system:image-puller", group("system:unauthenticated")).await;
    refused(
        t.send(Method::GET, "/v2/team/app/manifests/v1", As::Nobody).await,
        StatusCode::UNAUTHORIZED,
        "UNAUTHORIZED",
        &hidden,
    )
    .await;

    // No pushing into a namespace that does not exist, not even for the cluster administrator.
    refused(t.push_image("nowhere/app", "v1", "six", As::Token(ADMIN)).await, StatusCode::FORBIDDEN, "DENIED", &hidden)
        .await;
}

#[tokio::test]
async fn namespaces_are_isolated_until_a_role_is_bound() {
    let t = T::start();
    for ns in ["project-a", "project-b"] {
        t.new_project(ns).await;
    }
    assert_eq!(t.push_image("project-b/app", "v1", "b", As::Token(ADMIN)).await.status(), StatusCode::CREATED);
    let a_default = t.sa_token("project-a", "default").await;
    let b_default = t.sa_token("project-b", "default").await;
    assert_eq!(t.pull_status("project-b/app", "v1", As::Token(&b_default)).await, StatusCode::OK);
    refused(
        t.send(Method::GET, "/v2/project-b/app/manifests/v1", As::Token(&a_default)).await,
        StatusCode::FORBIDDEN,
        "DENIED",
        &["project-b"],
    )
    .await;
    // oc policy add-role-to-user system:image-puller system:serviceaccount:project-a:default -n project-b
    let sa = json!({"kind":"ServiceAccount","namespace":"project-a","name":"default"});
    t.bind("project-b", "system:image-puller", sa.clone()).await;
    assert_eq!(t.pull_status("project-b/app", "v1", As::Token(&a_default)).await, StatusCode::OK);
    refused(
        t.push_image("project-b/app", "v2", "x", As::Token(&a_default)).await,
        StatusCode::FORBIDDEN,
        "DENIED",
        &["project-b"],
    )
    .await;
    t.unbind("project-b", "system:image-puller", sa).await;
    refused(
        t.send(Method::GET, "/v2/project-b/app/manifests/v1", As::Token(&a_default)).await,
        StatusCode::FORBIDDEN,
        "DENIED",
        &["project-b"],
    )
    .await;
    // oc policy add-role-to-group system:image-puller system:serviceaccounts:project-a -n project-b
    t.bind("project-b", "system:image-puller", group("system:serviceaccounts:project-a")).await;
    assert_eq!(t.pull_status("project-b/app", "v1", As::Token(&a_default)).await, StatusCode::OK);
}

#[tokio::test]
async fn catalog_and_mounts_follow_pull_rights() {
    let t = T::start();
    for ns in ["team", "secret"] {
        t.new_project(ns).await;
    }
    for repo in ["team/app", "team/tool", "secret/app"] {
        assert_eq!(t.push_image(repo, "v1", repo, As::Token(ADMIN)).await.status(), StatusCode::CREATED);
    }
    let alice = t.user("alice").await;
    t.bind("team", "edit", user("alice")).await;
    let t = &t;
    let catalog = |who| async move {
        let r = t.send(Method::GET, "/v2/_catalog", who).await;
        assert_eq!(r.status(), StatusCode::OK);
        r.json::<Value>().await.unwrap()["repositories"].clone()
    };
    assert_eq!(catalog(As::Token(&alice)).await, json!(["team/app", "team/tool"]));
    assert_eq!(catalog(As::Token(ADMIN)).await, json!(["secret/app", "team/app", "team/tool"]));
    let r = t.send(Method::GET, "/v2/_catalog?n=1", As::Token(&alice)).await;
    assert!(r.headers().get("link").is_some());
    assert_eq!(r.json::<Value>().await.unwrap()["repositories"], json!(["team/app"]));
    let jwt = t.jwt(Some(&alice), &["registry:catalog:*"]).await;
    assert_eq!(catalog(As::Bearer(&jwt)).await, json!(["team/app", "team/tool"]));
    let pull_only = t.jwt(Some(&alice), &["repository:team/app:pull"]).await;
    refused(
        t.send(Method::GET, "/v2/_catalog", As::Bearer(&pull_only)).await,
        StatusCode::UNAUTHORIZED,
        "UNAUTHORIZED",
        &["secret"],
    )
    .await;

    // Mounting from a repository alice may not pull is an ordinary upload, and the blob stays unseen.
    let secret_blob = Digest::sha256_of(b"secret/app");
    let r = t
        .send(
            Method::POST,
            &format!("/v2/team/app/blobs/uploads/?mount={secret_blob}&from=secret/app"),
            As::Token(&alice),
        )
        .await;
    assert_eq!(r.status(), StatusCode::ACCEPTED);
    assert_eq!(
        t.send(Method::HEAD, &format!("/v2/team/app/blobs/{secret_blob}"), As::Token(&alice)).await.status(),
        StatusCode::NOT_FOUND
    );
    // From where she may pull, the mount happens.
    let tool_blob = Digest::sha256_of(b"team/tool");
    let r = t
        .send(Method::POST, &format!("/v2/team/app/blobs/uploads/?mount={tool_blob}&from=team/tool"), As::Token(&alice))
        .await;
    assert_eq!(r.status(), StatusCode::CREATED);
}

#[tokio::test]
async fn revoked_and_expired_tokens_stop_at_once() {
    let t = T::start();
    t.new_project("team").await;
    assert_eq!(t.push_image("team/app", "v1", "r", As::Token(ADMIN)).await.status(), StatusCode::CREATED);
    let alice = t.user("alice").await;
    t.bind("team", "view", user("alice")).await;
    let jwt = t.jwt(Some(&alice), &["repository:team/app:pull"]).await;
    assert_eq!(t.pull_status("team/app", "v1", As::Token(&alice)).await, StatusCode::OK);
    assert_eq!(t.pull_status("team/app", "v1", As::Bearer(&jwt)).await, StatusCode::OK);
    // The list shows ids, never secrets.
    let list = t.api(Method::GET, "/tokens", As::Token(&alice), json!(null)).await;
    let text = list.text().await.unwrap();
    assert!(!text.contains(&alice) && !text.contains("sha256"), "{text}");
    let items: Value = serde_json::from_str(&text).unwrap();
    let id = items["items"][0]["id"].as_str().unwrap().to_owned();
    let r = t.api(Method::DELETE, &format!("/tokens/{id}"), As::Token(ADMIN), json!(null)).await;
    assert_eq!(r.status(), StatusCode::OK);
    for who in [As::Token(&alice), As::Bearer(&alice), As::Bearer(&jwt)] {
        refused(
            t.send(Method::GET, "/v2/team/app/manifests/v1", who).await,
            StatusCode::UNAUTHORIZED,
            "UNAUTHORIZED",
            &["team/app"],
        )
        .await;
    }
    let r = t
        .http
        .get(format!("{}/openshift/token?service=tributary", t.reg.url()))
        .basic_auth("x", Some(&alice))
        .send()
        .await
        .unwrap();
    refused(r, StatusCode::UNAUTHORIZED, "UNAUTHORIZED", &[]).await;
    // Expiry.
    let short = t.token_for(user("alice"), Some(1)).await;
    assert_eq!(t.pull_status("team/app", "v1", As::Token(&short)).await, StatusCode::OK);
    tokio::time::sleep(std::time::Duration::from_millis(1200)).await;
    refused(
        t.send(Method::GET, "/v2/team/app/manifests/v1", As::Token(&short)).await,
        StatusCode::UNAUTHORIZED,
        "UNAUTHORIZED",
        &["team/app"],
    )
    .await;
    // A deleted user's tokens die with it... users cannot be deleted yet; a deleted namespace's SA tokens neither.
}

#[tokio::test]
async fn stream_api_checks_verbs() {
    let t = T::start();
    t.new_project("team").await;
    assert_eq!(t.push_image("team/app", "v1", "s", As::Token(ADMIN)).await.status(), StatusCode::CREATED);
    let (viewer, puller, nobody) = (t.user("viewer").await, t.user("puller").await, t.user("nobody").await);
    t.bind("team", "view", user("viewer")).await;
    t.bind("team", "system:image-puller", user("puller")).await;
    let is = "/apis/image.openshift.io/v1/namespaces/team/imagestreams";
    let hidden = ["team/app", "\"app\"", "missing"];
    assert_eq!(t.send(Method::GET, &format!("{is}/app"), As::Token(ADMIN)).await.status(), StatusCode::OK);
    assert_eq!(t.send(Method::GET, &format!("{is}/app"), As::Bearer(&viewer)).await.status(), StatusCode::OK);
    assert_eq!(
        t.send(Method::GET, &format!("{is}/missing"), As::Bearer(&viewer)).await.status(),
        StatusCode::NOT_FOUND
    );
    let a = refused_status(
        t.send(Method::GET, &format!("{is}/app"), As::Bearer(&nobody)).await,
        StatusCode::FORBIDDEN,
        &hidden,
    )
    .await;
    let b = refused_status(
        t.send(Method::GET, &format!("{is}/missing"), As::Bearer(&nobody)).await,
        StatusCode::FORBIDDEN,
        &hidden,
    )
    .await;
    assert_eq!(a, b);
    // Pull rights are not `get imagestreams`.
    refused_status(
        t.send(Method::GET, &format!("{is}/app"), As::Bearer(&puller)).await,
        StatusCode::FORBIDDEN,
        &hidden,
    )
    .await;
    refused_status(t.send(Method::GET, &format!("{is}/app"), As::Nobody).await, StatusCode::UNAUTHORIZED, &hidden)
        .await;
    // A registry JWT reads the stream it covers, and nothing else.
    let jwt = t.jwt(Some(&viewer), &["repository:team/app:pull"]).await;
    assert_eq!(t.send(Method::GET, &format!("{is}/app"), As::Bearer(&jwt)).await.status(), StatusCode::OK);
    refused_status(t.send(Method::GET, &format!("{is}/other"), As::Bearer(&jwt)).await, StatusCode::FORBIDDEN, &hidden)
        .await;
    // Cluster-scoped images: cluster administrators only.
    let digest = t.send(Method::GET, "/v2/team/app/manifests/v1", As::Token(ADMIN)).await.headers()
        ["docker-content-digest"]
        .to_str()
        .unwrap()
        .to_owned();
    assert_eq!(
        t.send(Method::GET, &format!("/apis/image.openshift.io/v1/images/{digest}"), As::Token(ADMIN)).await.status(),
        StatusCode::OK
    );
    refused_status(
        t.send(Method::GET, &format!("/apis/image.openshift.io/v1/images/{digest}"), As::Token(&viewer)).await,
        StatusCode::FORBIDDEN,
        &hidden,
    )
    .await;
    // Discovery is open.
    assert_eq!(t.send(Method::GET, "/apis/image.openshift.io/v1", As::Nobody).await.status(), StatusCode::OK);
}

#[tokio::test]
async fn administration_api_permissions() {
    let t = T::start();
    let alice = t.user("alice").await;
    // whoami
    let me: Value = t.api(Method::GET, "/whoami", As::Bearer(&alice), json!(null)).await.json().await.unwrap();
    assert_eq!((me["kind"].as_str(), me["name"].as_str()), (Some("User"), Some("alice")));
    assert!(me["groups"].as_array().unwrap().contains(&json!("system:authenticated")));
    refused_status(t.api(Method::GET, "/whoami", As::Nobody, json!(null)).await, StatusCode::UNAUTHORIZED, &[]).await;
    refused_status(
        t.api(Method::GET, "/whoami", As::Bearer("bogus"), json!(null)).await,
        StatusCode::UNAUTHORIZED,
        &[],
    )
    .await;
    // Users: cluster-admin only.
    refused_status(
        t.api(Method::POST, "/users", As::Token(&alice), json!({"name":"mallory"})).await,
        StatusCode::FORBIDDEN,
        &[],
    )
    .await;
    refused_status(
        t.api(Method::POST, "/users", As::Nobody, json!({"name":"mallory"})).await,
        StatusCode::UNAUTHORIZED,
        &[],
    )
    .await;
    assert_eq!(
        t.api(Method::POST, "/users", As::Token(ADMIN), json!({"name":"alice"})).await.status(),
        StatusCode::CONFLICT
    );
    assert_eq!(
        t.api(Method::POST, "/users", As::Token(ADMIN), json!({"name":"Bad Name"})).await.status(),
        StatusCode::BAD_REQUEST
    );
    // A user creates a project and administers it; others cannot touch it.
    assert_eq!(
        t.api(Method::POST, "/namespaces", As::Token(&alice), json!({"name":"alices"})).await.status(),
        StatusCode::CREATED
    );
    assert_eq!(t.push_image("alices/app", "v1", "a", As::Token(&alice)).await.status(), StatusCode::CREATED);
    let bob = t.user("bob").await;
    refused_status(
        t.api(
            Method::POST,
            "/namespaces/alices/rolebindings/add",
            As::Token(&bob),
            json!({"role":"admin","subject":user("bob")}),
        )
        .await,
        StatusCode::FORBIDDEN,
        &[],
    )
    .await;
    refused_status(
        t.api(Method::POST, "/namespaces/alices/serviceaccounts", As::Token(&bob), json!({"name":"robot"})).await,
        StatusCode::FORBIDDEN,
        &[],
    )
    .await;
    refused_status(
        t.api(Method::GET, "/namespaces/alices/rolebindings", As::Token(&bob), json!(null)).await,
        StatusCode::FORBIDDEN,
        &[],
    )
    .await;
    let ns: Value = t.api(Method::GET, "/namespaces", As::Token(&bob), json!(null)).await.json().await.unwrap();
    assert_eq!(ns["items"], json!([]));
    assert_eq!(
        t.api(Method::POST, "/namespaces/alices/serviceaccounts", As::Token(&alice), json!({"name":"robot"}))
            .await
            .status(),
        StatusCode::CREATED
    );
    let robot = t
        .api(
            Method::POST,
            "/tokens",
            As::Token(&alice),
            json!({"owner":{"kind":"ServiceAccount","namespace":"alices","name":"robot"}}),
        )
        .await;
    assert_eq!(robot.status(), StatusCode::CREATED);
    let robot = robot.json::<Value>().await.unwrap()["token"].as_str().unwrap().to_owned();
    // robot is no builder: every SA pulls, only builder pushes.
    assert_eq!(t.pull_status("alices/app", "v1", As::Token(&robot)).await, StatusCode::OK);
    refused(
        t.push_image("alices/app", "v2", "r", As::Token(&robot)).await,
        StatusCode::FORBIDDEN,
        "DENIED",
        &["alices"],
    )
    .await;
    // Service accounts do not create projects; tokens are minted only by whom may.
    refused_status(
        t.api(Method::POST, "/namespaces", As::Token(&robot), json!({"name":"robots"})).await,
        StatusCode::FORBIDDEN,
        &[],
    )
    .await;
    refused_status(
        t.api(Method::POST, "/tokens", As::Token(&bob), json!({"owner": user("alice")})).await,
        StatusCode::FORBIDDEN,
        &[],
    )
    .await;
    // Registry JWTs do not administer.
    let jwt = t.jwt(Some(&alice), &["repository:alices/app:pull"]).await;
    refused_status(
        t.api(Method::POST, "/namespaces", As::Bearer(&jwt), json!({"name":"viajwt"})).await,
        StatusCode::FORBIDDEN,
        &[],
    )
    .await;
    // Bob cannot see or revoke alice's tokens.
    let tokens: Value = t.api(Method::GET, "/tokens", As::Token(&alice), json!(null)).await.json().await.unwrap();
    let alice_id = tokens["items"].as_array().unwrap().iter().find(|t| t["owner"]["name"] == "alice").unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(
        t.api(Method::DELETE, &format!("/tokens/{alice_id}"), As::Token(&bob), json!(null)).await.status(),
        StatusCode::NOT_FOUND
    );
    let bobs: Value = t.api(Method::GET, "/tokens", As::Token(&bob), json!(null)).await.json().await.unwrap();
    assert!(bobs["items"].as_array().unwrap().iter().all(|t| t["owner"]["name"] == "bob"));
}

#[tokio::test]
async fn tag_history_says_who_pushed_and_who_tagged() {
    let t = T::start();
    t.new_project("team").await;
    let bob = t.user("bob").await;
    t.bind("team", "system:image-builder", user("bob")).await;
    let carol = t.user("carol").await;
    t.bind("team", "edit", user("carol")).await;
    // Bob pushes `app:v1` over the OCI API (Basic with his token, as docker login does).
    let r = t.push_image("team/app", "v1", "first", As::Token(&bob)).await;
    assert_eq!(r.status(), StatusCode::CREATED);
    // Carol tags it `app:prod` through the image stream API (Bearer, as kubectl does).
    let istag = json!({"metadata": {"name": "app:prod"}, "tag": {"name": "prod", "from": {"kind": "ImageStreamTag", "name": "app:v1"}}});
    let r = t
        .req(Method::POST, "/apis/image.openshift.io/v1/namespaces/team/imagestreamtags", As::Bearer(&carol))
        .json(&istag)
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success(), "{}", r.status());
    let r = t.send(Method::GET, "/apis/image.openshift.io/v1/namespaces/team/imagestreams/app", As::Token(ADMIN)).await;
    let stream: Value = r.json().await.unwrap();
    let by = |tag: &str| {
        let tags = stream["status"]["tags"].as_array().unwrap();
        let t = tags.iter().find(|t| t["tag"] == tag).unwrap_or_else(|| panic!("{tag} in {stream}"));
        t["items"][0]["by"].as_str().map(str::to_owned)
    };
    assert_eq!(by("v1").as_deref(), Some("bob"), "the push names the pusher");
    assert_eq!(by("prod").as_deref(), Some("carol"), "the tag names who tagged");
}
