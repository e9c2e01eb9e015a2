"""The runtime scorer: a registered model, verified, run by onnxruntime or the tree walker.

Only numpy, onnxruntime, the tree walker and the standard library are imported (through the
registry), so the inference image carries no scikit-learn. A tree model published with its
compact form (``forest.npz``, :mod:`fraudstack.forest`) is scored by the walker, once the walker
has been shown to answer what onnxruntime answers for it; any other model by onnxruntime. One
:class:`Scorer` per process: an onnxruntime session is thread-safe for ``run``, but
:meth:`Scorer.score` reuses one preallocated input row, so call it from one thread at a time (the
asyncio worker of the inference service does).

The model takes a float32 row of the features in ``Scorer.feature_names`` order (the order of
``metadata.json``) and its output ``probabilities`` holds ``[P(genuine), P(fraud)]`` per row.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from typing import SupportsFloat

import numpy as np
import numpy.typing as npt
import onnxruntime as ort

from fraudstack import forest
from fraudstack.adapters.registry import ModelMetadata, ModelRegistry
from fraudstack.errors import ModelIntegrityError

ONNX_FILE = "model.onnx"
PROBABILITIES_OUTPUT = "probabilities"


class Scorer:
    """Scores feature vectors with one model version."""

    def __init__(
        self, model: bytes, metadata: ModelMetadata, compact_forest: bytes | None = None
    ) -> None:
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
        self._forest = None if compact_forest is None else self._checked_forest(compact_forest)
        #: What scores the rows: ``"tree walker"`` or ``"onnxruntime"``.
        self.engine = "onnxruntime" if self._forest is None else "tree walker"

    def _checked_forest(self, compact_forest: bytes) -> forest.Forest:
        try:
            return forest.checked_forest(compact_forest, len(self.feature_names), self._onnx_many)
        except forest.ForestMismatch as exc:
            raise ModelIntegrityError(f"model {self.version}: {exc}") from exc
        except (ValueError, KeyError, OSError) as exc:  # not a forest file the walker can run
            raise ModelIntegrityError(
                f"model {self.version}: {forest.FOREST_FILE} cannot be loaded: {exc}"
            ) from exc

    def score(self, vector: Sequence[SupportsFloat]) -> float:
        """P(fraud) of one feature vector (in :attr:`feature_names` order)."""
        if self._forest is not None:
            score: float = self._forest.score(vector)
            return score
        self._row[0] = vector
        probabilities = self._session.run(self._outputs, self._feed)[0]
        return float(probabilities[0, 1])

    def score_many(self, matrix: npt.ArrayLike) -> npt.NDArray[np.float32] | list[float]:
        """P(fraud) of each row of a ``(rows, features)`` matrix (a list of rows as the
        service batches them, or an array)."""
        if self._forest is not None and isinstance(matrix, list):
            return self._forest.score_many(matrix)  # the walker checks each row's length
        rows = np.ascontiguousarray(matrix, dtype=np.float32)
        if rows.ndim != 2 or rows.shape[1] != len(self.feature_names):
            raise ValueError(
                f"expected a (rows, {len(self.feature_names)}) matrix, got shape {rows.shape}"
            )
        if self._forest is not None:
            return self._forest.score_many(rows.tolist())
        return self._onnx_many(rows)

    def _onnx_many(self, rows: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
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
    if ONNX_FILE not in metadata.files:
        raise ModelIntegrityError(f"model {version}: metadata.json does not list {ONNX_FILE}")
    model = _read_verified(registry, metadata, ONNX_FILE)
    compact = None
    if forest.FOREST_FILE in metadata.files:
        compact = _read_verified(registry, metadata, forest.FOREST_FILE)
    return Scorer(model, metadata, compact)


def _read_verified(registry: ModelRegistry, metadata: ModelMetadata, name: str) -> bytes:
    data = (registry.path(metadata.version) / name).read_bytes()
    # hash the very bytes loaded: the file could change between verify() and this read
    if hashlib.sha256(data).hexdigest() != metadata.files[name]:
        raise ModelIntegrityError(f"model {metadata.version}: {name} changed while being loaded")
    return data
