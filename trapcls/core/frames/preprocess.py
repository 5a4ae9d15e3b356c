"""The one preprocessing definition: decode a frame, resize the whole frame, normalise.

Training's eval transform and every inference backend call `preprocess`; nothing else in
trapcls turns an image into model input. The parameters come from the bundle
(`PreprocessSpec`), never from defaults at the call site.
"""

from __future__ import annotations

import os
import re
import stat
from dataclasses import asdict, dataclass
from datetime import datetime
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from trapcls.core.system.exceptions import BundleError, ImageReadError

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
INTERPOLATIONS = {"bilinear": Image.Resampling.BILINEAR, "bicubic": Image.Resampling.BICUBIC}


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
        if len(self.mean) != 3 or len(self.std) != 3 or any(s <= 0 for s in self.std):
            raise BundleError(f"mean and std must have 3 entries and std must be positive; got {self.mean}, "
                              f"{self.std}.")

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
    Frames above Pillow's MAX_IMAGE_PIXELS are refused before any pixel is decoded.
    """
    path = Path(path)
    captured = None
    try:
        if not stat.S_ISREG(os.stat(path).st_mode):
            raise ImageReadError("not a regular file", path)
        with Image.open(path, formats=ALLOWED_FORMATS) as img:
            _check_pixels(img, path)
            exif = img.getexif()
            captured = capture_time(exif)
            if min_size and img.format == "JPEG":
                img.draft(None, _upright_request(min_size, exif.get(_ORIENTATION)))
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
        # Pillow raises OSError("image file is truncated ...") and friends for broken data.
        raise ImageReadError("truncated or corrupt image", path, exc, captured=captured) from exc


def load_image(path: str | Path, *, min_size: tuple[int, int] | None = None) -> Image.Image:
    """Decode a JPEG/PNG to an upright 8-bit RGB image (see `load_frame`)."""
    return load_frame(path, min_size=min_size).image


def draft_size(spec: PreprocessSpec) -> tuple[int, int]:
    """The smallest (width, height) a JPEG may be decoded at: twice the model input, so the
    bilinear resize still averages several source pixels per output pixel."""
    return (DRAFT_FACTOR * spec.width, DRAFT_FACTOR * spec.height)


def capture_time(exif: Image.Exif) -> str | None:
    """DateTimeOriginal (else DateTime) as YYYY-MM-DDTHH:MM:SS[+HH:MM], or None when absent or invalid."""
    sub = exif.get_ifd(_EXIF_IFD)
    raw, offset = sub.get(_DATETIME_ORIGINAL), sub.get(_OFFSET_ORIGINAL)
    if not raw:
        raw, offset = exif.get(_DATETIME), None
    try:
        stamp = datetime.strptime(str(raw).strip("\x00 "), "%Y:%m:%d %H:%M:%S").isoformat()
    except (TypeError, ValueError):
        return None  # cameras write "0000:00:00 00:00:00" or nothing when the clock was never set
    if isinstance(offset, str) and re.fullmatch(r"[+-]\d\d:\d\d", offset.strip("\x00 ")):
        stamp += offset.strip("\x00 ")
    return stamp


def _check_pixels(img: Image.Image, path: Path) -> None:
    # Pillow only warns between MAX_IMAGE_PIXELS and twice that; a warning is no outcome for a
    # batch run, so anything above the limit becomes an error before decoding starts.
    limit = Image.MAX_IMAGE_PIXELS
    if limit and img.width * img.height > limit:
        raise ImageReadError(_TOO_LARGE, path, f"{img.width}x{img.height} pixels exceeds the limit of {limit}")


def _upright_request(min_size: tuple[int, int], orientation: int | None) -> tuple[int, int]:
    # draft() works on the stored frame; EXIF orientations 5-8 swap width and height afterwards.
    return (min_size[1], min_size[0]) if orientation in (5, 6, 7, 8) else min_size


def _to_rgb(img: Image.Image) -> Image.Image:
    """Convert any decoded mode (greyscale, palette, RGBA, CMYK, 16-bit) to 8-bit RGB."""
    if img.mode in ("I;16", "I;16B", "I;16L", "I"):
        # 16-bit greyscale: scale to 8 bits instead of letting convert() saturate at 255.
        arr = np.asarray(img, dtype=np.float64) / 257.0
        img = Image.fromarray(np.clip(np.rint(arr), 0, 255).astype(np.uint8), mode="L")
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
