#!/usr/bin/env bash
# Regenerates registry/link-order.txt, the order in which the linker lays out the functions of a release build of
# `tributary` (registry/build.rs passes it to rust-lld as --symbol-ordering-file): first the functions that
# start-up runs, then those that the common requests run, each named once, and after them everything else, as
# before. The kernel maps a program's code into its resident memory 64 KiB at a time around each page it runs
# (fault-around), so code run at start-up that lies scattered over the 22 MiB of text was 12 MiB of an idle
# server's 20 MiB; packed together it is 4 MiB. Run it again when the names in the file drift from the code: after a
# toolchain or dependency update most names change (`--check` says how many of the file's names the binary has).
#
#   scripts/link-order.sh            records the list again
#   scripts/link-order.sh --check    only says how many of the list's names a release build still defines
#
# It builds the release binary, runs it under valgrind's callgrind (which records every function run) twice,
# once on the filesystem and once on S3 (moto) and etcd, drives each with scripts/train-requests.sh (start-up, one
# request, then pushes, pulls, manifests, tags, tokens), and keeps the names the binary defines. Needs valgrind,
# curl, etcd and moto_server (scripts/install-deps.sh installs the last two).
set -euo pipefail
cd "$(dirname "$0")/.."
out=registry/link-order.txt
target="${CARGO_TARGET_DIR:-target}"
bin="$target/release/tributary"
# The functions BINARY defines, each once (what the list may name; lld skips any other name).
functions_of() { nm --defined-only "$1" | awk '$2 == "t" || $2 == "T" { print $3 }' | sort -u; }

if [ "${1:-}" = --check ]; then
    cargo build --release -p registry --bin tributary
    listed="$(grep -cv '^#' "$out")"
    defined="$(functions_of "$bin" | grep -cFxf <(grep -v '^#' "$out") || true)"
    echo "link-order: the binary defines $defined of the $listed functions $out names"
    exit 0
fi
for tool in valgrind callgrind_control curl etcd nm python3; do
    command -v "$tool" >/dev/null || { echo "link-order: $tool is needed" >&2; exit 1; }
done
moto="${TRIBUTARY_MOTO_BIN:-$(command -v moto_server || true)}"
[ -n "$moto" ] || { echo "link-order: moto_server is needed (TRIBUTARY_MOTO_BIN or on PATH)" >&2; exit 1; }

cargo build --release -p registry --bin tributary
bin="$(realpath "$bin")"
work="$(mktemp -d)"
pids=()
stop_all() {
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
    rm -rf "$work"
}
trap stop_all EXIT

# The administrator's token every run starts with (on etcd there is no admin.token file to read it from).
export TRIBUTARY_ADMIN_TOKEN="trb_$(head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \n')"
free_port() { python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
wait_for() { # URL: waits up to 60 s for any HTTP answer
    for _ in $(seq 600); do
        curl -s -o /dev/null "$1" && return 0
        sleep 0.1
    done
    echo "link-order: nothing answers at $1" >&2
    return 1
}

# run NAME ARGS...: one server under callgrind; dumps its profile after start-up and one request (NAME.cg.1), and
# again after the requests of scripts/train-requests.sh (NAME.cg.2).
run() {
    local name="$1"
    shift
    local port data="$work/$name-data" profile="$work/$name.cg"
    port="$(free_port)"
    valgrind --tool=callgrind --demangle=no --callgrind-out-file="$profile" \
        "$bin" serve --listen "127.0.0.1:$port" --data-dir "$data" "$@" >"$work/$name.log" 2>&1 &
    local pid=$!
    pids+=("$pid")
    wait_for "http://127.0.0.1:$port/v2/"
    curl -s -o /dev/null -u "admin:$TRIBUTARY_ADMIN_TOKEN" "http://127.0.0.1:$port/v2/none/none/tags/list"
    sleep 1
    callgrind_control -d "$pid" >/dev/null
    bash scripts/train-requests.sh "http://127.0.0.1:$port" "$TRIBUTARY_ADMIN_TOKEN"
    callgrind_control -d "$pid" >/dev/null
    kill "$pid"
    wait "$pid" || true
}

# The names of the functions one callgrind dump ran, in the order it first names them.
ran() { grep -h -oE '^c?fn=\([0-9]+\) .*' "$@" | sed -E 's/^c?fn=\([0-9]+\) //'; }

run fs

etcd_port="$(free_port)"
etcd --data-dir "$work/etcd" --listen-client-urls "http://127.0.0.1:$etcd_port" \
    --advertise-client-urls "http://127.0.0.1:$etcd_port" --listen-peer-urls "http://127.0.0.1:$(free_port)" \
    >"$work/etcd.log" 2>&1 &
pids+=($!)
moto_port="$(free_port)"
"$moto" -H 127.0.0.1 -p "$moto_port" >"$work/moto.log" 2>&1 &
pids+=($!)
wait_for "http://127.0.0.1:$moto_port/"
curl -s -o /dev/null -X PUT "http://127.0.0.1:$moto_port/order"
wait_for "http://127.0.0.1:$etcd_port/health"
run s3 --blob-backend s3 --s3-endpoint "http://127.0.0.1:$moto_port" --s3-bucket order \
    --s3-access-key-id testing --s3-secret-access-key testing \
    --metadata-backend etcd --etcd-endpoint "http://127.0.0.1:$etcd_port" --etcd-prefix /order/

# Start-up first (the filesystem's, then what S3 and etcd add), then the requests; each name once, and only the
# names the binary defines (callgrind also names libc's functions and addresses without a name).
functions_of "$bin" >"$work/defined"
{
    ran "$work/fs.cg.1" "$work/s3.cg.1"
    ran "$work/fs.cg.2" "$work/s3.cg.2"
} | awk '!seen[$0]++' | grep -Fxf "$work/defined" >"$work/order"

{
    echo "# The functions start-up and the common requests run, in the order rust-lld lays them out in a release"
    echo "# build of tributary (registry/build.rs). Generated by scripts/link-order.sh with $(rustc --version | cut -d' ' -f1-2); do not edit."
    cat "$work/order"
} >"$out"
echo "link-order: $(wc -l <"$work/order") functions written to $out"
