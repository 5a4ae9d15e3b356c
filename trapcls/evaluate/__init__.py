"""Scoring predictions against labels and writing the evaluation report.

Entry point: `evaluate(EvaluateConfig(...))`; `render_text` turns its result into the terminal table.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from trapcls.evaluate.config import EvaluateConfig

if TYPE_CHECKING:
    from trapcls.evaluate.run import Evaluation, evaluate, render_text

__all__ = ["EvaluateConfig", "Evaluation", "evaluate", "render_text"]


def __getattr__(name: str):
    """The entry point on first use, so that importing EvaluateConfig (as the CLI does) loads nothing heavy."""
    if name in ("evaluate", "render_text", "Evaluation"):
        from trapcls.evaluate import run

        return getattr(run, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
