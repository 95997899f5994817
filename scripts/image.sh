#!/usr/bin/env bash
# Builds the OllamaMax image with buildah from binaries built already
# (make image), with no builder image and no registry: the final stage of
# Containerfile, FROM scratch, run by `buildah bud` with each COPY --from=build
# taken from a directory laid out as the build stage lays out its own. So
# this image and a `docker build .` differ only in where the binaries were
# compiled.
#
# BIN       directory with static dispatcher, worker and ollamaq (required)
# IMAGE     the name to give it (localhost/ollamamax:latest)
# CA_CERTS  the CA bundle for /etc/ssl/certs (/etc/ssl/certs/ca-certificates.crt)
# BUILDAH   the buildah command (buildah); CONTAINERS_STORAGE_CONF chooses its store
set -euo pipefail

: "${BIN:?set BIN to the directory with static dispatcher, worker and ollamaq}"
IMAGE=${IMAGE:-localhost/ollamamax:latest}
CA_CERTS=${CA_CERTS:-/etc/ssl/certs/ca-certificates.crt}
BUILDAH=${BUILDAH:-buildah}
root=$(cd "$(dirname "$0")/.." && pwd)

if ! command -v "${BUILDAH%% *}" >/dev/null; then
  echo "image.sh: ${BUILDAH%% *} is not installed (Debian: apt-get install buildah)" >&2
  exit 1
fi
[ -r "$CA_CERTS" ] || { echo "image.sh: no CA bundle at $CA_CERTS (Debian: apt-get install ca-certificates, or set CA_CERTS)" >&2; exit 1; }

ctx=$(mktemp -d)
trap 'rm -rf "$ctx"' EXIT
mkdir -p "$ctx/rootfs/usr/local/bin" "$ctx/rootfs/etc/ssl/certs" "$ctx/rootfs/tmp" "$ctx/rootfs/var/lib" "$ctx/state"
cp "$BIN/dispatcher" "$BIN/worker" "$BIN/ollamaq" "$ctx/rootfs/usr/local/bin/"
cp "$CA_CERTS" "$ctx/rootfs/etc/ssl/certs/ca-certificates.crt"
find "$ctx/rootfs" -type d -exec chmod 755 {} +
chmod 755 "$ctx/rootfs/usr/local/bin/"*
chmod 644 "$ctx/rootfs/etc/ssl/certs/ca-certificates.crt"
chmod 1777 "$ctx/rootfs/tmp"

# The final stage, from its FROM on; the build stage's /rootfs/ and /state/
# are the context's rootfs/ and state/.
sed -n '/^FROM scratch/,$p' "$root/Containerfile" | sed 's/COPY --from=build /COPY /' >"$ctx/Containerfile"
grep -q '^FROM scratch' "$ctx/Containerfile" || { echo "image.sh: Containerfile has no FROM scratch stage" >&2; exit 1; }
if grep -q -- '--from=' "$ctx/Containerfile"; then
  echo "image.sh: the final stage of Containerfile copies from a stage other than build" >&2
  exit 1
fi

# Docker's format: OCI images have no HEALTHCHECK.
$BUILDAH bud --format docker --timestamp 0 -f "$ctx/Containerfile" -t "$IMAGE" "$ctx"
