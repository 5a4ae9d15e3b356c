"""The watch daemon's disk guard: a full, read-only or vanished output disk pauses the daemon instead of stopping it.

While paused the daemon takes no new work and writes nothing; the loop keeps feeding the watchdog.
The pause is logged when it starts and then once a minute, and recorded for systemd (STATUS=) and
`trapcls status` (OUT/.trapcls/daemon.json, trapcls.watch.state). Less than --min-free left pauses
it too, before the disk is actually full, so the journal can always commit. It resumes by itself
when it can write again (`DiskGuard.held`). A write that failed is simply done again: a failed
journal transaction rolls back, so its batch is still pending.
"""

from __future__ import annotations

import errno
import logging
import os
import sqlite3
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from trapcls.core.system.exceptions import DataError
from trapcls.core.system.fsutil import free_mib, storage_fault
from trapcls.watch.config import WatchConfig
from trapcls.watch.journal import disk_full
from trapcls.watch.notify import Notifier
from trapcls.watch.paths import STATE_DIR, journal_path, state_path
from trapcls.watch.state import PAUSED, RUNNING, write_state

log = logging.getLogger("trapcls.watch.daemon")  # the daemon's log: one stream for the operator

PAUSE_RECHECK = 2.0  # seconds between checks whether a paused daemon can write again
PAUSE_LOG_EVERY = 60.0  # a pause is logged when it starts, then once a minute
STATUS_EVERY = 5.0  # seconds between STATUS= lines for systemd
GONE = "the output folder is gone (was its disk removed?)"
Fault = tuple[str, str]  # (reason, path): "disk full", "/srv/out/cam1/predictions.csv"
# Faults of the disk itself, wherever on it they show: they pause the daemon even when met in one camera folder.
DEVICE_FAULTS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EIO, errno.ENODEV, errno.ENXIO, errno.ESTALE,
                           errno.ENOTCONN, errno.EHOSTDOWN})


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


