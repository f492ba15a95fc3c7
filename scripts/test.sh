#!/usr/bin/env bash
# The whole test suite: the unit tier, the Ray tier (on one shared local Ray) and the e2e tier.
#
# With no arguments, two pytest processes run at once, each with its own shared Ray: the main one
# runs the e2e tier; beside it, a second one runs the unit tier, the Ray tier and the e2e modules
# marked `own_ray` (tests/conftest.py: they start Ray clusters of their own in subprocesses) or
# `beside` (a few e2e modules with networks of their own, to even out the two runs). Both
# spend much of their time waiting (on consensus, epochs, clusters starting), so together they
# finish well before one after the other would. The second one's output follows the main one's.
# With arguments, one pytest run of what they select.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
export RAY_USAGE_STATS_ENABLED=0 RAY_AUTH_MODE=disabled RAY_TRAIN_HEALTH_CHECK_INTERVAL_S=0.2 \
  RAY_TRAIN_ENABLE_PREEMPTION_WATCHER=0
pytest=(.venv/bin/python -m pytest -q -p no:cacheprovider)
if [ "$#" -gt 0 ]; then
  exec "${pytest[@]}" "$@"
fi

beside_log="$(mktemp "${TMPDIR:-/tmp}/soma-test-beside.XXXXXX")"
# `trap - INT`: a background job of a script ignores SIGINT unless told otherwise; this one must
# stop (and clean up its clusters) on Ctrl-C like the main one.
(trap - INT; exec "${pytest[@]}" -m "not e2e or own_ray or beside") >"$beside_log" 2>&1 &
beside=$!

main_status=0
"${pytest[@]}" -m "e2e and not own_ray and not beside" || main_status=$?
beside_status=0
wait "$beside" || beside_status=$?

echo
echo "=== run beside the one above: the unit and Ray tiers, and the e2e modules with Ray clusters of their own ==="
cat "$beside_log"
rm -f "$beside_log"
if [ "$main_status" -ne 0 ]; then
  exit "$main_status"
fi
exit "$beside_status"
