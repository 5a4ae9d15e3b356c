"""A full, read-only or vanished output disk: one-shot commands stop in one line, `watch` pauses and resumes.

Real processes on real file systems: a small tmpfs is mounted as the output and filled with a
dummy file while the commands run, a folder is bind-mounted read-only, a mount is remounted
read-only. Mounting needs root or CAP_SYS_ADMIN (CI runs as root); without it these tests skip.
"""

from __future__ import annotations

import csv
import errno
import io
import json
import os
import shutil
import subprocess
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from pathlib import Path

import pytest

import helpers
from helpers import DEMO, Daemon, NotifyListener, csv_rows, journal, launch, status, wait_until

# real daemons on a small tmpfs, filled and freed: about 40 s: slow (full suite and CI).
pytestmark = pytest.mark.slow

FRAMES = sorted((DEMO / "frames").iterdir())
FILLER = "filler.bin"


# --- mounts ------------------------------------------------------------------------------------------------


@pytest.fixture()
def mounts():
    """mount(kind, target, kib=...) -> target; everything mounted is unmounted at teardown (innermost first)."""
    done: list[Path] = []

    def mount(kind: str, target: Path, kib: int = 0) -> Path:
        target.mkdir(parents=True, exist_ok=True)
        args = {"tmpfs": ["-t", "tmpfs", "-o", f"size={kib}k", "tmpfs"], "bind": ["--bind", str(target)],
                "ro": ["-o", "remount,ro"], "bind-ro": ["-o", "remount,bind,ro"]}[kind]
        try:
            result = subprocess.run(["mount", *args, str(target)], capture_output=True, text=True, timeout=30)
        except FileNotFoundError:
            pytest.skip("no mount command: cannot make a small file system to fill")
        if result.returncode and not done:
            pytest.skip(f"cannot mount a file system to fill (needs root or CAP_SYS_ADMIN): {result.stderr.strip()}")
        assert result.returncode == 0, result.stderr
        if kind in ("tmpfs", "bind"):
            done.append(target)
        return target

    try:
        yield mount
    finally:
        for target in reversed(done):
            if subprocess.run(["umount", str(target)], capture_output=True).returncode:
                subprocess.run(["umount", "-l", str(target)], capture_output=True)


