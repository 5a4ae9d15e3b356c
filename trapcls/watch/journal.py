"""The watch daemon's journal: one SQLite row per file, the source of truth for what is done.

SQLite in WAL mode with synchronous=FULL: a committed transaction survives a power cut, and
`trapcls status` can read while the daemon writes. A file is keyed by its path relative to the
inbox and remembered with the size and mtime it had when classified, so a file that changes
afterwards is classified again. Results and the "this folder's CSV is stale" flag are written in
one transaction, so after a crash the daemon knows exactly which CSVs to rewrite.
"""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from trapcls.core.exceptions import DataError

SCHEMA_VERSION = 1
PENDING, DONE, ERROR = "pending", "done", "error"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS files (
    path TEXT PRIMARY KEY,          -- relative to the inbox, '/'-separated
    folder TEXT NOT NULL,           -- the camera folder whose CSV lists it
    size INTEGER NOT NULL,
    mtime_ns INTEGER NOT NULL,
    status TEXT NOT NULL CHECK (status IN ('pending', 'done', 'error')),
    probs TEXT,                     -- JSON list in bundle class order (done)
    captured TEXT,
    attempts INTEGER NOT NULL DEFAULT 0,
    last_error TEXT,
    retry_after REAL NOT NULL DEFAULT 0,
    updated REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS files_status ON files (status);
CREATE TABLE IF NOT EXISTS folders (
    folder TEXT PRIMARY KEY,
    dirty INTEGER NOT NULL DEFAULT 1,
    written REAL
);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
"""


@dataclass(frozen=True)
class Entry:
    """One journal row."""

    path: str
    folder: str
    size: int
    mtime_ns: int
    status: str
    probs: list[float] | None
    captured: str | None
    attempts: int
    last_error: str | None
    updated: float


class Journal:
    """The daemon's durable record (one writer: the daemon; any number of readers)."""

    def __init__(self, path: Path, *, readonly: bool = False) -> None:
        self.path = path
        if readonly:
            if not path.is_file():
                raise DataError(f"No journal at {path}: has `trapcls watch` run with this --out folder?")
            self._db = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=30)
        else:
            path.parent.mkdir(parents=True, exist_ok=True)
            self._db = sqlite3.connect(path, timeout=30, isolation_level=None)  # explicit transactions
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=FULL")  # NORMAL may lose the last commits on power loss
            self._db.executescript(_SCHEMA)
            self._db.execute("INSERT OR IGNORE INTO meta VALUES ('schema_version', ?)", (str(SCHEMA_VERSION),))

    def close(self) -> None:
        self._db.close()

    # --- identity -------------------------------------------------------------------------------

    def bind_model(self, classes: tuple[str, ...], model: str) -> None:
        """Tie the journal to one model (its class list and `Bundle.model_id`); another model is refused, so
        the CSVs rebuilt from the journal never attribute one model's results to another."""
        advice = "Use a new --out folder for this model, or move the old one away to reclassify everything."
        with self._transaction():
            row = self._db.execute("SELECT value FROM meta WHERE key = 'classes'").fetchone()
            if row is None:
                self._db.execute("INSERT INTO meta VALUES ('classes', ?)", (json.dumps(list(classes)),))
            elif json.loads(row[0]) != list(classes):
                raise DataError(f"The journal {self.path} was written with another model (classes "
                                f"{', '.join(json.loads(row[0]))}). {advice}")
            row = self._db.execute("SELECT value FROM meta WHERE key = 'model'").fetchone()
            if row is None:  # a new journal, or one from before models were recorded: this model from now on
                self._db.execute("INSERT INTO meta VALUES ('model', ?)", (model,))
            elif row[0] != model:
                raise DataError(f"The journal {self.path} was written by the model {row[0]!r}; this is {model!r}. "
                                f"{advice}")

    def classes(self) -> list[str]:
        row = self._db.execute("SELECT value FROM meta WHERE key = 'classes'").fetchone()
        return json.loads(row[0]) if row else []

    # --- what is on disk ------------------------------------------------------------------------

    def observe(self, files: Iterable[tuple[str, str, int, int]]) -> int:
        """Record files seen on disk as (path, folder, size, mtime_ns); new or changed ones become pending.

        Returns how many became pending. A done file whose size or mtime changed is redone.
        """
        now, queued = time.time(), 0
        with self._transaction():
            for path, folder, size, mtime_ns in files:
                row = self._db.execute("SELECT size, mtime_ns FROM files WHERE path = ?", (path,)).fetchone()
                if row is not None and row[0] == size and row[1] == mtime_ns:
                    continue
                self._db.execute(
                    "INSERT INTO files (path, folder, size, mtime_ns, status, updated) "
                    "VALUES (?, ?, ?, ?, 'pending', ?)"
                    " ON CONFLICT(path) DO UPDATE SET size = excluded.size, mtime_ns = excluded.mtime_ns,"
                    " status = 'pending', probs = NULL, captured = NULL, attempts = 0, last_error = NULL,"
                    " retry_after = 0, updated = excluded.updated",
                    (path, folder, size, mtime_ns, now))
                queued += 1
        return queued

    def pending(self, limit: int | None = None) -> list[Entry]:
        """Pending files whose retry time has come, oldest first."""
        sql = "SELECT * FROM files WHERE status = 'pending' AND retry_after <= ? ORDER BY updated, path"
        rows = self._db.execute(sql + (f" LIMIT {int(limit)}" if limit else ""), (time.time(),)).fetchall()
        return [_entry(r) for r in rows]

    def forget(self, path: str) -> None:
        """Drop a pending file that vanished before it was classified (moved away, or a temp name)."""
        with self._transaction():
            self._db.execute("DELETE FROM files WHERE path = ? AND status = 'pending'", (path,))

    def defer(self, path: str, seconds: float) -> None:
        """Do not offer a pending file again for `seconds` (it changed after it settled)."""
        with self._transaction():
            self._db.execute("UPDATE files SET retry_after = ? WHERE path = ? AND status = 'pending'",
                             (time.time() + seconds, path))

    def pending_count(self) -> int:
        return self._db.execute("SELECT COUNT(*) FROM files WHERE status = 'pending'").fetchone()[0]

    # --- results --------------------------------------------------------------------------------

    def record(self, done: list[tuple[Entry, list[float], str | None]],
               failed: list[tuple[Entry, str, str | None]], *,
               max_attempts: int, backoff: float) -> list[Entry]:
        """Store results and failures in one transaction and mark their folders' CSVs stale.

        `done` holds (entry, probabilities, capture time), `failed` (entry, error, capture time if readable).
        A result counts only if the file still has the size and mtime it was classified with.
        A failure is retried after `backoff * 2**attempts` seconds until `max_attempts`, then
        becomes an error row. Returns the entries that became final errors.
        """
        now, final = time.time(), []
        with self._transaction():
            for entry, probs, captured in done:
                cur = self._db.execute(
                    "UPDATE files SET status = 'done', probs = ?, captured = ?, last_error = NULL, updated = ?"
                    " WHERE path = ? AND size = ? AND mtime_ns = ? AND status = 'pending'",
                    (json.dumps([float(p) for p in probs]), captured, now, entry.path, entry.size,
                     entry.mtime_ns))
                if cur.rowcount:
                    self._dirty(entry.folder)
            for entry, error, captured in failed:
                attempts = entry.attempts + 1
                status = ERROR if attempts >= max_attempts else PENDING
                cur = self._db.execute(
                    "UPDATE files SET status = ?, attempts = ?, last_error = ?, captured = ?, retry_after = ?,"
                    " updated = ? WHERE path = ? AND size = ? AND mtime_ns = ? AND status = 'pending'",
                    (status, attempts, error, captured, now + backoff * 2 ** attempts, now, entry.path, entry.size,
                     entry.mtime_ns))
                if cur.rowcount and status == ERROR:
                    self._dirty(entry.folder)
                    final.append(entry)
        return final

    def _dirty(self, folder: str) -> None:
        self._db.execute("INSERT INTO folders (folder, dirty) VALUES (?, 1) "
                         "ON CONFLICT(folder) DO UPDATE SET dirty = 1",
                         (folder,))

    def dirty_folders(self) -> list[str]:
        return [r[0] for r in self._db.execute("SELECT folder FROM folders WHERE dirty = 1 ORDER BY folder")]

    def written(self, folder: str, *, as_of: float) -> None:
        """The folder's CSV was rewritten from rows committed up to `as_of`; clear the flag unless newer ones came."""
        with self._transaction():
            newer = self._db.execute("SELECT 1 FROM files WHERE folder = ? AND updated > ? AND status != 'pending'"
                                     " LIMIT 1", (folder, as_of)).fetchone()
            self._db.execute("UPDATE folders SET dirty = ?, written = ? WHERE folder = ?",
                             (1 if newer else 0, time.time(), folder))

    def finished(self, folder: str | None = None) -> list[Entry]:
        """Done and error rows (of one folder, or all), sorted by path: what the CSVs list."""
        sql = "SELECT * FROM files WHERE status IN ('done', 'error')"
        args: tuple = ()
        if folder is not None:
            sql, args = sql + " AND folder = ?", (folder,)
        return [_entry(r) for r in self._db.execute(sql + " ORDER BY path", args)]

    # --- reporting ------------------------------------------------------------------------------

    def stats(self, *, window: float = 600.0) -> dict:
        """Counts by status, last activity, recent throughput and the failing files."""
        counts = dict.fromkeys((PENDING, DONE, ERROR), 0)
        counts.update(dict(self._db.execute("SELECT status, COUNT(*) FROM files GROUP BY status").fetchall()))
        last = self._db.execute("SELECT MAX(updated) FROM files WHERE status != 'pending'").fetchone()[0]
        since = time.time() - window
        recent = self._db.execute("SELECT COUNT(*), MIN(updated), MAX(updated) FROM files WHERE status != 'pending'"
                                  " AND updated >= ?", (since,)).fetchone()
        rate = recent[0] / max(recent[2] - recent[1], 1.0) if recent[0] > 1 else 0.0
        failing = self._db.execute(
            "SELECT path, status, attempts, last_error FROM files WHERE last_error IS NOT NULL ORDER BY updated DESC"
            " LIMIT 50").fetchall()
        return {"backlog": counts[PENDING], "done": counts[DONE], "errors": counts[ERROR], "last_activity": last,
                "files_per_s_recent": rate, "recent_window_s": window,
                "failing": [{"path": p, "status": s, "attempts": a, "error": e} for p, s, a, e in failing]}

    def integrity_check(self) -> str:
        return self._db.execute("PRAGMA integrity_check").fetchone()[0]

    # --- plumbing -------------------------------------------------------------------------------

    def _transaction(self):
        return _Transaction(self._db)


class _Transaction:
    """BEGIN IMMEDIATE ... COMMIT (ROLLBACK on error): one durable step."""

    def __init__(self, db: sqlite3.Connection) -> None:
        self._db = db

    def __enter__(self) -> None:
        self._db.execute("BEGIN IMMEDIATE")

    def __exit__(self, kind, value, traceback) -> None:
        self._db.execute("COMMIT" if kind is None else "ROLLBACK")


def _entry(row: tuple) -> Entry:
    path, folder, size, mtime_ns, status, probs, captured, attempts, last_error, _, updated = row
    return Entry(path=path, folder=folder, size=size, mtime_ns=mtime_ns, status=status,
                 probs=json.loads(probs) if probs else None, captured=captured, attempts=attempts,
                 last_error=last_error, updated=updated)
