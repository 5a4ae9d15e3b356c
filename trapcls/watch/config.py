"""The options of `trapcls watch`, each default and bound written once; the CLI reads them from here."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from trapcls.core.options import check_options, option
from trapcls.predict.config import RunOptions
from trapcls.results.config import EventOptions


@dataclass(frozen=True, kw_only=True)
class WatchConfig(RunOptions, EventOptions):
    """Everything `trapcls watch` needs; the CLI only fills this in."""

    inbox: Path
    bundle: Path
    out: Path | None = None  # default: the inbox itself (each camera folder gets its predictions.csv)
    folder_depth: int = option(1, low=0, hint="0: one CSV for the whole inbox")
    settle: float = option(5.0, low=0)
    # A video clip copied with pauses longer than --settle must not be read half-copied (an MP4 has no index until
    # its copy ends): without a close event it must also have been unchanged this long (trapcls.watch.intake).
    clip_settle: float = option(30.0, low=0)
    rescan_interval: float = option(60.0, low=0)
    polling: bool = False
    poll_interval: float = option(2.0, low=0)
    file_events: bool = True  # inotify/polling events; False relies on the rescans alone
    events: bool = False  # also keep an events.csv next to each predictions.csv
    max_attempts: int = option(3, low=1)
    flush_interval: float = option(5.0, low=0)
    all_csv: Path | None = None
    idle_exit: float | None = option(None, low=0)  # stop after this long with nothing to do (batch runs, tests)
    min_free: float = option(64.0, low=0)  # MiB that must stay free on OUT's disk (and --all-csv's); 0: no reserve

    def __post_init__(self) -> None:
        check_options(self)

    @property
    def out_dir(self) -> Path:
        return self.out or self.inbox
