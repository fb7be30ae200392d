#!/usr/bin/env bash
# The requests scripts/link-order.sh records the code of: what the bench's memory rows and a day of docker and
# podman traffic run. A namespace, a monolithic push (16 MiB), a chunked push (two PATCHes), a cross-repository
# mount, a config and a manifest, manifest GETs and HEADs with the administrator's API token and with a registry
# JWT from the token endpoint, blob GETs whole and ranged, tags, the catalog, metrics and health. Fails on any
# unexpected status.
#
#   scripts/train-requests.sh URL ADMIN_TOKEN
set -euo pipefail
url="$1"
auth=(-u "admin:$2")
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

# expect STATUS CURL_ARGS...: one request, failing unless it answers STATUS.
expect() {
    local want="$1" got
    shift
    got="$(curl -s -o /dev/null -w '%{http_code}' "$@")"
    [ "$got" = "$want" ] || { echo "train-requests: $* answered $got, not $want" >&2; exit 1; }
}
# The Location of an answer (absolute), from curl's headers on stdin.
location() { awk -F': ' 'tolower($1) == "location" { print $2 }' | tr -d '\r' | sed "s|^/|$url/|"; }
# with_digest LOCATION DIGEST: the upload URL that finishes with DIGEST.
with_digest() { case "$1" in *\?*) echo "$1&digest=$2" ;; *) echo "$1?digest=$2" ;; esac; }
digest() { echo "sha256:$(sha256sum "$1" | cut -d' ' -f1)"; }
start_upload() { curl -s "${auth[@]}" -X POST -D - -o /dev/null "$url/v2/train/$1/blobs/uploads/" | location; }

expect 201 "${auth[@]}" -X POST -H 'Content-Type: application/json' -d '{"name":"train"}' \
    "$url/apis/tributary.dev/v1/namespaces"
expect 404 "${auth[@]}" "$url/v2/train/none/tags/list"

head -c 16M /dev/urandom >"$work/layer"
layer="$(digest "$work/layer")"
expect 201 "${auth[@]}" -X PUT -H 'Content-Type: application/octet-stream' -T "$work/layer" \
    "$(with_digest "$(start_upload big)" "$layer")"

head -c 12M /dev/urandom >"$work/chunked"
split -b 8M -d "$work/chunked" "$work/part."
at="$(start_upload chunked)"
at="$(curl -s "${auth[@]}" -X PATCH -H 'Content-Type: application/octet-stream' -H 'Content-Range: 0-8388607' \
    -T "$work/part.00" -D - -o /dev/null "$at" | location)"
at="$(curl -s "${auth[@]}" -X PATCH -H 'Content-Type: application/octet-stream' \
    -H 'Content-Range: 8388608-12582911' -T "$work/part.01" -D - -o /dev/null "$at" | location)"
expect 201 "${auth[@]}" -X PUT "$(with_digest "$at" "$(digest "$work/chunked")")"

printf '{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":[]}}' >"$work/config"
config="$(digest "$work/config")"
expect 201 "${auth[@]}" -X PUT -H 'Content-Type: application/octet-stream' --data-binary "@$work/config" \
    "$(with_digest "$(start_upload app)" "$config")"
expect 201 "${auth[@]}" -X POST "$url/v2/train/app/blobs/uploads/?mount=$layer&from=train/big"
manifest="{\"schemaVersion\":2,\"mediaType\":\"application/vnd.oci.image.manifest.v1+json\",\
\"config\":{\"mediaType\":\"application/vnd.oci.image.config.v1+json\",\"digest\":\"$config\",\
\"size\":$(stat -c %s "$work/config")},\"layers\":[{\"mediaType\":\"application/vnd.oci.image.layer.v1.tar+gzip\",\
\"digest\":\"$layer\",\"size\":16777216}]}"
expect 201 "${auth[@]}" -X PUT -H 'Content-Type: application/vnd.oci.image.manifest.v1+json' -d "$manifest" \
    "$url/v2/train/app/manifests/v1"

accept=(-H 'Accept: application/vnd.oci.image.manifest.v1+json')
jwt="$(curl -s "${auth[@]}" "$url/openshift/token?service=tributary&scope=repository:train/app:pull" |
    sed -E 's/.*"(access_)?token" *: *"([^"]+)".*/\2/')"
bearer=(-H "Authorization: Bearer $jwt")
for _ in 1 2 3; do
    expect 200 "${auth[@]}" "${accept[@]}" "$url/v2/train/app/manifests/v1"
    expect 200 "${bearer[@]}" "${accept[@]}" "$url/v2/train/app/manifests/v1"
done
expect 200 "${auth[@]}" -I "$url/v2/train/app/manifests/v1"
expect 200 "${bearer[@]}" "$url/v2/train/app/blobs/$layer"
expect 206 "${bearer[@]}" -H 'Range: bytes=0-1023' "$url/v2/train/app/blobs/$layer"
expect 200 "${auth[@]}" -I "$url/v2/train/app/blobs/$layer"
expect 200 "${auth[@]}" "$url/v2/train/app/tags/list"
expect 200 "${auth[@]}" "$url/v2/_catalog"
expect 200 "${auth[@]}" "$url/metrics"
expect 200 "$url/healthz"
