"""Fine-tuning a timm model: a Trainer that sets a run up, fits it epoch by epoch, and finishes it.

- setup: the data and its split, the model, the loaders, the optimizer and schedule;
- fit: the epochs (trapcls.training.epoch), with a CheckpointKeeper owning best.pt, last.pt and
  early stopping, so a killed run resumes exactly where it was;
- finish: the best weights, temperature calibration on the validation split, curves.png and
  best.safetensors.

The bundle export and the validation report come after training, in trapcls.workflow, so this
package never imports a later stage. Under torchrun every process runs the same Trainer; rank 0
alone validates, decides and writes.
"""

from __future__ import annotations

import json
import logging
import math
import random
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from trapcls.core.frames.crop import CropSpec
from trapcls.core.frames.labels import Sample, load_samples
from trapcls.core.model.build import create_model, preprocess_spec
from trapcls.core.model.bundle import load_bundle
from trapcls.core.model.checkpoint import BEST, load_checkpoint
from trapcls.core.model.probs import probabilities
from trapcls.core.system.deps import require
from trapcls.core.system.exceptions import DataError, OptionError
from trapcls.core.system.fsutil import atomic_write_bytes, atomic_write_text, write_csv
from trapcls.training import distributed
from trapcls.training.calibrate import Calibration, fit_temperature
from trapcls.training.checkpoint import LAST, CheckpointKeeper, GlobalRng, LoaderRng, load_train_state
from trapcls.training.config import TrainConfig
from trapcls.training.crops import CropPlan, check_expanded, plan_crops
from trapcls.training.dataset import make_loaders
from trapcls.training.epoch import Stepper, check_ranks_agree, collect_logits, evaluate, train_one_epoch, trainable
from trapcls.training.lr_find import LrFind, find_lr
from trapcls.training.plots import plot_curves, plot_lr_find
from trapcls.training.recipe import (
    autocast_dtype,
    class_weights,
    ema_model,
    make_optimizer,
    warmup_cosine,
)
from trapcls.training.split import kfold_split, read_split, split_samples, write_split

log = logging.getLogger(__name__)

METRIC_FIELDS = ("epoch", "lr", "train_loss", "train_accuracy", "val_loss", "val_accuracy", "val_log_loss",
                 "val_macro_f1", "images_per_s", "seconds")
# Options that may change between an interrupted run and its resumption without changing the result.
RESUMABLE_DIFFERENCES = frozenset({"resume", "overwrite", "workers", "export", "calibrate", "command",
                                   "train_class_counts"})  # counts follow from the split, which is checked


@dataclass(frozen=True)
class Validation:
    """The validation split and the best model's calibrated probabilities on it, for the report."""

    samples: list[Sample]
    labels: np.ndarray
    probs: np.ndarray
    classes: list[str]
    title: str


@dataclass(frozen=True)
class TrainResult:
    """Where the run went and how the best epoch scored."""

    run_dir: Path
    best_epoch: int
    best_metrics: dict[str, float]
    bundle_dir: Path | None = None  # set by trapcls.workflow once the bundle is exported
    calibration: Calibration | None = None
    lr_find: LrFind | None = None
    main: bool = True  # False on torchrun ranks other than 0, which write and report nothing
    validation: Validation | None = None
    verify_images: tuple[Path, ...] = ()  # real frames of this run, for the export checks
    crops: tuple[str, ...] = ()  # with --detections: what the detections gave (training/crops.py)

    def lines(self) -> list[str]:
        """The run for the terminal: the suggested LR of a sweep, or the best epoch, calibration and outputs."""
        if not self.main:
            return []  # a torchrun process other than rank 0: rank 0 reports
        if self.lr_find:
            return [f"suggested --lr {self.lr_find.suggestion:.2g} (plot: {self.run_dir / 'lr_find.png'})"]
        scores = ", ".join(f"{k}={self.best_metrics[k]:.4f}" for k in ("val_accuracy", "val_log_loss")
                           if k in self.best_metrics)
        lines = [*self.crops, f"best epoch {self.best_epoch}{': ' + scores if scores else ''}"]
        if self.calibration:
            c = self.calibration
            lines.append(f"calibration: temperature {c.temperature:.3f}, validation log loss "
                         f"{c.val_log_loss_before:.4f} -> {c.val_log_loss_after:.4f}")
        lines.append(f"run folder: {self.run_dir}")
        return lines + ([f"bundle: {self.bundle_dir}"] if self.bundle_dir else [])


