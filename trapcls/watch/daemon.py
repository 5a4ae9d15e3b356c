"""`trapcls watch`: classify every image that lands in an inbox exactly once, and keep a CSV per camera folder.

How nothing is lost and nothing is done twice:
- the SQLite journal (trapcls.watch.journal) is the source of truth: a file is recorded with
  its size and mtime, and results are committed per batch together with the "CSV is stale"
  flag of their folder; the CSVs are rebuilt from the journal (temp file, fsync, replace, fsync
  the directory), so a crash at any moment leaves either the old or the new CSV;
- a file is classified only once complete: its size and mtime unchanged for --settle seconds
  (a "closed" event from inotify ends the wait early);
- watchdog events (created, modified, closed, moved: by destination) bring files in quickly, and
  a full rescan every --rescan-interval finds whatever events were lost (inotify overflows,
  network mounts); --polling watches by polling for mounts without inotify, and the observer
  is restarted when a vanished mount comes back;
- SIGTERM/SIGINT finish the current batch, write the CSVs and exit 0;
- a full, read-only or vanished output disk (or less than --min-free left) pauses the daemon instead of
  stopping it: no new work, the watchdog fed, the pause logged once a minute and recorded for systemd
  and `trapcls status`; it resumes by itself when it can write again (`Watcher._held`). A write that
  failed is simply done again: a failed journal transaction rolls back, so its batch is still pending;
- a damaged journal is kept aside and rebuilt from the CSVs, which hold every finished row
  (`Watcher._rebuild_journal`), so no file with a row is classified again.
"""

from __future__ import annotations

import errno
import logging
import os
import queue
import signal
import sqlite3
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from trapcls.core.frames.discover import ImageFile, TreeScanner, Unclassified, discover_images, is_candidate
from trapcls.core.model.bundle import load_bundle
from trapcls.core.system.exceptions import DataError
from trapcls.core.system.fsutil import check_writable, free_mib, storage_fault, write_csv
from trapcls.core.table.append import CsvAppender
from trapcls.core.table.read import parse_table
from trapcls.core.table.row import Row
from trapcls.predict.backends import choose_backend, create_backend
from trapcls.predict.config import DEFAULT_BATCH
from trapcls.predict.runner import classify_batches
from trapcls.results.events import group_events, write_events
from trapcls.watch.config import CSV_NAME, WatchConfig
from trapcls.watch.journal import (
    CorruptJournal,
    Entry,
    Journal,
    disk_full,
)
from trapcls.watch.notify import Notifier
from trapcls.watch.recovery import Rebuild
from trapcls.watch.state import PAUSED, RUNNING, STATE_FILE, clear_state, write_state

log = logging.getLogger(__name__)

STATE_DIR = ".trapcls"
JOURNAL_FILE = "journal.sqlite"
EVENTS_NAME = "events.csv"
ERRORS_PER_MINUTE = 10
FULL_SCAN_EVERY = 10  # every 10th rescan lists every folder, changed or not (Watcher._scan)
PAUSE_RECHECK = 2.0  # seconds between checks whether a paused daemon can write again
PAUSE_LOG_EVERY = 60.0  # a pause is logged when it starts, then once a minute
GONE = "the output folder is gone (was its disk removed?)"


def journal_path(out: Path) -> Path:
    """Where the journal of a watch writing into `out` lives (hidden, so the scan never takes it for input)."""
    return out / STATE_DIR / JOURNAL_FILE


def state_path(out: Path) -> Path:
    """Where a watch writing into `out` records whether it runs or is paused (trapcls.watch.state)."""
    return out / STATE_DIR / STATE_FILE


@dataclass
class WatchSummary:
    classified: int = 0
    errors: int = 0
    csv_writes: int = 0
    seconds: float = 0.0
    backend: str = ""
    reasons: list[str] = field(default_factory=list)


