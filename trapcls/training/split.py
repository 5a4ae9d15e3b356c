"""The validation split: stratified by class, or keeping whole sites or camera folders on one side; k-fold.

Frames from one camera share a background, so a random split is optimistic: when the data has
sites (or with --group-by folder) every group lands wholly in train or in validation.
"""

from __future__ import annotations

import logging
import math
import random
from collections import Counter, defaultdict
from collections.abc import Callable
from pathlib import Path

from trapcls.core.frames.labels import Sample, cell, listing, read_rows, require_files, resolve_path
from trapcls.core.options import check_value
from trapcls.core.system.exceptions import DataError
from trapcls.core.system.fsutil import write_csv
from trapcls.training.config import TrainConfig, check_folds

log = logging.getLogger(__name__)

SPLIT_COLUMNS = ("filepath", "label", "site", "group", "part")
# The grouped splits: how a sample's group is named. "none" (a stratified split) has no key.
_GROUP_KEYS: dict[str, Callable[[Sample], str | None]] = {
    "site": lambda s: s.site,
    "folder": lambda s: s.path.parent.as_posix(),
}



def stratified_split(samples: list[Sample], val_fraction: float, seed: int) -> tuple[list[Sample], list[Sample]]:
    """Split per class with a seeded shuffle; every class with 2+ images lands in both parts."""
    _check_fraction(val_fraction)
    by_label: dict[str, list[Sample]] = defaultdict(list)
    for sample in sorted(samples, key=lambda s: str(s.path)):
        by_label[sample.label].append(sample)
    rng = random.Random(seed)
    train, val = [], []
    for label in sorted(by_label):
        group = by_label[label]
        rng.shuffle(group)
        wanted = max(1, round(len(group) * val_fraction))
        n_val = 0 if val_fraction == 0 or len(group) < 2 else min(len(group) - 1, wanted)
        val.extend(group[:n_val])
        train.extend(group[n_val:])
    return train, val


def _check_fraction(val_fraction: float) -> None:
    check_value(TrainConfig, "val_fraction", val_fraction)


def resolve_grouping(samples: list[Sample], group_by: str) -> str:
    """The grouping `group_by` stands for: "auto" is "site" when any sample has a site, else "none"."""
    check_value(TrainConfig, "group_by", group_by)
    if group_by == "auto":
        return "site" if any(s.site for s in samples) else "none"
    if group_by == "site":
        unsited = [str(s.path) for s in samples if not s.site]
        if len(unsited) == len(samples):
            raise DataError("--group-by site: no image has a site. Add a site column (filepath,label,site), "
                            "or use --group-by folder or --group-by none.")
        if unsited:
            raise DataError(f"--group-by site: {len(unsited)} images have no site, e.g. {listing(unsited)}. "
                            "Fill in their site, or use --group-by folder or --group-by none.")
    return group_by


def _groups(samples: list[Sample], grouping: str, needed: int) -> dict[str, list[Sample]]:
    """Samples (in path order) by group key; at least `needed` groups."""
    groups: dict[str, list[Sample]] = defaultdict(list)
    for sample in sorted(samples, key=lambda s: str(s.path)):
        groups[_GROUP_KEYS[grouping](sample)].append(sample)
    if len(groups) < needed:
        raise DataError(f"--group-by {grouping}: the images come from {len(groups)} {grouping}(s); a group-disjoint "
                        f"split needs at least {needed}. Use --group-by none for a stratified split by image.")
    return groups


def split_samples(samples: list[Sample], *, val_fraction: float, seed: int,
                  group_by: str = "auto") -> tuple[list[Sample], list[Sample], str]:
    """Train and validation sets and the grouping used; grouped splits keep each group on one side."""
    _check_fraction(val_fraction)
    grouping = resolve_grouping(samples, group_by)
    if grouping == "none":
        return (*stratified_split(samples, val_fraction, seed), grouping)
    groups = _groups(samples, grouping, needed=2 if val_fraction > 0 else 1)
    val_keys = _pick_val_groups(groups, val_fraction * len(samples), random.Random(seed)) if val_fraction > 0 else set()
    train = [s for key, items in groups.items() if key not in val_keys for s in items]
    val = [s for key, items in groups.items() if key in val_keys for s in items]
    missing = sorted({s.label for s in samples} - {s.label for s in val})
    log.info("split by %s: %d of %d %ss (%d images, %.1f%%) in validation", grouping, len(val_keys), len(groups),
             grouping, len(val), 100 * len(val) / len(samples))
    if val_fraction > 0 and missing:
        log.warning("no %s could put these classes in validation without taking them out of training: %s",
                    grouping, ", ".join(missing))
    return train, val, grouping


