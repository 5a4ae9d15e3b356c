"""FP16 ONNX (`trapcls export onnx --fp16`): half-precision weights and activations, verified against FP32.

`convert_to_fp16` turns an exported FP32 graph into an FP16 one that keeps float32 inputs and
outputs, so every backend feeds and reads it exactly as before; ONNX Runtime's CUDA provider
then runs it in half precision, and the file is half the size. Kept in FP32:
- the ops in KEEP_FP32_OPS (each group says why below); their float inputs are cast to FP32 and
  their outputs back to FP16;
- shape arithmetic: nodes computing on tensor shapes (`Shape` -> Cast -> Div/Ceil -> ...), as
  timm's "same" padding in tf_* models does. Their values are pixel counts, and FP16 holds
  integers exactly only up to 2048, so a padding amount could silently change;
- inputs an op's schema requires in float32 (Resize's `scales`), and ops from other domains.

`check_fp16_parity` runs both models on ONNX Runtime's CPU provider on real frames and refuses
the FP16 model past FP16_MEAN_ABS_TOL / FP16_MIN_TOP1 (trapcls.export.parity). The CPU provider has no FP16 kernels
for most ops: it runs them in FP32 on the FP16-rounded weights and input, leaving out FP16
activation rounding. That rounding is the smaller part: on ImageNet EfficientNet-Lite0 and 361
real frames, PyTorch in FP16 differed from FP32 by 8.2e-6 mean abs probability against 7.9e-6 here.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from trapcls.core.frames.preprocess import PreprocessSpec
from trapcls.core.system.exceptions import ExportError
from trapcls.export.parity import ParityReport, onnx_agreement, refuse_past_fp16_tolerance

if TYPE_CHECKING:
    import onnx

log = logging.getLogger(__name__)

FP16_MAX = 65504.0  # the largest finite float16

KEEP_FP32_OPS: frozenset[str] = frozenset({
    # Exponentials and logarithms: exp(x) passes 65504 at x = 11.1; log of an FP16 value that
    # underflowed to zero is -inf; a softmax also normalises by a sum over all classes.
    "Exp", "Log", "Pow", "Softmax", "LogSoftmax", "Softplus",
    # Reciprocals, roots and division: 1/x overflows FP16 for |x| < 1.5e-5, and these ops mostly
    # sit inside normalisation maths on variances.
    "Reciprocal", "Sqrt", "Div",
    # Reductions accumulate many values: sums overflow, and an FP16 accumulator (10-bit mantissa)
    # stops growing once the total is ~2000 times the next term. Squeeze-and-excitation's
    # ReduceMean is the one these CNNs contain.
    "ReduceMean", "ReduceSum", "ReduceSumSquare", "ReduceProd", "ReduceL1", "ReduceL2", "ReduceLogSum",
    "ReduceLogSumExp", "CumSum",
    # Normalisation layers that were not folded into a Conv: mean/variance statistics.
    "BatchNormalization", "InstanceNormalization", "LayerNormalization", "GroupNormalization",
    "LpNormalization", "MeanVarianceNormalization",
    # Coordinates and indices: integers above 2048 are not exact in FP16.
    "Resize", "Upsample", "Range", "GridSample", "RoiAlign", "TopK", "NonMaxSuppression",
})

# Ops whose output type comes from an attribute this converter does not rewrite: left in FP32.
_TYPE_FROM_ATTRIBUTE = frozenset({"EyeLike", "RandomNormal", "RandomNormalLike", "RandomUniform",
                                  "RandomUniformLike", "Multinomial", "Bernoulli"})
# Ops that accept any input type: their inputs are taken as they come, never cast.
_ANY_INPUT = frozenset({"Cast", "Shape", "Size"})
_SHAPE_OPS = frozenset({"Shape", "Size"})
_FP16_TYPE = "tensor(float16)"


@dataclass(frozen=True)
class PrecisionSummary:
    """How many stored float tensors (initializers and Constant nodes) are FP16 and FP32, and their values."""

    fp16_tensors: int
    fp32_tensors: int
    fp16_values: int
    fp32_values: int

    @property
    def is_fp16(self) -> bool:
        """Whether most stored float values are FP16, i.e. the model went through `convert_to_fp16`."""
        return self.fp16_values > self.fp32_values


def precision_summary(model: onnx.ModelProto) -> PrecisionSummary:
    """Count the FP16 and FP32 weights and constants of `model`."""
    from onnx import TensorProto

    tensors = list(model.graph.initializer)
    tensors += [a.t for n in model.graph.node if n.op_type == "Constant" for a in n.attribute if a.name == "value"]
    counts = {TensorProto.FLOAT16: [0, 0], TensorProto.FLOAT: [0, 0]}
    for tensor in tensors:
        if tensor.data_type in counts:
            counts[tensor.data_type][0] += 1
            counts[tensor.data_type][1] += int(np.prod(tensor.dims, dtype=np.int64))
    (h_n, h_v), (f_n, f_v) = counts[TensorProto.FLOAT16], counts[TensorProto.FLOAT]
    return PrecisionSummary(fp16_tensors=h_n, fp32_tensors=f_n, fp16_values=h_v, fp32_values=f_v)


def convert_to_fp16(model: onnx.ModelProto, *, keep_fp32: frozenset[str] = KEEP_FP32_OPS) -> onnx.ModelProto:
    """A copy of `model` computing in FP16 except for `keep_fp32` ops and shape arithmetic; float32 I/O kept."""
    import onnx

    out = onnx.ModelProto()
    out.CopyFrom(model)
    graph = out.graph
    _refuse_subgraphs(graph)
    opset = next((o.version for o in out.opset_import if o.domain in ("", "ai.onnx")), None)
    if opset is None:
        raise ExportError("The ONNX model imports no ai.onnx opset; it is not a model `trapcls export onnx` wrote.")
    if precision_summary(model).is_fp16:
        raise ExportError("The ONNX model is already FP16; convert the FP32 model instead.")
    types = _tensor_types(model)
    graph_inputs = {i.name for i in graph.input}
    initializers = {t.name: t for t in graph.initializer if t.name not in graph_inputs}
    nodes = list(graph.node)
    wants, gives = _node_types(nodes, types, set(initializers), opset, keep_fp32)
    dtype = _retype_constants(graph, nodes, types=types, initializers=initializers, wants=wants, gives=gives)
    rebuilt = _insert_casts(graph, nodes, types, wants, dtype)
    del graph.node[:]
    graph.node.extend(rebuilt)
    del graph.value_info[:]  # the old intermediate types are stale; inferred again below

    try:
        out = onnx.shape_inference.infer_shapes(out, check_type=True, strict_mode=True)
        onnx.checker.check_model(out, full_check=True)
    except (onnx.checker.ValidationError, onnx.shape_inference.InferenceError) as exc:
        raise ExportError(f"The FP16 conversion produced an invalid ONNX model ({exc}); "
                          "export without --fp16.") from exc
    summary = precision_summary(out)
    log.info("fp16: %d tensors (%d values) in FP16, %d (%d values) left in FP32", summary.fp16_tensors,
             summary.fp16_values, summary.fp32_tensors, summary.fp32_values)
    return out


def _node_types(nodes: list[onnx.NodeProto], types: dict[str, int], static: set[str], opset: int,
                keep_fp32: frozenset[str]) -> tuple[list[list[int | None]], list[list[int | None]]]:
    """Step 1, per node: the type each float input must have (None: any) and the type of each float output."""
    from onnx import TensorProto

    half, single = TensorProto.FLOAT16, TensorProto.FLOAT
    shape_like: set[str] = set()
    wants: list[list[int | None]] = []
    gives: list[list[int | None]] = []
    for node in nodes:
        inputs = [name for name in node.input if name]
        derived = any(n in shape_like for n in inputs) and all(n in shape_like or n in static for n in inputs)
        if node.op_type in _SHAPE_OPS or derived:
            shape_like.update(node.output)
        elif all(n in static for n in inputs):
            static.update(node.output)  # Constant nodes and constant subgraphs
        in_float = [types.get(name) == single for name in node.input]
        out_float = [types.get(name) == single for name in node.output]
        slots = _fp16_slots(node, opset, in_float, out_float)
        if derived or node.op_type in keep_fp32 or node.op_type in _TYPE_FROM_ATTRIBUTE or slots is None:
            slots = [False] * len(in_float), [False] * len(out_float)
        wants.append([None if not f or node.op_type in _ANY_INPUT else half if ok else single
                      for f, ok in zip(in_float, slots[0])])
        gives.append([None if not f else half if ok else single for f, ok in zip(out_float, slots[1])])
    return wants, gives


def _retype_constants(graph: onnx.GraphProto, nodes: list[onnx.NodeProto], *, types: dict[str, int],
                      initializers: dict[str, onnx.TensorProto], wants: list[list[int | None]],
                      gives: list[list[int | None]]) -> dict[str, int]:
    """Step 2: weights and constants become FP16 when every consumer wants FP16, else stay FP32 (an FP16
    consumer of a shared FP32 constant gets a Cast, which rounds it the same way). Returns every tensor's type."""
    from onnx import TensorProto

    half, single = TensorProto.FLOAT16, TensorProto.FLOAT
    dtype: dict[str, int] = {i.name: types[i.name] for i in graph.input if i.name in types}
    consumers: dict[str, set[int | None]] = {}
    for node, want in zip(nodes, wants):
        for name, w in zip(node.input, want):
            if w is not None:
                consumers.setdefault(name, set()).add(w)
    for output in graph.output:
        consumers.setdefault(output.name, set()).add(single)
    for name, tensor in initializers.items():
        dtype[name] = half if tensor.data_type == single and consumers.get(name) == {half} else tensor.data_type
        if dtype[name] == half:
            tensor.CopyFrom(_to_fp16_tensor(tensor, name))
    for node, give in zip(nodes, gives):
        if node.op_type == "Constant" and give and give[0] is not None:
            give[0] = half if consumers.get(node.output[0]) == {half} else single
        for name, g in zip(node.output, give):
            dtype[name] = g if g is not None else types.get(name)
        _retype_attributes(node, give)
    return dtype


