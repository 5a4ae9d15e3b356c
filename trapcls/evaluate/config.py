"""The options of `trapcls evaluate`, each default written once; the CLI reads them from here."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from trapcls.core.model.blank import DEFAULT_BLANK_THRESHOLD


@dataclass(frozen=True)
class EvaluateConfig:
    """Everything `trapcls evaluate` needs; the CLI only fills this in."""

    predictions: list[Path]  # one file, or two to compare (A then B)
    labels: Path
    label_regex: str | None = None
    blank_threshold: float = DEFAULT_BLANK_THRESHOLD
    report: Path | None = None
    bundle: Path | None = None
    command: str = ""
    title: str | None = None
    blank_miss: float | None = None  # certify a blank threshold: at most this share of animal frames set aside
    confidence: float = 0.95  # ... with this confidence
    write_bundle: Path | None = None  # ... and store that policy in this bundle
