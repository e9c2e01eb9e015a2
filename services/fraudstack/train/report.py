"""The handbook-protocol results as a printed table, Markdown and JSON."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

MARKDOWN_FILE = "model_quality.md"
JSON_FILE = "model_quality.json"


def table(report: dict[str, Any]) -> str:
    """The Markdown table of the test results, the validation score and the book's figures."""
    lines = [
        "| model | AUC ROC | average precision | Card Precision@100 | validation AP "
        "(mean ± sd) | selected | book: AUC ROC / AP / CP@100 |",
        "|---|---:|---:|---:|---:|:---:|---|",
    ]
    for row in report["rows"]:
        validation = row["validation"]
        book = row["book"]
        reference = (
            f"{book['auc_roc']:.3f} / {book['average_precision']:.3f} / "
            f"{book['card_precision_at_100']:.3f} ({book['model']})"
            if book
            else ""
        )
        lines.append(
            f"| {row['model']} | {row['auc_roc']:.3f} | {row['average_precision']:.3f} | "
            f"{row['card_precision_at_100']:.3f} | {validation['average_precision_mean']:.3f} ± "
            f"{validation['average_precision_std']:.3f} | {'**yes**' if row['selected'] else ''} "
            f"| {reference} |"
        )
    return "\n".join(lines)


def markdown(report: dict[str, Any]) -> str:
    protocol, dataset = report["protocol"], report["dataset"]
    onnx = max(row["onnx_max_abs_diff"] for row in report["rows"])
    return "\n".join(
        [
            "# Model quality: the Fraud Detection Handbook protocol (ch. 3.4, 5.2)",
            "",
            "Written by `fraudstack train --protocol handbook`.",
            "",
            f"- data: {protocol['data']}: {dataset['transactions']:,} transactions, "
            f"{dataset['frauds']:,} frauds",
            f"- train {protocol['train']} ({dataset['train_transactions']:,} transactions, "
            f"{dataset['train_frauds']:,} frauds), {protocol['delay_days']}-day delay, test "
            f"{protocol['test']} ({dataset['test_transactions']:,} transactions, "
            f"{dataset['test_frauds']:,} frauds, known compromised cards removed)",
            f"- features: the {len(protocol['features'])} of feature set "
            f"{protocol['feature_set_version']} (the book's 15 plus the 10-minute and 1-hour "
            "customer windows)",
            f"- model selection: {protocol['selection']}; the test columns are never used for it",
            "",
            table(report),
            "",
            "The book's figures are its published test results on its own run of the same "
            'simulator (ch. 3.4, "Performances using standard prediction models"); its boosted '
            "model is XGBoost where ours is scikit-learn's GradientBoostingClassifier. The "
            "simulations differ in their random draws, so figures agree in size, not digit by "
            "digit.",
            "",
            "## Timings (2 shared CPU cores)",
            "",
            f"- simulation: {report['simulate_seconds']:.1f} s",
            f"- offline features for the whole dataset: {report['offline_features_seconds']:.1f} s",
            f"- every fit, validation and test, ONNX export checks: "
            f"{report['training_seconds']:.1f} s",
            "",
            f"ONNX export against scikit-learn on the test set: largest |difference| of P(fraud) "
            f"{onnx:.2g}.",
            "",
        ]
    )


def write(report: dict[str, Any], folder: str | os.PathLike[str]) -> tuple[Path, Path]:
    """Write ``model_quality.md`` and ``model_quality.json`` into ``folder``."""
    target = Path(folder)
    target.mkdir(parents=True, exist_ok=True)
    markdown_path, json_path = target / MARKDOWN_FILE, target / JSON_FILE
    markdown_path.write_text(markdown(report))
    json_path.write_text(json.dumps(report, indent=2) + "\n")
    return markdown_path, json_path
