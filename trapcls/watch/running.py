"""A `trapcls watch` process running on this machine, found by its command line: for `trapcls status` when the
daemon could not record itself (a disk full from the start leaves no daemon.json, maybe no journal).

Linux only: the command lines and working folders are read from /proc (elsewhere nothing is found).
A process of another user whose /proc entries cannot be read is not found either.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, fields
from pathlib import Path

from trapcls.watch.config import WatchConfig

PROC = Path("/proc")
_GLOBAL_FLAGS = ("-v", "--verbose")  # `trapcls [-v] watch ...`: options before the command take no value


@dataclass(frozen=True)
class RunningWatch:
    """A live `trapcls watch`: its process id and the --min-free it was started with."""

    pid: int
    min_free: float


def find_watch(out: Path) -> RunningWatch | None:
    """The `trapcls watch` process of this machine whose --out (default: its inbox) is `out`, if one runs."""
    try:
        target = out.resolve()
        entries = [e for e in os.scandir(PROC) if e.name.isdigit() and int(e.name) != os.getpid()]
    except OSError:
        return None
    for entry in sorted(entries, key=lambda e: int(e.name)):
        try:
            argv = [os.fsdecode(a) for a in Path(entry.path, "cmdline").read_bytes().split(b"\0")[:-1]]
            options = watch_options(argv)
            if options is None:
                continue
            cwd = Path(os.readlink(Path(entry.path, "cwd")))
        except (OSError, ValueError):  # gone meanwhile, or another user's
            continue
        folder = options.get("out") or options.get("inbox")
        if folder and (cwd / folder).resolve() == target:
            min_free = options.get("min_free")
            try:
                reserve = float(min_free) if min_free is not None else WatchConfig.min_free
            except ValueError:
                reserve = WatchConfig.min_free
            return RunningWatch(pid=int(entry.name), min_free=reserve)
    return None


def watch_options(argv: list[str]) -> dict[str, str] | None:
    """The options of a `trapcls watch` command line as field name -> value (the inbox as "inbox"); None if `argv`
    runs something else. `python -m trapcls watch ...`, `.../trapcls watch ...` and `python .../trapcls watch ...`."""
    start = _after_trapcls(argv)
    if start is None:
        return None
    rest = argv[start:]
    while rest and rest[0] in _GLOBAL_FLAGS:
        rest = rest[1:]
    if not rest or rest[0] != "watch":
        return None
    flags = _flags()
    found: dict[str, str] = {}
    words = iter(rest[1:])
    for word in words:
        if word == "--":
            found.setdefault("inbox", next(words, ""))
        elif word.startswith("--"):
            name, equals, value = word[2:].partition("=")
            if word in flags or equals:
                found[name.replace("-", "_")] = value if equals else "true"
            else:
                found[name.replace("-", "_")] = next(words, "")
        elif not word.startswith("-"):
            found.setdefault("inbox", word)
    return found


def _after_trapcls(argv: list[str]) -> int | None:
    """Where the arguments of trapcls start in `argv`, or None when it is not trapcls."""
    for i, word in enumerate(argv[:3]):
        if word == "trapcls" and i and argv[i - 1] == "-m" or word == "-mtrapcls":
            return i + 1
        if os.path.basename(word) == "trapcls" and (i == 0 or not argv[i - 1].startswith("-")):
            return i + 1
    return None


def _flags() -> set[str]:
    """The watch options that take no value: its on/off options (--polling, --no-polling, ...)."""
    names = {f.name.replace("_", "-") for f in fields(WatchConfig) if f.type in (bool, "bool")}
    return {f"--{n}" for n in names} | {f"--no-{n}" for n in names} | {"--help"}
