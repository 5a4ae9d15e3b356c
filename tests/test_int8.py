"""INT8 ONNX: what stays float, the gate against FP32 on real frames, the bundle it writes or refuses, the CLI flags."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch

from helpers import DEMO, REPO, trapcls
from trapcls.core.frames.discover import discover_images
from trapcls.core.frames.preprocess import PreprocessSpec, preprocess
from trapcls.core.model.build import create_model
from trapcls.core.model.bundle import load_bundle
from trapcls.core.model.checkpoint import load_checkpoint, save_checkpoint
from trapcls.core.model.probs import probabilities
from trapcls.core.system.exceptions import ExportError
from trapcls.core.system.fsutil import sha256_file
from trapcls.export.int8 import Int8Settings, float_node_names, int8_kernels, quantize_int8, shape_arithmetic
from trapcls.export.onnx import export_onnx
from trapcls.export.parity import FP16_MEAN_ABS_TOL, FP16_MIN_TOP1, fp16_agreement, sample_images
from trapcls.predict.backends import OnnxRuntimeBackend

# Real frames committed in the repository: two disjoint sets.
CALIBRATION = [f.path for f in discover_images([REPO / "tests" / "data" / "reconyx_burst", DEMO / "train"])]
VERIFICATION = [f.path for f in discover_images([DEMO / "frames"])] + sample_images()


def _scaled_head(tiny_run: Path, out: Path, scale: float) -> Path:
    """The tiny run's checkpoint with its classifier multiplied by `scale`: small logits quantize harmlessly,
    large ones turn the same INT8 rounding into large probability differences."""
    ckpt = load_checkpoint(tiny_run)
    model = create_model(ckpt["arch"], len(ckpt["classes"]))
    state = dict(ckpt["state_dict"])
    state["classifier.weight"] = state["classifier.weight"] * scale
    state["classifier.bias"] = state["classifier.bias"] * scale
    model.load_state_dict(state)
    save_checkpoint(out, model, arch=ckpt["arch"], classes=ckpt["classes"],
                    spec=PreprocessSpec.from_dict(ckpt["preprocess"]), epoch=1, metrics={}, config={})
    return out


@pytest.fixture(scope="module")
def int8_export(tiny_run, tmp_path_factory):
    """A tiny model whose INT8 version passes the gate (its probabilities stay within 1e-3), exported with --int8."""
    tmp = tmp_path_factory.mktemp("int8")
    checkpoint = _scaled_head(tiny_run, tmp / "best.pt", 0.25)
    fp32 = export_onnx(checkpoint, tmp / "fp32").bundle
    report = export_onnx(checkpoint, tmp / "int8", verify_images=VERIFICATION, int8=True,
                         calibration_images=CALIBRATION)
    return fp32, report


@pytest.fixture(scope="module")
def lite0_onnx(tmp_path_factory) -> Path:
    """A random-init tf_efficientnet_lite0 at 64 px: "same" padding computed from the input shape, 49 convs."""
    path = tmp_path_factory.mktemp("lite0") / "model.onnx"
    model = create_model("tf_efficientnet_lite0", 3).eval()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(model, (torch.zeros(2, 3, 64, 64),), str(path), input_names=["image"],
                          output_names=["logits"], dynamic_axes={"image": {0: "batch"}, "logits": {0: "batch"}},
                          opset_version=17, dynamo=False)
    return path


def _calibration_batch(size: int) -> np.ndarray:
    spec = PreprocessSpec(height=size, width=size, mean=(0.5,) * 3, std=(0.5,) * 3)
    return np.stack([preprocess(p, spec) for p in CALIBRATION[:8]])


def test_shape_arithmetic_and_the_float_groups_are_found(lite0_onnx):
    model = onnx.load(str(lite0_onnx))
    shapes = shape_arithmetic(model)
    by_name = {n.name: n for n in model.graph.node}
    assert {by_name[n].op_type for n in shapes} >= {"Shape", "Ceil", "Div", "Concat"}
    # The padding amounts are clipped at 0 there too; the ReLU6 Clips of the data path are not in it.
    assert not {by_name[n].op_type for n in shapes} & {"Conv", "Pad", "Gemm"}
    assert "/bn1/act/Clip" not in shapes and "/conv_stem/Clip" in shapes
    assert float_node_names(model, ()) == shapes
    stem = float_node_names(model, ("stem",)) - shapes
    assert stem == {"/conv_stem/Pad", "/conv_stem/Conv", "/bn1/act/Clip"}  # the conv with its Pad and activation
    head = float_node_names(model, ("head",)) - shapes
    assert head == {"/global_pool/pool/GlobalAveragePool", "/global_pool/flatten/Flatten", "/classifier/Gemm"}
    assert "/conv_head/Conv" in float_node_names(model, ("last_conv",))


@pytest.mark.slow
def test_a_float_conv_stays_float_when_onnx_runtime_optimises_the_graph(lite0_onnx, tmp_path):
    """Between a DequantizeLinear and a QuantizeLinear ONNX Runtime would quantize a float conv's weights itself
    (per tensor); keeping the stem's Pad and activation float too leaves it a real float conv."""
    convs = sum(n.op_type == "Conv" for n in onnx.load(str(lite0_onnx)).graph.node)
    batch = _calibration_batch(64)
    quantize_int8(lite0_onnx, tmp_path / "all.onnx", batch, Int8Settings(calibration="minmax", keep_float=()))
    info = quantize_int8(lite0_onnx, tmp_path / "stem.onnx", batch, Int8Settings(calibration="minmax"))
    assert int8_kernels(tmp_path / "all.onnx")["QLinearConv"] == convs == 49
    assert int8_kernels(tmp_path / "stem.onnx")["QLinearConv"] == convs - 1
    assert "/conv_stem/Conv" in info.float_nodes and info.calibration_frames == 8


