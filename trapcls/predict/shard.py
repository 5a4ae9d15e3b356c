"""`--shard K/N`: split one job over several machines by a stable hash of each file's path."""

from __future__ import annotations

import hashlib
import os
import re

from trapcls.core.frames.discover import ImageFile
from trapcls.core.system.exceptions import DataError

_SHARD = re.compile(r"\s*(\d+)\s*/\s*(\d+)\s*")


def parse_shard(text: str) -> tuple[int, int]:
    """Parse `--shard K/N` (1-based) into (K, N)."""
    match = _SHARD.fullmatch(text)
    if not match:
        raise DataError(f"--shard {text!r}: expected K/N with whole numbers, e.g. --shard 2/8 for the second of "
                        "8 shards.")
    k, n = int(match[1]), int(match[2])
    if n < 1:
        raise DataError(f"--shard {text!r}: N (the number of shards) must be at least 1.")
    if k == 0:
        raise DataError(f"--shard {text!r}: shards count from 1 (1/{n} to {n}/{n}); with a 0-based array index "
                        f"use --shard $((SLURM_ARRAY_TASK_ID+1))/{n}.")
    if k > n:
        raise DataError(f"--shard {text!r}: K must be between 1 and N={n}.")
    return k, n


def select_shard(files: list[ImageFile], k: int, n: int) -> list[ImageFile]:
    """The files of shard K of N, chosen by a stable hash of each reported path, in input order.

    A file's shard depends only on its `rel`, so every shard job must name the same inputs;
    adding files never moves the others to another shard.
    """
    if not 1 <= k <= n:
        raise DataError(f"--shard {k}/{n}: K must be between 1 and N.")
    return [f for f in files if _shard_hash(f.rel) % n == k - 1]


def _shard_hash(rel: str) -> int:
    # sha1, not hash(): the same on every machine and run. fsencode keeps non-UTF-8 names hashable.
    return int.from_bytes(hashlib.sha1(os.fsencode(rel)).digest()[:8], "big")
