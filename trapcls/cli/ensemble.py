"""`trapcls ensemble fit` and `trapcls ensemble apply`: weights for several models fitted on their out-of-fold
predictions, and the weighted average of their test predictions as a competition submission."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from trapcls.cli.options import Json, config, show
from trapcls.evaluate.ensemble_config import EnsembleApplyConfig, EnsembleFitConfig

F = EnsembleFitConfig  # the defaults: a field's default is its class attribute
A = EnsembleApplyConfig


def fit(
    ctx: typer.Context,
    members: Annotated[list[Path], typer.Argument(
        help="One out-of-fold CSV per member (id,<classes>,fold,model, as `trapcls oof` writes it), all from the "
             "same fold split. One member: only the temperature is fitted.", metavar="OOF.csv")],
    labels: Annotated[Path, typer.Option(
        help="The training frames' labels, in any layout `trapcls evaluate --labels` reads (a DrivenData folder, a "
             "filepath,label[,site] CSV, class folders); frames are matched by id, the file stem.")],
    out: Annotated[Path, typer.Option(help="The weights file to write (JSON), for `trapcls ensemble apply`.")],
    label_regex: Annotated[Optional[str], typer.Option(help="Labels from file names, as for train.")]
    = F.label_regex,
    json_out: Json = False,
) -> None:
    """Fit non-negative member weights summing to 1 and one temperature minimising the out-of-fold log loss of
    softmax(log(sum_m w_m p_m) / T); report each member's and the ensemble's log loss with standard errors, and
    whether the ensemble (cross-fitted by fold) beats the best member beyond noise."""
    import json

    from trapcls.evaluate.ensemble import fit_ensemble

    result = fit_ensemble(config(ctx, EnsembleFitConfig))
    show([json.dumps(result.to_json(), indent=2) if json_out else "\n".join(result.lines())])


def apply(
    ctx: typer.Context,
    weights: Annotated[Path, typer.Argument(help="The weights file `trapcls ensemble fit` wrote.",
                                            metavar="WEIGHTS.json")],
    members: Annotated[list[Path], typer.Argument(
        help="One test predictions CSV per fitted member (`trapcls predict`, field or submission format): matched "
             "by the model column, or by position for submission CSVs, which have none.", metavar="PRED.csv")],
    out: Annotated[Path, typer.Option(help="The submission CSV to write: id,<classes>.")],
    template: Annotated[Optional[Path], typer.Option(
        help="The competition's submission_format.csv: the output gets exactly its ids in its order, and its "
             "column order.")] = A.template,
) -> None:
    """Write the fitted weighted, temperature-scaled average of the members' test predictions in the exact
    DrivenData submission layout."""
    from trapcls.evaluate.ensemble_apply import apply_ensemble

    result = apply_ensemble(config(ctx, EnsembleApplyConfig))
    show(result.lines(), result.notices())
