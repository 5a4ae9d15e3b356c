"""`trapcls adapt`: EM re-estimates a deployment's priors (Saerens et al. 2002), guarded and reported.

The EM tests use a model whose posteriors are exact (a 1-D Gaussian mixture, Bayes' rule under a
known training prior), so the true priors of a simulated camera are known and the estimate can be
held to them. The CLI runs on real frames with a real bundle.
"""

from __future__ import annotations

import csv
import json
import shutil

import numpy as np
import pytest

from helpers import DEMO, REPO, trapcls
from trapcls.core.model.bundle import load_bundle
from trapcls.results.adapt import em_priors

MEANS = np.array([-2.0, 0.0, 2.0])


def _camera(rng, prior: np.ndarray, n: int, train_prior: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Frames of a camera whose true class mix is `prior`; the model's posteriors assume `train_prior`."""
    labels = rng.choice(len(prior), size=n, p=prior)
    x = rng.normal(MEANS[labels], 1.0)
    likelihood = np.exp(-0.5 * (x[:, None] - MEANS[None, :]) ** 2)
    posterior = likelihood * train_prior
    return posterior / posterior.sum(axis=1, keepdims=True), labels


def _log_loss(probs: np.ndarray, labels: np.ndarray) -> float:
    return float(-np.mean(np.log(np.clip(probs[np.arange(len(labels)), labels], 1e-15, 1))))


def test_em_recovers_a_cameras_priors_and_improves_its_log_loss():
    rng = np.random.default_rng(0)
    train, true = np.full(3, 1 / 3), np.array([0.7, 0.2, 0.1])
    probs, labels = _camera(rng, true, 4000, train)
    prior, adapted, iterations = em_priors(probs, train, strength=0.0)
    assert prior == pytest.approx(true, abs=0.03) and iterations < 1000
    assert np.allclose(adapted.sum(axis=1), 1.0)
    assert _log_loss(adapted, labels) < _log_loss(probs, labels) - 0.05
    # A camera whose mix is the training mix is left (almost) as it was.
    probs, _ = _camera(rng, train, 4000, train)
    assert em_priors(probs, train, strength=0.0)[0] == pytest.approx(train, abs=0.03)


def test_the_prior_on_priors_damps_small_deployments():
    rng = np.random.default_rng(1)
    train, true = np.full(3, 1 / 3), np.array([0.9, 0.05, 0.05])
    probs, _ = _camera(rng, true, 20, train)
    free = em_priors(probs, train, strength=0.0)[0]
    damped = em_priors(probs, train, strength=20.0)[0]
    # Halfway (20 pseudo-frames against 20 frames): closer to the training mix, still moved towards the camera's.
    assert abs(damped[0] - train[0]) < abs(free[0] - train[0]) and damped[0] > train[0]
    assert em_priors(probs, train, strength=1e9)[0] == pytest.approx(train, abs=1e-6)
    assert damped.min() > 0.05  # a class the camera has barely shown keeps some prior



@pytest.mark.slow
def test_adapt_from_the_cli_on_real_frames(tiny_run, tmp_path):
    bundle = load_bundle(tiny_run / "bundle")
    assert bundle.class_counts is not None and sum(bundle.class_counts.values()) > 0  # written by train
    inbox = tmp_path / "inbox"
    shutil.copytree(DEMO / "train", inbox / "camA", ignore=shutil.ignore_patterns("blank"))  # 18 frames, one camera
    shutil.copytree(DEMO / "frames", inbox / "camB")  # 10 frames
    pred = tmp_path / "pred.csv"
    trapcls("predict", inbox, "--bundle", bundle.root, "--out", pred)
    done = trapcls("adapt", pred, "--bundle", bundle.root, "--out", tmp_path / "adapted.csv", "--min-frames", "15")
    assert "not adapted: fewer than --min-frames 15" in done.stdout  # camB
    report = json.loads((tmp_path / "adapted.priors.json").read_text())
    by_name = {d["deployment"]: d for d in report["deployments"]}
    assert by_name["camA"]["adapted"] and not by_name["camB"]["adapted"]
    assert by_name["camA"]["frames"] == 18 and sum(by_name["camA"]["prior"].values()) == pytest.approx(1.0)
    assert not report["training_prior_assumed_uniform"]
    before = {r["path"]: r for r in csv.DictReader(open(pred, encoding="utf-8"))}
    after = {r["path"]: r for r in csv.DictReader(open(tmp_path / "adapted.csv", encoding="utf-8"))}
    assert set(after) == set(before)
    classes = list(bundle.classes)
    for path, row in after.items():
        assert sum(float(row[c]) for c in classes) == pytest.approx(1.0, abs=1e-6)
        assert row["model"] == bundle.model_id + " +prior-adapted"
        if path.startswith("camB/"):  # not adapted: the same probabilities
            assert all(float(row[c]) == pytest.approx(float(before[path][c]), rel=1e-6) for c in classes)
    # The adapted CSV is a field CSV like any other: evaluate and events read it.
    trapcls("evaluate", tmp_path / "adapted.csv", "--labels", DEMO / "train")


@pytest.mark.slow
def test_adapt_says_what_it_assumes_and_refuses_another_models_csv(tiny_run, tmp_path):
    bare = shutil.copytree(tiny_run / "bundle", tmp_path / "bare")
    manifest = json.loads((bare / "bundle.json").read_text())
    del manifest["training"]["config"]["train_class_counts"]
    (bare / "bundle.json").write_text(json.dumps(manifest))
    pred = tmp_path / "pred.csv"
    trapcls("predict", DEMO / "frames", "--bundle", bare, "--out", pred)
    done = trapcls("adapt", pred, "--bundle", bare, "--out", tmp_path / "a.csv", "--min-frames", "5")
    assert "assumed uniform" in done.stderr
    wrong = trapcls("adapt", pred, "--bundle", REPO / "trapcls" / "default_bundle", "--out", tmp_path / "b.csv",
                    rc=None)
    assert wrong.returncode == 1 and "pass the bundle that wrote" in wrong.stderr and "Traceback" not in wrong.stderr
    same = trapcls("adapt", pred, "--bundle", bare, "--out", pred, rc=None)
    assert same.returncode == 1 and "predictions CSV itself" in same.stderr
