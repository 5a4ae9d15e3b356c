"""Find the images under the folders, globs, files and file lists a user names."""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass
from fnmatch import fnmatchcase
from pathlib import Path

from trapcls.core.exceptions import DataError
from trapcls.core.preprocess import IMAGE_SUFFIXES

log = logging.getLogger(__name__)

TEMP_SUFFIXES = (".part", ".tmp", ".crdownload")
_MAGIC = re.compile(r"[*?[]")


@dataclass(frozen=True)
class ImageFile:
    """A file to classify: where it is, and the path the CSV reports for it."""

    path: Path
    rel: str

    @property
    def stem(self) -> str:
        return self.path.stem


@dataclass(frozen=True)
class _Source:
    """One input: a folder to walk (all of it, or what `pattern` matches) or a named file."""

    label: str
    path: Path
    root: Path
    walk: bool
    pattern: tuple[str, ...] | None = None


def discover_images(inputs: list[Path], *, file_list: Path | None = None) -> list[ImageFile]:
    """Expand folders, quoted globs, files and a file list into a sorted, de-duplicated list of images.

    Folders (and folders a glob matches) contribute regular files whose extension is
    .jpg/.jpeg/.png in any case; hidden and temporary names, FIFOs and other special files,
    and symlinks pointing outside every input are skipped; symlinked folders are not followed.
    A file named explicitly or in `file_list` is always included, even if missing or broken,
    so it gets its error row instead of vanishing. Reported paths are relative to the common
    parent of the inputs.
    """
    sources = _sources(inputs) + (_read_file_list(file_list) if file_list is not None else [])
    if not sources and file_list is not None:
        raise DataError(f"The file list {file_list} names no files (only blank lines and # comments).")
    if not sources:
        raise DataError("No input given: name at least one folder or image file, or pass a file list.")
    roots = tuple(dict.fromkeys(s.root for s in sources))
    base = Path(os.path.commonpath(roots))
    outside: list[Path] = []
    found: dict[Path, ImageFile] = {}
    for source in sources:
        paths = list(_walk(source.path, source.pattern, roots, outside)) if source.walk else [source.path]
        if source.pattern is not None and not paths:
            raise DataError(
                f"No JPEG or PNG images match {source.label!r} (searched under {source.root}; the pattern is "
                "case-sensitive and never matches hidden or temporary names)."
            )
        for path in paths:
            found.setdefault(path, ImageFile(path=path, rel=path.relative_to(base).as_posix()))
    if outside:
        log.warning("skipped %d symlinks that point outside the inputs (e.g. %s); name them explicitly or in "
                    "a file list to classify them", len(outside), outside[0])
    if not found:
        raise DataError(
            f"No JPEG or PNG images found under {', '.join(s.label for s in sources)} "
            f"(looked for {', '.join(IMAGE_SUFFIXES)} in any case, recursively)."
        )
    return sorted(found.values(), key=lambda f: f.rel)


def _sources(inputs: list[Path]) -> list[_Source]:
    """Classify each input as folder, file or glob; missing non-glob inputs are one error."""
    missing = [str(p) for p in inputs if not p.exists() and not _MAGIC.search(str(p))]
    if missing:
        raise DataError(f"Input not found: {', '.join(missing)}")
    return [_named(p) if p.exists() else _glob_source(str(p)) for p in inputs]


def _named(path: Path, label: str | None = None) -> _Source:
    """A folder to walk, or a file (existing or not) to include as it is."""
    if path.is_dir():
        resolved = path.resolve()
        return _Source(label or str(path), resolved, resolved, walk=True)
    # Resolve the folder, not the file: a symlinked file is reported under the name it was given.
    absolute = path.parent.resolve() / path.name
    return _Source(label or str(path), absolute, absolute.parent, walk=False)