def _insert_casts(graph: onnx.GraphProto, nodes: list[onnx.NodeProto], types: dict[str, int],
                  wants: list[list[int | None]], dtype: dict[str, int]) -> list[onnx.NodeProto]:
    """Step 3: the nodes with a Cast wherever a tensor's type differs from what its consumer wants,
    and the graph outputs cast back to FP32."""
    from onnx import TensorProto, helper

    half, single = TensorProto.FLOAT16, TensorProto.FLOAT
    names = set(types) | {n for node in nodes for n in (*node.input, *node.output)}
    casts: dict[tuple[str, int], str] = {}
    rebuilt = []
    for node, want in zip(nodes, wants):
        for i, w in enumerate(want):
            name = node.input[i]
            if w is None or dtype.get(name) == w:
                continue
            if (name, w) not in casts:
                casts[name, w] = _unique(f"{name}_{'fp16' if w == half else 'fp32'}", names)
                rebuilt.append(helper.make_node("Cast", [name], [casts[name, w]], to=w,
                                                name=_unique(f"{casts[name, w]}_cast", names)))
            node.input[i] = casts[name, w]
        rebuilt.append(node)
    for output in graph.output:
        if dtype.get(output.name) == half:
            inner = _unique(f"{output.name}_fp16", names)
            for node in rebuilt:
                for field in (node.input, node.output):
                    for i, name in enumerate(field):
                        if name == output.name:
                            field[i] = inner
            rebuilt.append(helper.make_node("Cast", [inner], [output.name], to=single,
                                            name=_unique(f"{output.name}_cast", names)))
    return rebuilt


