"""FP16 ONNX: the converter's graph surgery, parity with FP32 on real frames, the bundle and the CLI flag."""

from __future__ import annotations

import json
import logging
import warnings

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from onnx import TensorProto, helper, numpy_helper

from helpers import DEMO, LITE0_WEIGHTS, trapcls
from trapcls.core.frames.discover import discover_images
from trapcls.core.frames.preprocess import PreprocessSpec, preprocess
from trapcls.core.model.build import create_model, preprocess_spec
from trapcls.core.model.bundle import load_bundle
from trapcls.core.model.checkpoint import load_checkpoint, save_checkpoint
from trapcls.core.model.probs import probabilities
from trapcls.core.system.exceptions import ExportError
from trapcls.export.fp16 import KEEP_FP32_OPS, check_fp16_parity, convert_to_fp16, precision_summary
from trapcls.export.onnx import export_onnx
from trapcls.export.parity import FP16_MEAN_ABS_TOL, FP16_MIN_TOP1
from trapcls.predict.backends import OnnxRuntimeBackend

FLOAT, HALF = TensorProto.FLOAT, TensorProto.FLOAT16


def _run(model: onnx.ModelProto, feeds: dict) -> list[np.ndarray]:
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return session.run(None, feeds)


def _types(model: onnx.ModelProto) -> dict[str, int]:
    graph = model.graph
    types = {t.name: t.data_type for t in graph.initializer}
    types.update({v.name: v.type.tensor_type.elem_type for v in (*graph.input, *graph.value_info, *graph.output)})
    return types


def _demo_frames():
    return [f.path for f in discover_images([DEMO / "frames"])]


def _handmade_model() -> onnx.ModelProto:
    """x -> MatMul -> Add -> Relu -> (- ReduceMean) -> Exp -> Mul(Constant) -> Softmax; `hidden` is an output too."""
    rng = np.random.default_rng(0)
    weight = numpy_helper.from_array(rng.standard_normal((16, 8)).astype(np.float32), "weight")
    bias = numpy_helper.from_array(rng.standard_normal(8).astype(np.float32), "bias")
    half_value = helper.make_tensor("half", FLOAT, [], [0.5])
    nodes = [
        helper.make_node("MatMul", ["x", "weight"], ["mm"]),
        helper.make_node("Add", ["mm", "bias"], ["hidden"]),
        helper.make_node("Relu", ["hidden"], ["relu"]),
        helper.make_node("ReduceMean", ["relu"], ["mean"], axes=[1], keepdims=1),
        helper.make_node("Sub", ["relu", "mean"], ["centred"]),
        helper.make_node("Exp", ["centred"], ["exp"]),
        helper.make_node("Constant", [], ["half_const"], value=half_value),
        helper.make_node("Mul", ["exp", "half_const"], ["scaled"]),
        helper.make_node("Softmax", ["scaled"], ["probs"], axis=1),
    ]
    graph = helper.make_graph(nodes, "handmade", [helper.make_tensor_value_info("x", FLOAT, ["n", 16])],
                              [helper.make_tensor_value_info("probs", FLOAT, ["n", 8]),
                               helper.make_tensor_value_info("hidden", FLOAT, ["n", 8])],
                              initializer=[weight, bias])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    onnx.checker.check_model(model, full_check=True)
    return model


def test_sensitive_ops_run_in_fp32_between_casts_and_io_stays_fp32():
    model = _handmade_model()
    half = convert_to_fp16(model)
    onnx.checker.check_model(half, full_check=True)
    assert half.opset_import[0].version == 17
    types = _types(half)
    assert [i.type.tensor_type.elem_type for i in (*half.graph.input, *half.graph.output)] == [FLOAT] * 3
    assert types["weight"] == types["bias"] == HALF
    constant = next(n for n in half.graph.node if n.op_type == "Constant")
    assert constant.attribute[0].t.data_type == HALF  # its only consumer (Mul) runs in FP16
    for node in half.graph.node:
        float_types = {types[name] for name in (*node.input, *node.output) if types.get(name) in (FLOAT, HALF)}
        if node.op_type in ("ReduceMean", "Exp", "Softmax"):
            assert float_types == {FLOAT}, node.op_type
        elif node.op_type in ("MatMul", "Add", "Relu", "Sub", "Mul"):
            assert float_types == {HALF}, node.op_type
    casts = [n for n in half.graph.node if n.op_type == "Cast"]
    # To FP16: x, mean, exp. To FP32: relu, centred, scaled (into the kept ops) and the output hidden.
    assert sorted(c.input[0] for c in casts if c.attribute[0].i == HALF) == ["exp", "mean", "x"]
    assert sorted(c.output[0] for c in casts if c.attribute[0].i == FLOAT) == ["centred_fp32", "hidden",
                                                                                "relu_fp32", "scaled_fp32"]

    x = np.random.default_rng(1).standard_normal((5, 16)).astype(np.float32)
    (probs32, hidden32), (probs16, hidden16) = _run(model, {"x": x}), _run(half, {"x": x})
    assert probs16.dtype == hidden16.dtype == np.float32
    assert np.abs(probs16 - probs32).max() < 1e-3
    np.testing.assert_allclose(hidden16, hidden32, rtol=1e-2, atol=1e-2)


