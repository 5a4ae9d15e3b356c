"""Training's checkpoints: last.pt to resume, and the keeper that decides what best.pt holds.

The file format (and best.pt itself, which export reads) is trapcls.core.model.checkpoint's:
plain dicts written durably and loaded with weights_only=True, so a checkpoint can never run code.
"""

from __future__ import annotations

import logging
import random
from pathlib import Path
from typing import Any, Protocol

from trapcls.core.model.checkpoint import BEST, load_payload, save_checkpoint, save_payload
from trapcls.core.system.deps import require
from trapcls.core.system.exceptions import DataError

log = logging.getLogger(__name__)

TRAIN_STATE_FORMAT = "trapcls-train-state-1"
LAST = "last.pt"


def load_train_state(path: Path) -> dict[str, Any]:
    """Load what CheckpointKeeper.save_last wrote, with weights_only=True."""
    if not path.is_file():
        raise DataError(f"{path} does not exist: there is no interrupted run to resume in {path.parent}.")
    return load_payload(path, TRAIN_STATE_FORMAT, "a trapcls training state")


class Stateful(Protocol):
    """What a run's resumable parts share with torch's modules, optimizers and schedulers."""

    def state_dict(self) -> Any: ...

    def load_state_dict(self, state: Any) -> Any: ...


class CheckpointKeeper:
    """The run's record between epochs: its history, the best epoch (saved as best.pt), the early-stop
    decision, and last.pt, the whole state a killed run resumes from.

    `parts` are the run's stateful pieces by name (model, optimizer, scheduler, loss scaler, EMA,
    loader and global RNGs); saving and resuming go through their state_dict/load_state_dict, so
    what is saved is what is restored, written in one place.
    """

    def __init__(self, run_dir: Path, *, early_stop: int, meta: dict[str, Any]) -> None:
        self.run_dir, self.early_stop, self.meta = run_dir, early_stop, meta
        self.history: list[dict[str, float]] = []
        self.best: dict[str, float] | None = None
        self.stopped = False

    def state_dict(self) -> dict[str, Any]:
        """The record so far: per-epoch rows, the best row, whether the run stopped early."""
        return {"history": self.history, "best": self.best, "stopped": self.stopped}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Take up a record that `state_dict` returned."""
        self.history, self.best, self.stopped = state["history"], state["best"], state["stopped"]

    def update(self, epoch: int, row: dict[str, float], model, *, validated: bool) -> bool:
        """Record an epoch; save best.pt when it is the best so far; decide whether to stop. True if best."""
        self.history.append(row)
        score = row.get("val_log_loss", -epoch)  # without validation the last epoch is kept
        if self.best is None or score < self.best.get("val_log_loss", -self.best["epoch"]):
            self.best = row
            self.save_best(model)
            return True
        if self.early_stop and validated and epoch - self.best["epoch"] >= self.early_stop:
            log.info("early stop: validation log loss has not improved for %d epochs (best: epoch %d)",
                     self.early_stop, self.best["epoch"])
            self.stopped = True
        return False

    def save_best(self, model, *, calibration: dict[str, Any] | None = None) -> None:
        """best.pt: `model` as the best epoch's weights (again once calibrated, with the temperature)."""
        save_checkpoint(self.run_dir / BEST, model, epoch=int(self.best["epoch"]), metrics=self.best,
                        calibration=calibration, **self.meta)

    def save_last(self, epoch: int, parts: dict[str, Stateful]) -> None:
        """Everything a killed run needs to go on exactly where it was: the same batches, the same
        augmentations, the same schedule."""
        state = {"epoch": epoch, "config": self.meta["config"], **self.state_dict()}
        state.update({name: part.state_dict() for name, part in parts.items()})
        save_payload(self.run_dir / LAST, TRAIN_STATE_FORMAT, state)

    def resume(self, state: dict[str, Any], parts: dict[str, Stateful]) -> int:
        """Restore `parts` and this record from a loaded last.pt; returns the first epoch still to run."""
        for name, part in parts.items():
            part.load_state_dict(state[name])
        self.load_state_dict(state)
        return state["epoch"] + 1


class LoaderRng:
    """The training loader's shuffling generator as a resumable part."""

    def __init__(self, generator) -> None:
        self.generator = generator

    def state_dict(self):
        """The generator's state tensor."""
        return self.generator.get_state()

    def load_state_dict(self, state) -> None:
        """Put the generator back where `state_dict` found it."""
        self.generator.set_state(state)


class GlobalRng:
    """Python's, NumPy's and torch's global RNGs (augmentation, dropout) as a resumable part,
    in a form weights_only loading accepts."""

    def state_dict(self) -> dict[str, Any]:
        """The three generators' states (NumPy's keys as a tensor, which weights_only loading accepts)."""
        import numpy as np

        torch = require("torch")
        kind, keys, pos, has_gauss, cached = np.random.get_state()
        return {"python": random.getstate(), "numpy": [kind, torch.from_numpy(keys.astype(np.int64)), pos,
                                                       has_gauss, cached], "torch": torch.get_rng_state()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Put the three generators back where `state_dict` found them."""
        import numpy as np

        torch = require("torch")
        python = state["python"]
        random.setstate((python[0], tuple(python[1]), python[2]))
        kind, keys, pos, has_gauss, cached = state["numpy"]
        np.random.set_state((kind, keys.numpy().astype(np.uint32), pos, has_gauss, cached))
        torch.set_rng_state(state["torch"])
