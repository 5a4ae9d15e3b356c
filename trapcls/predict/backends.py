"""Inference backends behind one small registry, looked up by name.

A backend turns a float32 NCHW batch into logits; `probabilities` applies the bundle's
calibration temperature and softmax, the same for every backend.
"""

from __future__ import annotations

import logging
import os
from typing import Protocol

import numpy as np

from trapcls.bundle import Bundle
from trapcls.exceptions import TrapclsError

log = logging.getLogger(__name__)


class Backend(Protocol):
    name: str

    def logits(self, batch: np.ndarray) -> np.ndarray:
        """Logits of shape (N, classes) for a float32 batch of shape (N, 3, H, W)."""
        ...


class OnnxRuntimeBackend:
    """ONNX Runtime on the CPU with explicit thread settings."""

    name = "onnxruntime"

    def __init__(self, bundle: Bundle, *, threads: int | None = None) -> None:
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = threads or os.cpu_count() or 1
        options.inter_op_num_threads = 1
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        self._session = ort.InferenceSession(
            str(bundle.onnx_path), sess_options=options, providers=["CPUExecutionProvider"]
        )
        self._input = self._session.get_inputs()[0].name
        log.info("onnxruntime %s, %d intra-op threads", ort.__version__, options.intra_op_num_threads)

    def logits(self, batch: np.ndarray) -> np.ndarray:
        return self._session.run(None, {self._input: batch})[0]


BACKENDS: dict[str, type] = {"onnxruntime": OnnxRuntimeBackend}


def create_backend(name: str, bundle: Bundle, *, threads: int | None = None) -> Backend:
    """Instantiate the backend called `name` for `bundle`."""
    try:
        cls = BACKENDS[name]
    except KeyError:
        raise TrapclsError(f"Invalid backend {name!r}. Only {', '.join(BACKENDS)} are supported.") from None
    return cls(bundle, threads=threads)


def probabilities(logits: np.ndarray, temperature: float) -> np.ndarray:
    """Calibrated class probabilities: softmax(logits / temperature), computed in float64."""
    z = np.asarray(logits, dtype=np.float64) / temperature
    z -= z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)
