"""`trapcls ensemble apply`: the fitted ensemble of test predictions, in the exact DrivenData submission layout.

Each test CSV is one member's predictions (`trapcls predict`, field or submission format), matched to the fitted
member by its model column; a submission CSV has none, so it takes the next unmatched member in the weights file's
order, and the note says its model could not be checked. The output is `id,<classes>` with the probabilities of
trapcls.evaluate.ensemble_fit.combine, written as every trapcls CSV writes them, the rows sorted by id as
`predict --format submission` sorts them, or exactly the ids of a `--template` (DrivenData's
submission_format.csv) in its order and its column order.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from trapcls.core.system.exceptions import DataError
from trapcls.core.system.fsutil import refuse_input_as_output, write_csv, writing
from trapcls.core.system.names import display, neutralise
from trapcls.core.table.read import read_predictions
from trapcls.core.table.row import number
from trapcls.evaluate.ensemble import FORMAT, VERSION
from trapcls.evaluate.ensemble_config import EnsembleApplyConfig
from trapcls.evaluate.ensemble_fit import combine
from trapcls.evaluate.ensemble_members import EXAMPLES, Member, read_test, same_classes, same_frames

WEIGHT_SUM_TOLERANCE = 1e-6


@dataclass(frozen=True)
class Weights:
    """A weights file of `ensemble fit`: the classes, the temperature, and each member's model id and weight."""

    source: Path
    classes: tuple[str, ...]
    temperature: float
    models: list[str]
    weights: np.ndarray


@dataclass
class EnsembleApplied:
    """What `ensemble apply` wrote: the submission, its rows, and notes (how members were matched, rows left out)."""

    out: Path
    rows: int
    members: list[str]
    notes: list[str] = field(default_factory=list)

    def lines(self) -> list[str]:
        return [f"{self.rows} rows -> {self.out} (submission layout, ensemble of {len(self.members)} members)"]

    def notices(self) -> list[str]:
        return [f"note: {n}" for n in self.notes]


def read_weights(path: Path) -> Weights:
    """The weights file `ensemble fit` wrote; DataError naming the file and what is wrong for anything else."""
    def refuse(why: str) -> DataError:
        return DataError(f"{path} is not a trapcls ensemble weights file ({why}); write one with `trapcls ensemble "
                         "fit OOF.csv ... --labels L --out weights.json`.")

    if not path.is_file():
        raise DataError(f"Weights file {path} does not exist; pass the file `trapcls ensemble fit --out` wrote.")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise refuse(f"cannot read it as JSON: {exc}") from None
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise refuse(f"no \"format\": \"{FORMAT}\"")
    if data.get("version") != VERSION:
        raise refuse(f"version {data.get('version')!r}; this trapcls reads version {VERSION}")
    classes, members, temperature = data.get("classes"), data.get("members"), data.get("temperature")
    if not isinstance(classes, list) or len(classes) < 2 or len(set(classes)) < len(classes) \
            or not all(isinstance(c, str) for c in classes):
        raise refuse("\"classes\" is not a list of at least 2 distinct names")
    if not isinstance(temperature, (int, float)) or not math.isfinite(temperature) or temperature <= 0:
        raise refuse("\"temperature\" is not a positive number")
    if not isinstance(members, list) or not members or not all(
            isinstance(m, dict) and isinstance(m.get("model"), str) and isinstance(m.get("weight"), (int, float))
            and math.isfinite(m["weight"]) and m["weight"] >= 0 for m in members):
        raise refuse("\"members\" is not a list of {\"model\": id, \"weight\": w >= 0}")
    weights = np.asarray([m["weight"] for m in members], dtype=np.float64)
    if abs(weights.sum() - 1) > WEIGHT_SUM_TOLERANCE:
        raise refuse(f"the weights sum to {weights.sum():.6g}, not 1")
    models = [m["model"] for m in members]
    if len(set(models)) < len(models):
        raise refuse("a model is a member twice")
    return Weights(source=path, classes=tuple(classes), temperature=float(temperature), models=models,
                   weights=weights)


