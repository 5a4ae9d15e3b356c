"""MegaDetector batch output read once, checked once, and matched to the frames: what `predict --detections`,
`train --detections` and `convert` share.

The format (https://lila.science/megadetector-output-format, versions 1.0 to 1.6): `images` is a list of
`{"file", "detections": [{"category", "conf", "bbox": [x, y, width, height]}], "failure"}`, the box relative to
the frame (0..1, origin top left), `category` a key of `detection_categories` ("1": animal, "2": person,
"3": vehicle). `info.detector_metadata.typical_detection_threshold` is the detector's own threshold.

Paths: `file` is relative to the folder MegaDetector ran on. A frame's path here is relative to the folder
trapcls read; when the two folders differ by leading folder names (MegaDetector ran on `cams/`, trapcls on
`cams/siteA/`, or the other way round) the paths are aligned by dropping those names, and the alignment that
matches the most frames is used and reported.
"""

from __future__ import annotations

import json
import math
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

from trapcls.core.frames.discover import CLIP_SUFFIXES
from trapcls.core.system.exceptions import DataError
from trapcls.core.system.names import display

FORMAT_VERSIONS = ("1.0", "1.1", "1.2", "1.3", "1.4", "1.5", "1.6")
CATEGORIES = ("animal", "person", "vehicle")
# MegaDetector v5's recommended threshold, used when the file does not state the detector's own.
DEFAULT_THRESHOLD = 0.2
# Detectors write boxes rounded to 3-4 decimals: x + width may pass 1 by that much.
_ROUNDING = 1e-3
_SHOWN = 3


@dataclass(frozen=True)
class Box:
    """One detection: its position in the file's `detections` list for its frame (from 0), the detector's
    category name and confidence, and the box relative to the frame (x, y: top left; w, h: size; 0..1)."""

    index: int
    category: str
    conf: float
    x: float
    y: float
    w: float
    h: float

    @property
    def bbox(self) -> tuple[float, float, float, float]:
        return (self.x, self.y, self.w, self.h)


@dataclass(frozen=True)
class Entry:
    """A frame's entry: its boxes (all of them, whatever their confidence), or why the detector failed."""

    file: str
    boxes: tuple[Box, ...] = ()
    failure: str | None = None

    def above(self, threshold: float) -> tuple[Box, ...]:
        """The boxes at or above `threshold`: the ones classified."""
        return tuple(b for b in self.boxes if b.conf >= threshold)


@dataclass(frozen=True)
class Detections:
    """A checked MegaDetector file: entries by `file` (as written, '/'-separated), and what it says about itself."""

    source: Path
    entries: dict[str, Entry]
    info: dict[str, Any]
    categories: dict[str, str]  # detection_categories: id -> name
    stated_threshold: float | None  # info.detector_metadata.typical_detection_threshold, when a number in (0, 1]

    @property
    def detector(self) -> str:
        return str(self.info.get("detector") or "unknown")

    def threshold(self, given: float | None) -> tuple[float, str]:
        """The detection threshold to apply and where it came from: `given`, else the file's, else MDv5's."""
        if given is not None:
            return given, "--detection-threshold"
        if self.stated_threshold is not None:
            return self.stated_threshold, f"{self.source.name}'s typical_detection_threshold"
        return DEFAULT_THRESHOLD, "MegaDetector v5's typical threshold (the file states none)"


def load_detections(path: Path) -> Detections:
    """Read and check a MegaDetector batch-output JSON; DataError (one line, naming the file) when it is not one,
    when a box or category is out of its range, or when it holds video entries."""
    where = display(str(path))
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8-sig"))
    except FileNotFoundError:
        raise DataError(f"--detections {where} does not exist.") from None
    except IsADirectoryError:
        raise DataError(f"--detections {where} is a folder; give MegaDetector's output JSON file.") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise DataError(f"--detections {where} is not a MegaDetector output file: it is not JSON ({exc}).") from None
    if not isinstance(data, dict) or not isinstance(data.get("images"), list) \
            or not isinstance(data.get("detection_categories"), dict):
        raise DataError(f"--detections {where} is not a MegaDetector output file: it needs an 'images' list and "
                        "'detection_categories' (run MegaDetector's run_detector_batch, or check the file).")
    info = data.get("info") if isinstance(data.get("info"), dict) else {}
    version = str(info.get("format_version", ""))
    if version not in FORMAT_VERSIONS:
        raise DataError(f"{where}: MegaDetector output format {version or '(none stated)'!r} is not one trapcls "
                        f"reads ({', '.join(FORMAT_VERSIONS)}); info.format_version must state it.")
    categories = _categories(data["detection_categories"], where)
    entries: dict[str, Entry] = {}
    for i, image in enumerate(data["images"]):
        entry = _entry(image, i, categories, where)
        if entry.file in entries:
            raise DataError(f"{where}: {display(entry.file)} has two entries; each frame has one.")
        entries[entry.file] = entry
    return Detections(Path(path), entries, info, categories, _stated_threshold(info))


def _categories(raw: dict, where: str) -> dict[str, str]:
    names = {str(k): str(v).strip().lower() for k, v in raw.items()}
    odd = sorted(v for v in names.values() if v not in CATEGORIES)
    if odd or not names:
        raise DataError(f"{where}: detection_categories {raw} are not MegaDetector's ({', '.join(CATEGORIES)}); "
                        "trapcls classifies the animal boxes of MegaDetector's output.")
    return names


