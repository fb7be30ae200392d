#!/usr/bin/env bash
# Runs every fuzz target (fuzz/fuzz_targets) for a bounded time, two at a time, starting from the committed
# corpus (fuzz/corpus/<target>; new inputs go to a scratch copy, never into the repository). Fails when any target
# finds a crash, a panic or a leak; the input that did it is kept under fuzz/artifacts/<target>/.
#
#   scripts/fuzz.sh [SECONDS_PER_TARGET]      (default 60)
#
# Needs a nightly toolchain and cargo-fuzz (installed here when missing).
set -euo pipefail
cd "$(dirname "$0")/../fuzz"
seconds="${1:-60}"

if ! rustup toolchain list | grep -q '^nightly'; then
    rustup toolchain install nightly --profile minimal
fi
if ! command -v cargo-fuzz >/dev/null; then
    cargo install cargo-fuzz --locked
fi

cargo +nightly fuzz build -O
scratch="$(mktemp -d)"
trap 'rm -rf "$scratch"' EXIT
targets=$(cargo +nightly fuzz list)
failed=()

run() {
    local t="$1"
    mkdir -p "$scratch/$t" "corpus/$t"
    # -rss_limit_mb bounds memory per input; -timeout flags an input that takes more than 10 s.
    if cargo +nightly fuzz run -O "$t" "$scratch/$t" "corpus/$t" -- \
        -max_total_time="$seconds" -rss_limit_mb=2048 -timeout=10 -print_final_stats=1 \
        >"$scratch/$t.log" 2>&1; then
        echo "fuzz $t: ok ($(grep -m1 'stat::number_of_executed_units' "$scratch/$t.log" | awk '{print $2}') runs in ${seconds}s, corpus $(find "corpus/$t" -type f | wc -l) committed + $(find "$scratch/$t" -type f | wc -l) new)"
    else
        echo "fuzz $t: FAILED"
        tail -40 "$scratch/$t.log"
        return 1
    fi
}

pids=()
names=()
for t in $targets; do
    run "$t" &
    pids+=($!)
    names+=("$t")
    if [ ${#pids[@]} -ge 2 ]; then
        wait "${pids[0]}" || failed+=("${names[0]}")
        pids=("${pids[@]:1}")
        names=("${names[@]:1}")
    fi
done
for i in "${!pids[@]}"; do
    wait "${pids[$i]}" || failed+=("${names[$i]}")
done

if [ ${#failed[@]} -gt 0 ]; then
    echo "fuzz targets that failed: ${failed[*]} (inputs under fuzz/artifacts/)"
    exit 1
fi
