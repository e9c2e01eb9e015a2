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


def model_quality_png(
    curves: dict[str, list[tuple[np.ndarray, np.ndarray]]],
    per_seed: dict[str, dict[str, list[float]]],
    bar: dict[str, float],
    seeds: list[int],
) -> bytes:
    """The test weeks' PR curves per model (one line per seed) and each metric's per-seed
    spread per model against the book's best (the dashed line)."""
    models = list(curves)
    colours = {name: f"C{index}" for index, name in enumerate(models)}
    figure, axes = plt.subplots(1, 4, figsize=(20, 5), dpi=90)
    for name in models:
        for index, (truth, score) in enumerate(curves[name]):
            precision, recall, _ = precision_recall_curve(truth, score)
            axes[0].step(
                recall,
                precision,
                where="post",
                color=colours[name],
                alpha=0.5,
                linewidth=1,
                label=name if index == 0 else None,
            )
    axes[0].set(
        xlabel="recall",
        ylabel="precision",
        xlim=(0, 1),
        ylim=(0, 1.02),
        title=f"test-week PR curves, seeds {', '.join(map(str, seeds))}",
    )
    axes[0].legend(loc="upper right", fontsize=8)
    axes[0].grid(alpha=0.3)
    titles = {
        "auc_roc": "AUC ROC",
        "average_precision": "average precision",
        "card_precision_at_100": "Card Precision@100",
    }
    for axis, metric in zip(axes[1:], titles, strict=True):
        for position, name in enumerate(models):
            values = per_seed[name][metric]
            axis.scatter([position] * len(values), values, color=colours[name], alpha=0.7, s=20)
            axis.errorbar(
                position + 0.2,
                float(np.mean(values)),
                yerr=float(np.std(values, ddof=1)) if len(values) > 1 else 0.0,
                fmt="D",
                color=colours[name],
                capsize=3,
            )
        axis.axhline(bar[metric], color="grey", linestyle="--", label=f"book's best {bar[metric]}")
        axis.set_xticks(range(len(models)), models, rotation=30, ha="right", fontsize=8)
        axis.set(title=f"{titles[metric]} per seed (◆ mean ± sd)")
        axis.legend(loc="lower right", fontsize=8)
        axis.grid(alpha=0.3)
    return _png(figure)