def test_inputs_of_fixed_float32_type_stay_fp32_and_large_weights_are_clipped(caplog):
    # Resize's `scales` is always tensor(float), also when Resize itself runs in FP16.
    scales = numpy_helper.from_array(np.array([1, 1, 2, 2], dtype=np.float32), "scales")
    big = numpy_helper.from_array(np.array([1e6], dtype=np.float32), "big")
    nodes = [helper.make_node("Resize", ["x", "", "scales"], ["up"], mode="nearest"),
             helper.make_node("Mul", ["up", "big"], ["y"])]
    graph = helper.make_graph(nodes, "resize", [helper.make_tensor_value_info("x", FLOAT, [1, 1, 2, 2])],
                              [helper.make_tensor_value_info("y", FLOAT, [1, 1, 4, 4])], initializer=[scales, big])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    with caplog.at_level(logging.WARNING, logger="trapcls.export.fp16"):
        half = convert_to_fp16(model, keep_fp32=KEEP_FP32_OPS - {"Resize"})
    types = _types(half)
    assert types["scales"] == FLOAT and types["up"] == HALF and types["big"] == HALF
    assert "1 values of big lie outside" in caplog.text
    (y,) = _run(half, {"x": np.full((1, 1, 2, 2), 0.5, dtype=np.float32)})
    assert y.shape == (1, 1, 4, 4) and np.all(y == np.float32(0.5 * 65504))


def test_control_flow_is_refused():
    branch = helper.make_graph([helper.make_node("Identity", ["x"], ["z"])], "branch", [],
                               [helper.make_tensor_value_info("z", FLOAT, [1])])
    graph = helper.make_graph([helper.make_node("If", ["c"], ["y"], then_branch=branch, else_branch=branch)], "if",
                              [helper.make_tensor_value_info("c", TensorProto.BOOL, []),
                               helper.make_tensor_value_info("x", FLOAT, [1])],
                              [helper.make_tensor_value_info("y", FLOAT, [1])])
    with pytest.raises(ExportError, match="control flow"):
        convert_to_fp16(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]))


@pytest.mark.parametrize("arch", ["test_efficientnet", "test_resnet", "tf_efficientnet_lite0"])
def test_exported_timm_models_convert_to_half_the_size(arch, tmp_path):
    model = create_model(arch, 3).eval()
    path = tmp_path / "model.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(model, (torch.zeros(2, 3, 64, 64),), str(path), input_names=["image"],
                          output_names=["logits"], dynamic_axes={"image": {0: "batch"}, "logits": {0: "batch"}},
                          opset_version=17, dynamo=False)
    fp32 = onnx.load(str(path))
    half = convert_to_fp16(fp32)
    onnx.save(half, str(tmp_path / "half.onnx"))
    assert not precision_summary(fp32).is_fp16 and precision_summary(half).is_fp16
    with pytest.raises(ExportError, match="already FP16"):
        convert_to_fp16(half)
    types = _types(half)
    weights = [n.input[1] for n in half.graph.node if n.op_type in ("Conv", "Gemm")]
    assert weights and all(types[w] == HALF for w in weights)
    # tf_* models compute their "same" padding from the input shape: that arithmetic stays float32.
    assert all(types[n.input[0]] == FLOAT for n in half.graph.node if n.op_type == "Ceil")
    assert 0.45 < (tmp_path / "half.onnx").stat().st_size / path.stat().st_size < 0.55
    x = np.random.default_rng(0).standard_normal((3, 3, 64, 64)).astype(np.float32)
    for batch in (x, x[:1]):
        (logits,) = _run(half, {"image": batch})
        assert logits.dtype == np.float32 and logits.shape == (len(batch), 3) and np.isfinite(logits).all()


