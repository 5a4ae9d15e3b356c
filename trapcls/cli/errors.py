"""The one error contract of the command line: how a command stops, what it prints, and its exit status.

0   done.
1   a failure the one `error: ...` line explains: a TrapclsError, or a full, read-only or vanished disk.
2   bad usage: an unknown command or option, or an option value outside what it accepts (type, range, choice,
    format), whether typer/click or a config (OptionError) found it; the message names the flag and what is valid.
130 Ctrl-C: one `interrupted: ...` line saying what was kept and how to go on (`watch` instead finishes its batch,
    writes its CSVs and exits 0, as on SIGTERM).
The traceback behind an error only under --verbose. docs/exit-codes.md has the table command by command, and
tests/test_exit_codes.py runs a real case of each.
"""

from __future__ import annotations

import errno
import functools
import logging
import sqlite3
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import typer

from trapcls.core.system.exceptions import OptionError, TrapclsError
from trapcls.core.system.names import display

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Stop:
    """What a command leaves when it stops early (Ctrl-C, a full disk), and how to go on; `{out}` is its --out."""

    kept: str
    go_on: str

    def line(self, out: Path | None) -> str:
        """The one line Ctrl-C prints."""
        return f"interrupted: {self.kept.format(out=out or '--out')}; {self.go_on}."

    def after_disk_error(self, out: Path | None) -> str:
        """What the one-line error of a refused write adds after "run the same command again"."""
        return f"{self.kept.format(out=out or '--out')}: {self.go_on}"


# The commands that keep part of their work; every other one writes each output whole or not at all.
STOPS = {
    "predict": Stop("the rows written so far are kept in {out}", "run the same command again to finish the rest"),
    "train": Stop("{out} keeps every finished epoch", "run the same command with --resume to continue after the "
                                                      "last saved one (or with --overwrite if none was saved)"),
    "watch": Stop("its journal keeps every finished result", "start it again to carry on"),
}
WHOLE = Stop("nothing half-written is left", "run the same command again")


def guarded(name: str, command: Callable[..., Any]) -> Callable[..., Any]:
    """`command` (the typer command `name`) as every command runs: Ctrl-C exits 130 with the line of its Stop, and a
    write the disk refused (full, read-only, gone) becomes the one-line error saying what was kept."""
    stop = STOPS.get(name)

    @functools.wraps(command)
    def run(*args: Any, **kwargs: Any) -> Any:
        try:
            return command(*args, **kwargs)
        except KeyboardInterrupt:
            typer.echo((stop or WHOLE).line(kwargs.get("out")), err=True)
            raise typer.Exit(130) from None
        except (OSError, sqlite3.Error) as exc:  # only those of the storage itself; anything else is a bug
            from trapcls.core.system.fsutil import KEPT, storage_fault, write_error

            # A missing file is more likely a bug than a vanished disk here.
            if storage_fault(exc) is None or getattr(exc, "errno", None) in (errno.ENOENT, errno.ENOTDIR):
                raise
            raise write_error(exc, kept=stop.after_disk_error(kwargs.get("out")) if stop else KEPT) from exc

    return run


def exit_status(exc: TrapclsError, flag: Callable[[str], str]) -> int:
    """Print the one line for `exc` (the traceback behind it only under --verbose) and return the exit status:
    2 for a bad option value (`flag` names the field's flag), 1 for any other failure."""
    log.debug("the traceback behind the error below:", exc_info=exc)
    if isinstance(exc, OptionError):  # wherever it was found: bad usage, like typer's own checks
        typer.echo(display(f"error: Invalid value for '{flag(exc.field)}': {exc.render(flag)}."), err=True)
        return 2
    typer.echo(display(f"error: {exc}"), err=True)
    return 1


@contextmanager
def logging_to_stderr() -> Iterator[None]:
    """Log records as `LEVEL logger: message` on stderr while `main` runs (the root callback sets the level);
    afterwards the root logger is as it was, so a run inside another program (the tests) leaves nothing behind."""
    root, handler = logging.getLogger(), logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
    level = root.level
    root.addHandler(handler)
    try:
        yield
    finally:
        root.removeHandler(handler)
        root.setLevel(level)
