"""Batch classification of image folders into CSV files.

Entry point: `run_predict(PredictConfig(...))`; `merge_csvs` joins the CSVs of sharded runs.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from trapcls.predict.config import PredictConfig

if TYPE_CHECKING:
    from trapcls.predict.merge import merge_csvs
    from trapcls.predict.runner import PredictSummary, run_predict

__all__ = ["PredictConfig", "PredictSummary", "merge_csvs", "run_predict"]


def __getattr__(name: str):
    """The entry points on first use, so that importing PredictConfig (as the CLI does) loads nothing heavy."""
    if name in ("run_predict", "PredictSummary"):
        from trapcls.predict import runner

        return getattr(runner, name)
    if name == "merge_csvs":
        from trapcls.predict import merge

        return merge.merge_csvs
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
