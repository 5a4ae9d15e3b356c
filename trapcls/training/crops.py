"""Training on detector crops (`train DATA --detections md.json`): which frames and boxes become samples.

The split is made on frames first (training/split.py, by site or group as for whole frames), and only then is
each part's frames expanded into samples here, so every box of a frame falls in the part its frame is in. A
resumed run expands the frames of its saved split the same way. What a frame gives, by its label:

- **an animal label**: one crop per animal box at or above the detection threshold, labelled with the frame's
  label. Person and vehicle boxes count only on a frame without such an animal box (a frame labelled human or
  vehicle is about them); beside an animal box they are left out, since a person next to a deer is not a deer.
  A frame with no box at or above the threshold is left out (counted): its animal was missed or is too
  uncertain to crop, and at inference such a frame is blank by the detector, never seen by the classifier.
- **the blank label** (blank or empty) gives the blank class in two ways, both kept: its boxes at or above the
  threshold (the detector's false positives: a branch, a shadow) as crops, and, when it has none, the whole
  frame. The false positives are exactly what a crop model is shown at inference and must call blank; the
  whole frames keep the blank class populated when the detector is clean (MegaDetector at its typical
  threshold leaves most blank frames without a box), so the bundle's class list is the data's and the blank
  class is learnt from background rather than left untrained.
- **no entry in md.json, or a detector failure**: left out and counted, whatever the label.

The counts go to the log, config.json ("crops") and the run's summary lines.
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass, field
from pathlib import Path

from trapcls.core.frames.crop import CropSpec
from trapcls.core.frames.detections import Box, Detections, Entry, Matching, load_detections, match
from trapcls.core.frames.labels import Sample
from trapcls.core.model.blank import blank_index
from trapcls.core.system.exceptions import DataError
from trapcls.core.system.fsutil import sha256_file
from trapcls.core.system.names import display

log = logging.getLogger(__name__)


@dataclass
class CropCounts:
    """What the expansion made of some frames: samples by kind, frames left out by reason."""

    frames: int = 0
    crops: int = 0  # crop samples of frames with an animal (or person / vehicle) label
    blank_crops: int = 0  # the detector's false positives on blank frames
    blank_frames: int = 0  # blank frames without a box: whole-frame samples
    no_box: int = 0  # non-blank frames with no box at or above the threshold: left out
    no_entry: int = 0  # frames md.json has no entry for: left out
    failed: int = 0  # frames the detector failed on: left out
    boxes_left_out: int = 0  # person / vehicle boxes beside an animal box on the same frame

    @property
    def samples(self) -> int:
        return self.crops + self.blank_crops + self.blank_frames

    def add(self, other: CropCounts) -> CropCounts:
        return CropCounts(**{k: v + getattr(other, k) for k, v in asdict(self).items()})


@dataclass(frozen=True)
class CropPlan:
    """md.json matched to the data's frames, the threshold applied, and how to expand a list of frames."""

    detections: Detections
    matching: Matching
    base: Path  # frame paths are looked up relative to this folder (DATA, or the CSV's folder)
    threshold: float
    threshold_from: str
    blank: str | None  # the data's blank class, if it has one
    counts: dict[str, CropCounts] = field(default_factory=dict)  # by part (train, val), once expanded

    def expand(self, frames: list[Sample], part: str) -> list[Sample]:
        """The samples of `frames` (one part of the split), in frame order; counts recorded under `part`."""
        counts, samples = CropCounts(frames=len(frames)), []
        for frame in frames:
            samples.extend(self._frame(frame, counts))
        self.counts[part] = counts
        return samples

    def _frame(self, frame: Sample, counts: CropCounts) -> list[Sample]:
        entry = self.matching.by_path.get(_key(frame.path, self.base))
        if entry is None:
            counts.no_entry += 1
            return []
        if entry.failure:
            counts.failed += 1
            return []
        boxes, left_out = crop_boxes(entry, self.threshold)
        counts.boxes_left_out += left_out
        if frame.label == self.blank:
            if not boxes:
                counts.blank_frames += 1
                return [frame]
            counts.blank_crops += len(boxes)
        elif not boxes:
            counts.no_box += 1
            return []
        else:
            counts.crops += len(boxes)
        return [Sample(path=frame.path, label=frame.label, site=frame.site, box=box) for box in boxes]

    def facts(self) -> dict:
        """config.json's "crops": the file, the threshold, the geometry and the counts by part."""
        return {"detections_sha256": sha256_file(self.detections.source), "detector": self.detections.detector,
                "threshold": self.threshold, "threshold_from": self.threshold_from,
                "geometry": CropSpec().to_dict(), "frames_matched": len(self.matching.by_path),
                "frames": self.matching.frames, **{part: asdict(c) for part, c in self.counts.items()}}

    def lines(self) -> list[str]:
        """What the detections gave, for the run's summary: the matching, then `summary`."""
        return self.matching.lines(self.detections.source) + self.summary()

    def summary(self) -> list[str]:
        """The threshold, the samples made, the frames left out and why."""
        total = CropCounts()
        for counts in self.counts.values():
            total = total.add(counts)
        lines = [f"detection threshold {self.threshold:g} ({self.threshold_from}); crop geometry "
                 f"{CropSpec().geometry}, margin {CropSpec().margin:g}"]
        parts = ", ".join(f"{part} {c.samples} from {c.frames - _left_out(c)} frames"
                          for part, c in self.counts.items())
        lines.append(f"samples: {total.crops} crops of labelled frames, {total.blank_crops} blank crops (false "
                     f"positives), {total.blank_frames} whole blank frames ({parts})")
        out = [f"{n} {what}" for n, what in ((total.no_box, "with no box at or above the threshold"),
                                             (total.no_entry, "not in the detections file"),
                                             (total.failed, "the detector failed on")) if n]
        lines.append("frames left out: " + ("; ".join(out) if out else "none"))
        if total.boxes_left_out:
            lines.append(f"{total.boxes_left_out} person/vehicle boxes beside an animal box left out")
        return lines


