//! The `tributary` command: `serve` runs the registry; the client verbs (`login`, `new-project`, `create`, `get`,
//! `delete`, `whoami`, `policy`, `adm read-only`, and the image stream verbs `tag`, `describe`, `set image-lookup`)
//! live in [`cli`]. `version` prints the build. A thin layer over the `registry` library; [`logging`] sets up the
//! log output.

mod cli;
mod logging;

use std::net::TcpListener;
use std::path::PathBuf;
use std::time::Duration;

use actix_web::dev::ServerHandle;

use clap::{Parser, Subcommand};
use registry::config::{Config, Overrides};

#[derive(Parser)]
#[command(name = "tributary", version = registry::LONG_VERSION, about = "An OCI registry with OpenShift-style image streams")]
struct Cli {
    /// Log lines as text (coloured only on a terminal) or json (one object per line).
    #[arg(long, global = true, value_enum, env = "TRIBUTARY_LOG_FORMAT", default_value = "text")]
    log_format: logging::LogFormat,
    #[command(subcommand)]
    command: Command,
}

// Parsed once at start; the serve flags (storage settings included) are simply larger than any client verb.
#[allow(clippy::large_enum_variant)]
#[derive(Subcommand)]
enum Command {
    /// Run the registry.
    Serve(ServeArgs),
    /// Print the version and the git commit of this build.
    Version,
    #[command(flatten)]
    Client(cli::Command),
}