@pytest.mark.slow
def test_imagenet_lite0_in_fp16_matches_fp32_on_real_frames(tmp_path, shared_data):
    model = create_model("tf_efficientnet_lite0", 1000, weights=LITE0_WEIGHTS).eval()  # the ImageNet head
    save_checkpoint(tmp_path / "best.pt", model, arch="tf_efficientnet_lite0", classes=[f"c{i}" for i in range(1000)],
                    spec=preprocess_spec(model, 224), epoch=1, metrics={}, config={})
    frames = [f.path for f in discover_images([shared_data / "ena24_small", shared_data / "cct_sample" / "empty"])]
    frames = frames[:12] + _demo_frames()
    report = export_onnx(tmp_path / "best.pt", tmp_path / "fp16", verify_images=frames, fp16=True)
    p = report.fp16_parity
    size16 = report.bundle.onnx_path.stat().st_size
    size32 = report.bundle.weights_path.stat().st_size  # the FP32 state dict: as large as the FP32 ONNX model
    print(f"\nlite0 fp16 vs fp32 on {p.images} frames: max abs {p.max_abs_diff:.2e}, mean abs {p.mean_abs_diff:.2e}, "
          f"top-1 agreement {p.top1_agreement:.1%}; model.onnx {size16 / 1e6:.2f} MB, "
          f"FP32 weights {size32 / 1e6:.2f} MB")
    assert p.images == len(frames)
    assert p.mean_abs_diff <= FP16_MEAN_ABS_TOL and p.top1_agreement >= FP16_MIN_TOP1
    assert p.max_abs_diff > 0  # the weights really changed
    assert 0.45 < size16 / size32 < 0.55
    assert report.bundle.manifest["files"]["model.onnx"]["bytes"] == size16
    assert report.parity.max_abs_diff < 1e-4  # the FP32 graph was still checked against PyTorch


def test_fp16_bundle_predicts_like_the_fp32_bundle(tiny_run, tmp_path):
    fp32 = load_bundle(tiny_run / "bundle")
    report = export_onnx(tiny_run, tmp_path / "fp16", fp16=True)
    bundle = load_bundle(tmp_path / "fp16")
    export = bundle.manifest["export"]
    assert fp32.manifest["export"]["precision"] == "fp32" and export["precision"] == "fp16"
    assert export["fp16_parity"]["mean_abs_diff"] == report.fp16_parity.mean_abs_diff
    assert export["fp16_parity"]["mean_abs_tolerance"] == FP16_MEAN_ABS_TOL
    assert export["fp16_parity"]["min_top1_agreement"] == FP16_MIN_TOP1
    assert precision_summary(onnx.load(str(bundle.onnx_path))).is_fp16
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".fp16")]

    batch = np.stack([preprocess(p, bundle.preprocess) for p in _demo_frames()])
    reference = probabilities(OnnxRuntimeBackend(fp32).logits(batch), fp32.temperature)
    half = probabilities(OnnxRuntimeBackend(bundle).logits(batch), bundle.temperature)
    assert np.abs(half - reference).mean() <= FP16_MEAN_ABS_TOL
    assert np.array_equal(half.argmax(1), reference.argmax(1))


def test_parity_check_fails_when_the_fp16_model_differs(tiny_run, tmp_path):
    fp32_path = tiny_run / "bundle" / "model.onnx"
    half = convert_to_fp16(onnx.load(str(fp32_path)))
    bias = next(t for t in half.graph.initializer if t.name == "classifier.bias")
    values = numpy_helper.to_array(bias)
    shifted = values + np.arange(len(values), dtype=np.float16) * np.float16(0.3)
    bias.CopyFrom(numpy_helper.from_array(shifted, bias.name))
    onnx.save(half, str(tmp_path / "half.onnx"))
    spec = load_bundle(tiny_run / "bundle").preprocess
    with pytest.raises(ExportError, match="does not match the FP32 model .* bundle was not written"):
        check_fp16_parity(fp32_path, tmp_path / "half.onnx", _demo_frames(), spec)


