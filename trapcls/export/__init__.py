"""Exporting trained checkpoints into model bundles (ONNX now; TensorRT engines on the device)."""

from trapcls.exceptions import DataError

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
