"""The one rule that turns a frame's detector boxes and their classifications into the frame's row.

`predict --detections` classifies every box at or above the detection threshold as a crop. A frame's row:

1. **No box at or above the threshold** (none at all, or only low-confidence ones): the detector saw nothing,
   so the frame is blank: P(blank) = 1 and every other class 0. (The model needs a blank class to say so.)
2. **Person and vehicle boxes** get the model's human or vehicle class (named as `HUMAN_NAMES` /
   `VEHICLE_NAMES`) with probability 1: the detector decided, as SpeciesNet's ensemble does. A model without
   such a class classifies them as crops like animal boxes.
3. **One or more boxes**: the frame's probabilities are those of its boxes combined by the rule for several
   views of one scene (`probs.combine_frames`, the rule of events and video clips): P(blank) is the smallest
   of the boxes' (a crop the classifier calls blank is a detector false positive; the frame is as little blank
   as its most animal-looking box), and the rest is shared among the classes in proportion to the boxes'
   summed probabilities, so each box votes with the weight of what it shows. One box: its probabilities.
   The label is their most probable class; a frame with a person and an animal is labelled by whichever has
   more evidence, and `species` lists both.
4. **is_blank** is then decided on the frame's P(blank) by the blank rule of the run, as for any frame (the
   certified policy or --blank-threshold): a frame whose every box the classifier calls blank can be blank.
5. **species**: the most probable class of each box (as written, to 8 digits), blank left out, each class
   once, in the model's class order.
"""

from __future__ import annotations

import numpy as np

from trapcls.core.model.probs import combine_frames
from trapcls.core.system.exceptions import BundleError
from trapcls.core.table.row import number

HUMAN_NAMES = ("human", "humans", "person", "people", "human_vehicle")
VEHICLE_NAMES = ("vehicle", "vehicles", "car", "cars", "truck")
_DETECTOR_NAMES = {"person": HUMAN_NAMES, "vehicle": (*VEHICLE_NAMES, "human_vehicle")}


def detector_class(category: str, classes: tuple[str, ...]) -> int | None:
    """The model's class a person or vehicle box is (None for an animal box, or when the model has no such class)."""
    names = _DETECTOR_NAMES.get(category, ())
    return next((i for i, name in enumerate(classes) if name.lower() in names), None)


def one_hot(index: int, n: int) -> np.ndarray:
    out = np.zeros(n)
    out[index] = 1.0
    return out


def frame_from_boxes(box_probs: list[np.ndarray], classes: tuple[str, ...],
                     blank: int | None) -> tuple[np.ndarray, tuple[str, ...]]:
    """A frame's probabilities and species from its classified boxes' probabilities (rules 1, 3 and 5)."""
    if blank is None:
        raise BundleError("a frame without boxes is blank, and this model has no blank class to say so; "
                          "classify detector boxes with a model that has one")
    if not box_probs:
        return one_hot(blank, len(classes)), ()
    stacked = np.stack(box_probs)
    tops = {int(np.argmax([float(number(v)) for v in p])) for p in stacked}  # the label each box's cells give
    species = tuple(classes[i] for i in sorted(tops) if i != blank)
    return combine_frames(stacked, blank), species
