"""Every exit status each command can return, each with a real case: the table of docs/exit-codes.md, checked.

0 done, 1 a failure explained in one `error:` line, 2 bad usage (any option value outside what it
accepts, whoever checks it), 130 Ctrl-C with one line saying what was kept and how to go on; never a
traceback. The 0/1/2 cases run through `trapcls.cli.main` in this process (helpers.trapcls), `watch`
as a real process. Ctrl-C is a real SIGINT to a real process for predict, merge and train; for every
command, the library call it makes raises KeyboardInterrupt in this process. Ctrl-C to a running `watch`
finishes its batch, writes the CSVs and exits 0, as SIGTERM does.
"""

from __future__ import annotations

import errno
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from helpers import DEMO, REPO, journal, make_bad_inputs, trapcls, wait_until, write_jpeg

ARCH = "--arch test_efficientnet"
# (command, exit status, arguments with {placeholders} for the paths of `ground`, what stdout + stderr must hold)
CASES: list[tuple[str, int, str, str]] = [
    ("train", 0, "train {train} --out {out} " + ARCH + " --epochs 1 --img-size 32 --workers 0 --no-export",
     "best epoch 1"),
    ("train", 1, "train {missing} --out {out} " + ARCH, "{missing}"),
    ("train", 2, "train {train} --out {out} " + ARCH + " --epochs 0",
     "Invalid value for '--epochs': must be at least 1"),
    ("export onnx", 0, "export onnx {run} --out {out}", "parity on"),
    ("export onnx", 1, "export onnx {missing} --out {out}", "{missing}"),
    ("export onnx", 2, "export onnx {run} --out {out} --fp16 --int8", "choose one of --fp16 and --int8"),
    ("export tensorrt", 0, "export tensorrt {bundle_copy}", "verified on"),
    ("export tensorrt", 1, "export tensorrt {folder}", "{folder}|trapcls[tensorrt]"),
    ("export tensorrt", 2, "export tensorrt {bundle} --min-batch 8 --max-batch 2", "Invalid value for '--"),
    ("export openvino", 0, "export openvino {bundle_copy}", "predict --backend openvino will run"),
    ("export openvino", 1, "export openvino {folder}", "{folder}"),
    ("export openvino", 2, "export openvino {bundle} --verify-images", "'--verify-images' requires an argument"),
    ("predict", 0, "predict {imgs} --bundle {bundle} --out {out_csv}", "images -> {out_csv}"),
    ("predict", 1, "predict {bad_imgs} --bundle {bundle} --out {out_csv} --strict",
     "error: 3 images could not be read (--strict)"),
    ("predict", 2, "predict {imgs} --bundle {bundle} --out {out_csv} --batch-size 0",
     "Invalid value for '--batch-size': must be at least 1"),
    ("merge", 0, "merge {pred_csv} --out {out_csv}", "rows from 1 files"),
    ("merge", 1, "merge {missing} --out {out_csv}", "{missing}"),
    ("merge", 2, "merge {pred_csv}", "Missing option '--out'"),
    ("watch", 0, "watch {inbox} --bundle {bundle} --out {out} --idle-exit 1 --settle 0.2 --workers 1 --threads 1",
     "watching"),
    ("watch", 1, "watch {missing} --bundle {bundle}", "{missing}"),
    ("watch", 2, "watch {inbox} --bundle {bundle} --settle -1", "Invalid value for '--settle': must be at least 0"),
    ("status", 0, "status {watched}", "done: 2"),
    ("status", 1, "status {folder}", "No journal"),
    ("status", 2, "status {watched} --colour", "No such option: --colour"),
    ("evaluate", 0, "evaluate {pred_csv} --labels {train}", "accuracy"),
    ("evaluate", 1, "evaluate {pred_csv} --labels {missing}", "{missing}"),
    ("evaluate", 2, "evaluate {pred_csv} --labels {train} --blank-threshold 2",
     "Invalid value for '--blank-threshold': must be between 0 and 1"),
    ("events", 0, "events {pred_csv} --out {out_csv}", "is_blank: P(blank) >= "),
    ("events", 1, "events {text} --out {out_csv}", "{text}"),
    ("events", 2, "events {pred_csv} --out {out_csv} --gap -1", "Invalid value for '--gap': must be at least 0"),
    ("convert", 0, "convert {pred_csv} --to megadetector --out {out_json} --bundle {bundle}",
     "is_blank: P(blank) >= "),
    ("convert", 1, "convert {missing} --to megadetector --out {out_json}", "{missing}"),
    ("convert", 2, "convert {pred_csv} --to coco --out {out_json}",
     "'coco' is not one of 'megadetector', 'camtrap-dp'"),
    ("adapt", 0, "adapt {pred_csv} --bundle {bundle} --out {out_csv}", "is_blank: P(blank) >= "),
    ("adapt", 1, "adapt {pred_csv} --bundle {folder} --out {out_csv}", "{folder}"),
    ("adapt", 2, "adapt {pred_csv} --bundle {bundle} --out {out_csv} --min-frames 0",
     "Invalid value for '--min-frames': must be at least 1"),
    ("doctor", 0, "doctor --bundle {bundle}", "python"),
    ("doctor", 2, "doctor --bundle", "'--bundle' requires an argument"),
]
REAL_PROCESS = {("watch", 0)}  # a daemon, even one that exits by itself, runs in a process of its own
# The library call each command makes, which raises KeyboardInterrupt in the 130 cases, and the line it prints.
INTERRUPTED = {
    "train": ("trapcls.workflow.run_train", "{out} keeps every finished epoch; run the same command with --resume"),
    "export onnx": ("trapcls.export.onnx.export_onnx", "nothing half-written is left"),
    "export tensorrt": ("trapcls.export.tensorrt.export_tensorrt", "nothing half-written is left"),
    "export openvino": ("trapcls.export.openvino.export_openvino", "nothing half-written is left"),
    "predict": ("trapcls.predict.runner.run_predict", "the rows written so far are kept in {out_csv}; run the same "
                                                      "command again to finish the rest"),
    "merge": ("trapcls.predict.merge.merge_csvs", "nothing half-written is left; run the same command again"),
    "watch": ("trapcls.watch.daemon.Watcher.run", "its journal keeps every finished result; start it again"),
    "status": ("trapcls.watch.status.watch_status", "nothing half-written is left"),
    "evaluate": ("trapcls.evaluate.run.evaluate", "nothing half-written is left"),
    "events": ("trapcls.results.events.run_events", "nothing half-written is left"),
    "convert": ("trapcls.results.convert.run_convert", "nothing half-written is left"),
    "adapt": ("trapcls.results.adapt.run_adapt", "nothing half-written is left"),
    "doctor": ("trapcls.doctor.collect", "nothing half-written is left"),
}


