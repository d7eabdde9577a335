#!/usr/bin/env bash
# What the hub's store costs (issue 16): the same release `fleetsim hub` with a 100,000-device
# in-process fleet, once with --in-memory and once keeping its state in the state directory
# (hub.db), measured on:
#   1. PATCH /twins/{id} (tags; a random device each), with wrk   -> twin PATCHes per second
#   2. PUT /jobs/v2/{id} (each a new job over no devices), with wrk -> job creations per second
#   3. one scheduleUpdateTwin job over all 100,000 devices           -> its makespan (endTime -
#      startTime, as the hub reports it; with a store the last results may still be committing)
# For each it prints the hub's CPU seconds (user and system, from /proc) beside the figure, and
# at the end the ratios store / in memory. Usage: bench/persist.sh [seconds per wrk run,
# default 10] [connections, default 32]. Loopback only; each hub stops at the end of its run.
set -euo pipefail
cd "$(dirname "$0")/.."
SECS=${1:-10}
CONNS=${2:-32}
PORT=${FLEETSIM_BENCH_PORT:-18090}
V="api-version=2021-04-12"

command -v wrk >/dev/null || { apt-get update -qq && apt-get install -y -qq wrk >/dev/null; }
cargo build --release --quiet
BIN=target/release/fleetsim
WORK=$(mktemp -d)
HUB=
trap 'if [ -n "$HUB" ]; then kill "$HUB" 2>/dev/null || true; wait "$HUB" 2>/dev/null || true; fi; rm -rf "$WORK"' EXIT

cat >"$WORK/fleet.toml" <<'TOML'
name = "persist-bench"
seed = 1
duration = "1h"
[[cohort]]
name = "fleet"
count = 100000
id_prefix = "d-"
TOML

cat >"$WORK/patch.lua" <<'LUA'
-- Each request patches the tags of a random device of the 100,000.
math.randomseed(os.time())
function request()
  local id = string.format("d-%05d", math.random(0, 99999))
  return wrk.format("PATCH", "/twins/" .. id .. "?api-version=2021-04-12", nil,
    '{"tags":{"bench":' .. math.random(1, 1000000) .. '}}')
end
LUA

cat >"$WORK/create.lua" <<'LUA'
-- Each request creates a new job; thread-local counters keep ids unique.
local counter = 0
local threads = 0
function setup(thread)
  threads = threads + 1
  thread:set("tid", threads)
end
function request()
  counter = counter + 1
  return wrk.format("PUT", "/jobs/v2/c" .. tid .. "-" .. counter .. "?api-version=2021-04-12", nil,
    '{"type":"scheduleUpdateTwin","queryCondition":"deviceId = \'none\'","updateTwin":{"etag":"*","tags":{"a":"1"}}}')
end
LUA

