"""The handbook protocol over seeds: seed lists, the summary over seeds, kept runs."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from fraudstack.train.handbook import BOOK_BAR, SeedRun
from fraudstack.train.seeds import _load, _merge, _save, parse_seeds, summarize


def test_seed_lists_and_ranges() -> None:
    assert parse_seeds("0-4") == [0, 1, 2, 3, 4]
    assert parse_seeds("7, 0-2,2") == [0, 1, 2, 7]
    for bad in ("", "a", "3-1", "-2", "1-x"):
        with pytest.raises(ValueError, match="seeds"):
            parse_seeds(bad)


def _validation(auc: float, ap: float, cp: float) -> dict[str, float]:
    return {
        "auc_roc_mean": auc,
        "average_precision_mean": ap,
        "card_precision_at_100_mean": cp,
    }


def _run(seed: int, auc: float, ap: float, cp: float, validation_ap: float) -> SeedRun:
    row = {
        "model": "forest_logistic_blend",
        "auc_roc": auc,
        "average_precision": ap,
        "card_precision_at_100": cp,
        "validation": _validation(0.88, validation_ap, 0.31),
        "onnx_max_abs_diff": 1e-7,
        "book": None,
    }
    # better on validation AP alone, worse on the two other metrics: not selected
    other = dict(row, model="logistic_regression", validation=_validation(0.87, 0.75, 0.30))
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
    assert blend["validation_means"] == {
        "auc_roc": 0.88,
        "average_precision": 0.6,
        "card_precision_at_100": 0.31,
    }
    # by validation, not by test, on the three metrics: best on two of them wins
    assert summary["selected"] == "forest_logistic_blend"
    assert [run["seed"] for run in summary["per_seed"]] == [0, 1]


def test_a_kept_model_is_reused_only_for_the_same_folds_and_hyperparameters(
    tmp_path: Path,
) -> None:
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
    assert _load(tmp_path, 4, models, 4) is None
    # one model of the two asked for: only it comes back
    alone = _load(tmp_path, 3, models[:1], 4)
    assert alone is not None and list(alone.test_scores) == models[:1]
    assert [row["model"] for row in alone.report["rows"]] == models[:1]
    # a model whose hyperparameters changed since it was kept is fitted again
    path = tmp_path / "seed-3.json"
    document = json.loads(path.read_text())
    document["hyperparameters"]["forest_logistic_blend"]["forest__min_samples_leaf"] = 99
    path.write_text(json.dumps(document))
    partial = _load(tmp_path, 3, models, 4)
    assert partial is not None and list(partial.test_scores) == ["logistic_regression"]


def test_kept_and_new_models_are_merged_and_selected_again() -> None:
    both = _run(5, 0.8, 0.6, 0.3, 0.5)
    blend_row, other_row = both.report["rows"]
    kept = SeedRun(
        dict(both.report, rows=[other_row], selected="logistic_regression"),
        {"logistic_regression": both.test_scores["logistic_regression"]},
    )
    new = SeedRun(
        dict(both.report, rows=[blend_row], selected="forest_logistic_blend"),
        {"forest_logistic_blend": both.test_scores["forest_logistic_blend"]},
    )
    merged = _merge(kept, new, ["forest_logistic_blend", "logistic_regression"])
    assert [row["model"] for row in merged.report["rows"]] == [
        "forest_logistic_blend",
        "logistic_regression",
    ]
    assert merged.report["selected"] == "forest_logistic_blend"
    assert [row["selected"] for row in merged.report["rows"]] == [True, False]
    assert list(merged.test_scores) == ["forest_logistic_blend", "logistic_regression"]
