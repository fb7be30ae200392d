//! The `tributary` client verbs (OpenShift's `oc` for access control): `login`, `new-project`, `create`, `get`,
//! `delete`, `whoami`, `policy`, `adm read-only`; the image stream verbs ([`streams`]) and `import-image`/`create secret
//! docker-registry` (`imports`). Each talks HTTP to a running server's `/apis/tributary.dev/v1/` API (see
//! `registry::http::admin_api`), with `--server`/`--token`, `TRIBUTARY_SERVER`/`TRIBUTARY_TOKEN`, or the file
//! `tributary login` writes ([`config`]). Called only by `main.rs`; never touches the stores. The verbs on a
//! Kubernetes cluster (`set triggers`, `set image-lookup KIND/NAME`, `adm admission-config`) are in `cluster`.

mod api;
mod bootstrap;
mod client;
mod cluster;
mod config;
mod describe;
mod exit;
mod imagepolicy;
mod imports;
mod progress;
mod prune;
pub mod streams;
mod yaml;

use auth::{GroupName, Role, ServiceAccountName, Subject, UserName};
use clap::{Args, Subcommand};
use names::Namespace;
use serde_json::{json, Value};

pub use bootstrap::bootstrap;
use client::Client;
pub use exit::code as exit_code;
use registry::config::duration;

/// Where the server is and who we are there.
#[derive(Args, Debug, Clone)]
pub struct Connection {
    /// The registry's URL, e.g. http://localhost:5000 [default: from `tributary login`].
    #[arg(long, env = "TRIBUTARY_SERVER")]
    server: Option<String>,
    /// An API token [default: from `tributary login`].
    #[arg(long, env = "TRIBUTARY_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// Accept any certificate from an https server (a self-signed one, as for kubectl).
    #[arg(long, env = "TRIBUTARY_INSECURE_SKIP_TLS_VERIFY")]
    pub insecure_skip_tls_verify: bool,
}

/// The client verbs, flattened into the `tributary` command.
#[derive(Subcommand, Debug)]
pub enum Command {
    /// Check a token against a server and remember both for the other verbs.
    Login {
        #[arg(long, env = "TRIBUTARY_SERVER")]
        server: String,
        #[arg(long, env = "TRIBUTARY_TOKEN", hide_env_values = true)]
        token: String,
        /// Accept any certificate from an https server.
        #[arg(long, env = "TRIBUTARY_INSECURE_SKIP_TLS_VERIFY")]
        insecure_skip_tls_verify: bool,
    },
    /// Create a namespace (project) with its `default` and `builder` service accounts; you become its admin.
    NewProject {
        name: Namespace,
        #[command(flatten)]
        conn: Connection,
    },
    /// Create a user, service account or API token.
    #[command(subcommand)]
    Create(Create),
    /// List tokens, namespaces, users, service accounts or role bindings.
    Get {
        #[command(subcommand)]
        what: Get,
    },
    /// Revoke an API token.
    #[command(subcommand)]
    Delete(Delete),
    /// Print who the token belongs to (`-t`: print the token itself).
    Whoami {
        #[arg(short = 't', long = "show-token")]
        show_token: bool,
        #[command(flatten)]
        conn: Connection,
    },
    /// Bind or unbind roles in a namespace.
    #[command(subcommand)]
    Policy(Policy),
    /// Image stream verbs: `tag`, `describe`, `set image-lookup`.
    #[command(flatten)]
    Streams(streams::Command),
    /// Cluster administration: `adm read-only on|off|status`, `adm gc`, `adm prune images`.
    #[command(subcommand)]
    Adm(Adm),
}

