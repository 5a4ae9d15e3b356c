"""The openvino backend and its bf16 gate: the record rules, a model bf16 must pass and one it must fail, auto, doctor.

The record rules (which check applies to which CPU, OpenVINO and model.onnx) run everywhere: they
are plain data in bundle.json. Everything that runs OpenVINO skips where it does not import (it
does in CI: the dev extra installs it), and the bf16 runs skip on a CPU whose OpenVINO offers no
bf16, saying so. The model bf16 must fail is built here: two convolutions whose weights differ by
2^-10, below bf16's resolution at 1.0 (2^-7), whose difference, amplified, is the logit; in FP32 it
carries the image's brightness, in bf16 both weights round to 1.0 and the signal is gone.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from helpers import trapcls
from trapcls.core.frames.preprocess import PreprocessSpec, preprocess
from trapcls.core.model.bundle import MANIFEST, ONNX_FILE, load_bundle, write_manifest
from trapcls.core.model.openvino_checks import (
    CHECKS_KEY,
    PrecisionCheck,
    check_problems,
    choose_precision,
    find_check,
    record_checks,
)
from trapcls.core.model.probs import probabilities
from trapcls.core.system.exceptions import BundleError
from trapcls.core.system.hardware import Cpu, cpu_info, gpu_present, openvino_version
from trapcls.export.parity import FP16_MEAN_ABS_TOL

REPO = Path(__file__).resolve().parents[1]
FRAMES = sorted((REPO / "trapcls" / "samples").glob("*.jpg")) + sorted((REPO / "tests" / "data" /
                                                                         "reconyx_burst").glob("*.JPG"))
OV_HERE = importlib.util.find_spec("openvino") is not None
needs_openvino = pytest.mark.skipif(not OV_HERE, reason="openvino is not installed (pip install 'trapcls[openvino]'; "
                                                       "the dev extra brings it)")
SAPPHIRE = Cpu(name="Intel(R) Xeon(R) Platinum 8480+ (GenuineIntel family 6 model 143)",
               flags=frozenset({"avx512f", "avx512_bf16", "amx_bf16", "amx_tile"}))
DELTA = 2.0 ** -10  # below bf16's spacing at 1.0 (2^-7), far above float32's (2^-23)


def erasing_model():
    """Logits = 2/DELTA * mean over the frame of (conv(x, 1) - conv(x, 1 +- DELTA)): bf16 rounds both weights to 1.

    Two separate convolutions and a Sub, not one convolution with the difference of the weights:
    nothing in the graph lets a compiler fold the two into one before the weights are rounded.
    """
    from onnx import TensorProto, helper, numpy_helper

    ones = np.ones((2, 3, 1, 1), np.float32)
    shifted = ones.copy()
    shifted[0] += DELTA
    shifted[1] -= DELTA
    weights = [numpy_helper.from_array(ones, "w_a"), numpy_helper.from_array(shifted, "w_b"),
               numpy_helper.from_array(np.array(2.0 / DELTA, np.float32), "gain")]
    nodes = [helper.make_node("Conv", ["image", "w_a"], ["a"]), helper.make_node("Conv", ["image", "w_b"], ["b"]),
             helper.make_node("Sub", ["a", "b"], ["difference"]),
             helper.make_node("GlobalAveragePool", ["difference"], ["pooled"]),
             helper.make_node("Flatten", ["pooled"], ["flat"]), helper.make_node("Mul", ["flat", "gain"], ["logits"])]
    graph = helper.make_graph(nodes, "bf16-eraser",
                              [helper.make_tensor_value_info("image", TensorProto.FLOAT, ["batch", 3, 32, 32])],
                              [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", 2])], weights)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


@pytest.fixture()
def eraser(tmp_path) -> Path:
    """A bundle around erasing_model (32x32 input, classes darker/brighter)."""
    import onnx

    root = tmp_path / "eraser"
    root.mkdir()
    onnx.save(erasing_model(), str(root / ONNX_FILE))
    write_manifest(root, arch="bf16-eraser", classes=["darker", "brighter"],
                   preprocess=PreprocessSpec(height=32, width=32, mean=(0.5,) * 3, std=(0.5,) * 3))
    return root


@pytest.fixture()
def tiny_bundle(tiny_run, tmp_path) -> Path:
    return Path(shutil.copytree(tiny_run / "bundle", tmp_path / "tiny"))


def _check(bundle, precision="bf16", passed=True, cpu=SAPPHIRE, version="2026.4.1", **changes) -> PrecisionCheck:
    check = PrecisionCheck(precision=precision, passed=passed, summary="mean abs probability difference 2.0e-05",
                           cpu=cpu.name, isa=cpu.isa(), openvino_version=version,
                           onnx_sha256=bundle.manifest["files"][ONNX_FILE]["sha256"],
                           checked_at="2026-12-02T01:00:00+00:00", trapcls_version="0.1.0")
    return dataclasses.replace(check, **changes)


def _choose(bundle, cpu=SAPPHIRE, version="2026.4.1", bf16_supported=True):
    return choose_precision(load_bundle(bundle.root), cpu=cpu, openvino_version=version, bf16_supported=bf16_supported)


# --- the record rules (no OpenVINO needed) ------------------------------------------------------------------


def test_a_passing_bf16_record_for_this_cpu_openvino_and_model_selects_bf16(eraser):
    bundle = load_bundle(eraser)
    record_checks(bundle, [_check(bundle, "f32"), _check(bundle, "bf16")])
    stored = json.loads((eraser / MANIFEST).read_text())[CHECKS_KEY]
    assert [r["precision"] for r in stored] == ["f32", "bf16"] and stored[1]["isa"] == {"avx512_bf16": True,
                                                                                          "amx_bf16": True}
    choice = _choose(bundle)
    assert (choice.precision, choice.verified) == ("bf16", True)
    assert "bf16 verified on this CPU 2026-12-02" in choice.reason
    load_bundle(eraser)  # the bundle stays valid: only bundle.json's checks changed


@pytest.mark.parametrize("here, version, sha, expected", [
    (dataclasses.replace(SAPPHIRE, name="AMD EPYC 9654 (AuthenticAMD family 25 model 17)"), "2026.4.1", None,
     "it ran on a Intel(R) Xeon(R) Platinum 8480+ (GenuineIntel family 6 model 143), this CPU is a AMD EPYC"),
    (dataclasses.replace(SAPPHIRE, flags=frozenset({"avx512_bf16"})), "2026.4.1", None,
     "it ran on a CPU with avx512_bf16 amx_bf16, this one has avx512_bf16"),
    (SAPPHIRE, "2025.1.0", None, "it ran on OpenVINO 2026.4.1, this machine has 2025.1.0"),
    (SAPPHIRE, None, None, "OpenVINO is not installed here"),
    (SAPPHIRE, "2026.4.1", "f" * 64, "it checked another model.onnx (sha256 ffffffffffff…"),
])
def test_a_record_from_another_cpu_openvino_or_model_is_refused_with_the_reason(eraser, here, version, sha, expected):
    bundle = load_bundle(eraser)
    record_checks(bundle, [_check(bundle, "f32", **({"onnx_sha256": sha} if sha else {})),
                           _check(bundle, "bf16", **({"onnx_sha256": sha} if sha else {}))])
    bundle = load_bundle(eraser)
    match = find_check(bundle, "bf16", cpu=here, openvino_version=version)
    assert match.check is None and len(match.rejected) == 1 and expected in match.rejected[0]
    choice = _choose(bundle, cpu=here, version=version)
    assert choice.precision == "f32" and not choice.verified
    assert choice.reason.startswith("bf16 not verified on this CPU (") and expected in choice.reason
    assert choice.reason.endswith(f"f32 not verified either: run trapcls export openvino {eraser}")


def test_refused_unsupported_and_missing_bf16_each_run_f32_and_say_why(eraser):
    bundle = load_bundle(eraser)
    choice = _choose(bundle)
    assert choice == choice.__class__("f32", "bf16 not verified on this CPU; f32 not verified either: run trapcls "
                                             f"export openvino {eraser}", False)
    refusal = "OpenVINO bf16 against ONNX Runtime FP32 on 14 images: mean abs probability difference 2.6e-01"
    record_checks(bundle, [_check(bundle, "f32"), _check(bundle, "bf16", passed=False, summary=refusal)])
    choice = _choose(bundle)
    assert choice.precision == "f32" and choice.verified
    assert choice.reason == f"bf16 refused on this CPU (2026-12-02): {refusal}; f32 verified 2026-12-02"
    plain = Cpu(name=SAPPHIRE.name, flags=frozenset({"avx2"}))
    choice = _choose(bundle, cpu=plain, bf16_supported=False)
    assert choice.precision == "f32" and choice.reason.startswith("this CPU has no bf16 support (none of "
                                                                  "avx512_bf16/amx_bf16)")


def test_a_failed_f32_check_refuses_the_backend_and_records_replace_only_their_own_target(eraser):
    bundle = load_bundle(eraser)
    other_cpu = dataclasses.replace(SAPPHIRE, name="Intel(R) Xeon(R) Gold 6438Y+")
    record_checks(bundle, [_check(bundle, "f32", cpu=other_cpu), _check(bundle, "f32", passed=False)])
    with pytest.raises(BundleError, match="OpenVINO f32 disagrees with ONNX Runtime .* use --backend onnxruntime"):
        _choose(bundle)
    manifest = json.loads((eraser / MANIFEST).read_text())
    manifest[CHECKS_KEY].append({"record_version": 99, "from": "a newer trapcls"})
    (eraser / MANIFEST).write_text(json.dumps(manifest))
    bundle = load_bundle(eraser)
    record_checks(bundle, [_check(bundle, "f32", checked_at="2026-12-03T00:00:00+00:00")])  # checked again here
    stored = json.loads((eraser / MANIFEST).read_text())[CHECKS_KEY]
    assert [(r.get("cpu"), r.get("passed"), r.get("record_version")) for r in stored] == [
        (other_cpu.name, True, 1), (None, None, 99), (SAPPHIRE.name, True, 1)]
    assert _choose(bundle).reason.endswith("f32 verified 2026-12-03")
    assert "record 2: unknown record (record_version 99)" in find_check(load_bundle(eraser), "bf16", cpu=SAPPHIRE,
                                                                         openvino_version="2026.4.1").rejected


def test_cpu_flags_come_from_proc_cpuinfo():
    cpu = cpu_info()
    if not os.path.exists("/proc/cpuinfo"):
        assert cpu.flags is None and cpu.isa() == {}
        return
    text = Path("/proc/cpuinfo").read_text()
    listed = next(line for line in text.splitlines() if line.startswith(("flags", "Features"))).split(":", 1)[1]
    assert cpu.flags == frozenset(listed.split())
    assert set(cpu.isa()) == {"avx512_bf16", "amx_bf16"}
    assert cpu.isa()["amx_bf16"] == ("amx_bf16" in listed.split())
    assert check_problems(_check(load_bundle(REPO / "trapcls" / "default_bundle"), cpu=cpu),
                          load_bundle(REPO / "trapcls" / "default_bundle"), cpu=cpu, openvino_version="2026.4.1") == []


# --- OpenVINO itself ----------------------------------------------------------------------------------------


def _bf16_here() -> bool:
    import openvino as ov

    from trapcls.predict.openvino import bf16_supported

    return bf16_supported(ov.Core())


def _probs(bundle_dir: Path, backend: str) -> np.ndarray:
    from trapcls.predict.backends import create_backend

    bundle = load_bundle(bundle_dir)
    batch = np.stack([preprocess(f, bundle.preprocess) for f in FRAMES])
    return probabilities(create_backend(backend, bundle, threads=1).logits(batch), bundle.temperature)


@needs_openvino
def test_without_a_record_openvino_runs_f32_explicitly_and_auto_keeps_onnxruntime(eraser):
    """The CPU plugin's own default is bf16 on an AMX CPU; unrequested, the eraser's signal would vanish."""
    from trapcls.predict.backends import choose_backend, create_backend

    backend = create_backend("openvino", load_bundle(eraser), threads=1)
    assert backend.precision == "f32" and backend.note.startswith("f32: bf16 not verified on this CPU")
    reference = _probs(eraser, "onnxruntime")
    assert np.abs(reference - 0.5).max() > 0.3  # the frames' brightness is in the FP32 logits...
    np.testing.assert_allclose(_probs(eraser, "openvino"), reference, atol=1e-4)  # ...and in openvino's
    if not gpu_present():
        choice = choose_backend("auto", load_bundle(eraser))
        assert choice.name == "onnxruntime"
        assert f"openvino: no OpenVINO check recorded in the bundle: run trapcls export openvino {eraser}" \
            in choice.reason
        record_checks(load_bundle(eraser), [_check(load_bundle(eraser), "bf16", cpu=SAPPHIRE)])  # another CPU's
        choice = choose_backend("auto", load_bundle(eraser))
        assert choice.name == "onnxruntime" and "openvino: bf16 not verified on this CPU (the bf16 check of " \
            "2026-12-02: it ran on a Intel(R) Xeon(R) Platinum 8480+" in choice.reason


@needs_openvino
def test_a_model_bf16_erases_is_refused_and_predict_says_so_and_runs_f32(eraser, tmp_path):
    if not _bf16_here():
        pytest.skip("OpenVINO offers no bf16 on this CPU (no AMX / AVX512-BF16): nothing to refuse")
    proc = trapcls("export", "openvino", eraser, "--verify-images", FRAMES[0].parent)  # the 4 shipped frames
    assert "f32: passed" in proc.stdout and "bf16: refused: OpenVINO bf16 against ONNX Runtime FP32" in proc.stdout
    assert "predict --backend openvino will run f32 here" in proc.stdout and "checked on only 4 frames" in proc.stderr
    records = {r["precision"]: r for r in load_bundle(eraser).manifest[CHECKS_KEY]}
    bf16 = records["bf16"]["verification"]
    assert not records["bf16"]["passed"] and records["f32"]["passed"]
    assert bf16["mean_abs_diff"] > 100 * FP16_MEAN_ABS_TOL and bf16["tolerances"]["mean_abs_diff"] == FP16_MEAN_ABS_TOL
    assert records["bf16"]["cpu"] == cpu_info().name and records["bf16"]["isa"] == cpu_info().isa()
    out = tmp_path / "eraser.csv"
    proc = trapcls("predict", *FRAMES, "--bundle", eraser, "--out", out, "--backend", "openvino")
    assert "backend: openvino on cpu (requested)" in proc.stderr
    assert "precision: f32: bf16 refused on this CPU (" in proc.stderr
    assert "mean abs probability difference" in proc.stderr
    rows = pd.read_csv(out)
    assert len(rows) == len(FRAMES) and set(rows["status"]) == {"ok"}
    reference = _probs(eraser, "onnxruntime")
    by_name = {Path(p).name: row for p, row in zip(rows["path"], rows[["darker", "brighter"]].to_numpy())}
    got = np.stack([by_name[f.name] for f in FRAMES])
    np.testing.assert_allclose(got, reference, atol=1e-4)  # f32: the signal bf16 erased is all there


@pytest.mark.slow  # the CLI on real frames
@needs_openvino
def test_a_model_bf16_keeps_passes_then_predict_auto_and_doctor_use_bf16(tiny_bundle, tmp_path):
    from trapcls.export.openvino import export_openvino
    from trapcls.predict.backends import choose_backend

    result = export_openvino(tiny_bundle, verify_images=FRAMES)
    checks = {c.precision: c for c in result.checks}
    assert checks["f32"].passed and checks["f32"].verification["images"] == len(FRAMES)
    if not _bf16_here():
        assert not checks["bf16"].passed and "no bf16 support" in checks["bf16"].summary
        pytest.skip("OpenVINO offers no bf16 on this CPU: the f32 record was checked, bf16 cannot run here")
    assert checks["bf16"].passed and checks["bf16"].verification["mean_abs_diff"] <= FP16_MEAN_ABS_TOL
    assert checks["bf16"].verification["max_abs_diff"] > 0  # bf16 really ran: not bit-equal to FP32
    if not gpu_present():
        choice = choose_backend("auto", load_bundle(tiny_bundle))
        assert choice.name == "openvino" and "openvino" not in choice.reason
    out = tmp_path / "tiny.csv"
    proc = trapcls("predict", *FRAMES, "--bundle", tiny_bundle, "--out", out, "--backend", "openvino",
                   "--format", "submission")
    assert "precision: bf16: bf16 verified on this CPU" in proc.stderr
    got = pd.read_csv(out).set_index("id")
    reference = _probs(tiny_bundle, "onnxruntime")
    classes = list(load_bundle(tiny_bundle).classes)
    got = got.loc[[f.stem for f in FRAMES], classes].to_numpy()
    assert np.abs(got - reference).mean() <= FP16_MEAN_ABS_TOL
    assert np.array_equal(got.argmax(1), reference.argmax(1))
    doctor = trapcls("doctor", "--bundle", tiny_bundle).stdout
    for needle in ("cpu_isa:          avx512_bf16 ", f"openvino:         {openvino_version()}, CPU plugin offers ",
                   "BF16", "openvino check: f32 passed", "openvino check: bf16 passed",
                   "predict --backend openvino would run: bf16 (bf16 verified"):
        assert needle in doctor, (needle, doctor)
    if not gpu_present():
        assert "predict --backend auto would use: openvino in bf16" in doctor
    report = json.loads(trapcls("doctor", "--bundle", tiny_bundle, "--json").stdout)
    assert report["cpu_isa"] == (cpu_info().isa(("avx512_bf16", "amx_bf16", "avx512_vnni", "avx_vnni", "amx_int8"))
                                 or None)
    assert report["bundle"]["openvino_precision"].startswith("bf16 (")
    assert len(report["bundle"]["openvino_checks"]) == 2


@pytest.mark.slow
@needs_openvino
def test_the_shipped_model_gets_a_record_and_predict_follows_it(tmp_path):
    """The default bundle (FP16-stored ONNX, which OpenVINO runs in f32 or bf16 alike): whatever the verdict on this
    CPU (on the developers' AMX Xeon bf16 is refused: 5.8e-3 mean abs difference on 64 frames), predict follows it."""
    from trapcls.export.openvino import export_openvino
    from trapcls.predict.backends import create_backend

    bundle_dir = Path(shutil.copytree(REPO / "trapcls" / "default_bundle", tmp_path / "default"))
    checks = {c.precision: c for c in export_openvino(bundle_dir, verify_images=FRAMES).checks}
    assert checks["f32"].passed and checks["f32"].verification["mean_abs_diff"] <= FP16_MEAN_ABS_TOL
    backend = create_backend("openvino", load_bundle(bundle_dir))
    assert backend.precision == ("bf16" if checks["bf16"].passed else "f32")
    if backend.precision == "f32":
        assert np.abs(_probs(bundle_dir, "openvino") - _probs(bundle_dir, "onnxruntime")).mean() <= FP16_MEAN_ABS_TOL


@needs_openvino
def test_export_openvino_on_a_read_only_bundle_says_copy_it_in_one_line(tmp_path):
    bundle = Path(shutil.copytree(REPO / "trapcls" / "default_bundle", tmp_path / "installed"))
    before = (bundle / MANIFEST).read_bytes()
    if os.geteuid() != 0:
        bundle.chmod(0o555)
    else:  # root writes through permissions: make the folder a read-only mount, as an installed package can be
        mounted = subprocess.run(["mount", "--bind", str(bundle), str(bundle)], capture_output=True, text=True)
        if mounted.returncode:
            pytest.skip(f"cannot bind-mount a read-only folder here: {mounted.stderr.strip()}")
    try:
        if os.geteuid() == 0:
            subprocess.run(["mount", "-o", "remount,bind,ro", str(bundle)], check=True, capture_output=True)
        proc = trapcls("export", "openvino", bundle, rc=None)
    finally:
        if os.geteuid() == 0:
            subprocess.run(["umount", str(bundle)], capture_output=True)
        bundle.chmod(0o755)
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    assert proc.stderr.startswith(f"error: Cannot write {bundle}") and "copy the bundle (cp -r" in proc.stderr
    assert (bundle / MANIFEST).read_bytes() == before


def test_the_cli_offers_openvino_and_a_missing_bundle_is_one_line(tmp_path):
    from trapcls.predict.backends import AUTO_ORDER, BACKENDS

    assert "openvino" in BACKENDS and AUTO_ORDER.index("openvino") == AUTO_ORDER.index("onnxruntime") - 1
    proc = trapcls("export", "openvino", tmp_path / "nope", rc=None)
    assert proc.returncode == 1 and proc.stderr.startswith("error: ") and "Traceback" not in proc.stderr


@pytest.mark.slow  # the CLI on real frames
def test_export_openvino_never_changes_the_model_shipped_inside_trapcls_and_says_copy_it():
    shipped = REPO / "trapcls" / "default_bundle"
    before = (shipped / MANIFEST).read_bytes()
    proc = trapcls("export", "openvino", shipped, rc=None)
    assert proc.returncode == 1 and "Traceback" not in proc.stderr, proc.stderr
    assert "shipped inside trapcls" in proc.stderr and "cp -r" in proc.stderr
    assert (shipped / MANIFEST).read_bytes() == before
    # and doctor, which reports on it by default, suggests the same copy
    doctor = trapcls("doctor").stdout
    assert f"bundle:           {shipped}" in doctor or str(shipped) in doctor
    assert "&& trapcls export openvino my-bundle" in doctor


FIRST_CALLS_TOGETHER = """
import sys, threading
import numpy as np
from trapcls.core.model.bundle import load_bundle
from trapcls.predict.openvino import OpenVinoBackend

bundle, threads = load_bundle(sys.argv[1]), 8
backend = OpenVinoBackend(bundle, threads=threads, precision="f32")
batch = np.zeros((8, 3, bundle.preprocess.height, bundle.preprocess.width), np.float32)
start = threading.Barrier(threads)

def first_call():
    start.wait()
    backend.logits(batch)

workers = [threading.Thread(target=first_call) for _ in range(threads)]
[w.start() for w in workers]
[w.join() for w in workers]
"""


@pytest.mark.slow  # twenty fresh processes
@needs_openvino
def test_threads_making_their_first_call_together_never_hang(eraser):
    """OpenVINO's bindings deadlocked when threads made their first call at once (2 to 4 of 15 processes hung here
    before the backend made one call alone first); a hang shows as a timeout."""
    for _ in range(20):
        proc = subprocess.run([sys.executable, "-c", FIRST_CALLS_TOGETHER, str(eraser)], capture_output=True,
                              text=True, timeout=30)
        assert proc.returncode == 0, proc.stderr
