"""`trapcls watch` as a real process on real files: slow copies, renames, lost events, polling, bad inputs, sd_notify.

Each test starts `python -m trapcls watch` on a temporary inbox with the tiny bundle, adds files
while it runs, and checks the CSVs it writes and its SQLite journal. Short settle, flush and
poll times keep each run to a few seconds; `--idle-exit` ends the daemon once it has nothing
left to do, so "no row for X" means the daemon saw X (or could have) and decided against it.
"""

from __future__ import annotations

import csv
import json
import os
import re
import shutil
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from helpers import (
    FRAMES,
    SHARED_DATA,
    Daemon,
    NotifyListener,
    csv_paths,
    csv_rows,
    journal,
    launch,
    make_input_zoo,
    noise_image,
    status,
    trapcls,
    wait_until,
    write_jpeg,
)
from trapcls.core.model.bundle import store_blank_policy
from trapcls.predict.runner import PredictConfig, run_predict


def copy_frame(name: str, target: Path) -> Path:
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(FRAMES / name, target)  # a copy, not a link: the daemon must see it written
    return target


def big_frame() -> Path:
    """A real 3 MP camera-trap JPEG: the largest ENA24 frame in ../shared/data, else the largest demo frame."""
    frames = sorted((SHARED_DATA / "ena24_small").glob("*.jpg")) or sorted(FRAMES.glob("*.jpg"))
    return max(frames, key=lambda p: p.stat().st_size)


