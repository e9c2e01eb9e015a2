"""The compact tree walker scores what onnxruntime and scikit-learn score, and refuses bad input.

The walker (``fraudstack._treewalk``, fed by :mod:`fraudstack.forest`) serves tree models in the
inference service; these tests compare it with the ONNX graph it was compiled from and with the
scikit-learn model that graph was exported from.
"""

from __future__ import annotations

import copy
import io

import numpy as np
import pytest

from fraudstack.adapters.registry import ModelRegistry
from fraudstack.errors import ModelIntegrityError
from fraudstack.features.definitions import FEATURE_NAMES
from fraudstack.forest import (
    FOREST_FILE,
    Forest,
    compile_forest,
    largest_difference,
    load_forest,
    probe_rows,
)
from fraudstack.scoring import Scorer, load_scorer
from fraudstack.train.dataset import LabelledSet
from fraudstack.train.export import onnx_probabilities, publish_model, to_onnx

from .conftest import model_metadata

WIDTH = len(FEATURE_NAMES)
TREE_MODELS = (
    "decision_tree_depth_2",
    "random_forest",
    "gradient_boosting",
    "forest_logistic_blend",
)


def _onnx(fitted: dict, name: str) -> bytes:
    return to_onnx(fitted[name], WIDTH)


@pytest.mark.parametrize("name", TREE_MODELS)
def test_walker_equals_onnxruntime_and_scikit_learn(
    name: str, fitted: dict, labelled: LabelledSet
) -> None:
    onnx_model = _onnx(fitted, name)
    compact = compile_forest(onnx_model)
    assert compact is not None
    walker = load_forest(compact, WIDTH)
    # rows on the split thresholds, one float32 below and above: any other comparison shows
    probe = probe_rows(compact, WIDTH)
    assert largest_difference(walker, lambda rows: onnx_probabilities(onnx_model, rows), probe) <= (
        1e-6
    )
    rows = labelled.features
    expected = fitted[name].predict_proba(rows)[:, 1]
    assert np.max(np.abs(np.asarray(walker.score_many(rows.tolist())) - expected)) <= 1e-5
    # one row at a time gives exactly the batch's answers
    assert [walker.score(list(row)) for row in rows[:200]] == walker.score_many(rows[:200].tolist())


def test_the_blend_adds_its_logistic_term_to_the_trees(fitted: dict, labelled: LabelledSet) -> None:
    """The blend's compact form is its forest plus the logistic-regression term: without the
    term the walker scores 0.7 x the forest alone, with it what scikit-learn scores. (Unequal
    weights here, whatever the default's are, so that swapping them cannot pass.)"""
    blend = copy.deepcopy(fitted["forest_logistic_blend"])
    blend.set_params(weights=np.asarray([0.7, 0.3]))
    compact = compile_forest(to_onnx(blend, WIDTH))
    assert compact is not None
    walker = load_forest(compact, WIDTH)
    assert walker.blended
    forest, logistic = blend.estimators_
    rows = labelled.features[:500]
    with np.load(io.BytesIO(compact)) as arrays:
        trees_only = {name: arrays[name] for name in arrays.files if name not in ("linear",)}
        assert float(arrays["forest_weight"]) == pytest.approx(0.7)
        assert float(arrays["linear_weight"]) == pytest.approx(0.3)
    buffer = io.BytesIO()
    np.savez(buffer, **trees_only)
    forest_part = load_forest(buffer.getvalue(), WIDTH)
    assert not forest_part.blended
    np.testing.assert_allclose(
        forest_part.score_many(rows.tolist()), forest.predict_proba(rows)[:, 1], atol=1e-5
    )
    expected = 0.7 * forest.predict_proba(rows)[:, 1] + 0.3 * logistic.predict_proba(rows)[:, 1]
    np.testing.assert_allclose(walker.score_many(rows.tolist()), expected, atol=1e-5)
    with pytest.raises(ValueError, match="linear"):
        load_forest(compact, WIDTH + 1)


