"""The pictures a training run leaves: loss/accuracy curves and the validation confusion matrix."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from trapcls._deps import require


def _pyplot():
    matplotlib = require("matplotlib")
    matplotlib.use("Agg")  # files only: no display on a field box or in CI
    return require("matplotlib.pyplot")


def plot_curves(history: list[dict[str, float]], path: Path) -> None:
    """Train/validation loss and accuracy per epoch, side by side, as a PNG."""
    plt = _pyplot()
    epochs = [row["epoch"] for row in history]
    fig, (loss_ax, acc_ax) = plt.subplots(1, 2, figsize=(10, 4))
    for key, label in (("train_loss", "train loss"), ("val_loss", "validation loss"),
                       ("val_log_loss", "validation log loss")):
        if any(key in row for row in history):
            loss_ax.plot(epochs, [row.get(key, np.nan) for row in history], marker="o", label=label)
    for key, label in (("train_accuracy", "train accuracy"), ("val_accuracy", "validation accuracy"),
                       ("val_macro_f1", "validation macro-F1")):
        if any(key in row for row in history):
            acc_ax.plot(epochs, [row.get(key, np.nan) for row in history], marker="o", label=label)
    loss_ax.set(xlabel="epoch", ylabel="loss", title="loss")
    acc_ax.set(xlabel="epoch", ylabel="share", ylim=(0, 1.02), title="accuracy")
    for ax in (loss_ax, acc_ax):
        ax.grid(alpha=0.3)
        ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def plot_confusion(matrix: np.ndarray, classes: list[str], path: Path, *, title: str) -> None:
    """A row-normalised confusion matrix with the counts written in each cell, as a PNG."""
    plt = _pyplot()
    rows = matrix.sum(axis=1, keepdims=True)
    share = np.divide(matrix, rows, out=np.zeros(matrix.shape, dtype=float), where=rows > 0)
    size = max(4.0, 0.45 * len(classes) + 2)
    fig, ax = plt.subplots(figsize=(size + 1, size))
    image = ax.imshow(share, cmap="Blues", vmin=0, vmax=1)
    ax.set_xticks(range(len(classes)), classes, rotation=60, ha="right")
    ax.set_yticks(range(len(classes)), classes)
    ax.set(xlabel="predicted", ylabel="true", title=title)
    for (i, j), count in np.ndenumerate(matrix):
        if count:
            ax.text(j, i, str(count), ha="center", va="center", color="white" if share[i, j] > 0.5 else "black",
                    fontsize=8)
    fig.colorbar(image, ax=ax, fraction=0.046, label="share of the true class")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
