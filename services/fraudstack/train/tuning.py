"""The blend's hyperparameters, chosen by prequential validation over simulated runs.

The grid: the forest's smallest leaf (:data:`LEAVES`) and the forest's weight in the soft vote
(:data:`WEIGHTS`, the logistic regression has the rest). On every seed and every prequential
validation fold of the handbook protocol (ch. 5.2: the training periods before the test's
training week), the forest of each leaf size and the logistic regression are fitted once, and
every weight is scored on their validation predictions: a soft vote is the weighted mean of
the two probabilities, so weights cost no fits. The point chosen is the one the selection rule
of :mod:`.selection` picks from the validation means over seeds and folds; the test weeks are
never read. ``models.BLEND_MIN_SAMPLES_LEAF`` and ``models.BLEND_WEIGHTS`` hold the result of
``fraudstack train --protocol handbook --seeds 0-4 --tune``, written to
``blend_tuning.{md,json}``.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from fraudstack.simulate import SimulationConfig, make_labels, simulate
from fraudstack.train.dataset import LabelledSet, build
from fraudstack.train.evaluate import evaluate
from fraudstack.train.handbook import FOLDS, fold_starts, progress_bar, split
from fraudstack.train.models import BLEND, BLEND_MIN_SAMPLES_LEAF, BLEND_WEIGHTS
from fraudstack.train.models import build as build_model
from fraudstack.train.selection import ALL_METRICS, METRICS, describe, select

LEAVES = (10, 20, 40)
WEIGHTS = (0.5, 0.6, 0.7, 0.8, 0.9)
MARKDOWN_FILE = "blend_tuning.md"
JSON_FILE = "blend_tuning.json"


def _point(leaf: int, weight: float) -> str:
    return f"leaf {leaf}, forest weight {weight:.1f}"


def tune(
    seeds: Sequence[int],
    folds: int = FOLDS,
    leaves: Sequence[int] = LEAVES,
    weights: Sequence[float] = WEIGHTS,
    cache: str | os.PathLike[str] | None = None,
    jobs: int = 2,
    progress: bool = True,
    log: Callable[[str], None] = print,
    simulation: SimulationConfig | None = None,
) -> dict[str, Any]:
    """Validation means of every grid point over ``seeds`` and ``folds``, and the choice.

    ``cache``: a folder for each fit's validation predictions, so a run can be resumed or
    extended by a leaf size without fitting again. ``simulation``: the simulation to run with
    each seed (default: the book's)."""
    folder = Path(cache) if cache is not None else None
    scores: dict[str, list[dict[str, float]]] = {
        _point(leaf, weight): [] for leaf in leaves for weight in weights
    }
    started = time.perf_counter()
    bar = progress_bar(len(seeds) * folds * (len(leaves) + 1), progress)
    for seed in seeds:
        config = replace(simulation or SimulationConfig(), seed=seed)
        table = simulate(config, progress=False)
        data = build(table, make_labels(table, seed=seed), progress=False)
        for fold, start in enumerate(fold_starts(folds)):
            train, valid = split(data, start)
            logistic = _predictions(folder, seed, fold, "lr", "logistic", None, train, valid, jobs)
            bar(f"seed {seed} fold {fold} logistic")
            for leaf in leaves:
                forest = _predictions(
                    folder, seed, fold, f"rf{leaf}", "forest", leaf, train, valid, jobs
                )
                bar(f"seed {seed} fold {fold} forest leaf {leaf}")
                for weight in weights:
                    score = weight * forest + (1 - weight) * logistic
                    result = evaluate(valid.is_fraud, score, valid.day, valid.customer)
                    scores[_point(leaf, weight)].append({m: float(result[m]) for m in METRICS})  # type: ignore[literal-required]
        log(f"seed {seed}: {folds} folds scored ({time.perf_counter() - started:.0f} s)")
    means = {
        point: {
            metric: round(float(np.mean([row[metric] for row in rows])), 4) for metric in METRICS
        }
        for point, rows in scores.items()
    }
    grid = {_point(leaf, weight): (leaf, weight) for leaf in leaves for weight in weights}
    leaf, weight = grid[select(means, ALL_METRICS)]
    return {
        "seeds": list(seeds),
        "folds": folds,
        "selection": describe(ALL_METRICS) + ", on validation means over the seeds and folds",
        "grid": [
            {"min_samples_leaf": point[0], "forest_weight": point[1], **means[name]}
            for name, point in grid.items()
        ],
        "chosen": {"min_samples_leaf": leaf, "forest_weight": weight},
        "in_use": {"min_samples_leaf": BLEND_MIN_SAMPLES_LEAF, "forest_weight": BLEND_WEIGHTS[0]},
        "seconds": round(time.perf_counter() - started, 1),
    }


def _predictions(
    folder: Path | None,
    seed: int,
    fold: int,
    tag: str,
    member: str,
    leaf: int | None,
    train: LabelledSet,
    valid: LabelledSet,
    jobs: int,
) -> np.ndarray:
    """P(fraud) of the blend's ``member`` (fitted on ``train``) on ``valid``, from the cache
    when it is there."""
    path = folder / f"s{seed}-k{fold}-{tag}.npz" if folder is not None else None
    if path is not None and path.exists():
        with np.load(path) as saved:
            predictions: np.ndarray = saved["p"]
        if len(predictions) == len(valid):
            return predictions
    voting = build_model(BLEND, seed=seed, jobs=jobs)
    model = dict(voting.get_params()["estimators"])[member]
    if leaf is not None:
        model.set_params(min_samples_leaf=leaf)
    model.fit(train.features, train.is_fraud)
    predictions = model.predict_proba(valid.features)[:, 1]
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path.with_suffix(".tmp.npz"), "wb") as file:
            np.savez(file, p=predictions)
        os.replace(path.with_suffix(".tmp.npz"), path)
    return predictions


