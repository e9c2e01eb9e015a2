"""Export a fitted candidate to ONNX, and prove the export gives scikit-learn's probabilities.

The graph has one input, ``features`` (float32, ``[rows, len(FEATURE_NAMES)]``), and the
outputs ``label`` and ``probabilities`` (float32 ``[rows, 2]``, no ZipMap: a plain tensor is what
a fast single-row scorer wants).
"""

from __future__ import annotations

import io
from typing import Any

import joblib
import numpy as np
import numpy.typing as npt
import onnxruntime as ort
from skl2onnx import convert_sklearn
from skl2onnx.common.data_types import FloatTensorType
from sklearn.base import ClassifierMixin

from fraudstack import forest
from fraudstack.adapters.registry import ModelMetadata, ModelRegistry
from fraudstack.errors import ModelError
from fraudstack.features.definitions import FEATURE_NAMES, FEATURE_SET_VERSION
from fraudstack.scoring import PROBABILITIES_OUTPUT
from fraudstack.train.models import final_estimator

INPUT_NAME = "features"
#: Opsets onnxruntime 1.17 and later all run.
TARGET_OPSET = {"": 17, "ai.onnx.ml": 3}
TOLERANCE = 1e-5
#: Rows on the split thresholds the compact forest must score as onnxruntime does to be
#: published (each service start checks 512 more).
PUBLISH_PROBE_ROWS = 8_192


def to_onnx(model: ClassifierMixin, feature_count: int) -> bytes:
    """The ONNX bytes of a fitted classifier (a pipeline or a bare estimator)."""
    options = {id(final_estimator(model)): {"zipmap": False}}
    graph = convert_sklearn(
        model,
        initial_types=[(INPUT_NAME, FloatTensorType([None, feature_count]))],
        options=options,
        target_opset=TARGET_OPSET,
    )
    data: bytes = graph.SerializeToString()
    return data


def to_joblib(model: ClassifierMixin) -> bytes:
    buffer = io.BytesIO()
    joblib.dump(model, buffer)
    return buffer.getvalue()


def onnx_probabilities(onnx_model: bytes, features: npt.ArrayLike) -> npt.NDArray[np.float32]:
    """P(fraud) per row, from onnxruntime."""
    session = ort.InferenceSession(onnx_model, providers=["CPUExecutionProvider"])
    rows = np.ascontiguousarray(features, dtype=np.float32)
    result: npt.NDArray[np.float32] = session.run([PROBABILITIES_OUTPUT], {INPUT_NAME: rows})[0]
    return result[:, 1]


def max_difference(model: ClassifierMixin, onnx_model: bytes, features: np.ndarray) -> float:
    """Largest |P_onnx - P_sklearn| over the rows of ``features``."""
    expected = model.predict_proba(features)[:, 1]
    actual = onnx_probabilities(onnx_model, features)
    return float(np.max(np.abs(actual.astype(np.float64) - expected))) if len(expected) else 0.0


def check_equivalence(
    model: ClassifierMixin, onnx_model: bytes, features: np.ndarray, tolerance: float = TOLERANCE
) -> float:
    """:func:`max_difference`, or :class:`ModelError` when it exceeds ``tolerance``."""
    difference = max_difference(model, onnx_model, features)
    if not difference <= tolerance:
        raise ModelError(
            f"ONNX export differs from scikit-learn by {difference:.2e} (> {tolerance:.0e})"
        )
    return difference


def compact_forest(onnx_model: bytes) -> bytes | None:
    """``forest.npz`` for a tree model whose walker answers what onnxruntime answers, else None
    (the model is then served by onnxruntime; see :mod:`fraudstack.forest`)."""
    compact = forest.compile_forest(onnx_model)
    if compact is None:
        return None
    try:
        forest.checked_forest(
            compact,
            len(FEATURE_NAMES),
            lambda rows: onnx_probabilities(onnx_model, rows),
            rows=PUBLISH_PROBE_ROWS,
        )
    except ValueError:  # more features than a link can name, or scores that differ
        return None
    return compact


def publish_model(
    registry_root: str,
    version: str,
    model_type: str,
    model: ClassifierMixin,
    *,
    onnx_model: bytes | None = None,
    training_window: dict[str, str] | None = None,
    metrics: dict[str, Any] | None = None,
    extra: dict[str, Any] | None = None,
    files: dict[str, bytes] | None = None,
) -> ModelMetadata:
    """Publish a fitted model on the current feature set: ONNX (converted here unless given),
    the compact forest of a tree model, joblib and any other ``files``, with its
    ``metadata.json``."""
    metadata = ModelMetadata(
        version=version,
        model_type=model_type,
        feature_names=list(FEATURE_NAMES),
        feature_set_version=FEATURE_SET_VERSION,
        training_window=training_window or {},
        metrics=metrics or {},
        extra=extra or {},
    )
    if onnx_model is None:
        onnx_model = to_onnx(model, len(FEATURE_NAMES))
    artifacts = {"model.onnx": onnx_model, "model.joblib": to_joblib(model), **(files or {})}
    compact = compact_forest(onnx_model)
    if compact is not None:
        artifacts[forest.FOREST_FILE] = compact
    ModelRegistry(registry_root).publish(metadata, artifacts)
    return metadata
