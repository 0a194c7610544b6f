#!/usr/bin/env bash
# Set up everything ldcodec needs in ./.venv (idempotent). The CPU build of torch is
# installed first: an unpinned torch would pull a CUDA build of several GB.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PY" -m venv .venv
# (no pip self-upgrade: the pip that venv bundles with Python >= 3.10 installs this package, and
# the upgrade cost 5 s of the README's first command)
.venv/bin/python -c "import torch" 2>/dev/null || .venv/bin/python -m pip install -q "torch==2.13.0"
.venv/bin/python -m pip install -q -e ".[test]"
