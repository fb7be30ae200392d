//! Command-line entry point: parses flags, runs [`conformance::run`], prints one line per check
//! and the `N passed, M failed` summary, and exits non-zero on failures.

use clap::Parser;

/// Run OCI Distribution v1.1 (+ Tributary image stream) conformance checks against a registry.
#[derive(Parser, Debug)]
#[command(name = "conformance", version)]
struct Args {
    /// Registry base URL, e.g. http://127.0.0.1:5000
    #[arg(long, env = "CONFORMANCE_URL")]
    url: String,
    /// Bearer token; also the Basic-auth password (user `tributary`) for a token realm
    #[arg(long, env = "CONFORMANCE_TOKEN")]
    token: Option<String>,
    /// First component of the repository names used
    #[arg(long, default_value = "conformance")]
    namespace: String,
    /// Run only this group (repeatable or comma-separated)
    #[arg(long, value_delimiter = ',', value_parser = clap::builder::PossibleValuesParser::new(conformance::GROUPS))]
    only: Vec<String>,
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let args = Args::parse();
    let config = conformance::Config {
        url: args.url,
        token: args.token,
        namespace: args.namespace,
        only: args.only,
        print: true,
    };
    let report = conformance::run(config).await;
    println!("{}", report.summary());
    if report.success() {
        std::process::ExitCode::SUCCESS
    } else {
        std::process::ExitCode::FAILURE
    }
}
