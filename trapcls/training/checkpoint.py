"""Training checkpoints: plain dicts of tensors and settings, loaded with weights_only=True."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from trapcls._deps import require
from trapcls.exceptions import DataError
from trapcls.preprocess import PreprocessSpec

CHECKPOINT_FORMAT = "trapcls-checkpoint-1"
BEST = "best.pt"


def save_checkpoint(path: Path, model, *, arch: str, classes: list[str], spec: PreprocessSpec, epoch: int,
                    metrics: dict[str, float], config: dict[str, Any], calibration: dict[str, Any] | None = None) -> None:
    """Save everything needed to rebuild the model without the run folder (and its fitted calibration)."""
    torch = require("torch")
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    tmp = path.with_suffix(".tmp")
    torch.save({"format": CHECKPOINT_FORMAT, "arch": arch, "classes": list(classes), "preprocess": spec.to_dict(),
                "epoch": epoch, "metrics": metrics, "config": config, "calibration": calibration,
                "state_dict": state}, tmp)
    tmp.replace(path)


def load_checkpoint(path: Path) -> dict[str, Any]:
    """Load a checkpoint written by `save_checkpoint` (a run folder means its best.pt)."""
    torch = require("torch")
    if path.is_dir():
        path = path / BEST
    if not path.is_file():
        raise DataError(f"Checkpoint {path} does not exist. Pass a run folder from `trapcls train` or its {BEST}.")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise DataError(f"{path} is not a loadable checkpoint (loaded with weights_only=True): {exc}") from exc
    if not isinstance(ckpt, dict) or ckpt.get("format") != CHECKPOINT_FORMAT:
        raise DataError(f"{path} is not a trapcls checkpoint (expected format {CHECKPOINT_FORMAT}).")
    ckpt["path"] = str(path)
    return ckpt
