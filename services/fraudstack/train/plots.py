"""Pictures of a model's validation: precision-recall curve and score histogram, as PNG bytes."""

from __future__ import annotations

import io

import matplotlib

matplotlib.use("Agg")  # files only, never a window

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.figure import Figure
from sklearn.metrics import average_precision_score, precision_recall_curve


def pr_curve_png(is_fraud: np.ndarray, score: np.ndarray, title: str) -> bytes:
    precision, recall, _ = precision_recall_curve(is_fraud, score)
    average = average_precision_score(is_fraud, score)
    figure, axes = plt.subplots(figsize=(6, 4.5), dpi=100)
    axes.step(recall, precision, where="post", label=f"AP = {average:.3f}")
    axes.axhline(
        float(np.mean(is_fraud)),
        color="grey",
        linestyle="--",
        label=f"random = {np.mean(is_fraud):.3f}",
    )
    axes.set(xlabel="recall", ylabel="precision", xlim=(0, 1), ylim=(0, 1.02), title=title)
    axes.legend(loc="upper right")
    axes.grid(alpha=0.3)
    return _png(figure)


def score_hist_png(is_fraud: np.ndarray, score: np.ndarray, title: str) -> bytes:
    fraud = np.asarray(is_fraud).astype(bool)
    figure, axes = plt.subplots(figsize=(6, 4.5), dpi=100)
    bins = [float(edge) for edge in np.linspace(0.0, 1.0, 41)]
    axes.hist(
        score[~fraud], bins=bins, alpha=0.6, label=f"genuine ({(~fraud).sum():,})", density=True
    )
    axes.hist(score[fraud], bins=bins, alpha=0.6, label=f"fraud ({fraud.sum():,})", density=True)
    axes.set(xlabel="P(fraud)", ylabel="density (log scale)", yscale="log", title=title)
    axes.legend(loc="upper center")
    axes.grid(alpha=0.3)
    return _png(figure)


def _png(figure: Figure) -> bytes:
    buffer = io.BytesIO()
    figure.tight_layout()
    figure.savefig(buffer, format="png")
    plt.close(figure)
    return buffer.getvalue()
