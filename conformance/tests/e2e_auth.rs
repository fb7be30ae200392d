//! End-to-end access control with real clients: `docker login`, `skopeo login` and `podman login` with API tokens
//! made by the `tributary` CLI, then push and pull; and the refusals: a puller-only token cannot push, a pusher
//! without create rights cannot create a stream, a token of namespace A cannot read namespace B until a role is
//! bound, anonymous pull works only where `system:unauthenticated` is bound, revoked and expired tokens fail; and
//! the whole conformance suite through the Docker token flow.
//!
//! Each test starts its own `tributary serve` (access control on, a known admin token) on a free port.
mod common;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::*;

const ADMIN: &str = "e2e-auth-admin-token";

/// A `tributary serve` with access control on; killed when dropped (its log printed if the test panicked).
struct AuthServer {
    child: Child,
    host: String,
    log: PathBuf,
    client_config: PathBuf,
}

impl AuthServer {
    fn start(dir: &Path) -> AuthServer {
        std::fs::create_dir_all(dir).unwrap();
        let log = dir.join("server.log");
        let mut child = Command::new(tributary_bin())
            .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
            .arg(dir.join("data"))
            .env("TRIBUTARY_AUTH", "token")
            .env("TRIBUTARY_ADMIN_TOKEN", ADMIN)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::from(std::fs::File::create(&log).unwrap()))
            .spawn()
            .expect("start tributary serve");
        let (tx, rx) = std::sync::mpsc::channel();
        let stdout = child.stdout.take().unwrap();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if let Some(addr) = line.split("listening on http://").nth(1) {
                    let _ = tx.send(addr.trim().to_owned());
                }
            }
        });
        let host = rx.recv_timeout(Duration::from_secs(60)).unwrap_or_else(|_| {
            panic!("tributary did not start:\n{}", std::fs::read_to_string(&log).unwrap_or_default())
        });
        AuthServer { child, host, log, client_config: dir.join("client.json") }
    }

    /// `tributary ARGS` as the cluster administrator (or as `token`).
    fn cli_as(&self, token: &str, args: &[&str]) -> Output {
        let mut c = Command::new(tributary_bin());
        c.args(args)
            .env("TRIBUTARY_SERVER", format!("http://{}", self.host))
            .env("TRIBUTARY_TOKEN", token)
            .env("TRIBUTARY_CLIENT_CONFIG", &self.client_config);
        run_ok(&mut c, SHORT)
    }

    fn cli(&self, args: &[&str]) -> String {
        self.cli_as(ADMIN, args).stdout.trim().to_owned()
    }

    fn user_token(&self, name: &str) -> String {
        self.cli(&["create", "user", name]);
        self.cli(&["create", "token", "--user", name])
    }

    fn image(&self, repo_ref: &str) -> String {
        format!("docker://{}/{repo_ref}", self.host)
    }
}

impl Drop for AuthServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            eprintln!("--- tributary log ---\n{}", std::fs::read_to_string(&self.log).unwrap_or_default());
        }
    }
}

fn skopeo() -> Command {
    let mut c = Command::new("skopeo");
    c.arg("--insecure-policy");
    c
}

/// `skopeo copy` from the test layout to the registry with `user:token` credentials.
fn skopeo_push(server: &AuthServer, tag: &str, repo_ref: &str, creds: Option<&str>) -> Output {
    let mut c = skopeo();
    c.args(["copy", "--dest-tls-verify=false"]);
    match creds {
        Some(creds) => c.args(["--dest-creds", creds]),
        None => c.arg("--dest-no-creds"),
    };
    c.arg(TestImages::get().oci(tag)).arg(server.image(repo_ref));
    run(&mut c, LONG)
}

fn skopeo_inspect(server: &AuthServer, repo_ref: &str, creds: Option<&str>) -> Output {
    let mut c = skopeo();
    c.args(["inspect", "--raw", "--tls-verify=false"]);
    match creds {
        Some(creds) => c.args(["--creds", creds]),
        None => c.arg("--no-creds"),
    };
    c.arg(server.image(repo_ref));
    run(&mut c, SHORT)
}