def test_fp16_export_that_loses_precision_is_refused_and_writes_nothing(tiny_run, tmp_path):
    # Logits near 1000, where float16 steps by 0.5: the classes' offsets of 0.1-0.4 cannot survive.
    ckpt = load_checkpoint(tiny_run)
    model = create_model(ckpt["arch"], len(ckpt["classes"]))
    state = dict(ckpt["state_dict"])
    state["classifier.bias"] = 1000 + torch.arange(len(ckpt["classes"])) * 0.1
    model.load_state_dict(state)
    save_checkpoint(tmp_path / "best.pt", model, arch=ckpt["arch"], classes=ckpt["classes"],
                    spec=PreprocessSpec.from_dict(ckpt["preprocess"]), epoch=1, metrics={}, config={})
    with pytest.raises(ExportError, match="FP16 model does not match"):
        export_onnx(tmp_path / "best.pt", tmp_path / "bundle", fp16=True)
    assert not (tmp_path / "bundle").exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".bundle")]
    assert export_onnx(tmp_path / "best.pt", tmp_path / "bundle").bundle.manifest["export"]["precision"] == "fp32"


@pytest.mark.slow
def test_cli_export_fp16(tiny_run, tmp_path):
    out = tmp_path / "bundle"
    proc = trapcls("export", "onnx", tiny_run, "--out", out, "--fp16")
    assert "fp16 parity on 4 images: max abs probability difference" in proc.stdout
    assert "top-1 agreement 100.0%, 100.0% excusing near-ties (minimum 99%)" in proc.stdout
    assert json.loads((out / "bundle.json").read_text())["export"]["precision"] == "fp16"


def test_near_ties_may_flip_but_decisive_flips_and_large_differences_are_refused():
    from trapcls.export.parity import NEAR_TIE, fp16_agreement, refuse_past_fp16_tolerance

    reference = np.array([[0.500, 0.495, 0.005]] + [[0.8, 0.1, 0.1]] * 99)
    tie_flip = reference.copy()
    tie_flip[0] = [0.4975, 0.4975 + 1e-4, 0.005 - 1e-4]  # top-2 margin 0.005 <= NEAR_TIE: reordered by rounding
    report = fp16_agreement(reference, tie_flip, [f"f{i}" for i in range(100)])
    assert NEAR_TIE == 0.01 and report.top1_agreement == 0.99 and report.top1_agreement_excusing_near_ties == 1.0
    refuse_past_fp16_tolerance(report, "x", "y")  # within tolerance: no error
    decisive = reference.copy()
    decisive[1:3] = [0.1, 0.8, 0.1]  # two clear flips out of 100: 98% < 99%
    with pytest.raises(ExportError, match=r"top-1 agreement 98.0%, 98.0% excusing near-ties"):
        refuse_past_fp16_tolerance(fp16_agreement(reference, decisive, [f"f{i}" for i in range(100)]), "x", "y")
    shifted = reference + np.array([0.0012, -0.0012, 0.0])  # same top-1 everywhere, mean abs 8e-4: within 1e-3
    with pytest.raises(ExportError, match="mean abs probability difference 2.00e-03"):
        refuse_past_fp16_tolerance(fp16_agreement(reference, reference + np.array([0.003, -0.003, 0.0]),
                                                  [f"f{i}" for i in range(100)]), "x", "y")
    refuse_past_fp16_tolerance(fp16_agreement(reference, shifted, [f"f{i}" for i in range(100)]), "x", "y")


def test_on_the_cpu_an_fp16_bundle_runs_widened_to_fp32_in_memory_with_the_same_probabilities():
    """ONNX Runtime's CPU provider casts around every FP16 op; the backend widens the graph first (predict/upcast)."""
    from trapcls.core.model.bundle import default_bundle
    from trapcls.predict.upcast import widen_fp16

    bundle = load_bundle(default_bundle())
    assert bundle.manifest["export"]["precision"] == "fp16"
    model = onnx.load(str(bundle.onnx_path))
    assert widen_fp16(model) and not widen_fp16(model)  # a second pass finds nothing left to widen
    assert HALF not in _types(model).values() and not precision_summary(model).fp16_tensors
    assert not [n for n in model.graph.node for a in n.attribute if n.op_type == "Cast" and a.i == HALF]

    batch = np.stack([preprocess(p, bundle.preprocess) for p in _demo_frames()])
    as_stored = _run(onnx.load(str(bundle.onnx_path)), {"image": batch})[0]
    widened = OnnxRuntimeBackend(bundle).logits(batch)
    probs_stored, probs_widened = (probabilities(x, bundle.temperature) for x in (as_stored, widened))
    assert np.abs(probs_widened - probs_stored).mean() <= 1e-4
    assert np.array_equal(probs_widened.argmax(1), probs_stored.argmax(1))
    assert np.array_equal(widened, _run(model, {"image": batch})[0])  # the backend runs exactly the widened graph
