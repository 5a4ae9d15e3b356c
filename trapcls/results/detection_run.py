"""A detection run's boxes for `convert`: the frame CSV's rows with their boxes, checked against the detector's file.

`predict IMAGES --detections md.json --out pred.csv` writes two CSVs: pred.csv, one row per frame ending in the
detection columns (`boxes`, `species`), and the boxes CSV (`--boxes-out`, by default `pred.boxes.csv` beside it),
one row per classified box. An export of the run needs both; `--to megadetector` also needs md.json itself: it
holds every box, those below the detection threshold too, and names the detector. What is checked, each failure
one line:

- the boxes CSV exists, is one, and is of the frame CSV's model and classes; each frame holds as many boxes as
  its row says (`core.table.boxes.attach_boxes`): DataError, exit 1;
- with --detections: each classified box is in it, at its index in its frame's `detections`, with the same
  category, confidence and bbox (within the 6 digits the boxes CSV keeps): DataError, exit 1;
- --boxes or --detections with a whole-frame CSV (no detection columns), and --to megadetector on a detection
  run without --detections: bad usage, OptionError, exit 2.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from pathlib import Path

from trapcls.core.frames.detections import Box, Detections, Entry, load_detections, match
from trapcls.core.system.exceptions import DataError, OptionError
from trapcls.core.system.names import display
from trapcls.core.table.boxes import BoxTable, attach_boxes, boxes_path, read_boxes
from trapcls.core.table.read import Table
from trapcls.core.table.row import Row
from trapcls.results.config import ConvertConfig

# The boxes CSV writes confidences and bbox cells with 6 significant digits: a box read back is this close.
BOX_TOLERANCE = 1e-5


@dataclass(frozen=True)
class RunBoxes:
    """What a detection run adds to its frame CSV for the exporters: the boxes CSV read, and the detector's file
    with each frame path's entry in it (None and empty when --detections was not given)."""

    boxes: Path
    detections: Detections | None = None
    entries: dict[str, Entry] | None = None
    unused: int = 0  # entries of the detector's file that match no frame of the CSV


def load_run(table: Table, config: ConvertConfig) -> tuple[Table, RunBoxes | None]:
    """`table` with each frame's boxes attached and the run's files, or `table` and None for a whole-frame CSV;
    the checks of the module docstring."""
    if not table.detections:
        for name in ("boxes", "detections"):
            if getattr(config, name) is not None:
                raise OptionError(name, f"applies to a detection run (`predict --detections`), and "
                                        f"{display(str(config.predictions))} has no detection columns (boxes, "
                                        "species): its frames were classified whole. Leave it out")
        return table, None
    path = config.boxes or boxes_path(config.predictions)
    found = _read(path, config)
    _check_model(table, found, path)
    table = replace(table, rows=attach_boxes(table.rows, found, path))
    if config.detections is None:
        if config.to == "megadetector":
            raise OptionError("detections", "is needed for --to megadetector on a detection run: give the "
                                            "MegaDetector file `predict --detections` read (it holds every box, "
                                            "those below the detection threshold too, and names the detector)")
        return table, RunBoxes(path)
    detections = load_detections(config.detections)
    matched = match([row.path for row in table.rows], detections)
    check_boxes(table.rows, matched.by_path, detections.source)
    return table, RunBoxes(path, detections, matched.by_path, len(matched.unused))


def _read(path: Path, config: ConvertConfig) -> BoxTable:
    where = display(str(path))
    if path.is_dir():
        raise DataError(f"--boxes {where} is a folder; give the boxes CSV `predict --boxes-out` wrote.")
    if not path.is_file():
        what = f"--boxes {where}" if config.boxes is not None else \
            f"{where}, the boxes CSV predict writes beside {display(str(config.predictions))} by default,"
        raise DataError(f"{what} does not exist: a detection run's boxes are in the file `predict --boxes-out` "
                        "wrote; pass it with --boxes.")
    return read_boxes(path)


def _check_model(table: Table, found: BoxTable, path: Path) -> None:
    """DataError when the boxes CSV is another model's (its model cells or its classes differ)."""
    where = display(str(path))
    if table.model is not None and found.model and found.model != table.model:
        raise DataError(f"{where} holds boxes of the model {display(found.model)!r}, and {display(str(table.source))} "
                        f"is of {display(table.model)!r}: pass the --boxes-out file of the same predict run.")
    if found.classes != table.classes:
        raise DataError(f"{where} has the classes {', '.join(map(display, found.classes))}, and "
                        f"{display(str(table.source))} {', '.join(map(display, table.classes))}: pass the "
                        "--boxes-out file of the same predict run.")


def check_boxes(rows: list[Row], entries: dict[str, Entry], source: Path) -> None:
    """DataError unless every classified box of `rows` is its frame's entry's box at the same index."""
    where = display(str(source))
    for row in rows:
        results = row.detected.boxes if row.detected is not None else ()
        if not results:
            continue
        entry = entries.get(row.path)
        if entry is None or entry.failure is not None:
            raise DataError(f"{where} has no boxes for {display(row.path)}, whose {len(results)} classified boxes "
                            "are in the boxes CSV: pass the --detections file that predict run read.")
        for result in results:
            box = result.box
            if box.index >= len(entry.boxes):
                raise DataError(f"{where} has {len(entry.boxes)} boxes for {display(row.path)}, and the boxes CSV "
                                f"has its box {box.index}: pass the --detections file that predict run read.")
            if not same_box(box, entry.boxes[box.index]):
                theirs = entry.boxes[box.index]
                raise DataError(f"{display(row.path)}: box {box.index} is {_describe(theirs)} in {where} and "
                                f"{_describe(box)} in the boxes CSV: pass the --detections file that predict run "
                                "read.")


def same_box(ours: Box, theirs: Box) -> bool:
    """The same category, and confidence and bbox equal to the boxes CSV's 6 digits."""
    return ours.category == theirs.category and all(
        math.isclose(a, b, abs_tol=BOX_TOLERANCE) for a, b in zip((ours.conf, *ours.bbox), (theirs.conf, *theirs.bbox)))


def _describe(box: Box) -> str:
    return f"{box.category} {box.conf:.3g} at [{', '.join(f'{v:.4g}' for v in box.bbox)}]"