/// A refusal as the client reports it.
fn assert_refused(o: &Output, what: &str) {
    assert!(!o.success(), "{what}: unexpectedly succeeded\n{}", o.stdout);
    let text = o.stderr.to_lowercase();
    assert!(
        ["denied", "unauthorized", "authentication required", "invalid username/password", "401", "403"]
            .iter()
            .any(|w| text.contains(w)),
        "{what}: not an access refusal:\n{}",
        o.stderr
    );
}

#[test]
fn skopeo_login_roles_namespaces_anonymous_and_revocation() {
    if !tools_present(&["skopeo", "umoci", "busybox", "jq", "sha256sum"]) {
        return;
    }
    let tmp = tempdir("e2e-auth-skopeo-");
    let server = AuthServer::start(tmp.path());
    let admin = format!("admin:{ADMIN}");

    // Namespaces must exist: not even the administrator pushes into a missing one.
    assert_refused(&skopeo_push(&server, "app", "team/app:v1", Some(&admin)), "push into a missing namespace");
    server.cli(&["new-project", "team"]);
    server.cli(&["new-project", "other"]);

    // skopeo login with an API token (any user name), then push with the stored credentials.
    let alice = server.user_token("alice");
    server.cli(&["policy", "add-role-to-user", "system:image-builder", "alice", "-n", "team"]);
    let authfile = tmp.path().join("auth.json");
    let mut login = skopeo();
    login.args(["login", "--tls-verify=false", "--authfile"]).arg(&authfile);
    login.args(["-u", "whoever", "-p", &alice, &server.host]);
    run_ok(&mut login, SHORT);
    let mut push = skopeo();
    push.args(["copy", "--dest-tls-verify=false", "--dest-authfile"]).arg(&authfile);
    push.arg(TestImages::get().oci("app")).arg(server.image("team/app:v1"));
    run_ok(&mut push, LONG);
    let mut bad_login = skopeo();
    bad_login.args(["login", "--tls-verify=false", "--authfile"]).arg(tmp.path().join("bad.json"));
    bad_login.args(["-u", "whoever", "-p", "not-a-token", &server.host]);
    assert_refused(&run(&mut bad_login, SHORT), "login with a wrong token");

    // A puller-only token pulls and cannot push.
    let puller = server.user_token("puller");
    server.cli(&["policy", "add-role-to-user", "system:image-puller", "puller", "-n", "team"]);
    let puller_creds = format!("x:{puller}");
    assert!(skopeo_inspect(&server, "team/app:v1", Some(&puller_creds)).success());
    assert_refused(&skopeo_push(&server, "app2", "team/app:v2", Some(&puller_creds)), "puller pushes");

    // A pusher without create rights pushes to the existing stream, but creates none.
    let pusher = server.user_token("pusher");
    server.cli(&["policy", "add-role-to-user", "system:image-pusher", "pusher", "-n", "team"]);
    let pusher_creds = format!("x:{pusher}");
    let o = skopeo_push(&server, "app2", "team/app:v2", Some(&pusher_creds));
    assert!(o.success(), "pusher pushes to an existing stream:\n{}", o.stderr);
    assert_refused(&skopeo_push(&server, "app2", "team/new:v1", Some(&pusher_creds)), "pusher creates a stream");

    // A token of namespace `other` cannot read `team` until a role is bound.
    let other_sa = server.cli(&["create", "token", "--serviceaccount", "default", "-n", "other"]);
    let other_creds = format!("x:{other_sa}");
    assert_refused(&skopeo_inspect(&server, "team/app:v1", Some(&other_creds)), "cross-namespace pull");
    server.cli(&[
        "policy",
        "add-role-to-user",
        "system:image-puller",
        "system:serviceaccount:other:default",
        "-n",
        "team",
    ]);
    assert!(skopeo_inspect(&server, "team/app:v1", Some(&other_creds)).success());
    server.cli(&[
        "policy",
        "remove-role-from-user",
        "system:image-puller",
        "system:serviceaccount:other:default",
        "-n",
        "team",
    ]);
    assert_refused(&skopeo_inspect(&server, "team/app:v1", Some(&other_creds)), "cross-namespace pull after unbinding");
    server.cli(&["policy", "add-role-to-group", "system:image-puller", "system:serviceaccounts:other", "-n", "team"]);
    assert!(skopeo_inspect(&server, "team/app:v1", Some(&other_creds)).success());

    // Anonymous pull only where system:unauthenticated is bound; anonymous push never.
    assert_refused(&skopeo_inspect(&server, "team/app:v1", None), "anonymous pull");
    server.cli(&["policy", "add-role-to-group", "system:image-puller", "system:unauthenticated", "-n", "team"]);
    assert!(skopeo_inspect(&server, "team/app:v1", None).success());
    assert_refused(&skopeo_push(&server, "app2", "team/app:v3", None), "anonymous push");
    assert_refused(&skopeo_inspect(&server, "other/app:v1", None), "anonymous pull elsewhere");

    // Revoked and expired tokens stop working.
    let tokens = server.cli(&["get", "tokens"]);
    let id = tokens
        .lines()
        .find(|l| l.split_whitespace().nth(1) == Some("puller"))
        .unwrap()
        .split_whitespace()
        .next()
        .unwrap()
        .to_owned();
    server.cli(&["delete", "token", &id]);
    server.cli(&["policy", "remove-role-from-group", "system:image-puller", "system:unauthenticated", "-n", "team"]);
    assert_refused(&skopeo_inspect(&server, "team/app:v1", Some(&puller_creds)), "revoked token");
    let short = server.cli(&["create", "token", "--user", "puller", "--expires", "2s"]);
    let short_creds = format!("x:{short}");
    assert!(skopeo_inspect(&server, "team/app:v1", Some(&short_creds)).success());
    std::thread::sleep(Duration::from_millis(2500));
    assert_refused(&skopeo_inspect(&server, "team/app:v1", Some(&short_creds)), "expired token");
}