def _entry(image: Any, i: int, categories: dict[str, str], where: str) -> Entry:
    if not isinstance(image, dict) or not isinstance(image.get("file"), str) or not image["file"]:
        raise DataError(f"{where}: images[{i}] has no 'file'; not MegaDetector output.")
    file = image["file"].replace("\\", "/").removeprefix("./")
    if "frames" in image or "frame_rate" in image or file.lower().endswith(CLIP_SUFFIXES):
        raise DataError(f"{where}: {display(file)} is a video entry; --detections takes the boxes of still frames "
                        "(classify video clips without --detections).")
    failure = image.get("failure")
    if failure:
        return Entry(file, failure=str(failure))
    detections = image.get("detections") or []
    if not isinstance(detections, list):
        raise DataError(f"{where}: {display(file)}: 'detections' is not a list.")
    return Entry(file, tuple(_box(d, n, categories, f"{where}: {display(file)}") for n, d in enumerate(detections)))


def _box(d: Any, n: int, categories: dict[str, str], where: str) -> Box:
    if not isinstance(d, dict):
        raise DataError(f"{where}: detection {n} is not an object.")
    category = str(d.get("category"))
    if category not in categories:
        raise DataError(f"{where}: detection {n} has category {category!r}, which detection_categories "
                        f"({', '.join(sorted(categories))}) does not define.")
    conf, bbox = d.get("conf"), d.get("bbox")
    if not _number(conf) or not 0 <= conf <= 1:
        raise DataError(f"{where}: detection {n} has confidence {conf!r}; it must be a number in [0, 1].")
    if not isinstance(bbox, list) or len(bbox) != 4 or not all(_number(v) for v in bbox):
        raise DataError(f"{where}: detection {n} has bbox {bbox!r}; it must be [x, y, width, height].")
    x, y, w, h = (float(v) for v in bbox)
    if min(x, y) < 0 or w <= 0 or h <= 0 or x + w > 1 + _ROUNDING or y + h > 1 + _ROUNDING:
        raise DataError(f"{where}: detection {n} has bbox {bbox}, outside the frame; MegaDetector boxes are "
                        "[x, y, width, height] relative to the frame, each in [0, 1].")
    return Box(n, categories[category], float(conf), x, y, min(w, 1 - x), min(h, 1 - y))


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _stated_threshold(info: dict) -> float | None:
    meta = info.get("detector_metadata")
    value = meta.get("typical_detection_threshold") if isinstance(meta, dict) else None
    return float(value) if _number(value) and 0 < value <= 1 else None


@dataclass
class Matching:
    """Which entry each frame has: by the frame's path, and what the alignment did."""

    by_path: dict[str, Entry]
    frames: int  # frames looked up
    dropped: str = ""  # the leading folders dropped to align the two sides ("ena24/" from the frames' paths, ...)
    unused: list[str] = field(default_factory=list)  # entries that match no frame

    def lines(self, source: Path) -> list[str]:
        name = display(source.name)
        lines = [f"detections: {len(self.by_path)} of {self.frames} frames have an entry in {name}"
                 + (f" (paths aligned by dropping {self.dropped})" if self.dropped else "")]
        missing = self.frames - len(self.by_path)
        if missing:
            lines.append(f"  {missing} frame{'s are' if missing > 1 else ' is'} not in {name}: "
                         f"{'their rows say' if missing > 1 else 'its row says'} so")
        if self.unused:
            lines.append(f"  {len(self.unused)} entr{'ies' if len(self.unused) > 1 else 'y'} of {name} match no "
                         f"frame given, e.g. {', '.join(map(display, self.unused[:_SHOWN]))}")
        return lines


def match(paths: list[str], detections: Detections) -> Matching:
    """Each frame path's entry, aligning leading folders; DataError when no frame has one."""
    candidates = [_aligned(paths, detections.entries, k, side) for side in ("frames", "file") for k in range(_depth())]
    best = max(candidates, key=lambda m: len(m.by_path))
    if paths and not best.by_path:
        raise DataError(f"none of the {len(paths)} frames has an entry in {display(str(detections.source))}: its "
                        f"files look like {_examples(list(detections.entries))}, the frames like {_examples(paths)}. "
                        "Give the folder MegaDetector ran on (or one inside it).")
    used = {id(e) for e in best.by_path.values()}
    best.unused = [f for f, e in detections.entries.items() if id(e) not in used]
    return best


def _depth() -> int:
    return 6  # leading folders tried: a card's DCIM/100RECNX/... is deep, a drive's full path need not be


def _aligned(paths: list[str], entries: dict[str, Entry], k: int, side: str) -> Matching:
    """Match after dropping `k` leading folders from the frames' paths (`side` "frames") or the file's."""
    if side == "frames":
        index, dropped = entries, Counter()
        by_path = {}
        for p in paths:
            key = _drop(p, k)
            if key is not None and key in index:
                by_path[p] = index[key]
                dropped[p[:len(p) - len(key)]] += 1
        return Matching(by_path, len(paths), _describe(dropped, "the frames' paths") if k else "")
    index, dropped = {}, Counter()
    for f, e in entries.items():
        key = _drop(f, k)
        if key is not None:
            index.setdefault(key, (f, e))
    by_path = {}
    for p in paths:
        if p in index:
            f, e = index[p]
            by_path[p] = e
            dropped[f[:len(f) - len(p)]] += 1
    return Matching(by_path, len(paths), _describe(dropped, "the file's paths") if k else "")


def _drop(path: str, k: int) -> str | None:
    parts = PurePosixPath(path).parts
    return "/".join(parts[k:]) if len(parts) > k else None


def _describe(dropped: Counter, side: str) -> str:
    prefixes = [display(p) for p, _ in dropped.most_common(2)]
    return f"{' or '.join(prefixes)} from {side}" if prefixes else ""


def _examples(paths: list[str]) -> str:
    return ", ".join(display(p) for p in sorted(paths)[:_SHOWN]) or "(none)"
