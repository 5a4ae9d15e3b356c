"""How the watch daemon finds work: rescans and file events bring paths in, settling lets only complete files through.

A file is filed in the journal as pending once its size and mtime have held for --settle seconds
(a "closed" event from inotify ends the wait early). A video clip needs more: an MP4 cannot be read
until its copy has ended (its index comes last), and a copy may pause for longer than --settle, so
without a "closed" event a clip must also have been unchanged for --clip-settle seconds, here or by
its mtime (`Intake._complete`). A pending row in the journal is thus a complete file, frame or clip.
watchdog events (created, modified, closed, moved: by destination) bring files in quickly; a rescan
every --rescan-interval finds whatever events were lost (inotify overflows, network mounts).
--polling watches by polling, for mounts without inotify, and the observer is restarted when a
vanished mount comes back. Videos trapcls does not decode and other files it does not classify are
counted per camera folder, logged once and kept for `trapcls status`.
"""

from __future__ import annotations

import logging
import os
import queue
import sqlite3
import time
from pathlib import Path

from trapcls.core.frames.discover import CLASSIFIED, TreeScanner, Unclassified, discover, is_candidate, is_clip
from trapcls.core.system.exceptions import DataError
from trapcls.watch.config import WatchConfig
from trapcls.watch.journal import Journal
from trapcls.watch.paths import CSV_NAME, EVENTS_NAME

log = logging.getLogger("trapcls.watch.daemon")  # the daemon's log: one stream for the operator

