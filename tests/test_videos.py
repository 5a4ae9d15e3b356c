"""Files trapcls will not classify are never silent, and the watch's incremental rescan misses nothing new.

Videos in formats trapcls does not decode (dummy bytes with a video extension: clips in the formats it
does decode are error rows) and other non-image files in a camera folder are counted per folder and reported
by `predict`, the watch
log (once per folder) and `trapcls status`; hidden, temporary and system files stay silent.
The rescan lists only folders whose mtime changed; a full walk every few rescans covers files
rewritten in place (tests backdate folder mtimes, as a rescan trusts only those a few seconds old).
"""

from __future__ import annotations

import json
import logging
import os
import time
from pathlib import Path

import pytest

from helpers import csv_rows, status, trapcls, write_jpeg
from trapcls.core.frames.discover import RACY_NS, TreeScanner, Unclassified, discover, discover_images
from trapcls.core.system.exceptions import DataError

CLIP = b"\x00\x00\x00\x18ftypmp42" + bytes(64)  # an MP4 header and nothing else: enough to be a video file


def _card(root: Path) -> None:
    """Two camera folders: stills, videos of every common kind, other files, and the names to stay silent about."""
    for name in ("cam1/IMG_0001.JPG", "cam1/IMG_0002.jpg", "cam2/DCIM/100/IMG_0003.JPG"):
        write_jpeg(root / name)
    for name in ("cam1/CLIP0001.MP4", "cam1/CLIP0002.avi", "cam1/CLIP0003.MOV", "cam2/DCIM/100/MOV_0004.mkv",
                 "cam2/DCIM/100/clip.m4v", "cam2/DCIM/100/clip.3gp", "cam2/DCIM/100/clip.wmv", "cam2/clip.MTS"):
        (root / name).write_bytes(CLIP)
    for name in ("cam2/notes.txt", "cam2/DCIM/100/IMG_0005.HEIC"):
        (root / name).write_bytes(b"other")
    for name in ("cam1/.DS_Store", "cam1/IMG_0006.JPG.part", "cam1/Thumbs.db", "cam2/.hidden.mp4", "cam2/x.tmp"):
        (root / name).write_bytes(b"silent")


def test_discover_counts_videos_and_other_files_per_folder_and_skips_hidden_ones(tmp_path):
    _card(tmp_path)
    found = discover([tmp_path])
    assert [f.rel for f in found.files] == ["cam1/IMG_0001.JPG", "cam1/IMG_0002.jpg", "cam2/DCIM/100/IMG_0003.JPG"]
    counts = {folder: (u.videos, u.others) for folder, u in found.unclassified.items()}
    assert counts == {"cam1": (3, 0), "cam2": (1, 1), "cam2/DCIM/100": (4, 1)}
    assert found.unclassified["cam2"].examples == ["clip.MTS", "notes.txt"]
    assert (found.total().videos, found.total().others) == (8, 2)
    assert found.total().describe() == "8 videos and 2 other files"
    # A glob picks what it matches: videos it does not match are the user's choice, not counted.
    assert discover([tmp_path / "**" / "*.JPG"]).unclassified == {}
    # The output CSV in an input folder is not "another file".
    (tmp_path / "cam1" / "out.csv").write_text("path\n")
    assert discover([tmp_path], ignore=tmp_path / "cam1" / "out.csv").unclassified["cam1"].others == 0


def test_a_folder_of_videos_only_says_so(tmp_path):
    (tmp_path / "CLIP0001.MP4").write_bytes(CLIP)
    with pytest.raises(DataError, match=r"it holds 1 video \(e\.g\. CLIP0001\.MP4\), which trapcls does not classify"):
        discover_images([tmp_path])


def test_predict_reports_what_it_did_not_classify_per_folder(tiny_run, tmp_path):
    _card(tmp_path / "in")
    out = tmp_path / "in" / "pred.csv"  # inside the input folder: never counted as another file
    for _ in range(2):  # the same report when resuming
        proc = trapcls("predict", tmp_path / "in", "--bundle", tiny_run / "bundle", "--out", out, "--workers", "1",
                       "--threads", "1")
        lines = proc.stderr.splitlines()
        assert ("2 videos not classified: trapcls classifies still images (JPEG, PNG) and clips (.mp4 .mov .m4v "
                ".avi .asf .wmv .mkv)") in lines
        assert "2 other files not classified: not JPEG or PNG" in lines
        assert "  cam2: 1 video and 1 other file (e.g. clip.MTS, notes.txt)" in lines
        assert "  cam2/DCIM/100: 1 video and 1 other file (e.g. IMG_0005.HEIC, clip.3gp)" in lines
    # the three stills, and the six clips in formats trapcls decodes, each an error row (they hold no video)
    rows = csv_rows(out)
    assert len(rows) == 9 and sum(row["status"] == "error" for row in rows.values()) == 6


