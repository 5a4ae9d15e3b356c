"""One epoch of training and one of validation, as torchvision's references split them.

`Stepper` turns losses into optimizer steps (accumulation, mixed precision, schedule, EMA);
`train_one_epoch` and `evaluate` are plain functions of a model and a loader; the rest are the
small model operations the Trainer needs between epochs (freezing, DDP wrapping, rank checks).
"""

from __future__ import annotations

import logging
import math

from trapcls.core.metrics import accuracy, log_loss, macro_f1
from trapcls.core.system.deps import require
from trapcls.core.system.exceptions import TrapclsError
from trapcls.core.system.progress import bar
from trapcls.training.distributed import Dist

log = logging.getLogger(__name__)


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
        """The autocast context for the forward pass (a no-op in FP32)."""
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
        eval_frozen_norms(model)
    total_loss, correct, seen = 0.0, 0, 0
    with bar(len(loader.dataset), desc, enabled=show_progress) as progress:
        for i, (images, labels) in enumerate(loader):
            images, labels = to_device(images, labels, device)
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
            all_logits.append(model(to_device(images, labels, device)[0]).float().cpu())
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


def to_device(images, labels, device: str):
    """A batch on `device` (channels_last on a GPU); on the CPU as it is."""
    torch = require("torch")
    if device == "cpu":
        return images, labels
    images = images.to(device, non_blocking=True).contiguous(memory_format=torch.channels_last)
    return images, labels.to(device, non_blocking=True)


def set_backbone_trainable(model, trainable: bool) -> None:
    """Freeze or unfreeze everything but the classifier head."""
    head = {id(p) for p in model.get_classifier().parameters()}
    for p in model.parameters():
        p.requires_grad_(trainable or id(p) in head)


def eval_frozen_norms(model) -> None:
    """Keep batch-norm statistics of a frozen backbone fixed while the head trains."""
    torch = require("torch")
    for module in model.modules():
        if isinstance(module, torch.nn.modules.batchnorm._BatchNorm) and not any(
                p.requires_grad for p in module.parameters()):
            module.eval()


def trainable(model, *, frozen: bool, dist: Dist):
    """Freeze or unfreeze the backbone and return the module to train: `model` itself, or under
    torchrun a fresh DistributedDataParallel wrapper, because DDP only synchronises the
    parameters that were trainable when it was built."""
    set_backbone_trainable(model, not frozen)
    if dist.world == 1:
        return model
    torch = require("torch")
    return torch.nn.parallel.DistributedDataParallel(
        model, device_ids=[dist.local_rank] if dist.device != "cpu" else None)


def check_ranks_agree(model, dist: Dist) -> None:
    """Under torchrun every process must end with the same weights; a difference means gradients
    were not synchronised for some parameters, and the run is refused rather than saved."""
    if dist.world == 1:
        return
    total = float(sum(p.detach().double().sum() for p in model.parameters()))
    if not math.isclose(dist.sum([total])[0], total * dist.world, rel_tol=1e-12, abs_tol=1e-9):
        raise TrapclsError(f"The {dist.world} torchrun processes ended with different weights (gradients were not "
                           "synchronised), so no bundle is made from this run. Train with one process (`trapcls train` "
                           "without torchrun, same options) and report this with the command you ran.")
    log.info("all %d processes hold identical weights", dist.world)
