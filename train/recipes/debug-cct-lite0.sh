#!/usr/bin/env bash
# The tiny CPU debug recipe: Lite0 on the 60 real Caltech Camera Traps frames (13 classes, 20 of
# them empty), once from the shared ImageNet weights and once from random init, same recipe
# and same held-out split, so the value of pretrained features shows. About 1 minute on 2 cores.
# Usage: bash train/recipes/debug-cct-lite0.sh [DATA_ROOT]   (default ../shared/data)
set -euo pipefail
cd "$(dirname "$0")/../.."
DATA=${1:-../shared/data}/cct_sample
OUT=${OUT:-runs/debug-cct}
TRAPCLS=${TRAPCLS:-.venv/bin/trapcls}
common=(--arch tf_efficientnet_lite0 --freeze-backbone --epochs 10 --lr 1e-2 --batch-size 16
        --val-fraction 0.3 --seed 0 --no-export --overwrite)
"$TRAPCLS" train "$DATA" "${common[@]}" --weights examples/weights/efficientnet-lite0-57934424.pth --out "$OUT/imagenet"
"$TRAPCLS" train "$DATA" "${common[@]}" --out "$OUT/random-init"
"${PYTHON:-.venv/bin/python}" - "$OUT" <<'PY'
import csv, math, sys
from collections import Counter
from pathlib import Path

import torch

out = Path(sys.argv[1])
with open(out / "imagenet" / "split.csv") as fh:
    rows = list(csv.DictReader(fh))
train = Counter(r["label"] for r in rows if r["part"] == "train")
val = [r["label"] for r in rows if r["part"] == "val"]
majority = train.most_common(1)[0][0]
prior = {c: n / sum(train.values()) for c, n in train.items()}
chance_ll = -sum(math.log(max(prior.get(y, 0), 1e-15)) for y in val) / len(val)
print(f"held-out frames: {len(val)}")
print(f"{'model':<28}{'val accuracy':>14}{'val log loss':>14}{'calibrated':>12}")
print(f"{'class prior (' + majority + ')':<28}{sum(y == majority for y in val) / len(val):>14.3f}{chance_ll:>14.3f}")
for name in ("random-init", "imagenet"):
    with open(out / name / "metrics.csv") as fh:
        best = min(csv.DictReader(fh), key=lambda r: float(r["val_log_loss"]))
    calibrated = torch.load(out / name / "best.pt", weights_only=True)["calibration"]["val_log_loss_after"]
    print(f"{'lite0 ' + name:<28}{float(best['val_accuracy']):>14.3f}{float(best['val_log_loss']):>14.3f}"
          f"{calibrated:>12.3f}")
PY
