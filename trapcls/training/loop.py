"""`trapcls train`: fine-tune a timm model, keep the best checkpoint, write metrics and a bundle."""

from __future__ import annotations

import csv
import io
import json
import logging
import math
import random
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from trapcls._deps import require
from trapcls.bundle import load_bundle
from trapcls.exceptions import DataError
from trapcls.export import parse_targets
from trapcls.fsutil import atomic_write_text
from trapcls.metrics import accuracy, log_loss, macro_f1
from trapcls.predict.backends import cores, probabilities
from trapcls.preprocess import PreprocessSpec, draft_size, load_image, preprocess, to_array
from trapcls.progress import bar
from trapcls.training import distributed
from trapcls.training.calibrate import Calibration, fit_temperature
from trapcls.training.checkpoint import (BEST, LAST, load_checkpoint, load_train_state, rng_state, save_checkpoint,
                                        save_train_state, set_rng_state)
from trapcls.training.data import Sample, kfold_split, load_samples, read_split, split_samples, write_split
from trapcls.training.lr_find import LrFind, find_lr, plot_lr_find
from trapcls.training.models import create_model, preprocess_spec
from trapcls.training.plots import plot_confusion, plot_curves
from trapcls.training.recipe import (AUGMENTS, BALANCES, OPTIMIZERS, autocast_dtype, BalancedSampler, check_choice,
                                     class_weights, ema_model, make_optimizer, train_transform, warmup_cosine)

log = logging.getLogger(__name__)

DEFAULT_LR = {"adamw": 1e-3, "sgd": 1e-2}
METRIC_FIELDS = ("epoch", "lr", "train_loss", "train_accuracy", "val_loss", "val_accuracy", "val_log_loss",
                 "val_macro_f1", "images_per_s", "seconds")


@dataclass(frozen=True)
class TrainConfig:
    """The resolved settings of a training run; saved as config.json in the run folder."""

    data: Path
    out: Path
    arch: str | None = None
    weights: Path | None = None
    from_bundle: Path | None = None
    pretrained: bool = False
    epochs: int = 5
    img_size: int | None = None
    batch_size: int = 16
    optimizer: str = "adamw"
    lr: float | None = None
    weight_decay: float = 0.05
    label_smoothing: float = 0.1
    freeze_backbone: bool = False
    freeze_epochs: int = 0
    layer_decay: float | None = None
    warmup_epochs: float = 1.0
    augment: str = "trivial"
    crop_scale: float = 0.7
    balance: str = "none"
    accumulate: int = 1
    ema_decay: float | None = None
    early_stop: int = 0
    amp: bool = True
    val_fraction: float = 0.2
    group_by: str = "auto"
    folds: int = 0
    fold: int = 1
    label_regex: str | None = None
    seed: int = 0
    workers: int | None = None
    overwrite: bool = False
    resume: bool = False
    find_lr: bool = False
    find_lr_steps: int = 100
    export: str = "onnx"
    calibrate: bool = True
    command: str = ""  # the command line, for the report

    def to_json(self) -> dict:
        return {k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(self).items()}


@dataclass(frozen=True)
class TrainResult:
    """Where the run went and how the best epoch scored."""

    run_dir: Path
    best_epoch: int
    best_metrics: dict[str, float]
    bundle_dir: Path | None
    calibration: Calibration | None = None
    lr_find: LrFind | None = None
    main: bool = True  # False on torchrun ranks other than 0, which write and report nothing


def train(config: TrainConfig, *, show_progress: bool = False) -> TrainResult:
    """Run a full training job as `config` describes and return where its outputs are.

    Under torchrun every process calls this; rank 0 alone writes the run folder and returns
    the full result, the others return once training is done.
    """
    dist = distributed.setup()
    if not dist.main:
        logging.getLogger("trapcls").setLevel(logging.WARNING)
    try:
        result = _train(config, dist, show_progress=show_progress and dist.main)
        dist.barrier()  # the other ranks wait while rank 0 calibrates and exports, then all leave together
        return result
    finally:
        dist.close()