#[derive(Subcommand, Debug)]
pub enum Adm {
    /// Turn read-only mode on or off on every replica (cluster-admin), or show it. While on, every push, delete,
    /// tag change and import is refused; pulls go on.
    ReadOnly {
        #[arg(value_enum)]
        action: ReadOnlyAction,
        #[command(flatten)]
        conn: Connection,
    },
    /// Garbage-collect blobs and manifests that nothing references (no image, repository link or upload) and
    /// have not been for the grace period (cluster-admin). A dry run unless `--confirm`: prints what would go.
    Gc {
        /// Delete (without it nothing changes).
        #[arg(long)]
        confirm: bool,
        /// Grace period (`30m`, `2h`, or seconds: `0`); default: the registry's `[gc] grace`.
        #[arg(long, value_parser = registry::config::duration::seconds_or_duration)]
        grace: Option<std::time::Duration>,
        /// `json`: the whole report.
        #[arg(short = 'o', long = "output", value_enum)]
        output: Option<GcOutput>,
        #[command(flatten)]
        conn: Connection,
    },
    /// Prune images (cluster-admin), as `oc adm prune images`.
    #[command(subcommand)]
    Prune(Prune),
    /// Write a containers-registries.conf(5) file from the registry's mirror sets and registry sources
    /// (cluster-admin), so that podman, CRI-O and skopeo use the same mirrors.
    RegistriesConf {
        /// Write to this file (default: standard output).
        #[arg(short = 'o', long = "output")]
        output: Option<std::path::PathBuf>,
        #[command(flatten)]
        conn: Connection,
    },
    /// Migrate objects to their current kinds, as `oc adm migrate`.
    #[command(subcommand)]
    Migrate(Migrate),
    /// Print the MutatingWebhookConfiguration that registers this registry's image lookup webhook with a
    /// Kubernetes API server (`| kubectl apply -f -`).
    AdmissionConfig(cluster::AdmissionConfigArgs),
}

#[derive(Subcommand, Debug)]
pub enum Migrate {
    /// Convert ImageContentSourcePolicy YAML files into ImageDigestMirrorSet YAML files.
    Icsp {
        /// The ImageContentSourcePolicy files.
        #[arg(required = true)]
        files: Vec<std::path::PathBuf>,
        /// Where the ImageDigestMirrorSet files go (default: the current directory).
        #[arg(long, default_value = ".")]
        dest_dir: std::path::PathBuf,
    },
}

#[derive(Subcommand, Debug)]
pub enum Prune {
    /// Remove tag-history items beyond the keep limits, then the images no stream references any more, their
    /// manifests and the blobs nothing else needs. A dry run unless `--confirm`: prints what would go.
    Images(prune::PruneImages),
}

/// Output formats of `adm gc` and `adm prune images`.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum GcOutput {
    Json,
}

/// `adm gc`'s text: one line per digest with its size, then the total, as `oc adm prune` prints.
fn describe_gc(v: &Value) -> String {
    let dry = v["dryRun"] == json!(true);
    let mut out = String::new();
    let items = v["deleted"].as_array().cloned().unwrap_or_default();
    if !items.is_empty() {
        out.push_str(&format!("{:<8} {:<72} {:>12}\n", "KIND", "DIGEST", "SIZE"));
    }
    for i in &items {
        out.push_str(&format!(
            "{:<8} {:<72} {:>12}\n",
            i["kind"].as_str().unwrap_or("?"),
            i["digest"].as_str().unwrap_or("?"),
            i["size"].as_u64().unwrap_or(0)
        ));
    }
    let bytes = v["bytesFreed"].as_u64().unwrap_or(0);
    let verb = if dry { "would free" } else { "freed" };
    out.push_str(&format!("{} items, {bytes} bytes {verb}", items.len()));
    let waiting = v["waiting"].as_u64().unwrap_or(0);
    if waiting > 0 {
        out.push_str(&format!(
            "; {waiting} unreferenced ({} bytes) within the grace period of {}s",
            v["waitingBytes"].as_u64().unwrap_or(0),
            v["graceSeconds"].as_u64().unwrap_or(0)
        ));
    }
    if dry {
        out.push_str("\ndry run: nothing deleted; add --confirm to delete");
    }
    out
}

#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReadOnlyAction {
    On,
    Off,
    Status,
}

/// `read-only: on (set by admin at …)`, as `adm read-only` prints it.
fn describe_read_only(v: &Value) -> String {
    let on = if v["readOnly"] == json!(true) { "on" } else { "off" };
    let mut out = format!("read-only: {on}");
    if v["config"] == json!(true) {
        out.push_str(" (set by the configuration; the switch cannot lift it)");
    } else if let Some(by) = v["switch"]["changedBy"].as_str() {
        out.push_str(&format!(" (switched by {by} at {})", v["switch"]["changed"].as_str().unwrap_or("?")));
    }
    out
}

