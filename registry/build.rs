//! Build script of the `registry` crate: records the git commit being built as the compile-time variable
//! `TRIBUTARY_GIT_COMMIT` (read by `registry::GIT_COMMIT`, shown by `tributary version`). An explicit
//! `TRIBUTARY_GIT_COMMIT` in the environment wins (a Docker build without `.git`); outside git, or without a git
//! binary, it is `unknown`. Never fails the build.
//!
//! It also hands rust-lld the link order of a release build of `tributary` (`link-order.txt`, written by
//! `scripts/link-order.sh`): the functions start-up and the common requests run, packed together, so that the code an
//! idle server keeps resident is the code it ran rather than every 64 KiB window of the binary that it ran a
//! function in. Only where rust-lld is the linker (x86-64 Linux with rustc 1.90 or later, unless the build names
//! another linker); `TRIBUTARY_LINK_ORDER=0` turns it off. Names the binary no longer has are skipped silently.

use std::process::Command;

fn git(args: &[&str]) -> Option<String> {
    let out = Command::new("git").args(args).output().ok()?;
    if !out.status.success() {
        return None;
    }
    let text = String::from_utf8(out.stdout).ok()?.trim().to_owned();
    (!text.is_empty()).then_some(text)
}

/// Whether the final link is rust-lld's, which reads `--symbol-ordering-file`: the default of rustc 1.90 and later
/// on x86_64-unknown-linux-gnu, unless the build chooses a linker or linker features of its own.
fn links_with_rust_lld() -> bool {
    let var = |name: &str| std::env::var(name).unwrap_or_default();
    if var("TARGET") != "x86_64-unknown-linux-gnu" || var("TRIBUTARY_LINK_ORDER") == "0" {
        return false;
    }
    // A linker configured for the target (`RUSTC_LINKER`), or chosen in the flags (`-C linker`, `-fuse-ld`).
    let flags = var("CARGO_ENCODED_RUSTFLAGS");
    if std::env::var_os("RUSTC_LINKER").is_some() || flags.contains("linker") || flags.contains("fuse-ld") {
        return false;
    }
    let rustc = std::env::var("RUSTC").unwrap_or_else(|_| "rustc".into());
    let Ok(out) = Command::new(rustc).arg("--version").output() else { return false };
    // "rustc 1.95.0 (59807616e 2026-04-14)"
    let version = String::from_utf8_lossy(&out.stdout);
    let minor = version.split_whitespace().nth(1).and_then(|v| v.split('.').nth(1)).and_then(|m| m.parse().ok());
    minor.is_some_and(|m: u32| m >= 90)
}

fn main() {
    println!("cargo:rerun-if-changed=link-order.txt");
    println!("cargo:rerun-if-env-changed=TRIBUTARY_LINK_ORDER");
    let order = std::path::Path::new(&std::env::var("CARGO_MANIFEST_DIR").unwrap_or_default()).join("link-order.txt");
    if std::env::var("PROFILE").as_deref() == Ok("release") && order.is_file() && links_with_rust_lld() {
        println!("cargo:rustc-link-arg-bin=tributary=-Wl,--symbol-ordering-file={}", order.display());
        println!("cargo:rustc-link-arg-bin=tributary=-Wl,--no-warn-symbol-ordering");
    }

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
