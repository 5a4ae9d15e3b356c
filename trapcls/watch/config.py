"""The options of `trapcls watch`, each default written once; the CLI reads them from here."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from trapcls.results.config import DEFAULT_GAP

CSV_NAME = "predictions.csv"  # each camera folder's CSV, under --out


@dataclass(frozen=True)
class WatchConfig:
    """Everything `trapcls watch` needs; the CLI only fills this in."""

    inbox: Path
    bundle: Path
    out: Path | None = None  # default: the inbox itself (each camera folder gets its predictions.csv)
    folder_depth: int = 1
    settle: float = 5.0
    rescan_interval: float = 60.0
    polling: bool = False
    poll_interval: float = 2.0
    file_events: bool = True  # inotify/polling events; False relies on the rescans alone
    events: bool = False  # also keep an events.csv next to each predictions.csv
    gap: float = DEFAULT_GAP  # seconds between frames that start a new event
    backend: str = "auto"
    batch_size: int | None = None
    threads: int | None = None
    workers: int | None = None
    max_attempts: int = 3
    flush_interval: float = 5.0
    all_csv: Path | None = None
    blank_threshold: float | None = None
    idle_exit: float | None = None  # stop after this long with nothing to do (batch runs, tests)
    min_free: float = 64.0  # MiB that must stay free on OUT's disk (and --all-csv's) to take work; 0: no reserve

    @property
    def out_dir(self) -> Path:
        return self.out or self.inbox
