"""Durable file writes and hashing shared by every stage, and what a failed write means (a full or lost disk)."""

from __future__ import annotations

import csv
import errno
import hashlib
import io
import os
import sqlite3
import stat
import tempfile
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

from trapcls.core.system.exceptions import DataError

DISK_FULL = frozenset({errno.ENOSPC, errno.EDQUOT})
# Errors of the storage rather than of the data: a read-only mount, missing permissions, a disk that was
# removed or a network share that went away.
UNWRITABLE = frozenset({errno.EROFS, errno.EACCES, errno.EPERM, errno.EIO, errno.ENOENT, errno.ENOTDIR,
                        errno.ENODEV, errno.ENXIO, errno.ESTALE, errno.ENOTCONN, errno.EHOSTDOWN})
KEPT = "files written before are left as they were"
# SQLite's names for the same faults (sqlite3.Error.sqlite_errorname, Python 3.11+; the message before that).
_SQLITE_FULL = ("SQLITE_FULL", "database or disk is full")
_SQLITE_UNWRITABLE = (("SQLITE_READONLY", "SQLITE_CANTOPEN", "SQLITE_PERM", "SQLITE_IOERR"),
                      ("readonly database", "unable to open database", "disk I/O error"))
_SQLITE_DAMAGE = "SQLITE_IOERR_SHORT_READ"  # a file cut short: damage, which the watch journal rebuilds


def sha256_file(path: str | Path) -> str:
    """Hex sha256 of a file, read in chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    """Write `data` so `path` holds either the old or the new content, even after a power cut.

    os.replace alone gives atomic visibility, not durability: fsync the file, replace, then
    fsync the directory so the rename itself is on disk.
    """
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as exc:
        raise named(exc, path) from None
    try:
        os.fchmod(fd, _mode_for(path))  # mkstemp makes 0600; keep what a plain open() would give
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
        fsync_dir(path.parent)
    except BaseException as exc:
        Path(tmp).unlink(missing_ok=True)  # a full disk leaves no half-written temp file behind
        if isinstance(exc, OSError):
            raise named(exc, path) from None
        raise


def atomic_write_at(folder: int, name: str, data: bytes) -> None:
    """atomic_write_bytes into the folder open as the descriptor `folder`: the temp file, the rename and the fsync
    act on that folder itself, wherever its path leads by now (a folder swapped for a link is not followed)."""
    temp = f".{name}.{os.urandom(4).hex()}.tmp"
    fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o666, dir_fd=folder)
    try:
        try:  # keep the permissions of the file replaced; a new one gets what a plain open() would give
            old = os.stat(name, dir_fd=folder, follow_symlinks=False)
            if stat.S_ISREG(old.st_mode):
                os.fchmod(fd, old.st_mode & 0o7777)
        except FileNotFoundError:
            pass
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(temp, name, src_dir_fd=folder, dst_dir_fd=folder)
        os.fsync(folder)
    except BaseException:
        try:
            os.unlink(temp, dir_fd=folder)  # no half-written temp file left behind
        except OSError:
            pass  # renamed already, or the folder cannot be written at all
        raise


def _mode_for(path: Path) -> int:
    """The replaced file's permissions, or 0666 less the umask for a new file."""
    try:
        return path.stat().st_mode & 0o7777
    except FileNotFoundError:
        mask = os.umask(0o022)
        os.umask(mask)
        return 0o666 & ~mask


def atomic_write_text(path: str | Path, text: str) -> None:
    """Text (UTF-8) version of atomic_write_bytes."""
    atomic_write_bytes(path, text.encode("utf-8"))


def write_csv(path: str | Path, header: Sequence[str], rows: Iterable[Sequence[object]]) -> None:
    """A whole CSV (header, then rows; "\\n" line ends) written with atomic_write_text."""
    atomic_write_text(path, csv_text(header, rows))


def csv_text(header: Sequence[str], rows: Iterable[Sequence[object]]) -> str:
    """A whole CSV as text: header, then rows; "\\n" line ends."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(rows)
    return buffer.getvalue()


def fsync_dir(path: str | Path) -> None:
    """fsync a directory so renames and new entries in it survive a power cut."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@contextmanager
def writing(path: str | Path, flag: str = "--out", kept: str = KEPT) -> Iterator[None]:
    """Turn an OSError while writing `path` (disk full, read-only, no permission, not a folder) into a
    DataError naming the file and the option that chose it (`write_error`)."""
    try:
        yield
    except OSError as exc:
        raise write_error(exc, path, flag=flag, kept=kept) from exc


# --- when the disk itself fails: full, read-only, gone ---------------------------------------------------


