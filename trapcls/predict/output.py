"""CSV writers for prediction results: the `field` table and the competition `submission`.

Rows are keyed by their first cell (the relative path, or the submission id) and a finished
CSV is sorted by it (`merge.merge_csvs`), so an interrupted-and-resumed run, a sharded-and-
merged run and a plain run end in the same file. `read_table` is the one reader of these CSVs.
"""

from __future__ import annotations

import csv
import io
import logging
import os
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from trapcls.core.frames.discover import ImageFile
from trapcls.core.model.blank import DEFAULT_BLANK_THRESHOLD, blank_index
from trapcls.core.system.exceptions import DataError
from trapcls.core.system.fsutil import check_writable, fsync_dir, writing
from trapcls.predict.config import FORMATS

log = logging.getLogger(__name__)

_FORMULA_LEADS = ("=", "+", "-", "@", "\t", "\r")


@dataclass(frozen=True)
class Result:
    """The outcome for one file: probabilities in bundle class order, or the reason it failed."""

    file: ImageFile
    probs: np.ndarray | None
    error: str | None = None
    captured: str | None = None

    @property
    def ok(self) -> bool:
        return self.error is None


def neutralise(cell: str) -> str:
    """Prefix a quote to text a spreadsheet would run as a formula (a file name can carry one)."""
    return "'" + cell if cell.startswith(_FORMULA_LEADS) else cell


def unneutralise(cell: str) -> str:
    """The text `neutralise` was given: its quote before a formula-leading cell taken off again."""
    return cell[1:] if cell.startswith("'") and neutralise(cell[1:]) == cell else cell


def check_format(fmt: str) -> None:
    """Raise DataError unless `fmt` is one of FORMATS."""
    if fmt not in FORMATS:
        raise DataError(f"Invalid format {fmt!r}. Only {', '.join(FORMATS)} are supported.")


@dataclass(frozen=True)
class Layout:
    """The shape of one prediction CSV: format, classes, the blank flag's threshold and the model.

    field: path, captured, label, probability, [is_blank,] <classes>, status, error, model
    (is_blank only when the bundle has a blank class: P(blank) >= blank_threshold; model is the
    bundle's `model_id`, the same on every row, so results of two models never mix silently).
    submission: id, <classes>; unreadable files get the uniform distribution.
    """

    fmt: str
    classes: tuple[str, ...]
    blank_threshold: float = DEFAULT_BLANK_THRESHOLD
    model: str = ""

    def __post_init__(self) -> None:
        check_format(self.fmt)
        if not 0.0 <= self.blank_threshold <= 1.0:
            raise DataError(f"--blank-threshold must be between 0 and 1, got {self.blank_threshold}.")

    @property
    def blank(self) -> int | None:
        return blank_index(self.classes) if self.fmt == "field" else None

    def header(self) -> list[str]:
        classes = list(map(neutralise, self.classes))
        if self.fmt == "submission":
            return ["id", *classes]
        flag = ["is_blank"] if self.blank is not None else []
        return ["path", "captured", "label", "probability", *flag, *classes, "status", "error", "model"]

    def key(self, file: ImageFile) -> str:
        """The row's first cell, exactly as written."""
        return neutralise(file.stem if self.fmt == "submission" else file.rel)

    def row(self, result: Result) -> list[str]:
        n = len(self.classes)
        if self.fmt == "submission":
            probs = result.probs if result.ok else np.full(n, 1.0 / n)
            return [self.key(result.file), *map(_fmt, probs)]
        flag = 1 if self.blank is not None else 0
        model = neutralise(self.model)
        if not result.ok:
            return [self.key(result.file), result.captured or "", "", "", *([""] * (flag + n)), "error",
                    neutralise(result.error or ""), model]
        top = int(np.argmax(result.probs))
        is_blank = ["true" if result.probs[self.blank] >= self.blank_threshold else "false"] if flag else []
        return [self.key(result.file), result.captured or "", neutralise(self.classes[top]), _fmt(result.probs[top]),
                *is_blank, *map(_fmt, result.probs), "ok", "", model]