#[derive(clap::Args)]
struct ServeArgs {
    /// Address to listen on [default: 0.0.0.0:5000].
    #[arg(long, env = "TRIBUTARY_LISTEN")]
    listen: Option<String>,
    /// Directory for blobs and metadata when they are kept locally [default: ./data].
    #[arg(long, env = "TRIBUTARY_DATA_DIR")]
    data_dir: Option<PathBuf>,
    /// TOML configuration file.
    #[arg(long, env = "TRIBUTARY_CONFIG")]
    config: Option<PathBuf>,
    /// HOST[:PORT] the registry calls itself in image references [default: the listen address].
    #[arg(long, env = "TRIBUTARY_PUBLIC_HOST")]
    public_host: Option<String>,
    /// Largest manifest accepted, in bytes [default: 4194304].
    #[arg(long, env = "TRIBUTARY_MAX_MANIFEST_BYTES")]
    max_manifest_bytes: Option<usize>,
    /// Access control: token (API tokens and role bindings) or none (everyone may do everything) [default: token].
    #[arg(long, env = "TRIBUTARY_AUTH")]
    auth: Option<auth::AuthMode>,
    /// The cluster administrator's token [default: generated at first start into <data-dir>/admin.token].
    #[arg(long, alias = "token", env = "TRIBUTARY_ADMIN_TOKEN", hide_env_values = true)]
    admin_token: Option<auth::tokens::Secret>,
    /// Serve https with this PEM certificate chain (with --tls-key). kubectl sends tokens only over https.
    #[arg(long, env = "TRIBUTARY_TLS_CERT")]
    tls_cert: Option<PathBuf>,
    /// The PEM private key of --tls-cert.
    #[arg(long, env = "TRIBUTARY_TLS_KEY")]
    tls_key: Option<PathBuf>,
    /// A URL to POST an event to whenever a stream tag changes (repeatable; comma-separated in the environment).
    #[arg(long = "webhook", env = "TRIBUTARY_WEBHOOKS", value_delimiter = ',')]
    webhooks: Option<Vec<url::Url>>,
    /// allowedRegistriesForImport: a registry host import and pull-through may reach, `*.domain` for a domain
    /// (repeatable; comma-separated in the environment) [default: every registry].
    #[arg(long = "allowed-registry", env = "TRIBUTARY_ALLOWED_REGISTRIES", value_delimiter = ',')]
    allowed_registries: Option<Vec<String>>,
    /// A host import and pull-through may reach even on a link-local address (or, with --outbound-deny-private,
    /// a loopback or private one) (repeatable; comma-separated in the environment).
    #[arg(long = "outbound-allow-host", env = "TRIBUTARY_OUTBOUND_ALLOW_HOSTS", value_delimiter = ',')]
    outbound_allow_hosts: Option<Vec<String>>,
    /// Also refuse upstreams on loopback (127/8, ::1) and private (10/8, 172.16/12, 192.168/16, fc00::/7)
    /// addresses [default: false].
    #[arg(long, env = "TRIBUTARY_OUTBOUND_DENY_PRIVATE", value_name = "BOOL", num_args = 0..=1,
        default_missing_value = "true", value_parser = clap::builder::BoolishValueParser::new())]
    outbound_deny_private: Option<bool>,
    /// Seconds to wait for a connection to an upstream registry [default: 10].
    #[arg(long, env = "TRIBUTARY_UPSTREAM_CONNECT_TIMEOUT")]
    upstream_connect_timeout: Option<u64>,
    /// Seconds an upstream registry may stay silent while answering [default: 30].
    #[arg(long, env = "TRIBUTARY_UPSTREAM_READ_TIMEOUT")]
    upstream_read_timeout: Option<u64>,
    /// Seconds between imports of tags with importPolicy.scheduled (at least 5) [default: 900].
    #[arg(long, env = "TRIBUTARY_SCHEDULED_IMPORT_INTERVAL")]
    scheduled_import_interval: Option<u64>,
    /// Seconds in-flight requests (uploads included) may take to finish after SIGTERM or SIGINT before their
    /// connections are closed.
    #[arg(long, env = "TRIBUTARY_SHUTDOWN_TIMEOUT", default_value_t = registry::http::DEFAULT_SHUTDOWN_TIMEOUT_SECS)]
    shutdown_timeout: u64,
    /// Purge upload sessions untouched for this long, with their staged data: seconds or e.g. 24h [default: 24h].
    #[arg(long, env = "TRIBUTARY_UPLOAD_PURGE_AFTER", value_parser = registry::config::duration::seconds_or_duration)]
    upload_purge_after: Option<std::time::Duration>,
    /// How often the upload purge runs: seconds or e.g. 1h [default: 1h].
    #[arg(long, env = "TRIBUTARY_UPLOAD_PURGE_INTERVAL", value_parser = registry::config::duration::seconds_or_duration)]
    upload_purge_interval: Option<std::time::Duration>,
    /// Refuse every write (pushes, deletes, tag changes, imports); the admin API cannot lift it [default: false].
    #[arg(long, env = "TRIBUTARY_READ_ONLY", value_name = "BOOL", num_args = 0..=1, default_missing_value = "true",
        value_parser = clap::builder::BoolishValueParser::new())]
    read_only: Option<bool>,
    /// Serve /metrics and time requests and store operations (`[metrics] enabled`) [default: true].
    #[arg(long = "metrics", env = "TRIBUTARY_METRICS_ENABLED", value_name = "BOOL", num_args = 0..=1,
        default_missing_value = "true", value_parser = clap::builder::BoolishValueParser::new())]
    metrics_enabled: Option<bool>,
    /// Let anyone read /metrics without credentials (`[metrics] anonymous`); otherwise a cluster-admin token is
    /// needed [default: false].
    #[arg(long, env = "TRIBUTARY_METRICS_ANONYMOUS", value_name = "BOOL", num_args = 0..=1,
        default_missing_value = "true", value_parser = clap::builder::BoolishValueParser::new())]
    metrics_anonymous: Option<bool>,
    /// Blob and metadata stores (`[storage]` in the configuration file).
    #[command(flatten)]
    storage: registry::config::storage::StorageSettings,
    /// Limits (`[limits]` in the configuration file).
    #[command(flatten)]
    limits: registry::config::limits::LimitsSettings,
    /// The audit log (`[audit]` in the configuration file).
    #[command(flatten)]
    audit: registry::config::limits::AuditSettings,
    /// Image lookup admission and image-change triggers (`[cluster]` in the configuration file).
    #[command(flatten)]
    cluster: registry::config::cluster::ClusterSettings,
}