#[test]
fn podman_login_push_pull() {
    if !tools_present(&["podman", "skopeo", "umoci", "busybox", "jq", "sha256sum"]) {
        return;
    }
    let tmp = tempdir("e2e-auth-podman-");
    let server = AuthServer::start(&tmp.path().join("server"));
    server.cli(&["new-project", "team"]);
    let dev = server.user_token("dev");
    server.cli(&["policy", "add-role-to-user", "edit", "dev", "-n", "team"]);
    let viewer = server.user_token("viewer");
    server.cli(&["policy", "add-role-to-user", "view", "viewer", "-n", "team"]);
    let pd = tmp.path().join("podman");
    let o = run_ok(podman(&pd).args(["pull", "-q"]).arg(TestImages::get().oci("app")), LONG);
    let id = o.stdout.trim().to_owned();
    let target = format!("{}/team/app:v1", server.host);
    run_ok(podman(&pd).args(["tag", &id, &target]), SHORT);

    // Not logged in: refused.
    assert_refused(&run(podman(&pd).args(["push", "--tls-verify=false", &target]), LONG), "podman push without login");
    run_ok(podman(&pd).args(["login", "--tls-verify=false", "-u", "anyname", "-p", &dev, &server.host]), SHORT);
    run_ok(podman(&pd).args(["push", "--tls-verify=false", &target]), LONG);
    run_ok(podman(&pd).args(["rmi", "--all", "--force"]), SHORT);
    run_ok(podman(&pd).args(["pull", "--tls-verify=false", &target]), LONG);

    // A viewer pulls but does not push.
    run_ok(podman(&pd).args(["logout", &server.host]), SHORT);
    run_ok(podman(&pd).args(["login", "--tls-verify=false", "-u", "anyname", "-p", &viewer, &server.host]), SHORT);
    run_ok(podman(&pd).args(["rmi", "--all", "--force"]), SHORT);
    run_ok(podman(&pd).args(["pull", "--tls-verify=false", &target]), LONG);
    let v2 = format!("{}/team/app:v2", server.host);
    run_ok(podman(&pd).args(["tag", &target, &v2]), SHORT);
    assert_refused(&run(podman(&pd).args(["push", "--tls-verify=false", &v2]), LONG), "viewer pushes");
    let bad =
        run(podman(&pd).args(["login", "--tls-verify=false", "-u", "anyname", "-p", "wrong", &server.host]), SHORT);
    assert_refused(&bad, "podman login with a wrong token");
}

