"""`trapcls ensemble fit`: weights and a temperature for several models, fitted on their out-of-fold predictions.

Members are out-of-fold CSVs (trapcls.evaluate.ensemble_members); the rule that combines them, the optimiser and
the scores are in trapcls.evaluate.ensemble_fit. The result goes to a weights file (`FORMAT`, written atomically)
that `trapcls ensemble apply` (trapcls.evaluate.ensemble_apply) reads. Whether the ensemble helps is judged on its
cross-fitted log loss (each fold scored with weights fitted on the other folds), paired frame by frame with the
best member's: weights scored on the frames they were fitted on would flatter it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from trapcls import __version__
from trapcls.core.metrics import LOG_LOSS_RULE, log_losses, mean_se
from trapcls.core.system.exceptions import DataError
from trapcls.core.system.fsutil import atomic_write_text, refuse_input_as_output, writing
from trapcls.core.system.names import display
from trapcls.evaluate.ensemble_config import EnsembleFitConfig
from trapcls.evaluate.ensemble_fit import Z95, combine, cross_fitted_losses, fit, paired
from trapcls.evaluate.ensemble_members import (
    EXAMPLES,
    Member,
    distinct_models,
    read_oof,
    same_classes,
    same_folds,
    same_frames,
)
from trapcls.evaluate.run import read_labels

FORMAT, VERSION = "trapcls-ensemble", 1
FORMULA = "p = softmax(log(sum_m w_m * p_m) / T): the weighted average of the members' probabilities, then the " \
          "temperature T on its log"
HELPS = "helps: the cross-fitted ensemble beats the best member beyond noise (the 95% interval lies below 0)"
HELPS_ALONE = "helps: the member with the fitted temperature (cross-fitted) beats it as it is beyond noise (the 95% " \
              "interval lies below 0)"
NO_HELP = "not better than the best member beyond noise (the 95% interval of the difference includes 0 or lies " \
          "above it)"


@dataclass
class EnsembleFit:
    """What `ensemble fit` found: the weights file's content (`to_json`), where it went, and notes."""

    classes: tuple[str, ...]
    temperature: float
    members: list[dict]  # model, weight, oof (file name), log_loss, se
    ensemble: dict  # log_loss, se, cross_fitted_log_loss, cross_fitted_se, vs_best
    frames: int
    folds: int
    labels: str
    out: Path
    notes: list[str] = field(default_factory=list)
    created: str = field(default_factory=lambda: datetime.now(timezone.utc).isoformat(timespec="seconds"))

    def to_json(self) -> dict:
        """The weights file: what apply needs (classes, temperature, members' models and weights) and the scores."""
        return {"format": FORMAT, "version": VERSION, "formula": FORMULA, "classes": list(self.classes),
                "temperature": self.temperature, "members": self.members, "ensemble": self.ensemble,
                "frames": self.frames, "folds": self.folds, "labels": self.labels, "log_loss_rule": LOG_LOSS_RULE,
                "trapcls_version": __version__, "created": self.created}

    def lines(self) -> list[str]:
        """The terminal table: each member's and the ensemble's out-of-fold log loss, the paired verdict."""
        e, best = self.ensemble, self.ensemble["vs_best"]
        width = max(30, *(len(_member_name(m)) + 2 for m in self.members))
        lines = [f"ensemble of {len(self.members)} member{'s' if len(self.members) > 1 else ''} on {self.frames} "
                 f"out-of-fold frames ({self.folds} folds, labels {self.labels})",
                 f"{'':<{width}}{'weight':>8}{'log loss':>10}{'± SE':>9}"]
        lines += [f"{_member_name(m):<{width}}{m['weight']:>8.3f}{m['log_loss']:>10.4f}{m['se']:>9.4f}"
                  for m in self.members]
        lines += [f"{f'ensemble (T = {self.temperature:.3g}), fitted':<{width}}{'':>8}{e['log_loss']:>10.4f}"
                  f"{e['se']:>9.4f}",
                  f"{'ensemble, cross-fitted by fold':<{width}}{'':>8}{e['cross_fitted_log_loss']:>10.4f}"
                  f"{e['cross_fitted_se']:>9.4f}",
                  f"cross-fitted ensemble - best member ({best['member']}): {best['difference']:+.4f} ± "
                  f"{best['se']:.4f} (95% interval {best['low']:+.4f} to {best['high']:+.4f})",
                  *_with_temperature(e.get("vs_best_with_temperature")),
                  f"verdict: {best['verdict']}",
                  f"weights: {self.out}"]
        return [*lines, *(f"note: {n}" for n in self.notes)]


def _with_temperature(difference: dict | None) -> list[str]:
    if difference is None:  # one member: the ensemble is that member with its temperature
        return []
    return [f"  (against the best member with its own temperature, cross-fitted too: {difference['difference']:+.4f} "
            f"± {difference['se']:.4f}, 95% interval {difference['low']:+.4f} to {difference['high']:+.4f})"]


