"""Classification metrics on probability arrays (numpy only, shared by train and evaluate)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from trapcls.core.model.blank import DEFAULT_BLANK_THRESHOLD, blank_index
from trapcls.core.system.exceptions import DataError

# The DrivenData multiclass log loss clips probabilities to [eps, 1 - eps] before the log.
LOG_LOSS_EPS = 1e-15


def log_loss(probs: np.ndarray, labels: np.ndarray, eps: float = LOG_LOSS_EPS) -> float:
    """Mean negative log probability of the true class, probabilities clipped to [eps, 1-eps]."""
    return float(np.mean(log_losses(probs, labels, eps)))


def log_losses(probs: np.ndarray, labels: np.ndarray, eps: float = LOG_LOSS_EPS) -> np.ndarray:
    """Each row's term of `log_loss` (its mean): for standard errors and paired differences of two models."""
    probs = np.clip(np.asarray(probs, dtype=np.float64), eps, 1 - eps)
    probs = probs / probs.sum(axis=1, keepdims=True)
    return -np.log(probs[np.arange(len(labels)), labels])


def accuracy(probs: np.ndarray, labels: np.ndarray) -> float:
    """Share of rows whose highest probability is the true class."""
    return float(np.mean(top1_hits(probs, labels)))


def top1_hits(probs: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """1.0 for each row whose highest probability is the true class, else 0.0 (`accuracy`'s terms)."""
    return (np.argmax(probs, axis=1) == labels).astype(np.float64)


def macro_f1(probs: np.ndarray, labels: np.ndarray) -> float:
    """Unweighted mean over classes of F1 of the top-1 prediction (classes absent from both are left out)."""
    tp, predicted, support = top1_counts(probs, labels, np.asarray(probs).shape[1])
    fp, fn = predicted - tp, support - tp
    seen = tp + fp + fn > 0
    return float(np.mean(2 * tp[seen] / (2 * tp[seen] + fp[seen] + fn[seen]))) if seen.any() else 0.0


def top1_counts(probs: np.ndarray, labels: np.ndarray, num_classes: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per class: rows predicted right (top-1), rows predicted as it, rows labelled it. Memory grows with rows plus
    classes; a full confusion matrix grows with classes squared (3.2 GB at 20,000 classes)."""
    labels, predicted = np.asarray(labels, dtype=np.int64), np.argmax(probs, axis=1)
    return (np.bincount(labels[predicted == labels], minlength=num_classes),
            np.bincount(predicted, minlength=num_classes), np.bincount(labels, minlength=num_classes))


def confusion_matrix(probs: np.ndarray, labels: np.ndarray, num_classes: int) -> np.ndarray:
    """Counts[true, predicted] of the top-1 predictions."""
    matrix = np.zeros((num_classes, num_classes), dtype=np.int64)
    np.add.at(matrix, (np.asarray(labels), np.argmax(probs, axis=1)), 1)
    return matrix


def present_confusion(probs: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(class indices, counts[true, predicted]) over only the classes that occur as a label or a top-1 prediction:
    at most twice as many as rows, so the matrix stays within the size of the probabilities themselves."""
    labels, predicted = np.asarray(labels, dtype=np.int64), np.argmax(probs, axis=1)
    present = np.union1d(labels, predicted)
    matrix = np.zeros((len(present), len(present)), dtype=np.int64)
    np.add.at(matrix, (np.searchsorted(present, labels), np.searchsorted(present, predicted)), 1)
    return present, matrix


def per_class(probs: np.ndarray, labels: np.ndarray, classes: list[str]) -> list[dict]:
    """Precision, recall, F1 and support of each class (0 where undefined)."""
    hits, guesses, supports = top1_counts(probs, labels, len(classes))
    rows = []
    for i, name in enumerate(classes):
        tp, predicted, support = hits[i], guesses[i], supports[i]
        precision = tp / predicted if predicted else 0.0
        recall = tp / support if support else 0.0
        f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
        rows.append({"class": name, "precision": float(precision), "recall": float(recall), "f1": float(f1),
                     "support": int(support)})
    return rows


LOG_LOSS_RULE = (f"probabilities clipped to [{LOG_LOSS_EPS:g}, 1 - {LOG_LOSS_EPS:g}], each row renormalised "
                 "to sum 1, then the mean of -ln P(true class) (natural log, DrivenData rule)")
# Sites left empty in a labels table are evaluated together under this name.
UNKNOWN_SITE = "(unknown)"
# evaluate_probs keys that compare() puts side by side, with the direction that counts as better.
HEADLINE = {"log_loss": False, "accuracy": True, "balanced_accuracy": True, "macro_f1": True, "ece": False}


def _checked(probs: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Probabilities as float64 (rows, classes) and labels as int64 indices, or a DataError saying why not."""
    probs, labels = np.asarray(probs, dtype=np.float64), np.asarray(labels)
    if probs.ndim != 2 or labels.ndim != 1 or len(probs) != len(labels):
        raise DataError(f"Expected probabilities of shape (rows, classes) and one label per row; got "
                        f"probabilities of shape {probs.shape} and labels of shape {labels.shape}.")
    if not len(labels):
        raise DataError("No rows to evaluate: the labels are empty. Check that the labels table matches "
                        "the predictions.")
    if labels.dtype.kind not in "iu":
        raise DataError(f"Labels must be integer class indices, got dtype {labels.dtype}.")
    if labels.min() < 0 or labels.max() >= probs.shape[1]:
        raise DataError(f"Labels must lie in [0, {probs.shape[1]}) (one column per class); "
                        f"got labels from {labels.min()} to {labels.max()}.")
    return probs, labels.astype(np.int64)


def _ratio(numerator: int, denominator: int) -> float | None:
    """numerator / denominator, or None where the denominator is 0 (undefined, not 0)."""
    return numerator / denominator if denominator else None


def mean_se(values: np.ndarray, groups: Sequence[str] | None = None) -> tuple[float, float]:
    """The mean of per-frame values (losses, 0/1 hits) and its standard error: the sample standard deviation over
    sqrt(frames); with `groups` (a site per frame), the cluster-robust one, which counts frames of one site as one
    draw (what a site-grouped split needs: a camera's frames are alike). 0 for fewer than 2 frames or groups."""
    values = np.asarray(values, dtype=np.float64)
    n, mean = len(values), float(np.mean(values)) if len(values) else float("nan")
    if groups is None:
        return mean, float(np.std(values, ddof=1) / np.sqrt(n)) if n > 1 else 0.0
    keys = np.asarray(groups, dtype=object)
    sums = np.array([(values[keys == g] - mean).sum() for g in dict.fromkeys(keys)])
    g = len(sums)
    return mean, float(np.sqrt(g / (g - 1) * np.sum(sums ** 2)) / n) if g > 1 else 0.0


def balanced_accuracy_se(probs: np.ndarray, labels: np.ndarray) -> float:
    """The standard error of `balanced_accuracy`: each class's recall is a proportion of its own frames, so
    sqrt(sum over present classes of r(1 - r) / n_c) / (classes present)."""
    probs, labels = _checked(probs, labels)
    tp, _, support = top1_counts(probs, labels, probs.shape[1])
    present = support > 0
    recall = tp[present] / support[present]
    return float(np.sqrt(np.sum(recall * (1 - recall) / support[present])) / present.sum())


def balanced_accuracy(probs: np.ndarray, labels: np.ndarray, num_classes: int | None = None) -> float:
    """Mean top-1 recall over the classes present in `labels` (sklearn semantics; absent classes are skipped)."""
    probs, labels = _checked(probs, labels)
    num_classes = probs.shape[1] if num_classes is None else num_classes
    tp, _, support = top1_counts(probs, labels, num_classes)
    present = support > 0
    return float(np.mean(tp[present] / support[present]))


def top_k_accuracy(probs: np.ndarray, labels: np.ndarray, k: int) -> float:
    """Share of rows whose true class is among the k most probable (k clipped to the class count).

    Ties are broken by a stable argsort of the negated probabilities, so among equal
    probabilities the lower class index ranks first, as np.argmax does; k=1 equals accuracy.
    """
    probs, labels = _checked(probs, labels)
    if k < 1:
        raise DataError(f"top-k accuracy needs k >= 1, got k={k}.")
    top = np.argsort(-probs, axis=1, kind="stable")[:, :min(k, probs.shape[1])]
    return float(np.mean(np.any(top == labels[:, None], axis=1)))


def reliability_bins(probs: np.ndarray, labels: np.ndarray, bins: int = 15) -> dict[str, list]:
    """Equal-width bins over top-1 confidence in [0, 1]: edges, mean confidence, accuracy and count per bin.

    Bin i holds lower[i] <= confidence < upper[i]; the last bin is closed at 1. Empty bins have
    count 0 and confidence and accuracy None.
    """
    probs, labels = _checked(probs, labels)
    if bins < 1:
        raise DataError(f"Calibration needs at least 1 bin, got bins={bins}.")
    edges = np.linspace(0.0, 1.0, bins + 1)
    confidence = probs.max(axis=1)
    correct = np.argmax(probs, axis=1) == labels
    # searchsorted against the reported edges (not floor(conf * bins)) so a confidence that
    # equals an edge always lands in the bin that edge opens; clipping closes the last bin at 1.
    which = np.clip(np.searchsorted(edges, confidence, side="right") - 1, 0, bins - 1)
    out: dict[str, list] = {"lower": edges[:-1].tolist(), "upper": edges[1:].tolist(),
                            "confidence": [], "accuracy": [], "count": []}
    for i in range(bins):
        members = which == i
        count = int(members.sum())
        out["count"].append(count)
        out["confidence"].append(float(confidence[members].mean()) if count else None)
        out["accuracy"].append(float(correct[members].mean()) if count else None)
    return out


def expected_calibration_error(probs: np.ndarray, labels: np.ndarray, bins: int = 15) -> float:
    """Sum over reliability_bins of count/N * |accuracy - confidence| (top-1, equal-width bins)."""
    table = reliability_bins(probs, labels, bins)
    total = sum(table["count"])
    return float(sum(n / total * abs(acc - conf)
                     for n, acc, conf in zip(table["count"], table["accuracy"], table["confidence"]) if n))


def binary_detection(probs: np.ndarray, labels: np.ndarray, positive: int, threshold: float) -> dict:
    """Blank-vs-animal counts and ratios: a row is predicted blank when P(class `positive`) >= threshold.

    `positive` is the blank class's index; every other class counts as "animal". tp/fp/fn/tn
    are from the blank side. A ratio whose denominator is 0 (e.g. blank precision when
    nothing is predicted blank) is None, not 0, so it cannot pass for a measured score.
    """
    probs, labels = _checked(probs, labels)
    if not 0 <= positive < probs.shape[1]:
        raise DataError(f"The blank class index must lie in [0, {probs.shape[1]}), got {positive}.")
    predicted, actual = probs[:, positive] >= threshold, labels == positive
    tp, fp = int(np.sum(predicted & actual)), int(np.sum(predicted & ~actual))
    fn, tn = int(np.sum(~predicted & actual)), int(np.sum(~predicted & ~actual))
    return {"threshold": float(threshold), "positive": int(positive), "tp": tp, "fp": fp, "fn": fn, "tn": tn,
            "blank_precision": _ratio(tp, tp + fp), "blank_recall": _ratio(tp, tp + fn),
            "animal_precision": _ratio(tn, tn + fn), "animal_recall": _ratio(tn, tn + fp)}


def _site_name(site: object) -> str:
    """A site's group name: None, NaN (an empty pandas cell) and blank strings become UNKNOWN_SITE."""
    if site is None or (isinstance(site, float) and site != site) or not str(site).strip():
        return UNKNOWN_SITE
    return str(site)


def evaluate_probs(probs: np.ndarray, labels: np.ndarray, classes: Sequence[str], *,
                   sites: Sequence[str | None] | None = None, blank_threshold: float = DEFAULT_BLANK_THRESHOLD,
                   top_k: Sequence[int] = (3, 5), bins: int = 15) -> dict:
    """Every metric of `trapcls evaluate` for one probability table, as a JSON-serialisable dict.

    top_k holds only the k below the class count (k >= classes is always 1.0). blank is
    binary_detection for a class named blank or empty, else None; per_site is None unless
    `sites` (one per row) is given, and then maps each site, sorted by name, to its own scores.
    """
    probs, labels = _checked(probs, labels)
    classes = [str(c) for c in classes]
    if probs.shape[1] != len(classes):
        raise DataError(f"The probabilities have {probs.shape[1]} columns but there are {len(classes)} classes "
                        f"({', '.join(classes)}); pass the bundle's classes in column order.")
    blank = blank_index(tuple(classes))

    def blank_scores(p: np.ndarray, y: np.ndarray) -> dict | None:
        return None if blank is None else binary_detection(p, y, blank, blank_threshold)

    table = reliability_bins(probs, labels, bins)
    present, confusion = present_confusion(probs, labels)
    result = {
        "n": len(labels), "classes": classes,
        "log_loss": log_loss(probs, labels), "log_loss_rule": LOG_LOSS_RULE,
        "accuracy": accuracy(probs, labels),
        "balanced_accuracy": balanced_accuracy(probs, labels),
        "macro_f1": macro_f1(probs, labels),
        "top_k": {str(k): top_k_accuracy(probs, labels, k) for k in sorted(set(top_k)) if k < len(classes)},
        "ece": expected_calibration_error(probs, labels, bins), "ece_bins": bins,
        "reliability": table,
        "per_class": per_class(probs, labels, classes),
        # Over the classes that occur only: what a picture or a reader can use, and bounded by the input.
        "confusion": confusion.tolist(), "confusion_classes": [classes[i] for i in present],
        "blank": blank_scores(probs, labels),
        "per_site": None,
    }
    if sites is not None:
        if len(sites) != len(labels):
            raise DataError(f"Expected one site per row ({len(labels)}), got {len(sites)}.")
        names = np.array([_site_name(s) for s in sites], dtype=object)
        result["per_site"] = {}
        for name in sorted(set(names)):
            rows = names == name
            p, y = probs[rows], labels[rows]
            result["per_site"][name] = {
                "n": int(rows.sum()), "accuracy": accuracy(p, y), "balanced_accuracy": balanced_accuracy(p, y),
                "macro_f1": macro_f1(p, y), "log_loss": log_loss(p, y), "blank": blank_scores(p, y)}
    return result


def _side_by_side(a: float | None, b: float | None, higher_is_better: bool) -> dict:
    """One compare() row: both values, b - a (None if either is None), and which direction is better."""
    diff = None if a is None or b is None else b - a
    return {"a": a, "b": b, "diff": diff, "higher_is_better": higher_is_better}


def compare(a: dict, b: dict, classes: Sequence[str]) -> dict:
    """Two evaluate_probs results on the same rows: headline metrics with b - a, and the classes that differ most.

    headline maps each metric (plus top_<k> and, when both have a blank class, blank_<ratio>)
    to {a, b, diff, higher_is_better}. per_class is sorted by |F1 difference|, largest first
    (ties keep class order).
    """
    classes = [str(c) for c in classes]
    if a["n"] != b["n"]:
        raise DataError(f"compare needs results on the same rows; got {a['n']} and {b['n']} rows.")
    for side, result in (("a", a), ("b", b)):
        names = [row["class"] for row in result["per_class"]]
        if names != classes:
            raise DataError(f"Result {side} has classes {', '.join(names)}, expected {', '.join(classes)}.")
    headline = {key: _side_by_side(a[key], b[key], better) for key, better in HEADLINE.items()}
    for k in sorted(set(a["top_k"]) & set(b["top_k"]), key=int):
        headline[f"top_{k}"] = _side_by_side(a["top_k"][k], b["top_k"][k], True)
    if a["blank"] is not None and b["blank"] is not None:
        for key in ("blank_precision", "blank_recall", "animal_precision", "animal_recall"):
            headline[key] = _side_by_side(a["blank"][key], b["blank"][key], True)
    rows = [{"class": ra["class"], "support": ra["support"],
             "f1_a": ra["f1"], "f1_b": rb["f1"], "f1_diff": rb["f1"] - ra["f1"],
             "recall_a": ra["recall"], "recall_b": rb["recall"], "recall_diff": rb["recall"] - ra["recall"]}
            for ra, rb in zip(a["per_class"], b["per_class"])]
    return {"n": a["n"], "headline": headline, "per_class": sorted(rows, key=lambda r: -abs(r["f1_diff"]))}
