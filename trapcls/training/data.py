"""Training data sources (folder tree, CSV, DrivenData layout, file-name regex) and validation splits."""

from __future__ import annotations

import csv
import io
import logging
import math
import random
import re
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

from trapcls.exceptions import DataError
from trapcls.fsutil import atomic_write_text
from trapcls.predict.discover import discover_images

log = logging.getLogger(__name__)

DRIVENDATA_FEATURES = "train_features.csv"
DRIVENDATA_LABELS = "train_labels.csv"
SPLIT_COLUMNS = ("filepath", "label", "site", "group", "part")
_SHOWN = 5  # offenders named in an error message; the count says how many there are in all


@dataclass(frozen=True)
class Sample:
    """One labelled image, and the site (camera location) it came from when the data says."""

    path: Path
    label: str
    site: str | None = None


# The grouped splits: how a sample's group is named. "none" (a stratified split) has no key.
_GROUP_KEYS: dict[str, Callable[[Sample], str | None]] = {
    "site": lambda s: s.site,
    "folder": lambda s: s.path.parent.as_posix(),
}
GROUP_BY = ("auto", *_GROUP_KEYS, "none")


def load_samples(data: Path, *, label_regex: str | None = None, check_files: bool = True) -> list[Sample]:
    """Read labelled images from a class-per-folder tree, a `filepath,label[,site]` CSV, a DrivenData
    Conser-vision folder (train_features.csv + train_labels.csv), or, with `label_regex`, file names.

    `check_files=False` accepts listed images that do not exist (evaluation needs only the labels).
    """
    if not data.exists():
        raise DataError(f"Training data {data} does not exist. Pass a class-per-folder tree, a filepath,label CSV "
                        "or a folder holding train_features.csv and train_labels.csv.")
    if label_regex is not None:
        samples = _from_file_names(data, label_regex)
    elif data.is_file():
        samples = _from_csv(data, check_files=check_files)
    elif (data / DRIVENDATA_FEATURES).exists() or (data / DRIVENDATA_LABELS).exists():
        samples = _from_drivendata(data, check_files=check_files)
    else:
        samples = _from_folders(data)
    classes = sorted({s.label for s in samples})
    if len(classes) < 2:
        raise DataError(f"{data}: found {len(classes)} class(es) ({', '.join(classes)}); a classifier needs at least 2.")
    return samples


def _listing(items: list[str]) -> str:
    """The first few offenders, and how many more there are."""
    more = len(items) - _SHOWN
    return ", ".join(items[:_SHOWN]) + (f" and {more} more" if more > 0 else "")


def _from_folders(root: Path) -> list[Sample]:
    class_dirs = sorted(d for d in root.iterdir() if d.is_dir() and not d.name.startswith("."))
    if not class_dirs:
        raise DataError(f"{root} has no class sub-folders; expected {root}/<class>/*.jpg, a CSV file, or "
                        f"{DRIVENDATA_FEATURES} and {DRIVENDATA_LABELS}.")
    samples, empty = [], []
    for class_dir in class_dirs:
        try:
            files = discover_images([class_dir])
        except DataError:
            empty.append(class_dir.name)
            continue
        samples.extend(Sample(path=f.path, label=class_dir.name) for f in files)
    if empty:
        raise DataError(f"{root}: class folders without JPEG/PNG images: {_listing(empty)} ({len(empty)} in all). "
                        "Remove or fill them.")
    return samples


def _read_rows(path: Path, required: Iterable[str], expected: str,
               hint: str = "") -> tuple[list[str], list[dict[str, str]]]:
    """Header and rows of a CSV that must hold the `required` columns and at least one row."""
    try:
        with open(path, newline="", encoding="utf-8-sig") as fh:
            reader = csv.DictReader(fh)
            fields = [f.strip() for f in reader.fieldnames or []]
            reader.fieldnames = fields
            rows = list(reader)
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise DataError(f"Cannot read {path}: {exc}. Give a UTF-8 CSV with columns {expected}.") from exc
    if not set(required) <= set(fields):
        raise DataError(f"{path}: expected columns {expected}; found {','.join(fields) or 'none'}.{hint}")
    if not rows:
        raise DataError(f"{path} has a header but no rows.")
    return fields, rows


def _cell(row: dict[str, str], column: str) -> str:
    return (row.get(column) or "").strip()


def _resolve(base: Path, rel: str) -> Path:
    return Path(rel) if Path(rel).is_absolute() else base / rel


def _check_files(source: Path, samples: list[Sample], base: Path) -> None:
    missing = [str(s.path) for s in samples if not s.path.is_file()]
    if missing:
        raise DataError(f"{source}: {len(missing)} listed files do not exist (paths are relative to {base}), "
                        f"e.g. {_listing(missing)}.")