def _member_name(member: dict) -> str:
    return f"{member['oof']} ({display(member['model'])})"


def fit_ensemble(config: EnsembleFitConfig) -> EnsembleFit:
    """Fit the weights and temperature on the members' out-of-fold frames, score them, write the weights file."""
    refuse_input_as_output(config.out, config.inputs(), flag="--out")
    members = [read_oof(path) for path in config.members]
    distinct_models(members)
    members, notes = same_classes(members, members[0].classes, str(members[0].source))
    members = same_frames(members)
    folds = same_folds(members)
    if len(set(folds.tolist())) < 2:
        raise DataError(f"{members[0].source}: every frame is in fold {folds[0]}; the weights are judged by "
                        "cross-fitting over folds, which needs the out-of-fold predictions of at least 2 folds.")
    labels, label_notes = label_indices(members[0], config)
    probs = np.stack([m.probs for m in members])
    weights, temperature = fit(probs, labels)
    own = [log_losses(m.probs, labels) for m in members]
    fitted = log_losses(combine(probs, weights, temperature), labels)
    cross = cross_fitted_losses(probs, labels, folds)
    best = int(np.argmin([losses.mean() for losses in own]))
    ensemble = {**_scores(fitted), **_scores(cross, "cross_fitted_"),
                "vs_best": _verdict(members[best], cross, own[best], fitted, alone=len(members) == 1)}
    if len(members) > 1:  # how much of the gain a temperature on the best member alone would give
        alone = cross_fitted_losses(probs[[best]], labels, folds)
        ensemble["vs_best_with_temperature"] = {"member": members[best].model, **paired(cross, alone)}
    result = EnsembleFit(
        classes=members[0].classes, temperature=temperature,
        members=[{"model": m.model, "weight": float(w), "oof": m.name, **_scores(losses)}
                 for m, w, losses in zip(members, weights, own)],
        ensemble=ensemble,
        frames=len(labels), folds=len(set(folds.tolist())), labels=config.labels.name, out=config.out,
        notes=notes + label_notes)
    with writing(config.out):  # a folder, a read-only or full disk: one line naming the file
        atomic_write_text(config.out, json.dumps(result.to_json(), indent=2) + "\n")
    return result


def _scores(losses: np.ndarray, prefix: str = "") -> dict:
    mean, se = mean_se(losses)
    return {f"{prefix}log_loss": mean, f"{prefix}se": se}


def _verdict(best: Member, cross: np.ndarray, best_losses: np.ndarray, fitted: np.ndarray, *, alone: bool) -> dict:
    """The cross-fitted ensemble minus the best member, frame by frame, and what it says (the fitted ensemble's
    difference too, for reference: it flatters the ensemble)."""
    difference = paired(cross, best_losses)
    return {"member": best.model, **difference, "interval": f"{Z95:.2f} standard errors (95%, normal)",
            "fitted_difference": float(np.mean(fitted - best_losses)),
            "verdict": (HELPS_ALONE if alone else HELPS) if difference["high"] < 0 else NO_HELP}


def label_indices(member: Member, config: EnsembleFitConfig) -> tuple[np.ndarray, list[str]]:
    """The class index of each of `member`'s frames, matched to --labels (any layout `evaluate --labels` reads) by
    submission id, the file stem; DataError for a frame without exactly one label or with a class no member has."""
    samples = read_labels(config.labels, label_regex=config.label_regex)
    by_stem: dict[str, list[str]] = {}
    for sample in samples:
        by_stem.setdefault(sample.path.stem, []).append(sample.label)
    where = f"--labels {config.labels}"
    missing = [k for k in member.ids if k not in by_stem]
    if missing:
        raise DataError(f"{len(missing)} frames of {member.source} have no label in {where}, e.g. "
                        f"{', '.join(map(display, missing[:EXAMPLES]))}. Give the labels of every training frame.")
    twice = [k for k in member.ids if len(by_stem[k]) > 1]
    if twice:
        raise DataError(f"{len(twice)} frames of {member.source} match more than one label in {where} (the same file "
                        f"stem twice), e.g. {', '.join(map(display, twice[:EXAMPLES]))}; a frame's id is its stem.")
    position = {c: i for i, c in enumerate(member.classes)}
    other = sorted({by_stem[k][0] for k in member.ids} - set(position))
    if other:
        raise DataError(f"{where} labels frames as {', '.join(map(display, other[:EXAMPLES]))}, which the members do "
                        f"not predict (they predict {', '.join(map(display, member.classes))}).")
    unused = len(by_stem) - len(member.ids)
    notes = [f"{unused} labelled frames have no out-of-fold row; they are not used."] if unused > 0 else []
    return np.asarray([position[by_stem[k][0]] for k in member.ids], dtype=np.int64), notes
