#!/usr/bin/env bash
# Installs what Tributary's tests need, skipping whatever is already there:
#   - Debian packages: the real clients and tools the end-to-end tests drive, etcd (the tests start their own
#     etcd servers) and protoc (the etcd client crate's build needs it)
#   - PyPI: moto[server], the S3-compatible server the tests start (moto_server)
#   - rustup components rustfmt and clippy
# Run it directly (`scripts/install-deps.sh`) or source it and call install_test_deps.
set -euo pipefail

TRIBUTARY_APT_PACKAGES=(
    skopeo podman buildah umoci busybox-static
    docker.io docker-registry etcd-server protobuf-compiler
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

# The S3 server the tests start. Debian has no package of it; pip installs it for the user running the tests.
install_python_packages() {
    if command -v moto_server >/dev/null; then
        echo "install-deps: moto_server present"
        return 0
    fi
    local pip
    if command -v pip3 >/dev/null; then pip=pip3; elif command -v pip >/dev/null; then pip=pip; else
        echo "install-deps: no pip to install moto[server] with" >&2
        return 1
    fi
    echo "install-deps: installing moto[server]"
    "$pip" install -q 'moto[server]>=5,<6' 2>/dev/null \
        || "$pip" install -q --break-system-packages 'moto[server]>=5,<6'
    # pyenv shims and ~/.local/bin are where pip puts the script.
    hash -r
    command -v pyenv >/dev/null && pyenv rehash || true
    command -v moto_server >/dev/null || export PATH="$HOME/.local/bin:$PATH"
    command -v moto_server >/dev/null || { echo "install-deps: moto_server not found after pip" >&2; return 1; }
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
    install_python_packages
    install_rust_components
}

if [ "${BASH_SOURCE[0]}" = "$0" ]; then
    install_test_deps
fi
