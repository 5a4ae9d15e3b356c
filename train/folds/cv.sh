#!/usr/bin/env bash
# 5-fold site-grouped cross-validation on ../shared/data of two members, and the ensemble fitted on their
# out-of-fold predictions (issue 25; results in train/README.md, "Five folds and an ensemble"). Usage, from the
# repository root:
#   bash train/folds/cv.sh [DATA]          # DATA defaults to ../shared/data
# Environment: OUT (default runs/cv), EPOCHS (default 15, the default model's recipe), TRAPCLS and PYTHON
# (default: .venv's), WEIGHTS_LITE2 / WEIGHTS_LITE0 (the ImageNet state dicts in ../shared/weights).
set -euo pipefail
DATA=${1:-../shared/data}
OUT=${OUT:-runs/cv}
EPOCHS=${EPOCHS:-15}
TRAPCLS=${TRAPCLS:-.venv/bin/trapcls}
PYTHON=${PYTHON:-.venv/bin/python}
WEIGHTS_LITE2=${WEIGHTS_LITE2:-../shared/weights/efficientnet-lite2-9656183e.pth}
WEIGHTS_LITE0=${WEIGHTS_LITE0:-../shared/weights/efficientnet-lite0-57934424.pth}
mkdir -p "$OUT"

# 1. The default model's labels (train/default-model/label_map.csv, demo frames left out), with sites.
"$PYTHON" train/default-model/make_labels.py "$DATA" "$OUT"
"$PYTHON" train/folds/add_sites.py "$OUT/labels.csv" "$OUT/labels_sites.csv"

# 2. Member A, the default model's recipe (train/recipes/default-model-v2.sh): frozen Lite2 features at 260 px.
#    Member B: Lite0 at 224 px, the same head training. Both: 5 folds by site, seed 0; each writes
#    OUT/<member>/fold-k/, OUT/<member>/oof.csv and OUT/<member>/bundle (the folds averaged).
common=(--folds 5 --group-by site --batch-size 16 --seed 0 --workers 2 --freeze-backbone --epochs "$EPOCHS"
        --lr 1e-2 --overwrite)
"$TRAPCLS" train "$OUT/labels_sites.csv" "${common[@]}" --arch tf_efficientnet_lite2 --img-size 260 \
    --weights "$WEIGHTS_LITE2" --out "$OUT/lite2-260"
"$TRAPCLS" train "$OUT/labels_sites.csv" "${common[@]}" --arch tf_efficientnet_lite0 --img-size 224 \
    --weights "$WEIGHTS_LITE0" --out "$OUT/lite0-224"

# 3. The ensemble, fitted on the two out-of-fold tables.
"$TRAPCLS" ensemble fit "$OUT/lite2-260/oof.csv" "$OUT/lite0-224/oof.csv" --labels "$OUT/labels_sites.csv" \
    --out "$OUT/weights.json"
