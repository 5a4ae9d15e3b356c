"""Rebuilding a damaged watch journal from the predictions.csv files, which hold every result.

`Rebuild.run` is called by the daemon when the journal cannot be trusted (see `Journal`'s
checks): the damaged file is kept aside, never deleted, and a new journal is built from the
camera folders' CSVs so that no file with a row is classified again.
"""

from __future__ import annotations

import logging
import os
import shutil
import time
from dataclasses import dataclass, field, replace
from pathlib import Path, PurePosixPath

from trapcls.core.model.bundle import Bundle
from trapcls.core.system.exceptions import DataError
from trapcls.core.system.fsutil import fsync_dir
from trapcls.core.system.names import neutralise
from trapcls.core.table.layout import Layout, parse_header, short
from trapcls.core.table.read import parse_table, read_table
from trapcls.core.table.row import Row
from trapcls.watch.journal import DONE, ERROR, UNKNOWN, Entry, Journal
from trapcls.watch.paths import CSV_NAME

log = logging.getLogger("trapcls.watch.daemon")  # the daemon's log: one stream for the operator


@dataclass
class _Recovered:
    """What the predictions.csv files in OUT hold, read to rebuild a damaged journal."""

    entries: list[Entry] = field(default_factory=list)
    imported: int = 0  # CSVs whose rows were taken
    changed: int = 0  # rows left out: their file changed after the CSV was written, so it is classified again
    unusable: list[tuple[Path, str]] = field(default_factory=list)  # CSVs that cannot be read, and why
    foreign: list[tuple[Path, str]] = field(default_factory=list)  # CSVs of another model, and which


class _OtherModel(Exception):
    """A predictions.csv written by another model (the message names it)."""


