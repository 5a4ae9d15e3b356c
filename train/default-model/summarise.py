"""Print the default model's held-out table (shipped model, random init, majority class) and, with
--install DIR, copy the bundle into the package with what it is written into its bundle.json.

summarise.py OUT [--install DIR]    v1 (train/recipes/default-model.sh)
summarise.py OUT --install-v2 DIR   v2 (train/recipes/default-model-v2.sh): OUT/bundle with its held-out
                                    scores, per source and against v1, from per_source.py's OUT/per_source.json
"""

from __future__ import annotations

import csv
import json
import shutil
import sys
from collections import Counter
from pathlib import Path

import numpy as np

from trapcls.core.metrics import accuracy, balanced_accuracy, log_loss, macro_f1

ABOUT = ("A small demonstration model, not a field-grade classifier: ImageNet EfficientNet-Lite0 features "
         "(frozen) with a 12-group classifier trained on {train} frames from four public camera-trap sets "
         "(ENA24, Caltech Camera Traps, Snapshot Serengeti and WildCam Gorongosa field-guide frames, "
         "../shared/data), held-out scores on {held} frames. Groups and the label mapping: "
         "train/default-model/label_map.csv; recipe: train/recipes/default-model.sh.")


ABOUT_V2 = ("A small demonstration model, not a field-grade classifier: ImageNet EfficientNet-Lite2 (260 px) "
            "{how}, with a 12-group classifier trained on {train} frames from four public camera-trap sets "
            "(ENA24, Caltech Camera Traps, Snapshot Serengeti and WildCam Gorongosa field-guide frames, "
            "../shared/data), held-out scores on {held} frames. Groups and the label mapping: "
            "train/default-model/label_map.csv; recipe: train/recipes/default-model-v2.sh.")


def majority(out: Path, classes: list[str], run: str = "imagenet") -> dict:
    """Always the most frequent training group, with the training frequencies as probabilities."""
    with open(out / run / "split.csv", newline="", encoding="utf-8") as fh:
        train = Counter(r["label"] for r in csv.DictReader(fh) if r["part"] == "train")
    with open(out / "held_out_labels.csv", newline="", encoding="utf-8") as fh:
        labels = np.array([classes.index(r["label"]) for r in csv.DictReader(fh)])
    prior = np.array([train[c] for c in classes], dtype=float)
    probs = np.tile(prior / prior.sum(), (len(labels), 1))
    return {"n": len(labels), "log_loss": log_loss(probs, labels), "accuracy": accuracy(probs, labels),
            "balanced_accuracy": balanced_accuracy(probs, labels), "macro_f1": macro_f1(probs, labels),
            "class": max(train, key=train.get), "train_frames": sum(train.values())}


def install_v2(out: Path, target: Path) -> None:
    """Copy OUT/bundle into `target` as version 2, with its held-out scores and v1's on the same frames."""
    shipped = json.loads((out / "bundle-held-out.json").read_text())["metrics"][0]
    rows = json.loads((out / "per_source.json").read_text())
    v1 = rows[0]
    v2 = next(r for r in rows if Path(r["predictions"]) == out / "bundle-held-out.csv")
    if v2["log_loss"] >= v1["log_loss"]:
        sys.exit(f"not installed: v2's held-out log loss {v2['log_loss']:.4f} is not below v1's {v1['log_loss']:.4f}")
    keys = ("log_loss", "accuracy", "balanced_accuracy", "macro_f1")
    manifest = json.loads((out / "bundle" / "bundle.json").read_text())
    config = manifest["training"]["config"]
    base = majority(out, shipped["classes"], run=Path(config["out"]).name)
    how = "features (frozen)" if config["freeze_backbone"] else "fine-tuned"
    target.mkdir(parents=True, exist_ok=True)
    for name in ("bundle.json", "model.onnx"):  # no weights.safetensors: the ONNX is all predict needs
        shutil.copyfile(out / "bundle" / name, target / name)
    manifest["files"] = {"model.onnx": manifest["files"]["model.onnx"]}
    manifest.update(name="trapcls-default", version="2",
                    about=ABOUT_V2.format(how=how, train=base["train_frames"], held=shipped["n"]))
    manifest["held_out"] = {
        "frames": shipped["n"], "computed_by": "trapcls evaluate (train/recipes/default-model-v2.sh)",
        "shipped": {k: shipped[k] for k in (*keys, "ece", "top_k")},
        "shipped_log_loss_se": v2["log_loss_se"],
        "per_source": {s: {k: m[k] for k in ("n", *keys)} for s, m in v2["per_source"].items()},
        "previous_default_v1": {**{k: v1[k] for k in keys}, "log_loss_diff_paired": v2["log_loss_diff"],
                                "log_loss_diff_se": v2["log_loss_diff_se"]},
        "majority_class": {k: base[k] for k in keys}, "per_class": shipped["per_class"]}
    (target / "bundle.json").write_text(json.dumps(manifest, indent=2) + "\n")
    print(f"installed into {target}")


def main(argv: list[str]) -> None:
    out = Path(argv[0])
    if len(argv) > 2 and argv[1] == "--install-v2":
        install_v2(out, Path(argv[2]))
        return
    shipped = json.loads((out / "bundle-held-out.json").read_text())["metrics"][0]
    random_init = json.loads((out / "bundle-random-init-held-out.json").read_text())["metrics"][0]
    base = majority(out, shipped["classes"])
    keys = ("log_loss", "accuracy", "balanced_accuracy", "macro_f1")
    print(f"held-out frames: {shipped['n']} (validation split + the 10 demo frames)")
    print(f"{'model':<36}" + "".join(f"{k:>18}" for k in keys))
    for name, m in ((f"majority class ({base['class']})", base), ("lite0 random-init", random_init),
                    ("lite0 imagenet (shipped, fp16)", shipped)):
        print(f"{name:<36}" + "".join(f"{m[k]:>18.3f}" for k in keys))
    if len(argv) > 2 and argv[1] == "--install":
        target = Path(argv[2])
        target.mkdir(parents=True, exist_ok=True)
        for name in ("bundle.json", "model.onnx"):  # no weights.safetensors: the ONNX is all predict needs
            shutil.copyfile(out / "bundle" / name, target / name)
        manifest = json.loads((target / "bundle.json").read_text())
        manifest["files"] = {"model.onnx": manifest["files"]["model.onnx"]}
        manifest["about"] = ABOUT.format(train=base["train_frames"], held=shipped["n"])
        manifest["held_out"] = {
            "frames": shipped["n"], "computed_by": "trapcls evaluate (train/recipes/default-model.sh)",
            "shipped": {k: shipped[k] for k in (*keys, "ece", "top_k")},
            "random_init_same_recipe": {k: random_init[k] for k in keys},
            "majority_class": {k: base[k] for k in keys}, "per_class": shipped["per_class"]}
        (target / "bundle.json").write_text(json.dumps(manifest, indent=2) + "\n")
        print(f"installed into {target}")


if __name__ == "__main__":
    main(sys.argv[1:])
