"""matplotlib for files only: the one place that loads pyplot (needs the `train` extra)."""

from __future__ import annotations

from trapcls.core.system.deps import require


def pyplot():
    """matplotlib.pyplot on the Agg backend: PNGs without a display (field boxes, CI)."""
    matplotlib = require("matplotlib")
    matplotlib.use("Agg")
    return require("matplotlib.pyplot")