def _from_csv(path: Path, *, check_files: bool = True) -> list[Sample]:
    hint = (f" For the DrivenData layout pass the folder {path.parent} (holding {DRIVENDATA_FEATURES} and "
            f"{DRIVENDATA_LABELS}) instead." if path.name in (DRIVENDATA_FEATURES, DRIVENDATA_LABELS) else "")
    _, rows = _read_rows(path, ("filepath", "label"), "filepath,label[,site]", hint)
    samples, unlabelled = [], []
    for line, row in enumerate(rows, start=2):
        rel, label = _cell(row, "filepath"), _cell(row, "label")
        if not rel or not label:
            unlabelled.append(f"line {line}")
            continue
        samples.append(Sample(path=_resolve(path.parent, rel), label=label, site=_cell(row, "site") or None))
    if unlabelled:
        raise DataError(f"{path}: {len(unlabelled)} rows without filepath or label: {_listing(unlabelled)}.")
    if check_files:
        _check_files(path, samples, path.parent)
    return samples


def _from_drivendata(root: Path, *, check_files: bool = True) -> list[Sample]:
    """train_features.csv (id,filepath,site) joined on id with the one-hot train_labels.csv."""
    features_path, labels_path = root / DRIVENDATA_FEATURES, root / DRIVENDATA_LABELS
    for path in (features_path, labels_path):
        if not path.is_file():
            raise DataError(f"{root}: found only one half of the DrivenData layout; {path.name} is missing. "
                            f"Put {DRIVENDATA_FEATURES} (id,filepath,site) and {DRIVENDATA_LABELS} "
                            "(id + one 0/1 column per class) side by side.")
    _, feature_rows = _read_rows(features_path, ("id", "filepath"), "id,filepath,site")
    label_fields, label_rows = _read_rows(labels_path, ("id",), "id,<class>,<class>,... (one 0/1 column per class)")
    classes = [f for f in label_fields if f != "id"]
    if not classes:
        raise DataError(f"{labels_path}: no class columns after id; expected one 0/1 column per class.")

    features = _by_id(features_path, feature_rows)
    labels = _by_id(labels_path, label_rows)
    only_features, only_labels = sorted(features.keys() - labels.keys()), sorted(labels.keys() - features.keys())
    if only_features or only_labels:
        parts = [f"{len(ids)} ids only in {name}: {_listing(ids)}"
                 for ids, name in ((only_features, DRIVENDATA_FEATURES), (only_labels, DRIVENDATA_LABELS)) if ids]
        raise DataError(f"{root}: the two files must list the same ids; {'; '.join(parts)}.")

    bad_values, no_label, several, missing_path = [], [], [], []
    samples = []
    for id_, row in features.items():
        positive = []
        for name in classes:
            value = _cell(labels[id_], name)
            try:
                number = float(value)
            except ValueError:
                number = math.nan
            if number not in (0.0, 1.0):
                bad_values.append(f"{id_} ({name}={value!r})")
            elif number == 1.0:
                positive.append(name)
        if not _cell(row, "filepath"):
            missing_path.append(id_)
        elif len(positive) == 0:
            no_label.append(id_)
        elif len(positive) > 1:
            several.append(f"{id_} ({'+'.join(positive)})")
        else:
            samples.append(Sample(path=_resolve(root, _cell(row, "filepath")), label=positive[0],
                                  site=_cell(row, "site") or None))
    problems = [(bad_values, f"{labels_path.name}: {{n}} values that are not 0 or 1"),
                (missing_path, f"{features_path.name}: {{n}} ids without a filepath"),
                (no_label, f"{labels_path.name}: {{n}} ids with no class set to 1"),
                (several, f"{labels_path.name}: {{n}} ids with several classes set to 1")]
    found = [f"{template.format(n=len(items))}: {_listing(items)}" for items, template in problems if items]
    if found:
        raise DataError(f"{root}: {'; '.join(found)}. Each image needs exactly one class set to 1.")
    counts = Counter(s.label for s in samples)
    empty = [name for name in classes if not counts[name]]
    if empty:
        raise DataError(f"{labels_path}: {len(empty)} class columns have no images: {_listing(empty)}. "
                        "Drop those columns or add images of them.")
    if check_files:
        _check_files(features_path, samples, root)
    return samples


