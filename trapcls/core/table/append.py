"""The append-only prediction CSV that doubles as the resume file (predict's --out, watch's --all-csv)."""

from __future__ import annotations

import csv
import io
import logging
import os
from pathlib import Path

from trapcls.core.system.exceptions import DataError
from trapcls.core.system.fsutil import check_writable, fsync_dir, writing
from trapcls.core.table.layout import Layout, parse_header, short
from trapcls.core.table.read import check_one_model, read_table
from trapcls.core.table.row import Row

log = logging.getLogger(__name__)

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
        # Judged before a single byte changes: --out may name any file by mistake (a photo, a model, the labels).
        header = _check_ours(path, layout, self._flag, overwrite) if path.exists() else None
        if header is not None and not overwrite:
            self.repaired = _cut_torn_line(path)
        if overwrite or header is None:
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
            if layout.fmt == "field":
                check_one_model(path, parse_header(header, path).model, rows, layout.model)
            self.done = {row[0] for row in rows}
            self._fh = open(path, "a", newline="", encoding="utf-8")

    def append(self, rows: list[Row]) -> None:
        """Write one line per row and make them durable."""
        with writing(self.path, self._flag, ROWS_KEPT):
            self._writer.writerows(self.layout.cells(r) for r in rows)
            self._sync()
        self.done.update(self.layout.key(r) for r in rows)

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


def _check_ours(path: Path, layout: Layout, flag: str, overwrite: bool) -> list[str] | None:
    """What an existing `path` may become: its header when it is a trapcls CSV this run may resume (or, with
    `overwrite`, any trapcls predictions CSV), None when it is empty or only the start of this run's header (a
    run killed while writing it). DataError for anything else, which is left byte-identical."""
    if not path.is_file():
        raise DataError(f"{flag} {path} is not a regular file; give a CSV file path.")
    first, whole = _first_line(path)
    mine = _header_line(layout)
    if not whole and mine.startswith(first):
        return None
    try:
        header = next(csv.reader([first.decode("utf-8-sig")]), [])
        parse_header(header, path)
    except (UnicodeDecodeError, csv.Error, DataError):
        raise DataError(f"{flag} {path} exists and is not a trapcls predictions CSV: it was left untouched. Choose "
                        "another file name.") from None
    if not overwrite and header != layout.header():
        raise DataError(
            f"{path} already exists with other columns ({short(header)}; this run writes "
            f"{short(layout.header())}). It is from another model or format: pass --overwrite to replace "
            "it, or choose another --out."
        )
    return header


def _first_line(path: Path, limit: int = 1 << 24) -> tuple[bytes, bool]:
    """The first line of a file without its newline, and whether it had one (read no further than needed)."""
    with open(path, "rb") as fh:
        data = b""
        while len(data) < limit:
            chunk = fh.read(1 << 16)
            data += chunk
            if b"\n" in chunk or not chunk:
                break
    line, newline, _ = data.partition(b"\n")
    return line, bool(newline)


def _header_line(layout: Layout) -> bytes:
    buffer = io.StringIO()
    csv.writer(buffer, lineterminator="\n").writerow(layout.header())
    return buffer.getvalue().rstrip("\n").encode("utf-8")


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
