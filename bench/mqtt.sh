#!/usr/bin/env bash
# MQTT benchmark (issue 5). With 15,000 MQTT devices on this machine, in one run:
#  (a) method round trips per second through the fleetsim hub: `fleetsim run --external-fleet`
#      (hub, MQTT on 127.0.0.1) and `fleetsim devices` (the fleet) in two processes, five method
#      jobs over every device;
#  (b) the baseline built by hand: 15,000 plain rumqttc clients answering requests that one
#      controller client sends through mosquitto (Debian package), each device on its own topic;
# plus connections per second during the ramp and fleet memory per MQTT device (RSS delta).
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

echo "== (a) fleetsim hub, $DEVICES MQTT devices"
timeout 300 "$FLEETSIM" run bench/mqtt-15k.toml --mqtt 127.0.0.1:$HUB_PORT --external-fleet \
  --state-dir "$WORK/state" --out "$WORK/hub" >"$WORK/hub.out" 2>"$WORK/hub.err" &
HUB=$!; PIDS="$HUB"
sleep 1
timeout 300 "$FLEETSIM" devices --scenario bench/mqtt-15k.toml --hub 127.0.0.1:$HUB_PORT \
  --state-dir "$WORK/state" --for 240s 2>"$WORK/fleet.err" &
FLEET=$!; PIDS="$PIDS $FLEET"
wait "$HUB" || { echo "hub failed:"; tail -20 "$WORK/hub.err"; exit 1; }
kill -TERM "$FLEET" 2>/dev/null || true; wait "$FLEET" 2>/dev/null || true
grep -E "preflight|ramp done" "$WORK/fleet.err" || true
grep -E "MQTT devices connected" "$WORK/hub.err" || true
cat "$WORK/hub.out"
HUB_RATE=$(awk '$1 ~ /^rt-/ { ops += $5 + $6; t += $7 + 0 } END { if (t > 0) printf "%.0f", ops / t }' "$WORK/hub.out")
echo "(a) fleetsim hub: $HUB_RATE method round trips/s (all jobs' device ops / summed makespans)"

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
timeout 300 "$BASELINE" $BROKER_PORT $DEVICES $ROUNDS 2>"$WORK/baseline.err" | tee "$WORK/baseline.out"
tail -$((ROUNDS + 1)) "$WORK/baseline.err"
BASE_RATE=$(awk '/round trips\/s/ { print $4 }' "$WORK/baseline.out")
kill "$BROKER" 2>/dev/null || true

echo "== summary"
echo "(a) fleetsim hub:           $HUB_RATE round trips/s"
echo "(b) mosquitto + rumqttc:    $BASE_RATE round trips/s"
awk -v a="$HUB_RATE" -v b="$BASE_RATE" 'BEGIN { if (b > 0) printf "ratio a/b: %.2f (target >= 2)\n", a / b }'
grep -E "ramp done" "$WORK/fleet.err" | sed 's/^fleetsim: /fleet: /'
echo "logs: $WORK"