FULL_SCAN_EVERY = 10  # every 10th rescan lists every folder, changed or not (Intake.scan)
class Intake:
    """The files of the inbox on their way into the journal: seen, waiting to settle, or known (filed)."""

    def __init__(self, config: WatchConfig, inbox: Path, out: Path) -> None:
        self.config, self.inbox, self.out = config, inbox, out
        self.waiting: dict[str, tuple[int, int, float]] = {}  # path -> (size, mtime_ns, unchanged since)
        self.known: dict[str, tuple[int, int]] = {}  # what the journal holds: path -> (size, mtime_ns)
        self.journal: Journal | None = None
        self.events = FileEvents(config, inbox)
        self._tree: TreeScanner | None = None  # the rescans' memory of the inbox's folders, made by the first scan
        self._unclassified: tuple[dict[str, Unclassified], dict[str, tuple[int, int]]] | None = None  # last, noted

    def attach(self, journal: Journal) -> None:
        """File settled files into `journal` (opened anew after a pause); what it holds is known."""
        self.journal = journal
        self.known = journal.known()

    # --- the rescans ---------------------------------------------------------------------------

    def scan(self, *, full: bool = False) -> None:
        """The backlog / reconciliation scan: every image under the inbox not yet in the journal as it is now.

        Incremental: a folder whose mtime has not changed since the last scan holds no new file and
        is not listed again (trapcls.core.frames.discover.TreeScanner). A file rewritten in place leaves its
        folder's mtime alone; file events catch that, and for events that were lost every
        FULL_SCAN_EVERY-th scan (the first too, and any with `full`) lists every folder.
        """
        if not self.inbox.is_dir():
            log.warning("inbox %s is not reachable; will look again at the next rescan", self.inbox)
            return
        if self._tree is None:
            self._tree = TreeScanner(self.inbox, full_every=FULL_SCAN_EVERY, ignore=self._own_output, clips=True)
        try:
            found = self._tree.scan(full=full)
        except OSError as exc:
            log.warning("inbox %s is not reachable (%s); will look again at the next rescan", self.inbox, exc)
            return
        for rel in found.images:
            self.saw(rel)
        log.debug("%s rescan: %d folders listed, %d unchanged, %d images in the listed ones",
                  "full" if found.full else "incremental", found.listed, found.kept, len(found.images))
        self._note_unclassified(found.unclassified)

    def _own_output(self, rel: str) -> bool:
        """A file this daemon writes into the inbox (its CSVs when OUT is there, --all-csv): not counted as not
        classified."""
        path = self.inbox / rel
        if self.config.all_csv is not None and path == self.config.all_csv.resolve():
            return True
        return path.name.startswith((CSV_NAME, EVENTS_NAME)) and path.is_relative_to(self.out)

    def _note_unclassified(self, per_folder: dict[str, Unclassified]) -> None:
        """Videos it does not decode and other files per camera folder: logged and stored for `trapcls status` once a
        folder's counts have stayed the same for one rescan (a card being copied is reported once, when done)."""
        counts: dict[str, Unclassified] = {}
        for folder in sorted(per_folder):
            camera = self.folder(("" if folder == "." else folder + "/") + "file")
            counts.setdefault(camera, Unclassified()).merge(per_folder[folder])
        previous, noted = self._unclassified or ({}, None)
        if noted is None:
            try:
                noted = {f: (u["videos"], u["others"]) for f, u in self.journal.unclassified().items()}
            except (sqlite3.Error, OSError, DataError) as exc:
                log.debug("could not read the unclassified counts: %s", exc)
                return  # tried again at the next scan
        now = {f: (u.videos, u.others) for f, u in counts.items()}
        settled = {f for f in set(now) | set(noted)
                   if now.get(f, (0, 0)) != noted.get(f, (0, 0)) and now.get(f) == _counts(previous.get(f))}
        self._unclassified = (counts, noted)
        if not settled:
            return
        try:
            self.journal.note_unclassified({f: (*now.get(f, (0, 0)), counts[f].examples if f in counts else [])
                                            for f in settled})
        except (sqlite3.Error, OSError, DataError) as exc:  # a full disk pauses the daemon elsewhere; noted later
            log.debug("could not store the unclassified counts: %s", exc)
            return
        for folder in sorted(settled & set(counts)):
            where = self.inbox if folder == "." else folder
            log.warning("%s: %s not classified: %s; %s", where, counts[folder].describe(), CLASSIFIED,
                        counts[folder].example())
        kept = {f: c for f, c in noted.items() if f not in settled}
        self._unclassified = (counts, {**kept, **{f: now[f] for f in settled if f in now}})

    # --- settling -------------------------------------------------------------------------------

    def saw(self, rel: str) -> None:
        """Note that `rel` exists now; start (or restart) its settle clock if it is new or changed."""
        try:
            st = os.stat(self.inbox / rel)
        except OSError:
            self.waiting.pop(rel, None)
            return
        state = (st.st_size, st.st_mtime_ns)
        if self.known.get(rel) == state:
            return
        current = self.waiting.get(rel)
        if current is None or current[:2] != state:
            self.waiting[rel] = (*state, time.monotonic())

    def settle(self) -> None:
        """Complete files go into the journal as pending: unchanged for --settle seconds (a clip: `_complete`)."""
        now, ready = time.monotonic(), []
        for rel, (size, mtime_ns, since) in list(self.waiting.items()):
            if not self._complete(rel, mtime_ns, now - since):
                continue
            try:
                st = os.stat(self.inbox / rel)
            except OSError:
                del self.waiting[rel]
                continue
            if (st.st_size, st.st_mtime_ns) != (size, mtime_ns):
                self.waiting[rel] = (st.st_size, st.st_mtime_ns, now)
                continue
            ready.append((rel, self.folder(rel), size, mtime_ns))
        if ready:
            self.journal.observe(ready)  # on a full disk this fails and they stay waiting: nothing is lost
        for rel, _, size, mtime_ns in ready:
            del self.waiting[rel]
            self.known[rel] = (size, mtime_ns)

    def _complete(self, rel: str, mtime_ns: int, unchanged: float) -> bool:
        """Whether a file unchanged for `unchanged` seconds (as this daemon saw it) is copied whole.

        A frame: after --settle. A clip also needs --clip-settle: a copy that pauses for longer than --settle (a
        slow card, a network hiccup) would otherwise be read half-copied, and an MP4 then fails (no index yet)
        while an AVI or MKV gives a row for the part copied so far. The mtime stands in for the wait when it
        is older (a clip copied before the daemon started, or while it was stopped); a mtime ahead of this
        machine's clock (a network share) cannot hold a clip back longer than --clip-settle. A "closed" event
        (`_take_event`) ends both waits.
        """
        config = self.config
        if unchanged < config.settle:
            return False
        if not is_clip(rel):
            return True
        return unchanged >= config.clip_settle or time.time() - mtime_ns / 1e9 >= config.clip_settle

    def forget(self, rel: str) -> None:
        """`rel` left the journal (gone before its turn)."""
        self.known.pop(rel, None)

    def folder(self, rel: str) -> str:
        """The camera folder (--folder-depth) whose CSV lists `rel`."""
        parts = rel.split("/")
        depth = self.config.folder_depth
        return "/".join(parts[:depth]) if depth and len(parts) > depth else "."

    # --- file events ----------------------------------------------------------------------------

    def wait_for_events(self, timeout: float) -> None:
        """Take the file events that arrive within `timeout` seconds (all that are queued once one came)."""
        for kind, path in self.events.take(timeout):
            self._take_event(Path(path), kind)

    def _take_event(self, path: Path, kind: str) -> None:
        """kind: "file" (created, modified, moved here), "closed" (written and closed) or "folder" (new or moved in)."""
        try:
            rel = path.relative_to(self.inbox)
        except ValueError:
            return
        if any(part.startswith(".") for part in rel.parts):
            return
        if kind == "folder":  # a folder moved in whole brings no events for its files: look inside
            try:
                found = discover([path], clips=True).files
            except (DataError, OSError) as exc:  # nothing in it (yet), or gone again: the rescans look too
                log.debug("%s: %s", path, exc)
                found = []
            for f in found:
                self.saw((rel / f.rel).as_posix())
            return
        closed = kind == "closed"
        # is_file() follows links and is False for a broken or looping one; is_file() first, so resolve() never
        # meets a loop (the rescans count such links with the other special files)
        if not is_candidate(path.name, clips=True) or not path.is_file() or self._outside(path):
            return
        key = rel.as_posix()
        self.saw(key)
        if closed and key in self.waiting:  # written and closed: no need to wait for the settle time
            size, mtime_ns, _ = self.waiting[key]
            wait = max(self.config.settle, self.config.clip_settle if is_clip(key) else 0.0)
            self.waiting[key] = (size, mtime_ns, time.monotonic() - wait)

    def _outside(self, path: Path) -> bool:
        """A link that leads out of the inbox (or nowhere now: changed since it was looked at)."""
        if not path.is_symlink():
            return False
        try:
            return not path.resolve(strict=True).is_relative_to(self.inbox)
        except (OSError, RuntimeError):  # gone, or a loop made meanwhile (RuntimeError before Python 3.13)
            return True


