"""Join prediction CSVs (shards of one job, or one finished CSV) into one file sorted by key."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from trapcls.core.system.exceptions import DataError
from trapcls.core.system.fsutil import write_csv, writing
from trapcls.core.table.layout import short
from trapcls.core.table.read import check_one_model, read_table

_EXAMPLES = 5


@dataclass(frozen=True)
class MergeSummary:
    """What a merge wrote: data rows (header excluded), how many source files, and where."""

    rows: int
    sources: int
    out: Path

    def lines(self) -> list[str]:
        """What the merge wrote, for the terminal."""
        return [f"{self.rows} rows from {self.sources} files -> {self.out}"]


def merge_csvs(sources: list[Path], out: Path) -> MergeSummary:
    """Write the rows of every source under their shared header to `out`, sorted by first cell.

    Every source is read before `out` is written (atomically), so `out` may be one of them;
    merging a finished CSV into itself puts it in canonical order and is idempotent. Sources
    must share one header, end in a newline (a killed run leaves a torn last line) and hold
    each key once across all of them.
    """
    if not sources:
        raise DataError("Nothing to merge: name at least one prediction CSV.")
    tables = [(path, *read_table(path)) for path in sources]  # all read before `out` is replaced
    header = tables[0][1]
    for path, other, _ in tables[1:]:
        if other != header:
            raise DataError(
                f"{path} has other columns than {sources[0]}: {short(other)} vs {short(header)}. "
                "Merge only CSVs written by the same model with the same --format."
            )
    tagged = [(row, path) for path, _, rows in tables for row in rows]
    if header[-1:] == ["model"]:  # a field CSV: one model's results only
        models = {path: check_one_model(path, len(header) - 1, rows) for path, _, rows in tables if rows}
        if len(set(models.values())) > 1:
            listed = "; ".join(f"{path}: {model}" for path, model in models.items())
            raise DataError(f"These CSVs were written by different models ({listed}). Merge only one model's "
                            "results; re-run the odd shard with the same --bundle.")
    _check_unique(tagged)
    tagged.sort(key=lambda item: item[0][0])
    with writing(out, kept="the CSVs it reads are left as they were"):
        write_csv(out, header, (row for row, _ in tagged))  # atomic: a full disk leaves the old `out`, or none
    return MergeSummary(rows=len(tagged), sources=len(sources), out=out)


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
