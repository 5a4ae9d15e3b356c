"""Rows as cells and cells as rows: the columns of the field and submission CSVs, in one place.

field: path, captured, label, probability, [is_blank,] <classes>, status, error, model[, frames, duration_s,
frame_rate, best_frame][, boxes, species]. is_blank appears when the classes include a blank class (the decision of
the command's BlankRule); model is the bundle's `model_id`, the same on every row, so results of two models never
mix silently. The clip columns appear when the CSV holds video clips (empty on a frame's row); the detection
columns when the frames were classified from a detector's boxes (`boxes`: how many were classified; `species`:
the classes they show, each once, joined by ";").
submission: id, <classes>; a file that failed gets the uniform distribution (the competition
format has no room for an error).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

import numpy as np

from trapcls.core.model.blank import BlankRule, blank_classes, blank_index
from trapcls.core.system.exceptions import DataError
from trapcls.core.system.names import neutralise
from trapcls.core.table.row import Row, number

FORMATS = ("field", "submission")
FIELD_LEAD = ["path", "captured", "label", "probability"]
FIELD_TAIL = ["status", "error", "model"]
CLIP_TAIL = ["frames", "duration_s", "frame_rate", "best_frame"]
DETECTION_TAIL = ["boxes", "species"]
# An out-of-fold CSV (`trapcls oof` writes it, `trapcls ensemble fit` reads it): the submission layout plus these.
OOF_TAIL = ["fold", "model"]
SPECIES_SEPARATOR = ";"
STATUSES = ("ok", "error")
# Column names the writers use besides the classes; a class may not take one of them.
RESERVED_NAMES = frozenset({"id", *FIELD_LEAD, "is_blank", *FIELD_TAIL, *CLIP_TAIL, *DETECTION_TAIL})


def check_format(fmt: str) -> None:
    """Raise DataError unless `fmt` is one of FORMATS."""
    if fmt not in FORMATS:
        raise DataError(f"Invalid format {fmt!r}. Only {', '.join(FORMATS)} are supported.")


@dataclass(frozen=True)
class Layout:
    """The shape of one prediction CSV: format, classes, the blank rule (field, with a blank class) and the model."""

    fmt: str
    classes: tuple[str, ...]
    blank_rule: BlankRule | None = None
    model: str = ""
    clips: bool = False  # field: the clip columns (a CSV that holds video clips)
    detections: bool = False  # field: the detection columns (frames classified from a detector's boxes)

    def __post_init__(self) -> None:
        check_format(self.fmt)
        if self.blank is not None and self.blank_rule is None:
            raise DataError("a field CSV of a model with a blank class needs the rule for its is_blank column")

    @property
    def blank(self) -> int | None:
        return blank_index(self.classes) if self.fmt == "field" else None

    def header(self) -> list[str]:
        classes = list(map(neutralise, self.classes))
        if self.fmt == "submission":
            return ["id", *classes]
        flag = ["is_blank"] if self.blank is not None else []
        return [*FIELD_LEAD, *flag, *classes, *FIELD_TAIL, *(CLIP_TAIL if self.clips else []),
                *(DETECTION_TAIL if self.detections else [])]

    def key(self, row: Row) -> str:
        """The row's first cell, exactly as written."""
        return neutralise(row.stem if self.fmt == "submission" else row.path)

    def cells(self, row: Row) -> list[str]:
        """One CSV line. Label and is_blank are decided on the probabilities as written, so that a reader of the
        CSV, computing from its cells, decides the same."""
        n = len(self.classes)
        if self.fmt == "submission":
            probs = row.probs if row.ok else np.full(n, 1.0 / n)
            return [self.key(row), *map(number, probs)]
        flag = 1 if self.blank is not None else 0
        model = neutralise(self.model)
        clip = self._clip_cells(row) + self._detection_cells(row)
        if not row.ok:
            return [self.key(row), row.captured, "", "", *([""] * (flag + n)), "error", neutralise(row.error),
                    model, *clip]
        written = [number(p) for p in row.probs]
        probs = np.array([float(cell) for cell in written])  # as a reader of the CSV gets them back
        top = int(np.argmax(probs))
        is_blank = [_bool(self.blank_rule.is_blank(probs[self.blank]))] if flag else []
        return [self.key(row), row.captured, neutralise(self.classes[top]), written[top], *is_blank, *written,
                "ok", "", model, *clip]

    def _clip_cells(self, row: Row) -> list[str]:
        if not self.clips:
            if row.clip is not None:
                raise DataError(f"{row.path} is a video clip, and this CSV has no clip columns")
            return []
        clip = row.clip
        if clip is None:
            return [""] * len(CLIP_TAIL)
        return [str(clip.frames), _optional(clip.duration), _optional(clip.frame_rate),
                "" if clip.best_frame is None else str(clip.best_frame)]


    def _detection_cells(self, row: Row) -> list[str]:
        if not self.detections:
            if row.detected is not None:
                raise DataError(f"{row.path} was classified from detector boxes, and this CSV has no detection columns")
            return []
        found = row.detected
        if found is None or not row.ok:
            return ["", ""]
        return [str(found.count), SPECIES_SEPARATOR.join(map(neutralise, found.species))]