def crop_boxes(entry: Entry, threshold: float) -> tuple[tuple[Box, ...], int]:
    """A frame's boxes that become crops, and how many boxes at or above the threshold are left out: the animal
    boxes; person and vehicle boxes only when the frame has no animal box."""
    above = entry.above(threshold)
    animals = tuple(b for b in above if b.category == "animal")
    return (animals, len(above) - len(animals)) if animals else (above, 0)


def plan_crops(data: Path, detections: Path, given: float | None, frames: list[Sample]) -> CropPlan:
    """Load `detections`, match it to `frames` (all the data's frames) and pick the threshold."""
    loaded = load_detections(detections)
    base = (data if data.is_dir() else data.parent).absolute()
    matching = match([_key(s.path, base) for s in frames], loaded)
    threshold, where = loaded.threshold(given)
    classes = sorted({s.label for s in frames})
    index = blank_index(classes)
    plan = CropPlan(loaded, matching, base, threshold, where, classes[index] if index is not None else None)
    for line in matching.lines(loaded.source):
        log.info("%s", line)
    if plan.blank is None:
        log.warning("the data has no blank class: `trapcls predict --detections` will refuse this model, since a frame "
                    "without a box is blank and its rows must say so; add blank frames (class blank or empty)")
    return plan


def check_expanded(plan: CropPlan, train: list[Sample], classes: list[str]) -> None:
    """Refuse a run whose training samples hold fewer than 2 classes; warn about classes no training sample holds."""
    learnt = {s.label for s in train}
    if len(learnt) < 2:
        raise DataError(f"{display(plan.detections.source.name)} at detection threshold {plan.threshold:g} leaves "
                        f"{len(train)} training samples in {len(learnt)} class(es) ({'; '.join(plan.summary()[1:])}); "
                        "a classifier needs at least 2. Lower --detection-threshold, or check the file.")
    empty = sorted(set(classes) - learnt)
    if empty:
        log.warning("no training sample for %s: every training frame of %s has no box at or above %g (or no "
                    "entry); the model will not learn %s", ", ".join(empty),
                    "these classes" if len(empty) > 1 else "this class", plan.threshold,
                    "them" if len(empty) > 1 else "it")


def _key(path: Path, base: Path) -> str:
    """A frame's path as md.json's `file` would name it: relative to `base` when inside it, '/'-separated."""
    path = path.absolute()
    try:
        return path.relative_to(base).as_posix()
    except ValueError:
        return path.as_posix()


def _left_out(counts: CropCounts) -> int:
    return counts.no_box + counts.no_entry + counts.failed
