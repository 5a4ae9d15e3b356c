"""`trapcls watch` on an inbox nobody vouches for: names that are not UTF-8, symlink loops, a camera folder swapped
for a link while its card is processed, untimed frames' event ids, and a camera folder that cannot be written.

Each test runs the real daemon (`python -m trapcls watch`, the tiny bundle) on real files, real links and real
folders, and reads the CSVs it writes and its journal. Issue 26, items 2, 3, 4, 7 and part of 12.
"""

from __future__ import annotations

import csv
import json
import os
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from helpers import FRAMES, csv_paths, csv_rows, journal, status, trapcls, wait_until
from trapcls.watch.paths import journal_path

# Every test here starts one to three real daemons (about 3 s each): slow (full suite and CI).
pytestmark = pytest.mark.slow

LATIN1 = os.fsdecode(b"caf\xe9.jpg")  # 'café.jpg' as a camera or another system wrote it, in Latin-1
CAMERA = os.fsdecode(b"d\xe9p\xf4t")  # a camera folder named in Latin-1 too
BROKEN = os.fsdecode(b"\xe9chec.jpg")  # and a file that is no image, for an error row


def frame(name: str, target: Path) -> Path:
    """A real demo frame (no EXIF capture time) copied to `target`."""
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(FRAMES / name, target)
    return target


