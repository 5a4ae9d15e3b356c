"""ONNX export: parity with PyTorch on real frames, dynamic batch, and refusals."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch

from helpers import DEMO, LITE0_WEIGHTS
from trapcls.core.frames.discover import discover_images
from trapcls.core.frames.preprocess import preprocess
from trapcls.core.model.build import create_model, preprocess_spec
from trapcls.core.model.bundle import load_bundle
from trapcls.core.model.checkpoint import load_checkpoint, save_checkpoint
from trapcls.core.model.probs import probabilities
from trapcls.core.system.exceptions import ExportError
from trapcls.export.onnx import MAX_ABS_TOL, check_parity, export_onnx
from trapcls.export.parity import sample_images
from trapcls.predict.backends import OnnxRuntimeBackend


def _real_frames(shared_data, limit=12):
    frames = discover_images([shared_data / "ena24_small", shared_data / "cct_sample" / "empty"])
    return [f.path for f in frames][:limit]


def test_packaged_sample_frames_exist():
    frames = sample_images()
    assert len(frames) >= 4 and all(f.stat().st_size > 10_000 for f in frames)


def test_lite0_export_matches_pytorch_on_real_frames(tmp_path, shared_data):
    model = create_model("tf_efficientnet_lite0", 5, weights=LITE0_WEIGHTS).eval()
    spec = preprocess_spec(model, 224)
    save_checkpoint(tmp_path / "best.pt", model, arch="tf_efficientnet_lite0", classes=list("abcde"), spec=spec,
                    epoch=1, metrics={}, config={})
    frames = _real_frames(shared_data)
    report = export_onnx(tmp_path / "best.pt", tmp_path / "bundle", verify_images=frames)
    assert report.parity.images == len(frames)
    assert report.parity.max_abs_diff <= MAX_ABS_TOL and report.parity.top1_agreement == 1.0

    # Independently of the export's own check: ONNX Runtime at batch sizes 1 and 7 vs PyTorch.
    backend = OnnxRuntimeBackend(load_bundle(tmp_path / "bundle"))
    batch = np.stack([preprocess(p, spec) for p in frames[:7]])
    with torch.no_grad():
        reference = torch.softmax(model(torch.from_numpy(batch)).double(), 1).numpy()
    np.testing.assert_allclose(probabilities(backend.logits(batch), 1.0), reference, atol=MAX_ABS_TOL)
    np.testing.assert_allclose(probabilities(backend.logits(batch[:1]), 1.0), reference[:1], atol=MAX_ABS_TOL)
    manifest = json.loads((tmp_path / "bundle" / "bundle.json").read_text())
    assert manifest["export"]["parity"]["max_abs_diff"] == report.parity.max_abs_diff


def test_parity_check_fails_when_the_model_differs(tiny_run):
    bundle = load_bundle(tiny_run / "bundle")
    ckpt = load_checkpoint(tiny_run)
    other = create_model("test_efficientnet", len(ckpt["classes"]))  # same shape, other weights
    state = dict(ckpt["state_dict"])
    state["classifier.bias"] = state["classifier.bias"] + torch.arange(len(ckpt["classes"])) * 0.01
    other.load_state_dict(state)
    with pytest.raises(ExportError, match="does not match PyTorch"):
        check_parity(other.eval(), bundle, sample_images())


def test_export_replaces_an_old_bundle_but_never_another_folder(tiny_run, tmp_path):
    out = tmp_path / "bundle"
    shutil.copytree(tiny_run / "bundle", out)
    (out / "stale.txt").write_text("old")
    export_onnx(tiny_run, out)
    assert not (out / "stale.txt").exists() and load_bundle(out).classes
    precious = tmp_path / "photos"
    precious.mkdir()
    (precious / "keep.jpg").write_bytes(b"x")
    with pytest.raises(ExportError, match="not a bundle folder"):
        export_onnx(tiny_run, precious)
    assert (precious / "keep.jpg").exists()


def test_export_without_readable_verification_images_fails_and_writes_nothing(tiny_run, tmp_path):
    bad = tmp_path / "bad.jpg"
    bad.write_text("not an image")
    with pytest.raises(ExportError, match="No readable verification images"):
        export_onnx(tiny_run, tmp_path / "bundle", verify_images=[bad])
    assert not (tmp_path / "bundle").exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".bundle")]


def test_demo_frames_parity_with_the_tiny_model(tiny_run):
    frames = [f.path for f in discover_images([DEMO / "frames"])]
    report = export_onnx(tiny_run, tiny_run.parent / "again", verify_images=frames)
    assert report.parity.images == len(frames) and report.parity.max_abs_diff <= MAX_ABS_TOL
