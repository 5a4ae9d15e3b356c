"""Temperature scaling: one scalar T fitted on validation logits so softmax(logits / T) is calibrated.

The negative log likelihood is convex in 1/T, so a golden-section search over 1/T finds the
global minimum without gradients or torch. The fitted T goes into bundle.json and every backend
applies it through `trapcls.core.model.probs.probabilities`.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np

from trapcls.core.metrics import log_loss
from trapcls.core.model.probs import probabilities

# T outside [1/20, 20] means something else is wrong (a broken model, a tiny validation set).
MIN_INVERSE_T, MAX_INVERSE_T = 0.05, 20.0


@dataclass(frozen=True)
class Calibration:
    """The fitted temperature and the validation log loss before and after applying it."""

    temperature: float
    fitted: bool
    val_log_loss_before: float
    val_log_loss_after: float
    images: int

    def to_dict(self) -> dict:
        return asdict(self)


def fit_temperature(logits: np.ndarray, labels: np.ndarray, *, tol: float = 1e-6) -> Calibration:
    """The temperature minimising the log loss of `logits` (N, C) against integer `labels` (N,)."""
    logits = np.asarray(logits, dtype=np.float64)
    labels = np.asarray(labels)
    if len(labels) == 0:
        return Calibration(1.0, False, math.nan, math.nan, 0)
    before = log_loss(probabilities(logits, 1.0), labels)

    def nll(inverse_t: float) -> float:
        return log_loss(probabilities(logits, 1.0 / inverse_t), labels)

    lo, hi = MIN_INVERSE_T, MAX_INVERSE_T
    ratio = (math.sqrt(5) - 1) / 2
    a, b = hi - ratio * (hi - lo), lo + ratio * (hi - lo)
    fa, fb = nll(a), nll(b)
    while hi - lo > tol:
        if fa <= fb:
            hi, b, fb = b, a, fa
            a = hi - ratio * (hi - lo)
            fa = nll(a)
        else:
            lo, a, fa = a, b, fb
            b = lo + ratio * (hi - lo)
            fb = nll(b)
    inverse_t = (lo + hi) / 2
    after = nll(inverse_t)
    if after > before:  # only when the optimum is T = 1 to within the tolerance
        return Calibration(1.0, True, before, before, len(labels))
    return Calibration(1.0 / inverse_t, True, before, after, len(labels))