def _train(config: TrainConfig, dist: distributed.Dist, *, show_progress: bool) -> TrainResult:
    torch = require("torch")
    _validate(config, dist)
    run_dir = _prepare_run_dir(config.out, config.overwrite, resume=config.resume)
    dist.barrier()  # every rank has checked the folder before rank 0 writes into it
    if dist.main:
        run_dir.mkdir(parents=True, exist_ok=True)
    _seed_everything(config.seed)
    state = load_train_state(run_dir / LAST) if config.resume else None

    samples = load_samples(config.data, label_regex=config.label_regex)
    classes = sorted({s.label for s in samples})
    train_set, val_set, grouping = _split(config, samples, run_dir, state, write=dist.main)
    log.info("%d images in %d classes: %d train, %d validation (split: %s)", len(samples), len(classes),
             len(train_set), len(val_set), grouping if grouping != "none" else "stratified by class")

    arch, weights, fresh_head, img_size = config.arch, config.weights, False, config.img_size
    if config.from_bundle:
        previous = load_bundle(config.from_bundle)
        arch, weights, img_size = previous.arch, previous.weights_path, img_size or previous.preprocess.height
        fresh_head = previous.classes != tuple(classes)
        log.info("starting from %s (%s); %s", previous.root, arch,
                 f"class list changed ({', '.join(previous.classes)} -> {', '.join(classes)}): classifier "
                 "re-initialised" if fresh_head else "same classes: classifier kept")
    model = create_model(arch, len(classes), weights=weights, pretrained=config.pretrained, fresh_head=fresh_head)
    spec = preprocess_spec(model, img_size)
    device = dist.device
    device_kind = device.split(":")[0]
    amp_dtype = autocast_dtype(device_kind, config.amp)
    if device != "cpu":
        model = model.to(device, memory_format=torch.channels_last)
    lr = config.lr if config.lr is not None else DEFAULT_LR[config.optimizer]
    resolved = {**config.to_json(), "arch": arch, "lr": lr, "split": grouping, "device": device,
                "amp": str(amp_dtype) if amp_dtype else "fp32", "classes": classes, "preprocess": spec.to_dict(),
                "train_images": len(train_set), "val_images": len(val_set), "processes": dist.world}
    if state:
        _check_same_run(state["config"], resolved, run_dir)
    if dist.main:
        atomic_write_text(run_dir / "config.json", json.dumps(resolved, indent=2) + "\n")

    index = {c: i for i, c in enumerate(classes)}
    train_labels = [index[s.label] for s in train_set]
    workers = config.workers if config.workers is not None else min(2, cores())
    augment = train_transform(spec, augment=config.augment, min_scale=config.crop_scale)
    train_data = _ImageDataset(train_set, index, spec, augment=augment)
    sampler = None
    if config.balance == "sampler":
        sampler = BalancedSampler(train_labels, len(classes), seed=config.seed, rank=dist.rank, world=dist.world)
    elif dist.world > 1:  # each process sees its own 1/world of every epoch, in the same global order
        sampler = torch.utils.data.DistributedSampler(train_data, num_replicas=dist.world, rank=dist.rank,
                                                      shuffle=True, seed=config.seed, drop_last=True)
    generator = torch.Generator().manual_seed(config.seed)
    batch_size = config.batch_size // dist.world  # --batch-size is the global batch
    train_loader = torch.utils.data.DataLoader(
        train_data, batch_size=batch_size, shuffle=sampler is None, sampler=sampler, num_workers=workers,
        generator=generator, drop_last=len(train_set) > config.batch_size, worker_init_fn=_seed_worker)
    val_loader = torch.utils.data.DataLoader(
        _ImageDataset(val_set, index, spec, augment=None), batch_size=config.batch_size, num_workers=workers)

    optimizer = make_optimizer(model, name=config.optimizer, lr=lr, weight_decay=config.weight_decay,
                               layer_decay=config.layer_decay)
    steps_per_epoch = math.ceil(len(train_loader) / config.accumulate)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, warmup_cosine(
        config.epochs * steps_per_epoch, round(config.warmup_epochs * steps_per_epoch)))
    weight = (torch.tensor(class_weights(train_labels, len(classes)), device=device)
              if config.balance == "loss" else None)
    criterion = torch.nn.CrossEntropyLoss(weight=weight, label_smoothing=config.label_smoothing)
    ema = ema_model(model, config.ema_decay) if config.ema_decay else None
    step = Stepper(optimizer, scheduler, accumulate=config.accumulate, amp_dtype=amp_dtype, ema=ema)
    if config.find_lr:
        # Under torchrun every rank sweeps its share of each batch with synchronised gradients, and
        # the curve is the loss averaged over the ranks.
        net = _trainable(model, frozen=config.freeze_backbone or bool(config.freeze_epochs), dist=dist)
        sweep = find_lr(net, train_loader, criterion, optimizer, steps=config.find_lr_steps, device=device,
                        mean=lambda value: dist.sum([value])[0] / dist.world)
        if not dist.main:
            return TrainResult(run_dir=run_dir, best_epoch=0, best_metrics={}, bundle_dir=None, main=False)
        _write_rows(run_dir / "lr_find.csv", ["lr", "smoothed_loss"], [
            {"lr": rate, "smoothed_loss": loss} for rate, loss in zip(sweep.lrs, sweep.losses, strict=True)])
        plot_lr_find(sweep, run_dir / "lr_find.png")
        log.info("LR range test: suggested learning rate %.3g (plot: %s)", sweep.suggestion, run_dir / "lr_find.png")
        return TrainResult(run_dir=run_dir, best_epoch=0, best_metrics={}, bundle_dir=None, lr_find=sweep)

    history: list[dict[str, float]] = []
    best: dict[str, float] | None = None
    first, stopped = 1, False
    if state:
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        step.scaler.load_state_dict(state["scaler"])
        if ema is not None:
            ema.load_state_dict(state["ema"])
        generator.set_state(state["loader_rng"])
        set_rng_state(state["rng"])
        history, best, stopped = state["history"], state["best"], state["stopped"]
        first = state["epoch"] + 1
        log.info("resuming %s after epoch %d of %d", run_dir, state["epoch"], config.epochs)
    scored = ema.module if ema is not None else model
    net, net_frozen = None, None
    for epoch in range(first, config.epochs + 1):
        if stopped:
            break
        frozen = config.freeze_backbone or epoch <= config.freeze_epochs
        if frozen != net_frozen:
            net, net_frozen = _trainable(model, frozen=frozen, dist=dist), frozen
        if sampler is not None:
            sampler.set_epoch(epoch)
        if epoch == config.freeze_epochs + 1 and config.freeze_epochs and not config.freeze_backbone:
            log.info("epoch %d: unfreezing the backbone", epoch)
        start = time.perf_counter()
        current_lr = max(group["lr"] for group in optimizer.param_groups)
        loss_sum, correct, seen = dist.sum(list(train_one_epoch(
            net, train_loader, criterion, step, frozen=frozen, device=device,
            desc=f"epoch {epoch}/{config.epochs}", show_progress=show_progress)))
        seconds = time.perf_counter() - start
        row = {"epoch": epoch, "lr": current_lr, "train_loss": loss_sum / max(seen, 1),
               "train_accuracy": correct / max(seen, 1), "images_per_s": seen / seconds if seconds else float("nan")}
        scored = ema.module if ema is not None else model
        if not dist.main:  # rank 0 validates, keeps the best and decides on stopping
            stopped = dist.from_main(False)
            continue
        if val_set:
            row.update(evaluate(scored, val_loader, criterion, device=device, show_progress=show_progress))
        row["seconds"] = time.perf_counter() - start
        history.append(row)
        _write_rows(run_dir / "metrics.csv", list(METRIC_FIELDS), history)
        log.info("epoch %d/%d  %s", epoch, config.epochs,
                 "  ".join(f"{k}={row[k]:.4g}" for k in METRIC_FIELDS[1:] if k in row and k != "lr"))
        score = row.get("val_log_loss", -epoch)  # without validation the last epoch is kept
        if best is None or score < best.get("val_log_loss", -best["epoch"]):
            best = row
            save_checkpoint(run_dir / BEST, scored, arch=arch, classes=classes, spec=spec, epoch=epoch,
                            metrics=row, config=resolved)
        elif config.early_stop and val_set and epoch - best["epoch"] >= config.early_stop:
            log.info("early stop: validation log loss has not improved for %d epochs (best: epoch %d)",
                     config.early_stop, best["epoch"])
            stopped = True
        stopped = dist.from_main(stopped)
        # Everything a killed run needs to go on exactly where it was: the same batches, the same
        # augmentations, the same schedule.
        save_train_state(run_dir / LAST, {
            "epoch": epoch, "stopped": stopped, "config": resolved, "history": history, "best": best,
            "model": model.state_dict(), "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
            "scaler": step.scaler.state_dict(), "ema": ema.state_dict() if ema is not None else None,
            "loader_rng": generator.get_state(), "rng": rng_state()})
    _check_ranks_agree(model, dist)
    model = scored
    if not dist.main:
        return TrainResult(run_dir=run_dir, best_epoch=0, best_metrics={}, bundle_dir=None, main=False)

    model.load_state_dict(load_checkpoint(run_dir / BEST)["state_dict"])
    calibration = None
    if val_set:
        logits, labels = collect_logits(model, val_loader, device=device, show_progress=show_progress)
        if config.calibrate:
            calibration = fit_temperature(logits.numpy(), labels.numpy())
            log.info("calibration: temperature %.3f, validation log loss %.4f -> %.4f", calibration.temperature,
                     calibration.val_log_loss_before, calibration.val_log_loss_after)
            save_checkpoint(run_dir / BEST, model, arch=arch, classes=classes, spec=spec,
                            epoch=int(best["epoch"]), metrics=best, config=resolved,
                            calibration=calibration.to_dict())
        probs = probabilities(logits.numpy(), calibration.temperature if calibration else 1.0)
        _report_validation(run_dir, probs, labels.numpy(), classes, val_set, config, title=f"validation, best epoch "
                           f"{int(best['epoch'])} ({len(val_set)} images)")
    plot_curves(history, run_dir / "curves.png")
    require("safetensors.torch").save_file({k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()},
                                           str(run_dir / "best.safetensors"))

    bundle_dir = None
    targets = parse_targets(config.export)
    verify = [s.path for s in (val_set or train_set)][:16]
    if "onnx" in targets:
        from trapcls.export.onnx import export_onnx

        bundle_dir = export_onnx(run_dir / BEST, run_dir / "bundle", verify_images=verify).bundle.root
    if "tensorrt" in targets:
        from trapcls.export.tensorrt import export_tensorrt

        export_tensorrt(bundle_dir, verify_images=verify)  # the default profile; rebuild with other flags any time
    return TrainResult(run_dir=run_dir, best_epoch=int(best["epoch"]), best_metrics=best, bundle_dir=bundle_dir,
                       calibration=calibration)


