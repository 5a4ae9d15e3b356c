"""`trapcls train`: fine-tune a timm model, keep the best checkpoint, write metrics and a bundle."""

from __future__ import annotations

import csv
import io
import json
import logging
import math
import os
import random
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from trapcls._deps import require
from trapcls.exceptions import DataError
from trapcls.fsutil import atomic_write_text
from trapcls.metrics import accuracy, log_loss
from trapcls.preprocess import PreprocessSpec, draft_size, load_image, preprocess, resize, to_array
from trapcls.progress import bar
from trapcls.training.calibrate import Calibration, fit_temperature
from trapcls.training.checkpoint import BEST, load_checkpoint, save_checkpoint
from trapcls.training.data import Sample, load_samples, stratified_split
from trapcls.training.models import create_model, preprocess_spec

log = logging.getLogger(__name__)

OPTIMIZERS = ("adamw", "sgd")
DEFAULT_LR = {"adamw": 1e-3, "sgd": 1e-2}
METRIC_FIELDS = ("epoch", "lr", "train_loss", "train_accuracy", "val_loss", "val_accuracy", "val_log_loss",
                 "images_per_s", "seconds")


@dataclass(frozen=True)
class TrainConfig:
    """The resolved settings of a training run; saved as config.json in the run folder."""

    data: Path
    out: Path
    arch: str
    weights: Path | None = None
    pretrained: bool = False
    epochs: int = 5
    img_size: int | None = None
    batch_size: int = 16
    optimizer: str = "adamw"
    lr: float | None = None
    weight_decay: float = 0.05
    label_smoothing: float = 0.0
    freeze_backbone: bool = False
    val_fraction: float = 0.2
    seed: int = 0
    workers: int | None = None
    overwrite: bool = False
    export: bool = True
    calibrate: bool = True

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


def train(config: TrainConfig, *, show_progress: bool = False) -> TrainResult:
    """Run a full training job as `config` describes and return where its outputs are."""
    torch = require("torch")
    _validate(config)
    run_dir = _prepare_run_dir(config.out, config.overwrite)
    _seed_everything(config.seed)

    samples = load_samples(config.data)
    classes = sorted({s.label for s in samples})
    train_set, val_set = stratified_split(samples, config.val_fraction, config.seed)
    _write_split(run_dir / "split.csv", train_set, val_set)
    log.info("%d images in %d classes: %d train, %d validation", len(samples), len(classes), len(train_set), len(val_set))

    model = create_model(config.arch, len(classes), weights=config.weights, pretrained=config.pretrained)
    spec = preprocess_spec(model, config.img_size)
    if config.freeze_backbone:
        _freeze_backbone(model)
    resolved = {**config.to_json(), "lr": config.lr or DEFAULT_LR[config.optimizer], "classes": classes,
                "preprocess": spec.to_dict(), "train_images": len(train_set), "val_images": len(val_set)}
    atomic_write_text(run_dir / "config.json", json.dumps(resolved, indent=2) + "\n")

    index = {c: i for i, c in enumerate(classes)}
    workers = config.workers if config.workers is not None else min(2, os.cpu_count() or 1)
    generator = torch.Generator().manual_seed(config.seed)
    train_loader = torch.utils.data.DataLoader(
        _ImageDataset(train_set, index, spec, augment=True), batch_size=config.batch_size, shuffle=True,
        num_workers=workers, generator=generator, drop_last=len(train_set) > config.batch_size)
    val_loader = torch.utils.data.DataLoader(
        _ImageDataset(val_set, index, spec, augment=False), batch_size=config.batch_size, num_workers=workers)

    optimizer = _make_optimizer(model, config)
    total_steps = max(1, config.epochs * len(train_loader))
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: 0.5 * (1 + math.cos(math.pi * min(step, total_steps) / total_steps)))
    criterion = torch.nn.CrossEntropyLoss(label_smoothing=config.label_smoothing)

    history: list[dict[str, float]] = []
    best: dict[str, float] | None = None
    for epoch in range(1, config.epochs + 1):
        start = time.perf_counter()
        lr = optimizer.param_groups[0]["lr"]
        train_loss, train_acc, seen = train_one_epoch(
            model, train_loader, criterion, optimizer, scheduler, frozen=config.freeze_backbone,
            desc=f"epoch {epoch}/{config.epochs}", show_progress=show_progress)
        seconds = time.perf_counter() - start
        row = {"epoch": epoch, "lr": lr, "train_loss": train_loss, "train_accuracy": train_acc,
               "images_per_s": seen / seconds if seconds else float("nan")}
        if val_set:
            row.update(evaluate(model, val_loader, criterion, show_progress=show_progress))
        row["seconds"] = time.perf_counter() - start
        history.append(row)
        _write_metrics(run_dir / "metrics.csv", history)
        log.info("epoch %d/%d  %s", epoch, config.epochs,
                 "  ".join(f"{k}={row[k]:.4g}" for k in METRIC_FIELDS[1:] if k in row and k != "lr"))
        score = row.get("val_log_loss", -epoch)  # without validation the last epoch is kept
        if best is None or score < best.get("val_log_loss", -best["epoch"]):
            best = row
            save_checkpoint(run_dir / BEST, model, arch=config.arch, classes=classes, spec=spec, epoch=epoch,
                            metrics=row, config=resolved)

    calibration = None
    if val_set and config.calibrate:
        model.load_state_dict(load_checkpoint(run_dir / BEST)["state_dict"])
        logits, labels = collect_logits(model, val_loader, show_progress=show_progress)
        calibration = fit_temperature(logits.numpy(), labels.numpy())
        log.info("calibration: temperature %.3f, validation log loss %.4f -> %.4f", calibration.temperature,
                 calibration.val_log_loss_before, calibration.val_log_loss_after)
        save_checkpoint(run_dir / BEST, model, arch=config.arch, classes=classes, spec=spec, epoch=int(best["epoch"]),
                        metrics=best, config=resolved, calibration=calibration.to_dict())

    bundle_dir = None
    if config.export:
        from trapcls.export.onnx import export_onnx

        verify = [s.path for s in (val_set or train_set)][:16]
        bundle_dir = export_onnx(run_dir / BEST, run_dir / "bundle", verify_images=verify).bundle.root
    return TrainResult(run_dir=run_dir, best_epoch=int(best["epoch"]), best_metrics=best, bundle_dir=bundle_dir,
                       calibration=calibration)


