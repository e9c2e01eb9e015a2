"""The runtime scorer: a registered model, verified, run by onnxruntime.

Only numpy, onnxruntime and the standard library are imported (through the registry), so the
inference image carries no scikit-learn. One :class:`Scorer` per process: an onnxruntime session
is thread-safe for ``run``, but :meth:`Scorer.score` reuses one preallocated input row, so call
it from one thread at a time (the asyncio worker of the inference service does).

The model takes a float32 row of the features in ``Scorer.feature_names`` order (the order of
``metadata.json``) and its output ``probabilities`` holds ``[P(genuine), P(fraud)]`` per row.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

import numpy as np
import numpy.typing as npt
import onnxruntime as ort

from fraudstack.adapters.registry import ModelMetadata, ModelRegistry
from fraudstack.errors import ModelIntegrityError

ONNX_FILE = "model.onnx"
PROBABILITIES_OUTPUT = "probabilities"


class Scorer:
    """Scores feature vectors with one model version."""

    def __init__(self, model: bytes, metadata: ModelMetadata) -> None:
        self.metadata = metadata
        self.version = metadata.version
        self.feature_names: tuple[str, ...] = tuple(metadata.feature_names)
        options = ort.SessionOptions()
        # one row at a time: threads would cost more in hand-offs than they save
        options.intra_op_num_threads = 1
        options.inter_op_num_threads = 1
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        try:
            self._session = ort.InferenceSession(model, options, providers=["CPUExecutionProvider"])
        except Exception as exc:  # onnxruntime raises its own untyped errors
            raise ModelIntegrityError(
                f"model {self.version}: onnxruntime cannot load it: {exc}"
            ) from exc
        inputs = self._session.get_inputs()
        outputs = [output.name for output in self._session.get_outputs()]
        width = inputs[0].shape[1] if len(inputs[0].shape) == 2 else None
        if (
            len(inputs) != 1
            or PROBABILITIES_OUTPUT not in outputs
            or (isinstance(width, int) and width != len(self.feature_names))
        ):
            raise ModelIntegrityError(
                f"model {self.version}: expected one input of {len(self.feature_names)} "
                f"features and a {PROBABILITIES_OUTPUT!r} output, found inputs "
                f"{[item.name for item in inputs]} and outputs {outputs}"
            )
        self._input_name = inputs[0].name
        self._outputs = [PROBABILITIES_OUTPUT]
        self._row = np.zeros((1, len(self.feature_names)), dtype=np.float32)
        self._feed = {self._input_name: self._row}

    def score(self, vector: Sequence[float] | npt.ArrayLike) -> float:
        """P(fraud) of one feature vector (in :attr:`feature_names` order)."""
        self._row[0] = vector
        probabilities = self._session.run(self._outputs, self._feed)[0]
        return float(probabilities[0, 1])

    def score_many(self, matrix: npt.ArrayLike) -> npt.NDArray[np.float32]:
        """P(fraud) of each row of a ``(rows, features)`` matrix."""
        rows = np.ascontiguousarray(matrix, dtype=np.float32)
        if rows.ndim != 2 or rows.shape[1] != len(self.feature_names):
            raise ValueError(
                f"expected a (rows, {len(self.feature_names)}) matrix, got shape {rows.shape}"
            )
        probabilities = self._session.run(self._outputs, {self._input_name: rows})[0]
        result: npt.NDArray[np.float32] = np.ascontiguousarray(probabilities[:, 1])
        return result


def load_scorer(registry_root: str, version: str) -> Scorer:
    """The scorer of ``version``, once every file of it matches its sha256.

    Raises :class:`~fraudstack.errors.ModelNotFound` for an unknown version and
    :class:`~fraudstack.errors.ModelIntegrityError` for a missing or altered file.
    """
    registry = ModelRegistry(registry_root)
    metadata = registry.verify(version)
    path = registry.path(version) / ONNX_FILE
    if ONNX_FILE not in metadata.files:
        raise ModelIntegrityError(f"model {version}: metadata.json does not list {ONNX_FILE}")
    model = path.read_bytes()
    # hash the very bytes loaded: the file could change between verify() and this read
    if hashlib.sha256(model).hexdigest() != metadata.files[ONNX_FILE]:
        raise ModelIntegrityError(f"model {version}: {ONNX_FILE} changed while being loaded")
    return Scorer(model, metadata)
