#!/usr/bin/env bash
# Builds LOCAL STAND-INS, from Debian packages, for the images that docker-compose.yml and the Dockerfile
# name, on a Docker host that cannot pull from Docker Hub or quay.io. The images get the exact names the
# files use (read from them), so `docker-compose up` and `docker build` find them locally and pull nothing.
#
#   sudo scripts/compose-local-images.sh          # then scripts/compose-smoke.sh
#
# Needs: root (debootstrap), docker, debootstrap (apt-get install debootstrap), Debian's mirror, PyPI, and a
# Rust toolchain installed with rustup on this host (copied into the Rust image). Every `docker build` here
# runs with --network host: on a daemon without iptables NAT, containers on a bridge reach no mirror.
# The host's own CA certificates (LOCAL_CA_DIR, default /usr/local/share/ca-certificates: e.g. a TLS-inspecting
# egress proxy's) go into the Debian rootfs, so that cargo and pip in the images trust what the host trusts;
# the official images have only Debian's CA list.
#
# What each stand-in is, and how it differs from the real image:
#   debian:bookworm-slim    debootstrap --variant=minbase bookworm, imported with `docker import`: the same
#                           distribution and release as the official image (a little larger; not byte-equal),
#                           plus the host's local CAs in /usr/local/share/ca-certificates (trusted by every
#                           image that installs Debian's ca-certificates).
#   rust:1-bookworm         that rootfs + gcc, make, pkg-config, libssl-dev, git, curl (a subset of
#                           buildpack-deps) + this host's rustup toolchain at /usr/local/rustup and
#                           /usr/local/cargo with the official image's RUSTUP_HOME, CARGO_HOME and PATH.
#   nginx:1.27              Debian's nginx (1.22, not 1.27) and curl; CMD nginx -g 'daemon off;', STOPSIGNAL
#                           SIGQUIT, as the official image.
#   quay.io/coreos/etcd     Debian's etcd-server and etcd-client (3.4, not 3.5): `etcd` and `etcdctl` on PATH.
#   minio/minio, minio/mc   NOT MinIO (AGPL, not packaged): moto's S3 server (`moto[server]` from PyPI, the one
#                           the CI's S3 tests use) on :9000, with small `minio` and `mc` shims covering only what
#                           the compose file and scripts/compose-smoke.sh run: `minio server DIR [...]`,
#                           `mc ready ALIAS`, `mc mb [--ignore-existing] ALIAS/BUCKET`, `mc ls [-r] ALIAS/BUCKET`.
#                           moto keeps objects IN MEMORY (the /data volume stays empty, a restart of the
#                           container loses every blob), accepts any credentials, and has no console on :9001.
#
# Environment: DOCKER (default docker), DEBIAN_MIRROR (default http://deb.debian.org/debian),
# IMAGES_WORK (scratch directory, default /tmp/tributary-compose-images; deleted at the end),
# LOCAL_CA_DIR, MOTO_VERSION (default 5.2.1), REBUILD=1 (rebuild images that exist already).
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
docker=${DOCKER:-docker}
mirror=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
work=${IMAGES_WORK:-/tmp/tributary-compose-images}
moto_version=${MOTO_VERSION:-5.2.1}
local_ca_dir=${LOCAL_CA_DIR:-/usr/local/share/ca-certificates}

say() { echo "compose-local-images: $*"; }
die() { echo "compose-local-images: FAILED: $*" >&2; exit 1; }

# The names, as docker-compose.yml and the Dockerfile spell them.
image_of() { # $1: repository prefix in docker-compose.yml
    sed -n "s|^ *image: *\\($1:[^ ]*\\) *\$|\\1|p" "$root/docker-compose.yml" | head -n1
}
etcd_image=$(image_of 'quay.io/coreos/etcd')
minio_image=$(image_of 'minio/minio')
mc_image=$(image_of 'minio/mc')
nginx_image=$(image_of 'nginx')
rust_version=$(sed -n 's/^ARG RUST_VERSION=//p' "$root/Dockerfile")
rust_image="rust:${rust_version}-bookworm"
debian_image=$(sed -n 's/^FROM \(debian:[^ ]*\).*/\1/p' "$root/Dockerfile" | head -n1)
for v in etcd_image minio_image mc_image nginx_image rust_version debian_image; do
    [ -n "${!v}" ] || die "could not read $v from docker-compose.yml / Dockerfile"
