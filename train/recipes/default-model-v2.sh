#!/usr/bin/env bash
# Default model v2: ImageNet EfficientNet-Lite2 features at 260 px (frozen) with v1's 12-group classifier,
# trained on ../shared/data, CPU only, and scored against v1 on the same 92 held-out frames. What was
# tried and why this one: train/README.md, "Default model v2: what was tried". Usage (from the repository root):
#   bash train/recipes/default-model-v2.sh [DATA]        # DATA defaults to ../shared/data
#   ALL=1 bash train/recipes/default-model-v2.sh         # also train and score the fine-tuning candidates
#   INSTALL=1 bash train/recipes/default-model-v2.sh     # copy the bundle into trapcls/default_bundle/, only
#                                                        # if its held-out log loss is below v1's, and
#                                                        # certify its blank policy (step 6)
#   bash train/default-model/certify_blank.sh [DATA]     # step 6 alone: recertify the shipped model, no training
# Environment: OUT (default runs/default-model-v2), BASELINE (the v1 bundle to beat; default
# trapcls/default_bundle while that is still v1; once v2 is installed, point it at v1 as committed
# before the install: `git log -- trapcls/default_bundle`), WEIGHTS (the ImageNet Lite2 state dict,
# default ../shared/weights/efficientnet-lite2-9656183e.pth), TRAPCLS and PYTHON (default: .venv's).
set -euo pipefail
DATA=${1:-../shared/data}
OUT=${OUT:-runs/default-model-v2}
TRAPCLS=${TRAPCLS:-.venv/bin/trapcls}
PYTHON=${PYTHON:-.venv/bin/python}
BASELINE=${BASELINE:-trapcls/default_bundle}
WEIGHTS=${WEIGHTS:-../shared/weights/efficientnet-lite2-9656183e.pth}
mkdir -p "$OUT"

version=$("$PYTHON" -c 'import json, sys; print(json.load(open(sys.argv[1])).get("version"))' "$BASELINE/bundle.json")
if [ "$version" != 1 ]; then
  echo "$BASELINE holds version $version of the default model, not v1: set BASELINE to the v1 bundle." >&2
  exit 1
fi

# 1. Labels: the same as v1's (train/default-model/label_map.csv; the 10 demo frames kept out of training).
"$PYTHON" train/default-model/make_labels.py "$DATA" "$OUT"

# 2. Train. Every candidate uses v1's split (25% validation, stratified by group, seed 0), so all are scored
#    on the same held-out frames; the one shipped had the lowest validation log loss. v2 is v1's recipe
#    with Lite2 at 260 px in place of Lite0 at 224.
common=(--batch-size 16 --val-fraction 0.25 --seed 0 --workers 2 --no-export --overwrite)
lite2=(--arch tf_efficientnet_lite2 --img-size 260 --weights "$WEIGHTS")
"$TRAPCLS" train "$OUT/labels.csv" "${common[@]}" "${lite2[@]}" --freeze-backbone --epochs 15 --lr 1e-2 \
    --out "$OUT/lite2-frozen"

# 3. The bundle: FP16 ONNX like v1's, checked against FP32 on the demo frames.
"$TRAPCLS" export onnx "$OUT/lite2-frozen" --out "$OUT/bundle" --fp16 --verify-images examples/demo/frames

# 4. ALL=1: the candidates that fine-tune the backbone too, all worse on validation (train/README.md).
candidates=()
if [ "${ALL:-0}" = 1 ]; then
  "$TRAPCLS" train "$OUT/labels.csv" "${common[@]}" "${lite2[@]}" --freeze-epochs 3 --epochs 12 --lr 2e-3 \
      --layer-decay 0.75 --out "$OUT/lite2-ft-ld75"
  "$TRAPCLS" train "$OUT/labels.csv" "${common[@]}" "${lite2[@]}" --freeze-epochs 6 --epochs 14 --lr 1e-2 \
      --layer-decay 0.6 --ema-decay 0.9 --out "$OUT/lite2-ft-ld60-ema"
  "$TRAPCLS" train "$OUT/labels.csv" "${common[@]}" --from-bundle "$OUT/bundle" --epochs 6 --lr 5e-4 \
      --layer-decay 0.75 --ema-decay 0.9 --out "$OUT/lite2-frozen-then-ft"
  candidates=(lite2-ft-ld75 lite2-ft-ld60-ema lite2-frozen-then-ft)