/// `oc -n ns tag …` works, and so does `tributary -n ns tag …`: a leading `-n NS` / `--namespace NS` (or
/// `-nNS`, `--namespace=NS`) moves after the verb, where each verb's own `-n` takes it (before a `--`, if any).
fn namespace_after_verb(mut args: Vec<std::ffi::OsString>) -> Vec<std::ffi::OsString> {
    let mut moved = Vec::new();
    while args.len() > 1 {
        let first = args[1].to_string_lossy().into_owned();
        let takes = match first.as_str() {
            "-n" | "--namespace" if args.len() > 2 => 2,
            f if (f.starts_with("-n") && f.len() > 2) || f.starts_with("--namespace=") => 1,
            _ => break,
        };
        moved.extend(args.drain(1..1 + takes));
    }
    let at = args.iter().position(|a| a == "--").unwrap_or(args.len());
    args.splice(at..at, moved);
    args
}

/// glibc gives each thread that allocates under contention a heap arena of its own (up to 8 per core), and memory
/// freed in one arena is not reused by another: under the bench's mixed load the threads writing uploads left the
/// server's peak RSS at 42 MiB; with two arenas it stays at 35 MiB, at no cost the bench can see. An explicit
/// `MALLOC_ARENA_MAX` wins.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
#[allow(unsafe_code)]
fn limit_malloc_arenas() {
    if std::env::var_os("MALLOC_ARENA_MAX").is_none() {
        // SAFETY: mallopt only sets an allocator parameter; it runs first in main, before any other thread exists.
        unsafe {
            libc::mallopt(libc::M_ARENA_MAX, 2);
        }
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn limit_malloc_arenas() {}

fn main() -> std::process::ExitCode {
    limit_malloc_arenas();
    let cli = Cli::parse_from(namespace_after_verb(std::env::args_os().collect()));
    logging::init(cli.log_format);
    let (done, client) = match cli.command {
        Command::Serve(args) => (serve(args), false),
        Command::Version => {
            println!("tributary {}", registry::LONG_VERSION);
            (Ok(()), false)
        }
        Command::Client(c) => (cli::run(c), true),
    };
    match done {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            // One line with its causes, never a backtrace (RUST_BACKTRACE is set on many developers' machines).
            eprintln!("error: {e:#}");
            // A client verb's code says what happened (`cli::exit_code`); the server's is 1.
            std::process::ExitCode::from(if client { cli::exit_code(&e) } else { 1 })
        }
    }
}

fn serve(args: ServeArgs) -> anyhow::Result<()> {
    let shutdown_timeout = Duration::from_secs(args.shutdown_timeout);
    let overrides = Overrides {
        listen: args.listen,
        data_dir: args.data_dir,
        public_host: args.public_host,
        max_manifest_bytes: args.max_manifest_bytes,
        auth: args.auth,
        admin_token: args.admin_token,
        tls_cert: args.tls_cert,
        tls_key: args.tls_key,
        webhooks: args.webhooks,
        allowed_registries: args.allowed_registries,
        outbound_allow_hosts: args.outbound_allow_hosts,
        outbound_deny_private: args.outbound_deny_private,
        upstream_connect_timeout: args.upstream_connect_timeout,
        upstream_read_timeout: args.upstream_read_timeout,
        scheduled_import_interval: args.scheduled_import_interval,
        upload_purge_after: args.upload_purge_after,
        upload_purge_interval: args.upload_purge_interval,
        read_only: args.read_only,
        storage: args.storage,
        limits: args.limits,
        audit: args.audit,
        metrics_enabled: args.metrics_enabled,
        metrics_anonymous: args.metrics_anonymous,
        cluster: args.cluster,
    };
    let mut config = Config::load(args.config.as_deref(), overrides.clone())?;
    let tls = match &config.tls {
        Some((cert, key)) => Some(registry::http::tls::server_config(cert, key)?),
        None => None,
    };
    let listener =
        TcpListener::bind(config.listen).map_err(|e| anyhow::anyhow!("listening on {}: {e}", config.listen))?;
    let bound = listener.local_addr()?;
    if overrides.public_host.is_none() && config.listen.port() == 0 {
        config.public_host = registry::config::default_public_host(bound);
    }
    config.listen = bound;
    actix_web::rt::System::new().block_on(async move {
        let registry = registry::open(&config).await?;
        registry::check(&registry).await?;
        cli::bootstrap(&registry, &config).await?;
        let background = registry::spawn_background(&registry, &config);
        let scheme = if tls.is_some() { "https" } else { "http" };
        let signals = StopSignals::install().map_err(|e| anyhow::anyhow!("handling SIGTERM and SIGINT: {e}"))?;
        let audit = registry::audit::AuditLog::open(&config.audit)?;
        let options =
            registry::http::ServeOptions { shutdown_timeout, os_signals: false, limits: config.limits.clone(), audit };
        let server = registry::http::serve_with(registry, listener, tls, options)?;
        actix_web::rt::spawn(stop_on_signals(signals, server.handle(), shutdown_timeout));
        println!("tributary listening on {scheme}://{bound}");
        tracing::info!(
            listen = %bound,
            data_dir = %config.data_dir.display(),
            public_host = %config.public_host,
            version = registry::LONG_VERSION,
            "serving"
        );
        let served = server.await;
        // Stopped (SIGTERM, SIGINT): the webhook cursor is saved and the leases handed over before exiting; the
        // stores are closed (redb: flushed) as the last handles on them drop.
        background.stop().await;
        served?;
        tracing::info!("stopped");
        Ok(())
    })
}

/// SIGTERM and SIGINT, caught from now on (before the server listens, so that no signal in between kills it).
struct StopSignals {
    term: actix_web::rt::signal::unix::Signal,
    int: actix_web::rt::signal::unix::Signal,
}

impl StopSignals {
    fn install() -> std::io::Result<StopSignals> {
        use actix_web::rt::signal::unix::{signal, SignalKind};
        Ok(StopSignals { term: signal(SignalKind::terminate())?, int: signal(SignalKind::interrupt())? })
    }

    async fn next(&mut self) -> &'static str {
        tokio::select! {
            _ = self.term.recv() => "SIGTERM",
            _ = self.int.recv() => "SIGINT",
        }
    }
}

