"""A small simulation, its point-in-time features and models fitted on them, built once."""

from __future__ import annotations

from datetime import date, timedelta
from typing import Any

import pyarrow as pa
import pytest

from fraudstack.adapters.registry import ModelMetadata
from fraudstack.features.definitions import FEATURE_NAMES, FEATURE_SET_VERSION
from fraudstack.simulate import SimulationConfig, make_labels, simulate
from fraudstack.train.dataset import LabelledSet, build
from fraudstack.train.models import HANDBOOK_MODELS, fit

CONFIG = SimulationConfig(customers=300, terminals=600, days=40, seed=3)
TRAIN_START = CONFIG.start_date + timedelta(days=20)


@pytest.fixture(scope="session")
def simulation() -> tuple[pa.Table, pa.Table]:
    transactions = simulate(CONFIG)
    return transactions, make_labels(transactions, seed=CONFIG.seed)


@pytest.fixture(scope="session")
def labelled(simulation: tuple[pa.Table, pa.Table]) -> LabelledSet:
    transactions, labels = simulation
    return build(transactions, labels)


@pytest.fixture(scope="session")
def fitted(labelled: LabelledSet) -> dict[str, object]:
    """Every model family, fitted on days 20..26 of the simulation."""
    start = _ms(TRAIN_START)
    train = labelled.window(start, start + 7 * 86_400_000)
    return {name: fit(name, train.features, train.is_fraud) for name in HANDBOOK_MODELS}


def _ms(day: date) -> int:
    return (day - date(1970, 1, 1)).days * 86_400_000


def model_metadata(
    version: str, model_type: str = "logistic_regression", **fields: Any
) -> ModelMetadata:
    """The metadata of a model on the current feature set; ``fields`` override the others."""
    defaults: dict[str, Any] = {"training_window": {}, "metrics": {}}
    return ModelMetadata(
        version=version,
        model_type=model_type,
        feature_names=list(FEATURE_NAMES),
        feature_set_version=FEATURE_SET_VERSION,
        **(defaults | fields),
    )
