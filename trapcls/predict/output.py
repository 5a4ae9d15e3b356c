"""CSV writers for prediction results: the `field` table and the competition `submission`."""

from __future__ import annotations

import csv
import io
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from trapcls.exceptions import DataError
from trapcls.fsutil import atomic_write_text
from trapcls.predict import FORMATS
from trapcls.predict.discover import ImageFile

_FORMULA_LEADS = ("=", "+", "-", "@", "\t", "\r")


@dataclass(frozen=True)
class Result:
    """The outcome for one file: probabilities in bundle class order, or the reason it failed."""

    file: ImageFile
    probs: np.ndarray | None
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.error is None


def neutralise(cell: str) -> str:
    """Prefix a quote to text a spreadsheet would run as a formula (a file name can carry one)."""
    return "'" + cell if cell.startswith(_FORMULA_LEADS) else cell


def check_submission_ids(files: list[ImageFile]) -> None:
    """Submission ids are file stems and must be unique; raise DataError listing the clashes."""
    counts = Counter(f.stem for f in files)
    clashes = sorted(stem for stem, n in counts.items() if n > 1)
    if clashes:
        examples = [f.rel for f in files if f.stem in set(clashes[:3])]
        raise DataError(
            f"{len(clashes)} file stems occur more than once ({', '.join(clashes[:5])}), e.g. {', '.join(examples[:6])}; "
            "the submission format uses the stem as id. Use --format field or classify the folders separately."
        )


def check_format(fmt: str) -> None:
    """Raise DataError unless `fmt` is one of FORMATS."""
    if fmt not in FORMATS:
        raise DataError(f"Invalid format {fmt!r}. Only {', '.join(FORMATS)} are supported.")


def render_csv(results: list[Result], classes: tuple[str, ...], fmt: str) -> str:
    """The CSV text for `results` in format `fmt` (one of FORMATS)."""
    check_format(fmt)
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    if fmt == "submission":
        writer.writerow(["id", *map(neutralise, classes)])
        uniform = np.full(len(classes), 1.0 / len(classes))
        for result in sorted(results, key=lambda r: r.file.stem):
            probs = result.probs if result.ok else uniform
            writer.writerow([neutralise(result.file.stem), *map(_fmt, probs)])
    else:
        writer.writerow(["path", "label", "probability", *map(neutralise, classes), "status", "error"])
        for result in sorted(results, key=lambda r: r.file.rel):
            if result.ok:
                top = int(np.argmax(result.probs))
                writer.writerow([neutralise(result.file.rel), neutralise(classes[top]), _fmt(result.probs[top]),
                                 *map(_fmt, result.probs), "ok", ""])
            else:
                writer.writerow([neutralise(result.file.rel), "", "", *([""] * len(classes)), "error",
                                 neutralise(result.error or "")])
    return buffer.getvalue()


def write_csv(path: Path, results: list[Result], classes: tuple[str, ...], fmt: str) -> None:
    """Write the CSV atomically: a crash leaves the previous file or the complete new one."""
    atomic_write_text(path, render_csv(results, classes, fmt))


def _fmt(p: float) -> str:
    return f"{float(p):.8g}"