class Stepper:
    """One optimizer step per `accumulate` batches: mixed precision (with loss scaling for fp16),
    the per-step schedule, and the EMA update."""

    def __init__(self, optimizer, scheduler, *, accumulate: int, amp_dtype, ema) -> None:
        torch = require("torch")
        self.optimizer, self.scheduler, self.accumulate, self.amp_dtype, self.ema = (
            optimizer, scheduler, accumulate, amp_dtype, ema)
        self.scaler = torch.amp.GradScaler("cuda", enabled=amp_dtype == torch.float16)
        self._pending = 0

    def autocast(self, device: str):
        torch = require("torch")
        return torch.autocast(device.split(":")[0], dtype=self.amp_dtype, enabled=self.amp_dtype is not None)

    def backward(self, loss, model, *, last: bool) -> None:
        """Accumulate the gradient of `loss`; step when `accumulate` batches (or the epoch's last) are in."""
        self.scaler.scale(loss / self.accumulate).backward()
        self._pending += 1
        if self._pending == self.accumulate or last:
            self.scaler.step(self.optimizer)
            self.scaler.update()
            self.optimizer.zero_grad(set_to_none=True)
            self.scheduler.step()
            if self.ema is not None:
                self.ema.update_parameters(model)
            self._pending = 0


def train_one_epoch(model, loader, criterion, step: Stepper, *, frozen: bool, device: str, desc: str,
                    show_progress: bool) -> tuple[float, int, int]:
    """One pass over the training data; returns the summed loss, correct predictions and images seen."""
    torch = require("torch")
    model.train()
    if frozen:
        _eval_frozen_norms(model)
    total_loss, correct, seen = 0.0, 0, 0
    with bar(len(loader.dataset), desc, enabled=show_progress) as progress:
        for i, (images, labels) in enumerate(loader):
            images, labels = _to_device(images, labels, device)
            with step.autocast(device):
                logits = model(images)
                loss = criterion(logits, labels)
            step.backward(loss, model, last=i == len(loader) - 1)
            with torch.no_grad():
                total_loss += loss.item() * len(labels)
                correct += int((logits.argmax(1) == labels).sum())
            seen += len(labels)
            progress.update(len(labels))
    return total_loss, correct, seen