def train(config: TrainConfig, *, show_progress: bool = False, dist: distributed.Dist | None = None) -> TrainResult:
    """Run a training job as `config` describes and return where its outputs are.

    Under torchrun every process calls this; rank 0 alone writes the run folder and returns the
    full result. Pass `dist` to keep the job's processes together for work after training.
    """
    if dist is not None:
        return Trainer(config, dist, show_progress=show_progress and dist.main).run()
    with distributed.session() as joined:
        result = Trainer(config, joined, show_progress=show_progress and joined.main).run()
        joined.barrier()  # every rank leaves together
        return result


class Trainer:
    """One training run: `setup`, then `fit` (or the LR range test), then `finish`."""

    def __init__(self, config: TrainConfig, dist: distributed.Dist, *, show_progress: bool = False) -> None:
        self.config, self.dist, self.show_progress = config, dist, show_progress

    def run(self) -> TrainResult:
        """setup, then fit and finish (or sweep the learning rate with --find-lr)."""
        self.setup()
        if self.config.find_lr:
            return self.sweep_lr()
        self.fit()
        return self.finish()

    # --- setup ------------------------------------------------------------------------------

    def setup(self) -> None:
        """Check the options, prepare the run folder, and build data, model, loaders and optimizer."""
        config, dist = self.config, self.dist
        check_config(config, dist)
        self.run_dir = prepare_run_dir(config.out, config.overwrite, resume=config.resume)
        dist.barrier()  # every rank has checked the folder before rank 0 writes into it
        if dist.main:
            self.run_dir.mkdir(parents=True, exist_ok=True)
        seed_everything(config.seed)
        self.state = load_train_state(self.run_dir / LAST) if config.resume else None
        self._setup_data()
        self._setup_model()
        self._write_config()
        self.loaders = make_loaders(config, self.train_set, self.val_set, classes=self.classes, spec=self.spec,
                                    dist=dist)
        self._setup_optimizer()
        self.keeper = CheckpointKeeper(self.run_dir, early_stop=config.early_stop, meta={
            "arch": self.arch, "classes": self.classes, "spec": self.spec, "config": self.resolved,
            # A crop run's best.pt, and so its bundle, says the model takes crops and which geometry.
            **({"crop": CropSpec().to_dict()} if self.crops else {})})

    def _setup_data(self) -> None:
        config = self.config
        samples = load_samples(config.data, label_regex=config.label_regex)
        self.classes = sorted({s.label for s in samples})
        self.crops: CropPlan | None = None
        if config.detections is not None:
            self.crops = plan_crops(config.data, config.detections, config.detection_threshold, samples)
        if self.state:  # a resumed run reuses its saved split, since the data folder may have grown since
            self.train_set, self.val_set = read_split(self.run_dir / "split.csv")
            self.grouping = self.state["config"]["split"]
        else:
            split = kfold_split if config.folds else split_samples
            options = ({"folds": config.folds, "fold": config.fold} if config.folds
                       else {"val_fraction": config.val_fraction})
            self.train_set, self.val_set, self.grouping = split(samples, seed=config.seed, group_by=config.group_by,
                                                                **options)
            if self.dist.main:
                write_split(self.run_dir / "split.csv", self.train_set, self.val_set, self.grouping)
        if self.crops:  # split on frames first, then crop: every box of a frame is in its frame's part
            self.train_set = self.crops.expand(self.train_set, "train")
            self.val_set = self.crops.expand(self.val_set, "val")
            for line in self.crops.summary():
                log.info("%s", line)
            check_expanded(self.crops, self.train_set, self.classes)
        log.info("%d images in %d classes: %d train, %d validation %s (split: %s)", len(samples), len(self.classes),
                 len(self.train_set), len(self.val_set), "samples" if self.crops else "images",
                 self.grouping if self.grouping != "none" else "stratified by class")

    def _setup_model(self) -> None:
        config = self.config
        arch, weights, fresh_head, img_size = config.arch, config.weights, False, config.img_size
        if config.from_bundle:
            previous = load_bundle(config.from_bundle)
            arch, weights, img_size = previous.arch, previous.weights_path, img_size or previous.preprocess.height
            fresh_head = previous.classes != tuple(self.classes)
            warn_input_change(previous, crops=self.crops is not None)
            log.info("starting from %s (%s); %s", previous.root, arch,
                     f"class list changed ({', '.join(previous.classes)} -> {', '.join(self.classes)}): classifier "
                     "re-initialised" if fresh_head else "same classes: classifier kept")
        model = create_model(arch, len(self.classes), weights=weights, pretrained=config.pretrained,
                             fresh_head=fresh_head)
        self.spec = preprocess_spec(model, img_size)
        self.device = self.dist.device
        self.amp_dtype = autocast_dtype(self.device.split(":")[0], config.amp)
        if self.device != "cpu":
            model = model.to(self.device, memory_format=require("torch").channels_last)
        self.model, self.arch = model, arch

    def _write_config(self) -> None:
        """config.json: the options as resolved (architecture, learning rate, split...) and the run's facts."""
        self.resolved = {
            **self.config.to_json(), "arch": self.arch, "lr": self.config.peak_lr, "split": self.grouping,
            "device": self.device, "precision": str(self.amp_dtype) if self.amp_dtype else "fp32",
            "classes": self.classes, "preprocess": self.spec.to_dict(), "train_images": len(self.train_set),
            "val_images": len(self.val_set), "processes": self.dist.world,
            # The class frequencies the model learnt: `trapcls adapt` starts from them.
            "train_class_counts": {c: sum(s.label == c for s in self.train_set) for c in self.classes},
            **({"crops": self.crops.facts()} if self.crops else {})}
        if self.state:
            check_same_run(self.state["config"], self.resolved, self.run_dir)
        if self.dist.main:
            atomic_write_text(self.run_dir / "config.json", json.dumps(self.resolved, indent=2) + "\n")

    def _setup_optimizer(self) -> None:
        torch = require("torch")
        config = self.config
        self.optimizer = make_optimizer(self.model, name=config.optimizer, lr=config.peak_lr,
                                        weight_decay=config.weight_decay, layer_decay=config.layer_decay)
        steps_per_epoch = math.ceil(len(self.loaders.train) / config.accumulate)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, warmup_cosine(
            config.epochs * steps_per_epoch, round(config.warmup_epochs * steps_per_epoch)))
        weight = None
        if config.balance == "loss":
            labels = [self.classes.index(s.label) for s in self.train_set]
            weight = torch.tensor(class_weights(labels, len(self.classes)), device=self.device)
        self.criterion = torch.nn.CrossEntropyLoss(weight=weight, label_smoothing=config.label_smoothing)
        self.ema = ema_model(self.model, config.ema_decay) if config.ema_decay else None
        self.step = Stepper(self.optimizer, self.scheduler, accumulate=config.accumulate, amp_dtype=self.amp_dtype,
                            ema=self.ema)

    @property
    def scored(self):
        """The weights that are validated and saved: the EMA's when there is one."""
        return self.ema.module if self.ema is not None else self.model

    def parts(self) -> dict:
        """The run's resumable state by name; CheckpointKeeper saves and restores exactly these."""
        parts = {"model": self.model, "optimizer": self.optimizer, "scheduler": self.scheduler,
                 "scaler": self.step.scaler, "loader_rng": LoaderRng(self.loaders.generator), "rng": GlobalRng()}
        if self.ema is not None:
            parts["ema"] = self.ema
        return parts

    # --- fit --------------------------------------------------------------------------------

    def fit(self) -> None:
        """Train epoch by epoch from the first (or after the last finished, on --resume)."""
        config, parts = self.config, self.parts()
        first = 1
        if self.state:
            first = self.keeper.resume(self.state, parts)
            log.info("resuming %s after epoch %d of %d", self.run_dir, first - 1, config.epochs)
        net, net_frozen = None, None
        for epoch in range(first, config.epochs + 1):
            if self.keeper.stopped:
                break
            frozen = config.freeze_backbone or epoch <= config.freeze_epochs
            if frozen != net_frozen:
                net, net_frozen = trainable(self.model, frozen=frozen, dist=self.dist), frozen
            if self.loaders.sampler is not None:
                self.loaders.sampler.set_epoch(epoch)
            if epoch == config.freeze_epochs + 1 and config.freeze_epochs and not config.freeze_backbone:
                log.info("epoch %d: unfreezing the backbone", epoch)
            self._epoch(epoch, net, frozen=frozen, parts=parts)
        check_ranks_agree(self.model, self.dist)

    def _epoch(self, epoch: int, net, *, frozen: bool, parts: dict) -> None:
        config, dist = self.config, self.dist
        start = time.perf_counter()
        current_lr = max(group["lr"] for group in self.optimizer.param_groups)
        loss_sum, correct, seen = dist.sum(list(train_one_epoch(
            net, self.loaders.train, self.criterion, self.step, frozen=frozen, device=self.device,
            desc=f"epoch {epoch}/{config.epochs}", show_progress=self.show_progress)))
        seconds = time.perf_counter() - start
        if not dist.main:  # rank 0 validates, keeps the best and decides on stopping
            self.keeper.stopped = dist.from_main(False)
            return
        row = {"epoch": epoch, "lr": current_lr, "train_loss": loss_sum / max(seen, 1),
               "train_accuracy": correct / max(seen, 1), "images_per_s": seen / seconds if seconds else float("nan")}
        if self.val_set:
            row.update(evaluate(self.scored, self.loaders.val, self.criterion, device=self.device,
                                show_progress=self.show_progress))
        row["seconds"] = time.perf_counter() - start
        self.keeper.update(epoch, row, self.scored, validated=bool(self.val_set))
        write_csv(self.run_dir / "metrics.csv", METRIC_FIELDS,
                  ([r.get(k, "") for k in METRIC_FIELDS] for r in self.keeper.history))
        log.info("epoch %d/%d  %s", epoch, config.epochs,
                 "  ".join(f"{k}={row[k]:.4g}" for k in METRIC_FIELDS[1:] if k in row and k != "lr"))
        self.keeper.stopped = dist.from_main(self.keeper.stopped)
        self.keeper.save_last(epoch, parts)

    def sweep_lr(self) -> TrainResult:
        """The LR range test instead of training: lr_find.csv, lr_find.png and a suggested rate.

        Under torchrun every rank sweeps its share of each batch with synchronised gradients, and
        the curve is the loss averaged over the ranks.
        """
        config, dist = self.config, self.dist
        net = trainable(self.model, frozen=config.freeze_backbone or bool(config.freeze_epochs), dist=dist)
        sweep = find_lr(net, self.loaders.train, self.criterion, self.optimizer, steps=config.find_lr_steps,
                        device=self.device, mean=lambda value: dist.sum([value])[0] / dist.world)
        if not dist.main:
            return TrainResult(run_dir=self.run_dir, best_epoch=0, best_metrics={}, main=False)
        write_csv(self.run_dir / "lr_find.csv", ["lr", "smoothed_loss"], zip(sweep.lrs, sweep.losses, strict=True))
        plot_lr_find(sweep, self.run_dir / "lr_find.png")
        log.info("LR range test: suggested learning rate %.3g (plot: %s)", sweep.suggestion,
                 self.run_dir / "lr_find.png")
        return TrainResult(run_dir=self.run_dir, best_epoch=0, best_metrics={}, lr_find=sweep)

    # --- finish -----------------------------------------------------------------------------

    def finish(self) -> TrainResult:
        """The best weights, calibrated on the validation split; curves.png and best.safetensors."""
        if not self.dist.main:
            return TrainResult(run_dir=self.run_dir, best_epoch=0, best_metrics={}, main=False)
        model, best = self.scored, self.keeper.best
        model.load_state_dict(load_checkpoint(self.run_dir / BEST)["state_dict"])
        calibration, validation = None, None
        if self.val_set:
            calibration, validation = self._calibrate(model, best)
        plot_curves(self.keeper.history, self.run_dir / "curves.png")
        state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
        atomic_write_bytes(self.run_dir / "best.safetensors", require("safetensors.torch").save(state))
        verify = tuple(dict.fromkeys(s.path for s in (self.val_set or self.train_set)))[:16]  # a frame once
        return TrainResult(run_dir=self.run_dir, best_epoch=int(best["epoch"]), best_metrics=best,
                           calibration=calibration, validation=validation, verify_images=verify,
                           crops=tuple(self.crops.lines()) if self.crops else ())

    def _calibrate(self, model, best: dict[str, float]) -> tuple[Calibration | None, Validation]:
        logits, labels = collect_logits(model, self.loaders.val, device=self.device, show_progress=self.show_progress)
        calibration = None
        if self.config.calibrate:
            calibration = fit_temperature(logits.numpy(), labels.numpy())
            log.info("calibration: temperature %.3f, validation log loss %.4f -> %.4f", calibration.temperature,
                     calibration.val_log_loss_before, calibration.val_log_loss_after)
            self.keeper.save_best(model, calibration=calibration.to_dict())
        probs = probabilities(logits.numpy(), calibration.temperature if calibration else 1.0)
        frames = len({s.path for s in self.val_set})
        title = (f"validation, best epoch {int(best['epoch'])} ("
                 + (f"{len(self.val_set)} crops and whole blank frames of {frames} frames)" if self.crops
                    else f"{len(self.val_set)} images)"))
        return calibration, Validation(samples=self.val_set, labels=labels.numpy(), probs=probs,
                                       classes=self.classes, title=title)


