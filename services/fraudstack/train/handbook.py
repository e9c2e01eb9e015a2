"""The evaluation protocol of the Fraud Detection Handbook, chapters 3.4 and 5.2.

Data: the book's simulation (5,000 customers, 10,000 terminals, 183 days from 2018-04-01,
r = 5), its features from the shared feature code.

Test (ch. 3.4): train on 2018-07-25..07-31, skip a 7-day delay, test on 2018-08-08..08-14. From
each test day the cards already known compromised are removed: as in the book's
``get_train_test_set``, a card is known for test day D once it had a fraud in the training
week or on a day up to D - 8 (the delay plus the day itself). Metrics: AUC ROC, average
precision and Card Precision@100 (see :mod:`.evaluate`).

Model selection (ch. 5.2, prequential): the same split shifted back by 14 days, so that it
validates on the test split's training week (training 2018-07-11..07-17, validation
2018-07-25..07-31), then by 7 more days for each further fold; a model's validation score is
its mean over the folds. A model is selected from those means by the rule of
:mod:`.selection` (by default the lowest sum of its ranks on the three metrics); the test week
is never looked at for it.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import date, timedelta
from typing import Any

import numpy as np

from fraudstack.features.definitions import FEATURE_NAMES, FEATURE_SET_VERSION
from fraudstack.simulate import SimulationConfig, make_labels, simulate
from fraudstack.train.dataset import LabelledSet, build
from fraudstack.train.evaluate import Scores, evaluate
from fraudstack.train.export import max_difference, to_onnx
from fraudstack.train.models import HANDBOOK_MODELS, fit
from fraudstack.train.selection import ALL_METRICS, METRICS, describe, select

TRAIN_START = date(2018, 7, 25)
TRAIN_DAYS = DELAY_DAYS = TEST_DAYS = 7
FOLDS = 4

#: The book's test results for its baselines (ch. 3.4, "Performances using standard prediction
#: models": AUC ROC, average precision, Card Precision@100). Its boosted model is XGBoost.
BOOK_RESULTS: dict[str, tuple[str, float, float, float]] = {
    "logistic_regression": ("Logistic regression", 0.871, 0.606, 0.291),
    "decision_tree_depth_2": ("Decision tree with depth of two", 0.763, 0.496, 0.241),
    "random_forest": ("Random forest", 0.867, 0.658, 0.287),
    "gradient_boosting": ("XGBoost", 0.862, 0.639, 0.273),
}
#: The book's best figures under this protocol, baselines (ch. 3.4) and after model selection
#: (ch. 5.3), per model: AUC ROC, average precision, Card Precision@100.
BOOK_BEST: dict[str, tuple[float, float, float]] = {
    "Logistic regression": (0.871, 0.606, 0.291),
    "Random forest": (0.867, 0.658, 0.287),
    "XGBoost": (0.869, 0.687, 0.303),
    "Neural network": (0.876, 0.675, 0.303),
}
#: The bar: the best of the book's figures on each metric, whichever model reached it.
BOOK_BAR: dict[str, float] = {
    metric: max(figures[index] for figures in BOOK_BEST.values())
    for index, metric in enumerate(METRICS)
}


@dataclass
class ModelResult:
    model: str
    test: Scores
    validation: list[Scores] = field(default_factory=list)
    fit_seconds: float = 0.0
    onnx_max_abs_diff: float = float("nan")

    def validation_mean(self, metric: str) -> float:
        values = [float(fold[metric]) for fold in self.validation]  # type: ignore[literal-required]
        return float(np.mean(values)) if values else float("nan")

    def validation_std(self, metric: str) -> float:
        values = [float(fold[metric]) for fold in self.validation]  # type: ignore[literal-required]
        return float(np.std(values)) if values else float("nan")


def _epoch_day(day: date) -> int:
    return (day - date(1970, 1, 1)).days


def split(
    data: LabelledSet,
    train_start: date,
    train_days: int = TRAIN_DAYS,
    delay_days: int = DELAY_DAYS,
    test_days: int = TEST_DAYS,
) -> tuple[LabelledSet, LabelledSet]:
    """The book's training and test sets (known compromised cards removed from each test day)."""
    day = data.day
    first = _epoch_day(train_start)
    in_training = (day >= first) & (day < first + train_days)
    known = np.unique(data.customer[in_training & data.is_fraud])
    test_mask = np.zeros(len(data), dtype=bool)
    for offset in range(test_days):
        newly_known = (day == first + train_days + offset - 1) & data.is_fraud
        known = np.union1d(known, data.customer[newly_known])
        on_test_day = day == first + train_days + delay_days + offset
        test_mask |= on_test_day & ~np.isin(data.customer, known)
    return data.select(in_training), data.select(test_mask)


