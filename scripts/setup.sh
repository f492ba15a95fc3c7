#!/usr/bin/env bash
# Create .venv at the repository root and install soma-ray with its test extra.
# torch is installed first at 2.13.0 (the CPU wheel on these machines), so the
# project's torch range is already satisfied and nothing pulls a CUDA build.
# The rest goes in with uv (same versions as pip resolves, in a tenth of the time:
# make test from a fresh clone spends this on every run); pip if uv cannot.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
py="${PYTHON:-python3.11}"
command -v "$py" >/dev/null || py=python3
if [ ! -x .venv/bin/python ]; then
  "$py" -m venv .venv
fi
stamp=.venv/.soma-installed
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ] || [ scripts/setup.sh -nt "$stamp" ]; then
  .venv/bin/python -m pip install -q --upgrade pip
  .venv/bin/python -m pip install -q "torch==2.13.0" uv
  .venv/bin/uv pip install -q --compile-bytecode --python .venv/bin/python -e ".[test]" \
    || .venv/bin/python -m pip install -q -e ".[test]"
  # The reference implementation, used only as a test oracle; it needs only torch and safetensors.
  .venv/bin/python -m pip install -q --no-deps "soma-models==0.1.7"
  touch "$stamp"
fi
# Where Python is told not to write bytecode (PYTHONDONTWRITEBYTECODE, as on these machines), every
# process would compile the project's modules again, every Ray worker included: compile them here
# (only what changed since the last time).
.venv/bin/python -m compileall -q soma_ray actors serve >/dev/null
