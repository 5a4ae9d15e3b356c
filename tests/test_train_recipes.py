"""The recipes in train/recipes run as written and give what train/README.md says."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from conftest import REPO


def test_debug_recipe_beats_chance_and_imagenet_features_beat_random_init(shared_data, tmp_path):
    env = {**os.environ, "OUT": str(tmp_path / "runs"), "PYTHON": sys.executable,
           "TRAPCLS": str(Path(sys.executable).parent / "trapcls")}  # the console script of this environment
    proc = subprocess.run(["bash", str(REPO / "train" / "recipes" / "debug-cct-lite0.sh"), str(shared_data)],
                          capture_output=True, text=True, env=env, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    table = {line[:28].strip(): line[28:].split() for line in proc.stdout.splitlines()
             if line.startswith(("class prior", "lite0"))}
    prior = next(v for k, v in table.items() if k.startswith("class prior"))
    imagenet, random_init = table["lite0 imagenet"], table["lite0 random-init"]
    print(proc.stdout)
    assert float(imagenet[0]) > float(prior[0]) and float(imagenet[2]) < float(prior[1])  # beats chance
    assert float(imagenet[0]) >= float(random_init[0]) + 0.3  # pretrained features clearly help
    assert float(imagenet[2]) < float(random_init[2])
