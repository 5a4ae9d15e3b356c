"""Reading a prediction CSV back as rows: the input of merge, events, convert, adapt, evaluate and the watch rebuild.

One reader, so every command agrees on what a row means. `read_table` checks the file is a
whole CSV (not torn, not ragged); `read_predictions` parses it into a `Table` of `Row`s.
"""

from __future__ import annotations

import csv
import io
import math
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import numpy as np

from trapcls.core.model.blank import blank_index
from trapcls.core.system.exceptions import DataError
from trapcls.core.system.names import neutralise, unneutralise
from trapcls.core.table.layout import SPECIES_SEPARATOR, STATUSES, Columns, parse_header
from trapcls.core.table.row import Clip, Detected, Row

EXAMPLES = 5
SUM_TOLERANCE = 1e-3  # a field row whose probabilities sum further from 1 is not a distribution


@dataclass(frozen=True)
class Table:
    """A prediction CSV: its format, classes, the model that wrote it, one Row per line, and its is_blank cells."""

    source: Path
    fmt: str
    classes: tuple[str, ...]
    model: str | None  # None for a submission, and for field CSVs written before the model column existed
    rows: list[Row]
    blank_cells: tuple[str, ...] | None = None  # the is_blank column as written, row by row (None: no column)
    detections: bool = False  # the detection columns: its frames were classified from detector boxes

    @property
    def blank(self) -> int | None:
        return blank_index(self.classes) if self.fmt == "field" else None


def read_table(path: Path) -> tuple[list[str], list[list[str]]]:
    """Header and rows of a complete prediction CSV; refuses a missing, empty, torn or ragged file."""
    try:
        data = path.read_bytes()
        text = data.decode("utf-8-sig")  # Excel's "CSV UTF-8" starts with a byte-order mark
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


def read_predictions(path: Path, *, distributions: bool = True) -> Table:
    """A `predict`/`watch` CSV (field or submission format) as rows; DataError naming the file and row for
    anything else. With `distributions`, a field row's probabilities must sum to 1 (evaluate instead
    renormalises and reports such rows)."""
    if not path.is_file():
        raise DataError(f"Predictions file {path} does not exist; pass the CSV `trapcls predict --out` wrote.")
    header, cells = read_table(path)
    return parse_table(path, header, cells, distributions=distributions)


def parse_table(source: Path, header: list[str], cells: list[list[str]], *, distributions: bool = True) -> Table:
    """The rows of a CSV already split into cells (what `Layout` wrote, read back exactly as a reader would)."""
    columns = parse_header(header, source)
    model = check_one_model(source, columns.model, cells)
    rows = [_row(source, columns, line, row, distributions) for line, row in enumerate(cells, start=2)]
    _check_unique(source, rows)
    flags = tuple(row[columns.is_blank] for row in cells) if columns.is_blank is not None else None
    return Table(source=source, fmt=columns.fmt, classes=tuple(map(unneutralise, columns.classes)),
                 model=model and unneutralise(model), rows=rows, blank_cells=flags,
                 detections=columns.detections is not None)


def read_field(path: Path) -> Table:
    """A field CSV `predict` or `watch` wrote (paths, capture times); DataError for anything else."""
    table = read_predictions(path)
    if table.fmt != "field":
        raise DataError(f"{path} is a submission CSV (id,<classes>): it has no file paths or capture times. "
                        "Run `trapcls predict FOLDER --out PRED.csv` (the default field format) and pass that CSV.")
    return table


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


def _row(path: Path, columns: Columns, line: int, cells: list[str], distributions: bool) -> Row:
    name = unneutralise(cells[0])
    where = f"{path}: row {line} ({name})"
    if columns.fmt == "submission":
        return Row(path=name, probs=_probs(cells[1:], where, False))
    captured, status = cells[1], cells[columns.status]
    if captured:
        try:
            datetime.fromisoformat(captured)
        except ValueError:
            raise DataError(f"{where}: capture time {captured!r} is not an ISO 8601 date and time.") from None
    if status not in STATUSES:
        raise DataError(f"{where}: the status {status!r} is neither ok nor error.")
    clip = _clip(cells[columns.clip:columns.detections], where) if columns.clip is not None else None
    detected = _detected(cells[columns.detections:], where) if columns.detections is not None else None
    if status != "ok":
        return Row(path=name, probs=None, captured=captured, error=unneutralise(cells[columns.status + 1]), clip=clip)
    probs = _probs(cells[columns.first:columns.status], where, distributions)
    return Row(path=name, probs=probs, captured=captured, clip=clip, detected=detected)


def _detected(cells: list[str], where: str) -> Detected | None:
    """A detection row's cells (boxes, species); None on a row without them (an error row)."""
    count, species = cells
    if not count and not species:
        return None
    if not count.isdigit():
        raise DataError(f"{where}: the boxes cell {count!r} is not a count of boxes.")
    return Detected(int(count), tuple(unneutralise(s) for s in species.split(SPECIES_SEPARATOR)) if species else ())


def _clip(cells: list[str], where: str) -> Clip | None:
    """A clip row's clip cells (frames, duration_s, frame_rate, best_frame); None on a frame's row (all empty)."""
    if not any(cells):
        return None
    try:
        frames, duration, rate, best = (float(c) if c else None for c in cells)
        if any(v is not None and not (math.isfinite(v) and v >= 0) for v in (frames, duration, rate, best)):
            raise ValueError
        return Clip(frames=int(frames or 0), duration=duration, frame_rate=rate,
                    best_frame=None if best is None else int(best))
    except (ValueError, OverflowError):
        raise DataError(f"{where}: the clip cells (frames, duration_s, frame_rate, best_frame) {cells} are not "
                        "finite numbers of at least 0.") from None


def _probs(cells: list[str], where: str, distribution: bool) -> np.ndarray:
    try:
        probs = np.asarray([float(c) for c in cells], dtype=np.float64)
    except ValueError:
        raise DataError(f"{where}: a probability is not a number.") from None
    if distribution and (not np.all(np.isfinite(probs)) or np.any(probs < 0)
                         or abs(probs.sum() - 1.0) > SUM_TOLERANCE):
        raise DataError(f"{where}: the probabilities are not a distribution (they sum to {probs.sum():.4g}).")
    return probs


def _check_unique(path: Path, rows: list[Row]) -> None:
    seen: dict[str, int] = {}
    for row in rows:
        seen[row.path] = seen.get(row.path, 0) + 1
    dupes = [p for p, n in seen.items() if n > 1]
    if dupes:
        raise DataError(f"{path}: {len(dupes)} paths occur more than once ({', '.join(dupes[:EXAMPLES])}). Each "
                        "file must have one row: was the CSV concatenated by hand? Use `trapcls merge` instead.")
