"""The folder-watch daemon: classify every image that lands in an inbox exactly once, crash-safe.

Entry point: `Watcher(WatchConfig(...)).run()`; `trapcls status` reads the journal it keeps
(`trapcls.watch.status.watch_status`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from trapcls.watch.config import WatchConfig

if TYPE_CHECKING:
    from trapcls.watch.daemon import Watcher

__all__ = ["WatchConfig", "Watcher"]


def __getattr__(name: str):
    """The daemon on first use, so that importing WatchConfig (as the CLI does) loads nothing heavy."""
    if name == "Watcher":
        from trapcls.watch import daemon

        return daemon.Watcher
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
