"""Tree ensembles in a compact form for single-row scoring, walked by a small C extension.

A scoring request evaluates one row, and between two requests the rest of the request (HTTP,
Redis, JSON, other processes on the same cores) pushes the model out of the CPU caches. For a
100-tree random forest onnxruntime keeps ~40 bytes per node (4 MB); measured under load in the
inference benchmark, its lone-row calls cost ~150 µs of CPU per request on top of the ~20 µs they
take warm. :mod:`fraudstack._treewalk` stores a node in 8 bytes, depth-first with the "true" child
next (800 KB for the same forest), which stays in a core's cache between requests.

The compact form is derived from the published ONNX graph, not from scikit-learn, so it scores
exactly what onnxruntime scores: float32 features against float32 thresholds. It covers what
the training job exports for tree models, one ``TreeEnsembleClassifier`` with ``BRANCH_LEQ``
splits and one score column (a random forest's averaged leaves, or a gradient-boosting sum
through the logistic function); for anything else :func:`compile_forest` returns None and the
model is served by onnxruntime. It is published next to ``model.onnx`` as ``forest.npz`` and
checked against onnxruntime twice, when published and whenever it is loaded
(:func:`checked_forest`, on rows that sit on the split thresholds).

A blend, the soft-voting ensemble of a random forest and a standardised logistic regression
that skl2onnx exports as ``TreeEnsembleClassifier`` and ``Scaler`` -> ``LinearClassifier``
weighted by two ``Mul`` and added by a ``Sum``, is compiled too: the forest as above, and the
linear term's offsets, scales, coefficients, intercept and both weights beside it, which the
walker adds after the trees (see ``_treewalk.c``).
"""

from __future__ import annotations

import io
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import numpy.typing as npt

from fraudstack._treewalk import Forest

FOREST_FILE = "forest.npz"
#: The largest |walker - onnxruntime| accepted; both sum float32 leaves, in different orders.
TOLERANCE = 1e-5
#: A link holds the feature in its low 8 bits and the jump to the "false" child above them.
MAX_FEATURES = 256
MAX_JUMP = 2**23 - 1

_NODE = np.dtype([("value", "<f4"), ("link", "<i4")])
_PASSING = {"TreeEnsembleClassifier", "Identity"}
#: What a blend's graph is made of (the ArgMax..Cast chain computes the unused ``label``).
_BLEND_OPS = {
    "TreeEnsembleClassifier",
    "Scaler",
    "LinearClassifier",
    "Mul",
    "Sum",
    "Identity",
    "ArgMax",
    "ArrayFeatureExtractor",
    "Cast",
    "Reshape",
}
_SIDES = ("nodes_truenodeids", "nodes_falsenodeids")

__all__ = [
    "FOREST_FILE",
    "TOLERANCE",
    "Forest",
    "ForestMismatch",
    "checked_forest",
    "compile_forest",
    "largest_difference",
    "load_forest",
    "probe_rows",
]


def compile_forest(onnx_model: bytes) -> bytes | None:
    """``forest.npz`` for an ONNX graph made of one supported ``TreeEnsembleClassifier``, or of
    a forest and logistic-regression blend, or None when the graph is anything else (the model
    is then served by onnxruntime)."""
    import onnx

    graph = onnx.load_from_string(onnx_model).graph
    nodes = graph.node
    ensembles = [node for node in nodes if node.op_type == "TreeEnsembleClassifier"]
    if len(ensembles) != 1:
        return None
    blend: dict[str, npt.NDArray[Any]] | None = {}
    # the exporter may rename an output with Identity nodes; anything else computes something
    if any(node.op_type not in _PASSING for node in nodes):
        if any(node.op_type not in _BLEND_OPS for node in nodes):
            return None
        try:
            blend = _blend(graph, ensembles[0])
        except (KeyError, IndexError, ValueError):
            return None
        if blend is None:
            return None
    try:
        layout = _layout(_attributes(ensembles[0]))
    except (KeyError, IndexError, ValueError):  # attributes this exporter does not write
        return None
    if layout is None:
        return None
    if blend:
        linear_features = len(blend["linear"]) // 3
        if linear_features > MAX_FEATURES:
            return None
        layout["feature_count"] = np.asarray(max(int(layout["feature_count"]), linear_features))
        layout.update(blend)
    buffer = io.BytesIO()
    np.savez(buffer, **layout)  # type: ignore[arg-type]  # numpy's stub misreads **arrays
    return buffer.getvalue()


def _attributes(node: Any) -> dict[str, Any]:
    from onnx import helper

    return {item.name: helper.get_attribute_value(item) for item in node.attribute}


