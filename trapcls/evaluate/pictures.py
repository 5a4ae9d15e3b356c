"""The evaluation report's pictures as PNG/JPEG bytes: confusion matrices, reliability, per-class bars, thumbnails."""

from __future__ import annotations

import io
import logging
import math
from pathlib import Path

import numpy as np

from trapcls.core.frames.preprocess import load_image  # the one decoder: EXIF transpose, draft scaling, any mode to RGB
from trapcls.core.system.exceptions import ImageReadError
from trapcls.core.system.plotting import pyplot

log = logging.getLogger(__name__)

_DPI = 100
# Pictures grow with the classes they show (a confusion matrix with their square): past this many a picture is
# unreadable and costs hundreds of MB to draw, so the confusion matrix is left out and the bars show the most
# frequent classes only (the tables and --json keep every class).
MOST_CLASSES = 100


def confusion_png(confusion: list[list[int]], classes: list[str], normalised: bool) -> bytes:
    """The confusion matrix ([true][pred] counts) as a PNG; `normalised` colours each row by its share.

    Counts are written in every non-zero cell either way. The figure, tick labels and cell text
    scale with the number of classes so that 60 classes still read at full size.
    """
    plt = pyplot()
    matrix = np.asarray(confusion, dtype=np.int64).reshape(len(classes), len(classes))
    n = len(classes)
    if normalised:
        rows = matrix.sum(axis=1, keepdims=True)
        shade = np.divide(matrix, rows, out=np.zeros(matrix.shape, dtype=float), where=rows > 0)
        vmax, bar_label, title = 1.0, "share of the true class", "confusion (row-normalised, counts written)"
    else:
        shade = matrix.astype(float)
        vmax, bar_label, title = max(1.0, float(shade.max())), "images", "confusion (counts)"
    cell = 0.45 if n <= 20 else 0.32
    side = max(4.0, cell * n + 2.5)
    tick_font = float(np.clip(260 / max(n, 1), 7, 10))
    cell_font = float(np.clip(200 / max(n, 1), 5, 9))
    fig, ax = plt.subplots(figsize=(side + 1.2, side))
    image = ax.imshow(shade, cmap="Blues", vmin=0, vmax=vmax, interpolation="nearest")
    ax.set_xticks(range(n), classes, rotation=60 if n <= 20 else 90, ha="right" if n <= 20 else "center",
                  fontsize=tick_font)
    ax.set_yticks(range(n), classes, fontsize=tick_font)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title)
    for (i, j), count in np.ndenumerate(matrix):
        if count:
            dark = shade[i, j] > 0.55 * vmax
            ax.text(j, i, str(count), ha="center", va="center", fontsize=cell_font,
                    color="white" if dark else "black")
    fig.colorbar(image, ax=ax, fraction=0.046, pad=0.02, label=bar_label)
    return _png(plt, fig)


def reliability_png(reliability: dict) -> bytes:
    """Accuracy per confidence bin as bars against the diagonal, with each bin's image count."""
    plt = pyplot()
    lower = _floats(reliability.get("lower"))
    upper = _floats(reliability.get("upper"))
    confidence = _floats(reliability.get("confidence"))
    accuracy = _floats(reliability.get("accuracy"))
    counts = [int(c or 0) for c in reliability.get("count") or []]
    fig, (ax, count_ax) = plt.subplots(2, 1, figsize=(6.4, 6.4), sharex=True,
                                       gridspec_kw={"height_ratios": [3, 1]})
    ax.plot([0, 1], [0, 1], color="grey", linestyle="--", linewidth=1, label="perfect calibration")
    widths = [u - lo for lo, u in zip(lower, upper)]
    heights = [0.0 if math.isnan(a) else a for a in accuracy]
    ax.bar(lower, heights, width=widths, align="edge", color="#4c78a8", edgecolor="white", label="accuracy in bin")
    filled = [(c, a) for c, a in zip(confidence, accuracy) if not (math.isnan(c) or math.isnan(a))]
    if filled:
        ax.scatter(*zip(*filled), color="#e45756", zorder=3, s=14, label="mean confidence")
    for lo, width, height, count in zip(lower, widths, heights, counts):
        if count:
            ax.text(lo + width / 2, min(height + 0.02, 0.97), str(count), ha="center", va="bottom", fontsize=7)
    ax.set(xlim=(0, 1), ylim=(0, 1.05), ylabel="accuracy", title="reliability (numbers: images per bin)")
    ax.grid(alpha=0.3)
    ax.legend(loc="upper left", fontsize=8)
    count_ax.bar(lower, counts, width=widths, align="edge", color="#9d9d9d", edgecolor="white")
    count_ax.set(xlabel="top-1 confidence", ylabel="images")
    count_ax.grid(alpha=0.3)
    return _png(plt, fig)


def per_class_png(per_class: list[dict]) -> bytes:
    """Precision and recall per class as horizontal bars, the most frequent class on top (MOST_CLASSES at most)."""
    plt = pyplot()
    rows = sorted(per_class, key=lambda row: -(row.get("support") or 0))[:MOST_CLASSES]
    n = len(rows)
    font = float(np.clip(300 / max(n, 1), 6, 10))
    fig, ax = plt.subplots(figsize=(7.5, max(2.5, 0.28 * n + 1.4)))
    y = np.arange(n)
    precision = [_zero(row.get("precision")) for row in rows]
    recall = [_zero(row.get("recall")) for row in rows]
    ax.barh(y - 0.2, precision, height=0.4, color="#4c78a8", label="precision")
    ax.barh(y + 0.2, recall, height=0.4, color="#f58518", label="recall")
    ax.set_yticks(y, [f"{row.get('class', '?')} (n={row.get('support') or 0})" for row in rows], fontsize=font)
    ax.set_ylim(n - 0.5, -0.5)  # most frequent class at the top
    ax.set(xlim=(0, 1), xlabel="share")
    ax.grid(axis="x", alpha=0.3)
    ax.legend(loc="lower center", bbox_to_anchor=(0.5, 1.0), ncol=2, fontsize=8, frameon=False)
    shown = "" if n == len(per_class) else f", the {n} most frequent of {len(per_class)} classes"
    ax.set_title(f"precision and recall per class (sorted by support{shown})", pad=22)
    return _png(plt, fig)


def thumbnail(path: Path | None, size: int = 192) -> bytes | None:
    """An upright JPEG thumbnail at most `size` pixels on its long side; None if the image cannot be read."""
    if path is None:
        return None
    try:
        img = load_image(path, min_size=(size, size))
    except ImageReadError as exc:
        log.debug("no thumbnail: %s", exc)
        return None
    img.thumbnail((size, size))
    buffer = io.BytesIO()
    img.save(buffer, "JPEG", quality=80, optimize=True)
    return buffer.getvalue()


def _png(plt, fig) -> bytes:
    buffer = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buffer, format="png", dpi=_DPI)
    plt.close(fig)
    return buffer.getvalue()


def _floats(values) -> list[float]:
    return [math.nan if v is None else float(v) for v in values or []]


def _zero(value) -> float:
    return 0.0 if value is None or (isinstance(value, float) and math.isnan(value)) else float(value)
