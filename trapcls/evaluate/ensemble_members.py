"""The members of an ensemble as `trapcls ensemble` reads them: out-of-fold CSVs (fit) and test predictions (apply).

An out-of-fold (OOF) CSV is what `trapcls oof` writes: the submission layout `id,<classes>` plus `fold` (the fold
whose model did not train on the frame, 1..K) and `model` (the member's id, the same on every row). It is read by
the one CSV reader (trapcls.core.table.read) with its two trailing columns taken off. Test predictions are any
CSV `trapcls predict` writes (field or submission format); a frame is its submission id, the file stem.
Members are then checked against each other (classes, frames, folds) and put in one class and frame order.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, replace
from pathlib import Path, PurePosixPath

import numpy as np

from trapcls.core.system.exceptions import DataError
from trapcls.core.system.names import display, unneutralise
from trapcls.core.table.layout import OOF_TAIL, short
from trapcls.core.table.read import SUM_TOLERANCE, check_one_model, parse_table, read_predictions, read_table

EXAMPLES = 5


@dataclass(frozen=True)
class Member:
    """One member's probabilities: a row per frame (by submission id), a column per class."""

    source: Path
    model: str | None  # the model column; None for a submission CSV, which has none
    classes: tuple[str, ...]
    ids: list[str]
    probs: np.ndarray  # (frames, classes)
    folds: np.ndarray | None = None  # (frames,) the fold of each frame (OOF CSVs only)
    failed: int = 0  # error rows of a field CSV, given the uniform distribution as predict's submission does

    @property
    def name(self) -> str:
        return self.source.name

    def reordered(self, classes: tuple[str, ...]) -> Member:
        """The same member with its columns in the order of `classes` (the same set)."""
        where = {c: i for i, c in enumerate(self.classes)}
        return replace(self, classes=classes, probs=self.probs[:, [where[c] for c in classes]])

    def rows(self, ids: list[str]) -> Member:
        """The same member with the rows of `ids`, in that order (all of them present)."""
        where = {k: i for i, k in enumerate(self.ids)}
        at = [where[k] for k in ids]
        return replace(self, ids=list(ids), probs=self.probs[at],
                       folds=None if self.folds is None else self.folds[at])


def read_oof(path: Path) -> Member:
    """An out-of-fold CSV (`id,<classes>,fold,model`) as a Member; DataError naming the file for anything else."""
    if not path.is_file():
        raise DataError(f"Out-of-fold file {path} does not exist; pass the CSV `trapcls oof --out` wrote.")
    header, cells = read_table(path)
    if header[:1] != ["id"] or header[-2:] != OOF_TAIL or len(header) < 5:
        raise DataError(f"{path}: not an out-of-fold CSV (header {short(header)}); expected id,<classes>,fold,model "
                        "as `trapcls oof` writes it.")
    model = check_one_model(path, len(header) - 1, cells)
    if not cells or not model:
        raise DataError(f"{path}: {'no rows' if not cells else 'an empty model column'}; expected one row per "
                        "training frame and the member's model id on each, as `trapcls oof` writes them.")
    table = parse_table(path, header[:-2], [row[:-2] for row in cells])
    folds = np.asarray([_fold(path, line, row[-2]) for line, row in enumerate(cells, start=2)], dtype=np.int64)
    ids = [row.path for row in table.rows]
    probs = np.asarray([row.probs for row in table.rows], dtype=np.float64)
    check_distributions(path, ids, probs)
    return Member(source=path, model=unneutralise(model), classes=table.classes, ids=ids, probs=probs, folds=folds)


def _fold(path: Path, line: int, cell: str) -> int:
    if not cell.isdigit() or int(cell) < 1:
        raise DataError(f"{path}: row {line}: the fold {cell!r} is not a fold number (1, 2, ...).")
    return int(cell)