def collect_logits(model, loader, *, device: str = "cpu", show_progress: bool = False):
    """The model's FP32 logits and the labels over `loader`, in eval mode, as two CPU tensors."""
    torch = require("torch")
    model.eval()
    all_logits, all_labels = [], []
    with torch.no_grad(), bar(len(loader.dataset), "validate", enabled=show_progress) as progress:
        for images, labels in loader:
            all_logits.append(model(_to_device(images, labels, device)[0]).float().cpu())
            all_labels.append(labels)
            progress.update(len(labels))
    return torch.cat(all_logits), torch.cat(all_labels)


def evaluate(model, loader, criterion, *, device: str = "cpu", show_progress: bool = False) -> dict[str, float]:
    """Validation loss, accuracy, clipped multiclass log loss and macro-F1."""
    torch = require("torch")
    logits, labels = collect_logits(model, loader, device=device, show_progress=show_progress)
    probs = torch.softmax(logits.double(), dim=1).numpy()
    y = labels.numpy()
    loss = criterion(logits.to(device), labels.to(device))
    return {"val_loss": float(loss), "val_accuracy": accuracy(probs, y), "val_log_loss": log_loss(probs, y),
            "val_macro_f1": macro_f1(probs, y)}


def _to_device(images, labels, device: str):
    torch = require("torch")
    if device == "cpu":
        return images, labels
    images = images.to(device, non_blocking=True).contiguous(memory_format=torch.channels_last)
    return images, labels.to(device, non_blocking=True)


