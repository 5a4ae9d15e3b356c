"""Decoding clips in worker processes, so that a decoder that crashes or hangs costs one clip, not the run.

FFmpeg is C: a damaged clip can end the process that decodes it (PyAV before 18.1 died with SIGSEGV on
a stream truncated inside its first frame) or make it spin forever. `ClipDecoder` decodes each clip in one
of a few worker processes. A worker that dies takes only its clip with it: that clip gets the reason
("decoder crashed (signal 11)"), a fresh worker takes its place and the others go on. A clip that runs
past its time limit is killed the same way. Workers start from a fork server or a fresh interpreter,
never by fork(): the parent holds ONNX Runtime's threads, which a forked child would inherit in an
unknown state.

Only `workers` clips are ever being decoded, plus the one the caller holds: memory is bounded by their
sampled frames, whatever the number of clips.
"""

from __future__ import annotations

import contextlib
import logging
import multiprocessing
import os
import signal
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from multiprocessing.connection import Connection, wait
from pathlib import Path

from trapcls.core.frames.preprocess import PreprocessSpec
from trapcls.core.frames.video import DEFAULT_FPS, SampledClip, sample_clip
from trapcls.core.system.exceptions import ImageReadError

log = logging.getLogger(__name__)

# A clip may take this long, plus SECONDS_PER_CLIP_SECOND for each second its header states: a 60 s clip gets
# 150 s, which a decoder running at a tenth of real time still meets. A header's claim counts up to a day,
# so a clip that lies about its length still ends.
DEFAULT_TIMEOUT = 30.0
SECONDS_PER_CLIP_SECOND = 2.0
MAX_STATED_SECONDS = 24 * 3600.0
# How long a worker asked to stop may take before it is killed.
_STOP_GRACE = 2.0

Decode = Callable[..., SampledClip]  # sample_clip's signature: (path, spec, *, fps, max_frames, started)


def _context() -> multiprocessing.context.BaseContext:
    """A fork server where there is one (Linux, macOS), else fresh interpreters (Windows)."""
    if "forkserver" in multiprocessing.get_all_start_methods():
        ctx = multiprocessing.get_context("forkserver")
        # Imported once in the server, so each worker starts in milliseconds (no effect once it runs).
        ctx.set_forkserver_preload(["av", "numpy", "PIL.Image", "trapcls.core.frames.video"])
        return ctx
    return multiprocessing.get_context("spawn")


@dataclass(frozen=True)
class _Job:
    """What every worker does to a clip: `decode` with these settings."""

    spec: PreprocessSpec
    fps: float
    max_frames: int | None
    decode: Decode


