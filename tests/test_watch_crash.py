"""The watch daemon under fire: SIGKILL at random moments while cards keep arriving, SIGTERM mid-batch, the journal.

Real processes, real frames, real SQLite. The crash test prints its figures (files, kills,
missing, duplicates) so the reliability report can quote them.
"""

from __future__ import annotations

import csv
import os
import random
import shutil
import signal
import sqlite3
import threading
import time
from collections import Counter
from pathlib import Path

import pytest

from trapcls.watch.journal import Entry, Journal
from trapcls.watch.paths import CSV_NAME, EVENTS_NAME, journal_path

KILLS = 22


# The daemons here: --events, batches of 8, a rescan every second, no idle exit unless given; not waited for
# (a kill may land during start-up), and SIGKILLed or SIGTERMed by the test.
CRASH = {"settle": 0.3, "rescan_interval": 1, "flush_interval": 0.3, "batch_size": 8, "idle_exit": None,
         "ready": False}


def _rows(csv_path: Path) -> list[dict]:
    with open(csv_path, newline="", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    for row in rows:  # a torn or mangled row would miss cells or break the status column
        assert row["status"] in ("ok", "error") and None not in row.values(), row
    return rows


def _events(events_path: Path) -> list[dict]:
    with open(events_path, newline="", encoding="utf-8") as fh:
        events = list(csv.DictReader(fh))
    assert all(None not in e.values() and int(e["frames"]) >= 1 for e in events)
    return events


def _real_frames(shared_data: Path) -> list[Path]:
    frames = sorted(p for p in shared_data.rglob("*") if p.suffix.lower() in (".jpg", ".jpeg", ".png"))
    return frames


def _feed(frames: list[Path], inbox: Path, stop: threading.Event) -> None:
    """Copy frames into three camera folders a few at a time, half of them rsync-style (temp name, then rename)."""
    rng = random.Random(1)
    for i, frame in enumerate(frames):
        if stop.is_set():
            return
        folder = inbox / f"cam{i % 3}" / "DCIM" / "100MEDIA"
        folder.mkdir(parents=True, exist_ok=True)
        target = folder / f"{i:04d}_{frame.name}"
        if i % 2:
            temp = folder / f".{target.name}.{rng.randrange(1 << 30):x}"
            shutil.copyfile(frame, temp)
            os.rename(temp, target)
        else:
            shutil.copyfile(frame, target)
        if i % 10 == 9:  # about 25 s in all: cards keep arriving through the kills
            time.sleep(rng.uniform(0.3, 1.3))


@pytest.mark.slow
def test_sigkill_at_random_moments_loses_nothing_and_duplicates_nothing(watch, shared_data, tmp_path):
    frames = _real_frames(shared_data)[:300]
    assert len(frames) >= 200
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    stop = threading.Event()
    feeder = threading.Thread(target=_feed, args=(frames, inbox, stop), daemon=True)
    feeder.start()
    rng, kills = random.Random(7), 0
    try:
        for _ in range(KILLS):
            daemon = watch(inbox, "--events", **CRASH)
            time.sleep(rng.uniform(0.4, 2.5))  # startup, scanning, classifying, writing: anywhere
            daemon.kill()  # SIGKILL
            kills += 1
            for csv_path in inbox.glob(f"*/{CSV_NAME}"):
                _rows(csv_path)  # every CSV parses after every kill: the writes are atomic
            for events_path in inbox.glob(f"*/{EVENTS_NAME}"):
                _events(events_path)
        feeder.join(timeout=120)
        assert not feeder.is_alive()
        before_final = sum(len(_rows(p)) for p in inbox.glob(f"*/{CSV_NAME}"))
        final = watch(inbox, "--events", **{**CRASH, "idle_exit": 3})
        assert final.finish(timeout=300) == 0, final.log[-3000:]
    finally:
        stop.set()
    expected = {f"cam{i % 3}": set() for i in range(3)}
    for i, frame in enumerate(frames):
        expected[f"cam{i % 3}"].add(f"DCIM/100MEDIA/{i:04d}_{frame.name}")
    missing = duplicates = rows_total = 0
    for camera, names in expected.items():
        rows = _rows(inbox / camera / CSV_NAME)
        counts = Counter(r["path"] for r in rows)
        rows_total += len(rows)
        duplicates += sum(c - 1 for c in counts.values())
        missing += len(names - set(counts))
        assert set(counts) <= names, set(counts) - names  # no temp names, nothing invented
        assert all(r["status"] == "ok" for r in rows)
        # events.csv is rebuilt with its CSV: after the last restart it covers every frame, once.
        assert sum(int(e["frames"]) for e in _events(inbox / camera / EVENTS_NAME)) == len(rows)
    journal = sqlite3.connect(journal_path(inbox))
    integrity = journal.execute("PRAGMA integrity_check").fetchone()[0]
    pending = journal.execute("SELECT COUNT(*) FROM files WHERE status = 'pending'").fetchone()[0]
    journal.close()
    print(f"\ncrash test: {len(frames)} files in 3 camera folders, {kills} SIGKILLs while copying, "
          f"({before_final} rows written between kills), {rows_total} rows out after the last restart, "
          f"{missing} missing, {duplicates} duplicated, journal integrity {integrity}")
    assert before_final > 0  # the killed daemons did real work, not just start-up
    assert kills >= 20 and missing == 0 and duplicates == 0 and rows_total == len(frames)
    assert integrity == "ok" and pending == 0


def test_sigterm_mid_batch_exits_0_quickly_with_whole_rows(watch, shared_data, tmp_path):
    inbox = tmp_path / "inbox"
    camera = inbox / "cam"
    camera.mkdir(parents=True)
    for i, frame in enumerate(_real_frames(shared_data)[:200]):
        shutil.copyfile(frame, camera / f"{i:04d}{frame.suffix}")
    daemon = watch(inbox, "--events", **{**CRASH, "settle": 0})
    journal_file = journal_path(inbox)
    deadline = time.monotonic() + 60
    done = 0
    while time.monotonic() < deadline and done < 16:  # wait until it is busy classifying
        time.sleep(0.2)
        if journal_file.exists():
            with sqlite3.connect(f"file:{journal_file}?mode=ro", uri=True) as db:
                done = db.execute("SELECT COUNT(*) FROM files WHERE status = 'done'").fetchone()[0]
    assert done >= 16, "the daemon never got going"
    sent = time.monotonic()
    rc = daemon.terminate(timeout=30, sig=signal.SIGTERM)
    took = time.monotonic() - sent
    assert rc == 0 and took < 10, (rc, took, daemon.log[-2000:])
    assert "SIGTERM: finishing the current batch" in daemon.log
    rows = _rows(camera / CSV_NAME)
    journal = Journal(journal_file, readonly=True)
    try:
        finished = journal.finished("cam")
        assert journal.integrity_check() == "ok"
    finally:
        journal.close()
    assert len(rows) == len(finished) and 16 <= len(rows) < 200  # stopped part-way, everything finished is written
    print(f"\nSIGTERM: exited 0 in {took:.2f} s with {len(rows)} of 200 rows written")


def _entry(journal: Journal, path: str) -> Entry:
    return next(e for e in journal.pending() if e.path == path)


def test_journal_redoes_changed_files_gives_up_after_max_attempts_and_is_bound_to_its_model(tmp_path):
    from trapcls.core.system.exceptions import DataError

    journal = Journal(tmp_path / "j.sqlite")
    journal.bind_model(("a", "b"), "m1 sha256:000000000000")
    assert journal.observe([("cam/1.jpg", "cam", 10, 1), ("cam/2.jpg", "cam", 20, 2)]) == 2
    assert journal.observe([("cam/1.jpg", "cam", 10, 1)]) == 0  # unchanged: nothing to do
    one, two = _entry(journal, "cam/1.jpg"), _entry(journal, "cam/2.jpg")
    journal.record([(one, [0.25, 0.75], None)], [(two, "truncated JPEG", None)], max_attempts=2, backoff=0.0)
    assert [e.path for e in journal.finished("cam")] == ["cam/1.jpg"] and journal.dirty_folders() == ["cam"]
    final = journal.record([], [(_entry(journal, "cam/2.jpg"), "truncated JPEG", None)], max_attempts=2,
                           backoff=0.0)
    assert [e.path for e in final] == ["cam/2.jpg"]
    assert {e.path: e.status for e in journal.finished("cam")} == {"cam/1.jpg": "done", "cam/2.jpg": "error"}
    assert journal.known() == {e.path: (e.size, e.mtime_ns) for e in journal.finished()}
    stats = journal.stats()
    assert stats["done"] == 1 and stats["errors"] == 1 and stats["backlog"] == 0
    assert stats["failing"][0]["path"] == "cam/2.jpg" and stats["failing"][0]["attempts"] == 2
    # The file changed after it was done: pending again, attempts reset.
    assert journal.observe([("cam/1.jpg", "cam", 11, 5)]) == 1
    redo = _entry(journal, "cam/1.jpg")
    assert redo.attempts == 0 and redo.probs is None
    # A result for a version of the file that is no longer there does not count.
    journal.record([(one, [0.5, 0.5], None)], [], max_attempts=2, backoff=0.0)
    assert _entry(journal, "cam/1.jpg").status == "pending"
    journal.written("cam", as_of=time.time())
    assert journal.dirty_folders() == []
    with pytest.raises(DataError, match="another model"):
        journal.bind_model(("a", "b", "c"), "m1 sha256:000000000000")
    with pytest.raises(DataError, match="written by the model 'm1 sha256:000000000000'; this is 'm2"):
        journal.bind_model(("a", "b"), "m2 sha256:111111111111")  # same classes, another model
    journal.bind_model(("a", "b"), "m1 sha256:000000000000")  # the same model again: fine
    assert journal.integrity_check() == "ok"
    journal.close()
    reader = Journal(tmp_path / "j.sqlite", readonly=True)
    assert reader.stats()["errors"] == 1 and reader.classes() == ["a", "b"]
    reader.close()
    db = sqlite3.connect(tmp_path / "j.sqlite")
    assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    db.close()