#[derive(Subcommand, Debug)]
pub enum Create {
    /// Create a pull secret: `create secret docker-registry NAME --docker-server … --docker-username …
    /// --docker-password …` (or `--from-file PATH` of a `.docker/config.json`), `-n NAMESPACE`.
    #[command(subcommand)]
    Secret(imports::SecretKind),
    /// Create a user (cluster-admin only).
    User {
        name: UserName,
        /// A group the user is in (repeatable).
        #[arg(long = "group")]
        groups: Vec<GroupName>,
        #[command(flatten)]
        conn: Connection,
    },
    /// Create a service account in a namespace.
    #[command(alias = "sa")]
    Serviceaccount {
        name: ServiceAccountName,
        #[arg(short = 'n', long = "namespace")]
        namespace: Namespace,
        #[command(flatten)]
        conn: Connection,
    },
    /// Create an API token for a user or a service account and print it (it is shown only now).
    Token {
        #[arg(long, conflicts_with = "serviceaccount", required_unless_present = "serviceaccount")]
        user: Option<UserName>,
        #[arg(long, requires = "namespace")]
        serviceaccount: Option<ServiceAccountName>,
        #[arg(short = 'n', long = "namespace")]
        namespace: Option<Namespace>,
        /// Lifetime, e.g. 30m, 12h, 7d, 1h30m [default: no expiry].
        #[arg(long, value_parser = duration::parse)]
        expires: Option<chrono::Duration>,
        #[arg(long)]
        description: Option<String>,
        #[command(flatten)]
        conn: Connection,
    },
}

#[derive(Subcommand, Debug)]
pub enum Get {
    /// API tokens you may manage (never their secrets).
    Tokens {
        #[command(flatten)]
        conn: Connection,
    },
    /// Namespaces you can see.
    #[command(alias = "projects")]
    Namespaces {
        #[command(flatten)]
        conn: Connection,
    },
    /// Users (cluster-admin only).
    Users {
        #[command(flatten)]
        conn: Connection,
    },
    /// Service accounts of a namespace.
    #[command(alias = "sa")]
    Serviceaccounts {
        #[arg(short = 'n', long = "namespace")]
        namespace: Namespace,
        #[command(flatten)]
        conn: Connection,
    },
    /// Role bindings of a namespace.
    Rolebindings {
        #[arg(short = 'n', long = "namespace")]
        namespace: Namespace,
        #[command(flatten)]
        conn: Connection,
    },
    /// Image streams (`get is [NAME] [-o json|yaml|name]`).
    #[command(name = "is", visible_alias = "imagestreams", alias = "imagestream")]
    ImageStreams(streams::GetArgs),
    /// Image stream tags (`get istag [NAME:TAG] [-o json|yaml|name]`).
    #[command(name = "istag", visible_alias = "imagestreamtags", alias = "imagestreamtag")]
    ImageStreamTags(streams::GetArgs),
}

#[derive(Subcommand, Debug)]
pub enum Delete {
    /// Revoke an API token by id (see `get tokens`); it stops working at once.
    Token {
        id: auth::TokenId,
        #[command(flatten)]
        conn: Connection,
    },
    /// `delete istag/NAME:TAG` (the tag's spec entry and history) or `delete is/NAME`, `-n NAMESPACE`.
    #[command(external_subcommand)]
    Streams(Vec<String>),
}

#[derive(Args, Debug)]
pub struct Binding {
    role: Role,
    /// A user, or `system:serviceaccount:<ns>:<name>` (for `-group` verbs: a group).
    subject: String,
    #[arg(short = 'n', long = "namespace")]
    namespace: Namespace,
    #[command(flatten)]
    conn: Connection,
}

#[derive(Subcommand, Debug)]
pub enum Policy {
    /// Bind ROLE to a user or service account in the namespace.
    AddRoleToUser(Binding),
    /// Bind ROLE to a group (e.g. `system:serviceaccounts:project-a`, `system:unauthenticated`).
    AddRoleToGroup(Binding),
    /// Unbind ROLE from a user or service account in the namespace.
    RemoveRoleFromUser(Binding),
    /// Unbind ROLE from a group in the namespace.
    RemoveRoleFromGroup(Binding),
}

/// Runs a client verb; errors are printed by `main`.
pub fn run(command: Command) -> anyhow::Result<()> {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    rt.block_on(run_async(command))
}

fn subject_of(binding: &Binding, group: bool) -> anyhow::Result<Subject> {
    Ok(if group {
        Subject::Group { name: binding.subject.parse()? }
    } else {
        Subject::user_or_service_account(&binding.subject)?
    })
}

