//! Log output of the `tributary` binary (main.rs calls [`init`] once, before any command runs): human-readable
//! lines on stderr, coloured only when stderr is a terminal (and `NO_COLOR` is unset), or one JSON object per line
//! with `--log-format json` (`TRIBUTARY_LOG_FORMAT`) for log collectors. `TRIBUTARY_LOG` sets the filter.

use std::io::IsTerminal;

use tracing_subscriber::EnvFilter;

/// Log filter unless `TRIBUTARY_LOG` says otherwise. actix logs each unparsable request at ERROR, and a client told
/// to reach the registry without TLS verification (skopeo, podman) sends a TLS hello first, then falls back to
/// plain HTTP: that client gets its 400 and the log stays quiet.
const DEFAULT_LOG: &str = "info,actix_http::h1::dispatcher=off";

/// How log lines are written.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// Plain lines for people (colours only on a terminal).
    #[default]
    Text,
    /// One JSON object per line: `timestamp`, `level`, `target`, the event's fields at the top level (`message`
    /// among them) and the enclosing `span`.
    Json,
}

/// Installs the global subscriber writing to stderr.
pub fn init(format: LogFormat) {
    let filter = EnvFilter::try_from_env("TRIBUTARY_LOG").unwrap_or_else(|_| EnvFilter::new(DEFAULT_LOG));
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    match format {
        LogFormat::Text => {
            let colour = std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none();
            builder.with_ansi(colour).init();
        }
        LogFormat::Json => builder.with_ansi(false).json().flatten_event(true).with_span_list(false).init(),
    }
}
