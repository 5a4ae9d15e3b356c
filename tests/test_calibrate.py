"""Temperature scaling: recovers a known temperature and never makes validation log loss worse."""

from __future__ import annotations

import numpy as np

from trapcls.core.model.probs import probabilities
from trapcls.training.calibrate import fit_temperature


def _calibrated_sample(n=4000, classes=5, seed=0):
    """Logits whose softmax is the true label distribution (labels drawn from it)."""
    rng = np.random.default_rng(seed)
    logits = rng.normal(0, 2.0, (n, classes))
    probs = probabilities(logits, 1.0)
    labels = np.array([rng.choice(classes, p=p) for p in probs])
    return logits, labels


def test_recovers_the_temperature_of_overconfident_logits():
    logits, labels = _calibrated_sample()
    fitted = fit_temperature(logits * 3.0, labels)  # an over-confident model: logits three times too large
    assert abs(fitted.temperature - 3.0) < 0.2
    assert fitted.val_log_loss_after < fitted.val_log_loss_before


def test_calibrated_logits_keep_a_temperature_near_one():
    logits, labels = _calibrated_sample(seed=1)
    fitted = fit_temperature(logits, labels)
    assert abs(fitted.temperature - 1.0) < 0.1
    assert fitted.val_log_loss_after <= fitted.val_log_loss_before


def test_underconfident_logits_get_a_temperature_below_one():
    logits, labels = _calibrated_sample(seed=2)
    fitted = fit_temperature(logits * 0.5, labels)
    assert abs(fitted.temperature - 0.5) < 0.05


def test_empty_validation_fits_nothing():
    fitted = fit_temperature(np.zeros((0, 3)), np.zeros(0, dtype=int))
    assert fitted.temperature == 1.0 and not fitted.fitted
