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
                    metrics: dict[str, float], config: dict[str, Any],
                    calibration: dict[str, Any] | None = None) -> None:
    """Save everything needed to rebuild the model without the run folder (and its fitted calibration)."""
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    _save(path, CHECKPOINT_FORMAT, {"arch": arch, "classes": list(classes), "preprocess": spec.to_dict(),
                                    "epoch": epoch, "metrics": metrics, "config": config,
                                    "calibration": calibration, "state_dict": state})


def load_checkpoint(path: Path) -> dict[str, Any]:
    """Load a checkpoint written by `save_checkpoint` (a run folder means its best.pt)."""
    if path.is_dir():
        path = path / BEST
    if not path.is_file():
        raise DataError(f"Checkpoint {path} does not exist. Pass a run folder from `trapcls train` or its {BEST}.")
    ckpt = _load(path, CHECKPOINT_FORMAT, "a trapcls checkpoint")
    ckpt["path"] = str(path)
    return ckpt


TRAIN_STATE_FORMAT = "trapcls-train-state-1"
LAST = "last.pt"


def save_train_state(path: Path, state: dict[str, Any]) -> None:
    """Save the full state of a run after an epoch (model, optimizer, schedule, RNGs, history), atomically."""
    _save(path, TRAIN_STATE_FORMAT, state)


def load_train_state(path: Path) -> dict[str, Any]:
    """Load what `save_train_state` wrote, with weights_only=True."""
    if not path.is_file():
        raise DataError(f"{path} does not exist: there is no interrupted run to resume in {path.parent}.")
    return _load(path, TRAIN_STATE_FORMAT, "a trapcls training state")


def _save(path: Path, fmt: str, payload: dict[str, Any]) -> None:
    torch = require("torch")
    tmp = path.with_suffix(".tmp")
    torch.save({"format": fmt, **payload}, tmp)
    tmp.replace(path)  # a crash leaves the previous file, never half of one


def _load(path: Path, fmt: str, what: str) -> dict[str, Any]:
    torch = require("torch")
    try:
        data = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise DataError(f"{path} is not loadable as {what} (loaded with weights_only=True): {exc}") from exc
    if not isinstance(data, dict) or data.get("format") != fmt:
        raise DataError(f"{path} is not {what} (expected format {fmt}).")
    return data


def rng_state() -> dict[str, Any]:
    """Python, NumPy and torch RNG states in a form weights_only loading accepts."""
    import random

    import numpy as np

    torch = require("torch")
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    return {"python": random.getstate(), "numpy": [kind, torch.from_numpy(keys.astype(np.int64)), pos, has_gauss,
                                                   cached], "torch": torch.get_rng_state()}


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore what `rng_state` returned."""
    import random

    import numpy as np

    torch = require("torch")
    python = state["python"]
    random.setstate((python[0], tuple(python[1]), python[2]))
    kind, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), pos, has_gauss, cached))
    torch.set_rng_state(state["torch"])
