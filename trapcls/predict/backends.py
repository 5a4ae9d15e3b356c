"""Inference backends behind one small registry, looked up by name.

A backend turns a float32 NCHW batch into logits; `trapcls.core.model.probs.probabilities` applies
the bundle's calibration temperature and softmax, the same for every backend. `choose_backend("auto")`
takes the first available in AUTO_ORDER: a TensorRT engine built for this machine, then torch on a CUDA GPU
(FP16, channels_last), then OpenVINO on a CPU box where `trapcls export openvino` recorded a passing
check of the precision it would run (trapcls.predict.openvino), then ONNX Runtime (CUDA provider
when present, else CPU). On a CPU box ONNX Runtime beats eager torch (see benchmarks/), so auto
never picks torch without a GPU; it never picks an OpenVINO precision unchecked on this CPU.
"""

from __future__ import annotations

import importlib.util
import logging
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from trapcls.core.model.bundle import Bundle
from trapcls.core.model.engines import find_engine
from trapcls.core.system.deps import require
from trapcls.core.system.exceptions import BundleError, MissingDependencyError, TrapclsError
from trapcls.core.system.hardware import cores, gpu_info, gpu_present, tensorrt_version
from trapcls.predict.openvino import OpenVinoBackend

log = logging.getLogger(__name__)


class Backend(Protocol):
    name: str
    device: str
    # How many batches may run at once; the runner keeps this many inference calls in flight.
    slots: int

    def logits(self, batch: np.ndarray) -> np.ndarray:
        """Logits of shape (N, classes) for a float32 batch of shape (N, 3, H, W)."""
        ...


class OnnxRuntimeBackend:
    """ONNX Runtime with explicit thread settings; the CUDA provider when it is installed and a GPU is present.

    On the CPU each call runs on one thread and the runner keeps `threads` calls (default: one
    per core) in flight on separate batches. Independent batches never wait for each other,
    whereas intra-op threads meet at a barrier after every layer and stall whenever a decoding
    thread holds the other core: on 2 cores this gets ~97% of the work bound against ~85% for
    one call on two intra-op threads (benchmarks/predict_throughput.py). Threads sleep rather
    than spin, leaving the cores to the decoders.
    """

    name = "onnxruntime"

    def __init__(self, bundle: Bundle, *, threads: int | None = None) -> None:
        import onnxruntime as ort

        use_cuda = "CUDAExecutionProvider" in ort.get_available_providers() and gpu_present()
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.inter_op_num_threads = 1
        # Spinning threads burn the cores the decoders need.
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        options.intra_op_num_threads = 1
        providers = ["CUDAExecutionProvider", "CPUExecutionProvider"] if use_cuda else ["CPUExecutionProvider"]
        self.device = "cuda" if use_cuda else "cpu"
        self.slots = 1 if use_cuda else (threads or cores())
        self._session = ort.InferenceSession(_cpu_model(bundle) if not use_cuda else str(bundle.onnx_path),
                                             sess_options=options, providers=providers)
        self._input = self._session.get_inputs()[0].name
        log.info("onnxruntime %s on %s, %d single-threaded calls in flight", ort.__version__, self.device, self.slots)

    @staticmethod
    def unavailable(bundle: Bundle) -> str | None:
        return None  # a core dependency: always there

    def logits(self, batch: np.ndarray) -> np.ndarray:
        return self._session.run(None, {self._input: batch})[0]


def _cpu_model(bundle: Bundle) -> str | bytes:
    """The model for ONNX Runtime's CPU provider: the file, or an FP16-stored one widened to FP32 in memory.

    The CPU provider has no FP16 kernels for most ops and casts around each one at run time; the
    widened graph runs the same FP16-rounded weights without them (trapcls.predict.upcast), 1.8x
    faster on the shipped default model.
    """
    if bundle.onnx_precision != "fp16":
        return str(bundle.onnx_path)
    import onnx

    from trapcls.predict.upcast import widen_fp16

    model = onnx.load(str(bundle.onnx_path))
    widen_fp16(model)
    log.info("FP16-stored model widened to FP32 in memory for the CPU provider")
    return model.SerializeToString()