class DiskGuard:
    """Whether the daemon may take work now, given its output disk; pauses, resumes and says so.

    `reopen` (re)opens the daemon's outputs (the journal, --all-csv), raising what the disk raises;
    `on_pause` lets go of what must not be written while paused; `progress` is the STATUS= line of a
    daemon at work.
    """

    def __init__(self, config: WatchConfig, out: Path, notifier: Notifier, *, reopen: Callable[[], None],
                 on_pause: Callable[[], None], progress: Callable[[], str]) -> None:
        self.config, self.out, self.notifier = config, out, notifier
        self._reopen, self._on_pause, self._progress = reopen, on_pause, progress
        self.pause: _Pause | None = None  # why no work is taken now (a disk fault, or below --min-free)
        self._resumed: _Pause | None = None  # a pause just lifted, until the next step writes without a fault
        self._last_status = 0.0

    def open_at_start(self, stopping: Callable[[], bool]) -> bool:
        """Open the outputs at start. A full or failing disk is waited out, paused (READY=1 sent, the watchdog
        fed), rather than exiting into a restart loop; False if stopped while waiting."""
        while not stopping():
            problem = self._reopened()
            if problem is None:
                self.pause, self._resumed = None, self.pause  # "resumed" once the first step writes
                return True
            self.pause_for(*problem)
            self.notifier.ready(self.status_line())  # started, though paused: systemd's start timeout must not fire
            deadline = time.monotonic() + PAUSE_RECHECK
            while time.monotonic() < deadline and not stopping():
                self.notifier.watchdog()
                time.sleep(0.25)
            self._remind(self.pause)
        return False

    def guarded(self, step: Callable, *args):
        """`step(*args)`, whose writes may meet a full, read-only or vanished disk: then pause (None)."""
        try:
            return step(*args)
        except (OSError, sqlite3.Error, DataError) as exc:
            fault = self._fault(exc)
            if fault is None:
                raise
            self.pause_for(fault, self._fault_path(exc))
            return None

    def held(self) -> bool:
        """True while no work may be taken: a disk fault not yet mended, or less than --min-free left.

        A paused daemon looks again every PAUSE_RECHECK seconds: room above the reserve, the journal
        still there (a removed disk leaves a bare mount point), a test file written and fsynced in
        OUT/.trapcls; then it reopens the journal and --all-csv (a disk that came back needs new handles).
        """
        pause = self.pause
        if pause is None:
            low = self._low_space()
            if low is not None:
                self.pause_for(*low)
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
            self.pause, self._resumed = None, pause  # confirmed by the next step that writes without a fault
            return False
        if problem[0] != pause.reason:
            self.pause_for(*problem)  # another fault now (space back, but the disk went read-only)
        self._remind(self.pause)
        return True

    def pause_for(self, reason: str, path: str) -> None:
        """Stop taking work because of `reason` at `path`; logged and recorded unless it is the same pause going on."""
        now, same = time.monotonic(), self.pause or self._resumed
        self._resumed = None
        if same is not None and same.reason == reason:
            same.next_check = now + PAUSE_RECHECK
            self.pause = same  # a write failed again right after a resume: the same pause, no new log line
            return
        self._on_pause()
        self.pause = _Pause(reason=reason, path=path, next_check=now + PAUSE_RECHECK)
        self._remind(self.pause)
        self.record(PAUSED)
        self._status()

    def confirm_resume(self) -> None:
        """After a pause, the first step that wrote without a fault: say so."""
        pause, self._resumed = self._resumed, None
        if pause is None:
            return
        free = self._free()
        log.warning("resumed after %.0f s paused (%s at %s)%s", time.time() - pause.since, pause.reason, pause.path,
                    "" if free is None else f"; {free:.1f} MiB free")
        self.record(RUNNING)
        self._status()

    def report(self) -> None:
        """STATUS= for systemd, every STATUS_EVERY seconds."""
        if time.monotonic() - self._last_status >= STATUS_EVERY:
            self._status()

    def status_line(self) -> str:
        return self.pause.line(self._free()) if self.pause is not None else self._progress()

    def record(self, state: str) -> None:
        """The state `trapcls status` shows (trapcls.watch.state)."""
        pause = self.pause
        write_state(state_path(self.out), {
            "state": state, "reason": pause and pause.reason, "path": pause and pause.path,
            "since": pause and pause.since, "free_mib": self._free(), "min_free_mib": self.config.min_free})

    def _status(self) -> None:
        self.notifier.status(self.status_line())
        self._last_status = time.monotonic()

    def _remind(self, pause: _Pause) -> None:
        if time.monotonic() - pause.logged >= PAUSE_LOG_EVERY:
            log.warning("%s", pause.line(self._free()))
            pause.logged = time.monotonic()

    # --- looking at the disk --------------------------------------------------------------------

    def check_out(self) -> None:
        """Raise (a fault that pauses) if OUT is gone: deleted, or its disk removed and a bare mount point left."""
        if not (self.out / STATE_DIR).is_dir():
            raise FileNotFoundError(errno.ENOENT, GONE, str(self.out))

    def whole_disk(self, exc: BaseException) -> bool:
        """Whether a write that failed in one camera folder failed for OUT's disk as a whole (the daemon pauses)
        rather than for that folder alone (that camera is set aside, trapcls.watch.writers).

        A full, read-only, failing or vanished disk is the disk's. A link or a folder in the way is the
        folder's. Permission denied (or a folder gone) is the folder's unless OUT/.trapcls cannot be written
        either, which the test file of a pause tells.
        """
        fault = self._fault(exc)
        if fault is None:
            return False
        if fault == "disk full" or getattr(exc, "errno", None) in DEVICE_FAULTS:
            return True
        return self._cannot_write() is not None

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

    def _low_space(self) -> Fault | None:
        """(reason, path) when OUT's disk, or --all-csv's, has less than --min-free MiB left."""
        reserve = self.config.min_free
        if reserve <= 0:
            return None
        for folder in self._write_folders():
            free = free_mib(folder)
            if free is not None and free < reserve:
                return f"less than {reserve:g} MiB free (--min-free)", str(folder)
        return None

    def _cannot_write(self) -> Fault | None:
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

    def _reopened(self) -> Fault | None:
        """Reopen the outputs (and append what --all-csv missed); (reason, path) if the disk failed that."""
        try:
            self._reopen()
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
