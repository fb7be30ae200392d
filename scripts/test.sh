#!/usr/bin/env bash
# Installs the test dependencies that are missing, then runs every check CI runs:
# formatting, clippy, all tests (unit, integration and end-to-end with real clients), and a bounded run of every
# fuzz target.
#
#   scripts/test.sh
#
# Environment: TRIBUTARY_E2E_REQUIRED=1 makes an end-to-end test fail, rather than skip, when
# a client tool is missing (CI sets it). CARGO_TARGET_DIR is respected.
set -euo pipefail
cd "$(dirname "$0")/.."

# shellcheck source=scripts/install-deps.sh
source scripts/install-deps.sh
install_test_deps

export CARGO_TERM_COLOR="${CARGO_TERM_COLOR:-never}"

# Every step runs even if an earlier one failed; the script fails at the end if any did.
failed=()
step() {
    echo
    echo "=== $* ($(date +%T))"
    "$@" || failed+=("$*")
}

step cargo fmt --all -- --check
step cargo clippy --workspace --all-targets -- -D warnings
# The end-to-end tests run the tributary binary; build it first so they never see a stale one.
step cargo build -p registry --bin tributary
step cargo test --workspace --no-fail-fast
# Every fuzz target for a bounded time (TRIBUTARY_FUZZ_SECONDS each, default 60; 0 skips).
fuzz_seconds="${TRIBUTARY_FUZZ_SECONDS:-60}"
if [ "$fuzz_seconds" != 0 ]; then
    step scripts/fuzz.sh "$fuzz_seconds"
fi

echo
if [ ${#failed[@]} -gt 0 ]; then
    echo "=== FAILED ($(date +%T)):"
    printf '    %s\n' "${failed[@]}"
    exit 1
fi
echo "=== all checks passed ($(date +%T))"
