#!/usr/bin/env bash
# MQTT benchmark (issue 5). With 15,000 MQTT devices on this machine, in one run:
#  (a) method round trips per second through the fleetsim hub: `fleetsim run --external-fleet`
#      (hub, MQTT on 127.0.0.1) and `fleetsim devices` (the fleet) in two processes, five method
#      jobs over every device;
#  (b) the baseline built by hand: 15,000 plain rumqttc clients answering requests that one
#      controller client sends through mosquitto (Debian package), each device on its own topic;
# plus connections per second during the ramp and fleet memory per MQTT device (RSS delta).
# Both sides also print CPU microseconds per round trip (user + system of every process taking
# part, from all-connected to the last answer): a figure that depends far less than the rates on
# what else the machine is running.
# Loopback only; every process is bounded by a timeout and stops by itself.
set -euo pipefail
cd "$(dirname "$0")/.."
DEVICES=15000
ROUNDS=5
WORK=$(mktemp -d /tmp/fleetsim-bench-XXXX)
HUB_PORT=18830
BROKER_PORT=18831
cleanup() {
  for p in ${PIDS:-}; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
}
trap cleanup EXIT
ulimit -n "$(ulimit -Hn)"

if ! command -v mosquitto >/dev/null; then
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq mosquitto >/dev/null
fi
cargo build --release --bin fleetsim --bench mqtt_baseline 2>&1 | tail -1
FLEETSIM=target/release/fleetsim
BASELINE=$(ls -t target/release/deps/mqtt_baseline-* | grep -v '\.d$' | head -1)
TICKS=$(getconf CLK_TCK)
# sample PID...: records the user + system clock ticks of the processes and their children (the
# PIDs are `timeout` wrappers) in SEEN, by PID. A process that has exited keeps its last reading,
# so a window that ends after a process does still counts what it used.
declare -A SEEN
sample() {
  local p t
  for p in "$@" $(pgrep -d ' ' -P "$(echo "$@" | tr ' ' ',')"); do
    t=$(awk '{ print $14 + $15 }' "/proc/$p/stat" 2>/dev/null) && [ -n "$t" ] && SEEN[$p]=$t
  done
  return 0
}
seen_total() {
  local p s=0
  for p in "${!SEEN[@]}"; do s=$((s + SEEN[$p])); done
  echo "$s"
}
# cpu_until DONE_CMD PID...: CPU ticks of the PIDs from now until DONE_CMD succeeds (or the
# first PID exits), sampled every 50 ms, and the window's length in seconds.
cpu_until() {
  local done_cmd=$1; shift
  local start t0
  SEEN=(); sample "$@"; start=$(seen_total); t0=$(date +%s.%N)
  while kill -0 "$1" 2>/dev/null && ! eval "$done_cmd"; do
    sample "$@"; sleep 0.05
  done
  sample "$@"
  echo "$(($(seen_total) - start)) $(awk -v a="$t0" -v b="$(date +%s.%N)" 'BEGIN { printf "%.1f", b - a }')"
}

echo "== (a) fleetsim hub, $DEVICES MQTT devices"
timeout 300 "$FLEETSIM" run bench/mqtt-15k.toml --mqtt 127.0.0.1:$HUB_PORT --external-fleet \
  --state-dir "$WORK/state" --out "$WORK/hub" >"$WORK/hub.out" 2>"$WORK/hub.err" &
HUB=$!; PIDS="$HUB"
sleep 1
timeout 300 "$FLEETSIM" devices --scenario bench/mqtt-15k.toml --hub 127.0.0.1:$HUB_PORT \
  --state-dir "$WORK/state" --for 240s 2>"$WORK/fleet.err" &