def _check_ranks_agree(model, dist: distributed.Dist) -> None:
    """Under torchrun every process must end with the same weights; a difference means gradients
    were not synchronised for some parameters, and the run is refused rather than saved."""
    if dist.world == 1:
        return
    total = float(sum(p.detach().double().sum() for p in model.parameters()))
    if not math.isclose(dist.sum([total])[0], total * dist.world, rel_tol=1e-12, abs_tol=1e-9):
        raise RuntimeError("The torchrun processes ended with different weights: gradients were not synchronised. "
                           "Please report this with the command you ran.")
    log.info("all %d processes hold identical weights", dist.world)


def _trainable(model, *, frozen: bool, dist: distributed.Dist):
    """Freeze or unfreeze the backbone and return the module to train: `model` itself, or under
    torchrun a fresh DistributedDataParallel wrapper, because DDP only synchronises the
    parameters that were trainable when it was built."""
    _set_backbone_trainable(model, not frozen)
    if dist.world == 1:
        return model
    torch = require("torch")
    return torch.nn.parallel.DistributedDataParallel(
        model, device_ids=[dist.local_rank] if dist.device != "cpu" else None)


def _seed_worker(worker_id: int) -> None:
    # Augmentation draws from `random`; each loader worker gets its own stream from torch's seed.
    torch = require("torch")
    seed = torch.initial_seed() % 2**32
    random.seed(seed)
    np.random.seed(seed)


class _ImageDataset:
    """Samples -> (tensor, label index) through the one preprocessing definition."""

    def __init__(self, samples: list[Sample], index: dict[str, int], spec: PreprocessSpec, *,
                 augment: Callable[[Image.Image], Image.Image] | None) -> None:
        self.samples, self.index, self.spec, self.augment = samples, index, spec, augment

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, i: int):
        torch = require("torch")
        sample = self.samples[i]
        if self.augment is not None:
            array = to_array(self.augment(load_image(sample.path, min_size=draft_size(self.spec))), self.spec)
        else:
            array = preprocess(sample.path, self.spec)
        return torch.from_numpy(array), self.index[sample.label]


def _split(config: TrainConfig, samples: list[Sample], run_dir: Path, state: dict | None, *, write: bool):
    """Train and validation samples and the grouping used; a resumed run reuses its saved split,
    since the data folder may have grown since."""
    if state:
        train_set, val_set = read_split(run_dir / "split.csv")
        return train_set, val_set, state["config"]["split"]
    if config.folds:
        split = kfold_split(samples, folds=config.folds, fold=config.fold, seed=config.seed, group_by=config.group_by)
    else:
        split = split_samples(samples, val_fraction=config.val_fraction, seed=config.seed, group_by=config.group_by)
    if write:
        write_split(run_dir / "split.csv", *split)
    return split


def _report_validation(run_dir: Path, probs: np.ndarray, labels: np.ndarray, classes: list[str],
                       val_set: list[Sample], config: TrainConfig, *, title: str) -> None:
    """per_class.csv, confusion.png and report.html (as `trapcls evaluate` writes it) for the validation split."""
    from trapcls.evaluate.report import galleries, write_report
    from trapcls.metrics import evaluate_probs

    sites = [s.site or "" for s in val_set]
    metrics = evaluate_probs(probs, labels, classes, sites=sites if any(sites) else None)
    _write_rows(run_dir / "per_class.csv", ["class", "precision", "recall", "f1", "support"], metrics["per_class"])
    plot_confusion(np.asarray(metrics["confusion"]), classes, run_dir / "confusion.png", title=title)
    paths = [s.path for s in val_set]
    write_report(run_dir / "report.html", title=f"trapcls train: {title}", metrics=metrics, classes=classes,
                 galleries=galleries([p.name for p in paths], probs, labels, classes, paths), bundle_summary=None,
                 command=config.command or f"trapcls train (options in {run_dir / 'config.json'})",
                 notes=[f"Validation split of {run_dir}: {len(val_set)} images, the best epoch's weights, calibrated."])


