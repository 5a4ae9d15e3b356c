#!/usr/bin/env bash
# The default model shipped in trapcls/default_bundle/: ImageNet EfficientNet-Lite0 features with a
# 12-group classifier trained on ../shared/data, CPU only. Usage (from the repository root):
#   bash train/recipes/default-model.sh [DATA]        # DATA defaults to ../shared/data
#   INSTALL=1 bash train/recipes/default-model.sh     # also copy the bundle into trapcls/default_bundle/
# Environment: OUT (default runs/default-model), TRAPCLS and PYTHON (default: .venv's).
set -euo pipefail
DATA=${1:-../shared/data}
OUT=${OUT:-runs/default-model}
TRAPCLS=${TRAPCLS:-.venv/bin/trapcls}
PYTHON=${PYTHON:-.venv/bin/python}
mkdir -p "$OUT"

# 1. Labels: every frame of the four sources mapped to its group by train/default-model/label_map.csv.
#    The 10 frames of examples/demo/frames (the README's first command) are kept out of training.
"$PYTHON" train/default-model/make_labels.py "$DATA" "$OUT"

# 2. The same recipe twice: from the ImageNet weights, and from random init (the comparison).
common=(--arch tf_efficientnet_lite0 --freeze-backbone --epochs 15 --lr 1e-2 --batch-size 16
        --val-fraction 0.25 --seed 0 --workers 2 --no-export --overwrite)
"$TRAPCLS" train "$OUT/labels.csv" "${common[@]}" --weights examples/weights/efficientnet-lite0-57934424.pth \
    --out "$OUT/imagenet"
"$TRAPCLS" train "$OUT/labels.csv" "${common[@]}" --out "$OUT/random-init"

# 3. Bundles: FP16 ONNX for the shipped one (checked against FP32), FP32 for the comparison.
"$TRAPCLS" export onnx "$OUT/imagenet" --out "$OUT/bundle" --fp16 --verify-images examples/demo/frames
"$TRAPCLS" export onnx "$OUT/random-init" --out "$OUT/bundle-random-init" --verify-images examples/demo/frames

# 4. Held-out scores with trapcls evaluate: the validation split of the run, and the demo frames.
"$PYTHON" train/default-model/make_labels.py --held-out "$OUT/imagenet/split.csv" "$OUT"
for name in bundle bundle-random-init; do
  "$TRAPCLS" predict --file-list "$OUT/held_out.txt" --bundle "$OUT/$name" --out "$OUT/$name-held-out.csv" \
      --overwrite --backend onnxruntime
  "$TRAPCLS" evaluate "$OUT/$name-held-out.csv" --labels "$OUT/held_out_labels.csv" --bundle "$OUT/$name" \
      --json > "$OUT/$name-held-out.json"
done
"$TRAPCLS" evaluate "$OUT/bundle-held-out.csv" --labels "$OUT/held_out_labels.csv" --bundle "$OUT/bundle" \
    --report "$OUT/report.html"
"$PYTHON" train/default-model/summarise.py "$OUT"

if [ "${INSTALL:-0}" = 1 ]; then
  "$PYTHON" train/default-model/summarise.py "$OUT" --install trapcls/default_bundle
fi
