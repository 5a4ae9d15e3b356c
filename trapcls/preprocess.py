"""The one preprocessing definition: decode a frame, resize the whole frame, normalise.

Training's eval transform and every inference backend call `preprocess`; nothing else in
trapcls turns an image into model input. The parameters come from the bundle
(`PreprocessSpec`), never from defaults at the call site.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from trapcls.exceptions import BundleError, ImageReadError

ALLOWED_FORMATS = ("JPEG", "PNG")
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")
# Whole frame, no centre crop: animals stand at frame edges. "squash" resizes the full frame
# to the model input, ignoring aspect ratio; it is the one policy, used everywhere.
RESIZE_POLICIES = ("squash",)
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
            raise BundleError(f"mean and std must have 3 entries and std must be positive; got {self.mean}, {self.std}.")

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


def load_image(path: str | Path) -> Image.Image:
    """Decode a JPEG/PNG to an upright 8-bit RGB image, or raise ImageReadError with the reason."""
    path = Path(path)
    try:
        with Image.open(path, formats=ALLOWED_FORMATS) as img:
            img.load()  # JPEG truncation only surfaces here; verify() is a no-op for JPEG
            img = ImageOps.exif_transpose(img)
            return _to_rgb(img)
    except UnidentifiedImageError as exc:
        size = path.stat().st_size if path.exists() else None
        reason = "empty file (0 bytes)" if size == 0 else "not a JPEG or PNG image"
        raise ImageReadError(f"{reason}: {path}") from exc
    except Image.DecompressionBombError as exc:
        raise ImageReadError(f"image too large (decompression bomb guard): {path}: {exc}") from exc
    except (FileNotFoundError, IsADirectoryError, PermissionError) as exc:
        raise ImageReadError(f"cannot read file: {path}: {exc.strerror or exc}") from exc
    except (OSError, SyntaxError, ValueError) as exc:
        # Pillow raises OSError("image file is truncated ...") and friends for broken data.
        raise ImageReadError(f"truncated or corrupt image: {path}: {exc}") from exc


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
    """Decode, resize and normalise one file into a float32 array of shape (3, H, W)."""
    return to_array(resize(load_image(path), spec), spec)
