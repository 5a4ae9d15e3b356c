"""Errors trapcls raises; the CLI turns each into a message and exit status 1."""


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
