"""Find the images under the folders, globs, files and file lists a user names, and count what is not classified.

Videos and other non-image files in a walked folder are never silent: `discover` counts them per
folder (`Unclassified`) for predict's summary, and `TreeScanner` does the same for the watch,
which walks its inbox again and again and lists only the folders that changed since the last walk.
Hidden and temporary names are skipped without a word, as copy tools and cameras make many.
"""

from __future__ import annotations

import logging
import os
import re
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from fnmatch import fnmatchcase
from pathlib import Path

from trapcls.core.frames.preprocess import IMAGE_SUFFIXES
from trapcls.core.system.exceptions import DataError

log = logging.getLogger(__name__)

TEMP_SUFFIXES = (".part", ".tmp", ".crdownload")
# What camera traps record besides stills (MP4/AVI/MOV mostly; AVCHD .mts; older .3gp, .wmv, .asf).
VIDEO_SUFFIXES = (".mp4", ".avi", ".mov", ".mkv", ".m4v", ".3gp", ".wmv", ".asf", ".mts", ".m2ts", ".mpg", ".mpeg",
                  ".webm", ".flv")
# The video clips trapcls classifies (any case; core/frames/video.py decodes them); other videos are counted only.
CLIP_SUFFIXES = (".mp4", ".mov", ".m4v", ".avi", ".asf", ".wmv", ".mkv")
# What trapcls classifies, in the words every "not classified" report uses.
CLASSIFIED = f"trapcls classifies still images (JPEG, PNG) and clips ({' '.join(CLIP_SUFFIXES)})"
# Files an operating system leaves in folders; as silent as hidden names.
SYSTEM_FILES = frozenset({"thumbs.db", "ehthumbs.db", "desktop.ini"})
EXAMPLES = 3
_MAGIC = re.compile(r"[*?[]")


@dataclass(frozen=True)
class ImageFile:
    """A file to classify: where it is, and the path the CSV reports for it."""

    path: Path
    rel: str

    @property
    def stem(self) -> str:
        return self.path.stem

    @property
    def is_clip(self) -> bool:
        """A video clip (by its suffix), classified from sampled frames; else a still image."""
        return is_clip(self.path.name)


@dataclass
class Unclassified:
    """Files of one folder (or several) that are not classified: videos and other non-image files."""

    videos: int = 0
    others: int = 0
    examples: list[str] = field(default_factory=list)  # the first few names, for the message

    def add(self, name: str, kind: str) -> None:
        if kind == "video":
            self.videos += 1
        else:
            self.others += 1
        if len(self.examples) < EXAMPLES:
            self.examples.append(name)

    def merge(self, other: Unclassified) -> None:
        self.videos += other.videos
        self.others += other.others
        self.examples += other.examples[:EXAMPLES - len(self.examples)]

    def __bool__(self) -> bool:
        return bool(self.videos or self.others)

    def describe(self) -> str:
        """E.g. "12 videos and 1 other file"."""
        return " and ".join(p for p in (_count(self.videos, "video"), _count(self.others, "other file")) if p)

    def example(self) -> str:
        """E.g. "e.g. CLIP0001.MP4, notes.txt"."""
        return "e.g. " + ", ".join(self.examples) if self.examples else ""


def _count(n: int, noun: str) -> str:
    return "" if not n else f"{n} {noun}{'' if n == 1 else 's'}"


def file_kind(name: str, *, clips: bool = False) -> str | None:
    """"image" (classified), "clip" (a video clip, classified when `clips`; else counted as a "video"), "video" or
    "other" (counted, not classified), or None for a name skipped silently: hidden, a copy tool's temporary file,
    or an operating system's (Thumbs.db)."""
    lower = name.lower()
    if name.startswith(".") or lower.endswith(TEMP_SUFFIXES) or lower in SYSTEM_FILES:
        return None
    if lower.endswith(IMAGE_SUFFIXES):
        return "image"
    if clips and lower.endswith(CLIP_SUFFIXES):
        return "clip"
    return "video" if lower.endswith(VIDEO_SUFFIXES) else "other"


def is_clip(name: str) -> bool:
    """A name trapcls classifies as a video clip."""
    return name.lower().endswith(CLIP_SUFFIXES)