# --- 1. slow copies ------------------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["inotify", "polling"])
def test_slow_copy_is_classified_once_after_its_last_byte(watch, tmp_path, mode):
    frame = big_frame()
    data = frame.read_bytes()
    inbox = tmp_path / "inbox"
    (inbox / "cam1").mkdir(parents=True)
    flags = ("--polling", "--poll-interval", "0.3") if mode == "polling" else ()
    daemon = watch(inbox, *flags, settle=1.0, max_attempts=1)
    target = inbox / "cam1" / "IMG_0001.jpg"
    chunks = 8
    step = -(-len(data) // chunks)
    with open(target, "wb") as f:  # one handle, like a card reader copying a big frame slowly
        for i in range(chunks):
            f.write(data[i * step:(i + 1) * step])
            f.flush()
            os.fsync(f.fileno())
            if i < chunks - 1:
                time.sleep(0.3)
                # Still being written: not even queued, let alone classified.
                assert "cam1/IMG_0001.jpg" not in journal(inbox), f"queued after chunk {i + 1} of {chunks}"
        last_byte = time.time()
    assert daemon.finish() == 0, daemon.log
    rows = csv_rows(inbox / "cam1" / "predictions.csv")
    assert list(rows) == ["IMG_0001.jpg"]
    assert rows["IMG_0001.jpg"]["status"] == "ok", rows
    entry = journal(inbox)["cam1/IMG_0001.jpg"]
    assert entry["status"] == "done" and entry["attempts"] == 0 and entry["size"] == len(data)
    assert entry["updated"] >= last_byte, "classified before the last byte was written"
    # Never tried while incomplete: no failed attempt was logged and exactly one result was made.
    assert "IMG_0001.jpg:" not in daemon.log, daemon.log
    assert "stopped: 1 classified, 0 errors" in daemon.log, daemon.log
    print(f"{mode}: {frame.name} ({len(data) / 1e3:.0f} kB) in {chunks} chunks")


# --- 2. temp-then-rename, temp names ---------------------------------------------------------------


@pytest.mark.slow
def test_temp_then_rename_gets_one_row_under_the_final_name(watch, tmp_path):
    inbox = tmp_path / "inbox"
    cam = inbox / "cam1"
    cam.mkdir(parents=True)
    copy_frame("baboon-3.jpg", cam / "early.jpg.part")  # already there at start: the first scan skips it too
    daemon = watch(inbox, idle_exit=3)
    data = (FRAMES / "buffalo-3.jpg").read_bytes()
    temp = cam / ".IMG_0002.jpg.AbC123"  # what rsync writes before renaming
    with open(temp, "wb") as f:
        f.write(data[: len(data) // 2])
        f.flush()
        time.sleep(0.2)
        f.write(data[len(data) // 2:])
    copy_frame("elephant-3.jpg", cam / "IMG_0003.jpg.part")  # a download that never completes
    copy_frame("zebra-3.jpg", cam / "IMG_0004.JPG.tmp")
    copy_frame("baboon-3.jpg", cam / ".hidden.jpg")
    time.sleep(0.6)  # longer than --settle: had a temp name counted, it would be queued by now
    os.rename(temp, cam / "IMG_0002.jpg")
    staging = tmp_path / "staging"
    os.rename(copy_frame("warthog-3.jpg", staging / "IMG_0005.jpg"), cam / "IMG_0005.jpg")  # moved in from outside
    copy_frame("zebra-3.jpg", staging / "card" / "DCIM" / "IMG_0006.jpg")
    os.rename(staging / "card", inbox / "cam2")  # a whole camera folder moved in: its files bring no events
    copy_frame("elephant-3.jpg", inbox / "cam3" / "DCIM" / "IMG_0007.jpg")  # a camera folder made after start
    assert daemon.finish() == 0, daemon.log
    assert csv_paths(cam / "predictions.csv") == {"IMG_0002.jpg", "IMG_0005.jpg"}
    assert csv_paths(inbox / "cam2" / "predictions.csv") == {"DCIM/IMG_0006.jpg"}
    assert csv_paths(inbox / "cam3" / "predictions.csv") == {"DCIM/IMG_0007.jpg"}
    assert set(journal(inbox)) == {"cam1/IMG_0002.jpg", "cam1/IMG_0005.jpg", "cam2/DCIM/IMG_0006.jpg",
                                   "cam3/DCIM/IMG_0007.jpg"}
    assert {r["status"] for r in csv_rows(cam / "predictions.csv").values()} == {"ok"}


# --- 3. lost events ----------------------------------------------------------------------------------


@pytest.mark.slow
def test_rescan_finds_files_whose_events_were_lost(watch, tmp_path):
    inbox = tmp_path / "inbox"
    copy_frame("baboon-3.jpg", inbox / "cam1" / "first.jpg")
    daemon = watch(inbox, "--no-file-events", rescan_interval=1, idle_exit=3)
    wait_until(lambda: csv_paths(inbox / "cam1" / "predictions.csv") == {"first.jpg"}, 20, "the first scan", daemon)
    # No observer runs, so nothing reports these files: only the periodic rescan can find them.
    copy_frame("buffalo-3.jpg", inbox / "cam1" / "later.jpg")
    copy_frame("zebra-3.jpg", inbox / "cam2" / "new_camera.jpg")
    assert daemon.finish() == 0, daemon.log
    assert csv_paths(inbox / "cam1" / "predictions.csv") == {"first.jpg", "later.jpg"}
    assert csv_paths(inbox / "cam2" / "predictions.csv") == {"new_camera.jpg"}
    assert "stopped: 3 classified, 0 errors" in daemon.log


# --- 4. polling ------------------------------------------------------------------------------------------


@pytest.mark.slow
def test_polling_finds_new_files_and_new_camera_folders(watch, tmp_path):
    inbox = tmp_path / "inbox"
    copy_frame("baboon-3.jpg", inbox / "cam1" / "first.jpg")
    # Rescans once, at start: whatever comes later only the polling observer can find.
    daemon = watch(inbox, "--polling", poll_interval=0.3, rescan_interval=3600)
    wait_until(lambda: csv_paths(inbox / "cam1" / "predictions.csv") == {"first.jpg"}, 20, "the first scan", daemon)
    copy_frame("buffalo-3.jpg", inbox / "cam1" / "later.jpg")
    copy_frame("zebra-3.jpg", inbox / "cam2" / "DCIM" / "new_camera.jpg")  # a camera folder made after start
    assert daemon.finish() == 0, daemon.log
    assert csv_paths(inbox / "cam1" / "predictions.csv") == {"first.jpg", "later.jpg"}
    assert csv_paths(inbox / "cam2" / "predictions.csv") == {"DCIM/new_camera.jpg"}
    assert "stopped: 3 classified, 0 errors" in daemon.log


# --- 5. bad inputs ----------------------------------------------------------------------------------------


@pytest.mark.slow
def test_every_bad_input_gets_a_row_and_the_daemon_keeps_going(watch, tmp_path):
    inbox = tmp_path / "inbox"
    cam = inbox / "cam1"
    make_input_zoo(cam)
    write_jpeg(tmp_path / "elsewhere.jpg")
    os.symlink(tmp_path / "elsewhere.jpg", cam / "outside.jpg")  # points outside the inbox: never followed
    ok = {"good.jpg", "frame.png", "cmyk.jpg", "sixteen.png", "grey.jpg", "palette.png", "rgba.png", "rotated.jpg"}
    errors = {"truncated.jpg": "truncated or corrupt", "empty.jpg": "empty file (0 bytes)",
              "notes.jpg": "not a JPEG or PNG", "bomb.png": "image too large (decompression bomb guard)",
              "really_a_gif.jpg": "not a JPEG or PNG"}
    daemon = watch(inbox, max_attempts=1, idle_exit=3)
    csv_file = cam / "predictions.csv"
    wait_until(lambda: csv_paths(csv_file) == ok | set(errors), 30, "a row for every bad input", daemon)
    write_jpeg(cam / "late.jpg", color=(10, 200, 30))  # after all those errors the daemon still works
    assert daemon.finish() == 0, daemon.log
    rows = csv_rows(csv_file)
    assert set(rows) == ok | set(errors) | {"late.jpg"}, "pipe.jpg and outside.jpg must get no row"
    assert {rows[name]["status"] for name in ok | {"late.jpg"}} == {"ok"}
    for name, reason in errors.items():
        assert rows[name]["status"] == "error" and rows[name]["error"].startswith(reason), (name, rows[name])
    entries = journal(inbox)
    assert all(entries[f"cam1/{name}"]["attempts"] == 1 for name in errors)
    assert f"stopped: {len(ok) + 1} classified, {len(errors)} errors" in daemon.log, daemon.log


# --- 6. sd_notify -----------------------------------------------------------------------------------------


@pytest.mark.slow  # two daemons under a stand-in systemd, ~8 s: the full suite and CI
@pytest.mark.parametrize("namespace", ["path", "abstract"])
def test_sd_notify_ready_watchdog_status_stopping(watch, tmp_path, namespace):
    inbox = tmp_path / "inbox"
    copy_frame("baboon-3.jpg", inbox / "cam1" / "a.jpg")
    copy_frame("zebra-3.jpg", inbox / "cam1" / "b.jpg")
    if namespace == "path":
        folder = Path(os.environ.get("TMPDIR", "/tmp")) / f"trapcls-{uuid.uuid4().hex[:8]}"  # sun_path: 108 bytes
        folder.mkdir()
        address = notify_socket = str(folder / "notify.sock")
    else:
        folder = None
        name = f"trapcls-test-{uuid.uuid4().hex}"
        address, notify_socket = "\0" + name, "@" + name
    listener = NotifyListener(address)
    try:
        daemon = watch(inbox, idle_exit=2, env={"NOTIFY_SOCKET": notify_socket, "WATCHDOG_USEC": "200000"})
        assert daemon.finish() == 0, daemon.log
    finally:
        messages = listener.close()
        if folder is not None:
            shutil.rmtree(folder)
    assert messages, "nothing arrived on NOTIFY_SOCKET"
    first = messages[0].split("\n")
    assert first[0] == "READY=1" and first[1].startswith("STATUS=model loaded"), messages[:3]
    assert sum(m.startswith("READY=1") for m in messages) == 1
    assert sum(m == "WATCHDOG=1" for m in messages) >= 2, messages
    assert any(m.startswith("STATUS=backlog ") for m in messages), messages
    assert messages[-1] == "STOPPING=1", messages[-3:]
    assert csv_paths(inbox / "cam1" / "predictions.csv") == {"a.jpg", "b.jpg"}


# --- 7. changed files, status ------------------------------------------------------------------------------


def test_changed_file_is_reclassified_in_place_and_status_matches(watch, tmp_path, tiny_run):
    inbox = tmp_path / "inbox"
    cam = inbox / "cam1"
    cam.mkdir(parents=True)
    noise_image(seed=3).save(cam / "a.jpg", "JPEG")
    copy_frame("zebra-3.jpg", cam / "b.jpg")
    (cam / "empty.jpg").write_bytes(b"")
    csv_file = cam / "predictions.csv"
    daemon = watch(inbox, max_attempts=1, idle_exit=60)  # stopped with SIGTERM below
    wait_until(lambda: csv_paths(csv_file) == {"a.jpg", "b.jpg", "empty.jpg"}, 20, "the first rows", daemon)
    before = csv_rows(csv_file)["a.jpg"]

    report = json.loads(status(inbox, "--json"))  # while the daemon runs
    assert (report["backlog"], report["done"], report["errors"]) == (0, 2, 1), report
    assert [f["path"] for f in report["failing"]] == ["cam1/empty.jpg"]
    text = status(inbox)
    assert "backlog: 0\ndone: 2\nerrors: 1\n" in text and "failing: cam1/empty.jpg: empty file" in text, text

    copy_frame("baboon-3.jpg", cam / "a.jpg")  # rewritten in place: other content, size and mtime
    wait_until(lambda: csv_rows(csv_file)["a.jpg"]["baboon"] != before["baboon"], 20, "a.jpg to be redone", daemon)
    assert daemon.terminate() == 0, daemon.log
    assert "SIGTERM: finishing the current batch" in daemon.log

    rows = csv_rows(csv_file)
    assert set(rows) == {"a.jpg", "b.jpg", "empty.jpg"}
    entry = journal(inbox)["cam1/a.jpg"]
    assert entry["size"] == (cam / "a.jpg").stat().st_size and entry["attempts"] == 0
    # The new values are what `trapcls predict` says about the file as it is now.
    reference = tmp_path / "reference.csv"
    run_predict(PredictConfig(inputs=[cam / "a.jpg"], bundle=tiny_run / "bundle", out=reference))
    assert rows["a.jpg"] == csv_rows(reference)["a.jpg"], "watch and predict disagree about the same file"
    assert rows["a.jpg"]["baboon"] != before["baboon"]

    report = json.loads(status(inbox, "--json"))  # after the daemon stopped
    statuses = [r["status"] for r in rows.values()]
    assert (report["backlog"], report["done"], report["errors"]) == (0, statuses.count("ok"), statuses.count("error"))
    assert "done: 2\nerrors: 1\n" in status(inbox)


def test_status_finds_a_daemon_that_recorded_nothing_by_its_command_line(tmp_path):
    """A daemon that has not written its daemon.json (nor a journal) yet is found among the processes: here a
    stand-in named `trapcls`, run as `trapcls watch inbox --polling --min-free 5` from tmp_path, so its --out is
    its inbox, given relative to its own working folder."""
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    stand_in = tmp_path / "bin" / "trapcls"
    stand_in.parent.mkdir()
    stand_in.write_text(f"#!{sys.executable}\nimport time\ntime.sleep(60)\n")
    stand_in.chmod(0o755)
    # Raw Popen: the point is a process of another name and working folder than `python -m trapcls`.
    proc = subprocess.Popen([str(stand_in), "watch", "inbox", "--polling", "--min-free", "5"], cwd=tmp_path)
    try:
        wait_until(lambda: b"watch" in Path(f"/proc/{proc.pid}/cmdline").read_bytes(), 10, "the stand-in to start")
        assert f"daemon: running (process {proc.pid})\njournal: nothing written yet" in status(inbox)
        report = json.loads(status(inbox, "--json"))
        assert report["daemon"]["pid"] == proc.pid and report["daemon"]["min_free_mib"] == 5.0, report
        assert report["journal"] is None and "backlog" not in report, report
    finally:
        proc.kill()
        proc.wait()
    done = trapcls("status", inbox, rc=1)  # no daemon and no journal: as before, one line
    assert done.stderr.startswith("error: No journal at ") and "Traceback" not in done.stderr, done.stderr


# --- 8. --out elsewhere -------------------------------------------------------------------------------------


def _tree(folder: Path) -> dict[str, tuple[int, int]]:
    """Every entry under `folder` with its size and mtime (folders included: a temp file changes their mtime)."""
    entries = {".": (0, folder.stat().st_mtime_ns)}
    for path in folder.rglob("*"):
        st = path.lstat()
        entries[path.relative_to(folder).as_posix()] = (st.st_size if path.is_file() else 0, st.st_mtime_ns)
    return entries


def test_out_folder_gets_csvs_and_journal_and_the_inbox_is_untouched(watch, tmp_path):
    inbox, out = tmp_path / "inbox", tmp_path / "out"
    copy_frame("baboon-3.jpg", inbox / "cam1" / "a.jpg")
    copy_frame("zebra-3.jpg", inbox / "cam2" / "sub" / "b.jpg")
    copy_frame("buffalo-3.jpg", inbox / "loose.jpg")  # straight in the inbox: the "." folder
    daemon = watch(inbox, out=out)
    copy_frame("elephant-3.jpg", inbox / "cam1" / "c.jpg")  # and one while it runs
    before = _tree(inbox)
    assert daemon.finish() == 0, daemon.log
    assert _tree(inbox) == before, "the daemon wrote into the inbox"
    assert csv_paths(out / "cam1" / "predictions.csv") == {"a.jpg", "c.jpg"}
    assert csv_paths(out / "cam2" / "predictions.csv") == {"sub/b.jpg"}
    assert csv_paths(out / "predictions.csv") == {"loose.jpg"}
    assert (out / ".trapcls" / "journal.sqlite").is_file()
    assert set(journal(out)) == {"cam1/a.jpg", "cam1/c.jpg", "cam2/sub/b.jpg", "loose.jpg"}
    assert sorted(p.relative_to(out).as_posix() for p in out.rglob("*.csv")) == [
        "cam1/predictions.csv", "cam2/predictions.csv", "predictions.csv"]


# --- 9. --all-csv ------------------------------------------------------------------------------------------------


def test_all_csv_has_one_row_per_file_relative_to_the_inbox(watch, tmp_path):
    inbox, all_csv = tmp_path / "inbox", tmp_path / "all.csv"
    copy_frame("baboon-3.jpg", inbox / "cam1" / "a.jpg")
    copy_frame("zebra-3.jpg", inbox / "cam2" / "b.jpg")
    (inbox / "cam2" / "empty.jpg").write_bytes(b"")
    daemon = watch(inbox, all_csv=all_csv, max_attempts=1)
    copy_frame("buffalo-3.jpg", inbox / "cam1" / "c.jpg")
    assert daemon.finish() == 0, daemon.log
    rows = csv_rows(all_csv)
    assert set(rows) == {"cam1/a.jpg", "cam1/c.jpg", "cam2/b.jpg", "cam2/empty.jpg"}
    assert rows["cam2/empty.jpg"]["status"] == "error"
    # The same values as the camera CSVs.
    for camera in ("cam1", "cam2"):
        for name, row in csv_rows(inbox / camera / "predictions.csv").items():
            assert {**row, "path": f"{camera}/{name}"} == rows[f"{camera}/{name}"]


def test_all_csv_is_a_log_a_changed_file_adds_a_row_with_its_new_values(watch, tmp_path):
    """--all-csv is append-only by design (a log of every result); the camera CSVs keep one row per file."""
    inbox, all_csv = tmp_path / "inbox", tmp_path / "all.csv"
    camera_csv = inbox / "cam1" / "predictions.csv"
    copy_frame("baboon-3.jpg", inbox / "cam1" / "a.jpg")
    daemon = watch(inbox, all_csv=all_csv, idle_exit=60)  # stopped with SIGTERM below
    wait_until(lambda: csv_paths(camera_csv) == {"a.jpg"}, 20, "the first row", daemon)
    before = csv_rows(camera_csv)["a.jpg"]
    copy_frame("zebra-3.jpg", inbox / "cam1" / "a.jpg")
    wait_until(lambda: csv_rows(camera_csv)["a.jpg"] != before, 20, "a.jpg to be redone", daemon)
    assert daemon.terminate() == 0, daemon.log
    with open(all_csv, newline="", encoding="utf-8") as f:
        logged = [r for r in csv.DictReader(f) if r["path"] == "cam1/a.jpg"]
    assert [r["label"] for r in logged] == [before["label"], csv_rows(camera_csv)["a.jpg"]["label"]]
    assert logged[-1] == {**csv_rows(camera_csv)["a.jpg"], "path": "cam1/a.jpg"}


def test_polling_watcher_survives_the_inbox_vanishing_and_coming_back(watch, tmp_path):
    """A mount that disappears (here: the inbox renamed away) and comes back; files copied meanwhile are found."""
    inbox, out = tmp_path / "mnt" / "inbox", tmp_path / "out"
    copy_frame("baboon-3.jpg", inbox / "cam1" / "first.jpg")
    daemon = watch(inbox, "--polling", out=out, poll_interval=0.3, rescan_interval=3600, idle_exit=60)
    wait_until(lambda: csv_paths(out / "cam1" / "predictions.csv") == {"first.jpg"}, 20, "the first file", daemon)
    away = tmp_path / "mnt" / "inbox.unmounted"
    inbox.rename(away)
    wait_until(lambda: any("file watcher stopped" in line for line in daemon.lines), 20, "the watcher to notice",
               daemon)
    copy_frame("zebra-3.jpg", away / "cam1" / "copied_while_away.jpg")
    away.rename(inbox)
    copy_frame("buffalo-3.jpg", inbox / "cam1" / "after.jpg")
    wait_until(lambda: csv_paths(out / "cam1" / "predictions.csv") == {"first.jpg", "copied_while_away.jpg",
                                                                        "after.jpg"}, 30, "all three files", daemon)
    assert any("file watcher restarted" in line for line in daemon.lines)
    assert daemon.terminate() == 0, daemon.log


def test_inotify_watcher_survives_the_inbox_being_deleted_and_made_again(watch, tmp_path):
    """inotify follows a renamed folder, but a deleted one ends its watch: a new inbox folder is watched again."""
    inbox, out = tmp_path / "inbox", tmp_path / "out"
    copy_frame("baboon-3.jpg", inbox / "cam1" / "first.jpg")
    daemon = watch(inbox, out=out, rescan_interval=3600, idle_exit=60)
    wait_until(lambda: csv_paths(out / "cam1" / "predictions.csv") == {"first.jpg"}, 20, "the first file", daemon)
    shutil.rmtree(inbox)
    wait_until(lambda: any("file watcher stopped" in line for line in daemon.lines), 20, "the watcher to notice",
               daemon)
    copy_frame("buffalo-3.jpg", inbox / "cam2" / "after.jpg")
    wait_until(lambda: csv_paths(out / "cam2" / "predictions.csv") == {"after.jpg"}, 30, "the new file", daemon)
    assert any("file watcher restarted" in line for line in daemon.lines)
    assert daemon.terminate() == 0, daemon.log


# --- 10. --events ------------------------------------------------------------------------------------------------


def policy_bundle(tiny_run, folder: Path, frames: list[Path]) -> tuple[Path, float]:
    """A copy of the tiny bundle with a certified blank policy whose threshold lies between two of these frames'
    P(blank) below 0.5 (read from a first predict), so the policy and 0.5 disagree about some of them."""
    bundle = Path(shutil.copytree(tiny_run / "bundle", folder / "bundle"))
    first = folder / "first.csv"
    run_predict(PredictConfig(inputs=frames, bundle=bundle, out=first))
    below = sorted({float(r["blank"]) for r in csv_rows(first).values() if float(r["blank"]) < 0.5})
    assert len(below) >= 4, below
    middle = range(len(below) // 4, 3 * len(below) // 4)  # the widest gap in the middle half: far from any frame
    low, high = max(((below[i], below[i + 1]) for i in middle), key=lambda pair: pair[1] - pair[0])
    threshold = (low + high) / 2
    store_blank_policy(bundle, {"threshold": threshold, "target_miss": 0.02, "confidence": 0.95,
                                "animal_frames": 100})
    return bundle, threshold


def blank_column_follows(path: Path, threshold: float, p_blank: str) -> int:
    """Check that every row's is_blank of `path` is P(blank) (column `p_blank`) >= `threshold`; how many rows lie
    between the threshold and 0.5 (blank by the policy, not by the default)."""
    rows = list(csv_rows(path).values())
    assert rows and all(r["is_blank"] == str(float(r[p_blank]) >= threshold).lower() for r in rows), rows
    return sum(threshold <= float(r[p_blank]) < 0.5 for r in rows)


@pytest.mark.slow
def test_events_csv_next_to_each_camera_csv_matches_trapcls_events(tiny_run, tmp_path):
    """The RECONYX burst (real EXIF) lands in cam1 while the daemon runs: one event of 10 frames in cam1/events.csv,
    the same rows `trapcls events` makes from cam1/predictions.csv (deployment named after the camera folder).

    The bundle has a certified blank policy below 0.5: is_blank follows it in the daemon's CSVs, `trapcls events
    --bundle` with that bundle makes a byte-identical events.csv from the same predictions.csv (the demo frames
    straight in the inbox: one deployment, "."), and the bundle without the policy is refused."""
    inbox = tmp_path / "inbox"
    demo = sorted(FRAMES.iterdir())
    bundle, threshold = policy_bundle(tiny_run, tmp_path, demo)
    copy_frame("baboon-3.jpg", inbox / "cam2" / "a.jpg")
    for frame in demo:
        copy_frame(frame.name, inbox / frame.name)
    started: list[Daemon] = []
    try:
        daemon = launch(started, bundle, inbox, "--events")
        burst = sorted((Path(__file__).parent / "data" / "reconyx_burst").glob("*.JPG"))
        (inbox / "cam1").mkdir()
        for frame in burst:
            shutil.copyfile(frame, inbox / "cam1" / frame.name)
        assert daemon.finish() == 0, daemon.log
    finally:
        for process in started:
            process.kill()
    assert f"is_blank: P(blank) >= {threshold:g} (the certified blank policy of " in daemon.log, daemon.log
    with open(inbox / "cam1" / "events.csv", newline="", encoding="utf-8") as f:
        cam1 = list(csv.DictReader(f))
    assert len(cam1) == 1 and cam1[0]["frames"] == "10" and cam1[0]["deployment"] == "cam1"
    assert cam1[0]["event_id"] == "cam1/20210411T204309"
    with open(inbox / "cam2" / "events.csv", newline="", encoding="utf-8") as f:
        cam2 = list(csv.DictReader(f))
    assert len(cam2) == 1 and cam2[0]["untimed"] == "true"  # the demo frame has no EXIF time
    trapcls("events", inbox / "cam1" / "predictions.csv", "--bundle", bundle, "--out", tmp_path / "events.csv")
    with open(tmp_path / "events.csv", newline="", encoding="utf-8") as f:
        again = list(csv.DictReader(f))
    ignore = ("event_id", "deployment")
    assert [{k: v for k, v in r.items() if k not in ignore} for r in again] == \
        [{k: v for k, v in r.items() if k not in ignore} for r in cam1]

    # One blank rule: the policy's, in the frames' CSV and the events' alike, and `trapcls events` agrees to the byte.
    assert blank_column_follows(inbox / "predictions.csv", threshold, "blank") >= 1
    assert blank_column_follows(inbox / "events.csv", threshold, "blank") >= 1  # untimed: one event per frame
    made = trapcls("events", inbox / "predictions.csv", "--bundle", bundle, "--deployment-depth", "0",
                   "--out", tmp_path / "root-events.csv")
    assert f"is_blank: P(blank) >= {threshold:g}" in made.stdout + made.stderr
    assert (tmp_path / "root-events.csv").read_bytes() == (inbox / "events.csv").read_bytes()

    # The same model without the policy (the bundle as trained): its 0.5 is not the rule the CSV was written with.
    refused = trapcls("events", inbox / "predictions.csv", "--bundle", tiny_run / "bundle", "--out",
                      tmp_path / "refused.csv", rc=1)
    errors = [line for line in refused.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "Traceback" not in refused.stderr, refused.stderr
    fits = re.search(r"written with a threshold above ([0-9.e-]+) and at most ([0-9.e-]+)", errors[0])
    assert fits and float(fits[1]) < threshold <= float(fits[2]), errors[0]
    assert not (tmp_path / "refused.csv").exists()
