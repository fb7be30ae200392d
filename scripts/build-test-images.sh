#!/usr/bin/env bash
# Build small, real container images offline for Tributary's end-to-end tests.
#
#   scripts/build-test-images.sh OUTDIR
#
# Needs: umoci, busybox (Debian: busybox-static), jq, sha256sum. No network.
# Produces OUTDIR/layout, one OCI image layout with these tags:
#   app     busybox rootfs; config sets Cmd, Env, Labels, WorkingDir, ExposedPorts
#   app2    like app, but with different file content (distinct layers and digest)
#   amd64   linux/amd64 image
#   arm64   linux/arm64 image (same busybox binary; only metadata and a file differ)
#   multi   an OCI image index referencing amd64 and arm64 with platform fields
# and OUTDIR/ready once everything succeeded.
set -euo pipefail

OUT=${1:?usage: $0 OUTDIR}
BUSYBOX=${BUSYBOX:-/bin/busybox}
for tool in umoci jq sha256sum; do
    command -v "$tool" >/dev/null || { echo "build-test-images: $tool missing" >&2; exit 2; }
done
[ -x "$BUSYBOX" ] || { echo "build-test-images: $BUSYBOX missing (apt-get install busybox-static)" >&2; exit 2; }

ROOTLESS=()
[ "$(id -u)" = 0 ] || ROOTLESS=(--rootless)

mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
L="$OUT/layout"
WORK="$OUT/work"
rm -rf "$L" "$WORK" "$OUT/ready"
mkdir -p "$WORK"
umoci init --layout "$L"

CREATED=2024-01-01T00:00:00Z

# build_image TAG ARCH OS VARIANT MESSAGE
build_image() {
    local tag=$1 arch=$2 os=$3 msg=$4
    local root="$WORK/$tag"
    mkdir -p "$root/bin" "$root/etc" "$root/srv"
    cp "$BUSYBOX" "$root/bin/busybox"
    for applet in sh ls cat echo env true; do ln -sf busybox "$root/bin/$applet"; done
    printf '%s\n' "$msg" >"$root/etc/motd"
    printf 'tag=%s arch=%s os=%s\n' "$tag" "$arch" "$os" >"$root/srv/build-info"
    # Fixed times: the same input gives the same layer on every machine, so the /bin layer (the busybox binary) is
    # one blob shared by every image, here and in CI alike.
    find "$root" -exec touch -h -d "$CREATED" {} +

    umoci new --image "$L:$tag"
    umoci insert "${ROOTLESS[@]}" --image "$L:$tag" --history.created "$CREATED" "$root/bin" /bin
    umoci insert "${ROOTLESS[@]}" --image "$L:$tag" --history.created "$CREATED" "$root/etc" /etc
    umoci insert "${ROOTLESS[@]}" --image "$L:$tag" --history.created "$CREATED" "$root/srv" /srv
    umoci config --image "$L:$tag" --no-history \
        --created "$CREATED" \
        --architecture "$arch" --os "$os" \
        --config.cmd /bin/sh --config.cmd -c --config.cmd 'cat /etc/motd' \
        --config.env PATH=/bin --config.env "GREETING=$msg" \
        --config.label org.opencontainers.image.title=tributary-e2e \
        --config.label "e2e.tag=$tag" \
        --config.workingdir /srv \
        --config.exposedports 8080/tcp
}

build_image app amd64 linux "hello from tributary e2e"
build_image app2 amd64 linux "a second, different image"
build_image amd64 amd64 linux "multi-platform: amd64"
build_image arm64 arm64 linux "multi-platform: arm64"

# Drop the intermediate manifests and configs that each umoci step left behind.
umoci gc --layout "$L"

# The layout's index.json names each tag's manifest descriptor.
desc() { jq -c --arg t "$1" '.manifests[] | select(.annotations["org.opencontainers.image.ref.name"] == $t)' "$L/index.json"; }
AMD=$(desc amd64)
ARM=$(desc arm64)
[ -n "$AMD" ] && [ -n "$ARM" ] || { echo "build-test-images: tags missing from index.json" >&2; exit 1; }

# An image index for both platforms, stored as a blob; then tagged "multi" in the layout.
jq -n --argjson amd "$AMD" --argjson arm "$ARM" '{
    schemaVersion: 2,
    mediaType: "application/vnd.oci.image.index.v1+json",
    manifests: [
        ($amd | del(.annotations) + {platform: {architecture: "amd64", os: "linux"}}),
        ($arm | del(.annotations) + {platform: {architecture: "arm64", os: "linux"}})
    ]
}' | jq -c . | tr -d '\n' >"$WORK/index.json"
IDX_DIGEST=$(sha256sum "$WORK/index.json" | cut -d' ' -f1)
IDX_SIZE=$(stat -c %s "$WORK/index.json")
cp "$WORK/index.json" "$L/blobs/sha256/$IDX_DIGEST"
jq -c --arg d "sha256:$IDX_DIGEST" --argjson s "$IDX_SIZE" '.manifests += [{
    mediaType: "application/vnd.oci.image.index.v1+json",
    digest: $d,
    size: $s,
    annotations: {"org.opencontainers.image.ref.name": "multi"}
}]' "$L/index.json" >"$WORK/layout-index.json"
mv "$WORK/layout-index.json" "$L/index.json"

rm -rf "$WORK"
touch "$OUT/ready"
echo "build-test-images: wrote $L ($(umoci ls --layout "$L" | tr '\n' ' '))"