def check_config(config: TrainConfig, dist: distributed.Dist) -> None:
    """Refuse options that cannot work together, before any data is read."""
    if dist.world > 1 and config.batch_size % dist.world:
        raise OptionError("batch_size", f"{config.batch_size} (the global batch) must divide by the {dist.world} "
                                        "processes")
    if config.from_bundle is not None:
        if config.weights is not None or config.pretrained:
            raise OptionError("from_bundle", "already gives the starting weights: leave out {weights} and "
                                             "{pretrained}")
        previous = load_bundle(config.from_bundle)
        if config.arch and config.arch != previous.arch:
            raise OptionError("arch", f"{config.arch} differs from the bundle's {previous.arch}: leave it out, or "
                                      "start from another bundle")
        if previous.weights_path is None:
            raise DataError(f"{previous.root} has no weights.safetensors to start from.")
    elif not config.arch:
        raise OptionError("arch", "is required (or {from_bundle} to continue from an earlier model)")


def warn_input_change(previous, *, crops: bool) -> None:
    """A warning when --from-bundle starts from a model trained on the other input (whole frames or crops).

    Not refused: the backbone's features carry over, and the new bundle records its own input, so nothing
    downstream is fed the wrong kind. But the starting head learnt the other kind, so say so.
    """
    if (previous.crop is not None) == crops:
        return
    was, now = ("whole frames", "detector crops") if crops else ("detector crops", "whole frames")
    log.warning("--from-bundle %s was trained on %s; this run trains on %s, so its weights are only a starting "
                "point, and the new bundle will expect %s", previous.root, was, now, now)


