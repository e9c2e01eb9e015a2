"""The handbook protocol over several datasets: each metric per seed, and mean ± sd.

One simulated run says little: over simulator seeds the same model's AUC ROC spreads by about
±0.02, more than the gaps between the book's models. So a model is judged on its mean over
several seeds (each seed a new simulation, and a new random state for the models), next to the
book's figures. The model selected is the one the rule of :mod:`.selection` picks from the
validation scores averaged over the seeds (prequential validation on the training periods);
the test weeks are never used for it.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from fraudstack.features.definitions import FEATURE_SET_VERSION
from fraudstack.train.handbook import (
    BOOK_BAR,
    BOOK_BEST,
    METRICS,
    SeedRun,
    run_seed,
)
from fraudstack.train.models import signature
from fraudstack.train.selection import ALL_METRICS, describe, select


@dataclass
class SeedsRun:
    """Every seed's run and the report over them."""

    report: dict[str, Any]
    runs: list[SeedRun]
    seeds: list[int]


def parse_seeds(text: str) -> list[int]:
    """``"0-4"`` or ``"0,2,5"`` (or both: ``"0-2,7"``) as a sorted list of distinct seeds."""
    seeds: set[int] = set()
    for part in (item.strip() for item in text.split(",")):
        if not part:
            continue
        first, dash, last = part.partition("-")
        try:
            low = int(first)
            high = int(last) if dash else low
        except ValueError:
            raise ValueError(f"seeds: {part!r} is not a number or a range like 0-4") from None
        if low < 0 or high < low:
            raise ValueError(f"seeds: {part!r} is not a range of non-negative seeds")
        seeds.update(range(low, high + 1))
    if not seeds:
        raise ValueError("seeds: none given")
    return sorted(seeds)


def run_seeds(
    models: Sequence[str],
    seeds: Iterable[int],
    folds: int,
    jobs: int = 2,
    progress: bool = True,
    log: Callable[[str], None] = print,
    keep: str | os.PathLike[str] | None = None,
) -> SeedsRun:
    """The handbook protocol on the simulation of each seed.

    ``keep``: a folder where each seed's run is saved as soon as it is done (its report and
    test scores). A model already there for the same seed, folds, feature set and
    hyperparameters is taken from it and only the other models are fitted, so that a long run
    can be resumed, split across processes, or extended by a new model."""
    runs: list[SeedRun] = []
    chosen = list(seeds)
    for seed in chosen:
        kept = _load(keep, seed, models, folds) if keep is not None else None
        missing = [name for name in models if kept is None or name not in kept.test_scores]
        if not missing and kept is not None:
            log(f"seed {seed}: taken from {keep}")
            runs.append(_merge(kept, None, models))
            continue
        log(f"seed {seed}: simulating and running the protocol for {', '.join(missing)}")
        run = run_seed(missing, folds, seed=seed, jobs=jobs, progress=progress, log=log)
        run = _merge(kept, run, models)
        if keep is not None:
            _save(keep, seed, models, folds, run)
        runs.append(run)
        row = {item["model"]: item for item in run.report["rows"]}
        log(
            "  "
            + "; ".join(
                f"{name} AUC {row[name]['auc_roc']:.3f} AP {row[name]['average_precision']:.3f} "
                f"CP@100 {row[name]['card_precision_at_100']:.3f}"
                for name in models
            )
        )
    return SeedsRun(summarize(runs, chosen), runs, chosen)


def _merge(kept: SeedRun | None, new: SeedRun | None, models: Sequence[str]) -> SeedRun:
    """One seed's run of ``models`` from the kept models and the newly fitted ones (the new win),
    the selection made again over them all."""
    runs = [run for run in (kept, new) if run is not None]
    rows = {row["model"]: row for run in runs for row in run.report["rows"]}
    scores = {name: item for run in runs for name, item in run.test_scores.items()}
    report = dict(runs[-1].report)
    report["rows"] = [dict(rows[name]) for name in models]
    report["selected"] = select(
        {row["model"]: _validation_means(row) for row in report["rows"]}, ALL_METRICS
    )
    for row in report["rows"]:
        row["selected"] = row["model"] == report["selected"]
    report["protocol"] = dict(report["protocol"], selection=describe(ALL_METRICS))
    report["training_seconds"] = sum(run.report.get("training_seconds", 0.0) for run in runs)
    return SeedRun(report, {name: scores[name] for name in models})


def _validation_means(row: dict[str, Any]) -> dict[str, float]:
    return {
        metric: row["validation"][f"{metric}_mean"]
        for metric in METRICS
        if f"{metric}_mean" in row["validation"]
    }