@dataclass(frozen=True)
class Columns:
    """Where things are in a prediction CSV's header (the reading side of `Layout`)."""

    fmt: str
    classes: tuple[str, ...]
    first: int  # index of the first class column
    is_blank: int | None  # index of the is_blank column (field CSVs of a model with a blank class)
    model: int | None  # index of the model column (field CSVs written before it existed have none)

    @property
    def status(self) -> int | None:
        return self.first + len(self.classes) if self.fmt == "field" else None


FIELD_LEAD = ["path", "captured", "label", "probability"]


def parse_header(header: list[str], path: Path) -> Columns:
    """The columns of a `predict`/`watch` CSV; DataError naming the file when it is neither format."""
    if header and header[0] == "id":
        return Columns("submission", tuple(header[1:]), 1, None, None)
    tail = next((n for n in (3, 2) if header[-n:] == ["status", "error", "model"][:n]), None)
    if header[:4] != FIELD_LEAD or tail is None:
        raise DataError(f"{path}: not a trapcls predictions CSV (header starts {short(header[:4])}); expected the "
                        "field format (path,captured,label,probability,...) or the submission format (id,...).")
    flag = 4 if len(header) > 4 and header[4] == "is_blank" else None
    first = 5 if flag else 4
    classes = tuple(header[first:len(header) - tail])
    if len(classes) < 2:
        raise DataError(f"{path}: found {len(classes)} class columns; a classifier has at least 2.")
    return Columns("field", classes, first, flag, len(header) - 1 if tail == 3 else None)


def check_one_model(path: Path, column: int | None, rows: list[list[str]], model: str | None = None) -> str | None:
    """The one model that wrote `rows` (its cells in `column`; None for a CSV without the column); DataError if
    rows of two models are mixed, or if `model` is given and the rows are another model's."""
    if column is None:
        return None
    found = sorted({row[column] for row in rows})
    if len(found) > 1:
        raise DataError(f"{path} mixes results of {len(found)} models ({'; '.join(found[:3])}). Keep one model's "
                        "results per file: re-run predict with --overwrite, or split the rows by the model column.")
    if model is not None and found and found[0] != neutralise(model):
        raise DataError(f"{path} holds results of the model {found[0]!r}; this run uses {model!r}. Pass --overwrite "
                        "to replace them, or choose another --out.")
    return found[0] if found else model


def check_submission_ids(files: list[ImageFile]) -> None:
    """Submission ids are file stems and must be unique; raise DataError listing the clashes."""
    counts = Counter(f.stem for f in files)
    clashes = sorted(stem for stem, n in counts.items() if n > 1)
    if clashes:
        examples = [f.rel for f in files if f.stem in set(clashes[:3])]
        raise DataError(
            f"{len(clashes)} file stems occur more than once ({', '.join(clashes[:5])}), "
            f"e.g. {', '.join(examples[:6])}; "
            "the submission format uses the stem as id. Use --format field or classify the folders separately."
        )


ROWS_KEPT = "the rows written so far are kept, and the command resumes after them"


