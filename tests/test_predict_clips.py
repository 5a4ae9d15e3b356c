"""`trapcls predict` on video clips: one row per clip from frames sampled at 1 fps, combined by the event rule,
with the clip's columns; bad clips are error rows and the run goes on; resume, shards and --video-frames. Clips
are made at test time from the real demo frames (blank, then an animal) with PyAV, and the real camera-trap clips
of ../shared run too where they are."""

from __future__ import annotations

import csv
import shutil
from pathlib import Path

import pytest

from helpers import FRAMES, csv_rows, frames_of, trapcls, write_clip

BLANK = FRAMES / "59be3e9d-23d2-11e8-a6a3-ec086b02610b.jpg"  # the shipped model calls it blank
BABOON = FRAMES / "baboon-3.jpg"


@pytest.fixture(scope="module")
def card(tmp_path_factory) -> Path:
    """A camera folder: a still, a clip blank for 2 s then a baboon for 1 s (5 fps), a blank clip, bad clips."""
    root = tmp_path_factory.mktemp("card")
    shutil.copyfile(BABOON, root / "still.jpg")
    write_clip(root / "cam" / "baboon.mp4", frames_of([BLANK] * 10 + [BABOON] * 5), rate=5)
    write_clip(root / "cam" / "empty.MP4", frames_of([BLANK] * 15), rate=5)
    (root / "cam" / "zero.avi").write_bytes(b"")
    (root / "cam" / "notes.mov").write_text("not a video at all\n")
    return root


def _predict(card: Path, out: Path, *flags: str):
    return trapcls("predict", card, "--out", out, *flags)


def test_a_clip_gets_one_row_an_animal_in_one_sampled_frame_makes_it_an_animal_and_blank_frames_keep_it_blank(
        card, tmp_path):
    out, frames = tmp_path / "p.csv", tmp_path / "frames.csv"
    proc = _predict(card, out, "--video-frames", frames)
    assert "1 images and 4 video clips" in proc.stdout
    rows = csv_rows(out)
    assert set(rows) == {"still.jpg", "cam/baboon.mp4", "cam/empty.MP4", "cam/zero.avi", "cam/notes.mov"}
    baboon, empty = rows["cam/baboon.mp4"], rows["cam/empty.MP4"]
    # 3 s at 5 fps sampled at 1 fps: frames 0, 5 and 10; the baboon arrives at frame 10
    assert (baboon["frames"], baboon["frame_rate"], baboon["best_frame"]) == ("3", "5", "10")
    assert float(baboon["duration_s"]) == pytest.approx(3.0, abs=0.21)
    assert baboon["label"] == "primate" and baboon["is_blank"] == "false"
    assert empty["label"] == "blank" and empty["is_blank"] == "true"
    assert rows["still.jpg"]["frames"] == "" and rows["still.jpg"]["label"] == "primate"
    for bad in ("cam/zero.avi", "cam/notes.mov"):
        assert rows[bad]["status"] == "error" and rows[bad]["error"] and rows[bad]["frames"] == "0"
    with open(frames, newline="", encoding="utf-8") as fh:
        sampled = list(csv.DictReader(fh))
    assert [(r["clip"], r["frame_number"], r["time_s"]) for r in sampled if r["clip"] == "cam/baboon.mp4"] == [
        ("cam/baboon.mp4", "0", "0"), ("cam/baboon.mp4", "5", "1"), ("cam/baboon.mp4", "10", "2")]
    assert {r["clip"] for r in sampled} == {"cam/baboon.mp4", "cam/empty.MP4"}
    assert [r["label"] for r in sampled if r["clip"] == "cam/baboon.mp4"] == ["blank", "blank", "primate"]


def test_video_options_thin_the_sampled_frames(card, tmp_path):
    out = tmp_path / "p.csv"
    _predict(card, out, "--video-fps", "5", "--video-max-frames", "4")
    assert csv_rows(out)["cam/baboon.mp4"]["frames"] == "4"
    trapcls("predict", card, "--out", tmp_path / "x.csv", "--video-fps", "0", rc=2)


@pytest.mark.slow
def test_clips_resume_shard_and_merge_like_frames(card, tmp_path):
    whole = tmp_path / "whole.csv"
    _predict(card, whole)
    written = whole.read_bytes()
    assert "5 files were already in" in _predict(card, whole).stderr
    assert whole.read_bytes() == written
    shards = [tmp_path / f"s{k}.csv" for k in (1, 2)]
    for k, shard in enumerate(shards, start=1):
        _predict(card, shard, "--shard", f"{k}/2")
    trapcls("merge", *shards, "--out", tmp_path / "merged.csv")
    assert (tmp_path / "merged.csv").read_bytes() == written


def test_the_submission_format_has_one_row_per_clip(card, tmp_path):
    out = tmp_path / "s.csv"
    _predict(card, out, "--format", "submission")
    assert set(csv_rows(out, key="id")) == {"still", "baboon", "empty", "zero", "notes"}


@pytest.mark.slow
def test_every_real_camera_trap_clip_gets_a_row_and_none_an_error(shared_data, tmp_path):
    out = tmp_path / "zamba.csv"
    # every clip decoded whole; 4 frames each classified (all 1,000 sampled frames take the model 40 s here)
    trapcls("predict", shared_data / "zamba_videos", "--out", out, "--video-max-frames", "4")
    rows = csv_rows(out)
    assert len(rows) == 19
    assert all(row["status"] == "ok" and 1 <= int(row["frames"]) <= 4 for row in rows.values()), rows