@pytest.fixture(scope="module")
def ground(tmp_path_factory, tiny_run) -> dict[str, Path]:
    """The inputs the cases name, made once: real frames, bad ones, the tiny bundle, a CSV it wrote, a watched inbox."""
    from trapcls.predict import run_predict
    from trapcls.predict.config import PredictConfig

    root = tmp_path_factory.mktemp("exit-codes")
    paths = {name: root / name for name in ("missing", "folder", "inbox", "imgs", "bad_imgs", "watched")}
    paths.update(text=root / "notes.txt", pred_csv=root / "pred.csv", train=DEMO / "train", run=tiny_run,
                 bundle=tiny_run / "bundle")
    paths["folder"].mkdir()
    paths["text"].write_text("just some notes\n")
    write_jpeg(paths["imgs"] / "a.jpg")
    make_bad_inputs(paths["bad_imgs"])  # 3 of its 5 files cannot be read
    (paths["inbox"] / "cam1").mkdir(parents=True)
    for frame in sorted((DEMO / "train" / "zebra").iterdir())[:2]:
        shutil.copy(frame, paths["inbox"] / "cam1" / frame.name)
    run_predict(PredictConfig(inputs=[DEMO / "train"], bundle=paths["bundle"], out=paths["pred_csv"], workers=1,
                              threads=1))
    trapcls("watch", paths["inbox"], "--bundle", paths["bundle"], "--out", paths["watched"], "--idle-exit", "1",
            "--settle", "0.2", "--workers", "1", "--threads", "1", timeout=120)
    return paths


def _fill(text: str, ground: dict[str, Path], tmp_path: Path) -> str:
    """`text` with its {placeholders} filled; {out}, {out_csv}, {out_json} and {bundle_copy} are this case's own."""
    if "{bundle_copy}" in text:
        shutil.copytree(ground["bundle"], tmp_path / "bundle_copy", dirs_exist_ok=True)
    named = {**ground, "out": tmp_path / "out", "out_csv": tmp_path / "out.csv", "out_json": tmp_path / "out.json",
             "bundle_copy": tmp_path / "bundle_copy"}
    return text.format(**{k: str(v) for k, v in named.items()})


