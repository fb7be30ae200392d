#!/usr/bin/env bash
# Installs what Tributary's tests need, skipping whatever is already there:
#   - Debian packages: the real clients and tools the end-to-end tests drive, and the compose
#     implementation and nginx that check docker-compose.yml and deploy/nginx.conf
#   - rustup components rustfmt and clippy
# Run it directly (`scripts/install-deps.sh`) or source it and call install_test_deps.
set -euo pipefail

TRIBUTARY_APT_PACKAGES=(
    skopeo podman buildah umoci busybox-static
    docker.io docker-registry etcd-server
    docker-compose nginx-light
    jq curl ca-certificates
)

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

install_test_deps() {
    install_apt_packages
    install_rust_components
}

if [ "${BASH_SOURCE[0]}" = "$0" ]; then
    install_test_deps
fi