def rows_of(path: Path) -> list[dict[str, str]]:
    with open(path, newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


# --- item 2: names that are not UTF-8 -------------------------------------------------------------------------


def test_latin1_names_get_their_rows_and_survive_a_restart_and_a_journal_rebuild(watch, tmp_path):
    inbox = tmp_path / "inbox"
    frame("baboon-3.jpg", inbox / "camA" / "IMG_0001.JPG")
    frame("buffalo-3.jpg", inbox / "camA" / LATIN1)
    frame("zebra-3.jpg", inbox / "camB" / "IMG_0002.JPG")
    frame("elephant-3.jpg", inbox / CAMERA / "IMG_0003.JPG")
    (inbox / "camB" / BROKEN).write_text("not an image\n")
    assert os.fsencode(inbox / "camA" / LATIN1).endswith(b"/caf\xe9.jpg")  # the name on disk: one byte, 0xE9
    all_csv = tmp_path / "all.csv"

    first = watch(inbox, "--events", "--all-csv", all_csv, ready=False, max_attempts=1)
    assert first.finish() == 0, first.log
    assert "stopped: 4 classified, 1 errors" in first.log, first.log
    assert csv_rows(inbox / "camB" / "predictions.csv")[r"'\xE9chec.jpg"]["status"] == "error"
    camera_csvs = {"camA": r"'caf\xE9.jpg", "camB": "IMG_0002.JPG", CAMERA: "IMG_0003.JPG"}
    assert csv_paths(inbox / "camA" / "predictions.csv") == {"IMG_0001.JPG", r"'caf\xE9.jpg"}
    for camera, name in camera_csvs.items():
        rows = csv_rows(inbox / camera / "predictions.csv")
        assert rows[name]["status"] == "ok", rows
    assert {r["first_file"] for r in rows_of(inbox / "camA" / "events.csv")} == {"IMG_0001.JPG", r"'caf\xE9.jpg"}
    assert csv_paths(all_csv) == {"camA/IMG_0001.JPG", r"'camA/caf\xE9.jpg", "camB/IMG_0002.JPG",
                                  r"'camB/\xE9chec.jpg", r"'d\xE9p\xF4t/IMG_0003.JPG"}
    # The journal keys the file by the bytes of its name: os.fsencode of the path as listed.
    assert set(journal(inbox)) == {"camA/IMG_0001.JPG", b"camA/caf\xe9.jpg", "camB/IMG_0002.JPG",
                                   b"camB/\xe9chec.jpg", b"d\xe9p\xf4t/IMG_0003.JPG"}
    report = status(inbox)  # names shown as valid UTF-8, in text and in JSON
    assert "done: 4" in report and "failing: camB/\\xe9chec.jpg: " in report, report
    assert json.loads(status(inbox, "--json"))["failing"][0]["path"] == "camB/\\xe9chec.jpg"
    written = {camera: (inbox / camera / "predictions.csv").read_bytes() for camera in camera_csvs}

    again = watch(inbox, "--events", "--all-csv", all_csv, ready=False)  # no crash loop, nothing redone
    assert again.finish() == 0, again.log
    assert "stopped: 0 classified, 0 errors" in again.log, again.log

    journal_path(inbox).write_bytes(b"not a journal" * 100)  # damaged: rebuilt from the CSVs, names and all
    for suffix in ("-wal", "-shm"):
        journal_path(inbox).with_name(journal_path(inbox).name + suffix).unlink(missing_ok=True)
    rebuilt = watch(inbox, "--events", "--all-csv", all_csv, ready=False)
    assert rebuilt.finish() == 0, rebuilt.log
    assert "journal rebuilt: 5 rows recovered from 3 CSVs" in rebuilt.log, rebuilt.log
    assert "stopped: 0 classified, 0 errors" in rebuilt.log, rebuilt.log
    entries = journal(inbox)
    assert entries[b"camA/caf\xe9.jpg"]["status"] == "done" and entries[b"camA/caf\xe9.jpg"]["folder"] == "camA"
    assert entries[b"d\xe9p\xf4t/IMG_0003.JPG"]["folder"] == b"d\xe9p\xf4t"
    assert {camera: (inbox / camera / "predictions.csv").read_bytes() for camera in camera_csvs} == written
    assert len(csv_paths(all_csv)) == 5


# --- item 3: symlink loops and broken links ---------------------------------------------------------------


def test_symlink_loops_and_broken_links_are_skipped_and_everything_else_is_classified(watch, tmp_path):
    inbox = tmp_path / "inbox"
    cam = inbox / "camA"
    frame("baboon-3.jpg", cam / "IMG_0001.JPG")
    frame("zebra-3.jpg", inbox / "camB" / "IMG_0002.JPG")
    frame("buffalo-3.jpg", inbox / "top.jpg")
    os.symlink("b.jpg", cam / "a.jpg")  # a.jpg -> b.jpg -> a.jpg
    os.symlink("a.jpg", cam / "b.jpg")
    os.symlink("missing.jpg", cam / "broken.jpg")
    os.symlink("y.jpg", inbox / "x.jpg")  # in the inbox itself too
    os.symlink("x.jpg", inbox / "y.jpg")
    daemon = watch(inbox, idle_exit=3)  # rescans only at start: what comes later arrives by file events
    os.symlink("d.jpg", cam / "c.jpg")  # a loop made while it runs
    os.symlink("c.jpg", cam / "d.jpg")
    frame("elephant-3.jpg", cam / "IMG_0003.JPG")  # ... and frames after it
    frame("warthog-3.jpg", inbox / "camC" / "IMG_0004.JPG")
    assert daemon.finish() == 0, daemon.log
    assert csv_paths(cam / "predictions.csv") == {"IMG_0001.JPG", "IMG_0003.JPG"}
    assert csv_paths(inbox / "camB" / "predictions.csv") == {"IMG_0002.JPG"}
    assert csv_paths(inbox / "camC" / "predictions.csv") == {"IMG_0004.JPG"}
    assert csv_paths(inbox / "predictions.csv") == {"top.jpg"}
    assert "not reachable" not in daemon.log and "Traceback" not in daemon.log, daemon.log
    assert "looping symlinks skipped" in daemon.log, daemon.log  # reported, as other special files
    assert "stopped: 5 classified, 0 errors" in daemon.log, daemon.log


# --- item 4: a camera folder swapped for a link while its card is processed ---------------------------------


def _slow_frames(folder: Path, count: int) -> None:
    """`count` 6 MP PNGs: a PNG has no reduced-size decode, so each costs the daemon ~0.1 s: a backlog that keeps
    it classifying (and not writing CSVs) for seconds."""
    rng = np.random.default_rng(0)
    pixels = np.full((2000, 3000, 3), 90, np.uint8)
    pixels[::8, ::8] = rng.integers(0, 256, pixels[::8, ::8].shape, dtype=np.uint8)
    folder.mkdir(parents=True)
    Image.fromarray(pixels).save(folder / "f000.png", compress_level=1)
    for i in range(1, count):
        os.link(folder / "f000.png", folder / f"f{i:03d}.png")


def test_camera_folder_swapped_for_a_link_is_never_written_through(watch, tmp_path):
    inbox = tmp_path / "inbox"
    _slow_frames(inbox / "camA", 24)
    frame("zebra-3.jpg", inbox / "camB" / "IMG_0001.JPG")
    victim = tmp_path / "victim"  # what the link will point to: another folder (it could be /)
    victim.mkdir()
    (victim / "predictions.csv").write_text("not the daemon's to touch\n")
    (victim / "events.csv").write_text("nor this\n")
    before = {p.name: p.read_bytes() for p in victim.iterdir()}
    # CSVs are written once the backlog is done (--flush-interval far away): the swap lands between camA's
    # first results and the write of its CSV.
    daemon = watch(inbox, "--events", flush_interval=3600, batch_size=1, idle_exit=2)
    journal_file = journal_path(inbox)

    def some_done() -> bool:
        return journal_file.exists() and any(e["status"] == "done" for e in journal(inbox).values())

    wait_until(some_done, 60, "camA's first results", daemon)
    away = tmp_path / "camA.away"
    os.rename(inbox / "camA", away)
    os.symlink(victim, inbox / "camA", target_is_directory=True)
    assert not (away / "predictions.csv").exists(), "the CSV was written before the swap: the backlog is too short"
    assert daemon.finish(timeout=60) == 0, daemon.log
    assert {p.name: p.read_bytes() for p in victim.iterdir()} == before, "the daemon wrote through the link"
    assert not (away / "predictions.csv").exists()
    assert csv_paths(inbox / "camB" / "predictions.csv") == {"IMG_0001.JPG"}  # the other camera goes on
    assert "camA: cannot write its CSVs (a symbolic link stands where the camera folder was" in daemon.log, daemon.log
    assert "That camera is set aside" in daemon.log and "Traceback" not in daemon.log, daemon.log

    # A damaged journal is rebuilt from the CSVs under OUT: the one behind the link is neither imported nor
    # moved aside as unusable (it is not a trapcls CSV), and the link's target still stays as it was.
    journal_file.write_bytes(b"not a journal" * 100)
    for suffix in ("-wal", "-shm"):
        journal_file.with_name(journal_file.name + suffix).unlink(missing_ok=True)
    again = watch(inbox, ready=False)
    assert again.finish() == 0, again.log
    assert "journal rebuilt: 1 rows recovered from 1 CSVs" in again.log, again.log
    assert "camA/predictions.csv: not imported, camA is a symbolic link" in again.log, again.log
    assert {p.name: p.read_bytes() for p in victim.iterdir()} == before


# --- item 7: untimed frames' event ids ----------------------------------------------------------------------


def test_untimed_event_ids_keep_the_whole_file_name(watch, tmp_path):
    inbox = tmp_path / "inbox"
    cam = inbox / "camA"
    names = ["IMG_0001.JPG", "RCNX0001.JPG", "x.jpg", "sub/IMG_0001.JPG", "camA/x.jpg"]
    untimed = ["baboon-3.jpg", "buffalo-3.jpg", "elephant-3.jpg", "warthog-3.jpg", "zebra-3.jpg"]  # no EXIF time
    for name, source in zip(names, untimed):
        frame(source, cam / name)
    all_csv = tmp_path / "all.csv"
    daemon = watch(inbox, "--events", "--all-csv", all_csv, ready=False)
    assert daemon.finish() == 0, daemon.log
    events = rows_of(cam / "events.csv")
    assert sorted(e["event_id"] for e in events) == sorted(f"camA/untimed:{name}" for name in names)
    assert {e["first_file"] for e in events} == set(names) and {e["untimed"] for e in events} == {"true"}
    # The same ids `trapcls events` gives the inbox-wide CSV, whose paths start with the camera folder.
    trapcls("events", all_csv, "--deployment-depth", "1", "--out", tmp_path / "events.csv")
    assert {e["event_id"] for e in rows_of(tmp_path / "events.csv")} == {e["event_id"] for e in events}


# --- item 12: one camera folder that cannot be written -------------------------------------------------------


def _immutable(folder: Path, on: bool) -> bool:
    """chattr +i (or -i) `folder`: no one, root included, may add or rename a file in it. False where chattr
    cannot (no chattr, no CAP_LINUX_IMMUTABLE, a file system without the flag)."""
    if shutil.which("chattr") is None:
        return False
    return subprocess.run(["chattr", "+i" if on else "-i", str(folder)], capture_output=True).returncode == 0


def test_a_camera_folder_that_cannot_be_written_is_set_aside_and_the_others_go_on(watch, tmp_path):
    inbox = tmp_path / "inbox"
    frame("baboon-3.jpg", inbox / "camA" / "IMG_0001.JPG")
    frame("zebra-3.jpg", inbox / "camB" / "IMG_0002.JPG")
    frame("buffalo-3.jpg", inbox / "camC" / "IMG_0003.JPG")
    (inbox / "camC" / "predictions.csv").mkdir()  # a folder where its CSV goes: no user, root included, can replace it
    # camA itself unwritable: immutable where chattr works (as root), else read-only to this (non-root) user.
    locked = _immutable(inbox / "camA", True)
    if not locked and os.geteuid() != 0:
        (inbox / "camA").chmod(0o555)
        locked = True
    try:
        daemon = watch(inbox, ready=False, rescan_interval=1, idle_exit=6)
        wait_until(lambda: "camC: cannot write its CSVs" in daemon.log, 60, "camC set aside", daemon)
        (inbox / "camC" / "predictions.csv").rmdir()  # mended while it runs: written at the next try
        wait_until(lambda: (inbox / "camC" / "predictions.csv").is_file(), 30, "camC's CSV", daemon)
        assert daemon.finish(timeout=60) == 0, daemon.log  # --idle-exit fires with a camera still set aside
    finally:
        if locked:
            _immutable(inbox / "camA", False)
            (inbox / "camA").chmod(0o755)
    log = daemon.log
    assert csv_paths(inbox / "camB" / "predictions.csv") == {"IMG_0002.JPG"}
    assert csv_paths(inbox / "camC" / "predictions.csv") == {"IMG_0003.JPG"}
    assert "camC: cannot write its CSVs (Is a directory" in log and "camC: its CSVs are written again" in log, log
    assert "paused" not in log and "Traceback" not in log, log
    assert "stopped: 3 classified, 0 errors" in log, log
    if locked:
        assert not (inbox / "camA" / "predictions.csv").exists()
        assert "camA: cannot write its CSVs" in log and "That camera is set aside" in log, log
        assert "stopping with camera folders set aside (camA)" in log, log
        again = watch(inbox, ready=False)  # mended before the next start: written then, from the journal
        assert again.finish() == 0, again.log
        assert csv_paths(inbox / "camA" / "predictions.csv") == {"IMG_0001.JPG"}
        assert "stopped: 0 classified, 0 errors" in again.log, again.log