def _params():
    for command, code, template, mention in CASES:
        marks = []
        if (command, code) == ("export tensorrt", 0):
            marks.append(pytest.mark.skipif(not _has_tensorrt_gpu(), reason="needs TensorRT and an NVIDIA GPU"))
        yield pytest.param((command, code, template, mention), id=f"{command.replace(' ', '-')}-{code}", marks=marks)


def _has_tensorrt_gpu() -> bool:
    import importlib.util

    return importlib.util.find_spec("tensorrt") is not None and shutil.which("nvidia-smi") is not None


@pytest.mark.parametrize("case", list(_params()))
def test_each_command_exits_with_the_status_of_what_happened(ground, tmp_path, case):
    command, code, template, mention = case
    args = [_fill(part, ground, tmp_path) for part in template.split()]
    if (command, code) in REAL_PROCESS:
        run = trapcls(*args, rc=None, here=False, timeout=120)
    else:
        run = trapcls(*args, rc=None, cwd=tmp_path)
    shown = f"{' '.join(args)}\nrc={run.returncode}\nstdout:\n{run.stdout[-2000:]}\nstderr:\n{run.stderr[-2000:]}"
    assert run.returncode == code, shown
    assert "Traceback" not in run.stdout + run.stderr, shown
    errors = [line for line in run.stderr.splitlines() if line.startswith("error: ")]
    # 1: exactly one error line; 2: typer's usage box, or the one line of a value a config refused; 0: none
    assert len(errors) == 1 if code == 1 else len(errors) <= 1 if code == 2 else not errors, shown
    text = " ".join((run.stdout + run.stderr).replace("│", " ").split())  # typer's usage box wraps long lines
    wanted = [" ".join(_fill(m, ground, tmp_path).split()) for m in mention.split("|")]
    assert any(w in text for w in wanted), f"the output should hold {' or '.join(wanted)}\n{shown}"


@pytest.mark.parametrize("command", list(INTERRUPTED))
def test_ctrl_c_in_each_command_exits_130_saying_what_was_kept(ground, tmp_path, monkeypatch, command):
    """Ctrl-C while the command runs its library call: exit 130 and one line, whichever command."""
    target, line = INTERRUPTED[command]
    module, _, name = target.rpartition(".")
    owner = _resolve(module)

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(owner, name, interrupted)
    template = next(t for c, code, t, _ in CASES if c == command and code == 0)
    args = [_fill(part, ground, tmp_path) for part in template.split()]
    run = trapcls(*args, rc=None, cwd=tmp_path)
    assert run.returncode == 130, run.stderr
    assert run.stderr.splitlines()[-1].startswith("interrupted: " + _fill(line, ground, tmp_path)), run.stderr
    assert "Traceback" not in run.stderr


def _resolve(dotted: str):
    """The module or class `dotted` names (a class after its module: trapcls.watch.daemon.Watcher)."""
    import importlib

    try:
        return importlib.import_module(dotted)
    except ModuleNotFoundError:
        module, _, cls = dotted.rpartition(".")
        return getattr(importlib.import_module(module), cls)


# --- a real SIGINT to a real process -------------------------------------------------------------------


