"""A damaged journal: kept aside, rebuilt from the predictions.csv files, and nothing classified twice.

Real daemon processes over the demo frames in two camera folders, real SQLite files damaged three
ways (garbage, cut to half, first page zeroed), real CSVs. "Nothing classified again" is read from
the daemon's own count ("stopped: N classified") and from CSVs that stay byte-identical.
"""

from __future__ import annotations

import csv
import os
import re
import shutil
import sqlite3
from pathlib import Path

import pytest

from helpers import DEMO, Daemon, csv_rows, journal, launch, trapcls
from trapcls.watch.journal import SCHEMA_VERSION
from trapcls.watch.paths import CSV_NAME, journal_path

# real daemons, journals damaged and rebuilt: about 35 s: slow (full suite and CI).
pytestmark = pytest.mark.slow

FRAMES = DEMO / "frames"
CAMERAS = ("cam1", "cam2")
ASIDE = re.compile(r"journal\.sqlite\.corrupt-\d{8}T\d{6}")


def _run(watch, inbox: Path) -> tuple[int, str]:
    """`trapcls watch INBOX` (the tiny bundle, FAST options: it exits once idle) to its end: exit status and log."""
    daemon = watch(inbox, ready=False)
    return daemon.finish(timeout=120), daemon.log


@pytest.fixture(scope="module")
def finished(tiny_run, tmp_path_factory) -> Path:
    """The demo frames in two camera folders, classified to the end by a real daemon run (copied per test)."""
    inbox = tmp_path_factory.mktemp("finished") / "inbox"
    for camera in CAMERAS:
        shutil.copytree(FRAMES, inbox / camera)
    started: list[Daemon] = []
    try:
        daemon = launch(started, tiny_run / "bundle", inbox, ready=False, idle_exit=1)
        assert daemon.finish(timeout=120) == 0, daemon.log
    finally:
        for process in started:
            process.kill()
    assert all(len(csv_rows(inbox / camera / CSV_NAME)) == 10 for camera in CAMERAS)
    return inbox


@pytest.fixture()
def inbox(finished, tmp_path) -> Path:
    return Path(shutil.copytree(finished, tmp_path / "inbox"))


def _garbage(path: Path) -> None:
    path.write_bytes(os.urandom(path.stat().st_size))


