"""`trapcls train DATA --folds K`: k-fold cross-validation, every fold into OUT/fold-k/, then the out-of-fold table.

One split for the whole fold set, by site (or the --group-by asked): the seed makes `training.split.kfold_split`
deal the same groups to the same folds in every fold run, so each frame is validated in exactly one fold. Fold k
is an ordinary training run in OUT/fold-k/ (its own split.csv, best.pt, report and bundle), so `--fold k` alone
(one task of a cluster array) writes exactly what the same fold of an all-folds run writes, and a fold killed
part way resumes with --resume as any run does. Once every fold is done, `trapcls.oof` joins them: OUT/bundle (the
fold models averaged, for the test set) and OUT/oof.csv.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

from trapcls.core.system.exceptions import OptionError
from trapcls.oof import fold_dir
from trapcls.training.checkpoint import LAST
from trapcls.training.config import TrainConfig
from trapcls.training.trainer import TrainResult, prepare_run_dir


@dataclass(frozen=True)
class FoldsResult:
    """The fold runs trained, and what joining them gave (None when only some folds were asked for)."""

    out: Path
    runs: list[tuple[int, TrainResult]]
    oof: object | None = None  # trapcls.oof.OofSummary

    def lines(self) -> list[str]:
        lines = []
        for fold, result in self.runs:
            lines += [f"fold {fold}: {line}" for line in result.lines()]
        if self.oof is not None:
            lines += self.oof.lines()
        else:
            lines.append(f"when every fold is trained: trapcls oof {self.out} --out {self.out / 'oof.csv'}")
        return lines


def run_folds(config: TrainConfig, *, show_progress: bool = False) -> FoldsResult:
    """Train fold `config.fold` of `config.folds`, or every fold one after another and then join them."""
    from trapcls.workflow import run_train

    if config.find_lr:
        raise OptionError("find_lr", "runs on one split: give {fold} with it")
    folds = [config.fold] if config.fold is not None else list(range(1, config.folds + 1))
    if config.fold is None and not config.resume:
        prepare_run_dir(config.out, config.overwrite, resume=False)  # OUT itself: new, empty, or --overwrite
    runs = []
    for fold in folds:
        run = fold_dir(config.out, fold)
        # --resume continues each fold that has a checkpoint and starts the ones that never got one.
        resume = config.resume and (run / LAST).is_file()
        fresh = config.overwrite or (config.resume and not resume)
        runs.append((fold, run_train(dataclasses.replace(config, fold=fold, out=run, resume=resume,
                                                         overwrite=fresh), show_progress=show_progress)))
    if config.fold is not None or not runs[-1][1].main:
        return FoldsResult(config.out, runs)
    if runs[-1][1].bundle_dir is None:
        return FoldsResult(config.out, runs)  # --export none: no bundles to join (trapcls export onnx, then oof)
    from trapcls.oof import OofConfig, run_oof

    return FoldsResult(config.out, runs, run_oof(OofConfig(folds=config.out, out=config.out / "oof.csv")))
