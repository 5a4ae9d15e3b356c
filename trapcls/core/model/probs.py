"""From logits to the probabilities every output reports.

One definition for every backend, training's validation and the exports' parity checks:
softmax(logits / temperature) in float64, with the bundle's calibration temperature.
"""

from __future__ import annotations

import numpy as np


def probabilities(logits: np.ndarray, temperature: float) -> np.ndarray:
    """Calibrated class probabilities: softmax(logits / temperature), computed in float64."""
    z = np.asarray(logits, dtype=np.float64) / temperature
    z -= z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)
