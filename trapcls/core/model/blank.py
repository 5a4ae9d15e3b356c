"""Blank frames (wind, sun, rain, no animal): which class means blank, and the one rule that says a row is blank.

Every command that writes or reads an is_blank decision (predict, watch, adapt, events, convert,
evaluate) gets a `BlankRule` from one of two resolvers: `Bundle.blank_rule` for the model a
command runs, `trapcls.core.table.blank.rule_for_table` for a CSV a command reads. The rule
carries the threshold and where it came from, so every command can say which it applied.
Free of heavy imports: the CLI shows the default threshold in its help.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from trapcls.core.system.exceptions import OptionError

# Class names that mean "nothing triggered the camera but wind, sun or rain".
BLANK_NAMES = ("blank", "empty")
# is_blank is true when P(blank) >= this, unless a threshold is given or the model has a certified policy.
DEFAULT_BLANK_THRESHOLD = 0.5
GIVEN, POLICY, DEFAULT = "given", "policy", "default"


def blank_index(classes: tuple[str, ...] | list[str]) -> int | None:
    """Index of the blank class (named blank or empty, any case), or None. A bundle and training labels hold
    at most one (`blank_classes`), so there is no choosing between two."""
    for i, name in enumerate(classes):
        if name.lower() in BLANK_NAMES:
            return i
    return None


def blank_classes(classes: tuple[str, ...] | list[str]) -> list[str]:
    """Every class that means blank (blank, BLANK, empty, ...); more than one is ambiguous for is_blank."""
    return [name for name in classes if name.lower() in BLANK_NAMES]


@dataclass(frozen=True)
class BlankRule:
    """A row is blank when P(blank) >= threshold; `source` is where the threshold came from (GIVEN, POLICY or
    DEFAULT) and `why` says it in words for the user."""

    threshold: float
    source: str
    why: str

    def is_blank(self, p_blank: float) -> bool:
        return p_blank >= self.threshold

    def describe(self) -> str:
        """One line a command prints: "is_blank: P(blank) >= 0.211 (the certified blank policy of ...)"."""
        return f"is_blank: P(blank) >= {self.threshold:g} ({self.why})"


def rule_for(classes: tuple[str, ...] | list[str], given: float | None,
             found: Callable[[], BlankRule]) -> BlankRule | None:
    """The blank rule for results over `classes`: None without a blank class (a threshold given for them is
    refused), else the threshold given, else `found()` (the rule of the model, however a command finds it)."""
    if blank_index(classes) is None:
        if given is not None:
            raise OptionError("blank_threshold", f"does not apply: the model has no blank class (classes: "
                                                 f"{', '.join(classes)})")
        return None
    return given_rule(given) if given is not None else found()


def given_rule(threshold: float) -> BlankRule:
    """The threshold the user asked for."""
    return BlankRule(threshold, GIVEN, f"--blank-threshold {threshold:g}")


def model_rule(policy: dict[str, Any] | None, model: str) -> BlankRule:
    """The rule of a model: its certified policy (evaluate --blank-miss --write-bundle), else the default."""
    if not policy:
        return BlankRule(DEFAULT_BLANK_THRESHOLD, DEFAULT,
                         f"the default {DEFAULT_BLANK_THRESHOLD:g}: {model} has no certified blank policy")
    return BlankRule(float(policy["threshold"]), POLICY,
                     f"the certified blank policy of {model}: at most "
                     f"{policy.get('target_miss', float('nan')):.1%} of animal frames set aside, "
                     f"{policy.get('confidence', float('nan')):.0%} confidence, from "
                     f"{policy.get('animal_frames', '?')} labelled non-blank frames")
