"""`trapcls watch`: classify every image that lands in an inbox exactly once, and keep a CSV per camera folder.

How nothing is lost and nothing is done twice:
- the SQLite journal (trapcls.watch.journal) is the source of truth: a file is recorded with
  its size and mtime, and results are committed per batch together with the "CSV is stale"
  flag of their folder; the CSVs are rebuilt from the journal (trapcls.watch.writers), so a crash
  at any moment leaves either the old or the new CSV;
- a file is classified only once complete (a video clip once its copy has surely ended), and found whether
  or not its file events arrive (trapcls.watch.intake);
- video clips are classified in a lane of their own (trapcls.watch.clips), so that a long clip never holds up
  the frames; their rows come back to the loop, which records them like frames';
- SIGTERM/SIGINT finish the current batch, write the CSVs and exit 0;
- a full, read-only or vanished output disk (or less than --min-free left) pauses the daemon instead of
  stopping it, and it resumes by itself (trapcls.watch.guard);
- a damaged journal is kept aside and rebuilt from the CSVs, which hold every finished row
  (trapcls.watch.recovery), so no file with a row is classified again.

`Watcher` runs the loop and joins those parts: intake, the model, the journal, the guard, the writers.
"""

from __future__ import annotations

import logging
import os
import signal
import time
from dataclasses import dataclass, field

from trapcls.core.frames.discover import ImageFile
from trapcls.core.model.bundle import load_bundle
from trapcls.core.system.exceptions import BundleError, DataError
from trapcls.core.system.fsutil import check_writable, storage_fault
from trapcls.core.system.names import display
from trapcls.core.table.row import Row
from trapcls.predict.backends import choose_backend, create_backend
from trapcls.predict.config import DEFAULT_BATCH
from trapcls.predict.runner import classify_batches
from trapcls.watch.clips import CLIPS_PER_RUN, ClipLane, SharedBackend
from trapcls.watch.config import WatchConfig
from trapcls.watch.guard import DiskGuard
from trapcls.watch.intake import Intake
from trapcls.watch.journal import CorruptJournal, Entry, Journal
from trapcls.watch.notify import Notifier
from trapcls.watch.paths import STATE_DIR, journal_path, state_path
from trapcls.watch.recovery import Rebuild
from trapcls.watch.state import RUNNING, clear_state
from trapcls.watch.writers import Writers

log = logging.getLogger(__name__)

ERRORS_PER_MINUTE = 10
CLIP_STOP_GRACE = 5.0  # seconds a stop waits for the clip being decoded; one not finished is redone at next start


@dataclass
class WatchSummary:
    classified: int = 0
    errors: int = 0
    csv_writes: int = 0
    seconds: float = 0.0
    backend: str = ""
    reasons: list[str] = field(default_factory=list)


