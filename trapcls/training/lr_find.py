"""The learning-rate range test: raise the LR exponentially batch by batch and watch the loss.

Leslie Smith's test as fastai runs it: from `start` to `end` over `steps` optimizer steps,
an exponentially smoothed loss (beta 0.98, bias-corrected), stopping once it exceeds four
times its minimum. The suggestion is the rate at the minimum of the smoothed loss divided by
ten, where the loss still falls steadily: a conservative, commonly used pick.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

from trapcls.core.system.exceptions import DataError

SMOOTHING = 0.98
DIVERGED = 4.0


@dataclass(frozen=True)
class LrFind:
    """The sweep (learning rates and smoothed losses) and the suggested learning rate."""

    lrs: list[float]
    losses: list[float]
    suggestion: float


def find_lr(model, loader, criterion, optimizer, *, start: float = 1e-7, end: float = 10.0, steps: int = 100,
            device: str = "cpu", mean: Callable[[float], float] = float) -> LrFind:
    """Run the range test on `model` in place (callers throw the weights away afterwards).

    `mean` turns this process's batch loss into the loss over all processes (under torchrun), so
    every rank sees the same curve and stops at the same step; a rank stopping alone would leave
    the others waiting for its gradients forever.
    """
    if not 0 < start < end or steps < 2:
        raise DataError(f"The LR sweep needs 0 < start < end and 2+ steps; got {start}, {end}, {steps}.")
    factor = (end / start) ** (1 / (steps - 1))
    lrs, losses, smooth, best = [], [], 0.0, math.inf
    model.train()
    batches = iter(loader)
    for step in range(steps):
        lr = start * factor**step
        for group in optimizer.param_groups:
            group["lr"] = lr * group.get("lr_scale", 1.0)
        try:
            images, labels = next(batches)
        except StopIteration:  # small data sets: go round again
            batches = iter(loader)
            images, labels = next(batches)
        images, labels = images.to(device), labels.to(device)
        loss = criterion(model(images), labels)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        value = mean(float(loss.detach()))
        if not math.isfinite(value):
            break
        smooth = SMOOTHING * smooth + (1 - SMOOTHING) * value
        corrected = smooth / (1 - SMOOTHING ** (step + 1))
        lrs.append(lr)
        losses.append(corrected)
        best = min(best, corrected)
        if step > 5 and corrected > DIVERGED * best:
            break
    if len(lrs) < 3:
        raise DataError("The LR sweep diverged at once; lower the start of the range.")
    at_min = lrs[min(range(len(losses)), key=losses.__getitem__)]
    return LrFind(lrs=lrs, losses=losses, suggestion=at_min / 10)
