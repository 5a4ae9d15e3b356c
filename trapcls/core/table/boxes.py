"""The boxes CSV (`predict --detections ... --boxes-out FILE`): one row per classified detector box.

Columns: path, box, category, detection_conf, bbox_x, bbox_y, bbox_width, bbox_height, label, probability,
<classes>, model. `path` is the frame's, exactly as in the frame CSV's first cell; `box` is the box's position in
the detector file's `detections` list for that frame (from 0), so that `convert` finds it there again;
`category` the detector's (animal, person, vehicle); the bbox cells are MegaDetector's [x, y, width, height]
relative to the frame. Only boxes at or above the detection threshold are classified and written.
"""

from __future__ import annotations

import csv
import math
from collections import defaultdict
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from trapcls.core.frames.detections import CATEGORIES, Box
from trapcls.core.system.exceptions import DataError
from trapcls.core.system.names import display, neutralise, unneutralise
from trapcls.core.table.layout import short
from trapcls.core.table.read import read_table
from trapcls.core.table.row import BoxResult, Row, number

BOX_LEAD = ["path", "box", "category", "detection_conf", "bbox_x", "bbox_y", "bbox_width", "bbox_height", "label",
            "probability"]


def boxes_path(out: Path) -> Path:
    """Where a detection run's box rows go when --boxes-out is not given: beside --out, `<stem>.boxes.csv`."""
    return out.with_name(f"{out.stem}.boxes.csv")


@dataclass(frozen=True)
class BoxLayout:
    """The boxes CSV of one model."""

    classes: tuple[str, ...]
    model: str

    def header(self) -> list[str]:
        return [*BOX_LEAD, *map(neutralise, self.classes), "model"]

    def cells(self, path: str, result: BoxResult) -> list[str]:
        box = result.box
        written = [number(p) for p in result.probs]
        top = int(np.argmax([float(c) for c in written]))
        return [neutralise(path), str(box.index), box.category, f"{box.conf:.6g}",
                *(f"{v:.6g}" for v in box.bbox), neutralise(self.classes[top]), written[top], *written,
                neutralise(self.model)]


@dataclass(frozen=True)
class BoxTable:
    """A boxes CSV read back: the classes, the model, and each frame's boxes in box order."""

    classes: tuple[str, ...]
    model: str
    by_path: dict[str, tuple[BoxResult, ...]]


def read_boxes(path: Path) -> BoxTable:
    """Read a boxes CSV; DataError naming the file and row when it is not one or a cell is wrong."""
    where = display(str(path))
    header = _first_line(path)
    if header[:len(BOX_LEAD)] != BOX_LEAD or header[-1:] != ["model"]:
        raise DataError(f"{where}: not a trapcls boxes CSV (header starts {short(header[:4])}); expected "
                        f"{','.join(BOX_LEAD[:4])},... as `predict --boxes-out` writes it.")
    header, rows = read_table(path)
    classes = tuple(unneutralise(c) for c in header[len(BOX_LEAD):-1])
    models = {row[-1] for row in rows}
    if len(models) > 1:
        raise DataError(f"{where} mixes boxes of {len(models)} models; keep one model's boxes per file.")
    by_path: dict[str, list[BoxResult]] = defaultdict(list)
    for line, cells in enumerate(rows, start=2):
        name = unneutralise(cells[0])
        by_path[name].append(_result(cells, len(classes), f"{where}: row {line} ({display(name)})"))
    return BoxTable(classes, unneutralise(models.pop()) if models else "",
                    {p: tuple(sorted(b, key=lambda r: r.box.index)) for p, b in by_path.items()})


def _first_line(path: Path) -> list[str]:
    """The header, read before the whole file: a file that is no boxes CSV is named as such, not as a damaged one."""
    try:
        with open(path, newline="", encoding="utf-8-sig") as fh:
            return next(csv.reader(fh), [])
    except (OSError, UnicodeDecodeError, csv.Error):
        return []


def _result(cells: list[str], n: int, where: str) -> BoxResult:
    if len(cells) != len(BOX_LEAD) + n + 1:
        raise DataError(f"{where}: {len(cells)} cells; the header has {len(BOX_LEAD) + n + 1}.")
    try:
        index = int(cells[1])
        conf, x, y, w, h = (float(c) for c in cells[3:8])
        probs = np.asarray([float(c) for c in cells[len(BOX_LEAD):-1]])
    except ValueError:
        raise DataError(f"{where}: a box, confidence, bbox or probability cell is not a number.") from None
    numbers = (conf, x, y, w, h, *probs)
    if index < 0 or cells[2] not in CATEGORIES or not all(math.isfinite(v) and 0 <= v <= 1 for v in numbers) \
            or abs(probs.sum() - 1) > 1e-4:
        raise DataError(f"{where}: the box's cells are out of range (box from 0, category one of "
                        f"{', '.join(CATEGORIES)}, confidence, bbox and probabilities in [0, 1] summing to 1).")
    return BoxResult(Box(index, cells[2], conf, x, y, w, h), probs)


def attach_boxes(rows: list[Row], boxes: BoxTable, source: Path) -> list[Row]:
    """The frame rows of a detection run with their boxes from its boxes CSV; DataError when the two files are
    not of one run (another model, or a frame whose box count differs)."""
    extra = sorted(set(boxes.by_path) - {row.path for row in rows if row.detected is not None})
    if extra:
        raise DataError(f"{display(str(source))} holds boxes of {len(extra)} frame{'s' if len(extra) > 1 else ''} "
                        f"the predictions CSV has no detection row for, e.g. {display(extra[0])}: the boxes CSV is not "
                        "this run's. Pass the --boxes-out file the same predict run wrote.")
    out = []
    for row in rows:
        found = row.detected
        if found is None:
            out.append(row)
            continue
        results = boxes.by_path.get(row.path, ())
        if len(results) != found.count:
            raise DataError(f"{display(str(source))} holds {len(results)} boxes of {display(row.path)}, whose row "
                            f"says {found.count}: the boxes CSV is not this run's. Pass the --boxes-out file the "
                            "same predict run wrote.")
        out.append(replace(row, detected=replace(found, boxes=results)))
    return out
