"""Find the images to classify under the inputs a user names."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from trapcls.exceptions import DataError
from trapcls.preprocess import IMAGE_SUFFIXES

TEMP_SUFFIXES = (".part", ".tmp", ".crdownload")


@dataclass(frozen=True)
class ImageFile:
    """A file to classify: where it is, and the path the CSV reports for it."""

    path: Path
    rel: str

    @property
    def stem(self) -> str:
        return self.path.stem


def discover_images(inputs: list[Path]) -> list[ImageFile]:
    """Expand folders (recursively) and files into a sorted, de-duplicated list of images.

    Folders contribute files whose extension is .jpg/.jpeg/.png in any case; hidden and
    temporary names are skipped and symlinked folders are not followed. A file named
    explicitly is always included, so a bad one gets its error row instead of vanishing.
    Reported paths are relative to the common parent of the inputs.
    """
    if not inputs:
        raise DataError("No input given: name at least one folder or image file.")
    missing = [str(p) for p in inputs if not p.exists()]
    if missing:
        raise DataError(f"Input not found: {', '.join(missing)}")
    roots = [p.resolve() if p.is_dir() else p.resolve().parent for p in inputs]
    base = Path(os.path.commonpath(roots))

    found: dict[Path, ImageFile] = {}
    for item in inputs:
        resolved = item.resolve()
        candidates = [resolved] if item.is_file() else _walk(resolved)
        for path in candidates:
            found.setdefault(path, ImageFile(path=path, rel=path.relative_to(base).as_posix()))
    if not found:
        raise DataError(
            f"No JPEG or PNG images found under {', '.join(str(p) for p in inputs)} "
            f"(looked for {', '.join(IMAGE_SUFFIXES)} in any case, recursively)."
        )
    return sorted(found.values(), key=lambda f: f.rel)


def _walk(root: Path) -> list[Path]:
    paths = []
    for dirpath, dirnames, filenames in os.walk(root, followlinks=False):
        dirnames[:] = [d for d in dirnames if not d.startswith(".")]
        for name in filenames:
            if _is_candidate(name):
                paths.append(Path(dirpath) / name)
    return paths


def _is_candidate(name: str) -> bool:
    lower = name.lower()
    return not name.startswith(".") and lower.endswith(IMAGE_SUFFIXES) and not lower.endswith(TEMP_SUFFIXES)
