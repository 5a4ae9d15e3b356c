"""What the watch daemon writes from its journal: each camera folder's predictions.csv (and events.csv), and --all-csv.

The journal is the source of truth; a camera folder's CSVs are rebuilt from it (temp file, fsync,
replace, fsync the directory), so a crash at any moment leaves either the old or the new file.
--all-csv is a log appended to in whole fsynced batches; after a crash it is caught up from the journal.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable
from pathlib import Path

import numpy as np

from trapcls.core.system.fsutil import write_csv
from trapcls.core.table.append import CsvAppender
from trapcls.core.table.layout import Layout
from trapcls.core.table.read import parse_table
from trapcls.core.table.row import Row
from trapcls.results.events import group_events, write_events
from trapcls.watch.config import WatchConfig
from trapcls.watch.journal import Entry, Journal
from trapcls.watch.paths import CSV_NAME, EVENTS_NAME

log = logging.getLogger("trapcls.watch.daemon")  # the daemon's log: one stream for the operator


class Writers:
    """The CSVs of one watch: the per-folder CSVs under OUT, in `layout`, and the optional --all-csv log."""

    def __init__(self, config: WatchConfig, out: Path, layout: Layout) -> None:
        self.config, self.out, self.layout = config, out, layout
        self._all: CsvAppender | None = None  # --all-csv

    # --- the camera folders' CSVs ---------------------------------------------------------------

    def flush(self, journal: Journal) -> int:
        """Rewrite the CSV (and events.csv) of every folder with new results, atomically and durably; how many.

        The folder stays marked stale until both files are written, so a crash between them is
        mended by the next start's flush. The caller checks first that OUT is there
        (`DiskGuard.check_out`): on a bare mount point the files would go to the wrong disk.
        """
        written = 0
        for folder in journal.dirty_folders():
            as_of = time.time()
            rows = journal.finished(folder)
            target = self.out / folder / CSV_NAME
            prefix = "" if folder == "." else folder + "/"
            cells = [self.layout.cells(row_of(entry, entry.path[len(prefix):])) for entry in rows]
            write_csv(target, self.layout.header(), cells)
            if self.config.events:
                self._write_events(folder, cells)
            journal.written(folder, as_of=as_of)
            written += 1
            log.debug("wrote %s (%d rows)", target, len(rows))
        return written

    def _write_events(self, folder: str, cells: list[list[str]]) -> None:
        """events.csv for one camera folder (its deployment), from its predictions.csv's cells exactly as written,
        read back as `trapcls events` reads the file: the two agree to the last digit on every CPU."""
        table = parse_table(self.out / folder / CSV_NAME, self.layout.header(), cells)
        grouped = group_events(table, gap=self.config.gap, deployment=lambda _: folder)
        write_events(grouped, table, self.out / folder / EVENTS_NAME, rule=self.layout.blank_rule)

    # --- --all-csv ------------------------------------------------------------------------------

    def open_log(self, journal: Journal) -> None:
        """(Re)open --all-csv, if asked for, and append the results the journal has but the CSV does not (a crash,
        or a pause, came between)."""
        self.close_log()
        self._all = None
        if not self.config.all_csv:
            return
        self._all = CsvAppender(self.config.all_csv, self.layout, flag="--all-csv")
        missing = [e for e in journal.finished() if self.layout.key(Row(e.path, None)) not in self._all.done]
        if missing:
            self._all.append([row_of(e, e.path) for e in missing])

    def log(self, results: Iterable[Row], finished: set[str]) -> None:
        """Append to --all-csv the results of a batch whose files are finished (done, or given up on)."""
        if self._all is not None:
            self._all.append([r for r in results if r.path in finished])

    def close_log(self) -> None:
        """Let go of --all-csv (every append was fsynced: nothing is left to write; a torn last line is cut when it
        is opened again)."""
        if self._all is not None:
            self._all.close_quietly()


def row_of(entry: Entry, rel: str) -> Row:
    """A journal entry as the row its camera folder's CSV lists (`rel`: its path inside that folder)."""
    if entry.status == "done":
        return Row(rel, np.asarray(entry.probs), captured=entry.captured or "")
    return Row(rel, None, captured=entry.captured or "", error=entry.last_error or "error")
