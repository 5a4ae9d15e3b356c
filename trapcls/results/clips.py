"""What the exports read from a video clip's row besides a frame's: when the clip ends, whether its frame rate is known.

A clip's row (`Row.clip`) holds its start (`captured`, from the container), its duration and frame rate (None when
unknown) and its best frame. events, convert --to megadetector and convert --to camtrap-dp all ask these questions;
the answers live here once.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from datetime import datetime, timedelta

from trapcls.core.system.exceptions import DataError
from trapcls.core.table.row import Clip, Row

RATE_DIGITS = 6  # a frame rate as written in JSON: 30000/1001 -> 29.97003


def clip_end(start: datetime, row: Row, *, whole_seconds: bool = False) -> datetime:
    """When what `row` recorded from `start` ends: a clip's start plus its duration; a frame's (or a clip of unknown
    length's) own time. `whole_seconds`: up to the next whole second, so that a time written in seconds covers the
    clip (grouping uses the exact end)."""
    length = known_duration(row.clip) if row.clip is not None else None
    if length is None:
        return start
    try:
        end = start + timedelta(seconds=length)
    except OverflowError:
        raise DataError(f"{row.path}: a clip of {length:g} s starting {row.captured} ends after the year 9999; the "
                        "duration_s cell is wrong. Re-run predict on the clip.") from None
    if not whole_seconds or end.microsecond == 0:
        return end
    return end.replace(microsecond=0) + timedelta(seconds=1)


def known_duration(clip: Clip) -> float | None:
    """The clip's duration in seconds when it is a positive number, else None (unknown, or a hand-edited cell)."""
    length = clip.duration
    return length if length is not None and math.isfinite(length) and length > 0 else None


def known_rate(clip: Clip) -> float | None:
    """The clip's frame rate when it is a positive number (rounded to RATE_DIGITS), else None: unknown, or a
    hand-edited 0, negative, NaN or infinity."""
    rate = clip.frame_rate
    if rate is None or not math.isfinite(rate) or round(rate, RATE_DIGITS) <= 0:
        return None
    return round(rate, RATE_DIGITS)


def files_word(rows: Iterable[Row]) -> str:
    """What a message calls the files of a table: "frames", or "frames or clips" when some are video clips."""
    return "frames or clips" if any(row.clip is not None for row in rows) else "frames"