fi

# 5. Held-out scores: the validation split plus the demo frames, for v1, v2 and (ALL=1) the other
#    candidates, overall and per source (train/default-model/per_source.py, which refuses models that
#    scored other frames). Each candidate's validation split must be v2's, frame for frame. The split
#    depends only on the labels and the seed, so on the same data it is the shipped model's, committed as
#    train/default-model/held_out.csv (paths relative to DATA).
"$PYTHON" train/default-model/make_labels.py --held-out "$OUT/lite2-frozen/split.csv" "$OUT" "$DATA"
if ! cmp -s "$OUT/held_out.csv" train/default-model/held_out.csv; then
  echo "note: these held-out frames are not the shipped model's (train/default-model/held_out.csv): other data?" >&2
fi
scored=()
score() {  # score NAME BUNDLE CSV: predict the held-out frames with BUNDLE into CSV, evaluate them
  "$TRAPCLS" predict --file-list "$OUT/held_out.txt" --bundle "$2" --out "$3" --overwrite --backend onnxruntime
  "$TRAPCLS" evaluate "$3" --labels "$OUT/held_out_labels.csv" --bundle "$2" --json > "${3%.csv}.json"
  scored+=("$1=$3")
}
score "v1: lite0 frozen (shipped)" "$BASELINE" "$OUT/bundle-v1-held-out.csv"
score "v2: lite2 frozen (fp16)" "$OUT/bundle" "$OUT/bundle-held-out.csv"
for name in "${candidates[@]}"; do
  cmp <(grep ',val$' "$OUT/lite2-frozen/split.csv") <(grep ',val$' "$OUT/$name/split.csv")
  "$TRAPCLS" export onnx "$OUT/$name" --out "$OUT/bundle-$name" --verify-images examples/demo/frames  # FP32
  score "$name" "$OUT/bundle-$name" "$OUT/bundle-$name-held-out.csv"
done
"$PYTHON" train/default-model/per_source.py "$OUT" "${scored[@]}"
"$TRAPCLS" evaluate "$OUT/bundle-held-out.csv" --labels "$OUT/held_out_sources.csv" --bundle "$OUT/bundle" \
    --report "$OUT/report.html"

if [ "${INSTALL:-0}" = 1 ]; then
  "$PYTHON" train/default-model/summarise.py "$OUT" --install-v2 trapcls/default_bundle
  cp "$OUT/held_out.csv" train/default-model/held_out.csv  # its held-out frames, committed with it
  # 6. Its blank policy, certified on the held-out frames and stored in the installed bundle: at most 5%
  #    of animal frames set aside, 95% confidence (README, "Setting blanks aside safely"). The predictions
  #    are the ones users get: `trapcls predict` with no --bundle and no --backend (train/default-model/
  #    certify_blank.sh, which also records the backend and precision they ran on). Rerun that script alone
  #    to recertify the shipped model without retraining, e.g. after a change to predict's backends.
  OUT="$OUT" TRAPCLS="$TRAPCLS" PYTHON="$PYTHON" bash train/default-model/certify_blank.sh "$DATA"
  # 7. The committed report (train/default-model/report.html): the shipped model on those predictions.
  "$TRAPCLS" evaluate "$OUT/shipped-held-out.csv" --labels "$OUT/held_out_sources.csv" --bundle trapcls/default_bundle \
      --report "$OUT/report.html"
  cp "$OUT/report.html" train/default-model/report.html
fi