def fill(disk: Path, leave: int = 0) -> Path:
    """Fill the file system of `disk` with one dummy file, then give `leave` bytes back; the dummy's path."""
    filler = disk / FILLER
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT | os.O_APPEND)
    try:
        chunk = b"\0" * (64 << 10)
        while len(chunk) >= 4096:
            try:
                os.write(fd, chunk)
            except OSError as exc:
                assert exc.errno == errno.ENOSPC, exc
                chunk = chunk[: len(chunk) // 2]
    finally:
        os.close(fd)
    os.truncate(filler, max(filler.stat().st_size - leave, 0))
    return filler


# Every command here is expected to stop, cleanly or not: the exit status is each test's to check.
trapcls = partial(helpers.trapcls, rc=None, here=False, timeout=120)


def one_error_line(done: subprocess.CompletedProcess) -> str:
    """The single `error:` line of a command that stopped cleanly (exit 1, no traceback)."""
    shown = f"rc={done.returncode}\nstdout:\n{done.stdout}\nstderr:\n{done.stderr}"
    assert done.returncode == 1, shown
    assert "Traceback" not in done.stderr and "Exception ignored" not in done.stderr, shown
    errors = [line for line in done.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, shown
    return errors[0]


# --- one-shot commands -------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def job(tiny_run, tmp_path_factory):
    """96 real frames in three camera folders, and the CSV of an uninterrupted predict on a normal disk."""
    root = tmp_path_factory.mktemp("job")
    for i in range(96):
        target = root / "in" / f"cam{i % 3}" / f"IMG_{i:04d}.jpg"
        target.parent.mkdir(parents=True, exist_ok=True)
        os.link(FRAMES[i % len(FRAMES)], target)
    reference = root / "reference.csv"
    done = trapcls("predict", root / "in", "--bundle", tiny_run / "bundle", "--out", reference)
    assert done.returncode == 0, done.stderr
    return root / "in", reference


def test_predict_on_a_full_disk_stops_in_one_line_and_the_same_command_finishes(job, tiny_run, mounts, tmp_path):
    images, reference = job
    disk = mounts("tmpfs", tmp_path / "disk", kib=1024)
    filler = fill(disk, leave=8192)  # room for the header and a few batches, not for all 96 rows
    out = disk / "predictions.csv"
    command = ("predict", images, "--bundle", tiny_run / "bundle", "--out", out, "--batch-size", "4")

    line = one_error_line(trapcls(*command))
    assert f"disk full writing {out}" in line and "run the same command again" in line, line
    data = out.read_bytes()
    complete = data[: data.rfind(b"\n") + 1]  # a torn last line is allowed: the next run cuts it
    rows = list(csv.reader(io.StringIO(complete.decode())))
    assert rows[0] == reference.read_text().splitlines()[0].split(",")
    assert 0 < len(rows) - 1 < 96 and all(len(row) == len(rows[0]) for row in rows), "the rows so far are whole"

    filler.unlink()
    done = trapcls(*command)
    assert done.returncode == 0, done.stderr
    assert out.read_bytes() == reference.read_bytes()  # as if nothing had happened


def test_events_convert_merge_adapt_on_a_full_disk_stop_in_one_line_and_leave_nothing(job, tiny_run, mounts, tmp_path):
    _, reference = job
    disk = mounts("tmpfs", tmp_path / "disk", kib=256)
    fill(disk)
    commands = {
        disk / "events.csv": ("events", reference, "--out", disk / "events.csv"),
        disk / "md.json": ("convert", reference, "--to", "megadetector", "--out", disk / "md.json"),
        disk / "dp": ("convert", reference, "--to", "camtrap-dp", "--out", disk / "dp", "--timezone", "+01:00"),
        disk / "merged.csv": ("merge", reference, "--out", disk / "merged.csv"),
        disk / "adapted.csv": ("adapt", reference, "--bundle", tiny_run / "bundle", "--out", disk / "adapted.csv"),
    }
    with ThreadPoolExecutor(max_workers=3) as pool:
        results = dict(zip(commands, pool.map(lambda args: trapcls(*args), commands.values())))
    for target, done in results.items():
        line = one_error_line(done)
        assert "disk full writing" in line and str(target) in line and "free space" in line, line
    assert sorted(p.name for p in disk.iterdir()) == [FILLER], "a partial file or temp file was left behind"


def test_a_read_only_output_is_refused_at_start_in_one_line(job, tiny_run, mounts, tmp_path):
    images, _ = job
    disk = mounts("tmpfs", tmp_path / "disk", kib=1024)
    (disk / "out").mkdir()
    mounts("ro", disk)
    inbox = tmp_path / "inbox"
    shutil.copytree(images / "cam0", inbox / "cam0")
    with ThreadPoolExecutor(max_workers=2) as pool:
        watched = pool.submit(trapcls, "watch", inbox, "--bundle", tiny_run / "bundle", "--out", disk / "out",
                              "--idle-exit", "1", timeout=60)
        predicted = pool.submit(trapcls, "predict", images, "--bundle", tiny_run / "bundle", "--out",
                                disk / "out" / "p.csv", timeout=60)
    line = one_error_line(watched.result())
    assert f"Cannot write {disk / 'out'}" in line and "Read-only file system" in line and "--out" in line, line
    line = one_error_line(predicted.result())
    assert str(disk / "out") in line and "Read-only file system" in line, line
    assert "images ->" not in predicted.result().stdout  # refused before classifying
    assert list((disk / "out").iterdir()) == []


# --- watch: pause and resume -------------------------------------------------------------------------------


@pytest.fixture()
def daemons(tiny_run):
    """Start `trapcls watch INBOX --bundle <tiny> --out OUT ...` (FAST options, no idle exit); killed at teardown."""
    started: list[Daemon] = []

    def start(inbox: Path, out: Path, *, env: dict[str, str] | None = None, ready: bool = True, **options) -> Daemon:
        return launch(started, tiny_run / "bundle", inbox, "--out", str(out), env=env, ready=ready,
                      **{"idle_exit": None, **options})

    try:
        yield start
    finally:
        for daemon in started:
            daemon.kill()


def copy_in(names: list[str], folder: Path) -> set[str]:
    """Copy demo frames into a camera folder (real writes, as a card copy does); their CSV paths."""
    folder.mkdir(parents=True, exist_ok=True)
    for name in names:
        shutil.copyfile(DEMO / "frames" / name, folder / name)
    return set(names)


def rows_of(out: Path, camera: str) -> set[str]:
    path = out / camera / "predictions.csv"
    return set(csv_rows(path)) if path.exists() else set()


def test_watch_pauses_on_a_full_disk_survives_a_restart_and_resumes_with_every_frame_once(mounts, daemons, tmp_path):
    disk = mounts("tmpfs", tmp_path / "disk", kib=4096)
    inbox, out = tmp_path / "inbox", disk / "out"
    names = [p.name for p in FRAMES]
    expected = {"cam1": copy_in(names[:3], inbox / "cam1"), "cam2": set()}
    address = f"\0trapcls-test-{uuid.uuid4().hex}"
    listener = NotifyListener(address)
    options = {"min_free": 0, "all_csv": out / "all.csv",
               "env": {"NOTIFY_SOCKET": "@" + address[1:], "WATCHDOG_USEC": "200000"}}
    try:
        first = daemons(inbox, out, **options)
        wait_until(lambda: rows_of(out, "cam1") == expected["cam1"], 30, "the first rows", first)

        filler = fill(disk)  # the disk is full while a card's frames keep arriving
        expected["cam1"] |= copy_in(names[3:6], inbox / "cam1")
        expected["cam2"] |= copy_in(names[6:], inbox / "cam2")
        wait_until(lambda: "paused: disk full at " in first.log, 30, "the daemon to pause", first)
        paused_at = len(listener.messages)
        report = status(out)
        assert "daemon: paused: disk full at " in report, report
        assert json.loads(status(out, "--json"))["daemon"]["state"] == "paused"
        time.sleep(2.5)  # paused a while: the watchdog must keep being fed
        assert first.running(), first.log
        during = listener.messages[paused_at:]
        assert sum(m == "WATCHDOG=1" for m in during) >= 3, during
        paused = [m for m in listener.messages if m.startswith("STATUS=paused: disk full at ") and str(out) in m]
        assert paused, listener.messages

        first.kill()  # a crash (or a reboot) while the disk is full: the restarted daemon must wait, not exit
        daemon = daemons(inbox, out, ready=False, **options)
        wait_until(lambda: "paused: disk full at " in daemon.log, 60, "the restarted daemon to pause", daemon)
        time.sleep(1)
        assert daemon.running(), daemon.log
        assert "daemon: paused: disk full at " in status(out)

        filler.unlink()
        wait_until(lambda: "resumed after" in daemon.log, 30, "the daemon to resume", daemon)
        wait_until(lambda: all(rows_of(out, cam) == names for cam, names in expected.items()), 30,
                   "every frame's row", daemon)
        assert "daemon: running" in status(out)
        assert daemon.terminate() == 0, daemon.log
    finally:
        messages = listener.close()
    assert sum(m.startswith("READY=1") for m in messages) == 2, messages  # one per process
    for log in (first.log, daemon.log):
        assert "Traceback" not in log, log
        assert log.count("paused: disk full") == 1, log  # logged once (then once a minute)
    for cam, frames in expected.items():
        assert rows_of(out, cam) == frames  # csv_rows fails on a duplicated row
    assert set(csv_rows(out / "all.csv")) == {f"{cam}/{n}" for cam, frames in expected.items() for n in frames}
    entries = journal(out)
    assert sorted(entries) == sorted(f"{cam}/{n}" for cam, frames in expected.items() for n in frames)
    assert {e["status"] for e in entries.values()} == {"done"}


def test_watch_keeps_its_reserve_waits_out_a_read_only_folder_and_a_full_disk_at_start(mounts, daemons, tmp_path):
    disk = mounts("tmpfs", tmp_path / "disk", kib=4096)
    inbox, out = tmp_path / "inbox", disk / "out"
    names = [p.name for p in FRAMES]
    expected = copy_in(names[:2], inbox / "cam1")
    daemon = daemons(inbox, out, min_free=2)
    wait_until(lambda: rows_of(out, "cam1") == expected, 30, "the first rows", daemon)

    filler = fill(disk, leave=1 << 20)  # 1 MiB left: below the 2 MiB reserve, though writes would still fit
    wait_until(lambda: "paused: less than 2 MiB free (--min-free)" in daemon.log, 15, "the reserve pause", daemon)
    expected |= copy_in(names[2:4], inbox / "cam1")
    assert "daemon: paused: less than 2 MiB free" in status(out)
    time.sleep(1.5)
    assert rows_of(out, "cam1") == expected - set(names[2:4]), "work was taken below the reserve"
    filler.unlink()
    wait_until(lambda: rows_of(out, "cam1") == expected, 30, "the rows after the reserve pause", daemon)

    mounts("bind", out / "cam1")  # the camera folder turns read-only (as a failing disk remounts itself)
    mounts("bind-ro", out / "cam1")
    expected |= copy_in(names[4:6], inbox / "cam1")
    wait_until(lambda: "paused: read-only file system at " in daemon.log, 30, "the read-only pause", daemon)
    assert f"{out / 'cam1' / 'predictions.csv'}" in daemon.log
    assert "daemon: paused: read-only file system" in status(out)
    assert subprocess.run(["umount", str(out / "cam1")], capture_output=True).returncode == 0
    wait_until(lambda: rows_of(out, "cam1") == expected, 30, "the rows after the read-only pause", daemon)
    assert daemon.terminate() == 0, daemon.log

    # Started on a full disk (the journal was closed cleanly, so SQLite must make its -shm file anew and
    # cannot even open it): the daemon waits, paused, rather than exit into a restart loop.
    filler = fill(disk)
    again = daemons(inbox, out, ready=False, min_free=0)
    wait_until(lambda: "paused: disk full at " in again.log, 60, "the daemon to wait at start", again)
    time.sleep(1)
    assert again.running(), again.log
    assert f"daemon: paused: disk full at {out}" in status(out)  # it could not record itself: found, and inferred
    filler.unlink()
    again.wait_ready()
    expected |= copy_in(names[6:7], inbox / "cam1")
    wait_until(lambda: rows_of(out, "cam1") == expected, 30, "the rows after starting on a full disk", again)
    assert again.terminate() == 0, again.log
    for log in (daemon.log, again.log):
        assert "Traceback" not in log, log
    assert {e["status"] for e in journal(out).values()} == {"done"} and len(journal(out)) == len(expected)


def test_status_of_a_daemon_that_started_on_a_full_disk_says_it_runs_paused_and_why(mounts, daemons, tmp_path):
    """Full before the daemon ever wrote a byte: no daemon.json, maybe no journal. `trapcls status` finds the
    process itself (its --out is this folder) and reads the pause from the disk, as for a running daemon."""
    disk = mounts("tmpfs", tmp_path / "disk", kib=1024)
    inbox, out = tmp_path / "inbox", disk / "out"
    expected = copy_in([p.name for p in FRAMES[:2]], inbox / "cam1")
    filler = fill(disk)
    daemon = daemons(inbox, out, ready=False, min_free=0)
    wait_until(lambda: "paused: disk full at " in daemon.log, 60, "the daemon to wait at start", daemon)
    assert not (out / ".trapcls" / "daemon.json").exists()

    report = status(out)
    assert f"daemon: paused: disk full at {out}" in report and " MiB free now)" in report, report
    assert "not running" not in report and "nothing written yet" in report, report
    state = json.loads(status(out, "--json"))
    assert state["daemon"]["state"] == "paused" and state["daemon"]["reason"] == "disk full", state
    assert state["daemon"]["path"] == str(out) and state["daemon"]["pid"] == daemon.proc.pid, state
    assert state["daemon"]["free_mib"] < 1 and state["daemon"]["inferred"] is True, state
    assert state["journal"] is None, state  # nothing written yet: no counts, not an error

    filler.unlink()
    daemon.wait_ready()
    wait_until(lambda: rows_of(out, "cam1") == expected, 30, "the rows once there is room", daemon)
    assert f"daemon: running (process {daemon.proc.pid})" in status(out)
    assert daemon.terminate() == 0, daemon.log
    report = status(out)
    assert "daemon: not running" in report and "done: 2" in report, report
    assert "was damaged" not in daemon.log and "Traceback" not in daemon.log, daemon.log  # no empty journal left
    assert not [p.name for p in (out / ".trapcls").iterdir() if ".corrupt-" in p.name]
