"""INT8 ONNX (`trapcls export onnx --int8`): static quantization for the CPU, kept only if it matches FP32.

`quantize_int8` runs ONNX Runtime's static quantization on a verified FP32 graph: its pre-processing
(shape inference and graph optimisation) first, then calibration on real frames preprocessed exactly as
`trapcls predict` preprocesses them, then QDQ quantization with per-channel symmetric INT8 weights. Kept in
float:
- the groups in `Int8Settings.keep_float`: "stem" (the first convolution, which sees the raw pixels),
  "head" (the last global pooling and everything after it: the classifier Gemm/MatMul and any Softmax), and
  "last_conv" (the last convolution before that pooling);
- shape arithmetic: the nodes computing on tensor shapes (timm's "same" padding in tf_* models turns
  the input's height and width into float and back); quantizing it would change the padding.

The defaults (MinMax ranges, uint8 activations with int8 weights, stem and head in float) are the best
found by benchmarks/int8_search.py on EfficientNet-Lite0/Lite2 and the shipped 12-class model: per-tensor
weights lose a third of the top-1 agreement; percentile and entropy clipping only lose more; int8
activations (S8S8) leave most convolutions to slower kernels in ONNX Runtime 1.32 on x86. Even the best
setting misses the gate on those models (mean abs probability difference ~8e-3 on the 12-class model, where
rounding the weights alone gives 5.6e-3), so expect `--int8` to refuse models like them.

Calibration runs in chunks of CALIBRATION_CHUNK frames: ONNX Runtime's calibrators keep every
intermediate tensor of what they are given in memory before reducing it to ranges or histograms.

`check_int8_parity` compares the INT8 and FP32 models on ONNX Runtime's CPU provider with the same
test and tolerances as the FP16 export (trapcls.export.parity); `int8_kernels` counts the integer
kernels in the graph ONNX Runtime actually runs, the evidence that the model is INT8 at run time.
"""

from __future__ import annotations

import contextlib
import io
import logging
import tempfile
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from trapcls.core.frames.preprocess import PreprocessSpec
from trapcls.core.system.exceptions import ExportError
from trapcls.export.parity import ParityReport, onnx_agreement, refuse_past_fp16_tolerance

if TYPE_CHECKING:
    import onnx

log = logging.getLogger(__name__)

CALIBRATION_METHODS = ("minmax", "percentile", "entropy")
ACTIVATION_TYPES = ("uint8", "int8")  # U8S8 or S8S8: activations in this type, weights always int8
KEEP_FLOAT_GROUPS = ("stem", "head", "last_conv")
CALIBRATION_CHUNK = 16  # frames per calibration pass (memory: every intermediate tensor of these frames)
HISTOGRAM_BINS = 2048  # percentile and entropy; ONNX Runtime's entropy default of 128 cannot clip at all
# The ops quantized; everything else (Pad, Clip folded into its producer, Reshape ...) follows its neighbours.
QUANTIZED_OPS = ("Conv", "Gemm", "MatMul", "Add", "Mul", "Clip", "Relu", "GlobalAveragePool", "AveragePool",
                 "MaxPool", "Pad", "Flatten", "Reshape", "Concat")
# What ONNX Runtime runs when a QDQ group became an integer kernel.
INT8_KERNELS = frozenset({"QLinearConv", "ConvInteger", "QLinearMatMul", "MatMulInteger", "QGemm", "QLinearAdd",
                          "QLinearMul", "QLinearGlobalAveragePool", "QLinearAveragePool", "QLinearConcat",
                          "DynamicQuantizeMatMul", "MatMulIntegerToFloat", "NhwcQLinearConv"})
_HEAD_OPS = frozenset({"GlobalAveragePool", "GlobalMaxPool", "ReduceMean"})
_ACTIVATIONS = frozenset({"Clip", "Relu"})
_SHAPE_OPS = frozenset({"Shape", "Size"})


@dataclass(frozen=True)
class Int8Settings:
    """How to quantize: the calibration method, the activation type, per-channel weights, what stays float."""

    calibration: str = "minmax"
    percentile: float = 99.999  # with calibration="percentile": the share of |activation| values kept unclipped
    activations: str = "uint8"
    per_channel: bool = True
    keep_float: tuple[str, ...] = ("stem", "head")

    def __post_init__(self) -> None:
        _choose("calibration method", self.calibration, CALIBRATION_METHODS)
        _choose("activation type", self.activations, ACTIVATION_TYPES)
        for group in self.keep_float:
            _choose("keep-float group", group, KEEP_FLOAT_GROUPS)

    def to_dict(self) -> dict[str, Any]:
        found = {**asdict(self), "keep_float": list(self.keep_float)}
        if self.calibration != "percentile":
            del found["percentile"]
        return found


