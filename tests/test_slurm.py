"""examples/slurm/ under a real SLURM: the sharded prediction and the k-fold training as array jobs.

A private single-node SLURM (tests/slurm_cluster.py) runs the scripts as a user submits them, through
predict.sh and folds.sh; the results must be the bytes that one machine writes running the same work
unsharded, or the folds one after another. Where SLURM cannot start here the tests skip and say why.
"""

from __future__ import annotations

import re
import shutil
import sys
from pathlib import Path

import pytest

from helpers import DEMO, FRAMES, REPO, trapcls
from slurm_cluster import running_cluster

SLURM = REPO / "examples" / "slurm"
# A few seconds per fold on two cores (as conftest.py's tiny_run).
TINY_TRAINING = ("--arch", "test_efficientnet", "--epochs", "2", "--img-size", "64", "--batch-size", "8",
                 "--workers", "0")


@pytest.fixture(scope="module")
def slurm():
    with running_cluster() as cluster:
        yield cluster


@pytest.fixture(scope="module")
def job_env(slurm) -> dict[str, str]:
    """What a user's job needs: the cluster, and TRAPCLS naming this test's own trapcls (the venv's, not activated);
    no $TRAPCLS_BUNDLE, so predict uses the shipped model, as the unsharded run here does."""
    command = Path(sys.executable).parent / "trapcls"
    command = command if command.exists() else shutil.which("trapcls")
    assert command, f"no trapcls console script next to {sys.executable} or on PATH: install the package (-e .)"
    env = {k: v for k, v in slurm.env.items() if k != "TRAPCLS_BUNDLE"}
    env["TRAPCLS"] = str(command)
    return env


def resubmit(slurm, env, out: Path, *, tasks: str, array: tuple, after: tuple) -> list[str]:
    """Resubmit some tasks of an array and, after them, its closing job, as examples/slurm/README.md tells a user
    whose tasks were killed; the two job ids. `array` and `after`: each script's name, then its arguments."""
    array_id = slurm.run("sbatch", "--parsable", f"--array={tasks}", f"--output={out}/logs/%x-%A_%a.out",
                         str(SLURM / array[0]), *map(str, array[1:]), env=env).strip()
    after_id = slurm.run("sbatch", "--parsable", f"--dependency=afterok:{array_id}", f"--output={out}/logs/%x-%j.out",
                         str(SLURM / after[0]), *map(str, after[1:]), env=env).strip()
    return [array_id, after_id]


def submit(slurm, env, script: str, *args) -> list[str]:
    """Run one of examples/slurm/'s submit scripts as a user does; the two job ids it printed (array, then after)."""
    printed = slurm.run("bash", str(SLURM / script), *map(str, args), env=env)
    ids = re.findall(r"^\w+ job (\d+):", printed, flags=re.MULTILINE)
    assert len(ids) == 2, printed
    return ids


@pytest.mark.slow
def test_sharded_predict_under_slurm_writes_the_unsharded_bytes_and_a_killed_task_resumes(slurm, job_env, tmp_path):
    reference = tmp_path / "unsharded.csv"
    trapcls("predict", FRAMES, "--out", reference)

    out = tmp_path / "sharded"
    array, merge = submit(slurm, job_env, "predict.sh", FRAMES, out, 3)
    jobs = slurm.wait([array, merge], timeout=300)

    assert sorted(j.id for j in jobs) == sorted([f"{array}_1", f"{array}_2", f"{array}_3", merge])
    parts = sorted((out / "parts").glob("*.csv"))
    assert [p.name for p in parts] == ["part-1-of-3.csv", "part-2-of-3.csv", "part-3-of-3.csv"]
    assert all(len(p.read_text().splitlines()) > 1 for p in parts), "a shard with no frames splits nothing"
    assert (out / "predictions.csv").read_bytes() == reference.read_bytes()

    # Task 3 (6 of the 10 frames) killed after its first row, part way through the second: resubmitted alone, it
    # keeps the first row, repairs the torn line, classifies the rest, and the merge writes the same bytes again.
    part = out / "parts" / "part-3-of-3.csv"
    header, first, second = part.read_bytes().splitlines(keepends=True)[:3]
    part.write_bytes(header + first + second[: len(second) // 2])
    (out / "predictions.csv").unlink()
    array, merge = resubmit(slurm, job_env, out, tasks="3", array=("predict-array.sbatch", FRAMES, out, 3),
                            after=("predict-merge.sbatch", out, 3))
    log = {job.id: job.log for job in slurm.wait([array, merge], timeout=300)}[f"{array}_3"].read_text()
    assert "resumed: 1 files were already in" in log and "repaired: cut an incomplete last line" in log, log
    assert (out / "predictions.csv").read_bytes() == reference.read_bytes()


@pytest.mark.slow
def test_folds_as_an_array_job_give_the_out_of_fold_table_of_a_sequential_run(slurm, job_env, tmp_path):
    # The same folder name for both: the OOF table's model column is named after it.
    sequential = tmp_path / "one-after-another" / "cv"
    trapcls("train", DEMO / "train", "--out", sequential, "--folds", 3, *TINY_TRAINING, here=False)
    trapcls("oof", sequential, "--out", sequential / "oof.csv")

    out = tmp_path / "slurm" / "cv"
    array, oof = submit(slurm, job_env, "folds.sh", DEMO / "train", out, 3, *TINY_TRAINING)
    slurm.wait([array, oof], timeout=300)

    assert sorted(p.name for p in out.glob("fold-*")) == ["fold-1", "fold-2", "fold-3"]
    # Training on a CPU is deterministic (tests/test_recipe.py resumes to the same metrics), so the same folds
    # trained in three SLURM tasks give the same models (the model column holds their hash), and the same
    # out-of-fold table, as one after another.
    assert (out / "oof.csv").read_bytes() == (sequential / "oof.csv").read_bytes()

    # Fold 2 as if killed in its first epoch (its folder holds only what a run writes before training, no
    # checkpoint): resubmitted, it starts afresh, and the table is the same. (A fold resumed from its checkpoint:
    # tests/test_folds.py, which needs no cluster.)
    for path in (out / "fold-2").iterdir():
        if path.is_dir():
            shutil.rmtree(path)
        elif path.name not in ("config.json", "split.csv"):
            path.unlink()
    (out / "oof.csv").unlink()
    array, oof = resubmit(slurm, job_env, out, tasks="2",
                          array=("folds-array.sbatch", DEMO / "train", out, 3, *TINY_TRAINING),
                          after=("oof.sbatch", out))
    logs = {job.id: job.log.read_text() for job in slurm.wait([array, oof], timeout=300)}
    assert "--overwrite" in logs[f"{array}_2"], logs
    assert (out / "oof.csv").read_bytes() == (sequential / "oof.csv").read_bytes()
