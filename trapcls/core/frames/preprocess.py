"""The one preprocessing definition: decode a frame, resize the whole frame, normalise.

Training's eval transform and every inference backend call `preprocess`; nothing else in
trapcls turns an image into model input. The parameters come from the bundle
(`PreprocessSpec`), never from defaults at the call site.
"""

from __future__ import annotations

import errno
import logging
import math
import os
import re
import stat
from dataclasses import asdict, dataclass
from datetime import datetime
from pathlib import Path

import numpy as np
from PIL import Image, ImageMode, ImageOps, UnidentifiedImageError

from trapcls.core.system.exceptions import BundleError, ImageReadError
from trapcls.core.system.names import display

log = logging.getLogger(__name__)

ALLOWED_FORMATS = ("JPEG", "PNG")
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")
# Whole frame, no centre crop: animals stand at frame edges. "squash" resizes the full frame
# to the model input, ignoring aspect ratio; it is the one policy, used everywhere.
RESIZE_POLICIES = ("squash",)
# JPEGs are decoded by DCT scaling to no less than this multiple of the input size.
DRAFT_FACTOR = 2
_ORIENTATION, _DATETIME, _EXIF_IFD = 0x0112, 0x0132, 0x8769
_DATETIME_ORIGINAL, _OFFSET_ORIGINAL = 0x9003, 0x9011
_TOO_LARGE = "image too large (decompression bomb guard)"
# What decoding one frame may take, whatever its format and bit depth (see `decode_bytes`): an 8-bit RGB frame
# up to 64 MP fits, and a few decoders at once still fit an 8 GB Jetson. A JPEG counts at its draft size.
DECODE_BUDGET = 256 * 2**20
_SIXTEEN_BIT = ("I;16", "I;16B", "I;16L", "I;16N", "I")
# A real UTC offset: UTC-12:00 to UTC+14:00, as EXIF's OffsetTimeOriginal writes it.
_OFFSET = re.compile(r"([+-])(\d\d):([0-5]\d)")
_OFFSET_RANGE = (-12 * 60, 14 * 60)
INTERPOLATIONS = {"bilinear": Image.Resampling.BILINEAR, "bicubic": Image.Resampling.BICUBIC}
# The largest input side a bundle may ask for: classifiers take 224-600 px, detectors 1280-1920. A
# hand-edited 100000 would make every frame a 120 GB array; 2048 keeps one at 50 MB (float32).
MAX_INPUT_SIDE = 2048


