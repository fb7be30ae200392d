#!/usr/bin/env bash
# Runs docker-compose.yml itself, end to end, on this Docker host, and checks it with real clients:
#
#   1. builds tributary:local from the Dockerfile (BuildKit; `--network host`, see below)
#   2. `up -d`: etcd, the S3 store, the bucket job, 3 registry replicas, nginx; waits until all are healthy
#   3. `tributary new-project ns` in a replica (as the README says), then `skopeo copy` of a small OCI image
#      (made here with umoci) to localhost:$PORT/ns/app:1 through the load balancer, pulls it back and
#      compares digests, and checks the load balancer spread the requests over more than one replica
#   4. the blobs are in the bucket (`mc ls -r`), the metadata in etcd (`etcdctl get --prefix /tributary/`)
#   5. `up -d --scale registry=5`: five healthy replicas, the image still pulls, `ps`
#   6. `down -v` (also on failure; KEEP=1 leaves it running)
#
# On a machine that cannot pull from Docker Hub or quay.io, run scripts/compose-local-images.sh first: it
# makes LOCAL STAND-INS under the names the files use (Debian's etcd 3.4 and nginx 1.22, and moto's S3
# server instead of MinIO, which keeps objects in memory; see that script's header).
#
# Only the commands the real images have are used (etcdctl, mc, the tributary client), so the script runs
# the same against the official images.
#
# Environment: DOCKER (the docker CLI, default docker; its `docker build` must do BuildKit: buildx, or a
# CLI older than 23 with DOCKER_BUILDKIT=1), COMPOSE (default `docker compose` when present, else
# docker-compose), PORT (host port of the load balancer, default 5000, published on 127.0.0.1 only),
# COMPOSE_PROJECT_NAME (default tributary-smoke), BUILD_NETWORK (`docker build --network`, default host:
# a daemon without iptables NAT gives build containers no way out to crates.io and Debian's mirror;
# empty for the daemon's default), TRIBUTARY_GIT_COMMIT (what `tributary version` shows, default HEAD's),
# NO_BUILD=1 (use the tributary:local there is), KEEP=1.
# Needs: docker, docker-compose (or the compose plugin), skopeo, umoci, openssl, ss, jq.
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
docker=${DOCKER:-docker}
if [ -z "${COMPOSE:-}" ]; then
    if "$docker" compose version >/dev/null 2>&1; then COMPOSE="$docker compose"; else COMPOSE=docker-compose; fi
fi
port=${PORT:-5000}
host="localhost:$port"
export COMPOSE_PROJECT_NAME=${COMPOSE_PROJECT_NAME:-tributary-smoke}
export TRIBUTARY_ADMIN_TOKEN=${TRIBUTARY_ADMIN_TOKEN:-$(openssl rand -hex 32)}
export TRIBUTARY_LB_PUBLISH="127.0.0.1:$port"
export TRIBUTARY_PUBLIC_HOST="$host"
bucket=${TRIBUTARY_S3_BUCKET:-tributary}
creds="admin:$TRIBUTARY_ADMIN_TOKEN"
tmp=$(mktemp -d /tmp/compose-smoke.XXXXXX)

step() { printf '\n==> %s\n' "$*"; }
ok() { echo "    ok: $*"; }
fail() {
    echo "compose-smoke: FAILED: $*" >&2
    $COMPOSE ps >&2 || true
    $COMPOSE logs --tail=30 >&2 || true
    exit 1
}
compose() { $COMPOSE "$@"; }

cleanup() {
    local rc=$?
    if [ -n "${KEEP:-}" ]; then
        echo "KEEP=1: left running (project $COMPOSE_PROJECT_NAME, token in $tmp/token)"
        echo "$TRIBUTARY_ADMIN_TOKEN" >"$tmp/token"
        return
    fi
    step "down -v"
    compose down -v --remove-orphans || true
    rm -rf "$tmp"
    [ "$rc" = 0 ] && echo "compose-smoke: all checks passed" || echo "compose-smoke: FAILED (exit $rc)" >&2
}