def train_one_epoch(model, loader, criterion, optimizer, scheduler, *, frozen: bool, desc: str,
                    show_progress: bool) -> tuple[float, float, int]:
    """One pass over the training data; returns mean loss, accuracy and images seen."""
    torch = require("torch")
    model.train()
    if frozen:
        _eval_frozen_norms(model)
    total_loss, correct, seen = 0.0, 0, 0
    with bar(len(loader.dataset), desc, enabled=show_progress) as progress:
        for images, labels in loader:
            logits = model(images)
            loss = criterion(logits, labels)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            scheduler.step()
            with torch.no_grad():
                total_loss += loss.item() * len(labels)
                correct += int((logits.argmax(1) == labels).sum())
            seen += len(labels)
            progress.update(len(labels))
    return total_loss / max(seen, 1), correct / max(seen, 1), seen


def collect_logits(model, loader, *, show_progress: bool = False):
    """The model's logits and the labels over `loader`, in eval mode, as two tensors."""
    torch = require("torch")
    model.eval()
    all_logits, all_labels = [], []
    with torch.no_grad(), bar(len(loader.dataset), "validate", enabled=show_progress) as progress:
        for images, labels in loader:
            all_logits.append(model(images))
            all_labels.append(labels)
            progress.update(len(labels))
    return torch.cat(all_logits), torch.cat(all_labels)


def evaluate(model, loader, criterion, *, show_progress: bool = False) -> dict[str, float]:
    """Validation loss, accuracy and clipped multiclass log loss."""
    torch = require("torch")
    logits, labels = collect_logits(model, loader, show_progress=show_progress)
    probs = torch.softmax(logits.double(), dim=1).numpy()
    y = labels.numpy()
    return {"val_loss": float(criterion(logits, labels)), "val_accuracy": accuracy(probs, y),
            "val_log_loss": log_loss(probs, y)}


class _ImageDataset:
    """Samples -> (tensor, label index) through the one preprocessing definition."""

    def __init__(self, samples: list[Sample], index: dict[str, int], spec: PreprocessSpec, *, augment: bool) -> None:
        self.samples, self.index, self.spec, self.augment = samples, index, spec, augment

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, i: int):
        torch = require("torch")
        sample = self.samples[i]
        if self.augment:
            img = resize(load_image(sample.path, min_size=draft_size(self.spec)), self.spec)
            if random.random() < 0.5:
                img = img.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
            array = to_array(img, self.spec)
        else:
            array = preprocess(sample.path, self.spec)
        return torch.from_numpy(array), self.index[sample.label]


def _validate(config: TrainConfig) -> None:
    if config.optimizer not in OPTIMIZERS:
        raise DataError(f"Invalid optimizer {config.optimizer!r}. Only {', '.join(OPTIMIZERS)} are supported.")
    if config.epochs < 1:
        raise DataError(f"--epochs must be at least 1, got {config.epochs}.")
    if config.batch_size < 1:
        raise DataError(f"--batch-size must be at least 1, got {config.batch_size}.")
    if config.img_size is not None and config.img_size < 32:
        raise DataError(f"--img-size must be at least 32, got {config.img_size}.")


def _prepare_run_dir(out: Path, overwrite: bool) -> Path:
    if out.exists() and any(out.iterdir()) and not overwrite:
        raise DataError(f"Run folder {out} is not empty. Choose a new --out or pass --overwrite.")
    out.mkdir(parents=True, exist_ok=True)
    return out


def _seed_everything(seed: int) -> None:
    torch = require("torch")
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def _freeze_backbone(model) -> None:
    head = model.get_classifier()
    trainable = {id(p) for p in head.parameters()}
    for p in model.parameters():
        p.requires_grad_(id(p) in trainable)


def _eval_frozen_norms(model) -> None:
    """Keep batch-norm statistics of a frozen backbone fixed while the head trains."""
    torch = require("torch")
    for module in model.modules():
        if isinstance(module, torch.nn.modules.batchnorm._BatchNorm) and not any(
                p.requires_grad for p in module.parameters()):
            module.eval()


def _make_optimizer(model, config: TrainConfig):
    torch = require("torch")
    params = [p for p in model.parameters() if p.requires_grad]
    lr = config.lr or DEFAULT_LR[config.optimizer]
    if config.optimizer == "sgd":
        return torch.optim.SGD(params, lr=lr, momentum=0.9, weight_decay=config.weight_decay, nesterov=True)
    return torch.optim.AdamW(params, lr=lr, weight_decay=config.weight_decay)


def _write_split(path: Path, train_set: list[Sample], val_set: list[Sample]) -> None:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["filepath", "label", "split"])
    for split, items in (("train", train_set), ("val", val_set)):
        writer.writerows([str(s.path), s.label, split] for s in items)
    atomic_write_text(path, buffer.getvalue())


def _write_metrics(path: Path, history: list[dict[str, float]]) -> None:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=METRIC_FIELDS, lineterminator="\n", extrasaction="ignore")
    writer.writeheader()
    writer.writerows(history)
    atomic_write_text(path, buffer.getvalue())
