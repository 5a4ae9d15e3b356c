"""No traceback for anything a user can cause: every command, fed bad inputs, through the real entry point.

Each case runs `trapcls ...` and expects exit 1 (a failure the one-line message explains,
"error: ...") or exit 2 (bad usage, any option value outside what it accepts), and no "Traceback"
on stderr. The inputs are what users really hand over: missing paths, a file where a folder is
expected and the other way round, empty files, a folder that is not a bundle, a damaged
bundle.json, CSVs that are not CSVs, numbers out of range, choices that do not exist. The tiny
bundle (`tiny_run`) serves the cases that need a working bundle or a real predictions CSV.

The cases run in this process through `trapcls.cli.main`, the console script's own entry point
(helpers.trapcls), so the exit status and the output are the real ones; the `watch` cases
alone run as real processes (see REAL_PROCESS). With --verbose the traceback behind the error is
logged too (for bug reports), and the one-line message stays.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import warnings
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from helpers import CLIPS, DEMO, trapcls, write_jpeg

# The whole table of bad inputs, about 20 s with the tiny bundle: the full suite and CI, not the fast subset.
pytestmark = pytest.mark.slow

ARCH = "--arch test_efficientnet"  # past the "--arch is required" check, to the data's
TRAIN = "train {train} --out {out} " + ARCH
# (id, arguments with {placeholders} for the paths made by `ground`, expected exit status, text stderr must hold)
CASES: list[tuple[str, str, int, str]] = [
    # --- train ---------------------------------------------------------------------------------------
    ("train-no-arch", "train {train} --out {out}", 2, "--arch"),
    ("train-missing-data", "train {missing} --out {out} " + ARCH, 1, "{missing}"),
    ("train-empty-folder", "train {folder} --out {out} " + ARCH, 1, "{folder}"),
    ("train-empty-csv", "train {empty_csv} --out {out} " + ARCH, 1, "{empty_csv}"),
    ("train-garbage-csv", "train {garbage_csv} --out {out} " + ARCH, 1, "{garbage_csv}"),
    ("train-binary-file", "train {binary} --out {out} " + ARCH, 1, "{binary}"),
    ("train-out-is-a-file", "train {train} --out {text} " + ARCH, 1, "{text}"),
    ("train-config-missing", "train --config {missing} --out {out}", 1, "{missing}"),
    ("train-config-empty", "train --config {empty_csv} --out {out}", 1, "{empty_csv}"),
    ("train-config-garbage", "train --config {binary} --out {out}", 1, "{binary}"),
    ("train-config-folder", "train --config {folder} --out {out}", 1, "{folder}"),
    ("train-config-unknown-key", "train --config {unknown_key_json} --out {out}", 1, "colour"),
    ("train-no-data", "train --out {out}", 2, "DATA"),
    ("train-epochs-0", TRAIN + " --epochs 0", 2, "--epochs"),
    ("train-batch-size-0", TRAIN + " --batch-size 0", 2, "--batch-size"),
    ("train-val-fraction-2", TRAIN + " --val-fraction 2", 2, "--val-fraction"),
    ("train-crop-scale-2", TRAIN + " --crop-scale 2", 2, "--crop-scale"),
    ("train-fold-out-of-range", TRAIN + " --folds 2 --fold 3", 2, "--fold"),
    ("train-bad-regex", TRAIN + " --label-regex (", 2, "--label-regex"),
    ("train-weights-missing", TRAIN + " --weights {missing}", 1, "{missing}"),
    ("train-weights-garbage", TRAIN + " --weights {binary}", 1, "{binary}"),
    ("train-from-non-bundle", TRAIN + " --from-bundle {folder}", 1, "{folder}"),
    ("train-unknown-arch", "train {train} --out {out} --arch vit_tiny", 2, "--arch"),
    ("train-unknown-optimizer", "train {train} --out {out} --optimizer adam", 2, "adam"),
    ("train-unknown-export", "train {train} --out {out} --export onnx,trt", 2, "trt"),
    # --- export onnx ---------------------------------------------------------------------------------
    ("export-onnx-missing", "export onnx {missing} --out {out}", 1, "{missing}"),
    ("export-onnx-empty-folder", "export onnx {folder} --out {out}", 1, "{folder}"),
    ("export-onnx-text-file", "export onnx {text} --out {out}", 1, "{text}"),
    ("export-onnx-garbage-checkpoint", "export onnx {garbage_pt} --out {out}", 1, "{garbage_pt}"),
    ("export-onnx-no-out", "export onnx {folder}", 2, "--out"),
    # --- export tensorrt -----------------------------------------------------------------------------
    # Without TensorRT installed (as here) the missing package is reported first.
    ("export-tensorrt-missing", "export tensorrt {missing}", 1, "{missing}|trapcls[tensorrt]"),
    ("export-tensorrt-file", "export tensorrt {text}", 1, "{text}|trapcls[tensorrt]"),
    ("export-tensorrt-non-bundle", "export tensorrt {folder}", 1, "{folder}|trapcls[tensorrt]"),
    ("export-tensorrt-corrupt-bundle", "export tensorrt {corrupt_bundle}", 1, "bundle.json|trapcls[tensorrt]"),
    ("export-tensorrt-batch-0", "export tensorrt {bundle} --min-batch 0", 2, "batch"),
    ("export-tensorrt-batches-reversed", "export tensorrt {bundle} --min-batch 8 --max-batch 2", 2, "batch"),
    ("export-tensorrt-not-a-number", "export tensorrt {bundle} --max-batch many", 2, "--max-batch"),
    # --- predict -------------------------------------------------------------------------------------
    ("predict-missing-input", "predict {missing} --bundle {bundle} --out {out_csv}", 1, "{missing}"),
    ("predict-empty-folder", "predict {folder} --bundle {bundle} --out {out_csv}", 1, "{folder}"),
    ("predict-no-input", "predict --bundle {bundle} --out {out_csv}", 2, "INPUTS"),
    ("predict-bundle-missing", "predict {imgs} --bundle {missing} --out {out_csv}", 1, "{missing}"),
    ("predict-bundle-is-a-file", "predict {imgs} --bundle {text} --out {out_csv}", 1, "{text}"),
    ("predict-bundle-not-a-bundle", "predict {imgs} --bundle {imgs} --out {out_csv}", 1, "bundle.json"),
    ("predict-bundle-corrupt-json", "predict {imgs} --bundle {corrupt_bundle} --out {out_csv}", 1, "bundle.json"),
    ("predict-bundle-classes-not-a-list", "predict {imgs} --bundle {odd_classes} --out {out_csv}", 1, "bundle.json"),
    ("predict-bundle-preprocess-not-a-dict", "predict {imgs} --bundle {odd_preprocess} --out {out_csv}", 1,
     "bundle.json"),
    ("predict-bundle-calibration-not-a-dict", "predict {imgs} --bundle {odd_calibration} --out {out_csv}", 1,
     "bundle.json"),
    ("predict-bundle-files-entry-not-a-dict", "predict {imgs} --bundle {odd_files} --out {out_csv}", 1,
     "bundle.json"),
    ("predict-out-is-a-folder", "predict {imgs} --bundle {bundle} --out {folder}", 1, "{folder}"),
    ("predict-out-garbage-csv", "predict {imgs} --bundle {bundle} --out {garbage_csv_copy}", 1,
     "{garbage_csv_copy}"),
    ("predict-out-in-missing-folder", "predict {imgs} --bundle {bundle} --out {text}/x.csv", 1, "{text}"),
    # --- untrusted inputs (issue 26): what --out names, links on a card, hand-edited bundles ---------------
    ("predict-out-is-a-photo", "predict {imgs} --bundle {bundle} --out {photo}", 1, "not a trapcls predictions CSV"),
    ("predict-out-is-a-model", "predict {imgs} --bundle {bundle} --out {model_copy} --overwrite", 1,
     "not a trapcls predictions CSV"),
    ("predict-out-is-the-labels", "predict {imgs} --bundle {bundle} --out {torn_labels}", 1,
     "not a trapcls predictions CSV"),
    ("predict-input-is-a-link-loop", "predict {loop_link} --bundle {bundle} --out {out_csv}", 1,
     "broken or looping symlink"),
    ("predict-glob-under-a-looping-folder", "predict {loop_dir}/*.jpg --bundle {bundle} --out {out_csv}", 1,
     "No JPEG or PNG images match"),
    ("predict-bundle-huge-input", "predict {imgs} --bundle {huge_input} --out {out_csv}", 1, "at most 2048"),
    ("predict-bundle-nan-std", "predict {imgs} --bundle {nan_std} --out {out_csv}", 1, "finite"),
    ("predict-bundle-other-size", "predict {imgs} --bundle {other_size} --out {out_csv}", 1, "preprocess size"),
    ("predict-bundle-policy-in-words", "predict {imgs} --bundle {wordy_policy} --out {out_csv}", 1,
     "blank_policy.target_miss"),
    ("predict-bundle-export-null", "predict {imgs} --bundle {null_export} --out {out_csv}", 1,
     "'export' must be an object"),
    ("predict-bundle-files-outside", "predict {imgs} --bundle {outside_files} --out {out_csv}", 1,
     "not inside the bundle folder"),
    ("predict-bundle-two-blanks", "predict {imgs} --bundle {two_blanks} --out {out_csv}", 1,
     "several classes mean blank"),
    ("predict-bundle-cr-class", "predict {imgs} --bundle {cr_class} --out {out_csv}", 1, "control characters"),
    ("watch-bundle-two-blanks", "watch {folder} --bundle {two_blanks}", 1, "several classes mean blank"),
    ("watch-all-csv-is-the-labels", "watch {folder} --bundle {bundle} --out {out} --all-csv {torn_labels}", 1,
     "not a trapcls predictions CSV"),
    ("adapt-bundle-nan-std", "adapt {pred_csv} --bundle {nan_std} --out {out_csv}", 1, "finite"),
    ("train-two-blank-classes", "train {two_blank_labels} --out {out} " + ARCH, 1, "several classes mean blank"),
    ("train-control-char-class", "train {cr_labels} --out {out} " + ARCH, 1, "control characters"),
    ("events-class-column-twice", "events {twice_csv} --out {out_csv}", 1, "more than once"),
    ("predict-video-fps-0", "predict {imgs} --bundle {bundle} --out {out_csv} --video-fps 0", 2, "--video-fps"),
    ("predict-video-max-frames-0", "predict {imgs} --bundle {bundle} --out {out_csv} --video-max-frames 0", 2,
     "--video-max-frames"),
    ("predict-video-timeout-negative", "predict {imgs} --bundle {bundle} --out {out_csv} --video-timeout -1", 2,
     "--video-timeout"),
    ("predict-video-frames-is-a-folder", "predict {clips} --bundle {bundle} --out {out_csv} --video-frames {folder}",
     1, "{folder}"),
    ("predict-video-frames-is-the-labels", "predict {clips} --bundle {bundle} --out {out_csv} --video-frames "
     "{torn_labels}", 1, "not the frames CSV"),
    ("watch-clip-settle-negative", "watch {folder} --bundle {bundle} --clip-settle -1", 2, "--clip-settle"),
    ("watch-video-fps-0", "watch {folder} --bundle {bundle} --video-fps 0", 2, "--video-fps"),
    ("watch-video-max-frames-0", "watch {folder} --bundle {bundle} --video-max-frames 0", 2, "--video-max-frames"),
    ("events-clip-ends-after-9999", "events {long_clip_csv} --out {out_csv}", 1, "ends after the year 9999"),
    ("convert-clip-rate-nan", "convert {nan_rate_csv} --to megadetector --out {out_json}", 1,
     "not finite numbers"),
    ("events-out-is-the-predictions", "events {pred_csv} --out {pred_csv}", 1, "is the predictions CSV itself"),
    ("convert-out-is-the-predictions", "convert {pred_csv} --to megadetector --out {pred_csv} --overwrite", 1,
     "is the predictions CSV itself"),
    ("adapt-out-is-the-predictions", "adapt {pred_csv} --bundle {bundle} --out {pred_csv}", 1,
     "is the predictions CSV itself"),
    ("adapt-report-is-out", "adapt {pred_csv} --bundle {bundle} --out {out_csv} --report {out_csv}", 1,
     "is --out as well"),
    ("adapt-report-in-bundle", "adapt {pred_csv} --bundle {bundle} --out {out_csv} --report {bundle}/bundle.json",
     1, "bundle.json of the --bundle"),
    ("evaluate-report-is-the-predictions", "evaluate {pred_csv} --labels {train} --report {pred_csv}", 1,
     "is the predictions CSV itself"),
    ("evaluate-nan-probability", "evaluate {nan_csv} --labels {train}", 1, "not a probability"),
    ("predict-file-list-missing", "predict --file-list {missing} --bundle {bundle} --out {out_csv}", 1, "{missing}"),
    ("predict-file-list-folder", "predict --file-list {folder} --bundle {bundle} --out {out_csv}", 1, "{folder}"),
    ("predict-shard-out-of-range", "predict {imgs} --bundle {bundle} --out {out_csv} --shard 3/2", 2, "--shard"),
    ("predict-shard-garbage", "predict {imgs} --bundle {bundle} --out {out_csv} --shard half", 2, "--shard"),
    ("predict-batch-size-0", "predict {imgs} --bundle {bundle} --out {out_csv} --batch-size 0", 2, "--batch-size"),
    ("predict-threads-0", "predict {imgs} --bundle {bundle} --out {out_csv} --threads 0", 2, "--threads"),
    ("predict-workers-0", "predict {imgs} --bundle {bundle} --out {out_csv} --workers 0", 2, "--workers"),
    ("predict-blank-threshold-2", "predict {imgs} --bundle {bundle} --out {out_csv} --blank-threshold 2", 2,
     "--blank-threshold"),
    ("predict-unknown-format", "predict {imgs} --bundle {bundle} --out {out_csv} --format xml", 2, "xml"),
    # --- merge ---------------------------------------------------------------------------------------
    ("merge-missing", "merge {missing} --out {out_csv}", 1, "{missing}"),
    ("merge-empty-csv", "merge {empty_csv} --out {out_csv}", 1, "{empty_csv}"),
    ("merge-garbage-csv", "merge {garbage_csv} --out {out_csv}", 1, "{garbage_csv}"),
    ("merge-folder", "merge {folder} --out {out_csv}", 1, "{folder}"),
    ("merge-out-is-a-folder", "merge {pred_csv} --out {folder}", 1, "{folder}"),
    # --- watch ---------------------------------------------------------------------------------------
    ("watch-missing-inbox", "watch {missing} --bundle {bundle}", 1, "{missing}"),
    ("watch-inbox-is-a-file", "watch {text} --bundle {bundle}", 1, "{text}"),
    ("watch-bundle-not-a-bundle", "watch {folder} --bundle {imgs}", 1, "bundle.json"),
    ("watch-bundle-corrupt", "watch {folder} --bundle {corrupt_bundle}", 1, "bundle.json"),
    ("watch-folder-depth-negative", "watch {folder} --bundle {bundle} --folder-depth -1", 2, "--folder-depth"),
    ("watch-settle-negative", "watch {folder} --bundle {bundle} --settle -1", 2, "--settle"),
    ("watch-max-attempts-0", "watch {folder} --bundle {bundle} --max-attempts 0", 2, "--max-attempts"),
    ("watch-out-is-a-file", "watch {folder} --bundle {bundle} --out {text}", 1, "{text}"),
    ("watch-newer-journal", "watch {folder} --bundle {bundle} --out {newer_journal_out}", 1, "newer"),
    ("watch-all-csv-is-a-folder", "watch {folder} --bundle {bundle} --out {out} --all-csv {folder}", 1, "{folder}"),
    ("watch-threads-negative", "watch {imgs} --bundle {bundle} --out {out} --threads -1 --idle-exit 1", 2,
     "--threads"),
    ("watch-settle-not-a-number", "watch {folder} --bundle {bundle} --settle soon", 2, "--settle"),
    # --- status --------------------------------------------------------------------------------------
    ("status-missing", "status {missing}", 1, "{missing}"),
    ("status-file", "status {text}", 1, "{text}"),
    ("status-no-journal", "status {folder}", 1, "No journal"),
    ("status-garbage-journal", "status {garbage_journal_out}", 1, "journal"),
    ("status-empty-journal", "status {empty_journal_out}", 1, "journal"),
    ("status-journal-is-a-folder", "status {journal_dir_out}", 1, "journal"),
    # --- evaluate ------------------------------------------------------------------------------------
    ("evaluate-missing-predictions", "evaluate {missing} --labels {train}", 1, "{missing}"),
    ("evaluate-empty-predictions", "evaluate {empty_csv} --labels {train}", 1, "{empty_csv}"),
    ("evaluate-garbage-predictions", "evaluate {garbage_csv} --labels {train}", 1, "{garbage_csv}"),
    ("evaluate-predictions-folder", "evaluate {folder} --labels {train}", 1, "{folder}"),
    ("evaluate-three-predictions", "evaluate {pred_csv} {pred_csv} {pred_csv} --labels {train}", 2, "two"),
    ("evaluate-labels-missing", "evaluate {pred_csv} --labels {missing}", 1, "{missing}"),
    ("evaluate-labels-empty-folder", "evaluate {pred_csv} --labels {folder}", 1, "{folder}"),
    ("evaluate-labels-garbage-csv", "evaluate {pred_csv} --labels {garbage_csv}", 1, "{garbage_csv}"),
    ("evaluate-labels-binary", "evaluate {pred_csv} --labels {binary}", 1, "{binary}"),
    ("evaluate-labels-unrelated", "evaluate {pred_csv} --labels {other_labels}", 1, "class"),
    ("evaluate-blank-threshold-2", "evaluate {pred_csv} --labels {train} --blank-threshold 2", 2,
     "--blank-threshold"),
    ("evaluate-blank-miss-2", "evaluate {pred_csv} --labels {train} --blank-miss 2", 2, "--blank-miss"),
    ("evaluate-confidence-2", "evaluate {pred_csv} --labels {train} --blank-miss 0.1 --confidence 2", 2,
     "--confidence"),
    ("evaluate-report-is-a-folder", "evaluate {pred_csv} --labels {train} --report {folder}", 1, "{folder}"),
    ("evaluate-bundle-not-a-bundle", "evaluate {pred_csv} --labels {train} --bundle {folder} --report {out}/r.html",
     1, "{folder}"),
    ("evaluate-write-bundle-corrupt", "evaluate {pred_csv} --labels {train} --blank-miss 0.5 --write-bundle "
     "{corrupt_bundle}", 1, "bundle.json"),
    ("evaluate-bad-regex", "evaluate {pred_csv} --labels {imgs} --label-regex (", 2, "--label-regex"),
    # --- events --------------------------------------------------------------------------------------
    ("events-missing", "events {missing} --out {out_csv}", 1, "{missing}"),
    ("events-empty-csv", "events {empty_csv} --out {out_csv}", 1, "{empty_csv}"),
    ("events-garbage-csv", "events {garbage_csv} --out {out_csv}", 1, "{garbage_csv}"),
    ("events-folder", "events {folder} --out {out_csv}", 1, "{folder}"),
    ("events-submission-csv", "events {submission_csv} --out {out_csv}", 1, "{submission_csv}"),
    ("events-gap-negative", "events {pred_csv} --out {out_csv} --gap -1", 2, "--gap"),
    ("events-depth-negative", "events {pred_csv} --out {out_csv} --deployment-depth -1", 2, "--deployment-depth"),
    ("events-blank-threshold-2", "events {pred_csv} --out {out_csv} --blank-threshold 2", 2, "--blank-threshold"),
    ("events-out-is-a-folder", "events {pred_csv} --out {folder}", 1, "{folder}"),
    # --- convert -------------------------------------------------------------------------------------
    ("convert-missing", "convert {missing} --to megadetector --out {out_json}", 1, "{missing}"),
    ("convert-garbage-csv", "convert {garbage_csv} --to megadetector --out {out_json}", 1, "{garbage_csv}"),
    ("convert-empty-csv", "convert {empty_csv} --to camtrap-dp --out {out}", 1, "{empty_csv}"),
    ("convert-unknown-target", "convert {pred_csv} --to coco --out {out_json}", 2, "coco"),
    ("convert-bad-timezone", "convert {pred_csv} --to camtrap-dp --out {out} --timezone Mars/Olympus", 2,
     "--timezone"),
    ("convert-taxa-garbage", "convert {pred_csv} --to megadetector --out {out_json} --taxa {binary}", 1, "{binary}"),
    ("convert-taxa-missing", "convert {pred_csv} --to megadetector --out {out_json} --taxa {missing}", 1,
     "{missing}"),
    ("convert-deployments-garbage", "convert {pred_csv} --to camtrap-dp --out {out} --timezone +02:00 "
     "--deployments {garbage_csv}", 1, "{garbage_csv}"),
    ("convert-out-is-a-file", "convert {pred_csv} --to camtrap-dp --out {text} --overwrite", 1, "{text}"),
    ("convert-gap-negative", "convert {pred_csv} --to camtrap-dp --out {out} --timezone +02:00 --gap -5", 2,
     "--gap"),
    # --- adapt ---------------------------------------------------------------------------------------
    ("adapt-missing", "adapt {missing} --bundle {bundle} --out {out_csv}", 1, "{missing}"),
    ("adapt-garbage-csv", "adapt {garbage_csv} --bundle {bundle} --out {out_csv}", 1, "{garbage_csv}"),
    ("adapt-bundle-not-a-bundle", "adapt {pred_csv} --bundle {folder} --out {out_csv}", 1, "{folder}"),
    ("adapt-bundle-corrupt", "adapt {pred_csv} --bundle {corrupt_bundle} --out {out_csv}", 1, "bundle.json"),
    ("adapt-other-model", "adapt {pred_csv} --out {out_csv}", 1, "model"),
    ("adapt-min-frames-negative", "adapt {pred_csv} --bundle {bundle} --out {out_csv} --min-frames -1", 2,
     "--min-frames"),
    ("adapt-prior-strength-negative", "adapt {pred_csv} --bundle {bundle} --out {out_csv} --prior-strength -1", 2,
     "--prior-strength"),
    ("adapt-out-is-a-folder", "adapt {pred_csv} --bundle {bundle} --out {folder}", 1, "{folder}"),
    # --- doctor --------------------------------------------------------------------------------------
    # doctor reports a bad bundle in its report (exit 0): diagnosing is its job
    ("doctor-bundle-missing", "doctor --bundle {missing}", 0, "{missing}"),
    ("doctor-bundle-corrupt", "doctor --json --bundle {corrupt_bundle}", 0, "bundle.json"),
    # --- anywhere ------------------------------------------------------------------------------------
    ("unknown-command", "classify {imgs}", 2, "classify"),
    ("unknown-option", "status {folder} --colour", 2, "--colour"),
]

# Tracebacks found in code this change could not touch; strict, so the test says when they are fixed.
KNOWN: dict[str, str] = {}  # case id -> why it still fails (strict xfail, so a fix shows up)

# Cases run again with --verbose: the same exit status and message, with the traceback behind it logged.
VERBOSE = ("predict-bundle-corrupt-json", "status-garbage-journal", "evaluate-garbage-predictions")

# The cases that run as real processes: those of `watch`, the command that starts a daemon. Should one ever
# start watching instead of refusing, a real process is killed by the timeout, where a daemon in this process
# would hang the session holding its signal handlers and observer threads. Every other case runs in this
# process, torch's included: the tiny_run fixture has loaded torch here already, so they cost no import.
REAL_PROCESS = tuple(case_id for case_id, *_ in CASES if case_id.startswith("watch-"))


@pytest.fixture(scope="module")
def ground(tmp_path_factory, tiny_run) -> dict[str, Path]:
    """Every bad (and the few good) inputs the cases name, made once."""
    root = tmp_path_factory.mktemp("ground")
    paths = {name: root / name for name in ("missing", "outs", "folder", "text")}
    paths["folder"].mkdir()
    paths["text"].write_text("just some notes\n")
    paths["empty_csv"] = _write(root / "empty.csv", b"")
    paths["garbage_csv"] = _write(root / "garbage.csv", b'path,label\n"unterminated,\x01\n1,2,3,4,5\n\xff\xfe')
    paths["binary"] = _write(root / "binary.dat", bytes(range(256)) * 8)
    paths["garbage_pt"] = _write(root / "best.pt", b"PK\x03\x04 not a torch checkpoint")
    paths["garbage_csv_copy"] = _write(root / "resume_garbage.csv", paths["garbage_csv"].read_bytes())
    paths["unknown_key_json"] = _write(root / "config.json", b'{"data": "x", "colour": "red"}')
    paths["train"] = DEMO / "train"
    paths["imgs"] = root / "imgs"
    write_jpeg(paths["imgs"] / "a.jpg")
    paths["other_labels"] = _write(root / "other_labels.csv", b"filepath,label\nnowhere/zzz.jpg,lion\n")
    paths["bundle"] = tiny_run / "bundle"
    paths.update(_bundles(root, tiny_run / "bundle"))
    paths.update(_untrusted(root, tiny_run / "bundle"))
    paths.update(_journals(root))
    paths.update(_predictions(root, tiny_run / "bundle"))
    return paths


def _write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


def _bundles(root: Path, bundle: Path) -> dict[str, Path]:
    """A bundle whose bundle.json is not JSON, and some whose JSON has a field of the wrong shape."""
    corrupt = Path(shutil.copytree(bundle, root / "corrupt_bundle"))
    (corrupt / "bundle.json").write_text('{"classes": ["a", "b"], "preprocess": ')
    made = {"corrupt_bundle": corrupt}
    manifest = json.loads((bundle / "bundle.json").read_text())
    size = manifest["preprocess"]
    for name, field, value in (("odd_classes", "classes", 3), ("odd_preprocess", "preprocess", "big"),
                               ("odd_calibration", "calibration", "warm"),
                               ("odd_files", "files", {"model.onnx": "sha"}),
                               ("huge_input", "preprocess", {**size, "height": 100000, "width": 100000}),
                               ("nan_std", "preprocess", {**size, "std": [float("nan")] * 3}),
                               ("other_size", "preprocess", {**size, "height": 96, "width": 96}),
                               ("wordy_policy", "blank_policy", {"threshold": 0.2, "target_miss": "five percent"}),
                               ("null_export", "export", None),
                               ("outside_files", "files", {**manifest["files"],
                                                           "../../../../etc/passwd": {"sha256": "0" * 64}}),
                               ("two_blanks", "classes", ["BLANK", *manifest["classes"][1:]]),
                               ("cr_class", "classes", ["baboon\r", *manifest["classes"][1:]])):
        odd = Path(shutil.copytree(bundle, root / name))
        (odd / "bundle.json").write_text(json.dumps({**manifest, field: value}))
        made[name] = odd
    return made


def _untrusted(root: Path, bundle: Path) -> dict[str, Path]:
    """What a careless or hostile user hands over: files --out must not touch, link loops, odd labels."""
    made = {"photo": root / "photo.jpg", "model_copy": root / "model.onnx", "loop_link": root / "loop" / "a.jpg",
            "loop_dir": root / "loop" / "dir"}
    write_jpeg(made["photo"])
    shutil.copyfile(bundle / "model.onnx", made["model_copy"])
    made["torn_labels"] = _write(root / "labels.csv", b"filepath,label\na.jpg,bird\nb.jpg,blank")  # no final newline
    made["loop_link"].parent.mkdir()
    os.symlink("b.jpg", made["loop_link"])
    os.symlink("a.jpg", made["loop_link"].with_name("b.jpg"))
    os.symlink("dir", made["loop_dir"])
    frames = sorted((DEMO / "train").glob("*/*.jpg"))
    made["two_blank_labels"] = _write(root / "two_blank_labels.csv", ("filepath,label\n" + "".join(
        f"{f},{'empty' if f.parent.name == 'blank' and i % 2 else f.parent.name}\n"
        for i, f in enumerate(frames))).encode())
    made["cr_labels"] = _write(root / "cr_labels.csv", ("filepath,label\n" + "".join(
        f'{f},"{"ze" + chr(13) + "bra" if f.parent.name == "zebra" else f.parent.name}"\n' for f in frames)).encode())
    return made


def _journals(root: Path) -> dict[str, Path]:
    """--out folders whose journal is garbage, empty, a folder, or from a newer trapcls."""
    made = {}
    for name, content in (("garbage_journal_out", b"SQLite format 3\x00" + bytes(range(256)) * 4),
                          ("empty_journal_out", b""), ("journal_dir_out", None), ("newer_journal_out", None)):
        state = root / name / ".trapcls"
        state.mkdir(parents=True)
        if content is None and name == "journal_dir_out":
            (state / "journal.sqlite").mkdir()
        elif content is None:
            db = sqlite3.connect(state / "journal.sqlite")
            db.executescript("CREATE TABLE files (path TEXT); CREATE TABLE folders (folder TEXT);"
                             "CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT);"
                             "INSERT INTO meta VALUES ('schema_version', '99');")
            db.close()
        else:
            (state / "journal.sqlite").write_bytes(content)
        made[name] = root / name
    return made


def _predictions(root: Path, bundle: Path) -> dict[str, Path]:
    """A field CSV and a submission CSV of the demo training frames, made by predict itself."""
    from trapcls.predict import run_predict
    from trapcls.predict.config import PredictConfig

    made = {}
    for name, fmt in (("pred_csv", "field"), ("submission_csv", "submission")):
        out = root / f"{name}.csv"
        run_predict(PredictConfig(inputs=[DEMO / "train"], bundle=bundle, out=out, fmt=fmt, workers=1, threads=1))
        made[name] = out
    header, *rest = made["pred_csv"].read_text().split("\n")
    cells = header.split(",")
    cells[6] = cells[5]  # a hand edit: the second class column renamed to the first
    made["twice_csv"] = _write(root / "twice.csv", "\n".join([",".join(cells), *rest]).encode())
    header, first, *rest = made["submission_csv"].read_text().split("\n")
    first = ",".join([first.split(",")[0], "nan", *first.split(",")[2:]])
    made["nan_csv"] = _write(root / "nan.csv", "\n".join([header, first, *rest]).encode())
    made.update(_clip_predictions(root))
    return made


def _clip_predictions(root: Path) -> dict[str, Path]:
    """A folder with one real clip, and field CSVs whose clip cells were edited by hand."""
    clips = root / "clips"
    clips.mkdir()
    shutil.copyfile(CLIPS / "09100029_Eland.MP4", clips / "a.MP4")
    header = "path,captured,label,probability,a,b,status,error,model,frames,duration_s,frame_rate,best_frame\n"
    made = {"clips": clips}
    for name, clip in (("long_clip_csv", "3,1e15,30,2"), ("nan_rate_csv", "3,2,nan,2")):
        made[name] = _write(root / f"{name}.csv", (header + f"c.mp4,2024-01-01T00:00:00,a,0.9,0.9,0.1,ok,,m,{clip}\n")
                            .encode())
    return made


def _run(args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    """A real `python -m trapcls` process, without $TRAPCLS_BUNDLE; killed after 120 s."""
    try:
        return trapcls(*args, rc=None, here=False, cwd=cwd, timeout=120)
    except subprocess.TimeoutExpired as exc:  # e.g. a watch that started instead of refusing
        return subprocess.CompletedProcess(args, -9, exc.stdout or "", f"timed out after 120 s: {exc.stderr}")


def _fill(text: str, paths: dict[str, Path], case_id: str) -> str:
    """`text` with its {placeholders} filled; {out}, {out_csv} and {out_json} are fresh paths for each case."""
    outs = paths["outs"] / case_id
    named = {**paths, "out": outs / "out", "out_csv": outs / "out.csv", "out_json": outs / "out.json"}
    return text.format(**{k: str(v) for k, v in named.items()})


def _args(case_id: str, template: str, paths: dict[str, Path]) -> list[str]:
    return [_fill(part, paths, case_id) for part in template.split()]


def _params():
    for case in CASES:
        marks = [pytest.mark.xfail(strict=True, reason=KNOWN[case[0]])] if case[0] in KNOWN else []
        yield pytest.param(case, id=case[0], marks=marks)


@pytest.fixture(scope="module")
def outcomes(request, ground, tmp_path_factory) -> dict[str, subprocess.CompletedProcess]:
    """The selected cases (and the --verbose reruns) run once: the real processes four at a time, meanwhile the
    rest one after the other in this process."""
    selected = set()
    for item in request.session.items:
        params = item.callspec.params if item.module is request.module and hasattr(item, "callspec") else {}
        selected.add(params["case"][0] if "case" in params else params.get("case_id"))
    cwd = tmp_path_factory.mktemp("cwd")
    jobs = {case_id: _args(case_id, template, ground) for case_id, template, _, _ in CASES if case_id in selected}
    jobs.update({f"verbose:{case_id}": ["--verbose", *_args(case_id, template, ground)]
                 for case_id, template, _, _ in CASES if case_id in VERBOSE and case_id in selected})
    real = [job for job in jobs if job in REAL_PROCESS]
    with ThreadPoolExecutor(max_workers=4) as pool:
        running = {job: pool.submit(_run, jobs[job], cwd) for job in real}
        done = {job: trapcls(*args, rc=None, cwd=cwd) for job, args in jobs.items()
                if job not in REAL_PROCESS}
        return {**done, **{job: future.result() for job, future in running.items()}}


@pytest.mark.parametrize("case", list(_params()))
def test_bad_input_exits_with_a_message_and_no_traceback(outcomes, ground, case):
    case_id, template, expected, mention = case
    proc = outcomes[case_id]
    shown = f"trapcls {' '.join(_args(case_id, template, ground))}\nrc={proc.returncode}\nstderr:\n{proc.stderr}"
    assert "Traceback" not in proc.stderr + proc.stdout, shown
    assert proc.returncode == expected, shown
    if expected == 1:
        assert proc.stderr.startswith("error: ") or "\nerror: " in proc.stderr, shown
    # The message names the file or flag (one of the "|" alternatives); typer's usage box wraps long lines.
    text = " ".join((proc.stderr + proc.stdout).replace("│", " ").split())
    wanted = [" ".join(_fill(m, ground, case_id).split()) for m in mention.split("|")]
    assert any(w in text for w in wanted), f"the message should name {' or '.join(wanted)}\n{shown}"


@pytest.mark.parametrize("case_id", VERBOSE)
def test_verbose_logs_the_traceback_behind_the_message(outcomes, case_id):
    quiet, verbose = outcomes[case_id], outcomes[f"verbose:{case_id}"]
    assert verbose.returncode == quiet.returncode == 1
    assert "Traceback" in verbose.stderr, verbose.stderr
    message = next(line for line in quiet.stderr.splitlines() if line.startswith("error: "))
    assert message in verbose.stderr.splitlines()


def test_a_run_in_this_process_leaves_nothing_behind(ground, tmp_path):
    """What `main` changes for its run (the root logger's handlers and level, signal handlers, warning filters)
    it puts back, even with --verbose and on an error, so the in-process cases above cannot leak into each other."""
    root = logging.getLogger()

    def state():
        return (list(root.handlers), root.level, signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM),
                list(warnings.filters), os.getcwd(), os.environ.get("TRAPCLS_BUNDLE"), sys.argv, sys.stdout, sys.stderr)

    before = state()
    verbose = trapcls("--verbose", *_args("leak", "predict {imgs} --bundle {corrupt_bundle} --out {out_csv}", ground),
                      rc=1, cwd=tmp_path)
    done = trapcls(*_args("leak", "predict {imgs} --bundle {bundle} --out {out_csv}", ground), cwd=tmp_path)
    assert "Traceback" in verbose.stderr, verbose.stderr
    assert "1 images ->" in done.stdout, done.stderr
    assert state() == before


# --- errors no bad input here can reach: the GPU and torchrun paths, with stand-ins --------------------


def test_a_failed_cuda_call_is_a_one_line_error_saying_what_to_do():
    from trapcls.core.system.exceptions import TrapclsError
    from trapcls.predict.tensorrt import _CudaPythonMemory

    class Code(int):
        name = "cudaErrorMemoryAllocation"

    memory = object.__new__(_CudaPythonMemory)
    with pytest.raises(TrapclsError, match="allocating 2 MiB of GPU memory.*cudaErrorMemoryAllocation.*nvidia-smi"):
        memory._call((Code(2), 0), "allocating 2 MiB of GPU memory")
    assert memory._call((Code(0), 42)) == 42


def test_an_engine_that_fails_to_run_names_the_engine_and_the_rebuild_command(tmp_path):
    import numpy as np

    from trapcls.core.system.exceptions import TrapclsError
    from trapcls.predict.tensorrt import TensorRTRunner

    class Context:
        def set_input_shape(self, name, shape):
            return True

        def execute_async_v3(self, stream):
            return False

    class Memory:
        stream_handle = 0

        def to_device(self, dst, src):
            pass

        def synchronize(self):
            pass

        def to_host(self, dst, src):
            raise RuntimeError("CUDA error: an illegal memory access was encountered")  # torch's kind

    runner = object.__new__(TensorRTRunner)
    runner.engine_path = tmp_path / "bundle" / "engines" / "orin.engine"
    runner.context, runner.memory, runner.input_name = Context(), Memory(), "input"
    runner.min_batch, runner.image_shape, runner._dev_in, runner._dev_out = 1, (3, 2, 2), 0, 0
    runner._host_in, runner._host_out = np.zeros((4, 3, 2, 2), np.float32), np.zeros((4, 5), np.float32)
    with pytest.raises(TrapclsError, match=r"orin.engine.*execute_async_v3.*trapcls export tensorrt .*bundle"):
        runner._run(np.zeros((2, 3, 2, 2), np.float32))
    runner.context.execute_async_v3 = lambda stream: True
    with pytest.raises(TrapclsError, match="GPU failed while running orin.engine.*illegal memory access"):
        runner._run(np.zeros((2, 3, 2, 2), np.float32))


def test_torchrun_ranks_with_different_weights_are_a_trapcls_error():
    torch = pytest.importorskip("torch")

    from trapcls.core.system.exceptions import TrapclsError
    from trapcls.training.distributed import Dist
    from trapcls.training.epoch import check_ranks_agree

    class Diverged(Dist):
        def sum(self, values):
            return [v * self.world + 1.0 for v in values]  # the other rank holds other weights

    with pytest.raises(TrapclsError, match="2 torchrun processes ended with different weights.*one process"):
        check_ranks_agree(torch.nn.Linear(3, 2), Diverged(rank=0, world=2, local_rank=0, device="cpu"))
