"""The watch daemon's journal: one SQLite row per file, the source of truth for what is done.

SQLite in WAL mode with synchronous=FULL: a committed transaction survives a power cut, and
`trapcls status` can read while the daemon writes. A file is keyed by its path relative to the
inbox and remembered with the size and mtime it had when classified, so a file that changes
afterwards is classified again. Results and the "this folder's CSV is stale" flag are written in
one transaction, so after a crash the daemon knows exactly which CSVs to rewrite.

A journal that cannot be read (not a database, malformed, truncated, tables missing, a failed
`PRAGMA quick_check`) raises `CorruptJournal`; the daemon then rebuilds it from the CSVs
(`restore`) and puts the rebuilt file in its place (trapcls.watch.recovery.replace_damaged), which keeps the
damaged one beside it. A journal of a newer schema is refused, never misread.

Names are stored as text; a name whose bytes are not UTF-8 (a Latin-1 `café.jpg` from a card: byte 0xE9), which
Python holds with lone surrogates and SQLite cannot take as text, is stored as a BLOB of its bytes
(trapcls.watch.store.stored, read back by name_of): lossless, one-to-one (a BLOB never equals a text), and a journal
written before holds text only, so it reads as it always did.

Video clips have a row in `files` like frames, and one in `clips` (every clip the journal holds, pending or not):
what a clip's CSV row holds besides a frame's (frames sampled, duration, frame rate, best frame). A table of its
own rather than columns of `files`, so a journal written before, and a trapcls from before reading this one,
work as they did.
"""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

from trapcls.core.frames.discover import is_clip
from trapcls.core.system.exceptions import DataError
from trapcls.core.system.fsutil import free_mib, storage_fault
from trapcls.core.table.row import Clip
from trapcls.watch.store import Transaction, name_of, stored