def _half(path: Path) -> None:
    os.truncate(path, path.stat().st_size // 2)


def _first_page_zeroed(path: Path) -> None:
    with open(path, "r+b") as f:
        f.write(bytes(4096))  # SQLite's default page size: the header and the schema are gone


@pytest.mark.parametrize("damage", [_garbage, _half, _first_page_zeroed], ids=["garbage", "half", "zeroed-page"])
def test_damaged_journal_is_kept_aside_rebuilt_and_nothing_is_classified_again(inbox, watch, tmp_path, damage):
    csv_bytes = {camera: (inbox / camera / CSV_NAME).read_bytes() for camera in CAMERAS}
    rows_before = csv_rows(inbox / "cam1" / CSV_NAME)
    path = journal_path(inbox)
    damage(path)
    damaged = path.read_bytes()
    away = tmp_path / "zebra-3.jpg"
    os.rename(inbox / "cam2" / "zebra-3.jpg", away)  # not there during the rebuild, like a share not mounted yet

    daemon = watch(inbox)
    assert "was damaged (" in daemon.log and "moved it aside to " in daemon.log, daemon.log
    assert "journal rebuilt: 20 rows recovered from 2 CSVs (20 done, 0 errors; 1 for files not in the inbox now)" \
        in daemon.log, daemon.log
    os.rename(away, inbox / "cam2" / "zebra-3.jpg")  # back again: its row stands, it is not classified again
    shutil.copyfile(FRAMES / "baboon-3.jpg", inbox / "cam1" / "new.jpg")  # new work after the rebuild
    assert daemon.finish() == 0, daemon.log

    assert "stopped: 1 classified, 0 errors" in daemon.log, daemon.log  # new.jpg and nothing else
    assert (inbox / "cam2" / CSV_NAME).read_bytes() == csv_bytes["cam2"]  # not even rewritten
    rows = csv_rows(inbox / "cam1" / CSV_NAME)  # rewritten for new.jpg: the old rows as they were, new.jpg once
    assert {name: row for name, row in rows.items() if name != "new.jpg"} == rows_before
    assert rows["new.jpg"]["status"] == "ok"
    kept = [p for p in path.parent.iterdir() if p.name != path.name]
    assert len(kept) == 1 and ASIDE.fullmatch(kept[0].name) and kept[0].read_bytes() == damaged, kept
    entries = journal(inbox)
    assert len(entries) == 21 and {e["status"] for e in entries.values()} == {"done"}
    assert entries["cam2/zebra-3.jpg"]["size"] == (inbox / "cam2" / "zebra-3.jpg").stat().st_size  # taken as seen
    db = sqlite3.connect(path)
    try:
        assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    finally:
        db.close()


def test_damage_only_quick_check_sees_is_found_and_a_torn_csv_is_kept_aside(inbox, watch):
    """The root page of the files table zeroed: the schema and meta still read, only `PRAGMA quick_check` sees it
    (without it the daemon would fail later, at every start). A CSV cut mid-line cannot be imported: it is kept
    aside and its frames are classified again. So is a frame replaced after its CSV was written (a reused card
    numbering from IMG_0001 again), as a sound journal would have it."""
    path = journal_path(inbox)
    with open(path, "r+b") as f:
        f.seek(4096)  # page 2: the first table created, `files`
        f.write(bytes(4096))
    torn = inbox / "cam2" / CSV_NAME
    data = torn.read_bytes()
    torn.write_bytes(data[: len(data) - 40])
    cam1_before = csv_rows(inbox / "cam1" / CSV_NAME)
    shutil.copyfile(FRAMES / "zebra-3.jpg", inbox / "cam1" / "baboon-3.jpg")

    rc, log = _run(watch, inbox)
    assert rc == 0, log
    assert "was damaged (quick_check: " in log, log
    assert f"{torn} cannot be imported (" in log, log
    assert "journal rebuilt: 9 rows recovered from 1 CSVs" in log, log
    assert "1 files changed after their row was written will be classified again" in log, log
    assert "stopped: 11 classified, 0 errors" in log, log  # cam2's frames and the new baboon-3.jpg
    kept = [p for p in torn.parent.iterdir() if p.name.startswith(f"{CSV_NAME}.unusable-")]
    assert len(kept) == 1 and kept[0].read_bytes() == data[: len(data) - 40]
    assert len(csv_rows(torn)) == 10
    cam1 = csv_rows(inbox / "cam1" / CSV_NAME)
    assert {k: v for k, v in cam1.items() if k != "baboon-3.jpg"} == \
        {k: v for k, v in cam1_before.items() if k != "baboon-3.jpg"}
    assert {**cam1["baboon-3.jpg"], "path": ""} == {**cam1["zebra-3.jpg"], "path": ""}  # the zebra now


def test_journal_of_a_newer_trapcls_is_refused_and_left_alone(inbox, watch):
    path = journal_path(inbox)
    db = sqlite3.connect(path)
    with db:
        db.execute("UPDATE meta SET value = '99' WHERE key = 'schema_version'")
    db.close()
    before = path.read_bytes()
    message = (f"was written by a newer trapcls (schema 99; this one reads {SCHEMA_VERSION}): upgrade trapcls or "
               "use a new --out")
    rc, log = _run(watch, inbox)
    assert rc == 1 and message in log and "Traceback" not in log, log
    assert path.read_bytes() == before and sorted(p.name for p in path.parent.iterdir()) == ["journal.sqlite"]
    status = trapcls("status", inbox, rc=1)
    assert message in status.stderr, status.stderr


@pytest.mark.parametrize("damage", [_garbage, _half], ids=["garbage", "half"])
def test_status_on_a_damaged_journal_says_so_in_one_line(inbox, damage):
    damage(journal_path(inbox))
    done = trapcls("status", inbox, rc=1)
    assert done.stdout == "", (done.stdout, done.stderr)
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: The journal ") and " is damaged (" in lines[0], lines
    assert "Traceback" not in done.stderr


def test_csv_of_another_model_is_not_imported(inbox, watch, tmp_path):
    """Rebuilding would overwrite that model's results: the daemon stops, as for a journal of another model,
    and goes on once the CSV is moved away (its frames are then classified by this model)."""
    other = inbox / "cam2" / CSV_NAME
    with open(other, newline="", encoding="utf-8") as f:
        table = list(csv.reader(f))
    for row in table[1:]:
        row[-1] = "other-model v1 sha256:0123456789ab"
    with open(other, "w", newline="", encoding="utf-8") as f:
        csv.writer(f, lineterminator="\n").writerows(table)
    other_bytes, cam1_bytes = other.read_bytes(), (inbox / "cam1" / CSV_NAME).read_bytes()
    path = journal_path(inbox)
    _garbage(path)
    damaged = path.read_bytes()

    rc, log = _run(watch, inbox)
    assert rc == 1 and "Traceback" not in log, log
    assert f"{other} (other-model v1 sha256:0123456789ab)" in log, log
    assert path.read_bytes() == damaged and sorted(p.name for p in path.parent.iterdir()) == ["journal.sqlite"]
    assert other.read_bytes() == other_bytes

    os.rename(other, tmp_path / "other-model.csv")
    rc, log = _run(watch, inbox)
    assert rc == 0, log
    assert "journal rebuilt: 10 rows recovered from 1 CSVs" in log, log
    assert "stopped: 10 classified, 0 errors" in log, log  # cam2's frames, by this model
    assert (inbox / "cam1" / CSV_NAME).read_bytes() == cam1_bytes
    rows = csv_rows(inbox / "cam2" / CSV_NAME)
    assert len(rows) == 10 and all(r["model"] != "other-model v1 sha256:0123456789ab" for r in rows.values())
