"""What the watch daemon writes from its journal: each camera folder's predictions.csv (and events.csv), and --all-csv.

The journal is the source of truth; a camera folder's CSVs are rebuilt from it (temp file, fsync,
replace, fsync the directory), so a crash at any moment leaves either the old or the new file.
They are written relative to the camera folder opened without following links (paths.open_folder),
so a folder swapped for a link while its card was processed is never written through. A camera
folder that cannot be written (a link now, a folder where the CSV goes, no permission) is reported
and set aside: its frames are still classified into the journal, its CSVs are tried again every
--rescan-interval (at least ASIDE_RETRY_MIN s) and at the next start, and the other cameras go on.
A fault of OUT's disk as a whole (full, read-only, gone) instead pauses the daemon (trapcls.watch.guard).
--all-csv is a log appended to in whole fsynced batches; after a crash it is caught up from the journal.

Video clips: as in every trapcls CSV, the clip columns (frames, duration_s, frame_rate, best_frame) appear with
the first clip, so a frames-only watch writes what it always wrote. A camera folder's CSV is rewritten whole
anyway; --all-csv, appended to for months, gets them in one atomic rewrite when its first clip comes (a new one
as one written by a trapcls from before clips), every row kept with the four cells empty
(`Writers._add_clip_columns`).
"""

from __future__ import annotations

import csv
import logging
import os
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from trapcls.core.system.fsutil import atomic_write_at, atomic_write_text, csv_text, named, writing
from trapcls.core.system.names import display
from trapcls.core.table.append import ROWS_KEPT, CsvAppender
from trapcls.core.table.layout import CLIP_TAIL, Layout
from trapcls.core.table.read import parse_table, read_table
from trapcls.core.table.row import Row
from trapcls.results.events import event_row, events_header, group_events
from trapcls.watch.config import WatchConfig
from trapcls.watch.journal import Entry, Journal
from trapcls.watch.paths import CSV_NAME, EVENTS_NAME, open_folder

log = logging.getLogger("trapcls.watch.daemon")  # the daemon's log: one stream for the operator

ASIDE_RETRY_MIN = 1.0  # seconds: a camera folder set aside is tried again at most this often


@dataclass
class _Aside:
    """A camera folder whose CSVs could not be written: why, since when, and when to try again (monotonic)."""

    reason: str
    since: float
    retry: float