async fn run_async(command: Command) -> anyhow::Result<()> {
    match command {
        Command::Login { server, token, insecure_skip_tls_verify } => {
            let client = Client::new(Some(server), Some(token), insecure_skip_tls_verify)?;
            let me = client.get("/whoami").await?;
            let path = config::save(client.server(), client.token())?;
            println!(
                "Logged into {} as {} (saved in {}).",
                client.server(),
                me["name"].as_str().unwrap_or("?"),
                path.display()
            );
        }
        Command::NewProject { name, conn } => {
            Client::from(conn)?.post("/namespaces", json!({"name": name})).await?;
            println!("Now you have project \"{name}\" with service accounts default and builder.");
        }
        Command::Create(Create::User { name, groups, conn }) => {
            Client::from(conn)?.post("/users", json!({"name": name, "groups": groups})).await?;
            println!("user/{name} created");
        }
        Command::Create(Create::Serviceaccount { name, namespace, conn }) => {
            Client::from(conn)?
                .post(&format!("/namespaces/{namespace}/serviceaccounts"), json!({"name": name}))
                .await?;
            println!("serviceaccount/{name} created in {namespace}");
        }
        Command::Create(Create::Token { user, serviceaccount, namespace, expires, description, conn }) => {
            let owner = match (user, serviceaccount, namespace) {
                (Some(name), _, _) => Subject::User { name },
                (None, Some(name), Some(namespace)) => Subject::ServiceAccount { namespace, name },
                _ => anyhow::bail!("give --user NAME or --serviceaccount NAME -n NAMESPACE"),
            };
            let body = json!({
                "owner": owner,
                "expiresInSeconds": expires.map(|d| d.num_seconds()),
                "description": description,
            });
            let created = Client::from(conn)?.post("/tokens", body).await?;
            eprintln!("token {} for {}", created["id"].as_str().unwrap_or("?"), owner.name());
            println!("{}", created["token"].as_str().unwrap_or_default());
        }
        Command::Create(Create::Secret(kind)) => imports::create_secret(kind).await?,
        Command::Get { what } => get(what).await?,
        Command::Streams(c) => streams::run(c).await?,
        Command::Adm(Adm::ReadOnly { action, conn }) => {
            let client = Client::from(conn)?;
            let state = match action {
                ReadOnlyAction::Status => client.get("/readonly").await?,
                ReadOnlyAction::On => client.put("/readonly", json!({"readOnly": true})).await?,
                ReadOnlyAction::Off => client.put("/readonly", json!({"readOnly": false})).await?,
            };
            println!("{}", describe_read_only(&state));
        }
        Command::Adm(Adm::Gc { confirm, grace, output, conn }) => {
            let body = json!({"confirm": confirm, "graceSeconds": grace.map(|g| g.as_secs())});
            let what = if confirm { "collecting garbage" } else { "looking for garbage (dry run)" };
            let progress = progress::Progress::spinner(what, output.is_some());
            let report = Client::from(conn)?.post("/gc", body).await?;
            drop(progress);
            match output {
                Some(GcOutput::Json) => println!("{}", serde_json::to_string_pretty(&report)?),
                None => println!("{}", describe_gc(&report)),
            }
        }
        Command::Adm(Adm::Prune(Prune::Images(p))) => prune::run(p).await?,
        Command::Adm(Adm::RegistriesConf { output, conn }) => {
            imagepolicy::registries_conf(&Client::from(conn)?, output.as_deref()).await?
        }
        Command::Adm(Adm::Migrate(Migrate::Icsp { files, dest_dir })) => imagepolicy::migrate_icsp(&files, &dest_dir)?,
        Command::Adm(Adm::AdmissionConfig(args)) => cluster::admission_config(args)?,
        Command::Delete(Delete::Token { id, conn }) => {
            Client::from(conn)?.delete(&format!("/tokens/{id}")).await?;
            println!("token/{id} deleted");
        }
        Command::Delete(Delete::Streams(words)) => streams::delete(words).await?,
        Command::Whoami { show_token, conn } => {
            let client = Client::from(conn)?;
            if show_token {
                println!("{}", client.token());
            } else {
                println!("{}", client.get("/whoami").await?["name"].as_str().unwrap_or_default());
            }
        }
        Command::Policy(p) => {
            let (binding, group, action) = match &p {
                Policy::AddRoleToUser(b) => (b, false, "add"),
                Policy::AddRoleToGroup(b) => (b, true, "add"),
                Policy::RemoveRoleFromUser(b) => (b, false, "remove"),
                Policy::RemoveRoleFromGroup(b) => (b, true, "remove"),
            };
            let subject = subject_of(binding, group)?;
            let ns = &binding.namespace;
            let body = json!({"role": binding.role, "subject": subject});
            let out = Client::from(binding.conn.clone())?
                .post(&format!("/namespaces/{ns}/rolebindings/{action}"), body)
                .await?;
            let done = if action == "add" { "added" } else { "removed" };
            let note = if out["changed"] == json!(false) { " (already so)" } else { "" };
            println!("role \"{}\" {done}: \"{}\" in {ns}{note}", binding.role, subject.name());
        }
    }
    Ok(())
}