def storage_fault(exc: BaseException) -> str | None:
    """What is wrong with the disk when `exc` (an OSError, a sqlite3.Error, or an error caused by one) comes
    from the storage itself: "disk full", or the system's words ("read-only file system"); None otherwise."""
    while exc is not None and not isinstance(exc, (OSError, sqlite3.Error)):
        exc = exc.__cause__  # a DataError raised `from` the OSError or sqlite3.Error
    if isinstance(exc, OSError):
        if exc.errno in DISK_FULL:
            return "disk full"
        return (exc.strerror or str(exc)).lower() if exc.errno in UNWRITABLE else None
    if exc is None:
        return None
    name, text = getattr(exc, "sqlite_errorname", "") or "", str(exc)
    if name == _SQLITE_FULL[0] or (not name and _SQLITE_FULL[1] in text):
        return "disk full"
    codes, messages = _SQLITE_UNWRITABLE
    unwritable = (name.startswith(codes) and name != _SQLITE_DAMAGE) if name else any(m in text for m in messages)
    return text.lower() if unwritable else None


def free_mib(path: str | Path) -> float | None:
    """MiB an unprivileged writer may still use on the file system of `path` (or of its nearest existing
    folder); None when it cannot be reached."""
    path = Path(path)
    for candidate in (path, *path.parents):
        try:
            st = os.statvfs(candidate)
        except FileNotFoundError:
            continue
        except OSError:
            return None
        return st.f_bavail * st.f_frsize / 2**20
    return None


def named(exc: OSError, path: str | Path) -> OSError:
    """`exc` naming `path` (a failed write() names no file; a temp file's name would mislead)."""
    if exc.filename == str(path):
        return exc
    return OSError(exc.errno, exc.strerror or str(exc), str(path))  # OSError picks the subclass by errno


def write_error(exc: Exception, path: str | Path | None = None, *, flag: str = "--out",
                kept: str = KEPT) -> DataError:
    """The one-line message for a failed write of `path` (default: the file `exc` names): what happened and what to
    do next. `exc` is an OSError, or a sqlite3.Error for a database."""
    path = path if path is not None else getattr(exc, "filename", None)
    where = path if path is not None else f"the {flag} folder"
    fault = storage_fault(exc)
    if fault == "disk full":
        free = free_mib(path) if path is not None else None
        room = f" ({free:.1f} MiB free)" if free is not None else ""
        return DataError(f"disk full writing {where}{room}: free space (or choose another {flag}) and run the same "
                         f"command again; {kept}.")
    reason = getattr(exc, "strerror", None) or str(exc)
    return DataError(f"Cannot write {where}: {reason}. Choose a writable {flag}"
                     f"{' (a read-only disk, one that was removed, or missing permissions?)' if fault else ''}.")


def refuse_input_as_output(out: str | Path, inputs: Iterable[tuple[str, str | Path | None]], *,
                           flag: str = "--out") -> None:
    """DataError when the file `out` names is one of the `inputs` ((what it is, path) pairs; None skipped) however
    it is spelt: another path, a symlink or a hard link to it (same device and inode). A folder among the inputs
    (a bundle) stands for the files directly in it. The one rule every command that writes next to what it
    reads follows, checked before any work, so a mistyped output never costs an input a byte."""
    try:
        target = os.stat(out)
    except (OSError, ValueError):
        return  # nothing there yet (or no file a name can reach): it cannot be an input
    mine = (target.st_dev, target.st_ino)
    for what, path in inputs:
        if path is None:
            continue
        for member in _members(Path(path)):
            try:
                st = os.stat(member)
            except (OSError, ValueError):
                continue
            if (st.st_dev, st.st_ino) == mine:
                if member != Path(path):
                    where = f"is {member.name} of {what}"
                elif os.path.abspath(member) == os.path.abspath(out):
                    where = f"is {what} itself"
                else:
                    where = f"is {what} ({member}) by another name"
                raise DataError(f"{flag} {out} {where}: writing it would destroy that input; choose another {flag}.")


def _members(path: Path) -> list[Path]:
    """`path`, and when it is a folder the entries directly in it."""
    try:
        return [*(Path(entry.path) for entry in os.scandir(path))] if path.is_dir() else [path]
    except OSError:
        return [path]


def check_writable(folder: str | Path, flag: str = "--out") -> None:
    """Make `folder` and create and remove a file in it, so that an unwritable output fails at once (DataError)
    rather than after the work; a full disk passes (creating an empty file needs no space)."""
    folder = Path(folder)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(prefix=".trapcls-probe.", dir=folder)
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        raise write_error(named(exc, folder), flag=flag) from exc
