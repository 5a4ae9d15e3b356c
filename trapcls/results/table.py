"""Reading a `field` predictions CSV back as frames: the input of events and of every export.

One reader, so `events`, `convert` and `watch --events` agree on what a row means: its path,
capture time, probabilities (None for an unreadable file) and the model that classified it.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import numpy as np

from trapcls.core.model.blank import blank_index
from trapcls.core.system.exceptions import DataError
from trapcls.predict.output import Columns, check_one_model, parse_header, read_table, unneutralise

_EXAMPLES = 5


@dataclass(frozen=True)
class Frame:
    """One row of a field CSV."""

    path: str  # relative, '/'-separated, as predict wrote it
    captured: str  # the capture time as written: camera-local ISO 8601, an offset when EXIF had one; "" if none
    probs: np.ndarray | None  # in class order; None when the file could not be read
    error: str = ""

    @property
    def ok(self) -> bool:
        return self.probs is not None

    @property
    def time(self) -> datetime | None:
        """The camera's wall-clock time (offset dropped: frames of one camera share one clock)."""
        return parse_time(self.captured)

    @property
    def offset(self) -> str | None:
        """The UTC offset EXIF recorded ("+02:00"), or None."""
        if not self.captured:
            return None
        offset = datetime.fromisoformat(self.captured).utcoffset()
        if offset is None:
            return None
        minutes = int(offset.total_seconds()) // 60
        return f"{'-' if minutes < 0 else '+'}{abs(minutes) // 60:02d}:{abs(minutes) % 60:02d}"


@dataclass(frozen=True)
class FieldTable:
    """A field CSV: its classes, the model that wrote it and one Frame per row."""

    source: Path
    classes: tuple[str, ...]
    model: str | None  # None for CSVs written before the model column existed
    frames: list[Frame]

    @property
    def blank(self) -> int | None:
        return blank_index(self.classes)


def parse_time(text: str) -> datetime | None:
    """A capture time cell as naive wall-clock time, or None when empty."""
    if not text:
        return None
    return datetime.fromisoformat(text).replace(tzinfo=None)


def read_field(path: Path) -> FieldTable:
    """Read a field CSV `predict` or `watch` wrote; DataError naming the file for anything else."""
    if not path.is_file():
        raise DataError(f"Predictions file {path} does not exist; pass the CSV `trapcls predict --out` wrote.")
    header, rows = read_table(path)
    columns = parse_header(header, path)
    if columns.fmt != "field":
        raise DataError(f"{path} is a submission CSV (id,<classes>): it has no file paths or capture times. "
                        "Run `trapcls predict FOLDER --out PRED.csv` (the default field format) and pass that CSV.")
    model = check_one_model(path, columns.model, rows)
    frames = [_frame(path, columns, line, row) for line, row in enumerate(rows, start=2)]
    seen: dict[str, int] = {}
    for frame in frames:
        seen[frame.path] = seen.get(frame.path, 0) + 1
    dupes = [p for p, n in seen.items() if n > 1]
    if dupes:
        raise DataError(f"{path}: {len(dupes)} paths occur more than once ({', '.join(dupes[:_EXAMPLES])}). Each "
                        "file must have one row: was the CSV concatenated by hand? Use `trapcls merge` instead.")
    return FieldTable(source=path, classes=tuple(map(unneutralise, columns.classes)),
                      model=model and unneutralise(model), frames=frames)


def _frame(path: Path, columns: Columns, line: int, row: list[str]) -> Frame:
    name, captured, status = unneutralise(row[0]), row[1], row[columns.status]
    where = f"{path}: row {line} ({name})"
    if captured:
        try:
            datetime.fromisoformat(captured)
        except ValueError:
            raise DataError(f"{where}: capture time {captured!r} is not an ISO 8601 date and time.") from None
    if status != "ok":
        return Frame(path=name, captured=captured, probs=None, error=unneutralise(row[columns.status + 1]))
    cells = row[columns.first:columns.first + len(columns.classes)]
    try:
        probs = np.asarray([float(c) for c in cells], dtype=np.float64)
    except ValueError:
        raise DataError(f"{where}: a probability is not a number.") from None
    if not np.all(np.isfinite(probs)) or np.any(probs < 0) or abs(probs.sum() - 1.0) > 1e-3:
        raise DataError(f"{where}: the probabilities are not a distribution (they sum to {probs.sum():.4g}).")
    return Frame(path=name, captured=captured, probs=probs)
