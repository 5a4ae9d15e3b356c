"""Errors trapcls raises; the CLI turns each into a message and exit status 1 (2 for an OptionError)."""

from __future__ import annotations

import os
import re
from collections.abc import Callable


class TrapclsError(Exception):
    """Base class: a failure whose message tells the user what went wrong and what to do."""


class BundleError(TrapclsError):
    """A model bundle is missing, corrupt or incompatible."""


class DataError(TrapclsError):
    """Training or prediction input is missing or malformed."""


class ImageReadError(TrapclsError):
    """One image could not be decoded; predict records it as a row, it never stops a run.

    The message names the file (`problem: path: detail`) for logs and tracebacks on this machine.
    `reason` is the same text without the path (`problem: detail`): it is what goes into the files a
    user shares (the CSV's error cell and every export made from it), whose rows already name the
    file relative to the folders given, so this machine's folder names never leave it.
    `captured` keeps the EXIF capture time when the header was readable (a JPEG cut short keeps
    its EXIF), so an unreadable frame still falls into its event.
    """

    def __init__(self, problem: str, path: str | os.PathLike[str], detail: object = "", *,
                 captured: str | None = None) -> None:
        where, text = os.fspath(path), str(detail)
        super().__init__(f"{problem}: {where}" + (f": {text}" if text else ""))
        # A library's detail may quote the path it was given (an OSError's filename): the file name stands in.
        self.reason = problem + (f": {text.replace(where, os.path.basename(where))}" if text else "")
        self.path = where
        self.captured = captured


class ExportError(TrapclsError):
    """An export failed or did not match the source model within tolerance."""


class MissingDependencyError(TrapclsError):
    """An optional dependency (the `train` or `tensorrt` extra) is not installed."""


class OptionError(TrapclsError):
    """An option's value is outside what it accepts, or does not go with another option's.

    `field` names the config field and `problem` says what is wrong and what is valid; other options the
    problem mentions are written `{field_name}`. The CLI renders them as flags (`render`) and exits 2, as for
    any other bad usage; in Python the message names the fields.
    """

    def __init__(self, field: str, problem: str) -> None:
        self.field, self.problem = field, problem
        super().__init__(f"{field}: {self.render(lambda name: name)}")

    def render(self, name_of: Callable[[str], str | None]) -> str:
        """The problem with each `{field_name}` replaced by `name_of(field_name)` (kept as written if None)."""
        return re.sub(r"\{([a-z][a-z0-9_]*)\}", lambda m: name_of(m[1]) or m[0], self.problem)
