//! Conformance runner for Tributary and any OCI Distribution v1.1 registry: runs the push, pull,
//! content-discovery, content-management, error, foreign-layer, token-scope and image-stream checks and
//! returns a [`Report`] of `PASS`/`FAIL`/`SKIP` lines.
//!
//! ```no_run
//! # async fn demo() {
//! let report = conformance::run(conformance::Config::new("http://127.0.0.1:5000")).await;
//! assert!(report.success(), "{}", report.summary());
//! # }
//! ```

pub mod checks;
pub mod client;
pub mod content;
pub mod ops;

use std::fmt;
use std::future::Future;
use std::sync::Mutex;

use client::Client;

/// Check groups, in run order.
pub const GROUPS: &[&str] = &["pull", "push", "discovery", "management", "errors", "foreign", "auth", "streams"];

/// What to run against which registry.
#[derive(Debug, Clone)]
pub struct Config {
    /// Registry base URL, e.g. `http://127.0.0.1:5000`.
    pub url: String,
    /// Bearer token (also the Basic-auth password for a token realm, user `tributary`).
    pub token: Option<String>,
    /// First component of every repository name (`<namespace>/<prefix>-<random>`).
    pub namespace: String,
    /// Groups to run; empty means all of [`GROUPS`].
    pub only: Vec<String>,
    /// Print each result line to stdout as it is recorded.
    pub print: bool,
}

impl Config {
    pub fn new(url: impl Into<String>) -> Self {
        Self { url: url.into(), token: None, namespace: "conformance".into(), only: vec![], print: false }
    }

    fn wants(&self, group: &str) -> bool {
        self.only.is_empty() || self.only.iter().any(|g| g == group)
    }
}

/// Result of one check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Pass,
    Fail(String),
    Skip(String),
}

/// One recorded check.
#[derive(Debug, Clone)]
pub struct CheckResult {
    pub group: String,
    pub name: String,
    pub outcome: Outcome,
}

impl CheckResult {
    /// `group/name`.
    pub fn id(&self) -> String {
        format!("{}/{}", self.group, self.name)
    }
}

impl fmt::Display for CheckResult {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.outcome {
            Outcome::Pass => write!(f, "PASS {}/{}", self.group, self.name),
            Outcome::Fail(r) => write!(f, "FAIL {}/{}: {r}", self.group, self.name),
            Outcome::Skip(r) => write!(f, "SKIP {}/{}: {r}", self.group, self.name),
        }
    }
}

/// All results of a run, plus the lines as printed.
#[derive(Debug, Clone, Default)]
pub struct Report {
    pub results: Vec<CheckResult>,
    /// Output lines (one per check, except a group skipped as a whole prints one line).
    pub lines: Vec<String>,
}

impl Report {
    pub fn passed(&self) -> usize {
        self.count(|o| matches!(o, Outcome::Pass))
    }
    pub fn failed(&self) -> usize {
        self.count(|o| matches!(o, Outcome::Fail(_)))
    }
    pub fn skipped(&self) -> usize {
        self.count(|o| matches!(o, Outcome::Skip(_)))
    }
    fn count(&self, f: impl Fn(&Outcome) -> bool) -> usize {
        self.results.iter().filter(|r| f(&r.outcome)).count()
    }

    /// True when nothing failed.
    pub fn success(&self) -> bool {
        self.failed() == 0
    }

    /// `N passed, M failed, K skipped`.
    pub fn summary(&self) -> String {
        format!("{} passed, {} failed, {} skipped", self.passed(), self.failed(), self.skipped())
    }

    /// Outcome of `group/name`, if it ran.
    pub fn outcome(&self, id: &str) -> Option<&Outcome> {
        self.results.iter().find(|r| r.id() == id).map(|r| &r.outcome)
    }

    /// Results of one group.
    pub fn group<'a>(&'a self, group: &'a str) -> impl Iterator<Item = &'a CheckResult> + 'a {
        self.results.iter().filter(move |r| r.group == group)
    }

    pub fn failures(&self) -> impl Iterator<Item = &CheckResult> {
        self.results.iter().filter(|r| matches!(r.outcome, Outcome::Fail(_)))
    }
}

/// Error marker: a check returning `Err(skip(..))` is recorded as `SKIP`.
#[derive(Debug)]
pub struct Skipped(pub String);

impl fmt::Display for Skipped {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}
impl std::error::Error for Skipped {}

/// Makes a check end as `SKIP reason`.
pub fn skip(reason: impl Into<String>) -> anyhow::Error {
    Skipped(reason.into()).into()
}

