"""Exporting trained checkpoints into model bundles (ONNX now; TensorRT engines on the device).

Entry points: `export_onnx(checkpoint, out)` and `export_tensorrt(bundle)`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from trapcls.core.system.exceptions import DataError

if TYPE_CHECKING:
    from trapcls.export.onnx import export_onnx
    from trapcls.export.tensorrt import export_tensorrt

__all__ = ["TARGETS", "export_onnx", "export_tensorrt", "parse_targets"]

TARGETS = ("onnx", "tensorrt")


def parse_targets(text: str) -> tuple[str, ...]:
    """`onnx`, `onnx,tensorrt` or `none` (as `trapcls train --export` takes it) -> the targets, in build order.

    A TensorRT engine is built from the bundle's ONNX, so `tensorrt` implies `onnx`.
    """
    names = [part.strip().lower() for part in text.split(",") if part.strip()]
    if names in ([], ["none"]):
        return ()
    unknown = [n for n in names if n not in TARGETS]
    if unknown:
        raise DataError(f"--export takes onnx, onnx,tensorrt or none; unknown: {', '.join(unknown)}.")
    return tuple(t for t in TARGETS if t in names or (t == "onnx" and "tensorrt" in names))


def __getattr__(name: str):
    """The exporters on first use: importing the package (for parse_targets) loads nothing heavy."""
    if name == "export_onnx":
        from trapcls.export import onnx

        return onnx.export_onnx
    if name == "export_tensorrt":
        from trapcls.export import tensorrt

        return tensorrt.export_tensorrt
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
