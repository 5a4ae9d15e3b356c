"""A CSV written beside predict's main CSV, one or more rows per file of it: `--video-frames` (a clip's sampled
frames) and `--boxes-out` (a frame's detector boxes).

It resumes with the main CSV: its rows are appended (and fsynced) just before their file's row reaches the main
CSV, so a run killed in between leaves rows whose file is not done; those are dropped when the run starts again,
and the file is redone, so each file's rows are written once. A file that exists and is not this CSV (another
header) is refused and left untouched, like --out. At the end the rows are put in path order, so a resumed run
ends with the same file as an uninterrupted one.
"""

from __future__ import annotations

import csv
import os
from pathlib import Path

from trapcls.core.system.exceptions import DataError
from trapcls.core.system.fsutil import atomic_write_text, csv_text, writing


class SideCsv:
    """Rows keyed by their first cell (the main CSV's key of their file), sorted by it and the second cell."""

    def __init__(self, path: Path, header: list[str], flag: str, what: str, done: set[str]) -> None:
        self.path, self.header, self.flag, self.what = path, header, flag, what
        if path.is_dir():
            raise DataError(f"{flag} {path} is a folder; give a CSV file path.")
        with writing(path, flag, "the rows written so far are kept"):
            atomic_write_text(path, csv_text(header, [r for r in self._rows() if r[0] in done]))

    def _rows(self) -> list[list[str]]:
        if not self.path.exists() or not self.path.stat().st_size:
            return []
        with open(self.path, newline="", encoding="utf-8-sig") as fh:
            rows = list(csv.reader(fh))
        if not rows or rows[0] != self.header:
            raise DataError(f"{self.flag} {self.path} exists and is not the {self.what} CSV of this model: it was left "
                            "untouched. Choose another file name.")
        return [r for r in rows[1:] if len(r) == len(self.header)]  # a torn last line is dropped

    def append(self, lines: list[list[str]]) -> None:
        with writing(self.path, self.flag, "the rows written so far are kept"):
            with open(self.path, "a", newline="", encoding="utf-8") as fh:
                csv.writer(fh, lineterminator="\n").writerows(lines)
                fh.flush()
                os.fsync(fh.fileno())

    def finish(self) -> None:
        """Put the rows in order: by file, then by the second cell (a frame number, a box number)."""
        rows = self._rows()
        ordered = sorted(rows, key=lambda r: (r[0], _number(r[1])))
        if ordered != rows:
            with writing(self.path, self.flag, "the rows written so far are kept"):
                atomic_write_text(self.path, csv_text(self.header, ordered))


def _number(cell: str) -> float:
    try:
        return float(cell)
    except ValueError:
        return float("inf")
