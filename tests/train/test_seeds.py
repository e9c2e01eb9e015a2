"""The handbook protocol over seeds: seed lists, the summary over seeds, kept runs."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from fraudstack.train.handbook import BOOK_BAR, SeedRun
from fraudstack.train.seeds import _load, _save, parse_seeds, summarize


def test_seed_lists_and_ranges() -> None:
    assert parse_seeds("0-4") == [0, 1, 2, 3, 4]
    assert parse_seeds("7, 0-2,2") == [0, 1, 2, 7]
    for bad in ("", "a", "3-1", "-2", "1-x"):
        with pytest.raises(ValueError, match="seeds"):
            parse_seeds(bad)


def _run(seed: int, auc: float, ap: float, cp: float, validation_ap: float) -> SeedRun:
    row = {
        "model": "forest_logistic_blend",
        "auc_roc": auc,
        "average_precision": ap,
        "card_precision_at_100": cp,
        "validation": {"average_precision_mean": validation_ap},
        "onnx_max_abs_diff": 1e-7,
        "book": None,
    }
    other = dict(row, model="logistic_regression", validation={"average_precision_mean": 0.1})
    report = {
        "protocol": {"data": f"simulated, seed {seed}", "selection": "best mean AP over 4 folds"},
        "dataset": {"transactions": 10},
        "selected": "forest_logistic_blend",
        "rows": [row, other],
        "training_seconds": 1.0,
    }
    rng = np.random.default_rng(seed)
    scores = {
        name: (rng.random(50) < 0.2, rng.random(50).astype(np.float32))
        for name in ("forest_logistic_blend", "logistic_regression")
    }
    return SeedRun(report, scores)


def test_summary_gives_mean_and_sd_and_the_bar() -> None:
    runs = [_run(0, 0.86, 0.69, 0.29, 0.5), _run(1, 0.90, 0.71, 0.31, 0.7)]
    summary = summarize(runs, [0, 1])
    blend = summary["summary"][0]
    assert blend["auc_roc"]["per_seed"] == [0.86, 0.90]
    assert blend["auc_roc"]["mean"] == pytest.approx(0.88)
    assert blend["auc_roc"]["std"] == pytest.approx(np.std([0.86, 0.90], ddof=1), abs=1e-4)
    # means 0.88 / 0.70 / 0.30 against the book's best 0.876 / 0.687 / 0.303
    assert BOOK_BAR == {
        "auc_roc": 0.876,
        "average_precision": 0.687,
        "card_precision_at_100": 0.303,
    }
    assert blend["beats_book_bar"] == {
        "auc_roc": True,
        "average_precision": True,
        "card_precision_at_100": False,
    }
    assert blend["validation_average_precision_mean"] == pytest.approx(0.6)
    assert summary["selected"] == "forest_logistic_blend"  # by validation, not by test
    assert [run["seed"] for run in summary["per_seed"]] == [0, 1]


def test_a_kept_run_is_reused_only_for_the_same_models_and_folds(tmp_path: Path) -> None:
    run = _run(3, 0.8, 0.6, 0.3, 0.5)
    models = ["forest_logistic_blend", "logistic_regression"]
    assert _load(tmp_path, 3, models, 4) is None
    _save(tmp_path, 3, models, 4, run)
    kept = _load(tmp_path, 3, models, 4)
    assert kept is not None and kept.report == run.report
    for name in models:
        for ours, theirs in zip(kept.test_scores[name], run.test_scores[name], strict=True):
            assert np.array_equal(ours, theirs)
    assert _load(tmp_path, 3, models, 2) is None  # other folds: run again
    assert _load(tmp_path, 3, models[:1], 4) is None
    assert _load(tmp_path, 4, models, 4) is None
