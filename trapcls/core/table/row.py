"""One classified file as every output holds it, and the rule for its number cells (text: core/system/names.py)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from pathlib import PurePosixPath

import numpy as np

from trapcls.core.frames.detections import Box

# Probabilities are written with this many significant digits: enough to tell any two apart that matter,
# few enough that a CSV stays readable. Everything computed from a written row uses these values.
DIGITS = 8


@dataclass(frozen=True)
class Clip:
    """What a video clip's row holds besides a frame's: how many frames were sampled and classified, the clip's
    length and frame rate (None when unknown), and the frame that shows the row's label best (None for a clip
    that failed). `best_frame / frame_rate` is its time in the clip."""

    frames: int = 0
    duration: float | None = None
    frame_rate: float | None = None
    best_frame: int | None = None


@dataclass(frozen=True)
class BoxResult:
    """One detector box a frame's row was computed from, and the class probabilities it got (a person or vehicle
    box mapped to the model's human or vehicle class gets that class with probability 1)."""

    box: Box
    probs: np.ndarray


@dataclass(frozen=True)
class Detected:
    """What a frame's row holds when it was classified from a detector's boxes (`predict --detections`): how many
    boxes were at or above the detection threshold (each classified), the classes they show (each once, blank
    never), and the boxes themselves (empty when read back from the frame CSV alone: they are in --boxes-out)."""

    count: int = 0
    species: tuple[str, ...] = ()
    boxes: tuple[BoxResult, ...] = ()


@dataclass(frozen=True)
class Row:
    """The outcome for one file (a frame or a video clip): probabilities in class order, or the reason it failed.

    `path` is relative and '/'-separated, exactly the key the CSV's first cell holds (for a submission,
    its stem is the id). `captured` is the capture time as ISO 8601 camera-local time (a frame's EXIF, a
    clip's container metadata: its start), with an offset when the file had one, "" when there is none.
    `clip` is set for a video clip, `detected` for a frame classified from a detector's boxes.
    """

    path: str
    probs: np.ndarray | None
    captured: str = ""
    error: str = ""
    clip: Clip | None = None
    detected: Detected | None = None

    @property
    def ok(self) -> bool:
        return self.probs is not None

    @property
    def stem(self) -> str:
        """The submission id: the file name without its extension."""
        return PurePosixPath(self.path).stem

    @property
    def time(self) -> datetime | None:
        """The camera's wall-clock time (offset dropped: frames of one camera share one clock)."""
        return parse_time(self.captured)

    @property
    def offset(self) -> str | None:
        """The UTC offset EXIF recorded ("+02:00"), or None."""
        if not self.captured:
            return None
        offset = datetime.fromisoformat(self.captured).utcoffset()
        if offset is None:
            return None
        minutes = int(offset.total_seconds()) // 60
        return f"{'-' if minutes < 0 else '+'}{abs(minutes) // 60:02d}:{abs(minutes) % 60:02d}"


def parse_time(text: str) -> datetime | None:
    """A capture time cell as naive wall-clock time, or None when empty."""
    if not text:
        return None
    return datetime.fromisoformat(text).replace(tzinfo=None)


def number(p: float) -> str:
    """A probability as a cell."""
    return f"{float(p):.{DIGITS}g}"
