"""The pictures training draws: loss/accuracy curves per epoch and the learning-rate range test.

(The validation confusion matrix is the evaluate report's own picture, trapcls.evaluate.pictures.)
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np

from trapcls.core.system.fsutil import atomic_write_bytes
from trapcls.core.system.plotting import pyplot
from trapcls.training.lr_find import LrFind


def plot_curves(history: list[dict[str, float]], path: Path) -> None:
    """Train/validation loss and accuracy per epoch, side by side, as a PNG."""
    plt = pyplot()
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
    _save(fig, path)
    plt.close(fig)


def plot_lr_find(result: LrFind, path: Path) -> None:
    """Smoothed loss against learning rate (log scale) with the suggestion marked, as a PNG."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(7, 4))
    ax.plot(result.lrs, result.losses)
    ax.axvline(result.suggestion, color="tab:red", linestyle="--", label=f"suggested lr {result.suggestion:.2g}")
    ax.set(xscale="log", xlabel="learning rate", ylabel="smoothed training loss", title="learning-rate range test")
    ax.grid(alpha=0.3, which="both")
    ax.legend()
    fig.tight_layout()
    _save(fig, path)
    plt.close(fig)


def _save(fig, path: Path) -> None:
    """The PNG through fsutil's durable writer: a full disk leaves the old picture, never half a new one."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=100)
    atomic_write_bytes(path, buffer.getvalue())
