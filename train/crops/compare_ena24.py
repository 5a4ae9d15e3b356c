"""Whole-frame against crop classification on the 21 ENA24 frames, by 3-fold cross-validation (issue 24).

compare_ena24.py [--data DIR] [--out DIR] [--weights FILE] [--epochs N] [--arms whole,md,hand] [--draw PNG]

Three arms, each trained with the default model's CPU recipe (train/recipes/default-model-v2.sh: frozen ImageNet
EfficientNet-Lite2 features at 260 px, head only, AdamW at 1e-2, batch 16, seed 0) on the same three folds of the
same frames (`trapcls train --folds 3 --fold k`: the split is made on frames, so every arm holds out the same 7
frames in fold k, one per class):

- whole: whole frames (no --detections);
- md: crops of the boxes in DATA/md_annotations.json (the file ships with the data as MegaDetector v5 output);
- hand: crops of the boxes in train/detections/ena24-hand-boxes.json, drawn by eye around the animals for this
  comparison (the md boxes do not enclose them; train/README.md).

Every held-out frame is scored once, by the model of the fold that held it out, with the weights of the last
epoch and no temperature (nothing is fitted or chosen on the frames scored; the scores of each fold's best epoch,
chosen on those same frames, are printed too, marked optimistic). A crop arm scores a frame from its boxes' crops
(preprocess_crops, what predict --detections feeds the model), combined by core.model.probs.combine_frames (the
mean, as ENA24 has no blank class). Prints the table (mean and standard error over the 21 frames, and each crop
arm's difference from whole frames, paired frame by frame) and writes OUT/scores.json and OUT/frames.csv.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from trapcls.core.frames.crop import preprocess_crops
from trapcls.core.frames.detections import load_detections
from trapcls.core.frames.preprocess import PreprocessSpec, preprocess
from trapcls.core.model.build import create_model
from trapcls.core.model.checkpoint import load_checkpoint
from trapcls.core.model.probs import combine_frames, probabilities
from trapcls.training.checkpoint import LAST, load_train_state
from trapcls.training.crops import crop_boxes

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
FOLDS = 3
HAND_BOXES = HERE.parent / "detections" / "ena24-hand-boxes.json"
ARMS = {"whole": None, "md": "DATA/md_annotations.json", "hand": str(HAND_BOXES)}
EPS = 1e-15  # log loss clips probabilities as trapcls.core.metrics does


def recipe(weights: Path, epochs: int) -> list[str]:
    """The default model's CPU recipe (train/recipes/default-model-v2.sh), without calibration or export."""
    return ["--arch", "tf_efficientnet_lite2", "--img-size", "260", "--weights", str(weights), "--freeze-backbone",
            "--epochs", str(epochs), "--lr", "1e-2", "--batch-size", "16", "--seed", "0", "--workers", "2",
            "--no-calibrate", "--no-export", "--overwrite"]


def train(arm: str, fold: int, args: argparse.Namespace) -> tuple[Path, float]:
    """One `trapcls train` run of `arm` with fold `fold` held out; its folder and wall time."""
    out = args.out / arm / f"fold-{fold}"
    command = [args.trapcls, "train", str(args.data / "labels.csv"), "--out", str(out.parent), "--folds", str(FOLDS),
               "--fold", str(fold), *recipe(args.weights, args.epochs)]
    if ARMS[arm]:
        command += ["--detections", ARMS[arm].replace("DATA", str(args.data))]
    print("$", " ".join(command), flush=True)
    start = time.perf_counter()
    with open(out.parent / f"fold-{fold}.log", "w") as log:
        subprocess.run(command, check=True, stdout=log, stderr=subprocess.STDOUT)
    return out, time.perf_counter() - start


def model_from(run: Path, state: dict, ckpt: dict):
    """The run's architecture with `state` (a state dict) loaded, in eval mode."""
    model = create_model(ckpt["arch"], len(ckpt["classes"]))
    model.load_state_dict(state)
    return model.eval()


def frame_inputs(run: Path, arm: str, args: argparse.Namespace, spec: PreprocessSpec) -> dict[str, np.ndarray]:
    """Each held-out frame's model input: the whole frame, or its boxes' crops (one row per box)."""
    with open(run / "split.csv", newline="", encoding="utf-8") as fh:
        held_out = [Path(r["filepath"]) for r in csv.DictReader(fh) if r["part"] == "val"]
    if ARMS[arm] is None:
        return {p.name: preprocess(p, spec)[None] for p in held_out}
    config = json.loads((run / "config.json").read_text())
    detections = load_detections(Path(config["detections"]))
    inputs = {}
    for path in held_out:
        boxes, _ = crop_boxes(detections.entries[path.name], config["crops"]["threshold"])
        inputs[path.name] = preprocess_crops(path, list(boxes), spec)[0]
    return inputs


def score_run(run: Path, arm: str, args: argparse.Namespace) -> dict[str, dict[str, np.ndarray]]:
    """Frame -> probabilities of the last epoch's weights and of the best epoch's (both uncalibrated)."""
    torch = __import__("torch")
    ckpt = load_checkpoint(run)
    spec = PreprocessSpec.from_dict(ckpt["preprocess"])
    weights = {"last": load_train_state(run / LAST)["model"], "best": ckpt["state_dict"]}
    inputs = frame_inputs(run, arm, args, spec)
    scored: dict[str, dict[str, np.ndarray]] = {}
    for which, state in weights.items():
        model = model_from(run, state, ckpt)
        with torch.no_grad():
            for name, x in inputs.items():
                probs = probabilities(model(torch.from_numpy(x)).numpy(), 1.0)
                scored.setdefault(name, {})[which] = combine_frames(probs, None)
    return scored