class Watcher:
    """The daemon: one processing loop in the main thread, fed by watchdog events and rescans."""

    def __init__(self, config: WatchConfig) -> None:
        self.config = config
        self.inbox = config.inbox.resolve()
        if not self.inbox.is_dir():
            raise DataError(f"Inbox {config.inbox} is not a folder.")
        self.out = config.out_dir.resolve()
        self._events: queue.Queue[str] = queue.Queue()
        self._waiting: dict[str, tuple[int, int, float]] = {}  # path -> (size, mtime_ns, unchanged since)
        self._known: dict[str, tuple[int, int]] = {}  # what the journal holds: path -> (size, mtime_ns)
        self._stop = False
        self._observer = None
        self._errors = _ErrorLog()
        self._pause: _Pause | None = None  # why no work is taken now (a disk fault, or below --min-free)
        self._resumed: _Pause | None = None  # a pause just lifted, until the next step writes without a fault
        self._last_flush = self._last_status = 0.0
        self.journal: Journal | None = None
        self._all: CsvAppender | None = None  # --all-csv
        self.summary = WatchSummary()

    # --- the loop ----------------------------------------------------------------------------

    def run(self) -> WatchSummary:
        """Load the model, catch up after a crash, then classify what arrives until stopped."""
        started = time.monotonic()
        choice = self._open()
        notifier = Notifier()
        previous = {s: signal.signal(s, self._on_signal) for s in (signal.SIGTERM, signal.SIGINT)}
        try:
            if not self._wait_for_outputs(notifier):
                return self._stopped(started)  # SIGTERM while waiting for a full disk at start
            self._start_observer()
            notifier.ready(f"model loaded ({choice.name}); scanning {self.inbox}")
            log.info("watching %s -> %s (settle %.1f s, rescan every %.0f s%s)", self.inbox, self.out,
                     self.config.settle, self.config.rescan_interval, ", polling" if self.config.polling else "")
            self._record(RUNNING)
            self._guarded(self._flush, notifier)  # CSVs left stale by a crash
            self._loop(notifier)
            notifier.stopping()
            if self._pause is None:
                self._guarded(self._flush, notifier)
            if self._pause is not None:
                log.warning("stopping while paused (%s): the CSVs of new results are written at the next start, "
                            "from the journal", self._pause.reason)
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)
            self._stop_observer()
            if self._all is not None:
                self._all.close_quietly()  # every append was fsynced; nothing is left to write
            if self.journal is not None:
                self.journal.close()
            clear_state(state_path(self.out))  # stopped cleanly
        return self._stopped(started)

    def _stopped(self, started: float) -> WatchSummary:
        self.summary.seconds = time.monotonic() - started
        log.info("stopped: %d classified, %d errors, %d CSV writes", self.summary.classified, self.summary.errors,
                 self.summary.csv_writes)
        return self.summary

    def _open(self):
        """The model and backend and the CSV layout (the journal comes next, `_wait_for_outputs`); returns the
        backend choice."""
        config = self.config
        try:  # before the model loads: a read-only or missing OUT fails at once
            check_writable(self.out / STATE_DIR, "--out")
        except DataError as exc:
            if storage_fault(exc) != "disk full":
                raise  # a full disk is waited out (_wait_for_outputs), so that systemd does not restart us in a loop
        bundle = load_bundle(config.bundle)
        choice = choose_backend(config.backend, bundle)
        backend = create_backend(choice.name, bundle, threads=config.threads)
        self.summary.backend = f"{choice.name} on {backend.device}"
        log.info("backend %s on %s (%s)", choice.name, backend.device, choice.reason)
        self._bundle, self._backend = bundle, backend
        self._batch = config.batch_size or DEFAULT_BATCH.get(backend.device, 8)
        self._layout = bundle.layout("field", config.blank_threshold)
        if self._layout.blank_rule is not None:
            log.info("%s", self._layout.blank_rule.describe())
        return choice

    def _open_outputs(self) -> None:
        """(Re)open the files the daemon writes to: the journal (and what it holds) and --all-csv."""
        if self.journal is not None:
            self.journal.close()
        if self._all is not None:
            self._all.close_quietly()
            self._all = None
        self.journal = self._open_journal()
        self._known = self.journal.known()
        if self.config.all_csv:
            self._all = CsvAppender(self.config.all_csv, self._layout, flag="--all-csv")
            self._catch_up_all_csv()

    def _wait_for_outputs(self, notifier: Notifier) -> bool:
        """Open the outputs at start. A full or failing disk is waited out, paused (READY=1 sent, the watchdog
        fed), rather than exiting into a restart loop; False if stopped while waiting."""
        while not self._stop:
            problem = self._reopened()
            if problem is None:
                self._pause, self._resumed = None, self._pause  # "resumed" once the first step writes
                return True
            self._pause_for(*problem, notifier)
            notifier.ready(self.status_line())  # started, though paused: systemd's start timeout must not fire
            deadline = time.monotonic() + PAUSE_RECHECK
            while time.monotonic() < deadline and not self._stop:
                notifier.watchdog()
                time.sleep(0.25)
            self._remind(self._pause)
        return False

    def _open_journal(self) -> Journal:
        """The journal, bound to this model; a damaged one is rebuilt from the CSVs first."""
        path = journal_path(self.out)
        try:
            journal = Journal(path)
        except CorruptJournal as exc:
            Rebuild(inbox=self.inbox, out=self.out, folder_depth=self.config.folder_depth, layout=self._layout,
                    bundle=self._bundle, max_attempts=self.config.max_attempts).run(path, exc.reason)
            journal = Journal(path)
        journal.bind_model(self._bundle.classes, self._bundle.model_id)
        return journal

    def _loop(self, notifier: Notifier) -> None:
        """The processing loop (in the main thread, so its watchdog pings mean work is moving)."""
        config = self.config
        next_scan, idle_since = 0.0, time.monotonic()
        self._last_flush = time.monotonic()
        while not self._stop:
            notifier.watchdog()
            if time.monotonic() >= next_scan:
                self._scan()
                next_scan = time.monotonic() + config.rescan_interval
            if self._keep_observer_alive():
                next_scan = 0.0  # files may have arrived while nothing watched: rescan now
            if self._held(notifier):  # events are still taken in (memory only); nothing is written
                self._report(notifier)
                self._wait_for_events(timeout=0.5)
                continue
            work = self._guarded(self._step, notifier, notifier)
            if work is None:
                continue  # paused by a write that failed: _held takes over
            self._confirm_resume(notifier)
            if work:
                idle_since = time.monotonic()
            self._errors.summarise()
            if not work:
                if config.idle_exit is not None and not self._waiting and not self.journal.pending_count() \
                        and time.monotonic() - idle_since >= config.idle_exit:
                    break
                self._wait_for_events(timeout=min(0.5, max(config.settle / 4, 0.05)))

    def _step(self, notifier: Notifier) -> bool:
        """Settle, classify a few batches, rewrite the CSVs when due, report; True if there was work."""
        self._settle()
        work = self.journal.pending(limit=self._batch * 4)
        if work:
            self._classify(work, notifier)
        flush_due = not work or time.monotonic() - self._last_flush >= self.config.flush_interval
        if flush_due and self.journal.dirty_folders():
            self._flush()
            self._last_flush = time.monotonic()
        self._report(notifier)
        return bool(work)

    def _report(self, notifier: Notifier) -> None:
        """STATUS= for systemd, every 5 s."""
        if time.monotonic() - self._last_status >= 5:
            notifier.status(self.status_line())
            self._last_status = time.monotonic()

    def _on_signal(self, signum, frame) -> None:
        log.info("%s: finishing the current batch, then exiting", signal.Signals(signum).name)
        self._stop = True

    def status_line(self) -> str:
        if self._pause is not None:
            return self._pause.line(self._free())
        stats = self.journal.stats(window=60)
        return (f"backlog {stats['backlog'] + len(self._waiting)}, done {stats['done']}, errors {stats['errors']}, "
                f"{stats['files_per_s_recent']:.1f} files/s")

    # --- a full, read-only or vanished disk ----------------------------------------------------

    def _guarded(self, step, notifier: Notifier, *args):
        """`step(*args)`, whose writes may meet a full, read-only or vanished disk: then pause (None)."""
        try:
            return step(*args)
        except (OSError, sqlite3.Error, DataError) as exc:
            fault = self._fault(exc)
            if fault is None:
                raise
            self._pause_for(fault, self._fault_path(exc), notifier)
            return None

    def _fault(self, exc: BaseException) -> str | None:
        """What storage fault `exc` is ("disk full", "read-only file system", ...), None if it is none."""
        return "disk full" if disk_full(exc, self.out) else storage_fault(exc)

    def _fault_path(self, exc: BaseException | None) -> str:
        """The file a failed write names (the journal for SQLite), else OUT."""
        while exc is not None:
            if isinstance(exc, sqlite3.Error):
                return str(journal_path(self.out))
            if isinstance(exc, OSError) and exc.filename:
                return os.fsdecode(exc.filename)
            exc = exc.__cause__
        return str(self.out)

    def _held(self, notifier: Notifier) -> bool:
        """True while no work may be taken: a disk fault not yet mended, or less than --min-free left.

        A paused daemon looks again every PAUSE_RECHECK seconds: room above the reserve, the journal
        still there (a removed disk leaves a bare mount point), a test file written and fsynced in
        OUT/.trapcls; then it reopens the journal and --all-csv (a disk that came back needs new handles).
        """
        pause = self._pause
        if pause is None:
            low = self._low_space()
            if low is not None:
                self._pause_for(*low, notifier)
            return low is not None
        now = time.monotonic()
        if now < pause.next_check:
            self._remind(pause)
            return True
        pause.next_check = now + PAUSE_RECHECK
        problem = self._low_space() or self._cannot_write()
        if problem is None:
            problem = self._reopened()
        if problem is None:
            self._pause, self._resumed = None, pause  # confirmed by the next step that writes without a fault
            return False
        if problem[0] != pause.reason:
            self._pause_for(*problem, notifier)  # another fault now (space back, but the disk went read-only)
        self._remind(self._pause)
        return True

    def _pause_for(self, reason: str, path: str, notifier: Notifier) -> None:
        """Stop taking work because of `reason` at `path`; logged and recorded unless it is the same pause going on."""
        now, same = time.monotonic(), self._pause or self._resumed
        self._resumed = None
        if same is not None and same.reason == reason:
            same.next_check = now + PAUSE_RECHECK
            self._pause = same  # a write failed again right after a resume: the same pause, no new log line
            return
        if self._all is not None:
            self._all.close_quietly()  # reopened on resume; a torn last line is cut then
        self._pause = _Pause(reason=reason, path=path, next_check=now + PAUSE_RECHECK)
        self._remind(self._pause)
        self._record(PAUSED)
        notifier.status(self.status_line())
        self._last_status = time.monotonic()

    def _remind(self, pause: _Pause) -> None:
        if time.monotonic() - pause.logged >= PAUSE_LOG_EVERY:
            log.warning("%s", pause.line(self._free()))
            pause.logged = time.monotonic()

    def _confirm_resume(self, notifier: Notifier) -> None:
        """After a pause, the first step that wrote without a fault: say so."""
        pause, self._resumed = self._resumed, None
        if pause is None:
            return
        free = self._free()
        log.warning("resumed after %.0f s paused (%s at %s)%s", time.time() - pause.since, pause.reason, pause.path,
                    "" if free is None else f"; {free:.1f} MiB free")
        self._record(RUNNING)
        notifier.status(self.status_line())
        self._last_status = time.monotonic()

    def _low_space(self) -> tuple[str, str] | None:
        """(reason, path) when OUT's disk, or --all-csv's, has less than --min-free MiB left."""
        reserve = self.config.min_free
        if reserve <= 0:
            return None
        for folder in self._write_folders():
            free = free_mib(folder)
            if free is not None and free < reserve:
                return f"less than {reserve:g} MiB free (--min-free)", str(folder)
        return None

    def _cannot_write(self) -> tuple[str, str] | None:
        """(reason, path) unless the journal is there and a test file can be written in each output folder."""
        if not journal_path(self.out).is_file():  # never start a new journal on the disk under a mount point
            return GONE, str(self.out)
        for folder in self._write_folders():
            try:
                with tempfile.TemporaryFile(dir=folder) as probe:
                    probe.write(b"\0" * 4096)
                    probe.flush()
                    os.fsync(probe.fileno())
            except OSError as exc:
                return storage_fault(exc) or (exc.strerror or str(exc)).lower(), str(folder)
        return None

    def _reopened(self) -> tuple[str, str] | None:
        """_open_outputs, and append what --all-csv missed; (reason, path) if the disk failed that."""
        try:
            self._open_outputs()
        except (OSError, sqlite3.Error, DataError) as exc:
            fault = self._fault(exc)
            if fault is None:
                raise
            return fault, self._fault_path(exc)
        return None

    def _write_folders(self) -> list[Path]:
        """Where the daemon writes: OUT/.trapcls (for OUT's disk) and --all-csv's folder."""
        folders = [self.out / STATE_DIR]
        if self.config.all_csv is not None:
            folders.append(self.config.all_csv.resolve().parent)
        return folders

    def _free(self) -> float | None:
        return free_mib(self.out)

    def _record(self, state: str) -> None:
        """The state `trapcls status` shows (trapcls.watch.state)."""
        pause = self._pause
        write_state(state_path(self.out), {
            "state": state, "reason": pause and pause.reason, "path": pause and pause.path,
            "since": pause and pause.since, "free_mib": self._free(), "min_free_mib": self.config.min_free})

    # --- finding files -----------------------------------------------------------------------

    _tree: TreeScanner | None = None  # the rescans' memory of the inbox's folders, made by the first _scan
    _unclassified: tuple[dict[str, Unclassified], dict[str, tuple[int, int]]] | None = None  # last scan's, noted

    def _scan(self, *, full: bool = False) -> None:
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
            self._tree = TreeScanner(self.inbox, full_every=FULL_SCAN_EVERY, ignore=self._own_output)
        try:
            found = self._tree.scan(full=full)
        except OSError as exc:
            log.warning("inbox %s is not reachable (%s); will look again at the next rescan", self.inbox, exc)
            return
        for rel in found.images:
            self._saw(rel)
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
        """Videos and other non-image files per camera folder: logged and stored for `trapcls status` once a
        folder's counts have stayed the same for one rescan (a card being copied is reported once, when done)."""
        counts: dict[str, Unclassified] = {}
        for folder in sorted(per_folder):
            camera = self._folder(("" if folder == "." else folder + "/") + "file")
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
            log.warning("%s: %s not classified: trapcls classifies still images (JPEG, PNG); %s", where,
                        counts[folder].describe(), counts[folder].example())
        kept = {f: c for f, c in noted.items() if f not in settled}
        self._unclassified = (counts, {**kept, **{f: now[f] for f in settled if f in now}})

    def _saw(self, rel: str) -> None:
        """Note that `rel` exists now; start (or restart) its settle clock if it is new or changed."""
        try:
            st = os.stat(self.inbox / rel)
        except OSError:
            self._waiting.pop(rel, None)
            return
        state = (st.st_size, st.st_mtime_ns)
        if self._known.get(rel) == state:
            return
        current = self._waiting.get(rel)
        if current is None or current[:2] != state:
            self._waiting[rel] = (*state, time.monotonic())

    def _settle(self) -> None:
        """Files unchanged for --settle seconds go into the journal as pending."""
        now, ready = time.monotonic(), []
        for rel, (size, mtime_ns, since) in list(self._waiting.items()):
            if now - since < self.config.settle:
                continue
            try:
                st = os.stat(self.inbox / rel)
            except OSError:
                del self._waiting[rel]
                continue
            if (st.st_size, st.st_mtime_ns) != (size, mtime_ns):
                self._waiting[rel] = (st.st_size, st.st_mtime_ns, now)
                continue
            ready.append((rel, self._folder(rel), size, mtime_ns))
        if ready:
            self.journal.observe(ready)  # on a full disk this fails and they stay waiting: nothing is lost
        for rel, _, size, mtime_ns in ready:
            del self._waiting[rel]
            self._known[rel] = (size, mtime_ns)

    def _folder(self, rel: str) -> str:
        parts = rel.split("/")
        depth = self.config.folder_depth
        return "/".join(parts[:depth]) if depth and len(parts) > depth else "."

    # --- watchdog ----------------------------------------------------------------------------

    def _start_observer(self) -> None:
        if not self.config.file_events or not self.inbox.is_dir():
            return
        from watchdog.observers import Observer
        from watchdog.observers.polling import PollingObserver

        observer = PollingObserver(timeout=self.config.poll_interval) if self.config.polling else Observer()
        observer.schedule(_Handler(self), str(self.inbox), recursive=True)
        observer.daemon = True
        observer.start()
        self._observer = observer

    def _stop_observer(self) -> None:
        if self._observer is not None:
            self._observer.stop()
            self._observer.join(timeout=5)
            self._observer = None

    def _keep_observer_alive(self) -> bool:
        """An observer dies when its mount vanishes: start a new one once the inbox is back; True if restarted."""
        if not self.config.file_events:
            return False
        observer = self._observer
        alive = observer is not None and observer.is_alive() and all(e.is_alive() for e in observer.emitters)
        if alive:
            return False
        if observer is not None:
            log.warning("the file watcher stopped (was %s unmounted?); restarting it when it is back", self.inbox)
            self._stop_observer()
        if not self.inbox.is_dir():
            return False
        try:
            self._start_observer()
        except OSError as exc:
            log.warning("cannot watch %s yet: %s", self.inbox, exc)
            return False
        log.info("file watcher restarted on %s", self.inbox)
        return True

    def _event(self, path: str, kind: str) -> None:
        """Called from watchdog's thread: only queue, never raise (an exception kills the observer)."""
        self._events.put((kind, path))

    def _wait_for_events(self, timeout: float) -> None:
        try:
            kind, path = self._events.get(timeout=timeout)
        except queue.Empty:
            return
        while True:
            self._take_event(Path(path), kind)
            try:
                kind, path = self._events.get_nowait()
            except queue.Empty:
                return

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
                found = discover_images([path])
            except DataError:  # nothing in it (yet)
                found = []
            for f in found:
                self._saw((rel / f.rel).as_posix())
            return
        closed = kind == "closed"
        outside = path.is_symlink() and not path.resolve().is_relative_to(self.inbox)
        if not is_candidate(path.name) or not path.is_file() or outside:
            return
        key = rel.as_posix()
        self._saw(key)
        if closed and key in self._waiting:  # written and closed: no need to wait for the settle time
            size, mtime_ns, _ = self._waiting[key]
            self._waiting[key] = (size, mtime_ns, time.monotonic() - self.config.settle)

    # --- classifying and writing -------------------------------------------------------------

    def _classify(self, work: list[Entry], notifier: Notifier) -> None:
        files, entries = [], {}
        for entry in work:
            path = self.inbox / entry.path
            try:
                st = os.stat(path)
            except OSError:
                self.journal.forget(entry.path)  # gone before its turn: nothing to classify
                self._known.pop(entry.path, None)
                continue
            if (st.st_size, st.st_mtime_ns) != (entry.size, entry.mtime_ns):
                self._saw(entry.path)  # changed since it settled: wait again (and do not pick it up meanwhile)
                self.journal.defer(entry.path, self.config.settle + 0.5)
                continue
            files.append(ImageFile(path=path, rel=entry.path))
            entries[entry.path] = entry
        batches = classify_batches(files, self._bundle, self._backend, batch_size=self._batch,
                                   workers=self.config.workers)
        try:
            for results in batches:
                done = [(entries[r.path], [float(p) for p in r.probs], r.captured or None) for r in results if r.ok]
                failed = [(entries[r.path], r.error or "unknown error", r.captured or None) for r in results
                          if not r.ok]
                final = self.journal.record(done, failed, max_attempts=self.config.max_attempts,
                                            backoff=max(self.config.settle, 1.0))
                for entry, error, _ in failed:
                    self._errors.note(entry.path, error)
                self.summary.classified += len(done)
                self.summary.errors += len(final)
                if self._all is not None:
                    finished = {e.path for e in final} | {e.path for e, _, _ in done}
                    self._all.append([r for r in results if r.path in finished])
                notifier.watchdog()
                if self._stop:
                    break
        finally:
            batches.close()

    def _flush(self) -> None:
        """Rewrite the CSV (and events.csv) of every folder with new results, atomically and durably.

        The folder stays marked stale until both files are written, so a crash between them is
        mended by the next start's flush.
        """
        if not (self.out / STATE_DIR).is_dir():  # OUT deleted, or its disk removed and a bare mount point left
            raise FileNotFoundError(errno.ENOENT, GONE, str(self.out))
        for folder in self.journal.dirty_folders():
            as_of = time.time()
            rows = self.journal.finished(folder)
            target = self.out / folder / CSV_NAME
            prefix = "" if folder == "." else folder + "/"
            cells = [self._layout.cells(_row(entry, entry.path[len(prefix):])) for entry in rows]
            write_csv(target, self._layout.header(), cells)
            if self.config.events:
                self._write_events(folder, cells)
            self.journal.written(folder, as_of=as_of)
            self.summary.csv_writes += 1
            log.debug("wrote %s (%d rows)", target, len(rows))

    def _write_events(self, folder: str, cells: list[list[str]]) -> None:
        """events.csv for one camera folder (its deployment), from its predictions.csv's cells exactly as written,
        read back as `trapcls events` reads the file: the two agree to the last digit on every CPU."""
        table = parse_table(self.out / folder / CSV_NAME, self._layout.header(), cells)
        grouped = group_events(table, gap=self.config.gap, deployment=lambda _: folder)
        write_events(grouped, table, self.out / folder / EVENTS_NAME, rule=self._layout.blank_rule)

    def _catch_up_all_csv(self) -> None:
        """After a crash, append to --all-csv the results the journal has but the CSV does not."""
        if self._all is None:
            return
        missing = [e for e in self.journal.finished() if self._layout.key(Row(e.path, None)) not in self._all.done]
        if missing:
            self._all.append([_row(e, e.path) for e in missing])


