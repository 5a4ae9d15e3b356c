"""`trapcls convert`: a field CSV into the formats where field work continues.

- megadetector: MegaDetector batch output, format 1.6, which Timelapse imports (megadetector.py);
- camtrap-dp: a Camtrap DP 1.0.2 data package, which GBIF, Agouti and camtrapR read (camtrapdp.py).
Both decide "blank" with the rule the CSV was written with (trapcls.core.table.blank). A detection run's CSV
(`predict --detections`) is exported box by box, with its boxes CSV and the detector's file (detection_run.py).
"""

from __future__ import annotations

from dataclasses import replace

from trapcls.core.model.blank import DEFAULT_BLANK_THRESHOLD
from trapcls.core.table.blank import rule_for_table
from trapcls.core.table.read import read_field
from trapcls.results.config import ConvertConfig, ConvertSummary
from trapcls.results.detection_run import load_run


def run_convert(config: ConvertConfig) -> ConvertSummary:
    """Read the field CSV (and a detection run's boxes) and write `config.to`'s format to `config.out`."""
    table = read_field(config.predictions)
    table, run = load_run(table, config)
    if run is not None:  # the boxes CSV read is an input too, given or not: no --out may overwrite it
        config = replace(config, boxes=run.boxes)
    rule = rule_for_table(table, given=config.blank_threshold, bundle=config.bundle)
    # Without a blank class nothing is ever blank; the default only fills the formats' threshold fields.
    threshold = rule.threshold if rule is not None else DEFAULT_BLANK_THRESHOLD
    if config.to == "megadetector":
        from trapcls.results.megadetector import write_megadetector

        summary = write_megadetector(table, config, threshold=threshold, run=run)
    else:
        from trapcls.results.camtrapdp import write_camtrap_dp

        summary = write_camtrap_dp(table, config, threshold=threshold)
    return replace(summary, rule=rule)