def read_test(path: Path) -> Member:
    """A test predictions CSV of `trapcls predict` (field or submission format) as a Member, its rows by submission
    id; a field CSV's error rows get the uniform distribution, as predict's submission format gives them."""
    table = read_predictions(path, distributions=False)
    uniform = np.full(len(table.classes), 1.0 / len(table.classes))
    ids = [row.path if table.fmt == "submission" else PurePosixPath(row.path).stem for row in table.rows]
    twice = sorted(k for k, n in Counter(ids).items() if n > 1)
    if twice:
        raise DataError(f"{path}: {len(twice)} file stems occur more than once ({', '.join(twice[:EXAMPLES])}); a "
                        "submission id is the file stem, so each must be one frame's.")
    probs = np.asarray([row.probs if row.ok else uniform for row in table.rows], dtype=np.float64)
    probs = probs.reshape(len(ids), len(table.classes))
    check_distributions(path, ids, probs)
    return Member(source=path, model=table.model, classes=table.classes, ids=ids, probs=probs,
                  failed=sum(not row.ok for row in table.rows))


def check_distributions(path: Path, ids: list[str], probs: np.ndarray) -> None:
    """DataError naming the file and the first row whose probabilities are not a distribution: a CSV trapcls wrote
    never holds one, and a weighted average of such rows means nothing."""
    bad = ~np.isfinite(probs).all(axis=1) | (probs < 0).any(axis=1) | (np.abs(probs.sum(axis=1) - 1) > SUM_TOLERANCE)
    if bad.any():
        row = int(np.flatnonzero(bad)[0])
        raise DataError(f"{path}: row {row + 2} ({display(ids[row])}): the probabilities are not a distribution "
                        f"(they sum to {probs[row].sum():.4g}; rows like it: {int(bad.sum())}). Use the CSV "
                        "trapcls wrote, unedited.")


def same_classes(members: list[Member], classes: tuple[str, ...], against: str) -> tuple[list[Member], list[str]]:
    """Every member with its columns in the order of `classes` (same names in another order are reordered by name,
    with a note), or DataError naming the member whose classes differ from `against`'s."""
    out, notes = [], []
    for member in members:
        if member.classes == classes:
            out.append(member)
            continue
        if set(member.classes) != set(classes):
            extra, lacking = sorted(set(member.classes) - set(classes)), sorted(set(classes) - set(member.classes))
            raise DataError(f"{member.source} predicts other classes than {against}: "
                            + "; ".join(part for part in (f"it adds {short(extra)}" if extra else "",
                                                          f"it lacks {short(lacking)}" if lacking else "") if part)
                            + ". Ensemble members must predict the same classes.")
        notes.append(f"{member.name}: its class columns are in another order; they were matched by name.")
        out.append(member.reordered(classes))
    return out, notes


def same_frames(members: list[Member]) -> list[Member]:
    """Every member's rows in the first member's frame order, or DataError naming frames only some members hold."""
    first = members[0]
    for member in members[1:]:
        if set(member.ids) != set(first.ids):
            raise DataError(f"{first.source} and {member.source} hold different frames: {_difference(first, member)}. "
                            "Every member must predict the same frames.")
    return [first, *(m.rows(first.ids) for m in members[1:])]


def _difference(a: Member, b: Member) -> str:
    only_a, only_b = sorted(set(a.ids) - set(b.ids)), sorted(set(b.ids) - set(a.ids))
    parts = [f"{len(ids)} only in {m.name} (e.g. {', '.join(map(display, ids[:EXAMPLES]))})"
             for ids, m in ((only_a, a), (only_b, b)) if ids]
    return "; ".join(parts)


def same_folds(members: list[Member]) -> np.ndarray:
    """The fold of each frame, which every member (rows aligned) must agree on; DataError naming a few frames else:
    members of different fold splits cannot be cross-fitted, and one of them saw the other's held-out frames."""
    first = members[0]
    for member in members[1:]:
        differ = np.flatnonzero(member.folds != first.folds)
        if len(differ):
            examples = ", ".join(f"{display(first.ids[i])} ({first.folds[i]} vs {member.folds[i]})"
                                 for i in differ[:EXAMPLES])
            raise DataError(f"{first.source} and {member.source} put {len(differ)} frames in different folds, e.g. "
                            f"{examples}: their fold models were not trained on one split. Build every member's "
                            "out-of-fold CSV from the same --folds split (the same data, K and seed).")
    return first.folds


def distinct_models(members: list[Member]) -> None:
    """DataError when two members carry the same model id: one model given twice would weigh itself."""
    seen: dict[str, Member] = {}
    for member in members:
        if member.model in seen:
            raise DataError(f"{seen[member.model].source} and {member.source} are the same member (model "
                            f"{display(member.model)!r}): pass each member once.")
        seen[member.model] = member
