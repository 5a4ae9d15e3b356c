"""The one crop geometry: how a detector's box becomes model input, the same in training and in inference.

A box (x, y, w, h relative to the upright frame) becomes a SQUARE of side max(w, h) in pixels times
(1 + 2 * MARGIN), centred on the box: the animal whole, with a little of what is around it, and never
stretched (a square crop resized to a square input keeps the animal's shape). Where the square leaves the
frame it is padded with black, so an animal at the frame's edge stays where it was in its crop. The square is
then resized to the model's input like a whole frame (preprocess.resize). A bundle trained on crops records
this geometry under "crop" (`CropSpec.to_dict`); a bundle that records another one is refused.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from trapcls.core.frames.detections import Box
from trapcls.core.frames.preprocess import PreprocessSpec, load_frame, resize, to_array
from trapcls.core.system.exceptions import BundleError

GEOMETRY = "square"
# Context on each side of the box, as a fraction of its longer side: 10% (SpeciesNet and DeepFaune crop the
# box with little or no margin; a little context helps tell a bird's tail from a branch).
MARGIN = 0.1
PAD = "black"


@dataclass(frozen=True)
class CropSpec:
    """What bundle.json's "crop" section states: the geometry, its margin and its padding."""

    geometry: str = GEOMETRY
    margin: float = MARGIN
    pad: str = PAD

    def to_dict(self) -> dict:
        return {"geometry": self.geometry, "margin": self.margin, "pad": self.pad}

    @classmethod
    def from_dict(cls, data: object, where: str) -> CropSpec:
        """The section as written; BundleError unless it is the one geometry this trapcls implements."""
        spec = cls()
        if data != spec.to_dict():
            raise BundleError(f"{where}: the crop section {data!r} is not the crop geometry this trapcls uses "
                              f"({spec.to_dict()}); the model was trained on other crops. Retrain it, or upgrade "
                              "trapcls.")
        return spec


def square(box: Box | tuple[float, float, float, float], width: int, height: int) -> tuple[int, int, int, int]:
    """The crop of `box` in a frame of `width` x `height` pixels: (left, top, right, bottom), possibly outside
    the frame (that part is padded), at least 1 pixel a side."""
    x, y, w, h = box.bbox if isinstance(box, Box) else box
    side = max(w * width, h * height) * (1 + 2 * MARGIN)
    cx, cy = (x + w / 2) * width, (y + h / 2) * height
    left, top = math.floor(cx - side / 2), math.floor(cy - side / 2)
    size = max(1, round(side))
    return left, top, left + size, top + size


def crop(image: Image.Image, box: Box | tuple[float, float, float, float]) -> Image.Image:
    """The square crop of `box` from an upright RGB frame; the part outside the frame black."""
    return image.crop(square(box, image.width, image.height))  # Pillow fills what lies outside with black


def preprocess_crops(path: str | Path, boxes: list[Box], spec: PreprocessSpec) -> tuple[np.ndarray, str | None]:
    """Decode a frame once and turn each box into model input: (len(boxes), 3, H, W), and its capture time.

    The frame is decoded at full size (no JPEG draft scaling, unlike a whole frame): a draft scale chosen for the
    smallest box would make a box's crop depend on the other boxes of its frame, and differ between training
    (one box at a time) and inference."""
    frame = load_frame(path)
    arrays = [to_array(resize(crop(frame.image, box), spec), spec) for box in boxes]
    return np.stack(arrays), frame.captured
