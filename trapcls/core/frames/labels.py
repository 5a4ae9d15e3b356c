"""Labelled images from every layout train and evaluate read: folder tree, CSV, DrivenData, file-name regex."""

from __future__ import annotations

import csv
import logging
import math
import re
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from trapcls.core.frames.detections import Box
from trapcls.core.frames.discover import discover
from trapcls.core.model.bundle_checks import class_names_problem
from trapcls.core.system.exceptions import DataError, OptionError

log = logging.getLogger(__name__)

DRIVENDATA_FEATURES = "train_features.csv"
DRIVENDATA_LABELS = "train_labels.csv"
_SHOWN = 5  # offenders named in an error message; the count says how many there are in all
_WHERE_LABELS = ("a class is a sub-folder's name, a label cell of a CSV, a column of train_labels.csv or what "
                 "--label-regex finds in a file name")


@dataclass(frozen=True)
class Sample:
    """One labelled image, and the site (camera location) it came from when the data says. `box`: a detector box
    of the frame when the sample is that box's crop (`train --detections`), else None: the whole frame."""

    path: Path
    label: str
    site: str | None = None
    box: Box | None = None


def load_samples(data: Path, *, label_regex: str | None = None, check_files: bool = True,
                 clips: bool = False) -> list[Sample]:
    """Read labelled images from a class-per-folder tree, a `filepath,label[,site]` CSV, a DrivenData
    Conser-vision folder (train_features.csv + train_labels.csv), or, with `label_regex`, file names.

    `check_files=False` accepts listed images that do not exist (evaluation needs only the labels). `clips`: class
    folders and --label-regex find video clips as well as images (evaluate scores clips; training reads images).
    """
    if not data.exists():
        raise DataError(f"Training data {data} does not exist. Pass a class-per-folder tree, a filepath,label CSV "
                        "or a folder holding train_features.csv and train_labels.csv.")
    if label_regex is not None:
        samples = _from_file_names(data, label_regex, clips)
    elif data.is_file():
        samples = _from_csv(data, check_files=check_files)
    elif (data / DRIVENDATA_FEATURES).exists() or (data / DRIVENDATA_LABELS).exists():
        samples = _from_drivendata(data, check_files=check_files)
    else:
        samples = _from_folders(data, clips)
    classes = sorted({s.label for s in samples})
    if len(classes) < 2:
        raise DataError(f"{data}: found {len(classes)} class(es) ({', '.join(classes)}); a classifier needs "
                        "at least 2.")
    # The labels become the bundle's classes: refused now, not after a training run at export.
    problem = class_names_problem(classes)
    if problem:
        raise DataError(f"{data}: {problem} ({_WHERE_LABELS}).")
    return samples


def listing(items: list[str]) -> str:
    """The first few offenders, and how many more there are."""
    more = len(items) - _SHOWN
    return ", ".join(items[:_SHOWN]) + (f" and {more} more" if more > 0 else "")


def _from_folders(root: Path, clips: bool = False) -> list[Sample]:
    class_dirs = sorted(d for d in root.iterdir() if d.is_dir() and not d.name.startswith("."))
    if not class_dirs:
        raise DataError(f"{root} has no class sub-folders; expected {root}/<class>/*.jpg, a CSV file, or "
                        f"{DRIVENDATA_FEATURES} and {DRIVENDATA_LABELS}.")
    samples, empty = [], []
    for class_dir in class_dirs:
        try:
            files = discover([class_dir], clips=clips).files
        except DataError:
            empty.append(class_dir.name)
            continue
        samples.extend(Sample(path=f.path, label=class_dir.name) for f in files)
    if empty:
        raise DataError(f"{root}: class folders without JPEG/PNG images{' or video clips' if clips else ''}: "
                        f"{listing(empty)} ({len(empty)} in all). Remove or fill them.")
    return samples


