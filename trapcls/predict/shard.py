"""`--shard K/N`: split one job over several machines by a stable hash of each file's path."""

from __future__ import annotations

import hashlib
import os
import re

from trapcls.core.frames.discover import ImageFile
from trapcls.core.system.exceptions import OptionError
from trapcls.predict.config import check_shard

_SHARD = re.compile(r"\s*(\d+)\s*/\s*(\d+)\s*")


def parse_shard(text: str) -> tuple[int, int]:
    """Parse `--shard K/N` (1-based) into (K, N); OptionError("shard", ...) naming the form otherwise."""
    match = _SHARD.fullmatch(text)
    if not match:
        raise OptionError("shard", f"{text!r}: expected K/N with whole numbers, e.g. 2/8 for the second of 8 shards")
    k, n = int(match[1]), int(match[2])
    check_shard(k, n, text)
    return k, n


def select_shard(files: list[ImageFile], k: int, n: int) -> list[ImageFile]:
    """The files of shard K of N, chosen by a stable hash of each reported path, in input order.

    A file's shard depends only on its `rel`, so every shard job must name the same inputs;
    adding files never moves the others to another shard.
    """
    check_shard(k, n)
    return [f for f in files if _shard_hash(f.rel) % n == k - 1]


def _shard_hash(rel: str) -> int:
    # sha1, not hash(): the same on every machine and run. fsencode keeps non-UTF-8 names hashable.
    return int.from_bytes(hashlib.sha1(os.fsencode(rel)).digest()[:8], "big")
