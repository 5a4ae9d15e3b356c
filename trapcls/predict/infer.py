"""One batch of model input to calibrated probabilities: what frames and video clips' sampled frames share."""

from __future__ import annotations

import numpy as np

from trapcls.core.model.bundle import Bundle
from trapcls.core.model.probs import probabilities
from trapcls.core.system.exceptions import BundleError
from trapcls.predict.backends import Backend


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
