#!/usr/bin/env bash
# The whole test suite: unit tests, then Ray tests on one shared local instance, then e2e.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
export RAY_USAGE_STATS_ENABLED=0 RAY_AUTH_MODE=disabled RAY_TRAIN_HEALTH_CHECK_INTERVAL_S=0.2
exec .venv/bin/python -m pytest -q -p no:cacheprovider "$@"