SCHEMA_VERSION = 1
PENDING, DONE, ERROR = "pending", "done", "error"
UNKNOWN = -1  # size and mtime_ns of a row rebuilt from a CSV whose file was not there: taken as it is when seen
TABLES = ("files", "folders", "meta")
# SQLite's codes for a file that is damaged, as opposed to locked, read-only or not permitted.
_DAMAGED = ("SQLITE_CORRUPT", "SQLITE_NOTADB", "SQLITE_IOERR_SHORT_READ")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS files (
    path TEXT PRIMARY KEY,          -- relative to the inbox, '/'-separated (a BLOB when not UTF-8: store.stored)
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
-- the queue in the order `pending` takes it: the next few without sorting every pending row (200,000 at a start)
CREATE INDEX IF NOT EXISTS files_queue ON files (status, updated, path);
CREATE TABLE IF NOT EXISTS folders (
    folder TEXT PRIMARY KEY,
    dirty INTEGER NOT NULL DEFAULT 1,
    written REAL
);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS clips (
    path TEXT PRIMARY KEY,          -- a video clip's files.path; the rest is NULL until it is classified
    frames INTEGER,
    duration REAL,
    frame_rate REAL,
    best_frame INTEGER
);
"""
# Not in TABLES: a journal written before clips were classified has no clips table (and no clip).
# Not in _SCHEMA or TABLES: made by the first Journal.note_unclassified, so older journals stay valid.
_UNCLASSIFIED = ("CREATE TABLE IF NOT EXISTS unclassified (folder TEXT PRIMARY KEY, videos INTEGER NOT NULL, "
                 "others INTEGER NOT NULL, examples TEXT NOT NULL, updated REAL NOT NULL)")


class CorruptJournal(DataError):
    """The journal file is damaged; `reason` says how. The daemon rebuilds it, `trapcls status` reports it."""

    def __init__(self, path: Path, reason: str) -> None:
        self.path, self.reason = path, reason
        super().__init__(f"The journal {path} is damaged ({reason}). Start `trapcls watch` with this --out: it "
                         "moves the damaged file aside and rebuilds the journal from the predictions.csv files.")


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
    clip: Clip | None = None  # a video clip's (finished: its row's clip cells; Clip() for a clip that failed)


class Journal:
    """The daemon's durable record (one writer: the daemon; any number of readers)."""

    def __init__(self, path: Path, *, readonly: bool = False) -> None:
        """Open (or create) the journal; CorruptJournal if it is damaged, DataError if it is newer or cannot be opened.

        Read-only (`trapcls status`) checks the schema and tables only; the daemon also runs
        `PRAGMA quick_check` (about 25 ms for 20,000 rows), which finds damage in any page.
        """
        self.path = path
        existed = path.exists()
        if readonly and not path.is_file():
            raise DataError(f"No journal at {path}: has `trapcls watch` run with this --out folder?")
        if not readonly:
            path.parent.mkdir(parents=True, exist_ok=True)
        try:
            self._db = (sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=30) if readonly else
                        sqlite3.connect(path, timeout=30, isolation_level=None))  # explicit transactions
        except sqlite3.Error as exc:
            raise _open_error(path, exc) from exc
        try:
            if existed:
                self._check(thorough=not readonly)
            if not readonly:
                self._db.execute("PRAGMA journal_mode=WAL")
                self._db.execute("PRAGMA synchronous=FULL")  # NORMAL may lose the last commits on power loss
                self._db.executescript(_SCHEMA)
                self._db.execute("INSERT OR IGNORE INTO meta VALUES ('schema_version', ?)", (str(SCHEMA_VERSION),))
        except BaseException as exc:
            self._db.close()
            if not existed and not readonly:
                _remove_new(path)  # made by this open (on a full disk): the next would take it for a damaged one
            if isinstance(exc, sqlite3.Error):
                raise _open_error(path, exc) from exc
            raise

    def _check(self, *, thorough: bool) -> None:
        """Refuse a newer schema (before anything is written), then look for damage."""
        tables = {r[0] for r in self._db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        if "meta" in tables:
            row = self._db.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
            version = row[0] if row else str(SCHEMA_VERSION)  # absent only if the first start stopped short
            if not version.isdigit():
                raise CorruptJournal(self.path, f"its schema_version is {version!r}")
            if int(version) > SCHEMA_VERSION:
                raise DataError(f"The journal {self.path} was written by a newer trapcls (schema {version}; this one "
                                f"reads {SCHEMA_VERSION}): upgrade trapcls or use a new --out.")
        missing = [t for t in TABLES if t not in tables]
        if missing:
            size = self.path.stat().st_size
            raise CorruptJournal(self.path, "the file is empty (0 bytes)" if size == 0 else
                                 f"{size} bytes without the table(s) {', '.join(missing)}")
        if thorough:
            try:
                problems = [r[0] for r in self._db.execute("PRAGMA quick_check(3)")]
            except sqlite3.DatabaseError as exc:  # some damage makes the check itself fail
                if not _damaged(exc):
                    raise
                problems = [str(exc)]
            if problems != ["ok"]:
                raise CorruptJournal(self.path, "quick_check: " + " ".join("; ".join(problems).split()))

    def close(self) -> None:
        self._db.close()

    def detach(self) -> None:
        """Close as one self-contained file (no -wal beside it), ready to be renamed into place."""
        self._db.execute("PRAGMA journal_mode=DELETE")
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
            for name, camera, size, mtime_ns in files:
                path, folder = stored(name), stored(camera)
                row = self._db.execute("SELECT size, mtime_ns, status FROM files WHERE path = ?", (path,)).fetchone()
                if row is not None and row[0] == size and row[1] == mtime_ns:
                    continue
                if row is not None and row[0] == UNKNOWN and row[2] != PENDING:
                    # Rebuilt from a CSV while the file was away (an unmounted share): its row stands, so take
                    # the file as it is now rather than classify it again.
                    self._db.execute("UPDATE files SET size = ?, mtime_ns = ? WHERE path = ?", (size, mtime_ns, path))
                    continue
                self._db.execute(
                    "INSERT INTO files (path, folder, size, mtime_ns, status, updated) "
                    "VALUES (?, ?, ?, ?, 'pending', ?)"
                    " ON CONFLICT(path) DO UPDATE SET size = excluded.size, mtime_ns = excluded.mtime_ns,"
                    " status = 'pending', probs = NULL, captured = NULL, attempts = 0, last_error = NULL,"
                    " retry_after = 0, updated = excluded.updated",
                    (path, folder, size, mtime_ns, now))
                if is_clip(name):  # a clip known from now on, its row's clip cells unknown until it is classified
                    self._db.execute("INSERT OR REPLACE INTO clips (path) VALUES (?)", (path,))
                queued += 1
        return queued

    def pending(self, limit: int | None = None, *, clips: bool | None = None) -> list[Entry]:
        """Pending files whose retry time has come, oldest first: all, or only the video clips (`clips` True), or
        only the frames (False), which the daemon classifies side by side."""
        # Clips: from the clips table (CROSS JOIN keeps that order), a few rows however long the queue of frames.
        source = "clips c CROSS JOIN files f ON f.path = c.path" if clips else "files f"
        kind = " AND f.path NOT IN (SELECT path FROM clips)" if clips is False else ""
        sql = (f"SELECT f.* FROM {source} WHERE f.status = 'pending' AND f.retry_after <= ?{kind} "
               "ORDER BY f.updated, f.path")
        rows = self._db.execute(sql + (f" LIMIT {int(limit)}" if limit else ""), (time.time(),)).fetchall()
        return [_entry(r) for r in rows]

    def forget(self, path: str) -> None:
        """Drop a pending file that vanished before it was classified (moved away, or a temp name)."""
        with self._transaction():
            self._db.execute("DELETE FROM files WHERE path = ? AND status = 'pending'", (stored(path),))
            self._db.execute("DELETE FROM clips WHERE path = ? AND path NOT IN (SELECT path FROM files)",
                             (stored(path),))

    def defer(self, path: str, seconds: float) -> None:
        """Do not offer a pending file again for `seconds` (it changed after it settled)."""
        with self._transaction():
            self._db.execute("UPDATE files SET retry_after = ? WHERE path = ? AND status = 'pending'",
                             (time.time() + seconds, stored(path)))

    def pending_count(self) -> int:
        return self._db.execute("SELECT COUNT(*) FROM files WHERE status = 'pending'").fetchone()[0]

    # --- results --------------------------------------------------------------------------------

    def record(self, done: list[tuple[Entry, list[float], str | None]],
               failed: list[tuple[Entry, str, str | None]], *,
               max_attempts: int, backoff: float, clips: Mapping[str, Clip] | None = None) -> list[Entry]:
        """Store results and failures in one transaction and mark their folders' CSVs stale.

        `done` holds (entry, probabilities, capture time), `failed` (entry, error, capture time if readable);
        `clips` the clip cells of the video clips among `done`, by path.
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
                    (json.dumps([float(p) for p in probs]), captured, now, stored(entry.path), entry.size,
                     entry.mtime_ns))
                if cur.rowcount:
                    self._dirty(entry.folder)
                    clip = (clips or {}).get(entry.path)
                    if clip is not None:
                        self._clip(entry.path, clip)
            for entry, error, captured in failed:
                attempts = entry.attempts + 1
                status = ERROR if attempts >= max_attempts else PENDING
                cur = self._db.execute(
                    "UPDATE files SET status = ?, attempts = ?, last_error = ?, captured = ?, retry_after = ?,"
                    " updated = ? WHERE path = ? AND size = ? AND mtime_ns = ? AND status = 'pending'",
                    (status, attempts, stored(error), captured, now + backoff * 2 ** attempts, now,
                     stored(entry.path), entry.size, entry.mtime_ns))
                if cur.rowcount and status == ERROR:
                    self._dirty(entry.folder)
                    final.append(entry)
        return final

    def restore(self, entries: Iterable[Entry]) -> int:
        """Insert finished rows recovered from the CSVs, in one transaction, and mark their folders written (the
        CSVs already hold them). Returns how many rows went in."""
        folders, count = set(), 0
        with self._transaction():
            for e in entries:
                self._db.execute(
                    "INSERT OR REPLACE INTO files (path, folder, size, mtime_ns, status, probs, captured, attempts,"
                    " last_error, retry_after, updated) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, 0, ?)",
                    (stored(e.path), stored(e.folder), e.size, e.mtime_ns, e.status,
                     json.dumps(e.probs) if e.probs else None, e.captured, e.attempts, stored(e.last_error),
                     e.updated))
                if e.clip is not None or is_clip(e.path):
                    self._clip(e.path, e.clip or Clip())
                folders.add(e.folder)
                count += 1
            for folder in folders:
                self._db.execute("INSERT INTO folders (folder, dirty, written) VALUES (?, 0, ?) "
                                 "ON CONFLICT(folder) DO UPDATE SET dirty = 0, written = excluded.written",
                                 (stored(folder), time.time()))
        return count

    def _clip(self, path: str, clip: Clip) -> None:
        """A video clip's row cells (Clip() for one that failed: its cells are NULL but for frames, 0)."""
        self._db.execute("INSERT OR REPLACE INTO clips VALUES (?, ?, ?, ?, ?)",
                         (stored(path), clip.frames or None, clip.duration, clip.frame_rate, clip.best_frame))

    def _dirty(self, folder: str) -> None:
        self._db.execute("INSERT INTO folders (folder, dirty) VALUES (?, 1) "
                         "ON CONFLICT(folder) DO UPDATE SET dirty = 1",
                         (stored(folder),))

    def dirty_folders(self) -> list[str]:
        return sorted(name_of(r[0]) for r in self._db.execute("SELECT folder FROM folders WHERE dirty = 1"))

    def written(self, folder: str, *, as_of: float) -> None:
        """The folder's CSV was rewritten from rows committed up to `as_of`; clear the flag unless newer ones came."""
        with self._transaction():
            newer = self._db.execute("SELECT 1 FROM files WHERE folder = ? AND updated > ? AND status != 'pending'"
                                     " LIMIT 1", (stored(folder), as_of)).fetchone()
            self._db.execute("UPDATE folders SET dirty = ?, written = ? WHERE folder = ?",
                             (1 if newer else 0, time.time(), stored(folder)))

    def known(self) -> dict[str, tuple[int, int]]:
        """path -> (size, mtime_ns) of every done or error row: what the daemon must not take again.

        Only three columns, not whole entries: with 200,000 files the probabilities would cost
        hundreds of MiB of a small box's memory for nothing.
        """
        sql = "SELECT path, size, mtime_ns FROM files WHERE status IN ('done', 'error')"
        return {name_of(path): (size, mtime_ns) for path, size, mtime_ns in self._db.execute(sql)}

    def finished(self, folder: str | None = None) -> list[Entry]:
        """Done and error rows (of one folder, or all), with a clip's cells, sorted by path: what the CSVs list."""
        sql = ("SELECT f.*, c.path IS NOT NULL, c.frames, c.duration, c.frame_rate, c.best_frame FROM files f "
               "LEFT JOIN clips c ON c.path = f.path WHERE f.status IN ('done', 'error')")
        args: tuple = ()
        if folder is not None:
            sql, args = sql + " AND f.folder = ?", (stored(folder),)
        return sorted((_entry(r) for r in self._db.execute(sql, args)), key=lambda e: e.path)

    # --- reporting ------------------------------------------------------------------------------

    def stats(self, *, window: float = 600.0) -> dict:
        """Counts by status, last activity, recent throughput and the failing files."""
        try:
            return self._stats(window)
        except sqlite3.DatabaseError as exc:  # damage the open-time checks did not reach
            raise _open_error(self.path, exc) from exc

    def _stats(self, window: float) -> dict:
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
        clips = dict.fromkeys((PENDING, DONE, ERROR), 0)
        if self._has("clips"):  # a journal from before clips were classified has none
            clips.update(self._db.execute("SELECT f.status, COUNT(*) FROM clips c JOIN files f ON f.path = c.path "
                                          "GROUP BY f.status").fetchall())
        return {"backlog": counts[PENDING], "done": counts[DONE], "errors": counts[ERROR], "last_activity": last,
                "clips": {"backlog": clips[PENDING], "done": clips[DONE], "errors": clips[ERROR]},
                "files_per_s_recent": rate, "recent_window_s": window,
                "failing": [{"path": name_of(p), "status": s, "attempts": a, "error": name_of(e)}
                            for p, s, a, e in failing]}

    def integrity_check(self) -> str:
        return self._db.execute("PRAGMA integrity_check").fetchone()[0]

    # --- files it does not classify (videos, other non-image files) ------------------------------
    # A table of its own, made by the first write, so a journal from before it reads as having none.

    def note_unclassified(self, counts: dict[str, tuple[int, int, list[str]]]) -> None:
        """Store per camera folder the (videos, other files, a few example names) the last scan found there;
        a folder with none is removed. Folders not named are left as they are."""
        now = time.time()
        with self._transaction():
            self._db.execute(_UNCLASSIFIED)
            for folder, (videos, others, examples) in counts.items():
                if videos or others:
                    self._db.execute("INSERT OR REPLACE INTO unclassified VALUES (?, ?, ?, ?, ?)",
                                     (stored(folder), videos, others, json.dumps(examples), now))
                else:
                    self._db.execute("DELETE FROM unclassified WHERE folder = ?", (stored(folder),))

    def unclassified(self) -> dict[str, dict]:
        """What note_unclassified stored, by folder: {"videos": n, "others": n, "examples": [names]}."""
        try:
            if not self._has("unclassified"):
                return {}
            rows = self._db.execute("SELECT folder, videos, others, examples FROM unclassified ORDER BY folder")
            return {name_of(f): {"videos": v, "others": o, "examples": json.loads(e)} for f, v, o, e in rows}
        except sqlite3.DatabaseError as exc:
            raise _open_error(self.path, exc) from exc

    # --- plumbing -------------------------------------------------------------------------------

    def _has(self, table: str) -> bool:
        return self._db.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?",
                                (table,)).fetchone() is not None

    def _transaction(self):
        return Transaction(self._db)