def read_rows(path: Path, required: Iterable[str], expected: str,
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


def cell(row: dict[str, str], column: str) -> str:
    """The stripped value of `column` in a CSV row ("" when absent)."""
    return (row.get(column) or "").strip()


def resolve_path(base: Path, rel: str) -> Path:
    """`rel` as written when absolute, else relative to `base` (the CSV's folder)."""
    return Path(rel) if Path(rel).is_absolute() else base / rel


def require_files(source: Path, samples: list[Sample], base: Path) -> None:
    """Raise DataError naming the listed images that do not exist."""
    missing = [str(s.path) for s in samples if not s.path.is_file()]
    if missing:
        raise DataError(f"{source}: {len(missing)} listed files do not exist (paths are relative to {base}), "
                        f"e.g. {listing(missing)}.")


def _from_csv(path: Path, *, check_files: bool = True) -> list[Sample]:
    hint = (f" For the DrivenData layout pass the folder {path.parent} (holding {DRIVENDATA_FEATURES} and "
            f"{DRIVENDATA_LABELS}) instead." if path.name in (DRIVENDATA_FEATURES, DRIVENDATA_LABELS) else "")
    _, rows = read_rows(path, ("filepath", "label"), "filepath,label[,site]", hint)
    samples, unlabelled = [], []
    for line, row in enumerate(rows, start=2):
        rel, label = cell(row, "filepath"), cell(row, "label")
        if not rel or not label:
            unlabelled.append(f"line {line}")
            continue
        samples.append(Sample(path=resolve_path(path.parent, rel), label=label, site=cell(row, "site") or None))
    if unlabelled:
        raise DataError(f"{path}: {len(unlabelled)} rows without filepath or label: {listing(unlabelled)}.")
    if check_files:
        require_files(path, samples, path.parent)
    return samples


def _from_drivendata(root: Path, *, check_files: bool = True) -> list[Sample]:
    """train_features.csv (id,filepath,site) joined on id with the one-hot train_labels.csv."""
    features_path, labels_path = root / DRIVENDATA_FEATURES, root / DRIVENDATA_LABELS
    for path in (features_path, labels_path):
        if not path.is_file():
            raise DataError(f"{root}: found only one half of the DrivenData layout; {path.name} is missing. "
                            f"Put {DRIVENDATA_FEATURES} (id,filepath,site) and {DRIVENDATA_LABELS} "
                            "(id + one 0/1 column per class) side by side.")
    _, feature_rows = read_rows(features_path, ("id", "filepath"), "id,filepath,site")
    label_fields, label_rows = read_rows(labels_path, ("id",), "id,<class>,<class>,... (one 0/1 column per class)")
    classes = [f for f in label_fields if f != "id"]
    if not classes:
        raise DataError(f"{labels_path}: no class columns after id; expected one 0/1 column per class.")

    features = _by_id(features_path, feature_rows)
    labels = _by_id(labels_path, label_rows)
    only_features, only_labels = sorted(features.keys() - labels.keys()), sorted(labels.keys() - features.keys())
    if only_features or only_labels:
        parts = [f"{len(ids)} ids only in {name}: {listing(ids)}"
                 for ids, name in ((only_features, DRIVENDATA_FEATURES), (only_labels, DRIVENDATA_LABELS)) if ids]
        raise DataError(f"{root}: the two files must list the same ids; {'; '.join(parts)}.")

    bad_values, no_label, several, missing_path = [], [], [], []
    samples = []
    for id_, row in features.items():
        positive = _ones(id_, labels[id_], classes, bad_values)
        if not cell(row, "filepath"):
            missing_path.append(id_)
        elif len(positive) == 0:
            no_label.append(id_)
        elif len(positive) > 1:
            several.append(f"{id_} ({'+'.join(positive)})")
        else:
            samples.append(Sample(path=resolve_path(root, cell(row, "filepath")), label=positive[0],
                                  site=cell(row, "site") or None))
    problems = [(bad_values, f"{labels_path.name}: {{n}} values that are not 0 or 1"),
                (missing_path, f"{features_path.name}: {{n}} ids without a filepath"),
                (no_label, f"{labels_path.name}: {{n}} ids with no class set to 1"),
                (several, f"{labels_path.name}: {{n}} ids with several classes set to 1")]
    found = [f"{template.format(n=len(items))}: {listing(items)}" for items, template in problems if items]
    if found:
        raise DataError(f"{root}: {'; '.join(found)}. Each image needs exactly one class set to 1.")
    counts = Counter(s.label for s in samples)
    empty = [name for name in classes if not counts[name]]
    if empty:
        raise DataError(f"{labels_path}: {len(empty)} class columns have no images: {listing(empty)}. "
                        "Drop those columns or add images of them.")
    if check_files:
        require_files(features_path, samples, root)
    return samples


def _ones(id_: str, row: dict[str, str], classes: list[str], bad_values: list[str]) -> list[str]:
    """The classes set to 1 in one one-hot labels row; cells that are not 0 or 1 go into `bad_values`."""
    positive = []
    for name in classes:
        value = cell(row, name)
        try:
            number = float(value)
        except ValueError:
            number = math.nan
        if number not in (0.0, 1.0):
            bad_values.append(f"{id_} ({name}={value!r})")
        elif number == 1.0:
            positive.append(name)
    return positive


def _by_id(path: Path, rows: list[dict[str, str]]) -> dict[str, dict[str, str]]:
    """Rows keyed by their id; blank and repeated ids are errors."""
    by_id: dict[str, dict[str, str]] = {}
    blank, repeated = [], []
    for line, row in enumerate(rows, start=2):
        id_ = cell(row, "id")
        if not id_:
            blank.append(f"line {line}")
        elif id_ in by_id:
            repeated.append(f"{id_} (line {line})")
        else:
            by_id[id_] = row
    if blank:
        raise DataError(f"{path}: {len(blank)} rows without an id: {listing(blank)}.")
    if repeated:
        raise DataError(f"{path}: {len(repeated)} duplicate ids: {listing(repeated)}. Each id must appear once.")
    return by_id


def _from_file_names(root: Path, label_regex: str, clips: bool = False) -> list[Sample]:
    """Label (first group or group `label`) and optional site (group `site`) from each file name."""
    try:
        pattern = re.compile(label_regex)
    except re.error as exc:
        raise OptionError("label_regex", f"{label_regex!r} is not a valid regular expression: {exc}") from exc
    label_group = pattern.groupindex.get("label", 1)
    if pattern.groups == 0 or label_group == pattern.groupindex.get("site"):
        raise OptionError("label_regex", f"{label_regex!r} has no group for the label; put the label in parentheses "
                                         r"or a (?P<label>...) group, e.g. '(.+)_\d+\.jpg$'")
    if not root.is_dir():
        raise DataError(f"--label-regex needs a folder of images to search; {root} is a file.")
    samples, unmatched = [], []
    for file in discover([root], clips=clips).files:
        match = pattern.search(file.path.name)
        label = (match.group(label_group) or "").strip() if match else ""
        if not label:
            unmatched.append(file.rel)
            continue
        site = match.groupdict().get("site")
        samples.append(Sample(path=file.path, label=label, site=site or None))
    if unmatched:
        raise DataError(f"{root}: {len(unmatched)} file names give no label with --label-regex {label_regex!r}: "
                        f"{listing(unmatched)}. Fix the pattern (it is searched in the file name) or move them out.")
    return samples