def fold_starts(folds: int = FOLDS, train_start: date = TRAIN_START) -> list[date]:
    """Training start of each prequential validation fold, the most recent first."""
    latest = train_start - timedelta(days=DELAY_DAYS + TEST_DAYS)
    return [latest - timedelta(days=TEST_DAYS * fold) for fold in range(folds)]


def _fit_and_score(
    name: str, train: LabelledSet, test: LabelledSet, seed: int, jobs: int
) -> tuple[Scores, Any, float, np.ndarray]:
    started = time.perf_counter()
    model = fit(name, train.features, train.is_fraud, seed=seed, jobs=jobs)
    seconds = time.perf_counter() - started
    score = model.predict_proba(test.features)[:, 1]
    return evaluate(test.is_fraud, score, test.day, test.customer), model, seconds, score


@dataclass
class SeedRun:
    """One run of the protocol on one dataset: the results and the test scores behind them."""

    report: dict[str, Any]
    #: model -> (is_fraud, P(fraud)) on the test week, for the PR curves
    test_scores: dict[str, tuple[np.ndarray, np.ndarray]]


def run_protocol(
    models: Sequence[str] = HANDBOOK_MODELS,
    folds: int = FOLDS,
    seed: int = 0,
    jobs: int = 2,
    progress: bool = True,
    config: SimulationConfig | None = None,
    log: Callable[[str], None] = print,
) -> dict[str, Any]:
    """Simulate, compute features, select by prequential validation, score on the test."""
    return run_seed(models, folds, seed, jobs, progress, config, log).report


def run_seed(
    models: Sequence[str] = HANDBOOK_MODELS,
    folds: int = FOLDS,
    seed: int = 0,
    jobs: int = 2,
    progress: bool = True,
    config: SimulationConfig | None = None,
    log: Callable[[str], None] = print,
) -> SeedRun:
    """:func:`run_protocol` on the simulation of ``seed``, keeping the test scores."""
    config = config or SimulationConfig(seed=seed)
    timings: dict[str, float] = {}
    started = time.perf_counter()
    table = simulate(config, progress=progress)
    labels = make_labels(table, seed=config.seed)
    timings["simulate_seconds"] = time.perf_counter() - started
    data = build(table, labels, progress=progress, timings=timings)
    description = (
        f"simulated: {config.customers} customers, {config.terminals} terminals, "
        f"{config.days} days from {config.start_date}, r={config.radius}, seed {config.seed}"
    )
    return evaluate_dataset(data, description, models, folds, seed, jobs, progress, timings, log)


