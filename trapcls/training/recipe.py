"""The fine-tuning recipe's parts: augmentation, optimizer groups, schedule, class balance, EMA, precision.

What the public recipes learned, each part small and testable on its own:
- augmentation: a random crop that keeps most of the frame at roughly its aspect ratio (animals
  stand at the edges), squashed to the input size like inference, then TrivialAugmentWide (or
  RandAugment) and a horizontal flip;
- optimizer: timm's parameter groups, so norms and biases get no weight decay and, with
  `layer_decay`, each block's learning rate shrinks geometrically away from the head
  (discriminative fine-tuning);
- schedule: linear warm-up, then cosine decay to zero, per step;
- class balance: inverse-frequency sampling or loss weights for skewed data.
"""

from __future__ import annotations

import math
import random
from collections import Counter
from collections.abc import Callable

from PIL import Image

from trapcls.core.frames.preprocess import INTERPOLATIONS, PreprocessSpec
from trapcls.core.options import check_value
from trapcls.core.system.deps import require
from trapcls.training.config import TrainConfig


def crop_box(width: int, height: int, *, min_scale: float, rng: random.Random) -> tuple[int, int, int, int]:
    """A random box covering min_scale..1 of the frame's area, aspect within 3/4..4/3 of the frame's."""
    area = rng.uniform(min_scale, 1.0)
    aspect = math.exp(rng.uniform(math.log(3 / 4), math.log(4 / 3)))
    w = min(width, max(1, round(width * math.sqrt(area * aspect))))
    h = min(height, max(1, round(height * math.sqrt(area / aspect))))
    left, top = rng.randint(0, width - w), rng.randint(0, height - h)
    return left, top, left + w, top + h


def train_transform(spec: PreprocessSpec, *, augment: str, min_scale: float) -> Callable[[Image.Image], Image.Image]:
    """Decoded RGB frame -> augmented frame at the input size (normalisation stays in `to_array`)."""
    check_value(TrainConfig, "augment", augment)
    check_value(TrainConfig, "crop_scale", min_scale)
    policy = None
    if augment != "none":
        transforms = require("torchvision.transforms")
        policy = transforms.TrivialAugmentWide() if augment == "trivial" else transforms.RandAugment()
    size, resample = (spec.width, spec.height), INTERPOLATIONS[spec.interpolation]

    def apply(img: Image.Image) -> Image.Image:
        box = crop_box(img.width, img.height, min_scale=min_scale, rng=random)
        out = img.resize(size, resample, box=box)  # crop + squash in one resampling pass
        if policy is not None:
            out = policy(out)
        return out.transpose(Image.Transpose.FLIP_LEFT_RIGHT) if random.random() < 0.5 else out

    return apply


def make_optimizer(model, *, name: str, lr: float, weight_decay: float, layer_decay: float | None):
    """SGD (momentum 0.9, Nesterov) or AdamW over timm's groups: no decay on norms and biases,
    and per-block learning rates lr * layer_decay**depth-from-head when `layer_decay` is set."""
    check_value(TrainConfig, "optimizer", name)
    check_value(TrainConfig, "layer_decay", layer_decay)
    optim = require("timm.optim")
    kwargs = {"momentum": 0.9, "nesterov": True} if name == "sgd" else {}
    optimizer = optim.create_optimizer_v2(model, name, lr=lr, weight_decay=weight_decay, layer_decay=layer_decay,
                                          filter_bias_and_bn=True, **kwargs)
    for group in optimizer.param_groups:  # timm's own schedulers apply lr_scale; torch's need it in lr
        group["lr"] = lr * group.get("lr_scale", 1.0)
    return optimizer


def warmup_cosine(total_steps: int, warmup_steps: int) -> Callable[[int], float]:
    """LR multiplier per step: linear from ~0 to 1 over `warmup_steps`, then cosine down to 0."""
    total_steps = max(1, total_steps)
    warmup_steps = min(max(0, warmup_steps), total_steps - 1)

    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / (warmup_steps + 1)
        progress = min(1.0, (step - warmup_steps) / max(1, total_steps - warmup_steps))
        return 0.5 * (1 + math.cos(math.pi * progress))

    return factor


def class_weights(labels: list[int], num_classes: int) -> list[float]:
    """Inverse-frequency weights, normalised so the average over the samples is 1."""
    counts = Counter(labels)
    return [len(labels) / (num_classes * counts[c]) if counts[c] else 0.0 for c in range(num_classes)]


class BalancedSampler:
    """Draws each class equally often (with replacement); one epoch is len(labels) draws in all.

    The draws depend only on the seed and the epoch (`set_epoch`), so a resumed run repeats them
    exactly, and under torchrun every process computes the same global draw and takes its own
    1/world share of it (rank, rank + world, ...), so no image is drawn for two ranks by accident.
    """

    def __init__(self, labels: list[int], num_classes: int, *, seed: int, rank: int = 0, world: int = 1) -> None:
        torch = require("torch")
        per_class = class_weights(labels, num_classes)
        self.weights = torch.tensor([per_class[y] for y in labels], dtype=torch.double)
        self.seed, self.rank, self.world, self.epoch = seed, rank, world, 0
        self.num_samples = len(labels) // world

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return self.num_samples

    def __iter__(self):
        torch = require("torch")
        generator = torch.Generator().manual_seed(self.seed * 100_003 + self.epoch)
        draws = torch.multinomial(self.weights, len(self.weights), replacement=True, generator=generator)
        return iter(draws[self.rank::self.world][: self.num_samples].tolist())


def ema_model(model, decay: float):
    """An exponential moving average of `model`'s weights (buffers copied), updated per optimizer step."""
    torch = require("torch")
    check_value(TrainConfig, "ema_decay", decay)
    swa = torch.optim.swa_utils
    return swa.AveragedModel(model, multi_avg_fn=swa.get_ema_multi_avg_fn(decay), use_buffers=True)


def autocast_dtype(device: str, amp: bool):
    """bf16 where the GPU supports it, else fp16, on CUDA with `amp`; None (full FP32) otherwise."""
    torch = require("torch")
    if not amp or device != "cuda":
        return None
    return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
