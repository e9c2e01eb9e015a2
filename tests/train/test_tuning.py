"""Tuning the blend by prequential validation: every grid point scored, the rule's choice, the
fits kept for a rerun."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from fraudstack.simulate import SimulationConfig
from fraudstack.train.selection import select
from fraudstack.train.tuning import markdown, tune

# the protocol's fold reaches back to 2018-07-11; 122 days from 2018-04-01 end on 07-31
SMALL = SimulationConfig(customers=300, terminals=600, days=122)


def _tune(cache: Path) -> dict[str, Any]:
    """One seed, one fold, two leaf sizes and two weights on a small simulation."""
    return tune(
        [4],
        folds=1,
        leaves=(5, 40),
        weights=(0.5, 0.9),
        cache=cache,
        jobs=1,
        progress=False,
        simulation=SMALL,
    )


def test_every_point_is_scored_and_the_rule_chooses(tmp_path: Path) -> None:
    cache = tmp_path / "fits"
    result = _tune(cache)
    grid = result["grid"]
    assert [(row["min_samples_leaf"], row["forest_weight"]) for row in grid] == [
        (5, 0.5),
        (5, 0.9),
        (40, 0.5),
        (40, 0.9),
    ]
    for row in grid:
        assert 0.5 < row["auc_roc"] <= 1.0
        assert 0.0 < row["average_precision"] <= 1.0
    # the weights move the scores: the grid is not one point four times
    assert len({row["average_precision"] for row in grid}) > 1
    means = {f"{row['min_samples_leaf']}/{row['forest_weight']}": row for row in grid}
    chosen = result["chosen"]
    assert select(means) == f"{chosen['min_samples_leaf']}/{chosen['forest_weight']}"
    # one logistic regression and one forest per leaf size were fitted, and kept
    assert sorted(path.name for path in cache.iterdir()) == [
        "s4-k0-lr.npz",
        "s4-k0-rf40.npz",
        "s4-k0-rf5.npz",
    ]
    stamps = {path: path.stat().st_mtime_ns for path in cache.iterdir()}
    again = _tune(cache)
    assert again["grid"] == grid
    assert {path: path.stat().st_mtime_ns for path in cache.iterdir()} == stamps
    assert "**chosen**" in markdown(result)
