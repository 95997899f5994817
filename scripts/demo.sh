#!/usr/bin/env bash
# Runs a whole OllamaMax on this machine against two simulated Ollamas, sends
# requests through the queue over NATS and over HTTP, shows the fleet, and
# stops everything. Used by `make demo`. Needs no Ollama and no GPU.
set -euo pipefail
BIN=${BIN:-bin}
HTTP=127.0.0.1:11436
NATS=nats://127.0.0.1:4223
data=$(mktemp -d)
logs=$data/logs
mkdir -p "$logs"

pids=()
cleanup() {
  for p in "${pids[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$data"
}
trap cleanup EXIT INT TERM

say() { printf '\n\033[1m== %s\033[0m\n' "$*"; }

"$BIN/ollamasim" --listen 127.0.0.1:11534 --models llama3.2,qwen2.5:0.5b --tps 15 --ttft 300ms --tokens 40 --parallel 2 --seed 1 2>"$logs/sim1" &
pids+=($!)
"$BIN/ollamasim" --listen 127.0.0.1:11535 --models llama3.2 --tps 15 --ttft 300ms --tokens 40 --parallel 2 --seed 1 2>"$logs/sim2" &
pids+=($!)
"$BIN/dispatcher" --listen $HTTP --nats-listen 127.0.0.1:4223 --store-dir "$data/js" --log-format text 2>"$logs/dispatcher" &
pids+=($!)
for _ in $(seq 1 100); do curl -fsS "http://$HTTP/" >/dev/null 2>&1 && break; sleep 0.1; done
"$BIN/worker" --nats-url $NATS --ollama http://127.0.0.1:11534 --slots 2 --id gpu-a --listen 127.0.0.1:9465 --log-format text 2>"$logs/worker-a" &
pids+=($!)
"$BIN/worker" --nats-url $NATS --ollama http://127.0.0.1:11535 --slots 2 --id gpu-b --listen 127.0.0.1:9466 --log-format text 2>"$logs/worker-b" &
pids+=($!)
for _ in $(seq 1 100); do
  [ "$("$BIN/ollamaq" --server $NATS nodes --json 2>/dev/null | grep -c '"id"')" = 2 ] && break
  sleep 0.1
done

say "Two workers joined the queue, each in front of a simulated Ollama"
"$BIN/ollamaq" --server $NATS nodes

say "ollamaq run: a job published over NATS, tokens streamed back as the worker relays them"
"$BIN/ollamaq" --server $NATS run llama3.2 "Why is the sky blue?"

say "The Ollama HTTP API on http://$HTTP: Ollama's own NDJSON, relayed through the queue"
curl -sN "http://$HTTP/api/chat" -d '{"model":"qwen2.5:0.5b","messages":[{"role":"user","content":"Hi!"}],"options":{"num_predict":6}}'

say "GET /api/tags merges the fleet's models"
curl -s "http://$HTTP/api/tags" | head -c 400; echo

say "Four requests at once on four slots (2 workers x 2 slots)"
cpids=()
for i in 1 2 3 4; do
  curl -s "http://$HTTP/api/generate" -d "{\"model\":\"llama3.2\",\"prompt\":\"request $i\",\"stream\":false,\"options\":{\"num_predict\":10}}" \
    -o /dev/null -w "request $i: HTTP %{http_code} in %{time_total}s\n" &
  cpids+=($!)
done
wait "${cpids[@]}"
sleep 1 # Workers rewrite their node record at most every 0.5s.
"$BIN/ollamaq" --server $NATS nodes
say "Done. Logs were in $logs (removed on exit)."
