"""The default model shipped in the package: what it says it is, who wins over it, and that pip installs it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import zipfile

import pytest

from helpers import DEMO, REPO
from trapcls.core.model.bundle import BUNDLE_ENV, default_bundle, load_bundle, resolve_bundle
from trapcls.core.system.exceptions import BundleError


def test_the_shipped_bundle_loads_and_says_what_it_is():
    bundle = load_bundle(default_bundle())
    manifest = bundle.manifest
    assert bundle.arch == "tf_efficientnet_lite2" and "blank" in bundle.classes and len(bundle.classes) == 12
    assert bundle.model_id.startswith("trapcls-default v2 sha256:")
    assert "not a field-grade classifier" in manifest["about"] and "label_map.csv" in manifest["about"]
    assert manifest["export"]["precision"] == "fp16" and bundle.weights_path is None  # ONNX only, kept small
    held = manifest["held_out"]
    assert held["computed_by"].startswith("trapcls evaluate")
    shipped, previous, majority = held["shipped"], held["previous_default_v1"], held["majority_class"]
    for better, worse in ((shipped, previous), (shipped, majority)):  # it beats v1 and the baseline
        assert better["log_loss"] < worse["log_loss"] and better["balanced_accuracy"] > worse["balanced_accuracy"]
    # Its training class counts (for `trapcls adapt`) and its certified blank policy (README).
    assert bundle.class_counts is not None and sum(bundle.class_counts.values()) == 243
    policy = bundle.blank_policy
    assert policy["model"] == bundle.model_id and policy["certified_miss_bound"] <= policy["target_miss"] == 0.05
    assert bundle.blank_rule().threshold == policy["threshold"]
    assert (default_bundle() / "model.onnx").stat().st_size < 12 * 2**20


def test_bundle_choice_precedence(tmp_path, monkeypatch, tiny_run):
    monkeypatch.delenv(BUNDLE_ENV, raising=False)
    assert resolve_bundle(None)[0] == default_bundle()
    monkeypatch.setenv(BUNDLE_ENV, str(tiny_run / "bundle"))
    assert resolve_bundle(None) == (tiny_run / "bundle", f"${BUNDLE_ENV}")
    assert resolve_bundle(tmp_path / "mine") == (tmp_path / "mine", "--bundle")


def test_predict_without_bundle_uses_the_default_and_the_environment_overrides_it(tiny_run, tmp_path):
    env = {k: v for k, v in os.environ.items() if k != BUNDLE_ENV}
    out = tmp_path / "default.csv"
    proc = subprocess.run([sys.executable, "-m", "trapcls", "predict", str(DEMO / "frames"), "--out", str(out)],
                          capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "default model shipped with trapcls" in proc.stderr
    header = out.read_text().splitlines()[0].split(",")
    assert header[:5] == ["path", "captured", "label", "probability", "is_blank"]
    assert set(load_bundle(default_bundle()).classes) <= set(header)
    mine = tmp_path / "env.csv"
    proc = subprocess.run([sys.executable, "-m", "trapcls", "predict", str(DEMO / "frames"), "--out", str(mine)],
                          capture_output=True, text=True, env={**env, BUNDLE_ENV: str(tiny_run / "bundle")},
                          timeout=300, check=True)
    assert f"${BUNDLE_ENV}" in proc.stderr
    assert mine.read_text().splitlines()[0].split(",")[5:-3] == list(load_bundle(tiny_run / "bundle").classes)


def test_a_missing_default_is_a_clear_error(monkeypatch, tmp_path):
    import trapcls.core.model.bundle as bundle_module

    monkeypatch.delenv(BUNDLE_ENV, raising=False)
    monkeypatch.setattr(bundle_module, "default_bundle", lambda: tmp_path / "not-installed")
    with pytest.raises(BundleError, match="Pass --bundle"):
        resolve_bundle(None)


def test_the_wheel_carries_the_default_model(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w",
                           str(tmp_path), str(REPO)], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    wheel = next(tmp_path.glob("trapcls-*.whl"))
    with zipfile.ZipFile(wheel) as zf:
        names = set(zf.namelist())
        manifest = json.loads(zf.read("trapcls/default_bundle/bundle.json"))
        unpacked = sum(info.file_size for info in zf.infolist())
    assert {"trapcls/default_bundle/model.onnx", "trapcls/default_bundle/bundle.json"} <= names
    assert "about" in manifest
    print(f"\nwheel {wheel.name}: {wheel.stat().st_size / 2**20:.1f} MiB, {unpacked / 2**20:.1f} MiB installed")
    assert unpacked < 12 * 2**20
