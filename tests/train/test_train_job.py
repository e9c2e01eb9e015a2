"""`fraudstack train` end to end: offline store in, a valid registry version out."""

from __future__ import annotations

import io
import json
from pathlib import Path

import joblib
import numpy as np
import pyarrow as pa
import pytest

from fraudstack.adapters.offline_store import EVENTS, LABELS, OfflineStore, OffsetRange
from fraudstack.adapters.registry import ModelRegistry
from fraudstack.cli import main
from fraudstack.features.definitions import FEATURE_NAMES, FEATURE_SET_VERSION
from fraudstack.scoring import load_scorer
from fraudstack.train.dataset import LabelledSet

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def fill_store(root: Path, transactions: pa.Table, labels: pa.Table) -> OfflineStore:
    """The store as `fraudstack snapshot` leaves it after reading both topics."""
    store = OfflineStore(str(root))
    events = transactions.select(["txn_id", "ts", "customer_id", "terminal_id", "amount"])
    store.write_partitioned(EVENTS, events, OffsetRange("transactions", 0, 0, events.num_rows - 1))
    store.write_partitioned(LABELS, labels, OffsetRange("labels", 0, 0, labels.num_rows - 1))
    return store


def test_train_writes_a_valid_version(
    tmp_path: Path,
    simulation: tuple[pa.Table, pa.Table],
    labelled: LabelledSet,
    capsys: pytest.CaptureFixture[str],
) -> None:
    store = fill_store(tmp_path / "offline", *simulation)
    registry_root = tmp_path / "registry"
    code = main(["train", "--store", store.uri, "--registry", str(registry_root), "--no-progress"])
    output = capsys.readouterr().out
    assert code == 0, output
    version = output.strip().splitlines()[-1]

    registry = ModelRegistry(registry_root)
    metadata = registry.verify(version)
    assert metadata.feature_names == list(FEATURE_NAMES)
    assert metadata.feature_set_version == FEATURE_SET_VERSION
    # a tree model is published with its compact form too, which the service scores with
    linear = metadata.model_type.startswith("logistic_regression")  # "<name> (<class>)"
    compact = set() if linear else {"forest.npz"}
    assert set(metadata.files) == {
        "model.onnx",
        "model.joblib",
        "pr_curve.png",
        "score_hist.png",
        *compact,
    }
    # the default model is the forest + logistic-regression blend, served by the walker
    assert set(metadata.metrics["candidates"]) == {"forest_logistic_blend"}
    assert metadata.model_type == "forest_logistic_blend (VotingClassifier)"
    assert metadata.metrics["onnx_max_abs_diff"] <= 1e-5
    validation = metadata.metrics["validation"]
    assert validation["auc_roc"] > 0.7
    # training ends a 7-day delay before the validation window starts
    assert metadata.training_window["end"] < metadata.extra["validation_window"]["start"]
    folder = registry.path(version)
    for picture in ("pr_curve.png", "score_hist.png"):
        assert (folder / picture).read_bytes().startswith(PNG_SIGNATURE)
    json.loads((folder / "metadata.json").read_text())

    # the runtime scorer and the pickled scikit-learn model agree
    scorer = load_scorer(str(registry_root), version)
    assert scorer.engine == ("tree walker" if compact else "onnxruntime")
    model = joblib.load(io.BytesIO((folder / "model.joblib").read_bytes()))
    rows = labelled.features[-300:]
    np.testing.assert_allclose(scorer.score_many(rows), model.predict_proba(rows)[:, 1], atol=1e-5)


def test_train_on_an_empty_store_says_so(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(
        [
            "train",
            "--store",
            str(tmp_path / "nothing"),
            "--registry",
            str(tmp_path / "registry"),
            "--no-progress",
        ]
    )
    assert code == 1
    assert "offline store" in capsys.readouterr().err
