"""The openvino backend: the bundle's model.onnx on OpenVINO's CPU plugin, in bf16 only where a recorded check allows.

OpenVINO's CPU plugin picks bf16 by itself on CPUs with AMX or AVX512-BF16 (its
INFERENCE_PRECISION_HINT defaults to bf16 there), which would change the probabilities without a
word. So the precision is always set explicitly: bf16 where `trapcls export openvino` recorded a
passing check for this CPU, this OpenVINO and this model.onnx (trapcls.core.model.openvino_checks),
f32 everywhere else, and the backend says which and why.

`auto` picks openvino only on a box without a GPU, and only where a passing check of the
precision it would run applies here: bf16 where bf16 passed, else f32 where f32 passed (the
f32 check holds OpenVINO to ONNX Runtime on this model). f32 is worth it on its own: on a
2-core Xeon (AMX), one thread, batch 8, tf_efficientnet_lite2 at 260 px took 17.7 ms/frame on
OpenVINO f32 against 21.9 on ONNX Runtime (FP32 ONNX) and 39.4 on ONNX Runtime with the
FP16-stored default model, whose casts ONNX Runtime's CPU provider runs while OpenVINO folds
them into f32 weights; bf16 took 7.2.
"""

from __future__ import annotations

import logging
import queue

import numpy as np

from trapcls.core.model.bundle import Bundle
from trapcls.core.model.openvino_checks import CHECKS_KEY, PrecisionChoice, choose_precision, export_command
from trapcls.core.system.deps import require
from trapcls.core.system.exceptions import TrapclsError
from trapcls.core.system.hardware import cores, cpu_info, gpu_present, openvino_version

log = logging.getLogger(__name__)


def bf16_supported(core) -> bool:
    """Whether OpenVINO's CPU plugin can run bf16 here (it lists BF16 among its capabilities on AMX/AVX512-BF16)."""
    return "BF16" in core.get_property("CPU", "OPTIMIZATION_CAPABILITIES")


def precision_here(bundle: Bundle, core=None) -> PrecisionChoice:
    """The precision the openvino backend would run `bundle` in here, and why (trapcls.core.model.openvino_checks)."""
    core = core or require("openvino").Core()
    return choose_precision(bundle, cpu=cpu_info(), openvino_version=openvino_version(),
                            bf16_supported=bf16_supported(core))


def cpu_properties(precision: str, slots: int) -> dict[str, object]:
    """Compile settings matching the runner: `slots` streams of one thread, one request per stream.

    Like the onnxruntime backend, each call runs on one thread and the runner keeps `slots` calls
    in flight on separate batches, so no call waits at a per-layer barrier for a core a decoding
    thread holds. Threads are not pinned to cores: the decoders share them.
    """
    return {"INFERENCE_PRECISION_HINT": precision, "NUM_STREAMS": slots, "INFERENCE_NUM_THREADS": slots,
            "ENABLE_CPU_PINNING": False}


class OpenVinoBackend:
    """OpenVINO on the CPU with explicit precision and threads; see the module docstring."""

    name = "openvino"

    def __init__(self, bundle: Bundle, *, threads: int | None = None, precision: str | None = None) -> None:
        ov = require("openvino")
        core = ov.Core()
        if precision is None:
            self.choice = precision_here(bundle, core)
        else:  # `trapcls export openvino` running a precision to check it
            self.choice = PrecisionChoice(precision, "requested", verified=False)
        self.device, self.slots = "cpu", threads or cores()
        self.precision = self.choice.precision
        compiled = core.compile_model(str(bundle.onnx_path), "CPU", cpu_properties(self.precision, self.slots))
        ran = str(compiled.get_property("INFERENCE_PRECISION_HINT"))
        if _short(ran) != self.precision:  # never let the plugin's own default stand in for the choice
            raise TrapclsError(f"OpenVINO compiled {bundle.onnx_path} in {ran}, not the {self.precision} asked for.")
        self._requests: queue.SimpleQueue = queue.SimpleQueue()
        for _ in range(self.slots):
            self._requests.put(compiled.create_infer_request())
        self._first_call_alone(bundle)
        log.info("openvino %s on cpu in %s (%s), %d single-threaded streams", ov.__version__, self.precision,
                 self.choice.reason, self.slots)

    def _first_call_alone(self, bundle: Bundle) -> None:
        """Run one frame before the runner's threads call in at once.

        OpenVINO's Python bindings set up their NumPy bridge (pybind11's lazily initialised
        numpy API) on the first call that returns an array. When two threads make that first
        call together, one holds the GIL while waiting for the set-up the other started, which
        waits for the GIL: predict hung that way twice in the test suite, and 2 to 4 of 15 processes
        hung with 8 threads making their first call together (gdb: one thread in pybind11's
        call_once for the numpy API waiting for the GIL, the GIL's holder waiting on a static
        initialiser). One call from this thread first settles it for the whole process
        (tests/test_openvino.py::test_threads_making_their_first_call_together_never_hang).
        """
        spec = bundle.preprocess
        self.logits(np.zeros((1, 3, spec.height, spec.width), dtype=np.float32))

    @property
    def note(self) -> str:
        """What predict prints about the precision: which, and why."""
        return f"{self.precision}: {self.choice.reason}"

    @staticmethod
    def unavailable(bundle: Bundle) -> str | None:
        """Why `auto` must not pick openvino here (see the module docstring), or None when it may."""
        if gpu_present():
            return "a GPU is present (openvino runs on the CPU)"
        if openvino_version() is None:
            return "not installed (pip install 'trapcls[openvino]')"
        if not bundle.manifest.get(CHECKS_KEY):  # the common case, answered without importing openvino
            return f"no OpenVINO check recorded in the bundle: run {export_command(bundle)}"
        try:
            choice = precision_here(bundle)
        except TrapclsError as exc:
            return str(exc)
        except Exception as exc:  # a broken install (a missing shared library) is "not usable", not a crash
            return f"openvino does not load ({type(exc).__name__}: {exc})"
        return None if choice.verified else choice.reason

    def logits(self, batch: np.ndarray) -> np.ndarray:
        request = self._requests.get()  # one request per slot: an InferRequest runs one batch at a time
        try:
            return np.array(request.infer({0: batch})[0], copy=True)
        finally:
            self._requests.put(request)


def _short(element_type: str) -> str:
    """OpenVINO's element type name ('<Type: 'bfloat16'>', 'bf16', 'f32', 'float32') as 'bf16' or 'f32'."""
    text = element_type.lower()
    return "bf16" if "bf16" in text or "bfloat16" in text else "f32" if "f32" in text or "float32" in text else text