class TorchBackend:
    """PyTorch eager from the bundle's weights.safetensors: FP16 + channels_last on CUDA, FP32 on the CPU."""

    name = "torch"

    def __init__(self, bundle: Bundle, *, threads: int | None = None) -> None:
        torch = require("torch")
        from trapcls.core.model.build import load_model

        if bundle.weights_path is None:
            raise BundleError(f"{bundle.root} has no weights.safetensors, which the torch backend needs; "
                              "use --backend onnxruntime.")
        state = require("safetensors.torch").load_file(str(bundle.weights_path))
        model = load_model(bundle.arch, len(bundle.classes), state)
        self.device = "cuda" if torch.cuda.is_available() else "cpu"
        self.slots = 1
        if self.device == "cuda":
            model = model.to("cuda", memory_format=torch.channels_last).half()
        elif threads:
            torch.set_num_threads(threads)
        self._torch, self._model = torch, model
        log.info("torch %s on %s%s", torch.__version__, self.device,
                 " (fp16, channels_last)" if self.device == "cuda" else "")

    @staticmethod
    def unavailable(bundle: Bundle) -> str | None:
        if importlib.util.find_spec("torch") is None or importlib.util.find_spec("timm") is None:
            return "torch/timm not installed (pip install 'trapcls[train]')"
        if bundle.weights_path is None:
            return "the bundle has no weights.safetensors"
        if not gpu_present():
            return "no GPU (on a CPU onnxruntime is faster)"
        if not require("torch").cuda.is_available():
            return "torch cannot use the GPU (CPU-only build or driver mismatch)"
        return None

    def logits(self, batch: np.ndarray) -> np.ndarray:
        torch = self._torch
        with torch.inference_mode():
            x = torch.from_numpy(batch)
            if self.device == "cuda":
                x = x.pin_memory().to("cuda", non_blocking=True).half().contiguous(memory_format=torch.channels_last)
            return self._model(x).float().cpu().numpy()


class TensorRTBackend:
    """An FP16 TensorRT engine from the bundle, built on this machine by `trapcls export tensorrt`.

    The engine is chosen from those bundle.json records and checked against this GPU, this
    TensorRT and the bundle's ONNX before it is deserialised (trapcls.core.model.engines).
    """

    name = "tensorrt"

    def __init__(self, bundle: Bundle, *, threads: int | None = None) -> None:
        from trapcls.predict.tensorrt import TensorRTRunner

        version = tensorrt_version()
        if version is None:
            raise MissingDependencyError("The tensorrt backend needs TensorRT's Python bindings (on a Jetson: from "
                                         "JetPack, in a venv made with --system-site-packages; see export/README.md).")
        match = find_engine(bundle, tensorrt_version=version, gpu=gpu_info())
        if match.engine is None:
            raise BundleError(match.explain(bundle))
        self._runner = TensorRTRunner(match.engine)
        self.device, self.slots = "cuda", 1
        self.engine = match.engine
        self.memory = self._runner.memory.name
        log.info("tensorrt engine %s (buffers from %s)", match.engine.name, self.memory)

    @staticmethod
    def unavailable(bundle: Bundle) -> str | None:
        if not bundle.manifest.get("engines"):
            return "the bundle has no TensorRT engine (trapcls export tensorrt builds one)"
        version = tensorrt_version()
        if version is None:
            return "tensorrt is not installed"
        match = find_engine(bundle, tensorrt_version=version, gpu=gpu_info())
        if match.engine is None:
            return "no engine fits this machine: " + "; ".join(
                f"{name}: {', '.join(reasons)}" for name, reasons in match.rejected.items())
        return None

    def logits(self, batch: np.ndarray) -> np.ndarray:
        return self._runner.logits(batch)


# Keys must equal trapcls.predict.config.BACKEND_NAMES (the CLI's choices); a test holds them equal.
BACKENDS: dict[str, type] = {"onnxruntime": OnnxRuntimeBackend, "torch": TorchBackend, "tensorrt": TensorRTBackend,
                             "openvino": OpenVinoBackend}
AUTO_ORDER = ("tensorrt", "torch", "openvino", "onnxruntime")


@dataclass(frozen=True)
class Choice:
    """The backend to use and why it was picked."""

    name: str
    reason: str


def choose_backend(name: str, bundle: Bundle) -> Choice:
    """Resolve `name` ("auto" or a BACKENDS key) to a backend, saying why."""
    if name != "auto":
        if name not in BACKENDS:
            raise TrapclsError(f"Invalid backend {name!r}. Only auto, {', '.join(BACKENDS)} are supported.")
        return Choice(name, "requested")
    skipped = []
    for candidate in AUTO_ORDER:
        why_not = BACKENDS[candidate].unavailable(bundle)
        if why_not is None:
            note = f" (skipped {'; '.join(skipped)})" if skipped else ""
            return Choice(candidate, f"auto: fastest available{note}")
        skipped.append(f"{candidate}: {why_not}")
    raise MissingDependencyError("No inference backend is available: " + "; ".join(skipped))


def create_backend(name: str, bundle: Bundle, *, threads: int | None = None) -> Backend:
    """Instantiate the backend called `name` (a BACKENDS key) for `bundle`."""
    try:
        cls = BACKENDS[name]
    except KeyError:
        raise TrapclsError(f"Invalid backend {name!r}. Only {', '.join(BACKENDS)} are supported.") from None
    return cls(bundle, threads=threads)