def _default_sigint() -> None:
    # A shell starts background jobs with SIGINT ignored, and Python keeps an ignored SIGINT ignored;
    # the child gets the default (KeyboardInterrupt) however the suite itself was started.
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def _interrupt_while_reading(args: list[str], fifo: Path) -> subprocess.CompletedProcess:
    """Run `trapcls ARGS`, which reads `fifo`; once it is reading (it blocks: no data comes), send SIGINT."""
    proc = subprocess.Popen([sys.executable, "-m", "trapcls", *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, preexec_fn=_default_sigint)
    deadline = time.monotonic() + 60
    writer = None
    while writer is None and proc.poll() is None and time.monotonic() < deadline:
        try:  # opening the writing end succeeds only once the command has opened the reading end
            writer = os.open(fifo, os.O_WRONLY | os.O_NONBLOCK)
        except OSError as exc:
            assert exc.errno == errno.ENXIO, exc
            time.sleep(0.02)
    try:
        time.sleep(0.2)  # into the read, which waits for data that never comes
        proc.send_signal(signal.SIGINT)
        stdout, stderr = proc.communicate(timeout=60)
    finally:
        if writer is not None:
            os.close(writer)
        if proc.poll() is None:
            proc.kill()
    return subprocess.CompletedProcess(args, proc.returncode, stdout, stderr)


def test_sigint_to_predict_exits_130_keeping_its_rows(ground, tmp_path):
    fifo = tmp_path / "list.txt"
    os.mkfifo(fifo)
    out = tmp_path / "out.csv"
    run = _interrupt_while_reading(["predict", "--file-list", str(fifo), "--bundle", str(ground["bundle"]),
                                    "--out", str(out)], fifo)
    assert run.returncode == 130, run.stderr
    assert run.stderr.splitlines()[-1] == (f"interrupted: the rows written so far are kept in {out}; run the same "
                                           "command again to finish the rest."), run.stderr
    assert "Traceback" not in run.stderr


def test_sigint_to_merge_exits_130_leaving_nothing_half_written(ground, tmp_path):
    fifo = tmp_path / "shard.csv"
    os.mkfifo(fifo)
    run = _interrupt_while_reading(["merge", str(fifo), "--out", str(tmp_path / "out.csv")], fifo)
    assert run.returncode == 130, run.stderr
    assert run.stderr.splitlines() == ["interrupted: nothing half-written is left; run the same command again."]
    assert not (tmp_path / "out.csv").exists()


@pytest.mark.slow
def test_sigint_to_train_exits_130_and_resume_carries_on(tmp_path):
    """Ctrl-C after the first saved epoch: exit 130 saying --resume continues; it does, after the last saved one."""
    out = tmp_path / "run"
    args = ["train", str(DEMO / "train"), "--out", str(out), "--arch", "test_efficientnet", "--img-size", "32",
            "--workers", "0", "--no-export", "--epochs", "30"]
    proc = subprocess.Popen([sys.executable, "-m", "trapcls", *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, preexec_fn=_default_sigint)
    try:
        wait_until(lambda: (out / "last.pt").is_file() or proc.poll() is not None, 180, "the first saved epoch")
        proc.send_signal(signal.SIGINT)
        _, stderr = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, stderr[-3000:]
    assert stderr.splitlines()[-1] == (f"interrupted: {out} keeps every finished epoch; run the same command with "
                                       "--resume to continue after the last saved one (or with --overwrite if none "
                                       "was saved)."), stderr[-3000:]
    assert "Traceback" not in stderr
    resumed = trapcls(*args, "--resume", timeout=300)
    after = re.search(r"resuming .* after epoch (\d+) of 30", resumed.stderr)
    assert after and 1 <= int(after[1]) < 30, resumed.stderr[-3000:]
    epochs = [row.split(",")[0] for row in (out / "metrics.csv").read_text().splitlines()[1:]]
    assert epochs == [str(e) for e in range(1, 31)]


def test_sigint_to_watch_finishes_its_batch_writes_the_csvs_and_exits_0(watch, tmp_path):
    """Ctrl-C is SIGTERM for the daemon: stopped mid-card, it exits 0 with every finished frame in its CSV."""
    inbox, out = tmp_path / "inbox", tmp_path / "out"
    (inbox / "cam1").mkdir(parents=True)
    daemon = watch(inbox, out=out, idle_exit=None, flush_interval=3600, settle=0.1)  # no CSV rewrite mid-card
    frame = sorted((DEMO / "train" / "zebra").iterdir())[0]
    for i in range(60):
        shutil.copy(frame, inbox / "cam1" / f"{i:03d}.jpg")

    def done() -> set[str]:
        if not (out / ".trapcls" / "journal.sqlite").exists():
            return set()
        return {Path(path).name for path, row in journal(out).items() if row["status"] == "done"}

    wait_until(lambda: done(), 60, "the first frame classified", daemon)
    assert daemon.terminate(sig=signal.SIGINT) == 0, daemon.log
    assert "SIGINT: finishing the current batch, then exiting" in daemon.log
    rows = (out / "cam1" / "predictions.csv").read_text().splitlines()[1:]
    assert {row.split(",")[0].rsplit("/", 1)[-1] for row in rows} == done() != set(), daemon.log


# --- the table in docs/exit-codes.md is this one -------------------------------------------------------


def _documented() -> set[tuple[str, int]]:
    """(command, status) for every cell of docs/exit-codes.md's table that is not "—"."""
    cells = set()
    for line in (REPO / "docs" / "exit-codes.md").read_text(encoding="utf-8").splitlines():
        row = re.match(r"\| `trapcls ([a-z ]+)` \|(.*)\|$", line)
        if row:
            for status, cell in zip((0, 1, 2, 130), row[2].split("|")):
                if cell.strip() != "—":
                    cells.add((row[1], status))
    return cells


def test_docs_list_exactly_the_statuses_tested_here():
    tested = {(command, code) for command, code, _, _ in CASES} | {(command, 130) for command in INTERRUPTED}
    assert len(tested) > 40
    assert _documented() == tested