class Writers:
    """The CSVs of one watch: the per-folder CSVs under OUT, in `layout` (with the clip columns where there are
    clips: `clip_layout`), and the optional --all-csv log.

    `whole_disk(exc)` says whether a failed write in a camera folder is a fault of OUT's disk as a whole
    (trapcls.watch.guard.DiskGuard.whole_disk): then it is raised, and the daemon pauses.
    """

    def __init__(self, config: WatchConfig, out: Path, layout: Layout, *,
                 whole_disk: Callable[[BaseException], bool] = lambda exc: True) -> None:
        self.config, self.out, self.layout = config, out, replace(layout, clips=False)
        self.clip_layout = replace(layout, clips=True)
        self._whole_disk = whole_disk
        self._all: CsvAppender | None = None  # --all-csv
        self.aside: dict[str, _Aside] = {}  # camera folders whose CSVs cannot be written now

    # --- the camera folders' CSVs ---------------------------------------------------------------

    def flush(self, journal: Journal) -> int:
        """Rewrite the CSV (and events.csv) of every folder with new results, atomically and durably; how many.

        The folder stays marked stale until both files are written, so a crash between them is
        mended by the next start's flush, and so is a folder set aside. The caller checks first that
        OUT is there (`DiskGuard.check_out`): on a bare mount point the files would go to the wrong disk.
        """
        written = 0
        for folder in journal.dirty_folders():
            aside = self.aside.get(folder)
            if aside is not None and time.monotonic() < aside.retry:
                continue
            as_of = time.time()
            try:
                rows = self._write(journal, folder)
            except OSError as exc:
                if self._whole_disk(exc):
                    raise  # the daemon pauses (trapcls.watch.guard)
                self._set_aside(folder, exc)
                continue
            journal.written(folder, as_of=as_of)
            written += 1
            if aside is not None:
                del self.aside[folder]
                log.warning("%s: its CSVs are written again, after %.0f s set aside", self._where(folder),
                            time.monotonic() - aside.since)
            log.debug("wrote %s (%d rows)", self.out / folder / CSV_NAME, rows)
        return written

    def _write(self, journal: Journal, folder: str) -> int:
        """predictions.csv (and events.csv) of one camera folder, inside the folder opened without following
        links; how many rows."""
        rows = journal.finished(folder)
        prefix = "" if folder == "." else folder + "/"
        layout = self.clip_layout if any(entry.clip is not None for entry in rows) else self.layout
        cells = [layout.cells(row_of(entry, entry.path[len(prefix):])) for entry in rows]
        files = {CSV_NAME: csv_text(layout.header(), cells)}
        if self.config.events:
            files[EVENTS_NAME] = self._events(folder, layout, cells)
        fd = open_folder(self.out, folder)
        try:
            for name, text in files.items():
                try:
                    atomic_write_at(fd, name, text.encode("utf-8"))
                except OSError as exc:
                    raise named(exc, self.out / folder / name) from None
        finally:
            os.close(fd)
        return len(rows)

    def _events(self, folder: str, layout: Layout, cells: list[list[str]]) -> str:
        """events.csv for one camera folder (its deployment), from its predictions.csv's cells exactly as written,
        read back as `trapcls events` reads the file: the two agree to the last digit on every CPU. The paths are
        relative to the camera folder already, and the event ids keep them whole."""
        table = parse_table(self.out / folder / CSV_NAME, layout.header(), cells)
        grouped = group_events(table, gap=self.config.gap, deployment=lambda _: folder, relative=True)
        rule = self.layout.blank_rule
        return csv_text(events_header(table.classes, table.blank),
                        (event_row(e, table.classes, table.blank, rule=rule, model=table.model) for e in grouped))

    def _set_aside(self, folder: str, exc: OSError) -> None:
        """Report a camera folder that cannot be written (once per reason) and try it again later."""
        reason = f"{exc.strerror or exc}: {display(os.fsdecode(exc.filename or self.out / folder))}"
        every = max(self.config.rescan_interval, ASIDE_RETRY_MIN)
        now, old = time.monotonic(), self.aside.get(folder)
        self.aside[folder] = _Aside(reason, old.since if old else now, now + every)
        if old is not None and old.reason == reason:
            log.debug("%s: still cannot write its CSVs (%s)", self._where(folder), reason)
            return
        log.warning("%s: cannot write its CSVs (%s). That camera is set aside: its frames are still classified and "
                    "kept in the journal, and its CSVs are tried again every %.0f s and at the next start; the other "
                    "cameras go on", self._where(folder), reason, every)

    def _where(self, folder: str) -> str:
        return display(str(self.out if folder == "." else folder))

    # --- --all-csv ------------------------------------------------------------------------------

    def open_log(self, journal: Journal) -> None:
        """(Re)open --all-csv, if asked for, and append the results the journal has but the CSV does not (a crash,
        or a pause, came between)."""
        self.close_log()
        self._all = None
        if not self.config.all_csv:
            return
        path = self.config.all_csv
        clips = path.is_file() and _header(path) == self.clip_layout.header()  # it holds a clip already
        self._all = CsvAppender(path, self.clip_layout if clips else self.layout, flag="--all-csv")
        missing = [e for e in journal.finished() if self.layout.key(Row(e.path, None)) not in self._all.done]
        if missing:
            self._append([row_of(e, e.path) for e in missing])

    def log(self, results: Iterable[Row], finished: set[str]) -> None:
        """Append to --all-csv the results of a batch whose files are finished (done, or given up on)."""
        if self._all is not None:
            self._append([r for r in results if r.path in finished])

    def _append(self, rows: list[Row]) -> None:
        if any(r.clip is not None for r in rows) and not self._all.layout.clips:
            self._add_clip_columns()
        self._all.append(rows)

    def _add_clip_columns(self) -> None:
        """The first clip for --all-csv: rewrite it with the clip columns (temp file, fsync, replace), each row as
        it was plus four empty cells, and append to it from now on. A crash before the replace leaves the file as
        it was; the clip, not in it then, is appended at the next start (`open_log`), which comes here again."""
        path = self.config.all_csv
        self._all.close()
        with writing(path, "--all-csv", ROWS_KEPT):
            header, rows = read_table(path)
            atomic_write_text(path, csv_text(self.clip_layout.header(), (row + [""] * len(CLIP_TAIL) for row in rows)))
        self._all = CsvAppender(path, self.clip_layout, flag="--all-csv")
        log.info("--all-csv %s: added the clip columns (%s) for its first video clip; its %d rows are kept, with "
                 "those cells empty", display(str(path)), ", ".join(CLIP_TAIL), len(rows))

    def close_log(self) -> None:
        """Let go of --all-csv (every append was fsynced: nothing is left to write; a torn last line is cut when it
        is opened again)."""
        if self._all is not None:
            self._all.close_quietly()


def row_of(entry: Entry, rel: str) -> Row:
    """A journal entry as the row its camera folder's CSV lists (`rel`: its path inside that folder)."""
    if entry.status == "done":
        return Row(rel, np.asarray(entry.probs), captured=entry.captured or "", clip=entry.clip)
    return Row(rel, None, captured=entry.captured or "", error=entry.last_error or "error", clip=entry.clip)


def _header(path: Path) -> list[str] | None:
    """The first row of a CSV (None when it cannot be read as one: CsvAppender then says what is wrong)."""
    try:
        with open(path, "rb") as fh:
            first = fh.read(1 << 16).split(b"\n", 1)[0]
        return next(csv.reader([first.decode("utf-8-sig")]), None)
    except (OSError, UnicodeDecodeError, csv.Error):
        return None