def _optional(value: float | None) -> str:
    return "" if value is None else f"{value:.6g}"


def _bool(value: bool) -> str:
    return "true" if value else "false"


@dataclass(frozen=True)
class Columns:
    """Where things are in a prediction CSV's header (the reading side of `Layout`)."""

    fmt: str
    classes: tuple[str, ...]  # as written (neutralised)
    first: int  # index of the first class column
    is_blank: int | None  # index of the is_blank column (field CSVs of a model with a blank class)
    model: int | None  # index of the model column (field CSVs written before it existed have none)
    clip: int | None = None  # index of the first clip column (field CSVs that hold video clips)
    detections: int | None = None  # index of the first detection column (frames classified from boxes)

    @property
    def status(self) -> int | None:
        return self.first + len(self.classes) if self.fmt == "field" else None


def parse_header(header: list[str], path: Path) -> Columns:
    """The columns of a `predict`/`watch` CSV; DataError naming the file when it is neither format."""
    if header and header[0] == "id":
        _check_distinct(tuple(header[1:]), path)
        return Columns("submission", tuple(header[1:]), 1, None, None)
    detections = len(header) - len(DETECTION_TAIL) if header[-len(DETECTION_TAIL):] == DETECTION_TAIL else None
    header = header[:detections]
    clip = len(header) - len(CLIP_TAIL) if header[-len(CLIP_TAIL):] == CLIP_TAIL else None
    header = header[:clip]
    tail = next((n for n in (3, 2) if header[-n:] == FIELD_TAIL[:n]), None)
    if header[:4] != FIELD_LEAD or tail is None:
        raise DataError(f"{path}: not a trapcls predictions CSV (header starts {short(header[:4])}); expected the "
                        "field format (path,captured,label,probability,...) or the submission format (id,...).")
    flag = 4 if len(header) > 4 and header[4] == "is_blank" else None
    first = 5 if flag else 4
    classes = tuple(header[first:len(header) - tail])
    if len(classes) < 2:
        raise DataError(f"{path}: found {len(classes)} class columns; a classifier has at least 2.")
    _check_distinct(classes, path)
    return Columns("field", classes, first, flag, len(header) - 1 if tail == 3 else None, clip, detections)


def _check_distinct(classes: tuple[str, ...], path: Path) -> None:
    blanks = blank_classes(classes)
    if len(blanks) > 1:
        raise DataError(f"{path}: the classes {short(blanks)} all mean blank, and is_blank reads one; no trapcls "
                        "model writes such a CSV. Was the header edited by hand?")
    twice = sorted(c for c, n in Counter(classes).items() if n > 1)
    if twice:
        raise DataError(f"{path}: the class column{'s' if len(twice) > 1 else ''} {short(twice)} occur"
                        f"{'' if len(twice) > 1 else 's'} more than once; each class has one column. Was the "
                        "header edited by hand?")


def check_submission_ids(paths: list[str]) -> None:
    """Submission ids are file stems and must be unique; raise DataError listing the clashes."""
    counts = Counter(PurePosixPath(p).stem for p in paths)
    clashes = sorted(stem for stem, n in counts.items() if n > 1)
    if clashes:
        examples = [p for p in paths if PurePosixPath(p).stem in set(clashes[:3])]
        raise DataError(
            f"{len(clashes)} file stems occur more than once ({', '.join(clashes[:5])}), "
            f"e.g. {', '.join(examples[:6])}; "
            "the submission format uses the stem as id. Use --format field or classify the folders separately."
        )


def short(cells: list[str], limit: int = 100) -> str:
    """Cells joined by commas, cut to `limit` characters for an error message."""
    text = ",".join(cells)
    return text if len(text) <= limit else text[: limit - 3] + "..."
