"""Options written once: the CLI's defaults are the configs' defaults; a config file sits between them and the flags."""

from __future__ import annotations

import dataclasses
import enum
import json
from pathlib import Path

import pytest

from helpers import DEMO, trapcls
from trapcls.core.system.exceptions import DataError
from trapcls.evaluate.config import EvaluateConfig
from trapcls.predict.config import PredictConfig
from trapcls.results.config import AdaptConfig, ConvertConfig, EventsConfig
from trapcls.training.config import RUN_ONLY, TrainConfig, read_config_file, train_config
from trapcls.watch.config import WatchConfig


def _command_defaults(name: str) -> dict:
    import typer

    from trapcls.cli import app

    command = typer.main.get_command(app).commands[name]
    return {p.name: p.default.value if isinstance(p.default, enum.Enum) else p.default for p in command.params}


@pytest.mark.parametrize("command, config", [("train", TrainConfig), ("predict", PredictConfig),
                                             ("watch", WatchConfig), ("evaluate", EvaluateConfig),
                                             ("events", EventsConfig), ("convert", ConvertConfig),
                                             ("adapt", AdaptConfig)])
def test_every_cli_default_is_the_config_default(command, config):
    cli = _command_defaults(command)
    fields = {f.name: f.default for f in dataclasses.fields(config) if f.default is not dataclasses.MISSING}
    shared = sorted(set(cli) & set(fields))
    assert len(shared) >= 3  # the options really are named after the config's fields
    assert {k: cli[k] for k in shared} == {k: fields[k] for k in shared}


def test_defaults_then_file_then_flags(tmp_path):
    path = tmp_path / "recipe.json"
    path.write_text(json.dumps({"data": "frames", "arch": "resnet18", "epochs": 12, "lr": 1, "weights": None,
                                "optimizer": "sgd", "out": "ignored", "resume": True, "split": "site",
                                "classes": ["a", "b"]}))
    config = train_config({"out": tmp_path / "run", "epochs": 3}, config_file=path)
    assert config.data == Path("frames") and config.arch == "resnet18" and config.optimizer == "sgd"
    assert config.epochs == 3  # the flag beats the file
    assert config.lr == 1.0 and isinstance(config.lr, float)  # JSON's 1 is a float option
    assert config.out == tmp_path / "run" and config.resume is False  # run-only settings never come from a file
    assert config.batch_size == TrainConfig.batch_size  # neither file nor flag: the default
    assert {"out", "resume", "overwrite", "command"} == RUN_ONLY


def test_a_bad_config_file_is_refused_naming_the_problem(tmp_path):
    path = tmp_path / "c.json"
    path.write_text(json.dumps({"epoch": 3}))
    with pytest.raises(DataError, match="unknown options epoch. Valid: .*epochs"):
        read_config_file(path)
    path.write_text(json.dumps({"epochs": "three"}))
    with pytest.raises(DataError, match="epochs must be int, got 'three'"):
        read_config_file(path)
    path.write_text(json.dumps({"amp": 1}))
    with pytest.raises(DataError, match="amp must be bool"):
        read_config_file(path)
    path.write_text("[1, 2]")
    with pytest.raises(DataError, match="must hold a JSON object"):
        read_config_file(path)
    with pytest.raises(DataError, match="does not exist"):
        read_config_file(tmp_path / "missing.json")
    with pytest.raises(DataError, match="data must be given"):
        train_config({"out": tmp_path / "run"})


@pytest.mark.slow
def test_a_run_is_rerun_from_its_config_json(tiny_run, tmp_path):
    """`trapcls train --config RUN/config.json --out NEW` repeats the recipe (DATA from the file); a typed
    flag still wins, and the new run's config.json differs from the old one only where it should."""
    again = tmp_path / "again"
    trapcls("train", "--config", tiny_run / "config.json", "--out", again, "--epochs", "1", "--no-export",
            "--workers", "0")
    old, new = (json.loads((run / "config.json").read_text()) for run in (tiny_run, again))
    assert new["data"] == old["data"] == str(DEMO / "train")
    changed = sorted(k for k in old.keys() | new.keys() if old.get(k) != new.get(k))
    assert changed == ["command", "epochs", "export", "out"], changed
    assert new["epochs"] == 1 and not (again / "bundle").exists()
