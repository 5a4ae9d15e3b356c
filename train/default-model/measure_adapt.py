"""Held-out log loss and accuracy per source, with and without `trapcls adapt` (issue 15, item 2).

Usage: python train/default-model/measure_adapt.py PRED.csv SOURCES.csv BUNDLE OUT_DIR [--min-frames N ...]
PRED.csv: held-out predictions whose first path folder is the source (ena24_small, cct_sample, ...);
SOURCES.csv: filepath,label,site with site = source. Runs `trapcls adapt` (deployment = source) for
each --min-frames/--prior-strength setting given, scores every CSV with `trapcls evaluate --json`
per site, and prints one markdown table, whatever the result.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

TRAPCLS = [sys.executable, "-m", "trapcls"]


def scores(pred: Path, labels: Path) -> dict:
    done = subprocess.run([*TRAPCLS, "evaluate", str(pred), "--labels", str(labels), "--json"], check=True,
                          capture_output=True, text=True)
    metrics = json.loads(done.stdout)["metrics"][0]
    rows = {"all": metrics}
    rows.update(metrics.get("per_site") or {})
    return rows


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("pred", type=Path)
    parser.add_argument("sources", type=Path)
    parser.add_argument("bundle", type=Path)
    parser.add_argument("out", type=Path)
    parser.add_argument("--settings", nargs="+", default=["30:10", "10:10", "10:0"],
                        help="MIN_FRAMES:PRIOR_STRENGTH pairs to try")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    table = {"unadapted": scores(args.pred, args.sources)}
    for setting in args.settings:
        min_frames, strength = setting.split(":")
        adapted = args.out / f"adapted-{min_frames}-{strength}.csv"
        subprocess.run([*TRAPCLS, "adapt", str(args.pred), "--bundle", str(args.bundle), "--out", str(adapted),
                        "--min-frames", min_frames, "--prior-strength", strength], check=True, capture_output=True)
        table[f"adapted (min {min_frames}, strength {strength})"] = scores(adapted, args.sources)
    sites = list(table["unadapted"])
    print("| | " + " | ".join(f"{s} (n={table['unadapted'][s]['n']}) log loss / acc" for s in sites) + " |")
    print("|---|" + "---|" * len(sites))
    for name, rows in table.items():
        print(f"| {name} | " + " | ".join(f"{rows[s]['log_loss']:.3f} / {rows[s]['accuracy']:.3f}" for s in sites)
              + " |")
    (args.out / "adapt-measure.json").write_text(json.dumps(table, indent=2, default=str) + "\n")


if __name__ == "__main__":
    main()
