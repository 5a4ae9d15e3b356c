"""predict: discovery, both CSV formats, error rows for bad files, formula neutralising."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from helpers import DEMO, make_bad_inputs, noise_image, write_jpeg
from trapcls.core.frames.discover import discover_images
from trapcls.core.model.bundle import load_bundle
from trapcls.core.model.probs import probabilities
from trapcls.core.system.exceptions import DataError
from trapcls.predict.runner import PredictConfig, run_predict


def test_discovery_is_recursive_case_insensitive_and_skips_hidden_and_temp(tmp_path):
    for name in ("a.jpg", "sub/b.JPG", "sub/deep/c.Jpeg", "d.PNG", ".hidden.jpg", ".cache/e.jpg", "f.jpg.part",
                 "g.tmp", "notes.txt"):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_bytes(b"x")
    found = [f.rel for f in discover_images([tmp_path])]
    assert found == ["a.jpg", "d.PNG", "sub/b.JPG", "sub/deep/c.Jpeg"]
    # two roots: paths relative to their common parent; overlapping inputs are not doubled
    both = [f.rel for f in discover_images([tmp_path / "sub", tmp_path / "sub" / "deep", tmp_path / "a.jpg"])]
    assert sorted(both) == ["a.jpg", "sub/b.JPG", "sub/deep/c.Jpeg"]


def test_discovery_does_not_follow_symlink_loops(tmp_path):
    (tmp_path / "cam").mkdir()
    (tmp_path / "cam" / "a.jpg").write_bytes(b"x")
    (tmp_path / "cam" / "loop").symlink_to(tmp_path, target_is_directory=True)
    assert [f.rel for f in discover_images([tmp_path])] == ["cam/a.jpg"]


def test_discovery_errors_name_the_input(tmp_path):
    with pytest.raises(DataError, match="Input not found: .*nope"):
        discover_images([tmp_path / "nope"])
    with pytest.raises(DataError, match="No JPEG or PNG images found"):
        discover_images([tmp_path])


def _read(path: Path) -> pd.DataFrame:
    return pd.read_csv(path, keep_default_na=False)


def test_field_format_has_one_row_per_image_and_probabilities_sum_to_one(tiny_run, tmp_path):
    out = tmp_path / "field.csv"
    summary = run_predict(PredictConfig(inputs=[DEMO / "frames"], bundle=tiny_run / "bundle", out=out, batch_size=3))
    df = _read(out)
    classes = ["baboon", "blank", "buffalo", "elephant", "warthog", "zebra"]
    assert list(df.columns) == ["path", "captured", "label", "probability", "is_blank", *classes, "status", "error",
                                "model"]
    assert set(df["model"]) == {load_bundle(tiny_run / "bundle").model_id}  # who classified every row
    assert len(df) == summary.images == 10 and summary.failed == 0
    assert list(df["path"]) == sorted(df["path"])
    probs = df[classes].to_numpy(dtype=float)
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, atol=1e-6)
    assert (df["label"] == np.array(classes)[probs.argmax(axis=1)]).all()
    np.testing.assert_allclose(df["probability"], probs.max(axis=1))
    assert set(df["status"]) == {"ok"}
    assert (df["is_blank"] == (df["blank"] >= 0.5)).all()


def test_submission_format_is_the_drivendata_layout(tiny_run, tmp_path):
    out = tmp_path / "submission.csv"
    run_predict(PredictConfig(inputs=[DEMO / "frames"], bundle=tiny_run / "bundle", out=out, fmt="submission"))
    with open(out) as fh:
        header = next(csv.reader(fh))
    assert header == ["id", "baboon", "blank", "buffalo", "elephant", "warthog", "zebra"]
    df = _read(out)
    assert list(df["id"]) == sorted(p.stem for p in (DEMO / "frames").iterdir())
    np.testing.assert_allclose(df.iloc[:, 1:].to_numpy(dtype=float).sum(axis=1), 1.0, atol=1e-6)


def test_bad_files_get_their_defined_outcome_in_both_formats(tiny_run, tmp_path):
    bad = make_bad_inputs(tmp_path / "in")
    field = tmp_path / "field.csv"
    summary = run_predict(PredictConfig(inputs=[tmp_path / "in"], bundle=tiny_run / "bundle", out=field))
    df = _read(field).set_index("path")
    assert summary.images == 5 and summary.failed == 3
    assert df.loc["good.jpg", "status"] == "ok" and df.loc["frame.png", "status"] == "ok"
    assert df.loc["truncated.jpg", "error"].startswith("truncated or corrupt image")
    assert df.loc["empty.jpg", "error"].startswith("empty file (0 bytes)")
    assert df.loc["notes.jpg", "error"].startswith("not a JPEG or PNG image")
    for name in ("truncated.jpg", "empty.jpg", "notes.jpg"):
        assert df.loc[name, "status"] == "error" and df.loc[name, "label"] == "" and df.loc[name, "blank"] == ""

    sub = tmp_path / "sub.csv"
    run_predict(PredictConfig(inputs=[tmp_path / "in"], bundle=tiny_run / "bundle", out=sub, fmt="submission"))
    rows = _read(sub).set_index("id")
    np.testing.assert_allclose(rows.loc["empty"].to_numpy(dtype=float), 1 / 6)
    np.testing.assert_allclose(rows.loc["notes"].to_numpy(dtype=float), 1 / 6)
    assert not np.allclose(rows.loc["good"].to_numpy(dtype=float), 1 / 6, atol=1e-9)
    assert bad["good"].exists()


def test_error_cells_hold_no_absolute_path_and_the_log_names_the_file(tiny_run, tmp_path, caplog, monkeypatch):
    make_bad_inputs(tmp_path / "cards" / "cam1")
    out = tmp_path / "field.csv"
    with caplog.at_level("WARNING", logger="trapcls.predict.runner"):
        run_predict(PredictConfig(inputs=[(tmp_path / "cards").absolute()], bundle=tiny_run / "bundle", out=out))
    df = _read(out).set_index("path")
    assert str(tmp_path) not in out.read_text()  # the CSV is shared: this machine's folders stay out of it
    assert df.loc["cam1/truncated.jpg", "error"].startswith("truncated or corrupt image: image file is truncated")
    assert df.loc["cam1/empty.jpg", "error"] == "empty file (0 bytes)"
    assert df.loc["cam1/notes.jpg", "error"] == "not a JPEG or PNG image"
    assert "cam1/truncated.jpg: truncated or corrupt image" in caplog.text  # the log line names the file

    # An unexpected decoder failure whose text quotes the path: the file name stands in for it.
    import trapcls.predict.runner as runner

    def broken(path, spec):
        raise RuntimeError(f"decoder fell over on {path}")

    monkeypatch.setattr(runner, "preprocess_frame", broken)
    run_predict(PredictConfig(inputs=[tmp_path / "cards"], bundle=tiny_run / "bundle", out=out, overwrite=True))
    assert str(tmp_path) not in out.read_text()
    assert _read(out).set_index("path").loc["cam1/good.jpg", "error"] == \
        "unexpected error while decoding: RuntimeError: decoder fell over on good.jpg"


def test_duplicate_stems_are_refused_for_submissions_only(tiny_run, tmp_path):
    write_jpeg(tmp_path / "cam1" / "IMG_0001.jpg")
    write_jpeg(tmp_path / "cam2" / "IMG_0001.jpg")
    with pytest.raises(DataError, match="IMG_0001"):
        run_predict(PredictConfig(inputs=[tmp_path], bundle=tiny_run / "bundle", out=tmp_path / "s.csv",
                                  fmt="submission"))
    assert not (tmp_path / "s.csv").exists()
    run_predict(PredictConfig(inputs=[tmp_path], bundle=tiny_run / "bundle", out=tmp_path / "f.csv"))
    assert list(_read(tmp_path / "f.csv")["path"]) == ["cam1/IMG_0001.jpg", "cam2/IMG_0001.jpg"]


def test_formula_like_file_names_are_neutralised(tiny_run, tmp_path):
    noise_image().save(tmp_path / "=HYPERLINK(1).jpg")
    noise_image().save(tmp_path / "-2.jpg")
    out = tmp_path / "out.csv"
    run_predict(PredictConfig(inputs=[tmp_path], bundle=tiny_run / "bundle", out=out))
    paths = set(_read(out)["path"])
    assert paths == {"'=HYPERLINK(1).jpg", "'-2.jpg"}


def test_temperature_scales_logits_before_softmax():
    logits = np.array([[2.0, 0.0, -1.0], [0.0, 0.0, 0.0]])
    expected = np.exp(logits / 2) / np.exp(logits / 2).sum(axis=1, keepdims=True)
    np.testing.assert_allclose(probabilities(logits, 2.0), expected, rtol=1e-12)
    np.testing.assert_allclose(probabilities(logits, 1.0)[1], 1 / 3)
    assert probabilities(np.array([[1000.0, 0.0]]), 1.0)[0, 0] == 1.0  # no overflow


def test_real_frames_from_shared_data(tiny_run, tmp_path, shared_data):
    out = tmp_path / "cct.csv"
    summary = run_predict(PredictConfig(inputs=[shared_data / "cct_sample"], bundle=tiny_run / "bundle", out=out))
    df = _read(out)
    assert summary.failed == 0 and len(df) == 60 == summary.images
    assert df["path"].str.contains("/").all()  # class folders kept in the relative path


def test_the_predict_path_does_not_import_torch(tiny_run, tmp_path):
    import subprocess
    import sys

    code = ("import sys; from pathlib import Path; from trapcls.predict.runner import PredictConfig, run_predict; "
            f"run_predict(PredictConfig(inputs=[Path({str(DEMO / 'frames')!r})], "
            f"bundle=Path({str(tiny_run / 'bundle')!r}), "
            f"out=Path({str(tmp_path / 'o.csv')!r}))); "
            "heavy = [m for m in ('torch', 'timm', 'torchvision') if m in sys.modules]; "
            "assert not heavy, heavy")
    subprocess.run([sys.executable, "-c", code], check=True)
