#!/usr/bin/env bash
# The test command (README): installs what the SDK, browser and Prometheus tests need on a fresh
# Debian machine (Node's azure-iothub, Python's azure-iot-hub, azure-iot-device and six, Chromium,
# Prometheus), then runs every Rust test with those tests made mandatory. Idempotent: installs are
# skipped when already in place.
set -euo pipefail
cd "$(dirname "$0")/.."

apt_install() {
  if [ -z "${apt_updated:-}" ]; then apt-get update -qq; apt_updated=1; fi
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null
}

# tests/tui.rs drives the dashboard in a tmux pseudo-terminal.
command -v tmux >/dev/null || apt_install tmux

# tests/report_html.rs loads the HTML reports in headless Chromium.
command -v chromium >/dev/null || apt_install chromium
# tests/prometheus.rs checks /metrics with promtool and scrapes a hub with a real Prometheus.
command -v promtool >/dev/null && command -v prometheus >/dev/null || apt_install prometheus

# Node service SDK, pinned by tests/sdk/node/package-lock.json.
command -v npm >/dev/null || apt_install nodejs npm
if [ ! -d tests/sdk/node/node_modules/azure-iothub ] \
  || [ tests/sdk/node/package-lock.json -nt tests/sdk/node/node_modules/.package-lock.json ]; then
  (cd tests/sdk/node && npm ci --no-audit --no-fund --loglevel=error)
fi

# Python service and device SDKs (azure-iot-hub 2.x imports six without declaring it).
command -v python3 >/dev/null || apt_install python3
python3 -m pip --version >/dev/null 2>&1 || apt_install python3-pip
PY_SDKS=("azure-iot-hub>=2.7,<3" "azure-iot-device>=2.12,<3" six)
if ! python3 -c "import azure.iot.hub, azure.iot.device, six" 2>/dev/null; then
  python3 -m pip install --quiet --disable-pip-version-check "${PY_SDKS[@]}" \
    || python3 -m pip install --quiet --disable-pip-version-check --break-system-packages \
      "${PY_SDKS[@]}"
fi

FLEETSIM_SDK_TESTS=1 cargo test --locked
