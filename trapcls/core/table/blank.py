"""Which blank rule a CSV was written with: the one resolver for every command that reads a field CSV.

events, convert and evaluate must decide "blank" exactly as the predict or watch run that wrote
the CSV did, else an event, a Timelapse entry or a Camtrap DP observation contradicts the
frame's own is_blank cell. The rule, in order:
1. a threshold the user gave;
2. the rule of the model named in the CSV's model column: that bundle when it is the one given
   (refused when it is another model's), else $TRAPCLS_BUNDLE or the shipped model when one of
   them is that model;
3. otherwise the default threshold, named as such.
Whatever was found (but a threshold given) is then checked against the CSV's own is_blank
column, and a CSV whose column says otherwise is refused, naming the thresholds that fit it.
"""

from __future__ import annotations

from pathlib import Path

from trapcls.core.model.blank import DEFAULT, DEFAULT_BLANK_THRESHOLD, BlankRule, rule_for
from trapcls.core.model.bundle import load_bundle, resolve_bundle
from trapcls.core.system.exceptions import DataError
from trapcls.core.table.read import Table

EXAMPLES = 3


def rule_for_table(table: Table, *, given: float | None = None, bundle: Path | None = None,
                   candidate: bool = False) -> BlankRule | None:
    """The blank rule `table` was written with (None when its classes have no blank class); see the module.
    `bundle` is the one the user named as the CSV's writer; with `candidate` it was named for another purpose
    (evaluate's report) and is used only when it is the CSV's model."""
    def written_with() -> BlankRule:
        rule = _model_rule(table, bundle, candidate)
        check_blank_column(table, rule)
        return rule

    return rule_for(table.classes, given, written_with)


def _model_rule(table: Table, given_bundle: Path | None, candidate: bool) -> BlankRule:
    """The rule of the model that wrote `table`, from the bundle given or the one trapcls would use."""
    if given_bundle is not None:
        bundle = load_bundle(given_bundle)
        if table.model is None or table.model == bundle.model_id:
            return bundle.blank_rule()
        if not candidate:
            raise DataError(f"{table.source} was written by {table.model!r}, not by {bundle.model_id!r} "
                            f"({given_bundle}): pass the bundle that wrote it.")
    path, source = resolve_bundle(None)
    bundle = load_bundle(path)
    if table.model is not None and table.model == bundle.model_id:
        return bundle.blank_rule()
    who = repr(table.model) if table.model else "the model that wrote it (the CSV names none)"
    return BlankRule(DEFAULT_BLANK_THRESHOLD, DEFAULT,
                     f"the default {DEFAULT_BLANK_THRESHOLD:g}: {who} is not {source.split(' (')[0]}, so its "
                     "certified policy, if it has one, is unknown here; pass its bundle to use it")


def check_blank_column(table: Table, rule: BlankRule) -> None:
    """DataError unless every is_blank cell of `table` is what `rule` decides on that row's probabilities."""
    if table.blank_cells is None:
        return
    written = [(row, cell == "true", float(row.probs[table.blank])) for row, cell in zip(table.rows,
               table.blank_cells, strict=True) if row.ok]
    wrong = [(row, flag, p) for row, flag, p in written if rule.is_blank(p) != flag]
    if not wrong:
        return
    examples = "; ".join(f"{row.path}: P(blank) {p:.8g}, is_blank {str(flag).lower()}" for row, flag, p in
                         wrong[:EXAMPLES])
    low = max((p for _, flag, p in written if not flag), default=0.0)
    high = min((p for _, flag, p in written if flag), default=1.0)
    fits = (f"it was written with a threshold above {low:.8g} and at most {high:.8g}: pass one as "
            "--blank-threshold, or the bundle that wrote it as --bundle" if low < high else
            "no threshold fits it (was it edited by hand?): re-run predict, or pass --blank-threshold")
    raise DataError(f"{table.source}: its is_blank column was not written with P(blank) >= {rule.threshold:g} "
                    f"({rule.why}): {len(wrong)} rows disagree ({examples}); {fits}.")