hub_cpu() { awk -v hz="$(getconf CLK_TCK)" '{printf "%.2f %.2f", $14 / hz, $15 / hz}' "/proc/$HUB/stat"; }
# Prints "<figure> <user CPU s> <system CPU s>" of one phase.
rate() { # label, lua script
  local before after out
  before=$(hub_cpu)
  out=$(wrk -t2 -c"$CONNS" -d"${SECS}s" -s "$2" -H "Authorization: $TOKEN" \
    -H "Content-Type: application/json; charset=utf-8" "$BASE")
  after=$(hub_cpu)
  echo "$out" >"$WORK/$1.wrk"
  local rps non2xx
  rps=$(echo "$out" | awk '/Requests\/sec/ {print $2}')
  non2xx=$(echo "$out" | awk '/Non-2xx/ {print $NF}')
  # Every answer must be a 2xx: a rate of refusals measures nothing.
  [ -z "$non2xx" ] || { echo "$1: $non2xx answers were not 2xx; see $WORK/$1.wrk" >&2; exit 1; }
  echo "$rps $before $after" | awk '{printf "%.0f %.2f %.2f\n", $1, $4 - $2, $5 - $3}'
}
makespan() {
  local before after job status=running
  before=$(hub_cpu)
  curl -sf -X PUT "$BASE/jobs/v2/fleet-twin?$V" -H "Authorization: $TOKEN" \
    -H "Content-Type: application/json" \
    -d '{"type":"scheduleUpdateTwin","queryCondition":"*","updateTwin":{"etag":"*","tags":{"wave":"2"},"properties":{"desired":{"fw":"2.0"}}}}' >/dev/null
  for _ in $(seq 1200); do
    job=$(curl -sf "$BASE/jobs/v2/fleet-twin?$V" -H "Authorization: $TOKEN")
    status=$(echo "$job" | sed -E 's/.*"status":"([a-z]+)".*/\1/')
    [ "$status" = completed ] && break
    sleep 0.1
  done
  [ "$status" = completed ] || { echo "the 100k twin job did not complete: $job" >&2; exit 1; }
  after=$(hub_cpu)
  local start end
  start=$(echo "$job" | sed -E 's/.*"startTime":"([^"]+)".*/\1/')
  end=$(echo "$job" | sed -E 's/.*"endTime":"([^"]+)".*/\1/')
  echo "$(date -d "$start" +%s.%N) $(date -d "$end" +%s.%N) $before $after" |
    awk '{printf "%.0f %.2f %.2f\n", ($2 - $1) * 1000, $5 - $3, $6 - $4}'
}

run() { # mode: memory | store
  local state="$WORK/state-$1" flags=()
  [ "$1" = memory ] && flags=(--in-memory)
  "$BIN" hub --scenario "$WORK/fleet.toml" --no-jobs --http "127.0.0.1:$PORT" --https off \
    --state-dir "$state" "${flags[@]}" >"$WORK/hub-$1.log" 2>&1 &
  HUB=$!
  for _ in $(seq 300); do
    grep -q "connection string" "$WORK/hub-$1.log" 2>/dev/null && break
    sleep 0.1
  done
  TOKEN=$("$BIN" connection-string --state-dir "$state" --host localhost --sas-token 3600)
  BASE="http://127.0.0.1:$PORT"
  # Answered after the first batch commits (with a store: the 100,000 devices saved at start).
  curl -sf -X PATCH "$BASE/twins/d-00000?$V" -H "Authorization: $TOKEN" \
    -H "Content-Type: application/json" -d '{"tags":{"warm":1}}' >/dev/null
  echo "== $1: ${SECS}s per wrk run, $CONNS connections; $(nproc) cores, load $(cut -d' ' -f1-3 /proc/loadavg)" >&2
  read -r PATCHES PU PS < <(rate "patch-$1" "$WORK/patch.lua")
  read -r CREATES CU CS < <(rate "create-$1" "$WORK/create.lua")
  read -r SPAN MU MS < <(makespan)
  kill "$HUB"
  wait "$HUB" || true
  HUB=
  printf '%-7s twin PATCH/s %8s (hub CPU %5.2f s user %5.2f s sys) | job creations/s %7s (%5.2f user %5.2f sys) | 100k twin job makespan %6s ms (%5.2f user %5.2f sys)\n' \
    "$1" "$PATCHES" "$PU" "$PS" "$CREATES" "$CU" "$CS" "$SPAN" "$MU" "$MS"
  [ -f "$state/hub.db" ] && echo "        store: $(du -sh "$state" | cut -f1) in $state" >&2
  eval "${1}_patch=$PATCHES ${1}_create=$CREATES ${1}_span=$SPAN"
}

run memory
run store
# shellcheck disable=SC2154
awk -v mp="$memory_patch" -v sp="$store_patch" -v mc="$memory_create" -v sc="$store_create" \
  -v ms="$memory_span" -v ss="$store_span" 'BEGIN {
  printf "cost of the store (in memory / store for rates, store / in memory for the makespan; target <= 2):\n"
  printf "  twin PATCH/s %.2fx   job creations/s %.2fx   100k twin job makespan %.2fx\n",
    mp / sp, mc / sc, ss / ms }'