def _glob_source(pattern: str) -> _Source:
    """A quoted glob: walk its non-magic leading folder, keeping what the rest of it matches."""
    parts = Path(pattern).parts
    lead = next((i for i, part in enumerate(parts) if _MAGIC.search(part)), len(parts))
    root = Path(*parts[:lead]).resolve()  # no leading folder: Path() is the working folder
    return _Source(pattern, root, root, walk=True, pattern=parts[lead:])


def _read_file_list(file_list: Path) -> list[_Source]:
    """Entries of a list file: one path per line, # comments, relative to the list's folder."""
    try:
        text = file_list.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise DataError(f"Cannot read the file list {file_list}: {exc}. Give a UTF-8 text file, one path per "
                        "line.") from exc
    folder = file_list.resolve().parent
    entries = (line.strip() for line in text.splitlines())
    return [_named(folder / entry, entry) for entry in entries if entry and not entry.startswith("#")]


def _walk(root: Path, pattern: tuple[str, ...] | None, roots: tuple[Path, ...], outside: list[Path]) -> Iterator[Path]:
    """Image files under `root` (all, or those `pattern` matches or lying in a folder it matches)."""
    stack: list[tuple[Path, tuple[str, ...], bool]] = [(root, (), pattern is None)]
    seen: set[tuple[int, int]] = set()
    while stack:
        folder, parts, selected = stack.pop()
        for entry in _scan(folder, seen):
            if entry.name.startswith("."):
                continue
            sub = parts + (entry.name,)
            hit = selected or _match(sub, pattern)
            if entry.is_dir(follow_symlinks=False):  # a symlinked folder is never followed
                if hit or _may_descend(sub, pattern):
                    stack.append((Path(entry.path), sub, hit))
            # is_file() follows links: FIFOs, sockets, devices and dangling links are not regular files
            elif hit and is_candidate(entry.name) and entry.is_file() and _inside(entry, roots, outside):
                yield Path(entry.path)


def _scan(folder: Path, seen: set[tuple[int, int]]) -> list[os.DirEntry]:
    """The entries of `folder`, or none if it is unreadable or already visited (a bind-mount loop)."""
    try:
        stat = folder.stat()
        if (stat.st_dev, stat.st_ino) in seen:
            return []
        seen.add((stat.st_dev, stat.st_ino))
        with os.scandir(folder) as it:
            return list(it)
    except OSError as exc:
        log.warning("cannot read folder %s: %s", folder, exc)
        return []


def _inside(entry: os.DirEntry, roots: tuple[Path, ...], outside: list[Path]) -> bool:
    """False (and noted) for a symlink whose target lies outside every input root."""
    if not entry.is_symlink():
        return True
    target = Path(entry.path).resolve()
    if any(target.is_relative_to(root) for root in roots):
        return True
    outside.append(Path(entry.path))
    return False


def _match(parts: tuple[str, ...], pattern: tuple[str, ...] | None) -> bool:
    """glob semantics for a path split into names: `**` spans zero or more folders."""
    if not pattern:
        return pattern is not None and not parts
    if pattern[0] == "**":
        return any(_match(parts[i:], pattern[1:]) for i in range(len(parts) + 1))
    return bool(parts) and fnmatchcase(parts[0], pattern[0]) and _match(parts[1:], pattern[1:])


def _may_descend(parts: tuple[str, ...], pattern: tuple[str, ...] | None) -> bool:
    """Whether something below the folder `parts` could still match `pattern`."""
    if pattern is None:
        return True
    if "**" not in pattern and len(parts) >= len(pattern):
        return False
    head = pattern[: pattern.index("**")] if "**" in pattern else pattern
    return all(fnmatchcase(name, seg) for name, seg in zip(parts, head))


def is_candidate(name: str) -> bool:
    """An image name worth classifying: a JPEG/PNG suffix, not hidden, not a copy tool's temp file."""
    lower = name.lower()
    return not name.startswith(".") and lower.endswith(IMAGE_SUFFIXES) and not lower.endswith(TEMP_SUFFIXES)
