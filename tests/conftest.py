"""Shared fixtures: paths to real frames, synthetic images, and one tiny trained bundle per session."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
DEMO = REPO / "examples" / "demo"
LITE0_WEIGHTS = REPO / "examples" / "weights" / "efficientnet-lite0-57934424.pth"
SHARED_DATA = REPO.parent / "shared" / "data"


def trapcls(*args, check: bool = True, timeout: float = 300) -> subprocess.CompletedProcess:
    """`python -m trapcls ARGS` as a real process; with `check`, fails the test unless it exits 0."""
    proc = subprocess.run([sys.executable, "-m", "trapcls", *map(str, args)], capture_output=True, text=True,
                          timeout=timeout)
    if check:
        assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """../shared/data (real frames with labels); present on our machines and in CI, not on a user's."""
    if not (SHARED_DATA / "ena24_small" / "labels.csv").exists():
        pytest.skip(f"{SHARED_DATA} is not available (it exists on project machines and in CI only)")
    return SHARED_DATA


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory) -> Path:
    """A real training run (tiny random-init EfficientNet, 1 epoch, 64 px) on the committed demo frames."""
    from trapcls.training import TrainConfig
    from trapcls.workflow import run_train

    out = tmp_path_factory.mktemp("tiny") / "run"
    run_train(TrainConfig(data=DEMO / "train", out=out, arch="test_efficientnet", epochs=2, img_size=64,
                      batch_size=8, val_fraction=0.25, workers=0))
    return out


@pytest.fixture()
def bundle_copy(tiny_run, tmp_path) -> Path:
    """A private copy of the tiny bundle a test may damage."""
    return Path(shutil.copytree(tiny_run / "bundle", tmp_path / "bundle"))


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
