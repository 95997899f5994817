#!/usr/bin/env bash
# Runs a whole OllamaMax on this machine against two simulated Ollamas, sends
# requests through the queue over NATS and over HTTP, shows the fleet, and
# stops everything. Used by `make demo`. Needs no Ollama and no GPU.
#
# The dispatcher listens on OLLAMAMAX_LISTEN (default 127.0.0.1:11436) and its
# embedded NATS on OLLAMAMAX_NATS_LISTEN (127.0.0.1:4223), beside a `make run`;
# a second demo needs two others. The simulators and the workers' metrics take
# free ports, and the JetStream files a temporary directory.
set -euo pipefail
BIN=${BIN:-bin}
HTTP=${OLLAMAMAX_LISTEN:-127.0.0.1:11436}
NATS_LISTEN=${OLLAMAMAX_NATS_LISTEN:-127.0.0.1:4223}
NATS=nats://$NATS_LISTEN
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

# bg LOG COMMAND...: runs COMMAND in the background, its stderr to LOG.
bg() {
  local log=$1
  shift
  "$@" 2>"$log" &
  pids+=($!)
}

# alive PID LOG: if the process has ended, print the end of its log (it said
# there why it stopped: an address taken, say) and exit.
alive() {
  kill -0 "$1" 2>/dev/null && return 0
  tail -n 3 "$2" >&2
  exit 1
}

# simurl PID LOG: waits for a simulated Ollama to print where it listens.
simurl() {
  for _ in $(seq 1 100); do
    url=$(sed -n 's/^ollamasim listening on \(http:[^ ]*\).*/\1/p' "$2.out")
    [ -n "$url" ] && return 0
    alive "$1" "$2"
    sleep 0.1
  done
  echo "demo.sh: ollamasim did not start" >&2
  exit 1
}

sim=(--tps 15 --ttft 300ms --tokens 40 --parallel 2 --seed 1)
bg "$logs/sim1" "$BIN/ollamasim" --listen 127.0.0.1:0 --models llama3.2,qwen2.5:0.5b "${sim[@]}" >"$logs/sim1.out"
simurl $! "$logs/sim1"
sim1=$url
bg "$logs/sim2" "$BIN/ollamasim" --listen 127.0.0.1:0 --models llama3.2 "${sim[@]}" >"$logs/sim2.out"
simurl $! "$logs/sim2"
sim2=$url

# What answers on the dispatcher's address before it starts is not it: then
# only its exit (the address is taken) ends the wait.
taken=0
curl -s -o /dev/null "http://$HTTP/" 2>/dev/null && taken=1
bg "$logs/dispatcher" "$BIN/dispatcher" --listen "$HTTP" --nats-listen "$NATS_LISTEN" --store-dir "$data/js" --log-format text
dispatcher=$!
for _ in $(seq 1 100); do
  alive $dispatcher "$logs/dispatcher"
  [ $taken = 0 ] && curl -fsS "http://$HTTP/" >/dev/null 2>&1 && break
  sleep 0.1
done
bg "$logs/worker-a" "$BIN/worker" --nats-url "$NATS" --ollama "$sim1" --slots 2 --id gpu-a --listen 127.0.0.1:0 --log-format text
worker_a=$!
bg "$logs/worker-b" "$BIN/worker" --nats-url "$NATS" --ollama "$sim2" --slots 2 --id gpu-b --listen 127.0.0.1:0 --log-format text
worker_b=$!
for _ in $(seq 1 100); do
  [ "$("$BIN/ollamaq" --server "$NATS" nodes --json 2>/dev/null | grep -c '"id"')" = 2 ] && break
  alive $worker_a "$logs/worker-a"
  alive $worker_b "$logs/worker-b"
  sleep 0.1
done

say "Two workers joined the queue, each in front of a simulated Ollama"
"$BIN/ollamaq" --server "$NATS" nodes

say "ollamaq run: a job published over NATS, tokens streamed back as the worker relays them"
"$BIN/ollamaq" --server "$NATS" run llama3.2 "Why is the sky blue?"

say "The Ollama HTTP API on http://$HTTP: Ollama's own NDJSON, relayed through the queue"
curl -sN "http://$HTTP/api/chat" -d '{"model":"qwen2.5:0.5b","messages":[{"role":"user","content":"Hi!"}],"options":{"num_predict":6}}'

say "GET /api/tags merges the fleet's models"
curl -s "http://$HTTP/api/tags" | head -c 400; echo

say "Four requests at once for llama3.2, which one worker has loaded: warm-first keeps them on its two slots, two at a time, rather than make the other load it (docs/scheduling.md)"
cpids=()
for i in 1 2 3 4; do
  curl -s "http://$HTTP/api/generate" -d "{\"model\":\"llama3.2\",\"prompt\":\"request $i\",\"stream\":false,\"options\":{\"num_predict\":10}}" \
    -o /dev/null -w "request $i: HTTP %{http_code} in %{time_total}s\n" &
  cpids+=($!)
done
wait "${cpids[@]}"
sleep 1 # Workers rewrite their node record at most every 0.5s.
"$BIN/ollamaq" --server "$NATS" nodes
say "Done. Logs were in $logs (removed on exit)."