#[test]
fn docker_login_push_pull() {
    if !tools_present(&["dockerd", "docker", "skopeo", "umoci", "busybox", "jq", "sha256sum"]) {
        return;
    }
    let tmp = tempdir("e2e-auth-docker-");
    let server = AuthServer::start(&tmp.path().join("server"));
    server.cli(&["new-project", "team"]);
    let o = skopeo_push(&server, "app", "team/base:v1", Some(&format!("admin:{ADMIN}")));
    assert!(o.success(), "{}", o.stderr);
    let builder = server.cli(&["create", "token", "--serviceaccount", "builder", "-n", "team"]);
    let puller = server.user_token("puller");
    server.cli(&["policy", "add-role-to-user", "system:image-puller", "puller", "-n", "team"]);
    let engine = DockerEngine::start(&tmp.path().join("docker"));
    let base = format!("{}/team/base:v1", server.host);
    let app = format!("{}/team/app:v1", server.host);

    // Not logged in: no pull.
    assert_refused(&run(engine.docker().args(["pull", &base]), LONG), "docker pull without login");
    // docker login with the builder's token (any user name): pull, tag into a new stream, push, pull back.
    assert_refused(
        &run(engine.docker().args(["login", "-u", "anyname", "-p", "wrong", &server.host]), SHORT),
        "docker login with a wrong token",
    );
    run_ok(engine.docker().args(["login", "-u", "anyname", "-p", &builder, &server.host]), SHORT);
    run_ok(engine.docker().args(["pull", &base]), LONG);
    run_ok(engine.docker().args(["tag", &base, &app]), SHORT);
    run_ok(engine.docker().args(["push", &app]), LONG);
    run_ok(engine.docker().args(["rmi", "--force", &base, &app]), SHORT);
    run_ok(engine.docker().args(["pull", &app]), LONG);

    // The puller pulls, and its push is denied.
    run_ok(engine.docker().args(["logout", &server.host]), SHORT);
    run_ok(engine.docker().args(["login", "-u", "someone", "-p", &puller, &server.host]), SHORT);
    run_ok(engine.docker().args(["rmi", "--force", &app]), SHORT);
    run_ok(engine.docker().args(["pull", &app]), LONG);
    let v2 = format!("{}/team/app:v2", server.host);
    run_ok(engine.docker().args(["tag", &app, &v2]), SHORT);
    assert_refused(&run(engine.docker().args(["push", &v2]), LONG), "docker push by a puller");
}

/// The whole conformance suite, as the cluster administrator through the token flow (Basic at the realm, then
/// JWTs): access control does not get in the way of any OCI workflow or stream behaviour.
#[test]
fn conformance_suite_through_the_token_flow() {
    let tmp = tempdir("e2e-auth-conformance-");
    let server = AuthServer::start(tmp.path());
    server.cli(&["new-project", "conformance"]);
    let mut config = conformance::Config::new(format!("http://{}", server.host));
    config.token = Some(ADMIN.to_owned());
    let report = tokio::runtime::Runtime::new().unwrap().block_on(conformance::run(config));
    println!("{}", report.summary());
    assert!(report.success(), "{}\n{}", report.lines.join("\n"), report.summary());
}
