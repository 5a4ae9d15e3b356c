"""Labels for the default model: ../shared/data mapped to coarse groups by label_map.csv.

make_labels.py DATA OUT             -> OUT/labels.csv (filepath,label) for training, without the demo frames
make_labels.py --held-out SPLIT OUT -> OUT/held_out.txt and OUT/held_out_labels.csv: the run's validation
                                       split plus the demo frames (never trained on)
"""

from __future__ import annotations

import csv
import sys
from collections import Counter
from pathlib import Path

HERE = Path(__file__).resolve().parent
DEMO_FRAMES = HERE.parents[1] / "examples" / "demo" / "frames"
SOURCES = ("ena24_small", "cct_sample", "serengeti", "gorongosa")


def label_map() -> dict[tuple[str, str], str]:
    with open(HERE / "label_map.csv", newline="", encoding="utf-8") as fh:
        return {(r["source"], r["label"]): r["group"] for r in csv.DictReader(fh)}


def frames(data: Path) -> list[tuple[Path, str, str]]:
    """(path, source, original label) for every frame of the four sources."""
    found = []
    for source in SOURCES:
        root = data / source
        listed = root / "labels.csv"
        if listed.exists():
            with open(listed, newline="", encoding="utf-8") as fh:
                found += [(root / r["filepath"], source, r["label"]) for r in csv.DictReader(fh)]
        else:
            found += [(p, source, p.parent.name) for p in sorted(root.glob("*/*")) if p.is_file()]
    return found


def write(path: Path, rows: list[tuple[str, str]]) -> None:
    with open(path, "w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh, lineterminator="\n")
        writer.writerow(["filepath", "label"])
        writer.writerows(rows)


def main(argv: list[str]) -> None:
    mapping = label_map()
    if argv[0] == "--held-out":
        split, out = Path(argv[1]), Path(argv[2])
        with open(split, newline="", encoding="utf-8") as fh:
            held = [(r["filepath"], r["label"]) for r in csv.DictReader(fh) if r["part"] == "val"]
        with open(out / "demo_frames.csv", newline="", encoding="utf-8") as fh:
            held += [(r["filepath"], r["label"]) for r in csv.DictReader(fh)]
        write(out / "held_out_labels.csv", held)
        (out / "held_out.txt").write_text("".join(f"{p}\n" for p, _ in held))
        print(f"held out: {len(held)} frames (validation split + demo frames)")
        return
    data, out = Path(argv[0]).resolve(), Path(argv[1])
    demo = {p.name for p in DEMO_FRAMES.iterdir()}
    unmapped = sorted({(s, label) for _, s, label in frames(data) if (s, label) not in mapping})
    if unmapped:
        sys.exit(f"label_map.csv lacks {len(unmapped)} labels, e.g. {unmapped[:5]}")
    train, held, excluded = [], [], Counter()
    for path, source, label in frames(data):
        group = mapping[(source, label)]
        if not group:
            excluded[f"{source}:{label}"] += 1
        elif path.name in demo:
            held.append((str(path), group))
        else:
            train.append((str(path), group))
    write(out / "labels.csv", train)
    write(out / "demo_frames.csv", held)
    counts = Counter(g for _, g in train)
    print(f"{len(train)} training frames in {len(counts)} groups, {len(held)} demo frames held out, "
          f"{sum(excluded.values())} excluded ({', '.join(sorted(excluded))})")
    for group, n in sorted(counts.items()):
        print(f"  {group:<16}{n:>5}")


if __name__ == "__main__":
    main(sys.argv[1:])
