"""The registry check against a real model registry in a temporary folder (no server involved):
what it finds wrong with a version, and when a fault rejects the candidate."""

from __future__ import annotations

from pathlib import Path

import pytest

from fraudmodel_operator.registry_check import (
    ARTIFACT_CORRUPT,
    FEATURE_SET_MISMATCH,
    VERSION_NOT_FOUND,
    RegistryCheck,
)
from fraudmodel_operator.resource import Spec
from fraudstack.adapters.registry import ModelMetadata, ModelRegistry
from fraudstack.features.definitions import FEATURE_NAMES, FEATURE_SET_VERSION


@pytest.fixture
def registry(tmp_path: Path) -> ModelRegistry:
    return ModelRegistry(tmp_path / "registry")


def publish(registry: ModelRegistry, version: str, feature_set: str = FEATURE_SET_VERSION) -> None:
    metadata = ModelMetadata(
        version=version,
        model_type="logistic_regression",
        feature_names=list(FEATURE_NAMES),
        feature_set_version=feature_set,
        training_window={"start": "2018-04-01T00:00:00+00:00", "end": "2018-04-08T00:00:00+00:00"},
        metrics={},
    )
    registry.publish(metadata, {"model.onnx": b"not a model: never loaded here"})


def corrupt(registry: ModelRegistry, version: str) -> None:
    """Alter a file of a published version behind the registry's back (a bad disk, a bad sync)."""
    (registry.path(version) / "model.onnx").write_bytes(b"not the bytes that were published")


def spec(stable: str, candidate: str | None = None) -> Spec:
    return Spec(stable=stable, candidate=candidate)


async def test_a_candidate_whose_file_was_altered_is_rejected(registry: ModelRegistry) -> None:
    publish(registry, "v1")
    publish(registry, "v2")
    corrupt(registry, "v2")
    problem = await RegistryCheck(str(registry.root)).check(spec("v1", "v2"))
    assert problem is not None and problem.rejects_candidate
    assert problem.reason == ARTIFACT_CORRUPT
    assert problem.message.startswith("candidate version v2 cannot be loaded")
    assert "model.onnx has sha256" in problem.message


async def test_a_stable_whose_file_was_altered_is_an_ordinary_problem(
    registry: ModelRegistry,
) -> None:
    publish(registry, "v1")
    publish(registry, "v2")
    corrupt(registry, "v1")
    check = RegistryCheck(str(registry.root))
    for the_spec in (spec("v1"), spec("v1", "v2")):
        problem = await check.check(the_spec)
        assert problem is not None and problem.reason == ARTIFACT_CORRUPT
        assert not problem.rejects_candidate
        assert problem.message.startswith("stable version v1 cannot be loaded")


async def test_a_rejected_candidate_with_a_faulty_stable_is_an_ordinary_problem(
    registry: ModelRegistry,
) -> None:
    """Nothing sound to roll back to: the FraudModel is Degraded, both faults named."""
    publish(registry, "v2")
    corrupt(registry, "v2")
    problem = await RegistryCheck(str(registry.root)).check(spec("v1", "v2"))
    assert problem is not None and not problem.rejects_candidate
    assert problem.reason == VERSION_NOT_FOUND
    assert "stable version v1 is not in the model registry" in problem.message
    assert "candidate version v2 cannot be loaded" in problem.message


async def test_a_missing_candidate_stays_transient(registry: ModelRegistry) -> None:
    """Not a rejection: the FraudModel recovers when training publishes the version."""
    publish(registry, "v1")
    check = RegistryCheck(str(registry.root))
    problem = await check.check(spec("v1", "v2"))
    assert problem is not None and problem.reason == VERSION_NOT_FOUND
    assert not problem.rejects_candidate
    publish(registry, "v2")
    assert await check.check(spec("v1", "v2")) is None


async def test_a_candidate_of_another_feature_set_is_not_rejected(
    registry: ModelRegistry,
) -> None:
    publish(registry, "v1")
    publish(registry, "v2", feature_set="fs-v0")
    problem = await RegistryCheck(str(registry.root)).check(spec("v1", "v2"))
    assert problem is not None and problem.reason == FEATURE_SET_MISMATCH
    assert not problem.rejects_candidate


def test_a_version_that_passed_is_not_hashed_again(registry: ModelRegistry) -> None:
    """Published versions never change: a version is hashed until it passes, then remembered."""
    publish(registry, "v1")
    check = RegistryCheck(str(registry.root))
    assert check.problem("stable", "v1") is None
    corrupt(registry, "v1")
    assert check.problem("stable", "v1") is None
    assert RegistryCheck(str(registry.root)).problem("stable", "v1") is not None