def markdown(result: dict[str, Any]) -> str:
    chosen, in_use = result["chosen"], result["in_use"]
    lines = [
        "# The blend's hyperparameters by prequential validation",
        "",
        "Written by `fraudstack train --protocol handbook --seeds "
        f"{','.join(map(str, result['seeds']))} --tune`: the forest's smallest leaf and its "
        "weight in the soft vote with the logistic regression, each point's validation "
        f"means over the seeds and {result['folds']} prequential folds (the test weeks are "
        f"never read). Selection: {result['selection']}.",
        "",
        "| min_samples_leaf | forest weight | AUC ROC | average precision | Card Precision@100 | |",
        "|---:|---:|---:|---:|---:|:---:|",
    ]
    for row in result["grid"]:
        mark = (
            "**chosen**"
            if (row["min_samples_leaf"], row["forest_weight"])
            == (chosen["min_samples_leaf"], chosen["forest_weight"])
            else ""
        )
        lines.append(
            f"| {row['min_samples_leaf']} | {row['forest_weight']:.1f} | {row['auc_roc']:.4f} | "
            f"{row['average_precision']:.4f} | {row['card_precision_at_100']:.4f} | {mark} |"
        )
    lines += [
        "",
        f"In use by `fraudstack train`: leaf {in_use['min_samples_leaf']}, forest weight "
        f"{in_use['forest_weight']:.1f}"
        + (" (the chosen point)." if in_use == chosen else " (not the chosen point)."),
        f"Time: {result['seconds']:.0f} s on {os.cpu_count()} CPUs.",
        "",
    ]
    return "\n".join(lines)


def write(result: dict[str, Any], folder: str | os.PathLike[str]) -> list[Path]:
    target = Path(folder)
    target.mkdir(parents=True, exist_ok=True)
    paths = [target / MARKDOWN_FILE, target / JSON_FILE]
    paths[0].write_text(markdown(result))
    paths[1].write_text(json.dumps(result, indent=2) + "\n")
    return paths
