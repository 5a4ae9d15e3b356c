"""Shared fixtures: the real frames in ../shared when present, one tiny trained bundle per session, a watch daemon.

Everything else tests share (paths, images, the CLI runner, the daemon launcher, the CSV reader) is in
helpers.py, which test modules import; no test module imports another.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from helpers import DEMO, SHARED_DATA, Daemon, launch


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


@pytest.fixture()
def watch(tiny_run):
    """Start `trapcls watch INBOX --bundle <tiny> [flags] --option value ...` and wait until it watches.

    Every process started is killed at teardown, whatever the test did.
    """
    started: list[Daemon] = []

    def start(inbox: Path, *flags: str, env: dict[str, str] | None = None, **options) -> Daemon:
        return launch(started, tiny_run / "bundle", inbox, *flags, env=env, **options)

    try:
        yield start
    finally:
        for daemon in started:
            daemon.kill()