def _open_error(path: Path, exc: sqlite3.Error) -> DataError:
    """CorruptJournal for a damaged file; a plain DataError (nothing is moved) for a locked or forbidden one."""
    if _damaged(exc):
        return CorruptJournal(path, str(exc))
    if disk_full(exc, path):
        return DataError(f"Cannot open the journal {path}: its disk is full ({free_mib(path) or 0:.1f} MiB free), "
                         "and SQLite needs a little room even to read it. Free some space there.")
    return DataError(f"Cannot open the journal {path}: {exc}. Check that this user may read and write "
                     f"{path.parent} and that no other program holds the journal.")


def disk_full(exc: BaseException, path: Path) -> bool:
    """Whether `exc` comes from a full disk at `path`. SQLite reports a full disk as SQLITE_FULL, but as a plain
    I/O error when it cannot extend its -shm file: with (almost) no room left, that is the full disk too."""
    fault = storage_fault(exc)
    if fault == "disk full":
        return True
    free = free_mib(path)
    return fault is not None and "i/o error" in fault and free is not None and free < 1


def _damaged(exc: sqlite3.Error) -> bool:
    name = getattr(exc, "sqlite_errorname", None)  # Python 3.11+; before it, damage is a plain DatabaseError
    return name.startswith(_DAMAGED) if name else type(exc) is sqlite3.DatabaseError


def _remove_new(path: Path) -> None:
    """Remove a journal this process just failed to create (with its -wal and -shm); best effort."""
    for suffix in ("", "-wal", "-shm"):
        try:
            path.with_name(path.name + suffix).unlink(missing_ok=True)
        except OSError:
            pass  # a read-only or vanished disk: nothing was made there either


def _entry(row: tuple) -> Entry:
    """A `files` row (and, from `finished`, whether it is a clip and its clip cells) as an Entry."""
    path, folder, size, mtime_ns, status, probs, captured, attempts, last_error, _, updated = row[:11]
    clip = None
    if len(row) > 11 and row[11]:
        frames, duration, rate, best = row[12:]
        clip = Clip(frames=frames or 0, duration=duration, frame_rate=rate, best_frame=best)
    return Entry(path=name_of(path), folder=name_of(folder), size=size, mtime_ns=mtime_ns, status=status,
                 probs=json.loads(probs) if probs else None, captured=captured, attempts=attempts,
                 last_error=name_of(last_error), updated=updated, clip=clip)
