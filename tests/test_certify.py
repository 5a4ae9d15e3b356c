"""The certified blank threshold: exact bounds, a guarantee that holds for the threshold picked, honest refusals.

The bound is checked against closed forms and hand-worked values (and scipy's beta quantiles
where scipy is installed); a simulation over many calibration sets drawn from a distribution
whose true miss rate is known in closed form shows the guarantee holds as often as promised,
while the naive rule (observed rate <= target) breaks it far more often. The CLI runs on real
frames: certify, store in the bundle, and predict uses it.
"""

from __future__ import annotations

import csv
import json
import math
import shutil

import numpy as np
import pytest

from helpers import DEMO, trapcls
from trapcls.core.model.bundle import load_bundle
from trapcls.core.system.exceptions import DataError, OptionError
from trapcls.evaluate.certify import GRID, binomial_cdf, certify_blank_threshold, clopper_pearson_upper, frames_needed


def test_clopper_pearson_against_closed_forms_and_hand_values():
    # k = 0: the bound solves (1 - p)^n = 1 - confidence, so p = 1 - (1 - confidence)^(1/n).
    assert clopper_pearson_upper(0, 300, 0.95) == pytest.approx(1 - 0.05 ** (1 / 300), abs=1e-10)  # 0.00994
    assert clopper_pearson_upper(0, 59, 0.95) == pytest.approx(0.0495, abs=1e-4)  # the "rule of three": ~3/n
    # k = n: nothing bounds it below 1.
    assert clopper_pearson_upper(10, 10, 0.95) == 1.0
    # k = 1, n = 10: solve (1-p)^10 + 10 p (1-p)^9 = 0.05 by hand (Newton): p = 0.3942.
    assert clopper_pearson_upper(1, 10, 0.95) == pytest.approx(0.39416, abs=1e-5)
    # The defining property at any k: P(X <= k | p = bound) = 1 - confidence.
    for k, n, c in ((3, 50, 0.9), (12, 400, 0.95), (0, 1000, 0.99)):
        assert binomial_cdf(k, n, clopper_pearson_upper(k, n, c)) == pytest.approx(1 - c, abs=1e-9)


def test_binomial_cdf_is_the_exact_sum():
    for n, k, p in ((10, 3, 0.2), (40, 0, 0.05), (40, 40, 0.3), (300, 7, 0.02)):
        exact = sum(math.comb(n, i) * p ** i * (1 - p) ** (n - i) for i in range(k + 1))
        assert binomial_cdf(k, n, p) == pytest.approx(exact, rel=1e-10)


def test_clopper_pearson_matches_scipy_where_installed():
    stats = pytest.importorskip("scipy.stats", reason="scipy is not installed here; the hand values above stand")
    for k, n, c in ((0, 5, 0.95), (2, 30, 0.9), (17, 500, 0.95), (60, 3000, 0.99), (149, 150, 0.95)):
        assert clopper_pearson_upper(k, n, c) == pytest.approx(stats.beta.ppf(c, k + 1, n - k), abs=1e-9)


def test_frames_needed_is_the_zero_miss_bound():
    assert frames_needed(0.01, 0.95) == 299  # "1% at 95% needs about 300 animal frames even with no miss"
    assert frames_needed(0.02, 0.95) == 149
    assert clopper_pearson_upper(0, 299, 0.95) <= 0.01 < clopper_pearson_upper(0, 298, 0.95)


def _calibration(rng, n_animals: int, n_blanks: int) -> tuple[np.ndarray, np.ndarray]:
    # Animal frames' P(blank) ~ Beta(1, 8): the true miss rate at threshold t is (1 - t)^8, exactly.
    return rng.beta(1, 8, n_animals), rng.beta(8, 1, n_blanks)


@pytest.mark.slow  # 1,000 simulated calibration sets, ~5 s
def test_the_guarantee_holds_over_many_calibration_sets_and_the_naive_rule_breaks_it():
    target, confidence, runs = 0.05, 0.9, 1000
    rng = np.random.default_rng(0)
    certified_bad = naive_bad = 0
    for _ in range(runs):
        animals, blanks = _calibration(rng, 300, 200)
        t = certify_blank_threshold(animals, blanks, target=target, confidence=confidence).threshold
        certified_bad += (1 - t) ** 8 > target
        # The naive rule: the lowest grid threshold whose observed miss rate is within the target.
        observed = np.array([(animals >= g).mean() for g in GRID])
        naive_t = GRID[np.flatnonzero(observed <= target).max()]
        naive_bad += (1 - naive_t) ** 8 > target
    allowed = (1 - confidence) + 3 * math.sqrt(confidence * (1 - confidence) / runs)
    print(f"\ntrue miss rate above {target:.0%}: certified {certified_bad}/{runs}, naive {naive_bad}/{runs} "
          f"(allowed {1 - confidence:.0%})")
    assert certified_bad / runs <= allowed
    assert naive_bad / runs > 0.3  # the simulation can tell a valid procedure from an invalid one


