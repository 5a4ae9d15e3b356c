"""Held-out scores of several models side by side, overall and per source (ENA24, CCT, Serengeti, Gorongosa).

per_source.py OUT NAME=PREDICTIONS.csv [NAME=PREDICTIONS.csv ...]

OUT holds held_out_labels.csv (from make_labels.py --held-out). Each frame's source is the folder of
../shared/data its path lies in; it is written as the site column of OUT/held_out_sources.csv, so the
per-source numbers are trapcls evaluate's per-site ones (trapcls.evaluate.run + trapcls.core.metrics).
Every model must have scored the same frames. The first model is the reference: the table gives each
other model's log-loss difference from it, paired frame by frame, with its standard error.
Writes OUT/per_source.json and prints the tables.
"""

from __future__ import annotations

import csv
import json
import sys
from pathlib import Path

import numpy as np
from make_labels import SOURCES

from trapcls.core.metrics import evaluate_probs, log_loss
from trapcls.evaluate.run import match, read_labels, read_predictions

KEYS = ("log_loss", "accuracy", "balanced_accuracy", "macro_f1")


def source_of(path: str) -> str:
    """The source folder named in a frame's path."""
    found = [part for part in Path(path).parts if part in SOURCES]
    if len(found) != 1:
        sys.exit(f"{path}: expected exactly one of the folders {', '.join(SOURCES)} in the path")
    return found[0]


def write_sources(out: Path) -> Path:
    """OUT/held_out_sources.csv: held_out_labels.csv with each frame's source as its site."""
    with open(out / "held_out_labels.csv", newline="", encoding="utf-8") as fh:
        rows = [(r["filepath"], r["label"], source_of(r["filepath"])) for r in csv.DictReader(fh)]
    target = out / "held_out_sources.csv"
    with open(target, "w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh, lineterminator="\n")
        writer.writerow(["filepath", "label", "site"])
        writer.writerows(rows)
    return target


def frame_losses(probs: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Each frame's log loss under the same rule as the mean (clipping, renormalising)."""
    return np.array([log_loss(probs[i:i + 1], labels[i:i + 1]) for i in range(len(labels))])


def score(name: str, predictions: Path, samples: list) -> dict:
    """One predictions CSV matched to the labels (rows sorted by key): evaluate's metrics, per source too."""
    matched = match(read_predictions(predictions), samples)
    if matched.notes:
        sys.exit(f"{name} ({predictions}): " + " ".join(matched.notes))
    order = np.argsort(matched.keys)
    probs, labels = matched.probs[order], matched.labels[order]
    sites = [matched.sites[i] for i in order]
    metrics = evaluate_probs(probs, labels, matched.classes, sites=sites)
    return {"name": name, "predictions": str(predictions), "keys": [matched.keys[i] for i in order],
            "losses": frame_losses(probs, labels), "correct": np.argmax(probs, axis=1) == labels,
            "metrics": metrics}


def se(values: np.ndarray) -> float:
    """Standard error of the mean."""
    return float(np.std(values, ddof=1) / np.sqrt(len(values)))


def main(argv: list[str]) -> None:
    if len(argv) < 2 or any("=" not in a for a in argv[1:]):
        sys.exit(__doc__)
    out = Path(argv[0])
    samples = read_labels(write_sources(out))
    models = [score(name, Path(path), samples) for name, path in (a.split("=", 1) for a in argv[1:])]
    ref = models[0]
    for m in models[1:]:
        if m["keys"] != ref["keys"]:
            sys.exit(f"{m['name']} scored other frames than {ref['name']}; score every model on OUT/held_out.txt")
    n = len(ref["keys"])
    print(f"held-out frames: {n} (validation split + the 10 demo frames); ± is one standard error over frames;\n"
          f"Δ: log loss minus {ref['name']}'s, paired frame by frame")
    print(f"{'model':<30}{'log loss':>17}{'accuracy':>17}{'bal. acc':>10}{'macro-F1':>10}{'Δ log loss':>17}")
    table = []
    for m in models:
        g = m["metrics"]
        diff = m["losses"] - ref["losses"]
        row = {"name": m["name"], "predictions": m["predictions"], "n": n, **{k: g[k] for k in KEYS},
               "log_loss_se": se(m["losses"]), "accuracy_se": se(m["correct"].astype(float)),
               "log_loss_diff": float(diff.mean()), "log_loss_diff_se": se(diff) if m is not ref else 0.0,
               "per_source": g["per_site"]}
        table.append(row)
        paired = "" if m is ref else f"{row['log_loss_diff']:+.3f} ± {row['log_loss_diff_se']:.3f}"
        print(f"{m['name']:<30}{g['log_loss']:>9.3f} ± {row['log_loss_se']:.3f}{g['accuracy']:>9.3f} ± "
              f"{row['accuracy_se']:.3f}{g['balanced_accuracy']:>10.3f}{g['macro_f1']:>10.3f}{paired:>17}")
    sources = list(ref["metrics"]["per_site"])
    print("\nper source: log loss / accuracy (frames)")
    print(f"{'model':<30}" + "".join(f"{s + ' (' + str(ref['metrics']['per_site'][s]['n']) + ')':>20}"
                                     for s in sources))
    for row in table:
        cells = (f"{row['per_source'][s]['log_loss']:.3f} / {row['per_source'][s]['accuracy']:.3f}" for s in sources)
        print(f"{row['name']:<30}" + "".join(f"{c:>20}" for c in cells))
    (out / "per_source.json").write_text(json.dumps(table, indent=2) + "\n")


if __name__ == "__main__":
    main(sys.argv[1:])
