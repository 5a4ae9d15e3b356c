"""From logits to the probabilities every output reports.

One definition for every backend, training's validation and the exports' parity checks:
softmax(logits / temperature) in float64, with the bundle's calibration temperature. And one rule for
what several frames of one scene say together (`combine_frames`): an event's frames, a video clip's
sampled frames.
"""

from __future__ import annotations

import numpy as np


def probabilities(logits: np.ndarray, temperature: float) -> np.ndarray:
    """Calibrated class probabilities: softmax(logits / temperature), computed in float64."""
    z = np.asarray(logits, dtype=np.float64) / temperature
    z -= z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def combine_frames(probs: np.ndarray, blank: int | None) -> np.ndarray:
    """The probabilities of one scene (an event, a clip) from those of its readable frames, one row each.

    - P(blank) is the *smallest* P(blank) of the frames: a scene is as little blank as its most
      animal-looking frame, so one frame that clearly shows an animal makes it an animal, and frames
      that are all blank keep it blank (a mean would let nine empty frames outvote the one frame where
      the heron stands; a product would turn ten 0.9-blank frames into 0.35).
    - The rest, 1 - P(blank), is shared among the other classes in proportion to the frames' summed
      probabilities of each: frames vote with the weight of what they show, so the frame with the
      animal in it decides which animal, and a frame that sees nothing barely counts.
    - Without a blank class, the mean of the frames'.
    The result sums to 1, like a frame's.
    """
    if blank is None:
        return probs.mean(axis=0)
    p_blank = float(probs[:, blank].min())
    evidence = probs.sum(axis=0)
    evidence[blank] = 0.0
    total = evidence.sum()
    if total <= 0:  # every frame is certain it is blank
        out = np.zeros(probs.shape[1])
    else:
        out = evidence / total * (1.0 - p_blank)
    out[blank] = p_blank
    return out / out.sum()
