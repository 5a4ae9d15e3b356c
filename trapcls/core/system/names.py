"""Names as text: the one lossless, one-to-one form of a file name, class or reason in a CSV cell, and its
display form for JSON and messages. Free of numpy, so the CLI's help can show names without loading it."""

from __future__ import annotations

import re

# Cells a spreadsheet would run as a formula start with one of these (a file name can carry one); a cell that
# starts with the guard's own quote is guarded too, so that guarding stays one-to-one.
_FORMULA_LEADS = ("=", "+", "-", "@", "\t", "\r", "'")
# What cannot stand in a CSV cell as it is: control characters (a bare carriage return breaks the line
# structure) and the lone surrogates by which Python holds the bytes of a file name that are not UTF-8.
_UNWRITABLE = re.compile(r"[\x00-\x1f\x7f\ud800-\udfff]")
_ESCAPED = re.compile(r"\\(?:\\|x([0-9A-F]{2})|u([0-9A-F]{4}))")


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
