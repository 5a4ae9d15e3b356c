"""`trapcls convert`: a field CSV into the formats where field work continues.

- megadetector: MegaDetector batch output, format 1.6, which Timelapse imports (megadetector.py);
- camtrap-dp: a Camtrap DP 1.0.2 data package, which GBIF, Agouti and camtrapR read (camtrapdp.py).
"""

from __future__ import annotations

from trapcls.core.system.exceptions import DataError
from trapcls.results.config import TARGETS, ConvertConfig, ConvertSummary
from trapcls.results.events import check_depth, check_threshold
from trapcls.results.table import read_field


def run_convert(config: ConvertConfig) -> ConvertSummary:
    """Read the field CSV and write `config.to`'s format to `config.out`."""
    if config.to not in TARGETS:
        raise DataError(f"--to {config.to!r} is not a known format; choose one of {', '.join(TARGETS)}.")
    table = read_field(config.predictions)
    check_depth(config.deployment_depth)
    check_threshold(config.blank_threshold, table)
    if config.to == "megadetector":
        from trapcls.results.megadetector import write_megadetector

        return write_megadetector(table, config)
    from trapcls.results.camtrapdp import write_camtrap_dp

    return write_camtrap_dp(table, config)
