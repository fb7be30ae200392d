//! Build script of the `registry` crate: records the git commit being built as the compile-time variable
//! `TRIBUTARY_GIT_COMMIT` (read by `registry::GIT_COMMIT`, shown by `tributary version`). An explicit
//! `TRIBUTARY_GIT_COMMIT` in the environment wins (a Docker build without `.git`); outside git, or without a git
//! binary, it is `unknown`. Never fails the build.

use std::process::Command;

fn git(args: &[&str]) -> Option<String> {
    let out = Command::new("git").args(args).output().ok()?;
    if !out.status.success() {
        return None;
    }
    let text = String::from_utf8(out.stdout).ok()?.trim().to_owned();
    (!text.is_empty()).then_some(text)
}

fn main() {
    println!("cargo:rerun-if-env-changed=TRIBUTARY_GIT_COMMIT");
    println!("cargo:rerun-if-changed=build.rs");
    let from_env = std::env::var("TRIBUTARY_GIT_COMMIT").ok().filter(|c| !c.trim().is_empty());
    let commit = from_env.or_else(|| {
        // Built again when HEAD moves (a commit, a checkout): its reflog changes.
        if let Some(reflog) = git(&["rev-parse", "--path-format=absolute", "--git-path", "logs/HEAD"]) {
            if std::path::Path::new(&reflog).is_file() {
                println!("cargo:rerun-if-changed={reflog}");
            }
        }
        git(&["rev-parse", "--short=12", "HEAD"])
    });
    println!("cargo:rustc-env=TRIBUTARY_GIT_COMMIT={}", commit.as_deref().unwrap_or("unknown"));
}
