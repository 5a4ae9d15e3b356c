"""The bundle contract: a round trip through train/export, and each refusal of the loader."""

from __future__ import annotations

import json

import pytest

from trapcls.core.frames.preprocess import PreprocessSpec
from trapcls.core.model.bundle import FORMAT_VERSION, load_bundle
from trapcls.core.system.exceptions import BundleError


def _edit_manifest(bundle, **changes):
    path = bundle / "bundle.json"
    manifest = json.loads(path.read_text())
    manifest.update(changes)
    path.write_text(json.dumps(manifest))


def test_round_trip_holds_everything_inference_needs(tiny_run):
    bundle = load_bundle(tiny_run / "bundle")
    manifest = json.loads((tiny_run / "bundle" / "bundle.json").read_text())
    assert manifest["format_version"] == FORMAT_VERSION
    assert bundle.arch == "test_efficientnet"
    assert bundle.classes == ("baboon", "blank", "buffalo", "elephant", "warthog", "zebra")
    assert bundle.preprocess == PreprocessSpec(height=64, width=64, mean=(0.485, 0.456, 0.406),
                                               std=(0.229, 0.224, 0.225))
    assert bundle.temperature == manifest["calibration"]["temperature"] and manifest["calibration"]["fitted"] is True
    assert set(manifest["files"]) == {"model.onnx", "weights.safetensors"}
    assert bundle.weights_path is not None and bundle.weights_path.exists()
    assert {"val_loss", "val_accuracy", "val_log_loss"} <= set(bundle.metrics)
    assert manifest["trapcls_version"] and manifest["export"]["parity"]["images"] > 0
    assert load_bundle(tiny_run / "bundle" / "bundle.json").root == bundle.root  # the manifest path works too


def test_missing_manifest_is_refused(bundle_copy):
    (bundle_copy / "bundle.json").unlink()
    with pytest.raises(BundleError, match=r"bundle\.json is missing"):
        load_bundle(bundle_copy)


def test_missing_bundle_folder_is_refused(tmp_path):
    with pytest.raises(BundleError, match="does not exist"):
        load_bundle(tmp_path / "nope")


def test_missing_model_file_is_refused(bundle_copy):
    (bundle_copy / "model.onnx").unlink()
    with pytest.raises(BundleError, match=r"model\.onnx is missing"):
        load_bundle(bundle_copy)


def test_changed_file_fails_the_hash_check(bundle_copy):
    with open(bundle_copy / "weights.safetensors", "ab") as fh:
        fh.write(b"\0")
    with pytest.raises(BundleError, match=r"weights\.safetensors: sha256 mismatch"):
        load_bundle(bundle_copy)


def test_unknown_format_version_is_refused(bundle_copy):
    _edit_manifest(bundle_copy, format_version=99)
    with pytest.raises(BundleError, match="unknown format_version 99"):
        load_bundle(bundle_copy)


def test_class_count_must_match_the_model_output(bundle_copy):
    manifest = json.loads((bundle_copy / "bundle.json").read_text())
    _edit_manifest(bundle_copy, classes=manifest["classes"][:-1])
    with pytest.raises(BundleError, match="outputs 6 scores but .* lists 5 classes"):
        load_bundle(bundle_copy)


@pytest.mark.parametrize(("classes", "message"), [
    (["a", "a", "b", "c", "d", "e"], "duplicate class names"),
    (["path", "b", "c", "d", "e", "f"], "clash with CSV columns"),
    ([], "non-empty list"),
])
def test_bad_class_lists_are_refused(bundle_copy, classes, message):
    _edit_manifest(bundle_copy, classes=classes)
    with pytest.raises(BundleError, match=message):
        load_bundle(bundle_copy)


def test_invalid_json_and_bad_temperature_are_refused(bundle_copy):
    _edit_manifest(bundle_copy, calibration={"temperature": 0})
    with pytest.raises(BundleError, match="temperature must be a positive number"):
        load_bundle(bundle_copy)
    (bundle_copy / "bundle.json").write_text("{not json")
    with pytest.raises(BundleError, match="not valid JSON"):
        load_bundle(bundle_copy)


def test_corrupt_onnx_with_matching_hash_is_refused(bundle_copy):
    from trapcls.core.system.fsutil import sha256_file

    (bundle_copy / "model.onnx").write_bytes(b"garbage")
    manifest = json.loads((bundle_copy / "bundle.json").read_text())
    manifest["files"]["model.onnx"]["sha256"] = sha256_file(bundle_copy / "model.onnx")
    (bundle_copy / "bundle.json").write_text(json.dumps(manifest))
    with pytest.raises(BundleError, match="not a readable ONNX model"):
        load_bundle(bundle_copy)
