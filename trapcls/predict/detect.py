"""Classify frames from a detector's boxes (`predict --detections md.json`): every box at or above the detection
threshold is cropped (core/frames/crop.py, the geometry training used) and classified; a frame's row comes from
its boxes by the one rule of core/model/boxes.py; each box's own row goes to the boxes CSV (--boxes-out).

A frame is decoded once, whatever its number of boxes; the crops of a batch of frames are classified together,
in chunks of the batch size, by the same backend and probabilities as whole frames (`infer.frame_probs`).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from trapcls.core.frames.crop import preprocess_crops
from trapcls.core.frames.detections import Box, Detections, Entry, load_detections, match
from trapcls.core.frames.discover import ImageFile
from trapcls.core.frames.preprocess import load_frame
from trapcls.core.model.blank import blank_index
from trapcls.core.model.boxes import detector_class, frame_from_boxes, one_hot
from trapcls.core.model.bundle import Bundle
from trapcls.core.system.exceptions import BundleError, OptionError
from trapcls.core.system.names import display
from trapcls.core.table.boxes import BoxLayout
from trapcls.core.table.row import BoxResult, Detected, Row
from trapcls.predict.backends import Backend
from trapcls.predict.infer import Failure, decode, failure_row, frame_probs
from trapcls.predict.side_csv import SideCsv


def check_model_input(bundle: Bundle, crops: bool) -> str:
    """"" when the run feeds the model what it was trained on; else a warning (crops for a whole-frame model).
    A crop model given whole frames is refused: its probabilities on a whole frame mean nothing."""
    if bundle.crop is not None and not crops:
        raise OptionError("detections", f"{bundle.model_id} was trained on detector crops (bundle.json \"crop\"), so "
                                        "it classifies boxes, not whole frames: give {detections} with MegaDetector's "
                                        "output for these frames, or use a whole-frame model")
    if bundle.crop is None and crops:
        return (f"warning: {bundle.model_id} was trained on whole frames; it classifies the crops as it can, but a "
                "model trained on crops (trapcls train --detections) is what crops are for")
    return ""


@dataclass(frozen=True)
class _Crops:
    """A decoded frame: its crops' model input (None when no box needs the classifier) and capture time."""

    inputs: np.ndarray | None
    captured: str | None


class BoxClassifier:
    """What a detection run does with each frame: its entry, the boxes it classifies, the rows it writes."""

    def __init__(self, detections: Detections, given: float | None, bundle: Bundle, paths: list[str],
                 writer: SideCsv | None = None) -> None:
        if blank_index(bundle.classes) is None:
            raise BundleError(f"{bundle.model_id} has no blank class: a frame without a box is blank, and its rows "
                              "could not say so. Classify detector boxes with a model that has a blank class.")
        self.detections, self.bundle, self.writer = detections, bundle, writer
        self.threshold, self.where = detections.threshold(given)
        self.matching = match(paths, detections)
        self.layout = BoxLayout(bundle.classes, bundle.model_id)
        self.blank = blank_index(bundle.classes)
        self.unmapped: dict[str, int] = {}  # person / vehicle boxes classified as crops: the model has no such class

    @classmethod
    def start(cls, path: Path, given: float | None, bundle: Bundle, *, paths: list[str], boxes_out: Path,
              done: set[str]) -> BoxClassifier:
        classifier = cls(load_detections(path), given, bundle, paths)
        classifier.writer = SideCsv(boxes_out, classifier.layout.header(), "--boxes-out", "boxes", done)
        return classifier

    def notes(self) -> list[str]:
        notes = self.matching.lines(self.detections.source)
        notes.append(f"detection threshold {self.threshold:g} ({self.where}); boxes -> "
                     f"{display(str(self.writer.path)) if self.writer else '(not written)'}")
        notes += [f"warning: the model has no {category} class: {n} {category} box{'es' if n > 1 else ''} were "
                  "classified as crops" for category, n in sorted(self.unmapped.items())]
        return notes

    def _plan(self, entry: Entry) -> tuple[tuple[Box, ...], list[Box]]:
        """The boxes classified (at or above the threshold), and those of them the classifier sees as crops."""
        above = entry.above(self.threshold)
        return above, [b for b in above if detector_class(b.category, self.bundle.classes) is None]

    def decode(self, file: ImageFile) -> _Crops | Failure:
        entry = self.matching.by_path.get(file.rel)
        if entry is None:
            return Failure(f"not in {display(self.detections.source.name)}: the detector did not see this frame")
        if entry.failure:
            return Failure(f"the detector failed on this frame: {entry.failure}")
        crops = self._plan(entry)[1]
        if not crops:  # nothing to crop: read the frame only to check it and to get its capture time
            item = decode(file.path, lambda p: (None, load_frame(p, min_size=(8, 8)).captured))
        else:
            item = decode(file.path, lambda p: preprocess_crops(p, crops, self.bundle.preprocess))
        return item if isinstance(item, Failure) else _Crops(*item)

    def rows(self, batch: list[ImageFile], items: list[_Crops | Failure], *, backend: Backend, batch_size: int,
             tta: bool) -> list[Row]:
        """The batch's frame rows; their box rows are appended to the boxes CSV first."""
        inputs = [item.inputs for item in items if isinstance(item, _Crops) and item.inputs is not None]
        stacked = np.concatenate(inputs) if inputs else np.zeros((0,))
        probs = iter(np.concatenate([frame_probs(stacked[i:i + batch_size], self.bundle, backend, tta)
                                     for i in range(0, len(stacked), batch_size)]) if len(stacked) else [])
        out, lines = [], []
        for file, item in zip(batch, items, strict=True):
            if isinstance(item, Failure):
                out.append(failure_row(file.rel, item))
                continue
            results = self._results(self.matching.by_path[file.rel], probs)
            frame, species = frame_from_boxes([r.probs for r in results], self.bundle.classes, self.blank)
            row = Row(file.rel, frame, captured=item.captured or "",
                      detected=Detected(len(results), species, tuple(results)))
            out.append(row)
            lines += [self.layout.cells(row.path, r) for r in results]
        if self.writer is not None and lines:
            self.writer.append(lines)
        return out

    def _results(self, entry: Entry, probs) -> list[BoxResult]:
        results = []
        for box in self._plan(entry)[0]:
            mapped = detector_class(box.category, self.bundle.classes)
            if mapped is not None:
                results.append(BoxResult(box, one_hot(mapped, len(self.bundle.classes))))
                continue
            if box.category != "animal":
                self.unmapped[box.category] = self.unmapped.get(box.category, 0) + 1
            results.append(BoxResult(box, next(probs)))
        return results
