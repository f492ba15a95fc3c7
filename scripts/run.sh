#!/usr/bin/env bash
# The main job: a localnet with its default embedded parts (see README).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
export RAY_USAGE_STATS_ENABLED=0
exec "$root/.venv/bin/soma" simulate "$@"