def apply_ensemble(config: EnsembleApplyConfig) -> EnsembleApplied:
    """Combine one test predictions CSV per fitted member with the fitted weights and temperature; write the
    submission (ids sorted as predict sorts them, or the --template's ids and columns in its order)."""
    refuse_input_as_output(config.out, config.inputs(), flag="--out")
    weights = read_weights(config.weights)
    tests = [read_test(path) for path in config.members]
    members, notes = match_members(weights, tests)
    members, reordered = same_classes(members, weights.classes, f"the weights in {weights.source}")
    notes += reordered
    notes += [f"{m.name}: {m.failed} rows are errors (unreadable images); they count as the uniform distribution, "
              "as in predict's submission format." for m in members if m.failed]
    classes = weights.classes
    if config.template is not None:
        ids, classes = template_layout(config.template, weights.classes)
        members, left_out = template_frames(members, ids, config.template)
        notes += left_out
    else:
        members = same_frames(members)
        ids = sorted(members[0].ids, key=neutralise)  # predict's and merge's order: the CSV's first cell
    probs = combine(np.stack([m.rows(ids).probs for m in members]), weights.weights, weights.temperature)
    columns = [weights.classes.index(c) for c in classes]
    with writing(config.out):  # a folder, a read-only or full disk: one line naming the file
        write_csv(config.out, ["id", *map(neutralise, classes)],
                  ([neutralise(k), *map(number, row[columns])] for k, row in zip(ids, probs)))
    return EnsembleApplied(out=config.out, rows=len(ids), members=weights.models, notes=notes)


def match_members(weights: Weights, tests: list[Member]) -> tuple[list[Member], list[str]]:
    """The test CSVs in the order of the fitted members: by model column where a CSV has one, the others (submission
    CSVs) taking the members left in the weights file's order; DataError for a count or model that does not fit."""
    fitted = weights.models
    if len(tests) != len(fitted):
        raise DataError(f"{weights.source} was fitted on {len(fitted)} members ({', '.join(map(display, fitted))}); "
                        f"got {len(tests)} predictions CSV{'s' if len(tests) > 1 else ''}. Pass one test predictions "
                        "CSV per member.")
    slots: list[Member | None] = [None] * len(fitted)
    for test in tests:
        if test.model is None:
            continue
        if test.model not in fitted:
            raise DataError(f"{test.source} was written by the model {display(test.model)!r}, which is not a member "
                            f"fitted in {weights.source} ({', '.join(map(display, fitted))}). Predict the test "
                            "frames with the members' own models.")
        at = fitted.index(test.model)
        if slots[at] is not None:
            raise DataError(f"{slots[at].source} and {test.source} both hold the predictions of the member "
                            f"{display(test.model)!r}: pass each member's once.")
        slots[at] = test
    free = [i for i, slot in enumerate(slots) if slot is None]
    notes = []
    for at, test in zip(free, [t for t in tests if t.model is None]):
        slots[at] = test
        notes.append(f"{test.name} has no model column (submission format): it was taken as the member "
                     f"{display(fitted[at])!r} by its position, and its model could not be checked.")
    return slots, notes


def template_layout(template: Path, classes: tuple[str, ...]) -> tuple[list[str], tuple[str, ...]]:
    """The ids (in order) and class columns of a submission template; DataError unless it is a submission CSV of
    the fitted classes."""
    table = read_predictions(template, distributions=False)
    if table.fmt != "submission":
        raise DataError(f"--template {template} is not a submission CSV (id,<classes>); pass the competition's "
                        "submission_format.csv.")
    if set(table.classes) != set(classes):
        raise DataError(f"--template {template} has the class columns {', '.join(map(display, table.classes))}; the "
                        f"ensemble was fitted on {', '.join(map(display, classes))}.")
    return [row.path for row in table.rows], table.classes


def template_frames(members: list[Member], ids: list[str], template: Path) -> tuple[list[Member], list[str]]:
    """The members hold every id of the template (DataError naming a few missing otherwise); their other frames are
    left out, with a note."""
    wanted = set(ids)
    notes = []
    for member in members:
        held = set(member.ids)
        missing = [k for k in ids if k not in held]
        if missing:
            raise DataError(f"{member.source} has no row for {len(missing)} ids of --template {template}, e.g. "
                            f"{', '.join(map(display, missing[:EXAMPLES]))}. Predict every test frame.")
        extra = sum(k not in wanted for k in member.ids)
        if extra:
            notes.append(f"{member.name}: {extra} frames are not in the template; they are left out.")
    return members, notes