def _blend(graph: Any, ensemble: Any) -> dict[str, npt.NDArray[Any]] | None:
    """The linear term and the weights of a forest + logistic-regression soft vote, or None
    when the graph is not exactly that."""
    from onnx import numpy_helper

    nodes = list(graph.node)
    constants = {item.name: numpy_helper.to_array(item) for item in graph.initializer}
    (source,) = [item.name for item in graph.input]
    linears = [node for node in nodes if node.op_type == "LinearClassifier"]
    scalers = [node for node in nodes if node.op_type == "Scaler"]
    sums = [node for node in nodes if node.op_type == "Sum"]
    if len(linears) != 1 or len(scalers) != 1 or len(sums) != 1:
        return None
    linear, scaler = _attributes(linears[0]), _attributes(scalers[0])
    if (
        list(scalers[0].input) != [source]
        or list(linears[0].input) != [scalers[0].output[0]]
        or list(ensemble.input) != [source]
        or linear.get("post_transform", b"NONE") != b"LOGISTIC"
        or list(linear.get("classlabels_ints", [])) != [0, 1]
        or sums[0].output[0] != "probabilities"
    ):
        return None
    weights: dict[str, float] = {}
    for node in nodes:
        if node.op_type != "Mul" or node.output[0] not in sums[0].input:
            continue
        product, weight = node.input
        if product not in (ensemble.output[1], linears[0].output[1]) or weight not in constants:
            return None
        weights[product] = float(np.asarray(constants[weight]).reshape(-1)[0])
    if set(weights) != {ensemble.output[1], linears[0].output[1]} or len(sums[0].input) != 2:
        return None
    offset = np.asarray(scaler["offset"], dtype=np.float64)
    scale = np.asarray(scaler["scale"], dtype=np.float64)
    coefficients = np.asarray(linear["coefficients"], dtype=np.float64)
    count = len(offset)
    if len(scale) != count or len(coefficients) != 2 * count:
        return None
    # two score rows, one per class, each through the logistic function: P(fraud) is class 1's
    return {
        "forest_weight": np.asarray(weights[ensemble.output[1]], dtype=np.float64),
        "linear_weight": np.asarray(weights[linears[0].output[1]], dtype=np.float64),
        "linear": np.concatenate([offset, scale, coefficients[count:]]),
        "intercept": np.asarray(float(linear["intercepts"][1]), dtype=np.float64),
    }


def _layout(attributes: dict[str, Any]) -> dict[str, npt.NDArray[Any]] | None:
    """The arrays of ``forest.npz`` for a ``TreeEnsembleClassifier``'s attributes, or None."""
    transform = attributes.get("post_transform", b"NONE").decode()
    base = list(attributes.get("base_values", []))
    feature_ids = list(attributes["nodes_featureids"])
    if (
        {mode.decode() for mode in attributes["nodes_modes"]} - {"BRANCH_LEQ", "LEAF"}
        or any(attributes.get("nodes_missing_value_tracks_true", []))
        or len(attributes.get("classlabels_int64s", [])) != 2
        or set(attributes["class_ids"]) != {0}  # one score column: P(class 1)
        or transform not in ("NONE", "LOGISTIC")
        or len(base) > 1
        or max(feature_ids, default=0) >= MAX_FEATURES
    ):
        return None
    nodes = _depth_first(attributes)
    if nodes is None:
        return None
    values, links, roots = nodes
    return {
        "values": np.asarray(values, dtype="<f4"),
        "links": np.asarray(links, dtype="<i4"),
        "roots": np.asarray(roots, dtype="<i4"),
        "feature_count": np.asarray(max(feature_ids, default=0) + 1),
        "base": np.asarray(base[0] if base else 0.0, dtype=np.float64),
        "logistic": np.asarray(transform == "LOGISTIC"),
    }


def _depth_first(attributes: dict[str, Any]) -> tuple[list[float], list[int], list[int]] | None:
    """Every tree's nodes in depth-first order, the true child right after its parent: the
    nodes' values and links (see :mod:`fraudstack._treewalk`) and each tree's first node."""
    modes = attributes["nodes_modes"]
    row_of = {
        (tree, node): row
        for row, (tree, node) in enumerate(
            zip(attributes["nodes_treeids"], attributes["nodes_nodeids"], strict=True)
        )
    }
    if len(row_of) != len(modes):
        return None  # a (tree, node) id given twice
    leaf_value: dict[tuple[int, int], float] = {}
    for tree, node, weight in zip(
        attributes["class_treeids"],
        attributes["class_nodeids"],
        attributes["class_weights"],
        strict=True,
    ):
        leaf_value[(tree, node)] = leaf_value.get((tree, node), 0.0) + weight

    def child(row: int, side: str) -> int:
        return row_of[(attributes["nodes_treeids"][row], attributes[side][row])]

    branches = [row for row in range(len(modes)) if modes[row] != b"LEAF"]
    children = {child(row, side) for row in branches for side in _SIDES}
    values: list[float] = []
    links: list[int] = []
    roots: list[int] = []
    for root in sorted(set(range(len(modes))) - children):  # one per tree, in row order
        roots.append(len(values))
        stack = [(root, -1)]  # (a node's row, the index of the parent it is the false child of)
        while stack:
            row, parent = stack.pop()
            here = len(values)
            if here >= len(modes):
                return None  # a node reached twice: not a forest
            if parent >= 0:
                if here - parent > MAX_JUMP:
                    return None  # a jump the link cannot hold
                links[parent] |= (here - parent) << 8
            if modes[row] == b"LEAF":
                key = (attributes["nodes_treeids"][row], attributes["nodes_nodeids"][row])
                values.append(leaf_value.get(key, 0.0))
                links.append(-1)
            else:
                values.append(attributes["nodes_values"][row])
                links.append(attributes["nodes_featureids"][row])
                # popped first, the true child lands right after its parent
                stack.append((child(row, "nodes_falsenodeids"), here))
                stack.append((child(row, "nodes_truenodeids"), -1))
    return values, links, roots


