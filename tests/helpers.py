"""What tests share besides fixtures: paths, real and synthetic images, one CLI runner, one daemon launcher, one
CSV reader. Test modules import from here (and take fixtures from conftest.py), never from each other."""

from __future__ import annotations

import copy
import csv
import json
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import threading
import time
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
DEMO = REPO / "examples" / "demo"
FRAMES = DEMO / "frames"
BURST = REPO / "tests" / "data" / "reconyx_burst"
CLIPS = REPO / "tests" / "data" / "clips"  # four real camera-trap clips (zamba's test assets, MIT)
SAMPLES = REPO / "trapcls" / "samples"
LITE0_WEIGHTS = REPO / "examples" / "weights" / "efficientnet-lite0-57934424.pth"
SHARED_DATA = REPO.parent / "shared" / "data"


# --- the CLI as a user runs it ---------------------------------------------------------------------------


def trapcls(*args, rc: int | None = 0, here: bool = True, env: dict[str, str] | None = None,
            cwd: Path | None = None, timeout: float = 300) -> subprocess.CompletedProcess:
    """`trapcls ARGS` as a user runs it; fails the test unless it exits `rc` (None: any status).

    By default through the console script's own entry point, `trapcls.cli.main`, in this process: sys.argv, the
    environment, stdout and stderr swapped for the run, the same exit status and output as a real process in a
    fraction of the time. Only what the runner swaps is put back; whatever `main` itself changes (logging, signal
    handlers) it must undo, and tests/test_no_traceback.py checks that it does. With `here=False` a real process
    (`python -m trapcls`): for what only a process shows (interpreter shutdown, a full disk under a real file
    system, training's determinism in a fresh interpreter). `env` is the whole environment (default: this one
    without $TRAPCLS_BUNDLE, so the shipped model is the default), `cwd` the working folder.
    """
    env = env if env is not None else {k: v for k, v in os.environ.items() if k != "TRAPCLS_BUNDLE"}
    if here:
        proc = _in_process([str(a) for a in args], env, cwd)
    else:
        proc = subprocess.run([sys.executable, "-m", "trapcls", *map(str, args)], capture_output=True, text=True,
                              timeout=timeout, env=env, cwd=cwd)
    if rc is not None:
        assert proc.returncode == rc, f"rc={proc.returncode}\nstdout:\n{proc.stdout[-3000:]}\nstderr:\n" \
                                      f"{proc.stderr[-3000:]}"
    return proc


def _in_process(args: list[str], env: dict[str, str], cwd: Path | None) -> subprocess.CompletedProcess:
    import io
    import traceback

    from trapcls.cli import main

    out, err = (io.TextIOWrapper(io.BytesIO(), encoding="utf-8", newline="\n") for _ in range(2))
    saved = sys.argv, sys.stdout, sys.stderr, os.getcwd(), dict(os.environ)
    sys.argv, sys.stdout, sys.stderr = ["trapcls", *args], out, err
    os.environ.clear()
    os.environ.update(env)
    try:
        os.chdir(cwd or saved[3])
        main()
        code = 0
    except SystemExit as exc:  # as the interpreter maps it: None is 0, an int itself, anything else 1
        code = 0 if exc.code is None else exc.code if isinstance(exc.code, int) else 1
    except Exception:  # an uncaught error: the traceback on stderr and exit 1, as a real process
        traceback.print_exc()
        code = 1
    finally:
        sys.argv, sys.stdout, sys.stderr = saved[:3]
        os.chdir(saved[3])
        os.environ.clear()
        os.environ.update(saved[4])
    texts = []
    for stream in (out, err):
        stream.flush()
        texts.append(stream.buffer.getvalue().decode("utf-8"))
    return subprocess.CompletedProcess(["trapcls", *args], code, *texts)


# --- images ----------------------------------------------------------------------------------------------


def write_jpeg(path: Path, size=(320, 240), color=(120, 80, 40), **kwargs) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, color).save(path, "JPEG", **kwargs)
    return path


def noise_image(size=(320, 240), seed=0) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8))