@dataclass
class Discovery:
    """What `discover` found: the images, and per folder (relative to the common parent; "." for it) what it
    will not classify."""

    files: list[ImageFile]
    unclassified: dict[str, Unclassified] = field(default_factory=dict)

    def total(self) -> Unclassified:
        total = Unclassified()
        for folder in sorted(self.unclassified):
            total.merge(self.unclassified[folder])
        return total


@dataclass(frozen=True)
class _Source:
    """One input: a folder to walk (all of it, or what `pattern` matches) or a named file."""

    label: str
    path: Path
    root: Path
    walk: bool
    pattern: tuple[str, ...] | None = None


def discover_images(inputs: list[Path], *, file_list: Path | None = None) -> list[ImageFile]:
    """Expand folders, quoted globs, files and a file list into a sorted, de-duplicated list of images (`discover`)."""
    return discover(inputs, file_list=file_list).files


def discover(inputs: list[Path], *, file_list: Path | None = None, ignore: Path | None = None,
             clips: bool = False) -> Discovery:
    """Expand folders, quoted globs, files and a file list into a sorted, de-duplicated list of images.

    Folders (and folders a glob matches) contribute regular files whose extension is
    .jpg/.jpeg/.png in any case; hidden and temporary names, FIFOs and other special files,
    symlinks pointing outside every input and symlinks that are broken or loop (both logged)
    are skipped; symlinked folders are not followed.
    Other regular files a walk meets (videos, anything else, but not `ignore`, e.g. the output
    CSV) are counted per folder in `Discovery.unclassified`. A file named explicitly or in
    `file_list` is always included, even if missing or broken, so it gets its error row instead
    of vanishing. Reported paths are relative to the common parent of the inputs. With `clips`, video clips
    (CLIP_SUFFIXES) are found like images.
    """
    sources = _sources(inputs) + (_read_file_list(file_list) if file_list is not None else [])
    if not sources and file_list is not None:
        raise DataError(f"The file list {file_list} names no files (only blank lines and # comments).")
    if not sources:
        raise DataError("No input given: name at least one folder or image file, or pass a file list.")
    roots = tuple(dict.fromkeys(s.root for s in sources))
    base = Path(os.path.commonpath(roots))
    outside: list[Path] = []
    broken: list[Path] = []
    found: dict[Path, ImageFile] = {}
    others: dict[Path, tuple[str, str]] = {}  # path -> (folder, kind); a dict, as two inputs may overlap
    ignored = _real(ignore) if ignore is not None else None

    def tally(path: Path, kind: str) -> None:
        if path != ignored:
            others[path] = (path.parent.relative_to(base).as_posix(), kind)

    for source in sources:
        walked = _walk(source.path, source.pattern, roots, (outside, broken), tally, clips=clips) if source.walk \
            else None
        paths = [source.path] if walked is None else list(walked)
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
    if broken:
        log.warning("broken or looping symlinks skipped: %d (e.g. %s)", len(broken), min(broken))
    unclassified: dict[str, Unclassified] = {}
    for path, (folder, kind) in sorted(others.items()):
        unclassified.setdefault(folder, Unclassified()).add(path.name, kind)
    if not found:
        also = Discovery([], unclassified).total()
        looked = IMAGE_SUFFIXES + (CLIP_SUFFIXES if clips else ())
        raise DataError(
            f"No {'images or video clips' if clips else 'JPEG or PNG images'} found under "
            f"{', '.join(s.label for s in sources)} (looked for {', '.join(looked)} in any case, recursively)"
            + (f"; it holds {also.describe()} ({also.example()}), which trapcls does not classify." if also else ".")
        )
    return Discovery(sorted(found.values(), key=lambda f: f.rel), unclassified)


def _sources(inputs: list[Path]) -> list[_Source]:
    """Classify each input as folder, file or glob; missing non-glob inputs are one error."""
    missing = [f"{p} (a broken or looping symlink)" if os.path.lexists(p) else str(p)
               for p in inputs if not p.exists() and not _MAGIC.search(str(p))]
    if missing:
        raise DataError(f"Input not found: {', '.join(missing)}")
    return [_named(p) if p.exists() else _glob_source(str(p)) for p in inputs]


def _named(path: Path, label: str | None = None) -> _Source:
    """A folder to walk, or a file (existing or not) to include as it is."""
    if path.is_dir():
        resolved = _real(path)
        return _Source(label or str(path), resolved, resolved, walk=True)
    # Resolve the folder, not the file: a symlinked file is reported under the name it was given.
    absolute = _real(path.parent) / path.name
    return _Source(label or str(path), absolute, absolute.parent, walk=False)