def test_missing_values_take_the_false_branch_as_in_onnxruntime(fitted: dict) -> None:
    onnx_model = _onnx(fitted, "random_forest")
    compact = compile_forest(onnx_model)
    assert compact is not None
    rows = probe_rows(compact, WIDTH, rows=64)
    rows[::2, ::3] = np.nan
    walker = load_forest(compact, WIDTH)
    assert largest_difference(walker, lambda m: onnx_probabilities(onnx_model, m), rows) <= 1e-6


def test_a_linear_model_has_no_compact_form(fitted: dict, tmp_path) -> None:
    assert compile_forest(_onnx(fitted, "logistic_regression")) is None
    publish_model(str(tmp_path), "v-linear", "logistic_regression", fitted["logistic_regression"])
    assert FOREST_FILE not in ModelRegistry(str(tmp_path)).metadata("v-linear").files
    assert load_scorer(str(tmp_path), "v-linear").engine == "onnxruntime"


def test_published_tree_models_are_served_by_the_walker(
    fitted: dict, labelled: LabelledSet, tmp_path
) -> None:
    publish_model(str(tmp_path), "v-forest", "random_forest", fitted["random_forest"])
    assert FOREST_FILE in ModelRegistry(str(tmp_path)).metadata("v-forest").files
    scorer = load_scorer(str(tmp_path), "v-forest")
    assert scorer.engine == "tree walker"
    rows = labelled.features[:300]
    expected = fitted["random_forest"].predict_proba(rows)[:, 1]
    np.testing.assert_allclose(scorer.score_many(rows), expected, atol=1e-5, rtol=0)
    np.testing.assert_allclose(scorer.score_many(rows.tolist()), expected, atol=1e-5, rtol=0)
    assert scorer.score(list(rows[0])) == pytest.approx(expected[0], abs=1e-5)


def test_a_forest_that_disagrees_with_its_onnx_model_stops_loading(fitted: dict) -> None:
    """A forest.npz of another model (its sha256 listed, so only the comparison can tell)."""
    other = compile_forest(_onnx(fitted, "gradient_boosting"))
    metadata = model_metadata("v-mixed", "random_forest")
    with pytest.raises(ModelIntegrityError, match=f"{FOREST_FILE} differs from model.onnx"):
        Scorer(_onnx(fitted, "random_forest"), metadata, other)
    with pytest.raises(ModelIntegrityError, match=f"{FOREST_FILE} cannot be loaded"):
        Scorer(_onnx(fitted, "random_forest"), metadata, b"not a forest")


def _forest_file(values: list[float], links: list[int], roots: list[int]) -> bytes:
    buffer = io.BytesIO()
    np.savez(
        buffer,
        values=np.asarray(values, dtype="<f4"),
        links=np.asarray(links, dtype="<i4"),
        roots=np.asarray(roots, dtype="<i4"),
        feature_count=np.asarray(2),
        base=np.asarray(0.0),
        logistic=np.asarray(False),
    )
    return buffer.getvalue()


def test_a_hand_made_tree_walks_as_written() -> None:
    # x0 <= 1.5 ? (x1 <= 0.5 ? 0.1 : 0.2) : 0.7
    tree = _forest_file([1.5, 0.5, 0.1, 0.2, 0.7], [0 | 4 << 8, 1 | 2 << 8, -1, -1, -1], [0])
    walker = load_forest(tree, 2)
    assert walker.sizes == (1, 5, 2)
    assert walker.score([1.5, 0.5]) == pytest.approx(0.1)
    assert walker.score((1.0, 0.6)) == pytest.approx(0.2)
    assert walker.score(np.array([1.6, 0.0])) == pytest.approx(0.7)


def test_trees_walked_side_by_side_sum_as_one_by_one() -> None:
    # 19 trees (two groups of eight walked side by side, three after them one by one), of
    # depths 0 to 2 mixed, so that trees of a group reach their leaves at different steps
    values: list[float] = []
    links: list[int] = []
    roots: list[int] = []
    expected = {(1.0, 0.0): 0.0, (1.0, 0.9): 0.0, (2.0, 0.0): 0.0}
    for tree in range(19):
        roots.append(len(values))
        # stored as float32, and summed as such
        leaves = [float(np.float32(scale * tree)) for scale in (0.001, 0.01, 0.1)]
        if tree % 3 == 0:  # a leaf alone
            values += [leaves[0]]
            links += [-1]
            for row in expected:
                expected[row] += leaves[0]
        else:  # x0 <= 1.5 ? (x1 <= 0.5 ? a : b) : c
            values += [1.5, 0.5, leaves[0], leaves[1], leaves[2]]
            links += [0 | 4 << 8, 1 | 2 << 8, -1, -1, -1]
            for row in expected:
                expected[row] += leaves[2] if row[0] > 1.5 else leaves[row[1] > 0.5]
    walker = load_forest(_forest_file(values, links, roots), 2)
    assert walker.sizes == (19, len(values), 2)
    for row, total in expected.items():  # summed in double in tree order, answered in float32
        assert walker.score(list(row)) == float(np.float32(total))


