#!/usr/bin/env bash
# The main job: a 4-validator localnet in the foreground (Ctrl-C stops it). Extra arguments go
# to `soma start localnet` (e.g. --detach, --validators 7, --epoch-duration 5m, --data-dir DIR).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
export RAY_USAGE_STATS_ENABLED=0
exec "$root/.venv/bin/soma" start localnet "$@"
