#!/usr/bin/env bash
# The README's first command: set up trapcls in .venv (runtime only: no torch) and classify the
# real camera-trap frames in examples/demo/frames into demo-out/predictions.csv with the small
# default model shipped inside the package. Offline, CPU only, nothing is trained.
set -euo pipefail
cd "$(dirname "$0")/.."

PY=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PY" -m venv .venv
.venv/bin/pip install -q -c constraints.txt -e .

run() { echo "+ $*" >&2; "$@"; }
run .venv/bin/trapcls predict examples/demo/frames --out demo-out/predictions.csv --overwrite
echo
echo "first rows of demo-out/predictions.csv (path, label, probability, is_blank):"
head -n 11 demo-out/predictions.csv | cut -d, -f1,3-5