done
grep -q "^FROM $(printf '%s' "rust:\${RUST_VERSION}-bookworm")" "$root/Dockerfile" \
    || die "the Dockerfile no longer builds FROM rust:\${RUST_VERSION}-bookworm"

[ "$(id -u)" = 0 ] || die "run as root (debootstrap needs it)"
command -v debootstrap >/dev/null || die "debootstrap is missing: apt-get install debootstrap"
"$docker" info >/dev/null || die "no Docker daemon answers ($docker info)"

exists() { [ -z "${REBUILD:-}" ] && "$docker" image inspect "$1" >/dev/null 2>&1; }

# `docker build --network host -t $1` of the Dockerfile on stdin, with context $2.
build() {
    say "building $1 (local stand-in)"
    "$docker" build --network host --quiet -t "$1" -f - "$2" >/dev/null || die "docker build of $1"
}

mkdir -p "$work"
trap 'rm -rf "$work"' EXIT

# --- debian:bookworm-slim ---------------------------------------------------------------------------
if exists "$debian_image"; then
    say "$debian_image present"
else
    say "debootstrap bookworm from $mirror (a few minutes)"
    rm -rf "$work/rootfs"
    debootstrap --variant=minbase bookworm "$work/rootfs" "$mirror" >"$work/debootstrap.log" 2>&1 \
        || { tail -n 20 "$work/debootstrap.log" >&2; die "debootstrap"; }
    rm -rf "$work/rootfs/var/cache/apt/archives/"*.deb "$work/rootfs/var/lib/apt/lists/"*
    # Daemons that a package's postinst would start in a container have no init to talk to.
    printf '#!/bin/sh\nexit 101\n' >"$work/rootfs/usr/sbin/policy-rc.d"
    chmod 0755 "$work/rootfs/usr/sbin/policy-rc.d"
    if compgen -G "$local_ca_dir/*.crt" >/dev/null; then
        say "adding the host's local CAs: $(cd "$local_ca_dir" && echo *.crt)"
        install -d "$work/rootfs/usr/local/share/ca-certificates"
        cp "$local_ca_dir"/*.crt "$work/rootfs/usr/local/share/ca-certificates/"
    fi
    say "importing $debian_image"
    tar -C "$work/rootfs" --numeric-owner -c . \
        | "$docker" import --change 'CMD ["bash"]' --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
            - "$debian_image" >/dev/null
    rm -rf "$work/rootfs"
fi

apt_install="apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends"
apt_clean="rm -rf /var/lib/apt/lists/*"

# --- rust:1-bookworm ------------------------------------------------------------------------------
if exists "$rust_image"; then
    say "$rust_image present"
else
    rustup_home=${RUSTUP_HOME:-$HOME/.rustup}
    cargo_home=${CARGO_HOME:-$HOME/.cargo}
    toolchain=$(rustup show active-toolchain | cut -d' ' -f1)
    [ -d "$rustup_home/toolchains/$toolchain" ] || die "no rustup toolchain $toolchain under $rustup_home"
    say "copying the host's toolchain $toolchain (without its HTML docs)"
    mkdir -p "$work/rust/rustup/toolchains" "$work/rust/cargo/bin"
    tar -C "$rustup_home/toolchains" --exclude="$toolchain/share/doc" -c "$toolchain" \
        | tar -C "$work/rust/rustup/toolchains" -x
    printf 'version = "12"\ndefault_toolchain = "%s"\nprofile = "minimal"\nauto_self_update = "disable"\n' \
        "$toolchain" >"$work/rust/rustup/settings.toml"
    cp "$cargo_home/bin/rustup" "$work/rust/cargo/bin/"
    for proxy in cargo rustc rustdoc rustfmt cargo-fmt cargo-clippy clippy-driver; do
        ln -s rustup "$work/rust/cargo/bin/$proxy"
    done
    build "$rust_image" "$work/rust" <<EOF
FROM $debian_image
RUN $apt_install ca-certificates curl git gcc g++ libc6-dev make pkg-config libssl-dev file xz-utils && $apt_clean
COPY rustup /usr/local/rustup
COPY cargo /usr/local/cargo
ENV RUSTUP_HOME=/usr/local/rustup CARGO_HOME=/usr/local/cargo \
    PATH=/usr/local/cargo/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
RUN cargo --version && rustc --version
EOF
    rm -rf "$work/rust"
fi

# --- nginx ------------------------------------------------------------------------------------------
mkdir -p "$work/empty"
if exists "$nginx_image"; then
    say "$nginx_image present"
else
    build "$nginx_image" "$work/empty" <<EOF
FROM $debian_image
RUN $apt_install nginx-light curl ca-certificates && $apt_clean \
 && rm -f /etc/nginx/sites-enabled/default \
 && ln -sf /dev/stdout /var/log/nginx/access.log && ln -sf /dev/stderr /var/log/nginx/error.log
EXPOSE 80
STOPSIGNAL SIGQUIT
CMD ["nginx", "-g", "daemon off;"]
EOF
fi

# --- etcd -------------------------------------------------------------------------------------------
if exists "$etcd_image"; then
    say "$etcd_image present"
else
    build "$etcd_image" "$work/empty" <<EOF
FROM $debian_image
RUN $apt_install etcd-server etcd-client && $apt_clean && etcd --version && etcdctl version
EXPOSE 2379 2380
CMD ["etcd"]
EOF
fi

# --- MinIO and mc: moto's S3 server behind shims ----------------------------------------------------
if exists "$minio_image" && exists "$mc_image"; then
    say "$minio_image and $mc_image present"
else
    mkdir -p "$work/s3"
    cat >"$work/s3/minio" <<'EOF'
#!/bin/sh
# LOCAL STAND-IN for MinIO's `minio server DIR [--console-address ADDR]`: moto's S3 server on :9000.
# Objects are kept in memory, not in DIR; any credentials are accepted; there is no console.
if [ "${1:-}" != server ] || [ -z "${2:-}" ]; then
    echo "minio stand-in: only 'minio server DIR [--console-address ADDR]' is supported (got: $*)" >&2
    exit 2
fi
mkdir -p "$2"
echo "minio stand-in: moto_server on :9000 (in memory; $2 is not used)" >&2
exec /opt/moto/bin/moto_server --host 0.0.0.0 --port 9000
EOF
    cat >"$work/s3/mc" <<'EOF'
#!/opt/moto/bin/python
"""LOCAL STAND-IN for MinIO's `mc`, with only what docker-compose.yml and scripts/compose-smoke.sh run:
  mc ready ALIAS                           the S3 endpoint answers
  mc mb [--ignore-existing|-p] ALIAS/BUCKET
  mc ls [--recursive|-r] ALIAS/BUCKET[/PREFIX]
ALIAS comes from MC_HOST_<ALIAS>=http://KEY:SECRET@HOST:PORT, or is `local` (this container's :9000)."""
import os, sys, urllib.parse, urllib.request, urllib.error
import boto3, botocore.exceptions


def alias(name):
    url = os.environ.get("MC_HOST_" + name)
    if url is None and name == "local":
        url = "http://%s:%s@127.0.0.1:9000" % (os.environ.get("MINIO_ROOT_USER", "minioadmin"),
                                                os.environ.get("MINIO_ROOT_PASSWORD", "minioadmin"))
    if url is None:
        sys.exit("mc stand-in: unknown alias %r (set MC_HOST_%s)" % (name, name))
    u = urllib.parse.urlsplit(url)
    endpoint = "%s://%s:%s" % (u.scheme, u.hostname, u.port or (443 if u.scheme == "https" else 80))
    return endpoint, urllib.parse.unquote(u.username or ""), urllib.parse.unquote(u.password or "")


def client(name):
    endpoint, key, secret = alias(name)
    return boto3.client("s3", endpoint_url=endpoint, aws_access_key_id=key, aws_secret_access_key=secret,
                        region_name="us-east-1")


def target(arg):
    name, _, rest = arg.partition("/")
    bucket, _, prefix = rest.partition("/")
    return name, bucket, prefix


def main(argv):
    if not argv:
        sys.exit(__doc__)
    cmd, flags = argv[0], [a for a in argv[1:] if a.startswith("-")]
    args = [a for a in argv[1:] if not a.startswith("-")]
    if cmd == "ready" and len(args) == 1:
        endpoint, _, _ = alias(args[0])
        try:
            urllib.request.urlopen(endpoint + "/", timeout=3)
        except urllib.error.HTTPError as e:
            if e.code >= 500:
                sys.exit("mc stand-in: %s answered %d" % (endpoint, e.code))
        except OSError as e:
            sys.exit("mc stand-in: %s: %s" % (endpoint, e))
        print("The cluster is ready")
    elif cmd == "mb" and len(args) == 1:
        name, bucket, _ = target(args[0])
        s3 = client(name)
        try:
            s3.head_bucket(Bucket=bucket)
            exists = True
        except botocore.exceptions.ClientError:
            exists = False
        if exists and not set(flags) & {"--ignore-existing", "-p"}:
            sys.exit("mc stand-in: mb %s: the bucket exists already" % args[0])
        if not exists:
            s3.create_bucket(Bucket=bucket)
        print("Bucket created successfully `%s`." % args[0])
    elif cmd == "ls" and len(args) == 1:
        name, bucket, prefix = target(args[0])
        kw = {"Bucket": bucket, "Prefix": prefix}
        if not set(flags) & {"--recursive", "-r"}:
            kw["Delimiter"] = "/"
        for page in client(name).get_paginator("list_objects_v2").paginate(**kw):
            for p in page.get("CommonPrefixes", []):
                print("%-24s %9s %s" % ("", "0B", p["Prefix"][len(prefix):]))
            for o in page.get("Contents", []):
                print("[%s] %9dB %s" % (o["LastModified"].strftime("%Y-%m-%d %H:%M:%S UTC"), o["Size"],
                                        o["Key"][len(prefix):]))
    else:
        sys.exit("mc stand-in: unsupported: mc %s\n%s" % (" ".join(argv), __doc__))


try:
    main(sys.argv[1:])
except botocore.exceptions.BotoCoreError as e:
    sys.exit("mc stand-in: %s" % e)
except botocore.exceptions.ClientError as e:
    sys.exit("mc stand-in: %s" % e.response["Error"].get("Message", e))
EOF
    build "$minio_image" "$work/s3" <<EOF
FROM $debian_image
RUN $apt_install python3 python3-venv ca-certificates && $apt_clean \
 && python3 -m venv /opt/moto \
 && PIP_CERT=/etc/ssl/certs/ca-certificates.crt /opt/moto/bin/pip install --no-cache-dir --quiet 'moto[server]==$moto_version'
COPY minio mc /usr/bin/
RUN chmod 0755 /usr/bin/minio /usr/bin/mc
LABEL org.opencontainers.image.description="LOCAL STAND-IN for MinIO: moto's S3 server, objects in memory"
EXPOSE 9000
ENTRYPOINT ["minio"]
CMD ["server", "/data"]
EOF
    build "$mc_image" "$work/empty" <<EOF
FROM $minio_image
LABEL org.opencontainers.image.description="LOCAL STAND-IN for MinIO's mc: a shim over boto3"
ENTRYPOINT ["mc"]
CMD []
EOF
fi

say "local stand-in images:"
"$docker" image ls --format '  {{.Repository}}:{{.Tag}}  {{.Size}}' \
    | grep -F -e "$debian_image" -e "$rust_image" -e "$nginx_image" -e "$etcd_image" -e "$minio_image" -e "$mc_image"