def test_predict_says_nothing_when_there_is_nothing_to_say(tiny_run, tmp_path):
    write_jpeg(tmp_path / "in" / "a.jpg")
    (tmp_path / "in" / ".DS_Store").write_bytes(b"x")
    proc = trapcls("predict", tmp_path / "in", "--bundle", tiny_run / "bundle", "--out", tmp_path / "o.csv")
    assert "not classified" not in proc.stderr


@pytest.mark.slow
def test_watch_logs_each_folder_once_and_status_lists_the_counts(watch, tmp_path):
    inbox = tmp_path / "inbox"
    _card(inbox)
    # Rescans every 0.3 s: a folder's counts are logged once they held for one rescan, and never again. The
    # clips it decodes (.MP4 .avi .MOV .mkv .m4v .wmv) are classified, here into error rows (no video in them);
    # the videos it does not decode (.3gp .MTS) are counted with the other files.
    daemon = watch(inbox, rescan_interval=0.3, idle_exit=3, clip_settle=0.5, max_attempts=1)
    assert daemon.finish() == 0, daemon.log
    rows = csv_rows(inbox / "cam1" / "predictions.csv")
    assert {name: row["status"] for name, row in rows.items()} == {
        "IMG_0001.JPG": "ok", "IMG_0002.jpg": "ok", "CLIP0001.MP4": "error", "CLIP0002.avi": "error",
        "CLIP0003.MOV": "error"}
    noted = [line for line in daemon.lines if "not classified" in line]
    assert len(noted) == 1, daemon.log
    # cam2's own predictions.csv (OUT is the inbox) is not counted among its other files
    assert "cam2: 2 videos and 2 other files not classified: trapcls classifies still images (JPEG, PNG) and " \
           "clips (.mp4 .mov .m4v .avi .asf .wmv .mkv); e.g. clip.MTS, notes.txt, IMG_0005.HEIC" in noted[0]
    text = status(inbox)
    assert "not classified: cam2: 2 videos and 2 other files (e.g. clip.MTS, notes.txt, IMG_0005.HEIC); trapcls " \
           "classifies still images (JPEG, PNG) and clips (.mp4" in text, text
    assert "not classified: cam1" not in text
    report = json.loads(status(inbox, "--json"))["unclassified"]
    assert {k: (v["videos"], v["others"]) for k, v in report.items()} == {"cam2": (2, 2)}
    # A restart finds the same counts in the journal: nothing is logged again.
    again = watch(inbox, rescan_interval=0.3, idle_exit=2)
    assert again.finish() == 0, again.log
    assert "not classified" not in again.log


# --- the incremental rescan ------------------------------------------------------------------------------


def _age(root: Path, seconds: float = 60) -> None:
    """Backdate every folder's mtime, as if the last change were a minute ago (a rescan then trusts it)."""
    then = time.time() - seconds
    for folder in [root, *(p for p in root.rglob("*") if p.is_dir())]:
        os.utime(folder, (then, then))


def test_an_incremental_walk_lists_only_changed_folders_and_finds_everything_new(tmp_path):
    _card(tmp_path)
    _age(tmp_path)
    scanner = TreeScanner(tmp_path, full_every=1000)
    first = scanner.scan()
    assert first.full and sorted(first.images) == ["cam1/IMG_0001.JPG", "cam1/IMG_0002.jpg",
                                                   "cam2/DCIM/100/IMG_0003.JPG"]
    quiet = scanner.scan()
    assert (quiet.full, quiet.listed, quiet.kept, quiet.images) == (False, 0, 5, [])
    assert {k: (u.videos, u.others) for k, u in quiet.unclassified.items()} == {
        "cam1": (3, 0), "cam2": (1, 1), "cam2/DCIM/100": (4, 1)}  # remembered for the folders not read again

    write_jpeg(tmp_path / "cam1" / "IMG_0007.JPG")  # a file added to an old folder
    write_jpeg(tmp_path / "cam3" / "DCIM" / "IMG_0008.JPG")  # a new folder, with a subfolder
    (tmp_path / "cam2" / "DCIM" / "100" / "CLIP9.MP4").write_bytes(CLIP)
    (tmp_path / "cam2" / "notes.txt").unlink()
    found = scanner.scan()
    assert sorted(found.images) == ["cam1/IMG_0001.JPG", "cam1/IMG_0002.jpg", "cam1/IMG_0007.JPG",
                                    "cam2/DCIM/100/IMG_0003.JPG", "cam3/DCIM/IMG_0008.JPG"]
    # listed: the root (a new folder in it), cam1, cam2, cam2/DCIM/100, cam3, cam3/DCIM; kept: cam2/DCIM
    assert (found.full, found.listed, found.kept) == (False, 6, 1)
    assert {k: (u.videos, u.others) for k, u in found.unclassified.items()} == {
        "cam1": (3, 0), "cam2": (1, 0), "cam2/DCIM/100": (5, 1)}