/// The first SIGTERM or SIGINT stops the server gracefully: the listener closes at once (new connections are
/// refused), in-flight requests get `deadline` to finish. A second signal stops it at once.
async fn stop_on_signals(mut signals: StopSignals, server: ServerHandle, deadline: Duration) {
    let name = signals.next().await;
    tracing::info!(
        signal = name,
        deadline_secs = deadline.as_secs(),
        "stopping: new connections refused, in-flight requests may finish (a second signal stops at once)"
    );
    let graceful = server.stop(true);
    tokio::select! {
        _ = graceful => {}
        name = signals.next() => {
            tracing::warn!(signal = name, "second signal: stopping at once");
            server.stop(false).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::namespace_after_verb;

    #[test]
    fn the_command_line_is_consistent() {
        <super::Cli as clap::CommandFactory>::command().debug_assert();
    }

    fn moved(args: &[&str]) -> Vec<String> {
        let args = args.iter().map(std::ffi::OsString::from).collect();
        namespace_after_verb(args).into_iter().map(|a| a.into_string().unwrap()).collect()
    }

    #[test]
    fn a_leading_namespace_moves_after_the_verb() {
        assert_eq!(moved(&["t", "-n", "ns", "tag", "a:1", "a:2"]), ["t", "tag", "a:1", "a:2", "-n", "ns"]);
        assert_eq!(moved(&["t", "--namespace=ns", "get", "is"]), ["t", "get", "is", "--namespace=ns"]);
        assert_eq!(moved(&["t", "-nns", "describe", "is/a"]), ["t", "describe", "is/a", "-nns"]);
        assert_eq!(moved(&["t", "-n", "ns", "x", "--", "-y"]), ["t", "x", "-n", "ns", "--", "-y"]);
        assert_eq!(moved(&["t", "tag", "-n", "ns", "a:1", "a:2"]), ["t", "tag", "-n", "ns", "a:1", "a:2"]);
        assert_eq!(moved(&["t", "-n"]), ["t", "-n"]);
    }
}
