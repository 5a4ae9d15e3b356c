"""Where a watch keeps its files under OUT: each camera folder's CSVs, and its journal and state in OUT/.trapcls."""

from __future__ import annotations

from pathlib import Path

CSV_NAME = "predictions.csv"  # each camera folder's CSV, under --out
EVENTS_NAME = "events.csv"  # with --events, beside it
STATE_DIR = ".trapcls"  # hidden, so the scans never take it for input
JOURNAL_FILE = "journal.sqlite"
STATE_FILE = "daemon.json"


def journal_path(out: Path) -> Path:
    """Where the journal of a watch writing into `out` lives."""
    return out / STATE_DIR / JOURNAL_FILE


def state_path(out: Path) -> Path:
    """Where a watch writing into `out` records whether it runs or is paused (trapcls.watch.state)."""
    return out / STATE_DIR / STATE_FILE
