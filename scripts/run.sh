#!/usr/bin/env bash
# Runs the dispatcher (with embedded NATS) and one worker for the Ollama at
# $OLLAMA_HOST (default 127.0.0.1:11434) until Ctrl-C. Used by `make run`.
set -euo pipefail
BIN=${BIN:-bin}
LISTEN=${OLLAMAMAX_LISTEN:-127.0.0.1:11435}

pids=()
cleanup() {
  for p in "${pids[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
}
trap cleanup EXIT INT TERM

"$BIN/dispatcher" --listen "$LISTEN" &
pids+=($!)
for _ in $(seq 1 100); do
  curl -fsS "http://$LISTEN/" >/dev/null 2>&1 && break
  sleep 0.1
done
"$BIN/worker" &
pids+=($!)

cat >&2 <<MSG

OllamaMax is running. Point any Ollama client at it:
  OLLAMA_HOST=$LISTEN ollama run llama3.2
  curl http://$LISTEN/api/generate -d '{"model":"llama3.2","prompt":"Hello"}'
If no Ollama answers at ${OLLAMA_HOST:-127.0.0.1:11434}, the worker says so and
pulls nothing; /api/tags stays empty and requests get 404 until it answers.
Ctrl-C stops both.

MSG
wait -n "${pids[@]}"