def _serve(conn: Connection, lifeline: Connection, job: _Job) -> None:
    """A worker: decode each path received until told to stop or the parent is gone."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's to handle: it stops the workers
    threading.Thread(target=_die_with_parent, args=(lifeline,), daemon=True).start()
    try:
        conn.send(("ready", None))
    except OSError:
        return
    while True:
        try:
            path = conn.recv()
        except (EOFError, OSError):
            return
        if path is None:
            return
        try:
            clip = job.decode(path, job.spec, fps=job.fps, max_frames=job.max_frames,
                              started=lambda seconds: conn.send(("started", seconds)))
            message = ("done", clip)
        except ImageReadError as exc:
            message = ("failed", exc.reason)
        except Exception as exc:  # a decoder's bug is this clip's error row, not the worker's end
            message = ("failed", ImageReadError("decoder failed", path, f"{type(exc).__name__}: {exc}").reason)
        try:
            conn.send(message)
        except (BrokenPipeError, OSError):
            return


def _die_with_parent(lifeline: Connection) -> None:
    """End this worker, even mid-clip, once the parent is gone (killed, with no chance to stop its workers).

    Only the parent holds the lifeline's other end, so it reads as closed once the parent has exited. (The
    fork server, this process's actual parent, outlives the run while any worker lives: prctl's parent-death
    signal would not fire.) FFmpeg decodes without the GIL, so this thread runs even while a decoder spins.
    """
    with contextlib.suppress(OSError, EOFError):
        lifeline.poll(None)
    os._exit(1)


@dataclass
class _Worker:
    """One worker process, its end of the pipe, and the clip it is decoding (None when idle)."""

    process: multiprocessing.process.BaseProcess
    conn: Connection
    path: Path | None = None
    started: float = 0.0
    limit: float = 0.0


class ClipDecoder:
    """Decode clips with `sample_clip` in `workers` processes; use it as a context manager.

    `decode(paths)` yields (path, SampledClip) for each decoded clip and (path, reason) for each that
    failed, in the order they finish (not the order given). A clip may take `timeout` seconds plus
    SECONDS_PER_CLIP_SECOND for each second its container states. `decode_clip` replaces `sample_clip`
    (same signature), for tests that need a decoder that crashes or hangs.
    """

    def __init__(self, spec: PreprocessSpec, *, fps: float = DEFAULT_FPS, max_frames: int | None = None,
                 workers: int = 1, timeout: float = DEFAULT_TIMEOUT, decode_clip: Decode = sample_clip) -> None:
        if workers < 1 or timeout <= 0:
            raise ValueError(f"workers must be at least 1 and timeout positive; got {workers}, {timeout}")
        self._job = _Job(spec, fps, max_frames, decode_clip)
        self._count, self._timeout = workers, timeout
        self._ctx = _context()
        self._workers: list[_Worker] = []
        self._lifeline = self._ctx.Pipe(duplex=False)  # (read end each worker watches, the end only we hold)

    def __enter__(self) -> ClipDecoder:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def pids(self) -> list[int]:
        """The process ids of the live workers (for tests and diagnostics)."""
        return [w.process.pid for w in self._workers if w.process.pid is not None]

    def decode(self, paths: Iterable[Path]) -> Iterator[tuple[Path, SampledClip | str]]:
        """Decode every clip of `paths`, at most `workers` at a time; yield each (path, clip or failure reason)."""
        todo = iter(paths)
        try:
            while len(self._workers) < self._count:
                self._workers.append(self._start())
            for worker in self._workers:
                self._give(worker, todo)
            while any(w.path is not None for w in self._workers):
                for worker, outcome in self._finished():
                    path, worker.path = worker.path, None
                    if not worker.process.is_alive():  # it crashed, or was stopped for taking too long
                        worker = self._replace(worker)
                    self._give(worker, todo)  # before yielding: it decodes while the caller works
                    yield path, outcome
        finally:
            for worker in [w for w in self._workers if w.path is not None]:  # abandoned mid-way: none left behind
                self._workers.remove(worker)
                _kill(worker)

    def close(self) -> None:
        """Stop every worker: ask, wait a moment, then kill. Safe to call twice."""
        workers, self._workers = self._workers, []
        for worker in workers:
            with contextlib.suppress(OSError):
                if worker.path is None:
                    worker.conn.send(None)
        deadline = time.monotonic() + _STOP_GRACE
        for worker in workers:
            if worker.path is None:
                worker.process.join(max(0.0, deadline - time.monotonic()))
            _kill(worker)

    def _start(self) -> _Worker:
        parent, child = self._ctx.Pipe(duplex=True)
        process = self._ctx.Process(target=_serve, args=(child, self._lifeline[0], self._job),
                                    name="trapcls-clip-decoder", daemon=True)
        process.start()
        child.close()
        return _Worker(process, parent)

    def _replace(self, worker: _Worker) -> _Worker:
        _kill(worker)
        fresh = self._start()
        self._workers[self._workers.index(worker)] = fresh
        return fresh

    def _give(self, worker: _Worker, todo: Iterator[Path]) -> None:
        path = next(todo, None)
        if path is None:
            return
        worker.path, worker.started, worker.limit = Path(path), time.monotonic(), self._timeout
        with contextlib.suppress(OSError):  # it died meanwhile: its sentinel says so, and the clip gets the reason
            worker.conn.send(worker.path)

    def _finished(self) -> list[tuple[_Worker, SampledClip | str]]:
        """Wait until at least one busy worker has an outcome (a result, a crash or a timeout); return them."""
        while True:
            busy = [w for w in self._workers if w.path is not None]
            now = time.monotonic()
            wait_for = max(0.0, min(w.started + w.limit for w in busy) - now)
            ready = wait([w.conn for w in busy] + [w.process.sentinel for w in busy], timeout=wait_for)
            done = []
            for worker in busy:
                outcome = self._outcome(worker, ready)
                if outcome is not None:
                    done.append((worker, outcome))
            if done:
                return done

    def _outcome(self, worker: _Worker, ready: list) -> SampledClip | str | None:
        """What `worker` has to say: its clip or failure, a crash, a timeout; None while it is still at work."""
        if worker.conn in ready or worker.conn.poll():
            try:
                kind, value = worker.conn.recv()
            except (EOFError, OSError):
                return self._crash(worker)
            if kind == "ready":  # the clock starts now, not while the process was starting
                worker.started = time.monotonic()
            elif kind == "started":  # the clip is open: its stated duration sets its limit
                worker.limit = self._timeout + SECONDS_PER_CLIP_SECOND * min(value or 0.0, MAX_STATED_SECONDS)
            return value if kind in ("done", "failed") else None
        if worker.process.sentinel in ready:
            return self._crash(worker)
        if time.monotonic() >= worker.started + worker.limit:
            _kill(worker)
            log.warning("%s: decoding took longer than %.0f s; the worker was stopped", worker.path, worker.limit)
            return f"decoding took longer than {worker.limit:.0f} s"
        return None

    def _crash(self, worker: _Worker) -> str:
        worker.process.join(_STOP_GRACE)
        code = worker.process.exitcode
        log.warning("%s: the decoder worker died (exit code %s)", worker.path, code)
        if code is not None and code < 0:
            return f"decoder crashed (signal {-code})"
        return f"decoder exited unexpectedly (status {code})"


def _kill(worker: _Worker) -> None:
    """End `worker`'s process for good and close its pipe."""
    process = worker.process
    if process.is_alive():
        process.kill()
    process.join(_STOP_GRACE)
    with contextlib.suppress(OSError):
        worker.conn.close()