class CsvAppender:
    """An append-only prediction CSV that doubles as the resume file.

    Each `append` writes whole rows, flushes and fsyncs, so a killed run (or a full disk) leaves
    every finished batch on disk and at worst one torn last line, which the next open cuts off.
    `done` holds the keys already written, which a re-run skips. A failed write raises DataError
    naming the file (caused by the OSError, so `fsutil.storage_fault` can tell a full disk).
    """

    def __init__(self, path: Path, layout: Layout, *, overwrite: bool = False, flag: str = "--out") -> None:
        self.path, self.layout, self._flag = path, layout, flag
        self.done: set[str] = set()
        self.repaired = False
        if path.is_dir():
            raise DataError(f"{flag} {path} is a folder; give a CSV file path.")
        check_writable(path.parent, flag)  # an unwritable folder fails now, not after the work
        with writing(path, flag, ROWS_KEPT):
            self._open(overwrite)
        self._writer = csv.writer(self._fh, lineterminator="\n")

    def _open(self, overwrite: bool) -> None:
        path, layout = self.path, self.layout
        if not overwrite and path.exists():
            self.repaired = _cut_torn_line(path)
        if overwrite or not path.exists() or path.stat().st_size == 0:
            self._fh = open(path, "w", newline="", encoding="utf-8")
            try:
                csv.writer(self._fh, lineterminator="\n").writerow(layout.header())
                self._sync()
                fsync_dir(path.parent)
            except OSError:
                self.close_quietly()  # a torn header is cut by the next open
                raise
        else:
            header, rows = read_table(path)
            if header != layout.header():
                raise DataError(
                    f"{path} already exists with other columns ({short(header)}; this run writes "
                    f"{short(layout.header())}). It is from another model or format: pass --overwrite to replace "
                    "it, or choose another --out."
                )
            if layout.fmt == "field":
                check_one_model(path, parse_header(header, path).model, rows, layout.model)
            self.done = {row[0] for row in rows}
            self._fh = open(path, "a", newline="", encoding="utf-8")

    def append(self, results: list[Result]) -> None:
        """Write one row per result and make them durable."""
        with writing(self.path, self._flag, ROWS_KEPT):
            self._writer.writerows(self.layout.row(r) for r in results)
            self._sync()
        self.done.update(self.layout.key(r.file) for r in results)

    def close(self) -> None:
        """Flush, fsync and close; the file is closed even when the last write fails (then DataError)."""
        if self._fh.closed:
            return
        with writing(self.path, self._flag, ROWS_KEPT):
            try:
                self._sync()
            finally:
                self._fh.close()

    def close_quietly(self) -> None:
        """Close after a failed write without raising again (what could not be written is dropped: the
        next open cuts a torn last line, and the caller still has the rows to redo)."""
        try:
            self._fh.close()
        except OSError:
            pass  # the file is closed all the same

    def _sync(self) -> None:
        self._fh.flush()
        os.fsync(self._fh.fileno())


def _cut_torn_line(path: Path) -> bool:
    """Truncate a last line that has no newline (a run killed mid-write); True when one was cut."""
    with open(path, "rb+") as fh:
        data = fh.read()
        if not data or data.endswith(b"\n"):
            return False
        keep = data.rfind(b"\n") + 1
        fh.truncate(keep)
        fh.flush()
        os.fsync(fh.fileno())
    log.warning("%s: cut an incomplete last line (%d bytes) left by an interrupted run", path, len(data) - keep)
    return True


def read_table(path: Path) -> tuple[list[str], list[list[str]]]:
    """Header and rows of a complete prediction CSV; refuses a missing, empty, torn or ragged file."""
    try:
        data = path.read_bytes()
        text = data.decode("utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise DataError(f"Cannot read {path}: {exc}.") from exc
    if not data:
        raise DataError(f"{path} is empty: it has no header row. Re-run the command that writes it.")
    if not data.endswith(b"\n"):
        raise DataError(
            f"{path} ends in an incomplete line: its run was interrupted. Re-run that shard's predict command "
            "(it resumes and finishes the file), then merge again."
        )
    try:
        table = list(csv.reader(io.StringIO(text, newline=""), strict=True))
    except csv.Error as exc:
        raise DataError(f"{path} is not a valid CSV: {exc}.") from exc
    header, rows = table[0], table[1:]
    for line, row in enumerate(rows, start=2):
        if len(row) != len(header):
            raise DataError(f"{path}: row {line} has {len(row)} cells, the header {len(header)}. The file is "
                            "damaged; re-run the predict command that wrote it with --overwrite.")
    return header, rows


def short(cells: list[str], limit: int = 100) -> str:
    """Cells joined by commas, cut to `limit` characters for an error message."""
    text = ",".join(cells)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _fmt(p: float) -> str:
    return f"{float(p):.8g}"
