"""predict as a long job: resume after SIGKILL and Ctrl-C, torn lines, shards, TTA, backends, odd inputs."""

from __future__ import annotations

import dataclasses
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from helpers import DEMO, make_input_zoo, noise_image, trapcls, write_jpeg
from trapcls.core.frames.preprocess import preprocess
from trapcls.core.model.bundle import load_bundle
from trapcls.core.model.probs import probabilities
from trapcls.core.system.exceptions import DataError, OptionError
from trapcls.core.table.layout import Layout
from trapcls.predict.backends import BACKENDS, choose_backend, create_backend
from trapcls.predict.config import BACKEND_NAMES, FORMATS
from trapcls.predict.runner import PredictConfig, run_predict


def _many_frames(folder: Path, count: int) -> Path:
    """`count` real frames (hard links to the demo frames) in a few camera folders."""
    frames = sorted((DEMO / "frames").glob("*.jpg"))
    for i in range(count):
        target = folder / f"cam{i % 4}" / f"IMG_{i:05d}.jpg"
        target.parent.mkdir(parents=True, exist_ok=True)
        os.link(frames[i % len(frames)], target)
    return folder


def _cli(*args) -> list[str]:
    """A predict command line to start with Popen: these tests signal and kill the process while it runs."""
    return [sys.executable, "-m", "trapcls", "predict", *map(str, args)]


@pytest.fixture(scope="module")
def job(tiny_run, tmp_path_factory):
    """600 frames and the CSV of one uninterrupted run over them."""
    root = tmp_path_factory.mktemp("job")
    images = _many_frames(root / "in", 600)
    reference = root / "reference.csv"
    trapcls("predict", images, "--bundle", tiny_run / "bundle", "--out", reference)
    return images, reference


def _rows(path: Path) -> int:
    return path.read_bytes().count(b"\n") - 1 if path.exists() else 0


def _default_sigint() -> None:
    # A shell starts background jobs with SIGINT ignored, and Python keeps an ignored SIGINT ignored;
    # the child gets the default (KeyboardInterrupt) however the suite itself was started.
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def _interrupt(args: list[str], out: Path, sig: int, after_rows: int) -> subprocess.Popen:
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, preexec_fn=_default_sigint)
    deadline = time.monotonic() + 120
    while _rows(out) < after_rows and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.005)
    proc.send_signal(sig)
    proc.communicate(timeout=120)
    return proc


@pytest.mark.slow
def test_resume_after_sigkill_gives_every_file_exactly_once(tiny_run, job, tmp_path):
    images, reference = job
    out = tmp_path / "out.csv"
    args = _cli(images, "--bundle", tiny_run / "bundle", "--out", out, "--batch-size", "2")
    for cycle in range(3):  # killed three times at growing depths, then left to finish
        proc = _interrupt(args, out, signal.SIGKILL, after_rows=50 + 150 * cycle)
        assert proc.returncode == -signal.SIGKILL, "the run finished before it could be killed"
        assert 0 < _rows(out) < 600
    done = trapcls(*args[3:])  # the same command again finishes the file
    assert "were already in" in done.stderr
    df = pd.read_csv(out, keep_default_na=False)
    assert len(df) == 600 and df["path"].is_unique
    assert out.read_bytes() == reference.read_bytes()


