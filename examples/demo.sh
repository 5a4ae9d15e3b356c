#!/usr/bin/env bash
# The README's first command: set up trapcls in .venv, build a small demo model from the
# committed ImageNet EfficientNet-Lite0 weights and frames, and classify examples/demo/frames
# into demo-out/predictions.csv. Offline, CPU only, about 5 minutes on 2 cores.
set -euo pipefail
cd "$(dirname "$0")/.."

PY=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PY" -m venv .venv
# constraints.txt pins the torch build so setup stays fast and reproducible.
.venv/bin/pip install -q -c constraints.txt -e ".[train]"

run() { echo "+ $*" >&2; "$@"; }
rm -rf demo-out
run .venv/bin/trapcls train examples/demo/train --arch tf_efficientnet_lite0 \
    --weights examples/weights/efficientnet-lite0-57934424.pth --freeze-backbone \
    --epochs 20 --lr 1e-2 --batch-size 8 --val-fraction 0 --out demo-out/run
run .venv/bin/trapcls predict examples/demo/frames --bundle demo-out/run/bundle --out demo-out/predictions.csv
echo
echo "first rows of demo-out/predictions.csv (path, label, probability, is_blank):"
head -n 11 demo-out/predictions.csv | cut -d, -f1,3-5
