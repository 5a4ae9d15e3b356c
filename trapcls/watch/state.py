"""What the watch daemon is doing, for `trapcls status`: running, paused (why, where, since) or stopped.

The daemon keeps OUT/.trapcls/daemon.json while it runs, and removes it when it stops cleanly (a
file left behind by a process that is gone means the daemon died). It is written atomically while
there is room. On a full disk an atomic write cannot happen (its temp file needs new space), so the
file, always written at the same size (FILE_BYTES), is overwritten in place instead, which needs no
new blocks on the usual file systems. Where even that fails (a read-only or vanished disk) the file
keeps the last state, and `daemon_state` infers the pause from the disk itself: read-only, full, or
below the --min-free the daemon recorded at start. A daemon whose disk was full from the start never
wrote the file: it is found by its command line (trapcls.watch.running), its pause inferred the same way.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import time
from pathlib import Path

from trapcls.core.system.fsutil import atomic_write_bytes, free_mib
from trapcls.watch.running import find_watch

log = logging.getLogger(__name__)

FILE_BYTES = 4096  # one page: an in-place rewrite reuses the blocks the file already has
RUNNING, PAUSED, STOPPED = "running", "paused", "stopped"


def write_state(path: Path, state: dict) -> None:
    """Record the daemon's state; best effort (a state that cannot be recorded never stops the daemon)."""
    data = json.dumps({**state, "pid": os.getpid(), "host": socket.gethostname(), "updated": time.time()})
    if len(data) >= FILE_BYTES:  # a very long path: keep the record whole, shorten the path
        data = json.dumps({**state, "path": "..." + str(state.get("path", ""))[-1000:], "pid": os.getpid(),
                           "host": socket.gethostname(), "updated": time.time()})
    padded = data.encode().ljust(FILE_BYTES - 1) + b"\n"  # JSON allows the trailing blanks
    if not path.parent.is_dir():  # OUT gone (a disk removed): never make it anew on the disk under its mount point
        return
    try:
        atomic_write_bytes(path, padded)
        return
    except OSError:
        pass
    try:
        fd = os.open(path, os.O_WRONLY)
        try:
            os.pwrite(fd, padded, 0)
            os.fsync(fd)
        finally:
            os.close(fd)
    except OSError as exc:  # read-only or gone: `daemon_state` infers the pause from the disk
        log.debug("cannot record the daemon's state in %s: %s", path, exc)


def clear_state(path: Path) -> None:
    """The daemon stopped cleanly: no state to show (best effort)."""
    try:
        path.unlink(missing_ok=True)
    except OSError as exc:
        log.debug("cannot remove %s: %s", path, exc)


def read_state(path: Path) -> dict | None:
    """The recorded state, or None when there is none (no daemon running, or one that stopped cleanly)."""
    for _ in range(3):  # an in-place rewrite may be read half-done: read again
        try:
            return json.loads(path.read_bytes())
        except (OSError, ValueError):
            time.sleep(0.05)
    return None


def daemon_state(out: Path, path: Path) -> dict:
    """What the daemon writing into `out` is doing, from its state file `path` and the disk: `state` (running,
    paused, stopped, or gone: its process ended without stopping cleanly), with `reason`, `path` and `since`
    when paused, `inferred` when the pause is read from the disk rather than recorded.

    A daemon that could never record itself (its disk full from the start) is found among this machine's
    processes by its command line (trapcls.watch.running), and its pause read from the disk likewise."""
    recorded = read_state(path) or {"state": STOPPED}
    if recorded["state"] not in (RUNNING, PAUSED) or not _alive(recorded):
        found = find_watch(out)
        if found is not None:
            recorded = {"state": RUNNING, "pid": found.pid, "min_free_mib": found.min_free,
                        "host": socket.gethostname()}
    state = {key: recorded.get(key) for key in ("state", "reason", "path", "since", "pid", "min_free_mib")}
    state["free_mib"] = free_mib(out)
    state["inferred"] = False
    if state["state"] in (RUNNING, PAUSED) and not _alive(recorded):
        state["state"] = "gone"
    elif state["state"] == RUNNING:
        inferred = _fault_now(out, state["free_mib"], recorded.get("min_free_mib") or 0)
        if inferred:
            state.update(state=PAUSED, reason=inferred, path=str(out), since=None, inferred=True)
    return state


def describe(state: dict) -> str:
    """One line for `trapcls status`: "paused: disk full at PATH since ..." and the like."""
    if state["state"] == PAUSED:
        since = "" if not state["since"] else " since " + time.strftime("%Y-%m-%dT%H:%M:%S",
                                                                        time.localtime(state["since"]))
        free = "" if state["free_mib"] is None else f" ({state['free_mib']:.1f} MiB free now)"
        return f"paused: {state['reason']} at {state['path']}{since}{free}; classifying resumes by itself"
    if state["state"] == "gone":
        return f"not running (process {state['pid']} ended without stopping cleanly)"
    return f"running (process {state['pid']})" if state["state"] == RUNNING else "not running"


def _alive(recorded: dict) -> bool:
    """Whether the recorded process still runs (on another host we cannot tell: take the record as it is)."""
    if recorded.get("host") != socket.gethostname():
        return True
    try:
        os.kill(int(recorded.get("pid") or 0), 0)
    except ProcessLookupError:
        return False
    except (PermissionError, ValueError):
        return True  # another user's process (or an odd record): alive as far as we can tell
    return bool(recorded.get("pid"))


def _fault_now(out: Path, free: float | None, min_free: float) -> str | None:
    """Why a daemon recorded as running would be paused now, seen from the disk: None when it would not be."""
    try:
        readonly = bool(os.statvfs(out).f_flag & os.ST_RDONLY)
    except OSError as exc:
        return f"not reachable ({exc.strerror or exc})"
    if readonly:
        return "read-only file system"
    if free is not None and free <= 0:  # said first, as the daemon says it: a write failed for want of space
        return "disk full"
    if free is not None and min_free and free < min_free:
        return f"less than {min_free:g} MiB free (--min-free)"
    return None
