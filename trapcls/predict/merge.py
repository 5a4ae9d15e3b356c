"""Join prediction CSVs (shards of one job, or one finished CSV) into one file sorted by key."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from trapcls.core.system.exceptions import DataError
from trapcls.core.system.fsutil import write_csv, writing
from trapcls.core.table.layout import CLIP_TAIL, parse_header, short
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
    must share one header (a field CSV without the video clip columns joins one with them: its
    frames get empty clip cells), end in a newline (a killed run leaves a torn last line) and
    hold each key once across all of them.
    """
    if not sources:
        raise DataError("Nothing to merge: name at least one prediction CSV.")
    tables = [(path, *read_table(path)) for path in sources]  # all read before `out` is replaced
    # A shard that met no video clip may lack the clip columns another shard of the job has: the header with
    # them is the merged one, and such a shard's frames get the empty clip cells a frame's row has there.
    reference, header, _ = next((t for t in tables if t[1][-len(CLIP_TAIL):] == CLIP_TAIL), tables[0])
    widened = []
    for path, other, rows in tables:
        if other != header and other + CLIP_TAIL == header:
            other, rows = header, [row + [""] * len(CLIP_TAIL) for row in rows]
        if other != header:
            raise DataError(
                f"{path} has other columns than {reference}: {short(other)} vs {short(header)}. "
                "Merge only CSVs written by the same model with the same --format."
            )
        widened.append((path, rows))
    tagged = [(row, path) for path, rows in widened for row in rows]
    model = _model_column(header, reference)
    if model is not None:  # a field CSV: one model's results only
        models = {path: check_one_model(path, model, rows) for path, rows in widened if rows}
        if len(set(models.values())) > 1:
            listed = "; ".join(f"{path}: {model}" for path, model in models.items())
            raise DataError(f"These CSVs were written by different models ({listed}). Merge only one model's "
                            "results; re-run the odd shard with the same --bundle.")
    _check_unique(tagged)
    tagged.sort(key=lambda item: item[0][0])
    with writing(out, kept="the CSVs it reads are left as they were"):
        write_csv(out, header, (row for row, _ in tagged))  # atomic: a full disk leaves the old `out`, or none
    return MergeSummary(rows=len(tagged), sources=len(sources), out=out)


def _model_column(header: list[str], path: Path) -> int | None:
    """Where a field CSV's model column is (with or without the clip columns after it); None for a submission CSV,
    a field CSV written before the column existed, and any other CSV (merge joins those too)."""
    try:
        return parse_header(header, path).model
    except DataError:
        return None


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
