#!/usr/bin/env bash
# Benchmark of the service REST API over plain HTTP on loopback, with wrk:
#   1. GET /jobs/v2/{id}            (target: >= 20,000 requests/s on 2 cores)
#   2. PUT /jobs/v2/{id} (creation) (each request a new job over no devices)
# Starts a release `fleetsim hub` (no fleet) on a temporary state directory, prints wrk's figures,
# stops the hub. Usage: bench/rest.sh [seconds per run, default 10] [connections, default 32]
set -euo pipefail
cd "$(dirname "$0")/.."
SECS=${1:-10}
CONNS=${2:-32}
PORT=${FLEETSIM_BENCH_PORT:-18080}
V="api-version=2021-04-12"

command -v wrk >/dev/null || { apt-get update -qq && apt-get install -y -qq wrk >/dev/null; }
cargo build --release --quiet
BIN=target/release/fleetsim
STATE=$(mktemp -d)
trap 'kill "$HUB" 2>/dev/null || true; wait "$HUB" 2>/dev/null || true; rm -rf "$STATE"' EXIT

"$BIN" hub --http "127.0.0.1:$PORT" --https off --state-dir "$STATE" >"$STATE/hub.log" 2>&1 &
HUB=$!
for _ in $(seq 50); do
  grep -q "connection string" "$STATE/hub.log" 2>/dev/null && break
  sleep 0.1
done
TOKEN=$("$BIN" connection-string --state-dir "$STATE" --host localhost --sas-token 3600)
BASE="http://127.0.0.1:$PORT"

curl -sf -X PUT "$BASE/jobs/v2/bench?$V" -H "Authorization: $TOKEN" \
  -H "Content-Type: application/json; charset=utf-8" \
  -d '{"type":"scheduleUpdateTwin","queryCondition":"*","updateTwin":{"etag":"*","tags":{"a":"1"}}}' >/dev/null

# Hub CPU seconds so far (user + system), to report requests per CPU-second: on a shared
# 2-core machine wrk and other work take CPU too, and this figure does not depend on them.
hub_cpu() { awk -v hz="$(getconf CLK_TCK)" '{printf "%.2f", ($14 + $15) / hz}' "/proc/$HUB/stat"; }
measure() {
  local label=$1; shift
  echo "== $label: ${SECS}s, $CONNS connections, 2 wrk threads; $(nproc) cores, load $(cut -d' ' -f1-3 /proc/loadavg)"
  local before after out
  before=$(hub_cpu)
  out=$(wrk -t2 -c"$CONNS" -d"${SECS}s" --latency "$@")
  after=$(hub_cpu)
  echo "$out"
  echo "$out" | awk -v b="$before" -v a="$after" '/requests in/ {
    printf "hub CPU: %.2f s -> %.0f requests per hub CPU-second\n", a - b, $1 / (a - b) }'
}

measure "GET /jobs/v2/{id}" -H "Authorization: $TOKEN" "$BASE/jobs/v2/bench?$V"

cat >"$STATE/create.lua" <<'LUA'
-- Each request creates a new job; thread-local counters keep ids unique.
local counter = 0
local threads = 0
function setup(thread)
  threads = threads + 1
  thread:set("tid", threads)
end
function request()
  counter = counter + 1
  return wrk.format("PUT", "/jobs/v2/c" .. tid .. "-" .. counter .. "?api-version=2021-04-12",
    nil, '{"type":"scheduleUpdateTwin","queryCondition":"deviceId = \'none\'","updateTwin":{"etag":"*","tags":{"a":"1"}}}')
end
LUA
measure "PUT /jobs/v2/{id} (create)" -s "$STATE/create.lua" \
  -H "Authorization: $TOKEN" -H "Content-Type: application/json; charset=utf-8" "$BASE"