/// Shared state of a run: the client, the configuration and the results so far.
pub struct Ctx {
    pub client: Client,
    pub config: Config,
    report: Mutex<Report>,
}

impl Ctx {
    /// A fresh repository name `<namespace>/<prefix>-<random>`.
    pub fn repo(&self, prefix: &str) -> String {
        format!("{}/{prefix}-{}", self.config.namespace, content::rand_id(10))
    }

    pub fn group(&self, name: &'static str) -> Group<'_> {
        Group { ctx: self, name }
    }

    fn record(&self, result: CheckResult, line: Option<String>) {
        let mut report = self.report.lock().expect("report poisoned");
        if let Some(line) = line {
            if self.config.print {
                println!("{line}");
            }
            report.lines.push(line);
        }
        report.results.push(result);
    }
}

/// Records checks of one group.
#[derive(Clone, Copy)]
pub struct Group<'a> {
    pub ctx: &'a Ctx,
    pub name: &'static str,
}

impl<'a> Group<'a> {
    pub fn client(&self) -> &'a Client {
        &self.ctx.client
    }

    /// Runs one check; returns its value when it passed.
    pub async fn check<T>(&self, name: &str, fut: impl Future<Output = anyhow::Result<T>>) -> Option<T> {
        match fut.await {
            Ok(v) => {
                self.record(name, Outcome::Pass);
                Some(v)
            }
            Err(e) => {
                match e.downcast_ref::<Skipped>() {
                    Some(s) => self.record(name, Outcome::Skip(s.0.clone())),
                    None => self.record(name, Outcome::Fail(one_line(&format!("{e:#}")))),
                }
                None
            }
        }
    }

    /// Runs a check only if its prerequisite value is present, else records `SKIP`.
    pub async fn check_with<P, T, F, Fut>(&self, name: &str, dep: Option<P>, what: &str, f: F) -> Option<T>
    where
        F: FnOnce(P) -> Fut,
        Fut: Future<Output = anyhow::Result<T>>,
    {
        match dep {
            Some(p) => self.check(name, f(p)).await,
            None => {
                self.skip(name, &format!("prerequisite failed: {what}"));
                None
            }
        }
    }

    pub fn skip(&self, name: &str, reason: &str) {
        self.record(name, Outcome::Skip(reason.to_string()));
    }

    pub fn fail(&self, name: &str, reason: &str) {
        self.record(name, Outcome::Fail(reason.to_string()));
    }

    /// Records every name as skipped, printing a single `SKIP group/*: reason` line.
    pub fn skip_all(&self, names: &[&str], reason: &str) {
        let line = format!("SKIP {}/*: {reason}", self.name);
        for (i, n) in names.iter().enumerate() {
            let result = CheckResult {
                group: self.name.to_string(),
                name: n.to_string(),
                outcome: Outcome::Skip(reason.to_string()),
            };
            self.ctx.record(result, (i == 0).then(|| line.clone()));
        }
    }

    fn record(&self, name: &str, outcome: Outcome) {
        let result = CheckResult { group: self.name.to_string(), name: name.to_string(), outcome };
        let line = result.to_string();
        self.ctx.record(result, Some(line));
    }
}

fn one_line(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// Runs the selected check groups against `config.url`.
pub async fn run(config: Config) -> Report {
    let client = match Client::new(&config.url, config.token.clone()) {
        Ok(c) => c,
        Err(e) => {
            let result =
                CheckResult { group: "config".into(), name: "url".into(), outcome: Outcome::Fail(format!("{e:#}")) };
            let line = result.to_string();
            if config.print {
                println!("{line}");
            }
            return Report { results: vec![result], lines: vec![line] };
        }
    };
    let ctx = Ctx { client, config, report: Mutex::new(Report::default()) };
    for &group in GROUPS {
        if !ctx.config.wants(group) {
            continue;
        }
        match group {
            "pull" => checks::pull::run(ctx.group("pull")).await,
            "push" => checks::push::run(ctx.group("push")).await,
            "discovery" => checks::discovery::run(ctx.group("discovery")).await,
            "management" => checks::management::run(ctx.group("management")).await,
            "errors" => checks::errors::run(ctx.group("errors")).await,
            "foreign" => checks::foreign::run(ctx.group("foreign")).await,
            "auth" => checks::auth::run(ctx.group("auth")).await,
            "streams" => checks::streams::run(ctx.group("streams")).await,
            _ => unreachable!("unknown group {group}"),
        }
    }
    ctx.report.into_inner().expect("report poisoned")
}