def load_forest(data: bytes, feature_count: int) -> Forest:
    """The walker of a ``forest.npz``, for rows of ``feature_count`` features; ValueError when
    the file is not a forest the walker can run."""
    with np.load(io.BytesIO(data), allow_pickle=False) as arrays:
        if int(arrays["feature_count"]) > feature_count:
            raise ValueError(
                f"the forest splits on {int(arrays['feature_count'])} features, "
                f"the model takes {feature_count}"
            )
        nodes = np.empty(len(arrays["values"]), dtype=_NODE)
        nodes["value"] = arrays["values"]
        nodes["link"] = arrays["links"]
        blend: dict[str, Any] = {}
        if "linear" in arrays.files:
            linear = np.ascontiguousarray(arrays["linear"], dtype="<f8")
            if len(linear) != 3 * feature_count:
                raise ValueError(
                    f"the linear term takes {len(linear) // 3} features, "
                    f"the model takes {feature_count}"
                )
            blend = {
                "forest_weight": float(arrays["forest_weight"]),
                "linear": linear.tobytes(),
                "linear_weight": float(arrays["linear_weight"]),
                "intercept": float(arrays["intercept"]),
            }
        return Forest(
            nodes.tobytes(),
            np.ascontiguousarray(arrays["roots"], dtype="<i4").tobytes(),
            feature_count,
            base=float(arrays["base"]),
            logistic=bool(arrays["logistic"]),
            **blend,
        )


def probe_rows(data: bytes, feature_count: int, rows: int = 512, seed: int = 0) -> np.ndarray:
    """Rows whose features sit on the forest's split thresholds, just below and just above them:
    where a float32 comparison done differently would send a row the other way."""
    rng = np.random.default_rng(seed)
    with np.load(io.BytesIO(data), allow_pickle=False) as arrays:
        branches = arrays["links"] >= 0
        features = arrays["links"][branches] & 0xFF
        thresholds = arrays["values"][branches]
    matrix = rng.normal(0.0, 100.0, size=(rows, feature_count)).astype(np.float32)
    for feature in range(feature_count):
        splits = thresholds[features == feature]
        if len(splits) == 0:
            continue
        chosen = rng.choice(splits, size=rows)
        step = rng.integers(-1, 2, size=rows)  # one float32 below, on, or one above
        nudged = np.where(step < 0, np.nextafter(chosen, np.float32(-np.inf)), chosen)
        nudged = np.where(step > 0, np.nextafter(chosen, np.float32(np.inf)), nudged)
        matrix[:, feature] = nudged
    return matrix


class ForestMismatch(ValueError):
    """A compact forest that does not score what its ONNX model scores."""


#: What a compact forest is checked against: onnxruntime's P(fraud) for a float32 matrix.
Reference = Callable[[np.ndarray], Sequence[float] | np.ndarray]


def checked_forest(
    data: bytes, feature_count: int, reference: Reference, rows: int = 512
) -> Forest:
    """The walker of a ``forest.npz``, once it scores ``rows`` probe rows as ``reference`` does.

    Raises :class:`ForestMismatch` when it does not, and ``ValueError`` (or ``KeyError``,
    ``OSError`` for a file that is no ``.npz`` of ours) when it cannot be loaded at all.
    """
    walker = load_forest(data, feature_count)
    difference = largest_difference(walker, reference, probe_rows(data, feature_count, rows))
    if not difference <= TOLERANCE:
        raise ForestMismatch(
            f"{FOREST_FILE} differs from model.onnx by {difference:.2e} (> {TOLERANCE:.0e})"
        )
    return walker


def largest_difference(forest: Forest, reference: Reference, rows: np.ndarray) -> float:
    """Largest |forest - reference| over ``rows``; ``reference`` scores a float32 matrix."""
    ours = np.asarray(forest.score_many(rows.tolist()), dtype=np.float64)
    theirs = np.asarray(reference(rows), dtype=np.float64)
    return float(np.max(np.abs(ours - theirs))) if len(ours) else 0.0