@dataclass
class _Pause:
    """Why the daemon takes no work now, where, and since when."""

    reason: str  # "disk full", "read-only file system", "less than 64 MiB free (--min-free)", ...
    path: str
    since: float = field(default_factory=time.time)
    logged: float = -PAUSE_LOG_EVERY  # monotonic time of the last log line
    next_check: float = 0.0  # monotonic time of the next look at the disk

    def line(self, free: float | None) -> str:
        """The log line and STATUS=: "paused: disk full at PATH (0.0 MiB free); waiting for space"."""
        room = "" if free is None else f" ({free:.1f} MiB free)"
        wait = ("space" if "free" in self.reason or "full" in self.reason else
                "it to come back" if self.reason == GONE else "it to be writable again")
        return f"paused: {self.reason} at {self.path}{room}; waiting for {wait}"


class _Handler:
    """watchdog callbacks -> the daemon's queue (dispatch is all watchdog needs from a handler)."""

    def __init__(self, watcher: Watcher) -> None:
        self._watcher = watcher

    def dispatch(self, event) -> None:
        try:
            kind = event.event_type
            if event.is_directory:
                # New or moved-in folders are looked into; "modified" folders only mean a file changed
                # inside, which brings its own event (walking the folder each time would be quadratic).
                if kind in ("created", "moved"):
                    self._watcher._event(os.fsdecode(event.dest_path if kind == "moved" else event.src_path), "folder")
            elif kind in ("created", "modified", "closed"):
                self._watcher._event(os.fsdecode(event.src_path), "closed" if kind == "closed" else "file")
            elif kind == "moved":  # rsync and friends write a temp name, then rename: the destination counts
                self._watcher._event(os.fsdecode(event.dest_path), "file")
        except Exception:  # an exception here would kill watchdog's thread; the rescan covers anything missed
            log.exception("ignoring a file event that could not be queued")


class _ErrorLog:
    """Per-file errors: the first few each minute in full, then a count."""

    def __init__(self) -> None:
        self._window_start, self._shown, self._suppressed = time.monotonic(), 0, 0

    def note(self, path: str, error: str) -> None:
        if self._shown < ERRORS_PER_MINUTE:
            log.warning("%s: %s", path, error)
            self._shown += 1
        else:
            self._suppressed += 1

    def summarise(self) -> None:
        if time.monotonic() - self._window_start < 60:
            return
        if self._suppressed:
            log.warning("%d more file errors in the last minute (see `trapcls status`)", self._suppressed)
        self._window_start, self._shown, self._suppressed = time.monotonic(), 0, 0


def _counts(unclassified: Unclassified | None) -> tuple[int, int] | None:
    return None if unclassified is None else (unclassified.videos, unclassified.others)


def _row(entry: Entry, rel: str) -> Row:
    """A journal entry as the row its camera folder's CSV lists (`rel`: its path inside that folder)."""
    if entry.status == "done":
        return Row(rel, np.asarray(entry.probs), captured=entry.captured or "")
    return Row(rel, None, captured=entry.captured or "", error=entry.last_error or "error")