@pytest.mark.parametrize(
    ("values", "links", "roots", "reason"),
    [
        ([1.5, 0.1, 0.2], [0 | 9 << 8, -1, -1], [0], "links outside the forest"),
        ([1.5, 0.1, 0.2], [5 | 2 << 8, -1, -1], [0], "splits on feature 5"),
        ([1.5, 0.1, 0.2], [0 | 2 << 8, -1, -1], [3], "starts outside the forest"),
        ([0.1, 1.5], [-1, 0 | 2 << 8], [0], "links outside the forest"),  # a branch last
    ],
)
def test_a_layout_that_would_read_out_of_bounds_is_refused(
    values: list[float], links: list[int], roots: list[int], reason: str
) -> None:
    with pytest.raises(ValueError, match=reason):
        load_forest(_forest_file(values, links, roots), 2)


def test_bad_rows_get_a_clear_error() -> None:
    one_leaf = np.array([(0.25, -1)], dtype=[("value", "<f4"), ("link", "<i4")])
    walker = Forest(one_leaf.tobytes(), np.zeros(1, dtype="<i4").tobytes(), 2)
    assert walker.score([0.0, 0.0]) == 0.25
    with pytest.raises(ValueError, match="a row has 3 features, the model takes 2"):
        walker.score([0.0, 1.0, 2.0])
    with pytest.raises(TypeError):
        walker.score(["a", 1.0])
    with pytest.raises(TypeError, match="a row must be a sequence"):
        walker.score(3.0)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="a row has 1 features"):
        walker.score_many([[0.0, 0.0], [1.0]])


def test_a_failed_init_leaves_a_forest_that_reads_nothing() -> None:
    good = _forest_file([1.5, 0.1, 0.2], [0 | 2 << 8, -1, -1], [0])
    walker = load_forest(good, 2)
    bad = np.array([(1.5, 0 | 9 << 8), (0.1, -1), (0.2, -1)], dtype=[("v", "<f4"), ("l", "<i4")])
    with pytest.raises(ValueError, match="links outside the forest"):
        walker.__init__(bad.tobytes(), np.zeros(1, dtype="<i4").tobytes(), 2)  # type: ignore[misc]
    assert walker.sizes == (0, 0, 0)
    with pytest.raises(ValueError, match="holds no trees"):
        walker.score([])
    with pytest.raises(ValueError, match="holds no trees"):
        Forest.__new__(Forest).score_many([[0.0, 0.0]])


def test_a_row_changed_while_it_is_read_is_read_as_it_was() -> None:
    """A number whose __float__ empties the row it sits in (the walker reads a copy)."""
    walker = load_forest(_forest_file([1.5, 0.1, 0.2], [0 | 2 << 8, -1, -1], [0]), 2)
    row: list[object] = []

    class Emptying:
        def __float__(self) -> float:
            row.clear()
            rows.clear()
            return 1.0

    row.extend([Emptying(), 0.0])
    rows = [row, [2.0, 0.0]]
    assert walker.score_many(rows) == [pytest.approx(0.1), pytest.approx(0.2)]
    assert walker.score([1e300, -1e300]) == pytest.approx(0.2)  # beyond float32: infinite


def test_scores_are_answered_in_float32_as_onnxruntime_does() -> None:
    """100 one-leaf trees of 0.01 (float32): 0.99999998 summed, 1.0 in float32."""
    certain = load_forest(_forest_file([0.01] * 100, [-1] * 100, list(range(100))), 2)
    assert certain.score([0.0, 0.0]) == 1.0
