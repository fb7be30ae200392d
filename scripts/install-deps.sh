#!/usr/bin/env bash
# Installs what Tributary's tests need, skipping whatever is already there:
#   - Debian packages: the real clients and tools the end-to-end tests drive, etcd (the tests start their own
#     etcd servers), protoc (the etcd client crate's build needs it), and the compose implementation and nginx
#     that check docker-compose.yml and deploy/nginx.conf and balance the multi-replica test
#   - chromium and npm (the web console's browser test), and the test's npm packages (`npm ci` in console/tests)
#   - rustup components rustfmt and clippy
#   - moto's S3 server (the S3 blob-store tests), in a virtualenv under ~/.cache unless `moto_server` is on PATH
#     or TRIBUTARY_MOTO_BIN names it; exports TRIBUTARY_MOTO_BIN when sourced
# Run it directly (`scripts/install-deps.sh`) or source it and call install_test_deps.
set -euo pipefail

TRIBUTARY_APT_PACKAGES=(
    skopeo podman buildah umoci busybox-static
    docker.io docker-registry etcd-server protobuf-compiler
    docker-compose nginx-light
    jq curl ca-certificates python3-venv
    chromium fonts-dejavu-core
)

TRIBUTARY_MOTO_VERSION=5.2.1

_tributary_sudo() {
    if [ "$(id -u)" = 0 ]; then
        "$@"
    elif command -v sudo >/dev/null; then
        sudo "$@"
    else
        echo "install-deps: not root and no sudo; cannot run: $*" >&2
        return 1
    fi
}

install_apt_packages() {
    local missing=() p
    if ! command -v dpkg-query >/dev/null; then
        echo "install-deps: not a Debian-like system; install these yourself: ${TRIBUTARY_APT_PACKAGES[*]}" >&2
        return 0
    fi
    for p in "${TRIBUTARY_APT_PACKAGES[@]}"; do
        dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
    done
    if [ ${#missing[@]} -eq 0 ]; then
        echo "install-deps: Debian packages present"
        return 0
    fi
    echo "install-deps: installing ${missing[*]}"
    local apt_opts=(-o DPkg::Lock::Timeout=600 -o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold)
    _tributary_sudo env DEBIAN_FRONTEND=noninteractive apt-get "${apt_opts[@]}" update -qq
    _tributary_sudo env DEBIAN_FRONTEND=noninteractive NEEDRESTART_MODE=a \
        apt-get "${apt_opts[@]}" install -y -qq "${missing[@]}" >/tmp/tributary-apt-install.log 2>&1 \
        || { tail -50 /tmp/tributary-apt-install.log >&2; return 1; }
    echo "install-deps: installed ${missing[*]}"
}

install_rust_components() {
    local c
    for c in rustfmt clippy; do
        if ! cargo "${c/rustfmt/fmt}" --version >/dev/null 2>&1; then
            if command -v rustup >/dev/null; then
                rustup component add "$c"
            else
                echo "install-deps: cargo $c missing and no rustup to add it" >&2
                return 1
            fi
        fi
    done
}

install_moto() {
    if [ -n "${TRIBUTARY_MOTO_BIN:-}" ] || command -v moto_server >/dev/null; then
        echo "install-deps: moto_server present"
        return 0
    fi
    local venv="${XDG_CACHE_HOME:-$HOME/.cache}/tributary-moto-$TRIBUTARY_MOTO_VERSION"
    if [ ! -x "$venv/bin/moto_server" ]; then
        echo "install-deps: installing moto[server]==$TRIBUTARY_MOTO_VERSION in $venv"
        python3 -m venv "$venv"
        "$venv/bin/pip" install --quiet "moto[server]==$TRIBUTARY_MOTO_VERSION"
    fi
    export TRIBUTARY_MOTO_BIN="$venv/bin/moto_server"
}

# The console test's packages (playwright-core, driving the Debian chromium above), as locked.
install_console_test_packages() {
    local dir
    dir="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)/console/tests"
    if [ -d "$dir/node_modules/playwright-core" ] && [ "$dir/node_modules/.package-lock.json" -nt "$dir/package-lock.json" ]; then
        echo "install-deps: console test packages present"
        return 0
    fi
    if ! command -v npm >/dev/null; then
        # Debian's node and npm, unless a node with its own npm is already installed.
        echo "install-deps: installing nodejs npm"
        _tributary_sudo env DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=600 install -y -qq nodejs npm \
            >/tmp/tributary-apt-install.log 2>&1 || { tail -50 /tmp/tributary-apt-install.log >&2; return 1; }
    fi
    echo "install-deps: npm ci in $dir"
    (cd "$dir" && npm ci --no-audit --no-fund --loglevel=error)
}

install_test_deps() {
    install_apt_packages
    install_rust_components
    install_moto
    install_console_test_packages
}

if [ "${BASH_SOURCE[0]}" = "$0" ]; then
    install_test_deps
fi