@dataclass
class Rebuild:
    """What a rebuild needs to know: where the inbox and CSVs are, and which model may have written them."""

    inbox: Path
    out: Path
    folder_depth: int
    layout: Layout
    bundle: Bundle
    max_attempts: int

    def run(self, path: Path, reason: str) -> None:
        """Rebuild a damaged journal from every predictions.csv in OUT, keeping the damaged file beside it.

        Each CSV row becomes a finished journal row (done, or an error not retried), so no file that
        has a row is classified again. A CSV of another model stops the daemon before anything is
        changed, as a journal of another model does: rebuilding would overwrite that model's results.
        A CSV that cannot be read is moved aside (its files are classified again).
        """
        found = self.read_csvs()
        if found.foreign:
            listed = "; ".join(f"{csv_path} ({model})" for csv_path, model in found.foreign[:3])
            raise DataError(f"The journal {path} is damaged ({reason}), and CSVs in {self.out} hold results of "
                            f"another model than {self.bundle.model_id!r}: {listed}. Rebuilding would replace them. "
                            "Run with that model's bundle (the journal is rebuilt from its CSVs), or move those CSVs "
                            "away (their files are then classified again), or use a new --out.")
        for csv_path, why in found.unusable:  # before the swap: if interrupted, the damaged journal is still there
            moved = aside_name(csv_path, "unusable")
            os.replace(csv_path, moved)
            fsync_dir(csv_path.parent)
            log.warning("%s cannot be imported (%s): moved it to %s; its files will be classified again",
                        csv_path, why, moved.name)
        temp = path.with_name(path.name + ".rebuilding")
        for stale in ("", "-wal", "-shm"):  # our own half-built file, from a rebuild that was interrupted
            temp.with_name(temp.name + stale).unlink(missing_ok=True)
        rebuilt = Journal(temp)
        rebuilt.bind_model(self.bundle.classes, self.bundle.model_id)
        rebuilt.restore(found.entries)
        rebuilt.detach()
        aside = replace_damaged(path, temp)
        log.warning("the journal %s was damaged (%s): moved it aside to %s and rebuilt it from the predictions.csv "
                    "files", path, reason, aside)
        statuses = [e.status for e in found.entries]
        log.warning("journal rebuilt: %d rows recovered from %d CSVs (%d done, %d errors; %d for files not in the "
                    "inbox now); %d files changed after their row was written will be classified again",
                    len(statuses), found.imported, statuses.count(DONE), statuses.count(ERROR),
                    sum(e.size == UNKNOWN for e in found.entries), found.changed)

    def read_csvs(self) -> _Recovered:
        """Every predictions.csv under OUT at --folder-depth (hidden folders skipped), read for a rebuild."""
        found = _Recovered()
        depth = self.folder_depth
        candidates = [self.out / CSV_NAME, *sorted(self.out.glob("/".join(["*"] * depth + [CSV_NAME])))] \
            if depth else [self.out / CSV_NAME]
        for csv_path in candidates:
            folder = csv_path.parent.relative_to(self.out)
            if not csv_path.is_file() or any(part.startswith(".") for part in folder.parts):
                continue
            if any((self.out / Path(*folder.parts[:n])).is_symlink() for n in range(1, len(folder.parts) + 1)):
                # a link where a camera folder was: its target is not ours to import, nor to move aside
                log.warning("%s: not imported, %s is a symbolic link", csv_path, folder)
                continue
            written = csv_path.stat().st_mtime_ns
            try:
                entries = self._csv_entries(csv_path, folder.as_posix(), written / 1e9)
            except _OtherModel as exc:
                found.foreign.append((csv_path, str(exc)))
                continue
            except DataError as exc:
                found.unusable.append((csv_path, str(exc).split(". ")[0]))  # the cause; its advice is predict's
                continue
            # A file modified after its CSV was written changed after it was classified: as with a sound
            # journal, it is classified again (a reused card numbering its frames from IMG_0001 again).
            current = [e for e in entries if e.mtime_ns <= written]
            found.changed += len(entries) - len(current)
            found.entries += current
            found.imported += 1
        return found

    def _csv_entries(self, csv_path: Path, folder: str, updated: float) -> list[Entry]:
        """One predictions.csv as finished journal rows; _OtherModel, or DataError saying why it cannot be used."""
        header, rows = read_table(csv_path)
        columns = parse_header(header, csv_path)
        mine = neutralise(self.bundle.model_id)
        others = sorted({row[columns.model] for row in rows} - {mine}) if columns.model is not None else []
        if columns.fmt == "field" and (others or columns.classes != tuple(map(neutralise, self.bundle.classes))):
            raise _OtherModel(", ".join(others) or f"classes {', '.join(columns.classes)}")
        if header not in (self.layout.header(), replace(self.layout, clips=True).header()):  # without clips, with
            raise DataError(f"its columns are not the ones this model writes ({short(header)})")
        return [self._csv_entry(row, folder, updated) for row in parse_table(csv_path, header, rows).rows]

    def _csv_entry(self, row: Row, folder: str, updated: float) -> Entry:
        """One CSV row as a finished journal row, with the size and mtime its file has now."""
        rel = row.path
        if not rel or PurePosixPath(rel).is_absolute() or ".." in PurePosixPath(rel).parts:
            raise DataError(f"the row {rel!r} names no file inside the inbox")
        path = rel if folder == "." else f"{folder}/{rel}"
        try:
            st = os.stat(self.inbox / path)
            size, mtime_ns = st.st_size, st.st_mtime_ns
        except OSError:  # gone, or on a share not mounted now: the row stands (Journal.observe takes it when seen)
            size = mtime_ns = UNKNOWN
        known = {"path": path, "folder": folder, "size": size, "mtime_ns": mtime_ns, "captured": row.captured or None,
                 "updated": updated, "clip": row.clip}
        if row.ok:
            return Entry(status=DONE, probs=[float(p) for p in row.probs], attempts=0, last_error=None, **known)
        return Entry(status=ERROR, probs=None, attempts=self.max_attempts, last_error=row.error or "error", **known)


def aside_name(path: Path, tag: str) -> Path:
    """`<name>.<tag>-YYYYmmddTHHMMSS` beside `path` (with -2, -3... if taken): where a damaged file is kept."""
    stem = f"{path.name}.{tag}-{time.strftime('%Y%m%dT%H%M%S')}"
    target, n = path.with_name(stem), 1
    while any(target.with_name(target.name + s).exists() for s in ("", "-wal", "-shm")):
        n += 1
        target = path.with_name(f"{stem}-{n}")
    return target


def replace_damaged(damaged: Path, rebuilt: Path) -> Path:
    """Put the detached journal `rebuilt` in place of `damaged`, kept beside it as `<name>.corrupt-<time>` with
    its -wal and -shm; returns where it went. Nothing is deleted.

    Safe to interrupt at any step: the -wal and -shm go first (a stale WAL beside the new file would be
    replayed into it), then the damaged file gets its second name by a link (a copy where links are not
    supported), and the rebuilt one replaces it by one rename. Until that rename the damaged file is in
    place and the next start rebuilds again.
    """
    target = aside_name(damaged, "corrupt")
    for suffix in ("-wal", "-shm"):
        sibling = damaged.with_name(damaged.name + suffix)
        if sibling.exists():
            os.replace(sibling, target.with_name(target.name + suffix))
    try:
        os.link(damaged, target)
    except OSError:  # exFAT, some FUSE mounts: no hard links
        shutil.copy2(damaged, target)
    os.replace(rebuilt, damaged)
    fsync_dir(damaged.parent)
    return target
