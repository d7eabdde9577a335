#!/usr/bin/env bash
# What the live dashboard costs: the CPU time (user + system) of `fleetsim run SCENARIO` with
# `--no-tui` and with the dashboard in a tmux pane (q is pressed as soon as it shows FINISHED),
# alternating, REPS times each, and the dashboard's overhead in %. In-process devices only,
# no network; every wait is bounded and the tmux server is killed on exit.
# Usage: bench/tui-cost.sh [scenario, default scenarios/million.toml] [repetitions, default 10]
# FLEETSIM_BIN=path measures that binary instead of building the release one; FLEETSIM_FPS=n sets
# the dashboard's frame rate (default 10).
set -euo pipefail
if [[ -n ${FLEETSIM_BIN:-} ]]; then FLEETSIM_BIN=$(realpath "$FLEETSIM_BIN"); fi
cd "$(dirname "$0")/.."
SCENARIO=${1:-scenarios/million.toml}
REPS=${2:-10}
FPS=${FLEETSIM_FPS:-10}

command -v tmux >/dev/null || { echo "needs tmux: apt-get install -y tmux" >&2; exit 1; }
if [[ -z ${FLEETSIM_BIN:-} ]]; then
  cargo build --release --quiet
fi
BIN=${FLEETSIM_BIN:-$PWD/target/release/fleetsim}
TMP=$(mktemp -d)
SOCK=fleetsim-tui-cost-$$
trap 'tmux -L "$SOCK" kill-server 2>/dev/null || true; rm -rf "$TMP"' EXIT

# CPU seconds of the last run, from GNU time's last line ("user system").
cpu_of() { tail -n1 "$TMP/time" | awk '{printf "%.2f", $1 + $2}'; }

# Polls `cond` every 50 ms for up to `secs` seconds; fails with `what` when it never holds.
wait_until() {
  local secs=$1 what=$2; shift 2
  local end=$((SECONDS + secs))
  until "$@"; do
    ((SECONDS < end)) || { echo "timed out after ${secs}s waiting for $what" >&2; exit 1; }
    sleep 0.05
  done
}
screen_has() { tmux -L "$SOCK" capture-pane -p -t cost | grep -q "$1"; }
timed() { [[ -s $TMP/time ]]; }

plain() {
  rm -f "$TMP/time"
  timeout 300 /usr/bin/time -f '%U %S' -o "$TMP/time" \
    "$BIN" run "$SCENARIO" --no-tui --out "$TMP/out" >/dev/null 2>&1
  cpu_of
}

dashboard() {
  rm -f "$TMP/time"
  tmux -L "$SOCK" new-session -d -x 120 -y 40 -s cost \
    "/usr/bin/time -f '%U %S' -o $TMP/time $BIN run $SCENARIO --fps $FPS --out $TMP/out; sleep 300"
  wait_until 300 "the dashboard to show FINISHED" screen_has FINISHED
  tmux -L "$SOCK" send-keys -t cost q
  wait_until 30 "fleetsim to exit after q" timed
  tmux -L "$SOCK" kill-session -t cost
  cpu_of
}

median() { tr ' ' '\n' | sort -n | awk '{a[NR] = $1} END {print a[int((NR + 1) / 2)]}'; }

echo "== $BIN $SCENARIO, $REPS runs each, dashboard at $FPS fps; $(nproc) cores, load $(cut -d' ' -f1-3 /proc/loadavg)"
P=() D=()
for _ in $(seq "$REPS"); do
  P+=("$(plain)")
  D+=("$(dashboard)")
done
echo "--no-tui    CPU s: ${P[*]}  (median $(echo "${P[*]}" | median))"
echo "dashboard   CPU s: ${D[*]}  (median $(echo "${D[*]}" | median))"
# Runs alternate, so each pair saw about the same load: the overhead is the mean of the pairs'
# differences over the mean --no-tui time, with its standard error (other work on the machine
# moves single runs by 10% and more).
paste <(echo "${P[*]}" | tr ' ' '\n') <(echo "${D[*]}" | tr ' ' '\n') | awk '
  { p += $1; d = $2 - $1; s += d; ss += d * d; n++ }
  END {
    mp = p / n; md = s / n
    se = n > 1 ? sqrt((ss - n * md * md) / (n - 1) / n) : 0
    printf "overhead: %+.1f%% CPU (mean of %d pairs, standard error %.1f%%)\n", md / mp * 100, n, se / mp * 100
  }'
