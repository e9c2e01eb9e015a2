"""The handbook-protocol results over seeds as a printed table, Markdown, JSON and a picture."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from fraudstack.train.handbook import METRICS
from fraudstack.train.models import DEFAULT_MODELS

MARKDOWN_FILE = "model_quality.md"
JSON_FILE = "model_quality.json"
PNG_FILE = "model_quality.png"

_TITLES = {
    "auc_roc": "AUC ROC",
    "average_precision": "average precision",
    "card_precision_at_100": "Card Precision@100",
}


def table(report: dict[str, Any]) -> str:
    """Mean ± sd over the seeds per model, the validation score and the book's figures."""
    bar = report["book_bar"]
    lines = [
        "| model | AUC ROC | average precision | Card Precision@100 | validation AUC / AP / "
        "CP@100 (means) | selected | book (same model): AUC ROC / AP / CP@100 |",
        "|---|---:|---:|---:|---:|:---:|---|",
    ]
    for entry in report["summary"]:
        book = entry["book"]
        reference = (
            f"{book['auc_roc']:.3f} / {book['average_precision']:.3f} / "
            f"{book['card_precision_at_100']:.3f} ({book['model']})"
            if book
            else ""
        )
        cells = []
        for metric in METRICS:
            figures = entry[metric]
            mark = " ✓" if figures["mean"] > bar[metric] else ""
            cells.append(f"{figures['mean']:.4f} ± {figures['std']:.3f}{mark}")
        selected = "**yes**" if entry["model"] == report["selected"] else ""
        means = entry.get("validation_means") or {}
        validation = " / ".join(
            f"{means[metric]:.4f}" if metric in means else "–" for metric in METRICS
        )
        lines.append(
            f"| {entry['model']} | {' | '.join(cells)} | {validation} | {selected} | {reference} |"
        )
    lines.append(
        f"| *book's best* | {bar['auc_roc']:.3f} | {bar['average_precision']:.3f} | "
        f"{bar['card_precision_at_100']:.3f} | | | the bar: ✓ marks a mean above it |"
    )
    return "\n".join(lines)


def per_seed_table(report: dict[str, Any]) -> str:
    """Each model's three metrics on each seed."""
    seeds = report["seeds"]
    lines = [
        "| model | metric | " + " | ".join(f"seed {seed}" for seed in seeds) + " | mean ± sd |",
        "|---|---|" + "---:|" * (len(seeds) + 1),
    ]
    for entry in report["summary"]:
        for metric in METRICS:
            figures = entry[metric]
            values = " | ".join(f"{value:.3f}" for value in figures["per_seed"])
            lines.append(
                f"| {entry['model']} | {_TITLES[metric]} | {values} | "
                f"{figures['mean']:.4f} ± {figures['std']:.3f} |"
            )
    return "\n".join(lines)


