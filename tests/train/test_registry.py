"""The model registry: atomic publish, listing, sha256 verification; the scorer's loading."""

from __future__ import annotations

from pathlib import Path

import pytest

from fraudstack.adapters.registry import ModelMetadata, ModelRegistry, new_version
from fraudstack.errors import ModelError, ModelIntegrityError, ModelNotFound
from fraudstack.features.definitions import FEATURE_NAMES, FEATURE_SET_VERSION
from fraudstack.scoring import load_scorer
from fraudstack.train.export import to_onnx

from .conftest import model_metadata


def metadata(version: str) -> ModelMetadata:
    return model_metadata(
        version,
        training_window={"start": "2018-04-21T00:00:00+00:00", "end": "2018-04-28T00:00:00+00:00"},
        metrics={"validation": {"auc_roc": 0.9}},
    )


@pytest.fixture
def published(tmp_path: Path, fitted: dict) -> tuple[ModelRegistry, str]:
    registry = ModelRegistry(tmp_path / "registry")
    version = new_version()
    onnx_model = to_onnx(fitted["logistic_regression"], len(FEATURE_NAMES))
    registry.publish(metadata(version), {"model.onnx": onnx_model, "notes.txt": b"hello"})
    return registry, version


def test_round_trip(published: tuple[ModelRegistry, str]) -> None:
    registry, version = published
    assert registry.versions() == [version] and registry.latest() == version
    checked = registry.verify(version)
    assert checked.feature_names == list(FEATURE_NAMES)
    assert checked.feature_set_version == FEATURE_SET_VERSION
    assert set(checked.files) == {"model.onnx", "notes.txt"}
    assert checked.created_at
    # nothing staged is left behind
    assert [entry.name for entry in registry.models.iterdir()] == [version]
    scorer = load_scorer(str(registry.root), version)
    assert scorer.version == version and scorer.feature_names == FEATURE_NAMES
    assert 0.0 <= scorer.score([0.0] * len(FEATURE_NAMES)) <= 1.0


def test_a_tampered_file_is_an_integrity_error(published: tuple[ModelRegistry, str]) -> None:
    registry, version = published
    onnx_path = registry.path(version) / "model.onnx"
    onnx_path.write_bytes(onnx_path.read_bytes() + b"\0")
    with pytest.raises(ModelIntegrityError, match=r"model\.onnx has sha256 .* metadata\.json"):
        registry.verify(version)
    with pytest.raises(ModelIntegrityError):
        load_scorer(str(registry.root), version)


def test_a_missing_file_is_an_integrity_error(published: tuple[ModelRegistry, str]) -> None:
    registry, version = published
    (registry.path(version) / "notes.txt").unlink()
    with pytest.raises(ModelIntegrityError, match=r"notes\.txt is missing"):
        registry.verify(version)


def test_unknown_versions_are_not_found(published: tuple[ModelRegistry, str]) -> None:
    registry, version = published
    with pytest.raises(ModelNotFound, match=f"versions: {version}"):
        registry.verify("v-does-not-exist")
    with pytest.raises(ModelNotFound):
        registry.verify("../escape")
    with pytest.raises(ModelNotFound):
        ModelRegistry(registry.root / "empty").latest()


def test_versions_are_immutable(published: tuple[ModelRegistry, str]) -> None:
    registry, version = published
    with pytest.raises(ModelError, match="immutable"):
        registry.publish(metadata(version), {"model.onnx": b"other"})