def test_the_certificate_reports_what_it_did():
    rng = np.random.default_rng(1)
    animals, blanks = _calibration(rng, 400, 300)
    c = certify_blank_threshold(animals, blanks, target=0.05, confidence=0.9)
    assert c.animal_frames == 400 and c.blank_frames == 300
    assert c.misses == int((animals >= c.threshold).sum()) and c.observed_miss_rate == c.misses / 400
    assert c.certified_miss_bound <= 0.05 and c.certified_miss_bound == clopper_pearson_upper(c.misses, 400, 0.9)
    assert c.blanks_caught == pytest.approx((blanks >= c.threshold).mean())
    assert c.set_aside_share == pytest.approx((c.misses + (blanks >= c.threshold).sum()) / 700)
    # One step lower on the grid would not be certified (the walk stops at the first failure).
    lower = round(c.threshold - 0.001, 3)
    assert clopper_pearson_upper(int((animals >= lower).sum()), 400, 0.9) > 0.05


def test_too_few_frames_are_refused_with_what_it_has_and_needs():
    rng = np.random.default_rng(2)
    animals, blanks = _calibration(rng, 120, 50)
    with pytest.raises(DataError, match=r"have 120 non-blank frames.*needs at least 299"):
        certify_blank_threshold(animals, blanks, target=0.01, confidence=0.95)
    with pytest.raises(DataError, match="No threshold certifies"):
        certify_blank_threshold(np.ones(400), blanks, target=0.05, confidence=0.95)
    with pytest.raises(OptionError, match="blank_miss"):
        certify_blank_threshold(animals, blanks, target=0, confidence=0.95)


# --- the CLI on real frames ---------------------------------------------------------------------


@pytest.mark.slow
def test_certify_store_in_the_bundle_and_predict_uses_it(tiny_run, tmp_path):
    bundle = shutil.copytree(tiny_run / "bundle", tmp_path / "bundle")
    files = {name: (bundle / name).read_bytes() for name in ("model.onnx", "weights.safetensors")}
    pred = tmp_path / "pred.csv"
    trapcls("predict", DEMO / "train", "--bundle", bundle, "--out", pred)
    done = trapcls("evaluate", pred, "--labels", DEMO / "train", "--blank-miss", "0.3", "--confidence", "0.8",
                   "--write-bundle", bundle)
    assert "certified blank threshold" in done.stdout and "18 = " in done.stdout  # 18 animal frames
    policy = json.loads((bundle / "bundle.json").read_text())["blank_policy"]
    assert policy["animal_frames"] == 18 and policy["blank_frames"] == 3 and policy["model"] == load_bundle(
        bundle).model_id
    assert policy["certified_miss_bound"] <= 0.3 and policy["target_miss"] == 0.3 and policy["confidence"] == 0.8
    # bundle.json travels: the files it was certified on are named, not this machine's paths to them.
    assert policy["labels"] == "train" and policy["predictions"] == "pred.csv"
    assert not any(str(tmp_path) in str(v) or str(DEMO) in str(v) for v in policy.values())
    assert {n: (bundle / n).read_bytes() for n in files} == files  # the model files are untouched; it still loads
    # predict now uses the policy, says so, and --blank-threshold overrides it.
    again = trapcls("predict", DEMO / "train", "--bundle", bundle, "--out", tmp_path / "again.csv")
    assert f"P(blank) >= {policy['threshold']:g}" in again.stderr and "certified blank policy" in again.stderr
    rows = list(csv.DictReader(open(tmp_path / "again.csv", encoding="utf-8")))
    assert all((r["is_blank"] == "true") == (float(r["blank"]) >= policy["threshold"]) for r in rows)
    override = trapcls("predict", DEMO / "train", "--bundle", bundle, "--out", tmp_path / "o.csv",
                       "--blank-threshold", "0.99")
    assert "--blank-threshold 0.99" in override.stderr


@pytest.mark.slow
def test_certify_refusals_from_the_cli(tiny_run, tmp_path):
    bundle = shutil.copytree(tiny_run / "bundle", tmp_path / "bundle")
    pred = tmp_path / "pred.csv"
    trapcls("predict", DEMO / "train", "--bundle", bundle, "--out", pred)
    few = trapcls("evaluate", pred, "--labels", DEMO / "train", "--blank-miss", "0.01", rc=None)
    assert few.returncode == 1 and "have 18 non-blank frames" in few.stderr and "at least 299" in few.stderr
    assert "Traceback" not in few.stderr
    lonely = trapcls("evaluate", pred, "--labels", DEMO / "train", "--write-bundle", bundle, rc=None)
    assert lonely.returncode == 2 and "give --blank-miss" in lonely.stderr
    other = shutil.copytree(tiny_run / "bundle", tmp_path / "other")
    manifest = json.loads((other / "bundle.json").read_text())
    (other / "bundle.json").write_text(json.dumps({**manifest, "name": "another-model"}))
    wrong = trapcls("evaluate", pred, "--labels", DEMO / "train", "--blank-miss", "0.3", "--confidence", "0.8",
                    "--write-bundle", other, rc=None)
    assert wrong.returncode == 1 and "Certify a bundle on its own predictions" in wrong.stderr
    assert "blank_policy" not in json.loads((other / "bundle.json").read_text())