def per_frame(scored: dict, labels: dict[str, str], classes: list[str], which: str) -> dict[str, tuple[float, float]]:
    """Frame -> (correct, log loss) for the `which` weights."""
    out = {}
    for name, probs in scored.items():
        p = probs[which]
        truth = classes.index(labels[name])
        out[name] = (float(np.argmax(p) == truth), float(-np.log(np.clip(p[truth], EPS, 1.0))))
    return out


def mean_se(values: list[float]) -> tuple[float, float]:
    v = np.asarray(values)
    return float(v.mean()), float(v.std(ddof=1) / np.sqrt(len(v)))


def table(results: dict[str, dict[str, tuple[float, float]]], title: str) -> list[str]:
    """One row per arm: accuracy and log loss, mean ± SE over frames, and (crop arms) the paired difference."""
    names = sorted(next(iter(results.values())))
    lines = [title, f"{'arm':<7}{'frames':>7}  {'accuracy':>15}  {'log loss':>15}  {'Δ accuracy':>16}  "
             f"{'Δ log loss':>16}"]
    base = results.get("whole")
    for arm, frames in results.items():
        acc, loss = (mean_se([frames[n][i] for n in names]) for i in (0, 1))
        row = f"{arm:<7}{len(names):>7}  {acc[0]:.3f} ± {acc[1]:.3f}  {loss[0]:>6.3f} ± {loss[1]:.3f}"
        if base is not None and arm != "whole":
            d_acc, d_loss = (mean_se([frames[n][i] - base[n][i] for n in names]) for i in (0, 1))
            row += f"  {d_acc[0]:+.3f} ± {d_acc[1]:.3f}  {d_loss[0]:+7.3f} ± {d_loss[1]:.3f}"
        lines.append(row)
    return lines


def draw(data: Path, out: Path) -> None:
    """A contact sheet of the 21 frames with the md boxes (red) and the hand-drawn ones (green)."""
    from PIL import Image, ImageDraw, ImageOps

    md, hand = (load_detections(Path(p.replace("DATA", str(data)))) for p in (ARMS["md"], ARMS["hand"]))
    tiles = []
    for name in md.entries:
        img = ImageOps.exif_transpose(Image.open(data / name)).convert("RGB")
        pen = ImageDraw.Draw(img)
        for boxes, colour in ((md.entries[name].boxes, (255, 0, 0)), (hand.entries[name].boxes, (0, 255, 0))):
            for b in boxes:
                pen.rectangle([b.x * img.width, b.y * img.height, (b.x + b.w) * img.width, (b.y + b.h) * img.height],
                              outline=colour, width=8)
        pen.text((20, 60), name, fill=(255, 255, 0))
        tiles.append(img.resize((480, 270)))
    sheet = Image.new("RGB", (480 * 5, 270 * ((len(tiles) + 4) // 5)))
    for i, tile in enumerate(tiles):
        sheet.paste(tile, ((i % 5) * 480, (i // 5) * 270))
    sheet.save(out)


def parse() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=REPO.parent / "shared/data/ena24_small")
    parser.add_argument("--out", type=Path, default=REPO / "runs/crops-ena24")
    parser.add_argument("--weights", type=Path, default=REPO.parent / "shared/weights/efficientnet-lite2-9656183e.pth")
    parser.add_argument("--epochs", type=int, default=15)
    parser.add_argument("--arms", default=",".join(ARMS))
    parser.add_argument("--trapcls", default=os.environ.get("TRAPCLS", str(REPO / ".venv/bin/trapcls")))
    parser.add_argument("--score-only", action="store_true", help="score the runs already in --out")
    parser.add_argument("--draw", type=Path, help="also write the frames with both box sets drawn to this PNG")
    return parser.parse_args()


def main() -> None:
    args = parse()
    args.out.mkdir(parents=True, exist_ok=True)
    if args.draw:
        draw(args.data, args.draw)
    with open(args.data / "labels.csv", newline="", encoding="utf-8") as fh:
        labels = {r["filepath"]: r["label"] for r in csv.DictReader(fh)}
    classes = sorted(set(labels.values()))
    scored: dict[str, dict] = {}
    seconds: dict[str, float] = {}
    for arm in args.arms.split(","):
        scored[arm], seconds[arm] = {}, 0.0
        for fold in range(1, FOLDS + 1):
            run = args.out / arm / f"fold-{fold}"
            if not args.score_only:
                (args.out / arm).mkdir(exist_ok=True)
                seconds[arm] += train(arm, fold, args)[1]
            scored[arm].update(score_run(run, arm, args))
    if set.union(*(set(s) for s in scored.values())) != set(labels) or any(len(s) != len(labels)
                                                                            for s in scored.values()):
        sys.exit("every arm must score every frame exactly once")
    results = {which: {arm: per_frame(s, labels, classes, which) for arm, s in scored.items()}
               for which in ("last", "best")}
    lines = table(results["last"], f"last epoch ({args.epochs}), uncalibrated: {len(labels)} frames, each scored "
                                   "by the fold that held it out")
    lines += [""] + table(results["best"], "best epoch of each fold, chosen on the frames scored (optimistic)")
    lines += ["", "train wall time (3 folds): " + ", ".join(f"{a} {s:.0f} s" for a, s in seconds.items() if s)]
    print("\n".join(lines))
    (args.out / "scores.json").write_text(json.dumps({w: {a: {n: list(v) for n, v in f.items()} for a, f in r.items()}
                                                      for w, r in results.items()}, indent=1) + "\n")
    with open(args.out / "frames.csv", "w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(["frame", "label", *[f"{a}_{k}" for a in scored for k in ("correct", "log_loss")]])
        for name in sorted(labels):
            writer.writerow([name, labels[name], *[f"{v:.4f}" for a in scored for v in results["last"][a][name]]])


if __name__ == "__main__":
    main()
