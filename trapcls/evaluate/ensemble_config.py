"""The options of `trapcls ensemble fit` and `trapcls ensemble apply`; the CLI reads their defaults from here."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from trapcls.core.system.exceptions import OptionError


@dataclass(frozen=True, kw_only=True)
class EnsembleFitConfig:
    """Everything `trapcls ensemble fit` needs: the members' out-of-fold CSVs, their labels, where the weights go."""

    members: list[Path]  # one out-of-fold CSV per member (`trapcls oof`); one member fits the temperature only
    labels: Path
    out: Path
    label_regex: str | None = None

    def __post_init__(self) -> None:
        if not self.members:
            raise OptionError("members", "give at least one out-of-fold CSV")

    def inputs(self) -> list[tuple[str, Path | None]]:
        """The files fit reads, named for a message; a labels folder stands for its DrivenData tables (as for
        evaluate: whatever else lies in it is not read)."""
        from trapcls.core.frames.labels import DRIVENDATA_FEATURES, DRIVENDATA_LABELS

        labels = [self.labels / DRIVENDATA_FEATURES, self.labels / DRIVENDATA_LABELS] if self.labels.is_dir() \
            else [self.labels]
        return [*(("an out-of-fold CSV", p) for p in self.members), *(("the --labels file", p) for p in labels)]


@dataclass(frozen=True, kw_only=True)
class EnsembleApplyConfig:
    """Everything `trapcls ensemble apply` needs: the fitted weights, a test predictions CSV per member, the output."""

    weights: Path
    members: list[Path]  # matched to the fitted members by their model column, else by position
    out: Path
    template: Path | None = None  # DrivenData's submission_format.csv: the output has exactly its ids, in its order

    def __post_init__(self) -> None:
        if not self.members:
            raise OptionError("members", "give one test predictions CSV per fitted member")

    def inputs(self) -> list[tuple[str, Path | None]]:
        """The files apply reads, named for a message."""
        return [("the weights file", self.weights), *(("a member's predictions CSV", p) for p in self.members),
                ("the --template", self.template)]
