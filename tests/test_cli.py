"""The command line as a user runs it: help, usage errors, exit codes, and the end-to-end slice as real processes."""

from __future__ import annotations

import csv
import re
import subprocess
import sys

import pandas as pd
import pytest

from helpers import DEMO, make_bad_inputs, trapcls
from trapcls import __version__

COMMANDS = ["train", "oof", "predict", "merge", "watch", "status", "evaluate", "events", "convert", "adapt", "doctor",
            "export", "ensemble"]


def _listed(help_text: str) -> list[str]:
    """The commands a --help lists: the first word of each row of its Commands section (rich's box or click's
    plain list), not words that happen to be in the description."""
    section = help_text.split("Commands")[1].splitlines()[1:]
    return [m[1] for line in section if (m := re.match(r"(?:│ | {2})([a-z][a-z0-9-]*)(?: |$)", line))]


def test_version_and_help():
    assert trapcls("--version").stdout.strip() == f"trapcls {__version__}"
    assert _listed(trapcls("--help").stdout) == COMMANDS
    assert _listed(trapcls("export", "--help").stdout) == ["onnx", "tensorrt", "openvino"]
    assert _listed("Offline camera-trap image classifier: train, export, and classify\nCommands\n") == []


def test_bad_usage_exits_2():
    assert "Missing option '--out'" in trapcls("predict", DEMO / "frames", rc=2).stderr
    trapcls("predict", DEMO / "frames", "--bundle", "b", "--out", "x.csv", "--format", "xml", rc=2)
    trapcls("no-such-command", rc=2)


@pytest.mark.parametrize("args, valid", [
    (["train", "d", "--out", "o", "--optimizer", "adam"], "'adam' is not one of 'adamw', 'sgd'"),
    (["train", "d", "--out", "o", "--augment", "mixup"], "'mixup' is not one of 'trivial', 'randaugment', 'none'"),
    (["train", "d", "--out", "o", "--balance", "over"], "'over' is not one of 'none', 'sampler', 'loss'"),
    (["train", "d", "--out", "o", "--group-by", "camera"], "'camera' is not one of 'auto', 'site', 'folder', 'none'"),
    (["train", "d", "--out", "o", "--export", "onnx,trt"], "--export takes onnx, onnx,tensorrt or none; unknown: trt"),
    (["watch", "inbox", "--backend", "gpu"], "'gpu' is not one of 'auto', 'onnxruntime', 'torch', 'tensorrt'"),
    (["predict", "x", "--out", "o.csv", "--backend", "gpu"], "'gpu' is not one of 'auto', 'onnxruntime'"),
])
def test_a_value_outside_an_options_choices_exits_2_listing_the_valid_ones(args, valid, tmp_path, monkeypatch):
    """Parsed before anything starts (no data is read, no folder made): a usage error, exit 2."""
    from typer.testing import CliRunner

    from trapcls.cli import app

    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(app, args)
    text = " ".join(result.output.replace("│", " ").split())  # the error box wraps lines
    assert result.exit_code == 2, result.output
    assert f"Invalid value for '{args[-2]}'" in text and valid in text
    assert not any(tmp_path.iterdir())


def test_help_loads_no_numeric_or_model_library():
    """`trapcls --help` stays fast: the CLI imports only the config modules up front."""
    code = ("import sys; from trapcls.cli import app\n"
            "try:\n    app(['train', '--help'])\nexcept SystemExit:\n    pass\n"
            "print(sorted(m for m in ('numpy', 'PIL', 'torch', 'onnxruntime', 'onnx', 'timm') if m in sys.modules))")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert proc.stdout.strip().splitlines()[-1] == "[]"


@pytest.mark.slow
def test_explained_failures_exit_1_and_name_the_problem(tmp_path):
    proc = trapcls("predict", DEMO / "frames", "--bundle", tmp_path / "missing", "--out", tmp_path / "o.csv",
                   rc=1)
    assert proc.stderr.startswith("error: Bundle folder") and str(tmp_path / "missing") in proc.stderr
    assert "Traceback" not in proc.stderr
    assert "is not a folder" in trapcls("watch", tmp_path / "nope", "--bundle", tmp_path / "b", rc=1).stderr
    assert "No journal at" in trapcls("status", tmp_path, rc=1).stderr
    assert "does not exist" in trapcls("evaluate", tmp_path / "p.csv", "--labels", DEMO / "train", rc=1).stderr
    proc = trapcls("train", DEMO / "train", "--arch", "vit_tiny", "--out", tmp_path / "run", rc=2)
    assert "Invalid value for '--arch': 'vit_tiny' is not a timm ResNet or EfficientNet name" in proc.stderr


def test_unreadable_images_exit_0_unless_strict(tiny_run, tmp_path):
    make_bad_inputs(tmp_path / "in")
    args = ("predict", tmp_path / "in", "--bundle", tiny_run / "bundle", "--out", tmp_path / "o.csv",
            "--format", "submission")
    proc = trapcls(*args)
    assert "3 unreadable" in proc.stdout and "uniform distribution" in proc.stderr
    assert len(pd.read_csv(tmp_path / "o.csv")) == 5
    assert "already in" in trapcls(*args).stderr  # the same command again resumes: nothing left to do
    strict = trapcls(*args, "--strict", "--overwrite", rc=1)
    assert "3 unreadable" in strict.stdout  # the summary first, then the one error line
    assert strict.stderr.splitlines()[-1] == f"error: 3 images could not be read (--strict); their rows in " \
                                             f"{tmp_path / 'o.csv'} say why."
    assert "Traceback" not in strict.stderr


@pytest.mark.slow
def test_train_export_predict_on_ena24_from_the_cli(tmp_path, shared_data):
    """The end-to-end slice as real processes, as a user types it."""
    run = tmp_path / "run"
    trapcls("train", shared_data / "ena24_small" / "labels.csv", "--arch", "test_resnet", "--epochs", "1",
            "--img-size", "64", "--batch-size", "8", "--workers", "0", "--out", run, "--no-export", here=False)
    proc = trapcls("export", "onnx", run, "--out", tmp_path / "bundle",
                   "--verify-images", shared_data / "ena24_small", here=False)
    assert "top-1 agreement 100.0%" in proc.stdout
    out = tmp_path / "submission.csv"
    trapcls("predict", shared_data / "ena24_small", "--bundle", tmp_path / "bundle", "--out", out,
            "--format", "submission", here=False)
    labels = pd.read_csv(shared_data / "ena24_small" / "labels.csv")
    classes = sorted(labels["label"].unique())
    with open(out) as fh:
        assert next(csv.reader(fh)) == ["id", *classes]
    df = pd.read_csv(out, dtype={"id": str})
    assert sorted(df["id"]) == sorted(p.split(".")[0] for p in labels["filepath"])
    assert len(df) == 21


def test_console_script_is_installed_next_to_python():
    from pathlib import Path

    exe = Path(sys.executable).parent / "trapcls"
    assert exe.exists(), f"pip install should have put the trapcls script at {exe}"
    proc = subprocess.run([str(exe), "--version"], capture_output=True, text=True)
    assert proc.returncode == 0 and proc.stdout.strip() == f"trapcls {__version__}"
