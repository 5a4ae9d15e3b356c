#!/usr/bin/env bash
# The README's second command: set up .venv with the train and dev extras, run the whole suite.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PY" -m venv .venv
.venv/bin/pip install -q -c constraints.txt -e ".[train,dev]"
# pytest exits 5 when it collected nothing; that must fail CI like any other error.
exec .venv/bin/python -m pytest -q "$@"
