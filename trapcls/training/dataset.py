"""Labelled samples as torch data: the dataset, the loaders, and their seeding for exact resumes."""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
from PIL import Image

from trapcls.core.frames.crop import crop, preprocess_crops
from trapcls.core.frames.labels import Sample
from trapcls.core.frames.preprocess import PreprocessSpec, draft_size, load_image, preprocess, to_array
from trapcls.core.system.deps import require
from trapcls.core.system.hardware import cores
from trapcls.training.config import TrainConfig
from trapcls.training.distributed import Dist
from trapcls.training.recipe import BalancedSampler, train_transform


class ImageDataset:
    """Samples -> (tensor, label index) through the one preprocessing definition.

    Without `augment` an item is exactly `preprocess(path, spec)`, what every inference backend
    is fed; with it, the same decoding (reduced-size JPEG, EXIF rotation, RGB) and normalisation
    around the augmentation. A sample with a detector box is that box's crop, by the one crop geometry.
    """

    def __init__(self, samples: list[Sample], index: dict[str, int], spec: PreprocessSpec, *,
                 augment: Callable[[Image.Image], Image.Image] | None) -> None:
        self.samples, self.index, self.spec, self.augment = samples, index, spec, augment

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, i: int):
        torch = require("torch")
        sample = self.samples[i]
        if sample.box is not None:
            return torch.from_numpy(self._crop(sample)), self.index[sample.label]
        if self.augment is not None:
            array = to_array(self.augment(load_image(sample.path, min_size=draft_size(self.spec))), self.spec)
        else:
            array = preprocess(sample.path, self.spec)
        return torch.from_numpy(array), self.index[sample.label]

    def _crop(self, sample: Sample) -> np.ndarray:
        """A detector box's crop (core/frames/crop.py): without `augment` exactly what `predict --detections`
        feeds the model for that box; with it, the crop augmented as a whole frame would be."""
        if self.augment is None:
            return preprocess_crops(sample.path, [sample.box], self.spec)[0][0]
        frame = load_image(sample.path)  # at full size, as preprocess_crops decodes it
        return to_array(self.augment(crop(frame, sample.box)), self.spec)


@dataclass
class Loaders:
    """The training and validation loaders, and what a resumed run must restore to repeat them."""

    train: Any
    val: Any
    sampler: Any  # BalancedSampler, DistributedSampler or None; set_epoch() before each epoch
    generator: Any  # the shuffling generator, part of the run's saved state


def make_loaders(config: TrainConfig, train_set: list[Sample], val_set: list[Sample], *, classes: list[str],
                 spec: PreprocessSpec, dist: Dist) -> Loaders:
    """Loaders for one process: under torchrun each sees its own share of every epoch, in one global order."""
    torch = require("torch")
    index = {c: i for i, c in enumerate(classes)}
    workers = config.workers if config.workers is not None else min(2, cores())
    augment = train_transform(spec, augment=config.augment, min_scale=config.crop_scale)
    train_data = ImageDataset(train_set, index, spec, augment=augment)
    sampler = None
    if config.balance == "sampler":
        labels = [index[s.label] for s in train_set]
        sampler = BalancedSampler(labels, len(classes), seed=config.seed, rank=dist.rank, world=dist.world)
    elif dist.world > 1:
        sampler = torch.utils.data.DistributedSampler(train_data, num_replicas=dist.world, rank=dist.rank,
                                                      shuffle=True, seed=config.seed, drop_last=True)
    generator = torch.Generator().manual_seed(config.seed)
    train = torch.utils.data.DataLoader(
        train_data, batch_size=config.batch_size // dist.world,  # --batch-size is the global batch
        shuffle=sampler is None, sampler=sampler, num_workers=workers, generator=generator,
        drop_last=len(train_set) > config.batch_size, worker_init_fn=seed_worker)
    val = torch.utils.data.DataLoader(ImageDataset(val_set, index, spec, augment=None),
                                      batch_size=config.batch_size, num_workers=workers)
    return Loaders(train=train, val=val, sampler=sampler, generator=generator)


def seed_worker(worker_id: int) -> None:
    """Augmentation draws from `random`; each loader worker gets its own stream from torch's seed."""
    torch = require("torch")
    seed = torch.initial_seed() % 2**32
    random.seed(seed)
    np.random.seed(seed)