# The containers of a compose service, one `name status` line each.
states() {
    "$docker" ps -a --filter "label=com.docker.compose.project=$COMPOSE_PROJECT_NAME" \
        --filter "label=com.docker.compose.service=$1" --format '{{.Names}} {{.Status}}'
}
# Waits until service $1 has exactly $2 containers, all "(healthy)".
wait_healthy() {
    local service=$1 want=$2 deadline=$((SECONDS + ${3:-180})) lines
    while :; do
        lines=$(states "$service")
        if [ "$(grep -c '(healthy)' <<<"$lines")" = "$want" ] && [ "$(grep -c . <<<"$lines")" = "$want" ]; then
            sed 's/^/    /' <<<"$lines"
            ok "$service: $want healthy"
            return
        fi
        [ $SECONDS -lt "$deadline" ] || fail "$service: not $want healthy containers in time: $(echo $lines)"
        sleep 2
    done
}

for tool in "$docker" skopeo umoci openssl ss jq; do
    command -v "$tool" >/dev/null || { echo "compose-smoke: $tool is missing" >&2; exit 1; }
done
$COMPOSE version >/dev/null || { echo "compose-smoke: no compose ($COMPOSE)" >&2; exit 1; }
if ss -Hltn "sport = :$port" | grep -q .; then
    echo "compose-smoke: port $port is in use on this host; set PORT" >&2
    exit 1
fi
trap cleanup EXIT

step "compose config ($COMPOSE)"
compose config -q || fail "compose config"
ok "docker-compose.yml accepted; load balancer on $TRIBUTARY_LB_PUBLISH"

if [ -z "${NO_BUILD:-}" ]; then
    step "build tributary:local from the Dockerfile"
    build=(build)
    if "$docker" buildx version >/dev/null 2>&1; then
        build=(buildx build --load)
    elif [ "$("$docker" version --format '{{.Client.Version}}' | cut -d. -f1)" -lt 23 ]; then
        export DOCKER_BUILDKIT=1 # the CLI's own BuildKit client
    else
        fail "$docker has no buildx and is too new for DOCKER_BUILDKIT=1 without it: install docker-buildx," \
            "or set DOCKER to an older CLI (the Dockerfile's cache mounts need BuildKit)"
    fi
    [ -n "${BUILD_NETWORK-host}" ] && build+=(--network "${BUILD_NETWORK-host}")
    start=$SECONDS
    "$docker" "${build[@]}" -t tributary:local \
        --build-arg TRIBUTARY_GIT_COMMIT="${TRIBUTARY_GIT_COMMIT:-$(git rev-parse --short=12 HEAD 2>/dev/null || echo unknown)}" . \
        || fail "docker build"
    ok "built in $((SECONDS - start)) s: $("$docker" run --rm tributary:local version 2>&1 | head -n1)"
fi

step "up -d (3 replicas)"
compose up -d --no-build || fail "compose up"
for s in etcd minio; do wait_healthy "$s" 1; done
[ "$(states createbucket)" != "" ] && grep -q 'Exited (0)' <<<"$(states createbucket)" \
    || fail "createbucket did not exit 0: $(states createbucket)"
ok "createbucket: $(states createbucket)"
wait_healthy registry 3
wait_healthy lb 1
compose ps

step "tributary new-project ns (the README's client step, in a replica)"
compose exec -T -e TRIBUTARY_SERVER="http://localhost:5000" -e TRIBUTARY_TOKEN="$TRIBUTARY_ADMIN_TOKEN" \
    registry tributary new-project ns || fail "tributary new-project ns"

step "push a small image with skopeo through the load balancer"
layout="$tmp/layout"
umoci init --layout "$layout"
umoci new --image "$layout:1"
mkdir -p "$tmp/files"
echo "hello from compose-smoke $(date -u +%FT%TZ)" >"$tmp/files/hello.txt"
head -c 3000000 /dev/urandom >"$tmp/files/random.bin" # a layer of a few MB, not one request's worth
umoci insert --image "$layout:1" "$tmp/files/hello.txt" /hello.txt
umoci insert --image "$layout:1" "$tmp/files/random.bin" /random.bin
umoci config --image "$layout:1" --config.cmd /bin/true
local_digest=$(skopeo inspect --format '{{.Digest}}' "oci:$layout:1")
local_layers=$(skopeo inspect --format '{{range .Layers}}{{.}} {{end}}' "oci:$layout:1")
echo "    local image: $local_digest; layers: $local_layers"
skopeo copy --quiet --dest-tls-verify=false --dest-creds "$creds" --digestfile "$tmp/pushed" \
    "oci:$layout:1" "docker://$host/ns/app:1" || fail "skopeo copy (push)"
