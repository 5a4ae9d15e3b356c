"""Checkpoint files: best.pt (a trained model that rebuilds on its own) and the file format every .pt shares.

Both kinds are plain dicts of tensors and settings with a "format" tag, written durably (fsync,
replace, fsync the folder) and loaded with weights_only=True, so a checkpoint can never run code.
Export and the torch backend read best.pt through here, without importing the training stage.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

from trapcls.core.frames.preprocess import PreprocessSpec
from trapcls.core.system.deps import require
from trapcls.core.system.exceptions import DataError
from trapcls.core.system.fsutil import atomic_write_bytes

CHECKPOINT_FORMAT = "trapcls-checkpoint-1"
BEST = "best.pt"


def save_checkpoint(path: Path, model, *, arch: str, classes: list[str], spec: PreprocessSpec, epoch: int,
                    metrics: dict[str, float], config: dict[str, Any],
                    calibration: dict[str, Any] | None = None, crop: dict[str, Any] | None = None) -> None:
    """Save everything needed to rebuild the model without the run folder (and its fitted calibration; `crop`: the
    crop geometry of a model trained on detector crops, which export writes into the bundle)."""
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    save_payload(path, CHECKPOINT_FORMAT, {"arch": arch, "classes": list(classes), "preprocess": spec.to_dict(),
                                           "epoch": epoch, "metrics": metrics, "config": config,
                                           "calibration": calibration, "state_dict": state,
                                           **({"crop": crop} if crop is not None else {})})


def load_checkpoint(path: Path) -> dict[str, Any]:
    """Load a checkpoint written by `save_checkpoint` (a run folder means its best.pt)."""
    if path.is_dir():
        path = path / BEST
    if not path.is_file():
        raise DataError(f"Checkpoint {path} does not exist. Pass a run folder from `trapcls train` or its {BEST}.")
    ckpt = load_payload(path, CHECKPOINT_FORMAT, "a trapcls checkpoint")
    ckpt["path"] = str(path)
    return ckpt


def save_payload(path: Path, fmt: str, payload: dict[str, Any]) -> None:
    """torch.save through fsutil's durable writer: a crash or power cut leaves the old file or the new one."""
    torch = require("torch")
    buffer = io.BytesIO()
    torch.save({"format": fmt, **payload}, buffer)
    atomic_write_bytes(path, buffer.getvalue())


def load_payload(path: Path, fmt: str, what: str) -> dict[str, Any]:
    """A .pt file of format `fmt`, loaded with weights_only=True; DataError naming `what` it should be."""
    torch = require("torch")
    try:
        data = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise DataError(f"{path} is not loadable as {what} (loaded with weights_only=True): {exc}") from exc
    if not isinstance(data, dict) or data.get("format") != fmt:
        raise DataError(f"{path} is not {what} (expected format {fmt}).")
    return data
