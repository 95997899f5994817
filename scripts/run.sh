#!/usr/bin/env bash
# Runs the dispatcher (with embedded NATS) and one worker for the Ollama at
# $OLLAMA_HOST (default 127.0.0.1:11434) until Ctrl-C. Used by `make run`.
#
# Every address comes from the environment, so a second instance can run
# beside the first when given its own (README, "Two on one machine"):
#   OLLAMAMAX_LISTEN         dispatcher's Ollama API   127.0.0.1:11435
#   OLLAMAMAX_NATS_LISTEN    embedded NATS             127.0.0.1:4222
#   OLLAMAMAX_STORE_DIR      its JetStream files       $XDG_STATE_HOME/ollamamax/jetstream
#   OLLAMAMAX_WORKER_LISTEN  worker's metrics, health  127.0.0.1:9464
# The dispatcher reads OLLAMAMAX_STORE_DIR itself. With NATS_URL set,
# both use that NATS instead of the embedded one.
#
# If the worker exits, it is started again after a back-off (1s, doubling to
# 30s; 1s again after a minute up) while the dispatcher keeps serving; if the
# dispatcher exits, everything stops.
set -euo pipefail
BIN=${BIN:-bin}
LISTEN=${OLLAMAMAX_LISTEN:-127.0.0.1:11435}
NATS_LISTEN=${OLLAMAMAX_NATS_LISTEN:-127.0.0.1:4222}
WORKER_LISTEN=${OLLAMAMAX_WORKER_LISTEN:-127.0.0.1:9464}
nats_url=${NATS_URL:-}
if [ -z "$nats_url" ]; then
  host=${NATS_LISTEN%:*}
  case $host in "" | 0.0.0.0 | "[::]") host=127.0.0.1 ;; esac
  nats_url=nats://$host:${NATS_LISTEN##*:}
fi

pids=()
worker=
sleeper=
cleanup() {
  for p in "${pids[@]}" $worker $sleeper; do kill -TERM "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
}
trap cleanup EXIT
trap 'exit 130' INT # Ctrl-C: not back to the loop below, which would restart the worker.
trap 'exit 143' TERM

# start URL COMMAND...: runs COMMAND in the background until URL answers. If
# it ends first (an address or the store directory is taken), it has said why:
# exit with its status. What answered on URL before it started is not it.
start() {
  local url=$1 before=0
  shift
  curl -s -o /dev/null "$url" 2>/dev/null && before=1
  "$@" &
  local pid=$!
  pids+=("$pid")
  for _ in $(seq 1 300); do
    if ! kill -0 "$pid" 2>/dev/null; then
      wait "$pid" || exit $?
      exit 1
    fi
    [ "$before" = 0 ] && curl -fsS "$url" >/dev/null 2>&1 && return 0
    sleep 0.1
  done
  echo "run.sh: $1 does not answer on $url after 30s" >&2
  exit 1
}

start "http://$LISTEN/" "$BIN/dispatcher" --listen "$LISTEN" --nats-listen "$NATS_LISTEN"
dispatcher=${pids[-1]}
worker_cmd=("$BIN/worker" --nats-url "$nats_url" --listen "$WORKER_LISTEN")
start "http://$WORKER_LISTEN/healthz" "${worker_cmd[@]}"
worker=${pids[-1]} # Supervised below, as $worker.
unset 'pids[-1]'
worker_started=$SECONDS

cat >&2 <<MSG

OllamaMax is running. Point any Ollama client at it:
  OLLAMA_HOST=$LISTEN ollama run llama3.2
  curl http://$LISTEN/api/generate -d '{"model":"llama3.2","prompt":"Hello"}'
If no Ollama answers at ${OLLAMA_HOST:-127.0.0.1:11434}, the worker says so and
pulls nothing; /api/tags stays empty and requests get 404 until it answers.
If the worker exits, it is started again. Ctrl-C stops both.

MSG

# Supervise: wait for either process; a worker that exits is started again
# after a back-off, during which the dispatcher keeps serving.
delay=1
while true; do
  status=0 ended=
  wait -n -p ended "$dispatcher" "$worker" || status=$?
  if [[ $ended == "$dispatcher" ]]; then
    echo "dispatcher exited (status $status); stopping" >&2
    exit "$status"
  fi
  if ((SECONDS - worker_started >= 60)); then
    delay=1 # It ran a while: this is no crash loop.
  fi
  echo "worker exited (status $status); restarting in ${delay}s" >&2
  worker=
  sleep "$delay" &
  sleeper=$!
  status=0 ended=
  wait -n -p ended "$dispatcher" "$sleeper" || status=$?
  if [[ $ended == "$dispatcher" ]]; then
    echo "dispatcher exited (status $status); stopping" >&2
    exit "$status"
  fi
  sleeper=
  "${worker_cmd[@]}" &
  worker=$!
  worker_started=$SECONDS
  delay=$((delay * 2 > 30 ? 30 : delay * 2))
done