class FileEvents:
    """watchdog's observer on the inbox (inotify, or polling with --polling), feeding a queue the loop reads."""

    def __init__(self, config: WatchConfig, inbox: Path) -> None:
        self.config, self.inbox = config, inbox
        self._queue: queue.Queue[tuple[str, str]] = queue.Queue()
        self._observer = None

    def start(self) -> None:
        if not self.config.file_events or not self.inbox.is_dir():
            return
        from watchdog.observers import Observer
        from watchdog.observers.polling import PollingObserver

        observer = PollingObserver(timeout=self.config.poll_interval) if self.config.polling else Observer()
        observer.schedule(_Handler(self), str(self.inbox), recursive=True)
        observer.daemon = True
        observer.start()
        self._observer = observer

    def stop(self) -> None:
        if self._observer is not None:
            self._observer.stop()
            self._observer.join(timeout=5)
            self._observer = None

    def keep_alive(self) -> bool:
        """An observer dies when its mount vanishes: start a new one once the inbox is back; True if restarted."""
        if not self.config.file_events:
            return False
        observer = self._observer
        alive = observer is not None and observer.is_alive() and all(e.is_alive() for e in observer.emitters)
        if alive:
            return False
        if observer is not None:
            log.warning("the file watcher stopped (was %s unmounted?); restarting it when it is back", self.inbox)
            self.stop()
        if not self.inbox.is_dir():
            return False
        try:
            self.start()
        except OSError as exc:
            log.warning("cannot watch %s yet: %s", self.inbox, exc)
            return False
        log.info("file watcher restarted on %s", self.inbox)
        return True

    def put(self, path: str, kind: str) -> None:
        """Called from watchdog's thread: only queue, never raise (an exception kills the observer)."""
        self._queue.put((kind, path))

    def take(self, timeout: float) -> list[tuple[str, str]]:
        """The (kind, path) events queued within `timeout` seconds: none, or every one queued once one came."""
        try:
            taken = [self._queue.get(timeout=timeout)]
        except queue.Empty:
            return []
        while True:
            try:
                taken.append(self._queue.get_nowait())
            except queue.Empty:
                return taken


class _Handler:
    """watchdog callbacks -> the events' queue (dispatch is all watchdog needs from a handler)."""

    def __init__(self, events: FileEvents) -> None:
        self._events = events

    def dispatch(self, event) -> None:
        try:
            kind = event.event_type
            if event.is_directory:
                # New or moved-in folders are looked into; "modified" folders only mean a file changed
                # inside, which brings its own event (walking the folder each time would be quadratic).
                if kind in ("created", "moved"):
                    self._events.put(os.fsdecode(event.dest_path if kind == "moved" else event.src_path), "folder")
            elif kind in ("created", "modified", "closed"):
                self._events.put(os.fsdecode(event.src_path), "closed" if kind == "closed" else "file")
            elif kind == "moved":  # rsync and friends write a temp name, then rename: the destination counts
                self._events.put(os.fsdecode(event.dest_path), "file")
        except Exception:  # an exception here would kill watchdog's thread; the rescan covers anything missed
            log.exception("ignoring a file event that could not be queued")


def _counts(unclassified: Unclassified | None) -> tuple[int, int] | None:
    return None if unclassified is None else (unclassified.videos, unclassified.others)