def _paths(folder: str | os.PathLike[str], seed: int) -> tuple[Path, Path]:
    base = Path(folder) / f"seed-{seed}"
    return base.with_suffix(".json"), base.with_suffix(".npz")


def _key(folds: int) -> dict[str, Any]:
    return {"folds": folds, "feature_set_version": FEATURE_SET_VERSION}


def _save(
    folder: str | os.PathLike[str], seed: int, models: Sequence[str], folds: int, run: SeedRun
) -> None:
    report_path, scores_path = _paths(folder, seed)
    report_path.parent.mkdir(parents=True, exist_ok=True)
    arrays = {}
    for name, (truth, score) in run.test_scores.items():
        arrays[f"{name}.truth"], arrays[f"{name}.score"] = truth, score
    with open(scores_path.with_suffix(".tmp.npz"), "wb") as file:
        np.savez_compressed(file, **arrays)  # type: ignore[arg-type]  # numpy stub: **arrays
    os.replace(scores_path.with_suffix(".tmp.npz"), scores_path)
    document = {
        "key": _key(folds),
        "hyperparameters": {name: signature(name) for name in models},
        "report": run.report,
    }
    report_path.with_suffix(".tmp").write_text(json.dumps(document))
    os.replace(report_path.with_suffix(".tmp"), report_path)  # last: it marks the run done


def _load(
    folder: str | os.PathLike[str], seed: int, models: Sequence[str], folds: int
) -> SeedRun | None:
    """The kept run of the seed, with those of ``models`` kept with the same hyperparameters
    (None when there is none of them)."""
    report_path, scores_path = _paths(folder, seed)
    if not report_path.exists() or not scores_path.exists():
        return None
    document = json.loads(report_path.read_text())
    if document.get("key") != _key(folds):
        return None
    kept = document.get("hyperparameters", {})
    usable = [name for name in models if name in kept and kept[name] == signature(name)]
    if not usable:
        return None
    report = dict(document["report"])
    report["rows"] = [row for row in report["rows"] if row["model"] in usable]
    with np.load(scores_path, allow_pickle=False) as arrays:
        scores = {name: (arrays[f"{name}.truth"], arrays[f"{name}.score"]) for name in usable}
    return SeedRun(report, scores)


def summarize(runs: Sequence[SeedRun], seeds: Sequence[int]) -> dict[str, Any]:
    """Per-seed figures, mean ± sd per model, the selection and the book's bar."""
    reports = [run.report for run in runs]
    models = [row["model"] for row in reports[0]["rows"]]
    summary = []
    for name in models:
        rows = [next(row for row in report["rows"] if row["model"] == name) for report in reports]
        entry: dict[str, Any] = {"model": name}
        for metric in METRICS:
            values = np.array([row[metric] for row in rows], dtype=np.float64)
            entry[metric] = {
                "per_seed": [round(float(value), 4) for value in values],
                "mean": round(float(np.mean(values)), 4),
                "std": round(float(np.std(values, ddof=1)) if len(values) > 1 else 0.0, 4),
            }
        entry["validation_means"] = {
            metric: round(float(np.mean([row["validation"][f"{metric}_mean"] for row in rows])), 4)
            for metric in METRICS
            if all(f"{metric}_mean" in row["validation"] for row in rows)
        }
        entry["beats_book_bar"] = {
            metric: bool(entry[metric]["mean"] > BOOK_BAR[metric]) for metric in METRICS
        }
        entry["book"] = rows[0]["book"]
        entry["onnx_max_abs_diff"] = max(row["onnx_max_abs_diff"] for row in rows)
        summary.append(entry)
    selected = select({entry["model"]: entry["validation_means"] for entry in summary}, ALL_METRICS)
    protocol = dict(reports[0]["protocol"])
    protocol["data"] = [report["protocol"]["data"] for report in reports]
    protocol["selection"] = (
        f"{describe(ALL_METRICS)}, on the prequential validation means averaged over the seeds"
    )
    return {
        "protocol": protocol,
        "seeds": list(seeds),
        "selected": selected,
        "book_best": {
            name: dict(zip(METRICS, figures, strict=True)) for name, figures in BOOK_BEST.items()
        },
        "book_bar": BOOK_BAR,
        "summary": summary,
        "per_seed": [
            {
                "seed": seed,
                "selected": report["selected"],
                "dataset": report["dataset"],
                "rows": report["rows"],
                **{key: value for key, value in report.items() if key.endswith("_seconds")},
            }
            for seed, report in zip(seeds, reports, strict=True)
        ],
    }
