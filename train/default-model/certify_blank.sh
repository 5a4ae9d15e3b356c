#!/usr/bin/env bash
# The shipped model's blank policy, certified on the predictions `trapcls predict` makes as a user runs it
# (no --bundle, no --backend: the default model on the backend predict picks on this machine), over its 92
# held-out frames (held_out.csv, paths relative to DATA), and stored in trapcls/default_bundle/bundle.json with
# what those predictions ran on. Only bundle.json changes; the model file and its sha256 stay as they are.
# Usage (from the repository root; train/recipes/default-model-v2.sh runs it after INSTALL=1):
#   bash train/default-model/certify_blank.sh [DATA]     # DATA defaults to ../shared/data
# Environment: OUT (default runs/default-model-v2), TRAPCLS and PYTHON (default: .venv's).
set -euo pipefail
DATA=${1:-../shared/data}
OUT=${OUT:-runs/default-model-v2}
TRAPCLS=${TRAPCLS:-.venv/bin/trapcls}
PYTHON=${PYTHON:-.venv/bin/python}
BUNDLE=trapcls/default_bundle
mkdir -p "$OUT"

# predict without --bundle must mean this checkout's bundle (an editable install), else the policy would be
# certified on one copy of the model and stored in another.
"$PYTHON" - "$BUNDLE" <<'EOF'
import sys
from pathlib import Path
from trapcls.core.model.bundle import default_bundle
if default_bundle().resolve() != Path(sys.argv[1]).resolve():
    sys.exit(f"trapcls here uses the default model in {default_bundle()}, not {sys.argv[1]}: "
             "pip install -e . first, so predict classifies with the bundle this script certifies.")
EOF

"$PYTHON" train/default-model/make_labels.py --shipped-held-out "$DATA" "$OUT"
env -u TRAPCLS_BUNDLE "$TRAPCLS" predict --file-list "$OUT/held_out.txt" --out "$OUT/shipped-held-out.csv" \
    --overwrite 2> "$OUT/shipped-held-out.log" || { cat "$OUT/shipped-held-out.log" >&2; exit 1; }
grep -E "^(model|backend|INFO)" "$OUT/shipped-held-out.log" >&2
"$TRAPCLS" evaluate "$OUT/shipped-held-out.csv" --labels "$OUT/held_out_labels.csv" --blank-miss 0.05 \
    --confidence 0.95 --write-bundle "$BUNDLE"

# What the certified predictions ran on, from predict's own log: the backend it chose and, for an FP16-stored
# model on ONNX Runtime's CPU provider, that it widened the graph to FP32 in memory (trapcls/predict/upcast.py).
"$PYTHON" - "$BUNDLE" "$OUT/shipped-held-out.log" <<'EOF'
import json
import re
import sys
from pathlib import Path

from trapcls.core.model.bundle import MANIFEST, load_bundle
from trapcls.core.system.fsutil import atomic_write_text

bundle, log = load_bundle(Path(sys.argv[1])), Path(sys.argv[2]).read_text()
backend = re.search(r"^backend: (\S+ on \S+)", log, re.M)
runtime = re.search(r"^INFO trapcls\.predict\.backends: (onnxruntime [\d.]+) on ", log, re.M)
stored = bundle.onnx_precision
if "widened to FP32 in memory" in log:
    precision = f"{stored} stored, widened to fp32 in memory on the CPU (trapcls/predict/upcast.py)"
else:
    precision = f"{stored} as stored"
manifest = json.loads((bundle.root / MANIFEST).read_text())
manifest["blank_policy"]["predicted_with"] = {
    "command": "trapcls predict --file-list held_out.txt --out shipped-held-out.csv (no --bundle, no --backend)",
    "backend": backend[1] if backend else "unknown",
    "runtime": runtime[1] if runtime else None,
    "precision": precision,
    "frames": "train/default-model/held_out.csv (paths relative to ../shared/data)",
}
atomic_write_text(bundle.root / MANIFEST, json.dumps(manifest, indent=2) + "\n")
load_bundle(bundle.root)  # the model file still matches its recorded sha256
print(f"recorded in {bundle.root / MANIFEST}: " + json.dumps(manifest["blank_policy"]["predicted_with"]))
EOF