def prepare_run_dir(out: Path, overwrite: bool, *, resume: bool) -> Path:
    """The run folder, refused when it holds another run (unless resuming or overwriting)."""
    if resume:
        if not (out / LAST).is_file():
            raise DataError(f"Nothing to resume: {out / LAST} does not exist. Start the run without --resume.")
        return out
    if out.exists() and not out.is_dir():
        raise DataError(f"--out {out} is a file; a run needs a folder. Choose a new --out.")
    if out.exists() and any(out.iterdir()) and not overwrite:
        raise DataError(f"Run folder {out} is not empty. Choose a new --out, pass --resume to continue an "
                        "interrupted run, or --overwrite to start again.")
    return out


def check_same_run(saved: dict, now: dict, run_dir: Path) -> None:
    """--resume continues only the run it was given: refuse options that would change the result."""
    changed = sorted(k for k in saved.keys() | now.keys()
                     if k not in RESUMABLE_DIFFERENCES and saved.get(k) != now.get(k))
    if changed:
        detail = ", ".join(f"{k}: {saved.get(k)!r} -> {now.get(k)!r}" for k in changed[:5])
        raise DataError(f"--resume needs the options of the interrupted run in {run_dir}; these differ: {detail}.")


def seed_everything(seed: int) -> None:
    """Seed Python's, NumPy's and torch's global generators."""
    torch = require("torch")
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