def check_fp16_parity(fp32_path: Path, fp16_path: Path, images: list[Path], spec: PreprocessSpec) -> ParityReport:
    """FP16 against FP32 probabilities on ONNX Runtime's CPU provider; raise ExportError past tolerance."""
    report = onnx_agreement(fp32_path, fp16_path, images, spec)
    refuse_past_fp16_tolerance(report, "The FP16 model does not match the FP32 model",
                               "The bundle was not written; export without --fp16.")
    return report


def _refuse_subgraphs(graph: onnx.GraphProto) -> None:
    from onnx import AttributeProto

    for node in graph.node:
        if any(a.type in (AttributeProto.GRAPH, AttributeProto.GRAPHS) for a in node.attribute):
            raise ExportError(f"FP16 conversion does not handle control flow ({node.op_type} node {node.name!r} has a "
                              "subgraph); export without --fp16.")


def _tensor_types(model: onnx.ModelProto) -> dict[str, int]:
    """The element type of every tensor in `model`, from ONNX shape inference."""
    import onnx

    try:
        inferred = onnx.shape_inference.infer_shapes(model, strict_mode=True)
    except onnx.shape_inference.InferenceError as exc:
        raise ExportError(f"ONNX shape inference failed on the FP32 model ({exc}); export without --fp16.") from exc
    graph = inferred.graph
    types = {t.name: t.data_type for t in graph.initializer}
    for info in (*graph.input, *graph.value_info, *graph.output):
        if info.type.HasField("tensor_type"):
            types[info.name] = info.type.tensor_type.elem_type
    missing = [name for node in graph.node for name in node.output if name and not types.get(name)]
    if missing:
        raise ExportError(f"ONNX shape inference left the type of {', '.join(missing[:3])} unknown, so the graph "
                          "cannot be converted to FP16; export without --fp16.")
    return types


