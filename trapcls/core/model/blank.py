"""Blank frames (wind, sun, rain, no animal): which class means blank, and when a frame counts as one.

Free of heavy imports: the CLI shows the default threshold in its help.
"""

from __future__ import annotations

# Class names that mean "nothing triggered the camera but wind, sun or rain".
BLANK_NAMES = ("blank", "empty")
# is_blank is true when P(blank) >= this, unless a command is given another threshold.
DEFAULT_BLANK_THRESHOLD = 0.5


def blank_index(classes: tuple[str, ...] | list[str]) -> int | None:
    """Index of the blank class (named blank or empty, any case), or None."""
    for i, name in enumerate(classes):
        if name.lower() in BLANK_NAMES:
            return i
    return None