def test_unknown_settings_list_the_valid_choices():
    with pytest.raises(ExportError, match="Invalid INT8 calibration method 'kl'. Use one of: minmax, percentile"):
        Int8Settings(calibration="kl")
    with pytest.raises(ExportError, match="keep-float group 'tail'"):
        Int8Settings(keep_float=("tail",))


def test_int8_bundle_passes_the_gate_records_it_and_predicts(int8_export):
    fp32, report = int8_export
    bundle = report.bundle
    export = bundle.manifest["export"]
    assert export["precision"] == "int8" and fp32.manifest["export"]["precision"] == "fp32"
    parity = export["int8_parity"]
    assert parity["images"] == len(VERIFICATION) and parity["mean_abs_diff"] == report.int8_parity.mean_abs_diff
    assert parity["mean_abs_tolerance"] == FP16_MEAN_ABS_TOL and parity["min_top1_agreement"] == FP16_MIN_TOP1
    assert 0 < parity["mean_abs_diff"] <= FP16_MEAN_ABS_TOL  # really quantized, and within the gate
    details = export["int8"]
    assert details["calibration_frames"] == len(CALIBRATION) and details["per_channel"] is True
    assert details["kernels"]["QLinearConv"] > 0  # ONNX Runtime runs integer convolutions
    assert any(n.op_type == "DequantizeLinear" for n in onnx.load(str(bundle.onnx_path)).graph.node)
    assert bundle.weights_path is not None  # the FP32 weights stay, for fine-tuning
    assert not [p for p in bundle.root.iterdir() if "int8" in p.name]

    batch = np.stack([preprocess(p, bundle.preprocess) for p in VERIFICATION])
    reference = probabilities(OnnxRuntimeBackend(fp32).logits(batch), fp32.temperature)
    quantized = probabilities(OnnxRuntimeBackend(load_bundle(bundle.root)).logits(batch), bundle.temperature)
    # What the gate guarantees, recomputed by its own rule: within the mean tolerance, and top-1 agreeing except
    # where the FP32 top two were a near-tie (this model's outputs are near-uniform: which of two classes 0.0004
    # apart wins depends on the CPU's kernels, e.g. AMX on a Xeon against AVX512 on an EPYC).
    again = fp16_agreement(reference, quantized, [p.name for p in VERIFICATION])
    assert again.mean_abs_diff <= FP16_MEAN_ABS_TOL
    assert again.top1_agreement_excusing_near_ties >= FP16_MIN_TOP1


def test_tensorrt_export_refuses_an_int8_bundle(int8_export):
    from trapcls.export.tensorrt import export_tensorrt

    with pytest.raises(ExportError, match="INT8 model .* Export one without --int8"):
        export_tensorrt(int8_export[1].bundle.root)


def test_calibration_frames_must_not_be_verification_frames(tiny_run, tmp_path):
    with pytest.raises(ExportError, match="10 of the 14 verification frames are also calibration frames"):
        export_onnx(tiny_run, tmp_path / "bundle", verify_images=VERIFICATION, int8=True,
                    calibration_images=CALIBRATION + VERIFICATION[:10])
    with pytest.raises(ExportError, match="needs calibration frames: pass --calibration-images"):
        export_onnx(tiny_run, tmp_path / "bundle", int8=True)
    with pytest.raises(ExportError, match="Choose --fp16 or --int8, not both"):
        export_onnx(tiny_run, tmp_path / "bundle", fp16=True, int8=True, calibration_images=CALIBRATION)
    assert not list(tmp_path.iterdir())


@pytest.mark.slow  # the CLI on real frames
def test_cli_refuses_a_model_int8_cannot_keep_and_leaves_the_old_bundle(tiny_run, tmp_path):
    # Logits 20 times larger: the same INT8 rounding moves the probabilities ~4e-3 on average, past 1e-3.
    checkpoint = _scaled_head(tiny_run, tmp_path / "best.pt", 20.0)
    out = tmp_path / "bundle"
    export_onnx(checkpoint, out)  # an FP32 bundle already there: a refused INT8 export must not touch it
    before = {p.name: sha256_file(p) for p in out.iterdir()}
    (tmp_path / "verify").mkdir()
    for frame in VERIFICATION:
        (tmp_path / "verify" / frame.name).write_bytes(frame.read_bytes())
    proc = trapcls("export", "onnx", checkpoint, "--out", out, "--int8", "--calibration-images",
                   REPO / "tests" / "data" / "reconyx_burst", "--verify-images", tmp_path / "verify", rc=1)
    assert "Traceback" not in proc.stderr
    message = proc.stderr.strip().splitlines()[-1]
    assert "The INT8 model does not match the FP32 model on 14 images: mean abs probability difference" in message
    assert "(tolerance 1e-03)" in message and "No bundle was written" in message
    assert {p.name: sha256_file(p) for p in out.iterdir()} == before
    assert json.loads((out / "bundle.json").read_text())["export"]["precision"] == "fp32"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["best.pt", "bundle", "verify"]  # no staging left over


@pytest.mark.parametrize("args, complaint", [
    (["--int8", "--fp16", "--calibration-images", "."], "choose one of --fp16 and --int8"),
    (["--int8"], "--int8 and --calibration-images go together"),
    (["--calibration-images", "."], "--int8 and --calibration-images go together"),
])
def test_cli_int8_usage_errors(tiny_run, tmp_path, args, complaint):
    proc = trapcls("export", "onnx", tiny_run, "--out", tmp_path / "bundle", *args, rc=2)
    assert complaint in " ".join(proc.stderr.replace("│", " ").split())  # rich boxes and wraps the message
    assert not (tmp_path / "bundle").exists()