def evaluate_dataset(
    data: LabelledSet,
    description: str,
    models: Sequence[str] = HANDBOOK_MODELS,
    folds: int = FOLDS,
    seed: int = 0,
    jobs: int = 2,
    progress: bool = True,
    timings: dict[str, float] | None = None,
    log: Callable[[str], None] = print,
    train_start: date = TRAIN_START,
) -> SeedRun:
    """Select by prequential validation and score on the test week, on a labelled dataset."""
    timings = dict(timings or {})
    log(
        f"{len(data):,} transactions, {data.frauds:,} frauds; features in "
        f"{timings.get('offline_features_seconds', float('nan')):.1f} s"
    )
    splits = [split(data, start) for start in fold_starts(folds, train_start)]
    train, test = split(data, train_start)
    results = []
    test_scores: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    steps = len(models) * (folds + 1)
    bar = progress_bar(steps, progress)
    started = time.perf_counter()
    for name in models:
        validation = []
        for fold_train, fold_valid in splits:
            scores, _, _, _ = _fit_and_score(name, fold_train, fold_valid, seed, jobs)
            validation.append(scores)
            bar(f"{name} validation")
        scores, model, seconds, score = _fit_and_score(name, train, test, seed, jobs)
        difference = max_difference(model, to_onnx(model, len(FEATURE_NAMES)), test.features)
        results.append(ModelResult(name, scores, validation, seconds, difference))
        test_scores[name] = (test.is_fraud, score)
        bar(f"{name} test")
    timings["training_seconds"] = time.perf_counter() - started
    selected = select(
        {
            result.model: {metric: result.validation_mean(metric) for metric in METRICS}
            for result in results
        },
        ALL_METRICS,
    )
    report = _report(results, selected, data, train, test, folds, timings, description, train_start)
    return SeedRun(report, test_scores)


def _report(
    results: list[ModelResult],
    selected: str,
    data: LabelledSet,
    train: LabelledSet,
    test: LabelledSet,
    folds: int,
    timings: dict[str, float],
    description: str,
    train_start: date = TRAIN_START,
) -> dict[str, Any]:
    rows = []
    for result in results:
        book = BOOK_RESULTS.get(result.model)
        rows.append(
            {
                "model": result.model,
                "auc_roc": round(result.test["auc_roc"], 4),
                "average_precision": round(result.test["average_precision"], 4),
                "card_precision_at_100": round(result.test["card_precision_at_100"], 4),
                "selected": result.model == selected,
                "validation": {
                    f"{metric}_{kind}": round(
                        result.validation_mean(metric)
                        if kind == "mean"
                        else result.validation_std(metric),
                        4,
                    )
                    for metric in METRICS
                    for kind in ("mean", "std")
                },
                "fit_seconds": round(result.fit_seconds, 2),
                "onnx_max_abs_diff": float(f"{result.onnx_max_abs_diff:.3g}"),
                "book": None
                if book is None
                else {
                    "model": book[0],
                    "auc_roc": book[1],
                    "average_precision": book[2],
                    "card_precision_at_100": book[3],
                },
            }
        )
    end = train_start + timedelta(days=TRAIN_DAYS + DELAY_DAYS + TEST_DAYS - 1)
    return {
        "protocol": {
            "data": description,
            "train": f"{train_start}..{train_start + timedelta(days=TRAIN_DAYS - 1)}",
            "delay_days": DELAY_DAYS,
            "test": f"{train_start + timedelta(days=TRAIN_DAYS + DELAY_DAYS)}..{end}",
            "selection": f"{describe(ALL_METRICS)}, means over {folds} prequential "
            "validation folds",
            "features": list(FEATURE_NAMES),
            "feature_set_version": FEATURE_SET_VERSION,
        },
        "dataset": {
            "transactions": len(data),
            "frauds": data.frauds,
            "train_transactions": len(train),
            "train_frauds": train.frauds,
            "test_transactions": len(test),
            "test_frauds": test.frauds,
        },
        "selected": selected,
        "rows": rows,
        **{key: round(value, 2) for key, value in timings.items()},
    }


def progress_bar(total: int, enabled: bool, unit: str = "fit") -> Callable[[str], None]:
    """A progress bar on stderr for ``total`` steps; each call is one step, named."""
    if not enabled:
        return lambda name: None
    import sys

    from tqdm import tqdm

    bar = tqdm(total=total, desc=f"{unit}s", unit=unit, file=sys.stderr)

    def step(name: str) -> None:
        bar.set_postfix_str(name)
        bar.update(1)
        if bar.n >= total:
            bar.close()

    return step