def test_torn_last_line_is_cut_and_the_row_redone(tiny_run, job, tmp_path):
    images, reference = job
    data = reference.read_bytes()
    cut = data.index(b"\n", len(data) // 2) + 25  # through a header, 300-odd rows and part of one more
    out = tmp_path / "torn.csv"
    out.write_bytes(data[:cut])
    summary = run_predict(PredictConfig(inputs=[images], bundle=tiny_run / "bundle", out=out))
    assert summary.repaired and summary.skipped + summary.classified == 600
    assert out.read_bytes() == reference.read_bytes()
    torn_header = tmp_path / "torn_header.csv"
    torn_header.write_bytes(data[:10])
    run_predict(PredictConfig(inputs=[images], bundle=tiny_run / "bundle", out=torn_header))
    assert torn_header.read_bytes() == reference.read_bytes()


def test_ctrl_c_leaves_a_valid_csv_and_exit_130(tiny_run, job, tmp_path):
    images, reference = job
    out = tmp_path / "out.csv"
    args = _cli(images, "--bundle", tiny_run / "bundle", "--out", out, "--batch-size", "2")
    proc = _interrupt(args, out, signal.SIGINT, after_rows=40)
    assert proc.returncode == 130
    assert out.read_bytes().endswith(b"\n")
    partial = pd.read_csv(out, keep_default_na=False)
    assert 0 < len(partial) < 600 and partial["path"].is_unique and set(partial["status"]) == {"ok"}
    trapcls(*args[3:])  # the same command again finishes the file
    assert out.read_bytes() == reference.read_bytes()


def test_other_model_or_format_is_refused_unless_overwrite(tiny_run, job, tmp_path):
    images, reference = job
    out = tmp_path / "out.csv"
    out.write_bytes(reference.read_bytes())
    with pytest.raises(DataError, match="already exists with other columns.*--overwrite"):
        run_predict(PredictConfig(inputs=[images], bundle=tiny_run / "bundle", out=out, fmt="submission"))
    run_predict(PredictConfig(inputs=[images], bundle=tiny_run / "bundle", out=out, fmt="submission", overwrite=True))
    assert pd.read_csv(out).columns[0] == "id" and len(pd.read_csv(out)) == 600


def test_shards_merged_equal_the_unsharded_csv(tiny_run, job, tmp_path):
    images, reference = job
    parts = []
    for k in (1, 2, 3):
        part = tmp_path / f"part{k}.csv"
        summary = run_predict(PredictConfig(inputs=[images], bundle=tiny_run / "bundle", out=part, shard=(k, 3)))
        assert 100 < summary.images < 300  # a hash split: roughly a third each
        parts.append(part)
    merged = tmp_path / "merged.csv"
    trapcls("merge", *parts, "--out", merged)
    assert merged.read_bytes() == reference.read_bytes()
    proc = trapcls("merge", parts[0], parts[0], "--out", merged, rc=1)
    assert "more than once" in proc.stderr


def test_tta_is_the_mean_over_the_frame_and_its_mirror(tiny_run, tmp_path):
    img = noise_image((200, 150), seed=3)
    mirror = tmp_path / "mirror"
    for folder in (tmp_path / "in", mirror):
        folder.mkdir()
    img.save(tmp_path / "in" / "a.png")  # PNG: lossless, so the mirror file is exactly the flipped frame
    img.transpose(Image.Transpose.FLIP_LEFT_RIGHT).save(mirror / "a.png")
    bundle = tiny_run / "bundle"
    probs = {}
    runs = (("plain", tmp_path / "in", False), ("mirror", mirror, False), ("tta", tmp_path / "in", True))
    for name, folder, tta in runs:
        out = tmp_path / f"{name}.csv"
        run_predict(PredictConfig(inputs=[folder], bundle=bundle, out=out, tta=tta))
        df = pd.read_csv(out)
        probs[name] = df[list(load_bundle(bundle).classes)].to_numpy()[0]
    np.testing.assert_allclose(probs["tta"], (probs["plain"] + probs["mirror"]) / 2, atol=1e-5)
    assert not np.allclose(probs["plain"], probs["mirror"], atol=1e-7)  # the mirror is a different input


def test_torch_backend_agrees_with_onnxruntime(tiny_run):
    bundle = load_bundle(tiny_run / "bundle")
    frames = sorted((DEMO / "frames").glob("*.jpg"))
    batch = np.stack([preprocess(f, bundle.preprocess) for f in frames])
    ort_probs = probabilities(create_backend("onnxruntime", bundle).logits(batch), bundle.temperature)
    torch_backend = create_backend("torch", bundle, threads=1)
    assert torch_backend.device == "cpu"
    torch_probs = probabilities(torch_backend.logits(batch), bundle.temperature)
    np.testing.assert_allclose(torch_probs, ort_probs, atol=1e-5)


def test_auto_backend_says_what_it_picked_and_why(tiny_run):
    bundle = load_bundle(tiny_run / "bundle")
    choice = choose_backend("auto", bundle)
    if not os.path.exists("/dev/nvidia0"):
        assert choice.name == "onnxruntime" and "torch: no GPU" in choice.reason
    assert "tensorrt: the bundle has no TensorRT engine" in choice.reason
    assert choose_backend("torch", bundle).reason == "requested"
    with pytest.raises(Exception, match="Only auto, onnxruntime, torch, tensorrt, openvino"):
        choose_backend("coreml", bundle)
    with pytest.raises(Exception, match="TensorRT's Python bindings|has no TensorRT engine"):
        create_backend("tensorrt", bundle)


def test_cli_choices_match_the_registries():
    assert tuple(BACKENDS) == BACKEND_NAMES
    assert FORMATS == ("field", "submission") and {f for f in FORMATS} == {Layout(f, ("a",)).fmt for f in FORMATS}


@pytest.mark.filterwarnings("ignore::PIL.Image.DecompressionBombWarning")
def test_every_bad_input_kind_gets_a_defined_outcome(tiny_run, tmp_path):
    folder = tmp_path / "in"
    make_input_zoo(folder)
    (tmp_path / "elsewhere.jpg").write_bytes((folder / "good.jpg").read_bytes())
    os.symlink(tmp_path / "elsewhere.jpg", folder / "outside.jpg")  # outside the input: never followed
    (folder / "gone.jpg").symlink_to(tmp_path / "nowhere.jpg")  # dangling: skipped by the walk, listed below
    listing = tmp_path / "list.txt"
    listing.write_text("in/gone.jpg\n")
    out = tmp_path / "out.csv"
    start = time.perf_counter()
    summary = run_predict(PredictConfig(inputs=[folder, folder / "pipe.jpg"], file_list=listing,
                                        bundle=tiny_run / "bundle", out=out))
    elapsed = time.perf_counter() - start
    df = pd.read_csv(out, keep_default_na=False).set_index("path")
    ok = {"good.jpg", "frame.png", "cmyk.jpg", "sixteen.png", "grey.jpg", "palette.png", "rgba.png", "rotated.jpg"}
    errors = {"truncated.jpg": "truncated or corrupt", "empty.jpg": "empty file (0 bytes)",
              "notes.jpg": "not a JPEG or PNG", "bomb.png": "image too large (decompression bomb guard)",
              "really_a_gif.jpg": "not a JPEG or PNG",
              "pipe.jpg": "not a regular file", "gone.jpg": "cannot read file"}
    assert set(df.index) == ok | set(errors), "outside.jpg must not be followed"
    assert set(df.loc[sorted(ok), "status"]) == {"ok"}
    for name, reason in errors.items():
        error = df.loc[name, "error"]
        assert df.loc[name, "status"] == "error" and error.startswith(reason), (name, error)
    assert summary.failed == len(errors)
    print(f"{len(df)} odd inputs in {elapsed:.2f}s")


def test_blank_flag_follows_the_threshold(tiny_run, tmp_path):
    write_jpeg(tmp_path / "in" / "a.jpg")
    for threshold, expected in ((0.0, True), (1.0, False)):
        out = tmp_path / f"t{threshold}.csv"
        run_predict(PredictConfig(inputs=[tmp_path / "in"], bundle=tiny_run / "bundle", out=out,
                                  blank_threshold=threshold))
        assert pd.read_csv(out)["is_blank"].tolist() == [expected]
    bundle = load_bundle(tiny_run / "bundle")
    no_blank = dataclasses.replace(bundle, classes=tuple(c.replace("blank", "sky") for c in bundle.classes))
    with pytest.raises(OptionError, match="no blank class"):
        no_blank.layout("field", 0.3)
    assert "is_blank" not in Layout("field", no_blank.classes).header()
    with pytest.raises(OptionError, match="between 0 and 1"):
        PredictConfig(inputs=[], bundle=bundle.root, out=tmp_path / "x.csv", blank_threshold=1.5)


def test_capture_time_column_and_file_list_input(tiny_run, tmp_path):
    exif = Image.Exif()
    exif.get_ifd(0x8769)[0x9003] = "2025:07:14 05:12:00"
    noise_image().save(tmp_path / "dawn.jpg", exif=exif.tobytes())
    noise_image().save(tmp_path / "plain.jpg")
    listing = tmp_path / "list.txt"
    listing.write_text("# frames to redo\ndawn.jpg\nplain.jpg\nmissing.jpg\n")
    out = tmp_path / "out.csv"
    run_predict(PredictConfig(inputs=[], file_list=listing, bundle=tiny_run / "bundle", out=out))
    df = pd.read_csv(out, keep_default_na=False).set_index("path")
    assert df.loc["dawn.jpg", "captured"] == "2025-07-14T05:12:00" and df.loc["plain.jpg", "captured"] == ""
    assert df.loc["missing.jpg", "status"] == "error"
