"""k-fold cross-validation end to end (issue 25): every fold, the out-of-fold table, the fold-averaged bundle.

Real training runs (a tiny random-init EfficientNet on the repository's demo frames), real bundles, predict and
ONNX Runtime; the fold set is trained once per module and copied where a test damages it.
"""

from __future__ import annotations

import csv
import json
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from helpers import DEMO, FRAMES, trapcls

TINY = ["--arch", "test_efficientnet", "--epochs", "2", "--img-size", "64", "--batch-size", "8", "--workers", "0"]
pytestmark = pytest.mark.slow  # each fold set trains 3 tiny models: seconds, not milliseconds


@pytest.fixture(scope="module")
def fold_set(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("cv") / "folds"
    trapcls("train", DEMO / "train", "--out", out, "--folds", "3", *TINY)
    return out


def _rows(path: Path) -> list[dict[str, str]]:
    with open(path, newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


def _split(run: Path, part: str) -> set[str]:
    return {Path(r["filepath"]).stem for r in _rows(run / "split.csv") if r["part"] == part}


def test_every_fold_trains_into_its_folder_and_validates_each_frame_once(fold_set):
    frames = {p.stem for p in (DEMO / "train").glob("*/*")}
    vals = [_split(fold_set / f"fold-{k}", "val") for k in (1, 2, 3)]
    assert set().union(*vals) == frames and sum(map(len, vals)) == len(frames)
    for k in (1, 2, 3):  # one split for the whole set: each fold trains on the others' validation frames
        assert _split(fold_set / f"fold-{k}", "train") == frames - vals[k - 1]
        assert (fold_set / f"fold-{k}" / "bundle" / "bundle.json").is_file()


def test_the_oof_table_holds_each_frame_scored_by_the_fold_that_did_not_train_on_it(fold_set):
    import onnxruntime as ort

    from trapcls.core.frames.preprocess import preprocess
    from trapcls.core.model.bundle import load_bundle
    from trapcls.core.model.probs import probabilities

    rows = _rows(fold_set / "oof.csv")
    header = list(rows[0])
    classes = sorted(p.name for p in (DEMO / "train").iterdir())
    assert header == ["id", *classes, "fold", "model"]
    assert [r["id"] for r in rows] == sorted(r["id"] for r in rows)
    average = load_bundle(fold_set / "bundle")
    assert {r["model"] for r in rows} == {average.model_id}
    paths = {p.stem: p for p in (DEMO / "train").glob("*/*")}
    for row in rows[::4]:
        fold = int(row["fold"])
        assert row["id"] in _split(fold_set / f"fold-{fold}", "val")
        bundle = load_bundle(fold_set / f"fold-{fold}" / "bundle")
        session = ort.InferenceSession(str(bundle.onnx_path), providers=["CPUExecutionProvider"])
        x = preprocess(paths[row["id"]], bundle.preprocess)[None]
        expected = probabilities(session.run(None, {"image": x})[0], bundle.temperature)[0]
        np.testing.assert_allclose([float(row[c]) for c in classes], expected, atol=1e-6)


def test_the_fold_averaged_bundle_gives_the_mean_of_the_folds(fold_set, tmp_path):
    out = {}
    for name in ("bundle", "fold-1/bundle", "fold-2/bundle", "fold-3/bundle"):
        trapcls("predict", FRAMES, "--bundle", fold_set / name, "--out", tmp_path / f"{name.replace('/', '_')}.csv",
                "--format", "submission")
        out[name] = np.array([[float(c) for c in list(r.values())[1:]]
                              for r in _rows(tmp_path / f"{name.replace('/', '_')}.csv")])
    mean = np.mean([out[f"fold-{k}/bundle"] for k in (1, 2, 3)], axis=0)
    np.testing.assert_allclose(out["bundle"], mean, atol=2e-6)
    manifest = json.loads((fold_set / "bundle" / "bundle.json").read_text())
    assert len(manifest["training"]["fold_average"]) == 3 and manifest["export"]["max_abs_difference"] < 1e-5


def test_oof_again_writes_the_same_table_and_reports_scores_with_standard_errors(fold_set, tmp_path):
    proc = trapcls("oof", fold_set, "--out", tmp_path / "again.csv")
    assert (tmp_path / "again.csv").read_bytes() == (fold_set / "oof.csv").read_bytes()
    assert "fold 3" in proc.stdout and "±" in proc.stdout and "standard error" in proc.stdout


def test_oof_with_tta_gives_what_predict_with_tta_gives(fold_set, tmp_path):
    trapcls("oof", fold_set, "--tta", "--out", tmp_path / "tta.csv")
    plain, tta = _rows(fold_set / "oof.csv"), _rows(tmp_path / "tta.csv")
    assert [r["id"] for r in tta] == [r["id"] for r in plain] and tta != plain
    row = tta[0]
    frame = next(p for p in (DEMO / "train").glob("*/*") if p.stem == row["id"])
    trapcls("predict", frame, "--tta", "--bundle", fold_set / f"fold-{row['fold']}" / "bundle",
            "--format", "submission", "--out", tmp_path / "one.csv")
    assert {k: v for k, v in _rows(tmp_path / "one.csv")[0].items() if k != "id"} == \
        {k: v for k, v in row.items() if k not in ("id", "fold", "model")}


def test_one_fold_at_a_time_gives_the_table_of_all_folds_at_once(fold_set, tmp_path):
    """What each task of a cluster array runs: --fold k alone, then oof."""
    out = tmp_path / "array"
    for k in (3, 1, 2):
        trapcls("train", DEMO / "train", "--out", out, "--folds", "3", "--fold", str(k), *TINY)
    proc = trapcls("oof", out, rc=None)
    assert proc.returncode == 0, proc.stderr
    ours = [{k: v for k, v in r.items() if k != "model"} for r in _rows(out / "oof.csv")]
    assert ours == [{k: v for k, v in r.items() if k != "model"} for r in _rows(fold_set / "oof.csv")]


def test_a_killed_all_folds_run_resumes_to_the_same_table(fold_set, tmp_path):
    out = tmp_path / "killed"
    cmd = [sys.executable, "-m", "trapcls", "train", str(DEMO / "train"), "--out", str(out), "--folds", "3", *TINY]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 300
    while not (out / "fold-2" / "last.pt").exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    assert proc.wait() == -signal.SIGKILL, "the run ended before it could be killed in fold 2"
    assert not (out / "oof.csv").exists()
    trapcls("train", DEMO / "train", "--out", out, "--folds", "3", "--resume", *TINY)
    assert (out / "oof.csv").read_text().replace(out.name, "X") == \
        (fold_set / "oof.csv").read_text().replace(fold_set.name, "X")


def _copy(fold_set: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(fold_set, tmp_path / "copy", symlinks=True))


def test_an_incomplete_set_of_folds_is_refused_in_one_line(fold_set, tmp_path):
    copy = _copy(fold_set, tmp_path)
    shutil.rmtree(copy / "fold-2")
    proc = trapcls("oof", copy, rc=1)
    assert "fold 2 of 3 is not finished" in proc.stderr and "--fold k" in proc.stderr


def test_folds_with_other_classes_are_refused(fold_set, tmp_path):
    copy = _copy(fold_set, tmp_path)
    config = json.loads((copy / "fold-3" / "config.json").read_text())
    config["classes"] = config["classes"][:-1]
    (copy / "fold-3" / "config.json").write_text(json.dumps(config))
    proc = trapcls("oof", copy, rc=1)
    assert "not a fold of the same cross-validation" in proc.stderr and "classes" in proc.stderr


def test_a_frame_validated_by_two_folds_is_refused(fold_set, tmp_path):
    copy = _copy(fold_set, tmp_path)
    split = copy / "fold-2" / "split.csv"
    rows = _rows(split)
    moved = next(r for r in rows if r["part"] == "train")
    moved["part"] = "val"  # a frame fold 1 or 3 validates is now fold 2's too
    with open(split, "w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, list(rows[0]), lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
    proc = trapcls("oof", copy, rc=1)
    assert "is validated in folds" in proc.stderr and "Traceback" not in proc.stderr


@pytest.mark.parametrize(("args", "code", "words"), [
    (["--fold", "2"], 2, "--folds"),
    (["--folds", "3", "--fold", "4"], 2, "--fold"),
    (["--folds", "1"], 2, "--folds"),
])
def test_bad_fold_options_exit_2(tmp_path, args, code, words):
    proc = trapcls("train", DEMO / "train", "--out", tmp_path / "o", *args, *TINY, rc=code)
    assert words in proc.stderr


def test_oof_of_a_folder_that_is_no_fold_set_is_one_line(tmp_path):
    for folder in (tmp_path / "missing", tmp_path):
        proc = trapcls("oof", folder, rc=1)
        assert "trapcls train --folds K" in proc.stderr


def test_the_oof_table_feeds_an_ensemble_whose_test_member_is_the_averaged_bundle(fold_set, tmp_path):
    labels = tmp_path / "labels.csv"
    labels.write_text("filepath,label\n" + "".join(f"{p.relative_to(DEMO / 'train')},{p.parent.name}\n"
                                                   for p in (DEMO / "train").glob("*/*")))
    trapcls("ensemble", "fit", fold_set / "oof.csv", "--labels", labels, "--out", tmp_path / "w.json")
    trapcls("predict", FRAMES, "--bundle", fold_set / "bundle", "--out", tmp_path / "test.csv")
    trapcls("ensemble", "apply", tmp_path / "w.json", tmp_path / "test.csv", "--out", tmp_path / "sub.csv")
    assert _rows(tmp_path / "sub.csv")[0].keys() == {"id", *sorted(p.name for p in (DEMO / "train").iterdir())}
