#!/usr/bin/env bash
# Virtual time: scenarios/s1-million.toml (1,000,000 devices on S1: a method job on the pilot
# tenth, then a twin update on all, ~30.6 simulated hours) and the same scenario scaled to other
# fleet sizes. Prints, per size: simulated time, wall time, speed-up (from summary.json) and
# peak RSS (GNU time). Usage: bench/virtual.sh [factor...] (default: 0.1 1; 10 = 10M devices
# plays ~100x the 1M run's churn events, ~1.5 billion: not measured, likely half an hour or more).
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --quiet
factors=("${@:-0.1 1}")
# shellcheck disable=SC2068
for f in ${factors[@]}; do
  dir=$(mktemp -d)
  awk -v f="$f" '/^count = [0-9]+/ { printf "count = %d\n", $3 * f; next } { print }' \
    scenarios/s1-million.toml > "$dir/s.toml"
  devices=$(awk '/^count = / { n += $3 } END { print n }' "$dir/s.toml")
  /usr/bin/time -f "%M" -o "$dir/rss" ./target/release/fleetsim run "$dir/s.toml" --no-tui \
    --out "$dir/out" > /dev/null 2>&1
  python3 - "$dir/out/summary.json" "$devices" "$(cat "$dir/rss")" <<'PY'
import json, sys
s = json.load(open(sys.argv[1]))
print(f"{int(sys.argv[2]):>10,} devices: {s['simulated_s']:>9.0f} s simulated "
      f"({s['simulated_s'] / 3600:.1f} h) in {s['wall_s']:6.1f} s wall, "
      f"{s['speedup']:,.0f}x; peak RSS {int(sys.argv[3]) / 1024:,.0f} MB")
PY
  rm -rf "$dir"
done
