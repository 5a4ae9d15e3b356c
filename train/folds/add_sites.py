"""Sites for the frames of ../shared/data, for a site-grouped cross-validation: add_sites.py LABELS OUT.

LABELS is train/default-model/make_labels.py's labels.csv (filepath,label, absolute paths); OUT gets
filepath,label,site. A site is where the frame's camera stood, as far as the data tells:

- ENA24: the camera named in the frame's overlay (NRC268, ...: ena24_cameras.csv, read off the frames by eye);
  the five Bushnell frames print no camera, so each is a site of its own;
- Caltech Camera Traps, Snapshot Serengeti and Gorongosa: their frames here carry no camera or location, so each
  frame is a site of its own (frames of one camera may then fall on both sides of a split: the CV is
  site-grouped only where the data names the site).
"""

from __future__ import annotations

import csv
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent


def main(labels: Path, out: Path) -> None:
    with open(HERE / "ena24_cameras.csv", newline="", encoding="utf-8") as fh:
        cameras = {r["filepath"]: r["camera"] for r in csv.DictReader(fh)}
    with open(labels, newline="", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    sites = []
    for row in rows:
        path = Path(row["filepath"])
        source = next(part for part in path.parts if part in ("ena24_small", "cct_sample", "serengeti", "gorongosa"))
        camera = cameras.get(path.name) if source == "ena24_small" else None
        sites.append(f"{source}/{camera}" if camera else f"{source}/{path.stem}")
    with open(out, "w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh, lineterminator="\n")
        writer.writerow(["filepath", "label", "site"])
        writer.writerows([r["filepath"], r["label"], site] for r, site in zip(rows, sites, strict=True))
    print(f"{len(rows)} frames at {len(set(sites))} sites -> {out}")


if __name__ == "__main__":
    main(Path(sys.argv[1]), Path(sys.argv[2]))
