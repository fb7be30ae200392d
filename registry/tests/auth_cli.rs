//! The `tributary` client verbs against a real server with access control on: login (and its 0600 file),
//! new-project, create user/serviceaccount/token, get tokens, delete token, whoami [-t], policy add/remove.

use std::path::Path;
use std::process::{Command, Output};

use registry::testing::TestRegistry;
use reqwest::StatusCode;

const ADMIN: &str = "cli-admin-secret";

/// Runs `tributary ARGS` with a private client config file; no server/token in the environment.
fn tributary(config: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_tributary"))
        .args(args)
        .env("TRIBUTARY_CLIENT_CONFIG", config)
        .env_remove("TRIBUTARY_SERVER")
        .env_remove("TRIBUTARY_TOKEN")
        .output()
        .expect("run tributary")
}

fn ok(config: &Path, args: &[&str]) -> String {
    let o = tributary(config, args);
    let (out, err) = (String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr));
    assert!(o.status.success(), "tributary {args:?} failed:\n{out}\n{err}");
    out.into_owned()
}

fn fails(config: &Path, args: &[&str]) -> String {
    let o = tributary(config, args);
    assert!(!o.status.success(), "tributary {args:?} should fail");
    String::from_utf8_lossy(&o.stderr).into_owned()
}

async fn pull_status(reg: &TestRegistry, repo_tag: &str, token: &str) -> StatusCode {
    let (repo, tag) = repo_tag.split_once(':').unwrap();
    let url = format!("{}/v2/{repo}/tags/list?tag={tag}", reg.url());
    reqwest::Client::new().get(url).basic_auth("x", Some(token)).send().await.unwrap().status()
}

#[tokio::test]
async fn cli_verbs() {
    let reg = TestRegistry::builder().with_admin_token(ADMIN).start();
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("client.json");
    let server = reg.url();

    // Without a login nothing works, and a bad token is not remembered.
    assert!(fails(&cfg, &["whoami"]).contains("tributary login"));
    assert!(fails(&cfg, &["login", "--server", &server, "--token", "wrong"]).contains("401"));
    assert!(!cfg.exists());
    let out = ok(&cfg, &["login", "--server", &server, "--token", ADMIN]);
    assert!(out.contains("as admin"), "{out}");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(std::fs::metadata(&cfg).unwrap().permissions().mode() & 0o777, 0o600);
    }
    assert_eq!(ok(&cfg, &["whoami"]).trim(), "admin");
    assert_eq!(ok(&cfg, &["whoami", "-t"]).trim(), ADMIN);

    ok(&cfg, &["new-project", "team"]);
    assert!(fails(&cfg, &["new-project", "team"]).contains("already exists"));
    ok(&cfg, &["create", "user", "alice", "--group", "devs"]);
    ok(&cfg, &["create", "serviceaccount", "robot", "-n", "team"]);
    let sa_list = ok(&cfg, &["get", "serviceaccounts", "-n", "team"]);
    for sa in ["builder", "default", "robot"] {
        assert!(sa_list.contains(sa), "{sa_list}");
    }
    let alice = ok(&cfg, &["create", "token", "--user", "alice", "--expires", "1h", "--description", "laptop"]);
    let alice = alice.trim();
    assert!(alice.starts_with("trb_"), "{alice}");
    let robot = ok(&cfg, &["create", "token", "--serviceaccount", "robot", "-n", "team"]);
    let robot = robot.trim();
    let tokens = ok(&cfg, &["get", "tokens"]);
    assert!(tokens.contains("laptop") && tokens.contains("system:serviceaccount:team:robot"), "{tokens}");
    assert!(!tokens.contains(alice) && !tokens.contains(robot), "{tokens}");

    // Roles through the CLI; SUBJECT may name a service account.
    let other = dir.path().join("alice.json");
    let alice_flags = ["--server", server.as_str(), "--token", alice];
    let mut args = vec!["whoami"];
    args.extend(alice_flags);
    assert_eq!(ok(&other, &args).trim(), "alice");
    assert_eq!(pull_status(&reg, "team/app:v1", alice).await, StatusCode::FORBIDDEN);
    ok(&cfg, &["policy", "add-role-to-user", "system:image-puller", "alice", "-n", "team"]);
    assert_eq!(pull_status(&reg, "team/app:v1", alice).await, StatusCode::NOT_FOUND);
    ok(&cfg, &["policy", "remove-role-from-user", "system:image-puller", "alice", "-n", "team"]);
    assert_eq!(pull_status(&reg, "team/app:v1", alice).await, StatusCode::FORBIDDEN);
    ok(&cfg, &["policy", "add-role-to-group", "view", "devs", "-n", "team"]);
    assert_eq!(pull_status(&reg, "team/app:v1", alice).await, StatusCode::NOT_FOUND);
    ok(&cfg, &["policy", "remove-role-from-group", "view", "devs", "-n", "team"]);
    ok(&cfg, &["policy", "add-role-to-user", "system:image-puller", "system:serviceaccount:team:robot", "-n", "team"]);
    let bindings = ok(&cfg, &["get", "rolebindings", "-n", "team"]);
    assert!(bindings.contains("system:serviceaccount:team:robot"), "{bindings}");
    assert!(fails(&cfg, &["policy", "add-role-to-user", "system:image-admin", "alice", "-n", "team"])
        .contains("unknown role"));
    // alice is no admin of team.
    let mut args = vec!["policy", "add-role-to-user", "admin", "alice", "-n", "team"];
    args.extend(alice_flags);
    assert!(fails(&other, &args).contains("403"));

    // Revoking.
    let id = tokens.lines().find(|l| l.contains("laptop")).unwrap().split_whitespace().next().unwrap().to_owned();
    ok(&cfg, &["delete", "token", &id]);
    assert_eq!(pull_status(&reg, "team/app:v1", alice).await, StatusCode::UNAUTHORIZED);
    let mut args = vec!["whoami"];
    args.extend(alice_flags);
    assert!(fails(&other, &args).contains("401"));
    assert!(fails(&cfg, &["delete", "token", &id]).contains("not found"));
    // Bad input is refused by the CLI itself.
    assert!(!tributary(&cfg, &["create", "token", "--user", "alice", "--expires", "soon"]).status.success());
    assert!(!tributary(&cfg, &["create", "token", "--serviceaccount", "robot"]).status.success());
    assert!(!tributary(&cfg, &["new-project", "Not_Valid"]).status.success());
}
