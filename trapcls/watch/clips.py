"""Video clips classified beside the frames: `ClipLane` runs `classify_clips` in a thread of its own.

A clip takes seconds to minutes to decode, a frame milliseconds. Classified in the processing loop, one long
clip would hold up the frames of every camera, the CSV writes and the watchdog pings behind it; in the lane it
decodes in worker processes (trapcls.predict.clip_workers) while the loop goes on with frames. The lane hands
each finished row back to the loop, which alone writes the journal and the CSVs, for clips as for frames. At a
stop the lane gets a few seconds to finish the clip at hand; a clip it has not finished by then was never
recorded, so it is still pending in the journal and is classified at the next start, as after a kill.

The model is shared between the two: `SharedBackend` keeps the calls in flight within the backend's `slots`
(one on a GPU or a TensorRT engine, whose execution context a second thread must not enter at the same time).
"""

from __future__ import annotations

import logging
import queue
import threading

import numpy as np

from trapcls.core.frames.discover import ImageFile
from trapcls.core.model.bundle import Bundle
from trapcls.core.table.row import Row
from trapcls.predict.backends import Backend
from trapcls.predict.clips import classify_clips
from trapcls.predict.config import RunOptions
from trapcls.watch.journal import Entry

log = logging.getLogger("trapcls.watch.daemon")  # the daemon's log: one stream for the operator

CLIPS_PER_RUN = 16  # clips handed to one classify_clips call (its decoder processes are started once for them)


class SharedBackend:
    """A backend two threads may call at once: at most its `slots` calls run together."""

    def __init__(self, backend: Backend) -> None:
        self._backend = backend
        self.name, self.device, self.slots = backend.name, backend.device, backend.slots
        self._free = threading.BoundedSemaphore(backend.slots)

    def logits(self, batch: np.ndarray) -> np.ndarray:
        with self._free:
            return self._backend.logits(batch)


class ClipLane:
    """Classifies a handful of clips at a time in a thread, beside the processing loop; the loop takes the rows."""

    def __init__(self, bundle: Bundle, backend: SharedBackend, options: RunOptions, *, batch_size: int) -> None:
        self._bundle, self._backend, self._options, self._batch = bundle, backend, options, batch_size
        self.busy: dict[str, Entry] = {}  # path -> journal entry of the clips handed over and not yet taken back
        self._out: queue.SimpleQueue = queue.SimpleQueue()  # Rows, an exception, and None at the end of a run
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def idle(self) -> bool:
        """Nothing handed over is left to take back: the lane may take new clips."""
        return not self.busy and (self._thread is None or not self._thread.is_alive())

    def start(self, clips: list[tuple[Entry, ImageFile]]) -> None:
        """Classify `clips` (at most CLIPS_PER_RUN) in the lane's thread; the lane must be idle."""
        self.busy = {entry.path: entry for entry, _ in clips}
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, args=([f for _, f in clips],), name="clips", daemon=True)
        self._thread.start()

    def _run(self, files: list[ImageFile]) -> None:
        try:
            rows = classify_clips(files, self._bundle, self._backend, self._options, batch_size=self._batch)
            try:
                for batch in rows:
                    for row in batch:
                        self._out.put(row)
                    if self._stop.is_set():
                        break
            finally:
                rows.close()  # here, in the thread that runs it: stops its decoder processes
        except BaseException as exc:  # handed to the loop, which raises it as it would raise a frame's
            self._out.put(exc)
        finally:
            self._out.put(None)

    def take(self) -> tuple[list[tuple[Entry, Row]], BaseException | None]:
        """The rows finished since the last call, with their entries (never waits), and the exception that ended
        the lane's run, if one did. Clips of a run that ended without their row are let go: still pending in
        the journal, they are handed over again."""
        done, error = [], None
        while True:
            try:
                item = self._out.get_nowait()
            except queue.Empty:
                return done, error
            if item is None:
                self.busy.clear()
            elif isinstance(item, BaseException):
                error = item
            elif item.path in self.busy:
                done.append((self.busy.pop(item.path), item))

    def stop(self, grace: float) -> None:
        """Ask the lane to stop after the clip at hand, and wait up to `grace` seconds for it."""
        if self._thread is None or not self._thread.is_alive() or self._stop.is_set():
            return  # nothing running, or asked already
        self._stop.set()
        self._thread.join(timeout=grace)
        if self._thread.is_alive():
            log.info("stopping with %d clips still being decoded: they are classified at the next start",
                     len(self.busy))