FLEET=$!; PIDS="$PIDS $FLEET"
until grep -q "MQTT devices connected" "$WORK/hub.err" 2>/dev/null || ! kill -0 "$HUB" 2>/dev/null; do sleep 0.05; done
read -r HUB_TICKS HUB_WINDOW < <(cpu_until "grep -q 'ops $((DEVICES * ROUNDS))/$((DEVICES * ROUNDS))' '$WORK/hub.err'" "$HUB" "$FLEET")
wait "$HUB" || { echo "hub failed:"; tail -20 "$WORK/hub.err"; exit 1; }
kill -TERM "$FLEET" 2>/dev/null || true; wait "$FLEET" 2>/dev/null || true
grep -E "preflight|ramp done" "$WORK/fleet.err" || true
grep -E "MQTT devices connected" "$WORK/hub.err" || true
cat "$WORK/hub.out"
# Each job's makespan from its ops and ops/s columns (the makespan column is rounded to 0.1 s).
HUB_RATE=$(awk '$1 ~ /^rt-/ && $8 > 0 { ops += $5 + $6; t += ($5 + $6) / $8 } END { if (t > 0) printf "%.0f", ops / t }' "$WORK/hub.out")
HUB_CPU=$(awk -v t="$HUB_TICKS" -v hz="$TICKS" -v n=$((DEVICES * ROUNDS)) 'BEGIN { printf "%.1f", t / hz * 1e6 / n }')
echo "(a) fleetsim hub: $HUB_RATE method round trips/s (all jobs' device ops / summed makespans), $HUB_CPU µs CPU per round trip (hub + fleet)"

echo "== (b) mosquitto + $DEVICES plain rumqttc clients"
cat >"$WORK/mosquitto.conf" <<CONF
listener $BROKER_PORT 127.0.0.1
allow_anonymous true
max_connections -1
max_queued_messages 100000
persistence false
log_dest none
CONF
timeout 300 mosquitto -c "$WORK/mosquitto.conf" &
BROKER=$!; PIDS="$PIDS $BROKER"
sleep 1
timeout 300 "$BASELINE" $BROKER_PORT $DEVICES $ROUNDS 2>"$WORK/baseline.err" >"$WORK/baseline.out" &
CLIENTS=$!; PIDS="$PIDS $CLIENTS"
until grep -q "subscribed in" "$WORK/baseline.err" 2>/dev/null || ! kill -0 "$CLIENTS" 2>/dev/null; do sleep 0.05; done
read -r BASE_TICKS BASE_WINDOW < <(cpu_until "grep -q 'round $ROUNDS ' '$WORK/baseline.err'" "$CLIENTS" "$BROKER")
wait "$CLIENTS" || { echo "baseline failed:"; tail -5 "$WORK/baseline.err"; exit 1; }
cat "$WORK/baseline.out"
BASE_CPU=$(awk -v t="$BASE_TICKS" -v hz="$TICKS" -v n=$((DEVICES * ROUNDS)) 'BEGIN { printf "%.1f", t / hz * 1e6 / n }')
tail -$((ROUNDS + 1)) "$WORK/baseline.err"
BASE_RATE=$(awk '/round trips\/s/ { print $4 }' "$WORK/baseline.out")
kill "$BROKER" 2>/dev/null || true

echo "== summary"
echo "(a) fleetsim hub:           $HUB_RATE round trips/s, $HUB_CPU µs CPU per round trip (measured over ${HUB_WINDOW} s)"
echo "(b) mosquitto + rumqttc:    $BASE_RATE round trips/s, $BASE_CPU µs CPU per round trip (measured over ${BASE_WINDOW} s)"
awk -v a="$HUB_RATE" -v b="$BASE_RATE" 'BEGIN { if (b > 0) printf "ratio a/b: %.2f (target >= 2)\n", a / b }'
awk -v a="$HUB_CPU" -v b="$BASE_CPU" 'BEGIN { if (a > 0) printf "CPU per round trip, b/a: %.2f\n", b / a }'
grep -E "ramp done" "$WORK/fleet.err" | sed 's/^fleetsim: /fleet: /'
echo "logs: $WORK"
