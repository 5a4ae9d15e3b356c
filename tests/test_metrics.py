"""Evaluation metrics against values worked out by hand on tables small enough to check on paper."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from trapcls.core.metrics import (
    LOG_LOSS_EPS,
    balanced_accuracy,
    balanced_accuracy_se,
    binary_detection,
    compare,
    evaluate_probs,
    expected_calibration_error,
    log_loss,
    mean_se,
    reliability_bins,
    top_k_accuracy,
)
from trapcls.core.system.exceptions import DataError

# Eight rows, blank-vs-animal detection table (P(blank) in column 0), used by several tests:
#   row  P(blank)  label   predicted blank (P >= 0.5)?  outcome
#   0    0.9       blank   yes                          tp
#   1    0.6       deer    yes                          fp
#   2    0.3       blank   no                           fn
#   3    0.1       fox     no                           tn
#   4    0.5       blank   yes (threshold inclusive)    tp
#   5    0.2       deer    no                           tn
#   6    0.0       fox     no                           tn
#   7    0.7       deer    yes                          fp
CLASSES = ["blank", "deer", "fox"]
DETECT_PROBS = np.array([[0.9, 0.05, 0.05], [0.6, 0.4, 0.0], [0.3, 0.7, 0.0], [0.1, 0.2, 0.7],
                         [0.5, 0.5, 0.0], [0.2, 0.8, 0.0], [0.0, 0.0, 1.0], [0.7, 0.3, 0.0]])
DETECT_LABELS = np.array([0, 1, 0, 2, 0, 1, 2, 1])


def test_log_loss_of_the_uniform_distribution_is_ln_of_the_class_count():
    # Every row gives the true class 1/8, so the loss is -ln(1/8) = ln 8 whatever the labels.
    probs = np.full((5, 8), 1 / 8)
    assert log_loss(probs, np.array([0, 3, 7, 1, 5])) == pytest.approx(math.log(8), rel=1e-12)


def test_log_loss_clips_a_zero_probability_then_renormalises():
    # Row [0, 0.5, 0.5], true class 0: clipped to [1e-15, 0.5, 0.5], which sums to 1 + 1e-15, so
    # P(true) = 1e-15 / (1 + 1e-15) and the loss is ln(1 + 1e-15) - ln(1e-15) = 15 ln 10 + ~1e-15
    # = 34.538776394910684 (finite, where the unclipped loss would be infinite).
    expected = -math.log(LOG_LOSS_EPS / (1 + LOG_LOSS_EPS))
    assert expected == pytest.approx(15 * math.log(10), rel=1e-12)
    assert log_loss(np.array([[0.0, 0.5, 0.5]]), np.array([0])) == pytest.approx(expected, rel=1e-12)
    assert log_loss(np.array([[0.0, 0.5, 0.5]]), np.array([0])) == pytest.approx(34.538776394910684, rel=1e-12)


def test_log_loss_renormalises_rows_after_clipping():
    # Row [2, 2] (not a distribution): clipped to [1 - 1e-15, 1 - 1e-15], renormalised to [0.5, 0.5],
    # so the loss is ln 2. Without the renormalisation it would be -ln(1 - 1e-15) ~ 1e-15.
    assert log_loss(np.array([[2.0, 2.0]]), np.array([0])) == pytest.approx(math.log(2), rel=1e-12)
    # Row [0.2, 0.2, 0.2, 0.2] sums to 0.8: renormalised to 0.25 each, loss ln 4.
    assert log_loss(np.full((1, 4), 0.2), np.array([2])) == pytest.approx(math.log(4), rel=1e-12)


def test_balanced_accuracy_exposes_a_model_that_always_says_the_majority_class():
    always_zero = np.array([[0.9, 0.1]] * 3)
    # 2:1 table, labels [0, 0, 1]: accuracy 2/3 = 0.667; recall(0) = 2/2 = 1, recall(1) = 0/1 = 0,
    # balanced accuracy (1 + 0) / 2 = 0.5.
    labels = np.array([0, 0, 1])
    assert np.mean(np.argmax(always_zero, axis=1) == labels) == pytest.approx(2 / 3)
    assert balanced_accuracy(always_zero, labels) == pytest.approx(0.5)
    # The "useless model looked 86% accurate" story: 6 blanks, 1 animal -> accuracy 6/7 = 0.857,
    # balanced accuracy still (1 + 0) / 2 = 0.5.
    result = evaluate_probs(np.array([[0.9, 0.1]] * 7), np.array([0] * 6 + [1]), ["blank", "animal"])
    assert result["accuracy"] == pytest.approx(6 / 7)
    assert result["balanced_accuracy"] == pytest.approx(0.5)


def test_balanced_accuracy_skips_classes_absent_from_the_labels():
    # 3 classes, labels only 0 and 1; row 2 predicts the absent class 2.
    # recall(0) = 1/1 (row 0), recall(1) = 1/2 (row 1 right, row 2 wrong) -> (1 + 0.5) / 2 = 0.75;
    # counting class 2 as recall 0 would give 0.5.
    probs = np.eye(3)[[0, 1, 2]]
    assert balanced_accuracy(probs, np.array([0, 1, 1])) == pytest.approx(0.75)


def test_top_k_on_four_classes():
    probs = np.array([[0.1, 0.2, 0.3, 0.4],     # ranking 3, 2, 1, 0; label 1 is rank 3
                      [0.4, 0.3, 0.2, 0.1],     # ranking 0, 1, 2, 3; label 0 is rank 1
                      [0.05, 0.5, 0.15, 0.3],   # ranking 1, 3, 2, 0; label 2 is rank 3
                      [0.3, 0.1, 0.2, 0.4]])    # ranking 3, 0, 2, 1; label 1 is rank 4
    labels = np.array([1, 0, 2, 1])
    assert top_k_accuracy(probs, labels, 1) == pytest.approx(1 / 4)   # row 1
    assert top_k_accuracy(probs, labels, 2) == pytest.approx(1 / 4)   # row 1
    assert top_k_accuracy(probs, labels, 3) == pytest.approx(3 / 4)   # rows 0, 1, 2
    assert top_k_accuracy(probs, labels, 4) == 1.0
    assert top_k_accuracy(probs, labels, 10) == 1.0                   # k clipped to 4
    with pytest.raises(DataError, match="k >= 1"):
        top_k_accuracy(probs, labels, 0)


def test_top_k_breaks_ties_toward_the_lower_class_index():
    # A uniform row ranks 0, 1, 2, 3 (stable argsort): top-3 holds class 0 but not class 3.
    uniform = np.full((2, 4), 0.25)
    assert top_k_accuracy(uniform, np.array([0, 3]), 3) == pytest.approx(0.5)


def test_ece_by_hand_with_two_bins():
    # bins = 2: [0, 0.5) and [0.5, 1].
    #   row  top-1 conf  predicted  label  correct  bin
    #   0    0.4         0          0      yes      0
    #   1    0.3         1          0      no       0
    #   2    0.8         0          0      yes      1
    #   3    0.6         1          2      no       1
    #   4    1.0         3          3      yes      1 (last bin closed at 1)
    # bin 0: count 2, confidence 0.35, accuracy 1/2 -> 2/5 * |0.5 - 0.35| = 0.06
    # bin 1: count 3, confidence (0.8 + 0.6 + 1.0) / 3 = 0.8, accuracy 2/3 -> 3/5 * |2/3 - 0.8| = 0.08
    # ECE = 0.06 + 0.08 = 0.14
    probs = np.array([[0.4, 0.3, 0.2, 0.1], [0.2, 0.3, 0.25, 0.25], [0.8, 0.1, 0.1, 0.0],
                      [0.1, 0.6, 0.2, 0.1], [0.0, 0.0, 0.0, 1.0]])
    labels = np.array([0, 0, 0, 2, 3])
    table = reliability_bins(probs, labels, bins=2)
    assert table["count"] == [2, 3]
    assert table["confidence"] == pytest.approx([0.35, 0.8])
    assert table["accuracy"] == pytest.approx([0.5, 2 / 3])
    assert expected_calibration_error(probs, labels, bins=2) == pytest.approx(0.14)
    # A perfectly calibrated table: four rows at confidence 0.5, two of them right -> ECE 0.
    half = np.array([[0.5, 0.5]] * 4)
    assert expected_calibration_error(half, np.array([0, 1, 0, 1]), bins=2) == pytest.approx(0.0)


def test_reliability_bin_edges_and_counts():
    # Top-1 confidences 0.25, 0.5, 0.75, 1.0 and 0.1 (a uniform row over 10 classes: a top-1
    # confidence can't be below 1/classes). bins = 4, edges 0, 0.25, 0.5, 0.75, 1: a confidence on
    # an edge opens the bin above it, and 1.0 falls in the last bin, which is closed at 1:
    #   0.1 -> [0, 0.25); 0.25 -> [0.25, 0.5); 0.5 -> [0.5, 0.75); 0.75 and 1.0 -> [0.75, 1].
    rows = [np.r_[[0.25] * 4, [0.0] * 6], np.r_[0.5, 0.5, [0.0] * 8], np.r_[0.75, 0.25, [0.0] * 8],
            np.r_[1.0, [0.0] * 9], np.full(10, 0.1)]
    probs, labels = np.array(rows), np.array([0, 0, 0, 0, 0])
    table = reliability_bins(probs, labels, bins=4)
    assert table["lower"] == [0.0, 0.25, 0.5, 0.75]
    assert table["upper"] == [0.25, 0.5, 0.75, 1.0]
    assert table["count"] == [1, 1, 1, 2]
    assert table["confidence"] == pytest.approx([0.1, 0.25, 0.5, (0.75 + 1.0) / 2])
    assert table["accuracy"] == [1.0, 1.0, 1.0, 1.0]   # every row's argmax is class 0 (ties -> 0)
    # bins = 8 (width 0.125): 0.1 -> bin 0, 0.25 -> 2, 0.5 -> 4, 0.75 -> 6, 1.0 -> 7; bins 1, 3, 5
    # are empty: count 0, confidence and accuracy None.
    eight = reliability_bins(probs, labels, bins=8)
    assert eight["count"] == [1, 0, 1, 0, 1, 0, 1, 1]
    assert [eight["confidence"][i] for i in (1, 3, 5)] == [None, None, None]
    assert [eight["accuracy"][i] for i in (1, 3, 5)] == [None, None, None]
    with pytest.raises(DataError, match="at least 1 bin"):
        reliability_bins(probs, labels, bins=0)


def test_binary_detection_counts_and_ratios():
    # From the DETECT table: tp = 2 (rows 0, 4), fp = 2 (rows 1, 7), fn = 1 (row 2), tn = 3 (rows 3, 5, 6).
    # blank precision 2 / (2 + 2) = 0.5, blank recall 2 / (2 + 1) = 2/3,
    # animal precision tn / (tn + fn) = 3/4, animal recall tn / (tn + fp) = 3/5.
    out = binary_detection(DETECT_PROBS, DETECT_LABELS, positive=0, threshold=0.5)
    assert (out["tp"], out["fp"], out["fn"], out["tn"]) == (2, 2, 1, 3)
    assert out["blank_precision"] == pytest.approx(0.5)
    assert out["blank_recall"] == pytest.approx(2 / 3)
    assert out["animal_precision"] == pytest.approx(3 / 4)
    assert out["animal_recall"] == pytest.approx(3 / 5)
    assert out["threshold"] == 0.5 and out["positive"] == 0


def test_binary_detection_reports_undefined_ratios_as_none():
    # Threshold above 1: nothing is predicted blank, so tp = fp = 0 and blank precision is 0/0 -> None;
    # blank recall 0/3 = 0.0 is defined; animal recall tn / (tn + fp) = 5/5 = 1.
    out = binary_detection(DETECT_PROBS, DETECT_LABELS, positive=0, threshold=1.01)
    assert (out["tp"], out["fp"], out["fn"], out["tn"]) == (0, 0, 3, 5)
    assert out["blank_precision"] is None
    assert out["blank_recall"] == 0.0 and out["animal_recall"] == 1.0
    # No blank rows at all: blank recall 0/0 -> None.
    animals = DETECT_LABELS != 0
    out = binary_detection(DETECT_PROBS[animals], DETECT_LABELS[animals], positive=0, threshold=0.5)
    assert out["blank_recall"] is None and out["animal_precision"] == 1.0
    with pytest.raises(DataError, match="blank class index"):
        binary_detection(DETECT_PROBS, DETECT_LABELS, positive=3, threshold=0.5)


def test_evaluate_probs_groups_sites_with_an_unknown_site():
    sites = ["north", "south", None, "north", "", "south", "north", "south"]
    # Groups (rows): (unknown) = 2, 4; north = 0, 3, 6; south = 1, 5, 7. Top-1 predictions are
    # row 0 blank, 1 blank, 2 deer, 3 fox, 4 blank (0.5 tie -> class 0), 5 deer, 6 fox, 7 blank.
    # (unknown): labels blank, blank; predicted deer, blank -> accuracy 1/2
    # north: labels blank, fox, fox; predicted blank, fox, fox -> accuracy 3/3
    # south: labels deer, deer, deer; predicted blank, deer, blank -> accuracy 1/3, balanced 1/3
    result = evaluate_probs(DETECT_PROBS, DETECT_LABELS, CLASSES, sites=sites)
    per_site = result["per_site"]
    assert list(per_site) == ["(unknown)", "north", "south"]
    assert [per_site[s]["n"] for s in per_site] == [2, 3, 3]
    assert per_site["(unknown)"]["accuracy"] == pytest.approx(0.5)
    assert per_site["north"]["accuracy"] == 1.0
    assert per_site["south"]["accuracy"] == pytest.approx(1 / 3)
    assert per_site["south"]["balanced_accuracy"] == pytest.approx(1 / 3)
    # south blank detection: rows 1 (0.6) and 7 (0.7) predicted blank, all deer -> fp = 2, tn = 1.
    assert (per_site["south"]["blank"]["fp"], per_site["south"]["blank"]["tn"]) == (2, 1)
    assert per_site["south"]["blank"]["blank_precision"] == 0.0
    assert per_site["south"]["blank"]["blank_recall"] is None
    assert evaluate_probs(DETECT_PROBS, DETECT_LABELS, CLASSES)["per_site"] is None
    with pytest.raises(DataError, match="one site per row"):
        evaluate_probs(DETECT_PROBS, DETECT_LABELS, CLASSES, sites=sites[:-1])


def test_evaluate_probs_is_json_and_holds_every_metric():
    sites = ["north", "south", None, "north", "", "south", "north", "south"]
    result = evaluate_probs(DETECT_PROBS, DETECT_LABELS, CLASSES, sites=sites, bins=4)
    assert json.loads(json.dumps(result, allow_nan=False)) == result
    assert result["n"] == 8 and result["classes"] == CLASSES and result["ece_bins"] == 4
    assert "1e-15" in result["log_loss_rule"] and "renormalised" in result["log_loss_rule"]
    assert result["log_loss"] == pytest.approx(log_loss(DETECT_PROBS, DETECT_LABELS))
    # Top-1 correct rows: 0, 3, 4, 5, 6 -> accuracy 5/8.
    assert result["accuracy"] == pytest.approx(5 / 8)
    # 3 classes: top-3 would be trivially 1.0 and top-5 meaningless, so neither is reported.
    assert result["top_k"] == {}
    assert result["blank"] == binary_detection(DETECT_PROBS, DETECT_LABELS, 0, 0.5)
    assert sum(result["reliability"]["count"]) == 8 and len(result["confusion"]) == 3
    assert [row["class"] for row in result["per_class"]] == CLASSES
    # Without a blank or empty class there is no detection block; top-3 is kept for 4 classes.
    four = evaluate_probs(np.eye(4), np.arange(4), ["a", "b", "c", "d"])
    assert four["blank"] is None and four["top_k"] == {"3": 1.0}
    assert evaluate_probs(np.eye(2), np.arange(2), ["EMPTY", "animal"])["blank"]["tp"] == 1
    with pytest.raises(DataError, match="3 columns but there are 2 classes"):
        evaluate_probs(DETECT_PROBS, DETECT_LABELS, CLASSES[:2])
    with pytest.raises(DataError, match="integer class indices"):
        evaluate_probs(DETECT_PROBS, DETECT_LABELS.astype(float), CLASSES)


def test_compare_sorts_classes_by_how_much_their_f1_differs():
    labels = np.array([0, 0, 1, 1, 2, 2])
    # a predicts 0, 0, 1, 1, 1, 1: F1 blank 1, deer 2*2/(2*2+2+0) = 2/3, fox 0.
    # b predicts 0, 1, 1, 1, 2, 2: F1 blank 2*1/(2+0+1) = 2/3, deer 2*2/(4+1+0) = 0.8, fox 1.
    # F1 differences (b - a): blank -1/3, deer +2/15, fox +1 -> order fox, blank, deer.
    a = evaluate_probs(np.eye(3)[[0, 0, 1, 1, 1, 1]], labels, CLASSES)
    b = evaluate_probs(np.eye(3)[[0, 1, 1, 1, 2, 2]], labels, CLASSES)
    out = compare(a, b, CLASSES)
    assert [row["class"] for row in out["per_class"]] == ["fox", "blank", "deer"]
    assert [row["f1_diff"] for row in out["per_class"]] == pytest.approx([1.0, -1 / 3, 2 / 15])
    # Recall: a = 1, 1, 0; b = 1/2, 1, 1 -> differences fox +1, blank -1/2, deer 0.
    assert [row["recall_diff"] for row in out["per_class"]] == pytest.approx([1.0, -0.5, 0.0])
    # Accuracy a = 4/6, b = 5/6 -> diff 1/6, higher is better; log loss lower is better.
    assert out["headline"]["accuracy"]["diff"] == pytest.approx(1 / 6)
    assert out["headline"]["accuracy"]["higher_is_better"] is True
    assert out["headline"]["log_loss"]["higher_is_better"] is False
    assert out["headline"]["log_loss"]["diff"] == pytest.approx(b["log_loss"] - a["log_loss"])
    # Blank detection: a calls rows 0, 1 blank (both right) -> precision 2/2; b calls row 0 -> 1/1; diff 0.
    assert out["headline"]["blank_precision"]["diff"] == pytest.approx(0.0)
    assert json.loads(json.dumps(out)) == out
    with pytest.raises(DataError, match="same rows"):
        compare(a, evaluate_probs(np.eye(3), np.arange(3), CLASSES), CLASSES)


def test_standard_errors_against_hand_computed_values():
    # Over frames: sd(ddof=1)/sqrt(n). Over sites: sqrt(G/(G-1) * sum_g (sum of the site's deviations)^2) / n.
    values = np.array([1.0, 2.0, 3.0, 6.0])
    assert mean_se(values) == pytest.approx((3.0, np.std(values, ddof=1) / 2))
    # sites a: (1, 2) deviations -2, -1 -> -3; b: (3, 6) -> 0, 3 -> 3; sqrt(2 * (9 + 9)) / 4 = 1.5
    assert mean_se(values, ["a", "a", "b", "b"]) == pytest.approx((3.0, 1.5))
    probs = np.array([[0.9, 0.1], [0.2, 0.8], [0.6, 0.4], [0.3, 0.7], [0.8, 0.2]])
    labels = np.array([0, 0, 0, 1, 1])  # recall: class 0 2/3, class 1 1/2
    expected = np.sqrt((2 / 3) * (1 / 3) / 3 + 0.5 * 0.5 / 2) / 2
    assert balanced_accuracy_se(probs, labels) == pytest.approx(expected)
