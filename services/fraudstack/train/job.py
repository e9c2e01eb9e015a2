"""The training job: offline store -> candidates compared on validation -> registry version.

Windows (days, UTC midnights), for a run whose labels are known up to ``as_of``::

    |<- train_days ->|<- delay_days ->|<- valid_days ->|
    train_start      train_end        valid_start      valid_end = end

``end`` defaults to the day of ``as_of`` minus ``delay_days``, so the labels of the validation
transactions had the delay to arrive; ``as_of`` defaults to the newest label report in the
store. The delay between training and validation mirrors production: a model trained today
scores transactions whose labels arrive a week later.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any

import numpy as np
import pyarrow.compute as pc

from fraudstack.adapters.offline_store import EVENTS, LABELS, OfflineStore, day_of, epoch_ms
from fraudstack.adapters.registry import new_version
from fraudstack.errors import InvalidTable, StoreError
from fraudstack.features.definitions import FEATURE_NAMES
from fraudstack.train.dataset import LabelledSet, load_from_store
from fraudstack.train.evaluate import Scores, evaluate
from fraudstack.train.export import check_equivalence, publish_model, to_onnx
from fraudstack.train.models import DEFAULT_MODELS, fit
from fraudstack.train.plots import pr_curve_png, score_hist_png
from fraudstack.train.selection import ALL_METRICS, describe, select


@dataclass(frozen=True)
class TrainWindow:
    train_start: date
    train_end: date  # exclusive
    valid_start: date
    valid_end: date  # exclusive
    labels_known_at_ms: int

    def describe(self) -> str:
        return (
            f"train {self.train_start}..{self.train_end - timedelta(days=1)}, validate "
            f"{self.valid_start}..{self.valid_end - timedelta(days=1)}"
        )


def plan_window(
    store: OfflineStore | None,
    end: date | None = None,
    as_of_ms: int | None = None,
    train_days: int = 7,
    delay_days: int = 7,
    valid_days: int = 7,
) -> TrainWindow:
    if min(train_days, valid_days) < 1 or delay_days < 0:
        raise ValueError("train and validation need at least one day; the delay can't be < 0")
    if as_of_ms is None:
        if store is None:
            raise ValueError("plan_window needs a store or as_of_ms")
        as_of_ms = _newest(store)
    if end is None:
        end = day_of(as_of_ms) - timedelta(days=delay_days)
    valid_start = end - timedelta(days=valid_days)
    train_end = valid_start - timedelta(days=delay_days)
    return TrainWindow(
        train_end - timedelta(days=train_days), train_end, valid_start, end, as_of_ms
    )


def _newest(store: OfflineStore) -> int:
    """The newest label report in the store (else the newest event): what is known now."""
    for dataset, column in ((LABELS, "reported_at"), (EVENTS, "ts")):
        days = store.days(dataset)
        if days:
            newest = store.read(dataset, epoch_ms(days[-1]), columns=[column])
            value = pc.max(newest.column(column)).as_py()
            if value is not None:
                return int(value)
    raise StoreError(f"offline store {store.uri} is empty (run `fraudstack snapshot` first)")


def train_and_register(
    store_uri: str,
    registry_root: str,
    window: TrainWindow,
    models: Sequence[str] = DEFAULT_MODELS,
    select_by: str = ALL_METRICS,
    seed: int = 0,
    jobs: int = 2,
    genuine_fraction: float = 1.0,
    progress: bool = True,
    log: Callable[[str], None] = print,
    events: LabelledSet | None = None,
) -> tuple[str, dict[str, Any]]:
    """Train every candidate, pick one by validation, publish it; return version and metrics.

    ``events``: the labelled transactions of a user's table (``--events``) instead of the
    offline store's."""
    if events is None:
        data = load_from_store(
            OfflineStore(store_uri),
            epoch_ms(window.train_start),
            epoch_ms(window.valid_end),
            window.labels_known_at_ms,
            progress=progress,
        )
    else:
        data = events.window(epoch_ms(window.train_start), epoch_ms(window.valid_end))
    train = data.window(epoch_ms(window.train_start), epoch_ms(window.train_end))
    valid = data.window(epoch_ms(window.valid_start), epoch_ms(window.valid_end))
    for name, part in (("training", train), ("validation", valid)):
        if part.frauds == 0 or part.frauds == len(part):
            message = (
                f"{window.describe()}: the {name} window has {len(part):,} "
                f"transactions and {part.frauds:,} known frauds; need both classes"
            )
            raise StoreError(message) if events is None else InvalidTable(message)
    train = _subsample_genuine(train, genuine_fraction, seed)
    log(
        f"{window.describe()}: {len(train):,} training transactions ({train.frauds:,} frauds), "
        f"{len(valid):,} validation ({valid.frauds:,} frauds)"
    )

    candidates: dict[str, tuple[Any, Scores, np.ndarray, float]] = {}
    for name in _iterate(models, progress):
        started = time.perf_counter()
        model = fit(name, train.features, train.is_fraud, seed=seed, jobs=jobs)
        seconds = time.perf_counter() - started
        score = model.predict_proba(valid.features)[:, 1]
        metrics = evaluate(valid.is_fraud, score, valid.day, valid.customer)
        candidates[name] = (model, metrics, score, seconds)
    log(candidate_table({name: item[1] for name, item in candidates.items()}))
    chosen = select({name: item[1] for name, item in candidates.items()}, select_by)
    model, metrics, score, _ = candidates[chosen]
    onnx_model = to_onnx(model, len(FEATURE_NAMES))
    difference = check_equivalence(model, onnx_model, valid.features)

    version = new_version()
    title = f"{version} ({chosen}), validation {window.valid_start}..{window.valid_end}"
    metadata = publish_model(
        registry_root,
        version,
        f"{chosen} ({type(model).__name__})",
        model,
        onnx_model=onnx_model,
        training_window={"start": _iso(window.train_start), "end": _iso(window.train_end)},
        metrics={
            "validation": dict(metrics),
            "onnx_max_abs_diff": difference,
            "candidates": {name: dict(item[1]) for name, item in candidates.items()},
        },
        extra={
            "selected_by": describe(select_by),
            "validation_window": {"start": _iso(window.valid_start), "end": _iso(window.valid_end)},
            "labels_known_at": datetime.fromtimestamp(
                window.labels_known_at_ms / 1000, UTC
            ).isoformat(),
            "rows": {
                "train": len(train),
                "train_frauds": train.frauds,
                "validation": len(valid),
                "validation_frauds": valid.frauds,
            },
            "genuine_fraction": genuine_fraction,
            "fit_seconds": {name: round(item[3], 2) for name, item in candidates.items()},
            "hyperparameters": _parameters(model),
            "onnx": {"input": "features", "output": "probabilities", "dtype": "float32"},
        },
        files={
            "pr_curve.png": pr_curve_png(valid.is_fraud, score, title),
            "score_hist.png": score_hist_png(valid.is_fraud, score, title),
        },
    )
    return version, metadata.metrics


def candidate_table(candidates: dict[str, Scores]) -> str:
    lines = ["| model | AUC ROC | average precision | Card Precision@100 |", "|---|---:|---:|---:|"]
    lines += [
        f"| {name} | {m['auc_roc']:.3f} | {m['average_precision']:.3f} | "
        f"{m['card_precision_at_100']:.3f} |"
        for name, m in candidates.items()
    ]
    return "\n".join(lines)


def _subsample_genuine(data: LabelledSet, fraction: float, seed: int) -> LabelledSet:
    if fraction >= 1.0:
        return data
    rng = np.random.default_rng(seed)
    keep = data.is_fraud | (rng.random(len(data)) < fraction)
    return data.select(keep)


def _parameters(model: Any) -> dict[str, Any]:
    return {
        key: value
        for key, value in model.get_params(deep=False).items()
        if isinstance(value, str | int | float | bool | type(None))
    }


def _iso(day: date) -> str:
    return datetime.fromtimestamp(epoch_ms(day) / 1000, UTC).isoformat()


def _iterate(models: Sequence[str], progress: bool) -> Iterable[str]:
    if not progress:
        return models
    import sys

    from tqdm import tqdm

    return tqdm(models, desc="train", unit="model", file=sys.stderr)
