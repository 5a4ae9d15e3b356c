"""When a clip was recorded, from its container's metadata: never the file's modification time.

QuickTime/MP4 `creation_time` (an Apple `creationdate` first, as it holds the local offset), AVI `IDIT`
(which FFmpeg reports as creation_time) then `ICRD` (as date), Matroska's DateUTC (as creation_time), and
ASF's file creation date, which FFmpeg's ASF demuxer does not report and is read from the header here.
"""

from __future__ import annotations

import os
import re
import struct
from datetime import datetime, timedelta

_STAMP = re.compile(r"\s*(\d{4})[-:/](\d\d)[-:/](\d\d)[T ](\d\d):(\d\d):(\d\d)(?:\.\d*)?\s*(Z|[+-]\d\d:?\d\d)?\s*")
# A clock never set counts from its epoch: QuickTime's (1904), Unix's and ASF's converted ones (1970).
_EPOCH_DAYS = ("1904-01-01", "1970-01-01")
_ASF_HEADER = bytes.fromhex("3026b2758e66cf11a6d900aa0062ce6c")
_ASF_FILE_PROPERTIES = bytes.fromhex("a1dcab8c47a9cf118ee400c00c205365")
_ASF_EPOCH = datetime(1601, 1, 1)  # FILETIME: 100 ns ticks since then, UTC
_ASF_BROADCAST = 0x1  # the file is a live broadcast: its creation date is not valid


def capture_time(container, path: str | os.PathLike[str] = "") -> tuple[str | None, str]:
    """The clip's capture time as YYYY-MM-DDTHH:MM:SS[+HH:MM] and the tag it came from, or (None, "").

    Read from the container, never the file's modification time: QuickTime/MP4 `creation_time` (the
    movie's, else the video stream's; an Apple `creationdate` first, as it holds the local offset),
    AVI `IDIT` (FFmpeg reports it as creation_time) then `ICRD` (as date), Matroska's DateUTC (as
    creation_time), ASF's file creation date. A date alone (ICRD's usual "2013-05-06") is not a time
    and is skipped. The MP4 and ASF fields are UTC by their specifications, but camera traps write their
    local clock into them, so the time is kept as written and no offset is claimed. A clock never set
    (0000-00-00, the 1904 or 1970 epoch) is missing.
    """
    fmt = container.format.name
    found = dict(container.metadata)
    stream = container.streams.video[0].metadata if container.streams.video else {}
    if fmt == "avi":
        candidates = [("IDIT", found.get("creation_time")), ("ICRD", found.get("date"))]
    elif fmt == "asf":
        candidates = [("CreationDate", _asf_creation(path)), ("creation_time", found.get("creation_time"))]
    else:
        candidates = [("com.apple.quicktime.creationdate", found.get("com.apple.quicktime.creationdate")),
                      ("creation_time", found.get("creation_time")), ("creation_time", stream.get("creation_time"))]
    for tag, text in candidates:
        stamp = parse_stamp(text, keep_offset=tag == "com.apple.quicktime.creationdate")
        if stamp:
            return stamp, tag
    return None, ""


def parse_stamp(text: object, *, keep_offset: bool = False) -> str | None:
    """A container's date and time text as YYYY-MM-DDTHH:MM:SS (+HH:MM with `keep_offset` when it has
    one), or None when it is not a full date and time or is a clock's epoch."""
    match = _STAMP.fullmatch(text) if isinstance(text, str) else None
    if not match:
        return None
    try:
        stamp = datetime(*(int(match[i]) for i in range(1, 7))).isoformat()
    except ValueError:  # 0000-00-00 00:00:00, month 13 ...
        return None
    if stamp[:10] in _EPOCH_DAYS:
        return None
    zone = match[7]
    if keep_offset and zone and zone != "Z":
        zone = zone if ":" in zone else f"{zone[:3]}:{zone[3:]}"
        hours, minutes = int(zone[1:3]), int(zone[4:6])
        if hours * 60 + minutes <= (14 * 60 if zone[0] == "+" else 12 * 60) and minutes < 60:
            return stamp + zone
    return stamp


def _asf_creation(path: str | os.PathLike[str]) -> str | None:
    """The Creation Date of an ASF file's File Properties object, as text, or None (FFmpeg's ASF demuxer
    does not report it). Reads the header only."""
    found = _asf_file_properties(path)
    if found is None:
        return None
    ticks, flags = found
    if flags & _ASF_BROADCAST or not ticks:
        return None
    try:
        return (_ASF_EPOCH + timedelta(microseconds=ticks // 10)).isoformat(sep=" ")
    except OverflowError:
        return None


def _asf_file_properties(path: str | os.PathLike[str]) -> tuple[int, int] | None:
    """(creation date in FILETIME ticks, flags) from the ASF header's File Properties object, or None."""
    try:
        with open(path, "rb") as fh:
            head = fh.read(64 * 1024)
    except OSError:
        return None
    if head[:16] != _ASF_HEADER or len(head) < 30:
        return None
    end, at = min(struct.unpack_from("<Q", head, 16)[0], len(head)), 30
    while at + 24 <= end:
        guid, size = head[at:at + 16], struct.unpack_from("<Q", head, at + 16)[0]
        if guid == _ASF_FILE_PROPERTIES and at + 92 <= end:
            return struct.unpack_from("<Q", head, at + 48)[0], struct.unpack_from("<I", head, at + 88)[0]
        if size < 24:
            break
        at += size
    return None
