"""Labels for the default model: ../shared/data mapped to coarse groups by label_map.csv.

make_labels.py DATA OUT                    -> OUT/labels.csv (filepath,label) for training, without the demo frames
make_labels.py --held-out SPLIT OUT [DATA] -> OUT/held_out.txt and OUT/held_out_labels.csv: the run's validation
                                              split plus the demo frames (never trained on); with DATA also
                                              OUT/held_out.csv: the same frames with paths relative to DATA, to
                                              commit with the model
make_labels.py --shipped-held-out DATA OUT -> OUT/held_out.txt and OUT/held_out_labels.csv from the committed
                                              held_out.csv (the shipped model's 92 held-out frames) and DATA on
                                              this machine: rescoring or recertifying needs no retraining

held_out.csv holds no absolute path, so it means the same frames on any machine with the data. The run
files hold this machine's absolute paths (predict's --file-list and evaluate's --labels take them as
they are) and stay in OUT.
"""

from __future__ import annotations

import csv
import sys
from collections import Counter
from pathlib import Path

HERE = Path(__file__).resolve().parent
DEMO_FRAMES = HERE.parents[1] / "examples" / "demo" / "frames"
SHIPPED_HELD_OUT = HERE / "held_out.csv"
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


def read_pairs(path: Path) -> list[tuple[str, str]]:
    """(filepath, label) rows of a filepath,label CSV."""
    with open(path, newline="", encoding="utf-8") as fh:
        return [(r["filepath"], r["label"]) for r in csv.DictReader(fh)]


def write_held_out(out: Path, held: list[tuple[str, str]]) -> None:
    """OUT/held_out_labels.csv and OUT/held_out.txt (predict's --file-list) for frames given by absolute paths."""
    write(out / "held_out_labels.csv", held)
    (out / "held_out.txt").write_text("".join(f"{p}\n" for p, _ in held))
    print(f"held out: {len(held)} frames -> {out / 'held_out.txt'}, {out / 'held_out_labels.csv'}")


def main(argv: list[str]) -> None:
    mapping = label_map()
    if argv[0] == "--held-out":
        split, out = Path(argv[1]), Path(argv[2])
        with open(split, newline="", encoding="utf-8") as fh:
            held = [(r["filepath"], r["label"]) for r in csv.DictReader(fh) if r["part"] == "val"]
        held += read_pairs(out / "demo_frames.csv")  # validation split plus demo frames
        write_held_out(out, held)
        if len(argv) > 3:
            data = Path(argv[3]).resolve()
            write(out / "held_out.csv", [(Path(p).resolve().relative_to(data).as_posix(), label) for p, label in held])
        return
    if argv[0] == "--shipped-held-out":
        data, out = Path(argv[1]).resolve(), Path(argv[2])
        out.mkdir(parents=True, exist_ok=True)
        write_held_out(out, [(str(data / rel), label) for rel, label in read_pairs(SHIPPED_HELD_OUT)])
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