pushed=$(cat "$tmp/pushed")
[ "$pushed" = "$local_digest" ] || fail "pushed manifest $pushed, local $local_digest"
ok "pushed localhost:$port/ns/app:1 @ $pushed"

step "pull it back through the load balancer and compare"
remote=$(skopeo inspect --tls-verify=false --creds "$creds" --format '{{.Digest}}' "docker://$host/ns/app:1") \
    || fail "skopeo inspect"
[ "$remote" = "$local_digest" ] || fail "registry says $remote, local $local_digest"
skopeo copy --quiet --src-tls-verify=false --src-creds "$creds" "docker://$host/ns/app:1" "oci:$tmp/pulled:1" \
    || fail "skopeo copy (pull)"
pulled=$(skopeo inspect --format '{{.Digest}}' "oci:$tmp/pulled:1")
[ "$pulled" = "$local_digest" ] || fail "pulled manifest $pulled, pushed $local_digest"
for layer in $local_layers; do
    [ "$(sha256sum <"$tmp/pulled/blobs/sha256/${layer#sha256:}" | cut -d' ' -f1)" = "${layer#sha256:}" ] \
        || fail "pulled layer $layer has other bytes"
done
ok "pulled @ $pulled, every layer byte-equal"
for _ in 1 2 3 4 5 6; do
    skopeo inspect --raw --tls-verify=false --creds "$creds" "docker://$host/ns/app:1" >/dev/null
done
upstreams=$(compose logs --no-color lb | grep -o 'upstream=[0-9.]*:5000' | sort -u)
[ "$(grep -c . <<<"$upstreams")" -ge 2 ] || fail "the load balancer used one replica only: $upstreams"
ok "nginx spread the requests over $(grep -c . <<<"$upstreams") replicas: $(echo $upstreams)"

step "the blobs are in the S3 bucket, the metadata in etcd"
listing=$(compose run --rm --no-deps -T createbucket "mc ls --recursive minio/\$BUCKET") || fail "mc ls"
sed 's/^/    /' <<<"$listing"
# A blob is at its content-addressed key, or (an upload finished on S3) where etcd's blob-objects/<digest> says.
for layer in $local_layers; do
    hex=${layer#sha256:}
    key="blobs/sha256/${hex:0:2}/$hex"
    if ! grep -q " $key\$" <<<"$listing"; then
        key=$(compose exec -T etcd etcdctl --endpoints=http://127.0.0.1:2379 get --print-value-only \
            "/tributary/blob-objects/$layer" | jq -r .path)
        grep -q " $key\$" <<<"$listing" || fail "layer $layer is not in bucket $bucket (etcd says: ${key:-nothing})"
    fi
    echo "    $layer -> s3://$bucket/$key"
done
ok "every layer is in bucket $bucket"
keys=$(compose exec -T etcd etcdctl --endpoints=http://127.0.0.1:2379 get --prefix /tributary/ --keys-only \
    | grep .) || fail "etcdctl get"
head -n 15 <<<"$keys" | sed 's/^/    /'
echo "    ($(grep -c . <<<"$keys") keys under /tributary/)"
for key in /tributary/namespaces/ns /tributary/istags/ns/app/1 "/tributary/images/$local_digest"; do
    grep -qxF "$key" <<<"$keys" || fail "etcd has no key $key"
done
ok "metadata in etcd: the project ns, the tag ns/app:1, the image $local_digest"

step "scale to 5 replicas"
compose up -d --no-build --scale registry=5 || fail "compose up --scale registry=5"
wait_healthy registry 5
remote=$(skopeo inspect --tls-verify=false --creds "$creds" --format '{{.Digest}}' "docker://$host/ns/app:1")
[ "$remote" = "$local_digest" ] || fail "after scaling: $remote"
ok "after scaling, ns/app:1 @ $remote"
compose ps
