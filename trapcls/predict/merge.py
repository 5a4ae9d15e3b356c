"""Join prediction CSVs (shards of one job, or one finished CSV) into one file sorted by key."""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass
from pathlib import Path

from trapcls.exceptions import DataError
from trapcls.fsutil import atomic_write_text

_EXAMPLES = 5


@dataclass(frozen=True)
class MergeSummary:
    """What a merge wrote: data rows (header excluded), how many source files, and where."""

    rows: int
    sources: int
    out: Path


def merge_csvs(sources: list[Path], out: Path) -> MergeSummary:
    """Write the rows of every source under their shared header to `out`, sorted by first cell.

    Every source is read before `out` is written (atomically), so `out` may be one of them;
    merging a finished CSV into itself puts it in canonical order and is idempotent. Sources
    must share one header, end in a newline (a killed run leaves a torn last line) and hold
    each key once across all of them.
    """
    if not sources:
        raise DataError("Nothing to merge: name at least one prediction CSV.")
    tables = [(path, *_read_csv(path)) for path in sources]  # all read before `out` is replaced
    header = tables[0][1]
    for path, other, _ in tables[1:]:
        if other != header:
            raise DataError(
                f"{path} has other columns than {sources[0]}: {_short(other)} vs {_short(header)}. "
                "Merge only CSVs written by the same model with the same --format."
            )
    tagged = [(row, path) for path, _, rows in tables for row in rows]
    _check_unique(tagged)
    tagged.sort(key=lambda item: item[0][0])
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(row for row, _ in tagged)
    atomic_write_text(out, buffer.getvalue())
    return MergeSummary(rows=len(tagged), sources=len(sources), out=out)


def _read_csv(path: Path) -> tuple[list[str], list[list[str]]]:
    """Header and rows of a complete prediction CSV; refuses missing, empty, torn or ragged files."""
    try:
        data = path.read_bytes()
        text = data.decode("utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise DataError(f"Cannot read {path}: {exc}.") from exc
    if not data:
        raise DataError(f"{path} is empty: it has no header row. Re-run the command that writes it.")
    if not data.endswith(b"\n"):
        raise DataError(
            f"{path} ends in an incomplete line: its run was interrupted. Re-run that shard's predict command "
            "(it resumes and finishes the file), then merge again."
        )
    try:
        table = list(csv.reader(io.StringIO(text, newline=""), strict=True))
    except csv.Error as exc:
        raise DataError(f"{path} is not a valid CSV: {exc}.") from exc
    header, rows = table[0], table[1:]
    for line, row in enumerate(rows, start=2):
        if len(row) != len(header):
            raise DataError(f"{path}: row {line} has {len(row)} cells, the header {len(header)}. The file is "
                            "damaged; re-run that shard's predict command with --overwrite.")
    return header, rows


def _check_unique(tagged: list[tuple[list[str], Path]]) -> None:
    """Refuse keys (first cells) that occur more than once, saying in which files."""
    where: dict[str, list[str]] = {}
    for row, path in tagged:
        where.setdefault(row[0], []).append(str(path))
    dupes = [key for key, files in where.items() if len(files) > 1]
    if dupes:
        examples = "; ".join(f"{key!r} in {', '.join(where[key])}" for key in dupes[:_EXAMPLES])
        count = "1 key occurs" if len(dupes) == 1 else f"{len(dupes)} keys occur"
        raise DataError(
            f"{count} more than once, e.g. {examples}. Each image must be in exactly one source: "
            "were the shards run with different inputs, or the same --shard twice?"
        )


def _short(cells: list[str], limit: int = 100) -> str:
    text = ",".join(cells)
    return text if len(text) <= limit else text[: limit - 3] + "..."
