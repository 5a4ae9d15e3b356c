"""Fine-tuning timm ResNet/EfficientNet models on labelled camera-trap images (needs the `train` extra).

Entry point: `train(TrainConfig(...))`. This package imports only trapcls.core; the report and
the exports that `trapcls train` adds after training are joined on in trapcls.workflow.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from trapcls.training.config import TrainConfig

if TYPE_CHECKING:
    from trapcls.training.trainer import TrainResult, train

__all__ = ["TrainConfig", "TrainResult", "train"]


def __getattr__(name: str):
    """The entry point on first use, so that importing TrainConfig (as the CLI does) loads nothing heavy."""
    if name in ("train", "TrainResult"):
        from trapcls.training import trainer

        return getattr(trainer, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
