#!/usr/bin/env bash
# The package as a user gets it (issue 27): build the wheel from this repository, install it into a
# fresh virtual environment (the CPU build of torch first, as scripts/install.sh does) and run the
# shipped-model quickstart there, outside the repository, so package data (models, assets), the
# entry point and the dependencies are checked. Usage: bash scripts/wheel_check.sh [WORKDIR]
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
WORK=${1:-$(mktemp -d)}
mkdir -p "$WORK"
"$PY" -m pip wheel -q --no-deps -w "$WORK/dist" .
"$PY" -m venv "$WORK/venv"
"$WORK/venv/bin/python" -m pip install -q --upgrade pip
"$WORK/venv/bin/python" -m pip install -q "torch==2.13.0"
"$WORK/venv/bin/python" -m pip install -q "$WORK"/dist/ldcodec-*.whl
cd "$WORK"
venv/bin/ldcodec models
venv/bin/ldcodec quickstart --out "$WORK/quickstart"
venv/bin/python -c "import ldcodec; c = ldcodec.load('mnist-u'); print('ldcodec.load:', c.name, c.model_id().hex())"
echo "wheel check passed in $WORK"
