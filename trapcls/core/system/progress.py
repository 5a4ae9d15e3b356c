"""Progress bars on stderr for long work (tqdm), off when the caller asks for quiet."""

from __future__ import annotations

from tqdm import tqdm


def bar(total: int | None, desc: str, *, enabled: bool, unit: str = "img") -> tqdm:
    """A progress bar on stderr; a no-op bar when `enabled` is False."""
    return tqdm(total=total, desc=desc, unit=unit, disable=not enabled, leave=False, dynamic_ncols=True)