def against_bar(report: dict[str, Any]) -> str:
    """The selected model's margin over the book's bar on each metric, beside the standard
    error of its mean over the seeds and the seeds on which it is above the bar."""
    entry = next(item for item in report["summary"] if item["model"] == report["selected"])
    bar = report["book_bar"]
    lines = [
        "| metric | mean | bar | margin | standard error of the mean | seeds above the bar |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for metric in METRICS:
        figures = entry[metric]
        seeds = figures["per_seed"]
        error = figures["std"] / len(seeds) ** 0.5
        above = sum(value > bar[metric] for value in seeds)
        lines.append(
            f"| {_TITLES[metric]} | {figures['mean']:.4f} | {bar[metric]:.3f} | "
            f"{figures['mean'] - bar[metric]:+.4f} | {error:.4f} | {above} of {len(seeds)} |"
        )
    return "\n".join(lines)


def markdown(report: dict[str, Any]) -> str:
    protocol = report["protocol"]
    per_seed = report["per_seed"]
    book = "\n".join(
        f"| {name} | {figures['auc_roc']:.3f} | {figures['average_precision']:.3f} | "
        f"{figures['card_precision_at_100']:.3f} |"
        for name, figures in report["book_best"].items()
    )
    datasets = "\n".join(
        f"| {run['seed']} | {run['dataset']['transactions']:,} | {run['dataset']['frauds']:,} | "
        f"{run['dataset']['train_transactions']:,} ({run['dataset']['train_frauds']:,}) | "
        f"{run['dataset']['test_transactions']:,} ({run['dataset']['test_frauds']:,}) | "
        f"{run['selected']} | {run.get('training_seconds', 0.0):.0f} s |"
        for run in per_seed
    )
    onnx = max(entry["onnx_max_abs_diff"] for entry in report["summary"])
    data = protocol["data"]
    return "\n".join(
        [
            "# Model quality: the Fraud Detection Handbook protocol (ch. 3.4, 5.2) over seeds",
            "",
            "Written by `fraudstack train --protocol handbook --seeds "
            f"{_seed_text(report['seeds'])}`.",
            "",
            f"- data: {data[0] if len(data) == 1 else data[0].rsplit(', seed', 1)[0]}; "
            f"{'seed' if len(data) == 1 else 'seeds'} {_seed_text(report['seeds'])}, each a new "
            "simulation and a new random state for the models",
            f"- train {protocol['train']}, {protocol['delay_days']}-day delay, test "
            f"{protocol['test']} (known compromised cards removed)",
            f"- features: the {len(protocol['features'])} of feature set "
            f"{protocol['feature_set_version']}: the book's 15, the 10-minute and 1-hour customer "
            "windows, and 10 of the amount against the customer's own history",
            f"- model selection: {protocol['selection']}; the test weeks are never used for it. "
            f"`fraudstack train` publishes {', '.join(DEFAULT_MODELS)} by default; the "
            "validation columns show each model's prequential validation means on the three "
            "metrics",
            "",
            "## Mean ± standard deviation over the seeds",
            "",
            table(report),
            "",
            f"## The selected model, {report['selected']}, against the book's best",
            "",
            against_bar(report),
            "",
            "## Per seed",
            "",
            per_seed_table(report),
            "",
            "## The book's figures",
            "",
            "The book's best published results under this protocol (ch. 3.4 baselines and ch. 5.3 "
            "after model selection), on its own single run of the simulator:",
            "",
            "| model | AUC ROC | average precision | Card Precision@100 |",
            "|---|---:|---:|---:|",
            book,
            "",
            "Its boosted model is XGBoost where ours is scikit-learn's GradientBoostingClassifier. "
            "A single run's figures move by about their standard deviation above from one seed "
            "to the next, so the comparison is of means.",
            "",
            "## Datasets and timings (2 shared CPU cores)",
            "",
            "| seed | transactions | frauds | train (frauds) | test (frauds) | selected on the "
            "seed | fits |",
            "|---:|---:|---:|---:|---:|---|---:|",
            datasets,
            "",
            f"ONNX export against scikit-learn on the test sets: largest |difference| of P(fraud) "
            f"{onnx:.2g}.",
            "",
            f"![PR curves and per-seed spread]({PNG_FILE})",
            "",
        ]
    )


def _seed_text(seeds: list[int]) -> str:
    if len(seeds) > 1 and seeds == list(range(seeds[0], seeds[-1] + 1)):
        return f"{seeds[0]}-{seeds[-1]}"
    return ",".join(map(str, seeds))


def write(
    report: dict[str, Any], folder: str | os.PathLike[str], picture: bytes | None = None
) -> list[Path]:
    """Write ``model_quality.md``, ``.json`` and (when given) ``.png`` into ``folder``."""
    target = Path(folder)
    target.mkdir(parents=True, exist_ok=True)
    paths = [target / MARKDOWN_FILE, target / JSON_FILE]
    paths[0].write_text(markdown(report))
    paths[1].write_text(json.dumps(report, indent=2, ensure_ascii=False) + "\n")
    if picture is not None:
        paths.append(target / PNG_FILE)
        paths[2].write_bytes(picture)
    return paths
