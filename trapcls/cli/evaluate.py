"""`trapcls evaluate`: score predictions against labels, and certify a blank threshold."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from trapcls.cli.options import BlankThreshold, Json, command_line, config, show
from trapcls.evaluate.config import EvaluateConfig

E = EvaluateConfig  # the defaults: a field's default is its class attribute


def evaluate(
    ctx: typer.Context,
    predictions: Annotated[list[Path], typer.Argument(
        help="A predictions CSV from `trapcls predict` (field or submission format), or two to compare.")],
    labels: Annotated[Path, typer.Option(
        help="The true labels, in any layout `trapcls train` reads: class folders, a filepath,label[,site] CSV "
             "(a run's split.csv too), a DrivenData folder, or a folder with --label-regex.")],
    label_regex: Annotated[Optional[str], typer.Option(help="Labels from file names, as for train.")]
    = E.label_regex,
    report: Annotated[Optional[Path], typer.Option(
        help="Write one self-contained HTML report (tables, confusion matrix, reliability diagram, galleries of "
             "mistakes) that opens offline in any browser.")] = E.report,
    bundle: Annotated[Optional[Path], typer.Option(help="The model's bundle, summarised in the report.")] = E.bundle,
    blank_threshold: BlankThreshold = E.blank_threshold,
    blank_miss: Annotated[Optional[float], typer.Option(
        help="Certify a blank threshold: the lowest P(blank) cut-off at which at most this share of animal frames "
             "(e.g. 0.02) would be set aside as blank, with --confidence; exact binomial bound, valid for the "
             "threshold it picks. Needs labelled blank and animal frames.")] = E.blank_miss,
    confidence: Annotated[float, typer.Option(help="Confidence of the --blank-miss guarantee.")] = E.confidence,
    write_bundle: Annotated[Optional[Path], typer.Option(
        help="Store the certified policy in this bundle's bundle.json (the model files are untouched): predict "
             "and watch then use it for is_blank. The predictions must come from this bundle.")] = E.write_bundle,
    json_out: Json = False,
) -> None:
    """Score predictions against labels: log loss, accuracy, balanced accuracy, macro-F1, per class and per site.

    With --blank-miss it also certifies a blank threshold (docs/blanks.md).
    """
    import json

    from trapcls.evaluate import evaluate as run_evaluate
    from trapcls.evaluate import render_text

    result = run_evaluate(config(ctx, EvaluateConfig, command=command_line()))
    show([json.dumps(result.to_json(), indent=2) if json_out else render_text(result)])