def _glob_source(pattern: str) -> _Source:
    """A quoted glob: walk its non-magic leading folder, keeping what the rest of it matches."""
    parts = Path(pattern).parts
    lead = next((i for i, part in enumerate(parts) if _MAGIC.search(part)), len(parts))
    root = _real(Path(*parts[:lead]))  # no leading folder: Path() is the working folder
    return _Source(pattern, root, root, walk=True, pattern=parts[lead:])


def _read_file_list(file_list: Path) -> list[_Source]:
    """Entries of a list file: one path per line, # comments, relative to the list's folder."""
    try:
        text = file_list.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise DataError(f"Cannot read the file list {file_list}: {exc}. Give a UTF-8 text file, one path per "
                        "line.") from exc
    folder = _real(file_list).parent
    entries = (line.strip() for line in text.splitlines())
    return [_named(folder / entry, entry) for entry in entries if entry and not entry.startswith("#")]


def _real(path: Path) -> Path:
    """`path` made absolute with every link resolved; unlike Path.resolve() (before Python 3.13) a link loop on the
    way raises nothing here: the loop is left for the walk or the decoder to report."""
    return Path(os.path.realpath(path))


def _walk(root: Path, pattern: tuple[str, ...] | None, roots: tuple[Path, ...],
          skipped: tuple[list[Path], list[Path]], tally: Callable[[Path, str], None], *,
          clips: bool = False) -> Iterator[Path]:
    """Image files under `root` (all, or those `pattern` matches or lying in a folder it matches); other regular
    files the same selection holds go to `tally` with their kind. The symlinks left out are noted in `skipped`:
    (those pointing outside every root, those broken or looping)."""
    outside, broken = skipped
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
                continue
            kind = file_kind(entry.name, clips=clips) if hit else None
            if kind is None or not _regular(entry, broken):
                continue
            if kind not in ("image", "clip"):
                tally(Path(entry.path), kind)
            elif _inside(entry, roots, outside):
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


def _regular(entry: os.DirEntry, broken: list[Path]) -> bool:
    """Whether `entry` is a regular file, following a link: FIFOs, sockets, devices and folders are not, silently;
    nor is a link that is broken or loops, which is noted in `broken`."""
    try:
        if entry.is_file():
            return True
        dangling = entry.is_symlink() and not os.path.exists(entry.path)
    except OSError:  # ELOOP (a.jpg -> b.jpg -> a.jpg): is_file() swallows only a missing target
        dangling = True
    if dangling:
        broken.append(Path(entry.path))
    return False


def _inside(entry: os.DirEntry, roots: tuple[Path, ...], outside: list[Path]) -> bool:
    """False (and noted) for a symlink whose target lies outside every input root."""
    if not entry.is_symlink():
        return True
    target = _real(Path(entry.path))
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


def is_candidate(name: str, *, clips: bool = False) -> bool:
    """An image name worth classifying (with `clips`, a video clip's too): a JPEG/PNG suffix, not hidden, not a
    copy tool's temp file."""
    return file_kind(name, clips=clips) in ("image", "clip")


# --- the watch's repeated walk ------------------------------------------------------------------------------

RACY_NS = 5 * 10**9  # a folder changed this close to a walk is listed again next time (FAT keeps 2 s mtimes)


@dataclass(frozen=True)
class _Folder:
    """One folder as the last walk left it: its identity and mtime, its subfolders and what it will not classify."""

    ino: int
    mtime_ns: int
    trusted: bool  # changed long enough before the listing that any later change must move its mtime
    subfolders: tuple[str, ...]
    unclassified: Unclassified


@dataclass
class TreeScan:
    """One walk: the images of the folders listed this time, and every folder's files that are not classified."""

    images: list[str] = field(default_factory=list)  # relative to the root, "/"-separated
    unclassified: dict[str, Unclassified] = field(default_factory=dict)  # folder ("." for the root) -> counts
    listed: int = 0  # folders read this time
    kept: int = 0  # folders not read again: their mtime has not changed since they were
    full: bool = False