def _fp16_slots(node: onnx.NodeProto, opset: int, in_float: list[bool],
                out_float: list[bool]) -> tuple[list[bool], list[bool]] | None:
    """Which float inputs and outputs of `node` may become float16; None when the op has no FP16 form.

    A float tensor bound to a type variable that allows float16 may; one with a fixed type
    (Resize's `scales` is always tensor(float)) stays float32.
    """
    import onnx

    if node.domain not in ("", "ai.onnx"):
        return None
    try:
        schema = onnx.defs.get_schema(node.op_type, opset, "")
    except onnx.defs.SchemaError:
        return None
    allowed = {c.type_param_str: set(c.allowed_type_strs) for c in schema.type_constraints}
    variadic = onnx.defs.OpSchema.FormalParameterOption.Variadic

    def slots(formals: list[Any], floats: list[bool]) -> list[bool] | None:
        result = []
        for i, is_float in enumerate(floats):
            if i < len(formals):
                formal = formals[i]
            else:  # past the end: only a variadic last parameter takes more
                formal = formals[-1] if formals and formals[-1].option == variadic else None
            if not is_float or formal is None or formal.type_str not in allowed:
                result.append(False)
            elif _FP16_TYPE in allowed[formal.type_str]:
                result.append(True)
            else:
                return None
        return result

    inputs, outputs = slots(schema.inputs, in_float), slots(schema.outputs, out_float)
    return None if inputs is None or outputs is None else (inputs, outputs)


def _retype_attributes(node: onnx.NodeProto, give: list[int | None]) -> None:
    """Make the attributes that fix an output's type agree with an FP16 output."""
    from onnx import TensorProto, helper

    if not give or give[0] != TensorProto.FLOAT16:
        return
    if node.op_type == "Cast":
        next(a for a in node.attribute if a.name == "to").i = TensorProto.FLOAT16
    elif node.op_type in ("Constant", "ConstantOfShape"):
        for attribute in list(node.attribute):
            if attribute.name in ("value", "value_float", "value_floats"):
                if attribute.name == "value":
                    tensor = _to_fp16_tensor(attribute.t, attribute.t.name)
                else:  # a scalar or list given as plain floats
                    values = np.asarray(helper.get_attribute_value(attribute), dtype=np.float32)
                    plain = helper.make_tensor("", TensorProto.FLOAT, values.shape, values.ravel())
                    tensor = _to_fp16_tensor(plain, "")
                node.attribute.remove(attribute)
                node.attribute.append(helper.make_attribute("value", tensor))
        if node.op_type == "ConstantOfShape" and not any(a.name == "value" for a in node.attribute):
            # Without a value ConstantOfShape makes float32 zeros; say float16 explicitly.
            zero = helper.make_tensor("", TensorProto.FLOAT16, [1], [0])
            node.attribute.append(helper.make_attribute("value", zero))


def _to_fp16_tensor(tensor: onnx.TensorProto, name: str) -> onnx.TensorProto:
    """`tensor` as float16, with values beyond the FP16 range clipped to +-65504 (and a warning)."""
    from onnx import numpy_helper

    values = numpy_helper.to_array(tensor)
    outside = int(np.count_nonzero(np.abs(values) > FP16_MAX))
    if outside:
        log.warning("fp16: %d values of %s lie outside +-%g and were clipped", outside, name or "a constant", FP16_MAX)
        values = np.clip(values, -FP16_MAX, FP16_MAX)
    return numpy_helper.from_array(values.astype(np.float16), name)


def _unique(base: str, taken: set[str]) -> str:
    name, i = base, 1
    while name in taken:
        name, i = f"{base}_{i}", i + 1
    taken.add(name)
    return name
