#!/usr/bin/env bash
# Makes secrets/ for compose.yaml, as docs/security.md sets up operator mode:
# an auth directory (ollamaq auth init), credentials for each process of
# compose.yaml (two dispatchers, two workers, an admin for ollamaq), and
# nats-auth.conf, what `ollamaq auth export` prints for the NATS nodes.
#
# It runs ollamaq from the image (OLLAMAMAX_IMAGE, localhost/ollamamax:latest,
# with docker, or podman when docker is absent; ENGINE chooses), or the
# binary OLLAMAQ names. SECRETS puts the files elsewhere (./secrets).
#
# secrets/ is mode 700: the auth directory holds the operator's and roles'
# seeds, the .creds files a user's seed each. The .creds files are mode 644
# inside it, so that the containers, which run as another user (65532),
# can read the one mounted into each; nobody else on this machine can reach
# them through secrets/.
set -euo pipefail
cd "$(dirname "$0")"

SECRETS=${SECRETS:-secrets}
IMAGE=${OLLAMAMAX_IMAGE:-localhost/ollamamax:latest}
if [ -e "$SECRETS/auth" ]; then
  echo "setup.sh: $SECRETS/auth exists already; remove $SECRETS to start over (every credential issued from it then stops working)" >&2
  exit 1
fi
mkdir -p "$SECRETS"
chmod 700 "$SECRETS"
SECRETS=$(cd "$SECRETS" && pwd)

if [ -n "${OLLAMAQ:-}" ]; then
  q() { OLLAMAMAX_AUTH_DIR="$SECRETS/auth" "$OLLAMAQ" "$@"; }
  dir="$SECRETS/auth"
else
  ENGINE=${ENGINE:-$(command -v docker >/dev/null && echo docker || echo podman)}
  userns=()
  if [ "$ENGINE" = podman ] && [ "$(id -u)" != 0 ]; then
    userns=(--userns=keep-id) # Rootless podman: files owned by you, not a subordinate ID.
  fi
  q() {
    "$ENGINE" run --rm --network none "${userns[@]}" --user "$(id -u):$(id -g)" -e HOME=/tmp \
      -e OLLAMAMAX_AUTH_DIR=/secrets/auth -v "$SECRETS:/secrets" "$IMAGE" ollamaq "$@"
  }
  dir=/secrets/auth
fi

# Quiet unless it fails: each prints what to do next with its file.
quiet() {
  local out
  out=$("$@" 2>&1) || { echo "$out" >&2; exit 1; }
}
quiet q auth init "$dir"
for name in dispatcher-1 dispatcher-2; do quiet q auth add "$name" --role dispatcher; done
for name in gpu-1 gpu-2; do quiet q auth add "$name" --role worker; done
quiet q auth add admin --role admin
# The nodes keep the account JWTs (and revocations) in their data volume.
q auth export --resolver-dir /data/jwt >"$SECRETS/nats-auth.conf"
chmod 644 "$SECRETS"/auth/creds/*.creds "$SECRETS/nats-auth.conf"
chmod 755 "$SECRETS/auth" "$SECRETS/auth/creds"

echo "made $SECRETS: the auth directory, credentials for dispatcher-1, dispatcher-2, gpu-1, gpu-2 and admin, and nats-auth.conf"
echo "next: docker compose up -d   (docs/deploy.md, \"Compose\")"
