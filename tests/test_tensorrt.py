"""TensorRT engines: metadata, every refusal before loading, FP16 evidence, doctor, and the engine path itself.

TensorRT is not installed on any machine the developers have (its PyPI packages download from
NVIDIA's own index), so the tests that build and run an engine skip with that reason; all the
checks around the engine run everywhere, on a real bundle with a recorded metadata file.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import shutil
from pathlib import Path
from types import SimpleNamespace

import pytest

from helpers import FRAMES, trapcls
from trapcls.core.model.bundle import ONNX_FILE, load_bundle
from trapcls.core.model.engines import (
    EngineMeta,
    engine_name,
    engine_problems,
    find_engine,
    read_metadata,
    rebuild_command,
    record_engine,
    write_metadata,
)
from trapcls.core.model.profile import Profile
from trapcls.core.system.exceptions import BundleError, ExportError, MissingDependencyError, OptionError
from trapcls.core.system.fsutil import sha256_file
from trapcls.core.system.hardware import Gpu
from trapcls.export.tensorrt import BUILDER_FLAG, STRONGLY_TYPED, fp16_mode, precision_evidence, tensor_precision

DATA = Path(__file__).parent / "data"
ORIN = Gpu(name="Orin", compute_capability="8.7", sm_count=8, source="recorded")
TRT_HERE = importlib.util.find_spec("tensorrt") is not None
NO_TRT = "TensorRT is not installed here (no machine available to the developers has it; PyPI's tensorrt " \
         "downloads from NVIDIA's index)"


@pytest.fixture()
def orin_bundle(bundle_copy):
    """The tiny bundle with the recorded Orin engine metadata and stand-in engine bytes, recorded in bundle.json."""
    bundle = load_bundle(bundle_copy)
    recorded = json.loads((DATA / "engine-orin-nano-trt10.3.json").read_text())
    engine = bundle.root / recorded["engine_file"]
    engine.parent.mkdir()
    engine.write_bytes(b"serialized engine bytes as built on the Jetson" * 100)
    recorded.update(engine_sha256=sha256_file(engine), engine_bytes=engine.stat().st_size,
                    onnx_sha256=bundle.manifest["files"][ONNX_FILE]["sha256"])
    meta = EngineMeta(**recorded)
    write_metadata(meta, bundle.root)
    record_engine(bundle, meta)
    return load_bundle(bundle.root), meta


def _problems(bundle, meta, *, version="10.3.0", gpu=ORIN, name=None):
    return engine_problems(bundle, name or meta.engine_file, meta, tensorrt_version=version, gpu=gpu)


def test_recorded_engine_matches_its_own_device_and_round_trips(orin_bundle):
    bundle, meta = orin_bundle
    assert read_metadata(bundle.root / "engines" / "orin-sm87-trt10.3.0-fp16.json") == meta
    assert bundle.manifest["engines"][meta.engine_file]["sha256"] == meta.engine_sha256
    assert _problems(bundle, meta) == []
    match = find_engine(bundle, tensorrt_version="10.3.0", gpu=ORIN)
    assert match.engine == bundle.root / meta.engine_file and match.meta == meta


@pytest.mark.parametrize("case, expected", [
    ("other GPU", "it was built on a Orin, this GPU is a NVIDIA GeForce RTX 4090"),
    ("other compute capability", "compute capability 8.7, this GPU has 8.9"),
    ("other SM count", "built for 8 SMs, this GPU has 16"),
    ("other TensorRT", "built with TensorRT 10.3.0, this machine has 10.13.3"),
    ("no TensorRT", "TensorRT is not installed here"),
    ("no GPU", "no CUDA GPU is visible here"),
])
def test_each_device_mismatch_is_refused_with_the_rebuild_command(orin_bundle, case, expected):
    bundle, meta = orin_bundle
    version, gpu = "10.3.0", ORIN
    if case == "other GPU":
        gpu = Gpu("NVIDIA GeForce RTX 4090", "8.7", 8, "recorded")
    elif case == "other compute capability":
        gpu = dataclasses.replace(ORIN, compute_capability="8.9")
    elif case == "other SM count":
        gpu = dataclasses.replace(ORIN, sm_count=16)
    elif case == "other TensorRT":
        version = "10.13.3"
    elif case == "no TensorRT":
        version = None
    elif case == "no GPU":
        gpu = None
    problems = _problems(bundle, meta, version=version, gpu=gpu)
    assert len(problems) == 1 and expected in problems[0]
    match = find_engine(bundle, tensorrt_version=version, gpu=gpu)
    assert match.engine is None
    message = match.explain(bundle)
    assert expected in message
    # The exact command, with the profile the engine was built with.
    assert f"trapcls export tensorrt {bundle.root} --min-batch 1 --opt-batch 4 --max-batch 8 --workspace 1024" \
        in message


def test_a_changed_onnx_a_changed_engine_and_an_unrecorded_engine_are_refused(orin_bundle, tmp_path):
    bundle, meta = orin_bundle
    engine = bundle.root / meta.engine_file
    # The ONNX the engine was built from is not the bundle's any more (a re-export).
    stale = dataclasses.replace(meta, onnx_sha256="0" * 64)
    assert any(f"another {ONNX_FILE}" in p for p in _problems(bundle, stale))
    # The engine's bytes changed after it was recorded.
    original = engine.read_bytes()
    engine.write_bytes(original[:-1] + b"!")
    assert any("does not match the sha256 recorded" in p for p in _problems(bundle, meta))
    engine.write_bytes(original)
    # An engine copied into a bundle that never recorded it (e.g. from another bundle).
    manifest = json.loads((bundle.root / "bundle.json").read_text())
    del manifest["engines"]
    other = tmp_path / "other"
    shutil.copytree(bundle.root, other)
    (other / "bundle.json").write_text(json.dumps(manifest))
    problems = _problems(load_bundle(other), meta)
    assert any("engines are only loaded from the bundle that built them" in p for p in problems)
    # A recorded path that points out of the bundle.
    assert "outside the bundle" in _problems(bundle, meta, name="../elsewhere.engine")[0]
    # An engine whose FP16 was never confirmed is not run as one.
    unconfirmed = dataclasses.replace(meta, precision_evidence={**meta.precision_evidence, "fp16_confirmed": False})
    assert any("not confirmed as FP16" in p for p in _problems(bundle, unconfirmed))


def test_missing_or_broken_metadata_is_a_reason_not_a_crash(orin_bundle):
    bundle, meta = orin_bundle
    path = bundle.root / "engines" / "orin-sm87-trt10.3.0-fp16.json"
    path.write_text("{not json")
    match = find_engine(bundle, tensorrt_version="10.3.0", gpu=ORIN)
    assert match.engine is None and "not valid JSON" in match.rejected[meta.engine_file][0]
    path.unlink()
    with pytest.raises(BundleError, match="is missing"):
        read_metadata(path)
    path.write_text(json.dumps({"metadata_version": 1, "engine_file": "x"}))
    with pytest.raises(BundleError, match="incomplete"):
        read_metadata(path)


def test_predict_without_tensorrt_falls_back_and_says_why(orin_bundle, tmp_path):
    from trapcls.predict.backends import choose_backend

    bundle, _ = orin_bundle
    if TRT_HERE:
        pytest.skip("tensorrt is installed here; this checks the fallback on machines without it")
    choice = choose_backend("auto", bundle)
    assert choice.name == "onnxruntime" and "tensorrt: tensorrt is not installed" in choice.reason
    proc = trapcls("predict", FRAMES, "--bundle", bundle.root, "--out", tmp_path / "p.csv", "--backend", "tensorrt",
                   rc=1, timeout=120)
    assert "TensorRT's Python bindings" in proc.stderr
    assert not (tmp_path / "p.csv").exists()


def test_fp16_mode_follows_the_tensorrt_version():
    assert fp16_mode("10.3.0") == BUILDER_FLAG  # JetPack 6
    assert fp16_mode("10.11.0.33") == BUILDER_FLAG
    assert fp16_mode("10.12.0.36") == STRONGLY_TYPED  # weak typing deprecated
    assert fp16_mode("10.13.3") == STRONGLY_TYPED
    assert fp16_mode("11.0.0") == STRONGLY_TYPED  # BuilderFlag.FP16 removed
    with pytest.raises(ExportError, match="too old"):
        fp16_mode("8.6.1")  # JetPack 5
    with pytest.raises(ExportError, match="Cannot read"):
        fp16_mode("dev")


def test_fp16_is_confirmed_from_layer_types_or_size_and_an_fp32_engine_is_not_called_fp16():
    assert tensor_precision("Channel major FP16 format where channel % 8 == 0") == "fp16"
    assert tensor_precision("Half") == "fp16" and tensor_precision("Float") == "fp32"
    assert tensor_precision("Row major linear FP32") == "fp32"
    assert tensor_precision("Thirty-two wide channel vectorized row major Int8 format.") == "int8"
    assert tensor_precision("N/A due to dynamic shapes") == "unknown"
    fp16 = precision_evidence((DATA / "inspector-fp16-layers.json").read_text(), engine_bytes=10, fp32_weight_bytes=20)
    assert fp16["fp16_confirmed"] and fp16["method"] == "layer data types"
    assert fp16["compute_layers"]["fp16"] == 4 and fp16["compute_layers"]["fp32"] == 0  # reformats do not count
    fp32 = precision_evidence((DATA / "inspector-fp32-layers.json").read_text(), engine_bytes=10, fp32_weight_bytes=20)
    assert not fp32["fp16_confirmed"] and fp32["compute_layers"]["fp32"] == 4
    # Without layer detail the engine's size decides: FP16 weights are half the bytes.
    assert precision_evidence(None, engine_bytes=5_200_000, fp32_weight_bytes=10_000_000)["fp16_confirmed"]
    assert not precision_evidence(None, engine_bytes=10_400_000, fp32_weight_bytes=10_000_000)["fp16_confirmed"]


def test_profile_and_names():
    assert engine_name(Gpu("NVIDIA GeForce RTX 4090", "8.9", 128, "torch"), "10.13.3") == \
        "nvidia-geforce-rtx-4090-sm89-trt10.13.3-fp16.engine"
    with pytest.raises(OptionError, match="opt_batch: must be at least min_batch"):
        Profile(min_batch=4, opt_batch=2, max_batch=8)
    with pytest.raises(OptionError, match="workspace_mib"):
        Profile(workspace_mib=8)
    spaced = SimpleNamespace(root=Path("/field station/bundle"))  # a path that needs quoting in a shell
    assert rebuild_command(spaced) == ("trapcls export tensorrt '/field station/bundle' --min-batch 1 --opt-batch 8 "
                                       "--max-batch 16 --workspace 1024")


def test_export_tensorrt_without_tensorrt_says_how_to_get_it(bundle_copy):
    if TRT_HERE:
        pytest.skip("tensorrt is installed here")
    with pytest.raises(MissingDependencyError, match=r"trapcls\[tensorrt\]"):
        from trapcls.export.tensorrt import export_tensorrt

        export_tensorrt(bundle_copy)
    proc = trapcls("export", "tensorrt", bundle_copy, "--opt-batch", "4", "--max-batch", "4", rc=1, timeout=120)
    assert "tensorrt" in proc.stderr and not (bundle_copy / "engines").exists()


@pytest.mark.slow
def test_doctor_reports_this_machine_and_the_bundle_engines(orin_bundle):
    bundle, meta = orin_bundle
    out = trapcls("doctor", "--bundle", bundle.root, timeout=120).stdout
    import onnxruntime

    for needle in ("trapcls:", "python:", f"onnxruntime:      {onnxruntime.__version__}, providers",
                   "CPUExecutionProvider", "torch:", "tensorrt:", "gpu:", f"engine {meta.engine_file}:",
                   "predict --backend auto would use:"):
        assert needle in out, (needle, out)
    if not TRT_HERE:
        assert "tensorrt:         not installed" in out
        assert "does not match: TensorRT is not installed here" in out
        assert "would use: onnxruntime" in out
    report = json.loads(trapcls("doctor", "--bundle", bundle.root, "--json", timeout=120).stdout)
    assert report["bundle"]["classes"] == len(bundle.classes) and meta.engine_file in report["bundle"]["engines"]
    print(out)


# The engine path itself: runs only where TensorRT and a GPU are present.

@pytest.mark.skipif(not TRT_HERE, reason=NO_TRT)
def test_engine_builds_as_fp16_verifies_and_predicts(bundle_copy, tmp_path):
    from trapcls.core.system.hardware import gpu_info
    from trapcls.predict.backends import choose_backend, create_backend

    if gpu_info() is None:
        pytest.skip("TensorRT is installed but no CUDA GPU is visible")
    from trapcls.export.tensorrt import export_tensorrt

    result = export_tensorrt(bundle_copy, Profile(min_batch=1, opt_batch=4, max_batch=8, workspace_mib=512))
    assert result.meta.precision == "fp16" and result.meta.precision_evidence["fp16_confirmed"]
    assert result.meta.verification["top1_agreement"] >= 0.99
    bundle = load_bundle(bundle_copy)
    assert choose_backend("auto", bundle).name == "tensorrt"
    backend = create_backend("tensorrt", bundle)
    import numpy as np

    batch = np.random.default_rng(0).standard_normal((11, 3, 64, 64)).astype(np.float32)  # > max batch: chunked
    assert backend.logits(batch).shape == (11, len(bundle.classes))
