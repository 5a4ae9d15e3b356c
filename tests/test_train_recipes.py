"""The recipes in train/recipes run as written and give what train/README.md says."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from helpers import REPO


@pytest.mark.slow
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
    # The same run's own validation report, then predict -> evaluate over the frames, end to end.
    run = tmp_path / "runs" / "imagenet"
    html = (run / "report.html").read_text()
    assert 'id="confusion"' in html and 'class="gallery"' in html and "validation, best epoch" in html
    cli = Path(sys.executable).parent / "trapcls"
    frames = shared_data / "cct_sample"
    subprocess.run([str(cli), "export", "onnx", str(run), "--out", str(run / "bundle")], check=True,
                   capture_output=True, timeout=300)  # the recipe trains with --no-export
    subprocess.run([str(cli), "predict", str(frames), "--bundle", str(run / "bundle"), "--out",
                    str(tmp_path / "p.csv")], check=True, capture_output=True, timeout=300)
    proc = subprocess.run([str(cli), "evaluate", str(tmp_path / "p.csv"), "--labels", str(frames), "--bundle",
                           str(run / "bundle"), "--report", str(tmp_path / "report.html")],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    print(proc.stdout)
    assert "images scored" in proc.stdout and "blank vs animal" in proc.stdout  # cct_sample's empty class
    report = (tmp_path / "report.html").read_text()
    assert report.count("data:image/") > 20 and "tf_efficientnet_lite0" in report  # pictures, thumbnails, bundle