class TreeScanner:
    """Walk a tree again and again; after the first walk, list only the folders whose mtime changed.

    Creating, deleting or renaming an entry changes its folder's mtime, so an unchanged folder
    holds the same names as when it was listed and none of its images is new: its images are
    not reported again (subfolders are still visited, one stat each). What this cannot see is a
    file rewritten in place under the same name (its folder's mtime stays): file events catch
    that, and every `full_every`-th walk (and the first) lists every folder regardless. A folder
    whose mtime is within RACY_NS of a walk is listed again at the next one, since a change in
    the same clock tick would leave the mtime as it was. Hidden and temporary names are skipped,
    symlinked folders are not followed, symlinked files must point inside the root, and broken or
    looping links are skipped and logged, as in `discover`.
    """

    def __init__(self, root: Path, *, full_every: int = 10, ignore: Callable[[str], bool] | None = None,
                 clips: bool = False) -> None:
        self.root, self.clips = root, clips  # clips: video clips are reported with the images, not counted
        self.full_every = max(full_every, 1)
        self._ignore = ignore or (lambda rel: False)  # names (relative to the root) not counted as unclassified
        self._folders: dict[str, _Folder] = {}
        self._root_id: tuple[int, int] | None = None
        self._walks = 0

    def scan(self, *, full: bool = False) -> TreeScan:
        """Walk the tree: list the folders that changed (every folder when `full`, or when a full walk is due)."""
        started = time.time_ns()
        root = os.stat(self.root)  # OSError when the root is gone: the caller says so and tries again later
        if (root.st_dev, root.st_ino) != self._root_id:  # another file system mounted there: forget the old one
            self._folders, self._root_id = {}, (root.st_dev, root.st_ino)
        full = full or not self._folders or self._walks % self.full_every == 0
        self._walks += 1
        result, folders, seen = TreeScan(full=full), {}, set()
        stack = [""]
        while stack:
            rel = stack.pop()
            path = self.root / rel if rel else self.root
            try:
                st = os.stat(path)
            except OSError:  # removed since its parent was read
                continue
            if (st.st_dev, st.st_ino) in seen:  # a bind mount looping back
                continue
            seen.add((st.st_dev, st.st_ino))
            old = None if full else self._folders.get(rel)
            if old is not None and old.trusted and (old.ino, old.mtime_ns) == (st.st_ino, st.st_mtime_ns):
                folder, result.kept = old, result.kept + 1
            else:
                folder, result.listed = self._list(rel, path, st, started, result.images), result.listed + 1
            folders[rel] = folder
            if folder.unclassified:
                result.unclassified[rel or "."] = folder.unclassified
            stack.extend(f"{rel}/{name}" if rel else name for name in folder.subfolders)
        self._folders = folders  # folders that are gone drop out
        return result

    def _list(self, rel: str, path: Path, st: os.stat_result, started: int, images: list[str]) -> _Folder:
        """Read one folder: its images go to `images`; its subfolders and other files are remembered."""
        prefix = f"{rel}/" if rel else ""
        subfolders, others, outside, broken = [], [], [], []
        try:
            with os.scandir(path) as it:
                entries = list(it)
        except OSError as exc:  # listed again at every walk until it can be read
            log.warning("cannot read folder %s: %s", path, exc)
            return _Folder(st.st_ino, st.st_mtime_ns, False, (), Unclassified())
        for entry in entries:
            if entry.name.startswith("."):
                continue
            if entry.is_dir(follow_symlinks=False):
                subfolders.append(entry.name)
                continue
            kind = file_kind(entry.name, clips=self.clips)
            if kind is None or not _regular(entry, broken):
                continue
            if kind not in ("image", "clip"):
                if not self._ignore(prefix + entry.name):
                    others.append((entry.name, kind))
            elif _inside(entry, (self.root,), outside):
                images.append(prefix + entry.name)
        if outside:
            log.warning("skipped %d symlinks in %s that point outside %s (e.g. %s)", len(outside), path, self.root,
                        outside[0].name)
        if broken:
            log.warning("%s: broken or looping symlinks skipped: %d (e.g. %s)", path, len(broken), min(broken).name)
        unclassified = Unclassified()
        for name, kind in sorted(others):  # sorted, so the examples named do not depend on the listing order
            unclassified.add(name, kind)
        trusted = st.st_mtime_ns < started - RACY_NS
        return _Folder(st.st_ino, st.st_mtime_ns, trusted, tuple(sorted(subfolders)), unclassified)
