"""`trapcls oof OUT`: the out-of-fold table of a fold set, its cross-validation scores, and its averaged bundle.

For every training frame, the probabilities of the one fold model that did not train on it: fold k's bundle
classifies fold k's validation frames (its split.csv), through `trapcls predict` itself, so they are exactly the
probabilities that bundle gives a test frame (its temperature; `--tta` as predict's). The table is the DrivenData
submission layout plus `fold` and `model`: `id,<classes>,fold,model`, one row per frame, sorted by id, where
`model` is the model id of OUT/bundle, the fold models averaged (export/folds.py): the fold set as one member of
an ensemble, whose test predictions (`predict --bundle OUT/bundle`) carry the same id (`trapcls ensemble`).

Scores (log loss, accuracy, balanced accuracy) come with standard errors: over frames, and, where the data has
sites, over sites (cluster-robust: a camera's frames are alike, so the site count, not the frame count, bounds
what a site-grouped CV can tell). The best epoch and the temperature of each fold were chosen on the frames it
scores, which makes these numbers slightly optimistic, as in every early-stopped CV.
"""

from __future__ import annotations

import json
import logging
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from trapcls.core.metrics import balanced_accuracy, balanced_accuracy_se, log_losses, mean_se, top1_hits
from trapcls.core.model.bundle import load_bundle
from trapcls.core.system.exceptions import DataError
from trapcls.core.system.fsutil import refuse_input_as_output, write_csv, writing
from trapcls.core.system.names import display, neutralise
from trapcls.core.table.layout import OOF_TAIL, check_submission_ids
from trapcls.core.table.read import read_predictions
from trapcls.core.table.row import number
from trapcls.training.split import read_split

log = logging.getLogger(__name__)

FOLD_DIR = "fold-{}"  # fold k of a fold set: OUT/fold-k/, an ordinary training run
CONFIG = "config.json"
PREDICTIONS = "oof_predictions.csv"  # each fold's own CSV of its validation frames (predict's, resumable)
WORST_SITES = 5


@dataclass(frozen=True)
class OofConfig:
    folds: Path  # the --out of `trapcls train --folds K`
    out: Path
    tta: bool = False
    batch_size: int | None = None


@dataclass(frozen=True)
class Score:
    """One set of frames' scores, each with its standard error over frames (and over sites, where known)."""

    frames: int
    log_loss: tuple[float, float]
    accuracy: tuple[float, float]
    balanced: tuple[float, float]
    by_site: tuple[float, float] | None = None  # the log loss's and accuracy's SEs over sites
    sites: int = 0

    def cells(self) -> list[str]:
        return [str(self.frames), *(f"{m:.4f} ± {s:.4f}" for m, s in (self.log_loss, self.accuracy, self.balanced))]


@dataclass
class OofSummary:
    out: Path
    bundle: Path
    model: str
    overall: Score
    folds: dict[int, Score] = field(default_factory=dict)
    sites: dict[str, Score] = field(default_factory=dict)

    def lines(self) -> list[str]:
        rows = [("all", self.overall)] + [(f"fold {k}", s) for k, s in sorted(self.folds.items())]
        lines = [f"out-of-fold: {self.overall.frames} frames of {len(self.folds)} folds -> {self.out}",
                 f"member model: {self.model} ({self.bundle}, the folds averaged)",
                 f"{'':<10}{'frames':>7}  {'log loss':>17}  {'accuracy':>17}  {'balanced acc.':>17}"]
        lines += [f"{name:<10}{cells[0]:>7}  {cells[1]:>17}  {cells[2]:>17}  {cells[3]:>17}"
                  for name, cells in ((n, s.cells()) for n, s in rows)]
        lines.append("± is one standard error over frames")
        if self.overall.by_site:
            ll, acc = self.overall.by_site
            lines.append(f"over its {self.overall.sites} sites instead: log loss ± {ll:.4f}, accuracy ± {acc:.4f}")
            worst = sorted(self.sites.items(), key=lambda item: -item[1].log_loss[0])[:WORST_SITES]
            lines.append(f"per site: {sites_path(self.out)}; highest log loss: " + ", ".join(
                f"{display(site)} {score.log_loss[0]:.3f} ({score.frames} frame{'s' if score.frames > 1 else ''})"
                for site, score in worst))
        return lines


def sites_path(out: Path) -> Path:
    return out.with_name(f"{out.stem}.sites.csv")


