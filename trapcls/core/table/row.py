"""One classified file as every output holds it, and the rules for its cells (numbers, formula-safe text)."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime
from pathlib import PurePosixPath

import numpy as np

# Cells a spreadsheet would run as a formula start with one of these (a file name can carry one); a cell that
# starts with the guard's own quote is guarded too, so that guarding stays one-to-one.
_FORMULA_LEADS = ("=", "+", "-", "@", "\t", "\r", "'")
# What cannot stand in a CSV cell as it is: control characters (a bare carriage return breaks the line
# structure) and the lone surrogates by which Python holds the bytes of a file name that are not UTF-8.
_UNWRITABLE = re.compile(r"[\x00-\x1f\x7f\ud800-\udfff]")
_ESCAPED = re.compile(r"\\(?:\\|x([0-9A-F]{2})|u([0-9A-F]{4}))")
# Probabilities are written with this many significant digits: enough to tell any two apart that matter,
# few enough that a CSV stays readable. Everything computed from a written row uses these values.
DIGITS = 8


@dataclass(frozen=True)
class Row:
    """The outcome for one file: probabilities in class order, or the reason it failed.

    `path` is relative and '/'-separated, exactly the key the CSV's first cell holds (for a submission,
    its stem is the id). `captured` is the EXIF capture time as ISO 8601 camera-local time, with an offset
    when EXIF had one, "" when there is none.
    """

    path: str
    probs: np.ndarray | None
    captured: str = ""
    error: str = ""

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


def neutralise(text: str) -> str:
    """Text (a file name, a class, a reason) as a cell that is valid UTF-8, safe in a spreadsheet and one-to-one.

    Plain text is written as it is. Text a spreadsheet would run as a formula (= + - @ tab CR), or that starts
    with a quote, gets a leading quote. Text holding what a CSV line cannot carry (a control character, a byte
    of a file name that is not UTF-8) gets the leading quote too, and its backslashes are doubled and those
    characters written as escapes: \\xE9 for the name byte 0xE9 that is not UTF-8 (Latin-1 'é' on a card),
    \\x0D for a carriage return. `unneutralise` undoes it exactly; docs/predict.md states the form.
    """
    if not _UNWRITABLE.search(text):
        return "'" + text if text.startswith(_FORMULA_LEADS) else text
    return "'" + _UNWRITABLE.sub(_escape, text.replace("\\", "\\\\"))


def unneutralise(cell: str) -> str:
    """The text `neutralise` was given. A cell that `neutralise` could not have written (a file of an older
    trapcls, a hand-edited one) is taken as it is."""
    if not cell.startswith("'"):
        return cell
    body = cell[1:]
    text = _ESCAPED.sub(_unescape, body) if "\\" in body else body
    return text if neutralise(text) == cell else cell


def _escape(found: re.Match) -> str:
    code = ord(found.group())
    if 0xDC80 <= code <= 0xDCFF:  # a name byte that is not UTF-8, as os.listdir holds it (surrogateescape)
        return f"\\x{code - 0xDC00:02X}"
    return f"\\x{code:02X}" if code < 0x100 else f"\\u{code:04X}"


def _unescape(found: re.Match) -> str:
    byte, unit = found.group(1), found.group(2)
    if unit:
        return chr(int(unit, 16))
    if byte:
        code = int(byte, 16)
        return chr(code) if code < 0x80 else chr(0xDC00 + code)
    return "\\"


def name_bytes(name: str) -> bytes:
    """A name as the bytes the file system holds (the bytes that are not UTF-8 restored)."""
    return name.encode("utf-8", "surrogateescape")


def display(name: str) -> str:
    """A name as valid UTF-8 text for JSON and messages: bytes that are not UTF-8 shown as \\xE9 (the one
    place a name is not kept one-to-one: a file literally called 'caf\\xe9.jpg' next to it would read alike)."""
    try:
        name.encode("utf-8")
        return name
    except UnicodeEncodeError:
        pass
    try:
        return name_bytes(name).decode("utf-8", "backslashreplace")
    except UnicodeEncodeError:  # a surrogate no file system name holds (from a hand-made JSON, say)
        return name.encode("utf-8", "backslashreplace").decode("utf-8")
