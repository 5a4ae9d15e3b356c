"""Where a watch keeps its files under OUT: each camera folder's CSVs, and its journal and state in OUT/.trapcls."""

from __future__ import annotations

import errno
import os
from pathlib import Path

CSV_NAME = "predictions.csv"  # each camera folder's CSV, under --out
EVENTS_NAME = "events.csv"  # with --events, beside it
STATE_DIR = ".trapcls"  # hidden, so the scans never take it for input
JOURNAL_FILE = "journal.sqlite"
STATE_FILE = "daemon.json"


def journal_path(out: Path) -> Path:
    """Where the journal of a watch writing into `out` lives."""
    return out / STATE_DIR / JOURNAL_FILE


def state_path(out: Path) -> Path:
    """Where a watch writing into `out` records whether it runs or is paused (trapcls.watch.state)."""
    return out / STATE_DIR / STATE_FILE


def open_folder(out: Path, folder: str) -> int:
    """A descriptor of the camera folder `folder` ('/'-separated, "." for OUT itself) under `out`, made if missing.

    Each step below OUT is opened with O_NOFOLLOW, so a camera folder swapped for a symbolic link while its
    card was processed (to another folder, to /) is refused (OSError) instead of written through; writing
    relative to the descriptor (fsutil.atomic_write_at) then keeps to the folder that was opened.
    """
    fd = os.open(out, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)  # OUT itself: the operator's choice
    here = out
    try:
        for part in [] if folder == "." else folder.split("/"):
            here = here / part
            if part in ("", ".", ".."):
                raise OSError(errno.EINVAL, "not a camera folder's name", str(here))
            try:
                os.mkdir(part, dir_fd=fd)  # never follows a link: one already there is EEXIST
            except FileExistsError:
                pass
            try:
                inner = os.open(part, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=fd)
            except OSError as exc:
                why = ("a symbolic link stands where the camera folder was (swapped while its card was processed?), "
                       "and CSVs are never written through one") if os.path.islink(here) else exc.strerror
                raise OSError(exc.errno, why, str(here)) from None
            os.close(fd)
            fd = inner
    except BaseException:
        os.close(fd)
        raise
    return fd