def _by_id(path: Path, rows: list[dict[str, str]]) -> dict[str, dict[str, str]]:
    """Rows keyed by their id; blank and repeated ids are errors."""
    by_id: dict[str, dict[str, str]] = {}
    blank, repeated = [], []
    for line, row in enumerate(rows, start=2):
        id_ = _cell(row, "id")
        if not id_:
            blank.append(f"line {line}")
        elif id_ in by_id:
            repeated.append(f"{id_} (line {line})")
        else:
            by_id[id_] = row
    if blank:
        raise DataError(f"{path}: {len(blank)} rows without an id: {_listing(blank)}.")
    if repeated:
        raise DataError(f"{path}: {len(repeated)} duplicate ids: {_listing(repeated)}. Each id must appear once.")
    return by_id


def _from_file_names(root: Path, label_regex: str) -> list[Sample]:
    """Label (first group or group `label`) and optional site (group `site`) from each file name."""
    try:
        pattern = re.compile(label_regex)
    except re.error as exc:
        raise DataError(f"--label-regex {label_regex!r} is not a valid regular expression: {exc}.") from exc
    label_group = pattern.groupindex.get("label", 1)
    if pattern.groups == 0 or label_group == pattern.groupindex.get("site"):
        raise DataError(f"--label-regex {label_regex!r} has no group for the label; put the label in parentheses "
                        r"or a (?P<label>...) group, e.g. '(.+)_\d+\.jpg$'.")
    if not root.is_dir():
        raise DataError(f"--label-regex needs a folder of images to search; {root} is a file.")
    samples, unmatched = [], []
    for file in discover_images([root]):
        match = pattern.search(file.path.name)
        label = (match.group(label_group) or "").strip() if match else ""
        if not label:
            unmatched.append(file.rel)
            continue
        site = match.groupdict().get("site")
        samples.append(Sample(path=file.path, label=label, site=site or None))
    if unmatched:
        raise DataError(f"{root}: {len(unmatched)} file names give no label with --label-regex {label_regex!r}: "
                        f"{_listing(unmatched)}. Fix the pattern (it is searched in the file name) or move them out.")
    return samples


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
        n_val = 0 if val_fraction == 0 or len(group) < 2 else min(len(group) - 1, max(1, round(len(group) * val_fraction)))
        val.extend(group[:n_val])
        train.extend(group[n_val:])
    return train, val


def _check_fraction(val_fraction: float) -> None:
    if not 0 <= val_fraction < 1:
        raise DataError(f"--val-fraction must be in [0, 1), got {val_fraction}.")


def resolve_grouping(samples: list[Sample], group_by: str) -> str:
    """The grouping `group_by` stands for: "auto" is "site" when any sample has a site, else "none"."""
    if group_by not in GROUP_BY:
        raise DataError(f"Invalid --group-by {group_by!r}. Only {', '.join(GROUP_BY)} are supported.")
    if group_by == "auto":
        return "site" if any(s.site for s in samples) else "none"
    if group_by == "site":
        unsited = [str(s.path) for s in samples if not s.site]
        if len(unsited) == len(samples):
            raise DataError("--group-by site: no image has a site. Add a site column (filepath,label,site), "
                            "or use --group-by folder or --group-by none.")
        if unsited:
            raise DataError(f"--group-by site: {len(unsited)} images have no site, e.g. {_listing(unsited)}. "
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
    if folds < 2:
        raise DataError(f"--folds {folds}: k-fold needs at least 2 folds.")
    if not 1 <= fold <= folds:
        raise DataError(f"--fold {fold}: folds count from 1, so it must be between 1 and {folds}.")
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
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(SPLIT_COLUMNS)
    for part, items in (("train", train), ("val", val)):
        writer.writerows([str(s.path.absolute()), s.label, s.site or "", key(s) or "", part] for s in items)
    atomic_write_text(path, buffer.getvalue())


def read_split(path: Path) -> tuple[list[Sample], list[Sample]]:
    """The train and validation samples of a split file from `write_split`."""
    if not path.is_file():
        raise DataError(f"Split file {path} does not exist; it is the split.csv in a training run folder.")
    _, rows = _read_rows(path, ("filepath", "label", "part"), ",".join(SPLIT_COLUMNS))
    parts: dict[str, list[Sample]] = {"train": [], "val": []}
    bad = []
    for line, row in enumerate(rows, start=2):
        rel, label, part = _cell(row, "filepath"), _cell(row, "label"), _cell(row, "part")
        if not rel or not label or part not in parts:
            bad.append(f"line {line}")
            continue
        parts[part].append(Sample(path=_resolve(path.parent, rel), label=label, site=_cell(row, "site") or None))
    if bad:
        raise DataError(f"{path}: {len(bad)} rows need a filepath, a label and part train or val: {_listing(bad)}.")
    _check_files(path, parts["train"] + parts["val"], path.parent)
    return parts["train"], parts["val"]
