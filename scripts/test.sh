#!/usr/bin/env bash
# The whole test suite on a fresh machine: installs what the tests need, then runs them.
# Used by the README and by .ci/run.
set -euo pipefail
cd "$(dirname "$0")/.."

# tests/tui.rs drives the dashboard in a tmux pseudo-terminal.
if ! command -v tmux >/dev/null; then
    apt-get update && apt-get install -y tmux
fi

cargo test --locked