def make_bad_inputs(folder: Path) -> dict[str, Path]:
    """A truncated JPEG, a zero-byte .jpg, a text file named .jpg, and a valid PNG."""
    folder.mkdir(parents=True, exist_ok=True)
    good = folder / "good.jpg"
    noise_image().save(good, "JPEG", quality=90)
    truncated = folder / "truncated.jpg"
    data = good.read_bytes()
    truncated.write_bytes(data[: len(data) // 2])
    empty = folder / "empty.jpg"
    empty.write_bytes(b"")
    text = folder / "notes.jpg"
    text.write_text("this is not an image\n")
    png = folder / "frame.png"
    noise_image(seed=1).save(png, "PNG")
    return {"good": good, "truncated": truncated, "empty": empty, "text": text, "png": png}


def make_input_zoo(folder: Path) -> None:
    """make_bad_inputs plus every other kind RELIABILITY.md names: a decompression bomb, CMYK, 16-bit,
    greyscale, palette, RGBA, EXIF-rotated, a GIF named .jpg, and a FIFO named .jpg."""
    make_bad_inputs(folder)  # good.jpg, truncated.jpg, empty.jpg, notes.jpg, frame.png
    Image.new("1", (10_000, 10_000)).save(folder / "bomb.png")
    noise_image().convert("CMYK").save(folder / "cmyk.jpg")
    Image.fromarray(np.full((40, 60), 40000, dtype=np.uint16)).save(folder / "sixteen.png")
    noise_image().convert("L").save(folder / "grey.jpg")
    noise_image().convert("P").save(folder / "palette.png")
    noise_image().convert("RGBA").save(folder / "rgba.png")
    exif = Image.Exif()
    exif[0x0112] = 6
    noise_image().save(folder / "rotated.jpg", exif=exif.tobytes())
    noise_image().save(folder / "really_a_gif.jpg", "GIF")
    os.mkfifo(folder / "pipe.jpg")  # opening it would block: walks skip it


# --- CSVs ------------------------------------------------------------------------------------------------


def csv_rows(path: Path, key: str | None = None) -> dict[str, dict[str, str]]:
    """A CSV as key -> row (the key: `key`'s column, else the first); fails the test on a repeated key."""
    with open(path, newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        rows = list(reader)
        key = key or reader.fieldnames[0]
    keys = [r[key] for r in rows]
    assert len(keys) == len(set(keys)), f"repeated {key}s in {path}: {sorted(keys)}"
    return {r[key]: r for r in rows}


def csv_paths(path: Path) -> set[str]:
    """The first column's values of a CSV, or nothing when it does not exist."""
    return set(csv_rows(path)) if path.exists() else set()


# --- the validators of the formats results are converted to -----------------------------------------------

CAMTRAP_SCHEMAS = REPO.parent / "shared" / "schemas" / "camtrap-dp-1.0.2"
CAMTRAP_TABLES = ("deployments", "media", "observations")
CAMTRAP_SCHEMA_URL = "https://raw.githubusercontent.com/tdwg/camtrap-dp/1.0.2/{}-table-schema.json"
CAMTRAP_REMOTE_REFS = {"https://specs.frictionlessdata.io/schemas/data-package.json": "data-package.json",
                       "http://json.schemastore.org/geojson.json": "geojson.json"}


def validate_megadetector(results: Path | dict, image_root: Path | None = None) -> dict:
    """MegaDetector's validate_batch_results on a file or a loaded dict: {"errors": [...], "warnings": [...]}."""
    from PIL import ImageFile

    loading_truncated = ImageFile.LOAD_TRUNCATED_IMAGES
    vbr = pytest.importorskip("megadetector.postprocessing.validate_batch_results",
                              reason="MegaDetector's validator comes with the dev extra (megadetector-utils)")
    # Importing it sets Pillow's global LOAD_TRUNCATED_IMAGES (megadetector/visualization), which would
    # make every later test in this process decode truncated JPEGs as if whole: put it back.
    ImageFile.LOAD_TRUNCATED_IMAGES = loading_truncated
    options = vbr.ValidateBatchResultsOptions()
    if image_root is not None:  # the paths are relative: check each names a real file under the root
        options.check_image_existence = True
        options.relative_path_base = str(image_root)
    return vbr.validate_batch_results(results if isinstance(results, dict) else str(results), options)[
        "validation_results"]


@contextmanager
def offline():
    """Fail loudly if anything tries the network: the validation must use the local schema copies only."""
    def refuse(*args, **kwargs):
        raise OSError(f"network access attempted during offline validation: {args[:2]}")

    saved = socket.socket.connect, socket.getaddrinfo
    socket.socket.connect, socket.getaddrinfo = refuse, refuse
    try:
        yield
    finally:
        socket.socket.connect, socket.getaddrinfo = saved


def validate_camtrap_dp(folder: Path, schemas: Path) -> list[str]:
    """Every error in a Camtrap DP 1.0.2 package: datapackage.json against the profile (JSON Schema
    draft-04), then each CSV against its Table Schema, foreign keys included."""
    import frictionless
    import jsonschema
    import referencing
    from referencing.jsonschema import DRAFT4

    descriptor = json.loads((folder / "datapackage.json").read_text(encoding="utf-8"))
    registry = referencing.Registry().with_resources(
        (url, DRAFT4.create_resource(json.loads((schemas / name).read_text(encoding="utf-8"))))
        for url, name in CAMTRAP_REMOTE_REFS.items())
    profile = json.loads((schemas / "camtrap-dp-profile.json").read_text(encoding="utf-8"))
    validator = jsonschema.Draft4Validator(profile, registry=registry,
                                           format_checker=jsonschema.Draft4Validator.FORMAT_CHECKER)
    with offline():
        errors = [f"datapackage.json {e.json_path}: {e.message}" for e in validator.iter_errors(descriptor)]
    local = copy.deepcopy(descriptor)
    local.pop("profile", None)  # checked above; frictionless would try to download it
    for resource in local.get("resources", []):
        name = resource.get("name")
        if name in CAMTRAP_TABLES and resource.get("schema") == CAMTRAP_SCHEMA_URL.format(name):
            resource["schema"] = json.loads((schemas / f"{name}-table-schema.json").read_text(encoding="utf-8"))
    with offline():
        report = frictionless.Package(local, basepath=str(folder)).validate()
    errors += [f"{task.name}: {e.message}" for task in report.tasks for e in task.errors]
    errors += [f"package: {e.message}" for e in report.errors]
    return errors


# --- the watch daemon as a real process ------------------------------------------------------------------

READY_LINE = "trapcls.watch.daemon: watching "
# Fast defaults for every run; a test overrides any of them by keyword.
FAST = {"settle": 0.3, "flush_interval": 0.2, "rescan_interval": 3600, "workers": 1, "threads": 1, "idle_exit": 2}
NOTIFY_ENV = ("NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID")


class Daemon:
    """One `trapcls watch` process; its log (stdout and stderr) is collected line by line."""

    def __init__(self, cmd: list[str], env: dict[str, str]) -> None:
        self.cmd = cmd
        self.lines: list[str] = []
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        for line in self.proc.stdout:
            self.lines.append(line.rstrip("\n"))

    @property
    def log(self) -> str:
        return "\n".join(self.lines)

    def running(self) -> bool:
        return self.proc.poll() is None

    def wait_ready(self, timeout: float = 60) -> None:
        wait_until(lambda: READY_LINE in self.log or not self.running(), timeout, "the daemon to start", self)
        assert self.running(), f"the daemon exited early ({self.proc.returncode}):\n{self.log}"

    def finish(self, timeout: float = 30) -> int:
        """Wait for the daemon to exit by itself (--idle-exit); its exit status."""
        try:
            rc = self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            pytest.fail(f"the daemon did not exit within {timeout} s:\n{self.log}")
        self._reader.join(timeout=5)
        return rc

    def terminate(self, timeout: float = 15, sig: int = signal.SIGTERM) -> int:
        """Send `sig` (SIGTERM, or SIGINT as Ctrl-C does) and wait for the exit status."""
        self.proc.send_signal(sig)
        return self.finish(timeout)

    def kill(self) -> None:
        if self.running():
            self.proc.kill()
        self.proc.wait(timeout=10)


def wait_until(predicate, timeout: float, what: str, daemon: Daemon | None = None) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            log = f"; daemon log:\n{daemon.log}" if daemon else ""
            pytest.fail(f"timed out after {timeout} s waiting for {what}{log}")
        time.sleep(0.05)


def launch(started: list[Daemon], bundle: Path, inbox: Path, *flags: str, env: dict[str, str] | None = None,
           ready: bool = True, **options) -> Daemon:
    """Start `trapcls watch INBOX --bundle BUNDLE [flags] --option value ...` (FAST options unless given; None
    leaves an option out). The daemon joins `started` before it is waited for, so a fixture kills it even when it
    never got ready."""
    cmd = [sys.executable, "-m", "trapcls", "watch", str(inbox), "--bundle", str(bundle), *flags]
    for name, value in {**FAST, **options}.items():
        if value is not None:
            cmd += [f"--{name.replace('_', '-')}", str(value)]
    environment = {k: v for k, v in os.environ.items() if k not in NOTIFY_ENV}
    environment.update(PYTHONUNBUFFERED="1", **(env or {}))
    daemon = Daemon(cmd, environment)
    started.append(daemon)
    if ready:
        daemon.wait_ready()
    return daemon


def journal(out: Path) -> dict[str, dict]:
    """The watch journal's files table as path -> row (read-only, safe while the daemon runs)."""
    db = sqlite3.connect(f"file:{out / '.trapcls' / 'journal.sqlite'}?mode=ro", uri=True, timeout=30)
    db.row_factory = sqlite3.Row
    try:
        return {r["path"]: dict(r) for r in db.execute("SELECT * FROM files")}
    finally:
        db.close()


def status(out: Path, *flags: str) -> str:
    """`trapcls status OUT [flags]`'s report (it must exit 0)."""
    return trapcls("status", out, *flags, timeout=60).stdout


class NotifyListener:
    """A bound AF_UNIX datagram socket standing in for systemd; collects what arrives."""

    def __init__(self, address: str) -> None:
        self.messages: list[str] = []
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(address)
        self.sock.settimeout(0.1)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        while not self._stop.is_set():
            try:
                self.messages.append(self.sock.recv(4096).decode())
            except TimeoutError:
                continue

    def close(self) -> list[str]:
        time.sleep(0.2)  # let the last datagrams in
        self._stop.set()
        self._thread.join(timeout=5)
        self.sock.close()
        return self.messages


# --- video clips made from real frames ---------------------------------------------------------------------


def frames_of(paths: list[Path], size: tuple[int, int] = (320, 240), count: int | None = None) -> list[Image.Image]:
    """Real frames as RGB images at `size`, in the order given, cycled to `count` frames when given."""
    loaded = {p: Image.open(p).convert("RGB").resize(size) for p in dict.fromkeys(paths)}
    frames = [loaded[p] for p in paths]
    return frames if count is None else [frames[i % len(frames)] for i in range(count)]


def write_clip(path: Path, frames: list[Image.Image], *, codec: str = "libx264", rate: int = 10,
               times: list[float] | None = None, audio: bool = False, metadata: dict | None = None,
               options: dict | None = None, stream_options: dict | None = None) -> Path:
    """A clip of `frames` with PyAV's own FFmpeg, in the container `path`'s suffix names: `times` (seconds) set each
    frame's pts, `audio` adds a silent track, `metadata` tags the container (creation_time: the capture time),
    `options` go to the muxer (movflags) and `stream_options` to the encoder (preset)."""
    import fractions

    import av

    path.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(path), "w", options=options or {}) as out:
        out.metadata.update(metadata or {})
        stream = out.add_stream(codec, rate=rate, options=stream_options or {})
        stream.width, stream.height = frames[0].size
        stream.pix_fmt = "yuvj420p" if codec == "mjpeg" else "yuv420p"
        if times is not None:
            stream.codec_context.time_base = fractions.Fraction(1, 1000)
        sound = out.add_stream("aac", rate=16000) if audio else None
        for i, img in enumerate(frames):
            frame = av.VideoFrame.from_image(img)
            if times is not None:
                frame.pts, frame.time_base = round(times[i] * 1000), fractions.Fraction(1, 1000)
            out.mux(stream.encode(frame))
            if sound is not None:  # 0.1 s of silence per frame
                for k in range(2):
                    chunk = av.AudioFrame.from_ndarray(np.zeros((1, 800), np.float32), format="fltp", layout="mono")
                    chunk.sample_rate, chunk.pts = 16000, (2 * i + k) * 800
                    out.mux(sound.encode(chunk))
        out.mux(stream.encode())
        if sound is not None:
            out.mux(sound.encode())
    return path