def test_a_file_rewritten_in_place_waits_for_the_full_walk_and_a_fresh_folder_is_read_again(tmp_path):
    write_jpeg(tmp_path / "cam1" / "a.jpg")
    _age(tmp_path)
    scanner = TreeScanner(tmp_path, full_every=3)
    assert scanner.scan().full  # walk 1 of every 3 is full
    write_jpeg(tmp_path / "cam1" / "a.jpg", color=(1, 2, 3))  # same name, new content: the folder's mtime stays
    assert scanner.scan().images == []  # walks 2 and 3 cannot see it (file events do)
    assert scanner.scan().images == []
    walk4 = scanner.scan()
    assert walk4.full and walk4.images == ["cam1/a.jpg"]
    assert scanner.scan().images == []
    assert scanner.scan(full=True).images == ["cam1/a.jpg"]  # `full` forces it
    # A folder changed within RACY_NS of a walk is listed again at the next one, in case a change in the
    # same clock tick left its mtime as it was.
    assert RACY_NS >= 2 * 10**9  # FAT records mtimes to 2 s
    write_jpeg(tmp_path / "cam1" / "b.jpg")
    assert sorted(scanner.scan().images) == ["cam1/a.jpg", "cam1/b.jpg"]
    assert sorted(scanner.scan().images) == ["cam1/a.jpg", "cam1/b.jpg"]  # still fresh: read again


def test_the_daemon_rescan_is_incremental_and_finds_new_files_new_folders_and_additions(tmp_path, caplog):
    from trapcls.watch.config import WatchConfig
    from trapcls.watch.intake import Intake
    from trapcls.watch.journal import Journal

    for name in ("cam1/a.jpg", "cam2/DCIM/b.jpg", "old/c.jpg"):
        write_jpeg(tmp_path / "inbox" / name)
    _age(tmp_path / "inbox")
    config = WatchConfig(inbox=tmp_path / "inbox", bundle=tmp_path / "unused", out=tmp_path / "out")  # no model
    intake = Intake(config, config.inbox.resolve(), config.out_dir.resolve())  # the daemon's, without the model
    intake.attach(Journal(tmp_path / "journal.sqlite"))
    caplog.set_level(logging.DEBUG, logger="trapcls.watch.daemon")
    intake.scan()
    assert set(intake.waiting) == {"cam1/a.jpg", "cam2/DCIM/b.jpg", "old/c.jpg"}
    intake.known = {rel: state[:2] for rel, state in intake.waiting.items()}  # as if classified
    intake.waiting.clear()
    write_jpeg(tmp_path / "inbox" / "cam1" / "later.jpg")
    write_jpeg(tmp_path / "inbox" / "cam3" / "sub" / "new.jpg")
    write_jpeg(tmp_path / "inbox" / "top.jpg")
    caplog.clear()
    intake.scan()
    assert set(intake.waiting) == {"cam1/later.jpg", "cam3/sub/new.jpg", "top.jpg"}
    assert "incremental rescan: 4 folders listed, 3 unchanged" in caplog.text  # root, cam1, cam3, cam3/sub
    intake.scan(full=True)
    assert "full rescan: 7 folders listed, 0 unchanged" in caplog.text


def test_unclassified_counts_describe_themselves():
    u = Unclassified()
    assert not u and u.describe() == "" and u.example() == ""
    for name, kind in (("a.mp4", "video"), ("b.txt", "other"), ("c.avi", "video"), ("d.mov", "video")):
        u.add(name, kind)
    assert u and u.describe() == "3 videos and 1 other file" and u.example() == "e.g. a.mp4, b.txt, c.avi"


def test_the_journal_keeps_the_counts_in_a_table_an_older_journal_does_not_need(tmp_path):
    from trapcls.watch.journal import Journal

    journal = Journal(tmp_path / "journal.sqlite")
    assert journal.unclassified() == {}  # a journal from before: no table, nothing to report
    journal.note_unclassified({"cam1": (3, 1, ["a.mp4", "b.mp4", "c.txt"]), "cam2": (1, 0, ["d.avi"])})
    journal.note_unclassified({"cam2": (0, 0, [])})  # its video went away
    journal.close()
    readonly = Journal(tmp_path / "journal.sqlite", readonly=True)
    assert readonly.unclassified() == {"cam1": {"videos": 3, "others": 1, "examples": ["a.mp4", "b.mp4", "c.txt"]}}
    readonly.close()