@dataclass(frozen=True)
class FoldRun:
    """One finished fold of a fold set: its folder, its options as run, and its bundle."""

    fold: int
    run: Path
    config: dict

    @property
    def bundle(self) -> Path:
        return self.run / "bundle"


# What every fold of one set must share: the same data, split and classes (the rest may differ per fold).
SHARED = ("data", "folds", "seed", "group_by", "label_regex", "classes", "detections", "detection_threshold")


def fold_dir(out: Path, fold: int) -> Path:
    return out / FOLD_DIR.format(fold)


def find_folds(out: Path) -> list[FoldRun]:
    """The K finished folds of the fold set in `out`; DataError naming what is missing or inconsistent."""
    if not out.is_dir():
        raise DataError(f"{out} is not a folder; give the --out of `trapcls train --folds K`.")
    found = sorted(p for p in out.glob("fold-*") if p.is_dir() and p.name[5:].isdigit())
    if not found:
        raise DataError(f"{out} holds no fold-k/ folders: it is not the --out of `trapcls train --folds K`.")
    runs = [FoldRun(int(p.name[5:]), p, _config(p)) for p in found]
    first = runs[0].config
    k = first.get("folds")
    for run in runs:
        odd = [key for key in SHARED if run.config.get(key) != first.get(key)]
        if odd or run.config.get("fold") != run.fold:
            raise DataError(f"{run.run} is not a fold of the same cross-validation as {runs[0].run}: "
                            f"{', '.join(odd) or 'fold'} differ{'s' if len(odd) < 2 else ''}. Train every fold with "
                            "the same data and options.")
    missing = sorted(set(range(1, k + 1)) - {r.fold for r in runs}) + \
        [r.fold for r in runs if not (r.bundle / "bundle.json").is_file()]
    if missing:
        raise DataError(f"{out}: fold{'s' if len(missing) > 1 else ''} {', '.join(map(str, sorted(set(missing))))} "
                        f"of {k} {'are' if len(missing) > 1 else 'is'} not finished (no fold-k/bundle). Train "
                        f"{'them' if len(missing) > 1 else 'it'}: trapcls train ... --folds {k} --fold k "
                        f"--out {out} (--resume to continue a killed one).")
    extra = [r.fold for r in runs if r.fold > k]
    if extra:
        raise DataError(f"{out} holds fold-{extra[0]}/, but its folds were trained with --folds {k}.")
    if first.get("detections"):
        raise DataError(f"{out}: out-of-fold tables of crop models (--detections) are not supported yet: their "
                        "validation samples are boxes, not frames.")
    return runs


