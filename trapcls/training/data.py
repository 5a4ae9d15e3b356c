"""Training data sources (class-per-folder tree, filepath,label CSV) and the validation split."""

from __future__ import annotations

import csv
import random
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

from trapcls.exceptions import DataError
from trapcls.predict.discover import discover_images


@dataclass(frozen=True)
class Sample:
    """One labelled image."""

    path: Path
    label: str


def load_samples(data: Path) -> list[Sample]:
    """Read labelled images from a class-per-folder tree or a `filepath,label` CSV."""
    if not data.exists():
        raise DataError(f"Training data {data} does not exist. Pass a class-per-folder tree or a filepath,label CSV.")
    samples = _from_csv(data) if data.is_file() else _from_folders(data)
    if len({s.label for s in samples}) < 2:
        raise DataError(f"{data}: found {len({s.label for s in samples})} class(es); a classifier needs at least 2.")
    return samples


def _from_folders(root: Path) -> list[Sample]:
    class_dirs = sorted(d for d in root.iterdir() if d.is_dir() and not d.name.startswith("."))
    if not class_dirs:
        raise DataError(f"{root} has no class sub-folders; expected {root}/<class>/*.jpg or a CSV file.")
    samples, empty = [], []
    for class_dir in class_dirs:
        try:
            files = discover_images([class_dir])
        except DataError:
            empty.append(class_dir.name)
            continue
        samples.extend(Sample(path=f.path, label=class_dir.name) for f in files)
    if empty:
        raise DataError(f"{root}: class folders without JPEG/PNG images: {', '.join(empty[:5])}. Remove or fill them.")
    return samples


def _from_csv(path: Path) -> list[Sample]:
    with open(path, newline="", encoding="utf-8-sig") as fh:
        reader = csv.DictReader(fh)
        fields = reader.fieldnames or []
        if "filepath" not in fields or "label" not in fields:
            raise DataError(f"{path}: expected columns filepath,label[,site]; found {','.join(fields) or 'none'}.")
        rows = list(reader)
    if not rows:
        raise DataError(f"{path} has a header but no rows.")
    samples, missing, unlabelled = [], [], []
    for line, row in enumerate(rows, start=2):
        rel, label = (row.get("filepath") or "").strip(), (row.get("label") or "").strip()
        if not rel or not label:
            unlabelled.append(f"line {line}")
            continue
        file = (path.parent / rel) if not Path(rel).is_absolute() else Path(rel)
        if not file.is_file():
            missing.append(rel)
            continue
        samples.append(Sample(path=file, label=label))
    if unlabelled:
        raise DataError(f"{path}: rows without filepath or label: {', '.join(unlabelled[:5])}.")
    if missing:
        raise DataError(
            f"{path}: {len(missing)} listed files do not exist (paths are relative to the CSV's folder), "
            f"e.g. {', '.join(missing[:5])}."
        )
    return samples


def stratified_split(samples: list[Sample], val_fraction: float, seed: int) -> tuple[list[Sample], list[Sample]]:
    """Split per class with a seeded shuffle; every class with 2+ images lands in both parts."""
    if not 0 <= val_fraction < 1:
        raise DataError(f"--val-fraction must be in [0, 1), got {val_fraction}.")
    by_label: dict[str, list[Sample]] = defaultdict(list)
    for sample in sorted(samples, key=lambda s: str(s.path)):
        by_label[sample.label].append(sample)
    rng = random.Random(seed)
    train, val = [], []
    for label in sorted(by_label):
        group = by_label[label]
        rng.shuffle(group)
        n_val = 0 if val_fraction == 0 or len(group) < 2 else min(len(group) - 1, max(1, round(len(group) * val_fraction)))
        val.extend(group[:n_val])
        train.extend(group[n_val:])
    return train, val
