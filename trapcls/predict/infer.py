"""One batch of model input to calibrated probabilities: what frames and video clips' sampled frames share."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from trapcls.core.model.bundle import Bundle
from trapcls.core.model.probs import probabilities
from trapcls.core.system.exceptions import BundleError, ImageReadError
from trapcls.core.table.row import Row
from trapcls.predict.backends import Backend

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Failure:
    """A frame that could not be decoded: why (without the file's path: its row names the file), and its capture
    time when the EXIF header was readable."""

    error: str
    captured: str | None = None


def failure_row(rel: str, failure: Failure) -> Row:
    """The error row of a file that could not be decoded. The caller reports failures (predict in full, watch
    rate-limited)."""
    log.debug("%s: %s", rel, failure.error)
    return Row(rel, None, captured=failure.captured or "", error=failure.error)


def decode(path: Path, load: Callable[[Path], tuple[object, str | None]]) -> tuple[object, str | None] | Failure:
    """`load(path)` (model input and capture time), or the Failure that becomes the file's error row."""
    # The error cell travels (MegaDetector JSON, shared CSVs): this machine's absolute path stays out of it.
    try:
        return load(path)
    except ImageReadError as exc:
        return Failure(exc.reason, exc.captured)
    except Exception as exc:  # a decoder bug on one odd file must not stop a 50,000-file run
        log.exception("unexpected error decoding %s", path)
        detail = str(exc).replace(str(path), path.name)
        return Failure(f"unexpected error while decoding: {type(exc).__name__}: {detail}")


def frame_probs(x: np.ndarray, bundle: Bundle, backend: Backend, tta: bool = False) -> np.ndarray:
    """Probabilities of a batch of model input (n, 3, H, W); with `tta`, averaged with the horizontal mirror's
    (the same scene, the same answer)."""
    p = probabilities(_checked(backend.logits(x), bundle, len(x)), bundle.temperature)
    if tta:
        flipped = np.ascontiguousarray(x[..., ::-1])
        p = (p + probabilities(_checked(backend.logits(flipped), bundle, len(x)), bundle.temperature)) / 2
    return p


def _checked(logits: np.ndarray, bundle: Bundle, frames: int) -> np.ndarray:
    """The model's output as it must be: one row of len(classes) logits per frame. A model that declares one
    output shape and returns another (ONNX Runtime only warns) would write ragged rows."""
    if logits.shape != (frames, len(bundle.classes)):
        raise BundleError(f"{bundle.root}: the model returned logits of shape {tuple(logits.shape)} for {frames} "
                          f"frames; bundle.json lists {len(bundle.classes)} classes. The model and bundle.json do "
                          "not belong together: re-export the bundle.")
    return logits