fn column(v: &Value, key: &str) -> String {
    match &v[key] {
        Value::String(s) => s.clone(),
        Value::Null => "-".into(),
        other => other.to_string(),
    }
}

/// Prints rows under a header in aligned columns, as `kubectl get` does.
fn table(header: &[&str], rows: Vec<Vec<String>>) {
    let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for row in &rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.len());
        }
    }
    let line = |cells: Vec<String>| {
        let parts: Vec<String> = cells.iter().zip(&widths).map(|(c, w)| format!("{c:<w$}")).collect();
        println!("{}", parts.join("   ").trim_end());
    };
    line(header.iter().map(|h| h.to_string()).collect());
    for row in rows {
        line(row);
    }
}

fn items(list: &Value) -> Vec<Value> {
    list["items"].as_array().cloned().unwrap_or_default()
}

fn subject_name(s: &Value) -> String {
    serde_json::from_value::<Subject>(s.clone()).map(|s| s.name()).unwrap_or_else(|_| s.to_string())
}

async fn get(what: Get) -> anyhow::Result<()> {
    match what {
        Get::Tokens { conn } => {
            let list = Client::from(conn)?.get("/tokens").await?;
            let rows = items(&list)
                .iter()
                .map(|t| {
                    vec![
                        column(t, "id"),
                        subject_name(&t["owner"]),
                        column(t, "created"),
                        column(t, "expires"),
                        column(t, "description"),
                    ]
                })
                .collect();
            table(&["ID", "OWNER", "CREATED", "EXPIRES", "DESCRIPTION"], rows);
        }
        Get::Namespaces { conn } => {
            let list = Client::from(conn)?.get("/namespaces").await?;
            let rows = items(&list).iter().map(|n| vec![column(n, "name"), column(n, "created")]).collect();
            table(&["NAME", "CREATED"], rows);
        }
        Get::Users { conn } => {
            let list = Client::from(conn)?.get("/users").await?;
            let rows = items(&list)
                .iter()
                .map(|u| {
                    let groups: Vec<String> = u["groups"]
                        .as_array()
                        .map(|g| g.iter().filter_map(|x| x.as_str().map(str::to_owned)).collect())
                        .unwrap_or_default();
                    vec![column(u, "name"), groups.join(",")]
                })
                .collect();
            table(&["NAME", "GROUPS"], rows);
        }
        Get::Serviceaccounts { namespace, conn } => {
            let list = Client::from(conn)?.get(&format!("/namespaces/{namespace}/serviceaccounts")).await?;
            let rows = items(&list).iter().map(|s| vec![column(s, "name"), column(s, "created")]).collect();
            table(&["NAME", "CREATED"], rows);
        }
        Get::Rolebindings { namespace, conn } => {
            let list = Client::from(conn)?.get(&format!("/namespaces/{namespace}/rolebindings")).await?;
            let rows = items(&list)
                .iter()
                .map(|b| {
                    let subjects: Vec<String> =
                        b["subjects"].as_array().map(|s| s.iter().map(subject_name).collect()).unwrap_or_default();
                    vec![column(b, "role"), subjects.join(", ")]
                })
                .collect();
            table(&["ROLE", "SUBJECTS"], rows);
        }
        Get::ImageStreams(args) => streams::get(streams::Resource::ImageStreams, args).await?,
        Get::ImageStreamTags(args) => streams::get(streams::Resource::ImageStreamTags, args).await?,
    }
    Ok(())
}
