"""Errors trapcls raises; the CLI turns each into a message and exit status 1 (2 for an OptionError)."""

from __future__ import annotations

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

    `captured` keeps the EXIF capture time when the header was readable (a JPEG cut short keeps
    its EXIF), so an unreadable frame still falls into its event.
    """

    def __init__(self, message: str, *, captured: str | None = None) -> None:
        super().__init__(message)
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