@dataclass(frozen=True)
class PreprocessSpec:
    """How a frame becomes model input; stored in bundle.json under "preprocess"."""

    height: int
    width: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    resize: str = "squash"
    interpolation: str = "bilinear"

    def __post_init__(self) -> None:
        if self.resize not in RESIZE_POLICIES:
            raise BundleError(f"Unknown resize policy {self.resize!r}. Only {', '.join(RESIZE_POLICIES)} is supported.")
        if self.interpolation not in INTERPOLATIONS:
            raise BundleError(
                f"Unknown interpolation {self.interpolation!r}. Only {', '.join(INTERPOLATIONS)} are supported."
            )
        if self.height < 8 or self.width < 8:
            raise BundleError(f"Input size {self.height}x{self.width} is too small; expected at least 8x8.")
        if max(self.height, self.width) > MAX_INPUT_SIDE:
            raise BundleError(f"Input size {self.height}x{self.width} (preprocess height x width) is too large; "
                              f"at most {MAX_INPUT_SIDE} a side.")
        finite = all(math.isfinite(v) for v in (*self.mean, *self.std))  # NaN passes `s <= 0` and fills rows with NaN
        if len(self.mean) != 3 or len(self.std) != 3 or not finite or any(s <= 0 for s in self.std):
            raise BundleError(f"preprocess mean and std must be 3 finite numbers each and std positive; got "
                              f"{self.mean}, {self.std}.")

    def to_dict(self) -> dict:
        """The JSON form stored in bundle.json."""
        return {**asdict(self), "mean": list(self.mean), "std": list(self.std)}

    @classmethod
    def from_dict(cls, data: dict) -> PreprocessSpec:
        """Parse the JSON form; raises BundleError naming a missing or bad field."""
        try:
            return cls(
                height=int(data["height"]),
                width=int(data["width"]),
                mean=tuple(float(v) for v in data["mean"]),
                std=tuple(float(v) for v in data["std"]),
                resize=str(data.get("resize", "squash")),
                interpolation=str(data.get("interpolation", "bilinear")),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise BundleError(f"preprocess section is malformed ({exc!r}); expected height, width, mean, std.") from exc


@dataclass(frozen=True)
class Frame:
    """A decoded, upright 8-bit RGB frame and its EXIF capture time (ISO 8601, camera local time)."""

    image: Image.Image
    captured: str | None


def load_frame(path: str | Path, *, min_size: tuple[int, int] | None = None) -> Frame:
    """Decode a JPEG/PNG to an upright RGB frame, or raise ImageReadError with the reason.

    With `min_size` (width, height), a JPEG much larger than that is decoded at a reduced
    size by DCT scaling (1/2, 1/4 or 1/8), never below `min_size` in either dimension.
    Frames above Pillow's MAX_IMAGE_PIXELS, or whose decoding would take more than
    DECODE_BUDGET bytes, are refused from the header, before any pixel is decoded.
    """
    path = Path(path)
    captured = None
    try:
        if not stat.S_ISREG(os.stat(path).st_mode):
            raise ImageReadError("not a regular file", path)
        with Image.open(path, formats=ALLOWED_FORMATS) as img:
            _check_pixels(img, path)
            if img.format != "JPEG":  # a PNG's getexif() decodes every pixel when its eXIf chunk follows them
                _check_memory(img, path, None)
            exif = img.getexif()
            captured = capture_time(exif, path)
            orientation = exif.get(_ORIENTATION)
            if min_size and img.format == "JPEG":
                img.draft(None, _upright_request(min_size, orientation))
            _check_memory(img, path, orientation)  # a JPEG at its draft size; the upright copy counted
            img.load()  # JPEG truncation only surfaces here; verify() is a no-op for JPEG
            ImageOps.exif_transpose(img, in_place=True)
            return Frame(image=_to_rgb(img), captured=captured)
    except ImageReadError as exc:
        exc.captured = exc.captured or captured
        raise
    except UnidentifiedImageError as exc:
        size = path.stat().st_size if path.exists() else None
        reason = "empty file (0 bytes)" if size == 0 else "not a JPEG or PNG image"
        raise ImageReadError(reason, path) from exc
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:  # the warning when run with -W error
        raise ImageReadError(_TOO_LARGE, path, exc, captured=captured) from exc
    except (FileNotFoundError, IsADirectoryError, PermissionError, NotADirectoryError) as exc:
        raise ImageReadError("cannot read file", path, exc.strerror or exc) from exc
    except (OSError, SyntaxError, ValueError) as exc:
        if getattr(exc, "errno", None) == errno.ELOOP:  # a link named in a list that loops: a.jpg -> b.jpg -> a.jpg
            raise ImageReadError("cannot read file", path, exc.strerror) from exc
        # Pillow raises OSError("image file is truncated ...") and friends for broken data.
        raise ImageReadError("truncated or corrupt image", path, exc, captured=captured) from exc


def load_image(path: str | Path, *, min_size: tuple[int, int] | None = None) -> Image.Image:
    """Decode a JPEG/PNG to an upright 8-bit RGB image (see `load_frame`)."""
    return load_frame(path, min_size=min_size).image


def draft_size(spec: PreprocessSpec) -> tuple[int, int]:
    """The smallest (width, height) a JPEG may be decoded at: twice the model input, so the
    bilinear resize still averages several source pixels per output pixel."""
    return (DRAFT_FACTOR * spec.width, DRAFT_FACTOR * spec.height)


def capture_time(exif: Image.Exif, path: str | Path = "") -> str | None:
    """DateTimeOriginal (else DateTime) as YYYY-MM-DDTHH:MM:SS[+HH:MM], or None when absent or invalid.

    The offset is OffsetTimeOriginal when it is a real UTC offset (-12:00 to +14:00). Any other value
    (+24:00, +99:99, text) means the camera's time fields cannot be trusted: the frame is left untimed,
    with a warning naming `path`, rather than written with a time no reader accepts (one such cell made
    events, convert and adapt refuse the whole CSV) or placed in an event by a clock that is wrong.
    """
    sub = exif.get_ifd(_EXIF_IFD)
    raw, offset = sub.get(_DATETIME_ORIGINAL), sub.get(_OFFSET_ORIGINAL)
    if not raw:
        raw, offset = exif.get(_DATETIME), None
    try:
        stamp = datetime.strptime(str(raw).strip("\x00 "), "%Y:%m:%d %H:%M:%S").isoformat()
    except (TypeError, ValueError):
        return None  # cameras write "0000:00:00 00:00:00" or nothing when the clock was never set
    zone = _offset(offset, path)
    return None if zone is None else stamp + zone


def _offset(raw: object, path: str | Path) -> str | None:
    """An EXIF offset tag as "+HH:MM"; "" when absent or blank (EXIF's "   :  " for unknown); None (with a
    warning) when it is not a real UTC offset."""
    text = raw.decode("latin-1") if isinstance(raw, bytes) else raw
    text = text.strip("\x00 ") if isinstance(text, str) else text
    if text is None or text in ("", ":"):
        return ""
    match = _OFFSET.fullmatch(text) if isinstance(text, str) else None
    minutes = (int(match[2]) * 60 + int(match[3])) * (-1 if match[1] == "-" else 1) if match else None
    if minutes is not None and _OFFSET_RANGE[0] <= minutes <= _OFFSET_RANGE[1]:
        return text
    log.warning("%s: the EXIF time offset %r is not a UTC offset (-12:00 to +14:00); the frame is left untimed",
                display(str(path)), text)
    return None


def _check_pixels(img: Image.Image, path: Path) -> None:
    # Pillow only warns between MAX_IMAGE_PIXELS and twice that; a warning is no outcome for a
    # batch run, so anything above the limit becomes an error before decoding starts.
    limit = Image.MAX_IMAGE_PIXELS
    if limit and img.width * img.height > limit:
        raise ImageReadError(_TOO_LARGE, path, f"{img.width}x{img.height} pixels exceeds the limit of {limit}")


def decode_bytes(mode: str, size: tuple[int, int], *, upright_copy: bool = False) -> int:
    """The most memory decoding a frame of `mode` and `size` (width, height) to 8-bit RGB takes: the frame as
    Pillow stores it (every multi-band mode in 4 bytes a pixel), its upright copy when EXIF rotates or flips it,
    and each image `_to_rgb` makes on the way."""
    stored = _stored_bytes(mode)
    if mode in _SIXTEEN_BIT:  # to I when the byte order is not I;16's, scaled (I;16 or I), L, RGB
        steps = (0 if mode in ("I;16", "I") else 4) + (2 if mode == "I;16" else 4) + 1 + 4
    elif mode == "P":  # to RGBA, then RGB
        steps = 8
    else:
        steps = 0 if mode == "RGB" else 4
    return size[0] * size[1] * (stored * (2 if upright_copy else 1) + steps)


def _stored_bytes(mode: str) -> int:
    spec = ImageMode.getmode(mode)
    return 4 if len(spec.bands) > 1 else int(spec.typestr[-1])


def _check_memory(img: Image.Image, path: Path, orientation: object) -> None:
    # A small file can hold a frame that takes gigabytes to decode (a 172 KB 16-bit PNG of 9400x9400 pixels):
    # what it would take is known from the header, so such a frame is refused before decoding.
    need = decode_bytes(img.mode, img.size, upright_copy=orientation in range(2, 9))
    if need > DECODE_BUDGET:
        raise ImageReadError(_TOO_LARGE, path, f"{img.width}x{img.height} pixels of mode {img.mode} would take "
                             f"{need / 2**20:.0f} MiB to decode; a frame may take {DECODE_BUDGET // 2**20} MiB")


def _upright_request(min_size: tuple[int, int], orientation: int | None) -> tuple[int, int]:
    # draft() works on the stored frame; EXIF orientations 5-8 swap width and height afterwards.
    return (min_size[1], min_size[0]) if orientation in (5, 6, 7, 8) else min_size


def _to_rgb(img: Image.Image) -> Image.Image:
    """Convert any decoded mode (greyscale, palette, RGBA, CMYK, 16-bit) to 8-bit RGB."""
    if img.mode in _SIXTEEN_BIT:
        # 16-bit greyscale: scale to 8 bits (round(v / 257)) instead of letting convert() saturate at 255;
        # in Pillow, at 2 bytes a pixel, not in float64 arrays at 8 (decode_bytes counts these steps).
        if img.mode not in ("I;16", "I"):
            img = img.convert("I")  # point() takes only I;16 and I
        # point() truncates v / 257 + 0.5 to an integer: round(v / 257), never a tie as 257 is odd
        img = img.point(lambda v: v * (1 / 257) + 0.5).convert("L")
    elif img.mode == "P":
        img = img.convert("RGBA")
    if img.mode != "RGB":
        img = img.convert("RGB")
    return img


def resize(img: Image.Image, spec: PreprocessSpec) -> Image.Image:
    """Resize the whole frame to the model input size as the spec says."""
    size = (spec.width, spec.height)
    if img.size == size:
        return img
    return img.resize(size, INTERPOLATIONS[spec.interpolation])


def to_array(img: Image.Image, spec: PreprocessSpec) -> np.ndarray:
    """An RGB image already at input size to a normalised float32 CHW array."""
    arr = np.asarray(img, dtype=np.float32) * np.float32(1.0 / 255.0)
    arr = (arr - np.asarray(spec.mean, dtype=np.float32)) / np.asarray(spec.std, dtype=np.float32)
    return np.ascontiguousarray(arr.transpose(2, 0, 1))


def preprocess(path: str | Path, spec: PreprocessSpec) -> np.ndarray:
    """Decode (at reduced size when much larger than the input), resize and normalise one file
    into a float32 array of shape (3, H, W)."""
    return preprocess_frame(path, spec)[0]


def preprocess_frame(path: str | Path, spec: PreprocessSpec) -> tuple[np.ndarray, str | None]:
    """`preprocess` plus the frame's EXIF capture time."""
    frame = load_frame(path, min_size=draft_size(spec))
    return to_array(resize(frame.image, spec), spec), frame.captured