def _validate(config: TrainConfig, dist: distributed.Dist) -> None:
    if dist.world > 1:
        if config.batch_size % dist.world:
            raise DataError(f"--batch-size {config.batch_size} (the global batch) must divide by the "
                            f"{dist.world} processes.")
    if "tensorrt" in parse_targets(config.export):
        require("tensorrt")  # before hours of training, not after
    if config.from_bundle is not None:
        if config.weights is not None or config.pretrained:
            raise DataError("--from-bundle already gives the starting weights; drop --weights/--pretrained.")
        previous = load_bundle(config.from_bundle)
        if config.arch and config.arch != previous.arch:
            raise DataError(f"--arch {config.arch} differs from the bundle's {previous.arch}; drop --arch or "
                            "start from another bundle.")
        if previous.weights_path is None:
            raise DataError(f"{previous.root} has no weights.safetensors to start from.")
    elif not config.arch:
        raise DataError("--arch is required (or --from-bundle to continue from an earlier model).")
    check_choice("--optimizer", config.optimizer, OPTIMIZERS)
    check_choice("--balance", config.balance, BALANCES)
    check_choice("--augment", config.augment, AUGMENTS)
    if config.accumulate < 1:
        raise DataError(f"--accumulate must be at least 1, got {config.accumulate}.")
    if config.freeze_epochs < 0 or config.early_stop < 0 or config.warmup_epochs < 0:
        raise DataError("--freeze-epochs, --early-stop and --warmup-epochs must not be negative.")
    if config.epochs < 1:
        raise DataError(f"--epochs must be at least 1, got {config.epochs}.")
    if config.batch_size < 1:
        raise DataError(f"--batch-size must be at least 1, got {config.batch_size}.")
    if config.img_size is not None and config.img_size < 32:
        raise DataError(f"--img-size must be at least 32, got {config.img_size}.")


def _prepare_run_dir(out: Path, overwrite: bool, *, resume: bool) -> Path:
    if resume:
        if not (out / LAST).is_file():
            raise DataError(f"Nothing to resume: {out / LAST} does not exist. Start the run without --resume.")
        return out
    if out.exists() and any(out.iterdir()) and not overwrite:
        raise DataError(f"Run folder {out} is not empty. Choose a new --out, pass --resume to continue an "
                        "interrupted run, or --overwrite to start again.")
    return out


# Options that may change between an interrupted run and its resumption without changing the result.
_RESUMABLE_DIFFERENCES = {"resume", "overwrite", "workers", "export", "calibrate", "command"}


def _check_same_run(saved: dict, now: dict, run_dir: Path) -> None:
    changed = sorted(k for k in saved.keys() | now.keys()
                     if k not in _RESUMABLE_DIFFERENCES and saved.get(k) != now.get(k))
    if changed:
        detail = ", ".join(f"{k}: {saved.get(k)!r} -> {now.get(k)!r}" for k in changed[:5])
        raise DataError(f"--resume needs the options of the interrupted run in {run_dir}; these differ: {detail}.")


def _seed_everything(seed: int) -> None:
    torch = require("torch")
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def _set_backbone_trainable(model, trainable: bool) -> None:
    """Freeze or unfreeze everything but the classifier head."""
    head = {id(p) for p in model.get_classifier().parameters()}
    for p in model.parameters():
        p.requires_grad_(trainable or id(p) in head)


def _eval_frozen_norms(model) -> None:
    """Keep batch-norm statistics of a frozen backbone fixed while the head trains."""
    torch = require("torch")
    for module in model.modules():
        if isinstance(module, torch.nn.modules.batchnorm._BatchNorm) and not any(
                p.requires_grad for p in module.parameters()):
            module.eval()


def _write_rows(path: Path, fields: list[str], rows: list[dict]) -> None:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=fields, lineterminator="\n", extrasaction="ignore")
    writer.writeheader()
    writer.writerows(rows)
    atomic_write_text(path, buffer.getvalue())