def _config(run: Path) -> dict:
    try:
        data = json.loads((run / CONFIG).read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise DataError(f"{run / CONFIG} cannot be read ({exc}): {run} is not a finished training run.") from None
    if not isinstance(data, dict) or not data.get("folds"):
        raise DataError(f"{run / CONFIG}: {run} was not trained as a fold (--folds K).")
    return data


def run_oof(config: OofConfig) -> OofSummary:
    """Assemble, check, score and write the out-of-fold table of the fold set in `config.folds`."""
    runs = find_folds(config.folds)
    refuse_input_as_output(config.out, [(f"fold {r.fold}'s split.csv", r.run / "split.csv") for r in runs])
    frames = _validation_frames(runs)
    check_submission_ids([str(s.path) for _, s in frames])
    bundle = _fold_average(config.folds, runs, [s.path for _, s in frames[:4]])
    classes = bundle.classes
    probs = np.zeros((len(frames), len(classes)))
    at = {s.path.stem: i for i, (_, s) in enumerate(frames)}  # ids are unique (checked above)
    for run in runs:
        for stem, p in _predict(run, [s for k, s in frames if k == run.fold], config).items():
            probs[at[stem]] = p
    order = sorted(range(len(frames)), key=lambda i: frames[i][1].path.stem)
    rows = [[neutralise(frames[i][1].path.stem), *map(number, probs[i]), str(frames[i][0]), neutralise(bundle.model_id)]
            for i in order]
    with writing(config.out, "--out"):
        write_csv(config.out, ["id", *map(neutralise, classes), *OOF_TAIL], rows)
    written = np.array([[float(c) for c in row[1:1 + len(classes)]] for row in rows])  # as a reader gets them back
    ordered = [frames[i] for i in order]
    labels = np.array([classes.index(s.label) for _, s in ordered])
    summary = _score(config.out, bundle, written, labels, ordered)
    _write_sites(summary)
    return summary


def _validation_frames(runs: list[FoldRun]) -> list[tuple[int, object]]:
    """(fold, sample) for every frame, from each fold's split.csv; DataError unless each frame is in one fold."""
    seen: dict[Path, int] = {}
    frames, everything = [], None
    for run in runs:
        train, val = read_split(run.run / "split.csv")
        this = {s.path.absolute() for s in train + val}
        if everything is not None and this != everything:
            raise DataError(f"{run.run}/split.csv holds other frames than fold {runs[0].fold}'s: the folds were "
                            "trained on different data. Train every fold on the same DATA.")
        everything = this
        for sample in val:
            key = sample.path.absolute()
            if key in seen:
                raise DataError(f"{display(str(sample.path))} is validated in folds {seen[key]} and {run.fold}: "
                                "the folds' splits differ (another --seed or --group-by?). Retrain with one split.")
            seen[key] = run.fold
            frames.append((run.fold, sample))
    missing = everything - set(seen)
    if missing:
        raise DataError(f"{len(missing)} frames are validated in no fold, e.g. {display(str(sorted(missing)[0]))}: "
                        "the folds' splits differ. Retrain with one split.")
    return frames


def _fold_average(out: Path, runs: list[FoldRun], images: list[Path]):
    """OUT/bundle, the fold models averaged; rebuilt only when its folds are not these (a fold was retrained)."""
    from trapcls.export.folds import export_fold_average

    bundles = [load_bundle(r.bundle) for r in runs]
    target = out / "bundle"
    ids = [b.model_id for b in bundles]
    if (target / "bundle.json").is_file():
        current = load_bundle(target)
        if [f["model"] for f in current.manifest.get("training", {}).get("fold_average", [])] == ids:
            return current
    name = f"{out.resolve().name} {len(runs)}-fold average"
    log.info("averaging the %d fold models into %s", len(runs), target)
    return export_fold_average(bundles, target, name=name, check_images=images)


def _predict(run: FoldRun, samples: list, config: OofConfig) -> dict[str, np.ndarray]:
    """Fold `run`'s bundle on its validation frames, through predict (its CSV in the fold's folder)."""
    from trapcls.predict import PredictConfig, run_predict

    out = run.run / PREDICTIONS
    paths = [s.path.absolute() for s in samples]
    run_predict(PredictConfig(inputs=paths, bundle=run.bundle, out=out, fmt="field", tta=config.tta,
                              batch_size=config.batch_size, overwrite=True))
    table = read_predictions(out)
    failed = [row for row in table.rows if not row.ok]
    if failed:
        raise DataError(f"fold {run.fold}: {len(failed)} validation frames could not be read, e.g. "
                        f"{display(failed[0].path)}: {failed[0].error}")
    return {row.stem: row.probs for row in table.rows}


def _score(out: Path, bundle, probs: np.ndarray, labels: np.ndarray, frames: list) -> OofSummary:
    sites = [s.site for _, s in frames]
    summary = OofSummary(out, bundle.root, bundle.model_id, score(probs, labels, sites if all(sites) else None))
    folds = np.array([k for k, _ in frames])
    for k in sorted(set(folds)):
        mask = folds == k
        summary.folds[int(k)] = score(probs[mask], labels[mask], None)
    if all(sites):
        keys = np.array(sites, dtype=object)
        for site in sorted(set(sites)):
            mask = keys == site
            summary.sites[site] = score(probs[mask], labels[mask], None)
    return summary


def score(probs: np.ndarray, labels: np.ndarray, sites: list[str] | None) -> Score:
    """The scores of one set of frames with their standard errors (core/metrics.py's rules)."""
    losses = log_losses(probs, labels)
    hits = top1_hits(probs, labels)
    by_site = (mean_se(losses, sites)[1], mean_se(hits, sites)[1]) if sites else None
    return Score(len(labels), mean_se(losses), mean_se(hits),
                 (balanced_accuracy(probs, labels), balanced_accuracy_se(probs, labels)), by_site,
                 len(Counter(sites)) if sites else 0)


def _write_sites(summary: OofSummary) -> None:
    if not summary.sites:
        return
    rows = [[neutralise(site), s.frames, *(f"{v:.6g}" for pair in (s.log_loss, s.accuracy, s.balanced) for v in pair)]
            for site, s in sorted(summary.sites.items())]
    write_csv(sites_path(summary.out), ["site", "frames", "log_loss", "log_loss_se", "accuracy", "accuracy_se",
                                        "balanced_accuracy", "balanced_accuracy_se"], rows)