@dataclass(frozen=True)
class Int8Model:
    """What `quantize_int8` did: its settings, the frames it calibrated on, the nodes it left in float."""

    settings: Int8Settings
    calibration_frames: int
    float_nodes: list[str] = field(default_factory=list)
    quantized_nodes: int = 0

    def to_dict(self) -> dict[str, Any]:
        return {**self.settings.to_dict(), "calibration_frames": self.calibration_frames,
                "float_nodes": self.float_nodes, "quantized_nodes": self.quantized_nodes}


def _choose(what: str, value: str, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise ExportError(f"Invalid INT8 {what} {value!r}. Use one of: {', '.join(choices)}.")


def quantize_int8(fp32_path: Path, out_path: Path, calibration: np.ndarray,
                  settings: Int8Settings | None = None) -> Int8Model:
    """Write a static INT8 (QDQ) version of the FP32 model at `fp32_path` to `out_path`, calibrated on the
    preprocessed (N, 3, H, W) `calibration` batch."""
    import onnx
    from onnxruntime.quantization import QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    settings = settings or Int8Settings()
    if len(calibration) == 0:
        raise ExportError("INT8 calibration needs at least one readable frame; pass --calibration-images.")
    with tempfile.TemporaryDirectory(prefix="trapcls-int8-") as tmp:
        prepared, cache = Path(tmp) / "prepared.onnx", Path(tmp) / "ranges.json"
        with _quiet():
            quant_pre_process(str(fp32_path), str(prepared))
        model = onnx.load(str(prepared))
        float_nodes = float_node_names(model, settings.keep_float)
        _calibrate(prepared, Path(tmp), calibration, settings, cache)
        activation = QuantType.QUInt8 if settings.activations == "uint8" else QuantType.QInt8
        with _quiet():
            quantize_static(str(prepared), str(out_path), None, quant_format=QuantFormat.QDQ,
                            op_types_to_quantize=list(QUANTIZED_OPS), per_channel=settings.per_channel,
                            activation_type=activation, weight_type=QuantType.QInt8,
                            nodes_to_exclude=sorted(float_nodes), calibrate_method=_method(settings),
                            calibration_cache_path=str(cache),
                            extra_options={"WeightSymmetric": True, "ActivationSymmetric": False})
    quantized = onnx.load(str(out_path))
    dequantized = {name for n in quantized.graph.node if n.op_type == "DequantizeLinear" for name in n.output}
    count = sum(1 for n in quantized.graph.node if n.op_type not in ("QuantizeLinear", "DequantizeLinear")
                and any(i in dequantized for i in n.input))
    if not count:
        raise ExportError(f"ONNX Runtime quantized none of {fp32_path}'s operators; export without --int8.")
    kept = sorted(float_nodes - shape_arithmetic(model))
    log.info("int8: %d nodes take INT8 inputs; kept in float: %s, and %d nodes of shape arithmetic", count,
             ", ".join(kept) or "none", len(float_nodes) - len(kept))
    return Int8Model(settings=settings, calibration_frames=len(calibration), quantized_nodes=count, float_nodes=kept)


def float_node_names(model: onnx.ModelProto, groups: tuple[str, ...]) -> set[str]:
    """The names of the nodes to leave in float: shape arithmetic plus the requested `groups`.

    A float convolution is kept together with the Pad before it and the activation after it, so that
    no DequantizeLinear feeds it and no QuantizeLinear follows it: between the two, ONNX Runtime's
    graph optimiser would quantize its weights itself (per tensor) and run it as an INT8 kernel anyway.
    """
    nodes = list(model.graph.node)
    unnamed = [n.op_type for n in nodes if not n.name]
    if unnamed:
        raise ExportError(f"{len(unnamed)} nodes of the ONNX model have no name, so none can be kept in float "
                          "for INT8; re-export the FP32 model with `trapcls export onnx`.")
    names = shape_arithmetic(model)
    # The last global pooling: squeeze-and-excitation blocks pool too, the classifier's pooling comes last.
    pool = max((i for i, n in enumerate(nodes) if n.op_type in _HEAD_OPS), default=len(nodes))
    convs = [n for n in nodes[:pool] if n.op_type == "Conv"]
    kept = ([convs[0]] if "stem" in groups and convs else []) + (convs[-1:] if "last_conv" in groups else [])
    for conv in kept:
        names.update(n.name for n in _neighbours(nodes, conv))
    if "head" in groups:
        names.update(n.name for n in nodes[pool:])
    return names


def _neighbours(nodes: list[onnx.NodeProto], conv: onnx.NodeProto) -> list[onnx.NodeProto]:
    """`conv`, the Pad producing its input, and the activation that is the only consumer of its output."""
    found = [conv]
    found += [n for n in nodes if n.op_type == "Pad" and n.output[0] == conv.input[0]]
    consumers = [n for n in nodes if conv.output[0] in n.input]
    if len(consumers) == 1 and consumers[0].op_type in _ACTIVATIONS:
        found.append(consumers[0])
    return found


def shape_arithmetic(model: onnx.ModelProto) -> set[str]:
    """Nodes that compute only on tensor shapes and constants (from Shape/Size through to a Pad's pads)."""
    static = {t.name for t in model.graph.initializer}
    shape_like: set[str] = set()
    names = set()
    for node in model.graph.node:  # ONNX graphs are stored in topological order
        inputs = [i for i in node.input if i]
        if not inputs and node.op_type == "Constant":
            static.update(node.output)
            continue
        derived = any(i in shape_like for i in inputs) and all(i in shape_like or i in static for i in inputs)
        if node.op_type in _SHAPE_OPS or derived:
            shape_like.update(node.output)
            names.add(node.name)
        elif inputs and all(i in static for i in inputs):
            static.update(node.output)
    return names


def _calibrate(prepared: Path, tmp: Path, calibration: np.ndarray, settings: Int8Settings, cache: Path) -> None:
    """Activation ranges from `calibration`, computed CALIBRATION_CHUNK frames at a time, saved to `cache`."""
    from onnxruntime.quantization.calibrate import create_calibrator, save_tensors_data

    options: dict[str, Any] = {}
    if settings.calibration == "percentile":
        options = {"num_bins": HISTOGRAM_BINS, "percentile": settings.percentile, "symmetric": True}
    elif settings.calibration == "entropy":
        options = {"num_bins": HISTOGRAM_BINS, "num_quantized_bins": 128}
    calibrator = create_calibrator(prepared, list(QUANTIZED_OPS), augmented_model_path=str(tmp / "augmented.onnx"),
                                   calibrate_method=_method(settings), extra_options=options)
    with _quiet():
        for start in range(0, len(calibration), CALIBRATION_CHUNK):
            calibrator.collect_data(_Reader(calibration[start:start + CALIBRATION_CHUNK], _input_name(prepared)))
        save_tensors_data(calibrator.compute_data(), cache)


class _Reader:
    """ONNX Runtime's CalibrationDataReader over a preprocessed batch, one frame per call."""

    def __init__(self, batch: np.ndarray, name: str) -> None:
        self._frames = iter(batch)
        self._name = name

    def get_next(self) -> dict[str, np.ndarray] | None:
        frame = next(self._frames, None)
        return None if frame is None else {self._name: frame[None]}


def _input_name(path: Path) -> str:
    import onnx

    return onnx.load(str(path), load_external_data=False).graph.input[0].name


def _method(settings: Int8Settings):
    from onnxruntime.quantization import CalibrationMethod

    return {"minmax": CalibrationMethod.MinMax, "percentile": CalibrationMethod.Percentile,
            "entropy": CalibrationMethod.Entropy}[settings.calibration]


@contextlib.contextmanager
def _quiet():
    """ONNX Runtime's quantization tools print progress to stdout and warn through the root logger."""
    root = logging.getLogger()
    level = root.level
    root.setLevel(max(level, logging.ERROR))
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            yield
    finally:
        root.setLevel(level)


def int8_kernels(path: Path) -> dict[str, int]:
    """How many nodes of each integer kernel ONNX Runtime's CPU provider runs for the model at `path`,
    read from the graph it optimises (QDQ groups it could not fuse stay float ops between Q/DQ pairs)."""
    import onnx
    import onnxruntime as ort

    with tempfile.TemporaryDirectory(prefix="trapcls-int8-") as tmp:
        optimised = Path(tmp) / "optimised.onnx"
        options = ort.SessionOptions()
        # QDQ groups become integer kernels at this level; ENABLE_ALL only adds layout changes for this CPU.
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED
        options.optimized_model_filepath = str(optimised)
        options.log_severity_level = 3
        ort.InferenceSession(str(path), sess_options=options, providers=["CPUExecutionProvider"])
        counts = Counter(n.op_type for n in onnx.load(str(optimised)).graph.node)
    return {op: counts[op] for op in sorted(INT8_KERNELS) if counts[op]}


def check_int8_parity(fp32_path: Path, int8_path: Path, images: list[Path], spec: PreprocessSpec) -> ParityReport:
    """INT8 against FP32 probabilities on ONNX Runtime's CPU provider; raise ExportError past the FP16 gate."""
    report = onnx_agreement(fp32_path, int8_path, images, spec)
    refuse_past_fp16_tolerance(report, "The INT8 model does not match the FP32 model",
                               "No bundle was written; export without --int8, or calibrate on more (and more "
                               "typical) frames with --calibration-images.")
    return report