class Watcher:
    """The daemon: one processing loop in the main thread, fed by intake's events and rescans."""

    def __init__(self, config: WatchConfig) -> None:
        self.config = config
        self.inbox = config.inbox.resolve()
        if not self.inbox.is_dir():
            raise DataError(f"Inbox {config.inbox} is not a folder.")
        self.out = config.out_dir.resolve()
        self.intake = Intake(config, self.inbox, self.out)
        self.notifier = Notifier()
        self.guard = DiskGuard(config, self.out, self.notifier, reopen=self._open_outputs,
                               on_pause=self._let_go_of_outputs, progress=self._progress)
        self.journal: Journal | None = None
        self.writers: Writers | None = None  # made once the model's CSV layout is known (_open)
        self.lane: ClipLane | None = None  # video clips, classified beside the frames (made with the model: _open)
        self._stop = False
        self._errors = _ErrorLog()
        self._last_flush = 0.0
        self.summary = WatchSummary()

    # --- the loop ----------------------------------------------------------------------------

    def run(self) -> WatchSummary:
        """Load the model, catch up after a crash, then classify what arrives until stopped."""
        started = time.monotonic()
        choice = self._open()
        notifier, guard = self.notifier, self.guard
        previous = {s: signal.signal(s, self._on_signal) for s in (signal.SIGTERM, signal.SIGINT)}
        try:
            if not guard.open_at_start(lambda: self._stop):
                return self._stopped(started)  # SIGTERM while waiting for a full disk at start
            self.intake.events.start()
            notifier.ready(f"model loaded ({choice.name}); scanning {self.inbox}")
            log.info("watching %s -> %s (settle %.1f s, rescan every %.0f s%s)", self.inbox, self.out,
                     self.config.settle, self.config.rescan_interval, ", polling" if self.config.polling else "")
            guard.record(RUNNING)
            guard.guarded(self._flush)  # CSVs left stale by a crash
            self._loop()
            notifier.stopping()
            self.lane.stop(grace=CLIP_STOP_GRACE)
            if guard.pause is None:
                guard.guarded(self._take_clips)  # the rows the lane finished meanwhile
            if guard.pause is None:
                guard.guarded(self._flush)
            if guard.pause is not None:
                log.warning("stopping while paused (%s): the CSVs of new results are written at the next start, "
                            "from the journal", guard.pause.reason)
            elif self.writers.aside:
                log.warning("stopping with camera folders set aside (%s): their CSVs are written at the next start, "
                            "from the journal", ", ".join(map(display, self.writers.aside)))
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)
            self.intake.events.stop()
            if self.lane is not None:
                self.lane.stop(grace=0)  # an error stopped the loop: what the lane has not recorded is redone
            self._let_go_of_outputs()
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
        """The model and backend and the CSV writers (the journal comes next, `DiskGuard.open_at_start`); returns
        the backend choice."""
        config = self.config
        try:  # before the model loads: a read-only or missing OUT fails at once
            check_writable(self.out / STATE_DIR, "--out")
        except DataError as exc:
            if storage_fault(exc) != "disk full":
                raise  # a full disk is waited out (open_at_start), so that systemd does not restart us in a loop
        bundle = load_bundle(config.bundle)
        if bundle.crop is not None:  # the watch has no detector boxes to give it
            raise BundleError(f"{bundle.model_id} was trained on detector crops (bundle.json \"crop\"): it classifies "
                              "boxes, and the watch classifies whole frames. Watch with a whole-frame model, or run "
                              "MegaDetector and `trapcls predict --detections` on each folder.")
        choice = choose_backend(config.backend, bundle)
        backend = create_backend(choice.name, bundle, threads=config.threads)
        self.summary.backend = f"{choice.name} on {backend.device}"
        log.info("backend %s on %s (%s)", choice.name, backend.device, choice.reason)
        self._bundle, self._backend = bundle, SharedBackend(backend)  # the clip lane's thread calls it too
        self._batch = config.batch_size or DEFAULT_BATCH.get(backend.device, 8)
        self.lane = ClipLane(bundle, self._backend, config, batch_size=self._batch)
        self.writers = Writers(config, self.out, bundle.layout("field", config.blank_threshold),
                               whole_disk=self.guard.whole_disk)
        if self.writers.layout.blank_rule is not None:
            log.info("%s", self.writers.layout.blank_rule.describe())
        return choice

    def _open_outputs(self) -> None:
        """(Re)open the files the daemon writes to: the journal (and what it holds) and --all-csv."""
        if self.journal is not None:
            self.journal.close()
        self.writers.close_log()
        self.journal = self._open_journal()
        self.intake.attach(self.journal)
        self.writers.open_log(self.journal)

    def _let_go_of_outputs(self) -> None:
        """Paused or stopping: --all-csv is closed (reopened on resume; a torn last line is cut then)."""
        if self.writers is not None:
            self.writers.close_log()

    def _open_journal(self) -> Journal:
        """The journal, bound to this model; a damaged one is rebuilt from the CSVs first."""
        path = journal_path(self.out)
        try:
            journal = Journal(path)
        except CorruptJournal as exc:
            Rebuild(inbox=self.inbox, out=self.out, folder_depth=self.config.folder_depth,
                    layout=self.writers.layout, bundle=self._bundle, max_attempts=self.config.max_attempts,
                    ).run(path, exc.reason)
            journal = Journal(path)
        journal.bind_model(self._bundle.classes, self._bundle.model_id)
        return journal

    def _loop(self) -> None:
        """The processing loop (in the main thread, so its watchdog pings mean work is moving)."""
        config, intake, guard = self.config, self.intake, self.guard
        next_scan, idle_since = 0.0, time.monotonic()
        self._last_flush = time.monotonic()
        while not self._stop:
            self.notifier.watchdog()
            if time.monotonic() >= next_scan:
                intake.scan()
                next_scan = time.monotonic() + config.rescan_interval
            if intake.events.keep_alive():
                next_scan = 0.0  # files may have arrived while nothing watched: rescan now
            if guard.held():  # events are still taken in (memory only); nothing is written
                guard.report()
                intake.wait_for_events(timeout=0.5)
                continue
            work = guard.guarded(self._step)
            if work is None:
                continue  # paused by a write that failed: guard.held takes over
            guard.confirm_resume()
            if work:
                idle_since = time.monotonic()
            self._errors.summarise()
            if not work:
                if config.idle_exit is not None and not intake.waiting and not self.journal.pending_count() \
                        and self.lane.idle and time.monotonic() - idle_since >= config.idle_exit:
                    break
                intake.wait_for_events(timeout=min(0.5, max(config.settle / 4, 0.05)))

    def _step(self) -> bool:
        """Settle, record the clips the lane finished and give it more, classify a few batches of frames, rewrite
        the CSVs when due, report; True if there was work."""
        self.intake.settle()
        work = self._take_clips()
        if self.lane.idle:
            clips = self._unchanged(self.journal.pending(limit=CLIPS_PER_RUN, clips=True))
            if clips:
                self.lane.start(clips)
                work = True
        frames = self.journal.pending(limit=self._batch * 4, clips=False)
        if frames:
            self._classify(frames)
            work = True
        flush_due = not work or time.monotonic() - self._last_flush >= self.config.flush_interval
        if flush_due and self.journal.dirty_folders():
            self._flush()
            self._last_flush = time.monotonic()
        self.guard.report()
        return work

    def _flush(self) -> None:
        """Rewrite the CSVs of every folder with new results (trapcls.watch.writers), unless OUT is gone."""
        self.guard.check_out()
        self.summary.csv_writes += self.writers.flush(self.journal)

    def _on_signal(self, signum, frame) -> None:
        log.info("%s: finishing the current batch, then exiting", signal.Signals(signum).name)
        self._stop = True

    def _progress(self) -> str:
        """STATUS= for systemd while at work (trapcls.watch.guard says the pause while paused)."""
        stats = self.journal.stats(window=60)
        return (f"backlog {stats['backlog'] + len(self.intake.waiting)}, done {stats['done']}, "
                f"errors {stats['errors']}, {stats['files_per_s_recent']:.1f} files/s")

    # --- classifying -------------------------------------------------------------------------

    def _unchanged(self, work: list[Entry]) -> list[tuple[Entry, ImageFile]]:
        """The files of `work` still as they settled, to classify (a file gone or changed meanwhile is not)."""
        return [(entry, ImageFile(path=self.inbox / entry.path, rel=entry.path)) for entry in work
                if not self._changed(entry)]

    def _changed(self, entry: Entry) -> bool:
        """Whether the file of a pending `entry` is gone (then forgotten) or changed since it settled (then it waits
        to settle again, and is not taken meanwhile): either way, not one to classify or to record a result of."""
        try:
            st = os.stat(self.inbox / entry.path)
        except OSError:
            self.journal.forget(entry.path)  # gone before its turn: nothing to classify
            self.intake.forget(entry.path)
            return True
        if (st.st_size, st.st_mtime_ns) != (entry.size, entry.mtime_ns):
            self.intake.saw(entry.path)
            self.journal.defer(entry.path, self.config.settle + 0.5)
            return True
        return False

    def _classify(self, work: list[Entry]) -> None:
        """Classify the frames of `work` that are still as they settled, recording each batch as it finishes."""
        todo = self._unchanged(work)
        entries = {entry.path: entry for entry, _ in todo}
        batches = classify_batches([f for _, f in todo], self._bundle, self._backend, batch_size=self._batch,
                                   workers=self.config.workers)
        try:
            for results in batches:
                self._record(results, entries)
                if self._stop:
                    break
        finally:
            batches.close()

    def _take_clips(self) -> bool:
        """Record the rows the clip lane finished; True if there were any.

        A clip that changed while it was decoded (a copy that went on after a pause) gets no row, failed or not:
        it waits to settle again. A failure counts (towards --max-attempts, then an error row) only once the
        clip has been unchanged for --clip-settle, as a clip taken without a close event has: one taken on its
        close event may be reopened and written on by a copy tool that works in sessions, so its failure is
        tried again when that time has passed, unrecorded."""
        finished, error = self.lane.take()
        rows = []
        for entry, row in finished:
            if self._changed(entry):
                continue
            # unchanged since its mtime (this machine's clock permitting), and at least since it was filed
            wait = self.config.clip_settle - (time.time() - min(entry.mtime_ns / 1e9, entry.updated))
            if not row.ok and wait > 0:
                self.journal.defer(entry.path, wait)
                continue
            rows.append((entry, row))
        if rows:
            self._record([row for _, row in rows], {entry.path: entry for entry, _ in rows})
        if error is not None:
            raise error
        return bool(finished)

    def _record(self, results: list[Row], entries: dict[str, Entry]) -> None:
        """Commit the rows of one batch of frames (or of clips) to the journal, and append them to --all-csv."""
        done = [(entries[r.path], [float(p) for p in r.probs], r.captured or None) for r in results if r.ok]
        failed = [(entries[r.path], r.error or "unknown error", r.captured or None) for r in results if not r.ok]
        final = self.journal.record(done, failed, max_attempts=self.config.max_attempts,
                                    backoff=max(self.config.settle, 1.0),
                                    clips={r.path: r.clip for r in results if r.ok and r.clip is not None})
        for entry, error, _ in failed:
            self._errors.note(entry.path, error)
        self.summary.classified += len(done)
        self.summary.errors += len(final)
        self.writers.log(results, {e.path for e in final} | {e.path for e, _, _ in done})
        self.notifier.watchdog()


class _ErrorLog:
    """Per-file errors: the first few each minute in full, then a count."""

    def __init__(self) -> None:
        self._window_start, self._shown, self._suppressed = time.monotonic(), 0, 0

    def note(self, path: str, error: str) -> None:
        if self._shown < ERRORS_PER_MINUTE:
            log.warning("%s: %s", display(path), error)
            self._shown += 1
        else:
            self._suppressed += 1

    def summarise(self) -> None:
        if time.monotonic() - self._window_start < 60:
            return
        if self._suppressed:
            log.warning("%d more file errors in the last minute (see `trapcls status`)", self._suppressed)
        self._window_start, self._shown, self._suppressed = time.monotonic(), 0, 0
