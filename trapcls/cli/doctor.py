"""`trapcls doctor`: what this machine can run, and what predict would use, to paste into an issue."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from trapcls.cli.options import Json, show


def doctor(
    bundle: Annotated[Optional[Path], typer.Option(
        help="The bundle to check: its TensorRT engines and OpenVINO checks, whether each matches this machine, "
             "what predict would use (backend and precision, and why); default: the model predict uses without "
             "--bundle.")]
    = None,
    json_out: Json = False,
) -> None:
    """Print what this machine can run (Python, ONNX Runtime, torch/CUDA, TensorRT, OpenVINO, GPU, the CPU's bf16 and
    int8 instructions) to paste into an issue."""
    import json

    from trapcls.core.model.bundle import default_bundle
    from trapcls.doctor import collect, render

    report = collect(bundle or default_bundle())
    show([json.dumps(report, indent=2) if json_out else render(report)])