def _pick_val_groups(groups: dict[str, list[Sample]], target: float, rng: random.Random) -> set[str]:
    """Greedy over seeded-shuffled groups: first cover each class (rarest first) without passing `target`
    images, then fill towards `target`; no group may take a class's last training image."""
    order = sorted(groups)
    rng.shuffle(order)
    counts = {key: Counter(s.label for s in groups[key]) for key in order}
    totals = sum(counts.values(), Counter())
    spread = Counter(label for key in order for label in counts[key])
    chosen: list[str] = []
    in_val: Counter[str] = Counter()

    def keeps_training(key: str) -> bool:
        return all(in_val[label] + n < totals[label] for label, n in counts[key].items())

    def size() -> int:
        return sum(in_val.values())

    def take(key: str) -> None:
        chosen.append(key)
        in_val.update(counts[key])

    for label in sorted(totals, key=lambda c: (spread[c], c)):
        if in_val[label]:
            continue
        for key in order:
            if key not in chosen and counts[key][label] and size() + len(groups[key]) <= target and keeps_training(key):
                take(key)
                break
    for key in order:
        if key not in chosen and abs(size() + len(groups[key]) - target) < abs(size() - target) and keeps_training(key):
            take(key)
    if not chosen:  # every group is far larger than the target: take the smallest, sparing a class's last images
        key = min(order, key=lambda k: (not keeps_training(k), len(groups[k])))
        if not keeps_training(key):
            log.warning("every group holds all the images of some class; validation takes %r, so training lacks %s",
                        key, ", ".join(sorted(c for c, n in counts[key].items() if n == totals[c])))
        take(key)
    return set(chosen)


def kfold_split(samples: list[Sample], *, folds: int, fold: int, seed: int,
                group_by: str = "auto") -> tuple[list[Sample], list[Sample], str]:
    """Fold `fold` (1-based) of `folds`: its images validate, the rest train; folds are group-disjoint,
    or stratified per class when the grouping is "none"."""
    check_folds(folds, fold)
    grouping = resolve_grouping(samples, group_by)
    rng = random.Random(seed)
    if grouping == "none":
        if len(samples) < folds:
            raise DataError(f"--folds {folds}: only {len(samples)} images; lower --folds.")
        by_label: dict[str, list[Sample]] = defaultdict(list)
        for sample in sorted(samples, key=lambda s: str(s.path)):
            by_label[sample.label].append(sample)
        dealt = []
        for label in sorted(by_label):
            rng.shuffle(by_label[label])
            dealt.extend(by_label[label])
        # Dealing the class-by-class list round-robin spreads every class, and the total, evenly.
        assignment = [(s, i % folds) for i, s in enumerate(dealt)]
    else:
        groups = _groups(samples, grouping, needed=folds)
        fold_of = _assign_folds(groups, folds, rng)
        assignment = [(s, fold_of[key]) for key, items in groups.items() for s in items]
    train = [s for s, f in assignment if f != fold - 1]
    val = [s for s, f in assignment if f == fold - 1]
    return train, val, grouping


def _assign_folds(groups: dict[str, list[Sample]], folds: int, rng: random.Random) -> dict[str, int]:
    """Groups to folds, largest first: one per fold to start, then each to the fold that keeps every
    class's share across folds most even (as scikit-learn's StratifiedGroupKFold does), smaller on ties."""
    order = sorted(groups)
    rng.shuffle(order)
    order.sort(key=lambda k: -len(groups[k]))  # stable: equal sizes keep their shuffled order
    counts = {key: Counter(s.label for s in groups[key]) for key in order}
    totals = sum(counts.values(), Counter())
    per_fold = [Counter() for _ in range(folds)]
    fold_of: dict[str, int] = {}

    def unevenness(f: int, key: str) -> float:
        spread = 0.0
        for label, total in totals.items():
            shares = [(per_fold[i][label] + (counts[key][label] if i == f else 0)) / total for i in range(folds)]
            mean = sum(shares) / folds
            spread += math.sqrt(sum((x - mean) ** 2 for x in shares) / folds)
        return spread

    for i, key in enumerate(order):
        f = i if i < folds else min(range(folds), key=lambda f: (unevenness(f, key), sum(per_fold[f].values()), f))
        fold_of[key] = f
        per_fold[f].update(counts[key])
    return fold_of


def write_split(path: Path, train: list[Sample], val: list[Sample], grouping: str) -> None:
    """Write `filepath,label,site,group,part` (absolute paths; part is train or val) for evaluation to reuse."""
    key = _GROUP_KEYS.get(grouping, lambda s: "")
    write_csv(path, SPLIT_COLUMNS, ([str(s.path.absolute()), s.label, s.site or "", key(s) or "", part]
                                    for part, items in (("train", train), ("val", val)) for s in items))


def read_split(path: Path) -> tuple[list[Sample], list[Sample]]:
    """The train and validation samples of a split file from `write_split`."""
    if not path.is_file():
        raise DataError(f"Split file {path} does not exist; it is the split.csv in a training run folder.")
    _, rows = read_rows(path, ("filepath", "label", "part"), ",".join(SPLIT_COLUMNS))
    parts: dict[str, list[Sample]] = {"train": [], "val": []}
    bad = []
    for line, row in enumerate(rows, start=2):
        rel, label, part = cell(row, "filepath"), cell(row, "label"), cell(row, "part")
        if not rel or not label or part not in parts:
            bad.append(f"line {line}")
            continue
        parts[part].append(Sample(path=resolve_path(path.parent, rel), label=label, site=cell(row, "site") or None))
    if bad:
        raise DataError(f"{path}: {len(bad)} rows need a filepath, a label and part train or val: {listing(bad)}.")
    require_files(path, parts["train"] + parts["val"], path.parent)
    return parts["train"], parts["val"]
