#!/usr/bin/env bash
# MQTT benchmark (issues 5 and 17). With 15,000 MQTT devices on this machine, in one run:
#  (a) method round trips per second through the fleetsim hub: `fleetsim run --external-fleet`
#      (hub, MQTT on 127.0.0.1) and `fleetsim devices` (the fleet) in two processes, five method
#      jobs over every device; twice: without delivery receipts, then with the receipts side
#      channel (`--receipts` on both), which measures delivery (scheduled -> received by the
#      device) and the fleet's clock offset: its delivery p50/p99 and CPU cost are printed;
#  (b) the baseline built by hand: 15,000 plain rumqttc clients answering requests that one
#      controller client sends through mosquitto (Debian package), each device on its own topic;
# plus connections per second during the ramp and fleet memory per MQTT device (RSS delta).
# Both sides also print CPU microseconds per round trip (user + system of every process taking
# part, from all-connected to the last answer): a figure that depends far less than the rates on
# what else the machine is running.
# SKIP_BASELINE=1 skips (b). Loopback only; every process is bounded by a timeout and stops by itself.
set -euo pipefail
cd "$(dirname "$0")/.."
DEVICES=15000
ROUNDS=5
WORK=$(mktemp -d /tmp/fleetsim-bench-XXXX)
HUB_PORT=18830
BROKER_PORT=18831
RECEIPTS_PORT=18832
PIDS=""
cleanup() {
  for p in ${PIDS:-}; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
}
trap cleanup EXIT
ulimit -n "$(ulimit -Hn)"

if [ "${SKIP_BASELINE:-0}" != 1 ] && ! command -v mosquitto >/dev/null; then
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

# run_a LABEL [--receipts]: one fleetsim run (hub + fleet); sets RATE, CPU, WINDOW and, with
# receipts, DELIVERY (p50/p99) and CLOCK (the measured offset line).
run_a() {
  local label=$1 hub_extra=() fleet_extra=()
  if [ "${2:-}" = --receipts ]; then
    hub_extra=(--receipts 127.0.0.1:$RECEIPTS_PORT)
    fleet_extra=(--receipts 127.0.0.1:$RECEIPTS_PORT)
  fi
  local out="$WORK/$label"
  mkdir -p "$out"
  echo "== (a) fleetsim hub, $DEVICES MQTT devices, $label"
  timeout 300 "$FLEETSIM" run bench/mqtt-15k.toml --mqtt 127.0.0.1:$HUB_PORT --external-fleet \
    "${hub_extra[@]}" --state-dir "$WORK/state" --out "$out/results" >"$out/hub.out" 2>"$out/hub.err" &
  HUB=$!; PIDS="$PIDS $HUB"
  until grep -q "MQTT device endpoint" "$out/hub.err" 2>/dev/null || ! kill -0 "$HUB" 2>/dev/null; do sleep 0.05; done
  timeout 300 "$FLEETSIM" devices --scenario bench/mqtt-15k.toml --hub 127.0.0.1:$HUB_PORT \
    "${fleet_extra[@]}" --state-dir "$WORK/state" --for 240s 2>"$out/fleet.err" &
  FLEET=$!; PIDS="$PIDS $FLEET"
  until grep -q "MQTT devices connected" "$out/hub.err" 2>/dev/null || ! kill -0 "$HUB" 2>/dev/null; do sleep 0.05; done
  read -r TICKS_A WINDOW < <(cpu_until "grep -q 'ops $((DEVICES * ROUNDS))/$((DEVICES * ROUNDS))' '$out/hub.err'" "$HUB" "$FLEET")
  wait "$HUB" || { echo "hub failed:"; tail -20 "$out/hub.err"; exit 1; }
  kill -TERM "$FLEET" 2>/dev/null || true; wait "$FLEET" 2>/dev/null || true
  grep -E "preflight|ramp done|receipts" "$out/fleet.err" || true
  grep -E "MQTT devices connected" "$out/hub.err" || true
  cat "$out/hub.out"
  # Each job's makespan from its ops and ops/s columns (the makespan column is rounded to 0.1 s).
  RATE=$(awk '$1 ~ /^rt-/ && $8 > 0 { ops += $5 + $6; t += ($5 + $6) / $8 } END { if (t > 0) printf "%.0f", ops / t }' "$out/hub.out")
  CPU=$(awk -v t="$TICKS_A" -v hz="$TICKS" -v n=$((DEVICES * ROUNDS)) 'BEGIN { printf "%.1f", t / hz * 1e6 / n }')
  # The final table's latency rows: name, count, p50, p90, p99, ...
  DELIVERY=$(awk '$1 == "delivery" && $2 ~ /^[0-9]+$/ && $2 > 0 { printf "%s samples, p50 %s, p99 %s", $2, $3, $5 }' "$out/hub.out")
  DELIVERY=${DELIVERY:-"none (0 samples)"}
  CLOCK=$(grep -E "^delivery clock" "$out/hub.out" | tr '\n' ' ' || true)
  echo "(a) $label: $RATE method round trips/s (all jobs' device ops / summed makespans), $CPU µs CPU per round trip (hub + fleet), delivery $DELIVERY"
}

run_a no-receipts
A0_RATE=$RATE A0_CPU=$CPU A0_WINDOW=$WINDOW A0_DELIVERY=$DELIVERY
run_a receipts --receipts
A1_RATE=$RATE A1_CPU=$CPU A1_WINDOW=$WINDOW A1_DELIVERY=$DELIVERY A1_CLOCK=$CLOCK
HUB_RATE=$A0_RATE HUB_CPU=$A0_CPU HUB_WINDOW=$A0_WINDOW

if [ "${SKIP_BASELINE:-0}" = 1 ]; then
  echo "== summary (SKIP_BASELINE=1: mosquitto baseline skipped)"
  echo "(a) fleetsim hub, no receipts:   $A0_RATE round trips/s, $A0_CPU µs CPU per round trip (measured over ${A0_WINDOW} s), delivery $A0_DELIVERY"
  echo "(a) fleetsim hub, with receipts: $A1_RATE round trips/s, $A1_CPU µs CPU per round trip (measured over ${A1_WINDOW} s), delivery $A1_DELIVERY"
  echo "    $A1_CLOCK"
  echo "logs: $WORK"
  exit 0
fi

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
echo "(a) fleetsim hub:           $HUB_RATE round trips/s, $HUB_CPU µs CPU per round trip (measured over ${HUB_WINDOW} s), no receipts"
echo "(a) with receipts:          $A1_RATE round trips/s, $A1_CPU µs CPU per round trip (measured over ${A1_WINDOW} s), delivery $A1_DELIVERY"
echo "    $A1_CLOCK"
echo "(b) mosquitto + rumqttc:    $BASE_RATE round trips/s, $BASE_CPU µs CPU per round trip (measured over ${BASE_WINDOW} s)"
awk -v a="$HUB_RATE" -v b="$BASE_RATE" 'BEGIN { if (b > 0) printf "ratio a/b: %.2f (target >= 2)\n", a / b }'
awk -v a="$HUB_CPU" -v b="$BASE_CPU" 'BEGIN { if (a > 0) printf "CPU per round trip, b/a: %.2f\n", b / a }'
grep -hE "ramp done" "$WORK"/*/fleet.err | sed 's/^fleetsim: /fleet: /'
echo "logs: $WORK"
