"""The options of `trapcls evaluate`, each default and bound written once; the CLI reads them from here."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from trapcls.core.options import check_options, option
from trapcls.core.system.exceptions import OptionError


@dataclass(frozen=True, kw_only=True)
class EvaluateConfig:
    """Everything `trapcls evaluate` needs; the CLI only fills this in."""

    predictions: list[Path]  # one file, or two to compare (A then B)
    labels: Path
    label_regex: str | None = None
    # None: the rule the predictions were written with (trapcls.core.table.blank), else the default.
    blank_threshold: float | None = option(None, low=0, high=1)
    report: Path | None = None
    bundle: Path | None = None
    command: str = ""
    title: str | None = None
    # Certify a blank threshold: at most this share of animal frames set aside, with this confidence.
    blank_miss: float | None = option(None, low=0, high=1, low_open=True, high_open=True, hint="e.g. 0.02 for 2%")
    confidence: float = option(0.95, low=0.5, high=1, high_open=True, hint="e.g. 0.95")
    write_bundle: Path | None = None  # ... and store that policy in this bundle

    def __post_init__(self) -> None:
        check_options(self)
        if not 1 <= len(self.predictions) <= 2:
            raise OptionError("predictions", f"give one predictions CSV, or two to compare; got "
                                             f"{len(self.predictions)}")
        if self.write_bundle is not None and self.blank_miss is None:
            raise OptionError("write_bundle", "stores a certified blank policy: give {blank_miss} too (e.g. 0.02)")
        if self.blank_miss is not None and len(self.predictions) != 1:
            raise OptionError("blank_miss", "certifies one model's predictions: give one predictions CSV")

    def inputs(self) -> list[tuple[str, Path | None]]:
        """The files evaluate reads (and the bundle it may store a policy in), named for a message: --report may be
        none of them. A labels folder stands for its DrivenData tables, not for whatever else lies in it (a report
        from an earlier run, say)."""
        from trapcls.core.frames.labels import DRIVENDATA_FEATURES, DRIVENDATA_LABELS

        labels = [self.labels / DRIVENDATA_FEATURES, self.labels / DRIVENDATA_LABELS] if self.labels.is_dir() \
            else [self.labels]
        return [*(("the predictions CSV", p) for p in self.predictions), *(("the --labels file", p) for p in labels),
                ("the --bundle", self.bundle), ("the --write-bundle bundle", self.write_bundle)]
